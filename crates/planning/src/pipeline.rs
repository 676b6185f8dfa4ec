//! nnU-Net's plan-and-preprocess as one call: open a dataset, fingerprint it, make the typed
//! plan and preprocess the training cases into a work folder that training reads.
//!
//! ```text
//! WORK/fingerprint.json            dataset fingerprint (crate::fingerprint)
//! WORK/plans.json                  the plan (spineseg_preprocessing::plan), editable by hand
//! WORK/labels.json                 ontology id -> the dataset's own label value and name
//! WORK/preprocessed/<configuration>/   preprocessed training cases (spineseg_preprocessing::preprocess)
//! ```
//!
//! This module sits above datasets, fingerprint, plan and preprocess and is imported by none of
//! them. It reports its steps through a callback, so a command line can print them as they
//! happen and a test can ignore them.

use spineseg_datasets::annotations::DeclaredAnnotations;
use spineseg_datasets::{detect_and_open, Dataset, DatasetKind, LabelTarget};
use crate::error::{PlanningError, Result};
use spineseg_datasets::error::DatasetError;
use crate::fingerprint::{fingerprint_dataset, FingerprintOptions};
use spineseg_preprocessing::plan::{ConfigurationName, Plan, PlanOptions};
use spineseg_preprocessing::preprocess::preprocess_dataset;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use crate::fingerprint::FINGERPRINT_FILE;
pub use spineseg_preprocessing::plan::{LABELS_FILE, PLAN_FILE};

/// Settings of [`plan_and_preprocess`].
#[derive(Debug, Clone)]
pub struct PlanAndPreprocessOptions {
    /// Configurations to preprocess (all are planned).
    pub configurations: Vec<ConfigurationName>,
    /// Cases whose id matches one of these patterns are left out (`*` matches any text).
    pub exclude_cases: Vec<String>,
    /// Planner settings (widths, memory budgets, target spacing override).
    pub plan: PlanOptions,
    /// Replaces the planned batch size of every configuration (the patch stays as planned).
    pub batch_size: Option<usize>,
    /// `false`: write fingerprint, plan and labels only.
    pub preprocess: bool,
    /// Cases fingerprinted or preprocessed at the same time (each holds its volumes).
    pub threads: usize,
}

impl Default for PlanAndPreprocessOptions {
    /// Both configurations, nothing excluded, nnU-Net's planner settings, two threads.
    fn default() -> Self {
        PlanAndPreprocessOptions {
            configurations: vec![ConfigurationName::TwoD, ConfigurationName::ThreeDFullres],
            exclude_cases: Vec::new(),
            plan: PlanOptions::default(),
            batch_size: None,
            preprocess: true,
            threads: 2,
        }
    }
}

/// A step of [`plan_and_preprocess`] that has just finished, for progress reports.
#[derive(Debug)]
pub enum PlanStep<'a> {
    /// The dataset is open and the exclusions applied.
    DatasetOpened { name: &'a str, kind: DatasetKind, training_cases: usize, excluded: usize },
    /// `fingerprint.json` is written.
    Fingerprinted { cases: usize, seconds: f64 },
    /// `plans.json` and `labels.json` are written.
    Planned { plan: &'a Plan },
    /// One configuration's cases are preprocessed into `dir`.
    Preprocessed { configuration: ConfigurationName, cases: usize, seconds: f64, dir: &'a Path },
}

/// What [`plan_and_preprocess`] wrote.
#[derive(Debug, Clone)]
pub struct PlanSummary {
    /// The dataset's name.
    pub dataset: String,
    /// Training cases planned on (after exclusions).
    pub training_cases: usize,
    /// Cases left out by [`PlanAndPreprocessOptions::exclude_cases`].
    pub excluded: usize,
    /// The plan, as written to `WORK/plans.json`.
    pub plan: Plan,
    /// `WORK/plans.json`.
    pub plans_path: PathBuf,
    /// Per preprocessed configuration, the ids of the cases written.
    pub preprocessed: BTreeMap<ConfigurationName, Vec<String>>,
}

/// Where the preprocessed cases of `configuration` live in a work folder.
pub fn preprocessed_dir(work: &Path, configuration: ConfigurationName) -> PathBuf {
    work.join("preprocessed").join(configuration.as_str())
}

/// Opens the dataset at `dataset_dir` (any layout [`detect_and_open`] knows), leaves out the
/// excluded cases, writes `work/fingerprint.json`, `work/plans.json`, `work/labels.json` and,
/// unless told not to, the preprocessed cases of every requested configuration. `on_step` hears
/// of each step as it finishes.
pub fn plan_and_preprocess(
    dataset_dir: &Path,
    work: &Path,
    options: &PlanAndPreprocessOptions,
    on_step: &mut dyn FnMut(PlanStep<'_>),
) -> Result<PlanSummary> {
    if options.batch_size == Some(0) {
        return Err(PlanningError::Planning("the batch size must be at least 1".into()));
    }
    let threads = options.threads.max(1);
    let mut dataset = detect_and_open(dataset_dir)?;
    // A bad annotations.json stops planning before anything is written.
    DeclaredAnnotations::for_dataset(&dataset)?;
    let before = dataset.cases.len();
    dataset.cases.retain(|c| !options.exclude_cases.iter().any(|p| glob_match(p, &c.id)));
    if dataset.training_cases().next().is_none() {
        return Err(PlanningError::Dataset(DatasetError::InvalidDataset {
            path: dataset_dir.to_path_buf(),
            detail: format!("no training cases left (had {before})"),
        }));
    }
    create_dir(work)?;
    let training_cases = dataset.training_cases().count();
    let excluded = before - dataset.cases.len();
    on_step(PlanStep::DatasetOpened { name: &dataset.name, kind: dataset.kind, training_cases, excluded });

    let started = Instant::now();
    let fingerprint_options = FingerprintOptions { threads, ..FingerprintOptions::default() };
    let fingerprint = fingerprint_dataset(&dataset, &fingerprint_options)?;
    fingerprint.save(&work.join(FINGERPRINT_FILE))?;
    on_step(PlanStep::Fingerprinted { cases: fingerprint.cases.len(), seconds: started.elapsed().as_secs_f64() });

    let mut plan = crate::plan_from_fingerprint(&fingerprint, &options.plan)?;
    if let Some(batch_size) = options.batch_size {
        for config in plan.configurations.values_mut() {
            config.batch_size = batch_size;
        }
    }
    let plans_path = work.join(PLAN_FILE);
    plan.save(&plans_path)?;
    write_output_labels(&work.join(LABELS_FILE), &dataset)?;
    on_step(PlanStep::Planned { plan: &plan });

    let mut preprocessed = BTreeMap::new();
    if options.preprocess {
        for &configuration in &options.configurations {
            let started = Instant::now();
            let dir = preprocessed_dir(work, configuration);
            create_dir(&dir)?;
            let ids = preprocess_dataset(&dataset, &plan, configuration, &dir, threads)?;
            on_step(PlanStep::Preprocessed {
                configuration,
                cases: ids.len(),
                seconds: started.elapsed().as_secs_f64(),
                dir: &dir,
            });
            preprocessed.insert(configuration, ids);
        }
    }
    Ok(PlanSummary { dataset: dataset.name, training_cases, excluded, plan, plans_path, preprocessed })
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| PlanningError::Os { path: dir.to_path_buf(), source })
}

/// `labels.json`: for every ontology structure the dataset labels, the dataset's own value and
/// name, so predictions can be written in the training dataset's label values (as nnU-Net does).
fn write_output_labels(path: &Path, dataset: &Dataset) -> Result<()> {
    let mut by_structure: BTreeMap<u16, (u16, String)> = BTreeMap::new();
    for (value, entry) in dataset.label_map.entries() {
        if let LabelTarget::Structure(id) = entry.target {
            // The first (lowest) dataset value of a structure wins, e.g. SPIDER's fully visible
            // vertebra 1 over its partially visible 101.
            by_structure.entry(id.0).or_insert((value, entry.name.clone()));
        }
    }
    let json = serde_json::json!({
        "dataset": dataset.name,
        "structures": by_structure.iter().map(|(id, (value, name))| serde_json::json!({
            "structure_id": id, "dataset_value": value, "dataset_name": name,
        })).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&json)
        .map_err(|source| PlanningError::Json { path: path.to_path_buf(), source })?;
    // No trailing newline: the file stays byte-identical to what earlier versions wrote.
    spineseg_io::atomic::write_atomically(path, |w| w.write_all(text.as_bytes()))?;
    Ok(())
}

/// `*` matches any run of characters; everything else literally.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (index, part) in parts.iter().enumerate() {
        if index == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if index == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use spineseg_phantom::{write_nnunet_dataset, PhantomConfig};

    #[test]
    fn glob() {
        assert!(glob_match("ivd_*", "ivd_11"));
        assert!(!glob_match("ivd_*", "vb3_01"));
        assert!(glob_match("*_01", "vb3_01"));
        assert!(glob_match("vb*_0*", "vb3_01"));
        assert!(glob_match("vb3_01", "vb3_01"));
        assert!(!glob_match("vb3_0", "vb3_01"));
    }

    #[test]
    fn plans_and_preprocesses_a_phantom_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let dataset = dir.path().join("dataset");
        let work = dir.path().join("work");
        write_nnunet_dataset(&dataset, &PhantomConfig::small(), 3, 7, true).unwrap();
        let mut options = PlanAndPreprocessOptions {
            configurations: vec![ConfigurationName::TwoD],
            exclude_cases: vec!["*_002".into()],
            batch_size: Some(3),
            ..PlanAndPreprocessOptions::default()
        };
        options.plan.base_features = 4;
        let mut steps = Vec::new();
        let summary = plan_and_preprocess(&dataset, &work, &options, &mut |step| {
            steps.push(match step {
                PlanStep::DatasetOpened { training_cases, excluded, .. } => format!("open {training_cases} {excluded}"),
                PlanStep::Fingerprinted { cases, .. } => format!("fingerprint {cases}"),
                PlanStep::Planned { .. } => "plan".into(),
                PlanStep::Preprocessed { configuration, cases, .. } => format!("{configuration} {cases}"),
            })
        })
        .unwrap();
        assert_eq!(steps, ["open 2 1", "fingerprint 2", "plan", "2d 2"]);
        assert_eq!((summary.training_cases, summary.excluded), (2, 1));
        assert_eq!(summary.preprocessed[&ConfigurationName::TwoD], ["phantom_000", "phantom_001"]);
        let plan = Plan::load(&work.join(PLAN_FILE)).unwrap();
        assert!(plan.configurations.values().all(|c| c.batch_size == 3 && c.network.features_per_stage[0] == 4));
        assert!(work.join(FINGERPRINT_FILE).is_file());
        let labels: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(work.join(LABELS_FILE)).unwrap()).unwrap();
        assert!(!labels["structures"].as_array().unwrap().is_empty());
        let written = std::fs::read_dir(preprocessed_dir(&work, ConfigurationName::TwoD)).unwrap().count();
        assert!(written >= 2, "{written} files");
        assert!(!preprocessed_dir(&work, ConfigurationName::ThreeDFullres).exists());

        // Everything excluded: an error naming the dataset folder, nothing planned.
        let options = PlanAndPreprocessOptions { exclude_cases: vec!["*".into()], ..options };
        let err = plan_and_preprocess(&dataset, &dir.path().join("empty"), &options, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("no training cases left (had 3)"), "{err}");
        assert!(!dir.path().join("empty").exists());
    }
}
