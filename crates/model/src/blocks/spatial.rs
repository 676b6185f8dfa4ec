//! The spatial rank of a network and the canonical 5D layout every layer works on.
//!
//! Inside a network every activation is `[batch, channels, depth, height, width]`; a 2D network
//! uses `depth = 1`. Only [`ConvNd`](super::ConvNd) and [`ConvTransposeNd`](super::ConvTransposeNd)
//! care about the rank (they hold burn's 2D or 3D layer), so the rest of a network is written once.

use burn::config::Config;
use burn::tensor::Tensor;

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

/// `[b, c, h, w]` -> `[b, c, 1, h, w]`; 5D tensors are returned as they are.
pub(crate) fn to_canonical<const D: usize>(x: Tensor<D>) -> Tensor<5> {
    let dims = x.dims();
    let shape = match D {
        4 => [dims[0], dims[1], 1, dims[2], dims[3]],
        5 => [dims[0], dims[1], dims[2], dims[3], dims[4]],
        _ => panic!("expected a 4D or 5D tensor, got rank {D}"),
    };
    x.reshape(shape)
}

/// Inverse of [`to_canonical`].
pub(crate) fn from_canonical<const D: usize>(x: Tensor<5>) -> Tensor<D> {
    let [batch, channels, depth, height, width] = x.dims();
    let mut shape = [0usize; D];
    match D {
        4 => shape.copy_from_slice(&[batch, channels, height, width][..D]),
        5 => shape.copy_from_slice(&[batch, channels, depth, height, width][..D]),
        _ => panic!("expected rank 4 or 5, got {D}"),
    }
    x.reshape(shape)
}

/// Product of `strides` per spatial axis (what every input side must be a multiple of).
pub(crate) fn stride_product(spatial_dims: SpatialDims, strides: &[Vec<usize>]) -> Vec<usize> {
    let mut total = vec![1; spatial_dims.count()];
    for stride in strides {
        for (t, s) in total.iter_mut().zip(stride) {
            *t *= s;
        }
    }
    total
}

/// Runs a network's canonical forward on a 4D (2D network) or 5D (3D network) input and returns
/// its outputs in the input's rank, after checking the rank and that every spatial side is a
/// multiple of `divisor`.
///
/// # Panics
///
/// Panics if `D` does not match `spatial_dims` or a side is not a multiple of `divisor`.
pub(crate) fn forward_checked<const D: usize>(
    spatial_dims: SpatialDims,
    divisor: &[usize],
    x: Tensor<D>,
    forward_canonical: impl FnOnce(Tensor<5>) -> Vec<Tensor<5>>,
) -> Vec<Tensor<D>> {
    let axes = spatial_dims.count();
    assert_eq!(D, axes + 2, "a {axes}D network takes tensors of rank {} ([batch, channels, spatial...])", axes + 2);
    let dims = x.dims();
    let spatial = &dims[2..];
    assert!(
        spatial.iter().zip(divisor).all(|(s, d)| s % d == 0),
        "spatial size {spatial:?} should be a multiple of {divisor:?} (product of the strides)"
    );
    forward_canonical(to_canonical(x)).into_iter().map(from_canonical::<D>).collect()
}
