//! DeepLabv3+ (Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic
//! Image Segmentation", ECCV 2018) on the plan's stages, 2D or 3D: a network kind next to the
//! U-Net.
//!
//! # Design
//!
//! - **Backbone**: the plan's plain conv encoder ([`PlainConvEncoder`], nnU-Net's conv -> instance
//!   norm -> leaky ReLU stages, widths and kernels of [`PlainConvUNetConfig`]). Each axis keeps
//!   its strides while its cumulative stride stays within `output_stride`; a stride beyond it
//!   becomes dilation instead (the atrous algorithm): the stage's first conv keeps the dilation it
//!   had, later convs of that stage and every conv of the later stages are dilated by the removed
//!   strides, so every conv samples the input where the strided one did, on a finer grid.
//! - **ASPP** on the deepest stage: a 1x1 branch, one 3x3 branch per atrous rate, an image-pooling
//!   branch (global average -> 1x1 conv -> broadcast back), concatenated and projected by a 1x1
//!   conv to `aspp_channels`.
//! - **Decoder**: the ASPP output is resized to the low-level stage (the paper's "upsample by 4"
//!   at output stride 16: the low-level stage is the one at a quarter of the output stride),
//!   concatenated with the low-level features reduced by a 1x1 conv to `low_level_channels`, two
//!   conv blocks of `decoder_channels` (the low-level stage's kernel), a 1x1 classifier, and the
//!   logits resized to the input size.
//! - **Up-sampling** is linear interpolation (bilinear in 2D, trilinear in 3D as separable
//!   passes, half-pixel centres as PyTorch's `align_corners=False`), as the paper; an axis already
//!   at its target size is not touched.
//!
//! # Anisotropic 3D plans
//!
//! An axis a stage does not convolve (kernel 1, e.g. across thick slices) gets dilation 1 in that
//! stage; the ASPP convolves (and dilates by the rates) only the axes the deepest stage convolves,
//! its image pooling averages only over those axes (per slice otherwise), and the decoder convs use
//! the low-level stage's kernel, so nothing mixes along an axis where the plan does not. Where the
//! deepest stage convolves every axis, the rates apply to all of them: nnU-Net's plan pools an
//! axis only until its spacing catches up, so the deepest stage's voxels are close to isotropic and
//! one rate means about the same distance along every axis.
//!
//! # Departures from the paper
//!
//! Instance norm and leaky ReLU (the plan's blocks, small batches) instead of batch norm and ReLU;
//! plain convs instead of Xception's separable ones; the image-pooling branch has no norm (an
//! instance norm of a single value is always 0), only conv (with bias) and leaky ReLU; no dropout.
//! The network has one output: no deep supervision ([`DeepLabV3Plus::num_outputs`] is 1 and
//! [`DeepLabV3Plus::with_deep_supervision`] changes nothing).

use burn::config::Config;
use burn::module::Module;
use burn::tensor::activation::leaky_relu;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Tensor};

use crate::blocks::spatial::{forward_checked, stride_product};
use crate::blocks::{ConvNd, ConvNormAct, ConvNormActConfig, SpatialDims, StackedConvBlocks, StackedConvBlocksConfig};
use crate::encoders::PlainConvEncoder;
use crate::networks::plain_conv_unet::{PlainConvUNetConfig, UNetConfigError, UNetOutput};

/// The paper's atrous rates at output stride 16 (doubled at output stride 8).
const PAPER_RATES_AT_16: [usize; 3] = [6, 12, 18];

/// Configuration of a [`DeepLabV3Plus`].
#[derive(Config, Debug)]
pub struct DeepLabV3PlusConfig {
    /// The plan's U-Net: input channels, classes, stage widths, strides and kernels (its decoder
    /// settings and `deep_supervision` are unused; its text options must be off).
    pub unet: PlainConvUNetConfig,
    /// Largest down-sampling of the encoder per axis; strides beyond it become dilation.
    #[config(default = 16)]
    pub output_stride: usize,
    /// Dilation rates of the ASPP's 3x3 branches (the paper: 6, 12, 18 at output stride 16). A
    /// rate at or beyond the deepest feature map's side leaves only the centre tap on the image
    /// (the branch then acts as a 1x1 conv), as the paper notes for large rates: small patches
    /// want smaller rates.
    pub atrous_rates: Vec<usize>,
    /// Width of every ASPP branch and of its projection.
    pub aspp_channels: usize,
    /// The encoder stage whose output is the decoder's low-level skip (not the deepest).
    pub low_level_stage: usize,
    /// Width of the low-level skip after its 1x1 reduction (48 in the paper).
    pub low_level_channels: usize,
    /// Width of the decoder's two conv blocks (256 in the paper).
    pub decoder_channels: usize,
}

/// An invalid [`DeepLabV3PlusConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeepLabV3PlusConfigError {
    /// The plan's U-Net stages are invalid.
    #[error(transparent)]
    Unet(#[from] UNetConfigError),
    /// The U-Net's text guidance or target alignment is set.
    #[error("DeepLabv3+ has no text fusion or target alignment")]
    TextOptions,
    /// `output_stride` is 0.
    #[error("output_stride must be positive")]
    OutputStride,
    /// An atrous rate is 0.
    #[error("atrous rates must be positive, got {0:?}")]
    AtrousRates(Vec<usize>),
    /// A width is 0.
    #[error("{0} must be positive")]
    ZeroWidth(&'static str),
    /// `low_level_stage` is the deepest stage or beyond.
    #[error("low_level_stage {stage} must be shallower than the deepest stage ({deepest})")]
    LowLevelStage {
        /// The configured stage.
        stage: usize,
        /// Index of the deepest stage.
        deepest: usize,
    },
    /// The deepest stage convolves no axis (kernel 1 everywhere): the ASPP would have nothing
    /// to dilate or pool over.
    #[error("the deepest stage's kernel is 1 along every axis; the ASPP needs an axis it convolves")]
    DeepestStageKernel,
}

/// How the encoder runs one stage of the plan, per spatial axis (tensor order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageGeometry {
    /// The stride the stage keeps (the plan's, or 1 where it became dilation).
    pub stride: Vec<usize>,
    /// Dilation of the stage's first conv (the one the plan strides).
    pub first_dilation: Vec<usize>,
    /// Dilation of the stage's other convs.
    pub dilation: Vec<usize>,
}

impl DeepLabV3PlusConfig {
    /// The plan's stages at output stride 16, with the paper's rates and widths scaled to the plan
    /// (see [`from_unet_with_output_stride`](Self::from_unet_with_output_stride)).
    pub fn from_unet(unet: &PlainConvUNetConfig) -> Self {
        Self::from_unet_with_output_stride(unet, 16)
    }

    /// The plan's stages at `output_stride`, with
    /// - the paper's rates (6, 12, 18 at 16) scaled by `16 / output_stride` (12, 24, 36 at 8);
    /// - `aspp_channels` half the deepest stage's width: the paper's 256 is an eighth of
    ///   ResNet-101's 2048; half keeps the three 3x3 branches at about 1.5 times the cost of one
    ///   deepest-stage conv, so the head does not outweigh the plan's encoder on a CPU;
    /// - `low_level_channels` 3/16 of `aspp_channels` (the paper's 48 against 256, the balance
    ///   between low-level and encoder channels it found to train best), at least 4;
    /// - `decoder_channels` = `aspp_channels` (the paper's 256 and 256);
    /// - `low_level_stage` the deepest stage at most a quarter of the encoder's output stride (the
    ///   paper's stride-4 features at output stride 16).
    pub fn from_unet_with_output_stride(unet: &PlainConvUNetConfig, output_stride: usize) -> Self {
        let rates = PAPER_RATES_AT_16.iter().map(|r| (r * 16 / output_stride.max(1)).max(1)).collect();
        let deepest_width = unet.features_per_stage.last().copied().unwrap_or(0);
        let aspp_channels = (deepest_width / 2).max(1);
        let mut config = DeepLabV3PlusConfig::new(
            unet.clone(),
            rates,
            aspp_channels,
            0,
            (aspp_channels * 3 / 16).max(4),
            aspp_channels,
        )
        .with_output_stride(output_stride);
        config.low_level_stage = config.default_low_level_stage();
        config
    }

    /// The deepest stage (not the last) whose cumulative stride is at most a quarter of the
    /// encoder's largest one; stage 0 when none is.
    fn default_low_level_stage(&self) -> usize {
        let n = self.unet.n_stages();
        if n < 2 || self.output_stride == 0 {
            return 0;
        }
        let strides = self.encoder_strides();
        let largest =
            |stages: usize| stride_product(self.unet.spatial_dims, &strides[..stages]).into_iter().max().unwrap_or(1);
        let target = (largest(n) / 4).max(1);
        (0..n - 1).rev().find(|&stage| largest(stage + 1) <= target).unwrap_or(0)
    }

    /// Checks the plan's stages and this network's settings.
    pub fn validate(&self) -> Result<(), DeepLabV3PlusConfigError> {
        self.unet.validate()?;
        if self.unet.text_guidance.is_some() || self.unet.target_alignment.is_some() {
            return Err(DeepLabV3PlusConfigError::TextOptions);
        }
        if self.output_stride == 0 {
            return Err(DeepLabV3PlusConfigError::OutputStride);
        }
        if self.atrous_rates.contains(&0) {
            return Err(DeepLabV3PlusConfigError::AtrousRates(self.atrous_rates.clone()));
        }
        for (what, width) in [
            ("aspp_channels", self.aspp_channels),
            ("low_level_channels", self.low_level_channels),
            ("decoder_channels", self.decoder_channels),
        ] {
            if width == 0 {
                return Err(DeepLabV3PlusConfigError::ZeroWidth(what));
            }
        }
        let deepest = self.unet.n_stages() - 1;
        if self.low_level_stage >= deepest {
            return Err(DeepLabV3PlusConfigError::LowLevelStage { stage: self.low_level_stage, deepest });
        }
        if self.unet.kernel_size(deepest).iter().all(|&k| k == 1) {
            return Err(DeepLabV3PlusConfigError::DeepestStageKernel);
        }
        Ok(())
    }

    /// Stride and dilations of every stage: per axis, a stride is kept while the axis's
    /// cumulative stride stays within `output_stride`, else it multiplies the dilation of what
    /// follows; an axis a stage does not convolve (kernel 1) has dilation 1 there.
    pub fn stage_geometry(&self) -> Vec<StageGeometry> {
        let axes = self.unet.spatial_dims.count();
        let mut cumulative = vec![1; axes];
        let mut rate = vec![1; axes];
        (0..self.unet.n_stages())
            .map(|stage| {
                let kernel = self.unet.kernel_size(stage);
                let mut geometry =
                    StageGeometry { stride: vec![1; axes], first_dilation: vec![1; axes], dilation: vec![1; axes] };
                for axis in 0..axes {
                    let stride = self.unet.strides[stage][axis];
                    let before = rate[axis];
                    if cumulative[axis] * stride <= self.output_stride {
                        cumulative[axis] *= stride;
                        geometry.stride[axis] = stride;
                    } else {
                        rate[axis] *= stride;
                    }
                    if kernel[axis] > 1 {
                        geometry.first_dilation[axis] = before;
                        geometry.dilation[axis] = rate[axis];
                    }
                }
                geometry
            })
            .collect()
    }

    /// The stride each stage keeps, per axis.
    pub fn encoder_strides(&self) -> Vec<Vec<usize>> {
        self.stage_geometry().into_iter().map(|geometry| geometry.stride).collect()
    }

    /// What every spatial side of an input must be a multiple of: the product of the kept
    /// strides, per axis.
    pub fn size_divisor(&self) -> Vec<usize> {
        stride_product(self.unet.spatial_dims, &self.encoder_strides())
    }

    /// Builds the network (encoder, ASPP, decoder, in that order).
    ///
    /// # Panics
    ///
    /// Panics if [`validate`](Self::validate) fails.
    pub fn init(&self, device: &Device) -> DeepLabV3Plus {
        if let Err(err) = self.validate() {
            panic!("invalid DeepLabV3PlusConfig: {err}");
        }
        let unet = &self.unet;
        let dims = unet.spatial_dims;
        let axes = dims.count();
        let ones = vec![1; axes];
        let block = |in_channels, out_channels, kernel: Vec<usize>, stride: Vec<usize>, dilation: Vec<usize>| {
            ConvNormActConfig::new(dims, in_channels, out_channels, kernel, stride)
                .with_negative_slope(unet.negative_slope)
                .with_norm_epsilon(unet.norm_epsilon)
                .with_dilation(Some(dilation))
                .init(device)
        };

        let mut stages = Vec::with_capacity(unet.n_stages());
        let mut in_channels = unet.in_channels;
        for (stage, geometry) in self.stage_geometry().into_iter().enumerate() {
            let width = unet.features_per_stage[stage];
            let kernel = unet.kernel_size(stage);
            let convs = (0..unet.n_conv_per_stage)
                .map(|i| match i {
                    0 => block(
                        in_channels,
                        width,
                        kernel.clone(),
                        geometry.stride.clone(),
                        geometry.first_dilation.clone(),
                    ),
                    _ => block(width, width, kernel.clone(), ones.clone(), geometry.dilation.clone()),
                })
                .collect();
            stages.push(StackedConvBlocks { convs });
            in_channels = width;
        }

        // The ASPP convolves the axes the deepest stage convolves, 3 taps at each rate there.
        let deepest = unet.n_stages() - 1;
        let convolved: Vec<bool> = unet.kernel_size(deepest).iter().map(|&k| k > 1).collect();
        let deep_width = unet.features_per_stage[deepest];
        let aspp_kernel: Vec<usize> = convolved.iter().map(|&c| if c { 3 } else { 1 }).collect();
        let mut branches = vec![block(deep_width, self.aspp_channels, ones.clone(), ones.clone(), ones.clone())];
        for &rate in &self.atrous_rates {
            let dilation = convolved.iter().map(|&c| if c { rate } else { 1 }).collect();
            branches.push(block(deep_width, self.aspp_channels, aspp_kernel.clone(), ones.clone(), dilation));
        }
        let pooling = ConvNd::new(dims, deep_width, self.aspp_channels, &ones, &ones, unet.negative_slope, device);
        let concatenated = self.aspp_channels * (self.atrous_rates.len() + 2);
        let project = block(concatenated, self.aspp_channels, ones.clone(), ones.clone(), ones.clone());
        // Canonical dims of the convolved axes (a 2D network's axes are the last two of five).
        let pooled_dims = convolved.iter().enumerate().filter(|(_, &c)| c).map(|(axis, _)| 5 - axes + axis).collect();
        let aspp = Aspp { branches, pooling, project, pooled_dims, negative_slope: unet.negative_slope };

        let low_width = unet.features_per_stage[self.low_level_stage];
        let low_level = block(low_width, self.low_level_channels, ones.clone(), ones.clone(), ones.clone());
        let convs = StackedConvBlocksConfig::new(
            dims,
            2,
            self.aspp_channels + self.low_level_channels,
            self.decoder_channels,
            unet.kernel_size(self.low_level_stage),
            ones.clone(),
        )
        .with_negative_slope(unet.negative_slope)
        .with_norm_epsilon(unet.norm_epsilon)
        .init(device);
        let classifier =
            ConvNd::new(dims, self.decoder_channels, unet.num_classes, &ones, &ones, unet.negative_slope, device);

        DeepLabV3Plus {
            encoder: PlainConvEncoder { stages },
            aspp,
            decoder: DeepLabDecoder { low_level, convs, classifier },
            spatial_dims: dims,
            strides: self.encoder_strides(),
            low_level_stage: self.low_level_stage,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Layers
// ---------------------------------------------------------------------------------------------

/// Linear interpolation of the spatial axes to `size` (`[depth, height, width]`): bilinear over
/// height and width, then linear over depth (together trilinear), half-pixel centres (PyTorch's
/// `align_corners=False`). A pass whose axes already have their target sizes is skipped, so
/// nothing mixes along them.
///
/// # Shapes
///
/// - input: `[batch, channels, depth, height, width]`
/// - output: `[batch, channels, size[0], size[1], size[2]]`
pub fn resize_linear(x: Tensor<5>, size: [usize; 3]) -> Tensor<5> {
    let [batch, channels, depth, height, width] = x.dims();
    let [out_depth, out_height, out_width] = size;
    let options = |output_size| {
        InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false).with_output_size(output_size)
    };
    let mut x = x;
    if [height, width] != [out_height, out_width] {
        let planes = x.reshape([batch, channels * depth, height, width]);
        x = interpolate(planes, options([out_height, out_width]))
            .reshape([batch, channels, depth, out_height, out_width]);
    }
    if depth != out_depth {
        // Height and width flattened into one axis of unchanged size: linear along depth only.
        let columns = x.reshape([batch, channels, depth, out_height * out_width]);
        x = interpolate(columns, options([out_depth, out_height * out_width]))
            .reshape([batch, channels, out_depth, out_height, out_width]);
    }
    x
}

/// Atrous spatial pyramid pooling: parallel 1x1, atrous 3x3 and image-pooling branches,
/// concatenated and projected.
#[derive(Module, Debug)]
pub struct Aspp {
    /// The 1x1 branch, then one atrous branch per rate.
    pub branches: Vec<ConvNormAct>,
    /// The image-pooling branch's 1x1 conv (with bias; no norm, see the module docs).
    pub pooling: ConvNd,
    /// 1x1 projection of the concatenated branches.
    pub project: ConvNormAct,
    /// Canonical dims the image pooling averages over (the axes the deepest stage convolves).
    #[module(skip)]
    pub pooled_dims: Vec<usize>,
    /// Leaky ReLU slope of the image-pooling branch.
    #[module(skip)]
    pub negative_slope: f64,
}

impl Aspp {
    /// The image-pooling branch: average over the pooled axes, 1x1 conv, leaky ReLU, broadcast
    /// back to the input's size.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, in_channels, depth, height, width]`
    /// - output: `[batch, aspp_channels, depth, height, width]`, constant along the pooled axes
    pub fn image_pooling(&self, x: Tensor<5>) -> Tensor<5> {
        let [batch, _, depth, height, width] = x.dims();
        let pooled = self.pooled_dims.iter().fold(x, |x, &dim| x.mean_dim(dim));
        let y = leaky_relu(self.pooling.forward(pooled), self.negative_slope);
        let channels = y.dims()[1];
        y.expand([batch, channels, depth, height, width])
    }

    /// # Shapes
    ///
    /// - input: `[batch, in_channels, depth, height, width]` (the deepest stage's output)
    /// - output: `[batch, aspp_channels, depth, height, width]`
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let mut branches: Vec<Tensor<5>> = self.branches.iter().map(|branch| branch.forward(x.clone())).collect();
        branches.push(self.image_pooling(x));
        self.project.forward(Tensor::cat(branches, 1))
    }
}

/// DeepLabv3+'s decoder: low-level reduction, two conv blocks on the concatenation, classifier.
#[derive(Module, Debug)]
pub struct DeepLabDecoder {
    /// 1x1 conv block reducing the low-level skip to `low_level_channels`.
    pub low_level: ConvNormAct,
    /// Two conv blocks of `decoder_channels` (the low-level stage's kernel).
    pub convs: StackedConvBlocks,
    /// 1x1 classifier (with bias).
    pub classifier: ConvNd,
}

// ---------------------------------------------------------------------------------------------
// The top model
// ---------------------------------------------------------------------------------------------

/// DeepLabv3+ on the plan's stages. Build it with [`DeepLabV3PlusConfig::init`].
#[derive(Module, Debug)]
pub struct DeepLabV3Plus {
    /// The plan's stages, deep strides turned into dilation.
    pub encoder: PlainConvEncoder,
    /// Atrous spatial pyramid pooling on the deepest stage.
    pub aspp: Aspp,
    /// Low-level skip, conv blocks, classifier.
    pub decoder: DeepLabDecoder,
    /// 2D or 3D.
    #[module(skip)]
    pub spatial_dims: SpatialDims,
    /// The strides the encoder keeps per stage and axis, to check input sizes.
    #[module(skip)]
    pub strides: Vec<Vec<usize>>,
    /// The encoder stage the low-level skip comes from.
    #[module(skip)]
    pub low_level_stage: usize,
}

impl DeepLabV3Plus {
    /// The same network: it has no deep supervision, one output either way.
    pub fn with_deep_supervision(self, _deep_supervision: bool) -> Self {
        self
    }

    /// Number of outputs [`forward`](Self::forward) returns: always 1 (full resolution).
    pub fn num_outputs(&self) -> usize {
        1
    }

    /// Product of the kept strides per spatial axis: input sizes must be multiples of it.
    pub fn size_divisor(&self) -> Vec<usize> {
        stride_product(self.spatial_dims, &self.strides)
    }

    /// Number of input channels, from the first conv's weight.
    pub fn in_channels(&self) -> usize {
        self.encoder.stages[0].convs[0].conv.in_channels()
    }

    /// Number of output classes, from the classifier's weight.
    pub fn num_classes(&self) -> usize {
        self.decoder.classifier.out_channels()
    }

    /// Segmentation logits (no softmax), one tensor at the input's size.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, in_channels, height, width]` (2D) or
    ///   `[batch, in_channels, depth, height, width]` (3D), each spatial side a multiple of
    ///   [`size_divisor`](Self::size_divisor)
    /// - output: `[[batch, num_classes, spatial...]]`
    ///
    /// # Panics
    ///
    /// Panics if `D` does not match the spatial rank or a side is not a multiple of the size
    /// divisor.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Vec<Tensor<D>> {
        forward_checked(self.spatial_dims, &self.size_divisor(), x, |x| self.forward_canonical(x))
    }

    /// [`forward`](Self::forward) on the canonical 5D layout, without size checks.
    pub fn forward_canonical(&self, x: Tensor<5>) -> Vec<Tensor<5>> {
        self.forward_detailed(x).logits
    }

    /// The logits (one level, full resolution) and the decoder's features.
    ///
    /// `features` and the one entry of `level_features` are the decoder's features at the
    /// low-level stage's resolution (`[batch, decoder_channels, spatial / stride of that stage]`),
    /// not up-sampled: this network has no full-resolution decoder level.
    pub fn forward_detailed(&self, x: Tensor<5>) -> UNetOutput {
        let [_, _, depth, height, width] = x.dims();
        let mut skips = self.encoder.forward(x);
        let deepest = skips.pop().expect("the encoder should return one output per stage");
        let low_level = skips.swap_remove(self.low_level_stage);
        let [_, _, low_depth, low_height, low_width] = low_level.dims();
        let context = resize_linear(self.aspp.forward(deepest), [low_depth, low_height, low_width]);
        let low_level = self.decoder.low_level.forward(low_level);
        let features = self.decoder.convs.forward(Tensor::cat(vec![context, low_level], 1));
        let logits = resize_linear(self.decoder.classifier.forward(features.clone()), [depth, height, width]);
        UNetOutput { logits: vec![logits], features: features.clone(), level_features: vec![features] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{Network, NetworkConfig, WeightPrecision};
    use burn::optim::{AdamConfig, GradientsParams};
    use burn::tensor::activation::log_softmax;
    use burn::tensor::{Distribution, TensorData};

    fn device() -> Device {
        Device::flex()
    }

    fn values(x: Tensor<5>) -> Vec<f32> {
        x.into_data().try_to_vec::<f32>().unwrap()
    }

    /// 2D, 4 stages, output stride 4: the last stage's stride becomes dilation 2.
    fn tiny_2d() -> DeepLabV3PlusConfig {
        let unet = PlainConvUNetConfig::new(
            SpatialDims::D2,
            1,
            3,
            vec![4, 8, 8, 16],
            vec![vec![1, 1], vec![2, 2], vec![2, 2], vec![2, 2]],
        );
        DeepLabV3PlusConfig::from_unet_with_output_stride(&unet, 4)
    }

    /// 3D with thick slices: the first two stages neither convolve nor stride the depth axis.
    fn anisotropic_3d() -> DeepLabV3PlusConfig {
        let unet = PlainConvUNetConfig::new(
            SpatialDims::D3,
            2,
            2,
            vec![4, 8, 8, 8],
            vec![vec![1, 1, 1], vec![1, 2, 2], vec![2, 2, 2], vec![2, 2, 2]],
        )
        .with_kernel_sizes(Some(vec![vec![1, 3, 3], vec![1, 3, 3], vec![3, 3, 3], vec![3, 3, 3]]));
        DeepLabV3PlusConfig::from_unet_with_output_stride(&unet, 4)
    }

    /// 3D where no stage convolves depth (a stack of 2D slices in one volume).
    fn slices_3d() -> DeepLabV3PlusConfig {
        let unet = PlainConvUNetConfig::new(
            SpatialDims::D3,
            1,
            2,
            vec![4, 8, 8],
            vec![vec![1, 1, 1], vec![1, 2, 2], vec![1, 2, 2]],
        )
        .with_kernel_sizes(Some(vec![vec![1, 3, 3]; 3]));
        DeepLabV3PlusConfig::from_unet_with_output_stride(&unet, 2)
    }

    /// A typical lumbar 2D plan: 6 stages of 16-32-64-128-256-256, 3 sequences, 10 classes.
    fn lumbar_2d() -> DeepLabV3PlusConfig {
        let mut strides = vec![vec![1, 1]];
        strides.extend(std::iter::repeat_n(vec![2, 2], 5));
        let unet = PlainConvUNetConfig::new(SpatialDims::D2, 3, 10, vec![16, 32, 64, 128, 256, 256], strides);
        DeepLabV3PlusConfig::from_unet(&unet)
    }

    #[test]
    fn defaults_follow_the_paper_scaled_to_the_plan() {
        let config = lumbar_2d();
        config.validate().unwrap();
        assert_eq!(config.output_stride, 16);
        assert_eq!(config.atrous_rates, vec![6, 12, 18]);
        assert_eq!((config.aspp_channels, config.low_level_channels, config.decoder_channels), (128, 24, 128));
        assert_eq!(config.low_level_stage, 2, "stride 4 at output stride 16");
        assert_eq!(config.size_divisor(), vec![16, 16]);
        let geometry = config.stage_geometry();
        assert_eq!(geometry[4], StageGeometry { stride: vec![2, 2], first_dilation: vec![1, 1], dilation: vec![1, 1] });
        assert_eq!(geometry[5], StageGeometry { stride: vec![1, 1], first_dilation: vec![1, 1], dilation: vec![2, 2] });
        let os8 = DeepLabV3PlusConfig::from_unet_with_output_stride(&config.unet, 8);
        assert_eq!(os8.atrous_rates, vec![12, 24, 36]);
        assert_eq!(os8.low_level_stage, 1);
        assert_eq!(os8.stage_geometry()[5].first_dilation, vec![2, 2]);
        assert_eq!(os8.stage_geometry()[5].dilation, vec![4, 4]);
    }

    #[test]
    fn invalid_configs_are_reported() {
        let config = tiny_2d();
        assert_eq!(config.clone().with_output_stride(0).validate(), Err(DeepLabV3PlusConfigError::OutputStride));
        assert!(matches!(
            DeepLabV3PlusConfig { atrous_rates: vec![1, 0], ..config.clone() }.validate(),
            Err(DeepLabV3PlusConfigError::AtrousRates(_))
        ));
        assert_eq!(
            DeepLabV3PlusConfig { aspp_channels: 0, ..config.clone() }.validate(),
            Err(DeepLabV3PlusConfigError::ZeroWidth("aspp_channels"))
        );
        assert_eq!(
            DeepLabV3PlusConfig { low_level_stage: 3, ..config.clone() }.validate(),
            Err(DeepLabV3PlusConfigError::LowLevelStage { stage: 3, deepest: 3 })
        );
        let mut flat = config.clone();
        flat.unet.kernel_sizes = Some(vec![vec![3, 3], vec![3, 3], vec![3, 3], vec![1, 1]]);
        assert_eq!(flat.validate(), Err(DeepLabV3PlusConfigError::DeepestStageKernel));
        let mut broken = config;
        broken.unet.strides.pop();
        assert!(matches!(broken.validate(), Err(DeepLabV3PlusConfigError::Unet(_))));
    }

    #[test]
    fn outputs_are_full_resolution_logits_in_2d_and_3d() {
        let device = device();
        let network = tiny_2d().init(&device);
        assert_eq!(network.size_divisor(), vec![4, 4]);
        assert_eq!((network.in_channels(), network.num_classes(), network.num_outputs()), (1, 3, 1));
        let x = Tensor::<4>::random([2, 1, 8, 12], Distribution::Normal(0.0, 1.0), &device);
        let outputs = network.forward(x);
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].dims(), [2, 3, 8, 12]);

        let network = anisotropic_3d().init(&device);
        assert_eq!(network.size_divisor(), vec![4, 4, 4]);
        let x = Tensor::<5>::random([1, 2, 4, 8, 12], Distribution::Normal(0.0, 1.0), &device);
        let detailed = network.forward_detailed(x.clone());
        assert_eq!(detailed.features.dims()[2..], [4, 8, 12], "low-level stage 0 is at full resolution");
        let outputs = network.forward(x);
        assert_eq!(outputs[0].dims(), [1, 2, 4, 8, 12]);
        assert!(values(outputs[0].clone()).iter().all(|v| v.is_finite()));
    }

    #[test]
    fn anisotropic_plans_never_dilate_or_convolve_an_axis_the_plan_does_not() {
        let config = anisotropic_3d();
        let geometry = config.stage_geometry();
        // In-plane: cumulative strides 1, 2, 4 and the last 2 becomes dilation; depth keeps all.
        assert_eq!(
            geometry[3],
            StageGeometry { stride: vec![2, 1, 1], first_dilation: vec![1, 1, 1], dilation: vec![1, 2, 2] }
        );
        let network = config.init(&device());
        for (stage, blocks) in network.encoder.stages.iter().enumerate().take(2) {
            for block in &blocks.convs {
                let ConvNd::D3(conv) = &block.conv else { panic!("a 3D network should have 3D convs") };
                assert_eq!(conv.weight.lazy_shape()[2], 1, "stage {stage} does not convolve depth");
                assert_eq!(conv.dilation[0], 1, "stage {stage} does not dilate depth");
            }
        }
        for block in &network.decoder.convs.convs {
            assert_eq!(block.conv.dilation(), [1, 1, 1]);
            let ConvNd::D3(conv) = &block.conv else { panic!("a 3D network should have 3D convs") };
            assert_eq!(conv.weight.lazy_shape()[2], 1, "the decoder uses the low-level stage's kernel");
        }

        // A plan that never convolves depth: the ASPP's atrous convs have kernel 1 and dilation
        // 1 along it, so perturbing one slice changes no other slice of a branch's output.
        let device = device();
        let network = slices_3d().init(&device);
        let x = Tensor::<5>::random([1, 8, 3, 4, 4], Distribution::Normal(0.0, 1.0), &device);
        let perturbed = x.clone().slice_assign(
            [0..1, 0..8, 1..2, 0..4, 0..4],
            Tensor::random([1, 8, 1, 4, 4], Distribution::Normal(0.0, 1.0), &device),
        );
        for branch in &network.aspp.branches[1..] {
            let dilation = branch.conv.dilation();
            assert_eq!(dilation[0], 1);
            assert!(dilation[1] > 1, "in-plane the rates apply");
            let (a, b) = (branch.conv.forward(x.clone()), branch.conv.forward(perturbed.clone()));
            for slice in [0, 2] {
                let range = [0..1, 0..network.aspp.branches[0].conv.out_channels(), slice..slice + 1, 0..4, 0..4];
                assert_eq!(values(a.clone().slice(range.clone())), values(b.clone().slice(range)));
            }
        }
    }

    #[test]
    fn image_pooling_broadcasts_the_average() {
        let device = device();
        let network = anisotropic_3d().init(&device);
        let x = Tensor::<5>::random([2, 8, 2, 3, 4], Distribution::Normal(0.0, 1.0), &device);
        let pooled = network.aspp.image_pooling(x.clone());
        assert_eq!(pooled.dims(), [2, network.aspp.pooling.out_channels(), 2, 3, 4]);
        let expected = leaky_relu(
            network.aspp.pooling.forward(x.mean_dim(2).mean_dim(3).mean_dim(4)),
            network.aspp.negative_slope,
        );
        let (got, want) = (values(pooled), values(expected));
        for (i, v) in got.iter().enumerate() {
            let w = want[i / 24];
            assert!((v - w).abs() <= 1e-6 * w.abs().max(1.0), "every position holds its sample's value");
        }

        // Without depth convolved, the pooling is per slice.
        let network = slices_3d().init(&device);
        assert_eq!(network.aspp.pooled_dims, vec![3, 4]);
        let x = Tensor::<5>::random([1, 8, 2, 2, 2], Distribution::Normal(0.0, 1.0), &device);
        let pooled = values(network.aspp.image_pooling(x));
        for channel in pooled.chunks(8) {
            assert!(channel[..4].iter().all(|v| *v == channel[0]) && channel[4..].iter().all(|v| *v == channel[4]));
        }
    }

    #[test]
    fn resizing_leaves_axes_of_unchanged_size_alone() {
        let device = device();
        let x = Tensor::<5>::random([1, 2, 3, 2, 2], Distribution::Normal(0.0, 1.0), &device);
        assert_eq!(values(resize_linear(x.clone(), [3, 2, 2])), values(x.clone()));
        let up = resize_linear(x.clone(), [3, 4, 4]);
        assert_eq!(up.dims(), [1, 2, 3, 4, 4]);
        // Half-pixel centres: the mean of a 2x up-sampled plane is the plane's mean.
        let (a, b) = (values(x.mean_dim(3).mean_dim(4)), values(up.mean_dim(3).mean_dim(4)));
        assert!(a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-5));
    }

    /// Parameter count from the architecture, written out.
    fn expected_params(config: &DeepLabV3PlusConfig) -> usize {
        let unet = &config.unet;
        let k = |stage: usize| unet.kernel_size(stage).iter().product::<usize>();
        // Conv weight + bias, instance norm scale + shift.
        let block = |cin: usize, cout: usize, k: usize| cin * cout * k + 3 * cout;
        let f = &unet.features_per_stage;
        let mut total = 0;
        let mut cin = unet.in_channels;
        for (stage, &cout) in f.iter().enumerate() {
            total += block(cin, cout, k(stage)) + (unet.n_conv_per_stage - 1) * block(cout, cout, k(stage));
            cin = cout;
        }
        let deepest = f.len() - 1;
        let aspp_k: usize = unet.kernel_size(deepest).iter().map(|&k| if k > 1 { 3 } else { 1 }).product();
        let a = config.aspp_channels;
        total += block(f[deepest], a, 1) + config.atrous_rates.len() * block(f[deepest], a, aspp_k);
        total += f[deepest] * a + a;
        total += block(a * (config.atrous_rates.len() + 2), a, 1);
        let (l, d) = (config.low_level_channels, config.decoder_channels);
        total += block(f[config.low_level_stage], l, 1);
        total += block(a + l, d, k(config.low_level_stage)) + block(d, d, k(config.low_level_stage));
        total + d * unet.num_classes + unet.num_classes
    }

    #[test]
    fn parameter_count_matches_the_architecture() {
        let device = device();
        for config in [tiny_2d(), anisotropic_3d(), slices_3d(), lumbar_2d()] {
            assert_eq!(config.init(&device).num_params(), expected_params(&config));
        }
        // The lumbar plan: 3.72 M parameters (encoder 2.36 M, ASPP 1.03 M, decoder 0.33 M)
        // against 5.16 M for the plan's U-Net.
        assert_eq!(expected_params(&lumbar_2d()), 3_722_402);
        assert_eq!(lumbar_2d().unet.init(&device).num_params(), 5_163_634);
    }

    #[test]
    fn weights_round_trip_through_the_network_enum() {
        let device = device();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deeplab.bpk");
        let config = NetworkConfig::from(tiny_2d());
        assert_eq!(config.kind(), "deeplabv3plus");
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["kind"], "deeplabv3plus");
        let back: NetworkConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back.size_divisor(), vec![4, 4]);
        let saved = config.init(&device);
        saved.save_weights(&path, WeightPrecision::Single).unwrap();
        let loaded = back.init(&device).try_load_file(&path).unwrap();
        let x = Tensor::<4>::random([1, 1, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        assert_eq!(saved.forward_logits(x.clone()).into_data(), loaded.forward_logits(x).into_data());
        let other = NetworkConfig::from(DeepLabV3PlusConfig { aspp_channels: 6, ..tiny_2d() });
        assert!(other.init(&device).try_load_file(&path).is_err(), "weights of another ASPP width do not load");
        assert!(matches!(loaded, Network::DeepLabV3Plus(_)));
    }

    #[test]
    fn a_few_steps_lower_the_loss_on_a_synthetic_problem() {
        let device = device().autodiff();
        device.seed(3);
        let config = tiny_2d().with_output_stride(2);
        let mut network = Some(config.init(&device));
        // Class 1 is a bright square; the image is the mask plus noise.
        let side = 16;
        let mask: Vec<f32> = (0..2 * side * side)
            .map(|i| {
                let (y, x) = ((i / side) % side, i % side);
                f32::from((4..12).contains(&y) && (4..12).contains(&x) && (i < side * side || x < 8))
            })
            .collect();
        let foreground = Tensor::<5>::from_data(TensorData::new(mask, [2, 1, 1, side, side]), &device);
        let noise = Tensor::<5>::random([2, 1, 1, side, side], Distribution::Normal(0.0, 0.3), &device);
        let image: Tensor<4> = (foreground.clone() * 2.0 - 1.0 + noise).reshape([2, 1, side, side]);
        let one_hot: Tensor<4> = Tensor::cat(
            vec![foreground.clone().neg() + 1.0, foreground, Tensor::zeros([2, 1, 1, side, side], &device)],
            1,
        )
        .reshape([2, 3, side, side]);
        let mut optimizer = AdamConfig::new().init();
        let mut losses = Vec::new();
        for _ in 0..8 {
            let current = network.take().expect("the network is put back after each step");
            let logits = current.forward(image.clone()).remove(0);
            let loss = (log_softmax(logits, 1) * one_hot.clone()).sum().neg() / (2 * side * side) as f64;
            losses.push(loss.clone().into_scalar::<f32>());
            let grads = GradientsParams::from_grads(loss.backward(), &current);
            network = Some(optimizer.step(1e-2, current, grads));
        }
        assert!(losses.iter().all(|l| l.is_finite()), "losses {losses:?}");
        assert!(losses[7] < 0.7 * losses[0], "the loss should fall: {losses:?}");
    }
}
