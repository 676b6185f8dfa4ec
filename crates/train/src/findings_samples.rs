//! What both stages of the disc-findings training use: a graded level as a training sample
//! ([`FindingsSample`]), the training settings ([`FindingsTrainConfig`]) and the per-batch
//! augmentation (its own module, so the supervised loop in `findings` and the image-text
//! pretraining in `findings_pretrain` share it without importing each other).

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use spineseg_infer::findings_model::FindingsInput;
use spineseg_model::NUM_FINDINGS;

use crate::pretrained_encoder::PretrainedEncoder;

/// One graded disc level of one patient.
#[derive(Debug, Clone)]
pub struct FindingsSample {
    /// The patient (folds and bootstrap resample patients, never single levels).
    pub patient: String,
    pub input: FindingsInput,
    /// Each finding's truth, in `FINDING_KEYS` order.
    pub findings: [bool; NUM_FINDINGS],
    /// Pfirrmann grade 1..=5.
    pub grade: u8,
}

/// Settings of [`train_findings`] (stored in the model's training record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingsTrainConfig {
    pub steps: usize,
    pub batch_size: usize,
    /// AdamW's learning rate at step 0 (polynomial decay to 0).
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub seed: u64,
    /// Probability that a level with both sequences loses one of them in a batch.
    pub sequence_dropout: f64,
    /// Cap of the positive-class weight `negatives / positives`.
    pub max_positive_weight: f32,
    /// Weight of the Pfirrmann cross-entropy against the findings' mean binary cross-entropy.
    pub grade_weight: f32,
    /// Largest shift of the ROI in pixels (both axes, uniform).
    pub max_shift_px: usize,
    /// Intensity scale in `1 +- jitter` and offset in `+- jitter` (z-scored ROIs).
    pub intensity_jitter: f32,
    /// The encoder folder a ConvNeXt V2 findings encoder starts from (`spineseg pretrain`),
    /// with its weights' fingerprint; `None`: from scratch.
    #[serde(default)]
    pub pretrained_encoder: Option<PretrainedEncoder>,
}

impl Default for FindingsTrainConfig {
    fn default() -> Self {
        FindingsTrainConfig {
            steps: 1500,
            batch_size: 32,
            learning_rate: 1e-3,
            weight_decay: 1e-2,
            seed: 0,
            sequence_dropout: 0.3,
            max_positive_weight: 10.0,
            grade_weight: 0.5,
            max_shift_px: 3,
            intensity_jitter: 0.15,
            pretrained_encoder: None,
        }
    }
}

/// The augmented copy of `sample` for one batch.
pub(crate) fn augment(
    sample: &FindingsSample,
    roi_px: [usize; 2],
    settings: &FindingsTrainConfig,
    rng: &mut ChaCha8Rng,
) -> FindingsInput {
    let [height, width] = roi_px;
    let mut rois = sample.input.rois.clone();
    let available: Vec<usize> = (0..rois.len()).filter(|&s| rois[s].is_some()).collect();
    if available.len() > 1 && rng.gen_bool(settings.sequence_dropout) {
        let drop = available[rng.gen_range(0..available.len())];
        rois[drop] = None;
    }
    let shift = settings.max_shift_px as i64;
    let (dy, dx) = if shift > 0 { (rng.gen_range(-shift..=shift), rng.gen_range(-shift..=shift)) } else { (0, 0) };
    for roi in rois.iter_mut().flatten() {
        let j = settings.intensity_jitter;
        let (scale, offset) =
            if j > 0.0 { (rng.gen_range(1.0 - j..=1.0 + j), rng.gen_range(-j..=j)) } else { (1.0, 0.0) };
        let mut out = vec![0f32; roi.len()];
        for y in 0..height as i64 {
            let sy = y - dy;
            if sy < 0 || sy >= height as i64 {
                continue;
            }
            for x in 0..width as i64 {
                let sx = x - dx;
                if sx < 0 || sx >= width as i64 {
                    continue;
                }
                out[(y * width as i64 + x) as usize] = roi[(sy * width as i64 + sx) as usize] * scale + offset;
            }
        }
        *roi = out;
    }
    FindingsInput { level: sample.input.level, rois }
}
