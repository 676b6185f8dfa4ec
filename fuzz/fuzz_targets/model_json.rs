#![no_main]
// The model_json reader (see spineseg_fuzz_harness::Target::ModelJson).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spineseg_fuzz_harness::run(spineseg_fuzz_harness::Target::ModelJson, data);
});
