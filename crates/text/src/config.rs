//! The model folder's JSON files: Hugging Face `config.json` (the network), and the
//! sentence-transformers files that say how token states become a sentence embedding
//! (`modules.json`, `1_Pooling/config.json`, `sentence_bert_config.json`).

use crate::error::{Result, TextError};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Tokens per text (with [CLS] and [SEP]) when the folder does not say: sentence-transformers'
/// usual `max_seq_length` for MiniLM-class models.
pub const DEFAULT_MAX_SEQ_LENGTH: usize = 128;

/// The activation of the feed-forward block (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU with erf (`gelu`, BERT's).
    Gelu,
    /// tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    Relu,
}

impl Activation {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Self::GeluTanh),
            "relu" => Some(Self::Relu),
            _ => None,
        }
    }
}

/// The fields of a Hugging Face BERT `config.json` that the encoder uses.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: Activation,
}

#[derive(Deserialize)]
struct RawBertConfig {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    type_vocab_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_hidden_act")]
    hidden_act: String,
    model_type: Option<String>,
    position_embedding_type: Option<String>,
}

fn default_type_vocab_size() -> usize {
    2
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_hidden_act() -> String {
    "gelu".to_owned()
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    use spineseg_io::json::JsonFileError;
    spineseg_io::json::read_json(path).map_err(|e| match e {
        JsonFileError::Read { path, source } => TextError::Io { path, source },
        JsonFileError::Parse { path, source } => TextError::Config { path, message: source.to_string() },
        other => TextError::Config { path: path.to_owned(), message: other.to_string() },
    })
}

impl BertConfig {
    /// Reads and checks a Hugging Face `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let raw: RawBertConfig = read_json(path)?;
        let unsupported = |message: String| TextError::Unsupported { path: path.to_owned(), message };
        let invalid = |message: String| TextError::Config { path: path.to_owned(), message };
        if let Some(model_type) = &raw.model_type {
            // Other families (RoBERTa's position offset, DistilBERT's names, ...) differ in ways
            // this implementation does not cover.
            if model_type != "bert" {
                return Err(unsupported(format!("model_type {model_type:?} (only \"bert\")")));
            }
        }
        if let Some(kind) = &raw.position_embedding_type {
            if kind != "absolute" {
                return Err(unsupported(format!("position_embedding_type {kind:?} (only \"absolute\")")));
            }
        }
        let hidden_act = Activation::parse(&raw.hidden_act)
            .ok_or_else(|| unsupported(format!("hidden_act {:?} (gelu, gelu_new, gelu_pytorch_tanh, relu)", raw.hidden_act)))?;
        for (name, value) in [
            ("vocab_size", raw.vocab_size),
            ("hidden_size", raw.hidden_size),
            ("num_hidden_layers", raw.num_hidden_layers),
            ("num_attention_heads", raw.num_attention_heads),
            ("intermediate_size", raw.intermediate_size),
            ("max_position_embeddings", raw.max_position_embeddings),
            ("type_vocab_size", raw.type_vocab_size),
        ] {
            if value == 0 {
                return Err(invalid(format!("{name} is 0")));
            }
        }
        if !raw.hidden_size.is_multiple_of(raw.num_attention_heads) {
            return Err(invalid(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                raw.hidden_size, raw.num_attention_heads
            )));
        }
        if !(raw.layer_norm_eps.is_finite() && raw.layer_norm_eps > 0.0) {
            return Err(invalid(format!("layer_norm_eps {} is not positive", raw.layer_norm_eps)));
        }
        Ok(Self {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            intermediate_size: raw.intermediate_size,
            max_position_embeddings: raw.max_position_embeddings,
            type_vocab_size: raw.type_vocab_size,
            layer_norm_eps: raw.layer_norm_eps,
            hidden_act,
        })
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// How token states become a sentence embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pooling {
    /// Mean over the tokens the attention mask keeps (the only mode implemented).
    pub mode: PoolingMode,
    /// L2-normalise the pooled vector (sentence-transformers' `Normalize` module).
    pub normalize: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolingMode {
    Mean,
}

/// What the sentence-transformers files of a model folder say: pooling and sequence length.
#[derive(Debug, Clone, PartialEq)]
pub struct SentenceConfig {
    pub pooling: Pooling,
    /// Longest token sequence, [CLS] and [SEP] included; longer texts are truncated.
    pub max_seq_length: usize,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

impl SentenceConfig {
    /// Reads `modules.json`, the pooling module's `config.json` and `sentence_bert_config.json`
    /// when present. A folder without `modules.json` (a bare Hugging Face BERT) gets mean
    /// pooling + L2 normalisation; one with it gets exactly the modules it lists, and an error
    /// for anything other than Transformer, mean Pooling and Normalize.
    pub fn load(dir: &Path) -> Result<Self> {
        let modules_path = dir.join("modules.json");
        let mut pooling_dir: Option<PathBuf> = None;
        let mut normalize = true;
        if modules_path.is_file() {
            let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
            normalize = false;
            let mut seen_transformer = false;
            for module in &modules {
                let kind = module.kind.rsplit('.').next().unwrap_or(&module.kind);
                match kind {
                    "Transformer" => seen_transformer = true,
                    "Pooling" => pooling_dir = Some(dir.join(&module.path)),
                    "Normalize" => normalize = true,
                    _ => {
                        return Err(TextError::Unsupported {
                            path: modules_path.clone(),
                            message: format!(
                                "sentence-transformers module {:?} (only Transformer, Pooling, Normalize)",
                                module.kind
                            ),
                        })
                    }
                }
            }
            if !seen_transformer || pooling_dir.is_none() {
                return Err(TextError::Unsupported {
                    path: modules_path,
                    message: "expected a Transformer module followed by a Pooling module".to_owned(),
                });
            }
        } else if dir.join("1_Pooling").is_dir() {
            pooling_dir = Some(dir.join("1_Pooling"));
        }
        let mode = match pooling_dir {
            Some(pooling_dir) => read_pooling_mode(&pooling_dir.join("config.json"))?,
            None => PoolingMode::Mean,
        };

        let st_config = dir.join("sentence_bert_config.json");
        let max_seq_length = if st_config.is_file() {
            let value: serde_json::Value = read_json(&st_config)?;
            match value.get("max_seq_length") {
                None | Some(serde_json::Value::Null) => DEFAULT_MAX_SEQ_LENGTH,
                Some(v) => match v.as_u64() {
                    Some(n) if n >= 2 => n as usize,
                    _ => {
                        return Err(TextError::Config {
                            path: st_config,
                            message: format!("max_seq_length {v} is not an integer >= 2"),
                        })
                    }
                },
            }
        } else {
            DEFAULT_MAX_SEQ_LENGTH
        };
        Ok(Self { pooling: Pooling { mode, normalize }, max_seq_length })
    }
}

/// The pooling mode of a sentence-transformers `Pooling` config: exactly one mode switched on,
/// and it must be mean pooling.
fn read_pooling_mode(path: &Path) -> Result<PoolingMode> {
    let value: serde_json::Value = read_json(path)?;
    let object = value
        .as_object()
        .ok_or_else(|| TextError::Config { path: path.to_owned(), message: "not a JSON object".to_owned() })?;
    if let Some(mode) = object.get("pooling_mode").and_then(|v| v.as_str()) {
        // Newer sentence-transformers write the mode as a string.
        return match mode {
            "mean" => Ok(PoolingMode::Mean),
            other => Err(TextError::Unsupported {
                path: path.to_owned(),
                message: format!("pooling mode {other:?} (only mean pooling is implemented)"),
            }),
        };
    }
    let on: Vec<&str> = object
        .iter()
        .filter(|(key, value)| key.starts_with("pooling_mode_") && value.as_bool() == Some(true))
        .map(|(key, _)| key.as_str())
        .collect();
    match on.as_slice() {
        ["pooling_mode_mean_tokens"] => Ok(PoolingMode::Mean),
        [] => Err(TextError::Config { path: path.to_owned(), message: "no pooling_mode_* is true".to_owned() }),
        modes => Err(TextError::Unsupported {
            path: path.to_owned(),
            message: format!("pooling {} (only pooling_mode_mean_tokens alone is implemented)", modes.join(" + ")),
        }),
    }
}

/// `do_lower_case` of a `tokenizer_config.json` (default true, as `BertTokenizer`'s).
pub(crate) fn do_lower_case(dir: &Path) -> Result<bool> {
    let path = dir.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(true);
    }
    let value: serde_json::Value = read_json(&path)?;
    Ok(value.get("do_lower_case").and_then(|v| v.as_bool()).unwrap_or(true))
}
