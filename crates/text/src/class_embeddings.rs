//! The class prompts of a model's classes, embedded once with the encoder and stored in the
//! model folder (`MODEL/prompt_embeddings.json`, [`PromptEmbeddings`]), so that neither
//! prediction nor a resumed training run needs the encoder. Used by `spineseg text cache` and
//! `spineseg train --text-guided`.

use crate::error::{Result, TextError};
use crate::prompts::{class_prompt, sagittal_prompt_variants, BACKGROUND_PROMPT};
use crate::TextEncoder;
use spineseg_anatomy::ontology::StructureId;
use spineseg_preprocessing::plan::Plan;
use spineseg_infer::model_folder::{
    ClassPrompt, PromptEmbeddings, ViewPrompt, ViewPromptEmbeddings, PROMPT_EMBEDDINGS_FILE, VIEW_PROMPT_EMBEDDINGS_FILE,
};
use std::path::Path;

/// The encoder folder's record of where it came from (written by
/// `scripts/fetch_text_encoder.sh`), copied into the embeddings file when present.
const ENCODER_SOURCE_FILE: &str = "spineseg_source.json";

/// The encoder folder's name, which embeddings files record.
pub(crate) fn encoder_name(encoder: &TextEncoder) -> Option<String> {
    encoder.dir().file_name().map(|n| n.to_string_lossy().into_owned())
}

/// The class prompts of `plan`'s classes (class 0 = background, then one class prompt per
/// ontology structure) embedded with `encoder`. `plan_path` names the plan in errors (a class
/// whose value is not an ontology structure has no prompt).
pub fn class_prompt_embeddings(plan: &Plan, plan_path: &Path, encoder: &TextEncoder) -> Result<PromptEmbeddings> {
    let mut entries = Vec::with_capacity(plan.labels.len());
    for (class, label) in plan.labels.iter().enumerate() {
        let prompt = if class == 0 {
            BACKGROUND_PROMPT.to_string()
        } else {
            class_prompt(StructureId(label.value)).ok_or_else(|| TextError::NotAStructure {
                path: plan_path.to_path_buf(),
                class,
                value: label.value,
            })?
        };
        entries.push((class, label.value, label.name.clone(), prompt));
    }
    let texts: Vec<&str> = entries.iter().map(|e| e.3.as_str()).collect();
    let embeddings = encoder.embed(&texts)?;
    // Provenance only: a missing or unreadable record leaves the field null.
    let encoder_source = std::fs::read_to_string(encoder.dir().join(ENCODER_SOURCE_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .unwrap_or(serde_json::Value::Null);
    Ok(PromptEmbeddings {
        encoder: encoder_name(encoder),
        encoder_source,
        dim: encoder.embedding_dim(),
        classes: entries
            .into_iter()
            .zip(embeddings)
            .map(|((class, structure_id, name, prompt), embedding)| ClassPrompt { class, structure_id, name, prompt, embedding })
            .collect(),
    })
}

/// Reads the plan at `plan_path`, embeds its class prompts ([`class_prompt_embeddings`]) and
/// writes them atomically to `model_dir/prompt_embeddings.json`; returns what it wrote.
pub fn write_class_prompt_embeddings(plan_path: &Path, model_dir: &Path, encoder: &TextEncoder) -> Result<PromptEmbeddings> {
    let plan = Plan::load(plan_path)?;
    let embeddings = class_prompt_embeddings(&plan, plan_path, encoder)?;
    embeddings.save(&model_dir.join(PROMPT_EMBEDDINGS_FILE))?;
    Ok(embeddings)
}

/// Every sagittal per-view prompt of `plan`'s structures
/// ([`sagittal_prompt_variants`](crate::prompts::sagittal_prompt_variants)) embedded with
/// `encoder`: the table per-view prompt training looks its prompts up in. Errors as
/// [`class_prompt_embeddings`].
pub fn view_prompt_embeddings(plan: &Plan, plan_path: &Path, encoder: &TextEncoder) -> Result<ViewPromptEmbeddings> {
    let mut entries: Vec<(u16, String)> = Vec::new();
    for (class, label) in plan.labels.iter().enumerate().skip(1) {
        let variants = sagittal_prompt_variants(StructureId(label.value));
        if variants.is_empty() {
            return Err(TextError::NotAStructure { path: plan_path.to_path_buf(), class, value: label.value });
        }
        entries.extend(variants.into_iter().map(|prompt| (label.value, prompt)));
    }
    let texts: Vec<&str> = entries.iter().map(|e| e.1.as_str()).collect();
    let embeddings = encoder.embed(&texts)?;
    Ok(ViewPromptEmbeddings {
        encoder: encoder_name(encoder),
        dim: encoder.embedding_dim(),
        prompts: entries
            .into_iter()
            .zip(embeddings)
            .map(|((structure_id, prompt), embedding)| ViewPrompt { structure_id, prompt, embedding })
            .collect(),
    })
}

/// Reads the plan at `plan_path`, embeds its per-view prompts ([`view_prompt_embeddings`]) and
/// writes them atomically to `model_dir/view_prompt_embeddings.json`; returns how many.
pub fn write_view_prompt_embeddings(plan_path: &Path, model_dir: &Path, encoder: &TextEncoder) -> Result<usize> {
    let plan = Plan::load(plan_path)?;
    let table = view_prompt_embeddings(&plan, plan_path, encoder)?;
    table.save(&model_dir.join(VIEW_PROMPT_EMBEDDINGS_FILE))?;
    Ok(table.prompts.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::write_tiny_test_encoder;
    use crate::Device;

    #[test]
    fn embeds_the_shipped_plans_classes_into_the_model_folder() {
        let dir = tempfile::tempdir().unwrap();
        let encoder_dir = dir.path().join("encoder");
        write_tiny_test_encoder(&encoder_dir).unwrap();
        let encoder = TextEncoder::load(&encoder_dir, &Device::flex()).unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/lumbar-2d/plans.json");
        let plan = Plan::load(&shipped).unwrap();
        let model = dir.path().join("model");
        std::fs::create_dir_all(&model).unwrap();
        let written = write_class_prompt_embeddings(&shipped, &model, &encoder).unwrap();
        assert_eq!(written.classes.len(), plan.labels.len());
        assert_eq!(written.encoder.as_deref(), Some("encoder"));
        assert!(written.classes[0].prompt.starts_with("background"));
        let l4 = written.classes.iter().find(|c| c.structure_id == 23).unwrap();
        assert!(l4.prompt.starts_with("L4 vertebral body:"), "{}", l4.prompt);
        let stored = PromptEmbeddings::load(&model.join(PROMPT_EMBEDDINGS_FILE)).unwrap();
        assert_eq!(stored, written);
        stored.check_plan(&plan, &shipped).unwrap();

        // A class whose value is no ontology structure has no prompt: the error names the plan.
        let mut odd = plan.clone();
        odd.labels[1].value = 999;
        let err = class_prompt_embeddings(&odd, Path::new("odd/plans.json"), &encoder).unwrap_err();
        assert!(err.to_string().contains("odd/plans.json: class 1 (value 999)"), "{err}");
    }

    #[test]
    fn view_prompt_table_holds_every_variant_of_the_plans_structures() {
        let dir = tempfile::tempdir().unwrap();
        let encoder_dir = dir.path().join("encoder");
        write_tiny_test_encoder(&encoder_dir).unwrap();
        let encoder = TextEncoder::load(&encoder_dir, &Device::flex()).unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/lumbar-2d/plans.json");
        let model = dir.path().join("model");
        std::fs::create_dir_all(&model).unwrap();
        let count = write_view_prompt_embeddings(&shipped, &model, &encoder).unwrap();
        let table = ViewPromptEmbeddings::load(&model.join(VIEW_PROMPT_EMBEDDINGS_FILE)).unwrap();
        assert_eq!(table.prompts.len(), count);
        let l4: Vec<&ViewPrompt> = table.prompts.iter().filter(|p| p.structure_id == 23).collect();
        assert_eq!(l4.len(), 72);
        assert!(l4.iter().all(|p| p.prompt.starts_with("sagittal MRI slice: the L4 vertebral body") && p.embedding.len() == table.dim));
        // Each prompt's embedding is the encoder's embedding of that text.
        let direct = encoder.embed(&[l4[5].prompt.as_str()]).unwrap();
        // (Batched with other prompts, so padding may change the f32 summation: a tolerance.)
        let gap = direct[0].iter().zip(&l4[5].embedding).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(gap < 1e-5, "largest difference {gap}");
    }
}
