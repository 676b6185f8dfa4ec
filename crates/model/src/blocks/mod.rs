//! Building blocks shared by the networks: the rank-agnostic convolutions ([`conv`]), nnU-Net's
//! conv-norm-act stack ([`conv_norm_act`]), the switch between burn's layers and the fast CPU
//! kernels ([`fast_kernels`]) and the spatial rank with its canonical 5D layout ([`spatial`]).

pub mod conv;
pub mod conv_norm_act;
pub mod fast_kernels;
pub mod spatial;

pub use conv::{ConvNd, ConvTransposeNd};
pub use conv_norm_act::{ConvNormAct, ConvNormActConfig, StackedConvBlocks, StackedConvBlocksConfig};
pub use spatial::SpatialDims;
