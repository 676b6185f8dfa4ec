//! Sliding-window prediction over a whole preprocessed volume, as nnU-Net v2's
//! `nnUNetPredictor.predict_sliding_window_return_logits`, with the network abstracted as a
//! [`PatchPredictor`].
//!
//! # What happens ([`predict_sliding_window`])
//! 1. The volume (channels of canonical RAS voxels `(i, j, k)`) is padded with zeros to at least
//!    the patch size along every patched axis, half before and half after (nnU-Net's
//!    `pad_nd_image(..., 'constant', value 0)`: `diff // 2` before, the rest after). In 2D the
//!    slice axis `i` is not padded.
//! 2. Window starts per axis come from [`compute_steps_for_sliding_window`] on the padded shape
//!    (2D: every slice `i`, then steps over `(j, k)`), enumerated `i`, then `j`, then `k`.
//! 3. Windows go to the predictor in batches of [`SlidingWindowOptions::batch_size`]. With
//!    mirroring, every non-empty subset of [`SlidingWindowOptions::mirror_axes`] is predicted
//!    too (input flipped, output flipped back), and the logits are averaged (nnU-Net's
//!    `_internal_maybe_mirror_and_predict`, same subset order as `itertools.combinations`).
//! 4. Each window's logits are multiplied by the importance map ([`compute_gaussian`], or ones)
//!    and added to a logit sum; the map is added to a weight sum. At the end, sum / weight,
//!    cropped back to the unpadded volume.
//!
//! # Memory layouts
//! - **Input**: `&[Volume<f32>]`, one volume per channel, all of one shape `[ni, nj, nk]`,
//!   `i` fastest (the project's [`Volume`] order).
//! - **Predictor input and output**: C-order (row-major, last axis fastest) `f32` buffers of
//!   shape `[B, C_in, pi, pj, pk]` (3D) or `[B, C_in, pj, pk]` (2D) in, `[B, C_out, ...]` out:
//!   the flat index of `[b, c, x, y, z]` is `(((b * C + c) * pi + x) * pj + y) * pk + z`. The
//!   spatial axes are the canonical RAS voxel axes `(i, j, k)` in that order (2D: `(j, k)` of
//!   one sagittal slice `i`), so `k` (inferior-superior) is the fastest. That is burn's / PyTorch's
//!   `NCDHW` / `NCHW` with `D = i`, `H = j`, `W = k`.
//! - **Output**: [`ClassScores`]: class-major, each class one block in the [`Volume`] order
//!   (`i` fastest): the flat index of class `c` at `[i, j, k]` is `c * N + i + ni * (j + nj * k)`
//!   with `N = ni * nj * nk`.
//!
//! Internally the padded input and the sums are kept in C-order (`k` fastest), so that every
//! window is read and accumulated in contiguous rows of `pk`; the input is transposed once at the
//! start and the result once at the end.
//!
//! # Mirroring and anatomy
//! nnU-Net mirrors along every spatial axis by default. For the spine only a left-right flip is
//! anatomically neutral: flipping superior-inferior would put L5 where L1 belongs and flipping
//! anterior-posterior would put the discs behind the canal, and a network trained without those
//! flips (our augmentation does not use them) predicts nonsense on flipped input. So
//! [`SlidingWindowOptions::new`] mirrors only along `i` (left-right in canonical RAS) in 3D and
//! not at all in 2D (the 2D patch has no left-right axis: slices are sagittal). Our label
//! ontology has no lateralised (left/right) structures; if it ever gets some, a left-right flip
//! must also swap their classes. [`SlidingWindowOptions::nnunet`] mirrors every axis, as nnU-Net.

use crate::error::{InferError, PredictorError, Result};
use rayon::prelude::*;
use spineseg_preprocessing::plan::{ConfigurationName, Plan};
use spineseg_io::{Geometry, Volume};
use std::sync::Arc;

/// A network that maps a batch of patches to logits.
///
/// # Shapes
/// `predict(input, shape)`: `shape` is `[B, C_in, pi, pj, pk]` (3D) or `[B, C_in, pj, pk]` (2D);
/// `input` holds `shape.iter().product()` values in C-order (see the module documentation).
/// The result must hold `B * num_classes() * patch voxels` values, `[B, C_out, *patch]` in
/// C-order: logits (anything averaged linearly; softmax is applied after blending, if at all).
pub trait PatchPredictor {
    /// `C_out`, the number of output channels (classes including background).
    fn num_classes(&self) -> usize;
    fn predict(&mut self, input: &[f32], shape: &[usize]) -> std::result::Result<Vec<f32>, PredictorError>;
    /// Channels computed once from the whole volume (`images`, its channels) before any window
    /// is cut, and appended to them: `C_in` of [`predict`](Self::predict) is then the images'
    /// channels plus these. A cascade's first stage, which must see more than a window, goes
    /// here (an SSHSNet hybrid's 2D networks on whole slices). None by default.
    fn volume_channels(&mut self, _images: &[Volume<f32>]) -> std::result::Result<Vec<Volume<f32>>, PredictorError> {
        Ok(Vec::new())
    }
}

impl<P: PatchPredictor + ?Sized> PatchPredictor for &mut P {
    fn num_classes(&self) -> usize {
        (**self).num_classes()
    }
    fn predict(&mut self, input: &[f32], shape: &[usize]) -> std::result::Result<Vec<f32>, PredictorError> {
        (**self).predict(input, shape)
    }
    fn volume_channels(&mut self, images: &[Volume<f32>]) -> std::result::Result<Vec<Volume<f32>>, PredictorError> {
        (**self).volume_channels(images)
    }
}

impl<P: PatchPredictor + ?Sized> PatchPredictor for Box<P> {
    fn num_classes(&self) -> usize {
        (**self).num_classes()
    }
    fn predict(&mut self, input: &[f32], shape: &[usize]) -> std::result::Result<Vec<f32>, PredictorError> {
        (**self).predict(input, shape)
    }
    fn volume_channels(&mut self, images: &[Volume<f32>]) -> std::result::Result<Vec<Volume<f32>>, PredictorError> {
        (**self).volume_channels(images)
    }
}

/// A [`PatchPredictor`] from a closure; see [`predictor_fn`].
pub struct FnPredictor<F> {
    num_classes: usize,
    f: F,
}

/// Wraps `f(input, shape) -> logits` (shapes as [`PatchPredictor`]) producing `num_classes`
/// output channels.
pub fn predictor_fn<F>(num_classes: usize, f: F) -> FnPredictor<F>
where
    F: FnMut(&[f32], &[usize]) -> std::result::Result<Vec<f32>, PredictorError>,
{
    FnPredictor { num_classes, f }
}

impl<F> PatchPredictor for FnPredictor<F>
where
    F: FnMut(&[f32], &[usize]) -> std::result::Result<Vec<f32>, PredictorError>,
{
    fn num_classes(&self) -> usize {
        self.num_classes
    }
    fn predict(&mut self, input: &[f32], shape: &[usize]) -> std::result::Result<Vec<f32>, PredictorError> {
        (self.f)(input, shape)
    }
}

/// Where a sliding-window prediction is, reported after every batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub windows_done: usize,
    pub windows_total: usize,
    /// Predictor calls so far (batches times mirror combinations).
    pub predictor_calls: usize,
}

/// Called after every batch (e.g. to drive a progress bar).
pub type ProgressCallback = Arc<dyn Fn(Progress) + Send + Sync>;

/// Options of [`predict_sliding_window`].
#[derive(Clone)]
pub struct SlidingWindowOptions {
    /// 2 entries `(pj, pk)`: 2D, windows over each sagittal slice `i`; 3 entries `(pi, pj, pk)`:
    /// 3D.
    pub patch_size: Vec<usize>,
    /// Window step as a fraction of the patch, in `(0, 1]` (nnU-Net: 0.5).
    pub tile_step_size: f64,
    /// Weight windows with [`compute_gaussian`] (nnU-Net: true); otherwise uniformly.
    pub use_gaussian: bool,
    /// Test-time mirroring: patch axes (indices into `patch_size`, so `0 = i` in 3D and `0 = j`
    /// in 2D) whose every non-empty subset is also predicted; empty: no mirroring.
    pub mirror_axes: Vec<usize>,
    /// Windows per predictor call (nnU-Net: 1).
    pub batch_size: usize,
    pub progress: Option<ProgressCallback>,
}

impl std::fmt::Debug for SlidingWindowOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlidingWindowOptions")
            .field("patch_size", &self.patch_size)
            .field("tile_step_size", &self.tile_step_size)
            .field("use_gaussian", &self.use_gaussian)
            .field("mirror_axes", &self.mirror_axes)
            .field("batch_size", &self.batch_size)
            .field("progress", &self.progress.as_ref().map(|_| "callback"))
            .finish()
    }
}

impl SlidingWindowOptions {
    /// nnU-Net's defaults (step 0.5, Gaussian, batch 1) with the spine's mirroring: left-right
    /// only, which is axis `i` (patch axis 0) in 3D and nothing in 2D (see the module
    /// documentation).
    pub fn new(patch_size: Vec<usize>) -> Self {
        let mirror_axes = if patch_size.len() == 3 { vec![0] } else { vec![] };
        SlidingWindowOptions {
            patch_size,
            tile_step_size: 0.5,
            use_gaussian: true,
            mirror_axes,
            batch_size: 1,
            progress: None,
        }
    }

    /// Exactly nnU-Net's defaults, mirroring along every patch axis.
    pub fn nnunet(patch_size: Vec<usize>) -> Self {
        let mirror_axes = (0..patch_size.len()).collect();
        SlidingWindowOptions { mirror_axes, ..Self::new(patch_size) }
    }

    /// [`SlidingWindowOptions::new`] with the patch size of a plan's configuration.
    pub fn for_plan(plan: &Plan, configuration: ConfigurationName) -> Result<Self> {
        let c = plan
            .configuration(configuration)
            .ok_or_else(|| InferError::InvalidOptions(format!("the plan has no configuration {configuration}")))?;
        Ok(Self::new(c.patch_size.clone()))
    }

    pub fn with_mirror_axes(mut self, axes: Vec<usize>) -> Self {
        self.mirror_axes = axes;
        self
    }

    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    pub fn with_progress(mut self, progress: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(progress));
        self
    }

    /// Checks the options on their own (not against a volume).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(InferError::InvalidOptions(m));
        if !(self.patch_size.len() == 2 || self.patch_size.len() == 3) {
            return bad(format!("patch_size {:?} must have 2 (j, k) or 3 (i, j, k) entries", self.patch_size));
        }
        if self.patch_size.contains(&0) {
            return bad(format!("patch_size {:?} has a zero side", self.patch_size));
        }
        if !(self.tile_step_size > 0.0 && self.tile_step_size <= 1.0) {
            return bad(format!("tile_step_size {} must be in (0, 1]", self.tile_step_size));
        }
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        for (n, &a) in self.mirror_axes.iter().enumerate() {
            if a >= self.patch_size.len() {
                return bad(format!("mirror axis {a} is not an axis of the {}D patch", self.patch_size.len()));
            }
            if self.mirror_axes[..n].contains(&a) {
                return bad(format!("mirror axis {a} is listed twice"));
            }
        }
        Ok(())
    }
}

/// nnU-Net's `compute_steps_for_sliding_window`: per axis, the window starts.
///
/// `num_steps = ceil((image - patch) / (patch * step)) + 1`, then the starts spread evenly from
/// 0 to `image - patch`: `round(i * (image - patch) / (num_steps - 1))` with numpy's rounding
/// (half to even). Requires `image >= patch` on every axis (pad first) and `step` in `(0, 1]`.
pub fn compute_steps_for_sliding_window(
    image_size: &[usize],
    patch_size: &[usize],
    tile_step_size: f64,
) -> Vec<Vec<usize>> {
    assert_eq!(image_size.len(), patch_size.len(), "image and patch should have the same number of axes");
    assert!(
        image_size.iter().zip(patch_size).all(|(i, p)| i >= p),
        "the image should be at least the patch size (pad first)"
    );
    assert!(tile_step_size > 0.0 && tile_step_size <= 1.0, "tile_step_size should be in (0, 1]");
    image_size
        .iter()
        .zip(patch_size)
        .map(|(&image, &patch)| {
            let target_step = patch as f64 * tile_step_size;
            let num_steps = ((image - patch) as f64 / target_step).ceil() as usize + 1;
            let max_step = (image - patch) as f64;
            let actual_step = if num_steps > 1 { max_step / (num_steps - 1) as f64 } else { 99999999999.0 };
            (0..num_steps).map(|s| (actual_step * s as f64).round_ties_even() as usize).collect()
        })
        .collect()
}

/// nnU-Net's `compute_gaussian(patch, sigma_scale)`: the importance map of a window, C-order
/// over the patch axes.
///
/// A delta at the centre voxel `patch // 2` blurred with a Gaussian of `sigma = patch *
/// sigma_scale` per axis (scipy `gaussian_filter`, truncated at 4 sigma, zero outside), scaled
/// so that the maximum (the centre) is 1; values that are 0 are replaced by the smallest
/// non-zero value, so every voxel keeps a positive weight. Computed in closed form: the
/// normalised blur of a delta is `prod_a exp(-(x_a - c_a)^2 / (2 sigma_a^2))`. For even sides
/// the centre is `patch / 2`, so the map is symmetric about that voxel, not about the patch's
/// middle (as in nnU-Net).
pub fn compute_gaussian(patch_size: &[usize], sigma_scale: f64) -> Vec<f32> {
    let per_axis: Vec<Vec<f64>> = patch_size
        .iter()
        .map(|&p| {
            let centre = (p / 2) as f64;
            let sigma = p as f64 * sigma_scale;
            // scipy: radius = int(truncate * sigma + 0.5), truncate = 4.
            let radius = (4.0 * sigma + 0.5).floor();
            (0..p)
                .map(|x| {
                    let d = x as f64 - centre;
                    if d.abs() > radius || sigma <= 0.0 {
                        if d == 0.0 {
                            1.0
                        } else {
                            0.0
                        }
                    } else {
                        (-0.5 * d * d / (sigma * sigma)).exp()
                    }
                })
                .collect()
        })
        .collect();
    let total: usize = patch_size.iter().product();
    let mut map = vec![1f64; total];
    let mut stride = total;
    for (a, values) in per_axis.iter().enumerate() {
        stride /= patch_size[a];
        for (n, v) in map.iter_mut().enumerate() {
            *v *= values[(n / stride) % patch_size[a]];
        }
    }
    let max = map.iter().cloned().fold(0.0, f64::max);
    let mut map: Vec<f32> = map.iter().map(|v| (v / max) as f32).collect();
    let min_nonzero = map.iter().cloned().filter(|v| *v > 0.0).fold(f32::INFINITY, f32::min);
    for v in map.iter_mut() {
        if *v == 0.0 {
            *v = min_nonzero;
        }
    }
    map
}

/// Per-class scores over a volume (logits, or probabilities after
/// [`ClassScores::softmax_in_place`]).
///
/// # Layout
/// Class-major; each class is one block in the [`Volume`] order (`i` fastest): class `c` at
/// `[i, j, k]` is at `c * N + i + ni * (j + nj * k)`, `N = ni * nj * nk`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassScores {
    shape: [usize; 3],
    num_classes: usize,
    data: Vec<f32>,
    pub geometry: Geometry,
}

impl ClassScores {
    /// Fails (returning `data`) when the length is not `num_classes * voxels` or `num_classes`
    /// is not in `1..=256` (class indices are `u8`).
    pub fn new(
        shape: [usize; 3],
        num_classes: usize,
        data: Vec<f32>,
        geometry: Geometry,
    ) -> std::result::Result<Self, Vec<f32>> {
        if (1..=256).contains(&num_classes) && data.len() == num_classes * shape.iter().product::<usize>() {
            Ok(ClassScores { shape, num_classes, data, geometry })
        } else {
            Err(data)
        }
    }
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }
    pub fn voxels(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }
    /// The scores of class `c`, `i` fastest.
    pub fn class(&self, c: usize) -> &[f32] {
        let n = self.voxels();
        &self.data[c * n..(c + 1) * n]
    }
    pub fn class_volume(&self, c: usize) -> Volume<f32> {
        Volume::new(self.shape, self.class(c).to_vec(), self.geometry).expect("a class block has the volume's size")
    }
    /// Softmax over classes at every voxel (see [`crate::postprocess::softmax_in_place`]).
    pub fn softmax_in_place(&mut self) {
        let n = self.voxels();
        crate::postprocess::softmax_in_place(&mut self.data, self.num_classes, n);
    }
    /// Class index of the highest score per voxel (ties: the lower class, as numpy / torch).
    pub fn argmax(&self) -> Volume<u8> {
        let n = self.voxels();
        let labels = crate::postprocess::argmax(&self.data, self.num_classes, n);
        Volume::new(self.shape, labels, self.geometry).expect("argmax yields one label per voxel")
    }
}

/// Padding, window starts and patch of one prediction, everything in internal 3D form (a 2D
/// patch is `[1, pj, pk]`, one window per slice `i`).
#[derive(Debug, Clone)]
struct Layout {
    dims: usize,
    shape: [usize; 3],
    padded: [usize; 3],
    pad_before: [usize; 3],
    patch: [usize; 3],
    /// Window starts per axis, padded coordinates.
    steps: [Vec<usize>; 3],
}

impl Layout {
    fn new(shape: [usize; 3], options: &SlidingWindowOptions) -> Layout {
        let dims = options.patch_size.len();
        let patch: [usize; 3] = if dims == 3 {
            [options.patch_size[0], options.patch_size[1], options.patch_size[2]]
        } else {
            [1, options.patch_size[0], options.patch_size[1]]
        };
        let mut padded = shape;
        let mut pad_before = [0; 3];
        for a in 0..3 {
            if shape[a] < patch[a] {
                let diff = patch[a] - shape[a];
                pad_before[a] = diff / 2;
                padded[a] = patch[a];
            }
        }
        let steps = if dims == 3 {
            let s = compute_steps_for_sliding_window(&padded, &patch, options.tile_step_size);
            [s[0].clone(), s[1].clone(), s[2].clone()]
        } else {
            let s = compute_steps_for_sliding_window(&padded[1..], &patch[1..], options.tile_step_size);
            [(0..shape[0]).collect(), s[0].clone(), s[1].clone()]
        };
        Layout { dims, shape, padded, pad_before, patch, steps }
    }

    fn windows(&self) -> Vec<[usize; 3]> {
        let mut out = Vec::with_capacity(self.steps.iter().map(|s| s.len()).product());
        for &i in &self.steps[0] {
            for &j in &self.steps[1] {
                for &k in &self.steps[2] {
                    out.push([i, j, k]);
                }
            }
        }
        out
    }

    fn patch_voxels(&self) -> usize {
        self.patch.iter().product()
    }

    fn padded_voxels(&self) -> usize {
        self.padded.iter().product()
    }

    /// The predictor's shape for a batch of `b` patches with `c` channels.
    fn batch_shape(&self, b: usize, c: usize) -> Vec<usize> {
        let mut s = vec![b, c];
        if self.dims == 3 {
            s.push(self.patch[0]);
        }
        s.extend_from_slice(&self.patch[1..]);
        s
    }
}

/// Subsets of `axes` in `itertools.combinations` order: by size, then lexicographically.
fn mirror_combinations(axes: &[usize]) -> Vec<Vec<usize>> {
    fn rec(axes: &[usize], r: usize, start: usize, current: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if current.len() == r {
            out.push(current.clone());
            return;
        }
        for n in start..axes.len() {
            current.push(axes[n]);
            rec(axes, r, n + 1, current, out);
            current.pop();
        }
    }
    let mut out = Vec::new();
    for r in 1..=axes.len() {
        rec(axes, r, 0, &mut Vec::new(), &mut out);
    }
    out
}

/// `dst[block, x] (op)= src[block, flip(x)]` over `blocks` C-order blocks of `patch`, flipping
/// the internal axes in `flip`; `add` accumulates instead of copying.
fn flip_blocks(src: &[f32], dst: &mut [f32], patch: [usize; 3], flip: [bool; 3], add: bool) {
    let [p0, p1, p2] = patch;
    let block = p0 * p1 * p2;
    for (s, d) in src.chunks_exact(block).zip(dst.chunks_exact_mut(block)) {
        for x0 in 0..p0 {
            let y0 = if flip[0] { p0 - 1 - x0 } else { x0 };
            for x1 in 0..p1 {
                let y1 = if flip[1] { p1 - 1 - x1 } else { x1 };
                let src_row = &s[(y0 * p1 + y1) * p2..][..p2];
                let dst_row = &mut d[(x0 * p1 + x1) * p2..][..p2];
                match (flip[2], add) {
                    (false, false) => dst_row.copy_from_slice(src_row),
                    (false, true) => dst_row.iter_mut().zip(src_row).for_each(|(d, s)| *d += *s),
                    (true, false) => dst_row.iter_mut().zip(src_row.iter().rev()).for_each(|(d, s)| *d = *s),
                    (true, true) => dst_row.iter_mut().zip(src_row.iter().rev()).for_each(|(d, s)| *d += *s),
                }
            }
        }
    }
}

/// Copies channels from the [`Volume`] order (`i` fastest) into a zero-padded C-order buffer.
fn to_padded_c_order(images: &[&Volume<f32>], layout: &Layout) -> Vec<f32> {
    let [ni, nj, nk] = layout.shape;
    let [_, pj, pk] = layout.padded;
    let [bi, bj, bk] = layout.pad_before;
    let plane = pj * pk;
    let mut out = vec![0f32; images.len() * layout.padded_voxels()];
    // One padded `i` plane per task: contiguous in the output.
    out.par_chunks_mut(plane).enumerate().for_each(|(n, dst)| {
        let c = n / layout.padded[0];
        let pi = n % layout.padded[0];
        if pi < bi || pi >= bi + ni {
            return;
        }
        let i = pi - bi;
        let src = images[c].data();
        // Tiles of j keep the strided reads (stride ni) within a few cache lines.
        const TILE: usize = 16;
        for k0 in (0..nk).step_by(TILE) {
            for j in 0..nj {
                let row = &mut dst[(j + bj) * pk + bk..];
                for k in k0..(k0 + TILE).min(nk) {
                    row[k] = src[i + ni * (j + nj * k)];
                }
            }
        }
    });
    out
}

/// Sliding-window prediction of `images` (channels of one volume) with `predictor`; returns the
/// blended logits on the volume's grid and with its geometry. See the module documentation.
pub fn predict_sliding_window<P: PatchPredictor + ?Sized>(
    images: &[Volume<f32>],
    predictor: &mut P,
    options: &SlidingWindowOptions,
) -> Result<ClassScores> {
    let acc = accumulate(images, predictor, options)?;
    let data = finish(&acc.sums, &acc.weights, acc.classes, &acc.layout);
    Ok(ClassScores::new(acc.layout.shape, acc.classes, data, acc.geometry)
        .unwrap_or_else(|_| unreachable!("finish yields classes x voxels")))
}

/// [`predict_sliding_window`] followed by [`ClassScores::argmax`], without materialising the
/// scores (saves a `classes x voxels` buffer and a pass over it); the same result.
pub fn predict_sliding_window_argmax<P: PatchPredictor + ?Sized>(
    images: &[Volume<f32>],
    predictor: &mut P,
    options: &SlidingWindowOptions,
) -> Result<Volume<u8>> {
    let acc = accumulate(images, predictor, options)?;
    let labels = finish_argmax(&acc.sums, &acc.weights, acc.classes, &acc.layout);
    Ok(Volume::new(acc.layout.shape, labels, acc.geometry).unwrap_or_else(|_| unreachable!("one label per voxel")))
}

/// Logit and weight sums of a whole prediction, padded C-order (see [`weight_sum`]).
struct Accumulated {
    sums: Vec<f32>,
    weights: Vec<f32>,
    classes: usize,
    layout: Layout,
    geometry: Geometry,
}

fn accumulate<P: PatchPredictor + ?Sized>(
    images: &[Volume<f32>],
    predictor: &mut P,
    options: &SlidingWindowOptions,
) -> Result<Accumulated> {
    options.validate()?;
    let Some(first) = images.first() else { return Err(InferError::InvalidInput("no image channels".into())) };
    let shape = first.shape();
    if shape.contains(&0) {
        return Err(InferError::InvalidInput(format!("empty volume of shape {shape:?}")));
    }
    if let Some(c) = images.iter().position(|v| v.shape() != shape) {
        return Err(InferError::InvalidInput(format!(
            "channel {c} has shape {:?}, channel 0 {shape:?}",
            images[c].shape()
        )));
    }
    let classes = predictor.num_classes();
    if !(1..=256).contains(&classes) {
        return Err(InferError::InvalidOptions(format!("the predictor has {classes} classes; 1 to 256 are supported")));
    }
    let layout = Layout::new(shape, options);
    let extra = predictor.volume_channels(images).map_err(InferError::Predictor)?;
    if let Some(c) = extra.iter().position(|v| v.shape() != shape) {
        return Err(InferError::Predictor(
            format!("volume channel {c} has shape {:?}, the images {shape:?}", extra[c].shape()).into(),
        ));
    }
    let all: Vec<&Volume<f32>> = images.iter().chain(&extra).collect();
    let channels = all.len();
    let input = to_padded_c_order(&all, &layout);
    drop(extra);

    let patch_voxels = layout.patch_voxels();
    let importance: Vec<f32> =
        if options.use_gaussian { compute_gaussian(&layout.patch, 1.0 / 8.0) } else { vec![1.0; patch_voxels] };
    let weights = weight_sum(&layout, &importance);

    let windows = layout.windows();
    let combos = mirror_combinations(&options.mirror_axes);
    let internal_axis = |a: usize| if layout.dims == 3 { a } else { a + 1 };
    let combo_flips: Vec<[bool; 3]> = combos
        .iter()
        .map(|axes| {
            let mut f = [false; 3];
            for &a in axes {
                f[internal_axis(a)] = true;
            }
            f
        })
        .collect();

    let padded_voxels = layout.padded_voxels();
    let mut sums = vec![0f32; classes * padded_voxels];
    let mut batch_in = Vec::new();
    let mut flipped_in = Vec::new();
    let mut calls = 0usize;
    let mut done = 0usize;
    for batch in windows.chunks(options.batch_size) {
        let b = batch.len();
        batch_in.clear();
        batch_in.resize(b * channels * patch_voxels, 0.0);
        for (slot, start) in batch.iter().enumerate() {
            for c in 0..channels {
                let dst = &mut batch_in[(slot * channels + c) * patch_voxels..][..patch_voxels];
                gather(&input[c * padded_voxels..][..padded_voxels], &layout, *start, dst);
            }
        }
        let in_shape = layout.batch_shape(b, channels);
        let expected = b * classes * patch_voxels;
        let mut call = |x: &[f32]| -> Result<Vec<f32>> {
            calls += 1;
            let out = predictor.predict(x, &in_shape).map_err(InferError::Predictor)?;
            if out.len() != expected {
                return Err(InferError::PredictorOutput {
                    input_shape: in_shape.clone(),
                    classes,
                    expected,
                    got: out.len(),
                });
            }
            Ok(out)
        };
        let mut prediction = call(&batch_in)?;
        if !combo_flips.is_empty() {
            flipped_in.resize(batch_in.len(), 0.0);
            for flip in &combo_flips {
                flip_blocks(&batch_in, &mut flipped_in, layout.patch, *flip, false);
                let out = call(&flipped_in)?;
                flip_blocks(&out, &mut prediction, layout.patch, *flip, true);
            }
            let n = (combo_flips.len() + 1) as f32;
            prediction.par_iter_mut().for_each(|v| *v /= n);
        }
        // Each class accumulates into its own block of `sums`, so classes run in parallel.
        sums.par_chunks_mut(padded_voxels).enumerate().for_each(|(c, class_sums)| {
            for (slot, start) in batch.iter().enumerate() {
                let logits = &prediction[(slot * classes + c) * patch_voxels..][..patch_voxels];
                scatter_add(class_sums, &layout, *start, logits, &importance);
            }
        });
        done += b;
        if let Some(progress) = &options.progress {
            progress(Progress { windows_done: done, windows_total: windows.len(), predictor_calls: calls });
        }
    }
    Ok(Accumulated { sums, weights, classes, layout, geometry: first.geometry })
}

/// Copies one window of a padded C-order channel into `dst` (C-order patch).
fn gather(channel: &[f32], layout: &Layout, start: [usize; 3], dst: &mut [f32]) {
    let [p0, p1, p2] = layout.patch;
    let [_, pj, pk] = layout.padded;
    for x0 in 0..p0 {
        for x1 in 0..p1 {
            let src = ((start[0] + x0) * pj + start[1] + x1) * pk + start[2];
            dst[(x0 * p1 + x1) * p2..][..p2].copy_from_slice(&channel[src..src + p2]);
        }
    }
}

/// `sums[window] += logits * importance` for one class.
fn scatter_add(sums: &mut [f32], layout: &Layout, start: [usize; 3], logits: &[f32], importance: &[f32]) {
    let [p0, p1, p2] = layout.patch;
    let [_, pj, pk] = layout.padded;
    for x0 in 0..p0 {
        for x1 in 0..p1 {
            let dst = ((start[0] + x0) * pj + start[1] + x1) * pk + start[2];
            let row = (x0 * p1 + x1) * p2;
            for ((s, l), g) in
                sums[dst..dst + p2].iter_mut().zip(&logits[row..row + p2]).zip(&importance[row..row + p2])
            {
                *s += *l * *g;
            }
        }
    }
}

/// The summed importance per padded voxel, C-order. In 2D every slice has the same windows, so
/// one `(j, k)` plane is returned (length `pj * pk`); in 3D the whole padded volume.
fn weight_sum(layout: &Layout, importance: &[f32]) -> Vec<f32> {
    let [p0, p1, p2] = layout.patch;
    let [pi, pj, pk] = layout.padded;
    let planes = if layout.dims == 3 { pi } else { 1 };
    let mut w = vec![0f32; planes * pj * pk];
    let i_steps: &[usize] = if layout.dims == 3 { &layout.steps[0] } else { &[0] };
    for &i0 in i_steps {
        for &j0 in &layout.steps[1] {
            for &k0 in &layout.steps[2] {
                for x0 in 0..p0 {
                    for x1 in 0..p1 {
                        let dst = ((i0 + x0) * pj + j0 + x1) * pk + k0;
                        let row = (x0 * p1 + x1) * p2;
                        for (w, g) in w[dst..dst + p2].iter_mut().zip(&importance[row..row + p2]) {
                            *w += *g;
                        }
                    }
                }
            }
        }
    }
    w
}

/// `sums / weights`, cropped to the unpadded volume and transposed to the [`Volume`] order,
/// class-major.
fn finish(sums: &[f32], weights: &[f32], classes: usize, layout: &Layout) -> Vec<f32> {
    let [ni, nj, nk] = layout.shape;
    let [_, pj, pk] = layout.padded;
    let [bi, bj, bk] = layout.pad_before;
    let padded_voxels = layout.padded_voxels();
    let weight_plane = |pi: usize| if layout.dims == 3 { pi * pj * pk } else { 0 };
    let plane = ni * nj;
    // Blocks of `K_BLOCK` output `k` planes per task: the sums are read in runs of `K_BLOCK`
    // contiguous `k` values (a cache line), the output written in runs along `i`.
    const K_BLOCK: usize = 16;
    let blocks_per_class = nk.div_ceil(K_BLOCK);
    let mut out = vec![0f32; classes * ni * nj * nk];
    let mut chunks: Vec<(usize, usize, &mut [f32])> = Vec::with_capacity(classes * blocks_per_class);
    for (c, class_out) in out.chunks_mut(nk * plane).enumerate() {
        for (b, block) in class_out.chunks_mut(K_BLOCK * plane).enumerate() {
            chunks.push((c, b * K_BLOCK, block));
        }
    }
    chunks.into_par_iter().for_each(|(c, k0, dst)| {
        let kn = dst.len() / plane;
        let class_sums = &sums[c * padded_voxels..][..padded_voxels];
        for j in 0..nj {
            for i in 0..ni {
                let p = ((i + bi) * pj + j + bj) * pk + k0 + bk;
                let w = weight_plane(i + bi) + (j + bj) * pk + k0 + bk;
                for (kk, (s, w)) in class_sums[p..p + kn].iter().zip(&weights[w..w + kn]).enumerate() {
                    dst[kk * plane + i + ni * j] = *s / *w;
                }
            }
        }
    });
    out
}

/// Arg max over classes of `sums / weights` (ties: the lower class, as
/// [`crate::postprocess::argmax`]), cropped and in the [`Volume`] order.
fn finish_argmax(sums: &[f32], weights: &[f32], classes: usize, layout: &Layout) -> Vec<u8> {
    let [ni, nj, nk] = layout.shape;
    let [_, pj, pk] = layout.padded;
    let [bi, bj, bk] = layout.pad_before;
    let padded_voxels = layout.padded_voxels();
    let weight_plane = |pi: usize| if layout.dims == 3 { pi * pj * pk } else { 0 };
    let plane = ni * nj;
    const K_BLOCK: usize = 16;
    let mut out = vec![0u8; ni * nj * nk];
    out.par_chunks_mut(K_BLOCK * plane).enumerate().for_each(|(b, dst)| {
        let k0 = b * K_BLOCK;
        let kn = dst.len() / plane;
        let mut best = [0f32; K_BLOCK];
        let mut index = [0u8; K_BLOCK];
        for j in 0..nj {
            for i in 0..ni {
                let p = ((i + bi) * pj + j + bj) * pk + k0 + bk;
                let w = &weights[weight_plane(i + bi) + (j + bj) * pk + k0 + bk..][..kn];
                for c in 0..classes {
                    let s = &sums[c * padded_voxels + p..][..kn];
                    for kk in 0..kn {
                        let v = s[kk] / w[kk];
                        if c == 0 || v > best[kk] || (best[kk].is_nan() && !v.is_nan()) {
                            best[kk] = v;
                            index[kk] = c as u8;
                        }
                    }
                }
                for kk in 0..kn {
                    dst[kk * plane + i + ni * j] = index[kk];
                }
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_match_nnunet_on_hand_computed_cases() {
        // (image, patch, step) -> starts, from nnU-Net's formula by hand:
        // num_steps = ceil((image - patch) / (patch * step)) + 1,
        // starts = round(s * (image - patch) / (num_steps - 1)), numpy rounding (half to even).
        let table: &[(usize, usize, f64, &[usize])] = &[
            (512, 256, 0.5, &[0, 128, 256]),
            (100, 64, 0.5, &[0, 18, 36]),
            (64, 64, 0.5, &[0]),
            (65, 64, 0.5, &[0, 1]),
            // 104 / 48 = 2.17 -> 4 steps of 34.67: 0, 34.67, 69.33, 104.
            (200, 96, 0.5, &[0, 35, 69, 104]),
            (10, 4, 1.0, &[0, 3, 6]),
            // 5 / 4 -> 3 steps of 2.5: round(2.5) = 2 (half to even).
            (13, 8, 0.5, &[0, 2, 5]),
            // 7 / 4 -> 3 steps of 3.5: round(3.5) = 4.
            (15, 8, 0.5, &[0, 4, 7]),
            // 17 / 2 = 8.5 -> 10 steps of 17 / 9 = 1.889.
            (21, 4, 0.5, &[0, 2, 4, 6, 8, 9, 11, 13, 15, 17]),
            // Step 0.25: 256 / 64 = 4 -> 5 steps of 64.
            (512, 256, 0.25, &[0, 64, 128, 192, 256]),
        ];
        for &(image, patch, step, expected) in table {
            let steps = compute_steps_for_sliding_window(&[image], &[patch], step);
            assert_eq!(steps[0], expected, "image {image}, patch {patch}, step {step}");
        }
        let steps = compute_steps_for_sliding_window(&[20, 512, 512], &[20, 256, 256], 0.5);
        assert_eq!(steps, vec![vec![0], vec![0, 128, 256], vec![0, 128, 256]]);
    }

    #[test]
    fn gaussian_has_max_one_is_symmetric_and_has_no_zeros() {
        for patch in [vec![5, 7, 9], vec![8, 6, 4], vec![256, 256], vec![1, 3, 2]] {
            let g = compute_gaussian(&patch, 1.0 / 8.0);
            assert_eq!(g.len(), patch.iter().product::<usize>());
            let max = g.iter().cloned().fold(f32::MIN, f32::max);
            assert_eq!(max, 1.0);
            assert!(g.iter().all(|v| *v > 0.0 && v.is_finite()), "{patch:?} has a zero or invalid weight");
            // The centre voxel (patch // 2) holds the maximum.
            let mut centre = 0;
            for (a, p) in patch.iter().enumerate() {
                centre = centre * p + p / 2;
                let _ = a;
            }
            assert_eq!(g[centre], 1.0);
        }
        // Odd sides: mirror-symmetric along every axis.
        let patch = [5usize, 7, 9];
        let g = compute_gaussian(&patch, 1.0 / 8.0);
        let at = |x: usize, y: usize, z: usize| g[(x * 7 + y) * 9 + z];
        for x in 0..5 {
            for y in 0..7 {
                for z in 0..9 {
                    assert_eq!(at(x, y, z), at(4 - x, y, z));
                    assert_eq!(at(x, y, z), at(x, 6 - y, z));
                    assert_eq!(at(x, y, z), at(x, y, 8 - z));
                }
            }
        }
        // Even sides: symmetric about patch // 2; one axis value matches the closed form.
        let g = compute_gaussian(&[8], 1.0 / 8.0);
        for d in 1..4 {
            assert_eq!(g[4 - d], g[4 + d]);
        }
        assert!((g[0] as f64 - (-8.0f64).exp()).abs() < 1e-7, "sigma 1, 4 voxels from the centre");
        // Float16 underflow (nnU-Net stores it as half) is not an issue here, but a zero would be
        // replaced: a 1-voxel axis with sigma 1/8 keeps weight 1.
        assert_eq!(compute_gaussian(&[1, 4], 1.0 / 8.0)[2], 1.0);
    }

    #[test]
    fn mirror_combinations_follow_itertools() {
        assert_eq!(mirror_combinations(&[]), Vec::<Vec<usize>>::new());
        assert_eq!(mirror_combinations(&[0]), vec![vec![0]]);
        assert_eq!(
            mirror_combinations(&[0, 1, 2]),
            vec![vec![0], vec![1], vec![2], vec![0, 1], vec![0, 2], vec![1, 2], vec![0, 1, 2]]
        );
    }

    /// Channels of small integers (so sums of a few copies are exact in f32).
    fn integer_channels(shape: [usize; 3], channels: usize) -> Vec<Volume<f32>> {
        (0..channels)
            .map(|c| {
                let mut v = Volume::filled(shape, 0f32, Geometry::default());
                for k in 0..shape[2] {
                    for j in 0..shape[1] {
                        for i in 0..shape[0] {
                            v.set([i, j, k], ((i * 7 + j * 3 + k * 5 + c * 11) % 13) as f32 - 6.0);
                        }
                    }
                }
                v
            })
            .collect()
    }

    /// A pointwise "network" on 2 input channels: class 0 = x0 + 2 x1, class 1 = x0 * x1 - 3,
    /// class 2 = -x1. It checks the batch shape it is given.
    fn pointwise(expected_patch: Vec<usize>, max_batch: usize) -> impl PatchPredictor {
        predictor_fn(3, move |input: &[f32], shape: &[usize]| {
            assert_eq!(&shape[2..], &expected_patch[..], "patch shape");
            assert_eq!(shape[1], 2, "channels");
            assert!(shape[0] >= 1 && shape[0] <= max_batch, "batch {} > {max_batch}", shape[0]);
            assert_eq!(input.len(), shape.iter().product::<usize>());
            let n: usize = shape[2..].iter().product();
            let mut out = Vec::with_capacity(shape[0] * 3 * n);
            for b in 0..shape[0] {
                let x0 = &input[(b * 2) * n..][..n];
                let x1 = &input[(b * 2 + 1) * n..][..n];
                out.extend(x0.iter().zip(x1).map(|(a, b)| a + 2.0 * b));
                out.extend(x0.iter().zip(x1).map(|(a, b)| a * b - 3.0));
                out.extend(x1.iter().map(|b| -b));
            }
            Ok(out)
        })
    }

    fn expected_pointwise(images: &[Volume<f32>]) -> Vec<f32> {
        let (x0, x1) = (images[0].data(), images[1].data());
        let mut out: Vec<f32> = x0.iter().zip(x1).map(|(a, b)| a + 2.0 * b).collect();
        out.extend(x0.iter().zip(x1).map(|(a, b)| a * b - 3.0));
        out.extend(x1.iter().map(|b| -b));
        out
    }

    #[test]
    fn pointwise_predictor_is_reproduced_exactly_in_3d_and_2d() {
        // (volume shape, patch): divisible, non-divisible, smaller than the patch on some axes.
        let cases: &[([usize; 3], Vec<usize>)] = &[
            ([8, 8, 8], vec![4, 4, 4]),
            ([7, 11, 13], vec![4, 4, 4]),
            ([3, 5, 6], vec![4, 4, 8]),
            ([5, 3, 9], vec![2, 6, 4]),
            ([3, 9, 10], vec![4, 6]),
            ([2, 3, 5], vec![4, 6]),
            ([4, 1, 1], vec![3, 2]),
        ];
        for (shape, patch) in cases {
            let images = integer_channels(*shape, 2);
            let expected = expected_pointwise(&images);
            for batch_size in [1, 3, 1000] {
                // Uniform weights: sums of equal small integers divided by their count are exact.
                let options = SlidingWindowOptions { use_gaussian: false, ..SlidingWindowOptions::new(patch.clone()) }
                    .with_mirror_axes(vec![])
                    .with_batch_size(batch_size);
                let scores =
                    predict_sliding_window(&images, &mut pointwise(patch.clone(), batch_size), &options).unwrap();
                assert_eq!(scores.shape(), *shape);
                assert_eq!(scores.num_classes(), 3);
                assert_eq!(scores.data(), &expected[..], "{shape:?} {patch:?} batch {batch_size}");
                // Gaussian weights: exact up to float rounding of the weighted sums.
                let options =
                    SlidingWindowOptions::new(patch.clone()).with_mirror_axes(vec![]).with_batch_size(batch_size);
                let scores =
                    predict_sliding_window(&images, &mut pointwise(patch.clone(), batch_size), &options).unwrap();
                for (got, want) in scores.data().iter().zip(&expected) {
                    assert!((got - want).abs() <= 1e-5 * want.abs().max(1.0), "{shape:?} {patch:?}: {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn patches_are_c_order_over_i_j_k() {
        // Channels hold the voxel's own i, j, k; the predictor checks the layout it receives.
        let shape = [5, 6, 7];
        let coords: Vec<Volume<f32>> = (0..3)
            .map(|a| {
                let mut v = Volume::filled(shape, 0f32, Geometry::default());
                for k in 0..shape[2] {
                    for j in 0..shape[1] {
                        for i in 0..shape[0] {
                            v.set([i, j, k], [i, j, k][a] as f32);
                        }
                    }
                }
                v
            })
            .collect();
        let mut windows_seen = 0;
        let mut check_3d = predictor_fn(1, |x: &[f32], s: &[usize]| {
            let [b, c, p0, p1, p2] = [s[0], s[1], s[2], s[3], s[4]];
            assert_eq!((c, p0, p1, p2), (3, 2, 3, 4));
            let n = p0 * p1 * p2;
            for slot in 0..b {
                let at = |ch: usize, x0: usize, x1: usize, x2: usize| x[(slot * c + ch) * n + (x0 * p1 + x1) * p2 + x2];
                for x0 in 0..p0 {
                    for x1 in 0..p1 {
                        for x2 in 0..p2 {
                            assert_eq!(at(0, x0, x1, x2), at(0, 0, 0, 0) + x0 as f32, "axis 2 of the batch is i");
                            assert_eq!(at(1, x0, x1, x2), at(1, 0, 0, 0) + x1 as f32, "axis 3 is j");
                            assert_eq!(at(2, x0, x1, x2), at(2, 0, 0, 0) + x2 as f32, "axis 4 (fastest) is k");
                        }
                    }
                }
                windows_seen += 1;
            }
            Ok(vec![0.0; b * n])
        });
        let options = SlidingWindowOptions::new(vec![2, 3, 4]).with_mirror_axes(vec![]).with_batch_size(2);
        predict_sliding_window(&coords, &mut check_3d, &options).unwrap();
        // Steps: i [0, 1, 2, 3] (4 windows, step 1), j [0, 2, 3], k [0, 2, 3].
        assert_eq!(windows_seen, 4 * 3 * 3);

        let mut slices = Vec::new();
        let mut check_2d = predictor_fn(1, |x: &[f32], s: &[usize]| {
            let [b, c, p1, p2] = [s[0], s[1], s[2], s[3]];
            assert_eq!((c, p1, p2), (3, 4, 4));
            let n = p1 * p2;
            for slot in 0..b {
                let at = |ch: usize, x1: usize, x2: usize| x[(slot * c + ch) * n + x1 * p2 + x2];
                slices.push(at(0, 0, 0) as usize);
                for x1 in 0..p1 {
                    for x2 in 0..p2 {
                        assert_eq!(at(0, x1, x2), at(0, 0, 0), "one sagittal slice per patch");
                        assert_eq!(at(1, x1, x2), at(1, 0, 0) + x1 as f32, "axis 2 is j");
                        assert_eq!(at(2, x1, x2), at(2, 0, 0) + x2 as f32, "axis 3 (fastest) is k");
                    }
                }
            }
            Ok(vec![0.0; b * n])
        });
        predict_sliding_window(&coords, &mut check_2d, &SlidingWindowOptions::new(vec![4, 4])).unwrap();
        // Every slice i, each with j steps [0, 2] and k steps [0, 2, 3].
        let expected: Vec<usize> = (0..5).flat_map(|i| std::iter::repeat_n(i, 6)).collect();
        assert_eq!(slices, expected);
    }

    #[test]
    fn weights_count_overlapping_windows() {
        // Uniform importance: the weight of a voxel is the number of windows covering it.
        for (shape, patch) in [([7usize, 11, 13], vec![4usize, 4, 4]), ([3, 10, 9], vec![6, 4])] {
            let options = SlidingWindowOptions { use_gaussian: false, ..SlidingWindowOptions::new(patch) };
            let layout = Layout::new(shape, &options);
            let w = weight_sum(&layout, &vec![1.0; layout.patch_voxels()]);
            let [_, pj, pk] = layout.padded;
            let windows = layout.windows();
            for i in 0..if layout.dims == 3 { layout.padded[0] } else { 1 } {
                for j in 0..pj {
                    for k in 0..pk {
                        let count = windows
                            .iter()
                            .filter(|s| {
                                (layout.dims == 2 && s[0] == 0 || (s[0]..s[0] + layout.patch[0]).contains(&i))
                                    && (s[1]..s[1] + layout.patch[1]).contains(&j)
                                    && (s[2]..s[2] + layout.patch[2]).contains(&k)
                            })
                            .count();
                        assert_eq!(w[(i * pj + j) * pk + k], count as f32, "{shape:?} at {i}, {j}, {k}");
                        assert!(count > 0);
                    }
                }
            }
        }
    }

    /// A predictor that is not mirror-equivariant: logit = input + the voxel's index along patch
    /// axis `axis` (so a flipped prediction, flipped back, adds `p - 1 - x` instead of `x`).
    fn position_adding(axis: usize, classes: usize) -> impl PatchPredictor {
        predictor_fn(classes, move |x: &[f32], s: &[usize]| {
            let spatial = &s[2..];
            let n: usize = spatial.iter().product();
            let stride: usize = spatial[axis + 1..].iter().product();
            let mut out = Vec::with_capacity(s[0] * classes * n);
            for b in 0..s[0] {
                for c in 0..classes {
                    let channel = &x[b * s[1] * n..][..n];
                    out.extend(
                        channel
                            .iter()
                            .enumerate()
                            .map(|(p, v)| v + ((p / stride) % spatial[axis]) as f32 * (c + 1) as f32),
                    );
                }
            }
            Ok(out)
        })
    }

    #[test]
    fn mirroring_an_equivariant_predictor_changes_nothing() {
        let images = integer_channels([5, 9, 7], 2);
        for (patch, axes) in [(vec![4, 4, 4], vec![0, 1, 2]), (vec![4, 4, 4], vec![0]), (vec![4, 6], vec![0, 1])] {
            let plain = SlidingWindowOptions::new(patch.clone()).with_mirror_axes(vec![]);
            let mirrored = SlidingWindowOptions::new(patch.clone()).with_mirror_axes(axes).with_batch_size(4);
            let a = predict_sliding_window(&images, &mut pointwise(patch.clone(), 1), &plain).unwrap();
            let b = predict_sliding_window(&images, &mut pointwise(patch.clone(), 4), &mirrored).unwrap();
            assert_eq!(a, b, "{patch:?}");
        }
    }

    #[test]
    fn mirroring_averages_flipped_predictions() {
        // One window (volume = patch): logit = x + position along axis 1 (j) times (class + 1).
        let images = integer_channels([3, 4, 5], 1);
        let run = |axes: Vec<usize>| {
            // Uniform weights keep x * w / w exact.
            let options = SlidingWindowOptions { use_gaussian: false, ..SlidingWindowOptions::new(vec![3, 4, 5]) }
                .with_mirror_axes(axes);
            predict_sliding_window(&images, &mut position_adding(1, 2), &options).unwrap()
        };
        let plain = run(vec![]);
        let along_j = run(vec![1]);
        let others = run(vec![0, 2]);
        let all = run(vec![0, 1, 2]);
        for k in 0..5 {
            for j in 0..4 {
                for i in 0..3 {
                    let x = *images[0].get([i, j, k]);
                    for c in 0..2 {
                        let at = |s: &ClassScores| *s.class_volume(c).get([i, j, k]);
                        let scale = (c + 1) as f32;
                        assert_eq!(at(&plain), x + j as f32 * scale);
                        // (j + (3 - j)) / 2 = 1.5 along the flipped axis.
                        assert_eq!(at(&along_j), x + 1.5 * scale);
                        assert_eq!(at(&others), x + j as f32 * scale, "flips along i and k leave the j position");
                        assert_eq!(at(&all), x + 1.5 * scale);
                    }
                }
            }
        }

        // Many overlapping windows, 2D: blending is linear, so the mirrored result is the mean of
        // the sliding-window results of the plain and the flipped-back predictors.
        let images = integer_channels([2, 11, 9], 1);
        let options = SlidingWindowOptions::new(vec![4, 6]).with_mirror_axes(vec![1]);
        let tta = predict_sliding_window(&images, &mut position_adding(1, 1), &options).unwrap();
        let plain =
            predict_sliding_window(&images, &mut position_adding(1, 1), &options.clone().with_mirror_axes(vec![]))
                .unwrap();
        let mut flipped_back = predictor_fn(1, |x: &[f32], s: &[usize]| {
            let patch = [1, s[2], s[3]];
            let mut flipped = vec![0.0; x.len()];
            flip_blocks(x, &mut flipped, patch, [false, false, true], false);
            let out = position_adding(1, 1).predict(&flipped, s)?;
            let mut back = vec![0.0; out.len()];
            flip_blocks(&out, &mut back, patch, [false, false, true], false);
            Ok(back)
        });
        let flipped =
            predict_sliding_window(&images, &mut flipped_back, &options.clone().with_mirror_axes(vec![])).unwrap();
        for ((t, p), f) in tta.data().iter().zip(plain.data()).zip(flipped.data()) {
            assert!((t - (p + f) / 2.0).abs() < 1e-5, "{t} vs mean of {p} and {f}");
        }
    }

    #[test]
    fn predictor_errors_and_bad_outputs_are_reported() {
        let images = integer_channels([4, 4, 4], 1);
        let options = SlidingWindowOptions::new(vec![4, 4, 4]);
        let mut short = predictor_fn(2, |x: &[f32], _s: &[usize]| Ok(x.to_vec()));
        let err = predict_sliding_window(&images, &mut short, &options).unwrap_err();
        assert!(matches!(err, InferError::PredictorOutput { expected: 128, got: 64, .. }), "{err}");
        let mut failing = predictor_fn(1, |_x: &[f32], _s: &[usize]| Err("device lost".into()));
        let err = predict_sliding_window(&images, &mut failing, &options).unwrap_err();
        assert!(err.to_string().contains("device lost"), "{err}");
        let mixed = vec![images[0].clone(), integer_channels([4, 4, 5], 1).remove(0)];
        let mut ok = predictor_fn(1, |x: &[f32], _s: &[usize]| Ok(x.to_vec()));
        assert!(matches!(predict_sliding_window(&mixed, &mut ok, &options), Err(InferError::InvalidInput(_))));
    }

    #[test]
    fn progress_reports_every_batch() {
        use std::sync::Mutex;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let images = integer_channels([2, 8, 8], 1);
        // 2 slices x 3 x 3 windows, batches of 4, mirrored along k: 5 batches, 2 calls each.
        let options = SlidingWindowOptions::new(vec![4, 4])
            .with_mirror_axes(vec![1])
            .with_batch_size(4)
            .with_progress(move |p| log.lock().unwrap().push(p));
        let mut identity = predictor_fn(1, |x: &[f32], _s: &[usize]| Ok(x.to_vec()));
        predict_sliding_window(&images, &mut identity, &options).unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 5);
        assert_eq!(seen.last().unwrap(), &Progress { windows_done: 18, windows_total: 18, predictor_calls: 10 });
    }

    #[test]
    fn direct_argmax_equals_argmax_of_the_scores() {
        for (shape, patch) in
            [([7usize, 11, 13], vec![4usize, 4, 4]), ([3, 9, 40], vec![4, 6]), ([2, 3, 5], vec![4, 6])]
        {
            let images = integer_channels(shape, 2);
            let options = SlidingWindowOptions::new(patch.clone()).with_batch_size(2);
            let scores = predict_sliding_window(&images, &mut pointwise(patch.clone(), 2), &options).unwrap();
            let direct = predict_sliding_window_argmax(&images, &mut pointwise(patch.clone(), 2), &options).unwrap();
            assert_eq!(direct, scores.argmax(), "{shape:?} {patch:?}");
            assert!(direct.data().contains(&0) && direct.data().contains(&2));
        }
    }

    #[test]
    fn options_are_validated() {
        assert!(SlidingWindowOptions::new(vec![4, 4]).validate().is_ok());
        assert!(SlidingWindowOptions::new(vec![4]).validate().is_err());
        assert!(SlidingWindowOptions::new(vec![4, 0]).validate().is_err());
        assert!(SlidingWindowOptions::new(vec![4, 4]).with_mirror_axes(vec![2]).validate().is_err());
        assert!(SlidingWindowOptions::new(vec![4, 4, 4]).with_mirror_axes(vec![1, 1]).validate().is_err());
        assert!(SlidingWindowOptions { tile_step_size: 0.0, ..SlidingWindowOptions::new(vec![4, 4]) }
            .validate()
            .is_err());
        assert!(SlidingWindowOptions::new(vec![4, 4]).with_batch_size(0).validate().is_err());
        assert_eq!(SlidingWindowOptions::new(vec![4, 4, 4]).mirror_axes, vec![0]);
        assert!(SlidingWindowOptions::new(vec![4, 4]).mirror_axes.is_empty());
        assert_eq!(SlidingWindowOptions::nnunet(vec![4, 4, 4]).mirror_axes, vec![0, 1, 2]);
    }
}
