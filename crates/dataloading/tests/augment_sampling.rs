//! Patch sampling and augmentation on tiny synthetic cases: determinism, nnU-Net's foreground
//! oversampling, padding, the batch memory layout, and the properties of each transform.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use spineseg_dataloading::augment::{
    augment, augment_intensity_and_mirror, initial_patch_size, spatial_transform, AugmentationConfig, Patch,
    SegInterpolation, SpatialParams,
};
use spineseg_dataloading::sampling::{BatchLoader, PatchSampler, SamplerConfig, ValidationTiles};
use spineseg_preprocessing::plan::ConfigurationName;
use spineseg_preprocessing::preprocess::PreprocessedCase;
use spineseg_preprocessing::test_support::synthetic_case;
use std::sync::Arc;

/// A case of `shape` whose images are `f(i, j, k)` and whose seg is `s(i, j, k)`.
fn case(
    id: &str,
    shape: [usize; 3],
    channels: usize,
    f: impl Fn(usize, usize, usize) -> f32,
    s: impl Fn(usize, usize, usize) -> u8,
) -> PreprocessedCase {
    synthetic_case(id, shape, channels, f, Some(&s))
}

/// Two cases with a small foreground blob of classes 1 and 2 (far from everything else) and
/// distinct intensities, so patch contents identify their source voxels.
fn cases() -> Vec<PreprocessedCase> {
    let value = |i: usize, j: usize, k: usize| (i + 10 * j + 100 * k) as f32;
    vec![
        case("a", [6, 20, 24], 2, value, |i, j, k| match (i, j, k) {
            (2, 15..=16, 20..=21) => 1,
            (3, 3, 2) => 2,
            _ => 0,
        }),
        case("b", [5, 18, 22], 2, |i, j, k| -value(i, j, k), |i, j, k| u8::from(i == 1 && j == 2 && k == 19) * 2),
    ]
}

fn sampler(
    configuration: ConfigurationName,
    patch: Vec<usize>,
    batch: usize,
    aug: AugmentationConfig,
    seed: u64,
) -> PatchSampler {
    let config = SamplerConfig {
        configuration,
        patch_size: patch,
        batch_size: batch,
        oversample_foreground: 0.33,
        augmentation: aug,
        seed,
        allow_unlabelled: false,
        labelled_per_batch: None,
    };
    PatchSampler::new(cases(), config).unwrap()
}

#[test]
fn same_seed_gives_same_batches_and_the_loader_agrees() {
    for (conf, patch) in [(ConfigurationName::TwoD, vec![8, 8]), (ConfigurationName::ThreeDFullres, vec![4, 8, 8])] {
        let a = sampler(conf, patch.clone(), 6, AugmentationConfig::default(), 7);
        let b = sampler(conf, patch.clone(), 6, AugmentationConfig::default(), 7);
        let c = sampler(conf, patch.clone(), 6, AugmentationConfig::default(), 8);
        for i in 0..4 {
            assert_eq!(a.batch(i), b.batch(i));
        }
        assert_ne!(a.batch(0), c.batch(0));
        assert_ne!(a.batch(0), a.batch(1));
        let a = Arc::new(a);
        let loaded: Vec<_> = BatchLoader::spawn(a.clone(), 2, 2, 2).unwrap().take(3).collect();
        assert_eq!(loaded, (2..5).map(|i| a.batch(i)).collect::<Vec<_>>());
    }
}

#[test]
fn foreground_oversampling_forces_exactly_the_last_third() {
    for (conf, patch) in [(ConfigurationName::TwoD, vec![6, 6]), (ConfigurationName::ThreeDFullres, vec![2, 6, 6])] {
        let s = sampler(conf, patch, 12, AugmentationConfig::none(), 3);
        assert_eq!(s.num_forced_foreground(), 4);
        for i in 0..20 {
            let batch = s.batch(i);
            let n: usize = batch.patch_shape.iter().product();
            for (e, info) in batch.samples.iter().enumerate() {
                assert_eq!(info.forced_foreground, e >= 8);
                if info.forced_foreground {
                    let class = info.class.expect("both cases have foreground");
                    let seg = &batch.seg[e * n..(e + 1) * n];
                    assert!(seg.contains(&class), "batch {i} element {e}: class {class} missing");
                    if conf == ConfigurationName::TwoD {
                        // The slice holds the class.
                        let case = &s.cases()[info.case];
                        let sl = info.origin[0] as usize;
                        let seg_vol = case.seg.as_ref().unwrap();
                        let [_, ny, nz] = seg_vol.shape();
                        assert!((0..ny).any(|j| (0..nz).any(|k| *seg_vol.get([sl, j, k]) == class)));
                    }
                }
            }
        }
    }
}

#[test]
fn patches_beyond_the_case_are_padded_with_zeros() {
    // A 4^3 case of ones inside a 6^3 patch: nnU-Net's bounds centre it (lower corner -1).
    let c = case("small", [4, 4, 4], 1, |_, _, _| 1.0, |_, _, _| 3);
    let config = SamplerConfig {
        configuration: ConfigurationName::ThreeDFullres,
        patch_size: vec![6, 6, 6],
        batch_size: 3,
        oversample_foreground: 0.33,
        augmentation: AugmentationConfig::none(),
        seed: 1,
        allow_unlabelled: false,
        labelled_per_batch: None,
    };
    let s = PatchSampler::new(vec![c], config).unwrap();
    for i in 0..10 {
        let batch = s.batch(i);
        for (e, info) in batch.samples.iter().enumerate() {
            if !info.forced_foreground {
                assert_eq!(info.origin, [-1, -1, -1]);
                assert_eq!(info.valid, [0, 0, 0], "the patch starts outside");
            } else {
                // Centred on a class voxel v with nnU-Net's lower clamp: max(-1, v - 3), no
                // upper clamp, so the patch may run past the end.
                assert!(info.origin.iter().all(|o| (-1..=0).contains(o)), "{:?}", info.origin);
            }
            for x in 0..6 {
                for y in 0..6 {
                    for z in 0..6 {
                        let p = e * 216 + (x * 6 + y) * 6 + z;
                        let src = [x, y, z].map(|v| v as isize);
                        let inside = (0..3).all(|a| (0..4).contains(&(src[a] + info.origin[a])));
                        assert_eq!(batch.images[p], if inside { 1.0 } else { 0.0 });
                        assert_eq!(batch.seg[p], if inside { 3 } else { 0 });
                    }
                }
            }
        }
    }
}

#[test]
fn batch_layout_is_c_order_over_i_j_k() {
    let s = sampler(ConfigurationName::ThreeDFullres, vec![3, 4, 5], 4, AugmentationConfig::none(), 11);
    let batch = s.batch(0);
    assert_eq!(batch.image_shape(), vec![4, 2, 3, 4, 5]);
    assert_eq!(batch.seg_shape(), vec![4, 3, 4, 5]);
    assert_eq!(batch.images.len(), 4 * 2 * 60);
    for (b, info) in batch.samples.iter().enumerate() {
        let case = &s.cases()[info.case];
        let shape = case.images[0].shape();
        for c in 0..2 {
            for x in 0..3 {
                for y in 0..4 {
                    for z in 0..5 {
                        let v = [x, y, z].map(|a| a as isize);
                        let src = [0, 1, 2].map(|a| info.origin[a] + v[a]);
                        let inside = (0..3).all(|a| src[a] >= 0 && (src[a] as usize) < shape[a]);
                        let expected = if inside { *case.images[c].get(src.map(|s| s as usize)) } else { 0.0 };
                        assert_eq!(batch.images[(((b * 2 + c) * 3 + x) * 4 + y) * 5 + z], expected);
                    }
                }
            }
        }
    }
    // 2D: [B, C, j, k] of one sagittal slice.
    let s = sampler(ConfigurationName::TwoD, vec![4, 5], 2, AugmentationConfig::none(), 11);
    let batch = s.batch(3);
    assert_eq!(batch.image_shape(), vec![2, 2, 4, 5]);
    for (b, info) in batch.samples.iter().enumerate() {
        let case = &s.cases()[info.case];
        let [i, j0, k0] = info.origin;
        let (y, z) = (1usize, 2usize);
        let (j, k) = (j0 + y as isize, k0 + z as isize);
        let shape = case.images[0].shape();
        if j >= 0 && k >= 0 && (j as usize) < shape[1] && (k as usize) < shape[2] {
            let want = *case.images[1].get([i as usize, j as usize, k as usize]);
            assert_eq!(batch.images[((b * 2 + 1) * 4 + y) * 5 + z], want);
        }
    }
}

fn pattern_patch(shape: [usize; 3]) -> Patch {
    let n: usize = shape.iter().product();
    let images = (0..2 * n).map(|p| p as f32 * 0.5 - 3.0).collect();
    let seg = (0..n).map(|p| ((p * 7) % 4) as u8).collect();
    Patch { shape, channels: 2, images, seg }
}

#[test]
fn no_augmentation_is_the_identity_or_a_centre_crop() {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let input = pattern_patch([3, 6, 7]);
    let none = AugmentationConfig::none();
    assert_eq!(augment(&input, [3, 6, 7], &none, false, &mut rng), input);
    // Every probability 0 but the defaults' ranges: still the identity.
    let zero = AugmentationConfig { mirror_axes: [true; 3], ..AugmentationConfig::none() };
    assert_eq!(augment(&input, [3, 6, 7], &zero, false, &mut rng), input);
    // An explicit identity affine goes through interpolation and changes nothing either.
    let id = SpatialParams::rotation(0, 0.0);
    assert_eq!(spatial_transform(&input, [3, 6, 7], &id, SegInterpolation::Linear), input);
    // A larger input: the centre crop, offset (in - out) / 2.
    let big = pattern_patch([5, 8, 9]);
    let out = augment(&big, [3, 4, 5], &none, false, &mut rng);
    for a in 0..3 {
        for b in 0..4 {
            for c in 0..5 {
                assert_eq!(out.seg[out.index([a, b, c])], big.seg[big.index([a + 1, b + 2, c + 2])]);
                assert_eq!(out.channel(1)[out.index([a, b, c])], big.channel(1)[big.index([a + 1, b + 2, c + 2])]);
            }
        }
    }
}

#[test]
fn rotating_a_2d_patch_by_90_degrees_moves_voxels_as_expected() {
    // In-plane rotation about i: output (j, k) samples the input at (c - (k - c), c + (j - c)),
    // c = 2, i.e. out[j][k] = in[4 - k][j].
    let shape = [1, 5, 5];
    let images: Vec<f32> = (0..25).map(|p| (10 * (p / 5) + p % 5) as f32).collect();
    let seg: Vec<u8> = (0..25).map(|p| u8::from(p / 5 == 0) + 2 * u8::from(p % 5 == 4)).collect();
    let input = Patch { shape, channels: 1, images, seg };
    for mode in [SegInterpolation::Linear, SegInterpolation::Nearest] {
        let out = spatial_transform(&input, shape, &SpatialParams::rotation(0, 90.0), mode);
        for j in 0..5 {
            for k in 0..5 {
                let (sj, sk) = (4 - k, j);
                assert!((out.images[j * 5 + k] - input.images[sj * 5 + sk]).abs() < 1e-4, "({j}, {k})");
                assert_eq!(out.seg[j * 5 + k], input.seg[sj * 5 + sk], "({j}, {k})");
            }
        }
    }
    // The marked top row j = 0 ends up as the last column k = 4.
    let out = spatial_transform(&input, shape, &SpatialParams::rotation(0, 90.0), SegInterpolation::Linear);
    assert!((0..5).all(|j| out.seg[j * 5 + 4] & 1 == 1));
}

#[test]
fn spatial_transforms_keep_labels_in_the_original_class_set() {
    let input = pattern_patch([6, 12, 12]);
    let mut used = [false; 256];
    input.seg.iter().for_each(|s| used[*s as usize] = true);
    let mut input_sparse = input.clone();
    input_sparse.seg.iter_mut().for_each(|s| *s = if *s == 3 { 9 } else { *s });
    let cfg = AugmentationConfig {
        p_rotation: 1.0,
        p_scaling: 1.0,
        p_elastic: 1.0,
        rotation_max_deg: [40.0, 40.0, 40.0],
        ..AugmentationConfig::none()
    };
    for mode in [SegInterpolation::Linear, SegInterpolation::Nearest] {
        let cfg = AugmentationConfig { seg_interpolation: mode, ..cfg.clone() };
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..10 {
            let out = augment(&input_sparse, [4, 8, 8], &cfg, false, &mut rng);
            assert!(out.seg.iter().all(|s| [0, 1, 2, 9].contains(s)), "{mode:?}: {:?}", out.seg);
            assert_eq!(out.shape, [4, 8, 8]);
        }
    }
}

#[test]
fn mirroring_flips_only_the_configured_axes() {
    let input = pattern_patch([3, 4, 5]);
    let cfg = AugmentationConfig { p_mirror: 1.0, mirror_axes: [true, false, false], ..AugmentationConfig::none() };
    let mut out = input.clone();
    augment_intensity_and_mirror(&mut out, &cfg, false, &mut ChaCha8Rng::seed_from_u64(1));
    for a in 0..3 {
        for b in 0..4 {
            for c in 0..5 {
                assert_eq!(out.seg[out.index([a, b, c])], input.seg[input.index([2 - a, b, c])]);
                assert_eq!(out.channel(1)[out.index([a, b, c])], input.channel(1)[input.index([2 - a, b, c])]);
            }
        }
    }
    let cfg = AugmentationConfig { p_mirror: 1.0, mirror_axes: [false, true, true], ..AugmentationConfig::none() };
    let mut out = input.clone();
    augment_intensity_and_mirror(&mut out, &cfg, false, &mut ChaCha8Rng::seed_from_u64(1));
    for a in 0..3 {
        for b in 0..4 {
            for c in 0..5 {
                assert_eq!(out.channel(0)[out.index([a, b, c])], input.channel(0)[input.index([a, 3 - b, 4 - c])]);
            }
        }
    }
    // The spine default mirrors only left-right, so a 2D (sagittal) patch is never mirrored.
    let def = AugmentationConfig::default();
    assert_eq!(def.mirror_axes, [true, false, false]);
    let flat = pattern_patch([1, 4, 5]);
    let always = AugmentationConfig { p_mirror: 1.0, ..AugmentationConfig::none() };
    let always = AugmentationConfig { mirror_axes: def.mirror_axes, ..always };
    let mut out = flat.clone();
    augment_intensity_and_mirror(&mut out, &always, true, &mut ChaCha8Rng::seed_from_u64(1));
    assert_eq!(out, flat);
}

#[test]
fn intensity_transforms_change_images_but_never_the_seg() {
    let input = pattern_patch([4, 8, 8]);
    let cfg = AugmentationConfig {
        p_noise: 1.0,
        p_blur: 1.0,
        blur_p_per_channel: 1.0,
        p_brightness: 1.0,
        p_contrast: 1.0,
        p_low_res: 1.0,
        low_res_p_per_channel: 1.0,
        p_gamma_inverted: 1.0,
        p_gamma: 1.0,
        ..AugmentationConfig::none()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for _ in 0..5 {
        let mut out = input.clone();
        augment_intensity_and_mirror(&mut out, &cfg, false, &mut rng);
        assert_eq!(out.seg, input.seg);
        assert_ne!(out.images, input.images);
        assert!(out.images.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn the_enlarged_region_is_cropped_to_the_requested_patch() {
    for (conf, patch) in [(ConfigurationName::TwoD, vec![8, 12]), (ConfigurationName::ThreeDFullres, vec![4, 8, 8])] {
        let s = sampler(conf, patch.clone(), 3, AugmentationConfig::default(), 2);
        let initial = s.initial_patch_size();
        assert_eq!(initial, initial_patch_size(&patch, &AugmentationConfig::default()));
        assert!(initial.iter().zip(&patch).all(|(i, p)| i >= p) && initial != patch, "{initial:?}");
        for i in 0..5 {
            let b = s.batch(i);
            assert_eq!(b.patch_shape, patch);
            assert_eq!(b.images.len(), 3 * 2 * patch.iter().product::<usize>());
            assert_eq!(b.seg.len(), 3 * patch.iter().product::<usize>());
        }
    }
}

#[test]
fn validation_tiles_cover_every_case_exactly() {
    let cs = cases();
    for (conf, patch) in [(ConfigurationName::TwoD, vec![8, 7]), (ConfigurationName::ThreeDFullres, vec![4, 8, 7])] {
        let tiles = ValidationTiles::new(&cs, conf, &patch, 5).unwrap();
        let mut voxels = 0;
        let mut fg = 0;
        let n: usize = patch.iter().product();
        let p3 = if patch.len() == 2 { [1, patch[0], patch[1]] } else { [patch[0], patch[1], patch[2]] };
        for batch in tiles {
            for (e, info) in batch.samples.iter().enumerate() {
                voxels += info.valid.iter().product::<usize>();
                for x in 0..info.valid[0] {
                    for y in 0..info.valid[1] {
                        for z in 0..info.valid[2] {
                            fg += usize::from(batch.seg[e * n + (x * p3[1] + y) * p3[2] + z] != 0);
                        }
                    }
                }
            }
        }
        let total: usize = cs.iter().map(|c| c.images[0].len()).sum();
        let total_fg: usize =
            cs.iter().map(|c| c.seg.as_ref().unwrap().data().iter().filter(|v| **v != 0).count()).sum();
        assert_eq!((voxels, fg), (total, total_fg), "{conf}");
    }
}

#[test]
fn augmentation_config_serialises_with_defaults() {
    let d = AugmentationConfig::default();
    let json = serde_json::to_string(&d).unwrap();
    assert_eq!(serde_json::from_str::<AugmentationConfig>(&json).unwrap(), d);
    let partial: AugmentationConfig = serde_json::from_str(r#"{"p_rotation": 0.5}"#).unwrap();
    assert_eq!(partial, AugmentationConfig { p_rotation: 0.5, ..d.clone() });
    assert_eq!((d.p_rotation, d.p_scaling, d.scaling, d.p_noise, d.p_blur), (0.2, 0.2, [0.7, 1.4], 0.1, 0.2));
    assert_eq!((d.p_low_res, d.p_gamma_inverted, d.p_gamma, d.p_mirror), (0.25, 0.1, 0.3, 0.5));
    assert!(AugmentationConfig { p_noise: 1.5, ..d.clone() }.validate().is_err());
    assert!(AugmentationConfig::nnunet(&[64, 64, 64]).mirror_axes.iter().all(|m| *m));
}
