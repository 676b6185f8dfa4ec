//! Progress rendering shared by commands (indicatif bars on stderr), so no command imports
//! another.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use spineseg_planning::pipeline::PlanStep;
use spineseg_infer::workflow::{PredictJob, PredictObserver, WorkflowError};
use spineseg_infer::LevelAssignment;
use std::sync::Arc;

/// Progress bars of a prediction run: cases (with more than one) and windows of the current
/// case, drawn on stderr when it is a terminal; a line per written case,
/// and per failed case when there are several (a single case's error is the command's error,
/// reported once by main).
pub struct PredictionBars {
    multi: MultiProgress,
    cases: Option<ProgressBar>,
    windows: ProgressBar,
    several: bool,
}

impl PredictionBars {
    /// Bars for `jobs` cases.
    pub fn new(jobs: usize) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let cases = (jobs > 1).then(|| {
            let bar = multi.add(ProgressBar::new(jobs as u64));
            bar.set_style(
                ProgressStyle::with_template("cases   {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}")
                    .expect("the progress template should be valid"),
            );
            bar
        });
        let windows = multi.add(ProgressBar::new(0));
        windows.set_style(
            ProgressStyle::with_template("windows {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}")
                .expect("the progress template should be valid"),
        );
        PredictionBars { multi, cases, windows, several: jobs > 1 }
    }

    /// The sliding window's progress callback, moving the windows bar.
    pub fn window_callback(&self) -> spineseg_infer::ProgressCallback {
        let bar = self.windows.clone();
        Arc::new(move |p: spineseg_infer::Progress| {
            bar.set_length(p.windows_total as u64);
            bar.set_position(p.windows_done as u64);
        })
    }

    /// Clears the bars.
    pub fn finish(&self) {
        self.windows.finish_and_clear();
        if let Some(bar) = &self.cases {
            bar.finish_and_clear();
        }
    }
}

impl PredictObserver for PredictionBars {
    fn on_levels(&mut self, job: &PredictJob, levels: &LevelAssignment) {
        self.multi.suspend(|| eprintln!("{}: {}", job.id, levels.summary()));
    }

    fn on_case_start(&mut self, job: &PredictJob) {
        self.windows.reset();
        self.windows.set_message(job.id.clone());
    }

    fn on_case_end(&mut self, job: &PredictJob, result: Result<f64, &WorkflowError>) {
        match result {
            Ok(seconds) => self.multi.suspend(|| eprintln!("{}: wrote {} ({seconds:.1} s)", job.id, job.output.display())),
            Err(error) if self.several => self.multi.suspend(|| eprintln!("error: {}: {}", job.id, error_chain(error))),
            Err(_) => {}
        }
        if let Some(bar) = &self.cases {
            bar.inc(1);
        }
    }
}

/// An error and its causes, `outer: inner: ...` (what anyhow's `{:#}` prints), leaving out a
/// cause the message already ends with: `IoError::Os` shows its OS error and also returns it as
/// its source, which would otherwise read "File too large (os error 27): File too large (os
/// error 27)".
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// One line (one per configuration for the plan) on stderr per finished step of
/// `plan_and_preprocess`.
pub fn print_plan_step(step: PlanStep<'_>) {
    match step {
        PlanStep::DatasetOpened { name, kind, training_cases, excluded } => eprintln!(
            "planning {name} ({kind}): {training_cases} training cases{}",
            if excluded > 0 { format!(", {excluded} excluded") } else { String::new() }
        ),
        PlanStep::Fingerprinted { cases, seconds } => eprintln!("fingerprint: {cases} cases in {seconds:.1} s"),
        PlanStep::Planned { plan } => {
            for (name, config) in &plan.configurations {
                eprintln!(
                    "{}: spacing {:?} mm, patch {:?}, batch {}, {} stages, features {:?}",
                    name.as_str(),
                    config.spacing_mm,
                    config.patch_size,
                    config.batch_size,
                    config.network.n_stages,
                    config.network.features_per_stage
                );
            }
        }
        PlanStep::Preprocessed { configuration, cases, seconds, dir } => eprintln!(
            "preprocessed {cases} cases for {} in {seconds:.1} s -> {}",
            configuration.as_str(),
            dir.display()
        ),
    }
}
