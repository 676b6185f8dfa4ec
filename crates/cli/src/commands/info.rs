//! `spineseg info FILE`: what a volume holds and where it is.

use crate::label_meaning::LabelMeaning;
use crate::Outcome;
use anyhow::Result;
use spineseg_io::{read_volume, AnyVolume};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Print shape, spacing, orientation, data type, intensity range and, for label volumes, a
/// histogram of label values with structure names.
#[derive(clap::Args)]
pub struct InfoArgs {
    /// A .nii, .nii.gz, .mha or .mhd file.
    pub file: PathBuf,
    /// Treat the file as a label volume even if it does not look like one (auto-detected when
    /// the values are a few hundred distinct non-negative integers).
    #[arg(long)]
    pub labels: bool,
    /// Print machine-readable JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// What the label values mean: a labels.json (from `predict` or a model folder) or a
    /// dataset.json. Default: the file's `<stem>.labels.json`, else the dataset.json of the
    /// nnU-Net folder it is in, else spineseg ontology ids.
    #[arg(long)]
    pub labels_json: Option<PathBuf>,
}

/// Most label volumes have a handful of values; intensity images have thousands.
const MAX_LABEL_VALUES: usize = 512;

pub fn run(args: InfoArgs) -> Result<Outcome> {
    let volume = read_volume(&args.file)?;
    let histogram = label_histogram(&volume, args.labels);
    if args.labels && histogram.is_none() {
        anyhow::bail!("{}: not a label volume (values are not non-negative integers)", args.file.display());
    }
    let meaning = LabelMeaning::for_mask(&args.file, args.labels_json.as_deref())?;
    if histogram.is_some() && !args.json {
        println!("{}", meaning.describe());
    }
    let mut names: BTreeMap<u64, String> = meaning.names.iter().map(|(&v, n)| (v as u64, n.clone())).collect();
    names.entry(0).or_insert_with(|| "background".into());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info_json(&args.file, &volume, histogram.as_ref(), &names))?);
    } else {
        print!("{}", info_text(&args.file, &volume, histogram.as_ref(), &names));
    }
    Ok(Outcome::Success)
}

/// Value -> voxel count, when the volume looks like (or is declared) a label volume.
fn label_histogram(volume: &AnyVolume, forced: bool) -> Option<BTreeMap<u64, usize>> {
    if !volume.data_type().is_integer() && !forced {
        return None;
    }
    let mut histogram = BTreeMap::new();
    for value in volume.data.to_f64() {
        if value < 0.0 || value.fract() != 0.0 {
            return None;
        }
        *histogram.entry(value as u64).or_insert(0usize) += 1;
        if !forced && histogram.len() > MAX_LABEL_VALUES {
            return None;
        }
    }
    Some(histogram)
}

fn info_text(file: &Path, v: &AnyVolume, histogram: Option<&BTreeMap<u64, usize>>, names: &BTreeMap<u64, String>) -> String {
    use std::fmt::Write;
    let g = &v.geometry;
    let mut out = String::new();
    let [nx, ny, nz] = v.shape;
    let s = g.spacing.mm();
    writeln!(out, "file:        {}", file.display()).unwrap();
    writeln!(out, "shape:       {nx} x {ny} x {nz} (i, j, k)").unwrap();
    writeln!(out, "spacing:     {} x {} x {} mm", fmt_num(s[0]), fmt_num(s[1]), fmt_num(s[2])).unwrap();
    writeln!(out, "orientation: {} (voxel axes point to; world is RAS+)", g.orientation_code()).unwrap();
    let o = g.origin_mm;
    writeln!(out, "origin:      ({}, {}, {}) mm RAS", fmt_num(o[0]), fmt_num(o[1]), fmt_num(o[2])).unwrap();
    let d = g.direction;
    for (axis, name) in ["i", "j", "k"].iter().enumerate() {
        writeln!(out, "direction {name}: ({}, {}, {})", fmt_num(d[0][axis]), fmt_num(d[1][axis]), fmt_num(d[2][axis])).unwrap();
    }
    writeln!(out, "data type:   {}", v.data_type()).unwrap();
    match v.data.min_max() {
        Some((lo, hi)) => writeln!(out, "range:       {} .. {}", fmt_num(lo), fmt_num(hi)).unwrap(),
        None => writeln!(out, "range:       (no finite values)").unwrap(),
    }
    if let Some(histogram) = histogram {
        let total = v.data.len() as f64;
        writeln!(out, "labels:      {} values", histogram.len()).unwrap();
        writeln!(out, "  {:>6}  {:<34} {:>12} {:>8}", "value", "structure", "voxels", "percent").unwrap();
        for (value, count) in histogram {
            let name = names.get(value).map(String::as_str).unwrap_or("(unknown)");
            writeln!(out, "  {value:>6}  {name:<34} {count:>12} {:>7.3}%", 100.0 * *count as f64 / total).unwrap();
        }
    }
    out
}

fn info_json(file: &Path, v: &AnyVolume, histogram: Option<&BTreeMap<u64, usize>>, names: &BTreeMap<u64, String>) -> serde_json::Value {
    let range = v.data.min_max();
    serde_json::json!({
        "file": file.display().to_string(),
        "shape": v.shape,
        "spacing_mm": v.geometry.spacing.mm(),
        "origin_mm_ras": v.geometry.origin_mm,
        "direction": v.geometry.direction,
        "affine_ras": v.geometry.affine(),
        "orientation": v.geometry.orientation_code(),
        "data_type": v.data_type().name(),
        "min": range.map(|r| r.0),
        "max": range.map(|r| r.1),
        "labels": histogram.map(|h| h.iter().map(|(value, count)| serde_json::json!({
            "value": value,
            "structure": names.get(value),
            "voxels": count,
        })).collect::<Vec<_>>()),
    })
}

/// Short numbers: integers without decimals, others with up to 6 significant digits.
fn fmt_num(x: f64) -> String {
    if x == x.trunc() && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        let s = format!("{x:.6}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

