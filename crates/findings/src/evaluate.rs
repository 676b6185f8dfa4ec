//! A findings prediction table against a reference table: per finding recall, FPR, precision and
//! ROC AUC, their macro averages, Pfirrmann accuracy and linear-weighted kappa, overall and per
//! disc level, each with a 95 % bootstrap interval over patients (`spineseg evaluate-findings`).
//!
//! Rows are matched by (case, level), case names compared exactly. Reference levels that the
//! prediction reports as not found are counted (`missing`) and left out of the metrics, as are
//! reference levels without a prediction row and predicted levels without a reference row.
//! Decisions are the prediction's 0/1 columns (the model's thresholds were applied when it wrote
//! them) unless [`Decisions::Thresholds`] says otherwise; AUC uses the `p_` columns and is NaN
//! (shown "n/a") unless every matched prediction has them.

use crate::error::{FindingsError, Result};
use crate::finding::Finding;
use crate::gradings::{level_name, FindingsRow};
use crate::metrics::{accuracy, bootstrap_cis, linear_weighted_kappa, roc_auc, BinaryCounts};
use serde::{Deserialize, Serialize};
use spineseg_anatomy::StructureId;
use std::collections::{BTreeMap, HashMap};

/// Where the binary decisions come from.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decisions {
    /// The prediction's 0/1 columns.
    #[default]
    PredictionColumns,
    /// `p >= threshold` per finding (in [`Finding::ALL`] order) on the prediction's `p_`
    /// columns; every matched prediction must have them.
    Thresholds([f32; 5]),
}

/// How to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvaluationOptions {
    pub decisions: Decisions,
    /// Bootstrap resamples (over patients) per interval; 0 = no intervals (NaN).
    pub n_bootstrap: usize,
    pub seed: u64,
}

impl Default for EvaluationOptions {
    fn default() -> Self {
        EvaluationOptions { decisions: Decisions::PredictionColumns, n_bootstrap: 1000, seed: 0 }
    }
}

/// A value with its 95 % bootstrap interval; NaN (JSON null) when undefined.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    #[serde(with = "nan_as_null")]
    pub value: f64,
    #[serde(with = "nan_as_null")]
    pub lo: f64,
    #[serde(with = "nan_as_null")]
    pub hi: f64,
}

impl Estimate {
    /// "0.812 [0.74, 0.88]", "n/a", or "0.812 [n/a]" without an interval.
    pub fn format(&self) -> String {
        if self.value.is_nan() {
            return "n/a".to_string();
        }
        if self.lo.is_nan() || self.hi.is_nan() {
            return format!("{:.3} [n/a]", self.value);
        }
        format!("{:.3} [{:.2}, {:.2}]", self.value, self.lo, self.hi)
    }
}

/// JSON has no NaN: undefined values are written as null and read back as NaN.
mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        if value.is_nan() {
            serializer.serialize_none()
        } else {
            serializer.serialize_some(value)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
    }
}

/// One finding's detection metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingMetrics {
    pub finding: Finding,
    /// Reference positives and negatives among the matched discs.
    pub positives: usize,
    pub negatives: usize,
    pub predicted_positives: usize,
    pub recall: Estimate,
    pub fpr: Estimate,
    pub precision: Estimate,
    pub auc: Estimate,
}

/// The mean over the five findings of each metric (NaN values skipped), with its interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MacroMetrics {
    pub recall: Estimate,
    pub fpr: Estimate,
    pub precision: Estimate,
    pub auc: Estimate,
}

/// Pfirrmann grading agreement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PfirrmannMetrics {
    pub accuracy: Estimate,
    /// Cohen's kappa, linear weights over grades 1..=5.
    pub kappa_linear: Estimate,
}

/// Metrics over one set of matched discs (all of them, or one level's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSummary {
    pub discs: usize,
    pub patients: usize,
    pub findings: Vec<FindingMetrics>,
    pub macro_average: MacroMetrics,
    pub pfirrmann: PfirrmannMetrics,
}

/// One disc level's metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelSummary {
    /// Short ontology name, "L4/L5".
    pub level: String,
    pub level_id: StructureId,
    #[serde(flatten)]
    pub summary: GroupSummary,
}

/// How the rows of the two tables matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MatchCounts {
    /// Reference rows with findings (the levels to evaluate).
    pub reference_levels: usize,
    /// Reference levels the prediction found: the discs the metrics are over.
    pub matched: usize,
    /// Reference levels the prediction reported as not found (excluded from the metrics).
    pub missing: usize,
    /// Reference levels without any prediction row (excluded from the metrics).
    pub not_predicted: usize,
    /// Levels the prediction found that the reference does not grade.
    pub unmatched_predictions: usize,
}

/// The result of [`evaluate_findings`]; `summary.json` of `spineseg evaluate-findings`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingsSummary {
    pub decisions: Decisions,
    pub n_bootstrap: usize,
    pub seed: u64,
    /// Confidence of the intervals (percentile bootstrap over patients).
    pub confidence: f64,
    pub counts: MatchCounts,
    pub overall: GroupSummary,
    /// Levels from superior to inferior (ontology order).
    pub per_level: Vec<LevelSummary>,
}

/// A matched disc: what the prediction decided and scored, and what the reference says.
#[derive(Debug, Clone)]
struct MatchedDisc {
    level: StructureId,
    decision: [bool; 5],
    score: Option<[f64; 5]>,
    truth: [bool; 5],
    grade_pred: u8,
    grade_truth: u8,
}

/// Per finding [recall, fpr, precision, auc], then the macro [recall, fpr, precision, auc], then
/// Pfirrmann [accuracy, kappa].
const STATISTICS: usize = 5 * 4 + 4 + 2;

fn nan_mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, count) = values.filter(|v| !v.is_nan()).fold((0.0, 0usize), |(s, c), v| (s + v, c + 1));
    if count == 0 {
        f64::NAN
    } else {
        sum / count as f64
    }
}

fn group_statistics(patients: &[&Vec<MatchedDisc>]) -> Vec<f64> {
    let discs: Vec<&MatchedDisc> = patients.iter().flat_map(|p| p.iter()).collect();
    let mut out = Vec::with_capacity(STATISTICS);
    let mut per_finding = [[f64::NAN; 4]; 5];
    let scored = discs.iter().all(|d| d.score.is_some());
    for (f, metrics) in per_finding.iter_mut().enumerate() {
        let pred: Vec<bool> = discs.iter().map(|d| d.decision[f]).collect();
        let truth: Vec<bool> = discs.iter().map(|d| d.truth[f]).collect();
        let counts = BinaryCounts::new(&pred, &truth);
        let auc = if scored {
            let scores: Vec<f64> = discs.iter().map(|d| d.score.expect("every disc is scored here")[f]).collect();
            roc_auc(&scores, &truth)
        } else {
            f64::NAN
        };
        *metrics = [counts.recall(), counts.fpr(), counts.precision(), auc];
        out.extend_from_slice(metrics);
    }
    for m in 0..4 {
        out.push(nan_mean(per_finding.iter().map(|v| v[m])));
    }
    let grade_pred: Vec<u8> = discs.iter().map(|d| d.grade_pred).collect();
    let grade_truth: Vec<u8> = discs.iter().map(|d| d.grade_truth).collect();
    out.push(accuracy(&grade_pred, &grade_truth));
    out.push(linear_weighted_kappa(&grade_pred, &grade_truth, 5));
    out
}

fn summarise_group(patients: &[Vec<MatchedDisc>], options: &EvaluationOptions) -> GroupSummary {
    let everyone: Vec<&Vec<MatchedDisc>> = patients.iter().collect();
    let values = group_statistics(&everyone);
    let intervals = bootstrap_cis(patients, group_statistics, options.n_bootstrap, options.seed);
    let estimate = |i: usize| Estimate { value: values[i], lo: intervals[i].0, hi: intervals[i].1 };
    let discs: Vec<&MatchedDisc> = patients.iter().flatten().collect();
    let findings = Finding::ALL
        .iter()
        .map(|&finding| {
            let f = finding.index();
            let positives = discs.iter().filter(|d| d.truth[f]).count();
            FindingMetrics {
                finding,
                positives,
                negatives: discs.len() - positives,
                predicted_positives: discs.iter().filter(|d| d.decision[f]).count(),
                recall: estimate(4 * f),
                fpr: estimate(4 * f + 1),
                precision: estimate(4 * f + 2),
                auc: estimate(4 * f + 3),
            }
        })
        .collect();
    GroupSummary {
        discs: discs.len(),
        patients: patients.len(),
        findings,
        macro_average: MacroMetrics {
            recall: estimate(20),
            fpr: estimate(21),
            precision: estimate(22),
            auc: estimate(23),
        },
        pfirrmann: PfirrmannMetrics { accuracy: estimate(24), kappa_linear: estimate(25) },
    }
}

fn index_rows<'a>(rows: &'a [FindingsRow], what: &str) -> Result<HashMap<(&'a str, StructureId), &'a FindingsRow>> {
    let mut index = HashMap::with_capacity(rows.len());
    for row in rows {
        if index.insert((row.case.as_str(), row.level), row).is_some() {
            return Err(FindingsError::InvalidInput(format!(
                "the {what} has two rows for case '{}' level {}",
                row.case,
                level_name(row.level)
            )));
        }
    }
    Ok(index)
}

/// Evaluates `pred` against `reference` (see the module documentation for matching and what is
/// left out). Errors: a (case, level) twice in one table; `Decisions::Thresholds` with a matched
/// prediction that has no probabilities; no (case, level) of the prediction in the reference at
/// all (most likely case names that differ, e.g. "1" against "spider_1").
pub fn evaluate_findings(
    pred: &[FindingsRow],
    reference: &[FindingsRow],
    options: &EvaluationOptions,
) -> Result<FindingsSummary> {
    let pred_index = index_rows(pred, "prediction")?;
    let reference_index = index_rows(reference, "reference")?;
    if !pred.is_empty() && !reference.is_empty() && !pred_index.keys().any(|k| reference_index.contains_key(k)) {
        return Err(FindingsError::InvalidInput(format!(
            "no (case, level) of the prediction is in the reference: prediction cases look like '{}', reference cases like '{}'",
            pred[0].case, reference[0].case
        )));
    }
    let mut counts = MatchCounts::default();
    // Patients in sorted order, so the bootstrap draws the same patients whatever the row order.
    let mut patients: BTreeMap<&str, Vec<MatchedDisc>> = BTreeMap::new();
    for reference_row in reference {
        let Some(truth) = &reference_row.findings else { continue };
        counts.reference_levels += 1;
        let Some(pred_row) = pred_index.get(&(reference_row.case.as_str(), reference_row.level)) else {
            counts.not_predicted += 1;
            continue;
        };
        let Some(found) = &pred_row.findings else {
            counts.missing += 1;
            continue;
        };
        counts.matched += 1;
        let score = pred_row.probabilities.map(|p| p.p.map(f64::from));
        let decision = match options.decisions {
            Decisions::PredictionColumns => found.present,
            Decisions::Thresholds(thresholds) => {
                let probabilities = pred_row.probabilities.ok_or_else(|| {
                    FindingsError::InvalidInput(format!(
                        "thresholds need probabilities, but the prediction for case '{}' level {} has none",
                        pred_row.case,
                        level_name(pred_row.level)
                    ))
                })?;
                probabilities.decide(thresholds).present
            }
        };
        patients.entry(reference_row.case.as_str()).or_default().push(MatchedDisc {
            level: reference_row.level,
            decision,
            score,
            truth: truth.present,
            grade_pred: found.pfirrmann,
            grade_truth: truth.pfirrmann,
        });
    }
    counts.unmatched_predictions = pred
        .iter()
        .filter(|row| row.found() && !reference_index.get(&(row.case.as_str(), row.level)).is_some_and(|r| r.found()))
        .count();

    let everyone: Vec<Vec<MatchedDisc>> = patients.into_values().collect();
    let overall = summarise_group(&everyone, options);
    let mut levels: Vec<StructureId> = everyone.iter().flatten().map(|d| d.level).collect();
    levels.sort();
    levels.dedup();
    let per_level = levels
        .into_iter()
        .map(|level| {
            let patients: Vec<Vec<MatchedDisc>> = everyone
                .iter()
                .map(|discs| discs.iter().filter(|d| d.level == level).cloned().collect::<Vec<_>>())
                .filter(|discs| !discs.is_empty())
                .collect();
            LevelSummary { level: level_name(level), level_id: level, summary: summarise_group(&patients, options) }
        })
        .collect();
    Ok(FindingsSummary {
        decisions: options.decisions,
        n_bootstrap: options.n_bootstrap,
        seed: options.seed,
        confidence: 0.95,
        counts,
        overall,
        per_level,
    })
}

impl FindingsSummary {
    /// A plain-text report: one row per finding, the macro average and Pfirrmann rows, a compact
    /// table per level, and how the rows matched.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let o = &self.overall;
        out.push_str(&format!(
            "{} discs of {} patients; 95 % intervals from {} bootstrap resamples over patients (seed {})\n",
            o.discs, o.patients, self.n_bootstrap, self.seed
        ));
        out.push_str(&format!(
            "{:<18} {:>5} {:>5}  {:<20} {:<20} {:<20} {:<20}\n",
            "finding", "pos", "neg", "recall", "FPR", "precision", "AUC"
        ));
        for f in &o.findings {
            out.push_str(&format!(
                "{:<18} {:>5} {:>5}  {:<20} {:<20} {:<20} {:<20}\n",
                f.finding.name(),
                f.positives,
                f.negatives,
                f.recall.format(),
                f.fpr.format(),
                f.precision.format(),
                f.auc.format()
            ));
        }
        let m = &o.macro_average;
        out.push_str(&format!(
            "{:<18} {:>5} {:>5}  {:<20} {:<20} {:<20} {:<20}\n",
            "macro average",
            "",
            "",
            m.recall.format(),
            m.fpr.format(),
            m.precision.format(),
            m.auc.format()
        ));
        out.push_str(&format!(
            "{:<18} {:>11}  accuracy {}   kappa (linear) {}\n",
            "Pfirrmann grade",
            format!("n={}", o.discs),
            o.pfirrmann.accuracy.format(),
            o.pfirrmann.kappa_linear.format()
        ));
        if !self.per_level.is_empty() {
            out.push('\n');
            out.push_str(&format!(
                "{:<8} {:>5}  {:<20} {:<20} {:<20} {:<20} {:<20}\n",
                "level",
                "discs",
                "recall (macro)",
                "FPR (macro)",
                "AUC (macro)",
                "Pfirrmann accuracy",
                "kappa (linear)"
            ));
            for level in &self.per_level {
                let s = &level.summary;
                out.push_str(&format!(
                    "{:<8} {:>5}  {:<20} {:<20} {:<20} {:<20} {:<20}\n",
                    level.level,
                    s.discs,
                    s.macro_average.recall.format(),
                    s.macro_average.fpr.format(),
                    s.macro_average.auc.format(),
                    s.pfirrmann.accuracy.format(),
                    s.pfirrmann.kappa_linear.format()
                ));
            }
        }
        let c = &self.counts;
        out.push('\n');
        out.push_str(&format!(
            "reference levels: {}; matched {}, reported not found {} and without a prediction row {} (both excluded); predicted levels without a reference: {}\n",
            c.reference_levels, c.matched, c.missing, c.not_predicted, c.unmatched_predictions
        ));
        // Trailing spaces from the padded last column help nobody.
        out.lines().map(|l| l.trim_end()).collect::<Vec<_>>().join("\n") + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::{DiscFindings, FindingProbabilities};

    const L4L5: StructureId = StructureId(123);
    const L5S1: StructureId = StructureId(124);

    fn row(case: &str, level: StructureId, present: [bool; 5], pfirrmann: u8, p: Option<[f32; 5]>) -> FindingsRow {
        FindingsRow {
            case: case.to_string(),
            level,
            findings: Some(DiscFindings { present, pfirrmann }),
            probabilities: p.map(|p| FindingProbabilities { p, pfirrmann_probabilities: [0.2; 5] }),
        }
    }

    const NONE: [bool; 5] = [false; 5];
    const HERNIATION: [bool; 5] = [true, false, false, false, false];

    /// Reference: herniation at 4 discs of 10 (patients a..e, two levels each).
    fn reference() -> Vec<FindingsRow> {
        let herniated = ["a", "b", "c", "d"];
        ["a", "b", "c", "d", "e"]
            .iter()
            .flat_map(|&case| {
                let h = if herniated.contains(&case) { HERNIATION } else { NONE };
                [row(case, L4L5, h, 3, None), row(case, L5S1, NONE, 4, None)]
            })
            .collect()
    }

    #[test]
    fn perfect_prediction() {
        let reference = reference();
        let summary =
            evaluate_findings(&reference, &reference, &EvaluationOptions { n_bootstrap: 50, ..Default::default() })
                .unwrap();
        let h = &summary.overall.findings[0];
        assert_eq!((h.positives, h.negatives, h.predicted_positives), (4, 6, 4));
        assert_eq!(h.recall.value, 1.0);
        assert_eq!(h.fpr.value, 0.0);
        assert_eq!((h.recall.lo, h.recall.hi), (1.0, 1.0));
        assert!(h.auc.value.is_nan(), "no probabilities, no AUC");
        assert!(summary.overall.findings[1].recall.value.is_nan(), "no narrowing anywhere");
        assert_eq!(summary.overall.findings[1].fpr.value, 0.0);
        // Macro recall skips the undefined ones: only herniation has positives.
        assert_eq!(summary.overall.macro_average.recall.value, 1.0);
        assert_eq!(summary.overall.pfirrmann.accuracy.value, 1.0);
        assert_eq!(summary.overall.pfirrmann.kappa_linear.value, 1.0);
        assert_eq!(
            summary.counts,
            MatchCounts { reference_levels: 10, matched: 10, missing: 0, not_predicted: 0, unmatched_predictions: 0 }
        );
        assert_eq!(summary.per_level.len(), 2);
        assert_eq!(summary.per_level[0].level, "L4/L5");
        assert_eq!(summary.per_level[0].summary.discs, 5);
        assert_eq!(summary.per_level[1].summary.findings[0].positives, 0);
    }

    /// Prediction with a hand-checked table for herniation over the matched discs: patient a
    /// L4/L5 reported not found, b L5/S1 missing entirely, an extra L3/L4 for c.
    fn prediction() -> Vec<FindingsRow> {
        let mut rows = vec![
            FindingsRow::not_found("a", L4L5),
            row("a", L5S1, NONE, 4, Some([0.1, 0.0, 0.0, 0.0, 0.0])),
            row("b", L4L5, HERNIATION, 2, Some([0.9, 0.0, 0.0, 0.0, 0.0])),
            row("c", L4L5, NONE, 3, Some([0.4, 0.0, 0.0, 0.0, 0.0])),
            row("c", L5S1, HERNIATION, 4, Some([0.6, 0.0, 0.0, 0.0, 0.0])),
            row("c", StructureId(122), HERNIATION, 4, Some([0.6, 0.0, 0.0, 0.0, 0.0])),
            row("d", L4L5, HERNIATION, 3, Some([0.8, 0.0, 0.0, 0.0, 0.0])),
            row("d", L5S1, NONE, 5, Some([0.3, 0.0, 0.0, 0.0, 0.0])),
            row("e", L4L5, NONE, 3, Some([0.2, 0.0, 0.0, 0.0, 0.0])),
            row("e", L5S1, NONE, 4, Some([0.1, 0.0, 0.0, 0.0, 0.0])),
        ];
        rows.reverse();
        rows
    }

    #[test]
    fn hand_checked_prediction() {
        let summary = evaluate_findings(
            &prediction(),
            &reference(),
            &EvaluationOptions { n_bootstrap: 200, seed: 5, ..Default::default() },
        )
        .unwrap();
        assert_eq!(
            summary.counts,
            MatchCounts { reference_levels: 10, matched: 8, missing: 1, not_predicted: 1, unmatched_predictions: 1 }
        );
        // Matched herniation truth/decision: b L4/L5 1/1, c L4/L5 1/0, c L5/S1 0/1, d L4/L5 1/1,
        // a L5/S1, d L5/S1, e both 0/0: tp 2, fn 1, fp 1, tn 4.
        let h = &summary.overall.findings[0];
        assert_eq!((h.positives, h.negatives, h.predicted_positives), (3, 5, 3));
        assert!((h.recall.value - 2.0 / 3.0).abs() < 1e-12);
        assert!((h.fpr.value - 0.2).abs() < 1e-12);
        assert!((h.precision.value - 2.0 / 3.0).abs() < 1e-12);
        // Scores of positives 0.9, 0.4, 0.8 against negatives 0.1, 0.6, 0.3, 0.2, 0.1: 0.9 and
        // 0.8 beat all five, 0.4 beats four -> 14 / 15.
        assert!((h.auc.value - 14.0 / 15.0).abs() < 1e-12);
        assert!(h.recall.lo <= h.recall.value && h.recall.value <= h.recall.hi);
        // Pfirrmann: pred 4,2,3,4,3,5,3,4 vs truth 4,3,3,4,3,4,3,4 -> 6 of 8.
        assert_eq!(summary.overall.pfirrmann.accuracy.value, 0.75);
        // Same inputs, same seed: the same summary.
        let again = evaluate_findings(
            &prediction(),
            &reference(),
            &EvaluationOptions { n_bootstrap: 200, seed: 5, ..Default::default() },
        )
        .unwrap();
        // (Compared as JSON: NaN != NaN in PartialEq.)
        assert_eq!(serde_json::to_string(&summary).unwrap(), serde_json::to_string(&again).unwrap());
    }

    #[test]
    fn thresholds_and_errors() {
        let options = EvaluationOptions { decisions: Decisions::Thresholds([0.5; 5]), n_bootstrap: 0, seed: 0 };
        let summary = evaluate_findings(&prediction(), &reference(), &options).unwrap();
        // At 0.5 the decisions equal the columns here.
        assert!((summary.overall.findings[0].recall.value - 2.0 / 3.0).abs() < 1e-12);
        assert!(summary.overall.findings[0].recall.lo.is_nan(), "no resamples, no interval");
        let message = evaluate_findings(&reference(), &reference(), &options).unwrap_err().to_string();
        assert!(message.contains("probabilities"), "{message}");

        let mut twice = reference();
        twice.push(twice[0].clone());
        let message = evaluate_findings(&twice, &reference(), &EvaluationOptions::default()).unwrap_err().to_string();
        assert!(message.contains("two rows") && message.contains("'a'") && message.contains("L4/L5"), "{message}");

        let renamed: Vec<FindingsRow> =
            reference().into_iter().map(|r| FindingsRow { case: format!("spider_{}", r.case), ..r }).collect();
        let message = evaluate_findings(&renamed, &reference(), &EvaluationOptions::default()).unwrap_err().to_string();
        assert!(message.contains("spider_a"), "{message}");
    }

    #[test]
    fn json_and_table() {
        let summary = evaluate_findings(
            &prediction(),
            &reference(),
            &EvaluationOptions { n_bootstrap: 100, seed: 1, ..Default::default() },
        )
        .unwrap();
        let json = serde_json::to_string_pretty(&summary).unwrap();
        assert!(json.contains("\"disc_herniation\""));
        // Undefined values are null in JSON and NaN again when read back.
        let back: FindingsSummary = serde_json::from_str(&json).unwrap();
        assert!(back.overall.findings[1].recall.value.is_nan());
        assert_eq!(back.overall.findings[0].recall, summary.overall.findings[0].recall);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(value["overall"]["findings"][1]["recall"]["value"].is_null());
        assert_eq!(value["per_level"][0]["level"], "L4/L5");

        let table = summary.to_table();
        let herniation = table.lines().find(|l| l.starts_with("disc herniation")).unwrap();
        assert!(herniation.contains("0.667 ["), "{herniation}");
        assert!(herniation.contains("0.200 ["), "{herniation}");
        assert!(herniation.contains("0.933 ["), "{herniation}");
        assert!(table.lines().any(|l| l.starts_with("macro average")));
        assert!(table.lines().any(|l| l.starts_with("Pfirrmann grade") && l.contains("accuracy 0.750")));
        assert!(table.contains("reported not found 1"));
        assert!(table.lines().any(|l| l.starts_with("L5/S1")));
        assert!(table.lines().all(|l| l == l.trim_end()));
        assert_eq!(Estimate { value: 0.8123, lo: 0.7412, hi: 0.8806 }.format(), "0.812 [0.74, 0.88]");
        assert_eq!(Estimate { value: f64::NAN, lo: f64::NAN, hi: f64::NAN }.format(), "n/a");
    }
}
