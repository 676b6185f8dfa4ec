//! `spineseg demo`: the whole pipeline on synthetic data in a few minutes, on a CPU.
//!
//! phantom cohort -> plan + preprocess (2D, small network) -> train for a time budget ->
//! predict the held-out cases -> evaluate -> summary table and `DIR/overlay.png` (prediction
//! next to the reference).
//!
//! Layout of `DIR`:
//! ```text
//! DIR/dataset/       nnU-Net raw phantom dataset (imagesTr, labelsTr, dataset.json)
//! DIR/work/          fingerprint.json, plans.json, labels.json, preprocessed/2d/
//! DIR/model/         trained model folder (model.json, plans.json, labels.json, weights.bpk)
//! DIR/predictions/   held-out predictions, DIR/reference/ their reference labels
//! DIR/evaluation/    metrics.csv, summary.json
//! DIR/overlay.png    mid-sagittal slice of the first held-out case: prediction | reference
//! ```

use crate::progress::{print_plan_step, PredictionBars};
use crate::Outcome;
use anyhow::{bail, Context, Result};
use spineseg_render::overlay_comparison::write_comparison_overlay;
use spineseg_phantom::{case_id, write_nnunet_dataset, PhantomConfig};
use spineseg_planning::pipeline::{plan_and_preprocess, PlanAndPreprocessOptions, LABELS_FILE, PLAN_FILE};
use spineseg_preprocessing::plan::{ConfigurationName, Plan, PlanOptions};
use spineseg_anatomy::Ontology;
use spineseg_infer::workflow::{job_for_file, predict_jobs, write_untrained_model, PredictJob};
use spineseg_infer::{ModelFolder, OutputLabels};
use spineseg_io::Label;
use spineseg_metrics::{evaluate_folders, format_table, write_report, EvaluationOptions};
use spineseg_train::{
    train, EngineConfig, EpochSummary, MethodConfig, OptimizerConfig, RunInfo, RunOptions, RunPaths, TrainingObserver,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Run the whole pipeline on synthetic lumbar MRI phantoms: generate a cohort, plan and
/// preprocess (2D), train a small U-Net for a few minutes on the CPU, predict the held-out
/// cases, evaluate them, and write an overlay PNG of prediction and reference.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Output folder (dataset, plan, model, predictions, metrics, overlay.png).
    #[arg(long, default_value = "demo")]
    pub out: PathBuf,
    /// Phantom cases in total; the last `--test-cases` are held out for evaluation.
    #[arg(long, default_value_t = 10)]
    pub cases: usize,
    /// Held-out cases.
    #[arg(long, default_value_t = 2)]
    pub test_cases: usize,
    /// Training time budget in minutes. 0 skips training and predicts with random weights
    /// (checks the pipeline only; the metrics are meaningless).
    #[arg(long, default_value_t = 3.0)]
    pub minutes: f64,
    /// Random seed of the phantoms and the training.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Width of the first U-Net stage (small for CPU speed).
    #[arg(long, default_value_t = 8)]
    pub base_features: usize,
}

pub fn run(args: DemoArgs) -> Result<Outcome> {
    let started = Instant::now();
    if args.test_cases == 0 || args.cases < args.test_cases + 2 {
        bail!("--cases must be at least --test-cases + 2 (got {} and {})", args.cases, args.test_cases);
    }
    if !(args.minutes.is_finite() && args.minutes >= 0.0) {
        bail!("--minutes must be >= 0, got {}", args.minutes);
    }
    let out = &args.out;
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create folder", out.display()))?;

    step(1, "phantom cohort");
    let dataset_dir = out.join("dataset");
    let summary = write_nnunet_dataset(&dataset_dir, &PhantomConfig::small(), args.cases, args.seed, true)?;
    let test_ids: Vec<String> = (args.cases - args.test_cases..args.cases).map(case_id).collect();
    eprintln!(
        "{} cases in {} ({} for training, held out: {})",
        summary.cases.len(),
        dataset_dir.display(),
        args.cases - args.test_cases,
        test_ids.join(", ")
    );

    step(2, "plan and preprocess (2d)");
    let work = out.join("work");
    let options = PlanAndPreprocessOptions {
        configurations: vec![ConfigurationName::TwoD],
        exclude_cases: test_ids.clone(),
        plan: PlanOptions { base_features: args.base_features, ..PlanOptions::default() },
        ..PlanAndPreprocessOptions::default()
    };
    let planned = plan_and_preprocess(&dataset_dir, &work, &options, &mut print_plan_step)?;
    println!("plan written to {}", planned.plans_path.display());

    let model_dir = out.join("model");
    if args.minutes > 0.0 {
        step(3, &format!("train for {} min", args.minutes));
        train_demo_model(&work, &model_dir, args.minutes, args.seed)?;
    } else {
        step(3, "no training (--minutes 0): random weights");
        write_untrained_demo_model(&work, &model_dir, args.seed)?;
    }

    step(4, "predict the held-out cases");
    let model = ModelFolder::load(&model_dir)?;
    let predictions = out.join("predictions");
    let reference = out.join("reference");
    for dir in [&predictions, &reference] {
        // Stale files from an earlier run with other cases would break the pairing.
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("{}: cannot clear folder", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create folder", dir.display()))?;
    }
    let jobs = test_ids
        .iter()
        .map(|id| job_for_file(&dataset_dir.join("imagesTr").join(format!("{id}_0000.nii.gz")), &predictions, 1))
        .collect::<Result<Vec<PredictJob>, _>>()?;
    let mut options = model.predict_options()?;
    let mut bars = PredictionBars::new(jobs.len());
    options.sliding_window.progress = Some(bars.window_callback());
    let failures = predict_jobs(&model, &jobs, &options, &mut bars);
    bars.finish();
    if let Some(failure) = failures.into_iter().next() {
        return Err(anyhow::Error::from(failure.error).context(format!("predicting {}", failure.id)));
    }
    for id in &test_ids {
        let from = dataset_dir.join("labelsTr").join(format!("{id}.nii.gz"));
        let to = reference.join(format!("{id}.nii.gz"));
        std::fs::copy(&from, &to).with_context(|| format!("{}: cannot copy to {}", from.display(), to.display()))?;
    }

    step(5, "evaluate");
    let names: BTreeMap<Label, String> =
        Ontology::standard().structures().iter().map(|s| (s.id.0, s.name.clone())).collect();
    let report = evaluate_folders(&predictions, &reference, &EvaluationOptions::default(), &names)?;
    let evaluation = out.join("evaluation");
    std::fs::create_dir_all(&evaluation).with_context(|| format!("{}: cannot create folder", evaluation.display()))?;
    write_report(&evaluation, &report)?;
    print!("{}", format_table(&report));

    let overlay = out.join("overlay.png");
    let first_reference = reference.join(format!("{}.nii.gz", test_ids[0]));
    let panels = [("prediction", jobs[0].output.as_path()), ("reference", first_reference.as_path())];
    write_comparison_overlay(&jobs[0].channels[0], &panels, &overlay)?;
    eprintln!("wrote {}", overlay.display());
    println!(
        "demo finished in {:.1} min: model {}, metrics {}, overlay {}",
        started.elapsed().as_secs_f64() / 60.0,
        model_dir.display(),
        evaluation.join("summary.json").display(),
        overlay.display()
    );
    Ok(Outcome::Success)
}

fn step(n: usize, what: &str) {
    eprintln!("\n== {n}/5 {what}");
}

/// Trains the demo's model from the work folder `work` into `model_dir` (replaced) within
/// `minutes`, with spineseg-train's loop (nnU-Net's trainer; the time budget shortens the
/// learning-rate schedule to the epochs that fit). Prints one line per epoch.
fn train_demo_model(work: &Path, model_dir: &Path, minutes: f64, seed: u64) -> Result<()> {
    if model_dir.exists() {
        // A checkpoint from an earlier demo run would make the trainer refuse to start.
        std::fs::remove_dir_all(model_dir).with_context(|| format!("{}: cannot clear folder", model_dir.display()))?;
    }
    let mut config = EngineConfig::new(ConfigurationName::TwoD);
    config.seed = seed;
    config.time_budget_s = Some(minutes * 60.0);
    // Short epochs so that the schedule gets several epochs (and checkpoints) in a few minutes.
    config.iterations_per_epoch = 25;
    config.validation_batches = 5;
    // Adam moves much faster than nnU-Net's SGD in a budget of a few hundred steps.
    config.optimizer = OptimizerConfig::adamw().with_lr(3e-3);
    let paths = RunPaths { work: work.to_path_buf(), model_dir: model_dir.to_path_buf() };
    let outcome = train(&paths, config, MethodConfig::default(), &RunOptions::default(), &mut EpochPrinter)?;
    let state = &outcome.state;
    eprintln!(
        "trained {} epochs in {:.1} min; best EMA pseudo-Dice {} at epoch {}",
        state.epochs_done,
        state.elapsed_s / 60.0,
        state.best_ema_pseudo_dice.map_or("n/a".to_string(), |d| format!("{d:.3}")),
        state.best_epoch
    );
    Ok(())
}

/// One line per epoch.
struct EpochPrinter;

impl TrainingObserver for EpochPrinter {
    fn on_start(&mut self, info: &RunInfo) {
        eprintln!(
            "training on {} cases (validation {}), patch {:?}, batch {}, {:.2} M parameters",
            info.train_cases,
            info.val_cases,
            info.patch_size,
            info.batch_size,
            info.num_params as f64 / 1e6
        );
    }
    fn on_epoch(&mut self, e: &EpochSummary) {
        eprintln!(
            "epoch {:>3}/{:<3} loss {:.3} val {:.3} pseudo-Dice {:.3} (EMA {:.3}) {:.1} s{}",
            e.epoch,
            e.total_epochs,
            e.train_loss,
            e.val_loss,
            e.pseudo_dice_mean,
            e.ema_pseudo_dice,
            e.epoch_time_s,
            if e.new_best { " *" } else { "" }
        );
    }
}

/// A model folder with random weights for the work folder's 2D configuration.
fn write_untrained_demo_model(work: &Path, model_dir: &Path, seed: u64) -> Result<()> {
    let plan = Plan::load(&work.join(PLAN_FILE))?;
    let labels = OutputLabels::load(&work.join(LABELS_FILE))?;
    write_untrained_model(model_dir, &plan, &labels, ConfigurationName::TwoD, seed)?;
    Ok(())
}
