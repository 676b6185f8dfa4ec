//! Evaluation of folders (or single files) of predictions against references: pairing by case
//! name, geometry checks, per-case evaluation ([`crate::evaluate`]) in parallel, and the summary
//! ([`crate::summary`]). Above both, so neither imports the other's caller.
//!
//! # Case pairing (folders)
//! Files are paired by name without the image extension (`.nii.gz`, `.nii`, `.mha`, `.mhd`); a
//! trailing `_0000` channel suffix is ignored when only one side has it. A file without a partner
//! is an error listing every unpaired name (as nnU-Net does), never silently skipped. Both files
//! of a pair must have the same shape and place their voxels within `geometry_tolerance_mm`
//! (checked at the eight corners); otherwise the error names both files. Distances use the
//! reference's spacing.

use crate::error::{MetricsError, Result};
use crate::evaluate::{compare_masks, evaluate_case, structure_name, CaseResult, EvaluationOptions, StructureResult};
use crate::mask::Mask;
use crate::summary::{summarise, Summary};
use rayon::prelude::*;
use serde::Serialize;
use spineseg_io::{ImageFormat, Label, Volume};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Everything `spineseg evaluate` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvaluationReport {
    pub options: EvaluationOptions,
    pub cases: Vec<CaseResult>,
    pub summary: Summary,
}

/// A prediction file and the reference file it is compared with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasePair {
    pub case: String,
    pub pred: PathBuf,
    pub reference: PathBuf,
}

/// Image files of a folder by case name (extension stripped); hidden files are ignored.
fn list_images(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| MetricsError::ListDir { path: dir.to_path_buf(), source })?;
    let mut out = BTreeMap::new();
    for entry in entries {
        let path = entry.map_err(|source| MetricsError::ListDir { path: dir.to_path_buf(), source })?.path();
        let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden || !path.is_file() {
            continue;
        }
        if let Some(name) = ImageFormat::strip_extension(&path) {
            if let Some(previous) = out.insert(name.clone(), path.clone()) {
                return Err(MetricsError::InvalidOption(format!(
                    "two files for case {name}: {} and {}",
                    previous.display(),
                    path.display()
                )));
            }
        }
    }
    Ok(out)
}

/// Pairs prediction and reference files by case name (see the module documentation). Both
/// arguments are folders, or both are single files.
pub fn pair_cases(pred: &Path, reference: &Path) -> Result<Vec<CasePair>> {
    let strip = |name: &str| name.strip_suffix("_0000").unwrap_or(name).to_string();
    if pred.is_file() && reference.is_file() {
        let name = ImageFormat::strip_extension(reference)
            .ok_or_else(|| MetricsError::Io(spineseg_io::IoError::UnknownFormat { path: reference.to_path_buf() }))?;
        return Ok(vec![CasePair { case: strip(&name), pred: pred.to_path_buf(), reference: reference.to_path_buf() }]);
    }
    if !(pred.is_dir() && reference.is_dir()) {
        return Err(MetricsError::InvalidOption(format!(
            "--pred and --ref must both be folders or both be files: {} and {}",
            pred.display(),
            reference.display()
        )));
    }
    let preds = list_images(pred)?;
    let mut refs = list_images(reference)?;
    if preds.is_empty() && refs.is_empty() {
        return Err(MetricsError::NoCases { pred: pred.to_path_buf(), reference: reference.to_path_buf() });
    }
    let mut pairs = Vec::new();
    let mut pred_only = Vec::new();
    for (name, path) in preds {
        let partner = [name.clone(), strip(&name), format!("{name}_0000")]
            .into_iter()
            .find_map(|candidate| refs.remove(&candidate));
        match partner {
            Some(ref_path) => pairs.push(CasePair { case: strip(&name), pred: path, reference: ref_path }),
            None => pred_only.push(name),
        }
    }
    if !pred_only.is_empty() || !refs.is_empty() {
        return Err(MetricsError::Unpaired { pred_only, ref_only: refs.into_keys().collect() });
    }
    pairs.sort_by(|a, b| a.case.cmp(&b.case));
    Ok(pairs)
}

/// Reads, checks and evaluates every case pair of `pred` and `reference` (folders or single
/// files), and summarises. `names` gives structure names (missing labels are `label_<n>`).
pub fn evaluate_folders(
    pred: &Path,
    reference: &Path,
    options: &EvaluationOptions,
    names: &BTreeMap<Label, String>,
) -> Result<EvaluationReport> {
    options.check()?;
    let pairs = pair_cases(pred, reference)?;
    let mut cases = pairs
        .par_iter()
        .map(|pair| {
            let (p, r) =
                rayon::join(|| spineseg_io::read_labels(&pair.pred), || spineseg_io::read_labels(&pair.reference));
            let (p, r) = (p?, r?);
            check_geometry(pair, &p, &r, options.geometry_tolerance_mm)?;
            let labels = match &options.labels {
                Some(labels) => labels.clone(),
                None => present_labels(&[&p, &r]),
            };
            let mut result = evaluate_case(&pair.case, &p, &r, &labels, options, names)?;
            result.pred_path = Some(pair.pred.clone());
            result.ref_path = Some(pair.reference.clone());
            Ok(result)
        })
        .collect::<Result<Vec<CaseResult>>>()?;
    if options.labels.is_none() {
        fill_missing_labels(&mut cases, options, names);
    }
    let summary = summarise(&cases, options);
    Ok(EvaluationReport { options: options.clone(), cases, summary })
}

/// Every non-zero label in any of the volumes, ascending.
fn present_labels(volumes: &[&Volume<Label>]) -> Vec<Label> {
    let mut seen = vec![false; Label::MAX as usize + 1];
    for v in volumes {
        for &l in v.data() {
            seen[l as usize] = true;
        }
    }
    (1..seen.len()).filter(|&l| seen[l]).map(|l| l as Label).collect()
}

/// Gives every case a row for every label seen in any case: a structure absent from both the
/// prediction and the reference of a case gets the both-empty result (NaN), as when the labels
/// are given up front.
fn fill_missing_labels(cases: &mut [CaseResult], options: &EvaluationOptions, names: &BTreeMap<Label, String>) {
    let all: BTreeSet<Label> = cases.iter().flat_map(|c| c.structures.iter().map(|s| s.label)).collect();
    let empty = Mask::new([1, 1, 1], vec![false]).expect("1 voxel");
    let both_empty = compare_masks(&empty, &empty, [1.0; 3], &options.metric_options());
    for case in cases {
        for &label in &all {
            if !case.structures.iter().any(|s| s.label == label) {
                case.structures.push(StructureResult {
                    label,
                    structure: structure_name(names, label),
                    metrics: both_empty,
                    matched_label: None,
                    detected: None,
                    slices: Vec::new(),
                });
            }
        }
        case.structures.sort_by_key(|s| s.label);
    }
}

fn check_geometry(pair: &CasePair, pred: &Volume<Label>, reference: &Volume<Label>, tol_mm: f64) -> Result<()> {
    if pred.shape() != reference.shape() {
        return Err(MetricsError::ShapeMismatch {
            pred: pair.pred.clone(),
            reference: pair.reference.clone(),
            pred_shape: pred.shape(),
            ref_shape: reference.shape(),
        });
    }
    if !pred.geometry.agrees_with(&reference.geometry, reference.shape(), tol_mm) {
        let describe = |v: &Volume<Label>| {
            format!(
                "spacing {:?} mm, origin {:?} mm, orientation {}",
                v.geometry.spacing.mm(),
                v.geometry.origin_mm,
                v.geometry.orientation_code()
            )
        };
        return Err(MetricsError::GeometryMismatch {
            pred: pair.pred.clone(),
            reference: pair.reference.clone(),
            detail: format!(
                "voxel positions differ by more than {tol_mm} mm (prediction: {}; reference: {})",
                describe(pred),
                describe(reference)
            ),
        });
    }
    Ok(())
}

