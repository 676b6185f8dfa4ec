//! ConvNeXt V2 (Woo et al., CVPR 2023) as a U-Net encoder, 2D and 3D.
//!
//! A block is: depthwise convolution (7 along every axis the plan convolves, 1 along an axis it
//! does not, such as the thick-slice axis of an anisotropic 3D plan) -> LayerNorm over channels
//! -> pointwise convolution to `mlp_ratio x` channels -> GELU -> Global Response Normalization
//! -> pointwise convolution back -> residual add. GRN (ConvNeXt V2's addition) divides each
//! channel's spatial L2 norm by the mean norm over channels and re-scales the features with it,
//! which keeps channels from collapsing in masked-autoencoder pretraining; its scale and shift
//! start at zero, so a fresh block's GRN is the identity. ConvNeXt V2 drops V1's layer scale.
//! Drop path (stochastic depth) is optional (`drop_path`, off by default): in training each
//! sample skips a block's branch with the block's rate, rising linearly from 0 at the first
//! block to `drop_path` at the last as in ConvNeXt, the kept branches scaled by `1 / (1 - rate)`;
//! prediction is unchanged. Its masks come from the device's random generator, so a run with
//! drop path resumes correctly but not bit-identically.
//!
//! Stages mirror the plan's U-Net so the nnU-Net decoder fits unchanged: stage 0 is a stem
//! convolution (the plan's kernel and stride) + LayerNorm, later stages begin with ConvNeXt's
//! down-sampling layer (LayerNorm + convolution with kernel = stride) to the stage's width; each
//! stage then runs its blocks and is one skip of the decoder. Convolutions are kept in the
//! canonical channels-first layout (the pointwise layers are 1x1 convolutions, which run on the
//! fast gemm kernels), so no tensor is permuted.
//!
//! Weights start as ConvNeXt's: normal with standard deviation 0.02 (its truncated normal cut at
//! 2 sigma changes nothing that matters at this size), biases zero, LayerNorm scale one.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig, Conv3d, Conv3dConfig};
use burn::nn::{Dropout, DropoutConfig, Initializer, PaddingConfig2d, PaddingConfig3d};
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Tensor};

use crate::blocks::conv::on_2d;
use crate::blocks::{ConvNd, SpatialDims};

/// Standard deviation of ConvNeXt's weight initialisation.
const INIT_STD: f64 = 0.02;

/// The encoder-specific settings of a ConvNeXt V2 U-Net (widths, strides and kernel axes come
/// from the plan).
#[derive(Config, Debug, PartialEq)]
pub struct ConvNeXtV2EncoderConfig {
    /// ConvNeXt V2 blocks per stage, full resolution first (one entry per stage).
    pub blocks_per_stage: Vec<usize>,
    /// Depthwise kernel size along every axis the plan convolves.
    #[config(default = 7)]
    pub depthwise_kernel: usize,
    /// Width of the pointwise MLP, as a multiple of the stage width.
    #[config(default = 4)]
    pub mlp_ratio: usize,
    /// Epsilon of the channel LayerNorms.
    #[config(default = 1e-6)]
    pub layer_norm_epsilon: f64,
    /// Drop path rate of the last block (ConvNeXt's `drop_path_rate`); `None` or 0: off. An
    /// `Option` so configs written before it read as off.
    #[config(default = "None")]
    pub drop_path: Option<f64>,
}

impl ConvNeXtV2EncoderConfig {
    /// The default depth for `n_stages` stages: no block at full and half resolution (ConvNeXt's
    /// own stem starts its blocks at a quarter of the resolution; there the stem and the first
    /// down-sampling layer make the skips), two blocks per stage below. Sized for 2 CPU cores:
    /// blocks at full resolution (4x-wide MLP on every pixel) made a step 2.5x slower than the
    /// U-Net's on the lumbar plan, for a handful of parameters.
    pub fn for_stages(n_stages: usize) -> Self {
        ConvNeXtV2EncoderConfig::new((0..n_stages).map(|s| if s < 2 { 0 } else { 2 }).collect())
    }

    /// Checks the settings against the number of stages.
    pub fn validate(&self, n_stages: usize) -> Result<(), String> {
        if self.blocks_per_stage.len() != n_stages {
            return Err(format!(
                "blocks_per_stage has {} entries but the network has {n_stages} stages",
                self.blocks_per_stage.len()
            ));
        }
        if self.depthwise_kernel.is_multiple_of(2) {
            return Err(format!("the depthwise kernel must be odd, got {}", self.depthwise_kernel));
        }
        if self.mlp_ratio == 0 {
            return Err("mlp_ratio must be positive".into());
        }
        if self.layer_norm_epsilon.is_nan() || self.layer_norm_epsilon <= 0.0 {
            return Err("layer_norm_epsilon must be positive".into());
        }
        if let Some(rate) = self.drop_path.filter(|rate| !(0.0..1.0).contains(rate)) {
            return Err(format!("drop_path must be in [0, 1), got {rate}"));
        }
        Ok(())
    }

    /// Builds the encoder for a U-Net with these stages (`kernel_sizes[s]` per axis: an axis
    /// with kernel 1 is not convolved in that stage, and the depthwise kernel leaves it alone too).
    ///
    /// # Panics
    ///
    /// Panics if [`validate`](Self::validate) fails or the stage lists differ in length.
    pub fn init(
        &self,
        spatial_dims: SpatialDims,
        in_channels: usize,
        features_per_stage: &[usize],
        strides: &[Vec<usize>],
        kernel_sizes: &[Vec<usize>],
        device: &Device,
    ) -> ConvNeXtV2Encoder {
        if let Err(err) = self.validate(features_per_stage.len()) {
            panic!("invalid ConvNeXtV2EncoderConfig: {err}");
        }
        let mut stages = Vec::with_capacity(features_per_stage.len());
        let mut previous = in_channels;
        // ConvNeXt's schedule: rates rise linearly over all blocks, from 0 to `drop_path`.
        let total_blocks: usize = self.blocks_per_stage.iter().sum();
        let rate_of = |block: usize| match self.drop_path {
            Some(rate) if rate > 0.0 && total_blocks > 1 => rate * block as f64 / (total_blocks - 1) as f64,
            Some(rate) if rate > 0.0 => rate,
            _ => 0.0,
        };
        let mut block_index = 0;
        for (stage, &width) in features_per_stage.iter().enumerate() {
            let entry = if stage == 0 {
                // The stem: a plain convolution at the plan's kernel, then LayerNorm.
                let conv = normal_init(ConvNd::new(spatial_dims, previous, width, &kernel_sizes[0], &strides[0], 0.0, device), device);
                StageEntry { norm_before: None, conv, norm_after: Some(self.norm(width, device)) }
            } else {
                // ConvNeXt's down-sampling layer: LayerNorm, then a convolution with kernel = stride.
                let conv = normal_init(ConvNd::new(spatial_dims, previous, width, &strides[stage], &strides[stage], 0.0, device), device);
                StageEntry { norm_before: Some(self.norm(previous, device)), conv, norm_after: None }
            };
            let kernel: Vec<usize> = kernel_sizes[stage].iter().map(|&k| if k == 1 { 1 } else { self.depthwise_kernel }).collect();
            let blocks = (0..self.blocks_per_stage[stage])
                .map(|_| {
                    let mut block = self.block(spatial_dims, width, &kernel, device);
                    let rate = rate_of(block_index);
                    block_index += 1;
                    if rate > 0.0 {
                        block.drop_path = Some(DropoutConfig::new(rate).init());
                    }
                    block
                })
                .collect();
            stages.push(ConvNeXtV2Stage { entry, blocks });
            previous = width;
        }
        ConvNeXtV2Encoder { stages }
    }

    fn norm(&self, channels: usize, device: &Device) -> ChannelLayerNorm {
        ChannelLayerNorm::new(channels, self.layer_norm_epsilon, device)
    }

    /// One block of `channels` with depthwise kernel `kernel` (one value per axis).
    pub fn block(&self, spatial_dims: SpatialDims, channels: usize, kernel: &[usize], device: &Device) -> ConvNeXtV2Block {
        let ones = vec![1; spatial_dims.count()];
        let hidden = channels * self.mlp_ratio;
        ConvNeXtV2Block {
            depthwise: DepthwiseConvNd::new(spatial_dims, channels, kernel, device),
            norm: self.norm(channels, device),
            expand: normal_init(ConvNd::new(spatial_dims, channels, hidden, &ones, &ones, 0.0, device), device),
            grn: GlobalResponseNorm::new(hidden, device),
            project: normal_init(ConvNd::new(spatial_dims, hidden, channels, &ones, &ones, 0.0, device), device),
            drop_path: None,
        }
    }
}

/// A convolution re-initialised as ConvNeXt's layers (normal, std 0.02; bias zero).
fn normal_init(conv: ConvNd, device: &Device) -> ConvNd {
    let init = Initializer::Normal { mean: 0.0, std: INIT_STD };
    match conv {
        ConvNd::D2(mut conv) => {
            conv.weight = init.init(conv.weight.lazy_shape(), device);
            ConvNd::D2(conv)
        }
        ConvNd::D3(mut conv) => {
            conv.weight = init.init(conv.weight.lazy_shape(), device);
            ConvNd::D3(conv)
        }
    }
}

/// LayerNorm over the channels of a channels-first tensor (ConvNeXt's `LayerNorm(data_format =
/// "channels_first")`), with a learned scale and shift per channel.
#[derive(Module, Debug)]
pub struct ChannelLayerNorm {
    /// Scale `[channels]`, starts at 1.
    pub gamma: Param<Tensor<1>>,
    /// Shift `[channels]`, starts at 0.
    pub beta: Param<Tensor<1>>,
    #[module(skip)]
    epsilon: f64,
}

impl ChannelLayerNorm {
    /// A norm with scale 1 and shift 0.
    pub fn new(channels: usize, epsilon: f64, device: &Device) -> Self {
        ChannelLayerNorm {
            gamma: Param::from_tensor(Tensor::ones([channels], device)),
            beta: Param::from_tensor(Tensor::zeros([channels], device)),
            epsilon,
        }
    }

    /// Normalises every voxel's channel vector to mean 0 and (biased) variance 1, then scales
    /// and shifts it per channel. Shapes: `[batch, channels, d, h, w]` in and out.
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let channels = x.dims()[1];
        let centred = x.clone() - x.mean_dim(1);
        let variance = centred.clone().square().mean_dim(1);
        let normalised = centred / (variance + self.epsilon).sqrt();
        normalised * self.gamma.val().reshape([1, channels, 1, 1, 1]) + self.beta.val().reshape([1, channels, 1, 1, 1])
    }
}

/// ConvNeXt V2's Global Response Normalization: `x + gamma * (x * n) + beta` with `n` each
/// channel's spatial L2 norm divided by the mean of those norms over channels.
#[derive(Module, Debug)]
pub struct GlobalResponseNorm {
    /// Scale `[channels]`, starts at 0 (the layer starts as the identity).
    pub gamma: Param<Tensor<1>>,
    /// Shift `[channels]`, starts at 0.
    pub beta: Param<Tensor<1>>,
}

impl GlobalResponseNorm {
    /// A GRN that starts as the identity.
    pub fn new(channels: usize, device: &Device) -> Self {
        GlobalResponseNorm {
            gamma: Param::from_tensor(Tensor::zeros([channels], device)),
            beta: Param::from_tensor(Tensor::zeros([channels], device)),
        }
    }

    /// Shapes: `[batch, channels, d, h, w]` in and out.
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let channels = x.dims()[1];
        // The small constant inside the root keeps its gradient finite on an all-zero channel
        // (a masked-out region in pretraining).
        let norm = (x.clone().square().sum_dims(&[2, 3, 4]) + 1e-12).sqrt();
        let relative = norm.clone() / (norm.mean_dim(1) + 1e-6);
        let gamma = self.gamma.val().reshape([1, channels, 1, 1, 1]);
        let beta = self.beta.val().reshape([1, channels, 1, 1, 1]);
        x.clone() + gamma * (x * relative) + beta
    }
}

/// A depthwise convolution (one filter per channel), 'same' padding, with bias; 2D or 3D.
#[derive(Module, Debug)]
pub enum DepthwiseConvNd {
    /// Weight `[channels, 1, kh, kw]`.
    D2(Conv2d),
    /// Weight `[channels, 1, kd, kh, kw]`.
    D3(Conv3d),
}

impl DepthwiseConvNd {
    /// ConvNeXt's initialisation (normal, std 0.02; bias zero). `kernel` has one odd value per
    /// spatial axis.
    pub fn new(spatial_dims: SpatialDims, channels: usize, kernel: &[usize], device: &Device) -> Self {
        let pad: Vec<usize> = kernel.iter().map(|k| (k - 1) / 2).collect();
        let init = Initializer::Normal { mean: 0.0, std: INIT_STD };
        match spatial_dims {
            SpatialDims::D2 => DepthwiseConvNd::D2(
                Conv2dConfig::new([channels, channels], [kernel[0], kernel[1]])
                    .with_groups(channels)
                    .with_padding(PaddingConfig2d::Explicit(pad[0], pad[1], pad[0], pad[1]))
                    .with_initializer(init)
                    .init(device),
            ),
            SpatialDims::D3 => DepthwiseConvNd::D3(
                Conv3dConfig::new([channels, channels], [kernel[0], kernel[1], kernel[2]])
                    .with_groups(channels)
                    .with_padding(PaddingConfig3d::Explicit(pad[0], pad[1], pad[2]))
                    .with_initializer(init)
                    .init(device),
            ),
        }
    }

    /// Shapes: `[batch, channels, d, h, w]` in and out (`d = 1` for 2D).
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        match self {
            DepthwiseConvNd::D2(conv) => on_2d(x, |x| conv.forward(x)),
            DepthwiseConvNd::D3(conv) => conv.forward(x),
        }
    }
}

/// One ConvNeXt V2 block (see the module documentation).
#[derive(Module, Debug)]
pub struct ConvNeXtV2Block {
    pub depthwise: DepthwiseConvNd,
    pub norm: ChannelLayerNorm,
    /// Pointwise convolution to the MLP width.
    pub expand: ConvNd,
    pub grn: GlobalResponseNorm,
    /// Pointwise convolution back to the stage width.
    pub project: ConvNd,
    /// Drop path: a dropout applied to a `[batch, 1, 1, 1, 1]` tensor of ones gives each
    /// sample's keep mask, scaled, in training only (no parameters).
    pub drop_path: Option<Dropout>,
}

impl ConvNeXtV2Block {
    /// Shapes: `[batch, channels, d, h, w]` in and out.
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let residual = x.clone();
        let x = self.norm.forward(self.depthwise.forward(x));
        let x = self.grn.forward(gelu(self.expand.forward(x)));
        let branch = self.project.forward(x);
        match &self.drop_path {
            Some(drop_path) => {
                let keep = drop_path.forward(Tensor::<5>::ones([branch.dims()[0], 1, 1, 1, 1], &branch.device()));
                residual + branch * keep
            }
            None => residual + branch,
        }
    }
}

/// What opens a stage: the stem (conv + norm) or a down-sampling layer (norm + conv).
#[derive(Module, Debug)]
pub struct StageEntry {
    pub norm_before: Option<ChannelLayerNorm>,
    pub conv: ConvNd,
    pub norm_after: Option<ChannelLayerNorm>,
}

impl StageEntry {
    fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let x = match &self.norm_before {
            Some(norm) => norm.forward(x),
            None => x,
        };
        let x = self.conv.forward(x);
        match &self.norm_after {
            Some(norm) => norm.forward(x),
            None => x,
        }
    }
}

/// One encoder stage: its entry layer and its blocks.
#[derive(Module, Debug)]
pub struct ConvNeXtV2Stage {
    pub entry: StageEntry,
    pub blocks: Vec<ConvNeXtV2Block>,
}

impl ConvNeXtV2Stage {
    /// Shapes: `[batch, in, d, h, w]` -> `[batch, width, d / sd, h / sh, w / sw]`.
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        self.blocks.iter().fold(self.entry.forward(x), |x, block| block.forward(x))
    }
}

/// The ConvNeXt V2 encoder; build it with [`ConvNeXtV2EncoderConfig::init`].
#[derive(Module, Debug)]
pub struct ConvNeXtV2Encoder {
    /// Stages, full resolution first.
    pub stages: Vec<ConvNeXtV2Stage>,
}

impl ConvNeXtV2Encoder {
    /// Returns the output of every stage (the skips), full resolution first, as
    /// [`PlainConvEncoder::forward`](super::PlainConvEncoder::forward).
    pub fn forward(&self, x: Tensor<5>) -> Vec<Tensor<5>> {
        self.forward_masked(x, |_, features| features)
    }

    /// [`forward`](Self::forward) with each stage's output passed through `after_stage(stage,
    /// features)` before the next stage sees it (masked-autoencoder pretraining zeroes the
    /// masked patches there, so no information flows out of them across stages).
    pub fn forward_masked(&self, x: Tensor<5>, mut after_stage: impl FnMut(usize, Tensor<5>) -> Tensor<5>) -> Vec<Tensor<5>> {
        let mut skips = Vec::with_capacity(self.stages.len());
        let mut x = x;
        for (index, stage) in self.stages.iter().enumerate() {
            x = after_stage(index, stage.forward(x));
            skips.push(x.clone());
        }
        skips
    }

    /// Number of input channels, from the stem's weight.
    pub fn in_channels(&self) -> usize {
        self.stages[0].entry.conv.in_channels()
    }

    /// Width of the last stage.
    pub fn out_channels(&self) -> usize {
        self.stages.last().expect("an encoder has stages").entry.conv.out_channels()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    fn device() -> Device {
        Device::flex()
    }

    fn values(x: Tensor<5>) -> Vec<f32> {
        x.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn grn_starts_as_the_identity_and_rescales_by_relative_channel_norm() {
        let device = device();
        let x = Tensor::<5>::random([2, 3, 1, 4, 5], Distribution::Normal(0.0, 1.0), &device);
        let mut grn = GlobalResponseNorm::new(3, &device);
        assert_eq!(values(grn.forward(x.clone())), values(x.clone()));
        // gamma = 1, beta = 0: y = x (1 + n_c) with n_c = |x_c| / mean_c |x_c|.
        grn.gamma = Param::from_tensor(Tensor::ones([3], &device));
        let x = Tensor::<5>::from_data(TensorData::new(vec![3.0f32, 4.0, 0.0, 1.0, 0.0, 0.0], [1, 3, 1, 1, 2]), &device);
        // Channel norms 5, 1, 0; mean 2: relative 2.5, 0.5, 0.
        let y = values(grn.forward(x));
        let expected = [3.0 * 3.5, 4.0 * 3.5, 0.0, 1.0 * 1.5, 0.0, 0.0];
        for (a, b) in y.iter().zip(expected) {
            assert!((a - b).abs() < 1e-4, "{y:?}");
        }
    }

    #[test]
    fn channel_layer_norm_normalises_each_voxel_over_channels() {
        let device = device();
        let norm = ChannelLayerNorm::new(4, 1e-6, &device);
        let x = Tensor::<5>::random([2, 4, 2, 3, 3], Distribution::Normal(3.0, 2.0), &device);
        let y = norm.forward(x);
        let mean = values(y.clone().mean_dim(1));
        let var = values(y.square().mean_dim(1));
        assert!(mean.iter().all(|m| m.abs() < 1e-4), "{mean:?}");
        assert!(var.iter().all(|v| (v - 1.0).abs() < 1e-3), "{var:?}");
    }

    #[test]
    fn drop_path_skips_whole_samples_in_training_only() {
        let device = Device::flex();
        let config = ConvNeXtV2EncoderConfig::new(vec![1]).with_depthwise_kernel(3).with_drop_path(Some(0.5));
        config.validate(1).unwrap();
        let training = device.clone().autodiff();
        let encoder = config.init(SpatialDims::D2, 1, &[4], &[vec![1, 1]], &[vec![3, 3]], &training);
        let block = &encoder.stages[0].blocks[0];
        assert!(block.drop_path.is_some(), "a single block gets the full rate");
        let x = Tensor::<5>::random([64, 4, 1, 5, 5], Distribution::Normal(0.0, 1.0), &training);
        // Without drop path, the branch alone: out - x.
        let mut plain = block.clone();
        plain.drop_path = None;
        let branch = (plain.forward(x.clone()) - x.clone()).into_data().try_to_vec::<f32>().unwrap();
        let dropped = (block.forward(x.clone()) - x).into_data().try_to_vec::<f32>().unwrap();
        let per_sample = 4 * 25;
        let (mut skipped, mut doubled) = (0, 0);
        for b in 0..64 {
            let range = b * per_sample..(b + 1) * per_sample;
            if dropped[range.clone()].iter().all(|&v| v == 0.0) {
                skipped += 1;
            } else {
                assert!(range.clone().all(|i| (dropped[i] - 2.0 * branch[i]).abs() < 1e-4), "a kept branch is scaled by 1 / (1 - 0.5)");
                doubled += 1;
            }
        }
        assert!(skipped > 10 && doubled > 10, "skipped {skipped}, kept {doubled} of 64");
        // Prediction (no autodiff): the plain block.
        let inference = config.init(SpatialDims::D2, 1, &[4], &[vec![1, 1]], &[vec![3, 3]], &device);
        let mut plain = inference.stages[0].blocks[0].clone();
        let y = Tensor::<5>::random([2, 4, 1, 5, 5], Distribution::Normal(0.0, 1.0), &device);
        let with = inference.stages[0].blocks[0].forward(y.clone()).into_data();
        plain.drop_path = None;
        assert_eq!(with, plain.forward(y).into_data());
        assert!(ConvNeXtV2EncoderConfig::new(vec![1]).with_drop_path(Some(1.0)).validate(1).is_err());
    }

    #[test]
    fn blocks_keep_shapes_and_stages_follow_the_plan_strides() {
        let device = device();
        assert_eq!(ConvNeXtV2EncoderConfig::for_stages(4).blocks_per_stage, vec![0, 0, 2, 2]);
        let config = ConvNeXtV2EncoderConfig::new(vec![1, 1, 2]);
        let strides = vec![vec![1, 1], vec![2, 2], vec![2, 2]];
        let kernels = vec![vec![3, 3]; 3];
        let encoder = config.init(SpatialDims::D2, 2, &[4, 8, 16], &strides, &kernels, &device);
        assert_eq!((encoder.in_channels(), encoder.out_channels()), (2, 16));
        let x = Tensor::<5>::random([2, 2, 1, 16, 12], Distribution::Normal(0.0, 1.0), &device);
        let shapes: Vec<[usize; 5]> = encoder.forward(x).iter().map(|s| s.dims()).collect();
        assert_eq!(shapes, vec![[2, 4, 1, 16, 12], [2, 8, 1, 8, 6], [2, 16, 1, 4, 3]]);
        let block = &encoder.stages[2].blocks[0];
        let DepthwiseConvNd::D2(dw) = &block.depthwise else { panic!("2D") };
        assert_eq!(dw.weight.lazy_shape().dims(), [16, 1, 7, 7]);
        assert_eq!(block.expand.out_channels(), 64, "MLP ratio 4");
    }

    #[test]
    fn anisotropic_3d_stages_do_not_convolve_the_thick_axis() {
        let device = device();
        let config = ConvNeXtV2EncoderConfig::new(vec![1, 1]);
        let strides = vec![vec![1, 1, 1], vec![1, 2, 2]];
        let kernels = vec![vec![1, 3, 3], vec![3, 3, 3]];
        let encoder = config.init(SpatialDims::D3, 1, &[4, 8], &strides, &kernels, &device);
        let DepthwiseConvNd::D3(dw) = &encoder.stages[0].blocks[0].depthwise else { panic!("3D") };
        assert_eq!(dw.weight.lazy_shape().dims(), [4, 1, 1, 7, 7], "kernel 1 along an axis the plan does not convolve");
        let x = Tensor::<5>::random([1, 1, 3, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let shapes: Vec<[usize; 5]> = encoder.forward(x.clone()).iter().map(|s| s.dims()).collect();
        assert_eq!(shapes, vec![[1, 4, 3, 8, 8], [1, 8, 3, 4, 4]]);
        // No convolution of stage 0 mixes slices (GRN, a global statistic, starts as the
        // identity): changing slice 2 leaves slice 0's features unchanged.
        let mut changed = values(x.clone());
        for v in &mut changed[2 * 64..] {
            *v += 1.0;
        }
        let changed = Tensor::<5>::from_data(TensorData::new(changed, [1, 1, 3, 8, 8]), &device);
        let a = values(encoder.forward(x)[0].clone().slice([0..1, 0..4, 0..1, 0..8, 0..8]));
        let b = values(encoder.forward(changed)[0].clone().slice([0..1, 0..4, 0..1, 0..8, 0..8]));
        assert_eq!(a, b);
    }

    #[test]
    fn invalid_settings_are_refused() {
        assert!(ConvNeXtV2EncoderConfig::new(vec![1, 1]).validate(3).is_err());
        assert!(ConvNeXtV2EncoderConfig::new(vec![1]).with_depthwise_kernel(6).validate(1).is_err());
        assert!(ConvNeXtV2EncoderConfig::new(vec![1]).with_mlp_ratio(0).validate(1).is_err());
        assert!(ConvNeXtV2EncoderConfig::new(vec![1]).validate(1).is_ok());
    }
}
