//! SPIDER (lumbar spine MRI, van der Graaf et al., Sci Data 2024; spider.grand-challenge.org):
//! `images/*.mha` and `masks/*.mha` with the same file names (`1_t1.mha`, `1_t2.mha`,
//! `1_t2_SPACE.mha`, ...), and `overview.csv` with one row per file.
//!
//! # Label values (as the challenge describes them)
//! - 1..=25: vertebrae numbered **from the bottom**: 1 is the lowest vertebra, 2 the one above it,
//!   and so on.
//! - 101..=125: the same vertebrae when only partly inside the field of view. They map to the
//!   same ontology structure; the [`LabelMap`] entry has `partial = true`.
//! - 100: spinal canal.
//! - 201..=225: intervertebral discs, also from the bottom: 200 + n is the disc below vertebra n,
//!   so 201 is the disc below the lowest vertebra (L5/S1 by default).
//!
//! # Assumption: the lowest vertebra
//! The masks do not say which level vertebra 1 is. We assume **L5** (the challenge says "L5 = 1"),
//! which is wrong for spines with a transitional vertebra. [`SpiderOptions::lowest_vertebra`]
//! changes it for the whole dataset, and [`SpiderOptions::per_case`] (or a CSV read with
//! [`SpiderOptions::read_overrides_csv`]) for single cases or patients. With lowest = L4
//! everything moves up one level (1 = L4, 201 = L4/L5). A lowest level the ontology lacks (L6)
//! is an error when the dataset is opened; a value that would lie above C1 (or a disc below C1)
//! is [`LabelTarget::Unmapped`] and fails when a mask holds it.
//!
//! Vertebra masks cover the whole vertebra ([`VertebraExtent::WholeVertebra`]).

use super::{list_dir, Case, Dataset, DatasetKind, LabelMap, LabelTarget, LayoutIssue, Split, VertebraExtent};
use crate::error::{DatasetError, Result};
use spineseg_anatomy::ontology::{Level, Ontology, Region, StructureId, SPINAL_CANAL};
use spineseg_io::ImageFormat;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Options of the SPIDER adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct SpiderOptions {
    /// The level of vertebra 1 (the lowest labelled vertebra). Default L5.
    pub lowest_vertebra: Level,
    /// Overrides by case id (`"12_t2"`) or by patient id (`"12"`, the part before the first `_`);
    /// a case id wins over its patient id.
    pub per_case: BTreeMap<String, Level>,
}

impl Default for SpiderOptions {
    fn default() -> Self {
        SpiderOptions {
            lowest_vertebra: Level::new(Region::Lumbar, 5),
            per_case: BTreeMap::new(),
        }
    }
}

impl SpiderOptions {
    /// The lowest vertebra for a case.
    pub fn lowest_for(&self, case_id: &str) -> Level {
        let patient = case_id.split('_').next().unwrap_or(case_id);
        self.per_case
            .get(case_id)
            .or_else(|| self.per_case.get(patient))
            .copied()
            .unwrap_or(self.lowest_vertebra)
    }

    /// Reads per-case overrides from a CSV with a header and the columns `case` (case or patient
    /// id) and `lowest_vertebra` (a level name such as `L4` or `S1`).
    pub fn read_overrides_csv(&mut self, path: &Path) -> Result<()> {
        let csv_err = |detail: String| DatasetError::Csv {
            path: path.to_path_buf(),
            detail,
        };
        let mut reader = csv::Reader::from_path(path).map_err(|e| csv_err(e.to_string()))?;
        let headers = reader.headers().map_err(|e| csv_err(e.to_string()))?.clone();
        let column = |name: &str| {
            headers
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(name))
                .ok_or_else(|| csv_err(format!("no column '{name}'")))
        };
        let (case_col, level_col) = (column("case")?, column("lowest_vertebra")?);
        for (row, record) in reader.records().enumerate() {
            let record = record.map_err(|e| csv_err(e.to_string()))?;
            let case = record.get(case_col).unwrap_or("").trim().to_string();
            let text = record.get(level_col).unwrap_or("").trim();
            let level = parse_level(text)
                .ok_or_else(|| csv_err(format!("row {}: '{text}' is not a vertebra level", row + 2)))?;
            self.per_case.insert(case, level);
        }
        Ok(())
    }
}

/// Parses a level name ("L4", "T12", "S1"); also accepts levels the ontology lacks, like "L6",
/// so that the label map can explain why they do not work.
pub fn parse_level(text: &str) -> Option<Level> {
    let t = text.trim().to_uppercase();
    let (region, digits) = if let Some(d) = t.strip_prefix("CO") {
        (Region::Coccygeal, d)
    } else {
        let region = match t.chars().next()? {
            'C' => Region::Cervical,
            'T' => Region::Thoracic,
            'L' => Region::Lumbar,
            'S' => Region::Sacral,
            _ => return None,
        };
        (region, &t[1..])
    };
    let number: u8 = digits.parse().ok()?;
    (number > 0).then_some(Level::new(region, number))
}

/// The label map for a SPIDER mask whose vertebra 1 is at `lowest`. Fails when the ontology has
/// no vertebra at `lowest` (e.g. L6).
pub fn spider_label_map(lowest: Level) -> Result<LabelMap> {
    let ontology = Ontology::standard();
    let start = ontology.vertebra(lowest).ok_or_else(|| {
        DatasetError::InvalidMapping(format!(
            "SPIDER lowest vertebra {} has no structure in the ontology (transitional vertebrae such as L6 are not defined yet)",
            lowest.short_name()
        ))
    })?;
    let mut map = LabelMap::new();
    map.insert(100, "spinal canal", LabelTarget::Structure(SPINAL_CANAL));
    let mut vertebra: Option<StructureId> = Some(start);
    for n in 1..=25u16 {
        let (v_target, d_target) = match vertebra {
            Some(id) => {
                let level = ontology
                    .get(id)
                    .and_then(|s| s.level)
                    .expect("column vertebrae have levels");
                let disc = match ontology.disc_below(level) {
                    Some(d) => LabelTarget::Structure(d),
                    None => LabelTarget::Unmapped {
                        reason: format!(
                            "the ontology has no disc below {} (vertebra 1 = {})",
                            level.short_name(),
                            lowest.short_name()
                        ),
                    },
                };
                (LabelTarget::Structure(id), disc)
            }
            None => {
                let reason = format!(
                    "vertebra {n} from the bottom would lie above C1 when vertebra 1 is {}",
                    lowest.short_name()
                );
                (
                    LabelTarget::Unmapped { reason: reason.clone() },
                    LabelTarget::Unmapped { reason },
                )
            }
        };
        map.insert(n, format!("vertebra {n} from the bottom"), v_target.clone());
        map.insert_partial(
            100 + n,
            format!("vertebra {n} from the bottom, partly visible"),
            v_target,
        );
        map.insert(200 + n, format!("disc below vertebra {n} from the bottom"), d_target);
        vertebra = vertebra.and_then(|id| ontology.same_kind_above(id));
    }
    Ok(map)
}

/// Opens a SPIDER folder (`images/`, `masks/`, optional `overview.csv`).
pub fn open_spider(root: &Path, options: &SpiderOptions) -> Result<Dataset> {
    let label_map = spider_label_map(options.lowest_vertebra)?;
    let mut issues = Vec::new();
    let mut warnings = Vec::new();
    let images = list_dir(&root.join("images"))?;
    let mut masks: BTreeMap<String, std::path::PathBuf> = list_dir(&root.join("masks"))?
        .into_iter()
        .filter_map(|p| ImageFormat::strip_extension(&p).map(|id| (id, p)))
        .collect();
    let mut cases = Vec::new();
    let mut case_label_maps = BTreeMap::new();
    for image in images {
        let Some(id) = ImageFormat::strip_extension(&image) else {
            continue;
        };
        let label = masks.remove(&id);
        if label.is_none() {
            issues.push(LayoutIssue::MissingLabel {
                case: id.clone(),
                expected: Some(
                    root.join("masks")
                        .join(image.file_name().expect("listed files have names")),
                ),
            });
        }
        let lowest = options.lowest_for(&id);
        if lowest != options.lowest_vertebra {
            case_label_maps.insert(id.clone(), spider_label_map(lowest)?);
        }
        cases.push(Case {
            id,
            images: vec![image],
            label,
            subregion_label: None,
            split: Split::Train,
        });
    }
    for (_, path) in masks {
        issues.push(LayoutIssue::OrphanLabel { path });
    }
    let overview = root.join("overview.csv");
    if overview.is_file() {
        let listed = read_overview_names(&overview)?;
        let found: BTreeSet<&str> = cases.iter().map(|c| c.id.as_str()).collect();
        let absent: Vec<&String> = listed.iter().filter(|n| !found.contains(n.as_str())).collect();
        if !absent.is_empty() {
            warnings.push(format!(
                "overview.csv lists {} file(s) not found in images/: {}",
                absent.len(),
                absent
                    .iter()
                    .take(10)
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let unlisted: Vec<&str> = found.iter().copied().filter(|id| !listed.contains(*id)).collect();
        if !unlisted.is_empty() {
            warnings.push(format!(
                "{} image(s) are not listed in overview.csv: {}",
                unlisted.len(),
                unlisted.iter().take(10).copied().collect::<Vec<_>>().join(", ")
            ));
        }
    } else {
        warnings.push("no overview.csv".to_string());
    }
    Ok(Dataset {
        name: super::folder_name(root),
        kind: DatasetKind::Spider,
        root: root.to_path_buf(),
        cases,
        channel_names: vec!["MRI".to_string()],
        label_map,
        subregion_map: None,
        case_label_maps,
        vertebra_extent: VertebraExtent::WholeVertebra,
        issues,
        warnings,
    })
}

/// The file names (without extension) listed in overview.csv: the column `new_file_name` (as
/// released), else `file_name`, `filename` or `name`.
fn read_overview_names(path: &Path) -> Result<BTreeSet<String>> {
    let csv_err = |detail: String| DatasetError::Csv {
        path: path.to_path_buf(),
        detail,
    };
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .map_err(|e| csv_err(e.to_string()))?;
    let headers = reader.headers().map_err(|e| csv_err(e.to_string()))?.clone();
    let col = ["new_file_name", "file_name", "filename", "name"]
        .iter()
        .find_map(|want| headers.iter().position(|h| h.trim().eq_ignore_ascii_case(want)))
        .ok_or_else(|| csv_err("no file name column (new_file_name, file_name, filename or name)".into()))?;
    let mut out = BTreeSet::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_err(e.to_string()))?;
        let name = record.get(col).unwrap_or("").trim();
        if name.is_empty() {
            continue;
        }
        let stripped = ImageFormat::strip_extension(Path::new(name)).unwrap_or_else(|| name.to_string());
        out.insert(stripped);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(map: &LabelMap, value: u16) -> Option<u16> {
        map.target(value).ok().flatten().map(|s| s.0)
    }

    #[test]
    fn default_lowest_is_l5() {
        let m = spider_label_map(SpiderOptions::default().lowest_vertebra).unwrap();
        let table = [
            (1, Some(24)),   // L5
            (2, Some(23)),   // L4
            (5, Some(20)),   // L1
            (6, Some(19)),   // T12
            (17, Some(8)),   // T1
            (18, Some(7)),   // C7
            (24, Some(1)),   // C1
            (25, None),      // above C1
            (101, Some(24)), // L5, partly visible
            (106, Some(19)),
            (100, Some(61)),  // canal
            (201, Some(124)), // L5/S1
            (202, Some(123)), // L4/L5
            (206, Some(119)), // T12/L1
            (223, Some(102)), // C2/C3
            (224, None),      // below C1: no disc
            (0, None),
        ];
        for (value, expected) in table {
            assert_eq!(id(&m, value), expected, "value {value}");
        }
        assert!(m.get(101).unwrap().partial && !m.get(1).unwrap().partial);
        assert!(m.target(25).unwrap_err().contains("above C1"));
        assert!(m.target(26).unwrap_err().contains("not declared"));
    }

    #[test]
    fn lowest_l4_shifts_up_one_level() {
        let m = spider_label_map(Level::new(Region::Lumbar, 4)).unwrap();
        for (value, expected) in [(1, 23), (2, 22), (5, 19), (101, 23), (201, 123), (202, 122), (205, 119)] {
            assert_eq!(id(&m, value), Some(expected), "value {value}");
        }
        assert_eq!(id(&m, 23), Some(1));
        assert!(m.target(24).is_err(), "vertebra 24 from L4 is above C1");
    }

    #[test]
    fn lowest_sacrum_and_l6() {
        let m = spider_label_map(Level::new(Region::Sacral, 1)).unwrap();
        assert_eq!(id(&m, 1), Some(26));
        assert_eq!(id(&m, 2), Some(24));
        assert!(m.target(201).unwrap_err().contains("no disc below S1"));
        assert_eq!(id(&m, 202), Some(124));
        let err = spider_label_map(Level::new(Region::Lumbar, 6)).unwrap_err().to_string();
        assert!(err.contains("L6") && err.contains("ontology"), "{err}");
    }

    #[test]
    fn overrides_by_case_then_patient() {
        let mut o = SpiderOptions::default();
        o.per_case.insert("3".into(), Level::new(Region::Lumbar, 4));
        o.per_case.insert("3_t1".into(), Level::new(Region::Sacral, 1));
        assert_eq!(o.lowest_for("3_t2"), Level::new(Region::Lumbar, 4));
        assert_eq!(o.lowest_for("3_t1"), Level::new(Region::Sacral, 1));
        assert_eq!(o.lowest_for("4_t1"), Level::new(Region::Lumbar, 5));
        assert_eq!(parse_level("l6"), Some(Level::new(Region::Lumbar, 6)));
        assert_eq!(parse_level("Co1"), Some(Level::new(Region::Coccygeal, 1)));
        assert_eq!(parse_level("x"), None);
    }
}
