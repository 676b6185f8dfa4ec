//! Stride-1 convolution without a column matrix ("implicit gemm").
//!
//! [`crate::cpu`]'s im2col copies every input value once per kernel tap (27 times for 3x3x3)
//! into a column matrix, in runs as short as an image line; in a 3D U-Net step that copy and its
//! adjoint (col2im) took more time than the arithmetic. With stride 1 the copy is not needed:
//! the input is zero-padded once, and an output voxel is computed on the padded grid, where the
//! voxel read by tap `(a, b, e)` lies at a constant flat offset `(a * Hp + b) * Wp + e` from the
//! output voxel's own padded position. So each tap is one gemm whose left operand is the padded
//! input itself, shifted: `T (m x out) += Xpad[q0 + offset ..] (m x in) * W_tap^T (in x out)`,
//! `m` output positions of one band of rows of one output plane (the `Wp - ow` positions at the
//! end of each padded row are computed and thrown away).
//!
//! The input gradient of a stride-1 convolution is itself a stride-1 convolution of the output
//! gradient (kernel flipped, in and out swapped, padding `k - 1 - p`), so it runs here too, with
//! no col2im scatter; the weight gradient is one gemm per (kd, kh) tap pair between the output
//! gradient and the same shifted padded input.

use rayon::prelude::*;

use crate::cpu::{gemm_raw, ConvGeometry, SharedMut};

/// The fewest input channels for which the implicit form is used: each tap is a gemm with
/// `k = in_channels`, which wastes most of a vector register below this (the first layer of a
/// U-Net has one or two channels; im2col gives it `k = taps * channels`).
const MIN_IN_CHANNELS: usize = 8;

/// The fewest kernel taps for which the implicit form is used. With the 9 taps of a 2D 3x3
/// kernel im2col was as fast or faster (its gemm has `k = 9 * in`; measured on the speed
/// benchmark's 2D U-Net, Intel Xeon AVX-512: training step 0.54 s with im2col, 0.60 s implicit);
/// with 27 taps the column matrix's copy dominated (3D training step 1.10 s -> 0.62 s).
const MIN_TAPS: usize = 18;

/// Output positions per task (a band of rows of one output plane, on the padded grid): the
/// task's output tile is `m x out` values and reads `in x m` input values per tap, so both stay
/// near the 1 MiB of a core's L2.
const TARGET_POSITIONS: usize = 4096;

/// gemm's f32 AVX-512 register width: a multiple of it as `m` lets gemm read the shifted input
/// in place instead of packing it first.
const M_MULTIPLE: usize = 16;

/// Whether [`conv_forward_implicit`] and [`conv_weight_gradient_implicit`] handle `geo` and are
/// the faster choice: stride 1, enough input channels, a kernel of at least [`MIN_TAPS`] taps.
pub fn applies(geo: &ConvGeometry) -> bool {
    geo.stride == [1, 1, 1] && geo.in_channels >= MIN_IN_CHANNELS && geo.kernel_volume() >= MIN_TAPS
}

/// Whether the input gradient of `geo`'s convolution runs as [`conv_forward_implicit`]
/// (stride 1, padding at most `kernel - 1`, enough output channels, at least [`MIN_TAPS`] taps).
pub fn applies_to_input_gradient(geo: &ConvGeometry) -> bool {
    geo.stride == [1, 1, 1]
        && geo.out_channels >= MIN_IN_CHANNELS
        && geo.kernel_volume() >= MIN_TAPS
        && (0..3).all(|a| geo.padding[a] < geo.kernel[a])
}

/// The padded grid of one batch item: `[in, Dp, Hp, Wp]` plus zero slack after each channel, so
/// that a band rounded up to [`M_MULTIPLE`] positions, shifted by the last tap, stays inside its
/// channel.
struct PaddedGrid {
    dims: [usize; 3],
    channel_stride: usize,
}

impl PaddedGrid {
    fn new(geo: &ConvGeometry) -> Self {
        let dims: [usize; 3] = std::array::from_fn(|a| geo.input[a] + 2 * geo.padding[a]);
        let channel_stride = dims.iter().product::<usize>() + M_MULTIPLE + geo.kernel[2];
        PaddedGrid { dims, channel_stride }
    }

    /// Copies batch item `xb` (`[in, d, h, w]`) into a zeroed padded buffer.
    fn fill(&self, xb: &[f32], geo: &ConvGeometry) -> Vec<f32> {
        let [d, h, w] = geo.input;
        let [pd, ph, pw] = geo.padding;
        let [_, hp, wp] = self.dims;
        let mut padded = vec![0.0f32; geo.in_channels * self.channel_stride];
        padded.par_chunks_mut(self.channel_stride).zip(xb.par_chunks(d * h * w)).for_each(|(dst, src)| {
            for z in 0..d {
                for y in 0..h {
                    let from = (z * h + y) * w;
                    let to = ((z + pd) * hp + y + ph) * wp + pw;
                    dst[to..to + w].copy_from_slice(&src[from..from + w]);
                }
            }
        });
        padded
    }
}

/// The work split of both the forward and the weight gradient: a task is a band of rows of one
/// output plane, at most [`TARGET_POSITIONS`] positions of the padded grid.
struct Bands {
    rows_per_band: usize,
    per_plane: usize,
    /// Output rows per plane.
    oh: usize,
    /// Padded plane size `[Hp, Wp]`.
    padded: [usize; 2],
}

/// One task of [`Bands`].
struct Band {
    /// Output plane.
    z: usize,
    /// First output row.
    y0: usize,
    /// Output rows in the band.
    rows: usize,
    /// Padded-grid positions of the band, rounded up to [`M_MULTIPLE`] (the extra ones read the
    /// grid's slack and are dropped).
    m: usize,
    /// The band's first position on the padded grid.
    q0: usize,
}

impl Bands {
    fn new(geo: &ConvGeometry, grid: &PaddedGrid) -> Self {
        let [_, hp, wp] = grid.dims;
        let oh = geo.output()[1];
        let rows_per_band = (TARGET_POSITIONS / wp).clamp(1, oh);
        Bands { rows_per_band, per_plane: oh.div_ceil(rows_per_band), oh, padded: [hp, wp] }
    }

    /// Tasks over `planes` output planes.
    fn count(&self, planes: usize) -> usize {
        planes * self.per_plane
    }

    fn get(&self, task: usize) -> Band {
        let [hp, wp] = self.padded;
        let (z, band) = (task / self.per_plane, task % self.per_plane);
        let y0 = band * self.rows_per_band;
        let rows = self.rows_per_band.min(self.oh - y0);
        Band { z, y0, rows, m: (rows * wp).next_multiple_of(M_MULTIPLE), q0: (z * hp + y0) * wp }
    }
}

/// `weight` (`[out, in, taps]`) as `[taps, out, in]`: each tap's `W_tap` with the input channel
/// contiguous, the layout gemm reads without packing.
fn taps_major(weight: &[f32], out_channels: usize, in_channels: usize, taps: usize) -> Vec<f32> {
    let mut arranged = vec![0.0f32; weight.len()];
    for o in 0..out_channels {
        for c in 0..in_channels {
            for t in 0..taps {
                arranged[(t * out_channels + o) * in_channels + c] = weight[(o * in_channels + c) * taps + t];
            }
        }
    }
    arranged
}

/// Forward convolution with stride 1 (any padding), the same result as
/// [`crate::cpu::conv_forward_im2col`] up to f32 rounding (sums run in another order).
///
/// # Panics
///
/// If the stride is not 1 or the sizes do not match `geo`.
pub fn conv_forward_implicit(x: &[f32], weight: &[f32], bias: Option<&[f32]>, geo: &ConvGeometry) -> Vec<f32> {
    assert_eq!(geo.stride, [1, 1, 1], "implicit convolution: stride must be 1");
    let in_size = geo.in_channels * geo.input_voxels();
    let taps = geo.kernel_volume();
    assert_eq!(x.len(), geo.batch * in_size, "conv: input size");
    assert_eq!(weight.len(), geo.out_channels * geo.in_channels * taps, "conv: weight size");
    let [od, oh, ow] = geo.output();
    let out_voxels = od * oh * ow;
    let out_size = geo.out_channels * out_voxels;
    let grid = PaddedGrid::new(geo);
    let [_, hp, wp] = grid.dims;
    let [_, kh, kw] = geo.kernel;
    let w_taps = taps_major(weight, geo.out_channels, geo.in_channels, taps);
    let tap_offsets: Vec<usize> = (0..taps).map(|t| ((t / (kh * kw)) * hp + (t / kw) % kh) * wp + t % kw).collect();
    let bands = Bands::new(geo, &grid);
    let mut y = vec![0.0f32; geo.batch * out_size];
    let y_ptr = SharedMut(y.as_mut_ptr());
    for b in 0..geo.batch {
        let padded = grid.fill(&x[b * in_size..(b + 1) * in_size], geo);
        (0..bands.count(od)).into_par_iter().for_each_init(Vec::new, |tile, task| {
            let Band { z, y0, rows, m, q0 } = bands.get(task);
            tile.resize(m * geo.out_channels, 0.0);
            for (t, &offset) in tap_offsets.iter().enumerate() {
                let lhs = &padded[q0 + offset..];
                let rhs = &w_taps[t * geo.out_channels * geo.in_channels..][..geo.out_channels * geo.in_channels];
                // SAFETY: tile is this task's own buffer of m x out values; lhs rows stay inside
                // each channel thanks to the grid's slack (gemm_raw checks the operand bounds).
                unsafe {
                    gemm_raw(
                        m,
                        geo.out_channels,
                        geo.in_channels,
                        tile.as_mut_ptr(),
                        (1, m),
                        t > 0,
                        lhs,
                        (1, grid.channel_stride),
                        rhs,
                        (1, geo.in_channels),
                        false,
                    )
                };
            }
            for o in 0..geo.out_channels {
                let shift = bias.map_or(0.0, |bias| bias[o]);
                for r in 0..rows {
                    let src = &tile[o * m + r * wp..][..ow];
                    // SAFETY: this task alone writes rows y0..y0 + rows of plane z of every
                    // output channel of batch item b; y outlives the loop.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(
                            y_ptr.get().add(b * out_size + o * out_voxels + (z * oh + y0 + r) * ow),
                            ow,
                        )
                    };
                    for (d, s) in dst.iter_mut().zip(src) {
                        *d = s + shift;
                    }
                }
            }
        });
    }
    y
}

/// The weight gradient of a stride-1 convolution (`[out, in, kd, kh, kw]`), from its input `x`
/// and output gradient `dy`.
///
/// Per band of output rows (as the forward), `dy` is laid out on the padded grid, position-major
/// (`[m, out]`, zero at the thrown-away positions), and each tap is a product
/// `dW_tap (out x in) += dY (out x m) * Xpad[q0 + offset ..]^T (m x in)`, both operands read in
/// place (out-channel and position contiguous); the `kw` taps along w share one gemm of
/// `kw * out` rows (dY shifted by one position per tap). Each thread sums its bands into its own
/// buffer; the buffers are added at the end.
///
/// # Panics
///
/// If the stride is not 1 or the sizes do not match `geo`.
pub fn conv_weight_gradient_implicit(x: &[f32], dy: &[f32], geo: &ConvGeometry) -> Vec<f32> {
    assert_eq!(geo.stride, [1, 1, 1], "implicit convolution: stride must be 1");
    let in_size = geo.in_channels * geo.input_voxels();
    let taps = geo.kernel_volume();
    let [od, oh, ow] = geo.output();
    let out_voxels = od * oh * ow;
    let out_size = geo.out_channels * out_voxels;
    assert_eq!(x.len(), geo.batch * in_size, "conv backward: input size");
    assert_eq!(dy.len(), geo.batch * out_size, "conv backward: output gradient size");
    let grid = PaddedGrid::new(geo);
    let [_, hp, wp] = grid.dims;
    let [kd, kh, kw] = geo.kernel;
    let (out_channels, in_channels) = (geo.out_channels, geo.in_channels);
    // The taps along w are one gemm: its rows are (tap along w, out channel), `kw * out` of them,
    // so that gemm's vectorised dimension is not just the 16 or 32 output channels.
    let rows = kw * out_channels;
    let group_size = rows * in_channels;
    let groups = kd * kh;
    let group_offsets: Vec<usize> = (0..groups).map(|g| ((g / kh) * hp + g % kh) * wp).collect();

    let bands = Bands::new(geo, &grid);
    // Per (kd, kh) group, column-major `(kw * out) x in`.
    let mut by_group = vec![0.0f32; groups * group_size];
    for b in 0..geo.batch {
        let padded = grid.fill(&x[b * in_size..(b + 1) * in_size], geo);
        let dyb = &dy[b * out_size..(b + 1) * out_size];
        let summed = (0..bands.count(od))
            .into_par_iter()
            .fold(
                || (vec![0.0f32; groups * group_size], Vec::new()),
                |(mut acc, mut dy_tile): (Vec<f32>, Vec<f32>), task| {
                    let Band { z, y0, rows: band_rows, m, q0 } = bands.get(task);
                    // dY on the padded grid, position-major, with kw - 1 zero positions before and
                    // after: position q at (q + kw - 1) * out. Row (kw - 1 - e, o) of the lhs at
                    // position p is then dY[p - e, o]: tap e's product, shifted into one sum.
                    dy_tile.clear();
                    dy_tile.resize((m + 2 * (kw - 1)) * out_channels, 0.0);
                    for o in 0..out_channels {
                        for r in 0..band_rows {
                            let src = &dyb[o * out_voxels + (z * oh + y0 + r) * ow..][..ow];
                            for (x, &v) in src.iter().enumerate() {
                                dy_tile[(r * wp + x + kw - 1) * out_channels + o] = v;
                            }
                        }
                    }
                    for (g, &offset) in group_offsets.iter().enumerate() {
                        let dst = &mut acc[g * group_size..(g + 1) * group_size];
                        // SAFETY: dst is this thread's own block (column-major); the shifted
                        // input stays inside each channel thanks to the grid's slack (gemm_raw
                        // checks the operand bounds).
                        unsafe {
                            gemm_raw(
                                rows,
                                in_channels,
                                m + kw - 1,
                                dst.as_mut_ptr(),
                                (1, rows),
                                true,
                                &dy_tile,
                                (1, out_channels),
                                &padded[q0 + offset..],
                                (1, grid.channel_stride),
                                false,
                            )
                        };
                    }
                    (acc, dy_tile)
                },
            )
            .map(|(acc, _)| acc)
            .reduce(
                || vec![0.0f32; groups * group_size],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                    a
                },
            );
        by_group.iter_mut().zip(&summed).for_each(|(a, b)| *a += b);
    }
    let mut dw = vec![0.0f32; taps * out_channels * in_channels];
    for g in 0..groups {
        for e in 0..kw {
            for c in 0..in_channels {
                for o in 0..out_channels {
                    dw[(o * in_channels + c) * taps + g * kw + e] =
                        by_group[g * group_size + c * rows + (kw - 1 - e) * out_channels + o];
                }
            }
        }
    }
    dw
}

/// The input gradient of a stride-1 convolution from its output gradient `dy`: the convolution
/// of `dy` with the kernel flipped on every axis and its channel axes swapped, padded by
/// `kernel - 1 - padding`.
///
/// # Panics
///
/// Unless [`applies_to_input_gradient`] holds, or if the sizes do not match `geo`.
pub fn conv_input_gradient_implicit(weight: &[f32], dy: &[f32], geo: &ConvGeometry) -> Vec<f32> {
    assert!(geo.stride == [1, 1, 1] && (0..3).all(|a| geo.padding[a] < geo.kernel[a]), "not a stride-1 same-size conv");
    let taps = geo.kernel_volume();
    let mut flipped = vec![0.0f32; weight.len()];
    for o in 0..geo.out_channels {
        for c in 0..geo.in_channels {
            for t in 0..taps {
                flipped[(c * geo.out_channels + o) * taps + (taps - 1 - t)] =
                    weight[(o * geo.in_channels + c) * taps + t];
            }
        }
    }
    let adjoint = ConvGeometry {
        batch: geo.batch,
        in_channels: geo.out_channels,
        out_channels: geo.in_channels,
        input: geo.output(),
        kernel: geo.kernel,
        stride: [1, 1, 1],
        padding: std::array::from_fn(|a| geo.kernel[a] - 1 - geo.padding[a]),
    };
    debug_assert_eq!(adjoint.output(), geo.input);
    conv_forward_implicit(dy, &flipped, None, &adjoint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{conv_backward_im2col, conv_forward_im2col};

    fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn assert_close(ours: &[f32], reference: &[f32], what: &str) {
        assert_eq!(ours.len(), reference.len(), "{what}: length");
        let scale = reference.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1.0);
        for (i, (a, b)) in ours.iter().zip(reference).enumerate() {
            assert!((a - b).abs() <= 1e-4 * scale, "{what}: element {i}: {a} vs {b}");
        }
    }

    /// Geometries the im2col path and the implicit path must agree on: 2D and 3D, anisotropic
    /// kernels, padding 0 and 1, widths that are not multiples of 16, several bands per plane.
    fn geometries() -> Vec<ConvGeometry> {
        let g = |batch, in_channels, out_channels, input, kernel, padding| ConvGeometry {
            batch,
            in_channels,
            out_channels,
            input,
            kernel,
            stride: [1, 1, 1],
            padding,
        };
        vec![
            g(2, 8, 5, [5, 6, 7], [3, 3, 3], [1, 1, 1]),
            g(1, 9, 16, [1, 13, 11], [1, 3, 3], [0, 1, 1]),
            g(2, 12, 3, [4, 9, 5], [1, 3, 3], [0, 1, 1]),
            g(1, 8, 8, [3, 70, 70], [3, 3, 3], [1, 1, 1]),
            g(1, 10, 9, [4, 6, 8], [3, 3, 3], [0, 0, 0]),
            g(1, 8, 4, [6, 5, 7], [3, 1, 3], [1, 0, 1]),
        ]
    }

    #[test]
    fn forward_matches_im2col() {
        for (i, geo) in geometries().into_iter().enumerate() {
            let x = pseudo_random(geo.batch * geo.in_channels * geo.input_voxels(), 3 * i as u64);
            let w = pseudo_random(geo.out_channels * geo.col_rows(), 3 * i as u64 + 1);
            let bias = pseudo_random(geo.out_channels, 3 * i as u64 + 2);
            let reference = conv_forward_im2col(&x, &w, Some(&bias), &geo);
            assert_close(&conv_forward_implicit(&x, &w, Some(&bias), &geo), &reference, &format!("forward {geo:?}"));
        }
    }

    #[test]
    fn input_gradient_matches_col2im() {
        for (i, geo) in geometries().into_iter().enumerate() {
            assert!(geo.padding.iter().zip(&geo.kernel).all(|(p, k)| p < k), "{geo:?}");
            let x = pseudo_random(geo.batch * geo.in_channels * geo.input_voxels(), 5 * i as u64);
            let w = pseudo_random(geo.out_channels * geo.col_rows(), 5 * i as u64 + 1);
            let dy = pseudo_random(geo.batch * geo.out_channels * geo.output_voxels(), 5 * i as u64 + 2);
            let reference = conv_backward_im2col(&x, &w, &dy, &geo, [true, false, false]).input.expect("asked for");
            let ours = conv_input_gradient_implicit(&w, &dy, &geo);
            assert_close(&ours, &reference, &format!("input gradient {geo:?}"));
        }
    }

    #[test]
    fn weight_gradient_matches_im2col() {
        for (i, geo) in geometries().into_iter().enumerate() {
            let x = pseudo_random(geo.batch * geo.in_channels * geo.input_voxels(), 7 * i as u64);
            let w = pseudo_random(geo.out_channels * geo.col_rows(), 7 * i as u64 + 1);
            let dy = pseudo_random(geo.batch * geo.out_channels * geo.output_voxels(), 7 * i as u64 + 2);
            let reference = conv_backward_im2col(&x, &w, &dy, &geo, [false, true, false]).weight.expect("asked for");
            let ours = conv_weight_gradient_implicit(&x, &dy, &geo);
            assert_close(&ours, &reference, &format!("weight gradient {geo:?}"));
        }
    }

    #[test]
    fn small_channel_counts_strides_and_2d_kernels_keep_im2col() {
        let geo = ConvGeometry {
            batch: 1,
            in_channels: 1,
            out_channels: 16,
            input: [4, 4, 4],
            kernel: [3, 3, 3],
            stride: [1, 1, 1],
            padding: [1, 1, 1],
        };
        assert!(!applies(&geo));
        assert!(applies_to_input_gradient(&geo));
        assert!(applies(&ConvGeometry { in_channels: 16, ..geo }));
        assert!(!applies(&ConvGeometry { in_channels: 16, stride: [1, 2, 2], ..geo }));
        assert!(!applies_to_input_gradient(&ConvGeometry { stride: [1, 2, 2], ..geo }));
        // 2D kernels (9 taps) and pointwise ones keep im2col.
        assert!(!applies(&ConvGeometry { in_channels: 16, kernel: [1, 3, 3], padding: [0, 1, 1], ..geo }));
        assert!(!applies_to_input_gradient(&ConvGeometry { kernel: [1, 3, 3], padding: [0, 1, 1], ..geo }));
        assert!(!applies(&ConvGeometry { in_channels: 16, kernel: [1, 1, 1], padding: [0, 0, 0], ..geo }));
    }
}
