//! `spineseg dataset merge`: several datasets, each in any layout [`detect_and_open`] knows, as
//! one nnU-Net raw dataset whose label values are ontology ids, so one model trains on all of
//! them and the nnU-Net adapter reads the result like any other dataset (its label map is the
//! identity).
//!
//! # Output folder
//! ```text
//! OUT/dataset.json                        nnU-Net v2 raw (see below)
//! OUT/imagesTr/{source}_{case}_{XXXX}.nii.gz
//! OUT/labelsTr/{source}_{case}.nii.gz     the case's labels as ontology ids
//! OUT/imagesTs/{source}_{case}_{XXXX}.nii.gz   the inputs' unlabelled test cases, if any
//! OUT/sources.json                        where every case came from (SourcesFile)
//! ```
//! - `{source}` is the input's name: given by the caller, else its dataset name reduced to
//!   letters, digits and `-` (`spineseg lumbar phantom` -> `spineseg-lumbar-phantom`), made
//!   unique with `-2`, `-3`, ... Names hold no `_`, so the prefix of a merged case id always says
//!   its source and two inputs can never produce the same case id.
//! - Images keep their voxels and geometry: `.nii.gz` files are copied byte for byte, other
//!   formats (SPIDER's `.mha`, plain `.nii`) are read and written as `.nii.gz` with the same
//!   stored data type and geometry. Labels are read through the input's adapter (its
//!   [`LabelMap`](crate::LabelMap), per-case maps, SPINEPS mask combination) and written with
//!   ontology ids as values on the label file's own grid.
//! - `dataset.json`: `labels` are background plus every ontology structure that occurs in some
//!   merged label file (named by the ontology's short name, valued by its id, in id order);
//!   `channel_names` are the inputs' (which must agree) or the names the caller gives;
//!   `spineseg.vertebra_extent` is written only when every input declares the same extent;
//!   `spineseg.merged_from` lists the source names.
//!
//! # sources.json
//! [`SourcesFile`], version [`SOURCES_FORMAT_VERSION`]: `sources` (one record per input: name,
//! dataset name, layout, root, channel names, vertebra extent, case counts, structures) and
//! `cases`, an object keyed by merged case id:
//! ```json
//! "lumbar-real_vb3_01": {"source": "lumbar-real", "original_case": "vb3_01",
//!   "site": "fastcleverseg VB3", "split": "train",
//!   "images": ["/data/lumbar-real/imagesTr/vb3_01_0000.nii.gz"],
//!   "label": "/data/lumbar-real/labelsTr/vb3_01.nii.gz",
//!   "structures": [20, 21, 22], "structure_names": ["L1", "L2", "L3"]}
//! ```
//! `structures` are the ontology ids with at least one voxel in the case. `site` groups cases for
//! leave-one-source-out: when an input folder holds a `manifest.csv` with the columns `case` and
//! `source_dataset` (lumbar-real), a case's site is its `source_dataset`; when the input is itself
//! a merge, its `sources.json` site; otherwise it is the source name. From Python: `json.load(open("OUT/sources.json"))["cases"][case]["site"]`; from
//! Rust: [`case_sites`].
//!
//! # Atomicity
//! Everything is written into a hidden folder beside OUT (`.{OUT}.merging-{pid}`) that is renamed
//! to OUT at the end and removed on any failure, so a failed merge leaves OUT as it was. An
//! existing non-empty OUT is refused unless [`MergeOptions::overwrite`]; OUT may not be, contain
//! or lie inside an input.

use crate::error::{DatasetError, Result};
use crate::nnunet::DATASET_FILE;
use crate::{detect_and_open, value_counts, Case, Dataset, Split, VertebraExtent};
use serde::{Deserialize, Serialize};
use spineseg_anatomy::ontology::{Ontology, StructureId};
use spineseg_io::{AnyVolume, ImageFormat};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The file beside `dataset.json` that says where each merged case came from.
pub const SOURCES_FILE: &str = "sources.json";
/// Version of [`SourcesFile`]'s schema.
pub const SOURCES_FORMAT_VERSION: u32 = 1;
/// A per-case table an input folder may hold (lumbar-real's `manifest.csv`).
pub const MANIFEST_FILE: &str = "manifest.csv";
/// The column of [`MANIFEST_FILE`] that names a case's site.
pub const SITE_COLUMN: &str = "source_dataset";
/// File ending of every merged image and label.
const OUTPUT_ENDING: &str = ".nii.gz";

/// One dataset to merge: a folder in any supported layout (or an nnU-Net `dataset.json`), with an
/// optional source name (letters, digits and `-`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeInput {
    pub path: PathBuf,
    pub name: Option<String>,
}

impl MergeInput {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        MergeInput { path: path.into(), name: None }
    }

    pub fn named(path: impl Into<PathBuf>, name: impl Into<String>) -> Self {
        MergeInput { path: path.into(), name: Some(name.into()) }
    }
}

/// Options of [`merge_datasets`].
#[derive(Debug, Clone)]
pub struct MergeOptions {
    /// Replace an existing non-empty output folder.
    pub overwrite: bool,
    /// Channel names of the merged dataset. `None`: every input must have the same channel names,
    /// and those are used. `Some`: only the number of channels must agree (for inputs that name
    /// the same kind of image differently, such as "MRI" and "T2").
    pub channel_names: Option<Vec<String>>,
    /// `name` in the merged dataset.json; default: the source names joined by `+`.
    pub dataset_name: Option<String>,
    /// Cases processed at the same time. Default: up to 4.
    pub threads: usize,
}

impl Default for MergeOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        MergeOptions { overwrite: false, channel_names: None, dataset_name: None, threads: cores.clamp(1, 4) }
    }
}

/// `sources.json`: the inputs and where every merged case came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourcesFile {
    pub format_version: u32,
    pub sources: Vec<SourceRecord>,
    /// Keyed by merged case id.
    pub cases: BTreeMap<String, CaseSource>,
}

/// One merged input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// The source name: the prefix of its merged case ids.
    pub name: String,
    /// The name the input's adapter read (dataset.json's `name`, else the folder's name).
    pub dataset_name: String,
    /// The input's layout ("nnU-Net raw", "SPIDER", ...).
    pub layout: String,
    /// The input folder (absolute).
    pub root: PathBuf,
    pub channel_names: Vec<String>,
    pub vertebra_extent: VertebraExtent,
    /// Where per-case sites came from (`manifest.csv:source_dataset` or, for an input that is
    /// itself a merge, `sources.json:site`); `None` when every case's site is the source name.
    pub sites_from: Option<String>,
    pub training_cases: usize,
    pub test_cases: usize,
    /// Ontology ids with voxels in any of its cases.
    pub structures: Vec<StructureId>,
}

/// Where one merged case came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseSource {
    /// The source name ([`SourceRecord::name`]).
    pub source: String,
    /// The case id in the input dataset.
    pub original_case: String,
    /// The group for leave-one-source-out: the input manifest's `source_dataset`, else `source`.
    pub site: String,
    pub split: Split,
    /// The input's image files, in channel order.
    pub images: Vec<PathBuf>,
    /// The input's label file (`None` for test cases).
    pub label: Option<PathBuf>,
    /// SPINEPS only: the subregion mask combined with `label`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subregion_label: Option<PathBuf>,
    /// Ontology ids with at least one voxel in the merged label file.
    pub structures: Vec<StructureId>,
    /// The same structures by ontology name.
    pub structure_names: Vec<String>,
}

/// What [`merge_datasets`] wrote.
#[derive(Debug, Clone)]
pub struct MergeSummary {
    pub out: PathBuf,
    pub dataset_name: String,
    pub channel_names: Vec<String>,
    /// The structures of the merged dataset.json (background not included), in id order.
    pub labels: Vec<StructureId>,
    pub vertebra_extent: VertebraExtent,
    pub sources: Vec<SourceRecord>,
    pub training_cases: usize,
    pub test_cases: usize,
    /// Merged case counts per site, sorted by site.
    pub sites: BTreeMap<String, usize>,
    /// Things worth knowing that did not stop the merge (inputs' warnings, files that belong to
    /// no case, extents that disagree, cases missing from a manifest).
    pub warnings: Vec<String>,
}

/// Merges `inputs` into one nnU-Net raw dataset at `out` (see the module documentation).
///
/// Fails, leaving `out` untouched, when an input cannot be opened, has a case with a missing
/// channel or label (run `dataset check` on it), holds a label value its adapter cannot map, or
/// when channel names disagree, a source name is invalid or repeated, `out` overlaps an input, or
/// `out` is a non-empty folder and `options.overwrite` is false.
pub fn merge_datasets(inputs: &[MergeInput], out: &Path, options: &MergeOptions) -> Result<MergeSummary> {
    if inputs.is_empty() {
        return Err(DatasetError::Merge("no input datasets given".into()));
    }
    let mut warnings = Vec::new();
    let sources = open_sources(inputs, &mut warnings)?;
    let channel_names = merged_channel_names(&sources, options)?;
    check_output(out, &sources, options.overwrite)?;

    let jobs = case_jobs(&sources);
    let tmp = TempFolder::create(out)?;
    for sub in ["imagesTr", "labelsTr", "imagesTs"] {
        let dir = tmp.path.join(sub);
        std::fs::create_dir_all(&dir).map_err(|source| DatasetError::Os { path: dir.clone(), source })?;
    }
    let run = |job: &Job| merge_case(job, &tmp.path);
    let merged: Vec<CaseSource> = match rayon::ThreadPoolBuilder::new().num_threads(options.threads.max(1)).build() {
        Ok(pool) => pool.install(|| {
            use rayon::prelude::*;
            jobs.par_iter().map(run).collect::<Result<_>>()
        })?,
        Err(_) => jobs.iter().map(run).collect::<Result<_>>()?,
    };
    let test_dir = tmp.path.join("imagesTs");
    if jobs.iter().all(|j| j.case.split == Split::Train) {
        std::fs::remove_dir(&test_dir).map_err(|source| DatasetError::Os { path: test_dir, source })?;
    }

    let records: Vec<SourceRecord> = sources
        .iter()
        .map(|s| {
            let mine: Vec<&CaseSource> = merged.iter().filter(|c| c.source == s.name).collect();
            let structures: BTreeSet<StructureId> = mine.iter().flat_map(|c| c.structures.iter().copied()).collect();
            SourceRecord {
                name: s.name.clone(),
                dataset_name: s.dataset.name.clone(),
                layout: s.dataset.kind.to_string(),
                root: s.dataset.root.clone(),
                channel_names: s.dataset.channel_names.clone(),
                vertebra_extent: s.dataset.vertebra_extent,
                sites_from: s.sites.as_ref().map(|(_, from)| from.to_string()),
                training_cases: mine.iter().filter(|c| c.split == Split::Train).count(),
                test_cases: mine.iter().filter(|c| c.split == Split::Test).count(),
                structures: structures.into_iter().collect(),
            }
        })
        .collect();
    let labels: Vec<StructureId> =
        merged.iter().flat_map(|c| c.structures.iter().copied()).collect::<BTreeSet<_>>().into_iter().collect();
    let extents: BTreeSet<String> = sources.iter().map(|s| s.dataset.vertebra_extent.to_string()).collect();
    let vertebra_extent = if extents.len() == 1 { sources[0].dataset.vertebra_extent } else { VertebraExtent::Unknown };
    if extents.len() > 1 {
        let each: Vec<String> = sources.iter().map(|s| format!("{}: {}", s.name, s.dataset.vertebra_extent)).collect();
        warnings.push(format!(
            "the inputs' vertebra masks cover different extents ({}); the merged dataset does not declare one",
            each.join(", ")
        ));
    }
    let dataset_name = options
        .dataset_name
        .clone()
        .unwrap_or_else(|| sources.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join("+"));
    let training_cases = merged.iter().filter(|c| c.split == Split::Train).count();
    let test_cases = merged.len() - training_cases;
    let mut sites = BTreeMap::new();
    for case in &merged {
        *sites.entry(case.site.clone()).or_insert(0) += 1;
    }

    let sources_file = SourcesFile {
        format_version: SOURCES_FORMAT_VERSION,
        sources: records.clone(),
        cases: jobs.iter().map(|j| j.id.clone()).zip(merged).collect(),
    };
    spineseg_io::json::write_json(&tmp.path.join(SOURCES_FILE), &sources_file)?;
    let json = DatasetJson::new(&dataset_name, &records, &channel_names, &labels, training_cases, vertebra_extent);
    spineseg_io::json::write_json(&tmp.path.join(DATASET_FILE), &json)?;
    tmp.install(out, &mut warnings)?;

    Ok(MergeSummary {
        out: out.to_path_buf(),
        dataset_name,
        channel_names,
        labels,
        vertebra_extent,
        sources: records,
        training_cases,
        test_cases,
        sites,
        warnings,
    })
}

/// Reads `sources.json` of a merged dataset folder.
pub fn read_sources(dir: &Path) -> Result<SourcesFile> {
    let path = dir.join(SOURCES_FILE);
    let file: SourcesFile = spineseg_io::json::read_json(&path)?;
    if file.format_version != SOURCES_FORMAT_VERSION {
        return Err(DatasetError::InvalidDataset {
            path,
            detail: format!(
                "format_version {} is not supported (this spineseg reads {SOURCES_FORMAT_VERSION})",
                file.format_version
            ),
        });
    }
    Ok(file)
}

/// Merged case id -> site, for grouping cases by source (leave-one-source-out).
pub fn case_sites(dir: &Path) -> Result<BTreeMap<String, String>> {
    Ok(read_sources(dir)?.cases.into_iter().map(|(id, case)| (id, case.site)).collect())
}

/// A source name from free text: runs of anything but ASCII letters and digits become one `-`,
/// leading and trailing `-` are dropped; `dataset` when nothing is left.
pub fn sanitise_name(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed = out.trim_matches('-');
    if trimmed.is_empty() {
        "dataset".into()
    } else {
        trimmed.into()
    }
}

/// Whether `name` can be a source name as given: non-empty ASCII letters, digits and `-`.
pub fn is_valid_source_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// A case id made safe for file names: anything but ASCII letters, digits, `_` and `-` becomes `-`.
fn sanitise_case_id(id: &str) -> String {
    let out: String =
        id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '-' }).collect();
    if out.is_empty() {
        "case".into()
    } else {
        out
    }
}

/// An opened input.
struct Source {
    name: String,
    dataset: Dataset,
    /// Case id -> site from the input's own `sources.json` or manifest, and which of them.
    sites: Option<(BTreeMap<String, String>, &'static str)>,
}

fn open_sources(inputs: &[MergeInput], warnings: &mut Vec<String>) -> Result<Vec<Source>> {
    let mut sources: Vec<Source> = Vec::new();
    let mut taken = BTreeSet::new();
    // Explicit names first, so a default name never takes one that is asked for later.
    for input in inputs {
        if let Some(name) = &input.name {
            if !is_valid_source_name(name) {
                return Err(DatasetError::Merge(format!(
                    "source name '{name}' for {} may hold only ASCII letters, digits and '-'",
                    input.path.display()
                )));
            }
            if !taken.insert(name.clone()) {
                return Err(DatasetError::Merge(format!("source name '{name}' is given to two inputs")));
            }
        }
    }
    for input in inputs {
        let path = input.path.canonicalize().map_err(|source| DatasetError::Os { path: input.path.clone(), source })?;
        let dataset = detect_and_open(&path)?;
        if let Some(other) = sources.iter().find(|s| s.dataset.root == dataset.root) {
            return Err(DatasetError::Merge(format!(
                "{} is given twice (as '{}' and again)",
                dataset.root.display(),
                other.name
            )));
        }
        let name = match &input.name {
            Some(name) => name.clone(),
            None => {
                let base = sanitise_name(&dataset.name);
                let name = (1..)
                    .map(|n| if n == 1 { base.clone() } else { format!("{base}-{n}") })
                    .find(|candidate| !taken.contains(candidate))
                    .expect("some suffix is free");
                taken.insert(name.clone());
                name
            }
        };
        for issue in &dataset.issues {
            if let Some(case) = issue.case() {
                return Err(DatasetError::InvalidDataset {
                    path: dataset.root.clone(),
                    detail: format!(
                        "dataset '{}': case {case}: {issue}; fix it (see `spineseg dataset check`) before merging",
                        dataset.name
                    ),
                });
            }
            warnings.push(format!("{name}: {issue} (not merged)"));
        }
        if let Some(case) = dataset.training_cases().find(|c| c.label.is_none()) {
            return Err(DatasetError::InvalidDataset {
                path: dataset.root.clone(),
                detail: format!("dataset '{}': training case {} has no label file", dataset.name, case.id),
            });
        }
        warnings.extend(dataset.warnings.iter().map(|w| format!("{name}: {w}")));
        let sites = read_sites(&dataset.root)?;
        if let Some((sites, from)) = &sites {
            let missing: Vec<&str> =
                dataset.cases.iter().filter(|c| !sites.contains_key(&c.id)).map(|c| c.id.as_str()).collect();
            if !missing.is_empty() {
                warnings.push(format!(
                    "{name}: {} case(s) have no site in {from} ({}); their site is '{name}'",
                    missing.len(),
                    missing.join(", ")
                ));
            }
        }
        sources.push(Source { name, dataset, sites });
    }
    Ok(sources)
}

/// Case id -> site of an input: from its own `sources.json` when it is itself a merge (so merging
/// a merged dataset again keeps the sites), else from its manifest.
fn read_sites(root: &Path) -> Result<Option<(BTreeMap<String, String>, &'static str)>> {
    if root.join(SOURCES_FILE).is_file() {
        return Ok(Some((case_sites(root)?, "sources.json:site")));
    }
    Ok(read_manifest_sites(root)?.map(|sites| (sites, "manifest.csv:source_dataset")))
}

/// Case id -> site from `root/manifest.csv`, when the file exists and has a `source_dataset`
/// column; cases with an empty site are left out.
fn read_manifest_sites(root: &Path) -> Result<Option<BTreeMap<String, String>>> {
    let path = root.join(MANIFEST_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let csv_err = |detail: String| DatasetError::Csv { path: path.clone(), detail };
    let mut reader = csv::Reader::from_path(&path).map_err(|e| csv_err(e.to_string()))?;
    let headers = reader.headers().map_err(|e| csv_err(e.to_string()))?.clone();
    let column = |name: &str| headers.iter().position(|h| h.trim().eq_ignore_ascii_case(name));
    let Some(site_col) = column(SITE_COLUMN) else { return Ok(None) };
    let case_col =
        column("case").ok_or_else(|| csv_err(format!("has a '{SITE_COLUMN}' column but no 'case' column")))?;
    let mut sites = BTreeMap::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_err(e.to_string()))?;
        let case = record.get(case_col).unwrap_or("").trim();
        let site = record.get(site_col).unwrap_or("").trim();
        if !case.is_empty() && !site.is_empty() {
            sites.insert(case.to_string(), site.to_string());
        }
    }
    Ok(Some(sites))
}

fn merged_channel_names(sources: &[Source], options: &MergeOptions) -> Result<Vec<String>> {
    let mismatch = |source: &Source, detail: String| DatasetError::InvalidDataset {
        path: source.dataset.root.clone(),
        detail: format!("dataset '{}' ({}): {detail}", source.dataset.name, source.name),
    };
    match &options.channel_names {
        Some(names) => {
            if names.is_empty() || names.iter().any(|n| n.trim().is_empty()) {
                return Err(DatasetError::Merge(format!(
                    "channel names {names:?}: every channel needs a non-empty name"
                )));
            }
            for source in sources {
                if source.dataset.channel_names.len() != names.len() {
                    return Err(mismatch(
                        source,
                        format!(
                            "has {} channel(s) {:?}, but the merged dataset is to have {} ({names:?})",
                            source.dataset.channel_names.len(),
                            source.dataset.channel_names,
                            names.len()
                        ),
                    ));
                }
            }
            Ok(names.clone())
        }
        None => {
            let first = &sources[0];
            for source in &sources[1..] {
                if source.dataset.channel_names != first.dataset.channel_names {
                    return Err(mismatch(
                        source,
                        format!(
                            "channel names {:?} differ from {:?} of dataset '{}' ({}); if the channels are the \
                             same kind of image, name the merged channels explicitly (--channel-names)",
                            source.dataset.channel_names,
                            first.dataset.channel_names,
                            first.dataset.name,
                            first.dataset.root.display()
                        ),
                    ));
                }
            }
            Ok(first.dataset.channel_names.clone())
        }
    }
}

/// Refuses an output that is a file, a non-empty folder (without `overwrite`), or overlaps an
/// input (overwriting would delete it; a folder inside an input would be read as part of it).
fn check_output(out: &Path, sources: &[Source], overwrite: bool) -> Result<()> {
    let refuse = |detail: String| Err(DatasetError::Merge(format!("output {}: {detail}", out.display())));
    if out.file_name().is_none() {
        return refuse("needs a folder name".into());
    }
    if out.exists() && !out.is_dir() {
        return refuse("exists and is not a folder".into());
    }
    let absolute = absolute_path(out)?;
    for source in sources {
        let root = &source.dataset.root;
        if absolute == *root || root.starts_with(&absolute) || absolute.starts_with(root) {
            return refuse(format!("overlaps the input {} (dataset '{}')", root.display(), source.dataset.name));
        }
    }
    if out.is_dir() && !overwrite {
        let mut entries =
            std::fs::read_dir(out).map_err(|source| DatasetError::Os { path: out.to_path_buf(), source })?;
        if entries.next().is_some() {
            return Err(DatasetError::OutputExists { path: out.to_path_buf() });
        }
    }
    Ok(())
}

/// `path` made absolute with symbolic links resolved as far as it exists.
fn absolute_path(path: &Path) -> Result<PathBuf> {
    if let Ok(p) = path.canonicalize() {
        return Ok(p);
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().expect("checked to have a name");
    Ok(absolute_path(&parent)?.join(name))
}

/// One case to merge, with its merged id.
struct Job<'a> {
    source: &'a Source,
    case: &'a Case,
    id: String,
}

fn case_jobs(sources: &[Source]) -> Vec<Job<'_>> {
    let mut taken = BTreeSet::new();
    let mut jobs = Vec::new();
    for source in sources {
        for case in &source.dataset.cases {
            let base = format!("{}_{}", source.name, sanitise_case_id(&case.id));
            // Two ids of one input that differ only in characters the sanitising replaced.
            let id = (1..)
                .map(|n| if n == 1 { base.clone() } else { format!("{base}-{n}") })
                .find(|candidate| !taken.contains(candidate))
                .expect("some suffix is free");
            taken.insert(id.clone());
            jobs.push(Job { source, case, id });
        }
    }
    jobs
}

/// Copies or converts the case's images and writes its labels as ontology ids into `folder`.
fn merge_case(job: &Job, folder: &Path) -> Result<CaseSource> {
    let Job { source, case, id } = job;
    let images_dir = folder.join(if case.split == Split::Train { "imagesTr" } else { "imagesTs" });
    for (channel, image) in case.images.iter().enumerate() {
        copy_image(image, &images_dir.join(format!("{id}_{channel:04}{OUTPUT_ENDING}")))?;
    }
    let mut structures = Vec::new();
    if case.split == Split::Train {
        let labels = source.dataset.load_labels(case)?.ok_or_else(|| DatasetError::InvalidDataset {
            path: source.dataset.root.clone(),
            detail: format!("training case {} has no label file", case.id),
        })?;
        structures = value_counts(&labels).into_keys().filter(|v| *v != 0).map(StructureId).collect();
        let target = folder.join("labelsTr").join(format!("{id}{OUTPUT_ENDING}"));
        spineseg_io::write_volume(&target, &AnyVolume::from(labels))?;
    }
    let ontology = Ontology::standard();
    Ok(CaseSource {
        source: source.name.clone(),
        original_case: case.id.clone(),
        site: source
            .sites
            .as_ref()
            .and_then(|(sites, _)| sites.get(&case.id))
            .cloned()
            .unwrap_or_else(|| source.name.clone()),
        split: case.split,
        images: case.images.clone(),
        label: if case.split == Split::Train { case.label.clone() } else { None },
        subregion_label: case.subregion_label.clone(),
        structure_names: structures
            .iter()
            .map(|&id| ontology.get(id).map(|s| s.name.clone()).unwrap_or_else(|| id.to_string()))
            .collect(),
        structures,
    })
}

/// Copies a `.nii.gz` image byte for byte; converts any other format to `.nii.gz` (same stored
/// data type and geometry).
fn copy_image(from: &Path, to: &Path) -> Result<()> {
    if ImageFormat::from_path(from)? == ImageFormat::NiftiGz {
        std::fs::copy(from, to).map_err(|source| DatasetError::Os { path: from.to_path_buf(), source })?;
        Ok(())
    } else {
        Ok(spineseg_io::write_volume(to, &spineseg_io::read_volume(from)?)?)
    }
}

/// The hidden folder a merge is written into; removed when dropped before [`TempFolder::install`].
struct TempFolder {
    path: PathBuf,
    installed: bool,
}

impl TempFolder {
    fn create(out: &Path) -> Result<Self> {
        let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|source| DatasetError::Os { path: parent.to_path_buf(), source })?;
        let path = sibling(out, "merging");
        if path.exists() {
            // Left by an earlier run of a process with the same id that was killed.
            std::fs::remove_dir_all(&path).map_err(|source| DatasetError::Os { path: path.clone(), source })?;
        }
        std::fs::create_dir(&path).map_err(|source| DatasetError::Os { path: path.clone(), source })?;
        Ok(TempFolder { path, installed: false })
    }

    /// Renames the folder to `out`, replacing an existing `out` (checked before: empty, or
    /// overwriting was asked for). The old `out` is moved aside first and restored if the rename
    /// fails.
    fn install(mut self, out: &Path, warnings: &mut Vec<String>) -> Result<()> {
        let os = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DatasetError::Os { path, source }
        };
        let mut replaced = None;
        if out.is_dir() {
            let empty = std::fs::read_dir(out).map_err(os(out))?.next().is_none();
            if empty {
                std::fs::remove_dir(out).map_err(os(out))?;
            } else {
                let aside = sibling(out, "replaced");
                std::fs::rename(out, &aside).map_err(os(out))?;
                replaced = Some(aside);
            }
        }
        if let Err(source) = std::fs::rename(&self.path, out) {
            if let Some(aside) = &replaced {
                let _ = std::fs::rename(aside, out);
            }
            return Err(DatasetError::Os { path: out.to_path_buf(), source });
        }
        self.installed = true;
        if let Some(aside) = replaced {
            if let Err(e) = std::fs::remove_dir_all(&aside) {
                warnings.push(format!("could not remove the replaced dataset at {}: {e}", aside.display()));
            }
        }
        Ok(())
    }
}

impl Drop for TempFolder {
    fn drop(&mut self) {
        if !self.installed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A hidden folder beside `out`: `.{name}.{what}-{pid}`.
fn sibling(out: &Path, what: &str) -> PathBuf {
    let name = out.file_name().expect("checked to have a name").to_string_lossy();
    out.with_file_name(format!(".{name}.{what}-{}", std::process::id()))
}

/// The merged dataset.json, fields in nnU-Net's order.
#[derive(Serialize)]
struct DatasetJson {
    name: String,
    description: String,
    channel_names: OrderedMap<String>,
    labels: OrderedMap<u16>,
    #[serde(rename = "numTraining")]
    num_training: usize,
    file_ending: &'static str,
    spineseg: MergeInfo,
}

#[derive(Serialize)]
struct MergeInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    vertebra_extent: Option<VertebraExtent>,
    merged_from: Vec<String>,
    sources_file: &'static str,
}

impl DatasetJson {
    fn new(
        name: &str,
        sources: &[SourceRecord],
        channel_names: &[String],
        structures: &[StructureId],
        num_training: usize,
        extent: VertebraExtent,
    ) -> Self {
        let ontology = Ontology::standard();
        let mut labels = vec![("background".to_string(), 0)];
        labels.extend(structures.iter().map(|&id| {
            let name = ontology.get(id).expect("merged labels are ontology ids").name.clone();
            (name, id.0)
        }));
        let each: Vec<String> = sources
            .iter()
            .map(|s| format!("{} ({} cases, {})", s.name, s.training_cases + s.test_cases, s.root.display()))
            .collect();
        DatasetJson {
            name: name.to_string(),
            description: format!(
                "Merged by spineseg dataset merge from {}. Label values are spineseg ontology ids; {SOURCES_FILE} \
                 says where each case came from.",
                each.join(", ")
            ),
            channel_names: OrderedMap(
                channel_names.iter().enumerate().map(|(i, n)| (i.to_string(), n.clone())).collect(),
            ),
            labels: OrderedMap(labels),
            num_training,
            file_ending: OUTPUT_ENDING,
            spineseg: MergeInfo {
                vertebra_extent: (extent != VertebraExtent::Unknown).then_some(extent),
                merged_from: sources.iter().map(|s| s.name.clone()).collect(),
                sources_file: SOURCES_FILE,
            },
        }
    }
}

/// A JSON object whose keys keep the given order (serde_json's map may sort them).
struct OrderedMap<V>(Vec<(String, V)>);

impl<V: Serialize> Serialize for OrderedMap<V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitised_to_letters_digits_and_dashes() {
        assert_eq!(sanitise_name("spineseg lumbar phantom"), "spineseg-lumbar-phantom");
        assert_eq!(sanitise_name("  lumbar_real (v2)! "), "lumbar-real-v2");
        assert_eq!(sanitise_name("spider-t2space"), "spider-t2space");
        assert_eq!(sanitise_name("__"), "dataset");
        assert!(is_valid_source_name("MyoSeg-3"));
        assert!(!is_valid_source_name("a_b") && !is_valid_source_name("") && !is_valid_source_name("a b"));
        assert_eq!(sanitise_case_id("1_t2_SPACE"), "1_t2_SPACE");
        assert_eq!(sanitise_case_id("sub 1.a"), "sub-1-a");
    }

    #[test]
    fn manifest_sites_need_both_columns() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_manifest_sites(dir.path()).unwrap(), None);
        let path = dir.path().join(MANIFEST_FILE);
        std::fs::write(&path, "case,split\na,dev\n").unwrap();
        assert_eq!(read_manifest_sites(dir.path()).unwrap(), None);
        std::fs::write(&path, "case,split,source_dataset\na,dev,fastcleverseg VB3\nb,dev,\n").unwrap();
        let sites = read_manifest_sites(dir.path()).unwrap().unwrap();
        assert_eq!(sites.into_iter().collect::<Vec<_>>(), [("a".to_string(), "fastcleverseg VB3".to_string())]);
        std::fs::write(&path, "id,source_dataset\na,x\n").unwrap();
        let err = read_manifest_sites(dir.path()).unwrap_err().to_string();
        assert!(err.contains(MANIFEST_FILE) && err.contains("no 'case' column"), "{err}");
    }

    #[test]
    fn dataset_json_lists_ontology_names_in_id_order() {
        let json = DatasetJson::new(
            "a+b",
            &[],
            &["T2".to_string()],
            &[StructureId(23), StructureId(61), StructureId(123)],
            3,
            VertebraExtent::Unknown,
        );
        let text = serde_json::to_string(&json).unwrap();
        assert!(text.contains(r#""labels":{"background":0,"L4":23,"spinal canal":61,"L4/L5":123}"#), "{text}");
        assert!(text.contains(r#""channel_names":{"0":"T2"}"#) && !text.contains("vertebra_extent"), "{text}");
    }
}
