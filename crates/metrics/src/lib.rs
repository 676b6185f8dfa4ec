//! spineseg-metrics: segmentation metrics that match the reference libraries.
//!
//! - [`mask`]: binary masks ([`Mask`], 2D or 3D) and the [`Connectivity`] of surfaces.
//! - [`edt`]: exact Euclidean distance transform with anisotropic spacing, linear time.
//! - [`surface`]: boundary voxels as medpy and MONAI define them.
//! - [`overlap`]: Dice and IoU.
//! - [`distance`]: surface distances; Hausdorff, HD95 (MONAI's and medpy's), ASSD, surface Dice.
//! - [`evaluate`]: all metrics of a mask pair ([`compare_masks`]), of a labelled case, of folders.
//! - [`summary`]: mean, std and median per structure and over structures; empty-mask counts.
//! - [`report`]: `metrics.csv`, `summary.json` and a plain-text table.
//! - [`structures`]: what a segmentation holds without a reference (volumes, slices, flags).
//!
//! Units live in names: `_mm` distances use the voxel spacing, `_px` distances use unit spacing.
//!
//! # Entry points for `spineseg evaluate`
//! ```ignore
//! let report = spineseg_metrics::evaluate_folders(&pred, &reference, &options, &names)?; // names: BTreeMap<Label, String>
//! spineseg_metrics::write_report(&out_dir, &report)?;  // metrics.csv, summary.json (+ metrics_per_slice.csv)
//! print!("{}", spineseg_metrics::format_table(&report));
//! ```
//! [`EvaluationOptions`] documents the flags the CLI is expected to map onto it. In-memory use:
//! [`evaluate_case`] for two label volumes, [`compare_masks`] for two binary masks.

pub mod distance;
pub mod edt;
pub mod error;
pub mod evaluate;
pub mod folder;
pub mod mask;
pub mod overlap;
pub mod report;
pub mod structures;
pub mod summary;
pub mod surface;

pub use distance::{percentile, Emptiness, SurfaceDistances};
pub use error::{MetricsError, Result};
pub use evaluate::{
    compare_masks, compare_slicewise, evaluate_case, CaseResult, EvaluationOptions, MetricOptions, PairMetrics,
    SliceMetrics, StructureResult,
};
pub use folder::{evaluate_folders, pair_cases, CasePair, EvaluationReport};
pub use mask::{Connectivity, Mask};
pub use report::{format_table, write_report, CSV_HEADER};
pub use summary::{Stats, Summary};
