//! nnU-Net's cross-validation splits, `splits_final.json`: a list of folds
//! `[{"train": [...], "val": [...]}, ...]`.
//!
//! - 5 folds (`KFold(n_splits=5, shuffle=True, random_state=12345)` in nnU-Net): the sorted case
//!   ids are shuffled with a ChaCha8 generator seeded with [`SPLIT_SEED`] (12345) and cut into 5
//!   consecutive parts, the first `n % 5` of them one case larger (sklearn's fold sizes). The
//!   exact sklearn permutation is not reproduced, so a fold holds other cases than nnU-Net's.
//!   Both lists are sorted.
//! - With fewer than 5 cases every fold trains and validates on **all** cases (there is no
//!   honest hold-out; the validation Dice is then a training Dice).
//! - The file is created once in the work folder and reused afterwards (as nnU-Net does), so
//!   folds stay fixed when more cases are preprocessed; ids missing from the preprocessed data
//!   are an error.

use crate::error::{Result, TrainError};
use spineseg_io::json::{read_json, write_json};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Number of cross-validation folds.
pub const NUM_FOLDS: usize = 5;
/// The splits' file name (in the preprocessed work folder and a model's `training/`).
pub const SPLITS_FILE: &str = "splits_final.json";
/// Seed of the shuffle (nnU-Net's `random_state`).
pub const SPLIT_SEED: u64 = 12345;

/// One fold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    pub train: Vec<String>,
    pub val: Vec<String>,
}

/// The folds for `ids` (see the module documentation).
pub fn make_splits(ids: &[String]) -> Vec<Split> {
    let mut sorted = ids.to_vec();
    sorted.sort();
    sorted.dedup();
    if sorted.len() < NUM_FOLDS {
        return vec![Split { train: sorted.clone(), val: sorted }; NUM_FOLDS];
    }
    let mut order: Vec<usize> = (0..sorted.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(SPLIT_SEED));
    let n = sorted.len();
    let mut start = 0;
    (0..NUM_FOLDS)
        .map(|fold| {
            let size = n / NUM_FOLDS + usize::from(fold < n % NUM_FOLDS);
            let mut val_idx: Vec<usize> = order[start..start + size].to_vec();
            start += size;
            val_idx.sort_unstable();
            let mut train: Vec<String> =
                (0..n).filter(|i| val_idx.binary_search(i).is_err()).map(|i| sorted[i].clone()).collect();
            train.sort();
            Split { train, val: val_idx.into_iter().map(|i| sorted[i].clone()).collect() }
        })
        .collect()
}

/// Reads `path` if it exists, else creates it from `ids`; checks that every id of the returned
/// folds is in `ids`.
pub fn load_or_create_splits(path: &Path, ids: &[String]) -> Result<Vec<Split>> {
    let splits = if path.exists() {
        read_json::<Vec<Split>>(path)?
    } else {
        let splits = make_splits(ids);
        write_json(path, &splits)?;
        splits
    };
    if splits.is_empty() {
        return Err(TrainError::Missing { path: path.to_path_buf(), detail: "no folds".into() });
    }
    for (fold, split) in splits.iter().enumerate() {
        if let Some(id) = split.train.iter().chain(&split.val).find(|id| !ids.contains(id)) {
            return Err(TrainError::Incompatible {
                path: path.to_path_buf(),
                detail: format!("fold {fold} lists case {id:?}, which is not preprocessed; delete the file to make new splits"),
            });
        }
    }
    Ok(splits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("case_{i:03}")).collect()
    }

    #[test]
    fn five_folds_partition_the_cases() {
        let all = ids(12);
        let splits = make_splits(&all);
        assert_eq!(splits.len(), 5);
        let sizes: Vec<usize> = splits.iter().map(|s| s.val.len()).collect();
        assert_eq!(sizes, vec![3, 3, 2, 2, 2]);
        let mut seen: Vec<String> = splits.iter().flat_map(|s| s.val.clone()).collect();
        seen.sort();
        assert_eq!(seen, all);
        for s in &splits {
            assert_eq!(s.train.len() + s.val.len(), 12);
            assert!(s.val.iter().all(|v| !s.train.contains(v)));
            assert!(s.train.windows(2).all(|w| w[0] < w[1]) && s.val.windows(2).all(|w| w[0] < w[1]));
        }
        // Deterministic, independent of the input order.
        let mut reversed = all.clone();
        reversed.reverse();
        assert_eq!(make_splits(&reversed), splits);
        // Shuffled: not simply consecutive ids.
        assert_ne!(splits[0].val, all[..3].to_vec());
    }

    #[test]
    fn few_cases_use_all_for_train_and_val() {
        let splits = make_splits(&ids(3));
        assert_eq!(splits.len(), 5);
        assert!(splits.iter().all(|s| s.train == ids(3) && s.val == ids(3)));
    }

    #[test]
    fn splits_file_is_created_once_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("splits_final.json");
        let first = load_or_create_splits(&path, &ids(7)).unwrap();
        // More cases later: the stored folds are kept.
        assert_eq!(load_or_create_splits(&path, &ids(9)).unwrap(), first);
        let err = load_or_create_splits(&path, &ids(4)).unwrap_err().to_string();
        assert!(err.contains("splits_final.json") && err.contains("not preprocessed"), "{err}");
    }
}
