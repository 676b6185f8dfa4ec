//! The `spineseg` binary: argument parsing, progress and exit codes. All real work happens in
//! the library crates; each subcommand lives in `commands/`.
//!
//! Exit codes: 0 success; 1 an error (bad input, failed write) or problems found by a check;
//! 2 invalid command-line usage (clap).

mod commands;
mod label_meaning;
mod progress;
mod text_encoder;
mod training_progress;
mod values;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Lumbar spine MRI segmentation: medical volume I/O, datasets, phantoms and evaluation.
#[derive(Parser)]
#[command(name = "spineseg", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Largest volume a file header may announce, in GiB of voxel data (default 2, or
    /// $SPINESEG_MAX_VOLUME_GIB): a larger one is refused before it is read, so a broken or
    /// hostile header cannot exhaust memory.
    #[arg(long, global = true, value_name = "GIB")]
    max_volume_gib: Option<f64>,
}

/// The volume-size limit from `--max-volume-gib` or `$SPINESEG_MAX_VOLUME_GIB` (the flag wins).
fn set_volume_limit(flag: Option<f64>) -> anyhow::Result<()> {
    let (gib, source) = match flag {
        Some(gib) => (gib, "--max-volume-gib"),
        None => match std::env::var("SPINESEG_MAX_VOLUME_GIB") {
            Ok(text) => (
                text.trim().parse::<f64>().map_err(|_| anyhow::anyhow!("SPINESEG_MAX_VOLUME_GIB={text:?} is not a number"))?,
                "SPINESEG_MAX_VOLUME_GIB",
            ),
            Err(_) => return Ok(()),
        },
    };
    if !(gib.is_finite() && gib > 0.0) {
        anyhow::bail!("{source} {gib} must be a positive number of GiB");
    }
    spineseg_io::limits::set_max_volume_bytes((gib * (1u64 << 30) as f64).min(u64::MAX as f64) as u64);
    Ok(())
}

#[derive(Subcommand)]
enum Command {
    Info(commands::info::InfoArgs),
    Convert(commands::convert::ConvertArgs),
    /// Check, merge and inspect datasets (nnU-Net raw, SPIDER, MRSpineSeg, SPINEPS).
    #[command(subcommand)]
    Dataset(commands::dataset::DatasetCommand),
    Phantom(commands::phantom::PhantomArgs),
    Overlay(commands::overlay::OverlayArgs),
    Evaluate(commands::evaluate::EvaluateArgs),
    EvaluateFindings(commands::evaluate_findings::EvaluateFindingsArgs),
    Plan(commands::plan::PlanArgs),
    Train(Box<commands::train::TrainArgs>),
    Pretrain(commands::pretrain::PretrainArgs),
    Predict(commands::predict::PredictArgs),
    Report(commands::report::ReportArgs),
    Diagnose(commands::diagnose::DiagnoseArgs),
    /// Build and train the disc-findings classifier (five lumbar abnormalities and the Pfirrmann
    /// grade per disc level) from graded patients.
    #[command(subcommand)]
    Findings(commands::findings::FindingsCommand),
    Demo(commands::demo::DemoArgs),
    /// Text prompts and their embeddings (the text encoder of text-guided models).
    #[command(subcommand)]
    Text(commands::text::TextCommand),
    /// Work on a trained model folder (weights precision).
    #[command(subcommand)]
    Model(commands::model::ModelCommand),
}

/// What a command reports back: success, or "ran fine but found problems" (exit code 1).
pub enum Outcome {
    Success,
    ProblemsFound,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = set_volume_limit(cli.max_volume_gib) {
        eprintln!("error: {error:#}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Info(args) => commands::info::run(args),
        Command::Convert(args) => commands::convert::run(args),
        Command::Dataset(command) => commands::dataset::run(command),
        Command::Phantom(args) => commands::phantom::run(args),
        Command::Overlay(args) => commands::overlay::run(args),
        Command::Evaluate(args) => commands::evaluate::run(args),
        Command::EvaluateFindings(args) => commands::evaluate_findings::run(args),
        Command::Plan(args) => commands::plan::run(args),
        Command::Train(args) => commands::train::run(*args),
        Command::Pretrain(args) => commands::pretrain::run(args),
        Command::Predict(args) => commands::predict::run(args),
        Command::Report(args) => commands::report::run(args),
        Command::Diagnose(args) => commands::diagnose::run(args),
        Command::Findings(command) => commands::findings::run(command),
        Command::Demo(args) => commands::demo::run(args),
        Command::Text(command) => commands::text::run(command),
        Command::Model(command) => commands::model::run(command),
    };
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::ProblemsFound) => ExitCode::from(1),
        Err(error) => {
            eprintln!("error: {}", progress::error_chain(error.as_ref()));
            ExitCode::from(1)
        }
    }
}
