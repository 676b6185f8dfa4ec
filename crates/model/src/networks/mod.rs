//! Whole networks, one file each; [`crate::network`] names them for model folders.

pub mod plain_conv_unet;

pub use plain_conv_unet::{features_per_stage, PlainConvUNet, PlainConvUNetConfig, UNetConfigError, UNetOutput};
