//! The engine's settings of a training run ([`EngineConfig`]: schedule, optimiser, seed, time
//! budget, sampling), stored in every checkpoint's `state.json` so a resumed run continues with
//! exactly the same settings. What a method adds is its own [`crate::method::MethodSpec`].

use crate::error::{Result, TrainError};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, ModuleOptimizer, SgdConfig};
use serde::{Deserialize, Serialize};
use spineseg_dataloading::augment::AugmentationConfig;
use spineseg_preprocessing::plan::ConfigurationName;
use spineseg_dataloading::sampling::OVERSAMPLE_FOREGROUND_PERCENT;

/// The optimiser and its hyper-parameters. The learning rate given here is the initial one of the
/// polynomial schedule ([`crate::poly_lr_with_exponent`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum OptimizerConfig {
    /// nnU-Net's default: `SGD(lr 0.01, momentum 0.99, nesterov, weight_decay 3e-5)`.
    Sgd { lr: f64, momentum: f64, nesterov: bool, weight_decay: f64 },
    /// AdamW (PyTorch's defaults for betas and epsilon 1e-8; decoupled weight decay).
    AdamW { lr: f64, weight_decay: f64 },
}

impl OptimizerConfig {
    /// nnU-Net's SGD.
    pub fn sgd() -> Self {
        OptimizerConfig::Sgd { lr: 1e-2, momentum: 0.99, nesterov: true, weight_decay: 3e-5 }
    }

    /// AdamW with lr 1e-3 and weight decay 0.01.
    pub fn adamw() -> Self {
        OptimizerConfig::AdamW { lr: 1e-3, weight_decay: 1e-2 }
    }

    /// The initial learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerConfig::Sgd { lr, .. } | OptimizerConfig::AdamW { lr, .. } => *lr,
        }
    }

    /// The same optimiser with another initial learning rate.
    pub fn with_lr(mut self, new: f64) -> Self {
        match &mut self {
            OptimizerConfig::Sgd { lr, .. } | OptimizerConfig::AdamW { lr, .. } => *lr = new,
        }
        self
    }

    /// Short name for logs and `model.json`.
    pub fn name(&self) -> &'static str {
        match self {
            OptimizerConfig::Sgd { .. } => "sgd",
            OptimizerConfig::AdamW { .. } => "adamw",
        }
    }

    /// burn's optimiser. Gradient clipping is not burn's (which clips each tensor by its own
    /// norm) but the trainer's global-norm clipping, see [`crate::clip_grad_norm`].
    pub fn init(&self) -> ModuleOptimizer {
        match *self {
            OptimizerConfig::Sgd { momentum, nesterov, weight_decay, .. } => {
                // burn's MomentumConfig defaults to dampening 0.1; PyTorch (and nnU-Net) use 0.
                let momentum = (momentum > 0.0).then(|| {
                    MomentumConfig::new().with_momentum(momentum).with_dampening(0.0).with_nesterov(nesterov)
                });
                let decay = (weight_decay > 0.0).then(|| WeightDecayConfig::new(weight_decay as f32));
                SgdConfig::new().with_momentum(momentum).with_weight_decay(decay).init()
            }
            OptimizerConfig::AdamW { weight_decay, .. } => {
                AdamWConfig::new().with_epsilon(1e-8).with_weight_decay(weight_decay as f32).init()
            }
        }
    }
}

/// The most neighbouring slices on each side [`EngineConfig::slice_context`] takes (each one
/// holds the case's images once more in memory).
pub const MAX_SLICE_CONTEXT: usize = 4;

/// What the engine needs to run any method. With the same config, method, plan, data and seed, a
/// run gives bit-identical weights whether or not it was interrupted and resumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineConfig {
    /// `2d` or `3d_fullres`.
    pub configuration: ConfigurationName,
    /// Cross-validation fold, 0..5 (see [`crate::splits`]).
    pub fold: usize,
    /// Total epochs of the learning-rate schedule (nnU-Net: 1000). With a time budget, fewer
    /// may run, see `time_budget_s`.
    pub epochs: usize,
    /// Training steps per epoch (nnU-Net: 250; our CPU default 50).
    pub iterations_per_epoch: usize,
    /// Fixed validation batches per epoch, for the online pseudo-Dice (nnU-Net: 50).
    pub validation_batches: usize,
    pub optimizer: OptimizerConfig,
    /// Exponent of the polynomial learning-rate decay (nnU-Net: 0.9).
    pub poly_exponent: f64,
    /// Seeds the network initialisation, the training batches and the validation batches.
    pub seed: u64,
    /// Wall-clock budget of the training loop in seconds. After the first epoch the number of
    /// epochs that fit is fixed (and stored in the checkpoint) and becomes the schedule's
    /// length, so the learning rate still decays to 0 and a resumed run stays deterministic. If
    /// epochs get slower later, the run also stops before an epoch that would not fit.
    pub time_budget_s: Option<f64>,
    /// Training-time augmentation.
    pub augmentation: AugmentationConfig,
    /// Fraction of each batch forced to contain foreground (nnU-Net: 0.33).
    pub oversample_foreground: f64,
    /// Threads of the background batch loader.
    pub loader_threads: usize,
    /// Finished batches the loader keeps ready.
    pub prefetch_batches: usize,
    /// Clip the global gradient norm to this value (nnU-Net: 12); `None`: no clipping.
    pub grad_clip_norm: Option<f64>,
    /// A step whose loss (or, with clipping, gradient norm) is not finite: `false` stops the
    /// run with an error naming the epoch and step (the last checkpoint, written at the end of
    /// the previous epoch, is the last good state); `true` skips the step (the method does not
    /// apply it) and counts it in the log.
    #[serde(default)]
    pub skip_non_finite_steps: bool,
    /// 2D only: stack this many neighbouring slices on each side as input channels (2.5D input,
    /// SSHSNet's stage 1: 1 gives three adjacent slices), see
    /// [`spineseg_preprocessing::neighbour_slices`]; the model folder records it and prediction
    /// stacks them the same way. 0: the slice alone.
    #[serde(default)]
    pub slice_context: usize,
}

impl EngineConfig {
    /// nnU-Net's settings scaled for a CPU: 50 iterations per epoch, 10 validation batches.
    pub fn new(configuration: ConfigurationName) -> Self {
        EngineConfig {
            configuration,
            fold: 0,
            epochs: 1000,
            iterations_per_epoch: 50,
            validation_batches: 10,
            optimizer: OptimizerConfig::sgd(),
            poly_exponent: 0.9,
            seed: 0,
            time_budget_s: None,
            augmentation: AugmentationConfig::default(),
            oversample_foreground: OVERSAMPLE_FOREGROUND_PERCENT,
            loader_threads: 1,
            prefetch_batches: 2,
            grad_clip_norm: Some(12.0),
            skip_non_finite_steps: false,
            slice_context: 0,
        }
    }

    /// Checks ranges; the message names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Invalid(m));
        if self.fold >= crate::splits::NUM_FOLDS {
            return bad(format!("fold {} is out of range 0..{}", self.fold, crate::splits::NUM_FOLDS));
        }
        if self.epochs == 0 || self.iterations_per_epoch == 0 {
            return bad("epochs and iterations_per_epoch must be at least 1".into());
        }
        if !(self.optimizer.lr().is_finite() && self.optimizer.lr() > 0.0) {
            return bad(format!("learning rate {} must be positive", self.optimizer.lr()));
        }
        if !(self.poly_exponent.is_finite() && self.poly_exponent >= 0.0) {
            return bad(format!("poly_exponent {} must be >= 0", self.poly_exponent));
        }
        if let Some(budget) = self.time_budget_s {
            if !(budget.is_finite() && budget > 0.0) {
                return bad(format!("time_budget_s {budget} must be positive"));
            }
        }
        if let Some(norm) = self.grad_clip_norm {
            if !(norm.is_finite() && norm > 0.0) {
                return bad(format!("grad_clip_norm {norm} must be positive"));
            }
        }
        if !(0.0..=1.0).contains(&self.oversample_foreground) {
            return bad(format!("oversample_foreground {} is not a fraction", self.oversample_foreground));
        }
        if self.slice_context > 0 && self.configuration != ConfigurationName::TwoD {
            return bad(format!(
                "slice_context {} (neighbouring slices as channels) needs the 2d configuration, not {}",
                self.slice_context, self.configuration
            ));
        }
        if self.slice_context > MAX_SLICE_CONTEXT {
            return bad(format!("slice_context {} is more than {MAX_SLICE_CONTEXT}", self.slice_context));
        }
        self.augmentation.validate().map_err(TrainError::Invalid)?;
        Ok(())
    }
}
