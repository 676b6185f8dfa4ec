//! The disc-findings classifier: a small 2D conv encoder over one disc level's regions of
//! interest (T1 and T2 as two channels, either may be missing) and one of two heads that output
//! the five lumbar findings and the Pfirrmann grade, compared like for like:
//!
//! - **visual**: linear heads on the pooled image features, the level (one-hot) and which
//!   sequences are present;
//! - **text**: CLIP-style matching of a projection of the same image features against frozen
//!   sentence embeddings of per-level prompts ("L4/L5 intervertebral disc with disc herniation"
//!   and "... without disc herniation"; "Pfirrmann grade 3 L4/L5 intervertebral disc"), both
//!   sides projected into one space and L2-normalised, cosines scaled by a learned temperature
//!   (CLIP's `logit_scale`, started at ln(1/0.07) and capped at ln 100). A finding's logit is the
//!   scaled cosine of its "with" prompt minus that of its "without" prompt (the two-way softmax
//!   over the prompts, as a sigmoid) plus a learned bias per finding; the grade's logits are the
//!   scaled cosines of the five grade prompts. So a finding is described, not only indexed.
//!
//! The text embeddings are a frozen parameter (saved with the weights, never trained), so
//! prediction needs no text encoder.
//!
//! Two image encoders ([`FindingsEncoderConfig`]):
//!
//! - **plain_conv** (the default, the shipped model's): conv-norm-act stages over the sequences
//!   as input channels;
//! - **convnext_v2**: ConvNeXt V2 stages of one input channel, shared by the sequences: each
//!   sequence's ROI runs through the same encoder, is average-pooled and layer-normalised
//!   (ConvNeXt's classification head), a missing sequence's features are zeroed, and the
//!   sequences' features are concatenated. One channel, so an encoder pretrained on single
//!   images (`spineseg pretrain`, FCMAE) loads into it: the first stages of a segmentation
//!   encoder, as many as the ROI's size divides.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::serde::{Deserialize, Serialize};
use burn::store::{ModuleRecord, RecordError};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use std::path::Path;

use burn::nn::{LayerNorm, LayerNormConfig};

use crate::blocks::{SpatialDims, StackedConvBlocks, StackedConvBlocksConfig};
use crate::encoders::{ConvNeXtV2Encoder, ConvNeXtV2EncoderConfig, PlainConvEncoder};
use crate::precision::{CastFloats, WeightPrecision};

/// Number of binary findings (herniation, narrowing, bulging, spondylolisthesis, Modic change).
pub const NUM_FINDINGS: usize = 5;
/// Number of Pfirrmann grades (1..=5).
pub const NUM_GRADES: usize = 5;
/// Prompts per level in a text head: a "with" and a "without" prompt per finding, then one per
/// grade (`prompt_index_*` give the positions).
pub const PROMPTS_PER_LEVEL: usize = 2 * NUM_FINDINGS + NUM_GRADES;

/// Position of finding `f`'s "without" (`present = false`) or "with" prompt in a level's prompts.
pub fn prompt_index_finding(f: usize, present: bool) -> usize {
    2 * f + usize::from(present)
}

/// Position of Pfirrmann grade `grade` (1..=5)'s prompt in a level's prompts.
pub fn prompt_index_grade(grade: usize) -> usize {
    2 * NUM_FINDINGS + grade - 1
}

/// Which head a [`DiscFindingsNet`] has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(crate = "burn::serde", tag = "kind", rename_all = "snake_case")]
pub enum FindingsHeadConfig {
    /// Linear heads on the image features, level one-hot and sequence flags.
    Visual,
    /// Image features matched against frozen prompt embeddings of width `text_dim`, both
    /// projected to `embed_dim`.
    Text { text_dim: usize, embed_dim: usize },
}

/// Which image encoder a [`DiscFindingsNet`] has (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(crate = "burn::serde", tag = "kind", rename_all = "snake_case")]
pub enum FindingsEncoderConfig {
    /// Conv-norm-act stages of the config's `widths`, the sequences as input channels.
    #[default]
    PlainConv,
    /// ConvNeXt V2 stages of one input channel, shared by the sequences (2D).
    ConvnextV2 {
        /// Width of each stage, full resolution first.
        features_per_stage: Vec<usize>,
        /// Stride of each stage's entry (stem or down-sampling layer), `[height, width]`.
        strides: Vec<[usize; 2]>,
        /// The stem's kernel, `[height, width]`.
        stem_kernel: [usize; 2],
        /// Blocks, depthwise kernel, MLP ratio.
        blocks: ConvNeXtV2EncoderConfig,
    },
}

impl FindingsEncoderConfig {
    /// A ConvNeXt V2 encoder for findings ROIs when none is pretrained: the lumbar plan's first
    /// five stages (widths 16-256, stem stride 1 then 2 per stage, 3x3 stem) and
    /// [`ConvNeXtV2EncoderConfig::for_stages`]'s depth, i.e. what a pretrained encoder of that
    /// plan gives, so scratch and pretrained runs compare the same network.
    pub fn convnext_v2_default() -> Self {
        FindingsEncoderConfig::ConvnextV2 {
            features_per_stage: vec![16, 32, 64, 128, 256],
            strides: vec![[1, 1], [2, 2], [2, 2], [2, 2], [2, 2]],
            stem_kernel: [3, 3],
            blocks: ConvNeXtV2EncoderConfig::for_stages(5),
        }
    }
}

/// Configuration of a [`DiscFindingsNet`].
#[derive(Config, Debug)]
pub struct DiscFindingsNetConfig {
    /// The disc levels the network knows, as ontology structure ids (the level input indexes
    /// this list).
    pub levels: Vec<u16>,
    /// The head.
    pub head: FindingsHeadConfig,
    /// Input channels: the sequences (T1, T2), a missing one is zeros.
    #[config(default = 2)]
    pub sequences: usize,
    /// ROI height and width in pixels.
    #[config(default = "[48, 64]")]
    pub roi_px: [usize; 2],
    /// Features per encoder stage (the first at full resolution, each later one halves it).
    #[config(default = "vec![16, 32, 64, 128]")]
    pub widths: Vec<usize>,
    /// Convolutions per stage.
    #[config(default = 2)]
    pub convs_per_stage: usize,
    /// The image encoder (`widths` and `convs_per_stage` are the plain encoder's); `None` is
    /// the plain encoder. An `Option` because burn's configs have no serde defaults: findings
    /// models written before this field (the shipped one) read as plain.
    #[config(default = "None")]
    pub encoder: Option<FindingsEncoderConfig>,
}

/// Why a [`DiscFindingsNetConfig`] cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FindingsNetConfigError {
    #[error("the findings network needs at least one disc level")]
    NoLevels,
    #[error("the findings network needs at least one encoder stage and one input sequence")]
    Empty,
    #[error("an ROI of {0:?} pixels is not divisible by the encoder's total stride {1:?}")]
    RoiNotDivisible([usize; 2], [usize; 2]),
    #[error("the ConvNeXt V2 findings encoder is invalid: {0}")]
    Encoder(String),
}

impl DiscFindingsNetConfig {
    /// The image encoder (plain when unset).
    pub fn encoder_config(&self) -> &FindingsEncoderConfig {
        self.encoder.as_ref().unwrap_or(&FindingsEncoderConfig::PlainConv)
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), FindingsNetConfigError> {
        if self.levels.is_empty() {
            return Err(FindingsNetConfigError::NoLevels);
        }
        if self.widths.is_empty() || self.sequences == 0 || self.convs_per_stage == 0 {
            return Err(FindingsNetConfigError::Empty);
        }
        if let FindingsEncoderConfig::ConvnextV2 { features_per_stage, strides, stem_kernel, blocks } = self.encoder_config() {
            if features_per_stage.is_empty() || features_per_stage.contains(&0) {
                return Err(FindingsNetConfigError::Empty);
            }
            if strides.len() != features_per_stage.len() {
                return Err(FindingsNetConfigError::Encoder(format!(
                    "{} strides for {} stages",
                    strides.len(),
                    features_per_stage.len()
                )));
            }
            if strides.iter().flatten().chain(stem_kernel).any(|&n| n == 0) {
                return Err(FindingsNetConfigError::Encoder("strides and the stem kernel must be positive".into()));
            }
            blocks.validate(features_per_stage.len()).map_err(FindingsNetConfigError::Encoder)?;
        }
        let stride = self.total_stride();
        if (0..2).any(|a| self.roi_px[a] == 0 || !self.roi_px[a].is_multiple_of(stride[a])) {
            return Err(FindingsNetConfigError::RoiNotDivisible(self.roi_px, stride));
        }
        Ok(())
    }

    /// The encoder's total stride, `[height, width]`.
    pub fn total_stride(&self) -> [usize; 2] {
        match self.encoder_config() {
            FindingsEncoderConfig::PlainConv => [1usize << (self.widths.len().max(1) - 1); 2],
            FindingsEncoderConfig::ConvnextV2 { strides, .. } => {
                strides.iter().fold([1, 1], |acc, s| [acc[0] * s[0], acc[1] * s[1]])
            }
        }
    }

    /// Width of the pooled image features (plus one flag per sequence).
    fn feature_width(&self) -> usize {
        match self.encoder_config() {
            FindingsEncoderConfig::PlainConv => self.widths.last().copied().unwrap_or(0) + self.sequences,
            FindingsEncoderConfig::ConvnextV2 { features_per_stage, .. } => {
                (features_per_stage.last().copied().unwrap_or(0) + 1) * self.sequences
            }
        }
    }

    /// Builds the network. A text head starts with zero prompt embeddings: set them with
    /// [`DiscFindingsNet::with_prompt_embeddings`] before training.
    pub fn init(&self, device: &Device) -> DiscFindingsNet {
        self.validate().expect("a findings network config should be validated before it is built");
        let (encoder, convnext_encoder, pooled_norm) = match self.encoder_config() {
            FindingsEncoderConfig::PlainConv => {
                let mut stages = Vec::with_capacity(self.widths.len());
                let mut in_channels = self.sequences;
                for (s, &width) in self.widths.iter().enumerate() {
                    let stride = if s == 0 { 1 } else { 2 };
                    stages.push(
                        StackedConvBlocksConfig::new(
                            SpatialDims::D2,
                            self.convs_per_stage,
                            in_channels,
                            width,
                            vec![3, 3],
                            vec![stride, stride],
                        )
                        .init(device),
                    );
                    in_channels = width;
                }
                (Some(PlainConvEncoder { stages }), None, None)
            }
            FindingsEncoderConfig::ConvnextV2 { features_per_stage, strides, stem_kernel, blocks } => {
                let strides: Vec<Vec<usize>> = strides.iter().map(|s| s.to_vec()).collect();
                // The stem's kernel, then 3 (convolved) along both axes: only "1 or not" matters
                // past the stem, the depthwise kernel is the blocks' own.
                let kernels: Vec<Vec<usize>> =
                    (0..strides.len()).map(|s| if s == 0 { stem_kernel.to_vec() } else { vec![3, 3] }).collect();
                let encoder = blocks.init(SpatialDims::D2, 1, features_per_stage, &strides, &kernels, device);
                let width = *features_per_stage.last().expect("validated: at least one stage");
                let norm = LayerNormConfig::new(width).with_epsilon(blocks.layer_norm_epsilon).init(device);
                (None, Some(encoder), Some(norm))
            }
        };
        let features = self.feature_width();
        let levels = self.levels.len();
        let (visual, text) = match &self.head {
            FindingsHeadConfig::Visual => (
                Some(VisualFindingsHead {
                    findings: LinearConfig::new(features + levels, NUM_FINDINGS).init(device),
                    grades: LinearConfig::new(features + levels, NUM_GRADES).init(device),
                }),
                None,
            ),
            FindingsHeadConfig::Text { text_dim, embed_dim } => (
                None,
                Some(TextFindingsHead {
                    prompt_embeddings: Param::from_tensor(Tensor::zeros(
                        [levels, PROMPTS_PER_LEVEL, *text_dim],
                        device,
                    ))
                    .set_require_grad(false),
                    image_projection: LinearConfig::new(features, *embed_dim).init(device),
                    text_projection: LinearConfig::new(*text_dim, *embed_dim).init(device),
                    logit_scale: Param::from_tensor(Tensor::from_data(
                        TensorData::new(vec![(1.0f32 / 0.07).ln()], [1]),
                        device,
                    )),
                    finding_bias: LinearConfig::new(1, NUM_FINDINGS).with_initializer(Initializer::Zeros).init(device),
                }),
            ),
        };
        DiscFindingsNet { encoder, convnext_encoder, pooled_norm, visual, text }
    }
}

/// The visual-only head.
#[derive(Module, Debug)]
pub struct VisualFindingsHead {
    pub findings: Linear,
    pub grades: Linear,
}

/// The text-guided head (see the module documentation).
#[derive(Module, Debug)]
pub struct TextFindingsHead {
    /// `[levels, PROMPTS_PER_LEVEL, text_dim]`, frozen (detached in use).
    pub prompt_embeddings: Param<Tensor<3>>,
    pub image_projection: Linear,
    pub text_projection: Linear,
    /// CLIP's learned temperature, `exp(logit_scale)` multiplies the cosines.
    pub logit_scale: Param<Tensor<1>>,
    /// A bias per finding (a `Linear` from a constant 1, so it is saved like the other layers).
    pub finding_bias: Linear,
}

/// The classifier (see the module documentation).
#[derive(Module, Debug)]
pub struct DiscFindingsNet {
    /// The plain encoder (`plain_conv`); a module `Option` is transparent in the weights file,
    /// so the shipped model's weight names are unchanged.
    pub encoder: Option<PlainConvEncoder>,
    /// The shared one-channel encoder (`convnext_v2`).
    pub convnext_encoder: Option<ConvNeXtV2Encoder>,
    /// LayerNorm of the ConvNeXt V2 encoder's pooled features (ConvNeXt's head norm).
    pub pooled_norm: Option<LayerNorm>,
    pub visual: Option<VisualFindingsHead>,
    pub text: Option<TextFindingsHead>,
}

/// The network's outputs for a batch.
#[derive(Debug, Clone)]
pub struct FindingsOutput {
    /// `[batch, NUM_FINDINGS]`: logit of each finding being present.
    pub finding_logits: Tensor<2>,
    /// `[batch, NUM_GRADES]`: logits of Pfirrmann grades 1..=5.
    pub grade_logits: Tensor<2>,
}

fn l2_normalise<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let norm = x.clone().powi_scalar(2).sum_dim(D - 1).sqrt().clamp_min(1e-6);
    x / norm
}

impl DiscFindingsNet {
    /// Replaces a text head's prompt embeddings (`[levels, PROMPTS_PER_LEVEL, text_dim]`, row
    /// major); a visual network is returned unchanged.
    ///
    /// # Panics
    /// If the length does not match the head's shape.
    pub fn with_prompt_embeddings(mut self, embeddings: Vec<f32>) -> Self {
        if let Some(text) = self.text.as_mut() {
            let shape = text.prompt_embeddings.val().dims();
            assert_eq!(
                embeddings.len(),
                shape.iter().product::<usize>(),
                "prompt embeddings should be [levels, prompts, text_dim]"
            );
            let device = text.prompt_embeddings.val().device();
            text.prompt_embeddings = Param::from_tensor(Tensor::from_data(TensorData::new(embeddings, shape), &device))
                .set_require_grad(false);
        }
        self
    }

    /// The pooled image features and the sequence flags.
    ///
    /// # Shapes
    /// - `rois`: `[batch, sequences, height, width]` (a missing sequence is zeros)
    /// - `present`: `[batch, sequences]` (1 = the sequence is there)
    /// - output: `[batch, widths.last() + sequences]` (plain) or `[batch, sequences x
    ///   (width + 1)]` (ConvNeXt V2: each sequence's features, then the flags)
    pub fn features(&self, rois: Tensor<4>, present: Tensor<2>) -> Tensor<2> {
        let [batch, channels, height, width] = rois.dims();
        if let (Some(encoder), Some(norm)) = (&self.convnext_encoder, &self.pooled_norm) {
            // Every sequence through the same one-channel encoder, as extra batch entries.
            let x = rois.reshape([batch * channels, 1, 1, height, width]);
            let deepest = encoder.forward(x).pop().expect("the encoder has at least one stage");
            let [_, features, d, h, w] = deepest.dims();
            let pooled = deepest.reshape([batch * channels, features, d * h * w]).mean_dim(2);
            let pooled = norm.forward(pooled.reshape([batch * channels, features]));
            // A missing sequence's zeros would still give features (the norm's shift): zero them.
            let pooled = pooled.reshape([batch, channels, features]) * present.clone().reshape([batch, channels, 1]);
            return Tensor::cat(vec![pooled.reshape([batch, channels * features]), present], 1);
        }
        let encoder = self.encoder.as_ref().expect("a findings network has a plain or a ConvNeXt V2 encoder");
        let x = rois.reshape([batch, channels, 1, height, width]);
        let deepest = encoder.forward(x).pop().expect("the encoder has at least one stage");
        let [_, features, d, h, w] = deepest.dims();
        let pooled = deepest.reshape([batch, features, d * h * w]).mean_dim(2).reshape([batch, features]);
        Tensor::cat(vec![pooled, present], 1)
    }

    /// Replaces the ConvNeXt V2 encoder with `encoder` (e.g. the first stages of a pretrained
    /// one), after checking every stage has the shape of the one it replaces.
    pub fn with_convnext_encoder(mut self, encoder: ConvNeXtV2Encoder) -> Result<Self, String> {
        let Some(current) = &self.convnext_encoder else {
            return Err("this findings network has no ConvNeXt V2 encoder".into());
        };
        let shapes = |e: &ConvNeXtV2Encoder| -> Vec<Vec<usize>> {
            let mut shapes = Vec::new();
            let mut collect = ShapeCollector(&mut shapes);
            e.visit(&mut collect);
            shapes
        };
        if shapes(current) != shapes(&encoder) {
            return Err(format!(
                "the encoder's layers do not match the network's ({} stages of widths {:?} expected)",
                current.stages.len(),
                current.stages.iter().map(|s| s.entry.conv.out_channels()).collect::<Vec<_>>()
            ));
        }
        self.convnext_encoder = Some(encoder);
        Ok(self)
    }

    /// Forward pass.
    ///
    /// # Shapes
    /// - `rois`: `[batch, sequences, height, width]`
    /// - `present`: `[batch, sequences]`
    /// - `level`: `[batch]`, indices into the config's `levels`
    pub fn forward(&self, rois: Tensor<4>, present: Tensor<2>, level: Tensor<1, Int>) -> FindingsOutput {
        let features = self.features(rois, present);
        let [batch, _] = features.dims();
        if let Some(head) = &self.visual {
            let levels = head.findings.weight.val().dims()[0] - features.dims()[1];
            // burn's one_hot refuses a single class; a comparison works for any count.
            let device = level.device();
            let classes = Tensor::<1, Int>::arange(0..levels as i64, &device).reshape([1, levels]).repeat_dim(0, batch);
            let one_hot = level.reshape([batch, 1]).repeat_dim(1, levels).equal(classes).float();
            let x = Tensor::cat(vec![features, one_hot], 1);
            return FindingsOutput {
                finding_logits: head.findings.forward(x.clone()),
                grade_logits: head.grades.forward(x),
            };
        }
        let head = self.text.as_ref().expect("a findings network has a visual or a text head");
        let image = l2_normalise(head.image_projection.forward(features)); // [batch, embed]
        let prompts = head.prompt_embeddings.val().detach().select(0, level); // [batch, prompts, text_dim]
        let text = l2_normalise(head.text_projection.forward(prompts)); // [batch, prompts, embed]
        let [_, embed] = image.dims();
        let cosines = (text * image.reshape([batch, 1, embed])).sum_dim(2).reshape([batch, PROMPTS_PER_LEVEL]);
        let scale = head.logit_scale.val().clamp_max(100f32.ln()).exp().reshape([1, 1]);
        let scaled = cosines * scale;
        let with = scaled.clone().slice([0..batch, 0..2 * NUM_FINDINGS]).reshape([batch, NUM_FINDINGS, 2]);
        let difference =
            with.clone().slice([0..batch, 0..NUM_FINDINGS, 1..2]) - with.slice([0..batch, 0..NUM_FINDINGS, 0..1]);
        let ones = Tensor::<2>::ones([batch, 1], &scaled.device());
        let finding_logits = difference.reshape([batch, NUM_FINDINGS]) + head.finding_bias.forward(ones);
        let grade_logits = scaled.slice([0..batch, 2 * NUM_FINDINGS..PROMPTS_PER_LEVEL]);
        FindingsOutput { finding_logits, grade_logits }
    }

    /// The plain encoder's stage blocks (empty for a ConvNeXt V2 encoder).
    pub fn stages(&self) -> &[StackedConvBlocks] {
        self.encoder.as_ref().map_or(&[], |e| &e.stages)
    }

    /// Loads the weights of a burnpack file written by [`save_file`](Self::save_file), in either
    /// precision (cast to f32).
    pub fn try_load_file(self, path: &Path) -> Result<Self, RecordError> {
        let record = ModuleRecord::load(path)?.cast_to_module_dtype();
        self.try_load_record(record)
    }

    /// Writes the weights (prompt embeddings included) as a burnpack file in `precision`.
    pub fn save_file(&self, path: &Path, precision: WeightPrecision) -> Result<(), RecordError> {
        let mut cast = CastFloats(match precision {
            WeightPrecision::Single => DType::F32,
            WeightPrecision::Half => DType::F16,
        });
        Module::save_file(self.clone().map(&mut cast), path)
    }
}

/// Collects the shape of every parameter, in visiting order.
struct ShapeCollector<'a>(&'a mut Vec<Vec<usize>>);

impl burn::module::ModuleVisitor for ShapeCollector<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let shape = param.lazy_shape();
        self.0.push((0..D).map(|axis| shape[axis]).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> Device {
        Device::flex()
    }

    fn levels() -> Vec<u16> {
        vec![120, 121, 122, 123, 124]
    }

    #[test]
    fn both_heads_give_five_findings_and_five_grades() {
        let device = device();
        for head in [FindingsHeadConfig::Visual, FindingsHeadConfig::Text { text_dim: 8, embed_dim: 4 }] {
            let config = DiscFindingsNetConfig::new(levels(), head).with_roi_px([16, 16]).with_widths(vec![4, 8]);
            let net = config.init(&device).with_prompt_embeddings(vec![0.5; 5 * PROMPTS_PER_LEVEL * 8]);
            let rois = Tensor::<4>::ones([3, 2, 16, 16], &device);
            let present = Tensor::<2>::ones([3, 2], &device);
            let level = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 2, 4], [3]), &device);
            let out = net.forward(rois, present, level);
            assert_eq!(out.finding_logits.dims(), [3, NUM_FINDINGS]);
            assert_eq!(out.grade_logits.dims(), [3, NUM_GRADES]);
            let values: Vec<f32> = out.finding_logits.into_data().try_to_vec::<f32>().unwrap();
            assert!(values.iter().all(|v| v.is_finite()));
        }
    }

    #[test]
    fn a_text_head_reads_the_prompts_of_the_sample_level() {
        // Level 1's "with herniation" prompt equals the image direction only if the
        // projections are the identity; instead check that changing another level's prompts
        // leaves a sample's logits unchanged and changing its own level's prompts does not.
        let device = device();
        let config = DiscFindingsNetConfig::new(levels(), FindingsHeadConfig::Text { text_dim: 6, embed_dim: 4 })
            .with_roi_px([8, 8])
            .with_widths(vec![4, 4]);
        device.seed(3);
        let base = config.init(&device);
        let prompts = |level_value: f32, other: f32| -> Vec<f32> {
            (0..5 * PROMPTS_PER_LEVEL * 6)
                .map(|i| {
                    let level = i / (PROMPTS_PER_LEVEL * 6);
                    let v = ((i * 37 % 11) as f32 - 5.0) / 5.0;
                    if level == 1 {
                        v * level_value
                    } else {
                        v * other
                    }
                })
                .collect()
        };
        let rois = Tensor::<4>::from_data(
            TensorData::new((0..128).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>(), [1, 2, 8, 8]),
            &device,
        );
        let present = Tensor::<2>::ones([1, 2], &device);
        let level = || Tensor::<1, Int>::from_data(TensorData::new(vec![1i64], [1]), &device);
        let run = |p: Vec<f32>| -> Vec<f32> {
            let net = base.clone().with_prompt_embeddings(p);
            net.forward(rois.clone(), present.clone(), level()).finding_logits.into_data().try_to_vec::<f32>().unwrap()
        };
        let a = run(prompts(1.0, 1.0));
        let b = run(prompts(1.0, -2.0));
        let c = run(prompts(-1.5, 1.0));
        assert_eq!(a, b, "another level's prompts changed the output");
        assert_ne!(a, c, "the sample level's prompts did not change the output");
    }

    fn convnext_config(head: FindingsHeadConfig) -> DiscFindingsNetConfig {
        DiscFindingsNetConfig::new(levels(), head).with_roi_px([16, 16]).with_encoder(Some(FindingsEncoderConfig::ConvnextV2 {
            features_per_stage: vec![4, 8, 8],
            strides: vec![[1, 1], [2, 2], [2, 2]],
            stem_kernel: [3, 3],
            blocks: ConvNeXtV2EncoderConfig::new(vec![0, 1, 1]).with_depthwise_kernel(3),
        }))
    }

    fn features_of(net: &DiscFindingsNet, rois: Vec<f32>, present: [f32; 2], batch: usize) -> Vec<f32> {
        let device = device();
        let rois = Tensor::<4>::from_data(TensorData::new(rois, [batch, 2, 16, 16]), &device);
        let present: Vec<f32> = (0..batch).flat_map(|_| present).collect();
        let present = Tensor::<2>::from_data(TensorData::new(present, [batch, 2]), &device);
        net.features(rois, present).into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn a_convnext_encoder_is_shared_by_the_sequences_and_a_missing_one_gives_zeros() {
        let device = device();
        device.seed(5);
        let config = convnext_config(FindingsHeadConfig::Visual);
        config.validate().unwrap();
        let net = config.init(&device);
        let t1: Vec<f32> = (0..256).map(|i| (i as f32 * 0.13).sin()).collect();
        let t2: Vec<f32> = (0..256).map(|i| (i as f32 * 0.41).cos() * 2.0).collect();
        let both = features_of(&net, [t1.clone(), t2.clone()].concat(), [1.0, 1.0], 1);
        // 8 features per sequence, then the two flags.
        assert_eq!(both.len(), 2 * 8 + 2);
        // The same encoder: swapping the sequences swaps the two feature blocks.
        let swapped = features_of(&net, [t2.clone(), t1.clone()].concat(), [1.0, 1.0], 1);
        assert_eq!(&both[..8], &swapped[8..16]);
        assert_eq!(&both[8..16], &swapped[..8]);
        assert!(both[..16].iter().any(|v| v.abs() > 1e-3), "pooled and normalised features should not vanish");
        // T2 missing: its block is zero whatever the zeros in its channel would give.
        let only_t1 = features_of(&net, [t1, vec![0.0; 256]].concat(), [1.0, 0.0], 1);
        assert_eq!(&only_t1[..8], &both[..8]);
        assert!(only_t1[8..16].iter().all(|&v| v == 0.0));
        assert_eq!(&only_t1[16..], &[1.0, 0.0]);
        // The heads sit on the wider features.
        let out = net.forward(
            Tensor::<4>::ones([3, 2, 16, 16], &device),
            Tensor::<2>::ones([3, 2], &device),
            Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 4], [3]), &device),
        );
        assert_eq!(out.finding_logits.dims(), [3, NUM_FINDINGS]);
        assert_eq!(out.grade_logits.dims(), [3, NUM_GRADES]);
    }

    #[test]
    fn a_convnext_encoder_is_replaced_only_by_one_of_the_same_layers() {
        let device = device();
        let config = convnext_config(FindingsHeadConfig::Visual);
        device.seed(1);
        let net = config.init(&device);
        device.seed(2);
        let other = config.init(&device).convnext_encoder.unwrap();
        let t: Vec<f32> = (0..512).map(|i| (i as f32 * 0.07).sin()).collect();
        let before = features_of(&net, t.clone(), [1.0, 1.0], 1);
        let replaced = net.clone().with_convnext_encoder(other.clone()).unwrap();
        assert_ne!(features_of(&replaced, t, [1.0, 1.0], 1), before, "the new encoder's weights should be used");
        let narrower = convnext_config(FindingsHeadConfig::Visual).with_encoder(Some(FindingsEncoderConfig::ConvnextV2 {
            features_per_stage: vec![4, 8, 16],
            strides: vec![[1, 1], [2, 2], [2, 2]],
            stem_kernel: [3, 3],
            blocks: ConvNeXtV2EncoderConfig::new(vec![0, 1, 1]).with_depthwise_kernel(3),
        }));
        let wrong = narrower.init(&device).convnext_encoder.unwrap();
        let err = net.clone().with_convnext_encoder(wrong).unwrap_err();
        assert!(err.contains("do not match"), "{err}");
        let plain = DiscFindingsNetConfig::new(levels(), FindingsHeadConfig::Visual).with_roi_px([16, 16]).init(&device);
        assert!(plain.with_convnext_encoder(other).is_err());
    }

    #[test]
    fn the_shipped_plain_model_still_loads_and_its_config_reads_as_plain() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/disc-findings");
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(root.join("findings_model.json")).unwrap()).unwrap();
        let config: DiscFindingsNetConfig = serde_json::from_value(manifest["network"]["config"].clone()).unwrap();
        assert_eq!(config.encoder, None);
        assert_eq!(config.encoder_config(), &FindingsEncoderConfig::PlainConv);
        let net = config.init(&device()).try_load_file(&root.join("weights.bpk")).unwrap();
        assert_eq!(net.stages().len(), config.widths.len());
        assert!(net.convnext_encoder.is_none());
    }

    #[test]
    fn bad_configs_are_refused() {
        let config = DiscFindingsNetConfig::new(vec![], FindingsHeadConfig::Visual);
        assert_eq!(config.validate(), Err(FindingsNetConfigError::NoLevels));
        let config = DiscFindingsNetConfig::new(levels(), FindingsHeadConfig::Visual).with_roi_px([20, 64]);
        assert_eq!(config.validate(), Err(FindingsNetConfigError::RoiNotDivisible([20, 64], [8, 8])));
        let config = convnext_config(FindingsHeadConfig::Visual).with_roi_px([18, 16]);
        assert_eq!(config.validate(), Err(FindingsNetConfigError::RoiNotDivisible([18, 16], [4, 4])));
        let mut config = convnext_config(FindingsHeadConfig::Visual);
        if let Some(FindingsEncoderConfig::ConvnextV2 { strides, .. }) = &mut config.encoder {
            strides.pop();
        }
        assert!(matches!(config.validate(), Err(FindingsNetConfigError::Encoder(_))));
    }
}
