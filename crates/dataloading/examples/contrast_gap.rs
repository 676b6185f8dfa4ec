//! How far apart T1-like and T2-like training patches are in intensity, with and without the
//! contrast augmentation: the measurement behind [`AugmentationConfig::contrast_robust`].
//!
//! ```text
//! nice -n 15 cargo run --release -p spineseg-dataloading --example contrast_gap -- [DATA] [PATCHES_PER_CASE]
//! ```
//! DATA (default `../shared/data`) holds `lumbar-real` (its `vb3_*` cases: MyoSegmenTUM, T1 FFE
//! water-fat) and `spider-t2space` (T2 SPACE); PATCHES_PER_CASE (default 12, the numbers in
//! docs/ARCHITECTURE.md; T2 cases give twice as many) sets the sample size. About 10 s. Each case is z-scored over the whole volume
//! (nnU-Net's MRI normalisation without mask) in canonical RAS; a patch is a 64 x 64 sagittal
//! crop of 96 mm x 96 mm (nearest samples, so both spacings see the same field of view) centred
//! on a random vertebral-body voxel (labels 1-9 in both datasets), as foreground oversampling
//! does. The intensity part of the augmentation ([`augment_intensity_and_mirror`]) is applied to
//! one group and compared with the other group as it is. Three distances:
//! Each patch is standardised on its own first (the network's instance norm removes a
//! patch-wide shift and scale), and the source is augmented [`REPEATS`] times. Then:
//! - `W1`: Wasserstein-1 distance between the pooled standardised intensities of the groups;
//! - `NN hist`: per target patch, the total-variation distance of its intensity histogram
//!   (32 bins over [-3, 4] patch std) to the nearest source patch; median over target patches;
//! - `body`: the body contrast of a patch, (mean of body voxels - patch mean) / patch std,
//!   which carries the T1/T2 tissue order; `W1` between the groups, and `cover`: the share of
//!   target patches whose body contrast lies within the source patches' 2.5-97.5th percentile;
//! - `shading`: log ratio of body intensity (above the patch minimum) in the upper and lower
//!   half of a patch (coil shading along the spine), `W1` between the groups;
//! - `roughness`: mean squared neighbour difference of the standardised patch (sharpness and
//!   noise, what resolution changes), `W1` between the groups.
//!
//! The floor is the same distances between T2 patches of different cases.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spineseg_dataloading::augment::{augment_intensity_and_mirror, AugmentationConfig, Patch};
use spineseg_io::reorient::to_canonical;
use std::path::{Path, PathBuf};

const SIDE: usize = 64;
const FIELD_MM: f64 = 96.0;
const BINS: usize = 32;
const Z_RANGE: [f32; 2] = [-3.0, 4.0];
/// Augmented copies of each source patch.
const REPEATS: usize = 4;

/// Patches of one case: z-scored image and seg, `[1, SIDE, SIDE]`.
fn case_patches(image: &Path, labels: &Path, count: usize, rng: &mut ChaCha8Rng) -> Vec<Patch> {
    let (img, _) = to_canonical(&spineseg_io::read_image(image).expect("image should be readable"));
    let (seg, _) = to_canonical(&spineseg_io::read_labels(labels).expect("labels should be readable"));
    let n = img.len() as f64;
    let mean = img.data().iter().map(|v| *v as f64).sum::<f64>() / n;
    let std = (img.data().iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt().max(1e-8);
    let bodies: Vec<[usize; 3]> = {
        let [nx, ny, nz] = seg.shape();
        let mut v = Vec::new();
        for k in 0..nz {
            for j in 0..ny {
                for i in 0..nx {
                    if (1..=9).contains(seg.get([i, j, k])) {
                        v.push([i, j, k]);
                    }
                }
            }
        }
        v
    };
    if bodies.is_empty() {
        return Vec::new();
    }
    let sp = img.geometry.spacing.mm();
    let shape = img.shape();
    (0..count)
        .map(|_| {
            let c = bodies[rng.gen_range(0..bodies.len())];
            let mut p = Patch::zeros([1, SIDE, SIDE], 1);
            for a in 0..SIDE {
                for b in 0..SIDE {
                    let off =
                        |x: usize, s: f64| ((x as f64 + 0.5 - SIDE as f64 / 2.0) * FIELD_MM / SIDE as f64 / s).round();
                    let j = c[1] as f64 + off(a, sp[1]);
                    let k = c[2] as f64 + off(b, sp[2]);
                    if j >= 0.0 && k >= 0.0 && (j as usize) < shape[1] && (k as usize) < shape[2] {
                        let v = [c[0], j as usize, k as usize];
                        let idx = p.index([0, a, b]);
                        p.images[idx] = ((*img.get(v) as f64 - mean) / std) as f32;
                        p.seg[idx] = u8::from((1..=9).contains(seg.get(v)));
                    }
                }
            }
            p
        })
        .collect()
}

fn group(data: &Path, dataset: &str, prefix: &str, per_case: usize, rng: &mut ChaCha8Rng) -> Vec<Patch> {
    let images = data.join(dataset).join("imagesTr");
    let mut names: Vec<String> = std::fs::read_dir(&images)
        .unwrap_or_else(|e| panic!("{}: {e}", images.display()))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix) && n.ends_with("_0000.nii.gz"))
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|n| {
            let case = n.trim_end_matches("_0000.nii.gz");
            let labels = data.join(dataset).join("labelsTr").join(format!("{case}.nii.gz"));
            case_patches(&images.join(n), &labels, per_case, rng)
        })
        .collect()
}

/// The intensities standardised per patch: the network's first convolution is followed by an
/// instance norm, which removes a patch-wide shift and scale, so only the shape of the patch's
/// intensity distribution and the order of its tissues matter.
fn standardised(p: &Patch) -> Vec<f32> {
    let n = p.images.len() as f64;
    let mean = p.images.iter().map(|v| *v as f64).sum::<f64>() / n;
    let std = (p.images.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt().max(1e-8);
    p.images.iter().map(|v| ((*v as f64 - mean) / std) as f32).collect()
}

fn histogram(p: &Patch) -> Vec<f64> {
    let mut h = vec![0f64; BINS];
    for v in &standardised(p) {
        let t = (v - Z_RANGE[0]) / (Z_RANGE[1] - Z_RANGE[0]);
        h[((t * BINS as f32).floor().max(0.0) as usize).min(BINS - 1)] += 1.0;
    }
    let n = p.images.len() as f64;
    h.iter().map(|x| x / n).collect()
}

fn body_contrast(p: &Patch) -> f64 {
    let n = p.images.len() as f64;
    let mean = p.images.iter().map(|v| *v as f64).sum::<f64>() / n;
    let std = (p.images.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt().max(1e-8);
    let (sum, count) = p
        .images
        .iter()
        .zip(&p.seg)
        .filter(|(_, s)| **s == 1)
        .fold((0f64, 0usize), |(s, c), (v, _)| (s + *v as f64, c + 1));
    (sum / count.max(1) as f64 - mean) / std
}

/// Shading along the spine: log ratio of the mean intensity above the patch minimum of the body
/// voxels in the upper and the lower half of the patch (0 when a half has no body).
fn shading(p: &Patch) -> f64 {
    let lo = p.images.iter().fold(f32::INFINITY, |m, v| m.min(*v)) as f64;
    let mut sum = [0f64; 2];
    let mut count = [0usize; 2];
    for a in 0..SIDE {
        for b in 0..SIDE {
            let idx = p.index([0, a, b]);
            if p.seg[idx] == 1 {
                sum[usize::from(b >= SIDE / 2)] += p.images[idx] as f64 - lo;
                count[usize::from(b >= SIDE / 2)] += 1;
            }
        }
    }
    if count[0] < 20 || count[1] < 20 {
        return 0.0;
    }
    ((sum[1] / count[1] as f64).max(1e-6) / (sum[0] / count[0] as f64).max(1e-6)).ln()
}

/// Roughness: mean squared difference of neighbouring standardised intensities (in-plane), high
/// for sharp, noisy images and low for blurred or low-resolution ones.
fn roughness(p: &Patch) -> f64 {
    let z = standardised(p);
    let mut sum = 0f64;
    for a in 0..SIDE - 1 {
        for b in 0..SIDE - 1 {
            let v = z[a * SIDE + b];
            sum += ((z[(a + 1) * SIDE + b] - v).powi(2) + (z[a * SIDE + b + 1] - v).powi(2)) as f64;
        }
    }
    sum / (2 * (SIDE - 1) * (SIDE - 1)) as f64
}

/// Wasserstein-1 distance between two samples (quantile functions on 1000 points).
fn w1(a: &[f64], b: &[f64]) -> f64 {
    let sorted = |x: &[f64]| {
        let mut s = x.to_vec();
        s.sort_by(f64::total_cmp);
        s
    };
    let (a, b) = (sorted(a), sorted(b));
    let q = |s: &[f64], t: f64| s[((s.len() - 1) as f64 * t).round() as usize];
    (0..1000).map(|i| (i as f64 + 0.5) / 1000.0).map(|t| (q(&a, t) - q(&b, t)).abs()).sum::<f64>() / 1000.0
}

fn percentile(x: &[f64], t: f64) -> f64 {
    let mut s = x.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * t).round() as usize]
}

/// The distances from `source` (augmented) to `target` (as is).
fn row(name: &str, source: &[Patch], target: &[Patch]) {
    let pooled =
        |g: &[Patch]| g.iter().flat_map(|p| standardised(p).into_iter().step_by(7).map(f64::from)).collect::<Vec<_>>();
    let hs: Vec<Vec<f64>> = source.iter().map(histogram).collect();
    let mut nn: Vec<f64> = target
        .iter()
        .map(|t| {
            let ht = histogram(t);
            hs.iter().map(|h| 0.5 * h.iter().zip(&ht).map(|(a, b)| (a - b).abs()).sum::<f64>()).fold(1.0, f64::min)
        })
        .collect();
    nn.sort_by(f64::total_cmp);
    let bs: Vec<f64> = source.iter().map(body_contrast).collect();
    let bt: Vec<f64> = target.iter().map(body_contrast).collect();
    let (lo, hi) = (percentile(&bs, 0.025), percentile(&bs, 0.975));
    let cover = bt.iter().filter(|b| (lo..=hi).contains(*b)).count() as f64 / bt.len() as f64;
    let feature_w1 = |f: fn(&Patch) -> f64| {
        let (a, b): (Vec<f64>, Vec<f64>) = (source.iter().map(f).collect(), target.iter().map(f).collect());
        (w1(&a, &b), percentile(&a, 0.025), percentile(&a, 0.975))
    };
    let (shade_w1, shade_lo, shade_hi) = feature_w1(shading);
    let (rough_w1, rough_lo, rough_hi) = feature_w1(roughness);
    println!(
        "| {name:<34} | {:>6.3} | {:>7.3} | {:>6.3} | {:>5.1} % | {:>+6.2} [{:>+5.2}, {:>+5.2}] | {shade_w1:.3} [{shade_lo:+.2}, {shade_hi:+.2}] | {rough_w1:.3} [{rough_lo:.2}, {rough_hi:.2}] |",
        w1(&pooled(source), &pooled(target)),
        nn[nn.len() / 2],
        w1(&bs, &bt),
        100.0 * cover,
        percentile(&bs, 0.5),
        lo,
        hi
    );
}

fn augmented(patches: &[Patch], config: &AugmentationConfig, seed: u64) -> Vec<Patch> {
    patches
        .iter()
        .cycle()
        .take(patches.len() * REPEATS)
        .enumerate()
        .map(|(e, p)| {
            let mut p = p.clone();
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (e as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            augment_intensity_and_mirror(&mut p, config, true, &mut rng);
            p
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data = PathBuf::from(args.get(1).map(String::as_str).unwrap_or("../shared/data"));
    let per_case: usize = args.get(2).map(|s| s.parse().expect("PATCHES_PER_CASE should be a number")).unwrap_or(12);
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let t1 = group(&data, "lumbar-real", "vb3_", per_case, &mut rng);
    let t2 = group(&data, "spider-t2space", "spider_", per_case * 2, &mut rng);
    println!("{} T1 patches (lumbar-real vb3, MyoSegmenTUM), {} T2 patches (spider-t2space)\n", t1.len(), t2.len());

    let default = AugmentationConfig::default();
    let preset = AugmentationConfig::contrast_robust();
    let off = AugmentationConfig { p_invert: 0.0, p_remap: 0.0, p_bias_field: 0.0, ..default.clone() };
    let configs: Vec<(&str, AugmentationConfig)> = vec![
        ("none", AugmentationConfig::none()),
        ("default", default.clone()),
        ("default + invert p 0.2", AugmentationConfig { p_invert: 0.2, ..off.clone() }),
        ("default + remap p 0.3", AugmentationConfig { p_remap: 0.3, ..off.clone() }),
        ("default + remap p 0.3 monotone", AugmentationConfig { p_remap: 0.3, remap_p_monotone: 1.0, ..off.clone() }),
        ("default + bias p 0.3", AugmentationConfig { p_bias_field: 0.3, ..off.clone() }),
        ("default + low-res zoom [0.35, 1]", AugmentationConfig { low_res_zoom: [0.35, 1.0], ..off.clone() }),
        ("default + low-res p 0.5", AugmentationConfig { p_low_res: 0.5, ..off.clone() }),
        (
            "default + low-res p 0.5 [0.35, 1]",
            AugmentationConfig { p_low_res: 0.5, low_res_zoom: [0.35, 1.0], ..off.clone() },
        ),
        ("default + noise p 0.3", AugmentationConfig { p_noise: 0.3, ..off.clone() }),
        ("default + gamma [0.5, 2]", AugmentationConfig { gamma: [0.5, 2.0], ..off.clone() }),
        ("contrast_robust (preset)", preset.clone()),
        ("preset, invert p 0.5", AugmentationConfig { p_invert: 0.5, ..preset.clone() }),
        ("preset, remap p 0.6", AugmentationConfig { p_remap: 0.6, ..preset.clone() }),
        (
            "preset, low-res p 0.25 [0.5, 1]",
            AugmentationConfig { p_low_res: 0.25, low_res_zoom: [0.5, 1.0], ..preset.clone() },
        ),
        ("preset, noise p 0.3", AugmentationConfig { p_noise: 0.3, ..preset.clone() }),
    ];
    for (source, target, title) in [(&t1, &t2, "T1 (augmented) -> T2"), (&t2, &t1, "T2 (augmented) -> T1")] {
        println!("{title}");
        println!("| augmentation of the source         | W1     | NN hist | body W1 | cover   | source body contrast p50 [p2.5, p97.5] | shading W1 [source p2.5, p97.5] | roughness W1 [source p2.5, p97.5] |");
        println!("|------------------------------------|--------|---------|--------|---------|------------------|------|------|");
        for (name, config) in &configs {
            row(name, &augmented(source, config, 1), target);
        }
        println!();
    }
    // Whole cases on each side (patches are in case order).
    let half = t2.len() / 2 / (per_case * 2) * (per_case * 2);
    println!("floor: T2 patches vs T2 patches of other cases");
    row("none", &t2[..half], &t2[half..]);
}
