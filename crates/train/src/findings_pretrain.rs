//! Contrastive image-text pretraining of the disc-findings network (issue 15, item 3), before
//! its supervised training ([`crate::findings::train_findings_with`]).
//!
//! Each graded disc level of the training patients is a pair: its ROIs and a short report
//! sentence of its grading ("L4/L5 intervertebral disc: disc herniation, Pfirrmann grade 4.",
//! `spineseg_text::findings_prompts::report_sentence`) embedded once by the frozen text encoder.
//! The image side is the findings network's own encoder and its text head's `image_projection`;
//! the text side is the frozen sentence embedding through the head's `text_projection`; the
//! temperature is the head's `logit_scale`. A batch of N levels gives N x N cosines and CLIP's
//! symmetric InfoNCE ([`crate::losses::info_nce`]), with levels whose sentences are identical
//! (many "no abnormality, Pfirrmann grade 2." at the same level) positives of each other rather
//! than negatives. So the supervised head starts from an encoder and projections that already
//! place images near the text of their findings.
//!
//! The sentences spell out the labels: the caller must pass only the training patients of the
//! current fold (never validation or held-out patients), as for the supervised steps.
//!
//! Only a text head can be pretrained this way (a visual head has no text projection to align);
//! [`pretrain_image_text`] refuses a visual network.

use burn::optim::GradientsParams;
use burn::tensor::{Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spineseg_infer::findings_model::{findings_batch, FindingsInput};
use spineseg_model::{DiscFindingsNet, DiscFindingsNetConfig};

use crate::config::OptimizerConfig;
use crate::error::{Result, TrainError};
use crate::findings_samples::{augment, FindingsSample, FindingsTrainConfig};
use crate::losses::info_nce::{max_logit_scale, symmetric_info_nce};
use crate::optim::{clip_grad_norm, poly_lr};

/// The text side of the pretraining: one report sentence per training sample, embedded.
#[derive(Debug, Clone)]
pub struct ImageTextPretraining {
    /// Contrastive steps (AdamW, batch and learning rate of the supervised settings, its own
    /// polynomial decay over these steps).
    pub steps: usize,
    /// For each training sample (same order), the index of its sentence.
    pub sentence_of_sample: Vec<usize>,
    /// `[sentences, text_dim]` row major: the frozen encoder's embedding of each distinct
    /// sentence.
    pub sentence_embeddings: Vec<f32>,
}

/// Batches of the pretraining draw from this stream offset of the seeded generator, so they
/// differ from the supervised steps' batches (streams `1..=steps`).
const STREAM_OFFSET: u64 = 1 << 40;

/// Runs `pretraining.steps` contrastive steps on `net` (on an autodiff device) and returns it
/// with every step's loss. `on_step(step, loss)` hears every step.
pub fn pretrain_image_text(
    mut net: DiscFindingsNet,
    config: &DiscFindingsNetConfig,
    samples: &[FindingsSample],
    pretraining: &ImageTextPretraining,
    settings: &FindingsTrainConfig,
    mut on_step: impl FnMut(usize, f64),
) -> Result<(DiscFindingsNet, Vec<f64>)> {
    let Some(head) = net.text.as_ref() else {
        return Err(TrainError::Invalid(
            "image-text pretraining needs the text head (--head text): a visual head has no text projection to align"
                .into(),
        ));
    };
    if pretraining.sentence_of_sample.len() != samples.len() {
        return Err(TrainError::Invalid(format!(
            "image-text pretraining: {} sentence indices for {} samples",
            pretraining.sentence_of_sample.len(),
            samples.len()
        )));
    }
    let text_dim = head.text_projection.weight.val().dims()[0];
    let sentences = pretraining.sentence_embeddings.len() / text_dim.max(1);
    if sentences * text_dim != pretraining.sentence_embeddings.len()
        || pretraining.sentence_of_sample.iter().any(|&s| s >= sentences)
    {
        return Err(TrainError::Invalid(format!(
            "image-text pretraining: the sentence embeddings are not [sentences, {text_dim}] or a sample's sentence is missing"
        )));
    }
    let device = head.logit_scale.val().device();
    let embeddings = Tensor::<2>::from_data(
        TensorData::new(pretraining.sentence_embeddings.clone(), [sentences, text_dim]),
        &device,
    );
    let mut optimizer =
        OptimizerConfig::AdamW { lr: settings.learning_rate, weight_decay: settings.weight_decay }.init();
    let mut losses = Vec::with_capacity(pretraining.steps);
    for step in 0..pretraining.steps {
        let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
        rng.set_stream(STREAM_OFFSET + step as u64);
        let picked: Vec<usize> = (0..settings.batch_size).map(|_| rng.gen_range(0..samples.len())).collect();
        let inputs: Vec<FindingsInput> =
            picked.iter().map(|&i| augment(&samples[i], config.roi_px, settings, &mut rng)).collect();
        let refs: Vec<&FindingsInput> = inputs.iter().collect();
        let (rois, present, _level) = findings_batch(&refs, config.sequences, config.roi_px, &device);
        let groups: Vec<usize> = picked.iter().map(|&i| pretraining.sentence_of_sample[i]).collect();
        let ids: Vec<i64> = groups.iter().map(|&g| g as i64).collect();
        let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [groups.len()]), &device);
        let head = net.text.as_ref().expect("checked above: the network has a text head");
        let image = head.image_projection.forward(net.features(rois, present));
        let text = head.text_projection.forward(embeddings.clone().select(0, ids));
        let loss = symmetric_info_nce(image, text, head.logit_scale.val(), &groups);
        let value = loss.clone().into_scalar::<f32>() as f64;
        if !value.is_finite() {
            return Err(TrainError::Invalid(format!(
                "image-text pretraining, step {step}: the loss is {value} (not finite); nothing was saved. Lower the learning rate"
            )));
        }
        let mut grads = GradientsParams::from_grads(loss.backward(), &net);
        clip_grad_norm(&net, &mut grads, 12.0);
        net = optimizer.step(poly_lr(settings.learning_rate, step, pretraining.steps), net, grads);
        net = clamp_logit_scale(net);
        losses.push(value);
        on_step(step, value);
    }
    Ok((net, losses))
}

/// Keeps a text head's `logit_scale` in `[0, ln 100]` after an optimiser step (CLIP clamps the
/// parameter itself): the loss's clamp stops its gradient above the cap, but Adam's momentum
/// could still carry the stored value past it.
pub fn clamp_logit_scale(mut net: DiscFindingsNet) -> DiscFindingsNet {
    if let Some(head) = net.text.take() {
        let mut head = head;
        head.logit_scale = head.logit_scale.map(|t| {
            // A new leaf with the same gradient state (none on an inference device).
            let require_grad = t.is_require_grad();
            t.clamp(0.0, max_logit_scale()).detach().set_require_grad(require_grad)
        });
        net.text = Some(head);
    }
    net
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::info_nce::initial_logit_scale;
    use burn::tensor::Device;
    use spineseg_model::FindingsHeadConfig;

    #[test]
    fn the_stored_logit_scale_stays_within_the_cap() {
        // Initialisation draws from burn's process-wide generator: under the crate's lock.
        let _guard = crate::methods::single_network::INIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let config = DiscFindingsNetConfig::new(vec![123], FindingsHeadConfig::Text { text_dim: 4, embed_dim: 2 })
            .with_roi_px([8, 8])
            .with_widths(vec![2, 2]);
        let mut net = config.init(&Device::flex());
        let head = net.text.as_mut().unwrap();
        head.logit_scale = head.logit_scale.clone().map(|t| t + 10.0);
        let value = |net: &DiscFindingsNet| net.text.as_ref().unwrap().logit_scale.val().into_scalar::<f32>();
        assert!(value(&net) > max_logit_scale());
        let net = clamp_logit_scale(net);
        assert_eq!(value(&net), max_logit_scale());
        let mut net = net;
        let head = net.text.as_mut().unwrap();
        head.logit_scale = head.logit_scale.clone().map(|t| t * 0.0 + initial_logit_scale());
        assert_eq!(value(&clamp_logit_scale(net)), initial_logit_scale());
    }
}
