//! Cropping to the non-zero region (nnU-Net's `cropping.py`): the case's volumes as read, the
//! non-zero mask with holes filled, its bounding box, crop and the exact inverse. Below both the
//! fingerprint (which records each case's box) and preprocessing (which crops).

use serde::{Deserialize, Serialize};
use crate::error::{PreprocessError, Result};
use spineseg_io::{Geometry, Label, Volume};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};

/// One case's volumes as read: image channels (same grid) and optional labels (pipeline values,
/// e.g. ontology ids).
#[derive(Debug, Clone, PartialEq)]
pub struct CaseVolumes {
    pub id: String,
    pub images: Vec<Volume<f32>>,
    pub labels: Option<Volume<Label>>,
}

impl CaseVolumes {
    /// Reads image channels and an optional label file.
    pub fn read(id: &str, images: &[PathBuf], label: Option<&Path>) -> Result<CaseVolumes> {
        let images = read_finite_images(images)?;
        let labels = label.map(spineseg_io::read_labels).transpose()?;
        Ok(CaseVolumes { id: id.to_string(), images, labels })
    }

    /// At least one channel, and every channel and the labels on the first channel's grid
    /// (same shape, voxel positions within 1e-3 mm).
    pub fn check(&self) -> Result<()> {
        self.check_files(&[], None)
    }

    /// [`CaseVolumes::check`], naming the files the volumes were read from (`images` in channel
    /// order, `label`), so that the message points at the file to fix.
    pub fn check_files(&self, images: &[PathBuf], label: Option<&Path>) -> Result<()> {
        let err = |detail: String| Err(PreprocessError::Preprocess { case: self.id.clone(), detail });
        let named = |path: Option<&Path>| path.map(|p| format!(" {}", p.display())).unwrap_or_default();
        let Some(first) = self.images.first() else { return err("has no image channels".into()) };
        let shape = first.shape();
        let first_name = named(images.first().map(PathBuf::as_path));
        for (c, image) in self.images.iter().enumerate().skip(1) {
            if image.shape() != shape || !image.geometry.agrees_with(&first.geometry, shape, 1e-3) {
                return err(format!(
                    "image channel {c}{} (shape {:?}) is not on the grid of channel 0{first_name} (shape {shape:?})",
                    named(images.get(c).map(PathBuf::as_path)),
                    image.shape()
                ));
            }
        }
        if let Some(labels) = &self.labels {
            if labels.shape() != shape || !labels.geometry.agrees_with(&first.geometry, shape, 1e-3) {
                return err(format!(
                    "labels{} (shape {:?}) are not on the grid of the image{first_name} (shape {shape:?})",
                    named(label),
                    labels.shape()
                ));
            }
        }
        Ok(())
    }
}

/// Reads image channels as f32, refusing any with NaN or infinite voxels ([`check_finite`]):
/// what planning, preprocessing and prediction read images with.
pub fn read_finite_images(paths: &[PathBuf]) -> Result<Vec<Volume<f32>>> {
    paths
        .iter()
        .map(|path| {
            let image = spineseg_io::read_image(path)?;
            check_finite(&image, path)?;
            Ok(image)
        })
        .collect()
}

/// Refuses an image with NaN or infinite voxels, naming the file, how many and the first one.
pub fn check_finite(image: &Volume<f32>, path: &Path) -> Result<()> {
    let bad = image.data().iter().filter(|v| !v.is_finite()).count();
    if bad == 0 {
        return Ok(());
    }
    let index = image.data().iter().position(|v| !v.is_finite()).expect("counted above");
    let [nx, ny, _] = image.shape();
    let first = [index % nx, (index / nx) % ny, index / (nx * ny)];
    Err(PreprocessError::NonFiniteVoxels { path: path.to_path_buf(), count: bad, first })
}

/// A box of voxels, half-open: `start[a] <= index[a] < end[a]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundingBox {
    pub start: [usize; 3],
    pub end: [usize; 3],
}

impl BoundingBox {
    pub fn full(shape: [usize; 3]) -> BoundingBox {
        BoundingBox { start: [0; 3], end: shape }
    }
    pub fn shape(&self) -> [usize; 3] {
        [0, 1, 2].map(|a| self.end[a] - self.start[a])
    }
}

/// Voxels where any channel is non-zero, with enclosed holes filled (scipy's
/// `binary_fill_holes`: background not 6-connected to the border becomes foreground).
pub fn nonzero_mask(images: &[Volume<f32>]) -> Vec<bool> {
    let shape = images[0].shape();
    let mut mask = vec![false; images[0].len()];
    for image in images {
        for (m, v) in mask.iter_mut().zip(image.data()) {
            *m |= *v != 0.0;
        }
    }
    fill_holes(&mut mask, shape);
    mask
}

/// Fills background regions that do not touch the border (6-connectivity), in place.
pub fn fill_holes(mask: &mut [bool], shape: [usize; 3]) {
    let [nx, ny, nz] = shape;
    let mut outside = vec![false; mask.len()];
    let mut queue = VecDeque::new();
    let idx = |i: usize, j: usize, k: usize| i + nx * (j + ny * k);
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let border = i == 0 || j == 0 || k == 0 || i + 1 == nx || j + 1 == ny || k + 1 == nz;
                let p = idx(i, j, k);
                if border && !mask[p] && !outside[p] {
                    outside[p] = true;
                    queue.push_back([i, j, k]);
                }
            }
        }
    }
    while let Some([i, j, k]) = queue.pop_front() {
        let mut visit = |i: usize, j: usize, k: usize| {
            let p = idx(i, j, k);
            if !mask[p] && !outside[p] {
                outside[p] = true;
                queue.push_back([i, j, k]);
            }
        };
        if i > 0 {
            visit(i - 1, j, k);
        }
        if i + 1 < nx {
            visit(i + 1, j, k);
        }
        if j > 0 {
            visit(i, j - 1, k);
        }
        if j + 1 < ny {
            visit(i, j + 1, k);
        }
        if k > 0 {
            visit(i, j, k - 1);
        }
        if k + 1 < nz {
            visit(i, j, k + 1);
        }
    }
    for (m, o) in mask.iter_mut().zip(outside) {
        *m = !o;
    }
}

/// Bounding box of `mask` (the whole volume when the mask is empty).
pub fn mask_bounding_box(mask: &[bool], shape: [usize; 3]) -> BoundingBox {
    let mut start = shape;
    let mut end = [0; 3];
    let mut p = 0;
    for k in 0..shape[2] {
        for j in 0..shape[1] {
            for i in 0..shape[0] {
                if mask[p] {
                    for (a, x) in [i, j, k].into_iter().enumerate() {
                        start[a] = start[a].min(x);
                        end[a] = end[a].max(x + 1);
                    }
                }
                p += 1;
            }
        }
    }
    if end.contains(&0) {
        BoundingBox::full(shape)
    } else {
        BoundingBox { start, end }
    }
}

/// Bounding box of the voxels where any channel is non-zero (nnU-Net's crop box; holes do not
/// change it).
pub fn nonzero_bounding_box(images: &[Volume<f32>]) -> BoundingBox {
    let shape = images[0].shape();
    let mut mask = vec![false; images[0].len()];
    for image in images {
        for (m, v) in mask.iter_mut().zip(image.data()) {
            *m |= *v != 0.0;
        }
    }
    mask_bounding_box(&mask, shape)
}

/// The voxels of `bbox`; the geometry moves its origin to the box's first voxel.
pub fn crop<T: Copy>(volume: &Volume<T>, bbox: &BoundingBox) -> Volume<T> {
    let shape = bbox.shape();
    let mut data = Vec::with_capacity(shape.iter().product());
    for k in bbox.start[2]..bbox.end[2] {
        for j in bbox.start[1]..bbox.end[1] {
            let row = volume.index([bbox.start[0], j, k]);
            data.extend_from_slice(&volume.data()[row..row + shape[0]]);
        }
    }
    let mut geometry = volume.geometry;
    geometry.origin_mm = volume.geometry.voxel_to_world(bbox.start.map(|s| s as f64));
    Volume::new(shape, data, geometry).unwrap_or_else(|_| unreachable!("the box's voxels fill its shape"))
}

/// Pastes `volume` (the shape of `bbox`) into a volume of `shape` filled with `fill`, with
/// `geometry`.
pub fn uncrop<T: Copy>(volume: &Volume<T>, bbox: &BoundingBox, shape: [usize; 3], fill: T, geometry: Geometry) -> Volume<T> {
    let mut out = Volume::filled(shape, fill, geometry);
    let w = bbox.shape()[0];
    for k in bbox.start[2]..bbox.end[2] {
        for j in bbox.start[1]..bbox.end[1] {
            let dst = out.index([bbox.start[0], j, k]);
            let src = volume.index([0, j - bbox.start[1], k - bbox.start[2]]);
            out.data_mut()[dst..dst + w].copy_from_slice(&volume.data()[src..src + w]);
        }
    }
    out
}

