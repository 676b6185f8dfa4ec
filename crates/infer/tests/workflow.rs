//! `workflow::predict_jobs` end to end without the binary: phantom images, a plan with a tiny
//! 2D network, a model folder with random weights.

use spineseg_phantom::{write_nnunet_dataset, PhantomConfig};
use spineseg_planning::pipeline::{plan_and_preprocess, PlanAndPreprocessOptions, LABELS_FILE, PLAN_FILE};
use spineseg_preprocessing::plan::{ConfigurationName, Plan};
use spineseg_preprocessing::preprocess::{preprocess_case, CaseVolumes};
use spineseg_anatomy::ontology::StructureNameError;
use spineseg_infer::workflow::{
    jobs_for_folder, labels_sidecar_path, predict_jobs, structures_to_keep, write_untrained_model, PredictJob, PredictObserver, WorkflowError,
};
use spineseg_infer::{predict_case, ModelFolder, OutputLabels};
use std::path::{Path, PathBuf};

/// Two phantom cases and a model folder whose 2D network is shrunk to patch 32 x 32, 3 stages,
/// widths 4-8-16 (fast on a CPU). Returns (images folder, model folder).
fn tiny_model(root: &Path) -> (PathBuf, PathBuf) {
    let dataset = root.join("dataset");
    write_nnunet_dataset(&dataset, &PhantomConfig::small(), 2, 5, true).unwrap();
    let work = root.join("work");
    let options = PlanAndPreprocessOptions {
        configurations: vec![ConfigurationName::TwoD],
        preprocess: false,
        ..PlanAndPreprocessOptions::default()
    };
    plan_and_preprocess(&dataset, &work, &options, &mut |_| {}).unwrap();
    let plans = work.join(PLAN_FILE);
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
    std::fs::write(&plans, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    let plan = Plan::load(&plans).unwrap();
    let labels = OutputLabels::load(&work.join(LABELS_FILE)).unwrap();
    let model = root.join("model");
    write_untrained_model(&model, &plan, &labels, ConfigurationName::TwoD, 42).unwrap();
    (dataset.join("imagesTr"), model)
}

/// Records what the workflow reports.
#[derive(Default)]
struct Events(Vec<String>);

impl PredictObserver for Events {
    fn on_case_start(&mut self, job: &PredictJob) {
        self.0.push(format!("start {}", job.id));
    }
    fn on_case_end(&mut self, job: &PredictJob, result: Result<f64, &WorkflowError>) {
        self.0.push(format!("{} {}", if result.is_ok() { "ok" } else { "failed" }, job.id));
    }
    fn on_written(&mut self, job: &PredictJob, seg: &spineseg_io::Volume<spineseg_io::Label>, _levels: Option<&spineseg_infer::LevelAssignment>) {
        // The mask handed over is the one on disk.
        assert_eq!(spineseg_io::read_labels(&job.output).unwrap().data(), seg.data());
        self.0.push(format!("written {}", job.id));
    }
}

#[test]
fn predicts_a_folder_as_the_step_by_step_pipeline_does() {
    let dir = tempfile::tempdir().unwrap();
    let (images, model_dir) = tiny_model(dir.path());
    let model = ModelFolder::load(&model_dir).unwrap();
    let mut options = model.predict_options().unwrap();
    options.sliding_window.mirror_axes.clear();

    // A bad case beside the two good ones: it fails alone and writes nothing.
    let input = dir.path().join("input");
    std::fs::create_dir_all(&input).unwrap();
    for entry in std::fs::read_dir(&images).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, input.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(input.join("bad_0000.nii.gz"), b"this is not gzip").unwrap();
    let out = dir.path().join("out");
    let jobs = jobs_for_folder(&input, &out, 1).unwrap();
    assert_eq!(jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), ["bad", "phantom_000", "phantom_001"]);
    let mut events = Events::default();
    let failures = predict_jobs(&model, &jobs, &options, &mut events);
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].id, "bad");
    assert!(failures[0].error.to_string().contains("bad_0000.nii.gz"), "{}", failures[0].error);
    assert!(!out.join("bad.nii.gz").exists());
    assert_eq!(
        events.0,
        [
            "start bad",
            "failed bad",
            "start phantom_000",
            "written phantom_000",
            "ok phantom_000",
            "start phantom_001",
            "written phantom_001",
            "ok phantom_001"
        ]
    );
    assert!(!out.join("bad.labels.json").exists());

    // Each written file equals the library's steps done by hand.
    for job in &jobs[1..] {
        let case = CaseVolumes::read(&job.id, &job.channels, None).unwrap();
        let preprocessed = preprocess_case(&case, &model.plan, model.configuration()).unwrap();
        let expected = predict_case(&preprocessed, &model.plan, &mut model.predictor(), &options).unwrap();
        let expected = model.labels.to_dataset_values(&expected).unwrap();
        let written = spineseg_io::read_labels(&job.output).unwrap();
        assert_eq!(written.data(), expected.data(), "{}", job.id);
        assert_eq!(written.shape(), case.images[0].shape());
        // What the values mean sits beside the mask: the model folder's labels.json.
        let sidecar = OutputLabels::load(&labels_sidecar_path(&job.output)).unwrap();
        assert_eq!(sidecar, model.labels);
    }
}

#[test]
fn structure_names_resolve_against_the_models_classes() {
    let dir = tempfile::tempdir().unwrap();
    let (_, model_dir) = tiny_model(dir.path());
    let model = ModelFolder::load(&model_dir).unwrap();
    let l4 = model.plan.labels.iter().find(|l| l.value == 23).expect("phantoms label L4");
    assert_eq!(structures_to_keep(&model, "L4 vertebra, vertebra L4").unwrap(), vec![l4.value]);
    let err = structures_to_keep(&model, "C3").unwrap_err();
    assert!(matches!(err, StructureNameError::NotAvailable { .. }), "{err}");
    assert!(err.to_string().contains("does not segment C3 vertebral body"), "{err}");
    assert!(matches!(structures_to_keep(&model, "L4/L5 dsic"), Err(StructureNameError::Unknown { .. })));
}
