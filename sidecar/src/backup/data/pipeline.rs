//! The data path of a backup: files in, compressed tar parts out.
//!
//! ```text
//!  reader thread          compressors (N threads)          uploads (N at once)
//!  large reads  ──part──▶ SHA-256 of each entry, zstd ──bytes──▶ put(part key)
//!  into the tar buffer    (one part at a time each)          create-only, retried
//! ```
//!
//! The reader only reads: each file once, in large reads straight into the
//! tar buffer of the current part (no zero-filling; buffers come back from
//! the compressors and are reused). A part is shipped once it holds about
//! `part_target` bytes; a file larger than what is left is cut into pieces
//! across parts. The compressors hash every entry and compress the part,
//! so both CPU-heavy steps run in parallel. Bounded queues between the
//! stages keep memory near `(2N + 2) × part_target`. Each stored part is a
//! whole object in memory, so a failed upload is simply sent again.
//!
//! With data checksums on, the compressors also verify the pages of
//! relation files ([`super::pagecheck`]) while they hash them, page by
//! page (the page is still in the CPU cache for the second pass, and the
//! work is spread over the N threads instead of slowing the one reader).
//! So that every piece of a relation file starts on a page boundary, the
//! reader cuts those files at multiples of 8 KiB. A page that fails is
//! read again from the file; what still fails is recorded per file.
//!
//! For an incremental backup, a file whose size and modification time
//! match the prior backup's is read and hashed; if its SHA-256 (of each
//! piece, for a file cut into pieces) matches too, the new manifest refers
//! to the stored copy instead of storing it again (the hash costs a read,
//! not a compression and an upload, and it makes the reference exact even
//! if a modification time was preserved by a tool or fell in the same
//! clock tick as a write). Such a reference keeps the page checksum
//! errors recorded for the stored copy: it is the same content.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::pagecheck::{self, PageCheck, Tally, PAGE_SIZE};
use super::progress::Counter;
use super::tar;
use super::walk::LocalFile;
use crate::archive::wal::to_hex;
use crate::backup::model::manifest::{self, Piece};
use crate::backup::{BackupError, Result};
use crate::repo::layout::Layout;
use crate::repo::{PutMode, Storage};

/// The prior backup's files, by path: the entry and the backup holding its data.
#[derive(Debug, Default)]
pub struct ParentIndex {
    pub by_path: HashMap<String, (manifest::File, String)>,
}

impl ParentIndex {
    pub fn of(parent: &manifest::Manifest) -> ParentIndex {
        ParentIndex {
            by_path: parent
                .files
                .iter()
                .map(|f| {
                    (
                        f.path.clone(),
                        (f.clone(), parent.data_label(f).to_string()),
                    )
                })
                .collect(),
        }
    }
}

pub struct Input {
    pub files: Vec<LocalFile>,
    pub parent: Option<ParentIndex>,
    pub part_target: usize,
    pub level: i32,
    pub parallelism: usize,
    /// Verify the pages of relation files (the cluster has data checksums).
    pub page_check: Option<PageCheck>,
}

pub struct Output {
    /// In the order of the input (files that vanished are left out).
    pub files: Vec<manifest::File>,
    pub parts: Vec<manifest::Part>,
    /// Bytes read and stored / found unchanged and referred to.
    pub copied_bytes: u64,
    pub referenced_bytes: u64,
    pub referenced_files: usize,
    /// The pages judged in the copied files (all zero without page checks).
    pub pages: Tally,
}

/// The page checks of one run: which files hold pages, and what the
/// compressors found.
struct PageChecks {
    check: PageCheck,
    /// By file index: where to read the file again and its first block
    /// number (segment × blocks per segment); `None`: not a relation file.
    files: Vec<Option<(PathBuf, u64)>>,
    found: Mutex<Found>,
}

#[derive(Default)]
struct Found {
    tally: Tally,
    /// By file index: the lowest damaged blocks and how many there are.
    damaged: HashMap<usize, (BTreeSet<u32>, u64)>,
}

impl PageChecks {
    fn new(check: PageCheck, files: &[LocalFile]) -> PageChecks {
        let files = files
            .iter()
            .map(|f| {
                super::walk::relation_segment(&f.path).map(|segment| {
                    (
                        f.abs.clone(),
                        u64::from(segment) * u64::from(check.blocks_per_segment),
                    )
                })
            })
            .collect();
        PageChecks {
            check,
            files,
            found: Mutex::new(Found::default()),
        }
    }

    fn is_relation(&self, file: usize) -> bool {
        self.files.get(file).is_some_and(|f| f.is_some())
    }

    /// Hash a piece (`data`, at `offset` in file `file`) and verify its
    /// pages as it goes.
    fn hash_and_check(&self, file: usize, offset: u64, data: &[u8]) -> String {
        let target = self.files.get(file).and_then(|f| f.as_ref());
        let Some((path, first_block)) = target.filter(|_| offset.is_multiple_of(PAGE_SIZE as u64))
        else {
            return to_hex(&Sha256::digest(data));
        };
        let mut hasher = Sha256::new();
        let mut tally = Tally::default();
        let mut damaged = Vec::new();
        for (i, page) in data.chunks(PAGE_SIZE).enumerate() {
            hasher.update(page);
            let at = offset + (i * PAGE_SIZE) as u64;
            // PostgreSQL's block numbers are 32-bit.
            let block = (first_block + at / PAGE_SIZE as u64) as u32;
            damaged.extend(pagecheck::check_pages(
                page,
                block,
                self.check.lsn_limit,
                &mut tally,
                |_| read_page_again(path, at, page),
            ));
        }
        let mut found = self.found.lock().unwrap_or_else(|e| e.into_inner());
        found.tally.add(tally);
        if !damaged.is_empty() {
            let (blocks, count) = found.damaged.entry(file).or_default();
            *count += damaged.len() as u64;
            blocks.extend(damaged);
            while blocks.len() > manifest::MAX_LISTED {
                blocks.pop_last();
            }
        }
        to_hex(&hasher.finalize())
    }

    fn take(&self) -> Found {
        std::mem::take(&mut *self.found.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The page at `at` in `path`, read again. `None` when it is gone (the
/// relation was dropped or truncated since: WAL replay does the same);
/// on any other error the copy stands, and counts if it failed.
fn read_page_again(path: &Path, at: u64, copy: &[u8]) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let gone = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::UnexpectedEof
        )
    };
    let mut page = vec![0u8; PAGE_SIZE];
    match std::fs::File::open(path).and_then(|f| f.read_exact_at(&mut page, at)) {
        Ok(()) => Some(page),
        Err(e) if gone(&e) => None,
        Err(e) => {
            tracing::warn!(
                "cannot read {} again at offset {at} to check a page: {e}",
                path.display()
            );
            Some(copy.to_vec())
        }
    }
}

/// A tar entry in a part buffer.
struct EntryRef {
    file: usize,
    piece: usize,
    /// Where in the file the piece starts.
    offset: u64,
    data: Range<usize>,
}

struct PartJob {
    index: u32,
    buf: Vec<u8>,
    entries: Vec<EntryRef>,
}

/// A stored part and the hashes of its pieces.
type Uploaded = Result<(manifest::Part, Vec<(usize, usize, String)>)>;

struct Compressed {
    index: u32,
    bytes: Bytes,
    raw_size: u64,
    sha256: String,
    /// (file, piece, SHA-256) of every entry.
    piece_hashes: Vec<(usize, usize, String)>,
    /// The buffer, for the reader to fill again.
    buf: Vec<u8>,
}

enum Outcome {
    Copied {
        size: u64,
        /// (part, offset, len); hashes come from the compressors.
        pieces: Vec<(u32, u64, u64)>,
        split: bool,
    },
    Referenced(manifest::File),
    Vanished,
}

/// Why the reader stopped early.
enum Stop {
    /// The downstream stages are gone (an upload failed): not our error.
    Downstream,
    Failed(String),
}

/// Run the pipeline; the parts go to `layout.data_part_key(label, n)`.
pub async fn run(
    storage: Arc<dyn Storage>,
    layout: &Layout,
    label: &str,
    input: Input,
    counter: Counter,
) -> Result<Output> {
    let parallelism = input.parallelism.max(1);
    let abort = Arc::new(AtomicBool::new(false));
    let (part_tx, part_rx) = std::sync::mpsc::sync_channel::<PartJob>(parallelism);
    let (up_tx, mut up_rx) = tokio::sync::mpsc::channel::<Compressed>(parallelism);
    // Emptied part buffers go back to the reader.
    let (spare_tx, spare_rx) = std::sync::mpsc::channel::<Vec<u8>>();

    let checks = input
        .page_check
        .map(|check| Arc::new(PageChecks::new(check, &input.files)));

    // Compressors.
    let part_rx = Arc::new(Mutex::new(part_rx));
    let mut compressors = Vec::new();
    for _ in 0..parallelism {
        let rx = part_rx.clone();
        let tx = up_tx.clone();
        let level = input.level;
        let checks = checks.clone();
        compressors.push(tokio::task::spawn_blocking(move || {
            compress_loop(&rx, &tx, level, checks.as_deref())
        }));
    }
    drop(up_tx);

    // Reader.
    let Input {
        files,
        parent,
        part_target,
        ..
    } = input;
    let reader_abort = abort.clone();
    let aligned: Vec<bool> = (0..files.len())
        .map(|i| checks.as_ref().is_some_and(|c| c.is_relation(i)))
        .collect();
    let reader = tokio::task::spawn_blocking(move || {
        let mut reader = Reader {
            builder: PartBuilder::new(part_target, part_tx, spare_rx),
            counter,
            abort: reader_abort,
            scratch: Vec::new(),
            aligned,
        };
        let outcomes = reader.read_all(&files, parent.as_ref());
        (files, outcomes)
    });

    // Uploads, at most `parallelism` at once.
    let semaphore = Arc::new(tokio::sync::Semaphore::new(parallelism));
    let mut uploads: tokio::task::JoinSet<Uploaded> = tokio::task::JoinSet::new();
    let mut parts = Vec::new();
    let mut piece_hashes = Vec::new();
    let mut failure: Option<BackupError> = None;
    let mut collect = |result: std::result::Result<Uploaded, tokio::task::JoinError>,
                       failure: &mut Option<BackupError>| match result {
        Ok(Ok((part, hashes))) => {
            parts.push(part);
            piece_hashes.extend(hashes);
        }
        Ok(Err(e)) => {
            failure.get_or_insert(e);
        }
        Err(e) => {
            failure.get_or_insert(BackupError::Internal(format!("upload task: {e}")));
        }
    };
    while failure.is_none() {
        let Some(mut job) = up_rx.recv().await else {
            break;
        };
        let _ = spare_tx.send(std::mem::take(&mut job.buf));
        while let Some(done) = uploads.try_join_next() {
            collect(done, &mut failure);
        }
        if failure.is_some() {
            break;
        }
        let permit = semaphore
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| BackupError::Internal(e.to_string()))?;
        let storage = storage.clone();
        let key = layout.data_part_key(label, job.index);
        uploads.spawn(async move {
            let _permit = permit;
            let size = job.bytes.len() as u64;
            storage
                .put(&key, job.bytes.into(), PutMode::CreateNew)
                .await
                .map_err(|e| BackupError::repository(&*storage, e))?;
            Ok((
                manifest::Part {
                    index: job.index,
                    size,
                    raw_size: job.raw_size,
                    sha256: job.sha256,
                },
                job.piece_hashes,
            ))
        });
    }
    if failure.is_some() {
        abort.store(true, Ordering::Relaxed);
        // Unblock the compressors; the reader stops when they are gone.
        drop(up_rx);
        uploads.abort_all();
    }
    while let Some(done) = uploads.join_next().await {
        if !matches!(&done, Err(e) if e.is_cancelled()) {
            collect(done, &mut failure);
        }
    }
    let (files, outcomes) = reader
        .await
        .map_err(|e| BackupError::Internal(format!("reader thread: {e}")))?;
    for compressor in compressors {
        match compressor.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failure.get_or_insert(BackupError::Internal(e));
            }
            Err(e) => {
                failure.get_or_insert(BackupError::Internal(format!("compressor thread: {e}")));
            }
        }
    }
    let outcomes = match outcomes {
        Ok(outcomes) => outcomes,
        Err(Stop::Failed(why)) => return Err(failure.unwrap_or(BackupError::Local(why))),
        Err(Stop::Downstream) => {
            return Err(failure
                .unwrap_or_else(|| BackupError::Internal("the compressors stopped early".into())))
        }
    };
    if let Some(e) = failure {
        return Err(e);
    }
    let found = checks.map(|c| c.take()).unwrap_or_default();
    assemble(files, outcomes, parts, piece_hashes, found)
}

fn assemble(
    files: Vec<LocalFile>,
    outcomes: Vec<Outcome>,
    mut parts: Vec<manifest::Part>,
    piece_hashes: Vec<(usize, usize, String)>,
    mut found: Found,
) -> Result<Output> {
    let mut hashes: HashMap<(usize, usize), String> = piece_hashes
        .into_iter()
        .map(|(f, p, sha)| ((f, p), sha))
        .collect();
    let mut out = Output {
        files: Vec::with_capacity(files.len()),
        parts: Vec::new(),
        copied_bytes: 0,
        referenced_bytes: 0,
        referenced_files: 0,
        pages: found.tally,
    };
    for (idx, (local, outcome)) in files.into_iter().zip(outcomes).enumerate() {
        match outcome {
            Outcome::Vanished => {}
            Outcome::Referenced(file) => {
                out.referenced_bytes += file.size;
                out.referenced_files += 1;
                out.files.push(file);
            }
            Outcome::Copied {
                size,
                pieces,
                split,
            } => {
                out.copied_bytes += size;
                let mut list = Vec::with_capacity(pieces.len());
                for (n, (part, offset, len)) in pieces.into_iter().enumerate() {
                    let sha = hashes.remove(&(idx, n)).ok_or_else(|| {
                        BackupError::Internal(format!(
                            "no checksum for piece {n} of {}",
                            local.path
                        ))
                    })?;
                    list.push(Piece {
                        part,
                        offset,
                        len,
                        sha256: Some(sha),
                    });
                }
                let sha256 = if split {
                    manifest::pieces_sha256(&list)
                } else {
                    // Stored whole: the piece's hash is the file's.
                    match list.first_mut() {
                        Some(piece) => piece.sha256.take().unwrap_or_default(),
                        None => to_hex(&Sha256::digest(b"")),
                    }
                };
                let (damaged, count) = found.damaged.remove(&idx).unwrap_or_default();
                out.files.push(manifest::File {
                    path: local.path,
                    size,
                    mtime: local.mtime,
                    mtime_ns: local.mtime_ns,
                    mode: local.mode,
                    sha256,
                    reference: None,
                    pieces: list,
                    checksum_errors: damaged.into_iter().collect(),
                    checksum_error_count: count,
                });
            }
        }
    }
    parts.sort_by_key(|p| p.index);
    out.parts = parts;
    Ok(out)
}

fn compress_loop(
    rx: &Mutex<Receiver<PartJob>>,
    tx: &tokio::sync::mpsc::Sender<Compressed>,
    level: i32,
    checks: Option<&PageChecks>,
) -> std::result::Result<(), String> {
    let mut compressor = zstd::bulk::Compressor::new(level).map_err(|e| e.to_string())?;
    compressor
        .include_checksum(true)
        .and_then(|_| compressor.include_contentsize(true))
        .map_err(|e| e.to_string())?;
    let mut out: Vec<u8> = Vec::new();
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return Ok(()),
            }
        };
        let piece_hashes = job
            .entries
            .iter()
            .map(|e| {
                let data = &job.buf[e.data.clone()];
                let sha = match checks {
                    Some(checks) => checks.hash_and_check(e.file, e.offset, data),
                    None => to_hex(&Sha256::digest(data)),
                };
                (e.file, e.piece, sha)
            })
            .collect();
        out.clear();
        out.reserve(zstd::zstd_safe::compress_bound(job.buf.len()));
        compressor
            .compress_to_buffer(&job.buf, &mut out)
            .map_err(|e| format!("compressing part {}: {e}", job.index))?;
        let compressed = Compressed {
            index: job.index,
            sha256: to_hex(&Sha256::digest(&out)),
            bytes: Bytes::copy_from_slice(&out),
            raw_size: job.buf.len() as u64,
            piece_hashes,
            buf: job.buf,
        };
        if tx.blocking_send(compressed).is_err() {
            // The uploads stopped (an error there); they report it.
            return Ok(());
        }
    }
}

/// The part being filled.
struct PartBuilder {
    index: u32,
    buf: Vec<u8>,
    entries: Vec<EntryRef>,
    target: usize,
    tx: SyncSender<PartJob>,
    spare: Receiver<Vec<u8>>,
}

impl PartBuilder {
    fn new(target: usize, tx: SyncSender<PartJob>, spare: Receiver<Vec<u8>>) -> Self {
        PartBuilder {
            index: 0,
            buf: Vec::with_capacity(target + 64 * 1024),
            entries: Vec::new(),
            target,
            tx,
            spare,
        }
    }

    /// A buffer the compressors are done with, or a new one.
    fn next_buffer(&self) -> Vec<u8> {
        match self.spare.try_recv() {
            Ok(mut buf) => {
                buf.clear();
                buf
            }
            Err(_) => Vec::with_capacity(self.target + 64 * 1024),
        }
    }

    fn space(&self) -> usize {
        self.target.saturating_sub(self.buf.len())
    }

    fn ship(&mut self) -> std::result::Result<(), Stop> {
        if self.entries.is_empty() {
            return Ok(());
        }
        tar::finish(&mut self.buf);
        let next = self.next_buffer();
        let buf = std::mem::replace(&mut self.buf, next);
        let job = PartJob {
            index: self.index,
            buf,
            entries: std::mem::take(&mut self.entries),
        };
        self.tx.send(job).map_err(|_| Stop::Downstream)?;
        self.index += 1;
        Ok(())
    }
}

struct Reader {
    builder: PartBuilder,
    counter: Counter,
    abort: Arc<AtomicBool>,
    scratch: Vec<u8>,
    /// By file index: cut into pieces on page boundaries (relation files
    /// whose pages are checked).
    aligned: Vec<bool>,
}

/// What to read a file from: the file, or bytes read ahead (pg_control).
enum Source {
    File(std::fs::File),
    Memory(std::io::Cursor<Vec<u8>>),
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Source::File(f) => f.read(buf),
            Source::Memory(c) => c.read(buf),
        }
    }
}

fn open(local: &LocalFile) -> std::io::Result<Source> {
    if local.path == "global/pg_control" {
        // PostgreSQL rewrites pg_control in place: read it until two reads
        // agree, so that a torn copy is not stored.
        let mut previous = std::fs::read(&local.abs)?;
        for _ in 0..20 {
            let again = std::fs::read(&local.abs)?;
            if again == previous {
                return Ok(Source::Memory(std::io::Cursor::new(again)));
            }
            previous = again;
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        return Err(std::io::Error::other(
            "pg_control keeps changing while it is read",
        ));
    }
    std::fs::File::open(&local.abs).map(Source::File)
}

/// Append up to `want` bytes (fewer only at the end of the file), reading
/// straight into the spare capacity (no zero-filling).
fn read_up_to(source: &mut Source, buf: &mut Vec<u8>, want: usize) -> std::io::Result<usize> {
    let start = buf.len();
    buf.reserve(want);
    let result = source.take(want as u64).read_to_end(buf);
    if result.is_err() {
        buf.truncate(start);
    }
    result
}

impl Reader {
    fn read_all(
        &mut self,
        files: &[LocalFile],
        parent: Option<&ParentIndex>,
    ) -> std::result::Result<Vec<Outcome>, Stop> {
        let mut outcomes = Vec::with_capacity(files.len());
        for (idx, local) in files.iter().enumerate() {
            if self.abort.load(Ordering::Relaxed) {
                return Err(Stop::Downstream);
            }
            let candidate = parent
                .and_then(|p| p.by_path.get(&local.path))
                .filter(|(f, _)| {
                    f.size == local.size && f.mtime == local.mtime && f.mtime_ns == local.mtime_ns
                });
            if let Some((stored, holder)) = candidate {
                match self.unchanged(local, stored) {
                    Ok(true) => {
                        self.counter.add(local.size);
                        outcomes.push(Outcome::Referenced(manifest::File {
                            mode: local.mode,
                            reference: Some(holder.clone()),
                            ..stored.clone()
                        }));
                        continue;
                    }
                    Ok(false) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        outcomes.push(Outcome::Vanished);
                        continue;
                    }
                    Err(e) => {
                        return Err(Stop::Failed(format!(
                            "cannot read {}: {e}",
                            local.abs.display()
                        )))
                    }
                }
            }
            let outcome = self.copy(idx, local)?;
            outcomes.push(outcome);
        }
        self.builder.ship()?;
        Ok(outcomes)
    }

    /// Does the file still hold what the prior backup stored?
    fn unchanged(&mut self, local: &LocalFile, stored: &manifest::File) -> std::io::Result<bool> {
        let mut source = open(local)?;
        super::extract::content_matches(&mut source, stored, &mut self.scratch)
    }

    fn copy(&mut self, idx: usize, local: &LocalFile) -> std::result::Result<Outcome, Stop> {
        let failed =
            |e: std::io::Error| Stop::Failed(format!("cannot read {}: {e}", local.abs.display()));
        let mut source = match open(local) {
            Ok(source) => source,
            // Dropped by PostgreSQL since the listing: WAL replay knows.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Outcome::Vanished),
            Err(e) => return Err(failed(e)),
        };
        if local.size == 0 {
            return Ok(Outcome::Copied {
                size: 0,
                pieces: Vec::new(),
                split: false,
            });
        }
        let piece_name = |n: usize| format!("{}.pgpilot-piece-{n:04}", local.path);
        let header_len = |name: &str| {
            let mut h = Vec::new();
            tar::append_header(&mut h, name, 0, local.mode, local.mtime);
            h.len()
        };
        // A small file that does not fit goes whole into the next part;
        // a large one is cut.
        let whole = header_len(&local.path) + local.size as usize;
        if whole > self.builder.space() && local.size as usize <= self.builder.target / 4 {
            self.builder.ship()?;
        }
        let split = header_len(&local.path) + local.size as usize > self.builder.space();
        // Pieces of a checked relation file hold whole pages.
        let unit = if self.aligned.get(idx).copied().unwrap_or(false) {
            PAGE_SIZE
        } else {
            tar::BLOCK
        };
        let mut pieces = Vec::new();
        let mut offset = 0u64;
        loop {
            if self.abort.load(Ordering::Relaxed) {
                return Err(Stop::Downstream);
            }
            let name = if split {
                piece_name(pieces.len())
            } else {
                local.path.clone()
            };
            let hlen = header_len(&name);
            if self.builder.space() < hlen + unit {
                self.builder.ship()?;
            }
            let header_at = self.builder.buf.len();
            self.builder.buf.resize(header_at + hlen, 0);
            let data_at = self.builder.buf.len();
            let left = (local.size - offset) as usize;
            let mut want = left.min(self.builder.space().max(unit));
            if want < left {
                want -= want % unit;
            }
            let got = read_up_to(&mut source, &mut self.builder.buf, want).map_err(failed)?;
            if got == 0 {
                // The file shrank (PostgreSQL truncated it): it ends here.
                self.builder.buf.truncate(header_at);
                break;
            }
            let mut header = Vec::with_capacity(hlen);
            tar::append_header(&mut header, &name, got as u64, local.mode, local.mtime);
            self.builder.buf[header_at..data_at].copy_from_slice(&header);
            tar::pad(&mut self.builder.buf);
            self.builder.entries.push(EntryRef {
                file: idx,
                piece: pieces.len(),
                offset,
                data: data_at..data_at + got,
            });
            pieces.push((self.builder.index, offset, got as u64));
            offset += got as u64;
            self.counter.add(got as u64);
            if got < want || offset >= local.size {
                break;
            }
            self.builder.ship()?;
        }
        Ok(Outcome::Copied {
            size: offset,
            pieces,
            split,
        })
    }
}
