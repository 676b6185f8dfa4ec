//! `spineseg phantom`: a synthetic lumbar MRI dataset in nnU-Net raw layout.

use crate::Outcome;
use anyhow::Result;
use std::path::PathBuf;

/// Generate synthetic sagittal lumbar MRI cases with labels in the spineseg ontology.
#[derive(clap::Args)]
pub struct PhantomArgs {
    /// Output dataset folder (nnU-Net raw layout).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of cases.
    #[arg(long, default_value_t = 4)]
    pub cases: usize,
    /// Random seed; the same seed gives identical files.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: PhantomArgs) -> Result<Outcome> {
    anyhow::bail!("{}: phantom not wired yet ({} cases, seed {})", args.out.display(), args.cases, args.seed)
}
