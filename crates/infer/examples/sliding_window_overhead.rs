//! Overhead of the sliding-window machinery itself (padding, transposes, window gathering,
//! Gaussian blending, mirroring bookkeeping, final division and arg max), with a trivial
//! predictor that returns a constant, on a 20 x 512 x 512 sagittal volume with 2D patches of
//! 256 x 256 (nnU-Net step 0.5: 9 windows per slice, 180 in all).
//!
//! ```text
//! cargo run --release -p spineseg-infer --example sliding_window_overhead [classes] [repeats]
//! ```

use spineseg_infer::{predict_sliding_window, predict_sliding_window_argmax, predictor_fn, SlidingWindowOptions};
use spineseg_io::{Geometry, Volume};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let classes: usize = args.get(1).map(|s| s.parse().expect("classes should be a number")).unwrap_or(12);
    let repeats: usize = args.get(2).map(|s| s.parse().expect("repeats should be a number")).unwrap_or(5);
    let shape = [20, 512, 512];
    let image = Volume::new(
        shape,
        (0..shape.iter().product::<usize>()).map(|n| (n % 251) as f32).collect(),
        Geometry::default(),
    )
    .expect("data has the shape's size");
    let images = vec![image];
    println!("volume {shape:?}, 1 channel, {classes} classes, rayon threads {}", rayon::current_num_threads());

    let cases: &[(&str, Vec<usize>, Vec<usize>, usize)] = &[
        ("2d 256x256, no mirroring, batch 1", vec![256, 256], vec![], 1),
        ("2d 256x256, no mirroring, batch 8", vec![256, 256], vec![], 8),
        ("2d 256x256, mirror j and k (4 calls/window), batch 8", vec![256, 256], vec![0, 1], 8),
        ("3d 16x256x256, mirror i (spine default), batch 2", vec![16, 256, 256], vec![0], 2),
    ];
    for (name, patch, mirror, batch) in cases {
        let options = SlidingWindowOptions::new(patch.clone()).with_mirror_axes(mirror.clone()).with_batch_size(*batch);
        let mut predictor_time = Duration::ZERO;
        let mut calls = 0usize;
        let mut times = Vec::new();
        let mut argmax_times = Vec::new();
        let mut direct_times = Vec::new();
        for _ in 0..repeats {
            let mut predictor = predictor_fn(classes, |x: &[f32], s: &[usize]| {
                let t = Instant::now();
                let n: usize = s[2..].iter().product();
                // Trivial "network": a constant per class (depends on the input so nothing is
                // optimised away).
                let out = vec![x[0] * 0.0 + 1.0; s[0] * classes * n];
                predictor_time += t.elapsed();
                calls += 1;
                Ok(out)
            });
            let t = Instant::now();
            let scores = predict_sliding_window(&images, &mut predictor, &options).expect("prediction should succeed");
            times.push(t.elapsed());
            let t = Instant::now();
            let seg = scores.argmax();
            argmax_times.push(t.elapsed());
            std::hint::black_box(seg);
            drop(scores);
            // The path predict_case takes: arg max straight from the sums.
            let mut predictor = predictor_fn(classes, |x: &[f32], s: &[usize]| {
                let n: usize = s[2..].iter().product();
                Ok(vec![x[0] * 0.0 + 1.0; s[0] * classes * n])
            });
            let t = Instant::now();
            let seg =
                predict_sliding_window_argmax(&images, &mut predictor, &options).expect("prediction should succeed");
            direct_times.push(t.elapsed());
            std::hint::black_box(seg);
        }
        direct_times.sort();
        times.sort();
        argmax_times.sort();
        let per_run_predictor = predictor_time / repeats as u32;
        println!(
            "{name}: sliding window median {:.1} ms (min {:.1}), of which trivial predictor (allocating its output) {:.1} ms over {} calls; argmax median {:.1} ms; direct argmax path median {:.1} ms",
            ms(times[times.len() / 2]),
            ms(times[0]),
            ms(per_run_predictor),
            calls / repeats,
            ms(argmax_times[argmax_times.len() / 2]),
            ms(direct_times[direct_times.len() / 2]),
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
