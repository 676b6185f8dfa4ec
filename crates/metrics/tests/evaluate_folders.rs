//! End-to-end evaluation of folders written with spineseg-io: pairing, geometry checks, the
//! exact CSV header, `summary.json` and the empty-mask rules as they reach the files.

use spineseg_io::{AnyVolume, Geometry, Label, Spacing, Volume};
use spineseg_metrics::{evaluate_folders, format_table, write_report, EvaluationOptions, MetricsError, CSV_HEADER};
use std::collections::BTreeMap;
use std::path::Path;

fn geometry(spacing: [f64; 3], origin: [f64; 3]) -> Geometry {
    Geometry { spacing: Spacing::new(spacing).unwrap(), origin_mm: origin, ..Geometry::default() }
}

/// An 8x8x4 label volume with a 2x2x2 cube of `label` at `corner` (and nothing else).
fn cube(label: Label, corner: [usize; 3], g: Geometry) -> Volume<Label> {
    let mut v = Volume::filled([8, 8, 4], 0 as Label, g);
    for k in corner[2]..corner[2] + 2 {
        for j in corner[1]..corner[1] + 2 {
            for i in corner[0]..corner[0] + 2 {
                v.set([i, j, k], label);
            }
        }
    }
    v
}

fn write(path: &Path, v: Volume<Label>) {
    spineseg_io::write_volume(path, &AnyVolume::from(v)).unwrap();
}

#[test]
fn folders_pair_by_name_and_write_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let (pred, reference, out) = (dir.path().join("pred"), dir.path().join("ref"), dir.path().join("out"));
    std::fs::create_dir_all(&pred).unwrap();
    std::fs::create_dir_all(&reference).unwrap();
    let g = geometry([0.5, 0.5, 2.0], [1.0, 2.0, 3.0]);
    // case_a: label 1 shifted by one voxel along i; label 2 only in the reference.
    let mut ref_a = cube(1, [1, 1, 1], g);
    ref_a.set([6, 6, 3], 2);
    write(&reference.join("case_a.nii.gz"), ref_a);
    write(&pred.join("case_a.nii.gz"), cube(1, [2, 1, 1], g));
    // case_b: the prediction carries nnU-Net's channel suffix and is MetaImage; perfect label 1.
    write(&reference.join("case_b.nii.gz"), cube(1, [4, 4, 0], g));
    write(&pred.join("case_b_0000.mha"), cube(1, [4, 4, 0], g));

    let names = BTreeMap::from([(1, "L1".to_string())]);
    let report = evaluate_folders(&pred, &reference, &EvaluationOptions::default(), &names).unwrap();
    write_report(&out, &report).unwrap();
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], CSV_HEADER);
    // case_a label 1: Dice 2*4/16, surfaces 0.5 mm apart along i.
    assert_eq!(lines[1], "case_a,1,L1,0.5,0.3333333333333333,0.5,0.5,0.5,1,0.25,1,8,8");
    assert_eq!(lines[2], "case_a,2,label_2,0,0,inf,inf,inf,inf,inf,0,1,0");
    assert_eq!(lines[3], "case_b,1,L1,1,1,0,0,0,0,0,1,8,8");
    // Label 2 is absent from case_b on both sides: NaN, skipped in means, counted.
    assert_eq!(lines[4], "case_b,2,label_2,nan,nan,nan,nan,nan,nan,nan,nan,0,0");
    assert_eq!(lines.len(), 5);

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["n_cases"], 2);
    assert_eq!(summary["empty"]["both_empty"], 1);
    assert_eq!(summary["empty"]["pred_empty"], 1);
    let l1 = &summary["per_structure"][0];
    assert_eq!(l1["structure"], "L1");
    assert_eq!(l1["metrics"]["dice"]["mean"], 0.75);
    let l2_dice = &summary["per_structure"][1]["metrics"]["dice"];
    assert_eq!((l2_dice["n"].as_u64(), l2_dice["n_nan"].as_u64()), (Some(1), Some(1)));
    assert_eq!(summary["per_structure"][1]["metrics"]["hd95_mm"]["n_inf"], 1);
    let table = format_table(&report);
    assert!(table.contains("L1") && table.contains("label_2"), "{table}");
}

#[test]
fn unpaired_files_and_geometry_mismatches_are_errors_naming_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let (pred, reference) = (dir.path().join("pred"), dir.path().join("ref"));
    std::fs::create_dir_all(&pred).unwrap();
    std::fs::create_dir_all(&reference).unwrap();
    let g = geometry([1.0; 3], [0.0; 3]);
    write(&reference.join("x.nii.gz"), cube(1, [0, 0, 0], g));
    write(&pred.join("x.nii.gz"), cube(1, [0, 0, 0], geometry([1.0; 3], [0.5, 0.0, 0.0])));
    write(&pred.join("y.nii.gz"), cube(1, [0, 0, 0], g));
    let err = evaluate_folders(&pred, &reference, &EvaluationOptions::default(), &BTreeMap::new()).unwrap_err();
    assert!(
        matches!(&err, MetricsError::Unpaired { pred_only, ref_only } if pred_only == &["y"] && ref_only.is_empty()),
        "{err}"
    );
    std::fs::remove_file(pred.join("y.nii.gz")).unwrap();
    let err = evaluate_folders(&pred, &reference, &EvaluationOptions::default(), &BTreeMap::new()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, MetricsError::GeometryMismatch { .. }), "{text}");
    assert!(text.contains("pred/x.nii.gz") && text.contains("ref/x.nii.gz"), "{text}");
    // Single files work too (and a geometry within the tolerance passes).
    write(&pred.join("x.nii.gz"), cube(1, [0, 0, 0], geometry([1.0; 3], [0.0001, 0.0, 0.0])));
    let report = evaluate_folders(
        &pred.join("x.nii.gz"),
        &reference.join("x.nii.gz"),
        &EvaluationOptions::default(),
        &BTreeMap::new(),
    )
    .unwrap();
    assert_eq!(report.cases[0].case, "x");
    assert_eq!(report.cases[0].structures[0].metrics.dice, 1.0);
}

#[test]
fn slice_wise_mode_writes_per_slice_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (pred, reference, out) = (dir.path().join("p"), dir.path().join("r"), dir.path().join("o"));
    std::fs::create_dir_all(&pred).unwrap();
    std::fs::create_dir_all(&reference).unwrap();
    // Spacings exact in float32 (NIfTI stores pixdim as float32).
    let g = geometry([0.25, 0.25, 4.0], [0.0; 3]);
    write(&reference.join("c.nii.gz"), cube(3, [2, 2, 1], g));
    write(&pred.join("c.nii.gz"), cube(3, [2, 3, 1], g));
    let options = EvaluationOptions { slice_axis: Some(2), ..Default::default() };
    let report = evaluate_folders(&pred, &reference, &options, &BTreeMap::new()).unwrap();
    write_report(&out, &report).unwrap();
    let slices = std::fs::read_to_string(out.join("metrics_per_slice.csv")).unwrap();
    let lines: Vec<&str> = slices.lines().collect();
    assert!(lines[0].starts_with("case,label,slice,structure,dice"));
    // Slices 1 and 2 hold the cubes; each is a 2x2 square shifted by one pixel (0.25 mm) in j.
    assert_eq!(lines[1], "c,3,1,label_3,0.5,0.3333333333333333,0.25,0.25,0.25,1,0.125,1,4,4");
    assert_eq!(lines.len(), 3);
    assert_eq!(report.summary.mode, "2d slices across axis 2");
}
