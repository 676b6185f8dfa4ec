//! Text guidance for [`PlainConvUNet`](crate::PlainConvUNet): ATM-Net's Holistic Anatomy-aware
//! Semantic Fusion (HASF), in a form that fits nnU-Net's plain U-Net and a CPU budget.
//!
//! The network receives one frozen sentence embedding per class (the class prompts of
//! `spineseg_text::prompts`, background included), stored in the module as a parameter that never
//! takes a gradient, so a trained model carries its text and prediction needs no encoder.
//!
//! 1. **Text tokens.** The class embeddings are projected to `embed_dim` and layer-normed:
//!    `[classes, embed_dim]`, one token per structure, broadcast over the batch.
//! 2. **Bidirectional cross-attention** after each of the `fused_stages` deepest encoder stages
//!    (the low-resolution stages, where a token sees a whole vertebra; 5 x 5 and 10 x 10 for the
//!    lumbar 2D plan): first the text tokens read the image (text queries, image keys/values),
//!    so each structure's token learns what and where that structure is in *this* image; then
//!    the image reads the updated text (image queries), and the result is added to the stage's
//!    features through a zero-initialised projection, so before training the network computes
//!    exactly the visual-only U-Net. The fused features feed both the next encoder stage and the
//!    decoder's skip.
//! 3. **Text-conditioned class queries.** Each decoder level's logits get a text term: the final
//!    (image-conditioned) text tokens become one query vector per class (`Linear(embed_dim ->
//!    channels)`, zero-initialised), and the class's logit at a pixel is the dot product of its
//!    query with the pixel embedding (the decoder features), scaled by `1/sqrt(channels)`. The 1x1
//!    conv head stays as a residual path.
//! 4. **CCAE projection.** `Linear(channels_0 -> embed_dim)` of the full-resolution decoder
//!    features, used only by the training loss (`spineseg_train::contrastive`), which pulls each
//!    class's pooled features towards its text token.
//!
//! Departures from the paper and why: ATM-Net fuses in a transformer decoder and predicts every
//! mask from its class query alone; here the conv head remains and the text enters as zero-started
//! residuals, so the text-guided network contains the visual-only baseline exactly (the ablation
//! compares like with like, and text can only be learned in, not forced). Attention runs only at
//! the lowest resolutions, because attention over a 160 x 160 slice costs more than the whole
//! U-Net on a CPU. Inference always uses the class-level prompts; training may replace them
//! per sample by prompts derived from the sample's annotation (ATM-Net's per-view prompts,
//! [`PlainConvUNet::forward_with_text`](crate::PlainConvUNet::forward_with_text)).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};

/// Settings of the text guidance of a U-Net.
#[derive(Config, Debug, PartialEq)]
pub struct TextGuidanceConfig {
    /// Size of the frozen class-prompt embeddings (384 for all-MiniLM-L6-v2).
    pub text_dim: usize,
    /// Width of the text tokens and of the attention.
    #[config(default = 64)]
    pub embed_dim: usize,
    /// Attention heads (`embed_dim` must be a multiple).
    #[config(default = 4)]
    pub heads: usize,
    /// How many of the deepest encoder stages get bidirectional cross-attention.
    #[config(default = 2)]
    pub fused_stages: usize,
    /// One more text token per sample: the embedding of a free-text report about the case
    /// (issue 16's report text), or of a fixed "no report" sentence when there is none.
    #[config(default = false)]
    pub report: bool,
}

impl TextGuidanceConfig {
    /// Checks the settings against a U-Net with `n_stages` stages.
    pub fn validate(&self, n_stages: usize) -> Result<(), String> {
        if self.text_dim == 0 || self.embed_dim == 0 || self.heads == 0 {
            return Err("text guidance: text_dim, embed_dim and heads must be positive".into());
        }
        if !self.embed_dim.is_multiple_of(self.heads) {
            return Err(format!("text guidance: embed_dim {} is not a multiple of heads {}", self.embed_dim, self.heads));
        }
        if self.fused_stages > n_stages {
            return Err(format!("text guidance: fused_stages {} exceeds the {n_stages} stages", self.fused_stages));
        }
        Ok(())
    }

    /// Builds the fusion for a U-Net whose encoder stages have `stage_features` channels,
    /// `num_classes` classes; the class embeddings start at zero (set them with
    /// [`TextFusion::with_class_embeddings`], or load them with the weights).
    pub fn init(&self, stage_features: &[usize], num_classes: usize, device: &Device) -> TextFusion {
        let n = stage_features.len();
        let linear = |d_in: usize, d_out: usize| LinearConfig::new(d_in, d_out).init(device);
        let zero_linear =
            |d_in: usize, d_out: usize| LinearConfig::new(d_in, d_out).with_initializer(Initializer::Zeros).init(device);
        let fusion = (n - self.fused_stages..n)
            .map(|stage| {
                let channels = stage_features[stage];
                CrossAttentionFusion {
                    image_in: linear(channels, self.embed_dim),
                    image_norm: LayerNormConfig::new(self.embed_dim).init(device),
                    text_norm: LayerNormConfig::new(self.embed_dim).init(device),
                    text_reads_image: AttentionProjections::new(self.embed_dim, &linear),
                    image_reads_text: AttentionProjections::new(self.embed_dim, &linear),
                    image_out: zero_linear(self.embed_dim, channels),
                    heads: self.heads,
                }
            })
            .collect();
        // Decoder level l (full resolution first) has the channels of encoder stage l.
        let class_queries = stage_features[..n - 1].iter().map(|&c| zero_linear(self.embed_dim, c)).collect();
        let embeddings = Tensor::<2>::zeros([num_classes, self.text_dim], device);
        let null_report =
            self.report.then(|| Param::from_tensor(Tensor::<2>::zeros([1, self.text_dim], device)).set_require_grad(false));
        TextFusion {
            class_embeddings: Param::from_tensor(embeddings).set_require_grad(false),
            null_report,
            text_in: linear(self.text_dim, self.embed_dim),
            text_in_norm: LayerNormConfig::new(self.embed_dim).init(device),
            fusion,
            class_queries,
            contrastive_projection: linear(stage_features[0], self.embed_dim),
            first_fused_stage: n - self.fused_stages,
        }
    }
}

/// Query, key, value and output projections of one attention direction.
#[derive(Module, Debug)]
pub struct AttentionProjections {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub output: Linear,
}

impl AttentionProjections {
    fn new(dim: usize, linear: &impl Fn(usize, usize) -> Linear) -> Self {
        AttentionProjections { query: linear(dim, dim), key: linear(dim, dim), value: linear(dim, dim), output: linear(dim, dim) }
    }

    /// Multi-head attention of `queries` over `context`, through the output projection.
    ///
    /// # Shapes
    /// - queries: `[batch, nq, dim]`, context: `[batch, nk, dim]`; output `[batch, nq, dim]`
    fn forward(&self, queries: Tensor<3>, context: Tensor<3>, heads: usize) -> Tensor<3> {
        let [batch, nq, dim] = queries.dims();
        let [_, nk, _] = context.dims();
        let head_dim = dim / heads;
        let split = |x: Tensor<3>, n: usize| x.reshape([batch, n, heads, head_dim]).swap_dims(1, 2);
        let q = split(self.query.forward(queries), nq);
        let k = split(self.key.forward(context.clone()), nk);
        let v = split(self.value.forward(context), nk);
        let scores = q.matmul(k.transpose()) / (head_dim as f64).sqrt();
        let mixed = softmax(scores, 3).matmul(v).swap_dims(1, 2).reshape([batch, nq, dim]);
        self.output.forward(mixed)
    }
}

/// Bidirectional cross-attention between one encoder stage's features and the text tokens.
#[derive(Module, Debug)]
pub struct CrossAttentionFusion {
    /// Image features -> attention width.
    pub image_in: Linear,
    pub image_norm: LayerNorm,
    pub text_norm: LayerNorm,
    /// Text queries over image keys/values.
    pub text_reads_image: AttentionProjections,
    /// Image queries over text keys/values.
    pub image_reads_text: AttentionProjections,
    /// Attention width -> stage channels, zero-initialised.
    pub image_out: Linear,
    pub heads: usize,
}

impl CrossAttentionFusion {
    /// Returns the fused features and the updated text tokens.
    ///
    /// # Shapes
    /// - features: `[batch, channels, d, h, w]`, text: `[batch, classes, embed_dim]`
    pub fn forward(&self, features: Tensor<5>, text: Tensor<3>) -> (Tensor<5>, Tensor<3>) {
        let [batch, channels, d, h, w] = features.dims();
        let tokens = features.clone().reshape([batch, channels, d * h * w]).swap_dims(1, 2);
        let image = self.image_norm.forward(self.image_in.forward(tokens));
        let text = text.clone() + self.text_reads_image.forward(self.text_norm.forward(text), image.clone(), self.heads);
        let update = self.image_out.forward(self.image_reads_text.forward(image, text.clone(), self.heads));
        let update = update.swap_dims(1, 2).reshape([batch, channels, d, h, w]);
        (features + update, text)
    }
}

/// What a text-guided forward pass may take besides the image; the default is what prediction
/// uses without a report (class prompts, the "no report" token where the network has one).
#[derive(Debug, Clone, Default)]
pub struct TextInputs {
    /// Per-sample prompt embeddings `[batch, classes, text_dim]` instead of the class prompts
    /// (per-view prompts in training).
    pub prompts: Option<Tensor<3>>,
    /// Per-sample report embeddings `[batch, text_dim]` for a network with a report token.
    pub reports: Option<Tensor<2>>,
}

/// The text-guidance part of a text-guided U-Net (see the module documentation).
#[derive(Module, Debug)]
pub struct TextFusion {
    /// Frozen class-prompt embeddings `[classes, text_dim]`, row `k` = class index `k`.
    pub class_embeddings: Param<Tensor<2>>,
    /// With report text: the frozen embedding of the "no report" sentence `[1, text_dim]`, the
    /// report token of a case without a report.
    pub null_report: Option<Param<Tensor<2>>>,
    pub text_in: Linear,
    pub text_in_norm: LayerNorm,
    /// One fusion per fused stage, shallowest first.
    pub fusion: Vec<CrossAttentionFusion>,
    /// One class-query projection per decoder level, full resolution first.
    pub class_queries: Vec<Linear>,
    /// Full-resolution decoder features -> text-token width, for the CCAE loss.
    pub contrastive_projection: Linear,
    /// Index of the first encoder stage with fusion.
    pub first_fused_stage: usize,
}

impl TextFusion {
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

    /// Sets the frozen "no report" embedding (`[1, text_dim]`) of a fusion with a report token.
    ///
    /// # Panics
    /// Panics if the fusion has no report token or the shape is not `[1, text_dim]`.
    pub fn with_null_report(mut self, embedding: Tensor<2>) -> Self {
        let slot = self.null_report.as_ref().expect("a fusion configured with a report token");
        assert_eq!(embedding.dims(), slot.val().dims(), "the null report should be [1, text_dim]");
        self.null_report = Some(Param::from_tensor(embedding).set_require_grad(false));
        self
    }

    /// Whether the fusion takes a report token.
    pub fn takes_reports(&self) -> bool {
        self.null_report.is_some()
    }

    /// The text tokens a forward pass starts from, `[batch, classes (+ 1 report token),
    /// embed_dim]`: the class prompts (or `inputs.prompts`, per sample) and, with a report
    /// token, `inputs.reports` (per sample) or the "no report" embedding. Reports given to a
    /// fusion without a report token are ignored.
    pub fn initial_tokens(&self, batch: usize, inputs: TextInputs) -> Tensor<3> {
        let tokens = match inputs.prompts {
            Some(embeddings) => self.sample_tokens(embeddings),
            None => {
                let class_tokens = self.class_tokens();
                let [classes, embed_dim] = class_tokens.dims();
                class_tokens.unsqueeze::<3>().expand([batch, classes, embed_dim])
            }
        };
        let Some(null_report) = &self.null_report else { return tokens };
        let reports = match inputs.reports {
            Some(reports) => reports,
            None => {
                let [_, text_dim] = null_report.val().dims();
                null_report.val().expand([batch, text_dim])
            }
        };
        let report_token = self.sample_tokens(reports.unsqueeze_dim::<3>(1));
        Tensor::cat(vec![tokens, report_token], 1)
    }

    /// The class tokens of `text` (drops the report token, which has no class).
    pub fn class_part(&self, text: Tensor<3>) -> Tensor<3> {
        if self.null_report.is_none() {
            return text;
        }
        let [batch, tokens, embed_dim] = text.dims();
        text.slice([0..batch, 0..tokens - 1, 0..embed_dim])
    }

    /// The text tokens before any fusion, `[classes, embed_dim]` (what CCAE aligns to).
    pub fn class_tokens(&self) -> Tensor<2> {
        // Detached: the embeddings are frozen whatever the parameter's flag says after loading.
        self.text_in_norm.forward(self.text_in.forward(self.class_embeddings.val().detach()))
    }

    /// Text tokens of per-sample prompt embeddings (ATM-Net's per-view prompts in training),
    /// through the same frozen-input projection as [`class_tokens`](Self::class_tokens).
    ///
    /// # Shapes
    /// - embeddings: `[batch, classes, text_dim]`; output `[batch, classes, embed_dim]`
    pub fn sample_tokens(&self, embeddings: Tensor<3>) -> Tensor<3> {
        self.text_in_norm.forward(self.text_in.forward(embeddings.detach()))
    }

    /// Fuses the output of encoder `stage` with the text tokens, if that stage is fused.
    pub fn fuse_stage(&self, stage: usize, features: Tensor<5>, text: Tensor<3>) -> (Tensor<5>, Tensor<3>) {
        match stage.checked_sub(self.first_fused_stage).and_then(|i| self.fusion.get(i)) {
            Some(fusion) => fusion.forward(features, text),
            None => (features, text),
        }
    }

    /// The text term of decoder level `level`'s logits.
    ///
    /// # Shapes
    /// - features: `[batch, channels, d, h, w]` (the level's decoder output),
    ///   text: `[batch, classes, embed_dim]`; output `[batch, classes, d, h, w]`
    pub fn class_query_logits(&self, level: usize, features: Tensor<5>, text: Tensor<3>) -> Tensor<5> {
        let [batch, channels, d, h, w] = features.dims();
        let classes = text.dims()[1];
        let queries = self.class_queries[level].forward(text); // [batch, classes, channels]
        let pixels = features.reshape([batch, channels, d * h * w]);
        let logits = queries.matmul(pixels) / (channels as f64).sqrt();
        logits.reshape([batch, classes, d, h, w])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn device() -> Device {
        Device::flex()
    }

    #[test]
    fn fusion_keeps_shapes_and_starts_as_identity_on_features() {
        let device = device();
        let config = TextGuidanceConfig::new(12).with_embed_dim(8).with_heads(2).with_fused_stages(2);
        let fusion = config.init(&[4, 8, 16], 5, &device);
        let features = Tensor::<5>::random([2, 16, 1, 3, 4], Distribution::Normal(0.0, 1.0), &device);
        let text = Tensor::<3>::random([2, 5, 8], Distribution::Normal(0.0, 1.0), &device);
        let (fused, new_text) = fusion.fuse_stage(2, features.clone(), text.clone());
        assert_eq!(fused.dims(), [2, 16, 1, 3, 4]);
        assert_eq!(new_text.dims(), [2, 5, 8]);
        // The image update is zero-initialised; the text tokens do change.
        fused.into_data().assert_approx_eq::<f32>(&features.into_data(), Default::default());
        let changed: f32 = (new_text - text).abs().sum().into_scalar();
        assert!(changed > 1e-3);
        // Stage 0 is not fused: passed through untouched.
        let shallow = Tensor::<5>::ones([2, 4, 1, 3, 4], &device);
        let (same, _) = fusion.fuse_stage(0, shallow.clone(), Tensor::zeros([2, 5, 8], &device));
        same.into_data().assert_eq(&shallow.into_data(), true);
    }

    #[test]
    fn class_query_logits_have_one_map_per_class() {
        let device = device();
        let fusion = TextGuidanceConfig::new(12).with_embed_dim(8).with_heads(2).init(&[4, 8, 16], 5, &device);
        let features = Tensor::<5>::random([2, 8, 1, 3, 4], Distribution::Normal(0.0, 1.0), &device);
        let text = Tensor::<3>::random([2, 5, 8], Distribution::Normal(0.0, 1.0), &device);
        let logits = fusion.class_query_logits(1, features, text);
        assert_eq!(logits.dims(), [2, 5, 1, 3, 4]);
    }

    fn tiny_unet(text: bool) -> crate::PlainConvUNetConfig {
        let config = crate::PlainConvUNetConfig::new(
            crate::SpatialDims::D2,
            1,
            3,
            vec![4, 8, 16],
            vec![vec![1, 1], vec![2, 2], vec![2, 2]],
        );
        config.with_text_guidance(text.then(|| TextGuidanceConfig::new(6).with_embed_dim(8).with_heads(2)))
    }

    #[test]
    fn a_fresh_fusion_leaves_the_visual_unet_unchanged() {
        // The device's random generator is global and other tests draw from it concurrently, so
        // the comparison adds a fresh fusion to the very same visual network instead of relying
        // on two seeded initialisations.
        let device = device();
        let visual = tiny_unet(false).init(&device);
        let text_config = tiny_unet(true).text_guidance.unwrap();
        let embeddings = Tensor::<2>::random([3, 6], Distribution::Normal(0.0, 1.0), &device);
        let fusion = text_config.init(&[4, 8, 16], 3, &device).with_class_embeddings(embeddings);
        let text = crate::PlainConvUNet { text_fusion: Some(fusion), ..visual.clone() };
        let x = Tensor::<4>::random([2, 1, 8, 12], Distribution::Normal(0.0, 1.0), &device);
        let a = visual.forward(x.clone());
        let b = text.forward(x);
        assert_eq!(a.len(), b.len());
        for (a, b) in a.into_iter().zip(b) {
            a.into_data().assert_approx_eq::<f32>(&b.into_data(), Default::default());
        }
    }

    #[test]
    fn gradients_reach_the_fusion_and_never_the_frozen_text() {
        let device = device().autodiff();
        device.seed(3);
        let model = tiny_unet(true).init(&device);
        let embeddings = Tensor::<2>::random([3, 6], Distribution::Normal(0.0, 1.0), &device);
        let fusion = model.text_fusion.clone().expect("text guidance configured").with_class_embeddings(embeddings);
        let model = crate::PlainConvUNet { text_fusion: Some(fusion), ..model };
        let x = Tensor::<5>::random([2, 1, 1, 8, 12], Distribution::Normal(0.0, 1.0), &device);
        let out = model.forward_detailed(x);
        let fusion = model.text_fusion.as_ref().expect("text guidance configured");
        // A loss that uses the logits and the CCAE projection of the pixel embeddings.
        let pooled = out.features.clone().mean_dim(4).mean_dim(3).reshape([2, 4]);
        let projected = fusion.contrastive_projection.forward(pooled);
        let loss = out.logits[0].clone().powf_scalar(2.0).mean() + projected.sum();
        let grads = loss.backward();
        let zero_out = fusion.fusion[0].image_out.weight.val().grad(&grads).expect("zero-initialised output gets a gradient");
        let total: f32 = zero_out.abs().sum().into_scalar();
        assert!(total.is_finite() && total > 0.0, "image_out gradient {total}");
        let query = fusion.class_queries[0].weight.val().grad(&grads).expect("class query gets a gradient");
        assert!(query.abs().sum().into_scalar::<f32>() > 0.0);
        assert!(fusion.class_embeddings.val().grad(&grads).is_none(), "the frozen text must not be trained");
        let text_in = fusion.text_in.weight.val().grad(&grads);
        assert!(text_in.is_none() || text_in.unwrap().abs().sum().into_scalar::<f32>().is_finite());
    }

    #[test]
    fn a_report_token_enters_only_through_the_fusion_and_starts_as_the_identity() {
        let device = device();
        let visual = tiny_unet(false).init(&device);
        let config = tiny_unet(true).text_guidance.unwrap().with_report(true);
        let embeddings = Tensor::<2>::random([3, 6], Distribution::Normal(0.0, 1.0), &device);
        let null = Tensor::<2>::random([1, 6], Distribution::Normal(0.0, 1.0), &device);
        let fusion = config.init(&[4, 8, 16], 3, &device).with_class_embeddings(embeddings).with_null_report(null);
        assert!(fusion.takes_reports());
        let text = crate::PlainConvUNet { text_fusion: Some(fusion), ..visual.clone() };
        let x = Tensor::<5>::random([2, 1, 1, 8, 12], Distribution::Normal(0.0, 1.0), &device);
        let report = Tensor::<2>::random([2, 6], Distribution::Normal(0.0, 1.0), &device);
        let with_report = |net: &crate::PlainConvUNet, report: Option<Tensor<2>>| {
            net.forward_with_text(x.clone(), TextInputs { prompts: None, reports: report }).logits[0].clone()
        };
        // Fresh: the zero-initialised outputs make the network the visual U-Net, with or without
        // a report.
        let plain = visual.forward_detailed(x.clone()).logits[0].clone();
        with_report(&text, Some(report.clone())).into_data().assert_approx_eq::<f32>(&plain.clone().into_data(), Default::default());
        // Once the fusion writes into the image features, the report changes the output, and
        // only through the fusion: the visual network is unchanged by construction (no report
        // input), and the output keeps one map per class (the report token has no class).
        let mut fusion = text.text_fusion.clone().unwrap();
        fusion.fusion[1].image_out.weight = fusion.fusion[1].image_out.weight.clone().map(|w| w.ones_like().mul_scalar(0.1));
        let trained = crate::PlainConvUNet { text_fusion: Some(fusion), ..visual.clone() };
        let a = with_report(&trained, Some(report.clone()));
        let b = with_report(&trained, None);
        assert_eq!(a.dims(), [2, 3, 1, 8, 12]);
        let gap: f32 = (a - b).abs().max().into_scalar();
        assert!(gap > 1e-6, "a report should change a trained fusion's output ({gap})");
        // A network without a report token ignores reports.
        let no_slot = tiny_unet(true).text_guidance.unwrap().init(&[4, 8, 16], 3, &device);
        assert!(!no_slot.takes_reports() && no_slot.null_report.is_none());
    }

    #[test]
    fn a_config_without_text_guidance_still_loads() {
        let json = r#"{"spatial_dims":"D2","in_channels":1,"num_classes":3,"features_per_stage":[4,8],
            "strides":[[1,1],[2,2]],"kernel_sizes":null,"n_conv_per_stage":2,"n_conv_per_stage_decoder":2,
            "deep_supervision":true,"negative_slope":0.01,"norm_epsilon":1e-5}"#;
        let config: crate::PlainConvUNetConfig = serde_json::from_str(json).expect("old configs load");
        assert!(config.text_guidance.is_none());
    }

    #[test]
    fn settings_are_checked() {
        assert!(TextGuidanceConfig::new(12).with_embed_dim(10).with_heads(4).validate(5).is_err());
        assert!(TextGuidanceConfig::new(12).with_fused_stages(6).validate(5).is_err());
        assert!(TextGuidanceConfig::new(384).validate(6).is_ok());
    }
}
