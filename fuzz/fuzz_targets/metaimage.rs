#![no_main]
// The metaimage reader (see spineseg_fuzz_harness::Target::MetaImage).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spineseg_fuzz_harness::run(spineseg_fuzz_harness::Target::MetaImage, data);
});
