//! Writes MetaImage files for `make_metaimage_fixtures.py --check-written DIR`: for every fixture
//! in `tests/fixtures/metaimage/expected.json`, a volume with that fixture's size, element type
//! and geometry (converted from SimpleITK's LPS to RAS+), in four variants: `.mha` plain and
//! compressed, `.mhd` + `.raw` and `.mhd` + `.zraw`. Voxel `(i, j, k)` holds
//! `(i + 5 j + 3 k) % 100`, minus 50 for signed integers, plus 0.25 for floats.
//!
//! ```text
//! cargo run -p spineseg-io --example write_metaimage_samples -- /tmp/written
//! python3 crates/io/tests/fixtures/make_metaimage_fixtures.py --check-written /tmp/written
//! ```

use serde_json::Value;
use spineseg_io::geometry::{Geometry, Spacing};
use spineseg_io::metaimage::{self, WriteOptions};
use spineseg_io::{AnyVolume, DataType, VoxelData};
use std::path::{Path, PathBuf};

fn numbers(value: &Value) -> Vec<f64> {
    value.as_array().expect("should be an array").iter().map(|v| v.as_f64().expect("should be a number")).collect()
}

fn pattern(shape: [usize; 3], data_type: DataType) -> VoxelData {
    let mut values = Vec::with_capacity(shape.iter().product());
    for k in 0..shape[2] {
        for j in 0..shape[1] {
            for i in 0..shape[0] {
                values.push(((i + 5 * j + 3 * k) % 100) as f64);
            }
        }
    }
    let values: Vec<f64> = match data_type {
        DataType::I8 | DataType::I16 | DataType::I32 => values.iter().map(|v| v - 50.0).collect(),
        DataType::F32 | DataType::F64 => values.iter().map(|v| v + 0.25).collect(),
        _ => values,
    };
    VoxelData::F64(values).cast(data_type).expect("pattern values should fit every element type")
}

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).expect("usage: write_metaimage_samples OUTPUT_DIR"));
    std::fs::create_dir_all(&out).expect("output folder should be creatable");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metaimage/expected.json");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(fixtures).expect("expected.json should exist"))
        .expect("expected.json should be valid JSON");
    let mut count = 0;
    for (name, want) in json["files"].as_object().expect("files should be an object") {
        let shape = numbers(&want["shape"]);
        let shape = [shape[0] as usize, shape[1] as usize, shape[2] as usize];
        let data_type = DataType::from_name(want["dtype"].as_str().unwrap()).expect("dtype should be known");
        let spacing = numbers(&want["spacing"]);
        let origin_lps = numbers(&want["origin"]);
        let direction_lps = numbers(&want["direction"]);
        // LPS -> RAS+: negate the x and y rows.
        let sign = [-1.0, -1.0, 1.0];
        let mut direction = [[0.0; 3]; 3];
        for row in 0..3 {
            for col in 0..3 {
                direction[row][col] = sign[row] * direction_lps[row * 3 + col];
            }
        }
        let origin = [-origin_lps[0], -origin_lps[1], origin_lps[2]];
        let spacing = Spacing::new([spacing[0], spacing[1], spacing[2]]).expect("fixture spacing should be valid");
        let geometry = Geometry::new(spacing, origin, direction).expect("fixture geometry should be valid");
        let volume = AnyVolume { shape, data: pattern(shape, data_type), geometry };
        let stem = name.rsplit_once('.').map_or(name.as_str(), |(stem, _)| stem);
        for (variant, compress) in [("mha", false), ("mha_z", true), ("mhd", false), ("mhd_z", true)] {
            let extension = &variant[..3];
            let path = out.join(format!("{stem}__{variant}.{extension}"));
            metaimage::write_with_options(&path, &volume, &WriteOptions { compress })
                .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            count += 1;
        }
    }
    println!("wrote {count} MetaImage files to {}", out.display());
}
