//! End-to-end: `spineseg predict` with a tiny, untrained model folder (random weights from a fixed
//! seed, no training) made from a `spineseg plan` of two small phantoms. Checks the output files'
//! shape, geometry, label values and format, for a file, a folder, a rotated anisotropic input,
//! and that bad inputs fail with exit code 1 and write nothing.

use spineseg_preprocessing::plan::{ConfigurationName, Plan};
use spineseg_infer::network::Device;
use spineseg_infer::{network_config_for_plan, ModelFolder, ModelManifest, NetworkPredictor, OutputLabels};
use spineseg_io::{read_volume, AnyVolume, Geometry, Label, Spacing};
use std::path::{Path, PathBuf};
use std::process::Output;

mod support;
use support::{spineseg, spineseg_with_file_size_limit};


fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn fails(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "expected exit code 1: {stderr}");
    stderr
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Phantoms, a plan with a shrunk 2D network (patch 32 x 32, 3 stages, widths 4-8-16, one conv
/// per stage), and a model folder with random weights. Returns (dataset, model folder).
fn tiny_model(root: &Path) -> (PathBuf, PathBuf) {
    tiny_model_with_channels(root, 1)
}

/// [`tiny_model`] for a model taking `channels` input channels (the plan's one channel repeated).
fn tiny_model_with_channels(root: &Path, channels: usize) -> (PathBuf, PathBuf) {
    let dataset = root.join("dataset");
    let work = root.join("work");
    ok(spineseg(&["phantom", "--out", s(&dataset), "--cases", "2", "--seed", "5", "--small"]));
    ok(spineseg(&["plan", s(&dataset), "--out", s(&work), "--configurations", "2d", "--no-preprocess"]));

    let plans = work.join("plans.json");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&plans).unwrap()).unwrap();
    let c = &mut json["configurations"]["2d"];
    c["patch_size"] = serde_json::json!([32, 32]);
    c["network"] = serde_json::json!({
        "n_stages": 3,
        "features_per_stage": [4, 8, 16],
        "kernel_sizes": [[3, 3], [3, 3], [3, 3]],
        "strides": [[1, 1], [2, 2], [2, 2]],
        "n_conv_per_stage_encoder": [1, 1, 1],
        "n_conv_per_stage_decoder": [1, 1],
    });
    for key in ["channel_names", "normalization", "foreground_intensity_properties_per_channel"] {
        let first = json[key][0].clone();
        json[key] = serde_json::Value::Array(vec![first; channels]);
    }
    std::fs::write(&plans, serde_json::to_string_pretty(&json).unwrap()).unwrap();

    let plan = Plan::load(&plans).unwrap();
    let labels = OutputLabels::load(&work.join("labels.json")).unwrap();
    let config = network_config_for_plan(&plan, ConfigurationName::TwoD).unwrap();
    let predictor = NetworkPredictor::random(&config, 42, Device::flex());
    let model = root.join("model");
    let manifest = ModelManifest::new(ConfigurationName::TwoD, config);
    ModelFolder::save(&model, &manifest, &plan, &labels, predictor.network()).unwrap();
    (dataset, model)
}

/// Output on the input's grid, with label values of the dataset (or 0).
fn assert_overlays(input: &Path, output: &Path, model: &Path) {
    let image = read_volume(input).unwrap();
    let seg = read_volume(output).unwrap_or_else(|e| panic!("{}: {e}", output.display()));
    assert_eq!(seg.shape, image.shape, "{}", output.display());
    assert!(
        seg.geometry.agrees_with(&image.geometry, image.shape, 1e-4),
        "{}: geometry {:?} vs input {:?}",
        output.display(),
        seg.geometry,
        image.geometry
    );
    let allowed = OutputLabels::load(&model.join("labels.json")).unwrap().dataset_values();
    let labels = seg.to_labels(output).unwrap();
    let mut present: Vec<Label> = labels.data().to_vec();
    present.sort_unstable();
    present.dedup();
    assert!(present.iter().all(|v| allowed.contains(v)), "{present:?} not within {allowed:?}");
}

#[test]
fn predict_files_and_folders_on_the_input_grid() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (dataset, model) = tiny_model(root);
    let image0 = dataset.join("imagesTr/phantom_000_0000.nii.gz");
    let image1 = dataset.join("imagesTr/phantom_001_0000.nii.gz");

    // One file to a named output file.
    let out_file = root.join("single/seg.nii.gz");
    ok(spineseg(&["predict", "-i", s(&image0), "-o", s(&out_file), "-m", s(&model)]));
    assert_overlays(&image0, &out_file, &model);
    // One file to a folder: {case}{input extension}; options that change the work but not the grid.
    let out_dir = root.join("single_dir");
    ok(spineseg(&[
        "predict",
        "-i",
        s(&image0),
        "-o",
        s(&out_dir),
        "-m",
        s(&model),
        "--disable-tta",
        "--step-size",
        "1",
        "--largest-component",
    ]));
    assert_overlays(&image0, &out_dir.join("phantom_000.nii.gz"), &model);

    // A folder with a NIfTI and a MetaImage case, the latter rotated and anisotropic.
    let input = root.join("input");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(&image0, input.join("a_0000.nii.gz")).unwrap();
    let mut rotated = read_volume(&image1).unwrap();
    let (sn, cs) = (20f64.to_radians().sin(), 20f64.to_radians().cos());
    rotated.geometry = Geometry::new(
        Spacing::new([3.3, 0.9, 1.7]).unwrap(),
        [12.0, -30.0, 5.0],
        [[0.0, cs, -sn], [0.0, sn, cs], [1.0, 0.0, 0.0]],
    )
    .unwrap();
    spineseg_io::write_volume(&input.join("b_0000.mha"), &rotated).unwrap();
    std::fs::write(input.join("notes.txt"), "not an image").unwrap();
    let out = root.join("out");
    // Without level assignment, which would add `{case}.levels.json` beside each mask (see
    // `level_assignment_report_beside_the_mask`). Each mask has its `{case}.labels.json` and the
    // folder the structure table (tests/cli_first_hour.rs).
    let log = ok(spineseg(&["predict", "-i", s(&input), "-o", s(&out), "-m", s(&model), "--no-level-assignment"]));
    assert!(log.contains("2 case(s)"), "{log}");
    assert_overlays(&input.join("a_0000.nii.gz"), &out.join("a.nii.gz"), &model);
    assert_overlays(&input.join("b_0000.mha"), &out.join("b.mha"), &model);
    let mut written: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    written.sort();
    assert_eq!(written, ["a.labels.json", "a.nii.gz", "b.labels.json", "b.mha", "structures.csv"]);
    // MetaImage really is MetaImage.
    let head = std::fs::read(out.join("b.mha")).unwrap();
    assert!(head.starts_with(b"ObjectType"), "an .mha output should be a MetaImage file");
}

#[test]
fn bad_inputs_exit_1_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (dataset, model) = tiny_model(root);
    let image0 = dataset.join("imagesTr/phantom_000_0000.nii.gz");

    // An unreadable file: the error names it, nothing is written.
    let bad = root.join("bad_0000.nii.gz");
    std::fs::write(&bad, b"this is not gzip").unwrap();
    let out = root.join("bad_out.nii.gz");
    let err = fails(spineseg(&["predict", "-i", s(&bad), "-o", s(&out), "-m", s(&model)]));
    assert!(err.contains("bad_0000.nii.gz"), "{err}");
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(root).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains("bad_out")).count(), 0);

    // A folder with one good and one bad case: the good one is written, the command fails.
    let input = root.join("mixed");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(&image0, input.join("good_0000.nii.gz")).unwrap();
    std::fs::copy(&bad, input.join("bad_0000.nii.gz")).unwrap();
    let out = root.join("mixed_out");
    let err = fails(spineseg(&["predict", "-i", s(&input), "-o", s(&out), "-m", s(&model)]));
    assert!(err.contains("bad_0000.nii.gz") && err.contains("1 of 2 cases failed"), "{err}");
    assert!(out.join("good.nii.gz").is_file());
    assert!(!out.join("bad.nii.gz").exists());

    // More channels than the model takes.
    let input = root.join("two_channels");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(&image0, input.join("c_0000.nii.gz")).unwrap();
    std::fs::copy(&image0, input.join("c_0001.nii.gz")).unwrap();
    let out = root.join("two_channels_out");
    let err = fails(spineseg(&["predict", "-i", s(&input), "-o", s(&out), "-m", s(&model)]));
    assert!(err.contains("channel"), "{err}");
    assert!(!out.join("c.nii.gz").exists());

    // A model folder without model.json.
    let empty = root.join("no_model");
    std::fs::create_dir_all(&empty).unwrap();
    let err = fails(spineseg(&["predict", "-i", s(&image0), "-o", s(&root.join("x.nii.gz")), "-m", s(&empty)]));
    assert!(err.contains("model.json"), "{err}");

    // A file input with a folder-only output name is fine, a folder input with a file name is not.
    let err = fails(spineseg(&["predict", "-i", s(&input), "-o", s(&root.join("y.nii.gz")), "-m", s(&model)]));
    assert!(err.contains("must be a folder"), "{err}");
}

#[test]
fn predicted_volume_keeps_the_stored_data_type_small() {
    // Labels that fit are written as u8 (as the label writer promises), whatever the input type.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (dataset, model) = tiny_model(root);
    let image0 = dataset.join("imagesTr/phantom_000_0000.nii.gz");
    let out = root.join("seg.nii");
    ok(spineseg(&["predict", "-i", s(&image0), "-o", s(&out), "-m", s(&model)]));
    let seg: AnyVolume = read_volume(&out).unwrap();
    assert_eq!(seg.data_type(), spineseg_io::DataType::U8);
}

#[test]
fn structures_keep_only_the_named_labels() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (dataset, model) = tiny_model(root);
    let image = dataset.join("imagesTr/phantom_000_0000.nii.gz");
    let all = root.join("all.nii.gz");
    ok(spineseg(&["predict", "-i", s(&image), "-o", s(&all), "-m", s(&model)]));
    let all = read_volume(&all).unwrap().to_labels(&all).unwrap();
    // The phantom's label values are ontology ids; ask for the most frequent predicted one by
    // a synonym of its name.
    let target = support::most_frequent_structure(all.data());
    let structure = spineseg_anatomy::Ontology::standard().get(spineseg_anatomy::StructureId(target)).unwrap();
    let one = root.join("one.nii.gz");
    ok(spineseg(&["predict", "-i", s(&image), "-o", s(&one), "-m", s(&model), "--structures", &structure.display_name]));
    let one = read_volume(&one).unwrap().to_labels(&one).unwrap();
    support::assert_only_structure_kept(all.data(), one.data(), target);

    let out = root.join("never.nii.gz");
    let err = fails(spineseg(&["predict", "-i", s(&image), "-o", s(&out), "-m", s(&model), "--structures", "L4 vertebra, L4/L5 dsic"]));
    assert!(err.contains("unknown structure") && err.contains("L4/L5 intervertebral disc"), "{err}");
    let err = fails(spineseg(&["predict", "-i", s(&image), "-o", s(&out), "-m", s(&model), "--structures", "C3"]));
    assert!(err.contains("does not segment C3 vertebral body"), "{err}");
    assert!(!out.exists(), "a refused request writes nothing");
}

#[test]
fn model_folder_default_postprocessing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (dataset, model) = tiny_model(root);
    let image = dataset.join("imagesTr/phantom_000_0000.nii.gz");
    let run = |name: &str, extra: &[&str]| {
        let out = root.join(name);
        let mut args = vec!["predict", "-i", s(&image), "-o", s(&out), "-m", s(&model)];
        args.extend_from_slice(extra);
        let log = ok(spineseg(&args));
        (read_volume(&out).unwrap().to_labels(&out).unwrap().data().to_vec(), log)
    };
    let (plain, log) = run("plain.nii.gz", &[]);
    assert!(log.contains("largest component off"), "{log}");
    let (largest, _) = run("largest.nii.gz", &["--largest-component"]);
    assert_ne!(plain, largest, "a random model's output has islands to remove");
    // The folder asks for the largest component: it becomes the default, and can be turned off.
    let manifest_path = model.join("model.json");
    let mut manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    manifest["postprocessing"] = serde_json::json!({"largest_component": true});
    std::fs::write(&manifest_path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
    let (default, log) = run("default.nii.gz", &[]);
    assert!(log.contains("largest component on"), "{log}");
    assert_eq!(default, largest);
    let (off, _) = run("off.nii.gz", &["--no-postprocessing"]);
    assert_eq!(off, plain);
}

#[test]
fn the_shipped_lumbar_model_loads_and_predicts() {
    // models/lumbar-2d is what a user runs right after cloning; it must load with this code and
    // segment an image end to end (a small phantom here: the output's grid and values are
    // checked, not its quality, which docs/BENCHMARKS.md measures on real scans).
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/lumbar-2d");
    let folder = ModelFolder::load(&model).unwrap();
    // The folder's default post-processing is what the log reports.
    let postprocessing = if folder.manifest.postprocessing.largest_component { "on" } else { "off" };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("phantom");
    ok(spineseg(&["phantom", "--out", s(&data), "--cases", "1", "--seed", "2", "--small"]));
    let image = data.join("imagesTr/phantom_000_0000.nii.gz");
    let out = dir.path().join("seg.nii.gz");
    let log = ok(spineseg(&["predict", "-i", s(&image), "-o", s(&out), "-m", s(&model), "--structures", "L3, L4"]));
    assert!(log.contains(&format!("largest component {postprocessing}")), "{log}");
    assert_overlays(&image, &out, &model);
    let labels = read_volume(&out).unwrap().to_labels(&out).unwrap();
    // The output values are the training dataset's (labels.json): only L3's (ontology id 22) and
    // L4's (23) may appear.
    let value = |id| folder.labels.dataset_value(id).unwrap();
    assert!(labels.data().iter().all(|&v| v == 0 || v == value(22) || v == value(23)));
    // The whole anatomy: the spinal canal (ontology id 61) is one of its structures.
    let canal = dir.path().join("canal.nii.gz");
    ok(spineseg(&["predict", "-i", s(&image), "-o", s(&canal), "-m", s(&model), "--structures", "spinal canal"]));
    let labels = read_volume(&canal).unwrap().to_labels(&canal).unwrap();
    assert!(labels.data().iter().all(|&v| v == 0 || v == value(61)));
}

#[test]
fn level_assignment_report_beside_the_mask() {
    // The shipped model has vertebra and disc level classes: level assignment is on by default,
    // relabels bodies and discs only (without post-processing the foreground is the network's),
    // writes `<stem>.levels.json` and logs one line; `--no-level-assignment` keeps the raw labels.
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/lumbar-2d");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("phantom");
    ok(spineseg(&["phantom", "--out", s(&data), "--cases", "1", "--seed", "1", "--small"]));
    let image = data.join("imagesTr/phantom_000_0000.nii.gz");
    let (levelled, raw) = (dir.path().join("levelled.nii.gz"), dir.path().join("raw.nii.gz"));
    let log = ok(spineseg(&["predict", "-i", s(&image), "-o", s(&levelled), "-m", s(&model), "--no-postprocessing"]));
    assert!(log.contains("level assignment on") && log.contains("phantom_000: levels:"), "{log}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("levelled.levels.json")).unwrap()).unwrap();
    let anchor = report["anchor"].as_str().unwrap();
    assert!(anchor == "lumbosacral junction" || anchor == "network evidence only", "{report}");
    assert!(report["confidence"].as_f64().is_some() && report["ambiguous"].is_boolean(), "{report}");
    let instances = report["instances"].as_array().unwrap();
    assert!(instances.len() >= 5, "the phantom shows the lumbar spine: {report}");
    // Every instance is named, except a body below the junction disc (the sacrum) and instances
    // off the spinal column, which are reported but not counted.
    let mut unnamed_on_column = 0;
    for i in instances {
        assert!(i["voxels"].as_u64().unwrap() > 0, "{i}");
        if i["assigned_label"].is_null() {
            assert!(i["relabelled"] == false, "{i}");
            unnamed_on_column += u64::from(i["below_junction"] == false);
        } else {
            assert!(i["assigned_label"].is_string(), "{i}");
        }
    }
    assert!(unnamed_on_column <= report["off_column"].as_u64().unwrap(), "{report}");
    assert!(instances.iter().filter(|i| i["assigned_label"].is_string()).count() >= 5, "{report}");

    let log = ok(spineseg(&["predict", "-i", s(&image), "-o", s(&raw), "-m", s(&model), "--no-postprocessing", "--no-level-assignment"]));
    assert!(log.contains("level assignment off") && !log.contains("levels:"), "{log}");
    assert!(!dir.path().join("raw.levels.json").exists());
    let levelled = read_volume(&levelled).unwrap().to_labels(&levelled).unwrap();
    let raw = read_volume(&raw).unwrap().to_labels(&raw).unwrap();
    assert_eq!(levelled.geometry, raw.geometry);
    // Bodies and discs are renamed in preprocessed space; resampling back to the input's grid
    // interpolates one-hot labels, so only boundary voxels may change extent or kind.
    // Output value -> whether it is a disc (ontology ids 101..=125), from the folder's labels.json.
    let labels = ModelFolder::load(&model).unwrap().labels;
    let is_disc = |v: Label| {
        labels.structures.iter().find(|s| s.dataset_value == v).is_some_and(|s| (101..=125).contains(&s.structure_id))
    };
    let (mut foreground, mut kind, mut changed) = (0, 0, 0);
    for (&a, &b) in levelled.data().iter().zip(raw.data()) {
        foreground += usize::from((a != 0) != (b != 0));
        kind += usize::from(a != 0 && b != 0 && is_disc(a) != is_disc(b));
        changed += usize::from(a != b);
    }
    let total = raw.data().iter().filter(|&&v| v != 0).count();
    assert!(foreground * 50 <= total && kind * 50 <= total, "{foreground} / {kind} of {total} voxels changed extent / kind");
    let relabelled = instances.iter().any(|i| i["relabelled"] == true);
    assert_eq!(changed > foreground + kind, relabelled, "{changed} voxels renamed; {report}");

    // `--network-labels DIR`: one prediction gives both masks, each equal to its own run's.
    let (both, network) = (dir.path().join("both.nii.gz"), dir.path().join("network"));
    ok(spineseg(&[
        "predict", "-i", s(&image), "-o", s(&both), "-m", s(&model), "--no-postprocessing", "--network-labels", s(&network),
    ]));
    let read = |path: &Path| read_volume(path).unwrap().to_labels(path).unwrap();
    assert_eq!(read(&both).data(), levelled.data());
    assert_eq!(read(&network.join("both.nii.gz")).data(), raw.data());
    // Asking for the network's labels without level assignment is a usage error (clap: 2).
    let out = spineseg(&["predict", "-i", s(&image), "-o", s(&both), "-m", s(&model), "--no-level-assignment", "--network-labels", s(&network)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--network-labels") && err.contains("--no-level-assignment"), "{err}");
}

#[test]
fn half_precision_weights_halve_the_file_and_keep_the_prediction() {
    // `spineseg model precision DIR half` rewrites the weights in place; the folder still loads
    // and predicts (in f32) nearly the same labels as with single-precision weights.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/lumbar-2d");
    let dir = tempfile::tempdir().unwrap();
    let (single, half) = (dir.path().join("single"), dir.path().join("half"));
    for model in [&single, &half] {
        std::fs::create_dir_all(model).unwrap();
        for file in ["model.json", "plans.json", "labels.json", "weights.bpk"] {
            std::fs::copy(shipped.join(file), model.join(file)).unwrap();
        }
    }
    ok(spineseg(&["model", "precision", s(&single), "single"]));
    let log = ok(spineseg(&["model", "precision", s(&half), "half"]));
    assert!(log.contains("MB ->"), "{log}");
    let size = |m: &Path| std::fs::metadata(m.join("weights.bpk")).unwrap().len() as f64;
    let ratio = size(&half) / size(&single);
    assert!((0.45..0.6).contains(&ratio), "half / single weights file {ratio}");

    let data = dir.path().join("phantom");
    ok(spineseg(&["phantom", "--out", s(&data), "--cases", "1", "--seed", "3", "--small"]));
    let image = data.join("imagesTr/phantom_000_0000.nii.gz");
    let mut predictions = Vec::new();
    for model in [&single, &half] {
        let out = model.join("seg.nii.gz");
        ok(spineseg(&["predict", "-i", s(&image), "-o", s(&out), "-m", s(model), "--no-level-assignment"]));
        predictions.push(read_volume(&out).unwrap().to_labels(&out).unwrap());
    }
    let differ = predictions[0].data().iter().zip(predictions[1].data()).filter(|(a, b)| a != b).count();
    let foreground = predictions[0].data().iter().filter(|v| **v != 0).count();
    assert!(foreground > 0);
    assert!((differ as f64) < 0.01 * foreground as f64, "{differ} of {foreground} foreground voxels changed");

    // A folder that is not a model is refused with its path, and nothing is written.
    let out = spineseg(&["model", "precision", s(&data), "half"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("model.json"), "{out:?}");
}

#[test]
fn channel_files_that_do_not_fit_a_two_channel_model() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (dataset, model) = tiny_model_with_channels(root, 2);
    let image0 = dataset.join("imagesTr/phantom_000_0000.nii.gz");
    let m = s(&model);

    // A single file whose _0001 is absent: the missing file is named.
    let single = root.join("single");
    std::fs::create_dir_all(&single).unwrap();
    std::fs::copy(&image0, single.join("a_0000.nii.gz")).unwrap();
    let out = root.join("single_out");
    let err = fails(spineseg(&["predict", "-i", s(&single.join("a_0000.nii.gz")), "-o", s(&out), "-m", m]));
    assert!(err.contains("a_0001.nii.gz") && err.contains("missing channel") && err.contains("2 channels"), "{err}");
    assert!(!out.exists());

    // A folder case with fewer channels than the model: the case, what was found and what is needed.
    let out = root.join("folder_out");
    let err = fails(spineseg(&["predict", "-i", s(&single), "-o", s(&out), "-m", m]));
    assert!(err.contains("case a") && err.contains("_0000") && err.contains("takes 2"), "{err}");
    assert!(!out.join("a.nii.gz").exists());

    // An unsuffixed file for a 2-channel model.
    let plain = root.join("plain.nii.gz");
    std::fs::copy(&image0, &plain).unwrap();
    let err = fails(spineseg(&["predict", "-i", s(&plain), "-o", s(&root.join("plain_out.nii.gz")), "-m", m]));
    assert!(err.contains("plain.nii.gz") && err.contains("plain_0000.nii.gz"), "{err}");
    assert!(!root.join("plain_out.nii.gz").exists());

    // The channels of one case with different extensions: both files are named.
    let mixed = root.join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    std::fs::copy(&image0, mixed.join("b_0000.nii.gz")).unwrap();
    let volume = read_volume(&image0).unwrap();
    spineseg_io::write_volume(&mixed.join("b_0001.mha"), &volume).unwrap();
    let out = root.join("mixed_out");
    let err = fails(spineseg(&["predict", "-i", s(&mixed), "-o", s(&out), "-m", m]));
    assert!(err.contains("case b") && err.contains("b_0000.nii.gz") && err.contains("b_0001.mha"), "{err}");
    assert!(err.contains("different extensions"), "{err}");
    assert!(!out.exists());

    // The output path equal to the input: refused, the input untouched.
    let both = root.join("both");
    std::fs::create_dir_all(&both).unwrap();
    std::fs::copy(&image0, both.join("c_0000.nii.gz")).unwrap();
    std::fs::copy(&image0, both.join("c_0001.nii.gz")).unwrap();
    let before = std::fs::read(both.join("c_0000.nii.gz")).unwrap();
    let input = both.join("c_0000.nii.gz");
    let err = fails(spineseg(&["predict", "-i", s(&input), "-o", s(&input), "-m", m]));
    assert!(err.contains("c_0000.nii.gz") && err.contains("overwrite the input"), "{err}");
    assert_eq!(std::fs::read(&input).unwrap(), before);

    // The same case with both channels predicts (the model is usable; the errors above are the inputs').
    let out = root.join("both_out");
    ok(spineseg(&["predict", "-i", s(&both), "-o", s(&out), "-m", m]));
    assert!(out.join("c.nii.gz").is_file());
}

/// The names of the files under `dir` (recursively), sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                names.extend(files_under(&path));
            } else {
                names.push(path.display().to_string());
            }
        }
    }
    names.sort();
    names
}

#[test]
fn a_full_disk_fails_naming_the_file_and_leaves_no_half_written_output() {
    // (A folder without write permission cannot be tested here: CI runs as root, which writes
    // anyway. A file-size limit makes every write past it fail with EFBIG, like a full disk.)
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (dataset, model) = tiny_model(root);
    let image0 = dataset.join("imagesTr/phantom_000_0000.nii.gz");
    let full_dir = root.join("full");
    ok(spineseg(&["predict", "-i", s(&image0), "-o", s(&full_dir.join("full.nii")), "-m", s(&model)]));
    // A limit that lets the sidecars (written first) through and stops the mask (written last).
    let size = |name: &str| std::fs::metadata(full_dir.join(name)).unwrap().len();
    let sidecars = std::fs::read_dir(&full_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned());
    let largest_sidecar = sidecars.filter(|n| n != "full.nii").map(|n| size(&n)).max().unwrap();
    let blocks = largest_sidecar / 512 + 2;
    assert!(size("full.nii") > 512 * blocks, "the mask should be larger than the {blocks}-block limit");
    let blocks = u32::try_from(blocks).unwrap();

    for (name, blocks) in [("seg.nii", blocks), ("seg.nii", 0), ("seg.mha", blocks)] {
        let out_dir = root.join(format!("out_{blocks}_{name}"));
        std::fs::create_dir_all(&out_dir).unwrap();
        let out = out_dir.join(name);
        let run = spineseg_with_file_size_limit(blocks, &["predict", "-i", s(&image0), "-o", s(&out), "-m", s(&model)]);
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{name}, {blocks} blocks: {err}");
        // With the larger limit the mask is what fails, and the message names it.
        let named = if blocks == 0 { out_dir.display().to_string() } else { out.display().to_string() };
        assert!(err.contains(&named), "{name}, {blocks} blocks: should name {named}: {err}");
        assert!(err.contains("File too large"), "{name}, {blocks} blocks: {err}");
        assert!(!err.contains("File too large (os error 27): File too large"), "said twice: {err}");
        assert_eq!(files_under(&out_dir), Vec::<String>::new(), "{name}, {blocks} blocks: nothing may be left: {err}");
    }

    // A folder of two cases: both fail, nothing of either is left.
    let input = root.join("cases");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(&image0, input.join("a_0000.nii")).unwrap();
    std::fs::copy(&image0, input.join("b_0000.nii")).unwrap();
    let out = root.join("cases_out");
    let run = spineseg_with_file_size_limit(blocks, &["predict", "-i", s(&input), "-o", s(&out), "-m", s(&model)]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{err}");
    let (a, b) = (out.join("a.nii").display().to_string(), out.join("b.nii").display().to_string());
    assert!(err.contains(&a) && err.contains(&b) && err.contains("2 of 2 cases failed"), "{err}");
    assert_eq!(files_under(&out), Vec::<String>::new(), "{err}");

    // convert: the output is not left half-written either.
    let converted = root.join("converted");
    std::fs::create_dir_all(&converted).unwrap();
    for name in ["x.nii", "x.mha", "x.mhd"] {
        let out = converted.join(name);
        let run = spineseg_with_file_size_limit(1, &["convert", s(&image0), s(&out)]);
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(&*converted.display().to_string()) && err.contains("File too large"), "{name}: {err}");
        assert_eq!(files_under(&converted), Vec::<String>::new(), "{name}: {err}");
    }
}

#[test]
fn windows_per_call_do_not_change_the_mask_and_timings_are_printed() {
    let dir = tempfile::tempdir().unwrap();
    let (dataset, model) = tiny_model(dir.path());
    let image = dataset.join("imagesTr/phantom_000_0000.nii.gz");
    let one = dir.path().join("one.nii.gz");
    let default = dir.path().join("default.nii.gz");
    ok(spineseg(&["predict", "-i", s(&image), "-o", s(&one), "-m", s(&model), "--batch-size", "1"]));
    let out = spineseg(&["predict", "-i", s(&image), "-o", s(&default), "-m", s(&model), "--timings"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ok(out);
    let read = |p: &Path| read_volume(p).unwrap().to_labels(p).unwrap();
    // Several windows per network call (the default) give the same mask as one per call.
    assert_eq!(read(&one).data(), read(&default).data());
    let line = stdout.lines().find(|l| l.starts_with("timings phantom_000: ")).unwrap_or_else(|| panic!("{stdout}"));
    for stage in ["read", "preprocess", "network", "postprocess", "write", "total", "peak memory"] {
        assert!(line.contains(stage), "{line}");
    }
}
