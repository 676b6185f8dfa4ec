//! Output of an evaluation: `metrics.csv`, `summary.json`, `metrics_per_slice.csv` (slice-wise
//! mode only) and a plain-text table for the terminal.
//!
//! `metrics.csv` has one row per case and structure with exactly the columns of [`CSV_HEADER`].
//! `hd95_mm` and `hd95_px` are MONAI's definition (max of the directed 95th percentiles),
//! `hd95_pooled_mm` medpy's (pooled percentile); the other `_px` values are in `summary.json`.
//! Non-finite values are written `nan` and `inf`; numbers use the shortest representation that
//! reads back to the same `f64`.

use crate::error::Result;
use crate::evaluate::PairMetrics;
use crate::folder::EvaluationReport;
use crate::summary::Stats;
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

/// The header of `metrics.csv`.
pub const CSV_HEADER: &str =
    "case,label,structure,dice,iou,hd_mm,hd95_mm,hd95_pooled_mm,hd95_px,assd_mm,nsd,ref_voxels,pred_voxels";

/// A number as written in the CSV: `nan`, `inf`, `-inf` or the shortest round-trip decimal.
pub fn format_number(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else {
        format!("{v}")
    }
}

/// Quotes a CSV field when it holds a comma, quote or line break (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_metrics(m: &PairMetrics) -> String {
    [m.dice, m.iou, m.hd_mm, m.hd95_mm, m.hd95_pooled_mm, m.hd95_px, m.assd_mm, m.nsd].map(format_number).join(",")
        + &format!(",{},{}", m.ref_voxels, m.pred_voxels)
}

/// Writes `metrics.csv` content.
pub fn write_metrics_csv(w: &mut dyn Write, report: &EvaluationReport) -> std::io::Result<()> {
    writeln!(w, "{CSV_HEADER}")?;
    for case in &report.cases {
        for s in &case.structures {
            writeln!(
                w,
                "{},{},{},{}",
                csv_field(&case.case),
                s.label,
                csv_field(&s.structure),
                csv_metrics(&s.metrics)
            )?;
        }
    }
    Ok(())
}

/// Writes `metrics_per_slice.csv` content: the columns of `metrics.csv` with `slice` after `label`.
pub fn write_slice_csv(w: &mut dyn Write, report: &EvaluationReport) -> std::io::Result<()> {
    writeln!(w, "{}", CSV_HEADER.replacen("label,", "label,slice,", 1))?;
    for case in &report.cases {
        for s in &case.structures {
            for slice in &s.slices {
                writeln!(
                    w,
                    "{},{},{},{},{}",
                    csv_field(&case.case),
                    s.label,
                    slice.slice,
                    csv_field(&s.structure),
                    csv_metrics(&slice.metrics)
                )?;
            }
        }
    }
    Ok(())
}

/// Writes `dir/metrics.csv`, `dir/summary.json` and, in slice-wise mode, `dir/metrics_per_slice.csv`
/// (each atomically); creates `dir` when missing.
pub fn write_report(dir: &Path, report: &EvaluationReport) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| spineseg_io::IoError::Os { path: dir.to_path_buf(), source })?;
    spineseg_io::atomic::write_atomically(&dir.join("metrics.csv"), |w| write_metrics_csv(w, report))?;
    spineseg_io::atomic::write_atomically(&dir.join("summary.json"), |w| {
        serde_json::to_writer_pretty(&mut *w, &report.summary).map_err(std::io::Error::other)?;
        writeln!(w)
    })?;
    if report.options.slice_axis.is_some() {
        spineseg_io::atomic::write_atomically(&dir.join("metrics_per_slice.csv"), |w| write_slice_csv(w, report))?;
    }
    Ok(())
}

fn mean_std(s: &Stats, width: usize) -> String {
    let text = if s.n == 0 { "-".to_string() } else { format!("{:.3} ± {:.3}", s.mean, s.std) };
    format!("{text:>width$}")
}

/// A plain-text table: one line per structure (mean ± std over cases with finite values) and one
/// over structures, with the empty-mask counts; SPIDER detection when matching was on.
pub fn format_table(report: &EvaluationReport) -> String {
    let s = &report.summary;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} cases, {}, surface Dice tolerance {} mm; distances in mm unless _px",
        s.n_cases, s.mode, s.tolerance_mm
    );
    let columns = ["dice", "iou", "hd95_mm", "hd95_pooled_mm", "hd95_px", "assd_mm", "nsd"];
    let _ = write!(out, "{:<16}{:>4}", "structure", "n");
    for c in columns {
        let _ = write!(out, "{c:>17}");
    }
    let _ = writeln!(out, "{:>22}{:>6}", "empty both/pred/ref", "inf");
    for st in &s.per_structure {
        let name: String = st.structure.chars().take(15).collect();
        let _ = write!(out, "{name:<16}{:>4}", st.n_cases);
        for c in columns {
            out.push_str(&mean_std(&st.metrics[c], 17));
        }
        let inf = st.metrics["hd95_mm"].n_inf;
        let empty = format!("{}/{}/{}", st.empty.both_empty, st.empty.pred_empty, st.empty.ref_empty);
        let _ = write!(out, "{empty:>22}{inf:>6}");
        if let Some(d) = &st.detection {
            let _ = write!(out, "  detected {}/{}", d.detected, d.reference_structures);
        }
        out.push('\n');
    }
    if !s.over_structures.is_empty() {
        let _ = write!(out, "{:<16}{:>4}", "over structures", s.per_structure.len());
        for c in columns {
            out.push_str(&mean_std(&s.over_structures[c], 17));
        }
        let empty = format!("{}/{}/{}", s.empty.both_empty, s.empty.pred_empty, s.empty.ref_empty);
        let _ = writeln!(out, "{empty:>22}");
    }
    if let Some(d) = &s.detection {
        let _ = writeln!(
            out,
            "detection rate {:.3} ({} of {} reference structures; Dice < 0.1 counts as missed); {} unmatched predicted structures",
            d.rate,
            d.detected,
            d.reference_structures,
            s.unmatched_pred_structures.unwrap_or(0)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluate::{evaluate_case, EvaluationOptions};
    use crate::summary::summarise;
    use spineseg_io::{Geometry, Label, Volume};
    use std::collections::BTreeMap;

    fn report() -> EvaluationReport {
        let mut r = vec![0 as Label; 8];
        let mut p = vec![0 as Label; 8];
        r[0] = 1;
        p[1] = 1;
        r[4] = 2;
        let rv = Volume::new([2, 2, 2], r, Geometry::default()).unwrap();
        let pv = Volume::new([2, 2, 2], p, Geometry::default()).unwrap();
        let options = EvaluationOptions::default();
        let names = BTreeMap::from([(1, "L1".to_string()), (2, "disc, L1-L2".to_string())]);
        let case = evaluate_case("case_1", &pv, &rv, &[1, 2, 3], &options, &names).unwrap();
        let summary = summarise(std::slice::from_ref(&case), &options);
        EvaluationReport { options, cases: vec![case], summary }
    }

    #[test]
    fn csv_has_the_exact_header_and_writes_nan_and_inf() {
        let mut buf = Vec::new();
        write_metrics_csv(&mut buf, &report()).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(lines[1], "case_1,1,L1,0,0,1,1,1,1,1,1,1,1");
        assert_eq!(lines[2], "case_1,2,\"disc, L1-L2\",0,0,inf,inf,inf,inf,inf,0,1,0");
        assert_eq!(lines[3], "case_1,3,label_3,nan,nan,nan,nan,nan,nan,nan,nan,0,0");
    }

    #[test]
    fn report_files_and_table() {
        let dir = tempfile::tempdir().unwrap();
        let r = report();
        write_report(dir.path(), &r).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap()).unwrap();
        assert_eq!(json["empty"]["pred_empty"], 1);
        assert_eq!(json["empty"]["both_empty"], 1);
        // Label 2's HD95 is infinite: no statistics (null), one inf counted.
        let l2 = &json["per_structure"][1]["metrics"]["hd95_mm"];
        assert!(l2["mean"].is_null());
        assert_eq!(l2["n_inf"], 1);
        assert!(!dir.path().join("metrics_per_slice.csv").exists());
        let table = format_table(&r);
        assert!(table.contains("L1") && table.contains("over structures"), "{table}");
    }
}
