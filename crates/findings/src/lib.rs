//! spineseg-findings: lumbar disc abnormalities per disc level (issue 14), without a
//! deep-learning framework.
//!
//! - [`finding`]: the five findings ([`Finding`]), a disc's findings and a model's probabilities.
//! - [`gradings`]: SPIDER's `gradings.csv` and spineseg's findings CSV (read, write, detect).
//! - [`roi`]: a disc's region of interest cut from a sagittal slice, centred and levelled.
//! - [`roi_set`]: many images' disc ROIs on disk (`spineseg findings rois`), so training
//!   segments each image once.
//! - [`metrics`]: recall, FPR, precision, ROC AUC, accuracy, linear-weighted kappa, and a
//!   bootstrap over patients.
//! - [`evaluate`]: a prediction table against a reference table: [`FindingsSummary`].
//!
//! # Entry point for `spineseg evaluate-findings`
//! ```ignore
//! let pred = spineseg_findings::read_findings_csv(&pred_path)?;
//! let reference = spineseg_findings::read_reference(&ref_path)?; // SPIDER gradings or findings CSV
//! let options = EvaluationOptions { n_bootstrap: 1000, seed: 0, ..Default::default() };
//! let summary = spineseg_findings::evaluate_findings(&pred, &reference.rows, &options)?;
//! print!("{}", summary.to_table());
//! ```

pub mod error;
pub mod evaluate;
pub mod finding;
pub mod gradings;
pub mod metrics;
pub mod roi;
pub mod roi_set;

pub use error::{FindingsError, Result};
pub use evaluate::{evaluate_findings, Decisions, EvaluationOptions, FindingsSummary};
pub use finding::{DiscFindings, Finding, FindingProbabilities};
pub use gradings::{
    findings_csv_header, level_name, parse_disc_level, read_findings_csv, read_reference, read_spider_gradings,
    write_findings_csv, DiscGrading, FindingsRow, GradingsTable, ReferenceFormat, ReferenceTable,
};
pub use roi::{cut_disc_roi, DiscRoi, ImageDirections, RoiSpec, Slice2d};
