//! The trained model folder's `model.json` ([`ModelManifest`], shared with `spineseg-infer`) and the network a plan describes
//! ([`network_config_from_plan`]).
//!
//! # Model folder
//! ```text
//! MODEL_DIR/model.json      ModelManifest: configuration, network kind + config, weights file, training record
//! MODEL_DIR/plans.json      copy of WORK/plans.json
//! MODEL_DIR/labels.json     copy of WORK/labels.json
//! MODEL_DIR/weights.bpk     the best checkpoint's weights (burn's `Module::save_file` format)
//! MODEL_DIR/training/       log.csv, progress.png, splits_final.json, checkpoint_last/, checkpoint_best/
//! ```

use crate::error::{Result, TrainError};
use spineseg_io::json::{read_json, write_json};
use serde::{Deserialize, Serialize};
use spineseg_preprocessing::plan::{ConfigurationName, Plan};
use spineseg_model::{NetworkConfig, PlainConvUNetConfig};
use std::path::Path;

pub use spineseg_infer::model_folder::{
    ModelManifest, MANIFEST_FILE, MODEL_FORMAT_VERSION, OLDEST_MODEL_FORMAT_VERSION, WEIGHTS_FILE,
};

/// How the weights were trained: the `training` object of `model.json` (for the record;
/// prediction does not read it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingRecord {
    pub seed: u64,
    pub fold: usize,
    /// Epochs completed.
    pub epochs_done: usize,
    pub iterations_per_epoch: usize,
    /// Epoch (1-based) whose weights are in `weights.bpk`.
    pub best_epoch: usize,
    /// EMA of the pseudo Dice at `best_epoch`.
    pub best_ema_pseudo_dice: Option<f64>,
    /// Seconds spent in the training loop, over all resumed parts.
    pub train_time_s: f64,
    /// `sgd` or `adamw`.
    pub optimizer: String,
    /// The training method (`supervised`, `text_guided`, ...); empty in records written before
    /// methods were named.
    #[serde(default)]
    pub method: String,
    /// The method's settings as the run stored them (which encoder it started from, ...);
    /// absent in records written before they were recorded.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub method_settings: serde_json::Value,
    /// When the model folder was written, ISO 8601 UTC.
    pub date: String,
}

/// The manifest of a trained model (the struct is `spineseg_infer::ModelManifest`, shared with
/// prediction; its `training` field holds a [`TrainingRecord`]).
pub fn manifest_for(
    configuration: ConfigurationName,
    network: impl Into<NetworkConfig>,
    record: &TrainingRecord,
) -> ModelManifest {
    let mut manifest = ModelManifest::new(configuration, network);
    manifest.training = serde_json::to_value(record).expect("a training record should serialise");
    manifest
}

/// The [`TrainingRecord`] of a manifest written by the trainer (`None` for other manifests).
pub fn training_record(manifest: &ModelManifest) -> Option<TrainingRecord> {
    serde_json::from_value(manifest.training.clone()).ok()
}

/// Reads and checks a `model.json` (format version, network, rank against the configuration).
/// Older format versions are converted on reading (see [`ModelManifest`]).
pub fn load_manifest(path: &Path) -> Result<ModelManifest> {
    let value: serde_json::Value = read_json(path)?;
    let readable = u64::from(OLDEST_MODEL_FORMAT_VERSION)..=u64::from(MODEL_FORMAT_VERSION);
    let version = value.get("format_version").and_then(serde_json::Value::as_u64);
    if let Some(version) = version.filter(|v| !readable.contains(v)) {
        return Err(TrainError::Incompatible {
            path: path.to_path_buf(),
            detail: format!("format_version {version} is not {OLDEST_MODEL_FORMAT_VERSION} to {MODEL_FORMAT_VERSION}"),
        });
    }
    let manifest: ModelManifest =
        serde_json::from_value(value).map_err(|source| TrainError::Json { path: path.to_path_buf(), source })?;
    manifest
        .network
        .validate()
        .map_err(|e| TrainError::Incompatible { path: path.to_path_buf(), detail: format!("network: {e}") })?;
    let dims = manifest.network.spatial_dims().count();
    if dims != manifest.configuration.dims() {
        return Err(TrainError::Incompatible {
            path: path.to_path_buf(),
            detail: format!("a {dims}D network for configuration {}", manifest.configuration),
        });
    }
    Ok(manifest)
}

/// Writes a `model.json` atomically.
pub fn save_manifest(path: &Path, manifest: &ModelManifest) -> Result<()> {
    Ok(write_json(path, manifest)?)
}

/// The `PlainConvUNet` of a plan's configuration, with deep supervision (for training; prediction
/// turns it off with `with_deep_supervision(false)`).
///
/// `n_conv_per_stage` / `n_conv_per_stage_decoder` take the plan's first stage's values (the
/// model has one count for all stages; nnU-Net's plans use the same count everywhere).
///
/// # Panics
/// Panics if the plan has no such configuration; see [`try_network_config_from_plan`].
pub fn network_config_from_plan(plan: &Plan, configuration: ConfigurationName) -> PlainConvUNetConfig {
    try_network_config_from_plan(plan, configuration).expect("the plan should have the configuration")
}

/// [`network_config_from_plan`] with an error for a missing configuration or a network the model
/// cannot build (per-stage conv counts that differ between stages).
pub fn try_network_config_from_plan(plan: &Plan, configuration: ConfigurationName) -> Result<PlainConvUNetConfig> {
    // One builder for training and prediction: infer's, so a trained folder always loads.
    spineseg_infer::network_config_for_plan(plan, configuration).map_err(|e| TrainError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use spineseg_model::SpatialDims;

    fn unet() -> PlainConvUNetConfig {
        PlainConvUNetConfig::new(SpatialDims::D2, 1, 3, vec![4, 8], vec![vec![1, 1], vec![2, 2]])
    }

    #[test]
    fn manifests_of_format_1_and_2_load_to_the_same_network() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = ModelManifest::new(ConfigurationName::TwoD, unet());
        let v2 = dir.path().join("v2.json");
        save_manifest(&v2, &manifest).unwrap();
        let mut json = serde_json::to_value(&manifest).unwrap();
        json["format_version"] = serde_json::json!(1);
        json["network"] = serde_json::to_value(unet()).unwrap();
        let v1 = dir.path().join("v1.json");
        std::fs::write(&v1, json.to_string()).unwrap();
        let (a, b) = (load_manifest(&v2).unwrap(), load_manifest(&v1).unwrap());
        assert_eq!(serde_json::to_value(&a).unwrap(), serde_json::to_value(&b).unwrap());
        assert_eq!(b.format_version, MODEL_FORMAT_VERSION);
        assert_eq!(b.network.plain_conv_unet().unwrap().features_per_stage, vec![4, 8]);

        json["format_version"] = serde_json::json!(7);
        std::fs::write(&v1, json.to_string()).unwrap();
        assert!(matches!(load_manifest(&v1), Err(TrainError::Incompatible { .. })));
    }
}
