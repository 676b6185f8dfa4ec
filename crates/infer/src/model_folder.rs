//! A trained model folder: everything `spineseg predict -m DIR` needs, and nothing else.
//!
//! ```text
//! DIR/model.json   ModelManifest: format_version, configuration ("2d" | "3d_fullres"),
//!                  network ({"kind": "plain_conv_unet", "config": {...}}, a NetworkConfig),
//!                  weights (file name), training (free form)
//! DIR/plans.json   the Plan the network was trained with (preprocessing, patch, label classes)
//! DIR/labels.json  OutputLabels, written by `spineseg plan`: ontology id -> training dataset value
//! DIR/weights.bpk  burn's own format (Module::save_file)
//! ```
//!
//! [`ModelFolder::load`] reads and cross-checks all of it (class and channel counts of plan and
//! network, the configuration's rank, patch divisibility, weights against the network) and names
//! the offending file in every error. [`ModelFolder::save`] writes the folder, `model.json` last,
//! so a folder with a `model.json` is complete.
//!
//! Format versions: 2 names the network's kind (`network.kind`, its config under
//! `network.config`); version 1 (the bare `PlainConvUNetConfig` under `network`) is still read
//! and converted to 2 on reading, so older folders keep loading unchanged.
//!
//! Label values: the network predicts class indices; [`crate::predict_case`] turns them into the
//! plan's label values (ontology ids); [`OutputLabels::to_dataset_values`] then maps those onto
//! the training dataset's own values, which is what nnU-Net writes.

use spineseg_io::json::JsonFileError;
use crate::error::{InferError, Result};
use crate::network::NetworkPredictor;
use crate::predict::PredictOptions;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use spineseg_preprocessing::plan::{ConfigurationName, Plan};
use spineseg_preprocessing::neighbour_slices::input_channels;
use spineseg_io::{Label, Volume};
use spineseg_model::{Network, NetworkConfig, PlainConvUNetConfig, WeightPrecision};
use std::path::{Path, PathBuf};

/// Version of the `model.json` layout that this build writes.
pub const MODEL_FORMAT_VERSION: u32 = 2;
/// The oldest `model.json` layout this build reads (converted on reading).
pub const OLDEST_MODEL_FORMAT_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "model.json";
/// The plan and the output label map (names owned by the plan schema's crate).
pub use spineseg_preprocessing::plan::{LABELS_FILE, PLAN_FILE};
pub const WEIGHTS_FILE: &str = "weights.bpk";
/// Optional: class prompts and their embeddings (`spineseg text cache`).
pub const PROMPT_EMBEDDINGS_FILE: &str = "prompt_embeddings.json";
/// The report texts of a text-guided model trained with reports ([`ReportEmbeddings`]); training
/// reads it (also on resume), prediction never does.
pub const REPORT_EMBEDDINGS_FILE: &str = "report_embeddings.json";
/// The sentence a case without a report gets as its report (embedded like any report; its
/// embedding travels in the weights, so prediction without a report needs no encoder).
pub const NULL_REPORT_TEXT: &str = "No radiology report is available for this scan.";
/// The per-view prompt table of a text-guided model trained with per-view prompts
/// ([`ViewPromptEmbeddings`]); training reads it (also on resume), prediction never does.
pub const VIEW_PROMPT_EMBEDDINGS_FILE: &str = "view_prompt_embeddings.json";

/// `model.json`.
///
/// Deserialising reads every format version from [`OLDEST_MODEL_FORMAT_VERSION`] to
/// [`MODEL_FORMAT_VERSION`] and converts older ones, so a read manifest is always of the current
/// version.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "ManifestOnDisk")]
pub struct ModelManifest {
    pub format_version: u32,
    /// The plan configuration the network was trained on.
    pub configuration: ConfigurationName,
    /// The network's kind and configuration.
    pub network: NetworkConfig,
    /// File name of the weights inside the folder (normally [`WEIGHTS_FILE`]).
    pub weights: String,
    /// Whatever the trainer wants to record (epochs, losses, seed, time); not read here.
    #[serde(default)]
    pub training: serde_json::Value,
    /// Post-processing that prediction applies by default (nnU-Net's `postprocessing.json`,
    /// chosen on validation cases). Absent in older folders: none.
    #[serde(default)]
    pub postprocessing: Postprocessing,
    /// 2D models with 2.5D input: each slice's neighbours on each side stacked as channels
    /// ([`spineseg_preprocessing::neighbour_slices`]), as the model was trained; prediction
    /// stacks them the same way. 0 (absent in the file): the slice alone.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub slice_context: usize,
}

fn is_zero(value: &usize) -> bool {
    *value == 0
}

/// `model.json` of any readable format version, before its `network` is read by the layout of
/// that version.
#[derive(Deserialize)]
struct ManifestOnDisk {
    format_version: u32,
    configuration: ConfigurationName,
    network: serde_json::Value,
    weights: String,
    #[serde(default)]
    training: serde_json::Value,
    #[serde(default)]
    postprocessing: Postprocessing,
    #[serde(default)]
    slice_context: usize,
}

impl TryFrom<ManifestOnDisk> for ModelManifest {
    type Error = String;

    fn try_from(file: ManifestOnDisk) -> std::result::Result<Self, String> {
        let network = match file.format_version {
            // Version 1 had only the plain U-Net, its config directly under `network`.
            1 => serde_json::from_value::<PlainConvUNetConfig>(file.network).map(NetworkConfig::from),
            MODEL_FORMAT_VERSION => serde_json::from_value::<NetworkConfig>(file.network),
            other => return Err(unsupported_version(other)),
        }
        .map_err(|e| format!("network: {e}"))?;
        Ok(ModelManifest {
            format_version: MODEL_FORMAT_VERSION,
            configuration: file.configuration,
            network,
            weights: file.weights,
            training: file.training,
            postprocessing: file.postprocessing,
            slice_context: file.slice_context,
        })
    }
}

fn unsupported_version(version: impl std::fmt::Display) -> String {
    format!(
        "format_version {version} is not supported (this build reads {OLDEST_MODEL_FORMAT_VERSION} to {MODEL_FORMAT_VERSION})"
    )
}

/// `prompt_embeddings.json`: the class prompts of a model's classes (row `k` = class index `k`,
/// background first) and their frozen sentence embeddings, computed once by `spineseg text
/// cache` or `spineseg train --text-guided`, so neither training's resume nor prediction needs
/// the text encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptEmbeddings {
    /// Name of the encoder folder.
    pub encoder: Option<String>,
    /// Where the encoder came from (its `spineseg_source.json`), if known.
    #[serde(default)]
    pub encoder_source: serde_json::Value,
    /// Embedding size.
    pub dim: usize,
    pub classes: Vec<ClassPrompt>,
}

/// One class of [`PromptEmbeddings`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassPrompt {
    /// Class index.
    pub class: usize,
    /// The plan's label value (ontology id; 0 for background).
    pub structure_id: Label,
    pub name: String,
    pub prompt: String,
    pub embedding: Vec<f32>,
}

impl PromptEmbeddings {
    /// Reads the file and checks its shape: classes numbered `0..n` in order, every embedding
    /// `dim` long and finite.
    pub fn load(path: &Path) -> Result<PromptEmbeddings> {
        let embeddings: PromptEmbeddings = read_json(path)?;
        for (k, class) in embeddings.classes.iter().enumerate() {
            if class.class != k {
                return Err(model_err(path, format!("entry {k} is class {}; classes must be listed 0, 1, 2, ...", class.class)));
            }
            check_embedding(path, &format!("class {k}"), &class.embedding, embeddings.dim)?;
        }
        Ok(embeddings)
    }

    /// Checks that the classes are the plan's (same count and label values, in order).
    pub fn check_plan(&self, plan: &Plan, path: &Path) -> Result<()> {
        let ours: Vec<Label> = self.classes.iter().map(|c| c.structure_id).collect();
        let plans: Vec<Label> = plan.labels.iter().map(|l| l.value).collect();
        if ours != plans {
            return Err(model_err(path, format!("classes {ours:?} differ from the plan's label values {plans:?}")));
        }
        Ok(())
    }

    /// The embeddings as a row-major `[classes, dim]` matrix.
    pub fn matrix(&self) -> (Vec<f32>, [usize; 2]) {
        (self.classes.iter().flat_map(|c| c.embedding.iter().copied()).collect(), [self.classes.len(), self.dim])
    }

    /// Writes the file atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_json(path, self)
    }
}

/// An embedding of an embeddings file must be `dim` finite values; the error names the file
/// and the entry (`what`).
fn check_embedding(path: &Path, what: &str, embedding: &[f32], dim: usize) -> Result<()> {
    if embedding.len() != dim || embedding.iter().any(|v| !v.is_finite()) {
        return Err(model_err(path, format!("{what}: the embedding should hold {dim} finite values, got {}", embedding.len())));
    }
    Ok(())
}

/// `view_prompt_embeddings.json`: every per-view prompt (ATM-Net's annotation-derived prompts)
/// a text-guided model's classes can get in training, embedded once with the encoder, so that a
/// training step looks its prompts up instead of running the encoder. Only training reads it;
/// prediction uses the class prompts of [`PromptEmbeddings`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewPromptEmbeddings {
    /// Name of the encoder folder.
    pub encoder: Option<String>,
    /// Embedding size.
    pub dim: usize,
    pub prompts: Vec<ViewPrompt>,
}

/// One prompt of [`ViewPromptEmbeddings`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewPrompt {
    /// The structure it describes (ontology id).
    pub structure_id: Label,
    pub prompt: String,
    pub embedding: Vec<f32>,
}

impl ViewPromptEmbeddings {
    /// Reads the file and checks that every embedding is `dim` finite values and no prompt is
    /// listed twice.
    pub fn load(path: &Path) -> Result<ViewPromptEmbeddings> {
        let table: ViewPromptEmbeddings = read_json(path)?;
        let mut seen = std::collections::HashSet::new();
        for (n, entry) in table.prompts.iter().enumerate() {
            check_embedding(path, &format!("prompt {n}"), &entry.embedding, table.dim)?;
            if !seen.insert(entry.prompt.as_str()) {
                return Err(model_err(path, format!("prompt {n} is listed twice: {:?}", entry.prompt)));
            }
        }
        Ok(table)
    }

    /// Writes the file atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_json(path, self)
    }
}

/// `report_embeddings.json`: the free-text report of each training case that has one (issue
/// 16's report text, e.g. the findings sentences built from SPIDER's gradings) and the "no
/// report" sentence ([`NULL_REPORT_TEXT`]), each with its sentence embedding, so that training
/// and its resume need no encoder. Only training reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportEmbeddings {
    /// Name of the encoder folder.
    pub encoder: Option<String>,
    /// Embedding size.
    pub dim: usize,
    /// The "no report" sentence and its embedding.
    pub null_report: ReportText,
    /// Case id -> its report.
    pub cases: std::collections::BTreeMap<String, ReportText>,
}

/// A report and its sentence embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportText {
    pub text: String,
    pub embedding: Vec<f32>,
}

impl ReportEmbeddings {
    /// Reads the file and checks that every embedding is `dim` finite values.
    pub fn load(path: &Path) -> Result<ReportEmbeddings> {
        let reports: ReportEmbeddings = read_json(path)?;
        let entries = std::iter::once(("the null report", &reports.null_report))
            .chain(reports.cases.iter().map(|(case, r)| (case.as_str(), r)));
        for (name, report) in entries {
            check_embedding(path, name, &report.embedding, reports.dim)?;
        }
        Ok(reports)
    }

    /// Writes the file atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_json(path, self)
    }
}

/// Default post-processing of a model folder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Postprocessing {
    /// Keep the largest 26-connected component of every structure.
    #[serde(default)]
    pub largest_component: bool,
}

impl ModelManifest {
    /// A manifest for `network` trained on `configuration`, weights in [`WEIGHTS_FILE`].
    pub fn new(configuration: ConfigurationName, network: impl Into<NetworkConfig>) -> Self {
        ModelManifest {
            format_version: MODEL_FORMAT_VERSION,
            configuration,
            network: network.into(),
            weights: WEIGHTS_FILE.to_string(),
            training: serde_json::Value::Null,
            postprocessing: Postprocessing::default(),
            slice_context: 0,
        }
    }

    /// Reads a `model.json` of any readable format version (see the type's documentation);
    /// errors name the file.
    pub fn load(path: &Path) -> Result<ModelManifest> {
        let value: serde_json::Value = read_json(path)?;
        // Checked before the layout, so an unknown version is reported as such, not as a field
        // that does not fit.
        if let Some(version) = value.get("format_version").and_then(serde_json::Value::as_u64) {
            if !(u64::from(OLDEST_MODEL_FORMAT_VERSION)..=u64::from(MODEL_FORMAT_VERSION)).contains(&version) {
                return Err(model_err(path, unsupported_version(version)));
            }
        }
        serde_json::from_value(value).map_err(|e| model_err(path, format!("invalid JSON: {e}")))
    }
}

/// One structure of `labels.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputStructure {
    /// Ontology id (the plan's label value).
    pub structure_id: Label,
    /// The training dataset's value for it.
    pub dataset_value: Label,
    pub dataset_name: String,
}

/// `labels.json` (written by `spineseg plan`): how to write predictions in the training
/// dataset's label values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputLabels {
    pub dataset: String,
    pub structures: Vec<OutputStructure>,
}

impl OutputLabels {
    /// Reads `labels.json`; errors name the file.
    pub fn load(path: &Path) -> Result<OutputLabels> {
        read_json(path)
    }

    /// Identity mapping for a plan's labels (for datasets already in ontology ids).
    pub fn identity(plan: &Plan) -> OutputLabels {
        OutputLabels {
            dataset: plan.dataset_name.clone(),
            structures: plan
                .labels
                .iter()
                .filter(|l| l.value != 0)
                .map(|l| OutputStructure { structure_id: l.value, dataset_value: l.value, dataset_name: l.name.clone() })
                .collect(),
        }
    }

    /// The dataset value of an ontology id (0 stays 0).
    pub fn dataset_value(&self, structure_id: Label) -> Option<Label> {
        if structure_id == 0 {
            return Some(0);
        }
        self.structures.iter().find(|s| s.structure_id == structure_id).map(|s| s.dataset_value)
    }

    /// The training dataset's label values: 0 and every `dataset_value`.
    pub fn dataset_values(&self) -> Vec<Label> {
        let mut v: Vec<Label> = std::iter::once(0).chain(self.structures.iter().map(|s| s.dataset_value)).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Ontology ids (a plan's label values) -> dataset values, voxel by voxel. Fails on an id
    /// that has no entry (the message lists it); [`ModelFolder::load`] checks the plan's labels
    /// up front, so predictions never fail here.
    pub fn to_dataset_values(&self, seg: &Volume<Label>) -> Result<Volume<Label>> {
        let mut table: Vec<Option<Label>> = vec![None; Label::MAX as usize + 1];
        table[0] = Some(0);
        for s in &self.structures {
            table[s.structure_id as usize] = Some(s.dataset_value);
        }
        let mut missing = None;
        let out = seg.map(|v| {
            table[*v as usize].unwrap_or_else(|| {
                missing.get_or_insert(*v);
                0
            })
        });
        match missing {
            Some(v) => Err(InferError::InvalidInput(format!(
                "structure id {v} has no dataset value in labels.json of dataset {}",
                self.dataset
            ))),
            None => Ok(out),
        }
    }
}

/// A loaded, checked model folder.
#[derive(Debug, Clone)]
pub struct ModelFolder {
    pub dir: PathBuf,
    pub manifest: ModelManifest,
    pub plan: Plan,
    pub labels: OutputLabels,
    /// With its trained weights, on [`ModelFolder::device`], without autodiff.
    pub network: Network,
    pub device: Device,
}

impl ModelFolder {
    /// Loads a model folder onto the CPU ([`Device::flex`]).
    pub fn load(dir: &Path) -> Result<ModelFolder> {
        Self::load_on(dir, Device::flex())
    }

    /// Loads and cross-checks a model folder (see the module documentation) onto `device`.
    pub fn load_on(dir: &Path, device: Device) -> Result<ModelFolder> {
        if !dir.is_dir() {
            return Err(model_err(dir, "not a folder (expected a trained model folder with model.json)"));
        }
        let manifest_path = dir.join(MANIFEST_FILE);
        let manifest = ModelManifest::load(&manifest_path)?;
        let bad_manifest = |detail: String| Err(model_err(&manifest_path, detail));
        if manifest.training.get("method").and_then(|m| m.as_str()) == Some("fcmae") {
            return bad_manifest(
                "is a pretrained encoder (`spineseg pretrain`), not a segmentation model: start a training from it with \
                 `spineseg train WORK --out MODEL --encoder DIR`"
                    .into(),
            );
        }
        let network = &manifest.network;
        if let Err(e) = network.validate() {
            return bad_manifest(format!("invalid network: {e}"));
        }
        let configuration = manifest.configuration;
        if network.spatial_dims().count() != configuration.dims() {
            return bad_manifest(format!(
                "the network is {}D but the configuration {configuration} is {}D",
                network.spatial_dims().count(),
                configuration.dims()
            ));
        }

        let plan_path = dir.join(PLAN_FILE);
        if !plan_path.is_file() {
            return Err(model_err(&plan_path, "missing (the plan the model was trained with)"));
        }
        let plan = Plan::load(&plan_path)?;
        let Some(plan_configuration) = plan.configuration(configuration) else {
            return Err(model_err(&plan_path, format!("has no configuration {configuration} (model.json asks for it)")));
        };
        if network.num_classes() != plan.num_classes() {
            return bad_manifest(format!(
                "the network has {} output classes but {} lists {} labels",
                network.num_classes(),
                plan_path.display(),
                plan.num_classes()
            ));
        }
        if manifest.slice_context > 0 && configuration != ConfigurationName::TwoD {
            return bad_manifest(format!(
                "slice_context {} (neighbouring slices as channels) needs the 2d configuration, not {configuration}",
                manifest.slice_context
            ));
        }
        let channels = input_channels(plan.channel_names.len(), manifest.slice_context);
        if network.in_channels() != channels {
            let context = match manifest.slice_context {
                0 => String::new(),
                c => format!(" x {} slices (slice_context {c}) = {channels}", 2 * c + 1),
            };
            return bad_manifest(format!(
                "the network takes {} input channels but {} lists {} channels{context}",
                network.in_channels(),
                plan_path.display(),
                plan.channel_names.len()
            ));
        }
        let divisor = network.size_divisor();
        if plan_configuration.patch_size.iter().zip(&divisor).any(|(p, d)| p % d != 0) {
            return bad_manifest(format!(
                "the patch {:?} of {} is not a multiple of the network's total stride {divisor:?}",
                plan_configuration.patch_size,
                plan_path.display()
            ));
        }

        let labels_path = dir.join(LABELS_FILE);
        let labels = OutputLabels::load(&labels_path)?;
        let unmapped: Vec<String> = plan
            .labels
            .iter()
            .filter(|l| labels.dataset_value(l.value).is_none())
            .map(|l| format!("{} ({})", l.value, l.name))
            .collect();
        if !unmapped.is_empty() {
            return Err(model_err(
                &labels_path,
                format!("no dataset value for the plan's label(s) {}", unmapped.join(", ")),
            ));
        }

        let weights_path = dir.join(&manifest.weights);
        if !weights_path.is_file() {
            return Err(model_err(&weights_path, "weights file missing (named by model.json)"));
        }
        let device = device.without_autodiff();
        let network = network.init(&device).try_load_file(&weights_path).map_err(|e| {
            let detail = match e {
                burn::store::RecordError::Io(m) => format!("cannot read the weights: {m}"),
                burn::store::RecordError::Validation(m) => {
                    format!("the weights do not fit the network in model.json: {}", shorten(&m, 600))
                }
            };
            model_err(&weights_path, detail)
        })?;
        Ok(ModelFolder { dir: dir.to_path_buf(), manifest, plan, labels, network, device })
    }

    pub fn configuration(&self) -> ConfigurationName {
        self.manifest.configuration
    }

    /// A predictor over a copy of the network.
    pub fn predictor(&self) -> NetworkPredictor {
        NetworkPredictor::new(self.network.clone(), self.device.clone())
    }

    /// [`PredictOptions::for_plan`] for the model's configuration (the plan's patch, step 0.5,
    /// Gaussian weights, left-right mirroring in 3D, none in 2D) with the folder's default
    /// post-processing (`model.json` "postprocessing").
    pub fn predict_options(&self) -> Result<PredictOptions> {
        let mut options = PredictOptions::for_plan(&self.plan, self.configuration())?;
        if self.manifest.postprocessing.largest_component {
            options.largest_component = Some(crate::Connectivity::Corners);
        }
        options.slice_context = self.manifest.slice_context;
        Ok(options)
    }

    /// Writes a model folder: weights, `plans.json`, `labels.json`, then `model.json` (so a
    /// folder with a `model.json` is complete). Every file is written under a temporary name and
    /// renamed. `manifest.network` must describe `network`.
    pub fn save(
        dir: &Path,
        manifest: &ModelManifest,
        plan: &Plan,
        labels: &OutputLabels,
        network: &Network,
    ) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| model_err(dir, format!("cannot create folder: {e}")))?;
        let weights_path = dir.join(&manifest.weights);
        write_weights(&weights_path, network, WeightPrecision::Single)?;
        plan.save(&dir.join(PLAN_FILE))?;
        write_json(&dir.join(LABELS_FILE), labels)?;
        write_json(&dir.join(MANIFEST_FILE), manifest)
    }

    /// Rewrites the folder's weights file in place in `precision` (half: half the file; a
    /// folder loads in either, computing in f32). The folder is loaded and checked first; the
    /// new file replaces the old by a rename, so a failure leaves the old one.
    pub fn rewrite_weights(dir: &Path, precision: WeightPrecision) -> Result<()> {
        let folder = ModelFolder::load(dir)?;
        write_weights(&folder.dir.join(&folder.manifest.weights), &folder.network, precision)
    }
}

/// Writes `network`'s weights to `path` under a temporary name in the same folder, then renames
/// (burn writes the file itself).
fn write_weights(path: &Path, network: &Network, precision: WeightPrecision) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp.bpk", std::process::id()));
    let fail = |e: String| {
        let _ = std::fs::remove_file(&tmp);
        model_err(path, format!("cannot write the weights: {e}"))
    };
    network.save_weights(&tmp, precision).map_err(|e| fail(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| fail(e.to_string()))
}

fn model_err(path: &Path, detail: impl Into<String>) -> InferError {
    InferError::Model { path: path.to_path_buf(), detail: detail.into() }
}

fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} ...", &text[..end])
}

/// Reads a model-folder JSON file; a missing file is "missing", so a user sees which part of the
/// folder is absent.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    spineseg_io::json::read_json(path).map_err(|e| match e {
        JsonFileError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => model_err(path, "missing"),
        JsonFileError::Read { source, .. } => model_err(path, format!("cannot read: {source}")),
        JsonFileError::Parse { source, .. } => model_err(path, format!("invalid JSON: {source}")),
        other => model_err(path, other.to_string()),
    })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    spineseg_io::json::write_json(path, value).map_err(|e| model_err(path, e.to_string()))
}
