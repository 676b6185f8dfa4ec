#![no_main]
// The plan reader (see spineseg_fuzz_harness::Target::Plan).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spineseg_fuzz_harness::run(spineseg_fuzz_harness::Target::Plan, data);
});
