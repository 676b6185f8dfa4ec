//! Intensity transforms for robustness to MR contrast and scanner (T1 vs T2 weighting, coil
//! sensitivity): intensity inversion, random histogram remapping and a multiplicative bias
//! field. They act on one image channel (`[s0, s1, s2]`, C order, z-scored intensities) and never
//! on the segmentation; [`crate::augment`] draws their parameters from the sample's RNG and
//! applies them (the `p_invert`, `p_remap` and `p_bias_field` rows of its table).
//!
//! Why these three: after z-scoring, a T1-weighted and a T2-weighted scan of the same spine differ
//! mostly in the *order* of tissue intensities (discs and CSF dark on T1, bright on T2; marrow
//! the other way round), which no gamma or contrast factor can produce. An inversion reverses the
//! order; a random non-monotone curve reorders tissues arbitrarily (the "random intensity
//! remapping" idea of SynthSeg-style training, applied to the histogram rather than per label); a
//! monotone curve reshapes the histogram without reordering. The bias field is the slow
//! multiplicative shading of surface and body coils, stronger at 3 T.

use rand::Rng;

/// Mean and unbiased standard deviation (as [`crate::augment::gamma`]).
fn mean_std(data: &[f32]) -> (f64, f64) {
    let n = data.len();
    let mean = data.iter().map(|v| *v as f64).sum::<f64>() / n as f64;
    let var = data.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / (n.max(2) - 1) as f64;
    (mean, var.sqrt())
}

/// Restores a former mean and standard deviation (nnU-Net's `p_retain_stats`).
fn restore_stats(data: &mut [f32], (mean, std): (f64, f64)) {
    let (mean_here, std_here) = mean_std(data);
    let ratio = std.max(1e-7) / std_here.max(1e-7);
    for v in data.iter_mut() {
        *v = ((*v as f64 - mean_here) * ratio + mean) as f32;
    }
}

/// Reflects the intensities about their mean, `x -> 2·mean − x`: the order of every pair of
/// tissues is reversed (a T1-like body/disc contrast becomes T2-like and back), while mean and
/// standard deviation, and so the scale the network sees, stay those of the input.
pub fn invert(data: &mut [f32]) {
    if data.is_empty() {
        return;
    }
    let (mean, _) = mean_std(data);
    for v in data.iter_mut() {
        *v = (2.0 * mean - *v as f64) as f32;
    }
}

/// The `q`-quantile (0..=1) of `data` by the nearest rank, in O(n).
fn quantile(data: &[f32], q: f64) -> f32 {
    let mut copy = data.to_vec();
    let k = ((copy.len() - 1) as f64 * q).round() as usize;
    *copy.select_nth_unstable_by(k, f32::total_cmp).1
}

/// The range of a histogram remapping, `[p0.5, p99.5]` of the channel: robust to the few
/// brightest voxels (fat, vessels) and to the zero padding at the patch border.
pub const REMAP_QUANTILES: [f64; 2] = [0.005, 0.995];

/// A piecewise-linear intensity curve on `[0, 1]`: `values[i]` at the equally spaced knots
/// `i / (n − 1)`, slope 1 outside (so monotone curves stay monotone on outliers).
#[derive(Debug, Clone, PartialEq)]
pub struct RemapCurve {
    pub values: Vec<f64>,
}

impl RemapCurve {
    /// A random curve: `n ~ U{points[0]..=points[1]}` knots; at knot `t` the value
    /// `(1 − s)·t + s·u` with `u ~ U(0, 1)` per knot and `s` the `strength` (0: identity, 1: fully
    /// random). `monotone` sorts the `u` (then the curve is non-decreasing).
    pub fn sample(rng: &mut impl Rng, points: [usize; 2], strength: f64, monotone: bool) -> RemapCurve {
        let n = rng.gen_range(points[0]..=points[1].max(points[0])).max(2);
        let mut u: Vec<f64> = (0..n).map(|_| rng.gen::<f64>()).collect();
        if monotone {
            u.sort_by(f64::total_cmp);
        }
        let values =
            u.iter().enumerate().map(|(i, u)| (1.0 - strength) * (i as f64 / (n - 1) as f64) + strength * u).collect();
        RemapCurve { values }
    }

    /// The curve at `t` (the knots span `[0, 1]`).
    pub fn eval(&self, t: f64) -> f64 {
        let v = &self.values;
        let last = v.len() - 1;
        if t <= 0.0 {
            return v[0] + t;
        }
        if t >= 1.0 {
            return v[last] + (t - 1.0);
        }
        let x = t * last as f64;
        let i = (x.floor() as usize).min(last - 1);
        let f = x - i as f64;
        v[i] * (1.0 - f) + v[i + 1] * f
    }

    /// Whether the curve never decreases.
    pub fn is_monotone(&self) -> bool {
        self.values.windows(2).all(|w| w[0] <= w[1])
    }
}

/// Applies `curve` to one channel: intensities in `[p0.5, p99.5]` ([`REMAP_QUANTILES`]) are
/// mapped to `[0, 1]`, through the curve and back; then the former mean and standard deviation
/// are restored. A constant channel is left alone.
pub fn histogram_remap(data: &mut [f32], curve: &RemapCurve) {
    if data.is_empty() {
        return;
    }
    let lo = quantile(data, REMAP_QUANTILES[0]) as f64;
    let hi = quantile(data, REMAP_QUANTILES[1]) as f64;
    if hi - lo <= 1e-6 {
        return;
    }
    let stats = mean_std(data);
    for v in data.iter_mut() {
        let t = (*v as f64 - lo) / (hi - lo);
        *v = (lo + curve.eval(t) * (hi - lo)) as f32;
    }
    restore_stats(data, stats);
}

/// A smooth multiplicative field on a patch of `shape`: `exp(p(u))` with `p` a random polynomial
/// of total degree `1..=order` in the voxel coordinates scaled to `[−1, 1]` per axis (an axis of
/// side 1 contributes nothing), coefficients `U(−1, 1)`, rescaled so `max |p| = magnitude` over
/// the patch. So the field lies in `[exp(−magnitude), exp(magnitude)]` and, by Markov's inequality
/// for polynomials, changes by at most `order² · magnitude · 2 / side` (in log) per voxel along an
/// axis. The coefficients are drawn in a fixed order whatever the shape.
pub fn bias_field(shape: [usize; 3], order: usize, magnitude: f64, rng: &mut impl Rng) -> Vec<f32> {
    let mut terms = Vec::new();
    for a in 0..=order {
        for b in 0..=order - a {
            for c in 0..=order - a - b {
                if a + b + c > 0 {
                    terms.push(([a, b, c], rng.gen_range(-1.0..1.0)));
                }
            }
        }
    }
    // Powers of the scaled coordinate per axis: pow[axis][x][e] = u(x)^e.
    let pow: Vec<Vec<Vec<f64>>> = (0..3)
        .map(|axis| {
            let n = shape[axis];
            (0..n)
                .map(|x| {
                    let u = if n > 1 { 2.0 * (x as f64 + 0.5) / n as f64 - 1.0 } else { 0.0 };
                    (0..=order).map(|e| u.powi(e as i32)).collect()
                })
                .collect()
        })
        .collect();
    // Horner-like in the last axis: per (x, y) the polynomial's coefficients in w, then one
    // short sum per voxel.
    let mut log_field = Vec::with_capacity(shape.iter().product());
    let mut in_w = vec![0f64; order + 1];
    for x in 0..shape[0] {
        for y in 0..shape[1] {
            in_w.iter_mut().for_each(|g| *g = 0.0);
            for ([a, b, c], k) in &terms {
                in_w[*c] += k * pow[0][x][*a] * pow[1][y][*b];
            }
            for pz in &pow[2] {
                log_field.push(in_w.iter().zip(pz).map(|(g, w)| g * w).sum::<f64>());
            }
        }
    }
    let largest = log_field.iter().fold(0f64, |m, v| m.max(v.abs()));
    let scale = if largest > 1e-12 { magnitude / largest } else { 0.0 };
    log_field.iter().map(|p| (p * scale).exp() as f32).collect()
}

/// Multiplies the signal by `field`. The z-scored image is an affine function of the MR signal;
/// its minimum stands for (almost) no signal, so the field scales the intensity above the minimum:
/// `x -> min + (x − min)·b`. Tissue order is kept; the mean changes, as with a real coil.
pub fn apply_bias_field(data: &mut [f32], field: &[f32]) {
    let lo = data.iter().fold(f32::INFINITY, |m, v| m.min(*v));
    for (v, b) in data.iter_mut().zip(field) {
        *v = lo + (*v - lo) * b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn ramp(n: usize) -> Vec<f32> {
        (0..n).map(|x| ((x * 7919) % n) as f32 * 0.1 - 1.0).collect()
    }

    #[test]
    fn inversion_keeps_mean_and_std_and_reverses_order() {
        let mut d = ramp(60);
        let before = mean_std(&d);
        let (a, b) = (d[3], d[10]);
        invert(&mut d);
        let after = mean_std(&d);
        assert!((before.0 - after.0).abs() < 1e-5 && (before.1 - after.1).abs() < 1e-5);
        assert_eq!(a < b, d[3] > d[10]);
    }

    #[test]
    fn remap_curves() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..50 {
            let c = RemapCurve::sample(&mut rng, [4, 8], 1.0, true);
            assert!((4..=8).contains(&c.values.len()) && c.is_monotone());
        }
        let identity = RemapCurve::sample(&mut rng, [5, 5], 0.0, false);
        for t in [-0.5, 0.0, 0.3, 0.77, 1.0, 2.0] {
            assert!((identity.eval(t) - t).abs() < 1e-12);
        }
        // Non-monotone curves occur when not asked for monotone ones.
        assert!((0..50).any(|_| !RemapCurve::sample(&mut rng, [6, 6], 1.0, false).is_monotone()));
    }

    #[test]
    fn identity_remap_changes_nothing_and_monotone_remap_keeps_order() {
        let d = ramp(200);
        let mut same = d.clone();
        histogram_remap(&mut same, &RemapCurve { values: vec![0.0, 0.5, 1.0] });
        assert!(d.iter().zip(&same).all(|(a, b)| (a - b).abs() < 1e-4));
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut m = d.clone();
        let curve = RemapCurve::sample(&mut rng, [4, 8], 1.0, true);
        histogram_remap(&mut m, &curve);
        assert!(m.iter().all(|v| v.is_finite()));
        for i in 0..d.len() {
            for j in 0..d.len() {
                if d[i] < d[j] {
                    assert!(m[i] <= m[j], "monotone remap reordered {} and {}", d[i], d[j]);
                }
            }
        }
        let mut constant = vec![1.5f32; 10];
        histogram_remap(&mut constant, &curve);
        assert_eq!(constant, vec![1.5f32; 10]);
    }

    #[test]
    fn bias_field_is_positive_bounded_and_smooth() {
        let shape = [3, 16, 20];
        let (order, magnitude) = (3, 0.4);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let f = bias_field(shape, order, magnitude, &mut rng);
        assert_eq!(f.len(), 3 * 16 * 20);
        let logs: Vec<f64> = f.iter().map(|b| (*b as f64).ln()).collect();
        assert!(f.iter().all(|b| *b > 0.0));
        let largest = logs.iter().fold(0f64, |m, v| m.max(v.abs()));
        assert!((largest - magnitude).abs() < 1e-5, "max |log b| = {largest}");
        // Markov: |p'| <= order^2 max|p| on [-1, 1] (a little more: the maximum over the grid is
        // slightly below the maximum over the square); one voxel is 2/side.
        let at = |x: usize, y: usize, z: usize| logs[(x * 16 + y) * 20 + z];
        for x in 0..3 {
            for y in 0..16 {
                for z in 0..20 {
                    if y + 1 < 16 {
                        assert!((at(x, y + 1, z) - at(x, y, z)).abs() <= 1.5 * 9.0 * magnitude * 2.0 / 16.0);
                    }
                    if z + 1 < 20 {
                        assert!((at(x, y, z + 1) - at(x, y, z)).abs() <= 1.5 * 9.0 * magnitude * 2.0 / 20.0);
                    }
                }
            }
        }
        // A plane (side 1 along i) gets a field in range too.
        let plane = bias_field([1, 8, 8], 2, 0.2, &mut rng);
        let range = (-0.2f32).exp() * 0.99999..=0.2f32.exp() * 1.00001;
        assert!(plane.iter().all(|b| range.contains(b)));
        // Multiplying keeps the minimum and the order of intensities.
        let mut d = ramp(3 * 16 * 20);
        let orig = d.clone();
        apply_bias_field(&mut d, &f);
        assert_eq!(d.iter().fold(f32::INFINITY, |m, v| m.min(*v)), orig.iter().fold(f32::INFINITY, |m, v| m.min(*v)));
    }
}
