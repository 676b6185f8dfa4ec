//! The BERT encoder on burn nn: embeddings, then post-LN transformer layers, as Hugging Face's
//! `BertModel` (without the pooler, which sentence embeddings do not use).
//!
//! Modules are built from a checkpoint by [`crate::weights`]; field names follow the
//! checkpoint's (`attention.self.query` -> `attention.query`, `LayerNorm` -> `*_norm`).

use crate::config::{Activation, BertConfig};
use burn::module::Module;
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::tensor::activation::{gelu, gelu_approximate, relu, softmax};
use burn::tensor::{Int, Tensor};

/// Added to attention scores of padding keys: exp of it underflows to exactly 0, as with
/// Hugging Face's `finfo(float32).min` mask, and it stays finite.
const MASKED_SCORE: f64 = -1e9;

/// Word + position + token type embeddings, then LayerNorm (`embeddings.*`).
#[derive(Module, Debug)]
pub struct BertEmbeddings {
    pub word_embeddings: Embedding,
    pub position_embeddings: Embedding,
    pub token_type_embeddings: Embedding,
    pub layer_norm: LayerNorm,
}

impl BertEmbeddings {
    /// Absolute positions `0..seq` for every text.
    ///
    /// # Shapes
    /// - input_ids, token_type_ids: `[batch, seq]`
    /// - output: `[batch, seq, hidden]`
    pub fn forward(&self, input_ids: Tensor<2, Int>, token_type_ids: Tensor<2, Int>) -> Tensor<3> {
        let [_batch, seq] = input_ids.dims();
        let device = input_ids.device();
        let positions = Tensor::<1, Int>::arange(0..seq as i64, &device).reshape([1, seq]);
        // [1, seq, hidden] broadcasts over the batch.
        let embedded = self.word_embeddings.forward(input_ids)
            + self.position_embeddings.forward(positions)
            + self.token_type_embeddings.forward(token_type_ids);
        self.layer_norm.forward(embedded)
    }
}

/// Multi-head self-attention with its output projection, residual and LayerNorm
/// (`attention.self.{query,key,value}`, `attention.output.{dense,LayerNorm}`).
#[derive(Module, Debug)]
pub struct BertAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub output: Linear,
    pub output_norm: LayerNorm,
    pub num_heads: usize,
}

impl BertAttention {
    /// # Shapes
    /// - x: `[batch, seq, hidden]`
    /// - mask_bias: `[batch, 1, 1, seq]`, 0 for real tokens, [`MASKED_SCORE`] for padding
    /// - output: `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<3>, mask_bias: Tensor<4>) -> Tensor<3> {
        let [batch, seq, hidden] = x.dims();
        let heads = self.num_heads;
        let head_dim = hidden / heads;
        // [batch, seq, hidden] -> [batch, heads, seq, head_dim]
        let split = |t: Tensor<3>| t.reshape([batch, seq, heads, head_dim]).swap_dims(1, 2);
        let q = split(self.query.forward(x.clone()));
        let k = split(self.key.forward(x.clone()));
        let v = split(self.value.forward(x.clone()));
        let scores = q.matmul(k.transpose()) / (head_dim as f64).sqrt() + mask_bias;
        let probs = softmax(scores, 3);
        let context = probs.matmul(v).swap_dims(1, 2).reshape([batch, seq, hidden]);
        self.output_norm.forward(self.output.forward(context) + x)
    }
}

/// One transformer layer: attention, then the feed-forward block (`intermediate.dense`,
/// activation, `output.dense`, residual, `output.LayerNorm`).
#[derive(Module, Debug)]
pub struct BertLayer {
    pub attention: BertAttention,
    pub intermediate: Linear,
    pub output: Linear,
    pub output_norm: LayerNorm,
    #[module(skip)]
    pub activation: Activation,
}

impl BertLayer {
    /// # Shapes
    /// - x: `[batch, seq, hidden]`, mask_bias: `[batch, 1, 1, seq]`
    /// - output: `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<3>, mask_bias: Tensor<4>) -> Tensor<3> {
        let attended = self.attention.forward(x, mask_bias);
        let inner = self.intermediate.forward(attended.clone());
        let inner = match self.activation {
            Activation::Gelu => gelu(inner),
            Activation::GeluTanh => gelu_approximate(inner),
            Activation::Relu => relu(inner),
        };
        self.output_norm.forward(self.output.forward(inner) + attended)
    }
}

/// The encoder: embeddings and `num_hidden_layers` layers.
#[derive(Module, Debug)]
pub struct BertModel {
    pub embeddings: BertEmbeddings,
    pub layers: Vec<BertLayer>,
}

impl BertModel {
    /// Last hidden states. Padding positions get values too; they never influence the real
    /// tokens (their keys are masked) and pooling ignores them.
    ///
    /// # Shapes
    /// - input_ids, token_type_ids: `[batch, seq]`
    /// - attention_mask: `[batch, seq]`, 1.0 for real tokens and 0.0 for padding
    /// - output: `[batch, seq, hidden]`
    pub fn forward(&self, input_ids: Tensor<2, Int>, token_type_ids: Tensor<2, Int>, attention_mask: Tensor<2>) -> Tensor<3> {
        let [batch, seq] = attention_mask.dims();
        let mask_bias = (attention_mask.neg() + 1.0).reshape([batch, 1, 1, seq]) * MASKED_SCORE;
        let mut x = self.embeddings.forward(input_ids, token_type_ids);
        for layer in &self.layers {
            x = layer.forward(x, mask_bias.clone());
        }
        x
    }
}

/// Parameter count the configuration implies (without the pooler), to report and check.
pub fn expected_num_params(config: &BertConfig) -> usize {
    let h = config.hidden_size;
    let i = config.intermediate_size;
    let embeddings = (config.vocab_size + config.max_position_embeddings + config.type_vocab_size) * h + 2 * h;
    let layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h;
    embeddings + config.num_hidden_layers * layer
}
