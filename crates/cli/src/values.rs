//! Enum-valued flags as clap value enums: a bad value is a usage error (exit 2) that lists the
//! choices, and commands get the library's own types.

use clap::ValueEnum;
use spineseg_data::plan::ConfigurationName;

/// A plan configuration (`--configuration`, `--configurations`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConfigurationArg {
    /// Sagittal 2D slices.
    #[value(name = "2d")]
    TwoD,
    /// 3D patches at full resolution.
    #[value(name = "3d_fullres", alias = "3d")]
    ThreeDFullres,
}

impl From<ConfigurationArg> for ConfigurationName {
    fn from(arg: ConfigurationArg) -> Self {
        match arg {
            ConfigurationArg::TwoD => ConfigurationName::TwoD,
            ConfigurationArg::ThreeDFullres => ConfigurationName::ThreeDFullres,
        }
    }
}

/// The optimiser of `spineseg train --optimizer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerArg {
    /// nnU-Net's SGD: lr 0.01, momentum 0.99, Nesterov.
    Sgd,
    /// AdamW: lr 1e-3, weight decay 0.01.
    #[value(alias = "adam")]
    Adamw,
}

/// The view of an annotated case for `spineseg text prompts --view`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ViewArg {
    /// One sagittal slice (canonical RAS axis i).
    Sagittal,
    /// One axial slice (canonical RAS axis k).
    Axial,
    /// The whole volume.
    #[value(alias = "3d")]
    Volume,
}

impl ViewArg {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ViewArg::Sagittal => "sagittal",
            ViewArg::Axial => "axial",
            ViewArg::Volume => "volume",
        }
    }
}
