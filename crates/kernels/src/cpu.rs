//! The kernels on plain `f32` slices, C order, no burn types.
//!
//! Convolutions are im2col + gemm (the `gemm` crate, multi-threaded through rayon), the same
//! lowering PyTorch's CPU fallback uses; the point is the backward pass: the weight gradient is
//! one gemm per batch item against the same column matrix, and the input gradient one gemm plus a
//! col2im scatter, instead of burn's default lowering to a convolution with a kernel as large as
//! the image. 2D is 3D with depth 1 (kernel depth 1).
//!
//! Every layout is `[batch, channels, depth, height, width]`; a "column matrix" is
//! `[in_channels * kernel_volume, output_voxels]`, row-major.

use rayon::prelude::*;

/// Shapes and hyper-parameters of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Batch size.
    pub batch: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Input spatial size `[depth, height, width]`.
    pub input: [usize; 3],
    /// Kernel size `[depth, height, width]`.
    pub kernel: [usize; 3],
    /// Stride per axis.
    pub stride: [usize; 3],
    /// Symmetric zero padding per axis.
    pub padding: [usize; 3],
}

impl ConvGeometry {
    /// Output spatial size: `(input + 2 * padding - kernel) / stride + 1` per axis.
    ///
    /// # Panics
    ///
    /// If the kernel does not fit the padded input or a stride is zero (callers check first).
    pub fn output(&self) -> [usize; 3] {
        std::array::from_fn(|a| {
            let padded = self.input[a] + 2 * self.padding[a];
            assert!(self.stride[a] > 0 && padded >= self.kernel[a], "kernel larger than padded input: {self:?}");
            (padded - self.kernel[a]) / self.stride[a] + 1
        })
    }

    /// Voxels of one input channel.
    pub fn input_voxels(&self) -> usize {
        self.input.iter().product()
    }

    /// Voxels of one output channel.
    pub fn output_voxels(&self) -> usize {
        self.output().iter().product()
    }

    /// Taps of the kernel.
    pub fn kernel_volume(&self) -> usize {
        self.kernel.iter().product()
    }

    /// Rows of the column matrix: `in_channels * kernel_volume`.
    pub fn col_rows(&self) -> usize {
        self.in_channels * self.kernel_volume()
    }

    /// A 1x1x1 kernel with stride 1 and no padding: the input already is the column matrix.
    pub fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1, 1] && self.stride == [1, 1, 1] && self.padding == [0, 0, 0]
    }
}

/// A raw pointer that tasks writing disjoint parts of one buffer may share.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub(crate) *mut f32);
// SAFETY: only used where every task writes a disjoint region (checked by construction).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so that closures capture the `Sync` wrapper, not the raw field).
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// `dst (m x n) = [dst +] lhs (m x k) * rhs (k x n)`; every operand is given as a slice (or
/// pointer) at element (0, 0) and its (row stride, column stride).
///
/// The `gemm` crate's micro-kernels are column-major: they vectorise along `m`. Callers therefore
/// orient each product so that `m` is the long, unit-stride axis of `dst` (output voxels, or
/// column-matrix rows), computing a transposed product where needed; a product with the 16 or
/// 32 channels of a U-Net stage as `m` would leave most of each vector register empty.
///
/// # Safety
///
/// `dst` must be valid for writes at `i * dst_strides.0 + j * dst_strides.1` for `i < m`,
/// `j < n`, must not alias the operands, and nobody else may write there meanwhile.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_raw(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_strides: (usize, usize),
    accumulate: bool,
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
    threaded: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: (i, j) is inside dst (caller's contract).
                    unsafe { *dst.add(i * dst_strides.0 + j * dst_strides.1) = 0.0 };
                }
            }
        }
        return;
    }
    let last = |strides: (usize, usize), rows: usize, cols: usize| (rows - 1) * strides.0 + (cols - 1) * strides.1;
    assert!(last(lhs_strides, m, k) < lhs.len(), "gemm: lhs out of bounds");
    assert!(last(rhs_strides, k, n) < rhs.len(), "gemm: rhs out of bounds");
    // Small products are not worth waking the thread pool for.
    let parallelism =
        if threaded && m * n * k >= 1 << 18 { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    // SAFETY: operand bounds checked above; dst validity is the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_strides.1 as isize,
            dst_strides.0 as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_strides.1 as isize,
            lhs_strides.0 as isize,
            rhs.as_ptr(),
            rhs_strides.1 as isize,
            rhs_strides.0 as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The safe form of [`gemm_raw`] for a destination slice (bounds checked).
#[allow(clippy::too_many_arguments)]
fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_strides: (usize, usize),
    accumulate: bool,
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
    threaded: bool,
) {
    if m > 0 && n > 0 {
        assert!((m - 1) * dst_strides.0 + (n - 1) * dst_strides.1 < dst.len(), "gemm: destination out of bounds");
    }
    // SAFETY: dst is an exclusive borrow and every (i, j) lies inside it (checked above).
    unsafe { gemm_raw(m, n, k, dst.as_mut_ptr(), dst_strides, accumulate, lhs, lhs_strides, rhs, rhs_strides, threaded) }
}

/// Output voxels per tile: a tile's column matrix is about 1 MiB, so that building it and
/// multiplying it happen in cache rather than through a column matrix of the whole image.
fn tile_len(geo: &ConvGeometry) -> usize {
    ((1usize << 18) / geo.col_rows().max(1)).clamp(64, 1 << 14).min(geo.output_voxels()).max(1)
}

/// Calls `visit(z, y, x, run, offset)` for each run of output voxels `[start, start + len)` lying
/// on one output line (fixed z, y): `run` voxels from column `x`, at `offset` within the tile.
fn for_each_run(output: [usize; 3], start: usize, len: usize, mut visit: impl FnMut(usize, usize, usize, usize, usize)) {
    let [_, oh, ow] = output;
    let end = start + len;
    let mut p = start;
    while p < end {
        let (x, line) = (p % ow, p / ow);
        let run = (ow - x).min(end - p);
        visit(line / oh, line % oh, x, run, p - start);
        p += run;
    }
}

/// For an output run along w starting at column `x0`, the input columns read by tap `e`:
/// `xi = xo * sw + e - pw`. Returns the in-range part as (first output index in the run, count,
/// first input column); the rest of the run reads padding.
fn valid_columns(x0: usize, run: usize, e: usize, stride: usize, pad: usize, width: usize) -> (usize, usize, usize) {
    // First output column whose input column is >= 0.
    let first_valid_xo = if e >= pad { 0 } else { (pad - e).div_ceil(stride) };
    // Output columns with input column < width: xo * stride + e - pad < width.
    let end_xo = if width + pad > e { (width + pad - e).div_ceil(stride) } else { 0 };
    let lo = first_valid_xo.max(x0);
    let hi = end_xo.min(x0 + run);
    if lo >= hi {
        return (0, 0, 0);
    }
    (lo - x0, hi - lo, lo * stride + e - pad)
}

/// Fills the column matrix of one tile of output voxels of one batch item:
/// `col[(c, kd, kh, kw), p - start] = x[c, od * sd - pd + kd, oh * sh - ph + kh, ow * sw - pw + kw]`
/// for `p` in `[start, start + len)` (zero outside the input). `col` is `col_rows x len`.
pub fn im2col_tile(x: &[f32], geo: &ConvGeometry, start: usize, len: usize, col: &mut [f32]) {
    let [id, ih, iw] = geo.input;
    let output = geo.output();
    let [kd, kh, kw] = geo.kernel;
    let [sd, sh, sw] = geo.stride;
    let [pd, ph, pw] = geo.padding;
    let in_voxels = id * ih * iw;
    let taps = kd * kh * kw;
    assert_eq!(x.len(), geo.in_channels * in_voxels, "im2col: input size");
    assert_eq!(col.len(), geo.col_rows() * len, "im2col: column size");
    for (row, out) in col.chunks_exact_mut(len).enumerate() {
        let (c, tap) = (row / taps, row % taps);
        let (a, b, e) = (tap / (kh * kw), (tap / kw) % kh, tap % kw);
        let channel = &x[c * in_voxels..(c + 1) * in_voxels];
        for_each_run(output, start, len, |z, y, x0, run, offset| {
            let dst = &mut out[offset..offset + run];
            let zi = (z * sd + a) as isize - pd as isize;
            let yi = (y * sh + b) as isize - ph as isize;
            if zi < 0 || zi >= id as isize || yi < 0 || yi >= ih as isize {
                dst.fill(0.0);
                return;
            }
            let line = &channel[(zi as usize * ih + yi as usize) * iw..][..iw];
            let (skip, count, first) = valid_columns(x0, run, e, sw, pw, iw);
            dst[..skip].fill(0.0);
            if sw == 1 {
                dst[skip..skip + count].copy_from_slice(&line[first..first + count]);
            } else {
                for (i, v) in dst[skip..skip + count].iter_mut().enumerate() {
                    *v = line[first + i * sw];
                }
            }
            dst[skip + count..].fill(0.0);
        });
    }
}

/// The adjoint of [`im2col_tile`]: adds each entry of a tile's column matrix back onto the input
/// voxel it was read from.
pub fn col2im_tile_add(col: &[f32], geo: &ConvGeometry, start: usize, len: usize, dx: &mut [f32]) {
    let [id, ih, iw] = geo.input;
    let output = geo.output();
    let [kd, kh, kw] = geo.kernel;
    let [sd, sh, sw] = geo.stride;
    let [pd, ph, pw] = geo.padding;
    let in_voxels = id * ih * iw;
    let taps = kd * kh * kw;
    assert_eq!(dx.len(), geo.in_channels * in_voxels, "col2im: input size");
    assert_eq!(col.len(), geo.col_rows() * len, "col2im: column size");
    for (row, src) in col.chunks_exact(len).enumerate() {
        let (c, tap) = (row / taps, row % taps);
        let (a, b, e) = (tap / (kh * kw), (tap / kw) % kh, tap % kw);
        let channel = &mut dx[c * in_voxels..(c + 1) * in_voxels];
        for_each_run(output, start, len, |z, y, x0, run, offset| {
            let zi = (z * sd + a) as isize - pd as isize;
            let yi = (y * sh + b) as isize - ph as isize;
            if zi < 0 || zi >= id as isize || yi < 0 || yi >= ih as isize {
                return;
            }
            let line = &mut channel[(zi as usize * ih + yi as usize) * iw..][..iw];
            let (skip, count, first) = valid_columns(x0, run, e, sw, pw, iw);
            let values = &src[offset + skip..offset + skip + count];
            if sw == 1 {
                for (d, v) in line[first..first + count].iter_mut().zip(values) {
                    *d += v;
                }
            } else {
                for (i, v) in values.iter().enumerate() {
                    line[first + i * sw] += v;
                }
            }
        });
    }
}

/// Forward convolution by im2col: `y[b] = W (out x in*K) * col(x[b]) + bias`, tile by tile, the
/// (batch item, tile) pairs spread over the thread pool. `x`: `[batch, in, d, h, w]`, `weight`:
/// `[out, in, kd, kh, kw]`, `bias`: `[out]`; returns `[batch, out, od, oh, ow]`.
pub fn conv_forward_im2col(x: &[f32], weight: &[f32], bias: Option<&[f32]>, geo: &ConvGeometry) -> Vec<f32> {
    let in_voxels = geo.input_voxels();
    let in_size = geo.in_channels * in_voxels;
    let out_voxels = geo.output_voxels();
    let out_size = geo.out_channels * out_voxels;
    let rows = geo.col_rows();
    assert_eq!(x.len(), geo.batch * in_size, "conv: input size");
    assert_eq!(weight.len(), geo.out_channels * rows, "conv: weight size");
    let tile = tile_len(geo);
    let tiles = out_voxels.div_ceil(tile);
    let mut y = vec![0.0f32; geo.batch * out_size];
    let y_ptr = SharedMut(y.as_mut_ptr());
    let pointwise = geo.is_pointwise();
    (0..geo.batch * tiles).into_par_iter().for_each_init(
        || if pointwise { Vec::new() } else { vec![0.0f32; rows * tile] },
        |col, task| {
            let (b, start) = (task / tiles, (task % tiles) * tile);
            let len = tile.min(out_voxels - start);
            let xb = &x[b * in_size..(b + 1) * in_size];
            // Y_b[:, tile]^T (len x out) = col^T (len x rows) * W^T (rows x out).
            let (columns, col_strides) = if pointwise {
                (&xb[start..], (1, in_voxels))
            } else {
                im2col_tile(xb, geo, start, len, &mut col[..rows * len]);
                (&col[..rows * len], (1, len))
            };
            // SAFETY: this task alone writes columns [start, start + len) of batch item b's
            // output rows; y outlives the parallel loop.
            let dst = unsafe { y_ptr.get().add(b * out_size + start) };
            if let Some(bias) = bias {
                for (o, value) in bias.iter().enumerate() {
                    // SAFETY: as above, row o of this tile.
                    unsafe { std::slice::from_raw_parts_mut(dst.add(o * out_voxels), len) }.fill(*value);
                }
            }
            // SAFETY: as above.
            unsafe {
                gemm_raw(
                    len,
                    geo.out_channels,
                    rows,
                    dst,
                    (1, out_voxels),
                    bias.is_some(),
                    columns,
                    col_strides,
                    weight,
                    (1, rows),
                    false,
                )
            };
        },
    );
    y
}

/// Gradients of [`conv_forward`] with respect to its input, weight and bias.
pub struct ConvGrads {
    /// `[batch, in, d, h, w]`, when asked for.
    pub input: Option<Vec<f32>>,
    /// `[out, in, kd, kh, kw]`, when asked for.
    pub weight: Option<Vec<f32>>,
    /// `[out]`, when asked for.
    pub bias: Option<Vec<f32>>,
}

/// Backward pass of [`conv_forward_im2col`] for the output gradient `dy`
/// (`[batch, out, od, oh, ow]`), by im2col: the weight gradient one gemm per tile against its
/// column matrix, the input gradient one gemm per tile and a col2im scatter. Only the gradients
/// asked for (`want` = input, weight, bias) are computed.
pub fn conv_backward_im2col(x: &[f32], weight: &[f32], dy: &[f32], geo: &ConvGeometry, want: [bool; 3]) -> ConvGrads {
    let [want_input, want_weight, want_bias] = want;
    let in_voxels = geo.input_voxels();
    let in_size = geo.in_channels * in_voxels;
    let out_voxels = geo.output_voxels();
    let out_size = geo.out_channels * out_voxels;
    let rows = geo.col_rows();
    assert_eq!(dy.len(), geo.batch * out_size, "conv backward: output gradient size");
    let tile = tile_len(geo);
    let tiles = out_voxels.div_ceil(tile);
    let pointwise = geo.is_pointwise();

    // dW (out x rows) = sum over (b, tile) of dY_b[:, tile] (out x len) * col_tile^T (len x rows),
    // computed transposed (see `gemm_raw`):
    // each thread accumulates its own copy, then the copies are added.
    let dw = want_weight.then(|| {
        (0..geo.batch * tiles)
            .into_par_iter()
            .fold(
                || (vec![0.0f32; geo.out_channels * rows], if pointwise { Vec::new() } else { vec![0.0f32; rows * tile] }),
                |(mut acc, mut col), task| {
                    let (b, start) = (task / tiles, (task % tiles) * tile);
                    let len = tile.min(out_voxels - start);
                    let xb = &x[b * in_size..(b + 1) * in_size];
                    // dW^T (rows x out) += col (rows x len) * dY_b[:, tile]^T (len x out).
                    let (columns, col_strides) = if pointwise {
                        (&xb[start..], (in_voxels, 1))
                    } else {
                        im2col_tile(xb, geo, start, len, &mut col[..rows * len]);
                        (&col[..rows * len], (len, 1))
                    };
                    let dyt = &dy[b * out_size + start..];
                    gemm(rows, geo.out_channels, len, &mut acc, (1, rows), true, columns, col_strides, dyt, (1, out_voxels), false);
                    (acc, col)
                },
            )
            .map(|(acc, _)| acc)
            .reduce(
                || vec![0.0f32; geo.out_channels * rows],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                    a
                },
            )
    });

    // dX_b: per tile, dcol (rows x len) = W^T (rows x out) * dY_b[:, tile] (transposed), scattered back by
    // col2im. Batch items run in parallel (their gradients are disjoint); within one item the
    // gemm uses the pool when there are fewer items than threads.
    let dx = want_input.then(|| {
        let mut dx = vec![0.0f32; geo.batch * in_size];
        let threaded = geo.batch < rayon::current_num_threads();
        dx.par_chunks_mut(in_size).enumerate().for_each(|(b, dxb)| {
            let dyb = &dy[b * out_size..(b + 1) * out_size];
            let mut col = if pointwise { Vec::new() } else { vec![0.0f32; rows * tile] };
            for t in 0..tiles {
                let start = t * tile;
                let len = tile.min(out_voxels - start);
                // dcol^T (len x rows) = dY_b[:, tile]^T (len x out) * W (out x rows).
                let dyt = &dyb[start..];
                if pointwise {
                    let dst = &mut dxb[start..];
                    gemm(len, rows, geo.out_channels, dst, (1, in_voxels), false, dyt, (1, out_voxels), weight, (rows, 1), threaded);
                } else {
                    let dcol = &mut col[..rows * len];
                    gemm(len, rows, geo.out_channels, dcol, (1, len), false, dyt, (1, out_voxels), weight, (rows, 1), threaded);
                    col2im_tile_add(dcol, geo, start, len, dxb);
                }
            }
        });
        dx
    });
    let db = want_bias.then(|| channel_sums(dy, geo.batch, geo.out_channels, out_voxels));
    ConvGrads { input: dx, weight: dw, bias: db }
}

/// Per-channel sums over batch and voxels of `[batch, channels, voxels]`.
fn channel_sums(values: &[f32], batch: usize, channels: usize, voxels: usize) -> Vec<f32> {
    (0..channels)
        .into_par_iter()
        .map(|c| {
            let mut sum = 0.0f64;
            for b in 0..batch {
                sum += lane_sum(&values[(b * channels + c) * voxels..][..voxels], |v| v);
            }
            sum as f32
        })
        .collect()
}

/// Shapes of a transposed convolution whose kernel equals its stride (nnU-Net's up-sampling):
/// every output voxel comes from exactly one input voxel and one kernel tap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpGeometry {
    /// Batch size.
    pub batch: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Input spatial size `[depth, height, width]`.
    pub input: [usize; 3],
    /// Kernel size = stride, per axis.
    pub stride: [usize; 3],
}

impl UpGeometry {
    fn input_voxels(&self) -> usize {
        self.input.iter().product()
    }

    fn taps(&self) -> usize {
        self.stride.iter().product()
    }

    /// Output spatial size: `input * stride` per axis.
    pub fn output(&self) -> [usize; 3] {
        std::array::from_fn(|a| self.input[a] * self.stride[a])
    }

    /// Calls `visit(tap, input_voxel, output_voxel)` for every pair of one output channel.
    fn for_each_tap(&self, mut visit: impl FnMut(usize, usize, usize)) {
        let [d, h, w] = self.input;
        let [sd, sh, sw] = self.stride;
        let [oh, ow] = [h * sh, w * sw];
        for a in 0..sd {
            for b in 0..sh {
                for e in 0..sw {
                    let tap = (a * sh + b) * sw + e;
                    for z in 0..d {
                        for y in 0..h {
                            let out_row = ((z * sd + a) * oh + y * sh + b) * ow + e;
                            let in_row = (z * h + y) * w;
                            for x in 0..w {
                                visit(tap, in_row + x, out_row + x * sw);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Forward transposed convolution with kernel = stride: `x` `[batch, in, d, h, w]`, `weight`
/// `[in, out, sd, sh, sw]` (PyTorch's layout), `bias` `[out]`; returns
/// `[batch, out, d * sd, h * sh, w * sw]`.
pub fn conv_transpose_up_forward(x: &[f32], weight: &[f32], bias: Option<&[f32]>, geo: &UpGeometry) -> Vec<f32> {
    let voxels = geo.input_voxels();
    let taps = geo.taps();
    let rows = geo.out_channels * taps;
    assert_eq!(weight.len(), geo.in_channels * rows, "transposed conv: weight size");
    let out_size = rows * voxels;
    let mut y = vec![0.0f32; geo.batch * out_size];
    let mut taps_matrix = vec![0.0f32; rows * voxels];
    for b in 0..geo.batch {
        let xb = &x[b * geo.in_channels * voxels..][..geo.in_channels * voxels];
        // T (out*taps x P) = W^T (out*taps x in) * X_b (in x P), as T^T = X_b^T * W.
        gemm(voxels, rows, geo.in_channels, &mut taps_matrix, (1, voxels), false, xb, (1, voxels), weight, (rows, 1), true);
        let yb = &mut y[b * out_size..(b + 1) * out_size];
        yb.par_chunks_mut(taps * voxels).enumerate().for_each(|(o, plane)| {
            let offset = bias.map_or(0.0, |bias| bias[o]);
            let source = &taps_matrix[o * taps * voxels..][..taps * voxels];
            geo.for_each_tap(|tap, i, out| plane[out] = source[tap * voxels + i] + offset);
        });
    }
    y
}

/// Backward pass of [`conv_transpose_up_forward`] for `dy` (`[batch, out, d*sd, h*sh, w*sw]`).
pub fn conv_transpose_up_backward(
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    geo: &UpGeometry,
    want: [bool; 3],
) -> ConvGrads {
    let [want_input, want_weight, want_bias] = want;
    let voxels = geo.input_voxels();
    let taps = geo.taps();
    let rows = geo.out_channels * taps;
    let out_size = rows * voxels;
    let in_size = geo.in_channels * voxels;
    assert_eq!(dy.len(), geo.batch * out_size, "transposed conv backward: output gradient size");
    let mut gathered = vec![0.0f32; rows * voxels];
    let mut dx = want_input.then(|| vec![0.0f32; geo.batch * in_size]);
    let mut dw = want_weight.then(|| vec![0.0f32; geo.in_channels * rows]);
    if want_input || want_weight {
        for b in 0..geo.batch {
            let dyb = &dy[b * out_size..(b + 1) * out_size];
            // dT[(o, tap), i] = dY[o, out(tap, i)]: the inverse of the forward scatter.
            gathered.par_chunks_mut(taps * voxels).enumerate().for_each(|(o, dst)| {
                let plane = &dyb[o * taps * voxels..][..taps * voxels];
                geo.for_each_tap(|tap, i, out| dst[tap * voxels + i] = plane[out]);
            });
            if let Some(dx) = dx.as_mut() {
                // dX_b (in x P) = W (in x out*taps) * dT (out*taps x P), as dX_b^T = dT^T * W^T.
                let dxb = &mut dx[b * in_size..(b + 1) * in_size];
                gemm(voxels, geo.in_channels, rows, dxb, (1, voxels), false, &gathered, (1, voxels), weight, (1, rows), true);
            }
            if let Some(dw) = dw.as_mut() {
                // dW (in x out*taps) += X_b (in x P) * dT^T (P x out*taps).
                let xb = &x[b * in_size..(b + 1) * in_size];
                gemm(geo.in_channels, rows, voxels, dw, (rows, 1), b > 0, xb, (voxels, 1), &gathered, (1, voxels), true);
            }
        }
    }
    let db = want_bias.then(|| channel_sums(dy, geo.batch, geo.out_channels, taps * voxels));
    ConvGrads { input: dx, weight: dw, bias: db }
}

/// Independent f32 partial sums, so that the loop vectorises; combined in f64 at the end.
const LANES: usize = 16;

/// `sum(f(v))` over `values`, in [`LANES`] f32 partial sums. Always inlined, so that it is
/// compiled with the instruction set of its caller (see [`with_wide_simd`]).
#[inline(always)]
fn lane_sum(values: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut lanes = [0.0f32; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v) as f64).sum();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    lanes.iter().map(|&l| l as f64).sum::<f64>() + tail
}

/// The two sums `sum(f(a, b)[0])`, `sum(f(a, b)[1])` over paired values, as [`lane_sum`].
#[inline(always)]
fn lane_sum_pairs(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> [f32; 2]) -> [f64; 2] {
    assert_eq!(a.len(), b.len());
    let mut lanes = [[0.0f32; LANES]; 2];
    let split = a.len() - a.len() % LANES;
    for (ca, cb) in a[..split].chunks_exact(LANES).zip(b[..split].chunks_exact(LANES)) {
        for i in 0..LANES {
            let [p, q] = f(ca[i], cb[i]);
            lanes[0][i] += p;
            lanes[1][i] += q;
        }
    }
    let mut sums = lanes.map(|l| l.iter().map(|&v| v as f64).sum::<f64>());
    for (&va, &vb) in a[split..].iter().zip(&b[split..]) {
        let [p, q] = f(va, vb);
        sums[0] += p as f64;
        sums[1] += q as f64;
    }
    sums
}

/// Per-(batch, channel) statistics the fused norm keeps for its backward pass.
#[derive(Clone, Debug)]
pub struct NormStats {
    /// Mean of each `(batch, channel)` plane.
    pub mean: Vec<f32>,
    /// `1 / sqrt(variance + epsilon)` of each plane (biased variance, as instance norm).
    pub inv_std: Vec<f32>,
}

/// `leaky_relu(gamma * (x - mean) / sqrt(var + eps) + beta)` over each `(batch, channel)` plane
/// of `x` (`[batch, channels, voxels]`, `voxels` values per plane), returning the output and the
/// plane statistics. Sums are accumulated in f64.
pub fn instance_norm_leaky_relu_forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    voxels: usize,
    epsilon: f64,
    slope: f32,
) -> (Vec<f32>, NormStats) {
    let channels = gamma.len();
    assert!(channels > 0 && voxels > 0 && beta.len() == channels, "instance norm: one scale and shift per channel");
    assert_eq!(x.len() % (channels * voxels), 0, "instance norm: input is not [batch, channels, voxels]");
    let mut y = vec![0.0f32; x.len()];
    let stats: Vec<(f32, f32)> = y
        .par_chunks_mut(voxels)
        .zip(x.par_chunks(voxels))
        .enumerate()
        .map(|(plane, (out, input))| {
            let c = plane % channels;
            with_wide_simd(|| norm_plane_forward(input, out, gamma[c], beta[c], epsilon, slope))
        })
        .collect();
    let (mean, inv_std) = stats.into_iter().unzip();
    (y, NormStats { mean, inv_std })
}

/// One plane of [`instance_norm_leaky_relu_forward`]: writes `out`, returns `(mean, inv_std)`.
#[inline(always)]
fn norm_plane_forward(input: &[f32], out: &mut [f32], gamma: f32, beta: f32, epsilon: f64, slope: f32) -> (f32, f32) {
    let n = input.len() as f64;
    let mean = lane_sum(input, |v| v) / n;
    let centre = mean as f32;
    let var = lane_sum(input, |v| (v - centre) * (v - centre)) / n;
    let inv_std = 1.0 / (var + epsilon).sqrt();
    let scale = (gamma as f64 * inv_std) as f32;
    let shift = (beta as f64 - mean * gamma as f64 * inv_std) as f32;
    for (o, &v) in out.iter_mut().zip(input) {
        let z = v * scale + shift;
        *o = if z >= 0.0 { z } else { z * slope };
    }
    (mean as f32, inv_std as f32)
}

/// Runs `body` (whose callees are `#[inline(always)]`) compiled for the widest vectors the CPU
/// has: AVX-512 (16 lanes, one [`LANES`] chunk per instruction), else AVX2 (8), else baseline
/// x86-64's 4-wide SSE2; `gemm` dispatches the same way. Same operations in the same order (no
/// FMA contraction, [`LANES`] fixed partial sums), so results are bit-identical on every path.
#[inline(always)]
fn with_wide_simd<R>(body: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512<R>(body: impl FnOnce() -> R) -> R {
            body()
        }
        #[target_feature(enable = "avx2")]
        fn avx2<R>(body: impl FnOnce() -> R) -> R {
            body()
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            return unsafe { avx512(body) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { avx2(body) };
        }
    }
    body()
}

/// Backward pass of the fused instance norm + leaky ReLU: from `dy`, the gradients of `x`, `gamma`
/// and `beta`. `voxels` is the plane length.
#[allow(clippy::too_many_arguments)]
pub fn instance_norm_leaky_relu_backward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    stats: &NormStats,
    dy: &[f32],
    voxels: usize,
    slope: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let channels = gamma.len();
    let mut dx = vec![0.0f32; x.len()];
    let per_plane: Vec<(f64, f64)> = dx
        .par_chunks_mut(voxels)
        .zip(x.par_chunks(voxels).zip(dy.par_chunks(voxels)))
        .enumerate()
        .map(|(plane, (dx, (x, dy)))| {
            let c = plane % channels;
            with_wide_simd(|| norm_plane_backward(x, dy, dx, gamma[c], beta[c], stats.mean[plane], stats.inv_std[plane], slope))
        })
        .collect();
    let mut dgamma = vec![0.0f64; channels];
    let mut dbeta = vec![0.0f64; channels];
    for (plane, (dg, db)) in per_plane.into_iter().enumerate() {
        dgamma[plane % channels] += dg;
        dbeta[plane % channels] += db;
    }
    (dx, dgamma.into_iter().map(|v| v as f32).collect(), dbeta.into_iter().map(|v| v as f32).collect())
}

/// One plane of [`instance_norm_leaky_relu_backward`]: writes `dx`, returns
/// `(sum dz * xhat, sum dz)` (the plane's contributions to d gamma and d beta).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn norm_plane_backward(
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    g: f32,
    bt: f32,
    mean: f32,
    inv_std: f32,
    slope: f32,
) -> (f64, f64) {
    let n = x.len() as f64;
    // First pass: sums of dz and dz * xhat, where z = g * xhat + beta is the activation input.
    let dz_of = |v: f32, d: f32| {
        let xhat = (v - mean) * inv_std;
        let z = g * xhat + bt;
        let dz = if z >= 0.0 { d } else { d * slope };
        (dz, xhat)
    };
    let [sum_dz, sum_dz_xhat] = lane_sum_pairs(x, dy, |v, d| {
        let (dz, xhat) = dz_of(v, d);
        [dz, dz * xhat]
    });
    let mean_dz = (sum_dz / n) as f32;
    let mean_dz_xhat = (sum_dz_xhat / n) as f32;
    let scale = g * inv_std;
    for ((o, &v), &d) in dx.iter_mut().zip(x).zip(dy) {
        let (dz, xhat) = dz_of(v, d);
        *o = scale * (dz - mean_dz - xhat * mean_dz_xhat);
    }
    (sum_dz_xhat, sum_dz)
}
