//! nnU-Net raw adapter on generated folders.

mod datasets_support;

use datasets_support::*;
use spineseg_datasets::{
    detect_and_open, open_nnunet, DatasetKind, LayoutIssue, NnUnetOptions, Split, VertebraExtent,
};
use spineseg_anatomy::StructureId;

#[test]
fn opens_cases_channels_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let ids = make_nnunet(dir.path(), 3, 2);
    let ds = detect_and_open(dir.path()).unwrap();
    assert_eq!(ds.kind, DatasetKind::NnUnetRaw);
    assert_eq!(ds.name, "tiny");
    assert_eq!(ds.channel_names, vec!["T1", "T2"]);
    assert_eq!(ds.vertebra_extent, VertebraExtent::WholeVertebra);
    assert!(ds.issues.is_empty(), "{:?}", ds.issues);
    let train: Vec<&str> = ds.training_cases().map(|c| c.id.as_str()).collect();
    assert_eq!(train, ids.iter().map(String::as_str).collect::<Vec<_>>());
    let test = ds.cases.iter().find(|c| c.split == Split::Test).unwrap();
    assert_eq!(
        (test.id.as_str(), test.images.len(), test.label.is_none()),
        ("test000", 2, true)
    );
    let case = &ds.cases[0];
    assert!(case.images[0].ends_with("case000_0000.nii.gz") && case.images[1].ends_with("case000_0001.nii.gz"));
    let labels = ds.load_labels(case).unwrap().unwrap();
    let mut values: Vec<u16> = labels.data().to_vec();
    values.sort();
    values.dedup();
    assert_eq!(values, vec![0, 22, 23, 123]);
    assert_eq!(
        ds.label_map.structures(),
        vec![StructureId(22), StructureId(23), StructureId(123)]
    );
    // dataset.json can also be given directly.
    assert_eq!(
        detect_and_open(&dir.path().join("dataset.json")).unwrap().cases.len(),
        4
    );
}

#[test]
fn extent_option_overrides_and_defaults_to_unknown() {
    let dir = tempfile::tempdir().unwrap();
    make_nnunet(dir.path(), 1, 1);
    let ds = open_nnunet(
        dir.path(),
        &NnUnetOptions {
            vertebra_extent: Some(VertebraExtent::BodyOnly),
        },
    )
    .unwrap();
    assert_eq!(ds.vertebra_extent, VertebraExtent::BodyOnly);
    let json = std::fs::read_to_string(dir.path().join("dataset.json")).unwrap();
    let json = json.replace(r#", "spineseg": {"vertebra_extent": "whole_vertebra"}"#, "");
    std::fs::write(dir.path().join("dataset.json"), json).unwrap();
    assert_eq!(
        detect_and_open(dir.path()).unwrap().vertebra_extent,
        VertebraExtent::Unknown
    );
}

#[test]
fn layout_problems_are_collected() {
    let dir = tempfile::tempdir().unwrap();
    make_nnunet(dir.path(), 3, 2);
    let root = dir.path();
    std::fs::remove_file(root.join("labelsTr/case000.nii.gz")).unwrap();
    std::fs::remove_file(root.join("imagesTr/case001_0001.nii.gz")).unwrap();
    write_labels(&root.join("labelsTr/ghost.nii.gz"), SHAPE, geometry(), &[0, 1]);
    write_image(&root.join("imagesTr/case002_0005.nii.gz"), SHAPE, geometry());
    std::fs::write(root.join("imagesTr/notes.txt"), "x").unwrap();
    let ds = detect_and_open(root).unwrap();
    let has = |f: &dyn Fn(&LayoutIssue) -> bool| ds.issues.iter().any(f);
    assert!(
        has(&|i| matches!(i, LayoutIssue::MissingLabel { case, .. } if case == "case000")),
        "{:?}",
        ds.issues
    );
    assert!(has(
        &|i| matches!(i, LayoutIssue::MissingChannel { case, channel: 1, .. } if case == "case001")
    ));
    assert!(has(
        &|i| matches!(i, LayoutIssue::OrphanLabel { path } if path.ends_with("ghost.nii.gz"))
    ));
    assert!(has(
        &|i| matches!(i, LayoutIssue::OrphanImage { path, .. } if path.ends_with("case002_0005.nii.gz"))
    ));
    assert!(has(
        &|i| matches!(i, LayoutIssue::OrphanImage { path, .. } if path.ends_with("notes.txt"))
    ));
}

#[test]
fn unknown_names_open_with_a_warning_and_fail_only_where_used() {
    let dir = tempfile::tempdir().unwrap();
    make_nnunet(dir.path(), 1, 1);
    let json = std::fs::read_to_string(dir.path().join("dataset.json")).unwrap();
    std::fs::write(
        dir.path().join("dataset.json"),
        json.replace("\"L4/L5\": 3", "\"L4/L5\": 3, \"psoas\": 4"),
    )
    .unwrap();
    let ds = detect_and_open(dir.path()).unwrap();
    assert!(ds.warnings.iter().any(|w| w.contains("psoas")), "{:?}", ds.warnings);
    assert!(ds.load_labels(&ds.cases[0]).is_ok(), "value 4 is not in the file");
    write_labels(&dir.path().join("labelsTr/case000.nii.gz"), SHAPE, geometry(), &[0, 4]);
    let err = ds.load_labels(&ds.cases[0]).unwrap_err().to_string();
    assert!(
        err.contains("case000.nii.gz") && err.contains("psoas") && err.contains("value 4"),
        "{err}"
    );
}

#[test]
fn region_based_dataset_json_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("dataset.json"),
        r#"{"channel_names": {"0": "T2"}, "labels": {"background": 0, "spine": [1, 2], "discs": 2},
            "regions_class_order": [1, 2], "file_ending": ".nii.gz"}"#,
    )
    .unwrap();
    let err = detect_and_open(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("region-based labels are not supported") && err.contains("dataset.json"),
        "{err}"
    );
}
