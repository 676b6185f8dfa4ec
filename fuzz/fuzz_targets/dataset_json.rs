#![no_main]
// The dataset_json reader (see spineseg_fuzz_harness::Target::DatasetJson).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spineseg_fuzz_harness::run(spineseg_fuzz_harness::Target::DatasetJson, data);
});
