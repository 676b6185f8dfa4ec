//! MetaImage (ITK's format): `.mha` (header and voxels in one file) and `.mhd` (header only, the
//! voxels in the file named by `ElementDataFile`, usually `.raw` or, zlib-compressed, `.zraw`).
//!
//! # The header
//! Text lines `Key = Value` (spaces around `=` optional); `ElementDataFile` is always the last key,
//! and with `ElementDataFile = LOCAL` the voxels start right after its line. Keys are matched
//! without regard to case. Keys this reader does not need (`Comment`, `CenterOfRotation`,
//! `ElementMin`, ...) are skipped.
//!
//! # World coordinates
//! MetaImage stores ITK's LPS+ world coordinates; [`Geometry`] is RAS+. The reader negates the x
//! and y components of `Offset` and of every direction column, and the writer negates them back,
//! so every voxel keeps its physical point.
//!
//! # `TransformMatrix` element order
//! The nine numbers are the direction *columns* one after the other: numbers 0..3 are the world
//! (LPS) direction of voxel axis `i`, 3..6 of axis `j`, 6..9 of axis `k`. In other words it is the
//! row-major listing of the transpose of the direction matrix `D` (ITK's `GetDirection()`, whose
//! column `c` is axis `c`'s direction). ITK's MetaImageIO fills it as
//! `TransformMatrix[c * 3 + r] = GetDirection(c)[r] = D[r][c]` and reads it back the same way.
//! Checked with SimpleITK 2.5.7: an image with `GetDirection() = (0, 0, 1, 0.6, -0.8, 0, 0.8, 0.6,
//! 0)` (row-major `D`) is written as `TransformMatrix = 0 0.6 0.8 0 -0.8 0.6 1 0 0`, and its voxel
//! `(1, 0, 0)` lies at `Offset + spacing_i * (0, 0.6, 0.8)`. The oblique fixtures in
//! `tests/fixtures/metaimage` (non-symmetric directions) pin this down.

use crate::atomic::write_atomically;
use crate::error::{IoError, Result};
use crate::geometry::{closest_world_axes, Geometry, Mat3, Spacing, IDENTITY3};
use crate::volume::{AnyVolume, DataType, VoxelData};
use std::io::{Read, Write};
use std::path::Path;

/// Headers longer than this are not MetaImage headers (ITK writes about 400 bytes).
const MAX_HEADER_BYTES: usize = 1 << 16;

/// How [`write_with_options`] stores the voxels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// zlib-compress the voxels (`CompressedData = True`); `.mhd` then writes a `.zraw` file.
    pub compress: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions { compress: true }
    }
}

/// Reads a `.mha` or `.mhd` file (and its data file), keeping the stored element type.
///
/// A header announcing more voxel data than [`crate::limits::max_volume_bytes`] is refused
/// before the data file is read or decompressed.
pub fn read(path: &Path) -> Result<AnyVolume> {
    read_with_limit(path, crate::limits::max_volume_bytes())
}

/// [`read`] with an explicit limit on the announced voxel data, bytes.
pub fn read_with_limit(path: &Path, max_bytes: u64) -> Result<AnyVolume> {
    let bytes = std::fs::read(path).map_err(|source| IoError::Os { path: path.to_path_buf(), source })?;
    let (fields, data_start) = split_header(&bytes, path)?;
    let header = Header::parse(&fields, path)?;
    let geometry = header.geometry(path)?;

    let voxels = header.shape.iter().try_fold(1usize, |acc, &n| acc.checked_mul(n));
    let expected = voxels.and_then(|n| n.checked_mul(header.data_type.size_bytes())).ok_or_else(|| {
        IoError::InvalidHeader { path: path.to_path_buf(), detail: format!("DimSize {:?} is too large", header.shape) }
    })?;
    if expected as u64 > max_bytes {
        return Err(IoError::TooLarge {
            path: path.to_path_buf(),
            what: format!("DimSize {:?} of {}", header.shape, header.data_type),
            bytes: expected as u128,
            limit: max_bytes,
        });
    }

    // `source` names the file the voxel bytes come from, which is what size errors must name.
    let (source, file_bytes, start) = match &header.data_file {
        DataFile::Local => (path.to_path_buf(), bytes, data_start),
        DataFile::External(name) => {
            let data_path = path.parent().unwrap_or(Path::new("")).join(name);
            let data = std::fs::read(&data_path).map_err(|source| IoError::Os { path: data_path.clone(), source })?;
            (data_path, data, 0)
        }
    };
    let available = file_bytes.len() - start;
    let stored_len = if header.compressed { header.compressed_size } else { Some(expected) };
    // HeaderSize: bytes to skip before the voxels; -1 means the voxels are the last bytes.
    let start = match header.header_size {
        0 => start,
        -1 => match stored_len {
            Some(len) if len <= available => file_bytes.len() - len,
            Some(len) => return Err(truncated(&source, "voxel data at the end", len, available)),
            None => {
                return Err(IoError::InvalidHeader {
                    path: path.to_path_buf(),
                    detail: "HeaderSize = -1 with compressed data needs CompressedDataSize".into(),
                })
            }
        },
        skip if skip > 0 && (skip as usize) <= available => start + skip as usize,
        skip if skip > 0 => return Err(truncated(&source, "HeaderSize to skip", skip as usize, available)),
        other => {
            return Err(IoError::InvalidHeader {
                path: path.to_path_buf(),
                detail: format!("HeaderSize = {other}; expected -1, 0 or a positive byte count"),
            })
        }
    };
    let stored = &file_bytes[start..];

    let raw: std::borrow::Cow<[u8]> = if header.compressed {
        let compressed = match header.compressed_size {
            Some(len) if len == stored.len() => stored,
            Some(len) if len < stored.len() => {
                return Err(IoError::SizeMismatch {
                    path: source,
                    detail: format!(
                        "{} bytes of compressed voxel data, but CompressedDataSize = {len} ({} bytes too many)",
                        stored.len(),
                        stored.len() - len
                    ),
                })
            }
            Some(len) => {
                return Err(truncated(&source, "compressed voxel data (CompressedDataSize)", len, stored.len()))
            }
            None => stored,
        };
        inflate(compressed, expected, &source, &header)?.into()
    } else if stored.len() < expected {
        return Err(IoError::Truncated {
            path: source,
            detail: format!(
                "{} bytes of voxel data, but DimSize {:?} of {} needs {expected}",
                stored.len(),
                header.shape,
                header.data_type
            ),
        });
    } else if stored.len() > expected {
        return Err(IoError::SizeMismatch {
            path: source,
            detail: format!(
                "{} bytes of voxel data, but DimSize {:?} of {} needs {expected} ({} bytes too many)",
                stored.len(),
                header.shape,
                header.data_type,
                stored.len() - expected
            ),
        });
    } else {
        stored.into()
    };
    let data = VoxelData::from_bytes(header.data_type, &raw, !header.big_endian);
    Ok(AnyVolume { shape: header.shape, data, geometry })
}

/// Writes `volume` with the default options (zlib-compressed voxels).
pub fn write(path: &Path, volume: &AnyVolume) -> Result<()> {
    write_with_options(path, volume, &WriteOptions::default())
}

/// Writes a `.mha` (voxels after the header) or a `.mhd` plus `<stem>.raw` / `<stem>.zraw` beside
/// it. The data file is written first, then the header, each atomically; when the header fails,
/// the new data file is removed again, so a failed write leaves no file.
pub fn write_with_options(path: &Path, volume: &AnyVolume, options: &WriteOptions) -> Result<()> {
    let format = crate::ImageFormat::from_path(path)?;
    if volume.data.len() != volume.shape.iter().product::<usize>() {
        return Err(IoError::SizeMismatch {
            path: path.to_path_buf(),
            detail: format!("shape {:?} but {} voxels", volume.shape, volume.data.len()),
        });
    }
    let mut payload = volume.data.to_le_bytes();
    if options.compress {
        let mut encoder =
            flate2::write::ZlibEncoder::new(Vec::with_capacity(payload.len() / 2), flate2::Compression::fast());
        encoder
            .write_all(&payload)
            .and_then(|()| encoder.finish())
            .map(|compressed| payload = compressed)
            .map_err(|source| IoError::Os { path: path.to_path_buf(), source })?;
    }
    let compressed_size = options.compress.then_some(payload.len());
    match format {
        crate::ImageFormat::Mhd => {
            let stem = crate::ImageFormat::strip_extension(path).expect("a .mhd path has a file name");
            let data_name = format!("{stem}.{}", if options.compress { "zraw" } else { "raw" });
            let data_path = path.with_file_name(&data_name);
            let header = header_text(volume, compressed_size, &data_name);
            write_atomically(&data_path, |w| w.write_all(&payload))?;
            write_atomically(path, |w| w.write_all(header.as_bytes())).inspect_err(|_| {
                let _ = std::fs::remove_file(&data_path);
            })
        }
        crate::ImageFormat::Mha => {
            let header = header_text(volume, compressed_size, "LOCAL");
            write_atomically(path, |w| {
                w.write_all(header.as_bytes())?;
                w.write_all(&payload)
            })
        }
        crate::ImageFormat::Nifti | crate::ImageFormat::NiftiGz => {
            Err(IoError::UnknownFormat { path: path.to_path_buf() })
        }
    }
}

/// The header ITK would write for `volume` (same keys, same order), ending with the
/// `ElementDataFile` line.
fn header_text(volume: &AnyVolume, compressed_size: Option<usize>, data_file: &str) -> String {
    let g = &volume.geometry;
    let direction = ras_lps(&g.direction);
    let origin = [-g.origin_mm[0], -g.origin_mm[1], g.origin_mm[2]];
    // Columns one after the other (see the module docs).
    let transform: Vec<f64> = (0..3).flat_map(|c| (0..3).map(move |r| direction[r][c])).collect();
    let mut h = String::with_capacity(512);
    let mut line = |key: &str, value: String| {
        h.push_str(key);
        h.push_str(" = ");
        h.push_str(&value);
        h.push('\n');
    };
    line("ObjectType", "Image".into());
    line("NDims", "3".into());
    line("BinaryData", "True".into());
    line("BinaryDataByteOrderMSB", "False".into());
    line("CompressedData", if compressed_size.is_some() { "True" } else { "False" }.into());
    if let Some(size) = compressed_size {
        line("CompressedDataSize", size.to_string());
    }
    line("TransformMatrix", numbers(&transform));
    line("Offset", numbers(&origin));
    line("CenterOfRotation", "0 0 0".into());
    line("AnatomicalOrientation", itk_orientation(&direction));
    line("ElementSpacing", numbers(&g.spacing.mm()));
    line("DimSize", volume.shape.map(|n| n.to_string()).join(" "));
    line("ElementType", met_type(volume.data_type()).into());
    line("ElementDataFile", data_file.into());
    h
}

/// Shortest text that parses back to the same `f64` (Rust's `Display`), with `-0` written as `0`.
fn numbers(values: &[f64]) -> String {
    values.iter().map(|v| format!("{}", v + 0.0)).collect::<Vec<_>>().join(" ")
}

/// ITK's `AnatomicalOrientation` for an LPS direction: per voxel axis, the letter of the side the
/// axis comes *from* (identity LPS is `RAI`). Purely informational; readers ignore it.
fn itk_orientation(direction_lps: &Mat3) -> String {
    let (world_axis, flipped) = closest_world_axes(direction_lps);
    // Moving along +x (LPS) goes from Right to Left, so a +x axis is written R.
    let from_positive = ['R', 'A', 'I'];
    let from_negative = ['L', 'P', 'S'];
    (0..3).map(|c| if flipped[c] { from_negative[world_axis[c]] } else { from_positive[world_axis[c]] }).collect()
}

/// Converts a direction between RAS+ and LPS+ (the same operation both ways): negate rows x, y.
fn ras_lps(direction: &Mat3) -> Mat3 {
    let mut out = *direction;
    for row in out.iter_mut().take(2) {
        for v in row.iter_mut() {
            *v = -*v;
        }
    }
    out
}

fn met_type(data_type: DataType) -> &'static str {
    match data_type {
        DataType::U8 => "MET_UCHAR",
        DataType::I8 => "MET_CHAR",
        DataType::U16 => "MET_USHORT",
        DataType::I16 => "MET_SHORT",
        DataType::U32 => "MET_UINT",
        DataType::I32 => "MET_INT",
        DataType::F32 => "MET_FLOAT",
        DataType::F64 => "MET_DOUBLE",
    }
}

fn data_type_of(met: &str) -> Option<DataType> {
    DataType::ALL.into_iter()
    .find(|d| met_type(*d).eq_ignore_ascii_case(met))
}

fn truncated(path: &Path, what: &str, needed: usize, available: usize) -> IoError {
    IoError::Truncated {
        path: path.to_path_buf(),
        detail: format!("the header announces {needed} bytes of {what}, but only {available} follow"),
    }
}

/// Names well-known binary formats by their first bytes, for "not a MetaImage header" errors.
fn recognise_other_format(bytes: &[u8]) -> Option<&'static str> {
    let sizeof_hdr = bytes.get(..4).map(|b| [b[0], b[1], b[2], b[3]]);
    if bytes.starts_with(b"\x89PNG") {
        Some("a PNG image")
    } else if bytes.starts_with(&[0x1f, 0x8b]) {
        Some("gzip data (a .nii.gz?)")
    } else if sizeof_hdr.is_some_and(|b| i32::from_le_bytes(b) == 348 || i32::from_be_bytes(b) == 348)
        || matches!(bytes.get(344..348), Some(b"n+1\0") | Some(b"ni1\0"))
    {
        Some("a NIfTI-1 file")
    } else if crate::looks_like_dicom(bytes) {
        Some("a DICOM file (\"DICM\" at byte 128); spineseg reads NIfTI and MetaImage volumes, not DICOM; convert the series first (e.g. with dcm2niix)")
    } else {
        None
    }
}

/// Decompresses zlib (what ITK writes) or gzip (which MetaIO also accepts) data that must
/// expand to exactly `expected` bytes.
fn inflate(compressed: &[u8], expected: usize, path: &Path, header: &Header) -> Result<Vec<u8>> {
    // Grow with the data actually inflated: a short stream announcing a large volume allocates
    // little.
    let mut out = Vec::with_capacity(expected.min(64 << 20));
    // One byte more than needed is enough to tell "too much data" without inflating all of it.
    let limit = expected as u64 + 1;
    // The bufread decoders consume only the stream, so what is left over is trailing data.
    let (result, left_over) = if compressed.starts_with(&[0x1f, 0x8b]) {
        let mut decoder = flate2::bufread::GzDecoder::new(compressed);
        let result = (&mut decoder).take(limit).read_to_end(&mut out);
        (result, decoder.into_inner().len())
    } else {
        let mut decoder = flate2::bufread::ZlibDecoder::new(compressed);
        let result = (&mut decoder).take(limit).read_to_end(&mut out);
        (result, decoder.into_inner().len())
    };
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(IoError::Truncated {
                path: path.to_path_buf(),
                detail: format!(
                    "compressed voxel data ends early ({} compressed bytes inflate to only {} of {expected} bytes)",
                    compressed.len(),
                    out.len()
                ),
            })
        }
        Err(e) => {
            return Err(IoError::Decompress {
                path: path.to_path_buf(),
                detail: format!("zlib data ({} bytes) does not inflate: {e}", compressed.len()),
            })
        }
        Ok(_) => {}
    }
    if out.len() != expected {
        let got = if out.len() > expected { format!("more than {expected}") } else { out.len().to_string() };
        return Err(IoError::SizeMismatch {
            path: path.to_path_buf(),
            detail: format!(
                "compressed voxel data inflates to {got} bytes, but DimSize {:?} of {} needs {expected}",
                header.shape, header.data_type
            ),
        });
    }
    if left_over > 0 {
        return Err(IoError::SizeMismatch {
            path: path.to_path_buf(),
            detail: format!(
                "{left_over} bytes follow the end of the compressed voxel data ({} bytes in all)",
                compressed.len()
            ),
        });
    }
    Ok(out)
}

/// Splits the header lines into `(key, value)` pairs, up to and including `ElementDataFile`, and
/// returns the offset of the first byte after that line.
fn split_header(bytes: &[u8], path: &Path) -> Result<(Vec<(String, String)>, usize)> {
    let invalid = |detail: String| IoError::InvalidHeader { path: path.to_path_buf(), detail };
    let mut fields = Vec::new();
    let mut pos = 0;
    let mut line_number = 0;
    while pos < bytes.len() {
        if pos > MAX_HEADER_BYTES {
            return Err(invalid(format!("no ElementDataFile line in the first {MAX_HEADER_BYTES} bytes")));
        }
        let end = bytes[pos..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |n| pos + n);
        let raw_line = &bytes[pos..end];
        pos = (end + 1).min(bytes.len());
        line_number += 1;
        let field = std::str::from_utf8(raw_line).ok().and_then(|line| {
            let line = line.trim();
            if line.is_empty() {
                return Some(None);
            }
            let (key, value) = line.split_once('=')?;
            let key = key.trim();
            let valid_key = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            valid_key.then(|| Some((key.to_string(), value.trim().to_string())))
        });
        match field {
            Some(None) => continue,
            Some(Some((key, value))) => {
                let last = key.eq_ignore_ascii_case("ElementDataFile");
                fields.push((key, value));
                if last {
                    return Ok((fields, pos));
                }
            }
            None => {
                let shown: String = String::from_utf8_lossy(&raw_line[..raw_line.len().min(40)])
                    .chars()
                    .map(|c| if c.is_control() || c == '\u{fffd}' { '.' } else { c })
                    .collect();
                return Err(invalid(if fields.is_empty() {
                    let hint =
                        recognise_other_format(bytes).map(|f| format!("; it looks like {f}")).unwrap_or_default();
                    format!("not a MetaImage header: the file does not start with a `Key = Value` line (starts with {shown:?}){hint}")
                } else {
                    format!("line {line_number} is not a `Key = Value` line: {shown:?}")
                }));
            }
        }
    }
    Err(invalid(if fields.is_empty() {
        "not a MetaImage header: no `Key = Value` lines".into()
    } else {
        "the header ends without an ElementDataFile line (it must be the last key)".into()
    }))
}

enum DataFile {
    Local,
    External(String),
}

/// The header fields this reader uses, checked.
struct Header {
    shape: [usize; 3],
    data_type: DataType,
    big_endian: bool,
    compressed: bool,
    compressed_size: Option<usize>,
    header_size: i64,
    spacing: [f64; 3],
    origin_lps: [f64; 3],
    /// Row-major LPS direction matrix (columns are voxel axes).
    direction_lps: Mat3,
    data_file: DataFile,
}

impl Header {
    fn parse(fields: &[(String, String)], path: &Path) -> Result<Header> {
        let invalid = |detail: String| IoError::InvalidHeader { path: path.to_path_buf(), detail };
        let unsupported = |detail: String| IoError::Unsupported { path: path.to_path_buf(), detail };
        // The last occurrence wins, as in MetaIO.
        let get = |names: &[&str]| -> Option<(&str, &str)> {
            names.iter().find_map(|name| {
                fields.iter().rev().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(k, v)| (k.as_str(), v.as_str()))
            })
        };
        let required = |name: &str| {
            get(&[name]).ok_or_else(|| invalid(format!("not a MetaImage header: required key {name} is missing")))
        };
        let boolean = |names: &[&str], default: bool| -> Result<bool> {
            match get(names) {
                None => Ok(default),
                Some((key, value)) => match value.to_ascii_lowercase().as_str() {
                    "true" | "1" => Ok(true),
                    "false" | "0" => Ok(false),
                    _ => Err(invalid(format!("{key} = {value:?}; expected True or False"))),
                },
            }
        };
        let floats = |key: &str, value: &str, count: usize| -> Result<Vec<f64>> {
            let values: Vec<f64> = value
                .split_whitespace()
                .map(|t| t.parse::<f64>())
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| invalid(format!("{key} = {value:?} is not a list of numbers")))?;
            if values.len() != count {
                return Err(invalid(format!("{key} has {} values, expected {count}: {value:?}", values.len())));
            }
            Ok(values)
        };

        if let Some((_, object)) = get(&["ObjectType"]) {
            if !object.eq_ignore_ascii_case("Image") {
                return Err(unsupported(format!("ObjectType = {object}; only Image is read")));
            }
        }
        let (_, ndims) = required("NDims")?;
        let ndims: usize = ndims.parse().map_err(|_| invalid(format!("NDims = {ndims:?} is not a number")))?;
        if ndims != 3 {
            return Err(unsupported(format!("expected a 3D volume, but NDims = {ndims}")));
        }
        let (key, dims) = required("DimSize")?;
        let shape: Vec<usize> = dims
            .split_whitespace()
            .map(|t| t.parse::<usize>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| invalid(format!("{key} = {dims:?} is not a list of whole numbers")))?;
        if shape.len() != 3 || shape.contains(&0) {
            return Err(invalid(format!("{key} = {dims:?}; expected 3 positive sizes")));
        }
        let shape = [shape[0], shape[1], shape[2]];

        let (_, met) = required("ElementType")?;
        let data_type =
            data_type_of(met).ok_or_else(|| unsupported(format!("ElementType {met} (spineseg reads MET_UCHAR, MET_CHAR, MET_USHORT, MET_SHORT, MET_UINT, MET_INT, MET_FLOAT and MET_DOUBLE)")))?;
        if let Some((key, channels)) = get(&["ElementNumberOfChannels"]) {
            if channels != "1" {
                return Err(unsupported(format!("{key} = {channels}; only single-channel images are read")));
            }
        }
        if !boolean(&["BinaryData"], true)? {
            return Err(unsupported("BinaryData = False (voxels stored as text)".into()));
        }
        let big_endian = boolean(&["BinaryDataByteOrderMSB", "ElementByteOrderMSB"], false)?;
        let compressed = boolean(&["CompressedData"], false)?;
        let compressed_size = match get(&["CompressedDataSize"]) {
            Some((key, v)) => {
                Some(v.parse::<usize>().map_err(|_| invalid(format!("{key} = {v:?} is not a byte count")))?)
            }
            None => None,
        }
        .filter(|&n| n > 0);
        let header_size = match get(&["HeaderSize"]) {
            Some((key, v)) => v.parse::<i64>().map_err(|_| invalid(format!("{key} = {v:?} is not a byte count")))?,
            None => 0,
        };
        let spacing = match get(&["ElementSpacing", "ElementSize"]) {
            Some((key, v)) => floats(key, v, 3)?,
            None => vec![1.0; 3],
        };
        let origin = match get(&["Offset", "Origin", "Position"]) {
            Some((key, v)) => floats(key, v, 3)?,
            None => vec![0.0; 3],
        };
        let direction_lps = match get(&["TransformMatrix", "Rotation", "Orientation"]) {
            Some((key, v)) => {
                let m = floats(key, v, 9)?;
                // Column c (voxel axis c) is m[3c..3c+3]; see the module docs.
                let mut d = IDENTITY3;
                for (c, column) in m.chunks_exact(3).enumerate() {
                    for (r, value) in column.iter().enumerate() {
                        d[r][c] = *value;
                    }
                }
                d
            }
            None => IDENTITY3,
        };
        let (_, file) = required("ElementDataFile")?;
        let data_file = if file.eq_ignore_ascii_case("LOCAL") {
            DataFile::Local
        } else if file.split_whitespace().next().is_some_and(|w| w.eq_ignore_ascii_case("LIST")) || file.contains('%') {
            return Err(unsupported(format!(
                "ElementDataFile = {file}: lists of slice files are not read; only LOCAL or one data file"
            )));
        } else {
            DataFile::External(file.to_string())
        };
        Ok(Header {
            shape,
            data_type,
            big_endian,
            compressed,
            compressed_size,
            header_size,
            spacing: [spacing[0], spacing[1], spacing[2]],
            origin_lps: [origin[0], origin[1], origin[2]],
            direction_lps,
            data_file,
        })
    }

    /// The RAS+ geometry (x and y negated).
    fn geometry(&self, path: &Path) -> Result<Geometry> {
        let spacing = Spacing::new(self.spacing).map_err(|e| e.at(path))?;
        let origin = [-self.origin_lps[0], -self.origin_lps[1], self.origin_lps[2]];
        Geometry::new(spacing, origin, ras_lps(&self.direction_lps)).map_err(|e| e.at(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(data: VoxelData, geometry: Geometry) -> AnyVolume {
        AnyVolume { shape: [2, 3, 4], data, geometry }
    }

    #[test]
    fn header_parsing_tolerates_spacing_and_case() {
        let text =
            b"objecttype=Image\nNDims =3\r\nDimSize= 2 3 4\nElementType   =   MET_UCHAR\nElementDataFile = LOCAL\n";
        let (fields, start) = split_header(text, Path::new("x.mha")).unwrap();
        assert_eq!(start, text.len());
        let header = Header::parse(&fields, Path::new("x.mha")).unwrap();
        assert_eq!(header.shape, [2, 3, 4]);
        assert_eq!(header.data_type, DataType::U8);
        assert_eq!(header.direction_lps, IDENTITY3);
    }

    #[test]
    fn transform_matrix_lists_columns() {
        let text = b"NDims = 3\nDimSize = 2 3 4\nElementType = MET_UCHAR\nTransformMatrix = 0 0.6 0.8 0 -0.8 0.6 1 0 0\nElementDataFile = LOCAL\n";
        let (fields, _) = split_header(text, Path::new("x.mha")).unwrap();
        let header = Header::parse(&fields, Path::new("x.mha")).unwrap();
        assert_eq!(header.direction_lps[1][0], 0.6);
        assert_eq!(header.direction_lps[0][2], 1.0);
    }

    #[test]
    fn identity_is_written_as_rai() {
        let g = Geometry::default();
        let text = header_text(&volume(VoxelData::U8(vec![0; 24]), g), None, "LOCAL");
        // RAS identity is LPS diag(-1, -1, 1): axes point to R, A, S and come from L, P, I.
        assert!(text.contains("AnatomicalOrientation = LPI\n"), "{text}");
        assert!(text.contains("TransformMatrix = -1 0 0 0 -1 0 0 0 1\n"), "{text}");
        assert!(text.ends_with("ElementDataFile = LOCAL\n"));
    }

    #[test]
    fn round_trip_in_memory_formats() {
        let dir = tempfile::tempdir().unwrap();
        let g = Geometry::new(
            Spacing::new([0.34, 0.5, 4.4]).unwrap(),
            [1.5, -2.25, 3.0],
            [[0.0, 0.0, 1.0], [0.6, -0.8, 0.0], [0.8, 0.6, 0.0]],
        )
        .unwrap();
        let v = volume(VoxelData::I16((0..24).map(|x| x * 100 - 1000).collect()), g);
        for name in ["a.mha", "b.mhd"] {
            for compress in [false, true] {
                let path = dir.path().join(name);
                write_with_options(&path, &v, &WriteOptions { compress }).unwrap();
                let back = read(&path).unwrap();
                assert_eq!(back.data, v.data);
                assert!(back.geometry.agrees_with(&g, v.shape, 1e-12));
            }
        }
    }
}
