#![no_main]
// The nifti reader (see spineseg_fuzz_harness::Target::Nifti).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spineseg_fuzz_harness::run(spineseg_fuzz_harness::Target::Nifti, data);
});
