//! Dataset adapters: each supported public layout is read into one common model, a [`Dataset`]
//! of [`Case`]s plus a [`LabelMap`] that maps the dataset's label values onto the
//! [ontology](spineseg_anatomy::ontology).
//!
//! | adapter | layout | vertebra masks |
//! |---|---|---|
//! | [`nnunet`] | nnU-Net v2 raw: `dataset.json`, `imagesTr/`, `labelsTr/`, `imagesTs/` | from `dataset.json` or options, else [`VertebraExtent::Unknown`] |
//! | [`spider`] | SPIDER: `images/*.mha`, `masks/*.mha`, `overview.csv` | whole vertebra |
//! | [`mrspineseg`] | MRSpineSeg: `CaseN.nii.gz` + `mask_caseN.nii.gz` anywhere below the root | whole vertebra (see the module) |
//! | [`spineps`] | SPINEPS / TPTBox BIDS-like files: image + `seg-vert` + `seg-subreg` masks | bodies only (combined masks) |
//!
//! # Unknown values and names
//! - A dataset value whose name or meaning has no ontology structure is kept in the
//!   [`LabelMap`] as [`LabelTarget::Unmapped`] with the reason. Opening the dataset succeeds (it
//!   can still be checked), the reason is listed in [`Dataset::warnings`], and
//!   [`LabelMap::remap`] fails on a file only when such a value actually occurs in it.
//! - A value the dataset does not declare at all is unknown: [`LabelMap::remap`] fails naming
//!   the file and the value; `dataset check` reports it with its voxel count.
//! - [`LabelTarget::Ignored`] values (none of the built-in adapters needs one today) become
//!   background.
//!
//! Layout problems found while scanning (a label without an image, a missing channel, ...) do
//! not stop opening: they are collected in [`Dataset::issues`] for `dataset check` to report.

pub mod annotations;
pub mod check;
pub mod error;
pub mod merge;
pub mod mrspineseg;
pub mod nnunet;
pub mod spider;
pub mod spineps;

use crate::error::{DatasetError, Result};
use spineseg_anatomy::ontology::{Ontology, StructureId};
use spineseg_io::{ImageFormat, Label, Volume};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use mrspineseg::{open_mrspineseg, MrSpineSegOptions};
pub use nnunet::{open_nnunet, NnUnetOptions};
pub use spider::{open_spider, SpiderOptions};
pub use spineps::{combine_spineps_masks, open_spineps, SpinepsCombined};

/// Which layout a dataset was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    NnUnetRaw,
    Spider,
    MrSpineSeg,
    Spineps,
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DatasetKind::NnUnetRaw => "nnU-Net raw",
            DatasetKind::Spider => "SPIDER",
            DatasetKind::MrSpineSeg => "MRSpineSeg",
            DatasetKind::Spineps => "SPINEPS",
        })
    }
}

/// What a dataset's vertebra masks cover. Models trained on one kind predict that kind, so mixing
/// datasets with different extents needs care (e.g. cutting whole vertebrae down to bodies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VertebraExtent {
    /// Only the vertebral body (corpus, with its endplates).
    BodyOnly,
    /// The whole bone: body, arch and processes.
    WholeVertebra,
    /// The dataset does not say (e.g. an nnU-Net folder without a `spineseg` key).
    Unknown,
}

impl VertebraExtent {
    /// Parses `body_only` / `body` / `whole_vertebra` / `whole` / `unknown` (case-insensitive,
    /// `-` or `_`).
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_lowercase().replace('-', "_").as_str() {
            "body_only" | "body" | "bodies" | "vertebral_body" => Some(VertebraExtent::BodyOnly),
            "whole_vertebra" | "whole" | "vertebra" => Some(VertebraExtent::WholeVertebra),
            "unknown" => Some(VertebraExtent::Unknown),
            _ => None,
        }
    }
}

impl fmt::Display for VertebraExtent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VertebraExtent::BodyOnly => "vertebral bodies only",
            VertebraExtent::WholeVertebra => "whole vertebrae",
            VertebraExtent::Unknown => "unknown",
        })
    }
}

/// Whether a case belongs to the training or the test part of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Cases that should have labels (nnU-Net `imagesTr`, every case of the other layouts).
    Train,
    /// Cases without labels (nnU-Net `imagesTs`).
    Test,
}

/// One case: its image channels in order, and its label file(s).
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub id: String,
    /// Image channels in channel order. Missing channels are not listed here but in
    /// [`Dataset::issues`].
    pub images: Vec<PathBuf>,
    /// The label file, in the dataset's own values (for SPINEPS: the `seg-vert` instance mask).
    pub label: Option<PathBuf>,
    /// SPINEPS only: the `seg-subreg` subregion mask that is combined with `label`.
    pub subregion_label: Option<PathBuf>,
    pub split: Split,
}

impl Case {
    /// Every file of the case, images first.
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.images
            .iter()
            .chain(self.label.iter())
            .chain(self.subregion_label.iter())
    }
}

/// A layout problem found while scanning a dataset folder.
#[derive(Debug, Clone, PartialEq)]
pub enum LayoutIssue {
    /// A case lacks image channel `channel`; `expected` is where it should be.
    MissingChannel {
        case: String,
        channel: usize,
        expected: PathBuf,
    },
    /// A training case has no label file.
    MissingLabel { case: String, expected: Option<PathBuf> },
    /// A label file without any image.
    OrphanLabel { path: PathBuf },
    /// An image file that belongs to no case (e.g. a channel index the dataset does not declare).
    OrphanImage { path: PathBuf, reason: String },
    /// The dataset's description disagrees with the files (e.g. `numTraining`).
    Inconsistent { detail: String },
}

impl LayoutIssue {
    /// The case this issue belongs to, when it belongs to one.
    pub fn case(&self) -> Option<&str> {
        match self {
            LayoutIssue::MissingChannel { case, .. } | LayoutIssue::MissingLabel { case, .. } => Some(case),
            _ => None,
        }
    }
}

impl fmt::Display for LayoutIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutIssue::MissingChannel { channel, expected, .. } => {
                write!(f, "missing channel {channel} (expected {})", expected.display())
            }
            LayoutIssue::MissingLabel { expected: Some(p), .. } => {
                write!(f, "missing label (expected {})", p.display())
            }
            LayoutIssue::MissingLabel { expected: None, .. } => write!(f, "missing label"),
            LayoutIssue::OrphanLabel { path } => write!(f, "label without image: {}", path.display()),
            LayoutIssue::OrphanImage { path, reason } => {
                write!(f, "image not part of any case ({reason}): {}", path.display())
            }
            LayoutIssue::Inconsistent { detail } => f.write_str(detail),
        }
    }
}

/// What a dataset label value means in the ontology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelTarget {
    /// The value maps to this structure.
    Structure(StructureId),
    /// The value is deliberately dropped (becomes background).
    Ignored,
    /// The dataset declares the value but the ontology has no structure for it; the reason says
    /// why (e.g. "no structure named 'banana'", "L6 has no ontology id yet").
    Unmapped { reason: String },
}

/// One declared value of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelEntry {
    /// The dataset's own name for the value ("T12L1", "vertebra 3 from the bottom").
    pub name: String,
    pub target: LabelTarget,
    /// True for values that mark a structure as only partly inside the field of view (SPIDER
    /// 101..125); they map to the same structure as the fully visible value.
    pub partial: bool,
}

/// Maps a dataset's label values to ontology ids. Value 0 is background unless declared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelMap {
    entries: BTreeMap<Label, LabelEntry>,
}

impl LabelMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares `value` (replacing an earlier declaration of it).
    pub fn insert(&mut self, value: Label, name: impl Into<String>, target: LabelTarget) {
        self.entries.insert(
            value,
            LabelEntry {
                name: name.into(),
                target,
                partial: false,
            },
        );
    }

    /// Declares `value` as a partly visible instance of `target`.
    pub fn insert_partial(&mut self, value: Label, name: impl Into<String>, target: LabelTarget) {
        self.entries.insert(
            value,
            LabelEntry {
                name: name.into(),
                target,
                partial: true,
            },
        );
    }

    pub fn get(&self, value: Label) -> Option<&LabelEntry> {
        self.entries.get(&value)
    }

    /// Declared values in increasing order.
    pub fn entries(&self) -> impl Iterator<Item = (Label, &LabelEntry)> {
        self.entries.iter().map(|(v, e)| (*v, e))
    }

    /// The ontology id of `value`: `Ok(None)` for background (0 or ignored), `Err(reason)` when
    /// the value is undeclared or unmapped.
    pub fn target(&self, value: Label) -> std::result::Result<Option<StructureId>, String> {
        match self.entries.get(&value) {
            None if value == 0 => Ok(None),
            None => Err("value is not declared by the dataset".to_string()),
            Some(LabelEntry {
                target: LabelTarget::Structure(id),
                ..
            }) => Ok(Some(*id)),
            Some(LabelEntry {
                target: LabelTarget::Ignored,
                ..
            }) => Ok(None),
            Some(LabelEntry {
                target: LabelTarget::Unmapped { reason },
                name,
                ..
            }) => Err(format!("'{name}' has no ontology structure: {reason}")),
        }
    }

    /// The ontology structures this map can produce, each once, in id order.
    pub fn structures(&self) -> Vec<StructureId> {
        let mut out: Vec<StructureId> = self
            .entries
            .values()
            .filter_map(|e| match e.target {
                LabelTarget::Structure(id) => Some(id),
                _ => None,
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Declared values whose target is [`LabelTarget::Unmapped`], with their names and reasons.
    pub fn unmapped(&self) -> Vec<(Label, &str, &str)> {
        self.entries
            .iter()
            .filter_map(|(v, e)| match &e.target {
                LabelTarget::Unmapped { reason } => Some((*v, e.name.as_str(), reason.as_str())),
                _ => None,
            })
            .collect()
    }

    /// A lookup table from every possible value to its ontology id; `None` where the value is
    /// undeclared or unmapped.
    fn lookup(&self) -> Vec<Option<Label>> {
        let mut table = vec![None; Label::MAX as usize + 1];
        table[0] = Some(0);
        for (value, entry) in &self.entries {
            table[*value as usize] = match entry.target {
                LabelTarget::Structure(id) => Some(id.0),
                LabelTarget::Ignored => Some(0),
                LabelTarget::Unmapped { .. } => None,
            };
        }
        table
    }

    /// The same volume with ontology ids as values. Fails, naming `path` and the first offending
    /// value with its voxel count, when the volume holds an undeclared or unmapped value.
    pub fn remap(&self, labels: &Volume<Label>, path: &Path) -> Result<Volume<Label>> {
        let table = self.lookup();
        let mut bad: Option<Label> = None;
        let out = labels.map(|v| match table[*v as usize] {
            Some(id) => id,
            None => {
                bad.get_or_insert(*v);
                0
            }
        });
        if let Some(value) = bad {
            let count = labels.data().iter().filter(|v| **v == value).count();
            let reason = self
                .target(value)
                .expect_err("only undeclared or unmapped values are bad");
            return Err(DatasetError::UnmappedLabel {
                path: path.to_path_buf(),
                value,
                detail: format!("{reason} ({count} voxels)"),
            });
        }
        Ok(out)
    }
}

/// How many voxels hold each value (values with no voxels are left out).
pub fn value_counts(labels: &Volume<Label>) -> BTreeMap<Label, u64> {
    let mut counts = vec![0u64; Label::MAX as usize + 1];
    for v in labels.data() {
        counts[*v as usize] += 1;
    }
    counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(v, c)| (v as Label, *c))
        .collect()
}

/// A dataset read from disk, in the common model.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: String,
    pub kind: DatasetKind,
    pub root: PathBuf,
    /// Cases in a stable order (sorted by id within each split, training cases first).
    pub cases: Vec<Case>,
    /// Channel names in channel order (nnU-Net `channel_names`; one entry elsewhere).
    pub channel_names: Vec<String>,
    /// The dataset's label values (for SPINEPS: the `seg-vert` mask's values).
    pub label_map: LabelMap,
    /// SPINEPS only: the values of the `seg-subreg` masks.
    pub subregion_map: Option<LabelMap>,
    /// Per-case label maps that replace `label_map` (SPIDER cases with their own lowest vertebra).
    pub case_label_maps: BTreeMap<String, LabelMap>,
    pub vertebra_extent: VertebraExtent,
    /// Layout problems found while scanning; `dataset check` reports them.
    pub issues: Vec<LayoutIssue>,
    /// Things worth knowing that do not make the dataset unusable (unmapped label names, files
    /// listed in a CSV but absent, ...).
    pub warnings: Vec<String>,
}

impl Dataset {
    /// The label map that applies to `case` (its own, or the dataset's).
    pub fn label_map_for(&self, case_id: &str) -> &LabelMap {
        self.case_label_maps.get(case_id).unwrap_or(&self.label_map)
    }

    pub fn case(&self, id: &str) -> Option<&Case> {
        self.cases.iter().find(|c| c.id == id)
    }

    /// The case's labels as ontology ids, or `None` when the case has no label file. SPINEPS
    /// cases combine their two masks (see [`spineps::combine_spineps_masks`]).
    pub fn load_labels(&self, case: &Case) -> Result<Option<Volume<Label>>> {
        let Some(label_path) = &case.label else { return Ok(None) };
        if self.kind == DatasetKind::Spineps {
            let subreg = case.subregion_label.as_ref().ok_or_else(|| DatasetError::InvalidDataset {
                path: label_path.clone(),
                detail: "SPINEPS case has a seg-vert mask but no seg-subreg mask to combine it with".into(),
            })?;
            let vert = spineseg_io::read_labels(label_path)?;
            let sub = spineseg_io::read_labels(subreg)?;
            return Ok(Some(combine_spineps_masks(&vert, label_path, &sub, subreg)?.labels));
        }
        let raw = spineseg_io::read_labels(label_path)?;
        self.label_map_for(&case.id).remap(&raw, label_path).map(Some)
    }

    pub fn training_cases(&self) -> impl Iterator<Item = &Case> {
        self.cases.iter().filter(|c| c.split == Split::Train)
    }
}

/// Recognises the layout of `path` (a dataset folder, or an nnU-Net `dataset.json`) and opens it
/// with default options.
///
/// Order of checks: `dataset.json` -> nnU-Net raw; `images/` + `masks/` -> SPIDER; files named
/// `*_seg-vert*_msk.*` -> SPINEPS; `CaseN` / `mask_caseN` files -> MRSpineSeg.
pub fn detect_and_open(path: &Path) -> Result<Dataset> {
    let root = if path.is_file() && path.file_name().is_some_and(|n| n == nnunet::DATASET_FILE) {
        path.parent().unwrap_or(Path::new(".")).to_path_buf()
    } else {
        path.to_path_buf()
    };
    if !root.is_dir() {
        return Err(DatasetError::UnknownLayout {
            path: root,
            detail: "not a folder (expected a dataset folder or an nnU-Net dataset.json)".into(),
        });
    }
    if root.join(nnunet::DATASET_FILE).is_file() {
        return open_nnunet(&root, &NnUnetOptions::default());
    }
    if root.join("images").is_dir() && root.join("masks").is_dir() {
        return open_spider(&root, &SpiderOptions::default());
    }
    let files = list_files(&root)?;
    if files.iter().any(|f| spineps::is_vert_mask(f)) {
        return open_spineps(&root);
    }
    if files.iter().any(|f| mrspineseg::parse_name(f).is_some()) {
        return open_mrspineseg(&root, &MrSpineSegOptions::default());
    }
    Err(DatasetError::UnknownLayout {
        path: root,
        detail: "found no dataset.json (nnU-Net raw), no images/ + masks/ folders (SPIDER), no \
                 *_seg-vert_*msk files (SPINEPS) and no CaseN / mask_caseN files (MRSpineSeg)"
            .into(),
    })
}

/// Every regular file below `root` whose name is a supported image format, sorted. Hidden files
/// and folders (starting with '.') are skipped.
pub(crate) fn list_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| DatasetError::Os {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| DatasetError::Os {
                path: dir.clone(),
                source,
            })?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if ImageFormat::from_path(&path).is_ok() {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Image files directly inside `dir` (not below), sorted; empty when `dir` does not exist.
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|source| DatasetError::Os {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| DatasetError::Os {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        if path.is_file() && ImageFormat::from_path(&path).is_ok() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// The folder's name, as a default dataset name.
pub(crate) fn folder_name(root: &Path) -> String {
    let canonical = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    canonical
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset".into())
}

/// The ontology id for a name, as a label target with a reason when there is none.
pub(crate) fn target_for_name(name: &str) -> LabelTarget {
    match Ontology::standard().find_by_name(name) {
        Some(id) => LabelTarget::Structure(id),
        None => LabelTarget::Unmapped {
            reason: format!("no ontology structure is named '{name}'"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spineseg_io::Geometry;

    fn map() -> LabelMap {
        let mut m = LabelMap::new();
        m.insert(1, "L4", LabelTarget::Structure(StructureId(23)));
        m.insert(2, "endplate", LabelTarget::Ignored);
        m.insert(
            3,
            "banana",
            LabelTarget::Unmapped {
                reason: "no ontology structure is named 'banana'".into(),
            },
        );
        m.insert_partial(4, "L4 partial", LabelTarget::Structure(StructureId(23)));
        m
    }

    #[test]
    fn remap_maps_ignores_and_keeps_background() {
        let v = Volume::new([2, 2, 1], vec![0, 1, 2, 4], Geometry::default()).unwrap();
        let out = map().remap(&v, Path::new("x.nii.gz")).unwrap();
        assert_eq!(out.data(), &[0, 23, 0, 23]);
        assert_eq!(out.geometry, v.geometry);
    }

    #[test]
    fn remap_names_file_value_and_reason() {
        let v = Volume::new([3, 1, 1], vec![7, 7, 1], Geometry::default()).unwrap();
        let err = map().remap(&v, Path::new("lab/c1.nii.gz")).unwrap_err().to_string();
        assert!(
            err.contains("lab/c1.nii.gz") && err.contains("value 7") && err.contains("not declared"),
            "{err}"
        );
        assert!(err.contains("2 voxels"), "{err}");
        let v = Volume::new([1, 1, 1], vec![3], Geometry::default()).unwrap();
        let err = map().remap(&v, Path::new("c2.nii.gz")).unwrap_err().to_string();
        assert!(err.contains("banana") && err.contains("value 3"), "{err}");
    }

    #[test]
    fn structures_and_unmapped_are_listed() {
        let m = map();
        assert_eq!(m.structures(), vec![StructureId(23)]);
        assert_eq!(m.unmapped().len(), 1);
        assert!(m.get(4).unwrap().partial);
        assert_eq!(m.target(0), Ok(None));
        assert_eq!(m.target(2), Ok(None));
    }

    #[test]
    fn value_counts_counts() {
        let v = Volume::new([4, 1, 1], vec![0, 5, 5, 300], Geometry::default()).unwrap();
        let c = value_counts(&v);
        assert_eq!(c.into_iter().collect::<Vec<_>>(), vec![(0, 1), (5, 2), (300, 1)]);
    }

    #[test]
    fn extent_parses() {
        assert_eq!(VertebraExtent::parse("body-only"), Some(VertebraExtent::BodyOnly));
        assert_eq!(
            VertebraExtent::parse("Whole_Vertebra"),
            Some(VertebraExtent::WholeVertebra)
        );
        assert_eq!(VertebraExtent::parse("x"), None);
    }
}
