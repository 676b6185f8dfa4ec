//! The training loop (nnU-Net v2's `nnUNetTrainer.run_training`), from a work folder written by
//! `spineseg plan` to a model folder (see [`crate::manifest`]).
//!
//! Per epoch `e` (0-based):
//! 1. learning rate `poly(lr, e, total_epochs)`, fixed for the epoch (nnU-Net steps its
//!    scheduler per epoch);
//! 2. `iterations_per_epoch` steps on batches `e * iterations_per_epoch + i` of a
//!    [`PatchSampler`] over the fold's training cases (made ahead on a [`BatchLoader`] thread):
//!    forward with deep supervision, [`DeepSupervisionLoss`] (plus the plan's `ccae_weight` x
//!    [`ccae_loss`] for a text-guided network; the logged training loss includes it, the
//!    validation loss does not), backward, global-norm gradient clipping, optimiser step;
//! 3. validation on `validation_batches` fixed batches (the same every epoch) of a sampler over
//!    the validation cases without augmentation (nnU-Net's validation loader also oversamples
//!    foreground): loss and TP/FP/FN of the arg-max of the full-resolution output,
//!    [`PseudoDice`], its EMA;
//! 4. `checkpoint_last` (and `checkpoint_best` when the EMA improved), `log.csv`,
//!    `progress.png`.
//!
//! At the end (all epochs, the time budget, or an observer asking to stop) the model folder gets
//! `model.json`, `plans.json`, `labels.json` and `weights.bpk` (the best checkpoint's weights).
//!
//! # Determinism
//! Batches are pure functions of `(seed, batch index)`, the network is initialised from `seed`,
//! and a checkpoint holds weights, optimiser state and the batch index, so a run stopped after
//! any epoch and resumed computes exactly what an uninterrupted run computes.

use crate::checkpoint::{
    copy_checkpoint, find_checkpoint, load_optimizer, load_state, load_weights, save_checkpoint, TrainState,
    MODEL_FILE, OPTIMIZER_FILE, STATE_FORMAT_VERSION,
};
use crate::config::TrainerConfig;
use crate::contrastive::ccae_loss;
use crate::error::{os, Result, TrainError};
use crate::loss::{DeepSupervisionLoss, DeepSupervisionLossConfig, DiceCeLossConfig};
use crate::manifest::{manifest_for, save_manifest, try_network_config_from_plan, ModelManifest, TrainingRecord, MANIFEST_FILE, WEIGHTS_FILE};
use crate::optim::{clip_grad_norm, poly_lr_with_exponent};
use crate::progress::{write_log_csv, write_progress_png, EpochSummary, RunInfo, TrainingObserver};
use crate::pseudo_dice::{ema_update, PseudoDice};
use crate::splits::load_or_create_splits;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use spineseg_dataloading::augment::AugmentationConfig;
use spineseg_dataloading::partial_labels::annotated_classes;
use spineseg_preprocessing::plan::{ConfigurationName, Plan};
use spineseg_dataloading::sampling::{load_cases, Batch, BatchLoader, PatchSampler, SamplerConfig};
use spineseg_infer::model_folder::{PromptEmbeddings, PROMPT_EMBEDDINGS_FILE};
use spineseg_model::{PlainConvUNet, PlainConvUNetConfig, TextGuidanceConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
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
        self.work.join("plans.json")
    }
    pub fn labels(&self) -> PathBuf {
        self.work.join("labels.json")
    }
    pub fn preprocessed(&self, configuration: ConfigurationName) -> PathBuf {
        self.work.join("preprocessed").join(configuration.as_str())
    }
    pub fn work_splits(&self) -> PathBuf {
        self.work.join("splits_final.json")
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

/// Serialises seeding + initialisation: flex's RNG is global to the process, and parameters are
/// created lazily, so both happen under this lock and every parameter is touched before release.
static INIT_LOCK: Mutex<()> = Mutex::new(());

struct Materialise;
impl ModuleVisitor for Materialise {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// A network initialised deterministically from `seed` on `device`.
pub fn init_network(config: &PlainConvUNetConfig, device: &Device, seed: u64) -> PlainConvUNet {
    let _guard = INIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    device.seed(seed);
    let model = config.init(device);
    model.visit(&mut Materialise);
    model
}

/// `MODEL/prompt_embeddings.json`, checked against the plan's classes.
fn load_prompt_embeddings(paths: &RunPaths, plan: &Plan) -> Result<PromptEmbeddings> {
    let path = paths.model_dir.join(PROMPT_EMBEDDINGS_FILE);
    if !path.is_file() {
        return Err(TrainError::Missing {
            path,
            detail: "text-guided training needs the class-prompt embeddings (`spineseg train --text-guided` writes them)".into(),
        });
    }
    let embeddings = PromptEmbeddings::load(&path)?;
    embeddings.check_plan(plan, &path)?;
    Ok(embeddings)
}

/// `[B, C, *patch]` images and `[B, *patch]` labels as canonical 5D tensors
/// (`[B, C, 1, Y, Z]` for 2D) on `device`.
fn batch_tensors(batch: &Batch, device: &Device) -> (Tensor<5>, Tensor<5, Int>) {
    let spatial: [usize; 3] = match batch.patch_shape.as_slice() {
        [y, z] => [1, *y, *z],
        [x, y, z] => [*x, *y, *z],
        other => panic!("a patch should have 2 or 3 sides, got {other:?}"),
    };
    let [d, h, w] = spatial;
    let images = Tensor::<5>::from_data(TensorData::new(batch.images.clone(), [batch.batch_size, batch.channels, d, h, w]), device);
    let labels: Vec<i64> = batch.seg.iter().map(|&v| v as i64).collect();
    let target = Tensor::<5, Int>::from_data(TensorData::new(labels, [batch.batch_size, 1, d, h, w]), device);
    (images, target)
}

/// `[batch, classes]`: which classes each sample of `batch` annotates, from its case's entry of
/// `annotated` (indexed like the sampler's cases); `None` when every sample annotates every
/// foreground class (background always counts as supervised).
///
/// A full mask gives the plain loss in exact arithmetic but through other floating-point
/// operations (the marginal cross-entropy), whose rounding depends on the CPU's SIMD kernels.
/// Passing no mask makes a batch without missing labels train exactly as without
/// `--partial-labels`, on every CPU.
fn batch_label_mask(batch: &Batch, annotated: &[Vec<bool>], device: &Device) -> Option<Tensor<2, Bool>> {
    let classes = annotated.first().map_or(0, Vec::len);
    let rows = || batch.samples.iter().map(|sample| &annotated[sample.case]);
    if rows().all(|row| row.iter().skip(1).all(|&flag| flag)) {
        return None;
    }
    let flags: Vec<bool> = rows().flat_map(|row| row.iter().copied()).collect();
    Some(Tensor::<2, Bool>::from_data(TensorData::new(flags, [batch.samples.len(), classes]), device))
}

fn check_divisible(config: &PlainConvUNetConfig, patch: &[usize]) -> Result<()> {
    let total = config.cumulative_stride(config.n_stages() - 1);
    if patch.iter().zip(&total).any(|(p, s)| p % s != 0) {
        return Err(TrainError::Invalid(format!("patch {patch:?} is not divisible by the network's total stride {total:?}")));
    }
    Ok(())
}

/// Trains (or resumes) a model; see the module documentation.
///
/// `config` is used for a new run; with `options.resume` the settings stored in
/// `checkpoint_last/state.json` are used instead (so the result does not depend on flags).
pub fn train(
    paths: &RunPaths,
    config: TrainerConfig,
    options: &RunOptions,
    observer: &mut dyn TrainingObserver,
) -> Result<TrainOutcome> {
    let started = Instant::now();
    let plans_path = paths.plans();
    if !plans_path.is_file() {
        return Err(TrainError::Missing { path: plans_path, detail: "no plan (run `spineseg plan DATASET --out WORK` first)".into() });
    }
    let plan = Plan::load(&plans_path)?;

    // The run's state: new, or from the last checkpoint.
    let last_dir = paths.checkpoint_last();
    // A new text-guided run reads its class embeddings once, for the network's text width and
    // its frozen parameter; a resumed run takes both from its checkpoint.
    let mut new_run_prompts: Option<PromptEmbeddings> = None;
    let (mut state, resume_from) = if options.resume {
        let dir = find_checkpoint(&last_dir).ok_or_else(|| TrainError::Missing {
            path: last_dir.clone(),
            detail: "no checkpoint to resume from".into(),
        })?;
        (load_state(&dir)?, Some(dir))
    } else {
        if find_checkpoint(&last_dir).is_some() {
            return Err(TrainError::Invalid(format!(
                "{} already holds a training run; use --resume to continue it or another output folder",
                paths.model_dir.display()
            )));
        }
        config.validate()?;
        let mut network = try_network_config_from_plan(&plan, config.configuration)?;
        if config.text_guided {
            let prompts = new_run_prompts.insert(load_prompt_embeddings(paths, &plan)?);
            let settings = &plan.text_guidance;
            network = network.with_text_guidance(Some(
                TextGuidanceConfig::new(prompts.dim)
                    .with_embed_dim(settings.embed_dim)
                    .with_heads(settings.heads)
                    .with_fused_stages(settings.fused_stages),
            ));
            network
                .validate()
                .map_err(|e| TrainError::Invalid(format!("{}: text_guidance: {e}", plans_path.display())))?;
        }
        let total_epochs = config.epochs;
        let state = TrainState {
            format_version: STATE_FORMAT_VERSION,
            config,
            network,
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
        (state, None)
    };
    let config = state.config.clone();
    let configuration = config.configuration;
    let plan_config = plan
        .configuration(configuration)
        .ok_or_else(|| TrainError::Invalid(format!("{}: the plan has no configuration {configuration}", plans_path.display())))?
        .clone();
    let network = state.network.clone();
    if resume_from.is_some() && try_network_config_from_plan(&plan, configuration)?.features_per_stage != network.features_per_stage {
        return Err(TrainError::Incompatible {
            path: plans_path,
            detail: "the plan's network differs from the checkpoint's; resume with the plan the run started with".into(),
        });
    }
    check_divisible(&network, &plan_config.patch_size)?;

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
    spineseg_io::json::write_json(&training_dir.join("splits_final.json"), &splits)?;
    let train_cases = load_cases(&data_dir, &split.train)?;
    let val_cases = load_cases(&data_dir, &split.val)?;
    for case in train_cases.iter().chain(&val_cases) {
        if case.images.len() != network.in_channels {
            return Err(TrainError::Incompatible {
                path: data_dir.join(format!("{}.json", case.properties.id)),
                detail: format!("{} channels, the network takes {}", case.images.len(), network.in_channels),
            });
        }
    }

    // Partial labels: the classes each case annotates, looked up by the samples' case index.
    let annotated_in = |cases: &[spineseg_preprocessing::preprocess::PreprocessedCase]| -> Option<Vec<Vec<bool>>> {
        config.partial_labels.then(|| {
            cases
                .iter()
                .map(|case| match &case.seg {
                    Some(seg) => annotated_classes(&plan.labels, seg.data()),
                    None => vec![true; plan.labels.len()],
                })
                .collect()
        })
    };
    let train_annotated = annotated_in(&train_cases);
    let val_annotated = annotated_in(&val_cases);

    // Samplers: training batches from the batch index on, fixed validation batches.
    let mut train_sampler_config =
        SamplerConfig::from_plan(&plan, configuration, config.augmentation.clone(), config.seed)?;
    train_sampler_config.oversample_foreground = config.oversample_foreground;
    let batch_size = train_sampler_config.batch_size;
    let train_sampler = Arc::new(PatchSampler::new(train_cases, train_sampler_config)?);
    let mut val_sampler_config = SamplerConfig::from_plan(
        &plan,
        configuration,
        AugmentationConfig::none(),
        config.seed.wrapping_add(VALIDATION_SEED_OFFSET),
    )?;
    val_sampler_config.oversample_foreground = config.oversample_foreground;
    let val_sampler = PatchSampler::new(val_cases, val_sampler_config)?;
    let val_batches: Vec<Batch> = (0..config.validation_batches as u64).map(|b| val_sampler.batch(b)).collect();
    drop(val_sampler);

    // Network, optimiser, loss.
    let base_device = options.device.clone().unwrap_or_else(Device::flex);
    let device = base_device.clone().autodiff();
    let mut model = init_network(&network, &device, config.seed);
    let mut optimizer: ModuleOptimizer = config.optimizer.init();
    if let Some(dir) = &resume_from {
        // The weights hold the class embeddings of a text-guided run.
        model = load_weights(model, &dir.join(MODEL_FILE))?;
        optimizer = load_optimizer(optimizer, &dir.join(OPTIMIZER_FILE))?;
    } else if let Some(prompts) = &new_run_prompts {
        let fusion = model.text_fusion.take().expect("a text-guided network has a text fusion");
        let (values, shape) = prompts.matrix();
        let embeddings = Tensor::<2>::from_data(TensorData::new(values, shape), &device);
        model.text_fusion = Some(fusion.with_class_embeddings(embeddings));
    }
    let ccae = model.text_fusion.is_some().then(|| plan.text_guidance.clone()).filter(|s| s.ccae_weight > 0.0);
    let loss_fn: DeepSupervisionLoss =
        DeepSupervisionLossConfig::new(DiceCeLossConfig::new().with_batch_dice(plan_config.batch_dice), model.num_outputs()).init();

    observer.on_start(&RunInfo {
        train_cases: split.train.len(),
        val_cases: split.val.len(),
        start_epoch: state.epochs_done,
        total_epochs: state.total_epochs,
        iterations_per_epoch: config.iterations_per_epoch,
        patch_size: plan_config.patch_size.clone(),
        batch_size,
        num_params: model.num_params(),
        resumed: resume_from.is_some(),
    });

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
        let train_started = Instant::now();
        for iteration in 0..config.iterations_per_epoch {
            let batch = loader.next().ok_or_else(|| TrainError::Invalid("the batch loader stopped (a panic while sampling)".into()))?;
            let (images, target) = batch_tensors(&batch, &device);
            let label_mask = train_annotated.as_deref().and_then(|a| batch_label_mask(&batch, a, &device));
            let output = model.forward_detailed(images);
            let mut loss = loss_fn.forward(output.logits, target.clone(), label_mask.clone());
            if let (Some(settings), Some(fusion)) = (&ccae, &model.text_fusion) {
                let contrastive = ccae_loss(fusion, output.features, target, label_mask, settings.ccae_temperature);
                loss = loss + contrastive.mul_scalar(settings.ccae_weight);
            }
            let loss_value = loss.clone().into_scalar::<f32>() as f64;
            let mut grads = GradientsParams::from_grads(loss.backward(), &model);
            let norm = match config.grad_clip_norm {
                Some(max) => clip_grad_norm(&model, &mut grads, max),
                None => f64::NAN,
            };
            model = optimizer.step(lr, model, grads);
            state.next_batch_index += 1;
            loss_sum += loss_value;
            norm_sum += norm;
            observer.on_step(epoch + 1, iteration + 1, loss_value, lr);
        }
        let train_time = train_started.elapsed().as_secs_f64();

        // Validation.
        observer.on_validation(epoch + 1);
        let eval_model = model.valid();
        let mut dice = PseudoDice::new(network.num_classes);
        let mut val_loss_sum = 0.0;
        for batch in &val_batches {
            let (images, target) = batch_tensors(batch, &base_device);
            let label_mask = val_annotated.as_deref().and_then(|a| batch_label_mask(batch, a, &base_device));
            let outputs = eval_model.forward_canonical(images);
            let prediction = outputs[0].clone().argmax(1);
            val_loss_sum += loss_fn.forward(outputs, target, label_mask).into_scalar::<f32>() as f64;
            let prediction: Vec<u8> = prediction
                .try_into_vec_as::<i64>()
                .expect("arg max indices should convert to i64")
                .into_iter()
                .map(|c| c as u8)
                .collect();
            let per_sample = batch.seg.len() / batch.batch_size.max(1);
            for (b, sample) in batch.samples.iter().enumerate() {
                let voxels = b * per_sample..(b + 1) * per_sample;
                let annotated = val_annotated.as_ref().map(|a| a[sample.case].as_slice());
                dice.add_annotated(&prediction[voxels.clone()], &batch.seg[voxels], annotated);
            }
        }
        drop(eval_model);
        let pseudo_dice = dice.mean();
        state.ema_pseudo_dice = ema_update(state.ema_pseudo_dice, pseudo_dice);
        let new_best = match (state.ema_pseudo_dice, state.best_ema_pseudo_dice) {
            (Some(ema), Some(best)) => ema > best,
            (Some(_), None) => true,
            (None, _) => state.best_epoch == 0,
        };
        if new_best {
            state.best_ema_pseudo_dice = state.ema_pseudo_dice;
            state.best_epoch = epoch + 1;
        }
        state.epochs_done = epoch + 1;

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
            train_loss: loss_sum / config.iterations_per_epoch as f64,
            val_loss: if val_batches.is_empty() { f64::NAN } else { val_loss_sum / val_count },
            pseudo_dice_mean: pseudo_dice,
            ema_pseudo_dice: state.ema_pseudo_dice.unwrap_or(f64::NAN),
            dice_per_class: dice.per_class(),
            lr,
            epoch_time_s: 0.0,
            iterations_per_s: config.iterations_per_epoch as f64 / train_time.max(1e-9),
            grad_norm: norm_sum / config.iterations_per_epoch as f64,
            new_best,
        };
        // The epoch time includes writing the checkpoint; it is measured just before.
        summary.epoch_time_s = epoch_started.elapsed().as_secs_f64();
        state.elapsed_s = elapsed_before + loop_started.elapsed().as_secs_f64();
        state.history.push(summary.clone());
        save_checkpoint(&last_dir, &model, &optimizer, &state)?;
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
    let manifest = write_model_folder(paths, &plan, &state, started)?;
    Ok(TrainOutcome { reason, state, model_dir: paths.model_dir.clone(), manifest })
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

/// `model.json`, `plans.json`, `labels.json` and `weights.bpk` (best checkpoint, else last).
fn write_model_folder(paths: &RunPaths, plan: &Plan, state: &TrainState, _started: Instant) -> Result<ModelManifest> {
    let model_dir = &paths.model_dir;
    let best = find_checkpoint(&paths.checkpoint_best()).or_else(|| find_checkpoint(&paths.checkpoint_last()));
    let Some(best) = best else {
        return Err(TrainError::Missing { path: paths.checkpoint_last(), detail: "no checkpoint: no epoch finished".into() });
    };
    let weights = model_dir.join(WEIGHTS_FILE);
    let source = best.join(MODEL_FILE);
    let tmp = spineseg_io::atomic::temporary_path(&weights);
    std::fs::copy(&source, &tmp).map_err(os(&source))?;
    std::fs::rename(&tmp, &weights).map_err(os(&weights))?;
    plan.save(&model_dir.join("plans.json"))?;
    let labels = paths.labels();
    if labels.is_file() {
        let target = model_dir.join("labels.json");
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
        date: utc_timestamp(now),
    };
    let manifest = manifest_for(state.config.configuration, state.network.clone(), &record);
    save_manifest(&model_dir.join(MANIFEST_FILE), &manifest)?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_masks_follow_each_samples_case() {
        use spineseg_dataloading::sampling::SampleInfo;
        let sample = |case| SampleInfo { case, origin: [0; 3], valid: [1, 2, 2], forced_foreground: false, class: None, labelled: true };
        let batch = Batch {
            images: vec![0.0; 12],
            seg: vec![0; 12],
            batch_size: 3,
            channels: 1,
            patch_shape: vec![2, 2],
            samples: vec![sample(1), sample(0), sample(1)],
        };
        let annotated = vec![vec![true, true, false], vec![true, false, true]];
        let mask = batch_label_mask(&batch, &annotated, &Device::flex()).expect("two cases lack a class");
        assert_eq!(mask.dims(), [3, 3]);
        let flags: Vec<bool> = mask.into_data().try_to_vec::<bool>().unwrap();
        assert_eq!(flags, [true, false, true, true, true, false, true, false, true]);
        // Every sample annotates every foreground class (background's flag does not matter):
        // no mask, so the loss is the plain one, operation for operation.
        let complete = vec![vec![false, true, true], vec![true, true, true]];
        assert!(batch_label_mask(&batch, &complete, &Device::flex()).is_none());
    }

    #[test]
    fn timestamps_are_iso_utc() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400 + 3_723), "2000-02-29T01:02:03Z");
        assert_eq!(utc_timestamp(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
