#![no_main]
// The metaimage_detached reader (see spineseg_fuzz_harness::Target::MetaImageDetached).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spineseg_fuzz_harness::run(spineseg_fuzz_harness::Target::MetaImageDetached, data);
});
