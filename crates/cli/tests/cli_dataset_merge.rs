//! End-to-end: two phantom datasets, one renumbered to label only vertebrae and the canal with
//! its own values, merged by `spineseg dataset merge`, checked, planned, trained and predicted
//! with level assignment.

use spineseg_io::{read_labels, write_volume, AnyVolume, Label};
use std::path::Path;

mod support;
use support::{ok, spineseg, tiny_plan, train};

/// The renumbering of the second dataset: vertebrae T9..L5 (16..24) -> 1..9, sacrum (26) -> 10,
/// canal (61) -> 11; discs and posterior elements are not labelled (-> 0).
fn renumber(id: Label) -> Label {
    match id {
        16..=24 => id - 15,
        26 => 10,
        61 => 11,
        _ => 0,
    }
}

/// Rewrites a phantom dataset with [`renumber`]'s values; returns the original labels of case 0
/// as they should come back from the merge (ontology ids, discs and posterior elements gone).
fn renumber_dataset(root: &Path) -> Vec<Label> {
    let mut expected = Vec::new();
    for case in ["phantom_000", "phantom_001"] {
        let path = root.join(format!("labelsTr/{case}.nii.gz"));
        let labels = read_labels(&path).unwrap();
        if expected.is_empty() {
            expected = labels.data().iter().map(|&v| if renumber(v) == 0 { 0 } else { v }).collect();
        }
        write_volume(&path, &AnyVolume::from(labels.map(|v| renumber(*v)))).unwrap();
    }
    let names = ["T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "sacrum", "spinal canal"];
    let labels: Vec<String> = names.iter().enumerate().map(|(i, n)| format!("\"{n}\": {}", i + 1)).collect();
    std::fs::write(
        root.join("dataset.json"),
        format!(
            r#"{{"name": "bodies and canal", "channel_names": {{"0": "MRI"}},
                "labels": {{"background": 0, {}}}, "numTraining": 2, "file_ending": ".nii.gz"}}"#,
            labels.join(", ")
        ),
    )
    .unwrap();
    expected
}

#[test]
fn merged_phantoms_check_plan_and_train() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, merged) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("merged"));
    for (out, seed) in [(&a, "1"), (&b, "2")] {
        ok(spineseg(&["phantom", "--small", "--cases", "2", "--seed", seed, "--out", out.to_str().unwrap()]));
    }
    let expected = renumber_dataset(&b);
    let name_b = format!("bodies={}", b.display());
    let args = ["dataset", "merge", a.to_str().unwrap(), b.to_str().unwrap(), "--out", merged.to_str().unwrap()];
    let report = ok(spineseg(&[&args[..], &["--name", &name_b]].concat()));
    assert!(report.contains("merged 4 training and 0 test cases"), "{report}");
    assert!(
        report.contains("bodies: 2 training") && report.contains("spineseg-lumbar-phantom: 2 training"),
        "{report}"
    );
    assert!(report.contains("spinal canal = 61"), "{report}");

    // The renumbered labels are back on ontology ids.
    let back = read_labels(&merged.join("labelsTr/bodies_phantom_000.nii.gz")).unwrap();
    assert_eq!(back.data(), &expected[..]);
    let check = ok(spineseg(&["dataset", "check", merged.to_str().unwrap()]));
    assert!(check.contains("4 cases") && check.contains("result: OK"), "{check}");
    let sources: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(merged.join("sources.json")).unwrap()).unwrap();
    assert_eq!(sources["cases"]["bodies_phantom_001"]["original_case"], "phantom_001");
    assert_eq!(sources["cases"]["bodies_phantom_001"]["site"], "bodies");

    // Again without --overwrite: refused, saying how to replace it.
    let refused = spineseg(&args);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--overwrite"));
    // A --name for a folder that is not an input.
    let stray = spineseg(&[&args[..], &["--overwrite", "--name", "x=/nonexistent"]].concat());
    assert_eq!(stray.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&stray.stderr).contains("not one of the input datasets"));

    let work = dir.path().join("work");
    tiny_plan(&merged, &work);
    let model = dir.path().join("model");
    let report = train(&work, &model, &["--partial-labels"]);
    assert!(report.contains("finished: 2 of 2 epochs"), "{report}");
    let labels = std::fs::read_to_string(model.join("labels.json")).unwrap();
    assert!(labels.contains("spinal canal") && labels.contains("L4/L5"), "{labels}");

    // The merged model predicts with level assignment (on by default for vertebra and disc
    // classes): the mask, its level report beside it, one log line per case.
    let image = merged.join("imagesTr/bodies_phantom_000_0000.nii.gz");
    let out = dir.path().join("pred/case.nii.gz");
    let predicted = spineseg(&["predict", "-i", image.to_str().unwrap(), "-o", out.to_str().unwrap(), "-m", model.to_str().unwrap()]);
    let log = String::from_utf8_lossy(&predicted.stderr);
    assert!(predicted.status.success() && log.contains("level assignment on"), "{log}");
    assert!(log.contains("levels:"), "{log}");
    assert!(out.is_file());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("pred/case.levels.json")).unwrap()).unwrap();
    assert!(report["anchor"].is_string() && report["ambiguous"].is_boolean() && report["off_column"].is_u64(), "{report}");
}
