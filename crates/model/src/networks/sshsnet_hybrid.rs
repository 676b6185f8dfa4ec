//! SSHSNet's stage 2 (Meng et al., arXiv 2203.12151): a 3D U-Net on full-resolution patches
//! that sees what the frozen stage-1 2D networks see, slice by slice.
//!
//! One network holds both stages, so a model folder of this kind is the whole cascade and
//! prediction runs it like any network (sliding windows, mirroring):
//!
//! 1. **Stage 1, frozen.** Each 2D U-Net (the two networks of cross pseudo supervision, or one)
//!    runs on every slice along the depth (thick-slice) axis, on more than the 3D patch: in
//!    training on the patch plus an in-plane context margin (`context_margin`, so that it sees
//!    what it was trained on, about its own 2D patch), in prediction once per volume on whole
//!    slices ([`SshsHybrid::stage1_volume`]), cropped at each window. Their class
//!    probabilities, averaged, join the image as input channels of the 3D U-Net; their decoder
//!    features at the fusion level, concatenated over the networks, are the 2D features.
//!    (Stage 1 on the 3D patch alone, 64 x 80 pixels, lost half its Dice: issue 13's stop-30
//!    diagnostic.)
//! 2. **The 3D U-Net** (the plan's 3D configuration, whose early stages do not convolve along a
//!    thick-slice axis) runs its encoder on image + probabilities. At the decoder level with the
//!    2D features' in-plane stride (`fusion_level`), the 2D features (averaged over the slices
//!    one 3D voxel spans, then a 1x1 conv-norm-act to the level's width) and the level's 3D
//!    features are fused by [`CrossTriAttention`] (or concatenated, for the ablation without
//!    it), brought back to the level's width by an in-plane conv-norm-act, and the decoder goes
//!    on from there, deep supervision as the U-Net's.
//!
//! The stage-1 networks take no gradient: their parameters are frozen when the network is
//! built and their outputs are detached, so an optimiser only steps the 3D part.
//!
//! As the authors' code: probabilities and 2D features come from both stage-1 networks, the
//! features are projected by a conv-norm-act before the fusion, and a conv-norm-act after the
//! fused concatenation returns to the 3D width. Ours differs in the backbones (the plan's
//! U-Nets, not SE-ResNeXt DeepLabv3+) and in fusing inside the decoder, so the levels above the
//! fusion refine the fused features with the encoder's skips.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::activation::softmax;
use burn::tensor::ops::PadMode;
use burn::tensor::{Device, Tensor};

use crate::blocks::spatial::{forward_checked, stride_product};
use crate::blocks::{ConvNd, SpatialDims, StackedConvBlocks, StackedConvBlocksConfig};
use crate::fusion::cross_tri_attention::{CrossTriAttention, CrossTriAttentionConfig};
use crate::networks::plain_conv_unet::{PlainConvUNet, PlainConvUNetConfig, UNetOutput};

/// The probability floor of [`SshsHybridConfig::stage1_prior`]: a class stage 1 rules out
/// starts at about -9.2 in the logits, not minus infinity, so the 3D network can still raise it.
pub const STAGE1_PRIOR_FLOOR: f64 = 1e-4;

/// Configuration of an [`SshsHybrid`].
#[derive(Config, Debug)]
pub struct SshsHybridConfig {
    /// The frozen stage-1 2D U-Nets (one or two, the same classes and input channels).
    pub stage1: Vec<PlainConvUNetConfig>,
    /// The 3D U-Net; its input channels are the image's plus one per class.
    pub unet: PlainConvUNetConfig,
    /// The 3D decoder level the 2D features join (0 = full resolution).
    pub fusion_level: usize,
    /// The stage-1 decoder level the 2D features come from (the same in-plane stride).
    pub stage1_fusion_level: usize,
    /// Cross tri-attention (`true`) or the plain concatenation (`false`, the ablation's arm).
    #[config(default = true)]
    pub tri_attention: bool,
    /// Key width reduction of the tri-attention's spatial branch.
    #[config(default = 8)]
    pub key_reduction: usize,
    /// In-plane context (rows, columns on each side) stage 1 sees around the 3D patch in
    /// training: a training input is the patch grown by these margins, the 3D U-Net takes its
    /// centre. Multiples of the 2D features' stride, and such that the grown patch stays a
    /// multiple of the size divisor. `None` (model folders before it): stage 1 sees the patch
    /// only.
    pub context_margin: Option<Vec<usize>>,
    /// `Some(true)`: adds the log of stage 1's mean probabilities (floored at
    /// [`STAGE1_PRIOR_FLOOR`]) to the full-resolution logits, the head there starting at zero,
    /// so that the hybrid starts as stage 1's prediction and the 3D network learns a correction
    /// (ours, not the authors'). With partial labels, where the loss cannot tell background from
    /// a class a case does not annotate, stage 1 decides there instead of a 3D network's random
    /// start. `None` (model folders before it) or `Some(false)`: no prior.
    pub stage1_prior: Option<bool>,
}

/// An invalid [`SshsHybridConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SSHSNet hybrid: {0}")]
pub struct SshsHybridConfigError(pub String);

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// What a context margin must be a multiple of: the 2D features' `stride` (so that they crop
/// with the image) and `divisor / gcd(divisor, 2)` (so that the grown patch stays a multiple of
/// `divisor`).
fn context_margin_unit(stride: usize, divisor: usize) -> usize {
    let half = divisor / gcd(divisor, 2);
    stride / gcd(stride, half) * half
}

/// Cumulative stride of each stage, per axis.
fn cumulative_strides(config: &PlainConvUNetConfig) -> Vec<Vec<usize>> {
    let mut acc = vec![1; config.spatial_dims.count()];
    config
        .strides
        .iter()
        .map(|s| {
            acc.iter_mut().zip(s).for_each(|(a, s)| *a *= s);
            acc.clone()
        })
        .collect()
}

impl SshsHybridConfig {
    /// The hybrid for stage-1 networks `stage1` and the plan's 3D U-Net `plan_unet` (its input
    /// channels are the image's): the 3D U-Net takes the classes as extra channels, and the
    /// fusion is at the deepest 3D decoder level whose in-plane stride some stage-1 level has,
    /// at most `max_inplane_stride` (SSHSNet fuses at a quarter of the resolution).
    pub fn for_stages(
        stage1: Vec<PlainConvUNetConfig>,
        plan_unet: &PlainConvUNetConfig,
        max_inplane_stride: usize,
    ) -> Result<SshsHybridConfig, SshsHybridConfigError> {
        let first = stage1.first().ok_or_else(|| SshsHybridConfigError("no stage-1 network".into()))?;
        let classes = first.num_classes;
        let unet = PlainConvUNetConfig { in_channels: plan_unet.in_channels + classes, ..plan_unet.clone() };
        let strides_3d = cumulative_strides(&unet);
        let strides_2d = cumulative_strides(first);
        // Decoder level l has the resolution of stage l (levels 0..n-2).
        let found = (0..unet.n_stages() - 1).rev().find_map(|level| {
            let s = &strides_3d[level];
            if s[1] != s[2] || s[1] > max_inplane_stride {
                return None;
            }
            let level_2d = (0..first.n_stages() - 1).find(|&l| strides_2d[l] == [s[1], s[2]])?;
            Some((level, level_2d))
        });
        let (fusion_level, stage1_fusion_level) = found.ok_or_else(|| {
            SshsHybridConfigError(format!(
                "no 3D decoder level with an in-plane stride <= {max_inplane_stride} that a stage-1 level shares \
                 (3D strides {strides_3d:?}, 2D strides {strides_2d:?})"
            ))
        })?;
        let config = SshsHybridConfig::new(stage1, unet, fusion_level, stage1_fusion_level);
        config.validate()?;
        Ok(config)
    }

    /// Checks the stages against each other.
    pub fn validate(&self) -> Result<(), SshsHybridConfigError> {
        let bad = |m: String| Err(SshsHybridConfigError(m));
        let Some(first) = self.stage1.first() else { return bad("no stage-1 network".into()) };
        if self.stage1.len() > 2 {
            return bad(format!("{} stage-1 networks; one or two", self.stage1.len()));
        }
        for net in &self.stage1 {
            net.validate().map_err(|e| SshsHybridConfigError(format!("stage 1: {e}")))?;
            if net.spatial_dims != SpatialDims::D2 {
                return bad("a stage-1 network is not 2D".into());
            }
            if (net.in_channels, net.num_classes) != (first.in_channels, first.num_classes) {
                return bad("the stage-1 networks differ in channels or classes".into());
            }
            if net.features_per_stage != first.features_per_stage || net.strides != first.strides {
                return bad("the stage-1 networks differ in their stages".into());
            }
        }
        self.unet.validate().map_err(|e| SshsHybridConfigError(format!("3D U-Net: {e}")))?;
        if self.unet.spatial_dims != SpatialDims::D3 {
            return bad("the stage-2 U-Net is not 3D".into());
        }
        if self.unet.in_channels != first.in_channels + first.num_classes || self.unet.num_classes != first.num_classes
        {
            return bad(format!(
                "the 3D U-Net takes {} channels and gives {} classes; stage 1 takes {} channels and gives {} classes",
                self.unet.in_channels, self.unet.num_classes, first.in_channels, first.num_classes
            ));
        }
        if self.fusion_level + 1 >= self.unet.n_stages() || self.stage1_fusion_level + 1 >= first.n_stages() {
            return bad("a fusion level is not a decoder level".into());
        }
        let s3 = &cumulative_strides(&self.unet)[self.fusion_level];
        let s2 = &cumulative_strides(first)[self.stage1_fusion_level];
        if [s3[1], s3[2]] != [s2[0], s2[1]] {
            return bad(format!("the fusion levels' in-plane strides differ: 3D {s3:?}, 2D {s2:?}"));
        }
        let divisor = self.size_divisor();
        let unit = |axis: usize| context_margin_unit(s2[axis], divisor[1 + axis]);
        let margin = self.margin();
        if margin.len() != 2 || (0..2).any(|a| !margin[a].is_multiple_of(unit(a))) {
            return bad(format!(
                "context margin {margin:?}: two in-plane margins, multiples of {:?} (the 2D features' stride, and half the size divisor)",
                [unit(0), unit(1)]
            ));
        }
        Ok(())
    }

    /// Whether stage 1's log-probabilities join the logits.
    pub fn uses_stage1_prior(&self) -> bool {
        self.stage1_prior == Some(true)
    }

    /// The context margins (`[0, 0]` when there are none).
    fn margin(&self) -> Vec<usize> {
        self.context_margin.clone().unwrap_or_else(|| vec![0, 0])
    }

    /// Width of the 2D features (the stage-1 networks' level widths, summed).
    pub fn features_2d(&self) -> usize {
        self.stage1.iter().map(|n| n.features_per_stage[self.stage1_fusion_level]).sum()
    }

    /// What every spatial side must be a multiple of: the 3D U-Net's (the stage-1 networks see
    /// each slice padded to a multiple of their own).
    pub fn size_divisor(&self) -> Vec<usize> {
        self.unet.size_divisor()
    }

    /// The stride of the stage-1 fusion level, in plane.
    fn stage1_fusion_stride(&self) -> usize {
        cumulative_strides(&self.stage1[0])[self.stage1_fusion_level][0]
    }

    /// The smallest context margins (rows, columns) that give stage 1 at least `context` pixels
    /// in plane around a training patch of `patch` (`[d, h, w]`), rounded up to what
    /// [`validate`](Self::validate) allows.
    pub fn context_margin_for(&self, patch: &[usize], context: &[usize]) -> Vec<usize> {
        let stride = self.stage1_fusion_stride();
        let divisor = self.size_divisor();
        (0..2)
            .map(|axis| {
                let unit = context_margin_unit(stride, divisor[1 + axis]);
                context[axis].saturating_sub(patch[1 + axis]).div_ceil(2).div_ceil(unit) * unit
            })
            .collect()
    }

    /// The input patch of a training step for a 3D patch `patch` (`[d, h, w]`): grown in plane
    /// by the context margins.
    pub fn training_input_size(&self, patch: &[usize]) -> Vec<usize> {
        let margin = self.margin();
        vec![patch[0], patch[1] + 2 * margin[0], patch[2] + 2 * margin[1]]
    }

    /// Builds the network with fresh weights, the stage-1 networks frozen (load their weights
    /// with [`SshsHybrid::with_stage1`]).
    ///
    /// # Panics
    ///
    /// Panics if [`validate`](Self::validate) fails.
    pub fn init(&self, device: &Device) -> SshsHybrid {
        self.validate().expect("a valid SSHSNet hybrid config");
        let width = self.unet.features_per_stage[self.fusion_level];
        let kernel_of = |k: Vec<usize>| StackedConvBlocksConfig::new(SpatialDims::D3, 1, 0, width, k, vec![1, 1, 1]);
        let project_2d = StackedConvBlocksConfig { in_channels: self.features_2d(), ..kernel_of(vec![1, 1, 1]) }
            .with_negative_slope(self.unet.negative_slope)
            .init(device);
        let merge = StackedConvBlocksConfig { in_channels: 2 * width, ..kernel_of(vec![1, 3, 3]) }
            .with_negative_slope(self.unet.negative_slope)
            .init(device);
        let mut unet = self.unet.init(device);
        if self.uses_stage1_prior() {
            let head = unet.decoder.seg_layers.len() - 1;
            // `Param::from_tensor`, not `Param::map`: a mapped parameter takes the new
            // tensor's gradient flag, and a fresh `zeros_like` has none (the head would freeze).
            if let ConvNd::D3(conv) = &mut unet.decoder.seg_layers[head] {
                conv.weight = Param::from_tensor(conv.weight.val().zeros_like());
                conv.bias = conv.bias.as_ref().map(|b| Param::from_tensor(b.val().zeros_like()));
            }
        }
        SshsHybrid {
            stage1: self.stage1.iter().map(|c| c.clone().with_deep_supervision(false).init(device).no_grad()).collect(),
            unet,
            project_2d,
            attention: self
                .tri_attention
                .then(|| CrossTriAttentionConfig::new(width).with_key_reduction(self.key_reduction).init(device)),
            merge,
            fusion_level: self.fusion_level,
            stage1_fusion_level: self.stage1_fusion_level,
            depth_stride: cumulative_strides(&self.unet)[self.fusion_level][0],
            divisor: self.size_divisor(),
            stage1_divisor: stride_product(SpatialDims::D2, &self.stage1[0].strides),
            stage1_fusion_stride: self.stage1_fusion_stride(),
            features_2d: self.features_2d(),
            context_margin: self.margin(),
            stage1_prior: self.uses_stage1_prior(),
        }
    }
}

/// SSHSNet's hybrid network (see the module documentation).
#[derive(Module, Debug)]
pub struct SshsHybrid {
    /// The frozen stage-1 2D U-Nets.
    pub stage1: Vec<PlainConvUNet>,
    /// The 3D U-Net (image + class probabilities in).
    pub unet: PlainConvUNet,
    /// 2D features -> the fusion level's width.
    pub project_2d: StackedConvBlocks,
    /// Cross tri-attention; `None`: concatenation only.
    pub attention: Option<CrossTriAttention>,
    /// Fused (twice the width) -> the fusion level's width.
    pub merge: StackedConvBlocks,
    #[module(skip)]
    pub fusion_level: usize,
    #[module(skip)]
    pub stage1_fusion_level: usize,
    /// Depth stride of the 3D fusion level (2D features are averaged over this many slices).
    #[module(skip)]
    pub depth_stride: usize,
    #[module(skip)]
    pub divisor: Vec<usize>,
    /// What the stage-1 networks need each side of a slice to be a multiple of.
    #[module(skip)]
    pub stage1_divisor: Vec<usize>,
    /// In-plane stride of the stage-1 fusion level.
    #[module(skip)]
    pub stage1_fusion_stride: usize,
    /// Width of the 2D features.
    #[module(skip)]
    pub features_2d: usize,
    /// See [`SshsHybridConfig::context_margin`] (`[0, 0]` for none).
    #[module(skip)]
    pub context_margin: Vec<usize>,
    /// See [`SshsHybridConfig::stage1_prior`].
    #[module(skip)]
    pub stage1_prior: bool,
}

/// What stage 1 gives the 3D U-Net.
pub struct Stage1Output {
    /// Class probabilities averaged over the stage-1 networks, `[b, classes, d, h, w]`.
    pub probabilities: Tensor<5>,
    /// The networks' fusion-level decoder features, concatenated, `[b, features_2d, d, h/s, w/s]`.
    pub features: Tensor<5>,
}

impl SshsHybrid {
    /// The same network with the stage-1 networks replaced (trained weights), frozen.
    pub fn with_stage1(mut self, stage1: Vec<PlainConvUNet>) -> Self {
        self.stage1 = stage1.into_iter().map(|n| n.with_deep_supervision(false).no_grad()).collect();
        self
    }

    /// The same network with the stage-1 parameters frozen again (loading a record may bring
    /// back their gradient flag).
    pub fn refreeze(mut self) -> Self {
        self.stage1 = self.stage1.into_iter().map(|n| n.no_grad()).collect();
        self
    }

    /// The same network with (`true`) or without deep supervision.
    pub fn with_deep_supervision(mut self, deep_supervision: bool) -> Self {
        self.unet = self.unet.with_deep_supervision(deep_supervision);
        self
    }

    pub fn num_outputs(&self) -> usize {
        self.unet.num_outputs()
    }

    /// Image channels (the stage-1 networks' input).
    pub fn in_channels(&self) -> usize {
        self.stage1[0].in_channels()
    }

    pub fn num_classes(&self) -> usize {
        self.unet.num_classes()
    }

    pub fn size_divisor(&self) -> Vec<usize> {
        self.divisor.clone()
    }

    /// Runs the stage-1 networks on every depth slice of `x` (`[b, c, d, h, w]`), detached.
    /// Slices are zero-padded (after the last row and column) to a multiple of the 2D networks'
    /// size divisor, and the outputs cropped back: `h` and `w` must be multiples of the fusion
    /// level's stride (the 3D U-Net's divisor is).
    pub fn stage1(&self, x: Tensor<5>) -> Stage1Output {
        let [b, c, d, h, w] = x.dims();
        let (probabilities, features) = self.stage1_slices(x.swap_dims(1, 2).reshape([b * d, c, 1, h, w]));
        Self::stage1_output(b, d, probabilities, features)
    }

    /// Stage 1 on the whole slices of one volume `[1, c, d, h, w]` (any in-plane size; each
    /// slice is padded for the 2D networks and cropped back), `slices_per_call` slices at a
    /// time: `[1, stage1_channels, d, h, w]`, the mean class probabilities and then the 2D
    /// features repeated over each `s x s` block of pixels they stand for, so that both lie on
    /// the image's grid and a sliding window cuts them with the image (see
    /// [`forward_precomputed`](Self::forward_precomputed)). For prediction.
    pub fn stage1_volume(&self, image: Tensor<5>, slices_per_call: usize) -> Tensor<5> {
        let [b, c, d, h, w] = image.dims();
        assert_eq!(b, 1, "stage 1 runs on one volume at a time");
        let slices = image.swap_dims(1, 2).reshape([d, c, 1, h, w]);
        let s = self.stage1_fusion_stride;
        let chunks: Vec<Tensor<5>> = (0..d)
            .step_by(slices_per_call.max(1))
            .map(|first| {
                let n = slices_per_call.max(1).min(d - first);
                let (probabilities, features) = self.stage1_slices(slices.clone().narrow(0, first, n));
                let [_, f, _, hs, ws] = features.dims();
                let features = features
                    .reshape([n, f, hs, 1, ws, 1])
                    .expand([n, f, hs, s, ws, s])
                    .reshape([n, f, 1, hs * s, ws * s])
                    .narrow(3, 0, h)
                    .narrow(4, 0, w);
                Tensor::cat(vec![probabilities, features], 1)
            })
            .collect();
        let channels = self.stage1_channels();
        Tensor::cat(chunks, 0).reshape([1, d, channels, h, w]).swap_dims(1, 2)
    }

    /// Channels of [`stage1_volume`](Self::stage1_volume): one per class, then the 2D features.
    pub fn stage1_channels(&self) -> usize {
        self.num_classes() + self.features_2d
    }

    /// The stage-1 networks on `n` single slices `[n, c, 1, h, w]`: the mean probabilities
    /// `[n, classes, 1, h, w]` and the concatenated fusion-level features
    /// `[n, features, 1, ceil(h / s), ceil(w / s)]`, detached.
    fn stage1_slices(&self, slices: Tensor<5>) -> (Tensor<5>, Tensor<5>) {
        let [_, _, _, h, w] = slices.dims();
        let up = |n: usize, m: usize| n.div_ceil(m) * m;
        let (hp, wp) = (up(h, self.stage1_divisor[0]), up(w, self.stage1_divisor[1]));
        let slices =
            if (hp, wp) != (h, w) { slices.pad([(0, hp - h), (0, wp - w)], PadMode::Constant(0.0)) } else { slices };
        let s = self.stage1_fusion_stride;
        let crop = |t: Tensor<5>, hh: usize, ww: usize| {
            if t.dims()[3] == hh && t.dims()[4] == ww {
                t
            } else {
                t.narrow(3, 0, hh).narrow(4, 0, ww)
            }
        };
        let mut probabilities: Option<Tensor<5>> = None;
        let mut features = Vec::with_capacity(self.stage1.len());
        for network in &self.stage1 {
            let UNetOutput { logits, level_features, .. } = network.forward_detailed(slices.clone());
            let p = crop(softmax(logits[0].clone().detach(), 1), h, w);
            probabilities = Some(match probabilities {
                None => p,
                Some(sum) => sum + p,
            });
            features.push(crop(level_features[self.stage1_fusion_level].clone().detach(), h.div_ceil(s), w.div_ceil(s)));
        }
        let probabilities = probabilities.expect("at least one stage-1 network").div_scalar(self.stage1.len() as f64);
        (probabilities, Tensor::cat(features, 1))
    }

    /// Slice-major stage-1 outputs (`[b * d, ., 1, ., .]`) on the canonical `[b, ., d, ., .]`.
    fn stage1_output(b: usize, d: usize, probabilities: Tensor<5>, features: Tensor<5>) -> Stage1Output {
        let [_, k, _, h, w] = probabilities.dims();
        let probabilities = probabilities.reshape([b, d, k, h, w]).swap_dims(1, 2);
        let [_, f, _, hs, ws] = features.dims();
        let features = features.reshape([b, d, f, hs, ws]).swap_dims(1, 2);
        Stage1Output { probabilities, features }
    }

    /// Logits per decoder level (with deep supervision; else only full resolution), full
    /// resolution first, on the canonical layout. `x` is the image `[b, c, d, h, w]`: stage 1
    /// runs on all of it, the 3D U-Net on its centre, without the context margins; the logits
    /// are the centre's, `[b, classes, d, h - 2 m_h, w - 2 m_w]`, each side of which must be a
    /// multiple of [`size_divisor`](Self::size_divisor). This is the training forward.
    pub fn forward_detailed(&self, x: Tensor<5>) -> UNetOutput {
        let Stage1Output { probabilities, features } = self.stage1(x.clone());
        let [mh, mw] = [self.context_margin[0], self.context_margin[1]];
        if mh == 0 && mw == 0 {
            return self.forward_with_stage1(x, Stage1Output { probabilities, features });
        }
        let [_, _, _, h, w] = x.dims();
        assert!(h > 2 * mh && w > 2 * mw, "a {h} x {w} input has no centre inside the context margins {mh}, {mw}");
        let centre = |t: Tensor<5>, scale: usize| {
            t.narrow(3, mh / scale, (h - 2 * mh) / scale).narrow(4, mw / scale, (w - 2 * mw) / scale)
        };
        let s = self.stage1_fusion_stride;
        let stage1 = Stage1Output { probabilities: centre(probabilities, 1), features: centre(features, s) };
        self.forward_with_stage1(centre(x, 1), stage1)
    }

    /// [`forward_detailed`](Self::forward_detailed) with the stage-1 outputs given.
    fn forward_with_stage1(&self, x: Tensor<5>, stage1: Stage1Output) -> UNetOutput {
        let Stage1Output { probabilities, features } = stage1;
        let prior = self.stage1_prior.then(|| probabilities.clone().clamp_min(STAGE1_PRIOR_FLOOR).log());
        let skips = self.unet.encoder.forward(Tensor::cat(vec![x, probabilities], 1));
        let fuse = |level: usize, f3: Tensor<5>| {
            if level != self.fusion_level {
                return f3;
            }
            let f2 = self.project_2d.forward(pool_depth(features.clone(), self.depth_stride));
            let fused = match &self.attention {
                Some(attention) => attention.forward(f2, f3),
                None => Tensor::cat(vec![f2, f3], 1),
            };
            self.merge.forward(fused)
        };
        let (mut logits, level_features) =
            self.unet.decoder.forward_levels(skips, self.unet.deep_supervision, fuse, |level, f| {
                self.unet.decoder.head(level).forward(f)
            });
        if let Some(prior) = prior {
            logits[0] = logits[0].clone() + prior;
        }
        UNetOutput { logits, features: level_features[0].clone(), level_features }
    }

    /// Logits (see [`PlainConvUNet::forward`]) of a 3D input `[b, c, d, h, w]`, as
    /// [`forward_detailed`](Self::forward_detailed) (the centre's when there are context
    /// margins).
    ///
    /// # Panics
    ///
    /// Panics if `D` is not 5, or the channels or sizes do not fit.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Vec<Tensor<D>> {
        forward_checked(SpatialDims::D3, &self.divisor, x, |x| self.forward_canonical(x))
    }

    /// Full-resolution logits of a window of a volume with its stage-1 channels: `x` is
    /// `[b, c + stage1_channels, d, h, w]`, the image and then the window's cut of
    /// [`stage1_volume`](Self::stage1_volume). The 2D features are averaged over each `s x s`
    /// block of the window: the feature pixels themselves when the window starts on their grid,
    /// else the area-weighted blend of the two or four it overlaps (sliding windows start
    /// anywhere). For prediction: stage 1 does not run here.
    ///
    /// # Panics
    ///
    /// As [`forward`](Self::forward).
    pub fn forward_precomputed<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let mut logits = forward_checked(SpatialDims::D3, &self.divisor, x, |x| {
            let [b, channels, d, h, w] = x.dims();
            let c = self.in_channels();
            let k = self.num_classes();
            assert_eq!(channels, c + self.stage1_channels(), "the image's channels and then the stage-1 channels");
            let s = self.stage1_fusion_stride;
            let features = x
                .clone()
                .narrow(1, c + k, self.features_2d)
                .reshape([b, self.features_2d, d, h / s, s, w / s, s])
                .mean_dim(6)
                .mean_dim(4)
                .reshape([b, self.features_2d, d, h / s, w / s]);
            let stage1 = Stage1Output { probabilities: x.clone().narrow(1, c, k), features };
            self.forward_with_stage1(x.narrow(1, 0, c), stage1).logits
        });
        logits.swap_remove(0)
    }

    /// [`forward_detailed`](Self::forward_detailed)'s logits.
    pub fn forward_canonical(&self, x: Tensor<5>) -> Vec<Tensor<5>> {
        self.forward_detailed(x).logits
    }
}

/// Averages `x` (`[b, c, d, h, w]`) over groups of `stride` consecutive slices.
fn pool_depth(x: Tensor<5>, stride: usize) -> Tensor<5> {
    if stride == 1 {
        return x;
    }
    let [b, c, d, h, w] = x.dims();
    x.reshape([b, c, d / stride, stride, h * w]).mean_dim(3).reshape([b, c, d / stride, h, w])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tolerance};

    fn device() -> Device {
        Device::flex()
    }

    fn stage1() -> PlainConvUNetConfig {
        PlainConvUNetConfig::new(
            SpatialDims::D2,
            1,
            3,
            vec![4, 8, 8, 8],
            vec![vec![1, 1], vec![2, 2], vec![2, 2], vec![2, 2]],
        )
    }

    /// A 3D U-Net that does not down-sample the thick axis before its last stage.
    fn plan_3d() -> PlainConvUNetConfig {
        PlainConvUNetConfig::new(
            SpatialDims::D3,
            1,
            3,
            vec![4, 8, 8, 16],
            vec![vec![1, 1, 1], vec![1, 2, 2], vec![1, 2, 2], vec![2, 2, 2]],
        )
        .with_kernel_sizes(Some(vec![vec![1, 3, 3], vec![1, 3, 3], vec![3, 3, 3], vec![3, 3, 3]]))
    }

    #[test]
    fn the_fusion_is_at_the_deepest_shared_quarter_resolution_level() {
        let config = SshsHybridConfig::for_stages(vec![stage1(), stage1()], &plan_3d(), 4).unwrap();
        assert_eq!((config.fusion_level, config.stage1_fusion_level), (2, 2));
        assert_eq!(config.unet.in_channels, 1 + 3);
        assert_eq!(config.features_2d(), 16);
        assert_eq!(config.size_divisor(), vec![2, 8, 8]);

        // Stride 2 at most: the half-resolution levels.
        let config = SshsHybridConfig::for_stages(vec![stage1()], &plan_3d(), 2).unwrap();
        assert_eq!((config.fusion_level, config.stage1_fusion_level), (1, 1));
        assert!(SshsHybridConfig::for_stages(vec![], &plan_3d(), 4).is_err());
    }

    #[test]
    fn slices_the_2d_networks_do_not_divide_are_padded_for_them() {
        // Stage 1 with total stride 16; the 3D patch is a multiple of 8 only.
        let deep = PlainConvUNetConfig::new(
            SpatialDims::D2,
            1,
            3,
            vec![4, 8, 8, 8, 8],
            vec![vec![1, 1], vec![2, 2], vec![2, 2], vec![2, 2], vec![2, 2]],
        );
        let config = SshsHybridConfig::for_stages(vec![deep.clone(), deep], &plan_3d(), 4).unwrap();
        assert_eq!(config.size_divisor(), vec![2, 8, 8]);
        let network = config.init(&device());
        let x = Tensor::<5>::random([1, 1, 2, 8, 24], Distribution::Normal(0.0, 1.0), &device());
        let stage1 = network.stage1(x.clone());
        assert_eq!(stage1.probabilities.dims(), [1, 3, 2, 8, 24]);
        assert_eq!(stage1.features.dims(), [1, 16, 2, 2, 6]);
        // The probabilities are the padded slice's, cropped.
        let slice = x.clone().narrow(2, 0, 1).pad([(0, 8), (0, 8)], burn::tensor::ops::PadMode::Constant(0.0));
        let by_hand = network
            .stage1
            .iter()
            .map(|n| softmax(n.forward_canonical(slice.clone()).remove(0), 1))
            .reduce(|a, b| a + b)
            .unwrap()
            .div_scalar(2.0)
            .narrow(3, 0, 8)
            .narrow(4, 0, 24);
        stage1
            .probabilities
            .narrow(2, 0, 1)
            .into_data()
            .assert_approx_eq::<f32>(&by_hand.into_data(), Tolerance::default());
        assert_eq!(network.forward_canonical(x)[0].dims(), [1, 3, 2, 8, 24]);
    }

    #[test]
    fn shapes_with_and_without_tri_attention() {
        let device = device();
        for tri_attention in [true, false] {
            let config = SshsHybridConfig::for_stages(vec![stage1(), stage1()], &plan_3d(), 4)
                .unwrap()
                .with_tri_attention(tri_attention);
            let network = config.init(&device);
            assert_eq!(network.attention.is_some(), tri_attention);
            let x = Tensor::<5>::random([2, 1, 4, 8, 16], Distribution::Normal(0.0, 1.0), &device);
            let out = network.forward_canonical(x.clone());
            assert_eq!(out.len(), 3);
            assert_eq!(out[0].dims(), [2, 3, 4, 8, 16]);
            assert_eq!(out[2].dims(), [2, 3, 4, 2, 4]);
            let stage1 = network.stage1(x);
            assert_eq!(stage1.probabilities.dims(), [2, 3, 4, 8, 16]);
            assert_eq!(stage1.features.dims(), [2, 16, 4, 2, 4]);
        }
    }

    #[test]
    fn stage1_probabilities_are_the_networks_mean_slice_by_slice() {
        let device = device();
        let config = SshsHybridConfig::for_stages(vec![stage1(), stage1()], &plan_3d(), 4).unwrap();
        let network = config.init(&device);
        let x = Tensor::<5>::random([1, 1, 2, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let probabilities = network.stage1(x.clone()).probabilities;
        // Slice 1 through each 2D network by hand.
        let slice = x.narrow(2, 1, 1);
        let by_hand = network
            .stage1
            .iter()
            .map(|n| softmax(n.forward_canonical(slice.clone()).remove(0), 1))
            .reduce(|a, b| a + b)
            .unwrap()
            .div_scalar(2.0);
        probabilities.narrow(2, 1, 1).into_data().assert_approx_eq::<f32>(&by_hand.into_data(), Tolerance::default());
    }

    #[test]
    fn stage1_on_the_whole_volume_gives_the_windows_what_stage1_on_them_gives() {
        let device = device();
        let config = SshsHybridConfig::for_stages(vec![stage1(), stage1()], &plan_3d(), 4).unwrap();
        let network = config.init(&device).with_deep_supervision(false);
        assert_eq!(network.stage1_channels(), 3 + 16);
        let x = Tensor::<5>::random([1, 1, 4, 8, 16], Distribution::Normal(0.0, 1.0), &device);
        // Three slices per call: the chunks must join up.
        let volume = network.stage1_volume(x.clone(), 3);
        assert_eq!(volume.dims(), [1, 19, 4, 8, 16]);
        let direct = network.stage1(x.clone());
        volume
            .clone()
            .narrow(1, 0, 3)
            .into_data()
            .assert_approx_eq::<f32>(&direct.probabilities.into_data(), Tolerance::default());
        // Each feature pixel covers a 4 x 4 block.
        let block = volume.clone().narrow(1, 3, 16).narrow(3, 4, 4).narrow(4, 8, 4);
        let feature = direct.features.narrow(3, 1, 1).narrow(4, 2, 1);
        block.into_data().assert_approx_eq::<f32>(&feature.expand([1, 16, 4, 4, 4]).into_data(), Tolerance::default());
        // The whole volume as one window: the logits of the plain forward.
        let logits = network.forward_precomputed(Tensor::cat(vec![x.clone(), volume], 1));
        logits.into_data().assert_approx_eq::<f32>(&network.forward(x).remove(0).into_data(), Tolerance::default());
    }

    #[test]
    fn with_context_margins_training_sees_the_centre_as_prediction_does() {
        let device = device();
        let plain = SshsHybridConfig::for_stages(vec![stage1()], &plan_3d(), 4).unwrap();
        // Stride 4 and size divisor 8 in plane: margins are multiples of 4.
        assert_eq!(plain.context_margin_for(&[4, 8, 16], &[20, 21]), vec![8, 4]);
        assert_eq!(plain.context_margin_for(&[4, 8, 16], &[8, 8]), vec![0, 0]);
        assert!(plain.clone().with_context_margin(Some(vec![2, 0])).validate().is_err());
        let config = plain.with_context_margin(Some(vec![8, 4]));
        assert_eq!(config.training_input_size(&[4, 8, 16]), vec![4, 24, 24]);
        let network = config.init(&device).with_deep_supervision(false);
        let x = Tensor::<5>::random([1, 1, 4, 24, 24], Distribution::Normal(0.0, 1.0), &device);
        let trained = network.forward(x.clone()).remove(0);
        assert_eq!(trained.dims(), [1, 3, 4, 8, 16]);
        // Prediction: stage 1 on the whole (24 x 24) slices, the window at the centre.
        let volume = network.stage1_volume(x.clone(), 4);
        let window = Tensor::cat(vec![x, volume], 1).narrow(3, 8, 8).narrow(4, 4, 16);
        let predicted = network.forward_precomputed(window);
        predicted.into_data().assert_approx_eq::<f32>(&trained.into_data(), Tolerance::default());
    }

    #[test]
    fn with_the_stage1_prior_the_hybrid_starts_as_stage1() {
        let device = device();
        let config = SshsHybridConfig::for_stages(vec![stage1(), stage1()], &plan_3d(), 4).unwrap().with_stage1_prior(Some(true));
        let network = config.init(&device).with_deep_supervision(false);
        let x = Tensor::<5>::random([1, 1, 2, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let expected = network.stage1(x.clone()).probabilities;
        let predicted = softmax(network.forward(x.clone()).remove(0), 1);
        predicted.into_data().assert_approx_eq::<f32>(&expected.into_data(), Tolerance::default());
        // Without it, a fresh 3D network predicts something else.
        let plain = config.with_stage1_prior(None).init(&device).with_deep_supervision(false);
        let gap = (softmax(plain.forward(x.clone()).remove(0), 1) - plain.stage1(x).probabilities).abs().max();
        let gap = gap.into_scalar::<f32>();
        assert!(gap > 0.01, "{gap}");
    }

    #[test]
    fn the_zeroed_head_of_the_stage1_prior_still_learns() {
        let device = device().autodiff();
        let config = SshsHybridConfig::for_stages(vec![stage1()], &plan_3d(), 4).unwrap().with_stage1_prior(Some(true));
        let network = config.init(&device).with_deep_supervision(false);
        let x = Tensor::<5>::random([1, 1, 2, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let target = Tensor::<5>::random([1, 3, 2, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let grads = (network.forward_canonical(x).remove(0) - target).powi_scalar(2).mean().backward();
        let heads = &network.unet.decoder.seg_layers;
        let crate::blocks::ConvNd::D3(head) = &heads[heads.len() - 1] else { unreachable!() };
        assert!(head.weight.val().grad(&grads).is_some(), "the full-resolution head is frozen");
        assert!(head.bias.as_ref().unwrap().val().grad(&grads).is_some());
    }

    #[test]
    fn only_the_3d_part_gets_gradients() {
        let device = device().autodiff();
        let config = SshsHybridConfig::for_stages(vec![stage1()], &plan_3d(), 4).unwrap();
        let network = config.init(&device);
        let x = Tensor::<5>::random([1, 1, 2, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let loss = network.forward_canonical(x).remove(0).powi_scalar(2).mean();
        let grads = loss.backward();
        let first_2d = &network.stage1[0].encoder.stages[0].convs[0].conv;
        let first_3d = &network.unet.encoder.stages[0].convs[0].conv;
        let weight = |conv: &crate::blocks::ConvNd| match conv {
            crate::blocks::ConvNd::D2(c) => c.weight.val().grad(&grads).is_some(),
            crate::blocks::ConvNd::D3(c) => c.weight.val().grad(&grads).is_some(),
        };
        assert!(!weight(first_2d), "a frozen stage-1 weight got a gradient");
        assert!(weight(first_3d), "the 3D U-Net got no gradient");
        assert!(network.project_2d.convs[0].norm.gamma.as_ref().unwrap().val().grad(&grads).is_some());
    }

    #[test]
    fn the_cascade_round_trips_as_a_network_kind_and_stays_frozen() {
        use crate::network::{Network, NetworkConfig, WeightPrecision};
        let device = device();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("network.bpk");
        let config =
            NetworkConfig::SshsHybrid(SshsHybridConfig::for_stages(vec![stage1(), stage1()], &plan_3d(), 4).unwrap());
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["kind"], "sshsnet_hybrid");
        // A model folder from before the context margin and the prior still reads: neither.
        let mut older = json.clone();
        for field in ["context_margin", "stage1_prior"] {
            older["config"].as_object_mut().unwrap().remove(field).expect("the field is written");
        }
        let NetworkConfig::SshsHybrid(older) = serde_json::from_value(older).unwrap() else { unreachable!() };
        assert_eq!((older.context_margin, older.stage1_prior), (None, None));
        let config: NetworkConfig = serde_json::from_value(json).unwrap();
        let saved = config.init(&device);
        assert_eq!((saved.in_channels(), saved.num_classes(), saved.size_divisor()), (1, 3, vec![2, 8, 8]));
        saved.save_weights(&path, WeightPrecision::Single).unwrap();
        let loaded = config.init(&device).try_load_file(&path).unwrap();
        let x = Tensor::<5>::random([1, 1, 2, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        assert_eq!(saved.forward_logits(x.clone()).into_data(), loaded.forward_logits(x.clone()).into_data());
        // Loaded on an autodiff device, the stage-1 networks are still frozen.
        let autodiff = device.autodiff();
        let Network::SshsHybrid(loaded) = config.init(&autodiff).try_load_file(&path).unwrap() else { unreachable!() };
        let grads = loaded.forward_canonical(x.to_device(&autodiff)).remove(0).sum().backward();
        let crate::blocks::ConvNd::D2(conv) = &loaded.stage1[1].encoder.stages[0].convs[0].conv else { unreachable!() };
        assert!(conv.weight.val().grad(&grads).is_none());
    }
}
