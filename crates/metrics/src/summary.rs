//! Aggregation over cases: mean, standard deviation and median per structure and over structures.
//!
//! Rules (never drop a value silently):
//! - NaN values (structure absent from both prediction and reference) are skipped, as nnU-Net's
//!   `np.nanmean`, and counted in `n_nan`.
//! - Infinite distances (exactly one mask empty) cannot enter a mean; they are counted in `n_inf`
//!   and the statistics are over the finite values. The per-structure counts of each empty case
//!   (`both_empty`, `pred_empty`, `ref_empty`) are reported next to them.
//! - `std` is the population standard deviation (numpy's default, `ddof=0`); `median` is numpy's.
//! - "Over structures" statistics are taken over the per-structure means (nnU-Net's
//!   `foreground_mean` is the mean of the per-class means).
//!
//! In `summary.json`, statistics without any finite value are `null`.

use crate::distance::{percentile, Emptiness};
use crate::evaluate::{CaseResult, EvaluationOptions};
use serde::Serialize;
use spineseg_io::Label;
use std::collections::BTreeMap;

/// Statistics of one metric over cases (or over structures).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stats {
    pub mean: f64,
    pub std: f64,
    pub median: f64,
    /// Number of finite values the statistics are computed from.
    pub n: usize,
    /// Number of NaN values skipped (both masks empty).
    pub n_nan: usize,
    /// Number of infinite values (one mask empty), not in the statistics.
    pub n_inf: usize,
}

impl Stats {
    pub fn of(values: &[f64]) -> Stats {
        let mut finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let n_nan = values.iter().filter(|v| v.is_nan()).count();
        let n_inf = values.iter().filter(|v| v.is_infinite()).count();
        let n = finite.len();
        if n == 0 {
            return Stats { mean: f64::NAN, std: f64::NAN, median: f64::NAN, n, n_nan, n_inf };
        }
        let mean = finite.iter().sum::<f64>() / n as f64;
        let std = (finite.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        let median = percentile(&mut finite, 50.0);
        Stats { mean, std, median, n, n_nan, n_inf }
    }
}

/// How many (case, structure) pairs fell under each empty-mask rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct EmptyCounts {
    /// Structure in neither mask: NaN metrics.
    pub both_empty: usize,
    /// Structure only in the reference (missed): Dice 0, distances inf.
    pub pred_empty: usize,
    /// Structure only in the prediction (false positive): Dice 0, distances inf.
    pub ref_empty: usize,
}

impl EmptyCounts {
    fn add(&mut self, e: Emptiness) {
        match e {
            Emptiness::Neither => {}
            Emptiness::BothEmpty => self.both_empty += 1,
            Emptiness::PredEmpty => self.pred_empty += 1,
            Emptiness::RefEmpty => self.ref_empty += 1,
        }
    }
}

/// SPIDER-style detection counts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Detection {
    /// Reference structures (case, label) with at least one voxel.
    pub reference_structures: usize,
    pub detected: usize,
    pub missed: usize,
    /// detected / reference_structures (NaN when there are none).
    pub rate: f64,
}

impl Detection {
    fn of<'a>(flags: impl Iterator<Item = &'a Option<bool>>) -> Detection {
        let (mut detected, mut missed) = (0, 0);
        for flag in flags.flatten() {
            if *flag {
                detected += 1;
            } else {
                missed += 1;
            }
        }
        let total = detected + missed;
        let rate = if total == 0 { f64::NAN } else { detected as f64 / total as f64 };
        Detection { reference_structures: total, detected, missed, rate }
    }
}

/// Summary of one structure over all cases.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StructureSummary {
    pub label: Label,
    pub structure: String,
    pub n_cases: usize,
    pub empty: EmptyCounts,
    /// Statistics by metric name (see [`crate::evaluate::PairMetrics::values`]).
    pub metrics: BTreeMap<String, Stats>,
    /// SPIDER matching only.
    pub detection: Option<Detection>,
}

/// Summary of a whole evaluation (`summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub n_cases: usize,
    /// `"3d"` or `"2d slices across axis N"`.
    pub mode: String,
    pub tolerance_mm: f64,
    pub per_structure: Vec<StructureSummary>,
    /// Statistics of the per-structure means, by metric name.
    pub over_structures: BTreeMap<String, Stats>,
    /// Totals over all structures and cases.
    pub empty: EmptyCounts,
    /// SPIDER matching only: totals, plus the predicted structures matched to nothing.
    pub detection: Option<Detection>,
    pub unmatched_pred_structures: Option<usize>,
}

/// Summarises case results (structures in ascending label order).
pub fn summarise(cases: &[CaseResult], options: &EvaluationOptions) -> Summary {
    let mut by_label: BTreeMap<Label, Vec<&crate::evaluate::StructureResult>> = BTreeMap::new();
    for case in cases {
        for s in &case.structures {
            by_label.entry(s.label).or_default().push(s);
        }
    }
    let mut empty = EmptyCounts::default();
    let per_structure: Vec<StructureSummary> = by_label
        .iter()
        .map(|(&label, rows)| {
            let mut counts = EmptyCounts::default();
            for r in rows {
                counts.add(r.metrics.emptiness);
                empty.add(r.metrics.emptiness);
            }
            let names: Vec<&'static str> = rows[0].metrics.values().iter().map(|(n, _)| *n).collect();
            let metrics = names
                .iter()
                .enumerate()
                .map(|(m, name)| {
                    let values: Vec<f64> = rows.iter().map(|r| r.metrics.values()[m].1).collect();
                    (name.to_string(), Stats::of(&values))
                })
                .collect();
            StructureSummary {
                label,
                structure: rows[0].structure.clone(),
                n_cases: rows.len(),
                empty: counts,
                metrics,
                detection: options.spider_matching.then(|| Detection::of(rows.iter().map(|r| &r.detected))),
            }
        })
        .collect();
    let mut over_structures = BTreeMap::new();
    if let Some(first) = per_structure.first() {
        for name in first.metrics.keys() {
            let means: Vec<f64> = per_structure.iter().map(|s| s.metrics[name].mean).collect();
            over_structures.insert(name.clone(), Stats::of(&means));
        }
    }
    let mode = match options.slice_axis {
        None => "3d".to_string(),
        Some(axis) => format!("2d slices across axis {axis}"),
    };
    Summary {
        n_cases: cases.len(),
        mode,
        tolerance_mm: options.tolerance_mm,
        per_structure,
        over_structures,
        empty,
        detection: options
            .spider_matching
            .then(|| Detection::of(cases.iter().flat_map(|c| c.structures.iter().map(|s| &s.detected)))),
        unmatched_pred_structures: options
            .spider_matching
            .then(|| cases.iter().map(|c| c.unmatched_pred_labels.len()).sum()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_skip_nan_and_count_inf_separately() {
        let s = Stats::of(&[1.0, f64::NAN, 3.0, f64::INFINITY, 2.0]);
        assert_eq!((s.n, s.n_nan, s.n_inf), (3, 1, 1));
        assert_eq!(s.mean, 2.0);
        assert_eq!(s.median, 2.0);
        assert!((s.std - (2.0f64 / 3.0).sqrt()).abs() < 1e-15);
        let none = Stats::of(&[f64::NAN, f64::INFINITY]);
        assert!(none.mean.is_nan() && none.median.is_nan());
        assert_eq!((none.n, none.n_nan, none.n_inf), (0, 1, 1));
        let even = Stats::of(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!(even.median, 2.5);
    }

    #[test]
    fn detection_counts_only_reference_structures() {
        let flags = [Some(true), None, Some(false), Some(true)];
        let d = Detection::of(flags.iter());
        assert_eq!((d.reference_structures, d.detected, d.missed), (3, 2, 1));
        assert!((d.rate - 2.0 / 3.0).abs() < 1e-15);
    }
}
