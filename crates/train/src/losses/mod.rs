//! Training losses, one file each.
//!
//! - [`dice_ce`]: nnU-Net's soft Dice + cross-entropy with an optional partial-label mask.
//! - [`deep_supervision`]: the weighted sum of a per-output loss over the decoder's outputs.
//! - [`ccae`]: the class-wise channel-level InfoNCE of ATM-Net's CCAE (text-guided training).
//! - [`info_nce`]: CLIP's symmetric image-text InfoNCE with a learned, capped temperature and
//!   multi-positive targets (the findings network's image-text pretraining).
//! - [`tmca`]: TMCA's per-sample region-to-text InfoNCE at several decoder levels, with
//!   neighbouring levels as hard negatives.

pub mod ccae;
pub mod deep_supervision;
pub mod dice_ce;
pub mod info_nce;
pub mod masked_reconstruction;
pub mod tmca;

pub use deep_supervision::{deep_supervision_weights, downsample_labels, DeepSupervisionLoss, DeepSupervisionLossConfig};
pub use dice_ce::{DiceCeLoss, DiceCeLossConfig};
