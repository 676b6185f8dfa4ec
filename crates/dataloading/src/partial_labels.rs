//! Partial labels: which classes a case annotates.
//!
//! Datasets often label different subsets of the anatomy (in lumbar-real some cases label only
//! vertebral bodies L1-L5, others only discs). A structure a case does not annotate must not be
//! taught as background, so training needs, per case, the classes it annotates. Background is
//! always annotated. Classes whose value is not an ontology id are annotated only where present
//! (under every rule).
//!
//! # Rules ([`PartialLabelRule`])
//! - [`PartialLabelRule::ByLabelledRange`]: for each
//!   [`StructureKind`] a case labels, it annotates the structures of that kind from the most
//!   superior to the most inferior one it labels (by ontology level order, inclusive; a gap
//!   inside the range counts as annotated, an absent level there is truly absent). Classes of
//!   that kind outside the range, and of kinds the case does not label, are unannotated: a case
//!   labelling the L1-L5 bodies annotates L1..L5 but not a visible T12.
//! - [`PartialLabelRule::ByKind`] (what `--partial-labels` models before issue 12 were trained
//!   with): a case annotates class `c` when it contains a voxel of some class of `c`'s kind, so
//!   the L1-L5 case above teaches T12 as background.
//! - [`PartialLabelRule::ByRangeNeighbours`] (the default for new runs): as `ByLabelledRange`, but of a labelled kind only
//!   the model's class just above and the one just below the labelled range are unannotated (the
//!   partly visible neighbours a dataset leaves out); classes of that kind farther away are
//!   annotated (absent). Why: with `ByLabelledRange` a level that few cases label (T9, labelled
//!   in 1 of 62 merged DEV cases) is unannotated nearly everywhere, the marginal cross-entropy
//!   then never prefers background over it, and in the leave-one-source-out runs the network
//!   predicted T9 over most of the background of every scan (docs/BENCHMARKS.md).
//!
//! Kinds are [`StructureKind`]s: the sacrum and the coccyx are kinds of their own, not the
//! inferior end of the vertebrae.
//!
//! # Declared annotations
//! Where a dataset says what a case annotates (`annotations.json`, read by
//! `spineseg_datasets::annotations` and stored in the preprocessed case), that list replaces the
//! rule for the case: a class is annotated when its structure is declared or when the case holds
//! a voxel of it (a labelled voxel proves the class is annotated).

use serde::{Deserialize, Serialize};
use spineseg_anatomy::ontology::{Level, Ontology, StructureId, StructureKind};
use spineseg_preprocessing::plan::LabelClass;

/// How the classes a case annotates are inferred from its labels (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartialLabelRule {
    /// Every class of each structure kind the case labels.
    ByKind,
    /// Per labelled kind, the structures within the case's labelled range of levels.
    ByLabelledRange,
    /// Per labelled kind, everything but the model's one class just above and the one just below
    /// the labelled range.
    #[default]
    ByRangeNeighbours,
}

/// How a class is judged: background, an ontology structure (its kind and its position along the
/// column), or a value outside the ontology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClassInfo {
    Background,
    /// `order`: the level (`None` for structures without one, each the only one of its kind),
    /// then the id, so that it increases from superior to inferior within a kind.
    Structure { id: StructureId, kind: StructureKind, order: Position },
    Own,
}

/// Position of a structure along the column within its kind (see [`ClassInfo::Structure`]).
type Position = (Option<Level>, StructureId);

fn class_infos(labels: &[LabelClass]) -> Vec<ClassInfo> {
    let ontology = Ontology::standard();
    labels
        .iter()
        .enumerate()
        .map(|(c, label)| {
            if c == 0 {
                return ClassInfo::Background;
            }
            match ontology.get(StructureId(label.value)) {
                Some(s) => ClassInfo::Structure { id: s.id, kind: s.kind, order: (s.level, s.id) },
                None => ClassInfo::Own,
            }
        })
        .collect()
}

/// Classes (indices into `labels`, the plan's class list) annotated in a case whose
/// class-index volume holds the values `seg`, by `rule`, or by `declared` (the ontology
/// structures the dataset declares the case annotates) when given. `result[c]` is true when
/// class `c` is annotated; `result[0]` (background) is always true. Values outside the class
/// list are ignored.
pub fn annotated_classes(
    labels: &[LabelClass],
    seg: &[u8],
    rule: PartialLabelRule,
    declared: Option<&[StructureId]>,
) -> Vec<bool> {
    let mut present = vec![false; labels.len()];
    for &v in seg {
        if let Some(p) = present.get_mut(v as usize) {
            *p = true;
        }
    }
    annotated_from_present(labels, &present, rule, declared)
}

/// [`annotated_classes`] from the set of classes present (`present[c]`).
pub fn annotated_from_present(
    labels: &[LabelClass],
    present: &[bool],
    rule: PartialLabelRule,
    declared: Option<&[StructureId]>,
) -> Vec<bool> {
    let infos = class_infos(labels);
    let is_present = |c: usize| present.get(c).copied().unwrap_or(false);
    // Per kind present: the most superior and the most inferior position labelled.
    let mut ranges: Vec<(StructureKind, Position, Position)> = Vec::new();
    for (c, info) in infos.iter().enumerate() {
        if let (ClassInfo::Structure { kind, order, .. }, true) = (info, is_present(c)) {
            match ranges.iter_mut().find(|(k, _, _)| k == kind) {
                Some((_, top, bottom)) => {
                    *top = (*top).min(*order);
                    *bottom = (*bottom).max(*order);
                }
                None => ranges.push((*kind, *order, *order)),
            }
        }
    }
    infos
        .iter()
        .enumerate()
        .map(|(c, info)| match *info {
            ClassInfo::Background => true,
            ClassInfo::Own => is_present(c),
            ClassInfo::Structure { id, kind, order } => {
                if let Some(declared) = declared {
                    return is_present(c) || declared.contains(&id);
                }
                let range = ranges.iter().find(|(k, _, _)| *k == kind);
                match rule {
                    PartialLabelRule::ByKind => range.is_some(),
                    PartialLabelRule::ByLabelledRange => range.is_some_and(|(_, top, bottom)| (*top..=*bottom).contains(&order)),
                    PartialLabelRule::ByRangeNeighbours => range.is_some_and(|(_, top, bottom)| {
                        // The model's classes of this kind just outside the range.
                        let same_kind = || {
                            infos.iter().filter_map(|i| match *i {
                                ClassInfo::Structure { kind: k, order: o, .. } if k == kind => Some(o),
                                _ => None,
                            })
                        };
                        let above = same_kind().filter(|o| o < top).max();
                        let below = same_kind().filter(|o| o > bottom).min();
                        Some(order) != above && Some(order) != below
                    }),
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use PartialLabelRule::{ByKind, ByLabelledRange};

    fn labels(values: &[u16]) -> Vec<LabelClass> {
        let mut all = vec![LabelClass { value: 0, name: "background".into() }];
        all.extend(values.iter().map(|&value| LabelClass { value, name: format!("{value}") }));
        all
    }

    #[test]
    fn by_range_neighbours_leaves_out_only_the_classes_next_to_the_range() {
        // Classes: 1 T9 (16), 2 T10 (17), 3 T11 (18), 4 T12 (19), 5 L1 (20), 6 L2 (21),
        // 7 L1/L2 disc (120).
        let labels = labels(&[16, 17, 18, 19, 20, 21, 120]);
        let rule = PartialLabelRule::ByRangeNeighbours;
        // L1-L2 labelled: T12 (just above) unannotated; T9-T11 annotated as absent; discs not
        // labelled at all, so unannotated.
        assert_eq!(annotated_classes(&labels, &[0, 5, 6], rule, None), [true, true, true, true, false, true, true, false]);
        // T11 only: T10 and T12 unannotated, T9, L1, L2 annotated.
        assert_eq!(annotated_classes(&labels, &[0, 3], rule, None), [true, true, false, true, false, true, true, false]);
        // The top class labelled: nothing above it to leave out.
        assert_eq!(annotated_classes(&labels, &[1, 1], rule, None), [true, true, false, true, true, true, true, false]);
    }

    #[test]
    fn by_kind_a_case_annotates_every_class_of_the_kinds_it_contains() {
        // Classes: 1 T12 (19), 2 L1 (20), 3 L1/L2 disc (120), 4 L2/L3 disc (121), 5 canal (61).
        let labels = labels(&[19, 20, 120, 121, 61]);
        let annotated = |seg: &[u8]| annotated_classes(&labels, seg, ByKind, None);
        // Only L1 present: all vertebrae annotated (T12 is absent, not unlabelled), no disc, no canal.
        assert_eq!(annotated(&[0, 0, 2, 2]), [true, true, true, false, false, false]);
        // Only one disc: both discs annotated.
        assert_eq!(annotated(&[0, 4]), [true, false, false, true, true, false]);
        // Vertebra and canal.
        assert_eq!(annotated(&[1, 5]), [true, true, true, false, false, true]);
        // Background only: nothing but background.
        assert_eq!(annotated(&[0, 0]), [true, false, false, false, false, false]);
    }

    #[test]
    fn by_range_a_case_labelling_l1_to_l5_leaves_t12_unannotated() {
        // Classes: 1 T11 (18), 2 T12 (19), 3 L1 (20), 4 L3 (22), 5 L5 (24), 6 sacrum (26).
        let labels = labels(&[18, 19, 20, 22, 24, 26]);
        // L1, L3 and L5 labelled: L1..L5 annotated, T11/T12 above the range are not, nor is the
        // sacrum (a kind of its own, not labelled).
        let seg = [0, 3, 4, 5];
        assert_eq!(annotated_classes(&labels, &seg, ByLabelledRange, None), [true, false, false, true, true, true, false]);
        // The old rule teaches T11 and T12 as background.
        assert_eq!(annotated_classes(&labels, &seg, ByKind, None), [true, true, true, true, true, true, false]);
        // One level labelled: only that level.
        assert_eq!(annotated_classes(&labels, &[0, 4], ByLabelledRange, None), [true, false, false, false, true, false, false]);
    }

    #[test]
    fn by_range_gaps_inside_the_range_count_as_annotated() {
        // Classes: 1 L1 (20), 2 L2 (21), 3 L3 (22), 4 L4 (23), 5 L5 (24); the plan lists them in
        // an order that is not the column's, which must not matter.
        let labels = labels(&[23, 20, 24, 21, 22]);
        // L2 and L4 labelled, L3 missing in between (truly absent): L2, L3, L4 annotated.
        assert_eq!(annotated_classes(&labels, &[0, 4, 1], ByLabelledRange, None), [true, true, false, false, true, true]);
    }

    #[test]
    fn by_range_each_kind_has_its_own_range() {
        // Classes: 1 T12 (19), 2 L1 (20), 3 L2 (21), 4 T12/L1 (119), 5 L1/L2 (120), 6 L2/L3 (121),
        // 7 canal (61), 8 posterior elements (40).
        let labels = labels(&[19, 20, 21, 119, 120, 121, 61, 40]);
        // Bodies T12..L1 and discs L1/L2..L2/L3 labelled, and the canal.
        let seg = [0, 1, 2, 5, 6, 7];
        assert_eq!(
            annotated_classes(&labels, &seg, ByLabelledRange, None),
            [true, true, true, false, false, true, true, true, false]
        );
        // By kind: every body and every disc.
        assert_eq!(annotated_classes(&labels, &seg, ByKind, None), [true, true, true, true, true, true, true, true, false]);
    }

    #[test]
    fn declared_annotations_replace_the_rule() {
        // Classes: 1 T12/L1 (119), 2 L1/L2 (120), 3 L5/S1 (124), 4 L1 (20), 5 value 900.
        let labels = labels(&[119, 120, 124, 20, 900]);
        // Discs L1/L2 and L5/S1 labelled; the dataset declares T12/L1 annotated too (truly absent
        // there) and no vertebra.
        let declared = [StructureId(119), StructureId(120), StructureId(121), StructureId(122), StructureId(123), StructureId(124)];
        let seg = [0, 2, 3];
        assert_eq!(annotated_classes(&labels, &seg, ByLabelledRange, Some(&declared)), [true, true, true, true, false, false]);
        // The rule alone leaves T12/L1 out.
        assert_eq!(annotated_classes(&labels, &seg, ByLabelledRange, None), [true, false, true, true, false, false]);
        // A labelled voxel proves its class annotated even when the declaration forgets it.
        assert_eq!(annotated_classes(&labels, &[0, 4], ByLabelledRange, Some(&[])), [true, false, false, false, true, false]);
    }

    #[test]
    fn values_outside_the_ontology_are_annotated_only_where_present() {
        // 900 and 901 are not ontology ids.
        let labels = labels(&[900, 901, 20]);
        for rule in [ByKind, ByLabelledRange] {
            assert_eq!(annotated_classes(&labels, &[1, 3], rule, None), [true, true, false, true]);
            // Out-of-range class values are ignored.
            assert_eq!(annotated_classes(&labels, &[2, 200], rule, None), [true, false, true, false]);
            assert_eq!(annotated_classes(&labels, &[2], rule, Some(&[StructureId(20)])), [true, false, true, true]);
        }
    }

    #[test]
    fn the_rule_serialises_in_snake_case_and_defaults_to_the_range() {
        assert_eq!(serde_json::to_string(&ByKind).unwrap(), "\"by_kind\"");
        assert_eq!(serde_json::from_str::<PartialLabelRule>("\"by_labelled_range\"").unwrap(), ByLabelledRange);
        assert_eq!(serde_json::from_str::<PartialLabelRule>("\"by_range_neighbours\"").unwrap(), PartialLabelRule::ByRangeNeighbours);
        assert_eq!(PartialLabelRule::default(), PartialLabelRule::ByRangeNeighbours);
    }
}
