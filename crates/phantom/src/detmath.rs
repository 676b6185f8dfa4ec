//! Deterministic maths for the phantom generator.
//!
//! The generator promises bit-identical output for a seed on every machine. `f64::sin`, `ln`,
//! `exp` and friends call the platform's libm, whose last bits differ between systems, so the
//! generator uses these versions instead: they are built only from `+ - * /`, `sqrt` and bit
//! operations, which IEEE 754 fixes exactly (Rust never fuses multiply-adds on its own).

use rand::Rng;

const LN_2: f64 = std::f64::consts::LN_2;
const FRAC_PI_2: f64 = std::f64::consts::FRAC_PI_2;

/// Natural logarithm of a positive finite `x` (relative error below 1e-15).
pub fn ln(x: f64) -> f64 {
    debug_assert!(x > 0.0 && x.is_finite(), "ln needs a positive finite argument, got {x}");
    let (mut x, mut exponent_bias) = (x, 0i64);
    if x < f64::MIN_POSITIVE {
        // Subnormal: scale into the normal range first.
        x *= 18014398509481984.0; // 2^54
        exponent_bias = -54;
    }
    let bits = x.to_bits();
    let mut exponent = ((bits >> 52) & 0x7ff) as i64 - 1023 + exponent_bias;
    let mut mantissa = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    if mantissa > std::f64::consts::SQRT_2 {
        mantissa *= 0.5;
        exponent += 1;
    }
    // ln(m) = 2 atanh(z) with z = (m - 1) / (m + 1), |z| <= 0.172: the series converges fast.
    let z = (mantissa - 1.0) / (mantissa + 1.0);
    let z2 = z * z;
    let mut term = z;
    let mut sum = z;
    let mut k = 3.0;
    while k < 40.0 {
        term *= z2;
        sum += term / k;
        k += 2.0;
    }
    2.0 * sum + exponent as f64 * LN_2
}

/// `(sin x, cos x)` for moderate `|x|` (the generator only needs angles of a few radians).
pub fn sin_cos(x: f64) -> (f64, f64) {
    let quadrant = (x / FRAC_PI_2).round();
    let r = x - quadrant * FRAC_PI_2;
    let r2 = r * r;
    // Taylor series on |r| <= pi/4; 10 terms leave an error far below f64 rounding.
    let (mut s_term, mut s_sum) = (r, r);
    let (mut c_term, mut c_sum) = (1.0, 1.0);
    for n in 1..10 {
        let n = n as f64;
        s_term *= -r2 / ((2.0 * n) * (2.0 * n + 1.0));
        s_sum += s_term;
        c_term *= -r2 / ((2.0 * n - 1.0) * (2.0 * n));
        c_sum += c_term;
    }
    match (quadrant as i64).rem_euclid(4) {
        0 => (s_sum, c_sum),
        1 => (c_sum, -s_sum),
        2 => (-s_sum, -c_sum),
        _ => (-c_sum, s_sum),
    }
}

pub fn deg(degrees: f64) -> f64 {
    degrees * (std::f64::consts::PI / 180.0)
}

/// Two independent standard normal samples (Marsaglia's polar method: only `ln` and `sqrt`).
pub fn normal_pair(rng: &mut impl Rng) -> (f64, f64) {
    loop {
        let u = rng.gen::<f64>() * 2.0 - 1.0;
        let v = rng.gen::<f64>() * 2.0 - 1.0;
        let s = u * u + v * v;
        if s > 0.0 && s < 1.0 {
            let f = (-2.0 * ln(s) / s).sqrt();
            return (u * f, v * f);
        }
    }
}

/// Smooth 3D value noise in [-1, 1] on a unit lattice, from a seeded permutation table.
#[derive(Debug, Clone)]
pub struct ValueNoise {
    perm: [u8; 512],
    values: [f32; 256],
}

impl ValueNoise {
    pub fn new(rng: &mut impl Rng) -> Self {
        let mut table: [u8; 256] = std::array::from_fn(|i| i as u8);
        for i in (1..256).rev() {
            let j = rng.gen_range(0..=i);
            table.swap(i, j);
        }
        let mut perm = [0u8; 512];
        for i in 0..512 {
            perm[i] = table[i & 255];
        }
        let values = std::array::from_fn(|_| rng.gen::<f32>() * 2.0 - 1.0);
        ValueNoise { perm, values }
    }

    #[inline]
    fn lattice(&self, x: i64, y: i64, z: i64) -> f64 {
        let h = self.perm
            [(self.perm[(self.perm[(x & 255) as usize] as i64 + (y & 255)) as usize] as i64 + (z & 255)) as usize];
        self.values[h as usize] as f64
    }

    /// Noise at a point given in lattice units (scale coordinates by the wanted frequency first).
    pub fn at(&self, x: f64, y: f64, z: f64) -> f64 {
        let (xf, yf, zf) = (x.floor(), y.floor(), z.floor());
        let (xi, yi, zi) = (xf as i64, yf as i64, zf as i64);
        let (tx, ty, tz) = (fade(x - xf), fade(y - yf), fade(z - zf));
        let lerp = |a: f64, b: f64, t: f64| a + (b - a) * t;
        let c00 = lerp(self.lattice(xi, yi, zi), self.lattice(xi + 1, yi, zi), tx);
        let c10 = lerp(self.lattice(xi, yi + 1, zi), self.lattice(xi + 1, yi + 1, zi), tx);
        let c01 = lerp(self.lattice(xi, yi, zi + 1), self.lattice(xi + 1, yi, zi + 1), tx);
        let c11 = lerp(self.lattice(xi, yi + 1, zi + 1), self.lattice(xi + 1, yi + 1, zi + 1), tx);
        lerp(lerp(c00, c10, ty), lerp(c01, c11, ty), tz)
    }

    /// Two octaves of [`ValueNoise::at`], still roughly in [-1, 1].
    pub fn fbm(&self, x: f64, y: f64, z: f64) -> f64 {
        0.67 * self.at(x, y, z) + 0.33 * self.at(2.03 * x + 17.1, 2.03 * y + 5.3, 2.03 * z + 11.7)
    }
}

/// Quintic smoothstep weight (continuous first and second derivatives).
#[inline]
fn fade(t: f64) -> f64 {
    t * t * t * (t * (t * 6.0 - 15.0) + 10.0)
}

/// 0 below `lo`, 1 above `hi`, smooth in between.
#[inline]
pub fn smoothstep(lo: f64, hi: f64, x: f64) -> f64 {
    let t = ((x - lo) / (hi - lo)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn ln_and_sin_cos_match_std_closely() {
        for x in [1e-300, 1e-5, 0.3, 1.0, 1.4, 2.0, 10.0, 12345.678] {
            assert!((ln(x) - x.ln()).abs() <= 1e-13 * x.ln().abs().max(1.0), "ln({x})");
        }
        for i in -40..=40 {
            let x = i as f64 * 0.173;
            let (s, c) = sin_cos(x);
            assert!((s - x.sin()).abs() < 1e-14 && (c - x.cos()).abs() < 1e-14, "sin_cos({x})");
        }
    }

    #[test]
    fn normals_have_unit_variance() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let n = 20000;
        let (mut sum, mut sq) = (0.0, 0.0);
        for _ in 0..n {
            let (a, b) = normal_pair(&mut rng);
            sum += a + b;
            sq += a * a + b * b;
        }
        let mean = sum / (2 * n) as f64;
        let var = sq / (2 * n) as f64 - mean * mean;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "mean {mean} var {var}");
    }

    #[test]
    fn value_noise_is_bounded_and_smooth() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let noise = ValueNoise::new(&mut rng);
        for i in 0..200 {
            let x = i as f64 * 0.05;
            let a = noise.at(x, 0.5 * x, -x);
            let b = noise.at(x + 0.01, 0.5 * x, -x);
            assert!(a.abs() <= 1.0 && (a - b).abs() < 0.05);
        }
    }
}
