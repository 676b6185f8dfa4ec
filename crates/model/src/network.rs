//! A network named by its kind, as a model folder stores it (nnU-Net's `network_class_name` +
//! `arch_kwargs`).
//!
//! [`NetworkConfig`] is a tagged enum, serialised as `{"kind": "plain_conv_unet", "config": {...}}`
//! with the kind's own config under `config`; [`Network`] is the built network, one variant per
//! kind, with what training exports and prediction need (build, load and save weights,
//! full-resolution logits, channel and class counts, size divisor), so model folders, checkpoints
//! and the predictor never name a concrete network type.
//!
//! Adding a network: its file under [`crate::networks`], one variant in [`NetworkConfig`] and in
//! [`Network`] (and [`NetworkConfigError`] for its config errors), and one arm in each `match`
//! below. The weights file is the variant's own burn record, so adding a kind never changes the
//! weight keys of another.

use std::path::Path;

use burn::module::Module;
use burn::serde::{Deserialize, Serialize};
use burn::store::{ModuleRecord, RecordError};
use burn::tensor::{DType, Device, Tensor};

use crate::blocks::SpatialDims;
use crate::fusion::TextInputs;
use crate::precision::CastFloats;
pub use crate::precision::WeightPrecision;
use crate::networks::{
    ConvNeXtUNet, ConvNeXtUNetConfig, DeepLabV3Plus, DeepLabV3PlusConfig, DeepLabV3PlusConfigError, PlainConvUNet,
    PlainConvUNetConfig, SshsHybrid, SshsHybridConfig, SshsHybridConfigError, UNetConfigError, UNetOutput,
};

/// The kind of a network and its configuration: what a model folder's `model.json` stores under
/// `network`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(crate = "burn::serde", tag = "kind", content = "config")]
pub enum NetworkConfig {
    /// nnU-Net's `PlainConvUNet`, 2D or 3D, optionally text-guided.
    #[serde(rename = "plain_conv_unet")]
    PlainConvUNet(PlainConvUNetConfig),
    /// A ConvNeXt V2 encoder with nnU-Net's decoder, 2D or 3D.
    #[serde(rename = "convnext_unet")]
    ConvNeXtUNet(ConvNeXtUNetConfig),
    /// DeepLabv3+ on the plan's stages (atrous encoder, ASPP, low-level decoder), 2D or 3D.
    #[serde(rename = "deeplabv3plus")]
    DeepLabV3Plus(DeepLabV3PlusConfig),
    /// SSHSNet's cascade in one network: frozen 2D U-Nets (stage 1) feeding a 3D U-Net through
    /// cross tri-attention (stage 2).
    #[serde(rename = "sshsnet_hybrid")]
    SshsHybrid(SshsHybridConfig),
}

/// An invalid [`NetworkConfig`], by kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkConfigError {
    /// An invalid [`PlainConvUNetConfig`].
    #[error(transparent)]
    PlainConvUNet(#[from] UNetConfigError),
    /// An invalid [`DeepLabV3PlusConfig`].
    #[error(transparent)]
    DeepLabV3Plus(#[from] DeepLabV3PlusConfigError),
    /// An invalid [`SshsHybridConfig`].
    #[error(transparent)]
    SshsHybrid(#[from] SshsHybridConfigError),
}

impl From<PlainConvUNetConfig> for NetworkConfig {
    fn from(config: PlainConvUNetConfig) -> Self {
        NetworkConfig::PlainConvUNet(config)
    }
}

impl From<&PlainConvUNetConfig> for NetworkConfig {
    fn from(config: &PlainConvUNetConfig) -> Self {
        NetworkConfig::PlainConvUNet(config.clone())
    }
}

impl NetworkConfig {
    /// The kind's name in `model.json` (`"plain_conv_unet"`).
    pub fn kind(&self) -> &'static str {
        match self {
            NetworkConfig::PlainConvUNet(_) => "plain_conv_unet",
            NetworkConfig::ConvNeXtUNet(_) => "convnext_unet",
            NetworkConfig::DeepLabV3Plus(_) => "deeplabv3plus",
            NetworkConfig::SshsHybrid(_) => "sshsnet_hybrid",
        }
    }

    /// The U-Net config, if this is a [`PlainConvUNet`].
    pub fn plain_conv_unet(&self) -> Option<&PlainConvUNetConfig> {
        match self {
            NetworkConfig::PlainConvUNet(config) => Some(config),
            NetworkConfig::ConvNeXtUNet(_) | NetworkConfig::DeepLabV3Plus(_) | NetworkConfig::SshsHybrid(_) => None,
        }
    }

    /// The U-Net whose stages and decoder this network has (the network itself for a
    /// [`PlainConvUNet`]; for [`DeepLabV3Plus`] the plan's U-Net its encoder stages come from).
    pub fn unet_stages(&self) -> &PlainConvUNetConfig {
        match self {
            NetworkConfig::PlainConvUNet(config) => config,
            NetworkConfig::ConvNeXtUNet(config) => &config.unet,
            NetworkConfig::DeepLabV3Plus(config) => &config.unet,
            NetworkConfig::SshsHybrid(config) => &config.unet,
        }
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), NetworkConfigError> {
        match self {
            NetworkConfig::PlainConvUNet(config) => Ok(config.validate()?),
            NetworkConfig::ConvNeXtUNet(config) => Ok(config.validate()?),
            NetworkConfig::DeepLabV3Plus(config) => Ok(config.validate()?),
            NetworkConfig::SshsHybrid(config) => Ok(config.validate()?),
        }
    }

    /// 2D or 3D.
    pub fn spatial_dims(&self) -> SpatialDims {
        match self {
            NetworkConfig::PlainConvUNet(config) => config.spatial_dims,
            NetworkConfig::ConvNeXtUNet(config) => config.unet.spatial_dims,
            NetworkConfig::DeepLabV3Plus(config) => config.unet.spatial_dims,
            NetworkConfig::SshsHybrid(_) => SpatialDims::D3,
        }
    }

    /// Number of input channels.
    pub fn in_channels(&self) -> usize {
        match self {
            NetworkConfig::PlainConvUNet(config) => config.in_channels,
            NetworkConfig::ConvNeXtUNet(config) => config.unet.in_channels,
            NetworkConfig::DeepLabV3Plus(config) => config.unet.in_channels,
            NetworkConfig::SshsHybrid(config) => config.stage1[0].in_channels,
        }
    }

    /// Number of output classes, background included.
    pub fn num_classes(&self) -> usize {
        match self {
            NetworkConfig::PlainConvUNet(config) => config.num_classes,
            NetworkConfig::ConvNeXtUNet(config) => config.unet.num_classes,
            NetworkConfig::DeepLabV3Plus(config) => config.unet.num_classes,
            NetworkConfig::SshsHybrid(config) => config.unet.num_classes,
        }
    }

    /// What every spatial side of an input must be a multiple of, per spatial axis.
    pub fn size_divisor(&self) -> Vec<usize> {
        match self {
            NetworkConfig::PlainConvUNet(config) => config.size_divisor(),
            NetworkConfig::ConvNeXtUNet(config) => config.unet.size_divisor(),
            NetworkConfig::DeepLabV3Plus(config) => config.size_divisor(),
            NetworkConfig::SshsHybrid(config) => config.size_divisor(),
        }
    }

    /// Builds the network with fresh weights.
    ///
    /// # Panics
    ///
    /// Panics if [`validate`](Self::validate) fails.
    pub fn init(&self, device: &Device) -> Network {
        match self {
            NetworkConfig::PlainConvUNet(config) => Network::PlainConvUNet(config.init(device)),
            NetworkConfig::ConvNeXtUNet(config) => Network::ConvNeXtUNet(config.init(device)),
            NetworkConfig::DeepLabV3Plus(config) => Network::DeepLabV3Plus(config.init(device)),
            NetworkConfig::SshsHybrid(config) => Network::SshsHybrid(config.init(device)),
        }
    }
}

/// A built network, one variant per kind of [`NetworkConfig`].
///
/// A burn module (an optimiser steps it whatever its kind); its weight files are still the
/// variant's own record ([`save_weights`](Self::save_weights)), so a kind's keys carry no variant name.
// A network is built once per run or model folder and moved rarely: boxing a variant would
// only add an indirection to every call.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Network {
    /// nnU-Net's `PlainConvUNet`.
    PlainConvUNet(PlainConvUNet),
    /// The ConvNeXt V2 U-Net.
    ConvNeXtUNet(ConvNeXtUNet),
    /// DeepLabv3+.
    DeepLabV3Plus(DeepLabV3Plus),
    /// SSHSNet's two stages.
    SshsHybrid(SshsHybrid),
}

impl From<ConvNeXtUNet> for Network {
    fn from(network: ConvNeXtUNet) -> Self {
        Network::ConvNeXtUNet(network)
    }
}

impl From<ConvNeXtUNetConfig> for NetworkConfig {
    fn from(config: ConvNeXtUNetConfig) -> Self {
        NetworkConfig::ConvNeXtUNet(config)
    }
}

impl From<DeepLabV3Plus> for Network {
    fn from(network: DeepLabV3Plus) -> Self {
        Network::DeepLabV3Plus(network)
    }
}

impl From<DeepLabV3PlusConfig> for NetworkConfig {
    fn from(config: DeepLabV3PlusConfig) -> Self {
        NetworkConfig::DeepLabV3Plus(config)
    }
}

impl From<PlainConvUNet> for Network {
    fn from(network: PlainConvUNet) -> Self {
        Network::PlainConvUNet(network)
    }
}

impl Network {
    /// The kind's name in `model.json`, as [`NetworkConfig::kind`].
    pub fn kind(&self) -> &'static str {
        match self {
            Network::PlainConvUNet(_) => "plain_conv_unet",
            Network::ConvNeXtUNet(_) => "convnext_unet",
            Network::DeepLabV3Plus(_) => "deeplabv3plus",
            Network::SshsHybrid(_) => "sshsnet_hybrid",
        }
    }

    /// The U-Net, if this is a [`PlainConvUNet`].
    pub fn plain_conv_unet(&self) -> Option<&PlainConvUNet> {
        match self {
            Network::PlainConvUNet(network) => Some(network),
            Network::ConvNeXtUNet(_) | Network::DeepLabV3Plus(_) | Network::SshsHybrid(_) => None,
        }
    }

    /// 2D or 3D.
    pub fn spatial_dims(&self) -> SpatialDims {
        match self {
            Network::PlainConvUNet(network) => network.spatial_dims,
            Network::ConvNeXtUNet(network) => network.spatial_dims,
            Network::DeepLabV3Plus(network) => network.spatial_dims,
            Network::SshsHybrid(_) => SpatialDims::D3,
        }
    }

    /// Number of input channels (read from the weights' shapes).
    pub fn in_channels(&self) -> usize {
        match self {
            Network::PlainConvUNet(network) => network.in_channels(),
            Network::ConvNeXtUNet(network) => network.in_channels(),
            Network::DeepLabV3Plus(network) => network.in_channels(),
            Network::SshsHybrid(network) => network.in_channels(),
        }
    }

    /// Number of output classes (read from the weights' shapes).
    pub fn num_classes(&self) -> usize {
        match self {
            Network::PlainConvUNet(network) => network.num_classes(),
            Network::ConvNeXtUNet(network) => network.num_classes(),
            Network::DeepLabV3Plus(network) => network.num_classes(),
            Network::SshsHybrid(network) => network.num_classes(),
        }
    }

    /// What every spatial side of an input must be a multiple of, per spatial axis.
    pub fn size_divisor(&self) -> Vec<usize> {
        match self {
            Network::PlainConvUNet(network) => network.size_divisor(),
            Network::ConvNeXtUNet(network) => network.size_divisor(),
            Network::DeepLabV3Plus(network) => network.size_divisor(),
            Network::SshsHybrid(network) => network.size_divisor(),
        }
    }

    /// The same network computing every deep-supervision output (training, `true`) or only
    /// the full-resolution one (prediction, `false`).
    pub fn with_deep_supervision(self, deep_supervision: bool) -> Self {
        match self {
            Network::PlainConvUNet(network) => Network::PlainConvUNet(network.with_deep_supervision(deep_supervision)),
            Network::ConvNeXtUNet(network) => Network::ConvNeXtUNet(network.with_deep_supervision(deep_supervision)),
            // No deep supervision: one full-resolution output either way.
            Network::DeepLabV3Plus(network) => Network::DeepLabV3Plus(network.with_deep_supervision(deep_supervision)),
            Network::SshsHybrid(network) => Network::SshsHybrid(network.with_deep_supervision(deep_supervision)),
        }
    }

    /// The network in inference mode (no gradients tracked), see [`Module::valid`].
    pub fn valid(&self) -> Self {
        match self {
            Network::PlainConvUNet(network) => Network::PlainConvUNet(network.valid()),
            Network::ConvNeXtUNet(network) => Network::ConvNeXtUNet(network.valid()),
            Network::DeepLabV3Plus(network) => Network::DeepLabV3Plus(network.valid()),
            Network::SshsHybrid(network) => Network::SshsHybrid(network.valid()),
        }
    }

    /// The network with its parameters on `device`.
    pub fn to_device(self, device: &Device) -> Self {
        match self {
            Network::PlainConvUNet(network) => Network::PlainConvUNet(network.to_device(device)),
            Network::ConvNeXtUNet(network) => Network::ConvNeXtUNet(network.to_device(device)),
            Network::DeepLabV3Plus(network) => Network::DeepLabV3Plus(network.to_device(device)),
            Network::SshsHybrid(network) => Network::SshsHybrid(network.to_device(device)),
        }
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        match self {
            Network::PlainConvUNet(network) => network.num_params(),
            Network::ConvNeXtUNet(network) => network.num_params(),
            Network::DeepLabV3Plus(network) => network.num_params(),
            Network::SshsHybrid(network) => network.num_params(),
        }
    }

    /// Loads the weights of a burnpack file written by [`save_weights`](Self::save_weights) (the
    /// variant's own burn record), in either precision: stored values are cast to the network's
    /// own (f32), so a half-precision file computes in single precision.
    pub fn try_load_file(self, path: &Path) -> Result<Self, RecordError> {
        let record = ModuleRecord::load(path)?.cast_to_module_dtype();
        match self {
            Network::PlainConvUNet(network) => Ok(Network::PlainConvUNet(network.try_load_record(record)?)),
            Network::ConvNeXtUNet(network) => Ok(Network::ConvNeXtUNet(network.try_load_record(record)?)),
            Network::DeepLabV3Plus(network) => Ok(Network::DeepLabV3Plus(network.try_load_record(record)?)),
            Network::SshsHybrid(network) => Ok(Network::SshsHybrid(network.try_load_record(record)?.refreeze())),
        }
    }

    /// Writes the weights as a burnpack file (the variant's own burn record) in `precision`.
    pub fn save_weights(&self, path: &Path, precision: WeightPrecision) -> Result<(), RecordError> {
        let mut cast = CastFloats(match precision {
            WeightPrecision::Single => DType::F32,
            WeightPrecision::Half => DType::F16,
        });
        match self {
            Network::PlainConvUNet(network) => network.clone().map(&mut cast).save_file(path),
            Network::ConvNeXtUNet(network) => network.clone().map(&mut cast).save_file(path),
            Network::DeepLabV3Plus(network) => network.clone().map(&mut cast).save_file(path),
            Network::SshsHybrid(network) => network.clone().map(&mut cast).save_file(path),
        }
    }

    /// Number of outputs of [`forward_canonical`](Self::forward_canonical).
    pub fn num_outputs(&self) -> usize {
        match self {
            Network::PlainConvUNet(network) => network.num_outputs(),
            Network::ConvNeXtUNet(network) => network.num_outputs(),
            Network::DeepLabV3Plus(network) => network.num_outputs(),
            Network::SshsHybrid(network) => network.num_outputs(),
        }
    }

    /// Logits of every level (with deep supervision) on the canonical 5D layout, full resolution
    /// first, without size checks.
    pub fn forward_canonical(&self, x: Tensor<5>) -> Vec<Tensor<5>> {
        self.forward_detailed(x).logits
    }

    /// Logits and decoder features of every level (what training losses use).
    pub fn forward_detailed(&self, x: Tensor<5>) -> UNetOutput {
        match self {
            Network::PlainConvUNet(network) => network.forward_detailed(x),
            Network::ConvNeXtUNet(network) => network.forward_detailed(x),
            Network::DeepLabV3Plus(network) => network.forward_detailed(x),
            Network::SshsHybrid(network) => network.forward_detailed(x),
        }
    }

    /// [`forward_detailed`](Self::forward_detailed) with text inputs for a text-guided U-Net
    /// ([`PlainConvUNet::forward_with_text`]); other kinds take no text and ignore them.
    pub fn forward_with_text(&self, x: Tensor<5>, inputs: TextInputs) -> UNetOutput {
        match self {
            Network::PlainConvUNet(network) => network.forward_with_text(x, inputs),
            other => other.forward_detailed(x),
        }
    }

    /// Whether the network has a report token (a text-guided U-Net trained with reports).
    pub fn takes_reports(&self) -> bool {
        self.plain_conv_unet().and_then(|n| n.text_fusion.as_ref()).is_some_and(|f| f.takes_reports())
    }

    /// [`forward_logits`](Self::forward_logits) with a report embedding (`[batch, text_dim]`)
    /// for the report token.
    ///
    /// # Panics
    /// Panics if the network has no report token ([`takes_reports`](Self::takes_reports)), or
    /// as [`forward_logits`](Self::forward_logits).
    pub fn forward_logits_with_reports<const D: usize>(&self, x: Tensor<D>, reports: Tensor<2>) -> Tensor<D> {
        assert!(self.takes_reports(), "the network has no report token");
        match self {
            Network::PlainConvUNet(network) => network.forward_with_reports(x, reports),
            _ => unreachable!("only a text-guided U-Net takes reports"),
        }
    }

    /// Full-resolution segmentation logits (no softmax).
    ///
    /// # Shapes
    ///
    /// - input: `[batch, in_channels, height, width]` (2D) or
    ///   `[batch, in_channels, depth, height, width]` (3D), each spatial side a multiple of
    ///   [`size_divisor`](Self::size_divisor)
    /// - output: `[batch, num_classes, ...]`, the input's spatial sides when the first stage does
    ///   not down-sample
    ///
    /// # Panics
    ///
    /// Panics if the rank, channel count or sizes do not fit the network.
    pub fn forward_logits<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Network::PlainConvUNet(network) => {
                network.forward(x).into_iter().next().expect("a U-Net returns at least one output")
            }
            Network::ConvNeXtUNet(network) => {
                network.forward(x).into_iter().next().expect("a U-Net returns at least one output")
            }
            Network::DeepLabV3Plus(network) => {
                network.forward(x).into_iter().next().expect("DeepLabv3+ returns its one output")
            }
            Network::SshsHybrid(network) => {
                network.forward(x).into_iter().next().expect("a U-Net returns at least one output")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn tiny() -> PlainConvUNetConfig {
        PlainConvUNetConfig::new(SpatialDims::D2, 2, 3, vec![4, 8], vec![vec![1, 1], vec![2, 2]])
    }

    #[test]
    fn config_json_names_the_kind() {
        let config = NetworkConfig::from(tiny());
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["kind"], "plain_conv_unet");
        assert_eq!(json["config"]["features_per_stage"], serde_json::json!([4, 8]));
        let back: NetworkConfig = serde_json::from_value(json).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&config).unwrap());
        let unknown = serde_json::json!({"kind": "vision_transformer", "config": {}});
        assert!(serde_json::from_value::<NetworkConfig>(unknown).is_err());
    }

    #[test]
    fn network_reports_what_the_config_says() {
        let device = Device::flex();
        let config = NetworkConfig::from(tiny());
        config.validate().unwrap();
        let network = config.init(&device);
        assert_eq!(network.kind(), config.kind());
        assert_eq!((network.in_channels(), network.num_classes()), (config.in_channels(), config.num_classes()));
        assert_eq!(network.spatial_dims(), config.spatial_dims());
        assert_eq!(network.size_divisor(), config.size_divisor());
        assert_eq!(config.size_divisor(), vec![2, 2]);
    }

    #[test]
    fn logits_are_the_unets_full_resolution_output() {
        let device = Device::flex();
        let network = NetworkConfig::from(tiny()).init(&device);
        let x = Tensor::<4>::random([2, 2, 8, 4], Distribution::Normal(0.0, 1.0), &device);
        let full = network.plain_conv_unet().unwrap().forward(x.clone()).remove(0).into_data();
        let logits = network.clone().with_deep_supervision(false).forward_logits(x.clone());
        assert_eq!(logits.dims(), [2, 3, 8, 4]);
        assert_eq!(logits.into_data(), full);
        assert_eq!(network.forward_logits(x).into_data(), full);
    }

    #[test]
    fn weights_round_trip_through_the_enum() {
        let device = Device::flex();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("network.bpk");
        let config = NetworkConfig::from(tiny());
        let saved = config.init(&device);
        saved.save_weights(&path, WeightPrecision::Single).unwrap();
        let loaded = config.init(&device).try_load_file(&path).unwrap();
        let x = Tensor::<4>::random([1, 2, 4, 4], Distribution::Normal(0.0, 1.0), &device);
        assert_eq!(saved.forward_logits(x.clone()).into_data(), loaded.forward_logits(x).into_data());
        let other = NetworkConfig::from(PlainConvUNetConfig { features_per_stage: vec![4, 16], ..tiny() });
        assert!(other.init(&device).try_load_file(&path).is_err(), "weights of other widths do not load");
    }

    #[test]
    fn half_precision_weights_are_half_the_size_and_load_as_f32() {
        let device = Device::flex();
        let dir = tempfile::tempdir().unwrap();
        let (single, half) = (dir.path().join("single.bpk"), dir.path().join("half.bpk"));
        let config = NetworkConfig::from(PlainConvUNetConfig { features_per_stage: vec![32, 64], ..tiny() });
        let saved = config.init(&device);
        saved.save_weights(&single, WeightPrecision::Single).unwrap();
        saved.save_weights(&half, WeightPrecision::Half).unwrap();
        let size = |p: &Path| std::fs::metadata(p).unwrap().len() as f64;
        let ratio = size(&half) / size(&single);
        assert!((0.45..0.6).contains(&ratio), "half / single file size {ratio}");
        let loaded = config.init(&device).try_load_file(&half).unwrap();
        let x = Tensor::<4>::random([1, 2, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let logits = loaded.forward_logits(x.clone());
        assert_eq!(logits.dtype(), DType::F32, "half weights compute in f32");
        let (a, b) = (saved.forward_logits(x).into_data().try_to_vec::<f32>().unwrap(), logits.into_data().try_to_vec::<f32>().unwrap());
        let worst = a.iter().zip(&b).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let scale = a.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
        assert!(worst > 0.0, "the weights were rounded");
        assert!(worst < 1e-2 * scale, "half-precision logits differ by {worst} (scale {scale})");
    }
}
