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
//! -> atomic write, with `<output stem>.labels.json` (what the values mean) beside the mask.
//! Then the structure table of every written case (volume, sagittal slices, level confidence,
//! flags) is printed and written as `structures.csv` (in the output folder, or
//! `<output stem>.structures.csv` beside a named output file), and with `--preview DIR` a
//! picture per case goes to `DIR/{case}.png`.
//! A case that fails (unreadable file, wrong channel count) writes nothing; the others go on,
//! and the command exits with 1.

use crate::label_meaning::LabelMeaning;
use crate::progress::PredictionBars;
use crate::Outcome;
use anyhow::{bail, Context, Result};
use spineseg_anatomy::ontology::StructureId;
use spineseg_infer::model_folder::LABELS_FILE;
use spineseg_infer::workflow::{
    default_level_assignment, jobs_for_input, predict_jobs, predict_jobs_with, sidecar_path, structures_to_keep, PredictJob, PredictObserver,
    StageTimes, WorkflowError,
};
use spineseg_infer::{Connectivity, LevelAssignment, ModelFolder};
use spineseg_io::{read_image, Label, Volume};
use spineseg_preprocessing::plan::ConfigurationName;
use spineseg_metrics::structures::{
    case_structures, format_case, format_case_line, write_structures_csv, CaseStructures, LevelVerdict,
};
use spineseg_render::overlay::write_png;
use spineseg_render::preview::{case_preview, preview_caption};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Segment images with a trained model folder (from `spineseg train` or `spineseg demo`).
/// Input: one image file, or a folder of `{case}_0000.nii.gz` files (nnU-Net naming; further
/// channels `_0001`, ...). Output: a file (its extension picks the format) or a folder that gets
/// `{case}` plus the input's extension. Labels are written in the training dataset's values, with
/// `<output stem>.labels.json` beside each mask saying what they mean; a table of the structures
/// found per case is printed and written as CSV.
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
    /// Windows per network call. The result does not depend on it; 4 was about 25 % faster
    /// than 1 for the shipped 2D model on 2 cores (docs/BENCHMARKS.md, whole-volume latency),
    /// 8 slower again.
    #[arg(long, default_value_t = 4)]
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
    /// Also write, per case, DIR/{output file name}: the network's own labels from the same
    /// prediction, before level assignment (what --no-level-assignment writes), to see what the
    /// counting changed or to score both without predicting twice.
    #[arg(long, value_name = "DIR", conflicts_with = "no_level_assignment")]
    pub network_labels: Option<PathBuf>,
    /// Skip the cases whose output mask already exists (a mask is written last, after its
    /// sidecars, so an existing one is complete): finishes a folder run that was interrupted or
    /// killed. Their rows are still in the structure table.
    #[arg(long = "continue")]
    pub continue_run: bool,
    /// Also write, per case, DIR/{case}.png: the sagittal slice through the middle of the spine
    /// with every structure coloured and named, and the level count's confidence above it.
    #[arg(long, value_name = "DIR")]
    pub preview: Option<PathBuf>,
    /// 2D models: predict each slice in one window covering the whole slice instead of the
    /// plan's overlapping patches (nnU-Net's way, the default). Faster on large fields of view
    /// (a 381 x 381 mm slice: one window instead of nine); the network then sees a larger field
    /// than in training (accuracy of both in docs/BENCHMARKS.md, "Whole-volume latency").
    #[arg(long)]
    pub whole_slice: bool,
    /// Print, per case, where its wall time went (read, preprocess, network, postprocess,
    /// write) and the process's peak memory so far.
    #[arg(long)]
    pub timings: bool,
    /// A report about the case(s), as plain text in FILE (e.g. "L4/L5 intervertebral disc: disc
    /// herniation, Pfirrmann grade 4."), fed to a text-guided model trained with reports
    /// (`train --reports`); embedded with the text encoder. Without it such a model uses its
    /// "no report" token. Every input case gets the same report.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Text encoder folder for --report (default: $SPINESEG_TEXT_ENCODER, else
    /// ~/.cache/spineseg/text/all-MiniLM-L6-v2).
    #[arg(long, value_name = "DIR", requires = "report")]
    pub text_encoder: Option<PathBuf>,
}

pub fn run(args: PredictArgs) -> Result<Outcome> {
    let started = Instant::now();
    let model = ModelFolder::load(&args.model)?;
    let channels = model.plan.channel_names.len();
    let mut options = model.predict_options()?;
    options.sliding_window.tile_step_size = args.step_size;
    options.sliding_window.batch_size = args.batch_size;
    if args.disable_tta {
        options.sliding_window.mirror_axes.clear();
    }
    if args.whole_slice {
        if model.configuration() != ConfigurationName::TwoD {
            bail!("--whole-slice is for 2D models; {} is a {} model", args.model.display(), model.configuration());
        }
        options.whole_slice = Some(model.manifest.network.size_divisor());
    }
    if args.largest_component {
        options.largest_component = Some(Connectivity::Corners);
    }
    if args.no_postprocessing {
        options.largest_component = None;
    }
    options.sliding_window.validate()?;
    // Settings are checked before any file is listed or read.
    let mut jobs = jobs_for_input(&args.input, &args.output, channels)?;
    // `-o seg.nii.gz` names the file: the structure table goes beside it; `-o DIR`: into DIR.
    let csv = match jobs.as_slice() {
        [job] if job.output == args.output => sidecar_path(&job.output, "structures.csv"),
        _ => args.output.join("structures.csv"),
    };
    let single = jobs.len() == 1;
    // With --continue, finished cases are only read back for the structure table.
    let mut done = Vec::new();
    if args.continue_run {
        let (finished, todo): (Vec<_>, Vec<_>) = jobs.into_iter().partition(|job| job.output.is_file());
        remove_stale_temporaries(&todo);
        jobs = todo;
        done = finished;
        eprintln!("--continue: {} case(s) already written, {} to predict", done.len(), jobs.len());
    }
    if !args.no_level_assignment {
        options.level_assignment = default_level_assignment(&model);
    }
    if let Some(dir) = &args.network_labels {
        if options.level_assignment.is_none() {
            bail!("--network-labels: {} has no vertebra or disc levels to assign, so its labels are the network's", args.model.display());
        }
        options.keep_network_labels = true;
        for job in &mut jobs {
            let path = dir.join(job.output.file_name().expect("an output file name"));
            // Compared per case: `-o out/seg.nii.gz --network-labels out` would hit the mask too.
            if path == job.output {
                bail!("--network-labels: {} is the output folder; give another folder", dir.display());
            }
            job.network_labels_output = Some(path);
        }
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
    // A report is read and embedded before any case is predicted, so a bad one writes nothing.
    let mut predictor = match &args.report {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read the report", path.display()))?;
            let encoder = crate::text_encoder::load_encoder(args.text_encoder.clone())?;
            let embedding =
                spineseg_text::reports::embed_report(&text, &encoder).with_context(|| format!("{}: the report", path.display()))?;
            let predictor = model.predictor().with_report(embedding).map_err(|e| anyhow::anyhow!("{}: {e}", args.model.display()))?;
            eprintln!("report: {} ({} characters)", path.display(), text.trim().len());
            Some(predictor)
        }
        None => None,
    };
    let bars = PredictionBars::new(jobs.len());
    options.sliding_window.progress = Some(bars.window_callback());
    let mut outputs = CaseOutputs {
        bars,
        meaning: LabelMeaning::of_output_labels(&model.labels, &args.model.join(LABELS_FILE)),
        segmented: model.plan.labels.iter().skip(1).map(|l| StructureId(l.value)).collect(),
        preview: args.preview.clone(),
        timings: args.timings,
        tables: Vec::new(),
        preview_errors: Vec::new(),
    };
    for job in &done {
        outputs.tables.push(table_of_written_case(job, &outputs.meaning, &outputs.segmented)?);
    }
    let failures = match &mut predictor {
        Some(predictor) => predict_jobs_with(&model, predictor, &jobs, &options, &mut outputs),
        None => predict_jobs(&model, &jobs, &options, &mut outputs),
    };
    outputs.bars.finish();

    // The structure table of the written cases: printed, and written as CSV beside them.
    outputs.tables.sort_by(|a, b| a.case.cmp(&b.case));
    if !outputs.tables.is_empty() {
        for table in &outputs.tables {
            if single {
                print!("{}", format_case(table));
            } else {
                println!("{}", format_case_line(table));
            }
        }
        write_structures_csv(&csv, &outputs.tables)?;
        eprintln!("structure table: {}", csv.display());
    }
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
    if !outputs.preview_errors.is_empty() {
        bail!("previews failed: {}", outputs.preview_errors.join("; "));
    }
    eprintln!("predicted {} case(s) in {:.1} s", jobs.len(), started.elapsed().as_secs_f64());
    Ok(Outcome::Success)
}

/// What `predict` does with each written case besides the progress bars: its structure table
/// and, with `--preview`, its picture.
struct CaseOutputs {
    bars: PredictionBars,
    /// The written values' meaning (the model folder's labels.json).
    meaning: LabelMeaning,
    /// The structures the model segments (a level it cannot find is never "missing").
    segmented: Vec<StructureId>,
    preview: Option<PathBuf>,
    /// Print each case's [`StageTimes`] (`--timings`).
    timings: bool,
    tables: Vec<CaseStructures>,
    preview_errors: Vec<String>,
}

impl PredictObserver for CaseOutputs {
    fn on_case_start(&mut self, job: &PredictJob) {
        self.bars.on_case_start(job);
    }
    fn on_case_end(&mut self, job: &PredictJob, result: Result<f64, &WorkflowError>) {
        self.bars.on_case_end(job, result);
    }
    fn on_levels(&mut self, job: &PredictJob, levels: &LevelAssignment) {
        self.bars.on_levels(job, levels);
    }
    fn on_timings(&mut self, job: &PredictJob, times: &StageTimes) {
        if self.timings {
            let peak = peak_memory_mib().map_or_else(|| "unknown".to_string(), |mib| format!("{mib:.0} MiB"));
            println!("timings {}: {times}; peak memory {peak}", job.id);
        }
    }
    fn on_written(&mut self, job: &PredictJob, seg: &Volume<Label>, levels: Option<&LevelAssignment>) {
        let verdict = levels.and_then(|l| serde_json::to_value(l).ok()).map(|v| LevelVerdict::from_report(&v));
        let table = case_structures(&job.id, seg, &self.meaning.structure_of, &self.segmented, verdict);
        if let Some(dir) = &self.preview {
            if let Err(error) = write_preview(dir, job, seg, &self.meaning, &table) {
                self.preview_errors.push(format!("{}: {error:#}", job.id));
            }
        }
        self.tables.push(table);
    }
}

/// The process's peak resident set so far (`VmHWM` of `/proc/self/status`), where the system
/// reports it.
fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Removes what a killed run left of the cases still to do: the hidden temporary files of their
/// mask and sidecars (`.{name}.{pid}.tmp`, see `spineseg_io::atomic`), so a continued folder holds
/// no partial output.
fn remove_stale_temporaries(jobs: &[PredictJob]) {
    for job in jobs {
        let Some(dir) = job.output.parent() else { continue };
        let names: Vec<String> = [job.output.clone(), spineseg_infer::workflow::labels_sidecar_path(&job.output), spineseg_infer::workflow::levels_report_path(&job.output)]
            .iter()
            .filter_map(|p| p.file_name().map(|n| format!(".{}.", n.to_string_lossy())))
            .collect();
        let Ok(entries) = std::fs::read_dir(if dir.as_os_str().is_empty() { Path::new(".") } else { dir }) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") && names.iter().any(|prefix| name.starts_with(prefix.as_str())) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// The structure table of a case written by an earlier run (`--continue`): its mask and level
/// report read back.
fn table_of_written_case(job: &PredictJob, meaning: &LabelMeaning, segmented: &[StructureId]) -> Result<CaseStructures> {
    let seg = spineseg_io::read_labels(&job.output)?;
    let report = spineseg_infer::workflow::levels_report_path(&job.output);
    let verdict = match std::fs::read_to_string(&report) {
        Ok(text) => Some(LevelVerdict::from_report(
            &serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", report.display()))?,
        )),
        Err(_) => None,
    };
    Ok(case_structures(&job.id, &seg, &meaning.structure_of, segmented, verdict))
}

/// DIR/{case}.png: the case's image with its labels on the spine's mid-sagittal slice.
fn write_preview(dir: &Path, job: &PredictJob, seg: &Volume<Label>, meaning: &LabelMeaning, table: &CaseStructures) -> Result<()> {
    let image = read_image(&job.channels[0])?;
    let picture = case_preview(&image, &meaning.to_ontology(seg), &preview_caption(table))?;
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create folder", dir.display()))?;
    write_png(&dir.join(format!("{}.png", job.id)), &picture)?;
    Ok(())
}
