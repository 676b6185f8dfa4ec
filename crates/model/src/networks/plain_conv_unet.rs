//! nnU-Net's `PlainConvUNet` (dynamic_network_architectures), for 2D and 3D.
//!
//! Each encoder stage is `n_conv_per_stage` x (conv -> instance norm (affine) -> leaky ReLU 0.01);
//! the first conv of a stage does the down-sampling with its stride. The decoder up-samples with a
//! transposed conv (kernel = stride), concatenates the encoder skip, runs
//! `n_conv_per_stage_decoder` conv blocks and has a 1x1 segmentation head per level. Weights are
//! initialised like nnU-Net's `InitWeights_He(1e-2)`: Kaiming-normal with the leaky ReLU slope,
//! biases zero.
//!
//! # One code path for 2D and 3D
//!
//! Inside the network every activation has the canonical layout
//! `[batch, channels, depth, height, width]`; a 2D network uses `depth = 1`. The only layers that
//! care about the spatial rank are [`ConvNd`] and [`ConvTransposeNd`], enums holding burn's 2D or
//! 3D layer, which reshape to 4D around a 2D convolution (a free reshape). A 2D network therefore
//! has real 2D weights (`[out, in, k, k]`), like nnU-Net's 2D checkpoints.
//! [`PlainConvUNet::forward`] takes and returns 4D tensors for a 2D network and 5D tensors for a 3D
//! one.
//!
//! # Parameter names
//!
//! Field names follow nnU-Net's state dict (`encoder.stages.{s}.convs.{i}.conv.weight`,
//! `decoder.transpconvs.{s}`, `decoder.stages.{s}`, `decoder.seg_layers.{s}`), except that burn
//! adds the enum variant (`conv.D2.weight`) and nnU-Net has an extra `.0.` after
//! `encoder.stages.{s}` (its `nn.Sequential`). A loader of nnU-Net weights skips enum variants and
//! drops that `.0.`.
//!
//! # Swapping the conv block
//!
//! [`StackedConvBlocks`](crate::blocks::StackedConvBlocks) is the unit a faster implementation
//! replaces (see [`crate::blocks::conv_norm_act`]).

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::blocks::spatial::{forward_checked, stride_product};
use crate::blocks::{SpatialDims, StackedConvBlocksConfig};
use crate::decoders::{UNetDecoder, UNetDecoderSpec};
use crate::encoders::PlainConvEncoder;
use crate::fusion::hasf::{TextFusion, TextGuidanceConfig, TextInputs};
use crate::fusion::tmca::{TargetAlignment, TargetAlignmentConfig};

// ---------------------------------------------------------------------------------------------
// Configs
// ---------------------------------------------------------------------------------------------

/// nnU-Net's feature widths: `base * 2^stage`, capped at `max` (nnU-Net caps at 512 in 2D and
/// 320 in 3D).
pub fn features_per_stage(n_stages: usize, base: usize, max: usize) -> Vec<usize> {
    (0..n_stages).map(|stage| (base << stage.min(30)).min(max)).collect()
}

/// Configuration of a [`PlainConvUNet`].
///
/// `strides[s]` and `kernel_sizes[s]` hold one value per spatial axis, in tensor order
/// (`[height, width]` or `[depth, height, width]`). nnU-Net's plans call the strides
/// `pool_op_kernel_sizes`; the first stage normally has stride 1.
#[derive(Config, Debug)]
pub struct PlainConvUNetConfig {
    /// 2D or 3D.
    pub spatial_dims: SpatialDims,
    /// Number of input channels (MRI sequences).
    pub in_channels: usize,
    /// Number of output classes, background included.
    pub num_classes: usize,
    /// Output channels of each encoder stage, e.g. `features_per_stage(6, 32, 320)`.
    pub features_per_stage: Vec<usize>,
    /// Down-sampling stride of each stage, applied by its first conv.
    pub strides: Vec<Vec<usize>>,
    /// Kernel size of each stage; `None` means 3 along every axis.
    pub kernel_sizes: Option<Vec<Vec<usize>>>,
    /// Convs per encoder stage.
    #[config(default = 2)]
    pub n_conv_per_stage: usize,
    /// Convs per decoder stage.
    #[config(default = 2)]
    pub n_conv_per_stage_decoder: usize,
    /// Return one output per decoder level (full resolution first) instead of only the last.
    #[config(default = true)]
    pub deep_supervision: bool,
    /// Negative slope of the leaky ReLUs (also used by the Kaiming initialisation).
    #[config(default = 1e-2)]
    pub negative_slope: f64,
    /// Epsilon of the instance norms.
    #[config(default = 1e-5)]
    pub norm_epsilon: f64,
    /// Text guidance (HASF, see [`crate::fusion::hasf`]); `None`: the visual-only U-Net.
    pub text_guidance: Option<TextGuidanceConfig>,
    /// TMCA's target alignment and enhancement (see [`crate::fusion::tmca`]); `None`: none.
    pub target_alignment: Option<TargetAlignmentConfig>,
}

/// An invalid [`PlainConvUNetConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UNetConfigError {
    /// Fewer than two stages: there would be no decoder.
    #[error("a U-Net needs at least 2 stages, got {0}")]
    TooFewStages(usize),
    /// `features_per_stage`, `strides` and `kernel_sizes` have different lengths.
    #[error("{what} has {got} entries but features_per_stage has {expected}")]
    StageCountMismatch {
        /// Which list.
        what: &'static str,
        /// Its length.
        got: usize,
        /// Number of stages.
        expected: usize,
    },
    /// A stride or kernel size list does not have one value per spatial axis.
    #[error("{what} of stage {stage} has {got} values, expected {expected} (one per spatial axis)")]
    AxisCountMismatch {
        /// Which list.
        what: &'static str,
        /// Stage index.
        stage: usize,
        /// Its length.
        got: usize,
        /// Spatial rank.
        expected: usize,
    },
    /// A zero width, stride, channel count or conv count, or an even kernel size.
    #[error("invalid value: {0}")]
    Invalid(String),
}

impl PlainConvUNetConfig {
    /// Number of stages (encoder resolutions).
    pub fn n_stages(&self) -> usize {
        self.features_per_stage.len()
    }

    /// Kernel size of a stage, one value per spatial axis.
    pub fn kernel_size(&self, stage: usize) -> Vec<usize> {
        match &self.kernel_sizes {
            Some(sizes) => sizes[stage].clone(),
            None => vec![3; self.spatial_dims.count()],
        }
    }

    /// Checks the lengths and values of the stage lists.
    pub fn validate(&self) -> Result<(), UNetConfigError> {
        let n = self.n_stages();
        let axes = self.spatial_dims.count();
        if n < 2 {
            return Err(UNetConfigError::TooFewStages(n));
        }
        let mut lists = vec![("strides", &self.strides)];
        if let Some(sizes) = &self.kernel_sizes {
            lists.push(("kernel_sizes", sizes));
        }
        for (what, list) in lists {
            if list.len() != n {
                return Err(UNetConfigError::StageCountMismatch { what, got: list.len(), expected: n });
            }
            for (stage, values) in list.iter().enumerate() {
                if values.len() != axes {
                    return Err(UNetConfigError::AxisCountMismatch { what, stage, got: values.len(), expected: axes });
                }
                if values.contains(&0) {
                    return Err(UNetConfigError::Invalid(format!("{what} of stage {stage} contains 0")));
                }
            }
        }
        if (0..n).any(|stage| self.kernel_size(stage).iter().any(|k| k % 2 == 0)) {
            return Err(UNetConfigError::Invalid("kernel sizes must be odd for 'same' padding".into()));
        }
        if self.features_per_stage.contains(&0) || self.in_channels == 0 || self.num_classes == 0 {
            return Err(UNetConfigError::Invalid("channel counts must be positive".into()));
        }
        if self.n_conv_per_stage == 0 || self.n_conv_per_stage_decoder == 0 {
            return Err(UNetConfigError::Invalid("each stage needs at least one conv".into()));
        }
        if let Some(text) = &self.text_guidance {
            text.validate(n).map_err(UNetConfigError::Invalid)?;
        }
        if let Some(alignment) = &self.target_alignment {
            alignment.validate(n).map_err(UNetConfigError::Invalid)?;
        }
        Ok(())
    }

    /// Product of the strides of stages `0..=stage`, per spatial axis: how much smaller stage
    /// `stage` (and decoder output `stage`) is than the input.
    pub fn cumulative_stride(&self, stage: usize) -> Vec<usize> {
        stride_product(self.spatial_dims, &self.strides[..=stage])
    }

    /// Product of all strides per spatial axis: input sizes must be multiples of it.
    pub fn size_divisor(&self) -> Vec<usize> {
        stride_product(self.spatial_dims, &self.strides)
    }

    /// The decoder this configuration describes (also the decoder of the ConvNeXt V2 U-Net).
    pub fn decoder_spec(&self) -> UNetDecoderSpec {
        UNetDecoderSpec {
            spatial_dims: self.spatial_dims,
            features_per_stage: self.features_per_stage.clone(),
            strides: self.strides.clone(),
            kernel_sizes: (0..self.n_stages()).map(|stage| self.kernel_size(stage)).collect(),
            n_conv_per_stage: self.n_conv_per_stage_decoder,
            num_classes: self.num_classes,
            negative_slope: self.negative_slope,
            norm_epsilon: self.norm_epsilon,
        }
    }

    /// Builds the network.
    ///
    /// # Panics
    ///
    /// Panics if [`validate`](Self::validate) fails.
    pub fn init(&self, device: &Device) -> PlainConvUNet {
        if let Err(err) = self.validate() {
            panic!("invalid PlainConvUNetConfig: {err}");
        }
        let n = self.n_stages();
        let block = |n_convs, in_channels, out_channels, stage: usize, stride: Vec<usize>| {
            StackedConvBlocksConfig::new(
                self.spatial_dims,
                n_convs,
                in_channels,
                out_channels,
                self.kernel_size(stage),
                stride,
            )
            .with_negative_slope(self.negative_slope)
            .with_norm_epsilon(self.norm_epsilon)
            .init(device)
        };

        let mut encoder_stages = Vec::with_capacity(n);
        let mut in_channels = self.in_channels;
        for (stage, &features) in self.features_per_stage.iter().enumerate() {
            let stride = self.strides[stage].clone();
            encoder_stages.push(block(self.n_conv_per_stage, in_channels, features, stage, stride));
            in_channels = features;
        }

        let decoder = UNetDecoder::init(&self.decoder_spec(), device);

        // Created after the U-Net's layers, so a seed gives the visual-only network the same
        // weights with and without text guidance.
        let text_fusion =
            self.text_guidance.as_ref().map(|text| text.init(&self.features_per_stage, self.num_classes, device));
        let target_alignment = self
            .target_alignment
            .as_ref()
            .map(|alignment| alignment.init(&self.features_per_stage, self.num_classes, device));

        PlainConvUNet {
            encoder: PlainConvEncoder { stages: encoder_stages },
            decoder,
            text_fusion,
            target_alignment,
            spatial_dims: self.spatial_dims,
            strides: self.strides.clone(),
            deep_supervision: self.deep_supervision,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The top model
// ---------------------------------------------------------------------------------------------

/// nnU-Net's `PlainConvUNet`. Build it with [`PlainConvUNetConfig::init`].
#[derive(Module, Debug)]
pub struct PlainConvUNet {
    /// Encoder.
    pub encoder: PlainConvEncoder,
    /// Decoder with segmentation heads.
    pub decoder: UNetDecoder,
    /// Text guidance (HASF); `None` for the visual-only U-Net.
    pub text_fusion: Option<TextFusion>,
    /// TMCA's target alignment and enhancement of decoder levels; `None` without.
    pub target_alignment: Option<TargetAlignment>,
    /// 2D or 3D.
    #[module(skip)]
    pub spatial_dims: SpatialDims,
    /// Strides per stage, to check input sizes.
    #[module(skip)]
    pub strides: Vec<Vec<usize>>,
    /// Return every decoder level (training) or only full resolution (inference).
    #[module(skip)]
    pub deep_supervision: bool,
}

impl PlainConvUNet {
    /// The same network, returning all decoder levels (`true`) or only full resolution.
    pub fn with_deep_supervision(mut self, deep_supervision: bool) -> Self {
        self.deep_supervision = deep_supervision;
        self
    }

    /// Number of outputs [`forward`](Self::forward) returns.
    pub fn num_outputs(&self) -> usize {
        if self.deep_supervision {
            self.decoder.stages.len()
        } else {
            1
        }
    }

    /// Product of all strides per spatial axis: input sizes must be multiples of it.
    pub fn size_divisor(&self) -> Vec<usize> {
        stride_product(self.spatial_dims, &self.strides)
    }

    /// Number of input channels, read from the first conv's weight.
    pub fn in_channels(&self) -> usize {
        self.encoder.stages[0].convs[0].conv.in_channels()
    }

    /// Number of output classes, read from the full-resolution head's weight.
    pub fn num_classes(&self) -> usize {
        self.decoder.head(0).out_channels()
    }

    /// Segmentation logits (no softmax).
    ///
    /// `D` is 4 for a 2D network and 5 for a 3D one.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, in_channels, height, width]` (2D) or
    ///   `[batch, in_channels, depth, height, width]` (3D); each spatial size a multiple of
    ///   [`size_divisor`](Self::size_divisor)
    /// - output: with deep supervision, `n_stages - 1` tensors, full resolution first, output `i`
    ///   being `[batch, num_classes, spatial / cumulative_stride(i)]` (with the usual stride 1 in
    ///   stage 0, output 0 is full resolution and output `i` is smaller by the strides of stages
    ///   1..=i); without, one tensor `[batch, num_classes, spatial / stride(0)]`.
    ///
    /// # Panics
    ///
    /// Panics if `D` does not match the network's spatial rank, the channel count is wrong or a
    /// spatial size is not a multiple of the size divisor.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Vec<Tensor<D>> {
        forward_checked(self.spatial_dims, &self.size_divisor(), x, |x| self.forward_canonical(x))
    }

    /// [`forward`](Self::forward) on the canonical layout `[batch, channels, depth, height,
    /// width]` (`depth = 1` for 2D), without size checks.
    pub fn forward_canonical(&self, x: Tensor<5>) -> Vec<Tensor<5>> {
        self.forward_detailed(x).logits
    }

    /// [`forward_canonical`](Self::forward_canonical), also returning what the training losses
    /// beyond Dice + CE need (the pixel embeddings for CCAE).
    pub fn forward_detailed(&self, x: Tensor<5>) -> UNetOutput {
        self.forward_with_text(x, TextInputs::default())
    }

    /// [`forward`](Self::forward) with a report embedding (`[batch, text_dim]`) for the report
    /// token of a text-guided network; full-resolution logits.
    ///
    /// # Panics
    /// As [`forward`](Self::forward).
    pub fn forward_with_reports<const D: usize>(&self, x: Tensor<D>, reports: Tensor<2>) -> Tensor<D> {
        let inputs = TextInputs { prompts: None, reports: Some(reports) };
        let outputs = forward_checked(self.spatial_dims, &self.size_divisor(), x, |x| self.forward_with_text(x, inputs).logits);
        outputs.into_iter().next().expect("a U-Net returns at least one output")
    }

    /// [`forward_detailed`](Self::forward_detailed) with text inputs beyond the frozen class
    /// prompts (per-sample prompts in training, a report); the default inputs are what
    /// prediction uses. Ignored by a network without text guidance.
    pub fn forward_with_text(&self, x: Tensor<5>, inputs: TextInputs) -> UNetOutput {
        let enhance = |level: usize, f: Tensor<5>| match &self.target_alignment {
            Some(alignment) => alignment.enhance(level, f),
            None => f,
        };
        let Some(text_fusion) = &self.text_fusion else {
            let skips = self.encoder.forward(x);
            let (logits, level_features) = self.decoder.forward_levels(skips, self.deep_supervision, enhance, |level, f| {
                self.decoder.head(level).forward(f)
            });
            return UNetOutput { logits, features: level_features[0].clone(), level_features };
        };
        let batch = x.dims()[0];
        let mut text = text_fusion.initial_tokens(batch, inputs);
        let mut skips = Vec::with_capacity(self.encoder.stages.len());
        let mut x = x;
        for (stage, block) in self.encoder.stages.iter().enumerate() {
            (x, text) = text_fusion.fuse_stage(stage, block.forward(x), text);
            skips.push(x.clone());
        }
        let class_text = text_fusion.class_part(text);
        let (logits, level_features) = self.decoder.forward_levels(skips, self.deep_supervision, enhance, |level, f| {
            self.decoder.head(level).forward(f.clone()) + text_fusion.class_query_logits(level, f, class_text.clone())
        });
        UNetOutput { logits, features: level_features[0].clone(), level_features }
    }
}

/// What [`PlainConvUNet::forward_detailed`] returns (canonical 5D layout).
#[derive(Debug, Clone)]
pub struct UNetOutput {
    /// Logits per decoder level, full resolution first (as [`PlainConvUNet::forward_canonical`]).
    pub logits: Vec<Tensor<5>>,
    /// Full-resolution decoder features (pixel embeddings), `[batch, features_per_stage[0], ...]`.
    pub features: Tensor<5>,
    /// Every decoder level's features (after TMCA's enhancement, where it applies), full
    /// resolution first; level `l` has `features_per_stage[l]` channels.
    pub level_features: Vec<Tensor<5>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::ConvNd;
    use burn::tensor::Distribution;

    fn device() -> Device {
        Device::flex()
    }

    fn tiny_2d(deep_supervision: bool) -> PlainConvUNetConfig {
        PlainConvUNetConfig::new(SpatialDims::D2, 1, 3, vec![4, 8, 16], vec![vec![1, 1], vec![2, 2], vec![2, 2]])
            .with_deep_supervision(deep_supervision)
    }

    fn tiny_3d_anisotropic() -> PlainConvUNetConfig {
        PlainConvUNetConfig::new(
            SpatialDims::D3,
            2,
            4,
            vec![4, 8, 8],
            vec![vec![1, 1, 1], vec![1, 2, 2], vec![2, 2, 2]],
        )
        .with_kernel_sizes(Some(vec![vec![1, 3, 3], vec![3, 3, 3], vec![3, 3, 3]]))
    }

    #[test]
    fn features_are_doubled_and_capped() {
        assert_eq!(features_per_stage(7, 32, 320), vec![32, 64, 128, 256, 320, 320, 320]);
    }

    #[test]
    fn shapes_2d_with_deep_supervision() {
        let device = device();
        let model = tiny_2d(true).init(&device);
        let x = Tensor::<4>::random([2, 1, 8, 12], Distribution::Normal(0.0, 1.0), &device);
        let outputs = model.forward(x);
        let shapes: Vec<[usize; 4]> = outputs.iter().map(|o| o.dims()).collect();
        assert_eq!(shapes, vec![[2, 3, 8, 12], [2, 3, 4, 6]]);
    }

    #[test]
    fn shapes_2d_without_deep_supervision() {
        let device = device();
        let model = tiny_2d(false).init(&device);
        assert_eq!(model.num_outputs(), 1);
        let x = Tensor::<4>::zeros([1, 1, 4, 8], &device);
        let outputs = model.forward(x);
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].dims(), [1, 3, 4, 8]);
    }

    #[test]
    fn shapes_3d_anisotropic_strides() {
        let device = device();
        let model = tiny_3d_anisotropic().init(&device);
        assert_eq!(model.size_divisor(), vec![2, 4, 4]);
        let x = Tensor::<5>::random([1, 2, 2, 8, 4], Distribution::Normal(0.0, 1.0), &device);
        let outputs = model.forward(x);
        let shapes: Vec<[usize; 5]> = outputs.iter().map(|o| o.dims()).collect();
        // Output 1 is at stage 1's resolution: stride [1, 2, 2].
        assert_eq!(shapes, vec![[1, 4, 2, 8, 4], [1, 4, 2, 4, 2]]);
        for output in outputs {
            let values = output.into_data().try_to_vec::<f32>().unwrap();
            assert!(values.iter().all(|v| v.is_finite()));
        }
    }

    #[test]
    #[should_panic(expected = "multiple of")]
    fn rejects_indivisible_size() {
        let device = device();
        let model = tiny_2d(true).init(&device);
        model.forward(Tensor::<4>::zeros([1, 1, 6, 8], &device));
    }

    #[test]
    #[should_panic(expected = "rank 5")]
    fn rejects_wrong_rank() {
        let device = device();
        let model = tiny_3d_anisotropic().init(&device);
        model.forward(Tensor::<4>::zeros([1, 2, 8, 8], &device));
    }

    #[test]
    fn invalid_configs_are_reported() {
        let mut config = tiny_2d(true);
        config.strides.pop();
        assert!(matches!(config.validate(), Err(UNetConfigError::StageCountMismatch { .. })));
        let config = tiny_2d(true).with_kernel_sizes(Some(vec![vec![3, 3], vec![2, 2], vec![3]]));
        assert!(config.validate().is_err());
    }

    /// Parameter count from nnU-Net's architecture, written out.
    fn expected_params(config: &PlainConvUNetConfig) -> usize {
        let k = |stage: usize| config.kernel_size(stage).iter().product::<usize>();
        // Conv weight + bias, then instance norm scale + shift.
        let conv_block = |cin: usize, cout: usize, k: usize| cin * cout * k + cout + 2 * cout;
        let f = &config.features_per_stage;
        let n = f.len();
        let mut total = 0;
        let mut cin = config.in_channels;
        for (stage, &cout) in f.iter().enumerate() {
            total += conv_block(cin, cout, k(stage));
            total += (config.n_conv_per_stage - 1) * conv_block(cout, cout, k(stage));
            cin = cout;
        }
        for stage in (0..n - 1).rev() {
            let up: usize = config.strides[stage + 1].iter().product();
            total += f[stage + 1] * f[stage] * up + f[stage];
            total += conv_block(2 * f[stage], f[stage], k(stage));
            total += (config.n_conv_per_stage_decoder - 1) * conv_block(f[stage], f[stage], k(stage));
            total += f[stage] * config.num_classes + config.num_classes;
        }
        total
    }

    #[test]
    fn parameter_count_matches_formula() {
        let device = device();
        for config in [tiny_2d(true), tiny_3d_anisotropic()] {
            let model = config.init(&device);
            assert_eq!(model.num_params(), expected_params(&config));
        }
        // Hand-checked: 2D, in 1, classes 2, features [2, 4], strides [1, 2], one conv each.
        // enc0 1*2*9+2+4=24, enc1 2*4*9+4+8=84, up 4*2*4+2=34, dec 4*2*9+2+4=78, head 2*2+2=6.
        let config = PlainConvUNetConfig::new(SpatialDims::D2, 1, 2, vec![2, 4], vec![vec![1, 1], vec![2, 2]])
            .with_n_conv_per_stage(1)
            .with_n_conv_per_stage_decoder(1);
        assert_eq!(config.init(&device).num_params(), 24 + 84 + 34 + 78 + 6);
    }

    #[test]
    fn gradients_exist_and_are_finite() {
        let device = device().autodiff();
        let model = tiny_2d(true).init(&device);
        let x = Tensor::<4>::random([1, 1, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let loss = model.forward(x).into_iter().map(|o| o.powi_scalar(2).mean()).reduce(|a, b| a + b).unwrap();
        let grads = loss.backward();
        let first = &model.encoder.stages[0].convs[0];
        let ConvNd::D2(conv) = &first.conv else { panic!("a 2D network should have 2D convs") };
        let heads = &model.decoder.seg_layers;
        let ConvNd::D2(head) = &heads[heads.len() - 1] else { panic!("a 2D network should have 2D heads") };
        let checked = [
            conv.weight.grad(&grads),
            first.norm.gamma.as_ref().unwrap().grad(&grads).map(|g| g.unsqueeze()),
            head.weight.grad(&grads),
        ];
        for grad in checked {
            let grad = grad.expect("every parameter on the loss path should get a gradient");
            let values = grad.into_data().try_to_vec::<f32>().unwrap();
            assert!(values.iter().all(|v| v.is_finite()));
            assert!(values.iter().any(|v| *v != 0.0));
        }
    }

    #[test]
    fn weights_round_trip_through_a_burnpack_file() {
        let device = device();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("unet.bpk");
        let saved = tiny_2d(false).init(&device);
        saved.clone().save_file(&path).unwrap();
        let loaded = tiny_2d(false).init(&device).load_file(&path);
        let x = Tensor::<4>::random([1, 1, 4, 4], Distribution::Normal(0.0, 1.0), &device);
        let a = saved.forward(x.clone()).remove(0).into_data();
        let b = loaded.forward(x).remove(0).into_data();
        assert_eq!(a, b);
    }
}
