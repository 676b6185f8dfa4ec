//! Modules that fuse another modality into an image network's features.
//!
//! - [`hasf`]: ATM-Net's text-image fusion (HASF), an option of the plain U-Net
//!   ([`TextGuidanceConfig`] in its config; `None` is the visual-only baseline).

pub mod hasf;

pub use hasf::{TextFusion, TextGuidanceConfig};
