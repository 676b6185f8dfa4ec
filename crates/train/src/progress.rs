//! What a run reports: one [`EpochSummary`] per epoch, the [`TrainingObserver`] callbacks (the
//! CLI draws its progress bar from them), `log.csv` and `progress.png`.

use crate::error::{Result, TrainError};
use serde::{Deserialize, Serialize};
use spineseg_render::overlay::write_png;
use spineseg_render::plot::{render_line_plot, vstack, LinePlot, Series, PALETTE};
use std::path::Path;

/// The numbers of one finished epoch. Values that can be undefined (no foreground in the
/// validation batches) are NaN, stored as `null` in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochSummary {
    /// 1-based.
    pub epoch: usize,
    /// Length of the schedule when the epoch ran.
    pub total_epochs: usize,
    /// Mean training loss over the epoch's iterations.
    pub train_loss: f64,
    /// Mean loss over the validation batches (no augmentation).
    #[serde(with = "nan_as_null")]
    pub val_loss: f64,
    /// Mean over foreground classes of the pooled Dice ([`crate::PseudoDice`]).
    #[serde(with = "nan_as_null")]
    pub pseudo_dice_mean: f64,
    /// EMA of `pseudo_dice_mean` after this epoch.
    #[serde(with = "nan_as_null")]
    pub ema_pseudo_dice: f64,
    /// Pseudo Dice per foreground class (class 1 first).
    #[serde(with = "nan_vec_as_null")]
    pub dice_per_class: Vec<f64>,
    /// Learning rate used in this epoch.
    pub lr: f64,
    /// Wall-clock seconds of the epoch: training, validation and checkpointing.
    pub epoch_time_s: f64,
    /// Training iterations per second (training steps only).
    pub iterations_per_s: f64,
    /// Mean global gradient norm before clipping.
    #[serde(with = "nan_as_null")]
    pub grad_norm: f64,
    /// Whether the EMA improved and `checkpoint_best` was written.
    pub new_best: bool,
    /// Steps not applied because their loss or gradient norm was not finite
    /// (`skip_non_finite_steps`); the means above are over the applied steps.
    #[serde(default)]
    pub skipped_steps: usize,
}

/// Facts about a run, reported once before the first step.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    pub train_cases: usize,
    pub val_cases: usize,
    /// 0 for a new run; the epochs already done when resuming.
    pub start_epoch: usize,
    pub total_epochs: usize,
    pub iterations_per_epoch: usize,
    pub patch_size: Vec<usize>,
    /// What the samplers cut when the network sees more than the patch it predicts
    /// ([`crate::method::TrainingMethod::sampled_patch_size`]); else the patch.
    pub input_patch_size: Vec<usize>,
    pub batch_size: usize,
    pub num_params: usize,
    pub resumed: bool,
}

/// Callbacks of a training run. All methods have empty defaults.
pub trait TrainingObserver {
    /// Once, before the first step.
    fn on_start(&mut self, _info: &RunInfo) {}
    /// After every optimiser step: 1-based epoch and iteration within the epoch, the step's loss
    /// and learning rate.
    fn on_step(&mut self, _epoch: usize, _iteration: usize, _loss: f64, _lr: f64) {}
    /// Validation of the epoch is starting.
    fn on_validation(&mut self, _epoch: usize) {}
    /// After each epoch, once its checkpoint, log and plot are written.
    fn on_epoch(&mut self, _summary: &EpochSummary) {}
    /// Asked after each epoch: return true to stop (the checkpoint is complete, `--resume` goes on).
    fn should_stop(&mut self) -> bool {
        false
    }
}

/// An observer that does nothing.
pub struct Silent;
impl TrainingObserver for Silent {}

/// `log.csv`: one row per epoch. Columns: epoch, train_loss, val_loss, pseudo_dice_mean,
/// ema_pseudo_dice, `dice_<class name>` per foreground class, lr, epoch_time_s,
/// iterations_per_s, grad_norm, skipped_steps. NaN is written as `NaN`.
pub fn write_log_csv(path: &Path, class_names: &[String], history: &[EpochSummary]) -> Result<()> {
    let mut text = String::from("epoch,train_loss,val_loss,pseudo_dice_mean,ema_pseudo_dice");
    for name in class_names {
        let name: String = name.chars().map(|c| if c == ',' || c == '"' || c.is_whitespace() { '_' } else { c }).collect();
        text.push_str(&format!(",dice_{name}"));
    }
    text.push_str(",lr,epoch_time_s,iterations_per_s,grad_norm,skipped_steps\n");
    for s in history {
        text.push_str(&format!(
            "{},{:.6},{:.6},{:.6},{:.6}",
            s.epoch, s.train_loss, s.val_loss, s.pseudo_dice_mean, s.ema_pseudo_dice
        ));
        for c in 0..class_names.len() {
            text.push_str(&format!(",{:.6}", s.dice_per_class.get(c).copied().unwrap_or(f64::NAN)));
        }
        text.push_str(&format!(
            ",{:.6e},{:.3},{:.4},{:.4},{}\n",
            s.lr, s.epoch_time_s, s.iterations_per_s, s.grad_norm, s.skipped_steps
        ));
    }
    spineseg_io::atomic::write_atomically(path, |w| w.write_all(text.as_bytes()))?;
    Ok(())
}

/// `progress.png`: losses, pseudo Dice with its EMA, and the learning rate against the epoch.
pub fn write_progress_png(path: &Path, history: &[EpochSummary]) -> Result<()> {
    let points = |f: &dyn Fn(&EpochSummary) -> f64| history.iter().map(|s| (s.epoch as f64, f(s))).collect::<Vec<_>>();
    let max_epoch = history.iter().map(|s| s.total_epochs.max(s.epoch)).max().unwrap_or(1) as f64;
    let x_range = Some([1.0, max_epoch.max(2.0)]);
    let loss = LinePlot {
        title: "loss".into(),
        x_label: "epoch".into(),
        y_label: "loss".into(),
        series: vec![
            Series { name: "train".into(), colour: PALETTE[0], points: points(&|s| s.train_loss) },
            Series { name: "val".into(), colour: PALETTE[1], points: points(&|s| s.val_loss) },
        ],
        x_range,
        y_range: None,
    };
    let dice = LinePlot {
        title: "pseudo dice (validation)".into(),
        x_label: "epoch".into(),
        y_label: "dice".into(),
        series: vec![
            Series { name: "pseudo dice".into(), colour: PALETTE[2], points: points(&|s| s.pseudo_dice_mean) },
            Series { name: "ema".into(), colour: PALETTE[3], points: points(&|s| s.ema_pseudo_dice) },
        ],
        x_range,
        y_range: Some([0.0, 1.0]),
    };
    let lr = LinePlot {
        title: "learning rate".into(),
        x_label: "epoch".into(),
        y_label: "lr".into(),
        series: vec![Series { name: "lr".into(), colour: PALETTE[4], points: points(&|s| s.lr) }],
        x_range,
        y_range: None,
    };
    let panels: Vec<_> = [(loss, 260), (dice, 260), (lr, 180)].iter().map(|(p, h)| render_line_plot(p, 800, *h).0).collect();
    write_png(path, &vstack(&panels)).map_err(TrainError::from)
}

/// serde for an `f64` that may be NaN: NaN <-> `null`.
pub(crate) mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// serde for a `Vec<f64>` that may hold NaN.
pub(crate) mod nan_vec_as_null {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| x.is_finite().then_some(*x)))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Ok(Vec::<Option<f64>>::deserialize(d)?.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(epoch: usize) -> EpochSummary {
        EpochSummary {
            epoch,
            total_epochs: 4,
            train_loss: 1.0 / epoch as f64,
            val_loss: f64::NAN,
            pseudo_dice_mean: 0.2 * epoch as f64,
            ema_pseudo_dice: 0.1 * epoch as f64,
            dice_per_class: vec![0.5, f64::NAN],
            lr: 0.01,
            epoch_time_s: 1.5,
            iterations_per_s: 2.0,
            grad_norm: 3.0,
            new_best: true,
            skipped_steps: 0,
        }
    }

    #[test]
    fn summaries_round_trip_with_nan() {
        let json = serde_json::to_string(&summary(1)).unwrap();
        assert!(json.contains("\"val_loss\":null"), "{json}");
        let back: EpochSummary = serde_json::from_str(&json).unwrap();
        assert!(back.val_loss.is_nan() && back.dice_per_class[1].is_nan());
        assert_eq!(back.dice_per_class[0], 0.5);
    }

    #[test]
    fn log_and_plot_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let history = vec![summary(1), summary(2)];
        let csv = dir.path().join("log.csv");
        write_log_csv(&csv, &["L1".into(), "L1/L2 disc".into()], &history).unwrap();
        let text = std::fs::read_to_string(&csv).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].contains("dice_L1,dice_L1/L2_disc,lr"), "{}", lines[0]);
        assert_eq!(lines[0].split(',').count(), lines[1].split(',').count());
        let png = dir.path().join("progress.png");
        write_progress_png(&png, &history).unwrap();
        assert_eq!(&std::fs::read(&png).unwrap()[..4], b"\x89PNG");
    }
}
