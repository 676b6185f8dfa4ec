//! Training for spineseg (nnU-Net v2's `nnUNetTrainer`): losses, optimisers, folds, the loop,
//! checkpoints and the trained model folder.
//!
//! - [`loss`]: nnU-Net's Dice + cross-entropy with deep supervision and a partial-label mask.
//! - [`contrastive`]: the class-wise channel-level InfoNCE of ATM-Net's CCAE, used by text-guided
//!   training.
//! - [`optim`]: nnU-Net's SGD, polynomial learning-rate decay, global-norm gradient clipping.
//! - [`config`]: [`TrainerConfig`] (epochs, iterations, optimiser, seed, time budget, augmentation).
//! - [`splits`]: 5-fold `splits_final.json`.
//! - [`pseudo_dice`]: the online validation pseudo-Dice and its EMA.
//! - [`trainer`]: [`train`], the loop; [`checkpoint`]: atomic checkpoints and resume state;
//!   [`progress`]: per-epoch summaries, observer callbacks, `log.csv`, `progress.png`.
//! - [`manifest`]: the model folder's `model.json` ([`ModelManifest`]) and
//!   [`network_config_from_plan`].

pub mod checkpoint;
pub mod config;
pub mod contrastive;
pub mod error;
pub mod loss;
pub mod manifest;
pub mod optim;
pub mod progress;
pub mod pseudo_dice;
pub mod splits;
pub mod trainer;

pub use checkpoint::TrainState;
pub use config::{OptimizerConfig, TrainerConfig};
pub use error::{Result, TrainError};
pub use loss::{
    deep_supervision_weights, downsample_labels, DeepSupervisionLoss, DeepSupervisionLossConfig, DiceCeLoss,
    DiceCeLossConfig,
};
pub use manifest::{
    load_manifest, manifest_for, network_config_from_plan, save_manifest, training_record, try_network_config_from_plan,
    ModelManifest, TrainingRecord,
};
pub use optim::{clip_grad_norm, grad_norm, nnunet_sgd, poly_lr, poly_lr_with_exponent};
pub use progress::{EpochSummary, RunInfo, Silent, TrainingObserver};
pub use pseudo_dice::{ema_update, PseudoDice};
pub use splits::{load_or_create_splits, make_splits, Split};
pub use trainer::{init_network, list_preprocessed_cases, train, RunOptions, RunPaths, StopReason, TrainOutcome};
