//! `spineseg convert IN OUT`: any supported format to any other, optionally reoriented.

use crate::values::DataTypeArg;
use crate::Outcome;
use anyhow::Result;
use spineseg_io::reorient::Reorientation;
use spineseg_io::{read_volume, write_volume, DataType, ImageFormat};
use std::path::PathBuf;

/// Convert between NIfTI (.nii, .nii.gz) and MetaImage (.mha, .mhd); every voxel keeps its
/// physical position (MetaImage's LPS and NIfTI's RAS are converted exactly).
#[derive(clap::Args)]
pub struct ConvertArgs {
    /// Input file (.nii, .nii.gz, .mha, .mhd).
    pub input: PathBuf,
    /// Output file; its extension chooses the format.
    pub output: PathBuf,
    /// Reorient by axis permutation/flips (exact, no resampling) to an orientation code; without
    /// a value, to the canonical RAS.
    #[arg(long, value_name = "CODE", num_args = 0..=1, default_missing_value = "RAS")]
    pub reorient: Option<String>,
    /// Store the voxels as this data type (uint8, int8, uint16, int16, uint32, int32, float32,
    /// float64); refused when a value would not fit.
    #[arg(long, value_enum, value_name = "TYPE")]
    pub dtype: Option<DataTypeArg>,
}

pub fn run(args: ConvertArgs) -> Result<Outcome> {
    // Check the output name before reading, so a typo fails fast.
    ImageFormat::from_path(&args.output)?;
    let mut volume = read_volume(&args.input)?;
    if let Some(code) = &args.reorient {
        let r = Reorientation::to_code(&volume.geometry, volume.shape, code)?;
        volume = r.apply_any(&volume);
    }
    if let Some(dtype) = args.dtype {
        let target = DataType::from(dtype);
        volume.data = volume.data.cast(target).map_err(|bad| {
            anyhow::anyhow!("{}: value {bad} does not fit in {target}", args.input.display())
        })?;
    }
    write_volume(&args.output, &volume)?;
    eprintln!(
        "wrote {} ({} x {} x {}, {}, {})",
        args.output.display(),
        volume.shape[0],
        volume.shape[1],
        volume.shape[2],
        volume.data_type(),
        volume.geometry.orientation_code()
    );
    Ok(Outcome::Success)
}
