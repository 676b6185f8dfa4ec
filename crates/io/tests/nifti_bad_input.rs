//! Bad NIfTI input, one case per test: each error names the file and the problem. The bad files
//! are made in code by editing the bytes of a good one (offsets from the NIfTI-1 standard).

use spineseg_io::{nifti, AnyVolume, Geometry, IoError, VoxelData};
use std::io::Write;
use std::path::{Path, PathBuf};

const SHAPE: [usize; 3] = [5, 4, 3];

// Header field offsets (NIfTI-1 standard).
const DIM: usize = 40;
const DATATYPE: usize = 70;
const PIXDIM: usize = 76;
const VOX_OFFSET: usize = 108;
const SCL_INTER: usize = 116;
const QFORM_CODE: usize = 252;
const SFORM_CODE: usize = 254;
const SROW_X: usize = 280;
const MAGIC: usize = 344;

fn good_volume() -> AnyVolume {
    AnyVolume { shape: SHAPE, data: VoxelData::I16((0..60).collect()), geometry: Geometry::default() }
}

/// The bytes of a valid `.nii` (uncompressed) holding [`good_volume`].
fn good_bytes() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("good.nii");
    nifti::write(&path, &good_volume()).unwrap();
    std::fs::read(path).unwrap()
}

fn put_i16(bytes: &mut [u8], at: usize, value: i16) {
    bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

fn put_f32(bytes: &mut [u8], at: usize, value: f32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Writes `bytes` under `name` in a fresh folder, reads it, and returns the error and the path.
fn read_bad(name: &str, bytes: &[u8]) -> (IoError, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let err = nifti::read(&path).expect_err("a bad file should not read");
    (err, path, dir)
}

/// Checks that the message names the file and contains every `needle`.
fn assert_message(err: &IoError, path: &Path, needles: &[&str]) {
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "should name the file: {message}");
    assert_eq!(err.path(), path);
    for needle in needles {
        assert!(message.contains(needle), "should mention {needle:?}: {message}");
    }
}

#[test]
fn truncated_header() {
    let (err, path, _dir) = read_bad("short.nii", &good_bytes()[..200]);
    assert!(matches!(err, IoError::Truncated { .. }), "{err:?}");
    assert_message(&err, &path, &["truncated", "348", "200"]);
}

#[test]
fn truncated_data() {
    let bytes = good_bytes();
    let (err, path, _dir) = read_bad("cut.nii", &bytes[..352 + 50]);
    assert!(matches!(err, IoError::Truncated { .. }), "{err:?}");
    // 60 int16 voxels = 120 bytes announced, 50 present.
    assert_message(&err, &path, &["truncated", "120 bytes", "only 50"]);
}

#[test]
fn truncated_gzip_stream() {
    let compressed = gzip(&good_bytes());
    let (err, path, _dir) = read_bad("cut.nii.gz", &compressed[..compressed.len() / 2]);
    assert!(matches!(err, IoError::Truncated { .. }), "{err:?}");
    assert_message(&err, &path, &["truncated", "gzip"]);
}

#[test]
fn wrong_magic() {
    let mut bytes = good_bytes();
    bytes[MAGIC..MAGIC + 4].copy_from_slice(b"abc\0");
    let (err, path, _dir) = read_bad("magic.nii", &bytes);
    assert!(matches!(err, IoError::InvalidHeader { .. }), "{err:?}");
    assert_message(&err, &path, &["not a NIfTI-1 file", "magic", "abc"]);
}

#[test]
fn wrong_sizeof_hdr() {
    let mut bytes = good_bytes();
    bytes[0..4].copy_from_slice(&1234i32.to_le_bytes());
    let (err, path, _dir) = read_bad("size.nii", &bytes);
    assert!(matches!(err, IoError::InvalidHeader { .. }), "{err:?}");
    assert_message(&err, &path, &["not a NIfTI-1 file", "sizeof_hdr is 1234"]);
}

#[test]
fn nifti2_is_unsupported() {
    let mut bytes = good_bytes();
    bytes[0..4].copy_from_slice(&540i32.to_le_bytes());
    let (err, path, _dir) = read_bad("n2.nii", &bytes);
    assert!(matches!(err, IoError::Unsupported { .. }), "{err:?}");
    assert_message(&err, &path, &["NIfTI-2", "not supported"]);
}

#[test]
fn header_image_pair_is_unsupported() {
    let mut bytes = good_bytes();
    bytes[MAGIC..MAGIC + 4].copy_from_slice(b"ni1\0");
    let (err, path, _dir) = read_bad("pair.nii", &bytes);
    assert!(matches!(err, IoError::Unsupported { .. }), "{err:?}");
    assert_message(&err, &path, &["ni1", "not supported"]);
}

#[test]
fn header_data_size_mismatch() {
    // The header says 5 x 4 x 30 voxels; the file holds 5 x 4 x 3.
    let mut bytes = good_bytes();
    put_i16(&mut bytes, DIM + 6, 30);
    let (err, path, _dir) = read_bad("mismatch.nii", &bytes);
    assert!(matches!(err, IoError::Truncated { .. } | IoError::SizeMismatch { .. }), "{err:?}");
    assert_message(&err, &path, &["[5, 4, 30]", "1200 bytes", "only 120"]);
}

#[test]
fn corrupt_gzip() {
    let mut compressed = gzip(&good_bytes());
    // Damage the deflate stream and the CRC: whichever is detected first, it is a decompress error.
    let middle = compressed.len() / 2;
    for b in &mut compressed[middle..middle + 8] {
        *b ^= 0xA5;
    }
    let n = compressed.len();
    compressed[n - 8] ^= 0xFF;
    let (err, path, _dir) = read_bad("corrupt.nii.gz", &compressed);
    assert!(matches!(err, IoError::Decompress { .. }), "{err:?}");
    assert_message(&err, &path, &["corrupt compressed data"]);
}

#[test]
fn not_gzip_despite_the_name() {
    let (err, path, _dir) = read_bad("plain.nii.gz", b"this is not gzip data at all");
    assert!(matches!(err, IoError::Decompress { .. }), "{err:?}");
    assert_message(&err, &path, &["corrupt compressed data", "gzip"]);
}

#[test]
fn unsupported_datatypes() {
    for (code, name) in [(32i16, "complex64"), (128, "RGB24"), (1024, "int64"), (1536, "float128"), (1, "binary")] {
        let mut bytes = good_bytes();
        put_i16(&mut bytes, DATATYPE, code);
        let (err, path, _dir) = read_bad("dtype.nii", &bytes);
        assert!(matches!(err, IoError::Unsupported { .. }), "{err:?}");
        assert_message(&err, &path, &[&format!("data type {code}"), name]);
    }
}

#[test]
fn two_dimensional_data() {
    let mut bytes = good_bytes();
    put_i16(&mut bytes, DIM, 2);
    let (err, path, _dir) = read_bad("slice.nii", &bytes);
    assert!(matches!(err, IoError::Unsupported { .. }), "{err:?}");
    assert_message(&err, &path, &["expected a 3D volume, got dims [5, 4]"]);
}

#[test]
fn real_4d_time_series() {
    let mut bytes = good_bytes();
    put_i16(&mut bytes, DIM, 4);
    put_i16(&mut bytes, DIM + 8, 2);
    let (err, path, _dir) = read_bad("series.nii", &bytes);
    assert!(matches!(err, IoError::Unsupported { .. }), "{err:?}");
    assert_message(&err, &path, &["expected a 3D volume, got dims [5, 4, 3, 2]"]);
}

#[test]
fn zero_and_negative_dims() {
    for bad in [0i16, -4] {
        let mut bytes = good_bytes();
        put_i16(&mut bytes, DIM + 4, bad);
        let (err, path, _dir) = read_bad("zero.nii", &bytes);
        assert!(matches!(err, IoError::Unsupported { .. }), "{err:?}");
        assert_message(&err, &path, &[&format!("got dims [5, {bad}, 3]")]);
    }
}

#[test]
fn nan_spacing_without_xforms() {
    let mut bytes = good_bytes();
    put_i16(&mut bytes, QFORM_CODE, 0);
    put_i16(&mut bytes, SFORM_CODE, 0);
    put_f32(&mut bytes, PIXDIM + 8, f32::NAN);
    let (err, path, _dir) = read_bad("nan_pixdim.nii", &bytes);
    assert!(matches!(err, IoError::InvalidGeometry { .. }), "{err:?}");
    assert_message(&err, &path, &["invalid geometry", "NaN"]);
}

#[test]
fn nan_in_sform() {
    let mut bytes = good_bytes();
    put_f32(&mut bytes, SROW_X, f32::NAN);
    let (err, path, _dir) = read_bad("nan_sform.nii", &bytes);
    assert!(matches!(err, IoError::InvalidGeometry { .. }), "{err:?}");
    assert_message(&err, &path, &["invalid geometry", "NaN"]);
}

#[test]
fn singular_sform() {
    // Columns 0 and 1 parallel: unit length each, but the direction matrix is singular.
    let mut bytes = good_bytes();
    put_f32(&mut bytes, SROW_X + 4, 1.0);
    put_f32(&mut bytes, SROW_X + 16 + 4, 0.0);
    let (err, path, _dir) = read_bad("singular.nii", &bytes);
    assert!(matches!(err, IoError::InvalidGeometry { .. }), "{err:?}");
    assert_message(&err, &path, &["invalid geometry", "singular"]);
}

#[test]
fn vox_offset_inside_the_header() {
    let mut bytes = good_bytes();
    put_f32(&mut bytes, VOX_OFFSET, 100.0);
    let (err, path, _dir) = read_bad("offset.nii", &bytes);
    assert!(matches!(err, IoError::InvalidHeader { .. }), "{err:?}");
    assert_message(&err, &path, &["vox_offset is 100"]);
}

#[test]
fn infinite_intercept_with_valid_slope() {
    let mut bytes = good_bytes();
    put_f32(&mut bytes, SCL_INTER, f32::INFINITY);
    let (err, path, _dir) = read_bad("inter.nii", &bytes);
    assert!(matches!(err, IoError::InvalidHeader { .. }), "{err:?}");
    assert_message(&err, &path, &["scl_inter is inf"]);
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.nii.gz");
    let err = nifti::read(&path).unwrap_err();
    assert!(matches!(err, IoError::Os { .. }), "{err:?}");
    assert_message(&err, &path, &[]);
}

fn folder_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

#[test]
fn write_into_missing_folder_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/folder/out.nii.gz");
    let err = nifti::write(&path, &good_volume()).unwrap_err();
    assert!(matches!(err, IoError::Os { .. }), "{err:?}");
    assert_message(&err, &path, &[]);
    assert!(folder_entries(dir.path()).is_empty());
}

#[test]
fn write_with_inconsistent_shape_leaves_nothing_and_keeps_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["out.nii", "out.nii.gz"] {
        let path = dir.path().join(name);
        let mut bad = good_volume();
        bad.shape = [5, 4, 4];
        let err = nifti::write(&path, &bad).unwrap_err();
        assert!(matches!(err, IoError::SizeMismatch { .. }), "{err:?}");
        assert_message(&err, &path, &["[5, 4, 4]", "80 voxels", "60"]);
        assert!(folder_entries(dir.path()).iter().all(|n| n != name), "{name} should not exist");

        // A failed write over an existing file leaves the old file as it was.
        nifti::write(&path, &good_volume()).unwrap();
        let before = std::fs::read(&path).unwrap();
        assert!(nifti::write(&path, &bad).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }
    assert_eq!(folder_entries(dir.path()).len(), 2, "no temporary files left");
}

#[test]
fn write_of_a_shape_too_large_for_nifti1_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wide.nii");
    let volume =
        AnyVolume { shape: [40_000, 1, 1], data: VoxelData::U8(vec![0; 40_000]), geometry: Geometry::default() };
    let err = nifti::write(&path, &volume).unwrap_err();
    assert!(matches!(err, IoError::Unsupported { .. }), "{err:?}");
    assert_message(&err, &path, &["32767"]);
    assert!(folder_entries(dir.path()).is_empty());
}

#[test]
fn a_header_claiming_a_huge_volume_is_refused_before_allocating() {
    // 30000 x 30000 x 30000 int16 = 54 TB announced by a 412-byte file, plain and gzipped.
    let mut bytes = good_bytes();
    for axis in 0..3 {
        put_i16(&mut bytes, DIM + 2 * (axis + 1), 30000);
    }
    let (err, path, _dir) = read_bad("huge.nii", &bytes);
    assert!(matches!(err, IoError::TooLarge { .. }), "{err}");
    assert_message(&err, &path, &["[30000, 30000, 30000] voxels of int16", "more than the limit", "--max-volume-gib"]);
    let (err, path, _dir) = read_bad("huge.nii.gz", &gzip(&bytes));
    assert!(matches!(err, IoError::TooLarge { .. }), "{err}");
    assert_message(&err, &path, &["54000000000000 bytes"]);
}

#[test]
fn a_gzip_stream_inflating_beyond_its_header_is_not_inflated() {
    // A valid 5 x 4 x 3 header followed by 256 MB of zeros (a 250 kB gzip stream): only the
    // announced 120 bytes of voxel data are kept (and at most 16 MB more inflated, discarded,
    // for the checksum); the volume reads as declared.
    let bytes = good_bytes();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&bytes).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        encoder.write_all(&zeros).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 2 << 20, "{}", bomb.len());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.nii.gz");
    std::fs::write(&path, &bomb).unwrap();
    let volume = nifti::read(&path).unwrap();
    assert_eq!(volume.data, good_volume().data);
    // An explicit, lower limit refuses even the small volume.
    let err = nifti::read_with_limit(&path, 100).unwrap_err();
    assert!(err.to_string().contains("120 bytes of voxel data, more than the limit of 100 bytes"), "{err}");
}

#[test]
fn zero_spacing_in_pixdim_reads_as_one_millimetre_as_nibabel_does() {
    // pixdim[2] = 0 is not refused: nibabel (and so nnU-Net) fixes a zero zoom to 1 at load
    // time, and spineseg reads files as nibabel does. Checked with no transform and with a
    // qform, the two cases where pixdim sets the spacing (an sform carries its own).
    for qform_code in [0, 1] {
        let mut bytes = good_bytes();
        put_i16(&mut bytes, QFORM_CODE, qform_code);
        put_i16(&mut bytes, SFORM_CODE, 0);
        put_f32(&mut bytes, PIXDIM + 4, 0.5);
        put_f32(&mut bytes, PIXDIM + 8, 0.0);
        put_f32(&mut bytes, PIXDIM + 12, 3.0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zero_pixdim.nii");
        std::fs::write(&path, &bytes).unwrap();
        let volume = nifti::read(&path).unwrap();
        assert_eq!(volume.geometry.spacing.mm(), [0.5, 1.0, 3.0], "qform_code {qform_code}");
    }
}

#[test]
fn dicom_named_as_nifti() {
    // A DICOM Part 10 file: a 128-byte preamble, then "DICM" and data elements.
    let mut dicom = vec![0u8; 128];
    dicom.extend_from_slice(b"DICM");
    dicom.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0, 0xc8, 0, 0, 0]);
    dicom.extend(vec![0u8; 400]);
    for name in ["scan.nii", "scan.nii.gz"] {
        let (err, path, _dir) = read_bad(name, &dicom);
        assert!(matches!(err, IoError::InvalidHeader { .. }), "{name}: {err:?}");
        assert_message(&err, &path, &["DICOM", "dcm2niix"]);
    }
}
