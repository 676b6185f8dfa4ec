//! `spineseg train`: nnU-Net-style training of a plan's configuration into a model folder.

use crate::values::{AugmentationArg, ConfigurationArg, EncoderKindArg, NetworkArg, OptimizerArg, PartialLabelRuleArg};
use crate::training_progress::{set_compute_threads, stop_reason_text, CliObserver};
use crate::Outcome;
use anyhow::{Context, Result};
use spineseg_train::{
    train, CpsSettings, EncoderChoice, EngineConfig, MethodConfig, RunOptions, RunPaths, SshsnetStage2Settings, SupervisedSettings,
    TextGuidedSettings, TmcaSettings,
};
use std::path::PathBuf;

/// Train a U-Net on the preprocessed data of a work folder (`spineseg plan`) and write a model
/// folder: model.json, plans.json, labels.json, weights.bpk (best EMA pseudo-Dice checkpoint) and
/// training/ (log.csv, progress.png, splits_final.json, checkpoints). Deterministic for a seed;
/// `--resume` continues an interrupted run exactly where it stopped.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// Work folder written by `spineseg plan` (plans.json, preprocessed/).
    pub work: PathBuf,
    /// Model folder to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Plan configuration: 2d or 3d_fullres.
    #[arg(long, value_enum, default_value = "2d")]
    pub configuration: ConfigurationArg,
    /// Cross-validation fold (0-4) of WORK/splits_final.json.
    #[arg(long, default_value_t = 0)]
    pub fold: usize,
    /// Epochs of the learning-rate schedule (nnU-Net: 1000).
    #[arg(long, default_value_t = 1000)]
    pub epochs: usize,
    /// Training iterations per epoch (nnU-Net: 250).
    #[arg(long, default_value_t = 50)]
    pub iterations_per_epoch: usize,
    /// Fixed validation batches per epoch for the pseudo-Dice (nnU-Net: 50).
    #[arg(long, default_value_t = 10)]
    pub validation_batches: usize,
    /// Stop when the next epoch would exceed this many minutes; the schedule is shortened to the
    /// epochs that fit, measured on the first epoch.
    #[arg(long)]
    pub time_budget_min: Option<f64>,
    /// sgd (nnU-Net: lr 0.01, momentum 0.99, Nesterov) or adamw (lr 1e-3, weight decay 0.01).
    #[arg(long, value_enum, default_value = "sgd")]
    pub optimizer: OptimizerArg,
    /// Initial learning rate (default: the optimiser's).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Training augmentation: default (nnU-Net's, spine-safe) or contrast (also intensity
    /// inversion, histogram remapping, bias fields, wider gamma and low resolution, for scans
    /// of other contrasts and scanners). Stored in the checkpoint; --resume keeps it.
    #[arg(long, value_enum, default_value = "default")]
    pub augmentation: AugmentationArg,
    /// Seed of initialisation, batches and augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Continue the run in OUT from its last checkpoint, with the settings stored there.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many epochs in total (the run can be continued with --resume).
    #[arg(long)]
    pub stop_after_epochs: Option<usize>,
    /// Compute threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Threads making training batches in the background.
    #[arg(long, default_value_t = 1)]
    pub loader_threads: usize,
    /// No progress bar (one line per epoch only).
    #[arg(long)]
    pub quiet: bool,
    /// Run the network with burn's own conv / norm layers instead of spineseg's fast CPU kernels
    /// (same parameters and results up to rounding; several times slower). For A/B comparisons.
    #[arg(long)]
    pub reference_layers: bool,
    /// Partial labels: each case supervises only the classes it annotates (a case with
    /// vertebral bodies L1-L5 but no discs teaches nothing about discs or T12), for datasets that
    /// label different subsets of the anatomy, such as lumbar-real. A dataset's annotations.json
    /// can declare what its cases annotate.
    #[arg(long)]
    pub partial_labels: bool,
    /// How --partial-labels infers what a case annotates: by-range-neighbours (per structure kind
    /// it labels, everything but the model's level just above and just below its labelled range),
    /// by-range (only the levels within its labelled range; let rarely labelled levels absorb the
    /// background on the merged DEV data, docs/BENCHMARKS.md) or by-kind (every level of each kind
    /// it labels; the rule of models trained before this flag existed).
    #[arg(long, value_enum, default_value = "by-range-neighbours", requires = "partial_labels")]
    pub partial_label_rule: PartialLabelRuleArg,
    /// Text guidance (ATM-Net's HASF fusion + CCAE loss): the class prompts are embedded once
    /// with the text encoder into OUT/prompt_embeddings.json and travel with the model. Without
    /// it: the visual-only U-Net.
    #[arg(long)]
    pub text_guided: bool,
    /// Width of the text tokens and of the text-image cross-attention (--text-guided).
    #[arg(long, default_value_t = TextGuidedSettings::default().embed_dim, requires = "text_guided")]
    pub text_embed_dim: usize,
    /// Attention heads of the text-image cross-attention (--text-guided).
    #[arg(long, default_value_t = TextGuidedSettings::default().heads, requires = "text_guided")]
    pub text_heads: usize,
    /// How many of the deepest encoder stages get text-image cross-attention (--text-guided).
    #[arg(long, default_value_t = TextGuidedSettings::default().fused_stages, requires = "text_guided")]
    pub text_fused_stages: usize,
    /// Weight of the CCAE contrastive loss; 0 switches it off (--text-guided).
    #[arg(long, default_value_t = TextGuidedSettings::default().ccae_weight, requires = "text_guided")]
    pub ccae_weight: f64,
    /// Temperature of the CCAE InfoNCE (--text-guided).
    #[arg(long, default_value_t = TextGuidedSettings::default().ccae_temperature, requires = "text_guided")]
    pub ccae_temperature: f64,
    /// ATM-Net's per-view prompts in training (--text-guided, 2d): a training sample's prompt
    /// for each structure it shows says where it lies in the patch, whether the edge cuts it and
    /// which neighbours are visible (every such prompt is embedded once into
    /// OUT/view_prompt_embeddings.json). Prediction keeps the class prompts.
    #[arg(long, requires = "text_guided", conflicts_with = "tmca")]
    pub view_prompts: bool,
    /// Share of labelled training samples that take their per-view prompts; the rest keep the
    /// class prompts prediction uses (--view-prompts).
    #[arg(long, default_value_t = TextGuidedSettings::default().view_prompt_rate, requires = "view_prompts")]
    pub view_prompt_rate: f64,
    /// Report text (--text-guided): a JSON object of case id -> free-text report (`spineseg text
    /// reports` builds one from SPIDER's gradings). The network gets a report token; each
    /// training sample carries its case's report, a case without one a fixed "no report"
    /// sentence. The reports are embedded once into OUT/report_embeddings.json;
    /// `predict --report` gives one at prediction. With --tmca too: TMCA + HASF with the token.
    #[arg(long, value_name = "REPORTS.json", requires = "text_guided")]
    pub reports: Option<PathBuf>,
    /// Skip a training step whose loss or gradient norm is not finite (counted in log.csv's
    /// `skipped_steps` and the epoch line) instead of stopping the run with an error naming the
    /// epoch and step. Stored in the checkpoint.
    #[arg(long)]
    pub skip_non_finite_steps: bool,
    /// 2.5D input (2d configuration): each slice with N neighbouring slices on each side as
    /// input channels, as SSHSNet's stage 1 (1: three adjacent slices, the middle one's labels).
    /// model.json records it and `predict` stacks the slices the same way. Stored in the
    /// checkpoint.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub slice_context: usize,
    /// TMCA (target-informed multi-level contrastive alignment and language-guided target
    /// enhancement of decoder levels, docs/TEXT_GUIDANCE.md): the class prompts are embedded into
    /// OUT/prompt_embeddings.json as for --text-guided. With --text-guided as well: TMCA + HASF.
    #[arg(long)]
    pub tmca: bool,
    /// Decoder levels TMCA aligns and enhances, 0 = full resolution (--tmca).
    #[arg(long, value_delimiter = ',', default_values_t = TmcaSettings::default().levels, requires = "tmca")]
    pub tmca_levels: Vec<usize>,
    /// Weight of the TMCA loss (--tmca).
    #[arg(long, default_value_t = TmcaSettings::default().tmca_weight, requires = "tmca")]
    pub tmca_weight: f64,
    /// Cross pseudo supervision (SSHSNet's stage 1, issue 13): two U-Nets from different seeds,
    /// each step half labelled and half unlabelled patches (WORK/unlabelled/CONFIGURATION, filled
    /// by --images or `spineseg pretrain --images`), each network supervising the other on the
    /// unlabelled ones with its CutMix-mixed pseudo-labels. The model is the first network.
    #[arg(long, conflicts_with_all = ["text_guided", "tmca", "encoder", "encoder_kind"])]
    pub cps: bool,
    /// The network (each of the two with --cps): the plan's U-Net or DeepLabv3+ on its stages.
    #[arg(long, value_enum, default_value = "unet", conflicts_with_all = ["text_guided", "tmca", "encoder", "encoder_kind"])]
    pub network: NetworkArg,
    /// Weight of the cross pseudo supervision term (--cps).
    #[arg(long, default_value_t = CpsSettings::default().cps_weight, requires = "cps")]
    pub cps_weight: f64,
    /// Ramp the CPS weight up over the first STEPS steps (sigmoid-shaped, as SSL4MIS's CPS);
    /// default: the full weight from the first step, as the authors (--cps).
    #[arg(long, value_name = "STEPS", requires = "cps")]
    pub cps_rampup: Option<u64>,
    /// Folders of unlabelled images (one single-channel image per file) preprocessed into
    /// WORK/unlabelled/CONFIGURATION for --cps; images already there are kept.
    #[arg(long, num_args = 1.., value_name = "DIR", requires = "cps")]
    pub images: Vec<PathBuf>,
    /// SSHSNet's stage 2 (issue 13) on this stage-1 model folder (`spineseg train --cps` on the
    /// 2d configuration of the same plan): trains the 3d_fullres configuration's U-Net with the
    /// stage-1 networks frozen inside it (their mean class probabilities as input channels, their
    /// decoder features fused by cross tri-attention). The model folder is the whole cascade.
    #[arg(long, value_name = "STAGE1", conflicts_with_all = ["cps", "text_guided", "tmca", "encoder", "encoder_kind", "network"])]
    pub stage1: Option<PathBuf>,
    /// With --stage1: concatenate the 2D and 3D features instead of the cross tri-attention
    /// (the ablation's arm).
    #[arg(long, requires = "stage1")]
    pub no_tri_attention: bool,
    /// With --stage1: add stage 1's log-probabilities to the 3D network's logits, so that the
    /// cascade starts as stage 1's prediction and the 3D network learns a correction (ours, not
    /// the authors'; docs/BENCHMARKS.md, "Stage 2 accuracy").
    #[arg(long, requires = "stage1")]
    pub stage1_prior: bool,
    /// Factor on a neighbouring level's term in the TMCA InfoNCE denominator; 1: no hard
    /// negatives (--tmca).
    #[arg(long, default_value_t = TmcaSettings::default().hard_negative_weight, requires = "tmca")]
    pub hard_negative_weight: f64,
    /// The supervised network's encoder: plain (the plan's U-Net, nnU-Net's) or convnext-v2
    /// (ConvNeXt V2 stages with the plan's widths and strides, nnU-Net's decoder).
    #[arg(long, value_enum, default_value = "plain", conflicts_with_all = ["text_guided", "tmca"])]
    pub encoder_kind: EncoderKindArg,
    /// Start the ConvNeXt V2 encoder from a pretrained encoder folder (`spineseg pretrain`; same
    /// plan and configuration). Implies --encoder-kind convnext-v2; the model records which
    /// encoder (folder and SHA-256 of its weights) it came from.
    #[arg(long, value_name = "ENCODER", conflicts_with_all = ["text_guided", "tmca"])]
    pub encoder: Option<PathBuf>,
    /// Drop path (stochastic depth) of the ConvNeXt V2 blocks: the last block's rate, rising
    /// linearly from 0 at the first (--encoder-kind convnext-v2 or --encoder). Resumes are then
    /// correct but not bit-identical (the masks come from the process's random generator).
    #[arg(long, value_name = "RATE")]
    pub drop_path: Option<f64>,
    /// Text encoder folder for --text-guided or --tmca (default as for `spineseg text embed`).
    #[arg(long, value_name = "DIR")]
    pub text_encoder: Option<PathBuf>,
}

pub fn run(args: TrainArgs) -> Result<Outcome> {
    if args.reference_layers {
        spineseg_model::fast_kernels::set_enabled(false);
    }
    if args.drop_path.is_some() && args.encoder.is_none() && args.encoder_kind != EncoderKindArg::ConvnextV2 {
        anyhow::bail!("--drop-path applies to ConvNeXt V2 blocks: add --encoder-kind convnext-v2 or --encoder ENCODER");
    }
    set_compute_threads(args.threads)?;
    let configuration = args.configuration.into();
    let mut config = EngineConfig::new(configuration);
    config.fold = args.fold;
    config.epochs = args.epochs;
    config.iterations_per_epoch = args.iterations_per_epoch;
    config.validation_batches = args.validation_batches;
    config.seed = args.seed;
    config.augmentation = args.augmentation.config();
    config.loader_threads = args.loader_threads.max(1);
    config.time_budget_s = args.time_budget_min.map(|m| m * 60.0);
    config.skip_non_finite_steps = args.skip_non_finite_steps;
    config.slice_context = args.slice_context;
    config.optimizer = args.optimizer.config(args.lr);
    if args.resume {
        eprintln!("resuming from {}: the settings stored in the checkpoint are used", args.out.display());
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("{}: cannot create folder", args.out.display()))?;
    let paths = RunPaths { work: args.work.clone(), model_dir: args.out.clone() };
    // The method; a resumed run takes it (and the engine settings) from its checkpoint instead.
    let partial_label_rule = args.partial_labels.then(|| args.partial_label_rule.into());
    let hasf = TextGuidedSettings {
        partial_labels: args.partial_labels,
        partial_label_rule,
        embed_dim: args.text_embed_dim,
        heads: args.text_heads,
        fused_stages: args.text_fused_stages,
        ccae_weight: args.ccae_weight,
        ccae_temperature: args.ccae_temperature,
        view_prompts: args.view_prompts,
        view_prompt_rate: args.view_prompt_rate,
        reports: args.reports.is_some(),
    };
    let method = if let Some(stage1) = &args.stage1 {
        MethodConfig::SshsnetStage2(SshsnetStage2Settings {
            stage1: stage1.clone(),
            tri_attention: !args.no_tri_attention,
            stage1_prior: args.stage1_prior,
            partial_labels: args.partial_labels,
            partial_label_rule,
        })
    } else if args.cps {
        if !args.images.is_empty() {
            let plan = spineseg_preprocessing::plan::Plan::load(&paths.plans())?;
            let pool = paths.unlabelled(configuration);
            let (added, present) = crate::commands::pretrain::fill_pool(&args.images, &plan, configuration, &pool)?;
            eprintln!("unlabelled images: {added} preprocessed, {present} already in {}", pool.display());
        }
        MethodConfig::Cps(CpsSettings {
            partial_labels: args.partial_labels,
            partial_label_rule,
            cps_weight: args.cps_weight,
            rampup_steps: args.cps_rampup,
            network: args.network.into(),
            ..CpsSettings::default()
        })
    } else if args.tmca {
        MethodConfig::Tmca(TmcaSettings {
            partial_labels: args.partial_labels,
            partial_label_rule,
            levels: args.tmca_levels.clone(),
            tmca_weight: args.tmca_weight,
            hard_negative_weight: args.hard_negative_weight,
            hasf: args.text_guided.then_some(hasf),
            ..TmcaSettings::default()
        })
    } else if args.text_guided {
        MethodConfig::TextGuided(hasf)
    } else {
        let encoder = match (&args.encoder, args.encoder_kind) {
            (None, EncoderKindArg::Plain) => EncoderChoice::PlainConv,
            (None, EncoderKindArg::ConvnextV2) => EncoderChoice::ConvnextV2 { pretrained: None, drop_path: args.drop_path },
            (Some(dir), _) if !args.resume => {
                let plan = spineseg_preprocessing::plan::Plan::load(&paths.plans())?;
                let unet = spineseg_train::try_network_config_from_plan(&plan, configuration)?;
                let target = spineseg_model::ConvNeXtUNetConfig::from_unet(&unet);
                let pretrained = spineseg_train::pretrained_encoder::describe_pretrained_encoder(dir, &target)?;
                eprintln!(
                    "encoder: {} ({} steps of {}, weights sha256 {}...)",
                    dir.display(),
                    pretrained.steps,
                    pretrained.method,
                    &pretrained.weights_sha256[..12]
                );
                EncoderChoice::ConvnextV2 { pretrained: Some(pretrained), drop_path: args.drop_path }
            }
            // A resumed run takes its settings (and the encoder's trained weights) from the checkpoint.
            (Some(_), _) => EncoderChoice::ConvnextV2 { pretrained: None, drop_path: args.drop_path },
        };
        MethodConfig::Supervised(SupervisedSettings {
            partial_labels: args.partial_labels,
            partial_label_rule,
            encoder,
            network: args.network.into(),
        })
    };
    if (args.text_guided || args.tmca) && !args.resume && !paths.checkpoint_last().exists() {
        // Embedded once here; a resumed run reads the file (and the weights hold the vectors).
        let encoder = crate::text_encoder::load_encoder(args.text_encoder.clone())?;
        let embeddings = spineseg_text::class_embeddings::write_class_prompt_embeddings(&paths.plans(), &args.out, &encoder)?;
        let path = args.out.join(spineseg_infer::model_folder::PROMPT_EMBEDDINGS_FILE);
        eprintln!("text guidance: {} class prompts embedded ({} dimensions) into {}", embeddings.classes.len(), embeddings.dim, path.display());
        if let Some(reports) = &args.reports {
            let written = spineseg_text::reports::write_report_embeddings(reports, &args.out, &encoder)?;
            eprintln!("reports: {written} case reports embedded into {}", args.out.join(spineseg_infer::model_folder::REPORT_EMBEDDINGS_FILE).display());
        }
        if args.view_prompts {
            let count = spineseg_text::class_embeddings::write_view_prompt_embeddings(&paths.plans(), &args.out, &encoder)?;
            let path = args.out.join(spineseg_infer::model_folder::VIEW_PROMPT_EMBEDDINGS_FILE);
            eprintln!("per-view prompts: {count} embedded into {}", path.display());
        }
    }
    let options = RunOptions { resume: args.resume, stop_after_epochs: args.stop_after_epochs, device: None };
    let mut observer = CliObserver::new(args.quiet);
    let outcome = train(&paths, config, method, &options, &mut observer)?;
    observer.finish();
    let state = &outcome.state;
    let why = stop_reason_text(outcome.reason);
    println!(
        "{why}: {} of {} epochs in {:.1} min; best EMA pseudo-Dice {} at epoch {}",
        state.epochs_done,
        state.total_epochs,
        state.elapsed_s / 60.0,
        state.best_ema_pseudo_dice.map_or("n/a".to_string(), |d| format!("{d:.4}")),
        state.best_epoch
    );
    println!("model written to {}", outcome.model_dir.display());
    // Results are bit-reproducible on CPUs that take the same paths (docs/ARCHITECTURE.md,
    // "Determinism"); say which ones this run took.
    println!("SIMD paths: {}", spineseg_kernels::simd_paths());
    Ok(Outcome::Success)
}
