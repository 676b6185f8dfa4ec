//! Prompts for the disc-findings classifier's text head: per disc level, a sentence saying the
//! level has each finding and one saying it has not, and one per Pfirrmann grade, in the order
//! the network reads them (`spineseg_model::prompt_index_finding` / `prompt_index_grade`). The
//! five findings are SPIDER's gradings (disc herniation, narrowing, bulging, spondylolisthesis,
//! Modic changes of the endplates).

use spineseg_anatomy::{Ontology, StructureId};
use spineseg_model::{prompt_index_finding, prompt_index_grade, NUM_FINDINGS, NUM_GRADES, PROMPTS_PER_LEVEL};

use crate::error::TextError;
use crate::TextEncoder;

/// The findings' phrases, in the network's order: (present, absent) for a disc named `{d}`.
const FINDING_PHRASES: [(&str, &str); NUM_FINDINGS] = [
    ("{d} with disc herniation", "{d} without disc herniation"),
    ("narrowing of the {d} space", "{d} of normal height without narrowing"),
    ("{d} with disc bulging", "{d} without disc bulging"),
    ("spondylolisthesis at the {d} level", "normal alignment without spondylolisthesis at the {d} level"),
    ("Modic changes in the endplates of the {d}", "normal endplates without Modic changes at the {d}"),
];

/// The prompts of one disc level (`PROMPTS_PER_LEVEL` sentences), e.g. for L4/L5: "L4/L5
/// intervertebral disc with disc herniation", "L4/L5 intervertebral disc without disc
/// herniation", ..., "Pfirrmann grade 3 degeneration of the L4/L5 intervertebral disc".
pub fn finding_prompts(level: StructureId) -> Vec<String> {
    let disc = Ontology::standard().get(level).map_or_else(|| format!("disc {}", level.0), |s| s.display_name.clone());
    let mut prompts = vec![String::new(); PROMPTS_PER_LEVEL];
    for (f, (present, absent)) in FINDING_PHRASES.iter().enumerate() {
        prompts[prompt_index_finding(f, true)] = present.replace("{d}", &disc);
        prompts[prompt_index_finding(f, false)] = absent.replace("{d}", &disc);
    }
    for grade in 1..=NUM_GRADES {
        prompts[prompt_index_grade(grade)] = format!("Pfirrmann grade {grade} degeneration of the {disc}");
    }
    prompts
}

/// The prompts of every level and their embeddings, `[levels, PROMPTS_PER_LEVEL, dim]` row major
/// (what `DiscFindingsNet::with_prompt_embeddings` takes).
pub fn embed_finding_prompts(
    encoder: &TextEncoder,
    levels: &[StructureId],
) -> Result<(Vec<Vec<String>>, Vec<f32>), TextError> {
    let prompts: Vec<Vec<String>> = levels.iter().map(|&l| finding_prompts(l)).collect();
    let flat: Vec<&String> = prompts.iter().flatten().collect();
    let embeddings = encoder.embed(&flat)?;
    Ok((prompts, embeddings.into_iter().flatten().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_name_the_level_and_sit_where_the_network_reads_them() {
        let prompts = finding_prompts(StructureId(123));
        assert_eq!(prompts.len(), PROMPTS_PER_LEVEL);
        assert_eq!(prompts[prompt_index_finding(0, true)], "L4/L5 intervertebral disc with disc herniation");
        assert_eq!(prompts[prompt_index_finding(0, false)], "L4/L5 intervertebral disc without disc herniation");
        assert_eq!(prompts[prompt_index_grade(3)], "Pfirrmann grade 3 degeneration of the L4/L5 intervertebral disc");
        assert!(prompts.iter().all(|p| p.contains("L4/L5")));
        let unique: std::collections::BTreeSet<&String> = prompts.iter().collect();
        assert_eq!(unique.len(), PROMPTS_PER_LEVEL);
    }

    #[test]
    fn embeddings_have_one_row_per_prompt() {
        let dir = tempfile::tempdir().unwrap();
        crate::test_support::write_tiny_test_encoder(dir.path()).unwrap();
        let encoder = TextEncoder::load(dir.path(), &burn::tensor::Device::flex()).unwrap();
        let (prompts, flat) = embed_finding_prompts(&encoder, &[StructureId(123), StructureId(124)]).unwrap();
        assert_eq!(prompts.len(), 2);
        assert_eq!(flat.len(), 2 * PROMPTS_PER_LEVEL * encoder.embedding_dim());
    }
}
