//! Bad MetaImage input, one case each. Bad files are made here by editing good ones, and every
//! error must name the file and the problem.

use spineseg_io::geometry::{Geometry, Spacing};
use spineseg_io::metaimage::{self, WriteOptions};
use spineseg_io::{AnyVolume, IoError, VoxelData};
use std::path::{Path, PathBuf};

const SHAPE: [usize; 3] = [4, 3, 2];

fn good_volume() -> AnyVolume {
    let geometry =
        Geometry::new(Spacing::new([0.5, 0.5, 3.0]).unwrap(), [1.0, 2.0, 3.0], spineseg_io::geometry::IDENTITY3)
            .unwrap();
    AnyVolume { shape: SHAPE, data: VoxelData::I16((0..24).map(|v| v * 37 - 400).collect()), geometry }
}

/// Writes a good file named `name` into `dir` and returns its path.
fn good_file(dir: &Path, name: &str, compress: bool) -> PathBuf {
    let path = dir.join(name);
    metaimage::write_with_options(&path, &good_volume(), &WriteOptions { compress }).unwrap();
    path
}

/// Splits a `.mha` into header text and data bytes.
fn split(path: &Path) -> (String, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let marker = b"ElementDataFile = LOCAL\n";
    let end = bytes.windows(marker.len()).position(|w| w == marker).unwrap() + marker.len();
    (String::from_utf8(bytes[..end].to_vec()).unwrap(), bytes[end..].to_vec())
}

/// Rewrites `path` with the header line for `key` replaced by `line` (or removed when empty).
fn edit_header(path: &Path, key: &str, line: &str) {
    let (header, data) = split(path);
    let mut found = false;
    let mut text = String::new();
    for l in header.lines() {
        if l.starts_with(&format!("{key} =")) {
            found = true;
            if !line.is_empty() {
                text.push_str(line);
                text.push('\n');
            }
        } else {
            text.push_str(l);
            text.push('\n');
        }
    }
    assert!(found, "{key} should be in the header");
    std::fs::write(path, [text.into_bytes(), data].concat()).unwrap();
}

/// Reads `path`, expecting an error whose message names the file and contains every `words`.
fn read_error(path: &Path, words: &[&str]) -> IoError {
    let err = metaimage::read(path).expect_err("reading a bad file should fail");
    let message = err.to_string();
    let name = path.file_name().unwrap().to_string_lossy();
    assert!(message.contains(&*name), "message should name {name}: {message}");
    for word in words {
        assert!(message.contains(word), "message should mention {word:?}: {message}");
    }
    err
}

#[test]
fn truncated_inline_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = good_file(dir.path(), "cut.mha", false);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let err = read_error(&path, &["truncated", "38 bytes", "48"]);
    assert!(matches!(err, IoError::Truncated { .. }), "{err:?}");
}

#[test]
fn png_renamed_to_mha() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scan.mha");
    let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10".to_vec();
    png.extend([0u8; 64]);
    std::fs::write(&path, png).unwrap();
    let err = read_error(&path, &["not a MetaImage header", "looks like a PNG image"]);
    assert!(matches!(err, IoError::InvalidHeader { .. }), "{err:?}");
}

#[test]
fn nifti_renamed_to_mha() {
    // A NIfTI-1 header: sizeof_hdr = 348, dim = [3, 4, 3, 2, ...], magic "n+1\0" at byte 344.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("case_0000.mha");
    let mut nifti = vec![0u8; 352];
    nifti[..4].copy_from_slice(&348i32.to_le_bytes());
    for (n, d) in [3i16, 4, 3, 2, 1, 1, 1, 1].iter().enumerate() {
        nifti[40 + 2 * n..42 + 2 * n].copy_from_slice(&d.to_le_bytes());
    }
    nifti[344..348].copy_from_slice(b"n+1\0");
    nifti.extend(vec![0u8; 48]);
    std::fs::write(&path, nifti).unwrap();
    let err = read_error(&path, &["not a MetaImage header", "looks like a NIfTI-1 file"]);
    assert!(matches!(err, IoError::InvalidHeader { .. }), "{err:?}");
}

#[test]
fn header_without_required_key_or_data_file_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = good_file(dir.path(), "nodims.mha", false);
    edit_header(&path, "DimSize", "");
    read_error(&path, &["invalid header", "DimSize", "missing"]);

    let path = dir.path().join("nodata.mha");
    std::fs::write(&path, "ObjectType = Image\nNDims = 3\nDimSize = 4 3 2\nElementType = MET_SHORT\n").unwrap();
    read_error(&path, &["invalid header", "ElementDataFile"]);
}

#[test]
fn more_data_than_the_header_announces() {
    let dir = tempfile::tempdir().unwrap();
    let path = good_file(dir.path(), "long.mha", false);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend([0u8; 6]);
    std::fs::write(&path, bytes).unwrap();
    let err = read_error(&path, &["size mismatch", "54 bytes", "48", "DimSize [4, 3, 2]"]);
    assert!(matches!(err, IoError::SizeMismatch { .. }), "{err:?}");

    // Compressed: DimSize claims fewer voxels than the zlib stream holds.
    let path = good_file(dir.path(), "dims.mha", true);
    edit_header(&path, "DimSize", "DimSize = 4 3 1");
    let err = read_error(&path, &["size mismatch", "more than 24", "DimSize [4, 3, 1]"]);
    assert!(matches!(err, IoError::SizeMismatch { .. }), "{err:?}");
}

#[test]
fn corrupt_zlib_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = good_file(dir.path(), "zlib.mha", true);
    let (header, mut data) = split(&path);
    // Not a zlib header (compression method 15 is reserved), then garbage.
    for b in data.iter_mut() {
        *b = 0xff;
    }
    std::fs::write(&path, [header.into_bytes(), data].concat()).unwrap();
    let err = read_error(&path, &["corrupt compressed data", "zlib"]);
    assert!(matches!(err, IoError::Decompress { .. }), "{err:?}");
}

#[test]
fn compressed_data_cut_short() {
    let dir = tempfile::tempdir().unwrap();
    let path = good_file(dir.path(), "zcut.mha", true);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
    let err = read_error(&path, &["truncated", "CompressedDataSize", "59 bytes", "only 54"]);
    assert!(matches!(err, IoError::Truncated { .. }), "{err:?}");

    // Without CompressedDataSize the zlib stream itself ends early.
    let path = good_file(dir.path(), "zcut2.mha", true);
    edit_header(&path, "CompressedDataSize", "");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 20]).unwrap();
    let err = read_error(&path, &["truncated", "ends early"]);
    assert!(matches!(err, IoError::Truncated { .. }), "{err:?}");
}

#[test]
fn unsupported_element_types() {
    let dir = tempfile::tempdir().unwrap();
    for met in ["MET_LONG_LONG", "MET_FLOAT_ARRAY", "MET_STRING"] {
        let path = good_file(dir.path(), "type.mha", false);
        edit_header(&path, "ElementType", &format!("ElementType = {met}"));
        let err = read_error(&path, &["unsupported", met]);
        assert!(matches!(err, IoError::Unsupported { .. }), "{err:?}");
    }
    let path = good_file(dir.path(), "rgb.mha", false);
    edit_header(&path, "ElementType", "ElementNumberOfChannels = 3\nElementType = MET_SHORT");
    read_error(&path, &["unsupported", "ElementNumberOfChannels = 3"]);
}

#[test]
fn two_dimensional_image() {
    let dir = tempfile::tempdir().unwrap();
    let path = good_file(dir.path(), "slice.mha", false);
    edit_header(&path, "NDims", "NDims = 2");
    edit_header(&path, "DimSize", "DimSize = 12 2");
    let err = read_error(&path, &["unsupported", "expected a 3D volume", "NDims = 2"]);
    assert!(matches!(err, IoError::Unsupported { .. }), "{err:?}");
}

#[test]
fn four_dimensional_image() {
    let dir = tempfile::tempdir().unwrap();
    let path = good_file(dir.path(), "dwi.mha", false);
    edit_header(&path, "NDims", "NDims = 4");
    edit_header(&path, "DimSize", "DimSize = 4 3 2 1");
    let err = read_error(&path, &["unsupported", "expected a 3D volume", "NDims = 4"]);
    assert!(matches!(err, IoError::Unsupported { .. }), "{err:?}");
}

#[test]
fn nan_spacing() {
    let dir = tempfile::tempdir().unwrap();
    let path = good_file(dir.path(), "nan.mha", false);
    edit_header(&path, "ElementSpacing", "ElementSpacing = 0.5 nan 3");
    let err = read_error(&path, &["invalid geometry", "spacing", "NaN"]);
    assert!(matches!(err, IoError::InvalidGeometry { .. }), "{err:?}");

    edit_header(&path, "ElementSpacing", "ElementSpacing = 0.5 0 3");
    read_error(&path, &["invalid geometry", "spacing"]);
}

#[test]
fn singular_direction() {
    let dir = tempfile::tempdir().unwrap();
    let path = good_file(dir.path(), "flat.mha", false);
    edit_header(&path, "TransformMatrix", "TransformMatrix = 1 0 0 1 0 0 0 0 1");
    let err = read_error(&path, &["invalid geometry", "singular"]);
    assert!(matches!(err, IoError::InvalidGeometry { .. }), "{err:?}");
}

#[test]
fn slice_list_data_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("list.mhd");
    let header = "NDims = 3\nDimSize = 4 3 2\nElementType = MET_SHORT\nElementDataFile = slice_%03d.raw 0 1 1\n";
    std::fs::write(&path, header).unwrap();
    read_error(&path, &["unsupported", "slice_%03d.raw"]);
}

#[test]
fn missing_raw_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = good_file(dir.path(), "case.mhd", false);
    std::fs::remove_file(dir.path().join("case.raw")).unwrap();
    let err = metaimage::read(&path).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, IoError::Os { .. }), "{err:?}");
    assert!(message.contains("case.raw") && message.contains("No such file"), "{message}");
}

#[test]
fn failed_writes_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["missing/out.mhd", "missing/out.mha"] {
        let path = dir.path().join(name);
        let err = metaimage::write(&path, &good_volume()).unwrap_err();
        assert!(err.to_string().contains("missing/out."), "{err}");
        assert!(!dir.path().join("missing").exists());
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // The data file succeeds, the header fails (a folder is in the way): the data file is
    // removed again, and nothing else is left behind.
    std::fs::create_dir(dir.path().join("blocked.mhd")).unwrap();
    let err = metaimage::write(&dir.path().join("blocked.mhd"), &good_volume()).unwrap_err();
    assert!(err.to_string().contains("blocked.mhd"), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("blocked.mhd")]);
}

#[test]
fn a_header_claiming_a_huge_volume_is_refused_before_reading_its_data() {
    // DimSize of 20000^3 float64 (64 TB), compressed data or not: refused from the header.
    let dir = tempfile::tempdir().unwrap();
    for compress in [false, true] {
        let path = good_file(dir.path(), &format!("huge_{compress}.mha"), compress);
        edit_header(&path, "DimSize", "DimSize = 20000 20000 20000");
        edit_header(&path, "ElementType", "ElementType = MET_DOUBLE");
        let err = read_error(&path, &["DimSize [20000, 20000, 20000] of float64", "64000000000000 bytes", "more than the limit"]);
        assert!(matches!(err, IoError::TooLarge { .. }), "{err}");
    }
}

#[test]
fn external_data_file_cut_short_or_too_long() {
    // .mhd + .raw: the error names the .raw, which is the file to fix.
    let dir = tempfile::tempdir().unwrap();
    let path = good_file(dir.path(), "case.mhd", false);
    let raw = dir.path().join("case.raw");
    let bytes = std::fs::read(&raw).unwrap();
    std::fs::write(&raw, &bytes[..bytes.len() - 10]).unwrap();
    let err = metaimage::read(&path).unwrap_err();
    assert!(matches!(err, IoError::Truncated { .. }), "{err:?}");
    assert_eq!(err.path(), raw);
    let message = err.to_string();
    for word in ["case.raw", "truncated", "38 bytes", "DimSize [4, 3, 2]", "48"] {
        assert!(message.contains(word), "message should mention {word:?}: {message}");
    }
    std::fs::write(&raw, [bytes.clone(), vec![0u8; 6]].concat()).unwrap();
    let err = metaimage::read(&path).unwrap_err();
    assert!(matches!(err, IoError::SizeMismatch { .. }), "{err:?}");
    let message = err.to_string();
    for word in ["case.raw", "size mismatch", "54 bytes", "48", "6 bytes too many"] {
        assert!(message.contains(word), "message should mention {word:?}: {message}");
    }

    // .mhd + .zraw, with and without CompressedDataSize: cut short, or with bytes after the
    // compressed stream (which would otherwise be ignored without a word).
    let path = good_file(dir.path(), "z.mhd", true);
    let zraw = dir.path().join("z.zraw");
    let packed = std::fs::read(&zraw).unwrap();
    let header = std::fs::read_to_string(&path).unwrap();
    let without_size: String =
        header.lines().filter(|l| !l.starts_with("CompressedDataSize")).map(|l| format!("{l}\n")).collect();
    let cases: [(&str, Vec<u8>, IoError, &[&str]); 4] = [
        (&header, packed[..packed.len() - 5].to_vec(), truncated_kind(), &["truncated", "CompressedDataSize", "only"]),
        (&without_size, packed[..packed.len() - 20].to_vec(), truncated_kind(), &["truncated", "ends early"]),
        (&header, [packed.clone(), vec![7u8; 9]].concat(), mismatch_kind(), &["size mismatch", "9 bytes"]),
        (&without_size, [packed.clone(), vec![7u8; 9]].concat(), mismatch_kind(), &["size mismatch", "9 bytes"]),
    ];
    for (header, data, kind, words) in cases {
        std::fs::write(&path, header).unwrap();
        std::fs::write(&zraw, &data).unwrap();
        let err = metaimage::read(&path).expect_err("a bad .zraw should not read");
        assert_eq!(std::mem::discriminant(&err), std::mem::discriminant(&kind), "{err:?}");
        assert_eq!(err.path(), zraw);
        let message = err.to_string();
        for word in words.iter().chain(&["z.zraw"]) {
            assert!(message.contains(word), "message should mention {word:?}: {message}");
        }
    }
}

fn truncated_kind() -> IoError {
    IoError::Truncated { path: PathBuf::new(), detail: String::new() }
}

fn mismatch_kind() -> IoError {
    IoError::SizeMismatch { path: PathBuf::new(), detail: String::new() }
}

#[test]
fn zero_or_negative_dim_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = good_file(dir.path(), "dims.mha", false);
    edit_header(&path, "DimSize", "DimSize = 4 0 2");
    let err = read_error(&path, &["invalid header", "DimSize", "\"4 0 2\"", "positive"]);
    assert!(matches!(err, IoError::InvalidHeader { .. }), "{err:?}");
    edit_header(&path, "DimSize", "DimSize = 4 -3 2");
    let err = read_error(&path, &["invalid header", "DimSize", "\"4 -3 2\""]);
    assert!(matches!(err, IoError::InvalidHeader { .. }), "{err:?}");
}

#[test]
fn dicom_named_as_metaimage() {
    let dir = tempfile::tempdir().unwrap();
    let mut dicom = vec![0u8; 128];
    dicom.extend_from_slice(b"DICM");
    dicom.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0, 0xc8, 0, 0, 0]);
    dicom.extend(vec![0u8; 400]);
    for name in ["scan.mha", "scan.mhd"] {
        let path = dir.path().join(name);
        std::fs::write(&path, &dicom).unwrap();
        let err = read_error(&path, &["DICOM"]);
        assert!(matches!(err, IoError::InvalidHeader { .. }), "{err:?}");
    }
    // A DICOM file under its own name is refused by its extension, saying what it is.
    let path = dir.path().join("IM0001.dcm");
    std::fs::write(&path, &dicom).unwrap();
    let err = spineseg_io::read_volume(&path).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("IM0001.dcm") && message.contains("DICOM"), "{message}");
}
