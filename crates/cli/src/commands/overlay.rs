//! `spineseg overlay`: a PNG of a slice with a label overlay.

use crate::Outcome;
use anyhow::Result;
use std::path::PathBuf;

/// Render a slice of an image (default: mid-sagittal) with an optional label overlay to PNG.
#[derive(clap::Args)]
pub struct OverlayArgs {
    /// Intensity image.
    pub image: PathBuf,
    /// Label volume on the same grid.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Output PNG.
    #[arg(long, short)]
    pub out: PathBuf,
}

pub fn run(args: OverlayArgs) -> Result<Outcome> {
    anyhow::bail!("{}: overlay not wired yet ({:?} -> {})", args.image.display(), args.labels, args.out.display())
}
