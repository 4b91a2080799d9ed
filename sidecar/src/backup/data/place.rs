//! The restore's file writes: every part worker writes the pieces it has
//! checked straight into their files, at their offsets.
//!
//! A file is opened on its first piece and closed after its last byte.
//! Files of at least [`DIRECT_MIN`] bytes are given their full size first
//! (`fallocate`) and written with direct I/O (`O_DIRECT`): the bytes go
//! from the worker's buffer to the disk without being copied into the page
//! cache, which was most of a restore's CPU time, and several workers can
//! write into one file at once (a buffered write holds the file's lock; a
//! direct write inside the allocated size does not), which matters because
//! one table is often most of a database. What direct I/O cannot take (an
//! unaligned start or end) is written through the page cache. A file
//! system that refuses direct I/O gets buffered writes for everything.
//! Durability is the caller's: one `syncfs` at the end covers both kinds.

use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags};

/// Files at least this large are preallocated and written directly.
pub const DIRECT_MIN: u64 = 1 << 20;
/// Direct writes start and end on multiples of this (the file system's
/// block; 4 KiB on ext4 and xfs by default).
const FILE_ALIGN: u64 = 4096;
/// Direct writes come from memory aligned to this (the block layer's
/// usual DMA alignment; tar entry data lies at multiples of 512).
const MEM_ALIGN: usize = 512;

/// How one write is cut: `head` bytes through the page cache, then `body`
/// bytes directly, then the rest through the page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub head: usize,
    pub body: usize,
}

/// Cut a write of `len` bytes at file `offset`, from memory at `address`,
/// so that the direct part is aligned in the file and in memory.
pub fn split(offset: u64, address: usize, len: usize) -> Split {
    let misaligned = (offset % FILE_ALIGN) as usize;
    let head = if misaligned == 0 {
        0
    } else {
        (FILE_ALIGN as usize - misaligned).min(len)
    };
    if !(address + head).is_multiple_of(MEM_ALIGN) {
        return Split { head: len, body: 0 };
    }
    let body = (len - head) / FILE_ALIGN as usize * FILE_ALIGN as usize;
    Split { head, body }
}

struct Open {
    /// Buffered writes (and the file's creation).
    file: std::fs::File,
    /// Direct writes, for a large file on a file system that takes them.
    direct: Option<std::fs::File>,
}

#[derive(Default)]
struct Slot {
    open: Option<Arc<Open>>,
    /// The file's size, and the bytes still to come (closed at 0).
    size: u64,
    left: u64,
}

/// Writes the files of a restore; shared by the part workers.
pub struct Placer {
    paths: Arc<Vec<PathBuf>>,
    slots: Vec<Mutex<Slot>>,
    direct: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Placer {
    /// `paths` by manifest file index; `sizes`: (index, size) of the files
    /// to write. `direct`: use direct I/O where it helps.
    pub fn new(
        paths: Arc<Vec<PathBuf>>,
        sizes: impl Iterator<Item = (usize, u64)>,
        direct: bool,
    ) -> Placer {
        let mut slots: Vec<Mutex<Slot>> = (0..paths.len()).map(|_| Mutex::default()).collect();
        for (idx, size) in sizes {
            let slot = slots[idx].get_mut().unwrap_or_else(|e| e.into_inner());
            slot.size = size;
            slot.left = size;
        }
        Placer {
            paths,
            slots,
            direct: AtomicBool::new(direct),
        }
    }

    /// Write `data` at `offset` into file `idx` (created mode 0600 on its
    /// first write). Errors name the file.
    pub fn write(&self, idx: usize, offset: u64, data: &[u8]) -> Result<(), String> {
        let path = &self.paths[idx];
        let open = {
            let mut slot = lock(&self.slots[idx]);
            match &slot.open {
                Some(open) => open.clone(),
                None => {
                    let open = Arc::new(self.open(idx, slot.size)?);
                    slot.open = Some(open.clone());
                    open
                }
            }
        };
        let failed = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
        let direct = open
            .direct
            .as_ref()
            .filter(|_| self.direct.load(Ordering::Relaxed));
        let cut = match direct {
            Some(_) => split(offset, data.as_ptr() as usize, data.len()),
            None => Split {
                head: data.len(),
                body: 0,
            },
        };
        if cut.head > 0 {
            open.file
                .write_all_at(&data[..cut.head], offset)
                .map_err(failed)?;
        }
        if let (Some(direct), true) = (direct, cut.body > 0) {
            let body = &data[cut.head..cut.head + cut.body];
            let at = offset + cut.head as u64;
            match direct.write_all_at(body, at) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(Errno::EINVAL as i32) => {
                    self.stop_direct(&format!(
                        "a direct write into {} failed ({e})",
                        path.display()
                    ));
                    open.file.write_all_at(body, at).map_err(failed)?;
                }
                Err(e) => return Err(failed(e)),
            }
        }
        let rest = cut.head + cut.body;
        if rest < data.len() {
            open.file
                .write_all_at(&data[rest..], offset + rest as u64)
                .map_err(failed)?;
        }
        let mut slot = lock(&self.slots[idx]);
        slot.left = slot.left.saturating_sub(data.len() as u64);
        if slot.left == 0 {
            slot.open = None;
        }
        Ok(())
    }

    fn open(&self, idx: usize, size: u64) -> Result<Open, String> {
        let path = &self.paths[idx];
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        if size < DIRECT_MIN {
            return Ok(Open { file, direct: None });
        }
        // The whole size at once: fewer, larger extents, an early "no
        // space", and direct writes that do not extend the file.
        match fallocate(&file, FallocateFlags::empty(), 0, size as i64) {
            Ok(()) => {}
            Err(e @ (Errno::ENOSPC | Errno::EDQUOT | Errno::EFBIG)) => {
                return Err(format!(
                    "cannot allocate the {size} bytes of {} ({}): free space on its file \
                     system and restore again",
                    path.display(),
                    e.desc()
                ))
            }
            // Not supported here: the writes allocate as they go.
            Err(_) => {}
        }
        let mut direct = None;
        if self.direct.load(Ordering::Relaxed) {
            match std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(nix::libc::O_DIRECT)
                .open(path)
            {
                Ok(f) => direct = Some(f),
                Err(e) => self.stop_direct(&format!(
                    "{} cannot be opened for direct I/O ({e})",
                    path.display()
                )),
            }
        }
        Ok(Open { file, direct })
    }

    fn stop_direct(&self, why: &str) {
        if self.direct.swap(false, Ordering::Relaxed) {
            tracing::info!("{why}: writing through the page cache instead");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_writes_are_aligned_in_the_file_and_in_memory() {
        // Aligned: all direct but the last partial block.
        assert_eq!(
            split(8192, 4096 * 3 + 512, 3 * 4096 + 10),
            Split {
                head: 0,
                body: 3 * 4096
            }
        );
        // Unaligned start: up to the next block through the cache.
        assert_eq!(
            split(100, 100 + 4096 * 2, 10_000),
            Split {
                head: 3996,
                body: 4096
            }
        );
        // Memory that cannot be aligned with the file: all through the cache.
        assert_eq!(
            split(0, 4096 + 8, 1 << 20),
            Split {
                head: 1 << 20,
                body: 0
            }
        );
        // Shorter than a block.
        assert_eq!(split(0, 0, 100), Split { head: 0, body: 0 });
        assert_eq!(split(10, 0, 100), Split { head: 100, body: 0 });
    }

    #[test]
    fn pieces_land_where_they_belong_and_files_close() {
        // Direct where the file system takes it, and through the cache.
        for direct in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let big = DIRECT_MIN as usize * 2 + 1000;
            let content: Vec<u8> = (0..big).map(|i| (i * 7 % 251) as u8).collect();
            let paths = Arc::new(vec![dir.path().join("big"), dir.path().join("small")]);
            let placer = Placer::new(paths.clone(), [(0, big as u64), (1, 5)].into_iter(), direct);
            // A buffer aligned like a worker's, pieces out of order, one
            // not on a block boundary.
            let mut buf = vec![0u8; big + 4096];
            let skip = buf.as_ptr().align_offset(4096);
            let aligned = &mut buf[skip..skip + big];
            aligned.copy_from_slice(&content);
            let cut = DIRECT_MIN as usize;
            placer.write(0, cut as u64, &aligned[cut..]).unwrap();
            placer.write(0, 0, &aligned[..100]).unwrap();
            placer.write(0, 100, &aligned[100..cut]).unwrap();
            placer.write(1, 0, b"hello").unwrap();
            assert!(placer.slots.iter().all(|s| lock(s).open.is_none()));
            assert_eq!(std::fs::read(&paths[0]).unwrap(), content);
            assert_eq!(std::fs::read(&paths[1]).unwrap(), b"hello");
        }
    }

    #[test]
    fn a_missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Arc::new(vec![dir.path().join("none/f")]);
        let placer = Placer::new(paths, [(0, 3)].into_iter(), true);
        let e = placer.write(0, 0, b"abc").unwrap_err();
        assert!(e.contains("none/f"), "{e}");
    }
}
