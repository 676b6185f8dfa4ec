//! Anatomy-aware text prompts (ATM-Net's Anatomy-aware Text Prompt Generator, ATPG).
//!
//! Two kinds of prompt:
//! - **class prompts** ([`class_prompt`]): one per structure, from the ontology alone (name, kind,
//!   region and level, neighbours above and below). Used at inference, when no annotation exists,
//!   and embedded once into a model folder.
//! - **observed prompts** ([`observe`] + [`observed_prompt`]): one per structure visible in a view
//!   of an annotated case (a sagittal slice, an axial slice or the whole volume), adding where it
//!   lies in the visible field, whether it is fully visible or cut by the edge of the field of
//!   view, and which of its neighbours are visible too.
//!
//! Label volumes are in canonical RAS (`i` towards the patient's right, `j` anterior, `k`
//! superior, `i` fastest), as everywhere in spineseg; label values are ontology ids.

use crate::ontology::{Ontology, Region, Structure, StructureId, StructureKind};

/// The view a prompt describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The sagittal slice `i = index` (rows superior-inferior, columns anterior-posterior).
    Sagittal(usize),
    /// The axial slice `k = index` (rows anterior-posterior, columns left-right).
    Axial(usize),
    /// The whole volume.
    Volume,
}

impl View {
    fn noun(self) -> &'static str {
        match self {
            View::Sagittal(_) => "sagittal MRI slice",
            View::Axial(_) => "axial MRI slice",
            View::Volume => "MRI volume",
        }
    }
}

/// Where a structure lies in one view.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub id: StructureId,
    /// Voxels of the structure in the view.
    pub voxels: usize,
    /// Centre of mass as fractions of the field of view (0..1) along i (right), j (anterior)
    /// and k (superior); the axis a slice view fixes is 0.5.
    pub centre: [f64; 3],
    /// The structure touches the edge of the field of view in an axis the view shows, so part of
    /// it may lie outside.
    pub cut_by_edge: bool,
}

/// Structures visible in `view` of a label volume (`labels`, shape `[ni, nj, nk]`, i fastest,
/// values ontology ids; 0 and ids the ontology does not know are skipped), in id order.
///
/// # Panics
/// When `labels.len()` is not `ni * nj * nk` or the slice index is out of range.
pub fn observe(labels: &[u16], shape: [usize; 3], view: View) -> Vec<Observation> {
    let [ni, nj, nk] = shape;
    assert_eq!(labels.len(), ni * nj * nk, "labels should hold ni * nj * nk values");
    let (i_range, k_range) = match view {
        View::Sagittal(i) => {
            assert!(i < ni, "sagittal slice {i} is outside 0..{ni}");
            (i..i + 1, 0..nk)
        }
        View::Axial(k) => {
            assert!(k < nk, "axial slice {k} is outside 0..{nk}");
            (0..ni, k..k + 1)
        }
        View::Volume => (0..ni, 0..nk),
    };
    // Which axes the view shows (a slice's fixed axis has no edge to be cut by).
    let shows = [!matches!(view, View::Sagittal(_)), true, !matches!(view, View::Axial(_))];
    let ontology = Ontology::standard();
    // Per label value: voxel count, coordinate sums, edge contact.
    let mut stats: std::collections::BTreeMap<u16, (usize, [f64; 3], bool)> = Default::default();
    for k in k_range {
        for j in 0..nj {
            for i in i_range.clone() {
                let v = labels[i + ni * (j + nj * k)];
                if v == 0 {
                    continue;
                }
                let entry = stats.entry(v).or_insert((0, [0.0; 3], false));
                entry.0 += 1;
                for (axis, (&c, &n)) in [i, j, k].iter().zip(&shape).enumerate() {
                    entry.1[axis] += c as f64;
                    if shows[axis] && (c == 0 || c + 1 == n) {
                        entry.2 = true;
                    }
                }
            }
        }
    }
    stats
        .into_iter()
        .filter(|(v, _)| ontology.get(StructureId(*v)).is_some())
        .map(|(v, (count, sums, cut_by_edge))| {
            let centre = std::array::from_fn(|axis| {
                if shows[axis] {
                    (sums[axis] / count as f64 + 0.5) / shape[axis] as f64
                } else {
                    0.5
                }
            });
            Observation { id: StructureId(v), voxels: count, centre, cut_by_edge }
        })
        .collect()
}

fn structure(id: StructureId) -> Option<&'static Structure> {
    Ontology::standard().get(id)
}

fn region_word(region: Region) -> &'static str {
    match region {
        Region::Cervical => "cervical",
        Region::Thoracic => "thoracic",
        Region::Lumbar => "lumbar",
        Region::Sacral => "sacral",
        Region::Coccygeal => "coccygeal",
    }
}

/// What a structure is, in words: "a lumbar vertebral body at level L4".
fn what_it_is(s: &Structure) -> String {
    match (s.kind, s.level) {
        (StructureKind::Vertebra, Some(level)) => {
            format!("a {} vertebral body at level {}", region_word(level.region), level.short_name())
        }
        (StructureKind::Disc, Some(level)) => {
            format!("the {} intervertebral disc below the {} vertebra", region_word(level.region), level.short_name())
        }
        (StructureKind::Sacrum, _) => "the sacrum, the fused sacral vertebrae below L5".to_string(),
        (StructureKind::Coccyx, _) => "the coccyx, below the sacrum".to_string(),
        (StructureKind::SpinalCanal, _) => "the spinal canal, the fluid-filled space behind the vertebral bodies".to_string(),
        (StructureKind::SpinalCord, _) => "the spinal cord inside the spinal canal".to_string(),
        (StructureKind::PosteriorElements, _) => {
            "the posterior elements, the vertebral arches and processes behind the canal".to_string()
        }
        _ => s.kind.description().to_string(),
    }
}

fn display(id: StructureId) -> String {
    structure(id).map_or_else(|| format!("structure {id}"), |s| s.display_name.clone())
}

/// The class-level prompt of a structure, from the ontology alone, e.g. "L4 vertebral body: a
/// lumbar vertebral body at level L4, between the L3/L4 intervertebral disc above and the L4/L5
/// intervertebral disc below." `None` for an id the ontology does not know.
pub fn class_prompt(id: StructureId) -> Option<String> {
    let s = structure(id)?;
    let mut text = format!("{}: {}", s.display_name, what_it_is(s));
    match (s.above, s.below) {
        (Some(above), Some(below)) => {
            text += &format!(", between the {} above and the {} below", display(above), display(below))
        }
        (Some(above), None) => text += &format!(", below the {}", display(above)),
        (None, Some(below)) => text += &format!(", above the {}", display(below)),
        (None, None) => {}
    }
    text.push('.');
    Some(text)
}

/// The prompt of the background class.
pub const BACKGROUND_PROMPT: &str = "background: tissue and air that are not a labelled spinal structure.";

fn third(fraction: f64, low: &'static str, middle: &'static str, high: &'static str) -> &'static str {
    if fraction < 1.0 / 3.0 {
        low
    } else if fraction > 2.0 / 3.0 {
        high
    } else {
        middle
    }
}

/// The prompt of one observed structure in `view`; `visible` lists every structure observed in
/// the same view (to say which neighbours are visible). E.g. "sagittal MRI slice: the L4
/// vertebral body, a lumbar vertebral body at level L4, fully visible in the lower part of the
/// field of view, towards the front; above it the L3/L4 intervertebral disc (visible), below it
/// the L4/L5 intervertebral disc (not visible)."
pub fn observed_prompt(observation: &Observation, view: View, visible: &[StructureId]) -> Option<String> {
    let s = structure(observation.id)?;
    let [right, anterior, superior] = observation.centre;
    let mut position = vec![match view {
        View::Axial(_) => third(right, "left of centre", "central", "right of centre").to_string(),
        _ => format!("in the {} part of the field of view", third(superior, "lower", "middle", "upper")),
    }];
    position.push(third(anterior, "towards the back", "in the middle front to back", "towards the front").to_string());
    let visibility = if observation.cut_by_edge { "partly visible, cut by the edge of the image" } else { "fully visible" };
    let mut text = format!("{}: the {}, {}, {} {}", view.noun(), s.display_name, what_it_is(s), visibility, position.join(", "));
    let seen = |id: StructureId| if visible.contains(&id) { "visible" } else { "not visible" };
    if let Some(above) = s.above {
        text += &format!("; above it the {} ({})", display(above), seen(above));
    }
    if let Some(below) = s.below {
        text += &format!("; below it the {} ({})", display(below), seen(below));
    }
    text.push('.');
    Some(text)
}

/// Prompts of every structure visible in `view`, in id order.
pub fn view_prompts(labels: &[u16], shape: [usize; 3], view: View) -> Vec<(StructureId, String)> {
    let observations = observe(labels, shape, view);
    let visible: Vec<StructureId> = observations.iter().map(|o| o.id).collect();
    observations.iter().filter_map(|o| observed_prompt(o, view, &visible).map(|p| (o.id, p))).collect()
}

/// Every prompt [`observed_prompt`] can give structure `id` in a sagittal slice: each third of
/// the field of view up-down and front-back, fully visible or cut by the edge, each neighbour
/// visible or not (at most 72). Empty for an id the ontology does not know. Training embeds
/// these once, so a per-view prompt never needs the encoder during a step.
pub fn sagittal_prompt_variants(id: StructureId) -> Vec<String> {
    let Some(s) = structure(id) else { return Vec::new() };
    let thirds = [1.0 / 6.0, 0.5, 5.0 / 6.0];
    let neighbour_sets: Vec<Vec<StructureId>> = {
        let above: Vec<Option<StructureId>> = s.above.map_or(vec![None], |a| vec![None, Some(a)]);
        let below: Vec<Option<StructureId>> = s.below.map_or(vec![None], |b| vec![None, Some(b)]);
        above.iter().flat_map(|a| below.iter().map(move |b| a.iter().chain(b).copied().collect())).collect()
    };
    let mut variants = Vec::new();
    for superior in thirds {
        for anterior in thirds {
            for cut_by_edge in [false, true] {
                let observation = Observation { id, voxels: 1, centre: [0.5, anterior, superior], cut_by_edge };
                for visible in &neighbour_sets {
                    variants.extend(observed_prompt(&observation, View::Sagittal(0), visible));
                }
            }
        }
    }
    variants
}

/// [`view_prompts`] of a 2D sagittal patch stored `[j, k]` in C order (`k` fastest, as a 2D
/// training batch holds it) with ontology ids as values.
///
/// # Panics
/// When `labels.len()` is not `nj * nk`.
pub fn sagittal_patch_prompts(labels_jk: &[u16], nj: usize, nk: usize) -> Vec<(StructureId, String)> {
    assert_eq!(labels_jk.len(), nj * nk, "labels should hold nj * nk values");
    // To the i-fastest order of a one-slice volume: flat index j + nj * k.
    let mut volume = vec![0u16; nj * nk];
    for j in 0..nj {
        for k in 0..nk {
            volume[j + nj * k] = labels_jk[j * nk + k];
        }
    }
    view_prompts(&volume, [1, nj, nk], View::Sagittal(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const L3: u16 = 22;
    const L4: u16 = 23;
    const L4_L5: u16 = 123;

    #[test]
    fn class_prompts_name_kind_level_and_neighbours() {
        assert_eq!(
            class_prompt(StructureId(L4)).unwrap(),
            "L4 vertebral body: a lumbar vertebral body at level L4, between the L3/L4 intervertebral disc above and the L4/L5 intervertebral disc below."
        );
        let disc = class_prompt(StructureId(L4_L5)).unwrap();
        assert!(disc.starts_with("L4/L5 intervertebral disc: the lumbar intervertebral disc below the L4 vertebra"), "{disc}");
        assert!(disc.contains("between the L4 vertebral body above and the L5 vertebral body below"), "{disc}");
        assert!(class_prompt(StructureId(61)).unwrap().contains("spinal canal"));
        assert_eq!(class_prompt(StructureId(999)), None);
        // Neighbouring look-alikes get different prompts.
        assert_ne!(class_prompt(StructureId(L3)), class_prompt(StructureId(L4)));
    }

    /// A 4 x 6 x 9 volume: L4 in the lower front of the middle sagittal slices, the L4/L5 disc
    /// below it touching the inferior edge.
    fn tiny_case() -> (Vec<u16>, [usize; 3]) {
        let shape = [4, 6, 9];
        let mut labels = vec![0u16; 4 * 6 * 9];
        for i in 1..3 {
            for j in 4..6 {
                for k in 1..3 {
                    labels[i + 4 * (j + 6 * k)] = L4;
                }
                labels[i + 4 * j] = L4_L5; // k = 0
            }
        }
        (labels, shape)
    }

    #[test]
    fn observations_locate_structures_and_edges() {
        let (labels, shape) = tiny_case();
        let obs = observe(&labels, shape, View::Volume);
        assert_eq!(obs.iter().map(|o| o.id.0).collect::<Vec<_>>(), [L4, L4_L5]);
        let l4 = &obs[0];
        assert_eq!(l4.voxels, 8);
        // j centre (4.5 + 0.5) / 6, k centre (1.5 + 0.5) / 9.
        assert!((l4.centre[1] - 5.0 / 6.0).abs() < 1e-12 && (l4.centre[2] - 2.0 / 9.0).abs() < 1e-12);
        // L4 touches the anterior edge (j = 5) of the field of view; the disc also k = 0.
        assert!(l4.cut_by_edge && obs[1].cut_by_edge);
        // A sagittal slice outside the structures sees nothing; one through them sees both.
        assert!(observe(&labels, shape, View::Sagittal(0)).is_empty());
        let sagittal = observe(&labels, shape, View::Sagittal(1));
        assert_eq!(sagittal.len(), 2);
        assert_eq!(sagittal[0].voxels, 4);
        assert_eq!(sagittal[0].centre[0], 0.5);
        // The axial slice k = 4 holds nothing; k = 1 only L4.
        assert!(observe(&labels, shape, View::Axial(4)).is_empty());
        assert_eq!(observe(&labels, shape, View::Axial(1)).len(), 1);
    }

    #[test]
    fn observed_prompts_carry_position_visibility_and_neighbours() {
        let (labels, shape) = tiny_case();
        let prompts = view_prompts(&labels, shape, View::Sagittal(1));
        let l4 = &prompts[0].1;
        assert!(l4.starts_with("sagittal MRI slice: the L4 vertebral body, a lumbar vertebral body at level L4"), "{l4}");
        assert!(l4.contains("partly visible"), "{l4}");
        assert!(l4.contains("lower part of the field of view") && l4.contains("towards the front"), "{l4}");
        assert!(l4.contains("above it the L3/L4 intervertebral disc (not visible)"), "{l4}");
        assert!(l4.contains("below it the L4/L5 intervertebral disc (visible)"), "{l4}");
        // Fully visible when away from the edges.
        let mut centred = vec![0u16; 5 * 5 * 5];
        centred[2 + 5 * (2 + 5 * 2)] = L4;
        let p = view_prompts(&centred, [5, 5, 5], View::Axial(2));
        assert!(p[0].1.starts_with("axial MRI slice") && p[0].1.contains("fully visible") && p[0].1.contains("central"), "{}", p[0].1);
    }

    #[test]
    fn every_sagittal_patch_prompt_is_among_the_variants() {
        // L4 has two neighbours: 3 x 3 positions x 2 edge states x 4 neighbour states.
        let l4 = sagittal_prompt_variants(StructureId(L4));
        assert_eq!(l4.len(), 72);
        assert_eq!(l4.iter().collect::<std::collections::BTreeSet<_>>().len(), 72, "variants are distinct");
        assert!(sagittal_prompt_variants(StructureId(999)).is_empty());
        // Patches of random blocks of L3, the L3/L4 disc, L4 and the L4/L5 disc, at random
        // places (a fixed linear congruential sequence): every prompt they give is a variant.
        let ids = [L3, 122, L4, L4_L5];
        let variants: std::collections::BTreeSet<String> =
            ids.iter().flat_map(|&id| sagittal_prompt_variants(StructureId(id))).collect();
        let mut state = 12345u64;
        let mut next = |n: usize| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) % n as u64) as usize
        };
        let (nj, nk) = (12, 15);
        let mut seen = 0;
        for _ in 0..200 {
            let mut labels = vec![0u16; nj * nk];
            for &id in &ids[..1 + next(4)] {
                let (j0, k0) = (next(nj), next(nk));
                for j in j0..(j0 + 1 + next(5)).min(nj) {
                    for k in k0..(k0 + 1 + next(5)).min(nk) {
                        labels[j * nk + k] = id;
                    }
                }
            }
            for (_, prompt) in sagittal_patch_prompts(&labels, nj, nk) {
                assert!(variants.contains(&prompt), "{prompt}");
                seen += 1;
            }
        }
        assert!(seen > 200);
    }

    #[test]
    fn a_patch_is_read_with_k_fastest_and_k_superior() {
        // 6 x 6 patch ([j, k], k fastest): L4 at j = 1 (back), k = 4 (superior), off the edges.
        let (nj, nk) = (6, 6);
        let mut labels = vec![0u16; nj * nk];
        labels[nk + 4] = L4;
        let prompts = sagittal_patch_prompts(&labels, nj, nk);
        assert_eq!(prompts.len(), 1);
        let p = &prompts[0].1;
        assert!(p.contains("upper part of the field of view") && p.contains("towards the back") && p.contains("fully visible"), "{p}");
    }
}
