//! The training engine (nnU-Net v2's `nnUNetTrainer.run_training`, MONAI's `Workflow`): from a
//! work folder written by `spineseg plan` to a model folder (see [`crate::manifest`]), driving a
//! [`TrainingMethod`] (see [`crate::method`]).
//!
//! Per epoch `e` (0-based):
//! 1. learning rate `poly(lr, e, total_epochs)`, fixed for the epoch (nnU-Net steps its
//!    scheduler per epoch);
//! 2. `iterations_per_epoch` calls of [`TrainingMethod::train_step`] on batches
//!    `e * iterations_per_epoch + i` of a [`PatchSampler`] over the fold's training cases (made
//!    ahead on a [`BatchLoader`] thread);
//! 3. validation on `validation_batches` fixed batches (the same every epoch) of a sampler over
//!    the validation cases without augmentation (nnU-Net's validation loader also oversamples
//!    foreground): [`TrainingMethod::validation_step`] adds each batch's loss and TP/FP/FN to a
//!    [`PseudoDice`]; the engine keeps its EMA and the best epoch;
//! 4. `checkpoint_last` (and `checkpoint_best` when the EMA improved): the method's files plus
//!    `state.json` ([`TrainState`]), `log.csv`, `progress.png`.
//!
//! At the end (all epochs, the time budget, or an observer asking to stop) the model folder gets
//! `model.json`, `plans.json`, `labels.json` and `weights.bpk` (the best checkpoint's copy of
//! the method's exported network).
//!
//! # Determinism
//! Batches are pure functions of `(seed, batch index)`, methods initialise their networks from
//! the seed, and a checkpoint holds the method's weights and optimiser states and the batch
//! index, so a run stopped after any epoch and resumed computes exactly what an uninterrupted
//! run computes.

use crate::checkpoint::{copy_checkpoint, find_checkpoint, load_state, save_checkpoint, TrainState, STATE_FORMAT_VERSION};
use crate::config::EngineConfig;
use crate::error::{os, Result, TrainError};
use crate::manifest::{manifest_for, save_manifest, try_network_config_from_plan, ModelManifest, TrainingRecord, MANIFEST_FILE, WEIGHTS_FILE};
use crate::method::{MethodContext, MethodSpec, TrainingMethod};
use crate::optim::poly_lr_with_exponent;
use crate::progress::{write_log_csv, write_progress_png, EpochSummary, RunInfo, TrainingObserver};
use crate::pseudo_dice::{ema_update, PseudoDice};
use crate::splits::load_or_create_splits;
use burn::tensor::Device;
use spineseg_dataloading::augment::AugmentationConfig;
use spineseg_preprocessing::neighbour_slices::{input_channels, with_neighbour_slices};
use spineseg_preprocessing::plan::{ConfigurationName, Plan};
use spineseg_dataloading::sampling::{load_cases, Batch, BatchLoader, PatchSampler, SamplerConfig};
use spineseg_model::PlainConvUNetConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Seed offset of the validation batches (so they differ from the training batches).
const VALIDATION_SEED_OFFSET: u64 = 0x5EED_0000_0000_7A11;

/// Options of one invocation (not part of the run's identity).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue from `MODEL_DIR/training/checkpoint_last` with the settings stored there.
    pub resume: bool,
    /// Stop after this many epochs in total (the checkpoint is complete; resume continues).
    pub stop_after_epochs: Option<usize>,
    /// Device to train on; `None`: `Device::flex()`. Autodiff is added by the trainer.
    pub device: Option<Device>,
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// All epochs of the schedule are done.
    Finished,
    /// The next epoch would not fit the time budget.
    TimeBudget,
    /// `stop_after_epochs` was reached or the observer asked to stop.
    Interrupted,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub reason: StopReason,
    pub state: TrainState,
    pub model_dir: PathBuf,
    pub manifest: ModelManifest,
}

/// The folders of a run.
#[derive(Debug, Clone)]
pub struct RunPaths {
    pub work: PathBuf,
    pub model_dir: PathBuf,
}

impl RunPaths {
    pub fn plans(&self) -> PathBuf {
        self.work.join(spineseg_preprocessing::plan::PLAN_FILE)
    }
    pub fn labels(&self) -> PathBuf {
        self.work.join(spineseg_preprocessing::plan::LABELS_FILE)
    }
    pub fn preprocessed(&self, configuration: ConfigurationName) -> PathBuf {
        self.work.join("preprocessed").join(configuration.as_str())
    }
    /// Unlabelled images preprocessed for `configuration` (`spineseg pretrain --images`): methods
    /// that learn from unlabelled cases train on them too; supervised methods never see them.
    pub fn unlabelled(&self, configuration: ConfigurationName) -> PathBuf {
        self.work.join("unlabelled").join(configuration.as_str())
    }
    pub fn work_splits(&self) -> PathBuf {
        self.work.join(crate::splits::SPLITS_FILE)
    }
    pub fn training(&self) -> PathBuf {
        self.model_dir.join("training")
    }
    pub fn checkpoint_last(&self) -> PathBuf {
        self.training().join("checkpoint_last")
    }
    pub fn checkpoint_best(&self) -> PathBuf {
        self.training().join("checkpoint_best")
    }
}

/// Ids of the preprocessed cases in `dir` (one `ID.json` header per case), sorted.
pub fn list_preprocessed_cases(dir: &Path) -> Result<Vec<String>> {
    if !dir.is_dir() {
        return Err(TrainError::Missing {
            path: dir.to_path_buf(),
            detail: "no preprocessed data for this configuration (run `spineseg plan` with it)".into(),
        });
    }
    let mut ids: Vec<String> = std::fs::read_dir(dir)
        .map_err(os(dir))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name.strip_suffix(".json")?;
            (!id.starts_with('.')).then(|| id.to_string())
        })
        .collect();
    ids.sort();
    if ids.is_empty() {
        return Err(TrainError::Missing { path: dir.to_path_buf(), detail: "no preprocessed cases (no *.json headers)".into() });
    }
    Ok(ids)
}

fn check_divisible(config: &PlainConvUNetConfig, patch: &[usize]) -> Result<()> {
    let total = config.cumulative_stride(config.n_stages() - 1);
    if patch.iter().zip(&total).any(|(p, s)| p % s != 0) {
        return Err(TrainError::Invalid(format!("patch {patch:?} is not divisible by the network's total stride {total:?}")));
    }
    Ok(())
}

/// Trains (or resumes) a model with `method`; see the module documentation.
///
/// `config` and `method` are used for a new run; with `options.resume` the settings stored in
/// `checkpoint_last/state.json` are used instead (so the result does not depend on flags).
pub fn run<M: MethodSpec>(
    paths: &RunPaths,
    config: EngineConfig,
    method: M,
    options: &RunOptions,
    observer: &mut dyn TrainingObserver,
) -> Result<TrainOutcome> {
    let plans_path = paths.plans();
    if !plans_path.is_file() {
        return Err(TrainError::Missing { path: plans_path, detail: "no plan (run `spineseg plan DATASET --out WORK` first)".into() });
    }
    let plan = Plan::load(&plans_path)?;

    // The run's state: new, or from the last checkpoint.
    let last_dir = paths.checkpoint_last();
    let (mut state, method, resume_from) = if options.resume {
        let dir = find_checkpoint(&last_dir).ok_or_else(|| TrainError::Missing {
            path: last_dir.clone(),
            detail: "no checkpoint to resume from".into(),
        })?;
        let state = load_state(&dir)?;
        let method: M = serde_json::from_value(state.method.clone()).map_err(|e| TrainError::Incompatible {
            path: dir.join(crate::checkpoint::STATE_FILE),
            detail: format!("method: {e}"),
        })?;
        repair_best_checkpoint(paths, &dir, &state)?;
        (state, method, Some(dir))
    } else {
        if find_checkpoint(&last_dir).is_some() {
            return Err(TrainError::Invalid(format!(
                "{} already holds a training run; use --resume to continue it or another output folder",
                paths.model_dir.display()
            )));
        }
        config.validate()?;
        method.validate()?;
        let total_epochs = config.epochs;
        let state = TrainState {
            format_version: STATE_FORMAT_VERSION,
            config,
            method: serde_json::to_value(&method).expect("a method's settings should serialise"),
            method_state: serde_json::Value::Null,
            epochs_done: 0,
            total_epochs,
            total_epochs_fixed: false,
            next_batch_index: 0,
            ema_pseudo_dice: None,
            best_ema_pseudo_dice: None,
            best_epoch: 0,
            elapsed_s: 0.0,
            history: Vec::new(),
        };
        (state, method, None)
    };
    let config = state.config.clone();
    let configuration = config.configuration;
    let plan_config = plan
        .configuration(configuration)
        .ok_or_else(|| TrainError::Invalid(format!("{}: the plan has no configuration {configuration}", plans_path.display())))?
        .clone();
    let mut plan_network = try_network_config_from_plan(&plan, configuration)?;
    check_divisible(&plan_network, &plan_config.patch_size)?;

    // Cases and folds.
    let data_dir = paths.preprocessed(configuration);
    let ids = list_preprocessed_cases(&data_dir)?;
    let splits = load_or_create_splits(&paths.work_splits(), &ids)?;
    let split = splits.get(config.fold).cloned().ok_or_else(|| {
        TrainError::Invalid(format!("fold {} does not exist: {} has {} folds", config.fold, paths.work_splits().display(), splits.len()))
    })?;
    if split.train.is_empty() || split.val.is_empty() {
        return Err(TrainError::Invalid(format!("fold {} has no training or no validation cases", config.fold)));
    }
    let training_dir = paths.training();
    std::fs::create_dir_all(&training_dir).map_err(os(&training_dir))?;
    spineseg_io::json::write_json(&training_dir.join(crate::splits::SPLITS_FILE), &splits)?;
    let mut train_cases = load_cases(&data_dir, &split.train)?;
    let mut val_cases = load_cases(&data_dir, &split.val)?;
    let unlabelled = method.trains_on_unlabelled_cases();
    let pool = paths.unlabelled(configuration);
    if unlabelled && pool.is_dir() {
        let ids = list_preprocessed_cases(&pool)?;
        train_cases.extend(load_cases(&pool, &ids)?);
    }
    if unlabelled {
        // Validation scores predictions against labels: cases without them cannot take part.
        val_cases.retain(|case| case.seg.is_some());
        if val_cases.is_empty() {
            return Err(TrainError::Invalid(format!("fold {} has no labelled validation case", config.fold)));
        }
    }
    if config.slice_context > 0 {
        // 2.5D: the network takes each slice with its neighbours (the same stacking as predict).
        for case in train_cases.iter_mut().chain(val_cases.iter_mut()) {
            case.images = with_neighbour_slices(&case.images, config.slice_context);
        }
        plan_network.in_channels = input_channels(plan_network.in_channels, config.slice_context);
    }
    for case in train_cases.iter().chain(&val_cases) {
        if case.images.len() != plan_network.in_channels {
            return Err(TrainError::Incompatible {
                path: data_dir.join(format!("{}.json", case.properties.id)),
                detail: format!("{} channels, the network takes {}", case.images.len(), plan_network.in_channels),
            });
        }
    }

    // The method, built before the samplers take the cases.
    let inference_device = options.device.clone().unwrap_or_else(Device::flex);
    let device = inference_device.clone().autodiff();
    let context = MethodContext {
        plan: &plan,
        plans_path: &plans_path,
        configuration,
        plan_network,
        model_dir: &paths.model_dir,
        train_cases: &train_cases,
        val_cases: &val_cases,
        device,
        inference_device,
        seed: config.seed,
        optimizer: &config.optimizer,
        grad_clip_norm: config.grad_clip_norm,
    };
    let saved_state = resume_from.as_ref().map(|_| state.method_state.clone());
    let mut trainee: Box<dyn TrainingMethod> = method.build(&context, saved_state.as_ref())?;
    if let Some(dir) = &resume_from {
        trainee.load(dir)?;
    }
    state.method_state = trainee.state();
    drop(context);

    // Samplers: training batches from the batch index on, fixed validation batches.
    let mut train_sampler_config =
        SamplerConfig::from_plan(&plan, configuration, config.augmentation.clone(), config.seed)?;
    let sampled_patch = trainee.sampled_patch_size(&plan_config.patch_size);
    train_sampler_config.patch_size = sampled_patch.clone();
    train_sampler_config.oversample_foreground = config.oversample_foreground;
    train_sampler_config.allow_unlabelled = unlabelled;
    if unlabelled {
        train_sampler_config.labelled_per_batch = method.labelled_per_batch(train_sampler_config.batch_size);
    }
    let batch_size = train_sampler_config.batch_size;
    let train_cases_count = train_cases.len();
    let train_sampler = Arc::new(PatchSampler::new(train_cases, train_sampler_config)?);
    let mut val_sampler_config = SamplerConfig::from_plan(
        &plan,
        configuration,
        AugmentationConfig::none(),
        config.seed.wrapping_add(VALIDATION_SEED_OFFSET),
    )?;
    val_sampler_config.patch_size = sampled_patch.clone();
    val_sampler_config.oversample_foreground = config.oversample_foreground;
    let val_cases_count = val_cases.len();
    let val_sampler = PatchSampler::new(val_cases, val_sampler_config)?;
    let val_batches: Vec<Batch> = (0..config.validation_batches as u64).map(|b| val_sampler.batch(b)).collect();
    drop(val_sampler);

    observer.on_start(&RunInfo {
        train_cases: train_cases_count,
        val_cases: val_cases_count,
        start_epoch: state.epochs_done,
        total_epochs: state.total_epochs,
        iterations_per_epoch: config.iterations_per_epoch,
        patch_size: plan_config.patch_size.clone(),
        input_patch_size: sampled_patch,
        batch_size,
        num_params: trainee.num_params(),
        resumed: resume_from.is_some(),
    });

    let num_classes = plan.num_classes();
    let class_names: Vec<String> = plan.labels[1..].iter().map(|l| l.name.clone()).collect();
    let mut loader: Option<BatchLoader> = None;
    let loop_started = Instant::now();
    let elapsed_before = state.elapsed_s;
    let mut reason = StopReason::Finished;
    while state.epochs_done < state.total_epochs {
        if options.stop_after_epochs.is_some_and(|n| state.epochs_done >= n) {
            reason = StopReason::Interrupted;
            break;
        }
        if let (Some(budget), Some(last)) = (config.time_budget_s, state.history.last()) {
            if state.elapsed_s + last.epoch_time_s > budget {
                reason = StopReason::TimeBudget;
                break;
            }
        }
        let epoch_started = Instant::now();
        let epoch = state.epochs_done;
        let lr = poly_lr_with_exponent(config.optimizer.lr(), epoch, state.total_epochs, config.poly_exponent);
        let loader = match &mut loader {
            Some(l) => l,
            None => loader.insert(BatchLoader::spawn(
                train_sampler.clone(),
                state.next_batch_index,
                config.prefetch_batches,
                config.loader_threads,
            )?),
        };

        // Training steps.
        let mut loss_sum = 0.0;
        let mut norm_sum = 0.0;
        let mut skipped_steps = 0;
        let train_started = Instant::now();
        for iteration in 0..config.iterations_per_epoch {
            let batch = loader.next().ok_or_else(|| TrainError::Invalid("the batch loader stopped (a panic while sampling)".into()))?;
            let step = trainee.train_step(&batch, lr)?;
            state.next_batch_index += 1;
            if !step.is_finite() {
                if !config.skip_non_finite_steps {
                    let (what, value) = if step.loss.is_finite() { ("gradient norm", step.grad_norm) } else { ("loss", step.loss) };
                    let last_good = if epoch == 0 {
                        "none (no epoch finished)".to_string()
                    } else {
                        format!("{} (after epoch {epoch}; `--resume` continues from it)", last_dir.display())
                    };
                    return Err(TrainError::NonFinite { epoch: epoch + 1, step: iteration + 1, what, value, last_good });
                }
                skipped_steps += 1;
                observer.on_step(epoch + 1, iteration + 1, step.loss, lr);
                continue;
            }
            loss_sum += step.loss;
            norm_sum += step.grad_norm;
            observer.on_step(epoch + 1, iteration + 1, step.loss, lr);
        }
        let applied_steps = (config.iterations_per_epoch - skipped_steps) as f64;
        let train_time = train_started.elapsed().as_secs_f64();

        // Validation.
        observer.on_validation(epoch + 1);
        let mut dice = PseudoDice::new(num_classes);
        let mut val_loss_sum = 0.0;
        for batch in &val_batches {
            val_loss_sum += trainee.validation_step(batch, &mut dice)?;
        }
        let pseudo_dice = dice.mean();
        state.ema_pseudo_dice = ema_update(state.ema_pseudo_dice, pseudo_dice);
        let new_best = match (state.ema_pseudo_dice, state.best_ema_pseudo_dice) {
            // Nothing segmented (pretraining): the last epoch is the one to export.
            _ if !trainee.scored_by_segmentation() => true,
            (Some(ema), Some(best)) => ema > best,
            (Some(_), None) => true,
            (None, _) => state.best_epoch == 0,
        };
        if new_best {
            state.best_ema_pseudo_dice = state.ema_pseudo_dice;
            state.best_epoch = epoch + 1;
        }
        state.epochs_done = epoch + 1;
        trainee.after_epoch(epoch + 1, &val_batches, &training_dir)?;

        // With a time budget, the first epoch fixes how many epochs the schedule has.
        if let (Some(budget), false) = (config.time_budget_s, state.total_epochs_fixed) {
            let per_epoch = epoch_started.elapsed().as_secs_f64().max(1e-3);
            let remaining = (budget - state.elapsed_s - per_epoch).max(0.0);
            state.total_epochs = (state.epochs_done + (remaining / per_epoch).floor() as usize).clamp(state.epochs_done, config.epochs);
            state.total_epochs_fixed = true;
        }

        let val_count = val_batches.len().max(1) as f64;
        let mut summary = EpochSummary {
            epoch: epoch + 1,
            total_epochs: state.total_epochs,
            train_loss: loss_sum / applied_steps,
            val_loss: if val_batches.is_empty() { f64::NAN } else { val_loss_sum / val_count },
            pseudo_dice_mean: pseudo_dice,
            ema_pseudo_dice: state.ema_pseudo_dice.unwrap_or(f64::NAN),
            dice_per_class: dice.per_class(),
            lr,
            epoch_time_s: 0.0,
            iterations_per_s: config.iterations_per_epoch as f64 / train_time.max(1e-9),
            grad_norm: norm_sum / applied_steps,
            new_best,
            skipped_steps,
        };
        // The epoch time includes writing the checkpoint; it is measured just before.
        summary.epoch_time_s = epoch_started.elapsed().as_secs_f64();
        state.elapsed_s = elapsed_before + loop_started.elapsed().as_secs_f64();
        state.history.push(summary.clone());
        save_checkpoint(&last_dir, trainee.as_ref(), &state)?;
        if new_best {
            copy_checkpoint(&last_dir, &paths.checkpoint_best())?;
        }
        write_log_csv(&training_dir.join("log.csv"), &class_names, &state.history)?;
        write_progress_png(&training_dir.join("progress.png"), &state.history)?;
        observer.on_epoch(&summary);
        if observer.should_stop() && state.epochs_done < state.total_epochs {
            reason = StopReason::Interrupted;
            break;
        }
    }
    drop(loader);
    if state.epochs_done < state.total_epochs && reason == StopReason::Finished {
        reason = StopReason::Interrupted;
    }
    let manifest = write_model_folder(paths, &plan, &state, trainee.as_ref(), &method.name())?;
    Ok(TrainOutcome { reason, state, model_dir: paths.model_dir.clone(), manifest })
}

/// A run killed after writing `checkpoint_last` of a new best epoch but before copying it to
/// `checkpoint_best` would export an older best: when the last checkpoint is the best epoch and
/// `checkpoint_best` does not hold it, copy it again (so a killed and resumed run exports the
/// same weights as an uninterrupted one).
fn repair_best_checkpoint(paths: &RunPaths, last: &Path, state: &TrainState) -> Result<()> {
    if state.epochs_done == 0 || state.best_epoch != state.epochs_done {
        return Ok(());
    }
    let best_done = find_checkpoint(&paths.checkpoint_best()).and_then(|dir| load_state(&dir).ok()).map(|s| s.epochs_done);
    if best_done != Some(state.best_epoch) {
        copy_checkpoint(last, &paths.checkpoint_best())?;
    }
    Ok(())
}

/// Seconds since the Unix epoch as an ISO 8601 UTC timestamp.
pub fn utc_timestamp(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest / 60 % 60, rest % 60)
}

/// `model.json`, `plans.json`, `labels.json` and `weights.bpk` (the method's exported network
/// from the best checkpoint, else the last).
fn write_model_folder(
    paths: &RunPaths,
    plan: &Plan,
    state: &TrainState,
    method: &dyn TrainingMethod,
    method_name: &str,
) -> Result<ModelManifest> {
    let model_dir = &paths.model_dir;
    let best = find_checkpoint(&paths.checkpoint_best()).or_else(|| find_checkpoint(&paths.checkpoint_last()));
    let Some(best) = best else {
        return Err(TrainError::Missing { path: paths.checkpoint_last(), detail: "no checkpoint: no epoch finished".into() });
    };
    let weights = model_dir.join(WEIGHTS_FILE);
    let exported = method.export();
    let source = best.join(&exported.checkpoint_file);
    let tmp = spineseg_io::atomic::temporary_path(&weights);
    std::fs::copy(&source, &tmp).map_err(os(&source))?;
    std::fs::rename(&tmp, &weights).map_err(os(&weights))?;
    for (file, name) in &exported.companions {
        let (source, target) = (best.join(file), model_dir.join(name));
        let tmp = spineseg_io::atomic::temporary_path(&target);
        std::fs::copy(&source, &tmp).map_err(os(&source))?;
        std::fs::rename(&tmp, &target).map_err(os(&target))?;
    }
    plan.save(&model_dir.join(spineseg_preprocessing::plan::PLAN_FILE))?;
    let labels = paths.labels();
    if labels.is_file() {
        let target = model_dir.join(spineseg_preprocessing::plan::LABELS_FILE);
        let tmp = spineseg_io::atomic::temporary_path(&target);
        std::fs::copy(&labels, &tmp).map_err(os(&labels))?;
        std::fs::rename(&tmp, &target).map_err(os(&target))?;
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let record = TrainingRecord {
        seed: state.config.seed,
        fold: state.config.fold,
        epochs_done: state.epochs_done,
        iterations_per_epoch: state.config.iterations_per_epoch,
        best_epoch: state.best_epoch,
        best_ema_pseudo_dice: state.best_ema_pseudo_dice,
        train_time_s: state.elapsed_s,
        optimizer: state.config.optimizer.name().into(),
        method: method_name.to_string(),
        method_settings: state.method.clone(),
        date: utc_timestamp(now),
    };
    let mut manifest = manifest_for(state.config.configuration, exported.network, &record);
    manifest.slice_context = state.config.slice_context;
    save_manifest(&model_dir.join(MANIFEST_FILE), &manifest)?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_iso_utc() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400 + 3_723), "2000-02-29T01:02:03Z");
        assert_eq!(utc_timestamp(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
