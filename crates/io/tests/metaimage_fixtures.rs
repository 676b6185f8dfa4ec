//! Reads every MetaImage fixture written by SimpleITK (or by hand: big endian, HeaderSize, key
//! synonyms) and compares with what SimpleITK reports for the same file, recorded in
//! `fixtures/metaimage/expected.json` by `fixtures/make_metaimage_fixtures.py`.

use serde_json::Value;
use spineseg_io::{metaimage, DataType};
use std::path::{Path, PathBuf};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metaimage")
}

fn expected() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(fixture_dir().join("expected.json")).expect("expected.json should exist");
    let json: Value = serde_json::from_str(&text).expect("expected.json should be valid JSON");
    json["files"].as_object().expect("expected.json should have a files object").clone()
}

fn f64s(value: &Value) -> Vec<f64> {
    value.as_array().expect("should be an array").iter().map(|v| v.as_f64().expect("should be a number")).collect()
}

fn triple(value: &Value) -> [f64; 3] {
    let v = f64s(value);
    [v[0], v[1], v[2]]
}

#[test]
fn every_fixture_matches_simpleitk() {
    let files = expected();
    assert!(files.len() >= 13, "expected.json lists {} files", files.len());
    for (name, want) in &files {
        let path = fixture_dir().join(name);
        let volume = metaimage::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"));

        let shape: Vec<usize> = f64s(&want["shape"]).iter().map(|&n| n as usize).collect();
        assert_eq!(volume.shape.to_vec(), shape, "{name}: shape");
        let dtype = DataType::from_name(want["dtype"].as_str().unwrap()).unwrap();
        assert_eq!(volume.data_type(), dtype, "{name}: dtype");

        let spacing = triple(&want["spacing"]);
        for (got, want) in volume.geometry.spacing.mm().iter().zip(spacing) {
            assert!((got - want).abs() < 1e-12, "{name}: spacing");
        }
        // The stored LPS origin and direction, negated in x and y.
        let origin = triple(&want["origin"]);
        let direction = f64s(&want["direction"]);
        let sign = [-1.0, -1.0, 1.0];
        for row in 0..3 {
            assert!((volume.geometry.origin_mm[row] - sign[row] * origin[row]).abs() < 1e-9, "{name}: origin");
            for col in 0..3 {
                let lps = direction[row * 3 + col];
                assert!((volume.geometry.direction[row][col] - sign[row] * lps).abs() < 1e-9, "{name}: direction");
            }
        }

        for point in want["points"].as_array().unwrap() {
            let ijk = triple(&point["index"]);
            let ras = triple(&point["ras"]);
            let got = volume.geometry.voxel_to_world(ijk);
            for axis in 0..3 {
                assert!(
                    (got[axis] - ras[axis]).abs() < 1e-4,
                    "{name}: voxel {ijk:?} at {got:?}, SimpleITK says RAS {ras:?}"
                );
            }
        }

        let values = volume.data.to_f64();
        for item in want["values"].as_array().unwrap() {
            let [i, j, k] = triple(&item["index"]).map(|v| v as usize);
            let flat = i + shape[0] * (j + shape[1] * k);
            let want_value = item["value"].as_f64().unwrap();
            assert_eq!(values[flat], want_value, "{name}: value at {:?}", [i, j, k]);
        }
        let sum: f64 = values.iter().sum();
        let want_sum = want["sum"].as_f64().unwrap();
        assert!((sum - want_sum).abs() <= 1e-9 * want_sum.abs().max(1.0), "{name}: sum {sum} != {want_sum}");
    }
}

#[test]
fn oblique_fixture_rules_out_a_transposed_transform_matrix() {
    // The oblique direction is not symmetric, so reading TransformMatrix as rows instead of
    // columns would move voxel (1, 0, 0) by centimetres; this pins the element order.
    let files = expected();
    let want = &files["short_oblique_aniso_zraw.mhd"];
    let volume = metaimage::read(&fixture_dir().join("short_oblique_aniso_zraw.mhd")).unwrap();
    let d = volume.geometry.direction;
    let transpose_differs = (0..3).any(|r| (0..3).any(|c| (d[r][c] - d[c][r]).abs() > 0.1));
    assert!(transpose_differs);
    let point = &want["points"][4];
    assert_eq!(f64s(&point["index"]), vec![4.0, 5.0, 6.0]);
    let got = volume.geometry.voxel_to_world(triple(&point["index"]));
    let ras = triple(&point["ras"]);
    assert!((0..3).all(|a| (got[a] - ras[a]).abs() < 1e-4), "{got:?} vs {ras:?}");
}

#[test]
fn sagittal_fixture_has_lumbar_axis_codes() {
    let volume = metaimage::read(&fixture_dir().join("int_sagittal.mha")).unwrap();
    // RAS codes of a sagittal lumbar stack: i inferior, j posterior, k right (as nibabel names them).
    assert_eq!(volume.geometry.orientation_code(), "IPR");
}
