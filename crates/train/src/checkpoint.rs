//! Checkpoints: `checkpoint_last/` (every epoch) and `checkpoint_best/` (when the EMA pseudo
//! Dice improves), each holding `model.bpk` (weights), `optimizer.bpk` (optimiser state, burn's
//! optimiser record) and `state.json` ([`TrainState`]).
//!
//! # Atomic replacement
//! A checkpoint is written completely into `.NAME.tmp/`, then the old `NAME/` is renamed to
//! `.NAME.old/`, the new one renamed to `NAME/`, and the old one removed. A crash leaves either
//! `NAME/` or (between the two renames) `.NAME.old/` complete; [`find_checkpoint`] looks at both.

use crate::config::TrainerConfig;
use crate::error::{os, Result, TrainError};
use spineseg_io::json::{read_json, write_json};
use crate::progress::EpochSummary;
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use serde::{Deserialize, Serialize};
use spineseg_model::{PlainConvUNet, PlainConvUNetConfig};
use std::path::{Path, PathBuf};

/// Version of the `state.json` layout.
pub const STATE_FORMAT_VERSION: u32 = 1;
pub const MODEL_FILE: &str = "model.bpk";
pub const OPTIMIZER_FILE: &str = "optimizer.bpk";
pub const STATE_FILE: &str = "state.json";

/// Where a run stands after a completed epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    pub format_version: u32,
    /// The run's settings (a resumed run uses these).
    pub config: TrainerConfig,
    /// The network being trained.
    pub network: PlainConvUNetConfig,
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

/// Writes weights, optimiser state and `state` as the checkpoint `dir`, atomically.
pub fn save_checkpoint(dir: &Path, model: &PlainConvUNet, optimizer: &ModuleOptimizer, state: &TrainState) -> Result<()> {
    replace_dir(dir, |tmp| {
        let weights = tmp.join(MODEL_FILE);
        model.clone().save_file(&weights).map_err(|e| TrainError::Record { path: weights, detail: e.to_string() })?;
        let optim = tmp.join(OPTIMIZER_FILE);
        optimizer.save(&optim).map_err(|e| TrainError::Record { path: optim, detail: e.to_string() })?;
        Ok(write_json(&tmp.join(STATE_FILE), state)?)
    })
}

/// Copies the checkpoint `from` to `to`, atomically.
pub fn copy_checkpoint(from: &Path, to: &Path) -> Result<()> {
    replace_dir(to, |tmp| {
        for name in [MODEL_FILE, OPTIMIZER_FILE, STATE_FILE] {
            let source = from.join(name);
            std::fs::copy(&source, tmp.join(name)).map_err(os(&source))?;
        }
        Ok(())
    })
}

/// Reads `state.json` of a checkpoint folder.
pub fn load_state(dir: &Path) -> Result<TrainState> {
    let path = dir.join(STATE_FILE);
    let state: TrainState = read_json(&path)?;
    if state.format_version != STATE_FORMAT_VERSION {
        return Err(TrainError::Incompatible {
            path,
            detail: format!("format_version {} is not {STATE_FORMAT_VERSION}", state.format_version),
        });
    }
    Ok(state)
}

/// Loads a checkpoint's weights into `model` (built from the same network config).
pub fn load_weights(model: PlainConvUNet, path: &Path) -> Result<PlainConvUNet> {
    model.try_load_file(path).map_err(|e| TrainError::Record { path: path.to_path_buf(), detail: e.to_string() })
}

/// Loads a checkpoint's optimiser state into `optimizer`.
pub fn load_optimizer(optimizer: ModuleOptimizer, path: &Path) -> Result<ModuleOptimizer> {
    optimizer.load(path).map_err(|e| TrainError::Record { path: path.to_path_buf(), detail: e.to_string() })
}

/// Every float parameter's values, in the module's visiting order (for comparing weights; the
/// files themselves also hold parameter ids, which differ between runs).
pub fn parameter_values(model: &PlainConvUNet) -> Vec<Vec<f32>> {
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

/// A network built from `network` on flex (no autodiff) with the weights of `path`.
pub fn load_network(network: &PlainConvUNetConfig, path: &Path) -> Result<PlainConvUNet> {
    let device = burn::tensor::Device::flex();
    load_weights(network.init(&device), path)
}
