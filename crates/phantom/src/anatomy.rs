//! The anatomical model behind the phantom: a spinal column laid along a curved centreline in the
//! mid-sagittal plane, with rigid vertebrae, discs filling the (wedge-shaped) gaps between them,
//! the spinal canal, posterior elements, the sacrum and the soft tissues around them.
//!
//! # Frames
//! Everything is built in an anatomical frame in millimetres: `u` points anterior, `v` superior
//! (a point in the sagittal plane is `[u, v]`) and `w` to the patient's right. The phantom's world
//! (RAS+) coordinates are this frame shifted: `x = w + ox, y = u + oy, z = v + oz`.
//!
//! Each bone has a rigid frame at its centre: `a` = distance along its anterior normal, `b` =
//! distance superior along its axis. The centreline is a smooth curve (kyphotic above T12/L1,
//! lordotic from L1 to S1, kyphotic again in the sacrum); a bone's axis is the curve's tangent
//! at its centre, so the curvature between two bodies shows up as a wedge-shaped disc, as in
//! real spines.

use super::detmath::{deg, sin_cos, smoothstep, ValueNoise};
use spineseg_anatomy::ontology::{POSTERIOR_ELEMENTS, SACRUM, SPINAL_CANAL};
use rand::Rng;

pub(crate) type V2 = [f64; 2];

/// Sampling step of the centreline tables, mm.
pub(crate) const DS: f64 = 0.5;
/// Straight extension of the centreline beyond the first and last bone, mm.
const EXTENSION_MM: f64 = 160.0;

#[inline]
fn dot(a: V2, b: V2) -> f64 {
    a[0] * b[0] + a[1] * b[1]
}
#[inline]
fn sub(a: V2, b: V2) -> V2 {
    [a[0] - b[0], a[1] - b[1]]
}
#[inline]
fn lerp(a: f64, b: f64, t: f64) -> f64 {
    a + (b - a) * t
}

/// Tissue classes; each has a T1 and a T2 intensity (see `super::render`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tissue {
    Air,
    Skin,
    Fat,
    Muscle,
    Cortex,
    Marrow,
    Annulus,
    Nucleus,
    Csf,
    Cord,
    Root,
    Ligament,
    Vessel,
    Liver,
    Bowel,
    Lung,
}

pub(crate) const TISSUE_COUNT: usize = 16;

impl Tissue {
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// A rounded box in a bone's frame: centre and half sizes along (a, b, w), rotated by `angle`
/// in the (a, b) plane (positive: the box's upper end leans anterior), optionally mirrored to
/// both sides (`|w|`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoundBox {
    centre: [f64; 3],
    half: [f64; 3],
    cos: f64,
    sin: f64,
    radius: f64,
    mirrored: bool,
}

impl RoundBox {
    fn new(centre: [f64; 3], half: [f64; 3], angle_rad: f64, radius: f64, mirrored: bool) -> Self {
        let (sin, cos) = sin_cos(angle_rad);
        let radius = radius.min(0.95 * half[0]).min(0.95 * half[1]).min(0.95 * half[2]);
        RoundBox { centre, half, cos, sin, radius, mirrored }
    }
    /// Signed distance (approximate outside corners' rounding aside, exact for a box), mm.
    #[inline]
    fn sdf(&self, a: f64, b: f64, w: f64) -> f64 {
        let da = a - self.centre[0];
        let db = b - self.centre[1];
        let ra = self.cos * da - self.sin * db;
        let rb = self.sin * da + self.cos * db;
        let rw = if self.mirrored { w.abs() - self.centre[2] } else { w - self.centre[2] };
        let r = self.radius;
        let q = [ra.abs() - (self.half[0] - r), rb.abs() - (self.half[1] - r), rw.abs() - (self.half[2] - r)];
        let outside =
            (q[0].max(0.0) * q[0].max(0.0) + q[1].max(0.0) * q[1].max(0.0) + q[2].max(0.0) * q[2].max(0.0)).sqrt();
        outside + q[0].max(q[1]).max(q[2]).min(0.0) - r
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BoneKind {
    Thoracic,
    Lumbar,
    /// Sacral segment 1..=5 (all labelled as the sacrum).
    Sacral(u8),
}

/// One vertebra or sacral segment.
#[derive(Debug, Clone)]
pub(crate) struct Bone {
    pub label: u16,
    pub kind: BoneKind,
    pub centre: V2,
    /// Unit axis pointing inferior.
    pub t: V2,
    /// Unit normal pointing anterior.
    pub n: V2,
    pub s_centre: f64,
    pub half_height: f64,
    pub a_ant: f64,
    pub a_post: f64,
    pub half_width: f64,
    /// Anterior half-height minus posterior half-height, mm (positive: taller in front).
    pub wedge: f64,
    pub waist: f64,
    pub concavity: f64,
    pub corner: f64,
    pub canal_depth: f64,
    pub canal_half_width: f64,
    pub posterior: Vec<RoundBox>,
    /// Label of the posterior primitives: posterior elements, or the sacrum for sacral segments.
    pub posterior_label: u16,
    /// Optional bright round lesion in the marrow (a haemangioma): centre (a, b, w) and radius.
    pub haemangioma: Option<([f64; 3], f64)>,
}

impl Bone {
    #[inline]
    pub fn local(&self, p: V2) -> (f64, f64) {
        let d = sub(p, self.centre);
        (dot(d, self.n), -dot(d, self.t))
    }
    pub fn world(&self, a: f64, b: f64) -> V2 {
        [self.centre[0] + self.n[0] * a - self.t[0] * b, self.centre[1] + self.n[1] * a - self.t[1] * b]
    }
    /// Anterior and posterior wall positions (a) in the slice at lateral offset `w`.
    #[inline]
    fn walls(&self, w: f64) -> Option<(f64, f64)> {
        let wn = w / self.half_width;
        let q = 1.0 - wn * wn;
        if q <= 0.0 {
            return None;
        }
        // Kidney-shaped axial section: the posterior wall stays nearly flat, the front rounds off.
        let back = -self.a_post * (1.0 - 0.12 * wn * wn);
        let front = back + (self.a_ant + self.a_post) * q.sqrt();
        Some((front, back))
    }
    /// Signed distance to the vertebral body (or sacral segment) surface, mm (negative inside).
    #[inline]
    pub fn body_sdf(&self, a: f64, b: f64, w: f64) -> f64 {
        let Some((front, back)) = self.walls(w) else {
            return w.abs() - self.half_width + 1.0;
        };
        let half_depth = 0.5 * (front - back);
        let x = ((a - 0.5 * (front + back)) / half_depth).clamp(-1.0, 1.0);
        let half_height = self.half_height + 0.5 * self.wedge * x - self.concavity * (1.0 - x * x);
        let bn = (b / self.half_height).clamp(-1.0, 1.0);
        let front_eff = front - self.waist * (1.0 - bn * bn);
        let d_a = (a - front_eff).max(back - a);
        let d_b = b.abs() - half_height;
        let r = self.corner;
        let (qa, qb) = (d_a + r, d_b + r);
        (qa.max(0.0) * qa.max(0.0) + qb.max(0.0) * qb.max(0.0)).sqrt() + qa.max(qb).min(0.0) - r
    }
    #[inline]
    pub fn posterior_sdf(&self, a: f64, b: f64, w: f64) -> f64 {
        let mut d = f64::INFINITY;
        for p in &self.posterior {
            d = d.min(p.sdf(a, b, w));
        }
        d
    }
}

/// The disc (or fused sacral remnant) between `bones[upper]` and `bones[upper + 1]`.
#[derive(Debug, Clone)]
pub(crate) struct Disc {
    pub label: u16,
    pub fused: bool,
    pub centre: V2,
    pub t: V2,
    pub n: V2,
    pub half_gap: f64,
    pub bulge_ant: f64,
    pub bulge_post: f64,
    /// 0 = healthy (bright nucleus on T2) .. 1 = desiccated.
    pub degeneration: f64,
}

/// A sampled curve: points every [`DS`] mm, with unit tangents (inferior) and normals (anterior).
#[derive(Debug, Clone)]
pub(crate) struct Curve {
    pub pts: Vec<V2>,
    pub tan: Vec<V2>,
    pub nrm: Vec<V2>,
}

impl Curve {
    fn from_points(pts: Vec<V2>) -> Curve {
        let n = pts.len();
        let mut tan = Vec::with_capacity(n);
        for i in 0..n {
            let (a, b) = (pts[i.saturating_sub(1)], pts[(i + 1).min(n - 1)]);
            let d = sub(b, a);
            let len = dot(d, d).sqrt();
            tan.push([d[0] / len, d[1] / len]);
        }
        let nrm = tan.iter().map(|t| [-t[1], t[0]]).collect();
        Curve { pts, tan, nrm }
    }

    #[inline]
    fn dist2(&self, i: usize, p: V2) -> f64 {
        let d = sub(p, self.pts[i]);
        dot(d, d)
    }

    /// Projects `p` onto the curve: (fractional sample index, signed distance along the anterior
    /// normal). `hint` is the index found for a nearby point (or `usize::MAX`): descending from
    /// it is much faster than a search and gives the same answer near the curve.
    pub fn project(&self, p: V2, hint: &mut usize) -> (f64, f64) {
        let n = self.pts.len();
        let mut i = if *hint >= n {
            let mut best = (f64::INFINITY, 0);
            for j in (0..n).step_by(8) {
                let d = self.dist2(j, p);
                if d < best.0 {
                    best = (d, j);
                }
            }
            best.1
        } else {
            *hint
        };
        let mut d = self.dist2(i, p);
        loop {
            let mut moved = false;
            for step in [16usize, 4, 1] {
                while i + step < n && self.dist2(i + step, p) < d {
                    i += step;
                    d = self.dist2(i, p);
                    moved = true;
                }
                while i >= step && self.dist2(i - step, p) < d {
                    i -= step;
                    d = self.dist2(i, p);
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
        *hint = i;
        let rel = sub(p, self.pts[i]);
        let along = (dot(rel, self.tan[i]) / DS).clamp(-1.0, 1.0);
        (i as f64 + along, dot(rel, self.nrm[i]))
    }
}

/// Per-case anatomy: the bones, discs, centrelines and the soft-tissue layout.
#[derive(Debug, Clone)]
pub(crate) struct Spine {
    pub bones: Vec<Bone>,
    /// `discs[k]` lies between `bones[k]` and `bones[k + 1]`.
    pub discs: Vec<Disc>,
    /// Centreline through the bones (canal coordinates).
    pub curve: Curve,
    /// Heavily smoothed centreline (soft-tissue coordinates); same sample indices.
    pub soft: Curve,
    /// Per curve sample: index of the bone whose segment (with half the discs) covers it.
    pub bone_at: Vec<u8>,
    /// Per curve sample: canal front wall (a, negative), AP depth, lateral half width, cord radius.
    pub canal_front: Vec<f32>,
    pub canal_depth: Vec<f32>,
    pub canal_half_width: Vec<f32>,
    pub cord_radius: Vec<f32>,
    /// Per curve sample index (soft coordinates): soft-tissue layout.
    pub back_muscle: Vec<f32>,
    pub back_fat: Vec<f32>,
    pub body_front: Vec<f32>,
    pub body_half_width: Vec<f32>,
    pub psoas_radius: Vec<f32>,
    pub abdomen_depth: Vec<f32>,
    pub front_fat: Vec<f32>,
    /// Sample indices of landmarks.
    pub i_conus: f64,
    pub i_diaphragm: f64,
    pub i_liver_end: f64,
    pub i_aortic_bifurcation: f64,
    pub i_canal_end: f64,
    pub aorta: (f64, f64),
    pub ivc: (f64, f64),
    pub noise: ValueNoise,
    pub cortical_mm: f64,
}

/// (label, kind, height, AP depth, half width, canal depth, canal half width, disc below), mm.
type ColumnRow = (u16, BoneKind, f64, f64, f64, f64, f64, f64);

/// Nominal sizes (mm) of the bones from T8 to L5: full height, AP depth, half width, canal AP
/// depth, canal half width, and the height of the disc below.
const COLUMN: [ColumnRow; 10] = [
    (15, BoneKind::Thoracic, 19.0, 27.0, 17.0, 13.5, 8.0, 4.5),
    (16, BoneKind::Thoracic, 20.0, 28.0, 17.5, 13.5, 8.0, 5.0),
    (17, BoneKind::Thoracic, 21.0, 29.5, 18.5, 13.5, 8.5, 5.5),
    (18, BoneKind::Thoracic, 22.5, 31.0, 19.5, 14.0, 9.0, 6.0),
    (19, BoneKind::Thoracic, 23.5, 32.5, 20.5, 15.0, 9.5, 7.0),
    (20, BoneKind::Lumbar, 25.5, 35.0, 22.0, 16.5, 10.5, 8.5),
    (21, BoneKind::Lumbar, 26.5, 37.0, 23.0, 16.0, 10.5, 9.5),
    (22, BoneKind::Lumbar, 27.5, 38.5, 24.0, 15.0, 11.0, 10.5),
    (23, BoneKind::Lumbar, 27.5, 39.5, 25.0, 15.0, 11.5, 11.0),
    (24, BoneKind::Lumbar, 27.0, 39.5, 26.0, 15.5, 12.5, 10.5),
];

/// Sacral segments S1..S5: height, AP depth relative to L5, half width, canal depth, canal half
/// width, and the fused remnant below.
const SACRAL: [(f64, f64, f64, f64, f64, f64); 5] = [
    (27.0, 0.95, 46.0, 12.0, 12.0, 2.0),
    (22.0, 0.74, 40.0, 9.0, 10.5, 1.6),
    (18.0, 0.58, 31.0, 7.0, 8.5, 1.3),
    (14.0, 0.45, 22.0, 5.5, 6.5, 1.0),
    (11.0, 0.34, 15.0, 4.5, 5.0, 0.0),
];

impl Spine {
    /// Samples one spine. Bone order in the result: T8, T9, ..., L5, S1, ..., S5.
    pub fn sample(rng: &mut impl Rng) -> Spine {
        let height_scale = rng.gen_range(0.92..1.08);
        let depth_scale = rng.gen_range(0.92..1.10);
        let canal_scale = rng.gen_range(0.85..1.15);
        let disc_scale = rng.gen_range(0.85..1.15);
        let age = rng.gen::<f64>(); // 0 young .. 1 old: drives disc degeneration.
        let cortical_mm = rng.gen_range(1.0..1.6);

        // Heights along the chain.
        struct Proto {
            label: u16,
            kind: BoneKind,
            height: f64,
            depth: f64,
            half_width: f64,
            canal_depth: f64,
            canal_half_width: f64,
            gap_below: f64,
            degeneration: f64,
        }
        let mut protos = Vec::new();
        for (label, kind, h, d, hw, cd, chw, gap) in COLUMN {
            let j = |rng: &mut dyn rand::RngCore| rng.gen_range(0.96..1.04);
            let lumbar_index = if label >= 20 { (label - 19) as f64 } else { 0.0 };
            // Lower lumbar discs degenerate more often and earlier.
            let u: f64 = rng.gen();
            let degeneration = (u * (0.35 + 0.65 * age) * (0.4 + 0.15 * lumbar_index)).min(1.0);
            protos.push(Proto {
                label,
                kind,
                height: h * height_scale * j(rng),
                depth: d * depth_scale * j(rng),
                half_width: hw * depth_scale * j(rng),
                canal_depth: cd * canal_scale * j(rng),
                canal_half_width: chw * canal_scale * j(rng),
                gap_below: gap * disc_scale * j(rng) * (1.0 - 0.35 * degeneration),
                degeneration,
            });
        }
        let l5_depth = protos[9].depth;
        for (n, (h, rel_depth, hw, cd, chw, gap)) in SACRAL.iter().enumerate() {
            protos.push(Proto {
                label: SACRUM.0,
                kind: BoneKind::Sacral(n as u8 + 1),
                height: h * height_scale * rng.gen_range(0.95..1.05),
                depth: rel_depth * l5_depth * rng.gen_range(0.95..1.05),
                half_width: hw * depth_scale,
                canal_depth: cd * canal_scale,
                canal_half_width: chw * canal_scale,
                gap_below: *gap,
                degeneration: 0.0,
            });
        }
        // Arc-length positions of every bone's top and centre, starting after the extension.
        let mut s = EXTENSION_MM;
        let mut tops = Vec::new();
        for p in &protos {
            tops.push(s);
            s += p.height + p.gap_below;
        }
        let s_end = s;
        let l1_top = tops[5];
        let s1_top = tops[10];
        // Angles (radians) of the downward tangent from straight down, positive = going anterior.
        let sacral_slope = deg(rng.gen_range(34.0..50.0));
        let lordosis = sacral_slope + deg(rng.gen_range(8.0..22.0));
        let phi_top = deg(rng.gen_range(-4.0..6.0));
        let phi_l1 = lordosis - sacral_slope;
        let kyphosis = (phi_l1 - phi_top) / (l1_top - EXTENSION_MM);
        let sacral_kyphosis = deg(rng.gen_range(20.0..40.0)) / 70.0;
        let s2_top = tops[11];
        let lumbar_len = s1_top - l1_top;
        // Lordosis grows towards L5/S1: curvature -K (0.6 + 0.8 x) over the lumbar length
        // integrates to -K * lumbar_len, so K = lordosis / lumbar_len.
        let k_lumbar = lordosis / lumbar_len;
        let phi_at = |s: f64| -> f64 {
            let s = s.clamp(EXTENSION_MM, s_end);
            if s <= l1_top {
                phi_top + kyphosis * (s - EXTENSION_MM)
            } else if s <= s1_top {
                let x = (s - l1_top) / lumbar_len;
                phi_l1 - k_lumbar * lumbar_len * (0.6 * x + 0.4 * x * x)
            } else {
                -sacral_slope + sacral_kyphosis * (s - s2_top).max(0.0)
            }
        };
        let total = s_end + EXTENSION_MM;
        let count = (total / DS).ceil() as usize + 1;
        let mut pts = Vec::with_capacity(count);
        let mut p = [0.0, 0.0];
        for i in 0..count {
            pts.push(p);
            let s_mid = (i as f64 + 0.5) * DS;
            let (sin, cos) = sin_cos(phi_at(s_mid));
            p = [p[0] + DS * sin, p[1] - DS * cos];
        }
        // Put the world origin near the L5/S1 disc so that coordinates are of patient scale.
        let i_l5s1 = ((tops[10] - 0.5 * protos[9].gap_below) / DS) as usize;
        let shift = pts[i_l5s1];
        for q in pts.iter_mut() {
            *q = sub(*q, shift);
        }
        let curve = Curve::from_points(pts);

        // Bones.
        let mut bones = Vec::new();
        for (k, proto) in protos.iter().enumerate() {
            let s_centre = tops[k] + 0.5 * proto.height;
            let i = (s_centre / DS).round() as usize;
            let half_height = 0.5 * proto.height;
            let lumbar = proto.kind == BoneKind::Lumbar;
            let wedge = match (proto.kind, proto.label) {
                (BoneKind::Lumbar, 24) => rng.gen_range(1.5..3.5),
                (BoneKind::Lumbar, _) => rng.gen_range(-0.8..1.0),
                (BoneKind::Thoracic, _) => rng.gen_range(-2.0..-0.5),
                (BoneKind::Sacral(_), _) => 0.0,
            };
            let mut bone = Bone {
                label: proto.label,
                kind: proto.kind,
                centre: curve.pts[i],
                t: curve.tan[i],
                n: curve.nrm[i],
                s_centre,
                half_height,
                a_ant: 0.5 * proto.depth,
                a_post: 0.5 * proto.depth,
                half_width: proto.half_width,
                wedge,
                waist: if lumbar { rng.gen_range(0.5..2.2) } else { rng.gen_range(0.3..1.2) },
                concavity: rng.gen_range(0.3..1.4),
                corner: rng.gen_range(2.0..4.0_f64).min(0.3 * half_height),
                canal_depth: proto.canal_depth,
                canal_half_width: proto.canal_half_width,
                posterior: Vec::new(),
                posterior_label: POSTERIOR_ELEMENTS.0,
                haemangioma: None,
            };
            if let BoneKind::Sacral(n) = proto.kind {
                bone.posterior_label = SACRUM.0;
                bone.waist = 0.0;
                bone.concavity = if n == 1 { rng.gen_range(0.3..1.0) } else { 0.2 };
                // The sacrum's anterior surface is concave: shift segments' fronts gently.
                bone.a_post = 0.5 * proto.depth * 1.05;
                bone.a_ant = 0.5 * proto.depth * 0.95;
            }
            if !matches!(proto.kind, BoneKind::Sacral(n) if n > 1) && rng.gen_bool(0.15) {
                let r = rng.gen_range(2.5..5.5);
                let a = rng.gen_range(-0.5..0.5) * bone.a_ant;
                let b = rng.gen_range(-0.4..0.4) * half_height;
                let w = rng.gen_range(-0.6..0.6) * bone.half_width;
                bone.haemangioma = Some(([a, b, w], r));
            }
            bones.push(bone);
        }
        // Posterior elements need the neighbours' sizes (facet joints meet the next level).
        for k in 0..bones.len() {
            let next_half_height = bones.get(k + 1).map(|b| b.half_height).unwrap_or(10.0);
            let gap_below = protos[k].gap_below;
            let prims = match bones[k].kind {
                BoneKind::Sacral(n) => sacral_posterior(&bones[k], n, rng),
                kind => arch_posterior(&bones[k], kind == BoneKind::Lumbar, gap_below, next_half_height, rng),
            };
            bones[k].posterior = prims;
        }
        // Discs.
        let mut discs = Vec::new();
        for k in 0..bones.len() - 1 {
            let (up, lo) = (&bones[k], &bones[k + 1]);
            let s_mid = tops[k + 1] - 0.5 * protos[k].gap_below;
            let i = (s_mid / DS).round() as usize;
            let fused = matches!(up.kind, BoneKind::Sacral(_));
            let label = if fused { SACRUM.0 } else { 100 + up.label };
            let degeneration = protos[k].degeneration;
            discs.push(Disc {
                label,
                fused,
                centre: curve.pts[i],
                t: curve.tan[i],
                n: curve.nrm[i],
                half_gap: 0.5 * protos[k].gap_below,
                bulge_ant: if fused { 0.0 } else { rng.gen_range(0.3..1.5) },
                bulge_post: if fused {
                    0.0
                } else {
                    rng.gen_range(0.0..1.0)
                        + degeneration
                            * rng.gen_range(0.0..4.0)
                            * if lo.label >= 23 || lo.label == SACRUM.0 { 1.0 } else { 0.4 }
                },
                degeneration,
            });
        }

        // Per-sample tables, interpolated between bone centres.
        let n = curve.pts.len();
        let centres: Vec<f64> = bones.iter().map(|b| b.s_centre / DS).collect();
        let interp = |i: f64, f: &dyn Fn(&Bone) -> f64| -> f64 {
            if i <= centres[0] {
                return f(&bones[0]);
            }
            for k in 0..centres.len() - 1 {
                if i <= centres[k + 1] {
                    let t = (i - centres[k]) / (centres[k + 1] - centres[k]);
                    return lerp(f(&bones[k]), f(&bones[k + 1]), t);
                }
            }
            f(&bones[bones.len() - 1])
        };
        let mut bone_at = vec![0u8; n];
        for (i, slot) in bone_at.iter_mut().enumerate() {
            let s = i as f64 * DS;
            let mut k = 0;
            while k + 1 < bones.len() && s > tops[k + 1] - 0.5 * protos[k].gap_below {
                k += 1;
            }
            *slot = k as u8;
        }
        // Conus medullaris near L1/L2; the dural sac ends at S2.
        let i_conus = (tops[6] + rng.gen_range(-25.0..10.0)) / DS;
        let i_canal_end = (tops[11] + 0.5 * protos[11].height) / DS;
        let mut canal_front = Vec::with_capacity(n);
        let mut canal_depth = Vec::with_capacity(n);
        let mut canal_half_width = Vec::with_capacity(n);
        let mut cord_radius = Vec::with_capacity(n);
        let cord_r = rng.gen_range(3.5..4.5);
        for i in 0..n {
            let x = i as f64;
            canal_front.push(-(interp(x, &|b| b.a_post) + 1.5) as f32);
            let taper = 1.0 - smoothstep(i_canal_end - 25.0, i_canal_end, x);
            canal_depth
                .push((interp(x, &|b| b.canal_depth) * (0.25 + 0.75 * taper)) as f32 * (taper > 0.0) as u8 as f32);
            canal_half_width.push((interp(x, &|b| b.canal_half_width) * (0.3 + 0.7 * taper)) as f32);
            let c = cord_r * (1.0 - smoothstep(i_conus - 40.0, i_conus, x))
                + 1.5 * (1.0 - smoothstep(i_conus - 10.0, i_conus + 2.0, x));
            cord_radius.push(c.min(cord_r) as f32);
        }

        // Soft tissues: a heavily smoothed centreline and layer depths along it.
        let mut smooth_pts = curve.pts.clone();
        for _ in 0..4 {
            smooth_pts = moving_average(&smooth_pts, 40);
        }
        let soft = Curve::from_points(smooth_pts);
        let noise = ValueNoise::new(rng);
        let muscle_extra = rng.gen_range(3.0..10.0);
        let fat_back_base = rng.gen_range(8.0..40.0);
        let abdomen_base = rng.gen_range(110.0..180.0);
        let front_fat_base = rng.gen_range(10.0..45.0);
        let tip_depth = |b: &Bone| -> f64 {
            let tip = b.posterior.iter().map(|p| -(p.centre[0] - p.half[0].max(p.half[1]))).fold(0.0, f64::max);
            match b.kind {
                BoneKind::Sacral(_) => b.a_post + b.canal_depth + 12.0 + 4.0,
                _ => tip.max(b.a_post + 40.0) + 2.0,
            }
        };
        let mut back_muscle = Vec::with_capacity(n);
        let mut back_fat = Vec::with_capacity(n);
        let mut body_front = Vec::with_capacity(n);
        let mut body_half_width = Vec::with_capacity(n);
        let mut psoas_radius = Vec::with_capacity(n);
        let mut abdomen_depth = Vec::with_capacity(n);
        let mut front_fat = Vec::with_capacity(n);
        let l1 = centres[5];
        let s1 = centres[10];
        for i in 0..n {
            let x = i as f64;
            back_muscle.push((interp(x, &tip_depth) + muscle_extra) as f32);
            back_fat.push((fat_back_base * (1.0 + 0.3 * noise.at(x * DS / 90.0, 3.5, 0.5))) as f32);
            body_front.push(interp(x, &|b| b.a_ant) as f32);
            body_half_width.push(interp(x, &|b| b.half_width.min(28.0)) as f32);
            let ps = 22.0 * smoothstep(l1 - 20.0, s1 - 30.0, x) * (1.0 - smoothstep(s1, s1 + 60.0, x));
            psoas_radius.push(ps as f32);
            abdomen_depth.push((abdomen_base * (1.0 + 0.12 * noise.at(x * DS / 120.0, 7.5, 1.5))) as f32);
            front_fat.push((front_fat_base * (1.0 + 0.3 * noise.at(x * DS / 90.0, 9.5, 2.5))) as f32);
        }
        let back_muscle = smooth_f32(&back_muscle, 30, 4);
        let body_front = smooth_f32(&body_front, 10, 2);
        let i_diaphragm = (bones[3].s_centre + rng.gen_range(-20.0..25.0)) / DS;
        let i_liver_end = i_diaphragm + rng.gen_range(110.0..170.0) / DS;
        let i_aortic_bifurcation = (bones[8].s_centre + rng.gen_range(-10.0..10.0)) / DS;
        let aorta = (-rng.gen_range(6.0..16.0), rng.gen_range(9.0..12.0));
        let ivc = (rng.gen_range(16.0..26.0), rng.gen_range(8.0..11.0));
        Spine {
            bones,
            discs,
            curve,
            soft,
            bone_at,
            canal_front,
            canal_depth,
            canal_half_width,
            cord_radius,
            back_muscle,
            back_fat,
            body_front,
            body_half_width,
            psoas_radius,
            abdomen_depth,
            front_fat,
            i_conus,
            i_diaphragm,
            i_liver_end,
            i_aortic_bifurcation,
            i_canal_end,
            aorta,
            ivc,
            noise,
            cortical_mm,
        }
    }

    /// Depth of the back's skin surface (positive, mm from the soft centreline) at sample `i`.
    pub fn skin_back_depth(&self, i: usize) -> f64 {
        let i = i.min(self.back_muscle.len() - 1);
        (self.back_muscle[i] + self.back_fat[i]) as f64 + 2.0
    }

    /// Tissue and label at a point. `px` carries the point's precomputed curve coordinates.
    #[inline]
    pub fn classify(&self, px: &PixelCoords, w: f64, rim_mm: f64) -> (Tissue, u16) {
        let p = px.p;
        let k0 = self.bone_at[px.i1] as usize;
        let lo = k0.saturating_sub(2);
        let hi = (k0 + 1).min(self.bones.len() - 1);
        // Bones first: bodies and posterior elements.
        let mut body: Option<(f64, usize)> = None;
        let mut posterior: Option<(f64, usize)> = None;
        let mut bone_d = f64::INFINITY;
        for k in lo..=hi {
            let bone = &self.bones[k];
            let (a, b) = bone.local(p);
            if b.abs() > bone.half_height + 60.0 {
                continue;
            }
            let posterior_reach = -bone.a_post + 4.0 + rim_mm;
            if k + 1 >= k0 && a > -bone.a_post - 3.0 - rim_mm && b.abs() < bone.half_height + 3.0 {
                let d = bone.body_sdf(a, b, w);
                if d < bone_d {
                    bone_d = d;
                }
                if d <= 0.0 && body.is_none_or(|(bd, _)| d < bd) {
                    body = Some((d, k));
                }
            }
            if a > posterior_reach {
                continue;
            }
            let d = bone.posterior_sdf(a, b, w);
            if d < bone_d {
                bone_d = d;
            }
            if d <= 0.0 && posterior.is_none_or(|(pd, _)| d < pd) {
                posterior = Some((d, k));
            }
        }
        if body.is_some() || posterior.is_some() {
            let (label, k) = match (body, posterior) {
                (Some((_, k)), _) => (self.bones[k].label, k),
                (None, Some((_, k))) => (self.bones[k].posterior_label, k),
                (None, None) => unreachable!("one of them is set"),
            };
            let bone = &self.bones[k];
            let mut tissue = if bone_d > -rim_mm { Tissue::Cortex } else { Tissue::Marrow };
            if let (Some(((ca, cb, cw), r)), Some(_)) = (bone.haemangioma.map(|(c, r)| ((c[0], c[1], c[2]), r)), body) {
                let (a, b) = bone.local(p);
                if (a - ca) * (a - ca) + (b - cb) * (b - cb) + (w - cw) * (w - cw) < r * r {
                    tissue = Tissue::Fat;
                }
            }
            return (tissue, label);
        }
        // Discs between the bones found above.
        for k in k0.saturating_sub(1)..=k0.min(self.discs.len() - 1) {
            if let Some(tissue) = self.disc_tissue(k, p, w) {
                return (tissue, self.discs[k].label);
            }
        }
        // The spinal canal (dural sac), in centreline coordinates.
        let i = px.i1;
        let front = self.canal_front[i] as f64;
        let depth = self.canal_depth[i] as f64;
        let half_width = self.canal_half_width[i] as f64;
        let a = px.a1;
        let wn = w / half_width;
        let lateral = 1.0 - wn * wn;
        if depth > 0.0 && lateral > 0.0 && a < front && a > front - depth * lateral.sqrt() {
            let cord = self.cord_radius[i] as f64;
            let centre = front - 0.5 * depth;
            let (da, dw) = ((a - centre) / cord.max(1e-6), w / (1.3 * cord.max(1e-6)));
            let tissue = if cord > 0.2 && da * da + dw * dw < 1.0 {
                Tissue::Cord
            } else if px.idx1 > self.i_conus
                && a < front - 0.55 * depth
                && self.noise.at(px.idx1 * DS / 25.0, a * 0.9, w * 0.7 + 40.0) > 0.15
            {
                // Cauda equina roots layer dorsally in a supine patient.
                Tissue::Root
            } else {
                Tissue::Csf
            };
            return (tissue, SPINAL_CANAL.0);
        }
        // Ligaments and epidural / foraminal fat around the canal.
        if depth > 0.0 || px.idx1 < self.i_canal_end + 10.0 {
            let aw = w.abs();
            if aw < half_width + 1.5 && a >= front && a < front + 1.6 {
                return (Tissue::Ligament, 0);
            }
            if aw < half_width + 1.0 && a <= front - depth && a > front - depth - 2.0 {
                return (Tissue::Ligament, 0);
            }
            if aw < half_width + 1.0 && a <= front - depth - 2.0 && a > front - depth - 4.5 {
                return (Tissue::Fat, 0);
            }
            if aw >= half_width && aw < half_width + 10.0 && a < front + 1.5 && a > front - 0.75 * depth {
                return (Tissue::Fat, 0);
            }
        }
        (self.soft_tissue(px, w), 0)
    }

    fn disc_tissue(&self, k: usize, p: V2, w: f64) -> Option<Tissue> {
        let disc = &self.discs[k];
        let d = sub(p, disc.centre);
        let (a, b) = (dot(d, disc.n), -dot(d, disc.t));
        if b.abs() > disc.half_gap + 8.0 {
            return None;
        }
        let (up, lo) = (&self.bones[k], &self.bones[k + 1]);
        let (_, b_up) = up.local(p);
        let (_, b_lo) = lo.local(p);
        if b_up > -(up.half_height - up.concavity - 0.6 - up.wedge.abs() * 0.5)
            || b_lo < lo.half_height - lo.concavity - 0.6 - lo.wedge.abs() * 0.5
        {
            return None;
        }
        let (f_up, r_up) = up.walls(w)?;
        let (f_lo, r_lo) = lo.walls(w)?;
        let front = 0.5 * (f_up + f_lo);
        let back = 0.5 * (r_up + r_lo);
        let bell = {
            let x = (b / (disc.half_gap + 1.0)).clamp(-1.0, 1.0);
            1.0 - x * x
        };
        if a > front + disc.bulge_ant * bell || a < back - disc.bulge_post * bell {
            return None;
        }
        if disc.fused {
            return Some(Tissue::Annulus);
        }
        let half_depth = 0.5 * (front - back);
        let centre = 0.5 * (front + back) - 0.08 * half_depth;
        let half_width = 0.5 * (up.half_width + lo.half_width);
        let (na, nb, nw) = (
            (a - centre) / (0.52 * half_depth),
            b / (0.62 * (disc.half_gap + 0.5 * (up.concavity + lo.concavity))),
            w / (0.55 * half_width),
        );
        if na * na + nb * nb + nw * nw < 1.0 {
            Some(Tissue::Nucleus)
        } else {
            Some(Tissue::Annulus)
        }
    }

    fn soft_tissue(&self, px: &PixelCoords, w: f64) -> Tissue {
        let i = px.i2;
        let a = px.a2;
        let idx = px.idx2;
        if a < 0.0 {
            let muscle = self.back_muscle[i] as f64 + 10.0 * (w / 45.0) * (w / 45.0);
            let fat = self.back_fat[i] as f64;
            return if -a < muscle {
                Tissue::Muscle
            } else if -a < muscle + fat {
                Tissue::Fat
            } else if -a < muscle + fat + 2.0 {
                Tissue::Skin
            } else {
                Tissue::Air
            };
        }
        let front = self.body_front[i] as f64;
        let half_width = self.body_half_width[i] as f64;
        // Psoas muscles beside the lumbar bodies.
        let ps = self.psoas_radius[i] as f64;
        if ps > 1.0 {
            let centre_w = half_width + 0.7 * ps;
            let (da, dw) = ((a - 0.1 * front) / (1.15 * ps), (w.abs() - centre_w) / ps);
            if da * da + dw * dw < 1.0 {
                return Tissue::Muscle;
            }
        }
        if a < front + 1.5 && w.abs() < half_width {
            return Tissue::Ligament;
        }
        // Great vessels in front of the spine.
        let (aw, ar) = self.aorta;
        let vessel = |cw: f64, r: f64, squash: f64| {
            let (da, dw) = ((a - (front + 3.0 + r * squash)) / (r * squash), (w - cw) / r);
            da * da + dw * dw < 1.0
        };
        if idx < self.i_aortic_bifurcation && vessel(aw, ar, 1.0) {
            return Tissue::Vessel;
        }
        if idx > self.i_diaphragm && idx < self.i_aortic_bifurcation + 30.0 && vessel(self.ivc.0, self.ivc.1, 0.8) {
            return Tissue::Vessel;
        }
        let abdomen = self.abdomen_depth[i] as f64;
        let front_fat = self.front_fat[i] as f64;
        if a > abdomen {
            return if a < abdomen + 10.0 {
                Tissue::Muscle
            } else if a < abdomen + 10.0 + front_fat {
                Tissue::Fat
            } else if a < abdomen + 12.0 + front_fat {
                Tissue::Skin
            } else {
                Tissue::Air
            };
        }
        if a < front + 6.0 {
            return Tissue::Fat;
        }
        if idx < self.i_diaphragm + 0.15 * (a - front) {
            Tissue::Lung
        } else if idx < self.i_liver_end - 0.4 * (a - front) / DS && a > front + 15.0 {
            Tissue::Liver
        } else if a < front + 14.0 {
            Tissue::Fat
        } else {
            Tissue::Bowel
        }
    }
}

/// Coordinates of one in-plane pixel, shared by all sagittal slices (the slice axis is pure
/// left-right, so a pixel has the same sagittal position in every slice).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PixelCoords {
    pub p: V2,
    /// Fractional sample index on the bone centreline, the nearest integer one, signed distance.
    pub idx1: f64,
    pub i1: usize,
    pub a1: f64,
    pub idx2: f64,
    pub i2: usize,
    pub a2: f64,
}

impl Spine {
    pub fn pixel_coords(&self, p: V2, hint1: &mut usize, hint2: &mut usize) -> PixelCoords {
        let (idx1, a1) = self.curve.project(p, hint1);
        let (idx2, a2) = self.soft.project(p, hint2);
        let last = self.curve.pts.len() - 1;
        PixelCoords {
            p,
            idx1,
            i1: (idx1.round().max(0.0) as usize).min(last),
            a1,
            idx2,
            i2: (idx2.round().max(0.0) as usize).min(last),
            a2,
        }
    }
}

fn moving_average(pts: &[V2], half: usize) -> Vec<V2> {
    let n = pts.len();
    (0..n)
        .map(|i| {
            let (lo, hi) = (i.saturating_sub(half), (i + half).min(n - 1));
            let mut sum = [0.0, 0.0];
            for q in &pts[lo..=hi] {
                sum[0] += q[0];
                sum[1] += q[1];
            }
            let c = (hi - lo + 1) as f64;
            // Near the ends the window is one-sided; the straight extensions make that harmless.
            [sum[0] / c, sum[1] / c]
        })
        .collect()
}

fn smooth_f32(values: &[f32], half: usize, passes: usize) -> Vec<f32> {
    let mut v: Vec<f32> = values.to_vec();
    for _ in 0..passes {
        let n = v.len();
        v = (0..n)
            .map(|i| {
                let (lo, hi) = (i.saturating_sub(half), (i + half).min(n - 1));
                v[lo..=hi].iter().sum::<f32>() / (hi - lo + 1) as f32
            })
            .collect();
    }
    v
}

/// Pedicles, articular pillars, lamina, spinous and transverse processes of a thoracic or lumbar
/// vertebra, in its frame.
fn arch_posterior(
    bone: &Bone,
    lumbar: bool,
    gap_below: f64,
    next_half_height: f64,
    rng: &mut impl Rng,
) -> Vec<RoundBox> {
    let big_b = bone.half_height;
    let p0 = -bone.a_post;
    let cw = bone.canal_half_width;
    let canal_back = p0 - 1.5 - bone.canal_depth;
    let pedicle_w = if lumbar { rng.gen_range(8.0..11.0) } else { rng.gen_range(6.0..8.0) };
    let pedicle_hb = if lumbar { rng.gen_range(6.5..8.0) } else { rng.gen_range(5.5..6.5) };
    let mut out = Vec::new();
    // Pedicle: from inside the body's posterior wall back to the articular pillar.
    let (front, back) = (p0 + 3.0, canal_back - 2.0);
    out.push(RoundBox::new(
        [0.5 * (front + back), 0.3 * big_b, cw + 0.5 * pedicle_w],
        [0.5 * (front - back), pedicle_hb, 0.5 * pedicle_w],
        0.0,
        4.5,
        true,
    ));
    // Articular pillar (superior and inferior articular processes); its lower end stops short of
    // the next level's pillar top, leaving the facet joint space.
    let top = 0.55 * big_b;
    let bottom = -(big_b + gap_below + 0.45 * next_half_height) + 1.5;
    out.push(RoundBox::new(
        [canal_back - 5.0, 0.5 * (top + bottom), cw + 0.5 * pedicle_w + 1.0],
        [8.0, 0.5 * (top - bottom), 0.5 * pedicle_w + 3.0],
        0.0,
        4.5,
        true,
    ));
    // Lamina: behind the canal, sloping so that its lower edge is more posterior.
    let lamina_tilt = deg(rng.gen_range(12.0..25.0));
    let lamina_hb = 0.55 * big_b + 0.3 * gap_below;
    out.push(RoundBox::new(
        [canal_back - 3.5, -0.25 * big_b, 0.0],
        [3.5, lamina_hb, cw + 3.0],
        lamina_tilt,
        3.0,
        false,
    ));
    // Spinous process: lumbar ones are hatchet-shaped and nearly horizontal, thoracic ones long,
    // thin and pointing steeply down.
    let (length, half_h, half_w, slope) = if lumbar {
        (rng.gen_range(24.0..32.0), rng.gen_range(7.0..9.5), rng.gen_range(4.0..5.5), deg(rng.gen_range(3.0..18.0)))
    } else {
        (rng.gen_range(30.0..40.0), rng.gen_range(4.0..5.5), 3.5, deg(rng.gen_range(40.0..58.0)))
    };
    let start = [canal_back - 4.0, -0.3 * big_b];
    let (sin, cos) = sin_cos(slope);
    let centre = [start[0] - 0.5 * length * cos, start[1] - 0.5 * length * sin];
    out.push(RoundBox::new([centre[0], centre[1], 0.0], [0.5 * length, half_h, half_w], -slope, 4.5, false));
    // Transverse processes reach the lateral slices.
    let (tp_len, tp_hb) = if lumbar { (rng.gen_range(12.0..20.0), rng.gen_range(4.0..5.5)) } else { (10.0, 4.0) };
    out.push(RoundBox::new(
        [canal_back - 1.0, 0.3 * big_b, cw + pedicle_w + 0.5 * tp_len],
        [4.0, tp_hb, 0.5 * tp_len + 2.0],
        0.0,
        2.5,
        true,
    ));
    out
}

/// Dorsal wall, lateral masses and median crest of a sacral segment.
fn sacral_posterior(bone: &Bone, n: u8, rng: &mut impl Rng) -> Vec<RoundBox> {
    let big_b = bone.half_height;
    let p0 = -bone.a_post;
    let cw = bone.canal_half_width;
    let canal_back = p0 - 1.5 - bone.canal_depth;
    let thickness = rng.gen_range(5.0..7.0);
    let mut out = vec![
        // Dorsal wall of the sacral canal.
        RoundBox::new(
            [canal_back - 0.5 * thickness, 0.0, 0.0],
            [0.5 * thickness + 0.5, big_b + 4.0, cw + 4.0],
            0.0,
            2.0,
            false,
        ),
        // Lateral masses joining the bodies to the dorsal wall.
        RoundBox::new(
            [0.5 * (p0 + 4.0 + canal_back - thickness), 0.0, cw + 0.5 * (0.8 * bone.half_width - cw)],
            [0.5 * (p0 + 4.0 - canal_back + thickness), big_b + 2.0, 0.5 * (0.8 * bone.half_width - cw).max(2.0)],
            0.0,
            2.0,
            true,
        ),
    ];
    if n <= 3 {
        // Median sacral crest (fused spinous tubercles).
        out.push(RoundBox::new(
            [canal_back - thickness - 3.0, -0.2 * big_b, 0.0],
            [4.0, 0.6 * big_b, 3.0],
            0.0,
            2.0,
            false,
        ));
    }
    out
}
