//! From class scores to a clean segmentation: softmax, arg max and per-class largest connected
//! component (nnU-Net's `remove_all_but_largest_component`).
//!
//! Buffers of scores are class-major, `num_classes` blocks of `voxels` values (the layout of
//! [`crate::ClassScores`]).

use rayon::prelude::*;
use spineseg_io::Volume;

/// Voxels per parallel task in the per-voxel passes.
const CHUNK: usize = 1 << 14;

/// Softmax over classes at every voxel, in place: `exp(x_c - max) / sum_c exp(x_c - max)`
/// (stable for large logits). `scores` is class-major (`num_classes` blocks of `voxels`).
pub fn softmax_in_place(scores: &mut [f32], num_classes: usize, voxels: usize) {
    assert_eq!(scores.len(), num_classes * voxels, "scores should hold num_classes blocks of voxels");
    if voxels == 0 {
        return;
    }
    let max = reduce_classes(scores, num_classes, voxels, f32::NEG_INFINITY, |m, x| m.max(x));
    scores.par_chunks_mut(voxels).for_each(|class| {
        for (x, m) in class.iter_mut().zip(&max) {
            *x = (*x - *m).exp();
        }
    });
    let sum = reduce_classes(scores, num_classes, voxels, 0.0, |s, x| s + x);
    scores.par_chunks_mut(voxels).for_each(|class| {
        for (x, s) in class.iter_mut().zip(&sum) {
            *x /= *s;
        }
    });
}

/// Per voxel, `fold` over the classes (in class order), in parallel over voxel chunks.
fn reduce_classes(
    scores: &[f32],
    num_classes: usize,
    voxels: usize,
    init: f32,
    fold: impl Fn(f32, f32) -> f32 + Sync,
) -> Vec<f32> {
    let mut out = vec![init; voxels];
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(n, acc)| {
        let start = n * CHUNK;
        for c in 0..num_classes {
            let class = &scores[c * voxels + start..][..acc.len()];
            for (a, x) in acc.iter_mut().zip(class) {
                *a = fold(*a, *x);
            }
        }
    });
    out
}

/// Index of the highest score per voxel; ties go to the lower class (as `numpy.argmax` and
/// `torch.argmax`), and a NaN never wins over a number. `num_classes` must be at most 256.
pub fn argmax(scores: &[f32], num_classes: usize, voxels: usize) -> Vec<u8> {
    assert_eq!(scores.len(), num_classes * voxels, "scores should hold num_classes blocks of voxels");
    assert!(num_classes <= 256, "class indices should fit in u8");
    let mut labels = vec![0u8; voxels];
    labels.par_chunks_mut(CHUNK).enumerate().for_each(|(n, labels)| {
        let start = n * CHUNK;
        let mut best: Vec<f32> = if num_classes == 0 { vec![] } else { scores[start..start + labels.len()].to_vec() };
        for c in 1..num_classes {
            let class = &scores[c * voxels + start..][..labels.len()];
            for ((b, l), x) in best.iter_mut().zip(labels.iter_mut()).zip(class) {
                // `!(x <= b)` would let NaN win; `x > b` keeps the earlier class on ties and NaN.
                if *x > *b || (b.is_nan() && !x.is_nan()) {
                    *b = *x;
                    *l = c as u8;
                }
            }
        }
    });
    labels
}

/// Which voxels touch in connected-component labelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Connectivity {
    /// 6-connectivity: voxels sharing a face.
    Faces,
    /// 18-connectivity: faces or edges.
    Edges,
    /// 26-connectivity: faces, edges or corners. The default, as nnU-Net's
    /// `remove_all_but_largest_component` (scikit-image `label` with full connectivity).
    #[default]
    Corners,
}

impl Connectivity {
    /// The neighbours that come earlier in memory order (`i` fastest): half of the neighbourhood.
    fn backward_offsets(self) -> Vec<[isize; 3]> {
        let max_nonzero = match self {
            Connectivity::Faces => 1,
            Connectivity::Edges => 2,
            Connectivity::Corners => 3,
        };
        let mut out = Vec::new();
        for dk in -1isize..=1 {
            for dj in -1isize..=1 {
                for di in -1isize..=1 {
                    let earlier = dk < 0 || (dk == 0 && (dj < 0 || (dj == 0 && di < 0)));
                    let nonzero = [di, dj, dk].iter().filter(|d| **d != 0).count();
                    if earlier && nonzero <= max_nonzero {
                        out.push([di, dj, dk]);
                    }
                }
            }
        }
        out
    }
}

/// Connected components of equal non-zero values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Components {
    /// Per voxel (`i` fastest): component number `1..=count`, 0 for value 0.
    pub labels: Vec<u32>,
    /// Per component `n` (index `n - 1`): its voxel count.
    pub sizes: Vec<usize>,
    /// Per component `n` (index `n - 1`): the value of its voxels.
    pub values: Vec<u8>,
}

/// Labels the connected components of every non-zero value of `seg` at once (voxels connect
/// only to voxels of the same value), numbered in order of their first voxel in memory order.
/// Union-find over one raster pass (path halving, the smaller index as root), then one pass to
/// number the roots: `O(voxels * neighbours)`.
pub fn connected_components(seg: &Volume<u8>, connectivity: Connectivity) -> Components {
    let [ni, nj, nk] = seg.shape();
    let data = seg.data();
    assert!(data.len() < u32::MAX as usize, "volumes should have fewer than 2^32 voxels");
    let offsets = connectivity.backward_offsets();
    let mut parent: Vec<u32> = (0..data.len() as u32).collect();
    fn find(parent: &mut [u32], mut x: u32) -> u32 {
        while parent[x as usize] != x {
            let grand = parent[parent[x as usize] as usize];
            parent[x as usize] = grand;
            x = grand;
        }
        x
    }
    let mut p = 0usize;
    for k in 0..nk {
        for j in 0..nj {
            for i in 0..ni {
                let v = data[p];
                if v != 0 {
                    for &[di, dj, dk] in &offsets {
                        let (qi, qj, qk) = (i as isize + di, j as isize + dj, k as isize + dk);
                        if qi < 0 || qj < 0 || qk < 0 || qi >= ni as isize || qj >= nj as isize {
                            continue;
                        }
                        let q = qi as usize + ni * (qj as usize + nj * qk as usize);
                        if data[q] == v {
                            let a = find(&mut parent, p as u32);
                            let b = find(&mut parent, q as u32);
                            if a != b {
                                let (lo, hi) = if a < b { (a, b) } else { (b, a) };
                                parent[hi as usize] = lo;
                            }
                        }
                    }
                }
                p += 1;
            }
        }
    }
    // Roots are the smallest index of their component, so they are met before their members.
    let mut labels = vec![0u32; data.len()];
    let mut sizes = Vec::new();
    let mut values = Vec::new();
    for p in 0..data.len() {
        if data[p] == 0 {
            continue;
        }
        let root = find(&mut parent, p as u32) as usize;
        let label = if root == p {
            sizes.push(0);
            values.push(data[p]);
            sizes.len() as u32
        } else {
            labels[root]
        };
        labels[p] = label;
        sizes[label as usize - 1] += 1;
    }
    Components { labels, sizes, values }
}

/// Keeps only the largest connected component of each class in `classes` (all non-zero classes
/// when `None`); the other voxels of those classes become background (0). Ties keep the
/// component whose first voxel comes first in memory order. Returns the number of voxels set to
/// background.
pub fn keep_largest_component_per_class(
    seg: &mut Volume<u8>,
    connectivity: Connectivity,
    classes: Option<&[u8]>,
) -> usize {
    let components = connected_components(seg, connectivity);
    let mut selected = [classes.is_none(); 256];
    selected[0] = false;
    if let Some(list) = classes {
        for &c in list {
            selected[c as usize] = c != 0;
        }
    }
    // Largest component per value (component numbers are 1-based; 0: none yet).
    let mut largest = [0u32; 256];
    for (n, (&size, &value)) in components.sizes.iter().zip(&components.values).enumerate() {
        let best = largest[value as usize];
        if best == 0 || size > components.sizes[best as usize - 1] {
            largest[value as usize] = n as u32 + 1;
        }
    }
    let mut removed = 0;
    for (v, &label) in seg.data_mut().iter_mut().zip(&components.labels) {
        if *v != 0 && selected[*v as usize] && label != largest[*v as usize] {
            *v = 0;
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use spineseg_io::Geometry;

    #[test]
    fn softmax_sums_to_one_and_is_stable() {
        // Two voxels, three classes, class-major.
        let mut s = vec![1.0, 1000.0, 2.0, 1000.0, 3.0, -1000.0];
        softmax_in_place(&mut s, 3, 2);
        let e = [1f64.exp(), 2f64.exp(), 3f64.exp()];
        let z: f64 = e.iter().sum();
        for c in 0..3 {
            assert!((s[2 * c] as f64 - e[c] / z).abs() < 1e-6);
        }
        assert!((s[1] - 0.5).abs() < 1e-6 && (s[3] - 0.5).abs() < 1e-6 && s[5] == 0.0);
    }

    #[test]
    fn argmax_takes_the_first_of_equal_maxima() {
        let s = vec![1.0, 5.0, f32::NAN, 2.0, 5.0, 0.0, 2.0, 1.0, 1.0];
        assert_eq!(argmax(&s, 3, 3), vec![1, 0, 2]);
    }

    fn seg(shape: [usize; 3], voxels: &[([usize; 3], u8)]) -> Volume<u8> {
        let mut v = Volume::filled(shape, 0u8, Geometry::default());
        for (p, c) in voxels {
            v.set(*p, *c);
        }
        v
    }

    #[test]
    fn components_depend_on_connectivity() {
        // [1, 1, 0] touches [0, 0, 0] at an edge and [1, 1, 1] at a face.
        let v = seg([3, 3, 3], &[([0, 0, 0], 1), ([1, 1, 1], 1), ([1, 1, 0], 1)]);
        assert_eq!(connected_components(&v, Connectivity::Faces).sizes, vec![1, 2]);
        assert_eq!(connected_components(&v, Connectivity::Edges).sizes, vec![3]);
        let corner = seg([3, 3, 3], &[([0, 0, 0], 1), ([1, 1, 1], 1)]);
        assert_eq!(connected_components(&corner, Connectivity::Edges).sizes, vec![1, 1]);
        assert_eq!(connected_components(&corner, Connectivity::Corners).sizes, vec![2]);
        // Different values never join.
        let two = seg([2, 1, 1], &[([0, 0, 0], 1), ([1, 0, 0], 2)]);
        let c = connected_components(&two, Connectivity::Corners);
        assert_eq!((c.sizes, c.values, c.labels), (vec![1, 1], vec![1, 2], vec![1, 2]));
    }

    #[test]
    fn union_find_merges_a_u_shape() {
        // A U in the (i, j) plane: the arms meet only at the bottom row, after both started.
        let mut voxels = Vec::new();
        for j in 0..4 {
            voxels.push(([0, j, 0], 3));
            voxels.push(([4, j, 0], 3));
        }
        for i in 0..5 {
            voxels.push(([i, 3, 0], 3));
        }
        let v = seg([5, 4, 1], &voxels);
        let c = connected_components(&v, Connectivity::Faces);
        assert_eq!(c.sizes, vec![11]);
        assert!(c.labels.iter().zip(v.data()).all(|(l, x)| (*l == 1) == (*x == 3)));
    }

    #[test]
    fn largest_component_is_kept_per_class() {
        let mut v = seg(
            [6, 4, 3],
            &[
                // Class 1: three voxels in a row, and a single voxel far away.
                ([0, 0, 0], 1),
                ([1, 0, 0], 1),
                ([2, 0, 0], 1),
                ([5, 3, 2], 1),
                // Class 2: one voxel, then two; the pair wins.
                ([0, 3, 0], 2),
                ([4, 0, 2], 2),
                ([4, 1, 2], 2),
                // Class 3: one component, untouched.
                ([3, 2, 1], 3),
            ],
        );
        let mut only_1 = v.clone();
        assert_eq!(keep_largest_component_per_class(&mut only_1, Connectivity::Faces, Some(&[1])), 1);
        assert_eq!(*only_1.get([0, 3, 0]), 2, "classes not listed stay");
        assert_eq!(keep_largest_component_per_class(&mut v, Connectivity::Corners, None), 2);
        let expected = seg(
            [6, 4, 3],
            &[([0, 0, 0], 1), ([1, 0, 0], 1), ([2, 0, 0], 1), ([4, 0, 2], 2), ([4, 1, 2], 2), ([3, 2, 1], 3)],
        );
        assert_eq!(v, expected);
    }
}
