//! Renders docs/phantom_mid_sagittal.png: the mid-sagittal slice of one realistic-size phantom
//! case in T1 and T2 contrast (same anatomy), and the T2 slice with the label overlay.
//!
//! `cargo run --release -p spineseg-data --example phantom_png [SEED] [OUT.png]`

use spineseg_render::overlay::{render_overlay, write_png, OverlayOptions, RgbImage};
use spineseg_phantom::{generate_case, Contrast, PhantomConfig};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let seed: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(7);
    let out = PathBuf::from(args.next().unwrap_or_else(|| "docs/phantom_mid_sagittal.png".into()));
    let size = 360;
    let mut panels = Vec::new();
    for (contrast, overlay) in [(Contrast::T1, false), (Contrast::T2, false), (Contrast::T2, true)] {
        let config = PhantomConfig { contrast: Some(contrast), lateral_samples: 3, ..PhantomConfig::default() };
        let started = std::time::Instant::now();
        let case = generate_case(&config, seed, 0)?;
        eprintln!(
            "{} case: shape {:?}, spacing {:?} mm, levels {:?}, tilt {:.1} deg, {:.0} ms",
            contrast.name(),
            case.image.shape(),
            case.image.geometry.spacing.mm(),
            case.levels.iter().map(|l| l.0).collect::<Vec<_>>(),
            case.tilt_deg,
            started.elapsed().as_secs_f64() * 1e3
        );
        let options = OverlayOptions { max_size: size, legend: overlay, names: overlay, ..OverlayOptions::default() };
        let mut panel = render_overlay(&case.image, overlay.then_some(&case.labels), &options)?;
        let title = if overlay { "T2 + LABELS" } else { contrast.name() };
        panel.draw_text(6, 6, title, 2, [255, 255, 0]);
        panels.push(panel);
    }
    let image = RgbImage::hstack(&panels, 4);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    write_png(&out, &image)?;
    eprintln!("wrote {} ({} x {})", out.display(), image.width, image.height);
    Ok(())
}
