//! The logic of `spineseg dataset check DIR`: open a dataset in whatever layout it is, read every
//! case, and list everything that would stop training or evaluation on it.
//!
//! Per case: every file readable; image channels and labels of equal shape and geometry (within
//! [`CheckOptions::tolerance_mm`]; a mismatch reports the largest corner deviation in mm and both
//! files); every label value declared by the dataset and mapped onto the ontology (reported with
//! voxel counts); missing channels and labels. Per dataset: files that belong to no case and
//! inconsistencies with the dataset's description.
//!
//! Cases are read in parallel on a small thread pool ([`CheckOptions::threads`]), each case's
//! volumes are dropped before the next one starts, so memory stays at a few cases' worth.

use crate::{
    combine_spineps_masks, detect_and_open, value_counts, Case, Dataset, DatasetKind, LabelMap, LayoutIssue, Split,
    VertebraExtent,
};
use crate::error::Result;
use spineseg_anatomy::ontology::{Ontology, StructureId};
use spineseg_io::{Geometry, Label, Volume};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Options of [`check_loaded`].
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Largest allowed distance between the same voxel's world positions in two files, in mm.
    pub tolerance_mm: f64,
    /// Cases read at the same time (each holds its volumes in memory). Default: up to 4.
    pub threads: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        CheckOptions {
            tolerance_mm: 1e-3,
            threads: cores.clamp(1, 4),
        }
    }
}

/// One thing wrong with a dataset or case.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// A file could not be read; `error` is the reader's message.
    Unreadable { path: PathBuf, error: String },
    ShapeMismatch {
        reference: PathBuf,
        reference_shape: [usize; 3],
        other: PathBuf,
        other_shape: [usize; 3],
    },
    /// The same voxel lies `max_deviation_mm` apart in the two files (largest over the corners).
    GeometryMismatch {
        reference: PathBuf,
        other: PathBuf,
        max_deviation_mm: f64,
    },
    /// A label value the dataset does not declare.
    UnknownLabelValue { path: PathBuf, value: Label, voxels: u64 },
    /// A declared label value with no ontology structure (e.g. an unknown nnU-Net name, L6).
    UnmappedLabelValue {
        path: PathBuf,
        value: Label,
        voxels: u64,
        reason: String,
    },
    /// A layout problem (missing channel or label, orphan file, inconsistent description).
    Layout(LayoutIssue),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unreadable { error, .. } => write!(f, "unreadable: {error}"),
            Problem::ShapeMismatch {
                reference,
                reference_shape,
                other,
                other_shape,
            } => write!(
                f,
                "shape mismatch: {} is {:?} but {} is {:?}",
                other.display(),
                other_shape,
                reference.display(),
                reference_shape
            ),
            Problem::GeometryMismatch {
                reference,
                other,
                max_deviation_mm,
            } => write!(
                f,
                "geometry mismatch: {} and {} place voxels up to {:.4} mm apart",
                other.display(),
                reference.display(),
                max_deviation_mm
            ),
            Problem::UnknownLabelValue { path, value, voxels } => {
                write!(f, "unknown label value {value} ({voxels} voxels) in {}", path.display())
            }
            Problem::UnmappedLabelValue {
                path,
                value,
                voxels,
                reason,
            } => {
                write!(
                    f,
                    "label value {value} ({voxels} voxels) in {} cannot be mapped: {reason}",
                    path.display()
                )
            }
            Problem::Layout(issue) => write!(f, "{issue}"),
        }
    }
}

/// The result of checking one case.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseReport {
    pub id: String,
    pub split: Split,
    pub images: usize,
    pub has_label: bool,
    pub problems: Vec<Problem>,
    /// Voxels per ontology structure in this case (empty when the labels could not be mapped).
    pub structure_voxels: BTreeMap<StructureId, u64>,
    /// SPINEPS: labelled voxels dropped because the two masks disagree.
    pub dropped_voxels: u64,
}

impl CaseReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Everything `dataset check` found.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub name: String,
    pub kind: DatasetKind,
    pub root: PathBuf,
    pub vertebra_extent: VertebraExtent,
    pub cases: Vec<CaseReport>,
    /// Problems that belong to no single case (orphan files, inconsistent description).
    pub dataset_problems: Vec<Problem>,
    /// Not problems, but worth reading (unmapped names that no file uses, CSV mismatches, ...).
    pub warnings: Vec<String>,
    /// Voxels per ontology structure over all cases.
    pub structure_voxels: BTreeMap<StructureId, u64>,
}

impl CheckReport {
    /// True when no case and the dataset itself have any problem.
    pub fn is_ok(&self) -> bool {
        self.dataset_problems.is_empty() && self.cases.iter().all(CaseReport::is_ok)
    }
    pub fn case_count(&self) -> usize {
        self.cases.len()
    }
    pub fn labelled_case_count(&self) -> usize {
        self.cases.iter().filter(|c| c.has_label).count()
    }
    pub fn cases_with_problems(&self) -> usize {
        self.cases.iter().filter(|c| !c.is_ok()).count()
    }
    /// All problems, case and dataset ones.
    pub fn problem_count(&self) -> usize {
        self.dataset_problems.len() + self.cases.iter().map(|c| c.problems.len()).sum::<usize>()
    }
    /// Every problem with its case id (None for dataset problems).
    pub fn problems(&self) -> impl Iterator<Item = (Option<&str>, &Problem)> {
        self.dataset_problems.iter().map(|p| (None, p)).chain(
            self.cases
                .iter()
                .flat_map(|c| c.problems.iter().map(move |p| (Some(c.id.as_str()), p))),
        )
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "dataset {} ({}) at {}", self.name, self.kind, self.root.display())?;
        writeln!(f, "vertebra masks: {}", self.vertebra_extent)?;
        for case in &self.cases {
            let split = if case.split == Split::Test { " [test]" } else { "" };
            if case.problems.is_empty() {
                writeln!(f, "  {}{split}: ok", case.id)?;
            } else {
                let text: Vec<String> = case.problems.iter().map(|p| p.to_string()).collect();
                writeln!(f, "  {}{split}: {}", case.id, text.join("; "))?;
            }
        }
        for p in &self.dataset_problems {
            writeln!(f, "  dataset: {p}")?;
        }
        for w in &self.warnings {
            writeln!(f, "  warning: {w}")?;
        }
        let dropped: u64 = self.cases.iter().map(|c| c.dropped_voxels).sum();
        if dropped > 0 {
            writeln!(
                f,
                "  note: {dropped} labelled voxels dropped where the SPINEPS masks disagree"
            )?;
        }
        writeln!(
            f,
            "summary: {} cases ({} labelled), {} with problems, {} problems in all",
            self.case_count(),
            self.labelled_case_count(),
            self.cases_with_problems(),
            self.problem_count()
        )?;
        if self.structure_voxels.is_empty() {
            writeln!(f, "structures: none found")?;
        } else {
            writeln!(f, "structures (id, name, voxels over all cases):")?;
            let ontology = Ontology::standard();
            for (id, voxels) in &self.structure_voxels {
                let name = ontology.get(*id).map(|s| s.name.as_str()).unwrap_or("?");
                writeln!(f, "  {:>4}  {:<20} {voxels}", id.0, name)?;
            }
        }
        write!(
            f,
            "{}",
            if self.is_ok() {
                "result: OK"
            } else {
                "result: PROBLEMS FOUND"
            }
        )
    }
}

/// Detects the layout of `root`, opens it with default options and checks every case. Fails only
/// when the folder cannot be opened as a dataset at all.
pub fn check_dataset(root: &Path) -> Result<CheckReport> {
    let dataset = detect_and_open(root)?;
    Ok(check_loaded(&dataset, &CheckOptions::default()))
}

/// Checks an already opened dataset (use this with adapter options such as SPIDER overrides).
pub fn check_loaded(dataset: &Dataset, options: &CheckOptions) -> CheckReport {
    let check = |case: &Case| check_case(dataset, case, options);
    let mut cases: Vec<CaseReport> = match rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads.max(1))
        .build()
    {
        Ok(pool) => pool.install(|| {
            use rayon::prelude::*;
            dataset.cases.par_iter().map(check).collect()
        }),
        Err(_) => dataset.cases.iter().map(check).collect(),
    };
    let mut dataset_problems = Vec::new();
    for issue in &dataset.issues {
        match issue.case().and_then(|id| cases.iter_mut().find(|c| c.id == id)) {
            Some(case) => case.problems.insert(0, Problem::Layout(issue.clone())),
            None => dataset_problems.push(Problem::Layout(issue.clone())),
        }
    }
    let mut structure_voxels = BTreeMap::new();
    for case in &cases {
        for (id, n) in &case.structure_voxels {
            *structure_voxels.entry(*id).or_insert(0) += n;
        }
    }
    CheckReport {
        name: dataset.name.clone(),
        kind: dataset.kind,
        root: dataset.root.clone(),
        vertebra_extent: dataset.vertebra_extent,
        cases,
        dataset_problems,
        warnings: dataset.warnings.clone(),
        structure_voxels,
    }
}

/// Largest distance (mm, per world axis) between the two geometries' positions of the corners of
/// a volume of `shape`.
pub fn max_corner_deviation_mm(a: &Geometry, b: &Geometry, shape: [usize; 3]) -> f64 {
    let hi = shape.map(|n| n.saturating_sub(1) as f64);
    let mut worst = 0.0f64;
    for mask in 0..8 {
        let c = [0, 1, 2].map(|axis| if mask >> axis & 1 == 1 { hi[axis] } else { 0.0 });
        let (p, q) = (a.voxel_to_world(c), b.voxel_to_world(c));
        for r in 0..3 {
            worst = worst.max((p[r] - q[r]).abs());
        }
    }
    worst
}

/// The grid of the first readable file, against which the others are compared.
struct Reference {
    path: PathBuf,
    shape: [usize; 3],
    geometry: Geometry,
}

impl Reference {
    fn compare(
        &self,
        path: &Path,
        shape: [usize; 3],
        geometry: &Geometry,
        tolerance_mm: f64,
        problems: &mut Vec<Problem>,
    ) {
        if shape != self.shape {
            problems.push(Problem::ShapeMismatch {
                reference: self.path.clone(),
                reference_shape: self.shape,
                other: path.to_path_buf(),
                other_shape: shape,
            });
        } else if !self.geometry.agrees_with(geometry, shape, tolerance_mm) {
            problems.push(Problem::GeometryMismatch {
                reference: self.path.clone(),
                other: path.to_path_buf(),
                max_deviation_mm: max_corner_deviation_mm(&self.geometry, geometry, shape),
            });
        }
    }
}

/// Reads a label file and checks its values against `map`; returns it when readable.
fn read_label(path: &Path, map: &LabelMap, problems: &mut Vec<Problem>) -> Option<(Volume<Label>, bool)> {
    let labels = match spineseg_io::read_labels(path) {
        Ok(v) => v,
        Err(e) => {
            problems.push(Problem::Unreadable {
                path: path.to_path_buf(),
                error: e.to_string(),
            });
            return None;
        }
    };
    let mut all_mapped = true;
    for (value, voxels) in value_counts(&labels) {
        if value == 0 {
            continue;
        }
        match map.get(value) {
            None => {
                all_mapped = false;
                problems.push(Problem::UnknownLabelValue {
                    path: path.to_path_buf(),
                    value,
                    voxels,
                });
            }
            Some(_) => {
                if let Err(reason) = map.target(value) {
                    all_mapped = false;
                    problems.push(Problem::UnmappedLabelValue {
                        path: path.to_path_buf(),
                        value,
                        voxels,
                        reason,
                    });
                }
            }
        }
    }
    Some((labels, all_mapped))
}

fn check_case(dataset: &Dataset, case: &Case, options: &CheckOptions) -> CaseReport {
    let mut problems = Vec::new();
    let mut reference: Option<Reference> = None;
    for image in &case.images {
        // Only the header matters for images, but the readers read whole files; the volume is
        // dropped at the end of this iteration.
        match spineseg_io::read_volume(image) {
            Ok(v) => match &reference {
                None => {
                    reference = Some(Reference {
                        path: image.clone(),
                        shape: v.shape,
                        geometry: v.geometry,
                    })
                }
                Some(r) => r.compare(image, v.shape, &v.geometry, options.tolerance_mm, &mut problems),
            },
            Err(e) => problems.push(Problem::Unreadable {
                path: image.clone(),
                error: e.to_string(),
            }),
        }
    }
    let mut structure_voxels = BTreeMap::new();
    let mut dropped_voxels = 0;
    let mut loaded = Vec::new();
    let subregion_map = dataset.subregion_map.as_ref();
    let label_files = [
        (case.label.as_ref(), Some(dataset.label_map_for(&case.id))),
        (case.subregion_label.as_ref(), subregion_map),
    ];
    for (path, map) in label_files {
        let (Some(path), Some(map)) = (path, map) else { continue };
        if let Some((labels, all_mapped)) = read_label(path, map, &mut problems) {
            match &reference {
                None => {
                    reference = Some(Reference {
                        path: path.clone(),
                        shape: labels.shape(),
                        geometry: labels.geometry,
                    })
                }
                Some(r) => r.compare(
                    path,
                    labels.shape(),
                    &labels.geometry,
                    options.tolerance_mm,
                    &mut problems,
                ),
            }
            loaded.push((path.clone(), labels, all_mapped));
        }
    }
    let grids_ok = !problems.iter().any(|p| matches!(p, Problem::ShapeMismatch { .. }));
    let ontology_labels = match loaded.as_slice() {
        [(path, labels, true)] if dataset.kind != DatasetKind::Spineps => {
            dataset.label_map_for(&case.id).remap(labels, path).ok()
        }
        [(vp, vert, true), (sp, sub, true)] if dataset.kind == DatasetKind::Spineps && grids_ok => {
            combine_spineps_masks(vert, vp, sub, sp).ok().map(|c| {
                dropped_voxels = c.dropped_voxels;
                c.labels
            })
        }
        _ => None,
    };
    if let Some(labels) = ontology_labels {
        for (value, n) in value_counts(&labels) {
            if value != 0 {
                structure_voxels.insert(StructureId(value), n);
            }
        }
    }
    CaseReport {
        id: case.id.clone(),
        split: case.split,
        images: case.images.len(),
        has_label: case.label.is_some(),
        problems,
        structure_voxels,
        dropped_voxels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corner_deviation_is_measured_in_mm() {
        let a = Geometry::default();
        let b = Geometry {
            origin_mm: [0.0, 0.5, 0.0],
            ..Geometry::default()
        };
        assert_eq!(max_corner_deviation_mm(&a, &a, [4, 4, 4]), 0.0);
        assert!((max_corner_deviation_mm(&a, &b, [4, 4, 4]) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn report_counts_and_display() {
        let report = CheckReport {
            name: "t".into(),
            kind: DatasetKind::NnUnetRaw,
            root: PathBuf::from("/d"),
            vertebra_extent: VertebraExtent::Unknown,
            cases: vec![
                CaseReport {
                    id: "a".into(),
                    split: Split::Train,
                    images: 1,
                    has_label: true,
                    problems: vec![],
                    structure_voxels: BTreeMap::from([(StructureId(23), 10)]),
                    dropped_voxels: 0,
                },
                CaseReport {
                    id: "b".into(),
                    split: Split::Train,
                    images: 1,
                    has_label: true,
                    problems: vec![Problem::UnknownLabelValue {
                        path: "/d/b.nii.gz".into(),
                        value: 9,
                        voxels: 3,
                    }],
                    structure_voxels: BTreeMap::new(),
                    dropped_voxels: 0,
                },
            ],
            dataset_problems: vec![],
            warnings: vec![],
            structure_voxels: BTreeMap::from([(StructureId(23), 10)]),
        };
        assert!(!report.is_ok());
        assert_eq!(
            (
                report.case_count(),
                report.cases_with_problems(),
                report.problem_count()
            ),
            (2, 1, 1)
        );
        let text = report.to_string();
        assert!(text.contains("a: ok"), "{text}");
        assert!(text.contains("unknown label value 9 (3 voxels)"), "{text}");
        assert!(text.contains("L4") && text.contains("10"), "{text}");
        assert!(text.contains("PROBLEMS FOUND"), "{text}");
    }
}
