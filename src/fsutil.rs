//! Atomic file writes: a temp file in the same directory, fsync, rename. A
//! crash leaves either the old file or the new one, never half of either.
use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    // A pipe, terminal or device (`--per-image /dev/stdout`): renaming a
    // file over it would replace the node itself, so write through it.
    if let Ok(m) = std::fs::metadata(path) {
        if !m.is_file() && !m.is_dir() {
            return write_through(path, bytes);
        }
    }
    replace(&final_target(path)?, bytes)
}

fn replace(path: &Path, bytes: &[u8]) -> Result<()> {
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

fn write_through(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).and_then(|_| f.flush()).map_err(|e| Error::io(path, e))
}

/// The file that `path`'s chain of symlinks ends at (`path` itself when it
/// is none), so that the rename replaces that file and the links stay links.
fn final_target(path: &Path) -> Result<PathBuf> {
    let mut p = path.to_path_buf();
    // The kernel's own limit on a chain of links (ELOOP).
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = std::fs::read_link(&p).map_err(|e| Error::io(&p, e))?;
                p = if to.is_absolute() { to } else { folder_of(&p).join(to) };
            }
            _ => return Ok(p),
        }
    }
    Err(Error::io(path, std::io::Error::other("too many levels of symbolic links")))
}

/// An exclusive claim on a run directory, held while it lives: a second
/// process training into the same `--out` would interleave checkpoints,
/// optimizer states and log lines of two runs (or delete the first's log as
/// a leftover). An advisory `flock` on `<dir>/.iwtvae.lock`, so the kernel
/// releases it when the process ends, however it ends; the file holds the
/// owner's pid for the message.
pub struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    pub const FILE: &'static str = ".iwtvae.lock";

    pub fn acquire(dir: &Path) -> Result<RunLock> {
        let path = dir.join(Self::FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        if !lock_within(&file, std::time::Duration::from_secs(2)) {
            let owner = std::fs::read_to_string(&path).unwrap_or_default();
            let owner = owner.trim();
            return Err(Error::Config(format!(
                "{} is in use by another iwtvae process{}: two runs would overwrite each other's checkpoints",
                dir.display(),
                if owner.is_empty() { String::new() } else { format!(" (pid {owner})") }
            )));
        }
        file.set_len(0).and_then(|_| write!(file, "{}", std::process::id())).map_err(|e| Error::io(&path, e))?;
        Ok(RunLock { _file: file })
    }
}

/// Waits up to `patience` for the lock. A process that spawns a child
/// shares its open files with the child until the child's exec closes them,
/// so a lock this process has just released (a run stopped, then resumed
/// in the same process) can look held for that instant, by ourselves;
/// another run holds it for minutes.
fn lock_within(file: &std::fs::File, patience: std::time::Duration) -> bool {
    let start = std::time::Instant::now();
    loop {
        if try_lock_exclusive(file) {
            return true;
        }
        if start.elapsed() >= patience {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// False when another open file description holds the lock. A file system
/// without flock (ENOLCK on some network mounts) leaves runs unguarded
/// rather than refusing to train there.
#[cfg(unix)]
fn try_lock_exclusive(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for as long as `file` lives; flock
    // takes no pointers.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    rc == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock
}

/// Elsewhere runs are not guarded against each other.
#[cfg(not(unix))]
fn try_lock_exclusive(_file: &std::fs::File) -> bool {
    true
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("iwtvae-fsutil-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[cfg(unix)]
    #[test]
    fn a_run_directory_is_claimed_once_at_a_time() {
        let d = scratch("lock");
        let held = RunLock::acquire(&d).unwrap();
        // flock conflicts between open file descriptions, even in one process.
        let e = RunLock::acquire(&d).err().expect("a second claim is refused").to_string();
        assert!(
            e.contains("in use by another iwtvae process") && e.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(held);
        RunLock::acquire(&d).expect("free again once the first claim is dropped");
    }

    #[test]
    fn replaces_a_file_and_leaves_no_temp_file() {
        let d = scratch("plain");
        let f = d.join("a.json");
        atomic_write(&f, b"old").unwrap();
        atomic_write(&f, b"new").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1, "a temp file was left behind");
    }

    #[cfg(unix)]
    #[test]
    fn writes_through_symlinks_and_keeps_them() {
        let d = scratch("links");
        let target = d.join("sub").join("real.csv");
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, "old").unwrap();
        // A relative link to a relative link: both must survive.
        std::os::unix::fs::symlink("sub/real.csv", d.join("first")).unwrap();
        std::os::unix::fs::symlink("first", d.join("second")).unwrap();
        atomic_write(&d.join("second"), b"new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        for link in ["first", "second"] {
            assert!(std::fs::symlink_metadata(d.join(link)).unwrap().file_type().is_symlink(), "{link} was replaced");
        }
        // A dangling link creates its target.
        std::os::unix::fs::symlink("sub/later.csv", d.join("dangling")).unwrap();
        atomic_write(&d.join("dangling"), b"x").unwrap();
        assert_eq!(std::fs::read(d.join("sub/later.csv")).unwrap(), b"x");
        std::os::unix::fs::symlink("loop", d.join("loop")).unwrap();
        assert!(atomic_write(&d.join("loop"), b"x").is_err());
    }

    /// `--per-image /dev/stdout` once replaced the machine's /dev/stdout
    /// link with a regular file: a FIFO stands in for it here.
    #[cfg(unix)]
    #[test]
    fn writes_into_a_fifo_instead_of_replacing_it() {
        let d = scratch("fifo");
        let fifo = d.join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !matches!(made, Ok(s) if s.success()) {
            eprintln!("SKIPPED: mkfifo unavailable");
            return;
        }
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        atomic_write(&fifo, b"through the pipe").unwrap();
        // Checked before the join: had the FIFO been replaced, the reader
        // could wait for a writer forever.
        assert!(!std::fs::metadata(&fifo).unwrap().is_file(), "the FIFO was replaced by a file");
        assert_eq!(reader.join().unwrap(), b"through the pipe");
    }
}
