//! Modules that fuse another modality into an image network's features.
//!
//! - [`hasf`]: ATM-Net's text-image fusion (HASF), an option of the plain U-Net
//!   ([`TextGuidanceConfig`] in its config; `None` is the visual-only baseline).
//! - [`cross_tri_attention`]: SSHSNet's fusion of 2D (slice by slice) and 3D features of the
//!   same patch, the core of its hybrid stage-2 network.
//! - [`tmca`]: TMCA's target-informed multi-level alignment and language-guided target
//!   enhancement of decoder levels, an option of the plain U-Net ([`TargetAlignmentConfig`]).

pub mod cross_tri_attention;
pub mod hasf;
pub mod tmca;

pub use cross_tri_attention::{CrossTriAttention, CrossTriAttentionConfig};
pub use hasf::{TextFusion, TextGuidanceConfig, TextInputs};
pub use tmca::{region_features, TargetAlignment, TargetAlignmentConfig};
