//! Building [`BertModel`] from a Hugging Face `model.safetensors`, tensor by tensor, by the
//! checkpoint's own names (`embeddings.word_embeddings.weight`,
//! `encoder.layer.0.attention.self.query.weight`, ...), with or without a `bert.` prefix.
//!
//! PyTorch's `nn.Linear` stores its weight as `[out, in]`; burn's `Linear` as `[in, out]`: the
//! weights are transposed on the host while loading. Tensors the encoder does not use (the pooler,
//! `embeddings.position_ids`) are ignored.

use crate::bert::{BertAttention, BertEmbeddings, BertLayer, BertModel};
use crate::config::BertConfig;
use crate::error::{Result, TextError};
use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};
use std::path::{Path, PathBuf};

/// The name that tells the prefix apart: every BERT checkpoint has it.
const PROBE: &str = "embeddings.word_embeddings.weight";

/// A deserialised safetensors file and the prefix its names carry.
struct Checkpoint<'a> {
    path: PathBuf,
    tensors: SafeTensors<'a>,
    prefix: &'static str,
    device: Device,
}

impl Checkpoint<'_> {
    /// The tensor `prefix + name` as f32 values after checking its shape.
    fn values(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let full = format!("{}{name}", self.prefix);
        let view = self
            .tensors
            .tensor(&full)
            .map_err(|_| TextError::MissingTensor { path: self.path.clone(), name: full.clone() })?;
        if view.shape() != expected {
            return Err(TextError::WrongShape {
                path: self.path.clone(),
                name: full,
                expected: expected.to_vec(),
                actual: view.shape().to_vec(),
            });
        }
        let bytes = view.data();
        // Little-endian per the safetensors format; `chunks_exact` also copes with unaligned data.
        let values = match view.dtype() {
            Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => {
                return Err(TextError::UnsupportedDtype { path: self.path.clone(), name: full, dtype: format!("{other:?}") })
            }
        };
        Ok(values)
    }

    fn tensor<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Tensor<D>> {
        let values = self.values(name, &shape)?;
        Ok(Tensor::from_data(TensorData::new(values, shape), &self.device))
    }

    fn embedding(&self, name: &str, rows: usize, width: usize) -> Result<Embedding> {
        Ok(Embedding { weight: Param::from_tensor(self.tensor(&format!("{name}.weight"), [rows, width])?) })
    }

    /// A PyTorch `nn.Linear` (`{name}.weight` `[out, in]`, `{name}.bias` `[out]`).
    fn linear(&self, name: &str, d_in: usize, d_out: usize) -> Result<Linear> {
        let torch = self.values(&format!("{name}.weight"), &[d_out, d_in])?;
        let mut weight = vec![0.0f32; d_in * d_out];
        for (o, row) in torch.chunks_exact(d_in).enumerate() {
            for (i, &w) in row.iter().enumerate() {
                weight[i * d_out + o] = w;
            }
        }
        let weight = Tensor::<2>::from_data(TensorData::new(weight, [d_in, d_out]), &self.device);
        let bias = self.tensor(&format!("{name}.bias"), [d_out])?;
        Ok(Linear { weight: Param::from_tensor(weight), bias: Some(Param::from_tensor(bias)) })
    }

    /// A PyTorch `nn.LayerNorm` (`{name}.weight`, `{name}.bias`; very old BERT checkpoints say
    /// `gamma`/`beta`).
    fn layer_norm(&self, name: &str, width: usize, epsilon: f64) -> Result<LayerNorm> {
        let old_names = self.tensors.tensor(&format!("{}{name}.gamma", self.prefix)).is_ok();
        let (scale, shift) = if old_names { ("gamma", "beta") } else { ("weight", "bias") };
        let mut norm = LayerNormConfig::new(width).with_epsilon(epsilon).init(&self.device);
        norm.gamma = Param::from_tensor(self.tensor(&format!("{name}.{scale}"), [width])?);
        norm.beta = Some(Param::from_tensor(self.tensor(&format!("{name}.{shift}"), [width])?));
        Ok(norm)
    }
}

/// Reads `path` and builds the encoder `config` describes, on `device`.
pub fn load_bert(path: &Path, config: &BertConfig, device: &Device) -> Result<BertModel> {
    let bytes = std::fs::read(path).map_err(|source| TextError::Io { path: path.to_owned(), source })?;
    let tensors = SafeTensors::deserialize(&bytes)
        .map_err(|e| TextError::Safetensors { path: path.to_owned(), message: e.to_string() })?;
    let prefix = if tensors.tensor(PROBE).is_ok() {
        ""
    } else if tensors.tensor(&format!("bert.{PROBE}")).is_ok() {
        "bert."
    } else {
        return Err(TextError::MissingTensor { path: path.to_owned(), name: format!("{PROBE} (or bert.{PROBE})") });
    };
    let checkpoint = Checkpoint { path: path.to_owned(), tensors, prefix, device: device.clone() };
    build(&checkpoint, config)
}

fn build(ckpt: &Checkpoint, config: &BertConfig) -> Result<BertModel> {
    let h = config.hidden_size;
    let eps = config.layer_norm_eps;
    let embeddings = BertEmbeddings {
        word_embeddings: ckpt.embedding("embeddings.word_embeddings", config.vocab_size, h)?,
        position_embeddings: ckpt.embedding("embeddings.position_embeddings", config.max_position_embeddings, h)?,
        token_type_embeddings: ckpt.embedding("embeddings.token_type_embeddings", config.type_vocab_size, h)?,
        layer_norm: ckpt.layer_norm("embeddings.LayerNorm", h, eps)?,
    };
    let layers = (0..config.num_hidden_layers)
        .map(|index| {
            let name = |suffix: &str| format!("encoder.layer.{index}.{suffix}");
            Ok(BertLayer {
                attention: BertAttention {
                    query: ckpt.linear(&name("attention.self.query"), h, h)?,
                    key: ckpt.linear(&name("attention.self.key"), h, h)?,
                    value: ckpt.linear(&name("attention.self.value"), h, h)?,
                    output: ckpt.linear(&name("attention.output.dense"), h, h)?,
                    output_norm: ckpt.layer_norm(&name("attention.output.LayerNorm"), h, eps)?,
                    num_heads: config.num_attention_heads,
                },
                intermediate: ckpt.linear(&name("intermediate.dense"), h, config.intermediate_size)?,
                output: ckpt.linear(&name("output.dense"), config.intermediate_size, h)?,
                output_norm: ckpt.layer_norm(&name("output.LayerNorm"), h, eps)?,
                activation: config.hidden_act,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(BertModel { embeddings, layers })
}
