//! Decoders: from an encoder's skips to logits per resolution level.

pub mod unet_decoder;

pub use unet_decoder::{UNetDecoder, UNetDecoderSpec};
