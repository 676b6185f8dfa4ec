#![no_main]
// The findings_model reader (see spineseg_fuzz_harness::Target::FindingsModel).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spineseg_fuzz_harness::run(spineseg_fuzz_harness::Target::FindingsModel, data);
});
