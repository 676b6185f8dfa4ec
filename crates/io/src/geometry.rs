//! Voxel-to-world geometry.
//!
//! # Conventions (the invariants every other crate relies on)
//! - **Axis order.** A voxel index is `[i, j, k]`; `i` varies fastest in memory (the on-disk order
//!   of both NIfTI and MetaImage), so the flat index is `i + nx * (j + ny * k)`.
//! - **World space is RAS+ millimetres**, as nibabel reports it: +x towards the patient's Right,
//!   +y Anterior, +z Superior. MetaImage files store LPS (ITK's convention); their reader and
//!   writer negate x and y so every voxel keeps its physical point.
//! - `direction` holds unit column vectors: column `c` is the world direction of voxel axis `c`.
//!   The voxel-to-world map is `world = origin + direction * diag(spacing) * [i, j, k]`.

// Index loops read like the matrix formulas they implement.
#![allow(clippy::needless_range_loop)]

use crate::error::GeometryError;

/// Voxel spacing in millimetres along the voxel axes `i, j, k`; always finite and positive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spacing([f64; 3]);

impl Spacing {
    pub fn new(spacing_mm: [f64; 3]) -> Result<Self, GeometryError> {
        if spacing_mm.iter().all(|s| s.is_finite() && *s > 0.0) {
            Ok(Spacing(spacing_mm))
        } else {
            Err(GeometryError(format!(
                "spacing must be finite and positive, got {spacing_mm:?} mm"
            )))
        }
    }
    pub fn isotropic(spacing_mm: f64) -> Result<Self, GeometryError> {
        Self::new([spacing_mm; 3])
    }
    pub fn mm(&self) -> [f64; 3] {
        self.0
    }
}

impl std::ops::Index<usize> for Spacing {
    type Output = f64;
    fn index(&self, axis: usize) -> &f64 {
        &self.0[axis]
    }
}

/// A 3x3 matrix stored row-major: `m[row][col]`.
pub type Mat3 = [[f64; 3]; 3];
/// A 4x4 homogeneous affine stored row-major.
pub type Affine = [[f64; 4]; 4];

pub const IDENTITY3: Mat3 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

/// Where the voxels of a volume are in the patient, in RAS+ millimetres.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    pub spacing: Spacing,
    /// World position (RAS+ mm) of the centre of voxel `[0, 0, 0]`.
    pub origin_mm: [f64; 3],
    /// Unit column vectors; `direction[row][col]` is the `row` world component of voxel axis `col`.
    pub direction: Mat3,
}

impl Default for Geometry {
    fn default() -> Self {
        Geometry { spacing: Spacing([1.0; 3]), origin_mm: [0.0; 3], direction: IDENTITY3 }
    }
}

impl Geometry {
    /// Checks the parts and builds a geometry; the direction columns are re-normalised only when
    /// they are already unit length within 1e-4 (float noise in headers), otherwise it is an error.
    pub fn new(spacing: Spacing, origin_mm: [f64; 3], direction: Mat3) -> Result<Self, GeometryError> {
        if !origin_mm.iter().all(|v| v.is_finite()) {
            return Err(GeometryError(format!("origin is not finite: {origin_mm:?}")));
        }
        if !direction.iter().flatten().all(|v| v.is_finite()) {
            return Err(GeometryError(format!("direction is not finite: {direction:?}")));
        }
        let mut direction = direction;
        for col in 0..3 {
            let norm = (0..3).map(|r| direction[r][col].powi(2)).sum::<f64>().sqrt();
            if (norm - 1.0).abs() > 1e-4 {
                return Err(GeometryError(format!(
                    "direction column {col} is not a unit vector (length {norm})"
                )));
            }
            for row in direction.iter_mut() {
                row[col] /= norm;
            }
        }
        if det3(&direction).abs() < 1e-6 {
            return Err(GeometryError("direction matrix is singular".into()));
        }
        Ok(Geometry { spacing, origin_mm, direction })
    }

    /// Splits a voxel-to-RAS affine into spacing, origin and direction (the inverse of
    /// [`Geometry::affine`]). Fails when a column is zero or the matrix is singular.
    pub fn from_affine(affine: &Affine) -> Result<Self, GeometryError> {
        let mut spacing = [0.0; 3];
        let mut direction = IDENTITY3;
        for col in 0..3 {
            let norm = (0..3).map(|r| affine[r][col].powi(2)).sum::<f64>().sqrt();
            if !(norm.is_finite() && norm > 0.0) {
                return Err(GeometryError(format!("affine column {col} has length {norm}")));
            }
            spacing[col] = norm;
            for row in 0..3 {
                direction[row][col] = affine[row][col] / norm;
            }
        }
        Geometry::new(Spacing::new(spacing)?, [affine[0][3], affine[1][3], affine[2][3]], direction)
    }

    /// The 4x4 voxel-to-RAS affine, as nibabel's `img.affine`.
    pub fn affine(&self) -> Affine {
        let mut a = [[0.0; 4]; 4];
        for row in 0..3 {
            for col in 0..3 {
                a[row][col] = self.direction[row][col] * self.spacing.0[col];
            }
            a[row][3] = self.origin_mm[row];
        }
        a[3][3] = 1.0;
        a
    }

    /// World position (RAS+ mm) of a (possibly fractional) voxel index.
    pub fn voxel_to_world(&self, ijk: [f64; 3]) -> [f64; 3] {
        let mut out = self.origin_mm;
        for (row, value) in out.iter_mut().enumerate() {
            for col in 0..3 {
                *value += self.direction[row][col] * self.spacing.0[col] * ijk[col];
            }
        }
        out
    }

    /// Continuous voxel index of a world point (RAS+ mm).
    pub fn world_to_voxel(&self, xyz: [f64; 3]) -> [f64; 3] {
        let inv = inverse3(&self.direction).expect("direction should be invertible (checked in new)");
        let d = [xyz[0] - self.origin_mm[0], xyz[1] - self.origin_mm[1], xyz[2] - self.origin_mm[2]];
        let mut out = [0.0; 3];
        for (row, value) in out.iter_mut().enumerate() {
            *value = (0..3).map(|c| inv[row][c] * d[c]).sum::<f64>() / self.spacing.0[row];
        }
        out
    }

    /// Orientation code as nibabel's `aff2axcodes`: for each voxel axis, the letter of the
    /// anatomical direction it points to most (e.g. `"RAS"`, `"IPR"`).
    pub fn orientation_code(&self) -> String {
        axis_codes(&self.direction).iter().collect()
    }

    /// True when both geometries place every voxel at the same point within `tol_mm`
    /// (checked at the eight corners of a volume of `shape`).
    pub fn agrees_with(&self, other: &Geometry, shape: [usize; 3], tol_mm: f64) -> bool {
        corners(shape).iter().all(|c| {
            let a = self.voxel_to_world(*c);
            let b = other.voxel_to_world(*c);
            (0..3).all(|r| (a[r] - b[r]).abs() <= tol_mm)
        })
    }
}

fn corners(shape: [usize; 3]) -> Vec<[f64; 3]> {
    let hi = shape.map(|n| n.saturating_sub(1) as f64);
    let mut out = Vec::with_capacity(8);
    for mask in 0..8 {
        out.push([0, 1, 2].map(|a| if mask >> a & 1 == 1 { hi[a] } else { 0.0 }));
    }
    out
}

/// For each voxel axis, the RAS letter of the world axis it is closest to, with its sign.
/// Ties are resolved like nibabel's `io_orientation` (greedy on the largest absolute component).
pub fn axis_codes(direction: &Mat3) -> [char; 3] {
    let (world_axis, flipped) = closest_world_axes(direction);
    let pos = ['R', 'A', 'S'];
    let neg = ['L', 'P', 'I'];
    [0, 1, 2].map(|c| if flipped[c] { neg[world_axis[c]] } else { pos[world_axis[c]] })
}

/// For each voxel axis `c`: the world axis it points along most, and whether it points the
/// negative way. Greedy: the largest absolute entry of the whole matrix is assigned first, so
/// every voxel axis gets a distinct world axis even for strongly oblique scans.
pub fn closest_world_axes(direction: &Mat3) -> ([usize; 3], [bool; 3]) {
    let mut world_axis = [usize::MAX; 3];
    let mut flipped = [false; 3];
    let mut used_rows = [false; 3];
    for _ in 0..3 {
        let mut best = (0.0f64, 0usize, 0usize);
        for col in 0..3 {
            if world_axis[col] != usize::MAX {
                continue;
            }
            for row in 0..3 {
                if used_rows[row] {
                    continue;
                }
                let v = direction[row][col].abs();
                if v >= best.0 {
                    best = (v, row, col);
                }
            }
        }
        let (_, row, col) = best;
        world_axis[col] = row;
        flipped[col] = direction[row][col] < 0.0;
        used_rows[row] = true;
    }
    (world_axis, flipped)
}

pub fn det3(m: &Mat3) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

pub fn inverse3(m: &Mat3) -> Option<Mat3> {
    let det = det3(m);
    if det.abs() < 1e-12 || !det.is_finite() {
        return None;
    }
    let mut inv = [[0.0; 3]; 3];
    for (r, row) in inv.iter_mut().enumerate() {
        for (c, value) in row.iter_mut().enumerate() {
            // Cofactor of m[c][r] (transposed) over the determinant.
            let (r1, r2) = ((c + 1) % 3, (c + 2) % 3);
            let (c1, c2) = ((r + 1) % 3, (r + 2) % 3);
            *value = (m[r1][c1] * m[r2][c2] - m[r1][c2] * m[r2][c1]) / det;
        }
    }
    Some(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lumbar_real_geometry() -> Geometry {
        // i -> -z, j -> -y, k -> +x, as in ../shared/data/lumbar-real (axis codes I, P, R).
        let affine = [
            [0.0, 0.0, 1.0, 12.0],
            [0.0, -1.0, 0.0, 0.0],
            [-1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        Geometry::from_affine(&affine).unwrap()
    }

    #[test]
    fn orientation_codes_match_nibabel() {
        assert_eq!(Geometry::default().orientation_code(), "RAS");
        assert_eq!(lumbar_real_geometry().orientation_code(), "IPR");
    }

    #[test]
    fn affine_round_trip_and_world_to_voxel_inverts() {
        let g = Geometry::new(
            Spacing::new([0.34, 0.34, 4.4]).unwrap(),
            [-10.0, 5.0, 2.5],
            [[0.0, 0.0, 1.0], [0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]],
        )
        .unwrap();
        let back = Geometry::from_affine(&g.affine()).unwrap();
        for (a, b) in g.affine().iter().flatten().zip(back.affine().iter().flatten()) {
            assert!((a - b).abs() < 1e-12);
        }
        let p = g.voxel_to_world([3.0, 7.0, 2.0]);
        let v = g.world_to_voxel(p);
        for (a, b) in v.iter().zip([3.0, 7.0, 2.0]) {
            assert!((a - b).abs() < 1e-9);
        }
    }

    #[test]
    fn bad_spacing_and_direction_are_rejected() {
        assert!(Spacing::new([1.0, f64::NAN, 1.0]).is_err());
        assert!(Spacing::new([1.0, 0.0, 1.0]).is_err());
        let singular = [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]];
        assert!(Geometry::new(Spacing::isotropic(1.0).unwrap(), [0.0; 3], singular).is_err());
    }

    #[test]
    fn inverse_is_inverse() {
        let m = [[0.9, 0.1, 0.0], [-0.2, 0.8, 0.3], [0.1, 0.0, 1.1]];
        let inv = inverse3(&m).unwrap();
        for r in 0..3 {
            for c in 0..3 {
                let v: f64 = (0..3).map(|k| m[r][k] * inv[k][c]).sum();
                assert!((v - if r == c { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
    }
}
