//! Hand-made fingerprints for planner tests (this crate's and the preprocessing round trips),
//! without volumes. Enabled by the `test-support` feature.

use crate::fingerprint::{CaseFingerprint, Fingerprint, FINGERPRINT_FORMAT_VERSION};
use spineseg_io::Label;
use std::collections::BTreeMap;

/// A canonical ("RAS") case of `shape` voxels at `spacing_mm`, not cropped (relative size 1),
/// holding `labels_present`, with 1 foreground voxel and no intensity statistics (one channel).
pub fn case_fingerprint(
    id: &str,
    spacing_mm: [f64; 3],
    shape: [usize; 3],
    labels_present: Vec<Label>,
) -> CaseFingerprint {
    CaseFingerprint {
        id: id.into(),
        original_orientation: "RAS".into(),
        spacing_mm,
        shape,
        crop_start: [0; 3],
        crop_end: shape,
        shape_after_crop: shape,
        relative_size_after_cropping: 1.0,
        labels_present,
        foreground_voxels: 1,
        foreground_intensities: vec![None],
    }
}

/// A one-channel ("T2") fingerprint of `cases` without declared label names or intensity
/// statistics, median relative size after cropping 1, 1 sample per case.
pub fn fingerprint(dataset_name: &str, cases: Vec<CaseFingerprint>) -> Fingerprint {
    Fingerprint {
        format_version: FINGERPRINT_FORMAT_VERSION,
        dataset_name: dataset_name.into(),
        channel_names: vec!["T2".into()],
        label_names: BTreeMap::new(),
        cases,
        foreground_intensity_properties_per_channel: vec![None],
        median_relative_size_after_cropping: 1.0,
        samples_per_case: 1,
    }
}
