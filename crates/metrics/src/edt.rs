//! Exact Euclidean distance transform with anisotropic spacing, in linear time.
//!
//! The squared distance is separable: `d²(x) = min_p Σ_a (s_a (x_a - p_a))²`, so it is computed
//! one axis at a time. The first pass (along `i`) only needs the distance to the nearest feature
//! on each line (two sweeps); the passes along `j` and `k` take the lower envelope of parabolas
//! `s²(q - p)² + f(p)` (Felzenszwalb and Huttenlocher, "Distance Transforms of Sampled
//! Functions", Theory of Computing 8, 2012), with positions in millimetres. Each pass is
//! parallel over lines with rayon. The result is exact: every value is `Σ_a (s_a Δ_a)²` for the
//! nearest feature, summed in axis order like the brute-force definition (and like scipy's
//! `distance_transform_edt(..., sampling=spacing)`, which computes the same sum from feature
//! indices).

use rayon::prelude::*;

/// Squared distance in mm² from every voxel to the nearest voxel where `features` is true;
/// `f64::INFINITY` everywhere when there is no feature. `shape` is `[nx, ny, nz]` (`i` fastest)
/// and `spacing_mm` the voxel size along `i, j, k` (only axes longer than 1 matter).
pub fn squared_distance_to(features: &[bool], shape: [usize; 3], spacing_mm: [f64; 3]) -> Vec<f64> {
    transform(features, None, shape, spacing_mm)
}

/// As [`squared_distance_to`], but only at the voxels where `queries` is true, in flat-index
/// order. Faster: the last pass skips every line without a query voxel.
pub fn squared_distance_at(features: &[bool], queries: &[bool], shape: [usize; 3], spacing_mm: [f64; 3]) -> Vec<f64> {
    assert_eq!(queries.len(), features.len(), "queries should have shape {shape:?}");
    let out = transform(features, Some(queries), shape, spacing_mm);
    queries.iter().zip(&out).filter(|(&q, _)| q).map(|(_, &d)| d).collect()
}

/// The three passes; with `queries`, the last pass only finishes lines holding a query voxel
/// (other voxels are left with partial values).
fn transform(features: &[bool], queries: Option<&[bool]>, shape: [usize; 3], spacing_mm: [f64; 3]) -> Vec<f64> {
    let [nx, ny, nz] = shape;
    assert_eq!(features.len(), nx * ny * nz, "features should have shape {shape:?}");
    let mut out = vec![f64::INFINITY; features.len()];
    if out.is_empty() {
        return out;
    }
    // Pass 1, along i: distance to the nearest feature on the same row.
    let s0 = spacing_mm[0];
    out.par_chunks_mut(nx).zip(features.par_chunks(nx)).for_each(|(row, feat)| {
        let mut last: Option<usize> = None;
        for (i, value) in row.iter_mut().enumerate() {
            if feat[i] {
                last = Some(i);
            }
            if let Some(p) = last {
                let d = (i - p) as f64 * s0;
                *value = d * d;
            }
        }
        let mut next: Option<usize> = None;
        for i in (0..nx).rev() {
            if feat[i] {
                next = Some(i);
            }
            if let Some(p) = next {
                let d = (p - i) as f64 * s0;
                if d * d < row[i] {
                    row[i] = d * d;
                }
            }
        }
    });
    // Pass 2, along j: within each k-slab, lines are the columns of stride nx. Columns are
    // gathered eight at a time so every cache line read is used whole.
    if ny > 1 {
        let s1 = spacing_mm[1];
        out.par_chunks_mut(nx * ny).enumerate().for_each_init(
            || (Envelope::new(ny), vec![0.0f64; ny * COLUMNS]),
            |(env, block), (k, slab)| {
                for i0 in (0..nx).step_by(COLUMNS) {
                    let width = COLUMNS.min(nx - i0);
                    // A 2D image: this is the last pass, so columns without queries can wait.
                    let skip =
                        |c: usize| nz == 1 && queries.is_some_and(|q| (0..ny).all(|j| !q[i0 + c + nx * (j + ny * k)]));
                    if (0..width).all(skip) {
                        continue;
                    }
                    for j in 0..ny {
                        block[j * COLUMNS..j * COLUMNS + width]
                            .copy_from_slice(&slab[i0 + nx * j..i0 + nx * j + width]);
                    }
                    for c in (0..width).filter(|&c| !skip(c)) {
                        for j in 0..ny {
                            env.f[j] = block[c + COLUMNS * j];
                        }
                        env.transform(s1);
                        for j in 0..ny {
                            block[c + COLUMNS * j] = env.d[j];
                        }
                    }
                    for j in 0..ny {
                        slab[i0 + nx * j..i0 + nx * j + width]
                            .copy_from_slice(&block[j * COLUMNS..j * COLUMNS + width]);
                    }
                }
            },
        );
    }
    // Pass 3, along k: lines of stride nx * ny. Each task owns the lines of one j, gathered as a
    // [nz][nx] block of contiguous rows so memory is read row by row.
    if nz > 1 {
        let s2 = spacing_mm[2];
        let base = SharedMut(out.as_mut_ptr());
        (0..ny).into_par_iter().for_each_init(
            || (Envelope::new(nz), vec![0.0f64; nx * nz], vec![true; nx]),
            |(env, block, needed), j| {
                let base = &base;
                if let Some(q) = queries {
                    // Only lines (i, j) holding a query voxel are finished.
                    needed.fill(false);
                    for k in 0..nz {
                        let row = nx * (j + ny * k);
                        for (n, &query) in needed.iter_mut().zip(&q[row..row + nx]) {
                            *n |= query;
                        }
                    }
                    if !needed.contains(&true) {
                        return;
                    }
                }
                for k in 0..nz {
                    let row = nx * (j + ny * k);
                    // SAFETY: the task for `j` reads and writes only indices `i + nx*(j + ny*k)`
                    // for its own `j`; no two tasks share an index, and `out` outlives the loop.
                    let src = unsafe { std::slice::from_raw_parts(base.0.add(row), nx) };
                    block[k * nx..(k + 1) * nx].copy_from_slice(src);
                }
                for i in (0..nx).filter(|&i| needed[i]) {
                    for k in 0..nz {
                        env.f[k] = block[i + nx * k];
                    }
                    env.transform(s2);
                    for k in 0..nz {
                        block[i + nx * k] = env.d[k];
                    }
                }
                for k in 0..nz {
                    let row = nx * (j + ny * k);
                    // SAFETY: as above, only this task's indices are written.
                    let dst = unsafe { std::slice::from_raw_parts_mut(base.0.add(row), nx) };
                    dst.copy_from_slice(&block[k * nx..(k + 1) * nx]);
                }
            },
        );
    }
    out
}

/// Columns gathered together in the pass along `j` (one 64-byte cache line of `f64`).
const COLUMNS: usize = 8;

/// A raw pointer that tasks writing disjoint indices may share.
struct SharedMut(*mut f64);
// SAFETY: used only for disjoint writes, see the pass along k.
unsafe impl Sync for SharedMut {}
unsafe impl Send for SharedMut {}

/// Scratch space for the 1D lower envelope of parabolas over a line of length `n`.
struct Envelope {
    f: Vec<f64>,
    d: Vec<f64>,
    v: Vec<usize>,
    h: Vec<f64>,
    z: Vec<f64>,
}

impl Envelope {
    fn new(n: usize) -> Self {
        Envelope { f: vec![0.0; n], d: vec![0.0; n], v: vec![0; n], h: vec![0.0; n], z: vec![0.0; n + 1] }
    }

    /// `d[q] = min_p (s (q - p))² + f[p]` over the `p` with finite `f[p]`; infinite when none.
    fn transform(&mut self, s: f64) {
        let (f, d, v, h, z) = (&self.f, &mut self.d, &mut self.v, &mut self.h, &mut self.z);
        // The envelope: parabolas from sites v[0..k] (h = f + x², x in mm), parabola m being
        // lowest on [z[m], z[m + 1]).
        let mut k = 0usize;
        for (q, &fq) in f.iter().enumerate() {
            if fq == f64::INFINITY {
                continue;
            }
            let xq = q as f64 * s;
            let hq = fq + xq * xq;
            let mut start = f64::NEG_INFINITY;
            while k > 0 {
                let xp = v[k - 1] as f64 * s;
                // Where the parabola from q overtakes the one from p (in mm along the line).
                let cross = (hq - h[k - 1]) / (2.0 * (xq - xp));
                if cross <= z[k - 1] {
                    k -= 1;
                } else {
                    start = cross;
                    break;
                }
            }
            v[k] = q;
            h[k] = hq;
            z[k] = start;
            k += 1;
        }
        if k == 0 {
            d.fill(f64::INFINITY);
            return;
        }
        z[k] = f64::INFINITY;
        let mut m = 0usize;
        for (q, value) in d.iter_mut().enumerate() {
            let xq = q as f64 * s;
            while z[m + 1] < xq {
                m += 1;
            }
            let p = v[m];
            let delta = (q as f64 - p as f64) * s;
            *value = delta * delta + f[p];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute_force(features: &[bool], shape: [usize; 3], s: [f64; 3]) -> Vec<f64> {
        let [nx, ny, nz] = shape;
        let sites: Vec<[usize; 3]> =
            (0..features.len()).filter(|&n| features[n]).map(|n| [n % nx, (n / nx) % ny, n / (nx * ny)]).collect();
        let mut out = vec![f64::INFINITY; features.len()];
        for k in 0..nz {
            for j in 0..ny {
                for i in 0..nx {
                    for p in &sites {
                        let d: f64 = [i, j, k]
                            .iter()
                            .zip(p)
                            .zip(s)
                            .map(|((&a, &b), sa)| {
                                let t = (a as f64 - b as f64) * sa;
                                t * t
                            })
                            .sum();
                        let o = &mut out[i + nx * (j + ny * k)];
                        *o = o.min(d);
                    }
                }
            }
        }
        out
    }

    /// A tiny deterministic generator (xorshift) so the test needs no dependency.
    fn random_bits(n: usize, seed: u64, one_in: u64) -> Vec<bool> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.is_multiple_of(one_in)
            })
            .collect()
    }

    #[test]
    fn matches_brute_force_on_random_masks_with_anisotropic_spacing() {
        let cases = [
            ([8, 7, 6], [0.34, 0.34, 4.4], 11u64),
            ([5, 8, 8], [4.4, 0.34, 0.34], 5),
            ([8, 8, 8], [1.0, 1.0, 1.0], 40),
            ([7, 1, 5], [0.8, 2.0, 1.3], 6),
            ([1, 6, 8], [1.5, 0.7, 0.9], 9),
            ([8, 8, 1], [0.5, 3.0, 1.0], 3),
        ];
        for (t, (shape, spacing, one_in)) in cases.into_iter().enumerate() {
            let n = shape.iter().product();
            let features = random_bits(n, 0x9E37_79B9_7F4A_7C15 ^ t as u64, one_in);
            let fast = squared_distance_to(&features, shape, spacing);
            let slow = brute_force(&features, shape, spacing);
            for (a, b) in fast.iter().zip(&slow) {
                assert!((a - b).abs() <= 1e-9 * b.max(1.0), "case {t}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn queries_get_the_full_transform_values() {
        for (t, shape) in [[8, 7, 6], [8, 8, 1], [6, 1, 7]].into_iter().enumerate() {
            let n = shape.iter().product();
            let features = random_bits(n, 77 + t as u64, 9);
            let queries = random_bits(n, 1234 + t as u64, 5);
            let spacing = [0.34, 4.4, 0.7];
            let full = squared_distance_to(&features, shape, spacing);
            let expected: Vec<f64> = (0..n).filter(|&i| queries[i]).map(|i| full[i]).collect();
            assert_eq!(squared_distance_at(&features, &queries, shape, spacing), expected, "shape {shape:?}");
        }
    }

    #[test]
    fn no_features_is_infinite_and_single_feature_is_exact() {
        let d = squared_distance_to(&[false; 8], [2, 2, 2], [1.0; 3]);
        assert!(d.iter().all(|v| v.is_infinite()));
        let mut f = vec![false; 27];
        f[0] = true;
        let d = squared_distance_to(&f, [3, 3, 3], [0.5, 2.0, 3.0]);
        // Voxel [2, 1, 2]: (2*0.5)² + (1*2)² + (2*3)² = 1 + 4 + 36.
        assert_eq!(d[2 + 3 * (1 + 3 * 2)], 41.0);
    }
}
