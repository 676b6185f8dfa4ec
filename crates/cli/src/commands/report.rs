//! `spineseg report`: one self-contained HTML page for a folder of predictions.

use crate::label_meaning::LabelMeaning;
use crate::Outcome;
use anyhow::{bail, Context, Result};
use spineseg_datasets::nnunet::split_channel_suffix;
use spineseg_infer::workflow::levels_report_path;
use spineseg_io::{read_image, read_labels, ImageFormat, Volume};
use spineseg_metrics::structures::{case_structures, format_case_line, write_structures_csv, LevelVerdict};
use spineseg_metrics::{evaluate_folders, EvaluationOptions};
use spineseg_render::overlay::encode_png;
use spineseg_render::preview::{case_preview, preview_caption};
use spineseg_render::report::{html_report, worst_first, ReportCase};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Write one self-contained HTML page for a folder of predictions: a sortable table of the cases,
/// worst first, each with its mid-sagittal picture, its structures (volume, slices) and flags;
/// with references, Dice per structure. Opens from disk, no server or network needed.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// Folder of predicted masks (e.g. `spineseg predict`'s output; their `.labels.json` and
    /// `.levels.json` sidecars are used when present).
    #[arg(long)]
    pub pred: PathBuf,
    /// Folder of the images (`{case}_0000{ext}` or `{case}{ext}`) for the pictures; without it
    /// the pictures show the labels alone.
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Folder of reference masks: adds Dice per structure and sorts by the lowest mean Dice.
    #[arg(long = "ref")]
    pub reference: Option<PathBuf>,
    /// What the label values mean (labels.json or dataset.json), when the masks have no sidecar.
    #[arg(long)]
    pub labels_json: Option<PathBuf>,
    /// Output HTML file.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Page title.
    #[arg(long, default_value = "spineseg report")]
    pub title: String,
}

pub fn run(args: ReportArgs) -> Result<Outcome> {
    let masks = list_masks(&args.pred)?;
    let mut dice_by_case: BTreeMap<String, BTreeMap<u16, f64>> = BTreeMap::new();
    if let Some(reference) = &args.reference {
        let first = &masks.values().next().expect("list_masks returns at least one");
        let meaning = LabelMeaning::for_mask(first, args.labels_json.as_deref())?;
        let evaluation = evaluate_folders(&args.pred, reference, &EvaluationOptions::default(), &meaning.names)?;
        for case in evaluation.cases {
            let dice = case
                .structures
                .iter()
                .filter(|s| s.metrics.ref_voxels > 0)
                .map(|s| (s.label, s.metrics.dice))
                .collect();
            dice_by_case.insert(case.case, dice);
        }
    }
    let mut cases = Vec::with_capacity(masks.len());
    let mut tables = Vec::with_capacity(masks.len());
    for (case, mask) in &masks {
        let labels = read_labels(mask)?;
        let meaning = LabelMeaning::for_mask(mask, args.labels_json.as_deref())?;
        let levels_file = levels_report_path(mask);
        let verdict = if levels_file.is_file() {
            let text = std::fs::read_to_string(&levels_file)
                .with_context(|| format!("{}: cannot read", levels_file.display()))?;
            let json: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", levels_file.display()))?;
            Some(LevelVerdict::from_report(&json))
        } else {
            None
        };
        // Without a labels file the model's classes are unknown: any level between two found
        // ones may be missing.
        let segmented: Vec<_> =
            if meaning.source.is_some() { meaning.structure_of.values().copied().collect() } else { vec![] };
        let table = case_structures(case, &labels, &meaning.structure_of, &segmented, verdict);
        let image = match args.images.as_deref().map(|dir| find_image(dir, case)).transpose()? {
            Some(Some(path)) => {
                let image = read_image(&path)?;
                if image.shape() != labels.shape()
                    || !image.geometry.agrees_with(&labels.geometry, labels.shape(), 1e-3)
                {
                    bail!("{} and {}: label and image grids differ", mask.display(), path.display());
                }
                image
            }
            Some(None) => {
                bail!("case {case}: no {case}_0000 or {case} image in {}", args.images.as_ref().unwrap().display())
            }
            None => Volume::filled(labels.shape(), 0.0f32, labels.geometry),
        };
        let caption = preview_caption(&table);
        let picture = case_preview(&image, &meaning.to_ontology(&labels), &caption)?;
        println!("{}", format_case_line(&table));
        tables.push(table.clone());
        cases.push(ReportCase {
            structures: table,
            picture_png: Some(encode_png(&picture)),
            dice: dice_by_case.remove(case).unwrap_or_default(),
        });
    }
    worst_first(&mut cases);
    let html = html_report(&args.title, &cases);
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("{}: cannot create folder", parent.display()))?;
    }
    spineseg_io::atomic::write_atomically(&args.out, |w| w.write_all(html.as_bytes()))?;
    // report.html -> report.structures.csv beside it.
    let stem = args.out.file_stem().map_or("report".into(), |s| s.to_string_lossy().into_owned());
    let csv = args.out.with_file_name(format!("{stem}.structures.csv"));
    write_structures_csv(&csv, &tables)?;
    let flagged = cases.iter().filter(|c| !c.structures.flags.is_empty()).count();
    eprintln!("wrote {} ({} cases, {flagged} flagged) and {}", args.out.display(), cases.len(), csv.display());
    Ok(Outcome::Success)
}

/// Case name -> mask file, for every image file in `dir` (hidden files skipped).
fn list_masks(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut masks = BTreeMap::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("{}: cannot list folder", dir.display()))?;
    for entry in entries {
        let path = entry.with_context(|| format!("{}: cannot list folder", dir.display()))?.path();
        let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden || !path.is_file() {
            continue;
        }
        if let Some(stem) = ImageFormat::strip_extension(&path).filter(|_| ImageFormat::from_path(&path).is_ok()) {
            masks.insert(stem, path);
        }
    }
    if masks.is_empty() {
        bail!("{}: no mask files (.nii.gz, .nii, .mha, .mhd)", dir.display());
    }
    Ok(masks)
}

/// `{case}_0000{ext}` or `{case}{ext}` in `dir`.
fn find_image(dir: &Path, case: &str) -> Result<Option<PathBuf>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("{}: cannot list folder", dir.display()))?;
    let mut plain = None;
    for entry in entries {
        let path = entry.with_context(|| format!("{}: cannot list folder", dir.display()))?.path();
        let Some(stem) = ImageFormat::strip_extension(&path).filter(|_| ImageFormat::from_path(&path).is_ok()) else {
            continue;
        };
        if split_channel_suffix(&stem) == Some((case, 0)) {
            return Ok(Some(path));
        }
        if stem == case {
            plain = Some(path);
        }
    }
    Ok(plain)
}
