//! Whole networks, one file each; [`crate::network`] names them for model folders.

pub mod convnext_unet;
pub mod deeplabv3plus;
pub mod disc_findings;
pub mod fcmae;
pub mod plain_conv_unet;
pub mod sshsnet_hybrid;

pub use convnext_unet::{ConvNeXtUNet, ConvNeXtUNetConfig};
pub use deeplabv3plus::{DeepLabV3Plus, DeepLabV3PlusConfig, DeepLabV3PlusConfigError};
pub use fcmae::{FcmaeDecoder, FcmaeDecoderConfig, MaskedAutoencoder};
pub use disc_findings::{
    prompt_index_finding, prompt_index_grade, DiscFindingsNet, DiscFindingsNetConfig, FindingsEncoderConfig, FindingsHeadConfig, FindingsNetConfigError,
    FindingsOutput, NUM_FINDINGS, NUM_GRADES, PROMPTS_PER_LEVEL,
};
pub use sshsnet_hybrid::{SshsHybrid, SshsHybridConfig, SshsHybridConfigError, Stage1Output, STAGE1_PRIOR_FLOOR};
pub use plain_conv_unet::{features_per_stage, PlainConvUNet, PlainConvUNetConfig, UNetConfigError, UNetOutput};
