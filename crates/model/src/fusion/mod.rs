//! Modules that fuse another modality into an image network's features.
//!
//! - [`hasf`]: ATM-Net's text-image fusion (HASF), an option of the plain U-Net
//!   ([`TextGuidanceConfig`] in its config; `None` is the visual-only baseline).

//! - [`tmca`]: TMCA's target-informed multi-level alignment and language-guided target
//!   enhancement of decoder levels, an option of the plain U-Net ([`TargetAlignmentConfig`]).

pub mod hasf;
pub mod tmca;

pub use hasf::{TextFusion, TextGuidanceConfig};
pub use tmca::{region_features, TargetAlignment, TargetAlignmentConfig};
