//! End-to-end tests of `spineseg evaluate-findings` on tiny findings CSVs written here, and of
//! `findings train --image-text-pretrain-steps` on graded phantoms.

use std::path::Path;

mod support;
use support::{graded_phantoms, spineseg};

const HEADER: &str = "case,level,found,p_disc_herniation,p_disc_narrowing,p_disc_bulging,p_spondylolisthesis,p_modic_change,disc_herniation,disc_narrowing,disc_bulging,spondylolisthesis,modic_change,pfirrmann_grade,p_pfirrmann_1,p_pfirrmann_2,p_pfirrmann_3,p_pfirrmann_4,p_pfirrmann_5";

/// A reference with the 0/1 columns and Pfirrmann grades only (no `found`, no `p_`): herniation
/// at three of six discs, bulging at two.
const REFERENCE: &str =
    "case,level,disc_herniation,disc_narrowing,disc_bulging,spondylolisthesis,modic_change,pfirrmann_grade
1,L4/L5,1,0,1,0,0,3
1,L5/S1,0,0,0,0,0,2
2,L4/L5,1,0,0,0,0,4
2,L5/S1,0,0,1,0,0,3
3,L4L5,1,0,0,0,0,3
3,L5S1,0,0,0,0,0,2
";

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// A prediction row: herniation probability `p` and decision `h`, bulging decision `b`, grade `g`.
fn row(case: &str, level: &str, p: f32, h: u8, b: u8, g: u8) -> String {
    format!("{case},{level},1,{p},0.1,0.2,0.0,0.0,{h},0,{b},0,0,{g},0.2,0.2,0.2,0.2,0.2")
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = spineseg(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn evaluate_findings_prints_the_table_and_writes_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let reference = write(dir.path(), "ref.csv", REFERENCE);
    // Herniation: case 1 L4/L5 hit, case 2 L4/L5 missed, case 1 L5/S1 a false positive, case 3
    // L4/L5 reported not found (excluded): tp 1, fn 1, fp 1, tn 2 over 5 matched discs.
    let pred_text = [
        HEADER.to_string(),
        row("1", "L4/L5", 0.9, 1, 1, 3),
        row("1", "L5/S1", 0.7, 1, 0, 2),
        row("2", "L4/L5", 0.6, 0, 0, 4),
        row("2", "L5/S1", 0.2, 0, 1, 3),
        "3,L4/L5,0,,,,,,,,,,,,,,,,".to_string(),
        row("3", "L5/S1", 0.1, 0, 0, 3),
        row("3", "L3/L4", 0.1, 0, 0, 3),
    ]
    .join("\n");
    let pred = write(dir.path(), "pred.csv", &pred_text);
    let summary = dir.path().join("summary.json");
    let (ok, stdout, stderr) = run(&[
        "evaluate-findings",
        "--pred",
        &pred,
        "--ref",
        &reference,
        "-o",
        summary.to_str().unwrap(),
        "--bootstrap",
        "200",
        "--seed",
        "4",
    ]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stderr.contains("findings CSV, 6 rows"), "{stderr}");
    let herniation = stdout.lines().find(|l| l.starts_with("disc herniation")).unwrap_or_else(|| panic!("{stdout}"));
    let fields: Vec<&str> = herniation.split_whitespace().collect();
    // name (2 words), positives 2, negatives 3, recall 0.5, FPR 1/3, precision 0.5, AUC: positives
    // 0.9, 0.6 against negatives 0.7, 0.2, 0.1: 0.9 beats 3, 0.6 beats 2 -> 5/6.
    assert_eq!(&fields[2..4], ["2", "3"], "{herniation}");
    assert_eq!(fields[4], "0.500", "{herniation}");
    assert_eq!(fields[7], "0.333", "{herniation}");
    assert_eq!(fields[10], "0.500", "{herniation}");
    assert_eq!(fields[13], "0.833", "{herniation}");
    assert!(stdout.contains("reported not found 1"), "{stdout}");
    assert!(stdout.contains("predicted levels without a reference: 1"), "{stdout}");
    // Pfirrmann: 3, 2, 4, 3, 3 against 3, 2, 4, 3, 2 -> 4 of 5.
    assert!(stdout.lines().any(|l| l.starts_with("Pfirrmann grade") && l.contains("accuracy 0.800")), "{stdout}");

    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let h = &json["overall"]["findings"][0];
    assert_eq!(h["finding"], "disc_herniation");
    assert_eq!(h["recall"]["value"], 0.5);
    assert!((h["auc"]["value"].as_f64().unwrap() - 5.0 / 6.0).abs() < 1e-12);
    assert!(json["overall"]["findings"][1]["recall"]["value"].is_null(), "no narrowing: recall undefined");
    assert_eq!(json["counts"]["matched"], 5);
    assert_eq!(json["counts"]["missing"], 1);
    assert_eq!(json["n_bootstrap"], 200);
    assert_eq!(json["per_level"][0]["level"], "L4/L5");

    // The same seed gives the same summary; the reference against itself is perfect.
    let again = dir.path().join("again.json");
    let (ok, _, stderr) = run(&[
        "evaluate-findings",
        "--pred",
        &pred,
        "--ref",
        &reference,
        "-o",
        again.to_str().unwrap(),
        "--bootstrap",
        "200",
        "--seed",
        "4",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(std::fs::read(&summary).unwrap(), std::fs::read(&again).unwrap());
    let (ok, stdout, stderr) =
        run(&["evaluate-findings", "--pred", &reference, "--ref", &reference, "--bootstrap", "0"]);
    assert!(ok, "{stderr}");
    let herniation = stdout.lines().find(|l| l.starts_with("disc herniation")).unwrap();
    assert!(herniation.contains("1.000 [n/a]") && herniation.contains("0.000 [n/a]"), "{herniation}");
}

#[test]
fn bad_inputs_name_the_file_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let reference = write(dir.path(), "ref.csv", REFERENCE);
    // The prediction lacks the modic_change column.
    let broken = HEADER.replace(",modic_change,", ",");
    let pred = write(dir.path(), "broken_pred.csv", &format!("{broken}\n"));
    let summary = dir.path().join("summary.json");
    let (ok, _, stderr) =
        run(&["evaluate-findings", "--pred", &pred, "--ref", &reference, "-o", summary.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("broken_pred.csv") && stderr.contains("modic_change"), "{stderr}");
    assert!(!summary.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "nothing else written");

    // A reference of neither format, and a bad cell with its line and column.
    let other = write(dir.path(), "other.csv", "a,b\n1,2\n");
    let good_pred = write(dir.path(), "pred.csv", &format!("{HEADER}\n{}\n", row("1", "L4/L5", 0.9, 1, 1, 3)));
    let (ok, _, stderr) = run(&["evaluate-findings", "--pred", &good_pred, "--ref", &other]);
    assert!(!ok && stderr.contains("other.csv"), "{stderr}");
    let bad_cell = write(dir.path(), "bad_ref.csv", &REFERENCE.replace("2,L5/S1,0,0,1,0,0,3", "2,L5/S1,0,0,7,0,0,3"));
    let (ok, _, stderr) =
        run(&["evaluate-findings", "--pred", &good_pred, "--ref", &bad_cell, "-o", summary.to_str().unwrap()]);
    assert!(
        !ok && stderr.contains("bad_ref.csv") && stderr.contains("line 5") && stderr.contains("disc_bulging"),
        "{stderr}"
    );
    assert!(!summary.exists());
}

#[test]
fn image_text_pretraining_runs_before_the_supervised_steps_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels, gradings) = graded_phantoms(dir.path());
    let p = |path: &Path| path.to_str().unwrap().to_string();
    let rois = dir.path().join("rois");
    let (ok, _, stderr) = run(&["findings", "rois", "--images", &p(&images), "--labels", &p(&labels), "-o", &p(&rois)]);
    assert!(ok, "{stderr}");
    let encoder = dir.path().join("encoder");
    spineseg_text::write_tiny_test_encoder(&encoder).unwrap();
    let model = dir.path().join("model");
    let train = |head: &str, out: &Path| {
        run(&[
            "findings",
            "train",
            "--rois",
            &p(&rois),
            "--gradings",
            &p(&gradings),
            "--head",
            head,
            "--sequences",
            "t2",
            "--steps",
            "4",
            "--image-text-pretrain-steps",
            "5",
            "--batch-size",
            "4",
            "--folds",
            "3",
            "--fold",
            "0",
            "--text-encoder",
            &p(&encoder),
            "-o",
            &p(out),
        ])
    };
    let (ok, stdout, stderr) = train("text", &model);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("distinct report sentences") && stdout.contains("Pfirrmann grade"), "{stdout}");
    assert!(stderr.contains("image-text pretraining step     5/5") && stderr.contains("step     4/4"), "{stderr}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("findings_model.json")).unwrap()).unwrap();
    let record = &manifest["training"]["image_text_pretraining"];
    assert_eq!(record["steps"], 5, "{record}");
    assert!(record["final_loss"].as_f64().is_some_and(f64::is_finite), "{record}");
    assert!(record["pairs"].as_u64().unwrap() > 0 && record["distinct_sentences"].as_u64().unwrap() > 1, "{record}");
    assert!(model.join("heldout_findings.csv").is_file());

    // A visual head has no text side: refused before any work, nothing written.
    let visual = dir.path().join("model-visual");
    let (ok, _, stderr) = train("visual", &visual);
    assert!(!ok && stderr.contains("--head text"), "{stderr}");
    assert!(!visual.exists());
}
