#![no_main]
// The labels_json reader (see spineseg_fuzz_harness::Target::LabelsJson).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spineseg_fuzz_harness::run(spineseg_fuzz_harness::Target::LabelsJson, data);
});
