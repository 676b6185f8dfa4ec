//! End-to-end on phantoms: `spineseg train --cps --images DIR` (cross pseudo supervision, SSHSNet's
//! stage 1) preprocesses the unlabelled images, trains two networks, exports the first as a
//! model that `predict` runs, and resumes bit-identically (the CutMix boxes come from the
//! checkpointed step count). Without unlabelled images it says what is missing.

use spineseg_train::{load_manifest, training_record};
use std::path::Path;

mod support;
use support::{ok, spineseg, tiny_work, train, weights};

#[test]
fn cps_trains_two_networks_on_unlabelled_images_resumes_exactly_and_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let work = tiny_work(dir.path());
    let images = dir.path().join("phantom/imagesTr");
    let p = |path: &Path| path.to_str().unwrap().to_string();

    // No unlabelled pool yet: refused, saying what to give.
    let refused = spineseg(&[
        "train",
        &p(&work),
        "--out",
        &p(&dir.path().join("none")),
        "--cps",
        "--epochs",
        "1",
        "--iterations-per-epoch",
        "1",
        "--quiet",
    ]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("unlabelled"), "{stderr}");

    let model = dir.path().join("cps");
    let report = train(&work, &model, &["--cps", "--images", &p(&images)]);
    assert!(report.contains("finished: 2 of 2 epochs"), "{report}");
    let manifest = load_manifest(&model.join("model.json")).unwrap();
    assert_eq!(training_record(&manifest).unwrap().method, "cps");
    for file in ["model.bpk", "second/model.bpk", "second/optimizer.bpk", "cps_steps.json"] {
        assert!(model.join("training/checkpoint_last").join(file).is_file(), "{file}");
    }
    let steps = std::fs::read_to_string(model.join("training/checkpoint_last/cps_steps.json")).unwrap();
    assert!(steps.contains("\"steps\": 4") || steps.contains("\"steps\":4"), "{steps}");
    // The two networks start from different seeds and stay different.
    let first = weights(&model, &model.join("training/checkpoint_last/model.bpk"));
    let second = weights(&model, &model.join("training/checkpoint_last/second/model.bpk"));
    assert_ne!(first, second);

    // Stopped after one epoch and resumed: bit-identical to the uninterrupted run.
    let resumed = dir.path().join("cps_resumed");
    train(&work, &resumed, &["--cps", "--stop-after-epochs", "1"]);
    let report = ok(spineseg(&["train", &p(&work), "--out", &p(&resumed), "--resume", "--quiet"]));
    assert!(report.contains("finished: 2 of 2 epochs"), "{report}");
    for file in ["model.bpk", "second/model.bpk"] {
        let a = weights(&model, &model.join("training/checkpoint_last").join(file));
        let b = weights(&resumed, &resumed.join("training/checkpoint_last").join(file));
        assert_eq!(a, b, "{file} differs after resuming");
    }

    let pred = dir.path().join("pred");
    ok(spineseg(&["predict", "-i", &p(&images), "-o", &p(&pred), "-m", &p(&model)]));
    assert!(pred.join("phantom_000.nii.gz").is_file());
}

/// DeepLabv3+ on the plan's stages, supervised and as the two CPS networks: the model folder
/// names the kind and `predict` runs it.
#[test]
fn deeplabv3plus_trains_alone_and_in_cps_and_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let work = tiny_work(dir.path());
    let images = dir.path().join("phantom/imagesTr");
    let p = |path: &Path| path.to_str().unwrap().to_string();
    for (name, extra) in [
        ("supervised", vec!["--network", "deeplabv3plus"]),
        ("cps", vec!["--network", "deeplabv3plus", "--cps", "--images", &p(&images)]),
    ] {
        let model = dir.path().join(name);
        let report = train(&work, &model, &extra);
        assert!(report.contains("finished: 2 of 2 epochs"), "{report}");
        let manifest = load_manifest(&model.join("model.json")).unwrap();
        assert_eq!(manifest.network.kind(), "deeplabv3plus", "{name}");
        let pred = dir.path().join(format!("pred-{name}"));
        ok(spineseg(&["predict", "-i", &p(&images), "-o", &p(&pred), "-m", &p(&model)]));
        assert!(pred.join("phantom_000.nii.gz").is_file(), "{name}");
    }
    let conflicting = spineseg(&[
        "train",
        &p(&work),
        "--out",
        &p(&dir.path().join("x")),
        "--network",
        "deeplabv3plus",
        "--text-guided",
    ]);
    assert_eq!(conflicting.status.code(), Some(2), "clap refuses the combination");
}
