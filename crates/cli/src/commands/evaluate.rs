//! `spineseg evaluate`: per case and structure metrics of predictions against references.

use crate::values::{ConnectivityArg, SliceAxisArg};
use crate::Outcome;
use anyhow::{Context, Result};
use spineseg_anatomy::Ontology;
use spineseg_io::geometry::closest_world_axes;
use spineseg_io::Label;
use spineseg_metrics::{evaluate_folders, format_table, pair_cases, write_report, Connectivity, EvaluationOptions};
use std::collections::BTreeMap;
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
    /// dataset.json whose label names to use; default: one beside the reference folder, else
    /// the spineseg ontology's names.
    #[arg(long)]
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
    let names = label_names(args.dataset_json.as_deref(), &args.reference)?;
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

fn label_names(dataset_json: Option<&Path>, reference: &Path) -> Result<BTreeMap<Label, String>> {
    let beside = reference.parent().map(|p| p.join(spineseg_datasets::nnunet::DATASET_FILE)).filter(|p| p.is_file());
    let beside = beside.or_else(|| Some(reference.join("..").join(spineseg_datasets::nnunet::DATASET_FILE)).filter(|p| p.is_file()));
    if let Some(path) = dataset_json.map(Path::to_path_buf).or(beside) {
        let text = std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?;
        let labels = json.get("labels").and_then(|l| l.as_object());
        let labels = labels.with_context(|| format!("{}: no \"labels\" object", path.display()))?;
        return Ok(labels
            .iter()
            .filter_map(|(name, value)| Some((Label::try_from(value.as_u64()?).ok()?, name.clone())))
            .collect());
    }
    Ok(Ontology::standard().structures().iter().map(|s| (s.id.0, s.name.clone())).collect())
}
