//! Deep supervision (nnU-Net's `DeepSupervisionWrapper`): [`DeepSupervisionLoss`] sums a per-output
//! [`DiceCeLoss`] over the decoder's outputs with weights `1 / 2^i` (full resolution first), the
//! lowest resolution weighted 0, normalised to sum 1; the target is down-sampled to each
//! output's size with nearest-exact sampling (batchgeneratorsv2's `DownsampleSegForDSTransform`
//! uses `interpolate(mode='nearest-exact')`).

use super::dice_ce::{DiceCeLoss, DiceCeLossConfig};
use burn::config::Config;
use burn::tensor::{Bool, Int, Slice, Tensor};

/// nnU-Net's deep-supervision weights for `n` outputs (full resolution first): `1 / 2^i`, the
/// last (lowest resolution) set to 0 when `n > 1`, normalised to sum 1.
pub fn deep_supervision_weights(n: usize) -> Vec<f64> {
    let mut weights: Vec<f64> = (0..n).map(|i| 0.5f64.powi(i as i32)).collect();
    if n > 1 {
        weights[n - 1] = 0.0;
    }
    let total: f64 = weights.iter().sum();
    weights.iter().map(|w| w / total).collect()
}

/// Down-samples a label map by integer factors with nearest-exact sampling (PyTorch's
/// `interpolate(mode='nearest-exact')`: output `i` takes input `i * f + f / 2`).
///
/// # Shapes
///
/// - target: `[batch, 1, spatial...]`
/// - spatial: the output's spatial size; each input size must be a multiple of it
/// - output: `[batch, 1, spatial...]`
pub fn downsample_labels<const D: usize>(target: Tensor<D, Int>, spatial: &[usize]) -> Tensor<D, Int> {
    let dims = target.dims();
    assert_eq!(spatial.len() + 2, D, "one output size per spatial axis");
    if dims[2..] == *spatial {
        return target;
    }
    let slices: [Slice; D] = core::array::from_fn(|axis| {
        if axis < 2 {
            return Slice::full();
        }
        let (input, output) = (dims[axis], spatial[axis - 2]);
        assert!(output > 0 && input % output == 0, "cannot down-sample size {input} to {output} by an integer factor");
        let factor = input / output;
        Slice::new((factor / 2) as isize, None, factor as isize)
    });
    target.slice(slices)
}

/// Configuration of a [`DeepSupervisionLoss`].
#[derive(Config, Debug)]
pub struct DeepSupervisionLossConfig {
    /// The per-output loss.
    pub loss: DiceCeLossConfig,
    /// Number of network outputs (`PlainConvUNet::num_outputs`).
    pub num_outputs: usize,
}

impl DeepSupervisionLossConfig {
    /// Builds the loss with [`deep_supervision_weights`].
    pub fn init(&self) -> DeepSupervisionLoss {
        DeepSupervisionLoss { loss: self.loss.init(), weights: deep_supervision_weights(self.num_outputs) }
    }
}

/// Weighted [`DiceCeLoss`] over deep-supervision outputs.
#[derive(Debug, Clone)]
pub struct DeepSupervisionLoss {
    loss: DiceCeLoss,
    weights: Vec<f64>,
}

impl DeepSupervisionLoss {
    /// The weight of each output, full resolution first.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// Weighted sum of the per-output losses; outputs with weight 0 are not computed.
    ///
    /// # Shapes
    ///
    /// - outputs: logits `[batch, classes, spatial_i...]`, full resolution first, each spatial
    ///   size dividing the target's
    /// - target: `[batch, 1, spatial...]` at full resolution
    /// - label_mask: `[batch, classes]`, see the module docs
    /// - output: `[1]`
    pub fn forward<const D: usize>(
        &self,
        outputs: Vec<Tensor<D>>,
        target: Tensor<D, Int>,
        label_mask: Option<Tensor<2, Bool>>,
    ) -> Tensor<1> {
        assert_eq!(outputs.len(), self.weights.len(), "the loss was built for {} outputs", self.weights.len());
        outputs
            .into_iter()
            .zip(&self.weights)
            .filter(|(_, weight)| **weight > 0.0)
            .map(|(logits, weight)| {
                let dims = logits.dims();
                let target = downsample_labels(target.clone(), &dims[2..]);
                self.loss.forward(logits, target, label_mask.clone()).mul_scalar(*weight)
            })
            .reduce(|a, b| a + b)
            .expect("at least one output should have a positive weight")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::dice_ce::tests::{device, labels_2d, perfect_logits, scalar, target_4x4};
    use burn::tensor::Tensor;
    #[test]
    fn deep_supervision_weights_sum_to_one() {
        for n in 1..7 {
            let weights = deep_supervision_weights(n);
            assert!((weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            if n > 1 {
                assert_eq!(weights[n - 1], 0.0);
            }
        }
        let weights = deep_supervision_weights(3);
        assert!((weights[0] - 2.0 / 3.0).abs() < 1e-12 && (weights[1] - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn labels_are_downsampled_nearest_exact() {
        let target = labels_2d((0..16).collect(), 1, 4, 4);
        let down = downsample_labels(target, &[2, 2]);
        assert_eq!(down.dims(), [1, 1, 2, 2]);
        assert_eq!(down.try_into_vec_as::<i64>().unwrap(), vec![5, 7, 13, 15]);
    }

    #[test]
    fn deep_supervision_of_perfect_outputs_is_near_minimum() {
        let target = target_4x4();
        let full = perfect_logits(&target, 3, 30.0);
        let half = perfect_logits(&downsample_labels(target.clone(), &[2, 2]), 3, 30.0);
        let quarter = Tensor::<4>::zeros([2, 3, 1, 1], &device());
        let loss = DeepSupervisionLossConfig::new(DiceCeLossConfig::new(), 3).init();
        let value = scalar(loss.forward(vec![full, half, quarter], target, None));
        assert!((value + 1.0).abs() < 1e-3, "deep supervision loss {value}");
    }
}
