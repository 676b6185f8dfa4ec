//! Per-disc tables: SPIDER's radiological gradings (`gradings.csv` of spider-gradings) and
//! spineseg's own findings CSV (what `spineseg diagnose` writes and `spineseg evaluate-findings`
//! reads as `--pred` or `--ref`).
//!
//! Levels are ontology disc ids (`100 + vertebra above`), parsed with the ontology's name parser
//! (`Ontology::find_by_name`: "L4L5", "L4/L5", "L5-S1", "T12L1"), never a hand table; the findings
//! CSV writes a disc's short ontology name ("L4/L5", "L5/S1"), which that parser reads back.
//!
//! # The findings CSV
//! ```text
//! case,level,found,p_disc_herniation,p_disc_narrowing,p_disc_bulging,p_spondylolisthesis,
//! p_modic_change,disc_herniation,disc_narrowing,disc_bulging,spondylolisthesis,modic_change,
//! pfirrmann_grade,p_pfirrmann_1,p_pfirrmann_2,p_pfirrmann_3,p_pfirrmann_4,p_pfirrmann_5
//! ```
//! (one line). One row per (case, level). `found` = 0: the level was not found in the image and
//! every later column is empty (ignored on reading). The 0/1 columns are the decisions (the
//! model's thresholds already applied), `pfirrmann_grade` is 1..=5. A reference file may leave out
//! `found` (then 1) and every `p_` column; columns are found by name, extra columns are ignored.
//! In a row either all ten `p_` cells are filled or none.

use crate::error::{FindingsError, Result};
use crate::finding::{DiscFindings, Finding, FindingProbabilities};
use serde::{Deserialize, Serialize};
use spineseg_anatomy::{Ontology, StructureId, StructureKind};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// SPIDER's grading of one disc.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiscGrading {
    /// SPIDER's patient number, as written in the file ("1", "107").
    pub patient: String,
    /// The disc's ontology id (e.g. 123 = L4/L5).
    pub level: StructureId,
    pub findings: DiscFindings,
}

/// A SPIDER `gradings.csv` as read.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GradingsTable {
    pub discs: Vec<DiscGrading>,
    /// Rows with an empty `level` (SPIDER's IVD label 0: an extra lumbosacral disc of
    /// transitional anatomy, which has no level name): skipped, counted here.
    pub skipped_without_level: usize,
}

impl GradingsTable {
    /// The gradings as findings rows (case = patient, found), e.g. to evaluate against.
    pub fn to_rows(&self) -> Vec<FindingsRow> {
        self.discs
            .iter()
            .map(|d| FindingsRow {
                case: d.patient.clone(),
                level: d.level,
                findings: Some(d.findings),
                probabilities: None,
            })
            .collect()
    }
}

/// One row of a findings CSV: one disc level of one case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingsRow {
    pub case: String,
    /// The disc's ontology id.
    pub level: StructureId,
    /// The decisions and Pfirrmann grade; `None` when the level was not found (`found` = 0).
    pub findings: Option<DiscFindings>,
    /// The model's probabilities; `None` in reference files and for levels not found (a writer
    /// ignores them when `findings` is `None`).
    pub probabilities: Option<FindingProbabilities>,
}

impl FindingsRow {
    /// A level the model looked for and did not find.
    pub fn not_found(case: impl Into<String>, level: StructureId) -> FindingsRow {
        FindingsRow { case: case.into(), level, findings: None, probabilities: None }
    }

    /// Whether the level was found (the `found` column).
    pub fn found(&self) -> bool {
        self.findings.is_some()
    }
}

/// Which format `read_reference` recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceFormat {
    SpiderGradings,
    FindingsCsv,
}

/// A reference table read by [`read_reference`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceTable {
    pub format: ReferenceFormat,
    pub rows: Vec<FindingsRow>,
    /// SPIDER rows without a level name (0 for a findings CSV).
    pub skipped_without_level: usize,
}

/// The column names of the findings CSV, in the order [`write_findings_csv`] writes them.
pub fn findings_csv_header() -> Vec<String> {
    let mut header = vec!["case".to_string(), "level".to_string(), "found".to_string()];
    header.extend(Finding::ALL.iter().map(|f| format!("p_{}", f.key())));
    header.extend(Finding::ALL.iter().map(|f| f.key().to_string()));
    header.push("pfirrmann_grade".to_string());
    header.extend((1..=5).map(|g| format!("p_pfirrmann_{g}")));
    header
}

/// The short ontology name of a disc ("L4/L5"), the form the findings CSV writes; the id itself
/// if the ontology does not know it.
pub fn level_name(level: StructureId) -> String {
    Ontology::standard().get(level).map(|s| s.name.clone()).unwrap_or_else(|| level.to_string())
}

/// Parses a disc level with the ontology ("L4L5", "L4/L5", "L5-S1", "T12L1"); `None` unless it
/// names a disc.
pub fn parse_disc_level(name: &str) -> Option<StructureId> {
    let ontology = Ontology::standard();
    let id = ontology.find_by_name(name)?;
    (ontology.get(id)?.kind == StructureKind::Disc).then_some(id)
}

/// A CSV file being read: its path, header and column positions, for errors that name the file,
/// line and column.
struct Table {
    path: PathBuf,
    columns: HashMap<String, usize>,
    header: csv::StringRecord,
    reader: csv::Reader<std::fs::File>,
}

impl Table {
    fn open(path: &Path) -> Result<Table> {
        let file =
            std::fs::File::open(path).map_err(|source| FindingsError::Os { path: path.to_path_buf(), source })?;
        let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(file);
        let header = reader.headers().map_err(|e| csv_error(path, e))?.clone();
        let columns = header.iter().enumerate().map(|(i, name)| (name.to_string(), i)).collect();
        Ok(Table { path: path.to_path_buf(), columns, header, reader })
    }

    fn header_text(&self) -> String {
        self.header.iter().collect::<Vec<_>>().join(",")
    }

    fn has(&self, column: &str) -> bool {
        self.columns.contains_key(column)
    }

    fn require(&self, column: &str) -> Result<usize> {
        self.columns.get(column).copied().ok_or_else(|| FindingsError::MissingColumn {
            path: self.path.clone(),
            column: column.to_string(),
            header: self.header_text(),
        })
    }

    /// The data records with their 1-based line numbers.
    fn records(&mut self) -> Result<Vec<(u64, csv::StringRecord)>> {
        let mut out = Vec::new();
        for record in self.reader.records() {
            let record = record.map_err(|e| csv_error(&self.path, e))?;
            let line = record.position().map(|p| p.line()).unwrap_or(0);
            out.push((line, record));
        }
        Ok(out)
    }
}

fn csv_error(path: &Path, error: csv::Error) -> FindingsError {
    let line = error.position().map(|p| p.line()).unwrap_or(1);
    FindingsError::Csv { path: path.to_path_buf(), line, detail: error.to_string() }
}

/// One cell of a record, with what errors about it need.
struct Cell<'a> {
    path: &'a Path,
    line: u64,
    column: &'a str,
    text: &'a str,
}

impl Cell<'_> {
    fn invalid(&self, detail: String) -> FindingsError {
        FindingsError::InvalidValue {
            path: self.path.to_path_buf(),
            line: self.line,
            column: self.column.to_string(),
            detail,
        }
    }

    fn integer_in(&self, range: std::ops::RangeInclusive<u8>) -> Result<u8> {
        let value = self.text.parse::<u8>().ok().filter(|v| range.contains(v));
        value.ok_or_else(|| {
            self.invalid(format!("'{}' is not an integer in {}..={}", self.text, range.start(), range.end()))
        })
    }

    fn flag(&self) -> Result<bool> {
        match self.text {
            "0" => Ok(false),
            "1" => Ok(true),
            other => Err(self.invalid(format!("'{other}' is not 0 or 1"))),
        }
    }

    fn probability(&self) -> Result<f32> {
        let value = self.text.parse::<f32>().ok().filter(|p| (0.0..=1.0).contains(p));
        value.ok_or_else(|| self.invalid(format!("'{}' is not a probability in [0, 1]", self.text)))
    }

    fn disc_level(&self) -> Result<StructureId> {
        parse_disc_level(self.text).ok_or_else(|| {
            self.invalid(format!("'{}' is not an intervertebral disc level (e.g. L4/L5, L4L5, L5S1)", self.text))
        })
    }
}

/// One data record of a table and its line.
struct Row<'a> {
    path: &'a Path,
    record: &'a csv::StringRecord,
    line: u64,
}

impl<'a> Row<'a> {
    /// The cell at `index` (an empty string past the end), named `column` in errors.
    fn cell(&self, column: &'a str, index: usize) -> Cell<'a> {
        Cell { path: self.path, line: self.line, column, text: self.record.get(index).unwrap_or("") }
    }
}

/// Remembers the first line of each (case, level) to refuse duplicates.
struct Seen {
    first_line: HashMap<(String, StructureId), u64>,
}

impl Seen {
    fn new() -> Seen {
        Seen { first_line: HashMap::new() }
    }

    fn check(&mut self, path: &Path, line: u64, case: &str, level: StructureId) -> Result<()> {
        if let Some(&first_line) = self.first_line.get(&(case.to_string(), level)) {
            return Err(FindingsError::DuplicateLevel {
                path: path.to_path_buf(),
                line,
                first_line,
                case: case.to_string(),
                level: level_name(level),
            });
        }
        self.first_line.insert((case.to_string(), level), line);
        Ok(())
    }
}

/// The SPIDER columns that hold the five findings, in [`Finding::ALL`] order (Modic is a type
/// 0..=3, the others 0/1).
fn spider_column(finding: Finding) -> &'static str {
    match finding {
        Finding::DiscHerniation => "disc_herniation",
        Finding::DiscNarrowing => "disc_narrowing",
        Finding::DiscBulging => "disc_bulging",
        Finding::Spondylolisthesis => "spondylolisthesis",
        Finding::ModicChange => "modic",
    }
}

/// Reads SPIDER's gradings (spider-gradings `gradings.csv`). Modic change = Modic type 1..=3;
/// the endplate-change columns and `level_note` are not read. Rows with an empty `level` (IVD
/// label 0) are skipped and counted; an empty level with another IVD label, an unknown level, a
/// value out of range or a repeated (patient, level) is an error naming the file, line and column.
pub fn read_spider_gradings(path: &Path) -> Result<GradingsTable> {
    let mut table = Table::open(path)?;
    read_spider_table(&mut table)
}

fn read_spider_table(table: &mut Table) -> Result<GradingsTable> {
    let patient_col = table.require("patient")?;
    let ivd_col = table.require("ivd_label")?;
    let level_col = table.require("level")?;
    let finding_cols: Vec<usize> =
        Finding::ALL.iter().map(|&f| table.require(spider_column(f))).collect::<Result<_>>()?;
    let pfirrmann_col = table.require("pfirrmann_grade")?;
    let mut out = GradingsTable::default();
    let mut seen = Seen::new();
    for (line, record) in table.records()? {
        let row = Row { path: &table.path, record: &record, line };
        let at = |column: &'static str, index: usize| row.cell(column, index);
        let patient = at("patient", patient_col).text.to_string();
        if patient.is_empty() {
            return Err(at("patient", patient_col).invalid("empty patient".to_string()));
        }
        let level_cell = at("level", level_col);
        if level_cell.text.is_empty() {
            let ivd = at("ivd_label", ivd_col);
            if ivd.text != "0" {
                return Err(level_cell
                    .invalid(format!("empty level, but ivd_label is '{}' (only label 0 has no level)", ivd.text)));
            }
            out.skipped_without_level += 1;
            continue;
        }
        let level = level_cell.disc_level()?;
        let mut present = [false; 5];
        for (finding, &index) in Finding::ALL.iter().zip(&finding_cols) {
            let c = at(spider_column(*finding), index);
            present[finding.index()] = match finding {
                Finding::ModicChange => c.integer_in(0..=3)? > 0,
                _ => c.flag()?,
            };
        }
        let pfirrmann = at("pfirrmann_grade", pfirrmann_col).integer_in(1..=5)?;
        seen.check(&table.path, line, &patient, level)?;
        out.discs.push(DiscGrading { patient, level, findings: DiscFindings { present, pfirrmann } });
    }
    Ok(out)
}

/// Reads a spineseg findings CSV (see the module documentation for the columns).
pub fn read_findings_csv(path: &Path) -> Result<Vec<FindingsRow>> {
    let mut table = Table::open(path)?;
    read_findings_table(&mut table)
}

fn read_findings_table(table: &mut Table) -> Result<Vec<FindingsRow>> {
    let case_col = table.require("case")?;
    let level_col = table.require("level")?;
    let found_col = if table.has("found") { Some(table.require("found")?) } else { None };
    let decision_cols: Vec<usize> = Finding::ALL.iter().map(|f| table.require(f.key())).collect::<Result<_>>()?;
    let pfirrmann_col = table.require("pfirrmann_grade")?;
    let p_names: Vec<String> = Finding::ALL
        .iter()
        .map(|f| format!("p_{}", f.key()))
        .chain((1..=5).map(|g| format!("p_pfirrmann_{g}")))
        .collect();
    // The p_ columns come all together or not at all.
    let p_cols: Option<Vec<usize>> = if p_names.iter().any(|name| table.has(name)) {
        Some(p_names.iter().map(|name| table.require(name)).collect::<Result<_>>()?)
    } else {
        None
    };
    let mut rows = Vec::new();
    let mut seen = Seen::new();
    for (line, record) in table.records()? {
        let row = Row { path: &table.path, record: &record, line };
        let at = |column: &'static str, index: usize| row.cell(column, index);
        let case = at("case", case_col).text.to_string();
        if case.is_empty() {
            return Err(at("case", case_col).invalid("empty case".to_string()));
        }
        let level = at("level", level_col).disc_level()?;
        seen.check(&table.path, line, &case, level)?;
        let found = match found_col {
            Some(index) => at("found", index).flag()?,
            None => true,
        };
        if !found {
            rows.push(FindingsRow::not_found(case, level));
            continue;
        }
        let mut present = [false; 5];
        for (finding, &index) in Finding::ALL.iter().zip(&decision_cols) {
            present[finding.index()] = at(finding.key(), index).flag()?;
        }
        let pfirrmann = at("pfirrmann_grade", pfirrmann_col).integer_in(1..=5)?;
        let probabilities = match &p_cols {
            None => None,
            Some(cols) => {
                let cells: Vec<Cell> = cols.iter().zip(&p_names).map(|(&i, name)| row.cell(name, i)).collect();
                if cells.iter().all(|c| c.text.is_empty()) {
                    None
                } else {
                    let values: Vec<f32> = cells.iter().map(|c| c.probability()).collect::<Result<_>>()?;
                    Some(FindingProbabilities {
                        p: std::array::from_fn(|i| values[i]),
                        pfirrmann_probabilities: std::array::from_fn(|i| values[5 + i]),
                    })
                }
            }
        };
        rows.push(FindingsRow { case, level, findings: Some(DiscFindings { present, pfirrmann }), probabilities });
    }
    Ok(rows)
}

/// Reads a reference table in either format, recognised by its header: `patient` + `ivd_label`
/// = SPIDER gradings, `case` + `level` = a findings CSV.
pub fn read_reference(path: &Path) -> Result<ReferenceTable> {
    let mut table = Table::open(path)?;
    if table.has("patient") && table.has("ivd_label") {
        let gradings = read_spider_table(&mut table)?;
        Ok(ReferenceTable {
            format: ReferenceFormat::SpiderGradings,
            rows: gradings.to_rows(),
            skipped_without_level: gradings.skipped_without_level,
        })
    } else if table.has("case") && table.has("level") {
        let rows = read_findings_table(&mut table)?;
        Ok(ReferenceTable { format: ReferenceFormat::FindingsCsv, rows, skipped_without_level: 0 })
    } else {
        Err(FindingsError::UnknownFormat { path: table.path.clone(), header: table.header_text() })
    }
}

/// Writes a findings CSV atomically (temporary file, then rename). Probabilities are written with
/// Rust's shortest round-trip formatting, so reading gives back the same `f32`s; rows without
/// probabilities leave the `p_` cells empty, rows not found leave every cell after `found` empty.
pub fn write_findings_csv(path: &Path, rows: &[FindingsRow]) -> Result<()> {
    spineseg_io::atomic::write_atomically(path, |w| {
        let mut writer = csv::Writer::from_writer(w);
        writer.write_record(findings_csv_header())?;
        for row in rows {
            writer.write_record(findings_record(row))?;
        }
        writer.flush()
    })?;
    Ok(())
}

fn findings_record(row: &FindingsRow) -> Vec<String> {
    let mut cells = vec![row.case.clone(), level_name(row.level)];
    let Some(findings) = &row.findings else {
        cells.push("0".to_string());
        cells.resize(findings_csv_header().len(), String::new());
        return cells;
    };
    cells.push("1".to_string());
    let probability = |p: Option<f32>| p.map(|p| p.to_string()).unwrap_or_default();
    let probs = row.probabilities.as_ref();
    cells.extend((0..5).map(|i| probability(probs.map(|q| q.p[i]))));
    cells.extend(findings.present.iter().map(|&b| if b { "1" } else { "0" }.to_string()));
    cells.push(findings.pfirrmann.to_string());
    cells.extend((0..5).map(|i| probability(probs.map(|q| q.pfirrmann_probabilities[i]))));
    cells
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    const SPIDER_HEADER: &str = "patient,ivd_label,level,modic,upper_endplate_change,lower_endplate_change,spondylolisthesis,disc_herniation,disc_narrowing,disc_bulging,pfirrmann_grade,level_note\n";

    #[test]
    fn levels_parse_through_the_ontology() {
        assert_eq!(parse_disc_level("L5S1"), Some(StructureId(124)));
        assert_eq!(parse_disc_level("L4L5"), Some(StructureId(123)));
        assert_eq!(parse_disc_level("L4/L5"), Some(StructureId(123)));
        assert_eq!(parse_disc_level("T12L1"), Some(StructureId(119)));
        assert_eq!(parse_disc_level("T9T10"), Some(StructureId(116)));
        assert_eq!(parse_disc_level("L4"), None, "a vertebra is not a disc level");
        assert_eq!(parse_disc_level("L4L6"), None);
        for id in [116, 119, 123, 124] {
            assert_eq!(parse_disc_level(&level_name(StructureId(id))), Some(StructureId(id)));
        }
        assert_eq!(level_name(StructureId(124)), "L5/S1");
    }

    #[test]
    fn reads_spider_gradings() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{SPIDER_HEADER}1,1,L5S1,2,1,1,0,1,1,1,4,\n1,2,L4L5,0,0,0,1,0,0,0,2,\n107,0,,0,0,0,0,0,0,0,3,transitional\n2,6,T12L1,1,0,0,0,0,0,1,1,\n"
        );
        let path = write(dir.path(), "gradings.csv", &text);
        let table = read_spider_gradings(&path).unwrap();
        assert_eq!(table.skipped_without_level, 1);
        assert_eq!(table.discs.len(), 3);
        let first = &table.discs[0];
        assert_eq!((first.patient.as_str(), first.level), ("1", StructureId(124)));
        // herniation, narrowing, bulging, spondylolisthesis, Modic 2 > 0
        assert_eq!(first.findings.present, [true, true, true, false, true]);
        assert_eq!(first.findings.pfirrmann, 4);
        assert_eq!(table.discs[1].findings.present, [false, false, false, true, false]);
        assert_eq!(table.discs[2].level, StructureId(119));
        assert_eq!(table.discs[2].findings.present, [false, false, true, false, true]);
    }

    #[test]
    fn spider_errors_name_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let bad_grade = write(
            dir.path(),
            "a.csv",
            &format!("{SPIDER_HEADER}1,1,L5S1,0,0,0,0,0,0,0,4,\n1,2,L4L5,0,0,0,0,0,0,0,6,\n"),
        );
        let message = read_spider_gradings(&bad_grade).unwrap_err().to_string();
        assert!(
            message.contains("a.csv") && message.contains("line 3") && message.contains("pfirrmann_grade"),
            "{message}"
        );

        let bad_level = write(dir.path(), "b.csv", &format!("{SPIDER_HEADER}1,1,L5L7,0,0,0,0,0,0,0,4,\n"));
        let message = read_spider_gradings(&bad_level).unwrap_err().to_string();
        assert!(message.contains("b.csv") && message.contains("line 2") && message.contains("'level'"), "{message}");

        let bad_flag = write(dir.path(), "c.csv", &format!("{SPIDER_HEADER}1,1,L5S1,0,0,0,0,2,0,0,4,\n"));
        let message = read_spider_gradings(&bad_flag).unwrap_err().to_string();
        assert!(message.contains("disc_herniation"), "{message}");

        let missing = write(dir.path(), "d.csv", "patient,ivd_label,level\n1,1,L5S1\n");
        let message = read_spider_gradings(&missing).unwrap_err().to_string();
        assert!(message.contains("d.csv") && message.contains("missing column 'disc_herniation'"), "{message}");

        let duplicate = write(
            dir.path(),
            "e.csv",
            &format!("{SPIDER_HEADER}1,1,L5S1,0,0,0,0,0,0,0,4,\n1,1,L5/S1,0,0,0,0,0,0,0,4,\n"),
        );
        let message = read_spider_gradings(&duplicate).unwrap_err().to_string();
        assert!(message.contains("line 3") && message.contains("line 2"), "{message}");

        let empty_level = write(dir.path(), "f.csv", &format!("{SPIDER_HEADER}1,3,,0,0,0,0,0,0,0,4,\n"));
        assert!(read_spider_gradings(&empty_level).unwrap_err().to_string().contains("ivd_label is '3'"));

        let absent = dir.path().join("absent.csv");
        assert!(read_spider_gradings(&absent).unwrap_err().to_string().contains("absent.csv"));
    }

    fn sample_rows() -> Vec<FindingsRow> {
        vec![
            FindingsRow {
                case: "1".to_string(),
                level: StructureId(123),
                findings: Some(DiscFindings { present: [true, false, true, false, false], pfirrmann: 3 }),
                probabilities: Some(FindingProbabilities {
                    p: [0.9, 0.1, 0.75, 1e-7, 0.333_333_34],
                    pfirrmann_probabilities: [0.05, 0.15, 0.6, 0.15, 0.05],
                }),
            },
            FindingsRow::not_found("1", StructureId(124)),
            FindingsRow {
                case: "case 2, sagittal".to_string(),
                level: StructureId(119),
                findings: Some(DiscFindings { present: [false, true, false, true, true], pfirrmann: 5 }),
                probabilities: None,
            },
        ]
    }

    #[test]
    fn findings_csv_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("findings.csv");
        let rows = sample_rows();
        write_findings_csv(&path, &rows).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], findings_csv_header().join(","));
        assert_eq!(lines[2], "1,L5/S1,0,,,,,,,,,,,,,,,,");
        assert!(lines[1].starts_with("1,L4/L5,1,0.9,0.1,0.75,0.0000001,0.33333334,1,0,1,0,0,3,0.05,"), "{}", lines[1]);
        assert_eq!(read_findings_csv(&path).unwrap(), rows);
        let reference = read_reference(&path).unwrap();
        assert_eq!(reference.format, ReferenceFormat::FindingsCsv);
        assert_eq!(reference.rows, rows);
    }

    #[test]
    fn reference_without_probabilities_or_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "ref.csv",
            "case,level,disc_herniation,disc_narrowing,disc_bulging,spondylolisthesis,modic_change,pfirrmann_grade,note\nA,L4-L5,1,0,0,0,1,2,x\n",
        );
        let rows = read_reference(&path).unwrap().rows;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].level, StructureId(123));
        assert_eq!(rows[0].findings, Some(DiscFindings { present: [true, false, false, false, true], pfirrmann: 2 }));
        assert_eq!(rows[0].probabilities, None);
    }

    #[test]
    fn reference_detects_spider_and_refuses_other_headers() {
        let dir = tempfile::tempdir().unwrap();
        let spider = write(
            dir.path(),
            "gradings.csv",
            &format!("{SPIDER_HEADER}1,1,L5S1,0,0,0,0,0,0,0,4,\n152,0,,0,0,0,0,0,0,0,3,x\n"),
        );
        let reference = read_reference(&spider).unwrap();
        assert_eq!(reference.format, ReferenceFormat::SpiderGradings);
        assert_eq!(reference.skipped_without_level, 1);
        assert_eq!(reference.rows[0].case, "1");
        let other = write(dir.path(), "other.csv", "a,b\n1,2\n");
        let message = read_reference(&other).unwrap_err().to_string();
        assert!(message.contains("other.csv") && message.contains("a,b"), "{message}");
    }

    #[test]
    fn findings_csv_errors() {
        let dir = tempfile::tempdir().unwrap();
        let header = findings_csv_header().join(",");
        // Some p_ cells filled, others empty.
        let partial = write(dir.path(), "partial.csv", &format!("{header}\nA,L4/L5,1,0.5,,,,,0,0,0,0,0,1,,,,,\n"));
        let message = read_findings_csv(&partial).unwrap_err().to_string();
        assert!(
            message.contains("partial.csv") && message.contains("line 2") && message.contains("p_disc_narrowing"),
            "{message}"
        );
        // A p_ column set that is incomplete.
        let missing = write(dir.path(), "missing.csv", "case,level,p_disc_herniation,disc_herniation,disc_narrowing,disc_bulging,spondylolisthesis,modic_change,pfirrmann_grade\n");
        let message = read_findings_csv(&missing).unwrap_err().to_string();
        assert!(message.contains("missing column 'p_disc_narrowing'"), "{message}");
        let out_of_range =
            write(dir.path(), "range.csv", &format!("{header}\nA,L4/L5,1,1.5,0,0,0,0,0,0,0,0,0,1,0,0,0,0,1\n"));
        assert!(read_findings_csv(&out_of_range).unwrap_err().to_string().contains("probability"));
        let ragged = write(dir.path(), "ragged.csv", &format!("{header}\nA,L4/L5,1\n"));
        let message = read_findings_csv(&ragged).unwrap_err().to_string();
        assert!(message.contains("ragged.csv") && message.contains("line 2"), "{message}");
    }
}
