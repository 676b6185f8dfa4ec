//! Parity with nibabel on the fixtures written by `fixtures/make_nifti_fixtures.py`: shape, data
//! type, voxel values (after scaling) and the world position of chosen voxels.

use serde_json::Value;
use spineseg_io::{nifti, DataType};
use std::path::{Path, PathBuf};

const TOL_MM: f64 = 1e-4;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nifti")
}

fn expected() -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures_dir().join("expected.json"))
        .expect("expected.json should exist (run make_nifti_fixtures.py)");
    let json: Value = serde_json::from_str(&text).expect("expected.json should be valid JSON");
    json["files"].as_array().expect("expected.json should list files").clone()
}

fn f64s(value: &Value) -> Vec<f64> {
    value.as_array().expect("should be an array").iter().map(|v| v.as_f64().expect("should be a number")).collect()
}

/// The data type spineseg returns: the stored one, or F32/F64 when scaling applies (F64 for
/// stored float64, int32 and uint32).
fn spineseg_dtype(entry: &Value) -> DataType {
    let stored = DataType::from_name(entry["stored_dtype"].as_str().unwrap()).expect("known dtype");
    if !entry["scaled"].as_bool().unwrap() {
        stored
    } else if matches!(stored, DataType::F64 | DataType::I32 | DataType::U32) {
        DataType::F64
    } else {
        DataType::F32
    }
}

#[test]
fn every_fixture_matches_nibabel() {
    let entries = expected();
    assert!(entries.len() >= 25, "expected.json should list the fixture set");
    let mut failures = Vec::new();
    for entry in &entries {
        let name = entry["file"].as_str().unwrap();
        let volume = match nifti::read(&fixtures_dir().join(name)) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let shape: Vec<usize> = f64s(&entry["shape"]).iter().map(|&d| d as usize).collect();
        assert_eq!(volume.shape.to_vec(), shape[..3].to_vec(), "{name}: shape");
        assert!(shape[3..].iter().all(|&d| d == 1), "{name}: only singleton extra dims are expected");
        assert_eq!(volume.data_type(), spineseg_dtype(entry), "{name}: data type");

        for point in entry["points"].as_array().unwrap() {
            let ijk = f64s(&point["ijk"]);
            let want = f64s(&point["xyz"]);
            let got = volume.geometry.voxel_to_world([ijk[0], ijk[1], ijk[2]]);
            for axis in 0..3 {
                if (got[axis] - want[axis]).abs() > TOL_MM {
                    failures.push(format!("{name}: voxel {ijk:?} at {got:?}, nibabel says {want:?}"));
                    break;
                }
            }
        }

        let values = volume.data.to_f64();
        for v in entry["values"].as_array().unwrap() {
            let ijk = f64s(&v["ijk"]);
            let want = v["value"].as_f64().unwrap();
            let index = ijk[0] as usize + shape[0] * (ijk[1] as usize + shape[1] * ijk[2] as usize);
            let got = values[index];
            // F32 results are nibabel's float64 rounded to f32; others must agree to f64 noise.
            let tol = if volume.data_type() == DataType::F32 { 1e-6 } else { 1e-12 } * want.abs().max(1.0);
            if (got - want).abs() > tol {
                failures.push(format!("{name}: value at {ijk:?} is {got}, nibabel says {want}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn fixture_affines_match_nibabel_affine() {
    // The whole 4x4 affine (not only sampled points), including non-orthogonal sforms.
    for entry in expected() {
        let name = entry["file"].as_str().unwrap();
        let volume = nifti::read(&fixtures_dir().join(name)).unwrap();
        let affine = volume.geometry.affine();
        for (row, want_row) in entry["affine"].as_array().unwrap().iter().enumerate() {
            for (col, want) in f64s(want_row).into_iter().enumerate() {
                assert!(
                    (affine[row][col] - want).abs() < 1e-9,
                    "{name}: affine[{row}][{col}] is {}, nibabel says {want}",
                    affine[row][col]
                );
            }
        }
    }
}

#[test]
fn orientation_codes_match_nibabel() {
    for entry in expected() {
        let name = entry["file"].as_str().unwrap();
        let volume = nifti::read(&fixtures_dir().join(name)).unwrap();
        assert_eq!(volume.geometry.orientation_code(), entry["axcodes"].as_str().unwrap(), "{name}");
    }
}
