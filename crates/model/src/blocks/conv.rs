//! [`ConvNd`] and [`ConvTransposeNd`]: burn's 2D or 3D convolution behind one type working on
//! the canonical 5D layout (see [`super::spatial`]), initialised like nnU-Net's
//! `InitWeights_He(1e-2)` (Kaiming-normal with the leaky ReLU slope, biases zero), and run by the
//! fast kernels where they apply (see [`super::fast_kernels`]).

use burn::module::Module;
use burn::nn::conv::{
    Conv2d, Conv2dConfig, Conv3d, Conv3dConfig, ConvTranspose2d, ConvTranspose2dConfig, ConvTranspose3d,
    ConvTranspose3dConfig,
};
use burn::nn::{Initializer, PaddingConfig2d, PaddingConfig3d};
use burn::tensor::{Device, Tensor};

use super::fast_kernels::{self, fast};
use super::spatial::SpatialDims;

/// nnU-Net's `InitWeights_He(neg_slope)`: PyTorch's `kaiming_normal_(a = neg_slope)`, i.e.
/// std = gain / sqrt(fan_in) with gain = sqrt(2 / (1 + a^2)).
fn he_normal(negative_slope: f64) -> Initializer {
    Initializer::KaimingNormal { gain: (2.0 / (1.0 + negative_slope * negative_slope)).sqrt(), fan_out_only: false }
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
        let ones = vec![1; spatial_dims.count()];
        Self::new_dilated(spatial_dims, in_channels, out_channels, kernel_size, stride, &ones, negative_slope, device)
    }

    /// [`new`](Self::new) with a dilation per spatial axis (atrous convolution, DeepLab); the
    /// padding, `dilation * (k - 1) / 2`, still keeps the size before striding. A dilated conv
    /// runs burn's layer (the fast kernels have no dilation).
    #[allow(clippy::too_many_arguments)]
    pub fn new_dilated(
        spatial_dims: SpatialDims,
        in_channels: usize,
        out_channels: usize,
        kernel_size: &[usize],
        stride: &[usize],
        dilation: &[usize],
        negative_slope: f64,
        device: &Device,
    ) -> Self {
        let pad: Vec<usize> = kernel_size.iter().zip(dilation).map(|(k, d)| d * (k - 1) / 2).collect();
        let zero_bias = || Some(Initializer::Zeros.init([out_channels], device));
        match spatial_dims {
            SpatialDims::D2 => {
                let mut conv = Conv2dConfig::new([in_channels, out_channels], [kernel_size[0], kernel_size[1]])
                    .with_stride([stride[0], stride[1]])
                    .with_dilation([dilation[0], dilation[1]])
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
                        .with_dilation([dilation[0], dilation[1], dilation[2]])
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

    /// Input channels, from the weight's shape (without initialising a lazy parameter).
    pub fn in_channels(&self) -> usize {
        match self {
            ConvNd::D2(conv) => conv.weight.lazy_shape()[1] * conv.groups,
            ConvNd::D3(conv) => conv.weight.lazy_shape()[1] * conv.groups,
        }
    }

    /// Output channels, from the weight's shape (without initialising a lazy parameter).
    pub fn out_channels(&self) -> usize {
        match self {
            ConvNd::D2(conv) => conv.weight.lazy_shape()[0],
            ConvNd::D3(conv) => conv.weight.lazy_shape()[0],
        }
    }

    /// Dilation per spatial axis of the canonical layout (`[1, dh, dw]` in 2D).
    pub fn dilation(&self) -> [usize; 3] {
        match self {
            ConvNd::D2(conv) => [1, conv.dilation[0], conv.dilation[1]],
            ConvNd::D3(conv) => conv.dilation,
        }
    }

    /// The weight as 5D and the bias, when the fast kernels can run `x` (see [`fast_kernels`]).
    fn fast_parameters(&self, x: &Tensor<5>) -> Option<(Tensor<5>, Tensor<1>)> {
        if !fast_kernels::applies(x) || self.dilation() != [1, 1, 1] {
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
pub(crate) fn on_2d(x: Tensor<5>, layer: impl FnOnce(Tensor<4>) -> Tensor<4>) -> Tensor<5> {
    let [batch, channels, depth, height, width] = x.dims();
    assert_eq!(depth, 1, "a 2D layer needs depth 1 in the canonical 5D layout");
    let y = layer(x.reshape([batch, channels, height, width]));
    let [batch, channels, height, width] = y.dims();
    y.reshape([batch, channels, 1, height, width])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> Device {
        Device::flex()
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

    #[test]
    fn a_dilated_conv_keeps_the_size_and_equals_the_zero_stuffed_kernel() {
        let device = device();
        let dilated = ConvNd::new_dilated(SpatialDims::D2, 2, 3, &[3, 3], &[1, 1], &[2, 1], 1e-2, &device);
        assert_eq!(dilated.dilation(), [1, 2, 1]);
        let ConvNd::D2(conv) = &dilated else { unreachable!() };
        // The same taps as a 5x3 kernel with zero rows between them (run by the fast kernels).
        let weight = conv.weight.val();
        let zeros = Tensor::<4>::zeros([3, 2, 1, 3], &device);
        let row = |i: usize| weight.clone().slice([0..3, 0..2, i..i + 1, 0..3]);
        let stuffed = Tensor::cat(vec![row(0), zeros.clone(), row(1), zeros, row(2)], 2);
        let mut plain = ConvNd::new(SpatialDims::D2, 2, 3, &[5, 3], &[1, 1], 1e-2, &device);
        let ConvNd::D2(inner) = &mut plain else { unreachable!() };
        inner.weight = burn::module::Param::from_tensor(stuffed);
        let x = Tensor::<5>::random([1, 2, 1, 7, 6], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let (a, b) = (dilated.forward(x.clone()), plain.forward(x));
        assert_eq!(a.dims(), [1, 3, 1, 7, 6]);
        let (a, b) = (a.into_data().try_to_vec::<f32>().unwrap(), b.into_data().try_to_vec::<f32>().unwrap());
        assert!(a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-5), "{a:?} != {b:?}");
    }
}
