//! HD95 timing on a mask pair stored as raw bytes (one `u8` per voxel, non-zero = foreground,
//! `i` fastest), for `bench/metrics_vs_medpy.py`, which writes the pair, times medpy on it and
//! runs this example:
//!
//! ```text
//! cargo run --release -p spineseg-metrics --example hd95_bench -- PRED.raw REF.raw NX NY NZ SX SY SZ [REPEATS]
//! ```
//!
//! Prints one JSON line: the HD95 values (MONAI's and medpy's definitions) and the best and
//! median wall times of (a) both HD95 definitions from one set of surface distances, in mm, which
//! is what `medpy.metric.binary.hd95` computes, and (b) `compare_masks` (every metric, mm and px).
//! Set `RAYON_NUM_THREADS` to fix the number of cores.

use spineseg_metrics::{compare_masks, Connectivity, Mask, MetricOptions, SurfaceDistances};
use std::time::Instant;

fn read_mask(path: &str, shape: [usize; 3]) -> Mask {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Mask::new(shape, bytes.iter().map(|&b| b != 0).collect()).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn times<T>(repeats: usize, mut f: impl FnMut() -> T) -> (T, f64, f64) {
    let mut secs = Vec::with_capacity(repeats);
    let mut last = None;
    for _ in 0..repeats {
        let start = Instant::now();
        last = Some(std::hint::black_box(f()));
        secs.push(start.elapsed().as_secs_f64());
    }
    secs.sort_by(f64::total_cmp);
    (last.expect("at least one repeat"), secs[0], secs[secs.len() / 2])
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 8 {
        eprintln!("usage: hd95_bench PRED.raw REF.raw NX NY NZ SX SY SZ [REPEATS]");
        std::process::exit(2);
    }
    let n = |i: usize| args[i].parse::<usize>().expect("shape should be integers");
    let s = |i: usize| args[i].parse::<f64>().expect("spacing should be numbers");
    let shape = [n(2), n(3), n(4)];
    let spacing = [s(5), s(6), s(7)];
    let repeats = args.get(8).map(|r| r.parse().expect("repeats should be an integer")).unwrap_or(7);
    let pred = read_mask(&args[0], shape);
    let reference = read_mask(&args[1], shape);

    let ((hd95, hd95_pooled), best, median) = times(repeats, || {
        let d = SurfaceDistances::compute(&pred, &reference, spacing, Connectivity::Face);
        (d.percentile_hausdorff(95.0), d.percentile_hausdorff_pooled(95.0))
    });
    let options = MetricOptions::default();
    let (all, all_best, all_median) = times(repeats, || compare_masks(&pred, &reference, spacing, &options));
    assert_eq!(all.hd95_pooled_mm, hd95_pooled, "both paths should give the same HD95");
    println!(
        "{{\"hd95_mm\": {hd95}, \"hd95_pooled_mm\": {hd95_pooled}, \"hd95_best_s\": {best}, \"hd95_median_s\": {median}, \
         \"all_metrics_best_s\": {all_best}, \"all_metrics_median_s\": {all_median}, \"threads\": {}, \"repeats\": {repeats}}}",
        rayon::current_num_threads()
    );
}
