//! Write then read back, for every element type and storage variant, on volumes generated here.

use spineseg_io::geometry::{det3, Geometry, Mat3, Spacing};
use spineseg_io::metaimage::{self, WriteOptions};
use spineseg_io::{AnyVolume, VoxelData};
use std::path::Path;

const SHAPE: [usize; 3] = [7, 5, 3];

/// Oblique, anisotropic, with a negative determinant (a mirrored axis), as some scanners export.
fn oblique_mirrored_geometry() -> Geometry {
    let (a, b) = (0.3f64, -0.45f64);
    let rz: Mat3 = [[a.cos(), -a.sin(), 0.0], [a.sin(), a.cos(), 0.0], [0.0, 0.0, 1.0]];
    let rx: Mat3 = [[1.0, 0.0, 0.0], [0.0, b.cos(), -b.sin()], [0.0, b.sin(), b.cos()]];
    let mut d = [[0.0; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            // rz * rx * diag(1, 1, -1)
            d[r][c] = (0..3).map(|k| rz[r][k] * rx[k][c]).sum::<f64>() * if c == 2 { -1.0 } else { 1.0 };
        }
    }
    assert!(det3(&d) < 0.0);
    Geometry::new(Spacing::new([0.34, 0.3515625, 4.4]).unwrap(), [-123.456789, 87.654321, -0.1], d).unwrap()
}

/// Every element type, with values at the ends of its range and, for floats, fractions.
fn all_types() -> Vec<VoxelData> {
    let n = SHAPE.iter().product::<usize>();
    let ramp = |lo: f64, hi: f64| -> Vec<f64> { (0..n).map(|x| lo + (hi - lo) * x as f64 / (n - 1) as f64).collect() };
    vec![
        VoxelData::U8(ramp(0.0, 255.0).iter().map(|&v| v as u8).collect()),
        VoxelData::I8(ramp(-128.0, 127.0).iter().map(|&v| v as i8).collect()),
        VoxelData::U16(ramp(0.0, 65535.0).iter().map(|&v| v as u16).collect()),
        VoxelData::I16(ramp(-32768.0, 32767.0).iter().map(|&v| v as i16).collect()),
        VoxelData::U32(ramp(0.0, u32::MAX as f64).iter().map(|&v| v as u32).collect()),
        VoxelData::I32(ramp(i32::MIN as f64, i32::MAX as f64).iter().map(|&v| v as i32).collect()),
        VoxelData::F32({
            let mut v: Vec<f32> = ramp(-1e30, 3.4e38).iter().map(|&v| v as f32).collect();
            v[1] = f32::MIN_POSITIVE;
            v[2] = 0.1;
            v
        }),
        VoxelData::F64({
            let mut v = ramp(-1.0 / 3.0, 1e300);
            v[1] = f64::EPSILON;
            v[2] = f64::MAX;
            v
        }),
    ]
}

fn assert_same_geometry(a: &Geometry, b: &Geometry, what: &str) {
    for axis in 0..3 {
        assert!((a.spacing[axis] - b.spacing[axis]).abs() < 1e-9, "{what}: spacing");
        assert!((a.origin_mm[axis] - b.origin_mm[axis]).abs() < 1e-9, "{what}: origin");
        for col in 0..3 {
            assert!((a.direction[axis][col] - b.direction[axis][col]).abs() < 1e-9, "{what}: direction");
        }
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn every_type_and_variant_round_trips() {
    let geometry = oblique_mirrored_geometry();
    for data in all_types() {
        assert_eq!(data.len(), SHAPE.iter().product::<usize>());
        let volume = AnyVolume { shape: SHAPE, data, geometry };
        for (name, compress, files) in [
            ("v.mha", false, vec!["v.mha"]),
            ("v.mha", true, vec!["v.mha"]),
            ("v.mhd", false, vec!["v.mhd", "v.raw"]),
            ("v.mhd", true, vec!["v.mhd", "v.zraw"]),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(name);
            let what = format!("{} {name} compress={compress}", volume.data_type());
            metaimage::write_with_options(&path, &volume, &WriteOptions { compress }).unwrap();
            assert_eq!(files_in(dir.path()), files, "{what}: files written");
            let back = metaimage::read(&path).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(back.shape, SHAPE, "{what}");
            assert_eq!(back.data, volume.data, "{what}: voxels");
            assert_same_geometry(&back.geometry, &geometry, &what);
            // Through the format-dispatching entry points too.
            let again = spineseg_io::read_volume(&path).unwrap();
            assert_eq!(again, back);
        }
    }
}

#[test]
fn default_write_is_compressed_and_geometry_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("labels.mha");
    // A constant volume compresses to almost nothing.
    let volume = AnyVolume {
        shape: [64, 64, 16],
        data: VoxelData::U8(vec![3; 64 * 64 * 16]),
        geometry: oblique_mirrored_geometry(),
    };
    spineseg_io::write_volume(&path, &volume).unwrap();
    let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
    assert!(text.contains("CompressedData = True\n"), "{text}");
    assert!(std::fs::metadata(&path).unwrap().len() < 2000);
    let back = metaimage::read(&path).unwrap();
    // Shortest round-trip number formatting loses nothing at all.
    assert_eq!(back.geometry.origin_mm, volume.geometry.origin_mm);
    assert_eq!(back.geometry.spacing, volume.geometry.spacing);
    assert_eq!(back.data, volume.data);
}

#[test]
fn rewriting_a_simpleitk_fixture_keeps_its_points() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metaimage/short_oblique_aniso_zraw.mhd");
    let original = metaimage::read(&fixture).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copy.mhd");
    metaimage::write(&path, &original).unwrap();
    let copy = metaimage::read(&path).unwrap();
    assert_eq!(copy.data, original.data);
    assert!(copy.geometry.agrees_with(&original.geometry, original.shape, 1e-9));
    let header = std::fs::read_to_string(&path).unwrap();
    // The same lines SimpleITK wrote for this image (ITK prints 17 significant digits, we print the
    // shortest round-trip form; both parse to the same numbers).
    assert!(header.contains("AnatomicalOrientation = RAI\n"), "{header}");
    assert!(header.contains("ElementDataFile = copy.zraw\n"), "{header}");
    assert!(header.contains("CenterOfRotation = 0 0 0\n"), "{header}");
}

#[test]
fn data_file_names_may_contain_spaces() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub 01 T2.mhd");
    let volume = AnyVolume {
        shape: [2, 2, 2],
        data: VoxelData::U16(vec![1, 2, 3, 4, 5, 6, 7, 8]),
        geometry: Geometry::default(),
    };
    metaimage::write_with_options(&path, &volume, &WriteOptions { compress: false }).unwrap();
    assert_eq!(files_in(dir.path()), vec!["sub 01 T2.mhd", "sub 01 T2.raw"]);
    assert_eq!(metaimage::read(&path).unwrap(), volume);
}
