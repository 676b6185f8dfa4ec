//! `spineseg model precision MODEL half|single`: rewrite a trained model folder's weights.

use crate::values::PrecisionArg;
use crate::Outcome;
use anyhow::Result;
use spineseg_infer::ModelFolder;
use std::path::PathBuf;

/// Work on a trained model folder.
#[derive(clap::Subcommand)]
pub enum ModelCommand {
    /// Rewrite the folder's weights file in place in half or single precision (half halves the
    /// file; prediction computes in f32 either way). The folder is loaded and checked first and
    /// the new file replaces the old by a rename.
    Precision(PrecisionArgs),
}

#[derive(clap::Args)]
pub struct PrecisionArgs {
    /// Trained model folder (model.json, plans.json, labels.json, weights).
    pub model: PathBuf,
    /// half (IEEE f16) or single (f32).
    #[arg(value_enum)]
    pub precision: PrecisionArg,
}

pub fn run(command: ModelCommand) -> Result<Outcome> {
    match command {
        ModelCommand::Precision(args) => {
            let precision = args.precision.into();
            let weights = ModelFolder::load(&args.model)?.manifest.weights;
            let path = args.model.join(weights);
            let before = std::fs::metadata(&path)?.len();
            ModelFolder::rewrite_weights(&args.model, precision)?;
            let after = std::fs::metadata(&path)?.len();
            eprintln!("{}: {:.1} MB -> {:.1} MB", path.display(), before as f64 / 1e6, after as f64 / 1e6);
            Ok(Outcome::Success)
        }
    }
}
