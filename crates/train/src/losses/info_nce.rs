//! CLIP's symmetric InfoNCE between a batch of image embeddings and a batch of text embeddings,
//! with a learned temperature and multi-positive targets.
//!
//! Row `i` of both sides is one pair. Both sides are L2-normalised, their `[n, n]` cosines are
//! multiplied by `exp(logit_scale)` (CLIP's learned inverse temperature: started at ln(1/0.07),
//! used clamped to at most ln 100 so the logits cannot grow without bound; where the clamp holds
//! its gradient is 0, so the loss never pushes the scale further up), and the loss is the mean of
//! the image-to-text and the text-to-image cross-entropies.
//!
//! **Multi-positive targets**: pairs in the same `group` (e.g. two disc levels whose report
//! sentences are the same, "L4/L5 intervertebral disc: no abnormality, Pfirrmann grade 2.") are
//! positives of each other: row `i`'s target spreads 1 evenly over the columns of its group,
//! instead of calling an identical sentence a negative. With every group of one pair this is
//! CLIP's loss. The targets are symmetric, so swapping the image and text sides gives the same
//! loss.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Tensor, TensorData};

/// CLIP's initial `logit_scale`, ln(1 / 0.07).
pub fn initial_logit_scale() -> f32 {
    (1.0f32 / 0.07).ln()
}

/// The largest `logit_scale` used, ln 100 (a temperature of 0.01).
pub fn max_logit_scale() -> f32 {
    100f32.ln()
}

/// Guards the normalisation of an all-zero vector.
const EPSILON: f64 = 1e-6;

/// The target distribution of every row, `[n, n]` row major: `1 / |group(i)|` where
/// `groups[j] == groups[i]`, else 0. Symmetric.
pub fn multi_positive_targets(groups: &[usize]) -> Vec<f32> {
    let n = groups.len();
    let mut targets = vec![0f32; n * n];
    for (i, gi) in groups.iter().enumerate() {
        let size = groups.iter().filter(|g| *g == gi).count() as f32;
        for (j, gj) in groups.iter().enumerate() {
            if gi == gj {
                targets[i * n + j] = 1.0 / size;
            }
        }
    }
    targets
}

/// The symmetric InfoNCE (see the module documentation).
///
/// # Shapes
/// - `image`, `text`: `[n, dim]` (normalised here; row `i` of both is pair `i`)
/// - `logit_scale`: `[1]`, the learned log inverse temperature (clamped to at most
///   [`max_logit_scale`] here)
/// - `groups`: `n` ids; equal ids are positives of each other
/// - output: `[1]`
pub fn symmetric_info_nce(image: Tensor<2>, text: Tensor<2>, logit_scale: Tensor<1>, groups: &[usize]) -> Tensor<1> {
    let [n, dim] = image.dims();
    assert_eq!(text.dims(), [n, dim], "one text embedding per image embedding, of the same width");
    assert_eq!(groups.len(), n, "one group id per pair");
    let device = image.device();
    let normalise = |x: Tensor<2>| {
        let norm = x.clone().powf_scalar(2.0).sum_dim(1).add_scalar(EPSILON).sqrt();
        x / norm
    };
    let scale = logit_scale.clamp_max(max_logit_scale()).exp().reshape([1, 1]);
    let logits = normalise(image).matmul(normalise(text).transpose()) * scale; // [n, n]
    let targets = Tensor::<2>::from_data(TensorData::new(multi_positive_targets(groups), [n, n]), &device);
    let image_to_text = (log_softmax(logits.clone(), 1) * targets.clone()).sum().neg() / n as f64;
    let text_to_image = (log_softmax(logits.transpose(), 1) * targets).sum().neg() / n as f64;
    (image_to_text + text_to_image) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn device() -> Device {
        Device::flex()
    }

    /// Deterministic `[n, dim]` values (no global random generator).
    fn values(n: usize, dim: usize, seed: f32) -> Tensor<2> {
        let v: Vec<f32> = (0..n * dim).map(|i| ((i as f32 + 1.0) * 0.731 + seed).sin()).collect();
        Tensor::from_data(TensorData::new(v, [n, dim]), &device())
    }

    fn scale(value: f32) -> Tensor<1> {
        Tensor::from_data(TensorData::new(vec![value], [1]), &device())
    }

    fn loss(image: Tensor<2>, text: Tensor<2>, logit_scale: f32, groups: &[usize]) -> f32 {
        symmetric_info_nce(image, text, scale(logit_scale), groups).into_scalar::<f32>()
    }

    #[test]
    fn a_hand_checked_pair_of_pairs() {
        // Orthonormal pairs at scale 1: logits [[1, 0], [0, 1]], each row's loss ln(1 + e^-1).
        let eye = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 0.0, 0.0, 1.0], [2, 2]), &device());
        let expected = (1.0 + (-1.0f64).exp()).ln();
        let got = loss(eye.clone(), eye.clone() * 3.0, 0.0, &[0, 1]);
        assert!((got as f64 - expected).abs() < 1e-5, "{got} vs {expected}");
        // The same sentence twice: both columns are right, the target is half on each, and the
        // loss is the cross-entropy against [1/2, 1/2]: -1/2 ln(e/(e+1)) - 1/2 ln(1/(e+1)).
        let expected = 0.5 * ((1.0 + (-1.0f64).exp()).ln() + (1.0 + 1f64.exp()).ln());
        let got = loss(eye.clone(), eye, 0.0, &[7, 7]);
        assert!((got as f64 - expected).abs() < 1e-5, "{got} vs {expected}");
    }

    #[test]
    fn swapping_image_and_text_gives_the_same_loss() {
        let (a, b) = (values(6, 5, 0.0), values(6, 5, 2.0));
        for groups in [vec![0, 1, 2, 3, 4, 5], vec![0, 1, 0, 2, 1, 0]] {
            let forward = loss(a.clone(), b.clone(), initial_logit_scale(), &groups);
            let swapped = loss(b.clone(), a.clone(), initial_logit_scale(), &groups);
            assert!((forward - swapped).abs() < 1e-5 * forward.abs().max(1.0), "{forward} vs {swapped}");
        }
        let targets = multi_positive_targets(&[0, 1, 0]);
        assert_eq!(targets, [0.5, 0.0, 0.5, 0.0, 1.0, 0.0, 0.5, 0.0, 0.5]);
    }

    #[test]
    fn aligned_pairs_score_lower_than_mismatched_ones() {
        let n = 6;
        let text = values(n, 8, 1.0);
        let image = text.clone() + values(n, 8, 5.0) * 0.05;
        let groups: Vec<usize> = (0..n).collect();
        let aligned = loss(image.clone(), text.clone(), initial_logit_scale(), &groups);
        // Rotate the text rows: every image faces another pair's text.
        let rotated = Tensor::cat(vec![text.clone().narrow(0, 1, n - 1), text.narrow(0, 0, 1)], 0);
        let mismatched = loss(image, rotated, initial_logit_scale(), &groups);
        assert!(aligned < 0.5 && mismatched > aligned + 2.0, "aligned {aligned}, mismatched {mismatched}");
        assert!(aligned >= 0.0);
    }

    #[test]
    fn the_temperature_is_capped_and_the_cap_stops_its_gradient() {
        let (a, b) = (values(4, 3, 0.0), values(4, 3, 1.0));
        let groups = [0, 1, 2, 3];
        // Above the cap the loss equals the loss at the cap.
        let at_cap = loss(a.clone(), b.clone(), max_logit_scale(), &groups);
        let above = loss(a.clone(), b.clone(), 9.0, &groups);
        assert_eq!(at_cap, above);
        // Below the cap the scale gets a gradient; above it none, so no step of the loss moves
        // it further up.
        let device = device().autodiff();
        let gradient = |value: f32| -> f32 {
            let logit_scale = Tensor::<1>::from_data(TensorData::new(vec![value], [1]), &device).require_grad();
            let a = Tensor::<2>::from_data(a.to_data(), &device);
            let b = Tensor::<2>::from_data(b.to_data(), &device);
            let grads = symmetric_info_nce(a, b, logit_scale.clone(), &groups).backward();
            logit_scale.grad(&grads).map_or(0.0, |g| g.into_scalar::<f32>())
        };
        assert!(gradient(initial_logit_scale()).abs() > 1e-6);
        assert!(gradient(initial_logit_scale()).is_finite());
        assert_eq!(gradient(6.0), 0.0);
    }
}
