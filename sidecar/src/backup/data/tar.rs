//! The tar format of the data parts: POSIX ustar headers, a PAX `path`
//! record for names longer than ustar holds, regular files only. Each part
//! is a whole archive (ends with two zero blocks), so an operator can read
//! one with `zstd -dc 00003.tar.zst | tar -tv`.
//!
//! pgpilot writes the headers itself, straight into the part's buffer, and
//! reads them back from a decompressing stream; the manifest, not the tar
//! headers, is what restore trusts (every entry is checked against it).

use std::io::{self, Read};

pub const BLOCK: usize = 512;

fn octal(field: &mut [u8], value: u64) {
    // Width - 1 digits, then NUL.
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    field[digits] = 0;
}

fn header(name: &[u8], size: u64, mode: u32, mtime: i64, kind: u8) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], u64::from(mode & 0o7777));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime.max(0) as u64);
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    octal(&mut h[148..155], u64::from(sum));
    h[155] = b' ';
    h
}

/// Append the header(s) of a regular-file entry to `out`; the caller then
/// appends exactly `size` bytes of data and calls [`pad`].
pub fn append_header(out: &mut Vec<u8>, name: &str, size: u64, mode: u32, mtime: i64) {
    let bytes = name.as_bytes();
    if bytes.len() <= 100 {
        out.extend_from_slice(&header(bytes, size, mode, mtime, b'0'));
        return;
    }
    // PAX extended header: "<len> path=<name>\n", len counting itself.
    let body_len = " path=\n".len() + bytes.len();
    let mut len = body_len + 1;
    while len != body_len + len.to_string().len() {
        len = body_len + len.to_string().len();
    }
    let record = format!("{len} path={name}\n");
    out.extend_from_slice(&header(
        b"././@PaxHeader",
        record.len() as u64,
        0o644,
        mtime,
        b'x',
    ));
    out.extend_from_slice(record.as_bytes());
    pad(out);
    let short: Vec<u8> = bytes[bytes.len() - 100..].to_vec();
    out.extend_from_slice(&header(&short, size, mode, mtime, b'0'));
}

/// Zero-fill to the next block boundary.
pub fn pad(out: &mut Vec<u8>) {
    let rem = out.len() % BLOCK;
    if rem != 0 {
        out.resize(out.len() + BLOCK - rem, 0);
    }
}

/// End of archive: two zero blocks.
pub fn finish(out: &mut Vec<u8>) {
    pad(out);
    out.resize(out.len() + 2 * BLOCK, 0);
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| *b != 0 && *b != b' ')
        .collect();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&text).ok()?, 8).ok()
}

fn invalid(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

/// Reads entries one after the other from a stream.
pub struct Reader<R: Read> {
    inner: R,
    /// Data bytes of the current entry not yet read, then its padding.
    remaining: u64,
    padding: u64,
}

/// One regular-file entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub size: u64,
}

impl<R: Read> Reader<R> {
    pub fn new(inner: R) -> Self {
        Reader {
            inner,
            remaining: 0,
            padding: 0,
        }
    }

    fn skip(&mut self, mut n: u64) -> io::Result<()> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let want = n.min(buf.len() as u64) as usize;
            self.inner.read_exact(&mut buf[..want])?;
            n -= want as u64;
        }
        Ok(())
    }

    /// The next entry, or `None` at the end of the archive. Skips what is
    /// left of the previous entry.
    pub fn next_entry(&mut self) -> io::Result<Option<Entry>> {
        self.skip(self.remaining + self.padding)?;
        self.remaining = 0;
        self.padding = 0;
        let mut long_name: Option<String> = None;
        loop {
            let mut block = [0u8; BLOCK];
            self.inner.read_exact(&mut block)?;
            if block.iter().all(|b| *b == 0) {
                return Ok(None);
            }
            let stored: u64 =
                parse_octal(&block[148..156]).ok_or_else(|| invalid("bad checksum field"))?;
            let mut sum: u64 = block.iter().map(|b| u64::from(*b)).sum();
            sum -= block[148..156].iter().map(|b| u64::from(*b)).sum::<u64>();
            sum += 8 * u64::from(b' ');
            if sum != stored {
                return Err(invalid("tar header checksum mismatch"));
            }
            let size = parse_octal(&block[124..136]).ok_or_else(|| invalid("bad size field"))?;
            let padding = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
            match block[156] {
                b'x' => {
                    if size > 1 << 20 {
                        return Err(invalid("PAX header too large"));
                    }
                    let mut data = vec![0u8; size as usize];
                    self.inner.read_exact(&mut data)?;
                    self.skip(padding)?;
                    long_name = parse_pax_path(&data);
                }
                b'0' | 0 => {
                    let name = match long_name.take() {
                        Some(name) => name,
                        None => {
                            let end = block[..100].iter().position(|b| *b == 0).unwrap_or(100);
                            let mut name = String::from_utf8_lossy(&block[..end]).into_owned();
                            let prefix_end =
                                block[345..500].iter().position(|b| *b == 0).unwrap_or(155);
                            if prefix_end > 0 {
                                let prefix = String::from_utf8_lossy(&block[345..345 + prefix_end]);
                                name = format!("{prefix}/{name}");
                            }
                            name
                        }
                    };
                    self.remaining = size;
                    self.padding = padding;
                    return Ok(Some(Entry { name, size }));
                }
                other => {
                    return Err(invalid(format!(
                        "unexpected tar entry type {:?}",
                        other as char
                    )))
                }
            }
        }
    }

    /// Read data of the current entry; 0 at its end.
    pub fn read_data(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.remaining as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the part ends in the middle of an entry",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }

    /// The stream after the end-of-archive blocks must hold nothing else.
    pub fn finish(mut self) -> io::Result<()> {
        let mut rest = Vec::new();
        self.inner.read_to_end(&mut rest)?;
        // The second zero block (and any zero padding) may follow.
        if rest.iter().any(|b| *b != 0) {
            return Err(invalid("data after the end of the archive"));
        }
        Ok(())
    }
}

impl<'a> Reader<&'a [u8]> {
    /// The whole data of the current entry, without copying it (an archive
    /// held in memory). A data slice starts at a multiple of [`BLOCK`]
    /// from the start of the archive.
    pub fn take_data(&mut self) -> io::Result<&'a [u8]> {
        let want = self.remaining as usize;
        if self.inner.len() < want {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the part ends in the middle of an entry",
            ));
        }
        let (data, rest) = self.inner.split_at(want);
        self.inner = rest;
        self.remaining = 0;
        Ok(data)
    }
}

fn parse_pax_path(data: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(data).ok()?;
    let mut rest = text;
    while !rest.is_empty() {
        let (len, _) = rest.split_once(' ')?;
        let len: usize = len.parse().ok()?;
        let record = rest.get(..len)?;
        rest = &rest[len..];
        let (_, kv) = record.split_once(' ')?;
        if let Some(value) = kv.strip_prefix("path=") {
            return Some(value.strip_suffix('\n').unwrap_or(value).to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data) in entries {
            append_header(&mut out, name, data.len() as u64, 0o600, 1_700_000_000);
            out.extend_from_slice(data);
            pad(&mut out);
        }
        finish(&mut out);
        out
    }

    #[test]
    fn round_trip() {
        let long = format!("pg_tblspc/16400/{}/file", "d".repeat(120));
        let big = vec![7u8; 5000];
        let entries: Vec<(&str, &[u8])> = vec![
            ("PG_VERSION", b"15\n"),
            ("empty", b""),
            (&long, b"long name"),
            ("base/1/1259", &big),
        ];
        let bytes = build(&entries);
        assert_eq!(bytes.len() % BLOCK, 0);
        let mut reader = Reader::new(&bytes[..]);
        for (name, data) in &entries {
            let entry = reader.next_entry().unwrap().unwrap();
            assert_eq!(entry.name, *name);
            assert_eq!(entry.size, data.len() as u64);
            let mut got = Vec::new();
            let mut buf = [0u8; 1000];
            loop {
                let n = reader.read_data(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, *data);
        }
        assert_eq!(reader.next_entry().unwrap(), None);
        reader.finish().unwrap();

        // The same archive in memory, without copies.
        let mut reader = Reader::new(&bytes[..]);
        for (name, data) in &entries {
            assert_eq!(reader.next_entry().unwrap().unwrap().name, *name);
            let got = reader.take_data().unwrap();
            assert_eq!(got, *data);
            assert_eq!((got.as_ptr() as usize - bytes.as_ptr() as usize) % BLOCK, 0);
        }
        assert_eq!(reader.next_entry().unwrap(), None);
        reader.finish().unwrap();
        // Cut in the middle of an entry's data.
        let mut reader = Reader::new(&bytes[..BLOCK + 2]);
        reader.next_entry().unwrap();
        assert!(reader.take_data().is_err());
    }

    #[test]
    fn skipping_and_damage() {
        let bytes = build(&[("a", b"0123456789"), ("b", b"x")]);
        let mut reader = Reader::new(&bytes[..]);
        assert_eq!(reader.next_entry().unwrap().unwrap().name, "a");
        assert_eq!(reader.next_entry().unwrap().unwrap().name, "b");
        let mut bad = bytes.clone();
        bad[3] ^= 1;
        assert!(Reader::new(&bad[..]).next_entry().is_err());
        // Truncated in the middle of the data.
        let mut reader = Reader::new(&bytes[..BLOCK + 4]);
        reader.next_entry().unwrap();
        let mut buf = [0u8; 100];
        assert_eq!(reader.read_data(&mut buf).unwrap(), 4);
        assert!(reader.read_data(&mut buf).is_err());
    }

    #[test]
    fn system_tar_reads_our_archives() {
        let dir = tempfile::tempdir().unwrap();
        let long = format!("{}/f", "n".repeat(150));
        let bytes = build(&[("PG_VERSION", b"15\n"), (&long, b"x")]);
        let path = dir.path().join("a.tar");
        std::fs::write(&path, bytes).unwrap();
        // tar is on every machine pgpilot runs on: not finding it is a failure.
        let out = std::process::Command::new("tar")
            .arg("-tf")
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("cannot run tar: {e}"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            listed.lines().collect::<Vec<_>>(),
            vec!["PG_VERSION", long.as_str()]
        );
    }
}
