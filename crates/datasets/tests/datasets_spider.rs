//! SPIDER adapter on a generated SPIDER-like folder (tiny .mha files and an overview.csv).

mod datasets_support;

use datasets_support::*;
use spineseg_datasets::check::check_dataset;
use spineseg_datasets::spider::spider_label_map;
use spineseg_datasets::{detect_and_open, open_spider, DatasetKind, LayoutIssue, SpiderOptions, VertebraExtent};
use spineseg_anatomy::{Level, Region};
use std::collections::BTreeSet;
use std::path::Path;

fn make_spider(root: &Path) {
    for name in ["1_t1", "1_t2", "1_t2_SPACE", "2_t1"] {
        write_image(&root.join(format!("images/{name}.mha")), SHAPE, geometry());
        // L5, L4 partly visible, canal, L5/S1, L4/L5.
        write_labels(
            &root.join(format!("masks/{name}.mha")),
            SHAPE,
            geometry(),
            &[0, 1, 102, 100, 201, 202],
        );
    }
    std::fs::write(
        root.join("overview.csv"),
        "new_file_name,subset,sex,num_vertebrae\n1_t1,training,F,7\n1_t2,training,F,7\n1_t2_SPACE,training,F,7\n2_t1,validation,M,7\n",
    )
    .unwrap();
}

fn values(v: &spineseg_io::Volume<u16>) -> BTreeSet<u16> {
    v.data().iter().copied().collect()
}

#[test]
fn opens_and_maps_from_the_bottom() {
    let dir = tempfile::tempdir().unwrap();
    make_spider(dir.path());
    let ds = detect_and_open(dir.path()).unwrap();
    assert_eq!(ds.kind, DatasetKind::Spider);
    assert_eq!(ds.vertebra_extent, VertebraExtent::WholeVertebra);
    assert_eq!(
        ds.cases.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["1_t1", "1_t2", "1_t2_SPACE", "2_t1"]
    );
    assert!(
        ds.issues.is_empty() && ds.warnings.is_empty(),
        "{:?} {:?}",
        ds.issues,
        ds.warnings
    );
    let labels = ds.load_labels(&ds.cases[0]).unwrap().unwrap();
    assert_eq!(values(&labels), BTreeSet::from([0, 24, 23, 61, 124, 123]));
    assert!(ds.label_map.get(102).unwrap().partial);
    let report = check_dataset(dir.path()).unwrap();
    assert!(report.is_ok(), "{report}");
}

#[test]
fn per_case_override_shifts_levels() {
    let dir = tempfile::tempdir().unwrap();
    make_spider(dir.path());
    let csv = dir.path().join("levels.csv");
    std::fs::write(&csv, "case,lowest_vertebra\n2,L4\n").unwrap();
    let mut options = SpiderOptions::default();
    options.read_overrides_csv(&csv).unwrap();
    let ds = open_spider(dir.path(), &options).unwrap();
    let case2 = ds.case("2_t1").unwrap();
    assert_eq!(
        values(&ds.load_labels(case2).unwrap().unwrap()),
        BTreeSet::from([0, 23, 22, 61, 123, 122])
    );
    let case1 = ds.case("1_t1").unwrap();
    assert_eq!(
        values(&ds.load_labels(case1).unwrap().unwrap()),
        BTreeSet::from([0, 24, 23, 61, 124, 123])
    );
    let whole = open_spider(
        dir.path(),
        &SpiderOptions {
            lowest_vertebra: Level::new(Region::Lumbar, 4),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        values(&whole.load_labels(case1).unwrap().unwrap()),
        BTreeSet::from([0, 23, 22, 61, 123, 122])
    );
}

#[test]
fn l6_is_refused_and_above_c1_fails_on_use() {
    let dir = tempfile::tempdir().unwrap();
    make_spider(dir.path());
    let err = open_spider(
        dir.path(),
        &SpiderOptions {
            lowest_vertebra: Level::new(Region::Lumbar, 6),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("L6"), "{err}");
    write_labels(&dir.path().join("masks/2_t1.mha"), SHAPE, geometry(), &[0, 25]);
    let ds = detect_and_open(dir.path()).unwrap();
    let err = ds.load_labels(ds.case("2_t1").unwrap()).unwrap_err().to_string();
    assert!(err.contains("2_t1.mha") && err.contains("above C1"), "{err}");
    let report = check_dataset(dir.path()).unwrap();
    assert!(!report.is_ok());
    assert!(report.to_string().contains("above C1"), "{report}");
}

#[test]
fn missing_masks_orphans_and_csv_mismatches() {
    let dir = tempfile::tempdir().unwrap();
    make_spider(dir.path());
    std::fs::remove_file(dir.path().join("masks/1_t2.mha")).unwrap();
    write_labels(&dir.path().join("masks/9_t1.mha"), SHAPE, geometry(), &[0, 1]);
    std::fs::remove_file(dir.path().join("images/2_t1.mha")).unwrap();
    std::fs::remove_file(dir.path().join("masks/2_t1.mha")).unwrap();
    let ds = detect_and_open(dir.path()).unwrap();
    assert!(
        ds.issues
            .iter()
            .any(|i| matches!(i, LayoutIssue::MissingLabel { case, .. } if case == "1_t2")),
        "{:?}",
        ds.issues
    );
    assert!(ds
        .issues
        .iter()
        .any(|i| matches!(i, LayoutIssue::OrphanLabel { path } if path.ends_with("9_t1.mha"))));
    assert!(ds.warnings.iter().any(|w| w.contains("2_t1")), "{:?}", ds.warnings);
}

#[test]
fn value_table_with_override_matches_the_ontology_names() {
    let o = spineseg_anatomy::Ontology::standard();
    let name = |lowest: Level, v: u16| -> String {
        let m = spider_label_map(lowest).unwrap();
        o.get(m.target(v).unwrap().unwrap()).unwrap().name.clone()
    };
    let l5 = Level::new(Region::Lumbar, 5);
    let l4 = Level::new(Region::Lumbar, 4);
    for (v, a, b) in [
        (1, "L5", "L4"),
        (2, "L4", "L3"),
        (7, "T11", "T10"),
        (201, "L5/S1", "L4/L5"),
        (207, "T11/T12", "T10/T11"),
        (103, "L3", "L2"),
    ] {
        assert_eq!(name(l5, v), a, "value {v}, lowest L5");
        assert_eq!(name(l4, v), b, "value {v}, lowest L4");
    }
}
