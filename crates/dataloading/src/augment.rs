//! Training-time data augmentation: nnU-Net v2's `nnUNetTrainer.get_training_transforms`
//! (batchgeneratorsv2), on patches in memory, pure Rust, deterministic from the caller's RNG.
//!
//! # Patches
//! A [`Patch`] holds `C` image channels and a segmentation (class indices) on a grid
//! `shape = [s0, s1, s2]` in C order, last axis fastest: images `[C, s0, s1, s2]`, seg
//! `[s0, s1, s2]`. The axes are the canonical voxel axes `(i, j, k)` (left-right,
//! posterior-anterior, inferior-superior; see [`spineseg_preprocessing::plan`]). A 2D sagittal patch is a patch of
//! shape `[1, s1, s2]` (one `i` slice), so one code path serves 2D and 3D and "axis `a`" always
//! means the same anatomical axis. Such a patch is *planar*: the spatial transform stays in the
//! `(j, k)` plane. 3D patches of strongly anisotropic data are planar too (nnU-Net's
//! `do_dummy_2d_data_aug`, see [`Dummy2d`]).
//!
//! # Transforms, in nnU-Net's order
//! `BG(a, b)` is nnU-Net's `BGContrast` sampling: with probability 0.5 `U(a, 1)`, otherwise
//! `U(1, b)`. "p" is the probability per patch; transforms marked "per channel" draw their
//! parameters for each channel independently (`synchronize_channels=False`).
//!
//! | # | transform | nnU-Net v2 | spineseg default ([`AugmentationConfig::default`]) |
//! |---|-----------|------------|-----------------------------------------------------|
//! | 1 | rotation (spatial) | p 0.2; 2D: `U(±180°)` in-plane (`±15°` when the patch's aspect ratio > 1.5); 3D: `U(±30°)` about each axis; dummy 2D: `U(±180°)` in-plane only | p 0.2; about `i` (in the sagittal plane) `U(±15°)`; 3D also about `j` `U(±15°)` and about `k` `U(±30°)`; planar: about `i` only. `p_rotation`, `rotation_max_deg` |
//! | 1 | scaling (spatial) | p 0.2; factor `U(0.7, 1.4)`, the same for all axes (planar: in-plane axes only) | same. `p_scaling`, `scaling` |
//! | 1 | elastic deformation (spatial) | off (`p_elastic_deform=0`); scale `U(0, 0.2)` of the patch, magnitude `U(0, 0.2)` of the patch | off, offered. `p_elastic`, `elastic_scale`, `elastic_magnitude` |
//! | 2 | Gaussian noise | p 0.1; `N(0, σ²)` with `σ ~ U(0, 0.1)` (nnU-Net calls σ "variance"), one noise field for all channels | same. `p_noise`, `noise_std` |
//! | 3 | Gaussian blur | p 0.2; each channel with p 0.5; `σ ~ U(0.5, 1)` voxels, drawn per channel and axis | same. `p_blur`, `blur_p_per_channel`, `blur_sigma` |
//! | 4 | multiplicative brightness | p 0.15; `x·m`, `m ~ BG(0.75, 1.25)` per channel | same. `p_brightness`, `brightness` |
//! | 5 | contrast | p 0.15; `(x − mean)·f + mean`, `f ~ BG(0.75, 1.25)` per channel, clipped to the channel's former range | same. `p_contrast`, `contrast` |
//! | 6 | simulate low resolution | p 0.25; each channel with p 0.5; zoom `U(0.5, 1)` (same for all axes): nearest-exact down, linear (3D) / cubic (2D) up; not along the slice axis when planar | same. `p_low_res`, `low_res_p_per_channel`, `low_res_zoom` |
//! | 7 | gamma, inverted | p 0.1; `γ ~ BG(0.7, 1.5)` per channel applied to `−x` rescaled to [0, 1], mean and std restored | same. `p_gamma_inverted`, `gamma` |
//! | 8 | gamma | p 0.3; as 7 without inversion | same. `p_gamma` |
//! | 9 | mirror | each spatial axis with p 0.5 | **only `i` (left-right)** with p 0.5; 2D: none. `p_mirror`, `mirror_axes` |
//!
//! Contrast and scanner transforms (not nnU-Net's; [`crate::augment_contrast`]), all **off by
//! default** and drawn only when their probability is above 0, so the batches of the default
//! (and of every configuration written before them) are unchanged bit for bit. They run first,
//! before step 2: they model the tissue contrast, on which the acquisition effects act.
//! [`AugmentationConfig::contrast_robust`] switches them on (`spineseg train --augmentation
//! contrast`) and widens steps 6-8.
//!
//! | # | transform | parameters (default ranges; per channel, each channel with its probability) |
//! |---|-----------|------------------------------------------------------------|
//! | 0a | intensity inversion about the channel mean, `x -> 2·mean − x` (reverses the order of tissues) | `p_invert` |
//! | 0b | histogram remapping: a random piecewise-linear curve on `[p0.5, p99.5]` of the channel, `U{4..=8}` knots, `(1 − s)·t + s·u` with `s ~ U(0.5, 1)`, `u ~ U(0, 1)` per knot; monotone (sorted `u`) with p 0.5; mean and std restored | `p_remap`, `remap_points`, `remap_strength`, `remap_p_monotone` |
//! | 0c | multiplicative bias field `exp(p)`, `p` a random polynomial of degree ≤ 3 in the patch coordinates with `max |p| ~ U(0.1, 0.4)`, applied above the channel minimum | `p_bias_field`, `bias_field_order`, `bias_field_magnitude` |
//!
//! Images are interpolated linearly and with zeros outside the source (the images are
//! normalised, so 0 is the mean). Labels follow nnU-Net v2's default `mode_seg='bilinear'`:
//! each output voxel takes the class with the largest summed trilinear weight among its 8 source
//! neighbours (= argmax of linearly interpolated one-hot maps; source voxels outside count as
//! class 0), so labels stay class indices already present. [`SegInterpolation::Nearest`] is
//! the older nnU-Net / batchgenerators behaviour. Intensity transforms never touch the seg.
//!
//! # Departures from nnU-Net for lumbar spine, and why
//! - **Mirroring**: mirroring left-right (`i`) keeps a sagittal spine a plausible spine. Mirroring
//!   superior-inferior (`k`) puts L5 above L1, and anterior-posterior (`j`) puts the vertebral
//!   bodies behind the canal; both destroy the level identity the network must learn from
//!   context (sacrum below, ribs above). Default mirror axes are therefore `i` only; a 2D
//!   sagittal slice has no `i` axis, so 2D has no mirroring. ([`AugmentationConfig::nnunet`]
//!   restores nnU-Net's all-axes mirroring, for comparison.)
//! - **Rotation**: nnU-Net's ±180° (2D, dummy 2D) turns a spine upside down, with the same
//!   problem; in-plane rotation is limited to ±15° (the value nnU-Net itself uses for elongated 2D
//!   patches), which covers real variation in lordosis and patient positioning. Tilting about
//!   `j` (scoliosis-like) is ±15°; twisting about the vertical `k` axis cannot change the level
//!   order and keeps nnU-Net's ±30°.
//! - **Seg padding**: nnU-Net pads seg with −1 and maps −1 to 0 at the end of the pipeline
//!   (`RemoveLabelTansform(-1, 0)`), so its loss sees 0 there; we pad with 0 directly.
//!
//! The enlarged source region these transforms need ("initial patch size") is computed by
//! [`initial_patch_size`]. Deep-supervision downsampling of the seg is left to the trainer.

use crate::augment_contrast::{self, RemapCurve};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// A `[lo, hi]` range of a random parameter.
pub type Range = [f64; 2];

/// Whether 3D patches are augmented in-plane only (nnU-Net's `do_dummy_2d_data_aug`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dummy2d {
    /// nnU-Net's rule: in-plane when `max(patch) / patch[i] > 3` (`ANISO_THRESHOLD`), i.e. the
    /// patch is thin along the slice axis `i`.
    Auto,
    Always,
    Never,
}

/// How labels are interpolated by the spatial transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegInterpolation {
    /// Argmax of the trilinearly interpolated one-hot maps (nnU-Net v2's default).
    Linear,
    /// The nearest source voxel.
    Nearest,
}

/// Parameters of the training augmentation (see the module documentation for the table).
/// Probabilities are per patch unless named `_per_channel`; ranges are `[lo, hi]`; angles in
/// degrees about the canonical axes `(i, j, k)`. Missing fields in JSON take the defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AugmentationConfig {
    pub p_rotation: f64,
    /// Largest rotation about `i`, `j`, `k`; each angle is `U(±max)`. Planar patches rotate
    /// about `i` only.
    pub rotation_max_deg: [f64; 3],
    pub p_scaling: f64,
    /// Scale factor of the sampling grid: > 1 samples a larger region (structures get smaller).
    pub scaling: Range,
    pub p_elastic: f64,
    /// Smoothness of the deformation field: Gaussian sigma as a fraction of the patch side.
    pub elastic_scale: Range,
    /// Largest displacement as a fraction of the patch side.
    pub elastic_magnitude: Range,
    pub dummy_2d: Dummy2d,
    pub seg_interpolation: SegInterpolation,
    pub p_noise: f64,
    pub noise_std: Range,
    pub p_blur: f64,
    pub blur_p_per_channel: f64,
    pub blur_sigma: Range,
    pub p_brightness: f64,
    pub brightness: Range,
    pub p_contrast: f64,
    pub contrast: Range,
    pub p_low_res: f64,
    pub low_res_p_per_channel: f64,
    pub low_res_zoom: Range,
    pub p_gamma_inverted: f64,
    pub p_gamma: f64,
    pub gamma: Range,
    /// Probability of mirroring each axis in `mirror_axes`.
    pub p_mirror: f64,
    /// Which canonical axes `(i, j, k)` may be mirrored.
    pub mirror_axes: [bool; 3],
    /// Probability, per channel, of an intensity inversion about the mean
    /// ([`augment_contrast::invert`]). Off by default.
    pub p_invert: f64,
    /// Probability, per channel, of a random histogram remapping
    /// ([`augment_contrast::histogram_remap`]). Off by default.
    pub p_remap: f64,
    /// Number of knots of a remapping curve, `U{lo..=hi}` (at least 2).
    pub remap_points: [usize; 2],
    /// How far a curve departs from the identity: 0 identity, 1 fully random knots.
    pub remap_strength: Range,
    /// Probability that a remapping curve is monotone (keeps the order of tissues).
    pub remap_p_monotone: f64,
    /// Probability, per channel, of a multiplicative bias field
    /// ([`augment_contrast::bias_field`]). Off by default.
    pub p_bias_field: f64,
    /// Total degree of the bias field's log polynomial.
    pub bias_field_order: usize,
    /// Largest `|log b|` of the field over the patch, `U(lo, hi)`.
    pub bias_field_magnitude: Range,
}

impl Default for AugmentationConfig {
    /// nnU-Net v2's transforms with the spine departures of the module documentation.
    fn default() -> Self {
        AugmentationConfig {
            p_rotation: 0.2,
            rotation_max_deg: [15.0, 15.0, 30.0],
            p_scaling: 0.2,
            scaling: [0.7, 1.4],
            p_elastic: 0.0,
            elastic_scale: [0.0, 0.2],
            elastic_magnitude: [0.0, 0.2],
            dummy_2d: Dummy2d::Auto,
            seg_interpolation: SegInterpolation::Linear,
            p_noise: 0.1,
            noise_std: [0.0, 0.1],
            p_blur: 0.2,
            blur_p_per_channel: 0.5,
            blur_sigma: [0.5, 1.0],
            p_brightness: 0.15,
            brightness: [0.75, 1.25],
            p_contrast: 0.15,
            contrast: [0.75, 1.25],
            p_low_res: 0.25,
            low_res_p_per_channel: 0.5,
            low_res_zoom: [0.5, 1.0],
            p_gamma_inverted: 0.1,
            p_gamma: 0.3,
            gamma: [0.7, 1.5],
            p_mirror: 0.5,
            mirror_axes: [true, false, false],
            p_invert: 0.0,
            p_remap: 0.0,
            remap_points: [4, 8],
            remap_strength: [0.5, 1.0],
            remap_p_monotone: 0.5,
            p_bias_field: 0.0,
            bias_field_order: 3,
            bias_field_magnitude: [0.1, 0.4],
        }
    }
}

impl AugmentationConfig {
    /// No augmentation at all (validation): patches are plain crops.
    pub fn none() -> Self {
        AugmentationConfig {
            p_rotation: 0.0,
            p_scaling: 0.0,
            p_elastic: 0.0,
            p_noise: 0.0,
            p_blur: 0.0,
            p_brightness: 0.0,
            p_contrast: 0.0,
            p_low_res: 0.0,
            p_gamma_inverted: 0.0,
            p_gamma: 0.0,
            p_mirror: 0.0,
            mirror_axes: [false; 3],
            ..AugmentationConfig::default()
        }
    }

    /// nnU-Net v2's own choices for a patch (`configure_rotation_dummyDA_mirroring_and_inital_patch_size`):
    /// mirroring along every axis and its rotation ranges. Not anatomically safe for the spine;
    /// for comparisons.
    pub fn nnunet(patch_size: &[usize]) -> Self {
        let max = *patch_size.iter().max().unwrap_or(&1) as f64;
        let min = *patch_size.iter().min().unwrap_or(&1) as f64;
        let rotation = match patch_size.len() {
            2 if max / min > 1.5 => [15.0, 0.0, 0.0],
            2 => [180.0, 0.0, 0.0],
            _ if max / patch_size[0] as f64 > ANISO_THRESHOLD => [180.0, 0.0, 0.0],
            _ => [30.0, 30.0, 30.0],
        };
        AugmentationConfig { rotation_max_deg: rotation, mirror_axes: [true; 3], ..AugmentationConfig::default() }
    }

    /// The default plus the contrast and scanner transforms (`spineseg train --augmentation
    /// contrast`), for a model that must hold on T1- and T2-weighted scans of scanners it has
    /// not seen. Chosen by measurement: `crates/dataloading/examples/contrast_gap.rs` compares
    /// 96 mm sagittal patches around vertebral bodies of lumbar-real's MyoSegmenTUM cases (T1)
    /// and spider-t2space (T2 SPACE), each patch standardised (the instance norm removes shift
    /// and scale), augmenting one group and comparing with the other as it is (numbers in
    /// docs/ARCHITECTURE.md, crates/dataloading):
    /// - **inversion p 0.2, remapping p 0.3** (4-8 knots, strength `U(0.5, 1)`, half of the
    ///   curves monotone): T2 bodies are brighter than their patch (body contrast median +0.14
    ///   patch std), MyoSegmenTUM bodies are not (-0.07); only 59 % of T1 patches fall in the
    ///   range of (default-augmented) T2 patches. Each transform alone brings that to 82 %,
    ///   together 89 % (T2 vs other T2 cases: 96 %), and the median histogram distance to the
    ///   nearest augmented patch from 0.125 to 0.098 (floor 0.094). Doubling either probability
    ///   gains at most 3 points while showing the original tissue order on far fewer patches
    ///   (here about 70 % keep it). Monotone curves alone do not move the body contrast (60 %).
    /// - **gamma `BG(0.5, 2)`** (nnU-Net: 0.7-1.5): the histogram distance T1 -> T2 0.159 -> 0.132.
    /// - **low resolution p 0.5, zoom `U(0.35, 1)`** (nnU-Net: p 0.25, 0.5-1): the largest gap is
    ///   sharpness (neighbour roughness: T1 patches 0.09-0.27, T2 0.27-0.72, upsampled 3.9 mm
    ///   MyoSegmenTUM vs 0.47 mm SPACE); this cuts its distance T2 -> T1 from 0.259 to 0.230.
    ///   More noise does not help the other way round (0.320 -> 0.317), so noise stays nnU-Net's.
    /// - **bias field p 0.3**, order 3, `max |log b|` `U(0.1, 0.4)`: the shading of the bodies
    ///   between the upper and lower half of a patch spans about ±0.45 (log ratio, p2.5-p97.5)
    ///   in both groups, and the field's amplitude is kept within that. Measured, it widens
    ///   that spread only slightly and moves none of the distances above: it is there for coil
    ///   and field-strength shading on other scanners, not chosen by these numbers.
    pub fn contrast_robust() -> Self {
        AugmentationConfig {
            p_invert: 0.2,
            p_remap: 0.3,
            remap_points: [4, 8],
            remap_strength: [0.5, 1.0],
            remap_p_monotone: 0.5,
            p_bias_field: 0.3,
            bias_field_order: 3,
            bias_field_magnitude: [0.1, 0.4],
            gamma: [0.5, 2.0],
            p_low_res: 0.5,
            low_res_zoom: [0.35, 1.0],
            ..AugmentationConfig::default()
        }
    }

    /// Whether any spatial transform can happen (then the source region is enlarged).
    pub fn has_spatial(&self) -> bool {
        self.p_rotation > 0.0 || self.p_scaling > 0.0 || self.p_elastic > 0.0
    }

    /// Whether a patch of `patch_size` (2 or 3 entries) is augmented in-plane only.
    pub fn is_planar(&self, patch_size: &[usize]) -> bool {
        if patch_size.len() == 2 {
            return true;
        }
        match self.dummy_2d {
            Dummy2d::Always => true,
            Dummy2d::Never => false,
            Dummy2d::Auto => {
                let max = *patch_size.iter().max().expect("a 3D patch has sides") as f64;
                max / patch_size[0].max(1) as f64 > ANISO_THRESHOLD
            }
        }
    }

    /// Checks probabilities and ranges; the message names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let probs = [
            ("p_rotation", self.p_rotation),
            ("p_scaling", self.p_scaling),
            ("p_elastic", self.p_elastic),
            ("p_noise", self.p_noise),
            ("p_blur", self.p_blur),
            ("blur_p_per_channel", self.blur_p_per_channel),
            ("p_brightness", self.p_brightness),
            ("p_contrast", self.p_contrast),
            ("p_low_res", self.p_low_res),
            ("low_res_p_per_channel", self.low_res_p_per_channel),
            ("p_gamma_inverted", self.p_gamma_inverted),
            ("p_gamma", self.p_gamma),
            ("p_mirror", self.p_mirror),
            ("p_invert", self.p_invert),
            ("p_remap", self.p_remap),
            ("remap_p_monotone", self.remap_p_monotone),
            ("p_bias_field", self.p_bias_field),
        ];
        for (name, p) in probs {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("augmentation {name} = {p} is not a probability"));
            }
        }
        let ranges = [
            ("scaling", self.scaling, 1e-3),
            ("elastic_scale", self.elastic_scale, 0.0),
            ("elastic_magnitude", self.elastic_magnitude, 0.0),
            ("noise_std", self.noise_std, 0.0),
            ("blur_sigma", self.blur_sigma, 0.0),
            ("brightness", self.brightness, 0.0),
            ("contrast", self.contrast, 0.0),
            ("low_res_zoom", self.low_res_zoom, 1e-3),
            ("gamma", self.gamma, 1e-3),
            ("remap_strength", self.remap_strength, 0.0),
            ("bias_field_magnitude", self.bias_field_magnitude, 0.0),
        ];
        for (name, [lo, hi], min) in ranges {
            if !(lo.is_finite() && hi.is_finite() && lo >= min && lo <= hi) {
                return Err(format!("augmentation {name} = [{lo}, {hi}] must be finite, ordered and >= {min}"));
            }
        }
        if self.low_res_zoom[1] > 1.0 {
            return Err(format!("augmentation low_res_zoom {:?} must not exceed 1", self.low_res_zoom));
        }
        if self.remap_strength[1] > 1.0 {
            return Err(format!("augmentation remap_strength {:?} must not exceed 1", self.remap_strength));
        }
        if !(2..=64).contains(&self.remap_points[0])
            || self.remap_points[1] < self.remap_points[0]
            || self.remap_points[1] > 64
        {
            return Err(format!("augmentation remap_points {:?} must be ordered, within 2..=64", self.remap_points));
        }
        if !(1..=8).contains(&self.bias_field_order) {
            return Err(format!("augmentation bias_field_order {} must be 1..=8", self.bias_field_order));
        }
        if self.bias_field_magnitude[1] > 3.0 {
            return Err(format!("augmentation bias_field_magnitude {:?} must not exceed 3", self.bias_field_magnitude));
        }
        if !self.rotation_max_deg.iter().all(|a| a.is_finite() && *a >= 0.0) {
            return Err(format!("augmentation rotation_max_deg {:?} must be >= 0", self.rotation_max_deg));
        }
        Ok(())
    }
}

/// nnU-Net's `ANISO_THRESHOLD` for dummy 2D augmentation.
pub const ANISO_THRESHOLD: f64 = 3.0;

/// The smallest scale factor nnU-Net's `get_patch_size` allows for (it passes `(0.85, 1.25)`,
/// not the scaling range; scaled-out patches see zero padding at their borders, as in nnU-Net).
pub const INITIAL_PATCH_SCALE: f64 = 0.85;

/// The enlarged region sampled before the spatial transform (nnU-Net's `initial_patch_size`),
/// per axis of `patch_size` (2D: `(j, k)`; 3D: `(i, j, k)`): the bounding box of the patch
/// rotated by every angle up to the configured maxima (at most 90°), divided by
/// [`INITIAL_PATCH_SCALE`], rounded down, never smaller than the patch. nnU-Net rotates only the
/// corner vector `patch_size`, which can underestimate the box; we take the exact box. Planar 3D
/// patches keep their `i` side. Without spatial transforms it is the patch itself.
pub fn initial_patch_size(patch_size: &[usize], config: &AugmentationConfig) -> Vec<usize> {
    if !config.has_spatial() {
        return patch_size.to_vec();
    }
    let planar = config.is_planar(patch_size);
    let shape3 = to_3d(patch_size);
    let max_rad = |a: usize| {
        if config.p_rotation > 0.0 && (a == 0 || !planar) {
            config.rotation_max_deg[a].min(90.0).to_radians()
        } else {
            0.0
        }
    };
    let half: [f64; 3] = shape3.map(|s| s as f64 / 2.0);
    let mut extent = half;
    // Rotating about one axis at a time, as nnU-Net, on a fine grid of angles.
    for axis in 0..3 {
        let m = max_rad(axis);
        if m == 0.0 {
            continue;
        }
        let steps = 90;
        for s in 0..=steps {
            let t = m * s as f64 / steps as f64;
            let r = rotation_about(axis, t);
            for corner in 0..8 {
                let c = [0, 1, 2].map(|a| if corner >> a & 1 == 1 { half[a] } else { -half[a] });
                let p = mat_vec(&r, c);
                for a in 0..3 {
                    extent[a] = extent[a].max(p[a].abs());
                }
            }
        }
    }
    let out: [usize; 3] = [0, 1, 2].map(|a| {
        let side = (2.0 * extent[a] / INITIAL_PATCH_SCALE + 1e-9).floor() as usize;
        if planar && a == 0 {
            shape3[0]
        } else {
            side.max(shape3[a])
        }
    });
    if patch_size.len() == 2 {
        out[1..].to_vec()
    } else {
        out.to_vec()
    }
}

/// `(j, k)` -> `[1, j, k]`; 3D unchanged.
pub(crate) fn to_3d(patch_size: &[usize]) -> [usize; 3] {
    match *patch_size {
        [j, k] => [1, j, k],
        [i, j, k] => [i, j, k],
        _ => panic!("patch size {patch_size:?} should have 2 or 3 sides"),
    }
}

/// Image channels and segmentation on one grid, C order (see the module documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    pub shape: [usize; 3],
    pub channels: usize,
    /// `[channels, s0, s1, s2]`, last axis fastest.
    pub images: Vec<f32>,
    /// `[s0, s1, s2]` class indices.
    pub seg: Vec<u8>,
}

impl Patch {
    /// A zero patch.
    pub fn zeros(shape: [usize; 3], channels: usize) -> Patch {
        let n = shape.iter().product::<usize>();
        Patch { shape, channels, images: vec![0.0; n * channels], seg: vec![0; n] }
    }
    pub fn voxels(&self) -> usize {
        self.shape.iter().product()
    }
    /// Flat index of `[a, b, c]` within one channel.
    #[inline]
    pub fn index(&self, [a, b, c]: [usize; 3]) -> usize {
        (a * self.shape[1] + b) * self.shape[2] + c
    }
    pub fn channel(&self, c: usize) -> &[f32] {
        let n = self.voxels();
        &self.images[c * n..(c + 1) * n]
    }
    pub fn channel_mut(&mut self, c: usize) -> &mut [f32] {
        let n = self.voxels();
        &mut self.images[c * n..(c + 1) * n]
    }
}

// ---------------------------------------------------------------------------------------------
// Spatial transform

type Mat3 = [[f64; 3]; 3];

const IDENTITY: Mat3 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

fn mat_mul(a: &Mat3, b: &Mat3) -> Mat3 {
    let mut m = [[0.0; 3]; 3];
    for (r, row) in m.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|k| a[r][k] * b[k][c]).sum();
        }
    }
    m
}

fn mat_vec(a: &Mat3, v: [f64; 3]) -> [f64; 3] {
    [0, 1, 2].map(|r| a[r][0] * v[0] + a[r][1] * v[1] + a[r][2] * v[2])
}

/// Rotation by `t` radians about canonical axis `axis` (right-handed in `(i, j, k)`).
fn rotation_about(axis: usize, t: f64) -> Mat3 {
    let (s, c) = t.sin_cos();
    match axis {
        0 => [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]],
        1 => [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]],
        _ => [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]],
    }
}

/// One draw of the spatial transform: output voxel `o` samples the source at
/// `centre_in + affine · (o − centre_out + elastic(o))`, where `centre_out = (out − 1) / 2` and
/// `centre_in = offset + centre_out` with the integer `offset = (in − out) / 2` (the crop that
/// applies when there is no transform). Elastic offsets are in output voxels.
#[derive(Debug, Clone, PartialEq)]
pub struct SpatialParams {
    /// `None`: no rotation or scaling.
    pub affine: Option<[[f64; 3]; 3]>,
    /// `[s0, s1, s2, 3]` displacement per output voxel, or `None`.
    pub elastic: Option<Vec<f32>>,
}

impl SpatialParams {
    pub fn identity() -> Self {
        SpatialParams { affine: None, elastic: None }
    }

    /// Rotation by `degrees` about canonical axis `axis` (2D patches: axis 0, in-plane).
    pub fn rotation(axis: usize, degrees: f64) -> Self {
        SpatialParams { affine: Some(rotation_about(axis, degrees.to_radians())), elastic: None }
    }

    /// Draws nnU-Net's spatial parameters for an output patch of `out_shape`.
    pub fn sample(config: &AugmentationConfig, out_shape: [usize; 3], planar: bool, rng: &mut impl Rng) -> Self {
        // The three decisions are drawn first and always, as nnU-Net.
        let do_rotation = rng.gen::<f64>() < config.p_rotation;
        let do_scale = rng.gen::<f64>() < config.p_scaling;
        let do_deform = rng.gen::<f64>() < config.p_elastic;
        let mut affine = None;
        if do_rotation || do_scale {
            let mut r = IDENTITY;
            if do_rotation {
                for axis in 0..3 {
                    if planar && axis != 0 {
                        continue;
                    }
                    let m = config.rotation_max_deg[axis].to_radians();
                    let t = if m > 0.0 { rng.gen_range(-m..=m) } else { 0.0 };
                    r = mat_mul(&rotation_about(axis, t), &r);
                }
            }
            if do_scale {
                let s = uniform(rng, config.scaling);
                let scale = [if planar { 1.0 } else { s }, s, s];
                let sm = [[scale[0], 0.0, 0.0], [0.0, scale[1], 0.0], [0.0, 0.0, scale[2]]];
                r = mat_mul(&r, &sm);
            }
            affine = Some(r);
        }
        let elastic = do_deform.then(|| elastic_field(config, out_shape, planar, rng));
        SpatialParams { affine, elastic }
    }

    pub fn is_identity(&self) -> bool {
        self.affine.is_none() && self.elastic.is_none()
    }
}

fn uniform(rng: &mut impl Rng, [lo, hi]: Range) -> f64 {
    if hi > lo {
        rng.gen_range(lo..hi)
    } else {
        lo
    }
}

/// nnU-Net's `BGContrast`: half the time below 1, half the time above.
fn bg_contrast(rng: &mut impl Rng, [lo, hi]: Range) -> f64 {
    if rng.gen::<f64>() < 0.5 && lo < 1.0 {
        uniform(rng, [lo, 1.0f64.min(hi)])
    } else {
        uniform(rng, [lo.max(1.0), hi.max(lo.max(1.0))])
    }
}

/// A standard normal (Box-Muller; the `rand` version here has no normal distribution).
fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>(); // (0, 1]
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// nnU-Net's elastic field: per component white noise, Gaussian-smoothed with sigma =
/// `scale · side` (three box blurs, O(n) for any sigma), rescaled so its largest displacement is
/// `max(magnitude · side, 1)` voxels. Planar patches get no displacement along `i`.
fn elastic_field(config: &AugmentationConfig, shape: [usize; 3], planar: bool, rng: &mut impl Rng) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let mut field = vec![0f32; n * 3];
    let scale = uniform(rng, config.elastic_scale);
    for d in 0..3 {
        if planar && d == 0 {
            continue;
        }
        let magnitude = uniform(rng, config.elastic_magnitude);
        let mut comp: Vec<f32> = (0..n).map(|_| normal(rng) as f32).collect();
        for axis in 0..3 {
            if planar && axis == 0 {
                continue;
            }
            let sigma = scale * shape[d] as f64;
            let w = (4.0 * sigma * sigma + 1.0).sqrt();
            let radius = ((w - 1.0) / 2.0).round() as usize;
            for _ in 0..3 {
                box_blur_axis(&mut comp, shape, axis, radius);
            }
        }
        let max = comp.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        let target = (magnitude * shape[d] as f64).max(1.0) as f32;
        for (p, v) in comp.iter().enumerate() {
            field[p * 3 + d] = v / max * target;
        }
    }
    field
}

/// `(count, stride, step)` of the lines along `axis` of a C-order grid: each line starts at
/// `outer * stride_outer + inner` (see callers) and advances by `step`.
fn lines(shape: [usize; 3], axis: usize) -> (usize, usize, usize) {
    let step: usize = shape[axis + 1..].iter().product();
    let outer: usize = shape[..axis].iter().product();
    (outer, step, shape[axis])
}

/// Calls `f(start, step, len)` for every line along `axis`.
fn for_each_line(shape: [usize; 3], axis: usize, mut f: impl FnMut(usize, usize, usize)) {
    let (outer, step, len) = lines(shape, axis);
    for o in 0..outer {
        for inner in 0..step {
            f(o * len * step + inner, step, len);
        }
    }
}

/// Box blur of half-width `radius` along `axis`, replicate borders.
fn box_blur_axis(data: &mut [f32], shape: [usize; 3], axis: usize, radius: usize) {
    if radius == 0 || shape[axis] < 2 {
        return;
    }
    let mut buf = Vec::new();
    let w = (2 * radius + 1) as f32;
    for_each_line(shape, axis, |start, step, len| {
        buf.clear();
        buf.extend((0..len).map(|x| data[start + x * step]));
        let at = |x: isize| buf[x.clamp(0, len as isize - 1) as usize];
        let r = radius as isize;
        let mut sum: f32 = (-r..=r).map(at).sum();
        for x in 0..len as isize {
            data[start + x as usize * step] = sum / w;
            sum += at(x + r + 1) - at(x - r);
        }
    });
}

/// Applies `params` to `input`, producing a patch of `out_shape` (see [`SpatialParams`]); all
/// channels and the seg are interpolated in one pass over shared coordinates. Outside the
/// source, images are 0 and seg 0.
pub fn spatial_transform(
    input: &Patch,
    out_shape: [usize; 3],
    params: &SpatialParams,
    seg_mode: SegInterpolation,
) -> Patch {
    let offset: [usize; 3] = [0, 1, 2].map(|a| input.shape[a].saturating_sub(out_shape[a]) / 2);
    if params.is_identity() && (0..3).all(|a| input.shape[a] >= out_shape[a]) {
        return crop_patch(input, offset, out_shape);
    }
    let offset = [0, 1, 2].map(|a| ((input.shape[a] as f64 - out_shape[a] as f64) / 2.0).floor());
    let centre_out = out_shape.map(|s| (s as f64 - 1.0) / 2.0);
    let centre_in = [0, 1, 2].map(|a| offset[a] + centre_out[a]);
    let a = params.affine.unwrap_or(IDENTITY);
    let channels = input.channels;
    let mut out = Patch::zeros(out_shape, channels);
    let n_out = out.voxels();
    let n_in = input.voxels();
    let [s0, s1, s2] = input.shape;
    let st = [s1 * s2, s2, 1];
    let size = [s0 as isize, s1 as isize, s2 as isize];
    let mut p = 0;
    for o0 in 0..out_shape[0] {
        for o1 in 0..out_shape[1] {
            // The source coordinate is affine in o2: start of the row plus o2 times column 2.
            let d0 = o0 as f64 - centre_out[0];
            let d1 = o1 as f64 - centre_out[1];
            let row = [0, 1, 2].map(|r| centre_in[r] + a[r][0] * d0 + a[r][1] * d1);
            for o2 in 0..out_shape[2] {
                let d2 = o2 as f64 - centre_out[2];
                let mut src = [0, 1, 2].map(|r| row[r] + a[r][2] * d2);
                if let Some(e) = &params.elastic {
                    let ed = [e[p * 3] as f64, e[p * 3 + 1] as f64, e[p * 3 + 2] as f64];
                    for (r, sv) in src.iter_mut().enumerate() {
                        *sv += a[r][0] * ed[0] + a[r][1] * ed[1] + a[r][2] * ed[2];
                    }
                }
                // Lower corner and weight of the upper one. An exact coordinate uses the lower
                // corner twice (weight 0), which keeps planar patches on the fast path.
                let fl = src.map(f64::floor);
                let lo = fl.map(|v| v as isize);
                let f = [0, 1, 2].map(|ax| (src[ax] - fl[ax]) as f32);
                let hi = [0, 1, 2].map(|ax| if f[ax] == 0.0 { lo[ax] } else { lo[ax] + 1 });
                let g = f.map(|v| 1.0 - v);
                let w = [
                    g[0] * g[1] * g[2],
                    g[0] * g[1] * f[2],
                    g[0] * f[1] * g[2],
                    g[0] * f[1] * f[2],
                    f[0] * g[1] * g[2],
                    f[0] * g[1] * f[2],
                    f[0] * f[1] * g[2],
                    f[0] * f[1] * f[2],
                ];
                let mut idx = [usize::MAX; 8];
                if (0..3).all(|ax| lo[ax] >= 0 && hi[ax] < size[ax]) {
                    let base = lo[0] as usize * st[0] + lo[1] as usize * st[1] + lo[2] as usize;
                    let step = [0, 1, 2].map(|ax| (hi[ax] - lo[ax]) as usize * st[ax]);
                    for (c, slot) in idx.iter_mut().enumerate() {
                        *slot = base + (c >> 2 & 1) * step[0] + (c >> 1 & 1) * step[1] + (c & 1) * step[2];
                    }
                } else {
                    if (0..3).any(|ax| hi[ax] < 0 || lo[ax] >= size[ax]) {
                        p += 1;
                        continue; // entirely outside: zeros
                    }
                    for (c, slot) in idx.iter_mut().enumerate() {
                        let corner = [0, 1, 2].map(|ax| if c >> (2 - ax) & 1 == 1 { hi[ax] } else { lo[ax] });
                        if (0..3).all(|ax| corner[ax] >= 0 && corner[ax] < size[ax]) {
                            *slot = corner[0] as usize * st[0] + corner[1] as usize * st[1] + corner[2] as usize;
                        }
                    }
                }
                for ch in 0..channels {
                    let src_ch = &input.images[ch * n_in..(ch + 1) * n_in];
                    let mut v = 0f32;
                    for c in 0..8 {
                        if idx[c] != usize::MAX {
                            v += w[c] * src_ch[idx[c]];
                        }
                    }
                    out.images[ch * n_out + p] = v;
                }
                out.seg[p] = match seg_mode {
                    SegInterpolation::Nearest => {
                        let near = src.map(|v| v.round() as isize);
                        if (0..3).all(|ax| near[ax] >= 0 && near[ax] < size[ax]) {
                            input.seg[near[0] as usize * st[0] + near[1] as usize * st[1] + near[2] as usize]
                        } else {
                            0
                        }
                    }
                    SegInterpolation::Linear => {
                        // Summed weight per label among the 8 corners; outside counts as 0.
                        let mut labels = [0u8; 8];
                        let mut sums = [0f32; 8];
                        let mut k = 0;
                        for c in 0..8 {
                            if w[c] == 0.0 {
                                continue;
                            }
                            let l = if idx[c] == usize::MAX { 0 } else { input.seg[idx[c]] };
                            match labels[..k].iter().position(|x| *x == l) {
                                Some(j) => sums[j] += w[c],
                                None => {
                                    labels[k] = l;
                                    sums[k] = w[c];
                                    k += 1;
                                }
                            }
                        }
                        let mut best = 0;
                        for j in 1..k {
                            if sums[j] > sums[best] {
                                best = j;
                            }
                        }
                        labels[best]
                    }
                };
                p += 1;
            }
        }
    }
    out
}

/// The `out_shape` region of `input` starting at `offset`, zeros (seg 0) beyond its end.
fn crop_patch(input: &Patch, offset: [usize; 3], out_shape: [usize; 3]) -> Patch {
    let mut out = Patch::zeros(out_shape, input.channels);
    let n_in = input.voxels();
    let n_out = out.voxels();
    let rows = out_shape[2].min(input.shape[2].saturating_sub(offset[2]));
    for a in 0..out_shape[0].min(input.shape[0].saturating_sub(offset[0])) {
        for b in 0..out_shape[1].min(input.shape[1].saturating_sub(offset[1])) {
            let src = input.index([a + offset[0], b + offset[1], offset[2]]);
            let dst = out.index([a, b, 0]);
            for ch in 0..input.channels {
                out.images[ch * n_out + dst..ch * n_out + dst + rows]
                    .copy_from_slice(&input.images[ch * n_in + src..ch * n_in + src + rows]);
            }
            out.seg[dst..dst + rows].copy_from_slice(&input.seg[src..src + rows]);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Intensity transforms (images only)

/// Adds `N(0, σ²)` noise, one field shared by all channels (nnU-Net `synchronize_channels=True`).
pub fn gaussian_noise(patch: &mut Patch, std: f64, rng: &mut impl Rng) {
    let n = patch.voxels();
    let noise: Vec<f32> = (0..n).map(|_| (normal(rng) * std) as f32).collect();
    for c in 0..patch.channels {
        for (v, e) in patch.channel_mut(c).iter_mut().zip(&noise) {
            *v += e;
        }
    }
}

/// Separable Gaussian blur of one channel with per-axis `sigma` (voxels; 0 skips the axis),
/// kernel truncated at 4 sigma, replicate borders.
pub fn gaussian_blur(data: &mut [f32], shape: [usize; 3], sigma: [f64; 3]) {
    let mut buf = Vec::new();
    for axis in 0..3 {
        if sigma[axis] <= 0.0 || shape[axis] < 2 {
            continue;
        }
        let radius = (4.0 * sigma[axis]).ceil() as isize;
        let kernel: Vec<f32> =
            (-radius..=radius).map(|x| (-(x * x) as f64 / (2.0 * sigma[axis] * sigma[axis])).exp() as f32).collect();
        let total: f32 = kernel.iter().sum();
        let kernel: Vec<f32> = kernel.iter().map(|k| k / total).collect();
        for_each_line(shape, axis, |start, step, len| {
            buf.clear();
            buf.extend((0..len).map(|x| data[start + x * step]));
            for x in 0..len as isize {
                let mut v = 0f32;
                for (t, k) in kernel.iter().enumerate() {
                    let y = (x + t as isize - radius).clamp(0, len as isize - 1) as usize;
                    v += k * buf[y];
                }
                data[start + x as usize * step] = v;
            }
        });
    }
}

/// `(x − mean)·factor + mean`, clipped to the former range when `preserve_range`.
pub fn contrast(data: &mut [f32], factor: f64, preserve_range: bool) {
    if data.is_empty() {
        return;
    }
    let mean = data.iter().map(|v| *v as f64).sum::<f64>() / data.len() as f64;
    let (lo, hi) = data.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), v| (l.min(*v), h.max(*v)));
    for v in data.iter_mut() {
        let x = ((*v as f64 - mean) * factor + mean) as f32;
        *v = if preserve_range { x.clamp(lo, hi) } else { x };
    }
}

/// nnU-Net's `GammaTransform` with `p_retain_stats=1`: optionally invert, rescale to [0, 1],
/// `x^γ`, scale back, restore mean and (unbiased) std, undo the inversion.
pub fn gamma(data: &mut [f32], gamma: f64, invert: bool) {
    let n = data.len();
    if n == 0 {
        return;
    }
    if invert {
        data.iter_mut().for_each(|v| *v = -*v);
    }
    let stats = |d: &[f32]| {
        let mean = d.iter().map(|v| *v as f64).sum::<f64>() / n as f64;
        let var = d.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / (n.max(2) - 1) as f64;
        (mean, var.sqrt())
    };
    let (mean, std) = stats(data);
    let (lo, hi) = data.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), v| (l.min(*v), h.max(*v)));
    let range = (hi - lo) as f64;
    for v in data.iter_mut() {
        *v = (((*v - lo) as f64 / range.max(1e-7)).powf(gamma) * range + lo as f64) as f32;
    }
    let (mean_here, std_here) = stats(data);
    let ratio = std.max(1e-7) / std_here.max(1e-7);
    for v in data.iter_mut() {
        *v = ((*v as f64 - mean_here) * ratio + mean) as f32;
    }
    if invert {
        data.iter_mut().for_each(|v| *v = -*v);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Upsample {
    Linear,
    Cubic,
}

/// Resizes along one axis: nearest-exact (`Upsample` ignored, `down`) or linear / cubic
/// (PyTorch `interpolate` with `align_corners=False`; cubic with a = −0.75).
fn resize_axis(
    data: &[f32],
    shape: [usize; 3],
    axis: usize,
    new_len: usize,
    nearest: bool,
    mode: Upsample,
) -> (Vec<f32>, [usize; 3]) {
    let mut new_shape = shape;
    new_shape[axis] = new_len;
    let len = shape[axis];
    let mut out = vec![0f32; new_shape.iter().product()];
    let (outer, step, _) = lines(shape, axis);
    let ratio = len as f64 / new_len as f64;
    // Per output position: source indices and weights (shared by all lines).
    let taps: Vec<Vec<(usize, f32)>> = (0..new_len)
        .map(|x| {
            if nearest {
                vec![((((x as f64 + 0.5) * ratio).floor() as usize).min(len - 1), 1.0)]
            } else {
                let s = (x as f64 + 0.5) * ratio - 0.5;
                match mode {
                    Upsample::Linear => {
                        let s = s.max(0.0);
                        let i0 = (s.floor() as usize).min(len - 1);
                        let i1 = (i0 + 1).min(len - 1);
                        let f = (s - i0 as f64) as f32;
                        vec![(i0, 1.0 - f), (i1, f)]
                    }
                    Upsample::Cubic => {
                        let fl = s.floor();
                        let t = s - fl;
                        let a = -0.75;
                        let w1 = |x: f64| ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
                        let w2 = |x: f64| ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
                        let ws = [w2(t + 1.0), w1(t), w1(1.0 - t), w2(2.0 - t)];
                        (0..4)
                            .map(|k| {
                                (((fl as isize - 1 + k as isize).clamp(0, len as isize - 1)) as usize, ws[k] as f32)
                            })
                            .collect()
                    }
                }
            }
        })
        .collect();
    for o in 0..outer {
        for inner in 0..step {
            let src = o * len * step + inner;
            let dst = o * new_len * step + inner;
            for (x, t) in taps.iter().enumerate() {
                out[dst + x * step] = t.iter().map(|(i, w)| w * data[src + i * step]).sum();
            }
        }
    }
    (out, new_shape)
}

/// nnU-Net's `SimulateLowResolutionTransform` on one channel: nearest-exact down to
/// `round(side · zoom)` along the axes not in `ignore`, then back up (linear, or cubic for 2D).
fn simulate_low_resolution(data: &mut [f32], shape: [usize; 3], zoom: f64, ignore: [bool; 3], cubic: bool) {
    let mode = if cubic { Upsample::Cubic } else { Upsample::Linear };
    let mut cur = data.to_vec();
    let mut cur_shape = shape;
    for axis in 0..3 {
        if ignore[axis] || shape[axis] < 2 {
            continue;
        }
        let small = ((shape[axis] as f64 * zoom).round() as usize).max(1);
        (cur, cur_shape) = resize_axis(&cur, cur_shape, axis, small, true, mode);
    }
    for axis in 0..3 {
        if cur_shape[axis] != shape[axis] {
            (cur, cur_shape) = resize_axis(&cur, cur_shape, axis, shape[axis], false, mode);
        }
    }
    data.copy_from_slice(&cur);
}

/// Mirrors the patch (images and seg) along each axis with `flip[a]`.
pub fn mirror(patch: &mut Patch, flip: [bool; 3]) {
    let shape = patch.shape;
    for axis in 0..3 {
        if !flip[axis] || shape[axis] < 2 {
            continue;
        }
        let n = patch.voxels();
        let flip_line = |data: &mut [f32], start: usize, step: usize, len: usize| {
            for x in 0..len / 2 {
                data.swap(start + x * step, start + (len - 1 - x) * step);
            }
        };
        for c in 0..patch.channels {
            let ch = &mut patch.images[c * n..(c + 1) * n];
            for_each_line(shape, axis, |s, st, len| flip_line(ch, s, st, len));
        }
        let seg = &mut patch.seg;
        for_each_line(shape, axis, |s, st, len| {
            for x in 0..len / 2 {
                seg.swap(s + x * st, s + (len - 1 - x) * st);
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// The pipeline

/// Runs the whole training pipeline on `input` (normally the enlarged region of
/// [`initial_patch_size`]) and returns the augmented patch of `out_shape`. `planar` is
/// [`AugmentationConfig::is_planar`] of the configuration's patch size; `two_d` selects cubic
/// upsampling in the low-resolution simulation (nnU-Net's `bicubic` for 2D data).
pub fn augment(
    input: &Patch,
    out_shape: [usize; 3],
    config: &AugmentationConfig,
    planar: bool,
    rng: &mut impl Rng,
) -> Patch {
    let params = SpatialParams::sample(config, out_shape, planar, rng);
    let mut patch = spatial_transform(input, out_shape, &params, config.seg_interpolation);
    augment_intensity_and_mirror(&mut patch, config, planar, rng);
    patch
}

/// Steps 2-9 of the table (everything after the spatial transform), in place.
pub fn augment_intensity_and_mirror(patch: &mut Patch, config: &AugmentationConfig, planar: bool, rng: &mut impl Rng) {
    let shape = patch.shape;
    let channels = patch.channels;
    let two_d = shape[0] == 1;
    // The contrast transforms come first (they model the tissue contrast, which the acquisition
    // effects below act on). Each draws nothing when its probability is 0, so configurations
    // without them keep the random stream, and the batches, of earlier releases bit for bit.
    if config.p_invert > 0.0 {
        for c in 0..channels {
            if rng.gen::<f64>() < config.p_invert {
                augment_contrast::invert(patch.channel_mut(c));
            }
        }
    }
    if config.p_remap > 0.0 {
        for c in 0..channels {
            if rng.gen::<f64>() < config.p_remap {
                let strength = uniform(rng, config.remap_strength);
                let monotone = rng.gen::<f64>() < config.remap_p_monotone;
                let curve = RemapCurve::sample(rng, config.remap_points, strength, monotone);
                augment_contrast::histogram_remap(patch.channel_mut(c), &curve);
            }
        }
    }
    if config.p_bias_field > 0.0 {
        for c in 0..channels {
            if rng.gen::<f64>() < config.p_bias_field {
                let magnitude = uniform(rng, config.bias_field_magnitude);
                let field = augment_contrast::bias_field(shape, config.bias_field_order, magnitude, rng);
                augment_contrast::apply_bias_field(patch.channel_mut(c), &field);
            }
        }
    }
    if rng.gen::<f64>() < config.p_noise {
        let std = uniform(rng, config.noise_std);
        gaussian_noise(patch, std, rng);
    }
    if rng.gen::<f64>() < config.p_blur {
        for c in 0..channels {
            if rng.gen::<f64>() < config.blur_p_per_channel {
                let sigma = [0, 1, 2].map(|_| uniform(rng, config.blur_sigma));
                gaussian_blur(patch.channel_mut(c), shape, sigma);
            }
        }
    }
    if rng.gen::<f64>() < config.p_brightness {
        for c in 0..channels {
            let m = bg_contrast(rng, config.brightness) as f32;
            patch.channel_mut(c).iter_mut().for_each(|v| *v *= m);
        }
    }
    if rng.gen::<f64>() < config.p_contrast {
        for c in 0..channels {
            let f = bg_contrast(rng, config.contrast);
            contrast(patch.channel_mut(c), f, true);
        }
    }
    if rng.gen::<f64>() < config.p_low_res {
        for c in 0..channels {
            if rng.gen::<f64>() < config.low_res_p_per_channel {
                let zoom = uniform(rng, config.low_res_zoom);
                simulate_low_resolution(patch.channel_mut(c), shape, zoom, [planar, false, false], two_d);
            }
        }
    }
    for (p, invert) in [(config.p_gamma_inverted, true), (config.p_gamma, false)] {
        if rng.gen::<f64>() < p {
            for c in 0..channels {
                let g = bg_contrast(rng, config.gamma);
                gamma(patch.channel_mut(c), g, invert);
            }
        }
    }
    let mut flip = [false; 3];
    for (a, f) in flip.iter_mut().enumerate() {
        // Drawn for every allowed axis, so the random stream does not depend on the patch.
        if config.mirror_axes[a] {
            *f = rng.gen::<f64>() < config.p_mirror && shape[a] > 1;
        }
    }
    mirror(patch, flip);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_blur_and_gaussian_blur_keep_constants() {
        let shape = [2, 3, 5];
        let mut d = vec![2.5f32; 30];
        box_blur_axis(&mut d, shape, 2, 2);
        gaussian_blur(&mut d, shape, [0.7, 0.8, 1.0]);
        assert!(d.iter().all(|v| (v - 2.5).abs() < 1e-5));
    }

    #[test]
    fn resize_axis_round_trips_constants_and_nearest_picks_samples() {
        let shape = [1, 1, 6];
        let d: Vec<f32> = (0..6).map(|x| x as f32).collect();
        let (down, s) = resize_axis(&d, shape, 2, 3, true, Upsample::Linear);
        assert_eq!(s, [1, 1, 3]);
        // PyTorch `nearest-exact`: source floor((x + 0.5) * 2).
        assert_eq!(down, vec![1.0, 3.0, 5.0]);
        for mode in [Upsample::Linear, Upsample::Cubic] {
            let (up, _) = resize_axis(&[1.0; 3], [1, 1, 3], 2, 6, false, mode);
            assert!(up.iter().all(|v| (v - 1.0).abs() < 1e-5), "{up:?}");
        }
    }

    #[test]
    fn gamma_keeps_mean_and_std() {
        let mut d: Vec<f32> = (0..50).map(|x| (x as f32 * 0.37).sin()).collect();
        let mean0 = d.iter().sum::<f32>() / 50.0;
        gamma(&mut d, 1.4, true);
        let mean1 = d.iter().sum::<f32>() / 50.0;
        assert!((mean0 - mean1).abs() < 1e-4);
    }

    #[test]
    fn initial_patch_size_grows_with_rotation_and_scaling() {
        let cfg = AugmentationConfig::default();
        assert_eq!(initial_patch_size(&[8, 8], &AugmentationConfig::none()), vec![8, 8]);
        let p = initial_patch_size(&[64, 64], &cfg);
        // 64 rotated by 15 degrees: 64 (cos 15 + sin 15) = 78.4; / 0.85 = 92.2.
        assert_eq!(p, vec![92, 92]);
        let p = initial_patch_size(&[16, 128, 128], &cfg);
        assert_eq!(p[0], 16, "planar (dummy 2D) patches keep their i side");
    }
}
