//! A tiny, randomly initialised BERT model folder written by code, so that tests (this crate's and
//! the CLI's) need no download. Enabled by the `test-support` feature.

use crate::error::{Result, TextError};
use safetensors::{Dtype, tensor::TensorView};
use std::path::Path;

/// The tiny model's vocabulary (`vocab.txt`, one token per line; the id is the line number).
pub const TINY_VOCAB: &[&str] = &[
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "of", "at", "and", "between", "a", "disc", "vertebral",
    "body", "spinal", "canal", "cord", "sacrum", "intervertebral", "lumbar", "spine", "level", "l1", "l2", "l3",
    "l4", "l5", "s1", "t12", "posterior", "elements", "##s", "##al", "vertebra", ",", ".", "-", "/", "1", "2", "3",
    "4", "5",
];

/// Sizes of the tiny model.
pub const TINY_HIDDEN: usize = 32;
pub const TINY_LAYERS: usize = 2;
pub const TINY_HEADS: usize = 4;
pub const TINY_INTERMEDIATE: usize = 64;
pub const TINY_MAX_POSITIONS: usize = 24;
/// Its `sentence_bert_config.json` max_seq_length (smaller than the position table, to test
/// truncation).
pub const TINY_MAX_SEQ_LENGTH: usize = 16;

/// A named f32 tensor in the checkpoint's (PyTorch) layout.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// splitmix64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // Uniform in [-1, 1).
        (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// The tiny model's `config.json`.
pub fn tiny_config_json() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_act": "gelu",
        "hidden_size": TINY_HIDDEN,
        "intermediate_size": TINY_INTERMEDIATE,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": TINY_MAX_POSITIONS,
        "num_attention_heads": TINY_HEADS,
        "num_hidden_layers": TINY_LAYERS,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "type_vocab_size": 2,
        "vocab_size": TINY_VOCAB.len(),
    })
}

/// Every tensor of the tiny model under Hugging Face `BertModel` names (pooler included, as in
/// real checkpoints), uniform random: weights in +-0.4, LayerNorm scales in 1 +- 0.2.
pub fn tiny_tensors(seed: u64) -> Vec<NamedTensor> {
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, centre: f32, spread: f32| {
        let n = shape.iter().product();
        let values = (0..n).map(|_| centre + spread * rng.next_f32()).collect();
        out.push(NamedTensor { name, shape, values });
    };
    let (h, i) = (TINY_HIDDEN, TINY_INTERMEDIATE);
    add("embeddings.word_embeddings.weight".into(), vec![TINY_VOCAB.len(), h], 0.0, 1.0);
    add("embeddings.position_embeddings.weight".into(), vec![TINY_MAX_POSITIONS, h], 0.0, 0.5);
    add("embeddings.token_type_embeddings.weight".into(), vec![2, h], 0.0, 0.5);
    add("embeddings.LayerNorm.weight".into(), vec![h], 1.0, 0.2);
    add("embeddings.LayerNorm.bias".into(), vec![h], 0.0, 0.1);
    for layer in 0..TINY_LAYERS {
        let p = format!("encoder.layer.{layer}");
        for part in ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"] {
            add(format!("{p}.{part}.weight"), vec![h, h], 0.0, 0.4);
            add(format!("{p}.{part}.bias"), vec![h], 0.0, 0.1);
        }
        add(format!("{p}.attention.output.LayerNorm.weight"), vec![h], 1.0, 0.2);
        add(format!("{p}.attention.output.LayerNorm.bias"), vec![h], 0.0, 0.1);
        add(format!("{p}.intermediate.dense.weight"), vec![i, h], 0.0, 0.4);
        add(format!("{p}.intermediate.dense.bias"), vec![i], 0.0, 0.1);
        add(format!("{p}.output.dense.weight"), vec![h, i], 0.0, 0.3);
        add(format!("{p}.output.dense.bias"), vec![h], 0.0, 0.1);
        add(format!("{p}.output.LayerNorm.weight"), vec![h], 1.0, 0.2);
        add(format!("{p}.output.LayerNorm.bias"), vec![h], 0.0, 0.1);
    }
    add("pooler.dense.weight".into(), vec![h, h], 0.0, 0.4);
    add("pooler.dense.bias".into(), vec![h], 0.0, 0.1);
    out
}

/// Writes `tensors` as an F32 safetensors file.
pub fn write_safetensors(path: &Path, tensors: &[NamedTensor]) -> Result<()> {
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|t| t.values.iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            let view = TensorView::new(Dtype::F32, t.shape.clone(), b).expect("shape should match the values written");
            (t.name.clone(), view)
        })
        .collect::<Vec<_>>();
    let data = safetensors::serialize(views, None).expect("serialising in-memory f32 tensors should not fail");
    std::fs::write(path, data).map_err(|source| TextError::Write { path: path.to_owned(), source })
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| TextError::Write { path: path.to_owned(), source })
}

/// Writes everything of the tiny model folder except `model.safetensors`: config.json,
/// vocab.txt (no tokenizer.json, so the WordPiece path is used), tokenizer_config.json,
/// modules.json, 1_Pooling/config.json (mean) and sentence_bert_config.json.
pub fn write_tiny_folder_without_weights(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("1_Pooling"))
        .map_err(|source| TextError::Write { path: dir.join("1_Pooling"), source })?;
    let pretty = |v: serde_json::Value| serde_json::to_string_pretty(&v).expect("JSON values should serialise");
    write_text(&dir.join("config.json"), &pretty(tiny_config_json()))?;
    write_text(&dir.join("vocab.txt"), &(TINY_VOCAB.join("\n") + "\n"))?;
    write_text(&dir.join("tokenizer_config.json"), &pretty(serde_json::json!({"do_lower_case": true})))?;
    write_text(
        &dir.join("modules.json"),
        &pretty(serde_json::json!([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ])),
    )?;
    write_text(
        &dir.join("1_Pooling/config.json"),
        &pretty(serde_json::json!({
            "word_embedding_dimension": TINY_HIDDEN,
            "pooling_mode_cls_token": false,
            "pooling_mode_mean_tokens": true,
            "pooling_mode_max_tokens": false,
            "pooling_mode_mean_sqrt_len_tokens": false,
        })),
    )?;
    write_text(
        &dir.join("sentence_bert_config.json"),
        &pretty(serde_json::json!({"max_seq_length": TINY_MAX_SEQ_LENGTH, "do_lower_case": false})),
    )
}

/// Writes a complete tiny model folder (random weights from seed 7) into `dir`, creating it.
pub fn write_tiny_test_encoder(dir: &Path) -> Result<()> {
    write_tiny_folder_without_weights(dir)?;
    write_safetensors(&dir.join("model.safetensors"), &tiny_tensors(7))
}
