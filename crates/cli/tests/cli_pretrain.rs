//! End-to-end on phantoms: `spineseg pretrain` (FCMAE on the images of a folder and the fold's
//! training cases) writes an encoder folder that resumes exactly and that prediction refuses;
//! `spineseg train --encoder` starts a ConvNeXt V2 U-Net from it, records it, and predicts.

use spineseg_model::burn::tensor::Device;
use spineseg_model::{Network, NetworkConfig};
use spineseg_train::{load_manifest, training_record};
use std::path::Path;

mod support;
use support::{ok, spineseg, tiny_work, train};

fn pretrain(work: &Path, out: &Path, images: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "pretrain",
        work.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "2",
        "--iterations-per-epoch",
        "2",
        "--validation-batches",
        "1",
        "--seed",
        "3",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    ok(spineseg(&args))
}

/// The stem convolution's weights of the ConvNeXt V2 U-Net in a model folder.
fn stem_weights(model: &Path, file: &str) -> Vec<f32> {
    let manifest = load_manifest(&model.join("model.json")).unwrap();
    assert_eq!(manifest.network.kind(), "convnext_unet");
    let network = manifest.network.init(&Device::flex()).try_load_file(&model.join(file)).unwrap();
    let Network::ConvNeXtUNet(network) = network else { unreachable!() };
    let spineseg_model::ConvNd::D2(conv) = &network.encoder.stages[0].entry.conv else { panic!("2D") };
    conv.weight.val().into_data().try_to_vec::<f32>().unwrap()
}

#[test]
fn pretrain_then_train_from_the_encoder_then_predict() {
    let dir = tempfile::tempdir().unwrap();
    let work = tiny_work(dir.path());
    let images = dir.path().join("phantom/imagesTr");

    let encoder = dir.path().join("encoder");
    let report = pretrain(&work, &encoder, &images, &[]);
    assert!(report.contains("finished: 2 of 2 epochs"), "{report}");
    assert_eq!(std::fs::read_dir(work.join("unlabelled/2d")).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json")).count(), 3);
    let manifest = load_manifest(&encoder.join("model.json")).unwrap();
    assert!(matches!(manifest.network, NetworkConfig::ConvNeXtUNet(_)));
    let record = training_record(&manifest).unwrap();
    assert_eq!((record.method.as_str(), record.best_epoch), ("fcmae", 2), "the last epoch is exported");
    for picture in ["training/reconstruction.png", "training/reconstruction/epoch_0002.png", "training/progress.png"] {
        assert_eq!(&std::fs::read(encoder.join(picture)).unwrap()[..4], b"\x89PNG", "{picture}");
    }
    let log = std::fs::read_to_string(encoder.join("training/log.csv")).unwrap();
    let val_losses: Vec<f64> = log.lines().skip(1).map(|l| l.split(',').nth(2).unwrap().parse().unwrap()).collect();
    assert!(val_losses.iter().all(|l| l.is_finite() && *l > 0.0), "{log}");

    // Stopped after one epoch and resumed (the pool is already there): the same weights.
    let resumed = dir.path().join("encoder_resumed");
    pretrain(&work, &resumed, &images, &["--stop-after-epochs", "1"]);
    let report = ok(spineseg(&["pretrain", work.to_str().unwrap(), "--out", resumed.to_str().unwrap(), "--resume", "--quiet"]));
    assert!(report.contains("finished: 2 of 2 epochs"), "{report}");
    assert_eq!(stem_weights(&encoder, "weights.bpk"), stem_weights(&resumed, "weights.bpk"));

    // An encoder folder is not a segmentation model.
    let refused = spineseg(&["predict", "-i", images.to_str().unwrap(), "-o", dir.path().join("p0").to_str().unwrap(), "-m", encoder.to_str().unwrap()]);
    assert_ne!(refused.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("pretrained encoder") && stderr.contains("--encoder"), "{stderr}");

    // Training from the encoder: with a negligible learning rate the trained stem is the
    // pretrained one; from scratch it is not. The model records the encoder.
    let from_encoder = dir.path().join("from_encoder");
    train(&work, &from_encoder, &["--encoder", encoder.to_str().unwrap(), "--optimizer", "adamw", "--lr", "1e-12"]);
    let scratch = dir.path().join("scratch");
    train(&work, &scratch, &["--encoder-kind", "convnext-v2", "--drop-path", "0.1", "--optimizer", "adamw", "--lr", "1e-12"]);
    let scratch_manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(scratch.join("model.json")).unwrap()).unwrap();
    assert_eq!(scratch_manifest["network"]["config"]["encoder"]["drop_path"], 0.1, "{}", scratch_manifest["network"]);
    let pretrained = stem_weights(&encoder, "weights.bpk");
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
    assert!(close(&stem_weights(&from_encoder, "weights.bpk"), &pretrained));
    assert!(!close(&stem_weights(&scratch, "weights.bpk"), &pretrained));
    let record = training_record(&load_manifest(&from_encoder.join("model.json")).unwrap()).unwrap();
    let encoder_setting = &record.method_settings["encoder"];
    assert_eq!(encoder_setting["kind"], "convnext_v2", "{}", record.method_settings);
    assert_eq!(encoder_setting["pretrained"]["weights_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(encoder_setting["pretrained"]["method"], "fcmae");

    let pred = dir.path().join("pred");
    ok(spineseg(&["predict", "-i", images.to_str().unwrap(), "-o", pred.to_str().unwrap(), "-m", from_encoder.to_str().unwrap()]));
    assert!(pred.join("phantom_000.nii.gz").is_file());
}

#[test]
fn an_encoder_is_refused_where_it_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let work = tiny_work(dir.path());
    let not_an_encoder = dir.path().join("plain");
    train(&work, &not_an_encoder, &[]);
    let refused = spineseg(&[
        "train",
        work.to_str().unwrap(),
        "--out",
        dir.path().join("m").to_str().unwrap(),
        "--encoder",
        not_an_encoder.to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("plain_conv_unet") && stderr.contains("model.json"), "{stderr}");
    let missing = spineseg(&["train", work.to_str().unwrap(), "--out", dir.path().join("m2").to_str().unwrap(), "--encoder", "/nonexistent"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/model.json"));
    let conflicting = spineseg(&["train", work.to_str().unwrap(), "--out", dir.path().join("m3").to_str().unwrap(), "--encoder-kind", "convnext-v2", "--text-guided"]);
    assert_eq!(conflicting.status.code(), Some(2), "clap refuses the combination");
}

/// The disc-findings classifier starts from the same encoder folder: `findings train --encoder`
/// takes its first stages (all three of the tiny plan's divide the 48 x 64 ROI), records the
/// folder and its weights' SHA-256, and the saved model predicts.
#[test]
fn the_findings_classifier_starts_from_a_pretrained_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let work = tiny_work(dir.path());
    let encoder = dir.path().join("encoder");
    pretrain(&work, &encoder, &dir.path().join("phantom/imagesTr"), &[]);
    let graded = dir.path().join("graded");
    let (images, labels, gradings) = support::graded_phantoms(&graded);
    let p = |path: &Path| path.to_str().unwrap().to_string();
    let rois = dir.path().join("rois");
    ok(spineseg(&["findings", "rois", "--images", &p(&images), "--labels", &p(&labels), "-o", &p(&rois)]));
    let train_findings = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "findings".to_string(),
            "train".into(),
            "--rois".into(),
            p(&rois),
            "--gradings".into(),
            p(&gradings),
            "--head".into(),
            "visual".into(),
            "--sequences".into(),
            "t2".into(),
            "--steps".into(),
            "2".into(),
            "--batch-size".into(),
            "4".into(),
            "--folds".into(),
            "3".into(),
            "--fold".into(),
            "0".into(),
            "-o".into(),
            p(out),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        spineseg(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let model = dir.path().join("findings");
    ok(train_findings(&model, &["--encoder", &p(&encoder)]));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("findings_model.json")).unwrap()).unwrap();
    let config = &manifest["network"]["config"];
    assert_eq!(config["encoder"]["kind"], "convnext_v2", "{config}");
    assert_eq!(config["encoder"]["features_per_stage"], serde_json::json!([4, 8, 16]), "{config}");
    let pretrained = &manifest["training"]["settings"]["pretrained_encoder"];
    assert_eq!(pretrained["weights_sha256"].as_str().unwrap().len(), 64, "{pretrained}");
    assert_eq!(pretrained["method"], "fcmae");

    // Two AdamW steps (lr 1e-3) move a weight by about 2e-3 at most: the trained stem is still
    // the pretrained one, where a fresh stem (normal, std 0.02) would be about 0.02 away.
    let network: spineseg_model::DiscFindingsNetConfig = serde_json::from_value(config.clone()).unwrap();
    let net = network.init(&Device::flex()).try_load_file(&model.join("weights.bpk")).unwrap();
    let spineseg_model::ConvNd::D2(conv) = &net.convnext_encoder.as_ref().unwrap().stages[0].entry.conv else {
        panic!("2D")
    };
    let trained: Vec<f32> = conv.weight.val().into_data().try_to_vec::<f32>().unwrap();
    let start = stem_weights(&encoder, "weights.bpk");
    let mean_difference = trained.iter().zip(&start).map(|(a, b)| (a - b).abs()).sum::<f32>() / start.len() as f32;
    assert!(mean_difference < 3e-3, "the stem moved {mean_difference} on average");

    let csv = dir.path().join("findings.csv");
    ok(spineseg(&[
        "findings", "predict", "--rois", &p(&rois), "--gradings", &p(&gradings), "-f", &p(&model), "--folds", "3", "--fold", "0", "-o",
        &p(&csv),
    ]));
    assert!(std::fs::read_to_string(&csv).unwrap().lines().count() > 1);

    // A segmentation model folder is not an encoder: refused before any training, nothing written.
    let plain = dir.path().join("plain");
    train(&work, &plain, &[]);
    let refused_out = dir.path().join("refused");
    let refused = train_findings(&refused_out, &["--encoder", &p(&plain)]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("plain_conv_unet") && stderr.contains("model.json"), "{stderr}");
    assert!(!refused_out.exists());
}
