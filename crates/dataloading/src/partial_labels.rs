//! Partial labels: which classes a case annotates.
//!
//! Datasets often label different subsets of the anatomy (in lumbar-real some cases label only
//! vertebral bodies, others only discs). A structure a case does not annotate must not be taught
//! as background, so training needs, per case, the classes it annotates.
//!
//! Rule (by structure kind): a case annotates class `c` when it contains a voxel of some class of
//! the same [`StructureKind`] as `c`. A case with the L3 body labelled therefore annotates every
//! vertebral body (an absent T11 is absent, not unlabelled), and a vertebra-only case annotates no
//! disc. Classes whose value is not an ontology id count as their own kind: annotated only where
//! present. Background is always annotated.

use spineseg_anatomy::ontology::{Ontology, StructureId, StructureKind};
use spineseg_preprocessing::plan::LabelClass;

/// The group a class is judged by: its ontology kind, or the class itself when its value is not
/// an ontology id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClassGroup {
    Background,
    Kind(StructureKind),
    Own(usize),
}

fn class_groups(labels: &[LabelClass]) -> Vec<ClassGroup> {
    let ontology = Ontology::standard();
    labels
        .iter()
        .enumerate()
        .map(|(c, label)| {
            if c == 0 {
                ClassGroup::Background
            } else {
                match ontology.get(StructureId(label.value)) {
                    Some(structure) => ClassGroup::Kind(structure.kind),
                    None => ClassGroup::Own(c),
                }
            }
        })
        .collect()
}

/// Classes (indices into `labels`, the plan's class list) annotated in a case whose
/// class-index volume holds the values `seg`. `result[c]` is true when class `c` is annotated;
/// `result[0]` (background) is always true. Values outside the class list are ignored.
pub fn annotated_classes(labels: &[LabelClass], seg: &[u8]) -> Vec<bool> {
    let mut present = vec![false; labels.len()];
    for &v in seg {
        if let Some(p) = present.get_mut(v as usize) {
            *p = true;
        }
    }
    annotated_from_present(labels, &present)
}

/// [`annotated_classes`] from the set of classes present (`present[c]`).
pub fn annotated_from_present(labels: &[LabelClass], present: &[bool]) -> Vec<bool> {
    let groups = class_groups(labels);
    let present_groups: Vec<ClassGroup> =
        groups.iter().zip(present).filter(|(g, &p)| p && **g != ClassGroup::Background).map(|(g, _)| *g).collect();
    groups.iter().map(|g| *g == ClassGroup::Background || present_groups.contains(g)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(values: &[u16]) -> Vec<LabelClass> {
        let mut all = vec![LabelClass { value: 0, name: "background".into() }];
        all.extend(values.iter().map(|&value| LabelClass { value, name: format!("{value}") }));
        all
    }

    #[test]
    fn a_case_annotates_every_class_of_the_kinds_it_contains() {
        // Classes: 1 T12 (19), 2 L1 (20), 3 L1/L2 disc (120), 4 L2/L3 disc (121), 5 canal (61).
        let labels = labels(&[19, 20, 120, 121, 61]);
        // Only L1 present: all vertebrae annotated (T12 is absent, not unlabelled), no disc, no canal.
        assert_eq!(annotated_classes(&labels, &[0, 0, 2, 2]), [true, true, true, false, false, false]);
        // Only one disc: both discs annotated.
        assert_eq!(annotated_classes(&labels, &[0, 4]), [true, false, false, true, true, false]);
        // Vertebra and canal.
        assert_eq!(annotated_classes(&labels, &[1, 5]), [true, true, true, false, false, true]);
        // Background only: nothing but background.
        assert_eq!(annotated_classes(&labels, &[0, 0]), [true, false, false, false, false, false]);
    }

    #[test]
    fn values_outside_the_ontology_are_annotated_only_where_present() {
        // 900 and 901 are not ontology ids.
        let labels = labels(&[900, 901, 20]);
        assert_eq!(annotated_classes(&labels, &[1, 3]), [true, true, false, true]);
        // Out-of-range class values are ignored.
        assert_eq!(annotated_classes(&labels, &[2, 200]), [true, false, true, false]);
    }
}
