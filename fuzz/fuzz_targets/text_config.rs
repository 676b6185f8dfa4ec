#![no_main]
// The text_config reader (see spineseg_fuzz_harness::Target::TextConfig).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spineseg_fuzz_harness::run(spineseg_fuzz_harness::Target::TextConfig, data);
});
