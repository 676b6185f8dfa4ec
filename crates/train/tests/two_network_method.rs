//! A method outside the crate with two networks and two optimisers that also learns from an
//! unlabelled case (the shape of cross pseudo supervision) runs on the unchanged engine: it
//! trains, checkpoints both networks, resumes bit for bit and exports one network into the model
//! folder.

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};
use spineseg_phantom::{write_nnunet_dataset, PhantomConfig};
use spineseg_planning::pipeline::{plan_and_preprocess, preprocessed_dir, PlanAndPreprocessOptions};
use spineseg_preprocessing::plan::ConfigurationName;
use spineseg_preprocessing::preprocess::{load_preprocessed, save_preprocessed};
use spineseg_preprocessing::test_support::shrink_2d_network;
use spineseg_dataloading::sampling::Batch;
use spineseg_model::{NetworkConfig, PlainConvUNet, PlainConvUNetConfig};
use spineseg_train::checkpoint::{load_module, load_optimizer, parameter_values, save_module, save_optimizer, STATE_FILE};
use spineseg_train::methods::single_network::batch_tensors;
use spineseg_train::splits::{load_or_create_splits, SPLITS_FILE};
use spineseg_train::{
    clip_grad_norm, init_network, run, DeepSupervisionLoss, DeepSupervisionLossConfig, DiceCeLossConfig, EngineConfig,
    ExportedNetwork, MethodContext, MethodSpec, OptimizerConfig, PseudoDice, Result, RunOptions, RunPaths, Silent,
    StepStats, TrainingMethod,
};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Unlabelled samples the method has trained on, over all runs of this test binary.
static UNLABELLED_SAMPLES: AtomicUsize = AtomicUsize::new(0);

/// Cross pseudo supervision in miniature: networks A and B, each supervised by the labels of the
/// labelled samples and, on every sample, by the other's arg max (weight `pseudo_weight`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CrossPseudoSpec {
    pseudo_weight: f64,
}

#[derive(Serialize, Deserialize)]
struct CrossPseudoState {
    network: PlainConvUNetConfig,
}

struct CrossPseudo {
    config: PlainConvUNetConfig,
    a: Option<PlainConvUNet>,
    b: Option<PlainConvUNet>,
    optimizer_a: ModuleOptimizer,
    optimizer_b: ModuleOptimizer,
    loss: DeepSupervisionLoss,
    device: Device,
    inference_device: Device,
    pseudo_weight: f64,
}

impl MethodSpec for CrossPseudoSpec {
    fn name(&self) -> String {
        "cross_pseudo_test".into()
    }

    fn trains_on_unlabelled_cases(&self) -> bool {
        true
    }

    fn build(&self, ctx: &MethodContext<'_>, saved: Option<&serde_json::Value>) -> Result<Box<dyn TrainingMethod>> {
        let config = match saved {
            Some(saved) => serde_json::from_value::<CrossPseudoState>(saved.clone()).expect("our own state").network,
            None => ctx.plan_network.clone(),
        };
        let a = init_network(&config, &ctx.device, ctx.seed);
        let b = init_network(&config, &ctx.device, ctx.seed.wrapping_add(1));
        let loss = DeepSupervisionLossConfig::new(DiceCeLossConfig::new(), a.num_outputs()).init();
        Ok(Box::new(CrossPseudo {
            config,
            a: Some(a),
            b: Some(b),
            optimizer_a: ctx.optimizer.init(),
            optimizer_b: ctx.optimizer.init(),
            loss,
            device: ctx.device.clone(),
            inference_device: ctx.inference_device.clone(),
            pseudo_weight: self.pseudo_weight,
        }))
    }
}

/// The arg max of a network's full-resolution output as `[B, 1, ...]` labels, without gradient.
fn pseudo_labels(network: &PlainConvUNet, images: Tensor<5>) -> Tensor<5, Int> {
    network.forward_canonical(images)[0].clone().detach().argmax(1)
}

/// A batch as tensors: images, labels, and the rows of the labelled samples (`None`: none).
struct StepInputs {
    images: Tensor<5>,
    target: Tensor<5, Int>,
    labelled: Option<Tensor<1, Int>>,
}

impl CrossPseudo {
    fn step_one(
        &self,
        network: PlainConvUNet,
        optimizer: &mut ModuleOptimizer,
        inputs: &StepInputs,
        pseudo: Tensor<5, Int>,
        lr: f64,
    ) -> (PlainConvUNet, f64, f64) {
        let outputs = network.forward_canonical(inputs.images.clone());
        let mut loss = self.loss.forward(outputs.clone(), pseudo, None).mul_scalar(self.pseudo_weight);
        if let Some(rows) = &inputs.labelled {
            let pick = |t: Tensor<5>| t.select(0, rows.clone());
            let supervised_outputs = outputs.into_iter().map(pick).collect();
            loss = loss + self.loss.forward(supervised_outputs, inputs.target.clone().select(0, rows.clone()), None);
        }
        let value = loss.clone().into_scalar::<f32>() as f64;
        let mut grads = GradientsParams::from_grads(loss.backward(), &network);
        let norm = clip_grad_norm(&network, &mut grads, 12.0);
        (optimizer.step(lr, network, grads), value, norm)
    }
}

impl TrainingMethod for CrossPseudo {
    fn num_params(&self) -> usize {
        self.a.as_ref().unwrap().num_params() + self.b.as_ref().unwrap().num_params()
    }

    fn train_step(&mut self, batch: &Batch, lr: f64) -> Result<StepStats> {
        let (images, target) = batch_tensors(batch, &self.device);
        let rows: Vec<i64> = (0..batch.samples.len()).filter(|&i| batch.samples[i].labelled).map(|i| i as i64).collect();
        UNLABELLED_SAMPLES.fetch_add(batch.samples.len() - rows.len(), Ordering::Relaxed);
        let labelled = (!rows.is_empty())
            .then(|| Tensor::<1, Int>::from_data(burn::tensor::TensorData::new(rows.clone(), [rows.len()]), &self.device));
        let (a, b) = (self.a.take().unwrap(), self.b.take().unwrap());
        let pseudo_from_a = pseudo_labels(&a, images.clone());
        let pseudo_from_b = pseudo_labels(&b, images.clone());
        let inputs = StepInputs { images, target, labelled };
        let mut optimizer_a = std::mem::replace(&mut self.optimizer_a, OptimizerConfig::sgd().init());
        let mut optimizer_b = std::mem::replace(&mut self.optimizer_b, OptimizerConfig::sgd().init());
        let (a, loss_a, norm_a) = self.step_one(a, &mut optimizer_a, &inputs, pseudo_from_b, lr);
        let (b, loss_b, norm_b) = self.step_one(b, &mut optimizer_b, &inputs, pseudo_from_a, lr);
        (self.a, self.b, self.optimizer_a, self.optimizer_b) = (Some(a), Some(b), optimizer_a, optimizer_b);
        Ok(StepStats { loss: loss_a + loss_b, grad_norm: norm_a.max(norm_b) })
    }

    fn validation_step(&self, batch: &Batch, dice: &mut PseudoDice) -> Result<f64> {
        let network = self.a.as_ref().unwrap().valid();
        let (images, target) = batch_tensors(batch, &self.inference_device);
        let outputs = network.forward_canonical(images);
        let prediction: Vec<u8> =
            outputs[0].clone().argmax(1).try_into_vec_as::<i64>().unwrap().into_iter().map(|c| c as u8).collect();
        dice.add(&prediction, &batch.seg);
        Ok(self.loss.forward(outputs, target, None).into_scalar::<f32>() as f64)
    }

    fn save(&self, dir: &Path) -> Result<()> {
        save_module(self.a.as_ref().unwrap(), &dir.join("network_a.bpk"))?;
        save_module(self.b.as_ref().unwrap(), &dir.join("network_b.bpk"))?;
        save_optimizer(&self.optimizer_a, &dir.join("optimizer_a.bpk"))?;
        save_optimizer(&self.optimizer_b, &dir.join("optimizer_b.bpk"))
    }

    fn load(&mut self, dir: &Path) -> Result<()> {
        self.a = Some(load_module(self.a.take().unwrap(), &dir.join("network_a.bpk"))?);
        self.b = Some(load_module(self.b.take().unwrap(), &dir.join("network_b.bpk"))?);
        let optimizer_a = std::mem::replace(&mut self.optimizer_a, OptimizerConfig::sgd().init());
        self.optimizer_a = load_optimizer(optimizer_a, &dir.join("optimizer_a.bpk"))?;
        let optimizer_b = std::mem::replace(&mut self.optimizer_b, OptimizerConfig::sgd().init());
        self.optimizer_b = load_optimizer(optimizer_b, &dir.join("optimizer_b.bpk"))?;
        Ok(())
    }

    fn export(&self) -> ExportedNetwork {
        ExportedNetwork { checkpoint_file: "network_a.bpk".into(), network: NetworkConfig::from(&self.config), companions: Vec::new() }
    }

    fn state(&self) -> serde_json::Value {
        serde_json::to_value(CrossPseudoState { network: self.config.clone() }).unwrap()
    }
}

/// A 3-case phantom planned and preprocessed for 2D with a tiny network (32x32 patch, batch 2,
/// 3 stages 4-8-16).
fn tiny_work(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("phantom");
    write_nnunet_dataset(&data, &PhantomConfig::small(), 3, 1, false).unwrap();
    let work = dir.join("work");
    let configuration = ConfigurationName::TwoD;
    let options = PlanAndPreprocessOptions { configurations: vec![configuration], ..Default::default() };
    let summary = plan_and_preprocess(&data, &work, &options, &mut |_| {}).unwrap();
    let mut plan = summary.plan;
    shrink_2d_network(&mut plan);
    plan.save(&summary.plans_path).unwrap();
    let ids = &summary.preprocessed[&configuration];
    let preprocessed = preprocessed_dir(&work, configuration);
    // One training case of fold 0 loses its labels: the method learns from it without them.
    let splits = load_or_create_splits(&work.join(SPLITS_FILE), ids).unwrap();
    let unlabelled = &splits[0].train[0];
    let mut case = load_preprocessed(&preprocessed, unlabelled).unwrap();
    case.seg = None;
    for entry in std::fs::read_dir(&preprocessed).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with(&format!("{unlabelled}.")) {
            std::fs::remove_file(path).unwrap();
        }
    }
    save_preprocessed(&preprocessed, &case).unwrap();
    work
}

fn engine_config() -> EngineConfig {
    let mut config = EngineConfig::new(ConfigurationName::TwoD);
    config.epochs = 2;
    config.iterations_per_epoch = 2;
    config.validation_batches = 1;
    config.seed = 3;
    config.optimizer = OptimizerConfig::adamw();
    config
}

fn weights(path: &Path, config: &PlainConvUNetConfig) -> Vec<Vec<f32>> {
    parameter_values(&load_module(config.init(&Device::flex()), path).unwrap())
}

#[test]
fn a_two_network_method_trains_resumes_exactly_and_exports_one_network() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tiny_work(tmp.path());
    let spec = CrossPseudoSpec { pseudo_weight: 0.5 };
    let paths = |name: &str| RunPaths { work: work.clone(), model_dir: tmp.path().join(name) };

    // Uninterrupted.
    let whole = paths("whole");
    let outcome = run(&whole, engine_config(), spec.clone(), &RunOptions::default(), &mut Silent).unwrap();
    assert_eq!(outcome.state.epochs_done, 2);
    assert!(UNLABELLED_SAMPLES.load(Ordering::Relaxed) > 0, "the unlabelled training case was sampled");
    let last = whole.checkpoint_last();
    for file in ["network_a.bpk", "network_b.bpk", "optimizer_a.bpk", "optimizer_b.bpk", STATE_FILE] {
        assert!(last.join(file).is_file(), "checkpoint_last/{file}");
    }
    let state = std::fs::read_to_string(last.join(STATE_FILE)).unwrap();
    assert!(state.contains("\"pseudo_weight\": 0.5"), "the method's settings are in the checkpoint: {state}");
    let config = outcome.manifest.network.plain_conv_unet().expect("a U-Net was exported").clone();
    let (a, b) = (weights(&last.join("network_a.bpk"), &config), weights(&last.join("network_b.bpk"), &config));
    assert_ne!(a, b, "the two networks start from different seeds and stay different");

    // The model folder holds network A of the best checkpoint, and prediction loads it.
    let best = whole.checkpoint_best();
    assert_eq!(
        std::fs::read(whole.model_dir.join("weights.bpk")).unwrap(),
        std::fs::read(best.join("network_a.bpk")).unwrap()
    );
    assert_eq!(outcome.manifest.training["method"], "cross_pseudo_test");

    // Stopped after one epoch, then resumed with a different spec that the checkpoint overrides.
    let parts = paths("parts");
    let stop = RunOptions { stop_after_epochs: Some(1), ..RunOptions::default() };
    run(&parts, engine_config(), spec.clone(), &stop, &mut Silent).unwrap();
    let resume = RunOptions { resume: true, ..RunOptions::default() };
    let resumed = run(&parts, engine_config(), CrossPseudoSpec { pseudo_weight: 9.0 }, &resume, &mut Silent).unwrap();
    assert_eq!(resumed.state.epochs_done, 2);
    let parts_last = parts.checkpoint_last();
    for file in ["network_a.bpk", "network_b.bpk"] {
        assert_eq!(weights(&last.join(file), &config), weights(&parts_last.join(file), &config), "{file}");
    }
}
