//! The convolution's code path, chosen per call: [`crate::implicit_conv`] where it applies
//! (stride 1, a 3D kernel, enough channels), else [`crate::cpu`]'s im2col.

use crate::cpu::{conv_backward_im2col, conv_forward_im2col, ConvGeometry, ConvGrads};
use crate::implicit_conv;

/// Forward convolution. `x`: `[batch, in, d, h, w]`, `weight`: `[out, in, kd, kh, kw]`, `bias`:
/// `[out]`; returns `[batch, out, od, oh, ow]`. Stride-1 convolutions with a 3D kernel and enough
/// input channels run without a column matrix ([`crate::implicit_conv`]), the others by im2col.
pub fn conv_forward(x: &[f32], weight: &[f32], bias: Option<&[f32]>, geo: &ConvGeometry) -> Vec<f32> {
    if implicit_conv::applies(geo) {
        implicit_conv::conv_forward_implicit(x, weight, bias, geo)
    } else {
        conv_forward_im2col(x, weight, bias, geo)
    }
}

/// Backward pass of [`conv_forward`] for the output gradient `dy` (`[batch, out, od, oh, ow]`).
/// Only the gradients asked for (`want` = input, weight, bias) are computed. The input and
/// weight gradients of a stride-1 convolution with a 3D kernel run without a column matrix
/// ([`crate::implicit_conv`]).
pub fn conv_backward(x: &[f32], weight: &[f32], dy: &[f32], geo: &ConvGeometry, want: [bool; 3]) -> ConvGrads {
    let [want_input, want_weight, want_bias] = want;
    let implicit_input = want_input && implicit_conv::applies_to_input_gradient(geo);
    let implicit_weight = want_weight && implicit_conv::applies(geo);
    let rest = [want_input && !implicit_input, want_weight && !implicit_weight, want_bias];
    let mut grads = if rest.iter().any(|&w| w) {
        conv_backward_im2col(x, weight, dy, geo, rest)
    } else {
        ConvGrads { input: None, weight: None, bias: None }
    };
    if implicit_input {
        grads.input = Some(implicit_conv::conv_input_gradient_implicit(weight, dy, geo));
    }
    if implicit_weight {
        grads.weight = Some(implicit_conv::conv_weight_gradient_implicit(x, dy, geo));
    }
    grads
}
