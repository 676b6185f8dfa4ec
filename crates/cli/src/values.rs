//! Enum-valued flags as clap value enums: a bad value is a usage error (exit 2) that lists the
//! choices, and commands get the library's own types.

use clap::ValueEnum;
use spineseg_io::DataType;
use spineseg_metrics::Connectivity;
use spineseg_model::WeightPrecision;
use spineseg_phantom::Contrast;
use spineseg_preprocessing::plan::ConfigurationName;
use spineseg_train::{AugmentationConfig, OptimizerConfig};

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

impl OptimizerArg {
    /// The optimiser with its default learning rate, or `lr` when given.
    pub fn config(self, lr: Option<f64>) -> OptimizerConfig {
        let optimizer = match self {
            OptimizerArg::Sgd => OptimizerConfig::sgd(),
            OptimizerArg::Adamw => OptimizerConfig::adamw(),
        };
        match lr {
            Some(lr) => optimizer.with_lr(lr),
            None => optimizer,
        }
    }
}

/// The network of `spineseg train --network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetworkArg {
    /// The plan's U-Net (nnU-Net's PlainConvUNet).
    Unet,
    /// DeepLabv3+ on the plan's encoder stages (output stride 16, atrous spatial pyramid
    /// pooling, decoder with a low-level skip).
    Deeplabv3plus,
}

impl From<NetworkArg> for spineseg_train::NetworkChoice {
    fn from(arg: NetworkArg) -> Self {
        match arg {
            NetworkArg::Unet => spineseg_train::NetworkChoice::Unet,
            NetworkArg::Deeplabv3plus => spineseg_train::NetworkChoice::Deeplabv3plus,
        }
    }
}

/// The encoder of `spineseg train --encoder-kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EncoderKindArg {
    /// The plan's U-Net encoder (nnU-Net's PlainConvEncoder).
    Plain,
    /// ConvNeXt V2 stages (depthwise 7x7, LayerNorm, MLP with GRN) with the plan's widths and strides.
    ConvnextV2,
}

/// How `spineseg train --partial-labels` infers the classes a case annotates
/// (`--partial-label-rule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PartialLabelRuleArg {
    /// Per structure kind a case labels, the levels from its most superior to its most inferior
    /// labelled one (a case labelling L1-L5 says nothing about T12).
    #[value(name = "by-range", alias = "by-labelled-range")]
    Range,
    /// Every class of each structure kind a case labels (the rule before issue 12).
    #[value(name = "by-kind")]
    Kind,
    /// As by-range, but only the model's one class just above and just below a labelled range
    /// stay unannotated; farther classes of the kind are taught as absent.
    #[value(name = "by-range-neighbours")]
    RangeNeighbours,
}

impl From<PartialLabelRuleArg> for spineseg_train::PartialLabelRule {
    fn from(arg: PartialLabelRuleArg) -> Self {
        match arg {
            PartialLabelRuleArg::Range => spineseg_train::PartialLabelRule::ByLabelledRange,
            PartialLabelRuleArg::Kind => spineseg_train::PartialLabelRule::ByKind,
            PartialLabelRuleArg::RangeNeighbours => spineseg_train::PartialLabelRule::ByRangeNeighbours,
        }
    }
}

/// The training augmentation of `spineseg train --augmentation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AugmentationArg {
    /// nnU-Net v2's transforms with the spine departures (no superior-inferior mirroring,
    /// rotation within 15 degrees).
    Default,
    /// The default plus intensity inversion, random histogram remapping, bias fields, wider
    /// gamma and stronger low-resolution simulation: for scans of other contrasts and scanners.
    Contrast,
}

impl AugmentationArg {
    /// The library's configuration for this choice.
    pub fn config(self) -> AugmentationConfig {
        match self {
            AugmentationArg::Default => AugmentationConfig::default(),
            AugmentationArg::Contrast => AugmentationConfig::contrast_robust(),
        }
    }
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

/// Neighbourhood that defines surface voxels (`spineseg evaluate --connectivity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConnectivityArg {
    /// Face neighbours (medpy's and MONAI's default).
    Face,
    /// All neighbours (a thicker boundary).
    Full,
}

impl From<ConnectivityArg> for Connectivity {
    fn from(arg: ConnectivityArg) -> Self {
        match arg {
            ConnectivityArg::Face => Connectivity::Face,
            ConnectivityArg::Full => Connectivity::Full,
        }
    }
}

/// The axis `spineseg evaluate --slice-axis` cuts 2D slices across: a voxel axis, or an
/// anatomical plane found from the reference geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SliceAxisArg {
    /// Voxel axis 0.
    #[value(name = "0")]
    Voxel0,
    /// Voxel axis 1.
    #[value(name = "1")]
    Voxel1,
    /// Voxel axis 2.
    #[value(name = "2")]
    Voxel2,
    /// Sagittal slices (across left-right).
    Sagittal,
    /// Coronal slices (across anterior-posterior).
    Coronal,
    /// Axial slices (across superior-inferior).
    #[value(alias = "transverse")]
    Axial,
}

/// The contrast of `spineseg phantom --contrast`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ContrastArg {
    /// T1-weighted.
    #[value(name = "T1")]
    T1,
    /// T2-weighted.
    #[value(name = "T2")]
    T2,
}

impl From<ContrastArg> for Contrast {
    fn from(arg: ContrastArg) -> Self {
        match arg {
            ContrastArg::T1 => Contrast::T1,
            ContrastArg::T2 => Contrast::T2,
        }
    }
}

/// A voxel data type of `spineseg convert --dtype` (numpy's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DataTypeArg {
    /// Unsigned 8-bit integers.
    Uint8,
    /// Signed 8-bit integers.
    Int8,
    /// Unsigned 16-bit integers.
    Uint16,
    /// Signed 16-bit integers.
    Int16,
    /// Unsigned 32-bit integers.
    Uint32,
    /// Signed 32-bit integers.
    Int32,
    /// 32-bit floats.
    Float32,
    /// 64-bit floats.
    Float64,
}

impl From<DataTypeArg> for DataType {
    fn from(arg: DataTypeArg) -> Self {
        match arg {
            DataTypeArg::Uint8 => DataType::U8,
            DataTypeArg::Int8 => DataType::I8,
            DataTypeArg::Uint16 => DataType::U16,
            DataTypeArg::Int16 => DataType::I16,
            DataTypeArg::Uint32 => DataType::U32,
            DataTypeArg::Int32 => DataType::I32,
            DataTypeArg::Float32 => DataType::F32,
            DataTypeArg::Float64 => DataType::F64,
        }
    }
}

/// The precision of `spineseg model precision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    /// IEEE half precision (f16): half the file.
    Half,
    /// Single precision (f32), as training writes it.
    Single,
}

impl From<PrecisionArg> for WeightPrecision {
    fn from(arg: PrecisionArg) -> Self {
        match arg {
            PrecisionArg::Half => WeightPrecision::Half,
            PrecisionArg::Single => WeightPrecision::Single,
        }
    }
}

/// The findings classifier's head (`findings train --head`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FindingsHead {
    /// Linear heads on the image features (the visual-only baseline).
    Visual,
    /// Image features matched against embedded finding prompts (CLIP-style).
    Text,
}

/// The sequences a findings model learns from (`findings train --sequences`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FindingsSequences {
    /// T2-weighted only.
    T2,
    /// T1- and T2-weighted (either may be missing for a level).
    #[value(name = "t1-t2")]
    T1T2,
}

impl FindingsSequences {
    /// The sequence names, as the findings model's channels and the ROI set name them.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            FindingsSequences::T2 => &["t2"],
            FindingsSequences::T1T2 => &["t1", "t2"],
        }
    }
}
