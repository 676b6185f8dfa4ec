//! Helpers shared by the CLI test binaries (`mod support;`).

use spineseg_io::Label;

/// The most frequent non-zero label of a prediction: the structure a `--structures` check asks
/// for, so the check works whatever an untrained or briefly trained model predicts.
pub fn most_frequent_structure(labels: &[Label]) -> Label {
    let mut counts = std::collections::BTreeMap::<Label, usize>::new();
    for &v in labels.iter().filter(|&&v| v != 0) {
        *counts.entry(v).or_default() += 1;
    }
    let (&label, _) = counts.iter().max_by_key(|(_, &n)| n).expect("the model predicts some structure");
    label
}

/// `kept` is the full prediction `all` with every label but `label` set to background.
pub fn assert_only_structure_kept(all: &[Label], kept: &[Label], label: Label) {
    assert_eq!(all.len(), kept.len(), "both predictions cover the same grid");
    for (a, k) in all.iter().zip(kept) {
        assert_eq!(*k, if *a == label { label } else { 0 });
    }
}
