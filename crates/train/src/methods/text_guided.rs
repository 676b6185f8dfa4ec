//! ATM-Net's text guidance as a training method: the plan's U-Net with HASF text-image fusion
//! (`spineseg_model::TextFusion`) over the frozen class-prompt embeddings of
//! `MODEL/prompt_embeddings.json`, trained with Dice + cross-entropy plus `ccae_weight` x the
//! CCAE contrastive loss ([`crate::losses::ccae`]). The logged training loss includes CCAE, the
//! validation loss does not. The weights hold the embeddings, so resume and prediction need no
//! text encoder. With `view_prompts`, training samples take ATM-Net's per-view prompts
//! ([`super::view_prompts`]) in place of the class prompts; CCAE still aligns to the class
//! prompts, and validation and prediction use the class prompts. With `reports`, the network
//! has a report token and each sample carries its case's report ([`super::reports`]);
//! validation uses the "no report" token.

use super::single_network::{SingleNetwork, SingleNetworkState};
use super::reports::ReportLookup;
use super::view_prompts::ViewPromptLookup;
use crate::error::{Result, TrainError};
use crate::losses::ccae::ccae_loss;
use crate::method::{ExportedNetwork, MethodContext, StepStats, TrainingMethod};
use crate::pseudo_dice::PseudoDice;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use spineseg_dataloading::partial_labels::PartialLabelRule;
use spineseg_dataloading::sampling::Batch;
use spineseg_infer::model_folder::{PromptEmbeddings, PROMPT_EMBEDDINGS_FILE};
use spineseg_model::{TextFusion, TextGuidanceConfig, TextInputs};
use std::path::Path;

/// Settings of [`TextGuidedMethod`]: the fusion's shape and the CCAE loss (missing fields take
/// the defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TextGuidedSettings {
    /// As [`super::SupervisedSettings::partial_labels`].
    #[serde(default)]
    pub partial_labels: bool,
    /// As [`super::SupervisedSettings::partial_label_rule`] (`None` with partial labels: by kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_label_rule: Option<PartialLabelRule>,
    /// Width of the text tokens and of the cross-attention.
    pub embed_dim: usize,
    /// Attention heads (`embed_dim` must be a multiple).
    pub heads: usize,
    /// How many of the deepest encoder stages get bidirectional cross-attention.
    pub fused_stages: usize,
    /// Weight of the CCAE contrastive loss added to Dice + cross-entropy (0 switches it off).
    pub ccae_weight: f64,
    /// Temperature of the CCAE InfoNCE.
    pub ccae_temperature: f64,
    /// ATM-Net's per-view prompts in training (2D only; needs `MODEL/view_prompt_embeddings.json`).
    #[serde(default)]
    pub view_prompts: bool,
    /// Share of labelled training samples that take their per-view prompts (the others keep the
    /// class prompts), with `view_prompts`.
    #[serde(default = "default_view_prompt_rate")]
    pub view_prompt_rate: f64,
    /// A report token fed with each case's report (needs `MODEL/report_embeddings.json`).
    #[serde(default)]
    pub reports: bool,
}

fn default_view_prompt_rate() -> f64 {
    0.5
}

impl Default for TextGuidedSettings {
    /// Width 64, 4 heads, the 2 deepest stages (0.19 M parameters on the lumbar 2D plan; a CPU
    /// training step took about 1.3x the visual-only one in the ablation); CCAE weight 0.1 and
    /// temperature 0.07 (CLIP's initial temperature); class prompts only (per-view prompts at
    /// rate 0.5 when switched on: half the samples keep the prompts inference uses).
    fn default() -> Self {
        TextGuidedSettings {
            partial_labels: false,
            partial_label_rule: None,
            embed_dim: 64,
            heads: 4,
            fused_stages: 2,
            ccae_weight: 0.1,
            ccae_temperature: 0.07,
            view_prompts: false,
            view_prompt_rate: default_view_prompt_rate(),
            reports: false,
        }
    }
}

impl TextGuidedSettings {
    /// The rule the label masks are inferred by; `None` without partial labels.
    pub fn partial_labels(&self) -> Option<PartialLabelRule> {
        super::supervised::effective_rule(self.partial_labels, self.partial_label_rule)
    }

    /// HASF's network configuration for prompts of `text_dim` values (with a report token when
    /// `reports`).
    pub fn fusion_config(&self, text_dim: usize) -> TextGuidanceConfig {
        TextGuidanceConfig::new(text_dim)
            .with_embed_dim(self.embed_dim)
            .with_heads(self.heads)
            .with_fused_stages(self.fused_stages)
            .with_report(self.reports)
    }

    /// Checks the values; the message names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Invalid(m));
        if self.embed_dim == 0 || self.heads == 0 || !self.embed_dim.is_multiple_of(self.heads) {
            return bad(format!("text guidance: embed_dim {} must be a positive multiple of heads {}", self.embed_dim, self.heads));
        }
        if !(self.ccae_weight.is_finite() && self.ccae_weight >= 0.0) {
            return bad(format!("text guidance: ccae_weight {} must be >= 0", self.ccae_weight));
        }
        if !(self.ccae_temperature.is_finite() && self.ccae_temperature > 0.0) {
            return bad(format!("text guidance: ccae_temperature {} must be positive", self.ccae_temperature));
        }
        if !(0.0..=1.0).contains(&self.view_prompt_rate) {
            return bad(format!("text guidance: view_prompt_rate {} must be between 0 and 1", self.view_prompt_rate));
        }
        Ok(())
    }
}

/// The text-guided U-Net in training.
pub struct TextGuidedMethod {
    network: SingleNetwork,
    settings: TextGuidedSettings,
    /// With `view_prompts`: the per-sample prompt embeddings.
    view_prompts: Option<ViewPromptLookup>,
    /// With `reports`: the per-sample report embeddings.
    reports: Option<ReportLookup>,
}

/// A new fusion with the frozen class prompts `embeddings` and, with `reports`, the frozen
/// "no report" embedding of its report token.
pub(super) fn init_fusion(
    fusion: TextFusion,
    embeddings: Tensor<2>,
    reports: Option<&ReportLookup>,
    device: &Device,
) -> TextFusion {
    let fusion = fusion.with_class_embeddings(embeddings);
    match reports {
        Some(reports) => {
            let null = reports.null_report().to_vec();
            let dim = null.len();
            fusion.with_null_report(Tensor::<2>::from_data(TensorData::new(null, [1, dim]), device))
        }
        None => fusion,
    }
}

/// `MODEL/prompt_embeddings.json`, checked against the plan's classes.
pub(super) fn load_prompt_embeddings(ctx: &MethodContext<'_>) -> Result<PromptEmbeddings> {
    let path = ctx.model_dir.join(PROMPT_EMBEDDINGS_FILE);
    if !path.is_file() {
        return Err(TrainError::Missing {
            path,
            detail: "text-guided training needs the class-prompt embeddings (`spineseg train --text-guided` writes them)".into(),
        });
    }
    let embeddings = PromptEmbeddings::load(&path)?;
    embeddings.check_plan(ctx.plan, &path)?;
    Ok(embeddings)
}

impl TextGuidedMethod {
    /// A new run reads the class embeddings once, for the network's text width and its frozen
    /// parameter; a resumed run takes both from its checkpoint (the network config in
    /// `method_state`, the embeddings in the weights).
    pub fn build(settings: &TextGuidedSettings, ctx: &MethodContext<'_>, saved: Option<&serde_json::Value>) -> Result<Self> {
        let reports = settings.reports.then(|| ReportLookup::load(ctx.model_dir, ctx.train_cases)).transpose()?;
        // Read once: a new run's network and the per-view lookup both need them.
        let class_prompts =
            (saved.is_none() || settings.view_prompts).then(|| load_prompt_embeddings(ctx)).transpose()?;
        let network = match saved {
            Some(saved) => SingleNetwork::new(SingleNetworkState::unet_from_saved(saved, ctx)?, ctx, settings.partial_labels(), |m| m)?,
            None => {
                let prompts = class_prompts.as_ref().expect("a new run reads the class prompts");
                let config = ctx.plan_network.clone().with_text_guidance(Some(settings.fusion_config(prompts.dim)));
                config
                    .validate()
                    .map_err(|e| TrainError::Invalid(format!("{}: text guidance: {e}", ctx.plans_path.display())))?;
                let device = ctx.device.clone();
                SingleNetwork::new(config, ctx, settings.partial_labels(), |mut model| {
                    let fusion = model.text_fusion.take().expect("a text-guided network has a text fusion");
                    let (values, shape) = prompts.matrix();
                    let embeddings = Tensor::<2>::from_data(TensorData::new(values, shape), &device);
                    model.text_fusion = Some(init_fusion(fusion, embeddings, reports.as_ref(), &device));
                    model
                })?
            }
        };
        let view_prompts = if settings.view_prompts {
            if ctx.plan_network.spatial_dims != spineseg_model::SpatialDims::D2 {
                return Err(TrainError::Invalid(format!(
                    "per-view prompts describe 2D sagittal patches; configuration {} is 3D (train the 2d configuration)",
                    ctx.configuration
                )));
            }
            let class_prompts = class_prompts.as_ref().expect("per-view prompt runs read the class prompts");
            Some(ViewPromptLookup::load(ctx.model_dir, ctx.plan, class_prompts, settings.view_prompt_rate)?)
        } else {
            None
        };
        Ok(TextGuidedMethod { network, settings: settings.clone(), view_prompts, reports })
    }
}

impl TrainingMethod for TextGuidedMethod {
    fn num_params(&self) -> usize {
        self.network.num_params()
    }

    fn train_step(&mut self, batch: &Batch, lr: f64) -> Result<StepStats> {
        let settings = &self.settings;
        let device = self.network.devices().1;
        let text = TextInputs {
            prompts: match &self.view_prompts {
                Some(lookup) => lookup.batch_embeddings(batch, device)?,
                None => None,
            },
            reports: self.reports.as_ref().map(|lookup| lookup.batch_reports(batch, device)),
        };
        self.network.train_step_with_text(batch, text, lr, |model, mut level_features, target, label_mask| {
            let fusion = model.plain_conv_unet()?.text_fusion.as_ref().filter(|_| settings.ccae_weight > 0.0)?;
            let features = level_features.swap_remove(0);
            let contrastive = ccae_loss(fusion, features, target, label_mask, settings.ccae_temperature);
            Some(contrastive.mul_scalar(settings.ccae_weight))
        })
    }

    fn validation_step(&self, batch: &Batch, dice: &mut PseudoDice) -> Result<f64> {
        self.network.validation_step(batch, dice)
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
