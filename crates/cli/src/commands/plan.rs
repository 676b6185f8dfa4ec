//! `spineseg plan`: dataset fingerprint, typed plan and preprocessing (nnU-Net's
//! plan_and_preprocess), into a work folder that training reads.

use crate::values::ConfigurationArg;
use crate::Outcome;
use anyhow::{bail, Context, Result};
use spineseg_datasets::{detect_and_open, LabelTarget};
use spineseg_planning::fingerprint::{fingerprint_dataset, FingerprintOptions};
use spineseg_preprocessing::plan::{ConfigurationName, PlanOptions};
use spineseg_preprocessing::preprocess::preprocess_dataset;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Analyse a dataset (spacings, shapes, intensities), write a typed plan with 2D (sagittal) and
/// 3D configurations, and preprocess the training cases (reorient to RAS, crop, normalise,
/// resample). Writes WORK/fingerprint.json, WORK/plans.json (editable), WORK/labels.json and
/// WORK/preprocessed/<configuration>/.
#[derive(clap::Args)]
pub struct PlanArgs {
    /// Dataset root (nnU-Net raw, SPIDER, MRSpineSeg or SPINEPS layout).
    pub dataset: PathBuf,
    /// Work folder for the plan and the preprocessed data.
    #[arg(long)]
    pub out: PathBuf,
    /// Configurations to preprocess (comma separated): 2d, 3d_fullres.
    #[arg(long, value_delimiter = ',', default_value = "2d,3d_fullres")]
    pub configurations: Vec<ConfigurationArg>,
    /// Leave out cases whose id matches one of these patterns (`*` matches any text), e.g.
    /// `ivd_*` to train on vertebral-body cases only.
    #[arg(long, value_delimiter = ',')]
    pub exclude_cases: Vec<String>,
    /// Width of the first U-Net stage (doubles per stage up to the cap).
    #[arg(long)]
    pub base_features: Option<usize>,
    /// Cap on the width of any stage (default 512 in 2D, 320 in 3D, as nnU-Net). A lower cap
    /// (e.g. 256) keeps CPU models small and fast with little loss.
    #[arg(long)]
    pub max_features: Option<usize>,
    /// Use this batch size in every configuration instead of the planned one (the patch size
    /// stays as planned).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Override the planned target spacing (mm, comma separated, canonical RAS axis order).
    #[arg(long, value_delimiter = ',')]
    pub target_spacing: Option<Vec<f64>>,
    /// Only write fingerprint and plan; skip preprocessing.
    #[arg(long)]
    pub no_preprocess: bool,
    /// Cases processed in parallel (each holds its volumes in memory).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

pub fn run(args: PlanArgs) -> Result<Outcome> {
    let configurations: Vec<ConfigurationName> = args.configurations.iter().map(|&c| c.into()).collect();
    let mut dataset = detect_and_open(&args.dataset)?;
    let before = dataset.cases.len();
    dataset.cases.retain(|c| !args.exclude_cases.iter().any(|p| glob_match(p, &c.id)));
    if dataset.training_cases().next().is_none() {
        bail!("{}: no training cases left (had {before})", args.dataset.display());
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("{}: cannot create folder", args.out.display()))?;
    eprintln!(
        "planning {} ({}): {} training cases{}",
        dataset.name,
        dataset.kind,
        dataset.training_cases().count(),
        if before != dataset.cases.len() { format!(", {} excluded", before - dataset.cases.len()) } else { String::new() }
    );

    let started = Instant::now();
    let options = FingerprintOptions { threads: args.threads.max(1), ..FingerprintOptions::default() };
    let fingerprint = fingerprint_dataset(&dataset, &options)?;
    fingerprint.save(&args.out.join(spineseg_planning::fingerprint::FINGERPRINT_FILE))?;
    eprintln!("fingerprint: {} cases in {:.1} s", fingerprint.cases.len(), started.elapsed().as_secs_f64());

    let mut plan_options = PlanOptions::default();
    if let Some(base) = args.base_features {
        plan_options.base_features = base;
    }
    if let Some(max) = args.max_features {
        if max == 0 {
            bail!("--max-features must be at least 1");
        }
        plan_options.max_features_2d = max;
        plan_options.max_features_3d = max;
    }
    if args.batch_size == Some(0) {
        bail!("--batch-size must be at least 1");
    }
    if let Some(spacing) = &args.target_spacing {
        if spacing.len() != 3 {
            bail!("--target-spacing needs three values (mm, e.g. 1.5,1.5,1.5), got {}", spacing.len());
        }
        plan_options.overwrite_target_spacing = Some([spacing[0], spacing[1], spacing[2]]);
    }
    let mut plan = spineseg_planning::plan_from_fingerprint(&fingerprint, &plan_options)?;
    if let Some(batch_size) = args.batch_size {
        for config in plan.configurations.values_mut() {
            config.batch_size = batch_size;
        }
    }
    plan.save(&args.out.join(spineseg_preprocessing::plan::PLAN_FILE))?;
    write_output_labels(&args.out.join(spineseg_preprocessing::plan::LABELS_FILE), &dataset)?;
    for (name, config) in &plan.configurations {
        eprintln!(
            "{}: spacing {:?} mm, patch {:?}, batch {}, {} stages, features {:?}",
            name.as_str(),
            config.spacing_mm,
            config.patch_size,
            config.batch_size,
            config.network.n_stages,
            config.network.features_per_stage
        );
    }

    if !args.no_preprocess {
        for configuration in configurations {
            let started = Instant::now();
            let dir = preprocessed_dir(&args.out, configuration);
            std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create folder", dir.display()))?;
            let ids = preprocess_dataset(&dataset, &plan, configuration, &dir, args.threads.max(1))?;
            eprintln!(
                "preprocessed {} cases for {} in {:.1} s -> {}",
                ids.len(),
                configuration.as_str(),
                started.elapsed().as_secs_f64(),
                dir.display()
            );
        }
    }
    println!("plan written to {}", args.out.join(spineseg_preprocessing::plan::PLAN_FILE).display());
    Ok(Outcome::Success)
}

pub fn preprocessed_dir(work: &Path, configuration: ConfigurationName) -> PathBuf {
    work.join("preprocessed").join(configuration.as_str())
}

/// labels.json: for every ontology structure the dataset labels, the dataset's own value and
/// name, so predictions can be written in the training dataset's label values (as nnU-Net does).
fn write_output_labels(path: &Path, dataset: &spineseg_datasets::Dataset) -> Result<()> {
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
    let text = serde_json::to_string_pretty(&json)?;
    spineseg_io::atomic::write_atomically(path, |w| w.write_all(text.as_bytes()))?;
    Ok(())
}

/// `*` matches any run of characters; everything else literally.
fn glob_match(pattern: &str, text: &str) -> bool {
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
    #[test]
    fn glob() {
        use super::glob_match;
        assert!(glob_match("ivd_*", "ivd_11"));
        assert!(!glob_match("ivd_*", "vb3_01"));
        assert!(glob_match("*_01", "vb3_01"));
        assert!(glob_match("vb*_0*", "vb3_01"));
        assert!(glob_match("vb3_01", "vb3_01"));
        assert!(!glob_match("vb3_0", "vb3_01"));
    }
}
