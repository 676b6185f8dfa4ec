//! `spineseg plan`: dataset fingerprint, typed plan and preprocessing (nnU-Net's
//! plan_and_preprocess), into a work folder that training reads.

use crate::progress::print_plan_step;
use crate::values::ConfigurationArg;
use crate::Outcome;
use anyhow::{bail, Result};
use spineseg_planning::pipeline::{plan_and_preprocess, PlanAndPreprocessOptions};
use spineseg_preprocessing::plan::PlanOptions;
use std::path::PathBuf;

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
    let mut plan = PlanOptions::default();
    if let Some(base) = args.base_features {
        plan.base_features = base;
    }
    if let Some(max) = args.max_features {
        if max == 0 {
            bail!("--max-features must be at least 1");
        }
        plan.max_features_2d = max;
        plan.max_features_3d = max;
    }
    if args.batch_size == Some(0) {
        bail!("--batch-size must be at least 1");
    }
    if let Some(spacing) = &args.target_spacing {
        if spacing.len() != 3 {
            bail!("--target-spacing needs three values (mm, e.g. 1.5,1.5,1.5), got {}", spacing.len());
        }
        plan.overwrite_target_spacing = Some([spacing[0], spacing[1], spacing[2]]);
    }
    let options = PlanAndPreprocessOptions {
        configurations: args.configurations.iter().map(|&c| c.into()).collect(),
        exclude_cases: args.exclude_cases,
        plan,
        batch_size: args.batch_size,
        preprocess: !args.no_preprocess,
        threads: args.threads,
    };
    let summary = plan_and_preprocess(&args.dataset, &args.out, &options, &mut print_plan_step)?;
    println!("plan written to {}", summary.plans_path.display());
    Ok(Outcome::Success)
}
