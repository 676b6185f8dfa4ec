//! A pretrained encoder folder (what `spineseg pretrain` writes: a model folder whose network is
//! a ConvNeXt V2 U-Net and whose training method is `fcmae`) as the start of a segmentation
//! network: checked against the network it starts (same input channels, stages, strides,
//! kernels and encoder depth), loaded, and fingerprinted so the trained model records which
//! encoder it came from.

use crate::error::{Result, TrainError};
use crate::manifest::load_manifest;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spineseg_infer::model_folder::MANIFEST_FILE;
use spineseg_model::{ConvNeXtUNetConfig, ConvNeXtV2Encoder, Network, NetworkConfig};
use std::path::{Path, PathBuf};

/// Where a network's encoder came from: stored in the training settings (checkpoint and the
/// trained model's `model.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainedEncoder {
    /// The encoder folder as given.
    pub dir: PathBuf,
    /// SHA-256 of its weights file (hex).
    pub weights_sha256: String,
    /// Its training method and steps, from its `model.json` (for the record).
    #[serde(default)]
    pub method: String,
    #[serde(default)]
    pub steps: usize,
}

fn incompatible(path: &Path, detail: impl Into<String>) -> TrainError {
    TrainError::Incompatible { path: path.to_path_buf(), detail: detail.into() }
}

/// The network config and weights path of an encoder folder, checked to be a ConvNeXt V2 U-Net.
fn read_folder(dir: &Path) -> Result<(ConvNeXtUNetConfig, PathBuf, serde_json::Value)> {
    let manifest_path = dir.join(MANIFEST_FILE);
    if !manifest_path.is_file() {
        return Err(TrainError::Missing {
            path: manifest_path,
            detail: "not an encoder folder (no model.json; `spineseg pretrain` writes one)".into(),
        });
    }
    let manifest = load_manifest(&manifest_path)?;
    let NetworkConfig::ConvNeXtUNet(config) = manifest.network else {
        return Err(incompatible(
            &manifest_path,
            format!("holds a {} network; an encoder folder holds a convnext_unet", manifest.network.kind()),
        ));
    };
    let weights = dir.join(&manifest.weights);
    if !weights.is_file() {
        return Err(TrainError::Missing { path: weights, detail: "the encoder's weights file is missing".into() });
    }
    Ok((config, weights, manifest.training))
}

/// Describes the encoder folder `dir` for a run that will start from it, after checking that its
/// encoder fits `target` (input channels, widths, strides, kernels, encoder settings).
pub fn describe_pretrained_encoder(dir: &Path, target: &ConvNeXtUNetConfig) -> Result<PretrainedEncoder> {
    let (config, weights, training) = read_folder(dir)?;
    check_fits(dir, &config, target)?;
    let bytes = std::fs::read(&weights).map_err(|e| TrainError::Os { path: weights.clone(), source: e })?;
    let weights_sha256 = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    let method = training.get("method").and_then(|m| m.as_str()).unwrap_or_default().to_string();
    let epochs = training.get("epochs_done").and_then(|v| v.as_u64()).unwrap_or(0);
    let per_epoch = training.get("iterations_per_epoch").and_then(|v| v.as_u64()).unwrap_or(0);
    // Absolute, so the record still names the folder when read from elsewhere.
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    Ok(PretrainedEncoder { dir, weights_sha256, method, steps: (epochs * per_epoch) as usize })
}

fn check_fits(dir: &Path, config: &ConvNeXtUNetConfig, target: &ConvNeXtUNetConfig) -> Result<()> {
    let (a, b) = (&config.unet, &target.unet);
    let kernels = |c: &spineseg_model::PlainConvUNetConfig| (0..c.n_stages()).map(|s| c.kernel_size(s)).collect::<Vec<_>>();
    let differences: Vec<&str> = [
        (a.spatial_dims != b.spatial_dims, "spatial dimensions"),
        (a.in_channels != b.in_channels, "input channels"),
        (a.features_per_stage != b.features_per_stage, "widths per stage"),
        (a.strides != b.strides, "strides"),
        (kernels(a) != kernels(b), "kernel sizes"),
        (config.encoder != target.encoder, "encoder blocks"),
    ]
    .into_iter()
    .filter_map(|(differs, what)| differs.then_some(what))
    .collect();
    if differences.is_empty() {
        Ok(())
    } else {
        Err(incompatible(
            &dir.join(MANIFEST_FILE),
            format!(
                "the pretrained encoder does not fit this plan's network ({} differ); pretrain with the same plan and configuration",
                differences.join(", ")
            ),
        ))
    }
}

/// Loads the encoder of `pretrained` for a network of config `target` on `device`, checking
/// that the folder still holds the weights it was described with.
pub fn load_pretrained_encoder(pretrained: &PretrainedEncoder, target: &ConvNeXtUNetConfig, device: &Device) -> Result<ConvNeXtV2Encoder> {
    let now = describe_pretrained_encoder(&pretrained.dir, target)?;
    if now.weights_sha256 != pretrained.weights_sha256 {
        return Err(incompatible(&pretrained.dir, "the encoder's weights changed since the run started"));
    }
    let (config, weights, _) = read_folder(&pretrained.dir)?;
    let network = NetworkConfig::from(config)
        .init(device)
        .try_load_file(&weights)
        .map_err(|e| TrainError::Record { path: weights.clone(), detail: e.to_string() })?;
    match network {
        Network::ConvNeXtUNet(network) => Ok(network.encoder),
        other => Err(incompatible(&weights, format!("holds a {} network", other.kind()))),
    }
}
