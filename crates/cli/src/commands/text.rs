//! `spineseg text ...`: the frozen text encoder (sentence-transformers' all-MiniLM-L6-v2 on
//! burn, `spineseg-text`).

use crate::text_encoder::load_encoder;
use crate::values::ViewArg;
use crate::Outcome;
use anyhow::{Context, Result};
use spineseg_infer::model_folder::{PLAN_FILE, PROMPT_EMBEDDINGS_FILE};
use spineseg_text::class_embeddings::write_class_prompt_embeddings;
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum TextCommand {
    /// Embed prompts with the text encoder. Prints a JSON array with one object per prompt
    /// (`text`, `dim`, `embedding`), one object per line.
    Embed(EmbedArgs),
    /// Anatomy-aware prompts (ATM-Net's ATPG). With --labels, one prompt per structure visible
    /// in a view of an annotated case (position, visibility, neighbours); without, the
    /// class-level prompts used at inference. Prints a JSON array of {id, name, prompt}.
    Prompts(PromptsArgs),
    /// Embed the class prompts of a model folder's structures once and store them in
    /// MODEL/prompt_embeddings.json, so prediction needs no text encoder.
    Cache(CacheArgs),
    /// Build report texts from SPIDER's gradings for a dataset's SPIDER cases (a case whose id
    /// ends in `spider_<patient>`): each graded disc's findings and Pfirrmann grade as one
    /// sentence, top level first. Writes a JSON object of case id -> report, the input of
    /// `train --reports`.
    Reports(ReportsArgs),
}

#[derive(clap::Args)]
pub struct ReportsArgs {
    /// SPIDER's radiological gradings (gradings.csv / radiological_gradings.csv).
    #[arg(long, value_name = "CSV")]
    pub gradings: PathBuf,
    /// nnU-Net raw dataset folder whose imagesTr names the cases.
    #[arg(long, value_name = "DIR")]
    pub dataset: PathBuf,
    /// Output JSON file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(clap::Args)]
pub struct CacheArgs {
    /// Model folder (its plans.json lists the structures).
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// Text encoder folder (default as for `text embed`).
    #[arg(long, value_name = "DIR")]
    pub text_encoder: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct PromptsArgs {
    /// A label file (NIfTI or MetaImage). Its values are ontology ids unless --dataset-json
    /// maps them.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// nnU-Net dataset.json whose "labels" names map the file's values onto the ontology.
    #[arg(long, value_name = "FILE", requires = "labels")]
    pub dataset_json: Option<PathBuf>,
    /// View of the case: sagittal, axial or volume.
    #[arg(long, value_enum, ignore_case = true, default_value = "volume", requires = "labels")]
    pub view: ViewArg,
    /// Slice index of a sagittal (left-right, canonical RAS i) or axial (canonical k) view;
    /// default: the middle slice.
    #[arg(long, requires = "labels")]
    pub slice: Option<usize>,
    /// Class prompts of these structures only (comma separated names, e.g. "L4, L4/L5 disc").
    /// Default: the lumbar spine from T11 to the sacrum.
    #[arg(long, conflicts_with = "labels")]
    pub structures: Option<String>,
}

#[derive(clap::Args)]
pub struct EmbedArgs {
    /// Text encoder folder (config.json, model.safetensors, tokenizer.json or vocab.txt).
    /// Default: $SPINESEG_TEXT_ENCODER, else ~/.cache/spineseg/text/all-MiniLM-L6-v2 (made by
    /// scripts/fetch_text_encoder.sh).
    #[arg(long, value_name = "DIR")]
    pub text_encoder: Option<PathBuf>,
    /// Prompts to embed, e.g. "L4 vertebral body".
    #[arg(required = true, value_name = "PROMPT")]
    pub prompts: Vec<String>,
}

pub fn run(command: TextCommand) -> Result<Outcome> {
    match command {
        TextCommand::Embed(args) => embed(args),
        TextCommand::Prompts(args) => prompts(args),
        TextCommand::Cache(args) => cache(args),
        TextCommand::Reports(args) => reports(args),
    }
}

/// The SPIDER patient number of a case id ending in `spider_<digits>`.
fn spider_patient(case: &str) -> Option<&str> {
    let (_, number) = case.rsplit_once("spider_")?;
    (!number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())).then_some(number)
}

fn reports(args: ReportsArgs) -> Result<Outcome> {
    let gradings = spineseg_findings::gradings::read_spider_gradings(&args.gradings)?;
    let images = args.dataset.join("imagesTr");
    let mut cases: Vec<String> = std::fs::read_dir(&images)
        .with_context(|| format!("{}: cannot list the dataset's images", images.display()))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter_map(|name| name.strip_suffix("_0000.nii.gz").or_else(|| name.strip_suffix("_0000.mha")).map(str::to_string))
        .collect();
    cases.sort();
    let mut reports = std::collections::BTreeMap::new();
    let mut spider_cases = 0;
    for case in &cases {
        let Some(patient) = spider_patient(case) else { continue };
        spider_cases += 1;
        let discs: Vec<_> = gradings
            .discs
            .iter()
            .filter(|d| d.patient == patient)
            .map(|d| (d.level, d.findings.present, d.findings.pfirrmann))
            .collect();
        if !discs.is_empty() {
            reports.insert(case.clone(), spineseg_text::findings_prompts::patient_report(&discs));
        }
    }
    if reports.is_empty() {
        anyhow::bail!(
            "{}: none of the {} cases in {} has gradings (SPIDER cases are named ..spider_<patient>; {spider_cases} found)",
            args.gradings.display(),
            cases.len(),
            images.display()
        );
    }
    spineseg_io::json::write_json(&args.out, &reports).with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "{} reports of {spider_cases} SPIDER cases ({} cases in the dataset) -> {}",
        reports.len(),
        cases.len(),
        args.out.display()
    );
    Ok(Outcome::Success)
}

fn cache(args: CacheArgs) -> Result<Outcome> {
    let encoder = load_encoder(args.text_encoder)?;
    let embeddings = write_class_prompt_embeddings(&args.model.join(PLAN_FILE), &args.model, &encoder)?;
    let path = args.model.join(PROMPT_EMBEDDINGS_FILE);
    eprintln!("{} class prompts embedded ({} dimensions) into {}", embeddings.classes.len(), embeddings.dim, path.display());
    Ok(Outcome::Success)
}

fn embed(args: EmbedArgs) -> Result<Outcome> {
    let encoder = load_encoder(args.text_encoder)?;
    let embeddings =
        encoder.embed(&args.prompts).with_context(|| format!("embedding with {}", encoder.dir().display()))?;
    let lines = args
        .prompts
        .iter()
        .zip(&embeddings)
        .map(|(text, embedding)| {
            serde_json::to_string(&serde_json::json!({"text": text, "dim": embedding.len(), "embedding": embedding}))
        })
        .collect::<Result<Vec<_>, _>>()?;
    println!("[\n{}\n]", lines.join(",\n"));
    Ok(Outcome::Success)
}

fn prompts(args: PromptsArgs) -> Result<Outcome> {
    use spineseg_anatomy::ontology::{Ontology, StructureId};
    use spineseg_text::prompts::{class_prompt, view_prompts, View};
    let ontology = Ontology::standard();
    let name = |id: StructureId| ontology.get(id).map_or_else(|| id.to_string(), |s| s.name.clone());
    let entries: Vec<(StructureId, String)> = match &args.labels {
        Some(path) => {
            let mut labels = spineseg_io::read_labels(path).with_context(|| format!("reading {}", path.display()))?;
            if let Some(json_path) = &args.dataset_json {
                let text = std::fs::read_to_string(json_path).with_context(|| format!("reading {}", json_path.display()))?;
                let json: serde_json::Value =
                    serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", json_path.display()))?;
                let map = spineseg_datasets::nnunet::parse_labels(&json)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", json_path.display()))?;
                labels = map.remap(&labels, path)?;
            }
            let (canonical, _) = spineseg_io::reorient::to_canonical(&labels);
            let shape = canonical.shape();
            // The slice axis in canonical RAS: i for sagittal, k for axial.
            let (slice_axis, make_view): (Option<usize>, fn(usize) -> View) = match args.view {
                ViewArg::Sagittal => (Some(0), View::Sagittal),
                ViewArg::Axial => (Some(2), View::Axial),
                ViewArg::Volume => (None, |_| View::Volume),
            };
            let slice = match slice_axis {
                Some(axis) => {
                    let slice = args.slice.unwrap_or(shape[axis] / 2);
                    if slice >= shape[axis] {
                        anyhow::bail!("{}: --slice {slice} is outside 0..{} for the {} view", path.display(), shape[axis], args.view.name());
                    }
                    slice
                }
                None => 0,
            };
            view_prompts(canonical.data(), shape, make_view(slice))
        }
        None => {
            let ids: Vec<StructureId> = match &args.structures {
                Some(list) => ontology.resolve_names(list).context("--structures")?,
                None => ontology
                    .structures()
                    .iter()
                    .map(|s| s.id)
                    .filter(|id| (18..=26).contains(&id.0) || (118..=124).contains(&id.0))
                    .collect(),
            };
            ids.into_iter().filter_map(|id| class_prompt(id).map(|p| (id, p))).collect()
        }
    };
    let lines = entries
        .iter()
        .map(|(id, prompt)| serde_json::to_string(&serde_json::json!({"id": id.0, "name": name(*id), "prompt": prompt})))
        .collect::<Result<Vec<_>, _>>()?;
    println!("[\n{}\n]", lines.join(",\n"));
    Ok(Outcome::Success)
}
