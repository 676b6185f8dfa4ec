//! `spineseg findings rois|train`: build the disc-findings classifier from graded patients.
//!
//! `rois` segments every image of a folder once (levels named by counting) and stores each
//! disc's region of interest; `train` builds samples from those ROIs and a gradings table,
//! splits patients into folds (no patient in two folds), trains the visual or the text-guided
//! head, chooses the decision thresholds on validation patients of the training folds, writes a
//! findings model folder and, with `--fold`, the held-out patients' findings as CSV for
//! `spineseg evaluate-findings`. With `--image-text-pretrain-steps N` (text head only) the
//! network is first pretrained contrastively on report sentences of its training levels
//! (`spineseg_train::findings_pretrain`).

use crate::values::{EncoderKindArg, FindingsHead, FindingsSequences};
use crate::Outcome;
use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use spineseg_findings::gradings::{read_spider_gradings, write_findings_csv, FindingsRow};
use spineseg_findings::roi::RoiSpec;
use spineseg_findings::roi_set::{RoiEntry, RoiSet};
use spineseg_infer::diagnose::{cut_discs_from_files, segment_and_cut};
use spineseg_infer::findings_model::{
    findings_row, FindingsInput, FindingsManifest, FindingsModel, FindingsNetwork, FindingsProbabilities, RoiGeometry,
    FINDINGS_MODEL_FORMAT, FINDING_KEYS,
};
use spineseg_infer::ModelFolder;
use spineseg_model::{DiscFindingsNetConfig, FindingsEncoderConfig, FindingsHeadConfig, WeightPrecision};
use spineseg_train::findings::{
    choose_threshold, train_findings_with, FindingsSample, FindingsStage, FindingsTrainConfig,
};
use spineseg_train::findings_pretrain::ImageTextPretraining;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The input channels of every findings model, in order.
const SEQUENCES: [&str; 2] = ["t1", "t2"];
/// The disc levels cut from given segmentations: T9/T10 to L5/S1, the levels SPIDER grades.
const GRADED_DISC_LEVELS: [u16; 9] = [116, 117, 118, 119, 120, 121, 122, 123, 124];
/// Patients are dealt into folds by this fixed seed (not the training seed), so every arm and
/// seed of an ablation sees the same folds.
const FOLD_SEED: u64 = 12345;

/// Build and train the disc-findings classifier (five lumbar abnormalities and the Pfirrmann
/// grade per disc level).
#[derive(clap::Subcommand)]
pub enum FindingsCommand {
    Rois(RoisArgs),
    Train(TrainFindingsArgs),
    Predict(PredictFindingsArgs),
}

/// Predict the findings of an ROI set's graded levels with a findings model (all patients, or
/// one fold's held-out patients), e.g. to measure a T1 + T2 model on T2 alone; writes a findings
/// CSV for `spineseg evaluate-findings`.
#[derive(clap::Args)]
pub struct PredictFindingsArgs {
    /// ROI set from `spineseg findings rois`.
    #[arg(long)]
    pub rois: PathBuf,
    /// The gradings whose levels are predicted (SPIDER's gradings.csv layout).
    #[arg(long)]
    pub gradings: PathBuf,
    /// Findings model folder.
    #[arg(short = 'f', long = "findings-model")]
    pub findings_model: PathBuf,
    /// The sequences given to the model (default: those it was trained on).
    #[arg(long, value_enum)]
    pub sequences: Option<FindingsSequences>,
    /// Number of patient folds (as in `findings train`).
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Only this fold's patients (as `findings train --fold` holds them out).
    #[arg(long)]
    pub fold: Option<usize>,
    /// Output findings CSV.
    #[arg(short, long)]
    pub out: PathBuf,
}

/// Segment every image of a folder once and store each disc's region of interest (`rois.json` +
/// `rois.f32`), for `spineseg findings train`.
#[derive(clap::Args)]
pub struct RoisArgs {
    /// Folder of images named `{patient}_{sequence}.nii.gz` (spider-gradings' layout: `12_t1`,
    /// `12_t2`, `12_t2_SPACE`).
    #[arg(long)]
    pub images: PathBuf,
    /// Segmentation model folder (finds and names the discs).
    #[arg(short = 'm', long = "model", required_unless_present = "labels")]
    pub model: Option<PathBuf>,
    /// Folder of segmentations of the images (same file names, ontology ids) to cut the discs
    /// from instead of segmenting (hand-made masks, or another tool's).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Output folder.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Only these sequences (comma-separated, e.g. `t1,t2`); default all.
    #[arg(long)]
    pub sequences: Option<String>,
}

/// Train the findings classifier on an ROI set and per-disc gradings; writes a findings model
/// folder (and, with --fold, the held-out patients' findings as CSV).
#[derive(clap::Args)]
pub struct TrainFindingsArgs {
    /// ROI set from `spineseg findings rois`.
    #[arg(long)]
    pub rois: PathBuf,
    /// Per-disc gradings (SPIDER's gradings.csv layout).
    #[arg(long)]
    pub gradings: PathBuf,
    /// Output findings model folder.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Visual-only head or the text-guided head (prompts embedded by the text encoder).
    #[arg(long, value_enum, default_value_t = FindingsHead::Text)]
    pub head: FindingsHead,
    /// The sequences the model learns from.
    #[arg(long, value_enum, default_value_t = FindingsSequences::T1T2)]
    pub sequences: FindingsSequences,
    /// Number of patient folds.
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Hold out this fold (0-based) and write its patients' findings to
    /// OUT/heldout_findings.csv; without it, every patient trains.
    #[arg(long)]
    pub fold: Option<usize>,
    /// Fraction of the training patients kept for choosing the thresholds.
    #[arg(long, default_value_t = 0.2)]
    pub validation_fraction: f64,
    /// Thresholds: the highest recall whose false-positive rate on the validation patients is at
    /// most this.
    #[arg(long, default_value_t = 0.1)]
    pub max_fpr: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 1500)]
    pub steps: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Text encoder folder (default: $SPINESEG_TEXT_ENCODER or the cache).
    #[arg(long)]
    pub text_encoder: Option<PathBuf>,
    /// Contrastive image-text steps before the supervised ones (text head only; 0 = none): each
    /// training level's ROIs against a report sentence of its grading, CLIP-style, on the
    /// training patients only.
    #[arg(long, default_value_t = 0)]
    pub image_text_pretrain_steps: usize,
    /// The image encoder: plain (conv-norm-act stages over T1 + T2 as channels, the shipped
    /// model's) or convnext-v2 (ConvNeXt V2 stages shared by the sequences, pooled and
    /// layer-normalised, from scratch).
    #[arg(long, value_enum, default_value = "plain")]
    pub encoder_kind: EncoderKindArg,
    /// Start a ConvNeXt V2 encoder from a pretrained encoder folder (`spineseg pretrain` on a 2D
    /// plan): its first stages, as many as the ROI's size divides. Implies --encoder-kind
    /// convnext-v2; the model records the folder and the SHA-256 of its weights.
    #[arg(long, value_name = "ENCODER")]
    pub encoder: Option<PathBuf>,
}

pub fn run(command: FindingsCommand) -> Result<Outcome> {
    match command {
        FindingsCommand::Rois(args) => rois(args),
        FindingsCommand::Train(args) => train(args),
        FindingsCommand::Predict(args) => predict(args),
    }
}

/// `12_t2_SPACE.nii.gz` -> ("12", "t2_SPACE").
fn patient_and_sequence(path: &Path) -> Option<(String, String)> {
    let name = path.file_name()?.to_str()?;
    let stem =
        name.strip_suffix(".nii.gz").or_else(|| name.strip_suffix(".nii")).or_else(|| name.strip_suffix(".mha"))?;
    let (patient, sequence) = stem.split_once('_')?;
    Some((patient.to_string(), sequence.to_string()))
}

fn rois(args: RoisArgs) -> Result<Outcome> {
    let model = match (&args.labels, &args.model) {
        (None, Some(model)) => Some(ModelFolder::load(model)?),
        _ => None,
    };
    let wanted: Option<BTreeSet<String>> =
        args.sequences.as_ref().map(|s| s.split(',').map(|t| t.trim().to_string()).collect());
    let mut files: Vec<(PathBuf, String, String)> = std::fs::read_dir(&args.images)
        .with_context(|| format!("{}: cannot list", args.images.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| patient_and_sequence(&p).map(|(patient, sequence)| (p, patient, sequence)))
        .filter(|(_, _, s)| wanted.as_ref().is_none_or(|w| w.contains(s)))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{}: no images named {{patient}}_{{sequence}}.nii.gz", args.images.display());
    }
    let spec = RoiSpec::default();
    let source = match (&args.labels, &args.model) {
        (Some(labels), _) => format!("segmentations in {}", labels.display()),
        (None, Some(model)) => model.display().to_string(),
        (None, None) => unreachable!("clap requires --model without --labels"),
    };
    let mut set = RoiSet::new(spec, source);
    let started = Instant::now();
    let mut failed = 0;
    for (n, (path, patient, sequence)) in files.iter().enumerate() {
        let entry = |level: u16| RoiEntry {
            patient: patient.clone(),
            sequence: sequence.clone(),
            image: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            level,
            block: None,
            missing: None,
            angle_deg: None,
            coverage: None,
        };
        let cut = match (&model, &args.labels) {
            (Some(model), _) => segment_and_cut(model, sequence, path, &spec),
            (None, Some(labels)) => {
                let mask = labels.join(path.file_name().expect("listed files have names"));
                cut_discs_from_files(sequence, path, &mask, &GRADED_DISC_LEVELS, &spec)
            }
            (None, None) => unreachable!("clap requires --model without --labels"),
        };
        match cut {
            Ok(discs) => {
                let mut found = 0;
                for (level, roi) in &discs.discs {
                    match roi {
                        Ok(roi) => {
                            found += 1;
                            set.push(
                                RoiEntry {
                                    angle_deg: Some(roi.angle_deg),
                                    coverage: Some(roi.coverage),
                                    ..entry(*level)
                                },
                                Some(&roi.pixels),
                            );
                        }
                        Err(reason) => set.push(RoiEntry { missing: Some(reason.clone()), ..entry(*level) }, None),
                    }
                }
                eprintln!(
                    "[{}/{}] {}: {found} of {} discs ({:.0} s)",
                    n + 1,
                    files.len(),
                    path.display(),
                    discs.discs.len(),
                    started.elapsed().as_secs_f64()
                );
            }
            Err(error) => {
                failed += 1;
                eprintln!("[{}/{}] {}: failed: {error}", n + 1, files.len(), path.display());
            }
        }
    }
    set.write(&args.out)?;
    let found = set.index.entries.iter().filter(|e| e.block.is_some()).count();
    println!(
        "{} images ({failed} failed), {found} disc ROIs of {} levels -> {}",
        files.len(),
        set.index.entries.len(),
        args.out.display()
    );
    Ok(if failed > 0 { Outcome::ProblemsFound } else { Outcome::Success })
}

/// (patient, level) -> one ROI per input channel ([`SEQUENCES`]), only of the `used` sequences.
fn rois_by_level(set: &RoiSet, used: &[&str]) -> BTreeMap<(String, u16), Vec<Option<Vec<f32>>>> {
    let mut rois: BTreeMap<(String, u16), Vec<Option<Vec<f32>>>> = BTreeMap::new();
    for entry in &set.index.entries {
        let Some(channel) = SEQUENCES.iter().position(|s| *s == entry.sequence) else { continue };
        if !used.contains(&SEQUENCES[channel]) {
            continue;
        }
        if let Some(pixels) = set.pixels_of(entry) {
            rois.entry((entry.patient.clone(), entry.level)).or_insert_with(|| vec![None; SEQUENCES.len()])[channel] =
                Some(pixels.to_vec());
        }
    }
    rois
}

/// A findings CSV row per graded level (patient, level, input if found): `probabilities` holds
/// one entry per found level, in order; decisions at `thresholds`.
fn findings_rows(
    levels: &[(String, u16, Option<FindingsInput>)],
    probabilities: Vec<FindingsProbabilities>,
    thresholds: [f32; 5],
) -> Vec<FindingsRow> {
    let mut probabilities = probabilities.into_iter();
    levels
        .iter()
        .map(|(patient, level, input)| {
            let p = input.as_ref().map(|_| probabilities.next().expect("one probability per found level"));
            findings_row(patient, *level, p, thresholds)
        })
        .collect()
}

/// Patients dealt into `folds` folds by [`FOLD_SEED`].
fn patient_folds(patients: &[String], folds: usize) -> BTreeMap<String, usize> {
    let mut shuffled = patients.to_vec();
    shuffled.sort();
    shuffled.shuffle(&mut ChaCha8Rng::seed_from_u64(FOLD_SEED));
    shuffled.into_iter().enumerate().map(|(i, p)| (p, i % folds)).collect()
}

fn train(args: TrainFindingsArgs) -> Result<Outcome> {
    if args.image_text_pretrain_steps > 0 && args.head != FindingsHead::Text {
        bail!("--image-text-pretrain-steps needs --head text (a visual head has no text side to pretrain)");
    }
    if args.folds < 2 && args.fold.is_some() {
        bail!("--folds must be at least 2 to hold one out");
    }
    if let Some(fold) = args.fold.filter(|&f| f >= args.folds) {
        bail!("--fold {fold} is out of range for --folds {} (0 to {})", args.folds, args.folds - 1);
    }
    let set = RoiSet::read(&args.rois)?;
    let spec = set.index.roi;
    let roi_px = [spec.height_px, spec.width_px];
    // Checked before the slow steps (reading the gradings, embedding the prompts).
    let (encoder, pretrained_encoder) = match (&args.encoder, args.encoder_kind) {
        (Some(dir), _) => {
            let (encoder, pretrained) = spineseg_train::pretrained_encoder::findings_encoder_of(dir, roi_px)?;
            (Some(encoder), Some(pretrained))
        }
        (None, EncoderKindArg::ConvnextV2) => (Some(FindingsEncoderConfig::convnext_v2_default()), None),
        (None, EncoderKindArg::Plain) => (None, None),
    };
    let gradings = read_spider_gradings(&args.gradings)?;
    let used = args.sequences.names().to_vec();
    let levels: Vec<u16> = set.index.entries.iter().map(|e| e.level).collect::<BTreeSet<_>>().into_iter().collect();
    let rois = rois_by_level(&set, &used);
    let patients: Vec<String> =
        gradings.discs.iter().map(|d| d.patient.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let folds = patient_folds(&patients, args.folds.max(1));
    let held_out = |p: &str| args.fold.is_some_and(|f| folds.get(p) == Some(&f));
    let mut trainable: Vec<String> = patients.iter().filter(|p| !held_out(p)).cloned().collect();
    trainable.shuffle(&mut ChaCha8Rng::seed_from_u64(FOLD_SEED + 1 + args.fold.unwrap_or(0) as u64));
    let n_validation = ((trainable.len() as f64) * args.validation_fraction).round() as usize;
    let validation: BTreeSet<String> = trainable[..n_validation.min(trainable.len())].iter().cloned().collect();
    let mut train_samples = Vec::new();
    let mut validation_samples = Vec::new();
    let mut heldout: Vec<(String, u16, Option<FindingsSample>)> = Vec::new();
    let mut not_found = 0usize;
    let mut other_levels = 0usize;
    for disc in &gradings.discs {
        let level = disc.level.0;
        let Some(level_index) = levels.iter().position(|&l| l == level) else {
            other_levels += 1;
            if held_out(&disc.patient) {
                heldout.push((disc.patient.clone(), level, None));
            }
            continue;
        };
        let sample = rois.get(&(disc.patient.clone(), level)).map(|r| FindingsSample {
            patient: disc.patient.clone(),
            input: FindingsInput { level: level_index, rois: r.clone() },
            findings: disc.findings.present,
            grade: disc.findings.pfirrmann,
        });
        if held_out(&disc.patient) {
            heldout.push((disc.patient.clone(), level, sample));
        } else if let Some(sample) = sample {
            if validation.contains(&disc.patient) {
                validation_samples.push(sample);
            } else {
                train_samples.push(sample);
            }
        } else {
            not_found += 1;
        }
    }
    let counts: Vec<String> = FINDING_KEYS
        .iter()
        .enumerate()
        .map(|(f, k)| format!("{k} {}", train_samples.iter().filter(|s| s.findings[f]).count()))
        .collect();
    println!(
        "{} patients ({} validation{}), {} training levels, {} validation levels; {not_found} graded levels not found on the {} images, {other_levels} at levels the segmentation does not name",
        patients.len(),
        validation.len(),
        args.fold.map_or(String::new(), |f| format!(", fold {f} held out: {} levels", heldout.len())),
        train_samples.len(),
        validation_samples.len(),
        used.join("+"),
    );
    println!("positives in training: {}", counts.join(", "));
    let (head, embeddings, prompts, pretraining) = match args.head {
        FindingsHead::Visual => (FindingsHeadConfig::Visual, None, None, None),
        FindingsHead::Text => {
            let encoder = crate::text_encoder::load_encoder(args.text_encoder.clone())?;
            let ids: Vec<_> = levels.iter().map(|&l| spineseg_anatomy::StructureId(l)).collect();
            let (prompts, embeddings) = spineseg_text::findings_prompts::embed_finding_prompts(&encoder, &ids)?;
            let pretraining = (args.image_text_pretrain_steps > 0)
                .then(|| report_sentence_pairs(&encoder, &levels, &train_samples, args.image_text_pretrain_steps))
                .transpose()?;
            (
                FindingsHeadConfig::Text { text_dim: encoder.embedding_dim(), embed_dim: 64 },
                Some(embeddings),
                Some(prompts),
                pretraining,
            )
        }
    };
    let config = DiscFindingsNetConfig::new(levels.clone(), head).with_roi_px(roi_px).with_encoder(encoder);
    config.validate().with_context(|| format!("{}: the findings network for this ROI set", args.rois.display()))?;
    let settings = FindingsTrainConfig {
        steps: args.steps,
        batch_size: args.batch_size,
        seed: args.seed,
        pretrained_encoder,
        ..Default::default()
    };
    let started = Instant::now();
    let every = (args.steps / 10).max(1);
    let pretrain_every = (args.image_text_pretrain_steps / 10).max(1);
    let mut recent = Vec::new();
    let mut pretrain_seconds = 0.0;
    let training = train_findings_with(
        &config,
        embeddings,
        &train_samples,
        &settings,
        pretraining.as_ref(),
        |stage, step, loss| {
            recent.push(loss);
            let (every, total, name) = match stage {
                FindingsStage::ImageTextPretraining => {
                    (pretrain_every, args.image_text_pretrain_steps, "image-text pretraining step")
                }
                FindingsStage::Supervised => (every, args.steps, "step"),
            };
            if (step + 1) % every == 0 || step + 1 == total {
                let mean = recent.iter().sum::<f64>() / recent.len() as f64;
                eprintln!("{name} {:>5}/{total}: loss {mean:.4} ({:.0} s)", step + 1, started.elapsed().as_secs_f64());
                let _ = std::io::stderr().flush();
                recent.clear();
            }
            if stage == FindingsStage::ImageTextPretraining && step + 1 == total {
                pretrain_seconds = started.elapsed().as_secs_f64();
            }
        },
    )?;
    // Thresholds on the validation patients only.
    let device = spineseg_model::burn::tensor::Device::flex();
    let validation_inputs: Vec<FindingsInput> = validation_samples.iter().map(|s| s.input.clone()).collect();
    let validation_probabilities =
        spineseg_infer::findings_model::predict_findings(&training.net, &config, &validation_inputs, &device);
    let thresholds: BTreeMap<String, f32> = FINDING_KEYS
        .iter()
        .enumerate()
        .map(|(f, k)| {
            let negatives: Vec<f32> = validation_samples
                .iter()
                .zip(&validation_probabilities)
                .filter(|(s, _)| !s.findings[f])
                .map(|(_, p)| p.findings[f])
                .collect();
            (k.to_string(), choose_threshold(&negatives, args.max_fpr))
        })
        .collect();
    let manifest = FindingsManifest {
        format: FINDINGS_MODEL_FORMAT,
        network: FindingsNetwork::DiscFindingsCnn(config.clone()),
        roi: RoiGeometry {
            width_mm: spec.width_mm,
            height_mm: spec.height_mm,
            width_px: spec.width_px,
            height_px: spec.height_px,
        },
        sequences: SEQUENCES.iter().map(|s| s.to_string()).collect(),
        trained_sequences: used.iter().map(|s| s.to_string()).collect(),
        thresholds: thresholds.clone(),
        threshold_rule: format!(
            "highest recall with false-positive rate <= {} on {} validation patients",
            args.max_fpr,
            validation.len()
        ),
        prompts,
        training: serde_json::json!({
            "seed": args.seed,
            "steps": args.steps,
            "settings": settings,
            "folds": args.folds,
            "fold": args.fold,
            "fold_seed": FOLD_SEED,
            "training_levels": train_samples.len(),
            "validation_levels": validation_samples.len(),
            "positive_weights": training.positive_weights,
            "final_loss": training.losses.last(),
            "rois": args.rois.display().to_string(),
            "segmentation_model": set.index.segmentation_model,
            "gradings": args.gradings.display().to_string(),
            "seconds": started.elapsed().as_secs_f64(),
            "image_text_pretraining": pretraining.as_ref().map(|p| pretraining_record(p, &training.pretrain_losses, settings.batch_size, pretrain_seconds)),
        }),
    };
    FindingsModel::save(&args.out, &training.net, &manifest, WeightPrecision::Half)?;
    println!("thresholds: {}", thresholds.iter().map(|(k, t)| format!("{k} {t:.3}")).collect::<Vec<_>>().join(", "));
    if args.fold.is_some() {
        let levels: Vec<(String, u16, Option<FindingsInput>)> =
            heldout.iter().map(|(p, l, sample)| (p.clone(), *l, sample.as_ref().map(|s| s.input.clone()))).collect();
        let inputs: Vec<FindingsInput> = levels.iter().filter_map(|(_, _, input)| input.clone()).collect();
        // The trained network in memory (single precision), as the recorded cross-validation ran.
        let probabilities = spineseg_infer::findings_model::predict_findings(&training.net, &config, &inputs, &device);
        let rows = findings_rows(&levels, probabilities, manifest.threshold_array());
        let path = args.out.join("heldout_findings.csv");
        write_findings_csv(&path, &rows)?;
        println!("held-out fold {}: {} levels -> {}", args.fold.unwrap_or(0), rows.len(), path.display());
    }
    println!("findings model -> {} ({:.0} s)", args.out.display(), started.elapsed().as_secs_f64());
    Ok(Outcome::Success)
}

/// The text side of the image-text pretraining: a report sentence per training sample (its
/// level, findings and Pfirrmann grade), each distinct sentence embedded once by the frozen
/// encoder. `samples` must be the training patients' levels only: the sentences are the labels.
fn report_sentence_pairs(
    encoder: &spineseg_text::TextEncoder,
    levels: &[u16],
    samples: &[FindingsSample],
    steps: usize,
) -> Result<ImageTextPretraining> {
    let sentences: Vec<String> = samples
        .iter()
        .map(|s| {
            let level = spineseg_anatomy::StructureId(levels[s.input.level]);
            spineseg_text::findings_prompts::report_sentence(level, &s.findings, s.grade)
        })
        .collect();
    let distinct: Vec<&String> = sentences.iter().collect::<BTreeSet<_>>().into_iter().collect();
    let index: BTreeMap<&String, usize> = distinct.iter().enumerate().map(|(i, s)| (*s, i)).collect();
    let embeddings = encoder.embed(&distinct)?;
    println!(
        "image-text pretraining: {} training levels, {} distinct report sentences (e.g. \"{}\")",
        sentences.len(),
        distinct.len(),
        distinct.first().map_or("", |s| s.as_str())
    );
    Ok(ImageTextPretraining {
        steps,
        sentence_of_sample: sentences.iter().map(|s| index[s]).collect(),
        sentence_embeddings: embeddings.into_iter().flatten().collect(),
    })
}

/// The manifest's record of the image-text pretraining.
fn pretraining_record(
    pretraining: &ImageTextPretraining,
    losses: &[f64],
    batch_size: usize,
    seconds: f64,
) -> serde_json::Value {
    let tail = &losses[losses.len() - (losses.len() / 10).max(1).min(losses.len())..];
    let distinct = pretraining.sentence_of_sample.iter().collect::<BTreeSet<_>>().len();
    serde_json::json!({
        "method": "symmetric InfoNCE (CLIP), learned temperature capped at 100, identical sentences positives of each other",
        "text": "report sentence per training level (level, findings, Pfirrmann grade), frozen encoder + the text head's projection",
        "image": "the findings encoder + the text head's image projection",
        "data": "training patients of this fold only (no validation or held-out patient)",
        "steps": pretraining.steps,
        "batch_size": batch_size,
        "pairs": pretraining.sentence_of_sample.len(),
        "distinct_sentences": distinct,
        "first_loss": losses.first(),
        "final_loss": losses.last(),
        "mean_loss_last_tenth": if tail.is_empty() { None } else { Some(tail.iter().sum::<f64>() / tail.len() as f64) },
        "seconds": seconds,
    })
}

fn predict(args: PredictFindingsArgs) -> Result<Outcome> {
    if let Some(fold) = args.fold.filter(|&f| f >= args.folds) {
        bail!("--fold {fold} is out of range for --folds {} (0 to {})", args.folds, args.folds.saturating_sub(1));
    }
    let model = FindingsModel::load(&args.findings_model)?;
    let set = RoiSet::read(&args.rois)?;
    let gradings = read_spider_gradings(&args.gradings)?;
    let used: Vec<&str> = match args.sequences {
        Some(sequences) => sequences.names().to_vec(),
        None => SEQUENCES.iter().copied().filter(|s| model.manifest.trained_sequences.iter().any(|t| t == s)).collect(),
    };
    let rois = rois_by_level(&set, &used);
    let patients: Vec<String> =
        gradings.discs.iter().map(|d| d.patient.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let folds = patient_folds(&patients, args.folds.max(1));
    let selected = |p: &str| args.fold.is_none_or(|f| folds.get(p) == Some(&f));
    let levels: Vec<(String, u16, Option<FindingsInput>)> = gradings
        .discs
        .iter()
        .filter(|d| selected(&d.patient))
        .map(|d| {
            let input = model.manifest.level_index(d.level.0).and_then(|index| {
                rois.get(&(d.patient.clone(), d.level.0)).map(|r| FindingsInput { level: index, rois: r.clone() })
            });
            (d.patient.clone(), d.level.0, input)
        })
        .collect();
    let inputs: Vec<FindingsInput> = levels.iter().filter_map(|(_, _, input)| input.clone()).collect();
    let rows = findings_rows(&levels, model.predict(&inputs), model.manifest.threshold_array());
    write_findings_csv(&args.out, &rows)?;
    let found = rows.iter().filter(|r| r.found()).count();
    println!("{} graded levels ({found} found on {}) -> {}", rows.len(), used.join("+"), args.out.display());
    Ok(Outcome::Success)
}
