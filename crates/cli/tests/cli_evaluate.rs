//! End-to-end tests of `spineseg evaluate`.

use spineseg_io::{write_volume, AnyVolume, Geometry, Spacing, VoxelData};
use std::path::Path;

mod support;
use support::spineseg;


fn geometry() -> Geometry {
    Geometry::new(Spacing::new([2.0, 1.0, 1.0]).unwrap(), [0.0; 3], spineseg_io::geometry::IDENTITY3).unwrap()
}

/// An 8x8x8 label volume with a box of label 23 (L4) from `lo` to `hi` (exclusive) along i.
fn write_box(path: &Path, lo: usize, hi: usize, geometry: Geometry) {
    let mut data = vec![0u8; 512];
    for k in 2..6 {
        for j in 2..6 {
            for i in lo..hi {
                data[i + 8 * (j + 8 * k)] = 23;
            }
        }
    }
    write_volume(path, &AnyVolume { shape: [8, 8, 8], data: VoxelData::U8(data), geometry }).unwrap();
}

#[test]
fn evaluate_writes_the_documented_csv_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (pred, reference, out) = (dir.path().join("pred"), dir.path().join("ref"), dir.path().join("out"));
    std::fs::create_dir_all(&pred).unwrap();
    std::fs::create_dir_all(&reference).unwrap();
    // Case a: identical. Case b: the prediction is shifted by one voxel (2 mm) along i.
    write_box(&pred.join("a.nii.gz"), 2, 6, geometry());
    write_box(&reference.join("a.nii.gz"), 2, 6, geometry());
    write_box(&pred.join("b.mha"), 3, 7, geometry());
    write_box(&reference.join("b_0000.mha"), 2, 6, geometry());
    let out_run = spineseg(&[
        "evaluate",
        "--pred",
        pred.to_str().unwrap(),
        "--ref",
        reference.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(out_run.status.success(), "{}", String::from_utf8_lossy(&out_run.stderr));
    assert!(String::from_utf8_lossy(&out_run.stdout).contains("L4"));
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "case,label,structure,dice,iou,hd_mm,hd95_mm,hd95_pooled_mm,hd95_px,assd_mm,nsd,ref_voxels,pred_voxels"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(&rows[0][..5], &["a", "23", "L4", "1", "1"]);
    assert_eq!(rows[0][5], "0");
    // Shift by one voxel of 2 mm: Dice = 2*48/(64+64) = 0.75, Hausdorff 2 mm = 1 voxel.
    assert_eq!(&rows[1][..4], &["b", "23", "L4", "0.75"]);
    assert_eq!(rows[1][5], "2");
    assert_eq!(rows[1][8], "1");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert!(summary.is_object());
}

#[test]
fn evaluate_refuses_geometry_mismatch_naming_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let (pred, reference) = (dir.path().join("p.nii.gz"), dir.path().join("r.nii.gz"));
    let mut moved = geometry();
    moved.origin_mm[1] += 0.5;
    write_box(&pred, 2, 6, moved);
    write_box(&reference, 2, 6, geometry());
    let out_dir = dir.path().join("out");
    let out = spineseg(&[
        "evaluate",
        "--pred",
        pred.to_str().unwrap(),
        "--ref",
        reference.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("p.nii.gz") && stderr.contains("r.nii.gz"), "{stderr}");
    assert!(!out_dir.join("metrics.csv").exists());
}

#[test]
fn evaluate_refuses_shape_mismatch_and_empty_folders() {
    let dir = tempfile::tempdir().unwrap();
    let (pred, reference, out_dir) = (dir.path().join("pred"), dir.path().join("ref"), dir.path().join("out"));
    std::fs::create_dir_all(&pred).unwrap();
    std::fs::create_dir_all(&reference).unwrap();
    let run = |pred: &Path, reference: &Path| {
        let (p, r, o) = (pred.to_str().unwrap(), reference.to_str().unwrap(), out_dir.to_str().unwrap());
        spineseg(&["evaluate", "--pred", p, "--ref", r, "--out", o])
    };

    // Empty folders (a stray non-image file does not count as a case).
    std::fs::write(pred.join("notes.txt"), "not a mask").unwrap();
    let out = run(&pred, &reference);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no cases to evaluate"), "{stderr}");
    let (p, r) = (pred.display().to_string(), reference.display().to_string());
    assert!(stderr.contains(&p) && stderr.contains(&r), "{stderr}");
    assert!(!out_dir.exists());

    // One case on an 8 x 8 x 7 grid against its 8 x 8 x 8 reference.
    write_box(&reference.join("x.nii.gz"), 2, 6, geometry());
    let short = AnyVolume { shape: [8, 8, 7], data: VoxelData::U8(vec![0; 448]), geometry: geometry() };
    write_volume(&pred.join("x.nii.gz"), &short).unwrap();
    let out = run(&pred, &reference);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for needle in ["shape mismatch", "pred/x.nii.gz", "[8, 8, 7]", "ref/x.nii.gz", "[8, 8, 8]"] {
        assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    }
    assert!(!out_dir.join("metrics.csv").exists() && !out_dir.join("summary.json").exists());
}
