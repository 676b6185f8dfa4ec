//! Statistics helpers shared by the fingerprint (planning) and the plan schema: numpy-compatible
//! percentiles and the per-channel intensity statistics nnU-Net records.

use serde::{Deserialize, Serialize};

/// Intensity statistics of one channel (nnU-Net's names).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IntensityStats {
    pub mean: f64,
    /// Population standard deviation (numpy's default `ddof = 0`).
    pub std: f64,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub percentile_00_5: f64,
    pub percentile_99_5: f64,
}

impl IntensityStats {
    /// Statistics of `values` (sorted in place); `None` when empty. Percentiles interpolate
    /// linearly as numpy's default.
    pub fn of(values: &mut [f32]) -> Option<IntensityStats> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable_by(|a, b| a.total_cmp(b));
        let n = values.len() as f64;
        let mean = values.iter().map(|v| *v as f64).sum::<f64>() / n;
        let var = values.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n;
        Some(IntensityStats {
            mean,
            std: var.sqrt(),
            median: percentile_sorted(values, 50.0),
            min: values[0] as f64,
            max: values[values.len() - 1] as f64,
            percentile_00_5: percentile_sorted(values, 0.5),
            percentile_99_5: percentile_sorted(values, 99.5),
        })
    }
}

/// numpy's `percentile` (linear) of sorted values.
pub fn percentile_sorted(sorted: &[f32], p: f64) -> f64 {
    percentile_sorted_f64(&sorted.iter().map(|v| *v as f64).collect::<Vec<_>>(), p)
}

/// numpy's `percentile` (linear) of sorted `f64` values.
pub fn percentile_sorted_f64(sorted: &[f64], p: f64) -> f64 {
    let pos = p / 100.0 * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let t = pos - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * t
}

/// numpy's median of sorted values.
pub fn median_sorted(sorted: &[f64]) -> f64 {
    percentile_sorted_f64(sorted, 50.0)
}
