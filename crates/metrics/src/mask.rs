//! Binary masks on a voxel grid, in spineseg's `i`-fastest order.
//!
//! A [`Mask`] is either volumetric (3D) or planar (2D, stored with shape `[nx, ny, 1]`). The
//! difference matters only for surfaces: a planar mask's third axis is not an axis at all, so a
//! pixel is never on the boundary because of it (in 3D a one-slice-thick mask is all surface).

use crate::error::{MetricsError, Result};
use spineseg_io::{Label, Volume};

/// Which neighbours decide that a foreground voxel lies on the boundary, i.e. the structuring
/// element of the erosion in `boundary = mask AND NOT erode(mask)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Connectivity {
    /// Face neighbours (6 in 3D, 4 in 2D): scipy's `generate_binary_structure(ndim, 1)`, the
    /// default of both medpy (`connectivity=1`) and MONAI (`binary_erosion` without a structure).
    #[default]
    Face,
    /// All neighbours (26 in 3D, 8 in 2D): `generate_binary_structure(ndim, ndim)`, medpy with
    /// `connectivity=ndim`. Gives a thicker boundary.
    Full,
}

/// A binary mask: `data[i + nx * (j + ny * k)]` is true inside the structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    shape: [usize; 3],
    planar: bool,
    data: Vec<bool>,
}

impl Mask {
    /// A volumetric mask; fails when `data.len()` is not the product of `shape`.
    pub fn new(shape: [usize; 3], data: Vec<bool>) -> Result<Self> {
        check_len(shape, data.len())?;
        Ok(Mask { shape, planar: false, data })
    }

    /// A planar (2D) mask of `shape = [nx, ny]`, `i` fastest.
    pub fn new_planar(shape: [usize; 2], data: Vec<bool>) -> Result<Self> {
        let shape = [shape[0], shape[1], 1];
        check_len(shape, data.len())?;
        Ok(Mask { shape, planar: true, data })
    }

    /// An all-false mask of the same kind and shape as `self`.
    pub fn empty_like(&self) -> Self {
        Mask { shape: self.shape, planar: self.planar, data: vec![false; self.data.len()] }
    }

    /// The voxels of `labels` equal to `label`.
    pub fn from_labels(labels: &Volume<Label>, label: Label) -> Self {
        Mask { shape: labels.shape(), planar: false, data: labels.data().iter().map(|&v| v == label).collect() }
    }

    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }
    /// True for a 2D mask (its third axis has length 1 and is not a spatial axis).
    pub fn is_planar(&self) -> bool {
        self.planar
    }
    /// 2 or 3.
    pub fn ndim(&self) -> usize {
        if self.planar {
            2
        } else {
            3
        }
    }
    pub fn data(&self) -> &[bool] {
        &self.data
    }
    pub fn len(&self) -> usize {
        self.data.len()
    }
    /// True when the grid has no voxels at all (not the same as [`Mask::count`] being 0).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// Number of foreground voxels.
    pub fn count(&self) -> usize {
        self.data.iter().filter(|&&v| v).count()
    }
    pub fn any(&self) -> bool {
        self.data.iter().any(|&v| v)
    }

    /// The smallest box holding every foreground voxel of `self` or `other`: inclusive start,
    /// exclusive end; `None` when both are all false.
    pub fn union_bounding_box(&self, other: &Mask) -> Option<([usize; 3], [usize; 3])> {
        debug_assert_eq!(self.shape, other.shape);
        let [nx, ny, _] = self.shape;
        let mut lo = [usize::MAX; 3];
        let mut hi = [0usize; 3];
        for (idx, (&a, &b)) in self.data.iter().zip(&other.data).enumerate() {
            if a || b {
                let ijk = [idx % nx, (idx / nx) % ny, idx / (nx * ny)];
                for axis in 0..3 {
                    lo[axis] = lo[axis].min(ijk[axis]);
                    hi[axis] = hi[axis].max(ijk[axis] + 1);
                }
            }
        }
        (lo[0] != usize::MAX).then_some((lo, hi))
    }

    /// The sub-grid `start..end` (per axis) as a new mask of the same kind.
    pub fn crop(&self, start: [usize; 3], end: [usize; 3]) -> Mask {
        let [nx, ny, _] = self.shape;
        let shape = [end[0] - start[0], end[1] - start[1], end[2] - start[2]];
        let mut data = Vec::with_capacity(shape.iter().product());
        for k in start[2]..end[2] {
            for j in start[1]..end[1] {
                let row = nx * (j + ny * k);
                data.extend_from_slice(&self.data[row + start[0]..row + end[0]]);
            }
        }
        Mask { shape, planar: self.planar, data }
    }

    /// Slice `index` across `axis` of a volumetric mask, as a planar mask whose axes are the two
    /// remaining axes in increasing order (axis 0 -> `[j, k]`, 1 -> `[i, k]`, 2 -> `[i, j]`).
    pub fn slice(&self, axis: usize, index: usize) -> Mask {
        let [nx, ny, nz] = self.shape;
        let (a, b) = in_plane_axes(axis);
        let plane = [self.shape[a], self.shape[b]];
        let mut data = Vec::with_capacity(plane[0] * plane[1]);
        for v in 0..plane[1] {
            for u in 0..plane[0] {
                let mut ijk = [0; 3];
                ijk[axis] = index;
                ijk[a] = u;
                ijk[b] = v;
                data.push(self.data[ijk[0] + nx * (ijk[1] + ny * ijk[2])]);
            }
        }
        debug_assert!(index < [nx, ny, nz][axis]);
        Mask { shape: [plane[0], plane[1], 1], planar: true, data }
    }
}

/// The two axes spanning a slice across `axis`, in increasing order.
pub fn in_plane_axes(axis: usize) -> (usize, usize) {
    match axis {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    }
}

fn check_len(shape: [usize; 3], len: usize) -> Result<()> {
    if shape.iter().product::<usize>() == len {
        Ok(())
    } else {
        Err(MetricsError::InvalidMask(format!(
            "shape {shape:?} needs {} voxels, got {len}",
            shape.iter().product::<usize>()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_keep_remaining_axes_in_order() {
        // value = i + 10 j + 100 k, marked where it is odd-ish to make every voxel distinct.
        let shape = [2, 3, 4];
        let data: Vec<bool> = (0..24).map(|n| n % 3 == 0).collect();
        let m = Mask::new(shape, data.clone()).unwrap();
        let s = m.slice(1, 2);
        assert_eq!(s.shape(), [2, 4, 1]);
        for k in 0..4 {
            for i in 0..2 {
                assert_eq!(s.data()[i + 2 * k], data[i + 2 * (2 + 3 * k)]);
            }
        }
        assert!(s.is_planar());
    }

    #[test]
    fn bounding_box_and_crop() {
        let mut data = vec![false; 4 * 4 * 4];
        data[1 + 4 * (2 + 4 * 3)] = true;
        let a = Mask::new([4, 4, 4], data).unwrap();
        let b = a.empty_like();
        assert_eq!(a.union_bounding_box(&b), Some(([1, 2, 3], [2, 3, 4])));
        assert_eq!(b.union_bounding_box(&b), None);
        let c = a.crop([1, 1, 1], [3, 4, 4]);
        assert_eq!(c.shape(), [2, 3, 3]);
        assert_eq!(c.count(), 1);
        assert!(c.data()[2 + 2 * 6]);
        assert!(Mask::new([2, 2, 2], vec![false; 7]).is_err());
    }
}
