//! Prediction speed of one case with a randomly initialised network of a plan (no training
//! needed): preprocessing, sliding window with and without mirroring, batch sizes.
//!
//! ```text
//! cargo run --release -p spineseg-infer --example predict_speed -- WORK IMAGE [CONFIGURATION] [MODEL_OUT]
//! ```
//! `WORK` holds `plans.json` and `labels.json` (from `spineseg plan`); `IMAGE` is one channel
//! file; `CONFIGURATION` is `2d` (default) or `3d_fullres`. With `MODEL_OUT`, the random model
//! folder is also written there (for timing `spineseg predict -m MODEL_OUT`).

use spineseg_preprocessing::plan::{ConfigurationName, Plan};
use spineseg_preprocessing::preprocess::{preprocess_case, CaseVolumes};
use spineseg_infer::network::Device;
use spineseg_infer::{
    network_config_for_plan, predict_case, ModelFolder, ModelManifest, NetworkPredictor, OutputLabels,
    PredictOptions,
};
use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: predict_speed WORK IMAGE [2d|3d_fullres] [MODEL_OUT]");
        std::process::exit(2);
    }
    let work = PathBuf::from(&args[0]);
    let image = PathBuf::from(&args[1]);
    let configuration = match args.get(2).map(String::as_str) {
        None | Some("2d") => ConfigurationName::TwoD,
        Some("3d_fullres") => ConfigurationName::ThreeDFullres,
        Some(other) => panic!("unknown configuration {other}"),
    };
    let plan = Plan::load(&work.join(spineseg_infer::model_folder::PLAN_FILE)).expect("plans.json should load");
    let config = network_config_for_plan(&plan, configuration).expect("the plan should describe a network");
    let mut predictor = NetworkPredictor::random(&config, 0, Device::flex());
    if let Some(out) = args.get(3) {
        let labels = OutputLabels::load(&work.join(spineseg_infer::model_folder::LABELS_FILE)).expect("labels.json should load");
        ModelFolder::save(
            &PathBuf::from(out),
            &ModelManifest::new(configuration, config.clone()),
            &plan,
            &labels,
            predictor.network(),
        )
        .expect("the model folder should be written");
        eprintln!("wrote random model folder {out}");
    }

    let t = Instant::now();
    let case = CaseVolumes::read("case", std::slice::from_ref(&image), None).expect("the image should read");
    let read_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let pre = preprocess_case(&case, &plan, configuration).expect("preprocessing should work");
    let preprocess_s = t.elapsed().as_secs_f64();
    println!(
        "{}: shape {:?} -> preprocessed {:?}; read {read_s:.2} s, preprocess {preprocess_s:.2} s",
        image.display(),
        case.images[0].shape(),
        pre.properties.shape_after_resampling
    );
    let base = PredictOptions::for_plan(&plan, configuration).expect("the plan has the configuration");
    let all_axes: Vec<usize> = (0..base.sliding_window.patch_size.len()).collect();
    let mut runs = vec![("default mirroring", base.sliding_window.mirror_axes.clone(), 1)];
    runs.push(("no mirroring", vec![], 1));
    runs.push(("no mirroring, batch 4", vec![], 4));
    runs.push(("mirror every axis (nnU-Net)", all_axes, 1));
    for (name, axes, batch) in runs {
        let mut options = base.clone();
        options.sliding_window.mirror_axes = axes.clone();
        options.sliding_window.batch_size = batch;
        let t = Instant::now();
        let seg = predict_case(&pre, &plan, &mut predictor, &options).expect("prediction should work");
        let s = t.elapsed().as_secs_f64();
        assert_eq!(seg.shape(), case.images[0].shape());
        println!(
            "{name:<30} mirror axes {axes:?}, batch {batch}: {s:.2} s (patch {:?}, step {})",
            options.sliding_window.patch_size, options.sliding_window.tile_step_size
        );
    }
}
