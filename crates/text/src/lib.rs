//! A frozen BERT-family sentence encoder (sentence-transformers' all-MiniLM-L6-v2 and its kin)
//! written with burn, for text prompts such as "L4 vertebral body".
//!
//! A model folder is what sentence-transformers saves (and `scripts/fetch_text_encoder.sh`
//! fetches): `config.json` (Hugging Face BERT config), `model.safetensors`, `tokenizer.json`
//! and/or `vocab.txt` (+ `tokenizer_config.json`), and optionally `modules.json`,
//! `1_Pooling/config.json`, `sentence_bert_config.json`.
//!
//! The sentence embedding is sentence-transformers': BERT's last hidden states, mean-pooled over
//! the tokens the attention mask keeps, then L2-normalised. Inference only, on a plain
//! (non-autodiff) device: nothing here is trained.
//!
//! ```no_run
//! use burn::tensor::Device;
//! use spineseg_text::TextEncoder;
//! let encoder = TextEncoder::load("all-MiniLM-L6-v2".as_ref(), &Device::flex())?;
//! let vectors = encoder.embed(&["L4 vertebral body", "sacrum"])?;
//! assert_eq!(vectors[0].len(), encoder.embedding_dim());
//! # Ok::<(), spineseg_text::TextError>(())
//! ```

pub mod bert;
pub mod class_embeddings;
pub mod config;
pub mod findings_prompts;
pub mod reports;
/// The anatomy-aware prompts (they live in the anatomy crate, so training can build per-view
/// prompts without the encoder).
pub use spineseg_anatomy::prompts;
mod error;
#[cfg(any(test, feature = "test-support"))]
#[doc(hidden)]
pub mod test_support;
pub mod tokenizer;
pub mod weights;

pub use bert::BertModel;
/// The device type encoders run on (`Device::flex()` on CPU), re-exported for callers without
/// a direct burn dependency.
pub use burn::tensor::Device;
pub use config::{BertConfig, Pooling, PoolingMode, SentenceConfig};
pub use error::{Result, TextError};
pub use tokenizer::{TextTokenizer, TokenizedText};

#[cfg(feature = "test-support")]
#[doc(hidden)]
pub use test_support::write_tiny_test_encoder;

use burn::module::Module;
use burn::tensor::{Int, Tensor, TensorData};
use std::path::{Path, PathBuf};

/// Texts run through the network together; bounds memory for long prompt lists.
const CHUNK: usize = 64;

/// A loaded, frozen sentence encoder.
pub struct TextEncoder {
    dir: PathBuf,
    config: BertConfig,
    sentence: SentenceConfig,
    tokenizer: TextTokenizer,
    model: BertModel,
    device: Device,
}

impl std::fmt::Debug for TextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEncoder")
            .field("dir", &self.dir)
            .field("config", &self.config)
            .field("sentence", &self.sentence)
            .finish_non_exhaustive()
    }
}

impl TextEncoder {
    /// Loads a model folder (see the crate docs) onto `device`; an autodiff device is replaced by
    /// its plain backend, since the encoder is never trained.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let device = device.clone().without_autodiff();
        let config_path = dir.join("config.json");
        let config = BertConfig::load(&config_path)?;
        let sentence = SentenceConfig::load(dir)?;
        // Positions beyond the embedding table do not exist.
        let max_length = sentence.max_seq_length.min(config.max_position_embeddings);
        let tokenizer = TextTokenizer::load(dir, max_length)?;
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(TextError::Config {
                path: config_path,
                message: format!(
                    "vocab_size {} is smaller than the tokenizer's vocabulary ({})",
                    config.vocab_size,
                    tokenizer.vocab_size()
                ),
            });
        }
        let model = weights::load_bert(&dir.join("model.safetensors"), &config, &device)?.no_grad();
        Ok(Self { dir: dir.to_owned(), config, sentence: SentenceConfig { max_seq_length: max_length, ..sentence }, tokenizer, model, device })
    }

    /// Length of every embedding (the model's hidden size: 384 for all-MiniLM-L6-v2).
    pub fn embedding_dim(&self) -> usize {
        self.config.hidden_size
    }

    /// The folder the encoder was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Pooling and the longest token sequence (after capping at the position table).
    pub fn sentence_config(&self) -> &SentenceConfig {
        &self.sentence
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The network, for inspection.
    pub fn model(&self) -> &BertModel {
        &self.model
    }

    /// One embedding per text, in order, each [`Self::embedding_dim`] long (unit L2 norm when
    /// the folder's modules include Normalize, or have no `modules.json`). Texts are batched
    /// and padded to the longest; padding does not change a text's embedding beyond float
    /// rounding.
    pub fn embed<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(CHUNK) {
            let tokenized = chunk.iter().map(|t| self.tokenizer.encode(t.as_ref())).collect::<Result<Vec<_>>>()?;
            out.extend(self.embed_tokenized(&tokenized, chunk)?);
        }
        Ok(out)
    }

    /// Embeds already tokenised texts (`texts` only name them in errors).
    fn embed_tokenized<S: AsRef<str>>(&self, tokenized: &[TokenizedText], texts: &[S]) -> Result<Vec<Vec<f32>>> {
        let batch = tokenized.len();
        let seq = tokenized.iter().map(|t| t.input_ids.len()).max().unwrap_or(0);
        if batch == 0 {
            return Ok(Vec::new());
        }
        let mut ids = vec![0i64; batch * seq];
        let mut types = vec![0i64; batch * seq];
        let mut mask = vec![0.0f32; batch * seq];
        for (row, (t, text)) in tokenized.iter().zip(texts).enumerate() {
            for (col, (&id, &kind)) in t.input_ids.iter().zip(&t.token_type_ids).enumerate() {
                if id as usize >= self.config.vocab_size || kind as usize >= self.config.type_vocab_size {
                    return Err(TextError::Encode {
                        text: text.as_ref().to_owned(),
                        message: format!("token id {id} (type {kind}) outside the model's embedding tables"),
                    });
                }
                ids[row * seq + col] = i64::from(id);
                types[row * seq + col] = i64::from(kind);
                mask[row * seq + col] = 1.0;
            }
        }
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [batch, seq]), &self.device);
        let types = Tensor::<2, Int>::from_data(TensorData::new(types, [batch, seq]), &self.device);
        let mask = Tensor::<2>::from_data(TensorData::new(mask, [batch, seq]), &self.device);
        let hidden = self.model.forward(ids, types, mask.clone());
        let pooled = pool(hidden, mask, self.sentence.pooling);
        let values = pooled.into_data().try_to_vec::<f32>().map_err(|e| TextError::Readback(format!("{e:?}")))?;
        Ok(values.chunks_exact(self.embedding_dim()).map(<[f32]>::to_vec).collect())
    }
}

/// Mean over the kept tokens (sentence-transformers clamps the count at 1e-9), then optionally
/// `x / max(|x|, 1e-12)` as `torch.nn.functional.normalize`.
///
/// # Shapes
/// - hidden: `[batch, seq, dim]`, mask: `[batch, seq]` (1.0 keep, 0.0 padding)
/// - output: `[batch, dim]`
fn pool(hidden: Tensor<3>, mask: Tensor<2>, pooling: Pooling) -> Tensor<2> {
    let [batch, _seq, dim] = hidden.dims();
    let PoolingMode::Mean = pooling.mode;
    let summed = (hidden * mask.clone().unsqueeze_dim::<3>(2)).sum_dim(1).reshape([batch, dim]);
    let mean = summed / mask.sum_dim(1).clamp_min(1e-9);
    if pooling.normalize {
        let norm = mean.clone().powf_scalar(2.0).sum_dim(1).sqrt().clamp_min(1e-12);
        mean / norm
    } else {
        mean
    }
}
