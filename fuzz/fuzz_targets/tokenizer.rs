#![no_main]
// The tokenizer reader (see spineseg_fuzz_harness::Target::Tokenizer).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spineseg_fuzz_harness::run(spineseg_fuzz_harness::Target::Tokenizer, data);
});
