//! A prediction made in preprocessed space lands exactly on the input's voxels: an oblique,
//! anisotropic IPR scan is preprocessed (identity resampling, a real crop and reorientation),
//! a "network" returns the one-hot of the known labels, and `predict_case` must give back the
//! original label volume with the original geometry, in 2D and 3D.

use spineseg_planning::fingerprint::{compute_fingerprint, FingerprintOptions};
use spineseg_preprocessing::plan::{ConfigurationName, Plan, PlanOptions};
use spineseg_preprocessing::preprocess::{preprocess_case, CaseVolumes};
use spineseg_infer::{
    predict_case, predictor_fn, segment_preprocessed, Connectivity, PatchPredictor, PredictOptions, SlidingWindowOptions,
};
use spineseg_io::{Geometry, Label, Spacing, Volume};
use std::collections::BTreeMap;

/// Stored as I, P, R tilted by 12 degrees, 0.8 x 0.7 x 3.5 mm, with a zero margin (cropped
/// away). Channel 0 is an image ("T2", z-scored); channel 1 ("noNorm", left as is) carries the
/// label value of every voxel, which the test network reads back.
fn oblique_case(with_island: bool) -> (CaseVolumes, Volume<Label>) {
    let (s, c) = (12f64.to_radians().sin(), 12f64.to_radians().cos());
    let direction = [[0.0, 0.0, 1.0], [s, -c, 0.0], [-c, -s, 0.0]];
    let g = Geometry::new(Spacing::new([0.8, 0.7, 3.5]).unwrap(), [10.0, -4.0, 30.0], direction).unwrap();
    assert_eq!(g.orientation_code(), "IPR");
    let shape = [26, 19, 7];
    let mut image = Volume::filled(shape, 0.0f32, g);
    let mut labels = Volume::filled(shape, 0 as Label, g);
    for k in 0..7 {
        for j in 1..18 {
            for i in 2..25 {
                image.set([i, j, k], 50.0 + (i * 3 + j) as f32 + 10.0 * k as f32);
                if (4..15).contains(&j) && (1..6).contains(&k) && (3..22).contains(&i) {
                    // Along i (inferior-superior): vertebra 21, disc 119, vertebra 20.
                    let value = match i {
                        3..=8 => 21,
                        9..=11 => 119,
                        _ => 20,
                    };
                    labels.set([i, j, k], value);
                }
            }
        }
    }
    if with_island {
        // A stray two-voxel "L1" far from the real one.
        labels.set([23, 16, 6], 20);
        labels.set([24, 16, 6], 20);
    }
    let label_channel = labels.map(|v| *v as f32);
    let case = CaseVolumes { id: "oblique".into(), images: vec![image, label_channel], labels: Some(labels.clone()) };
    (case, labels)
}

fn identity_plan(case: &CaseVolumes) -> Plan {
    let options = FingerprintOptions { samples_per_case: 100, seed: 1, threads: 1 };
    let channels = vec!["T2".to_string(), "noNorm".to_string()];
    let fingerprint = compute_fingerprint(
        "oblique",
        channels,
        BTreeMap::new(),
        std::slice::from_ref(case),
        |c| Ok(c.clone()),
        &options,
    )
    .unwrap();
    // The case's own canonical spacing: preprocessing resamples nothing.
    let plan = spineseg_planning::plan_from_fingerprint(
        &fingerprint,
        &PlanOptions { overwrite_target_spacing: Some([3.5, 0.7, 0.8]), ..Default::default() },
    )
    .unwrap();
    assert_eq!(plan.labels.iter().map(|l| l.value).collect::<Vec<_>>(), [0, 20, 21, 119]);
    plan
}

/// Logits: 1 for the class of the label value in input channel 1, 0 elsewhere.
fn one_hot_of_label_channel(plan: &Plan) -> impl PatchPredictor {
    let lookup = plan.class_lookup();
    let classes = plan.num_classes();
    predictor_fn(classes, move |x: &[f32], shape: &[usize]| {
        let n: usize = shape[2..].iter().product();
        let mut out = vec![0.0; shape[0] * classes * n];
        for b in 0..shape[0] {
            let label_channel = &x[(b * shape[1] + 1) * n..][..n];
            for (p, v) in label_channel.iter().enumerate() {
                let class = lookup[*v as usize].expect("the label channel should hold plan labels") as usize;
                out[(b * classes + class) * n + p] = 1.0;
            }
        }
        Ok(out)
    })
}

#[test]
fn prediction_overlays_the_rotated_anisotropic_input_exactly() {
    let (case, labels) = oblique_case(false);
    let plan = identity_plan(&case);
    // Small patches so that many windows overlap and some axes need padding.
    for (config, patch) in [(ConfigurationName::ThreeDFullres, vec![4, 8, 16]), (ConfigurationName::TwoD, vec![8, 32])]
    {
        let pre = preprocess_case(&case, &plan, config).unwrap();
        let p = &pre.properties;
        assert_eq!(p.canonical_shape, [7, 19, 26]);
        assert_eq!(p.shape_after_crop, [7, 17, 23], "the zero margin is cropped");
        assert_eq!(p.shape_after_resampling, p.shape_after_crop);
        for mirror_axes in [vec![], (0..patch.len()).collect()] {
            let options = PredictOptions {
                sliding_window: SlidingWindowOptions::new(patch.clone())
                    .with_mirror_axes(mirror_axes)
                    .with_batch_size(3),
                largest_component: None,
                keep_structures: None,
                level_assignment: None,
                whole_slice: None,
                keep_network_labels: false,
                slice_context: 0,
            };
            let predicted = predict_case(&pre, &plan, &mut one_hot_of_label_channel(&plan), &options).unwrap();
            assert_eq!(predicted.shape(), labels.shape());
            assert_eq!(predicted.geometry, labels.geometry, "{config}");
            assert_eq!(predicted.data(), labels.data(), "{config}: the prediction should overlay the input exactly");
            // Text-prompted: only the requested structure survives, exactly where it was.
            let keep = plan.labels[1].value;
            let only = PredictOptions { keep_structures: Some(vec![keep]), ..options.clone() };
            let predicted = predict_case(&pre, &plan, &mut one_hot_of_label_channel(&plan), &only).unwrap();
            for (p, l) in predicted.data().iter().zip(labels.data()) {
                assert_eq!(*p, if *l == keep { keep } else { 0 }, "{config}: --structures keeps one label");
            }
        }
    }
}

#[test]
fn largest_component_removes_a_stray_island() {
    let (case, labels) = oblique_case(true);
    let (_, clean) = oblique_case(false);
    assert_ne!(labels, clean);
    let plan = identity_plan(&case);
    let pre = preprocess_case(&case, &plan, ConfigurationName::ThreeDFullres).unwrap();
    let mut options = PredictOptions::for_plan(&plan, ConfigurationName::ThreeDFullres).unwrap();
    options.sliding_window.patch_size = vec![4, 8, 8];
    let raw = predict_case(&pre, &plan, &mut one_hot_of_label_channel(&plan), &options).unwrap();
    assert_eq!(raw, labels, "without post-processing the island stays");
    options.largest_component = Some(Connectivity::Corners);
    let cleaned = predict_case(&pre, &plan, &mut one_hot_of_label_channel(&plan), &options).unwrap();
    assert_eq!(cleaned, clean);
}

#[test]
fn mismatched_predictor_or_patch_is_rejected() {
    let (case, _) = oblique_case(false);
    let plan = identity_plan(&case);
    let pre = preprocess_case(&case, &plan, ConfigurationName::TwoD).unwrap();
    let options = PredictOptions::for_plan(&plan, ConfigurationName::TwoD).unwrap();
    let mut wrong_classes = predictor_fn(2, |_x: &[f32], _s: &[usize]| Ok(vec![]));
    let err = predict_case(&pre, &plan, &mut wrong_classes, &options).unwrap_err().to_string();
    assert!(err.contains("2 classes") && err.contains("oblique"), "{err}");
    let three_d = PredictOptions { sliding_window: SlidingWindowOptions::new(vec![4, 4, 4]), largest_component: None, keep_structures: None, level_assignment: None, whole_slice: None, keep_network_labels: false, slice_context: 0 };
    let err = predict_case(&pre, &plan, &mut one_hot_of_label_channel(&plan), &three_d).unwrap_err().to_string();
    assert!(err.contains("2d"), "{err}");
}

#[test]
fn whole_slice_windows_cover_each_slice_once_and_overlay_the_input() {
    let (case, labels) = oblique_case(false);
    let plan = identity_plan(&case);
    let pre = preprocess_case(&case, &plan, ConfigurationName::TwoD).unwrap();
    let [ni, nj, nk] = pre.images[0].shape();
    let mut options = PredictOptions::for_plan(&plan, ConfigurationName::TwoD).unwrap();
    options.sliding_window = SlidingWindowOptions::new(vec![4, 4]).with_mirror_axes(vec![]).with_batch_size(1);
    options.whole_slice = Some(vec![8, 16]);
    // Every call is one whole slice, padded up to the divisor: ni calls in all.
    let mut inner = one_hot_of_label_channel(&plan);
    let mut shapes = Vec::new();
    let mut counting = predictor_fn(plan.num_classes(), |x: &[f32], shape: &[usize]| {
        shapes.push(shape.to_vec());
        inner.predict(x, shape)
    });
    let predicted = predict_case(&pre, &plan, &mut counting, &options).unwrap();
    assert_eq!(shapes.len(), ni, "{shapes:?}");
    let expected = [nj.next_multiple_of(8), nk.next_multiple_of(16)];
    assert!(shapes.iter().all(|s| s[2..] == expected), "{shapes:?} vs {expected:?}");
    assert_eq!(predicted.data(), labels.data(), "the prediction should overlay the input exactly");
    // A 3D patch has no slices to cover.
    let mut three_d = options.clone();
    three_d.sliding_window = SlidingWindowOptions::new(vec![4, 4, 4]);
    let err = predict_case(&pre, &plan, &mut one_hot_of_label_channel(&plan), &three_d).unwrap_err().to_string();
    assert!(err.contains("2D") || err.contains("2d"), "{err}");
}

/// 2.5D: with `slice_context` 1 the network gets slices `i - 1, i, i + 1` as its three
/// channels, the edge slice repeated past the ends. Image value = slice index `i`; the "network"
/// scores class 1 as channel 2 minus channel 0 (2 inside, 1 at the two end slices) against 1.5
/// for class 0, so only the end slices come out background.
#[test]
fn slice_context_stacks_the_neighbouring_slices_as_channels() {
    let shape = [5, 4, 6];
    let mut image = Volume::filled(shape, 0.0f32, Geometry::default());
    for k in 0..6 {
        for j in 0..4 {
            for i in 0..5 {
                image.set([i, j, k], i as f32);
            }
        }
    }
    let mut network = predictor_fn(2, |x: &[f32], shape: &[usize]| {
        assert_eq!(shape[1], 3, "three slices as channels");
        let n: usize = shape[2..].iter().product();
        let mut out = vec![0.0; shape[0] * 2 * n];
        for b in 0..shape[0] {
            let channel = |c: usize| &x[(b * 3 + c) * n..][..n];
            for p in 0..n {
                out[(b * 2) * n + p] = 1.5;
                out[(b * 2 + 1) * n + p] = channel(2)[p] - channel(0)[p];
            }
        }
        Ok(out)
    });
    let mut options = PredictOptions {
        sliding_window: SlidingWindowOptions::new(vec![4, 4]),
        largest_component: None,
        keep_structures: None,
        level_assignment: None,
        whole_slice: None,
        keep_network_labels: false,
        slice_context: 1,
    };
    let seg = segment_preprocessed(&[image.clone()], &mut network, &options).unwrap();
    for (p, &class) in seg.data().iter().enumerate() {
        let i = p % 5;
        assert_eq!(class, u8::from(i != 0 && i != 4), "slice {i}");
    }
    // Without the context the network gets one channel (and this one refuses it).
    options.slice_context = 0;
    let single = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        segment_preprocessed(&[image], &mut network, &options)
    }));
    assert!(single.is_err());
}
