//! The anatomy ontology: one stable id per spinal structure, onto which every dataset is mapped.
//!
//! # Ids (stable; stored in label files, plans and model folders, never renumbered)
//! - Vertebrae use the VerSe / TPTBox (SPINEPS) numbering: C1..C7 = 1..7, T1..T12 = 8..19,
//!   L1..L5 = 20..24, sacrum = 26, coccyx = 27. (25 = L6 and 28 = T13 are reserved for
//!   transitional vertebrae and not defined yet.)
//! - An intervertebral disc is 100 + the id of the vertebra above it: C2/C3 = 102, T12/L1 = 119,
//!   L4/L5 = 123, L5/S1 = 124. This is SPINEPS's rule, so its masks map one to one.
//! - Spinal cord = 60, spinal canal = 61 (SPINEPS subregion values); posterior elements (arch and
//!   processes of all levels together) = 40.
//!
//! All ids fit in `u8`, so label files in the ontology stay small and every viewer opens them.
//!
//! A "vertebra" structure means the vertebra at that level; datasets differ in whether their
//! masks cover the vertebral body only (lumbar-real, SPINEPS after combining its masks, our
//! phantoms) or the whole bone (SPIDER; MRSpineSeg by default, unverified). Dataset adapters
//! record which, see `crate::datasets::VertebraExtent`.

use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// Stable id of a structure in the ontology (also its label value in spineseg's own files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StructureId(pub u16);

impl std::fmt::Display for StructureId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Spinal region of a vertebra.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Region {
    Cervical,
    Thoracic,
    Lumbar,
    Sacral,
    Coccygeal,
}

/// A vertebral level, e.g. L4. The sacrum is `Sacral 1` (its S1 segment carries the L5/S1 disc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Level {
    pub region: Region,
    pub number: u8,
}

impl Level {
    pub const fn new(region: Region, number: u8) -> Self {
        Level { region, number }
    }
    /// Short name: "C7", "T12", "L4", "S1", "Co1".
    pub fn short_name(&self) -> String {
        let prefix = match self.region {
            Region::Cervical => "C",
            Region::Thoracic => "T",
            Region::Lumbar => "L",
            Region::Sacral => "S",
            Region::Coccygeal => "Co",
        };
        format!("{prefix}{}", self.number)
    }
}

/// What kind of structure an id denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StructureKind {
    /// A vertebra at one level (its body, or the whole bone, depending on the dataset).
    Vertebra,
    /// The sacrum (fused S1-S5), the bottom of the lumbar chain.
    Sacrum,
    Coccyx,
    /// The intervertebral disc between two vertebrae.
    Disc,
    SpinalCanal,
    SpinalCord,
    /// Vertebral arches and processes, all levels together.
    PosteriorElements,
}

impl StructureKind {
    pub fn description(self) -> &'static str {
        match self {
            StructureKind::Vertebra => "vertebral body",
            StructureKind::Sacrum => "sacrum",
            StructureKind::Coccyx => "coccyx",
            StructureKind::Disc => "intervertebral disc",
            StructureKind::SpinalCanal => "spinal canal",
            StructureKind::SpinalCord => "spinal cord",
            StructureKind::PosteriorElements => "posterior elements",
        }
    }
}

/// One structure of the ontology.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Structure {
    pub id: StructureId,
    pub kind: StructureKind,
    /// Short canonical name: "L4", "L4/L5", "sacrum", "spinal canal".
    pub name: String,
    /// Human readable name: "L4 vertebral body", "L4/L5 intervertebral disc".
    pub display_name: String,
    /// The vertebral level; for a disc, the level of the vertebra above it.
    pub level: Option<Level>,
    /// The next structure up the spinal column (for a vertebra, the disc above it).
    pub above: Option<StructureId>,
    /// The next structure down the spinal column (for a disc, the vertebra below it).
    pub below: Option<StructureId>,
    /// Display colour (sRGB).
    pub colour: [u8; 3],
}

/// The set of structures spineseg knows.
#[derive(Debug, Clone)]
pub struct Ontology {
    structures: Vec<Structure>,
}

pub const SPINAL_CORD: StructureId = StructureId(60);
pub const SPINAL_CANAL: StructureId = StructureId(61);
pub const POSTERIOR_ELEMENTS: StructureId = StructureId(40);
pub const SACRUM: StructureId = StructureId(26);
pub const COCCYX: StructureId = StructureId(27);

/// The vertebral column from top to bottom (C1 .. coccyx), the chain that discs sit in.
fn column_levels() -> Vec<(StructureId, Level)> {
    let mut out = Vec::new();
    for n in 1..=7 {
        out.push((StructureId(n as u16), Level::new(Region::Cervical, n)));
    }
    for n in 1..=12 {
        out.push((StructureId(7 + n as u16), Level::new(Region::Thoracic, n)));
    }
    for n in 1..=5 {
        out.push((StructureId(19 + n as u16), Level::new(Region::Lumbar, n)));
    }
    out.push((SACRUM, Level::new(Region::Sacral, 1)));
    out.push((COCCYX, Level::new(Region::Coccygeal, 1)));
    out
}

/// Colour of the `index`-th structure along the column: hues step by the golden angle so that
/// neighbouring levels (L4 vs L5, a disc vs the body above it) always get clearly different colours.
fn colour_along(index: usize, is_disc: bool) -> [u8; 3] {
    let hue = (index as f64 * 137.508) % 360.0;
    if is_disc {
        hsv_to_rgb(hue, 0.55, 1.0)
    } else {
        hsv_to_rgb(hue, 0.9, 0.9)
    }
}

fn hsv_to_rgb(h: f64, s: f64, v: f64) -> [u8; 3] {
    let c = v * s;
    let x = c * (1.0 - ((h / 60.0) % 2.0 - 1.0).abs());
    let m = v - c;
    let (r, g, b) = match (h / 60.0) as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    [r, g, b].map(|u| ((u + m) * 255.0).round() as u8)
}

impl Ontology {
    /// The standard spine ontology (built once).
    pub fn standard() -> &'static Ontology {
        static ONTOLOGY: OnceLock<Ontology> = OnceLock::new();
        ONTOLOGY.get_or_init(Ontology::build)
    }

    fn build() -> Ontology {
        let column = column_levels();
        let mut structures = Vec::new();
        // Alternating chain: vertebra, disc below it, next vertebra, ... No disc between C1 and
        // C2 (the atlanto-axial joint has none) and none below the sacrum in this ontology.
        let mut chain: Vec<StructureId> = Vec::new();
        for (index, (id, level)) in column.iter().enumerate() {
            let (kind, name, display_name) = match level.region {
                Region::Sacral => (StructureKind::Sacrum, "sacrum".to_string(), "sacrum".to_string()),
                Region::Coccygeal => (StructureKind::Coccyx, "coccyx".to_string(), "coccyx".to_string()),
                _ => {
                    let n = level.short_name();
                    (StructureKind::Vertebra, n.clone(), format!("{n} vertebral body"))
                }
            };
            structures.push(Structure {
                id: *id,
                kind,
                name,
                display_name,
                level: Some(*level),
                above: None,
                below: None,
                colour: colour_along(chain.len(), false),
            });
            chain.push(*id);
            let has_disc_below = *id != StructureId(1) && level.region != Region::Sacral && level.region != Region::Coccygeal;
            if has_disc_below {
                let (_, next_level) = column[index + 1];
                let upper = level.short_name();
                let lower = match next_level.region {
                    Region::Sacral => "S1".to_string(),
                    _ => next_level.short_name(),
                };
                let disc = StructureId(100 + id.0);
                let name = format!("{upper}/{lower}");
                structures.push(Structure {
                    id: disc,
                    kind: StructureKind::Disc,
                    display_name: format!("{name} intervertebral disc"),
                    name,
                    level: Some(*level),
                    above: None,
                    below: None,
                    colour: colour_along(chain.len(), true),
                });
                chain.push(disc);
            }
        }
        for pair in chain.windows(2) {
            let (upper, lower) = (pair[0], pair[1]);
            structures.iter_mut().find(|s| s.id == upper).expect("chain ids are structures").below = Some(lower);
            structures.iter_mut().find(|s| s.id == lower).expect("chain ids are structures").above = Some(upper);
        }
        for (id, kind, name, colour) in [
            (POSTERIOR_ELEMENTS, StructureKind::PosteriorElements, "posterior elements", [150, 150, 110]),
            (SPINAL_CORD, StructureKind::SpinalCord, "spinal cord", [255, 255, 255]),
            (SPINAL_CANAL, StructureKind::SpinalCanal, "spinal canal", [250, 230, 40]),
        ] {
            structures.push(Structure {
                id,
                kind,
                name: name.to_string(),
                display_name: name.to_string(),
                level: None,
                above: None,
                below: None,
                colour,
            });
        }
        structures.sort_by_key(|s| s.id);
        Ontology { structures }
    }

    pub fn structures(&self) -> &[Structure] {
        &self.structures
    }

    pub fn get(&self, id: StructureId) -> Option<&Structure> {
        self.structures.binary_search_by_key(&id, |s| s.id).ok().map(|i| &self.structures[i])
    }

    /// The vertebra (or sacrum/coccyx) at a level.
    pub fn vertebra(&self, level: Level) -> Option<StructureId> {
        self.structures
            .iter()
            .find(|s| s.level == Some(level) && s.kind != StructureKind::Disc)
            .map(|s| s.id)
    }

    /// The disc directly below the vertebra at `upper`.
    pub fn disc_below(&self, upper: Level) -> Option<StructureId> {
        let vertebra = self.get(self.vertebra(upper)?)?;
        let disc = self.get(vertebra.below?)?;
        (disc.kind == StructureKind::Disc).then_some(disc.id)
    }

    /// The nearest structure of the same kind above (e.g. L3 for L4, L3/L4 for L4/L5).
    pub fn same_kind_above(&self, id: StructureId) -> Option<StructureId> {
        let s = self.get(id)?;
        let mut next = s.above;
        while let Some(n) = next {
            let other = self.get(n)?;
            if other.kind == s.kind || (is_bone(s.kind) && is_bone(other.kind)) {
                return Some(n);
            }
            next = other.above;
        }
        None
    }

    /// The nearest structure of the same kind below (e.g. L5 for L4, sacrum for L5).
    pub fn same_kind_below(&self, id: StructureId) -> Option<StructureId> {
        let s = self.get(id)?;
        let mut next = s.below;
        while let Some(n) = next {
            let other = self.get(n)?;
            if other.kind == s.kind || (is_bone(s.kind) && is_bone(other.kind)) {
                return Some(n);
            }
            next = other.below;
        }
        None
    }

    /// Finds a structure by name, tolerant of the spellings datasets and people use:
    /// "L4", "L4 vertebra", "vertebra L4", "L4 vertebral body", "L4/L5", "L4-L5", "L4L5", "L4-5",
    /// "L4/5", "disc L4/5", "L4-L5 disc", "L5/S1", "L5S1", "S1" or "sacrum", "spinal canal",
    /// "canal", "spinal cord", "cord", "posterior elements". Case-insensitive.
    pub fn find_by_name(&self, name: &str) -> Option<StructureId> {
        let text = name.trim().to_lowercase();
        let words: Vec<&str> = text
            .split(|c: char| c.is_whitespace() || c == '_' || c == ',')
            .filter(|w| !w.is_empty())
            .collect();
        let filler = ["vertebra", "vertebral", "body", "disc", "disk", "intervertebral", "ivd", "level", "the", "spine"];
        let core: Vec<&str> = words.iter().copied().filter(|w| !filler.contains(w)).collect();
        let joined = core.join(" ");
        match joined.as_str() {
            "sacrum" | "s1" | "sacral" | "s" => return Some(SACRUM),
            "coccyx" | "co" | "co1" => return Some(COCCYX),
            "spinal canal" | "canal" | "csf" | "dural sac" | "thecal sac" => return Some(SPINAL_CANAL),
            "spinal cord" | "cord" => return Some(SPINAL_CORD),
            "posterior elements" | "posterior" | "arch" | "vertebral arch" => return Some(POSTERIOR_ELEMENTS),
            _ => {}
        }
        if core.len() != 1 {
            return None;
        }
        let token = core[0];
        // A disc: two levels separated by '/', '-' or nothing ("l4l5", "l4-5", "l4/l5").
        if let Some((upper, rest)) = parse_level_prefix(token) {
            if rest.is_empty() {
                return self.vertebra(upper);
            }
            let rest = rest.trim_start_matches(['/', '-']);
            let lower = if let Ok(n) = rest.parse::<u8>() {
                Level::new(upper.region, n)
            } else {
                let (lower, tail) = parse_level_prefix(rest)?;
                if !tail.is_empty() {
                    return None;
                }
                lower
            };
            let disc = self.disc_below(upper)?;
            let below = self.get(self.get(disc)?.below?)?;
            let lower_matches = below.level == Some(lower) || (lower == Level::new(Region::Sacral, 1) && below.id == SACRUM);
            return lower_matches.then_some(disc);
        }
        None
    }
}

fn is_bone(kind: StructureKind) -> bool {
    matches!(kind, StructureKind::Vertebra | StructureKind::Sacrum | StructureKind::Coccyx)
}

/// Parses a leading level like "l4", "t12", "c7", "s1" and returns it with the rest.
fn parse_level_prefix(token: &str) -> Option<(Level, &str)> {
    let (region, rest) = if let Some(r) = token.strip_prefix("co") {
        (Region::Coccygeal, r)
    } else {
        let mut chars = token.chars();
        let region = match chars.next()? {
            'c' => Region::Cervical,
            't' => Region::Thoracic,
            'l' => Region::Lumbar,
            's' => Region::Sacral,
            _ => return None,
        };
        (region, chars.as_str())
    };
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() {
        return None;
    }
    let number: u8 = digits.parse().ok()?;
    let valid = match region {
        Region::Cervical => (1..=7).contains(&number),
        Region::Thoracic => (1..=12).contains(&number),
        Region::Lumbar => (1..=5).contains(&number),
        Region::Sacral | Region::Coccygeal => number == 1,
    };
    valid.then_some((Level::new(region, number), &rest[digits.len()..]))
}

/// Why a list of structure names could not be resolved to structures (e.g. `--structures`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StructureNameError {
    /// The list names nothing (empty, or only separators).
    #[error("the list of structures is empty: name at least one, e.g. \"L4 vertebra, L4/L5 disc\"")]
    Empty,
    /// A name the ontology does not know, even through its synonyms.
    #[error("unknown structure {name:?}; closest names: {}", closest.join(", "))]
    Unknown {
        name: String,
        /// The nearest display names by edit distance, nearest first.
        closest: Vec<String>,
    },
    /// Structures the ontology knows but the model (or dataset) at hand does not segment.
    #[error("the model does not segment {}; it segments: {}", missing.join(", "), available.join(", "))]
    NotAvailable {
        /// Display names of the requested structures that are not available.
        missing: Vec<String>,
        /// Display names of everything that is available.
        available: Vec<String>,
    },
}

/// How many suggestions an unknown name gets.
const SUGGESTIONS: usize = 3;

impl Ontology {
    /// Resolves a comma (or semicolon) separated list of structure names through
    /// [`Ontology::find_by_name`] (synonyms such as "disc L4/5" or "L4-L5"), in the order given,
    /// without repeats. An unknown name is an error that suggests the three closest names.
    pub fn resolve_names(&self, list: &str) -> Result<Vec<StructureId>, StructureNameError> {
        let names: Vec<&str> = list.split([',', ';']).map(str::trim).filter(|n| !n.is_empty()).collect();
        if names.is_empty() {
            return Err(StructureNameError::Empty);
        }
        let mut ids = Vec::new();
        for name in names {
            let id = self.find_by_name(name).ok_or_else(|| StructureNameError::Unknown {
                name: name.to_string(),
                closest: self.closest_names(name, SUGGESTIONS),
            })?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// The display names of the `count` structures whose short or display name is nearest to
    /// `name` by edit distance (case-insensitive); ties in ontology order of the names.
    pub fn closest_names(&self, name: &str, count: usize) -> Vec<String> {
        let query = name.trim().to_lowercase();
        let mut scored: Vec<(usize, String)> = self
            .structures()
            .iter()
            .map(|s| {
                let distance = edit_distance(&query, &s.name.to_lowercase())
                    .min(edit_distance(&query, &s.display_name.to_lowercase()));
                (distance, s.display_name.clone())
            })
            .collect();
        scored.sort();
        scored.into_iter().take(count).map(|(_, n)| n).collect()
    }

    /// Checks that every structure in `wanted` is among `available` (e.g. a model's classes);
    /// the error names the missing ones and lists the available ones.
    pub fn require_available(&self, wanted: &[StructureId], available: &[StructureId]) -> Result<(), StructureNameError> {
        let name = |id: &StructureId| self.get(*id).map_or_else(|| id.to_string(), |s| s.display_name.clone());
        let missing: Vec<String> = wanted.iter().filter(|id| !available.contains(id)).map(name).collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(StructureNameError::NotAvailable { missing, available: available.iter().map(name).collect() })
    }
}

/// Levenshtein distance over characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_of(id: StructureId) -> String {
        Ontology::standard().get(id).unwrap().name.clone()
    }

    #[test]
    fn ids_follow_verse_and_spineps_numbering() {
        let o = Ontology::standard();
        assert_eq!(o.vertebra(Level::new(Region::Lumbar, 4)), Some(StructureId(23)));
        assert_eq!(o.vertebra(Level::new(Region::Thoracic, 9)), Some(StructureId(16)));
        assert_eq!(o.disc_below(Level::new(Region::Lumbar, 5)), Some(StructureId(124)));
        assert_eq!(name_of(StructureId(124)), "L5/S1");
        assert_eq!(name_of(StructureId(119)), "T12/L1");
        assert_eq!(name_of(StructureId(116)), "T9/T10");
        assert_eq!(o.get(SACRUM).unwrap().kind, StructureKind::Sacrum);
        assert!(o.get(StructureId(101)).is_none(), "no C1/C2 disc");
        assert!(o.structures().iter().all(|s| s.id.0 <= 255));
    }

    #[test]
    fn neighbours_alternate_vertebra_and_disc() {
        let o = Ontology::standard();
        let l4 = o.get(StructureId(23)).unwrap();
        assert_eq!(l4.above, Some(StructureId(122)));
        assert_eq!(l4.below, Some(StructureId(123)));
        assert_eq!(o.get(StructureId(124)).unwrap().below, Some(SACRUM));
        assert_eq!(o.same_kind_below(StructureId(24)), Some(SACRUM));
        assert_eq!(o.same_kind_above(StructureId(123)), Some(StructureId(122)));
        assert_eq!(o.same_kind_above(StructureId(20)), Some(StructureId(19)));
    }

    #[test]
    fn names_and_synonyms_resolve() {
        let o = Ontology::standard();
        let cases = [
            ("L4", Some(23)),
            ("l4 vertebra", Some(23)),
            ("vertebra L4", Some(23)),
            ("L4 vertebral body", Some(23)),
            ("L4/L5", Some(123)),
            ("L4-L5 disc", Some(123)),
            ("disc L4/5", Some(123)),
            ("L4L5", Some(123)),
            ("T12L1", Some(119)),
            ("L5/S1", Some(124)),
            ("L5-S1", Some(124)),
            ("sacrum", Some(26)),
            ("S1", Some(26)),
            ("spinal canal", Some(61)),
            ("T9", Some(16)),
            ("L4/L6", None),
            ("L6", None),
            ("L3/L5", None),
            ("banana", None),
        ];
        for (name, expected) in cases {
            assert_eq!(o.find_by_name(name).map(|s| s.0), expected, "{name}");
        }
    }

    #[test]
    fn every_name_round_trips() {
        let o = Ontology::standard();
        for s in o.structures() {
            assert_eq!(o.find_by_name(&s.name), Some(s.id), "{}", s.name);
            assert_eq!(o.find_by_name(&s.display_name), Some(s.id), "{}", s.display_name);
        }
    }
}

#[cfg(test)]
mod structure_list_tests {
    use super::*;

    #[test]
    fn structure_lists_use_synonyms_and_suggest_names() {
        let o = Ontology::standard();
        let ids = o.resolve_names("L4 vertebra, disc L4/5; L4-L5 disc,L5").unwrap();
        assert_eq!(ids, vec![StructureId(23), StructureId(123), StructureId(24)]);
        let err = o.resolve_names("L4 vertebra, L4/L5 dsic, spinal cannal").unwrap_err();
        let StructureNameError::Unknown { name, closest } = &err else { panic!("{err}") };
        assert_eq!(name, "L4/L5 dsic");
        assert_eq!(closest.len(), 3);
        assert_eq!(closest[0], "L4/L5 intervertebral disc");
        let text = err.to_string();
        assert!(text.contains("unknown structure") && text.contains("L4/L5 intervertebral disc"), "{text}");
        assert_eq!(o.resolve_names(" , "), Err(StructureNameError::Empty));
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("L4", "L4"), 0);
    }

    #[test]
    fn unavailable_structures_are_named_with_what_is_available() {
        let o = Ontology::standard();
        let available = [StructureId(23), StructureId(24)];
        assert_eq!(o.require_available(&[StructureId(24)], &available), Ok(()));
        let err = o.require_available(&[StructureId(3), StructureId(23)], &available).unwrap_err();
        assert_eq!(
            err,
            StructureNameError::NotAvailable {
                missing: vec!["C3 vertebral body".into()],
                available: vec!["L4 vertebral body".into(), "L5 vertebral body".into()],
            }
        );
        assert!(err.to_string().contains("does not segment C3 vertebral body"), "{err}");
    }
}
