//! `dataset check` logic: a good generated dataset passes; every kind of problem is reported and
//! makes `is_ok()` false.

mod datasets_support;

use datasets_support::*;
use spineseg_datasets::check::{check_dataset, Problem};
use spineseg_datasets::LayoutIssue;
use spineseg_anatomy::StructureId;
use spineseg_io::Geometry;
use std::path::Path;

#[test]
fn a_good_dataset_passes() {
    let dir = tempfile::tempdir().unwrap();
    make_nnunet(dir.path(), 3, 2);
    let report = check_dataset(dir.path()).unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(
        (
            report.case_count(),
            report.labelled_case_count(),
            report.problem_count()
        ),
        (4, 3, 0)
    );
    // 120 voxels cycling through 0..=3: 30 each per case.
    assert_eq!(report.structure_voxels.get(&StructureId(22)), Some(&90));
    assert_eq!(report.structure_voxels.get(&StructureId(123)), Some(&90));
    let text = report.to_string();
    for want in [
        "case000: ok",
        "test000 [test]: ok",
        "4 cases (3 labelled), 0 with problems",
        "L4/L5",
        "result: OK",
        "whole vertebrae",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}

/// Breaks a fresh dataset with `damage`, checks it, and asserts the problem is reported for
/// `case` (or the dataset when `None`) and matched by `expect`.
fn assert_reported(damage: impl Fn(&Path), case: Option<&str>, expect: impl Fn(&Problem) -> bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    make_nnunet(dir.path(), 3, 2);
    damage(dir.path());
    let report = check_dataset(dir.path()).unwrap();
    assert!(!report.is_ok(), "{report}");
    let found = report.problems().any(|(c, p)| c == case && expect(p));
    assert!(found, "expected problem not found for {case:?}:\n{report}");
    report.to_string()
}

#[test]
fn geometry_mismatch_is_reported_with_deviation_and_files() {
    let text = assert_reported(
        |root| {
            let mut g = geometry();
            g.origin_mm[1] += 0.5;
            write_labels(&root.join("labelsTr/case001.nii.gz"), SHAPE, g, &[0, 1]);
        },
        Some("case001"),
        |p| {
            matches!(p, Problem::GeometryMismatch { max_deviation_mm, other, reference }
            if (max_deviation_mm - 0.5).abs() < 1e-4 && other.ends_with("case001.nii.gz") && reference.ends_with("case001_0000.nii.gz"))
        },
    );
    assert!(
        text.contains("0.5000 mm") && text.contains("case001_0000.nii.gz"),
        "{text}"
    );
}

#[test]
fn small_geometry_noise_is_tolerated() {
    let dir = tempfile::tempdir().unwrap();
    make_nnunet(dir.path(), 1, 1);
    let mut g = geometry();
    g.origin_mm[0] += 1e-4;
    write_labels(&dir.path().join("labelsTr/case000.nii.gz"), SHAPE, g, &[0, 1]);
    let report = check_dataset(dir.path()).unwrap();
    assert!(report.is_ok(), "{report}");
}

#[test]
fn rotated_direction_is_a_geometry_mismatch() {
    assert_reported(
        |root| {
            let g = Geometry {
                direction: spineseg_io::geometry::IDENTITY3,
                ..geometry()
            };
            write_image(&root.join("imagesTr/case002_0001.nii.gz"), SHAPE, g);
        },
        Some("case002"),
        |p| matches!(p, Problem::GeometryMismatch { other, .. } if other.ends_with("case002_0001.nii.gz")),
    );
}

#[test]
fn shape_mismatch_is_reported() {
    assert_reported(
        |root| write_image(&root.join("imagesTr/case000_0001.nii.gz"), [6, 5, 3], geometry()),
        Some("case000"),
        |p| {
            matches!(
                p,
                Problem::ShapeMismatch {
                    other_shape: [6, 5, 3],
                    reference_shape: [6, 5, 4],
                    ..
                }
            )
        },
    );
}

#[test]
fn unknown_label_value_is_reported_with_count() {
    let text = assert_reported(
        |root| write_labels(&root.join("labelsTr/case002.nii.gz"), SHAPE, geometry(), &[0, 1, 9]),
        Some("case002"),
        |p| matches!(p, Problem::UnknownLabelValue { value: 9, voxels: 40, path } if path.ends_with("case002.nii.gz")),
    );
    assert!(text.contains("unknown label value 9 (40 voxels)"), "{text}");
}

#[test]
fn missing_label_is_reported() {
    assert_reported(
        |root| std::fs::remove_file(root.join("labelsTr/case001.nii.gz")).unwrap(),
        Some("case001"),
        |p| matches!(p, Problem::Layout(LayoutIssue::MissingLabel { .. })),
    );
}

#[test]
fn missing_channel_is_reported() {
    assert_reported(
        |root| std::fs::remove_file(root.join("imagesTr/case000_0001.nii.gz")).unwrap(),
        Some("case000"),
        |p| matches!(p, Problem::Layout(LayoutIssue::MissingChannel { channel: 1, .. })),
    );
}

#[test]
fn orphan_label_is_a_dataset_problem() {
    assert_reported(
        |root| write_labels(&root.join("labelsTr/nobody.nii.gz"), SHAPE, geometry(), &[0, 1]),
        None,
        |p| matches!(p, Problem::Layout(LayoutIssue::OrphanLabel { .. })),
    );
}

#[test]
fn corrupt_files_are_reported_with_the_reader_error() {
    let text = assert_reported(
        |root| std::fs::write(root.join("imagesTr/case002_0000.nii.gz"), b"\x1f\x8bnot really gzip").unwrap(),
        Some("case002"),
        |p| matches!(p, Problem::Unreadable { path, error } if path.ends_with("case002_0000.nii.gz") && error.contains("case002_0000.nii.gz")),
    );
    assert!(text.contains("unreadable"), "{text}");
    assert_reported(
        |root| {
            let path = root.join("labelsTr/case000.nii.gz");
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        },
        Some("case000"),
        |p| matches!(p, Problem::Unreadable { path, .. } if path.ends_with("case000.nii.gz")),
    );
}

#[test]
fn unknown_layout_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("readme.txt"), "x").unwrap();
    let err = check_dataset(dir.path()).unwrap_err().to_string();
    assert!(err.contains("not a recognised dataset layout"), "{err}");
}
