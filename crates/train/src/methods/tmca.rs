//! TMCA as a training method: the plan's U-Net with target alignment and language-guided target
//! enhancement at several decoder levels (`spineseg_model::fusion::tmca`), over the frozen
//! class-prompt embeddings of `MODEL/prompt_embeddings.json`, trained with Dice + cross-entropy
//! plus `tmca_weight` x the multi-level region-to-text InfoNCE ([`crate::losses::tmca`]),
//! neighbouring levels weighted as hard negatives. Optionally with ATM-Net's HASF fusion and its
//! CCAE loss as well (`hasf`), the "TMCA + HASF" arm, with HASF's report token when its
//! settings ask for reports. The logged training loss includes the
//! contrastive terms, the validation loss does not. The weights hold the embeddings, so resume
//! and prediction need no text encoder.

use super::single_network::{SingleNetwork, SingleNetworkState};
use super::reports::ReportLookup;
use super::text_guided::{init_fusion, load_prompt_embeddings, TextGuidedSettings};
use crate::error::{Result, TrainError};
use crate::losses::ccae::ccae_loss;
use crate::losses::tmca::{hard_negative_log_weights, tmca_loss};
use crate::method::{ExportedNetwork, MethodContext, StepStats, TrainingMethod};
use crate::pseudo_dice::PseudoDice;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};
use spineseg_dataloading::partial_labels::PartialLabelRule;
use spineseg_dataloading::sampling::Batch;
use spineseg_model::{TargetAlignmentConfig, TextInputs};
use std::path::Path;

/// Settings of [`TmcaMethod`] (missing fields take the defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TmcaSettings {
    /// As [`super::SupervisedSettings::partial_labels`].
    pub partial_labels: bool,
    /// As [`super::SupervisedSettings::partial_label_rule`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial_label_rule: Option<PartialLabelRule>,
    /// Width of the shared image-text space.
    pub embed_dim: usize,
    /// Decoder levels aligned and enhanced (0 = full resolution).
    pub levels: Vec<usize>,
    /// Temperature of the enhancement's pixel-to-class similarity softmax.
    pub enhance_temperature: f64,
    /// Weight of the TMCA loss added to Dice + cross-entropy.
    pub tmca_weight: f64,
    /// Temperature of the TMCA InfoNCE.
    pub tmca_temperature: f64,
    /// Factor on a neighbouring level's term in the InfoNCE denominator (1: no hard negatives).
    pub hard_negative_weight: f64,
    /// HASF fusion and CCAE loss as well (only their fusion and CCAE fields are used; partial
    /// labels are this method's own); `None`: TMCA alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hasf: Option<TextGuidedSettings>,
}

impl Default for TmcaSettings {
    /// Width 64 (as HASF), decoder levels 1-3 (1/2, 1/4, 1/8 resolution: where a lumbar body
    /// covers 10-30 pixels), similarity temperature 0.1, TMCA weight 0.1 and temperature 0.07
    /// (as CCAE), neighbouring levels counted twice in the denominator. Set before any run.
    fn default() -> Self {
        TmcaSettings {
            partial_labels: false,
            partial_label_rule: None,
            embed_dim: 64,
            levels: vec![1, 2, 3],
            enhance_temperature: 0.1,
            tmca_weight: 0.1,
            tmca_temperature: 0.07,
            hard_negative_weight: 2.0,
            hasf: None,
        }
    }
}

impl TmcaSettings {
    /// The rule the label masks are inferred by; `None` without partial labels.
    pub fn partial_labels(&self) -> Option<PartialLabelRule> {
        super::supervised::effective_rule(self.partial_labels, self.partial_label_rule)
    }

    /// Checks the values; the message names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Invalid(m));
        if !(self.tmca_weight.is_finite() && self.tmca_weight >= 0.0) {
            return bad(format!("tmca: tmca_weight {} must be >= 0", self.tmca_weight));
        }
        if !(self.tmca_temperature.is_finite() && self.tmca_temperature > 0.0) {
            return bad(format!("tmca: tmca_temperature {} must be positive", self.tmca_temperature));
        }
        if !(self.hard_negative_weight.is_finite() && self.hard_negative_weight >= 1.0) {
            return bad(format!("tmca: hard_negative_weight {} must be >= 1", self.hard_negative_weight));
        }
        if let Some(hasf) = &self.hasf {
            hasf.validate()?;
        }
        Ok(())
    }
}

/// The TMCA U-Net in training.
pub struct TmcaMethod {
    network: SingleNetwork,
    settings: TmcaSettings,
    /// `[classes, classes]` log-weights of the negatives, row-major.
    log_weights: Vec<f32>,
    classes: usize,
    /// With HASF's report token: the per-sample report embeddings.
    reports: Option<ReportLookup>,
}

impl TmcaMethod {
    /// A new run reads the class embeddings once (network text width and frozen parameters); a
    /// resumed run takes both from its checkpoint.
    pub fn build(settings: &TmcaSettings, ctx: &MethodContext<'_>, saved: Option<&serde_json::Value>) -> Result<Self> {
        let reports = settings
            .hasf
            .as_ref()
            .filter(|hasf| hasf.reports)
            .map(|_| ReportLookup::load(ctx.model_dir, ctx.train_cases))
            .transpose()?;
        let network = match saved {
            Some(saved) => SingleNetwork::new(
                SingleNetworkState::unet_from_saved(saved, ctx)?,
                ctx,
                settings.partial_labels(),
                |m| m,
            )?,
            None => {
                let prompts = load_prompt_embeddings(ctx)?;
                let mut config = ctx.plan_network.clone().with_target_alignment(Some(
                    TargetAlignmentConfig::new(prompts.dim)
                        .with_embed_dim(settings.embed_dim)
                        .with_levels(settings.levels.clone())
                        .with_temperature(settings.enhance_temperature),
                ));
                if let Some(hasf) = &settings.hasf {
                    config = config.with_text_guidance(Some(hasf.fusion_config(prompts.dim)));
                }
                config
                    .validate()
                    .map_err(|e| TrainError::Invalid(format!("{}: tmca: {e}", ctx.plans_path.display())))?;
                let device = ctx.device.clone();
                SingleNetwork::new(config, ctx, settings.partial_labels(), |mut model| {
                    let (values, shape) = prompts.matrix();
                    let embeddings = Tensor::<2>::from_data(TensorData::new(values, shape), &device);
                    let alignment = model.target_alignment.take().expect("a TMCA network has a target alignment");
                    model.target_alignment = Some(alignment.with_class_embeddings(embeddings.clone()));
                    if let Some(fusion) = model.text_fusion.take() {
                        model.text_fusion = Some(init_fusion(fusion, embeddings, reports.as_ref(), &device));
                    }
                    model
                })?
            }
        };
        let class_ids: Vec<u16> = ctx.plan.labels.iter().map(|l| l.value).collect();
        let log_weights = hard_negative_log_weights(&class_ids, settings.hard_negative_weight);
        Ok(TmcaMethod { network, settings: settings.clone(), log_weights, classes: class_ids.len(), reports })
    }
}

impl TrainingMethod for TmcaMethod {
    fn num_params(&self) -> usize {
        self.network.num_params()
    }

    fn train_step(&mut self, batch: &Batch, lr: f64) -> Result<StepStats> {
        let (settings, log_weights, classes) = (&self.settings, &self.log_weights, self.classes);
        let device = self.network.devices().1;
        let text = TextInputs { prompts: None, reports: self.reports.as_ref().map(|lookup| lookup.batch_reports(batch, device)) };
        self.network.train_step_with_text(batch, text, lr, |model, mut level_features, target, label_mask| {
            let model = model.plain_conv_unet()?;
            let alignment = model.target_alignment.as_ref()?;
            let device = target.device();
            let weights = Tensor::<2>::from_data(TensorData::new(log_weights.clone(), [classes, classes]), &device);
            let mut extra = tmca_loss(
                alignment,
                &level_features,
                target.clone(),
                label_mask.clone(),
                weights,
                settings.tmca_temperature,
            )
            .mul_scalar(settings.tmca_weight);
            if let (Some(hasf), Some(fusion)) = (&settings.hasf, model.text_fusion.as_ref()) {
                if hasf.ccae_weight > 0.0 {
                    let features = level_features.swap_remove(0);
                    let ccae = ccae_loss(fusion, features, target, label_mask, hasf.ccae_temperature);
                    extra = extra + ccae.mul_scalar(hasf.ccae_weight);
                }
            }
            Some(extra)
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
