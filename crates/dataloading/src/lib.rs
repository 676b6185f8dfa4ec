//! spineseg-dataloading: training batches from preprocessed cases (nnU-Net's `dataloading` and
//! augmentation): patch sampling with foreground oversampling, an opt-in source of unlabelled
//! image patches, augmentation, partial-label bookkeeping and the background batch loader.

pub mod augment;
pub mod augment_contrast;
pub mod error;
pub mod partial_labels;
pub mod sampling;
