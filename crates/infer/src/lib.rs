//! spineseg-infer: nnU-Net v2's sliding-window prediction, framework independent.
//!
//! - [`sliding_window`]: the [`PatchPredictor`] trait (the network: batches of C-order patches
//!   to logits), window placement ([`compute_steps_for_sliding_window`]), Gaussian blending
//!   ([`compute_gaussian`]), test-time mirroring, and [`predict_sliding_window`] producing
//!   [`ClassScores`].
//! - [`postprocess`]: softmax, arg max, connected components and the largest component per
//!   class.
//! - [`levels`]: vertebral bodies and discs as instances, named by counting along the spine
//!   (dynamic programming over the network's per-level evidence, anchored at the lumbosacral
//!   junction when it is in view), with a report of how sure the count is.
//! - [`predict`]: [`predict_case`], one preprocessed case to a label volume on the input's grid.
//! - [`network`]: [`NetworkPredictor`], a burn network of any kind ([`spineseg_model::Network`])
//!   as a [`PatchPredictor`] (no autodiff, full-resolution output only), and
//!   [`network_config_for_plan`].
//! - [`model_folder`]: [`ModelFolder`], a trained model folder (`model.json` naming the network's
//!   kind, `plans.json`, `labels.json`, `weights.bpk`) loaded and cross-checked, and written by
//!   [`ModelFolder::save`].
//! - [`diagnose`]: `spineseg diagnose` as library calls: segment each sequence, cut each named
//!   disc's ROI, refuse two sequences that are not one spine, classify every level.
//! - [`findings_model`]: a disc-findings model folder ([`findings_model::FindingsModel`]) and the
//!   classifier's probabilities per disc level (what `spineseg diagnose` runs after segmenting).
//! - [`workflow`]: image files to prediction jobs (nnU-Net's `{case}_{XXXX}` naming) and
//!   [`workflow::predict_jobs`], the read -> preprocess -> predict -> write loop behind
//!   `spineseg predict`.
//!
//! The sliding window, post-processing and [`predict_case`] know nothing about the network
//! framework (any [`PatchPredictor`] works); only [`network`] and [`model_folder`] use burn.
//! This crate never depends on the training crate (training may depend on this one to write
//! model folders).

pub mod diagnose;
pub mod error;
pub mod findings_model;
pub mod levels;
pub mod model_folder;
pub mod network;
pub mod postprocess;
pub mod predict;
pub mod sliding_window;
pub mod workflow;

pub use error::{InferError, PredictorError, Result};
pub use model_folder::{
    ModelFolder, ModelManifest, OutputLabels, OutputStructure, Postprocessing, MODEL_FORMAT_VERSION,
    OLDEST_MODEL_FORMAT_VERSION,
};
pub use network::{network_config_for_plan, NetworkPredictor};
pub use postprocess::{
    argmax, connected_components, keep_largest_component_per_class, softmax_in_place, Components, Connectivity,
};
pub use levels::{assign_levels, Anchor, LevelAssignment, LevelOptions};
pub use predict::{
    predict_case, predict_case_with_levels, segment_preprocessed, segment_preprocessed_with_levels, CasePrediction, PreprocessedSegmentation,
    PredictOptions,
};
pub use sliding_window::{
    compute_gaussian, compute_steps_for_sliding_window, predict_sliding_window, predict_sliding_window_argmax,
    predictor_fn, ClassScores, FnPredictor, PatchPredictor, Progress, ProgressCallback, SlidingWindowOptions,
};
/// The network types a model folder holds (re-exported so callers need no model dependency).
pub use spineseg_model::{Network, NetworkConfig};
