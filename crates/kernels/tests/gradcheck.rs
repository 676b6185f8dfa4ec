//! Every kernel against burn's reference operations on random inputs: forward values and the
//! gradients of input, weight and bias, relative error (L2 norm of the difference over the L2
//! norm of the reference) below 1e-4 in f32.

use burn::tensor::activation::leaky_relu;
use burn::tensor::module::{conv3d, conv_transpose3d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::{Device, Distribution, Tensor};
use spineseg_kernels::{conv, conv_transpose_up, instance_norm_leaky_relu, supports, ConvSpec, NormActSpec};

const TOLERANCE: f64 = 1e-4;

fn flat<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 tensor")
}

fn relative_error<const D: usize>(ours: Tensor<D>, reference: Tensor<D>, what: &str) -> f64 {
    assert_eq!(ours.dims(), reference.dims(), "{what}: shapes differ");
    let (a, b) = (flat(ours), flat(reference));
    let diff: f64 = a.iter().zip(&b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>().sqrt();
    let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>().sqrt();
    assert!(norm > 0.0, "{what}: reference is all zero, the check would be empty");
    diff / norm
}

fn assert_close<const D: usize>(ours: Tensor<D>, reference: Tensor<D>, what: &str) {
    let error = relative_error(ours, reference, what);
    assert!(error < TOLERANCE, "{what}: relative error {error:e} >= {TOLERANCE:e}");
}

fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

/// Runs `ours` and `reference` on the same leaves, a random linear functional of the outputs as the
/// loss, and compares outputs and the gradients of every leaf.
fn check<const DX: usize, const DW: usize, const DO: usize>(
    name: &str,
    x: Tensor<DX>,
    weight: Tensor<DW>,
    bias: Tensor<1>,
    ours: impl Fn(Tensor<DX>, Tensor<DW>, Tensor<1>) -> Tensor<DO>,
    reference: impl Fn(Tensor<DX>, Tensor<DW>, Tensor<1>) -> Tensor<DO>,
) {
    let device = Device::flex().autodiff();
    let leaves = || {
        (
            Tensor::<DX>::from_data(x.to_data(), &device).require_grad(),
            Tensor::<DW>::from_data(weight.to_data(), &device).require_grad(),
            Tensor::<1>::from_data(bias.to_data(), &device).require_grad(),
        )
    };
    let (xa, wa, ba) = leaves();
    let (xb, wb, bb) = leaves();
    let ya = ours(xa.clone(), wa.clone(), ba.clone());
    let yb = reference(xb.clone(), wb.clone(), bb.clone());
    let probe = Tensor::<DO>::from_data(random(yb.dims(), &Device::flex()).to_data(), &device);
    let ga = (ya.clone() * probe.clone()).sum().backward();
    let gb = (yb.clone() * probe).sum().backward();
    assert_close(ya.detach(), yb.detach(), &format!("{name}: output"));
    assert_close(xa.grad(&ga).expect("input grad"), xb.grad(&gb).expect("ref input grad"), &format!("{name}: d input"));
    assert_close(wa.grad(&ga).expect("weight grad"), wb.grad(&gb).expect("ref weight grad"), &format!("{name}: d weight"));
    assert_close(ba.grad(&ga).expect("bias grad"), bb.grad(&gb).expect("ref bias grad"), &format!("{name}: d bias"));
}

fn check_conv(batch: usize, channels: [usize; 2], input: [usize; 3], kernel: [usize; 3], stride: [usize; 3]) {
    let device = Device::flex();
    let padding = kernel.map(|k| (k - 1) / 2);
    let x = random([batch, channels[0], input[0], input[1], input[2]], &device);
    let weight = random([channels[1], channels[0], kernel[0], kernel[1], kernel[2]], &device);
    let bias = random([channels[1]], &device);
    check(
        &format!("conv b{batch} c{channels:?} in{input:?} k{kernel:?} s{stride:?}"),
        x,
        weight,
        bias,
        |x, w, b| conv(x, w, b, ConvSpec { stride, padding }),
        |x, w, b| conv3d(x, w, Some(b), ConvOptions::new(stride, padding, [1, 1, 1], 1)),
    );
}

#[test]
fn kernels_run_on_flex_in_f32() {
    assert!(supports(&Device::flex(), burn::tensor::DType::F32));
    assert!(supports(&Device::flex().autodiff(), burn::tensor::DType::F32));
    assert!(!supports(&Device::flex(), burn::tensor::DType::F64));
}

#[test]
fn conv_2d_3x3_same_padding_matches_burn() {
    check_conv(2, [3, 5], [1, 9, 7], [1, 3, 3], [1, 1, 1]);
}

#[test]
fn conv_2d_strided_odd_size_matches_burn() {
    check_conv(3, [4, 6], [1, 11, 8], [1, 3, 3], [1, 2, 2]);
}

#[test]
fn conv_3d_matches_burn() {
    check_conv(2, [2, 4], [5, 6, 7], [3, 3, 3], [1, 1, 1]);
    check_conv(1, [3, 2], [6, 7, 5], [3, 3, 3], [2, 2, 1]);
}

#[test]
fn conv_pointwise_matches_burn() {
    check_conv(2, [8, 3], [1, 6, 5], [1, 1, 1], [1, 1, 1]);
}

#[test]
fn conv_anisotropic_kernel_matches_burn() {
    // nnU-Net's 3D plans use 1x3x3 kernels on thick-slice axes.
    check_conv(2, [3, 4], [4, 8, 6], [1, 3, 3], [1, 2, 2]);
}

#[test]
fn conv_transpose_up_matches_burn() {
    for (input, stride) in [([1, 5, 4], [1, 2, 2]), ([3, 4, 5], [2, 2, 2]), ([2, 3, 4], [1, 2, 2])] {
        let device = Device::flex();
        let x = random([2, 6, input[0], input[1], input[2]], &device);
        let weight = random([6, 3, stride[0], stride[1], stride[2]], &device);
        let bias = random([3], &device);
        check(
            &format!("transposed conv in{input:?} s{stride:?}"),
            x,
            weight,
            bias,
            conv_transpose_up,
            |x, w, b| conv_transpose3d(x, w, Some(b), ConvTransposeOptions::new(stride, [0; 3], [0; 3], [1; 3], 1)),
        );
    }
}

/// Instance norm + leaky ReLU as burn ops: statistics over all spatial axes of each plane.
fn reference_norm_act(x: Tensor<5>, gamma: Tensor<1>, beta: Tensor<1>, spec: NormActSpec) -> Tensor<5> {
    let [b, c, d, h, w] = x.dims();
    let planes = x.reshape([b, c, d * h * w]);
    let mean = planes.clone().mean_dim(2);
    let centred = planes - mean;
    let var = centred.clone().powi_scalar(2).mean_dim(2);
    let normalised = centred / (var + spec.epsilon).sqrt();
    let affine = normalised * gamma.reshape([1, c, 1]) + beta.reshape([1, c, 1]);
    leaky_relu(affine, spec.slope).reshape([b, c, d, h, w])
}

#[test]
fn instance_norm_leaky_relu_matches_burn() {
    let spec = NormActSpec { epsilon: 1e-5, slope: 0.01 };
    for shape in [[2, 3, 1, 9, 7], [3, 4, 3, 5, 6]] {
        let device = Device::flex();
        // Shifted and scaled input so that the statistics matter.
        let x = random(shape, &device) * 3.0 + 1.5;
        let gamma = random([shape[1]], &device);
        let beta = random([shape[1]], &device) * 0.5;
        check(
            &format!("norm + act {shape:?}"),
            x,
            gamma,
            beta,
            |x, g, b| instance_norm_leaky_relu(x, g, b, spec),
            |x, g, b| reference_norm_act(x, g, b, spec),
        );
    }
}

#[test]
fn kernels_work_without_autodiff_and_with_constant_inputs() {
    // Plain device: forward only.
    let device = Device::flex();
    let x = random([1, 2, 1, 6, 6], &device);
    let w = random([3, 2, 1, 3, 3], &device);
    let b = random([3], &device);
    let spec = ConvSpec { stride: [1, 1, 1], padding: [0, 1, 1] };
    let plain = conv(x.clone(), w.clone(), b.clone(), spec);
    let reference = conv3d(x.clone(), w.clone(), Some(b.clone()), ConvOptions::new([1; 3], [0, 1, 1], [1; 3], 1));
    assert_close(plain, reference, "plain-device conv");

    // Autodiff device with a constant input (no gradient asked for it): the weight still gets one.
    let ad = Device::flex().autodiff();
    let x = Tensor::<5>::from_data(x.to_data(), &ad);
    let w = Tensor::<5>::from_data(w.to_data(), &ad).require_grad();
    let b = Tensor::<1>::from_data(b.to_data(), &ad).require_grad();
    let grads = conv(x.clone(), w.clone(), b, spec).sum().backward();
    assert!(w.grad(&grads).is_some());
    assert!(x.grad(&grads).is_none());
}

#[test]
fn conv_implicit_gemm_path_matches_burn() {
    // Stride 1, a 3D kernel and at least 8 input (forward, weight gradient) or output (input
    // gradient) channels take the column-free path (`implicit_conv`): widths not a multiple of
    // 16, several bands per plane, one path without the other.
    check_conv(2, [8, 9], [4, 6, 7], [3, 3, 3], [1, 1, 1]);
    check_conv(1, [9, 8], [3, 70, 75], [3, 3, 3], [1, 1, 1]);
    check_conv(1, [16, 4], [3, 5, 4], [3, 3, 3], [1, 1, 1]);
    check_conv(1, [4, 16], [3, 5, 4], [3, 3, 3], [1, 1, 1]);
}

#[test]
fn conv_spanning_many_tiles_matches_burn() {
    // Many input channels make the column matrix tall, so a tile holds only a few hundred output
    // voxels: tiles start and end mid-line, and the last one is partial.
    check_conv(2, [64, 3], [6, 10, 12], [3, 3, 3], [1, 1, 1]);
    check_conv(2, [128, 4], [1, 20, 30], [1, 3, 3], [1, 1, 1]);
    check_conv(3, [128, 4], [1, 21, 31], [1, 3, 3], [1, 2, 2]);
}
