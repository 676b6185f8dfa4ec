//! Write then read back, for every data type, `.nii` and `.nii.gz`, on volumes generated in code.

use spineseg_io::geometry::Affine;
use spineseg_io::{nifti, AnyVolume, DataType, Geometry, VoxelData};
use std::path::Path;

const SHAPE: [usize; 3] = [5, 4, 3];

/// An affine of `direction * diag(spacing)` plus `origin`, rounded to `f32` so that it survives
/// the header's `f32` fields exactly.
fn f32_affine(direction: [[f64; 3]; 3], spacing: [f64; 3], origin: [f64; 3]) -> Affine {
    let mut a = [[0.0; 4]; 4];
    for r in 0..3 {
        for c in 0..3 {
            a[r][c] = (direction[r][c] * spacing[c]) as f32 as f64;
        }
        a[r][3] = origin[r] as f32 as f64;
    }
    a[3][3] = 1.0;
    a
}

fn rotation(ax: f64, az: f64) -> [[f64; 3]; 3] {
    let rx = [[1.0, 0.0, 0.0], [0.0, ax.cos(), -ax.sin()], [0.0, ax.sin(), ax.cos()]];
    let rz = [[az.cos(), -az.sin(), 0.0], [az.sin(), az.cos(), 0.0], [0.0, 0.0, 1.0]];
    let mut m = [[0.0; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            m[r][c] = (0..3).map(|k| rx[r][k] * rz[k][c]).sum();
        }
    }
    m
}

/// Oblique, anisotropic, with a negative determinant (the first voxel axis flipped).
fn oblique_negative_determinant() -> Geometry {
    let mut d = rotation(0.3, -0.7);
    for row in d.iter_mut() {
        row[0] = -row[0];
    }
    Geometry::from_affine(&f32_affine(d, [0.34, 0.34, 4.4], [-41.25, 17.5, 102.0])).unwrap()
}

/// Every stored type, including its extremes (and NaN, infinities and -0 for floats).
fn all_data_types(n: usize) -> Vec<VoxelData> {
    macro_rules! ints {
        ($t:ty, $variant:ident) => {{
            let mut v: Vec<$t> = (0..n).map(|k| (k as i64 * 37 % 100) as $t).collect();
            v[0] = <$t>::MIN;
            v[1] = <$t>::MAX;
            VoxelData::$variant(v)
        }};
    }
    macro_rules! floats {
        ($t:ty, $variant:ident) => {{
            let mut v: Vec<$t> = (0..n).map(|k| k as $t * 0.1 - 3.0).collect();
            v[..6].copy_from_slice(&[<$t>::MIN_POSITIVE, <$t>::MAX, <$t>::NAN, <$t>::INFINITY, -0.0, <$t>::MIN]);
            VoxelData::$variant(v)
        }};
    }
    vec![
        ints!(u8, U8),
        ints!(i8, I8),
        ints!(u16, U16),
        ints!(i16, I16),
        ints!(u32, U32),
        ints!(i32, I32),
        floats!(f32, F32),
        floats!(f64, F64),
    ]
}

fn assert_geometry_eq(a: &Geometry, b: &Geometry, tol: f64, what: &str) {
    let close = |x: f64, y: f64| (x - y).abs() <= tol;
    assert!((0..3).all(|n| close(a.spacing[n], b.spacing[n])), "{what}: spacing {:?} vs {:?}", a.spacing, b.spacing);
    assert!(
        (0..3).all(|n| close(a.origin_mm[n], b.origin_mm[n])),
        "{what}: origin {:?} vs {:?}",
        a.origin_mm,
        b.origin_mm
    );
    assert!(
        a.direction.iter().flatten().zip(b.direction.iter().flatten()).all(|(x, y)| close(*x, *y)),
        "{what}: direction {:?} vs {:?}",
        a.direction,
        b.direction
    );
}

#[test]
fn every_data_type_round_trips_in_nii_and_nii_gz() {
    let dir = tempfile::tempdir().unwrap();
    let geometry = oblique_negative_determinant();
    assert!(spineseg_io::geometry::det3(&geometry.direction) < 0.0);
    for data in all_data_types(SHAPE.iter().product()) {
        for ext in ["nii", "nii.gz"] {
            let path = dir.path().join(format!("v_{}.{ext}", data.data_type()));
            let volume = AnyVolume { shape: SHAPE, data: data.clone(), geometry };
            nifti::write(&path, &volume).unwrap();
            let back = nifti::read(&path).unwrap();
            let what = path.display().to_string();
            assert_eq!(back.shape, SHAPE, "{what}");
            assert_eq!(back.data_type(), data.data_type(), "{what}");
            // Bitwise, so NaN payloads and -0.0 count too.
            assert_eq!(back.data.to_le_bytes(), data.to_le_bytes(), "{what}");
            assert_geometry_eq(&back.geometry, &geometry, 1e-9, &what);
        }
    }
}

#[test]
fn arbitrary_geometry_survives_within_float32_precision() {
    // Not f32-representable: the header's f32 fields keep every voxel within 1e-4 mm.
    let dir = tempfile::tempdir().unwrap();
    let direction = rotation(1.234567, 0.987654);
    let geometry = Geometry::new(
        spineseg_io::Spacing::new([0.3125001, 0.7, 3.3000001]).unwrap(),
        [-123.456789, 98.7654321, -0.000123],
        direction,
    )
    .unwrap();
    let path = dir.path().join("g.nii.gz");
    let volume = AnyVolume { shape: [64, 64, 20], data: VoxelData::U8(vec![1; 64 * 64 * 20]), geometry };
    nifti::write(&path, &volume).unwrap();
    let back = nifti::read(&path).unwrap();
    assert!(back.geometry.agrees_with(&geometry, volume.shape, 1e-4));
}

#[test]
fn written_qform_alone_gives_the_same_geometry() {
    // Zero the sform code so the reader falls back to the quaternion: this checks the qform the
    // writer stores (what ITK reads when the sform is not orthonormal), including qfac -1.
    let dir = tempfile::tempdir().unwrap();
    for geometry in [oblique_negative_determinant(), Geometry::default()] {
        let path = dir.path().join("q.nii");
        let volume = AnyVolume { shape: SHAPE, data: VoxelData::I16(vec![7; 60]), geometry };
        nifti::write(&path, &volume).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[254..256].copy_from_slice(&0i16.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let back = nifti::read(&path).unwrap();
        assert!(back.geometry.agrees_with(&geometry, SHAPE, 1e-4), "{:?} vs {:?}", back.geometry, geometry);
    }
}

#[test]
fn written_header_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.nii");
    let volume =
        AnyVolume { shape: SHAPE, data: VoxelData::F32(vec![0.0; 60]), geometry: oblique_negative_determinant() };
    nifti::write(&path, &volume).unwrap();
    let b = std::fs::read(&path).unwrap();
    let i16_at = |at: usize| i16::from_le_bytes([b[at], b[at + 1]]);
    let f32_at = |at: usize| f32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    assert_eq!(b.len(), 352 + 60 * 4);
    assert_eq!(i32::from_le_bytes(b[0..4].try_into().unwrap()), 348);
    assert_eq!(&b[344..348], b"n+1\0");
    assert_eq!(&b[348..352], &[0, 0, 0, 0], "no extensions");
    assert_eq!((0..8).map(|n| i16_at(40 + 2 * n)).collect::<Vec<_>>(), [3, 5, 4, 3, 1, 1, 1, 1]);
    assert_eq!((i16_at(70), i16_at(72)), (16, 32), "datatype float32, bitpix 32");
    assert_eq!(f32_at(76), -1.0, "qfac for a negative determinant");
    for (n, want) in [0.34f32, 0.34, 4.4].into_iter().enumerate() {
        assert!((f32_at(80 + 4 * n) - want).abs() < 1e-6, "pixdim[{}]", n + 1);
    }
    assert_eq!(f32_at(108), 352.0);
    assert_eq!((f32_at(112), f32_at(116)), (1.0, 0.0));
    assert_eq!(b[123], 2, "xyzt_units: mm");
    assert_eq!((f32_at(124), f32_at(128)), (0.0, 0.0), "cal_max, cal_min");
    assert_eq!((i16_at(252), i16_at(254)), (1, 1), "qform and sform code: scanner");
}

#[test]
fn gz_output_is_gzip_and_smaller_for_smooth_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("z.nii.gz");
    let n = 32 * 32 * 8;
    let volume = AnyVolume {
        shape: [32, 32, 8],
        data: VoxelData::I16((0..n).map(|k| (k / 100) as i16).collect()),
        geometry: Geometry::default(),
    };
    nifti::write(&path, &volume).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
    assert!(bytes.len() < n * 2 / 4);
    assert_eq!(nifti::read(&path).unwrap(), volume);
}

#[test]
fn read_volume_and_write_volume_dispatch_to_nifti() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("case_0000.nii.gz");
    let volume =
        AnyVolume { shape: SHAPE, data: VoxelData::U8((0..60).collect()), geometry: oblique_negative_determinant() };
    spineseg_io::write_volume(&path, &volume).unwrap();
    assert_eq!(spineseg_io::read_volume(&path).unwrap(), volume);
    assert_eq!(spineseg_io::read_labels(&path).unwrap().data()[59], 59);
    assert_eq!(spineseg_io::ImageFormat::from_path(Path::new(&path)).unwrap().extension(), ".nii.gz");
    assert_eq!(volume.data_type(), DataType::U8);
}

#[test]
fn header_extensions_are_skipped_by_vox_offset() {
    // A file with one 16-byte extension (flag 1 at byte 348) and its data at offset 368.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ext.nii");
    let volume =
        AnyVolume { shape: SHAPE, data: VoxelData::I16((0..60).collect()), geometry: oblique_negative_determinant() };
    nifti::write(&path, &volume).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let mut with_extension = bytes[..348].to_vec();
    with_extension.extend_from_slice(&[1, 0, 0, 0]);
    with_extension.extend_from_slice(&16i32.to_le_bytes()); // esize
    with_extension.extend_from_slice(&6i32.to_le_bytes()); // ecode: comment
    with_extension.extend_from_slice(b"hi\0\0\0\0\0\0");
    with_extension[108..112].copy_from_slice(&368f32.to_le_bytes());
    with_extension.extend_from_slice(&bytes[352..]);
    std::fs::write(&path, &with_extension).unwrap();
    assert_eq!(nifti::read(&path).unwrap(), volume);
}
