//! Parity with medpy 0.5.2 and MONAI's definitions, on the values recorded by
//! `tests/fixtures/make_reference.py` (run it to regenerate; see its docstring for the exact
//! MONAI transcription). Agreement is asserted within 1e-6 relative.

use serde_json::Value;
use spineseg_io::Label;
use spineseg_metrics::surface::boundary;
use spineseg_metrics::{compare_masks, Connectivity, Mask, MetricOptions, SurfaceDistances};
use std::path::{Path, PathBuf};

const REL_TOL: f64 = 1e-6;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(name)).expect("fixture should exist");
    serde_json::from_str(&text).expect("fixture should be valid JSON")
}

/// Run-length decoding: runs alternate false, true, ... in `i`-fastest order.
fn decode_rle(runs: &Value) -> Vec<bool> {
    let mut out = Vec::new();
    for (n, run) in runs.as_array().expect("runs should be an array").iter().enumerate() {
        let len = run.as_u64().expect("run lengths should be integers") as usize;
        out.extend(std::iter::repeat_n(n % 2 == 1, len));
    }
    out
}

fn number(v: &Value) -> f64 {
    v.as_f64().expect("reference values should be numbers")
}

/// Tracks the largest relative error over all comparisons and collects failures.
#[derive(Default)]
struct Check {
    max_rel: f64,
    failures: Vec<String>,
    count: usize,
}

impl Check {
    fn close(&mut self, what: &str, got: f64, expected: f64) {
        self.count += 1;
        let err = (got - expected).abs();
        let rel = if expected == 0.0 { err } else { err / expected.abs() };
        self.max_rel = self.max_rel.max(rel);
        if err.is_nan() || err > REL_TOL * expected.abs() + 1e-12 {
            self.failures.push(format!("{what}: got {got}, reference {expected} (relative error {rel:e})"));
        }
    }

    fn finish(self, label: &str) {
        println!("{label}: {} comparisons, max relative error {:e}", self.count, self.max_rel);
        assert!(self.failures.is_empty(), "{} mismatches:\n{}", self.failures.len(), self.failures.join("\n"));
    }
}

#[allow(clippy::too_many_arguments)]
fn check_pair(
    check: &mut Check,
    name: &str,
    pred: &Mask,
    reference: &Mask,
    spacing: [f64; 3],
    values: &Value,
    connectivity: Connectivity,
    tolerance_mm: f64,
) {
    let get = |key: &str| values.get(key).map(number);
    let mm = SurfaceDistances::compute(pred, reference, spacing, connectivity);
    let px = SurfaceDistances::compute(pred, reference, [1.0; 3], connectivity);
    let overlap = spineseg_metrics::overlap::OverlapCounts::of(pred, reference);
    check.close(&format!("{name} medpy dc"), overlap.dice(), get("medpy_dc").unwrap());
    check.close(&format!("{name} medpy jc"), overlap.iou(), get("medpy_jc").unwrap());
    check.close(&format!("{name} medpy hd"), mm.hausdorff(), get("medpy_hd").unwrap());
    check.close(&format!("{name} medpy hd95"), mm.percentile_hausdorff_pooled(95.0), get("medpy_hd95").unwrap());
    check.close(&format!("{name} medpy assd"), mm.average_symmetric(), get("medpy_assd").unwrap());
    check.close(&format!("{name} medpy hd95 px"), px.percentile_hausdorff_pooled(95.0), get("medpy_hd95_px").unwrap());
    check.close(&format!("{name} medpy hd px"), px.hausdorff(), get("medpy_hd_px").unwrap());
    if connectivity == Connectivity::Face {
        // The full evaluation path (cropping, both spacings) against MONAI's definitions.
        let m = compare_masks(pred, reference, spacing, &MetricOptions { tolerance_mm, connectivity });
        check.close(&format!("{name} monai hd"), m.hd_mm, get("monai_hd").unwrap());
        check.close(&format!("{name} monai hd95"), m.hd95_mm, get("monai_hd95").unwrap());
        check.close(&format!("{name} monai assd"), m.assd_mm, get("monai_assd").unwrap());
        check.close(&format!("{name} monai nsd"), m.nsd, get("monai_nsd").unwrap());
        check.close(&format!("{name} monai hd95 px"), m.hd95_px, get("monai_hd95_px").unwrap());
        check.close(&format!("{name} medpy hd95 (evaluate path)"), m.hd95_pooled_mm, get("medpy_hd95").unwrap());
        check.close(&format!("{name} medpy hd95 px (evaluate path)"), m.hd95_pooled_px, get("medpy_hd95_px").unwrap());
        check.close(&format!("{name} dice (evaluate path)"), m.dice, get("medpy_dc").unwrap());
    }
}

#[test]
fn synthetic_pairs_match_medpy_and_monai() {
    let doc = load("parity_pairs.json");
    let tolerance_mm = number(&doc["tolerance_mm"]);
    let pairs = doc["pairs"].as_array().expect("pairs should be an array");
    assert!(pairs.len() >= 20, "the issue asks for at least 20 pairs");
    let mut check = Check::default();
    for pair in pairs {
        let name = pair["name"].as_str().unwrap();
        let shape: Vec<usize> =
            pair["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let spacing: Vec<f64> = pair["spacing_mm"].as_array().unwrap().iter().map(number).collect();
        let (pred, reference, spacing) = match shape.len() {
            2 => (
                Mask::new_planar([shape[0], shape[1]], decode_rle(&pair["pred_rle"])).unwrap(),
                Mask::new_planar([shape[0], shape[1]], decode_rle(&pair["ref_rle"])).unwrap(),
                [spacing[0], spacing[1], 1.0],
            ),
            3 => (
                Mask::new([shape[0], shape[1], shape[2]], decode_rle(&pair["pred_rle"])).unwrap(),
                Mask::new([shape[0], shape[1], shape[2]], decode_rle(&pair["ref_rle"])).unwrap(),
                [spacing[0], spacing[1], spacing[2]],
            ),
            n => panic!("{name}: unexpected dimension {n}"),
        };
        let connectivity = match pair["connectivity"].as_str().unwrap() {
            "face" => Connectivity::Face,
            _ => Connectivity::Full,
        };
        check_pair(&mut check, name, &pred, &reference, spacing, &pair["values"], connectivity, tolerance_mm);
    }
    check.finish("synthetic pairs");
}

/// `out[x] = mask[x - offset]`, zero fill (the script's `shift`).
fn shift(mask: &Mask, offset: [i64; 3]) -> Mask {
    let [nx, ny, nz] = mask.shape();
    let mut out = vec![false; mask.len()];
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let src = [i as i64 - offset[0], j as i64 - offset[1], k as i64 - offset[2]];
                if src.iter().zip([nx, ny, nz]).all(|(&s, n)| s >= 0 && s < n as i64) {
                    out[i + nx * (j + ny * k)] =
                        mask.data()[src[0] as usize + nx * (src[1] as usize + ny * src[2] as usize)];
                }
            }
        }
    }
    Mask::new(mask.shape(), out).unwrap()
}

/// scipy's `binary_erosion(mask, generate_binary_structure(3, 1), iterations=n)`: each step
/// removes the boundary (face neighbours, outside counts as background).
fn erode(mask: &Mask, iterations: usize) -> Mask {
    let mut m = mask.clone();
    for _ in 0..iterations {
        let b = boundary(&m, Connectivity::Face);
        let data = m.data().iter().zip(b.data()).map(|(&v, &e)| v && !e).collect();
        m = Mask::new(m.shape(), data).unwrap();
    }
    m
}

#[test]
fn real_mask_recipes_match_medpy_and_monai() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/lumbar-real");
    if !root.is_dir() {
        println!("SKIPPED: {} not found; the real-mask parity recipes need the lumbar-real data", root.display());
        return;
    }
    let doc = load("parity_real.json");
    let tolerance_mm = number(&doc["tolerance_mm"]);
    let mut check = Check::default();
    for pair in doc["pairs"].as_array().unwrap() {
        let case = pair["case"].as_str().unwrap();
        let label = pair["label"].as_u64().unwrap() as Label;
        let path = root.join("labelsTr").join(format!("{case}.nii.gz"));
        let labels = spineseg_io::read_labels(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let offset: Vec<i64> = pair["shift"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        let iterations = pair["erosion_iterations"].as_u64().unwrap() as usize;
        let spacing: Vec<f64> = pair["spacing_mm"].as_array().unwrap().iter().map(number).collect();
        let spacing = [spacing[0], spacing[1], spacing[2]];
        if pair["spacing_from_file"].as_bool().unwrap() {
            let file = labels.geometry.spacing.mm();
            assert!(
                file.iter().zip(spacing).all(|(a, b)| (a - b).abs() < 1e-6),
                "{case}: spacing {file:?} vs {spacing:?}"
            );
        }
        let reference = Mask::from_labels(&labels, label);
        let pred = erode(&shift(&reference, [offset[0], offset[1], offset[2]]), iterations);
        let name = format!("{case} label {label} shift {offset:?} erosion {iterations}");
        // The recipe must rebuild exactly the masks the script measured.
        assert_eq!(reference.count() as u64, pair["ref_voxels"].as_u64().unwrap(), "{name}: reference voxels");
        assert_eq!(pred.count() as u64, pair["pred_voxels"].as_u64().unwrap(), "{name}: prediction voxels");
        check_pair(&mut check, &name, &pred, &reference, spacing, &pair["values"], Connectivity::Face, tolerance_mm);
    }
    check.finish("real-mask recipes");
}
