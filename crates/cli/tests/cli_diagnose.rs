//! End-to-end: disc findings on phantoms with synthetic gradings. `findings rois` cuts the discs
//! from the phantoms' masks, `findings train` trains both heads a few steps with a fold held out,
//! `evaluate-findings` scores the held-out fold, and `diagnose` writes findings.json, .csv,
//! report.txt and findings.png for one patient; bad inputs leave no output.

use std::path::Path;

mod support;
use support::{graded_phantoms, spineseg};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn rois_train_evaluate_and_diagnose_on_phantoms() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels, gradings) = graded_phantoms(dir.path());
    let rois = dir.path().join("rois");
    let out = spineseg(&["findings", "rois", "--images", s(&images), "--labels", s(&labels), "-o", s(&rois)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rois.join("rois.json")).unwrap()).unwrap();
    let found = index["entries"].as_array().unwrap().iter().filter(|e| e["block"].is_number()).count();
    // Six patients, their five lumbar discs (and maybe T12/L1) each.
    assert!(found >= 30, "{found} discs cut: {}", text(&out.stderr));

    let encoder = dir.path().join("encoder");
    spineseg_text::write_tiny_test_encoder(&encoder).unwrap();
    for head in ["visual", "text"] {
        let model = dir.path().join(format!("model-{head}"));
        let out = spineseg(&[
            "findings",
            "train",
            "--rois",
            s(&rois),
            "--gradings",
            s(&gradings),
            "--head",
            head,
            "--sequences",
            "t2",
            "--steps",
            "6",
            "--batch-size",
            "4",
            "--folds",
            "3",
            "--fold",
            "0",
            "--text-encoder",
            s(&encoder),
            "-o",
            s(&model),
        ]);
        assert!(out.status.success(), "{head}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(stdout.contains("thresholds:") && stdout.contains("held-out fold 0"), "{stdout}");
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(model.join("findings_model.json")).unwrap()).unwrap();
        assert_eq!(manifest["network"]["kind"], "disc_findings_cnn");
        assert_eq!(manifest["trained_sequences"], serde_json::json!(["t2"]));
        assert_eq!(manifest["prompts"].is_array(), head == "text");
        let heldout = model.join("heldout_findings.csv");
        let summary = dir.path().join(format!("summary-{head}.json"));
        let out = spineseg(&[
            "evaluate-findings",
            "--pred",
            s(&heldout),
            "--ref",
            s(&gradings),
            "-o",
            s(&summary),
            "--bootstrap",
            "50",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(summary.is_file());
    }

    // A saved fold model predicts its held-out patients again, from T2 alone.
    let given_t2 = dir.path().join("given-t2.csv");
    let out = spineseg(&[
        "findings",
        "predict",
        "--rois",
        s(&rois),
        "--gradings",
        s(&gradings),
        "-f",
        s(&dir.path().join("model-visual")),
        "--sequences",
        "t2",
        "--folds",
        "3",
        "--fold",
        "0",
        "-o",
        s(&given_t2),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let heldout = std::fs::read_to_string(dir.path().join("model-visual/heldout_findings.csv")).unwrap();
    let again = std::fs::read_to_string(&given_t2).unwrap();
    let cases = |csv: &str| -> Vec<String> {
        csv.lines().skip(1).map(|l| l.split(',').take(2).collect::<Vec<_>>().join(",")).collect()
    };
    assert_eq!(cases(&again), cases(&heldout), "the same held-out levels");

    // diagnose with the given segmentation (no segmentation model needed).
    let model = dir.path().join("model-text");
    let result = dir.path().join("diagnosis");
    let out = spineseg(&[
        "diagnose",
        "--t2",
        s(&images.join("12_t2.nii.gz")),
        "--t2-labels",
        s(&labels.join("12_t2.nii.gz")),
        "-f",
        s(&model),
        "--case",
        "12",
        "-o",
        s(&result),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("L4/L5:") && stdout.contains("Pfirrmann"), "{stdout}");
    for file in ["findings.json", "findings.csv", "report.txt", "findings.png"] {
        assert!(result.join(file).is_file(), "{file} missing");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(result.join("findings.json")).unwrap()).unwrap();
    let levels = json["levels"].as_array().unwrap();
    let l4l5 = levels.iter().find(|l| l["name"] == "L4/L5").expect("L4/L5 reported");
    assert_eq!(l4l5["found_on"], serde_json::json!(["t2"]));
    let p = l4l5["probabilities"]["findings"].as_array().unwrap();
    assert_eq!(p.len(), 5);
    // A level the phantom does not hold is reported missing, never guessed.
    let missing: Vec<_> = levels.iter().filter(|l| l["missing"].is_string()).collect();
    assert!(missing.iter().all(|l| l["probabilities"].is_null()));

    // The same CSV evaluates against the gradings (the patient's rows only).
    let out = spineseg(&["evaluate-findings", "--pred", s(&result.join("findings.csv")), "--ref", s(&gradings)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn diagnose_refuses_bad_inputs_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels, gradings) = graded_phantoms(dir.path());
    let rois = dir.path().join("rois");
    assert!(spineseg(&["findings", "rois", "--images", s(&images), "--labels", s(&labels), "-o", s(&rois)])
        .status
        .success());
    let model = dir.path().join("model");
    let out = spineseg(&[
        "findings",
        "train",
        "--rois",
        s(&rois),
        "--gradings",
        s(&gradings),
        "--head",
        "visual",
        "--steps",
        "2",
        "--batch-size",
        "4",
        "-o",
        s(&model),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let result = dir.path().join("out");
    let run = |args: &[&str]| {
        let mut all = vec!["diagnose", "-f", s(&model), "-o", s(&result)];
        all.extend_from_slice(args);
        let out = spineseg(&all);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out.stdout));
        assert!(!result.exists(), "{args:?} left output");
        let parent_entries: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!parent_entries.iter().any(|n| n.contains(".partial")), "{parent_entries:?}");
        text(&out.stderr)
    };
    // No image at all.
    assert!(run(&[]).contains("--t2"));
    // A missing file is named.
    let err = run(&["--t2", s(&dir.path().join("nope.nii.gz")), "--t2-labels", s(&labels.join("10_t2.nii.gz"))]);
    assert!(err.contains("nope.nii.gz"), "{err}");
    // An image without any disc in its segmentation.
    let empty = dir.path().join("empty.nii.gz");
    let mask = spineseg_io::read_labels(&labels.join("10_t2.nii.gz")).unwrap();
    let zeros = mask.map(|_| 0u16);
    spineseg_io::write_volume(&empty, &spineseg_io::AnyVolume::from(zeros)).unwrap();
    let err = run(&["--t2", s(&images.join("10_t2.nii.gz")), "--t2-labels", s(&empty)]);
    assert!(err.contains("no intervertebral disc"), "{err}");
    // T1 and T2 of two patients (the second in another scanner frame): refused.
    let moved_image = dir.path().join("other_t1.nii.gz");
    let moved_labels = dir.path().join("other_t1_labels.nii.gz");
    let mut image = spineseg_io::read_image(&images.join("11_t2.nii.gz")).unwrap();
    let mut other = spineseg_io::read_labels(&labels.join("11_t2.nii.gz")).unwrap();
    image.geometry.origin_mm[2] += 80.0;
    other.geometry.origin_mm[2] += 80.0;
    spineseg_io::write_volume(&moved_image, &spineseg_io::AnyVolume::from(image)).unwrap();
    spineseg_io::write_volume(&moved_labels, &spineseg_io::AnyVolume::from(other)).unwrap();
    let err = run(&[
        "--t2",
        s(&images.join("10_t2.nii.gz")),
        "--t2-labels",
        s(&labels.join("10_t2.nii.gz")),
        "--t1",
        s(&moved_image),
        "--t1-labels",
        s(&moved_labels),
    ]);
    assert!(err.contains("same patient"), "{err}");
    // A findings model folder without weights is named.
    std::fs::remove_file(model.join("weights.bpk")).unwrap();
    let err = run(&["--t2", s(&images.join("10_t2.nii.gz")), "--t2-labels", s(&labels.join("10_t2.nii.gz"))]);
    assert!(err.contains("weights.bpk"), "{err}");
}

#[test]
fn the_shipped_findings_model_loads_and_diagnoses() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/disc-findings");
    let dir = tempfile::tempdir().unwrap();
    let (images, labels, _) = graded_phantoms(dir.path());
    let result = dir.path().join("out");
    let out = spineseg(&[
        "diagnose",
        "--t2",
        s(&images.join("13_t2.nii.gz")),
        "--t2-labels",
        s(&labels.join("13_t2.nii.gz")),
        "-f",
        s(&shipped),
        "-o",
        s(&result),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(result.join("findings.json")).unwrap()).unwrap();
    // The shipped model knows the nine graded levels and uses its own thresholds.
    assert_eq!(json["levels"].as_array().unwrap().len(), 9);
    assert_eq!(json["thresholds"].as_object().unwrap().len(), 5);
    let assessed = json["levels"].as_array().unwrap().iter().filter(|l| l["probabilities"].is_object()).count();
    assert!(assessed >= 5, "{json}");
}
