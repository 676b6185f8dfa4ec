//! MRSpineSeg adapter on generated files.

mod datasets_support;

use datasets_support::*;
use spineseg_datasets::check::check_dataset;
use spineseg_datasets::{detect_and_open, DatasetKind, LayoutIssue};
use std::collections::BTreeSet;

#[test]
fn pairs_cases_anywhere_and_maps_all_values() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let all: Vec<u16> = (0..=19).collect();
    write_image(&root.join("train/MR/Case1.nii.gz"), [5, 5, 4], geometry());
    write_labels(&root.join("train/Mask/mask_case1.nii.gz"), [5, 5, 4], geometry(), &all);
    write_image(&root.join("train/MR/Case12.nii.gz"), SHAPE, geometry());
    write_labels(&root.join("other/MASK_CASE12.nii.gz"), SHAPE, geometry(), &[0, 1, 11]);
    write_image(&root.join("train/MR/Case2.nii.gz"), SHAPE, geometry());
    write_labels(&root.join("train/Mask/mask_case3.nii.gz"), SHAPE, geometry(), &[0, 1]);
    let ds = detect_and_open(root).unwrap();
    assert_eq!(ds.kind, DatasetKind::MrSpineSeg);
    assert_eq!(
        ds.cases.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["Case1", "Case2", "Case12"]
    );
    assert!(ds.cases[2].label.as_ref().unwrap().ends_with("MASK_CASE12.nii.gz"));
    assert!(
        ds.issues
            .iter()
            .any(|i| matches!(i, LayoutIssue::MissingLabel { case, .. } if case == "Case2")),
        "{:?}",
        ds.issues
    );
    assert!(ds
        .issues
        .iter()
        .any(|i| matches!(i, LayoutIssue::OrphanLabel { path } if path.ends_with("mask_case3.nii.gz"))));

    let labels = ds.load_labels(&ds.cases[0]).unwrap().unwrap();
    let got: BTreeSet<u16> = labels.data().iter().copied().collect();
    let expected: BTreeSet<u16> = [
        0, 26, 24, 23, 22, 21, 20, 19, 18, 17, 16, 124, 123, 122, 121, 120, 119, 118, 117, 116,
    ]
    .into();
    assert_eq!(got, expected);
    // Voxel by voxel: value i at position i maps to the table's id.
    let table = [
        0u16, 26, 24, 23, 22, 21, 20, 19, 18, 17, 16, 124, 123, 122, 121, 120, 119, 118, 117, 116,
    ];
    for (i, v) in labels.data().iter().enumerate() {
        assert_eq!(*v, table[i % 20], "voxel {i}");
    }
    let report = check_dataset(root).unwrap();
    assert!(!report.is_ok(), "missing label and orphan");
    assert_eq!(report.cases_with_problems(), 1);
    assert_eq!(report.structure_voxels.len(), 19);
}
