//! The burn network as a [`PatchPredictor`]: [`NetworkPredictor`] runs a [`Network`] of any
//! kind on C-order patch batches and returns the full-resolution logits.
//!
//! The network runs without autodiff (a plain device, [`Network::valid`]) and without deep
//! supervision: only the full-resolution output is computed, the lower decoder heads are skipped
//! (their weights stay in the module, so a training checkpoint loads unchanged).

use crate::error::{InferError, PredictorError, Result};
use crate::sliding_window::PatchPredictor;
/// The burn device type (re-exported so callers need no burn dependency).
pub use burn::tensor::Device;
use burn::tensor::{Tensor, TensorData};
use spineseg_preprocessing::plan::{ConfigurationName, Plan};
use spineseg_io::Volume;
use spineseg_model::{Network, NetworkConfig, PlainConvUNetConfig, SpatialDims};

/// The network configuration a plan's configuration describes: its stage widths, strides and
/// kernels, the plan's channel and class counts, with deep supervision (as trained).
///
/// Our `PlainConvUNetConfig` has one conv count for every stage, so the plan's per-stage conv
/// counts must be all equal (they are, unless edited by hand).
pub fn network_config_for_plan(plan: &Plan, configuration: ConfigurationName) -> Result<PlainConvUNetConfig> {
    let c = plan
        .configuration(configuration)
        .ok_or_else(|| InferError::InvalidOptions(format!("the plan has no configuration {configuration}")))?;
    let n = &c.network;
    let same = |counts: &[usize], what: &str| match counts.split_first() {
        Some((first, rest)) if rest.iter().all(|v| v == first) => Ok(*first),
        _ => Err(InferError::InvalidOptions(format!(
            "configuration {configuration}: {what} {counts:?} must be one value repeated (PlainConvUNet has one conv count for all stages)"
        ))),
    };
    let spatial_dims = match configuration {
        ConfigurationName::TwoD => SpatialDims::D2,
        ConfigurationName::ThreeDFullres => SpatialDims::D3,
    };
    let config = PlainConvUNetConfig::new(
        spatial_dims,
        plan.channel_names.len(),
        plan.num_classes(),
        n.features_per_stage.clone(),
        n.strides.clone(),
    )
    .with_kernel_sizes(Some(n.kernel_sizes.clone()))
    .with_n_conv_per_stage(same(&n.n_conv_per_stage_encoder, "n_conv_per_stage_encoder")?)
    .with_n_conv_per_stage_decoder(same(&n.n_conv_per_stage_decoder, "n_conv_per_stage_decoder")?)
    .with_deep_supervision(true);
    config
        .validate()
        .map_err(|e| InferError::InvalidOptions(format!("configuration {configuration}: {e}")))?;
    Ok(config)
}

/// A [`Network`] of any kind behind the [`PatchPredictor`] interface.
///
/// # Shapes
/// `predict(input, shape)`: `shape` is `[B, in_channels, pj, pk]` for a 2D network and
/// `[B, in_channels, pi, pj, pk]` for a 3D one (C-order, see [`crate::sliding_window`]); every
/// spatial side must be a multiple of the network's total stride (plan patches are). Returns
/// `[B, num_classes, *spatial]` logits in C-order.
#[derive(Debug, Clone)]
pub struct NetworkPredictor {
    network: Network,
    device: Device,
    in_channels: usize,
    num_classes: usize,
    /// A report's embedding for the network's report token (`predict --report`).
    report: Option<Vec<f32>>,
}

/// Slices an SSHSNet hybrid's stage 1 takes per call on a whole volume (bounds the memory of
/// the 2D networks' activations).
const STAGE1_SLICES_PER_CALL: usize = 8;

impl NetworkPredictor {
    /// Wraps a network (its weights loaded or not). The network is moved to `device` without
    /// autodiff and switched to full-resolution output only.
    pub fn new(network: impl Into<Network>, device: Device) -> Self {
        let device = device.without_autodiff();
        let network = network.into().valid().to_device(&device).with_deep_supervision(false);
        // A hybrid's windows carry its stage-1 channels after the image (`volume_channels`).
        let in_channels = match &network {
            Network::SshsHybrid(hybrid) => hybrid.in_channels() + hybrid.stage1_channels(),
            other => other.in_channels(),
        };
        let num_classes = network.num_classes();
        NetworkPredictor { network, device, in_channels, num_classes, report: None }
    }

    /// Predicts with `embedding` (a report's sentence embedding) in the report token of a
    /// text-guided network trained with reports, instead of its "no report" token. An error
    /// when the network has no report token or the size differs from its text size.
    pub fn with_report(mut self, embedding: Vec<f32>) -> std::result::Result<Self, String> {
        let fusion = self.network.plain_conv_unet().and_then(|n| n.text_fusion.as_ref());
        let Some(null_report) = fusion.and_then(|f| f.null_report.as_ref()) else {
            return Err("the model was not trained with report text (spineseg train --text-guided --reports)".into());
        };
        let dim = null_report.val().dims()[1];
        if embedding.len() != dim {
            return Err(format!("the report embedding has {} values; the model's text size is {dim}", embedding.len()));
        }
        self.report = Some(embedding);
        Ok(self)
    }

    /// A network with fresh (Kaiming) weights from `config` on `device`, seeded with `seed`
    /// (the device's generator may be global: another thread drawing random numbers at the same
    /// time makes the weights differ). For tests and speed measurements.
    pub fn random(config: impl Into<NetworkConfig>, seed: u64, device: Device) -> Self {
        let device = device.without_autodiff();
        device.seed(seed);
        let network = config.into().init(&device);
        Self::new(network, device)
    }

    /// The network (full-resolution output only, no autodiff).
    pub fn network(&self) -> &Network {
        &self.network
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// 2 or 3.
    pub fn spatial_dims(&self) -> usize {
        self.network.spatial_dims().count()
    }

    fn check_shape(&self, input: &[f32], shape: &[usize]) -> std::result::Result<(), String> {
        let dims = self.spatial_dims();
        if shape.len() != dims + 2 {
            return Err(format!("a {dims}D network takes [batch, channels, {dims} spatial sides], got {shape:?}"));
        }
        if shape[1] != self.in_channels {
            return Err(format!("the network takes {} input channels, got {} ({shape:?})", self.in_channels, shape[1]));
        }
        if input.len() != shape.iter().product::<usize>() {
            return Err(format!("{} input values for shape {shape:?}", input.len()));
        }
        let divisor = self.network.size_divisor();
        if shape[2..].iter().zip(&divisor).any(|(s, d)| *s == 0 || s % d != 0) {
            return Err(format!("patch {:?} is not a multiple of the network's total stride {divisor:?}", &shape[2..]));
        }
        Ok(())
    }

    fn forward<const D: usize>(&mut self, input: &[f32], shape: &[usize]) -> std::result::Result<Vec<f32>, PredictorError> {
        let dims: [usize; D] = shape.try_into().expect("the shape length was checked against the network's rank");
        let x = Tensor::<D>::from_data(TensorData::new(input.to_vec(), dims), &self.device);
        let logits = match &self.report {
            Some(report) => {
                let reports: Vec<f32> = (0..dims[0]).flat_map(|_| report.iter().copied()).collect();
                let reports = Tensor::<2>::from_data(TensorData::new(reports, [dims[0], report.len()]), &self.device);
                self.network.forward_logits_with_reports(x, reports)
            }
            None => match &self.network {
                Network::SshsHybrid(hybrid) => hybrid.forward_precomputed(x),
                network => network.forward_logits(x),
            },
        };
        let out_dims = logits.dims();
        if out_dims[0] != dims[0] || out_dims[1] != self.num_classes || out_dims[2..] != dims[2..] {
            return Err(format!(
                "the network returned shape {out_dims:?} for input {dims:?} ({} classes expected; is stage 0's stride 1?)",
                self.num_classes
            )
            .into());
        }
        logits.try_into_vec_as::<f32>().map_err(|e| format!("reading the logits back: {e:?}").into())
    }
}

impl PatchPredictor for NetworkPredictor {
    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn predict(&mut self, input: &[f32], shape: &[usize]) -> std::result::Result<Vec<f32>, PredictorError> {
        self.check_shape(input, shape)?;
        match shape.len() {
            4 => self.forward::<4>(input, shape),
            5 => self.forward::<5>(input, shape),
            _ => unreachable!("check_shape allows ranks 4 and 5 only"),
        }
    }

    /// An SSHSNet hybrid's stage 1 on the volume's whole slices (see
    /// [`spineseg_model::SshsHybrid::stage1_volume`]); nothing for other networks.
    fn volume_channels(&mut self, images: &[Volume<f32>]) -> std::result::Result<Vec<Volume<f32>>, PredictorError> {
        let Network::SshsHybrid(hybrid) = &self.network else { return Ok(Vec::new()) };
        if images.len() != hybrid.in_channels() {
            return Err(format!("the network takes {} image channels, got {}", hybrid.in_channels(), images.len()).into());
        }
        let Some(first) = images.first() else { return Ok(Vec::new()) };
        let [ni, nj, nk] = first.shape();
        let geometry = first.geometry;
        // Volume order is `i` fastest: as C order that is `[k, j, i]`.
        let data: Vec<f32> = images.iter().flat_map(|v| v.data().iter().copied()).collect();
        let image = Tensor::<4>::from_data(TensorData::new(data, [images.len(), nk, nj, ni]), &self.device)
            .permute([0, 3, 2, 1])
            .unsqueeze_dim::<5>(0);
        let channels = hybrid.stage1_volume(image, STAGE1_SLICES_PER_CALL).squeeze_dim::<4>(0).permute([0, 3, 2, 1]);
        let count = channels.dims()[0];
        let values = channels.try_into_vec_as::<f32>().map_err(|e| format!("reading stage 1 back: {e:?}"))?;
        let voxels = ni * nj * nk;
        Ok((0..count)
            .map(|c| {
                Volume::new([ni, nj, nk], values[c * voxels..(c + 1) * voxels].to_vec(), geometry)
                    .unwrap_or_else(|_| unreachable!("one value per voxel"))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sliding_window::{predict_sliding_window, SlidingWindowOptions};
    use spineseg_io::{Geometry, Volume};

    fn tiny(dims: SpatialDims) -> PlainConvUNetConfig {
        let n = dims.count();
        PlainConvUNetConfig::new(dims, 2, 3, vec![4, 8], vec![vec![1; n], vec![2; n]])
    }

    fn random_input(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|v| (((v as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 500.0 - 1.0).collect()
    }

    #[test]
    fn output_shapes_2d_and_3d() {
        for (dims, shape) in [(SpatialDims::D2, vec![3, 2, 8, 4]), (SpatialDims::D3, vec![2, 2, 4, 6, 8])] {
            let mut p = NetworkPredictor::random(tiny(dims), 1, Device::flex());
            let n: usize = shape.iter().product();
            let out = p.predict(&random_input(n, 7), &shape).unwrap();
            assert_eq!(out.len(), n / 2 * 3, "{dims:?}: batch x 3 classes x spatial");
            assert!(out.iter().all(|v| v.is_finite()));
            // The same window twice in a batch gives the same logits (instance norm is per sample).
            let one: usize = shape[1..].iter().product();
            let mut twice = random_input(one, 3);
            twice.extend_from_within(..);
            let mut s = shape.clone();
            s[0] = 2;
            let out = p.predict(&twice, &s).unwrap();
            let half = out.len() / 2;
            for (a, b) in out[..half].iter().zip(&out[half..]) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn a_hybrid_predicts_one_whole_volume_window_as_its_forward_does() {
        use spineseg_model::SshsHybridConfig;
        let stage1 = PlainConvUNetConfig::new(SpatialDims::D2, 1, 3, vec![4, 8, 8], vec![vec![1, 1], vec![2, 2], vec![2, 2]]);
        let plan_3d = PlainConvUNetConfig::new(SpatialDims::D3, 1, 3, vec![4, 8, 8], vec![vec![1, 1, 1], vec![1, 2, 2], vec![2, 2, 2]]);
        let config = SshsHybridConfig::for_stages(vec![stage1], &plan_3d, 4).unwrap();
        let mut p = NetworkPredictor::random(NetworkConfig::SshsHybrid(config), 3, Device::flex());
        assert_eq!(p.in_channels(), 1 + 3 + 8, "the image, then the stage-1 probabilities and features");
        // Sides all different, so a transposed axis cannot pass.
        let shape = [4, 8, 12];
        let image = Volume::new(shape, random_input(shape.iter().product(), 5), Geometry::default()).unwrap();
        let options = SlidingWindowOptions::new(shape.to_vec()).with_mirror_axes(vec![]);
        let scores = predict_sliding_window(std::slice::from_ref(&image), &mut p, &options).unwrap();
        // The same volume through the network's plain forward, in C order.
        let c_order: Vec<f32> =
            (0..4).flat_map(|i| (0..8).flat_map(move |j| (0..12).map(move |k| [i, j, k]))).map(|v| image.data()[image.index(v)]).collect();
        let x = Tensor::<5>::from_data(TensorData::new(c_order, [1, 1, 4, 8, 12]), p.device());
        let Network::SshsHybrid(hybrid) = p.network() else { unreachable!() };
        let logits = hybrid.forward(x).remove(0).into_data().try_to_vec::<f32>().unwrap();
        for (class, expected_class) in logits.chunks(4 * 8 * 12).enumerate() {
            let got = scores.class_volume(class);
            for (n, [i, j, k]) in (0..4).flat_map(|i| (0..8).flat_map(move |j| (0..12).map(move |k| [i, j, k]))).enumerate() {
                let (a, b) = (got.data()[got.index([i, j, k])], expected_class[n]);
                assert!((a - b).abs() < 1e-4, "class {class} at {:?}: {a} vs {b}", [i, j, k]);
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors_not_panics() {
        let mut p = NetworkPredictor::random(tiny(SpatialDims::D2), 1, Device::flex());
        for shape in [vec![1, 2, 8], vec![1, 1, 8, 8], vec![1, 2, 7, 8], vec![1, 2, 4, 4, 4]] {
            let n: usize = shape.iter().product();
            let err = p.predict(&vec![0.0; n], &shape).unwrap_err().to_string();
            assert!(!err.is_empty());
        }
        assert!(p.predict(&[0.0; 3], &[1, 2, 8, 8]).is_err());
    }

    #[test]
    fn sliding_window_with_mirroring_keeps_shapes() {
        // A random network is not mirror-equivariant, so this exercises the flips for real.
        let images: Vec<Volume<f32>> = (0..2)
            .map(|c| {
                let shape = [5, 11, 13];
                let data = random_input(shape.iter().product(), c);
                Volume::new(shape, data, Geometry::default()).unwrap()
            })
            .collect();
        for (dims, patch, axes) in [(SpatialDims::D3, vec![4, 8, 8], vec![0, 1, 2]), (SpatialDims::D2, vec![8, 8], vec![0, 1])] {
            let mut p = NetworkPredictor::random(tiny(dims), 2, Device::flex());
            let plain = SlidingWindowOptions::new(patch.clone()).with_mirror_axes(vec![]).with_batch_size(2);
            let tta = plain.clone().with_mirror_axes(axes);
            let a = predict_sliding_window(&images, &mut p, &plain).unwrap();
            let b = predict_sliding_window(&images, &mut p, &tta).unwrap();
            for s in [&a, &b] {
                assert_eq!(s.shape(), [5, 11, 13]);
                assert_eq!(s.num_classes(), 3);
                assert!(s.data().iter().all(|v| v.is_finite()));
            }
            assert_ne!(a.data(), b.data(), "{dims:?}: mirroring a random network changes the logits");
        }
    }
}
