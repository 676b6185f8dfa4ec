//! MRSpineSeg (Pang et al., SpineParseNet, IEEE TMI 2021; spinesegmentation-challenge.com):
//! `CaseN.nii.gz` images with `mask_caseN.nii.gz` masks anywhere below the root (as released:
//! `train/MR/Case1.nii.gz`, `train/Mask/mask_case1.nii.gz`). Names are matched by the case
//! number, ignoring letter case.
//!
//! # Label values (from the challenge's data description)
//! 1 = sacrum, 2..=6 = L5..L1, 7..=10 = T12..T9, 11..=19 = discs L5/S1, L4/L5, .., T9/T10.
//!
//! # Vertebra extent
//! The challenge calls its structures "vertebrae" and SpineParseNet "spine parsing"; as far as we
//! know the masks cover whole vertebrae (body and posterior elements). We could not confirm this
//! from the data here, so the default is [`VertebraExtent::WholeVertebra`] and
//! [`MrSpineSegOptions::vertebra_extent`] can change it.

use super::{list_files, Case, Dataset, DatasetKind, LabelMap, LabelTarget, LayoutIssue, Split, VertebraExtent};
use crate::error::Result;
use spineseg_anatomy::ontology::{Level, Ontology, Region, SACRUM};
use spineseg_io::ImageFormat;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Options of the MRSpineSeg adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct MrSpineSegOptions {
    pub vertebra_extent: VertebraExtent,
}

impl Default for MrSpineSegOptions {
    fn default() -> Self {
        MrSpineSegOptions {
            vertebra_extent: VertebraExtent::WholeVertebra,
        }
    }
}

/// Whether a file is an MRSpineSeg image or mask, and its case number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MrFile {
    Image(u64),
    Mask(u64),
}

/// Parses `CaseN.nii[.gz]` / `mask_caseN.nii[.gz]` (any letter case).
pub fn parse_name(path: &Path) -> Option<MrFile> {
    let stem = ImageFormat::strip_extension(path)?.to_lowercase();
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    if let Some(n) = stem.strip_prefix("mask_case") {
        return number(n).map(MrFile::Mask);
    }
    stem.strip_prefix("case").and_then(number).map(MrFile::Image)
}

/// The MRSpineSeg value table as (value, name, level of the vertebra or of the vertebra above
/// the disc).
pub fn mrspineseg_label_map() -> LabelMap {
    let ontology = Ontology::standard();
    let mut map = LabelMap::new();
    map.insert(1, "S", LabelTarget::Structure(SACRUM));
    // 2..=10: L5, L4, .., L1, T12, .., T9 (going up).
    let upward: Vec<Level> = (1..=5)
        .rev()
        .map(|n| Level::new(Region::Lumbar, n))
        .chain((9..=12).rev().map(|n| Level::new(Region::Thoracic, n)))
        .collect();
    for (i, level) in upward.iter().enumerate() {
        let id = ontology.vertebra(*level).expect("L1-L5 and T9-T12 are in the ontology");
        map.insert(2 + i as u16, level.short_name(), LabelTarget::Structure(id));
        // 11..=19: the disc below each of L5 .. T9.
        let disc = ontology
            .disc_below(*level)
            .expect("discs below L5 .. T9 are in the ontology");
        let name = ontology.get(disc).expect("disc ids are structures").name.clone();
        map.insert(11 + i as u16, name, LabelTarget::Structure(disc));
    }
    map
}

/// Opens an MRSpineSeg folder.
pub fn open_mrspineseg(root: &Path, options: &MrSpineSegOptions) -> Result<Dataset> {
    let mut images: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
    let mut masks: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
    for path in list_files(root)? {
        match parse_name(&path) {
            Some(MrFile::Image(n)) => images.entry(n).or_default().push(path),
            Some(MrFile::Mask(n)) => masks.entry(n).or_default().push(path),
            None => {}
        }
    }
    let mut issues = Vec::new();
    let mut cases = Vec::new();
    for (n, mut files) in images {
        let id = format!("Case{n}");
        if files.len() > 1 {
            issues.push(LayoutIssue::Inconsistent {
                detail: format!(
                    "{id}: {} images share the number {n}; using {}",
                    files.len(),
                    files[0].display()
                ),
            });
        }
        let image = files.remove(0);
        let label = match masks.remove(&n) {
            Some(mut m) => {
                if m.len() > 1 {
                    issues.push(LayoutIssue::Inconsistent {
                        detail: format!("{id}: {} masks share the number {n}; using {}", m.len(), m[0].display()),
                    });
                }
                Some(m.remove(0))
            }
            None => {
                issues.push(LayoutIssue::MissingLabel {
                    case: id.clone(),
                    expected: None,
                });
                None
            }
        };
        cases.push((
            n,
            Case {
                id,
                images: vec![image],
                label,
                subregion_label: None,
                split: Split::Train,
            },
        ));
    }
    for (_, paths) in masks {
        issues.extend(paths.into_iter().map(|path| LayoutIssue::OrphanLabel { path }));
    }
    cases.sort_by_key(|(n, _)| *n);
    Ok(Dataset {
        name: super::folder_name(root),
        kind: DatasetKind::MrSpineSeg,
        root: root.to_path_buf(),
        cases: cases.into_iter().map(|(_, c)| c).collect(),
        channel_names: vec!["T2".to_string()],
        label_map: mrspineseg_label_map(),
        subregion_map: None,
        case_label_maps: BTreeMap::new(),
        vertebra_extent: options.vertebra_extent,
        issues,
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_nineteen_values() {
        let m = mrspineseg_label_map();
        let table: [(u16, u16, &str); 19] = [
            (1, 26, "sacrum"),
            (2, 24, "L5"),
            (3, 23, "L4"),
            (4, 22, "L3"),
            (5, 21, "L2"),
            (6, 20, "L1"),
            (7, 19, "T12"),
            (8, 18, "T11"),
            (9, 17, "T10"),
            (10, 16, "T9"),
            (11, 124, "L5/S1"),
            (12, 123, "L4/L5"),
            (13, 122, "L3/L4"),
            (14, 121, "L2/L3"),
            (15, 120, "L1/L2"),
            (16, 119, "T12/L1"),
            (17, 118, "T11/T12"),
            (18, 117, "T10/T11"),
            (19, 116, "T9/T10"),
        ];
        let o = Ontology::standard();
        for (value, id, name) in table {
            let got = m.target(value).unwrap().unwrap();
            assert_eq!(got.0, id, "value {value}");
            assert_eq!(o.get(got).unwrap().name, name, "value {value}");
        }
        assert_eq!(m.entries().count(), 19);
        assert!(m.target(20).is_err());
    }

    #[test]
    fn names_parse_case_insensitively() {
        assert_eq!(parse_name(Path::new("MR/Case12.nii.gz")), Some(MrFile::Image(12)));
        assert_eq!(parse_name(Path::new("Mask/mask_case12.nii.gz")), Some(MrFile::Mask(12)));
        assert_eq!(parse_name(Path::new("Mask/Mask_Case007.nii")), Some(MrFile::Mask(7)));
        assert_eq!(parse_name(Path::new("MR/Case.nii.gz")), None);
        assert_eq!(parse_name(Path::new("MR/Case1_x.nii.gz")), None);
        assert_eq!(parse_name(Path::new("MR/Case1.txt")), None);
    }
}
