//! Training the disc-findings classifier ([`DiscFindingsNet`]): per disc level, the T1 and T2
//! regions of interest in, five findings and the Pfirrmann grade out.
//!
//! This is not a segmentation method (no patches, no plan, no sliding window), so it has its own
//! short loop instead of the engine's: a fixed number of AdamW steps with a polynomial learning
//! rate, batches drawn by a seeded generator from the step index alone (bit-identical reruns),
//! and on purpose against the class imbalance:
//!
//! - **loss weighting**: each finding's positive term in the binary cross-entropy is weighted by
//!   `negatives / positives` of the training set (capped at `max_positive_weight`), so a rare
//!   finding (herniation: 37 of 1,022 discs) weighs as much as a common one;
//! - **threshold choice on validation only**: [`choose_threshold`] picks, per finding, the
//!   lowest threshold whose false-positive rate on validation patients (never the patients
//!   evaluated) stays under a bound, i.e. the highest recall at that false-positive rate.
//!
//! **Sequence dropout**: a level with both sequences loses one of them (at random which) with
//! probability `sequence_dropout`, so either sequence alone still works at prediction. Spatial
//! augmentation is a small shift (the ROI is centred on the disc by the segmentation, which is
//! not exact) and an intensity scale and offset; no flips (anterior and posterior differ).
//!
//! **Image-text pretraining** (optional, text head only): [`train_findings_with`] first runs
//! contrastive steps of the encoder and the head's projections against report sentences of the
//! same training samples (`crate::findings_pretrain`), then the supervised steps start from there.

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{activation, Device, Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spineseg_infer::findings_model::{findings_batch, FindingsInput};
use spineseg_model::{DiscFindingsNet, DiscFindingsNetConfig, NUM_FINDINGS};

use crate::config::OptimizerConfig;
use crate::error::{Result, TrainError};
use crate::findings_pretrain::{pretrain_image_text, ImageTextPretraining};
pub(crate) use crate::findings_samples::augment;
pub use crate::findings_samples::{FindingsSample, FindingsTrainConfig};
use crate::methods::single_network::{Materialise, INIT_LOCK};
use crate::optim::{clip_grad_norm, poly_lr};
use crate::pretrained_encoder::load_findings_encoder;

/// Positive-class weights `negatives / positives` per finding, in `[1, cap]` (1 when a finding
/// has no positive).
pub fn positive_weights(samples: &[FindingsSample], cap: f32) -> [f32; NUM_FINDINGS] {
    std::array::from_fn(|f| {
        let positives = samples.iter().filter(|s| s.findings[f]).count();
        let negatives = samples.len() - positives;
        if positives == 0 {
            1.0
        } else {
            (negatives as f32 / positives as f32).clamp(1.0, cap)
        }
    })
}

/// A trained classifier and how training went.
#[derive(Debug)]
pub struct FindingsTraining {
    /// The network on the inference device (no autodiff).
    pub net: DiscFindingsNet,
    /// Loss of every step.
    pub losses: Vec<f64>,
    pub positive_weights: [f32; NUM_FINDINGS],
    /// Loss of every image-text pretraining step (empty without pretraining).
    pub pretrain_losses: Vec<f64>,
}

/// Which part of [`train_findings_with`] a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingsStage {
    /// A contrastive image-text step (`crate::findings_pretrain`).
    ImageTextPretraining,
    /// A supervised step on the findings and grades.
    Supervised,
}

/// The loss of a batch: weighted binary cross-entropy per finding (mean over batch and
/// findings) + `grade_weight` x the grades' cross-entropy.
///
/// # Shapes
/// - `finding_logits`, `findings` (0/1): `[batch, NUM_FINDINGS]`; `grade_logits`: `[batch, 5]`;
///   `grades`: `[batch]` (0-based)
pub fn findings_loss(
    finding_logits: Tensor<2>,
    findings: Tensor<2>,
    grade_logits: Tensor<2>,
    grades: Tensor<1, Int>,
    positive_weights: Tensor<2>,
    grade_weight: f32,
) -> Tensor<1> {
    let positive = findings.clone() * positive_weights * activation::log_sigmoid(finding_logits.clone()).neg();
    let negative = (findings.neg() + 1.0) * activation::log_sigmoid(finding_logits.neg()).neg();
    let bce = (positive + negative).mean();
    let [batch, grades_count] = grade_logits.dims();
    let one_hot = grades.one_hot::<2>(grades_count).float();
    let ce = (activation::log_softmax(grade_logits, 1) * one_hot).sum().neg() / batch as f64;
    bce + ce * grade_weight
}

/// Trains a [`DiscFindingsNet`] built from `config` on `samples` (seeded by `settings.seed`);
/// a text head gets `prompt_embeddings` (`[levels, PROMPTS_PER_LEVEL, text_dim]`, row major).
/// `on_step(step, loss)` hears every step.
pub fn train_findings(
    config: &DiscFindingsNetConfig,
    prompt_embeddings: Option<Vec<f32>>,
    samples: &[FindingsSample],
    settings: &FindingsTrainConfig,
    mut on_step: impl FnMut(usize, f64),
) -> Result<FindingsTraining> {
    train_findings_with(config, prompt_embeddings, samples, settings, None, |stage, step, loss| {
        if stage == FindingsStage::Supervised {
            on_step(step, loss);
        }
    })
}

/// [`train_findings`], after `pretraining`'s image-text steps when given (a text head only; its
/// sentences must be those of `samples`, the training patients). `on_step(stage, step, loss)`
/// hears every step of both stages.
pub fn train_findings_with(
    config: &DiscFindingsNetConfig,
    prompt_embeddings: Option<Vec<f32>>,
    samples: &[FindingsSample],
    settings: &FindingsTrainConfig,
    pretraining: Option<&ImageTextPretraining>,
    mut on_step: impl FnMut(FindingsStage, usize, f64),
) -> Result<FindingsTraining> {
    if samples.is_empty() {
        return Err(TrainError::Invalid(
            "findings training: no training samples (no graded level was found on any image)".into(),
        ));
    }
    let device = Device::flex().autodiff();
    let mut net = {
        let _guard = INIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        device.seed(settings.seed);
        let net = config.init(&device);
        let net = match prompt_embeddings {
            Some(embeddings) => net.with_prompt_embeddings(embeddings),
            None => net,
        };
        // Parameters are created lazily: touch every one while the seeded generator is ours.
        net.visit(&mut Materialise);
        net
    };
    if let Some(pretrained) = &settings.pretrained_encoder {
        let encoder = load_findings_encoder(pretrained, config.roi_px, &device)?;
        net = net.with_convnext_encoder(encoder).map_err(|e| {
            TrainError::Invalid(format!("findings training: the encoder of {}: {e}", pretrained.dir.display()))
        })?;
    }
    let mut pretrain_losses = Vec::new();
    if let Some(pretraining) = pretraining {
        let (pretrained, losses) = pretrain_image_text(net, config, samples, pretraining, settings, |step, loss| {
            on_step(FindingsStage::ImageTextPretraining, step, loss)
        })?;
        net = pretrained;
        pretrain_losses = losses;
    }
    let weights = positive_weights(samples, settings.max_positive_weight);
    // A fresh optimiser: the supervised steps start from the pretrained weights, not from the
    // contrastive loss's moments.
    let mut optimizer =
        OptimizerConfig::AdamW { lr: settings.learning_rate, weight_decay: settings.weight_decay }.init();
    let mut losses = Vec::with_capacity(settings.steps);
    let weight_tensor = Tensor::<2>::from_data(TensorData::new(weights.to_vec(), [1, NUM_FINDINGS]), &device);
    for step in 0..settings.steps {
        let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
        rng.set_stream(step as u64 + 1);
        let batch: Vec<&FindingsSample> =
            (0..settings.batch_size).map(|_| &samples[rng.gen_range(0..samples.len())]).collect();
        let inputs: Vec<FindingsInput> = batch.iter().map(|s| augment(s, config.roi_px, settings, &mut rng)).collect();
        let refs: Vec<&FindingsInput> = inputs.iter().collect();
        let (rois, present, level) = findings_batch(&refs, config.sequences, config.roi_px, &device);
        let truth: Vec<f32> = batch.iter().flat_map(|s| s.findings.map(f32::from)).collect();
        let grades: Vec<i64> = batch.iter().map(|s| s.grade.clamp(1, 5) as i64 - 1).collect();
        let n = batch.len();
        let truth = Tensor::<2>::from_data(TensorData::new(truth, [n, NUM_FINDINGS]), &device);
        let grades = Tensor::<1, Int>::from_data(TensorData::new(grades, [n]), &device);
        let out = net.forward(rois, present, level);
        let loss = findings_loss(
            out.finding_logits,
            truth,
            out.grade_logits,
            grades,
            weight_tensor.clone(),
            settings.grade_weight,
        );
        let value = loss.clone().into_scalar::<f32>() as f64;
        if !value.is_finite() {
            return Err(TrainError::Invalid(format!(
                "findings training, step {step}: the loss is {value} (not finite); nothing was saved. Lower the learning rate"
            )));
        }
        let mut grads = GradientsParams::from_grads(loss.backward(), &net);
        clip_grad_norm(&net, &mut grads, 12.0);
        net = optimizer.step(poly_lr(settings.learning_rate, step, settings.steps), net, grads);
        losses.push(value);
        on_step(FindingsStage::Supervised, step, value);
    }
    Ok(FindingsTraining { net: net.valid(), losses, positive_weights: weights, pretrain_losses })
}

/// The lowest threshold `t` such that deciding "present" for `p >= t` keeps the false-positive
/// rate over `negatives` at or below `max_fpr` (so the highest recall at that rate). Without
/// negatives, 0.5.
pub fn choose_threshold(negatives: &[f32], max_fpr: f64) -> f32 {
    if negatives.is_empty() {
        return 0.5;
    }
    let mut sorted: Vec<f32> = negatives.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let allowed = (max_fpr * sorted.len() as f64 + 1e-9).floor() as usize;
    if allowed >= sorted.len() {
        return 0.0;
    }
    // Every negative scoring at or above t is a false positive: t must lie above the
    // (allowed + 1)-th highest negative score.
    let above = sorted[allowed];
    let t = f32::from_bits(above.to_bits() + 1).min(1.0);
    if above >= 1.0 {
        1.0
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_keeps_the_false_positive_rate() {
        let negatives = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95];
        // 10 % of 10 negatives: one false positive allowed, so t lies just above 0.9.
        let t = choose_threshold(&negatives, 0.1);
        assert!(t > 0.9 && t < 0.9001, "{t}");
        assert_eq!(negatives.iter().filter(|&&p| p >= t).count(), 1);
        // None allowed: above the highest negative.
        let t = choose_threshold(&negatives, 0.0);
        assert!(t > 0.95 && negatives.iter().all(|&p| p < t));
        assert_eq!(choose_threshold(&[], 0.1), 0.5);
        assert_eq!(choose_threshold(&negatives, 1.0), 0.0);
    }

    #[test]
    fn sequence_dropout_removes_one_of_two_sequences_never_the_only_one() {
        let both = FindingsSample {
            patient: "p".into(),
            input: FindingsInput { level: 0, rois: vec![Some(vec![1.0; 4]), Some(vec![2.0; 4])] },
            findings: [false; 5],
            grade: 1,
        };
        let only_t2 =
            FindingsSample { input: FindingsInput { level: 0, rois: vec![None, Some(vec![2.0; 4])] }, ..both.clone() };
        let always =
            FindingsTrainConfig { sequence_dropout: 1.0, max_shift_px: 0, intensity_jitter: 0.0, ..Default::default() };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut dropped = [0usize; 2];
        for _ in 0..200 {
            let out = augment(&both, [2, 2], &always, &mut rng);
            let present: Vec<bool> = out.rois.iter().map(Option::is_some).collect();
            assert_eq!(present.iter().filter(|&&p| p).count(), 1, "exactly one sequence should be left");
            dropped[present.iter().position(|&p| !p).unwrap()] += 1;
            let alone = augment(&only_t2, [2, 2], &always, &mut rng);
            assert_eq!(alone.rois, only_t2.input.rois, "a level's only sequence is never dropped");
        }
        // Either sequence is dropped, about equally often.
        assert!(dropped[0] > 70 && dropped[1] > 70, "{dropped:?}");
        let never = FindingsTrainConfig { sequence_dropout: 0.0, ..always };
        assert_eq!(augment(&both, [2, 2], &never, &mut rng).rois, both.input.rois);
    }

    #[test]
    fn positive_weights_balance_rare_findings() {
        let sample = |f: [bool; 5]| FindingsSample {
            patient: "p".into(),
            input: FindingsInput { level: 0, rois: vec![None] },
            findings: f,
            grade: 3,
        };
        let samples: Vec<FindingsSample> = (0..12).map(|i| sample([i == 0, i < 6, true, false, i < 1])).collect();
        let w = positive_weights(&samples, 10.0);
        assert_eq!(w, [10.0, 1.0, 1.0, 1.0, 10.0]);
        let w = positive_weights(&samples, 20.0);
        assert_eq!(w[0], 11.0);
    }

    #[test]
    fn the_loss_is_the_weighted_cross_entropy() {
        let device = Device::flex();
        let logits = Tensor::<2>::from_data(TensorData::new(vec![0.0f32, 2.0, -1.0, 0.5, 0.0], [1, 5]), &device);
        let truth = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 0.0, 1.0, 0.0, 1.0], [1, 5]), &device);
        let weights = Tensor::<2>::from_data(TensorData::new(vec![2.0f32, 1.0, 1.0, 1.0, 1.0], [1, 5]), &device);
        let grades = Tensor::<2>::zeros([1, 5], &device);
        let grade = Tensor::<1, Int>::from_data(TensorData::new(vec![2i64], [1]), &device);
        let loss: f32 = findings_loss(logits, truth, grades, grade, weights, 0.5).into_scalar();
        let sp = |x: f64| (1.0 + x.exp()).ln(); // -log sigmoid(-x)
        let expected = (2.0 * sp(-0.0) + sp(2.0) + sp(1.0) + sp(0.5) + sp(-0.0)) / 5.0 + 0.5 * (5f64).ln();
        assert!((loss as f64 - expected).abs() < 1e-5, "{loss} vs {expected}");
    }
}
