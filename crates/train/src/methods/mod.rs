//! The built-in training methods, one file each, behind [`crate::method::TrainingMethod`]:
//!
//! - [`supervised`]: nnU-Net's supervised training of one U-Net (Dice + cross-entropy with deep
//!   supervision), optionally with partial labels.
//! - [`text_guided`]: ATM-Net's text guidance: the U-Net with HASF text-image fusion, trained with
//!   Dice + cross-entropy plus the CCAE contrastive loss.
//! - [`tmca`]: TMCA: target alignment and language-guided enhancement of decoder levels, trained
//!   with the multi-level region-to-text InfoNCE (optionally with HASF + CCAE as well).
//!
//! - [`cps`]: cross pseudo supervision (SSHSNet's stage 1): two networks on labelled and
//!   unlabelled patches, each supervising the other with its CutMix-mixed pseudo-labels.
//! - [`sshsnet_stage2`]: SSHSNet's stage 2: the 3D network with the frozen stage-1 (CPS)
//!   networks inside, fused through cross tri-attention; the model folder is the cascade.
//! - [`fcmae`]: ConvNeXt V2's masked-autoencoder pretraining of the ConvNeXt V2 U-Net's encoder
//!   on unlabelled images (`spineseg pretrain`).
//!
//! [`single_network`] holds what both share (one network, one optimiser, the deep-supervision
//! loss, partial-label masks, validation). [`MethodConfig`] is the tagged enum of the built-in
//! methods' settings stored in every checkpoint; adding a method is a file here and one variant
//! plus one match arm below.

pub mod cps;
pub mod fcmae;
pub mod single_network;
pub mod supervised;
pub mod text_guided;
pub mod sshsnet_stage2;
pub mod reports;
pub mod tmca;
pub mod view_prompts;

pub use cps::{CpsMethod, CpsSettings};
pub use fcmae::{FcmaeMethod, FcmaeSettings};
pub use single_network::NetworkChoice;
pub use supervised::{EncoderChoice, SupervisedMethod, SupervisedSettings};
pub use text_guided::{TextGuidedMethod, TextGuidedSettings};
pub use sshsnet_stage2::{SshsnetStage2Method, SshsnetStage2Settings};
pub use tmca::{TmcaMethod, TmcaSettings};

use crate::config::EngineConfig;
use crate::engine::{run, RunOptions, RunPaths, TrainOutcome};
use crate::error::Result;
use crate::method::{MethodContext, MethodSpec, TrainingMethod};
use crate::progress::TrainingObserver;
use serde::{Deserialize, Serialize};
use spineseg_dataloading::partial_labels::PartialLabelRule;

/// The built-in methods and their settings (`state.json` "method", tagged by `kind`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MethodConfig {
    /// Visual-only supervised training.
    Supervised(SupervisedSettings),
    /// Text-guided training (HASF + CCAE).
    TextGuided(TextGuidedSettings),
    /// TMCA (target alignment + enhancement, multi-level contrastive loss; optionally + HASF).
    Tmca(TmcaSettings),
    /// FCMAE pretraining of a ConvNeXt V2 encoder on unlabelled images.
    Fcmae(FcmaeSettings),
    /// Cross pseudo supervision of two networks on labelled and unlabelled patches.
    Cps(CpsSettings),
    /// SSHSNet's stage 2 on a stage-1 (CPS) model folder.
    SshsnetStage2(SshsnetStage2Settings),
}

impl Default for MethodConfig {
    fn default() -> Self {
        MethodConfig::Supervised(SupervisedSettings::default())
    }
}

impl MethodConfig {
    /// Whether the method trains with partial labels.
    pub fn partial_labels(&self) -> bool {
        self.partial_label_rule().is_some()
    }

    /// The rule partial labels are inferred by; `None` without partial labels.
    pub fn partial_label_rule(&self) -> Option<PartialLabelRule> {
        match self {
            MethodConfig::Supervised(s) => s.partial_labels(),
            MethodConfig::TextGuided(s) => s.partial_labels(),
            MethodConfig::Tmca(s) => s.partial_labels(),
            MethodConfig::Fcmae(_) => None,
            MethodConfig::Cps(s) => s.partial_labels(),
            MethodConfig::SshsnetStage2(s) => s.partial_labels(),
        }
    }
}

impl MethodSpec for MethodConfig {
    fn name(&self) -> String {
        match self {
            MethodConfig::Supervised(_) => "supervised",
            MethodConfig::TextGuided(_) => "text_guided",
            MethodConfig::Tmca(s) if s.hasf.is_some() => "tmca_hasf",
            MethodConfig::Tmca(_) => "tmca",
            MethodConfig::Fcmae(_) => "fcmae",
            MethodConfig::Cps(_) => "cps",
            MethodConfig::SshsnetStage2(s) => {
                let fusion = if s.tri_attention { "" } else { "_concat" };
                return format!("sshsnet_stage2{fusion}{}", if s.stage1_prior { "_prior" } else { "" });
            }
        }
        .to_string()
    }

    fn validate(&self) -> Result<()> {
        match self {
            MethodConfig::Supervised(_) => Ok(()),
            MethodConfig::TextGuided(settings) => settings.validate(),
            MethodConfig::Tmca(settings) => settings.validate(),
            MethodConfig::Fcmae(settings) => settings.validate(),
            MethodConfig::Cps(settings) => settings.validate(),
            MethodConfig::SshsnetStage2(_) => Ok(()),
        }
    }

    fn trains_on_unlabelled_cases(&self) -> bool {
        matches!(self, MethodConfig::Fcmae(_) | MethodConfig::Cps(_))
    }

    fn labelled_per_batch(&self, batch_size: usize) -> Option<usize> {
        // CPS: a labelled and an unlabelled half (at least one labelled patch).
        matches!(self, MethodConfig::Cps(_)).then(|| (batch_size / 2).max(1).min(batch_size))
    }

    fn build(&self, ctx: &MethodContext<'_>, saved: Option<&serde_json::Value>) -> Result<Box<dyn TrainingMethod>> {
        Ok(match self {
            MethodConfig::Supervised(settings) => Box::new(SupervisedMethod::build(settings, ctx, saved)?),
            MethodConfig::TextGuided(settings) => Box::new(TextGuidedMethod::build(settings, ctx, saved)?),
            MethodConfig::Tmca(settings) => Box::new(TmcaMethod::build(settings, ctx, saved)?),
            MethodConfig::Fcmae(settings) => Box::new(FcmaeMethod::build(settings, ctx, saved)?),
            MethodConfig::Cps(settings) => Box::new(CpsMethod::build(settings, ctx, saved)?),
            MethodConfig::SshsnetStage2(settings) => Box::new(SshsnetStage2Method::build(settings, ctx, saved)?),
        })
    }
}

/// Trains (or resumes) a model with a built-in method: [`run`] with a [`MethodConfig`].
pub fn train(
    paths: &RunPaths,
    config: EngineConfig,
    method: MethodConfig,
    options: &RunOptions,
    observer: &mut dyn TrainingObserver,
) -> Result<TrainOutcome> {
    run(paths, config, method, options, observer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_without_a_rule_keep_training_by_kind() {
        // state.json "method" as written before the rule existed.
        for old in [r#"{"kind": "supervised", "partial_labels": true}"#, r#"{"kind": "text_guided", "partial_labels": true}"#] {
            let method: MethodConfig = serde_json::from_str(old).unwrap();
            assert_eq!(method.partial_label_rule(), Some(PartialLabelRule::ByKind), "{old}");
        }
        let off: MethodConfig = serde_json::from_str(r#"{"kind": "supervised"}"#).unwrap();
        assert_eq!(off.partial_label_rule(), None);
        // A new run stores its rule, and a run without partial labels stores none.
        let new = MethodConfig::Supervised(SupervisedSettings::with_partial_labels(PartialLabelRule::ByLabelledRange));
        let text = serde_json::to_string(&new).unwrap();
        assert!(text.contains(r#""partial_labels":true"#) && text.contains(r#""partial_label_rule":"by_labelled_range""#), "{text}");
        assert_eq!(serde_json::from_str::<MethodConfig>(&text).unwrap().partial_label_rule(), Some(PartialLabelRule::ByLabelledRange));
        assert!(!serde_json::to_string(&MethodConfig::default()).unwrap().contains("rule"));
    }
}
