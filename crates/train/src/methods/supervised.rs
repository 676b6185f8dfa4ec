//! nnU-Net's supervised training of one U-Net: deep-supervision Dice + cross-entropy, the
//! visual-only baseline every other method is measured against. With partial labels each case
//! supervises only the classes it annotates (`spineseg_dataloading::partial_labels`: by default
//! the levels within its labelled range of each structure kind it labels). The encoder is the
//! plan's U-Net's or ConvNeXt V2's ([`EncoderChoice`]), the latter from scratch or from a
//! pretrained encoder folder (`spineseg pretrain`).

use super::single_network::{NetworkChoice, SingleNetwork, SingleNetworkState};
use crate::error::{Result, TrainError};
use crate::pretrained_encoder::{load_pretrained_encoder, PretrainedEncoder};
use spineseg_model::{ConvNeXtUNetConfig, Network, NetworkConfig};
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
    /// The network's encoder (absent in checkpoints written before the choice existed: the
    /// plan's U-Net).
    #[serde(default, skip_serializing_if = "EncoderChoice::is_plain")]
    pub encoder: EncoderChoice,
    /// The network (with `encoder` plain): the plan's U-Net or DeepLabv3+ on its stages.
    #[serde(default, skip_serializing_if = "NetworkChoice::is_unet")]
    pub network: NetworkChoice,
}

/// Which encoder the supervised network has.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EncoderChoice {
    /// The plan's U-Net (nnU-Net's `PlainConvEncoder`).
    #[default]
    PlainConv,
    /// ConvNeXt V2 stages with the plan's widths and strides (default depth), trained from
    /// scratch or started from a pretrained encoder.
    ConvnextV2 {
        /// The pretrained encoder's folder and the fingerprint of its weights (a new run loads
        /// it; a resumed run takes the weights from its checkpoint).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pretrained: Option<PretrainedEncoder>,
        /// Drop path rate of the last block (`None`: off).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        drop_path: Option<f64>,
    },
}

impl EncoderChoice {
    fn is_plain(&self) -> bool {
        *self == EncoderChoice::PlainConv
    }
}

impl SupervisedSettings {
    /// Partial labels by `rule`.
    pub fn with_partial_labels(rule: PartialLabelRule) -> Self {
        SupervisedSettings { partial_labels: true, partial_label_rule: Some(rule), ..Default::default() }
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
        let partial = settings.partial_labels();
        if let Some(saved) = saved {
            let config = SingleNetworkState::network_from_saved(saved, ctx)?;
            return Ok(SupervisedMethod { network: SingleNetwork::new_of_kind(config, ctx, partial, Ok)? });
        }
        let network = match &settings.encoder {
            EncoderChoice::PlainConv if !settings.network.is_unet() => {
                SingleNetwork::new_of_kind(settings.network.config(ctx)?, ctx, partial, Ok)?
            }
            EncoderChoice::PlainConv => SingleNetwork::new(ctx.plan_network.clone(), ctx, partial, |model| model)?,
            EncoderChoice::ConvnextV2 { pretrained, drop_path } => {
                let mut config = ConvNeXtUNetConfig::from_unet(&ctx.plan_network);
                config.encoder.drop_path = *drop_path;
                config.validate().map_err(|e| TrainError::Invalid(format!("{}: ConvNeXt V2 U-Net: {e}", ctx.plans_path.display())))?;
                let device = ctx.device.clone();
                SingleNetwork::new_of_kind(NetworkConfig::from(config.clone()), ctx, partial, |network| match (network, pretrained) {
                    (Network::ConvNeXtUNet(network), Some(pretrained)) => {
                        let encoder = load_pretrained_encoder(pretrained, &config, &device)?;
                        Ok(Network::ConvNeXtUNet(network.with_encoder(encoder)))
                    }
                    (network, _) => Ok(network),
                })?
            }
        };
        Ok(SupervisedMethod { network })
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
