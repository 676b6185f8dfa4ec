//! spineseg-io: medical volumes with exact geometry.
//!
//! - [`geometry`]: spacing, origin, direction; voxel <-> RAS+ world mm; orientation codes.
//! - [`volume`]: [`Volume<T>`] (typed) and [`AnyVolume`] (as stored, any data type).
//! - [`nifti`]: NIfTI-1 `.nii` / `.nii.gz`, interpreted as nibabel does.
//! - [`metaimage`]: MetaImage `.mha` / `.mhd` (+ `.raw` / `.zraw`), LPS on disk.
//! - [`reorient`]: to the canonical orientation (RAS) and back, exact (axis permutations and flips).
//!
//! Every write goes through [`atomic`], so a failed write leaves no output file.

pub mod atomic;
pub mod error;
pub mod geometry;
pub mod json;
pub mod limits;
pub mod metaimage;
pub mod nifti;
pub mod reorient;
pub mod volume;

pub use error::{IoError, Result};
pub use geometry::{Geometry, Spacing};
pub use volume::{AnyVolume, DataType, Label, Volume, VoxelData};

/// What every reader says about a DICOM file (`DICM` at byte 128, or a `.dcm` name): spineseg
/// reads volumes, not DICOM series, and the user needs the way out, not only the refusal.
pub(crate) const DICOM_ADVICE: &str =
    "spineseg reads NIfTI and MetaImage volumes, not DICOM; convert the series first (e.g. with dcm2niix)";

/// Whether `bytes` start like a DICOM Part 10 file: a 128-byte preamble, then `DICM`.
pub(crate) fn looks_like_dicom(bytes: &[u8]) -> bool {
    bytes.get(128..132) == Some(b"DICM")
}

use std::path::Path;

/// File formats spineseg reads and writes, chosen by file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// `.nii`
    Nifti,
    /// `.nii.gz`
    NiftiGz,
    /// `.mha`: header and data in one file.
    Mha,
    /// `.mhd`: header, with the data in a separate file named by `ElementDataFile`.
    Mhd,
}

impl ImageFormat {
    pub fn from_path(path: &Path) -> Result<Self> {
        let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
        if name.ends_with(".nii.gz") {
            Ok(ImageFormat::NiftiGz)
        } else if name.ends_with(".nii") {
            Ok(ImageFormat::Nifti)
        } else if name.ends_with(".mha") {
            Ok(ImageFormat::Mha)
        } else if name.ends_with(".mhd") {
            Ok(ImageFormat::Mhd)
        } else if name.ends_with(".dcm") || name.ends_with(".dicom") {
            Err(IoError::Unsupported { path: path.to_path_buf(), detail: format!("a DICOM file: {DICOM_ADVICE}") })
        } else {
            Err(IoError::UnknownFormat { path: path.to_path_buf() })
        }
    }
    /// The file-name ending including the dot, e.g. `".nii.gz"`.
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Nifti => ".nii",
            ImageFormat::NiftiGz => ".nii.gz",
            ImageFormat::Mha => ".mha",
            ImageFormat::Mhd => ".mhd",
        }
    }
    /// `path` without this format's extension (`case_0000.nii.gz` -> `case_0000`).
    pub fn strip_extension(path: &Path) -> Option<String> {
        let name = path.file_name()?.to_string_lossy().into_owned();
        let format = ImageFormat::from_path(path).ok()?;
        Some(name[..name.len() - format.extension().len()].to_string())
    }
}

/// Reads any supported file, keeping its stored data type.
pub fn read_volume(path: &Path) -> Result<AnyVolume> {
    read_volume_with_limit(path, limits::max_volume_bytes())
}

/// [`read_volume`] with an explicit limit on the voxel data a header may announce (bytes),
/// instead of the process-wide [`limits::max_volume_bytes`].
pub fn read_volume_with_limit(path: &Path, max_bytes: u64) -> Result<AnyVolume> {
    match ImageFormat::from_path(path)? {
        ImageFormat::Nifti | ImageFormat::NiftiGz => nifti::read_with_limit(path, max_bytes),
        ImageFormat::Mha | ImageFormat::Mhd => metaimage::read_with_limit(path, max_bytes),
    }
}

/// Writes any supported file (format from the name), atomically.
pub fn write_volume(path: &Path, volume: &AnyVolume) -> Result<()> {
    match ImageFormat::from_path(path)? {
        ImageFormat::Nifti | ImageFormat::NiftiGz => nifti::write(path, volume),
        ImageFormat::Mha | ImageFormat::Mhd => metaimage::write(path, volume),
    }
}

/// Reads an intensity image as `f32` (NIfTI scaling applied).
pub fn read_image(path: &Path) -> Result<Volume<f32>> {
    Ok(read_volume(path)?.to_f32())
}

/// Reads a label mask; fails on values that are not non-negative integers.
pub fn read_labels(path: &Path) -> Result<Volume<Label>> {
    read_volume(path)?.to_labels(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_name() {
        assert_eq!(ImageFormat::from_path(Path::new("a/B_0000.NII.GZ")).unwrap(), ImageFormat::NiftiGz);
        assert_eq!(ImageFormat::from_path(Path::new("x.mhd")).unwrap(), ImageFormat::Mhd);
        assert!(ImageFormat::from_path(Path::new("x.nrrd")).is_err());
        assert_eq!(ImageFormat::strip_extension(Path::new("d/case_0000.nii.gz")).unwrap(), "case_0000");
    }
}
