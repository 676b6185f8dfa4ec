//! Boundary (surface) voxels of a mask, as medpy and MONAI define them.
//!
//! Both libraries take `boundary = mask XOR binary_erosion(mask)` with scipy's `binary_erosion`:
//! - medpy 0.5.2 `__surface_distances`: `binary_erosion(result, structure=
//!   generate_binary_structure(ndim, connectivity), iterations=1)` with `connectivity=1` by default
//!   (face neighbours).
//! - MONAI `get_mask_edges`: `binary_erosion(seg_pred) ^ seg_pred` with no structure, i.e. scipy's
//!   default `generate_binary_structure(ndim, 1)` (face neighbours), after cropping both masks to
//!   the bounding box of their union with a one-voxel margin (the crop does not change the edges).
//!
//! scipy's erosion uses `border_value=0`: outside the grid counts as background, so a foreground
//! voxel on the edge of the image is always a boundary voxel. So a voxel is on the boundary when it
//! is foreground and at least one neighbour of the structuring element is background or outside
//! the grid. The face element (the default of both libraries, [`Connectivity::Face`]) gives a
//! boundary that is one voxel thick and connected through edges and corners (26-connected in 3D);
//! [`Connectivity::Full`] uses all 26 (8 in 2D) neighbours and marks a thicker boundary.

use crate::mask::{Connectivity, Mask};
use rayon::prelude::*;

/// The boundary voxels of `mask` (see the module documentation). Planar masks use the 2D
/// neighbourhood (4 or 8 neighbours).
pub fn boundary(mask: &Mask, connectivity: Connectivity) -> Mask {
    let [nx, ny, nz] = mask.shape();
    let data = mask.data();
    let offsets = neighbour_offsets(mask.is_planar(), connectivity);
    let slab = nx * ny;
    let mut out = vec![false; data.len()];
    if slab == 0 {
        return Mask::new(mask.shape(), out).expect("same shape as the input");
    }
    out.par_chunks_mut(slab).enumerate().for_each(|(k, out_slab)| {
        for j in 0..ny {
            for i in 0..nx {
                let idx = i + nx * (j + ny * k);
                if !data[idx] {
                    continue;
                }
                let on_boundary = offsets.iter().any(|&[di, dj, dk]| {
                    let (a, b, c) = (i as isize + di, j as isize + dj, k as isize + dk);
                    if a < 0 || b < 0 || c < 0 || a >= nx as isize || b >= ny as isize || c >= nz as isize {
                        return true; // scipy's border_value = 0
                    }
                    !data[a as usize + nx * (b as usize + ny * c as usize)]
                });
                out_slab[i + nx * j] = on_boundary;
            }
        }
    });
    let out = Mask::new(mask.shape(), out).expect("same shape as the input");
    if mask.is_planar() {
        Mask::new_planar([nx, ny], out.data().to_vec()).expect("same shape as the input")
    } else {
        out
    }
}

/// Neighbour offsets `[di, dj, dk]` of the structuring element, centre excluded.
fn neighbour_offsets(planar: bool, connectivity: Connectivity) -> Vec<[isize; 3]> {
    let k_range: std::ops::RangeInclusive<isize> = if planar { 0..=0 } else { -1..=1 };
    let mut out = Vec::new();
    for dk in k_range {
        for dj in -1isize..=1 {
            for di in -1isize..=1 {
                let steps = di.abs() + dj.abs() + dk.abs();
                let keep = match connectivity {
                    Connectivity::Face => steps == 1,
                    Connectivity::Full => steps >= 1,
                };
                if keep {
                    out.push([di, dj, dk]);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cube(n: usize, lo: usize, hi: usize) -> Mask {
        let mut data = vec![false; n * n * n];
        for k in lo..hi {
            for j in lo..hi {
                for i in lo..hi {
                    data[i + n * (j + n * k)] = true;
                }
            }
        }
        Mask::new([n; 3], data).unwrap()
    }

    #[test]
    fn cube_boundary_is_its_shell() {
        // A 4^3 cube inside an 8^3 grid: 64 voxels, 8 interior, 56 on the boundary.
        let b = boundary(&cube(8, 2, 6), Connectivity::Face);
        assert_eq!(b.count(), 56);
        assert_eq!(boundary(&cube(8, 2, 6), Connectivity::Full).count(), 56);
    }

    #[test]
    fn image_edge_counts_as_background() {
        // The whole grid is foreground: only the outer layer is boundary (border_value = 0).
        let b = boundary(&cube(4, 0, 4), Connectivity::Face);
        assert_eq!(b.count(), 64 - 8);
    }

    #[test]
    fn full_connectivity_marks_diagonal_contacts() {
        // A 3x3 square with one corner missing: the centre touches the hole only diagonally.
        let mut data = vec![true; 9];
        data[0] = false;
        let m = Mask::new_planar([3, 3], data).unwrap();
        // Face: every remaining pixel touches the grid edge except the centre.
        assert_eq!(boundary(&m, Connectivity::Face).count(), 7);
        assert_eq!(boundary(&m, Connectivity::Full).count(), 8);
        // A planar mask is not all surface (its third axis is not spatial)...
        let filled = Mask::new_planar([3, 3], vec![true; 9]).unwrap();
        assert_eq!(boundary(&filled, Connectivity::Face).count(), 8);
        // ...but a one-slice-thick volume is.
        let slab = Mask::new([3, 3, 1], vec![true; 9]).unwrap();
        assert_eq!(boundary(&slab, Connectivity::Face).count(), 9);
    }
}
