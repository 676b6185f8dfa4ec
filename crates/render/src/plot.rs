//! Small line plots on an [`RgbImage`] (training curves, `progress.png`), drawn with the built-in
//! 5x7 font of [`crate::overlay`]: axes with "nice" tick values and labels, one polyline per
//! series (points with a non-finite `y` break the line), point markers when there are few
//! points, a title and a legend. Dark theme, because the font draws a dark shadow under the text.
//!
//! The font has upper-case letters, digits and `/ - . ( ) :` only; other characters are blank.

use crate::overlay::{text_width, RgbImage};

/// Background of a plot.
pub const BACKGROUND: [u8; 3] = [22, 24, 32];
/// Axes, ticks and frame.
pub const AXIS_COLOUR: [u8; 3] = [200, 200, 210];
/// Horizontal grid lines at the y ticks.
pub const GRID_COLOUR: [u8; 3] = [48, 52, 64];
/// Text.
pub const TEXT_COLOUR: [u8; 3] = [235, 235, 240];

/// Colours that stay apart on the dark background (series take them in order by default).
pub const PALETTE: [[u8; 3]; 6] =
    [[80, 160, 255], [255, 110, 90], [110, 220, 120], [240, 200, 60], [200, 120, 255], [80, 220, 220]];

/// One line of a plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub colour: [u8; 3],
    /// `(x, y)` in data units, in drawing order; a non-finite `y` leaves a gap.
    pub points: Vec<(f64, f64)>,
}

/// A line plot: title, axis labels, series and optional fixed axis ranges.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LinePlot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Fixed x range; `None`: the data's range (padded when it is a single value).
    pub x_range: Option<[f64; 2]>,
    /// Fixed y range; `None`: the data's range, extended to nice tick values.
    pub y_range: Option<[f64; 2]>,
}

/// Where the data area lies in the image, and the data ranges it shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlotArea {
    /// Left column of the data area (the y axis is drawn at `left - 1`).
    pub left: usize,
    /// Top row of the data area.
    pub top: usize,
    pub width: usize,
    pub height: usize,
    pub x_range: [f64; 2],
    pub y_range: [f64; 2],
}

impl PlotArea {
    /// Image column of data `x` (may lie outside the area).
    pub fn column(&self, x: f64) -> f64 {
        let [lo, hi] = self.x_range;
        self.left as f64 + (x - lo) / (hi - lo) * (self.width.saturating_sub(1)) as f64
    }
    /// Image row of data `y` (may lie outside the area).
    pub fn row(&self, y: f64) -> f64 {
        let [lo, hi] = self.y_range;
        (self.top + self.height.saturating_sub(1)) as f64 - (y - lo) / (hi - lo) * (self.height.saturating_sub(1)) as f64
    }
    fn contains(&self, x: i64, y: i64) -> bool {
        x >= self.left as i64
            && y >= self.top as i64
            && x < (self.left + self.width) as i64
            && y < (self.top + self.height) as i64
    }
}

/// "Nice" tick values (1, 2 or 5 times a power of ten apart) covering `[lo, hi]` with at most
/// about `max_ticks` ticks; the first tick is <= `lo` and the last >= `hi`.
pub fn nice_ticks(lo: f64, hi: f64, max_ticks: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let step = nice_step((hi - lo) / max_ticks.max(2).saturating_sub(1) as f64);
    let first = (lo / step).floor();
    let last = (hi / step).ceil();
    let n = (last - first) as usize;
    (0..=n).map(|i| clean((first + i as f64) * step, step)).collect()
}

/// The smallest of 1, 2, 5 times a power of ten that is >= `raw`.
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Removes floating-point noise (0.30000000000000004 -> 0.3, -0.0 -> 0).
fn clean(value: f64, step: f64) -> f64 {
    let decimals = decimals_for(step) as i32;
    let scale = 10f64.powi(decimals);
    let v = (value * scale).round() / scale;
    if v == 0.0 {
        0.0
    } else {
        v
    }
}

fn decimals_for(step: f64) -> usize {
    if step >= 1.0 || step <= 0.0 || !step.is_finite() {
        0
    } else {
        (-step.log10().floor()) as usize + usize::from((step / 10f64.powf(step.log10().floor())).fract() > 1e-9)
    }
}

/// A tick label with as many decimals as the tick step needs.
pub fn format_tick(value: f64, step: f64) -> String {
    format!("{:.*}", decimals_for(step), value)
}

/// Data range of the finite points of all series, `None` when there are none.
fn data_range(series: &[Series], pick: impl Fn(&(f64, f64)) -> f64) -> Option<[f64; 2]> {
    let values = series.iter().flat_map(|s| s.points.iter()).filter(|p| p.0.is_finite() && p.1.is_finite()).map(pick);
    values.fold(None, |acc, v| match acc {
        None => Some([v, v]),
        Some([lo, hi]) => Some([lo.min(v), hi.max(v)]),
    })
}

/// Pads a degenerate range so it has a width.
fn widen([lo, hi]: [f64; 2]) -> [f64; 2] {
    if hi > lo {
        [lo, hi]
    } else {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        [lo - pad, hi + pad]
    }
}

const SCALE: usize = 1;
const GLYPH_HEIGHT: usize = 7 * SCALE;

/// Renders `plot` into a new `width` x `height` image; returns it with the data area.
pub fn render_line_plot(plot: &LinePlot, width: usize, height: usize) -> (RgbImage, PlotArea) {
    let mut image = RgbImage::new(width, height, BACKGROUND);
    let x_range = widen(plot.x_range.or_else(|| data_range(&plot.series, |p| p.0)).unwrap_or([0.0, 1.0]));
    let y_data = widen(plot.y_range.or_else(|| data_range(&plot.series, |p| p.1)).unwrap_or([0.0, 1.0]));
    let y_ticks = nice_ticks(y_data[0], y_data[1], 6);
    let y_step = if y_ticks.len() > 1 { y_ticks[1] - y_ticks[0] } else { 1.0 };
    // Without a fixed range the axis is extended to the outer ticks, so every tick is labelled.
    let y_range = match plot.y_range {
        Some(range) => widen(range),
        None => [y_ticks[0], *y_ticks.last().expect("nice_ticks returns at least one value")],
    };
    let x_ticks: Vec<f64> =
        nice_ticks(x_range[0], x_range[1], 8).into_iter().filter(|t| *t >= x_range[0] - 1e-9 && *t <= x_range[1] + 1e-9).collect();
    let x_step = if x_ticks.len() > 1 { x_ticks[1] - x_ticks[0] } else { 1.0 };
    let y_labels: Vec<String> = y_ticks.iter().map(|t| format_tick(*t, y_step)).collect();
    let label_width = y_labels.iter().map(|l| text_width(l, SCALE)).max().unwrap_or(0);

    // Layout: title row, y label column, tick labels, data area, x tick labels, x label row.
    let top = 2 * GLYPH_HEIGHT + 6;
    let left = GLYPH_HEIGHT + 6 + label_width + 6;
    let bottom = 2 * GLYPH_HEIGHT + 14;
    let right = 10;
    let area = PlotArea {
        left,
        top,
        width: width.saturating_sub(left + right).max(2),
        height: height.saturating_sub(top + bottom).max(2),
        x_range,
        y_range,
    };

    // Grid and y ticks.
    for (tick, label) in y_ticks.iter().zip(&y_labels) {
        if *tick < y_range[0] - 1e-12 || *tick > y_range[1] + 1e-12 {
            continue;
        }
        let row = area.row(*tick).round() as i64;
        for x in area.left..area.left + area.width {
            image.set(x, row as usize, GRID_COLOUR);
        }
        for x in area.left.saturating_sub(4)..area.left {
            image.set(x, row as usize, AXIS_COLOUR);
        }
        let text_x = area.left as i64 - 6 - text_width(label, SCALE) as i64;
        image.draw_text(text_x, row - (GLYPH_HEIGHT / 2) as i64, label, SCALE, TEXT_COLOUR);
    }
    // Axes: left and bottom edges, just outside the data area.
    let axis_row = area.top + area.height;
    for y in area.top..=axis_row {
        image.set(area.left - 1, y, AXIS_COLOUR);
    }
    for x in area.left - 1..area.left + area.width {
        image.set(x, axis_row, AXIS_COLOUR);
    }
    // x ticks.
    for tick in &x_ticks {
        let column = area.column(*tick).round() as usize;
        for y in axis_row..axis_row + 4 {
            image.set(column, y, AXIS_COLOUR);
        }
        let label = format_tick(*tick, x_step);
        let text_x = column as i64 - (text_width(&label, SCALE) / 2) as i64;
        image.draw_text(text_x, (axis_row + 6) as i64, &label, SCALE, TEXT_COLOUR);
    }

    // Series.
    for series in &plot.series {
        draw_series(&mut image, &area, series);
    }

    // Title, axis labels, legend.
    let title_x = (width.saturating_sub(text_width(&plot.title, SCALE))) / 2;
    image.draw_text(title_x as i64, 3, &plot.title, SCALE, TEXT_COLOUR);
    let x_label_x = area.left + area.width.saturating_sub(text_width(&plot.x_label, SCALE)) / 2;
    image.draw_text(x_label_x as i64, (height - GLYPH_HEIGHT - 3) as i64, &plot.x_label, SCALE, TEXT_COLOUR);
    draw_vertical_text(&mut image, 3, area.top + area.height / 2, &plot.y_label, TEXT_COLOUR);
    draw_legend(&mut image, &area, &plot.series);
    (image, area)
}

fn draw_series(image: &mut RgbImage, area: &PlotArea, series: &Series) {
    let finite: Vec<(f64, f64)> = series.points.iter().copied().filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
    let markers = finite.len() <= 40;
    let mut previous: Option<(f64, f64)> = None;
    for &(x, y) in &series.points {
        if !(x.is_finite() && y.is_finite()) {
            previous = None;
            continue;
        }
        let point = (area.column(x), area.row(y));
        if let Some(from) = previous {
            draw_line(image, area, from, point, series.colour);
        }
        if markers {
            for dy in -1..=1 {
                for dx in -1..=1 {
                    let (px, py) = (point.0.round() as i64 + dx, point.1.round() as i64 + dy);
                    if area.contains(px, py) {
                        image.set(px as usize, py as usize, series.colour);
                    }
                }
            }
        }
        previous = Some(point);
    }
}

/// A two-pixel-thick line clipped to the data area (DDA, one step per pixel).
fn draw_line(image: &mut RgbImage, area: &PlotArea, from: (f64, f64), to: (f64, f64), colour: [u8; 3]) {
    let steps = (to.0 - from.0).abs().max((to.1 - from.1).abs()).ceil().max(1.0) as usize;
    let steep = (to.1 - from.1).abs() > (to.0 - from.0).abs();
    for s in 0..=steps {
        let t = s as f64 / steps as f64;
        let x = (from.0 + (to.0 - from.0) * t).round() as i64;
        let y = (from.1 + (to.1 - from.1) * t).round() as i64;
        for (px, py) in [(x, y), if steep { (x + 1, y) } else { (x, y + 1) }] {
            if area.contains(px, py) {
                image.set(px as usize, py as usize, colour);
            }
        }
    }
}

/// Text rotated 90 degrees counter-clockwise (reads bottom to top), centred on row `centre_y`.
fn draw_vertical_text(image: &mut RgbImage, x: usize, centre_y: usize, text: &str, colour: [u8; 3]) {
    if text.is_empty() {
        return;
    }
    let w = text_width(text, SCALE);
    let mut scratch = RgbImage::new(w + 1, GLYPH_HEIGHT + 1, BACKGROUND);
    scratch.draw_text(0, 0, text, SCALE, colour);
    let y0 = centre_y as i64 + (w / 2) as i64;
    for sy in 0..scratch.height {
        for sx in 0..scratch.width {
            let c = scratch.get(sx, sy);
            if c != BACKGROUND {
                let (px, py) = (x as i64 + sy as i64, y0 - sx as i64);
                if px >= 0 && py >= 0 {
                    image.set(px as usize, py as usize, c);
                }
            }
        }
    }
}

fn draw_legend(image: &mut RgbImage, area: &PlotArea, series: &[Series]) {
    let named: Vec<&Series> = series.iter().filter(|s| !s.name.is_empty()).collect();
    if named.is_empty() {
        return;
    }
    let text = named.iter().map(|s| text_width(&s.name, SCALE)).max().unwrap_or(0);
    let row_height = GLYPH_HEIGHT + 4;
    let box_width = 14 + 4 + text + 8;
    let box_height = named.len() * row_height + 6;
    let x0 = (area.left + area.width).saturating_sub(box_width + 4);
    let y0 = area.top + 4;
    for y in y0..y0 + box_height {
        for x in x0..x0 + box_width {
            let edge = y == y0 || y == y0 + box_height - 1 || x == x0 || x == x0 + box_width - 1;
            image.set(x, y, if edge { GRID_COLOUR } else { BACKGROUND });
        }
    }
    for (i, s) in named.iter().enumerate() {
        let y = y0 + 4 + i * row_height;
        for dy in 2..5 {
            for dx in 0..14 {
                image.set(x0 + 4 + dx, y + dy, s.colour);
            }
        }
        image.draw_text((x0 + 22) as i64, y as i64, &s.name, SCALE, TEXT_COLOUR);
    }
}

/// Images one above the other, left-aligned, on the plot background.
pub fn vstack(images: &[RgbImage]) -> RgbImage {
    let width = images.iter().map(|i| i.width).max().unwrap_or(0);
    let height = images.iter().map(|i| i.height).sum();
    let mut out = RgbImage::new(width, height, BACKGROUND);
    let mut y0 = 0;
    for img in images {
        for y in 0..img.height {
            for x in 0..img.width {
                out.set(x, y0 + y, img.get(x, y));
            }
        }
        y0 += img.height;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice_and_cover_the_range() {
        assert_eq!(nice_ticks(0.0, 1.0, 6), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(nice_ticks(1.0, 10.0, 8), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = nice_ticks(-0.93, 0.41, 6);
        assert!(t[0] <= -0.93 && *t.last().unwrap() >= 0.41, "{t:?}");
        assert_eq!(t, vec![-1.0, -0.5, 0.0, 0.5]);
        assert_eq!(nice_ticks(3.0, 3.0, 5), vec![3.0]);
        assert_eq!(format_tick(0.30000000000000004, 0.1), "0.3");
        assert_eq!(format_tick(0.25, 0.25), "0.25");
        assert_eq!(format_tick(12.0, 2.0), "12");
    }

    fn two_series() -> LinePlot {
        LinePlot {
            title: "loss".into(),
            x_label: "epoch".into(),
            y_label: "value".into(),
            series: vec![
                Series { name: "train".into(), colour: PALETTE[0], points: vec![(1.0, 0.9), (2.0, 0.5), (3.0, 0.2)] },
                Series { name: "val".into(), colour: PALETTE[1], points: vec![(1.0, 1.0), (2.0, f64::NAN), (3.0, 0.4)] },
            ],
            ..LinePlot::default()
        }
    }

    #[test]
    fn plot_has_axes_lines_and_text() {
        let (img, area) = render_line_plot(&two_series(), 320, 200);
        assert_eq!((img.width, img.height), (320, 200));
        // The axes are drawn just left of and below the data area.
        for y in area.top..area.top + area.height {
            assert_eq!(img.get(area.left - 1, y), AXIS_COLOUR, "y axis at row {y}");
        }
        for x in area.left..area.left + area.width {
            assert_eq!(img.get(x, area.top + area.height), AXIS_COLOUR, "x axis at column {x}");
        }
        let count = |c: [u8; 3]| img.pixels.iter().filter(|p| **p == c).count();
        assert!(count(PALETTE[0]) > 100, "train line");
        assert!(count(PALETTE[1]) > 20, "val markers and legend");
        assert!(count(TEXT_COLOUR) > 100, "labels");
        // The first train point (1, 0.9) is drawn where the area maps it.
        let (x, y) = (area.column(1.0).round() as usize, area.row(0.9).round() as usize);
        assert_eq!(img.get(x, y), PALETTE[0]);
    }

    #[test]
    fn empty_and_single_point_plots_render() {
        let (img, _) = render_line_plot(&LinePlot::default(), 100, 80);
        assert_eq!(img.pixels.len(), 8000);
        let mut plot = two_series();
        plot.series.truncate(1);
        plot.series[0].points.truncate(1);
        let (img, area) = render_line_plot(&plot, 200, 120);
        assert!(area.x_range[0] < 1.0 && area.x_range[1] > 1.0);
        assert!(img.pixels.iter().any(|p| *p == PALETTE[0]));
        assert_eq!(vstack(&[img.clone(), img]).height, 240);
    }
}
