//! TMCA's text-image alignment for [`PlainConvUNet`](crate::PlainConvUNet): target-informed
//! multi-level alignment of decoder features with the class prompts, and language-guided target
//! enhancement (Li et al., "Text-guided medical image segmentation with target-informed
//! multi-level contrastive alignment", arXiv 2412.13533).
//!
//! The paper's method section was not available to us (only its abstract), so this follows the
//! abstract and the spineseg issue that specifies it; where a detail is our choice it says so.
//!
//! 1. **Text.** The frozen class-prompt embeddings (one per class, background included) are
//!    projected to `embed_dim` and L2-normalised: `[classes, embed_dim]`.
//! 2. **Pixel embeddings at several scales.** At each aligned decoder level (default levels 1, 2
//!    and 3: 1/2, 1/4 and 1/8 of full resolution, where a lumbar body spans 10-30 pixels), a
//!    linear map of the level's features to `embed_dim`, L2-normalised per pixel.
//! 3. **Target-sensitive distances** (the training loss, `spineseg_train::losses::tmca`): each
//!    class's *region* feature (its pixels' embeddings pooled with the ground-truth mask at that
//!    scale; [`region_features`] also pools with soft weights such as predicted probabilities) is
//!    compared with every class text, so the alignment is about the target, not the whole image.
//! 4. **Language-guided target enhancement.** At each aligned level, the pixel-to-class
//!    similarity map `S = softmax_c(<pixel, text_c> / temperature)` re-weights the features:
//!    `x' = x * (1 + gate * (1 - S_background)) + W(sum_c S_c text_c)`: the regions the text
//!    names (high foreground similarity) are amplified channel by channel, and each pixel gets
//!    the embedding of the structure it resembles. `gate` and `W` start at zero, so a fresh
//!    module is the identity and the network starts as the visual-only U-Net (our choice, as in
//!    this crate's HASF). The enhanced features feed the level's head and the next decoder level.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};

/// Settings of the target alignment of a U-Net.
#[derive(Config, Debug, PartialEq)]
pub struct TargetAlignmentConfig {
    /// Size of the frozen class-prompt embeddings (384 for all-MiniLM-L6-v2).
    pub text_dim: usize,
    /// Width of the shared image-text space.
    #[config(default = 64)]
    pub embed_dim: usize,
    /// Decoder levels aligned and enhanced (0 = full resolution).
    #[config(default = "vec![1, 2, 3]")]
    pub levels: Vec<usize>,
    /// Temperature of the enhancement's similarity softmax over classes.
    #[config(default = 0.1)]
    pub temperature: f64,
}

impl TargetAlignmentConfig {
    /// Checks the settings against a U-Net with `n_stages` stages (`n_stages - 1` decoder levels).
    pub fn validate(&self, n_stages: usize) -> Result<(), String> {
        if self.text_dim == 0 || self.embed_dim == 0 {
            return Err("target alignment: text_dim and embed_dim must be positive".into());
        }
        if self.levels.is_empty() {
            return Err("target alignment: no decoder levels to align".into());
        }
        if let Some(&bad) = self.levels.iter().find(|&&l| l + 1 >= n_stages) {
            return Err(format!("target alignment: decoder level {bad} does not exist ({} levels)", n_stages - 1));
        }
        let mut sorted = self.levels.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != self.levels.len() {
            return Err("target alignment: a decoder level is listed twice".into());
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(format!("target alignment: temperature {} must be positive", self.temperature));
        }
        Ok(())
    }

    /// Builds the module for a U-Net whose encoder stages have `stage_features` channels (decoder
    /// level `l` has the channels of stage `l`); the class embeddings start at zero (set them with
    /// [`TargetAlignment::with_class_embeddings`], or load them with the weights).
    pub fn init(&self, stage_features: &[usize], num_classes: usize, device: &Device) -> TargetAlignment {
        let linear = |d_in: usize, d_out: usize| LinearConfig::new(d_in, d_out).init(device);
        let zero_linear = |d_in: usize, d_out: usize| {
            LinearConfig::new(d_in, d_out).with_initializer(Initializer::Zeros).init(device)
        };
        let levels = self
            .levels
            .iter()
            .map(|&level| {
                let channels = stage_features[level];
                LevelAlignment {
                    level,
                    pixel_projection: linear(channels, self.embed_dim),
                    text_to_features: zero_linear(self.embed_dim, channels),
                    gate: Param::from_tensor(Tensor::zeros([channels], device)),
                }
            })
            .collect();
        TargetAlignment {
            class_embeddings: Param::from_tensor(Tensor::zeros([num_classes, self.text_dim], device))
                .set_require_grad(false),
            text_projection: linear(self.text_dim, self.embed_dim),
            text_norm: LayerNormConfig::new(self.embed_dim).init(device),
            levels,
            temperature: self.temperature,
        }
    }
}

/// The alignment of one decoder level.
#[derive(Module, Debug)]
pub struct LevelAlignment {
    /// Decoder level (0 = full resolution).
    pub level: usize,
    /// Level features -> the shared space.
    pub pixel_projection: Linear,
    /// Shared space -> level features, zero-initialised (the enhancement's additive term).
    pub text_to_features: Linear,
    /// Per-channel gain of the foreground attention, zero-initialised.
    pub gate: Param<Tensor<1>>,
}

/// TMCA's part of a U-Net (see the module documentation).
#[derive(Module, Debug)]
pub struct TargetAlignment {
    /// Frozen class-prompt embeddings `[classes, text_dim]`, row `k` = class index `k`.
    pub class_embeddings: Param<Tensor<2>>,
    pub text_projection: Linear,
    pub text_norm: LayerNorm,
    /// One per aligned decoder level, in the configured order.
    pub levels: Vec<LevelAlignment>,
    pub temperature: f64,
}

impl TargetAlignment {
    /// Sets the frozen class embeddings.
    ///
    /// # Panics
    /// Panics if `embeddings` is not `[classes, text_dim]` as configured.
    pub fn with_class_embeddings(mut self, embeddings: Tensor<2>) -> Self {
        let expected = self.class_embeddings.val().dims();
        assert_eq!(embeddings.dims(), expected, "class embeddings should be [classes, text_dim]");
        self.class_embeddings = Param::from_tensor(embeddings).set_require_grad(false);
        self
    }

    /// The class texts in the shared space, unit length: `[classes, embed_dim]`.
    pub fn class_texts(&self) -> Tensor<2> {
        // Detached: the embeddings are frozen whatever the parameter's flag says after loading.
        let text = self.text_norm.forward(self.text_projection.forward(self.class_embeddings.val().detach()));
        l2_normalise(text, 1)
    }

    /// The alignment of decoder `level`, if that level is aligned.
    pub fn level(&self, level: usize) -> Option<&LevelAlignment> {
        self.levels.iter().find(|l| l.level == level)
    }

    /// Unit-length pixel embeddings of decoder `level`'s features.
    ///
    /// # Shapes
    /// - features: `[batch, channels, d, h, w]`; output `[batch, embed_dim, d * h * w]`
    ///
    /// # Panics
    /// Panics if `level` is not aligned.
    pub fn pixel_embeddings(&self, level: usize, features: Tensor<5>) -> Tensor<3> {
        let alignment = self.level(level).expect("pixel embeddings of an aligned level");
        let [batch, channels, d, h, w] = features.dims();
        let tokens = features.reshape([batch, channels, d * h * w]).swap_dims(1, 2);
        l2_normalise(alignment.pixel_projection.forward(tokens), 2).swap_dims(1, 2)
    }

    /// Language-guided target enhancement of decoder `level`'s features (identity for a level
    /// that is not aligned).
    ///
    /// # Shapes
    /// - features: `[batch, channels, d, h, w]`; output the same
    pub fn enhance(&self, level: usize, features: Tensor<5>) -> Tensor<5> {
        let Some(alignment) = self.level(level) else { return features };
        let [batch, channels, d, h, w] = features.dims();
        let texts = self.class_texts(); // [classes, embed]
        let [classes, embed] = texts.dims();
        let pixels = self.pixel_embeddings(level, features.clone()); // [batch, embed, n]
        let texts_b: Tensor<3> = texts.unsqueeze::<3>().expand([batch, classes, embed]);
        let similarity = softmax(texts_b.clone().matmul(pixels) / self.temperature, 1); // [batch, classes, n]
        let foreground = similarity.clone().narrow(1, 0, 1).neg().add_scalar(1.0); // [batch, 1, n]
                                                                                   // Each pixel's text: the similarity-weighted class texts, [batch, n, embed].
        let pixel_text = similarity.swap_dims(1, 2).matmul(texts_b);
        let additive = alignment.text_to_features.forward(pixel_text).swap_dims(1, 2); // [batch, channels, n]
        let gate = alignment.gate.val().reshape([1, channels, 1]);
        let gain = foreground.mul(gate).add_scalar(1.0); // [batch, channels, n]
        let flat = features.reshape([batch, channels, d * h * w]);
        (flat * gain + additive).reshape([batch, channels, d, h, w])
    }
}

/// Pools pixel embeddings into one feature per class with `weights` (a ground-truth one-hot mask
/// at the level's resolution, or predicted probabilities): the weighted mean, L2-normalised.
/// Also returns each class's total weight (0 where the class is absent).
///
/// # Shapes
/// - pixels: `[batch, embed, n]`, weights: `[batch, classes, n]`;
///   output `([batch, classes, embed], [batch, classes])`
pub fn region_features(pixels: Tensor<3>, weights: Tensor<3>) -> (Tensor<3>, Tensor<2>) {
    let mass: Tensor<2> = weights.clone().sum_dim(2).squeeze_dim(2); // [batch, classes]
    let pooled = weights.matmul(pixels.swap_dims(1, 2)); // [batch, classes, embed]
    let mean = pooled / mass.clone().clamp_min(1e-6).unsqueeze_dim(2);
    (l2_normalise(mean, 2), mass)
}

/// `x / sqrt(|x|^2 + 1e-12)` along `dim`. Not `|x|` clamped: an absent class's pooled vector
/// is 0, where the derivative of `|x|` is infinite and would turn every gradient into NaN.
fn l2_normalise<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
    let norm = x.clone().powi_scalar(2).sum_dim(dim).add_scalar(1e-12).sqrt();
    x / norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    fn device() -> Device {
        Device::flex()
    }

    #[test]
    fn region_pooling_is_the_weighted_mean_of_the_pixels() {
        let device = device();
        // One sample, embed 2, 4 pixels; class 0 covers pixels 0, 1; class 1 pixel 3 with weight
        // 0.5 and pixel 2 with weight 0.5 (soft).
        let pixels = Tensor::<3>::from_data(
            TensorData::new(vec![1.0f32, 3.0, 0.0, 4.0, 0.0, 1.0, 2.0, 0.0], [1, 2, 4]),
            &device,
        );
        let weights = Tensor::<3>::from_data(
            TensorData::new(vec![1.0f32, 1.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5], [1, 2, 4]),
            &device,
        );
        let (features, mass) = region_features(pixels, weights);
        let f: Vec<f32> = features.into_data().try_to_vec().unwrap();
        // Class 0: mean of (1, 0) and (3, 1) = (2, 0.5) -> unit length.
        let n0 = (2.0f32 * 2.0 + 0.25).sqrt();
        // Class 1: mean of (0, 2) and (4, 0) = (2, 1).
        let n1 = (4.0f32 + 1.0).sqrt();
        let expected = [2.0 / n0, 0.5 / n0, 2.0 / n1, 1.0 / n1];
        for (a, b) in f.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{f:?} vs {expected:?}");
        }
        assert_eq!(mass.into_data().try_to_vec::<f32>().unwrap(), vec![2.0, 1.0]);
    }

    #[test]
    fn a_fresh_enhancement_is_the_identity_and_shapes_are_kept() {
        let device = device();
        let config = TargetAlignmentConfig::new(12).with_embed_dim(8).with_levels(vec![0, 1]);
        config.validate(3).unwrap();
        let module = config.init(&[4, 6, 8], 3, &device).with_class_embeddings(Tensor::random(
            [3, 12],
            Distribution::Normal(0.0, 1.0),
            &device,
        ));
        let x = Tensor::<5>::random([2, 6, 1, 4, 5], Distribution::Normal(0.0, 1.0), &device);
        let y = module.enhance(1, x.clone());
        assert_eq!(y.dims(), x.dims());
        y.into_data().assert_approx_eq::<f32>(&x.clone().into_data(), burn::tensor::Tolerance::absolute(1e-6));
        // A level that is not aligned passes through.
        let z = Tensor::<5>::random([2, 8, 1, 2, 2], Distribution::Normal(0.0, 1.0), &device);
        module.enhance(2, z.clone()).into_data().assert_eq(&z.into_data(), true);
        // Unit pixel embeddings and class texts.
        let pixels = module.pixel_embeddings(1, x);
        assert_eq!(pixels.dims(), [2, 8, 20]);
        let norms: Vec<f32> = pixels.powi_scalar(2).sum_dim(1).into_data().try_to_vec().unwrap();
        assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5), "{norms:?}");
    }

    #[test]
    fn a_trained_gate_amplifies_where_the_text_sees_foreground() {
        let device = device();
        let config = TargetAlignmentConfig::new(4).with_embed_dim(4).with_levels(vec![0]);
        let mut module = config.init(&[2, 4], 2, &device).with_class_embeddings(Tensor::random(
            [2, 4],
            Distribution::Normal(0.0, 1.0),
            &device,
        ));
        module.levels[0].gate = Param::from_tensor(Tensor::ones([2], &device));
        let x = Tensor::<5>::ones([1, 2, 1, 2, 2], &device);
        let y: Vec<f32> = module.enhance(0, x).into_data().try_to_vec().unwrap();
        // gain = 1 + (1 - S_background) lies in (1, 2); the additive term is still zero. In f32 a
        // background similarity below ~6e-8 (well-separated random embeddings, a softmax over
        // cosines / 0.07) rounds the gain to exactly 2, so 2 is allowed: the test was flaky with
        // `< 2` depending on what the unseeded draws gave.
        assert!(y.iter().all(|&v| v > 1.0 && v <= 2.0), "{y:?}");
    }

    fn tiny_unet() -> crate::PlainConvUNetConfig {
        crate::PlainConvUNetConfig::new(
            crate::SpatialDims::D2,
            1,
            3,
            vec![4, 8, 16],
            vec![vec![1, 1], vec![2, 2], vec![2, 2]],
        )
    }

    #[test]
    fn a_fresh_alignment_leaves_the_visual_unet_unchanged_and_learns_from_its_loss() {
        // The same visual network with and without a fresh alignment module (the device's random
        // generator is shared with concurrent tests, so no second seeded initialisation).
        let device = device().autodiff();
        let visual = tiny_unet().init(&device);
        let config = TargetAlignmentConfig::new(6).with_embed_dim(8).with_levels(vec![0, 1]);
        let embeddings = Tensor::<2>::random([3, 6], Distribution::Normal(0.0, 1.0), &device);
        let alignment = config.init(&[4, 8, 16], 3, &device).with_class_embeddings(embeddings);
        let aligned = crate::PlainConvUNet { target_alignment: Some(alignment), ..visual.clone() };
        let x = Tensor::<5>::random([2, 1, 1, 8, 12], Distribution::Normal(0.0, 1.0), &device);
        let a = visual.forward_detailed(x.clone());
        let b = aligned.forward_detailed(x);
        assert_eq!(b.level_features.len(), 2);
        assert_eq!(b.level_features[1].dims(), [2, 8, 1, 4, 6]);
        for (a, b) in a.logits.iter().zip(&b.logits) {
            a.clone().into_data().assert_approx_eq::<f32>(&b.clone().into_data(), Default::default());
        }
        // A loss on the logits and on the aligned pixel embeddings reaches the enhancement's
        // zero-initialised parts and the projections, never the frozen text.
        let module = aligned.target_alignment.as_ref().unwrap();
        let pixels = module.pixel_embeddings(1, b.level_features[1].clone());
        let texts = module.class_texts();
        let loss =
            b.logits[0].clone().powf_scalar(2.0).mean() + texts.matmul(pixels.mean_dim(0).reshape([8, 24])).sum();
        let grads = loss.backward();
        let level = module.level(1).unwrap();
        let gate = level.gate.val().grad(&grads).expect("the gate gets a gradient");
        assert!(gate.abs().sum().into_scalar::<f32>() > 0.0);
        let additive = level.text_to_features.weight.val().grad(&grads).expect("the additive term gets a gradient");
        assert!(additive.abs().sum().into_scalar::<f32>() > 0.0);
        assert!(level.pixel_projection.weight.val().grad(&grads).is_some());
        assert!(module.class_embeddings.val().grad(&grads).is_none(), "the frozen text must not be trained");
    }

    #[test]
    fn settings_are_checked() {
        assert!(TargetAlignmentConfig::new(8).validate(6).is_ok());
        assert!(TargetAlignmentConfig::new(8).with_levels(vec![5]).validate(6).unwrap_err().contains("level 5"));
        assert!(TargetAlignmentConfig::new(8).with_levels(vec![1, 1]).validate(6).unwrap_err().contains("twice"));
        assert!(TargetAlignmentConfig::new(8).with_levels(vec![]).validate(6).is_err());
        assert!(TargetAlignmentConfig::new(8).with_temperature(0.0).validate(6).is_err());
    }
}
