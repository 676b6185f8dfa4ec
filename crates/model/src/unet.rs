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
//! [`StackedConvBlocks`] is the unit a faster implementation replaces: it is built from
//! [`StackedConvBlocksConfig`] and maps `[batch, in_channels, d, h, w]` to
//! `[batch, out_channels, d / stride_d, h / stride_h, w / stride_w]`.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{
    Conv2d, Conv2dConfig, Conv3d, Conv3dConfig, ConvTranspose2d, ConvTranspose2dConfig, ConvTranspose3d,
    ConvTranspose3dConfig,
};
use burn::nn::{
    Initializer, InstanceNorm, InstanceNormConfig, LeakyRelu, LeakyReluConfig, PaddingConfig2d, PaddingConfig3d,
};
use burn::tensor::{Device, Tensor};

use crate::text_guided::{TextFusion, TextGuidanceConfig};

// ---------------------------------------------------------------------------------------------
// Configs
// ---------------------------------------------------------------------------------------------

/// Number of spatial dimensions of a network.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum SpatialDims {
    /// Images: tensors `[batch, channels, height, width]`.
    D2,
    /// Volumes: tensors `[batch, channels, depth, height, width]`.
    D3,
}

impl SpatialDims {
    /// 2 or 3.
    pub fn count(self) -> usize {
        match self {
            SpatialDims::D2 => 2,
            SpatialDims::D3 => 3,
        }
    }
}

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
    /// Text guidance (HASF, see [`crate::text_guided`]); `None`: the visual-only U-Net.
    pub text_guidance: Option<TextGuidanceConfig>,
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
        Ok(())
    }

    /// Product of the strides of stages `0..=stage`, per spatial axis: how much smaller stage
    /// `stage` (and decoder output `stage`) is than the input.
    pub fn cumulative_stride(&self, stage: usize) -> Vec<usize> {
        let mut total = vec![1; self.spatial_dims.count()];
        for stride in &self.strides[..=stage] {
            for (t, s) in total.iter_mut().zip(stride) {
                *t *= s;
            }
        }
        total
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

        // Decoder stage s goes from encoder stage n-1-s up to stage n-2-s.
        let mut transpconvs = Vec::with_capacity(n - 1);
        let mut decoder_stages = Vec::with_capacity(n - 1);
        let mut seg_layers = Vec::with_capacity(n - 1);
        for s in 0..n - 1 {
            let below = self.features_per_stage[n - 1 - s];
            let skip = self.features_per_stage[n - 2 - s];
            let stride = &self.strides[n - 1 - s];
            transpconvs.push(ConvTransposeNd::new(self.spatial_dims, below, skip, stride, self.negative_slope, device));
            let ones = vec![1; self.spatial_dims.count()];
            decoder_stages.push(block(self.n_conv_per_stage_decoder, 2 * skip, skip, n - 2 - s, ones.clone()));
            seg_layers.push(ConvNd::new(
                self.spatial_dims,
                skip,
                self.num_classes,
                &ones,
                &ones,
                self.negative_slope,
                device,
            ));
        }

        // Created after the U-Net's layers, so a seed gives the visual-only network the same
        // weights with and without text guidance.
        let text_fusion =
            self.text_guidance.as_ref().map(|text| text.init(&self.features_per_stage, self.num_classes, device));

        PlainConvUNet {
            encoder: PlainConvEncoder { stages: encoder_stages },
            decoder: UNetDecoder { transpconvs, stages: decoder_stages, seg_layers },
            text_fusion,
            spatial_dims: self.spatial_dims,
            strides: self.strides.clone(),
            deep_supervision: self.deep_supervision,
        }
    }
}

/// Configuration of one [`ConvNormAct`].
#[derive(Config, Debug)]
pub struct ConvNormActConfig {
    /// 2D or 3D.
    pub spatial_dims: SpatialDims,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel size per spatial axis (odd; padding keeps the size before striding).
    pub kernel_size: Vec<usize>,
    /// Stride per spatial axis.
    pub stride: Vec<usize>,
    /// Leaky ReLU slope.
    #[config(default = 1e-2)]
    pub negative_slope: f64,
    /// Instance norm epsilon.
    #[config(default = 1e-5)]
    pub norm_epsilon: f64,
}

impl ConvNormActConfig {
    /// Builds the block.
    pub fn init(&self, device: &Device) -> ConvNormAct {
        ConvNormAct {
            conv: ConvNd::new(
                self.spatial_dims,
                self.in_channels,
                self.out_channels,
                &self.kernel_size,
                &self.stride,
                self.negative_slope,
                device,
            ),
            norm: InstanceNormConfig::new(self.out_channels)
                .with_epsilon(self.norm_epsilon)
                .with_affine(true)
                .init(device),
            nonlin: LeakyReluConfig::new().with_negative_slope(self.negative_slope).init(),
        }
    }
}

/// Configuration of a [`StackedConvBlocks`]: `num_convs` conv-norm-act blocks, the first with
/// `initial_stride`, the others with stride 1.
#[derive(Config, Debug)]
pub struct StackedConvBlocksConfig {
    /// 2D or 3D.
    pub spatial_dims: SpatialDims,
    /// Number of conv-norm-act blocks.
    pub num_convs: usize,
    /// Input channels of the first conv.
    pub in_channels: usize,
    /// Output channels of every conv.
    pub out_channels: usize,
    /// Kernel size per spatial axis.
    pub kernel_size: Vec<usize>,
    /// Stride of the first conv per spatial axis.
    pub initial_stride: Vec<usize>,
    /// Leaky ReLU slope.
    #[config(default = 1e-2)]
    pub negative_slope: f64,
    /// Instance norm epsilon.
    #[config(default = 1e-5)]
    pub norm_epsilon: f64,
}

impl StackedConvBlocksConfig {
    /// Builds the blocks.
    pub fn init(&self, device: &Device) -> StackedConvBlocks {
        let ones = vec![1; self.spatial_dims.count()];
        let convs = (0..self.num_convs)
            .map(|i| {
                let (in_channels, stride) = if i == 0 {
                    (self.in_channels, self.initial_stride.clone())
                } else {
                    (self.out_channels, ones.clone())
                };
                ConvNormActConfig::new(
                    self.spatial_dims,
                    in_channels,
                    self.out_channels,
                    self.kernel_size.clone(),
                    stride,
                )
                .with_negative_slope(self.negative_slope)
                .with_norm_epsilon(self.norm_epsilon)
                .init(device)
            })
            .collect();
        StackedConvBlocks { convs }
    }
}

// ---------------------------------------------------------------------------------------------
// Small layers, bottom-up
// ---------------------------------------------------------------------------------------------

/// nnU-Net's `InitWeights_He(neg_slope)`: PyTorch's `kaiming_normal_(a = neg_slope)`, i.e.
/// std = gain / sqrt(fan_in) with gain = sqrt(2 / (1 + a^2)).
fn he_normal(negative_slope: f64) -> Initializer {
    Initializer::KaimingNormal { gain: (2.0 / (1.0 + negative_slope * negative_slope)).sqrt(), fan_out_only: false }
}

/// Which implementation runs the conv, transposed conv and norm + activation layers.
///
/// On the flex device in f32 the layers run `spineseg-kernels` (im2col + gemm convolutions and a
/// fused instance norm + leaky ReLU with hand-written backward passes, several times faster to
/// train); anywhere else, or after `set_enabled(false)`, burn's own layers. Both read the same
/// parameters, so weights and checkpoints do not depend on the choice.
pub mod fast_kernels {
    use std::sync::atomic::{AtomicBool, Ordering};

    use burn::tensor::Tensor;

    static ENABLED: AtomicBool = AtomicBool::new(true);

    /// Turns the fast kernels on or off for the whole process (for A/B comparisons; on by default).
    pub fn set_enabled(enabled: bool) {
        ENABLED.store(enabled, Ordering::Relaxed);
    }

    /// Whether the fast kernels are switched on.
    pub fn enabled() -> bool {
        ENABLED.load(Ordering::Relaxed)
    }

    /// Whether the fast kernels will run a layer on `x`.
    pub fn applies<const D: usize>(x: &Tensor<D>) -> bool {
        #[cfg(feature = "flex")]
        {
            enabled() && spineseg_kernels::supports(&x.device(), x.dtype())
        }
        #[cfg(not(feature = "flex"))]
        {
            let _ = x;
            false
        }
    }
}

/// The kernels, or stand-ins that are never called when the flex backend is not compiled in
/// ([`fast_kernels::applies`] is then always false).
#[cfg(feature = "flex")]
use spineseg_kernels as fast;
#[cfg(not(feature = "flex"))]
mod fast {
    use burn::tensor::Tensor;
    pub struct ConvSpec {
        pub stride: [usize; 3],
        pub padding: [usize; 3],
    }
    pub struct NormActSpec {
        pub epsilon: f64,
        pub slope: f64,
    }
    pub fn conv(_: Tensor<5>, _: Tensor<5>, _: Tensor<1>, _: ConvSpec) -> Tensor<5> {
        unreachable!("fast kernels need the flex feature")
    }
    pub fn conv_transpose_up(_: Tensor<5>, _: Tensor<5>, _: Tensor<1>) -> Tensor<5> {
        unreachable!("fast kernels need the flex feature")
    }
    pub fn instance_norm_leaky_relu(_: Tensor<5>, _: Tensor<1>, _: Tensor<1>, _: NormActSpec) -> Tensor<5> {
        unreachable!("fast kernels need the flex feature")
    }
}

/// A convolution with bias and 'same' padding (before striding), 2D or 3D.
#[derive(Module, Debug)]
pub enum ConvNd {
    /// Weight `[out, in, kh, kw]`.
    D2(Conv2d),
    /// Weight `[out, in, kd, kh, kw]`.
    D3(Conv3d),
}

impl ConvNd {
    /// A conv with Kaiming-normal weights and zero bias (nnU-Net's initialisation).
    ///
    /// `kernel_size` and `stride` have one value per spatial axis; kernels are odd.
    pub fn new(
        spatial_dims: SpatialDims,
        in_channels: usize,
        out_channels: usize,
        kernel_size: &[usize],
        stride: &[usize],
        negative_slope: f64,
        device: &Device,
    ) -> Self {
        let pad: Vec<usize> = kernel_size.iter().map(|k| (k - 1) / 2).collect();
        let zero_bias = || Some(Initializer::Zeros.init([out_channels], device));
        match spatial_dims {
            SpatialDims::D2 => {
                let mut conv = Conv2dConfig::new([in_channels, out_channels], [kernel_size[0], kernel_size[1]])
                    .with_stride([stride[0], stride[1]])
                    .with_padding(PaddingConfig2d::Explicit(pad[0], pad[1], pad[0], pad[1]))
                    .with_initializer(he_normal(negative_slope))
                    .init(device);
                conv.bias = zero_bias();
                ConvNd::D2(conv)
            }
            SpatialDims::D3 => {
                let mut conv =
                    Conv3dConfig::new([in_channels, out_channels], [kernel_size[0], kernel_size[1], kernel_size[2]])
                        .with_stride([stride[0], stride[1], stride[2]])
                        .with_padding(PaddingConfig3d::Explicit(pad[0], pad[1], pad[2]))
                        .with_initializer(he_normal(negative_slope))
                        .init(device);
                conv.bias = zero_bias();
                ConvNd::D3(conv)
            }
        }
    }

    /// # Shapes
    ///
    /// - input: `[batch, in_channels, depth, height, width]` (`depth = 1` for 2D)
    /// - output: `[batch, out_channels, depth / sd, height / sh, width / sw]`
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        if let Some((weight, bias)) = self.fast_parameters(&x) {
            // `new` pads by (k - 1) / 2 on both sides; the fast kernel gets the same padding.
            let kernel = weight.dims();
            let padding = [kernel[2], kernel[3], kernel[4]].map(|k| (k - 1) / 2);
            let stride = match self {
                ConvNd::D2(conv) => [1, conv.stride[0], conv.stride[1]],
                ConvNd::D3(conv) => conv.stride,
            };
            return fast::conv(x, weight, bias, fast::ConvSpec { stride, padding });
        }
        match self {
            ConvNd::D2(conv) => on_2d(x, |x| conv.forward(x)),
            ConvNd::D3(conv) => conv.forward(x),
        }
    }

    /// The weight as 5D and the bias, when the fast kernels can run `x` (see [`fast_kernels`]).
    fn fast_parameters(&self, x: &Tensor<5>) -> Option<(Tensor<5>, Tensor<1>)> {
        if !fast_kernels::applies(x) {
            return None;
        }
        match self {
            ConvNd::D2(conv) => Some((conv.weight.val().unsqueeze_dim(2), conv.bias.as_ref()?.val())),
            ConvNd::D3(conv) => Some((conv.weight.val(), conv.bias.as_ref()?.val())),
        }
    }
}

/// A transposed convolution with kernel = stride (nnU-Net's up-sampling), 2D or 3D.
#[derive(Module, Debug)]
pub enum ConvTransposeNd {
    /// Weight `[in, out, sh, sw]`.
    D2(ConvTranspose2d),
    /// Weight `[in, out, sd, sh, sw]`.
    D3(ConvTranspose3d),
}

impl ConvTransposeNd {
    /// An up-sampling layer multiplying each spatial axis by `stride`, Kaiming-normal weights
    /// (PyTorch's fan-in of a transposed conv: `out_channels * prod(kernel)`) and zero bias.
    pub fn new(
        spatial_dims: SpatialDims,
        in_channels: usize,
        out_channels: usize,
        stride: &[usize],
        negative_slope: f64,
        device: &Device,
    ) -> Self {
        let zero_bias = || Some(Initializer::Zeros.init([out_channels], device));
        match spatial_dims {
            SpatialDims::D2 => {
                let s = [stride[0], stride[1]];
                let mut conv = ConvTranspose2dConfig::new([in_channels, out_channels], s)
                    .with_stride(s)
                    .with_initializer(he_normal(negative_slope))
                    .init(device);
                conv.bias = zero_bias();
                ConvTransposeNd::D2(conv)
            }
            SpatialDims::D3 => {
                let s = [stride[0], stride[1], stride[2]];
                let mut conv = ConvTranspose3dConfig::new([in_channels, out_channels], s)
                    .with_stride(s)
                    .with_initializer(he_normal(negative_slope))
                    .init(device);
                conv.bias = zero_bias();
                ConvTransposeNd::D3(conv)
            }
        }
    }

    /// # Shapes
    ///
    /// - input: `[batch, in_channels, depth, height, width]` (`depth = 1` for 2D)
    /// - output: `[batch, out_channels, depth * sd, height * sh, width * sw]`
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        if fast_kernels::applies(&x) {
            let parameters = match self {
                // Weight [in, out, sh, sw] -> [in, out, 1, sh, sw].
                ConvTransposeNd::D2(conv) => conv.bias.as_ref().map(|b| (conv.weight.val().unsqueeze_dim(2), b.val())),
                ConvTransposeNd::D3(conv) => conv.bias.as_ref().map(|b| (conv.weight.val(), b.val())),
            };
            if let Some((weight, bias)) = parameters {
                return fast::conv_transpose_up(x, weight, bias);
            }
        }
        match self {
            ConvTransposeNd::D2(conv) => on_2d(x, |x| conv.forward(x)),
            ConvTransposeNd::D3(conv) => conv.forward(x),
        }
    }
}

/// Runs a 2D layer on a canonical 5D tensor with `depth = 1`.
fn on_2d(x: Tensor<5>, layer: impl FnOnce(Tensor<4>) -> Tensor<4>) -> Tensor<5> {
    let [batch, channels, depth, height, width] = x.dims();
    assert_eq!(depth, 1, "a 2D layer needs depth 1 in the canonical 5D layout");
    let y = layer(x.reshape([batch, channels, height, width]));
    let [batch, channels, height, width] = y.dims();
    y.reshape([batch, channels, 1, height, width])
}

/// Conv -> instance norm (affine) -> leaky ReLU, nnU-Net's `ConvDropoutNormReLU` without dropout.
#[derive(Module, Debug)]
pub struct ConvNormAct {
    /// The convolution (with bias, as nnU-Net's `conv_bias=True`).
    pub conv: ConvNd,
    /// Instance norm with learnable scale and shift.
    pub norm: InstanceNorm,
    /// Leaky ReLU.
    pub nonlin: LeakyRelu,
}

impl ConvNormAct {
    /// # Shapes
    ///
    /// - input: `[batch, in_channels, depth, height, width]` (`depth = 1` for 2D)
    /// - output: `[batch, out_channels, depth / sd, height / sh, width / sw]`
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let y = self.conv.forward(x);
        if let (true, Some(gamma), Some(beta)) = (fast_kernels::applies(&y), &self.norm.gamma, &self.norm.beta) {
            let spec = fast::NormActSpec { epsilon: self.norm.epsilon, slope: self.nonlin.negative_slope };
            return fast::instance_norm_leaky_relu(y, gamma.val(), beta.val(), spec);
        }
        self.nonlin.forward(self.norm.forward(y))
    }
}

/// A stack of [`ConvNormAct`]; the first may stride. The unit a faster block replaces.
#[derive(Module, Debug)]
pub struct StackedConvBlocks {
    /// The blocks, applied in order.
    pub convs: Vec<ConvNormAct>,
}

impl StackedConvBlocks {
    /// # Shapes
    ///
    /// - input: `[batch, in_channels, depth, height, width]` (`depth = 1` for 2D)
    /// - output: `[batch, out_channels, depth / sd, height / sh, width / sw]` (initial stride)
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        self.convs.iter().fold(x, |x, block| block.forward(x))
    }
}

/// nnU-Net's `PlainConvEncoder`: one [`StackedConvBlocks`] per stage.
#[derive(Module, Debug)]
pub struct PlainConvEncoder {
    /// Stages, full resolution first.
    pub stages: Vec<StackedConvBlocks>,
}

impl PlainConvEncoder {
    /// Returns the output of every stage (the skips), full resolution first.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, in_channels, depth, height, width]` (`depth = 1` for 2D)
    /// - output `s`: `[batch, features_per_stage[s], depth / cs_d, height / cs_h, width / cs_w]`
    ///   with `cs` the cumulative stride of stages `0..=s`
    pub fn forward(&self, x: Tensor<5>) -> Vec<Tensor<5>> {
        let mut skips: Vec<Tensor<5>> = Vec::with_capacity(self.stages.len());
        let mut x = x;
        for stage in &self.stages {
            x = stage.forward(x);
            skips.push(x.clone());
        }
        skips
    }
}

/// nnU-Net's `UNetDecoder`: transposed conv, skip concatenation, conv blocks, 1x1 heads.
#[derive(Module, Debug)]
pub struct UNetDecoder {
    /// Up-sampling layers, lowest resolution first.
    pub transpconvs: Vec<ConvTransposeNd>,
    /// Conv blocks after each concatenation, lowest resolution first.
    pub stages: Vec<StackedConvBlocks>,
    /// 1x1 segmentation heads, lowest resolution first (all are created, as in nnU-Net, so the
    /// parameters match its checkpoints even without deep supervision).
    pub seg_layers: Vec<ConvNd>,
}

impl UNetDecoder {
    /// Returns the logits of every decoder level when `all_levels`, else only the last one;
    /// full resolution first.
    ///
    /// # Shapes
    ///
    /// - skips: the encoder outputs, full resolution first
    /// - output `i`: `[batch, num_classes, depth / cs_d, height / cs_h, width / cs_w]` with `cs`
    ///   the cumulative stride of stages `0..=i`
    pub fn forward(&self, skips: Vec<Tensor<5>>, all_levels: bool) -> Vec<Tensor<5>> {
        self.forward_with_heads(skips, all_levels, |level, features| self.head(level).forward(features)).0
    }

    /// The 1x1 head of decoder level `level` (full resolution first).
    pub fn head(&self, level: usize) -> &ConvNd {
        &self.seg_layers[self.seg_layers.len() - 1 - level]
    }

    /// [`forward`](Self::forward) with the logits of each level computed by
    /// `head(level, features)` (level 0 = full resolution), also returning the full-resolution
    /// decoder features (the pixel embeddings).
    pub fn forward_with_heads(
        &self,
        skips: Vec<Tensor<5>>,
        all_levels: bool,
        mut head: impl FnMut(usize, Tensor<5>) -> Tensor<5>,
    ) -> (Vec<Tensor<5>>, Tensor<5>) {
        let n_levels = self.stages.len();
        let mut skips = skips;
        let mut x = skips.pop().expect("the encoder should return one skip per stage");
        let mut outputs = Vec::with_capacity(n_levels);
        for (i, (up, stage)) in self.transpconvs.iter().zip(&self.stages).enumerate() {
            let skip = skips.pop().expect("the encoder should return one skip per stage");
            x = up.forward(x);
            x = stage.forward(Tensor::cat(vec![x, skip], 1));
            let level = n_levels - 1 - i;
            if all_levels || level == 0 {
                outputs.push(head(level, x.clone()));
            }
        }
        outputs.reverse();
        (outputs, x)
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
        let mut total = vec![1; self.spatial_dims.count()];
        for stride in &self.strides {
            for (t, s) in total.iter_mut().zip(stride) {
                *t *= s;
            }
        }
        total
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
        let axes = self.spatial_dims.count();
        assert_eq!(D, axes + 2, "a {axes}D network takes tensors of rank {} ([batch, channels, spatial...])", axes + 2);
        let dims = x.dims();
        let spatial = &dims[2..];
        let divisor = self.size_divisor();
        assert!(
            spatial.iter().zip(&divisor).all(|(s, d)| s % d == 0),
            "spatial size {spatial:?} should be a multiple of {divisor:?} (product of the strides)"
        );
        let outputs = self.forward_canonical(to_canonical(x));
        outputs.into_iter().map(from_canonical::<D>).collect()
    }

    /// [`forward`](Self::forward) on the canonical layout `[batch, channels, depth, height,
    /// width]` (`depth = 1` for 2D), without size checks.
    pub fn forward_canonical(&self, x: Tensor<5>) -> Vec<Tensor<5>> {
        self.forward_detailed(x).logits
    }

    /// [`forward_canonical`](Self::forward_canonical), also returning what the training losses
    /// beyond Dice + CE need (the pixel embeddings for CCAE).
    pub fn forward_detailed(&self, x: Tensor<5>) -> UNetOutput {
        let Some(text_fusion) = &self.text_fusion else {
            let skips = self.encoder.forward(x);
            let (logits, features) = self
                .decoder
                .forward_with_heads(skips, self.deep_supervision, |level, f| self.decoder.head(level).forward(f));
            return UNetOutput { logits, features };
        };
        let batch = x.dims()[0];
        let class_tokens = text_fusion.class_tokens();
        let [classes, embed_dim] = class_tokens.dims();
        let mut text: Tensor<3> = class_tokens.unsqueeze::<3>().expand([batch, classes, embed_dim]);
        let mut skips = Vec::with_capacity(self.encoder.stages.len());
        let mut x = x;
        for (stage, block) in self.encoder.stages.iter().enumerate() {
            (x, text) = text_fusion.fuse_stage(stage, block.forward(x), text);
            skips.push(x.clone());
        }
        let (logits, features) = self.decoder.forward_with_heads(skips, self.deep_supervision, |level, f| {
            self.decoder.head(level).forward(f.clone()) + text_fusion.class_query_logits(level, f, text.clone())
        });
        UNetOutput { logits, features }
    }
}

/// What [`PlainConvUNet::forward_detailed`] returns (canonical 5D layout).
#[derive(Debug, Clone)]
pub struct UNetOutput {
    /// Logits per decoder level, full resolution first (as [`PlainConvUNet::forward_canonical`]).
    pub logits: Vec<Tensor<5>>,
    /// Full-resolution decoder features (pixel embeddings), `[batch, features_per_stage[0], ...]`.
    pub features: Tensor<5>,
}

/// `[b, c, h, w]` -> `[b, c, 1, h, w]`; 5D tensors are returned as they are.
fn to_canonical<const D: usize>(x: Tensor<D>) -> Tensor<5> {
    let dims = x.dims();
    let shape = match D {
        4 => [dims[0], dims[1], 1, dims[2], dims[3]],
        5 => [dims[0], dims[1], dims[2], dims[3], dims[4]],
        _ => panic!("expected a 4D or 5D tensor, got rank {D}"),
    };
    x.reshape(shape)
}

/// Inverse of [`to_canonical`].
fn from_canonical<const D: usize>(x: Tensor<5>) -> Tensor<D> {
    let [batch, channels, depth, height, width] = x.dims();
    let mut shape = [0usize; D];
    match D {
        4 => shape.copy_from_slice(&[batch, channels, height, width][..D]),
        5 => shape.copy_from_slice(&[batch, channels, depth, height, width][..D]),
        _ => panic!("expected rank 4 or 5, got {D}"),
    }
    x.reshape(shape)
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn initialisation_is_kaiming_normal_with_zero_bias() {
        let device = device();
        device.seed(7);
        let conv = ConvNd::new(SpatialDims::D2, 16, 32, &[3, 3], &[1, 1], 1e-2, &device);
        let ConvNd::D2(conv) = conv else { unreachable!() };
        let weights = conv.weight.val().into_data().try_to_vec::<f32>().unwrap();
        let n = weights.len() as f64;
        let var = weights.iter().map(|w| (*w as f64).powi(2)).sum::<f64>() / n;
        let expected = 2.0 / (1.0 + 1e-4) / (16.0 * 9.0);
        assert!((var / expected - 1.0).abs() < 0.15, "variance {var}, expected {expected}");
        let bias = conv.bias.unwrap().val().into_data().try_to_vec::<f32>().unwrap();
        assert!(bias.iter().all(|b| *b == 0.0));
    }
}
