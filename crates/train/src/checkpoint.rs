//! Checkpoints: `checkpoint_last/` (every epoch) and `checkpoint_best/` (when the EMA pseudo
//! Dice improves), each holding the method's files (weights and optimiser states; one network:
//! `model.bpk` and `optimizer.bpk`, see [`crate::method::TrainingMethod::save`]) and
//! `state.json` ([`TrainState`]).
//!
//! # Atomic replacement
//! A checkpoint is written completely into `.NAME.tmp/`, then the old `NAME/` is renamed to
//! `.NAME.old/`, the new one renamed to `NAME/`, and the old one removed. A crash leaves either
//! `NAME/` or (between the two renames) `.NAME.old/` complete; [`find_checkpoint`] looks at both.

use crate::config::EngineConfig;
use crate::error::{os, Result, TrainError};
use crate::method::TrainingMethod;
use crate::progress::EpochSummary;
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use serde::{Deserialize, Serialize};
use spineseg_io::json::{read_json, write_json};
use spineseg_model::{PlainConvUNet, PlainConvUNetConfig};
use std::path::{Path, PathBuf};

/// Version of the `state.json` layout. Version 1 (method flags inside the config, one network)
/// is converted on reading, so runs started before the engine/method split still resume.
pub const STATE_FORMAT_VERSION: u32 = 2;
pub const MODEL_FILE: &str = "model.bpk";
pub const OPTIMIZER_FILE: &str = "optimizer.bpk";
pub const STATE_FILE: &str = "state.json";

/// Where a run stands after a completed epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    pub format_version: u32,
    /// The engine's settings (a resumed run uses these).
    pub config: EngineConfig,
    /// The method and its settings ([`crate::method::MethodSpec`]; for the built-in methods a
    /// [`crate::methods::MethodConfig`], tagged by `kind`).
    pub method: serde_json::Value,
    /// What the method needs to be rebuilt on resume ([`TrainingMethod::state`]).
    #[serde(default)]
    pub method_state: serde_json::Value,
    /// Epochs completed.
    pub epochs_done: usize,
    /// Length of the learning-rate schedule; with a time budget fixed after the first epoch.
    pub total_epochs: usize,
    /// Whether `total_epochs` was fixed from the time budget.
    pub total_epochs_fixed: bool,
    /// Index of the next training batch (`epochs_done * iterations_per_epoch`).
    pub next_batch_index: u64,
    pub ema_pseudo_dice: Option<f64>,
    pub best_ema_pseudo_dice: Option<f64>,
    /// 1-based epoch of `checkpoint_best`, 0 when there is none.
    pub best_epoch: usize,
    /// Seconds in the training loop so far, over all resumed parts.
    pub elapsed_s: f64,
    /// Every epoch so far (log.csv and progress.png are made from it).
    pub history: Vec<EpochSummary>,
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dir.with_file_name(format!(".{name}.{suffix}"))
}

/// The complete checkpoint at `dir`, or the `.old` copy left by an interrupted replacement.
pub fn find_checkpoint(dir: &Path) -> Option<PathBuf> {
    [dir.to_path_buf(), sibling(dir, "old")].into_iter().find(|d| d.join(STATE_FILE).is_file())
}

/// Fills a temporary folder with `fill`, then swaps it in as `dir` (see the module docs).
fn replace_dir(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = sibling(dir, "tmp");
    let old = sibling(dir, "old");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(os(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(os(&tmp))?;
    fill(&tmp)?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(os(&old))?;
    }
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(os(dir))?;
    }
    std::fs::rename(&tmp, dir).map_err(os(dir))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(os(&old))?;
    }
    Ok(())
}

/// Writes the method's files and `state` as the checkpoint `dir`, atomically (`state.json`
/// last).
pub fn save_checkpoint(dir: &Path, method: &dyn TrainingMethod, state: &TrainState) -> Result<()> {
    replace_dir(dir, |tmp| {
        method.save(tmp)?;
        Ok(write_json(&tmp.join(STATE_FILE), state)?)
    })
}

/// Copies every file of the checkpoint `from` to `to`, atomically.
pub fn copy_checkpoint(from: &Path, to: &Path) -> Result<()> {
    replace_dir(to, |tmp| copy_tree(from, tmp))
}

/// Copies the files of `from` into the existing folder `to`, sub-folders included (a method's
/// second network lives in one).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let mut entries: Vec<(std::ffi::OsString, bool)> = std::fs::read_dir(from)
        .map_err(os(from))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let kind = entry.file_type().ok()?;
            (kind.is_file() || kind.is_dir()).then(|| (entry.file_name(), kind.is_dir()))
        })
        .collect();
    entries.sort();
    for (name, is_dir) in entries {
        let (source, target) = (from.join(&name), to.join(&name));
        if is_dir {
            std::fs::create_dir(&target).map_err(os(&target))?;
            copy_tree(&source, &target)?;
        } else {
            std::fs::copy(&source, &target).map_err(os(&source))?;
        }
    }
    Ok(())
}

/// Reads `state.json` of a checkpoint folder (version 1 is converted, see
/// [`STATE_FORMAT_VERSION`]).
pub fn load_state(dir: &Path) -> Result<TrainState> {
    let path = dir.join(STATE_FILE);
    let mut value: serde_json::Value = read_json(&path)?;
    let version = value.get("format_version").and_then(serde_json::Value::as_u64);
    if version == Some(1) {
        value = state_from_version_1(value);
    }
    let state: TrainState = serde_json::from_value(value)
        .map_err(|e| TrainError::Incompatible { path: path.clone(), detail: format!("not a training state: {e}") })?;
    if state.format_version != STATE_FORMAT_VERSION {
        return Err(TrainError::Incompatible {
            path,
            detail: format!("format_version {} is not {STATE_FORMAT_VERSION}", state.format_version),
        });
    }
    Ok(state)
}

/// A version-1 `state.json` in the version-2 layout: the flags `partial_labels` and
/// `text_guided` of the config become the method, and the one network becomes the method's
/// state.
fn state_from_version_1(mut value: serde_json::Value) -> serde_json::Value {
    use serde_json::{json, Value};
    let config = value.get_mut("config").and_then(Value::as_object_mut);
    let (partial_labels, text_guided) = match config {
        Some(config) => (
            config.remove("partial_labels").and_then(|v| v.as_bool()).unwrap_or(false),
            config.remove("text_guided").and_then(|v| v.as_bool()).unwrap_or(false),
        ),
        None => (false, false),
    };
    // The built-in methods' tags (`crate::methods::MethodConfig`, named here, not imported, so
    // checkpoints stay below the methods); the text settings take their defaults (a version-1
    // run read them from the plan's `text_guidance`, the defaults unless edited by hand).
    let kind = if text_guided { "text_guided" } else { "supervised" };
    let method = json!({ "kind": kind, "partial_labels": partial_labels });
    if let Some(object) = value.as_object_mut() {
        let network = object.remove("network").unwrap_or(Value::Null);
        object.insert("method".into(), method);
        object.insert("method_state".into(), json!({ "network": { "kind": "plain_conv_unet", "config": network } }));
        object.insert("format_version".into(), json!(STATE_FORMAT_VERSION));
    }
    value
}

/// Loads a module's weights from a burn record file (the module built from the same config).
pub fn load_module<M: Module>(module: M, path: &Path) -> Result<M> {
    module.try_load_file(path).map_err(|e| TrainError::Record { path: path.to_path_buf(), detail: e.to_string() })
}

/// Writes a module's weights as a burn record file.
pub fn save_module<M: Module>(module: &M, path: &Path) -> Result<()> {
    module.clone().save_file(path).map_err(|e| TrainError::Record { path: path.to_path_buf(), detail: e.to_string() })
}

/// Writes an optimiser's state.
pub fn save_optimizer(optimizer: &ModuleOptimizer, path: &Path) -> Result<()> {
    optimizer.save(path).map_err(|e| TrainError::Record { path: path.to_path_buf(), detail: e.to_string() })
}


/// Loads a checkpoint's optimiser state into `optimizer`.
pub fn load_optimizer(optimizer: ModuleOptimizer, path: &Path) -> Result<ModuleOptimizer> {
    optimizer.load(path).map_err(|e| TrainError::Record { path: path.to_path_buf(), detail: e.to_string() })
}

/// Every float parameter's values, in the module's visiting order (for comparing weights; the
/// files themselves also hold parameter ids, which differ between runs).
pub fn parameter_values<M: burn::module::Module>(model: &M) -> Vec<Vec<f32>> {
    struct Collect(Vec<Vec<f32>>);
    impl burn::module::ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<burn::tensor::Tensor<D>>) {
            self.0.push(param.val().into_data().try_into_vec_as::<f32>().expect("float parameters should convert to f32"));
        }
    }
    let mut collect = Collect(Vec::new());
    model.visit(&mut collect);
    collect.0
}

/// A network of any kind built from `network` on flex (no autodiff) with the weights of `path`.
pub fn load_network_of_kind(network: &spineseg_model::NetworkConfig, path: &Path) -> Result<spineseg_model::Network> {
    let device = burn::tensor::Device::flex();
    network
        .init(&device)
        .try_load_file(path)
        .map_err(|e| crate::error::TrainError::Record { path: path.to_path_buf(), detail: e.to_string() })
}

/// A network built from `network` on flex (no autodiff) with the weights of `path`.
pub fn load_network(network: &PlainConvUNetConfig, path: &Path) -> Result<PlainConvUNet> {
    let device = burn::tensor::Device::flex();
    load_module(network.init(&device), path)
}
