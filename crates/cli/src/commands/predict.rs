//! `spineseg predict`: segment images with a trained model folder (nnU-Net's
//! `nnUNetv2_predict`).
//!
//! Inputs and outputs:
//! - `-i FILE`: one case. Its id is the file name without extension and without a `_0000`-style
//!   channel suffix; a multi-channel model reads the sibling files `{id}_0000{ext}`,
//!   `{id}_0001{ext}`, ... `-o` is the output file when it ends in a known image extension
//!   (`.nii.gz`, `.nii`, `.mha`, `.mhd`; that extension picks the format), otherwise a folder that
//!   receives `{id}{input extension}`.
//! - `-i FOLDER`: every `{id}_0000{ext}` file in it is a case (nnU-Net's naming; channels
//!   `_0001`, ... beside it). `-o` is a folder; each case is written as `{id}{ext}`, the input's
//!   own file ending (as nnU-Net does).
//!
//! Per case: read the channels -> preprocess for the model's configuration -> sliding window
//! (Gaussian, `--step-size`, test-time mirroring along the model's anatomically safe axes unless
//! `--disable-tta`) -> level assignment (models with vertebra/disc level classes, unless
//! `--no-level-assignment`: bodies and discs renamed by counting along the spine, report in
//! `<output stem>.levels.json` and one log line) -> optional largest component per class -> back
//! onto the input's grid -> ontology ids to the training dataset's label values (`labels.json`)
//! -> atomic write.
//! A case that fails (unreadable file, wrong channel count) writes nothing; the others go on,
//! and the command exits with 1.

use crate::Outcome;
use anyhow::{bail, Context, Result};
use crate::progress::PredictionBars;
use spineseg_infer::workflow::{default_level_assignment, jobs_for_input, predict_jobs, structures_to_keep};
use spineseg_infer::{Connectivity, ModelFolder};
use std::path::PathBuf;
use std::time::Instant;

/// Segment images with a trained model folder (from `spineseg train` or `spineseg demo`).
/// Input: one image file, or a folder of `{case}_0000.nii.gz` files (nnU-Net naming; further
/// channels `_0001`, ...). Output: a file (its extension picks the format) or a folder that gets
/// `{case}` plus the input's extension. Labels are written in the training dataset's values.
#[derive(clap::Args)]
pub struct PredictArgs {
    /// Image file, or folder of `{case}_0000{ext}` files.
    #[arg(short = 'i', long = "input")]
    pub input: PathBuf,
    /// Output file (single input file only) or folder.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Trained model folder (model.json, plans.json, labels.json, weights.bpk).
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// Turn test-time mirroring off (faster). By default predictions are averaged with the
    /// left-right mirrored input in 3D; 2D models have no anatomically safe mirror axis.
    #[arg(long)]
    pub disable_tta: bool,
    /// Sliding-window step as a fraction of the patch, in (0, 1]; larger is faster.
    #[arg(long, default_value_t = 0.5)]
    pub step_size: f64,
    /// Keep only the largest connected component of every structure (some model folders do
    /// this by default, see their model.json "postprocessing").
    #[arg(long, conflicts_with = "no_postprocessing")]
    pub largest_component: bool,
    /// Turn off the model folder's default post-processing (raw arg max of the network).
    #[arg(long)]
    pub no_postprocessing: bool,
    /// Windows per network call.
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Segment only these structures (comma separated, matched through the anatomy ontology
    /// with its synonyms: "L4 vertebra, L4/L5 disc", "disc L4/5", "L4-L5"); everything else is
    /// written as background. A name the ontology does not know, or a structure the model does
    /// not segment, is an error.
    #[arg(long, value_name = "NAMES")]
    pub structures: Option<String>,
    /// Keep the network's own level labels. By default (models with vertebra/disc level
    /// classes) the bodies and discs are named by counting along the spine, anchored at the
    /// lumbosacral junction when it is in view; the decision and how sure it is are written to
    /// `<output stem>.levels.json` and logged.
    #[arg(long)]
    pub no_level_assignment: bool,
}

pub fn run(args: PredictArgs) -> Result<Outcome> {
    let started = Instant::now();
    let model = ModelFolder::load(&args.model)?;
    let channels = model.plan.channel_names.len();
    let jobs = jobs_for_input(&args.input, &args.output, channels)?;
    let mut options = model.predict_options()?;
    options.sliding_window.tile_step_size = args.step_size;
    options.sliding_window.batch_size = args.batch_size;
    if args.disable_tta {
        options.sliding_window.mirror_axes.clear();
    }
    if args.largest_component {
        options.largest_component = Some(Connectivity::Corners);
    }
    if args.no_postprocessing {
        options.largest_component = None;
    }
    options.sliding_window.validate()?;
    if !args.no_level_assignment {
        options.level_assignment = default_level_assignment(&model);
    }
    if let Some(list) = &args.structures {
        options.keep_structures = Some(structures_to_keep(&model, list).context("--structures")?);
    }
    eprintln!(
        "model {} ({}, {} classes), patch {:?}, step {}, mirroring {}, largest component {}, level assignment {}; {} case(s)",
        args.model.display(),
        model.configuration(),
        model.plan.num_classes(),
        options.sliding_window.patch_size,
        options.sliding_window.tile_step_size,
        if options.sliding_window.mirror_axes.is_empty() {
            "off".to_string()
        } else {
            format!("along patch axes {:?}", options.sliding_window.mirror_axes)
        },
        if options.largest_component.is_some() { "on" } else { "off" },
        if options.level_assignment.is_some() { "on" } else { "off" },
        jobs.len()
    );
    let single = jobs.len() == 1;
    let mut bars = PredictionBars::new(jobs.len());
    options.sliding_window.progress = Some(bars.window_callback());
    let failures = predict_jobs(&model, &jobs, &options, &mut bars);
    bars.finish();
    if single {
        if let Some(failure) = failures.into_iter().next() {
            return Err(failure.error.into());
        }
    } else if !failures.is_empty() {
        bail!(
            "{} of {} cases failed: {}",
            failures.len(),
            jobs.len(),
            failures.iter().map(|f| f.id.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    eprintln!("predicted {} case(s) in {:.1} s", jobs.len(), started.elapsed().as_secs_f64());
    Ok(Outcome::Success)
}
