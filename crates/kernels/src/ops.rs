//! The kernels as a burn backend extension: implemented for `Flex` (forward) and for
//! `Autodiff<Flex>` (forward + hand-written backward registered on burn's autodiff graph).
//!
//! burn 0.22 routes an extension call at run time through `Dispatch`: the tensors' device picks
//! the implementation. Only flex is listed; callers check [`crate::supports`] first and use
//! burn's own layers on any other device.

use std::borrow::Cow;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, Flex, TensorMetadata};
use burn::tensor::{Shape, TensorData};

use crate::conv_path;
use crate::cpu::{self, ConvGeometry, NormStats, UpGeometry};

/// Stride and symmetric padding of a convolution, per spatial axis `[d, h, w]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvSpec {
    /// Stride per axis.
    pub stride: [usize; 3],
    /// Zero padding on both sides, per axis.
    pub padding: [usize; 3],
}

/// Instance norm + leaky ReLU hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormActSpec {
    /// Added to the variance.
    pub epsilon: f64,
    /// Leaky ReLU slope for negative inputs.
    pub slope: f64,
}

/// The U-Net's hot operations. Shapes are canonical 5D: `[batch, channels, d, h, w]`.
#[backend_extension(Flex, Autodiff)]
pub trait UNetKernels: Backend {
    /// Convolution; `weight` `[out, in, kd, kh, kw]`, `bias` `[out]`.
    fn unet_conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        spec: ConvSpec,
    ) -> FloatTensor<Self>;

    /// Transposed convolution with kernel = stride; `weight` `[in, out, sd, sh, sw]`, `bias` `[out]`.
    fn unet_conv_transpose_up(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>)
    -> FloatTensor<Self>;

    /// Instance norm (affine) followed by leaky ReLU; `gamma`, `beta` `[channels]`.
    fn unet_instance_norm_leaky_relu(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        spec: NormActSpec,
    ) -> FloatTensor<Self>;
}

/// The tensor's values as a contiguous f32 slice (copied only when strided).
fn values(tensor: &FlexTensor) -> Cow<'_, [f32]> {
    match tensor.as_slice::<f32>() {
        Some(slice) => Cow::Borrowed(slice),
        None => Cow::Owned(tensor.to_contiguous().as_slice::<f32>().expect("contiguous f32 after copy").to_vec()),
    }
}

fn tensor(values: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.into()))
}

fn dims5(tensor: &FlexTensor, what: &str) -> [usize; 5] {
    let shape = tensor.shape();
    assert_eq!(shape.num_dims(), 5, "{what} must be 5D [batch, channels, d, h, w], got {shape:?}");
    std::array::from_fn(|i| shape[i])
}

fn conv_geometry(x: &FlexTensor, weight: &FlexTensor, spec: ConvSpec) -> ConvGeometry {
    let [batch, in_channels, d, h, w] = dims5(x, "conv input");
    let [out_channels, weight_in, kd, kh, kw] = dims5(weight, "conv weight");
    assert_eq!(weight_in, in_channels, "conv weight expects {weight_in} input channels, got {in_channels}");
    ConvGeometry {
        batch,
        in_channels,
        out_channels,
        input: [d, h, w],
        kernel: [kd, kh, kw],
        stride: spec.stride,
        padding: spec.padding,
    }
}

fn up_geometry(x: &FlexTensor, weight: &FlexTensor) -> UpGeometry {
    let [batch, in_channels, d, h, w] = dims5(x, "transposed conv input");
    let [weight_in, out_channels, sd, sh, sw] = dims5(weight, "transposed conv weight");
    assert_eq!(weight_in, in_channels, "transposed conv weight expects {weight_in} input channels, got {in_channels}");
    UpGeometry { batch, in_channels, out_channels, input: [d, h, w], stride: [sd, sh, sw] }
}

fn conv_output_shape(geo: &ConvGeometry) -> [usize; 5] {
    let [d, h, w] = geo.output();
    [geo.batch, geo.out_channels, d, h, w]
}

fn up_output_shape(geo: &UpGeometry) -> [usize; 5] {
    let [d, h, w] = geo.output();
    [geo.batch, geo.out_channels, d, h, w]
}

/// Values per `(batch, channel)` plane and the channel count of a norm input.
fn planes(x: &FlexTensor) -> (usize, usize) {
    let shape = x.shape();
    assert!(shape.num_dims() >= 3, "instance norm input must be [batch, channels, ...], got {shape:?}");
    (shape[1], (2..shape.num_dims()).map(|i| shape[i]).product())
}

fn norm_forward(x: &FlexTensor, gamma: &FlexTensor, beta: &FlexTensor, spec: NormActSpec) -> (FlexTensor, NormStats) {
    let (channels, voxels) = planes(x);
    let gamma = values(gamma);
    assert_eq!(gamma.len(), channels, "instance norm has {} scales for {channels} channels", gamma.len());
    let (y, stats) =
        cpu::instance_norm_leaky_relu_forward(&values(x), &gamma, &values(beta), voxels, spec.epsilon, spec.slope as f32);
    (tensor(y, x.shape()), stats)
}

impl UNetKernels for Flex {
    fn unet_conv(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, spec: ConvSpec) -> FlexTensor {
        let geo = conv_geometry(&x, &weight, spec);
        let y = conv_path::conv_forward(&values(&x), &values(&weight), Some(&values(&bias)), &geo);
        tensor(y, conv_output_shape(&geo))
    }

    fn unet_conv_transpose_up(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        let geo = up_geometry(&x, &weight);
        let y = cpu::conv_transpose_up_forward(&values(&x), &values(&weight), Some(&values(&bias)), &geo);
        tensor(y, up_output_shape(&geo))
    }

    fn unet_instance_norm_leaky_relu(x: FlexTensor, gamma: FlexTensor, beta: FlexTensor, spec: NormActSpec) -> FlexTensor {
        norm_forward(&x, &gamma, &beta, spec).0
    }
}

/// Registers the gradients a backward pass computed for the parents that need one.
fn register(grads: &mut Gradients, parents: [Option<burn::backend::autodiff::NodeId>; 3], values: [Option<FlexTensor>; 3]) {
    for (parent, value) in parents.into_iter().zip(values) {
        if let (Some(id), Some(value)) = (parent, value) {
            grads.register::<Flex>(id, value);
        }
    }
}

#[derive(Debug)]
struct ConvBackward;

impl Backward<Flex, 3> for ConvBackward {
    /// Input, weight, geometry.
    type State = (FlexTensor, FlexTensor, ConvGeometry);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, weight, geo) = ops.state;
        let parents = ops.parents.map(|p| p.map(|node| node.id));
        let want = parents.map(|p| p.is_some());
        let g = conv_path::conv_backward(&values(&x), &values(&weight), &values(&dy), &geo, want);
        register(
            grads,
            parents,
            [
                g.input.map(|v| tensor(v, x.shape())),
                g.weight.map(|v| tensor(v, weight.shape())),
                g.bias.map(|v| tensor(v, [geo.out_channels])),
            ],
        );
    }
}

#[derive(Debug)]
struct ConvTransposeUpBackward;

impl Backward<Flex, 3> for ConvTransposeUpBackward {
    /// Input, weight, geometry.
    type State = (FlexTensor, FlexTensor, UpGeometry);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, weight, geo) = ops.state;
        let parents = ops.parents.map(|p| p.map(|node| node.id));
        let want = parents.map(|p| p.is_some());
        let g = cpu::conv_transpose_up_backward(&values(&x), &values(&weight), &values(&dy), &geo, want);
        register(
            grads,
            parents,
            [
                g.input.map(|v| tensor(v, x.shape())),
                g.weight.map(|v| tensor(v, weight.shape())),
                g.bias.map(|v| tensor(v, [geo.out_channels])),
            ],
        );
    }
}

#[derive(Debug)]
struct NormActBackward;

impl Backward<Flex, 3> for NormActBackward {
    /// Input, gamma, beta, plane statistics, spec.
    type State = (FlexTensor, FlexTensor, FlexTensor, std::sync::Arc<NormStats>, NormActSpec);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, gamma, beta, stats, spec) = ops.state;
        let parents = ops.parents.map(|p| p.map(|node| node.id));
        let (_, voxels) = planes(&x);
        let (dx, dgamma, dbeta) = cpu::instance_norm_leaky_relu_backward(
            &values(&x),
            &values(&gamma),
            &values(&beta),
            &stats,
            &values(&dy),
            voxels,
            spec.slope as f32,
        );
        let channels = dgamma.len();
        register(
            grads,
            parents,
            [Some(tensor(dx, x.shape())), Some(tensor(dgamma, [channels])), Some(tensor(dbeta, [channels]))],
        );
    }
}

impl<C: CheckpointStrategy> UNetKernels for Autodiff<Flex, C> {
    fn unet_conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        spec: ConvSpec,
    ) -> FloatTensor<Self> {
        match ConvBackward.prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (x, weight) = (x.into_primitive(), weight.into_primitive());
                let geo = conv_geometry(&x, &weight, spec);
                let y = Flex::unet_conv(x.clone(), weight.clone(), bias.into_primitive(), spec);
                prep.finish((x, weight, geo), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(Flex::unet_conv(x.into_primitive(), weight.into_primitive(), bias.into_primitive(), spec))
            }
        }
    }

    fn unet_conv_transpose_up(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        match ConvTransposeUpBackward.prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (x, weight) = (x.into_primitive(), weight.into_primitive());
                let geo = up_geometry(&x, &weight);
                let y = Flex::unet_conv_transpose_up(x.clone(), weight.clone(), bias.into_primitive());
                prep.finish((x, weight, geo), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::unet_conv_transpose_up(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
            )),
        }
    }

    fn unet_instance_norm_leaky_relu(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        spec: NormActSpec,
    ) -> FloatTensor<Self> {
        match NormActBackward.prepare::<C>([x.node(), gamma.node(), beta.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (x, gamma, beta) = (x.into_primitive(), gamma.into_primitive(), beta.into_primitive());
                let (y, stats) = norm_forward(&x, &gamma, &beta, spec);
                prep.finish((x, gamma, beta, std::sync::Arc::new(stats), spec), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::unet_instance_norm_leaky_relu(
                x.into_primitive(),
                gamma.into_primitive(),
                beta.into_primitive(),
                spec,
            )),
        }
    }
}
