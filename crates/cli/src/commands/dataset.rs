//! `spineseg dataset ...`: dataset-level commands.

use crate::Outcome;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum DatasetCommand {
    /// Check a dataset folder: image/label pairs, shapes and geometry agree, label values known.
    Check {
        /// Dataset root (nnU-Net raw, SPIDER, MRSpineSeg or SPINEPS layout).
        dir: PathBuf,
    },
}

pub fn run(command: DatasetCommand) -> Result<Outcome> {
    match command {
        DatasetCommand::Check { dir } => anyhow::bail!("{}: dataset check not wired yet", dir.display()),
    }
}
