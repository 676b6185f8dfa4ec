//! `spineseg overlay`: a PNG of a slice with a label overlay.

use crate::label_meaning::LabelMeaning;
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
    /// Label volume on the same grid. Its values are named from `--labels-json`, else its
    /// `<stem>.labels.json` (written by `predict`), else the dataset.json of the nnU-Net folder it
    /// is in, else read as spineseg ontology ids (the log says which).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// What the label values mean: a labels.json (from `predict` or a model folder) or a
    /// dataset.json.
    #[arg(long, requires = "labels")]
    pub labels_json: Option<PathBuf>,
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
    let labels = match (labels, &args.labels) {
        (Some(labels), Some(path)) => {
            if labels.shape() != image.shape() || !labels.geometry.agrees_with(&image.geometry, image.shape(), 1e-3) {
                bail!("{} and {}: label and image grids differ", path.display(), args.image.display());
            }
            // The renderer colours and names ontology ids: translate the file's own values.
            let meaning = LabelMeaning::for_mask(path, args.labels_json.as_deref())?;
            eprintln!("{}", meaning.describe());
            Some(meaning.to_ontology(&labels))
        }
        _ => None,
    };
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
