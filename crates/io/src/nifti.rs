//! NIfTI-1 single-file images (`.nii`, `.nii.gz`), interpreted as nibabel does.
//!
//! # Reading
//! - The 348-byte header may be little- or big-endian (detected from `sizeof_hdr`); the magic
//!   must be `n+1`. NIfTI-2 and header/image pairs (`ni1`) are refused as unsupported.
//! - Only 3D volumes are read; a 4th (or higher) dimension is accepted when it is 1.
//! - Voxel data starts at `vox_offset` (at least 352) and may be followed by anything.
//! - Compression is recognised by the gzip magic bytes or a `.gz` name, so a mis-named file still
//!   reads. Concatenated gzip members are read as one stream (as `gzip -d` does).
//! - **Scaling.** As nibabel's `get_slope_inter`: `scl_slope` of 0 or non-finite means no scaling;
//!   a finite slope with a non-finite `scl_inter` is an invalid header; `(1, 0)` keeps the stored
//!   data type. Any other scaling is computed in `f64` and stored as `F64` when the stored type is
//!   `float64`, `int32` or `uint32` (where `f32` would lose integer precision), else as `F32`.
//!   nibabel always returns `float64` for scaled data; only the storage type differs.
//! - **Affine.** As nibabel's `get_best_affine` after its load-time header fixes: the sform when
//!   `sform_code != 0`, else the qform when `qform_code != 0`, else the fallback affine of
//!   `shape_zoom_affine` (x flipped, origin at the volume centre). Codes outside 0..=5 count as 0,
//!   `qfac` (`pixdim[0]`) other than -1 counts as 1, and zero or negative `pixdim[1..=3]` become 1 or
//!   their absolute value, as nibabel's `check_fix` does. NaN spacing stays NaN and is then refused
//!   with [`IoError::InvalidGeometry`], as is a singular affine.
//!
//! # Writing
//! Little-endian, `vox_offset` 352 (four zero extension bytes), `scl_slope` 1 and `scl_inter` 0,
//! `xyzt_units` 2 (mm). The sform holds the affine exactly (to `f32`); the qform holds the nearest
//! rotation of the direction matrix (polar decomposition, as nibabel's `set_qform`), with `qfac`
//! -1 for a negative determinant. Both codes are 1 ("scanner"): nibabel then reads the sform, and
//! ITK (SimpleITK, 3D Slicer) reads the sform too when it is orthonormal, the qform otherwise, so
//! all three agree on every voxel's position whenever the direction matrix is orthogonal. Code 2
//! ("aligned") for the sform makes some ITK versions prefer the qform, which is why it is not used.
//! `.nii.gz` is written with gzip level 1 (nibabel's `compresslevel`).

use crate::atomic::write_atomically;
use crate::error::{IoError, Result};
use crate::geometry::{det3, inverse3, Affine, Geometry, Mat3};
use crate::volume::{AnyVolume, DataType, VoxelData};
use std::io::{Read, Write};
use std::path::Path;

/// Size of the NIfTI-1 header proper.
const HEADER_SIZE: usize = 348;
/// Header plus the 4-byte extension flag: where voxel data starts in files spineseg writes.
const DATA_OFFSET: usize = 352;
/// nibabel's `quaternion_threshold`: `w^2` below this (in magnitude) is taken as 0.
const QUATERNION_THRESHOLD: f64 = 3.0 * f32::EPSILON as f64;

/// Byte offsets of the header fields spineseg reads or writes (NIfTI-1 standard layout).
mod field {
    pub const SIZEOF_HDR: usize = 0;
    pub const REGULAR: usize = 38;
    pub const DIM: usize = 40;
    pub const DATATYPE: usize = 70;
    pub const BITPIX: usize = 72;
    pub const PIXDIM: usize = 76;
    pub const VOX_OFFSET: usize = 108;
    pub const SCL_SLOPE: usize = 112;
    pub const SCL_INTER: usize = 116;
    pub const XYZT_UNITS: usize = 123;
    pub const DESCRIP: usize = 148;
    pub const QFORM_CODE: usize = 252;
    pub const SFORM_CODE: usize = 254;
    pub const QUATERN_B: usize = 256;
    pub const QOFFSET_X: usize = 268;
    pub const SROW_X: usize = 280;
    pub const MAGIC: usize = 344;
}

/// The NIfTI `datatype` code of a stored type.
fn datatype_code(data_type: DataType) -> i16 {
    match data_type {
        DataType::U8 => 2,
        DataType::I16 => 4,
        DataType::I32 => 8,
        DataType::F32 => 16,
        DataType::F64 => 64,
        DataType::I8 => 256,
        DataType::U16 => 512,
        DataType::U32 => 768,
    }
}

fn data_type_from_code(code: i16) -> std::result::Result<DataType, String> {
    Ok(match code {
        2 => DataType::U8,
        4 => DataType::I16,
        8 => DataType::I32,
        16 => DataType::F32,
        64 => DataType::F64,
        256 => DataType::I8,
        512 => DataType::U16,
        768 => DataType::U32,
        other => {
            let name = match other {
                0 => "none/unknown",
                1 => "binary",
                32 => "complex64",
                128 => "RGB24",
                1024 => "int64",
                1280 => "uint64",
                1536 => "float128",
                1792 => "complex128",
                2048 => "complex256",
                2304 => "RGBA32",
                _ => "not a NIfTI-1 data type",
            };
            return Err(format!(
                "data type {other} ({name}); spineseg reads uint8, int8, int16, uint16, int32, uint32, \
                 float32 and float64"
            ));
        }
    })
}

/// The header fields spineseg interprets, in native numbers.
#[derive(Debug, Clone)]
struct Header {
    little_endian: bool,
    dim: [i16; 8],
    datatype: i16,
    pixdim: [f32; 8],
    vox_offset: f32,
    scl_slope: f32,
    scl_inter: f32,
    qform_code: i16,
    sform_code: i16,
    quatern_bcd: [f32; 3],
    qoffset: [f32; 3],
    srow: [[f32; 4]; 3],
}

/// Reads fixed-size numbers from a header in its byte order.
struct Fields<'a> {
    bytes: &'a [u8],
    little_endian: bool,
}

impl Fields<'_> {
    fn array<const N: usize>(&self, at: usize) -> [u8; N] {
        self.bytes[at..at + N].try_into().expect("header slice should have N bytes")
    }
    fn i16(&self, at: usize) -> i16 {
        let b = self.array::<2>(at);
        if self.little_endian {
            i16::from_le_bytes(b)
        } else {
            i16::from_be_bytes(b)
        }
    }
    fn f32(&self, at: usize) -> f32 {
        let b = self.array::<4>(at);
        if self.little_endian {
            f32::from_le_bytes(b)
        } else {
            f32::from_be_bytes(b)
        }
    }
    fn i16s<const N: usize>(&self, at: usize) -> [i16; N] {
        std::array::from_fn(|n| self.i16(at + 2 * n))
    }
    fn f32s<const N: usize>(&self, at: usize) -> [f32; N] {
        std::array::from_fn(|n| self.f32(at + 4 * n))
    }
}

impl Header {
    /// Parses and checks the fixed header; `bytes` is the whole (decompressed) file.
    fn parse(path: &Path, bytes: &[u8]) -> Result<Header> {
        let invalid = |detail: String| IoError::InvalidHeader { path: path.to_path_buf(), detail };
        let unsupported = |detail: String| IoError::Unsupported { path: path.to_path_buf(), detail };
        if bytes.len() < HEADER_SIZE {
            return Err(IoError::Truncated {
                path: path.to_path_buf(),
                detail: format!("the NIfTI-1 header needs {HEADER_SIZE} bytes but the file holds only {}", bytes.len()),
            });
        }
        let sizeof_hdr: [u8; 4] = bytes[field::SIZEOF_HDR..4].try_into().expect("4 bytes");
        let little_endian = match (i32::from_le_bytes(sizeof_hdr), i32::from_be_bytes(sizeof_hdr)) {
            (348, _) => true,
            (_, 348) => false,
            (540, _) | (_, 540) => {
                return Err(unsupported(
                    "NIfTI-2 files (sizeof_hdr 540) are not supported; \
                                        convert to NIfTI-1"
                        .into(),
                ))
            }
            (le, _) => return Err(invalid(format!("not a NIfTI-1 file: sizeof_hdr is {le}, expected 348"))),
        };
        let magic = &bytes[field::MAGIC..field::MAGIC + 4];
        match magic {
            b"n+1\0" => {}
            b"ni1\0" => {
                return Err(unsupported(
                    "NIfTI-1 header/image pairs (magic \"ni1\", .hdr + .img) are not supported; \
                     use a single .nii file"
                        .into(),
                ))
            }
            other => {
                return Err(invalid(format!(
                    "not a NIfTI-1 file: magic is {:?}, expected \"n+1\"",
                    String::from_utf8_lossy(other)
                )))
            }
        }
        let f = Fields { bytes, little_endian };
        let srow = [0, 1, 2].map(|r| f.f32s::<4>(field::SROW_X + 16 * r));
        Ok(Header {
            little_endian,
            dim: f.i16s(field::DIM),
            datatype: f.i16(field::DATATYPE),
            pixdim: f.f32s(field::PIXDIM),
            vox_offset: f.f32(field::VOX_OFFSET),
            scl_slope: f.f32(field::SCL_SLOPE),
            scl_inter: f.f32(field::SCL_INTER),
            qform_code: f.i16(field::QFORM_CODE),
            sform_code: f.i16(field::SFORM_CODE),
            quatern_bcd: f.f32s(field::QUATERN_B),
            qoffset: f.f32s(field::QOFFSET_X),
            srow,
        })
    }

    /// The 3D shape; singleton dimensions beyond the third are dropped.
    fn shape(&self, path: &Path) -> Result<[usize; 3]> {
        let ndim = self.dim[0];
        let dims_text = || {
            if (1..=7).contains(&ndim) {
                format!("{:?}", &self.dim[1..=ndim as usize])
            } else {
                format!("dim[0] = {ndim}")
            }
        };
        let unsupported = || IoError::Unsupported {
            path: path.to_path_buf(),
            detail: format!("expected a 3D volume, got dims {}", dims_text()),
        };
        if !(1..=7).contains(&ndim) {
            return Err(IoError::InvalidHeader {
                path: path.to_path_buf(),
                detail: format!("dim[0] is {ndim}, expected 1 to 7"),
            });
        }
        let ndim = ndim as usize;
        if ndim < 3 || self.dim[1..=ndim].iter().any(|&d| d <= 0) || self.dim[4..=ndim.max(3)].iter().any(|&d| d != 1) {
            return Err(unsupported());
        }
        Ok([self.dim[1] as usize, self.dim[2] as usize, self.dim[3] as usize])
    }

    /// `pixdim[1..=3]` after nibabel's load-time fix (0 -> 1, negative -> absolute value).
    fn zooms(&self) -> [f64; 3] {
        [1, 2, 3].map(|a| {
            let z = self.pixdim[a] as f64;
            if z == 0.0 {
                1.0
            } else {
                z.abs()
            }
        })
    }

    /// nibabel's `get_best_affine`, after its header fixes.
    fn best_affine(&self, shape: [usize; 3]) -> Affine {
        // nibabel's check_fix resets codes it does not know to 0.
        let known = |code: i16| if (0..=5).contains(&code) { code } else { 0 };
        if known(self.sform_code) != 0 {
            let mut a = identity4();
            for (row, srow) in self.srow.iter().enumerate() {
                for col in 0..4 {
                    a[row][col] = srow[col] as f64;
                }
            }
            a
        } else if known(self.qform_code) != 0 {
            let [b, c, d] = self.quatern_bcd.map(|v| v as f64);
            let rotation = quaternion_to_matrix(fill_quaternion(b, c, d));
            let mut zooms = self.zooms();
            let qfac = if self.pixdim[0] == -1.0 { -1.0 } else { 1.0 };
            zooms[2] *= qfac;
            let mut a = identity4();
            for row in 0..3 {
                for col in 0..3 {
                    a[row][col] = rotation[row][col] * zooms[col];
                }
                a[row][3] = self.qoffset[row] as f64;
            }
            a
        } else {
            // shape_zoom_affine(shape, zooms, x_flip=True): origin at the centre of the volume.
            let mut zooms = self.zooms();
            zooms[0] = -zooms[0];
            let mut a = identity4();
            for axis in 0..3 {
                a[axis][axis] = zooms[axis];
                a[axis][3] = -((shape[axis] as f64 - 1.0) / 2.0) * zooms[axis];
            }
            a
        }
    }

    /// `(slope, inter)` to apply, or `None` when the data is used as stored.
    fn scaling(&self, path: &Path) -> Result<Option<(f64, f64)>> {
        let slope = self.scl_slope as f64;
        let inter = self.scl_inter as f64;
        if slope == 0.0 || !slope.is_finite() {
            return Ok(None);
        }
        if !inter.is_finite() {
            return Err(IoError::InvalidHeader {
                path: path.to_path_buf(),
                detail: format!("scl_slope is {slope} but scl_inter is {inter}"),
            });
        }
        Ok((slope != 1.0 || inter != 0.0).then_some((slope, inter)))
    }
}

fn identity4() -> Affine {
    let mut a = [[0.0; 4]; 4];
    for (n, row) in a.iter_mut().enumerate() {
        row[n] = 1.0;
    }
    a
}

/// nibabel's `fillpositive`: the unit quaternion `[w, b, c, d]` with `w >= 0`. Where
/// `b^2 + c^2 + d^2` exceeds 1 beyond float noise nibabel raises; spineseg clamps `w` to 0 (as
/// niftilib does) and lets [`quaternion_to_matrix`] normalise.
fn fill_quaternion(b: f64, c: f64, d: f64) -> [f64; 4] {
    let w2 = 1.0 - (b * b + c * c + d * d);
    let w = if w2.abs() < QUATERNION_THRESHOLD || w2 < 0.0 { 0.0 } else { w2.sqrt() };
    [w, b, c, d]
}

/// nibabel's `quat2mat`: rotation matrix of a quaternion `[w, x, y, z]` (normalised first).
fn quaternion_to_matrix([w, x, y, z]: [f64; 4]) -> Mat3 {
    let nq = w * w + x * x + y * y + z * z;
    if nq < f64::EPSILON {
        return crate::geometry::IDENTITY3;
    }
    let s = 2.0 / nq;
    let (xs, ys, zs) = (x * s, y * s, z * s);
    let (wx, wy, wz) = (w * xs, w * ys, w * zs);
    let (xx, xy, xz) = (x * xs, x * ys, x * zs);
    let (yy, yz, zz) = (y * ys, y * zs, z * zs);
    [[1.0 - (yy + zz), xy - wz, xz + wy], [xy + wz, 1.0 - (xx + zz), yz - wx], [xz - wy, yz + wx, 1.0 - (xx + yy)]]
}

/// Quaternion `[w, x, y, z]` with `w >= 0` of a rotation matrix (Shepperd's method: divide by
/// the largest of the four candidate components, so it is stable near 180 degree turns).
fn matrix_to_quaternion(m: &Mat3) -> [f64; 4] {
    let trace = m[0][0] + m[1][1] + m[2][2];
    let q = if trace > m[0][0].max(m[1][1]).max(m[2][2]) {
        let s = 2.0 * (1.0 + trace).sqrt();
        [s / 4.0, (m[2][1] - m[1][2]) / s, (m[0][2] - m[2][0]) / s, (m[1][0] - m[0][1]) / s]
    } else if m[0][0] >= m[1][1] && m[0][0] >= m[2][2] {
        let s = 2.0 * (1.0 + m[0][0] - m[1][1] - m[2][2]).sqrt();
        [(m[2][1] - m[1][2]) / s, s / 4.0, (m[0][1] + m[1][0]) / s, (m[0][2] + m[2][0]) / s]
    } else if m[1][1] >= m[2][2] {
        let s = 2.0 * (1.0 + m[1][1] - m[0][0] - m[2][2]).sqrt();
        [(m[0][2] - m[2][0]) / s, (m[0][1] + m[1][0]) / s, s / 4.0, (m[1][2] + m[2][1]) / s]
    } else {
        let s = 2.0 * (1.0 + m[2][2] - m[0][0] - m[1][1]).sqrt();
        [(m[1][0] - m[0][1]) / s, (m[0][2] + m[2][0]) / s, (m[1][2] + m[2][1]) / s, s / 4.0]
    };
    let norm = q.iter().map(|v| v * v).sum::<f64>().sqrt();
    let sign = if q[0] < 0.0 { -1.0 } else { 1.0 };
    q.map(|v| sign * v / norm)
}

/// The orthogonal factor of the polar decomposition of a non-singular matrix (the nearest
/// orthogonal matrix, as the SVD `P Q^T` nibabel's `set_qform` uses), by Newton iteration
/// `X <- (X + X^-T) / 2`, which converges quadratically.
fn nearest_orthogonal(m: &Mat3) -> Mat3 {
    let mut x = *m;
    for _ in 0..100 {
        let Some(inv) = inverse3(&x) else { return x };
        let mut next = x;
        let mut change: f64 = 0.0;
        for r in 0..3 {
            for c in 0..3 {
                next[r][c] = 0.5 * (x[r][c] + inv[c][r]);
                change = change.max((next[r][c] - x[r][c]).abs());
            }
        }
        x = next;
        if change < 1e-15 {
            break;
        }
    }
    x
}

/// The qform of a geometry: `(quaternion [w, b, c, d], qfac)`, as nibabel's `set_qform` with
/// `strip_shears=True`.
fn qform_of(direction: &Mat3) -> ([f64; 4], f64) {
    let mut r = *direction;
    let qfac = if det3(&r) > 0.0 { 1.0 } else { -1.0 };
    if qfac < 0.0 {
        for row in r.iter_mut() {
            row[2] = -row[2];
        }
    }
    (matrix_to_quaternion(&nearest_orthogonal(&r)), qfac)
}

/// True when the name or the first bytes say gzip.
fn is_gzip(path: &Path, bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b]) || path.to_string_lossy().to_lowercase().ends_with(".gz")
}

/// Decompresses a (possibly multi-member) gzip file, but only as far as its NIfTI header
/// announces: first the header, then the voxel data it declares, after checking that against
/// `max_bytes`. A stream that inflates beyond that (a gzip bomb, or trailing data) is never
/// decompressed further; one that ends early is reported truncated by the caller's size check.
fn gunzip_announced(path: &Path, compressed: &[u8], max_bytes: u64) -> Result<Vec<u8>> {
    let mut decoder = flate2::read::MultiGzDecoder::new(compressed);
    let gzip_error = |e: std::io::Error, got: usize| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => IoError::Truncated {
            path: path.to_path_buf(),
            detail: format!("gzip stream ends early ({got} bytes decompressed): {e}"),
        },
        _ => IoError::Decompress { path: path.to_path_buf(), detail: format!("gzip: {e}") },
    };
    let mut out = Vec::with_capacity(DATA_OFFSET);
    (&mut decoder).take(DATA_OFFSET as u64).read_to_end(&mut out).map_err(|e| gzip_error(e, 0))?;
    let total = announced_bytes(path, &out, max_bytes)?;
    let rest = total.saturating_sub(out.len());
    // Grow with the data actually inflated: a short stream announcing 2 GiB allocates little.
    out.reserve(rest.min(INITIAL_CAPACITY));
    let got = out.len();
    (&mut decoder).take(rest as u64).read_to_end(&mut out).map_err(|e| gzip_error(e, got))?;
    // Read on, without keeping anything, so the gzip CRC of a normal file (whose stream ends
    // with its data) is checked and a corrupt stream is reported as such; trailing data beyond
    // MAX_TRAILING_BYTES is not inflated.
    let got = out.len();
    std::io::copy(&mut (&mut decoder).take(MAX_TRAILING_BYTES), &mut std::io::sink()).map_err(|e| gzip_error(e, got))?;
    Ok(out)
}

/// The most memory reserved up front for announced (not yet inflated) data.
const INITIAL_CAPACITY: usize = 64 << 20;

/// How much data after the announced volume a `.nii.gz` stream may inflate to (discarded) while
/// its checksum is verified.
const MAX_TRAILING_BYTES: u64 = 16 << 20;

/// Bytes a NIfTI file must hold for its header's volume (offset + voxels x type size), checked
/// against `max_bytes` (the voxel part); a header too short or invalid to tell gives 0, and the
/// full parse then reports what is wrong.
fn announced_bytes(path: &Path, bytes: &[u8], max_bytes: u64) -> Result<usize> {
    let Ok(header) = Header::parse(path, bytes) else { return Ok(0) };
    let (Ok(shape), Ok(data_type)) = (header.shape(path), data_type_from_code(header.datatype)) else { return Ok(0) };
    let voxel_bytes = shape.iter().map(|&d| d as u128).product::<u128>() * data_type.size_bytes() as u128;
    if voxel_bytes > max_bytes as u128 {
        return Err(IoError::TooLarge {
            path: path.to_path_buf(),
            what: format!("{shape:?} voxels of {data_type}"),
            bytes: voxel_bytes,
            limit: max_bytes,
        });
    }
    let offset = if header.vox_offset.is_finite() && header.vox_offset >= 0.0 { header.vox_offset as usize } else { 0 };
    Ok(offset.saturating_add(voxel_bytes as usize))
}

/// Reads a `.nii` or `.nii.gz` file, keeping its stored data type unless scaling applies (see
/// the module docs).
///
/// A header announcing more voxel data than [`crate::limits::max_volume_bytes`] is refused
/// before anything that large is allocated or decompressed.
pub fn read(path: &Path) -> Result<AnyVolume> {
    read_with_limit(path, crate::limits::max_volume_bytes())
}

/// [`read`] with an explicit limit on the announced voxel data, bytes.
pub fn read_with_limit(path: &Path, max_bytes: u64) -> Result<AnyVolume> {
    let raw = std::fs::read(path).map_err(|source| IoError::Os { path: path.to_path_buf(), source })?;
    // A DICOM file named .nii or .nii.gz would otherwise be reported as a bad sizeof_hdr or as
    // corrupt gzip data, which sends the user looking for the wrong problem.
    let nifti_size = raw.get(..4).is_some_and(|b| matches!(b, [92, 1, 0, 0] | [0, 0, 1, 92]));
    if !nifti_size && !raw.starts_with(&[0x1f, 0x8b]) && crate::looks_like_dicom(&raw) {
        return Err(IoError::InvalidHeader {
            path: path.to_path_buf(),
            detail: format!(
                "not a NIfTI-1 file: it looks like a DICOM file (\"DICM\" at byte 128); {}",
                crate::DICOM_ADVICE
            ),
        });
    }
    let bytes = if is_gzip(path, &raw) {
        gunzip_announced(path, &raw, max_bytes)?
    } else {
        announced_bytes(path, &raw, max_bytes)?;
        raw
    };
    let header = Header::parse(path, &bytes)?;
    let shape = header.shape(path)?;
    let data_type = data_type_from_code(header.datatype)
        .map_err(|detail| IoError::Unsupported { path: path.to_path_buf(), detail })?;
    // bitpix is not checked: nibabel ignores it and reads by datatype.
    let scaling = header.scaling(path)?;
    let geometry = Geometry::from_affine(&header.best_affine(shape)).map_err(|e| e.at(path))?;

    let offset = header.vox_offset;
    if !(offset.is_finite() && offset >= DATA_OFFSET as f32) {
        return Err(IoError::InvalidHeader {
            path: path.to_path_buf(),
            detail: format!("vox_offset is {offset}, expected at least {DATA_OFFSET} for a single-file NIfTI-1"),
        });
    }
    let offset = offset as usize;
    let voxels = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    let needed = voxels.and_then(|n| n.checked_mul(data_type.size_bytes()));
    let available = bytes.len().saturating_sub(offset);
    let needed = match needed {
        Some(n) if n <= available => n,
        _ => {
            return Err(IoError::Truncated {
                path: path.to_path_buf(),
                detail: format!(
                    "the header announces {shape:?} voxels of {data_type} = {} bytes from offset {offset}, \
                     but only {available} bytes follow",
                    needed.map_or_else(|| "too many".to_string(), |n| n.to_string()),
                ),
            })
        }
    };
    let stored = VoxelData::from_bytes(data_type, &bytes[offset..offset + needed], header.little_endian);
    drop(bytes);
    let data = match scaling {
        None => stored,
        Some((slope, inter)) => apply_scaling(&stored, slope, inter),
    };
    Ok(AnyVolume { shape, data, geometry })
}

/// `stored * slope + inter`, computed in `f64`; `F64` where `f32` would lose precision.
fn apply_scaling(stored: &VoxelData, slope: f64, inter: f64) -> VoxelData {
    macro_rules! scale {
        ($values:expr, $t:ty) => {
            $values.iter().map(|&x| (x as f64 * slope + inter) as $t).collect()
        };
    }
    match stored {
        VoxelData::F64(v) => VoxelData::F64(scale!(v, f64)),
        VoxelData::I32(v) => VoxelData::F64(scale!(v, f64)),
        VoxelData::U32(v) => VoxelData::F64(scale!(v, f64)),
        VoxelData::U8(v) => VoxelData::F32(scale!(v, f32)),
        VoxelData::I8(v) => VoxelData::F32(scale!(v, f32)),
        VoxelData::U16(v) => VoxelData::F32(scale!(v, f32)),
        VoxelData::I16(v) => VoxelData::F32(scale!(v, f32)),
        VoxelData::F32(v) => VoxelData::F32(scale!(v, f32)),
    }
}

/// The 352 bytes (header plus empty extension flag) spineseg writes before the voxel data.
fn header_bytes(path: &Path, volume: &AnyVolume) -> Result<Vec<u8>> {
    let mut dim = [1i16; 8];
    dim[0] = 3;
    for axis in 0..3 {
        dim[axis + 1] =
            i16::try_from(volume.shape[axis]).ok().filter(|&d| d > 0).ok_or_else(|| IoError::Unsupported {
                path: path.to_path_buf(),
                detail: format!("shape {:?} does not fit NIfTI-1 (each size must be 1..=32767)", volume.shape),
            })?;
    }
    let geometry = &volume.geometry;
    let spacing = geometry.spacing.mm();
    let affine = geometry.affine();
    let (quaternion, qfac) = qform_of(&geometry.direction);
    let data_type = volume.data_type();

    let mut h = vec![0u8; DATA_OFFSET];
    let mut put = |at: usize, bytes: &[u8]| h[at..at + bytes.len()].copy_from_slice(bytes);
    put(field::SIZEOF_HDR, &(HEADER_SIZE as i32).to_le_bytes());
    put(field::REGULAR, b"r");
    for (n, d) in dim.iter().enumerate() {
        put(field::DIM + 2 * n, &d.to_le_bytes());
    }
    put(field::DATATYPE, &datatype_code(data_type).to_le_bytes());
    put(field::BITPIX, &((data_type.size_bytes() * 8) as i16).to_le_bytes());
    let pixdim = [qfac, spacing[0], spacing[1], spacing[2], 1.0, 1.0, 1.0, 1.0];
    for (n, p) in pixdim.iter().enumerate() {
        put(field::PIXDIM + 4 * n, &(*p as f32).to_le_bytes());
    }
    put(field::VOX_OFFSET, &(DATA_OFFSET as f32).to_le_bytes());
    put(field::SCL_SLOPE, &1.0f32.to_le_bytes());
    put(field::SCL_INTER, &0.0f32.to_le_bytes());
    put(field::XYZT_UNITS, &[2]); // NIFTI_UNITS_MM, no time unit
    put(field::DESCRIP, b"spineseg");
    put(field::QFORM_CODE, &1i16.to_le_bytes());
    put(field::SFORM_CODE, &1i16.to_le_bytes());
    for n in 0..3 {
        put(field::QUATERN_B + 4 * n, &(quaternion[n + 1] as f32).to_le_bytes());
        put(field::QOFFSET_X + 4 * n, &(affine[n][3] as f32).to_le_bytes());
    }
    for (row, values) in affine.iter().take(3).enumerate() {
        for (col, value) in values.iter().enumerate() {
            put(field::SROW_X + 16 * row + 4 * col, &(*value as f32).to_le_bytes());
        }
    }
    put(field::MAGIC, b"n+1\0");
    Ok(h)
}

/// Appends the little-endian bytes of every voxel.
fn extend_le_bytes(out: &mut Vec<u8>, data: &VoxelData) {
    macro_rules! each {
        ($v:expr) => {
            for x in $v.iter() {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match data {
        VoxelData::U8(v) => out.extend_from_slice(v),
        VoxelData::I8(v) => each!(v),
        VoxelData::U16(v) => each!(v),
        VoxelData::I16(v) => each!(v),
        VoxelData::U32(v) => each!(v),
        VoxelData::I32(v) => each!(v),
        VoxelData::F32(v) => each!(v),
        VoxelData::F64(v) => each!(v),
    }
}

/// Writes `.nii` or `.nii.gz` (chosen by the name), atomically. Fails without touching `path`
/// when the shape does not match the data or does not fit the format.
pub fn write(path: &Path, volume: &AnyVolume) -> Result<()> {
    let voxels: usize = volume.shape.iter().product();
    if voxels != volume.data.len() {
        return Err(IoError::SizeMismatch {
            path: path.to_path_buf(),
            detail: format!(
                "shape {:?} has {voxels} voxels but the data holds {}; nothing was written",
                volume.shape,
                volume.data.len()
            ),
        });
    }
    let mut buffer = header_bytes(path, volume)?;
    buffer.reserve_exact(voxels * volume.data_type().size_bytes());
    extend_le_bytes(&mut buffer, &volume.data);
    let compress = path.to_string_lossy().to_lowercase().ends_with(".gz");
    write_atomically(path, |out| {
        if compress {
            let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::new(1));
            encoder.write_all(&buffer)?;
            encoder.finish()?.flush()
        } else {
            out.write_all(&buffer)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &Mat3, b: &Mat3, tol: f64) -> bool {
        a.iter().flatten().zip(b.iter().flatten()).all(|(x, y)| (x - y).abs() <= tol)
    }

    #[test]
    fn identity_quaternion_is_identity_matrix() {
        assert!(close(&quaternion_to_matrix(fill_quaternion(0.0, 0.0, 0.0)), &crate::geometry::IDENTITY3, 0.0));
        assert_eq!(matrix_to_quaternion(&crate::geometry::IDENTITY3), [1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn half_turns_about_each_axis() {
        // b = 1: 180 degrees about x, as nibabel's quat2mat([0, 1, 0, 0]) = diag(1, -1, -1).
        let m = quaternion_to_matrix(fill_quaternion(1.0, 0.0, 0.0));
        assert!(close(&m, &[[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]], 1e-15));
        let q = matrix_to_quaternion(&[[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]]);
        assert!(q.iter().zip([0.0, 0.0, 1.0, 0.0]).all(|(a, b)| (a - b).abs() < 1e-15), "{q:?}");
    }

    #[test]
    fn quarter_turn_about_z() {
        let h = 0.5f64.sqrt();
        let m = quaternion_to_matrix([h, 0.0, 0.0, h]);
        assert!(close(&m, &[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], 1e-15));
        let q = matrix_to_quaternion(&m);
        assert!(q.iter().zip([h, 0.0, 0.0, h]).all(|(a, b)| (a - b).abs() < 1e-15), "{q:?}");
    }

    #[test]
    fn oblique_rotation_round_trips_with_positive_w() {
        let (a, b) = (0.3f64, -1.1f64);
        let rx = [[1.0, 0.0, 0.0], [0.0, a.cos(), -a.sin()], [0.0, a.sin(), a.cos()]];
        let rz = [[b.cos(), -b.sin(), 0.0], [b.sin(), b.cos(), 0.0], [0.0, 0.0, 1.0]];
        let mut m = [[0.0; 3]; 3];
        for r in 0..3 {
            for c in 0..3 {
                m[r][c] = (0..3).map(|k| rx[r][k] * rz[k][c]).sum();
            }
        }
        let q = matrix_to_quaternion(&m);
        assert!(q[0] >= 0.0);
        let back = quaternion_to_matrix(fill_quaternion(q[1], q[2], q[3]));
        assert!(close(&back, &m, 1e-12));
    }

    #[test]
    fn negative_determinant_uses_qfac() {
        // LPS-like with the slice axis flipped: det -1.
        let d = [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]];
        let (q, qfac) = qform_of(&d);
        assert_eq!(qfac, -1.0);
        let mut m = quaternion_to_matrix(q);
        for row in m.iter_mut() {
            row[2] *= qfac;
        }
        assert!(close(&m, &d, 1e-15));
    }

    #[test]
    fn nearest_orthogonal_removes_shear() {
        let sheared = [[1.0, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        let r = nearest_orthogonal(&sheared);
        for i in 0..3 {
            for j in 0..3 {
                let dot: f64 = (0..3).map(|k| r[k][i] * r[k][j]).sum();
                assert!((dot - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        assert!((det3(&r) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn overfull_quaternion_is_clamped() {
        // b^2 + c^2 + d^2 slightly above 1 (float32 noise): w = 0 and the matrix stays a rotation.
        let [w, ..] = fill_quaternion(1.0000001, 0.0, 0.0);
        assert_eq!(w, 0.0);
    }
}
