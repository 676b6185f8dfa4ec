//! Training for spineseg (nnU-Net v2's `nnUNetTrainer`, MONAI's `Workflow`): one engine that
//! owns the loop, and training methods behind one trait.
//!
//! - [`engine`]: [`run`], the loop (epochs, learning-rate schedule, time budget, batch-index
//!   determinism, checkpoints, `log.csv`/`progress.png`, observer, the model folder).
//! - [`method`]: the [`TrainingMethod`] / [`MethodSpec`] interface between engine and method.
//! - [`methods`]: the built-in methods, one file each ([`methods::supervised`],
//!   [`methods::text_guided`]), and [`MethodConfig`], their tagged settings; [`train`] runs one.
//! - [`losses`]: one file per loss (Dice + CE with a partial-label mask, deep supervision,
//!   ATM-Net's CCAE).
//! - [`findings`]: the disc-findings classifier's own short loop (not a segmentation method):
//!   weighted cross-entropy against class imbalance, sequence dropout, thresholds chosen on
//!   validation patients.
//! - [`optim`]: nnU-Net's SGD, polynomial learning-rate decay, global-norm gradient clipping.
//! - [`config`]: [`EngineConfig`] (epochs, iterations, optimiser, seed, time budget, augmentation).
//! - [`splits`]: 5-fold `splits_final.json`.
//! - [`pseudo_dice`]: the online validation pseudo-Dice and its EMA.
//! - [`checkpoint`]: atomic checkpoints and the resume state; [`progress`]: per-epoch summaries,
//!   observer callbacks, `log.csv`, `progress.png`.
//! - [`manifest`]: the model folder's `model.json` ([`ModelManifest`]) and
//!   [`network_config_from_plan`].

pub mod checkpoint;
pub mod config;
pub mod engine;
pub mod error;
pub mod findings;
pub mod findings_pretrain;
pub mod findings_samples;
pub mod losses;
pub mod manifest;
pub mod method;
pub mod methods;
pub mod optim;
pub mod pretrained_encoder;
pub mod progress;
pub mod pseudo_dice;
pub mod splits;

pub use checkpoint::TrainState;
pub use config::{EngineConfig, OptimizerConfig};
pub use spineseg_dataloading::augment::AugmentationConfig;
pub use engine::{list_preprocessed_cases, run, RunOptions, RunPaths, StopReason, TrainOutcome};
pub use error::{Result, TrainError};
pub use losses::{
    deep_supervision_weights, downsample_labels, DeepSupervisionLoss, DeepSupervisionLossConfig, DiceCeLoss,
    DiceCeLossConfig,
};
pub use manifest::{
    load_manifest, manifest_for, network_config_from_plan, save_manifest, training_record, try_network_config_from_plan,
    ModelManifest, TrainingRecord,
};
pub use method::{ExportedNetwork, MethodContext, MethodSpec, StepStats, TrainingMethod};
pub use methods::single_network::init_network;
pub use methods::{train, CpsSettings, EncoderChoice, FcmaeSettings, MethodConfig, NetworkChoice, SshsnetStage2Settings, SupervisedSettings, TextGuidedSettings, TmcaSettings};
pub use spineseg_dataloading::partial_labels::PartialLabelRule;
pub use optim::{clip_grad_norm, grad_norm, nnunet_sgd, poly_lr, poly_lr_with_exponent};
pub use progress::{EpochSummary, RunInfo, Silent, TrainingObserver};
pub use pseudo_dice::{ema_update, PseudoDice};
pub use splits::{load_or_create_splits, make_splits, Split};
