//! `merge::merge_datasets` on generated folders: two nnU-Net datasets that number the same
//! structures differently, a SPIDER folder (.mha, converted), and the refusals.

mod datasets_support;

use datasets_support::*;
use spineseg_anatomy::StructureId;
use spineseg_datasets::check::check_dataset;
use spineseg_datasets::error::DatasetError;
use spineseg_datasets::merge::{case_sites, merge_datasets, read_sources, MergeInput, MergeOptions, SOURCES_FILE};
use spineseg_datasets::{detect_and_open, LabelTarget, Split, VertebraExtent};
use spineseg_io::{read_labels, read_volume, Label};
use std::collections::BTreeSet;
use std::path::Path;

/// The voxel pattern of `make_nnunet`'s labels (values 1 = L3, 2 = L4, 3 = L4/L5), written with
/// another numbering: L4/L5 = 1, L3 = 5, L4 = 7, plus the spinal canal = 2 in every fifth voxel.
/// Case `case001` is left out of the manifest.
fn make_renumbered(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(
        root.join("dataset.json"),
        r#"{"name": "other numbering", "channel_names": {"0": "T1"},
            "labels": {"background": 0, "L4/L5": 1, "spinal canal": 2, "L3": 5, "L4": 7},
            "numTraining": 2, "file_ending": ".nii.gz"}"#,
    )
    .unwrap();
    for id in ["case000", "case001"] {
        write_image(&root.join(format!("imagesTr/{id}_0000.nii.gz")), SHAPE, geometry());
        write_labels(&root.join(format!("labelsTr/{id}.nii.gz")), SHAPE, geometry(), &[0, 5, 7, 1, 2]);
    }
    std::fs::write(root.join("manifest.csv"), "case,split,source_dataset\ncase000,dev,site B1\n").unwrap();
}

fn values(path: &Path) -> BTreeSet<Label> {
    read_labels(path).unwrap().data().iter().copied().collect()
}

#[test]
fn remaps_two_numberings_onto_ontology_ids_and_reads_back_as_nnunet() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, out) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("merged"));
    make_nnunet(&a, 2, 1);
    make_renumbered(&b);
    let summary = merge_datasets(&[MergeInput::new(&a), MergeInput::new(&b)], &out, &MergeOptions::default()).unwrap();
    assert_eq!((summary.training_cases, summary.test_cases), (4, 1));
    assert_eq!(summary.labels, [22, 23, 61, 123].map(StructureId));
    assert_eq!(summary.sources.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["tiny", "other-numbering"]);
    // a says whole vertebrae, b nothing: no extent is claimed for the mixture.
    assert_eq!(summary.vertebra_extent, VertebraExtent::Unknown);
    assert!(summary.warnings.iter().any(|w| w.contains("different extents")), "{:?}", summary.warnings);
    assert!(summary.warnings.iter().any(|w| w.contains("case001")), "{:?}", summary.warnings);

    // Images are copied byte for byte; labels carry ontology ids on the same voxels.
    let image = |root: &Path, name: &str| std::fs::read(root.join("imagesTr").join(name)).unwrap();
    assert_eq!(image(&out, "tiny_case001_0000.nii.gz"), image(&a, "case001_0000.nii.gz"));
    assert_eq!(image(&out, "other-numbering_case000_0000.nii.gz"), image(&b, "case000_0000.nii.gz"));
    assert!(out.join("imagesTs/tiny_test000_0000.nii.gz").is_file());
    let from_a = read_labels(&out.join("labelsTr/tiny_case000.nii.gz")).unwrap();
    let from_b = read_labels(&out.join("labelsTr/other-numbering_case000.nii.gz")).unwrap();
    let pattern_a = [0, 22, 23, 123];
    let pattern_b = [0, 22, 23, 123, 61];
    for (i, (va, vb)) in from_a.data().iter().zip(from_b.data()).enumerate() {
        assert_eq!((*va, *vb), (pattern_a[i % 4], pattern_b[i % 5]), "voxel {i}");
    }
    let original = read_volume(&b.join("labelsTr/case000.nii.gz")).unwrap();
    assert_eq!(from_b.geometry, original.geometry);

    // The nnU-Net adapter reads the result as a normal dataset whose label map is the identity.
    let merged = detect_and_open(&out).unwrap();
    assert!(merged.issues.is_empty() && merged.warnings.is_empty(), "{:?} {:?}", merged.issues, merged.warnings);
    for (value, entry) in merged.label_map.entries() {
        assert_eq!(entry.target, LabelTarget::Structure(StructureId(value)), "{}", entry.name);
    }
    assert_eq!(merged.label_map.structures(), summary.labels);
    let case = merged.case("other-numbering_case000").unwrap();
    assert_eq!(merged.load_labels(case).unwrap().unwrap(), from_b);
    let report = check_dataset(&out).unwrap();
    assert!(report.is_ok(), "{report}");

    // sources.json keeps where every case came from.
    let sources = read_sources(&out).unwrap();
    assert_eq!(sources.cases.len(), 5);
    let record = &sources.cases["other-numbering_case000"];
    assert_eq!((record.source.as_str(), record.original_case.as_str()), ("other-numbering", "case000"));
    assert_eq!(record.split, Split::Train);
    assert_eq!(record.images, [b.canonicalize().unwrap().join("imagesTr/case000_0000.nii.gz")]);
    assert_eq!(record.label, Some(b.canonicalize().unwrap().join("labelsTr/case000.nii.gz")));
    assert_eq!(record.structures, [22, 23, 61, 123].map(StructureId));
    assert_eq!(record.structure_names, ["L3", "L4", "spinal canal", "L4/L5"]);
    assert_eq!(sources.cases["tiny_test000"].split, Split::Test);
    assert!(sources.cases["tiny_test000"].structures.is_empty());
    assert_eq!(sources.sources[1].sites_from.as_deref(), Some("manifest.csv:source_dataset"));
    let sites = case_sites(&out).unwrap();
    assert_eq!(sites["other-numbering_case000"], "site B1");
    assert_eq!(sites["other-numbering_case001"], "other-numbering");
    assert_eq!(sites["tiny_case000"], "tiny");
    // Python reads the same file as plain JSON.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join(SOURCES_FILE)).unwrap()).unwrap();
    assert_eq!(json["cases"]["other-numbering_case000"]["site"], "site B1");
    assert_eq!(json["cases"]["tiny_case001"]["structures"], serde_json::json!([22, 23, 123]));
    let dataset_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(dataset_json["numTraining"], 4);
    assert_eq!(dataset_json["labels"]["spinal canal"], 61);
    assert_eq!(dataset_json["spineseg"]["merged_from"], serde_json::json!(["tiny", "other-numbering"]));

    // Merging the merge again keeps its sites.
    let (c, again) = (dir.path().join("c"), dir.path().join("again"));
    make_nnunet(&c, 1, 1);
    let summary =
        merge_datasets(&[MergeInput::new(&out), MergeInput::new(&c)], &again, &MergeOptions::default()).unwrap();
    assert_eq!(summary.sources[0].name, "tiny-other-numbering");
    assert_eq!(summary.sources[0].sites_from.as_deref(), Some("sources.json:site"));
    let sites = case_sites(&again).unwrap();
    assert_eq!(sites["tiny-other-numbering_other-numbering_case000"], "site B1");
    assert_eq!(sites["tiny-other-numbering_tiny_case000"], "tiny");
    assert_eq!(sites["tiny_case000"], "tiny");
}

#[test]
fn names_are_given_or_made_unique_and_other_layouts_are_converted() {
    let dir = tempfile::tempdir().unwrap();
    let (a, a2, spider, out) =
        (dir.path().join("a"), dir.path().join("a2"), dir.path().join("spider"), dir.path().join("out"));
    make_nnunet(&a, 1, 1);
    make_nnunet(&a2, 1, 1);
    for name in ["1_t2", "2_t2"] {
        write_image(&spider.join(format!("images/{name}.mha")), SHAPE, geometry());
        write_labels(&spider.join(format!("masks/{name}.mha")), SHAPE, geometry(), &[0, 1, 100, 201]);
    }
    std::fs::write(spider.join("overview.csv"), "new_file_name,subset\n1_t2,training\n2_t2,training\n").unwrap();

    // SPIDER calls its channel "MRI", the nnU-Net folders "T1": refused, naming the dataset.
    let inputs = [MergeInput::new(&a), MergeInput::new(&a2), MergeInput::named(&spider, "SPIDER-t2")];
    let err = merge_datasets(&inputs, &out, &MergeOptions::default()).unwrap_err().to_string();
    assert!(err.contains("spider") && err.contains("\"MRI\"") && err.contains("\"T1\""), "{err}");
    assert!(err.contains("--channel-names"), "{err}");
    assert!(!out.exists());

    let options = MergeOptions { channel_names: Some(vec!["MRI".into()]), ..MergeOptions::default() };
    let summary = merge_datasets(&inputs, &out, &options).unwrap();
    let names: Vec<&str> = summary.sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["tiny", "tiny-2", "SPIDER-t2"]);
    assert_eq!(summary.dataset_name, "tiny+tiny-2+SPIDER-t2");
    let merged = detect_and_open(&out).unwrap();
    assert_eq!(merged.channel_names, ["MRI"]);
    let ids: Vec<&str> = merged.training_cases().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["SPIDER-t2_1_t2", "SPIDER-t2_2_t2", "tiny-2_case000", "tiny_case000"]);
    // The .mha image became .nii.gz with the same voxels and geometry; L5 (1), L5/S1 (100) and
    // the canal (201) became ontology ids.
    let original = read_volume(&spider.join("images/1_t2.mha")).unwrap();
    let converted = read_volume(&out.join("imagesTr/SPIDER-t2_1_t2_0000.nii.gz")).unwrap();
    assert_eq!(converted.data, original.data);
    assert!(converted.geometry.agrees_with(&original.geometry, SHAPE, 1e-6), "{:?}", converted.geometry);
    assert_eq!(values(&out.join("labelsTr/SPIDER-t2_1_t2.nii.gz")), BTreeSet::from([0, 24, 61, 124]));
    let report = check_dataset(&out).unwrap();
    assert!(report.is_ok(), "{report}");

    // Channel counts must still agree.
    let options = MergeOptions { channel_names: Some(vec!["T1".into(), "T2".into()]), overwrite: true, ..options };
    let err = merge_datasets(&inputs, &out, &options).unwrap_err().to_string();
    assert!(err.contains("has 1 channel(s)") && err.contains("tiny"), "{err}");
}

#[test]
fn refuses_existing_output_and_leaves_nothing_behind_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, out) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("out"));
    make_nnunet(&a, 1, 1);
    make_renumbered(&b);
    let inputs = [MergeInput::new(&a), MergeInput::new(&b)];

    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let err = merge_datasets(&inputs, &out, &MergeOptions::default()).unwrap_err();
    assert!(matches!(err, DatasetError::OutputExists { .. }), "{err}");
    assert!(err.to_string().contains("--overwrite"), "{err}");
    assert_eq!(std::fs::read_to_string(out.join("keep.txt")).unwrap(), "mine");

    // A label value b does not declare: the merge fails naming the file, OUT keeps its contents
    // and no temporary folder is left.
    write_labels(&b.join("labelsTr/case001.nii.gz"), SHAPE, geometry(), &[0, 9]);
    let options = MergeOptions { overwrite: true, threads: 1, ..MergeOptions::default() };
    let err = merge_datasets(&inputs, &out, &options).unwrap_err().to_string();
    assert!(err.contains("case001.nii.gz") && err.contains("value 9"), "{err}");
    assert_eq!(std::fs::read_to_string(out.join("keep.txt")).unwrap(), "mine");
    let entries: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(entries.len(), 3, "{entries:?}");

    // With the label fixed, --overwrite replaces OUT entirely.
    write_labels(&b.join("labelsTr/case001.nii.gz"), SHAPE, geometry(), &[0, 1]);
    merge_datasets(&inputs, &out, &options).unwrap();
    assert!(!out.join("keep.txt").exists() && out.join("dataset.json").is_file());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    // An empty OUT is fine without --overwrite.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    merge_datasets(&inputs, &empty, &MergeOptions::default()).unwrap();
}

#[test]
fn refuses_overlapping_output_bad_names_and_broken_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    make_nnunet(&a, 1, 1);
    make_renumbered(&b);
    let inputs = [MergeInput::new(&a), MergeInput::new(&b)];
    let options = MergeOptions { overwrite: true, ..MergeOptions::default() };
    for out in [a.clone(), a.join("merged"), dir.path().to_path_buf()] {
        let err = merge_datasets(&inputs, &out, &options).unwrap_err().to_string();
        assert!(err.contains("overlaps the input"), "{err}");
    }
    assert!(a.join("dataset.json").is_file() && !a.join("merged").exists());

    let out = dir.path().join("out");
    let bad = [MergeInput::named(&a, "a_b"), MergeInput::new(&b)];
    assert!(merge_datasets(&bad, &out, &options).unwrap_err().to_string().contains("'a_b'"));
    let twice = [MergeInput::named(&a, "x"), MergeInput::named(&b, "x")];
    assert!(merge_datasets(&twice, &out, &options).unwrap_err().to_string().contains("two inputs"));
    let same = [MergeInput::new(&a), MergeInput::new(a.join("dataset.json"))];
    assert!(merge_datasets(&same, &out, &options).unwrap_err().to_string().contains("given twice"));

    // A case with a missing label is a problem of the input, named with it.
    std::fs::remove_file(b.join("labelsTr/case001.nii.gz")).unwrap();
    let err = merge_datasets(&inputs, &out, &options).unwrap_err().to_string();
    assert!(err.contains("other numbering") && err.contains("case001") && err.contains("missing label"), "{err}");
    assert!(!out.exists());
}
