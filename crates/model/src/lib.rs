//! Segmentation networks for spineseg, written with burn's `nn` modules only (no I/O).
//!
//! - [`unet`]: nnU-Net's `PlainConvUNet` for 2D and 3D ([`PlainConvUNetConfig`],
//!   [`PlainConvUNet`]), built from the swappable conv block [`StackedConvBlocks`].
//! - [`text_guided`]: ATM-Net's text-image fusion (HASF) as an option of the same U-Net
//!   ([`TextGuidanceConfig`] in the U-Net's config; `None` is the visual-only baseline).
//!
//! Backends are cargo features (`flex` by default, `rayon` and `simd` to speed flex up, `wgpu`);
//! the device is chosen at run time with [`burn::tensor::Device`], e.g. `Device::flex()` or
//! `Device::flex().autodiff()` for training. See `docs/burn-0.22-notes.md`.

pub mod text_guided;
pub mod unet;

pub use unet::fast_kernels;
pub use unet::{
    features_per_stage, ConvNd, ConvNormAct, ConvNormActConfig, ConvTransposeNd, PlainConvEncoder, PlainConvUNet,
    PlainConvUNetConfig, SpatialDims, StackedConvBlocks, StackedConvBlocksConfig, UNetConfigError, UNetDecoder, UNetOutput,
};
pub use text_guided::{TextFusion, TextGuidanceConfig};

/// The burn version this crate is written against, re-exported so dependants use the same one.
pub use burn;
