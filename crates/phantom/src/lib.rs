//! Procedural sagittal lumbar-spine MRI phantoms with exact labels, deterministic from a seed.
//!
//! One case is a stack of sagittal slices (a typical lumbar protocol: slices 3-5 mm apart, pixels
//! 0.3-0.9 mm in plane) showing 4 to 9 levels between T9 and the sacrum, in T1- or T2-like
//! contrast, with a smooth coil bias field and Rician noise; labels use the ontology ids
//! (vertebral bodies by level, discs, sacrum 26, spinal canal 61, posterior elements 40).
//!
//! # Voxel orientation
//! Voxel axis `i` points Inferior, `j` Posterior and `k` to the patient's Right (orientation code
//! "IPR", the same as the lumbar-real scans), with a small random oblique tilt of the `i`/`j`
//! axes about the left-right axis (up to [`PhantomConfig::max_tilt_deg`]). Voxel `[0, 0, 0]` is
//! the superior, anterior, leftmost corner; the field of view is centred near the scanner's
//! isocentre (world origin), as in real acquisitions.
//!
//! # Determinism
//! A case depends only on `(config, seed, case_index)`: the random stream is ChaCha8 seeded with
//! `seed` on stream `case_index`, every slice draws its noise from its own stream (so the result
//! does not depend on thread scheduling), and no platform libm function is used (see
//! [`detmath`]). The same inputs give bit-identical volumes on every machine.
//!
//! # Anatomy
//! See [`anatomy`] for the model: rigid vertebral bodies (cortical rim, marrow, wedge, waist,
//! endplate concavity) on a lordotic centreline, discs with annulus and nucleus (degenerating
//! with age and level), the dural sac with the cord ending near L1/L2 and the cauda equina below,
//! pedicles, articular pillars, laminae, spinous and transverse processes, a five-segment sacrum,
//! paraspinal muscles, subcutaneous fat, psoas, aorta, IVC, liver, lung base and bowel.

pub mod anatomy;
pub mod detmath;
pub mod error;

use crate::error::{PhantomError, Result};
use spineseg_anatomy::ontology::{Ontology, StructureId, POSTERIOR_ELEMENTS, SACRUM, SPINAL_CANAL};
use anatomy::{PixelCoords, Spine, Tissue, DS, TISSUE_COUNT, V2};
use detmath::{deg, normal_pair, sin_cos};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use spineseg_datasets::nnunet::DATASET_FILE;
use spineseg_io::{AnyVolume, Geometry, Label, Spacing, Volume, VoxelData};
use std::path::{Path, PathBuf};

/// Version of the generator; bumped whenever the output for a given seed and config changes.
pub const PHANTOM_VERSION: &str = "1.0.0";

/// MRI contrast of a phantom case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Contrast {
    /// T1-weighted: fat and marrow bright, CSF dark, discs intermediate.
    T1,
    /// T2-weighted (fast spin echo): CSF and healthy nuclei bright, marrow intermediate.
    T2,
}

impl Contrast {
    pub fn name(self) -> &'static str {
        match self {
            Contrast::T1 => "T1",
            Contrast::T2 => "T2",
        }
    }
}

/// Settings of the phantom generator. Ranges are `[low, high]` and sampled per case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PhantomConfig {
    /// In-plane pixel spacing (square pixels), mm. Raised per case when needed so that the
    /// field of view fits in `max_in_plane_matrix` pixels.
    pub in_plane_spacing_mm: [f64; 2],
    /// Distance between sagittal slices, mm.
    pub slice_spacing_mm: [f64; 2],
    /// Number of sagittal slices.
    pub slices: [usize; 2],
    /// Largest in-plane matrix (either axis), pixels.
    pub max_in_plane_matrix: usize,
    /// Number of bones (vertebrae and the sacrum) in view; within 4..=9.
    pub levels_visible: [usize; 2],
    /// Probability that the field of view reaches down into the sacrum (otherwise it ends in L5
    /// or L4).
    pub sacrum_probability: f64,
    /// Fixed contrast, or `None` to draw T1 or T2 per case.
    pub contrast: Option<Contrast>,
    /// Probability of T2 when the contrast is drawn.
    pub t2_probability: f64,
    /// Largest oblique tilt of the slice plane's axes about left-right, degrees.
    pub max_tilt_deg: f64,
    /// Standard deviation of the complex Gaussian noise (Rician after the magnitude), in image
    /// intensity units (tissue intensities span about 0..1000).
    pub noise_sigma: [f64; 2],
    /// 0 = no bias field, 1 = a typical posterior spine-coil profile times a smooth polynomial.
    pub bias_strength: f64,
    /// Points averaged across each slice's thickness (1 = none): partial-volume blurring between
    /// slices, as thick sagittal slices show.
    pub lateral_samples: usize,
}

impl Default for PhantomConfig {
    /// Realistic scans: pixels 0.3-0.9 mm, up to 512 x 512, 13-19 slices 3-5 mm apart.
    fn default() -> Self {
        PhantomConfig {
            in_plane_spacing_mm: [0.3, 0.9],
            slice_spacing_mm: [3.0, 5.0],
            slices: [13, 19],
            max_in_plane_matrix: 512,
            levels_visible: [4, 9],
            sacrum_probability: 0.8,
            contrast: None,
            t2_probability: 0.5,
            max_tilt_deg: 6.0,
            noise_sigma: [6.0, 20.0],
            bias_strength: 1.0,
            lateral_samples: 1,
        }
    }
}

impl PhantomConfig {
    /// Small, fast cases for tests and demos: at most 160 pixels in plane (so the in-plane
    /// spacing is proportionally coarser, 1.0-2.5 mm), 8-12 slices 3.5-5 mm apart, one lateral
    /// sample. Anatomy, contrast and labels are the same as at full size.
    pub fn small() -> Self {
        PhantomConfig {
            in_plane_spacing_mm: [1.0, 2.5],
            slice_spacing_mm: [3.5, 5.0],
            slices: [8, 12],
            max_in_plane_matrix: 160,
            lateral_samples: 1,
            ..PhantomConfig::default()
        }
    }

    /// Checks the ranges; the error names the offending field.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(PhantomError::InvalidConfig(format!("invalid phantom config: {what}")));
        let range_ok = |r: [f64; 2]| r[0].is_finite() && r[1].is_finite() && r[0] > 0.0 && r[0] <= r[1];
        if !range_ok(self.in_plane_spacing_mm) {
            return bad(format!("in_plane_spacing_mm {:?}", self.in_plane_spacing_mm));
        }
        if !range_ok(self.slice_spacing_mm) {
            return bad(format!("slice_spacing_mm {:?}", self.slice_spacing_mm));
        }
        if self.slices[0] == 0 || self.slices[0] > self.slices[1] {
            return bad(format!("slices {:?}", self.slices));
        }
        if self.max_in_plane_matrix < 16 {
            return bad(format!("max_in_plane_matrix {} (at least 16)", self.max_in_plane_matrix));
        }
        let [lo, hi] = self.levels_visible;
        if lo < 4 || hi > 9 || lo > hi {
            return bad(format!("levels_visible {:?} (must lie within 4..=9)", self.levels_visible));
        }
        for (name, p) in [("sacrum_probability", self.sacrum_probability), ("t2_probability", self.t2_probability)] {
            if !(0.0..=1.0).contains(&p) {
                return bad(format!("{name} {p}"));
            }
        }
        if !(0.0..=20.0).contains(&self.max_tilt_deg) {
            return bad(format!("max_tilt_deg {} (0..=20)", self.max_tilt_deg));
        }
        if !(self.noise_sigma[0] >= 0.0
            && self.noise_sigma[0] <= self.noise_sigma[1]
            && self.noise_sigma[1].is_finite())
        {
            return bad(format!("noise_sigma {:?}", self.noise_sigma));
        }
        if !(0.0..=2.0).contains(&self.bias_strength) {
            return bad(format!("bias_strength {}", self.bias_strength));
        }
        if !(1..=8).contains(&self.lateral_samples) {
            return bad(format!("lateral_samples {} (1..=8)", self.lateral_samples));
        }
        Ok(())
    }
}

/// One generated case.
#[derive(Debug, Clone)]
pub struct PhantomCase {
    /// Intensities, roughly 0..1000 (f32), voxel axes I, P, R (see the module docs).
    pub image: Volume<f32>,
    /// Ontology ids, same grid and geometry as `image`.
    pub labels: Volume<Label>,
    pub contrast: Contrast,
    /// Vertebrae and the sacrum present in `labels`, superior to inferior.
    pub levels: Vec<StructureId>,
    /// Discs present in `labels`, superior to inferior.
    pub discs: Vec<StructureId>,
    /// Oblique tilt of the slice axes about left-right, degrees.
    pub tilt_deg: f64,
    pub seed: u64,
    pub case_index: usize,
}

/// Every label id the generator can write: T9..L5, the sacrum, the discs T9/T10..L5/S1, the
/// spinal canal and the posterior elements, ascending.
pub fn producible_labels() -> Vec<StructureId> {
    let mut ids: Vec<StructureId> = (16..=24).chain([26]).chain(116..=124).map(StructureId).collect();
    ids.push(POSTERIOR_ELEMENTS);
    ids.push(SPINAL_CANAL);
    ids.sort();
    ids
}

/// Base intensities (T1, T2) of each tissue, in the order of [`Tissue`].
const TISSUE_INTENSITY: [(f64, f64); TISSUE_COUNT] = [
    (0.0, 0.0),     // Air
    (300.0, 260.0), // Skin
    (880.0, 640.0), // Fat
    (330.0, 190.0), // Muscle
    (55.0, 45.0),   // Cortex
    (580.0, 400.0), // Marrow
    (280.0, 150.0), // Annulus
    (330.0, 820.0), // Nucleus
    (140.0, 960.0), // Csf
    (420.0, 380.0), // Cord
    (360.0, 330.0), // Root
    (80.0, 70.0),   // Ligament
    (90.0, 70.0),   // Vessel
    (430.0, 170.0), // Liver
    (360.0, 430.0), // Bowel
    (40.0, 30.0),   // Lung
];

/// What a case will look like, without rendering it (cheap: for dry runs and tests).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CasePlan {
    pub contrast: Contrast,
    pub shape: [usize; 3],
    pub spacing_mm: [f64; 3],
    /// Levels the field of view was planned around, superior to inferior (the rendered labels
    /// may add a sliver of a neighbour at an edge; [`PhantomCase::levels`] is what is present).
    pub planned_levels: Vec<StructureId>,
    pub tilt_deg: f64,
}

fn sample_case(config: &PhantomConfig, seed: u64, case_index: usize) -> Result<(ChaCha8Rng, Contrast, Spine, Layout)> {
    config.validate()?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(case_index as u64);
    let contrast =
        config
            .contrast
            .unwrap_or_else(|| if rng.gen_bool(config.t2_probability) { Contrast::T2 } else { Contrast::T1 });
    let spine = Spine::sample(&mut rng);
    let layout = Layout::sample(config, &spine, &mut rng);
    Ok((rng, contrast, spine, layout))
}

/// Plans case `case_index` (same random draws as [`generate_case`]) without rendering it.
pub fn plan_case(config: &PhantomConfig, seed: u64, case_index: usize) -> Result<CasePlan> {
    let (_, contrast, spine, layout) = sample_case(config, seed, case_index)?;
    Ok(CasePlan {
        contrast,
        shape: layout.shape,
        spacing_mm: layout.geometry.spacing.mm(),
        planned_levels: layout.planned.iter().map(|&k| StructureId(spine.bones[k].label)).collect(),
        tilt_deg: layout.tilt_deg,
    })
}

/// Generates case `case_index` of the dataset with this `seed`.
pub fn generate_case(config: &PhantomConfig, seed: u64, case_index: usize) -> Result<PhantomCase> {
    let (mut rng, contrast, spine, layout) = sample_case(config, seed, case_index)?;
    let appearance = Appearance::sample(config, contrast, &mut rng);
    let noise_seed: u64 = rng.gen();
    let [ni, nj, nk] = layout.shape;

    // Sagittal-plane coordinates of every in-plane pixel, shared by all slices.
    let pixels: Vec<PixelCoords> = (0..nj)
        .into_par_iter()
        .flat_map_iter(|j| {
            let (mut h1, mut h2) = (usize::MAX, usize::MAX);
            let spine = &spine;
            let layout = &layout;
            (0..ni).map(move |i| spine.pixel_coords(layout.point(i, j), &mut h1, &mut h2))
        })
        .collect();

    let plane = ni * nj;
    let mut image = vec![0f32; plane * nk];
    let mut labels = vec![0 as Label; plane * nk];
    image.par_chunks_mut(plane).zip(labels.par_chunks_mut(plane)).enumerate().for_each(|(k, (image, labels))| {
        let mut rng = ChaCha8Rng::seed_from_u64(noise_seed);
        rng.set_stream(k as u64);
        render_slice(&spine, &layout, &appearance, config, &pixels, k, image, labels, &mut rng);
    });

    let image = Volume::new(layout.shape, image, layout.geometry).expect("image buffer should match the shape");
    let labels = Volume::new(layout.shape, labels, layout.geometry).expect("label buffer should match the shape");
    let mut counts = vec![0usize; 256];
    for &l in labels.data() {
        counts[(l as usize).min(255)] += 1;
    }
    let present = |id: u16| counts[id as usize] > 0;
    let levels = (15..=24).chain([SACRUM.0]).filter(|&id| present(id)).map(StructureId).collect();
    let discs = (115..=124).filter(|&id| present(id)).map(StructureId).collect();
    Ok(PhantomCase { image, labels, contrast, levels, discs, tilt_deg: layout.tilt_deg, seed, case_index })
}

/// Field of view and voxel grid of one case.
#[derive(Debug, Clone)]
struct Layout {
    shape: [usize; 3],
    geometry: Geometry,
    /// Sagittal position (u, v) of pixel (0, 0) and the unit steps of i and j (times spacing).
    p0: V2,
    step_i: V2,
    step_j: V2,
    /// Lateral position (w) of slice 0 and the slice spacing.
    w0: f64,
    slice_mm: f64,
    pixel_mm: f64,
    tilt_deg: f64,
    /// Indices into `Spine::bones` of the bones the field of view was planned around.
    planned: Vec<usize>,
}

impl Layout {
    fn point(&self, i: usize, j: usize) -> V2 {
        let (i, j) = (i as f64, j as f64);
        [self.p0[0] + i * self.step_i[0] + j * self.step_j[0], self.p0[1] + i * self.step_i[1] + j * self.step_j[1]]
    }

    fn sample(config: &PhantomConfig, spine: &Spine, rng: &mut impl Rng) -> Layout {
        // Which bones are in view: index into spine.bones (0 = T8, 1 = T9, ..., 9 = L5, 10 = S1).
        let bottom: usize = if rng.gen_bool(config.sacrum_probability) {
            10
        } else if rng.gen_bool(0.75) {
            9
        } else {
            8
        };
        let [lo, hi] = config.levels_visible;
        // The top bone is T9 (index 1) at the highest. Ending in L5, a corner of the tilted
        // sacrum's dorsal surface may still show, so leave room for it in the count.
        let most = if bottom == 9 { bottom.min(hi - 1).max(lo) } else { bottom.min(hi) };
        let count = rng.gen_range(lo.min(most)..=most);
        let top = bottom + 1 - count;

        let tilt_deg = rng.gen_range(-config.max_tilt_deg..=config.max_tilt_deg);
        let (sin, cos) = sin_cos(deg(tilt_deg));
        let e_i = [sin, -cos]; // towards inferior
        let e_j = [-cos, -sin]; // towards posterior
        let height = |p: V2| -(p[0] * e_i[0] + p[1] * e_i[1]);
        let depth = |p: V2| -(p[0] * e_j[0] + p[1] * e_j[1]);

        // The top edge cuts through the top body, below the reach of the disc above it (so the
        // level above is not in view); likewise the bottom edge when it ends in L4 or L5.
        let cut_range = |k: usize| -> (f64, f64) {
            let bone = &spine.bones[k];
            let reach = bone.half_height - bone.concavity - 1.1 - 0.5 * bone.wedge.abs();
            let (front, back) = (bone.a_ant + 2.5, -bone.a_post - 2.5);
            let upper = [bone.world(front, reach), bone.world(back, reach)].map(height);
            let lower = [bone.world(front, -reach), bone.world(back, -reach)].map(height);
            (lower[0].max(lower[1]), upper[0].min(upper[1]))
        };
        let pick = |(lo, hi): (f64, f64), centre: f64, rng: &mut dyn rand::RngCore| -> f64 {
            if hi - lo > 1.0 {
                rng.gen_range(lo + 0.25 * (hi - lo)..hi - 0.1 * (hi - lo))
            } else {
                centre
            }
        };
        let h_top = pick(cut_range(top), height(spine.bones[top].centre), rng);
        let h_bottom = if bottom == 10 {
            let (a, b) = (height(spine.bones[11].centre), height(spine.bones[13].centre));
            rng.gen_range(b..a)
        } else {
            let (lo, hi) = cut_range(bottom);
            // Keep most of the bottom body in view.
            pick((lo + 0.2 * (hi - lo), lo + 0.8 * (hi - lo)), height(spine.bones[bottom].centre), rng)
        };
        let fov_si = h_top - h_bottom;
        let fov_ap = (fov_si * rng.gen_range(0.85..1.1)).clamp(200.0, 340.0);
        let min_spacing = fov_si.max(fov_ap) / config.max_in_plane_matrix as f64;
        let [sp_lo, sp_hi] = config.in_plane_spacing_mm;
        let pixel_mm = if min_spacing >= sp_hi { min_spacing } else { rng.gen_range(sp_lo.max(min_spacing)..=sp_hi) };

        // Posterior edge a little behind the back's skin over the field of view.
        let mut g_back = f64::INFINITY;
        for i in (0..spine.soft.pts.len()).step_by(8) {
            let skin = spine.skin_back_depth(i);
            let p = [
                spine.soft.pts[i][0] - spine.soft.nrm[i][0] * skin,
                spine.soft.pts[i][1] - spine.soft.nrm[i][1] * skin,
            ];
            let h = height(p);
            if h <= h_top && h >= h_bottom {
                g_back = g_back.min(depth(p));
            }
        }
        let g_back = g_back - rng.gen_range(4.0..25.0);
        let g_front = g_back + fov_ap;

        let ni = ((fov_si / pixel_mm).round() as usize).clamp(8, config.max_in_plane_matrix);
        let nj = ((fov_ap / pixel_mm).round() as usize).clamp(8, config.max_in_plane_matrix);
        let nk = rng.gen_range(config.slices[0]..=config.slices[1]);
        let slice_mm = rng.gen_range(config.slice_spacing_mm[0]..=config.slice_spacing_mm[1]);
        // Slice nk / 2 (the one viewers open first) lies within 0.3 slices of the midline.
        let w0 = -((nk / 2) as f64) * slice_mm + rng.gen_range(-0.3..0.3) * slice_mm;

        // Pixel (0, 0): half a pixel inside the top-front corner.
        let (ht, gf) = (h_top - 0.5 * pixel_mm, g_front - 0.5 * pixel_mm);
        let p0 = [-ht * e_i[0] - gf * e_j[0], -ht * e_i[1] - gf * e_j[1]];
        // World = anatomical frame shifted so the field of view is near the isocentre.
        let centre_uv = [
            p0[0] + 0.5 * (ni as f64 - 1.0) * pixel_mm * e_i[0] + 0.5 * (nj as f64 - 1.0) * pixel_mm * e_j[0],
            p0[1] + 0.5 * (ni as f64 - 1.0) * pixel_mm * e_i[1] + 0.5 * (nj as f64 - 1.0) * pixel_mm * e_j[1],
        ];
        let offset = [
            rng.gen_range(-15.0..15.0),
            rng.gen_range(-20.0..20.0) - centre_uv[0],
            rng.gen_range(-20.0..20.0) - centre_uv[1],
        ];
        let direction = [[0.0, 0.0, 1.0], [e_i[0], e_j[0], 0.0], [e_i[1], e_j[1], 0.0]];
        let origin = [w0 + offset[0], p0[0] + offset[1], p0[1] + offset[2]];
        let spacing = Spacing::new([pixel_mm, pixel_mm, slice_mm]).expect("sampled spacings should be positive");
        let geometry =
            Geometry::new(spacing, origin, direction).expect("the phantom's direction should be orthonormal");
        Layout {
            shape: [ni, nj, nk],
            geometry,
            p0,
            step_i: [pixel_mm * e_i[0], pixel_mm * e_i[1]],
            step_j: [pixel_mm * e_j[0], pixel_mm * e_j[1]],
            w0,
            slice_mm,
            pixel_mm,
            tilt_deg,
            planned: (top..=bottom).collect(),
        }
    }
}

/// Per-case intensity settings.
#[derive(Debug, Clone)]
struct Appearance {
    contrast: Contrast,
    intensity: [f64; TISSUE_COUNT],
    noise_sigma: f64,
    coil_length_mm: f64,
    poly: [f64; 5],
    bias_strength: f64,
}

impl Appearance {
    fn sample(config: &PhantomConfig, contrast: Contrast, rng: &mut impl Rng) -> Appearance {
        let gain = rng.gen_range(0.85..1.05);
        let mut intensity = [0.0; TISSUE_COUNT];
        for (value, (t1, t2)) in intensity.iter_mut().zip(TISSUE_INTENSITY) {
            let base = if contrast == Contrast::T1 { t1 } else { t2 };
            *value = base * gain * rng.gen_range(0.9..1.1);
        }
        let [lo, hi] = config.noise_sigma;
        Appearance {
            contrast,
            intensity,
            noise_sigma: if hi > lo { rng.gen_range(lo..hi) } else { lo },
            coil_length_mm: rng.gen_range(80.0..140.0),
            poly: std::array::from_fn(|_| rng.gen_range(-0.08..0.08)),
            bias_strength: config.bias_strength,
        }
    }
}

/// Intensity of `tissue` at a point, with the tissue's texture.
fn tissue_value(spine: &Spine, app: &Appearance, tissue: Tissue, label: u16, px: &PixelCoords, w: f64) -> f64 {
    let base = app.intensity[tissue.index()];
    let (u, v) = (px.p[0], px.p[1]);
    let noise = &spine.noise;
    match tissue {
        Tissue::Marrow => base * (1.0 + 0.12 * noise.fbm(u / 4.0, v / 4.0, w / 4.0)),
        Tissue::Fat => base * (1.0 + 0.05 * noise.at(u / 6.0, v / 6.0, w / 6.0 + 50.0)),
        Tissue::Muscle => {
            // Fatty streaks run along the muscle fibres (roughly along the spine).
            let streak = noise.at(px.idx2 * DS / 30.0, px.a2 / 2.5, w / 3.0 + 100.0);
            let fat = detmath::smoothstep(0.35, 0.65, streak) * 0.7;
            let muscle = base * (1.0 + 0.05 * noise.at(u / 5.0, v / 5.0, w / 5.0 + 10.0));
            muscle + (app.intensity[Tissue::Fat.index()] - muscle) * fat
        }
        Tissue::Nucleus => {
            let k = (label as usize).wrapping_sub(115);
            let degeneration = spine.discs.get(k).map(|d| d.degeneration).unwrap_or(0.0);
            let dark = app.intensity[Tissue::Annulus.index()] * 1.4;
            base + (dark - base) * degeneration
        }
        Tissue::Bowel => {
            let n = noise.fbm(u / 14.0, v / 14.0, w / 14.0 + 200.0);
            if noise.fbm(u / 9.0 + 31.0, v / 9.0, w / 9.0) > 0.45 {
                base * 0.08 // gas
            } else {
                base * (0.55 + 0.9 * (0.5 + 0.5 * n))
            }
        }
        Tissue::Liver => base * (1.0 + 0.05 * noise.at(u / 8.0, v / 8.0, w / 8.0 + 300.0)),
        Tissue::Lung => base * (1.0 + 0.8 * noise.at(u / 3.0, v / 3.0, w / 3.0 + 400.0).max(0.0)),
        _ => base,
    }
}

#[allow(clippy::too_many_arguments)]
fn render_slice(
    spine: &Spine,
    layout: &Layout,
    app: &Appearance,
    config: &PhantomConfig,
    pixels: &[PixelCoords],
    k: usize,
    image: &mut [f32],
    labels: &mut [Label],
    rng: &mut ChaCha8Rng,
) {
    let [ni, nj, _] = layout.shape;
    let w = layout.w0 + k as f64 * layout.slice_mm;
    let rim = spine.cortical_mm.max(0.9 * layout.pixel_mm);
    let samples = config.lateral_samples;
    let mut plane = vec![0f64; ni * nj];
    for (idx, px) in pixels.iter().enumerate() {
        let (tissue, label) = spine.classify(px, w, rim);
        labels[idx] = label;
        let mut value = tissue_value(spine, app, tissue, label, px, w);
        if samples > 1 {
            // Average over the slice's thickness (partial volume between slices).
            for m in 0..samples {
                let offset = ((m as f64 + 0.5) / samples as f64 - 0.5) * 0.8 * layout.slice_mm;
                if offset != 0.0 {
                    let (t, l) = spine.classify(px, w + offset, rim);
                    value += tissue_value(spine, app, t, l, px, w + offset);
                }
            }
            value /= (samples + 1) as f64;
        }
        plane[idx] = value;
    }
    // In-plane partial volume: a [1 2 1] / 4 blur along i and j.
    let mut tmp = plane.clone();
    for j in 0..nj {
        let row = &plane[j * ni..(j + 1) * ni];
        for i in 0..ni {
            let (a, b) = (row[i.saturating_sub(1)], row[(i + 1).min(ni - 1)]);
            tmp[j * ni + i] = 0.25 * a + 0.5 * row[i] + 0.25 * b;
        }
    }
    for j in 0..nj {
        let (jm, jp) = (j.saturating_sub(1), (j + 1).min(nj - 1));
        for i in 0..ni {
            plane[j * ni + i] = 0.25 * tmp[jm * ni + i] + 0.5 * tmp[j * ni + i] + 0.25 * tmp[jp * ni + i];
        }
    }
    // Bias field: receive coil behind the patient's back (signal falls off anteriorly) times a
    // gentle polynomial over the field of view.
    let c = |d: f64| 0.55 + 0.65 / (1.0 + (d / app.coil_length_mm) * (d / app.coil_length_mm));
    let c_ref = c(90.0);
    let sigma = app.noise_sigma;
    let wn = w / 60.0;
    for j in 0..nj {
        let y = 2.0 * j as f64 / (nj as f64 - 1.0).max(1.0) - 1.0;
        for i in 0..ni {
            let idx = j * ni + i;
            let px = &pixels[idx];
            let x = 2.0 * i as f64 / (ni as f64 - 1.0).max(1.0) - 1.0;
            let from_back = (spine.skin_back_depth(px.i2) + px.a2).max(0.0);
            let p = &app.poly;
            let poly = 1.0 + p[0] * x + p[1] * y + p[2] * x * y + p[3] * x * x + p[4] * wn * wn;
            let bias = (1.0 + app.bias_strength * (c(from_back) / c_ref * poly - 1.0)).max(0.2);
            let signal = plane[idx] * bias;
            let (n1, n2) = normal_pair(rng);
            let (re, im) = (signal + sigma * n1, sigma * n2);
            image[idx] = (re * re + im * im).sqrt() as f32;
        }
    }
    let _ = app.contrast;
}

/// What [`write_nnunet_dataset`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct PhantomCaseInfo {
    pub id: String,
    pub contrast: Contrast,
    /// Names of the vertebrae / sacrum in view, superior to inferior.
    pub levels: Vec<String>,
    pub shape: [usize; 3],
    pub spacing_mm: [f64; 3],
}

#[derive(Debug, Clone, Serialize)]
pub struct PhantomDatasetSummary {
    pub root: PathBuf,
    pub cases: Vec<PhantomCaseInfo>,
}

/// Case id of case `index`: `phantom_000`, `phantom_001`, ...
pub fn case_id(index: usize) -> String {
    format!("phantom_{index:03}")
}

/// Writes `cases` phantom cases as an nnU-Net raw dataset:
/// `imagesTr/phantom_XXX_0000.nii.gz` (int16 intensities), `labelsTr/phantom_XXX.nii.gz`
/// (ontology ids, uint8) and `dataset.json` (written last, so a dataset with a dataset.json is
/// complete). Labels in dataset.json are ontology ids, not nnU-Net's consecutive indices.
///
/// Refuses a non-empty `out_dir` unless `overwrite`; with `overwrite`, the `.nii.gz` files in
/// `imagesTr`/`labelsTr` and `dataset.json` are removed first and other files are left alone.
/// Every file is written atomically.
pub fn write_nnunet_dataset(
    out_dir: &Path,
    config: &PhantomConfig,
    cases: usize,
    seed: u64,
    overwrite: bool,
) -> Result<PhantomDatasetSummary> {
    config.validate()?;
    let os = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PhantomError::Os { path, source }
    };
    if out_dir.exists() {
        let non_empty = std::fs::read_dir(out_dir).map_err(os(out_dir))?.next().is_some();
        if non_empty && !overwrite {
            return Err(PhantomError::Os {
                path: out_dir.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "folder exists and is not empty (pass overwrite to replace the dataset in it)",
                ),
            });
        }
        if non_empty {
            for sub in ["imagesTr", "labelsTr"] {
                let dir = out_dir.join(sub);
                if dir.is_dir() {
                    for entry in std::fs::read_dir(&dir).map_err(os(&dir))? {
                        let path = entry.map_err(os(&dir))?.path();
                        if path.to_string_lossy().ends_with(".nii.gz") {
                            std::fs::remove_file(&path).map_err(os(&path))?;
                        }
                    }
                }
            }
            let json = out_dir.join(DATASET_FILE);
            if json.exists() {
                std::fs::remove_file(&json).map_err(os(&json))?;
            }
        }
    }
    let images_dir = out_dir.join("imagesTr");
    let labels_dir = out_dir.join("labelsTr");
    for dir in [&images_dir, &labels_dir] {
        std::fs::create_dir_all(dir).map_err(os(dir))?;
    }
    let ontology = Ontology::standard();
    let name_of = |id: StructureId| ontology.get(id).map(|s| s.name.clone()).unwrap_or_else(|| id.to_string());
    let mut infos = Vec::with_capacity(cases);
    for index in 0..cases {
        let case = generate_case(config, seed, index)?;
        let id = case_id(index);
        let shape = case.image.shape();
        let spacing_mm = case.image.geometry.spacing.mm();
        let image = AnyVolume {
            shape,
            data: VoxelData::I16(
                case.image.data().iter().map(|v| v.round().clamp(i16::MIN as f32, i16::MAX as f32) as i16).collect(),
            ),
            geometry: case.image.geometry,
        };
        spineseg_io::write_volume(&images_dir.join(format!("{id}_0000.nii.gz")), &image)?;
        spineseg_io::write_volume(&labels_dir.join(format!("{id}.nii.gz")), &AnyVolume::from(case.labels))?;
        infos.push(PhantomCaseInfo {
            id,
            contrast: case.contrast,
            levels: case.levels.iter().map(|&l| name_of(l)).collect(),
            shape,
            spacing_mm,
        });
    }
    let channel = match config.contrast {
        Some(c) => c.name(),
        None => "MRI",
    };
    let mut labels = vec![("background".to_string(), 0u16)];
    labels.extend(producible_labels().into_iter().map(|id| (name_of(id), id.0)));
    let json = DatasetJson {
        name: "spineseg lumbar phantom",
        description: "Procedural sagittal lumbar spine MRI phantoms; label values are spineseg ontology ids",
        channel_names: OrderedMap(vec![("0".to_string(), channel.to_string())]),
        labels: OrderedMap(labels),
        num_training: cases,
        file_ending: ".nii.gz",
        spineseg: GeneratorInfo {
            generator: "spineseg phantom",
            version: PHANTOM_VERSION,
            vertebra_extent: "body_only",
            seed,
            config: config.clone(),
            cases: infos.clone(),
        },
    };
    let text = serde_json::to_string_pretty(&json).expect("dataset.json should serialise");
    let path = out_dir.join(DATASET_FILE);
    spineseg_io::atomic::write_atomically(&path, |w| w.write_all(format!("{text}\n").as_bytes()))?;
    Ok(PhantomDatasetSummary { root: out_dir.to_path_buf(), cases: infos })
}

#[derive(Serialize)]
struct DatasetJson {
    name: &'static str,
    description: &'static str,
    channel_names: OrderedMap<String>,
    labels: OrderedMap<u16>,
    #[serde(rename = "numTraining")]
    num_training: usize,
    file_ending: &'static str,
    spineseg: GeneratorInfo,
}

#[derive(Serialize)]
struct GeneratorInfo {
    generator: &'static str,
    version: &'static str,
    vertebra_extent: &'static str,
    seed: u64,
    config: PhantomConfig,
    cases: Vec<PhantomCaseInfo>,
}

/// A JSON object whose keys keep the given order (serde_json's map would sort them).
struct OrderedMap<V>(Vec<(String, V)>);

impl<V: Serialize> Serialize for OrderedMap<V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_and_validates() {
        let c = PhantomConfig::small();
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<PhantomConfig>(&text).unwrap(), c);
        assert!(PhantomConfig { levels_visible: [3, 9], ..PhantomConfig::small() }.validate().is_err());
        assert!(PhantomConfig::default().validate().is_ok());
    }

    #[test]
    fn producible_labels_are_ontology_ids() {
        for id in producible_labels() {
            assert!(Ontology::standard().get(id).is_some(), "{id}");
        }
    }
}
