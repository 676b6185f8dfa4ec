//! Segmentation networks for spineseg, written with burn's `nn` modules only (no I/O).
//!
//! Laid out by role:
//! - [`blocks`]: the rank-agnostic convolutions [`ConvNd`] / [`ConvTransposeNd`], nnU-Net's
//!   conv-norm-act stack [`StackedConvBlocks`] (the swappable conv block), the switch to the fast
//!   CPU kernels ([`fast_kernels`]) and [`SpatialDims`].
//! - [`encoders`]: [`PlainConvEncoder`] and the ConvNeXt V2 encoder ([`ConvNeXtV2Encoder`]). [`decoders`]: [`UNetDecoder`] with its 1x1 segmentation
//!   heads (plain `ConvNd`s in `seg_layers`, so the weight keys match nnU-Net's).
//! - [`fusion`]: ATM-Net's text-image fusion (HASF, [`fusion::hasf`]) as an option of the U-Net
//!   ([`TextGuidanceConfig`] in the U-Net's config; `None` is the visual-only baseline); its
//!   text-conditioned class queries live in [`TextFusion`].
//! - [`networks`]: whole networks, one file each: nnU-Net's `PlainConvUNet` for 2D and 3D
//!   ([`PlainConvUNetConfig`], [`PlainConvUNet`]), the ConvNeXt V2 U-Net ([`ConvNeXtUNet`]) and
//!   DeepLabv3+ on the plan's stages ([`DeepLabV3Plus`]).
//! - [`network`]: [`NetworkConfig`] / [`Network`], a network named by its kind as model folders
//!   store it (nnU-Net's `network_class_name` + `arch_kwargs`).
//!
//! Backends are cargo features (`flex` by default, `rayon` and `simd` to speed flex up, `wgpu`);
//! the device is chosen at run time with [`burn::tensor::Device`], e.g. `Device::flex()` or
//! `Device::flex().autodiff()` for training. See `docs/burn-0.22-notes.md`.

pub mod blocks;
pub mod decoders;
pub mod encoders;
pub mod fusion;
pub mod network;
pub mod networks;
pub mod precision;

pub use blocks::fast_kernels;
pub use blocks::{
    ConvNd, ConvNormAct, ConvNormActConfig, ConvTransposeNd, SpatialDims, StackedConvBlocks, StackedConvBlocksConfig,
};
pub use decoders::UNetDecoder;
pub use decoders::UNetDecoderSpec;
pub use encoders::{ConvNeXtV2Encoder, ConvNeXtV2EncoderConfig, PlainConvEncoder};
pub use fusion::{region_features, TargetAlignment, TargetAlignmentConfig, TextFusion, TextGuidanceConfig, TextInputs};
pub use network::{Network, NetworkConfig, NetworkConfigError, WeightPrecision};
pub use networks::{
    ConvNeXtUNet, ConvNeXtUNetConfig, DeepLabV3Plus, DeepLabV3PlusConfig, DeepLabV3PlusConfigError, SshsHybrid, SshsHybridConfig, SshsHybridConfigError, STAGE1_PRIOR_FLOOR, FcmaeDecoder, FcmaeDecoderConfig, MaskedAutoencoder,
    features_per_stage, prompt_index_finding, prompt_index_grade, DiscFindingsNet, DiscFindingsNetConfig, FindingsEncoderConfig, FindingsHeadConfig,
    FindingsNetConfigError, FindingsOutput, PlainConvUNet, PlainConvUNetConfig, UNetConfigError, UNetOutput, NUM_FINDINGS,
    NUM_GRADES, PROMPTS_PER_LEVEL,
};

/// The burn version this crate is written against, re-exported so dependants use the same one.
pub use burn;
