//! Tokenisation with Hugging Face `tokenizers`: the folder's `tokenizer.json` when there is one,
//! else a BERT WordPiece tokenizer built from `vocab.txt` the way `BertTokenizer` does it.

use crate::config::do_lower_case;
use crate::error::{Result, TextError};
use std::path::Path;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// Reads a `tokenizer.json`. The `tokenizers` library panics (an `expect` in its decoder
/// deserialisation) on some malformed files, found by fuzzing (`fuzz/regressions/tokenizer/`),
/// so the text is checked to be JSON first, and a panic that still escapes the library becomes
/// an error naming the file.
fn read_tokenizer_json(path: &Path) -> Result<Tokenizer> {
    let error = |message: String| TextError::Tokenizer { path: path.to_path_buf(), message };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    serde_json::from_str::<serde_json::Value>(&text).map_err(|e| error(format!("invalid JSON: {e}")))?;
    match std::panic::catch_unwind(|| text.parse::<Tokenizer>()) {
        Ok(parsed) => parsed.map_err(|e| error(e.to_string())),
        Err(_) => Err(error("the tokenizers library could not read it (it panicked)".into())),
    }
}

/// One tokenised text: [CLS] tokens [SEP], truncated to the encoder's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedText {
    pub input_ids: Vec<u32>,
    pub token_type_ids: Vec<u32>,
}

/// A tokenizer that adds [CLS]/[SEP] and truncates, but never pads (batches are padded by the
/// encoder to their longest text).
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    max_length: usize,
}

impl TextTokenizer {
    /// Loads `dir/tokenizer.json`, or builds a WordPiece tokenizer from `dir/vocab.txt`
    /// (lower-casing per `tokenizer_config.json`'s `do_lower_case`, default true). `max_length`
    /// counts the special tokens.
    pub fn load(dir: &Path, max_length: usize) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        let mut inner = if json.is_file() {
            read_tokenizer_json(&json)?
        } else {
            wordpiece_from_vocab(dir)?
        };
        // The folder's own padding (all-MiniLM-L6-v2's tokenizer.json pads every text to 128)
        // and truncation are replaced by ours.
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| TextError::Tokenizer { path: dir.to_owned(), message: e.to_string() })?;
        Ok(Self { inner, max_length })
    }

    /// Tokens per text at most, [CLS] and [SEP] included.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Tokenises one text with special tokens.
    pub fn encode(&self, text: &str) -> Result<TokenizedText> {
        let encoding = self
            .inner
            .encode(text, true)
            .map_err(|e| TextError::Encode { text: text.to_owned(), message: e.to_string() })?;
        Ok(TokenizedText { input_ids: encoding.get_ids().to_vec(), token_type_ids: encoding.get_type_ids().to_vec() })
    }

    /// Vocabulary size including added tokens (to check against the embedding table).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// `BertTokenizer`'s pipeline: BERT normaliser (clean text, CJK spacing, lower-case and strip
/// accents when `do_lower_case`), BERT pre-tokeniser (whitespace + punctuation), WordPiece with
/// `##` continuations and [UNK], then [CLS] ... [SEP].
fn wordpiece_from_vocab(dir: &Path) -> Result<Tokenizer> {
    let vocab_path = dir.join("vocab.txt");
    let tokenizer_error = |message: String| TextError::Tokenizer { path: vocab_path.clone(), message };
    if !vocab_path.is_file() {
        return Err(TextError::Io {
            path: vocab_path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "neither tokenizer.json nor vocab.txt in the folder"),
        });
    }
    let vocab_str = vocab_path.to_str().ok_or_else(|| tokenizer_error("path is not UTF-8".to_owned()))?;
    let vocab = WordPiece::read_file(vocab_str).map_err(|e| tokenizer_error(e.to_string()))?;
    let id = |token: &str| vocab.get(token).copied().ok_or_else(|| tokenizer_error(format!("no {token} token")));
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    id("[UNK]")?;
    let model = WordPiece::builder()
        .vocab(vocab)
        .unk_token("[UNK]".to_owned())
        .continuing_subword_prefix("##".to_owned())
        .max_input_chars_per_word(100)
        .build()
        .map_err(|e| tokenizer_error(e.to_string()))?;
    let lower = do_lower_case(dir)?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(true, true, None, lower)))
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_post_processor(Some(BertProcessing::new(("[SEP]".to_owned(), sep), ("[CLS]".to_owned(), cls))));
    Ok(tokenizer)
}
