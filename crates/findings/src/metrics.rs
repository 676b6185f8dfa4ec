//! Detection and grading metrics: pure functions on per-disc predictions and truths, plus a
//! bootstrap over patients.
//!
//! Undefined values are NaN, never a guess: recall without positives, FPR without negatives,
//! precision without positive predictions, AUC without both classes, accuracy and kappa of
//! nothing, kappa when both raters use one and the same grade only (sklearn's
//! `cohen_kappa_score` gives NaN there too). Averages over findings skip NaN values.
//!
//! Inputs are paired slices (`pred[i]` is about the same disc as `truth[i]`); slices of different
//! lengths are a programming error and panic.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The 2x2 table of binary predictions against truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BinaryCounts {
    pub tp: usize,
    pub fp: usize,
    pub fn_: usize,
    pub tn: usize,
}

impl BinaryCounts {
    /// Counts `pred` against `truth`.
    ///
    /// # Panics
    /// If the slices differ in length.
    pub fn new(pred: &[bool], truth: &[bool]) -> BinaryCounts {
        assert_eq!(pred.len(), truth.len(), "predictions and truths should be paired");
        let mut counts = BinaryCounts::default();
        for (&p, &t) in pred.iter().zip(truth) {
            match (p, t) {
                (true, true) => counts.tp += 1,
                (true, false) => counts.fp += 1,
                (false, true) => counts.fn_ += 1,
                (false, false) => counts.tn += 1,
            }
        }
        counts
    }

    /// Recall (sensitivity) = tp / (tp + fn); NaN without positives.
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// False-positive rate = fp / (fp + tn); NaN without negatives.
    pub fn fpr(&self) -> f64 {
        ratio(self.fp, self.fp + self.tn)
    }

    /// Precision = tp / (tp + fp); NaN without positive predictions.
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    /// Accuracy = (tp + tn) / n; NaN when empty.
    pub fn accuracy(&self) -> f64 {
        ratio(self.tp + self.tn, self.tp + self.fp + self.fn_ + self.tn)
    }
}

fn ratio(numerator: usize, denominator: usize) -> f64 {
    if denominator == 0 {
        f64::NAN
    } else {
        numerator as f64 / denominator as f64
    }
}

/// Recall (sensitivity) of binary predictions; NaN when `truth` has no positives.
pub fn recall(pred: &[bool], truth: &[bool]) -> f64 {
    BinaryCounts::new(pred, truth).recall()
}

/// False-positive rate (1 - specificity); NaN when `truth` has no negatives.
pub fn false_positive_rate(pred: &[bool], truth: &[bool]) -> f64 {
    BinaryCounts::new(pred, truth).fpr()
}

/// Precision (positive predictive value); NaN when nothing is predicted positive.
pub fn precision(pred: &[bool], truth: &[bool]) -> f64 {
    BinaryCounts::new(pred, truth).precision()
}

/// Fraction of equal pairs (binary decisions or grades); NaN when empty.
///
/// # Panics
/// If the slices differ in length.
pub fn accuracy<T: PartialEq>(pred: &[T], truth: &[T]) -> f64 {
    assert_eq!(pred.len(), truth.len(), "predictions and truths should be paired");
    ratio(pred.iter().zip(truth).filter(|(p, t)| p == t).count(), pred.len())
}

/// Area under the ROC curve of `scores` for `truth`, as the Mann-Whitney U statistic divided by
/// `positives * negatives`: the probability that a random positive scores above a random
/// negative, ties counted half (sklearn's `roc_auc_score` agrees). NaN when `truth` lacks either
/// class or a score is NaN.
///
/// # Panics
/// If the slices differ in length.
pub fn roc_auc(scores: &[f64], truth: &[bool]) -> f64 {
    assert_eq!(scores.len(), truth.len(), "scores and truths should be paired");
    let positives = truth.iter().filter(|&&t| t).count();
    let negatives = truth.len() - positives;
    if positives == 0 || negatives == 0 || scores.iter().any(|s| s.is_nan()) {
        return f64::NAN;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the (1-based, mid-rank for ties) ranks of the positives.
    let mut positive_rank_sum = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        let mid_rank = (start + 1 + end) as f64 / 2.0;
        positive_rank_sum += mid_rank * order[start..end].iter().filter(|&&i| truth[i]).count() as f64;
        start = end;
    }
    let u = positive_rank_sum - (positives * (positives + 1)) as f64 / 2.0;
    u / (positives as f64 * negatives as f64)
}

/// Cohen's kappa with linear weights for ordinal grades `1..=categories` (weight of a
/// disagreement `|i - j| / (categories - 1)`), as sklearn's `cohen_kappa_score(weights="linear")`
/// over the same categories: `1 - sum(w * observed) / sum(w * expected)`, expected from the
/// product of the two raters' marginals. NaN when empty or when the expected weighted
/// disagreement is 0 (both raters give one and the same grade to every disc).
///
/// # Panics
/// If the slices differ in length, `categories < 2`, or a grade is outside `1..=categories`.
pub fn linear_weighted_kappa(pred: &[u8], truth: &[u8], categories: u8) -> f64 {
    assert_eq!(pred.len(), truth.len(), "predictions and truths should be paired");
    assert!(categories >= 2, "kappa should have at least two categories");
    let k = categories as usize;
    let index = |g: u8| {
        assert!((1..=categories).contains(&g), "grade {g} should be in 1..={categories}");
        g as usize - 1
    };
    if pred.is_empty() {
        return f64::NAN;
    }
    let mut observed = vec![0.0f64; k * k];
    let mut pred_marginal = vec![0.0f64; k];
    let mut truth_marginal = vec![0.0f64; k];
    for (&p, &t) in pred.iter().zip(truth) {
        let (i, j) = (index(p), index(t));
        observed[i * k + j] += 1.0;
        pred_marginal[i] += 1.0;
        truth_marginal[j] += 1.0;
    }
    let n = pred.len() as f64;
    let (mut weighted_observed, mut weighted_expected) = (0.0, 0.0);
    for i in 0..k {
        for j in 0..k {
            let w = i.abs_diff(j) as f64 / (k - 1) as f64;
            weighted_observed += w * observed[i * k + j];
            weighted_expected += w * pred_marginal[i] * truth_marginal[j] / n;
        }
    }
    if weighted_expected == 0.0 {
        return f64::NAN;
    }
    1.0 - weighted_observed / weighted_expected
}

/// A numpy-style percentile (linear interpolation between order statistics) of sorted values.
fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let position = q / 100.0 * (n - 1) as f64;
            let lower = position.floor() as usize;
            let upper = (lower + 1).min(n - 1);
            let fraction = position - lower as f64;
            sorted[lower] + (sorted[upper] - sorted[lower]) * fraction
        }
    }
}

/// 95 % percentile bootstrap intervals of several statistics at once: `n_resamples` times, draw
/// `patients.len()` patients with replacement (a patient's discs move together) from a ChaCha8
/// stream seeded with `seed`, and evaluate `statistics` on the resample. Resamples where a
/// statistic is NaN (e.g. no positive disc drawn) are left out of that statistic's interval; the
/// interval is `(NaN, NaN)` when none remains, when there are no patients or no resamples.
/// The same seed gives the same intervals.
pub fn bootstrap_cis<P>(
    patients: &[P],
    statistics: impl Fn(&[&P]) -> Vec<f64>,
    n_resamples: usize,
    seed: u64,
) -> Vec<(f64, f64)> {
    let everyone: Vec<&P> = patients.iter().collect();
    let count = statistics(&everyone).len();
    if patients.is_empty() || n_resamples == 0 {
        return vec![(f64::NAN, f64::NAN); count];
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(n_resamples); count];
    let mut resample: Vec<&P> = Vec::with_capacity(patients.len());
    for _ in 0..n_resamples {
        resample.clear();
        resample.extend((0..patients.len()).map(|_| &patients[rng.gen_range(0..patients.len())]));
        let values = statistics(&resample);
        assert_eq!(values.len(), count, "the statistics should return one value each, every time");
        for (column, value) in samples.iter_mut().zip(values) {
            if !value.is_nan() {
                column.push(value);
            }
        }
    }
    samples
        .into_iter()
        .map(|mut column| {
            column.sort_by(f64::total_cmp);
            (percentile_sorted(&column, 2.5), percentile_sorted(&column, 97.5))
        })
        .collect()
}

/// The 95 % percentile bootstrap interval `(lo, hi)` of one statistic over patients; see
/// [`bootstrap_cis`] (NaN handling, determinism).
pub fn bootstrap_ci<P>(patients: &[P], statistic: impl Fn(&[&P]) -> f64, n_resamples: usize, seed: u64) -> (f64, f64) {
    bootstrap_cis(patients, |sample| vec![statistic(sample)], n_resamples, seed)[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn two_by_two_table() {
        // tp = 3, fp = 1, fn = 2, tn = 4.
        let pred = [true, true, true, true, false, false, false, false, false, false];
        let truth = [true, true, true, false, true, true, false, false, false, false];
        let counts = BinaryCounts::new(&pred, &truth);
        assert_eq!(counts, BinaryCounts { tp: 3, fp: 1, fn_: 2, tn: 4 });
        assert!(close(recall(&pred, &truth), 0.6));
        assert!(close(false_positive_rate(&pred, &truth), 0.2));
        assert!(close(precision(&pred, &truth), 0.75));
        assert!(close(counts.accuracy(), 0.7));
        assert!(close(accuracy(&pred, &truth), 0.7));
    }

    #[test]
    fn undefined_rates_are_nan() {
        assert!(recall(&[true, false], &[false, false]).is_nan());
        assert!(false_positive_rate(&[true, false], &[true, true]).is_nan());
        assert!(precision(&[false, false], &[true, false]).is_nan());
        assert!(accuracy::<u8>(&[], &[]).is_nan());
        assert_eq!(recall(&[false, false], &[true, false]), 0.0);
    }

    #[test]
    fn auc_table() {
        let truth = [false, false, true, true];
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &truth), 1.0);
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &truth), 0.0);
        assert_eq!(roc_auc(&[0.5; 4], &truth), 0.5);
        // Pairs (pos, neg): (0.35 vs 0.1) 1, (0.35 vs 0.4) 0, (0.8 vs 0.1) 1, (0.8 vs 0.4) 1 -> 3/4.
        assert_eq!(roc_auc(&[0.1, 0.4, 0.35, 0.8], &truth), 0.75);
        // A tie between a positive and a negative counts half: (0.4 vs 0.4) 0.5 + 1 + 1 + 1 -> 3.5/4.
        assert_eq!(roc_auc(&[0.1, 0.4, 0.4, 0.8], &truth), 0.875);
        assert!(roc_auc(&[0.1, 0.2], &[true, true]).is_nan());
        assert!(roc_auc(&[0.1, f64::NAN], &[true, false]).is_nan());
    }

    #[test]
    fn auc_matches_sklearn() {
        // Recorded with scikit-learn 1.9.1: roc_auc_score(truth, scores). The first by hand too:
        // positives 0.3, 0.6, 0.6 against negatives 0.1, 0.6, 0.2, 0.9: 0.3 beats 0.1 and 0.2 (2),
        // each 0.6 beats 0.1 and 0.2 and ties 0.6 (2.5 each) -> 7 / 12.
        let scores = [0.3, 0.6, 0.6, 0.1, 0.6, 0.2, 0.9];
        let truth = [true, true, true, false, false, false, false];
        assert!(close(roc_auc(&scores, &truth), 0.5833333333333334));
        let scores = [0.12, 0.5, 0.33, 0.9, 0.5, 0.71, 0.05, 0.5, 0.64, 0.2];
        let truth = [false, true, false, true, false, true, false, true, true, false];
        assert!(close(roc_auc(&scores, &truth), 0.9600000000000001));
    }

    #[test]
    fn kappa_matches_sklearn() {
        // Recorded with scikit-learn 1.9.1:
        // cohen_kappa_score(pred, truth, weights="linear", labels=[1, 2, 3, 4, 5]).
        let pred = [1, 2, 2, 3, 4, 5, 5, 3, 1, 4, 2, 3];
        let truth = [1, 3, 2, 3, 5, 4, 5, 2, 2, 4, 2, 1];
        assert!(close(linear_weighted_kappa(&pred, &truth, 5), 0.6111111111111112));
    }

    #[test]
    fn kappa_by_hand() {
        // pred = [1, 2, 3, 3], truth = [1, 3, 3, 2], 5 categories, w = |i - j| / 4.
        // Observed weighted disagreement: (0 + 1 + 0 + 1) / 4 = 0.5 (sum over discs of w).
        // Marginals: pred {1: 1, 2: 1, 3: 2}, truth {1: 1, 2: 1, 3: 2}; expected count of (i, j)
        // = pred_i * truth_j / 4. Weighted expected = sum w_ij * pred_i * truth_j / 4 over
        // (1,2) 1*1*0.25, (1,3) 1*2*0.5, (2,1) 1*1*0.25, (2,3) 1*2*0.25, (3,1) 2*1*0.5,
        // (3,2) 2*1*0.25 = 0.25 + 1 + 0.25 + 0.5 + 1 + 0.5 = 3.5, / 4 = 0.875.
        // kappa = 1 - 0.5 / 0.875 = 0.428571... (scikit-learn 1.9.1: 0.4285714285714286).
        let kappa = linear_weighted_kappa(&[1, 2, 3, 3], &[1, 3, 3, 2], 5);
        assert!(close(kappa, 1.0 - 0.5 / 0.875), "{kappa}");
        assert_eq!(linear_weighted_kappa(&[1, 2, 5], &[1, 2, 5], 5), 1.0);
        assert!(linear_weighted_kappa(&[3, 3], &[3, 3], 5).is_nan());
        assert!(linear_weighted_kappa(&[], &[], 5).is_nan());
    }

    #[test]
    fn percentile_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile_sorted(&v, 2.5), 1.1);
        assert!(close(percentile_sorted(&v, 97.5), 4.9));
        assert_eq!(percentile_sorted(&[7.0], 50.0), 7.0);
    }

    /// Per patient: (decision, truth) pairs of their discs.
    fn patients() -> Vec<Vec<(bool, bool)>> {
        (0..30).map(|p| (0..4).map(|d| ((p * 7 + d * 3) % 5 < 2, (p * 3 + d) % 4 < 2)).collect()).collect()
    }

    fn pooled_recall(sample: &[&Vec<(bool, bool)>]) -> f64 {
        let (pred, truth): (Vec<bool>, Vec<bool>) = sample.iter().flat_map(|p| p.iter().copied()).unzip();
        recall(&pred, &truth)
    }

    #[test]
    fn bootstrap_is_seeded_and_brackets_the_estimate() {
        let data = patients();
        let all: Vec<&Vec<(bool, bool)>> = data.iter().collect();
        let estimate = pooled_recall(&all);
        let a = bootstrap_ci(&data, pooled_recall, 500, 7);
        let b = bootstrap_ci(&data, pooled_recall, 500, 7);
        let c = bootstrap_ci(&data, pooled_recall, 500, 8);
        assert_eq!(a, b, "the same seed should give the same interval");
        assert_ne!(a, c, "different seeds should generally give different intervals");
        assert!(a.0 < estimate && estimate < a.1, "{a:?} should contain {estimate}");
        assert!(a.1 - a.0 < 0.5);
    }

    #[test]
    fn bootstrap_moves_patients_together() {
        // Every patient has two discs: resampling patients (not discs) keeps two per patient.
        let data: Vec<Vec<f64>> = vec![vec![1.0, 1.0], vec![0.0, 0.0], vec![1.0, 1.0], vec![0.0, 0.0]];
        let discs_per_patient = |s: &[&Vec<f64>]| s.iter().map(|p| p.len()).sum::<usize>() as f64 / s.len() as f64;
        assert_eq!(bootstrap_ci(&data, discs_per_patient, 100, 1), (2.0, 2.0));
        let mean = |s: &[&Vec<f64>]| {
            let v: Vec<f64> = s.iter().flat_map(|p| p.iter().copied()).collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        let (lo, hi) = bootstrap_ci(&data, mean, 200, 3);
        assert!((0.0..=1.0).contains(&lo) && lo < hi && hi <= 1.0, "{lo} {hi}");
    }

    #[test]
    fn bootstrap_edge_cases() {
        let empty: Vec<u8> = Vec::new();
        let (lo, hi) = bootstrap_ci(&empty, |_| 1.0, 100, 0);
        assert!(lo.is_nan() && hi.is_nan());
        let (lo, hi) = bootstrap_ci(&[1, 2, 3], |_| f64::NAN, 100, 0);
        assert!(lo.is_nan() && hi.is_nan());
        let (lo, hi) = bootstrap_ci(&[1, 2, 3], |_| 1.0, 0, 0);
        assert!(lo.is_nan() && hi.is_nan());
    }
}
