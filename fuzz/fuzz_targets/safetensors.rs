#![no_main]
// The safetensors reader (see spineseg_fuzz_harness::Target::Safetensors).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spineseg_fuzz_harness::run(spineseg_fuzz_harness::Target::Safetensors, data);
});
