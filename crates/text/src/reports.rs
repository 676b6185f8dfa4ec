//! Report text (issue 16, item 5): free-text reports about a case (a radiology report, or the
//! findings sentences `spineseg text reports` builds from SPIDER's gradings), read from a JSON
//! object of case id -> text and embedded once with the encoder into
//! `MODEL/report_embeddings.json` (infer's [`ReportEmbeddings`]) for `spineseg train --reports`;
//! [`embed_report`] embeds one report for `spineseg predict --report`.

use crate::error::{Result, TextError};
use crate::TextEncoder;
use spineseg_infer::model_folder::{ReportEmbeddings, ReportText, NULL_REPORT_TEXT, REPORT_EMBEDDINGS_FILE};
use std::collections::BTreeMap;
use std::path::Path;

/// Reads a reports file: a JSON object whose values are non-empty strings (case id -> report).
pub fn read_reports(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).map_err(|source| TextError::Io { path: path.to_path_buf(), source })?;
    let reports: BTreeMap<String, String> = serde_json::from_str(&text).map_err(|e| TextError::Config {
        path: path.to_path_buf(),
        message: format!("expected a JSON object of case id -> report text: {e}"),
    })?;
    if let Some((case, _)) = reports.iter().find(|(_, report)| report.trim().is_empty()) {
        return Err(TextError::Config {
            path: path.to_path_buf(),
            message: format!("the report of case {case:?} is empty"),
        });
    }
    Ok(reports)
}

/// The reports and the "no report" sentence, embedded with `encoder`.
pub fn report_embeddings(reports: &BTreeMap<String, String>, encoder: &TextEncoder) -> Result<ReportEmbeddings> {
    let texts: Vec<&str> = std::iter::once(NULL_REPORT_TEXT).chain(reports.values().map(String::as_str)).collect();
    let mut embeddings = encoder.embed(&texts)?.into_iter();
    let null_report = ReportText {
        text: NULL_REPORT_TEXT.to_string(),
        embedding: embeddings.next().expect("one embedding per text"),
    };
    let cases = reports
        .iter()
        .zip(embeddings)
        .map(|((case, text), embedding)| (case.clone(), ReportText { text: text.clone(), embedding }))
        .collect();
    Ok(ReportEmbeddings {
        encoder: crate::class_embeddings::encoder_name(encoder),
        dim: encoder.embedding_dim(),
        null_report,
        cases,
    })
}

/// Reads `reports_path` ([`read_reports`]), embeds it ([`report_embeddings`]) and writes
/// `model_dir/report_embeddings.json` atomically; returns how many case reports it holds.
pub fn write_report_embeddings(reports_path: &Path, model_dir: &Path, encoder: &TextEncoder) -> Result<usize> {
    let reports = read_reports(reports_path)?;
    let embeddings = report_embeddings(&reports, encoder)?;
    embeddings.save(&model_dir.join(REPORT_EMBEDDINGS_FILE))?;
    Ok(embeddings.cases.len())
}

/// One report's embedding (for prediction). An empty report is refused: give none instead.
pub fn embed_report(text: &str, encoder: &TextEncoder) -> Result<Vec<f32>> {
    if text.trim().is_empty() {
        return Err(TextError::Encode { text: text.to_string(), message: "the report is empty".into() });
    }
    Ok(encoder.embed(&[text])?.remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::write_tiny_test_encoder;
    use crate::Device;

    #[test]
    fn reports_are_read_checked_and_embedded_with_the_null_report() {
        let dir = tempfile::tempdir().unwrap();
        let encoder_dir = dir.path().join("encoder");
        write_tiny_test_encoder(&encoder_dir).unwrap();
        let encoder = TextEncoder::load(&encoder_dir, &Device::flex()).unwrap();
        let file = dir.path().join("reports.json");
        std::fs::write(&file, r#"{"case_b": "L4/L5 intervertebral disc: disc herniation, Pfirrmann grade 4.", "case_a": "No abnormality."}"#).unwrap();
        let model = dir.path().join("model");
        std::fs::create_dir_all(&model).unwrap();
        assert_eq!(write_report_embeddings(&file, &model, &encoder).unwrap(), 2);
        let stored = ReportEmbeddings::load(&model.join(REPORT_EMBEDDINGS_FILE)).unwrap();
        assert_eq!(stored.null_report.text, NULL_REPORT_TEXT);
        assert_eq!(stored.cases.keys().collect::<Vec<_>>(), ["case_a", "case_b"]);
        let direct = embed_report(&stored.cases["case_b"].text, &encoder).unwrap();
        let gap =
            direct.iter().zip(&stored.cases["case_b"].embedding).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(gap < 1e-5, "{gap}");
        assert_ne!(stored.cases["case_a"].embedding, stored.cases["case_b"].embedding);

        // Bad files name the file and the problem.
        std::fs::write(&file, r#"["not", "an object"]"#).unwrap();
        let err = read_reports(&file).unwrap_err().to_string();
        assert!(err.contains("reports.json") && err.contains("case id -> report text"), "{err}");
        std::fs::write(&file, r#"{"case_a": "  "}"#).unwrap();
        let err = read_reports(&file).unwrap_err().to_string();
        assert!(err.contains("the report of case \"case_a\" is empty"), "{err}");
        assert!(embed_report("", &encoder).is_err());
    }
}
