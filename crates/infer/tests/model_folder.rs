//! Model folders: a saved folder loads back to the same network, and every way a folder can be
//! broken gives an error naming the file.

use spineseg_preprocessing::plan::{
    ConfigurationName, Configuration, LabelClass, Normalization, Plan, PlanOptions, UNetTopology, PLAN_FORMAT_VERSION,
};
use spineseg_preprocessing::resample::ResampleSettings;
use spineseg_infer::model_folder::{LABELS_FILE, MANIFEST_FILE, PLAN_FILE, WEIGHTS_FILE};
use spineseg_infer::network::Device;
use spineseg_infer::{
    network_config_for_plan, ModelFolder, ModelManifest, NetworkPredictor, OutputLabels, PatchPredictor,
    MODEL_FORMAT_VERSION,
};
use spineseg_io::{Geometry, Volume};
use std::collections::BTreeMap;
use std::path::Path;

/// A 2D plan with 3 classes (background, L1 = 20, L1/L2 disc = 120), patch 16 x 16, 2 stages.
fn tiny_plan() -> Plan {
    let network = UNetTopology {
        n_stages: 2,
        features_per_stage: vec![4, 8],
        kernel_sizes: vec![vec![3, 3], vec![3, 3]],
        strides: vec![vec![1, 1], vec![2, 2]],
        n_conv_per_stage_encoder: vec![1, 1],
        n_conv_per_stage_decoder: vec![1],
    };
    let configuration = Configuration {
        data_identifier: "tiny_2d".into(),
        spacing_mm: vec![1.0, 1.0],
        patch_size: vec![16, 16],
        batch_size: 2,
        median_shape: vec![20.0, 20.0],
        network,
        batch_dice: true,
    };
    let plan = Plan {
        format_version: PLAN_FORMAT_VERSION,
        dataset_name: "tiny".into(),
        channel_names: vec!["T2".into()],
        normalization: vec![Normalization::ZScore { use_mask: false }],
        labels: vec![
            LabelClass { value: 0, name: "background".into() },
            LabelClass { value: 20, name: "L1".into() },
            LabelClass { value: 120, name: "L1/L2".into() },
        ],
        target_spacing_mm: [3.0, 1.0, 1.0],
        resampling: ResampleSettings::default(),
        foreground_intensity_properties_per_channel: vec![None],
        configurations: BTreeMap::from([(ConfigurationName::TwoD, configuration)]),
        planner: PlanOptions::default(),
    };
    plan.validate().unwrap();
    plan
}

fn tiny_labels() -> OutputLabels {
    serde_json::from_value(serde_json::json!({
        "dataset": "tiny",
        "structures": [
            {"structure_id": 20, "dataset_value": 5, "dataset_name": "L1"},
            {"structure_id": 120, "dataset_value": 11, "dataset_name": "L1L2"},
        ]
    }))
    .unwrap()
}

fn save_tiny(dir: &Path, seed: u64) -> NetworkPredictor {
    let plan = tiny_plan();
    let config = network_config_for_plan(&plan, ConfigurationName::TwoD).unwrap();
    let predictor = NetworkPredictor::random(&config, seed, Device::flex());
    let manifest = ModelManifest::new(ConfigurationName::TwoD, config);
    ModelFolder::save(dir, &manifest, &plan, &tiny_labels(), predictor.network()).unwrap();
    predictor
}

fn load_err(dir: &Path) -> String {
    ModelFolder::load(dir).map(|_| ()).unwrap_err().to_string()
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn saved_folder_loads_back_to_the_same_network() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let mut saved = save_tiny(&model, 3);
    for name in [MANIFEST_FILE, PLAN_FILE, LABELS_FILE, WEIGHTS_FILE] {
        assert!(model.join(name).is_file(), "{name}");
    }
    let hidden: Vec<_> = std::fs::read_dir(&model)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "no temporary files are left behind");

    let folder = ModelFolder::load(&model).unwrap();
    assert_eq!(folder.configuration(), ConfigurationName::TwoD);
    assert_eq!(folder.plan, tiny_plan());
    assert_eq!(folder.labels, tiny_labels());
    let mut loaded = folder.predictor();
    let shape = [2, 1, 16, 16];
    let input: Vec<f32> = (0..512).map(|v| ((v * 37) % 101) as f32 / 50.0 - 1.0).collect();
    let a = saved.predict(&input, &shape).unwrap();
    let b = loaded.predict(&input, &shape).unwrap();
    assert_eq!(a, b, "the loaded network computes exactly what the saved one did");
    let options = folder.predict_options().unwrap();
    assert_eq!(options.sliding_window.patch_size, vec![16, 16]);
    assert!(options.sliding_window.mirror_axes.is_empty(), "2D: no anatomically safe mirror axis");

    // Ontology ids -> dataset values.
    let seg = Volume::new([3, 1, 1], vec![0, 20, 120], Geometry::default()).unwrap();
    assert_eq!(folder.labels.to_dataset_values(&seg).unwrap().data(), &[0, 5, 11]);
    assert_eq!(folder.labels.dataset_values(), vec![0, 5, 11]);
    let unknown = Volume::new([1, 1, 1], vec![21], Geometry::default()).unwrap();
    assert!(folder.labels.to_dataset_values(&unknown).is_err());
}

#[test]
fn broken_folders_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let fresh = |name: &str| {
        let model = root.join(name);
        save_tiny(&model, 1);
        model
    };

    let err = load_err(&root.join("nothing"));
    assert!(err.contains("nothing") && err.contains("not a folder"), "{err}");

    let model = fresh("no_manifest");
    std::fs::remove_file(model.join(MANIFEST_FILE)).unwrap();
    let err = load_err(&model);
    assert!(err.contains("model.json") && err.contains("missing"), "{err}");

    let model = fresh("bad_json");
    std::fs::write(model.join(MANIFEST_FILE), "{ not json").unwrap();
    let err = load_err(&model);
    assert!(err.contains("model.json") && err.contains("invalid JSON"), "{err}");

    let model = fresh("other_widths");
    edit_json(&model.join(MANIFEST_FILE), |v| {
        v["network"]["config"]["features_per_stage"] = serde_json::json!([4, 16])
    });
    let err = load_err(&model);
    assert!(err.contains("weights.bpk") && err.contains("do not fit"), "{err}");

    let model = fresh("class_mismatch");
    edit_json(&model.join(PLAN_FILE), |v| {
        v["labels"].as_array_mut().unwrap().push(serde_json::json!({"value": 24, "name": "L5"}))
    });
    let err = load_err(&model);
    assert!(err.contains("model.json") && err.contains("3 output classes") && err.contains("4 labels"), "{err}");

    let model = fresh("unmapped_label");
    edit_json(&model.join(LABELS_FILE), |v| {
        v["structures"].as_array_mut().unwrap().pop();
    });
    let err = load_err(&model);
    assert!(err.contains("labels.json") && err.contains("120"), "{err}");

    let model = fresh("no_weights");
    std::fs::remove_file(model.join(WEIGHTS_FILE)).unwrap();
    let err = load_err(&model);
    assert!(err.contains("weights.bpk") && err.contains("missing"), "{err}");

    let model = fresh("garbage_weights");
    std::fs::write(model.join(WEIGHTS_FILE), b"not a burnpack").unwrap();
    let err = load_err(&model);
    assert!(err.contains("weights.bpk") && err.contains("cannot read"), "{err}");

    let model = fresh("wrong_rank");
    edit_json(&model.join(MANIFEST_FILE), |v| v["configuration"] = serde_json::json!("3d_fullres"));
    let err = load_err(&model);
    assert!(err.contains("model.json") && err.contains("2D"), "{err}");
}

#[test]
fn a_version_1_model_json_loads_and_predicts_like_version_2() {
    let dir = tempfile::tempdir().unwrap();
    let v2 = dir.path().join("v2");
    save_tiny(&v2, 4);
    // Format 1 had the bare U-Net config under "network" (as models/lumbar-2d had).
    let v1 = dir.path().join("v1");
    std::fs::create_dir(&v1).unwrap();
    for name in [MANIFEST_FILE, PLAN_FILE, LABELS_FILE, WEIGHTS_FILE] {
        std::fs::copy(v2.join(name), v1.join(name)).unwrap();
    }
    edit_json(&v1.join(MANIFEST_FILE), |v| {
        assert_eq!((v["format_version"].as_u64(), v["network"]["kind"].as_str()), (Some(2), Some("plain_conv_unet")));
        let unet = v["network"]["config"].take();
        v["network"] = unet;
        v["format_version"] = serde_json::json!(1);
    });

    let new = ModelFolder::load(&v2).unwrap();
    let old = ModelFolder::load(&v1).unwrap();
    assert_eq!(old.manifest.format_version, MODEL_FORMAT_VERSION, "converted on reading");
    assert_eq!(serde_json::to_value(&old.manifest).unwrap(), serde_json::to_value(&new.manifest).unwrap());
    let shape = [2, 1, 16, 16];
    let input: Vec<f32> = (0..512).map(|v| ((v * 53) % 97) as f32 / 40.0 - 1.2).collect();
    let a = new.predictor().predict(&input, &shape).unwrap();
    let b = old.predictor().predict(&input, &shape).unwrap();
    assert_eq!(a, b, "both formats give the same network and weights");

    edit_json(&v1.join(MANIFEST_FILE), |v| v["format_version"] = serde_json::json!(3));
    let err = load_err(&v1);
    assert!(err.contains("model.json") && err.contains("format_version 3"), "{err}");
    edit_json(&v2.join(MANIFEST_FILE), |v| v["network"]["kind"] = serde_json::json!("no_such_network"));
    let err = load_err(&v2);
    assert!(err.contains("model.json") && err.contains("no_such_network"), "{err}");
}

#[test]
fn prompt_embeddings_that_are_missing_corrupt_or_not_the_plans_name_the_file() {
    use spineseg_infer::model_folder::{PromptEmbeddings, PROMPT_EMBEDDINGS_FILE};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(PROMPT_EMBEDDINGS_FILE);
    let class = |k: usize, id: u16, embedding: serde_json::Value| {
        let entry = serde_json::json!({ "class": k, "structure_id": id, "name": "x", "prompt": "x" });
        let mut entry = entry.as_object().unwrap().clone();
        entry.insert("embedding".into(), embedding);
        serde_json::Value::Object(entry)
    };
    let write = |classes: Vec<serde_json::Value>| {
        let json = serde_json::json!({ "encoder": "tiny", "dim": 2, "classes": classes });
        std::fs::write(&path, serde_json::to_string(&json).unwrap()).unwrap();
    };
    let load_err = || PromptEmbeddings::load(&path).expect_err("a bad file should not load").to_string();

    let err = load_err();
    assert!(err.contains(PROMPT_EMBEDDINGS_FILE), "missing: {err}");

    std::fs::write(&path, "{ \"dim\": 2, \"classes\": [").unwrap();
    let err = load_err();
    assert!(err.contains(PROMPT_EMBEDDINGS_FILE) && err.contains("invalid JSON"), "{err}");

    write(vec![class(0, 0, serde_json::json!([0.0, 1.0])), class(2, 20, serde_json::json!([1.0, 0.0]))]);
    let err = load_err();
    assert!(err.contains(PROMPT_EMBEDDINGS_FILE) && err.contains("entry 1 is class 2"), "{err}");

    write(vec![class(0, 0, serde_json::json!([0.0, 1.0])), class(1, 20, serde_json::json!([1.0]))]);
    let err = load_err();
    assert!(err.contains(PROMPT_EMBEDDINGS_FILE) && err.contains("class 1") && err.contains("got 1"), "{err}");

    // Well-formed, but for two of the plan's three classes (background, L1; not L1/L2).
    write(vec![class(0, 0, serde_json::json!([0.0, 1.0])), class(1, 20, serde_json::json!([1.0, 0.0]))]);
    let embeddings = PromptEmbeddings::load(&path).unwrap();
    let err = embeddings.check_plan(&tiny_plan(), &path).unwrap_err().to_string();
    assert!(err.contains(PROMPT_EMBEDDINGS_FILE) && err.contains("[0, 20]") && err.contains("[0, 20, 120]"), "{err}");
}
