//! The volume-size limit: how many bytes of voxel data a file may announce before reading it is
//! refused. Headers come from outside (scanners, PACS exports, other tools); a hostile or broken
//! one can claim a volume of terabytes or a `.nii.gz` can inflate far beyond its declared size.
//! Readers check the header's announced size against this limit before they allocate or
//! decompress, and decompress no more than the header announces.
//!
//! The default, 2 GiB, holds a 1024 x 1024 x 512 float32 volume; the command line raises it with
//! `--max-volume-gib` or `SPINESEG_MAX_VOLUME_GIB` (only the CLI reads the environment).

use std::sync::atomic::{AtomicU64, Ordering};

/// The default limit on announced voxel data, bytes.
pub const DEFAULT_MAX_VOLUME_BYTES: u64 = 2 << 30;

static MAX_VOLUME_BYTES: AtomicU64 = AtomicU64::new(DEFAULT_MAX_VOLUME_BYTES);

/// The current limit, bytes.
pub fn max_volume_bytes() -> u64 {
    MAX_VOLUME_BYTES.load(Ordering::Relaxed)
}

/// Sets the limit for the whole process (the CLI does this once, from its flag).
pub fn set_max_volume_bytes(bytes: u64) {
    MAX_VOLUME_BYTES.store(bytes, Ordering::Relaxed);
}
