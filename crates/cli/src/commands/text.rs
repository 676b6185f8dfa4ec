//! `spineseg text ...`: the frozen text encoder (sentence-transformers' all-MiniLM-L6-v2 on
//! burn, `spineseg-text`).

use crate::Outcome;
use anyhow::{Context, Result};
use spineseg_text::{Device, TextEncoder};
use std::path::PathBuf;

/// Where `scripts/fetch_text_encoder.sh` puts the encoder, under the home folder.
const DEFAULT_DIR: &str = ".cache/spineseg/text/all-MiniLM-L6-v2";

#[derive(clap::Subcommand)]
pub enum TextCommand {
    /// Embed prompts with the text encoder. Prints a JSON array with one object per prompt
    /// (`text`, `dim`, `embedding`), one object per line.
    Embed(EmbedArgs),
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
    }
}

fn encoder_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("SPINESEG_TEXT_ENCODER").map(PathBuf::from))
        .unwrap_or_else(|| std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default().join(DEFAULT_DIR))
}

fn embed(args: EmbedArgs) -> Result<Outcome> {
    let dir = encoder_dir(args.text_encoder);
    if !dir.is_dir() {
        anyhow::bail!(
            "text encoder folder {} not found: run scripts/fetch_text_encoder.sh or pass --text-encoder DIR",
            dir.display()
        );
    }
    let encoder = TextEncoder::load(&dir, &Device::flex())
        .with_context(|| format!("loading the text encoder from {}", dir.display()))?;
    let embeddings = encoder.embed(&args.prompts).with_context(|| format!("embedding with {}", dir.display()))?;
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
