//! The class prompts of a model's classes, embedded once with the encoder and stored in the
//! model folder (`MODEL/prompt_embeddings.json`, [`PromptEmbeddings`]), so that neither
//! prediction nor a resumed training run needs the encoder. Used by `spineseg text cache` and
//! `spineseg train --text-guided`.

use crate::error::{Result, TextError};
use crate::prompts::{class_prompt, BACKGROUND_PROMPT};
use crate::TextEncoder;
use spineseg_anatomy::ontology::StructureId;
use spineseg_preprocessing::plan::Plan;
use spineseg_infer::model_folder::{ClassPrompt, PromptEmbeddings, PROMPT_EMBEDDINGS_FILE};
use std::path::Path;

/// The encoder folder's record of where it came from (written by
/// `scripts/fetch_text_encoder.sh`), copied into the embeddings file when present.
const ENCODER_SOURCE_FILE: &str = "spineseg_source.json";

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
        encoder: encoder.dir().file_name().map(|n| n.to_string_lossy().into_owned()),
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
}
