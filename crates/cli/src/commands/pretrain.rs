//! `spineseg pretrain`: ConvNeXt V2's masked-autoencoder (FCMAE) pretraining of the plan's
//! ConvNeXt V2 encoder on unlabelled images, for `spineseg train --encoder`.

use crate::training_progress::{set_compute_threads, stop_reason_text, CliObserver};
use crate::values::{ConfigurationArg, OptimizerArg};
use crate::Outcome;
use anyhow::{bail, Context, Result};
use spineseg_preprocessing::crop::CaseVolumes;
use spineseg_preprocessing::plan::{ConfigurationName, Plan};
use spineseg_preprocessing::preprocess::{preprocess_case, save_preprocessed};
use spineseg_train::{train, EngineConfig, FcmaeSettings, MethodConfig, RunOptions, RunPaths};
use std::path::{Path, PathBuf};

/// Pretrain the ConvNeXt V2 encoder of a plan's configuration as a masked autoencoder (FCMAE:
/// 60 % of the 32-pixel patches hidden, the hidden pixels reconstructed) on unlabelled images
/// plus the images of the fold's training cases (labels unused), and write an encoder folder
/// (a model folder whose method is `fcmae`) that `spineseg train --encoder` starts from.
/// Progress, checkpoints, `--resume`, log.csv and progress.png as for `train`; each epoch draws
/// masked input | reconstruction | original into ENCODER/training/reconstruction.png.
#[derive(clap::Args)]
pub struct PretrainArgs {
    /// Work folder written by `spineseg plan` (the plan fixes spacing, normalisation, patch and
    /// network; the unlabelled images are preprocessed into WORK/unlabelled/CONFIGURATION).
    pub work: PathBuf,
    /// Folders of unlabelled images (.nii, .nii.gz, .mha, .mhd; one file per image, one channel),
    /// e.g. ../shared/data/spider-gradings/images. Without it: only the fold's training images
    /// (and what an earlier pretrain put into WORK/unlabelled).
    #[arg(long, num_args = 1.., value_name = "DIR")]
    pub images: Vec<PathBuf>,
    /// Encoder folder to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Plan configuration: 2d or 3d_fullres.
    #[arg(long, value_enum, default_value = "2d")]
    pub configuration: ConfigurationArg,
    /// Fold of WORK/splits_final.json whose training cases' images join the pool (its
    /// validation cases give the validation loss; keep the fold of the runs that will use the
    /// encoder, so they never validate on images it saw).
    #[arg(long, default_value_t = 0)]
    pub fold: usize,
    /// Epochs of the learning-rate schedule.
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    /// Steps per epoch.
    #[arg(long, default_value_t = 50)]
    pub iterations_per_epoch: usize,
    /// Fixed validation batches per epoch for the validation reconstruction loss.
    #[arg(long, default_value_t = 4)]
    pub validation_batches: usize,
    /// Fraction of patches hidden per image.
    #[arg(long, default_value_t = FcmaeSettings::default().mask_ratio)]
    pub mask_ratio: f64,
    /// sgd or adamw (ConvNeXt V2 pretrains with AdamW).
    #[arg(long, value_enum, default_value = "adamw")]
    pub optimizer: OptimizerArg,
    /// Initial learning rate (default: the optimiser's).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Seed of initialisation, batches and masks.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Continue the run in OUT from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many epochs in total (the run can be continued with --resume).
    #[arg(long)]
    pub stop_after_epochs: Option<usize>,
    /// Compute threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bar (one line per epoch only).
    #[arg(long)]
    pub quiet: bool,
}

/// The image files of `dir` that spineseg reads, sorted.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("{}: cannot read folder", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            p.is_file() && [".nii", ".nii.gz", ".mha", ".mhd"].iter().any(|ext| name.ends_with(ext))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// A case id for an unlabelled image: its folder's and file's names, made safe for file names.
fn unlabelled_id(path: &Path) -> String {
    let folder = path.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()).unwrap_or("images");
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("image");
    let stem = [".nii.gz", ".nii", ".mha", ".mhd"].iter().find_map(|ext| name.strip_suffix(ext)).unwrap_or(name);
    format!("unlabelled_{folder}_{stem}").chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}

/// Preprocesses the images of `folders` into `pool` (as the plan preprocesses training cases),
/// skipping those already there; returns (added, already there).
pub(crate) fn fill_pool(folders: &[PathBuf], plan: &Plan, configuration: ConfigurationName, pool: &Path) -> Result<(usize, usize)> {
    if plan.channel_names.len() != 1 && !folders.is_empty() {
        bail!("the plan's network takes {} channels; --images reads one single-channel image per file", plan.channel_names.len());
    }
    std::fs::create_dir_all(pool).with_context(|| format!("{}: cannot create folder", pool.display()))?;
    let (mut added, mut present) = (0, 0);
    for folder in folders {
        let files = image_files(folder)?;
        if files.is_empty() {
            bail!("{}: no images (.nii, .nii.gz, .mha, .mhd)", folder.display());
        }
        for file in files {
            let id = unlabelled_id(&file);
            if pool.join(format!("{id}.json")).is_file() {
                present += 1;
                continue;
            }
            let case = CaseVolumes::read(&id, std::slice::from_ref(&file), None).with_context(|| format!("{}", file.display()))?;
            let preprocessed = preprocess_case(&case, plan, configuration).with_context(|| format!("{}", file.display()))?;
            save_preprocessed(pool, &preprocessed)?;
            added += 1;
        }
    }
    Ok((added, present))
}

pub fn run(args: PretrainArgs) -> Result<Outcome> {
    set_compute_threads(args.threads)?;
    let configuration: ConfigurationName = args.configuration.into();
    let paths = RunPaths { work: args.work.clone(), model_dir: args.out.clone() };
    let plan = Plan::load(&paths.plans()).with_context(|| "run `spineseg plan DATASET --out WORK` first".to_string())?;
    let pool = paths.unlabelled(configuration);
    let (added, present) = fill_pool(&args.images, &plan, configuration, &pool)?;
    if !args.images.is_empty() {
        eprintln!("unlabelled images: {added} preprocessed, {present} already in {}", pool.display());
    }
    let settings = FcmaeSettings { mask_ratio: args.mask_ratio, ..FcmaeSettings::default() };
    let mut config = EngineConfig::new(configuration);
    config.fold = args.fold;
    config.epochs = args.epochs;
    config.iterations_per_epoch = args.iterations_per_epoch;
    config.validation_batches = args.validation_batches;
    config.seed = args.seed;
    config.optimizer = args.optimizer.config(args.lr);
    std::fs::create_dir_all(&args.out).with_context(|| format!("{}: cannot create folder", args.out.display()))?;
    let options = RunOptions { resume: args.resume, stop_after_epochs: args.stop_after_epochs, device: None };
    let mut observer = CliObserver::new(args.quiet);
    let outcome = train(&paths, config, MethodConfig::Fcmae(settings), &options, &mut observer)?;
    observer.finish();
    let state = &outcome.state;
    let why = stop_reason_text(outcome.reason);
    let last_loss = state.history.last().map_or(f64::NAN, |epoch| epoch.val_loss);
    println!(
        "{why}: {} of {} epochs in {:.1} min; validation reconstruction loss {last_loss:.4}",
        state.epochs_done,
        state.total_epochs,
        state.elapsed_s / 60.0
    );
    println!("encoder written to {} (use it with `spineseg train --encoder`)", outcome.model_dir.display());
    Ok(Outcome::Success)
}
