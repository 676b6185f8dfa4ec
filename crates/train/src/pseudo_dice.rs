//! nnU-Net's online validation metric: the "pseudo Dice" of `on_validation_epoch_end`.
//!
//! Over all validation batches of an epoch, true positives, false positives and false negatives
//! of the arg-max prediction are summed per foreground class (batch Dice: all voxels of all
//! batches pooled); the Dice of class `c` is `2 TP / (2 TP + FP + FN)`, NaN when the class is in
//! neither prediction nor reference (numpy's 0/0), and the epoch's value is the mean over the
//! classes that are not NaN (`np.nanmean`). Its exponential moving average
//! ([`ema_update`], weight 0.9 on the old value) decides which checkpoint is the best.

/// TP/FP/FN per foreground class, summed over batches.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PseudoDice {
    /// Index `c - 1` for class `c`.
    tp: Vec<u64>,
    fp: Vec<u64>,
    fn_: Vec<u64>,
}

impl PseudoDice {
    /// For `num_classes` classes, background included.
    pub fn new(num_classes: usize) -> Self {
        let n = num_classes.saturating_sub(1);
        PseudoDice { tp: vec![0; n], fp: vec![0; n], fn_: vec![0; n] }
    }

    /// Adds one batch: `prediction` and `reference` hold class indices of the same voxels.
    /// Values outside `0..num_classes` are ignored.
    pub fn add(&mut self, prediction: &[u8], reference: &[u8]) {
        self.add_annotated(prediction, reference, None);
    }

    /// Like [`PseudoDice::add`] for one sample that annotates only some classes (partial labels):
    /// `annotated[c]` false leaves class `c` out of this sample's counts, so predicting an
    /// unlabelled structure is not a false positive and its absence not a false negative.
    pub fn add_annotated(&mut self, prediction: &[u8], reference: &[u8], annotated: Option<&[bool]>) {
        assert_eq!(prediction.len(), reference.len(), "prediction and reference should cover the same voxels");
        let n = self.tp.len();
        let counts = |c: u8| c != 0 && (c as usize) <= n && annotated.is_none_or(|a| a.get(c as usize).copied().unwrap_or(true));
        for (&p, &r) in prediction.iter().zip(reference) {
            if p == r {
                if counts(p) {
                    self.tp[p as usize - 1] += 1;
                }
                continue;
            }
            if counts(p) {
                self.fp[p as usize - 1] += 1;
            }
            if counts(r) {
                self.fn_[r as usize - 1] += 1;
            }
        }
    }

    /// Dice per foreground class (class 1 first); NaN where the class is absent from both.
    pub fn per_class(&self) -> Vec<f64> {
        (0..self.tp.len())
            .map(|c| {
                let denominator = 2 * self.tp[c] + self.fp[c] + self.fn_[c];
                if denominator == 0 {
                    f64::NAN
                } else {
                    2.0 * self.tp[c] as f64 / denominator as f64
                }
            })
            .collect()
    }

    /// Mean over the classes that are not NaN; NaN when all are.
    pub fn mean(&self) -> f64 {
        nan_mean(&self.per_class())
    }

    /// `(tp, fp, fn)` of class `class` (>= 1).
    pub fn counts(&self, class: usize) -> (u64, u64, u64) {
        (self.tp[class - 1], self.fp[class - 1], self.fn_[class - 1])
    }
}

/// Mean of the non-NaN values (NaN when there are none), as `np.nanmean`.
pub fn nan_mean(values: &[f64]) -> f64 {
    let finite: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if finite.is_empty() {
        f64::NAN
    } else {
        finite.iter().sum::<f64>() / finite.len() as f64
    }
}

/// nnU-Net's EMA of the pseudo Dice: the first value as it is, then `0.9 * ema + 0.1 * value`.
/// A NaN value (no foreground anywhere in the validation batches) leaves the EMA unchanged.
pub fn ema_update(ema: Option<f64>, value: f64) -> Option<f64> {
    if value.is_nan() {
        return ema;
    }
    Some(match ema {
        None => value,
        Some(old) => 0.9 * old + 0.1 * value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_dice_by_hand() {
        let mut dice = PseudoDice::new(4);
        // class 1: TP 2, FP 1, FN 1 -> 4 / 6; class 2: TP 0, FP 0, FN 1 -> 0; class 3 absent -> NaN.
        dice.add(&[1, 1, 1, 0, 0, 0], &[1, 1, 0, 1, 2, 0]);
        assert_eq!(dice.counts(1), (2, 1, 1));
        assert_eq!(dice.counts(2), (0, 0, 1));
        let per_class = dice.per_class();
        assert!((per_class[0] - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(per_class[1], 0.0);
        assert!(per_class[2].is_nan());
        assert!((dice.mean() - 2.0 / 6.0).abs() < 1e-12);
        // A second batch is pooled, not averaged: class 2 becomes TP 1, FN 1 -> 2 / 3.
        dice.add(&[2], &[2]);
        assert!((dice.per_class()[1] - 2.0 / 3.0).abs() < 1e-12);
        assert!(PseudoDice::new(3).mean().is_nan());
    }

    #[test]
    fn unannotated_classes_are_not_counted() {
        // Class 2 is not annotated in this sample: predicting it where the reference says
        // background is no false positive, and class 1 still counts.
        let mut dice = PseudoDice::new(3);
        dice.add_annotated(&[2, 2, 1, 0], &[0, 0, 1, 1], Some(&[true, true, false]));
        assert_eq!(dice.counts(1), (1, 0, 1));
        assert_eq!(dice.counts(2), (0, 0, 0));
        // Annotated, the same voxels are two false positives.
        dice.add_annotated(&[2, 2], &[0, 0], Some(&[true, true, true]));
        assert_eq!(dice.counts(2), (0, 2, 0));
    }

    #[test]
    fn ema_follows_nnunet() {
        let ema = ema_update(None, 0.5);
        assert_eq!(ema, Some(0.5));
        let ema = ema_update(ema, 1.0);
        assert!((ema.unwrap() - 0.55).abs() < 1e-12);
        assert_eq!(ema_update(ema, f64::NAN), ema);
        assert_eq!(ema_update(None, f64::NAN), None);
    }
}
