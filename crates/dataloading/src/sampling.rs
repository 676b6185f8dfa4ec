//! Training patches from preprocessed cases (nnU-Net v2's `nnUNetDataLoader` / `nnUNetDataLoader2D`
//! plus its augmentation pipeline), deterministic from a seed, and validation tiles.
//!
//! # Sampling one batch ([`PatchSampler::batch`])
//! Batch `b` is a pure function of `(seed, b)`: every element gets its own ChaCha8 stream keyed
//! by `(seed, b, element)`, so elements are made in parallel (rayon) and the result does not
//! depend on the thread count or on which batches were made before.
//! For each element:
//! 1. Pick a case uniformly.
//! 2. nnU-Net's foreground oversampling: the last `B − round(B · (1 − 0.33))` elements
//!    ([`num_forced_foreground`]; `round(B · 0.33)` for every `B` up to 150) are *forced*: pick
//!    a foreground class present in the case uniformly, then one of its cached locations
//!    ([`ClassLocations`]) as the patch centre. A case without foreground falls back to random.
//!    - 2D (sagittal slices across `i`): the slice is the `i` of a random location of the chosen
//!      class (so slices are weighted by how much of the class they hold, as nnU-Net), then the
//!      centre is a random location of that class in that slice. Unforced: a uniform slice.
//! 3. Place the *enlarged* region ([`augment::initial_patch_size`], nnU-Net's `initial_patch_size`,
//!    so rotation and scaling do not pull in border) as nnU-Net's `get_bbox`: with
//!    `need = initial − final` (or more when the case is smaller), the region's lower corner is
//!    uniform in `[−⌈need/2⌉, shape + ⌈need/2⌉ − initial]`; forced: `max(lower bound, centre −
//!    initial/2)` (no upper clamp, as nnU-Net; the region may extend past the end).
//! 4. Copy the region; voxels outside the case are padded: images 0 (the normalised mean), seg 0
//!    (background). nnU-Net pads seg with −1 and turns −1 into 0 before the loss
//!    (`RemoveLabelTansform(-1, 0)`), so the network sees the same; there is no validity mask.
//! 5. Augment ([`augment::augment`]): the spatial transform samples the final patch about the
//!    region's centre (without a spatial transform it is the centre crop), then intensity
//!    transforms and mirroring.
//!
//! # Unlabelled cases (opt-in)
//! With [`SamplerConfig::allow_unlabelled`] the sampler also accepts cases without a
//! segmentation (for semi-supervised or masked-autoencoder methods that learn from images
//! alone). Such a case is picked like any other; its patch position is always random (a forced
//! element falls back to random, as for a labelled case without foreground), its seg is all 0
//! (background) and its [`SampleInfo::labelled`] is false. The draws are the same as for a
//! labelled case, so batches stay a pure function of `(seed, b)`. Off by default: training on
//! labels refuses unlabelled cases. [`SamplerConfig::labelled_per_batch`] fixes the mix
//! instead (semi-supervised methods: a labelled and an unlabelled half in every batch): the
//! last `n` elements of each batch come from the labelled cases, the others from the unlabelled
//! ones (the forced-foreground elements are the last, so they fall on labelled cases).
//!
//! # Batch memory layout
//! [`Batch::images`] is `[B, C, X, Y, Z]` (3D) or `[B, C, Y, Z]` (2D), C order (row-major, last
//! axis fastest), where `X, Y, Z` are the patch sides along the canonical axes `i, j, k` (2D:
//! `j, k` of one sagittal slice), i.e. the order of the plan's `patch_size`. Element
//! `(b, c, x, y, z)` is at `(((b·C + c)·X + x)·Y + y)·Z + z`. This is the *transpose* of
//! [`spineseg_io::Volume`]'s `i`-fastest layout (there `k` is slowest; here `k` is fastest), so
//! `burn`'s `TensorData::new(batch.images, batch.image_shape())` reads it directly as
//! `[batch, channels, i, j, k]`. [`Batch::seg`] is `[B, X, Y, Z]` / `[B, Y, Z]` class indices in
//! the same order.
//!
//! # Validation
//! - nnU-Net computes its per-epoch pseudo-Dice on patches drawn like training patches without
//!   augmentation: a [`PatchSampler`] over the validation cases with
//!   [`AugmentationConfig::none`] and a fixed seed gives the same batches every epoch.
//! - [`ValidationTiles`] covers every case completely with non-overlapping patches (2D: every
//!   slice), so a Dice over the tiles is the Dice of whole cases.
//!
//! # Background loading
//! [`BatchLoader`] makes batches on a worker thread (with its own rayon pool) into a bounded
//! channel, so the training step overlaps with data loading.

use crate::augment::{self, to_3d, AugmentationConfig, Patch};
use crate::error::{SamplingError, Result};
use spineseg_preprocessing::plan::{ConfigurationName, Plan, SLICE_AXIS_2D};
use spineseg_preprocessing::preprocess::PreprocessedCase;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use spineseg_io::Volume;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

/// nnU-Net's `oversample_foreground_percent`.
pub const OVERSAMPLE_FOREGROUND_PERCENT: f64 = 0.33;
/// Locations cached per class and case (nnU-Net's `sample_foreground_locations`: 10000).
pub const LOCATIONS_PER_CLASS: usize = 10_000;
/// ... but at least this fraction of the class's voxels (nnU-Net: 1%).
pub const MIN_LOCATION_COVERAGE: f64 = 0.01;

const _: () = assert!(SLICE_AXIS_2D == 0, "2D sampling assumes slices across axis 0 (i)");

/// How many of `batch_size` elements are forced to contain foreground: nnU-Net's
/// `not sample_idx < round(batch_size * (1 - oversample))`, i.e. `B − round(B · (1 − p))`.
pub fn num_forced_foreground(batch_size: usize, oversample: f64) -> usize {
    // Python's round() rounds ties to even.
    batch_size - ((batch_size as f64 * (1.0 - oversample)).round_ties_even() as usize).min(batch_size)
}

/// What a [`PatchSampler`] makes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplerConfig {
    /// 2D (sagittal slices across `i`) or 3D.
    pub configuration: ConfigurationName,
    /// Final patch: `(j, k)` for 2D, `(i, j, k)` for 3D (the plan's `patch_size`).
    pub patch_size: Vec<usize>,
    pub batch_size: usize,
    /// Fraction of each batch forced to contain foreground (nnU-Net: 0.33).
    pub oversample_foreground: f64,
    pub augmentation: AugmentationConfig,
    pub seed: u64,
    /// Accept cases without a segmentation (see the module documentation); `false` refuses them.
    #[serde(default)]
    pub allow_unlabelled: bool,
    /// With unlabelled cases allowed: the last `n` elements of every batch from labelled cases,
    /// the others from unlabelled ones (see the module documentation); `None`: any case.
    #[serde(default)]
    pub labelled_per_batch: Option<usize>,
}

impl SamplerConfig {
    /// Patch and batch size from the plan's configuration.
    pub fn from_plan(
        plan: &Plan,
        configuration: ConfigurationName,
        augmentation: AugmentationConfig,
        seed: u64,
    ) -> Result<Self> {
        let c = plan
            .configuration(configuration)
            .ok_or_else(|| SamplingError::Sampling(format!("the plan has no configuration {configuration}")))?;
        Ok(SamplerConfig {
            configuration,
            patch_size: c.patch_size.clone(),
            batch_size: c.batch_size,
            oversample_foreground: OVERSAMPLE_FOREGROUND_PERCENT,
            augmentation,
            seed,
            allow_unlabelled: false,
            labelled_per_batch: None,
        })
    }
}

/// Cached voxel locations per class of one case (nnU-Net's `class_locations`): for each
/// foreground class, `max(min(10000, n), ⌈0.01 n⌉)` of its `n` voxels, drawn without replacement,
/// as flat [`Volume`] indices (`i` fastest), in increasing order.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassLocations {
    /// Index = class; entry 0 (background) is always empty.
    per_class: Vec<Vec<u32>>,
}

impl ClassLocations {
    /// Locations of every foreground class of `seg`, drawn with `seed`.
    pub fn compute(seg: &Volume<u8>, seed: u64) -> ClassLocations {
        let mut counts = vec![0usize; 256];
        for &c in seg.data() {
            counts[c as usize] += 1;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Sorted ranks (within each class) of the chosen voxels.
        let chosen: Vec<Vec<usize>> = counts
            .iter()
            .enumerate()
            .map(|(c, &n)| {
                if c == 0 || n == 0 {
                    return Vec::new();
                }
                let k = n.min(LOCATIONS_PER_CLASS).max((n as f64 * MIN_LOCATION_COVERAGE).ceil() as usize).min(n);
                let mut ranks = rand::seq::index::sample(&mut rng, n, k).into_vec();
                ranks.sort_unstable();
                ranks
            })
            .collect();
        let mut per_class: Vec<Vec<u32>> = chosen.iter().map(|r| Vec::with_capacity(r.len())).collect();
        let mut seen = vec![0usize; 256];
        let mut next = vec![0usize; 256];
        for (p, &c) in seg.data().iter().enumerate() {
            let c = c as usize;
            if c == 0 {
                continue;
            }
            if next[c] < chosen[c].len() && chosen[c][next[c]] == seen[c] {
                per_class[c].push(p as u32);
                next[c] += 1;
            }
            seen[c] += 1;
        }
        let last = per_class.iter().rposition(|v| !v.is_empty()).map_or(1, |c| c + 1);
        per_class.truncate(last);
        ClassLocations { per_class }
    }

    /// No locations at all: what an unlabelled case has.
    pub fn empty() -> ClassLocations {
        ClassLocations { per_class: Vec::new() }
    }

    /// Foreground classes with at least one location.
    pub fn classes(&self) -> Vec<u8> {
        (1..self.per_class.len()).filter(|&c| !self.per_class[c].is_empty()).map(|c| c as u8).collect()
    }

    /// Flat volume indices of `class` (empty when absent).
    pub fn of(&self, class: u8) -> &[u32] {
        self.per_class.get(class as usize).map_or(&[], |v| v.as_slice())
    }
}

/// Where a batch element came from.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleInfo {
    /// Index into the sampler's (or tiles') cases.
    pub case: usize,
    /// Case voxel `(i, j, k)` of the final patch's first voxel before the spatial transform
    /// (2D: `i` is the slice).
    pub origin: [isize; 3],
    /// How many voxels of the patch, from its start, lie inside the case, per patch axis `(i,
    /// j, k)` (2D: `[1, j, k]`); before the spatial transform. Beyond that is padding.
    pub valid: [usize; 3],
    /// Element forced to contain foreground by oversampling.
    pub forced_foreground: bool,
    /// The class whose location centred the patch (forced elements of cases with foreground).
    pub class: Option<u8>,
    /// The case has a segmentation; `false` only for unlabelled cases, whose seg is all 0 (see
    /// [`SamplerConfig::allow_unlabelled`]).
    pub labelled: bool,
}

/// A batch of patches; see the module documentation for the memory layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `[B, C, *patch_shape]`, C order.
    pub images: Vec<f32>,
    /// `[B, *patch_shape]` class indices, C order.
    pub seg: Vec<u8>,
    pub batch_size: usize,
    pub channels: usize,
    /// `(i, j, k)` sides for 3D, `(j, k)` for 2D.
    pub patch_shape: Vec<usize>,
    /// Per element.
    pub samples: Vec<SampleInfo>,
}

impl Batch {
    /// `[B, C, *patch_shape]`.
    pub fn image_shape(&self) -> Vec<usize> {
        [self.batch_size, self.channels].into_iter().chain(self.patch_shape.iter().copied()).collect()
    }
    /// `[B, *patch_shape]`.
    pub fn seg_shape(&self) -> Vec<usize> {
        std::iter::once(self.batch_size).chain(self.patch_shape.iter().copied()).collect()
    }
    /// The centre `patch` (sides as [`patch_shape`](Self::patch_shape), none larger) of every
    /// element, images and labels: for a method whose network sees more context than it
    /// predicts. Where a side's surplus is odd, the extra voxel is cut from the end.
    ///
    /// # Panics
    ///
    /// Panics if `patch` has another number of sides or a larger side.
    pub fn centre_crop(&self, patch: &[usize]) -> Batch {
        assert_eq!(patch.len(), self.patch_shape.len(), "a crop of {patch:?} from a {:?} batch", self.patch_shape);
        assert!(patch.iter().zip(&self.patch_shape).all(|(p, s)| p <= s), "a crop of {patch:?} from {:?}", self.patch_shape);
        let from = to_3d(&self.patch_shape);
        let to = to_3d(patch);
        let start: [usize; 3] = std::array::from_fn(|a| (from[a] - to[a]) / 2);
        let (n_from, n_to) = (from.iter().product::<usize>(), to.iter().product::<usize>());
        fn crop<T: Copy>(src: &[T], from: [usize; 3], to: [usize; 3], start: [usize; 3], dst: &mut Vec<T>) {
            for i in 0..to[0] {
                for j in 0..to[1] {
                    let row = ((i + start[0]) * from[1] + j + start[1]) * from[2] + start[2];
                    dst.extend_from_slice(&src[row..row + to[2]]);
                }
            }
        }
        let mut images = Vec::with_capacity(self.batch_size * self.channels * n_to);
        for block in self.images.chunks_exact(n_from) {
            crop(block, from, to, start, &mut images);
        }
        let mut seg = Vec::with_capacity(self.batch_size * n_to);
        for block in self.seg.chunks_exact(n_from) {
            crop(block, from, to, start, &mut seg);
        }
        let samples = self
            .samples
            .iter()
            .map(|info| SampleInfo {
                origin: std::array::from_fn(|a| info.origin[a] + start[a] as isize),
                valid: std::array::from_fn(|a| info.valid[a].saturating_sub(start[a]).min(to[a])),
                ..info.clone()
            })
            .collect();
        Batch { images, seg, batch_size: self.batch_size, channels: self.channels, patch_shape: patch.to_vec(), samples }
    }

    fn from_patches(patches: Vec<(Patch, SampleInfo)>, channels: usize, patch_shape: Vec<usize>) -> Batch {
        let n: usize = patch_shape.iter().product();
        let mut images = Vec::with_capacity(patches.len() * channels * n);
        let mut seg = Vec::with_capacity(patches.len() * n);
        let mut samples = Vec::with_capacity(patches.len());
        for (p, info) in patches {
            debug_assert_eq!(p.voxels(), n);
            images.extend_from_slice(&p.images);
            seg.extend_from_slice(&p.seg);
            samples.push(info);
        }
        Batch { images, seg, batch_size: samples.len(), channels, patch_shape, samples }
    }
}

/// Copies the region of shape `shape` starting at case voxel `lb` into a C-order patch (see
/// [`augment`]), zeros outside the case.
pub fn extract_region(case: &PreprocessedCase, lb: [isize; 3], shape: [usize; 3]) -> Patch {
    let channels = case.images.len();
    let mut patch = Patch::zeros(shape, channels);
    let vshape = case.images[0].shape();
    let [nx, ny, _] = vshape;
    let n = patch.voxels();
    // Patch index ranges that fall inside the case, per axis.
    let range = |a: usize| {
        let lo = (-lb[a]).max(0) as usize;
        let hi = ((vshape[a] as isize - lb[a]).max(0) as usize).min(shape[a]);
        (lo.min(hi), hi)
    };
    let [(a_lo, a_hi), (b_lo, b_hi), (c_lo, c_hi)] = [range(0), range(1), range(2)];
    // The copy transposes (`i` fastest in the case, `k` fastest in the patch); tiles keep both
    // the reads and the writes within a few cache lines.
    const TA: usize = 8;
    const TB: usize = 8;
    const TC: usize = 16;
    let src_index = |a: usize, b: usize, c: usize| {
        (lb[0] + a as isize) as usize + nx * ((lb[1] + b as isize) as usize + ny * (lb[2] + c as isize) as usize)
    };
    let copy = |dst: &mut [f32], src: &[f32], seg: Option<(&mut [u8], &[u8])>| {
        let mut seg = seg;
        for a0 in (a_lo..a_hi).step_by(TA) {
            for b0 in (b_lo..b_hi).step_by(TB) {
                for c0 in (c_lo..c_hi).step_by(TC) {
                    for c in c0..(c0 + TC).min(c_hi) {
                        for b in b0..(b0 + TB).min(b_hi) {
                            for a in a0..(a0 + TA).min(a_hi) {
                                let s = src_index(a, b, c);
                                let d = (a * shape[1] + b) * shape[2] + c;
                                dst[d] = src[s];
                                if let Some((sd, ss)) = seg.as_mut() {
                                    sd[d] = ss[s];
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    let Patch { images, seg, .. } = &mut patch;
    for ch in 0..channels {
        let case_seg = if ch == 0 { case.seg.as_ref().map(|s| (seg.as_mut_slice(), s.data())) } else { None };
        copy(&mut images[ch * n..(ch + 1) * n], case.images[ch].data(), case_seg);
    }
    patch
}

/// nnU-Net-style random patches with augmentation; see the module documentation.
pub struct PatchSampler {
    cases: Vec<PreprocessedCase>,
    locations: Vec<OnceLock<ClassLocations>>,
    config: SamplerConfig,
    final_patch: [usize; 3],
    initial_patch: [usize; 3],
    planar: bool,
    channels: usize,
}

impl PatchSampler {
    /// Checks that there are cases, all with labels (unless
    /// [`SamplerConfig::allow_unlabelled`]), the same channel count and a patch of the
    /// configuration's dimensionality.
    pub fn new(cases: Vec<PreprocessedCase>, config: SamplerConfig) -> Result<PatchSampler> {
        let err = |m: String| Err(SamplingError::Sampling(m));
        let dims = config.configuration.dims();
        if config.patch_size.len() != dims || config.patch_size.contains(&0) {
            return err(format!(
                "patch_size {:?} must be {dims} positive sides for {}",
                config.patch_size, config.configuration
            ));
        }
        if config.batch_size == 0 {
            return err("batch_size must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&config.oversample_foreground) {
            return err(format!("oversample_foreground {} is not a fraction", config.oversample_foreground));
        }
        config.augmentation.validate().map_err(SamplingError::Sampling)?;
        let Some(first) = cases.first() else { return err("no cases to sample from".into()) };
        let channels = first.images.len();
        for case in &cases {
            let id = &case.properties.id;
            if case.images.len() != channels || channels == 0 {
                return err(format!("case {id} has {} channels, expected {channels} (> 0)", case.images.len()));
            }
            let shape = case.images[0].shape();
            if case.images.iter().any(|v| v.shape() != shape) {
                return err(format!("case {id}: channels have different shapes"));
            }
            match &case.seg {
                Some(s) if s.shape() == shape => {}
                Some(_) => return err(format!("case {id}: seg shape differs from the images'")),
                None if config.allow_unlabelled => {}
                None => return err(format!("case {id} has no segmentation; training needs labels")),
            }
        }
        if let Some(labelled) = config.labelled_per_batch {
            let with_labels = cases.iter().filter(|c| c.seg.is_some()).count();
            if !config.allow_unlabelled || labelled > config.batch_size {
                return err(format!(
                    "labelled_per_batch {labelled} needs unlabelled cases allowed and at most batch_size {}",
                    config.batch_size
                ));
            }
            if labelled > 0 && with_labels == 0 {
                return err("labelled_per_batch: no labelled case to draw from".into());
            }
            if labelled < config.batch_size && with_labels == cases.len() {
                return err("labelled_per_batch: no unlabelled case to draw from (give unlabelled images)".into());
            }
        }
        let final_patch = to_3d(&config.patch_size);
        let initial_patch = to_3d(&augment::initial_patch_size(&config.patch_size, &config.augmentation));
        let planar = config.augmentation.is_planar(&config.patch_size);
        let locations = cases.iter().map(|_| OnceLock::new()).collect();
        Ok(PatchSampler { cases, locations, config, final_patch, initial_patch, planar, channels })
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }
    pub fn cases(&self) -> &[PreprocessedCase] {
        &self.cases
    }
    /// The enlarged region sampled before augmentation, in the patch's axes.
    pub fn initial_patch_size(&self) -> Vec<usize> {
        self.spatial(self.initial_patch)
    }
    /// Elements per batch forced to contain foreground.
    pub fn num_forced_foreground(&self) -> usize {
        num_forced_foreground(self.config.batch_size, self.config.oversample_foreground)
    }
    fn spatial(&self, shape3: [usize; 3]) -> Vec<usize> {
        match self.config.configuration {
            ConfigurationName::TwoD => shape3[1..].to_vec(),
            ConfigurationName::ThreeDFullres => shape3.to_vec(),
        }
    }
    fn is_2d(&self) -> bool {
        self.config.configuration == ConfigurationName::TwoD
    }

    /// The case's class locations (computed on first use, then cached); empty for an unlabelled
    /// case, so its forced elements fall back to random positions.
    pub fn class_locations(&self, case: usize) -> &ClassLocations {
        self.locations[case].get_or_init(|| match self.cases[case].seg.as_ref() {
            Some(seg) => ClassLocations::compute(seg, mix(self.config.seed, u64::MAX, case as u64)),
            None => ClassLocations::empty(),
        })
    }

    /// Computes every case's class locations now (in parallel) instead of on first use.
    pub fn precompute_locations(&self) {
        (0..self.cases.len()).into_par_iter().for_each(|c| {
            self.class_locations(c);
        });
    }

    /// Batch number `index` (see the module documentation); elements in parallel on the current
    /// rayon pool.
    pub fn batch(&self, index: u64) -> Batch {
        let b = self.config.batch_size;
        let first_forced = b - self.num_forced_foreground();
        let patches: Vec<(Patch, SampleInfo)> =
            (0..b).into_par_iter().with_max_len(1).map(|e| self.sample(index, e, e >= first_forced)).collect();
        Batch::from_patches(patches, self.channels, self.config.patch_size.clone())
    }

    /// One element: its own RNG stream from `(seed, batch_index, element)`.
    pub fn sample(&self, batch_index: u64, element: usize, force_foreground: bool) -> (Patch, SampleInfo) {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(self.config.seed, batch_index, element as u64));
        let case_index = match self.config.labelled_per_batch {
            None => rng.gen_range(0..self.cases.len()),
            Some(labelled) => {
                let want_labels = element >= self.config.batch_size - labelled;
                let pool: Vec<usize> = (0..self.cases.len()).filter(|&c| self.cases[c].seg.is_some() == want_labels).collect();
                pool[rng.gen_range(0..pool.len())]
            }
        };
        let case = &self.cases[case_index];
        let shape = case.images[0].shape();
        let p = self.initial_patch;

        // Centre: (class, flat voxel index) for forced elements of cases with foreground.
        let mut centre = None;
        if force_foreground {
            let locs = self.class_locations(case_index);
            let classes = locs.classes();
            if !classes.is_empty() {
                let class = classes[rng.gen_range(0..classes.len())];
                let all = locs.of(class);
                let voxel = if self.is_2d() {
                    let slice = all[rng.gen_range(0..all.len())] as usize % shape[0];
                    let in_slice: Vec<u32> = all.iter().copied().filter(|v| *v as usize % shape[0] == slice).collect();
                    in_slice[rng.gen_range(0..in_slice.len())]
                } else {
                    all[rng.gen_range(0..all.len())]
                };
                centre = Some((class, unflatten(voxel as usize, shape)));
            }
        }
        let mut lb = [0isize; 3];
        let first_axis = if self.is_2d() {
            lb[0] = match centre {
                Some((_, v)) => v[0] as isize,
                None => rng.gen_range(0..shape[0]) as isize,
            };
            1
        } else {
            0
        };
        for a in first_axis..3 {
            let mut need = p[a] - self.final_patch[a];
            if need + shape[a] < p[a] {
                need = p[a] - shape[a];
            }
            let half = need.div_ceil(2) as isize;
            let lo = -half;
            let hi = shape[a] as isize + half - p[a] as isize;
            lb[a] = match centre {
                Some((_, v)) => lo.max(v[a] as isize - (p[a] / 2) as isize),
                None => rng.gen_range(lo..=hi.max(lo)),
            };
        }
        let region = extract_region(case, lb, p);
        let patch = augment::augment(&region, self.final_patch, &self.config.augmentation, self.planar, &mut rng);
        let offset: [usize; 3] = [0, 1, 2].map(|a| p[a].saturating_sub(self.final_patch[a]) / 2);
        let origin = [0, 1, 2].map(|a| lb[a] + offset[a] as isize);
        let info = SampleInfo {
            case: case_index,
            origin,
            valid: valid_extent(origin, self.final_patch, shape),
            forced_foreground: force_foreground,
            class: centre.map(|(c, _)| c),
            labelled: case.seg.is_some(),
        };
        (patch, info)
    }
}

/// Voxels of a patch at `origin` with `patch` sides that lie inside `shape`, counted from the
/// patch start (0 when the start is outside).
fn valid_extent(origin: [isize; 3], patch: [usize; 3], shape: [usize; 3]) -> [usize; 3] {
    [0, 1, 2].map(|a| if origin[a] < 0 { 0 } else { patch[a].min(shape[a].saturating_sub(origin[a] as usize)) })
}

/// Flat `i`-fastest index -> `[i, j, k]`.
fn unflatten(p: usize, shape: [usize; 3]) -> [usize; 3] {
    [p % shape[0], (p / shape[0]) % shape[1], p / (shape[0] * shape[1])]
}

/// A 64-bit key for `(seed, a, b)` (SplitMix64 finaliser over the combination).
fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut z = seed;
    for v in [a, b] {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15).wrapping_add(v.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
    }
    z
}

/// Reads preprocessed cases (see [`spineseg_preprocessing::preprocess::load_preprocessed`]).
pub fn load_cases(dir: &Path, ids: &[String]) -> Result<Vec<PreprocessedCase>> {
    let cases: std::result::Result<Vec<_>, _> =
        ids.iter().map(|id| spineseg_preprocessing::preprocess::load_preprocessed(dir, id)).collect();
    Ok(cases?)
}

/// Deterministic validation batches covering every case completely with non-overlapping
/// patches: 3D tiles `(i, j, k)`, 2D tiles `(j, k)` of every sagittal slice. Tiles start at
/// multiples of the patch size; the last tile along an axis extends past the case and is padded
/// (images 0, seg 0) — [`SampleInfo::valid`] says how much of each tile is real, so a Dice over
/// the valid parts equals the Dice over the whole case. The last batch may be smaller.
pub struct ValidationTiles<'a> {
    cases: &'a [PreprocessedCase],
    patch: [usize; 3],
    patch_shape: Vec<usize>,
    batch_size: usize,
    tiles: Vec<(usize, [isize; 3])>,
    next: usize,
}

impl<'a> ValidationTiles<'a> {
    pub fn new(
        cases: &'a [PreprocessedCase],
        configuration: ConfigurationName,
        patch_size: &[usize],
        batch_size: usize,
    ) -> Result<Self> {
        if patch_size.len() != configuration.dims() || patch_size.contains(&0) || batch_size == 0 {
            return Err(SamplingError::Sampling(format!(
                "validation tiles need {} positive patch sides (got {patch_size:?}) and a batch size > 0",
                configuration.dims()
            )));
        }
        let patch = to_3d(patch_size);
        let mut tiles = Vec::new();
        for (c, case) in cases.iter().enumerate() {
            let shape = case.images[0].shape();
            let starts =
                |a: usize| -> Vec<isize> { (0..shape[a].max(1)).step_by(patch[a]).map(|s| s as isize).collect() };
            for i in starts(0) {
                for j in starts(1) {
                    for k in starts(2) {
                        tiles.push((c, [i, j, k]));
                    }
                }
            }
        }
        Ok(ValidationTiles { cases, patch, patch_shape: patch_size.to_vec(), batch_size, tiles, next: 0 })
    }

    /// Number of tiles (batch elements) in all.
    pub fn num_tiles(&self) -> usize {
        self.tiles.len()
    }
}

impl Iterator for ValidationTiles<'_> {
    type Item = Batch;
    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.tiles.len() {
            return None;
        }
        let end = (self.next + self.batch_size).min(self.tiles.len());
        let patches: Vec<(Patch, SampleInfo)> = self.tiles[self.next..end]
            .iter()
            .map(|&(c, origin)| {
                let case = &self.cases[c];
                let patch = extract_region(case, origin, self.patch);
                let info = SampleInfo {
                    case: c,
                    origin,
                    valid: valid_extent(origin, self.patch, case.images[0].shape()),
                    forced_foreground: false,
                    class: None,
                    labelled: case.seg.is_some(),
                };
                (patch, info)
            })
            .collect();
        self.next = end;
        let channels = self.cases[0].images.len();
        Some(Batch::from_patches(patches, channels, self.patch_shape.clone()))
    }
}

/// Makes batches `first, first + 1, ...` of a [`PatchSampler`] on a worker thread with its own
/// rayon pool of `threads` threads, keeping up to `prefetch` finished batches in a bounded
/// channel. Iterating yields the batches in order (identical to calling
/// [`PatchSampler::batch`]); dropping the loader stops the worker.
pub struct BatchLoader {
    rx: Option<Receiver<Batch>>,
    handle: Option<JoinHandle<()>>,
}

impl BatchLoader {
    pub fn spawn(sampler: Arc<PatchSampler>, first: u64, prefetch: usize, threads: usize) -> Result<BatchLoader> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("spineseg-loader-{i}"))
            .build()
            .map_err(|e| SamplingError::Sampling(format!("cannot start loader threads: {e}")))?;
        let (tx, rx) = sync_channel(prefetch.max(1));
        let handle = std::thread::Builder::new()
            .name("spineseg-loader".into())
            .spawn(move || {
                let mut index = first;
                loop {
                    let batch = pool.install(|| sampler.batch(index));
                    if tx.send(batch).is_err() {
                        return; // the loader was dropped
                    }
                    index += 1;
                }
            })
            .map_err(|e| SamplingError::Sampling(format!("cannot start the loader thread: {e}")))?;
        Ok(BatchLoader { rx: Some(rx), handle: Some(handle) })
    }
}

impl Iterator for BatchLoader {
    type Item = Batch;
    /// The next batch; `None` only if the worker died (a panic while sampling).
    fn next(&mut self) -> Option<Batch> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for BatchLoader {
    fn drop(&mut self) {
        // Closing the channel makes the worker's next send fail; it finishes its batch and exits.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_count_matches_nnunet_rounding() {
        assert_eq!(num_forced_foreground(2, 0.33), 1);
        assert_eq!(num_forced_foreground(12, 0.33), 4);
        assert_eq!(num_forced_foreground(1, 0.33), 0);
        assert_eq!(num_forced_foreground(3, 0.33), 1);
        for b in 1..=150 {
            assert_eq!(num_forced_foreground(b, 0.33), (b as f64 * 0.33).round_ties_even() as usize, "batch {b}");
        }
    }

    #[test]
    fn centre_crop_cuts_every_element_and_channel_at_the_centre() {
        // Two elements, two channels, 3 x 4 x 5: a value names its element, channel and voxel.
        let shape = [3, 4, 5];
        let value = |b: usize, c: usize, [i, j, k]: [usize; 3]| (1000 * b + 100 * c + 20 * i + 5 * j + k) as f32;
        let voxels = || (0..3).flat_map(|i| (0..4).flat_map(move |j| (0..5).map(move |k| [i, j, k])));
        let images: Vec<f32> = (0..2).flat_map(|b| (0..2).flat_map(move |c| voxels().map(move |v| value(b, c, v)))).collect();
        let seg: Vec<u8> = (0..2).flat_map(|b| voxels().map(move |[i, j, k]| (b + i + j + k) as u8)).collect();
        let info =
            SampleInfo { case: 0, origin: [0, -1, 2], valid: [3, 4, 3], forced_foreground: false, class: None, labelled: true };
        let batch = Batch { images, seg, batch_size: 2, channels: 2, patch_shape: shape.to_vec(), samples: vec![info; 2] };
        let crop = batch.centre_crop(&[3, 2, 2]);
        assert_eq!((crop.patch_shape.clone(), crop.images.len(), crop.seg.len()), (vec![3, 2, 2], 2 * 2 * 12, 2 * 12));
        // Start (0, 1, 1): the odd surplus of k (3) leaves 1 before and 2 after.
        let at = |b: usize, c: usize, [i, j, k]: [usize; 3]| crop.images[((b * 2 + c) * 3 + i) * 4 + j * 2 + k];
        assert_eq!(at(0, 0, [0, 0, 0]), value(0, 0, [0, 1, 1]));
        assert_eq!(at(1, 1, [2, 1, 1]), value(1, 1, [2, 2, 2]));
        assert_eq!(crop.seg[12 + 2 * 4 + 1 * 2 + 1], (1 + 2 + 2 + 2) as u8);
        // The samples' origin and valid extent follow the crop.
        assert_eq!((crop.samples[1].origin, crop.samples[1].valid), ([0, 0, 3], [3, 2, 2]));
        assert_eq!(batch.centre_crop(&shape), batch);
    }

    #[test]
    fn unflatten_inverts_volume_index() {
        let v = Volume::filled([3, 4, 5], 0u8, Default::default());
        assert_eq!(unflatten(v.index([2, 3, 4]), [3, 4, 5]), [2, 3, 4]);
    }

    #[test]
    fn class_locations_follow_nnunet_counts() {
        let mut data = vec![0u8; 20 * 20 * 30];
        for (p, v) in data.iter_mut().enumerate() {
            if p % 3 == 0 {
                *v = 2;
            }
        }
        data[5] = 7;
        let seg = Volume::new([20, 20, 30], data, Default::default()).unwrap();
        let locs = ClassLocations::compute(&seg, 1);
        assert_eq!(locs.classes(), vec![2, 7]);
        assert_eq!(locs.of(2).len(), 4000);
        assert_eq!(locs.of(7), &[5]);
        assert!(locs.of(2).iter().all(|p| seg.data()[*p as usize] == 2));
        assert!(locs.of(1).is_empty() && locs.of(200).is_empty());
    }

    /// A labelled case with a foreground blob of class 1 and an unlabelled one, both 6 x 10 x 12.
    fn labelled_and_unlabelled() -> Vec<PreprocessedCase> {
        use spineseg_preprocessing::test_support::synthetic_case;
        let value = |i: usize, j: usize, k: usize| (i + 10 * j + 100 * k) as f32;
        let blob = |i: usize, j: usize, k: usize| u8::from(i == 2 && (3..5).contains(&j) && (8..10).contains(&k));
        vec![
            synthetic_case("labelled", [6, 10, 12], 1, value, Some(&blob)),
            synthetic_case("unlabelled", [6, 10, 12], 1, value, None),
        ]
    }

    fn config(allow_unlabelled: bool, augmentation: AugmentationConfig) -> SamplerConfig {
        SamplerConfig {
            configuration: ConfigurationName::ThreeDFullres,
            patch_size: vec![4, 4, 4],
            batch_size: 6,
            oversample_foreground: 0.33,
            augmentation,
            seed: 7,
            allow_unlabelled,
            labelled_per_batch: None,
        }
    }

    #[test]
    fn a_fixed_mix_puts_labelled_cases_last_in_every_batch() {
        let mut mixed = config(true, AugmentationConfig::none());
        mixed.labelled_per_batch = Some(1);
        let sampler = PatchSampler::new(labelled_and_unlabelled(), mixed.clone()).unwrap();
        for index in 0..20 {
            let batch = sampler.batch(index);
            let labelled: Vec<bool> = batch.samples.iter().map(|s| s.labelled).collect();
            let n = labelled.len();
            assert!(labelled[..n - 1].iter().all(|&l| !l) && labelled[n - 1], "batch {index}: {labelled:?}");
        }
        // Without unlabelled cases (or with none allowed) a mix cannot be drawn.
        let only_labelled = vec![labelled_and_unlabelled().remove(0)];
        assert!(PatchSampler::new(only_labelled, mixed.clone()).is_err());
        let mut refused = mixed;
        refused.allow_unlabelled = false;
        assert!(PatchSampler::new(labelled_and_unlabelled(), refused).is_err());
    }

    #[test]
    fn unlabelled_cases_are_refused_unless_allowed() {
        let refused = PatchSampler::new(labelled_and_unlabelled(), config(false, AugmentationConfig::none()));
        let err = refused.err().expect("an unlabelled case should be refused by default");
        assert_eq!(err.to_string(), "sampling: case unlabelled has no segmentation; training needs labels");
        assert!(PatchSampler::new(labelled_and_unlabelled(), config(true, AugmentationConfig::none())).is_ok());
    }

    #[test]
    fn unlabelled_cases_give_random_patches_with_background_seg() {
        let augmentation = AugmentationConfig::nnunet(&[4, 4, 4]);
        let sampler = PatchSampler::new(labelled_and_unlabelled(), config(true, augmentation)).unwrap();
        sampler.precompute_locations();
        assert!(sampler.class_locations(1).classes().is_empty());
        let voxels = 4 * 4 * 4;
        let (mut labelled, mut unlabelled) = (0, 0);
        for index in 0..20 {
            let batch = sampler.batch(index);
            for (e, info) in batch.samples.iter().enumerate() {
                assert_eq!(info.labelled, info.case == 0, "{info:?}");
                if info.labelled {
                    labelled += 1;
                    // Forced elements of the labelled case are centred on its blob.
                    assert_eq!(info.class.is_some(), info.forced_foreground, "{info:?}");
                } else {
                    unlabelled += 1;
                    assert_eq!(info.class, None, "no oversampling for an unlabelled case");
                    let seg = &batch.seg[e * voxels..(e + 1) * voxels];
                    assert!(seg.iter().all(|&c| c == 0), "seg of an unlabelled case is background");
                }
            }
        }
        assert!(labelled > 0 && unlabelled > 0, "{labelled} labelled, {unlabelled} unlabelled elements");
    }

    #[test]
    fn unlabelled_batches_depend_only_on_seed_and_index() {
        let augmentation = AugmentationConfig::nnunet(&[4, 4, 4]);
        let a = PatchSampler::new(labelled_and_unlabelled(), config(true, augmentation.clone())).unwrap();
        let b = PatchSampler::new(labelled_and_unlabelled(), config(true, augmentation)).unwrap();
        let later = a.batch(5);
        assert_eq!(a.batch(0), b.batch(0));
        assert_eq!(later, b.batch(5));
    }

    #[test]
    fn allowing_unlabelled_cases_changes_nothing_for_labelled_ones() {
        let labelled = || labelled_and_unlabelled().into_iter().take(1).collect::<Vec<_>>();
        let augmentation = AugmentationConfig::nnunet(&[4, 4, 4]);
        let strict = PatchSampler::new(labelled(), config(false, augmentation.clone())).unwrap();
        let open = PatchSampler::new(labelled(), config(true, augmentation)).unwrap();
        for index in 0..4 {
            assert_eq!(strict.batch(index), open.batch(index));
        }
    }
}
