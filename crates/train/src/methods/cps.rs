//! Cross pseudo supervision (CPS; Chen et al., CVPR 2021), stage 1 of SSHSNet (issue 13): two
//! networks of the same kind, initialised from different seeds, trained together on batches
//! of labelled and unlabelled patches.
//!
//! Each step:
//! 1. Both networks predict the unlabelled patches as they are (no gradients); the arg max is
//!    each one's pseudo-label.
//! 2. CutMix: every unlabelled patch gets a box from the next unlabelled patch of the batch
//!    (one box covering a fraction of the patch drawn in `cutmix_area`, the same fraction along
//!    every axis, anywhere in the patch), and its pseudo-labels get the same box from the
//!    partner's, so the label of a mixed patch is the mix of the labels.
//! 3. Each network takes a step on the (mixed) batch: Dice + cross-entropy on the labelled
//!    patches (with partial-label masks, as the supervised method) plus `cps_weight` x the
//!    cross-entropy of its output on the mixed unlabelled patches against the *other*
//!    network's mixed pseudo-labels. The pseudo-labels are constants, so the two losses touch
//!    disjoint parameters and the two optimiser steps are the gradient step of their sum.
//!
//! Batches: the engine's sampler puts `batch_size / 2` labelled patches (at least one) at the
//! end of every batch and unlabelled ones before them ([`MethodSpec::labelled_per_batch`]), as
//! CPS draws a labelled and an unlabelled batch of the same size. The unlabelled patches come
//! from `WORK/unlabelled/<configuration>` (`spineseg train --cps --images DIR`).
//!
//! The exported network is the first one (validated each epoch); the second is saved in the
//! checkpoint's `second/` folder and travels with the model as [`SECOND_WEIGHTS_FILE`] (for
//! SSHSNet's stage 2, `super::sshsnet_stage2`). CutMix boxes come from `(seed, step)` and the step count is
//! checkpointed (`cps_steps.json`), so a resumed run is bit-identical.
//!
//! Not in this file (yet): the 2.5D input of the authors' stage 1 (three adjacent slices, label
//! of the middle one); the plan's single slice is the input.
//!
//! [`MethodSpec::labelled_per_batch`]: crate::method::MethodSpec::labelled_per_batch

use super::single_network::{batch_images, NetworkChoice, SingleNetwork, SingleNetworkState};
use super::supervised::effective_rule;
use crate::error::{Result, TrainError};
use crate::method::{ExportedNetwork, MethodContext, StepStats, TrainingMethod};
use crate::pseudo_dice::PseudoDice;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use spineseg_dataloading::partial_labels::PartialLabelRule;
use spineseg_dataloading::sampling::Batch;
use std::path::Path;

/// Checkpoint file with the step count (the CutMix boxes' stream).
const STEPS_FILE: &str = "cps_steps.json";
/// Checkpoint sub-folder of the second network.
const SECOND_DIR: &str = "second";
/// The second network's weights in the model folder (the first is the folder's network).
pub const SECOND_WEIGHTS_FILE: &str = "second_weights.bpk";
/// Added to the run's seed for the second network's initialisation.
const SECOND_SEED_OFFSET: u64 = 0x5eed_0002;

/// Settings of [`CpsMethod`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpsSettings {
    /// Partial labels for the labelled patches, as [`super::SupervisedSettings`].
    #[serde(default)]
    pub partial_labels: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_label_rule: Option<PartialLabelRule>,
    /// Weight of the cross pseudo supervision term (CPS: 1.5 on Cityscapes, 1 in SSHSNet).
    pub cps_weight: f64,
    /// Ramp the CPS weight up over this many steps with the sigmoid-shaped schedule of
    /// semi-supervised segmentation codes (Laine & Aila; SSL4MIS's CPS): `exp(-5 (1 - t/T)^2)`
    /// at step `t < T`, then 1. `None` (the authors' SSHSNet and CPS): the full weight from the
    /// first step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rampup_steps: Option<u64>,
    /// Mix unlabelled patches with CutMix boxes (off: each network supervises the other on
    /// the patches as they are).
    pub cutmix: bool,
    /// Range of the fraction of a patch a CutMix box covers.
    pub cutmix_area: [f64; 2],
    /// The networks' kind (both the same): the plan's U-Net or DeepLabv3+ (the authors' stage 1).
    #[serde(default, skip_serializing_if = "NetworkChoice::is_unet")]
    pub network: NetworkChoice,
}

impl Default for CpsSettings {
    fn default() -> Self {
        CpsSettings {
            partial_labels: false,
            partial_label_rule: None,
            cps_weight: 1.0,
            rampup_steps: None,
            cutmix: true,
            cutmix_area: [0.25, 0.5],
            network: NetworkChoice::Unet,
        }
    }
}

impl CpsSettings {
    /// The rule the label masks are inferred by; `None` without partial labels.
    pub fn partial_labels(&self) -> Option<PartialLabelRule> {
        effective_rule(self.partial_labels, self.partial_label_rule)
    }

    /// Checks the weight and the CutMix range.
    pub fn validate(&self) -> Result<()> {
        if !(self.cps_weight.is_finite() && self.cps_weight >= 0.0) {
            return Err(TrainError::Invalid(format!("cps_weight must be finite and >= 0, got {}", self.cps_weight)));
        }
        let [low, high] = self.cutmix_area;
        if !(0.0 < low && low <= high && high <= 1.0) {
            return Err(TrainError::Invalid(format!(
                "cutmix_area must satisfy 0 < low <= high <= 1, got {low}..{high}"
            )));
        }
        Ok(())
    }
}

/// Two networks trained with cross pseudo supervision (see the module documentation).
pub struct CpsMethod {
    first: SingleNetwork,
    second: SingleNetwork,
    settings: CpsSettings,
    seed: u64,
    steps: u64,
}

impl CpsMethod {
    /// The plan's U-Net twice (new run: the run's seed and a second seed) or the checkpoint's.
    pub fn build(settings: &CpsSettings, ctx: &MethodContext<'_>, saved: Option<&serde_json::Value>) -> Result<Self> {
        let partial = settings.partial_labels();
        let config = match saved {
            Some(saved) => SingleNetworkState::network_from_saved(saved, ctx)?,
            None => settings.network.config(ctx)?,
        };
        let first = SingleNetwork::new_of_kind_seeded(config.clone(), ctx, partial, ctx.seed)?;
        let second =
            SingleNetwork::new_of_kind_seeded(config, ctx, partial, ctx.seed.wrapping_add(SECOND_SEED_OFFSET))?;
        Ok(CpsMethod { first, second, settings: settings.clone(), seed: ctx.seed, steps: 0 })
    }

    fn rng(&self) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(self.seed ^ self.steps.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xc95)
    }
}

/// The spatial sides of a batch's patch as `[X, Y, Z]` (`X = 1` in 2D).
fn patch_sides(batch: &Batch) -> [usize; 3] {
    match batch.patch_shape.as_slice() {
        [y, z] => [1, *y, *z],
        [x, y, z] => [*x, *y, *z],
        other => panic!("a patch should have 2 or 3 sides, got {other:?}"),
    }
}

/// The factor on the CPS weight at step `step` (0-based) of a ramp-up over `steps` steps.
pub fn rampup(step: u64, steps: Option<u64>) -> f64 {
    match steps {
        Some(n) if n > 0 && step < n => {
            let left = 1.0 - step as f64 / n as f64;
            (-5.0 * left * left).exp()
        }
        _ => 1.0,
    }
}

/// A CutMix box: `[start, end)` per axis of `sides`, covering a fraction in `area` of the patch
/// (the same fraction along every axis with more than one voxel).
pub fn cutmix_box(sides: [usize; 3], area: [f64; 2], rng: &mut ChaCha8Rng) -> CutBox {
    let axes = sides.iter().filter(|&&n| n > 1).count().max(1);
    let fraction = if area[1] > area[0] { rng.gen_range(area[0]..=area[1]) } else { area[0] };
    let per_axis = fraction.powf(1.0 / axes as f64);
    sides.map(|n| {
        if n <= 1 {
            return (0, n);
        }
        let length = ((n as f64 * per_axis).round() as usize).clamp(1, n);
        let start = rng.gen_range(0..=n - length);
        (start, start + length)
    })
}

/// A CutMix box: `[start, end)` along each of the three patch axes.
pub type CutBox = [(usize, usize); 3];

/// A patch, the partner patch it takes the box from, and the box.
pub type CutMixPair = (usize, usize, CutBox);

/// CutMix in place: for each `(patch, partner, box)`, the voxels of `patch` inside the box take
/// the partner's values, in every channel. `values` is `[B, channels, voxels]`, row major; the
/// partners are read from `original` (the unmixed values), so chains of partners mix correctly.
pub fn apply_cutmix<T: Copy>(
    values: &mut [T],
    original: &[T],
    channels: usize,
    sides: [usize; 3],
    pairs: &[CutMixPair],
) {
    let voxels = sides.iter().product::<usize>();
    for &(patch, partner, cut) in pairs {
        for c in 0..channels {
            let target = (patch * channels + c) * voxels;
            let source = (partner * channels + c) * voxels;
            // Row by row of the box: each (x, y) row's z range is contiguous.
            let [(x0, x1), (y0, y1), (z0, z1)] = cut;
            for x in x0..x1 {
                for y in y0..y1 {
                    let start = (x * sides[1] + y) * sides[2];
                    values[target + start + z0..target + start + z1]
                        .copy_from_slice(&original[source + start + z0..source + start + z1]);
                }
            }
        }
    }
}

/// Mean cross-entropy of `logits` (`[B, classes, *patch]`) at the samples `rows` against
/// `labels` (`[rows, 1, *patch]`).
fn pseudo_label_cross_entropy(logits: Tensor<5>, rows: &[usize], labels: Tensor<5, Int>) -> Tensor<1> {
    let device = logits.device();
    let index = Tensor::<1, Int>::from_data(
        TensorData::new(rows.iter().map(|&r| r as i64).collect::<Vec<_>>(), [rows.len()]),
        &device,
    );
    log_softmax(logits.select(0, index), 1).gather(1, labels).mean().neg()
}

impl TrainingMethod for CpsMethod {
    fn num_params(&self) -> usize {
        self.first.num_params() + self.second.num_params()
    }

    fn train_step(&mut self, batch: &Batch, lr: f64) -> Result<StepStats> {
        let labelled: Vec<usize> = (0..batch.samples.len()).filter(|&b| batch.samples[b].labelled).collect();
        let unlabelled: Vec<usize> = (0..batch.samples.len()).filter(|&b| !batch.samples[b].labelled).collect();
        let sides = patch_sides(batch);
        let voxels: usize = sides.iter().product();
        let mut rng = self.rng();
        self.steps += 1;
        // Each unlabelled patch with the next one as its partner (none when it is alone).
        let pairs: Vec<CutMixPair> = if self.settings.cutmix && unlabelled.len() > 1 {
            (0..unlabelled.len())
                .map(|j| {
                    (
                        unlabelled[j],
                        unlabelled[(j + 1) % unlabelled.len()],
                        cutmix_box(sides, self.settings.cutmix_area, &mut rng),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut images = batch.images.clone();
        apply_cutmix(&mut images, &batch.images, batch.channels, sides, &pairs);
        let (inference_device, device) = self.first.devices();
        let (inference_device, device) = (inference_device.clone(), device.clone());
        // The unmixed unlabelled patches, built once for both networks' pseudo-labels, and the
        // CutMix pairs re-indexed to their rows.
        let unmixed = (!unlabelled.is_empty()).then(|| {
            let all = batch_images(batch, &inference_device);
            let index = Tensor::<1, Int>::from_data(
                TensorData::new(unlabelled.iter().map(|&b| b as i64).collect::<Vec<_>>(), [unlabelled.len()]),
                &inference_device,
            );
            all.select(0, index)
        });
        let row = |b: usize| unlabelled.iter().position(|&u| u == b).expect("a pair names unlabelled patches");
        let row_pairs: Vec<CutMixPair> =
            pairs.iter().map(|&(patch, partner, cut)| (row(patch), row(partner), cut)).collect();
        // Pseudo-labels of the unmixed patches, mixed like the patches: `[unlabelled, 1, *patch]`.
        let pseudo_labels = |network: &SingleNetwork| -> Option<Tensor<5, Int>> {
            let predicted = network.hard_prediction(unmixed.clone()?);
            let flat: Vec<i64> = predicted.try_into_vec_as::<i64>().expect("arg max indices should convert to i64");
            let mut mixed = flat.clone();
            apply_cutmix(&mut mixed, &flat, 1, sides, &row_pairs);
            let [x, y, z] = sides;
            Some(Tensor::<5, Int>::from_data(TensorData::new(mixed, [unlabelled.len(), 1, x, y, z]), &device))
        };
        let from_first = pseudo_labels(&self.first);
        let from_second = pseudo_labels(&self.second);
        let [x, y, z] = sides;
        let images =
            Tensor::<5>::from_data(TensorData::new(images, [batch.samples.len(), batch.channels, x, y, z]), &device);
        let seg: Vec<i64> = batch.seg.iter().map(|&v| v as i64).collect();
        debug_assert_eq!(seg.len(), batch.samples.len() * voxels);
        let target = Tensor::<5, Int>::from_data(TensorData::new(seg, [batch.samples.len(), 1, x, y, z]), &device);
        // `steps` was advanced above: the step being taken is `steps - 1`.
        let weight = self.settings.cps_weight * rampup(self.steps - 1, self.settings.rampup_steps);
        let cps_term = |labels: Option<Tensor<5, Int>>| {
            let rows = unlabelled.clone();
            move |logits: Tensor<5>| {
                labels.map(|labels| pseudo_label_cross_entropy(logits, &rows, labels).mul_scalar(weight))
            }
        };
        let first =
            self.first.train_step_mixed(batch, images.clone(), target.clone(), &labelled, lr, cps_term(from_second))?;
        let second = self.second.train_step_mixed(batch, images, target, &labelled, lr, cps_term(from_first))?;
        Ok(StepStats { loss: first.loss + second.loss, grad_norm: first.grad_norm.max(second.grad_norm) })
    }

    fn validation_step(&self, batch: &Batch, dice: &mut PseudoDice) -> Result<f64> {
        self.first.validation_step(batch, dice)
    }

    fn save(&self, dir: &Path) -> Result<()> {
        self.first.save(dir)?;
        let second = dir.join(SECOND_DIR);
        std::fs::create_dir_all(&second).map_err(|e| TrainError::Os { path: second.clone(), source: e })?;
        self.second.save(&second)?;
        spineseg_io::json::write_json(&dir.join(STEPS_FILE), &serde_json::json!({ "steps": self.steps }))?;
        Ok(())
    }

    fn load(&mut self, dir: &Path) -> Result<()> {
        self.first.load(dir)?;
        self.second.load(&dir.join(SECOND_DIR))?;
        let path = dir.join(STEPS_FILE);
        let steps: serde_json::Value = spineseg_io::json::read_json(&path)?;
        self.steps = steps["steps"].as_u64().ok_or_else(|| TrainError::Incompatible {
            path: path.clone(),
            detail: "no step count (\"steps\")".into(),
        })?;
        Ok(())
    }

    fn export(&self) -> ExportedNetwork {
        // The second network travels with the model: SSHSNet's stage 2 averages both.
        let mut exported = self.first.export();
        let second = format!("{SECOND_DIR}/{}", crate::checkpoint::MODEL_FILE);
        exported.companions.push((second, SECOND_WEIGHTS_FILE.to_string()));
        exported
    }

    fn state(&self) -> serde_json::Value {
        self.first.state()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cutmix_box_covers_the_drawn_fraction_and_stays_inside() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..200 {
            let cut = cutmix_box([1, 40, 32], [0.25, 0.5], &mut rng);
            assert_eq!(cut[0], (0, 1), "a 2D patch's slice axis is whole");
            let area = ((cut[1].1 - cut[1].0) * (cut[2].1 - cut[2].0)) as f64 / (40.0 * 32.0);
            assert!((0.2..=0.56).contains(&area), "{area} of the patch for {cut:?}");
            assert!(cut[1].1 <= 40 && cut[2].1 <= 32);
        }
        let whole = cutmix_box([4, 4, 4], [1.0, 1.0], &mut rng);
        assert_eq!(whole, [(0, 4), (0, 4), (0, 4)]);
    }

    #[test]
    fn cutmix_copies_the_partner_inside_the_box_in_every_channel() {
        // Two patches of 2 channels, 1 x 2 x 3 voxels; patch 0 takes patch 1's box (y 1, z 0..2)
        // and patch 1 takes patch 0's original values in the same box.
        let sides = [1, 2, 3];
        let original: Vec<i32> = (0..2 * 2 * 6).collect();
        let mut values = original.clone();
        let cut = [(0, 1), (1, 2), (0, 2)];
        apply_cutmix(&mut values, &original, 2, sides, &[(0, 1, cut), (1, 0, cut)]);
        // Patch 0, channel 0 = 0..6, box voxels 3, 4 from patch 1 channel 0 (12..18): 15, 16.
        assert_eq!(&values[0..6], &[0, 1, 2, 15, 16, 5]);
        assert_eq!(&values[6..12], &[6, 7, 8, 21, 22, 11]);
        assert_eq!(&values[12..18], &[12, 13, 14, 3, 4, 17], "the partner reads the unmixed values");
    }

    #[test]
    fn settings_are_checked() {
        assert!(CpsSettings::default().validate().is_ok());
        assert!(CpsSettings { cps_weight: -1.0, ..Default::default() }.validate().is_err());
        // The ramp-up: exp(-5) at the first step, 1 from the last ramp-up step on; none without.
        assert!((rampup(0, Some(100)) - (-5.0f64).exp()).abs() < 1e-12);
        assert!((rampup(50, Some(100)) - (-1.25f64).exp()).abs() < 1e-12);
        assert!(rampup(99, Some(100)) < 1.0 && rampup(100, Some(100)) == 1.0);
        assert_eq!(rampup(0, None), 1.0);
        assert!(CpsSettings { cutmix_area: [0.6, 0.5], ..Default::default() }.validate().is_err());
        assert!(CpsSettings { cutmix_area: [0.0, 0.5], ..Default::default() }.validate().is_err());
    }
}
