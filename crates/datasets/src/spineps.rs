//! SPINEPS / TPTBox outputs: BIDS-like file names such as
//! `sub-X[_ses-Y]..._T2w.nii.gz` (image), `..._seg-vert_msk.nii.gz` (vertebra instance mask) and
//! `..._seg-subreg_msk.nii.gz` (subregion mask; SPINEPS also writes it as `seg-spine`). Masks may
//! carry `mod-T2w` naming the image they belong to; they may sit in another folder (e.g.
//! `derivatives/`), since files are grouped by their entities, not by folder.
//!
//! # Values
//! - Instance mask (TPTBox numbering, = the ontology's): C1-C7 = 1-7, T1-T12 = 8-19, L1-L6 = 20-25,
//!   S1 = 26, coccyx 27, T13 = 28; disc = vertebra + 100; endplate = vertebra + 200.
//! - Subregion mask (TPTBox `Location`): 41 arcus, 42 spinous process, 43/44 costal processes,
//!   45-48 articular processes, 49 corpus border, 50 corpus, 60 cord, 61 canal, 62 endplate,
//!   100 disc, 26 sacrum.
//!
//! # Combining the two masks into ontology ids ([`combine_spineps_masks`])
//! - vertebral body X = instance X where the subregion is corpus (49, 50) or endplate (62);
//!   endplate instances 200 + X are merged into body X;
//! - disc 100 + X -> ontology 100 + X; sacrum and coccyx instances -> 26 / 27;
//! - subregions 41-48 -> posterior elements (40), 60 -> cord, 61 -> canal (whatever the
//!   instance mask says there).
//!
//! Voxels the masks disagree on (e.g. a corpus subregion outside every instance) become
//! background and are counted in [`SpinepsCombined::dropped_voxels`]. L6 (25), T13 (28) and their
//! discs have no ontology id yet: a mask holding them fails with an error naming the file.
//! The result is [`VertebraExtent::BodyOnly`], plus posterior elements as one structure.

use super::{
    list_files, value_counts, Case, Dataset, DatasetKind, LabelMap, LabelTarget, LayoutIssue, Split, VertebraExtent,
};
use crate::error::{DatasetError, Result};
use spineseg_anatomy::ontology::{
    Ontology, StructureId, StructureKind, COCCYX, POSTERIOR_ELEMENTS, SACRUM, SPINAL_CANAL, SPINAL_CORD,
};
use spineseg_io::{ImageFormat, Label, Volume};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Geometry tolerance between the two masks of a case, in mm.
const GRID_TOLERANCE_MM: f64 = 1e-3;

/// A parsed BIDS-like file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BidsName {
    /// `key-value` entities in file order, without `seg` and `mod`.
    pub entities: Vec<(String, String)>,
    pub seg: Option<String>,
    pub modality: Option<String>,
    /// The last token when it has no `-` (`T2w`, `msk`).
    pub suffix: Option<String>,
}

impl BidsName {
    pub fn parse(path: &Path) -> Option<BidsName> {
        let stem = ImageFormat::strip_extension(path)?;
        let mut tokens: Vec<&str> = stem.split('_').collect();
        let suffix = match tokens.last() {
            Some(t) if !t.contains('-') => tokens.pop().map(str::to_string),
            _ => None,
        };
        let mut name = BidsName {
            entities: Vec::new(),
            seg: None,
            modality: None,
            suffix,
        };
        for token in tokens {
            let (key, value) = token.split_once('-')?;
            match key {
                "seg" => name.seg = Some(value.to_string()),
                "mod" => name.modality = Some(value.to_string()),
                _ => name.entities.push((key.to_string(), value.to_string())),
            }
        }
        name.entities.iter().any(|(k, _)| k == "sub").then_some(name)
    }

    fn key(&self) -> String {
        self.entities
            .iter()
            .map(|(k, v)| format!("{k}-{v}"))
            .collect::<Vec<_>>()
            .join("_")
    }

    fn is_mask(&self) -> bool {
        self.suffix.as_deref() == Some("msk") && self.seg.is_some()
    }
}

/// True for a SPINEPS vertebra instance mask (`..._seg-vert_..._msk.*`).
pub fn is_vert_mask(path: &Path) -> bool {
    BidsName::parse(path).is_some_and(|n| n.is_mask() && n.seg.as_deref() == Some("vert"))
}

/// The label map of the instance (`seg-vert`) mask, endplates merged into bodies.
pub fn vert_label_map() -> LabelMap {
    let ontology = Ontology::standard();
    let mut map = LabelMap::new();
    let vertebra = |x: u16| -> (String, LabelTarget) {
        match x {
            25 => (
                "L6".into(),
                LabelTarget::Unmapped {
                    reason: "L6 (TPTBox 25) has no ontology id yet".into(),
                },
            ),
            28 => (
                "T13".into(),
                LabelTarget::Unmapped {
                    reason: "T13 (TPTBox 28) has no ontology id yet".into(),
                },
            ),
            _ => {
                let s = ontology
                    .get(StructureId(x))
                    .expect("TPTBox ids 1-24, 26, 27 are ontology ids");
                (s.name.clone(), LabelTarget::Structure(s.id))
            }
        }
    };
    for x in 1..=28u16 {
        let (name, target) = vertebra(x);
        map.insert(x, name.clone(), target.clone());
        map.insert(200 + x, format!("{name} endplate"), target);
        let disc = match ontology.get(StructureId(100 + x)) {
            Some(s) if s.kind == StructureKind::Disc => LabelTarget::Structure(s.id),
            _ => LabelTarget::Unmapped {
                reason: format!("the ontology has no disc below {name}"),
            },
        };
        map.insert(100 + x, format!("disc below {name}"), disc);
    }
    map
}

/// The label map of the subregion (`seg-subreg`) mask. Corpus and endplate values are
/// [`LabelTarget::Ignored`] here because their level comes from the instance mask.
pub fn subregion_label_map() -> LabelMap {
    let mut map = LabelMap::new();
    let names = [
        (41, "arcus vertebrae"),
        (42, "spinous process"),
        (43, "costal process left"),
        (44, "costal process right"),
        (45, "superior articular process left"),
        (46, "superior articular process right"),
        (47, "inferior articular process left"),
        (48, "inferior articular process right"),
    ];
    for (v, name) in names {
        map.insert(v, name, LabelTarget::Structure(POSTERIOR_ELEMENTS));
    }
    map.insert(
        49,
        "vertebral corpus border (level from seg-vert)",
        LabelTarget::Ignored,
    );
    map.insert(50, "vertebral corpus (level from seg-vert)", LabelTarget::Ignored);
    map.insert(62, "endplate (level from seg-vert)", LabelTarget::Ignored);
    map.insert(100, "intervertebral disc (level from seg-vert)", LabelTarget::Ignored);
    map.insert(60, "spinal cord", LabelTarget::Structure(SPINAL_CORD));
    map.insert(61, "spinal canal", LabelTarget::Structure(SPINAL_CANAL));
    map.insert(26, "sacrum", LabelTarget::Structure(SACRUM));
    map
}

/// The ontology label volume of one SPINEPS case.
#[derive(Debug, Clone, PartialEq)]
pub struct SpinepsCombined {
    /// Ontology ids, on the instance mask's grid.
    pub labels: Volume<Label>,
    /// Labelled voxels that became background because the two masks disagree there.
    pub dropped_voxels: u64,
}

/// Combines an instance mask and a subregion mask (see the module docs). Fails when the masks'
/// grids differ or a value is unknown or has no ontology id (L6, T13).
pub fn combine_spineps_masks(
    vert: &Volume<Label>,
    vert_path: &Path,
    subreg: &Volume<Label>,
    subreg_path: &Path,
) -> Result<SpinepsCombined> {
    let grid_err = |detail: String| DatasetError::GridMismatch {
        a: vert_path.to_path_buf(),
        b: subreg_path.to_path_buf(),
        detail,
    };
    if vert.shape() != subreg.shape() {
        return Err(grid_err(format!(
            "shapes differ: {:?} vs {:?}",
            vert.shape(),
            subreg.shape()
        )));
    }
    if !vert
        .geometry
        .agrees_with(&subreg.geometry, vert.shape(), GRID_TOLERANCE_MM)
    {
        return Err(grid_err(format!(
            "geometries differ by more than {GRID_TOLERANCE_MM} mm"
        )));
    }
    let (vmap, smap) = (vert_label_map(), subregion_label_map());
    for (volume, map, path) in [(vert, &vmap, vert_path), (subreg, &smap, subreg_path)] {
        for (value, count) in value_counts(volume) {
            if let Err(reason) = map.target(value) {
                return Err(DatasetError::UnmappedLabel {
                    path: path.to_path_buf(),
                    value,
                    detail: format!("{reason} ({count} voxels)"),
                });
            }
        }
    }
    // After the checks above every instance value is 0 or maps to a structure.
    #[derive(Clone, Copy)]
    enum Instance {
        None,
        Bone(Label),
        Sacral(Label),
        Disc(Label),
        Endplate(Label),
    }
    let mut instance = vec![Instance::None; Label::MAX as usize + 1];
    for (value, _) in vmap.entries() {
        if let Ok(Some(id)) = vmap.target(value) {
            instance[value as usize] = match value {
                1..=99 if id == SACRUM || id == COCCYX => Instance::Sacral(id.0),
                1..=99 => Instance::Bone(id.0),
                101..=199 => Instance::Disc(id.0),
                _ => Instance::Endplate(id.0),
            };
        }
    }
    let mut dropped = 0u64;
    let data: Vec<Label> = vert
        .data()
        .iter()
        .zip(subreg.data())
        .map(|(&v, &s)| {
            let out = match (s, instance[v as usize]) {
                (60, _) => SPINAL_CORD.0,
                (61, _) => SPINAL_CANAL.0,
                (_, Instance::Sacral(id)) => id,
                (41..=48, _) => POSTERIOR_ELEMENTS.0,
                (_, Instance::Endplate(body)) => body,
                (49 | 50 | 62, Instance::Bone(id)) => id,
                (_, Instance::Disc(id)) => id,
                (26, _) => SACRUM.0,
                _ => 0,
            };
            if out == 0 && (v != 0 || s != 0) {
                dropped += 1;
            }
            out
        })
        .collect();
    let labels = Volume::new(vert.shape(), data, vert.geometry).expect("same number of voxels as the instance mask");
    Ok(SpinepsCombined {
        labels,
        dropped_voxels: dropped,
    })
}

/// Opens a folder of SPINEPS / TPTBox files.
pub fn open_spineps(root: &Path) -> Result<Dataset> {
    let mut images: Vec<(PathBuf, BidsName)> = Vec::new();
    let mut masks: Vec<(PathBuf, BidsName)> = Vec::new();
    let mut warnings = Vec::new();
    for path in list_files(root)? {
        let Some(name) = BidsName::parse(&path) else { continue };
        if name.is_mask() {
            match name.seg.as_deref() {
                Some("vert" | "subreg" | "spine") => masks.push((path, name)),
                _ => warnings.push(format!("ignoring mask of unknown kind: {}", path.display())),
            }
        } else if name.seg.is_none() && name.suffix.is_some() {
            images.push((path, name));
        }
    }
    let mut issues = Vec::new();
    let mut cases: Vec<Case> = images
        .iter()
        .map(|(path, _)| Case {
            id: ImageFormat::strip_extension(path).expect("listed files have image extensions"),
            images: vec![path.clone()],
            label: None,
            subregion_label: None,
            split: Split::Train,
        })
        .collect();
    for (path, mask) in masks {
        let matching: Vec<usize> = images
            .iter()
            .enumerate()
            .filter(|(_, (_, img))| {
                img.key() == mask.key() && mask.modality.as_ref().is_none_or(|m| img.suffix.as_ref() == Some(m))
            })
            .map(|(i, _)| i)
            .collect();
        match matching.as_slice() {
            [] => issues.push(LayoutIssue::OrphanLabel { path }),
            [i] => {
                let case = &mut cases[*i];
                let slot = if mask.seg.as_deref() == Some("vert") {
                    &mut case.label
                } else {
                    &mut case.subregion_label
                };
                if let Some(previous) = slot.replace(path.clone()) {
                    issues.push(LayoutIssue::Inconsistent {
                        detail: format!(
                            "{}: two masks of the same kind: {} and {}",
                            case.id,
                            previous.display(),
                            path.display()
                        ),
                    });
                }
            }
            several => issues.push(LayoutIssue::Inconsistent {
                detail: format!(
                    "{} matches {} images ({}); name the image with a mod- entity",
                    path.display(),
                    several.len(),
                    several
                        .iter()
                        .map(|i| cases[*i].id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }
    for case in &cases {
        let dir = case
            .label
            .as_ref()
            .or(case.subregion_label.as_ref())
            .and_then(|p| p.parent())
            .map(Path::to_path_buf);
        let expected = |seg: &str| {
            dir.as_ref().map(|d| {
                let name = images
                    .iter()
                    .find(|(p, _)| Some(p) == case.images.first())
                    .map(|(_, n)| n.key())
                    .unwrap_or_default();
                d.join(format!("{name}_seg-{seg}_msk.nii.gz"))
            })
        };
        if case.label.is_none() {
            issues.push(LayoutIssue::MissingLabel {
                case: case.id.clone(),
                expected: expected("vert"),
            });
        } else if case.subregion_label.is_none() {
            issues.push(LayoutIssue::MissingLabel {
                case: case.id.clone(),
                expected: expected("subreg"),
            });
        }
    }
    cases.sort_by(|a, b| a.id.cmp(&b.id));
    // L6 / T13 (no ontology ids yet) are not warned about here: they are reported per file by
    // `dataset check` and fail `load_labels` only where a mask actually holds them.
    let vmap = vert_label_map();
    Ok(Dataset {
        name: super::folder_name(root),
        kind: DatasetKind::Spineps,
        root: root.to_path_buf(),
        cases,
        channel_names: vec!["T2w".to_string()],
        label_map: vmap,
        subregion_map: Some(subregion_label_map()),
        case_label_maps: BTreeMap::new(),
        vertebra_extent: VertebraExtent::BodyOnly,
        issues,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use spineseg_io::Geometry;

    #[test]
    fn bids_names_parse() {
        let n = BidsName::parse(Path::new("d/sub-mri_seg-vert_label-6_msk.nii.gz")).unwrap();
        assert_eq!(n.seg.as_deref(), Some("vert"));
        assert_eq!(n.key(), "sub-mri_label-6");
        assert!(n.is_mask());
        let i = BidsName::parse(Path::new("sub-mri_label-6_T2w.nii.gz")).unwrap();
        assert_eq!(i.key(), "sub-mri_label-6");
        assert_eq!(i.suffix.as_deref(), Some("T2w"));
        let m = BidsName::parse(Path::new("sub-1_ses-2_mod-T2w_seg-spine_msk.nii.gz")).unwrap();
        assert_eq!((m.key().as_str(), m.modality.as_deref()), ("sub-1_ses-2", Some("T2w")));
        assert!(BidsName::parse(Path::new("Case1.nii.gz")).is_none());
        assert!(is_vert_mask(Path::new("sub-mri_seg-vert_label-6_msk.nii.gz")));
    }

    #[test]
    fn vert_map_follows_tptbox() {
        let m = vert_label_map();
        for (value, id) in [
            (5, 5),
            (20, 20),
            (24, 24),
            (26, 26),
            (105, 105),
            (124, 124),
            (205, 5),
            (224, 24),
        ] {
            assert_eq!(m.target(value), Ok(Some(StructureId(id))), "value {value}");
        }
        for bad in [25, 28, 101, 125, 225] {
            assert!(m.target(bad).is_err(), "value {bad}");
        }
        assert!(m.target(25).unwrap_err().contains("L6"));
    }

    #[test]
    fn combine_rules() {
        let g = Geometry::default();
        // (vert, subreg) pairs, one per voxel, and the expected ontology id.
        let cases: [(Label, Label, Label); 12] = [
            (0, 0, 0),
            (6, 49, 6),   // corpus border -> body
            (6, 50, 6),   // corpus -> body
            (6, 41, 40),  // arcus -> posterior elements
            (6, 62, 6),   // endplate subregion -> body
            (206, 62, 6), // endplate instance -> body
            (106, 100, 106),
            (0, 60, 60),
            (0, 61, 61),
            (26, 26, 26),
            (0, 49, 0), // corpus outside every instance: dropped
            (6, 0, 0),  // instance without subregion: dropped
        ];
        let vert = Volume::new([cases.len(), 1, 1], cases.iter().map(|c| c.0).collect(), g).unwrap();
        let sub = Volume::new([cases.len(), 1, 1], cases.iter().map(|c| c.1).collect(), g).unwrap();
        let out = combine_spineps_masks(&vert, Path::new("v.nii.gz"), &sub, Path::new("s.nii.gz")).unwrap();
        assert_eq!(
            out.labels.data(),
            cases.iter().map(|c| c.2).collect::<Vec<_>>().as_slice()
        );
        assert_eq!(out.dropped_voxels, 2);
    }

    #[test]
    fn combine_rejects_l6_unknown_values_and_grids() {
        let g = Geometry::default();
        let sub = Volume::new([2, 1, 1], vec![49, 0], g).unwrap();
        let vert = Volume::new([2, 1, 1], vec![25, 0], g).unwrap();
        let err = combine_spineps_masks(&vert, Path::new("v.nii.gz"), &sub, Path::new("s.nii.gz"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("v.nii.gz") && err.contains("L6"), "{err}");
        let weird = Volume::new([2, 1, 1], vec![77, 0], g).unwrap();
        let vert = Volume::new([2, 1, 1], vec![5, 0], g).unwrap();
        let err = combine_spineps_masks(&vert, Path::new("v.nii.gz"), &weird, Path::new("s.nii.gz"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("s.nii.gz") && err.contains("77"), "{err}");
        let small = Volume::new([1, 1, 1], vec![0], g).unwrap();
        assert!(combine_spineps_masks(&vert, Path::new("v"), &small, Path::new("s")).is_err());
    }
}
