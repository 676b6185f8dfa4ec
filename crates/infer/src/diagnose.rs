//! `spineseg diagnose` as library calls: segment each sequence of one patient with a
//! segmentation model (levels named by counting), cut every named disc's region of interest on
//! the sagittal slice through the disc, and classify each level from whichever sequences found it.
//!
//! A level the segmentation does not find on any sequence is reported missing (with the
//! reason), never guessed. Two sequences that do not show the same spine (their discs' centres
//! far apart in the scanner's frame) are refused: they are probably two patients' files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use spineseg_anatomy::{Ontology, StructureId, StructureKind};
use spineseg_findings::roi::{cut_disc_roi, DiscRoi, ImageDirections, RoiSpec, Slice2d};
use spineseg_io::reorient::to_canonical;
use spineseg_io::{Label, Volume};
use spineseg_preprocessing::crop::CaseVolumes;
use spineseg_preprocessing::preprocess::preprocess_case;

use crate::findings_model::{FindingsInput, FindingsModel, FindingsProbabilities, FINDING_KEYS};
use crate::levels::LevelAssignment;
use crate::model_folder::ModelFolder;
use crate::predict::predict_case_with_levels;
use crate::workflow::{default_level_assignment, WorkflowError};

/// Largest median distance (mm) between the centres of the same discs on two sequences of one
/// patient. SPIDER's T1 and T2 of a patient share the frame (a few mm apart); two patients'
/// lumbar spines are centimetres apart.
pub const MAX_SEQUENCE_DISC_OFFSET_MM: f64 = 25.0;

/// Errors of [`diagnose`] (each names the file or says what is wrong with the inputs).
#[derive(Debug, thiserror::Error)]
pub enum DiagnoseError {
    #[error(transparent)]
    Workflow(#[from] WorkflowError),
    #[error("{path}: {detail}")]
    Input { path: PathBuf, detail: String },
    #[error("{0}")]
    Mismatch(String),
}

impl From<crate::InferError> for DiagnoseError {
    fn from(error: crate::InferError) -> Self {
        DiagnoseError::Workflow(error.into())
    }
}

impl From<spineseg_preprocessing::error::PreprocessError> for DiagnoseError {
    fn from(error: spineseg_preprocessing::error::PreprocessError) -> Self {
        DiagnoseError::Workflow(crate::InferError::from(error).into())
    }
}

/// One sequence of a patient, segmented and cut.
#[derive(Debug)]
pub struct SequenceDiscs {
    /// "t1", "t2", ...
    pub sequence: String,
    pub image_path: PathBuf,
    /// The image and the segmentation (ontology ids), both in canonical RAS.
    pub image: Volume<f32>,
    pub labels: Volume<Label>,
    /// The level assignment's report, when it ran.
    pub levels: Option<LevelAssignment>,
    /// Every disc class of the segmentation model: its ROI, or why there is none.
    pub discs: BTreeMap<u16, Result<DiscRoi, String>>,
    /// Each found disc's centre in world mm (RAS) and its sagittal slice index.
    pub disc_centres: BTreeMap<u16, ([f64; 3], usize)>,
}

/// The disc classes a segmentation model segments (ontology ids), superior first.
pub fn model_disc_levels(model: &ModelFolder) -> Vec<u16> {
    let ontology = Ontology::standard();
    let mut discs: Vec<u16> = model
        .plan
        .labels
        .iter()
        .map(|l| l.value)
        .filter(|&v| ontology.get(StructureId(v)).is_some_and(|s| s.kind == StructureKind::Disc))
        .collect();
    discs.sort_unstable();
    discs
}

/// The sagittal plane `i` of a canonical volume as a [`Slice2d`] (x = anterior axis j, y =
/// superior axis k).
pub fn sagittal_slice(volume: &Volume<f32>, i: usize) -> Slice2d {
    let [_, nj, nk] = volume.shape();
    let mut data = Vec::with_capacity(nj * nk);
    for k in 0..nk {
        for j in 0..nj {
            data.push(*volume.get([i, j, k]));
        }
    }
    let spacing = volume.geometry.spacing.mm();
    Slice2d { data, width: nj, height: nk, spacing_mm: [spacing[1], spacing[2]] }
}

/// In a canonical (RAS) volume's sagittal plane, superior is +k and anterior is +j.
pub const CANONICAL_SAGITTAL: ImageDirections = ImageDirections { up: [0.0, 1.0], anterior: [1.0, 0.0] };

/// Segments `image_path` with `model` (level assignment on when the model has level classes)
/// and cuts the ROI of every disc the model segments ([`cut_discs`]).
pub fn segment_and_cut(
    model: &ModelFolder,
    sequence: &str,
    image_path: &Path,
    spec: &RoiSpec,
) -> Result<SequenceDiscs, DiagnoseError> {
    let id = image_path.file_name().map_or_else(|| "image".to_string(), |n| n.to_string_lossy().into_owned());
    let case = CaseVolumes::read(&id, &[image_path.to_path_buf()], None)?;
    let image = case.images[0].clone();
    let preprocessed = preprocess_case(&case, &model.plan, model.configuration())?;
    drop(case);
    let mut options = model.predict_options()?;
    options.level_assignment = default_level_assignment(model);
    let mut predictor = model.predictor();
    let prediction = predict_case_with_levels(&preprocessed, &model.plan, &mut predictor, &options)?;
    let mut discs = cut_discs(sequence, image_path, &image, &prediction.labels, &model_disc_levels(model), spec)?;
    discs.levels = prediction.levels;
    Ok(discs)
}

/// Reads `image_path` and a segmentation of it (`labels_path`, ontology ids, same grid) and cuts
/// the ROI of every disc in `levels` (for images segmented elsewhere, or by hand).
pub fn cut_discs_from_files(
    sequence: &str,
    image_path: &Path,
    labels_path: &Path,
    levels: &[u16],
    spec: &RoiSpec,
) -> Result<SequenceDiscs, DiagnoseError> {
    let id = image_path.file_name().map_or_else(|| "image".to_string(), |n| n.to_string_lossy().into_owned());
    let case = CaseVolumes::read(&id, &[image_path.to_path_buf()], Some(labels_path))?;
    case.check()?;
    let labels = case.labels.clone().expect("the case was read with its labels");
    cut_discs(sequence, image_path, &case.images[0], &labels, levels, spec)
}

/// Cuts the ROI of every disc in `levels` from `image` and its segmentation `labels` (ontology
/// ids, same grid), each on the sagittal slice through the disc's centre (both volumes are
/// brought to canonical RAS first).
pub fn cut_discs(
    sequence: &str,
    image_path: &Path,
    image: &Volume<f32>,
    labels: &Volume<Label>,
    levels: &[u16],
    spec: &RoiSpec,
) -> Result<SequenceDiscs, DiagnoseError> {
    if image.shape() != labels.shape() {
        return Err(DiagnoseError::Input {
            path: image_path.to_path_buf(),
            detail: format!("image {:?} and segmentation {:?} differ in shape", image.shape(), labels.shape()),
        });
    }
    let (image, _) = to_canonical(image);
    let (labels, _) = to_canonical(labels);
    let mut discs = BTreeMap::new();
    let mut disc_centres = BTreeMap::new();
    let [ni, nj, nk] = labels.shape();
    // Voxel count and coordinate sums of every requested disc, in one pass over the volume.
    let mut found: BTreeMap<u16, (usize, [f64; 3])> = BTreeMap::new();
    for k in 0..nk {
        for j in 0..nj {
            for i in 0..ni {
                let value = *labels.get([i, j, k]);
                if value != 0 && levels.contains(&value) {
                    let (count, sum) = found.entry(value).or_insert((0, [0.0; 3]));
                    *count += 1;
                    sum[0] += i as f64;
                    sum[1] += j as f64;
                    sum[2] += k as f64;
                }
            }
        }
    }
    for &level in levels {
        let Some(&(count, sum)) = found.get(&level) else {
            discs.insert(level, Err("not found by the segmentation".to_string()));
            continue;
        };
        let centre = sum.map(|s| s / count as f64);
        let i = (centre[0].round() as usize).min(ni - 1);
        let slice = sagittal_slice(&image, i);
        let mut mask = Vec::with_capacity(nj * nk);
        for k in 0..nk {
            for j in 0..nj {
                mask.push(*labels.get([i, j, k]) == level);
            }
        }
        disc_centres.insert(level, (labels.geometry.voxel_to_world(centre), i));
        discs.insert(level, cut_disc_roi(&slice, &mask, &CANONICAL_SAGITTAL, spec).map_err(|e| e.to_string()));
    }
    Ok(SequenceDiscs {
        sequence: sequence.to_string(),
        image_path: image_path.to_path_buf(),
        image,
        labels,
        levels: None,
        discs,
        disc_centres,
    })
}

/// Refuses two sequences whose common discs lie, in median, more than
/// [`MAX_SEQUENCE_DISC_OFFSET_MM`] apart.
pub fn check_same_spine(a: &SequenceDiscs, b: &SequenceDiscs) -> Result<(), DiagnoseError> {
    let mut distances: Vec<f64> = a
        .disc_centres
        .iter()
        .filter_map(|(level, (pa, _))| {
            b.disc_centres
                .get(level)
                .map(|(pb, _)| ((pa[0] - pb[0]).powi(2) + (pa[1] - pb[1]).powi(2) + (pa[2] - pb[2]).powi(2)).sqrt())
        })
        .collect();
    if distances.len() < 2 {
        return Ok(());
    }
    distances.sort_by(f64::total_cmp);
    let median = distances[distances.len() / 2];
    if median > MAX_SEQUENCE_DISC_OFFSET_MM {
        return Err(DiagnoseError::Mismatch(format!(
            "{} ({}) and {} ({}) do not show the same spine: the same discs lie {median:.0} mm apart (median over {} discs; at most {MAX_SEQUENCE_DISC_OFFSET_MM} mm for one patient). Are they the same patient's files?",
            a.image_path.display(),
            a.sequence,
            b.image_path.display(),
            b.sequence,
            distances.len()
        )));
    }
    Ok(())
}

/// The findings of one disc level.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LevelFindings {
    /// Ontology id of the disc.
    pub level: u16,
    /// "L4/L5".
    pub name: String,
    /// The sequences the level was found on.
    pub found_on: Vec<String>,
    /// Why the level has no findings (not found on any sequence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probabilities: Option<FindingsProbabilities>,
    /// Findings whose probability reaches the model's threshold, in `FINDING_KEYS` order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<[bool; 5]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pfirrmann_grade: Option<u8>,
}

/// A patient's findings (what `diagnose` writes as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Diagnosis {
    pub case: String,
    pub inputs: BTreeMap<String, PathBuf>,
    pub thresholds: BTreeMap<String, f32>,
    pub levels: Vec<LevelFindings>,
}

/// Plain-language names of the findings, in `FINDING_KEYS` order.
pub const FINDING_NAMES: [&str; 5] =
    ["disc herniation", "disc narrowing", "disc bulging", "spondylolisthesis", "Modic changes"];

impl Diagnosis {
    /// One line per level: "L4/L5: disc herniation (p 0.91), disc narrowing (p 0.74); Pfirrmann 4".
    pub fn report(&self) -> String {
        let mut out = String::new();
        for level in &self.levels {
            let line = match (&level.probabilities, &level.present) {
                (Some(p), Some(present)) => {
                    let found: Vec<String> = (0..5)
                        .filter(|&f| present[f])
                        .map(|f| format!("{} (p {:.2})", FINDING_NAMES[f], p.findings[f]))
                        .collect();
                    let findings = if found.is_empty() { "no finding".to_string() } else { found.join(", ") };
                    format!(
                        "{}: {findings}; Pfirrmann {} (seen on {})",
                        level.name,
                        p.grade(),
                        level.found_on.join(" + ")
                    )
                }
                _ => format!("{}: not assessed ({})", level.name, level.missing.as_deref().unwrap_or("not found")),
            };
            out.push_str(&line);
            out.push('\n');
        }
        out
    }
}

/// Classifies every level the findings model knows from the sequences' ROIs (`sequences` in any
/// order; each must be one the findings model names). Sequences the model was not trained on
/// are not used.
pub fn classify_levels(case: &str, findings: &FindingsModel, sequences: &[SequenceDiscs]) -> Diagnosis {
    let manifest = &findings.manifest;
    let thresholds = manifest.threshold_array();
    let ontology = Ontology::standard();
    let mut levels = Vec::new();
    let mut inputs = Vec::new();
    let mut pending = Vec::new();
    for (index, &level) in manifest.network.config().levels.iter().enumerate() {
        let name = ontology.get(StructureId(level)).map_or_else(|| level.to_string(), |s| s.name.clone());
        let mut rois: Vec<Option<Vec<f32>>> = vec![None; manifest.sequences.len()];
        let mut found_on = Vec::new();
        let mut reasons = Vec::new();
        for sequence in sequences {
            let trained = manifest.trained_sequences.iter().any(|s| s.eq_ignore_ascii_case(&sequence.sequence));
            let Some(channel) = manifest.sequence_index(&sequence.sequence).filter(|_| trained) else { continue };
            match sequence.discs.get(&level) {
                Some(Ok(roi)) => {
                    rois[channel] = Some(roi.pixels.clone());
                    found_on.push(sequence.sequence.clone());
                }
                Some(Err(reason)) => reasons.push(format!("{}: {reason}", sequence.sequence)),
                None => {
                    reasons.push(format!("{}: the segmentation model does not segment this disc", sequence.sequence))
                }
            }
        }
        if found_on.is_empty() {
            levels.push(LevelFindings {
                level,
                name,
                found_on,
                missing: Some(if reasons.is_empty() { "no usable sequence".into() } else { reasons.join("; ") }),
                probabilities: None,
                present: None,
                pfirrmann_grade: None,
            });
        } else {
            pending.push(levels.len());
            inputs.push(FindingsInput { level: index, rois });
            levels.push(LevelFindings {
                level,
                name,
                found_on,
                missing: None,
                probabilities: None,
                present: None,
                pfirrmann_grade: None,
            });
        }
    }
    for (slot, p) in pending.into_iter().zip(findings.predict(&inputs)) {
        levels[slot].present = Some(std::array::from_fn(|f| p.findings[f] >= thresholds[f]));
        levels[slot].pfirrmann_grade = Some(p.grade());
        levels[slot].probabilities = Some(p);
    }
    Diagnosis {
        case: case.to_string(),
        inputs: sequences.iter().map(|s| (s.sequence.clone(), s.image_path.clone())).collect(),
        thresholds: FINDING_KEYS.iter().zip(thresholds).map(|(k, t)| (k.to_string(), t)).collect(),
        levels,
    }
}

/// One sequence's image for [`diagnose`], with its segmentation if it has one already.
#[derive(Debug, Clone)]
pub struct DiagnoseInput {
    /// "t1" or "t2".
    pub sequence: String,
    pub image: PathBuf,
    /// A segmentation of `image` (ontology ids); `None`: the segmentation model segments it.
    pub labels: Option<PathBuf>,
}

/// Segments each sequence (or takes its given segmentation), checks they show one spine, and
/// classifies every level.
/// `spec` must be the findings model's ROI geometry (see [`roi_spec`]).
pub fn diagnose(
    case: &str,
    segmentation: Option<&ModelFolder>,
    findings: &FindingsModel,
    files: &[DiagnoseInput],
) -> Result<(Diagnosis, Vec<SequenceDiscs>), DiagnoseError> {
    let spec = roi_spec(findings);
    let mut sequences = Vec::new();
    for DiagnoseInput { sequence, image: path, labels } in files {
        if findings.manifest.sequence_index(sequence).is_none() {
            return Err(DiagnoseError::Input {
                path: path.clone(),
                detail: format!(
                    "sequence {sequence:?} is not one the findings model reads ({})",
                    findings.manifest.sequences.join(", ")
                ),
            });
        }
        let discs = match (labels, segmentation) {
            (Some(labels), _) => {
                cut_discs_from_files(sequence, path, labels, &findings.manifest.network.config().levels, &spec)?
            }
            (None, Some(segmentation)) => segment_and_cut(segmentation, sequence, path, &spec)?,
            (None, None) => {
                return Err(DiagnoseError::Input {
                    path: path.clone(),
                    detail: "neither a segmentation of this image nor a segmentation model was given".into(),
                })
            }
        };
        if discs.disc_centres.is_empty() {
            return Err(DiagnoseError::Input {
                path: path.clone(),
                detail: "the segmentation found no intervertebral disc in this image".into(),
            });
        }
        sequences.push(discs);
    }
    for a in 0..sequences.len() {
        for b in a + 1..sequences.len() {
            check_same_spine(&sequences[a], &sequences[b])?;
        }
    }
    Ok((classify_levels(case, findings, &sequences), sequences))
}

/// The findings model's ROI geometry as the ROI cutter takes it.
pub fn roi_spec(findings: &FindingsModel) -> RoiSpec {
    let r = findings.manifest.roi;
    RoiSpec { width_mm: r.width_mm, height_mm: r.height_mm, width_px: r.width_px, height_px: r.height_px }
}
