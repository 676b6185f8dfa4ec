//! Reorientation by axis permutation and flipping only, so it is exact for labels and
//! intensities alike (no resampling), and always invertible.
//!
//! The **canonical orientation is RAS** (nibabel's `as_closest_canonical`): after reorientation,
//! voxel axis `i` points closest to the patient's Right, `j` Anterior, `k` Superior. For a
//! sagittal lumbar scan this makes `i` the slice (left-right) axis, so `volume[i = const]` is a
//! sagittal slice. Oblique scans stay oblique: only the axis order and signs change, and every
//! voxel keeps its world position.

#![allow(clippy::needless_range_loop)]

use crate::geometry::{closest_world_axes, Geometry, Spacing};
use crate::volume::{AnyVolume, Volume, VoxelData};

/// An axis permutation plus flips: new axis `n` is old axis `source_axis[n]`, read backwards
/// when `flipped[n]`. Stored with the shape it was made for, so it can be undone exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reorientation {
    pub source_axis: [usize; 3],
    pub flipped: [bool; 3],
    /// Shape of the volume before reorientation.
    pub source_shape: [usize; 3],
}

/// Errors of [`Reorientation::to_code`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid orientation code {0:?}: expected three letters, one each of R/L, A/P, S/I (e.g. RAS, LPS, PIR)")]
pub struct OrientationCodeError(pub String);

impl Reorientation {
    /// The transform that takes a volume with `geometry` and `shape` to the canonical RAS
    /// orientation.
    pub fn to_canonical(geometry: &Geometry, shape: [usize; 3]) -> Reorientation {
        Self::to_code(geometry, shape, "RAS").expect("RAS is a valid orientation code")
    }

    /// The transform to any orientation code such as `"LPS"` or `"PIR"` (nibabel letters: the
    /// direction each voxel axis points towards).
    pub fn to_code(geometry: &Geometry, shape: [usize; 3], code: &str) -> Result<Reorientation, OrientationCodeError> {
        let target = parse_code(code).ok_or_else(|| OrientationCodeError(code.to_string()))?;
        let (world_axis, axis_flipped) = closest_world_axes(&geometry.direction);
        let mut source_axis = [0; 3];
        let mut flipped = [false; 3];
        for (new_axis, (world, negative)) in target.iter().enumerate() {
            let old = (0..3).find(|&c| world_axis[c] == *world).expect("closest_world_axes is a permutation");
            source_axis[new_axis] = old;
            flipped[new_axis] = axis_flipped[old] != *negative;
        }
        Ok(Reorientation { source_axis, flipped, source_shape: shape })
    }

    pub fn is_identity(&self) -> bool {
        self.source_axis == [0, 1, 2] && self.flipped == [false; 3]
    }

    /// Shape after reorientation.
    pub fn target_shape(&self) -> [usize; 3] {
        self.source_axis.map(|a| self.source_shape[a])
    }

    /// The transform that undoes this one.
    pub fn inverse(&self) -> Reorientation {
        let mut source_axis = [0; 3];
        let mut flipped = [false; 3];
        for new_axis in 0..3 {
            let old_axis = self.source_axis[new_axis];
            source_axis[old_axis] = new_axis;
            flipped[old_axis] = self.flipped[new_axis];
        }
        Reorientation { source_axis, flipped, source_shape: self.target_shape() }
    }

    /// Geometry after reorientation: every voxel keeps its world position.
    pub fn apply_to_geometry(&self, geometry: &Geometry) -> Geometry {
        let old_spacing = geometry.spacing.mm();
        let mut direction = [[0.0; 3]; 3];
        let mut spacing = [0.0; 3];
        let mut first_voxel = [0.0; 3];
        for new_axis in 0..3 {
            let old_axis = self.source_axis[new_axis];
            let sign = if self.flipped[new_axis] { -1.0 } else { 1.0 };
            for row in 0..3 {
                direction[row][new_axis] = sign * geometry.direction[row][old_axis];
            }
            spacing[new_axis] = old_spacing[old_axis];
            if self.flipped[new_axis] {
                first_voxel[old_axis] = (self.source_shape[old_axis] - 1) as f64;
            }
        }
        Geometry {
            spacing: Spacing::new(spacing).expect("a permutation of valid spacing is valid"),
            origin_mm: geometry.voxel_to_world(first_voxel),
            direction,
        }
    }

    /// Reorders voxels (`data.len()` must equal the product of `source_shape`).
    pub fn apply_to_data<T: Copy>(&self, data: &[T]) -> Vec<T> {
        let [sx, sy, _] = self.source_shape;
        let old_strides = [1, sx, sx * sy];
        let shape = self.target_shape();
        // For each new axis: the old flat-index step and the offset of new index 0.
        let mut step = [0isize; 3];
        let mut start = 0isize;
        for n in 0..3 {
            let old = self.source_axis[n];
            let stride = old_strides[old] as isize;
            if self.flipped[n] {
                step[n] = -stride;
                start += stride * (self.source_shape[old] as isize - 1);
            } else {
                step[n] = stride;
            }
        }
        let mut out = Vec::with_capacity(data.len());
        for k in 0..shape[2] as isize {
            for j in 0..shape[1] as isize {
                let base = start + j * step[1] + k * step[2];
                out.extend((0..shape[0] as isize).map(|i| data[(base + i * step[0]) as usize]));
            }
        }
        out
    }

    pub fn apply<T: Copy>(&self, volume: &Volume<T>) -> Volume<T> {
        assert_eq!(volume.shape(), self.source_shape, "reorientation should be applied to the shape it was made for");
        Volume::new(self.target_shape(), self.apply_to_data(volume.data()), self.apply_to_geometry(&volume.geometry))
            .unwrap_or_else(|_| unreachable!("a permutation keeps the voxel count"))
    }

    pub fn apply_any(&self, volume: &AnyVolume) -> AnyVolume {
        assert_eq!(volume.shape, self.source_shape, "reorientation should be applied to the shape it was made for");
        let data = match &volume.data {
            VoxelData::U8(v) => VoxelData::U8(self.apply_to_data(v)),
            VoxelData::I8(v) => VoxelData::I8(self.apply_to_data(v)),
            VoxelData::U16(v) => VoxelData::U16(self.apply_to_data(v)),
            VoxelData::I16(v) => VoxelData::I16(self.apply_to_data(v)),
            VoxelData::U32(v) => VoxelData::U32(self.apply_to_data(v)),
            VoxelData::I32(v) => VoxelData::I32(self.apply_to_data(v)),
            VoxelData::F32(v) => VoxelData::F32(self.apply_to_data(v)),
            VoxelData::F64(v) => VoxelData::F64(self.apply_to_data(v)),
        };
        AnyVolume { shape: self.target_shape(), data, geometry: self.apply_to_geometry(&volume.geometry) }
    }
}

/// Reorients to canonical RAS and returns the transform that goes back.
pub fn to_canonical<T: Copy>(volume: &Volume<T>) -> (Volume<T>, Reorientation) {
    let r = Reorientation::to_canonical(&volume.geometry, volume.shape());
    (r.apply(volume), r.inverse())
}

/// Parses e.g. "LPS" into (world axis, points negative) per voxel axis.
fn parse_code(code: &str) -> Option<[(usize, bool); 3]> {
    let letters: Vec<char> = code.trim().to_uppercase().chars().collect();
    if letters.len() != 3 {
        return None;
    }
    let mut out = [(0, false); 3];
    let mut seen = [false; 3];
    for (slot, letter) in out.iter_mut().zip(letters) {
        let parsed = match letter {
            'R' => (0, false),
            'L' => (0, true),
            'A' => (1, false),
            'P' => (1, true),
            'S' => (2, false),
            'I' => (2, true),
            _ => return None,
        };
        if std::mem::replace(&mut seen[parsed.0], true) {
            return None;
        }
        *slot = parsed;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oblique_ipr() -> Geometry {
        // Like a sagittal lumbar scan (I, P, R) tilted by 10 degrees, anisotropic.
        let (s, c) = (10f64.to_radians().sin(), 10f64.to_radians().cos());
        let direction = [[0.0, 0.0, 1.0], [s, -c, 0.0], [-c, -s, 0.0]];
        Geometry::new(Spacing::new([0.5, 0.7, 4.0]).unwrap(), [3.0, -20.0, 40.0], direction).unwrap()
    }

    fn numbered(shape: [usize; 3], geometry: Geometry) -> Volume<u32> {
        Volume::new(shape, (0..shape.iter().product::<usize>() as u32).collect(), geometry).unwrap()
    }

    #[test]
    fn canonical_is_ras_and_keeps_world_positions() {
        let v = numbered([4, 3, 2], oblique_ipr());
        let (canon, back) = to_canonical(&v);
        assert_eq!(v.geometry.orientation_code(), "IPR");
        assert_eq!(canon.geometry.orientation_code(), "RAS");
        assert_eq!(canon.shape(), [2, 3, 4]);
        for k in 0..2 {
            for j in 0..3 {
                for i in 0..4 {
                    let value = *v.get([i, j, k]);
                    let world = v.geometry.voxel_to_world([i as f64, j as f64, k as f64]);
                    let idx = canon.geometry.world_to_voxel(world).map(|x| x.round() as usize);
                    assert_eq!(*canon.get(idx), value, "voxel {i},{j},{k} moved");
                }
            }
        }
        assert_eq!(back.apply(&canon), v, "round trip should be exact");
    }

    #[test]
    fn any_code_round_trips() {
        let v = numbered([3, 4, 5], Geometry::default());
        for code in ["RAS", "LPS", "PIR", "SLA", "IPR"] {
            let r = Reorientation::to_code(&v.geometry, v.shape(), code).unwrap();
            let out = r.apply(&v);
            assert_eq!(out.geometry.orientation_code(), code);
            assert_eq!(r.inverse().apply(&out), v);
        }
        assert!(Reorientation::to_code(&v.geometry, v.shape(), "RRS").is_err());
        assert!(Reorientation::to_code(&v.geometry, v.shape(), "RA").is_err());
    }
}
