#![no_main]
// The gradings reader (see spineseg_fuzz_harness::Target::Gradings).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spineseg_fuzz_harness::run(spineseg_fuzz_harness::Target::Gradings, data);
});
