//! nnU-Net's conv block: [`ConvNormAct`] (conv -> instance norm (affine) -> leaky ReLU) and
//! [`StackedConvBlocks`], the unit a faster implementation replaces: built from
//! [`StackedConvBlocksConfig`], it maps `[batch, in_channels, d, h, w]` to
//! `[batch, out_channels, d / stride_d, h / stride_h, w / stride_w]`.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{InstanceNorm, InstanceNormConfig, LeakyRelu, LeakyReluConfig};
use burn::tensor::{Device, Tensor};

use super::conv::ConvNd;
use super::fast_kernels::{self, fast};
use super::spatial::SpatialDims;

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
    /// Dilation per spatial axis (atrous convolution); `None` means 1 along every axis.
    pub dilation: Option<Vec<usize>>,
}

impl ConvNormActConfig {
    /// Builds the block.
    pub fn init(&self, device: &Device) -> ConvNormAct {
        let dilation = self.dilation.clone().unwrap_or_else(|| vec![1; self.spatial_dims.count()]);
        ConvNormAct {
            conv: ConvNd::new_dilated(
                self.spatial_dims,
                self.in_channels,
                self.out_channels,
                &self.kernel_size,
                &self.stride,
                &dilation,
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
