//! The real lumbar dataset in ../shared/data (not in the repository): its dataset.json maps onto
//! the ontology and its label files remap. Skipped, with a message, where the data is absent.

mod datasets_support;

use spineseg_datasets::check::{check_loaded, CheckOptions};
use spineseg_datasets::{open_nnunet, NnUnetOptions, VertebraExtent};
use spineseg_anatomy::StructureId;
use std::path::PathBuf;

fn lumbar_real() -> Option<PathBuf> {
    let dir = datasets_support::shared_data()?.join("lumbar-real");
    if dir.join("dataset.json").is_file() {
        Some(dir)
    } else {
        eprintln!("skipped: {} not found (set SPINESEG_SHARED_DATA)", dir.display());
        None
    }
}

fn open() -> Option<spineseg_datasets::Dataset> {
    let root = lumbar_real()?;
    // lumbar-real labels vertebral bodies only; its dataset.json cannot say so (read-only data).
    Some(
        open_nnunet(
            &root,
            &NnUnetOptions {
                vertebra_extent: Some(VertebraExtent::BodyOnly),
            },
        )
        .unwrap(),
    )
}

#[test]
fn dataset_json_maps_onto_the_ontology() {
    let Some(ds) = open() else {
        eprintln!("skipped: lumbar-real not found (set SPINESEG_SHARED_DATA or put it at <repo>/../shared/data)");
        return;
    };
    let target = |v: u16| ds.label_map.target(v).unwrap().unwrap();
    assert_eq!(target(1), StructureId(16), "T9");
    assert_eq!(target(9), StructureId(24), "L5");
    assert_eq!(target(10), StructureId(119), "T12/L1");
    assert_eq!(target(15), StructureId(124), "L5/S1");
    for v in 1..=15 {
        assert!(ds.label_map.target(v).is_ok(), "value {v}");
    }
    assert!(ds.label_map.unmapped().is_empty());
    assert_eq!(ds.vertebra_extent, VertebraExtent::BodyOnly);
    assert_eq!(ds.cases.len(), 45);
    assert!(ds.issues.is_empty(), "{:?}", ds.issues);
}

#[test]
fn a_real_label_file_remaps() {
    let Some(ds) = open() else {
        eprintln!("skipped: lumbar-real not found (set SPINESEG_SHARED_DATA or put it at <repo>/../shared/data)");
        return;
    };
    let case = ds.case("ivd_11").unwrap_or(&ds.cases[0]);
    let labels = ds.load_labels(case).unwrap().unwrap();
    let values: std::collections::BTreeSet<u16> = labels.data().iter().copied().collect();
    assert!(
        values
            .iter()
            .all(|v| *v == 0 || (16..=24).contains(v) || (119..=124).contains(v)),
        "{values:?}"
    );
    assert!(values.len() > 1, "the case has labels");
}

#[test]
fn the_whole_dataset_checks_clean() {
    let Some(ds) = open() else {
        eprintln!("skipped: lumbar-real not found (set SPINESEG_SHARED_DATA or put it at <repo>/../shared/data)");
        return;
    };
    let report = check_loaded(
        &ds,
        &CheckOptions {
            threads: 2,
            ..CheckOptions::default()
        },
    );
    eprintln!("{report}");
    assert!(report.is_ok(), "{report}");
    assert!(report.structure_voxels.contains_key(&StructureId(124)));
    assert!(report.structure_voxels.contains_key(&StructureId(24)));
}
