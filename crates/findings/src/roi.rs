//! A disc's region of interest (ROI) cut from a 2D sagittal slice: centred on the disc, turned so
//! the disc lies level, of a fixed physical size, with intensities normalised. What a per-level
//! findings classifier looks at.
//!
//! # Coordinates
//! A [`Slice2d`] is `width x height` pixels, row-major (`data[x + width * y]`), pixel `(x, y)`'s
//! centre at `(x * spacing_mm[0], y * spacing_mm[1])` mm. Directions ([`ImageDirections`]) are
//! given in these mm coordinates. The ROI's x axis runs anterior -> posterior along the disc's
//! long axis, its y axis superior -> inferior (row 0 is the superior edge); its centre (between
//! the four middle pixels when sizes are even) is the centroid of the disc mask.

use crate::error::{FindingsError, Result};
use serde::{Deserialize, Serialize};

/// Fewer disc pixels than this is refused: a centroid and an axis from a handful of pixels would
/// be a guess.
pub const MIN_DISC_PIXELS: usize = 10;

/// A 2D image: `data[x + width * y]`, `spacing_mm` = (x, y) pixel spacing.
#[derive(Debug, Clone, PartialEq)]
pub struct Slice2d {
    pub data: Vec<f32>,
    pub width: usize,
    pub height: usize,
    pub spacing_mm: [f64; 2],
}

impl Slice2d {
    /// The pixel centre of `(x, y)` in mm.
    pub fn position_mm(&self, x: usize, y: usize) -> [f64; 2] {
        [x as f64 * self.spacing_mm[0], y as f64 * self.spacing_mm[1]]
    }

    /// Bilinear interpolation at a point in mm; `None` outside the pixel centres' hull.
    pub fn sample_mm(&self, point: [f64; 2]) -> Option<f32> {
        let fx = point[0] / self.spacing_mm[0];
        let fy = point[1] / self.spacing_mm[1];
        let (max_x, max_y) = ((self.width - 1) as f64, (self.height - 1) as f64);
        if !(0.0..=max_x).contains(&fx) || !(0.0..=max_y).contains(&fy) {
            return None;
        }
        let (x0, y0) = (fx.floor() as usize, fy.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(self.width - 1), (y0 + 1).min(self.height - 1));
        let (tx, ty) = (fx - x0 as f64, fy - y0 as f64);
        let at = |x: usize, y: usize| self.data[x + self.width * y] as f64;
        let top = at(x0, y0) * (1.0 - tx) + at(x1, y0) * tx;
        let bottom = at(x0, y1) * (1.0 - tx) + at(x1, y1) * tx;
        Some((top * (1.0 - ty) + bottom * ty) as f32)
    }

    fn check(&self) -> Result<()> {
        if self.width == 0 || self.height == 0 || self.data.len() != self.width * self.height {
            return Err(FindingsError::Roi(format!(
                "image of {} values is not {} x {}",
                self.data.len(),
                self.width,
                self.height
            )));
        }
        if !self.spacing_mm.iter().all(|s| s.is_finite() && *s > 0.0) {
            return Err(FindingsError::Roi(format!("spacing {:?} mm should be finite and positive", self.spacing_mm)));
        }
        if let Some(i) = self.data.iter().position(|v| !v.is_finite()) {
            return Err(FindingsError::Roi(format!(
                "pixel ({}, {}) is {}: images must be finite",
                i % self.width,
                i / self.width,
                self.data[i]
            )));
        }
        Ok(())
    }
}

/// Where superior and anterior point in the slice, as in-plane vectors in mm coordinates (need
/// not be unit length). Only `anterior`'s component perpendicular to `up` is used.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImageDirections {
    pub up: [f64; 2],
    pub anterior: [f64; 2],
}

impl ImageDirections {
    /// SPIDER's 2D images (spider-gradings): rows superior -> inferior, columns anterior ->
    /// posterior, so up is -y and anterior is -x.
    pub const ROWS_DOWN_COLUMNS_POSTERIOR: ImageDirections = ImageDirections { up: [0.0, -1.0], anterior: [-1.0, 0.0] };

    /// Unit up and unit anterior (made perpendicular to up).
    fn orthonormal(&self) -> Result<([f64; 2], [f64; 2])> {
        let up = normalised(self.up)
            .ok_or_else(|| FindingsError::Roi(format!("up direction {:?} has no length", self.up)))?;
        let along = dot(self.anterior, up);
        let anterior =
            normalised([self.anterior[0] - along * up[0], self.anterior[1] - along * up[1]]).ok_or_else(|| {
                FindingsError::Roi(format!("anterior {:?} is parallel to up {:?}", self.anterior, self.up))
            })?;
        Ok((up, anterior))
    }
}

/// The physical size of the ROI and its pixel grid. The default, 60 x 40 mm at 64 x 48 px, holds
/// a lumbar disc and its two endplates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RoiSpec {
    pub width_mm: f64,
    pub height_mm: f64,
    pub width_px: usize,
    pub height_px: usize,
}

impl Default for RoiSpec {
    fn default() -> Self {
        RoiSpec { width_mm: 60.0, height_mm: 40.0, width_px: 64, height_px: 48 }
    }
}

/// A disc's region of interest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiscRoi {
    /// `height_px * width_px` values, row-major, row 0 superior, column 0 anterior; z-scored over
    /// the pixels inside the image, 0 outside it.
    pub pixels: Vec<f32>,
    pub width_px: usize,
    pub height_px: usize,
    /// The disc mask's centroid in the slice's mm coordinates (the ROI's centre).
    pub centre_mm: [f64; 2],
    /// The ROI's x axis (anterior -> posterior along the disc) and y axis (superior -> inferior)
    /// as unit vectors in the slice's mm coordinates.
    pub x_axis: [f64; 2],
    pub y_axis: [f64; 2],
    /// The disc's long axis against the anterior direction, in degrees in (-90, 90]: positive
    /// when the disc's anterior end lies superior to its posterior end.
    pub angle_deg: f64,
    /// Fraction of ROI pixels inside the image (the rest are 0).
    pub coverage: f64,
    /// Number of mask pixels the centre and axis come from.
    pub disc_pixels: usize,
}

fn dot(a: [f64; 2], b: [f64; 2]) -> f64 {
    a[0] * b[0] + a[1] * b[1]
}

fn normalised(v: [f64; 2]) -> Option<[f64; 2]> {
    let length = dot(v, v).sqrt();
    (length.is_finite() && length > 1e-12).then(|| [v[0] / length, v[1] / length])
}

/// Cuts the ROI of the disc in `mask` (same size as `image`, `mask[x + width * y]`).
///
/// Centre: the centroid of the mask pixels in mm. Long axis: the principal axis of the mask
/// pixels' mm positions (the covariance's larger eigenvalue), turned to point posterior; for a
/// round mask (equal eigenvalues) the axis is undefined and the anterior -> posterior direction is
/// used. The ROI is sampled bilinearly; pixels outside the image are 0 and reduce `coverage`.
/// Intensities are z-scored over the in-image pixels; a constant ROI gives zeros (never NaN).
///
/// Errors: sizes that disagree, a non-finite pixel, spacing or directions that are not usable,
/// an empty ROI spec, or fewer than [`MIN_DISC_PIXELS`] disc pixels.
pub fn cut_disc_roi(image: &Slice2d, mask: &[bool], directions: &ImageDirections, spec: &RoiSpec) -> Result<DiscRoi> {
    image.check()?;
    if mask.len() != image.data.len() {
        return Err(FindingsError::Roi(format!(
            "mask of {} values does not match the {} x {} image",
            mask.len(),
            image.width,
            image.height
        )));
    }
    let spec_ok = spec.width_px > 0
        && spec.height_px > 0
        && spec.width_mm.is_finite()
        && spec.height_mm.is_finite()
        && spec.width_mm > 0.0
        && spec.height_mm > 0.0;
    if !spec_ok {
        return Err(FindingsError::Roi(format!("ROI spec {spec:?} should have positive sizes")));
    }
    let (up, anterior) = directions.orthonormal()?;

    let positions: Vec<[f64; 2]> = mask
        .iter()
        .enumerate()
        .filter(|(_, &m)| m)
        .map(|(i, _)| image.position_mm(i % image.width, i / image.width))
        .collect();
    if positions.len() < MIN_DISC_PIXELS {
        return Err(FindingsError::Roi(format!(
            "the disc mask has {} pixels; at least {MIN_DISC_PIXELS} are needed",
            positions.len()
        )));
    }
    let n = positions.len() as f64;
    let centre = [positions.iter().map(|p| p[0]).sum::<f64>() / n, positions.iter().map(|p| p[1]).sum::<f64>() / n];
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for p in &positions {
        let (dx, dy) = (p[0] - centre[0], p[1] - centre[1]);
        sxx += dx * dx;
        sxy += dx * dy;
        syy += dy * dy;
    }
    let posterior = [-anterior[0], -anterior[1]];
    // The major axis of [[sxx, sxy], [sxy, syy]] is at 0.5 * atan2(2 sxy, sxx - syy); a round
    // mask (both terms ~0 relative to the spread) has none.
    let spread = sxx + syy;
    let mut x_axis = if (2.0 * sxy).hypot(sxx - syy) <= 1e-9 * spread {
        posterior
    } else {
        let theta = 0.5 * (2.0 * sxy).atan2(sxx - syy);
        [theta.cos(), theta.sin()]
    };
    if dot(x_axis, posterior) < 0.0 {
        x_axis = [-x_axis[0], -x_axis[1]];
    }
    // y axis: perpendicular to x, pointing inferior.
    let mut y_axis = [-x_axis[1], x_axis[0]];
    if dot(y_axis, up) > 0.0 {
        y_axis = [-y_axis[0], -y_axis[1]];
    }
    // The long axis pointing anterior, measured from the anterior direction towards up.
    let toward_anterior = [-x_axis[0], -x_axis[1]];
    let angle_deg = dot(toward_anterior, up).atan2(dot(toward_anterior, anterior)).to_degrees();

    let pixel_w = spec.width_mm / spec.width_px as f64;
    let pixel_h = spec.height_mm / spec.height_px as f64;
    let mut raw = vec![None; spec.width_px * spec.height_px];
    for row in 0..spec.height_px {
        let along_y = (row as f64 + 0.5 - spec.height_px as f64 / 2.0) * pixel_h;
        for column in 0..spec.width_px {
            let along_x = (column as f64 + 0.5 - spec.width_px as f64 / 2.0) * pixel_w;
            let point = [
                centre[0] + along_x * x_axis[0] + along_y * y_axis[0],
                centre[1] + along_x * x_axis[1] + along_y * y_axis[1],
            ];
            raw[column + spec.width_px * row] = image.sample_mm(point);
        }
    }
    let inside: Vec<f64> = raw.iter().flatten().map(|&v| v as f64).collect();
    let coverage = inside.len() as f64 / raw.len() as f64;
    let (mean, std) = if inside.is_empty() {
        (0.0, 0.0)
    } else {
        let mean = inside.iter().sum::<f64>() / inside.len() as f64;
        let variance = inside.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / inside.len() as f64;
        (mean, variance.sqrt())
    };
    // A constant ROI (std at rounding level of the mean) has nothing to normalise: zeros.
    let constant = std <= 1e-6 * mean.abs().max(1e-12);
    let pixels = raw
        .iter()
        .map(|v| match v {
            Some(v) if !constant => ((*v as f64 - mean) / std) as f32,
            _ => 0.0,
        })
        .collect();
    Ok(DiscRoi {
        pixels,
        width_px: spec.width_px,
        height_px: spec.height_px,
        centre_mm: centre,
        x_axis,
        y_axis,
        angle_deg,
        coverage,
        disc_pixels: positions.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bright ellipse (semi-axes 15 x 4 mm) at `centre_mm`, its long axis at `angle_deg` from
    /// +x towards +y in mm coordinates, on a darker background with a gentle ramp (so the image
    /// is not constant outside the disc).
    fn ellipse_image(
        width: usize,
        height: usize,
        spacing_mm: [f64; 2],
        centre_mm: [f64; 2],
        angle_deg: f64,
    ) -> (Slice2d, Vec<bool>) {
        let (sin, cos) = angle_deg.to_radians().sin_cos();
        let mut data = vec![0.0f32; width * height];
        let mut mask = vec![false; width * height];
        for y in 0..height {
            for x in 0..width {
                let (px, py) = (x as f64 * spacing_mm[0] - centre_mm[0], y as f64 * spacing_mm[1] - centre_mm[1]);
                let (u, v) = (px * cos + py * sin, -px * sin + py * cos);
                let inside = (u / 15.0).powi(2) + (v / 4.0).powi(2) <= 1.0;
                mask[x + width * y] = inside;
                data[x + width * y] = if inside { 200.0 } else { 20.0 + 0.05 * x as f32 };
            }
        }
        (Slice2d { data, width, height, spacing_mm }, mask)
    }

    /// Centroid and principal-axis angle (degrees from the ROI's +x towards +y) of the ROI pixels
    /// above `threshold`, in ROI pixel units scaled to mm.
    fn bright_blob(roi: &DiscRoi, spec: &RoiSpec, threshold: f32) -> ([f64; 2], f64) {
        let (pw, ph) = (spec.width_mm / spec.width_px as f64, spec.height_mm / spec.height_px as f64);
        let points: Vec<[f64; 2]> = (0..roi.pixels.len())
            .filter(|&i| roi.pixels[i] > threshold)
            .map(|i| [(i % roi.width_px) as f64, (i / roi.width_px) as f64])
            .collect();
        let n = points.len() as f64;
        let c = [points.iter().map(|p| p[0]).sum::<f64>() / n, points.iter().map(|p| p[1]).sum::<f64>() / n];
        let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
        for p in &points {
            let (dx, dy) = ((p[0] - c[0]) * pw, (p[1] - c[1]) * ph);
            sxx += dx * dx;
            sxy += dx * dy;
            syy += dy * dy;
        }
        (c, (0.5 * (2.0 * sxy).atan2(sxx - syy)).to_degrees())
    }

    fn check_centred_and_level(spacing_mm: [f64; 2]) {
        // 120 x 100 mm field, the disc off-centre at (70, 38) mm, tilted 20 degrees.
        let (width, height) = ((120.0 / spacing_mm[0]) as usize, (100.0 / spacing_mm[1]) as usize);
        let (image, mask) = ellipse_image(width, height, spacing_mm, [70.0, 38.0], 20.0);
        let spec = RoiSpec::default();
        let roi = cut_disc_roi(&image, &mask, &ImageDirections::ROWS_DOWN_COLUMNS_POSTERIOR, &spec).unwrap();
        assert!((roi.centre_mm[0] - 70.0).abs() < 0.5 && (roi.centre_mm[1] - 38.0).abs() < 0.5, "{:?}", roi.centre_mm);
        assert_eq!(roi.coverage, 1.0);
        assert_eq!(roi.pixels.len(), 64 * 48);
        let (centroid, angle) = bright_blob(&roi, &spec, 1.0);
        let centre = [(spec.width_px as f64 - 1.0) / 2.0, (spec.height_px as f64 - 1.0) / 2.0];
        assert!(
            (centroid[0] - centre[0]).abs() < 0.5 && (centroid[1] - centre[1]).abs() < 0.5,
            "{centroid:?} vs {centre:?} at {spacing_mm:?}"
        );
        assert!(angle.abs() < 1.0, "the disc should lie level, not at {angle} degrees ({spacing_mm:?})");
        // Up is -y and anterior -x: a long axis at +20 degrees from +x towards +y points down and
        // posterior, so the anterior end is superior: +20.
        assert!((roi.angle_deg - 20.0).abs() < 1.0, "{}", roi.angle_deg);
        let mean = roi.pixels.iter().map(|&v| v as f64).sum::<f64>() / roi.pixels.len() as f64;
        let var = roi.pixels.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / roi.pixels.len() as f64;
        assert!(mean.abs() < 1e-4 && (var - 1.0).abs() < 1e-3, "z-scored: mean {mean}, variance {var}");
    }

    #[test]
    fn tilted_disc_comes_out_centred_and_level() {
        check_centred_and_level([0.5, 0.5]);
    }

    #[test]
    fn tilted_disc_comes_out_centred_and_level_with_anisotropic_spacing() {
        check_centred_and_level([0.5, 0.8]);
    }

    #[test]
    fn flipping_up_flips_the_roi_vertically() {
        let (image, mask) = ellipse_image(200, 150, [0.6, 0.6], [55.0, 40.0], -12.0);
        let spec = RoiSpec { width_mm: 50.0, height_mm: 30.0, width_px: 40, height_px: 24 };
        let down = ImageDirections { up: [0.0, -1.0], anterior: [-1.0, 0.0] };
        let flipped = ImageDirections { up: [0.0, 1.0], anterior: [-1.0, 0.0] };
        let a = cut_disc_roi(&image, &mask, &down, &spec).unwrap();
        let b = cut_disc_roi(&image, &mask, &flipped, &spec).unwrap();
        for row in 0..spec.height_px {
            let (top, bottom) = (row * spec.width_px, (spec.height_px - 1 - row) * spec.width_px);
            assert_eq!(a.pixels[top..top + spec.width_px], b.pixels[bottom..bottom + spec.width_px], "row {row}");
        }
        assert_eq!(a.x_axis, b.x_axis);
        assert!((a.angle_deg + b.angle_deg).abs() < 1e-9);
        // Flipping anterior instead flips the ROI horizontally (the long axis is reversed).
        let mirrored = ImageDirections { up: [0.0, -1.0], anterior: [1.0, 0.0] };
        let c = cut_disc_roi(&image, &mask, &mirrored, &spec).unwrap();
        for row in 0..spec.height_px {
            for column in 0..spec.width_px {
                let (i, j) = (column + spec.width_px * row, spec.width_px - 1 - column + spec.width_px * row);
                assert!((a.pixels[i] - c.pixels[j]).abs() < 1e-4, "({column}, {row})");
            }
        }
    }

    #[test]
    fn roi_at_the_edge_reports_coverage() {
        let (image, mask) = ellipse_image(100, 100, [1.0, 1.0], [12.0, 50.0], 0.0);
        let roi =
            cut_disc_roi(&image, &mask, &ImageDirections::ROWS_DOWN_COLUMNS_POSTERIOR, &RoiSpec::default()).unwrap();
        // The 60 mm wide ROI centred 12 mm from the edge: 42 of 60 mm (and a little of the last
        // pixel gap) lie inside.
        assert!(roi.coverage > 0.6 && roi.coverage < 0.75, "{}", roi.coverage);
        assert!(roi.pixels.iter().all(|v| v.is_finite()));
        assert_eq!(roi.pixels[0], 0.0, "outside the image is 0");
    }

    #[test]
    fn constant_image_gives_zeros_and_small_masks_are_refused() {
        let image = Slice2d { data: vec![5.0; 40 * 40], width: 40, height: 40, spacing_mm: [1.0, 1.0] };
        let mut mask = vec![false; 40 * 40];
        for y in 18..22 {
            for x in 15..25 {
                mask[x + 40 * y] = true;
            }
        }
        let roi =
            cut_disc_roi(&image, &mask, &ImageDirections::ROWS_DOWN_COLUMNS_POSTERIOR, &RoiSpec::default()).unwrap();
        assert!(roi.pixels.iter().all(|&v| v == 0.0));
        assert_eq!(roi.disc_pixels, 40);
        assert!(roi.angle_deg.abs() < 1e-9);

        let few: Vec<bool> = (0..1600).map(|i| i < 9).collect();
        let message = cut_disc_roi(&image, &few, &ImageDirections::ROWS_DOWN_COLUMNS_POSTERIOR, &RoiSpec::default())
            .unwrap_err()
            .to_string();
        assert!(message.contains("9 pixels"), "{message}");
        let empty = vec![false; 1600];
        assert!(
            cut_disc_roi(&image, &empty, &ImageDirections::ROWS_DOWN_COLUMNS_POSTERIOR, &RoiSpec::default()).is_err()
        );
        assert!(cut_disc_roi(&image, &mask[..100], &ImageDirections::ROWS_DOWN_COLUMNS_POSTERIOR, &RoiSpec::default())
            .is_err());
        let mut nan = image.clone();
        nan.data[3 + 40 * 2] = f32::NAN;
        let message = cut_disc_roi(&nan, &mask, &ImageDirections::ROWS_DOWN_COLUMNS_POSTERIOR, &RoiSpec::default())
            .unwrap_err()
            .to_string();
        assert!(message.contains("(3, 2)"), "{message}");
        let parallel = ImageDirections { up: [0.0, -1.0], anterior: [0.0, 2.0] };
        assert!(cut_disc_roi(&image, &mask, &parallel, &RoiSpec::default()).is_err());
    }
}
