//! `spineseg phantom`: a synthetic lumbar MRI dataset in nnU-Net raw layout.

use crate::values::ContrastArg;
use crate::Outcome;
use anyhow::{bail, Context, Result};
use spineseg_phantom::{write_nnunet_dataset, PhantomConfig};
use std::path::PathBuf;

/// Generate synthetic sagittal lumbar MRI cases (vertebral bodies with cortical rim, discs,
/// spinal canal with CSF, posterior elements, lordosis, 4-9 levels in view, anisotropic spacing,
/// T1- or T2-like contrast, bias field, Rician noise) with labels in the spineseg ontology,
/// written as an nnU-Net raw dataset (imagesTr, labelsTr, dataset.json).
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
    /// Small, coarse volumes (about 100-160 px in plane) for quick tests and demos.
    #[arg(long)]
    pub small: bool,
    /// Fix the contrast (T1 or T2) instead of drawing it per case.
    #[arg(long, value_enum, ignore_case = true)]
    pub contrast: Option<ContrastArg>,
    /// Generator settings from a JSON file (fields of the phantom config; others keep defaults).
    #[arg(long, conflicts_with = "small")]
    pub config: Option<PathBuf>,
    /// Replace the phantom files of an existing dataset in OUT.
    #[arg(long)]
    pub overwrite: bool,
}

pub fn run(args: PhantomArgs) -> Result<Outcome> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("{}: invalid phantom config", path.display()))?
        }
        None if args.small => PhantomConfig::small(),
        None => PhantomConfig::default(),
    };
    if let Some(contrast) = args.contrast {
        config.contrast = Some(contrast.into());
    }
    if args.cases == 0 {
        bail!("--cases must be at least 1");
    }
    let summary = write_nnunet_dataset(&args.out, &config, args.cases, args.seed, args.overwrite)?;
    for case in &summary.cases {
        let [sx, sy, sz] = case.spacing_mm;
        let [nx, ny, nz] = case.shape;
        println!(
            "{}  {:?}  {nx}x{ny}x{nz} at {sx:.2}x{sy:.2}x{sz:.2} mm  levels {}",
            case.id,
            case.contrast,
            case.levels.join(" ")
        );
    }
    println!("wrote {} cases to {}", summary.cases.len(), summary.root.display());
    Ok(Outcome::Success)
}
