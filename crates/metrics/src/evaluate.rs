//! Evaluation of mask pairs, labelled cases and folders of cases.
//!
//! # Modes
//! - **3D** (default): each structure's prediction and reference masks are compared as volumes.
//! - **2D slice-wise** (`slice_axis = Some(a)`): the masks are cut into slices across voxel axis
//!   `a` (for the sagittal lumbar-real data, axis 2 is the left-right axis) and each slice is
//!   compared as a 2D image with the 2D neighbourhood and the two in-plane spacings. The case value
//!   of each metric is the mean over the slices where the prediction or the reference is
//!   non-empty; a slice where exactly one is empty has infinite distances, so the case mean is then
//!   infinite too (never dropped). Every slice's values are kept in [`StructureResult::slices`]
//!   (written to `metrics_per_slice.csv`) for other aggregations.
//!
//! # SPIDER-style matching
//! With `spider_matching`, each reference structure is compared with the predicted structure
//! (any label) it overlaps most, not with the same label: all (reference, prediction) label pairs
//! with overlap are sorted by overlap (ties: smaller labels first) and matched greedily one to
//! one. A reference structure whose match has Dice < `spider_min_dice` (0.1), or that has no
//! match, is *missed*; the detection rate is detected / reference structures. Predicted labels
//! left unmatched are listed as false positives.


use crate::distance::{Emptiness, SurfaceDistances};
use crate::error::{MetricsError, Result};
use crate::mask::{in_plane_axes, Connectivity, Mask};
use crate::overlap::OverlapCounts;
use rayon::prelude::*;
use serde::Serialize;
use spineseg_io::{Label, Volume};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

/// Options of a single mask-pair comparison.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MetricOptions {
    /// Tolerance of the normalised surface Dice, in mm.
    pub tolerance_mm: f64,
    /// Neighbourhood that defines boundary voxels (the libraries' default is `Face`).
    pub connectivity: Connectivity,
}

impl Default for MetricOptions {
    fn default() -> Self {
        MetricOptions { tolerance_mm: 2.0, connectivity: Connectivity::Face }
    }
}

/// Every metric of one prediction/reference pair. Distances in mm use the voxel spacing, `_px`
/// distances use unit spacing. Empty rules: see [`Emptiness`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PairMetrics {
    pub dice: f64,
    pub iou: f64,
    /// Hausdorff distance (maximum), mm.
    pub hd_mm: f64,
    /// MONAI's HD95 (max of the two directed 95th percentiles), mm.
    pub hd95_mm: f64,
    /// medpy's HD95 (95th percentile of both directed sets pooled), mm.
    pub hd95_pooled_mm: f64,
    /// Average symmetric surface distance, mm.
    pub assd_mm: f64,
    /// Normalised surface Dice at the tolerance in mm.
    pub nsd: f64,
    pub hd_px: f64,
    /// MONAI's HD95 in voxels (the `hd95_px` column).
    pub hd95_px: f64,
    /// medpy's HD95 in voxels (`medpy.metric.binary.hd95` without `voxelspacing`).
    pub hd95_pooled_px: f64,
    pub assd_px: f64,
    pub ref_voxels: usize,
    pub pred_voxels: usize,
    pub emptiness: Emptiness,
}

impl PairMetrics {
    /// The metric values by name, in a fixed order (the names used in `summary.json`).
    pub fn values(&self) -> [(&'static str, f64); 11] {
        [
            ("dice", self.dice),
            ("iou", self.iou),
            ("hd_mm", self.hd_mm),
            ("hd95_mm", self.hd95_mm),
            ("hd95_pooled_mm", self.hd95_pooled_mm),
            ("assd_mm", self.assd_mm),
            ("nsd", self.nsd),
            ("hd_px", self.hd_px),
            ("hd95_px", self.hd95_px),
            ("hd95_pooled_px", self.hd95_pooled_px),
            ("assd_px", self.assd_px),
        ]
    }
}

/// All metrics of a prediction/reference pair of the same shape and kind (2D or 3D).
/// `spacing_mm` is the voxel size along `i, j, k` (the third value is unused for 2D masks).
pub fn compare_masks(pred: &Mask, reference: &Mask, spacing_mm: [f64; 3], options: &MetricOptions) -> PairMetrics {
    let counts = OverlapCounts::of(pred, reference);
    let unit = [1.0; 3];
    let spacing_mm = if pred.is_planar() { [spacing_mm[0], spacing_mm[1], 1.0] } else { spacing_mm };
    let (mm, px) = if spacing_mm == unit {
        let d = SurfaceDistances::compute(pred, reference, unit, options.connectivity);
        (d.clone(), d)
    } else {
        let mut both = SurfaceDistances::compute_many(pred, reference, &[spacing_mm, unit], options.connectivity);
        let px = both.pop().expect("two spacings give two results");
        (both.pop().expect("two spacings give two results"), px)
    };
    PairMetrics {
        dice: counts.dice(),
        iou: counts.iou(),
        hd_mm: mm.hausdorff(),
        hd95_mm: mm.percentile_hausdorff(95.0),
        hd95_pooled_mm: mm.percentile_hausdorff_pooled(95.0),
        assd_mm: mm.average_symmetric(),
        nsd: mm.surface_dice(options.tolerance_mm),
        hd_px: px.hausdorff(),
        hd95_px: px.percentile_hausdorff(95.0),
        hd95_pooled_px: px.percentile_hausdorff_pooled(95.0),
        assd_px: px.average_symmetric(),
        ref_voxels: counts.reference,
        pred_voxels: counts.pred,
        emptiness: Emptiness::of(counts.pred, counts.reference),
    }
}

/// Metrics of one slice in slice-wise mode.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SliceMetrics {
    /// Index along the slice axis, in the full volume.
    pub slice: usize,
    pub metrics: PairMetrics,
}

/// Slice-wise comparison across `axis`: (case-level means, per-slice values). `offset` is the
/// index of slice 0 of these (possibly cropped) masks in the full volume.
pub fn compare_slicewise(
    pred: &Mask,
    reference: &Mask,
    spacing_mm: [f64; 3],
    axis: usize,
    offset: usize,
    options: &MetricOptions,
) -> (PairMetrics, Vec<SliceMetrics>) {
    let (a, b) = in_plane_axes(axis);
    let plane_spacing = [spacing_mm[a], spacing_mm[b], 1.0];
    let slices: Vec<SliceMetrics> = (0..pred.shape()[axis])
        .into_par_iter()
        .filter_map(|index| {
            let (p, r) = (pred.slice(axis, index), reference.slice(axis, index));
            (p.any() || r.any())
                .then(|| SliceMetrics { slice: offset + index, metrics: compare_masks(&p, &r, plane_spacing, options) })
        })
        .collect();
    let pred_voxels = pred.count();
    let ref_voxels = reference.count();
    let mean = |get: fn(&PairMetrics) -> f64| -> f64 {
        // Mean over the evaluated slices; NaN only if there are none (both masks empty).
        let values: Vec<f64> = slices.iter().map(|s| get(&s.metrics)).filter(|v| !v.is_nan()).collect();
        if values.is_empty() {
            f64::NAN
        } else {
            values.iter().sum::<f64>() / values.len() as f64
        }
    };
    let metrics = PairMetrics {
        dice: mean(|m| m.dice),
        iou: mean(|m| m.iou),
        hd_mm: mean(|m| m.hd_mm),
        hd95_mm: mean(|m| m.hd95_mm),
        hd95_pooled_mm: mean(|m| m.hd95_pooled_mm),
        assd_mm: mean(|m| m.assd_mm),
        nsd: mean(|m| m.nsd),
        hd_px: mean(|m| m.hd_px),
        hd95_px: mean(|m| m.hd95_px),
        hd95_pooled_px: mean(|m| m.hd95_pooled_px),
        assd_px: mean(|m| m.assd_px),
        ref_voxels,
        pred_voxels,
        emptiness: Emptiness::of(pred_voxels, ref_voxels),
    };
    (metrics, slices)
}

/// What to evaluate and how; the CLI maps its flags onto this.
///
/// Intended `spineseg evaluate` flags: `--pred DIR_OR_FILE --ref DIR_OR_FILE --out DIR`
/// `[--labels 1,2,3]` (`labels`), `[--tolerance-mm 2.0]` (`tolerance_mm`),
/// `[--connectivity face|full]`, `[--slice-axis 0|1|2]` (2D slice-wise; default 3D),
/// `[--spider-matching]`, `[--geometry-tolerance-mm 0.001]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvaluationOptions {
    /// Labels to evaluate; `None`: every non-zero label present in any prediction or reference.
    pub labels: Option<Vec<Label>>,
    /// Surface Dice tolerance in mm.
    pub tolerance_mm: f64,
    pub connectivity: Connectivity,
    /// `Some(axis)`: 2D slice-wise evaluation across voxel axis 0, 1 or 2; `None`: 3D.
    pub slice_axis: Option<usize>,
    /// Match structures by largest overlap (SPIDER challenge) instead of by label.
    pub spider_matching: bool,
    /// A matched structure with Dice below this is missed (SPIDER: 0.1).
    pub spider_min_dice: f64,
    /// Largest allowed distance (mm) between the two files' voxel positions.
    pub geometry_tolerance_mm: f64,
}

impl Default for EvaluationOptions {
    fn default() -> Self {
        EvaluationOptions {
            labels: None,
            tolerance_mm: 2.0,
            connectivity: Connectivity::Face,
            slice_axis: None,
            spider_matching: false,
            spider_min_dice: 0.1,
            geometry_tolerance_mm: 1e-3,
        }
    }
}

impl EvaluationOptions {
    pub(crate) fn check(&self) -> Result<()> {
        if !(self.tolerance_mm.is_finite() && self.tolerance_mm >= 0.0) {
            return Err(MetricsError::InvalidOption(format!("tolerance must be >= 0 mm, got {}", self.tolerance_mm)));
        }
        if let Some(axis) = self.slice_axis {
            if axis > 2 {
                return Err(MetricsError::InvalidOption(format!("slice axis must be 0, 1 or 2, got {axis}")));
            }
        }
        if self.labels.as_ref().is_some_and(|l| l.contains(&0)) {
            return Err(MetricsError::InvalidOption("label 0 is background and cannot be evaluated".into()));
        }
        if self.geometry_tolerance_mm.is_nan() || self.geometry_tolerance_mm < 0.0 {
            return Err(MetricsError::InvalidOption("geometry tolerance must be >= 0 mm".into()));
        }
        Ok(())
    }

    pub(crate) fn metric_options(&self) -> MetricOptions {
        MetricOptions { tolerance_mm: self.tolerance_mm, connectivity: self.connectivity }
    }
}

/// The result for one structure of one case.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StructureResult {
    pub label: Label,
    pub structure: String,
    pub metrics: PairMetrics,
    /// SPIDER matching: the predicted label compared with this reference structure.
    pub matched_label: Option<Label>,
    /// SPIDER matching: whether the structure was detected (Dice >= the threshold); `None` when
    /// matching is off or the reference does not contain the structure.
    pub detected: Option<bool>,
    /// Slice-wise mode: every evaluated slice.
    pub slices: Vec<SliceMetrics>,
}

/// All structures of one case.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseResult {
    pub case: String,
    pub pred_path: Option<PathBuf>,
    pub ref_path: Option<PathBuf>,
    pub structures: Vec<StructureResult>,
    /// SPIDER matching: predicted labels matched to no reference structure (false positives).
    pub unmatched_pred_labels: Vec<Label>,
}

/// The display name of `label`: from `names`, or `label_<n>`.
pub fn structure_name(names: &BTreeMap<Label, String>, label: Label) -> String {
    names.get(&label).cloned().unwrap_or_else(|| format!("label_{label}"))
}

type BoundingBox = ([usize; 3], [usize; 3]);

/// Bounding box of every non-zero label, in one pass.
fn label_boxes(volume: &Volume<Label>) -> BTreeMap<Label, BoundingBox> {
    let [nx, ny, _] = volume.shape();
    let mut boxes: BTreeMap<Label, BoundingBox> = BTreeMap::new();
    let mut idx = 0;
    for k in 0..volume.shape()[2] {
        for j in 0..ny {
            for i in 0..nx {
                let label = volume.data()[idx];
                idx += 1;
                if label == 0 {
                    continue;
                }
                let b = boxes.entry(label).or_insert(([i, j, k], [i + 1, j + 1, k + 1]));
                for (axis, v) in [i, j, k].into_iter().enumerate() {
                    b.0[axis] = b.0[axis].min(v);
                    b.1[axis] = b.1[axis].max(v + 1);
                }
            }
        }
    }
    boxes
}

fn union_box(a: Option<&BoundingBox>, b: Option<&BoundingBox>) -> Option<BoundingBox> {
    match (a, b) {
        (None, None) => None,
        (Some(x), None) | (None, Some(x)) => Some(*x),
        (Some(x), Some(y)) => Some(([0, 1, 2].map(|a| x.0[a].min(y.0[a])), [0, 1, 2].map(|a| x.1[a].max(y.1[a])))),
    }
}

/// The voxels of `volume` equal to `label` (or none, for `None`) inside `bbox`.
fn cropped_mask(volume: &Volume<Label>, label: Option<Label>, (start, end): BoundingBox) -> Mask {
    let [nx, ny, _] = volume.shape();
    let shape = [end[0] - start[0], end[1] - start[1], end[2] - start[2]];
    let mut data = Vec::with_capacity(shape.iter().product());
    for k in start[2]..end[2] {
        for j in start[1]..end[1] {
            let row = nx * (j + ny * k);
            data.extend(volume.data()[row + start[0]..row + end[0]].iter().map(|&v| Some(v) == label));
        }
    }
    Mask::new(shape, data).expect("shape is the product of the box sides")
}

/// Greedy one-to-one matching of reference to predicted labels by overlap (SPIDER).
fn match_by_overlap(pred: &Volume<Label>, reference: &Volume<Label>) -> HashMap<Label, Label> {
    let mut overlap: HashMap<(Label, Label), usize> = HashMap::new();
    for (&r, &p) in reference.data().iter().zip(pred.data()) {
        if r != 0 && p != 0 {
            *overlap.entry((r, p)).or_default() += 1;
        }
    }
    let mut candidates: Vec<((Label, Label), usize)> = overlap.into_iter().collect();
    candidates.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut matched = HashMap::new();
    let mut used = BTreeSet::new();
    for ((r, p), _) in candidates {
        if !matched.contains_key(&r) && !used.contains(&p) {
            matched.insert(r, p);
            used.insert(p);
        }
    }
    matched
}

/// Evaluates one labelled case: one [`StructureResult`] per entry of `labels`, in that order.
/// Both volumes must have the same shape; distances use `reference`'s spacing.
pub fn evaluate_case(
    case: &str,
    pred: &Volume<Label>,
    reference: &Volume<Label>,
    labels: &[Label],
    options: &EvaluationOptions,
    names: &BTreeMap<Label, String>,
) -> Result<CaseResult> {
    options.check()?;
    if pred.shape() != reference.shape() {
        return Err(MetricsError::InvalidMask(format!(
            "case {case}: prediction shape {:?} differs from reference shape {:?}",
            pred.shape(),
            reference.shape()
        )));
    }
    let spacing_mm = reference.geometry.spacing.mm();
    let metric_options = options.metric_options();
    let (pred_boxes, ref_boxes) = rayon::join(|| label_boxes(pred), || label_boxes(reference));
    let matching = options.spider_matching.then(|| match_by_overlap(pred, reference));
    let structures = labels
        .par_iter()
        .map(|&label| {
            let pred_label = match &matching {
                Some(m) => m.get(&label).copied(),
                None => Some(label),
            };
            let bbox = union_box(pred_label.and_then(|p| pred_boxes.get(&p)), ref_boxes.get(&label));
            let (metrics, slices) = match bbox {
                None => {
                    // Neither side has the structure: the both-empty rules, without any work.
                    let empty = Mask::new([1, 1, 1], vec![false]).expect("1 voxel");
                    (compare_masks(&empty, &empty, spacing_mm, &metric_options), Vec::new())
                }
                Some(bbox) => {
                    let p = cropped_mask(pred, pred_label, bbox);
                    let r = cropped_mask(reference, Some(label), bbox);
                    match options.slice_axis {
                        None => (compare_masks(&p, &r, spacing_mm, &metric_options), Vec::new()),
                        Some(axis) => compare_slicewise(&p, &r, spacing_mm, axis, bbox.0[axis], &metric_options),
                    }
                }
            };
            let detected =
                (options.spider_matching && metrics.ref_voxels > 0).then_some(metrics.dice >= options.spider_min_dice);
            StructureResult {
                label,
                structure: structure_name(names, label),
                metrics,
                matched_label: if options.spider_matching { pred_label } else { None },
                detected,
                slices,
            }
        })
        .collect();
    let unmatched_pred_labels = match &matching {
        Some(m) => {
            let used: BTreeSet<Label> = m.values().copied().collect();
            pred_boxes.keys().filter(|l| !used.contains(l)).copied().collect()
        }
        None => Vec::new(),
    };
    Ok(CaseResult { case: case.to_string(), pred_path: None, ref_path: None, structures, unmatched_pred_labels })
}

#[cfg(test)]
mod tests {
    use super::*;
    use spineseg_io::{Geometry, Spacing};

    fn volume(shape: [usize; 3], data: Vec<Label>, spacing: [f64; 3]) -> Volume<Label> {
        let g = Geometry { spacing: Spacing::new(spacing).unwrap(), ..Geometry::default() };
        Volume::new(shape, data, g).unwrap()
    }

    fn same(a: f64, b: f64) -> bool {
        (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() < 1e-12
    }

    #[test]
    fn empty_mask_rules_per_structure() {
        // 4x4x2 volume; label 1 in both, 2 only in the reference, 3 only in the prediction,
        // 4 in neither (asked for explicitly).
        let mut r = vec![0 as Label; 32];
        let mut p = vec![0 as Label; 32];
        r[0] = 1;
        p[0] = 1;
        r[5] = 2;
        p[10] = 3;
        let (pv, rv) = (volume([4, 4, 2], p, [1.0; 3]), volume([4, 4, 2], r, [1.0; 3]));
        let res = evaluate_case("c", &pv, &rv, &[1, 2, 3, 4], &EvaluationOptions::default(), &BTreeMap::new()).unwrap();
        // (label, emptiness, dice, iou, distance, nsd)
        let nan = f64::NAN;
        let inf = f64::INFINITY;
        let table = [
            (1, Emptiness::Neither, 1.0, 1.0, 0.0, 1.0),
            (2, Emptiness::PredEmpty, 0.0, 0.0, inf, 0.0),
            (3, Emptiness::RefEmpty, 0.0, 0.0, inf, 0.0),
            (4, Emptiness::BothEmpty, nan, nan, nan, nan),
        ];
        for ((label, emptiness, dice, iou, dist, nsd), s) in table.into_iter().zip(&res.structures) {
            let m = &s.metrics;
            assert_eq!(s.label, label);
            assert_eq!(m.emptiness, emptiness, "label {label}");
            assert!(same(m.dice, dice) && same(m.iou, iou) && same(m.nsd, nsd), "label {label}: {m:?}");
            for v in [m.hd_mm, m.hd95_mm, m.hd95_pooled_mm, m.assd_mm, m.hd_px, m.hd95_px, m.hd95_pooled_px, m.assd_px]
            {
                assert!(same(v, dist), "label {label}: {m:?}");
            }
        }
        assert_eq!(res.structures[3].structure, "label_4");
    }

    #[test]
    fn slicewise_means_over_non_empty_slices() {
        // 3 slices across k (axis 2): slice 0 identical, slice 1 both empty, slice 2 shifted by 1.
        let shape = [4, 3, 3];
        let mut r = vec![0 as Label; 36];
        let mut p = vec![0 as Label; 36];
        let at = |i: usize, j: usize, k: usize| i + 4 * (j + 3 * k);
        r[at(1, 1, 0)] = 1;
        p[at(1, 1, 0)] = 1;
        r[at(1, 1, 2)] = 1;
        p[at(2, 1, 2)] = 1;
        let (pv, rv) = (volume(shape, p, [0.5, 0.5, 4.0]), volume(shape, r, [0.5, 0.5, 4.0]));
        let options = EvaluationOptions { slice_axis: Some(2), ..Default::default() };
        let res = evaluate_case("c", &pv, &rv, &[1], &options, &BTreeMap::new()).unwrap();
        let s = &res.structures[0];
        assert_eq!(s.slices.iter().map(|x| x.slice).collect::<Vec<_>>(), vec![0, 2]);
        assert!(same(s.metrics.dice, 0.5)); // mean of 1 and 0
        assert!(same(s.metrics.hd_mm, 0.25)); // mean of 0 and 0.5 mm
        assert!(same(s.metrics.hd95_px, 0.5)); // mean of 0 and 1 pixel
                                               // In 3D the same pair: one-slice distance 0.5 mm in-plane.
        let res3 = evaluate_case("c", &pv, &rv, &[1], &EvaluationOptions::default(), &BTreeMap::new()).unwrap();
        assert!(same(res3.structures[0].metrics.hd_mm, 0.5));
    }

    #[test]
    fn spider_matching_pairs_by_overlap_and_counts_misses() {
        // Reference labels 1 (voxels 0..4) and 2 (voxels 8..12); the prediction calls the first
        // structure 7 and finds only one voxel of the second as label 2 plus a stray 9.
        let mut r = vec![0 as Label; 16];
        let mut p = vec![0 as Label; 16];
        r[0..4].fill(1);
        r[8..12].fill(2);
        p[0..4].fill(7);
        p[8] = 2;
        p[15] = 9;
        p[14] = 2;
        p[13] = 2;
        p[12] = 2;
        p[3] = 2; // 2 overlaps reference 1 a little
        let (pv, rv) = (volume([16, 1, 1], p, [1.0; 3]), volume([16, 1, 1], r, [1.0; 3]));
        let options = EvaluationOptions { spider_matching: true, ..Default::default() };
        let res = evaluate_case("c", &pv, &rv, &[1, 2], &options, &BTreeMap::new()).unwrap();
        assert_eq!(res.structures[0].matched_label, Some(7));
        assert_eq!(res.structures[0].detected, Some(true));
        assert_eq!(res.structures[1].matched_label, Some(2));
        // Label 2: prediction {3, 8, 12, 13, 14}, reference {8..12}: Dice 2*1/9 >= 0.1.
        assert!(same(res.structures[1].metrics.dice, 2.0 / 9.0));
        assert_eq!(res.unmatched_pred_labels, vec![9]);
        // With a stricter threshold it is missed.
        let strict = EvaluationOptions { spider_min_dice: 0.5, ..options };
        let res = evaluate_case("c", &pv, &rv, &[1, 2], &strict, &BTreeMap::new()).unwrap();
        assert_eq!(res.structures[1].detected, Some(false));
    }

    #[test]
    fn options_are_checked() {
        let v = volume([1, 1, 1], vec![0], [1.0; 3]);
        for bad in [
            EvaluationOptions { slice_axis: Some(3), ..Default::default() },
            EvaluationOptions { tolerance_mm: -1.0, ..Default::default() },
            EvaluationOptions { labels: Some(vec![0]), ..Default::default() },
        ] {
            assert!(evaluate_case("c", &v, &v, &[], &bad, &BTreeMap::new()).is_err());
        }
    }
}
