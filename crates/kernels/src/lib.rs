//! Fast CPU kernels for the U-Net's hot operations, with hand-written backward passes.
//!
//! burn 0.22's flex backend runs a convolution's weight gradient as a convolution whose kernel is
//! the whole output gradient (burn's generic lowering), which flex executes with a direct
//! small-channel loop: most of a training step went there (see docs/BENCHMARKS.md). This crate
//! replaces the three operations of a `PlainConvUNet` block:
//!
//! - [`conv`]: convolution by im2col + gemm; backward = one gemm for the weight, one gemm +
//!   col2im for the input, a reduction for the bias;
//! - [`conv_transpose_up`]: transposed convolution with kernel = stride (nnU-Net's up-sampling),
//!   a gemm plus a scatter (no overlap), and its exact adjoint;
//! - [`instance_norm_leaky_relu`]: instance norm (affine) and leaky ReLU fused into one pass each
//!   way, keeping only the input and two numbers per plane for the backward pass.
//!
//! They run on the flex device, with or without autodiff, in f32 ([`supports`]); the model uses
//! burn's own layers anywhere else (wgpu, other float types), with the same parameters.
//!
//! Invariant: each operation equals burn's reference composition (forward and gradients) to f32
//! rounding; `tests/gradcheck.rs` checks it on random inputs.

pub mod conv_path;
pub mod cpu;
pub mod implicit_conv;
mod ops;
pub mod simd;

use burn::backend::Dispatch;
use burn::tensor::{DType, Device, Tensor};

pub use ops::{ConvSpec, NormActSpec, UNetKernels};
pub use simd::{simd_paths, SimdPaths};

/// Whether the kernels can run tensors on `device` with element type `dtype`: the flex device
/// (autodiff or not) and f32.
pub fn supports(device: &Device, dtype: DType) -> bool {
    dtype == DType::F32 && device.clone().without_autodiff() == Device::flex()
}

/// Convolution with symmetric zero padding.
///
/// # Shapes
///
/// - `x`: `[batch, in, d, h, w]`; `weight`: `[out, in, kd, kh, kw]`; `bias`: `[out]`
/// - output: `[batch, out, (d + 2 pd - kd) / sd + 1, ...]`
pub fn conv(x: Tensor<5>, weight: Tensor<5>, bias: Tensor<1>, spec: ConvSpec) -> Tensor<5> {
    Tensor::from_dispatch(<Dispatch as UNetKernels>::unet_conv(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        spec,
    ))
}

/// Transposed convolution whose kernel equals its stride.
///
/// # Shapes
///
/// - `x`: `[batch, in, d, h, w]`; `weight`: `[in, out, sd, sh, sw]` (PyTorch's layout); `bias`: `[out]`
/// - output: `[batch, out, d * sd, h * sh, w * sw]`
pub fn conv_transpose_up(x: Tensor<5>, weight: Tensor<5>, bias: Tensor<1>) -> Tensor<5> {
    Tensor::from_dispatch(<Dispatch as UNetKernels>::unet_conv_transpose_up(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    ))
}

/// Instance norm with learnable scale and shift (biased variance, as PyTorch), then leaky ReLU.
///
/// # Shapes
///
/// - `x`: `[batch, channels, ...]` (any rank >= 3); `gamma`, `beta`: `[channels]`
/// - output: as `x`
pub fn instance_norm_leaky_relu<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    spec: NormActSpec,
) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as UNetKernels>::unet_instance_norm_leaky_relu(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        spec,
    ))
}
