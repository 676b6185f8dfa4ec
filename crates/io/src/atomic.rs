//! Atomic file output: write to a temporary name beside the target, then rename, so a failed or
//! interrupted write never leaves a half-written file under the target name.

use crate::error::{IoError, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary name used while `target` is being written (same folder, so rename is atomic).
pub fn temporary_path(target: &Path) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    target.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Writes `target` through `fill`; on any error the temporary file is removed and `target` is
/// left untouched.
pub fn write_atomically(target: &Path, fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
    let tmp = temporary_path(target);
    let os = |source| IoError::Os { path: target.to_path_buf(), source };
    let result = (|| {
        let file = std::fs::File::create(&tmp)?;
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
        fill(&mut writer)?;
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(os)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.nii");
        let err = write_atomically(&target, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("simulated failure"))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        write_atomically(&target, |w| w.write_all(b"done")).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"done");
    }
}
