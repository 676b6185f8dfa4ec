//! spineseg-planning: nnU-Net's `experiment_planning`: the dataset fingerprint
//! (`fingerprint.json`) and the planner rules that derive a plan (`plans.json`, schema in
//! `spineseg_preprocessing::plan`) from it.

pub mod error;
pub mod fingerprint;
pub mod pipeline;
pub mod planner;
#[cfg(any(test, feature = "test-support"))]
#[doc(hidden)]
pub mod test_support;

pub use planner::plan_from_fingerprint;
