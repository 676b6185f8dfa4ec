#![no_main]
// The roi_set reader (see spineseg_fuzz_harness::Target::RoiSet).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spineseg_fuzz_harness::run(spineseg_fuzz_harness::Target::RoiSet, data);
});
