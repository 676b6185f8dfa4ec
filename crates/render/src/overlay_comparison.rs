//! Side-by-side overlays of one image slice with several label volumes (a prediction next to
//! its reference), each panel captioned; `spineseg demo` writes one after evaluating.

use crate::error::{RenderError, Result};
use crate::overlay::{render_overlay, write_png, OverlayOptions, RgbImage};
use spineseg_io::{read_image, read_labels, Label, Volume};
use std::path::Path;

/// Height in pixels of the caption band above each panel.
const CAPTION_BAND: usize = 28;
/// Pixels between panels.
const PANEL_GAP: usize = 8;

/// Renders the same slice of `image` once per `(caption, labels)` panel, each with its caption
/// in a band above it, left to right. Every label volume must be on the image's grid.
pub fn render_captioned_overlays(
    image: &Volume<f32>,
    panels: &[(&str, &Volume<Label>)],
    options: &OverlayOptions,
) -> Result<RgbImage> {
    if panels.is_empty() {
        return Err(RenderError::InvalidOptions("a comparison overlay needs at least one label volume".into()));
    }
    let mut rendered_panels = Vec::with_capacity(panels.len());
    for (caption, labels) in panels {
        let rendered = render_overlay(image, Some(labels), options)?;
        let mut panel = RgbImage::new(rendered.width, rendered.height + CAPTION_BAND, [0, 0, 0]);
        for y in 0..rendered.height {
            for x in 0..rendered.width {
                panel.set(x, y + CAPTION_BAND, rendered.get(x, y));
            }
        }
        panel.draw_text(8, 6, caption, 2, [255, 255, 255]);
        rendered_panels.push(panel);
    }
    Ok(RgbImage::hstack(&rendered_panels, PANEL_GAP))
}

/// Reads `image` and each panel's label file and writes their captioned overlays
/// ([`render_captioned_overlays`], default slice) as a PNG to `out`. Drawn at half the finest
/// voxel spacing, so small images (phantoms of about 100-160 px) stay legible.
pub fn write_comparison_overlay(image: &Path, panels: &[(&str, &Path)], out: &Path) -> Result<()> {
    let image = read_image(image)?;
    let finest = image.geometry.spacing.mm().into_iter().fold(f64::INFINITY, f64::min);
    let options = OverlayOptions { pixel_mm: Some(finest / 2.0), ..OverlayOptions::default() };
    let labels = panels.iter().map(|(_, path)| read_labels(path)).collect::<std::result::Result<Vec<_>, _>>()?;
    let captioned: Vec<(&str, &Volume<Label>)> = panels.iter().map(|(caption, _)| *caption).zip(&labels).collect();
    write_png(out, &render_captioned_overlays(&image, &captioned, &options)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use spineseg_io::Geometry;

    #[test]
    fn panels_sit_side_by_side_under_their_captions() {
        let geometry = Geometry::default();
        let image = Volume::new([4, 6, 5], (0..120).map(|v| v as f32).collect(), geometry).unwrap();
        let empty = Volume::new([4, 6, 5], vec![0; 120], geometry).unwrap();
        let mut marked = empty.clone();
        marked.data_mut()[60] = 23;
        let options = OverlayOptions::default();
        let single = render_overlay(&image, Some(&empty), &options).unwrap();
        let both = render_captioned_overlays(&image, &[("a", &empty), ("b", &marked)], &options).unwrap();
        assert_eq!(both.width, 2 * single.width + PANEL_GAP);
        assert_eq!(both.height, single.height + CAPTION_BAND);
        assert!(render_captioned_overlays(&image, &[], &options).is_err());
    }
}
