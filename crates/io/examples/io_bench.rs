//! I/O benchmark: writes and reads a 512 x 512 x 20 `int16` MRI-like volume as `.nii.gz` and as
//! compressed `.mha`, `--repeats` times each, and prints the median times.
//!
//! ```text
//! cargo run --release -p spineseg-io --example io_bench -- [--repeats 7] [--dir DIR] [--json]
//!                                                         [--dump-raw PATH]
//! ```
//! `--dump-raw PATH` also writes the voxels (little-endian `int16`, `i` fastest) so that
//! `bench/io_vs_reference.py` can time nibabel and SimpleITK on exactly the same volume.
//! `--json` prints one JSON object (seconds) instead of the table.

use spineseg_io::geometry::{Geometry, Spacing};
use spineseg_io::{read_volume, write_volume, AnyVolume, VoxelData};
use std::path::{Path, PathBuf};
use std::time::Instant;

const SHAPE: [usize; 3] = [512, 512, 20];

/// Deterministic xorshift64* generator, so every run (and the Python side) sees the same volume.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = self.next_f64().max(1e-300);
        let v = self.next_f64();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// Smooth step from 0 to 1 around `edge` (width in voxels), like a blurred tissue boundary.
fn soft(x: f64, edge: f64, width: f64) -> f64 {
    1.0 / (1.0 + (-(x - edge) / width).exp())
}

/// A sagittal T2-like lumbar slab: `i` runs anterior -> posterior, `j` superior -> inferior, `k`
/// left -> right (20 slices of 4 mm). Soft tissue, a column of vertebral bodies with darker
/// discs between them, a bright CSF canal behind, a smooth coil-bias field and Rician-like noise.
fn mri_like_volume() -> AnyVolume {
    let [nx, ny, nz] = SHAPE;
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let mut data = Vec::with_capacity(nx * ny * nz);
    for k in 0..nz {
        let lateral = (-((k as f64 - 9.5) / 7.0).powi(2)).exp(); // spine fades off-midline
        for j in 0..ny {
            let y = j as f64;
            // Vertebra (55 px) then disc (15 px), repeating down the slab.
            let phase = (y + 20.0) % 70.0;
            let in_body = soft(phase, 3.0, 1.5) * (1.0 - soft(phase, 55.0, 1.5));
            for i in 0..nx {
                let x = i as f64;
                let body = soft(x, 60.0, 4.0) * (1.0 - soft(x, 470.0, 4.0)); // skin to skin
                let column = soft(x, 250.0, 2.0) * (1.0 - soft(x, 330.0, 2.0)) * lateral;
                let canal = soft(x, 340.0, 2.0) * (1.0 - soft(x, 362.0, 2.0)) * lateral;
                let bias = 1.0 + 0.25 * ((x - 256.0) / 300.0) + 0.1 * (y / 512.0 * 3.1).sin();
                let mut signal = 350.0 * body;
                signal += column * (in_body * 120.0 + (1.0 - in_body) * 300.0 - 200.0);
                signal += canal * 900.0;
                signal *= bias;
                // Magnitude images: noise is Rician, so the background is small positive values.
                let re = signal + 18.0 * rng.normal();
                let im = 18.0 * rng.normal();
                data.push((re * re + im * im).sqrt().round().min(i16::MAX as f64) as i16);
            }
        }
    }
    // Sagittal: i -> posterior, j -> inferior, k -> right, in RAS+.
    let direction = [[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]];
    let spacing = Spacing::new([0.5859375, 0.5859375, 4.4]).expect("benchmark spacing is positive");
    let geometry = Geometry::new(spacing, [-41.8, 150.0, 120.0], direction).expect("benchmark direction is valid");
    AnyVolume { shape: SHAPE, data: VoxelData::I16(data), geometry }
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

struct Measured {
    format: &'static str,
    write_s: f64,
    read_s: f64,
    bytes: u64,
}

fn measure(volume: &AnyVolume, path: &Path, repeats: usize, format: &'static str) -> Option<Measured> {
    let mut writes = Vec::with_capacity(repeats);
    let mut reads = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        if let Err(e) = write_volume(path, volume) {
            eprintln!("skipping {format}: {e}");
            return None;
        }
        writes.push(start.elapsed().as_secs_f64());
        let start = Instant::now();
        let back = match read_volume(path) {
            Ok(back) => back,
            Err(e) => {
                eprintln!("skipping {format}: {e}");
                return None;
            }
        };
        reads.push(start.elapsed().as_secs_f64());
        assert_eq!(back.data, volume.data, "{format} should round-trip the voxels");
    }
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Some(Measured { format, write_s: median(writes), read_s: median(reads), bytes })
}

fn main() {
    let mut repeats = 7usize;
    let mut dir: Option<PathBuf> = None;
    let mut dump: Option<PathBuf> = None;
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--repeats" => repeats = args.next().and_then(|v| v.parse().ok()).expect("--repeats takes a number"),
            "--dir" => dir = args.next().map(PathBuf::from),
            "--dump-raw" => dump = args.next().map(PathBuf::from),
            "--json" => json = true,
            other => panic!("unknown argument {other}; see the doc comment of io_bench.rs"),
        }
    }
    let temp = tempfile::tempdir().expect("a temporary folder should be creatable");
    let dir = dir.unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir).expect("benchmark folder should be creatable");

    let volume = mri_like_volume();
    if let Some(path) = &dump {
        std::fs::write(path, volume.data.to_le_bytes()).expect("raw dump should be writable");
    }
    let results: Vec<Measured> = [("nii.gz", "bench.nii.gz"), ("mha", "bench.mha")]
        .into_iter()
        .filter_map(|(format, name)| measure(&volume, &dir.join(name), repeats, format))
        .collect();

    if json {
        let items: Vec<String> = results
            .iter()
            .map(|m| {
                format!(
                    "\"{}\": {{\"write_s\": {}, \"read_s\": {}, \"bytes\": {}}}",
                    m.format, m.write_s, m.read_s, m.bytes
                )
            })
            .collect();
        println!("{{\"shape\": {:?}, \"repeats\": {repeats}, {}}}", SHAPE, items.join(", "));
    } else {
        println!("{}x{}x{} int16, median of {repeats}", SHAPE[0], SHAPE[1], SHAPE[2]);
        println!("{:<8} {:>10} {:>10} {:>12}", "format", "write ms", "read ms", "file bytes");
        for m in &results {
            println!("{:<8} {:>10.1} {:>10.1} {:>12}", m.format, m.write_s * 1e3, m.read_s * 1e3, m.bytes);
        }
    }
}
