//! nnU-Net v2's `ExperimentPlanner`: derives the plan ([`spineseg_preprocessing::plan::Plan`],
//! `plans.json`) from a dataset [`Fingerprint`] ([`plan_from_fingerprint`]).
//!
//! # Rules (nnU-Net v2, with the deviations marked)
//! - **Target spacing** ([`fullres_target_spacing`]): the per-axis median of the case spacings.
//!   If the coarsest median axis is more than 3x coarser than both others *and* has fewer than a
//!   third of the voxels of the smaller other axis (median shapes after cropping), its spacing
//!   becomes the 10th percentile of that axis' spacings instead, but never finer than the other
//!   axes' (then `max(others) + 1e-5`). As nnU-Net's `determine_fullres_target_spacing`.
//! - **Patch size and topology** ([`plan_configuration`]): start from a patch with the aspect
//!   ratio `1 / spacing` and the volume of 256^3 (3D) or 2048^2 (2D), clipped to the median shape
//!   at target spacing; pool an axis while its feature map stays >= 4 voxels after pooling
//!   (`>= 2 * 4` before) and its spacing is < 2x the smallest poolable spacing; conv kernels are 1
//!   along an axis while its spacing is >= 2x the smallest, then 3 (nnU-Net's
//!   `get_pool_and_conv_props`); pad the patch up to a multiple of `2^pools`. While the estimated
//!   feature-map size ([`estimate_feature_map_size`], nnU-Net's `compute_conv_feature_map_size`
//!   of `PlainConvUNet` with deep supervision) times the minimum batch size exceeds the budget,
//!   shrink the axis that is largest relative to the median shape by one divisibility step.
//! - **Batch size**: `round(budget / estimate)`, capped so one batch covers at most 5% of the
//!   dataset's voxels, at least [`PlanOptions::min_batch_size`]. nnU-Net states its budget as a
//!   reference value per batch of 2 (3D) or 12 (2D) for 8 GB of GPU memory; that is
//!   `budget = reference * reference_batch`, so the rules coincide. **Deviation**: the default
//!   budget ([`PlanOptions::default`]) is for training on a CPU with ~24 GiB of RAM and few cores
//!   (see there); [`PlanOptions::nnunet`] gives nnU-Net's own numbers.
//! - **Features**: `base * 2^stage`, capped at 320 (3D) / 512 (2D). **Deviation**: base 16 by
//!   default (nnU-Net: 32), for CPU speed; the estimate uses the plan's own widths.
//! - **Normalisation**: z-score per case and channel (`CT` channels: nnU-Net's CT scheme with the
//!   dataset's foreground percentiles; `noNorm` channels: none), with `use_mask_for_norm` when
//!   the median relative size after cropping is below 3/4.
//! - **Labels**: class index `c` is the `c`-th entry of [`Plan::labels`] (value 0, background,
//!   first; then the dataset's declared and present values in increasing order).
//! - **Resampling**: images cubic (order 3), labels one-hot linear (order 1), nearest along a
//!   separate coarse axis (see [`spineseg_preprocessing::resample`]).
//! - Not planned: nnU-Net's `3d_lowres` and cascade (lumbar MRI fits full resolution).


use crate::error::{PlanningError, Result};
use crate::fingerprint::{median_sorted, percentile_sorted_f64, CaseFingerprint, Fingerprint, IntensityStats};
use spineseg_anatomy::ontology::{Ontology, StructureId};
use spineseg_io::Label;
use spineseg_preprocessing::plan::{
    Configuration, ConfigurationName, LabelClass, Normalization, Plan, PlanOptions, UNetTopology,
    PLAN_FORMAT_VERSION,
};
use spineseg_preprocessing::resample::{compute_new_shape, ResampleSettings};
use std::collections::BTreeMap;

/// nnU-Net's `determine_fullres_target_spacing` over the fingerprint's canonical spacings.
pub fn fullres_target_spacing(fingerprint: &Fingerprint, anisotropy_threshold: f64) -> [f64; 3] {
    let axis_values = |f: &dyn Fn(&CaseFingerprint) -> f64| {
        let mut v: Vec<f64> = fingerprint.cases.iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v
    };
    let spacings: [Vec<f64>; 3] = [0, 1, 2].map(|a| axis_values(&|c| c.spacing_mm[a]));
    let sizes: [Vec<f64>; 3] = [0, 1, 2].map(|a| axis_values(&|c| c.shape_after_crop[a] as f64));
    let mut target = [0, 1, 2].map(|a| median_sorted(&spacings[a]));
    let target_size = [0, 1, 2].map(|a| median_sorted(&sizes[a]));
    // np.argmax: the first axis with the largest spacing.
    let worst = (0..3).fold(0, |best, a| if target[a] > target[best] { a } else { best });
    let others: Vec<usize> = (0..3).filter(|&a| a != worst).collect();
    let max_other_spacing = others.iter().map(|&a| target[a]).fold(f64::MIN, f64::max);
    let min_other_size = others.iter().map(|&a| target_size[a]).fold(f64::MAX, f64::min);
    let aniso_spacing = target[worst] > anisotropy_threshold * max_other_spacing;
    let aniso_voxels = target_size[worst] * anisotropy_threshold < min_other_size;
    if aniso_spacing && aniso_voxels {
        let mut t = percentile_sorted_f64(&spacings[worst], 10.0);
        if t < max_other_spacing {
            t = max_other_spacing.max(t) + 1e-5;
        }
        target[worst] = t;
    }
    target
}

/// `(pools per axis, strides per stage, kernels per stage, padded patch, divisibility per axis)`.
pub type PoolConvProps = (Vec<usize>, Vec<Vec<usize>>, Vec<Vec<usize>>, Vec<usize>, Vec<usize>);

/// Pooling and conv topology for a patch (nnU-Net's `get_pool_and_conv_props`): per-axis pool
/// counts, strides and kernels per stage, the patch padded up to a multiple of `2^pools`, and
/// that multiple.
pub fn pool_and_conv_props(spacing: &[f64], patch: &[f64], min_edge: usize) -> PoolConvProps {
    let dim = spacing.len();
    let mut current_spacing = spacing.to_vec();
    let mut current_size = patch.to_vec();
    let mut strides = vec![vec![1; dim]];
    let mut kernels = Vec::new();
    let mut num_pool = vec![0usize; dim];
    let mut kernel = vec![1usize; dim];
    let min_edge = min_edge as f64;
    loop {
        let valid: Vec<usize> = (0..dim).filter(|&a| current_size[a] >= 2.0 * min_edge).collect();
        if valid.is_empty() {
            break;
        }
        let min_valid_spacing = valid.iter().map(|&a| current_spacing[a]).fold(f64::MAX, f64::min);
        let valid: Vec<usize> = valid.into_iter().filter(|&a| current_spacing[a] / min_valid_spacing < 2.0).collect();
        if valid.len() == 1 && current_size[valid[0]] < 3.0 * min_edge {
            break;
        }
        if valid.is_empty() {
            break;
        }
        let min_spacing = current_spacing.iter().cloned().fold(f64::MAX, f64::min);
        for a in 0..dim {
            if kernel[a] != 3 && current_spacing[a] / min_spacing < 2.0 {
                kernel[a] = 3;
            }
        }
        let mut stride = vec![1usize; dim];
        for &a in &valid {
            stride[a] = 2;
            num_pool[a] += 1;
            current_spacing[a] *= 2.0;
            current_size[a] = (current_size[a] / 2.0).ceil();
        }
        strides.push(stride);
        kernels.push(kernel.clone());
    }
    let divisible: Vec<usize> = num_pool.iter().map(|&n| 1usize << n).collect();
    // nnU-Net's pad_shape: up to the next multiple (unchanged when already one).
    let padded: Vec<usize> = (0..dim).map(|a| ((patch[a] / divisible[a] as f64).ceil() as usize).max(1) * divisible[a]).collect();
    kernels.push(vec![3; dim]);
    (num_pool, strides, kernels, padded, divisible)
}

/// nnU-Net's `PlainConvUNet.compute_conv_feature_map_size` (deep supervision on): the number of
/// elements of all conv, transposed-conv and segmentation outputs for one sample of `patch`.
pub fn estimate_feature_map_size(patch: &[usize], network: &UNetTopology, num_classes: usize) -> f64 {
    let n = network.n_stages;
    let mut size: Vec<usize> = patch.to_vec();
    let mut stage_sizes = Vec::with_capacity(n);
    let mut total = 0f64;
    for s in 0..n {
        size = size.iter().zip(&network.strides[s]).map(|(x, st)| x / st).collect();
        let voxels = size.iter().product::<usize>() as f64;
        total += network.n_conv_per_stage_encoder[s] as f64 * network.features_per_stage[s] as f64 * voxels;
        stage_sizes.push(voxels);
    }
    for s in 0..n.saturating_sub(1) {
        let skip = n - 2 - s;
        let voxels = stage_sizes[skip];
        let features = network.features_per_stage[skip] as f64;
        total += network.n_conv_per_stage_decoder[s] as f64 * features * voxels;
        total += features * voxels;
        total += num_classes as f64 * voxels;
    }
    total
}

/// Everything [`plan_configuration`] needs besides spacing and shape.
struct ConfigurationContext<'a> {
    options: &'a PlanOptions,
    num_classes: usize,
    approximate_dataset_voxels: f64,
}

fn topology(options: &PlanOptions, dims: usize, strides: Vec<Vec<usize>>, kernels: Vec<Vec<usize>>) -> UNetTopology {
    let n = strides.len();
    let max = if dims == 2 { options.max_features_2d } else { options.max_features_3d };
    UNetTopology {
        n_stages: n,
        features_per_stage: (0..n).map(|s| (options.base_features << s.min(30)).min(max)).collect(),
        kernel_sizes: kernels,
        strides,
        n_conv_per_stage_encoder: vec![options.n_conv_per_stage_encoder; n],
        n_conv_per_stage_decoder: vec![options.n_conv_per_stage_decoder; n.saturating_sub(1)],
    }
}

/// nnU-Net's `get_plans_for_configuration` for `spacing` and `median_shape` (2 or 3 axes).
fn plan_configuration(name: ConfigurationName, spacing: &[f64], median_shape: &[f64], ctx: &ConfigurationContext) -> Configuration {
    let options = ctx.options;
    let dims = spacing.len();
    let (budget, initial_side) = if dims == 2 { (options.budget_2d, 2048f64) } else { (options.budget_3d, 256f64) };
    let inv: Vec<f64> = spacing.iter().map(|s| 1.0 / s).collect();
    let scale = (initial_side.powi(dims as i32) / inv.iter().product::<f64>()).powf(1.0 / dims as f64);
    let initial: Vec<f64> = inv.iter().zip(median_shape).map(|(v, m)| (v * scale).round_ties_even().min(*m)).collect();
    let min_edge = options.min_feature_map_edge;
    let (_, strides, kernels, mut patch, mut divisible) = pool_and_conv_props(spacing, &initial, min_edge);
    let mut network = topology(options, dims, strides, kernels);
    let mut estimate = estimate_feature_map_size(&patch, &network, ctx.num_classes);
    while estimate * options.min_batch_size as f64 > budget {
        // Shrink the axis that is largest relative to the median shape (ties: the last axis,
        // as numpy's argsort(...)[-1]).
        let ratio = |a: usize| patch[a] as f64 / median_shape[a];
        let axis = (0..dims).fold(0, |best, a| if ratio(a) >= ratio(best) { a } else { best });
        let mut tmp: Vec<f64> = patch.iter().map(|&p| p as f64).collect();
        tmp[axis] -= divisible[axis] as f64;
        let (_, _, _, _, tmp_divisible) = pool_and_conv_props(spacing, &tmp, min_edge);
        if patch[axis] <= tmp_divisible[axis] {
            break; // cannot shrink further; the budget is smaller than any useful patch
        }
        patch[axis] -= tmp_divisible[axis];
        let shrunk: Vec<f64> = patch.iter().map(|&p| p as f64).collect();
        let (_, strides, kernels, padded, div) = pool_and_conv_props(spacing, &shrunk, min_edge);
        patch = padded;
        divisible = div;
        network = topology(options, dims, strides, kernels);
        estimate = estimate_feature_map_size(&patch, &network, ctx.num_classes);
    }
    let batch = (budget / estimate).round_ties_even();
    let five_percent = (ctx.approximate_dataset_voxels * options.max_dataset_covered / patch.iter().product::<usize>() as f64).round_ties_even();
    let batch_size = (batch.min(five_percent).max(options.min_batch_size as f64)) as usize;
    Configuration {
        data_identifier: format!("spineseg_plans_{name}"),
        spacing_mm: spacing.to_vec(),
        patch_size: patch,
        batch_size,
        median_shape: median_shape.to_vec(),
        network,
        batch_dice: dims == 2,
    }
}

/// Normalisation chosen from a channel name, as nnU-Net's `get_normalization_scheme`.
fn normalization_for(channel: &str, use_mask: bool, stats: Option<&IntensityStats>) -> Normalization {
    match channel.to_lowercase().as_str() {
        "ct" => match stats {
            Some(s) => Normalization::Ct { mean: s.mean, std: s.std, lower: s.percentile_00_5, upper: s.percentile_99_5 },
            None => Normalization::ZScore { use_mask },
        },
        "nonorm" | "none" => Normalization::None,
        _ => Normalization::ZScore { use_mask },
    }
}

/// Plans both configurations from a fingerprint (see the module documentation for the rules).
pub fn plan_from_fingerprint(fingerprint: &Fingerprint, options: &PlanOptions) -> Result<Plan> {
    if fingerprint.cases.is_empty() {
        return Err(PlanningError::Planning("the fingerprint has no cases".into()));
    }
    let target = match options.overwrite_target_spacing {
        Some(t) => t,
        None => fullres_target_spacing(fingerprint, options.anisotropy_threshold),
    };
    if !target.iter().all(|s| s.is_finite() && *s > 0.0) {
        return Err(PlanningError::Planning(format!("target spacing {target:?} mm is not positive")));
    }
    // Label list: background, then declared and present values in increasing order.
    let ontology = Ontology::standard();
    let mut values: BTreeMap<Label, String> = fingerprint.label_names.clone();
    for case in &fingerprint.cases {
        for v in &case.labels_present {
            values.entry(*v).or_insert_with(|| match ontology.get(StructureId(*v)) {
                Some(s) if *v != 0 => s.name.clone(),
                _ => format!("label {v}"),
            });
        }
    }
    values.remove(&0);
    let mut labels = vec![LabelClass { value: 0, name: "background".into() }];
    labels.extend(values.into_iter().map(|(value, name)| LabelClass { value, name }));
    if labels.len() > 256 {
        return Err(PlanningError::Planning(format!("{} classes; at most 256 are supported", labels.len())));
    }

    let new_shapes: Vec<[usize; 3]> =
        fingerprint.cases.iter().map(|c| compute_new_shape(c.shape_after_crop, c.spacing_mm, target)).collect();
    let median: [f64; 3] = [0, 1, 2].map(|a| {
        let mut v: Vec<f64> = new_shapes.iter().map(|s| s[a] as f64).collect();
        v.sort_by(|x, y| x.total_cmp(y));
        median_sorted(&v)
    });
    let ctx = ConfigurationContext {
        options,
        num_classes: labels.len(),
        approximate_dataset_voxels: median.iter().product::<f64>() * fingerprint.cases.len() as f64,
    };
    let mut configurations = BTreeMap::new();
    if median.iter().all(|&m| m > 1.0) {
        configurations.insert(
            ConfigurationName::ThreeDFullres,
            plan_configuration(ConfigurationName::ThreeDFullres, &target, &median, &ctx),
        );
    }
    configurations.insert(
        ConfigurationName::TwoD,
        plan_configuration(ConfigurationName::TwoD, &target[1..], &median[1..], &ctx),
    );

    let use_mask = fingerprint.median_relative_size_after_cropping < 0.75;
    let channel_names =
        if fingerprint.channel_names.is_empty() { vec!["MRI".to_string()] } else { fingerprint.channel_names.clone() };
    let normalization = channel_names
        .iter()
        .enumerate()
        .map(|(c, name)| {
            normalization_for(name, use_mask, fingerprint.foreground_intensity_properties_per_channel.get(c).and_then(|s| s.as_ref()))
        })
        .collect();
    let plan = Plan {
        format_version: PLAN_FORMAT_VERSION,
        dataset_name: fingerprint.dataset_name.clone(),
        channel_names,
        normalization,
        labels,
        target_spacing_mm: target,
        resampling: ResampleSettings::default(),
        foreground_intensity_properties_per_channel: fingerprint.foreground_intensity_properties_per_channel.clone(),
        configurations,
        planner: options.clone(),
    };
    plan.validate().map_err(PlanningError::Planning)?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::case_fingerprint;

    fn case(id: usize, spacing: [f64; 3], shape: [usize; 3]) -> CaseFingerprint {
        let labels = vec![0, 20, 21, 22, 119];
        CaseFingerprint { foreground_voxels: 1000, ..case_fingerprint(&format!("case{id}"), spacing, shape, labels) }
    }

    fn fingerprint(cases: Vec<CaseFingerprint>) -> Fingerprint {
        Fingerprint {
            median_relative_size_after_cropping: 0.9,
            samples_per_case: 10,
            ..crate::test_support::fingerprint("toy", cases)
        }
    }

    fn assert_divisible(plan: &Plan) {
        for c in plan.configurations.values() {
            let div = c.network.divisibility();
            for (p, d) in c.patch_size.iter().zip(div) {
                assert_eq!(p % d, 0, "{c:?}");
            }
        }
    }

    #[test]
    fn isotropic_data_plans_median_spacing_and_pools_every_axis() {
        let f = fingerprint((0..5).map(|i| case(i, [1.0, 1.0, 1.0], [160 + i, 192, 176])).collect());
        let plan = plan_from_fingerprint(&f, &PlanOptions::default()).unwrap();
        assert_eq!(plan.target_spacing_mm, [1.0, 1.0, 1.0]);
        let c3 = plan.configuration(ConfigurationName::ThreeDFullres).unwrap();
        assert!(c3.network.strides[1..].iter().all(|s| s == &vec![2, 2, 2]), "{:?}", c3.network.strides);
        assert!(c3.network.kernel_sizes.iter().all(|k| k == &vec![3, 3, 3]));
        assert!(c3.batch_size >= 2);
        assert_divisible(&plan);
        assert_eq!(plan.labels.iter().map(|l| l.value).collect::<Vec<_>>(), [0, 20, 21, 22, 119]);
        assert_eq!(plan.labels[1].name, "L1");
        assert_eq!(plan.normalization, vec![Normalization::ZScore { use_mask: false }]);
        // nnU-Net's own settings give bigger patches.
        let big = plan_from_fingerprint(&f, &PlanOptions::nnunet()).unwrap();
        let p = &big.configuration(ConfigurationName::ThreeDFullres).unwrap().patch_size;
        assert!(p.iter().product::<usize>() >= c3.patch_size.iter().product::<usize>());
        assert_divisible(&big);
    }

    #[test]
    fn anisotropic_sagittal_data_keeps_the_slice_axis_coarse() {
        // Canonical RAS spacing of 0.5 x 0.5 x 4 mm sagittal scans: i (left-right) is 4 mm.
        let cases: Vec<_> = (0..6).map(|i| case(i, [if i == 0 { 3.3 } else { 4.0 }, 0.5, 0.5], [15, 448, 512])).collect();
        let f = fingerprint(cases);
        let t = fullres_target_spacing(&f, 3.0);
        // Median 4.0 on i; the 10th percentile rule gives (3.3 + (4 - 3.3) * 0.5) = 3.65.
        assert!((t[0] - 3.65).abs() < 1e-9, "{t:?}");
        assert_eq!(&t[1..], &[0.5, 0.5]);
        let plan = plan_from_fingerprint(&f, &PlanOptions::default()).unwrap();
        let c3 = plan.configuration(ConfigurationName::ThreeDFullres).unwrap();
        // Early stages pool only j and k, with 1-voxel kernels along i.
        assert_eq!(c3.network.strides[1], vec![1, 2, 2]);
        assert_eq!(c3.network.kernel_sizes[0], vec![1, 3, 3]);
        assert!(c3.spacing_mm[0] > 3.0);
        let c2 = plan.configuration(ConfigurationName::TwoD).unwrap();
        assert_eq!(c2.spacing_mm, vec![0.5, 0.5]);
        assert_eq!(c2.patch_size.len(), 2);
        assert!(c2.network.strides.len() >= 5);
        assert_divisible(&plan);
        assert_eq!(plan.target_spacing_for(ConfigurationName::TwoD, [4.4, 0.6, 0.6]), Some([4.4, 0.5, 0.5]));
    }

    #[test]
    fn pool_and_conv_props_match_nnunet() {
        // nnU-Net: get_pool_and_conv_props([3.0, 0.75, 0.75], [40, 224, 192], 4, 999999)
        let (pools, strides, kernels, patch, div) = pool_and_conv_props(&[3.0, 0.75, 0.75], &[40.0, 224.0, 192.0], 4);
        assert_eq!(pools, vec![3, 5, 5]);
        assert_eq!(strides[1..3], [vec![1, 2, 2], vec![1, 2, 2]]);
        assert_eq!(strides[3], vec![2, 2, 2]);
        assert_eq!(kernels[0], vec![1, 3, 3]);
        assert_eq!(kernels[2], vec![3, 3, 3]);
        assert_eq!(patch, vec![40, 224, 192]);
        assert_eq!(div, vec![8, 32, 32]);
    }

    #[test]
    fn plan_json_round_trips_and_bad_edits_are_named() {
        let f = fingerprint((0..3).map(|i| case(i, [4.0, 0.6, 0.6], [12, 300, 320])).collect());
        let plan = plan_from_fingerprint(&f, &PlanOptions::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plans.json");
        plan.save(&path).unwrap();
        assert_eq!(Plan::load(&path).unwrap(), plan);

        let mut bad = plan.clone();
        bad.configurations.get_mut(&ConfigurationName::TwoD).unwrap().patch_size[0] += 1;
        bad.save(&path).unwrap();
        let err = Plan::load(&path).unwrap_err().to_string();
        assert!(err.contains("plans.json") && err.contains("divisible"), "{err}");

        let mut bad = plan.clone();
        bad.target_spacing_mm[1] = -1.0;
        bad.save(&path).unwrap();
        assert!(Plan::load(&path).unwrap_err().to_string().contains("target_spacing_mm"));

        std::fs::write(&path, "{\"format_version\": 1,").unwrap();
        let err = Plan::load(&path).unwrap_err().to_string();
        assert!(err.contains("plans.json") && err.contains("invalid JSON"), "{err}");
    }
}
