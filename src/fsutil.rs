//! Atomic file writes: a temp file in the same directory, fsync, rename. A
//! crash leaves either the old file or the new one, never half of either.
use crate::error::{Error, Result};
use std::io::Write;
use std::path::Path;

pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = folder_of(path);
    ensure_dir(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Check, before minutes of work, that `atomic_write(path, ..)` can succeed
/// later: the folder exists (or is made) and `path` is not a folder.
pub fn prepare_output_file(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(Error::io(path, std::io::Error::other("is a directory, expected a file name")));
    }
    let dir = folder_of(path);
    ensure_dir(dir)
}

/// create_dir_all, with a plain message where a file stands in the way (the
/// OS says only "File exists").
pub fn ensure_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::io(dir, std::io::Error::other("exists and is not a directory")));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

/// The folder a file name lives in ("." for a bare name).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}
