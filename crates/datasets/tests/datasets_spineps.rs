//! SPINEPS adapter on the real TPTBox sample (tests/fixtures/spineps, Apache-2.0, see its
//! PROVENANCE.md).

mod datasets_support;

use spineseg_datasets::check::check_dataset;
use spineseg_datasets::{
    combine_spineps_masks, detect_and_open, open_spineps, DatasetKind, LayoutIssue, VertebraExtent,
};
use std::collections::BTreeMap;

#[test]
fn real_sample_combines_into_ontology_ids() {
    let root = datasets_support::fixtures().join("spineps");
    let ds = detect_and_open(&root).unwrap();
    assert_eq!(ds.kind, DatasetKind::Spineps);
    assert_eq!(ds.vertebra_extent, VertebraExtent::BodyOnly);
    assert_eq!(ds.cases.len(), 1);
    let case = &ds.cases[0];
    assert_eq!(case.id, "sub-mri_label-6_T2w");
    assert!(case
        .label
        .as_ref()
        .unwrap()
        .ends_with("sub-mri_seg-vert_label-6_msk.nii.gz"));
    assert!(case
        .subregion_label
        .as_ref()
        .unwrap()
        .ends_with("sub-mri_seg-subreg_label-6_msk.nii.gz"));
    assert!(ds.issues.is_empty(), "{:?}", ds.issues);

    let labels = ds.load_labels(case).unwrap().unwrap();
    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    for v in labels.data() {
        *counts.entry(*v).or_default() += 1;
    }
    let found: Vec<u16> = counts.keys().copied().collect();
    assert_eq!(found, vec![0, 5, 6, 7, 40, 60, 61, 105, 106]);
    // From the sample's values: cord and canal voxels as in the subregion mask; discs as in the
    // instance mask; bodies = corpus voxels plus endplates.
    assert_eq!(counts[&60], 345);
    assert_eq!(counts[&61], 4137);
    assert_eq!(counts[&105], 3829);
    assert_eq!(counts[&106], 4768);
    assert_eq!(counts[&5], 2474 + 892);
    assert_eq!(counts[&6], 10860 + 971);
    assert_eq!(counts[&7], 9438 + 28);

    let image = spineseg_io::read_volume(&case.images[0]).unwrap();
    assert_eq!(labels.shape(), image.shape);
    assert!(labels.geometry.agrees_with(&image.geometry, image.shape, 1e-3));
    assert_eq!(image.geometry.orientation_code(), "PIR");

    let report = check_dataset(&root).unwrap();
    eprintln!("{report}");
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.cases[0].dropped_voxels, 0);
}

#[test]
fn masks_in_a_derivatives_folder_with_mod_entity_pair_up() {
    let src = datasets_support::fixtures().join("spineps");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("rawdata/sub-a")).unwrap();
    std::fs::create_dir_all(root.join("derivatives/sub-a")).unwrap();
    std::fs::copy(
        src.join("sub-mri_label-6_T2w.nii.gz"),
        root.join("rawdata/sub-a/sub-a_ses-1_T2w.nii.gz"),
    )
    .unwrap();
    std::fs::copy(
        src.join("sub-mri_label-6_T2w.nii.gz"),
        root.join("rawdata/sub-a/sub-a_ses-1_T1w.nii.gz"),
    )
    .unwrap();
    std::fs::copy(
        src.join("sub-mri_seg-vert_label-6_msk.nii.gz"),
        root.join("derivatives/sub-a/sub-a_ses-1_mod-T2w_seg-vert_msk.nii.gz"),
    )
    .unwrap();
    std::fs::copy(
        src.join("sub-mri_seg-subreg_label-6_msk.nii.gz"),
        root.join("derivatives/sub-a/sub-a_ses-1_mod-T2w_seg-spine_msk.nii.gz"),
    )
    .unwrap();
    let ds = open_spineps(root).unwrap();
    let t2 = ds.case("sub-a_ses-1_T2w").unwrap();
    assert!(t2.label.is_some() && t2.subregion_label.is_some());
    let t1 = ds.case("sub-a_ses-1_T1w").unwrap();
    assert!(t1.label.is_none());
    assert!(
        ds.issues
            .iter()
            .any(|i| matches!(i, LayoutIssue::MissingLabel { case, .. } if case == "sub-a_ses-1_T1w")),
        "{:?}",
        ds.issues
    );
}

#[test]
fn l6_in_a_mask_is_a_clear_error() {
    let src = datasets_support::fixtures().join("spineps");
    let vert_path = src.join("sub-mri_seg-vert_label-6_msk.nii.gz");
    let sub_path = src.join("sub-mri_seg-subreg_label-6_msk.nii.gz");
    let vert = spineseg_io::read_labels(&vert_path)
        .unwrap()
        .map(|v| if *v == 7 { 25 } else { *v });
    let sub = spineseg_io::read_labels(&sub_path).unwrap();
    let err = combine_spineps_masks(&vert, &vert_path, &sub, &sub_path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("L6") && err.contains("seg-vert"), "{err}");
}
