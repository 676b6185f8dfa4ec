//! Encoders: a stack of stages returning one skip per stage, full resolution first.
//!
//! - [`plain_conv`]: nnU-Net's `PlainConvEncoder` (conv-norm-act stacks).
//! - [`convnext_v2`]: ConvNeXt V2 stages (depthwise 7x7 + LayerNorm + MLP with GRN), the encoder
//!   that masked-autoencoder pretraining trains on unlabelled images.

pub mod convnext_v2;
pub mod plain_conv;

pub use convnext_v2::{ConvNeXtV2Encoder, ConvNeXtV2EncoderConfig};
pub use plain_conv::PlainConvEncoder;
