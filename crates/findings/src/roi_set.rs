//! A set of disc ROIs cut from many images (`spineseg findings rois`), so that training the
//! classifier, which runs many times (folds, seeds, heads), segments each image only once.
//!
//! ```text
//! ROIS/rois.json   the ROI geometry, the segmentation model used, one entry per (image, disc
//!                  level): patient, sequence, image file, level, found or why not, and where
//!                  its pixels are
//! ROIS/rois.f32    the pixels of every found entry, little-endian f32, one block of
//!                  height_px * width_px values per entry (`block` indexes them)
//! ```
//!
//! The pixels are written first and the index last (each atomically), so a folder with a
//! `rois.json` is complete.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{FindingsError, Result};
use crate::roi::RoiSpec;

/// The index file.
pub const ROI_SET_FILE: &str = "rois.json";
/// The pixels file.
pub const ROI_PIXELS_FILE: &str = "rois.f32";

/// One disc level of one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoiEntry {
    pub patient: String,
    /// "t1", "t2", "t2_SPACE", ...
    pub sequence: String,
    /// The image file it was cut from.
    pub image: String,
    /// Ontology id of the disc.
    pub level: u16,
    /// Index of its pixel block, when the disc was found and cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<usize>,
    /// Why there is no ROI (not found by the segmentation, too few pixels, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub angle_deg: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f64>,
}

/// `rois.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoiSetIndex {
    pub roi: RoiSpec,
    /// The segmentation model folder that found the discs.
    pub segmentation_model: String,
    pub entries: Vec<RoiEntry>,
}

/// An ROI set in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct RoiSet {
    pub index: RoiSetIndex,
    /// `blocks x height_px x width_px` values.
    pub pixels: Vec<f32>,
}

impl RoiSet {
    /// An empty set with this geometry.
    pub fn new(roi: RoiSpec, segmentation_model: impl Into<String>) -> Self {
        RoiSet {
            index: RoiSetIndex { roi, segmentation_model: segmentation_model.into(), entries: vec![] },
            pixels: vec![],
        }
    }

    fn block_len(&self) -> usize {
        self.index.roi.width_px * self.index.roi.height_px
    }

    /// Adds an entry; `pixels` (one ROI) when found.
    pub fn push(&mut self, mut entry: RoiEntry, pixels: Option<&[f32]>) {
        entry.block = pixels.map(|p| {
            assert_eq!(p.len(), self.block_len(), "an ROI should have height_px * width_px values");
            self.pixels.extend_from_slice(p);
            self.pixels.len() / self.block_len() - 1
        });
        self.index.entries.push(entry);
    }

    /// The pixels of an entry's block.
    pub fn pixels_of(&self, entry: &RoiEntry) -> Option<&[f32]> {
        let n = self.block_len();
        entry.block.map(|b| &self.pixels[b * n..(b + 1) * n])
    }

    /// Writes `dir/rois.f32` then `dir/rois.json` (creating `dir`).
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| FindingsError::Os { path: dir.to_path_buf(), source })?;
        let bytes: Vec<u8> = self.pixels.iter().flat_map(|v| v.to_le_bytes()).collect();
        let pixels = dir.join(ROI_PIXELS_FILE);
        spineseg_io::atomic::write_atomically(&pixels, |w| w.write_all(&bytes))?;
        Ok(spineseg_io::json::write_json(&dir.join(ROI_SET_FILE), &self.index)?)
    }

    /// Reads a set written by [`RoiSet::write`]; every block reference is checked.
    pub fn read(dir: &Path) -> Result<RoiSet> {
        let index_path = dir.join(ROI_SET_FILE);
        let index: RoiSetIndex = spineseg_io::json::read_json(&index_path)?;
        let pixels_path = dir.join(ROI_PIXELS_FILE);
        let bytes =
            std::fs::read(&pixels_path).map_err(|source| FindingsError::Os { path: pixels_path.clone(), source })?;
        let n = index.roi.width_px * index.roi.height_px;
        if n == 0 || bytes.len() % (4 * n) != 0 {
            return Err(FindingsError::InvalidRoiSet {
                path: pixels_path,
                detail: format!("{} bytes is not a whole number of {n}-pixel ROIs", bytes.len()),
            });
        }
        let blocks = bytes.len() / (4 * n);
        if let Some(bad) = index.entries.iter().find(|e| e.block.is_some_and(|b| b >= blocks)) {
            return Err(FindingsError::InvalidRoiSet {
                path: index_path,
                detail: format!(
                    "entry {} {} level {} points at ROI {} of {blocks}",
                    bad.patient,
                    bad.sequence,
                    bad.level,
                    bad.block.unwrap_or(0)
                ),
            });
        }
        let pixels = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        Ok(RoiSet { index, pixels })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_sets_read_back_and_bad_blocks_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let spec = RoiSpec { width_mm: 10.0, height_mm: 5.0, width_px: 4, height_px: 2 };
        let mut set = RoiSet::new(spec, "models/lumbar-2d");
        let entry = |level: u16| RoiEntry {
            patient: "7".into(),
            sequence: "t2".into(),
            image: "7_t2.nii.gz".into(),
            level,
            block: None,
            missing: None,
            angle_deg: Some(3.0),
            coverage: Some(1.0),
        };
        set.push(entry(123), Some(&[1.0; 8]));
        set.push(RoiEntry { missing: Some("not found".into()), ..entry(122) }, None);
        set.push(entry(124), Some(&[2.0; 8]));
        set.write(dir.path()).unwrap();
        let back = RoiSet::read(dir.path()).unwrap();
        assert_eq!(back, set);
        assert_eq!(back.pixels_of(&back.index.entries[2]), Some(&[2.0f32; 8][..]));
        assert_eq!(back.pixels_of(&back.index.entries[1]), None);
        std::fs::write(dir.path().join(ROI_PIXELS_FILE), [0u8; 32]).unwrap();
        let error = RoiSet::read(dir.path()).unwrap_err().to_string();
        assert!(error.contains(ROI_SET_FILE) && error.contains("points at ROI 1 of 1"), "{error}");
    }
}
