//! spineseg-preprocessing: one case from raw volumes to network input and back (nnU-Net's
//! `preprocessing`): cropping to the body, resampling, normalisation, storage of preprocessed
//! cases, the exact inverse used to write predictions, and the plan schema (`plans.json`) that
//! drives all of it.

pub mod crop;
pub mod neighbour_slices;
pub mod error;
pub mod plan;
pub mod preprocess;
pub mod resample;
pub mod stats;
#[cfg(any(test, feature = "test-support"))]
#[doc(hidden)]
pub mod test_support;
