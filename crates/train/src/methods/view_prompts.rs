//! ATM-Net's per-view prompts in training: each training sample's text describes what its own
//! annotation shows (where each structure lies in the patch, whether the edge cuts it, which of
//! its neighbours are visible; `spineseg_anatomy::prompts::sagittal_patch_prompts`), instead of
//! the class prompts inference uses.
//!
//! The prompts' embeddings come from `MODEL/view_prompt_embeddings.json` (every variant of the
//! plan's structures, embedded once by `spineseg train --view-prompts`), so a step never runs the
//! text encoder. A class the sample does not show (absent, not annotated, or an unlabelled
//! sample) keeps its class prompt.
//!
//! Each sample takes its per-view prompts with probability `rate` and the class prompts
//! otherwise, so the class prompts prediction uses stay within what the network saw in training
//! (per-view prompts also say where a structure is, which no inference prompt can). The choice
//! is a hash of the sample's case and patch origin: it depends on the batch alone, so a resumed
//! run makes the same choices.

use crate::error::{Result, TrainError};
use burn::tensor::{Device, Tensor, TensorData};
use spineseg_anatomy::prompts::sagittal_patch_prompts;
use spineseg_dataloading::sampling::{Batch, SampleInfo};
use spineseg_infer::model_folder::{PromptEmbeddings, ViewPromptEmbeddings, VIEW_PROMPT_EMBEDDINGS_FILE};
use spineseg_preprocessing::plan::Plan;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Per-sample prompt embeddings of training batches.
pub struct ViewPromptLookup {
    /// Plan label value (ontology id) of each class index.
    structure_of_class: Vec<u16>,
    /// Class prompt embedding of each class index.
    class_embeddings: Vec<Vec<f32>>,
    /// Per-view prompt -> its embedding.
    table: HashMap<String, Vec<f32>>,
    dim: usize,
    rate: f64,
    table_path: PathBuf,
}

impl ViewPromptLookup {
    /// Reads `model_dir/view_prompt_embeddings.json`; `class_prompts` are the model's class
    /// prompt embeddings (checked against the plan by the caller).
    pub fn load(
        model_dir: &Path,
        plan: &Plan,
        class_prompts: &PromptEmbeddings,
        rate: f64,
    ) -> Result<ViewPromptLookup> {
        let table_path = model_dir.join(VIEW_PROMPT_EMBEDDINGS_FILE);
        if !table_path.is_file() {
            return Err(TrainError::Missing {
                path: table_path,
                detail: "per-view prompt training needs the per-view prompt table (`spineseg train --view-prompts` writes it)"
                    .into(),
            });
        }
        let table = ViewPromptEmbeddings::load(&table_path)?;
        if table.dim != class_prompts.dim {
            return Err(TrainError::Invalid(format!(
                "{}: embeddings of size {}, but the class prompts' are {}",
                table_path.display(),
                table.dim,
                class_prompts.dim
            )));
        }
        Ok(ViewPromptLookup {
            structure_of_class: plan.labels.iter().map(|l| l.value).collect(),
            class_embeddings: class_prompts.classes.iter().map(|c| c.embedding.clone()).collect(),
            table: table.prompts.into_iter().map(|p| (p.prompt, p.embedding)).collect(),
            dim: table.dim,
            rate,
            table_path,
        })
    }

    /// Whether this sample takes its per-view prompts (see the module documentation).
    fn chosen(&self, sample: &SampleInfo) -> bool {
        if !sample.labelled || self.rate <= 0.0 {
            return false;
        }
        let mut h = 0x9E37_79B9_7F4A_7C15u64 ^ sample.case as u64;
        for &o in &sample.origin {
            h = splitmix(h ^ o as u64);
        }
        let uniform = (splitmix(h) >> 11) as f64 / (1u64 << 53) as f64;
        uniform < self.rate
    }

    /// `[batch, classes, dim]` prompt embeddings of a 2D batch: per-view prompts for the classes
    /// a chosen sample shows, class prompts for everything else; `None` when no sample is chosen
    /// (the network then takes its class prompts the usual way, the same arithmetic as without
    /// per-view prompts).
    pub fn batch_embeddings(&self, batch: &Batch, device: &Device) -> Result<Option<Tensor<3>>> {
        let [nj, nk] = match batch.patch_shape[..] {
            [nj, nk] => [nj, nk],
            _ => {
                return Err(TrainError::Invalid(
                    "per-view prompts describe 2D sagittal patches; this batch is 3D".into(),
                ))
            }
        };
        let chosen: Vec<bool> = batch.samples.iter().map(|sample| self.chosen(sample)).collect();
        if !chosen.contains(&true) {
            return Ok(None);
        }
        let classes = self.class_embeddings.len();
        let voxels = nj * nk;
        let mut values = Vec::with_capacity(batch.batch_size * classes * self.dim);
        for (b, chosen) in chosen.into_iter().enumerate() {
            let mut rows: Vec<&[f32]> = self.class_embeddings.iter().map(Vec::as_slice).collect();
            if chosen {
                let ids: Vec<u16> = batch.seg[b * voxels..(b + 1) * voxels]
                    .iter()
                    .map(|&class| self.structure_of_class.get(class as usize).copied().unwrap_or(0))
                    .collect();
                for (id, prompt) in sagittal_patch_prompts(&ids, nj, nk) {
                    let Some(class) = self.structure_of_class.iter().position(|&v| v == id.0) else { continue };
                    let embedding = self.table.get(&prompt).ok_or_else(|| {
                        TrainError::Invalid(format!(
                            "{}: no embedding for the prompt {prompt:?} (written by another spineseg version? delete it and start the run again)",
                            self.table_path.display()
                        ))
                    })?;
                    rows[class] = embedding;
                }
            }
            for row in rows {
                values.extend_from_slice(row);
            }
        }
        Ok(Some(Tensor::<3>::from_data(TensorData::new(values, [batch.batch_size, classes, self.dim]), device)))
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use spineseg_infer::model_folder::{ClassPrompt, ViewPrompt};
    use spineseg_preprocessing::plan::Plan;

    const L4: u16 = 23;

    /// A lookup for classes background, L3 (22), L4 (23) with 2-wide embeddings: class prompts
    /// `[k, 0]`, every per-view prompt of L4 `[0, 100]`.
    fn lookup(rate: f64) -> ViewPromptLookup {
        let class_embeddings = vec![vec![0.0, 0.0], vec![1.0, 0.0], vec![2.0, 0.0]];
        let table = spineseg_anatomy::prompts::sagittal_prompt_variants(spineseg_anatomy::StructureId(L4))
            .into_iter()
            .map(|p| (p, vec![0.0, 100.0]))
            .collect();
        ViewPromptLookup {
            structure_of_class: vec![0, 22, L4],
            class_embeddings,
            table,
            dim: 2,
            rate,
            table_path: PathBuf::from("model/view_prompt_embeddings.json"),
        }
    }

    fn sample(case: usize, labelled: bool) -> SampleInfo {
        SampleInfo {
            case,
            origin: [0, case as isize, 3],
            valid: [1, 4, 4],
            forced_foreground: false,
            class: None,
            labelled,
        }
    }

    /// Two 4 x 4 samples, both showing L4 (class 2) in one voxel; sample 1 is unlabelled.
    fn batch() -> Batch {
        let mut seg = vec![0u8; 2 * 16];
        seg[5] = 2;
        Batch {
            images: vec![0.0; 2 * 16],
            seg,
            batch_size: 2,
            channels: 1,
            patch_shape: vec![4, 4],
            samples: vec![sample(0, true), sample(1, false)],
        }
    }

    fn rows(lookup: &ViewPromptLookup) -> Option<Vec<f32>> {
        let embeddings = lookup.batch_embeddings(&batch(), &Device::flex()).unwrap()?;
        Some(embeddings.into_data().try_to_vec::<f32>().unwrap())
    }

    #[test]
    fn a_shown_class_gets_its_view_prompt_and_the_rest_keep_class_prompts() {
        let got = rows(&lookup(1.0));
        // Sample 0: background and L3 keep class prompts, L4 its per-view prompt; sample 1 is
        // unlabelled: class prompts only.
        assert_eq!(got, Some(vec![0.0, 0.0, 1.0, 0.0, 0.0, 100.0, 0.0, 0.0, 1.0, 0.0, 2.0, 0.0]));
        // Rate 0: no sample is chosen, so the network keeps its own class prompts.
        assert_eq!(rows(&lookup(0.0)), None);
    }

    #[test]
    fn the_choice_follows_the_rate_and_the_sample_alone() {
        let half = lookup(0.5);
        let chosen = (0..1000).filter(|&c| half.chosen(&sample(c, true))).count();
        assert!((430..570).contains(&chosen), "{chosen} of 1000 at rate 0.5");
        assert_eq!(half.chosen(&sample(7, true)), half.chosen(&sample(7, true)));
    }

    #[test]
    fn a_prompt_missing_from_the_table_is_an_error_naming_the_file() {
        let mut lookup = lookup(1.0);
        lookup.table.clear();
        let err = lookup.batch_embeddings(&batch(), &Device::flex()).unwrap_err().to_string();
        assert!(err.contains("model/view_prompt_embeddings.json: no embedding for the prompt"), "{err}");
    }

    #[test]
    fn loading_checks_the_table_file() {
        let dir = tempfile::tempdir().unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/lumbar-2d/plans.json");
        let plan = Plan::load(&shipped).unwrap();
        let class_prompts = PromptEmbeddings {
            encoder: None,
            encoder_source: serde_json::Value::Null,
            dim: 2,
            classes: plan
                .labels
                .iter()
                .enumerate()
                .map(|(class, l)| ClassPrompt {
                    class,
                    structure_id: l.value,
                    name: l.name.clone(),
                    prompt: String::new(),
                    embedding: vec![0.0, 1.0],
                })
                .collect(),
        };
        let missing = ViewPromptLookup::load(dir.path(), &plan, &class_prompts, 0.5).err().unwrap().to_string();
        assert!(missing.contains("view_prompt_embeddings.json") && missing.contains("--view-prompts"), "{missing}");
        let table = ViewPromptEmbeddings {
            encoder: None,
            dim: 3,
            prompts: vec![ViewPrompt { structure_id: L4, prompt: "p".into(), embedding: vec![0.0; 3] }],
        };
        table.save(&dir.path().join(VIEW_PROMPT_EMBEDDINGS_FILE)).unwrap();
        let wrong_dim = ViewPromptLookup::load(dir.path(), &plan, &class_prompts, 0.5).err().unwrap().to_string();
        assert!(wrong_dim.contains("embeddings of size 3, but the class prompts' are 2"), "{wrong_dim}");
    }
}
