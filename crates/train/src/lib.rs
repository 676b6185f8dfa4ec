//! Training for spineseg: losses, optimiser settings and (later) batching, loops and checkpoints.
//!
//! - [`loss`]: nnU-Net's Dice + cross-entropy with deep supervision and a partial-label mask.
//! - [`optim`]: nnU-Net's SGD (momentum 0.99, Nesterov) and polynomial learning-rate decay.

pub mod loss;
pub mod optim;

pub use loss::{
    deep_supervision_weights, downsample_labels, DeepSupervisionLoss, DeepSupervisionLossConfig, DiceCeLoss,
    DiceCeLossConfig,
};
pub use optim::{nnunet_sgd, poly_lr};
