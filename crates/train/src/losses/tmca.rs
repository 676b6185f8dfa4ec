//! TMCA's target-informed multi-level contrastive alignment, the loss part (the network part is
//! `spineseg_model::fusion::tmca`).
//!
//! At every aligned decoder level, each class's *region* feature in each sample (the level's
//! unit pixel embeddings averaged over the class's ground-truth region at that scale, the region
//! being the full-resolution one-hot mask average-pooled to the level's grid) is scored against
//! every class's text by cosine similarity over a temperature; the loss is the cross-entropy of
//! picking its own class's text (InfoNCE with the other classes as negatives). Neighbouring
//! levels are **hard negatives**: their terms in the softmax's denominator are multiplied by
//! `hard_negative_weight` (a log-weight added to their logits), because the confusion that matters
//! is L4 vs L5, not L4 vs the spinal canal. The levels' losses are averaged.
//!
//! Anchors: every non-background class with at least half a pixel of region at that level in
//! that sample; with partial labels only the classes the sample annotates. Background is never an
//! anchor (its prompt says only what it is not) but stays a negative.

use crate::losses::dice_ce::one_hot;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use spineseg_anatomy::ontology::{Ontology, StructureId};
use spineseg_model::{region_features, TargetAlignment};

/// Guards the division by the anchor count.
const EPSILON: f64 = 1e-6;

/// The log-weights of the negatives, `[classes, classes]`: `ln(hard_negative_weight)` where
/// class `j` is a neighbour of class `i` along the spine (the same kind one level up or down, or
/// the structure directly above or below: the L4/L5 disc for L4), 0 elsewhere and on the
/// diagonal. `class_ids` are the classes' ontology ids (background 0).
pub fn hard_negative_log_weights(class_ids: &[u16], hard_negative_weight: f64) -> Vec<f32> {
    let ontology = Ontology::standard();
    let n = class_ids.len();
    let log_weight = hard_negative_weight.ln() as f32;
    let mut weights = vec![0.0f32; n * n];
    for (i, &a) in class_ids.iter().enumerate() {
        let a = StructureId(a);
        let Some(structure) = ontology.get(a) else { continue };
        let neighbours = [ontology.same_kind_above(a), ontology.same_kind_below(a), structure.above, structure.below];
        for (j, &b) in class_ids.iter().enumerate() {
            if i != j && neighbours.contains(&Some(StructureId(b))) {
                weights[i * n + j] = log_weight;
            }
        }
    }
    weights
}

/// Averages a one-hot mask `[batch, classes, D, H, W]` (full resolution) over blocks of
/// `factors` voxels: each class's area fraction per cell of a coarser grid.
fn area_pool(masks: Tensor<5>, factors: [usize; 3]) -> Tensor<5> {
    let [batch, classes, depth, height, width] = masks.dims();
    let [fd, fh, fw] = factors;
    let (d, h, w) = (depth / fd, height / fh, width / fw);
    let x = masks.reshape([batch, classes * depth * height, w, fw]).mean_dim(3);
    let x = x.reshape([batch, classes * depth, h, fh, w]).mean_dim(3);
    let x = x.reshape([batch, classes, d, fd, h * w]).mean_dim(3);
    x.reshape([batch, classes, d, h, w])
}

/// InfoNCE of region features against the class texts with hard-negative log-weights.
///
/// # Shapes
/// - regions: `[batch, classes, embed]` (unit length), texts: `[classes, embed]` (unit length),
///   anchors: `[batch, classes]` (1 = takes part), log_weights: `[classes, classes]`;
///   output `[1]`
pub fn region_text_info_nce(
    regions: Tensor<3>,
    texts: Tensor<2>,
    anchors: Tensor<2>,
    log_weights: Tensor<2>,
    temperature: f64,
) -> Tensor<1> {
    let [batch, classes, embed] = regions.dims();
    let device = regions.device();
    let texts = texts.unsqueeze::<3>().expand([batch, classes, embed]);
    let logits = regions.matmul(texts.swap_dims(1, 2)).div_scalar(temperature) + log_weights.unsqueeze::<3>();
    let diagonal = Tensor::<2>::from_data(
        TensorData::new(
            (0..classes * classes).map(|k| if k / classes == k % classes { 1.0f32 } else { 0.0 }).collect(),
            [classes, classes],
        ),
        &device,
    );
    let own = (log_softmax(logits, 2) * diagonal.unsqueeze::<3>()).sum_dim(2).reshape([batch, classes]);
    let count = anchors.clone().sum().add_scalar(EPSILON);
    (own.neg() * anchors).sum() / count
}

/// The TMCA term of one batch (see the module documentation).
///
/// # Shapes
/// - level_features: every decoder level's features, full resolution first (`UNetOutput`)
/// - target: `[batch, 1, D, H, W]` class indices at full resolution
/// - label_mask: `[batch, classes]`, true where the sample annotates the class (partial labels)
/// - log_weights: `[classes, classes]` ([`hard_negative_log_weights`])
/// - output: `[1]`
pub fn tmca_loss(
    alignment: &TargetAlignment,
    level_features: &[Tensor<5>],
    target: Tensor<5, Int>,
    label_mask: Option<Tensor<2, Bool>>,
    log_weights: Tensor<2>,
    temperature: f64,
) -> Tensor<1> {
    let [batch, _, depth, height, width] = target.dims();
    let texts = alignment.class_texts();
    let classes = texts.dims()[0];
    let device = texts.device();
    let mut masks = one_hot(target.reshape([batch, 1, depth * height * width]), classes);
    if let Some(annotated) = label_mask {
        masks = masks * annotated.float().reshape([batch, classes, 1]);
    }
    let masks = masks.reshape([batch, classes, depth, height, width]).detach();
    let not_background = Tensor::<2>::from_data(
        TensorData::new((0..classes).map(|k| if k == 0 { 0.0f32 } else { 1.0 }).collect(), [1, classes]),
        &device,
    );
    let mut total = Tensor::<1>::zeros([1], &device);
    for level in &alignment.levels {
        let features = level_features[level.level].clone();
        let [_, _, d, h, w] = features.dims();
        let pooled = area_pool(masks.clone(), [depth / d, height / h, width / w]);
        let pixels = alignment.pixel_embeddings(level.level, features);
        let (regions, mass) = region_features(pixels, pooled.reshape([batch, classes, d * h * w]));
        let anchors = mass.greater_equal_elem(0.5).float() * not_background.clone();
        total = total + region_text_info_nce(regions, texts.clone(), anchors, log_weights.clone(), temperature);
    }
    total / alignment.levels.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    fn device() -> Device {
        Device::flex()
    }

    fn tensor2(values: Vec<f32>, shape: [usize; 2]) -> Tensor<2> {
        Tensor::from_data(TensorData::new(values, shape), &device())
    }

    #[test]
    fn hard_negatives_are_the_neighbours_along_the_spine() {
        // background, L3 (22), L4 (23), L5 (24), L4/L5 disc (123), spinal canal (61).
        let ids = [0u16, 22, 23, 24, 123, 61];
        let w = hard_negative_log_weights(&ids, 2.0);
        let n = ids.len();
        let ln2 = 2f32.ln();
        let row = |i: usize| &w[i * n..(i + 1) * n];
        // L4: L3 and L5 (same kind), the L4/L5 disc below it; not the canal, not itself.
        assert_eq!(row(2), [0.0, ln2, 0.0, ln2, ln2, 0.0]);
        // The L4/L5 disc: L4 above, L5 below.
        assert_eq!(row(4), [0.0, 0.0, ln2, ln2, 0.0, 0.0]);
        assert!(row(0).iter().chain(row(5)).all(|&v| v == 0.0));
        // Weight 1: no hard negatives.
        assert!(hard_negative_log_weights(&ids, 1.0).iter().all(|&v| v == 0.0));
    }

    #[test]
    fn the_matching_text_ranks_first_on_separable_features() {
        // Three classes whose region features sit near their own texts: the loss is small and
        // smaller than with the texts shuffled.
        let texts = tensor2(vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0], [3, 3]);
        let regions = Tensor::<3>::from_data(
            TensorData::new(vec![0.9f32, 0.1, 0.0, 0.1, 0.9, 0.1, 0.0, 0.1, 0.9], [1, 3, 3]),
            &device(),
        );
        let anchors = tensor2(vec![0.0, 1.0, 1.0], [1, 3]);
        let zeros = tensor2(vec![0.0; 9], [3, 3]);
        let matched: f32 =
            region_text_info_nce(regions.clone(), texts.clone(), anchors.clone(), zeros.clone(), 0.1).into_scalar();
        let shuffled_texts = tensor2(vec![0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0], [3, 3]);
        let shuffled: f32 =
            region_text_info_nce(regions.clone(), shuffled_texts, anchors.clone(), zeros.clone(), 0.1).into_scalar();
        assert!(matched < 0.01 && shuffled > 5.0, "{matched} vs {shuffled}");
        // Hand check of one anchor: class 1's logits (0.1, 0.9, 0.1) / 0.1 -> -log softmax at 1.
        let expected = -((9.0f64).exp() / (1.0f64.exp() + 9.0f64.exp() + 1.0f64.exp())).ln();
        let one = tensor2(vec![0.0, 1.0, 0.0], [1, 3]);
        let value: f32 = region_text_info_nce(regions.clone(), texts.clone(), one.clone(), zeros, 0.1).into_scalar();
        assert!((value as f64 - expected).abs() < 1e-4, "{value} vs {expected}");
        // A hard negative (class 2 for class 1, weight e) adds its term once more to the
        // denominator: -log(e^9 / (e^1 + e^9 + e * e^1)).
        let mut weights = vec![0.0f32; 9];
        weights[3 + 2] = 1.0;
        let hard: f32 = region_text_info_nce(regions, texts, one, tensor2(weights, [3, 3]), 0.1).into_scalar();
        let expected_hard = -((9.0f64).exp() / (1.0f64.exp() + 9.0f64.exp() + 1.0f64.exp() * 1f64.exp())).ln();
        assert!((hard as f64 - expected_hard).abs() < 1e-4 && hard > value, "{hard} vs {expected_hard}");
    }

    #[test]
    fn area_pooling_gives_each_cells_class_fractions() {
        // One sample, 2 classes, 1 x 2 x 4 voxels pooled by 1 x 2 x 2: class 1 covers 3 of the 4
        // voxels of the right cell.
        let mask = Tensor::<5>::from_data(
            TensorData::new(
                vec![1.0f32, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0],
                [1, 2, 1, 2, 4],
            ),
            &device(),
        );
        let pooled: Vec<f32> = area_pool(mask, [1, 2, 2]).into_data().try_to_vec().unwrap();
        assert_eq!(pooled, vec![1.0, 0.25, 0.0, 0.75]);
    }

    #[test]
    fn the_loss_is_finite_with_absent_and_unannotated_classes_and_trains_the_alignment() {
        let device = device().autodiff();
        let config = spineseg_model::TargetAlignmentConfig::new(6).with_embed_dim(4).with_levels(vec![0, 1]);
        let alignment = config.init(&[3, 5, 7], 4, &device).with_class_embeddings(Tensor::random(
            [4, 6],
            Distribution::Normal(0.0, 1.0),
            &device,
        ));
        let features = vec![
            Tensor::<5>::random([2, 3, 1, 4, 4], Distribution::Normal(0.0, 1.0), &device),
            Tensor::<5>::random([2, 5, 1, 2, 2], Distribution::Normal(0.0, 1.0), &device),
        ];
        // Class 3 appears nowhere; sample 1 does not annotate class 2.
        let target: Vec<i64> = (0..32)
            .map(|i| {
                if i % 4 < 2 {
                    1
                } else if i < 16 {
                    2
                } else {
                    0
                }
            })
            .collect();
        let target = Tensor::<5, Int>::from_data(TensorData::new(target, [2, 1, 1, 4, 4]), &device);
        let mask = Tensor::<2, Bool>::from_data(
            TensorData::new(vec![true, true, true, true, true, true, false, true], [2, 4]),
            &device,
        );
        let log_weights = Tensor::<2>::zeros([4, 4], &device);
        let loss = tmca_loss(&alignment, &features, target, Some(mask), log_weights, 0.07);
        let value: f32 = loss.clone().into_scalar();
        assert!(value.is_finite() && value > 0.0, "{value}");
        let grads = loss.backward();
        let g = alignment.levels[0].pixel_projection.weight.val().grad(&grads).expect("the projection learns");
        let sum: f32 = g.abs().sum().into_scalar();
        assert!(sum.is_finite() && sum > 0.0, "{sum}");
        assert!(alignment.class_embeddings.val().grad(&grads).is_none());
    }
}
