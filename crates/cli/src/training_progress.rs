//! The training progress shared by `train` and `pretrain` (a bar per epoch, a line per epoch)
//! and the thread-count setting, so neither command imports the other.

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use spineseg_train::{EpochSummary, RunInfo, StopReason, TrainingObserver};

/// `--threads`: flex (burn's CPU backend) runs its kernels on rayon's global pool; `None`
/// keeps rayon's default (all cores).
pub(crate) fn set_compute_threads(threads: Option<usize>) -> Result<()> {
    match threads {
        None => Ok(()),
        Some(0) => bail!("--threads must be at least 1"),
        Some(threads) => {
            rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().context("cannot set the number of threads")
        }
    }
}

/// Why a run stopped, as the closing line says it.
pub(crate) fn stop_reason_text(reason: StopReason) -> &'static str {
    match reason {
        StopReason::Finished => "finished",
        StopReason::TimeBudget => "stopped by the time budget",
        StopReason::Interrupted => "stopped early (continue with --resume)",
    }
}

/// Progress bar per epoch with loss and it/s, and one printed line per epoch.
pub(crate) struct CliObserver {
    quiet: bool,
    bar: Option<ProgressBar>,
    iterations: usize,
    total_epochs: usize,
    loss_ema: Option<f64>,
}

impl CliObserver {
    pub(crate) fn new(quiet: bool) -> Self {
        CliObserver { quiet, bar: None, iterations: 0, total_epochs: 0, loss_ema: None }
    }
    pub(crate) fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl TrainingObserver for CliObserver {
    fn on_start(&mut self, info: &RunInfo) {
        self.iterations = info.iterations_per_epoch;
        self.total_epochs = info.total_epochs;
        eprintln!(
            "training on {} cases, validating on {}; patch {:?}{}, batch {}, {:.2} M parameters; {} epochs x {} iterations{}",
            info.train_cases,
            info.val_cases,
            info.patch_size,
            if info.input_patch_size != info.patch_size {
                format!(" (inputs {:?}: context around it)", info.input_patch_size)
            } else {
                String::new()
            },
            info.batch_size,
            info.num_params as f64 / 1e6,
            info.total_epochs,
            info.iterations_per_epoch,
            if info.resumed { format!(", resuming after epoch {}", info.start_epoch) } else { String::new() }
        );
    }

    fn on_step(&mut self, epoch: usize, iteration: usize, loss: f64, lr: f64) {
        if self.quiet {
            return;
        }
        if iteration == 1 {
            self.finish();
            let bar = ProgressBar::new(self.iterations as u64);
            bar.set_style(
                ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({per_sec}, eta {eta})")
                    .expect("the progress template should be valid")
                    .progress_chars("=> "),
            );
            bar.set_prefix(format!("{epoch}/{}", self.total_epochs));
            self.bar = Some(bar);
        }
        let smooth = match self.loss_ema {
            None => loss,
            Some(old) => 0.9 * old + 0.1 * loss,
        };
        self.loss_ema = Some(smooth);
        if let Some(bar) = &self.bar {
            bar.set_message(format!("loss {smooth:.4} lr {lr:.2e}"));
            bar.inc(1);
        }
    }

    fn on_validation(&mut self, _epoch: usize) {
        if let Some(bar) = &self.bar {
            bar.set_message("validating".to_string());
        }
    }

    fn on_epoch(&mut self, s: &EpochSummary) {
        self.finish();
        self.total_epochs = s.total_epochs;
        let fmt = |v: f64| if v.is_nan() { "n/a".to_string() } else { format!("{v:.4}") };
        eprintln!(
            "epoch {}/{}: train loss {:.4}, val loss {}, pseudo-Dice {}, EMA {}{}, lr {:.2e}, {:.1} s ({:.2} it/s){}",
            s.epoch,
            s.total_epochs,
            s.train_loss,
            fmt(s.val_loss),
            fmt(s.pseudo_dice_mean),
            fmt(s.ema_pseudo_dice),
            if s.new_best { " (best)" } else { "" },
            s.lr,
            s.epoch_time_s,
            s.iterations_per_s,
            if s.skipped_steps > 0 { format!(", {} non-finite step(s) skipped", s.skipped_steps) } else { String::new() }
        );
    }
}
