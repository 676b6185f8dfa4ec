//! Channel-wise Contrastive Anatomy-aware Enhancement (ATM-Net's CCAE), the loss part: a
//! class-wise, channel-level InfoNCE between pooled image features and class-prompt embeddings.
//!
//! For every class `k` present in the batch, the feature channels are average-pooled over the
//! voxels the ground truth gives to `k` (over the whole batch), giving one channel vector per
//! class. After a projection to the text dimension (the caller's learnable layer) and L2
//! normalisation, each class vector is scored against every class's text embedding by cosine
//! similarity divided by a temperature; the loss is the cross-entropy of picking its own class's
//! text. It pulls a structure's features towards its prompt and away from its neighbours'
//! (L4 from L5): exactly the confusion text guidance is meant to resolve.
//!
//! [`ccae_loss`] applies it to a text-guided U-Net: the full-resolution decoder features (pixel
//! embeddings), pooled per class over the ground truth, projected by the network's
//! `contrastive_projection`, against the network's class text tokens. Background is never an
//! anchor (its prompt says only "not a spine structure") but stays a negative; with partial
//! labels a class a sample does not annotate contributes none of its voxels.

use crate::losses::dice_ce::one_hot;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use spineseg_model::TextFusion;

/// Guards divisions by a class's voxel count and by a vector's norm.
const EPSILON: f64 = 1e-6;

/// Class-wise average of feature channels over each class's ground-truth voxels, pooled over
/// the batch, and which classes occur at all.
///
/// # Shapes
///
/// - features: `[batch, channels, voxels]`
/// - masks: `[batch, classes, voxels]`, one-hot ground truth (0/1); classes a sample does not
///   annotate (partial labels) should be all zero there
/// - output: (`[classes, channels]` pooled features, `[classes]` 1 where the class has voxels)
pub fn masked_class_pooling(features: Tensor<3>, masks: Tensor<3>) -> (Tensor<2>, Tensor<1>) {
    let [batch, channels, voxels] = features.dims();
    let [mask_batch, classes, mask_voxels] = masks.dims();
    assert!(batch == mask_batch && voxels == mask_voxels, "features and masks should cover the same voxels");
    // [classes, batch * voxels] x [batch * voxels, channels]
    let masks_flat = masks.swap_dims(0, 1).reshape([classes, batch * voxels]);
    let features_flat = features.swap_dims(1, 2).reshape([batch * voxels, channels]);
    let sums = masks_flat.clone().matmul(features_flat);
    let counts = masks_flat.sum_dim(1); // [classes, 1]
    let pooled = sums / counts.clone().add_scalar(EPSILON);
    let present = counts.reshape([classes]).greater_elem(0.5).float();
    (pooled, present)
}

/// InfoNCE between class feature vectors and class text embeddings (row `k` of both is class
/// `k`), averaged over the present classes; 0 when none is present.
///
/// # Shapes
///
/// - image: `[classes, dim]` (pooled and projected image features)
/// - text: `[classes, dim]` (class-prompt embeddings)
/// - present: `[classes]`, 1 for classes that take part as anchors
/// - output: `[1]`
pub fn class_text_info_nce(image: Tensor<2>, text: Tensor<2>, present: Tensor<1>, temperature: f64) -> Tensor<1> {
    let [classes, dim] = image.dims();
    assert_eq!(text.dims(), [classes, dim], "one text embedding per class, of the image vectors' size");
    assert!(temperature > 0.0, "the temperature should be positive");
    let device = image.device();
    // sqrt(|x|^2 + eps) rather than |x| + eps: an absent class's pooled vector is 0, where the
    // derivative of |x| is infinite and would poison every gradient with NaN (0 * inf).
    let normalise = |x: Tensor<2>| {
        let norm = x.clone().powf_scalar(2.0).sum_dim(1).add_scalar(EPSILON).sqrt();
        x / norm
    };
    let logits = normalise(image).matmul(normalise(text).transpose()).div_scalar(temperature);
    let targets = Tensor::<1, Int>::arange(0..classes as i64, &device).reshape([classes, 1]);
    let per_class = log_softmax(logits, 1).gather(1, targets).reshape([classes]).neg();
    let count = present.clone().sum().add_scalar(EPSILON);
    (per_class * present).sum() / count
}

/// ATM-Net's CCAE term for one batch of a text-guided U-Net (see the module documentation).
///
/// # Shapes
///
/// - features: `[batch, channels, d, h, w]` (`UNetOutput::features`)
/// - target: `[batch, 1, d, h, w]` class indices
/// - label_mask: `[batch, classes]`, true where the sample annotates the class (partial labels)
/// - output: `[1]`
pub fn ccae_loss(
    fusion: &TextFusion,
    features: Tensor<5>,
    target: Tensor<5, Int>,
    label_mask: Option<Tensor<2, Bool>>,
    temperature: f64,
) -> Tensor<1> {
    let [batch, channels, d, h, w] = features.dims();
    let voxels = d * h * w;
    let text = fusion.class_tokens();
    let classes = text.dims()[0];
    let mut masks = one_hot(target.reshape([batch, 1, voxels]), classes);
    if let Some(annotated) = label_mask {
        masks = masks * annotated.float().reshape([batch, classes, 1]);
    }
    let (pooled, present) = masked_class_pooling(features.reshape([batch, channels, voxels]), masks.detach());
    let device = present.device();
    let anchors: Vec<f32> = (0..classes).map(|k| if k == 0 { 0.0 } else { 1.0 }).collect();
    let not_background = Tensor::<1>::from_data(TensorData::new(anchors, [classes]), &device);
    let image = fusion.contrastive_projection.forward(pooled);
    class_text_info_nce(image, text, present * not_background, temperature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};
    use burn::tensor::{Bool, Int, TensorData};

    fn device() -> Device {
        Device::flex()
    }

    #[test]
    fn pooling_averages_each_classes_voxels() {
        // One sample, 2 channels, 4 voxels; class 0 on voxels 0-1, class 1 on voxel 3, class 2
        // nowhere.
        let features =
            Tensor::<3>::from_data(TensorData::new(vec![1.0f32, 3.0, 5.0, 7.0, 10.0, 20.0, 30.0, 40.0], [1, 2, 4]), &device());
        let masks = Tensor::<3>::from_data(
            TensorData::new(vec![1.0f32, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0], [1, 3, 4]),
            &device(),
        );
        let (pooled, present) = masked_class_pooling(features, masks);
        let pooled = pooled.into_data().try_to_vec::<f32>().unwrap();
        let expected = [2.0, 15.0, 7.0, 40.0, 0.0, 0.0];
        for (p, e) in pooled.iter().zip(expected) {
            assert!((p - e).abs() < 1e-4, "{pooled:?}");
        }
        assert_eq!(present.into_data().try_to_vec::<f32>().unwrap(), [1.0, 1.0, 0.0]);
    }

    #[test]
    fn matched_text_scores_lower_than_shuffled_text() {
        let classes = 5;
        let text = Tensor::<2>::random([classes, 8], Distribution::Normal(0.0, 1.0), &device());
        let noise = Tensor::<2>::random([classes, 8], Distribution::Normal(0.0, 0.1), &device());
        let image = text.clone() + noise;
        let present = Tensor::<1>::ones([classes], &device());
        let matched = class_text_info_nce(image.clone(), text.clone(), present.clone(), 0.1).into_scalar::<f32>();
        // Rotate the rows: every class now faces another class's prompt.
        let shuffled = Tensor::cat(vec![text.clone().narrow(0, 1, classes - 1), text.narrow(0, 0, 1)], 0);
        let mismatched = class_text_info_nce(image, shuffled, present, 0.1).into_scalar::<f32>();
        assert!(matched < 0.5 && mismatched > 2.0 * matched + 1.0, "matched {matched}, shuffled {mismatched}");
    }

    #[test]
    fn ccae_on_a_text_guided_unet_trains_projection_and_decoder() {
        use spineseg_model::{PlainConvUNetConfig, SpatialDims, TextGuidanceConfig};
        let device = device().autodiff();
        device.seed(1);
        let config = PlainConvUNetConfig::new(SpatialDims::D2, 1, 3, vec![4, 8], vec![vec![1, 1], vec![2, 2]])
            .with_text_guidance(Some(TextGuidanceConfig::new(6).with_embed_dim(4).with_heads(2).with_fused_stages(1)));
        let model = config.init(&device);
        let fusion = model.text_fusion.clone().unwrap().with_class_embeddings(Tensor::random(
            [3, 6],
            Distribution::Normal(0.0, 1.0),
            &device,
        ));
        let model = spineseg_model::PlainConvUNet { text_fusion: Some(fusion), ..model };
        let x = Tensor::<5>::random([2, 1, 1, 4, 4], Distribution::Normal(0.0, 1.0), &device);
        // Sample 0: classes 0 and 1; sample 1: classes 0 and 2; sample 1 does not annotate class 1.
        let labels: Vec<i64> = (0..32).map(|v| if v < 16 { (v % 2) as i64 } else { 2 * (v % 2) as i64 }).collect();
        let target = Tensor::<5, Int>::from_data(TensorData::new(labels, [2, 1, 1, 4, 4]), &device);
        let annotated = Tensor::<2, Bool>::from_data(TensorData::new(vec![true, true, true, true, false, true], [2, 3]), &device);
        let out = model.forward_detailed(x);
        let fusion = model.text_fusion.as_ref().unwrap();
        let loss = ccae_loss(fusion, out.features, target, Some(annotated), 0.07);
        let value = loss.clone().into_scalar::<f32>();
        assert!(value.is_finite() && value > 0.0, "{value}");
        let grads = loss.backward();
        let projection = fusion.contrastive_projection.weight.val().grad(&grads).expect("projection is trained");
        assert!(projection.abs().sum().into_scalar::<f32>() > 0.0);
        let spineseg_model::ConvNd::D2(first_conv) = &model.encoder.stages[0].convs[0].conv else {
            panic!("a 2D network has 2D convs")
        };
        let encoder_grad = first_conv.weight.val().grad(&grads).expect("the encoder is trained");
        assert!(encoder_grad.abs().sum().into_scalar::<f32>() > 0.0);
        assert!(fusion.class_embeddings.val().grad(&grads).is_none());
    }

    #[test]
    fn absent_classes_do_not_count_and_gradients_are_finite() {
        let device = device().autodiff();
        let features = Tensor::<3>::random([2, 4, 6], Distribution::Normal(0.0, 1.0), &device).require_grad();
        // Class 0 everywhere in sample 0, class 1 everywhere in sample 1, class 2 absent.
        let mut mask = vec![0.0f32; 2 * 3 * 6];
        for v in 0..6 {
            mask[v] = 1.0; // sample 0, class 0
            mask[18 + 6 + v] = 1.0; // sample 1, class 1
        }
        let masks = Tensor::<3>::from_data(TensorData::new(mask, [2, 3, 6]), &device);
        let (pooled, present) = masked_class_pooling(features.clone(), masks);
        assert_eq!(present.clone().into_data().try_to_vec::<f32>().unwrap(), [1.0, 1.0, 0.0]);
        let text = Tensor::<2>::random([3, 4], Distribution::Normal(0.0, 1.0), &device);
        let loss = class_text_info_nce(pooled, text, present, 0.07);
        let value = loss.clone().into_scalar::<f32>();
        assert!(value.is_finite() && value > 0.0);
        let grads = loss.backward();
        let grad = features.grad(&grads).expect("features should get a gradient").into_data().try_to_vec::<f32>().unwrap();
        assert!(grad.iter().all(|g| g.is_finite()) && grad.iter().any(|g| *g != 0.0));
    }
}
