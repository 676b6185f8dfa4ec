//! Overlap metrics: Dice and IoU (Jaccard).
//!
//! Input: two masks of the same shape. Empty masks follow nnU-Net's rules: both empty gives NaN
//! (no structure to score; skipped in means), one empty gives 0. medpy's `dc` and `jc` return 1.0
//! when both are empty (they catch the division by zero); spineseg follows nnU-Net and MONAI's
//! `DiceMetric(ignore_empty=True)` instead.

use crate::mask::Mask;

/// Voxel counts of a pair: `|P ∩ R|`, `|P|`, `|R|`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverlapCounts {
    pub intersection: usize,
    pub pred: usize,
    pub reference: usize,
}

impl OverlapCounts {
    pub fn of(pred: &Mask, reference: &Mask) -> Self {
        assert_eq!(pred.shape(), reference.shape(), "masks should have the same shape");
        let mut c = OverlapCounts { intersection: 0, pred: 0, reference: 0 };
        for (&p, &r) in pred.data().iter().zip(reference.data()) {
            c.pred += p as usize;
            c.reference += r as usize;
            c.intersection += (p && r) as usize;
        }
        c
    }

    /// `2 |P ∩ R| / (|P| + |R|)`; NaN when both are empty, 0 when only one is.
    pub fn dice(&self) -> f64 {
        let denominator = self.pred + self.reference;
        if denominator == 0 {
            f64::NAN
        } else {
            2.0 * self.intersection as f64 / denominator as f64
        }
    }

    /// `|P ∩ R| / |P ∪ R|`; NaN when both are empty, 0 when only one is.
    pub fn iou(&self) -> f64 {
        let union = self.pred + self.reference - self.intersection;
        if union == 0 {
            f64::NAN
        } else {
            self.intersection as f64 / union as f64
        }
    }
}

/// Dice coefficient of two masks (see [`OverlapCounts::dice`]).
pub fn dice(pred: &Mask, reference: &Mask) -> f64 {
    OverlapCounts::of(pred, reference).dice()
}

/// Intersection over union of two masks (see [`OverlapCounts::iou`]).
pub fn iou(pred: &Mask, reference: &Mask) -> f64 {
    OverlapCounts::of(pred, reference).iou()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planar(bits: &str) -> Mask {
        Mask::new_planar([bits.len(), 1], bits.chars().map(|c| c == '1').collect()).unwrap()
    }

    #[test]
    fn dice_and_iou_table() {
        // (pred, reference, dice, iou), checked by hand.
        let table = [
            ("1100", "1100", 1.0, 1.0),
            ("1100", "0110", 0.5, 1.0 / 3.0),
            ("1000", "0001", 0.0, 0.0),
            ("1110", "1000", 0.5, 1.0 / 3.0),
            ("0000", "1000", 0.0, 0.0), // one empty: 0
            ("1000", "0000", 0.0, 0.0),
        ];
        for (p, r, d, j) in table {
            assert!((dice(&planar(p), &planar(r)) - d).abs() < 1e-15, "{p} {r}");
            assert!((iou(&planar(p), &planar(r)) - j).abs() < 1e-15, "{p} {r}");
        }
        // Both empty: NaN (nnU-Net), skipped in means.
        assert!(dice(&planar("0000"), &planar("0000")).is_nan());
        assert!(iou(&planar("0000"), &planar("0000")).is_nan());
    }
}
