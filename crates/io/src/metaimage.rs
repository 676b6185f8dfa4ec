//! (being written)
use crate::error::Result;
use crate::volume::AnyVolume;
use std::path::Path;

pub fn read(path: &Path) -> Result<AnyVolume> {
    Err(crate::IoError::Unsupported { path: path.to_path_buf(), detail: "metaimage reader not written yet".into() })
}

pub fn write(path: &Path, _volume: &AnyVolume) -> Result<()> {
    Err(crate::IoError::Unsupported { path: path.to_path_buf(), detail: "metaimage writer not written yet".into() })
}
