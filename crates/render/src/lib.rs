//! spineseg-render: slice + label overlays and small line plots (training curves), as PNG.

pub mod error;
pub mod overlay;
pub mod overlay_comparison;
pub mod plot;
