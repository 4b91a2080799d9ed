//! Per-file work: the WAL page header, SHA-256, zstd in and out.
//!
//! A WAL file is read once, in [`PIECE`]-sized pieces, whichever way it goes:
//! [`pack_file`] compresses each piece while a second thread hashes it (or,
//! with zstd on two threads or more of its own, hashes it here),
//! [`decompress_to`] writes each piece out while a second thread hashes it.
//! Memory stays a few pieces and zstd's window, whatever the segment size.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::mpsc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::repo::layout::WalName;

/// `XLP_LONG_HEADER`: the first page of a segment carries the long header.
const XLP_LONG_HEADER: u16 = 0x0002;
/// Size of `XLogLongPageHeaderData`.
const LONG_HEADER_LEN: usize = 40;

/// The fields of a segment's first page header that pgpilot checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageHeader {
    /// `xlp_pageaddr`: the WAL position of this page.
    pub page_address: u64,
    /// `xlp_sysid`: the cluster that wrote the segment.
    pub system_identifier: u64,
    /// `xlp_seg_size`.
    pub segment_size: u32,
}

/// Parse the long page header at the start of a segment (the server's byte
/// order, i.e. this machine's). `None` if it does not look like one.
pub fn long_page_header(data: &[u8]) -> Option<PageHeader> {
    if data.len() < LONG_HEADER_LEN {
        return None;
    }
    let u16_at = |i: usize| u16::from_ne_bytes([data[i], data[i + 1]]);
    let u32_at = |i: usize| u32::from_ne_bytes(data[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_ne_bytes(data[i..i + 8].try_into().expect("8 bytes"));
    if u16_at(2) & XLP_LONG_HEADER == 0 {
        return None;
    }
    let segment_size = u32_at(32);
    let block_size = u32_at(36);
    let sane = segment_size.is_power_of_two()
        && (1 << 20..=1 << 30).contains(&segment_size)
        && block_size.is_power_of_two()
        && (1024..=32768).contains(&block_size);
    sane.then(|| PageHeader {
        page_address: u64_at(8),
        system_identifier: u64_at(24),
        segment_size,
    })
}

/// The WAL position a segment-like file name starts at, for a segment size.
pub fn segment_start(wal: &WalName, segment_size: u32) -> Option<u64> {
    let name = wal.as_str();
    let log = u64::from_str_radix(name.get(8..16)?, 16).ok()?;
    let seg = u64::from_str_radix(name.get(16..24)?, 16).ok()?;
    let per_log = 0x1_0000_0000u64 / u64::from(segment_size);
    (seg < per_log).then(|| (log * per_log + seg) * u64::from(segment_size))
}

pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

pub fn sha256_hex(data: &[u8]) -> String {
    to_hex(&Sha256::digest(data))
}

/// Size of the pieces a WAL file is read, hashed, compressed and written in.
pub const PIECE: usize = 512 << 10;

/// zstd's job size when it compresses one file on several threads (its
/// smallest is 512 KiB): a 16 MiB segment makes sixteen jobs, each thread
/// starts within the first 2 MiB, and its buffers stay small.
const JOB_SIZE: u32 = 1 << 20;

/// Which file, in which state: the inode and its change time. Any write,
/// truncation or replacement of the file changes its ctime (or its inode),
/// so a file with the same stamp still holds the bytes it held when the
/// stamp was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub ctime: i64,
    pub ctime_nsec: i64,
}

impl FileStamp {
    pub fn of(meta: &std::fs::Metadata) -> FileStamp {
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
        }
    }

    pub fn of_path(path: &Path) -> std::io::Result<FileStamp> {
        std::fs::metadata(path).map(|meta| FileStamp::of(&meta))
    }
}

/// Read into `buf` until it is full or the reader ends; the bytes read.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(read) => n += read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// What [`pack_file`] made of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// SHA-256 and size of the file's bytes.
    pub sha256: String,
    pub size: u64,
    /// The long page header at the start, if the file has one.
    pub header: Option<PageHeader>,
    /// The zstd frame (content size and checksum included).
    pub compressed: Vec<u8>,
    /// The file's stamp, the same before and after it was read.
    pub stamp: FileStamp,
}

/// Read a file once and compress it. With `workers` of 2 or more, zstd
/// compresses on that many threads of its own while this one reads and
/// hashes; with 0 or 1, this thread compresses while a second one hashes
/// (less memory: no buffers for jobs). Fails if the file changes while it
/// is read.
pub fn pack_file(path: &Path, level: i32, workers: u32) -> std::io::Result<Packed> {
    let mut file = std::fs::File::open(path)?;
    let before = FileStamp::of(&file.metadata()?);
    // WAL compresses to a fraction of its size; the vector grows if not.
    let guess = (before.size / 4).min(64 << 20) as usize;
    let mut encoder = zstd::stream::write::Encoder::new(Vec::with_capacity(guess), level)?;
    encoder.include_checksum(true)?;
    encoder.include_contentsize(true)?;
    encoder.set_pledged_src_size(Some(before.size))?;
    let mut size = 0u64;
    let mut header = None;
    let sha256 = if workers >= 2 {
        encoder.multithread(workers)?;
        encoder.set_parameter(zstd::zstd_safe::CParameter::JobSize(JOB_SIZE))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; PIECE];
        loop {
            let n = fill(&mut file, &mut buf)?;
            if n == 0 {
                break;
            }
            if size == 0 {
                header = long_page_header(&buf[..n]);
            }
            hasher.update(&buf[..n]);
            encoder.write_all(&buf[..n])?;
            size += n as u64;
        }
        to_hex(&hasher.finalize())
    } else {
        let (read, sha) = hashed_aside(|pipe| -> std::io::Result<()> {
            loop {
                let mut buf = pipe.buffer()?;
                let n = fill(&mut file, &mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                if size == 0 {
                    header = long_page_header(&buf[..n]);
                }
                encoder.write_all(&buf[..n])?;
                size += n as u64;
                buf.truncate(n);
                pipe.hash(buf)?;
            }
        });
        read?;
        sha.ok_or_else(hasher_stopped)?
    };
    let after = FileStamp::of(&file.metadata()?);
    if after != before || size != before.size {
        return Err(std::io::Error::other(format!(
            "{} changed while it was read ({} bytes at the start, {size} read, {} at the end)",
            path.display(),
            before.size,
            after.size
        )));
    }
    Ok(Packed {
        sha256,
        size,
        header,
        compressed: encoder.finish()?,
        stamp: before,
    })
}

/// Piece buffers that [`hashed_aside`] cycles between its two threads.
const PIPELINE: usize = 2;

/// The sending end of [`hashed_aside`]'s second thread.
struct Pipe {
    full: mpsc::SyncSender<Vec<u8>>,
    free: mpsc::Receiver<Vec<u8>>,
    made: usize,
}

impl Pipe {
    /// A [`PIECE`]-sized buffer: one the hasher is done with, or a new one
    /// (at most `PIPELINE + 1` exist).
    fn buffer(&mut self) -> std::io::Result<Vec<u8>> {
        let mut buf = match self.free.try_recv() {
            Ok(buf) => buf,
            Err(_) if self.made <= PIPELINE => {
                self.made += 1;
                Vec::new()
            }
            Err(_) => self.free.recv().map_err(|_| hasher_stopped())?,
        };
        buf.resize(PIECE, 0);
        Ok(buf)
    }

    /// Hand a piece to the hasher (waits while it is `PIPELINE` behind).
    fn hash(&mut self, piece: Vec<u8>) -> std::io::Result<()> {
        self.full.send(piece).map_err(|_| hasher_stopped())
    }
}

/// Run `work`, which hands pieces to a second thread that hashes them in
/// order; `work`'s result and the SHA-256 of every piece it handed over
/// (`None` if the hashing thread died).
fn hashed_aside<T>(work: impl FnOnce(&mut Pipe) -> T) -> (T, Option<String>) {
    std::thread::scope(|scope| {
        let (full, full_rx) = mpsc::sync_channel::<Vec<u8>>(PIPELINE);
        let (free_tx, free) = mpsc::channel::<Vec<u8>>();
        let hasher = scope.spawn(move || {
            let mut hasher = Sha256::new();
            for piece in full_rx {
                hasher.update(&piece);
                let _ = free_tx.send(piece);
            }
            to_hex(&hasher.finalize())
        });
        let mut pipe = Pipe {
            full,
            free,
            made: 0,
        };
        let out = work(&mut pipe);
        drop(pipe);
        (out, hasher.join().ok())
    })
}

fn hasher_stopped() -> std::io::Error {
    std::io::Error::other("the hashing thread stopped")
}

/// What [`hash_file`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    pub sha256: String,
    pub size: u64,
    /// The long page header at the start, if the file has one.
    pub header: Option<PageHeader>,
}

/// SHA-256, size and first page header of a file, read through one 1 MiB
/// buffer (a 16 MiB read buffer would cost more in page faults than the
/// hashing itself).
pub fn hash_file(path: &std::path::Path) -> std::io::Result<FileDigest> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    let mut header = None;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if size == 0 {
            header = long_page_header(&buf[..n]);
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(FileDigest {
        sha256: to_hex(&hasher.finalize()),
        size,
        header,
    })
}

/// zstd frame with content size and checksum (so corruption of the stored
/// object is caught even before the SHA-256 comparison).
pub fn compress(data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    let mut compressor = zstd::bulk::Compressor::new(level)?;
    compressor.include_checksum(true)?;
    compressor.include_contentsize(true)?;
    compressor.compress(data)
}

/// Largest file archive-get will decompress (PostgreSQL's largest segment is 1 GiB).
const MAX_DECOMPRESSED: u64 = 2 << 30;

/// Decompress a whole zstd frame in one go (its header records the size;
/// the frame checksum is checked).
pub fn decompress(compressed: &[u8]) -> std::io::Result<Vec<u8>> {
    match zstd::zstd_safe::get_frame_content_size(compressed) {
        Ok(Some(size)) if size <= MAX_DECOMPRESSED => {
            let data = zstd::bulk::decompress(compressed, size as usize)?;
            if data.len() as u64 != size {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} bytes instead of the {size} recorded", data.len()),
                ));
            }
            Ok(data)
        }
        Ok(Some(size)) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("records {size} bytes, more than the {MAX_DECOMPRESSED} allowed"),
        )),
        // No size recorded (not written by pgpilot): stream it.
        Ok(None) => {
            let mut out = Vec::new();
            decompress_into(compressed, &mut out)?;
            Ok(out)
        }
        Err(e) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not a zstd frame: {e:?}"),
        )),
    }
}

/// Decompress `compressed` into `out`, returning the SHA-256 and the length
/// of what was written.
pub fn decompress_into(compressed: &[u8], out: &mut impl Write) -> std::io::Result<(String, u64)> {
    decompress_to(compressed, out).map_err(|e| match e {
        StreamFailure::Decode(e) | StreamFailure::Write(e) => e,
    })
}

/// Why [`decompress_to`] stopped: the compressed bytes, or the writer.
#[derive(Debug)]
pub enum StreamFailure {
    Decode(std::io::Error),
    Write(std::io::Error),
}

/// Decompress `compressed` into `out` in [`PIECE`]s while a second thread
/// hashes each piece written; returns the SHA-256 and the length written.
/// Stops past [`MAX_DECOMPRESSED`] bytes.
pub fn decompress_to(
    compressed: &[u8],
    out: &mut impl Write,
) -> Result<(String, u64), StreamFailure> {
    let mut decoder =
        zstd::stream::read::Decoder::with_buffer(compressed).map_err(StreamFailure::Decode)?;
    let mut total = 0u64;
    let (written, sha) = hashed_aside(|pipe| loop {
        let mut buf = pipe.buffer().map_err(StreamFailure::Decode)?;
        let n = fill(&mut decoder, &mut buf).map_err(StreamFailure::Decode)?;
        if n == 0 {
            return Ok(());
        }
        total += n as u64;
        if total > MAX_DECOMPRESSED {
            return Err(StreamFailure::Decode(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("more than the {MAX_DECOMPRESSED} bytes allowed"),
            )));
        }
        out.write_all(&buf[..n]).map_err(StreamFailure::Write)?;
        buf.truncate(n);
        pipe.hash(buf).map_err(StreamFailure::Decode)?;
    });
    written?;
    let sha = sha.ok_or_else(|| StreamFailure::Decode(hasher_stopped()))?;
    Ok((sha, total))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fake 16 MiB-segment first page: long header for `segment` of `sysid`.
    pub(crate) fn fake_segment(sysid: u64, name: &str, len: usize, fill: u8) -> Vec<u8> {
        let wal = WalName::parse(name).unwrap();
        let seg_size: u32 = 16 << 20;
        let mut data = vec![fill; len];
        data[0..2].copy_from_slice(&0xD110u16.to_ne_bytes());
        data[2..4].copy_from_slice(&XLP_LONG_HEADER.to_ne_bytes());
        data[4..8].copy_from_slice(&wal.timeline().to_ne_bytes());
        data[8..16].copy_from_slice(&segment_start(&wal, seg_size).unwrap().to_ne_bytes());
        data[16..24].copy_from_slice(&[0; 8]);
        data[24..32].copy_from_slice(&sysid.to_ne_bytes());
        data[32..36].copy_from_slice(&seg_size.to_ne_bytes());
        data[36..40].copy_from_slice(&8192u32.to_ne_bytes());
        data
    }

    #[test]
    fn header_is_parsed() {
        let data = fake_segment(42, "000000010000000200000003", 8192, 0);
        let header = long_page_header(&data).unwrap();
        assert_eq!(header.system_identifier, 42);
        assert_eq!(header.segment_size, 16 << 20);
        assert_eq!(header.page_address, (2u64 << 32) | (3 << 24));
        assert!(long_page_header(&data[..20]).is_none());
        assert!(long_page_header(&[0u8; 100]).is_none());
    }

    #[test]
    fn segment_positions() {
        let wal = WalName::parse("0000000100000001000000FF").unwrap();
        assert_eq!(
            segment_start(&wal, 16 << 20),
            Some((1u64 << 32) + 0xFF * (16 << 20))
        );
        let wal = WalName::parse("000000010000000100000100").unwrap();
        assert_eq!(segment_start(&wal, 16 << 20), None);
    }

    #[test]
    fn compress_round_trip() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let sha = sha256_hex(&data);
        let compressed = compress(&data, 3).unwrap();
        assert!(compressed.len() < data.len());
        let mut out = Vec::new();
        let (sha2, len) = decompress_into(&compressed, &mut out).unwrap();
        assert_eq!((sha2, len), (sha.clone(), data.len() as u64));
        assert_eq!(out, data);
        assert_eq!(decompress(&compressed).unwrap(), data);
        assert!(decompress(b"not zstd").is_err());
        // The zstd checksum catches a flipped byte.
        let mut bad = compressed.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 1;
        let result = decompress_into(&bad, &mut Vec::new());
        assert!(result.is_err() || result.unwrap().0 != sha);
    }

    #[test]
    fn streamed_decompression_tells_reading_from_writing_failures() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::from(std::io::ErrorKind::StorageFull))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let data: Vec<u8> = (0..(3 << 20) + 5).map(|i| (i % 253) as u8).collect();
        let compressed = compress(&data, 3).unwrap();
        let mut out = Vec::new();
        let (sha, len) = decompress_to(&compressed, &mut out).ok().unwrap();
        assert_eq!((sha, len), (sha256_hex(&data), data.len() as u64));
        assert_eq!(out, data);
        assert!(matches!(
            decompress_to(&compressed, &mut Full),
            Err(StreamFailure::Write(_))
        ));
        assert!(matches!(
            decompress_to(b"not zstd at all", &mut Vec::new()),
            Err(StreamFailure::Decode(_))
        ));
    }

    #[test]
    fn files_are_packed_in_one_read_on_any_number_of_threads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        // Several pieces and jobs, and not a multiple of either.
        let mut data = fake_segment(9, "000000010000000000000007", (5 << 20) + 17, 0);
        for (i, b) in data.iter_mut().enumerate().skip(64) {
            *b = ((i * 7) % 251) as u8 ^ (i >> 12) as u8;
        }
        std::fs::write(&path, &data).unwrap();
        for workers in [0, 1, 2] {
            let packed = pack_file(&path, 3, workers).unwrap();
            assert_eq!(packed.sha256, sha256_hex(&data), "{workers}");
            assert_eq!(packed.size, data.len() as u64);
            assert_eq!(packed.header.unwrap().system_identifier, 9);
            assert_eq!(packed.stamp, FileStamp::of_path(&path).unwrap());
            assert!(packed.compressed.len() < data.len());
            // One frame, with its size: decompress() takes the fast path.
            assert_eq!(
                zstd::zstd_safe::get_frame_content_size(&packed.compressed).ok(),
                Some(Some(data.len() as u64))
            );
            assert_eq!(decompress(&packed.compressed).unwrap(), data);
            let (sha, len) = decompress_to(&packed.compressed, &mut std::io::sink())
                .ok()
                .unwrap();
            assert_eq!((sha, len), (sha256_hex(&data), data.len() as u64));
        }
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        let packed = pack_file(&empty, 3, 2).unwrap();
        assert_eq!((packed.size, packed.header), (0, None));
        assert_eq!(decompress(&packed.compressed).unwrap(), b"");
    }

    #[test]
    fn a_stamp_changes_with_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let first = FileStamp::of_path(&path).unwrap();
        assert_eq!(FileStamp::of_path(&path).unwrap(), first);
        // Same size, rewritten in place: the change time moves on.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, b"abd").unwrap();
        assert_ne!(FileStamp::of_path(&path).unwrap(), first);
        // Replaced by another file: another inode.
        let other = dir.path().join("g");
        std::fs::write(&other, b"abc").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert_ne!(FileStamp::of_path(&path).unwrap().ino, first.ino);
    }

    #[test]
    fn files_are_hashed_in_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        // Larger than the 1 MiB buffer, and not a multiple of it.
        let data = fake_segment(9, "000000010000000000000007", (3 << 20) + 17, 5);
        std::fs::write(&path, &data).unwrap();
        let digest = hash_file(&path).unwrap();
        assert_eq!(digest.sha256, sha256_hex(&data));
        assert_eq!(digest.size, data.len() as u64);
        assert_eq!(digest.header.unwrap().system_identifier, 9);
        std::fs::write(&path, b"not wal").unwrap();
        assert_eq!(hash_file(&path).unwrap().header, None);
    }

    #[test]
    fn hex() {
        assert_eq!(to_hex(&[0, 1, 0xab, 0xff]), "0001abff");
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
