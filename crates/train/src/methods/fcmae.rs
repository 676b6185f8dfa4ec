//! ConvNeXt V2's FCMAE pretraining as a training method: the plan's ConvNeXt V2 U-Net encoder
//! learns to reconstruct masked patches of unlabelled images (and of the labelled training
//! cases' images, labels unused), so a segmentation run can start from it
//! (`spineseg train --encoder`).
//!
//! Each step hides `mask_ratio` of the grid cells of every sample (a cell is one patch of the
//! encoder's total stride, e.g. 32 x 32 pixels), drawn from the run's seed and the step number
//! (so a resumed run draws the same masks), and minimises [`masked_reconstruction_loss`] on the
//! hidden cells. Validation reports the same loss on the fixed validation batches with fixed
//! masks; there is no segmentation to score, so the engine exports the last epoch, and after
//! each epoch the method draws what it reconstructs (`training/reconstruction.png`).
//!
//! The exported network is the whole ConvNeXt V2 U-Net (the pretrained encoder and a decoder
//! as initialised), so the folder is an ordinary model folder that `train --encoder` reads;
//! prediction refuses it (its training method is `fcmae`).

use super::single_network::{batch_images, Materialise, SingleNetworkState, INIT_LOCK};
use crate::checkpoint::{load_module, load_optimizer, save_module, save_optimizer, MODEL_FILE, OPTIMIZER_FILE};
use crate::error::{Result, TrainError};
use crate::losses::masked_reconstruction::{
    masked_reconstruction_loss, normalise_patches, patchify, predictions_per_cell, unpatchify,
};
use crate::method::{ExportedNetwork, MethodContext, StepStats, TrainingMethod};
use crate::optim::optimiser_step;
use crate::pseudo_dice::PseudoDice;
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::tensor::{Device, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use spineseg_dataloading::sampling::Batch;
use spineseg_model::{
    ConvNeXtUNet, ConvNeXtUNetConfig, FcmaeDecoderConfig, MaskedAutoencoder, Network, NetworkConfig, UNetDecoder,
    WeightPrecision,
};
use spineseg_render::overlay::{write_png, RgbImage};
use std::path::Path;

/// The masked autoencoder's weights inside a checkpoint (encoder + light decoder).
pub const FCMAE_FILE: &str = "fcmae.bpk";
/// The step counter inside a checkpoint.
const STEPS_FILE: &str = "fcmae_steps.json";
/// Seed of the validation masks (fixed, so epochs are compared on the same masks).
const VALIDATION_MASK_SEED: u64 = 0x5eed_f00d;

/// Settings of [`FcmaeMethod`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FcmaeSettings {
    /// Fraction of grid cells hidden per sample (ConvNeXt V2: 0.6).
    pub mask_ratio: f64,
    /// Width of the light decoder; `None`: the encoder's last width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder_width: Option<usize>,
    /// Normalise each target patch to mean 0, variance 1 (MAE's `norm_pix_loss`).
    pub normalise_targets: bool,
}

impl Default for FcmaeSettings {
    fn default() -> Self {
        FcmaeSettings { mask_ratio: 0.6, decoder_width: None, normalise_targets: true }
    }
}

impl FcmaeSettings {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if !(self.mask_ratio > 0.0 && self.mask_ratio < 1.0) {
            return Err(TrainError::Invalid(format!("the mask ratio must be between 0 and 1 (exclusive), got {}", self.mask_ratio)));
        }
        if self.decoder_width == Some(0) {
            return Err(TrainError::Invalid("the decoder width must be positive".into()));
        }
        Ok(())
    }
}

/// Which cells of each sample are hidden: `cells` per sample, `round(ratio * cells)` of them
/// (at least one, at most all but one), chosen uniformly by `rng`. Row-major `[batch, cells]`,
/// 1 = masked.
pub fn sample_cell_mask(batch: usize, cells: usize, ratio: f64, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let hidden = ((ratio * cells as f64).round() as usize).clamp(1, cells.saturating_sub(1).max(1));
    let mut mask = Vec::with_capacity(batch * cells);
    let mut order: Vec<usize> = (0..cells).collect();
    for _ in 0..batch {
        order.shuffle(rng);
        let mut row = vec![0.0f32; cells];
        for &cell in &order[..hidden] {
            row[cell] = 1.0;
        }
        mask.extend(row);
    }
    mask
}

/// A cell mask `[batch, gd, gh, gw]` repeated `factor` times along each axis:
/// `[batch, gd * fd, gh * fh, gw * fw]`, row-major.
pub fn upsample_cell_mask(mask: &[f32], batch: usize, grid: [usize; 3], factor: [usize; 3]) -> Vec<f32> {
    let [gd, gh, gw] = grid;
    let [fd, fh, fw] = factor;
    let (d, h, w) = (gd * fd, gh * fh, gw * fw);
    let mut out = Vec::with_capacity(batch * d * h * w);
    for b in 0..batch {
        for z in 0..d {
            for y in 0..h {
                for x in 0..w {
                    out.push(mask[((b * gd + z / fd) * gh + y / fh) * gw + x / fw]);
                }
            }
        }
    }
    out
}

/// The masks of one batch on a device.
struct Masks {
    /// `[batch, cells]`, 1 = masked.
    cells: Tensor<2>,
    /// `[batch, 1, gd, gh, gw]`, 1 = masked.
    cells_5d: Tensor<5>,
    /// Full resolution, 1 = visible.
    input_visible: Tensor<5>,
    /// Per encoder stage, 1 = visible.
    stage_visible: Vec<Tensor<5>>,
}

/// FCMAE pretraining of the plan's ConvNeXt V2 U-Net encoder (see the module documentation).
pub struct FcmaeMethod {
    model: Option<MaskedAutoencoder>,
    /// The U-Net decoder as initialised, exported with the encoder (not trained here).
    unet_decoder: UNetDecoder,
    network: ConvNeXtUNetConfig,
    settings: FcmaeSettings,
    optimizer: ModuleOptimizer,
    device: Device,
    inference_device: Device,
    grad_clip_norm: Option<f64>,
    seed: u64,
    steps: u64,
    /// Patch (= total stride) per axis, `[d, h, w]`.
    patch: [usize; 3],
    /// Cumulative stride of each stage, `[d, h, w]`.
    stage_strides: Vec<[usize; 3]>,
}

fn as_3d(values: &[usize]) -> [usize; 3] {
    match values {
        [h, w] => [1, *h, *w],
        [d, h, w] => [*d, *h, *w],
        other => panic!("expected 2 or 3 values per axis, got {other:?}"),
    }
}

impl FcmaeMethod {
    /// The plan's ConvNeXt V2 U-Net (new run) or the checkpoint's (resume), with a fresh light
    /// decoder, initialised from the run's seed.
    pub fn build(settings: &FcmaeSettings, ctx: &MethodContext<'_>, saved: Option<&serde_json::Value>) -> Result<Self> {
        let network = match saved {
            Some(saved) => match SingleNetworkState::network_from_saved(saved, ctx)? {
                NetworkConfig::ConvNeXtUNet(config) => config,
                other => {
                    return Err(TrainError::Incompatible {
                        path: ctx.model_dir.join("training"),
                        detail: format!("the checkpoint pretrains a {} network; FCMAE pretrains a convnext_unet", other.kind()),
                    })
                }
            },
            None => ConvNeXtUNetConfig::from_unet(&ctx.plan_network),
        };
        network
            .validate()
            .map_err(|e| TrainError::Invalid(format!("{}: ConvNeXt V2 U-Net: {e}", ctx.plans_path.display())))?;
        let unet = &network.unet;
        let stage_strides: Vec<[usize; 3]> = (0..unet.n_stages()).map(|s| as_3d(&unet.cumulative_stride(s))).collect();
        let patch = *stage_strides.last().expect("a network has stages");
        let last = unet.n_stages() - 1;
        let encoder_width = unet.features_per_stage[last];
        let kernel: Vec<usize> =
            unet.kernel_size(last).iter().map(|&k| if k == 1 { 1 } else { network.encoder.depthwise_kernel }).collect();
        let decoder_config = FcmaeDecoderConfig::new(
            unet.spatial_dims,
            encoder_width,
            settings.decoder_width.unwrap_or(encoder_width),
            patch.iter().product::<usize>() * unet.in_channels,
            kernel,
        );
        let (model, unet_decoder) = {
            let _guard = INIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
            ctx.device.seed(ctx.seed);
            let full = network.init(&ctx.device);
            let decoder = decoder_config.init(&ctx.device);
            let model = MaskedAutoencoder { encoder: full.encoder, decoder };
            model.visit(&mut Materialise);
            full.decoder.visit(&mut Materialise);
            (model, full.decoder)
        };
        Ok(FcmaeMethod {
            model: Some(model),
            unet_decoder,
            network,
            settings: settings.clone(),
            optimizer: ctx.optimizer.init(),
            device: ctx.device.clone(),
            inference_device: ctx.inference_device.clone(),
            grad_clip_norm: ctx.grad_clip_norm,
            seed: ctx.seed,
            steps: 0,
            patch,
            stage_strides,
        })
    }

    fn model(&self) -> &MaskedAutoencoder {
        self.model.as_ref().expect("the network is only taken during an optimiser step")
    }

    fn masks(&self, images: &Tensor<5>, rng: &mut ChaCha8Rng, device: &Device) -> Masks {
        let [batch, _, d, h, w] = images.dims();
        let [pd, ph, pw] = self.patch;
        let grid = [d / pd, h / ph, w / pw];
        let cells = grid.iter().product::<usize>();
        let mask = sample_cell_mask(batch, cells, self.settings.mask_ratio, rng);
        let visible = |factor: [usize; 3]| {
            let up = upsample_cell_mask(&mask, batch, grid, factor);
            let shape = [batch, 1, grid[0] * factor[0], grid[1] * factor[1], grid[2] * factor[2]];
            Tensor::<5>::from_data(TensorData::new(up.into_iter().map(|m| 1.0 - m).collect::<Vec<f32>>(), shape), device)
        };
        let stage_visible = self
            .stage_strides
            .iter()
            .map(|stride| visible([pd / stride[0], ph / stride[1], pw / stride[2]]))
            .collect();
        let input_visible = visible(self.patch);
        Masks {
            cells: Tensor::from_data(TensorData::new(mask.clone(), [batch, cells]), device),
            cells_5d: Tensor::from_data(TensorData::new(mask, [batch, 1, grid[0], grid[1], grid[2]]), device),
            input_visible,
            stage_visible,
        }
    }

    /// Predictions and targets per cell (targets normalised per the settings).
    fn reconstruct(&self, model: &MaskedAutoencoder, images: Tensor<5>, masks: &Masks) -> (Tensor<3>, Tensor<3>) {
        let predictions = model.forward(images.clone(), masks.input_visible.clone(), &masks.stage_visible, masks.cells_5d.clone());
        let mut targets = patchify(images, self.patch);
        if self.settings.normalise_targets {
            targets = normalise_patches(targets);
        }
        (predictions_per_cell(predictions), targets)
    }

    fn step_rng(&self) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(self.seed ^ self.steps.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    /// The first samples of `batch` as rows of masked input | reconstruction | original (the
    /// reconstruction keeps the visible pixels and shows the prediction in the masked cells,
    /// de-normalised with each true patch's mean and spread).
    fn picture(&self, batch: &Batch) -> RgbImage {
        let model = self.model().valid();
        let images = batch_images(batch, &self.inference_device);
        let mut rng = ChaCha8Rng::seed_from_u64(VALIDATION_MASK_SEED);
        let masks = self.masks(&images, &mut rng, &self.inference_device);
        let (predictions, _) = self.reconstruct(&model, images.clone(), &masks);
        let [batch_size, channels, d, h, w] = images.dims();
        let raw = patchify(images.clone(), self.patch);
        let values = raw.dims()[2];
        let mean = raw.clone().mean_dim(2);
        let spread = (raw.clone().sub(mean.clone()).square().sum_dim(2) / (values.max(2) - 1) as f64 + 1e-6).sqrt();
        let predicted = if self.settings.normalise_targets { predictions * spread + mean } else { predictions };
        let grid = [d / self.patch[0], h / self.patch[1], w / self.patch[2]];
        let predicted = unpatchify(predicted, channels, grid, self.patch);
        let visible = masks.input_visible.clone();
        let filled = images.clone() * visible.clone() + predicted * (visible.clone().neg() + 1.0);
        let masked = images.clone() * visible;
        let to_vec = |x: Tensor<5>| x.into_data().try_to_vec::<f32>().expect("f32 values");
        let (masked, filled, original) = (to_vec(masked), to_vec(filled), to_vec(images));
        let rows = batch_size.min(4);
        let slice = d / 2;
        let mut picture = RgbImage::new(3 * w + 4, rows * (h + 2), [32, 32, 32]);
        for row in 0..rows {
            let plane = |values: &[f32]| {
                let start = ((row * channels) * d + slice) * h * w;
                values[start..start + h * w].to_vec()
            };
            let reference = plane(&original);
            let (lo, hi) = reference.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            let scale = if hi > lo { 255.0 / (hi - lo) } else { 0.0 };
            for (panel, values) in [plane(&masked), plane(&filled), reference].iter().enumerate() {
                for y in 0..h {
                    for x in 0..w {
                        let v = ((values[y * w + x] - lo) * scale).clamp(0.0, 255.0) as u8;
                        picture.set(panel * (w + 2) + x, row * (h + 2) + y, [v, v, v]);
                    }
                }
            }
        }
        picture
    }
}

impl TrainingMethod for FcmaeMethod {
    fn num_params(&self) -> usize {
        self.model().num_params()
    }

    fn train_step(&mut self, batch: &Batch, lr: f64) -> Result<StepStats> {
        let images = batch_images(batch, &self.device);
        let mut rng = self.step_rng();
        let masks = self.masks(&images, &mut rng, &self.device);
        let model = self.model.take().expect("the network is only taken during an optimiser step");
        let (predictions, targets) = self.reconstruct(&model, images, &masks);
        let loss = masked_reconstruction_loss(predictions, targets, masks.cells);
        self.steps += 1;
        let (model, stats) = optimiser_step(model, loss, &mut self.optimizer, lr, self.grad_clip_norm);
        self.model = Some(model);
        Ok(stats)
    }

    fn validation_step(&self, batch: &Batch, _dice: &mut PseudoDice) -> Result<f64> {
        let model = self.model().valid();
        let images = batch_images(batch, &self.inference_device);
        let mut rng = ChaCha8Rng::seed_from_u64(VALIDATION_MASK_SEED);
        let masks = self.masks(&images, &mut rng, &self.inference_device);
        let (predictions, targets) = self.reconstruct(&model, images, &masks);
        Ok(masked_reconstruction_loss(predictions, targets, masks.cells).into_scalar::<f32>() as f64)
    }

    fn scored_by_segmentation(&self) -> bool {
        false
    }

    fn after_epoch(&self, epoch: usize, val_batches: &[Batch], training_dir: &Path) -> Result<()> {
        let Some(batch) = val_batches.first() else { return Ok(()) };
        let picture = self.picture(batch);
        let folder = training_dir.join("reconstruction");
        std::fs::create_dir_all(&folder).map_err(|e| TrainError::Os { path: folder.clone(), source: e })?;
        write_png(&folder.join(format!("epoch_{epoch:04}.png")), &picture)?;
        write_png(&training_dir.join("reconstruction.png"), &picture)?;
        Ok(())
    }

    fn save(&self, dir: &Path) -> Result<()> {
        save_module(self.model(), &dir.join(FCMAE_FILE))?;
        save_optimizer(&self.optimizer, &dir.join(OPTIMIZER_FILE))?;
        let exported = Network::ConvNeXtUNet(ConvNeXtUNet {
            encoder: self.model().encoder.clone(),
            decoder: self.unet_decoder.clone(),
            spatial_dims: self.network.unet.spatial_dims,
            strides: self.network.unet.strides.clone(),
            deep_supervision: self.network.unet.deep_supervision,
        });
        let path = dir.join(MODEL_FILE);
        exported
            .save_weights(&path, WeightPrecision::Single)
            .map_err(|e| TrainError::Record { path: path.clone(), detail: e.to_string() })?;
        let steps = dir.join(STEPS_FILE);
        spineseg_io::json::write_json(&steps, &serde_json::json!({ "steps": self.steps }))?;
        Ok(())
    }

    fn load(&mut self, dir: &Path) -> Result<()> {
        let model = self.model.take().expect("the network is only taken during an optimiser step");
        self.model = Some(load_module(model, &dir.join(FCMAE_FILE))?);
        let optimizer = std::mem::replace(&mut self.optimizer, crate::config::OptimizerConfig::sgd().init());
        self.optimizer = load_optimizer(optimizer, &dir.join(OPTIMIZER_FILE))?;
        let steps: serde_json::Value = spineseg_io::json::read_json(&dir.join(STEPS_FILE))?;
        self.steps = steps["steps"].as_u64().ok_or_else(|| TrainError::Incompatible {
            path: dir.join(STEPS_FILE),
            detail: "no step count".into(),
        })?;
        Ok(())
    }

    fn export(&self) -> ExportedNetwork {
        ExportedNetwork {
            checkpoint_file: MODEL_FILE.to_string(),
            network: NetworkConfig::from(self.network.clone()),
            companions: Vec::new(),
        }
    }

    fn state(&self) -> serde_json::Value {
        serde_json::to_value(SingleNetworkState { network: NetworkConfig::from(self.network.clone()) })
            .expect("a network config should serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_hide_the_ratio_of_cells_per_sample_and_depend_on_the_seed() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mask = sample_cell_mask(3, 25, 0.6, &mut rng);
        for row in mask.chunks(25) {
            assert_eq!(row.iter().filter(|&&m| m == 1.0).count(), 15);
        }
        assert_ne!(mask[..25], mask[25..50], "each sample draws its own cells");
        let again = sample_cell_mask(3, 25, 0.6, &mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(mask, again);
        // Never everything or nothing.
        assert_eq!(sample_cell_mask(1, 4, 0.99, &mut rng).iter().sum::<f32>(), 3.0);
        assert_eq!(sample_cell_mask(1, 4, 0.01, &mut rng).iter().sum::<f32>(), 1.0);
    }

    #[test]
    fn cell_masks_cover_whole_patches_at_full_resolution() {
        // One sample, grid 1 x 2 x 2, cell (0, 1) masked, patches 1 x 2 x 3.
        let mask = [0.0, 1.0, 0.0, 0.0];
        let up = upsample_cell_mask(&mask, 1, [1, 2, 2], [1, 2, 3]);
        assert_eq!(up.len(), 4 * 6);
        let rows: Vec<&[f32]> = up.chunks(6).collect();
        assert_eq!(rows[0], [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        assert_eq!(rows[1], [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        assert_eq!(rows[2], [0.0; 6]);
    }
}
