//! `spineseg dataset ...`: dataset-level commands.

use crate::Outcome;
use anyhow::Result;
use spineseg_datasets::check::{check_loaded, CheckOptions};
use spineseg_datasets::detect_and_open;
use spineseg_datasets::merge::{merge_datasets, MergeInput, MergeOptions};
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand)]
pub enum DatasetCommand {
    /// Check a dataset folder: image/label pairs found, shapes and geometry of image vs label
    /// agree, every label value known. Prints a report; exit code 1 when problems are found.
    Check(CheckArgs),
    /// Merge datasets (any supported layouts) into one nnU-Net raw dataset whose label values are
    /// ontology ids: case ids `{source}_{case}`, images copied unchanged, labels remapped through
    /// each dataset's label map, `sources.json` records where every case came from (source,
    /// original case and files, site, structures). Written atomically: a failure leaves OUT as
    /// it was.
    Merge(MergeArgs),
}

#[derive(clap::Args)]
pub struct MergeArgs {
    /// Dataset folders (nnU-Net raw, SPIDER, MRSpineSeg or SPINEPS layout) or nnU-Net
    /// dataset.json files.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// The merged dataset folder (must not exist or be empty, unless --overwrite).
    #[arg(long)]
    pub out: PathBuf,
    /// Name the source at PATH (one of the inputs) NAME: the prefix of its case ids and its site
    /// when its folder has no manifest.csv with a source_dataset column (letters, digits, '-').
    /// Default: the dataset's name. Repeatable.
    #[arg(long = "name", value_name = "NAME=PATH")]
    pub names: Vec<String>,
    /// Channel names of the merged dataset, comma-separated, for inputs that name the same kind
    /// of image differently ("MRI" and "T2"); without it every input's channel names must agree.
    #[arg(long, value_delimiter = ',')]
    pub channel_names: Option<Vec<String>>,
    /// The merged dataset.json's name (default: the source names joined by '+').
    #[arg(long)]
    pub dataset_name: Option<String>,
    /// Replace a non-empty OUT.
    #[arg(long)]
    pub overwrite: bool,
    /// Cases processed in parallel.
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Dataset root (nnU-Net raw, SPIDER, MRSpineSeg or SPINEPS layout), or an nnU-Net
    /// dataset.json.
    pub dir: PathBuf,
    /// Largest allowed distance in mm between the same voxel's positions in image and label.
    #[arg(long, default_value_t = 1e-3)]
    pub tolerance_mm: f64,
    /// Cases read in parallel (each holds its volumes in memory).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(command: DatasetCommand) -> Result<Outcome> {
    match command {
        DatasetCommand::Check(args) => check(args),
        DatasetCommand::Merge(args) => merge(args),
    }
}

fn check(args: CheckArgs) -> Result<Outcome> {
    let dataset = detect_and_open(&args.dir)?;
    let mut options = CheckOptions { tolerance_mm: args.tolerance_mm, ..CheckOptions::default() };
    if let Some(threads) = args.threads {
        options.threads = threads.max(1);
    }
    eprintln!("checking {} cases of {} ({})...", dataset.cases.len(), dataset.name, dataset.kind);
    let report = check_loaded(&dataset, &options);
    println!("{report}");
    Ok(if report.is_ok() { Outcome::Success } else { Outcome::ProblemsFound })
}

fn merge(args: MergeArgs) -> Result<Outcome> {
    let mut inputs: Vec<MergeInput> = args.inputs.iter().map(MergeInput::new).collect();
    for spec in &args.names {
        let (name, path) = spec
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--name {spec}: expected NAME=PATH"))?;
        let input = find_input(&mut inputs, Path::new(path))
            .ok_or_else(|| anyhow::anyhow!("--name {spec}: {path} is not one of the input datasets"))?;
        input.name = Some(name.to_string());
    }
    let mut options = MergeOptions {
        overwrite: args.overwrite,
        channel_names: args.channel_names,
        dataset_name: args.dataset_name,
        ..MergeOptions::default()
    };
    if let Some(threads) = args.threads {
        options.threads = threads.max(1);
    }
    eprintln!("merging {} datasets into {}...", inputs.len(), args.out.display());
    let summary = merge_datasets(&inputs, &args.out, &options)?;
    for warning in &summary.warnings {
        eprintln!("warning: {warning}");
    }
    println!(
        "merged {} training and {} test cases into {} ({})",
        summary.training_cases,
        summary.test_cases,
        summary.out.display(),
        summary.dataset_name
    );
    for source in &summary.sources {
        println!(
            "  {}: {} training, {} test cases from {} ({}, {})",
            source.name,
            source.training_cases,
            source.test_cases,
            source.root.display(),
            source.layout,
            source.dataset_name
        );
    }
    let sites: Vec<String> = summary.sites.iter().map(|(site, n)| format!("{site} ({n})")).collect();
    println!("  sites: {}", sites.join(", "));
    println!("  channels: {}", summary.channel_names.join(", "));
    let ontology = spineseg_anatomy::Ontology::standard();
    let labels: Vec<String> = summary
        .labels
        .iter()
        .map(|id| format!("{} = {id}", ontology.get(*id).map(|s| s.name.as_str()).unwrap_or("?")))
        .collect();
    println!("  labels: {}", labels.join(", "));
    println!("  vertebra extent: {}", summary.vertebra_extent);
    Ok(Outcome::Success)
}

/// The input given as `path` (compared after resolving both, so `./a` and `a/` match).
fn find_input<'a>(inputs: &'a mut [MergeInput], path: &Path) -> Option<&'a mut MergeInput> {
    let wanted = path.canonicalize().ok()?;
    inputs.iter_mut().find(|input| input.path.canonicalize().ok().as_deref() == Some(wanted.as_path()))
}
