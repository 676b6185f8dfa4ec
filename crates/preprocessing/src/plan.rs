//! The experiment plan, `plans.json` (nnU-Net v2's plans file): target spacing, patch and batch
//! size, network topology, normalisation, label list and resampling, per configuration. This
//! module is the schema only; `spineseg_planning::plan_from_fingerprint` derives a plan from a
//! dataset fingerprint with nnU-Net's planner rules. Users may edit a plan by hand, so
//! [`Plan::load`] validates everything and names the file in its errors.
//!
//! # Axes
//! Everything is in canonical RAS voxel axes: `i` (left-right), `j` (posterior-anterior), `k`
//! (inferior-superior). Lumbar MRI is sagittal, so `i` is the slice axis: the 2D configuration
//! works on `(j, k)` planes ([`SLICE_AXIS_2D`]), and its spacing and patch have two entries
//! `(j, k)`. nnU-Net instead transposes the coarsest axis to the front and slices across it; for
//! sagittal data that is the same axis, and fixing it keeps the plan simple.
//!

use crate::error::{PreprocessError, Result};
use crate::resample::{ResampleSettings, ANISOTROPY_THRESHOLD};
pub use crate::stats::IntensityStats;
use spineseg_io::json::{read_json, write_json};
use serde::{Deserialize, Serialize};
use spineseg_io::Label;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The plan's file name in a preprocessed dataset folder and in a model folder.
pub const PLAN_FILE: &str = "plans.json";

/// The output label map written beside the plan and copied into a model folder: class value
/// (ontology id) -> the training dataset's label value and name (read as
/// `spineseg_infer::model_folder::OutputLabels`).
pub const LABELS_FILE: &str = "labels.json";

/// Version of the `plans.json` layout.
pub const PLAN_FORMAT_VERSION: u32 = 1;

/// The voxel axis 2D slices are taken across: `i` (left-right), so slices are sagittal.
pub const SLICE_AXIS_2D: usize = 0;

/// A configuration of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ConfigurationName {
    /// Sagittal `(j, k)` slices.
    #[serde(rename = "2d")]
    TwoD,
    #[serde(rename = "3d_fullres")]
    ThreeDFullres,
}

impl ConfigurationName {
    /// 2 or 3.
    pub fn dims(self) -> usize {
        match self {
            ConfigurationName::TwoD => 2,
            ConfigurationName::ThreeDFullres => 3,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigurationName::TwoD => "2d",
            ConfigurationName::ThreeDFullres => "3d_fullres",
        }
    }
}

impl std::fmt::Display for ConfigurationName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Intensity normalisation of one channel (nnU-Net's normalisation schemes).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "scheme")]
pub enum Normalization {
    /// `(x - mean) / max(std, 1e-8)` with the case's own mean and std (nnU-Net's
    /// `ZScoreNormalization`); with `use_mask`, statistics and normalisation only inside the
    /// non-zero mask (voxels outside keep their value, 0).
    ZScore { use_mask: bool },
    /// Clip to the dataset's foreground percentiles 0.5..99.5, then z-score with the dataset's
    /// foreground mean and std (nnU-Net's `CTNormalization`).
    Ct { mean: f64, std: f64, lower: f64, upper: f64 },
    /// Leave intensities as they are.
    None,
}

/// One class of the network output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelClass {
    /// The label value in the pipeline's label volumes (ontology ids when read through a
    /// dataset's label map).
    pub value: Label,
    pub name: String,
}

/// U-Net topology of a configuration (nnU-Net's `PlainConvUNet` arguments). Per-axis lists have
/// one entry per spatial axis of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UNetTopology {
    pub n_stages: usize,
    pub features_per_stage: Vec<usize>,
    /// Conv kernel per stage and axis (1 or 3).
    pub kernel_sizes: Vec<Vec<usize>>,
    /// Downsampling stride per stage and axis; stage 0 is all ones.
    pub strides: Vec<Vec<usize>>,
    pub n_conv_per_stage_encoder: Vec<usize>,
    pub n_conv_per_stage_decoder: Vec<usize>,
}

impl UNetTopology {
    /// Per axis: the product of all strides, which every patch side must be divisible by.
    pub fn divisibility(&self) -> Vec<usize> {
        let dims = self.strides.first().map_or(0, |s| s.len());
        (0..dims).map(|a| self.strides.iter().map(|s| s[a]).product()).collect()
    }
}

/// One configuration (2D or 3D full resolution).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Configuration {
    /// Name of the preprocessed data folder this configuration uses.
    pub data_identifier: String,
    /// Target spacing in mm: `(i, j, k)` for 3D, `(j, k)` for 2D (the slice spacing is kept).
    pub spacing_mm: Vec<f64>,
    pub patch_size: Vec<usize>,
    pub batch_size: usize,
    /// Median case shape at the target spacing (voxels), for reference.
    pub median_shape: Vec<f64>,
    pub network: UNetTopology,
    /// nnU-Net's `batch_dice` (true for 2D).
    pub batch_dice: bool,
}

/// The experiment plan, `plans.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: u32,
    pub dataset_name: String,
    pub channel_names: Vec<String>,
    /// Per channel.
    pub normalization: Vec<Normalization>,
    /// Class index `c` <-> `labels[c]`; `labels[0]` is background (value 0).
    pub labels: Vec<LabelClass>,
    /// The 3D target spacing (`i, j, k`), from which the configurations' spacings come.
    pub target_spacing_mm: [f64; 3],
    pub resampling: ResampleSettings,
    /// Dataset-level foreground intensity statistics per channel (from the fingerprint).
    pub foreground_intensity_properties_per_channel: Vec<Option<IntensityStats>>,
    pub configurations: BTreeMap<ConfigurationName, Configuration>,
    /// The options the plan was made with (for the record; not used after planning).
    pub planner: PlanOptions,
}

/// Options of the planner (`spineseg_planning::plan_from_fingerprint`), kept in the plan for the
/// record. Budgets are in nnU-Net's feature-map units (elements of all conv outputs of one
/// sample, see `spineseg_planning::planner::estimate_feature_map_size`) times the batch size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanOptions {
    pub base_features: usize,
    pub max_features_2d: usize,
    pub max_features_3d: usize,
    pub n_conv_per_stage_encoder: usize,
    pub n_conv_per_stage_decoder: usize,
    /// Smallest feature-map side a pooled axis may reach (nnU-Net: 4).
    pub min_feature_map_edge: usize,
    /// Feature-map budget per training batch, 3D.
    pub budget_3d: f64,
    /// Feature-map budget per training batch, 2D.
    pub budget_2d: f64,
    pub min_batch_size: usize,
    /// Largest fraction of the dataset's voxels one batch may cover (nnU-Net: 0.05).
    pub max_dataset_covered: f64,
    /// nnU-Net: 3.
    pub anisotropy_threshold: f64,
    /// Use this 3D target spacing instead of the planned one.
    pub overwrite_target_spacing: Option<[f64; 3]>,
}

impl Default for PlanOptions {
    /// Our CPU default: base width 16 and budgets of 4e7 feature-map units per batch (2D and
    /// 3D). On nnU-Net's GPU calibration one unit is about 7 bytes with mixed precision; with
    /// f32 activations and gradients on a CPU count ~20 bytes, so a batch needs roughly 1 GB,
    /// far inside 24 GiB even with framework overhead, and one 3D iteration is a few tens of
    /// GFLOP, seconds on two cores. (nnU-Net's budgets are ~28x larger.)
    fn default() -> Self {
        PlanOptions {
            base_features: 16,
            budget_3d: 4.0e7,
            budget_2d: 4.0e7,
            ..PlanOptions::nnunet()
        }
    }
}

impl PlanOptions {
    /// nnU-Net v2's `ExperimentPlanner` defaults (8 GB GPU target: reference 560e6 at batch 2 in
    /// 3D, 85e6 at batch 12 in 2D).
    pub fn nnunet() -> Self {
        PlanOptions {
            base_features: 32,
            max_features_2d: 512,
            max_features_3d: 320,
            n_conv_per_stage_encoder: 2,
            n_conv_per_stage_decoder: 2,
            min_feature_map_edge: 4,
            budget_3d: 560e6 * 2.0,
            budget_2d: 85e6 * 12.0,
            min_batch_size: 2,
            max_dataset_covered: 0.05,
            anisotropy_threshold: ANISOTROPY_THRESHOLD,
            overwrite_target_spacing: None,
        }
    }
}

impl Plan {
    pub fn configuration(&self, name: ConfigurationName) -> Option<&Configuration> {
        self.configurations.get(&name)
    }

    pub fn num_classes(&self) -> usize {
        self.labels.len()
    }

    /// Class index of each label value (`None` for values the plan does not know).
    pub fn class_lookup(&self) -> Vec<Option<u8>> {
        let mut table = vec![None; Label::MAX as usize + 1];
        for (c, l) in self.labels.iter().enumerate() {
            table[l.value as usize] = Some(c as u8);
        }
        table
    }

    /// The 3D spacing a configuration resamples a case with canonical spacing `case_spacing_mm`
    /// to: the configuration's spacing, with the slice spacing kept for 2D (as nnU-Net).
    pub fn target_spacing_for(&self, name: ConfigurationName, case_spacing_mm: [f64; 3]) -> Option<[f64; 3]> {
        let c = self.configuration(name)?;
        Some(match name {
            ConfigurationName::ThreeDFullres => [c.spacing_mm[0], c.spacing_mm[1], c.spacing_mm[2]],
            ConfigurationName::TwoD => {
                let mut s = [0.0; 3];
                s[SLICE_AXIS_2D] = case_spacing_mm[SLICE_AXIS_2D];
                let in_plane: Vec<usize> = (0..3).filter(|&a| a != SLICE_AXIS_2D).collect();
                s[in_plane[0]] = c.spacing_mm[0];
                s[in_plane[1]] = c.spacing_mm[1];
                s
            }
        })
    }

    /// Checks everything a hand-edited plan can get wrong; the message names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.format_version != PLAN_FORMAT_VERSION {
            return Err(format!("format_version {} is not {PLAN_FORMAT_VERSION}", self.format_version));
        }
        if self.channel_names.is_empty() {
            return Err("channel_names is empty".into());
        }
        if self.normalization.len() != self.channel_names.len() {
            return Err(format!(
                "normalization has {} entries for {} channels",
                self.normalization.len(),
                self.channel_names.len()
            ));
        }
        if self.labels.first().map(|l| l.value) != Some(0) {
            return Err("labels[0] must be the background, value 0".into());
        }
        if self.labels.len() > 256 {
            return Err(format!("{} labels; at most 256 classes are supported", self.labels.len()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for l in &self.labels {
            if !seen.insert(l.value) {
                return Err(format!("label value {} is listed twice", l.value));
            }
        }
        if !self.target_spacing_mm.iter().all(|s| s.is_finite() && *s > 0.0) {
            return Err(format!("target_spacing_mm {:?} must be positive", self.target_spacing_mm));
        }
        if let crate::resample::SeparateZ::Auto { anisotropy_threshold } = self.resampling.separate_z {
            if !(anisotropy_threshold.is_finite() && anisotropy_threshold >= 1.0) {
                return Err(format!("resampling anisotropy_threshold {anisotropy_threshold} must be >= 1"));
            }
        }
        if self.configurations.is_empty() {
            return Err("no configurations".into());
        }
        for (name, c) in &self.configurations {
            let dims = name.dims();
            let err = |detail: String| Err(format!("configuration {name}: {detail}"));
            if c.spacing_mm.len() != dims || !c.spacing_mm.iter().all(|s| s.is_finite() && *s > 0.0) {
                return err(format!("spacing_mm {:?} must be {dims} positive values", c.spacing_mm));
            }
            if c.patch_size.len() != dims || c.patch_size.contains(&0) {
                return err(format!("patch_size {:?} must be {dims} positive values", c.patch_size));
            }
            if c.batch_size == 0 {
                return err("batch_size must be at least 1".into());
            }
            let n = &c.network;
            if n.n_stages == 0 {
                return err("network.n_stages must be at least 1".into());
            }
            let lists = [
                ("features_per_stage", n.features_per_stage.len(), n.n_stages),
                ("kernel_sizes", n.kernel_sizes.len(), n.n_stages),
                ("strides", n.strides.len(), n.n_stages),
                ("n_conv_per_stage_encoder", n.n_conv_per_stage_encoder.len(), n.n_stages),
                ("n_conv_per_stage_decoder", n.n_conv_per_stage_decoder.len(), n.n_stages - 1),
            ];
            for (field, len, want) in lists {
                if len != want {
                    return err(format!("network.{field} has {len} entries, n_stages = {} needs {want}", n.n_stages));
                }
            }
            for (s, (k, st)) in n.kernel_sizes.iter().zip(&n.strides).enumerate() {
                if k.len() != dims || st.len() != dims {
                    return err(format!("stage {s}: kernel_sizes and strides need {dims} entries"));
                }
                if k.iter().any(|v| v % 2 == 0) {
                    return err(format!("stage {s}: kernel sizes {k:?} must be odd"));
                }
                if st.contains(&0) {
                    return err(format!("stage {s}: strides {st:?} must be positive"));
                }
            }
            if n.features_per_stage.contains(&0) || n.n_conv_per_stage_encoder.contains(&0) || n.n_conv_per_stage_decoder.contains(&0) {
                return err("network widths and conv counts must be positive".into());
            }
            let div = n.divisibility();
            for a in 0..dims {
                if c.patch_size[a] % div[a] != 0 {
                    return err(format!(
                        "patch_size {:?} is not divisible by the network's total stride {:?} (axis {a})",
                        c.patch_size, div
                    ));
                }
            }
        }
        Ok(())
    }

    /// Writes `plans.json` (pretty, atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        Ok(write_json(path, self)?)
    }

    /// Reads and validates a plan; errors name the file.
    pub fn load(path: &Path) -> Result<Plan> {
        let plan: Plan = read_json(path)?;
        plan.validate().map_err(|detail| PreprocessError::InvalidPlan { path: PathBuf::from(path), detail })?;
        Ok(plan)
    }
}
