//! Per-part work of restore and verify: download a data part, check its
//! stored SHA-256, decompress it, and check every tar entry against the
//! manifest (name, size, SHA-256) while handing its bytes to a sink (the
//! restore writes them into the data directory; verify drops them).
//!
//! Problems are reported per file, so that verify can name each damaged
//! file and restore can refuse with the list.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::progress::Counter;
use super::tar;
use crate::archive::wal::to_hex;
use crate::backup::model::manifest::{self, Manifest};
use crate::backup::{BackupError, Result};
use crate::repo::layout::Layout;
use crate::repo::retry::Retrying;
use crate::repo::Storage;

/// Something wrong with a stored part or a file in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The backup and the part key.
    pub part_key: String,
    /// The file concerned, if one is.
    pub path: Option<String>,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{path} (in {}): {}", self.part_key, self.what),
            None => write!(f, "{}: {}", self.part_key, self.what),
        }
    }
}

/// One data part to read and the entries wanted from it.
#[derive(Debug, Clone)]
pub struct PartJob {
    /// The backup that stored the part.
    pub label: String,
    pub part: manifest::Part,
    /// Entry name → (file index in the manifest being restored or
    /// verified, piece index).
    pub wanted: HashMap<String, (usize, usize)>,
}

/// The jobs to restore or verify `files` of `manifest` (the indexes in
/// `files` are the manifest's); `parts` gives the part records of every
/// backup involved.
pub fn plan(
    manifest: &Manifest,
    files: impl Iterator<Item = usize>,
    parts: &HashMap<(String, u32), manifest::Part>,
) -> std::result::Result<Vec<PartJob>, String> {
    let mut jobs: HashMap<(String, u32), PartJob> = HashMap::new();
    for idx in files {
        let file = &manifest.files[idx];
        let label = manifest.data_label(file).to_string();
        for (n, piece) in file.pieces.iter().enumerate() {
            let key = (label.clone(), piece.part);
            let record = parts.get(&key).ok_or_else(|| {
                format!(
                    "{} refers to part {} of backup {label}, which that backup's manifest does not list",
                    file.path, piece.part
                )
            })?;
            jobs.entry(key)
                .or_insert_with(|| PartJob {
                    label: label.clone(),
                    part: record.clone(),
                    wanted: HashMap::new(),
                })
                .wanted
                .insert(file.entry_name(n), (idx, n));
        }
    }
    let mut jobs: Vec<PartJob> = jobs.into_values().collect();
    // Largest first keeps the workers busy until the end.
    jobs.sort_by_key(|j| std::cmp::Reverse(j.part.raw_size));
    Ok(jobs)
}

/// Where the bytes of a checked entry go: (file index, offset, bytes).
pub type Sink<'a> = dyn FnMut(usize, u64, &[u8]) -> std::result::Result<(), String> + 'a;

/// Parts whose tar is at most this large are decompressed whole into a
/// buffer kept by the thread (one zstd call, no copy out of zstd's window,
/// and each entry handed to the sink in one slice); larger ones are
/// streamed in [`CHUNK`]s so memory stays bounded whatever `part_mib` is.
const WHOLE_MAX: u64 = 64 << 20;
/// Streamed entries go to the sink in chunks of this size (a multiple of
/// the file system block, so that writes stay aligned).
const CHUNK: usize = 4 << 20;
/// Alignment of the buffers handed to the sink (direct I/O needs aligned
/// memory; tar entry data starts at a multiple of 512 within them).
pub const BUFFER_ALIGN: usize = 4096;

thread_local! {
    /// Per part worker ([`run_parts`] threads): the decompressed part (or
    /// the streaming chunk) and zstd's context, reused from part to part.
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

#[derive(Default)]
struct Scratch {
    buf: Vec<u8>,
    zstd: Option<zstd::bulk::Decompressor<'static>>,
}

impl Scratch {
    /// Decompress `compressed` whole into the aligned buffer (at most
    /// `raw` bytes); the length.
    fn decompress(&mut self, compressed: &[u8], raw: usize) -> std::result::Result<usize, Fail> {
        let mut zstd = match self.zstd.take() {
            Some(z) => z,
            None => zstd::bulk::Decompressor::new()
                .map_err(|e| Fail::Local(format!("cannot start zstd: {e}")))?,
        };
        let result = zstd.decompress_to_buffer(compressed, self.aligned(raw));
        self.zstd = Some(zstd);
        result.map_err(|e| Fail::Stream(e.to_string()))
    }

    /// `len` bytes starting at an address aligned to [`BUFFER_ALIGN`].
    fn aligned(&mut self, len: usize) -> &mut [u8] {
        if self.buf.len() < len + BUFFER_ALIGN {
            // Grown once per worker thread, then reused part after part.
            self.buf = vec![0u8; len + BUFFER_ALIGN];
        }
        let skip = self.buf.as_ptr().align_offset(BUFFER_ALIGN);
        &mut self.buf[skip..skip + len]
    }
}

/// What stops the reading of a part.
enum Fail {
    /// The part cannot be read on: a problem of the part.
    Stream(String),
    /// The sink failed: a local problem.
    Local(String),
}

/// The checks of one part's entries against the manifest.
struct Checker<'a, 'b> {
    part_key: &'a str,
    job: &'a PartJob,
    files: &'a [manifest::File],
    sink: &'a mut Sink<'b>,
    counter: Option<&'a Counter>,
    problems: Vec<Problem>,
    seen: HashSet<&'a str>,
}

impl<'a> Checker<'a, '_> {
    fn problem(&mut self, path: Option<&str>, what: String) {
        self.problems.push(Problem {
            part_key: self.part_key.to_string(),
            path: path.map(str::to_string),
            what,
        });
    }

    /// The (file, piece) an entry holds if the job wants it and its size is
    /// the piece's; `None` to skip it.
    fn wanted(&mut self, entry: &tar::Entry) -> Option<(usize, usize)> {
        let (name, &(file_idx, piece_idx)) = self.job.wanted.get_key_value(entry.name.as_str())?;
        self.seen.insert(name.as_str());
        let file = &self.files[file_idx];
        let len = file.pieces[piece_idx].len;
        if entry.size != len {
            let path = file.path.clone();
            self.problem(
                Some(&path),
                format!(
                    "the entry holds {} bytes, the manifest says {len}",
                    entry.size
                ),
            );
            return None;
        }
        Some((file_idx, piece_idx))
    }

    /// Hand `data` (at `offset` in the file) to the sink.
    fn write(
        &mut self,
        file_idx: usize,
        offset: u64,
        data: &[u8],
    ) -> std::result::Result<(), Fail> {
        (self.sink)(file_idx, offset, data).map_err(Fail::Local)?;
        if let Some(counter) = self.counter {
            counter.add(data.len() as u64);
        }
        Ok(())
    }

    /// Compare a piece's hash with the manifest's.
    fn check(&mut self, file_idx: usize, piece_idx: usize, hasher: Sha256) {
        let file = &self.files[file_idx];
        let got = to_hex(&hasher.finalize());
        let want = file.piece_sha256(piece_idx);
        if got != want {
            let what = format!(
                "checksum mismatch{}: the stored data hashes to {got}, the manifest says {want}",
                if file.is_split() {
                    format!(" in piece {piece_idx}")
                } else {
                    String::new()
                }
            );
            let path = file.path.clone();
            self.problem(Some(&path), what);
        }
    }

    /// The part decompressed whole: `tar` is its tar archive.
    fn whole(&mut self, tar: &[u8]) -> std::result::Result<(), Fail> {
        let mut reader = tar::Reader::new(tar);
        while let Some(entry) = reader
            .next_entry()
            .map_err(|e| Fail::Stream(format!("cannot be read ({e})")))?
        {
            let Some((file_idx, piece_idx)) = self.wanted(&entry) else {
                continue;
            };
            let data = reader.take_data().map_err(|e| {
                let path = self.files[file_idx].path.clone();
                self.problem(Some(&path), format!("cannot be read ({e})"));
                Fail::Stream(format!("cannot be read past {path} ({e})"))
            })?;
            // Hash first (the data is hot in the cache), then one write.
            let mut hasher = Sha256::new();
            hasher.update(data);
            let offset = self.files[file_idx].pieces[piece_idx].offset;
            self.write(file_idx, offset, data)?;
            self.check(file_idx, piece_idx, hasher);
        }
        reader
            .finish()
            .map_err(|e| Fail::Stream(format!("is damaged after its last entry ({e})")))
    }

    /// The part decompressed as a stream, entries in chunks through `buf`.
    fn streamed(&mut self, compressed: &[u8], buf: &mut [u8]) -> std::result::Result<(), Fail> {
        let decoder = zstd::stream::read::Decoder::with_buffer(compressed)
            .map_err(|e| Fail::Stream(format!("not a zstd stream ({e})")))?;
        let mut reader = tar::Reader::new(decoder);
        while let Some(entry) = reader
            .next_entry()
            .map_err(|e| Fail::Stream(format!("cannot be read ({e})")))?
        {
            let Some((file_idx, piece_idx)) = self.wanted(&entry) else {
                continue;
            };
            let mut hasher = Sha256::new();
            let mut offset = self.files[file_idx].pieces[piece_idx].offset;
            loop {
                // Fill the chunk so that every write but the last is whole.
                let mut n = 0;
                while n < buf.len() {
                    match reader.read_data(&mut buf[n..]) {
                        Ok(0) => break,
                        Ok(got) => n += got,
                        Err(e) => {
                            let path = self.files[file_idx].path.clone();
                            self.problem(Some(&path), format!("cannot be read ({e})"));
                            return Err(Fail::Stream(format!("cannot be read past {path} ({e})")));
                        }
                    }
                }
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                self.write(file_idx, offset, &buf[..n])?;
                offset += n as u64;
            }
            self.check(file_idx, piece_idx, hasher);
        }
        reader
            .finish()
            .map_err(|e| Fail::Stream(format!("is damaged after its last entry ({e})")))
    }
}

/// Read one stored part (`compressed`) and check it; Err is a sink error
/// (a local problem), Ok lists what is wrong with the part.
pub fn read_part(
    part_key: &str,
    compressed: &[u8],
    job: &PartJob,
    files: &[manifest::File],
    sink: &mut Sink<'_>,
    counter: Option<&Counter>,
) -> std::result::Result<Vec<Problem>, String> {
    let mut checker = Checker {
        part_key,
        job,
        files,
        sink,
        counter,
        problems: Vec::new(),
        seen: HashSet::new(),
    };
    if compressed.len() as u64 != job.part.size {
        checker.problem(
            None,
            format!(
                "holds {} bytes, the manifest says {}",
                compressed.len(),
                job.part.size
            ),
        );
    }
    let stored_sha = to_hex(&Sha256::digest(compressed));
    if stored_sha != job.part.sha256 {
        checker.problem(
            None,
            format!(
                "its content hashes to {stored_sha}, the manifest says {}: the object was damaged or replaced",
                job.part.sha256
            ),
        );
    }
    let failed = SCRATCH.with(|scratch| {
        let scratch = &mut *scratch.borrow_mut();
        if job.part.raw_size <= WHOLE_MAX {
            let raw = job.part.raw_size as usize;
            match scratch.decompress(compressed, raw) {
                Ok(n) if n == raw => {
                    return checker.whole(&scratch.aligned(raw)[..n]).err();
                }
                Ok(n) => checker.problem(
                    None,
                    format!("decompresses to {n} bytes, the manifest says {raw}"),
                ),
                Err(Fail::Local(e)) => return Some(Fail::Local(e)),
                // Damaged: the stream below finds which entries are.
                Err(Fail::Stream(_)) => {}
            }
        }
        checker.streamed(compressed, scratch.aligned(CHUNK)).err()
    });
    match failed {
        None => {}
        Some(Fail::Local(e)) => return Err(e),
        Some(Fail::Stream(e)) => checker.problem(None, e),
    }
    let Checker {
        mut problems, seen, ..
    } = checker;
    let mut unseen: Vec<&str> = job
        .wanted
        .iter()
        .filter(|(name, _)| !seen.contains(name.as_str()))
        .map(|(_, (f, _))| files[*f].path.as_str())
        .collect();
    unseen.sort();
    unseen.dedup();
    for path in unseen {
        problems.push(Problem {
            part_key: part_key.to_string(),
            path: Some(path.to_string()),
            what: "not found in the part (unreadable or missing)".into(),
        });
    }
    Ok(problems)
}

/// What a part worker is given: the part's key, its stored bytes, the job.
type Fetched = (String, Vec<u8>, PartJob);

/// Run `jobs` on `parallelism` worker threads: the parts are downloaded
/// (`parallelism` at once, transient errors retried) ahead of the workers,
/// so that reading the repository overlaps with `work` (decompressing,
/// hashing, writing). Stops at the first error `work` or the repository
/// returns, and at the first problem when `stop_on_problem`; otherwise
/// collects every problem.
pub async fn run_parts<W>(
    storage: Arc<Retrying<Arc<dyn Storage>>>,
    layout: &Layout,
    jobs: Vec<PartJob>,
    parallelism: usize,
    stop_on_problem: bool,
    work: W,
) -> Result<Vec<Problem>>
where
    W: Fn(&str, &[u8], &PartJob) -> std::result::Result<Vec<Problem>, String>
        + Send
        + Sync
        + 'static,
{
    use futures_util::StreamExt;
    use std::sync::atomic::{AtomicBool, Ordering};

    let workers = parallelism.max(1);
    let problems = Arc::new(Mutex::new(Vec::<Problem>::new()));
    let local_error = Arc::new(Mutex::new(None::<String>));
    let stop = Arc::new(AtomicBool::new(false));
    let add_problems = {
        let problems = problems.clone();
        let stop = stop.clone();
        move |found: Vec<Problem>| {
            if found.is_empty() {
                return;
            }
            if stop_on_problem {
                stop.store(true, Ordering::Relaxed);
            }
            lock(&problems).extend(found);
        }
    };

    // The workers: plain threads, so that each keeps its buffers from part
    // to part (see `SCRATCH`).
    let (tx, rx) = tokio::sync::mpsc::channel::<Fetched>(workers);
    let rx = Arc::new(Mutex::new(rx));
    let work = Arc::new(work);
    let mut threads = Vec::with_capacity(workers);
    for n in 0..workers {
        let rx = rx.clone();
        let work = work.clone();
        let add_problems = add_problems.clone();
        let (thread_stop, thread_error) = (stop.clone(), local_error.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("part-worker-{n}"))
            .spawn(move || loop {
                let next = lock(&rx).blocking_recv();
                let Some((key, bytes, job)) = next else {
                    return;
                };
                if thread_stop.load(Ordering::Relaxed) {
                    continue; // drain what was fetched
                }
                match work(&key, &bytes, &job) {
                    Ok(found) => add_problems(found),
                    Err(local) => {
                        thread_stop.store(true, Ordering::Relaxed);
                        lock(&thread_error).get_or_insert(local);
                    }
                }
            });
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                lock(&local_error).get_or_insert(format!("cannot start a part worker: {e}"));
                break;
            }
        }
    }

    // The downloads, in job order (largest first), `workers` at once.
    let mut downloads = futures_util::stream::iter(jobs)
        .map(|job| {
            let storage = storage.clone();
            let key = layout.data_part_key(&job.label, job.part.index);
            let stop = stop.clone();
            async move {
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
                let limit = job.part.size.saturating_mul(2).max(1 << 20);
                let fetched = storage
                    .run("get", &key, || async {
                        storage.get(&key).await?.into_bytes(&key, limit).await
                    })
                    .await;
                Some((key, fetched, job))
            }
        })
        .buffer_unordered(workers);
    let mut repo_error = None;
    while let Some(next) = downloads.next().await {
        let Some((key, fetched, job)) = next else {
            continue;
        };
        match fetched {
            Ok(bytes) => {
                if tx.send((key, bytes, job)).await.is_err() {
                    break; // no worker left
                }
            }
            Err(e) if e.is_not_found() => add_problems(vec![Problem {
                what: format!(
                    "is missing from the repository ({} files need it)",
                    job.wanted.len()
                ),
                part_key: key,
                path: None,
            }]),
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                repo_error = Some(BackupError::repository(&*storage, e));
                break;
            }
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
    drop(downloads);
    drop(tx);
    let joined = tokio::task::spawn_blocking(move || {
        threads
            .into_iter()
            .map(|t| t.join())
            .filter(Result::is_err)
            .count()
    })
    .await
    .map_err(|e| BackupError::Internal(format!("part workers: {e}")))?;
    if let Some(e) = repo_error {
        return Err(e);
    }
    if let Some(local) = lock(&local_error).take() {
        return Err(BackupError::Local(local));
    }
    if joined > 0 {
        return Err(BackupError::Internal(format!(
            "{joined} part worker(s) panicked"
        )));
    }
    let problems = std::mem::take(&mut *lock(&problems));
    Ok(problems)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Load `manifest`'s references and collect every part record by
/// (label, index).
pub async fn part_records(
    storage: &dyn Storage,
    layout: &Layout,
    manifest: &Manifest,
) -> std::result::Result<HashMap<(String, u32), manifest::Part>, manifest::LoadError> {
    let mut parts = HashMap::new();
    for part in &manifest.parts {
        parts.insert((manifest.label.clone(), part.index), part.clone());
    }
    for label in &manifest.reference {
        let other = Manifest::load(storage, layout, label).await?;
        for part in other.parts {
            parts.insert((label.clone(), part.index), part);
        }
    }
    Ok(parts)
}

/// Does `reader` hold exactly the content `file` records? A file stored
/// whole is compared by its SHA-256; one cut into pieces piece by piece.
pub fn content_matches(
    reader: &mut impl Read,
    file: &manifest::File,
    scratch: &mut Vec<u8>,
) -> std::io::Result<bool> {
    const CHUNK: usize = 4 << 20;
    if scratch.len() < CHUNK {
        *scratch = vec![0u8; CHUNK];
    }
    let ranges: Vec<(u64, &str)> = if file.is_split() {
        file.pieces
            .iter()
            .enumerate()
            .map(|(i, p)| (p.len, file.piece_sha256(i)))
            .collect()
    } else {
        vec![(file.size, file.sha256.as_str())]
    };
    for (len, want) in ranges {
        let mut hasher = Sha256::new();
        let mut left = len;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            match reader.read(&mut scratch[..n]) {
                Ok(0) => return Ok(false),
                Ok(got) => {
                    hasher.update(&scratch[..got]);
                    left -= got as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if to_hex(&hasher.finalize()) != want {
            return Ok(false);
        }
    }
    // Nothing more: a longer file is another file.
    loop {
        match reader.read(&mut scratch[..1]) {
            Ok(n) => return Ok(n == 0),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// [`content_matches`] for a local file.
pub fn file_matches(path: &std::path::Path, file: &manifest::File) -> std::io::Result<bool> {
    let mut f = std::fs::File::open(path)?;
    content_matches(&mut f, file, &mut Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A part holding `entries` (name, data), and the job and files that
    /// want all of them (each file stored whole).
    fn part(entries: &[(&str, Vec<u8>)]) -> (Vec<u8>, PartJob, Vec<manifest::File>) {
        let mut tar_bytes = Vec::new();
        let mut files = Vec::new();
        let mut wanted = HashMap::new();
        for (n, (name, data)) in entries.iter().enumerate() {
            tar::append_header(&mut tar_bytes, name, data.len() as u64, 0o600, 0);
            tar_bytes.extend_from_slice(data);
            tar::pad(&mut tar_bytes);
            files.push(
                serde_json::from_value::<manifest::File>(serde_json::json!({
                    "path": name, "size": data.len(), "mtime": 0, "mtime_ns": 0,
                    "mode": 0o600, "sha256": to_hex(&Sha256::digest(data)), "reference": null,
                    "pieces": [{"part": 0, "offset": 0, "len": data.len()}],
                }))
                .unwrap(),
            );
            wanted.insert(name.to_string(), (n, 0));
        }
        tar::finish(&mut tar_bytes);
        let compressed = zstd::bulk::compress(&tar_bytes, 3).unwrap();
        let job = PartJob {
            label: "20260101-000000F".into(),
            part: manifest::Part {
                index: 0,
                size: compressed.len() as u64,
                raw_size: tar_bytes.len() as u64,
                sha256: to_hex(&Sha256::digest(&compressed)),
            },
            wanted,
        };
        (compressed, job, files)
    }

    /// What the sink got: bytes by file, and per call (file, whether the
    /// data lay at an address aligned to a tar block).
    #[derive(Default)]
    struct Got {
        files: HashMap<usize, Vec<u8>>,
        calls: Vec<(usize, bool)>,
    }

    /// Run `read_part` on a worker-like thread.
    fn read(compressed: &[u8], job: &PartJob, files: &[manifest::File]) -> (Got, Vec<Problem>) {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let mut got = Got::default();
                    let mut sink = |idx: usize, offset: u64, data: &[u8]| {
                        got.calls
                            .push((idx, (data.as_ptr() as usize).is_multiple_of(tar::BLOCK)));
                        let file = got.files.entry(idx).or_default();
                        let end = offset as usize + data.len();
                        file.resize(file.len().max(end), 0);
                        file[offset as usize..end].copy_from_slice(data);
                        Ok(())
                    };
                    let problems = read_part("k", compressed, job, files, &mut sink, None).unwrap();
                    (got, problems)
                })
                .join()
                .unwrap()
        })
    }

    fn sample() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("PG_VERSION", b"15\n".to_vec()),
            (
                "base/5/16384",
                (0..300_000u32).map(|i| (i % 253) as u8).collect(),
            ),
            ("base/5/16390", vec![7u8; 8192]),
        ]
    }

    #[test]
    fn a_sound_part_is_read_whole_and_checked() {
        let entries = sample();
        let (compressed, job, files) = part(&entries);
        let (got, problems) = read(&compressed, &job, &files);
        assert!(problems.is_empty(), "{problems:?}");
        for (n, (_, data)) in entries.iter().enumerate() {
            assert_eq!(&got.files[&n], data);
        }
        // Each entry in one slice, aligned for direct I/O.
        assert_eq!(got.calls, vec![(0, true), (1, true), (2, true)]);
    }

    #[test]
    fn a_part_that_does_not_decompress_to_its_size_is_streamed_and_named() {
        let entries = sample();
        let (compressed, mut job, files) = part(&entries);
        job.part.raw_size += 512;
        let (got, problems) = read(&compressed, &job, &files);
        // The part is named; every file is still read and checked.
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].what.contains("decompresses to"), "{problems:?}");
        for (n, (_, data)) in entries.iter().enumerate() {
            assert_eq!(&got.files[&n], data);
        }
    }

    #[test]
    fn damage_names_the_file() {
        let entries = sample();
        let (_, job, mut files) = part(&entries);
        // The stored data of one file is not what the manifest says.
        files[2].sha256 = to_hex(&Sha256::digest(b"other"));
        let (compressed, _, _) = part(&entries);
        let (_, problems) = read(&compressed, &job, &files);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path.as_deref(), Some("base/5/16390"));
        assert!(problems[0].what.contains("checksum mismatch"));
        // A flipped byte in the stored object: the part and its files.
        let mut flipped = compressed.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x40;
        let (_, problems) = read(&flipped, &job, &files);
        assert!(
            problems
                .iter()
                .any(|p| p.path.is_none() && p.what.contains("hashes to")),
            "{problems:?}"
        );
        assert!(problems.iter().any(|p| p.path.is_some()), "{problems:?}");
    }
}
