//! spineseg-render: slice + label overlays, case previews and small line plots (training
//! curves), as PNG; the HTML report of a folder of predictions.

pub mod error;
pub mod overlay;
pub mod overlay_comparison;
pub mod plot;
pub mod preview;
pub mod report;
