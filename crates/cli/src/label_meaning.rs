//! What the values of a label file mean, found the way a user expects: a file given with
//! `--labels-json`, else the mask's own sidecar `<stem>.labels.json` (written by `predict`), else
//! the dataset.json of the nnU-Net folder it sits in (`DATASET/labelsTr/x.nii.gz`), else the
//! values are read as spineseg ontology ids, and the commands say which it was.

use anyhow::{bail, Context, Result};
use spineseg_anatomy::ontology::{Ontology, StructureId};
use spineseg_infer::workflow::labels_sidecar_path;
use spineseg_infer::OutputLabels;
use spineseg_io::{Label, Volume};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Value -> structure, and where that came from.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelMeaning {
    /// The file the meaning came from; None: the values are ontology ids.
    pub source: Option<PathBuf>,
    /// Value -> ontology structure (values whose name the ontology does not know are absent).
    pub structure_of: BTreeMap<Label, StructureId>,
    /// Value -> name as the source gives it (the dataset's own names; the ontology's display
    /// names for ontology ids).
    pub names: BTreeMap<Label, String>,
}

impl LabelMeaning {
    /// Values are ontology ids.
    pub fn ontology_ids() -> LabelMeaning {
        let ontology = Ontology::standard();
        LabelMeaning {
            source: None,
            structure_of: ontology.structures().iter().map(|s| (s.id.0, s.id)).collect(),
            names: ontology.structures().iter().map(|s| (s.id.0, s.display_name.clone())).collect(),
        }
    }

    /// The meaning of `mask`'s values: `explicit` if given, else its sidecar, else the dataset.json
    /// of the nnU-Net folder it sits in, else ontology ids.
    pub fn for_mask(mask: &Path, explicit: Option<&Path>) -> Result<LabelMeaning> {
        if let Some(path) = explicit {
            return LabelMeaning::read(path);
        }
        let sidecar = labels_sidecar_path(mask);
        if sidecar.is_file() {
            return LabelMeaning::read(&sidecar);
        }
        let dataset_json =
            mask.parent().and_then(Path::parent).map(|d| d.join(spineseg_datasets::nnunet::DATASET_FILE));
        if let Some(path) = dataset_json.filter(|p| p.is_file()) {
            return LabelMeaning::read(&path);
        }
        Ok(LabelMeaning::ontology_ids())
    }

    /// Reads a model folder's / `predict`'s labels.json (`"structures": [{structure_id,
    /// dataset_value, dataset_name}]`) or an nnU-Net dataset.json (`"labels": {name: value}`,
    /// names matched through the ontology with its synonyms).
    pub fn read(path: &Path) -> Result<LabelMeaning> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?;
        let ontology = Ontology::standard();
        let mut meaning =
            LabelMeaning { source: Some(path.to_path_buf()), structure_of: BTreeMap::new(), names: BTreeMap::new() };
        if json.get("structures").is_some() {
            let labels: OutputLabels = serde_json::from_value(json).with_context(|| {
                format!(
                    "{}: not a labels.json (structures with structure_id, dataset_value, dataset_name)",
                    path.display()
                )
            })?;
            return Ok(LabelMeaning::of_output_labels(&labels, path));
        } else if let Some(labels) = json.get("labels").and_then(|l| l.as_object()) {
            for (name, value) in labels {
                // nnU-Net's region labels (a list of values) name no single value: skipped.
                let Some(value) = value.as_u64().and_then(|v| Label::try_from(v).ok()) else { continue };
                if value == 0 {
                    continue;
                }
                if let Some(id) = ontology.find_by_name(name) {
                    meaning.structure_of.insert(value, id);
                }
                meaning.names.insert(value, name.clone());
            }
        } else {
            bail!("{}: neither a labels.json (\"structures\") nor a dataset.json (\"labels\")", path.display());
        }
        meaning.names.insert(0, "background".into());
        Ok(meaning)
    }

    /// The meaning of a model folder's output values (`labels` read from `source`).
    pub fn of_output_labels(labels: &OutputLabels, source: &Path) -> LabelMeaning {
        let ontology = Ontology::standard();
        let mut meaning =
            LabelMeaning { source: Some(source.to_path_buf()), structure_of: BTreeMap::new(), names: BTreeMap::new() };
        for s in &labels.structures {
            let id = StructureId(s.structure_id);
            if ontology.get(id).is_some() {
                meaning.structure_of.insert(s.dataset_value, id);
            }
            meaning.names.insert(s.dataset_value, s.dataset_name.clone());
        }
        meaning.names.insert(0, "background".into());
        meaning
    }

    /// One line for the log: where the names come from.
    pub fn describe(&self) -> String {
        match &self.source {
            Some(path) => format!("label names from {}", path.display()),
            None => "no labels.json beside the mask and no dataset.json above it: values read as spineseg ontology ids (--labels-json names a file)".to_string(),
        }
    }

    /// The mask with its values turned into ontology ids (what the renderer colours and names).
    /// A value without an ontology structure keeps its number.
    pub fn to_ontology(&self, labels: &Volume<Label>) -> Volume<Label> {
        if self.source.is_none() {
            return labels.clone();
        }
        labels.map(|&v| if v == 0 { 0 } else { self.structure_of.get(&v).map_or(v, |id| id.0) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_json_dataset_json_and_the_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let labels = dir.path().join("seg.labels.json");
        std::fs::write(
            &labels,
            r#"{"dataset": "d", "structures": [{"structure_id": 23, "dataset_value": 8, "dataset_name": "L4"}]}"#,
        )
        .unwrap();
        let mask = dir.path().join("seg.nii.gz");
        let meaning = LabelMeaning::for_mask(&mask, None).unwrap();
        assert_eq!(meaning.source.as_deref(), Some(labels.as_path()));
        assert_eq!(meaning.structure_of[&8], StructureId(23));
        assert_eq!(meaning.names[&8], "L4");

        let dataset = dir.path().join("dataset.json");
        std::fs::write(&dataset, r#"{"labels": {"background": 0, "L5": 1, "L4L5": 2, "mystery": 3}}"#).unwrap();
        let meaning = LabelMeaning::read(&dataset).unwrap();
        assert_eq!(meaning.structure_of[&1], StructureId(24));
        assert_eq!(meaning.structure_of[&2], StructureId(123));
        assert!(!meaning.structure_of.contains_key(&3));
        assert_eq!(meaning.names[&3], "mystery");

        let image = Volume::new([4, 1, 1], vec![0, 1, 2, 3], Default::default()).unwrap();
        assert_eq!(meaning.to_ontology(&image).data(), [0, 24, 123, 3]);

        // Two levels below the dataset.json is where an nnU-Net labelsTr file sits; deeper is not.
        let elsewhere = dir.path().join("other").join("deeper").join("x.nii.gz");
        let fallback = LabelMeaning::for_mask(&elsewhere, None).unwrap();
        assert!(fallback.source.is_none() && fallback.describe().contains("ontology ids"));
        assert_eq!(fallback.to_ontology(&image).data(), image.data());

        std::fs::write(dir.path().join("bad.json"), "{}").unwrap();
        let err = LabelMeaning::read(&dir.path().join("bad.json")).unwrap_err().to_string();
        assert!(err.contains("bad.json") && err.contains("neither"), "{err}");
    }
}
