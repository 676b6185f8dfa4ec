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
//! `--disable-tta`) -> optional largest component per class -> back onto the input's grid ->
//! ontology ids to the training dataset's label values (`labels.json`) -> atomic write.
//! A case that fails (unreadable file, wrong channel count) writes nothing; the others go on,
//! and the command exits with 1.

use crate::Outcome;
use anyhow::{bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use spineseg_anatomy::ontology::{Ontology, StructureId};
use spineseg_preprocessing::preprocess::{preprocess_case, CaseVolumes};
use spineseg_infer::{predict_case, Connectivity, ModelFolder, NetworkPredictor, PredictOptions};
use spineseg_io::{AnyVolume, ImageFormat};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
}

/// Parses a comma (or semicolon) separated list of structure names through the ontology.
/// Unknown names are an error that suggests the closest known names.
pub fn parse_structure_list(list: &str) -> Result<Vec<StructureId>> {
    let ontology = Ontology::standard();
    let mut ids = Vec::new();
    let names: Vec<&str> = list.split([',', ';']).map(str::trim).filter(|n| !n.is_empty()).collect();
    if names.is_empty() {
        bail!("--structures is empty: name at least one structure, e.g. \"L4 vertebra, L4/L5 disc\"");
    }
    for name in names {
        match ontology.find_by_name(name) {
            Some(id) => {
                if !ids.contains(&id) {
                    ids.push(id)
                }
            }
            None => bail!("unknown structure {name:?}; closest names: {}", closest_names(name, 3).join(", ")),
        }
    }
    Ok(ids)
}

/// The `count` structure names (short or display) nearest to `name` by edit distance.
fn closest_names(name: &str, count: usize) -> Vec<String> {
    let query = name.trim().to_lowercase();
    let mut scored: Vec<(usize, String)> = Ontology::standard()
        .structures()
        .iter()
        .map(|s| {
            let d = edit_distance(&query, &s.name.to_lowercase()).min(edit_distance(&query, &s.display_name.to_lowercase()));
            (d, s.display_name.clone())
        })
        .collect();
    scored.sort();
    scored.into_iter().take(count).map(|(_, n)| n).collect()
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Checks that the model segments every requested structure; names the missing ones and lists
/// what the model segments.
fn check_model_segments(model: &ModelFolder, wanted: &[StructureId]) -> Result<()> {
    let ontology = Ontology::standard();
    let known: Vec<StructureId> = model.plan.labels.iter().skip(1).map(|l| StructureId(l.value)).collect();
    let name = |id: &StructureId| ontology.get(*id).map_or_else(|| id.to_string(), |s| s.display_name.clone());
    let missing: Vec<String> = wanted.iter().filter(|id| !known.contains(id)).map(name).collect();
    if !missing.is_empty() {
        bail!(
            "the model does not segment {}; it segments: {}",
            missing.join(", "),
            known.iter().map(name).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

/// One case to predict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseJob {
    pub id: String,
    /// Channel files in channel order.
    pub channels: Vec<PathBuf>,
    pub output: PathBuf,
}

pub fn run(args: PredictArgs) -> Result<Outcome> {
    let started = Instant::now();
    let model = ModelFolder::load(&args.model)?;
    let channels = model.plan.channel_names.len();
    let jobs = if args.input.is_dir() {
        folder_jobs(&args.input, &args.output, channels)?
    } else {
        vec![file_job(&args.input, &args.output, channels)?]
    };
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
    if let Some(list) = &args.structures {
        let wanted = parse_structure_list(list)?;
        check_model_segments(&model, &wanted)?;
        options.keep_structures = Some(wanted.iter().map(|id| id.0).collect());
    }
    eprintln!(
        "model {} ({}, {} classes), patch {:?}, step {}, mirroring {}, largest component {}; {} case(s)",
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
        jobs.len()
    );
    let single = jobs.len() == 1;
    let failures = predict_jobs(&model, &jobs, &options, true)?;
    if single {
        if let Some((_, error)) = failures.into_iter().next() {
            return Err(error);
        }
    } else if !failures.is_empty() {
        bail!(
            "{} of {} cases failed: {}",
            failures.len(),
            jobs.len(),
            failures.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    eprintln!("predicted {} case(s) in {:.1} s", jobs.len(), started.elapsed().as_secs_f64());
    Ok(Outcome::Success)
}

/// Predicts every job; returns the failed ones (case id, error), reported on stderr as they
/// happen when there is more than one job.
/// Progress bars (cases, and windows of the current case) are drawn when stderr is a terminal
/// and `progress` is set.
pub fn predict_jobs(
    model: &ModelFolder,
    jobs: &[CaseJob],
    options: &PredictOptions,
    progress: bool,
) -> Result<Vec<(String, anyhow::Error)>> {
    let multi = MultiProgress::with_draw_target(if progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let cases_bar = (jobs.len() > 1).then(|| {
        let bar = multi.add(ProgressBar::new(jobs.len() as u64));
        bar.set_style(
            ProgressStyle::with_template("cases   {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}")
                .expect("the progress template should be valid"),
        );
        bar
    });
    let windows_bar = multi.add(ProgressBar::new(0));
    windows_bar.set_style(
        ProgressStyle::with_template("windows {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}")
            .expect("the progress template should be valid"),
    );
    let mut options = options.clone();
    let bar = windows_bar.clone();
    options.sliding_window.progress = Some(Arc::new(move |p: spineseg_infer::Progress| {
        bar.set_length(p.windows_total as u64);
        bar.set_position(p.windows_done as u64);
    }));
    let mut predictor = model.predictor();
    let mut failures = Vec::new();
    for job in jobs {
        windows_bar.reset();
        windows_bar.set_message(job.id.clone());
        let started = Instant::now();
        match predict_one(model, &mut predictor, job, &options) {
            Ok(()) => multi.suspend(|| {
                eprintln!("{}: wrote {} ({:.1} s)", job.id, job.output.display(), started.elapsed().as_secs_f64())
            }),
            Err(error) => {
                // A single case's error is the command's error, reported once by main.
                if jobs.len() > 1 {
                    multi.suspend(|| eprintln!("error: {}: {error:#}", job.id));
                }
                failures.push((job.id.clone(), error));
            }
        }
        if let Some(bar) = &cases_bar {
            bar.inc(1);
        }
    }
    windows_bar.finish_and_clear();
    if let Some(bar) = cases_bar {
        bar.finish_and_clear();
    }
    Ok(failures)
}

fn predict_one(
    model: &ModelFolder,
    predictor: &mut NetworkPredictor,
    job: &CaseJob,
    options: &PredictOptions,
) -> Result<()> {
    let case = CaseVolumes::read(&job.id, &job.channels, None)?;
    let pre = preprocess_case(&case, &model.plan, model.configuration())?;
    drop(case);
    let seg = predict_case(&pre, &model.plan, predictor, options)?;
    let seg = model.labels.to_dataset_values(&seg)?;
    if let Some(parent) = job.output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("{}: cannot create folder", parent.display()))?;
    }
    spineseg_io::write_volume(&job.output, &AnyVolume::from(seg))?;
    Ok(())
}

/// `name_0003` -> (`name`, 3): nnU-Net's 4-digit channel suffix.
fn split_channel_suffix(stem: &str) -> Option<(&str, usize)> {
    let (id, digits) = stem.rsplit_once('_')?;
    if digits.len() == 4 && digits.bytes().all(|b| b.is_ascii_digit()) && !id.is_empty() {
        Some((id, digits.parse().expect("four ASCII digits parse")))
    } else {
        None
    }
}

/// Whether `path` names an image file by its extension (it need not exist).
fn is_image_name(path: &Path) -> bool {
    ImageFormat::from_path(path).is_ok()
}

/// The job for `-i FILE`.
pub fn file_job(input: &Path, output: &Path, channels: usize) -> Result<CaseJob> {
    if !input.is_file() {
        bail!("{}: no such file or folder", input.display());
    }
    let format = ImageFormat::from_path(input)?;
    let stem = ImageFormat::strip_extension(input).expect("a file with a known format has a stem");
    let dir = input.parent().unwrap_or(Path::new(""));
    let (id, files) = match split_channel_suffix(&stem) {
        Some((id, _)) => {
            let files: Vec<PathBuf> =
                (0..channels).map(|c| dir.join(format!("{id}_{c:04}{}", format.extension()))).collect();
            if let Some(missing) = files.iter().find(|f| !f.is_file()) {
                bail!("{}: missing channel file for case {id} (the model takes {channels} channels)", missing.display());
            }
            let extra = dir.join(format!("{id}_{channels:04}{}", format.extension()));
            if extra.is_file() {
                bail!(
                    "case {id}: {} exists but the model takes {channels} channel(s) ({})",
                    extra.display(),
                    channel_list(channels)
                );
            }
            (id.to_string(), files)
        }
        None if channels == 1 => (stem.clone(), vec![input.to_path_buf()]),
        None => bail!(
            "{}: the model takes {channels} channels; name the files {stem}_0000{ext}, {stem}_0001{ext}, ... and pass the first",
            input.display(),
            ext = format.extension()
        ),
    };
    let output = if is_image_name(output) {
        output.to_path_buf()
    } else {
        output.join(format!("{id}{}", format.extension()))
    };
    if output == input {
        bail!("{}: the output would overwrite the input", output.display());
    }
    Ok(CaseJob { id, channels: files, output })
}

/// The jobs for `-i FOLDER`: every `{id}_0000{ext}` file, channels checked against the model.
pub fn folder_jobs(input: &Path, output: &Path, channels: usize) -> Result<Vec<CaseJob>> {
    if is_image_name(output) {
        bail!("{}: with an input folder the output must be a folder, not an image file name", output.display());
    }
    let entries = std::fs::read_dir(input).with_context(|| format!("{}: cannot list folder", input.display()))?;
    // id -> (extension, channel -> file)
    let mut cases: BTreeMap<String, (ImageFormat, BTreeMap<usize, PathBuf>)> = BTreeMap::new();
    for entry in entries {
        let path = entry.with_context(|| format!("{}: cannot list folder", input.display()))?.path();
        let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        let Ok(format) = ImageFormat::from_path(&path) else { continue };
        if hidden || !path.is_file() {
            continue;
        }
        let stem = ImageFormat::strip_extension(&path).expect("a file with a known format has a stem");
        let Some((id, channel)) = split_channel_suffix(&stem) else { continue };
        let (case_format, files) = cases.entry(id.to_string()).or_insert_with(|| (format, BTreeMap::new()));
        if *case_format != format {
            bail!("case {id}: channel files with different extensions in {}", input.display());
        }
        files.insert(channel, path);
    }
    if cases.is_empty() {
        bail!("{}: no {{case}}_0000{{ext}} image files (.nii.gz, .nii, .mha, .mhd)", input.display());
    }
    let mut jobs = Vec::with_capacity(cases.len());
    for (id, (format, files)) in cases {
        let found: Vec<usize> = files.keys().copied().collect();
        if found != (0..channels).collect::<Vec<_>>() {
            bail!(
                "case {id} in {}: found channel(s) {} but the model takes {channels} ({})",
                input.display(),
                found.iter().map(|c| format!("_{c:04}")).collect::<Vec<_>>().join(", "),
                channel_list(channels)
            );
        }
        let output = output.join(format!("{id}{}", format.extension()));
        jobs.push(CaseJob { id, channels: files.into_values().collect(), output });
    }
    Ok(jobs)
}

fn channel_list(channels: usize) -> String {
    (0..channels).map(|c| format!("_{c:04}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structure_lists_use_synonyms_and_suggest_names() {
        let ids = parse_structure_list("L4 vertebra, disc L4/5; L4-L5 disc,L5").unwrap();
        assert_eq!(ids, vec![StructureId(23), StructureId(123), StructureId(24)]);
        let err = parse_structure_list("L4 vertebra, L4/L5 dsic, spinal cannal").unwrap_err().to_string();
        assert!(err.contains("L4/L5 dsic") && err.contains("L4/L5 intervertebral disc"), "{err}");
        assert!(parse_structure_list(" , ").is_err());
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn channel_suffixes() {
        assert_eq!(split_channel_suffix("vb3_01_0000"), Some(("vb3_01", 0)));
        assert_eq!(split_channel_suffix("case_0012"), Some(("case", 12)));
        assert_eq!(split_channel_suffix("case_012"), None);
        assert_eq!(split_channel_suffix("case"), None);
        assert_eq!(split_channel_suffix("_0000"), None);
    }

    #[test]
    fn jobs_for_files_and_folders() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for name in ["a_0000.nii.gz", "a_0001.nii.gz", "b_0000.mha", "b_0001.mha", "plain.nii", "notes.txt"] {
            std::fs::write(d.join(name), b"").unwrap();
        }
        let out = d.join("out");
        let jobs = folder_jobs(d, &out, 2).unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].id, "a");
        assert_eq!(jobs[0].channels, vec![d.join("a_0000.nii.gz"), d.join("a_0001.nii.gz")]);
        assert_eq!(jobs[0].output, out.join("a.nii.gz"));
        assert_eq!(jobs[1].output, out.join("b.mha"));
        let err = folder_jobs(d, &out, 1).unwrap_err().to_string();
        assert!(err.contains("case a") && err.contains("_0001"), "{err}");
        assert!(folder_jobs(d, &d.join("x.nii.gz"), 2).is_err());

        let job = file_job(&d.join("b_0000.mha"), &out, 2).unwrap();
        assert_eq!((job.id.as_str(), job.output.clone()), ("b", out.join("b.mha")));
        let job = file_job(&d.join("plain.nii"), &d.join("seg.nii.gz"), 1).unwrap();
        assert_eq!((job.id.as_str(), job.output.clone()), ("plain", d.join("seg.nii.gz")));
        assert!(file_job(&d.join("plain.nii"), &out, 2).is_err(), "two channels need suffixed names");
        assert!(file_job(&d.join("a_0000.nii.gz"), &out, 1).is_err(), "an extra channel file is an error");
        assert!(file_job(&d.join("missing.nii"), &out, 1).is_err());
        assert!(file_job(&d.join("notes.txt"), &out, 1).is_err());
    }
}
