//! SSHSNet's cross tri-attention (Meng et al., "Semi-supervised hybrid spine network",
//! arXiv 2203.12151): the fusion of a 2D network's features, computed slice by slice and
//! stacked along the slice axis, with a 3D network's features of the same shape.
//!
//! Both inputs are `[batch, channels, slices, height, width]`, slices along the thick (depth)
//! axis, the axis the 2D network does not see. Three branches, each a residual with a scale that
//! starts at 0, so a fresh module returns `cat(x2d, x3d)`, the plain concatenation the hybrid
//! ablation compares with:
//!
//! 1. **Spatial attention, 2D to 3D.** Queries and keys from the 2D features (1x1 maps to
//!    `channels / key_reduction`), values from the 2D features; the affinity is between in-plane
//!    positions, each position described by its features on every slice (so one in-plane
//!    affinity, `HW x HW`, serves all slices, as the authors' position attention does). The
//!    attended 2D features are added to the 3D features: the 2D network, trained on many more
//!    slices, tells the 3D network where things are in the plane.
//! 2. **Slice attention, 3D to 2D.** A `slices x slices` affinity of the 3D features (each slice
//!    described by all its features) mixes the 3D features along the slice axis; the result is
//!    added to the 2D features: the 3D network tells the 2D features which slices belong
//!    together.
//! 3. **Channel attention** on the concatenation (2D first): a `2C x 2C` affinity of 1x1 maps of
//!    the concatenation re-mixes its channels.
//!
//! Our choices where the authors' code differs: the affinities are scaled dot products
//! (`softmax(q k^T / sqrt(n))`, `n` the length of the dot product) where their code takes
//! `softmax(max(e) - e)` of unscaled energies in the slice and channel branches (DANet's channel
//! attention); unscaled energies over thousands of terms make a softmax one-hot, and the
//! inverted energies attend to the *least* similar slice. The channel branch's query and key
//! maps keep the full width, as theirs (`d = 1`).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};

/// Settings of a [`CrossTriAttention`].
#[derive(Config, Debug, PartialEq)]
pub struct CrossTriAttentionConfig {
    /// Channels of each input (the 2D and the 3D features have the same width).
    pub channels: usize,
    /// The spatial branch's queries and keys have `channels / key_reduction` channels (at least 1).
    #[config(default = 8)]
    pub key_reduction: usize,
}

impl CrossTriAttentionConfig {
    /// Width of the spatial branch's queries and keys.
    pub fn key_channels(&self) -> usize {
        (self.channels / self.key_reduction.max(1)).max(1)
    }

    /// Builds the module, every branch's scale at 0.
    pub fn init(&self, device: &Device) -> CrossTriAttention {
        let linear = |d_in: usize, d_out: usize| LinearConfig::new(d_in, d_out).init(device);
        let c = self.channels;
        let k = self.key_channels();
        let zero = || Param::from_tensor(Tensor::zeros([1], device));
        CrossTriAttention {
            spatial_query: linear(c, k),
            spatial_key: linear(c, k),
            spatial_value: linear(c, c),
            spatial_scale: zero(),
            slice_scale: zero(),
            channel_query: linear(2 * c, 2 * c),
            channel_key: linear(2 * c, 2 * c),
            channel_value: linear(2 * c, 2 * c),
            channel_scale: zero(),
        }
    }
}

/// The cross tri-attention module (see the module documentation).
#[derive(Module, Debug)]
pub struct CrossTriAttention {
    pub spatial_query: Linear,
    pub spatial_key: Linear,
    pub spatial_value: Linear,
    /// Scale of the spatial branch (2D to 3D), zero-initialised.
    pub spatial_scale: Param<Tensor<1>>,
    /// Scale of the slice branch (3D to 2D), zero-initialised.
    pub slice_scale: Param<Tensor<1>>,
    pub channel_query: Linear,
    pub channel_key: Linear,
    pub channel_value: Linear,
    /// Scale of the channel branch, zero-initialised.
    pub channel_scale: Param<Tensor<1>>,
}

/// `[b, c, d, h, w]` -> `[b, d*h*w, c]` (one row per position) for a per-position linear map.
fn positions_last(x: Tensor<5>) -> Tensor<3> {
    let [b, c, d, h, w] = x.dims();
    x.reshape([b, c, d * h * w]).swap_dims(1, 2)
}

/// Applies `linear` to the channels of every position: `[b, c, d, h, w]` -> `[b, d, h*w, c']`.
fn per_position(linear: &Linear, x: Tensor<5>) -> Tensor<4> {
    let [b, _, d, h, w] = x.dims();
    let y = linear.forward(positions_last(x));
    let c_out = y.dims()[2];
    y.reshape([b, d, h * w, c_out])
}

/// `softmax(q k^T / sqrt(n))` over the last axis; `q`, `k`: `[b, m, n]`.
fn affinity(q: Tensor<3>, k: Tensor<3>) -> Tensor<3> {
    let n = q.dims()[2].max(1) as f64;
    softmax(q.matmul(k.swap_dims(1, 2)).div_scalar(n.sqrt()), 2)
}

impl CrossTriAttention {
    /// The fused features, `cat(x2d', x3d')` after the three branches.
    ///
    /// # Shapes
    ///
    /// - `x2d`, `x3d`: `[batch, channels, slices, height, width]`, the same shape
    /// - output: `[batch, 2 * channels, slices, height, width]`, the 2D half first
    pub fn forward(&self, x2d: Tensor<5>, x3d: Tensor<5>) -> Tensor<5> {
        assert_eq!(x2d.dims(), x3d.dims(), "cross tri-attention: the 2D and 3D features must have the same shape");
        let x3d = x3d.clone() + self.spatial_scale.val().reshape([1, 1, 1, 1, 1]) * self.spatial(x2d.clone());
        let x2d = x2d + self.slice_scale.val().reshape([1, 1, 1, 1, 1]) * self.slices(x3d.clone());
        let joined = Tensor::cat(vec![x2d, x3d], 1);
        joined.clone() + self.channel_scale.val().reshape([1, 1, 1, 1, 1]) * self.channels(joined)
    }

    /// Branch 1: the 2D features attended over in-plane positions (before the scale).
    fn spatial(&self, x2d: Tensor<5>) -> Tensor<5> {
        let [b, c, d, h, w] = x2d.dims();
        // [b, d, hw, k] -> [b, hw, d*k]: an in-plane position is described on every slice.
        let by_position = |t: Tensor<4>| {
            let [b, d, hw, k] = t.dims();
            t.swap_dims(1, 2).reshape([b, hw, d * k])
        };
        let q = by_position(per_position(&self.spatial_query, x2d.clone()));
        let k = by_position(per_position(&self.spatial_key, x2d.clone()));
        let v = by_position(per_position(&self.spatial_value, x2d));
        let attended = affinity(q, k).matmul(v); // [b, hw, d*c]
        attended.reshape([b, h * w, d, c]).permute([0, 3, 2, 1]).reshape([b, c, d, h, w])
    }

    /// Branch 2: the 3D features mixed along the slice axis by their slice affinity.
    fn slices(&self, x3d: Tensor<5>) -> Tensor<5> {
        let [b, c, d, h, w] = x3d.dims();
        let by_slice = x3d.swap_dims(1, 2).reshape([b, d, c * h * w]);
        let mixed = affinity(by_slice.clone(), by_slice.clone()).matmul(by_slice); // [b, d, c*h*w]
        mixed.reshape([b, d, c, h, w]).swap_dims(1, 2)
    }

    /// Branch 3: the concatenation's channels re-mixed by their affinity.
    fn channels(&self, joined: Tensor<5>) -> Tensor<5> {
        let [b, c, d, h, w] = joined.dims();
        let rows = positions_last(joined); // [b, n, c]
        let channel_rows = |linear: &Linear| linear.forward(rows.clone()).swap_dims(1, 2); // [b, c, n]
        let q = channel_rows(&self.channel_query);
        let k = channel_rows(&self.channel_key);
        let v = channel_rows(&self.channel_value);
        affinity(q, k).matmul(v).reshape([b, c, d, h, w])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData, Tolerance};

    fn device() -> Device {
        Device::flex()
    }

    fn random(shape: [usize; 5]) -> Tensor<5> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &device())
    }

    #[test]
    fn a_fresh_module_is_the_concatenation() {
        let device = device();
        let module = CrossTriAttentionConfig::new(8).init(&device);
        let x2d = random([2, 8, 3, 4, 5]);
        let x3d = random([2, 8, 3, 4, 5]);
        let fused = module.forward(x2d.clone(), x3d.clone());
        assert_eq!(fused.dims(), [2, 16, 3, 4, 5]);
        fused.into_data().assert_approx_eq::<f32>(&Tensor::cat(vec![x2d, x3d], 1).into_data(), Tolerance::default());
    }

    #[test]
    fn each_branch_changes_its_own_half() {
        let device = device();
        let x2d = random([1, 4, 3, 4, 4]);
        let x3d = random([1, 4, 3, 4, 4]);
        let halves = |module: &CrossTriAttention| {
            let fused = module.forward(x2d.clone(), x3d.clone());
            (fused.clone().narrow(1, 0, 4), fused.narrow(1, 4, 4))
        };
        let changed = |a: Tensor<5>, b: Tensor<5>| (a - b).abs().max().into_scalar::<f32>() > 1e-4;
        // The spatial branch adds to the 3D half only.
        let mut module = CrossTriAttentionConfig::new(4).init(&device);
        module.spatial_scale = Param::from_tensor(Tensor::ones([1], &device));
        let (two, three) = halves(&module);
        assert!(!changed(two, x2d.clone()) && changed(three, x3d.clone()));
        // The slice branch adds to the 2D half only.
        let mut module = CrossTriAttentionConfig::new(4).init(&device);
        module.slice_scale = Param::from_tensor(Tensor::ones([1], &device));
        let (two, three) = halves(&module);
        assert!(changed(two, x2d.clone()) && !changed(three, x3d.clone()));
    }

    #[test]
    fn slice_attention_mixes_only_along_the_slice_axis() {
        // Features constant in the plane stay constant in the plane after the slice branch: it
        // mixes whole slices, never positions within a slice.
        let device = device();
        let module = CrossTriAttentionConfig::new(2).init(&device);
        let per_slice = TensorData::new(vec![1.0f32, -2.0, 0.5, 3.0, 0.0, 1.0], [1, 2, 3, 1, 1]);
        let x3d = Tensor::<5>::from_data(per_slice, &device).expand([1, 2, 3, 4, 5]);
        let mixed = module.slices(x3d);
        let first = mixed.clone().narrow(3, 0, 1).narrow(4, 0, 1).expand([1, 2, 3, 4, 5]);
        mixed.into_data().assert_approx_eq::<f32>(&first.into_data(), Tolerance::default());
    }

    #[test]
    fn slice_attention_matches_a_hand_computed_softmax() {
        // One channel, one position, two slices with values a and b: slice i gets
        // sum_j softmax_j(x_i x_j) x_j (dot products of length 1, so no scaling).
        let device = device();
        let module = CrossTriAttentionConfig::new(1).init(&device);
        let (a, b) = (1.0f32, -0.5f32);
        let x3d = Tensor::<5>::from_data(TensorData::new(vec![a, b], [1, 1, 2, 1, 1]), &device);
        let expected = |x: f32| {
            let (wa, wb) = ((x * a).exp(), (x * b).exp());
            (wa * a + wb * b) / (wa + wb)
        };
        let want = TensorData::new(vec![expected(a), expected(b)], [1, 1, 2, 1, 1]);
        module.slices(x3d).into_data().assert_approx_eq::<f32>(&want, Tolerance::default());
    }

    #[test]
    fn spatial_attention_is_shared_by_the_slices_and_keeps_the_shape() {
        // With identical slices in, every slice gets the same attended features.
        let device = device();
        let module = CrossTriAttentionConfig::new(4).with_key_reduction(2).init(&device);
        let slice = random([1, 4, 1, 3, 5]);
        let x2d = slice.expand([1, 4, 2, 3, 5]);
        let attended = module.spatial(x2d);
        assert_eq!(attended.dims(), [1, 4, 2, 3, 5]);
        let (first, second) = (attended.clone().narrow(2, 0, 1), attended.narrow(2, 1, 1));
        first.into_data().assert_approx_eq::<f32>(&second.into_data(), Tolerance::default());
    }

    #[test]
    fn the_scales_receive_gradients_at_initialisation() {
        let device = device().autodiff();
        let module = CrossTriAttentionConfig::new(4).init(&device);
        let x2d = Tensor::<5>::random([1, 4, 2, 3, 3], Distribution::Normal(0.0, 1.0), &device);
        let x3d = Tensor::<5>::random([1, 4, 2, 3, 3], Distribution::Normal(0.0, 1.0), &device);
        let loss = module.forward(x2d, x3d).powi_scalar(2).sum();
        let grads = loss.backward();
        for (name, scale) in
            [("spatial", &module.spatial_scale), ("slice", &module.slice_scale), ("channel", &module.channel_scale)]
        {
            let grad = scale.val().grad(&grads).expect("the scale takes part in the forward pass");
            assert!(grad.into_scalar::<f32>().abs() > 0.0, "{name} scale got no gradient");
        }
    }
}
