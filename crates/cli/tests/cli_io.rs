//! End-to-end tests of the `spineseg` binary: info, convert, dataset check, bad input.

use spineseg_io::{read_volume, write_volume, AnyVolume, Geometry, Spacing, VoxelData};
use std::path::Path;

mod support;
use support::spineseg;


fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A sagittal, slightly oblique, anisotropic geometry like a real lumbar scan.
fn oblique_geometry() -> Geometry {
    let (s, c) = (0.2f64.sin(), 0.2f64.cos());
    Geometry::new(
        Spacing::new([0.6, 0.6, 4.4]).unwrap(),
        [-12.5, 30.0, 80.0],
        [[0.0, 0.0, -1.0], [c, s, 0.0], [-s, c, 0.0]],
    )
    .unwrap()
}

fn write_labels(path: &Path, geometry: Geometry) {
    let shape = [6, 5, 4];
    let data: Vec<u8> = (0..120).map(|i| [0u8, 23, 123, 61][i % 4]).collect();
    write_volume(path, &AnyVolume { shape, data: VoxelData::U8(data), geometry }).unwrap();
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["info", "--help"],
        vec!["convert", "--help"],
        vec!["dataset", "--help"],
        vec!["dataset", "check", "--help"],
        vec!["phantom", "--help"],
        vec!["overlay", "--help"],
        vec!["evaluate", "--help"],
    ] {
        let out = spineseg(&args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("Usage"), "{args:?}");
    }
    assert_eq!(spineseg(&["no-such-command"]).status.code(), Some(2));
}

#[test]
fn info_names_structures_and_reports_geometry() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("labels.nii.gz");
    write_labels(&file, oblique_geometry());
    let out = spineseg(&["info", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for expected in ["6 x 5 x 4", "0.6 x 0.6 x 4.4 mm", "uint8", "L4 vertebral body", "L4/L5 intervertebral disc", "spinal canal"] {
        assert!(stdout.contains(expected), "missing {expected:?} in\n{stdout}");
    }
    let out = spineseg(&["info", "--json", file.to_str().unwrap()]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["orientation"], oblique_geometry().orientation_code());
    assert_eq!(json["labels"].as_array().unwrap().len(), 4);
}

#[test]
fn convert_keeps_every_voxel_at_its_physical_point_across_formats() {
    let dir = tempfile::tempdir().unwrap();
    let nii = dir.path().join("in.nii.gz");
    write_labels(&nii, oblique_geometry());
    let original = read_volume(&nii).unwrap();
    let mut previous = nii.clone();
    for (name, reorient) in [("a.mha", None), ("b.mhd", Some("RAS")), ("c.nii", Some("LPS")), ("d.nii.gz", None)] {
        let out_path = dir.path().join(name);
        let mut args = vec!["convert", previous.to_str().unwrap(), out_path.to_str().unwrap()];
        if let Some(code) = reorient {
            args.extend(["--reorient", code]);
        }
        let out = spineseg(&args);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        let converted = read_volume(&out_path).unwrap();
        if let Some(code) = reorient {
            assert_eq!(converted.geometry.orientation_code(), code);
        }
        assert_same_physical_content(&original, &converted);
        previous = out_path;
    }
}

/// Every voxel of `a` holds the same value as the voxel of `b` at the same world point.
fn assert_same_physical_content(a: &AnyVolume, b: &AnyVolume) {
    let (va, vb) = (a.data.to_f64(), b.data.to_f64());
    let [nx, ny, nz] = a.shape;
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let world = a.geometry.voxel_to_world([i as f64, j as f64, k as f64]);
                let ijk = b.geometry.world_to_voxel(world);
                for axis in 0..3 {
                    assert!((ijk[axis] - ijk[axis].round()).abs() < 1e-4, "voxel moved off-grid: {ijk:?}");
                }
                let [bi, bj, bk] = ijk.map(|x| x.round() as usize);
                assert_eq!(va[i + nx * (j + ny * k)], vb[bi + b.shape[0] * (bj + b.shape[1] * bk)]);
            }
        }
    }
}

#[test]
fn bad_input_fails_with_the_file_name_and_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.nii.gz");
    write_labels(&good, oblique_geometry());
    let bytes = std::fs::read(&good).unwrap();

    let truncated = dir.path().join("truncated.nii.gz");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let garbage = dir.path().join("garbage.mha");
    std::fs::write(&garbage, b"\x89PNG\r\n\x1a\nnot a metaimage").unwrap();
    let unknown = dir.path().join("volume.nrrd");
    std::fs::write(&unknown, b"NRRD0004").unwrap();

    for bad in [&truncated, &garbage, &unknown] {
        let out_path = dir.path().join("out.nii.gz");
        let out = spineseg(&["convert", bad.to_str().unwrap(), out_path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{}", bad.display());
        let stderr = text(&out.stderr);
        assert!(stderr.contains(bad.to_str().unwrap()), "error should name the file: {stderr}");
        assert!(!out_path.exists(), "no output may be written for {}", bad.display());
        let out = spineseg(&["info", bad.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1));
    }
    // A value that does not fit the requested type: refused, nothing written.
    let fractional = dir.path().join("fractional.mha");
    let data = VoxelData::F32(vec![0.0, 1.5, 2.0, 3.0]);
    write_volume(&fractional, &AnyVolume { shape: [2, 2, 1], data, geometry: oblique_geometry() }).unwrap();
    let out_path = dir.path().join("narrow.nii");
    let out = spineseg(&["convert", fractional.to_str().unwrap(), out_path.to_str().unwrap(), "--dtype", "int16"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("does not fit"), "{}", text(&out.stderr));
    assert!(!out_path.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 5, "only the inputs should remain: {leftovers:?}");
}

#[test]
fn dataset_check_reports_geometry_mismatch_with_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("imagesTr")).unwrap();
    std::fs::create_dir_all(root.join("labelsTr")).unwrap();
    let dataset_json = |cases: usize| {
        let json = format!(
            r#"{{"channel_names": {{"0": "T2"}}, "labels": {{"background": 0, "L4": 23, "L4/L5": 123, "spinal canal": 61}},
                "numTraining": {cases}, "file_ending": ".nii.gz"}}"#
        );
        std::fs::write(root.join("dataset.json"), json).unwrap();
    };
    dataset_json(1);
    let image = |path: &Path, geometry: Geometry| {
        let data = VoxelData::F32((0..120).map(|v| v as f32).collect());
        write_volume(path, &AnyVolume { shape: [6, 5, 4], data, geometry }).unwrap();
    };
    image(&root.join("imagesTr/case_a_0000.nii.gz"), oblique_geometry());
    write_labels(&root.join("labelsTr/case_a.nii.gz"), oblique_geometry());
    let out = spineseg(&["dataset", "check", root.to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));

    let mut shifted = oblique_geometry();
    shifted.origin_mm[0] += 2.0;
    dataset_json(2);
    image(&root.join("imagesTr/case_b_0000.nii.gz"), oblique_geometry());
    write_labels(&root.join("labelsTr/case_b.nii.gz"), shifted);
    let out = spineseg(&["dataset", "check", root.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("case_b") && stdout.contains("case_b.nii.gz"), "{stdout}");
    assert!(stdout.contains("case_a: ok"), "{stdout}");
}

#[test]
fn the_volume_size_limit_refuses_large_headers_and_can_be_raised() {
    // A 40 x 30 x 20 int16 volume announces 48,000 bytes of voxel data.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.nii.gz");
    let volume = AnyVolume { shape: [40, 30, 20], data: VoxelData::I16(vec![1; 24_000]), geometry: Geometry::default() };
    write_volume(&path, &volume).unwrap();
    let p = path.to_str().unwrap();
    let small = "0.00001"; // GiB: about 10,737 bytes
    let out = spineseg(&["info", p, "--max-volume-gib", small]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("v.nii.gz") && err.contains("48000 bytes") && err.contains("--max-volume-gib"), "{err}");
    // The environment variable sets it too; the flag wins over it.
    let binary = env!("CARGO_BIN_EXE_spineseg");
    let with_env = |args: &[&str]| std::process::Command::new(binary).args(args).env("SPINESEG_MAX_VOLUME_GIB", small).output().unwrap();
    assert_eq!(with_env(&["info", p]).status.code(), Some(1));
    assert!(with_env(&["info", p, "--max-volume-gib", "1"]).status.success());
    assert!(spineseg(&["info", p]).status.success(), "the default limit (2 GiB) reads it");
    let out = spineseg(&["info", p, "--max-volume-gib", "-1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}
