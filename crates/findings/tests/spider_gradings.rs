//! The real SPIDER gradings in ../shared/data/spider-gradings (not in the repository): the counts
//! its PROVENANCE.md states, and the table evaluated against itself. Skipped, with a message,
//! where the data is absent.

use spineseg_findings::{
    evaluate_findings, read_findings_csv, read_reference, read_spider_gradings, write_findings_csv, EvaluationOptions,
    Finding, ReferenceFormat,
};
use std::path::{Path, PathBuf};

/// `$SPINESEG_SHARED_DATA/spider-gradings/gradings.csv`, else `<workspace>/../shared/data/...`.
fn gradings_csv() -> Option<PathBuf> {
    let data = match std::env::var_os("SPINESEG_SHARED_DATA") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
    };
    let path = data.join("spider-gradings/gradings.csv");
    if path.is_file() {
        Some(path)
    } else {
        eprintln!("skipped: {} not found (set SPINESEG_SHARED_DATA)", path.display());
        None
    }
}

#[test]
fn counts_match_the_provenance() {
    let Some(path) = gradings_csv() else { return };
    let table = read_spider_gradings(&path).unwrap();
    // PROVENANCE.md of the DEV split: 1022 graded discs, one of them IVD label 0 without a level
    // (patient 152; no findings, Pfirrmann 1), which the class counts include.
    assert_eq!(table.discs.len(), 1021);
    assert_eq!(table.skipped_without_level, 1);
    let positives = |f: Finding| table.discs.iter().filter(|d| d.findings.has(f)).count();
    assert_eq!(positives(Finding::DiscHerniation), 37);
    assert_eq!(positives(Finding::DiscNarrowing), 379);
    assert_eq!(positives(Finding::DiscBulging), 525);
    assert_eq!(positives(Finding::Spondylolisthesis), 24);
    assert_eq!(positives(Finding::ModicChange), 3 + 317 + 5);
    let grades: Vec<usize> =
        (1..=5).map(|g| table.discs.iter().filter(|d| d.findings.pfirrmann == g).count()).collect();
    assert_eq!(grades, [186 - 1, 229, 277, 194, 136]);
    let l5s1 = table.discs.iter().filter(|d| d.level.0 == 124).count();
    assert_eq!(l5s1, 145);
}

#[test]
fn gradings_against_themselves() {
    let Some(path) = gradings_csv() else { return };
    let reference = read_reference(&path).unwrap();
    assert_eq!(reference.format, ReferenceFormat::SpiderGradings);
    let dir = tempfile::tempdir().unwrap();
    let as_findings = dir.path().join("findings.csv");
    write_findings_csv(&as_findings, &reference.rows).unwrap();
    let pred = read_findings_csv(&as_findings).unwrap();
    assert_eq!(pred, reference.rows);
    let options = EvaluationOptions { n_bootstrap: 20, seed: 3, ..Default::default() };
    let summary = evaluate_findings(&pred, &reference.rows, &options).unwrap();
    assert_eq!(summary.counts.matched, 1021);
    for f in &summary.overall.findings {
        assert_eq!(f.recall.value, 1.0, "{:?}", f.finding);
        assert_eq!(f.fpr.value, 0.0, "{:?}", f.finding);
    }
    assert_eq!(summary.overall.pfirrmann.kappa_linear.value, 1.0);
    assert_eq!(summary.per_level.len(), 9);
    assert_eq!(summary.per_level.first().unwrap().level, "T9/T10");
    assert_eq!(summary.per_level.last().unwrap().level, "L5/S1");
}
