//! Surface distances and the metrics built on them: Hausdorff distance, HD95 (MONAI's and
//! medpy's definitions), average symmetric surface distance and normalised surface Dice.
//!
//! # Definition (medpy 0.5.2 `__surface_distances`, MONAI `get_edge_surface_distance`)
//! The directed distances from `A` to `B` are, for every boundary voxel of `A` (see
//! [`crate::surface`]), the Euclidean distance in mm (voxel index differences times the spacing)
//! to the nearest boundary voxel of `B`. Both libraries compute it as
//! `distance_transform_edt(~boundary(B), sampling=spacing)[boundary(A)]`; so do we, with the
//! exact transform of [`crate::edt`]. A voxel of `A`'s boundary lying inside `B` still has a
//! positive distance (to `B`'s boundary).
//!
//! - `hd`: the largest distance of both directed sets.
//! - `hd95` (MONAI `compute_hausdorff_distance(percentile=95, directed=False)`): the 95th
//!   percentile of each directed set, then the larger of the two.
//! - `hd95_pooled` (medpy `hd95`): the 95th percentile of both directed sets pooled.
//! - `assd` (medpy `assd`, MONAI `compute_average_surface_distance(symmetric=True)`): the mean of
//!   both directed sets pooled.
//! - `nsd` (MONAI `compute_surface_dice(use_subvoxels=False)`): the fraction of boundary voxels of
//!   both masks whose distance to the other boundary is at most the tolerance (`<=`). DeepMind's
//!   `surface-distance` package weighs boundary elements by surfel area instead; this is MONAI's
//!   default voxel-count version.
//!
//! Percentiles interpolate linearly between order statistics, numpy's default (`torch.quantile`'s
//! default, which MONAI uses, is the same).
//!
//! # Empty masks (nnU-Net / MONAI)
//! Both masks empty: every distance metric is NaN. Exactly one empty: every distance is
//! `+inf` and the surface Dice is 0 (medpy raises an error here instead).
//!
//! # Units
//! With `spacing_mm` the voxel size, distances are in mm; with unit spacing they are in voxels
//! (`_px`, the "pixels" of ATM-Net and other slice-wise papers).

use crate::edt::squared_distance_at;
use crate::mask::{Connectivity, Mask};
use crate::surface::boundary;
use serde::{Deserialize, Serialize};

/// Which of the two masks hold foreground voxels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Emptiness {
    /// Both masks have foreground: every metric is finite.
    Neither,
    /// Neither mask has foreground: Dice, IoU and distances are NaN.
    BothEmpty,
    /// Only the reference has foreground (a missed structure): Dice 0, distances inf.
    PredEmpty,
    /// Only the prediction has foreground (a false positive): Dice 0, distances inf.
    RefEmpty,
}

impl Emptiness {
    pub fn of(pred_voxels: usize, ref_voxels: usize) -> Self {
        match (pred_voxels > 0, ref_voxels > 0) {
            (true, true) => Emptiness::Neither,
            (false, false) => Emptiness::BothEmpty,
            (false, true) => Emptiness::PredEmpty,
            (true, false) => Emptiness::RefEmpty,
        }
    }
}

/// The two directed sets of surface distances of a pair (see the module documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct SurfaceDistances {
    /// One value per boundary voxel of the prediction: distance to the reference boundary.
    pub pred_to_ref: Vec<f64>,
    /// One value per boundary voxel of the reference: distance to the prediction boundary.
    pub ref_to_pred: Vec<f64>,
    /// When not [`Emptiness::Neither`], both sets are empty and the metrics follow the empty rules.
    pub emptiness: Emptiness,
}

impl SurfaceDistances {
    /// Directed surface distances between two masks of the same shape and kind, in the unit of
    /// `spacing` (mm for the voxel spacing, voxels for `[1.0; 3]`).
    pub fn compute(pred: &Mask, reference: &Mask, spacing: [f64; 3], connectivity: Connectivity) -> Self {
        Self::compute_many(pred, reference, &[spacing], connectivity).pop().expect("one spacing gives one result")
    }

    /// As [`SurfaceDistances::compute`] for several spacings at once (boundaries found once).
    pub fn compute_many(pred: &Mask, reference: &Mask, spacings: &[[f64; 3]], connectivity: Connectivity) -> Vec<Self> {
        assert_eq!(pred.shape(), reference.shape(), "masks should have the same shape");
        assert_eq!(pred.is_planar(), reference.is_planar(), "masks should both be 2D or both 3D");
        let emptiness = Emptiness::of(pred.any() as usize, reference.any() as usize);
        let bbox = pred.union_bounding_box(reference);
        let (Emptiness::Neither, Some((start, end))) = (emptiness, bbox) else {
            let empty = SurfaceDistances { pred_to_ref: Vec::new(), ref_to_pred: Vec::new(), emptiness };
            return vec![empty; spacings.len()];
        };
        // Everything outside the union's bounding box is background, so cropping to it changes
        // neither the boundaries (outside counts as background either way) nor the nearest
        // boundary voxels (all of them are inside).
        let (p, r) = (pred.crop(start, end), reference.crop(start, end));
        let (bp, br) = rayon::join(|| boundary(&p, connectivity), || boundary(&r, connectivity));
        let shape = bp.shape();
        spacings
            .iter()
            .map(|&spacing| {
                let (pred_to_ref, ref_to_pred) =
                    rayon::join(|| directed(&bp, &br, shape, spacing), || directed(&br, &bp, shape, spacing));
                SurfaceDistances { pred_to_ref, ref_to_pred, emptiness }
            })
            .collect()
    }

    /// Empty-mask rule for a distance: NaN when both are empty, inf when one is.
    fn empty_rule(&self) -> Option<f64> {
        match self.emptiness {
            Emptiness::Neither => None,
            Emptiness::BothEmpty => Some(f64::NAN),
            Emptiness::PredEmpty | Emptiness::RefEmpty => Some(f64::INFINITY),
        }
    }

    /// Hausdorff distance: the largest distance in either direction.
    pub fn hausdorff(&self) -> f64 {
        self.empty_rule().unwrap_or_else(|| {
            self.pred_to_ref.iter().chain(&self.ref_to_pred).fold(f64::NEG_INFINITY, |a, &b| a.max(b))
        })
    }

    /// MONAI's percentile Hausdorff distance: the `q`-th percentile (0..=100) of each directed
    /// set, then the maximum. `q = 95` is MONAI's HD95.
    pub fn percentile_hausdorff(&self, q: f64) -> f64 {
        self.empty_rule().unwrap_or_else(|| {
            let a = percentile(&mut self.pred_to_ref.clone(), q);
            let b = percentile(&mut self.ref_to_pred.clone(), q);
            a.max(b)
        })
    }

    /// medpy's percentile Hausdorff distance: the `q`-th percentile of both directed sets pooled.
    /// `q = 95` is medpy's `hd95`.
    pub fn percentile_hausdorff_pooled(&self, q: f64) -> f64 {
        self.empty_rule().unwrap_or_else(|| {
            let mut all: Vec<f64> = self.pred_to_ref.iter().chain(&self.ref_to_pred).copied().collect();
            percentile(&mut all, q)
        })
    }

    /// Average symmetric surface distance: the mean of both directed sets pooled.
    pub fn average_symmetric(&self) -> f64 {
        self.empty_rule().unwrap_or_else(|| {
            let n = self.pred_to_ref.len() + self.ref_to_pred.len();
            self.pred_to_ref.iter().chain(&self.ref_to_pred).sum::<f64>() / n as f64
        })
    }

    /// Normalised surface Dice at `tolerance` (same unit as the distances): NaN when both are
    /// empty, 0 when one is.
    pub fn surface_dice(&self, tolerance: f64) -> f64 {
        match self.emptiness {
            Emptiness::BothEmpty => f64::NAN,
            Emptiness::PredEmpty | Emptiness::RefEmpty => 0.0,
            Emptiness::Neither => {
                let within = self.pred_to_ref.iter().chain(&self.ref_to_pred).filter(|&&d| d <= tolerance).count();
                within as f64 / (self.pred_to_ref.len() + self.ref_to_pred.len()) as f64
            }
        }
    }
}

/// Distances from each boundary voxel of `from` to the nearest boundary voxel of `to`.
fn directed(from: &Mask, to: &Mask, shape: [usize; 3], spacing: [f64; 3]) -> Vec<f64> {
    let mut distances = squared_distance_at(to.data(), from.data(), shape, spacing);
    for d in &mut distances {
        *d = d.sqrt();
    }
    distances
}

/// numpy's `percentile(values, q)` with the default linear interpolation (`q` in 0..=100).
/// Reorders `values`; NaN for an empty slice.
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    let q = q / 100.0;
    // numpy: virtual index = n*q + (1 + q*(1 - alpha - beta)) - 1 with alpha = beta = 1.
    let h = (n as f64 * q + (1.0 - q) - 1.0).clamp(0.0, (n - 1) as f64);
    let lo = h.floor() as usize;
    let t = h - lo as f64;
    let (_, &mut a, upper) = values.select_nth_unstable_by(lo, f64::total_cmp);
    if lo + 1 >= n {
        return a;
    }
    let b = upper.iter().copied().fold(f64::INFINITY, f64::min);
    // numpy's _lerp: exact at both ends.
    let diff = b - a;
    if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planar(rows: &[&str]) -> Mask {
        // rows[j] is the line of pixels with that j; character i is pixel i.
        let nx = rows[0].len();
        let data = rows.iter().flat_map(|r| r.chars().map(|c| c == '#')).collect();
        Mask::new_planar([nx, rows.len()], data).unwrap()
    }

    #[test]
    fn percentile_matches_numpy() {
        // numpy.percentile([3, 1, 4, 1, 5], q) for q = 0, 25, 50, 95, 100.
        let table = [(0.0, 1.0), (25.0, 1.0), (50.0, 3.0), (95.0, 4.8), (100.0, 5.0), (40.0, 2.2)];
        for (q, expected) in table {
            let got = percentile(&mut [3.0, 1.0, 4.0, 1.0, 5.0], q);
            assert!((got - expected).abs() < 1e-12, "q={q}: {got}");
        }
        assert!(percentile(&mut [], 95.0).is_nan());
    }

    #[test]
    fn hand_checked_pair() {
        // Two 1-pixel-wide vertical bars, 3 pixels apart in i, spacing 0.5 mm (i) x 2 mm (j).
        let pred = planar(&["#...", "#...", "#..."]);
        let reference = planar(&["...#", "...#", "...#"]);
        let d = SurfaceDistances::compute(&pred, &reference, [0.5, 2.0, 1.0], Connectivity::Face);
        assert_eq!(d.pred_to_ref, vec![1.5; 3]);
        assert_eq!(d.hausdorff(), 1.5);
        assert_eq!(d.percentile_hausdorff(95.0), 1.5);
        assert_eq!(d.average_symmetric(), 1.5);
        assert_eq!(d.surface_dice(1.5), 1.0);
        assert_eq!(d.surface_dice(1.4), 0.0);
        let px = SurfaceDistances::compute(&pred, &reference, [1.0; 3], Connectivity::Face);
        assert_eq!(px.hausdorff(), 3.0);
    }

    #[test]
    fn monai_and_medpy_hd95_differ_when_directions_are_unbalanced() {
        // Reference: a long bar; prediction: one of its pixels plus a far-away pixel. From the
        // prediction side, half the boundary is far; from the reference, few pixels are.
        let reference = planar(&["##########", "..........", ".........."]);
        let pred = planar(&["#.........", "..........", ".........#"]);
        let d = SurfaceDistances::compute(&pred, &reference, [1.0; 3], Connectivity::Face);
        assert_eq!(d.pred_to_ref, vec![0.0, 2.0]);
        // pred -> ref: [0, 2] -> 95th percentile 1.9. ref -> pred: distances to (0,0) or (9,2).
        let mut r = d.ref_to_pred.clone();
        r.sort_by(f64::total_cmp);
        let monai = 1.9f64.max(percentile(&mut r.clone(), 95.0));
        assert!((d.percentile_hausdorff(95.0) - monai).abs() < 1e-12);
        let mut pooled = [vec![0.0, 2.0], r].concat();
        assert!((d.percentile_hausdorff_pooled(95.0) - percentile(&mut pooled, 95.0)).abs() < 1e-12);
        assert_ne!(d.percentile_hausdorff(95.0), d.percentile_hausdorff_pooled(95.0));
    }

    #[test]
    fn empty_mask_rules() {
        let some = planar(&[".#.", "..."]);
        let none = planar(&["...", "..."]);
        // (pred, reference, emptiness, distance value, surface Dice)
        let table = [
            (&none, &none, Emptiness::BothEmpty, f64::NAN, f64::NAN),
            (&none, &some, Emptiness::PredEmpty, f64::INFINITY, 0.0),
            (&some, &none, Emptiness::RefEmpty, f64::INFINITY, 0.0),
            (&some, &some, Emptiness::Neither, 0.0, 1.0),
        ];
        let same = |a: f64, b: f64| (a.is_nan() && b.is_nan()) || a == b;
        for (p, r, emptiness, dist, nsd) in table {
            let d = SurfaceDistances::compute(p, r, [1.0; 3], Connectivity::Face);
            assert_eq!(d.emptiness, emptiness);
            for value in [
                d.hausdorff(),
                d.percentile_hausdorff(95.0),
                d.percentile_hausdorff_pooled(95.0),
                d.average_symmetric(),
            ] {
                assert!(same(value, dist), "{emptiness:?}: {value}");
            }
            assert!(same(d.surface_dice(2.0), nsd), "{emptiness:?}");
        }
    }
}
