//! Vertebral levels named by counting, not by appearance.
//!
//! A vertebral body looks like its neighbours, so the network's per-voxel level labels are often
//! off by one or more levels on a scan unlike its training data. This step, after the sliding
//! window and before any largest-component post-processing, names the levels again from the
//! order of the structures along the spine:
//!
//! 1. **Instances.** Connected components (26-connectivity) of the union of all vertebra classes,
//!    and separately of the union of all disc classes, in the predicted class volume
//!    (preprocessed space). A body component taller than one body is several touching (bodies
//!    through a thin disc the network missed) and is split by the network's level labels (see
//!    [`assign_levels`]). Fragments smaller than [`LevelOptions::min_instance_fraction`] of the
//!    median instance of the same kind (after splitting) are left out (and left as they are);
//!    the median is taken over the instances with at least a tenth of the largest one's voxels,
//!    so that specks of noise do not set it.
//!    Instances off the spinal column are left out too (and left as they are): see
//!    [`on_column`] (a structure beside or in front of the spine that the network took for a
//!    body or disc would otherwise be counted as a level).
//! 2. **Order.** By centroid along the world superior-inferior axis (RAS: +z is superior),
//!    superior first; a lowest body less than half a body-to-disc step below the lowest disc
//!    (with a disc above it too) goes above that disc (the wedge-shaped L5 and the tilted L5/S1
//!    disc, whose centroids can come out at one height).
//! 3. **Assignment.** Dynamic programming over the ordered instances and the ontology's column
//!    (C1, C2, C2/C3, C3, ..., L5, L5/S1; a vertebra's disc sits below it), maximising the sum of
//!    the network's evidence: for an instance and a level, the sum over the instance's voxels of
//!    the softmax probability of that level's class (0 for a level the model has no class for).
//!    Levels go strictly down the column with the instances' kinds (a vertebra instance takes a
//!    vertebra level, a disc a disc level), so names are consecutive and vertebrae and discs
//!    alternate. Two neighbouring instances of the same kind (a disc or a body not found between
//!    them) skip the one structure between them for free. Skipping more (a whole level not
//!    found) is allowed only where the spacing of the two instances leaves room for the missing
//!    structures (their centroid distance over the typical body-to-disc distance), and costs
//!    [`LevelOptions::gap_penalty`] times the median instance's voxel count per skipped
//!    structure, so a gap is taken only where both the geometry and the evidence ask for it
//!    (never to escape the junction anchor on a regularly spaced column). Two neighbours of
//!    one kind too close for a structure of the other kind between them are pieces of one
//!    structure and share its level.
//! 4. **Anchor.** When the lumbosacral junction is in view (see [`junction_in_view`]) the lowest
//!    disc is fixed to L5/S1 and the count runs up from it ("lumbosacral junction"; a body below
//!    it is the sacrum taken for a body and is left alone);
//!    otherwise the levels come from the network's evidence alone ("network evidence only").
//! 5. **Relabel.** Every voxel of an assigned instance takes its level's class; fragments and
//!    other structures (canal, posterior elements, ...) are untouched.
//!
//! The report ([`LevelAssignment`]) says which anchor fixed the count, by how many levels the
//! names moved from the network's, how sure the count is, and whether it is ambiguous (a
//! transitional vertebra suspected, or no junction in view and a small evidence margin), so an
//! uncertain scan says so instead of being guessed silently.
//!
//! Pure Rust on label volumes and probabilities: no network framework.

use crate::postprocess::{connected_components, Connectivity};
use crate::sliding_window::ClassScores;
use serde::Serialize;
use spineseg_anatomy::{Level, Ontology, Region, StructureId, StructureKind};
use spineseg_io::Volume;
use std::collections::BTreeMap;

/// The L5/S1 disc (the junction disc) in the ontology: 100 + L5 (24).
pub const L5_S1_DISC: StructureId = StructureId(124);

/// Settings of [`assign_levels`]; [`LevelOptions::default`] holds the documented defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelOptions {
    /// An instance with fewer voxels than this fraction of the median instance of its kind (over
    /// components of at least a tenth of the largest) is a fragment: not counted, not
    /// relabelled. Default 0.25.
    pub min_instance_fraction: f64,
    /// Cost of one skipped structure beyond the forced ones, in units of the median instance's
    /// voxel count (an instance's evidence is at most its voxel count). Default 0.25: a whole
    /// missing level (a body and a disc) costs half a median instance of evidence. Only where
    /// the spacing leaves room (see the module documentation).
    pub gap_penalty: f64,
    /// The lowest disc is the L5/S1 disc when the mean of its voxels' L5/S1 probability is at
    /// least this. Default 0.5.
    pub junction_probability: f64,
    /// Without the junction, a count whose confidence is below this is reported ambiguous.
    /// Default 0.25.
    pub min_confidence: f64,
    /// The image must reach this many median body heights below the junction disc's centroid
    /// (see [`junction_in_view`]). Default 0.25: bone below the disc is in view, so a vertebra
    /// there would be found (at least in part).
    pub junction_margin: f64,
    /// A vertebral body is lumbar-like when at least this share of its vertebra evidence is on
    /// lumbar levels; this many or more lumbar-like bodies suggest a transitional vertebra.
    /// Defaults 0.5 and 6.
    pub lumbar_share: f64,
    pub transitional_lumbar_count: usize,
    /// A connected component taller than this many median heights of its kind is split by the
    /// network's labels (see [`assign_levels`]). Default 1.6.
    pub split_height: f64,
    /// An instance whose centroid lies farther than this many median body heights from the
    /// spine's line is off the column (see [`on_column`]). Default 0.75: about 20 mm for a
    /// lumbar body, where a disc and the bodies next to it sit within a few millimetres of one
    /// line (a grade 2 spondylolisthesis shifts a body by about half its depth, ~18 mm),
    /// while the structures taken for bodies or discs beside the spine (psoas, kidney,
    /// bowel) lie 30 mm or more away.
    pub column_distance: f64,
}

impl Default for LevelOptions {
    fn default() -> Self {
        LevelOptions {
            min_instance_fraction: 0.25,
            gap_penalty: 0.25,
            junction_probability: 0.5,
            min_confidence: 0.25,
            junction_margin: 0.25,
            lumbar_share: 0.5,
            transitional_lumbar_count: 6,
            split_height: 1.6,
            column_distance: 0.75,
        }
    }
}

impl LevelOptions {
    /// Whether level assignment applies to a model with these classes (ontology ids per class
    /// index): it needs at least two vertebra or disc level classes.
    pub fn applies_to(classes: &[StructureId]) -> bool {
        classes.iter().filter(|id| level_kind(**id).is_some()).count() >= 2
    }
}

/// Vertebra or disc: the two kinds of structure that are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LevelKind {
    Vertebra,
    Disc,
}

/// Which evidence fixed the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Anchor {
    /// The lowest disc is the L5/S1 disc and the levels are counted up from it.
    #[serde(rename = "lumbosacral junction")]
    LumbosacralJunction,
    /// No junction in view: the best-scoring consecutive naming of the network's evidence.
    #[serde(rename = "network evidence only")]
    NetworkEvidenceOnly,
}

impl std::fmt::Display for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Anchor::LumbosacralJunction => "lumbosacral junction",
            Anchor::NetworkEvidenceOnly => "network evidence only",
        })
    }
}

/// One counted structure: a vertebral body or a disc found in the prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub kind: LevelKind,
    pub voxels: usize,
    /// Centroid in world millimetres (RAS).
    pub centroid_mm: [f64; 3],
    /// Lowest and highest world z (superior-inferior) of its voxel centres.
    pub bottom_mm: f64,
    pub top_mm: f64,
    /// Per level structure: the sum over the instance's voxels of that class's probability.
    pub evidence: BTreeMap<StructureId, f64>,
    /// The connected component it was cut from, when a component taller than one structure was
    /// split by the network's labels (the pieces of one component share it); `None`: a whole
    /// component.
    pub split_from: Option<usize>,
}

impl Instance {
    fn evidence_for(&self, id: StructureId) -> f64 {
        self.evidence.get(&id).copied().unwrap_or(0.0)
    }

    /// The network's own name: the level of its kind with the most evidence.
    fn raw_level(&self) -> Option<StructureId> {
        self.evidence
            .iter()
            .filter(|(id, e)| level_kind(**id) == Some(self.kind) && **e > 0.0)
            .fold(None, |best: Option<(StructureId, f64)>, (id, e)| match best {
                Some((_, b)) if b >= *e => best,
                _ => Some((*id, *e)),
            })
            .map(|(id, _)| id)
    }
}

/// One instance in the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceReport {
    pub kind: LevelKind,
    /// The network's name (most evidence of its kind) and its ontology id.
    pub raw_label: Option<String>,
    pub raw_id: Option<StructureId>,
    /// The assigned level and its ontology id.
    pub assigned_label: Option<String>,
    pub assigned_id: Option<StructureId>,
    /// Whether its voxels were relabelled (false when the assigned level is not a class of the
    /// model, or nothing changed).
    pub relabelled: bool,
    /// A body below the junction disc (the sacrum taken for a body): not counted, not relabelled.
    pub below_junction: bool,
    pub voxels: usize,
    /// Evidence (sum of probabilities over its voxels) of the assigned and of the raw level.
    pub evidence: f64,
    pub raw_evidence: f64,
    pub centroid_mm: [f64; 3],
    /// Its voxels per network label (the arg max before relabelling).
    pub network_voxels: BTreeMap<String, usize>,
}

/// What level assignment decided for one scan (written as `<output stem>.levels.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LevelAssignment {
    pub anchor: Anchor,
    /// By how many vertebral levels the assigned names moved from the network's (the most
    /// common difference over the instances; positive: named further down the spine).
    pub shift_levels: i32,
    /// How sure the count is, in [0, 1]. With the junction anchor: the junction disc's mean
    /// L5/S1 probability. Otherwise: [`LevelAssignment::evidence_margin`], clipped at 0.
    pub confidence: f64,
    /// Total evidence of the chosen naming minus that of the best naming shifted by whole levels,
    /// over all instances' voxel count (signed: negative when the anchor overrode the network).
    pub evidence_margin: f64,
    pub ambiguous: bool,
    /// Why it is ambiguous (empty when it is not).
    pub reasons: Vec<String>,
    /// Superior first.
    pub instances: Vec<InstanceReport>,
    /// Fragments left out (fewer voxels than the fraction of the median instance).
    pub fragments: usize,
    /// Instances left out because they lie off the spinal column ([`on_column`]).
    pub off_column: usize,
}

impl LevelAssignment {
    /// One line for a log, e.g. `levels: 11 instances, anchor lumbosacral junction (confidence
    /// 0.97), shift +1 vs network, 10 relabelled`.
    pub fn summary(&self) -> String {
        if self.instances.is_empty() {
            return "levels: no vertebral bodies or discs found".to_string();
        }
        if self.instances.iter().all(|i| i.assigned_id.is_none()) {
            return format!(
                "levels: {} instances, none assigned; AMBIGUOUS: {}",
                self.instances.len(),
                self.reasons.join("; ")
            );
        }
        let relabelled = self.instances.iter().filter(|i| i.relabelled).count();
        let names: Vec<&str> = self.instances.iter().filter_map(|i| i.assigned_label.as_deref()).collect();
        let range = match (names.first(), names.last()) {
            (Some(a), Some(b)) => format!(" {a}..{b},"),
            _ => String::new(),
        };
        let mut line = format!(
            "levels:{range} {} instances, anchor {} (confidence {:.2}), shift {:+} vs network, {relabelled} relabelled",
            self.instances.len(),
            self.anchor,
            self.confidence,
            self.shift_levels
        );
        if self.off_column > 0 {
            line.push_str(&format!(", {} off the spinal column left out", self.off_column));
        }
        if self.ambiguous {
            line.push_str(&format!("; AMBIGUOUS: {}", self.reasons.join("; ")));
        }
        line
    }
}

/// The kind of a vertebra or disc level id (`None` for every other structure, the sacrum too).
fn level_kind(id: StructureId) -> Option<LevelKind> {
    match Ontology::standard().get(id)?.kind {
        StructureKind::Vertebra => Some(LevelKind::Vertebra),
        StructureKind::Disc => Some(LevelKind::Disc),
        _ => None,
    }
}

/// The vertebrae and discs down the column (C1, C2, C2/C3, ..., L5, L5/S1), from the ontology's
/// neighbour links.
fn column() -> Vec<(StructureId, LevelKind)> {
    let ontology = Ontology::standard();
    let mut out = Vec::new();
    let mut next = Some(StructureId(1));
    while let Some(id) = next {
        let Some(kind) = level_kind(id) else { break };
        out.push((id, kind));
        next = ontology.get(id).and_then(|s| s.below);
    }
    out
}

fn name(id: StructureId) -> String {
    Ontology::standard().get(id).map_or_else(|| id.to_string(), |s| s.name.clone())
}

fn is_lumbar(id: StructureId) -> bool {
    let s = Ontology::standard().get(id);
    s.is_some_and(|s| {
        s.kind == StructureKind::Vertebra && matches!(s.level, Some(Level { region: Region::Lumbar, .. }))
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Whether the lumbosacral junction is in view, as the index of the junction disc among
/// `instances` (superior first). The rule, for the lowest disc instance:
/// 1. its mean L5/S1 probability is at least [`LevelOptions::junction_probability`] (the network
///    recognises the junction disc, the most distinctive one: the sacrum's slope lies below it);
/// 2. at most one structure lies below it, a vertebral body: the sacrum taken for a body (the
///    models have no sacrum class; it is not counted and not relabelled). Pieces of one
///    component split by the network's labels ([`Instance::split_from`]) are one structure: the
///    sacrum is one bone however the network labels it. Two or more bodies below it mean it is
///    not the junction;
/// 3. the image reaches at least [`LevelOptions::junction_margin`] median body heights
///    (superior-inferior extent of the body instances, or of the discs when no body is found)
///    below its centroid, so a vertebra below it would have been seen and the disc is not cut
///    by the image's edge.
pub fn junction_in_view(instances: &[Instance], image_bottom_mm: f64, options: &LevelOptions) -> Option<usize> {
    junction_check(instances, image_bottom_mm, options).ok()
}

/// [`junction_in_view`] with the reason when it is not (for the report).
fn junction_check(instances: &[Instance], image_bottom_mm: f64, options: &LevelOptions) -> Result<usize, String> {
    let last_disc = instances.iter().rposition(|i| i.kind == LevelKind::Disc).ok_or("no disc found")?;
    // Pieces of one split component below the disc are one structure (a sacrum the network
    // labelled as several bodies is still one piece of bone).
    let mut below: Vec<Option<usize>> = instances[last_disc + 1..].iter().map(|i| i.split_from).collect();
    below.sort();
    below.dedup_by(|a, b| a.is_some() && a == b);
    if below.len() > 1 {
        return Err(format!("{} vertebral bodies below the lowest disc", below.len()));
    }
    let disc = &instances[last_disc];
    let probability = disc.evidence_for(L5_S1_DISC) / disc.voxels.max(1) as f64;
    if probability < options.junction_probability {
        return Err(format!(
            "the lowest disc's mean L5/S1 probability is {probability:.2} < {:.2}",
            options.junction_probability
        ));
    }
    let heights =
        |kind| -> Vec<f64> { instances.iter().filter(|i| i.kind == kind).map(|i| i.top_mm - i.bottom_mm).collect() };
    let mut height = median(heights(LevelKind::Vertebra));
    if height <= 0.0 {
        height = median(heights(LevelKind::Disc));
    }
    let below_mm = disc.centroid_mm[2] - image_bottom_mm;
    if below_mm < options.junction_margin * height {
        return Err(format!(
            "the image ends {below_mm:.0} mm below the lowest disc, less than {:.0} mm",
            options.junction_margin * height
        ));
    }
    Ok(last_disc)
}

/// Per pair of neighbours: whether their kinds differ, and their centroid distance in the
/// sagittal plane (anterior-posterior and superior-inferior).
fn neighbour_distances<'a>(instances: impl Iterator<Item = &'a Instance> + Clone) -> Vec<(bool, f64)> {
    instances
        .clone()
        .zip(instances.skip(1))
        .map(|(a, b)| {
            let [_, ay, az] = a.centroid_mm;
            let [_, by, bz] = b.centroid_mm;
            (a.kind != b.kind, (ay - by).hypot(az - bz))
        })
        .collect()
}

/// The typical distance of a body and the disc next to it (half that of two neighbours of one
/// kind when no body and disc are neighbours).
fn typical_step(distances: &[(bool, f64)]) -> f64 {
    let mixed: Vec<f64> = distances.iter().filter(|(mixed, _)| *mixed).map(|(_, d)| *d).collect();
    if mixed.is_empty() {
        median(distances.iter().map(|(_, d)| *d).collect()) / 2.0
    } else {
        median(mixed)
    }
}

/// Which instances lie on the spinal column. The spine's line near an instance is the
/// voxel-weighted median (left-right and anterior-posterior, separately) of the centroids of
/// the other instances within two median body heights along the spine (superior-inferior);
/// an instance whose centroid is farther from that point than
/// [`LevelOptions::column_distance`] median body heights is off the column. Weighted medians
/// follow the lordotic curve and a scoliotic one (the line is local) and are not moved by a
/// minority of outliers; a second pass takes the line from the first pass's column only, so
/// a large outlier cannot hide a smaller one beside it. Without vertebral bodies the scale is
/// 2.5 median disc heights; an instance with no other instance in its window is kept (nothing
/// to compare with), as is every instance of a scan with fewer than three.
pub fn on_column(instances: &[Instance], options: &LevelOptions) -> Vec<bool> {
    let n = instances.len();
    let mut keep = vec![true; n];
    if n < 3 {
        return keep;
    }
    let heights = |kind| -> Vec<f64> {
        instances.iter().filter(|i| i.kind == kind).map(|i| i.top_mm - i.bottom_mm).collect()
    };
    let mut height = median(heights(LevelKind::Vertebra));
    if height <= 0.0 {
        height = 2.5 * median(heights(LevelKind::Disc));
    }
    if height <= 0.0 {
        return keep;
    }
    let limit = options.column_distance * height;
    for _pass in 0..2 {
        let reference = keep.clone();
        for (m, instance) in instances.iter().enumerate() {
            let [x, y, z] = instance.centroid_mm;
            let neighbours: Vec<&Instance> = instances
                .iter()
                .enumerate()
                .filter(|&(j, other)| j != m && reference[j] && (other.centroid_mm[2] - z).abs() <= 2.0 * height)
                .map(|(_, other)| other)
                .collect();
            if neighbours.is_empty() {
                keep[m] = true;
                continue;
            }
            let line = |axis: usize| {
                weighted_median(neighbours.iter().map(|o| (o.centroid_mm[axis], o.voxels as f64)).collect())
            };
            keep[m] = (x - line(0)).hypot(y - line(1)) <= limit;
        }
    }
    keep
}

/// The weighted median of (value, weight) pairs: the smallest value at which the cumulative
/// weight reaches half the total.
fn weighted_median(mut pairs: Vec<(f64, f64)>) -> f64 {
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = pairs.iter().map(|p| p.1).sum();
    let mut cumulative = 0.0;
    for (value, weight) in &pairs {
        cumulative += weight;
        if cumulative >= 0.5 * total {
            return *value;
        }
    }
    pairs.last().map_or(0.0, |p| p.0)
}

/// Orders instances superior first by centroid z, then puts a lowest body whose centroid lies
/// less than half a typical step below the lowest disc's above it: L5 is wedge-shaped and the
/// L5/S1 disc tilted, so their centroids can come out at nearly one height (in either order),
/// while the sacrum's S1 segment lies a whole step below the disc.
fn order_along_spine<T>(instances: &mut [(T, Instance)]) {
    instances.sort_by(|a, b| b.1.centroid_mm[2].total_cmp(&a.1.centroid_mm[2]));
    let n = instances.len();
    if n < 3 {
        return;
    }
    let step = typical_step(&neighbour_distances(instances.iter().map(|(_, i)| i)));
    let (disc, body) = (&instances[n - 2].1, &instances[n - 1].1);
    if disc.kind == LevelKind::Disc
        && body.kind == LevelKind::Vertebra
        && instances[n - 3].1.kind == LevelKind::Disc
        && disc.centroid_mm[2] - body.centroid_mm[2] < 0.5 * step
    {
        instances.swap(n - 2, n - 1);
    }
}

/// Assigns levels to `instances` (ordered superior first) with the dynamic programme of the
/// module documentation. `image_bottom_mm`: the lowest world z the image covers (for the
/// junction's rule). `classes`: the level structures the model can write (an instance assigned
/// another level keeps its voxels). Instances must be ordered; fragments already removed.
pub fn assign_instances(
    all: &[Instance],
    image_bottom_mm: f64,
    classes: &[StructureId],
    options: &LevelOptions,
) -> LevelAssignment {
    let chain = column();
    // With the junction in view, a body below its disc (the sacrum) is not counted.
    let junction_status = junction_check(all, image_bottom_mm, options);
    let junction = junction_status.as_ref().ok().copied();
    let (instances, below) = all.split_at(junction.map_or(all.len(), |j| j + 1));
    let unassigned = |i: &Instance| {
        let raw = i.raw_level();
        InstanceReport {
            kind: i.kind,
            raw_label: raw.map(name),
            raw_id: raw,
            assigned_label: None,
            assigned_id: None,
            relabelled: false,
            below_junction: false,
            voxels: i.voxels,
            evidence: 0.0,
            raw_evidence: raw.map_or(0.0, |r| i.evidence_for(r)),
            centroid_mm: i.centroid_mm,
            network_voxels: BTreeMap::new(),
        }
    };
    let below: Vec<InstanceReport> =
        below.iter().map(|i| InstanceReport { below_junction: true, ..unassigned(i) }).collect();
    let n = instances.len();
    let empty = LevelAssignment {
        anchor: Anchor::NetworkEvidenceOnly,
        shift_levels: 0,
        confidence: 0.0,
        evidence_margin: 0.0,
        ambiguous: false,
        reasons: vec![],
        instances: vec![],
        fragments: 0,
        off_column: 0,
    };
    if n == 0 || chain.is_empty() {
        return empty;
    }
    let positions = chain.len();
    let median_voxels = median(instances.iter().map(|i| i.voxels as f64).collect());
    let gap_cost = options.gap_penalty * median_voxels;
    let fits = |m: usize, p: usize| chain[p].1 == instances[m].kind;
    let evidence = |m: usize, p: usize| instances[m].evidence_for(chain[p].0);
    // First position after `p` of `kind`: where the next instance goes when nothing is skipped.
    let first_after = |p: usize, kind: LevelKind| (p + 1..positions).find(|&q| chain[q].1 == kind);
    // Room for missing structures between neighbours, from their spacing: `step` is the typical
    // centroid distance of a body and the disc next to it (half that of two bodies when no body
    // and disc are neighbours); `round(distance / step) - 1` structures fit between two instances.
    // Distances are in the sagittal plane (anterior-posterior and superior-inferior), so they
    // follow the lordotic curve and two pieces of one disc side by side (left, right) are close.
    let distances = neighbour_distances(instances.iter());
    let step = typical_step(&distances);
    let room = |m: usize| -> usize {
        let d = distances[m - 1].1;
        if step > 0.0 {
            ((d / step).round() as usize).saturating_sub(1)
        } else {
            0
        }
    };

    // score[m][p]: best total of instances 0..=m with instance m at position p; NEG_INFINITY
    // where impossible. back[m][p]: instance m-1's position on that best path.
    let mut score = vec![vec![f64::NEG_INFINITY; positions]; n];
    let mut back = vec![vec![usize::MAX; positions]; n];
    for (p, first) in score[0].iter_mut().enumerate() {
        if fits(0, p) {
            *first = evidence(0, p);
        }
    }
    for m in 1..n {
        for p_prev in 0..positions {
            let prev = score[m - 1][p_prev];
            if prev == f64::NEG_INFINITY {
                continue;
            }
            // Two neighbours of one kind too close for the other kind between them are pieces of
            // one structure (a disc in two parts): they share its level.
            if instances[m].kind == instances[m - 1].kind && room(m) == 0 {
                let total = prev + evidence(m, p_prev);
                if total > score[m][p_prev] {
                    score[m][p_prev] = total;
                    back[m][p_prev] = p_prev;
                }
                continue;
            }
            let Some(first) = first_after(p_prev, instances[m].kind) else { continue };
            // Skips beyond the forced ones only where the spacing leaves room for them.
            let extra = room(m).saturating_sub(first - p_prev - 1);
            for p in first..positions.min(first + extra + 1) {
                if !fits(m, p) {
                    continue;
                }
                let total = prev - gap_cost * (p - first) as f64 + evidence(m, p);
                // Strictly greater: ties keep the higher (earlier) previous position.
                if total > score[m][p] {
                    score[m][p] = total;
                    back[m][p] = p_prev;
                }
            }
        }
    }

    let junction_position = chain.iter().position(|(id, _)| *id == L5_S1_DISC);
    let end = match (junction, junction_position) {
        (Some(_), Some(p)) if score[n - 1][p] > f64::NEG_INFINITY => Some(p),
        _ => None,
    };
    let anchor = if end.is_some() { Anchor::LumbosacralJunction } else { Anchor::NetworkEvidenceOnly };
    let end = end.unwrap_or_else(|| {
        // Highest score; ties to the higher position (lower index).
        (0..positions).fold(0, |best, p| if score[n - 1][p] > score[n - 1][best] { p } else { best })
    });
    if score[n - 1][end] == f64::NEG_INFINITY {
        // More instances than the column has levels (an untrained or failing network's
        // scatter): no consecutive naming exists; keep the network's labels and say so.
        let instances = instances.iter().map(unassigned).chain(below).collect();
        return LevelAssignment {
            ambiguous: true,
            reasons: vec![format!(
                "{n} instances do not fit the spinal column as one consecutive sequence; the network's labels are kept"
            )],
            instances,
            ..empty
        };
    }
    let mut assigned = vec![0usize; n];
    assigned[n - 1] = end;
    for m in (1..n).rev() {
        assigned[m - 1] = back[m][assigned[m]];
    }
    let chosen: f64 = (0..n).map(|m| evidence(m, assigned[m])).sum();

    // The alternatives a count can get wrong: the same naming moved by whole levels.
    let mass: f64 = instances.iter().map(|i| i.voxels as f64).sum::<f64>().max(1.0);
    let shifted_best = (-5isize..=5)
        .filter(|d| *d != 0)
        .filter_map(|d| {
            let mut total = 0.0;
            for (m, &at) in assigned.iter().enumerate() {
                let p = at as isize + 2 * d;
                if p < 0 || p >= positions as isize || !fits(m, p as usize) {
                    return None;
                }
                total += evidence(m, p as usize);
            }
            Some(total)
        })
        .fold(f64::NEG_INFINITY, f64::max);
    let evidence_margin = if shifted_best == f64::NEG_INFINITY { 1.0 } else { (chosen - shifted_best) / mass };
    let confidence = match junction {
        Some(j) if anchor == Anchor::LumbosacralJunction => {
            (instances[j].evidence_for(L5_S1_DISC) / instances[j].voxels as f64).clamp(0.0, 1.0)
        }
        _ => evidence_margin.clamp(0.0, 1.0),
    };

    let mut reports = Vec::with_capacity(n);
    let mut shifts: BTreeMap<i32, usize> = BTreeMap::new();
    for (m, instance) in instances.iter().enumerate() {
        let id = chain[assigned[m]].0;
        let raw = instance.raw_level();
        if let Some(raw_position) = raw.and_then(|r| chain.iter().position(|(c, _)| *c == r)) {
            let shift = (assigned[m] as i32 - raw_position as i32) / 2;
            *shifts.entry(shift).or_insert(0) += 1;
        }
        let writable = classes.contains(&id);
        reports.push(InstanceReport {
            kind: instance.kind,
            raw_label: raw.map(name),
            raw_id: raw,
            assigned_label: Some(name(id)),
            assigned_id: Some(id),
            relabelled: writable,
            below_junction: false,
            voxels: instance.voxels,
            evidence: instance.evidence_for(id),
            raw_evidence: raw.map_or(0.0, |r| instance.evidence_for(r)),
            centroid_mm: instance.centroid_mm,
            network_voxels: BTreeMap::new(),
        });
    }
    // Most common shift; ties to the smaller magnitude (BTreeMap order makes it deterministic).
    let shift_levels = shifts
        .iter()
        .fold(None, |best: Option<(i32, usize)>, (&s, &count)| match best {
            Some((b, c)) if c > count || (c == count && b.abs() <= s.abs()) => best,
            _ => Some((s, count)),
        })
        .map_or(0, |(s, _)| s);

    let mut reasons = Vec::new();
    // Distinct levels, so the pieces of one body count once.
    let mut lumbar_levels: Vec<usize> = instances
        .iter()
        .zip(&assigned)
        .filter(|(i, _)| i.kind == LevelKind::Vertebra)
        .filter(|(i, _)| {
            let all: f64 =
                i.evidence.iter().filter(|(id, _)| level_kind(**id) == Some(LevelKind::Vertebra)).map(|(_, e)| e).sum();
            let lumbar: f64 = i.evidence.iter().filter(|(id, _)| is_lumbar(**id)).map(|(_, e)| e).sum();
            all > 0.0 && lumbar >= options.lumbar_share * all
        })
        .map(|(_, &p)| p)
        .collect();
    lumbar_levels.dedup();
    let lumbar_like = lumbar_levels.len();
    if lumbar_like >= options.transitional_lumbar_count {
        let place = if anchor == Anchor::LumbosacralJunction { " above the lumbosacral junction" } else { "" };
        reasons.push(format!(
            "transitional vertebra suspected: {lumbar_like} lumbar-like vertebral bodies{place}, the count may be off by one"
        ));
    }
    if anchor == Anchor::NetworkEvidenceOnly && confidence < options.min_confidence {
        reasons.push(format!(
            "lumbosacral junction not in view ({}) and the evidence margin is small ({confidence:.2} < {:.2})",
            junction_status.as_ref().err().map_or("no consecutive naming ends there", |e| e.as_str()),
            options.min_confidence
        ));
    }
    LevelAssignment {
        anchor,
        shift_levels,
        confidence,
        evidence_margin,
        ambiguous: !reasons.is_empty(),
        reasons,
        instances: reports.into_iter().chain(below).collect(),
        fragments: 0,
        off_column: 0,
    }
}

/// Finds the vertebral bodies and discs of `seg` (class indices), names them by counting
/// ([`assign_instances`]) and relabels every voxel of each assigned instance with its level's
/// class. `probabilities`: the softmax of the network's scores on `seg`'s grid (class-major).
/// `classes`: the ontology id of each class index (the plan's label values). Fails only when
/// the shapes or class counts disagree.
///
/// Instances are the connected components (26-connectivity) of the union of the vertebra
/// classes, and of the disc classes. A component taller (superior-inferior) than
/// [`LevelOptions::split_height`] times the height of one structure of its kind is two or more
/// structures touching (bodies through a thin disc, say) and is split by the network's labels,
/// each label's voxels a part, parts side by side (centroids within half that height) joined
/// again; a component of ordinary height is one structure whatever its labels (a body the 2D
/// network calls L3 on some slices and L4 on others). The height of one body is the median
/// height of the label parts (a component's voxels of one class; those with at least a tenth of
/// the largest one's voxels), not of the components: where most bodies touch, the components
/// are columns and their median height a column's, so nothing would be split. The height of
/// one disc is the median height of the disc components (not fragments), as before label parts:
/// discs touch only where a whole body is missing between them.
pub fn assign_levels(
    seg: &mut Volume<u8>,
    probabilities: &ClassScores,
    classes: &[StructureId],
    options: &LevelOptions,
) -> crate::Result<LevelAssignment> {
    if probabilities.shape() != seg.shape() || probabilities.num_classes() != classes.len() || classes.len() > 256 {
        return Err(crate::InferError::InvalidInput(format!(
            "level assignment: scores of shape {:?} with {} classes for a segmentation of shape {:?} and {} classes",
            probabilities.shape(),
            probabilities.num_classes(),
            seg.shape(),
            classes.len()
        )));
    }
    let kinds: Vec<Option<LevelKind>> = classes.iter().map(|id| level_kind(*id)).collect();
    let level_classes: Vec<usize> = (0..classes.len()).filter(|&c| kinds[c].is_some()).collect();
    let kind_value = |kind: LevelKind| if kind == LevelKind::Vertebra { 1u8 } else { 2u8 };
    // Union per kind: 1 = vertebra, 2 = disc, so components never mix the two.
    let mut union = Volume::filled(seg.shape(), 0u8, seg.geometry);
    for (u, &c) in union.data_mut().iter_mut().zip(seg.data()) {
        *u = kinds.get(c as usize).copied().flatten().map_or(0, kind_value);
    }
    let components = connected_components(&union, Connectivity::Corners);
    drop(union);
    let count = components.sizes.len();
    let [ni, nj, nk] = seg.shape();
    let geometry = seg.geometry;
    let world = |p: usize| geometry.voxel_to_world([(p % ni) as f64, ((p / ni) % nj) as f64, (p / (ni * nj)) as f64]);
    let kind_index = |n: usize| (components.values[n] - 1) as usize;
    // Of sizes or heights of one kind: the median over those whose weight is at least a tenth
    // of the largest weight, so that a spray of one-voxel specks cannot make every speck
    // "typical".
    let typical = |items: &[(f64, f64)]| {
        let largest = items.iter().map(|&(weight, _)| weight).fold(0.0, f64::max);
        median(items.iter().filter(|&&(weight, _)| weight >= 0.1 * largest).map(|&(_, v)| v).collect())
    };

    // Label parts: a component's voxels of one network class, with their voxels and height.
    // The height of one structure comes from these, not from the components: where bodies
    // touch (a thin or missed disc between them), a component is a whole column of bodies, and
    // with most bodies merged the components' median height is a column's, so none would look
    // too tall to split. The network's own level labels still cut the column into its bodies.
    let mut class_slot = [usize::MAX; 256];
    for (slot, &c) in level_classes.iter().enumerate() {
        class_slot[c] = slot;
    }
    let slots = level_classes.len();
    let mut label_parts = vec![(0usize, f64::INFINITY, f64::NEG_INFINITY); count * slots];
    for (p, (&label, &c)) in components.labels.iter().zip(seg.data()).enumerate() {
        if label != 0 {
            let z = world(p)[2];
            let part = &mut label_parts[(label as usize - 1) * slots + class_slot[c as usize]];
            *part = (part.0 + 1, part.1.min(z), part.2.max(z));
        }
    }
    let body_height = {
        let items: Vec<(f64, f64)> = label_parts
            .iter()
            .enumerate()
            .filter(|(key, part)| part.0 > 0 && components.values[key / slots] == 1)
            .map(|(_, part)| (part.0 as f64, part.2 - part.1))
            .collect();
        typical(&items)
    };
    // Each component's height: the extent of its label parts together.
    let component_height: Vec<f64> = (0..count)
        .map(|n| &label_parts[n * slots..(n + 1) * slots])
        .map(|parts| {
            let bottom = parts.iter().map(|part| part.1).fold(f64::INFINITY, f64::min);
            let top = parts.iter().map(|part| part.2).fold(f64::NEG_INFINITY, f64::max);
            top - bottom
        })
        .collect();
    drop(label_parts);
    // Discs keep the height of their components (the rule before label parts): two discs touch
    // only where a whole body between them is missing, so the failure label parts mend (bodies
    // through a thin disc) has no disc counterpart, while splitting tall disc components by
    // their labels did add spurious discs where a network smeared disc labels along the spine
    // of a scan unlike its training data (docs/BENCHMARKS.md, stop 33).
    let disc_component_height = {
        let sizes: Vec<(f64, f64)> =
            (0..count).filter(|&n| components.values[n] == 2).map(|n| (components.sizes[n] as f64, components.sizes[n] as f64)).collect();
        let size = typical(&sizes);
        let heights: Vec<f64> = (0..count)
            .filter(|&n| components.values[n] == 2 && components.sizes[n] as f64 >= options.min_instance_fraction * size)
            .map(|n| component_height[n])
            .collect();
        median(heights)
    };
    let heights = [body_height, disc_component_height];
    // A component taller than a structure is two or more structures touching.
    let split: Vec<bool> = (0..count)
        .map(|n| heights[kind_index(n)] > 0.0 && component_height[n] > options.split_height * heights[kind_index(n)])
        .collect();

    // Parts: a component, or a component's voxels of one class where it is split.
    let mut part_of = vec![u32::MAX; count * 256];
    let mut parts: Vec<(usize, LevelKind)> = Vec::new();
    let mut voxel_part = vec![u32::MAX; seg.data().len()];
    for (p, (&label, &c)) in components.labels.iter().zip(seg.data()).enumerate() {
        if label == 0 {
            continue;
        }
        let n = label as usize - 1;
        let key = n * 256 + if split[n] { c as usize } else { 0 };
        if part_of[key] == u32::MAX {
            part_of[key] = parts.len() as u32;
            let kind = if components.values[n] == 1 { LevelKind::Vertebra } else { LevelKind::Disc };
            parts.push((n, kind));
        }
        voxel_part[p] = part_of[key];
    }
    drop(part_of);
    let mut sizes = vec![0usize; parts.len()];
    let mut sums = vec![[0f64; 3]; parts.len()];
    let mut ranges = vec![(f64::INFINITY, f64::NEG_INFINITY); parts.len()];
    let mut evidence = vec![vec![0f64; level_classes.len()]; parts.len()];
    let mut raw_counts = vec![BTreeMap::<StructureId, usize>::new(); parts.len()];
    for p in 0..ni * nj * nk {
        let part = voxel_part[p];
        if part == u32::MAX {
            continue;
        }
        let q = part as usize;
        let w = world(p);
        sizes[q] += 1;
        for a in 0..3 {
            sums[q][a] += w[a];
        }
        ranges[q] = (ranges[q].0.min(w[2]), ranges[q].1.max(w[2]));
        for (e, &c) in evidence[q].iter_mut().zip(&level_classes) {
            *e += probabilities.class(c)[p] as f64;
        }
        *raw_counts[q].entry(classes[seg.data()[p] as usize]).or_insert(0) += 1;
    }
    // Parts of a split component that sit side by side (centroids closer than half a median
    // height along the spine) are one structure after all: merge them, so only stacked parts
    // stay apart.
    let mut root: Vec<usize> = (0..parts.len()).collect();
    for n in (0..count).filter(|&n| split[n]) {
        let mut members: Vec<(f64, usize)> =
            (0..parts.len()).filter(|&q| parts[q].0 == n).map(|q| (sums[q][2] / sizes[q] as f64, q)).collect();
        members.sort_by(|a, b| b.0.total_cmp(&a.0));
        for w in 1..members.len() {
            if members[w - 1].0 - members[w].0 < 0.5 * heights[kind_index(n)] {
                root[members[w].1] = root[members[w - 1].1];
            }
        }
    }
    for q in 0..parts.len() {
        let r = root[q];
        if r != q {
            sizes[r] += std::mem::take(&mut sizes[q]);
            let (moved, sum) = (sums[q], &mut sums[r]);
            for (s, m) in sum.iter_mut().zip(moved) {
                *s += m;
            }
            ranges[r] = (ranges[r].0.min(ranges[q].0), ranges[r].1.max(ranges[q].1));
            let moved = std::mem::take(&mut evidence[q]);
            for (e, m) in evidence[r].iter_mut().zip(moved) {
                *e += m;
            }
            for (id, v) in std::mem::take(&mut raw_counts[q]) {
                *raw_counts[r].entry(id).or_insert(0) += v;
            }
        }
    }
    for part in voxel_part.iter_mut().filter(|p| **p != u32::MAX) {
        *part = root[*part as usize] as u32;
    }
    // The typical instance of a kind (after splitting, so a column's parts are judged against
    // one structure, not against the column); smaller than its fraction is a fragment.
    let instance_size = |kind: LevelKind| {
        let items: Vec<(f64, f64)> = (0..parts.len())
            .filter(|&q| root[q] == q && parts[q].1 == kind)
            .map(|q| (sizes[q] as f64, sizes[q] as f64))
            .collect();
        typical(&items)
    };
    let typical_size = [instance_size(LevelKind::Vertebra), instance_size(LevelKind::Disc)];
    let mut instances: Vec<(u32, Instance)> = Vec::new();
    let mut fragments = 0;
    for (q, &(n, kind)) in parts.iter().enumerate() {
        if root[q] != q {
            continue;
        }
        if (sizes[q] as f64) < options.min_instance_fraction * typical_size[kind_index(n)] {
            fragments += 1;
            continue;
        }
        let voxels = sizes[q];
        let instance = Instance {
            kind,
            voxels,
            centroid_mm: sums[q].map(|s| s / voxels as f64),
            bottom_mm: ranges[q].0,
            top_mm: ranges[q].1,
            evidence: level_classes.iter().zip(&evidence[q]).map(|(&c, &e)| (classes[c], e)).collect(),
            split_from: split[n].then_some(n),
        };
        instances.push((q as u32, instance));
    }
    let column = on_column(&instances.iter().map(|(_, i)| i.clone()).collect::<Vec<_>>(), options);
    let off_column = column.iter().filter(|on| !**on).count();
    let mut column = column.into_iter();
    instances.retain(|_| column.next().unwrap_or(true));
    // Superior first (equal heights keep the part order: a stable sort).
    order_along_spine(&mut instances);
    let mut image_bottom_mm = f64::INFINITY;
    for corner in 0..8 {
        let pick = |bit: usize, size: usize| if corner & bit != 0 { size.saturating_sub(1) as f64 } else { 0.0 };
        image_bottom_mm = image_bottom_mm.min(geometry.voxel_to_world([pick(1, ni), pick(2, nj), pick(4, nk)])[2]);
    }
    let ordered: Vec<Instance> = instances.iter().map(|(_, i)| i.clone()).collect();
    let mut report = assign_instances(&ordered, image_bottom_mm, classes, options);
    report.fragments = fragments;
    report.off_column = off_column;

    // Relabel: part -> new class index (0: leave as is).
    let mut new_class = vec![0u8; parts.len()];
    for ((part, _), instance) in instances.iter().zip(report.instances.iter_mut()) {
        instance.network_voxels = raw_counts[*part as usize].iter().map(|(id, v)| (name(*id), *v)).collect();
        match instance.assigned_id.and_then(|id| classes.iter().position(|c| *c == id)) {
            Some(c) => new_class[*part as usize] = c as u8,
            None => instance.relabelled = false,
        }
    }
    let mut changed = vec![false; parts.len()];
    for (v, &part) in seg.data_mut().iter_mut().zip(&voxel_part) {
        if part == u32::MAX {
            continue;
        }
        let c = new_class[part as usize];
        if c != 0 && *v != c {
            *v = c;
            changed[part as usize] = true;
        }
    }
    for ((part, _), instance) in instances.iter().zip(report.instances.iter_mut()) {
        instance.relabelled = instance.relabelled && changed[*part as usize];
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use spineseg_io::Geometry;

    const T12: u16 = 19;
    const L1: u16 = 20;
    const L5: u16 = 24;

    /// A vertebra by ontology id (T12 = 19, L1 = 20, ...).
    fn vertebra(id: u16) -> StructureId {
        StructureId(id)
    }
    fn disc_below(id: u16) -> StructureId {
        StructureId(100 + id)
    }

    /// A column of instances, superior first, 10 mm apart: a body then its disc below, for the
    /// vertebrae `top..=bottom` (ids) with each instance's evidence from `label(true level)`:
    /// 0.9 of its 100 voxels on that label, 0.1 on background.
    fn column_of(
        top: u16,
        bottom: u16,
        with_last_disc: bool,
        label: impl Fn(StructureId) -> StructureId,
    ) -> Vec<Instance> {
        let mut out = Vec::new();
        let mut z = 200.0;
        for v in top..=bottom {
            for (kind, id) in [(LevelKind::Vertebra, vertebra(v)), (LevelKind::Disc, disc_below(v))] {
                if kind == LevelKind::Disc && v == bottom && !with_last_disc {
                    continue;
                }
                let height = if kind == LevelKind::Vertebra { 8.0 } else { 2.0 };
                let evidence = BTreeMap::from([(label(id), 90.0)]);
                out.push(Instance {
                    kind,
                    voxels: 100,
                    centroid_mm: [0.0, 0.0, z],
                    bottom_mm: z - height / 2.0,
                    top_mm: z + height / 2.0,
                    evidence,
                    split_from: None,
                });
                z -= 10.0;
            }
        }
        out
    }

    /// The model's level classes: T9..L5 and T12/L1..L5/S1 (the shipped lumbar model's).
    fn model_classes() -> Vec<StructureId> {
        (16..=24).map(StructureId).chain((119..=124).map(StructureId)).collect()
    }

    fn assigned(report: &LevelAssignment) -> Vec<u16> {
        report.instances.iter().map(|i| i.assigned_id.unwrap().0).collect()
    }

    fn truth(instances: &[Instance]) -> Vec<u16> {
        // Test columns carry their true level as their only evidence key unless shifted.
        instances.iter().map(|i| i.evidence.keys().next().unwrap().0).collect()
    }

    fn shift(id: StructureId, levels: i32) -> StructureId {
        let chain = column();
        let p = chain.iter().position(|(c, _)| *c == id).unwrap() as i32 + 2 * levels;
        chain[p as usize].0
    }

    /// A realistic column T12..L5 (bodies 25 mm tall, discs 10 mm, 18 mm apart) on a lordotic
    /// curve (anterior-posterior offset growing to 20 mm at L5) drifting 10 mm to the left.
    fn curved_column() -> Vec<Instance> {
        let mut out = column_of(T12, L5, true, |id| id);
        for (m, instance) in out.iter_mut().enumerate() {
            let t = m as f64 / 10.0;
            let z = 200.0 - 18.0 * m as f64;
            let height = if instance.kind == LevelKind::Vertebra { 25.0 } else { 10.0 };
            instance.centroid_mm = [10.0 * t, 20.0 * t * t, z];
            instance.bottom_mm = z - height / 2.0;
            instance.top_mm = z + height / 2.0;
        }
        out
    }

    #[test]
    fn structures_beside_or_in_front_of_the_spine_are_off_the_column() {
        let mut instances = curved_column();
        let truth = instances.len();
        assert!(on_column(&instances, &LevelOptions::default()).iter().all(|on| *on), "the curved column is one line");
        // A grade 2 spondylolisthesis: L4 slipped 15 mm forward stays on the column.
        let l4 = instances.iter().position(|i| i.evidence.contains_key(&vertebra(23))).unwrap();
        instances[l4].centroid_mm[1] += 15.0;
        assert!(on_column(&instances, &LevelOptions::default()).iter().all(|on| *on));
        // A "disc" 35 mm lateral at the height of L2/L3, and a large "body" 60 mm anterior
        // (bowel taken for a body) beside L4.
        let mut lateral = instances[5].clone();
        lateral.centroid_mm[0] += 35.0;
        let mut anterior = instances[8].clone();
        anterior.centroid_mm[1] -= 60.0;
        anterior.voxels = 300;
        instances.push(lateral);
        instances.push(anterior);
        let on = on_column(&instances, &LevelOptions::default());
        assert_eq!(on.iter().filter(|on| **on).count(), truth, "{on:?}");
        assert!(!on[truth] && !on[truth + 1]);
    }

    #[test]
    fn few_instances_or_a_lone_instance_are_kept() {
        let instances = curved_column();
        assert_eq!(on_column(&instances[..2], &LevelOptions::default()), vec![true, true]);
        // One instance far along the spine from all others has nothing to be compared with.
        let mut spaced = instances[..4].to_vec();
        spaced[3].centroid_mm = [50.0, 50.0, -400.0];
        assert_eq!(on_column(&spaced, &LevelOptions::default()), vec![true; 4]);
    }

    #[test]
    fn correct_evidence_is_kept_and_anchored_at_the_junction() {
        let instances = column_of(T12, L5, true, |id| id);
        let expected = truth(&instances);
        let report = assign_instances(&instances, 0.0, &model_classes(), &LevelOptions::default());
        assert_eq!(assigned(&report), expected);
        assert_eq!(report.anchor, Anchor::LumbosacralJunction);
        assert_eq!(report.shift_levels, 0);
        assert!(!report.ambiguous, "{:?}", report.reasons);
        assert!((report.confidence - 0.9).abs() < 1e-9);
        assert!(report.evidence_margin > 0.8, "{}", report.evidence_margin);
        assert!(report.summary().contains("anchor lumbosacral junction"), "{}", report.summary());
    }

    #[test]
    fn shifted_evidence_is_corrected_by_the_junction() {
        // The network names every structure one level too high (L5 called L4, ...) except the
        // L5/S1 disc, which it recognises.
        let true_ids = truth(&column_of(T12, L5, true, |id| id));
        let instances = column_of(T12, L5, true, |id| if id == L5_S1_DISC { id } else { shift(id, -1) });
        let report = assign_instances(&instances, 0.0, &model_classes(), &LevelOptions::default());
        assert_eq!(report.anchor, Anchor::LumbosacralJunction);
        assert_eq!(assigned(&report), true_ids);
        assert_eq!(report.shift_levels, 1, "named one level further down than the network did");
        assert!(report.evidence_margin < 0.0, "the anchor overrode the network: {}", report.evidence_margin);
        assert!(!report.ambiguous, "{:?}", report.reasons);
        // Without the junction rule's image extent (the disc at the image's edge) the network's
        // shifted names stand.
        let edge = instances.last().unwrap().centroid_mm[2];
        let report = assign_instances(&instances, edge, &model_classes(), &LevelOptions::default());
        assert_eq!(report.anchor, Anchor::NetworkEvidenceOnly);
        assert_eq!(report.shift_levels, 0);
    }

    #[test]
    fn missing_junction_uses_network_evidence_with_its_confidence() {
        // T10..L3 in view, no L5/S1 disc: the network's consecutive names, confidently.
        let instances = column_of(17, 22, true, |id| id);
        let expected = truth(&instances);
        let report = assign_instances(&instances, 0.0, &model_classes(), &LevelOptions::default());
        assert_eq!(report.anchor, Anchor::NetworkEvidenceOnly);
        assert_eq!(assigned(&report), expected);
        assert!(report.confidence > 0.5 && !report.ambiguous, "{report:?}");

        // Weak, split evidence: every instance half on its level, half on the one below.
        let mut weak = column_of(17, 22, true, |id| id);
        for i in &mut weak {
            let (&id, _) = i.evidence.iter().next().unwrap();
            i.evidence = BTreeMap::from([(id, 30.0), (shift(id, 1), 28.0)]);
        }
        let report = assign_instances(&weak, 0.0, &model_classes(), &LevelOptions::default());
        assert_eq!(report.anchor, Anchor::NetworkEvidenceOnly);
        assert!(report.confidence < 0.25, "{}", report.confidence);
        assert!(report.ambiguous);
        assert!(report.reasons[0].contains("junction not in view"), "{:?}", report.reasons);
        assert!(report.summary().contains("AMBIGUOUS"), "{}", report.summary());
    }

    #[test]
    fn six_lumbar_like_bodies_are_flagged_transitional() {
        // T12..L5 in view, but the top body looks lumbar too (named L1 by the network, as the
        // next one): counted up from the junction it is T12, and the scan says it is ambiguous.
        let instances = column_of(T12, L5, true, |id| if id == vertebra(T12) { vertebra(L1) } else { id });
        let report = assign_instances(&instances, 0.0, &model_classes(), &LevelOptions::default());
        assert_eq!(report.anchor, Anchor::LumbosacralJunction);
        assert_eq!(report.instances[0].assigned_id, Some(vertebra(T12)));
        assert!(report.ambiguous);
        assert!(report.reasons[0].contains("transitional vertebra suspected: 6 lumbar-like"), "{:?}", report.reasons);
    }

    #[test]
    fn vertebrae_and_discs_alternate_and_gaps_cost() {
        // The network calls two neighbouring bodies both L3 (and their disc L3/L4): consecutive
        // names force L2, L2/L3 (the disc between), L3.
        let mut instances = column_of(21, 22, false, |id| id);
        instances[0].evidence = BTreeMap::from([(vertebra(22), 90.0)]);
        instances[1].evidence = BTreeMap::from([(disc_below(22), 90.0)]);
        let report = assign_instances(&instances, 1e9, &model_classes(), &LevelOptions::default());
        let names: Vec<_> = report.instances.iter().map(|i| i.assigned_label.clone().unwrap()).collect();
        assert!(names == ["L2", "L2/L3", "L3"] || names == ["L3", "L3/L4", "L4"], "{names:?}");
        for pair in report.instances.windows(2) {
            assert_ne!(pair[0].kind, pair[1].kind, "vertebra and disc alternate here");
        }
        // A disc missing between two bodies is free: L1 and L2 stay L1 and L2.
        let two = vec![column_of(L1, L1, false, |id| id).remove(0), {
            let mut b = column_of(21, 21, false, |id| id).remove(0);
            b.centroid_mm[2] = 180.0;
            b
        }];
        let report = assign_instances(&two, 1e9, &model_classes(), &LevelOptions::default());
        assert_eq!(assigned(&report), vec![20, 21]);
        // A whole level (L2/L3, L3, L3/L4) not found: skipped where the spacing leaves a hole
        // for it, counted through where it does not.
        let mut holed = column_of(L1, L5, true, |id| id);
        holed.drain(3..6);
        let report = assign_instances(&holed, 0.0, &model_classes(), &LevelOptions::default());
        assert_eq!(assigned(&report), vec![20, 120, 21, 23, 123, 24, 124]);
        // Closed up: the two bodies 20 mm apart, room for the disc between them only.
        for (m, i) in holed.iter_mut().enumerate() {
            i.centroid_mm[2] = 200.0 - 10.0 * m as f64 - if m >= 3 { 10.0 } else { 0.0 };
            (i.bottom_mm, i.top_mm) = (i.centroid_mm[2] - 1.0, i.centroid_mm[2] + 1.0);
        }
        let report = assign_instances(&holed, 0.0, &model_classes(), &LevelOptions::default());
        assert_eq!(report.anchor, Anchor::LumbosacralJunction);
        assert_eq!(assigned(&report), vec![21, 121, 22, 23, 123, 24, 124]);
    }

    #[test]
    fn pieces_of_one_disc_share_its_level() {
        // The L5/S1 disc found as two pieces 2 mm apart: both L5/S1, the count above unchanged.
        let mut instances = column_of(L1, L5, true, |id| id);
        let mut piece = instances.last().unwrap().clone();
        piece.centroid_mm[2] -= 2.0;
        instances.push(piece);
        let report = assign_instances(&instances, 0.0, &model_classes(), &LevelOptions::default());
        let mut expected = truth(&instances[..instances.len() - 1]);
        expected.push(124);
        assert_eq!(assigned(&report), expected);
        assert_eq!(report.anchor, Anchor::LumbosacralJunction);
    }

    #[test]
    fn a_body_below_the_junction_disc_is_the_sacrum() {
        // The network calls S1 "L5": one body below the L5/S1 disc is not counted; two are.
        let mut instances = column_of(L1, L5, true, |id| id);
        let mut sacrum = instances[instances.len() - 2].clone();
        sacrum.centroid_mm[2] -= 20.0;
        instances.push(sacrum.clone());
        let report = assign_instances(&instances, -1000.0, &model_classes(), &LevelOptions::default());
        assert_eq!(report.anchor, Anchor::LumbosacralJunction);
        let last = report.instances.last().unwrap();
        assert!(last.below_junction && last.assigned_id.is_none() && !last.relabelled, "{last:?}");
        assert_eq!(report.instances[report.instances.len() - 2].assigned_id, Some(L5_S1_DISC));
        sacrum.centroid_mm[2] -= 20.0;
        instances.push(sacrum);
        let report = assign_instances(&instances, -1000.0, &model_classes(), &LevelOptions::default());
        assert_eq!(report.anchor, Anchor::NetworkEvidenceOnly);
        // Unless the two are pieces of one component split by the network's labels (a sacrum
        // labelled L5 at the top and L4 lower down is still one bone).
        let n = instances.len();
        for piece in &mut instances[n - 2..] {
            piece.split_from = Some(7);
        }
        let report = assign_instances(&instances, -1000.0, &model_classes(), &LevelOptions::default());
        assert_eq!(report.anchor, Anchor::LumbosacralJunction);
        assert!(report.instances[n - 2..].iter().all(|i| i.below_junction));
    }

    #[test]
    fn a_tilted_l5_body_is_put_above_the_junction_disc() {
        // L1 .. L5/S1, 10 mm apart; the L5 body's centroid 1 mm below the L5/S1 disc's.
        let mut instances: Vec<(usize, Instance)> = column_of(L1, L5, true, |id| id).into_iter().enumerate().collect();
        instances[8].1.centroid_mm[2] = 109.0;
        order_along_spine(&mut instances);
        assert_eq!(instances.iter().map(|(k, _)| *k).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
        // A body a whole step below the disc (the sacrum) stays below.
        instances[8].1.centroid_mm[2] = 100.0;
        order_along_spine(&mut instances);
        assert_eq!(instances.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4, 5, 6, 7, 9, 8]);
    }

    #[test]
    fn more_instances_than_levels_keep_the_network_labels() {
        let mut instances = Vec::new();
        for m in 0..40 {
            let mut i = column_of(L1, L1, false, |id| id).remove(0);
            i.centroid_mm[2] = -10.0 * m as f64;
            instances.push(i);
        }
        let report = assign_instances(&instances, -1e9, &model_classes(), &LevelOptions::default());
        assert!(report.ambiguous && report.reasons[0].contains("40 instances do not fit"), "{:?}", report.reasons);
        assert!(report.instances.iter().all(|i| i.assigned_id.is_none() && !i.relabelled));
        assert!(report.summary().contains("AMBIGUOUS"), "{}", report.summary());
    }

    /// One-hot probabilities of the network's arg max `seg`, as the softmax of a confident network.
    fn one_hot_scores(seg: &Volume<u8>, num_classes: usize) -> ClassScores {
        let voxels = seg.data().len();
        let mut data = vec![0f32; num_classes * voxels];
        for (p, &c) in seg.data().iter().enumerate() {
            data[c as usize * voxels + p] = 1.0;
        }
        ClassScores::new(seg.shape(), num_classes, data, Geometry::default()).unwrap()
    }

    #[test]
    fn tiny_label_volume_end_to_end() {
        // Classes: 0 background, 1 L3, 2 L4, 3 L5, 4 L3/L4, 5 L4/L5, 6 L5/S1, 7 spinal canal.
        let classes: Vec<StructureId> = [0, 22, 23, L5, 122, 123, 124, 61].map(StructureId).to_vec();
        // 2 x 2 x 24 voxels of 1 mm, RAS: k is superior. From the top: a body (k 20..23), disc
        // (18), body (13..16), disc (11), body (6..9), disc (4), then 4 mm of image below; a
        // 1-voxel body fragment at k 0 and canal voxels at i 1, j 1.
        let shape = [2, 2, 24];
        let mut seg = Volume::filled(shape, 0u8, Geometry::default());
        let mut truth = Volume::filled(shape, 0u8, Geometry::default());
        let mut fill = |k0: usize, k1: usize, network: u8, correct: u8| {
            for k in k0..=k1 {
                for j in 0..2 {
                    for i in 0..2 {
                        if (i, j) != (1, 1) {
                            seg.set([i, j, k], network);
                            truth.set([i, j, k], correct);
                        }
                    }
                }
            }
        };
        // The network: everything one level too high (the top body called L3 is L3: evidence
        // shifted except the junction disc), written as its arg max.
        fill(20, 23, 1, 1);
        fill(18, 18, 4, 4);
        fill(13, 16, 1, 2);
        fill(11, 11, 4, 5);
        fill(6, 9, 2, 3);
        fill(4, 4, 6, 6);
        seg.set([0, 0, 0], 3);
        truth.set([0, 0, 0], 3);
        for k in 0..24 {
            seg.set([1, 1, k], 7);
            truth.set([1, 1, k], 7);
        }
        let scores = one_hot_scores(&seg, classes.len());
        let report = assign_levels(&mut seg, &scores, &classes, &LevelOptions::default()).unwrap();
        assert_eq!(report.anchor, Anchor::LumbosacralJunction, "{report:?}");
        assert_eq!(report.fragments, 1);
        let names: Vec<_> = report.instances.iter().map(|i| i.assigned_label.clone().unwrap()).collect();
        assert_eq!(names, ["L3", "L3/L4", "L4", "L4/L5", "L5", "L5/S1"]);
        assert_eq!(seg, truth, "bodies and discs relabelled, fragment and canal untouched");
        assert_eq!(report.instances.iter().filter(|i| i.relabelled).count(), 3);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["anchor"], "lumbosacral junction");
        assert_eq!(json["instances"][2]["raw_label"], "L3");
        assert_eq!(json["instances"][2]["assigned_label"], "L4");

        // A model without level classes is not touched.
        assert!(!LevelOptions::applies_to(&[StructureId(0), StructureId(61)]));
        assert!(LevelOptions::applies_to(&classes));
    }

    #[test]
    fn touching_bodies_are_split_by_the_network_labels() {
        // Classes as above: 0 background, 1 L3, 2 L4, 3 L5, 4 L3/L4, 5 L4/L5, 6 L5/S1.
        let classes: Vec<StructureId> = [0, 22, 23, L5, 122, 123, 124].map(StructureId).to_vec();
        // 2 x 2 x 24 voxels of 1 mm, k superior. Bodies L3 (k 20..23), L4 (13..16), L5 (6..9);
        // each disc (k 18, 11, 4) covers only voxel (0, 0), and the body above reaches down past
        // it at (1, 1): every body touches the next, so the three are one component, as on a
        // scan where the network misses the rim of a thin disc. No component has a single
        // body's height, so the height of one body must come from the network's labels.
        let shape = [2, 2, 24];
        let mut seg = Volume::filled(shape, 0u8, Geometry::default());
        for (k0, k1, body, disc_k, disc) in [(20, 23, 1u8, 18, 4u8), (13, 16, 2, 11, 5), (6, 9, 3, 4, 6)] {
            for k in k0..=k1 {
                for j in 0..2 {
                    for i in 0..2 {
                        seg.set([i, j, k], body);
                    }
                }
            }
            seg.set([0, 0, disc_k], disc);
            if body != 3 {
                for k in disc_k - 1..k0 {
                    seg.set([1, 1, k], body);
                }
            }
        }
        let truth = seg.clone();
        let scores = one_hot_scores(&seg, classes.len());
        let report = assign_levels(&mut seg, &scores, &classes, &LevelOptions::default()).unwrap();
        let names: Vec<_> = report.instances.iter().map(|i| i.assigned_label.clone().unwrap()).collect();
        assert_eq!(names, ["L3", "L3/L4", "L4", "L4/L5", "L5", "L5/S1"], "{report:?}");
        assert_eq!(report.anchor, Anchor::LumbosacralJunction, "{report:?}");
        assert_eq!(report.fragments, 0);
        assert_eq!(seg, truth, "each body keeps its own level");
    }
}
