//! Report text in training (issue 16, item 5): every training sample carries the embedding of
//! its case's free-text report (for SPIDER cases, the findings sentences built from the
//! patients' gradings), or of the "no report" sentence, as the text-guided network's report
//! token. The embeddings come from `MODEL/report_embeddings.json` (written once by `spineseg
//! train --reports`), so a step never runs the encoder.

use crate::error::{Result, TrainError};
use burn::tensor::{Device, Tensor, TensorData};
use spineseg_dataloading::sampling::Batch;
use spineseg_infer::model_folder::{ReportEmbeddings, REPORT_EMBEDDINGS_FILE};
use spineseg_preprocessing::preprocess::PreprocessedCase;
use std::path::Path;

/// Per-sample report embeddings of training batches.
pub struct ReportLookup {
    /// Per training case (the samplers' index): its report embedding, `None` without one.
    case_reports: Vec<Option<Vec<f32>>>,
    null_report: Vec<f32>,
    dim: usize,
}

impl ReportLookup {
    /// Reads `model_dir/report_embeddings.json` for the run's training cases.
    pub fn load(model_dir: &Path, train_cases: &[PreprocessedCase]) -> Result<ReportLookup> {
        let path = model_dir.join(REPORT_EMBEDDINGS_FILE);
        if !path.is_file() {
            return Err(TrainError::Missing {
                path,
                detail:
                    "report-text training needs the report embeddings (`spineseg train --reports FILE` writes them)"
                        .into(),
            });
        }
        let reports = ReportEmbeddings::load(&path)?;
        Ok(Self::new(&reports, train_cases))
    }

    fn new(reports: &ReportEmbeddings, train_cases: &[PreprocessedCase]) -> ReportLookup {
        ReportLookup {
            case_reports: train_cases
                .iter()
                .map(|case| reports.cases.get(&case.properties.id).map(|r| r.embedding.clone()))
                .collect(),
            null_report: reports.null_report.embedding.clone(),
            dim: reports.dim,
        }
    }

    /// The "no report" embedding (the network's frozen null report).
    pub fn null_report(&self) -> &[f32] {
        &self.null_report
    }

    /// How many training cases have a report.
    pub fn cases_with_reports(&self) -> usize {
        self.case_reports.iter().filter(|r| r.is_some()).count()
    }

    /// `[batch, dim]`: each sample's case report, or the "no report" embedding.
    pub fn batch_reports(&self, batch: &Batch, device: &Device) -> Tensor<2> {
        let mut values = Vec::with_capacity(batch.batch_size * self.dim);
        for sample in &batch.samples {
            let report = self.case_reports.get(sample.case).and_then(Option::as_ref).unwrap_or(&self.null_report);
            values.extend_from_slice(report);
        }
        Tensor::<2>::from_data(TensorData::new(values, [batch.batch_size, self.dim]), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spineseg_dataloading::sampling::SampleInfo;
    use spineseg_infer::model_folder::ReportText;

    fn case(id: &str) -> PreprocessedCase {
        let image = spineseg_io::Volume::new([2, 2, 2], vec![0.0f32; 8], spineseg_io::Geometry::default()).unwrap();
        spineseg_preprocessing::test_support::preprocessed_case(id, vec![image], None)
    }

    fn sample(case: usize) -> SampleInfo {
        SampleInfo { case, origin: [0, 0, 0], valid: [1, 2, 2], forced_foreground: false, class: None, labelled: true }
    }

    #[test]
    fn each_sample_gets_its_cases_report_or_the_null_report() {
        let report = |text: &str, v: f32| ReportText { text: text.into(), embedding: vec![v, v] };
        let reports = ReportEmbeddings {
            encoder: None,
            dim: 2,
            null_report: report("none", 0.0),
            cases: [("b".to_string(), report("L4/L5 disc herniation.", 7.0))].into_iter().collect(),
        };
        let lookup = ReportLookup::new(&reports, &[case("a"), case("b")]);
        assert_eq!(lookup.cases_with_reports(), 1);
        let batch = Batch {
            images: vec![0.0; 3 * 4],
            seg: vec![0; 3 * 4],
            batch_size: 3,
            channels: 1,
            patch_shape: vec![2, 2],
            samples: vec![sample(1), sample(0), sample(1)],
        };
        let values: Vec<f32> = lookup.batch_reports(&batch, &Device::flex()).into_data().try_to_vec().unwrap();
        assert_eq!(values, [7.0, 7.0, 0.0, 0.0, 7.0, 7.0]);
    }

    #[test]
    fn a_missing_file_names_the_flag_that_writes_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = ReportLookup::load(dir.path(), &[]).err().unwrap().to_string();
        assert!(err.contains("report_embeddings.json") && err.contains("--reports"), "{err}");
    }
}
