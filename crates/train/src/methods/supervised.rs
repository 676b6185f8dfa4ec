//! nnU-Net's supervised training of one U-Net: deep-supervision Dice + cross-entropy, the
//! visual-only baseline every other method is measured against. With partial labels each case
//! supervises only the classes it annotates (`spineseg_dataloading::partial_labels`: by default
//! the levels within its labelled range of each structure kind it labels).

use super::single_network::{SingleNetwork, SingleNetworkState};
use crate::error::Result;
use crate::method::{ExportedNetwork, MethodContext, StepStats, TrainingMethod};
use crate::pseudo_dice::PseudoDice;
use serde::{Deserialize, Serialize};
use spineseg_dataloading::partial_labels::PartialLabelRule;
use spineseg_dataloading::sampling::Batch;
use std::path::Path;

/// Settings of [`SupervisedMethod`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SupervisedSettings {
    /// Each case supervises only the classes it annotates; the loss leaves the others out
    /// instead of teaching them as background. Off: every case annotates every class.
    #[serde(default)]
    pub partial_labels: bool,
    /// How the annotated classes are inferred (with `partial_labels`). `None`, as in every
    /// checkpoint written before the rule existed: [`PartialLabelRule::ByKind`]; new runs of
    /// `spineseg train` store it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_label_rule: Option<PartialLabelRule>,
}

impl SupervisedSettings {
    /// Partial labels by `rule`.
    pub fn with_partial_labels(rule: PartialLabelRule) -> Self {
        SupervisedSettings { partial_labels: true, partial_label_rule: Some(rule) }
    }

    /// The rule the label masks are inferred by; `None` without partial labels.
    pub fn partial_labels(&self) -> Option<PartialLabelRule> {
        effective_rule(self.partial_labels, self.partial_label_rule)
    }
}

/// With partial labels, the stored rule or, when none is stored (checkpoints written before
/// the rule existed), the rule those runs used: [`PartialLabelRule::ByKind`].
pub(crate) fn effective_rule(partial_labels: bool, rule: Option<PartialLabelRule>) -> Option<PartialLabelRule> {
    partial_labels.then(|| rule.unwrap_or(PartialLabelRule::ByKind))
}

/// The plan's U-Net trained with Dice + cross-entropy.
pub struct SupervisedMethod {
    network: SingleNetwork,
}

impl SupervisedMethod {
    /// The plan's U-Net (new run) or the checkpoint's (resume).
    pub fn build(settings: &SupervisedSettings, ctx: &MethodContext<'_>, saved: Option<&serde_json::Value>) -> Result<Self> {
        let config = match saved {
            Some(saved) => SingleNetworkState::unet_from_saved(saved, ctx)?,
            None => ctx.plan_network.clone(),
        };
        Ok(SupervisedMethod { network: SingleNetwork::new(config, ctx, settings.partial_labels(), |model| model)? })
    }
}

impl TrainingMethod for SupervisedMethod {
    fn num_params(&self) -> usize {
        self.network.num_params()
    }

    fn train_step(&mut self, batch: &Batch, lr: f64) -> Result<StepStats> {
        self.network.train_step(batch, lr, |_, _, _, _| None)
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
