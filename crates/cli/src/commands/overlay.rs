//! `spineseg overlay`: a PNG of a slice with a label overlay.

use crate::Outcome;
use anyhow::{bail, Result};
use spineseg_render::overlay::{render_overlay, write_png, OverlayOptions};
use spineseg_io::{read_image, read_labels};
use std::path::PathBuf;

/// Render a slice of an image (default: the mid-sagittal slice) in anatomical orientation
/// (superior up, anterior left), with an optional coloured label overlay, names and legend.
#[derive(clap::Args)]
pub struct OverlayArgs {
    /// Intensity image.
    pub image: PathBuf,
    /// Label volume on the same grid (values are spineseg ontology ids).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Output PNG.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Voxel axis to slice across (default: the one closest to left-right, i.e. sagittal).
    #[arg(long)]
    pub axis: Option<usize>,
    /// Slice index along the axis (default: the middle).
    #[arg(long)]
    pub slice: Option<usize>,
    /// Leave out structure names and the legend.
    #[arg(long)]
    pub plain: bool,
}

pub fn run(args: OverlayArgs) -> Result<Outcome> {
    let image = read_image(&args.image)?;
    let labels = args.labels.as_deref().map(read_labels).transpose()?;
    if let (Some(labels), Some(path)) = (&labels, &args.labels) {
        if labels.shape() != image.shape() || !labels.geometry.agrees_with(&image.geometry, image.shape(), 1e-3) {
            bail!("{} and {}: label and image grids differ", path.display(), args.image.display());
        }
    }
    let options = OverlayOptions {
        axis: args.axis,
        slice: args.slice,
        names: !args.plain,
        legend: !args.plain,
        ..OverlayOptions::default()
    };
    let png = render_overlay(&image, labels.as_ref(), &options)?;
    write_png(&args.out, &png)?;
    eprintln!("wrote {}", args.out.display());
    Ok(Outcome::Success)
}
