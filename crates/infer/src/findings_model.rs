//! A trained disc-findings model folder and its prediction: everything `spineseg diagnose` needs
//! besides the segmentation model.
//!
//! ```text
//! FINDINGS_MODEL/findings_model.json   format, network kind + config, ROI geometry, sequence
//!                                      order, decision thresholds and how they were chosen,
//!                                      the text head's prompts, the training record
//! FINDINGS_MODEL/weights.bpk           the network's weights (the text head's frozen prompt
//!                                      embeddings included, so no text encoder is needed)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{activation, Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use spineseg_findings::gradings::FindingsRow;
use spineseg_findings::{Finding, FindingProbabilities};
use spineseg_model::{DiscFindingsNet, DiscFindingsNetConfig, WeightPrecision, NUM_FINDINGS, NUM_GRADES};

use crate::error::{InferError, Result};

/// The manifest's file name.
pub const FINDINGS_MODEL_FILE: &str = "findings_model.json";
/// The weights' file name.
pub const FINDINGS_WEIGHTS_FILE: &str = "weights.bpk";
/// The manifest format this release writes and reads.
pub const FINDINGS_MODEL_FORMAT: u32 = 1;
/// Finding keys in the network's output order: [`Finding::ALL`]'s keys.
pub const FINDING_KEYS: [&str; NUM_FINDINGS] = {
    let mut keys = [""; NUM_FINDINGS];
    let mut i = 0;
    while i < NUM_FINDINGS {
        keys[i] = Finding::ALL[i].key();
        i += 1;
    }
    keys
};

/// The network of a findings model, by kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", content = "config")]
pub enum FindingsNetwork {
    /// [`DiscFindingsNet`].
    #[serde(rename = "disc_findings_cnn")]
    DiscFindingsCnn(DiscFindingsNetConfig),
}

impl FindingsNetwork {
    /// The network's config.
    pub fn config(&self) -> &DiscFindingsNetConfig {
        match self {
            FindingsNetwork::DiscFindingsCnn(config) => config,
        }
    }
}

/// Where and how large a level's region of interest is cut (see `spineseg_findings::roi`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RoiGeometry {
    pub width_mm: f64,
    pub height_mm: f64,
    pub width_px: usize,
    pub height_px: usize,
}

/// `findings_model.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FindingsManifest {
    pub format: u32,
    pub network: FindingsNetwork,
    pub roi: RoiGeometry,
    /// Sequence of each input channel, e.g. `["t1", "t2"]`.
    pub sequences: Vec<String>,
    /// Sequences the model was trained with (a T2-only model ignores T1 even when given).
    pub trained_sequences: Vec<String>,
    /// Decision threshold on the probability, per finding key.
    pub thresholds: BTreeMap<String, f32>,
    /// How the thresholds were chosen (on validation patients only).
    pub threshold_rule: String,
    /// The text head's prompts per level (`[levels][PROMPTS_PER_LEVEL]`), for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts: Option<Vec<Vec<String>>>,
    /// How it was trained (seed, steps, patients, class counts, ...).
    #[serde(default)]
    pub training: serde_json::Value,
}

impl FindingsManifest {
    /// Reads and checks a `findings_model.json` (format, network config, sequences, ROI size,
    /// finding names); errors name the file.
    pub fn load(manifest_path: &Path) -> Result<FindingsManifest> {
        let manifest: FindingsManifest = spineseg_io::json::read_json(manifest_path)
            .map_err(|e| model_error(manifest_path, format!("not a readable findings model manifest: {e}")))?;
        if manifest.format != FINDINGS_MODEL_FORMAT {
            return Err(model_error(
                manifest_path,
                format!("format {} is not supported (this release reads {FINDINGS_MODEL_FORMAT})", manifest.format),
            ));
        }
        let config = manifest.network.config();
        config.validate().map_err(|e| model_error(manifest_path, e.to_string()))?;
        if config.sequences != manifest.sequences.len() {
            return Err(model_error(
                manifest_path,
                format!(
                    "{} sequences named for a network with {} input channels",
                    manifest.sequences.len(),
                    config.sequences
                ),
            ));
        }
        if config.roi_px != [manifest.roi.height_px, manifest.roi.width_px] {
            return Err(model_error(manifest_path, "the ROI size does not match the network's"));
        }
        if !(manifest.roi.width_mm.is_finite()
            && manifest.roi.width_mm > 0.0
            && manifest.roi.height_mm.is_finite()
            && manifest.roi.height_mm > 0.0)
        {
            return Err(model_error(manifest_path, "the ROI's size in mm must be finite and positive"));
        }
        if let Some(bad) = manifest.thresholds.keys().find(|k| !FINDING_KEYS.contains(&k.as_str())) {
            return Err(model_error(
                manifest_path,
                format!("unknown finding {bad:?} in thresholds (known: {})", FINDING_KEYS.join(", ")),
            ));
        }
        if let Some((key, t)) = manifest.thresholds.iter().find(|(_, t)| !t.is_finite()) {
            return Err(model_error(manifest_path, format!("threshold of {key} is {t}")));
        }
        Ok(manifest)
    }

    /// The thresholds in output order (0.5 where a key is missing).
    pub fn threshold_array(&self) -> [f32; NUM_FINDINGS] {
        FINDING_KEYS.map(|k| self.thresholds.get(k).copied().unwrap_or(0.5))
    }

    /// Index of the level with ontology id `structure`, if the model knows it.
    pub fn level_index(&self, structure: u16) -> Option<usize> {
        self.network.config().levels.iter().position(|&l| l == structure)
    }

    /// Index of `sequence` among the input channels.
    pub fn sequence_index(&self, sequence: &str) -> Option<usize> {
        self.sequences.iter().position(|s| s.eq_ignore_ascii_case(sequence))
    }
}

/// One level to classify: its level index and one ROI per sequence (`None` = missing).
#[derive(Debug, Clone)]
pub struct FindingsInput {
    pub level: usize,
    /// One entry per input channel, each `height_px * width_px` values (row 0 superior) or
    /// `None`.
    pub rois: Vec<Option<Vec<f32>>>,
}

/// Probabilities of one level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FindingsProbabilities {
    /// Probability of each finding, in [`FINDING_KEYS`] order.
    pub findings: [f32; NUM_FINDINGS],
    /// Probabilities of Pfirrmann grades 1..=5.
    pub grades: [f32; NUM_GRADES],
}

impl FindingsProbabilities {
    /// The most probable Pfirrmann grade (1..=5).
    pub fn grade(&self) -> u8 {
        FindingProbabilities::from(*self).pfirrmann_grade()
    }
}

impl From<FindingsProbabilities> for FindingProbabilities {
    fn from(p: FindingsProbabilities) -> Self {
        FindingProbabilities { p: p.findings, pfirrmann_probabilities: p.grades }
    }
}

/// A findings CSV row for one disc level of `case`: its probabilities and the decisions at
/// `thresholds`, or "not found" without probabilities.
pub fn findings_row(
    case: &str,
    level: u16,
    probabilities: Option<FindingsProbabilities>,
    thresholds: [f32; NUM_FINDINGS],
) -> FindingsRow {
    match probabilities {
        None => FindingsRow::not_found(case, spineseg_anatomy::StructureId(level)),
        Some(p) => {
            let probabilities = FindingProbabilities::from(p);
            FindingsRow {
                case: case.to_string(),
                level: spineseg_anatomy::StructureId(level),
                findings: Some(probabilities.decide(thresholds)),
                probabilities: Some(probabilities),
            }
        }
    }
}

/// Builds the network's input tensors for `inputs` (missing sequences are zeros with flag 0).
///
/// # Shapes
/// - rois `[n, sequences, height, width]`, present `[n, sequences]`, level `[n]`
pub fn findings_batch(
    inputs: &[&FindingsInput],
    sequences: usize,
    roi_px: [usize; 2],
    device: &Device,
) -> (Tensor<4>, Tensor<2>, Tensor<1, Int>) {
    let pixels = roi_px[0] * roi_px[1];
    let n = inputs.len();
    let mut rois = vec![0f32; n * sequences * pixels];
    let mut present = vec![0f32; n * sequences];
    for (b, input) in inputs.iter().enumerate() {
        for (s, roi) in input.rois.iter().enumerate().take(sequences) {
            if let Some(roi) = roi {
                assert_eq!(roi.len(), pixels, "an ROI should have height_px * width_px values");
                rois[(b * sequences + s) * pixels..][..pixels].copy_from_slice(roi);
                present[b * sequences + s] = 1.0;
            }
        }
    }
    let levels: Vec<i64> = inputs.iter().map(|i| i.level as i64).collect();
    (
        Tensor::from_data(TensorData::new(rois, [n, sequences, roi_px[0], roi_px[1]]), device),
        Tensor::from_data(TensorData::new(present, [n, sequences]), device),
        Tensor::from_data(TensorData::new(levels, [n]), device),
    )
}

/// Probabilities from a network's output: sigmoid of the finding logits, softmax of the grades.
pub fn probabilities(
    net: &DiscFindingsNet,
    rois: Tensor<4>,
    present: Tensor<2>,
    level: Tensor<1, Int>,
) -> Vec<FindingsProbabilities> {
    let out = net.forward(rois, present, level);
    let findings: Vec<f32> =
        activation::sigmoid(out.finding_logits).into_data().try_to_vec::<f32>().expect("f32 logits");
    let grades: Vec<f32> =
        activation::softmax(out.grade_logits, 1).into_data().try_to_vec::<f32>().expect("f32 logits");
    findings
        .chunks(NUM_FINDINGS)
        .zip(grades.chunks(NUM_GRADES))
        .map(|(f, g)| FindingsProbabilities {
            findings: f.try_into().expect("NUM_FINDINGS values"),
            grades: g.try_into().expect("NUM_GRADES values"),
        })
        .collect()
}

/// Probabilities for many inputs, in batches of 64 (no autodiff).
pub fn predict_findings(
    net: &DiscFindingsNet,
    config: &DiscFindingsNetConfig,
    inputs: &[FindingsInput],
    device: &Device,
) -> Vec<FindingsProbabilities> {
    let mut out = Vec::with_capacity(inputs.len());
    let refs: Vec<&FindingsInput> = inputs.iter().collect();
    for chunk in refs.chunks(64) {
        let (rois, present, level) = findings_batch(chunk, config.sequences, config.roi_px, device);
        out.extend(probabilities(net, rois, present, level));
    }
    out
}

/// A loaded findings model folder.
#[derive(Debug)]
pub struct FindingsModel {
    pub dir: PathBuf,
    pub manifest: FindingsManifest,
    pub net: DiscFindingsNet,
    pub device: Device,
}

fn model_error(path: &Path, detail: impl Into<String>) -> InferError {
    InferError::Model { path: path.to_path_buf(), detail: detail.into() }
}

impl FindingsModel {
    /// Loads and checks `dir` (every error names the file).
    pub fn load(dir: &Path) -> Result<FindingsModel> {
        if !dir.is_dir() {
            return Err(model_error(dir, "not a findings model folder (no such folder)"));
        }
        let manifest = FindingsManifest::load(&dir.join(FINDINGS_MODEL_FILE))?;
        let config = manifest.network.config();
        let device = Device::flex();
        let weights = dir.join(FINDINGS_WEIGHTS_FILE);
        if !weights.is_file() {
            return Err(model_error(&weights, "missing weights file"));
        }
        let net = config.init(&device).try_load_file(&weights).map_err(|e| {
            model_error(&weights, format!("weights do not fit the network in {FINDINGS_MODEL_FILE}: {e}"))
        })?;
        Ok(FindingsModel { dir: dir.to_path_buf(), manifest, net, device })
    }

    /// Writes a findings model folder: weights first (under a temporary name, then renamed),
    /// the manifest last, so a folder with a manifest is complete.
    pub fn save(
        dir: &Path,
        net: &DiscFindingsNet,
        manifest: &FindingsManifest,
        precision: WeightPrecision,
    ) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| model_error(dir, format!("cannot create folder: {e}")))?;
        let weights = dir.join(FINDINGS_WEIGHTS_FILE);
        let temporary = dir.join(format!(".{FINDINGS_WEIGHTS_FILE}.partial"));
        net.save_file(&temporary, precision)
            .map_err(|e| model_error(&temporary, format!("cannot write weights: {e}")))?;
        std::fs::rename(&temporary, &weights)
            .map_err(|e| model_error(&weights, format!("cannot move weights into place: {e}")))?;
        spineseg_io::json::write_json(&dir.join(FINDINGS_MODEL_FILE), manifest)
            .map_err(|e| model_error(&dir.join(FINDINGS_MODEL_FILE), e.to_string()))
    }

    /// Probabilities for `inputs`.
    pub fn predict(&self, inputs: &[FindingsInput]) -> Vec<FindingsProbabilities> {
        predict_findings(&self.net, self.manifest.network.config(), inputs, &self.device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spineseg_model::FindingsHeadConfig;

    fn manifest(config: DiscFindingsNetConfig) -> FindingsManifest {
        FindingsManifest {
            format: FINDINGS_MODEL_FORMAT,
            roi: RoiGeometry {
                width_mm: 60.0,
                height_mm: 40.0,
                width_px: config.roi_px[1],
                height_px: config.roi_px[0],
            },
            network: FindingsNetwork::DiscFindingsCnn(config),
            sequences: vec!["t1".into(), "t2".into()],
            trained_sequences: vec!["t1".into(), "t2".into()],
            thresholds: FINDING_KEYS.iter().map(|k| (k.to_string(), 0.3)).collect(),
            threshold_rule: "test".into(),
            prompts: None,
            training: serde_json::Value::Null,
        }
    }

    #[test]
    fn save_load_predicts_the_same_and_names_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let device = Device::flex();
        let config = DiscFindingsNetConfig::new(vec![123, 124], FindingsHeadConfig::Text { text_dim: 6, embed_dim: 4 })
            .with_roi_px([8, 16])
            .with_widths(vec![4, 8]);
        let net =
            config.init(&device).with_prompt_embeddings((0..2 * 15 * 6).map(|i| (i as f32 * 0.3).cos()).collect());
        let inputs = vec![
            FindingsInput { level: 1, rois: vec![None, Some((0..128).map(|i| (i as f32 * 0.1).sin()).collect())] },
            FindingsInput { level: 0, rois: vec![Some(vec![0.5; 128]), Some(vec![-0.5; 128])] },
        ];
        let before = predict_findings(&net, &config, &inputs, &device);
        FindingsModel::save(dir.path(), &net, &manifest(config), WeightPrecision::Single).unwrap();
        let loaded = FindingsModel::load(dir.path()).unwrap();
        assert_eq!(loaded.predict(&inputs), before);
        assert_eq!(loaded.manifest.threshold_array(), [0.3; 5]);
        assert!(before.iter().all(|p| (p.grades.iter().sum::<f32>() - 1.0).abs() < 1e-5));

        std::fs::write(dir.path().join(FINDINGS_WEIGHTS_FILE), b"not weights").unwrap();
        let error = FindingsModel::load(dir.path()).unwrap_err().to_string();
        assert!(error.contains(FINDINGS_WEIGHTS_FILE), "{error}");
        std::fs::write(dir.path().join(FINDINGS_MODEL_FILE), b"{").unwrap();
        let error = FindingsModel::load(dir.path()).unwrap_err().to_string();
        assert!(error.contains(FINDINGS_MODEL_FILE), "{error}");
    }
}
