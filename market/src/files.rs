//! Writing files that readers may open at any moment.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A temporary file beside `path` that is this writer's own (process and call), so writers
/// racing for one path never share one: [`write_atomic`]'s, and the binary cache's, which is
/// written in parts before its rename.
pub fn temp_beside(path: &Path) -> PathBuf {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}-{n}", std::process::id()));
    path.with_file_name(name)
}

/// Writes `bytes` to `path` so that a reader sees the old file or the new one, never part of
/// one: into a temporary file beside it, synced, then renamed over it. The temporary file is
/// this writer's own (process and call), so writers racing for one path (a grid's array tasks
/// on a shared directory, threads of one process) each rename a whole file, and the last one
/// stays. On failure the temporary file is removed.
///
/// # Errors
/// The temporary file cannot be written or renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_beside(path);
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A grid's array tasks record the same recipe into a shared directory at once: every
    /// writer succeeds, and what is left is one writer's whole file and no temporary files.
    #[test]
    fn writers_racing_for_one_path_each_write_a_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grid.json");
        let payload = |w: usize| vec![b'a' + w as u8; 1 << 16];
        std::thread::scope(|s| {
            for w in 0..8 {
                let (path, bytes) = (&path, payload(w));
                s.spawn(move || {
                    for _ in 0..40 {
                        write_atomic(path, &bytes).expect("a racing writer failed");
                    }
                });
            }
        });
        let left = std::fs::read(&path).unwrap();
        assert!((0..8).any(|w| left == payload(w)), "a torn file");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["grid.json"], "temporary files left behind");
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should go: the rename fails.
        let path = dir.path().join("taken");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("x"), b"keep").unwrap();
        assert!(write_atomic(&path, b"new").is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["taken"], "temporary files left behind");
    }
}
