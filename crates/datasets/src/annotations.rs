//! Declared annotations: what a dataset's cases annotate, where the partial-label rule
//! (`spineseg_dataloading::partial_labels`) cannot infer it from the labels.
//!
//! A dataset may hold `annotations.json` at its root (beside nnU-Net's `dataset.json`):
//!
//! ```json
//! {
//!   "default": ["vertebrae", "discs"],
//!   "cases": {
//!     "case_007": ["T12/L1", "L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1"]
//!   }
//! }
//! ```
//!
//! Each list names what the case annotates, as ontology structure names (any spelling
//! [`Ontology::find_by_name`] accepts: "L4", "L4/L5", "spinal canal") or structure kinds
//! ("vertebrae" = every vertebra C1-L5, "discs" = every disc; also "vertebral bodies",
//! "intervertebral discs"), so that a disc case whose T12/L1 is truly absent still teaches T12/L1
//! where the image shows none. `cases` (by case id) overrides `default`; both are optional; a
//! case in neither is left to the rule. Background is always annotated and need not be listed.
//! Unknown keys, unknown names and unknown case ids are errors naming the file and the entry.

use crate::error::{DatasetError, Result};
use crate::Dataset;
use serde::Deserialize;
use spineseg_anatomy::ontology::{Ontology, StructureId, StructureKind};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// File name of the declared annotations, at the dataset's root.
pub const ANNOTATIONS_FILE: &str = "annotations.json";

/// `annotations.json` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnnotationsFile {
    #[serde(default)]
    default: Option<Vec<String>>,
    #[serde(default)]
    cases: BTreeMap<String, Vec<String>>,
}

/// Declared annotations, resolved to ontology structures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredAnnotations {
    /// Where they were read from.
    pub path: PathBuf,
    /// What a case without its own entry annotates (`None`: left to the rule).
    pub default: Option<Vec<StructureId>>,
    /// Per case id.
    pub cases: BTreeMap<String, Vec<StructureId>>,
}

impl DeclaredAnnotations {
    /// Reads and resolves `path` (see the module documentation).
    pub fn read(path: &Path) -> Result<DeclaredAnnotations> {
        let file: AnnotationsFile = spineseg_io::json::read_json(path)?;
        let resolve = |entry: &str, names: &[String]| -> Result<Vec<StructureId>> {
            let mut ids = Vec::new();
            for (index, name) in names.iter().enumerate() {
                let found = resolve_annotated(name).ok_or_else(|| DatasetError::InvalidDataset {
                    path: path.to_path_buf(),
                    detail: format!(
                        "{entry}[{index}]: {name:?} is neither an ontology structure nor a structure kind (closest structures: {}; kinds: vertebrae, discs, sacrum, coccyx, spinal canal, spinal cord, posterior elements)",
                        Ontology::standard().closest_names(name, 3).join(", ")
                    ),
                })?;
                for id in found {
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
            }
            ids.sort();
            Ok(ids)
        };
        let default = file.default.as_deref().map(|names| resolve("default", names)).transpose()?;
        let cases = file
            .cases
            .iter()
            .map(|(id, names)| Ok((id.clone(), resolve(&format!("cases.{id}"), names)?)))
            .collect::<Result<_>>()?;
        Ok(DeclaredAnnotations { path: path.to_path_buf(), default, cases })
    }

    /// `root/annotations.json`, `None` when there is none.
    pub fn at(root: &Path) -> Result<Option<DeclaredAnnotations>> {
        let path = root.join(ANNOTATIONS_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        DeclaredAnnotations::read(&path).map(Some)
    }

    /// Fails, naming the file and the entry, when a case id is not one of `dataset`'s cases.
    pub fn check_cases(&self, dataset: &Dataset) -> Result<()> {
        match self.cases.keys().find(|id| dataset.case(id).is_none()) {
            Some(unknown) => Err(DatasetError::InvalidDataset {
                path: self.path.clone(),
                detail: format!("cases.{unknown}: the dataset has no case {unknown:?}"),
            }),
            None => Ok(()),
        }
    }

    /// The dataset's `annotations.json` ([`DeclaredAnnotations::at`] its root), checked
    /// against its cases ([`DeclaredAnnotations::check_cases`]).
    pub fn for_dataset(dataset: &Dataset) -> Result<Option<DeclaredAnnotations>> {
        let declared = DeclaredAnnotations::at(&dataset.root)?;
        if let Some(declared) = &declared {
            declared.check_cases(dataset)?;
        }
        Ok(declared)
    }

    /// What case `id` is declared to annotate: its own entry, else the default, else `None`.
    pub fn for_case(&self, id: &str) -> Option<&[StructureId]> {
        self.cases.get(id).or(self.default.as_ref()).map(Vec::as_slice)
    }
}

/// The structures a name in `annotations.json` stands for: one structure, or every structure of
/// a kind.
fn resolve_annotated(name: &str) -> Option<Vec<StructureId>> {
    let ontology = Ontology::standard();
    if let Some(id) = ontology.find_by_name(name) {
        return Some(vec![id]);
    }
    let kind = match name.trim().to_lowercase().replace(['_', '-'], " ").as_str() {
        "vertebra" | "vertebrae" | "vertebral body" | "vertebral bodies" => StructureKind::Vertebra,
        "disc" | "discs" | "disk" | "disks" | "intervertebral disc" | "intervertebral discs" => StructureKind::Disc,
        _ => return None,
    };
    Some(ontology.structures().iter().filter(|s| s.kind == kind).map(|s| s.id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join(ANNOTATIONS_FILE);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn names_and_kinds_resolve_and_cases_override_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), r#"{"default": ["discs", "spinal canal"], "cases": {"a": ["L1", "L4-5", "L1 vertebra"]}}"#);
        let declared = DeclaredAnnotations::read(&path).unwrap();
        assert_eq!(declared.for_case("a"), Some(&[StructureId(20), StructureId(123)][..]));
        let default = declared.for_case("b").unwrap();
        assert_eq!(default.len(), 24, "23 discs C2/C3..L5/S1 and the canal");
        assert!(default.contains(&StructureId(119)) && default.contains(&StructureId(61)));
        assert!(!default.contains(&StructureId(20)));

        let path = write(dir.path(), r#"{"cases": {"a": ["vertebral bodies"]}}"#);
        let declared = DeclaredAnnotations::read(&path).unwrap();
        assert_eq!(declared.for_case("a").unwrap().len(), 24, "C1..L5");
        assert_eq!(declared.for_case("b"), None);
    }

    #[test]
    fn errors_name_the_file_and_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), r#"{"cases": {"case_7": ["L1", "L7"]}}"#);
        let err = DeclaredAnnotations::read(&path).unwrap_err().to_string();
        assert!(err.contains(ANNOTATIONS_FILE) && err.contains("cases.case_7[1]") && err.contains("\"L7\""), "{err}");
        let path = write(dir.path(), r#"{"defaults": ["L1"]}"#);
        let err = DeclaredAnnotations::read(&path).unwrap_err().to_string();
        assert!(err.contains(ANNOTATIONS_FILE) && err.contains("defaults"), "{err}");
        let path = write(dir.path(), r#"{"default": "L1"}"#);
        assert!(DeclaredAnnotations::read(&path).unwrap_err().to_string().contains(ANNOTATIONS_FILE));
    }
}
