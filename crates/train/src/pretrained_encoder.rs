//! A pretrained encoder folder (what `spineseg pretrain` writes: a model folder whose network is
//! a ConvNeXt V2 U-Net and whose training method is `fcmae`) as the start of a segmentation
//! network: checked against the network it starts (same input channels, stages, strides,
//! kernels and encoder depth), loaded, and fingerprinted so the trained model records which
//! encoder it came from. The disc-findings classifier starts from one too
//! ([`findings_encoder_of`]): the first stages of a 2D, one-channel encoder, as many as its ROI's
//! size divides.

use crate::error::{Result, TrainError};
use crate::manifest::load_manifest;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spineseg_infer::model_folder::MANIFEST_FILE;
use spineseg_model::{ConvNeXtUNetConfig, ConvNeXtV2Encoder, FindingsEncoderConfig, Network, NetworkConfig, SpatialDims};
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
    describe_weights(dir, &weights, &training)
}

fn describe_weights(dir: &Path, weights: &Path, training: &serde_json::Value) -> Result<PretrainedEncoder> {
    let bytes = std::fs::read(weights).map_err(|e| TrainError::Os { path: weights.to_path_buf(), source: e })?;
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
        // Drop path is a training setting, not a weight: the run starting from the encoder picks its own.
        (config.encoder.clone().with_drop_path(None) != target.encoder.clone().with_drop_path(None), "encoder blocks"),
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

/// How many of an encoder's first stages a findings ROI of `roi_px` (`[height, width]`) takes:
/// the most whose total stride divides both sides.
fn stages_dividing(strides: &[Vec<usize>], roi_px: [usize; 2]) -> usize {
    let mut total = [1usize, 1];
    let mut stages = 0;
    for stride in strides {
        let next = [total[0] * stride[0], total[1] * stride[1]];
        if !roi_px[0].is_multiple_of(next[0]) || !roi_px[1].is_multiple_of(next[1]) {
            break;
        }
        total = next;
        stages += 1;
    }
    stages
}

/// The disc-findings encoder that the encoder folder `dir` gives for ROIs of `roi_px`, and its
/// record: a 2D encoder of one input channel (the findings network runs every sequence through
/// it), cut to the first stages whose total stride divides the ROI.
pub fn findings_encoder_of(dir: &Path, roi_px: [usize; 2]) -> Result<(FindingsEncoderConfig, PretrainedEncoder)> {
    let (config, weights, training) = read_folder(dir)?;
    let unet = &config.unet;
    let manifest = dir.join(MANIFEST_FILE);
    if unet.spatial_dims != SpatialDims::D2 || unet.in_channels != 1 {
        return Err(incompatible(
            &manifest,
            format!(
                "the findings classifier needs a 2D encoder of one input channel (one image per sequence); this one is {} with {} input channels: pretrain on a 2D plan of single-channel images",
                if unet.spatial_dims == SpatialDims::D2 { "2D" } else { "3D" },
                unet.in_channels
            ),
        ));
    }
    let stages = stages_dividing(&unet.strides, roi_px);
    if stages == 0 {
        return Err(incompatible(&manifest, format!("no stage of the encoder fits an ROI of {roi_px:?} pixels")));
    }
    let mut blocks = config.encoder.clone();
    blocks.blocks_per_stage.truncate(stages);
    let kernel = unet.kernel_size(0);
    let encoder = FindingsEncoderConfig::ConvnextV2 {
        features_per_stage: unet.features_per_stage[..stages].to_vec(),
        strides: unet.strides[..stages].iter().map(|s| [s[0], s[1]]).collect(),
        stem_kernel: [kernel[0], kernel[1]],
        blocks,
    };
    Ok((encoder, describe_weights(dir, &weights, &training)?))
}

/// Loads the first stages of `pretrained` that `findings_encoder_of` chose for `roi_px`, on
/// `device`, checking that the folder still holds the weights it was described with.
pub fn load_findings_encoder(pretrained: &PretrainedEncoder, roi_px: [usize; 2], device: &Device) -> Result<ConvNeXtV2Encoder> {
    let (_, now) = findings_encoder_of(&pretrained.dir, roi_px)?;
    if now.weights_sha256 != pretrained.weights_sha256 {
        return Err(incompatible(&pretrained.dir, "the encoder's weights changed since the run started"));
    }
    let (config, weights, _) = read_folder(&pretrained.dir)?;
    let stages = stages_dividing(&config.unet.strides, roi_px);
    let network = NetworkConfig::from(config)
        .init(device)
        .try_load_file(&weights)
        .map_err(|e| TrainError::Record { path: weights.clone(), detail: e.to_string() })?;
    match network {
        Network::ConvNeXtUNet(network) => {
            let mut encoder = network.encoder;
            encoder.stages.truncate(stages);
            Ok(encoder)
        }
        other => Err(incompatible(&weights, format!("holds a {} network", other.kind()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_findings_roi_takes_the_stages_its_size_divides() {
        let strides = vec![vec![1, 1], vec![2, 2], vec![2, 2], vec![2, 2], vec![2, 2], vec![2, 2]];
        // 48 x 64: strides 1, 2, 4, 8, 16 divide both, 32 does not divide 48.
        assert_eq!(stages_dividing(&strides, [48, 64]), 5);
        assert_eq!(stages_dividing(&strides, [64, 64]), 6);
        assert_eq!(stages_dividing(&strides, [6, 8]), 2);
        assert_eq!(stages_dividing(&[vec![3, 3]], [8, 8]), 0);
    }
}
