//! What the one-network methods share: a [`Network`] (any kind: the U-Net, the ConvNeXt V2
//! U-Net) with its optimiser, nnU-Net's
//! deep-supervision Dice + cross-entropy, partial-label masks, the optimisation step and
//! validation. The methods add their own loss terms through [`SingleNetwork::train_step`]'s
//! `extra_loss`.

use crate::checkpoint::{load_optimizer, save_optimizer, MODEL_FILE, OPTIMIZER_FILE};
use crate::error::{Result, TrainError};
use crate::losses::{DeepSupervisionLoss, DeepSupervisionLossConfig, DiceCeLossConfig};
use crate::method::{ExportedNetwork, MethodContext, StepStats};
use crate::optim::optimiser_step;
use crate::pseudo_dice::PseudoDice;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::ModuleOptimizer;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use spineseg_dataloading::partial_labels::{annotated_classes, PartialLabelRule};
use spineseg_preprocessing::plan::Plan;
use spineseg_preprocessing::preprocess::PreprocessedCase;
use spineseg_dataloading::sampling::Batch;
use spineseg_model::{
    DeepLabV3PlusConfig, Network, NetworkConfig, PlainConvUNet, PlainConvUNetConfig, TextInputs, UNetOutput, WeightPrecision,
};
use std::path::Path;
use std::sync::Mutex;

/// Serialises seeding + initialisation: flex's RNG is global to the process, and parameters are
/// created lazily, so both happen under this lock and every parameter is touched before release.
pub(crate) static INIT_LOCK: Mutex<()> = Mutex::new(());

pub(crate) struct Materialise;
impl ModuleVisitor for Materialise {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// A U-Net initialised deterministically from `seed` on `device`.
pub fn init_network(config: &PlainConvUNetConfig, device: &Device, seed: u64) -> PlainConvUNet {
    let _guard = INIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    device.seed(seed);
    let model = config.init(device);
    model.visit(&mut Materialise);
    model
}

/// A network of any kind initialised deterministically from `seed` on `device`.
pub fn init_network_of_kind(config: &NetworkConfig, device: &Device, seed: u64) -> Network {
    let _guard = INIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    device.seed(seed);
    let model = config.init(device);
    model.visit(&mut Materialise);
    model
}

/// Which network a method trains (each network, for a two-network method): the plan's U-Net,
/// or DeepLabv3+ on the plan's stages (`spineseg_model::DeepLabV3Plus`, output stride 16).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkChoice {
    #[default]
    Unet,
    Deeplabv3plus,
}

impl NetworkChoice {
    pub fn is_unet(&self) -> bool {
        *self == NetworkChoice::Unet
    }

    /// The network config for the plan's U-Net `plan_network`, checked.
    pub fn config(&self, ctx: &MethodContext<'_>) -> Result<NetworkConfig> {
        match self {
            NetworkChoice::Unet => Ok(NetworkConfig::from(ctx.plan_network.clone())),
            NetworkChoice::Deeplabv3plus => {
                let config = DeepLabV3PlusConfig::from_unet(&ctx.plan_network);
                config
                    .validate()
                    .map_err(|e| TrainError::Invalid(format!("{}: DeepLabv3+ on this plan: {e}", ctx.plans_path.display())))?;
                Ok(NetworkConfig::DeepLabV3Plus(config))
            }
        }
    }
}

/// `method_state` of a one-network method: the network as built, by kind (a resumed run
/// rebuilds exactly this, whatever the plan says now).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SingleNetworkState {
    pub network: NetworkConfig,
}

impl SingleNetworkState {
    /// The U-Net a resumed run trains, from the checkpoint's `method_state`; checked against
    /// the plan's U-Net (a plan edited between the parts of a run would change the data).
    pub fn unet_from_saved(saved: &serde_json::Value, ctx: &MethodContext<'_>) -> Result<PlainConvUNetConfig> {
        let network = Self::network_from_saved(saved, ctx)?;
        network.plain_conv_unet().cloned().ok_or_else(|| TrainError::Incompatible {
            path: ctx.model_dir.join("training"),
            detail: format!("the checkpoint trains a {} network; this method trains a plain_conv_unet", network.kind()),
        })
    }

    /// The network (any kind) a resumed run trains, from the checkpoint's `method_state`,
    /// checked against the plan's U-Net.
    pub fn network_from_saved(saved: &serde_json::Value, ctx: &MethodContext<'_>) -> Result<NetworkConfig> {
        let incompatible = |detail: String| TrainError::Incompatible { path: ctx.model_dir.join("training"), detail };
        let state: SingleNetworkState = serde_json::from_value(saved.clone())
            .map_err(|e| incompatible(format!("the checkpoint's method_state is not a one-network state: {e}")))?;
        let network = state.network;
        if network.unet_stages().features_per_stage != ctx.plan_network.features_per_stage {
            return Err(TrainError::Incompatible {
                path: ctx.plans_path.to_path_buf(),
                detail: "the plan's network differs from the checkpoint's; resume with the plan the run started with".into(),
            });
        }
        Ok(network)
    }
}

/// `[B, C, *patch]` images and `[B, *patch]` labels as canonical 5D tensors
/// (`[B, C, 1, Y, Z]` for 2D) on `device`.
pub fn batch_tensors(batch: &Batch, device: &Device) -> (Tensor<5>, Tensor<5, Int>) {
    (batch_images(batch, device), batch_labels(batch, device))
}

/// The canonical 3D sides of `batch`'s patch (`[1, Y, Z]` for 2D).
fn canonical_sides(batch: &Batch) -> [usize; 3] {
    match batch.patch_shape.as_slice() {
        [y, z] => [1, *y, *z],
        [x, y, z] => [*x, *y, *z],
        other => panic!("a patch should have 2 or 3 sides, got {other:?}"),
    }
}

/// [`batch_tensors`]' images alone.
pub fn batch_images(batch: &Batch, device: &Device) -> Tensor<5> {
    let [d, h, w] = canonical_sides(batch);
    Tensor::<5>::from_data(TensorData::new(batch.images.clone(), [batch.batch_size, batch.channels, d, h, w]), device)
}

/// [`batch_tensors`]' labels alone.
pub fn batch_labels(batch: &Batch, device: &Device) -> Tensor<5, Int> {
    let [d, h, w] = canonical_sides(batch);
    let labels: Vec<i64> = batch.seg.iter().map(|&v| v as i64).collect();
    Tensor::<5, Int>::from_data(TensorData::new(labels, [batch.batch_size, 1, d, h, w]), device)
}

/// `[batch, classes]`: which classes each sample of `batch` annotates, from its case's entry of
/// `annotated` (indexed like the sampler's cases); `None` when every sample annotates every
/// foreground class (background always counts as supervised).
///
/// A full mask gives the plain loss in exact arithmetic but through other floating-point
/// operations (the marginal cross-entropy), whose rounding depends on the CPU's SIMD kernels.
/// Passing no mask makes a batch without missing labels train exactly as without
/// partial labels, on every CPU.
pub fn batch_label_mask(batch: &Batch, annotated: &[Vec<bool>], device: &Device) -> Option<Tensor<2, Bool>> {
    let all: Vec<usize> = (0..batch.samples.len()).collect();
    label_mask_of(batch, &all, annotated, device)
}

/// [`batch_label_mask`] for the samples of `batch` at `rows` only (in that order).
pub fn label_mask_of(batch: &Batch, rows: &[usize], annotated: &[Vec<bool>], device: &Device) -> Option<Tensor<2, Bool>> {
    let classes = annotated.first().map_or(0, Vec::len);
    let flags_of = || rows.iter().map(|&b| &annotated[batch.samples[b].case]);
    if flags_of().all(|row| row.iter().skip(1).all(|&flag| flag)) {
        return None;
    }
    let flags: Vec<bool> = flags_of().flat_map(|row| row.iter().copied()).collect();
    Some(Tensor::<2, Bool>::from_data(TensorData::new(flags, [rows.len(), classes]), device))
}

/// The classes each case annotates (partial labels: what its dataset declares, else by `rule`);
/// a case without labels annotates everything.
pub fn annotated_per_case(plan: &Plan, cases: &[PreprocessedCase], rule: PartialLabelRule) -> Vec<Vec<bool>> {
    cases
        .iter()
        .map(|case| match &case.seg {
            Some(seg) => annotated_classes(&plan.labels, seg.data(), rule, case.properties.annotated_structures.as_deref()),
            None => vec![true; plan.labels.len()],
        })
        .collect()
}

/// One network in training (see the module documentation).
pub struct SingleNetwork {
    /// `None` only inside an optimiser step, which takes the network by value.
    model: Option<Network>,
    config: NetworkConfig,
    optimizer: ModuleOptimizer,
    loss: DeepSupervisionLoss,
    device: Device,
    inference_device: Device,
    grad_clip_norm: Option<f64>,
    /// Per training / validation case, with partial labels.
    train_annotated: Option<Vec<Vec<bool>>>,
    val_annotated: Option<Vec<Vec<bool>>>,
}

impl SingleNetwork {
    /// Initialises `config` from the run's seed and the run's optimiser; `partial_labels` turns
    /// on the per-case label masks, inferred by its rule. `prepare` may replace parts of the fresh network before the
    /// optimiser sees it (the text method's frozen class embeddings).
    pub fn new(
        config: PlainConvUNetConfig,
        ctx: &MethodContext<'_>,
        partial_labels: Option<PartialLabelRule>,
        prepare: impl FnOnce(PlainConvUNet) -> PlainConvUNet,
    ) -> Result<SingleNetwork> {
        let model = prepare(init_network(&config, &ctx.device, ctx.seed));
        Self::from_network(NetworkConfig::from(config), Network::from(model), ctx, partial_labels)
    }

    /// [`new`](Self::new) for a network of any kind: `prepare` may replace parts of the fresh
    /// network (a pretrained encoder).
    pub fn new_of_kind(
        config: NetworkConfig,
        ctx: &MethodContext<'_>,
        partial_labels: Option<PartialLabelRule>,
        prepare: impl FnOnce(Network) -> Result<Network>,
    ) -> Result<SingleNetwork> {
        let model = prepare(init_network_of_kind(&config, &ctx.device, ctx.seed))?;
        Self::from_network(config, model, ctx, partial_labels)
    }

    /// [`new_of_kind`](Self::new_of_kind) initialised from `seed` instead of the run's (the
    /// second network of a two-network method).
    pub fn new_of_kind_seeded(
        config: NetworkConfig,
        ctx: &MethodContext<'_>,
        partial_labels: Option<PartialLabelRule>,
        seed: u64,
    ) -> Result<SingleNetwork> {
        let model = init_network_of_kind(&config, &ctx.device, seed);
        Self::from_network(config, model, ctx, partial_labels)
    }

    fn from_network(
        config: NetworkConfig,
        model: Network,
        ctx: &MethodContext<'_>,
        partial_labels: Option<PartialLabelRule>,
    ) -> Result<SingleNetwork> {
        let optimizer = ctx.optimizer.init();
        let batch_dice = ctx
            .plan
            .configuration(ctx.configuration)
            .ok_or_else(|| TrainError::Invalid(format!("the plan has no configuration {}", ctx.configuration)))?
            .batch_dice;
        let loss = DeepSupervisionLossConfig::new(DiceCeLossConfig::new().with_batch_dice(batch_dice), model.num_outputs()).init();
        let annotated = |cases| partial_labels.map(|rule| annotated_per_case(ctx.plan, cases, rule));
        Ok(SingleNetwork {
            model: Some(model),
            config,
            optimizer,
            loss,
            device: ctx.device.clone(),
            inference_device: ctx.inference_device.clone(),
            grad_clip_norm: ctx.grad_clip_norm,
            train_annotated: annotated(ctx.train_cases),
            val_annotated: annotated(ctx.val_cases),
        })
    }

    pub fn model(&self) -> &Network {
        self.model.as_ref().expect("the network is only taken during an optimiser step")
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    pub fn num_params(&self) -> usize {
        self.model().num_params()
    }

    /// Forward with deep supervision, the Dice + CE loss plus `extra_loss(network,
    /// level_features, target, label_mask)` if it returns one (`level_features`: every decoder
    /// level's features, full resolution first), backward, global-norm clipping, optimiser step.
    pub fn train_step(
        &mut self,
        batch: &Batch,
        lr: f64,
        extra_loss: impl FnOnce(&Network, Vec<Tensor<5>>, Tensor<5, Int>, Option<Tensor<2, Bool>>) -> Option<Tensor<1>>,
    ) -> Result<StepStats> {
        self.train_step_with_text(batch, TextInputs::default(), lr, extra_loss)
    }

    /// [`train_step`](Self::train_step) with text inputs for a text-guided network (per-sample
    /// prompt embeddings, reports; on the training device).
    pub fn train_step_with_text(
        &mut self,
        batch: &Batch,
        text: TextInputs,
        lr: f64,
        extra_loss: impl FnOnce(&Network, Vec<Tensor<5>>, Tensor<5, Int>, Option<Tensor<2, Bool>>) -> Option<Tensor<1>>,
    ) -> Result<StepStats> {
        let (images, target) = batch_tensors(batch, &self.device);
        self.train_step_on(batch, images, target, text, lr, extra_loss)
    }

    /// [`train_step_with_text`](Self::train_step_with_text) on `images` and `target` (on the
    /// training device) in place of `batch`'s own, whose samples they are: for a network that
    /// predicts less than it sees, `target` is the labels of what it predicts.
    pub fn train_step_on(
        &mut self,
        batch: &Batch,
        images: Tensor<5>,
        target: Tensor<5, Int>,
        text: TextInputs,
        lr: f64,
        extra_loss: impl FnOnce(&Network, Vec<Tensor<5>>, Tensor<5, Int>, Option<Tensor<2, Bool>>) -> Option<Tensor<1>>,
    ) -> Result<StepStats> {
        let model = self.model.take().expect("the network is only taken during an optimiser step");
        let label_mask = self.train_annotated.as_deref().and_then(|a| batch_label_mask(batch, a, &self.device));
        let UNetOutput { logits, level_features, .. } = model.forward_with_text(images, text);
        let mut loss = self.loss.forward(logits, target.clone(), label_mask.clone());
        if let Some(extra) = extra_loss(&model, level_features, target, label_mask) {
            loss = loss + extra;
        }
        let (model, stats) = optimiser_step(model, loss, &mut self.optimizer, lr, self.grad_clip_norm);
        self.model = Some(model);
        Ok(stats)
    }

    /// A step on `images` (`[B, C, *patch]` on the training device; the batch's own, or mixed
    /// from them) of which only the samples at `labelled` have labels in `target`: Dice + CE
    /// (with partial-label masks) on those samples alone, plus `extra(full-resolution logits of
    /// every sample)` if it returns a term (a semi-supervised loss on the unlabelled samples).
    pub fn train_step_mixed(
        &mut self,
        batch: &Batch,
        images: Tensor<5>,
        target: Tensor<5, Int>,
        labelled: &[usize],
        lr: f64,
        extra: impl FnOnce(Tensor<5>) -> Option<Tensor<1>>,
    ) -> Result<StepStats> {
        let model = self.model.take().expect("the network is only taken during an optimiser step");
        let UNetOutput { logits, .. } = model.forward_detailed(images);
        let full_resolution = logits[0].clone();
        let mut loss = None;
        if !labelled.is_empty() {
            let index = Tensor::<1, Int>::from_data(
                TensorData::new(labelled.iter().map(|&b| b as i64).collect::<Vec<_>>(), [labelled.len()]),
                &self.device,
            );
            let outputs: Vec<Tensor<5>> = logits.into_iter().map(|l| l.select(0, index.clone())).collect();
            let label_mask =
                self.train_annotated.as_deref().and_then(|annotated| label_mask_of(batch, labelled, annotated, &self.device));
            loss = Some(self.loss.forward(outputs, target.select(0, index), label_mask));
        }
        if let Some(term) = extra(full_resolution) {
            loss = Some(match loss {
                Some(loss) => loss + term,
                None => term,
            });
        }
        let Some(loss) = loss else {
            self.model = Some(model);
            return Ok(StepStats { loss: 0.0, grad_norm: f64::NAN });
        };
        let (model, stats) = optimiser_step(model, loss, &mut self.optimizer, lr, self.grad_clip_norm);
        self.model = Some(model);
        Ok(stats)
    }

    /// The arg max of the current network's full-resolution output on `images` (inference
    /// device, no gradients): `[B, 1, *patch]`.
    pub fn hard_prediction(&self, images: Tensor<5>) -> Tensor<5, Int> {
        let eval_model = self.model().valid();
        let logits = eval_model.forward_canonical(images).swap_remove(0);
        logits.argmax(1)
    }

    /// The inference device (no autodiff) and the training device.
    pub fn devices(&self) -> (&Device, &Device) {
        (&self.inference_device, &self.device)
    }

    /// Loss of one validation batch (Dice + CE only) and its arg max into `dice`.
    pub fn validation_step(&self, batch: &Batch, dice: &mut PseudoDice) -> Result<f64> {
        self.validation_step_on(batch_images(batch, &self.inference_device), batch, dice)
    }

    /// [`validation_step`](Self::validation_step) of `images` (inference device) scored
    /// against `batch`'s labels: for a network that sees more than it predicts, `images` is
    /// what it sees and `batch` holds what it predicts.
    pub fn validation_step_on(&self, images: Tensor<5>, batch: &Batch, dice: &mut PseudoDice) -> Result<f64> {
        let eval_model = self.model().valid();
        let target = batch_labels(batch, &self.inference_device);
        let label_mask = self.val_annotated.as_deref().and_then(|a| batch_label_mask(batch, a, &self.inference_device));
        let outputs = eval_model.forward_canonical(images);
        let prediction = outputs[0].clone().argmax(1);
        let loss = self.loss.forward(outputs, target, label_mask).into_scalar::<f32>() as f64;
        let prediction: Vec<u8> = prediction
            .try_into_vec_as::<i64>()
            .expect("arg max indices should convert to i64")
            .into_iter()
            .map(|c| c as u8)
            .collect();
        let per_sample = batch.seg.len() / batch.batch_size.max(1);
        for (b, sample) in batch.samples.iter().enumerate() {
            let voxels = b * per_sample..(b + 1) * per_sample;
            let annotated = self.val_annotated.as_ref().map(|a| a[sample.case].as_slice());
            dice.add_annotated(&prediction[voxels.clone()], &batch.seg[voxels], annotated);
        }
        Ok(loss)
    }

    /// `model.bpk` (the network kind's own record, in single precision: the file a model folder
    /// gets) and `optimizer.bpk` in `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MODEL_FILE);
        self.model()
            .save_weights(&path, WeightPrecision::Single)
            .map_err(|e| TrainError::Record { path: path.clone(), detail: e.to_string() })?;
        save_optimizer(&self.optimizer, &dir.join(OPTIMIZER_FILE))
    }

    /// Restores what [`SingleNetwork::save`] wrote.
    pub fn load(&mut self, dir: &Path) -> Result<()> {
        let model = self.model.take().expect("the network is only taken during an optimiser step");
        let path = dir.join(MODEL_FILE);
        self.model = Some(model.try_load_file(&path).map_err(|e| TrainError::Record { path: path.clone(), detail: e.to_string() })?);
        let optimizer = std::mem::replace(&mut self.optimizer, crate::config::OptimizerConfig::sgd().init());
        self.optimizer = load_optimizer(optimizer, &dir.join(OPTIMIZER_FILE))?;
        Ok(())
    }

    /// The network of `model.bpk`.
    pub fn export(&self) -> ExportedNetwork {
        ExportedNetwork { checkpoint_file: MODEL_FILE.to_string(), network: self.config.clone(), companions: Vec::new() }
    }

    /// `{"network": ...}`.
    pub fn state(&self) -> serde_json::Value {
        serde_json::to_value(SingleNetworkState { network: self.config.clone() })
            .expect("a network config should serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_masks_follow_each_samples_case() {
        use spineseg_dataloading::sampling::SampleInfo;
        let sample = |case| SampleInfo { case, origin: [0; 3], valid: [1, 2, 2], forced_foreground: false, class: None, labelled: true };
        let batch = Batch {
            images: vec![0.0; 12],
            seg: vec![0; 12],
            batch_size: 3,
            channels: 1,
            patch_shape: vec![2, 2],
            samples: vec![sample(1), sample(0), sample(1)],
        };
        let annotated = vec![vec![true, true, false], vec![true, false, true]];
        let mask = batch_label_mask(&batch, &annotated, &Device::flex()).expect("two cases lack a class");
        assert_eq!(mask.dims(), [3, 3]);
        let flags: Vec<bool> = mask.into_data().try_to_vec::<bool>().unwrap();
        assert_eq!(flags, [true, false, true, true, true, false, true, false, true]);
        // Every sample annotates every foreground class (background's flag does not matter):
        // no mask, so the loss is the plain one, operation for operation.
        let complete = vec![vec![false, true, true], vec![true, true, true]];
        assert!(batch_label_mask(&batch, &complete, &Device::flex()).is_none());
    }
}
