//! Preprocessing of one case for a plan configuration, its exact inverse for predictions, and the
//! on-disk format of preprocessed cases (nnU-Net v2's `DefaultPreprocessor.run_case_npy` and
//! `convert_predicted_logits_to_segmentation_with_correct_shape`).
//!
//! # Steps ([`preprocess_case`])
//! 1. Reorient every channel and the labels to canonical RAS (exact: permutation and flips).
//! 2. Crop to the bounding box of the non-zero region of the images (any channel != 0; nnU-Net's
//!    `crop_to_nonzero`). The mask with holes filled (6-connected background not reaching the
//!    border, as scipy's `binary_fill_holes`) is kept for `use_mask_for_norm`.
//! 3. Remap label values to class indices `0..C` with the plan's label list; a value the plan
//!    does not list is an error naming the case and value.
//! 4. Normalise each channel ([`Normalization`]). As nnU-Net, this happens *before* resampling,
//!    so the non-zero mask still matches the image voxel for voxel.
//! 5. Resample images and labels to the configuration's spacing ([`crate::resample`]; for 2D the
//!    slice spacing is kept).
//!
//! [`CaseProperties`] records every shape, box and geometry on the way, so
//! [`revert_to_original`] undoes everything: resample back to the cropped shape, paste into the
//! canonical volume (0 outside the box), undo the reorientation, map class indices back to label
//! values. The result has exactly the shape and geometry of the input files.
//!
//! # Storage ([`save_preprocessed`] / [`load_preprocessed`])
//! Per case, in the configuration's folder: `ID.json` (header: [`CaseProperties`], shapes, file
//! names), `ID.f32` (channels one after another, each `i`-fastest, little-endian `f32`) and,
//! when the case has labels, `ID.seg.u8` (class indices, one byte per voxel). Every file is
//! written atomically and the header last, so a header means a complete case.

use crate::error::{PreprocessError, Result};
use spineseg_io::json::{read_json, write_json};
use crate::plan::{ConfigurationName, Normalization, Plan};
use crate::resample::{resample_image, resample_labels};
use serde::{Deserialize, Serialize};
use spineseg_anatomy::ontology::StructureId;
use spineseg_datasets::annotations::DeclaredAnnotations;
use spineseg_io::reorient::Reorientation;
use spineseg_io::{Geometry, Label, Spacing, Volume};
use std::path::Path;

pub use crate::crop::{crop, fill_holes, mask_bounding_box, nonzero_bounding_box, nonzero_mask, uncrop, BoundingBox, CaseVolumes};

/// Version of the preprocessed case header.
pub const PREPROCESSED_FORMAT_VERSION: u32 = 1;

/// Everything needed to map a prediction in preprocessed space back onto the input files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseProperties {
    pub id: String,
    pub configuration: ConfigurationName,
    /// Shape and geometry of the input files.
    pub original_shape: [usize; 3],
    #[serde(with = "geometry_serde")]
    pub original_geometry: Geometry,
    /// The transform from the input's voxel order to canonical RAS.
    #[serde(with = "reorientation_serde")]
    pub to_canonical: Reorientation,
    /// Canonical RAS volume before cropping (`spacing` = the case's canonical spacing).
    pub canonical_shape: [usize; 3],
    #[serde(with = "geometry_serde")]
    pub canonical_geometry: Geometry,
    /// The crop box in canonical voxels.
    pub crop: BoundingBox,
    /// Shape after cropping, before resampling.
    pub shape_after_crop: [usize; 3],
    /// Shape and geometry of the preprocessed arrays.
    pub shape_after_resampling: [usize; 3],
    #[serde(with = "geometry_serde")]
    pub geometry_after_resampling: Geometry,
    /// The ontology structures the dataset declares this case annotates (its
    /// `annotations.json`, `spineseg_datasets::annotations`); `None`: the partial-label rule
    /// infers them from the labels. Absent in folders preprocessed before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotated_structures: Option<Vec<StructureId>>,
}

/// A case ready for training or prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessedCase {
    /// Normalised channels, canonical RAS at the configuration's spacing.
    pub images: Vec<Volume<f32>>,
    /// Class indices (`0..plan.num_classes()`), on the images' grid.
    pub seg: Option<Volume<u8>>,
    pub properties: CaseProperties,
}

fn normalize(image: &mut Volume<f32>, scheme: &Normalization, mask: &[bool]) {
    match *scheme {
        Normalization::None => {}
        Normalization::Ct { mean, std, lower, upper } => {
            let std = std.max(1e-8);
            for v in image.data_mut() {
                *v = ((*v as f64).clamp(lower, upper.max(lower)) - mean) as f32 / std as f32;
            }
        }
        Normalization::ZScore { use_mask } => {
            let selected = |p: usize| !use_mask || mask[p];
            let (mut n, mut sum) = (0usize, 0f64);
            for (p, v) in image.data().iter().enumerate() {
                if selected(p) {
                    n += 1;
                    sum += *v as f64;
                }
            }
            if n == 0 {
                return;
            }
            let mean = sum / n as f64;
            let var = image.data().iter().enumerate().filter(|(p, _)| selected(*p)).map(|(_, v)| (*v as f64 - mean).powi(2)).sum::<f64>()
                / n as f64;
            let std = var.sqrt().max(1e-8);
            for (p, v) in image.data_mut().iter_mut().enumerate() {
                if selected(p) {
                    *v = ((*v as f64 - mean) / std) as f32;
                }
            }
        }
    }
}

/// Preprocesses one case for `configuration` of `plan` (see the module documentation).
pub fn preprocess_case(case: &CaseVolumes, plan: &Plan, configuration: ConfigurationName) -> Result<PreprocessedCase> {
    case.check()?;
    let err = |detail: String| PreprocessError::Preprocess { case: case.id.clone(), detail };
    if case.images.len() != plan.channel_names.len() {
        return Err(err(format!("has {} image channels, the plan expects {}", case.images.len(), plan.channel_names.len())));
    }
    let first = &case.images[0];
    let original_shape = first.shape();
    let original_geometry = first.geometry;
    let to_canonical = Reorientation::to_canonical(&original_geometry, original_shape);
    let images: Vec<Volume<f32>> = case.images.iter().map(|v| to_canonical.apply(v)).collect();
    let canonical_shape = images[0].shape();
    let canonical_geometry = images[0].geometry;
    let target = plan
        .target_spacing_for(configuration, canonical_geometry.spacing.mm())
        .ok_or_else(|| err(format!("the plan has no configuration {configuration}")))?;

    // Crop to the non-zero box.
    let full_mask = nonzero_mask(&images);
    let bbox = mask_bounding_box(&full_mask, canonical_shape);
    let mut images: Vec<Volume<f32>> = images.iter().map(|v| crop(v, &bbox)).collect();
    let shape_after_crop = bbox.shape();
    let mask_volume = crop(&Volume::new(canonical_shape, full_mask, canonical_geometry).expect("mask has the volume's size"), &bbox);

    // Labels -> class indices.
    let seg = match &case.labels {
        None => None,
        Some(labels) => {
            let labels = crop(&to_canonical.apply(labels), &bbox);
            let table = plan.class_lookup();
            let mut bad = None;
            let seg = labels.map(|v| match table[*v as usize] {
                Some(c) => c,
                None => {
                    bad.get_or_insert(*v);
                    0
                }
            });
            if let Some(value) = bad {
                return Err(err(format!("label value {value} is not in the plan's label list")));
            }
            Some(seg)
        }
    };

    // Normalise before resampling; the mask includes labelled voxels (nnU-Net: seg >= 0).
    let mut mask: Vec<bool> = mask_volume.data().to_vec();
    if let Some(seg) = &seg {
        for (m, c) in mask.iter_mut().zip(seg.data()) {
            *m |= *c > 0;
        }
    }
    for (image, scheme) in images.iter_mut().zip(&plan.normalization) {
        normalize(image, scheme, &mask);
    }

    // Resample.
    let new_shape = crate::resample::compute_new_shape(shape_after_crop, canonical_geometry.spacing.mm(), target);
    let images: Vec<Volume<f32>> = images.iter().map(|v| resample_image(v, new_shape, &plan.resampling)).collect();
    let seg = seg.map(|s| resample_labels(&s, new_shape, &plan.resampling));
    let properties = CaseProperties {
        id: case.id.clone(),
        configuration,
        original_shape,
        original_geometry,
        to_canonical,
        canonical_shape,
        canonical_geometry,
        crop: bbox,
        shape_after_crop,
        shape_after_resampling: new_shape,
        geometry_after_resampling: images[0].geometry,
        annotated_structures: None,
    };
    Ok(PreprocessedCase { images, seg, properties })
}

impl CaseProperties {
    fn check_consistent(&self) -> std::result::Result<(), String> {
        if self.to_canonical.source_shape != self.original_shape || self.to_canonical.target_shape() != self.canonical_shape {
            return Err("reorientation does not match the original and canonical shapes".into());
        }
        let mut axes = self.to_canonical.source_axis;
        axes.sort();
        if axes != [0, 1, 2] {
            return Err(format!("reorientation axes {:?} are not a permutation", self.to_canonical.source_axis));
        }
        if (0..3).any(|a| self.crop.start[a] >= self.crop.end[a] || self.crop.end[a] > self.canonical_shape[a]) {
            return Err(format!("crop box {:?} does not fit the canonical shape {:?}", self.crop, self.canonical_shape));
        }
        if self.crop.shape() != self.shape_after_crop {
            return Err("crop box and shape_after_crop disagree".into());
        }
        Ok(())
    }
}

/// Maps a segmentation in preprocessed space (class indices, shape
/// `properties.shape_after_resampling`) back to the input's voxel grid and label values:
/// resample to the cropped shape (plan's label resampling), paste into the canonical volume
/// (0 outside the crop box), undo the reorientation, class index -> label value. The result has
/// `original_shape` and `original_geometry`.
pub fn revert_to_original(seg: &Volume<u8>, properties: &CaseProperties, plan: &Plan) -> Result<Volume<Label>> {
    let err = |detail: String| PreprocessError::Preprocess { case: properties.id.clone(), detail };
    properties.check_consistent().map_err(err)?;
    if seg.shape() != properties.shape_after_resampling {
        return Err(err(format!(
            "segmentation shape {:?} is not the preprocessed shape {:?}",
            seg.shape(),
            properties.shape_after_resampling
        )));
    }
    if let Some(c) = seg.data().iter().find(|c| **c as usize >= plan.labels.len()) {
        return Err(err(format!("class index {c} is not below the plan's {} classes", plan.labels.len())));
    }
    let mut seg = seg.clone();
    seg.geometry = properties.geometry_after_resampling;
    let cropped = resample_labels(&seg, properties.shape_after_crop, &plan.resampling);
    let values: Vec<Label> = plan.labels.iter().map(|l| l.value).collect();
    let cropped = cropped.map(|c| values[*c as usize]);
    let canonical = uncrop(&cropped, &properties.crop, properties.canonical_shape, 0, properties.canonical_geometry);
    let mut original = properties.to_canonical.inverse().apply(&canonical);
    original.geometry = properties.original_geometry;
    Ok(original)
}

/// Header of a stored preprocessed case (`ID.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredHeader {
    format_version: u32,
    shape: [usize; 3],
    channels: usize,
    data_file: String,
    seg_file: Option<String>,
    properties: CaseProperties,
}

/// File-name-safe form of a case id.
fn file_stem(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
}

/// Writes a preprocessed case into `dir` (created if missing); see the module documentation.
pub fn save_preprocessed(dir: &Path, case: &PreprocessedCase) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| PreprocessError::Os { path: dir.to_path_buf(), source })?;
    let stem = file_stem(&case.properties.id);
    let shape = case.properties.shape_after_resampling;
    let data_file = format!("{stem}.f32");
    spineseg_io::atomic::write_atomically(&dir.join(&data_file), |w| {
        for image in &case.images {
            let bytes: Vec<u8> = image.data().iter().flat_map(|v| v.to_le_bytes()).collect();
            w.write_all(&bytes)?;
        }
        Ok(())
    })?;
    let seg_file = match &case.seg {
        Some(seg) => {
            let name = format!("{stem}.seg.u8");
            spineseg_io::atomic::write_atomically(&dir.join(&name), |w| w.write_all(seg.data()))?;
            Some(name)
        }
        None => None,
    };
    let header = StoredHeader {
        format_version: PREPROCESSED_FORMAT_VERSION,
        shape,
        channels: case.images.len(),
        data_file,
        seg_file,
        properties: case.properties.clone(),
    };
    Ok(write_json(&dir.join(format!("{stem}.json")), &header)?)
}

/// Reads a case written by [`save_preprocessed`].
pub fn load_preprocessed(dir: &Path, id: &str) -> Result<PreprocessedCase> {
    let header_path = dir.join(format!("{}.json", file_stem(id)));
    let header: StoredHeader = read_json(&header_path)?;
    let bad = |path: &Path, detail: String| PreprocessError::InvalidPreprocessed { path: path.to_path_buf(), detail };
    if header.format_version != PREPROCESSED_FORMAT_VERSION {
        return Err(bad(&header_path, format!("format_version {} is not {PREPROCESSED_FORMAT_VERSION}", header.format_version)));
    }
    if header.shape != header.properties.shape_after_resampling {
        return Err(bad(&header_path, "shape disagrees with properties.shape_after_resampling".into()));
    }
    let voxels: usize = header.shape.iter().product();
    let geometry = header.properties.geometry_after_resampling;
    let data_path = dir.join(&header.data_file);
    let bytes = std::fs::read(&data_path).map_err(|source| PreprocessError::Os { path: data_path.clone(), source })?;
    if bytes.len() != voxels * header.channels * 4 {
        return Err(bad(&data_path, format!("{} bytes, the header announces {} channels of {voxels} f32", bytes.len(), header.channels)));
    }
    let values: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let images = values
        .chunks_exact(voxels.max(1))
        .take(header.channels)
        .map(|c| Volume::new(header.shape, c.to_vec(), geometry).expect("chunk has the volume's size"))
        .collect();
    let seg = match &header.seg_file {
        None => None,
        Some(name) => {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(|source| PreprocessError::Os { path: path.clone(), source })?;
            if bytes.len() != voxels {
                return Err(bad(&path, format!("{} bytes, the header announces {voxels} voxels", bytes.len())));
            }
            Some(Volume::new(header.shape, bytes, geometry).expect("length checked above"))
        }
    };
    Ok(PreprocessedCase { images, seg, properties: header.properties })
}

/// Preprocesses `cases` (loaded with `load`) for `configuration` on `threads` threads and stores
/// them in `out_dir` (typically `preprocessed/<data_identifier>`); returns the case ids in order.
pub fn preprocess_cases<C: Sync>(
    cases: &[C],
    load: impl Fn(&C) -> Result<CaseVolumes> + Sync,
    plan: &Plan,
    configuration: ConfigurationName,
    out_dir: &Path,
    threads: usize,
) -> Result<Vec<String>> {
    preprocess_cases_declared(cases, load, |_| None, plan, configuration, out_dir, threads)
}

/// [`preprocess_cases`], storing `declared(case id)` as each case's
/// [`CaseProperties::annotated_structures`].
fn preprocess_cases_declared<C: Sync>(
    cases: &[C],
    load: impl Fn(&C) -> Result<CaseVolumes> + Sync,
    declared: impl Fn(&str) -> Option<Vec<StructureId>> + Sync,
    plan: &Plan,
    configuration: ConfigurationName,
    out_dir: &Path,
    threads: usize,
) -> Result<Vec<String>> {
    use rayon::prelude::*;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|e| PreprocessError::Planning(format!("cannot start threads: {e}")))?;
    pool.install(|| {
        cases
            .par_iter()
            .with_max_len(1)
            .map(|case| {
                let volumes = load(case)?;
                let mut pre = preprocess_case(&volumes, plan, configuration)?;
                pre.properties.annotated_structures = declared(&volumes.id);
                save_preprocessed(out_dir, &pre)?;
                Ok(volumes.id)
            })
            .collect()
    })
}

/// Preprocesses a dataset's training cases (labels through the dataset's label map, so values
/// are ontology ids; cases without labels get no seg) into `out_dir`. What the dataset's
/// `annotations.json` declares a case annotates is stored with it (its case ids are not checked
/// here, as `dataset` may lack excluded cases: see `DeclaredAnnotations::check_cases`).
pub fn preprocess_dataset(
    dataset: &spineseg_datasets::Dataset,
    plan: &Plan,
    configuration: ConfigurationName,
    out_dir: &Path,
    threads: usize,
) -> Result<Vec<String>> {
    let declared = DeclaredAnnotations::at(&dataset.root)?;
    let cases: Vec<&spineseg_datasets::Case> = dataset.training_cases().collect();
    preprocess_cases_declared(
        &cases,
        |case| {
            let images = crate::crop::read_finite_images(&case.images)?;
            let volumes = CaseVolumes { id: case.id.clone(), images, labels: dataset.load_labels(case)? };
            volumes.check_files(&case.images, case.label.as_deref())?;
            Ok(volumes)
        },
        |id| declared.as_ref().and_then(|d| d.for_case(id)).map(<[StructureId]>::to_vec),
        plan,
        configuration,
        out_dir,
        threads,
    )
}

/// Serde for [`Geometry`] (the I/O crate has no serde): spacing, origin and direction, checked on
/// load and kept bit-exact.
mod geometry_serde {
    use super::*;
    use serde::{Deserializer, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Record {
        spacing_mm: [f64; 3],
        origin_mm: [f64; 3],
        direction: [[f64; 3]; 3],
    }

    pub fn serialize<S: Serializer>(g: &Geometry, s: S) -> std::result::Result<S::Ok, S::Error> {
        Record { spacing_mm: g.spacing.mm(), origin_mm: g.origin_mm, direction: g.direction }.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Geometry, D::Error> {
        let r = Record::deserialize(d)?;
        let spacing = Spacing::new(r.spacing_mm).map_err(serde::de::Error::custom)?;
        Geometry::new(spacing, r.origin_mm, r.direction).map_err(serde::de::Error::custom)?;
        Ok(Geometry { spacing, origin_mm: r.origin_mm, direction: r.direction })
    }
}

/// Serde for [`Reorientation`].
mod reorientation_serde {
    use super::*;
    use serde::{Deserializer, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Record {
        source_axis: [usize; 3],
        flipped: [bool; 3],
        source_shape: [usize; 3],
    }

    pub fn serialize<S: Serializer>(r: &Reorientation, s: S) -> std::result::Result<S::Ok, S::Error> {
        Record { source_axis: r.source_axis, flipped: r.flipped, source_shape: r.source_shape }.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Reorientation, D::Error> {
        let r = Record::deserialize(d)?;
        let mut axes = r.source_axis;
        axes.sort();
        if axes != [0, 1, 2] {
            return Err(serde::de::Error::custom(format!("source_axis {:?} is not a permutation of 0, 1, 2", r.source_axis)));
        }
        Ok(Reorientation { source_axis: r.source_axis, flipped: r.flipped, source_shape: r.source_shape })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_are_filled_and_the_box_is_tight() {
        let shape = [5, 5, 5];
        let mut mask = vec![false; 125];
        for k in 1..4 {
            for j in 1..4 {
                for i in 1..4 {
                    mask[i + 5 * (j + 5 * k)] = !(i == 2 && j == 2 && k == 2);
                }
            }
        }
        fill_holes(&mut mask, shape);
        assert!(mask[2 + 5 * (2 + 5 * 2)], "the enclosed voxel should be filled");
        assert_eq!(mask.iter().filter(|m| **m).count(), 27);
        assert_eq!(mask_bounding_box(&mask, shape), BoundingBox { start: [1; 3], end: [4; 3] });
        assert_eq!(mask_bounding_box(&[false; 8], [2, 2, 2]), BoundingBox::full([2, 2, 2]));
    }

    #[test]
    fn crop_and_uncrop_keep_world_positions() {
        let g = Geometry::new(Spacing::new([0.5, 1.0, 2.0]).unwrap(), [1.0, 2.0, 3.0], spineseg_io::geometry::IDENTITY3).unwrap();
        let v = Volume::new([4, 3, 2], (0..24u16).collect(), g).unwrap();
        let b = BoundingBox { start: [1, 1, 0], end: [3, 3, 2] };
        let c = crop(&v, &b);
        assert_eq!(*c.get([0, 0, 0]), *v.get([1, 1, 0]));
        assert_eq!(c.geometry.voxel_to_world([0.0; 3]), g.voxel_to_world([1.0, 1.0, 0.0]));
        let back = uncrop(&c, &b, [4, 3, 2], 0, g);
        for k in 0..2 {
            for j in 0..3 {
                for i in 0..4 {
                    let inside = (1..3).contains(&i) && (1..3).contains(&j);
                    assert_eq!(*back.get([i, j, k]), if inside { *v.get([i, j, k]) } else { 0 });
                }
            }
        }
    }

    #[test]
    fn zscore_with_mask_leaves_outside_at_zero() {
        let mut v = Volume::new([4, 1, 1], vec![0.0, 2.0, 4.0, 0.0], Geometry::default()).unwrap();
        normalize(&mut v, &Normalization::ZScore { use_mask: true }, &[false, true, true, false]);
        assert_eq!(v.data(), &[0.0, -1.0, 1.0, 0.0]);
        let mut v = Volume::new([2, 1, 1], vec![1.0, 3.0], Geometry::default()).unwrap();
        normalize(&mut v, &Normalization::ZScore { use_mask: false }, &[false, false]);
        assert_eq!(v.data(), &[-1.0, 1.0]);
    }

    #[test]
    fn declared_annotations_are_stored_and_old_headers_load_without_them() {
        let dir = tempfile::tempdir().unwrap();
        let image = Volume::new([2, 2, 1], vec![1.0f32, 2.0, 3.0, 4.0], Geometry::default()).unwrap();
        let mut case = crate::test_support::preprocessed_case("a", vec![image], None);
        save_preprocessed(dir.path(), &case).unwrap();
        let header = std::fs::read_to_string(dir.path().join("a.json")).unwrap();
        // Without a declaration the header is as before the field existed, and loads.
        assert!(!header.contains("annotated_structures"), "{header}");
        assert_eq!(load_preprocessed(dir.path(), "a").unwrap().properties.annotated_structures, None);
        case.properties.annotated_structures = Some(vec![StructureId(20), StructureId(123)]);
        save_preprocessed(dir.path(), &case).unwrap();
        let loaded = load_preprocessed(dir.path(), "a").unwrap();
        assert_eq!(loaded.properties.annotated_structures, Some(vec![StructureId(20), StructureId(123)]));
    }
}
