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
