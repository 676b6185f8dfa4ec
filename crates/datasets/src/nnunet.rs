//! nnU-Net v2 raw datasets: `dataset.json`, `imagesTr/{case}_{XXXX}{ending}`,
//! `labelsTr/{case}{ending}` and optionally `imagesTs/` (cases without labels).
//!
//! # Label names
//! Each name in `"labels"` is looked up with [`Ontology::find_by_name`](crate::Ontology::find_by_name)
//! ("T12L1", "L4", "spinal canal", ...). `background` must be 0; nnU-Net's `ignore` label becomes
//! [`LabelTarget::Ignored`]. A name the ontology does not know is kept as
//! [`LabelTarget::Unmapped`] and listed in [`Dataset::warnings`]: the folder still opens and can be
//! checked, and only files that contain that value fail to remap. Region-based label
//! definitions (lists of values) are rejected: spineseg trains on one structure per value.
//!
//! # Vertebra extent
//! nnU-Net's format does not say what vertebra masks cover. spineseg reads an optional key
//! `"spineseg": {"vertebra_extent": "body_only" | "whole_vertebra"}` in `dataset.json`;
//! [`NnUnetOptions::vertebra_extent`] overrides it (for folders one cannot edit). Without either
//! it is [`VertebraExtent::Unknown`].

use super::{
    folder_name, target_for_name, Case, Dataset, DatasetKind, LabelMap, LabelTarget, LayoutIssue, Split, VertebraExtent,
};
use crate::error::{DatasetError, Result};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Options of the nnU-Net raw adapter.
#[derive(Debug, Clone, Default)]
pub struct NnUnetOptions {
    /// What the vertebra masks cover, overriding `dataset.json`'s `spineseg.vertebra_extent`.
    pub vertebra_extent: Option<VertebraExtent>,
}

/// The description file of an nnU-Net raw dataset folder.
pub const DATASET_FILE: &str = "dataset.json";

/// Opens an nnU-Net raw dataset folder (the one holding `dataset.json`).
pub fn open_nnunet(root: &Path, options: &NnUnetOptions) -> Result<Dataset> {
    let json_path = root.join(DATASET_FILE);
    let text = std::fs::read_to_string(&json_path).map_err(|source| DatasetError::Os {
        path: json_path.clone(),
        source,
    })?;
    let json: Value = serde_json::from_str(&text).map_err(|source| DatasetError::Json {
        path: json_path.clone(),
        source,
    })?;
    let invalid = |detail: String| DatasetError::InvalidDataset {
        path: json_path.clone(),
        detail,
    };

    let label_map = parse_labels(&json).map_err(invalid)?;
    let channel_names = parse_channels(&json).map_err(invalid)?;
    let mut warnings = Vec::new();
    let ending = match json.get("file_ending").and_then(Value::as_str) {
        Some(e) => e.to_string(),
        None => {
            warnings.push("dataset.json has no \"file_ending\"; assuming .nii.gz".to_string());
            ".nii.gz".to_string()
        }
    };
    let extent_in_json = match json.get("spineseg").and_then(|s| s.get("vertebra_extent")) {
        None => None,
        Some(v) => Some(v.as_str().and_then(VertebraExtent::parse).ok_or_else(|| {
            invalid(format!(
                "spineseg.vertebra_extent must be \"body_only\" or \"whole_vertebra\", got {v}"
            ))
        })?),
    };
    let vertebra_extent = options
        .vertebra_extent
        .or(extent_in_json)
        .unwrap_or(VertebraExtent::Unknown);
    for (value, name, reason) in label_map.unmapped() {
        warnings.push(format!(
            "label {value} '{name}' is not mapped onto the ontology: {reason}"
        ));
    }

    let mut issues = Vec::new();
    let mut cases = scan_images(
        &root.join("imagesTr"),
        &ending,
        channel_names.len(),
        Split::Train,
        &mut issues,
    )?;
    let label_files = files_ending(&root.join("labelsTr"), &ending)?;
    let mut labels: BTreeMap<String, PathBuf> = BTreeMap::new();
    for path in label_files {
        let name = path
            .file_name()
            .expect("listed files have names")
            .to_string_lossy()
            .into_owned();
        labels.insert(name[..name.len() - ending.len()].to_string(), path);
    }
    for case in cases.iter_mut() {
        match labels.remove(&case.id) {
            Some(p) => case.label = Some(p),
            None => issues.push(LayoutIssue::MissingLabel {
                case: case.id.clone(),
                expected: Some(root.join("labelsTr").join(format!("{}{ending}", case.id))),
            }),
        }
    }
    for (_, path) in labels {
        issues.push(LayoutIssue::OrphanLabel { path });
    }
    if let Some(n) = json.get("numTraining").and_then(Value::as_u64) {
        if n as usize != cases.len() {
            issues.push(LayoutIssue::Inconsistent {
                detail: format!(
                    "dataset.json says numTraining = {n} but imagesTr holds {} cases",
                    cases.len()
                ),
            });
        }
    }
    cases.extend(scan_images(
        &root.join("imagesTs"),
        &ending,
        channel_names.len(),
        Split::Test,
        &mut issues,
    )?);

    Ok(Dataset {
        name: json
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| folder_name(root)),
        kind: DatasetKind::NnUnetRaw,
        root: root.to_path_buf(),
        cases,
        channel_names,
        label_map,
        subregion_map: None,
        case_label_maps: BTreeMap::new(),
        vertebra_extent,
        issues,
        warnings,
    })
}

/// Reads `"labels"` ({name: value}); errors explain what is wrong.
pub fn parse_labels(json: &Value) -> std::result::Result<LabelMap, String> {
    let labels = json
        .get("labels")
        .and_then(Value::as_object)
        .ok_or("dataset.json has no \"labels\" object")?;
    if json.get("regions_class_order").is_some() || labels.values().any(Value::is_array) {
        return Err("region-based labels are not supported: every label name must have one integer value".into());
    }
    let mut map = LabelMap::new();
    let mut seen = BTreeMap::new();
    for (name, value) in labels {
        let value = value
            .as_u64()
            .filter(|v| *v <= spineseg_io::Label::MAX as u64)
            .ok_or_else(|| format!("label '{name}' has value {value}, expected an integer in 0..=65535"))?
            as u16;
        if let Some(other) = seen.insert(value, name.clone()) {
            return Err(format!("labels '{other}' and '{name}' both have value {value}"));
        }
        let lower = name.to_lowercase();
        if lower == "background" {
            if value != 0 {
                return Err(format!("label 'background' must be 0, got {value}"));
            }
            continue;
        }
        if value == 0 {
            return Err(format!("value 0 is background, but dataset.json names it '{name}'"));
        }
        let target = if lower == "ignore" {
            LabelTarget::Ignored
        } else {
            target_for_name(name)
        };
        map.insert(value, name.clone(), target);
    }
    Ok(map)
}

fn parse_channels(json: &Value) -> std::result::Result<Vec<String>, String> {
    // nnU-Net v1 called it "modality"; accept both.
    let channels = json
        .get("channel_names")
        .or_else(|| json.get("modality"))
        .and_then(Value::as_object)
        .ok_or("dataset.json has no \"channel_names\" object")?;
    let mut indexed = BTreeMap::new();
    for (key, name) in channels {
        let index: usize = key
            .parse()
            .map_err(|_| format!("channel key '{key}' is not a number"))?;
        indexed.insert(
            index,
            name.as_str().map(str::to_string).unwrap_or_else(|| name.to_string()),
        );
    }
    if indexed.is_empty() || indexed.keys().copied().ne(0..indexed.len()) {
        return Err(format!(
            "channel_names must be numbered 0..n-1, got {:?}",
            indexed.keys().collect::<Vec<_>>()
        ));
    }
    Ok(indexed.into_values().collect())
}

/// Files directly in `dir` (hidden ones skipped), sorted; those not ending in `ending` are left out.
fn files_ending(dir: &Path, ending: &str) -> Result<Vec<PathBuf>> {
    Ok(all_files(dir)?
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(ending))
        .collect())
}

fn all_files(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|source| DatasetError::Os {
        path: dir.to_path_buf(),
        source,
    })? {
        let entry = entry.map_err(|source| DatasetError::Os {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        if path.is_file() && !entry.file_name().to_string_lossy().starts_with('.') {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Splits nnU-Net's four-digit channel suffix off a file name without its extension:
/// `vb3_01_0002` -> (`vb3_01`, 2). `None` when the name does not end in `_` and four digits.
/// The case part may be empty (`_0000`); callers that need a case id check that.
pub fn split_channel_suffix(stem: &str) -> Option<(&str, usize)> {
    let (case, digits) = stem.rsplit_once('_')?;
    (digits.len() == 4 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| (case, digits.parse().expect("four ASCII digits parse")))
}

/// Groups `{case}_{XXXX}{ending}` files into cases; reports stray files and missing channels.
fn scan_images(
    dir: &Path,
    ending: &str,
    channels: usize,
    split: Split,
    issues: &mut Vec<LayoutIssue>,
) -> Result<Vec<Case>> {
    let mut by_case: BTreeMap<String, BTreeMap<usize, PathBuf>> = BTreeMap::new();
    for path in all_files(dir)? {
        let name = path
            .file_name()
            .expect("listed files have names")
            .to_string_lossy()
            .into_owned();
        let Some(stem) = name.strip_suffix(ending) else {
            issues.push(LayoutIssue::OrphanImage {
                reason: format!("does not end in file_ending {ending}"),
                path,
            });
            continue;
        };
        let parsed = split_channel_suffix(stem).map(|(case, channel)| (case.to_string(), channel));
        match parsed {
            Some((_, channel)) if channel >= channels => issues.push(LayoutIssue::OrphanImage {
                reason: format!("channel {channel} but dataset.json declares {channels} channel(s)"),
                path,
            }),
            Some((case, channel)) => {
                by_case.entry(case).or_default().insert(channel, path);
            }
            None => issues.push(LayoutIssue::OrphanImage {
                reason: "name is not {case}_{XXXX}".into(),
                path,
            }),
        }
    }
    let mut cases = Vec::new();
    for (id, files) in by_case {
        let present: BTreeSet<usize> = files.keys().copied().collect();
        for channel in (0..channels).filter(|c| !present.contains(c)) {
            issues.push(LayoutIssue::MissingChannel {
                case: id.clone(),
                channel,
                expected: dir.join(format!("{id}_{channel:04}{ending}")),
            });
        }
        cases.push(Case {
            id,
            images: files.into_values().collect(),
            label: None,
            subregion_label: None,
            split,
        });
    }
    Ok(cases)
}

#[cfg(test)]
mod tests {
    use super::*;
    use spineseg_anatomy::ontology::StructureId;

    #[test]
    fn names_map_through_the_ontology() {
        let json: Value = serde_json::from_str(
            r#"{"labels": {"background": 0, "T9": 1, "L5": 9, "T12L1": 10, "L5S1": 15, "spinal canal": 3, "banana": 4, "ignore": 5}}"#,
        )
        .unwrap();
        let map = parse_labels(&json).unwrap();
        assert_eq!(map.target(1), Ok(Some(StructureId(16))));
        assert_eq!(map.target(9), Ok(Some(StructureId(24))));
        assert_eq!(map.target(10), Ok(Some(StructureId(119))));
        assert_eq!(map.target(15), Ok(Some(StructureId(124))));
        assert_eq!(map.target(3), Ok(Some(StructureId(61))));
        assert_eq!(map.target(5), Ok(None));
        assert!(map.target(4).unwrap_err().contains("banana"));
        assert_eq!(map.unmapped().len(), 1);
    }

    #[test]
    fn region_based_and_bad_labels_are_rejected() {
        let region: Value = serde_json::from_str(
            r#"{"labels": {"background": 0, "whole": [1, 2], "core": 2}, "regions_class_order": [1, 2]}"#,
        )
        .unwrap();
        assert!(parse_labels(&region)
            .unwrap_err()
            .contains("region-based labels are not supported"));
        let dup: Value = serde_json::from_str(r#"{"labels": {"L4": 1, "L5": 1}}"#).unwrap();
        assert!(parse_labels(&dup).unwrap_err().contains("both have value 1"));
        let bg: Value = serde_json::from_str(r#"{"labels": {"background": 3}}"#).unwrap();
        assert!(parse_labels(&bg).is_err());
    }

    #[test]
    fn channels_are_ordered() {
        let json: Value = serde_json::from_str(r#"{"channel_names": {"1": "T2", "0": "T1"}}"#).unwrap();
        assert_eq!(parse_channels(&json).unwrap(), vec!["T1", "T2"]);
        let gap: Value = serde_json::from_str(r#"{"channel_names": {"0": "T1", "2": "T2"}}"#).unwrap();
        assert!(parse_channels(&gap).is_err());
    }
}
