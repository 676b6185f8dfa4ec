//! nnU-Net's per-output training loss: soft Dice + cross-entropy ([`DiceCeLoss`]), with a
//! partial-label mask.
//!
//! - [`DiceCeLoss`]: `DC_and_CE_loss` with `MemoryEfficientSoftDiceLoss` (softmax, `do_bg =
//!   false`, smooth 1e-5, batch Dice by default) and `RobustCrossEntropyLoss` (mean over voxels).
//!   Like nnU-Net, the Dice term is the *negative* Dice, so a perfect prediction scores about
//!   `-weight_dice` and the loss is not bounded below by 0.
//!
//! # Partial labels
//!
//! Every loss takes an optional `label_mask`, `[batch, classes]` booleans telling which classes
//! are annotated in each sample (a dataset that labels vertebrae but not discs, say). Background
//! (class 0) is always treated as supervised. For an unsupervised class `c` of sample `b`:
//! - Dice: `c` is left out for `b` (its intersection and sums are zeroed before the batch sum);
//!   a class supervised in no sample of the batch is left out of the mean.
//! - Cross-entropy (marginal loss, Shi et al. 2021): `c`'s probability is merged into
//!   background, i.e. a voxel labelled background scores `log(p_0 + sum_unsupervised p_c)`,
//!   because an unlabelled structure is annotated as background.
//!
//! With no mask, or an all-true one, both reduce to the plain nnU-Net loss.

use burn::config::Config;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Bool, Int, Tensor};

/// Configuration of a [`DiceCeLoss`], defaults as nnU-Net.
#[derive(Config, Debug)]
pub struct DiceCeLossConfig {
    /// Weight of the cross-entropy term.
    #[config(default = 1.0)]
    pub weight_ce: f64,
    /// Weight of the (negative) soft Dice term.
    #[config(default = 1.0)]
    pub weight_dice: f64,
    /// Sum intersections and volumes over the batch before dividing (nnU-Net's `batch_dice`,
    /// true in its 2D and 3D low-resolution plans).
    #[config(default = true)]
    pub batch_dice: bool,
    /// Include background in the Dice term.
    #[config(default = false)]
    pub do_bg: bool,
    /// Added to numerator and denominator of the Dice.
    #[config(default = 1e-5)]
    pub smooth: f64,
}

impl DiceCeLossConfig {
    /// Builds the loss.
    pub fn init(&self) -> DiceCeLoss {
        DiceCeLoss { config: self.clone() }
    }
}

/// Soft Dice + cross-entropy on one output. Build it with [`DiceCeLossConfig::init`].
#[derive(Debug, Clone)]
pub struct DiceCeLoss {
    config: DiceCeLossConfig,
}

impl DiceCeLoss {
    /// The configuration.
    pub fn config(&self) -> &DiceCeLossConfig {
        &self.config
    }

    /// `weight_ce * CE + weight_dice * (-Dice)`.
    ///
    /// # Shapes
    ///
    /// - logits: `[batch, classes, spatial...]` (before softmax)
    /// - target: `[batch, 1, spatial...]`, labels in `0..classes`
    /// - label_mask: `[batch, classes]`, true where the class is annotated in that sample
    /// - output: `[1]`
    pub fn forward<const D: usize>(
        &self,
        logits: Tensor<D>,
        target: Tensor<D, Int>,
        label_mask: Option<Tensor<2, Bool>>,
    ) -> Tensor<1> {
        let (logits, target) = flatten_spatial(logits, target);
        let mask = label_mask.map(|mask| supervised_mask(mask.float()));
        let ce = cross_entropy(logits.clone(), target.clone(), mask.clone());
        let dice =
            soft_dice(softmax(logits, 1), target, mask, self.config.batch_dice, self.config.do_bg, self.config.smooth);
        ce.mul_scalar(self.config.weight_ce) - dice.mul_scalar(self.config.weight_dice)
    }
}

/// `[b, c, spatial...]` -> `[b, c, n]` for logits and target.
fn flatten_spatial<const D: usize>(logits: Tensor<D>, target: Tensor<D, Int>) -> (Tensor<3>, Tensor<3, Int>) {
    let logit_dims = logits.dims();
    let target_dims = target.dims();
    assert!(D >= 3, "expected [batch, classes, spatial...], got rank {D}");
    assert_eq!(target_dims[1], 1, "the target should be [batch, 1, spatial...] labels");
    assert!(
        logit_dims[0] == target_dims[0] && logit_dims[2..] == target_dims[2..],
        "logits {logit_dims:?} and target {target_dims:?} should agree in batch and spatial size"
    );
    let [batch, classes] = [logit_dims[0], logit_dims[1]];
    let voxels: usize = logit_dims[2..].iter().product();
    (logits.reshape([batch, classes, voxels]), target.reshape([batch, 1, voxels]))
}

/// Forces background (column 0) to supervised. `mask`: `[batch, classes]` of 0/1.
fn supervised_mask(mask: Tensor<2>) -> Tensor<2> {
    let [batch, classes] = mask.dims();
    let background = Tensor::<2>::ones([batch, 1], &mask.device());
    if classes == 1 {
        return background;
    }
    Tensor::cat(vec![background, mask.narrow(1, 1, classes - 1)], 1)
}

/// One-hot encoding of labels along dim 1.
///
/// # Shapes
///
/// - target: `[batch, 1, n]`
/// - output: `[batch, classes, n]` of 0/1
pub fn one_hot(target: Tensor<3, Int>, classes: usize) -> Tensor<3> {
    let device = target.device();
    let ids = Tensor::<1, Int>::arange(0..classes as i64, &device).reshape([1, classes, 1]);
    target.equal(ids).float()
}

/// Mean cross-entropy over all voxels, with unsupervised classes merged into background when a
/// mask is given (see the module docs).
///
/// # Shapes
///
/// - logits: `[batch, classes, n]`
/// - target: `[batch, 1, n]`
/// - mask: `[batch, classes]` of 0/1 with column 0 set
/// - output: `[1]`
pub fn cross_entropy(logits: Tensor<3>, target: Tensor<3, Int>, mask: Option<Tensor<2>>) -> Tensor<1> {
    let Some(mask) = mask else {
        return log_softmax(logits, 1).gather(1, target).mean().neg();
    };
    let [batch, classes, _voxels] = logits.dims();
    if classes == 1 {
        return log_softmax(logits, 1).gather(1, target).mean().neg();
    }
    // Background's new logit is logsumexp over background and the unsupervised classes; the
    // normaliser (logsumexp over all classes) is unchanged by the merge. Classes outside the
    // merge are pushed to -1e30 and each logsumexp subtracts its own maximum, so neither
    // exponential can underflow to log(0).
    let ones = Tensor::<2>::ones([batch, classes], &mask.device());
    let merge = supervised_mask(ones.clone() - mask);
    let outside = (ones - merge).mul_scalar(1e30).reshape([batch, classes, 1]);
    let merge_logits = logits.clone() - outside;
    let merge_peak = merge_logits.clone().max_dim(1).detach();
    let background = (merge_logits - merge_peak.clone()).exp().sum_dim(1).log() + merge_peak;
    let peak = logits.clone().max_dim(1).detach();
    let log_norm = (logits.clone() - peak.clone()).exp().sum_dim(1).log() + peak;
    let merged = Tensor::cat(vec![background, logits.narrow(1, 1, classes - 1)], 1);
    (merged.gather(1, target) - log_norm).mean().neg()
}

/// nnU-Net's `MemoryEfficientSoftDiceLoss` without the sign: the mean soft Dice, in `[0, 1]`.
///
/// # Shapes
///
/// - probs: `[batch, classes, n]` (softmax output)
/// - target: `[batch, 1, n]`
/// - mask: `[batch, classes]` of 0/1 with column 0 set
/// - output: `[1]`
pub fn soft_dice(
    probs: Tensor<3>,
    target: Tensor<3, Int>,
    mask: Option<Tensor<2>>,
    batch_dice: bool,
    do_bg: bool,
    smooth: f64,
) -> Tensor<1> {
    let [batch, classes, _voxels] = probs.dims();
    let target = one_hot(target, classes).detach();
    let first = if do_bg || classes == 1 { 0 } else { 1 };
    let kept = classes - first;
    let probs = probs.narrow(1, first, kept);
    let target = target.narrow(1, first, kept);

    let mut intersect = (probs.clone() * target.clone()).sum_dim(2).reshape([batch, kept]);
    let mut sum_pred = probs.sum_dim(2).reshape([batch, kept]);
    let mut sum_gt = target.sum_dim(2).reshape([batch, kept]);
    let mask = mask.map(|mask| mask.narrow(1, first, kept));
    if let Some(mask) = &mask {
        intersect = intersect * mask.clone();
        sum_pred = sum_pred * mask.clone();
        sum_gt = sum_gt * mask.clone();
    }
    let (intersect, sum_pred, sum_gt, weight) = if batch_dice {
        let weight = mask.map(|mask| mask.max_dim(0));
        (intersect.sum_dim(0), sum_pred.sum_dim(0), sum_gt.sum_dim(0), weight)
    } else {
        (intersect, sum_pred, sum_gt, mask)
    };
    let dice = (intersect.mul_scalar(2.0).add_scalar(smooth)) / (sum_pred + sum_gt).add_scalar(smooth).clamp_min(1e-8);
    match weight {
        None => dice.mean(),
        // Mean over supervised entries only; 0 when nothing is supervised.
        Some(weight) => (dice * weight.clone()).sum() / weight.sum().clamp_min(1.0),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, TensorData};

    pub(crate) fn device() -> Device {
        Device::flex()
    }

    pub(crate) fn labels_2d(values: Vec<i64>, batch: usize, height: usize, width: usize) -> Tensor<4, Int> {
        Tensor::from_data(TensorData::new(values, [batch, 1, height, width]), &device())
    }

    /// Logits `scale * one_hot(target)`: a confident, correct prediction.
    pub(crate) fn perfect_logits(target: &Tensor<4, Int>, classes: usize, scale: f32) -> Tensor<4> {
        let [batch, _, height, width] = target.dims();
        let flat = target.clone().reshape([batch, 1, height * width]);
        one_hot(flat, classes).mul_scalar(scale).reshape([batch, classes, height, width])
    }

    pub(crate) fn scalar(x: Tensor<1>) -> f32 {
        x.into_scalar::<f32>()
    }

    pub(crate) fn target_4x4() -> Tensor<4, Int> {
        labels_2d(
            vec![
                0, 0, 1, 1, //
                0, 0, 1, 1, //
                2, 2, 0, 0, //
                2, 2, 0, 0, //
                0, 1, 1, 0, //
                0, 1, 1, 0, //
                0, 2, 2, 0, //
                0, 0, 0, 0,
            ],
            2,
            4,
            4,
        )
    }
    #[test]
    fn perfect_prediction_is_near_the_minimum() {
        let target = target_4x4();
        let loss = DiceCeLossConfig::new().init();
        let perfect = scalar(loss.forward(perfect_logits(&target, 3, 30.0), target.clone(), None));
        assert!((perfect + 1.0).abs() < 1e-3, "perfect loss {perfect} should be about -1");
        let random = Tensor::<4>::random([2, 3, 4, 4], Distribution::Normal(0.0, 1.0), &device());
        let random = scalar(loss.forward(random, target, None));
        assert!(random > perfect + 0.3, "random {random} vs perfect {perfect}");
    }

    #[test]
    fn cross_entropy_of_uniform_logits_is_log_classes() {
        let target = target_4x4().reshape([2, 1, 16]);
        let logits = Tensor::<3>::zeros([2, 3, 16], &device());
        let ce = scalar(cross_entropy(logits, target, None));
        assert!((ce - 3f32.ln()).abs() < 1e-5);
    }

    #[test]
    fn dice_matches_hand_computation() {
        // One sample, 4 voxels, 2 classes; foreground probabilities 1, 0.5, 0, 0 with labels
        // 1, 1, 0, 0: intersection 1.5, prediction 1.5, truth 2 -> Dice 3 / 3.5.
        let probs_fg = Tensor::<3>::from_data(TensorData::new(vec![1.0f32, 0.5, 0.0, 0.0], [1, 1, 4]), &device());
        let probs = Tensor::cat(vec![probs_fg.clone().neg().add_scalar(1.0), probs_fg], 1);
        let target = Tensor::<3, Int>::from_data(TensorData::new(vec![1i64, 1, 0, 0], [1, 1, 4]), &device());
        let dice = scalar(soft_dice(probs, target, None, true, false, 0.0));
        assert!((dice - 3.0 / 3.5).abs() < 1e-6, "dice {dice}");
    }

    #[test]
    fn gradients_are_finite() {
        let device = device().autodiff();
        let logits = Tensor::<4>::random([2, 3, 4, 4], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let target = target_4x4().to_device(&device);
        let mask =
            Tensor::<2, Bool>::from_data(TensorData::new(vec![true, true, false, true, false, true], [2, 3]), &device);
        for mask in [None, Some(mask)] {
            let loss = DiceCeLossConfig::new().init().forward(logits.clone(), target.clone(), mask);
            let grads = loss.backward();
            let grad = logits.grad(&grads).expect("logits should get a gradient");
            let values = grad.into_data().try_to_vec::<f32>().unwrap();
            assert!(values.iter().all(|v| v.is_finite()));
            assert!(values.iter().any(|v| *v != 0.0));
        }
    }

    #[test]
    fn label_mask_all_true_changes_nothing() {
        let target = target_4x4();
        let logits = Tensor::<4>::random([2, 3, 4, 4], Distribution::Normal(0.0, 1.0), &device());
        let loss = DiceCeLossConfig::new().init();
        let plain = scalar(loss.forward(logits.clone(), target.clone(), None));
        let mask = Tensor::<2, Bool>::from_data(TensorData::new(vec![true; 6], [2, 3]), &device());
        let masked = scalar(loss.forward(logits, target, Some(mask)));
        assert!((plain - masked).abs() < 1e-5, "{plain} vs {masked}");
    }

    #[test]
    fn marginal_cross_entropy_does_not_underflow() {
        // Background and the unsupervised class 2 are both 200 below class 1:
        // CE = -log(2 e^-200 / (1 + 2 e^-200)) = 200 - ln 2.
        let target = Tensor::<3, Int>::from_data(TensorData::new(vec![0i64], [1, 1, 1]), &device());
        let logits = Tensor::<3>::from_data(TensorData::new(vec![-200.0f32, 0.0, -200.0], [1, 3, 1]), &device());
        let mask = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 1.0, 0.0], [1, 3]), &device());
        let ce = scalar(cross_entropy(logits, target, Some(supervised_mask(mask))));
        assert!((ce - (200.0 - 2f32.ln())).abs() < 1e-2, "marginal CE {ce}");
    }

    #[test]
    fn unsupervised_class_merges_into_background() {
        // Sample 0 does not annotate class 2: predicting class 2 where the label says background
        // is not penalised by the marginal cross-entropy.
        let target = labels_2d(vec![0, 0, 1, 1], 1, 2, 2);
        let as_class_2 = labels_2d(vec![2, 2, 1, 1], 1, 2, 2);
        let logits = perfect_logits(&as_class_2, 3, 30.0);
        let mask = Tensor::<2, Bool>::from_data(TensorData::new(vec![true, true, false], [1, 3]), &device());
        let ce = |mask| {
            let (logits, target) = flatten_spatial(logits.clone(), target.clone());
            scalar(cross_entropy(logits, target, mask))
        };
        let marginal = ce(Some(supervised_mask(mask.float())));
        let plain = ce(None);
        assert!(marginal < 1e-3, "marginal CE {marginal}");
        assert!(plain > 10.0, "plain CE {plain}");
    }

    #[test]
    fn an_unannotated_class_is_not_pushed_down_on_background_voxels() {
        // Two samples of 2 x 2 voxels, 3 classes; sample 0 does not annotate class 2. Voxel 0 of
        // sample 0 is background. The marginal cross-entropy scores it -log(p_0 + p_2), which
        // depends on logits 0 and 2 only through e^z0 + e^z2: moving probability between them
        // (d loss / d(z_2 - z_0) at fixed e^z0 + e^z2) changes nothing, i.e. the gradient
        // satisfies grad_2 / p_2 == grad_0 / p_0. Dice leaves class 2 of sample 0 out and sees
        // class 1 only through p_1, which that move keeps, so the whole loss has the property.
        let device = device().autodiff();
        let values: Vec<f32> = (0..24).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.3).collect();
        let logits = Tensor::<4>::from_data(TensorData::new(values, [2, 3, 2, 2]), &device).require_grad();
        let target = labels_2d(vec![0, 1, 0, 0, 0, 2, 1, 0], 2, 2, 2).to_device(&device);
        let mask = Tensor::<2, Bool>::from_data(TensorData::new(vec![true, true, false, true, true, true], [2, 3]), &device);
        let probs = softmax(logits.clone(), 1).into_data().try_to_vec::<f32>().unwrap();
        let at = |v: &[f32], sample: usize, class: usize, voxel: usize| v[(sample * 3 + class) * 4 + voxel];
        let loss = DiceCeLossConfig::new().init();
        let grads_of = |mask: Option<Tensor<2, Bool>>| {
            let grads = loss.forward(logits.clone(), target.clone(), mask).backward();
            logits.grad(&grads).expect("logits should get a gradient").into_data().try_to_vec::<f32>().unwrap()
        };
        let ratio = |g: &[f32], sample: usize, class: usize, voxel: usize| at(g, sample, class, voxel) / at(&probs, sample, class, voxel);
        let masked = grads_of(Some(mask));
        for voxel in [0, 2, 3] {
            let (bg, c) = (ratio(&masked, 0, 0, voxel), ratio(&masked, 0, 2, voxel));
            assert!((bg - c).abs() <= 1e-4 * bg.abs().max(c.abs()), "voxel {voxel}: grad/p {bg} (background) vs {c} (class 2)");
        }
        // Where class 2 is annotated (sample 1) and without the mask, the loss does push class 2
        // down relative to background on a background voxel.
        let plain = grads_of(None);
        for (grads, sample) in [(&plain, 0), (&masked, 1)] {
            let (bg, c) = (ratio(grads, sample, 0, 0), ratio(grads, sample, 2, 0));
            assert!(c - bg > 1e-3, "sample {sample}: grad/p {bg} (background) vs {c} (class 2)");
        }
    }

    #[test]
    fn dice_leaves_an_unannotated_class_out() {
        // One sample, 4 voxels; class 2 is unannotated. The Dice is class 1's alone: labels
        // 1, 1, 0, 0 with p_1 = 1, 0.5, 0, 0 -> 3 / 3.5, whatever class 2's probabilities are.
        let device = device();
        let target = Tensor::<3, Int>::from_data(TensorData::new(vec![1i64, 1, 0, 2], [1, 1, 4]), &device);
        let mask = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 1.0, 0.0], [1, 3]), &device);
        for p2 in [[0.0f32, 0.0, 0.0, 0.0], [0.0, 0.5, 1.0, 0.3]] {
            let p1 = [1.0f32, 0.5, 0.0, 0.0];
            let p0: Vec<f32> = (0..4).map(|v| 1.0 - p1[v] - p2[v]).collect();
            let probs: Vec<f32> = p0.iter().chain(&p1).chain(&p2).copied().collect();
            let probs = Tensor::<3>::from_data(TensorData::new(probs, [1, 3, 4]), &device);
            let dice = scalar(soft_dice(probs, target.clone(), Some(supervised_mask(mask.clone())), true, false, 0.0));
            assert!((dice - 3.0 / 3.5).abs() < 1e-6, "dice {dice} with class 2 at {p2:?}");
        }
    }
}
