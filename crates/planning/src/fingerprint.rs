//! The dataset fingerprint (nnU-Net v2's `DatasetFingerprintExtractor`): what planning needs to
//! know about every training case, written to `fingerprint.json`.
//!
//! Per case, after reorientation to canonical RAS (the orientation the whole pipeline works in):
//! spacing, shape, the bounding box of the body (nnU-Net's `crop_to_nonzero`: voxels where any
//! channel is non-zero) and the shape after cropping to it, the label values present, and
//! foreground intensity statistics per channel over the voxels with a label > 0 (mean, median,
//! min, max, percentiles 0.5 and 99.5, exact over all foreground voxels of the case).
//!
//! For the dataset: intensity statistics over a sample of foreground voxels of every case
//! (with replacement, seeded, [`FingerprintOptions::samples_per_case`]; nnU-Net v1 used 10,000
//! per case, v2 uses 10^8 / number of cases, we default to 10,000 so memory stays bounded), and
//! the median relative size after cropping (decides `use_mask_for_norm`).
//!
//! Cases are analysed in parallel on a pool of [`FingerprintOptions::threads`] threads; each
//! thread holds one case at a time and keeps only its summary and samples.

use crate::error::{PlanningError, Result};
use spineseg_preprocessing::crop::{nonzero_bounding_box, CaseVolumes};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use spineseg_io::json::{read_json, write_json};
use spineseg_io::reorient::Reorientation;
use spineseg_io::Label;
use std::collections::BTreeMap;
use std::path::Path;

/// The fingerprint's file name in a preprocessed dataset folder.
pub const FINGERPRINT_FILE: &str = "fingerprint.json";

/// Version of the `fingerprint.json` layout.
pub const FINGERPRINT_FORMAT_VERSION: u32 = 1;

pub use spineseg_preprocessing::stats::{median_sorted, percentile_sorted, percentile_sorted_f64, IntensityStats};

/// What the fingerprint knows about one case. Shapes, spacings and boxes are in canonical RAS
/// voxel axes (`i` = left-right, `j` = posterior-anterior, `k` = inferior-superior).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseFingerprint {
    pub id: String,
    /// Orientation code of the file as stored (e.g. `"IPR"` or `"PIR"` for sagittal scans).
    pub original_orientation: String,
    pub spacing_mm: [f64; 3],
    pub shape: [usize; 3],
    /// Bounding box of the non-zero region, half-open `[start, end)` per axis.
    pub crop_start: [usize; 3],
    pub crop_end: [usize; 3],
    pub shape_after_crop: [usize; 3],
    /// `prod(shape_after_crop) / prod(shape)`.
    pub relative_size_after_cropping: f64,
    /// Label values with at least one voxel, background included (empty without labels).
    pub labels_present: Vec<Label>,
    /// Voxels with a label > 0.
    pub foreground_voxels: u64,
    /// Per channel; `None` when the case has no foreground (nnU-Net writes NaN).
    pub foreground_intensities: Vec<Option<IntensityStats>>,
}

/// The dataset fingerprint, `fingerprint.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub format_version: u32,
    pub dataset_name: String,
    /// Channel names in channel order (e.g. `["T2"]`); normalisation is chosen by name.
    pub channel_names: Vec<String>,
    /// Declared label values and their names (background may be absent).
    pub label_names: BTreeMap<Label, String>,
    pub cases: Vec<CaseFingerprint>,
    /// Statistics of the pooled foreground samples of all cases, per channel (`None` when no
    /// case has foreground).
    pub foreground_intensity_properties_per_channel: Vec<Option<IntensityStats>>,
    pub median_relative_size_after_cropping: f64,
    pub samples_per_case: usize,
}

/// Options of [`compute_fingerprint`].
#[derive(Debug, Clone)]
pub struct FingerprintOptions {
    /// Foreground voxels sampled (with replacement) per case and channel for the dataset-level
    /// statistics. Default 10,000 (nnU-Net v1).
    pub samples_per_case: usize,
    /// Seed of the sampling (each case draws from `seed` mixed with its index).
    pub seed: u64,
    /// Cases analysed at the same time (each holds its volumes). Default: cores, at most 4.
    pub threads: usize,
}

impl Default for FingerprintOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        FingerprintOptions { samples_per_case: 10_000, seed: 1234, threads: cores.clamp(1, 4) }
    }
}

/// Analyses one case: its fingerprint and its foreground samples per channel.
pub fn fingerprint_case(case: &CaseVolumes, samples_per_case: usize, seed: u64) -> Result<(CaseFingerprint, Vec<Vec<f32>>)> {
    case.check()?;
    let first = &case.images[0];
    let reorientation = Reorientation::to_canonical(&first.geometry, first.shape());
    let images: Vec<_> = case.images.iter().map(|v| reorientation.apply(v)).collect();
    let labels = case.labels.as_ref().map(|l| reorientation.apply(l));
    let shape = images[0].shape();
    let bbox = nonzero_bounding_box(&images);
    let shape_after_crop = bbox.shape();
    let relative = shape_after_crop.iter().product::<usize>() as f64 / shape.iter().product::<usize>() as f64;

    let mut labels_present = Vec::new();
    let mut foreground: Vec<usize> = Vec::new();
    if let Some(labels) = &labels {
        let mut seen = vec![false; Label::MAX as usize + 1];
        // Foreground is counted inside the crop, as nnU-Net does on the cropped arrays.
        for k in bbox.start[2]..bbox.end[2] {
            for j in bbox.start[1]..bbox.end[1] {
                for i in bbox.start[0]..bbox.end[0] {
                    let idx = labels.index([i, j, k]);
                    let v = labels.data()[idx];
                    if v > 0 {
                        foreground.push(idx);
                    }
                }
            }
        }
        for v in labels.data() {
            seen[*v as usize] = true;
        }
        labels_present = (0..=Label::MAX).filter(|v| seen[*v as usize]).collect();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut stats = Vec::new();
    let mut samples = Vec::new();
    for image in &images {
        let mut values: Vec<f32> = foreground.iter().map(|&idx| image.data()[idx]).collect();
        let sample: Vec<f32> = if values.is_empty() {
            Vec::new()
        } else {
            (0..samples_per_case).map(|_| values[rng.gen_range(0..values.len())]).collect()
        };
        stats.push(IntensityStats::of(&mut values));
        samples.push(sample);
    }
    let fingerprint = CaseFingerprint {
        id: case.id.clone(),
        original_orientation: first.geometry.orientation_code(),
        spacing_mm: images[0].geometry.spacing.mm(),
        shape,
        crop_start: bbox.start,
        crop_end: bbox.end,
        shape_after_crop,
        relative_size_after_cropping: relative,
        labels_present,
        foreground_voxels: foreground.len() as u64,
        foreground_intensities: stats,
    };
    Ok((fingerprint, samples))
}

/// Computes the fingerprint of `cases`, loading each with `load` (called once per case, on a
/// pool of `options.threads` threads; cases keep their order).
pub fn compute_fingerprint<C: Sync>(
    dataset_name: &str,
    channel_names: Vec<String>,
    label_names: BTreeMap<Label, String>,
    cases: &[C],
    load: impl Fn(&C) -> Result<CaseVolumes> + Sync,
    options: &FingerprintOptions,
) -> Result<Fingerprint> {
    use rayon::prelude::*;
    if cases.is_empty() {
        return Err(PlanningError::Planning("no cases to fingerprint".into()));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads.max(1))
        .build()
        .map_err(|e| PlanningError::Planning(format!("cannot start threads: {e}")))?;
    let results: Vec<Result<(CaseFingerprint, Vec<Vec<f32>>)>> = pool.install(|| {
        cases
            .par_iter()
            .enumerate()
            .with_max_len(1)
            .map(|(index, case)| {
                let volumes = load(case)?;
                fingerprint_case(&volumes, options.samples_per_case, options.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
            })
            .collect()
    });
    let channels = channel_names.len().max(1);
    let mut pooled: Vec<Vec<f32>> = vec![Vec::new(); channels];
    let mut fingerprints = Vec::with_capacity(cases.len());
    for result in results {
        let (fingerprint, samples) = result?;
        if samples.len() != channels {
            return Err(PlanningError::Case {
                case: fingerprint.id,
                detail: format!("has {} image channels, the dataset declares {channels}", samples.len()),
            });
        }
        for (pool, s) in pooled.iter_mut().zip(samples) {
            pool.extend(s);
        }
        fingerprints.push(fingerprint);
    }
    let mut relative: Vec<f64> = fingerprints.iter().map(|c| c.relative_size_after_cropping).collect();
    relative.sort_by(|a, b| a.total_cmp(b));
    Ok(Fingerprint {
        format_version: FINGERPRINT_FORMAT_VERSION,
        dataset_name: dataset_name.to_string(),
        channel_names,
        label_names,
        cases: fingerprints,
        foreground_intensity_properties_per_channel: pooled.iter_mut().map(|p| IntensityStats::of(p)).collect(),
        median_relative_size_after_cropping: median_sorted(&relative),
        samples_per_case: options.samples_per_case,
    })
}

/// The fingerprint of a dataset's training cases with labels, read through the dataset's own
/// label mapping ([`spineseg_datasets::Dataset::load_labels`], so values are ontology ids).
pub fn fingerprint_dataset(dataset: &spineseg_datasets::Dataset, options: &FingerprintOptions) -> Result<Fingerprint> {
    let cases: Vec<&spineseg_datasets::Case> = dataset.training_cases().filter(|c| c.label.is_some()).collect();
    let ontology = spineseg_anatomy::ontology::Ontology::standard();
    let mut label_names = BTreeMap::new();
    for id in dataset.label_map.structures() {
        if let Some(s) = ontology.get(id) {
            label_names.insert(id.0, s.name.clone());
        }
    }
    for map in dataset.case_label_maps.values() {
        for id in map.structures() {
            if let Some(s) = ontology.get(id) {
                label_names.insert(id.0, s.name.clone());
            }
        }
    }
    compute_fingerprint(
        &dataset.name,
        dataset.channel_names.clone(),
        label_names,
        &cases,
        |case| {
            let images = spineseg_preprocessing::crop::read_finite_images(&case.images)?;
            let labels = dataset.load_labels(case)?;
            let volumes = CaseVolumes { id: case.id.clone(), images, labels };
            volumes.check_files(&case.images, case.label.as_deref())?;
            Ok(volumes)
        },
        options,
    )
}

impl Fingerprint {
    /// Writes `fingerprint.json` (pretty, atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        Ok(write_json(path, self)?)
    }
    /// Reads a fingerprint, naming the file on bad JSON.
    pub fn load(path: &Path) -> Result<Fingerprint> {
        let fingerprint: Fingerprint = read_json(path)?;
        if fingerprint.format_version != FINGERPRINT_FORMAT_VERSION {
            return Err(PlanningError::InvalidFingerprint {
                path: path.to_path_buf(),
                detail: format!("fingerprint format_version {} is not {FINGERPRINT_FORMAT_VERSION}", fingerprint.format_version),
            });
        }
        Ok(fingerprint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spineseg_io::{Geometry, Spacing, Volume};

    fn sagittal_case(id: &str, value: f32) -> CaseVolumes {
        // Stored as I, P, R (i -> inferior, j -> posterior, k -> right), 0.5 x 0.5 x 4 mm.
        let direction = [[0.0, 0.0, 1.0], [0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]];
        let g = Geometry::new(Spacing::new([0.5, 0.5, 4.0]).unwrap(), [0.0; 3], direction).unwrap();
        let shape = [8, 6, 4];
        let mut image = Volume::filled(shape, 0.0f32, g);
        let mut labels = Volume::filled(shape, 0 as Label, g);
        for k in 1..4 {
            for j in 1..5 {
                for i in 2..8 {
                    image.set([i, j, k], value + i as f32);
                    if i >= 4 {
                        labels.set([i, j, k], 20 + (i as Label % 2));
                    }
                }
            }
        }
        CaseVolumes { id: id.into(), images: vec![image], labels: Some(labels) }
    }

    #[test]
    fn case_fingerprint_is_in_canonical_ras() {
        let (f, samples) = fingerprint_case(&sagittal_case("a", 100.0), 50, 1).unwrap();
        assert_eq!(f.original_orientation, "IPR");
        assert_eq!(f.spacing_mm, [4.0, 0.5, 0.5]);
        assert_eq!(f.shape, [4, 6, 8]);
        assert_eq!(f.shape_after_crop, [3, 4, 6]);
        assert_eq!(f.labels_present, vec![0, 20, 21]);
        assert_eq!(f.foreground_voxels, 3 * 4 * 4);
        let stats = f.foreground_intensities[0].unwrap();
        assert_eq!((stats.min, stats.max), (104.0, 107.0));
        assert!((stats.mean - 105.5).abs() < 1e-9);
        assert_eq!(samples[0].len(), 50);
        assert!(samples[0].iter().all(|v| (104.0..=107.0).contains(v)));
    }

    #[test]
    fn dataset_fingerprint_pools_and_round_trips() {
        let cases = vec![sagittal_case("a", 0.0), sagittal_case("b", 10.0), sagittal_case("c", 20.0)];
        let options = FingerprintOptions { samples_per_case: 100, seed: 7, threads: 2 };
        let f = compute_fingerprint("toy", vec!["T2".into()], BTreeMap::new(), &cases, |c| Ok(c.clone()), &options).unwrap();
        assert_eq!(f.cases.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        let pooled = f.foreground_intensity_properties_per_channel[0].unwrap();
        assert_eq!((pooled.min, pooled.max), (4.0, 27.0));
        let again = compute_fingerprint("toy", vec!["T2".into()], BTreeMap::new(), &cases, |c| Ok(c.clone()), &options).unwrap();
        assert_eq!(f, again, "sampling should be deterministic");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fingerprint.json");
        f.save(&path).unwrap();
        assert_eq!(Fingerprint::load(&path).unwrap(), f);
        std::fs::write(&path, "{ not json").unwrap();
        assert!(Fingerprint::load(&path).unwrap_err().to_string().contains("fingerprint.json"));
    }

    #[test]
    fn percentiles_match_numpy() {
        let mut v = vec![1.0f32, 2.0, 3.0, 4.0];
        let s = IntensityStats::of(&mut v).unwrap();
        assert_eq!(s.median, 2.5);
        assert!((s.percentile_99_5 - 3.985).abs() < 1e-12);
        assert!((s.percentile_00_5 - 1.015).abs() < 1e-12);
        assert!((s.std - 1.25f64.sqrt()).abs() < 1e-12);
    }
}
