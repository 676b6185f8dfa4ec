//! `spineseg diagnose`: one patient's T2 (and optional T1) -> per-level findings.

use crate::Outcome;
use anyhow::{bail, Context, Result};
use spineseg_findings::gradings::{write_findings_csv, FindingsRow};
use spineseg_infer::diagnose::{diagnose, DiagnoseInput};
use spineseg_infer::findings_model::{findings_row, FindingsModel};
use spineseg_infer::ModelFolder;
use spineseg_render::overlay::write_png;
use spineseg_render::preview::case_preview_with_notes;
use std::path::PathBuf;

/// Identify five lumbar abnormalities per disc level (herniation, narrowing, bulging,
/// spondylolisthesis, Modic changes) and the Pfirrmann grade from a patient's sagittal T2 and
/// optional T1: writes findings.json, findings.csv, report.txt and findings.png. Not for clinical
/// use.
#[derive(clap::Args)]
pub struct DiagnoseArgs {
    /// The patient's sagittal T2-weighted image.
    #[arg(long)]
    pub t2: Option<PathBuf>,
    /// The same patient's sagittal T1-weighted image (optional).
    #[arg(long)]
    pub t1: Option<PathBuf>,
    /// Segmentation model folder (finds and names the discs).
    #[arg(short = 'm', long = "model", default_value = "models/lumbar-2d")]
    pub model: PathBuf,
    /// Findings model folder (from `spineseg findings train`).
    #[arg(short = 'f', long = "findings-model", default_value = "models/disc-findings")]
    pub findings_model: PathBuf,
    /// Output folder (created; must not exist or be empty).
    #[arg(short, long)]
    pub out: PathBuf,
    /// A segmentation of the T2 image (ontology ids) to use instead of segmenting it.
    #[arg(long)]
    pub t2_labels: Option<PathBuf>,
    /// A segmentation of the T1 image (ontology ids) to use instead of segmenting it.
    #[arg(long)]
    pub t1_labels: Option<PathBuf>,
    /// Case name in the outputs (default: the T2 file's name).
    #[arg(long)]
    pub case: Option<String>,
}

pub fn run(args: DiagnoseArgs) -> Result<Outcome> {
    let mut files = Vec::new();
    for (sequence, image, labels, flag) in
        [("t2", &args.t2, &args.t2_labels, "--t2-labels"), ("t1", &args.t1, &args.t1_labels, "--t1-labels")]
    {
        match (image, labels) {
            (Some(image), labels) => files.push(DiagnoseInput {
                sequence: sequence.to_string(),
                image: image.clone(),
                labels: labels.clone(),
            }),
            (None, Some(_)) => bail!("{flag} needs the image it segments (--{sequence} FILE)"),
            (None, None) => {}
        }
    }
    if files.is_empty() {
        bail!("give at least one image: --t2 FILE (and optionally --t1 FILE)");
    }
    for path in files.iter().flat_map(|f| std::iter::once(&f.image).chain(f.labels.as_ref())) {
        if !path.is_file() {
            bail!("{}: no such file", path.display());
        }
    }
    if args.out.exists() && std::fs::read_dir(&args.out).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{}: the output folder exists and is not empty", args.out.display());
    }
    // The segmentation model is needed only for images without a given segmentation.
    let segmentation =
        if files.iter().any(|f| f.labels.is_none()) { Some(ModelFolder::load(&args.model)?) } else { None };
    let findings = FindingsModel::load(&args.findings_model)?;
    let case = args.case.clone().unwrap_or_else(|| {
        let name = files[0].image.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        name.trim_end_matches(".gz").trim_end_matches(".nii").trim_end_matches(".mha").to_string()
    });
    let (diagnosis, sequences) = diagnose(&case, segmentation.as_ref(), &findings, &files)?;
    let report = diagnosis.report();

    // Everything is written into a hidden sibling folder and renamed at the end: no partial
    // output on any failure.
    let parent =
        args.out.parent().filter(|p| !p.as_os_str().is_empty()).map_or_else(|| PathBuf::from("."), PathBuf::from);
    std::fs::create_dir_all(&parent).with_context(|| format!("{}: cannot create folder", parent.display()))?;
    let staging = parent.join(format!(
        ".{}.partial-{}",
        args.out.file_name().map_or_else(|| "diagnose".into(), |n| n.to_string_lossy().into_owned()),
        std::process::id()
    ));
    let write_all = || -> Result<()> {
        std::fs::create_dir_all(&staging).with_context(|| format!("{}: cannot create folder", staging.display()))?;
        spineseg_io::json::write_json(&staging.join("findings.json"), &diagnosis)?;
        let thresholds = findings.manifest.threshold_array();
        let rows: Vec<FindingsRow> = diagnosis
            .levels
            .iter()
            .map(|level| findings_row(&case, level.level, level.probabilities, thresholds))
            .collect();
        write_findings_csv(&staging.join("findings.csv"), &rows)?;
        std::fs::write(staging.join("report.txt"), &report)
            .with_context(|| format!("{}: cannot write", staging.display()))?;
        // The picture: the T2 (else the first sequence) with its segmentation and the findings.
        let shown = sequences.iter().find(|s| s.sequence == "t2").unwrap_or(&sequences[0]);
        let caption = vec![
            format!(
                "{case}: {} shown; findings from {} (not for clinical use)",
                shown.sequence,
                diagnosis.inputs.keys().cloned().collect::<Vec<_>>().join(" and ")
            ),
            "beside each disc: findings at the model's thresholds (probability), Pfirrmann grade".to_string(),
        ];
        let short = ["herniation", "narrowing", "bulging", "spondylolisthesis", "Modic"];
        let notes: Vec<(u16, String)> = diagnosis
            .levels
            .iter()
            .map(|level| {
                let text = match (&level.probabilities, &level.present) {
                    (Some(p), Some(present)) => {
                        let found: Vec<String> = (0..5)
                            .filter(|&f| present[f])
                            .map(|f| format!("{} {:.2}", short[f], p.findings[f]))
                            .collect();
                        let findings = if found.is_empty() { "no finding".to_string() } else { found.join(", ") };
                        format!("{}: {findings}; Pfirrmann {}", level.name, p.grade())
                    }
                    _ => format!("{}: not assessed", level.name),
                };
                (level.level, text)
            })
            .collect();
        let picture = case_preview_with_notes(&shown.image, &shown.labels, &caption, notes)?;
        write_png(&staging.join("findings.png"), &picture)?;
        if args.out.exists() {
            std::fs::remove_dir(&args.out)
                .with_context(|| format!("{}: cannot replace the empty folder", args.out.display()))?;
        }
        std::fs::rename(&staging, &args.out)
            .with_context(|| format!("{}: cannot move the results into place", args.out.display()))?;
        Ok(())
    };
    if let Err(error) = write_all() {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(error);
    }
    print!("{report}");
    println!("-> {}/findings.json, findings.csv, report.txt, findings.png", args.out.display());
    Ok(Outcome::Success)
}
