//! The interface between the training engine ([`crate::engine`]) and a training method (what one
//! step, one validation batch and one checkpoint of a method are), in the shape of MONAI's
//! `Workflow._iteration`, nnU-Net's trainer variants and burn's `TrainStep`.
//!
//! The engine owns everything a method should not have to re-implement: epochs, the
//! learning-rate schedule, the time budget, batch-index determinism (bit-exact resume),
//! checkpoint rotation, `log.csv`/`progress.png`, the observer and the model folder. A method
//! owns its networks, optimisers and losses: one network and one optimiser (supervised), or two
//! of each (cross pseudo supervision), or an encoder trained on unlabelled images (masked
//! autoencoder pretraining, with a sampler that allows unlabelled cases).
//!
//! A method is described by a serialisable [`MethodSpec`] (stored in every checkpoint's
//! `state.json`, so `--resume` rebuilds the same method) that builds the running
//! [`TrainingMethod`]. The built-in methods are the variants of [`crate::methods::MethodConfig`];
//! a method outside this crate implements the two traits and calls [`crate::engine::run`].

use crate::config::OptimizerConfig;
use crate::error::Result;
use crate::pseudo_dice::PseudoDice;
use burn::tensor::Device;
use serde::de::DeserializeOwned;
use serde::Serialize;
use spineseg_preprocessing::plan::{ConfigurationName, Plan};
use spineseg_preprocessing::preprocess::PreprocessedCase;
use spineseg_dataloading::sampling::Batch;
use spineseg_model::{NetworkConfig, PlainConvUNetConfig};
use std::path::Path;

/// What the engine knows when it builds a method.
pub struct MethodContext<'a> {
    /// The run's plan (`WORK/plans.json`).
    pub plan: &'a Plan,
    /// Where `plan` was read from (for error messages).
    pub plans_path: &'a Path,
    pub configuration: ConfigurationName,
    /// The U-Net the plan's configuration describes (with deep supervision), checked against the
    /// configuration's patch size.
    pub plan_network: PlainConvUNetConfig,
    /// The output model folder (a method may keep files there that travel with the model, such
    /// as `prompt_embeddings.json`).
    pub model_dir: &'a Path,
    /// The fold's training and validation cases, indexed as the samplers index them
    /// (`SampleInfo::case`).
    pub train_cases: &'a [PreprocessedCase],
    pub val_cases: &'a [PreprocessedCase],
    /// Device for training, with autodiff.
    pub device: Device,
    /// The same device without autodiff, for validation.
    pub inference_device: Device,
    /// The run's seed (network initialisation; the engine seeds the batches itself).
    pub seed: u64,
    pub optimizer: &'a OptimizerConfig,
    /// Clip the global gradient norm of each optimiser step to this value.
    pub grad_clip_norm: Option<f64>,
}

/// What a training step reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// The loss that was back-propagated (summed over the method's networks).
    pub loss: f64,
    /// Global gradient norm before clipping (NaN without clipping).
    pub grad_norm: f64,
}

impl StepStats {
    /// Whether the step was sound: a finite loss and no infinite gradient norm (a NaN norm means
    /// "not computed" without clipping, so only a clipping method can report a NaN gradient).
    /// A method must not apply an update whose loss or gradient norm is not finite (the engine
    /// then stops, or skips the step with `skip_non_finite_steps`).
    pub fn is_finite(&self) -> bool {
        self.loss.is_finite() && !self.grad_norm.is_infinite()
    }
}

/// The network a method hands to prediction: which checkpoint file holds its weights and what
/// it is. The engine copies that file of the best checkpoint into the model folder.
#[derive(Debug, Clone)]
pub struct ExportedNetwork {
    /// File name inside a checkpoint folder.
    pub checkpoint_file: String,
    /// The network's kind and configuration, as `model.json` names it.
    pub network: NetworkConfig,
    /// Other files of the same checkpoint that travel with the model: `(file inside the
    /// checkpoint folder, file name in the model folder)` (the second network of CPS).
    pub companions: Vec<(String, String)>,
}

/// A method while it trains: its networks, optimisers and losses.
pub trait TrainingMethod {
    /// Trainable parameters over all networks (for the start-of-run line).
    fn num_params(&self) -> usize;

    /// One optimisation step on `batch` with learning rate `lr` (fixed for the epoch by the
    /// engine's schedule).
    fn train_step(&mut self, batch: &Batch, lr: f64) -> Result<StepStats>;

    /// Validates one fixed batch: adds the arg max of the exported network's full-resolution
    /// output to `dice` and returns the batch's loss.
    fn validation_step(&self, batch: &Batch, dice: &mut PseudoDice) -> Result<f64>;

    /// Writes networks and optimiser states into the (temporary) checkpoint folder `dir`.
    fn save(&self, dir: &Path) -> Result<()>;

    /// Restores networks and optimiser states from a checkpoint folder written by [`save`].
    ///
    /// [`save`]: TrainingMethod::save
    fn load(&mut self, dir: &Path) -> Result<()>;

    /// The patch the samplers cut for a plan patch of `plan_patch`: the plan's, unless the
    /// method's network sees context around what it predicts (then its batches are larger and
    /// the method crops the labels, [`Batch::centre_crop`]).
    fn sampled_patch_size(&self, plan_patch: &[usize]) -> Vec<usize> {
        plan_patch.to_vec()
    }

    /// Whether validation scores a segmentation (the pseudo Dice that picks the best epoch).
    /// `false` for a method that segments nothing (masked-autoencoder pretraining): the engine
    /// then exports the last epoch.
    fn scored_by_segmentation(&self) -> bool {
        true
    }

    /// Called after each epoch's validation with the fixed validation batches and the run's
    /// `training/` folder (a method may draw what it learned there).
    fn after_epoch(&self, _epoch: usize, _val_batches: &[Batch], _training_dir: &Path) -> Result<()> {
        Ok(())
    }

    /// What the model folder gets.
    fn export(&self) -> ExportedNetwork;

    /// What the method needs to be rebuilt identically on resume (its networks' configurations,
    /// say), stored in `state.json` as `method_state`.
    fn state(&self) -> serde_json::Value;
}

/// A method's settings: stored in the checkpoint (`state.json` "method"), so a resumed run
/// rebuilds the same method without flags.
pub trait MethodSpec: Serialize + DeserializeOwned + Clone {
    /// Short name for `model.json`'s training record and logs.
    fn name(&self) -> String;

    /// Checks the settings before a new run starts.
    fn validate(&self) -> Result<()> {
        Ok(())
    }

    /// Whether the method learns from training cases without labels (semi-supervised methods,
    /// masked-autoencoder pretraining). Then the training sampler draws from them too (their
    /// samples have `SampleInfo::labelled` false and an all-background seg) and validation
    /// leaves them out; otherwise an unlabelled case is an error.
    fn trains_on_unlabelled_cases(&self) -> bool {
        false
    }

    /// For a method that trains on unlabelled cases: how many elements of each batch of
    /// `batch_size` come from labelled cases (the rest from unlabelled ones); `None` lets the
    /// sampler pick any case (the mix then follows the pool's size).
    fn labelled_per_batch(&self, _batch_size: usize) -> Option<usize> {
        None
    }

    /// Builds the method: fresh (initialised from `ctx.seed`) when `saved` is `None`, else
    /// shaped by the `method_state` of the checkpoint being resumed (the engine then calls
    /// [`TrainingMethod::load`]).
    fn build(&self, ctx: &MethodContext<'_>, saved: Option<&serde_json::Value>) -> Result<Box<dyn TrainingMethod>>;
}
