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

/// [`case_preview`] with a line of text beside each structure in `notes` (ontology id, text),
/// at the height of its centroid (`diagnose`: each disc's findings next to it).
pub fn case_preview_with_notes(
    image: &Volume<f32>,
    labels: &Volume<Label>,
    caption: &[String],
    notes: Vec<(Label, String)>,
) -> Result<RgbImage> {
    let (axis, slice) = spine_slice(labels);
    let options =
        OverlayOptions { axis: Some(axis), slice: Some(slice), max_size: 640, notes, ..OverlayOptions::default() };
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

    #[test]
    fn notes_sit_beside_their_structure_in_a_panel() {
        // L4/L5 (123) inferior (low z), L3/L4 (122) superior, on sagittal slice 1.
        let mut labels = Volume::filled([3, 40, 40], 0 as Label, Geometry::default());
        for y in 10..30 {
            for z in 5..8 {
                labels.set([1, y, z], 123);
            }
            for z in 30..33 {
                labels.set([1, y, z], 122);
            }
        }
        let image = Volume::filled([3, 40, 40], 1.0f32, Geometry::default());
        let plain = case_preview(&image, &labels, &[]).unwrap();
        let notes = vec![
            (123, "L4/L5 HERNIATION".to_string()),
            (122, "L3/L4 NO FINDING".to_string()),
            (124, "NOT IN SLICE".to_string()),
        ];
        let noted = case_preview_with_notes(&image, &labels, &[], notes).unwrap();
        assert!(noted.width > plain.width + text_width("L4/L5 HERNIATION", 1), "a panel holds the notes");
        let picture_only =
            OverlayOptions { axis: Some(0), slice: Some(1), max_size: 640, legend: false, ..OverlayOptions::default() };
        let picture_width = render_overlay(&image, Some(&labels), &picture_only).unwrap().width;
        let colour = |id: u16| Ontology::standard().get(StructureId(id)).unwrap().colour;
        // The leader of a structure: a run of its colour at the start of the panel, on one row.
        let leader_row =
            |id: u16| (0..noted.height).find(|&y| (0..10).all(|dx| noted.get(picture_width + dx, y) == colour(id)));
        let (inferior, superior) = (leader_row(123).expect("L4/L5 leader"), leader_row(122).expect("L3/L4 leader"));
        assert!(superior < inferior, "L3/L4's note is above L4/L5's ({superior} vs {inferior})");
        // Each note sits at its structure's height: 1 mm pixels, superior (z 39) at the top row,
        // so L3/L4 (z 30..33) is on rows 7..9 and L4/L5 (z 5..8) on rows 32..34.
        assert_eq!(noted.height, 40);
        assert!((7..=9).contains(&superior) && (32..=34).contains(&inferior), "{superior} {inferior}");
    }
}
