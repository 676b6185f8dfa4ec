//! 2D slice renderings of an image with a label overlay, as PNG.
//!
//! The slice is shown the way radiologists look at it whatever the voxel order on disk: the
//! voxel axes are matched to the nearest anatomical axes (from the geometry) and flipped or
//! swapped so that
//! - sagittal slices have superior at the top and anterior on the left,
//! - coronal slices have superior at the top and the patient's right on the left,
//! - axial slices have anterior at the top and the patient's right on the left.
//!
//! Pixels are resampled to square physical pixels (bilinear for intensities, nearest for labels),
//! so a 0.5 x 4 mm grid is shown with its true aspect ratio. An oblique slice is shown in its own
//! plane (no resampling across slices).

use crate::error::{RenderError, Result};
use spineseg_anatomy::ontology::{Ontology, StructureId, StructureKind};
use spineseg_io::geometry::closest_world_axes;
use spineseg_io::{Label, Volume};
use std::path::Path;

/// An 8-bit RGB raster, rows top to bottom.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    /// `width * height` pixels, row-major.
    pub pixels: Vec<[u8; 3]>,
}

impl RgbImage {
    pub fn new(width: usize, height: usize, fill: [u8; 3]) -> Self {
        RgbImage { width, height, pixels: vec![fill; width * height] }
    }
    pub fn get(&self, x: usize, y: usize) -> [u8; 3] {
        self.pixels[y * self.width + x]
    }
    pub fn set(&mut self, x: usize, y: usize, rgb: [u8; 3]) {
        if x < self.width && y < self.height {
            self.pixels[y * self.width + x] = rgb;
        }
    }
    /// Images side by side (top-aligned, black padding, `gap` black columns between them).
    pub fn hstack(images: &[RgbImage], gap: usize) -> RgbImage {
        let height = images.iter().map(|i| i.height).max().unwrap_or(0);
        let width = images.iter().map(|i| i.width).sum::<usize>() + gap * images.len().saturating_sub(1);
        let mut out = RgbImage::new(width, height, [0, 0, 0]);
        let mut x0 = 0;
        for img in images {
            for y in 0..img.height {
                for x in 0..img.width {
                    out.set(x0 + x, y, img.get(x, y));
                }
            }
            x0 += img.width + gap;
        }
        out
    }
    /// Draws `text` (upper-cased; letters, digits, `/ - . ( )`) with its top-left corner at
    /// (x, y) in the built-in 5x7 font, `scale` pixels per font pixel, with a dark shadow.
    pub fn draw_text(&mut self, x: i64, y: i64, text: &str, scale: usize, colour: [u8; 3]) {
        for pass in 0..2 {
            let (dx, dy, c) = if pass == 0 { (1, 1, [0, 0, 0]) } else { (0, 0, colour) };
            let mut cx = x;
            for ch in text.chars() {
                let glyph = glyph(ch.to_ascii_uppercase());
                for (row, bits) in glyph.iter().enumerate() {
                    for col in 0..5 {
                        if bits >> (4 - col) & 1 == 1 {
                            for sy in 0..scale {
                                for sx in 0..scale {
                                    let px = cx + (col * scale + sx) as i64 + dx;
                                    let py = y + (row * scale + sy) as i64 + dy;
                                    if px >= 0 && py >= 0 {
                                        self.set(px as usize, py as usize, c);
                                    }
                                }
                            }
                        }
                    }
                }
                cx += (6 * scale) as i64;
            }
        }
    }
}

/// Width in pixels of `text` drawn at `scale`.
pub fn text_width(text: &str, scale: usize) -> usize {
    text.chars().count() * 6 * scale
}

/// How to render a slice.
#[derive(Debug, Clone, PartialEq)]
pub struct OverlayOptions {
    /// Voxel axis to slice across; `None`: the axis closest to left-right (a sagittal slice).
    pub axis: Option<usize>,
    /// Slice index along `axis`; `None`: the middle slice.
    pub slice: Option<usize>,
    /// Intensity window as percentiles of the slice's voxels.
    pub window_percentiles: (f64, f64),
    /// Opacity of label colours inside structures (outlines are opaque).
    pub alpha: f32,
    pub outline: bool,
    /// Names of vertebrae (and the sacrum / canal) drawn at their centroids.
    pub names: bool,
    /// A legend panel (colour swatch and name for every label in the slice) on the right.
    pub legend: bool,
    /// Output pixel size in mm; `None`: the finer in-plane spacing.
    pub pixel_mm: Option<f64>,
    /// Upper bound on the output's longer side (before the legend), pixels.
    pub max_size: usize,
    /// A line of text per structure (ontology id), drawn in a panel right of the picture at the
    /// height of that structure's centroid, with a short leader in its colour (`diagnose` puts each
    /// disc's findings there). Structures not in the slice get no line.
    pub notes: Vec<(Label, String)>,
}

impl Default for OverlayOptions {
    fn default() -> Self {
        OverlayOptions {
            axis: None,
            slice: None,
            window_percentiles: (1.0, 99.0),
            alpha: 0.4,
            outline: true,
            names: true,
            legend: true,
            pixel_mm: None,
            max_size: 1024,
            notes: Vec::new(),
        }
    }
}

/// How voxel axes map onto the displayed slice.
#[derive(Debug, Clone, Copy)]
struct View {
    slice_axis: usize,
    slice: usize,
    row_axis: usize,
    col_axis: usize,
    /// Whether display row 0 is the row axis's last index (likewise for columns).
    row_reversed: bool,
    col_reversed: bool,
    rows: usize,
    cols: usize,
    pixel_mm: f64,
}

fn view_of<T>(volume: &Volume<T>, options: &OverlayOptions) -> Result<View> {
    let shape = volume.shape();
    let (world_axis, flipped) = closest_world_axes(&volume.geometry.direction);
    let slice_axis = match options.axis {
        Some(a) if a < 3 => a,
        Some(a) => return Err(RenderError::InvalidOptions(format!("overlay axis {a} is not 0, 1 or 2"))),
        None => (0..3).find(|&c| world_axis[c] == 0).expect("one voxel axis is closest to left-right"),
    };
    let slice = options.slice.unwrap_or(shape[slice_axis] / 2);
    if slice >= shape[slice_axis] {
        return Err(RenderError::InvalidOptions(format!(
            "slice {slice} is outside 0..{} along axis {slice_axis}",
            shape[slice_axis]
        )));
    }
    // (world axis shown upwards, its sign) and (world axis shown to the right, its sign).
    let ((up, up_sign), (right, right_sign)) = match world_axis[slice_axis] {
        0 => ((2, 1.0), (1, -1.0)), // sagittal: superior up, posterior right
        1 => ((2, 1.0), (0, -1.0)), // coronal: superior up, patient's left right
        _ => ((1, 1.0), (0, -1.0)), // axial: anterior up, patient's left right
    };
    let others: Vec<usize> = (0..3).filter(|&c| c != slice_axis).collect();
    let row_axis = if world_axis[others[0]] == up { others[0] } else { others[1] };
    let col_axis = if row_axis == others[0] { others[1] } else { others[0] };
    let sign = |c: usize| if flipped[c] { -1.0 } else { 1.0 };
    // Top row = the most "up" voxels: reversed when the row axis points up.
    let row_reversed = world_axis[row_axis] == up && sign(row_axis) == up_sign;
    // Left column = the least "right" voxels: reversed when the column axis points left.
    let col_reversed = !(world_axis[col_axis] == right && sign(col_axis) == right_sign);
    let sp = volume.geometry.spacing.mm();
    let mut pixel_mm = options.pixel_mm.unwrap_or(sp[row_axis].min(sp[col_axis]));
    let (h_mm, w_mm) = (shape[row_axis] as f64 * sp[row_axis], shape[col_axis] as f64 * sp[col_axis]);
    if !(pixel_mm > 0.0 && pixel_mm.is_finite()) {
        return Err(RenderError::InvalidOptions(format!("overlay pixel size {pixel_mm} mm")));
    }
    pixel_mm = pixel_mm.max(h_mm.max(w_mm) / options.max_size.max(1) as f64);
    let rows = ((h_mm / pixel_mm).round() as usize).max(1);
    let cols = ((w_mm / pixel_mm).round() as usize).max(1);
    Ok(View { slice_axis, slice, row_axis, col_axis, row_reversed, col_reversed, rows, cols, pixel_mm })
}

impl View {
    /// Continuous voxel coordinates (row axis, column axis) of the centre of display pixel (r, c).
    fn voxel(&self, shape: [usize; 3], sp: [f64; 3], r: usize, c: usize) -> (f64, f64) {
        let y = (r as f64 + 0.5) * self.pixel_mm / sp[self.row_axis] - 0.5;
        let x = (c as f64 + 0.5) * self.pixel_mm / sp[self.col_axis] - 0.5;
        let y = if self.row_reversed { shape[self.row_axis] as f64 - 1.0 - y } else { y };
        let x = if self.col_reversed { shape[self.col_axis] as f64 - 1.0 - x } else { x };
        (y, x)
    }
    fn index(&self, y: usize, x: usize) -> [usize; 3] {
        let mut ijk = [0; 3];
        ijk[self.slice_axis] = self.slice;
        ijk[self.row_axis] = y;
        ijk[self.col_axis] = x;
        ijk
    }
}

/// Renders one slice of `image` (with `labels` on the same grid, if given) as RGB.
pub fn render_overlay(
    image: &Volume<f32>,
    labels: Option<&Volume<Label>>,
    options: &OverlayOptions,
) -> Result<RgbImage> {
    if let Some(l) = labels {
        if l.shape() != image.shape() {
            return Err(RenderError::InvalidOptions(format!(
                "labels shape {:?} differs from image shape {:?}",
                l.shape(),
                image.shape()
            )));
        }
    }
    let view = view_of(image, options)?;
    let shape = image.shape();
    let sp = image.geometry.spacing.mm();
    // Window from the slice's own intensities.
    let mut values: Vec<f32> = Vec::with_capacity(shape[view.row_axis] * shape[view.col_axis]);
    for y in 0..shape[view.row_axis] {
        for x in 0..shape[view.col_axis] {
            let v = *image.get(view.index(y, x));
            if v.is_finite() {
                values.push(v);
            }
        }
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| -> f64 {
        if values.is_empty() {
            return 0.0;
        }
        let pos = (p / 100.0).clamp(0.0, 1.0) * (values.len() - 1) as f64;
        values[pos.round() as usize] as f64
    };
    let (lo, hi) = (pct(options.window_percentiles.0), pct(options.window_percentiles.1));
    let scale = if hi > lo { 255.0 / (hi - lo) } else { 0.0 };

    let (rows, cols) = (view.rows, view.cols);
    let mut out = RgbImage::new(cols, rows, [0, 0, 0]);
    let mut label_map = vec![0 as Label; rows * cols];
    let (ny, nx) = (shape[view.row_axis], shape[view.col_axis]);
    for r in 0..rows {
        for c in 0..cols {
            let (y, x) = view.voxel(shape, sp, r, c);
            let (yc, xc) = (y.clamp(0.0, (ny - 1) as f64), x.clamp(0.0, (nx - 1) as f64));
            let (y0, x0) = (yc.floor() as usize, xc.floor() as usize);
            let (y1, x1) = ((y0 + 1).min(ny - 1), (x0 + 1).min(nx - 1));
            let (fy, fx) = (yc - y0 as f64, xc - x0 as f64);
            let g = |yy, xx| *image.get(view.index(yy, xx)) as f64;
            let v =
                (g(y0, x0) * (1.0 - fx) + g(y0, x1) * fx) * (1.0 - fy) + (g(y1, x0) * (1.0 - fx) + g(y1, x1) * fx) * fy;
            let grey = ((v - lo) * scale).clamp(0.0, 255.0).round() as u8;
            out.pixels[r * cols + c] = [grey; 3];
            if let Some(l) = labels {
                let (yn, xn) =
                    (y.round().clamp(0.0, (ny - 1) as f64) as usize, x.round().clamp(0.0, (nx - 1) as f64) as usize);
                label_map[r * cols + c] = *l.get(view.index(yn, xn));
            }
        }
    }
    if labels.is_none() {
        return Ok(out);
    }
    let ontology = Ontology::standard();
    let colour_of = |id: Label| -> [u8; 3] {
        ontology.get(StructureId(id)).map(|s| s.colour).unwrap_or_else(|| fallback_colour(id))
    };
    for r in 0..rows {
        for c in 0..cols {
            let l = label_map[r * cols + c];
            if l == 0 {
                continue;
            }
            let edge = options.outline
                && [(0i64, 1i64), (0, -1), (1, 0), (-1, 0)].iter().any(|(dr, dc)| {
                    let (rr, cc) = (r as i64 + dr, c as i64 + dc);
                    rr < 0
                        || cc < 0
                        || rr >= rows as i64
                        || cc >= cols as i64
                        || label_map[rr as usize * cols + cc as usize] != l
                });
            let alpha = if edge { 0.9 } else { options.alpha };
            let colour = colour_of(l);
            let p = &mut out.pixels[r * cols + c];
            for ch in 0..3 {
                p[ch] = (p[ch] as f32 * (1.0 - alpha) + colour[ch] as f32 * alpha).round() as u8;
            }
        }
    }
    // Present labels, ascending, with their pixel counts and centroids.
    let mut stats: std::collections::BTreeMap<Label, (f64, f64, usize)> = std::collections::BTreeMap::new();
    for r in 0..rows {
        for c in 0..cols {
            let l = label_map[r * cols + c];
            if l != 0 {
                let e = stats.entry(l).or_insert((0.0, 0.0, 0));
                e.0 += r as f64;
                e.1 += c as f64;
                e.2 += 1;
            }
        }
    }
    let text_scale = if rows.max(cols) >= 600 { 2 } else { 1 };
    if options.names {
        for (&l, &(sr, sc, n)) in &stats {
            let Some(s) = ontology.get(StructureId(l)) else { continue };
            if !matches!(s.kind, StructureKind::Vertebra | StructureKind::Sacrum) || n < 20 {
                continue;
            }
            let (r, c) = (sr / n as f64, sc / n as f64);
            let w = text_width(&s.name, text_scale) as f64;
            out.draw_text(
                (c - 0.5 * w) as i64,
                (r - 3.5 * text_scale as f64) as i64,
                &s.name,
                text_scale,
                [255, 255, 255],
            );
        }
    }
    if !options.notes.is_empty() {
        let present: Vec<(Label, &String, f64)> = options
            .notes
            .iter()
            .filter_map(|(l, note)| stats.get(l).map(|&(sr, _, n)| (*l, note, sr / n as f64)))
            .collect();
        let width = 14 + present.iter().map(|(_, note, _)| text_width(note, 1)).max().unwrap_or(0) + 6;
        let mut panel = RgbImage::new(width, rows, [16, 16, 16]);
        for (l, note, centre_row) in present {
            let y = centre_row.round().clamp(0.0, (rows - 1) as f64) as usize;
            for x in 0..10 {
                panel.set(x, y, colour_of(l));
            }
            panel.draw_text(13, y as i64 - 3, note, 1, [240, 240, 240]);
        }
        out = RgbImage::hstack(&[out, panel], 0);
    }
    if options.legend && !stats.is_empty() {
        let line = 10 * text_scale;
        let names: Vec<(Label, String)> = stats
            .keys()
            .map(|&l| (l, ontology.get(StructureId(l)).map(|s| s.name.clone()).unwrap_or_else(|| format!("label {l}"))))
            .collect();
        let legend_w =
            8 * text_scale + names.iter().map(|(_, n)| text_width(n, text_scale)).max().unwrap_or(0) + 6 * text_scale;
        let mut panel = RgbImage::new(legend_w, rows.max(names.len() * line + 8), [16, 16, 16]);
        for (row, (l, name)) in names.iter().enumerate() {
            let y = 4 + row * line;
            let colour = colour_of(*l);
            for dy in 0..7 * text_scale {
                for dx in 0..6 * text_scale {
                    panel.set(3 + dx, y + dy, colour);
                }
            }
            panel.draw_text((6 + 6 * text_scale) as i64, y as i64, name, text_scale, [230, 230, 230]);
        }
        out = RgbImage::hstack(&[out, panel], 0);
    }
    Ok(out)
}

/// A stable colour for label values outside the ontology.
fn fallback_colour(id: Label) -> [u8; 3] {
    let h = (id as u32).wrapping_mul(2654435761);
    [(h >> 24) as u8 | 64, (h >> 16) as u8 | 64, (h >> 8) as u8 | 64]
}

/// Writes `image` as an 8-bit RGB PNG, atomically.
pub fn write_png(path: &Path, image: &RgbImage) -> Result<()> {
    spineseg_io::atomic::write_atomically(path, |w| encode_png_into(w, image))?;
    Ok(())
}

/// `image` as the bytes of an 8-bit RGB PNG file (for embedding, e.g. in an HTML report).
pub fn encode_png(image: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    encode_png_into(&mut out, image).expect("encoding into memory cannot fail");
    out
}

fn encode_png_into(w: &mut dyn std::io::Write, image: &RgbImage) -> std::io::Result<()> {
    let bytes: Vec<u8> = image.pixels.iter().flatten().copied().collect();
    let mut encoder = png::Encoder::new(w, image.width as u32, image.height as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Best);
    let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
    writer.write_image_data(&bytes).map_err(std::io::Error::other)?;
    writer.finish().map_err(std::io::Error::other)
}

/// Rows of the 5x7 font, bit 4 = leftmost column.
fn glyph(ch: char) -> [u8; 7] {
    match ch {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '/' => [0x01, 0x01, 0x02, 0x04, 0x08, 0x10, 0x10],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        _ => [0x00; 7],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spineseg_io::{Geometry, Spacing};

    /// A 4 (i) x 3 (j) x 2 (k) volume with axes I, P, R (like the phantoms) and one bright voxel.
    fn ipr_volume(bright: [usize; 3], spacing: [f64; 3]) -> Volume<f32> {
        let direction = [[0.0, 0.0, 1.0], [0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]];
        let g = Geometry::new(Spacing::new(spacing).unwrap(), [0.0; 3], direction).unwrap();
        let mut v = Volume::filled([4, 3, 2], 0.0f32, g);
        v.set(bright, 100.0);
        v
    }

    fn options() -> OverlayOptions {
        OverlayOptions { legend: false, names: false, window_percentiles: (0.0, 100.0), ..OverlayOptions::default() }
    }

    fn brightest(img: &RgbImage) -> (usize, usize) {
        let mut best = (0, 0, 0u8);
        for y in 0..img.height {
            for x in 0..img.width {
                if img.get(x, y)[0] > best.2 {
                    best = (x, y, img.get(x, y)[0]);
                }
            }
        }
        (best.0, best.1)
    }

    #[test]
    fn superior_is_up_and_anterior_is_left_for_ipr() {
        // i points inferior: i = 0 is the most superior row; j points posterior: j = 0 anterior.
        let v = ipr_volume([0, 0, 1], [1.0; 3]);
        let img = render_overlay(&v, None, &options()).unwrap();
        assert_eq!((img.width, img.height), (3, 4));
        assert_eq!(brightest(&img), (0, 0));
        let v = ipr_volume([3, 2, 1], [1.0; 3]);
        let img = render_overlay(&v, None, &options()).unwrap();
        assert_eq!(brightest(&img), (2, 3));
    }

    #[test]
    fn ras_volume_is_flipped_to_the_same_view() {
        // RAS voxel order: k points superior, j anterior; the sagittal slice is along i.
        let g = Geometry::default();
        let mut v = Volume::filled([2, 3, 4], 0.0f32, g);
        v.set([1, 2, 3], 100.0); // most anterior, most superior
        let img = render_overlay(&v, None, &options()).unwrap();
        assert_eq!((img.width, img.height), (3, 4));
        assert_eq!(brightest(&img), (0, 0));
    }

    #[test]
    fn aspect_ratio_follows_spacing() {
        // 0.5 mm rows, 2 mm columns: 4 x 0.5 = 2 mm high, 3 x 2 = 6 mm wide -> 4 x 12 pixels.
        let v = ipr_volume([0, 0, 1], [0.5, 2.0, 4.0]);
        let img = render_overlay(&v, None, &options()).unwrap();
        assert_eq!((img.width, img.height), (12, 4));
    }

    #[test]
    fn labels_are_coloured_and_legend_is_added() {
        let v = ipr_volume([0, 0, 1], [1.0; 3]);
        let mut l = v.map(|_| 0 as Label);
        l.set([1, 1, 1], 23);
        let plain = render_overlay(&v, Some(&l), &options()).unwrap();
        let colour = Ontology::standard().get(StructureId(23)).unwrap().colour;
        let p = plain.get(1, 1);
        assert!(p != [p[0]; 3], "labelled pixel is tinted: {p:?}");
        assert!((p[0] as i32 - colour[0] as i32).abs() < 40);
        let with_legend = render_overlay(&v, Some(&l), &OverlayOptions { legend: true, ..options() }).unwrap();
        assert!(with_legend.width > plain.width);
    }

    #[test]
    fn png_round_trips_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.png");
        let mut img = RgbImage::new(5, 3, [10, 20, 30]);
        img.draw_text(0, 0, "L4/L5", 1, [255, 0, 0]);
        write_png(&path, &img).unwrap();
        let decoder = png::Decoder::new(std::fs::File::open(&path).unwrap());
        let reader = decoder.read_info().unwrap();
        assert_eq!((reader.info().width, reader.info().height), (5, 3));
    }
}
