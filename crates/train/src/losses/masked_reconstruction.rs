//! FCMAE's reconstruction loss: mean squared error between predicted and true patch pixels,
//! averaged over the masked patches only (visible patches contribute neither loss nor
//! gradient), with each true patch normalised to zero mean and unit variance first (MAE's
//! `norm_pix_loss`, which the ConvNeXt V2 paper uses).

use burn::tensor::Tensor;

/// `[batch, channels, d, h, w]` -> `[batch, cells, channels * pd * ph * pw]`, cells in
/// `(gd, gh, gw)` row-major order and each cell's values in `(channel, pd, ph, pw)` order.
///
/// # Panics
///
/// Panics if a side is not a multiple of its patch side.
pub fn patchify(images: Tensor<5>, patch: [usize; 3]) -> Tensor<3> {
    let [batch, channels, d, h, w] = images.dims();
    let [pd, ph, pw] = patch;
    assert!(d % pd == 0 && h % ph == 0 && w % pw == 0, "image {:?} is not a whole number of {patch:?} patches", [d, h, w]);
    let (gd, gh, gw) = (d / pd, h / ph, w / pw);
    images
        .reshape([batch, channels, gd, pd, gh, ph, gw, pw])
        .permute([0, 2, 4, 6, 1, 3, 5, 7])
        .reshape([batch, gd * gh * gw, channels * pd * ph * pw])
}

/// Inverse of [`patchify`]: `[batch, cells, channels * pd * ph * pw]` -> `[batch, channels, d,
/// h, w]` for a grid `grid` of cells.
pub fn unpatchify(patches: Tensor<3>, channels: usize, grid: [usize; 3], patch: [usize; 3]) -> Tensor<5> {
    let batch = patches.dims()[0];
    let [gd, gh, gw] = grid;
    let [pd, ph, pw] = patch;
    patches
        .reshape([batch, gd, gh, gw, channels, pd, ph, pw])
        .permute([0, 4, 1, 5, 2, 6, 3, 7])
        .reshape([batch, channels, gd * pd, gh * ph, gw * pw])
}

/// The decoder's output `[batch, values, gd, gh, gw]` as `[batch, cells, values]`.
pub fn predictions_per_cell(predictions: Tensor<5>) -> Tensor<3> {
    let [batch, values, gd, gh, gw] = predictions.dims();
    predictions.reshape([batch, values, gd * gh * gw]).swap_dims(1, 2)
}

/// Each patch normalised to mean 0 and variance 1 over its values (unbiased variance, as MAE).
pub fn normalise_patches(patches: Tensor<3>) -> Tensor<3> {
    let values = patches.dims()[2];
    let mean = patches.clone().mean_dim(2);
    let centred = patches - mean;
    let variance = centred.clone().square().sum_dim(2) / (values.max(2) - 1) as f64;
    centred / (variance + 1e-6).sqrt()
}

/// The reconstruction loss.
///
/// # Shapes
///
/// - `predictions`: `[batch, cells, values]` ([`predictions_per_cell`])
/// - `targets`: `[batch, cells, values]` ([`patchify`], normalised or not)
/// - `masked`: `[batch, cells]`, 1 for a masked cell and 0 for a visible one
/// - output: `[1]`, the mean over masked cells of the mean squared error over their values
pub fn masked_reconstruction_loss(predictions: Tensor<3>, targets: Tensor<3>, masked: Tensor<2>) -> Tensor<1> {
    let [batch, cells, _] = predictions.dims();
    let per_cell = (predictions - targets).square().mean_dim(2).reshape([batch, cells]);
    let count = masked.clone().sum().clamp_min(1.0);
    (per_cell * masked).sum() / count
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, TensorData};

    fn values<const D: usize>(x: Tensor<D>) -> Vec<f32> {
        x.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn patchify_groups_each_cell_and_unpatchify_inverts_it() {
        let device = Device::flex();
        // One channel, 1 x 4 x 4 image, 2 x 2 patches: cell 0 is the top-left quarter.
        let image = Tensor::<5>::from_data(TensorData::new((0..16).map(|v| v as f32).collect(), [1, 1, 1, 4, 4]), &device);
        let patches = patchify(image.clone(), [1, 2, 2]);
        assert_eq!(patches.dims(), [1, 4, 4]);
        assert_eq!(values(patches.clone().slice([0..1, 0..1, 0..4])), [0.0, 1.0, 4.0, 5.0]);
        assert_eq!(values(patches.clone().slice([0..1, 3..4, 0..4])), [10.0, 11.0, 14.0, 15.0]);
        let back = unpatchify(patches, 1, [1, 2, 2], [1, 2, 2]);
        assert_eq!(values(back), values(image));
    }

    #[test]
    fn visible_patches_give_no_loss_and_no_gradient() {
        let device = Device::flex().autodiff();
        let targets = Tensor::<3>::random([2, 4, 6], Distribution::Normal(0.0, 1.0), &device);
        let predictions = Tensor::<3>::random([2, 4, 6], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let masked = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0], [2, 4]), &device);
        let loss = masked_reconstruction_loss(predictions.clone(), targets.clone(), masked.clone());
        // Predictions equal to the targets on the masked cells: zero loss, whatever the rest.
        let keep = masked.clone().reshape([2, 4, 1]);
        let perfect = targets.clone() * keep.clone() + predictions.clone().detach() * (keep.neg() + 1.0);
        let zero = masked_reconstruction_loss(perfect, targets, masked.clone()).into_scalar::<f32>();
        assert!(zero.abs() < 1e-7, "{zero}");
        let grads = loss.backward();
        let gradient = predictions.grad(&grads).unwrap();
        let per_cell = values(gradient.abs().sum_dim(2).reshape([8]));
        let flags = values(masked.reshape([8]));
        for (g, m) in per_cell.iter().zip(flags) {
            assert_eq!(*g > 0.0, m == 1.0, "gradient {g} on a cell with mask {m}");
        }
    }

    #[test]
    fn normalised_patches_have_zero_mean_and_unit_variance() {
        let device = Device::flex();
        let patches = Tensor::<3>::random([2, 3, 16], Distribution::Normal(5.0, 3.0), &device);
        let normalised = normalise_patches(patches);
        let means = values(normalised.clone().mean_dim(2));
        assert!(means.iter().all(|m| m.abs() < 1e-4), "{means:?}");
        let variances = values(normalised.square().sum_dim(2) / 15.0);
        assert!(variances.iter().all(|v| (v - 1.0).abs() < 1e-3), "{variances:?}");
    }
}
