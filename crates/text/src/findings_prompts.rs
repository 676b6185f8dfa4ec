//! Prompts for the disc-findings classifier's text head: per disc level, a sentence saying the
//! level has each finding and one saying it has not, and one per Pfirrmann grade, in the order
//! the network reads them (`spineseg_model::prompt_index_finding` / `prompt_index_grade`). The
//! five findings are SPIDER's gradings (disc herniation, narrowing, bulging, spondylolisthesis,
//! Modic changes of the endplates).
//!
//! [`report_sentence`] is the other kind of text: one short report line per graded disc level
//! ("L4/L5 intervertebral disc: disc herniation, disc bulging, Pfirrmann grade 4."), the text
//! side of the image-text pretraining (`spineseg_train::findings_pretrain`).

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
    let disc = disc_name(level);
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

/// The findings' names in a report sentence, in `FINDING_KEYS` order.
const REPORT_NAMES: [&str; NUM_FINDINGS] =
    ["disc herniation", "disc narrowing", "disc bulging", "spondylolisthesis", "Modic changes"];

/// The disc's name in the ontology ("L4/L5 intervertebral disc"), or "disc {id}".
fn disc_name(level: StructureId) -> String {
    Ontology::standard().get(level).map_or_else(|| format!("disc {}", level.0), |s| s.display_name.clone())
}

/// One graded disc level as a report sentence: its name, the findings present (in
/// `FINDING_KEYS` order) or "no abnormality", and its Pfirrmann grade, e.g. "L4/L5
/// intervertebral disc: disc herniation, disc bulging, Pfirrmann grade 4." The same grading
/// always gives the same sentence (two levels with the same grading differ only by the name).
pub fn report_sentence(level: StructureId, present: &[bool; NUM_FINDINGS], pfirrmann: u8) -> String {
    let mut parts: Vec<&str> = REPORT_NAMES.iter().zip(present).filter(|(_, &p)| p).map(|(n, _)| *n).collect();
    if parts.is_empty() {
        parts.push("no abnormality");
    }
    format!("{}: {}, Pfirrmann grade {pfirrmann}.", disc_name(level), parts.join(", "))
}

/// A patient's report: the [`report_sentence`] of each graded disc, from the highest level down
/// (ontology order), joined by spaces.
pub fn patient_report(discs: &[(StructureId, [bool; NUM_FINDINGS], u8)]) -> String {
    let mut discs = discs.to_vec();
    discs.sort_by_key(|d| d.0);
    discs.iter().map(|(level, present, grade)| report_sentence(*level, present, *grade)).collect::<Vec<_>>().join(" ")
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
    fn a_patient_report_lists_the_discs_from_top_to_bottom() {
        let l4_l5 = (StructureId(123), [false, false, false, true, false], 4);
        let l5_s1 = (StructureId(124), [false; NUM_FINDINGS], 2);
        let report = patient_report(&[l5_s1, l4_l5]);
        let first = report_sentence(l4_l5.0, &l4_l5.1, l4_l5.2);
        assert!(report.starts_with(&first), "{report}");
        assert!(report.ends_with("no abnormality, Pfirrmann grade 2."), "{report}");
    }

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
    fn report_sentences_list_the_findings_and_the_grade() {
        let l4l5 = StructureId(123);
        assert_eq!(
            report_sentence(l4l5, &[true, false, true, false, false], 4),
            "L4/L5 intervertebral disc: disc herniation, disc bulging, Pfirrmann grade 4."
        );
        assert_eq!(
            report_sentence(StructureId(121), &[false; NUM_FINDINGS], 2),
            "L2/L3 intervertebral disc: no abnormality, Pfirrmann grade 2."
        );
        assert_eq!(
            report_sentence(l4l5, &[true; NUM_FINDINGS], 5),
            "L4/L5 intervertebral disc: disc herniation, disc narrowing, disc bulging, spondylolisthesis, Modic changes, Pfirrmann grade 5."
        );
        // Deterministic, and every grading gives its own sentence at a level.
        let mut seen = std::collections::BTreeSet::new();
        for bits in 0..(1u32 << NUM_FINDINGS) {
            let present: [bool; NUM_FINDINGS] = std::array::from_fn(|f| bits & (1 << f) != 0);
            for grade in 1..=5u8 {
                let sentence = report_sentence(l4l5, &present, grade);
                assert_eq!(sentence, report_sentence(l4l5, &present, grade));
                assert!(seen.insert(sentence));
            }
        }
        // The names follow the network's finding order.
        for (name, key) in REPORT_NAMES.iter().zip(spineseg_infer::findings_model::FINDING_KEYS) {
            assert!(name.to_lowercase().starts_with(&key.replace('_', " ")), "{name} vs {key}");
        }
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
