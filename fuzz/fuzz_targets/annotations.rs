#![no_main]
// The annotations reader (see spineseg_fuzz_harness::Target::Annotations).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spineseg_fuzz_harness::run(spineseg_fuzz_harness::Target::Annotations, data);
});
