//! Finding and loading the text encoder for the commands that embed prompts (`text`, `train
//! --text-guided`): a flag, else `$SPINESEG_TEXT_ENCODER`, else the folder
//! `scripts/fetch_text_encoder.sh` fills. Environment variables are read here, in the binary
//! only.

use anyhow::{Context, Result};
use spineseg_text::{Device, TextEncoder};
use std::path::PathBuf;

/// Where `scripts/fetch_text_encoder.sh` puts the encoder, under the home folder.
const DEFAULT_DIR: &str = ".cache/spineseg/text/all-MiniLM-L6-v2";

/// The encoder folder: `flag`, else `$SPINESEG_TEXT_ENCODER`, else `~/` + [`DEFAULT_DIR`].
pub fn encoder_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("SPINESEG_TEXT_ENCODER").map(PathBuf::from))
        .unwrap_or_else(|| std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default().join(DEFAULT_DIR))
}

/// Loads the encoder of [`encoder_dir`] on the CPU; a missing folder is an error that says how
/// to get one.
pub fn load_encoder(flag: Option<PathBuf>) -> Result<TextEncoder> {
    let dir = encoder_dir(flag);
    if !dir.is_dir() {
        anyhow::bail!(
            "text encoder folder {} not found: run scripts/fetch_text_encoder.sh or pass --text-encoder DIR",
            dir.display()
        );
    }
    TextEncoder::load(&dir, &Device::flex()).with_context(|| format!("loading the text encoder from {}", dir.display()))
}
