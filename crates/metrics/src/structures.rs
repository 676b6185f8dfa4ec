//! What a segmentation holds, per case and structure, without a reference: volume in mL, the
//! sagittal slices it spans, and flags for what a reader should look at (a level missing between
//! two found ones, a vertebral body of implausible volume, a level count the level assignment
//! called ambiguous). `spineseg predict` prints and writes it; `spineseg report` shows it.
//!
//! Label values are read through a value -> ontology id map (the file's own numbering, from its
//! sidecar labels.json or a dataset.json), so the table names structures right whatever values
//! the file uses.

use crate::error::{MetricsError, Result};
use spineseg_anatomy::ontology::{Ontology, StructureId, StructureKind};
use spineseg_io::geometry::closest_world_axes;
use spineseg_io::{Label, Volume};
use std::collections::BTreeMap;
use std::path::Path;

/// A body this many times smaller or larger than the typical body of its scan is flagged. A
/// lumbar body's volume varies by well under 2x between T11 and L5 in an adult (about 15-40 mL),
/// so a factor of 2.5 either way catches a half-found or merged body, not normal anatomy.
pub const BODY_VOLUME_FACTOR: f64 = 2.5;

/// The level assignment's verdict on a case, as its `.levels.json` report gives it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LevelVerdict {
    /// How sure the count is, 0..1.
    pub confidence: Option<f64>,
    /// Why the count is ambiguous, when it is.
    pub ambiguous: Option<String>,
}

impl LevelVerdict {
    /// Reads the verdict from a level-assignment report (`confidence`, `ambiguous`, `reasons`).
    pub fn from_report(report: &serde_json::Value) -> LevelVerdict {
        let ambiguous = report.get("ambiguous").and_then(|a| a.as_bool()).unwrap_or(false);
        let reasons: Vec<String> = report
            .get("reasons")
            .and_then(|r| r.as_array())
            .map(|r| r.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        LevelVerdict {
            confidence: report.get("confidence").and_then(|c| c.as_f64()),
            ambiguous: ambiguous.then(|| if reasons.is_empty() { "ambiguous".to_string() } else { reasons.join("; ") }),
        }
    }
}

/// One structure of a case (or one expected but missing: `voxels` 0 and a "missing" flag).
#[derive(Debug, Clone, PartialEq)]
pub struct StructureRow {
    /// The value in the file (None for a missing level, which has no voxels).
    pub label: Option<Label>,
    pub structure_id: Option<StructureId>,
    /// Ontology name ("L4", "L4/L5", "spinal canal") or "label N" for a value it does not know.
    pub name: String,
    pub voxels: usize,
    pub volume_ml: f64,
    /// First and last sagittal slice (index along the voxel axis closest to left-right).
    pub sagittal_slices: Option<(usize, usize)>,
    /// Whether the structure touches the edge of the image in the sagittal plane (cut by the
    /// field of view at the top, bottom, front or back).
    pub at_edge: bool,
    pub flags: Vec<String>,
}

/// The structures of one case.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseStructures {
    pub case: String,
    pub rows: Vec<StructureRow>,
    pub levels: Option<LevelVerdict>,
    /// Case-level flags (an ambiguous count) plus every row's flags, prefixed by its name.
    pub flags: Vec<String>,
}

impl CaseStructures {
    /// The structures found (voxels > 0).
    pub fn found(&self) -> impl Iterator<Item = &StructureRow> {
        self.rows.iter().filter(|r| r.voxels > 0)
    }
}

/// Builds the table of one case. `structure_of` maps the file's values onto ontology ids (values
/// it lacks are reported as "label N"); `segmented` lists the structures the model could have
/// found (a level missing between two found ones is flagged only if it is one of them; empty:
/// any).
pub fn case_structures(
    case: &str,
    labels: &Volume<Label>,
    structure_of: &BTreeMap<Label, StructureId>,
    segmented: &[StructureId],
    levels: Option<LevelVerdict>,
) -> CaseStructures {
    let ontology = Ontology::standard();
    let shape = labels.shape();
    let (world_axis, _) = closest_world_axes(&labels.geometry.direction);
    let sagittal = (0..3).find(|&a| world_axis[a] == 0).unwrap_or(0);
    let voxel_ml = labels.geometry.spacing.mm().iter().product::<f64>() / 1000.0;
    // value -> (voxels, first, last slice, touches the edge)
    let mut stats: BTreeMap<Label, (usize, usize, usize, bool)> = BTreeMap::new();
    for k in 0..shape[2] {
        for j in 0..shape[1] {
            for i in 0..shape[0] {
                let v = *labels.get([i, j, k]);
                if v == 0 {
                    continue;
                }
                let ijk = [i, j, k];
                let s = ijk[sagittal];
                // Cut by the field of view in the sagittal plane (top, bottom, front, back); a
                // thin sagittal slab cuts every structure left and right alike.
                let edge = (0..3).any(|a| a != sagittal && (ijk[a] == 0 || ijk[a] + 1 == shape[a]));
                let e = stats.entry(v).or_insert((0, usize::MAX, 0, false));
                e.0 += 1;
                e.1 = e.1.min(s);
                e.2 = e.2.max(s);
                e.3 |= edge;
            }
        }
    }
    let mut rows: Vec<StructureRow> = stats
        .iter()
        .map(|(&value, &(voxels, first, last, at_edge))| {
            let id = structure_of.get(&value).copied();
            StructureRow {
                label: Some(value),
                structure_id: id,
                name: id
                    .and_then(|id| ontology.get(id))
                    .map(|s| s.name.clone())
                    .unwrap_or_else(|| format!("label {value}")),
                voxels,
                volume_ml: voxels as f64 * voxel_ml,
                sagittal_slices: Some((first, last)),
                at_edge,
                flags: Vec::new(),
            }
        })
        .collect();

    // Bodies of implausible volume, against the scan's typical body: the upper quartile of its
    // body volumes, so a few fragments (a network's stray voxels named T10) neither drag the
    // reference down nor make the whole bodies look too large. Bodies cut by the field of view
    // are neither judged nor part of the reference.
    let kind_of = |r: &StructureRow| r.structure_id.and_then(|id| ontology.get(id)).map(|s| s.kind);
    let mut whole: Vec<f64> = rows
        .iter()
        .filter(|r| kind_of(r) == Some(StructureKind::Vertebra) && !r.at_edge)
        .map(|r| r.volume_ml)
        .collect();
    whole.sort_by(f64::total_cmp);
    if whole.len() >= 3 {
        let typical = whole[(3 * whole.len()) / 4];
        for r in rows.iter_mut().filter(|r| kind_of(r) == Some(StructureKind::Vertebra) && !r.at_edge) {
            if r.volume_ml * BODY_VOLUME_FACTOR < typical || r.volume_ml > typical * BODY_VOLUME_FACTOR {
                r.flags.push(format!("implausible volume ({:.1} mL, typical body {:.1} mL)", r.volume_ml, typical));
            }
        }
    }

    // Levels missing between two found ones, per kind (bodies, discs).
    let found: Vec<StructureId> = rows.iter().filter_map(|r| r.structure_id).collect();
    let mut missing_rows = Vec::new();
    for kind in [StructureKind::Vertebra, StructureKind::Disc] {
        let of_kind: Vec<StructureId> =
            found.iter().copied().filter(|&id| ontology.get(id).is_some_and(|s| s.kind == kind)).collect();
        let Some(&top) = of_kind.iter().min_by_key(|&&id| column_position(ontology, id)) else { continue };
        let bottom = *of_kind.iter().max_by_key(|&&id| column_position(ontology, id)).expect("non-empty");
        let mut next = ontology.same_kind_below(top);
        while let Some(id) = next.filter(|&id| id != bottom) {
            let is_kind = ontology.get(id).is_some_and(|s| s.kind == kind);
            if is_kind && !of_kind.contains(&id) && (segmented.is_empty() || segmented.contains(&id)) {
                let name = ontology.get(id).map(|s| s.name.clone()).unwrap_or_default();
                let (above, below) =
                    (neighbour_found(ontology, id, &of_kind, true), neighbour_found(ontology, id, &of_kind, false));
                missing_rows.push(StructureRow {
                    label: None,
                    structure_id: Some(id),
                    name,
                    voxels: 0,
                    volume_ml: 0.0,
                    sagittal_slices: None,
                    at_edge: false,
                    flags: vec![format!("missing between {above} and {below}")],
                });
            }
            next = ontology.same_kind_below(id);
        }
    }
    rows.extend(missing_rows);
    rows.sort_by_key(|r| (r.structure_id.map_or(u32::MAX, |id| column_position(ontology, id)), r.label));

    let mut flags = Vec::new();
    if let Some(reason) = levels.as_ref().and_then(|l| l.ambiguous.clone()) {
        flags.push(format!("ambiguous level count: {reason}"));
    }
    for r in &rows {
        flags.extend(r.flags.iter().map(|f| format!("{}: {f}", r.name)));
    }
    CaseStructures { case: case.to_string(), rows, levels, flags }
}

/// Order along the spine (top to bottom); structures off the column after it, by id.
fn column_position(ontology: &Ontology, id: StructureId) -> u32 {
    let mut steps = 0u32;
    let mut next = ontology.get(id).and_then(|s| s.above);
    while let Some(n) = next {
        steps += 1;
        next = ontology.get(n).and_then(|s| s.above);
    }
    let on_column = ontology.get(id).is_some_and(|s| s.above.is_some() || s.below.is_some());
    if on_column {
        steps
    } else {
        10_000 + id.0 as u32
    }
}

/// The nearest found structure of the list above (or below) `id`.
fn neighbour_found(ontology: &Ontology, id: StructureId, found: &[StructureId], above: bool) -> String {
    let mut next = if above { ontology.same_kind_above(id) } else { ontology.same_kind_below(id) };
    while let Some(n) = next {
        if found.contains(&n) {
            return ontology.get(n).map(|s| s.name.clone()).unwrap_or_default();
        }
        next = if above { ontology.same_kind_above(n) } else { ontology.same_kind_below(n) };
    }
    "?".to_string()
}

/// CSV header of [`write_structures_csv`].
pub const STRUCTURES_CSV_HEADER: &str =
    "case,structure,structure_id,label,voxels,volume_ml,first_sagittal_slice,last_sagittal_slice,at_edge,level_confidence,level_count_ambiguous,flags";

/// Writes the tables of several cases as one CSV (one row per structure, missing levels
/// included), atomically.
pub fn write_structures_csv(path: &Path, cases: &[CaseStructures]) -> Result<()> {
    let text = structures_csv(cases);
    spineseg_io::atomic::write_atomically(path, |w| w.write_all(text.as_bytes())).map_err(MetricsError::from)
}

/// The CSV text of [`write_structures_csv`].
pub fn structures_csv(cases: &[CaseStructures]) -> String {
    let mut out = String::from(STRUCTURES_CSV_HEADER);
    out.push('\n');
    let quote =
        |s: &str| if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() };
    for case in cases {
        let confidence = case.levels.as_ref().and_then(|l| l.confidence).map_or(String::new(), |c| format!("{c:.3}"));
        let ambiguous = case.levels.as_ref().map_or(String::new(), |l| l.ambiguous.is_some().to_string());
        for r in &case.rows {
            let (first, last) =
                r.sagittal_slices.map_or((String::new(), String::new()), |(a, b)| (a.to_string(), b.to_string()));
            out.push_str(&format!(
                "{},{},{},{},{},{:.3},{},{},{},{},{},{}\n",
                quote(&case.case),
                quote(&r.name),
                r.structure_id.map_or(String::new(), |id| id.0.to_string()),
                r.label.map_or(String::new(), |l| l.to_string()),
                r.voxels,
                r.volume_ml,
                first,
                last,
                r.at_edge,
                confidence,
                ambiguous,
                quote(&r.flags.join("; ")),
            ));
        }
    }
    out
}

/// A compact text table of one case: a line per structure.
pub fn format_case(case: &CaseStructures) -> String {
    let mut out = format!("{}:", case.case);
    if let Some(levels) = &case.levels {
        if let Some(c) = levels.confidence {
            out.push_str(&format!(" level confidence {c:.2}"));
        }
    }
    out.push('\n');
    out.push_str(&format!("  {:<22} {:>9} {:>15}  {}\n", "structure", "volume mL", "sagittal slices", "flags"));
    for r in &case.rows {
        let slices = r.sagittal_slices.map_or("-".to_string(), |(a, b)| format!("{a}..{b}"));
        out.push_str(&format!("  {:<22} {:>9.1} {:>15}  {}\n", r.name, r.volume_ml, slices, r.flags.join("; ")));
    }
    if let Some(reason) = case.levels.as_ref().and_then(|l| l.ambiguous.as_ref()) {
        out.push_str(&format!("  ambiguous level count: {reason}\n"));
    }
    out
}

/// What a case holds at a glance: the found bodies and discs as spans ("T12..L5 (6)", "" when
/// none) and the other structures found, by name.
pub fn found_spans(case: &CaseStructures) -> (String, String, Vec<String>) {
    let ontology = Ontology::standard();
    let kind = |r: &StructureRow| r.structure_id.and_then(|id| ontology.get(id)).map(|s| s.kind);
    let span = |kind_wanted: StructureKind| {
        let names: Vec<&str> = case.found().filter(|r| kind(r) == Some(kind_wanted)).map(|r| r.name.as_str()).collect();
        match names.as_slice() {
            [] => String::new(),
            [one] => one.to_string(),
            [first, .., last] => format!("{first}..{last} ({})", names.len()),
        }
    };
    let other = case
        .found()
        .filter(|r| !matches!(kind(r), Some(StructureKind::Vertebra | StructureKind::Disc)))
        .map(|r| r.name.clone())
        .collect();
    (span(StructureKind::Vertebra), span(StructureKind::Disc), other)
}

/// One line per case: what was found and the flags (for folders of many cases).
pub fn format_case_line(case: &CaseStructures) -> String {
    let (bodies, discs, others) = found_spans(case);
    let or_none = |s: String| if s.is_empty() { "none".to_string() } else { s };
    let confidence = case.levels.as_ref().and_then(|l| l.confidence).map_or("-".to_string(), |c| format!("{c:.2}"));
    let mut line = format!(
        "{}: bodies {}, discs {}{}; level confidence {}",
        case.case,
        or_none(bodies),
        or_none(discs),
        if others.is_empty() { String::new() } else { format!(", {}", others.join(", ")) },
        confidence
    );
    if !case.flags.is_empty() {
        line.push_str(&format!("; FLAGS: {}", case.flags.join("; ")));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use spineseg_io::geometry::{Geometry, Spacing};

    fn id(name: &str) -> StructureId {
        Ontology::standard().find_by_name(name).unwrap()
    }

    /// A sagittal stack: bodies as 4-slice-high blocks along z (voxel axis 2 = superior), x = LR.
    fn column(bodies: &[(&str, usize)], values: &BTreeMap<Label, StructureId>) -> Volume<Label> {
        let shape = [6, 6, 40];
        let mut v = Volume::filled(
            shape,
            0 as Label,
            Geometry { spacing: Spacing::new([2.0, 1.0, 1.0]).unwrap(), ..Geometry::default() },
        );
        let value_of = |name: &str| *values.iter().find(|(_, &s)| s == id(name)).unwrap().0;
        let mut z = 36;
        for &(name, height) in bodies {
            for k in z - height..z {
                for j in 1..5 {
                    for i in 1..5 {
                        v.set([i, j, k], value_of(name));
                    }
                }
            }
            z -= height + 1;
        }
        v
    }

    #[test]
    fn volumes_slices_missing_levels_and_implausible_bodies() {
        // Dataset values 1.. for T12..L5 and L3/L4 (not ontology ids).
        let values: BTreeMap<Label, StructureId> = ["T12", "L1", "L2", "L3", "L4", "L5", "L3/L4"]
            .iter()
            .enumerate()
            .map(|(i, n)| (i as Label + 1, id(n)))
            .collect();
        // L3 left out: missing between L2 and L4; L1 ten times smaller than the others.
        let labels = column(&[("T12", 5), ("L1", 1), ("L2", 5), ("L4", 5), ("L5", 5)], &values);
        let table =
            case_structures("c1", &labels, &values, &[], Some(LevelVerdict { confidence: Some(0.8), ambiguous: None }));
        let names: Vec<&str> = table.rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["T12", "L1", "L2", "L3", "L4", "L5"]);
        let l2 = &table.rows[2];
        // 4 x 4 x 5 voxels of 2 x 1 x 1 mm = 160 mm^3.
        assert_eq!((l2.voxels, l2.label), (80, Some(3)));
        assert!((l2.volume_ml - 0.16).abs() < 1e-12);
        // The sagittal axis is voxel axis 0 (x = left-right): slices 1..4.
        assert_eq!(l2.sagittal_slices, Some((1, 4)));
        let l3 = &table.rows[3];
        assert_eq!((l3.voxels, l3.label), (0, None));
        assert_eq!(l3.flags, ["missing between L2 and L4"]);
        assert!(table.rows[1].flags[0].starts_with("implausible volume"), "{:?}", table.rows[1]);
        assert!(table.rows.iter().filter(|r| !r.flags.is_empty()).count() == 2);
        assert_eq!(table.flags.len(), 2);
        assert!(table.flags[0].starts_with("L1: implausible"), "{:?}", table.flags);

        // A level the model does not segment is not "missing".
        let table = case_structures("c1", &labels, &values, &[id("T12"), id("L2"), id("L4")], None);
        assert!(table.rows.iter().all(|r| r.voxels > 0), "{:?}", table.rows);

        // CSV: header, one row per structure including the missing one, confidence repeated.
        let table = case_structures(
            "c1",
            &labels,
            &values,
            &[],
            Some(LevelVerdict { confidence: Some(0.8), ambiguous: Some("junction not in view".into()) }),
        );
        let csv = structures_csv(std::slice::from_ref(&table));
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], STRUCTURES_CSV_HEADER);
        assert_eq!(lines.len(), 7);
        assert_eq!(lines[4], "c1,L3,22,,0,0.000,,,false,0.800,true,missing between L2 and L4");
        assert!(table.flags[0].contains("ambiguous level count: junction not in view"));
        let line = format_case_line(&table);
        assert!(line.starts_with("c1: bodies T12..L5 (5), discs none; level confidence 0.80; FLAGS:"), "{line}");
    }

    #[test]
    fn bodies_at_the_edge_are_not_judged_and_unknown_values_are_named_by_value() {
        let values: BTreeMap<Label, StructureId> =
            ["L1", "L2", "L3", "L4"].iter().enumerate().map(|(i, n)| (i as Label + 1, id(n))).collect();
        let mut labels = column(&[("L1", 1), ("L2", 5), ("L3", 5), ("L4", 5)], &values);
        // L1 (1 slice high, at z 35) grows to the top edge: cut by the field of view.
        for k in 35..40 {
            labels.set([2, 2, k], 1);
        }
        labels.set([0, 0, 0], 77);
        let table = case_structures("c2", &labels, &values, &[], None);
        assert!(table.rows.iter().all(|r| r.flags.is_empty()), "{:?}", table.rows);
        assert!(table.rows[0].at_edge && table.rows[0].name == "L1");
        assert_eq!(table.rows.last().unwrap().name, "label 77");
    }
}
