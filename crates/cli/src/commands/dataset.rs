//! `spineseg dataset ...`: dataset-level commands.

use crate::Outcome;
use anyhow::Result;
use spineseg_datasets::check::{check_loaded, CheckOptions};
use spineseg_datasets::detect_and_open;
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum DatasetCommand {
    /// Check a dataset folder: image/label pairs found, shapes and geometry of image vs label
    /// agree, every label value known. Prints a report; exit code 1 when problems are found.
    Check(CheckArgs),
}

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Dataset root (nnU-Net raw, SPIDER, MRSpineSeg or SPINEPS layout), or an nnU-Net
    /// dataset.json.
    pub dir: PathBuf,
    /// Largest allowed distance in mm between the same voxel's positions in image and label.
    #[arg(long, default_value_t = 1e-3)]
    pub tolerance_mm: f64,
    /// Cases read in parallel (each holds its volumes in memory).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(command: DatasetCommand) -> Result<Outcome> {
    match command {
        DatasetCommand::Check(args) => check(args),
    }
}

fn check(args: CheckArgs) -> Result<Outcome> {
    let dataset = detect_and_open(&args.dir)?;
    let mut options = CheckOptions { tolerance_mm: args.tolerance_mm, ..CheckOptions::default() };
    if let Some(threads) = args.threads {
        options.threads = threads.max(1);
    }
    eprintln!("checking {} cases of {} ({})...", dataset.cases.len(), dataset.name, dataset.kind);
    let report = check_loaded(&dataset, &options);
    println!("{report}");
    Ok(if report.is_ok() { Outcome::Success } else { Outcome::ProblemsFound })
}
