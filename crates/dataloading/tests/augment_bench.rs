//! Time to make one training batch (a benchmark, not a test: ignored by default). Run with
//! `cargo test --release -p spineseg-dataloading --test augment_bench -- --ignored --nocapture`.

use spineseg_dataloading::augment::AugmentationConfig;
use spineseg_dataloading::sampling::{PatchSampler, SamplerConfig};
use spineseg_io::{Geometry, Volume};
use spineseg_preprocessing::plan::ConfigurationName;
use spineseg_preprocessing::preprocess::PreprocessedCase;
use spineseg_preprocessing::test_support::preprocessed_case;
use std::time::Instant;

/// A case of `shape` with smooth intensities and 12 slab-shaped classes stacked along `k`.
fn case(id: usize, shape: [usize; 3]) -> PreprocessedCase {
    let g = Geometry::default();
    let n: usize = shape.iter().product();
    let mut image = Vec::with_capacity(n);
    let mut seg = Vec::with_capacity(n);
    for k in 0..shape[2] {
        for j in 0..shape[1] {
            for i in 0..shape[0] {
                image.push(((i + 3 * j + 7 * k + id) as f32 * 0.01).sin());
                let inside = j > shape[1] / 3 && j < shape[1] * 2 / 3 && i > 1 && i + 1 < shape[0];
                seg.push(if inside { (1 + 12 * k / shape[2]) as u8 } else { 0 });
            }
        }
    }
    preprocessed_case(
        &format!("bench{id}"),
        vec![Volume::new(shape, image, g).unwrap()],
        Some(Volume::new(shape, seg, g).unwrap()),
    )
}

/// CPU time of this process (all threads) in ms, from /proc (Linux; 10 ms ticks), so numbers
/// stay meaningful on a machine shared with other work.
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    // After the command name: field 3 (state) is token 0, so utime (14) and stime (15) are
    // tokens 11 and 12.
    let t: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| t.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(f64::NAN);
    (tick(11) + tick(12)) * 10.0
}

fn time(name: &str, sampler: &PatchSampler, threads: usize, batches: u64) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| sampler.batch(0)); // class locations, warm caches
    let start = Instant::now();
    let cpu = cpu_ms();
    for b in 1..=batches {
        std::hint::black_box(pool.install(|| sampler.batch(b)));
    }
    let ms = start.elapsed().as_secs_f64() * 1e3 / batches as f64;
    let cpu = (cpu_ms() - cpu) / batches as f64;
    println!("{name:<40} threads {threads}: wall {ms:7.1} ms, cpu {cpu:7.1} ms / batch");
}

#[test]
#[ignore = "benchmark; run in release with --ignored --nocapture"]
fn batch_timing() {
    let all_spatial = AugmentationConfig { p_rotation: 1.0, p_scaling: 1.0, ..AugmentationConfig::default() };
    let everything = AugmentationConfig {
        p_noise: 1.0,
        p_blur: 1.0,
        p_brightness: 1.0,
        p_contrast: 1.0,
        p_low_res: 1.0,
        p_gamma_inverted: 1.0,
        p_gamma: 1.0,
        ..all_spatial.clone()
    };
    let augs = [
        ("none", AugmentationConfig::none()),
        ("default", AugmentationConfig::default()),
        ("contrast preset", AugmentationConfig::contrast_robust()),
        ("rotate+scale always", all_spatial),
        ("every transform always", everything),
    ];
    let cases_2d: Vec<_> = (0..4).map(|i| case(i, [15, 448, 512])).collect();
    let cases_3d: Vec<_> = (0..2).map(|i| case(i, [96, 192, 192])).collect();
    for (name, aug) in &augs {
        let config = |configuration, patch_size: Vec<usize>, batch_size| SamplerConfig {
            configuration,
            patch_size,
            batch_size,
            oversample_foreground: 0.33,
            augmentation: aug.clone(),
            seed: 1,
            allow_unlabelled: false,
            labelled_per_batch: None,
        };
        let s2 = PatchSampler::new(cases_2d.clone(), config(ConfigurationName::TwoD, vec![256, 256], 12)).unwrap();
        let s3 = PatchSampler::new(cases_3d.clone(), config(ConfigurationName::ThreeDFullres, vec![64, 128, 128], 2))
            .unwrap();
        for threads in [1, 2] {
            time(&format!("2D 12 x 256x256, {name}"), &s2, threads, 10);
            time(&format!("3D 2 x 64x128x128, {name}"), &s3, threads, 4);
        }
    }
}
