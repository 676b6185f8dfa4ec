//! Resampling volumes to a new voxel grid that covers the same physical extent, as nnU-Net v2's
//! `resample_data_or_seg_to_shape` does.
//!
//! # Grid convention (the invariant prediction relies on)
//! A volume of `n` voxels with spacing `s` along an axis covers `n * s` mm, from half a voxel
//! before the centre of voxel 0 to half a voxel after the centre of voxel `n - 1`. Resampling to
//! `m` voxels keeps that extent: the new spacing is `s * n / m` and new voxel `o` samples the old
//! continuous index `x = (o + 0.5) * n / m - 0.5` (scikit-image `resize` / scipy `zoom` with
//! `grid_mode=True`, "align corners = false"). The new geometry keeps the direction, takes the
//! spacing `s * n / m` and puts the origin (centre of new voxel 0) at the old continuous index
//! `0.5 * n / m - 0.5`. So world coordinates of resampled voxels are exact, and resampling
//! there and back (`n -> m -> n`) returns the original geometry (up to float rounding).
//!
//! nnU-Net computes `m = round(n * s / target)` ([`compute_new_shape`]) and then records the
//! *target* spacing; we record the *effective* spacing `s * n / m` in the geometry, which differs
//! from the target by less than half a voxel over the whole extent, so the geometry stays exact.
//!
//! # Interpolation
//! - Images: [`Interpolation::Cubic`] is scipy's order-3 B-spline with prefilter, mode `nearest`
//!   (12 voxels of edge padding before the prefilter, as scipy does), then clipped to the input's
//!   value range (scikit-image `clip=True`). [`Interpolation::Linear`] and
//!   [`Interpolation::Nearest`] are scipy's orders 1 and 0 (order 0 rounds half up).
//! - Labels: [`LabelInterpolation::OneHotLinear`] resamples the indicator of every label value
//!   present with linear interpolation and takes the arg max (ties go to the lower value).
//!   nnU-Net's `resize_segmentation` instead thresholds each indicator at 0.5 in increasing
//!   value order; the two agree wherever one label reaches 0.5, and the arg max never leaves a
//!   voxel without a label. [`LabelInterpolation::Nearest`] copies the nearest voxel.
//! - Anisotropic data ("separate z", nnU-Net's `determine_do_sep_z_and_axis`): when the current
//!   spacing (or else the new spacing) has max/min above the anisotropy threshold (3) and exactly
//!   one axis has the largest spacing, that axis is resampled with nearest neighbour
//!   ([`ResampleSettings::out_of_plane`], nnU-Net's `order_z = 0`) and the other two with the
//!   in-plane method.
//!
//! Everything is separable (one 1D pass per axis whose size changes; scipy's tensor-product
//! spline gives the same result), parallel over lines with rayon.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use spineseg_io::{Geometry, Label, Spacing, Volume};

/// nnU-Net's `ANISO_THRESHOLD`.
pub const ANISOTROPY_THRESHOLD: f64 = 3.0;

/// Interpolation of intensities along one axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    /// Order 0: the nearest voxel (half rounds up, as scipy).
    Nearest,
    /// Order 1: linear.
    Linear,
    /// Order 3: cubic B-spline with prefilter (scipy / nnU-Net's default for images).
    Cubic,
}

/// Interpolation of label masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelInterpolation {
    Nearest,
    /// Linear interpolation of each label's indicator, then arg max (nnU-Net's order 1 for
    /// segmentations).
    OneHotLinear,
}

/// When to resample one axis separately with [`ResampleSettings::out_of_plane`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeparateZ {
    /// nnU-Net's default (`force_separate_z = None`): when max/min spacing exceeds the threshold.
    Auto { anisotropy_threshold: f64 },
    /// Always resample all axes with the in-plane method (`force_separate_z = False`).
    Never,
}

/// How images and labels are resampled (nnU-Net's `resampling_fn_*_kwargs`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ResampleSettings {
    /// In-plane (or all-axes) method for images; nnU-Net: order 3.
    pub image: Interpolation,
    /// In-plane (or all-axes) method for labels; nnU-Net: order 1 (one-hot).
    pub label: LabelInterpolation,
    /// Method along the separate (coarse) axis, images and labels; nnU-Net: `order_z = 0`.
    pub out_of_plane: Interpolation,
    pub separate_z: SeparateZ,
}

impl Default for ResampleSettings {
    fn default() -> Self {
        ResampleSettings {
            image: Interpolation::Cubic,
            label: LabelInterpolation::OneHotLinear,
            out_of_plane: Interpolation::Nearest,
            separate_z: SeparateZ::Auto { anisotropy_threshold: ANISOTROPY_THRESHOLD },
        }
    }
}

/// nnU-Net's `compute_new_shape`: `round(old_shape * old_spacing / new_spacing)` per axis, with
/// Python's rounding (half to even), and at least one voxel.
pub fn compute_new_shape(old_shape: [usize; 3], old_spacing_mm: [f64; 3], new_spacing_mm: [f64; 3]) -> [usize; 3] {
    [0, 1, 2].map(|a| {
        let n = (old_spacing_mm[a] / new_spacing_mm[a] * old_shape[a] as f64).round_ties_even();
        (n as usize).max(1)
    })
}

/// Spacing of a volume of `old_shape` with `old_spacing_mm` after resampling it to `new_shape`
/// with the extent kept: `s * n / m`.
pub fn effective_spacing(old_shape: [usize; 3], old_spacing_mm: [f64; 3], new_shape: [usize; 3]) -> [f64; 3] {
    [0, 1, 2].map(|a| old_spacing_mm[a] * old_shape[a] as f64 / new_shape[a] as f64)
}

/// The geometry of a volume resampled from `old_shape` to `new_shape` (see the module's grid
/// convention): same direction and extent, spacing `s * n / m`.
pub fn resampled_geometry(geometry: &Geometry, old_shape: [usize; 3], new_shape: [usize; 3]) -> Geometry {
    let spacing = effective_spacing(old_shape, geometry.spacing.mm(), new_shape);
    let first = [0, 1, 2].map(|a| 0.5 * old_shape[a] as f64 / new_shape[a] as f64 - 0.5);
    Geometry {
        spacing: Spacing::new(spacing).expect("a positive spacing scaled by a positive ratio is positive"),
        origin_mm: geometry.voxel_to_world(first),
        direction: geometry.direction,
    }
}

/// nnU-Net's `determine_do_sep_z_and_axis` with `force_separate_z = None`: the axis to resample
/// separately, if any.
pub fn separate_axis(current_spacing_mm: [f64; 3], new_spacing_mm: [f64; 3], separate_z: SeparateZ) -> Option<usize> {
    let SeparateZ::Auto { anisotropy_threshold } = separate_z else { return None };
    let anisotropic = |s: [f64; 3]| {
        let max = s.iter().cloned().fold(f64::MIN, f64::max);
        let min = s.iter().cloned().fold(f64::MAX, f64::min);
        max / min > anisotropy_threshold
    };
    // nnU-Net's get_lowres_axis: the axes whose spacing equals the maximum; only a single one
    // counts (two coarse axes, e.g. (0.24, 1.25, 1.25), mean no separate axis).
    let lowres = |s: [f64; 3]| {
        let max = s.iter().cloned().fold(f64::MIN, f64::max);
        let axes: Vec<usize> = (0..3).filter(|&a| max / s[a] == 1.0).collect();
        if axes.len() == 1 {
            Some(axes[0])
        } else {
            None
        }
    };
    if anisotropic(current_spacing_mm) {
        lowres(current_spacing_mm)
    } else if anisotropic(new_spacing_mm) {
        lowres(new_spacing_mm)
    } else {
        None
    }
}

/// Per-axis interpolation for an image going from `current` to `new` spacing.
fn image_kinds(settings: &ResampleSettings, current: [f64; 3], new: [f64; 3]) -> [Interpolation; 3] {
    let mut kinds = [settings.image; 3];
    if let Some(axis) = separate_axis(current, new, settings.separate_z) {
        kinds[axis] = settings.out_of_plane;
    }
    kinds
}

/// Resamples an image to `new_shape` (extent kept), with the plan's interpolation.
pub fn resample_image(volume: &Volume<f32>, new_shape: [usize; 3], settings: &ResampleSettings) -> Volume<f32> {
    let old_shape = volume.shape();
    let geometry = resampled_geometry(&volume.geometry, old_shape, new_shape);
    if old_shape == new_shape {
        return volume.clone();
    }
    let kinds = image_kinds(settings, volume.geometry.spacing.mm(), geometry.spacing.mm());
    let mut data = resample_separable(volume.data(), old_shape, new_shape, kinds);
    if kinds.contains(&Interpolation::Cubic) {
        // scikit-image's resize clips spline overshoot to the input range.
        let (lo, hi) = volume.data().iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        if lo <= hi {
            data.par_iter_mut().for_each(|v| *v = v.clamp(lo, hi));
        }
    }
    Volume::new(new_shape, data, geometry).unwrap_or_else(|_| unreachable!("resample_separable yields the new shape"))
}

/// Resamples an image to `target_spacing_mm` ([`compute_new_shape`]).
pub fn resample_image_to_spacing(volume: &Volume<f32>, target_spacing_mm: [f64; 3], settings: &ResampleSettings) -> Volume<f32> {
    let new_shape = compute_new_shape(volume.shape(), volume.geometry.spacing.mm(), target_spacing_mm);
    resample_image(volume, new_shape, settings)
}

/// Resamples a label mask to `new_shape` (extent kept), with the plan's label interpolation.
/// Works for any label type that converts to and from `u16` (class indices as `u8`, dataset
/// values as [`Label`]).
pub fn resample_labels<T>(volume: &Volume<T>, new_shape: [usize; 3], settings: &ResampleSettings) -> Volume<T>
where
    T: Copy + Send + Sync + Into<Label> + TryFrom<Label> + Default + PartialEq,
{
    let old_shape = volume.shape();
    let geometry = resampled_geometry(&volume.geometry, old_shape, new_shape);
    if old_shape == new_shape {
        return volume.clone();
    }
    let in_plane = match settings.label {
        LabelInterpolation::Nearest => Interpolation::Nearest,
        LabelInterpolation::OneHotLinear => Interpolation::Linear,
    };
    let mut kinds = [in_plane; 3];
    if let Some(axis) = separate_axis(volume.geometry.spacing.mm(), geometry.spacing.mm(), settings.separate_z) {
        kinds[axis] = settings.out_of_plane;
    }
    let data = if kinds.iter().all(|k| *k == Interpolation::Nearest) {
        nearest_copy(volume.data(), old_shape, new_shape)
    } else {
        one_hot_argmax(volume.data(), old_shape, new_shape, kinds)
    };
    Volume::new(new_shape, data, geometry).unwrap_or_else(|_| unreachable!("label resampling yields the new shape"))
}

/// Resamples a label mask to `target_spacing_mm` ([`compute_new_shape`]).
pub fn resample_labels_to_spacing<T>(volume: &Volume<T>, target_spacing_mm: [f64; 3], settings: &ResampleSettings) -> Volume<T>
where
    T: Copy + Send + Sync + Into<Label> + TryFrom<Label> + Default + PartialEq,
{
    let new_shape = compute_new_shape(volume.shape(), volume.geometry.spacing.mm(), target_spacing_mm);
    resample_labels(volume, new_shape, settings)
}

/// The old continuous index sampled by new index `o` (align corners = false).
#[inline]
fn source_coordinate(o: usize, n_old: usize, n_new: usize) -> f64 {
    (o as f64 + 0.5) * n_old as f64 / n_new as f64 - 0.5
}

/// scipy's order-0 index: round half up, clamped (mode `nearest`).
#[inline]
fn nearest_index(x: f64, n: usize) -> usize {
    ((x + 0.5).floor().max(0.0) as usize).min(n - 1)
}

fn nearest_copy<T: Copy + Send + Sync + Default>(data: &[T], old: [usize; 3], new: [usize; 3]) -> Vec<T> {
    let maps: [Vec<usize>; 3] =
        [0, 1, 2].map(|a| (0..new[a]).map(|o| nearest_index(source_coordinate(o, old[a], new[a]), old[a])).collect());
    let mut out = vec![T::default(); new.iter().product()];
    out.par_chunks_mut(new[0] * new[1]).enumerate().for_each(|(k, slab)| {
        let kk = maps[2][k];
        for (j, row) in slab.chunks_mut(new[0]).enumerate() {
            let base = old[0] * (maps[1][j] + old[1] * kk);
            for (i, v) in row.iter_mut().enumerate() {
                *v = data[base + maps[0][i]];
            }
        }
    });
    out
}

/// Linear (or nearest) resampling of every label's indicator, keeping the arg max.
///
/// Once the first value has been resampled everywhere, every output holds a score >= 0, and a
/// later value's resampled indicator is exactly 0 wherever none of its interpolation taps falls
/// on one of its voxels (non-negative weights times zeros): it cannot win there. So each later
/// value is resampled only inside the output box its voxels reach ([`resample_in_box`]), with
/// the same taps and the same order of passes, hence the same f32 operations per output voxel
/// as resampling the whole volume: the result is bit-identical, and a structure that covers a
/// twentieth of the volume costs a twentieth of it.
fn one_hot_argmax<T>(data: &[T], old: [usize; 3], new: [usize; 3], kinds: [Interpolation; 3]) -> Vec<T>
where
    T: Copy + Send + Sync + Into<Label> + TryFrom<Label> + Default,
{
    // Per value: its voxels' bounding box in the old grid, [low, high] per axis.
    let mut boxes: Vec<Option<[[usize; 2]; 3]>> = vec![None; Label::MAX as usize + 1];
    for (n, row) in data.chunks(old[0]).enumerate() {
        let (j, k) = (n % old[1], n / old[1]);
        for (i, v) in row.iter().enumerate() {
            let b = boxes[(*v).into() as usize].get_or_insert([[i, i], [j, j], [k, k]]);
            b[0] = [b[0][0].min(i), b[0][1].max(i)];
            b[1] = [b[1][0].min(j), b[1][1].max(j)];
            b[2] = [b[2][0].min(k), b[2][1].max(k)];
        }
    }
    let values: Vec<(Label, [[usize; 2]; 3])> =
        (0..=Label::MAX).filter_map(|v| boxes[v as usize].map(|b| (v, b))).collect();
    let n_new: usize = new.iter().product();
    let mut best = vec![f32::NEG_INFINITY; n_new];
    let mut out = vec![T::default(); n_new];
    let taps: [Vec<Taps>; 3] = [0, 1, 2].map(|a| axis_taps(kinds[a], old[a], new[a]));
    for (rank, (value, bounds)) in values.into_iter().enumerate() {
        let label = T::try_from(value).ok().expect("a value read from the volume converts back to its type");
        let is_value = |v: &T| if (*v).into() == value { 1.0 } else { 0.0 };
        // A cubic pass is not local (its spline prefilter spreads every voxel along the line):
        // every value is then resampled everywhere.
        if rank == 0 || kinds.contains(&Interpolation::Cubic) {
            let indicator: Vec<f32> = data.par_iter().map(is_value).collect();
            let resampled = resample_separable(&indicator, old, new, kinds);
            best.par_iter_mut().zip(out.par_iter_mut()).zip(resampled.par_iter()).for_each(|((b, o), r)| {
                // Strictly greater: ties keep the lower value (background first).
                if *r > *b {
                    *b = *r;
                    *o = label;
                }
            });
            continue;
        }
        // None: down-sampling reads none of its voxels, so it is 0 everywhere.
        let Some((out_box, resampled)) = resample_in_box(data, old, new, &taps, bounds, is_value) else { continue };
        let [ob0, ob1, ob2] = out_box;
        let width = ob0[1] - ob0[0];
        best.par_chunks_mut(new[0] * new[1])
            .zip(out.par_chunks_mut(new[0] * new[1]))
            .enumerate()
            .filter(|(k, _)| (ob2[0]..ob2[1]).contains(k))
            .for_each(|(k, (best_plane, out_plane))| {
                for j in ob1[0]..ob1[1] {
                    let row = &resampled[((k - ob2[0]) * (ob1[1] - ob1[0]) + j - ob1[0]) * width..][..width];
                    let start = j * new[0] + ob0[0];
                    for ((b, o), r) in best_plane[start..start + width].iter_mut().zip(&mut out_plane[start..start + width]).zip(row) {
                        if *r > *b {
                            *b = *r;
                            *o = label;
                        }
                    }
                }
            });
    }
    out
}

/// The resampled indicator `indicator(v)` of the voxels in the old-grid box `bounds` (inclusive),
/// on the output box its taps reach: returns that box (`[start, end)` per axis) and the values
/// in it (i fastest). Every output voxel outside the box has no tap in `bounds`, so its value
/// would be exactly 0. Same taps and pass order as [`resample_separable`]. `None` when no output
/// reads the box at all (down-sampling can skip voxels).
fn resample_in_box<T: Sync>(
    data: &[T],
    old: [usize; 3],
    new: [usize; 3],
    taps: &[Vec<Taps>; 3],
    bounds: [[usize; 2]; 3],
    indicator: impl Fn(&T) -> f32 + Sync,
) -> Option<([[usize; 2]; 3], Vec<f32>)> {
    // Per axis: the output range whose taps reach the box, and the old range those taps read.
    let mut out_box = [[0usize; 2]; 3];
    let mut in_box = [[0usize; 2]; 3];
    let mut box_taps: [Vec<Taps>; 3] = Default::default();
    for a in 0..3 {
        let [low, high] = bounds[a];
        if old[a] == new[a] {
            out_box[a] = [low, high + 1];
            in_box[a] = [low, high + 1];
            continue;
        }
        let reaches = |t: &Taps| t.index[..t.count].iter().any(|i| (low..=high).contains(i));
        let first = taps[a].iter().position(reaches)?;
        let last = taps[a].iter().rposition(reaches)?;
        let used = &taps[a][first..=last];
        let read_low = used.iter().flat_map(|t| t.index[..t.count].iter().copied()).min().expect("taps read voxels");
        let read_high = used.iter().flat_map(|t| t.index[..t.count].iter().copied()).max().expect("taps read voxels");
        out_box[a] = [first, last + 1];
        in_box[a] = [read_low, read_high + 1];
        box_taps[a] = used
            .iter()
            .map(|t| {
                let mut t = *t;
                t.index[..t.count].iter_mut().for_each(|i| *i -= read_low);
                t
            })
            .collect();
    }
    let in_shape = in_box.map(|[low, high]| high - low);
    let mut values = Vec::with_capacity(in_shape.iter().product());
    for k in in_box[2][0]..in_box[2][1] {
        for j in in_box[1][0]..in_box[1][1] {
            let row = (k * old[1] + j) * old[0];
            values.extend(data[row + in_box[0][0]..row + in_box[0][1]].iter().map(&indicator));
        }
    }
    // The passes of resample_separable, in its order (by the axes' whole-volume ratios).
    let mut shape = in_shape;
    for axis in pass_order(old, new) {
        values = resample_axis_with_taps(&values, shape, axis, &box_taps[axis], Interpolation::Linear);
        shape[axis] = box_taps[axis].len();
    }
    Some((out_box, values))
}

/// Interpolation taps of one output index along an axis: indices into the (padded) line and
/// their weights.
#[derive(Clone, Copy)]
struct Taps {
    index: [usize; 4],
    weight: [f32; 4],
    count: usize,
}

/// Padding scipy adds (edge mode) before the spline prefilter for mode `nearest`.
const SPLINE_PAD: usize = 12;

fn axis_taps(kind: Interpolation, n_old: usize, n_new: usize) -> Vec<Taps> {
    (0..n_new)
        .map(|o| {
            let x = source_coordinate(o, n_old, n_new);
            match kind {
                Interpolation::Nearest => {
                    Taps { index: [nearest_index(x, n_old), 0, 0, 0], weight: [1.0, 0.0, 0.0, 0.0], count: 1 }
                }
                Interpolation::Linear => {
                    let f = x.floor();
                    let t = (x - f) as f32;
                    let clamp = |i: f64| (i.max(0.0) as usize).min(n_old - 1);
                    Taps { index: [clamp(f), clamp(f + 1.0), 0, 0], weight: [1.0 - t, t, 0.0, 0.0], count: 2 }
                }
                Interpolation::Cubic => {
                    // Index into the padded coefficient line.
                    let xp = x + SPLINE_PAD as f64;
                    let f = xp.floor();
                    let t = xp - f;
                    let len = n_old + 2 * SPLINE_PAD;
                    let clamp = |i: f64| (i.max(0.0) as usize).min(len - 1);
                    let w = [
                        (1.0 - t).powi(3) / 6.0,
                        (3.0 * t.powi(3) - 6.0 * t * t + 4.0) / 6.0,
                        (-3.0 * t.powi(3) + 3.0 * t * t + 3.0 * t + 1.0) / 6.0,
                        t.powi(3) / 6.0,
                    ];
                    Taps {
                        index: [clamp(f - 1.0), clamp(f), clamp(f + 1.0), clamp(f + 2.0)],
                        weight: w.map(|v| v as f32),
                        count: 4,
                    }
                }
            }
        })
        .collect()
}

/// Cubic B-spline coefficients of `line` as scipy computes them for mode `nearest`: edge padding
/// by [`SPLINE_PAD`], then the order-3 recursive filter with mirror boundary conditions.
fn spline_coefficients(line: &[f32], coeffs: &mut Vec<f64>) {
    let n = line.len();
    coeffs.clear();
    coeffs.extend(std::iter::repeat_n(line[0] as f64, SPLINE_PAD));
    coeffs.extend(line.iter().map(|v| *v as f64));
    coeffs.extend(std::iter::repeat_n(line[n - 1] as f64, SPLINE_PAD));
    let c = coeffs.as_mut_slice();
    let len = c.len();
    let z = 3f64.sqrt() - 2.0;
    let gain = (1.0 - z) * (1.0 - 1.0 / z);
    c.iter_mut().for_each(|v| *v *= gain);
    // Causal initialisation (scipy's _init_causal_mirror).
    let z_n_1 = z.powi(len as i32 - 1);
    let mut c0 = c[0] + z_n_1 * c[len - 1];
    let mut z_i = z;
    for i in 1..len - 1 {
        c0 += z_i * (c[i] + z_n_1 * c[len - 1 - i]);
        z_i *= z;
    }
    c[0] = c0 / (1.0 - z_n_1 * z_n_1);
    for i in 1..len {
        c[i] += z * c[i - 1];
    }
    // Anticausal initialisation (scipy's _init_anticausal_mirror).
    c[len - 1] = (z * c[len - 2] + c[len - 1]) * z / (z * z - 1.0);
    for i in (0..len - 1).rev() {
        c[i] = z * (c[i + 1] - c[i]);
    }
}

/// Raw pointer that may be shared between rayon tasks writing disjoint elements.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// A method (not the field) so closures capture the whole `Send` wrapper.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Resamples along one axis: `data` has `shape`, the result has `shape` with `axis` set to `n_new`.
fn resample_axis(data: &[f32], shape: [usize; 3], axis: usize, n_new: usize, kind: Interpolation) -> Vec<f32> {
    let taps = axis_taps(kind, shape[axis], n_new);
    resample_axis_with_taps(data, shape, axis, &taps, kind)
}

/// [`resample_axis`] with given taps (one per output index; `kind` says whether they index
/// spline coefficients, [`Interpolation::Cubic`], or the line itself, every other kind).
fn resample_axis_with_taps(data: &[f32], shape: [usize; 3], axis: usize, taps: &[Taps], kind: Interpolation) -> Vec<f32> {
    let n_old = shape[axis];
    let n_new = taps.len();
    let mut new_shape = shape;
    new_shape[axis] = n_new;
    let in_strides = [1, shape[0], shape[0] * shape[1]];
    let out_strides = [1, new_shape[0], new_shape[0] * new_shape[1]];
    let (a, b) = match axis {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    };
    let lines = shape[a] * shape[b];
    let mut out = vec![0f32; new_shape.iter().product()];
    let ptr = SharedOut(out.as_mut_ptr());
    (0..lines).into_par_iter().with_min_len(16).for_each_init(
        || (Vec::<f32>::with_capacity(n_old), Vec::<f64>::with_capacity(n_old + 2 * SPLINE_PAD)),
        |(line, coeffs), l| {
            let (ia, ib) = (l % shape[a], l / shape[a]);
            let in_base = ia * in_strides[a] + ib * in_strides[b];
            let out_base = ia * out_strides[a] + ib * out_strides[b];
            line.clear();
            line.extend((0..n_old).map(|t| data[in_base + t * in_strides[axis]]));
            let write = |o: usize, v: f32| {
                // SAFETY: each line `l` owns the output elements out_base + o * stride for all o,
                // and distinct lines have distinct (ia, ib), so no two tasks write one element;
                // the index is inside `out` because (ia, ib, o) is inside `new_shape`.
                unsafe { *ptr.get().add(out_base + o * out_strides[axis]) = v }
            };
            if kind == Interpolation::Cubic {
                spline_coefficients(line, coeffs);
                for (o, t) in taps.iter().enumerate() {
                    let v: f64 = (0..4).map(|q| t.weight[q] as f64 * coeffs[t.index[q]]).sum();
                    write(o, v as f32);
                }
            } else {
                for (o, t) in taps.iter().enumerate() {
                    let v: f32 = (0..t.count).map(|q| t.weight[q] * line[t.index[q]]).sum();
                    write(o, v);
                }
            }
        },
    );
    out
}

/// The axes a separable resampling passes over, in order: those whose size changes, the one
/// shrinking most first. [`resample_in_box`] must follow the same order to stay bit-identical.
fn pass_order(old: [usize; 3], new: [usize; 3]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..3).filter(|&a| old[a] != new[a]).collect();
    order.sort_by(|&x, &y| {
        let rx = new[x] as f64 / old[x] as f64;
        let ry = new[y] as f64 / old[y] as f64;
        rx.partial_cmp(&ry).expect("ratios of positive sizes are comparable")
    });
    order
}

/// Separable resampling with one interpolation kind per axis; axes whose size does not change
/// are left alone (exact for every kind: the sample points are the voxel centres). Axes that
/// shrink are done first, so later passes have less to do.
pub(crate) fn resample_separable(data: &[f32], old: [usize; 3], new: [usize; 3], kinds: [Interpolation; 3]) -> Vec<f32> {
    let mut shape = old;
    let mut current: Option<Vec<f32>> = None;
    for axis in pass_order(old, new) {
        let src = current.as_deref().unwrap_or(data);
        let next = resample_axis(src, shape, axis, new[axis], kinds[axis]);
        shape[axis] = new[axis];
        current = Some(next);
    }
    current.unwrap_or_else(|| data.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use spineseg_io::geometry::IDENTITY3;

    fn geometry(spacing: [f64; 3]) -> Geometry {
        Geometry::new(Spacing::new(spacing).unwrap(), [1.0, -2.0, 3.0], IDENTITY3).unwrap()
    }

    fn oblique(spacing: [f64; 3]) -> Geometry {
        let (s, c) = (0.3f64.sin(), 0.3f64.cos());
        Geometry::new(Spacing::new(spacing).unwrap(), [4.0, 5.0, -6.0], [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]).unwrap()
    }

    /// A linear function of world position, sampled at voxel centres.
    fn linear_volume(shape: [usize; 3], g: Geometry) -> Volume<f32> {
        let f = |p: [f64; 3]| (0.5 * p[0] - 0.25 * p[1] + 0.75 * p[2] + 2.0) as f32;
        let mut data = Vec::new();
        for k in 0..shape[2] {
            for j in 0..shape[1] {
                for i in 0..shape[0] {
                    data.push(f(g.voxel_to_world([i as f64, j as f64, k as f64])));
                }
            }
        }
        Volume::new(shape, data, g).unwrap()
    }

    /// The arg max of every label's indicator resampled over the whole volume (the definition
    /// `one_hot_argmax` must reproduce bit for bit).
    fn one_hot_argmax_everywhere(data: &[u16], old: [usize; 3], new: [usize; 3], kinds: [Interpolation; 3]) -> Vec<u16> {
        let mut values: Vec<u16> = data.to_vec();
        values.sort_unstable();
        values.dedup();
        let n: usize = new.iter().product();
        let (mut best, mut out) = (vec![f32::NEG_INFINITY; n], vec![0u16; n]);
        for value in values {
            let indicator: Vec<f32> = data.iter().map(|v| if *v == value { 1.0 } else { 0.0 }).collect();
            for (o, r) in resample_separable(&indicator, old, new, kinds).iter().enumerate() {
                if *r > best[o] {
                    best[o] = *r;
                    out[o] = value;
                }
            }
        }
        out
    }

    #[test]
    fn label_resampling_in_boxes_equals_resampling_everywhere() {
        use Interpolation::{Cubic, Linear, Nearest};
        // Blocks of a few labels (one touching the volume's edge, one a single voxel, value 0
        // absent in one case), up- and down-sampled along every mix of axes.
        let mut state = 7u64;
        let mut next = |n: usize| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) % n as u64) as usize
        };
        let cases: [([usize; 3], [usize; 3], [Interpolation; 3]); 6] = [
            ([9, 11, 7], [20, 25, 7], [Linear, Linear, Nearest]),
            ([12, 10, 8], [5, 22, 3], [Linear, Linear, Linear]),
            ([8, 8, 6], [8, 13, 11], [Nearest, Linear, Nearest]),
            ([15, 6, 9], [7, 6, 9], [Linear, Linear, Linear]),
            ([10, 9, 5], [17, 4, 12], [Linear, Linear, Cubic]),
            ([6, 7, 8], [11, 12, 13], [Linear, Linear, Linear]),
        ];
        for (n, (old, new, kinds)) in cases.into_iter().enumerate() {
            let background = if n == 5 { 3 } else { 0 };
            let mut data = vec![background; old.iter().product()];
            for label in [7u16, 2, 40, 9] {
                let start = [next(old[0]), next(old[1]), next(old[2])];
                let size = if label == 40 { [1, 1, 1] } else { [1 + next(5), 1 + next(5), 1 + next(4)] };
                for k in start[2]..(start[2] + size[2]).min(old[2]) {
                    for j in start[1]..(start[1] + size[1]).min(old[1]) {
                        for i in start[0]..(start[0] + size[0]).min(old[0]) {
                            data[i + old[0] * (j + old[1] * k)] = label;
                        }
                    }
                }
            }
            data[0] = 9; // an edge voxel
            assert_eq!(one_hot_argmax(&data, old, new, kinds), one_hot_argmax_everywhere(&data, old, new, kinds), "case {n}");
        }
    }

    #[test]
    fn new_shape_rounds_half_to_even_like_python() {
        assert_eq!(compute_new_shape([5, 10, 3], [1.0, 1.0, 1.0], [2.0, 1.0, 0.5]), [2, 10, 6]);
        assert_eq!(compute_new_shape([7, 1, 4], [1.0, 1.0, 1.0], [2.0, 3.0, 1.0]), [4, 1, 4]);
    }

    #[test]
    fn linear_function_is_reproduced_by_linear_and_cubic_interpolation() {
        let g = oblique([1.0, 1.5, 2.0]);
        let v = linear_volume([8, 8, 6], g);
        let settings = ResampleSettings { image: Interpolation::Linear, separate_z: SeparateZ::Never, ..Default::default() };
        let out = resample_image(&v, [6, 7, 8], &settings);
        let expected = linear_volume([6, 7, 8], out.geometry);
        for k in 1..7 {
            for j in 1..6 {
                for i in 1..5 {
                    let (a, b) = (*out.get([i, j, k]), *expected.get([i, j, k]));
                    assert!((a - b).abs() < 1e-4, "linear at {i},{j},{k}: {a} vs {b}");
                }
            }
        }
        // The cubic spline reproduces linear functions exactly only far from the edge padding
        // (its influence decays by 0.27 per voxel), so use a long axis and its middle.
        let v = linear_volume([20, 2, 2], oblique([1.0, 1.0, 1.0]));
        let cubic = ResampleSettings { image: Interpolation::Cubic, separate_z: SeparateZ::Never, ..Default::default() };
        let out = resample_image(&v, [13, 2, 2], &cubic);
        let expected = linear_volume([13, 2, 2], out.geometry);
        for i in 4..9 {
            let (a, b) = (*out.get([i, 1, 1]), *expected.get([i, 1, 1]));
            assert!((a - b).abs() < 1e-3, "cubic at {i}: {a} vs {b}");
        }
    }

    #[test]
    fn cubic_interpolates_the_samples_and_identity_is_exact() {
        // Same size: every voxel is sampled at its centre, so the spline returns the input.
        let v = Volume::new([5, 1, 1], vec![0.0, 3.0, -1.0, 2.0, 7.0], Geometry::default()).unwrap();
        let line = resample_axis(v.data(), [5, 1, 1], 0, 5, Interpolation::Cubic);
        for (a, b) in line.iter().zip(v.data()) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        assert_eq!(resample_image(&v, [5, 1, 1], &ResampleSettings::default()), v);
    }

    /// Recorded with scipy 1.17: `ndimage.zoom(x, m / 7, order, mode="nearest", grid_mode=True)`
    /// (what scikit-image's `resize` calls, hence nnU-Net).
    #[test]
    fn parity_with_scipy_zoom() {
        let x = [0.0, 3.0, -1.0, 2.0, 7.0, 4.0, 4.5];
        let cases: [(Interpolation, usize, &[f64]); 4] = [
            (
                Interpolation::Cubic,
                10,
                &[-0.30040422, 2.13851947, 2.35166829, -0.8767154, 0.03531239, 4.32193147, 7.00408794, 4.80494761, 3.79623217, 4.61371574],
            ),
            (Interpolation::Cubic, 4, &[1.4140744, -1.16325459, 6.82941307, 3.99823228]),
            (Interpolation::Linear, 10, &[0.0, 1.65, 2.0, -0.8, 0.95, 3.75, 6.85, 4.75, 4.225, 4.5]),
            (Interpolation::Nearest, 10, &[0.0, 3.0, 3.0, -1.0, 2.0, 2.0, 7.0, 4.0, 4.0, 4.5]),
        ];
        for (kind, m, expected) in cases {
            let out = resample_axis(&x, [7, 1, 1], 0, m, kind);
            for (a, b) in out.iter().zip(expected) {
                assert!((*a as f64 - b).abs() < 1e-5, "{kind:?} to {m}: {out:?}");
            }
        }
    }

    #[test]
    fn blocky_labels_survive_there_and_back_at_integer_factors() {
        let g = geometry([2.0, 2.0, 2.0]);
        let mut labels = Volume::filled([4, 4, 4], 0u16, g);
        for k in 0..4 {
            for j in 0..4 {
                for i in 0..4 {
                    labels.set([i, j, k], ((i / 2) + 2 * (j / 2) + (k / 2) * 3) as u16 % 5);
                }
            }
        }
        for label in [LabelInterpolation::OneHotLinear, LabelInterpolation::Nearest] {
            let settings = ResampleSettings { label, ..Default::default() };
            let up = resample_labels(&labels, [8, 8, 8], &settings);
            assert_eq!(up.geometry.spacing.mm(), [1.0; 3]);
            let back = resample_labels(&up, [4, 4, 4], &settings);
            assert_eq!(back.data(), labels.data(), "{label:?}");
            assert!(back.geometry.agrees_with(&g, [4, 4, 4], 1e-9));
        }
    }

    #[test]
    fn resampled_geometry_keeps_the_physical_extent() {
        let g = oblique([0.5, 0.7, 4.0]);
        let old = [7, 5, 3];
        let new = [4, 9, 8];
        let r = resampled_geometry(&g, old, new);
        // The outer corners (voxel edges) of both grids coincide.
        for mask in 0..8 {
            let corner = |shape: [usize; 3]| [0, 1, 2].map(|a| if mask >> a & 1 == 1 { shape[a] as f64 - 0.5 } else { -0.5 });
            let a = g.voxel_to_world(corner(old));
            let b = r.voxel_to_world(corner(new));
            for c in 0..3 {
                assert!((a[c] - b[c]).abs() < 1e-9, "corner {mask}: {a:?} vs {b:?}");
            }
        }
        let back = resampled_geometry(&r, new, old);
        assert!(back.agrees_with(&g, old, 1e-9));
    }

    #[test]
    fn anisotropic_axis_is_resampled_separately_with_nearest() {
        assert_eq!(separate_axis([4.0, 0.5, 0.5], [4.0, 1.0, 1.0], SeparateZ::Auto { anisotropy_threshold: 3.0 }), Some(0));
        assert_eq!(separate_axis([1.0, 1.0, 1.0], [1.0, 1.0, 5.0], SeparateZ::Auto { anisotropy_threshold: 3.0 }), Some(2));
        assert_eq!(separate_axis([0.24, 1.25, 1.25], [1.0; 3], SeparateZ::Auto { anisotropy_threshold: 3.0 }), None);
        assert_eq!(separate_axis([4.0, 0.5, 0.5], [1.0; 3], SeparateZ::Never), None);
        // Along the coarse axis the values are copied, not blended.
        let g = geometry([4.0, 0.5, 0.5]);
        let v = Volume::new([2, 2, 2], vec![0.0, 10.0, 0.0, 10.0, 0.0, 10.0, 0.0, 10.0], g).unwrap();
        let out = resample_image(&v, [4, 2, 2], &ResampleSettings::default());
        assert_eq!(&out.data()[..4], &[0.0, 0.0, 10.0, 10.0]);
    }
}
