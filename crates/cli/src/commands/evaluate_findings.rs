//! `spineseg evaluate-findings`: per-level disc findings (issue 14) against a reference.

use crate::Outcome;
use anyhow::{Context, Result};
use spineseg_findings::{evaluate_findings, read_findings_csv, read_reference, EvaluationOptions, ReferenceFormat};
use std::path::PathBuf;

/// Compare predicted disc findings with a reference, per disc level: recall, false-positive rate,
/// precision and ROC AUC of disc herniation, narrowing, bulging, spondylolisthesis and Modic
/// change, their macro average, Pfirrmann accuracy and linear-weighted kappa, overall and per
/// level, with 95 % bootstrap intervals over patients. Prints a table; -o writes the summary JSON.
#[derive(clap::Args)]
pub struct EvaluateFindingsArgs {
    /// Predicted findings: a spineseg findings CSV (case, level, found, p_*, 0/1 decisions,
    /// pfirrmann_grade), as `spineseg diagnose` writes it. The 0/1 columns are the decisions.
    #[arg(long)]
    pub pred: PathBuf,
    /// Reference: SPIDER's gradings.csv (spider-gradings) or a findings CSV, recognised by its
    /// header. Rows are matched by (case, level); SPIDER's patient number is the case.
    #[arg(long = "ref")]
    pub reference: PathBuf,
    /// Write the summary (every number of the table and the per-level tables) as JSON here.
    #[arg(short = 'o', long = "out")]
    pub out: Option<PathBuf>,
    /// Bootstrap resamples over patients for the 95 % intervals (0: no intervals).
    #[arg(long = "bootstrap", default_value_t = 1000)]
    pub n_bootstrap: usize,
    /// Seed of the bootstrap (the same seed gives the same intervals).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: EvaluateFindingsArgs) -> Result<Outcome> {
    let pred = read_findings_csv(&args.pred)?;
    let reference = read_reference(&args.reference)?;
    match reference.format {
        ReferenceFormat::SpiderGradings => eprintln!(
            "reference {}: SPIDER gradings, {} discs; rows without a level name (IVD label 0) skipped: {}",
            args.reference.display(),
            reference.rows.len(),
            reference.skipped_without_level
        ),
        ReferenceFormat::FindingsCsv => {
            eprintln!("reference {}: findings CSV, {} rows", args.reference.display(), reference.rows.len())
        }
    }
    let options = EvaluationOptions { n_bootstrap: args.n_bootstrap, seed: args.seed, ..EvaluationOptions::default() };
    let summary = evaluate_findings(&pred, &reference.rows, &options)
        .with_context(|| format!("evaluating {} against {}", args.pred.display(), args.reference.display()))?;
    print!("{}", summary.to_table());
    if let Some(out) = &args.out {
        spineseg_io::json::write_json(out, &summary)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(Outcome::Success)
}
