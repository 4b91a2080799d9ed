//! The data directory's files as a whole.

use std::path::Path;

/// Remove everything inside `dir` (never `dir` itself; a missing `dir` is
/// empty).
pub fn empty_dir(dir: &Path) -> std::result::Result<usize, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("cannot list {}: {e}", dir.display())),
    };
    let mut removed = 0;
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
            .path();
        let result = if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        result.map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_dir_keeps_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir_all(dir.join("base/1")).unwrap();
        std::fs::write(dir.join("PG_VERSION"), "15\n").unwrap();
        std::os::unix::fs::symlink("/nonexistent", dir.join("pg_wal")).unwrap();
        assert_eq!(empty_dir(&dir).unwrap(), 3);
        assert!(dir.is_dir());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        assert_eq!(empty_dir(&tmp.path().join("missing")).unwrap(), 0);
    }
}
