//! The contrast and scanner transforms in the augmentation pipeline: off by default without
//! touching the random stream, deterministic, images only, and what each one promises
//! (inversion reverses tissue order, monotone remapping keeps it, the bias field is a positive
//! smooth factor).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use spineseg_dataloading::augment::{augment, augment_intensity_and_mirror, AugmentationConfig, Patch};

const SHAPE: [usize; 3] = [2, 8, 10];

/// Two "tissues" (1.0 where `b < 4`, 3.0 elsewhere) plus a small ramp, seg marks tissue B.
fn two_tissues(channels: usize) -> Patch {
    let mut p = Patch::zeros(SHAPE, channels);
    let n = p.voxels();
    for c in 0..channels {
        for a in 0..SHAPE[0] {
            for b in 0..SHAPE[1] {
                for z in 0..SHAPE[2] {
                    let idx = p.index([a, b, z]);
                    let tissue = if b < 4 { 1.0 } else { 3.0 };
                    p.images[c * n + idx] = tissue + 0.01 * (z + a) as f32 + c as f32;
                    p.seg[idx] = u8::from(b >= 4);
                }
            }
        }
    }
    p
}

/// Only one of the new transforms, always.
fn only(f: impl FnOnce(&mut AugmentationConfig)) -> AugmentationConfig {
    let mut c = AugmentationConfig::none();
    f(&mut c);
    c
}

fn run(config: &AugmentationConfig, seed: u64) -> Patch {
    let mut p = two_tissues(2);
    augment_intensity_and_mirror(&mut p, config, false, &mut ChaCha8Rng::seed_from_u64(seed));
    p
}

fn tissue_means(p: &Patch, channel: usize) -> (f64, f64) {
    let ch = p.channel(channel);
    let mean = |t: u8| {
        let v: Vec<f64> = ch.iter().zip(&p.seg).filter(|(_, s)| **s == t).map(|(v, _)| *v as f64).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    (mean(0), mean(1))
}

#[test]
fn new_transforms_at_probability_zero_leave_batches_bit_identical() {
    // Other ranges, but probabilities 0: nothing may be drawn, so every other transform sees the
    // same random numbers as before.
    let changed = |base: AugmentationConfig| AugmentationConfig {
        remap_points: [2, 3],
        remap_strength: [0.0, 0.1],
        remap_p_monotone: 1.0,
        bias_field_order: 5,
        bias_field_magnitude: [1.0, 2.0],
        ..base
    };
    let input = two_tissues(2);
    for base in [AugmentationConfig::default(), AugmentationConfig::nnunet(&[2, 8, 10])] {
        for seed in 0..20 {
            let a = augment(&input, SHAPE, &base, true, &mut ChaCha8Rng::seed_from_u64(seed));
            let b = augment(&input, SHAPE, &changed(base.clone()), true, &mut ChaCha8Rng::seed_from_u64(seed));
            assert_eq!(a, b, "seed {seed}");
        }
    }
    // And with no augmentation at all the patch is the input.
    assert_eq!(run(&changed(AugmentationConfig::none()), 3), two_tissues(2));
}

#[test]
fn each_transform_keeps_shape_and_seg_is_finite_and_deterministic() {
    let configs = [
        only(|c| c.p_invert = 1.0),
        only(|c| c.p_remap = 1.0),
        only(|c| {
            c.p_remap = 1.0;
            c.remap_p_monotone = 1.0
        }),
        only(|c| c.p_bias_field = 1.0),
        AugmentationConfig::contrast_robust(),
    ];
    let input = two_tissues(2);
    for (i, config) in configs.iter().enumerate() {
        config.validate().unwrap();
        for seed in 0..10 {
            let out = run(config, seed);
            assert_eq!((out.shape, out.channels, out.images.len()), (input.shape, 2, input.images.len()));
            assert_eq!(out.seg, input.seg, "config {i}: intensity transforms never touch the seg");
            assert!(out.images.iter().all(|v| v.is_finite()), "config {i}");
            assert_eq!(out, run(config, seed), "config {i} seed {seed}");
        }
        if i > 0 {
            // Random parameters: some seeds differ (inversion has none).
            assert!((1..10).any(|s| run(config, s) != run(config, 0)), "config {i}");
        }
        if i < 4 {
            assert_ne!(run(config, 0), input, "config {i} changes the image");
        }
    }
}

#[test]
fn inversion_swaps_the_order_of_two_tissues_in_every_channel() {
    let input = two_tissues(2);
    let out = run(&only(|c| c.p_invert = 1.0), 0);
    for c in 0..2 {
        let (a, b) = tissue_means(&input, c);
        let (a2, b2) = tissue_means(&out, c);
        assert!(a < b && a2 > b2, "channel {c}: {a} < {b} but {a2} > {b2} expected");
        // Mean kept.
        let m = |p: &Patch| p.channel(c).iter().map(|v| *v as f64).sum::<f64>();
        assert!((m(&input) - m(&out)).abs() < 1e-3);
    }
}

#[test]
fn monotone_remap_keeps_the_order_of_every_pair_of_voxels() {
    let config = only(|c| {
        c.p_remap = 1.0;
        c.remap_p_monotone = 1.0;
        c.remap_strength = [1.0, 1.0];
    });
    let input = two_tissues(1);
    for seed in 0..10 {
        let mut out = input.clone();
        augment_intensity_and_mirror(&mut out, &config, false, &mut ChaCha8Rng::seed_from_u64(seed));
        let (x, y) = (input.channel(0), out.channel(0));
        for i in 0..x.len() {
            for j in 0..x.len() {
                if x[i] < x[j] {
                    assert!(y[i] <= y[j], "seed {seed}: {} < {} became {} > {}", x[i], x[j], y[i], y[j]);
                }
            }
        }
    }
}

#[test]
fn bias_field_is_a_positive_smooth_factor_within_its_range() {
    let magnitude = 0.3;
    let config = only(|c| {
        c.p_bias_field = 1.0;
        c.bias_field_magnitude = [magnitude, magnitude];
    });
    // Intensity 1 above a minimum of 0 at one voxel: the output is the field itself there.
    let mut input = Patch::zeros([1, 16, 16], 1);
    input.images.iter_mut().skip(1).for_each(|v| *v = 1.0);
    for seed in 0..10 {
        let mut out = input.clone();
        augment_intensity_and_mirror(&mut out, &config, true, &mut ChaCha8Rng::seed_from_u64(seed));
        let field = &out.images[1..];
        let (lo, hi) = ((-magnitude).exp() as f32 - 1e-5, magnitude.exp() as f32 + 1e-5);
        assert!(field.iter().all(|b| *b > 0.0 && (lo..=hi).contains(b)), "seed {seed}");
        assert!(field.iter().any(|b| (b - 1.0).abs() > 0.05), "seed {seed}: the field does something");
        // Smooth: neighbours differ by far less than the range (degree 3: at most
        // 9 * 0.3 * 2/16 in log per voxel).
        for b in 0..16 {
            for z in 1..15 {
                let (u, v) = (out.images[out.index([0, b, z])], out.images[out.index([0, b, z + 1])]);
                assert!(((u / v) as f64).ln().abs() <= 1.5 * 9.0 * magnitude * 2.0 / 16.0, "seed {seed}");
            }
        }
    }
}

#[test]
fn the_preset_keeps_the_default_and_old_configs_read_as_before() {
    let preset = AugmentationConfig::contrast_robust();
    let default = AugmentationConfig::default();
    assert!(preset.p_invert > 0.0 && preset.p_remap > 0.0 && preset.p_bias_field > 0.0);
    assert_eq!(default.p_invert + default.p_remap + default.p_bias_field, 0.0);
    // The spatial part and mirroring are the default's.
    assert_eq!(
        (preset.p_rotation, preset.rotation_max_deg, preset.scaling, preset.mirror_axes),
        (default.p_rotation, default.rotation_max_deg, default.scaling, default.mirror_axes)
    );
    // A config stored before these fields existed (a checkpoint's state.json) reads as the
    // default, and the preset round-trips.
    let mut old = serde_json::to_value(&default).unwrap();
    for key in ["p_invert", "p_remap", "remap_points", "remap_strength", "remap_p_monotone", "p_bias_field"] {
        old.as_object_mut().unwrap().remove(key).expect("the field is serialised");
    }
    assert_eq!(serde_json::from_value::<AugmentationConfig>(old).unwrap(), default);
    let text = serde_json::to_string(&preset).unwrap();
    assert_eq!(serde_json::from_str::<AugmentationConfig>(&text).unwrap(), preset);
    // Bad values name the field.
    for (bad, field) in [
        (AugmentationConfig { p_remap: 1.5, ..preset.clone() }, "p_remap"),
        (AugmentationConfig { remap_points: [1, 4], ..preset.clone() }, "remap_points"),
        (AugmentationConfig { remap_strength: [0.5, 1.5], ..preset.clone() }, "remap_strength"),
        (AugmentationConfig { bias_field_order: 0, ..preset.clone() }, "bias_field_order"),
        (AugmentationConfig { bias_field_magnitude: [-0.1, 0.2], ..preset.clone() }, "bias_field_magnitude"),
    ] {
        let message = bad.validate().unwrap_err();
        assert!(message.contains(field), "{message}");
    }
}
