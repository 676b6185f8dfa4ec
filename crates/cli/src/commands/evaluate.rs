//! `spineseg evaluate`: per case and structure metrics of predictions against references.

use crate::values::{ConnectivityArg, SliceAxisArg};
use crate::label_meaning::LabelMeaning;
use crate::Outcome;
use spineseg_infer::workflow::labels_sidecar_path;
use anyhow::{Context, Result};
use spineseg_io::geometry::closest_world_axes;
use spineseg_io::Label;
use spineseg_metrics::{evaluate_folders, format_table, pair_cases, write_report, Connectivity, EvaluationOptions};
use std::path::{Path, PathBuf};

/// Compare predicted label files with reference label files: Dice, IoU, Hausdorff, HD95 (MONAI's
/// per-direction and medpy's pooled definition, mm and voxels), ASSD and normalised surface Dice
/// per case and structure. Writes OUT/metrics.csv and OUT/summary.json and prints a table.
#[derive(clap::Args)]
pub struct EvaluateArgs {
    /// Predicted label file, or a folder of them.
    #[arg(long)]
    pub pred: PathBuf,
    /// Reference label file, or a folder of them (paired with predictions by case name; a
    /// `_0000` suffix is ignored).
    #[arg(long = "ref")]
    pub reference: PathBuf,
    /// Output folder for metrics.csv and summary.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Only these label values (comma separated); default: every non-zero value present.
    #[arg(long, value_delimiter = ',')]
    pub labels: Option<Vec<Label>>,
    /// Tolerance of the normalised surface Dice, in mm.
    #[arg(long, default_value_t = 2.0)]
    pub tolerance_mm: f64,
    /// Neighbourhood that defines surface voxels: `face` (medpy's and MONAI's default) or `full`.
    #[arg(long, value_enum, default_value = "face")]
    pub connectivity: ConnectivityArg,
    /// Evaluate 2D slices across this axis instead of 3D: a voxel axis (0, 1, 2) or an anatomical
    /// plane (sagittal, coronal, axial) found from the reference geometry.
    #[arg(long, value_enum, ignore_case = true)]
    pub slice_axis: Option<SliceAxisArg>,
    /// SPIDER-challenge matching: structures matched by largest overlap, Dice < 0.1 is missed.
    #[arg(long)]
    pub spider_matching: bool,
    /// Largest allowed distance (mm) between prediction and reference voxel positions.
    #[arg(long, default_value_t = 1e-3)]
    pub geometry_tolerance_mm: f64,
    /// What the label values mean: a dataset.json or a labels.json (from `predict` or a model
    /// folder). Default: the dataset.json beside the reference folder, else the predictions'
    /// `<stem>.labels.json` (written by `predict`), else the spineseg ontology's names.
    #[arg(long, alias = "labels-json")]
    pub dataset_json: Option<PathBuf>,
}

pub fn run(args: EvaluateArgs) -> Result<Outcome> {
    let connectivity: Connectivity = args.connectivity.into();
    let slice_axis = match args.slice_axis {
        None => None,
        Some(axis) => Some(resolve_slice_axis(axis, &args.pred, &args.reference)?),
    };
    let options = EvaluationOptions {
        labels: args.labels.clone(),
        tolerance_mm: args.tolerance_mm,
        connectivity,
        slice_axis,
        spider_matching: args.spider_matching,
        geometry_tolerance_mm: args.geometry_tolerance_mm,
        ..EvaluationOptions::default()
    };
    let meaning = label_meaning(args.dataset_json.as_deref(), &args.pred, &args.reference)?;
    eprintln!("{}", meaning.describe());
    let names = meaning.names;
    let report = evaluate_folders(&args.pred, &args.reference, &options, &names)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("{}: cannot create folder", args.out.display()))?;
    write_report(&args.out, &report)?;
    print!("{}", format_table(&report));
    eprintln!("wrote {} and {}", args.out.join("metrics.csv").display(), args.out.join("summary.json").display());
    Ok(Outcome::Success)
}

/// A voxel axis number, or the voxel axis of the first reference file closest to the normal of
/// an anatomical plane (sagittal: left-right, coronal: anterior-posterior, axial: superior-inferior).
fn resolve_slice_axis(axis: SliceAxisArg, pred: &Path, reference: &Path) -> Result<usize> {
    let world_axis = match axis {
        SliceAxisArg::Voxel0 => return Ok(0),
        SliceAxisArg::Voxel1 => return Ok(1),
        SliceAxisArg::Voxel2 => return Ok(2),
        SliceAxisArg::Sagittal => 0,
        SliceAxisArg::Coronal => 1,
        SliceAxisArg::Axial => 2,
    };
    let first = pair_cases(pred, reference)?.into_iter().next().context("no cases to evaluate")?;
    let geometry = spineseg_io::read_volume(&first.reference)?.geometry;
    let (world_of_voxel_axis, _) = closest_world_axes(&geometry.direction);
    Ok(world_of_voxel_axis.iter().position(|&w| w == world_axis).expect("closest_world_axes is a permutation"))
}

/// Names of the label values: `--dataset-json`, else a dataset.json beside the reference
/// folder (or above a reference file), else the first prediction's sidecar labels.json, else
/// the ontology.
fn label_meaning(explicit: Option<&Path>, pred: &Path, reference: &Path) -> Result<LabelMeaning> {
    let dataset_file = spineseg_datasets::nnunet::DATASET_FILE;
    let beside = reference.parent().map(|p| p.join(dataset_file)).filter(|p| p.is_file());
    let beside = beside.or_else(|| Some(reference.join("..").join(dataset_file)).filter(|p| p.is_file()));
    if let Some(path) = explicit.map(Path::to_path_buf).or(beside) {
        return LabelMeaning::read(&path);
    }
    if let Some(first) = pair_cases(pred, reference).ok().and_then(|pairs| pairs.into_iter().next()) {
        let sidecar = labels_sidecar_path(&first.pred);
        if sidecar.is_file() {
            return LabelMeaning::read(&sidecar);
        }
    }
    // metrics.csv has always used the ontology's short names ("L4", "L4/L5").
    let mut meaning = LabelMeaning::ontology_ids();
    for s in spineseg_anatomy::Ontology::standard().structures() {
        meaning.names.insert(s.id.0, s.name.clone());
    }
    Ok(meaning)
}
