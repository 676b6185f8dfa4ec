//! Voxel containers. [`Volume<T>`] is the typed volume the pipeline works with (`f32` intensities,
//! [`Label`] masks); [`AnyVolume`] is what a file holds, in its stored data type, so `info` and
//! `convert` lose nothing.

use crate::error::{IoError, Result};
use crate::geometry::Geometry;
use std::path::Path;

/// Label value type. SPIDER uses values up to 225, so `u8` would do today; `u16` leaves room for
/// ontologies and datasets with larger ids at little cost.
pub type Label = u16;

/// A 3D volume: voxels in `i`-fastest order plus geometry (see [`crate::geometry`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Volume<T> {
    shape: [usize; 3],
    data: Vec<T>,
    pub geometry: Geometry,
}

impl<T> Volume<T> {
    /// Fails (with the given length) when `data.len()` is not the product of `shape`.
    pub fn new(shape: [usize; 3], data: Vec<T>, geometry: Geometry) -> std::result::Result<Self, Vec<T>> {
        if shape.iter().product::<usize>() == data.len() {
            Ok(Volume { shape, data, geometry })
        } else {
            Err(data)
        }
    }
    pub fn filled(shape: [usize; 3], value: T, geometry: Geometry) -> Self
    where
        T: Clone,
    {
        Volume { shape, data: vec![value; shape.iter().product()], geometry }
    }
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    pub fn data(&self) -> &[T] {
        &self.data
    }
    pub fn data_mut(&mut self) -> &mut [T] {
        &mut self.data
    }
    pub fn into_data(self) -> Vec<T> {
        self.data
    }
    /// Flat index of `[i, j, k]` (`i` fastest).
    #[inline]
    pub fn index(&self, [i, j, k]: [usize; 3]) -> usize {
        debug_assert!(i < self.shape[0] && j < self.shape[1] && k < self.shape[2]);
        i + self.shape[0] * (j + self.shape[1] * k)
    }
    #[inline]
    pub fn get(&self, ijk: [usize; 3]) -> &T {
        &self.data[self.index(ijk)]
    }
    #[inline]
    pub fn set(&mut self, ijk: [usize; 3], value: T) {
        let idx = self.index(ijk);
        self.data[idx] = value;
    }
    /// Same shape and geometry, new voxels.
    pub fn map<U>(&self, f: impl FnMut(&T) -> U) -> Volume<U> {
        Volume { shape: self.shape, data: self.data.iter().map(f).collect(), geometry: self.geometry }
    }
}

/// Element types a file can store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    F64,
}

impl DataType {
    /// Every supported element type.
    pub const ALL: [DataType; 8] = [
        DataType::U8,
        DataType::I8,
        DataType::U16,
        DataType::I16,
        DataType::U32,
        DataType::I32,
        DataType::F32,
        DataType::F64,
    ];

    pub fn size_bytes(self) -> usize {
        match self {
            DataType::U8 | DataType::I8 => 1,
            DataType::U16 | DataType::I16 => 2,
            DataType::U32 | DataType::I32 | DataType::F32 => 4,
            DataType::F64 => 8,
        }
    }
    pub fn is_integer(self) -> bool {
        !matches!(self, DataType::F32 | DataType::F64)
    }
    pub fn name(self) -> &'static str {
        match self {
            DataType::U8 => "uint8",
            DataType::I8 => "int8",
            DataType::U16 => "uint16",
            DataType::I16 => "int16",
            DataType::U32 => "uint32",
            DataType::I32 => "int32",
            DataType::F32 => "float32",
            DataType::F64 => "float64",
        }
    }
    /// Parses the names printed by [`DataType::name`] (numpy's names).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
        .find(|d| d.name() == name)
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Voxels in the data type they were stored with.
#[derive(Debug, Clone, PartialEq)]
pub enum VoxelData {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

macro_rules! each_variant {
    ($value:expr, $v:ident => $body:expr) => {
        match $value {
            VoxelData::U8($v) => $body,
            VoxelData::I8($v) => $body,
            VoxelData::U16($v) => $body,
            VoxelData::I16($v) => $body,
            VoxelData::U32($v) => $body,
            VoxelData::I32($v) => $body,
            VoxelData::F32($v) => $body,
            VoxelData::F64($v) => $body,
        }
    };
}

impl VoxelData {
    pub fn data_type(&self) -> DataType {
        match self {
            VoxelData::U8(_) => DataType::U8,
            VoxelData::I8(_) => DataType::I8,
            VoxelData::U16(_) => DataType::U16,
            VoxelData::I16(_) => DataType::I16,
            VoxelData::U32(_) => DataType::U32,
            VoxelData::I32(_) => DataType::I32,
            VoxelData::F32(_) => DataType::F32,
            VoxelData::F64(_) => DataType::F64,
        }
    }
    pub fn len(&self) -> usize {
        each_variant!(self, v => v.len())
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Every voxel as `f64` (exact for all stored types).
    #[allow(clippy::unnecessary_cast)] // the macro casts every variant, including the same type
    pub fn to_f64(&self) -> Vec<f64> {
        each_variant!(self, v => v.iter().map(|x| *x as f64).collect())
    }
    #[allow(clippy::unnecessary_cast)] // the macro casts every variant, including the same type
    pub fn to_f32(&self) -> Vec<f32> {
        each_variant!(self, v => v.iter().map(|x| *x as f32).collect())
    }
    /// Decodes little- or big-endian bytes of `data_type`; `bytes.len()` must be a multiple of
    /// the element size (callers check sizes against the header first).
    pub fn from_bytes(data_type: DataType, bytes: &[u8], little_endian: bool) -> VoxelData {
        macro_rules! decode {
            ($t:ty, $variant:ident) => {{
                const N: usize = std::mem::size_of::<$t>();
                VoxelData::$variant(
                    bytes
                        .chunks_exact(N)
                        .map(|c| {
                            let arr: [u8; N] = c.try_into().expect("chunks_exact yields N bytes");
                            if little_endian { <$t>::from_le_bytes(arr) } else { <$t>::from_be_bytes(arr) }
                        })
                        .collect(),
                )
            }};
        }
        match data_type {
            DataType::U8 => VoxelData::U8(bytes.to_vec()),
            DataType::I8 => VoxelData::I8(bytes.iter().map(|b| *b as i8).collect()),
            DataType::U16 => decode!(u16, U16),
            DataType::I16 => decode!(i16, I16),
            DataType::U32 => decode!(u32, U32),
            DataType::I32 => decode!(i32, I32),
            DataType::F32 => decode!(f32, F32),
            DataType::F64 => decode!(f64, F64),
        }
    }
    /// Little-endian bytes of every voxel.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        each_variant!(self, v => v.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
    /// Minimum and maximum, ignoring NaN; `None` when empty or all NaN.
    #[allow(clippy::unnecessary_cast)] // the macro casts every variant, including the same type
    pub fn min_max(&self) -> Option<(f64, f64)> {
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        each_variant!(self, v => for x in v.iter() {
            let x = *x as f64;
            if x < lo { lo = x; }
            if x > hi { hi = x; }
        });
        (lo <= hi).then_some((lo, hi))
    }
    /// Converts to another stored type. Fails (with the first offending value) when a value is
    /// not representable: non-integral or out of range for an integer target.
    pub fn cast(&self, target: DataType) -> std::result::Result<VoxelData, f64> {
        let values = self.to_f64();
        macro_rules! to_int {
            ($t:ty, $variant:ident) => {{
                let mut out = Vec::with_capacity(values.len());
                for &x in &values {
                    if x.fract() != 0.0 || x < <$t>::MIN as f64 || x > <$t>::MAX as f64 || x.is_nan() {
                        return Err(x);
                    }
                    out.push(x as $t);
                }
                VoxelData::$variant(out)
            }};
        }
        Ok(match target {
            DataType::U8 => to_int!(u8, U8),
            DataType::I8 => to_int!(i8, I8),
            DataType::U16 => to_int!(u16, U16),
            DataType::I16 => to_int!(i16, I16),
            DataType::U32 => to_int!(u32, U32),
            DataType::I32 => to_int!(i32, I32),
            DataType::F32 => VoxelData::F32(self.to_f32()),
            DataType::F64 => VoxelData::F64(values),
        })
    }
}

/// A volume as a file stores it: voxels in their own data type, plus geometry.
#[derive(Debug, Clone, PartialEq)]
pub struct AnyVolume {
    pub shape: [usize; 3],
    pub data: VoxelData,
    pub geometry: Geometry,
}

impl AnyVolume {
    pub fn data_type(&self) -> DataType {
        self.data.data_type()
    }
    /// Intensities as `f32` (what networks consume).
    pub fn to_f32(&self) -> Volume<f32> {
        Volume { shape: self.shape, data: self.data.to_f32(), geometry: self.geometry }
    }
    /// Labels as [`Label`]; fails, naming `path`, on negative, fractional or too large values.
    pub fn to_labels(&self, path: &Path) -> Result<Volume<Label>> {
        match self.data.cast(DataType::U16) {
            Ok(VoxelData::U16(v)) => Ok(Volume { shape: self.shape, data: v, geometry: self.geometry }),
            Ok(_) => unreachable!("cast to U16 yields U16"),
            Err(bad) => Err(IoError::InvalidValues {
                path: path.to_path_buf(),
                detail: format!(
                    "not a label volume: value {bad} is not an integer in 0..={} (data type {})",
                    Label::MAX,
                    self.data_type()
                ),
            }),
        }
    }
}

impl From<Volume<f32>> for AnyVolume {
    fn from(v: Volume<f32>) -> Self {
        AnyVolume { shape: v.shape, data: VoxelData::F32(v.data), geometry: v.geometry }
    }
}

impl From<Volume<Label>> for AnyVolume {
    /// Labels are stored as `u8` when every value fits (what nnU-Net and most viewers expect),
    /// otherwise as `u16`.
    fn from(v: Volume<Label>) -> Self {
        let data = if v.data.iter().all(|&x| x <= u8::MAX as Label) {
            VoxelData::U8(v.data.iter().map(|&x| x as u8).collect())
        } else {
            VoxelData::U16(v.data)
        };
        AnyVolume { shape: v.shape, data, geometry: v.geometry }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_i_fastest() {
        let v = Volume::new([2, 3, 4], (0..24).collect::<Vec<u32>>(), Geometry::default()).unwrap();
        assert_eq!(*v.get([1, 0, 0]), 1);
        assert_eq!(*v.get([0, 1, 0]), 2);
        assert_eq!(*v.get([0, 0, 1]), 6);
        assert!(Volume::new([2, 2, 2], vec![0u8; 7], Geometry::default()).is_err());
    }

    #[test]
    fn bytes_round_trip_both_endians() {
        let d = VoxelData::I16(vec![-2, 300, 7]);
        let le = d.to_le_bytes();
        assert_eq!(VoxelData::from_bytes(DataType::I16, &le, true), d);
        let be: Vec<u8> = [-2i16, 300, 7].iter().flat_map(|x| x.to_be_bytes()).collect();
        assert_eq!(VoxelData::from_bytes(DataType::I16, &be, false), d);
    }

    #[test]
    fn labels_reject_fractional_and_negative_values() {
        let g = Geometry::default();
        let ok = AnyVolume { shape: [1, 1, 2], data: VoxelData::F32(vec![0.0, 225.0]), geometry: g };
        assert_eq!(ok.to_labels(Path::new("x.nii")).unwrap().data(), &[0, 225]);
        let frac = AnyVolume { shape: [1, 1, 2], data: VoxelData::F32(vec![0.0, 2.5]), geometry: g };
        let err = frac.to_labels(Path::new("x.nii")).unwrap_err().to_string();
        assert!(err.contains("x.nii") && err.contains("2.5"), "{err}");
        let neg = AnyVolume { shape: [1, 1, 1], data: VoxelData::I16(vec![-1]), geometry: g };
        assert!(neg.to_labels(Path::new("x.nii")).is_err());
    }

    #[test]
    fn small_labels_are_stored_as_u8() {
        let v = Volume::new([1, 1, 2], vec![0 as Label, 225], Geometry::default()).unwrap();
        assert_eq!(AnyVolume::from(v).data_type(), DataType::U8);
        let v = Volume::new([1, 1, 1], vec![300 as Label], Geometry::default()).unwrap();
        assert_eq!(AnyVolume::from(v).data_type(), DataType::U16);
    }
}
