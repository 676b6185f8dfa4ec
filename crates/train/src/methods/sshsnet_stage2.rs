//! SSHSNet's stage 2 (issue 13): the 3D network of the plan's `3d_fullres` configuration,
//! trained on full-resolution patches with the frozen stage-1 networks (a `spineseg train --cps`
//! model folder: its two 2D U-Nets) inside it, as one `sshsnet_hybrid` network
//! (`spineseg_model::SshsHybrid`): their averaged class probabilities are extra input channels
//! and their decoder features join the 3D decoder through cross tri-attention (or a plain
//! concatenation, `tri_attention: false`, the ablation's arm).
//!
//! Stage 1 sees context: a training patch is the plan's 3D patch grown in plane to at least the
//! stage-1 plan's 2D patch (what the 2D networks were trained on), stage 1 runs on all of it
//! and the 3D U-Net on its centre, whose labels the loss takes ([`Batch::centre_crop`]).
//! Prediction runs stage 1 on whole slices (`spineseg_model::SshsHybrid::stage1_volume`).
//!
//! The loss is the supervised one (deep-supervision Dice + cross-entropy, partial labels as
//! [`super::SupervisedSettings`]); only the 3D part steps (the stage-1 parameters are frozen
//! and their outputs detached). The exported model folder holds both stages, so
//! `spineseg predict` runs the cascade like any network. A resumed run takes every weight from
//! its checkpoint, stage 1 included, so it does not read the stage-1 folder again.

use super::cps::SECOND_WEIGHTS_FILE;
use super::single_network::{batch_images, batch_labels, SingleNetwork, SingleNetworkState};
use super::supervised::effective_rule;
use crate::error::{Result, TrainError};
use crate::method::{ExportedNetwork, MethodContext, StepStats, TrainingMethod};
use crate::pseudo_dice::PseudoDice;
use serde::{Deserialize, Serialize};
use spineseg_dataloading::partial_labels::PartialLabelRule;
use spineseg_dataloading::sampling::Batch;
use spineseg_infer::model_folder::ModelManifest;
use spineseg_model::{Network, NetworkConfig, PlainConvUNet, SshsHybridConfig, TextInputs};
use spineseg_preprocessing::plan::{ConfigurationName, Plan};
use std::path::{Path, PathBuf};

/// The in-plane stride the 2D features join at (SSHSNet fuses at a quarter of the resolution).
pub const FUSION_INPLANE_STRIDE: usize = 4;

/// Settings of [`SshsnetStage2Method`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SshsnetStage2Settings {
    /// The stage-1 model folder (`spineseg train --cps`, or any 2D U-Net model folder).
    pub stage1: PathBuf,
    /// Cross tri-attention (`true`) or the plain concatenation.
    pub tri_attention: bool,
    /// Stage 1's log-probabilities added to the logits (`SshsHybridConfig::stage1_prior`).
    #[serde(default)]
    pub stage1_prior: bool,
    /// Partial labels, as [`super::SupervisedSettings`].
    #[serde(default)]
    pub partial_labels: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_label_rule: Option<PartialLabelRule>,
}

impl SshsnetStage2Settings {
    /// The rule the label masks are inferred by; `None` without partial labels.
    pub fn partial_labels(&self) -> Option<PartialLabelRule> {
        effective_rule(self.partial_labels, self.partial_label_rule)
    }
}

/// SSHSNet's hybrid network trained supervised (see the module documentation).
pub struct SshsnetStage2Method {
    network: SingleNetwork,
    /// The plan's 3D patch: what the network predicts.
    plan_patch: Vec<usize>,
    /// What the samplers cut: the plan's patch and stage 1's context.
    input_patch: Vec<usize>,
}

/// The stage-1 folder's 2D U-Nets (the exported network, and the second network of a CPS
/// folder), checked against the stage-2 plan, and the 2D patch they were trained on.
fn stage1_networks(
    dir: &Path,
    plan: &Plan,
    device: &burn::tensor::Device,
) -> Result<(spineseg_model::PlainConvUNetConfig, Vec<PlainConvUNet>, Vec<usize>)> {
    let manifest_path = dir.join("model.json");
    let manifest = ModelManifest::load(&manifest_path).map_err(|e| TrainError::Missing {
        path: manifest_path.clone(),
        detail: format!("not a stage-1 model folder: {e}"),
    })?;
    let incompatible = |detail: String| TrainError::Incompatible { path: manifest_path.clone(), detail };
    if manifest.configuration != ConfigurationName::TwoD {
        return Err(incompatible(format!("stage 1 must be a 2d model, this one is {}", manifest.configuration)));
    }
    if manifest.slice_context > 0 {
        return Err(incompatible(format!(
            "stage 1 takes {} neighbouring slices on each side as channels (slice_context); stage 2 runs stage 1 on \
             single slices: train stage 1 without --slice-context",
            manifest.slice_context
        )));
    }
    let NetworkConfig::PlainConvUNet(config) = &manifest.network else {
        return Err(incompatible(format!(
            "stage 1 must be a plain_conv_unet, this one is {}",
            manifest.network.kind()
        )));
    };
    if config.num_classes != plan.num_classes() || config.in_channels != plan.channel_names.len() {
        return Err(incompatible(format!(
            "stage 1 takes {} channels and gives {} classes; the plan has {} channels and {} classes",
            config.in_channels,
            config.num_classes,
            plan.channel_names.len(),
            plan.num_classes()
        )));
    }
    // Stage 1 must see the slices at the 3D configuration's in-plane spacing.
    let stage1_plan_path = dir.join(spineseg_preprocessing::plan::PLAN_FILE);
    let stage1_plan = Plan::load(&stage1_plan_path)?;
    let spacing = |plan: &Plan, c: ConfigurationName| plan.configuration(c).map(|c| c.spacing_mm.clone());
    let (Some(s2), Some(s3)) =
        (spacing(&stage1_plan, ConfigurationName::TwoD), spacing(plan, ConfigurationName::ThreeDFullres))
    else {
        return Err(incompatible("the stage-1 plan has no 2d or this plan no 3d_fullres configuration".into()));
    };
    let stage1_patch = stage1_plan.configuration(ConfigurationName::TwoD).map(|c| c.patch_size.clone()).unwrap_or_default();
    let in_plane_3d = &s3[s3.len() - 2..];
    if s2.len() < 2 || s2[s2.len() - 2..].iter().zip(in_plane_3d).any(|(a, b)| (a - b).abs() > 1e-6) {
        return Err(incompatible(format!(
            "stage 1 was trained at {s2:?} mm in plane, the 3d_fullres configuration is {s3:?} mm: plan both from the same dataset"
        )));
    }
    let mut networks = Vec::new();
    for file in [manifest.weights.as_str(), SECOND_WEIGHTS_FILE] {
        let path = dir.join(file);
        if file == SECOND_WEIGHTS_FILE && !path.is_file() {
            break;
        }
        let network = Network::PlainConvUNet(config.init(device))
            .try_load_file(&path)
            .map_err(|e| TrainError::Record { path: path.clone(), detail: e.to_string() })?;
        let Network::PlainConvUNet(network) = network else { unreachable!("loaded as a plain_conv_unet") };
        networks.push(network);
    }
    Ok((config.clone(), networks, stage1_patch))
}

/// The training input for the plan patch `patch`: stage 1's context around it.
fn input_patch(config: &NetworkConfig, patch: &[usize]) -> Vec<usize> {
    match config {
        NetworkConfig::SshsHybrid(hybrid) => hybrid.training_input_size(patch),
        _ => patch.to_vec(),
    }
}

impl SshsnetStage2Method {
    /// The hybrid on the plan's 3D U-Net with the stage-1 folder's networks (new run), or the
    /// checkpoint's network (resume).
    pub fn build(
        settings: &SshsnetStage2Settings,
        ctx: &MethodContext<'_>,
        saved: Option<&serde_json::Value>,
    ) -> Result<Self> {
        let partial = settings.partial_labels();
        let plan_patch = ctx.plan.configuration(ctx.configuration).map(|c| c.patch_size.clone()).unwrap_or_default();
        if let Some(saved) = saved {
            let config = SingleNetworkState::network_from_saved(saved, ctx)?;
            let input_patch = input_patch(&config, &plan_patch);
            let network = SingleNetwork::new_of_kind(config, ctx, partial, Ok)?;
            return Ok(SshsnetStage2Method { network, plan_patch, input_patch });
        }
        if ctx.configuration != ConfigurationName::ThreeDFullres {
            return Err(TrainError::Invalid(format!(
                "SSHSNet's stage 2 trains the 3d_fullres configuration, not {}",
                ctx.configuration
            )));
        }
        let (stage1_config, stage1, stage1_patch) = stage1_networks(&settings.stage1, ctx.plan, &ctx.device)?;
        let configs = vec![stage1_config; stage1.len()];
        let config = SshsHybridConfig::for_stages(configs, &ctx.plan_network, FUSION_INPLANE_STRIDE)
            .map_err(|e| TrainError::Invalid(format!("{}: {e}", ctx.plans_path.display())))?
            .with_tri_attention(settings.tri_attention)
            .with_stage1_prior(Some(settings.stage1_prior));
        let divisor = config.size_divisor();
        if plan_patch.len() != 3 || plan_patch.iter().zip(&divisor).any(|(p, d)| p % d != 0) {
            return Err(TrainError::Invalid(format!(
                "{}: the 3d_fullres patch {plan_patch:?} is not a multiple of {divisor:?} (the 3D network's strides)",
                ctx.plans_path.display()
            )));
        }
        let margin = config.context_margin_for(&plan_patch, &stage1_patch);
        let config = NetworkConfig::SshsHybrid(config.with_context_margin(Some(margin)));
        let input_patch = input_patch(&config, &plan_patch);
        let network = SingleNetwork::new_of_kind(config, ctx, partial, |network| match network {
            Network::SshsHybrid(hybrid) => Ok(Network::SshsHybrid(hybrid.with_stage1(stage1))),
            other => Ok(other),
        })?;
        Ok(SshsnetStage2Method { network, plan_patch, input_patch })
    }
}

impl TrainingMethod for SshsnetStage2Method {
    fn num_params(&self) -> usize {
        self.network.num_params()
    }

    fn sampled_patch_size(&self, _plan_patch: &[usize]) -> Vec<usize> {
        self.input_patch.clone()
    }

    /// Stage 1 sees the whole batch patch, the loss takes the labels of its centre.
    fn train_step(&mut self, batch: &Batch, lr: f64) -> Result<StepStats> {
        let centre = batch.centre_crop(&self.plan_patch);
        let device = self.network.devices().1.clone();
        let (images, target) = (batch_images(batch, &device), batch_labels(&centre, &device));
        self.network.train_step_on(&centre, images, target, TextInputs::default(), lr, |_, _, _, _| None)
    }

    fn validation_step(&self, batch: &Batch, dice: &mut PseudoDice) -> Result<f64> {
        let images = batch_images(batch, self.network.devices().0);
        self.network.validation_step_on(images, &batch.centre_crop(&self.plan_patch), dice)
    }

    fn save(&self, dir: &Path) -> Result<()> {
        self.network.save(dir)
    }

    fn load(&mut self, dir: &Path) -> Result<()> {
        self.network.load(dir)
    }

    fn export(&self) -> ExportedNetwork {
        self.network.export()
    }

    fn state(&self) -> serde_json::Value {
        self.network.state()
    }
}
