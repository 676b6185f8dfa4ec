//! Prediction of image files with a model folder (nnU-Net's `nnUNetv2_predict`), as library
//! calls: which files make which cases ([`job_for_file`], [`jobs_for_folder`]), and the loop
//! read -> preprocess -> sliding window -> optional level assignment -> back onto the input's
//! grid -> the training dataset's label values -> atomic write ([`predict_jobs`]). Beside each
//! mask go `<output stem>.labels.json` (what its values mean, [`labels_sidecar_path`]) and, with
//! level assignment, its report `<output stem>.levels.json` ([`levels_report_path`]).
//!
//! File naming is nnU-Net's: a case `{id}` has channel files `{id}_0000{ext}`, `{id}_0001{ext}`,
//! ... (parsed by [`spineseg_datasets::nnunet::split_channel_suffix`]); its output is
//! `{id}{ext}` with the input's own file ending, or a file name the caller gives.
//!
//! A case that fails (unreadable file, wrong channel count) writes nothing; the others go on.
//! Every error names the file or case it concerns.

use crate::error::InferError;
use crate::model_folder::{ModelFolder, OutputLabels};
use crate::network::{network_config_for_plan, Device, NetworkPredictor};
use crate::levels::{LevelAssignment, LevelOptions};
use crate::predict::{predict_case_with_levels, PredictOptions};
use crate::sliding_window::PatchPredictor;
use crate::ModelManifest;
use spineseg_datasets::nnunet::split_channel_suffix;
use spineseg_preprocessing::error::PreprocessError;
use spineseg_anatomy::ontology::{Ontology, StructureId, StructureNameError};
use spineseg_preprocessing::plan::{ConfigurationName, Plan};
use spineseg_preprocessing::preprocess::{preprocess_case, CaseVolumes};
use spineseg_io::json::JsonFileError;
use spineseg_io::{AnyVolume, ImageFormat, IoError, Label, Volume};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Errors of building prediction jobs from file names and of predicting them.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// The input is neither a file nor a folder.
    #[error("{}: no such file or folder", path.display())]
    NoSuchInput { path: PathBuf },
    /// A channel file of a multi-channel case is missing.
    #[error("{}: missing channel file for case {case} (the model takes {channels} channels)", path.display())]
    MissingChannel { path: PathBuf, case: String, channels: usize },
    /// A case has a channel file beyond the model's channel count.
    #[error("case {case}: {} exists but the model takes {channels} channel(s) ({})", path.display(), channel_list(*channels))]
    ExtraChannel { path: PathBuf, case: String, channels: usize },
    /// A multi-channel model was given a file without a `_0000`-style channel suffix.
    #[error(
        "{}: the model takes {channels} channels; name the files {stem}_0000{ext}, {stem}_0001{ext}, ... and pass the first",
        path.display()
    )]
    UnsuffixedChannels { path: PathBuf, stem: String, ext: String, channels: usize },
    /// The output file would replace the input file.
    #[error("{}: the output would overwrite the input", path.display())]
    OverwritesInput { path: PathBuf },
    /// An input folder was given an image file name as output.
    #[error("{}: with an input folder the output must be a folder, not an image file name", path.display())]
    FolderOutputRequired { path: PathBuf },
    /// The channel files of one case have different file endings.
    #[error(
        "case {case}: {} and {} have different extensions; a case's channel files must all be .nii.gz, .nii, .mha or .mhd alike",
        first.display(),
        other.display()
    )]
    MixedExtensions { case: String, first: PathBuf, other: PathBuf },
    /// An input folder holds no `{case}_0000{ext}` image files.
    #[error("{}: no {{case}}_0000{{ext}} image files (.nii.gz, .nii, .mha, .mhd)", folder.display())]
    NoCases { folder: PathBuf },
    /// A case in an input folder has other channels than the model takes.
    #[error(
        "case {case} in {}: found channel(s) {} but the model takes {channels} ({})",
        folder.display(),
        found.iter().map(|c| format!("_{c:04}")).collect::<Vec<_>>().join(", "),
        channel_list(*channels)
    )]
    ChannelMismatch { case: String, folder: PathBuf, found: Vec<usize>, channels: usize },
    /// The operating system refused to list or create a folder (`action` says which).
    #[error("{}: {action}", path.display())]
    Os {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing a volume failed (names the file).
    #[error(transparent)]
    Io(#[from] IoError),
    /// Writing the level assignment's report failed (names the file).
    #[error(transparent)]
    Json(#[from] JsonFileError),
    /// Reading or preprocessing a case failed (names the file or case).
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    /// Prediction or the mapping to the dataset's label values failed.
    #[error(transparent)]
    Infer(#[from] InferError),
}

/// One case to predict: its channel files and where its segmentation goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PredictJob {
    /// The case id (the file name without extension and channel suffix).
    pub id: String,
    /// Channel files in channel order.
    pub channels: Vec<PathBuf>,
    /// The segmentation file to write (its extension picks the format).
    pub output: PathBuf,
    /// Where the network's own labels go (before level assignment), when the options keep
    /// them ([`PredictOptions::keep_network_labels`]); written before the mask.
    pub network_labels_output: Option<PathBuf>,
}

/// A case that could not be predicted.
#[derive(Debug)]
pub struct CaseFailure {
    /// The case id.
    pub id: String,
    /// Why (names the file or case).
    pub error: WorkflowError,
}

/// Hears about the cases of [`predict_jobs`] as they start and end (a command line draws
/// progress bars; `()` ignores everything). The sliding window's own progress per case is
/// [`crate::SlidingWindowOptions::progress`].
pub trait PredictObserver {
    /// `job` is about to be read.
    fn on_case_start(&mut self, _job: &PredictJob) {}
    /// `job` is written (`Ok` with the seconds it took) or failed (nothing was written).
    fn on_case_end(&mut self, _job: &PredictJob, _result: Result<f64, &WorkflowError>) {}
    /// Where `job`'s time went (after [`Self::on_written`], before [`Self::on_case_end`]).
    fn on_timings(&mut self, _job: &PredictJob, _times: &StageTimes) {}
    /// Level assignment of `job` is done and written (before [`Self::on_case_end`]).
    fn on_levels(&mut self, _job: &PredictJob, _levels: &LevelAssignment) {}
    /// `job`'s mask (`seg`, in the training dataset's values, as written), its
    /// [`labels_sidecar_path`] and any level report are written (before [`Self::on_levels`]).
    fn on_written(&mut self, _job: &PredictJob, _seg: &Volume<Label>, _levels: Option<&LevelAssignment>) {}
}

/// What [`predict_job`] wrote for a case.
#[derive(Debug)]
pub struct CaseOutput {
    /// The mask as written (the training dataset's label values).
    pub seg: Volume<Label>,
    /// The level assignment, when it ran.
    pub levels: Option<LevelAssignment>,
    /// Where the case's wall time went.
    pub times: StageTimes,
}

/// Wall seconds of one case's stages in [`predict_job`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    /// Reading the channel files.
    pub read: f64,
    /// Reorienting, cropping, resampling and normalising for the model's plan.
    pub preprocess: f64,
    /// Inside the network's calls (every sliding window and mirror).
    pub network: f64,
    /// The rest of the prediction: window assembly and blending, arg max, level assignment,
    /// largest component, back onto the input's grid and label values.
    pub postprocess: f64,
    /// Writing the mask and its sidecars.
    pub write: f64,
}

impl StageTimes {
    /// The sum of the stages.
    pub fn total(&self) -> f64 {
        self.read + self.preprocess + self.network + self.postprocess + self.write
    }
}

impl std::fmt::Display for StageTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "read {:.2} s, preprocess {:.2} s, network {:.2} s, postprocess {:.2} s, write {:.2} s (total {:.2} s)",
            self.read,
            self.preprocess,
            self.network,
            self.postprocess,
            self.write,
            self.total()
        )
    }
}

/// A predictor that adds the wall time of its inner predictor's calls to `seconds`.
struct TimedPredictor<'a, P: ?Sized> {
    inner: &'a mut P,
    seconds: f64,
}

impl<P: PatchPredictor + ?Sized> PatchPredictor for TimedPredictor<'_, P> {
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn predict(
        &mut self,
        input: &[f32],
        shape: &[usize],
    ) -> std::result::Result<Vec<f32>, crate::error::PredictorError> {
        let started = Instant::now();
        let result = self.inner.predict(input, shape);
        self.seconds += started.elapsed().as_secs_f64();
        result
    }
    fn volume_channels(
        &mut self,
        images: &[spineseg_io::Volume<f32>],
    ) -> std::result::Result<Vec<spineseg_io::Volume<f32>>, crate::error::PredictorError> {
        let started = Instant::now();
        let result = self.inner.volume_channels(images);
        self.seconds += started.elapsed().as_secs_f64();
        result
    }
}

impl PredictObserver for () {}

/// The job for one input file. Its id is the file name without extension and without a
/// `_0000`-style channel suffix; a multi-channel model reads the sibling files
/// `{id}_0000{ext}`, `{id}_0001{ext}`, ... `output` is the output file when it ends in a known
/// image extension, otherwise a folder that receives `{id}{input extension}`.
pub fn job_for_file(input: &Path, output: &Path, channels: usize) -> Result<PredictJob, WorkflowError> {
    if !input.is_file() {
        return Err(WorkflowError::NoSuchInput { path: input.to_path_buf() });
    }
    let format = ImageFormat::from_path(input)?;
    let ext = format.extension();
    let stem = ImageFormat::strip_extension(input).expect("a file with a known format has a stem");
    let dir = input.parent().unwrap_or(Path::new(""));
    let (id, files) = match case_and_channel(&stem) {
        Some((id, _)) => {
            let files: Vec<PathBuf> = (0..channels).map(|c| dir.join(format!("{id}_{c:04}{ext}"))).collect();
            if let Some(missing) = files.iter().find(|f| !f.is_file()) {
                return Err(WorkflowError::MissingChannel { path: missing.clone(), case: id.to_string(), channels });
            }
            let extra = dir.join(format!("{id}_{channels:04}{ext}"));
            if extra.is_file() {
                return Err(WorkflowError::ExtraChannel { path: extra, case: id.to_string(), channels });
            }
            (id.to_string(), files)
        }
        None if channels == 1 => (stem.clone(), vec![input.to_path_buf()]),
        None => {
            return Err(WorkflowError::UnsuffixedChannels {
                path: input.to_path_buf(),
                stem,
                ext: ext.to_string(),
                channels,
            })
        }
    };
    let output = if is_image_name(output) { output.to_path_buf() } else { output.join(format!("{id}{ext}")) };
    if output == input {
        return Err(WorkflowError::OverwritesInput { path: output });
    }
    Ok(PredictJob { id, channels: files, output, network_labels_output: None })
}

/// The jobs for an input folder: every `{id}_0000{ext}` file is a case (hidden files and other
/// names are skipped), its channels checked against the model's `channels`; each output is
/// `output/{id}{ext}`. Cases come in id order.
pub fn jobs_for_folder(input: &Path, output: &Path, channels: usize) -> Result<Vec<PredictJob>, WorkflowError> {
    if is_image_name(output) {
        return Err(WorkflowError::FolderOutputRequired { path: output.to_path_buf() });
    }
    let list_error = |source| WorkflowError::Os { path: input.to_path_buf(), action: "cannot list folder", source };
    // id -> (format, channel -> file)
    let mut cases: BTreeMap<String, (ImageFormat, BTreeMap<usize, PathBuf>)> = BTreeMap::new();
    for entry in std::fs::read_dir(input).map_err(list_error)? {
        let path = entry.map_err(list_error)?.path();
        let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        let Ok(format) = ImageFormat::from_path(&path) else { continue };
        if hidden || !path.is_file() {
            continue;
        }
        let stem = ImageFormat::strip_extension(&path).expect("a file with a known format has a stem");
        let Some((id, channel)) = case_and_channel(&stem) else { continue };
        let (case_format, files) = cases.entry(id.to_string()).or_insert_with(|| (format, BTreeMap::new()));
        if *case_format != format {
            let first = files.values().next().expect("a case is entered with its first file").clone();
            return Err(WorkflowError::MixedExtensions { case: id.to_string(), first, other: path });
        }
        files.insert(channel, path);
    }
    if cases.is_empty() {
        return Err(WorkflowError::NoCases { folder: input.to_path_buf() });
    }
    let mut jobs = Vec::with_capacity(cases.len());
    for (id, (format, files)) in cases {
        let found: Vec<usize> = files.keys().copied().collect();
        if found != (0..channels).collect::<Vec<_>>() {
            return Err(WorkflowError::ChannelMismatch { case: id, folder: input.to_path_buf(), found, channels });
        }
        let output = output.join(format!("{id}{}", format.extension()));
        jobs.push(PredictJob { id, channels: files.into_values().collect(), output, network_labels_output: None });
    }
    Ok(jobs)
}

/// [`jobs_for_folder`] when `input` is a folder, else [`job_for_file`].
pub fn jobs_for_input(input: &Path, output: &Path, channels: usize) -> Result<Vec<PredictJob>, WorkflowError> {
    if input.is_dir() {
        jobs_for_folder(input, output, channels)
    } else {
        Ok(vec![job_for_file(input, output, channels)?])
    }
}

/// Predicts every job with the model folder's network, in order, and returns the failed ones;
/// a failed case writes nothing and the others go on. `observer` hears of each case.
pub fn predict_jobs(
    model: &ModelFolder,
    jobs: &[PredictJob],
    options: &PredictOptions,
    observer: &mut dyn PredictObserver,
) -> Vec<CaseFailure> {
    predict_jobs_with(model, &mut model.predictor(), jobs, options, observer)
}

/// [`predict_jobs`] with a given predictor of the model's network (one holding a report, say).
pub fn predict_jobs_with<P: PatchPredictor + ?Sized>(
    model: &ModelFolder,
    predictor: &mut P,
    jobs: &[PredictJob],
    options: &PredictOptions,
    observer: &mut dyn PredictObserver,
) -> Vec<CaseFailure> {
    let mut failures = Vec::new();
    for job in jobs {
        observer.on_case_start(job);
        let started = Instant::now();
        match predict_job(model, predictor, job, options) {
            Ok(output) => {
                observer.on_written(job, &output.seg, output.levels.as_ref());
                if let Some(levels) = &output.levels {
                    observer.on_levels(job, levels);
                }
                observer.on_timings(job, &output.times);
                observer.on_case_end(job, Ok(started.elapsed().as_secs_f64()))
            }
            Err(error) => {
                observer.on_case_end(job, Err(&error));
                failures.push(CaseFailure { id: job.id.clone(), error });
            }
        }
    }
    failures
}

/// Predicts one job with `predictor` (the model folder's network or any other with the same
/// classes): read the channels, preprocess for the model's configuration, predict, map to the
/// training dataset's label values, write atomically (creating the output's folder). Beside
/// the mask go what its values mean ([`labels_sidecar_path`]: the model folder's labels.json)
/// and, with level assignment, its report ([`levels_report_path`]). The mask is written last,
/// and if any write fails the others are removed again, so a case is written whole or not at
/// all, and an existing mask means a finished case (what `predict --continue` relies on, even
/// after a kill).
pub fn predict_job<P: PatchPredictor + ?Sized>(
    model: &ModelFolder,
    predictor: &mut P,
    job: &PredictJob,
    options: &PredictOptions,
) -> Result<CaseOutput, WorkflowError> {
    let mut times = StageTimes::default();
    let mut clock = Instant::now();
    let lap = |clock: &mut Instant| {
        let seconds = clock.elapsed().as_secs_f64();
        *clock = Instant::now();
        seconds
    };
    let case = CaseVolumes::read(&job.id, &job.channels, None)?;
    times.read = lap(&mut clock);
    let preprocessed = preprocess_case(&case, &model.plan, model.configuration())?;
    // The raw volumes are not needed any more; large cases would hold both in memory.
    drop(case);
    times.preprocess = lap(&mut clock);
    let mut timed = TimedPredictor { inner: predictor, seconds: 0.0 };
    let prediction = predict_case_with_levels(&preprocessed, &model.plan, &mut timed, options)?;
    drop(preprocessed);
    let seg = model.labels.to_dataset_values(&prediction.labels)?;
    times.network = timed.seconds;
    times.postprocess = lap(&mut clock) - timed.seconds;
    create_parent_folder(&job.output)?;
    let sidecar = labels_sidecar_path(&job.output);
    let report = levels_report_path(&job.output);
    let network_labels = match (&job.network_labels_output, &prediction.network_labels) {
        (Some(path), Some(labels)) => Some((path, model.labels.to_dataset_values(labels)?)),
        _ => None,
    };
    let remove_sidecars = || {
        let _ = std::fs::remove_file(&sidecar);
        let _ = std::fs::remove_file(&report);
        if let Some((path, _)) = &network_labels {
            let _ = std::fs::remove_file(path);
        }
    };
    let written = spineseg_io::json::write_json(&sidecar, &model.labels).and_then(|()| match &prediction.levels {
        Some(levels) => spineseg_io::json::write_json(&report, levels),
        // A report left from an earlier run describes another mask.
        None => {
            let _ = std::fs::remove_file(&report);
            Ok(())
        }
    });
    let written = written.map_err(WorkflowError::from).and_then(|()| match &network_labels {
        Some((path, labels)) => write_network_labels(path, labels),
        None => Ok(()),
    });
    if let Err(error) = written {
        // A failed case writes nothing.
        remove_sidecars();
        return Err(error);
    }
    if let Err(error) = spineseg_io::write_volume(&job.output, &AnyVolume::from(seg.clone())) {
        remove_sidecars();
        return Err(error.into());
    }
    times.write = lap(&mut clock);
    Ok(CaseOutput { seg, levels: prediction.levels, times })
}

/// Writes the network's own labels (creating their folder).
fn write_network_labels(path: &Path, labels: &Volume<Label>) -> Result<(), WorkflowError> {
    create_parent_folder(path)?;
    Ok(spineseg_io::write_volume(path, &AnyVolume::from(labels.clone()))?)
}

/// Creates the folder an output file goes into (nothing for a bare file name).
fn create_parent_folder(path: &Path) -> Result<(), WorkflowError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| WorkflowError::Os {
            path: parent.to_path_buf(),
            action: "cannot create folder",
            source,
        })?;
    }
    Ok(())
}

/// Where the meaning of an output mask's values goes: `<output stem>.labels.json` beside it, the
/// model folder's labels.json (ontology id, dataset value and name per structure), so tools that
/// read the mask later (`overlay`, `info`, `evaluate`, `report`) name its values right.
pub fn labels_sidecar_path(output: &Path) -> PathBuf {
    sidecar_path(output, "labels.json")
}

/// Where the level assignment's report of an output mask goes: `<output stem>.levels.json`
/// beside it (`out/case.nii.gz` -> `out/case.levels.json`).
pub fn levels_report_path(output: &Path) -> PathBuf {
    sidecar_path(output, "levels.json")
}

/// `<output stem>.<suffix>` beside an output mask.
pub fn sidecar_path(output: &Path, suffix: &str) -> PathBuf {
    let stem = ImageFormat::strip_extension(output)
        .unwrap_or_else(|| output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    output.with_file_name(format!("{stem}.{suffix}"))
}

/// The level assignment `spineseg predict` does by default: [`LevelOptions::default`] for a
/// model whose classes include vertebra or disc levels, `None` for any other.
pub fn default_level_assignment(model: &ModelFolder) -> Option<LevelOptions> {
    let classes: Vec<StructureId> = model.plan.labels.iter().map(|l| StructureId(l.value)).collect();
    LevelOptions::applies_to(&classes).then(LevelOptions::default)
}

/// The label values (ontology ids) to keep for a list of structure names such as
/// `"L4 vertebra, L4/L5 disc"` (synonyms allowed; for [`PredictOptions::keep_structures`]).
/// An unknown name, or a structure the model does not segment, is an error that suggests the
/// closest names or lists what the model segments.
pub fn structures_to_keep(model: &ModelFolder, names: &str) -> Result<Vec<Label>, StructureNameError> {
    let ontology = Ontology::standard();
    let wanted = ontology.resolve_names(names)?;
    let segmented: Vec<StructureId> = model.plan.labels.iter().skip(1).map(|l| StructureId(l.value)).collect();
    ontology.require_available(&wanted, &segmented)?;
    Ok(wanted.iter().map(|id| id.0).collect())
}

/// Writes a model folder with random (seeded) weights for a plan's configuration, with the
/// work folder's output labels: a pipeline check without training (`spineseg demo --minutes
/// 0`). `model.json` records `"training": {"untrained": true, "seed": seed}`.
pub fn write_untrained_model(
    model_dir: &Path,
    plan: &Plan,
    labels: &OutputLabels,
    configuration: ConfigurationName,
    seed: u64,
) -> Result<(), InferError> {
    let config = network_config_for_plan(plan, configuration)?;
    let predictor = NetworkPredictor::random(&config, seed, Device::flex());
    let mut manifest = ModelManifest::new(configuration, config);
    manifest.training = serde_json::json!({ "untrained": true, "seed": seed });
    ModelFolder::save(model_dir, &manifest, plan, labels, predictor.network())
}

/// `(id, channel)` of an nnU-Net channel file's name without extension; `None` for other names
/// and for an empty id (`_0000`).
fn case_and_channel(stem: &str) -> Option<(&str, usize)> {
    split_channel_suffix(stem).filter(|(id, _)| !id.is_empty())
}

/// Whether `path` names an image file by its extension (it need not exist).
fn is_image_name(path: &Path) -> bool {
    ImageFormat::from_path(path).is_ok()
}

fn channel_list(channels: usize) -> String {
    (0..channels).map(|c| format!("_{c:04}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_suffixes() {
        assert_eq!(case_and_channel("vb3_01_0000"), Some(("vb3_01", 0)));
        assert_eq!(case_and_channel("case_0012"), Some(("case", 12)));
        assert_eq!(case_and_channel("case_012"), None);
        assert_eq!(case_and_channel("case"), None);
        assert_eq!(case_and_channel("_0000"), None);
    }

    #[test]
    fn levels_report_beside_the_mask() {
        assert_eq!(levels_report_path(Path::new("out/case.nii.gz")), Path::new("out/case.levels.json"));
        assert_eq!(levels_report_path(Path::new("seg.mha")), Path::new("seg.levels.json"));
        assert_eq!(labels_sidecar_path(Path::new("out/case.nii.gz")), Path::new("out/case.labels.json"));
    }

    #[test]
    fn jobs_for_files_and_folders() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for name in ["a_0000.nii.gz", "a_0001.nii.gz", "b_0000.mha", "b_0001.mha", "plain.nii", "notes.txt"] {
            std::fs::write(d.join(name), b"").unwrap();
        }
        let out = d.join("out");
        let jobs = jobs_for_folder(d, &out, 2).unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].id, "a");
        assert_eq!(jobs[0].channels, vec![d.join("a_0000.nii.gz"), d.join("a_0001.nii.gz")]);
        assert_eq!(jobs[0].output, out.join("a.nii.gz"));
        assert_eq!(jobs[1].output, out.join("b.mha"));
        assert_eq!(jobs_for_input(d, &out, 2).unwrap(), jobs);
        let err = jobs_for_folder(d, &out, 1).unwrap_err().to_string();
        assert!(err.contains("case a") && err.contains("_0001"), "{err}");
        assert!(matches!(jobs_for_folder(d, &d.join("x.nii.gz"), 2), Err(WorkflowError::FolderOutputRequired { .. })));

        let job = job_for_file(&d.join("b_0000.mha"), &out, 2).unwrap();
        assert_eq!((job.id.as_str(), job.output.clone()), ("b", out.join("b.mha")));
        let job = job_for_file(&d.join("plain.nii"), &d.join("seg.nii.gz"), 1).unwrap();
        assert_eq!((job.id.as_str(), job.output.clone()), ("plain", d.join("seg.nii.gz")));
        assert!(
            matches!(job_for_file(&d.join("plain.nii"), &out, 2), Err(WorkflowError::UnsuffixedChannels { .. })),
            "two channels need suffixed names"
        );
        assert!(
            matches!(job_for_file(&d.join("a_0000.nii.gz"), &out, 1), Err(WorkflowError::ExtraChannel { .. })),
            "an extra channel file is an error"
        );
        assert!(matches!(job_for_file(&d.join("missing.nii"), &out, 1), Err(WorkflowError::NoSuchInput { .. })));
        assert!(job_for_file(&d.join("notes.txt"), &out, 1).is_err());
        assert!(matches!(
            job_for_file(&d.join("plain.nii"), &d.join("plain.nii"), 1),
            Err(WorkflowError::OverwritesInput { .. })
        ));
    }
}
