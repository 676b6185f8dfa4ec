#![no_main]
// The prompt_embeddings reader (see spineseg_fuzz_harness::Target::PromptEmbeddings).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spineseg_fuzz_harness::run(spineseg_fuzz_harness::Target::PromptEmbeddings, data);
});
