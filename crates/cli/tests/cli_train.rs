//! End-to-end: phantom -> plan (shrunk to a tiny network) -> train -> model folder; an
//! interrupted and resumed run gives the same weights as an uninterrupted one.

use spineseg_train::checkpoint::load_network;
use spineseg_train::{load_manifest, training_record};
use std::path::Path;

mod support;
use support::{ok, spineseg, tiny_work, train, weights};


#[test]
fn train_writes_a_model_folder_and_resume_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let work = tiny_work(dir.path());

    let a = dir.path().join("model_a");
    let report = train(&work, &a, &[]);
    assert!(report.contains("finished: 2 of 2 epochs"), "{report}");
    for name in ["model.json", "plans.json", "labels.json", "weights.bpk", "training/splits_final.json"] {
        assert!(a.join(name).is_file(), "{name} missing");
    }
    let manifest = load_manifest(&a.join("model.json")).unwrap();
    let unet = manifest.network.plain_conv_unet().expect("the trainer trains a plain U-Net");
    assert_eq!(manifest.weights, "weights.bpk");
    let record = training_record(&manifest).expect("the trainer should record its run");
    assert_eq!((record.epochs_done, record.iterations_per_epoch, record.seed), (2, 2, 5));
    assert_eq!(unet.features_per_stage, vec![4, 8, 16]);
    let log = std::fs::read_to_string(a.join("training/log.csv")).unwrap();
    assert_eq!(log.lines().count(), 3, "{log}");
    assert!(log.starts_with("epoch,train_loss,val_loss,pseudo_dice_mean,ema_pseudo_dice,"), "{log}");
    assert_eq!(&std::fs::read(a.join("training/progress.png")).unwrap()[..4], b"\x89PNG");
    assert!(work.join("splits_final.json").is_file());
    // weights.bpk holds the best checkpoint's weights.
    let best = weights(&a, &a.join("training/checkpoint_best/model.bpk"));
    assert_eq!(weights(&a, &a.join("weights.bpk")), best);

    // The same run, stopped after epoch 1 and resumed, ends with bit-identical weights.
    let b = dir.path().join("model_b");
    let report = train(&work, &b, &["--stop-after-epochs", "1"]);
    assert!(report.contains("1 of 2 epochs"), "{report}");
    // A second run into the same folder without --resume is refused.
    let refused = spineseg(&["train", work.to_str().unwrap(), "--out", b.to_str().unwrap(), "--epochs", "2"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--resume"));
    let report = ok(spineseg(&["train", work.to_str().unwrap(), "--out", b.to_str().unwrap(), "--resume", "--quiet"]));
    assert!(report.contains("finished: 2 of 2 epochs"), "{report}");
    let last_a = weights(&a, &a.join("training/checkpoint_last/model.bpk"));
    let last_b = weights(&b, &b.join("training/checkpoint_last/model.bpk"));
    assert_eq!(last_a, last_b, "resumed weights differ from the uninterrupted run's");
    // Losses and Dice agree too (only the timing columns may differ).
    let columns = |log: &str| -> Vec<Vec<String>> {
        log.lines().map(|l| l.split(',').take(5).map(String::from).collect()).collect()
    };
    assert_eq!(columns(&log), columns(&std::fs::read_to_string(b.join("training/log.csv")).unwrap()));
}

#[test]
fn train_errors_name_the_missing_path() {
    let dir = tempfile::tempdir().unwrap();
    let out = spineseg(&["train", dir.path().to_str().unwrap(), "--out", dir.path().join("m").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("plans.json"), "{err}");

    let work = tiny_work(dir.path());
    std::fs::remove_dir_all(work.join("preprocessed/2d")).unwrap();
    let out = spineseg(&["train", work.to_str().unwrap(), "--out", dir.path().join("m").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("preprocessed/2d"), "{err}");
}

#[test]
fn fast_kernels_and_burn_layers_train_the_same_network() {
    // Same seed, same data: the fast CPU kernels and burn's reference layers give the same losses
    // and (up to f32 rounding accumulated over the steps) the same weights.
    let dir = tempfile::tempdir().unwrap();
    let work = tiny_work(dir.path());
    let fast = dir.path().join("fast");
    let reference = dir.path().join("reference");
    train(&work, &fast, &[]);
    train(&work, &reference, &["--reference-layers"]);
    let losses = |model: &Path| -> Vec<f64> {
        let log = std::fs::read_to_string(model.join("training/log.csv")).unwrap();
        log.lines().skip(1).flat_map(|l| l.split(',').skip(1).take(2).map(|v| v.parse::<f64>().unwrap()).collect::<Vec<_>>()).collect()
    };
    let (a, b) = (losses(&fast), losses(&reference));
    assert_eq!(a.len(), 4);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-3 * y.abs().max(1.0), "losses differ: {a:?} vs {b:?}");
    }
    let wa = weights(&fast, &fast.join("training/checkpoint_last/model.bpk"));
    let wb = weights(&reference, &reference.join("training/checkpoint_last/model.bpk"));
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (ta, tb) in wa.iter().zip(&wb) {
        for (x, y) in ta.iter().zip(tb) {
            diff += (*x as f64 - *y as f64).powi(2);
            norm += (*y as f64).powi(2);
        }
    }
    assert!((diff / norm).sqrt() < 1e-3, "weights differ: relative L2 {}", (diff / norm).sqrt());
}

#[test]
fn plan_caps_widths_and_sets_the_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("phantom");
    let work = dir.path().join("work");
    ok(spineseg(&["phantom", "--small", "--cases", "2", "--seed", "1", "--out", data.to_str().unwrap()]));
    let (d, w) = (data.to_str().unwrap(), work.to_str().unwrap());
    let args = ["plan", d, "--out", w, "--no-preprocess", "--base-features", "4", "--max-features", "8", "--batch-size", "3"];
    ok(spineseg(&args));
    let plan: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(work.join("plans.json")).unwrap()).unwrap();
    for (name, config) in plan["configurations"].as_object().unwrap() {
        assert_eq!(config["batch_size"], 3, "{name}");
        let widths: Vec<u64> = config["network"]["features_per_stage"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert_eq!(widths[0], 4, "{name}");
        assert!(widths.iter().all(|&f| f <= 8) && widths.contains(&8), "{name}: {widths:?}");
    }
    let refused = spineseg(&["plan", d, "--out", w, "--no-preprocess", "--max-features", "0"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--max-features"));
}

fn log_lines(model: &Path) -> Vec<String> {
    // Columns after the epoch number and before the timing ones: losses and Dice.
    let log = std::fs::read_to_string(model.join("training/log.csv")).unwrap();
    log.lines().skip(1).map(|l| l.split(',').skip(1).take(3).collect::<Vec<_>>().join(",")).collect()
}

#[test]
fn partial_labels_change_training_only_where_a_case_lacks_a_structure_kind() {
    let dir = tempfile::tempdir().unwrap();
    // Every phantom case labels every kind: partial labels by kind compute exactly the plain
    // loss. (The default rule, by labelled range, differs here: the phantoms show different
    // levels, see the next test.)
    let work = tiny_work(dir.path());
    let plain = dir.path().join("plain");
    let partial = dir.path().join("partial");
    train(&work, &plain, &[]);
    train(&work, &partial, &["--partial-labels", "--partial-label-rule", "by-kind"]);
    assert_eq!(log_lines(&plain), log_lines(&partial));
    let state = std::fs::read_to_string(partial.join("training/checkpoint_last/state.json")).unwrap();
    assert!(state.contains("\"partial_labels\": true") || state.contains("\"partial_labels\":true"), "{state}");

    // Erase the discs (ontology ids >= 100) from two of the three cases, as in lumbar-real's
    // vertebral-body cases: now the masked loss differs from one that teaches discs as background.
    let data = dir.path().join("phantom");
    for case in ["phantom_000", "phantom_001"] {
        let path = data.join(format!("labelsTr/{case}.nii.gz"));
        let mut labels = spineseg_io::read_labels(&path).unwrap();
        for v in labels.data_mut() {
            if *v >= 100 {
                *v = 0;
            }
        }
        spineseg_io::write_volume(&path, &spineseg_io::AnyVolume::from(labels)).unwrap();
    }
    let work = dir.path().join("work");
    std::fs::remove_dir_all(work.join("preprocessed")).unwrap();
    let plan_backup = std::fs::read(work.join("plans.json")).unwrap();
    ok(spineseg(&["plan", data.to_str().unwrap(), "--out", work.to_str().unwrap(), "--configurations", "2d"]));
    std::fs::write(work.join("plans.json"), plan_backup).unwrap();
    let plain = dir.path().join("plain_erased");
    let partial = dir.path().join("partial_erased");
    train(&work, &plain, &[]);
    train(&work, &partial, &["--partial-labels", "--partial-label-rule", "by-kind"]);
    assert_ne!(log_lines(&plain), log_lines(&partial));
}

#[test]
fn partial_labels_by_range_and_declared_annotations() {
    let dir = tempfile::tempdir().unwrap();
    // The phantoms show different runs of levels, so by labelled range each case leaves the
    // levels outside its run unannotated and the loss differs from the plain one.
    let work = tiny_work(dir.path());
    let plain = dir.path().join("plain");
    let by_range = dir.path().join("by_range");
    train(&work, &plain, &[]);
    train(&work, &by_range, &["--partial-labels", "--partial-label-rule", "by-range"]);
    assert_ne!(log_lines(&plain), log_lines(&by_range));
    let state = std::fs::read_to_string(by_range.join("training/checkpoint_last/state.json")).unwrap();
    assert!(state.contains("\"partial_label_rule\": \"by_labelled_range\""), "{state}");
    let state = std::fs::read_to_string(plain.join("training/checkpoint_last/state.json")).unwrap();
    assert!(!state.contains("partial_label_rule"), "{state}");

    // A dataset that declares every structure annotated (a phantom labels all it shows): the
    // declaration replaces the rule and the loss is the plain one again.
    let data = dir.path().join("phantom");
    std::fs::write(
        data.join("annotations.json"),
        r#"{"default": ["vertebrae", "discs", "sacrum", "spinal canal", "posterior elements"]}"#,
    )
    .unwrap();
    std::fs::remove_dir_all(work.join("preprocessed")).unwrap();
    let plan_backup = std::fs::read(work.join("plans.json")).unwrap();
    ok(spineseg(&["plan", data.to_str().unwrap(), "--out", work.to_str().unwrap(), "--configurations", "2d"]));
    std::fs::write(work.join("plans.json"), plan_backup).unwrap();
    let declared = dir.path().join("declared");
    train(&work, &declared, &["--partial-labels"]);
    assert_eq!(log_lines(&plain), log_lines(&declared));

    // A declaration naming a case the dataset lacks stops planning with the file and the entry.
    std::fs::write(data.join("annotations.json"), r#"{"cases": {"phantom_999": ["L1"]}}"#).unwrap();
    let refused = spineseg(&["plan", data.to_str().unwrap(), "--out", dir.path().join("w2").to_str().unwrap(), "--configurations", "2d"]);
    assert_ne!(refused.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("annotations.json") && stderr.contains("phantom_999"), "{stderr}");

    // The rule needs --partial-labels.
    let refused = spineseg(&["train", work.to_str().unwrap(), "--out", dir.path().join("m").to_str().unwrap(), "--partial-label-rule", "by-kind"]);
    assert_eq!(refused.status.code(), Some(2));
}

#[test]
fn plan_train_predict_evaluate_end_to_end() {
    // The whole pipeline on phantoms through the CLI: plan (in tiny_work), a few training steps,
    // prediction of the raw images folder, evaluation against the raw labels.
    let dir = tempfile::tempdir().unwrap();
    let work = tiny_work(dir.path());
    let model = dir.path().join("model");
    train(&work, &model, &[]);
    let data = dir.path().join("phantom");
    let pred = dir.path().join("pred");
    let eval = dir.path().join("eval");
    let predicted = spineseg(&[
        "predict",
        "-i",
        data.join("imagesTr").to_str().unwrap(),
        "-o",
        pred.to_str().unwrap(),
        "-m",
        model.to_str().unwrap(),
    ]);
    ok(predicted);
    for case in ["phantom_000", "phantom_001", "phantom_002"] {
        assert!(pred.join(format!("{case}.nii.gz")).is_file(), "{case} not predicted");
    }
    ok(spineseg(&[
        "evaluate",
        "--pred",
        pred.to_str().unwrap(),
        "--ref",
        data.join("labelsTr").to_str().unwrap(),
        "--out",
        eval.to_str().unwrap(),
    ]));
    let csv = std::fs::read_to_string(eval.join("metrics.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert!(rows.iter().any(|r| r.starts_with("phantom_002,")), "{csv}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval.join("summary.json")).unwrap()).unwrap();
    assert!(summary.is_object(), "{summary}");
}

#[test]
fn text_guided_training_resumes_exactly_and_structures_filter_its_prediction() {
    let dir = tempfile::tempdir().unwrap();
    let work = tiny_work(dir.path());
    let encoder = dir.path().join("encoder");
    spineseg_text::write_tiny_test_encoder(&encoder).unwrap();
    let encoder = encoder.to_str().unwrap();

    let a = dir.path().join("text_a");
    let report = train(&work, &a, &["--text-guided", "--text-encoder", encoder]);
    assert!(report.contains("finished: 2 of 2 epochs"), "{report}");
    let manifest = load_manifest(&a.join("model.json")).unwrap();
    let unet = manifest.network.plain_conv_unet().expect("the trainer trains a plain U-Net");
    let text = unet.text_guidance.clone().expect("model.json records the text guidance");
    let prompts = spineseg_infer::model_folder::PromptEmbeddings::load(&a.join("prompt_embeddings.json")).unwrap();
    assert_eq!((text.text_dim, prompts.classes.len()), (prompts.dim, unet.num_classes));
    // The frozen class embeddings travel inside the weights, unchanged by training.
    let network = load_network(unet, &a.join("weights.bpk")).unwrap();
    let stored = network.text_fusion.as_ref().unwrap().class_embeddings.val().into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(stored, prompts.matrix().0);

    // Stopped after epoch 1 and resumed (settings from the checkpoint, no encoder needed):
    // bit-identical to the uninterrupted run.
    let b = dir.path().join("text_b");
    train(&work, &b, &["--text-guided", "--text-encoder", encoder, "--stop-after-epochs", "1"]);
    let report = ok(spineseg(&["train", work.to_str().unwrap(), "--out", b.to_str().unwrap(), "--resume", "--quiet"]));
    assert!(report.contains("finished: 2 of 2 epochs"), "{report}");
    assert_eq!(
        weights(&a, &a.join("training/checkpoint_last/model.bpk")),
        weights(&b, &b.join("training/checkpoint_last/model.bpk")),
        "resumed text-guided weights differ"
    );

    // Prediction needs no encoder; --structures keeps only the named structure.
    let image = dir.path().join("phantom/imagesTr/phantom_000_0000.nii.gz");
    let all = dir.path().join("all.nii.gz");
    ok(spineseg(&["predict", "-i", image.to_str().unwrap(), "-o", all.to_str().unwrap(), "-m", a.to_str().unwrap()]));
    let all = spineseg_io::read_labels(&all).unwrap();
    let target = support::most_frequent_structure(all.data());
    let name = spineseg_anatomy::Ontology::standard().get(spineseg_anatomy::StructureId(target)).unwrap().display_name.clone();
    let one = dir.path().join("one.nii.gz");
    let args = ["predict", "-i", image.to_str().unwrap(), "-o", one.to_str().unwrap(), "-m", a.to_str().unwrap()];
    ok(spineseg(&[&args[..], &["--structures", &name]].concat()));
    let one = spineseg_io::read_labels(&one).unwrap();
    support::assert_only_structure_kept(all.data(), one.data(), target);

    // prompt_embeddings.json only feeds a new training run (which writes it first); prediction
    // takes the vectors from the weights, so a copy of the folder without it, or with it
    // corrupt, or with one class less than the plan, predicts the same mask.
    let spoilt: [(&str, Option<&str>); 3] = [
        ("no_prompts", None),
        ("corrupt_prompts", Some("{ \"dim\": 8, \"classes\": [")),
        ("short_prompts", Some("{ \"encoder\": null, \"dim\": 2, \"classes\": [] }")),
    ];
    for (name, text) in spoilt {
        let copy = dir.path().join(name);
        std::fs::create_dir_all(&copy).unwrap();
        for entry in std::fs::read_dir(&a).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() && !path.ends_with("prompt_embeddings.json") {
                std::fs::copy(&path, copy.join(path.file_name().unwrap())).unwrap();
            }
        }
        if let Some(text) = text {
            std::fs::write(copy.join("prompt_embeddings.json"), text).unwrap();
        }
        let out = dir.path().join(format!("{name}.nii.gz"));
        let (i, o, m) = (image.to_str().unwrap(), out.to_str().unwrap(), copy.to_str().unwrap());
        ok(spineseg(&["predict", "-i", i, "-o", o, "-m", m]));
        assert_eq!(spineseg_io::read_labels(&out).unwrap().data(), all.data(), "{name}");
    }
}

#[test]
fn non_finite_losses_stop_the_run_or_are_skipped_and_non_finite_voxels_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let work = tiny_work(dir.path());
    let w = work.to_str().unwrap();
    // A learning rate that makes the weights overflow after the first step.
    let diverging = ["--optimizer", "adamw", "--lr", "1e30", "--epochs", "2", "--iterations-per-epoch", "3", "--quiet"];
    let stopped = dir.path().join("stopped");
    let out = spineseg(&[&["train", w, "--out", stopped.to_str().unwrap()][..], &diverging].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("epoch 1, step ") && err.contains("not finite") && err.contains("--skip-non-finite-steps"), "{err}");
    assert!(!stopped.join("model.json").exists(), "no model folder from a run that stopped in its first epoch");

    // Skipping: the run finishes and the log counts the skipped steps.
    let skipped = dir.path().join("skipped");
    let report =
        ok(spineseg(&[&["train", w, "--out", skipped.to_str().unwrap(), "--skip-non-finite-steps"][..], &diverging].concat()));
    assert!(report.contains("finished: 2 of 2 epochs"), "{report}");
    let log = std::fs::read_to_string(skipped.join("training/log.csv")).unwrap();
    assert!(log.lines().next().unwrap().ends_with(",skipped_steps"), "{log}");
    let total: usize = log.lines().skip(1).map(|l| l.rsplit(',').next().unwrap().parse::<usize>().unwrap()).sum();
    assert!(total >= 4, "at least the steps after the first diverging one are skipped: {log}");

    // An image with a NaN voxel: planning and prediction refuse it, naming the file.
    let data = dir.path().join("phantom");
    let image = data.join("imagesTr/phantom_001_0000.nii.gz");
    let mut volume = spineseg_io::read_image(&image).unwrap();
    volume.data_mut()[7] = f32::NAN;
    let nan_image = dir.path().join("nan_0000.nii.gz");
    spineseg_io::write_volume(&nan_image, &spineseg_io::AnyVolume::from(volume)).unwrap();
    let seg = dir.path().join("nan_seg.nii.gz");
    let out = spineseg(&["predict", "-i", nan_image.to_str().unwrap(), "-o", seg.to_str().unwrap(), "-m", skipped.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("nan_0000.nii.gz") && err.contains("1 voxel(s) are NaN or infinite"), "{err}");
    assert!(!seg.exists());
    std::fs::copy(&nan_image, &image).unwrap();
    let out = spineseg(&["plan", data.to_str().unwrap(), "--out", dir.path().join("nan_work").to_str().unwrap(), "--configurations", "2d"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("phantom_001_0000.nii.gz") && err.contains("NaN or infinite"), "{err}");
}

#[test]
fn view_prompts_change_only_the_training_text_resume_exactly_and_predict_with_class_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let work = tiny_work(dir.path());
    let encoder = dir.path().join("encoder");
    spineseg_text::write_tiny_test_encoder(&encoder).unwrap();
    let encoder = encoder.to_str().unwrap();
    let text = ["--text-guided", "--text-encoder", encoder];
    let checkpoint = |m: &Path| weights(m, &m.join("training/checkpoint_last/model.bpk"));

    let class_only = dir.path().join("class_only");
    train(&work, &class_only, &text);
    // Every sample on per-view prompts: the table is written and training differs.
    let a = dir.path().join("view_a");
    let report = train(&work, &a, &[&text[..], &["--view-prompts", "--view-prompt-rate", "1"]].concat());
    assert!(report.contains("finished: 2 of 2 epochs"), "{report}");
    let table = spineseg_infer::model_folder::ViewPromptEmbeddings::load(&a.join("view_prompt_embeddings.json")).unwrap();
    assert!(table.prompts.iter().all(|p| p.prompt.starts_with("sagittal MRI slice: the ")), "{:?}", table.prompts[0].prompt);
    let manifest = load_manifest(&a.join("model.json")).unwrap();
    assert_eq!(manifest.training["method"], "text_guided");
    assert_ne!(checkpoint(&a), checkpoint(&class_only), "per-view prompts should change the training");
    // Rate 0: no sample takes a per-view prompt, so the run is the class-prompt run bit for bit
    // (the prompts are the only thing the option changes).
    let none = dir.path().join("view_none");
    train(&work, &none, &[&text[..], &["--view-prompts", "--view-prompt-rate", "0"]].concat());
    assert_eq!(checkpoint(&none), checkpoint(&class_only));

    // Stopped after epoch 1 and resumed from the checkpoint and the stored table: bit-identical.
    let b = dir.path().join("view_b");
    train(&work, &b, &[&text[..], &["--view-prompts", "--view-prompt-rate", "1", "--stop-after-epochs", "1"]].concat());
    let report = ok(spineseg(&["train", work.to_str().unwrap(), "--out", b.to_str().unwrap(), "--resume", "--quiet"]));
    assert!(report.contains("finished: 2 of 2 epochs"), "{report}");
    assert_eq!(checkpoint(&a), checkpoint(&b), "resumed per-view prompt weights differ");

    // Prediction uses the class prompts in the weights: the table is not needed.
    let image = dir.path().join("phantom/imagesTr/phantom_000_0000.nii.gz");
    let with_table = dir.path().join("with_table.nii.gz");
    ok(spineseg(&["predict", "-i", image.to_str().unwrap(), "-o", with_table.to_str().unwrap(), "-m", a.to_str().unwrap()]));
    std::fs::remove_file(a.join("view_prompt_embeddings.json")).unwrap();
    let without = dir.path().join("without_table.nii.gz");
    ok(spineseg(&["predict", "-i", image.to_str().unwrap(), "-o", without.to_str().unwrap(), "-m", a.to_str().unwrap()]));
    assert_eq!(spineseg_io::read_labels(&with_table).unwrap().data(), spineseg_io::read_labels(&without).unwrap().data());

    // Per-view prompts are a text-guided option: alone, a usage error.
    let out = spineseg(&["train", work.to_str().unwrap(), "--out", dir.path().join("bad").to_str().unwrap(), "--view-prompts"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn report_text_is_built_from_gradings_trained_on_resumed_exactly_and_given_at_prediction() {
    let dir = tempfile::tempdir().unwrap();
    let work = tiny_work(dir.path());
    let encoder = dir.path().join("encoder");
    spineseg_text::write_tiny_test_encoder(&encoder).unwrap();
    let encoder = encoder.to_str().unwrap();

    // `text reports`: SPIDER cases (ids ending in spider_<patient>) get their gradings as text.
    let dataset = dir.path().join("dataset");
    std::fs::create_dir_all(dataset.join("imagesTr")).unwrap();
    for name in ["merged_spider_7_0000.nii.gz", "merged_spider_8_0000.nii.gz", "other_0000.nii.gz"] {
        std::fs::write(dataset.join("imagesTr").join(name), b"").unwrap();
    }
    let gradings = dir.path().join("gradings.csv");
    std::fs::write(
        &gradings,
        "patient,ivd_label,level,modic,upper_endplate_change,lower_endplate_change,spondylolisthesis,disc_herniation,disc_narrowing,disc_bulging,pfirrmann_grade,level_note\n\
         7,1,L5S1,0,0,0,0,0,0,0,2,\n7,2,L4L5,0,0,0,0,1,0,1,4,\n",
    )
    .unwrap();
    let built = dir.path().join("built.json");
    let (g, d, o) = (gradings.to_str().unwrap(), dataset.to_str().unwrap(), built.to_str().unwrap());
    let report = ok(spineseg(&["text", "reports", "--gradings", g, "--dataset", d, "--out", o]));
    assert!(report.contains("1 reports of 2 SPIDER cases (3 cases in the dataset)"), "{report}");
    let built: std::collections::BTreeMap<String, String> = serde_json::from_str(&std::fs::read_to_string(&built).unwrap()).unwrap();
    let text = &built["merged_spider_7"];
    assert!(text.starts_with("L4/L5 intervertebral disc: disc herniation") && text.contains("Pfirrmann grade 2."), "{text}");

    // Training with reports for two of the three phantom cases.
    let reports = dir.path().join("reports.json");
    std::fs::write(&reports, r#"{"phantom_000": "L4/L5 intervertebral disc: disc herniation, Pfirrmann grade 4.", "phantom_001": "No abnormality."}"#).unwrap();
    let flags = ["--text-guided", "--text-encoder", encoder, "--reports", reports.to_str().unwrap()];
    let a = dir.path().join("report_a");
    let report = train(&work, &a, &flags);
    assert!(report.contains("finished: 2 of 2 epochs"), "{report}");
    let stored = spineseg_infer::model_folder::ReportEmbeddings::load(&a.join("report_embeddings.json")).unwrap();
    assert_eq!(stored.cases.len(), 2);
    let manifest = load_manifest(&a.join("model.json")).unwrap();
    assert!(manifest.network.plain_conv_unet().unwrap().text_guidance.as_ref().unwrap().report, "model.json records the report token");
    let b = dir.path().join("report_b");
    train(&work, &b, &[&flags[..], &["--stop-after-epochs", "1"]].concat());
    ok(spineseg(&["train", work.to_str().unwrap(), "--out", b.to_str().unwrap(), "--resume", "--quiet"]));
    assert_eq!(
        weights(&a, &a.join("training/checkpoint_last/model.bpk")),
        weights(&b, &b.join("training/checkpoint_last/model.bpk")),
        "resumed report-text weights differ"
    );

    // Prediction without a report needs no encoder (the "no report" token is in the weights);
    // with one, the report is embedded first.
    let image = dir.path().join("phantom/imagesTr/phantom_002_0000.nii.gz");
    let predict = |model: &Path, out: &str, extra: &[&str]| {
        let out = dir.path().join(out);
        let args = ["predict", "-i", image.to_str().unwrap(), "-o", out.to_str().unwrap(), "-m", model.to_str().unwrap()];
        (spineseg(&[&args[..], extra].concat()), out)
    };
    let (output, plain) = predict(&a, "plain.nii.gz", &[]);
    ok(output);
    let case_report = dir.path().join("case_report.txt");
    std::fs::write(&case_report, "L5/S1 intervertebral disc: disc narrowing, Pfirrmann grade 5.").unwrap();
    let (output, with_report) = predict(&a, "with_report.nii.gz", &["--report", case_report.to_str().unwrap(), "--text-encoder", encoder]);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    ok(output);
    assert!(stderr.contains("report: "), "{stderr}");
    assert_eq!(spineseg_io::read_labels(&plain).unwrap().shape(), spineseg_io::read_labels(&with_report).unwrap().shape());

    // An empty report, or a report for a model trained without reports: exit 1, nothing written.
    std::fs::write(&case_report, " \n").unwrap();
    let (output, out) = predict(&a, "empty.nii.gz", &["--report", case_report.to_str().unwrap(), "--text-encoder", encoder]);
    assert_eq!(output.status.code(), Some(1));
    assert!(!out.exists());
    std::fs::write(&case_report, "No abnormality.").unwrap();
    let class_only = dir.path().join("class_only");
    train(&work, &class_only, &["--text-guided", "--text-encoder", encoder]);
    let (output, out) = predict(&class_only, "no_slot.nii.gz", &["--report", case_report.to_str().unwrap(), "--text-encoder", encoder]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not trained with report text"), "{stderr}");
    assert!(!out.exists());
}

#[test]
fn tmca_training_resumes_exactly_and_predicts_without_an_encoder() {
    // TMCA with HASF on the tiny 3-stage network (decoder levels 0 and 1), HASF with a report
    // token fed with two of the three phantom cases' reports.
    let dir = tempfile::tempdir().unwrap();
    let work = tiny_work(dir.path());
    let encoder = dir.path().join("encoder");
    spineseg_text::write_tiny_test_encoder(&encoder).unwrap();
    let encoder = encoder.to_str().unwrap();
    let reports = dir.path().join("reports.json");
    std::fs::write(&reports, r#"{"phantom_000": "L4/L5 intervertebral disc: disc herniation.", "phantom_002": "No abnormality."}"#).unwrap();
    let flags = ["--tmca", "--tmca-levels", "0,1", "--text-guided", "--text-encoder", encoder, "--reports", reports.to_str().unwrap()];

    let a = dir.path().join("tmca_a");
    let report = train(&work, &a, &flags);
    assert!(report.contains("finished: 2 of 2 epochs"), "{report}");
    let manifest = load_manifest(&a.join("model.json")).unwrap();
    assert_eq!(manifest.training["method"], "tmca_hasf");
    let unet = manifest.network.plain_conv_unet().expect("the trainer trains a plain U-Net");
    let alignment = unet.target_alignment.clone().expect("model.json records the target alignment");
    assert_eq!(alignment.levels, [0, 1]);
    assert!(unet.text_guidance.as_ref().is_some_and(|t| t.report), "TMCA + HASF with a report token");
    let prompts = spineseg_infer::model_folder::PromptEmbeddings::load(&a.join("prompt_embeddings.json")).unwrap();
    let network = load_network(unet, &a.join("weights.bpk")).unwrap();
    let module = network.target_alignment.as_ref().unwrap();
    let stored = module.class_embeddings.val().into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(stored, prompts.matrix().0, "the frozen prompts travel in the weights, unchanged");
    // Training moved the zero-initialised enhancement away from the identity.
    let gate: Vec<f32> = module.levels[0].gate.val().into_data().try_to_vec().unwrap();
    assert!(gate.iter().any(|&g| g != 0.0), "{gate:?}");

    let b = dir.path().join("tmca_b");
    train(&work, &b, &[&flags[..], &["--stop-after-epochs", "1"]].concat());
    let report = ok(spineseg(&["train", work.to_str().unwrap(), "--out", b.to_str().unwrap(), "--resume", "--quiet"]));
    assert!(report.contains("finished: 2 of 2 epochs"), "{report}");
    assert_eq!(
        weights(&a, &a.join("training/checkpoint_last/model.bpk")),
        weights(&b, &b.join("training/checkpoint_last/model.bpk")),
        "resumed TMCA weights differ"
    );

    // Prediction loads the TMCA network from the folder alone; with a report, the encoder
    // embeds it first.
    let image = dir.path().join("phantom/imagesTr/phantom_000_0000.nii.gz");
    let out = dir.path().join("tmca.nii.gz");
    ok(spineseg(&["predict", "-i", image.to_str().unwrap(), "-o", out.to_str().unwrap(), "-m", a.to_str().unwrap()]));
    let labels = spineseg_io::read_labels(&out).unwrap();
    assert_eq!(labels.shape(), spineseg_io::read_image(&image).unwrap().shape());
    let case_report = dir.path().join("case_report.txt");
    std::fs::write(&case_report, "L5/S1 intervertebral disc: disc narrowing, Pfirrmann grade 5.").unwrap();
    let with_report = dir.path().join("tmca_report.nii.gz");
    let output = spineseg(&[
        "predict", "-i", image.to_str().unwrap(), "-o", with_report.to_str().unwrap(), "-m", a.to_str().unwrap(),
        "--report", case_report.to_str().unwrap(), "--text-encoder", encoder,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    ok(output);
    assert!(stderr.contains("report: "), "{stderr}");
    assert_eq!(spineseg_io::read_labels(&with_report).unwrap().shape(), labels.shape());

    // A level the network does not have is a clear error before training.
    let out = spineseg(&[
        "train", work.to_str().unwrap(), "--out", dir.path().join("bad").to_str().unwrap(), "--tmca", "--tmca-levels", "4",
        "--text-encoder", encoder, "--quiet",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("decoder level 4"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn enum_flags_refuse_unknown_values_as_usage_errors() {
    // clap value enums: exit 2 with the list of choices, before any file is touched.
    let cases: [(&[&str], &str); 3] = [
        (&["train", "w", "--out", "m", "--optimizer", "rmsprop"], "sgd, adamw"),
        (&["train", "w", "--out", "m", "--configuration", "4d"], "2d, 3d_fullres"),
        (&["plan", "d", "--out", "w", "--configurations", "2d,4d"], "2d, 3d_fullres"),
    ];
    for (args, choices) in cases {
        let out = spineseg(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(choices), "{args:?}: {err}");
    }
    // The aliases the string parser took still parse: the run then fails on the missing work
    // folder (exit 1), not on the flags.
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("missing");
    let model = dir.path().join("m");
    let out = spineseg(&["train", work.to_str().unwrap(), "--out", model.to_str().unwrap(), "--configuration", "3d", "--optimizer", "adam"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn contrast_augmentation_is_stored_in_the_checkpoint_and_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let work = tiny_work(dir.path());
    let a = dir.path().join("contrast_a");
    train(&work, &a, &["--augmentation", "contrast"]);
    let state = std::fs::read_to_string(a.join("training/checkpoint_last/state.json")).unwrap();
    let compact: String = state.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(compact.contains("\"p_invert\":0.2") && compact.contains("\"p_remap\":0.3"), "{state}");
    // Stopped and resumed without the flag: the stored augmentation goes on, bit for bit.
    let b = dir.path().join("contrast_b");
    train(&work, &b, &["--augmentation", "contrast", "--stop-after-epochs", "1"]);
    ok(spineseg(&["train", work.to_str().unwrap(), "--out", b.to_str().unwrap(), "--resume", "--quiet"]));
    let last = |m: &Path| weights(m, &m.join("training/checkpoint_last/model.bpk"));
    assert_eq!(last(&a), last(&b));
    assert_eq!(log_lines(&a), log_lines(&b));
    // An unknown preset is a usage error that lists the choices.
    let out = spineseg(&["train", "w", "--out", "m", "--augmentation", "strong"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("default, contrast"));
}
