//! The picture a person looks at after `predict`: the sagittal slice through the middle of the
//! spine, with every structure coloured and named, a legend, and caption lines above it (the
//! case, the levels found and how sure the level count is).

use crate::error::Result;
use crate::overlay::{render_overlay, text_width, OverlayOptions, RgbImage};
use spineseg_anatomy::ontology::{Ontology, StructureId, StructureKind};
use spineseg_io::geometry::closest_world_axes;
use spineseg_io::{Label, Volume};
use spineseg_metrics::structures::{found_spans, CaseStructures};

/// The sagittal slice (index along the voxel axis closest to left-right) through the middle of
/// the spine: the median position of the vertebra and disc voxels, else of all labelled voxels,
/// else the middle of the volume. `labels` holds ontology ids.
pub fn spine_slice(labels: &Volume<Label>) -> (usize, usize) {
    let (world_axis, _) = closest_world_axes(&labels.geometry.direction);
    let axis = (0..3).find(|&a| world_axis[a] == 0).unwrap_or(0);
    let shape = labels.shape();
    let ontology = Ontology::standard();
    let on_column = |v: Label| {
        ontology.get(StructureId(v)).is_some_and(|s| matches!(s.kind, StructureKind::Vertebra | StructureKind::Disc))
    };
    let mut column = vec![0usize; shape[axis]];
    let mut any = vec![0usize; shape[axis]];
    for k in 0..shape[2] {
        for j in 0..shape[1] {
            for i in 0..shape[0] {
                let v = *labels.get([i, j, k]);
                if v != 0 {
                    let s = [i, j, k][axis];
                    any[s] += 1;
                    if on_column(v) {
                        column[s] += 1;
                    }
                }
            }
        }
    }
    let median = |counts: &[usize]| {
        let total: usize = counts.iter().sum();
        (total > 0).then(|| {
            let mut seen = 0;
            counts.iter().position(|&c| {
                seen += c;
                2 * seen >= total
            })
        })?
    };
    let slice = median(&column).or_else(|| median(&any)).unwrap_or(shape[axis] / 2);
    (axis, slice)
}

/// Renders the preview of one case: `image` with `labels` (ontology ids, same grid) on the slice
/// of [`spine_slice`], vertebra names at their centroids, a legend, and `caption` lines on a
/// dark band above the picture.
pub fn case_preview(image: &Volume<f32>, labels: &Volume<Label>, caption: &[String]) -> Result<RgbImage> {
    let (axis, slice) = spine_slice(labels);
    let options = OverlayOptions { axis: Some(axis), slice: Some(slice), max_size: 640, ..OverlayOptions::default() };
    let picture = render_overlay(image, Some(labels), &options)?;
    Ok(with_caption(&picture, caption))
}

/// `picture` below a band with one line of text per caption entry.
pub fn with_caption(picture: &RgbImage, caption: &[String]) -> RgbImage {
    if caption.is_empty() {
        return picture.clone();
    }
    let longest = caption.iter().map(|l| text_width(l, 1)).max().unwrap_or(0);
    let scale = if picture.width >= 2 * longest + 12 { 2 } else { 1 };
    let line = 10 * scale;
    let band = caption.len() * line + 6;
    let width = picture.width.max(caption.iter().map(|l| text_width(l, scale)).max().unwrap_or(0) + 8);
    let mut out = RgbImage::new(width, picture.height + band, [24, 24, 24]);
    for (row, text) in caption.iter().enumerate() {
        out.draw_text(4, (3 + row * line) as i64, text, scale, [235, 235, 235]);
    }
    for y in 0..picture.height {
        for x in 0..picture.width {
            out.set(x, band + y, picture.get(x, y));
        }
    }
    out
}

/// Caption lines of a preview: the case, what was found, how sure the level count is.
pub fn preview_caption(table: &CaseStructures) -> Vec<String> {
    let (bodies, discs, _) = found_spans(table);
    let or_none = |s: String| if s.is_empty() { "none".to_string() } else { s };
    let mut lines = vec![table.case.clone(), format!("bodies {}  discs {}", or_none(bodies), or_none(discs))];
    if let Some(levels) = &table.levels {
        let mut line = levels.confidence.map_or("level count".to_string(), |c| format!("level confidence {c:.2}"));
        if let Some(reason) = &levels.ambiguous {
            line.push_str(&format!("  AMBIGUOUS: {reason}"));
        }
        lines.push(line);
    }
    if !table.flags.is_empty() {
        lines.push(format!("{} flag(s): see the structure table", table.flags.len()));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use spineseg_io::geometry::Geometry;

    #[test]
    fn the_slice_follows_the_spine_and_the_caption_sits_above() {
        // Voxel axis 0 is left-right; bodies (L4 = 23) sit at x 6..8 of 0..10, the canal (61)
        // at x 1, which must not pull the slice away from the bodies.
        let mut labels = Volume::filled([10, 8, 8], 0 as Label, Geometry::default());
        for x in 6..9 {
            for z in 2..6 {
                labels.set([x, 3, z], 23);
            }
        }
        for z in 0..8 {
            for y in 0..8 {
                labels.set([1, y, z], 61);
            }
        }
        assert_eq!(spine_slice(&labels), (0, 7));
        let empty = Volume::filled([10, 8, 8], 0 as Label, Geometry::default());
        assert_eq!(spine_slice(&empty), (0, 5));

        let image = Volume::filled([10, 8, 8], 1.0f32, Geometry::default());
        let plain = render_overlay(
            &image,
            Some(&labels),
            &OverlayOptions { axis: Some(0), slice: Some(7), max_size: 640, ..OverlayOptions::default() },
        )
        .unwrap();
        let preview = case_preview(&image, &labels, &["CASE 1".to_string(), "LEVELS L4".to_string()]).unwrap();
        assert!(preview.height > plain.height && preview.width >= plain.width);
        // The picture is the bottom part, unchanged.
        let band = preview.height - plain.height;
        assert!((0..plain.height).all(|y| (0..plain.width).all(|x| preview.get(x, band + y) == plain.get(x, y))));
        // The band holds text (light pixels).
        assert!((0..band).any(|y| (0..preview.width).any(|x| preview.get(x, y)[0] > 200)));
    }
}
