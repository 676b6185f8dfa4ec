//! Writes one NIfTI file per entry of `tests/fixtures/nifti/expected.json`, with the geometry
//! built from nibabel's affine in that file and the voxels spineseg reads from the fixture, so
//! that reference tools can check what spineseg writes:
//!
//! ```text
//! cargo run -p spineseg-io --example write_nifti_samples -- /tmp/written
//! python crates/io/tests/fixtures/make_nifti_fixtures.py --check-written /tmp/written
//! ```

use spineseg_io::{nifti, AnyVolume, Geometry};
use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::args().nth(1).ok_or("usage: write_nifti_samples OUT_DIR")?);
    std::fs::create_dir_all(&out)?;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nifti");
    let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixtures.join("expected.json"))?)?;
    let entries = expected["files"].as_array().ok_or("expected.json should list files")?;
    for entry in entries {
        let name = entry["file"].as_str().ok_or("file name")?;
        let mut affine = [[0.0; 4]; 4];
        for (r, row) in entry["affine"].as_array().ok_or("affine")?.iter().enumerate() {
            for (c, v) in row.as_array().ok_or("affine row")?.iter().enumerate() {
                affine[r][c] = v.as_f64().ok_or("affine entry")?;
            }
        }
        let geometry = Geometry::from_affine(&affine).map_err(|e| format!("{name}: {e}"))?;
        let data = nifti::read(&fixtures.join(name))?.data;
        let shape: Vec<usize> =
            entry["shape"].as_array().ok_or("shape")?.iter().map(|d| d.as_u64().unwrap_or(0) as usize).collect();
        let volume = AnyVolume { shape: [shape[0], shape[1], shape[2]], data, geometry };
        nifti::write(&out.join(name), &volume)?;
    }
    println!("wrote {} files into {}", entries.len(), out.display());
    Ok(())
}
