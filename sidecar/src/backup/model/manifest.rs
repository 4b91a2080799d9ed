//! The manifest: everything a backup holds and everything a restore needs,
//! in `backup/<label>/manifest.json`. Restore and verify read only this.
//!
//! Written last, once the data parts are stored and the WAL from the start
//! to the stop LSN is archived: a backup without a manifest is incomplete.
//!
//! ```text
//! {"format":1,"sha256":"<SHA-256 of the manifest text>","manifest":{
//!   "label":"20260101-093000F","type":"full","prior":null,"reference":[],
//!   "system_identifier":"7301...","pg_version":"15","timeline":1,
//!   "start_lsn":"0/2000028","stop_lsn":"0/2000100","start_wal":"0000000100...02", ...
//!   "backup_label":"START WAL LOCATION: ...","tablespace_map":null,
//!   "parts":[{"index":0,"size":1234,"raw_size":40960,"sha256":"..."}],
//!   "directories":[{"path":"base","mode":448}, ...],
//!   "links":[{"path":"pg_tblspc/16400","target":"/srv/ts1"}],
//!   "files":[{"path":"base/5/1259","size":90112,"mtime":1767259800,"mtime_ns":12,
//!             "mode":384,"sha256":"...","reference":null,
//!             "pieces":[{"part":0,"offset":0,"len":90112}]}, ...],
//!   "page_checksums":true,"error":false}}
//! ```
//!
//! A file's data is in one or more *pieces*, each one tar entry of a data
//! part of the backup named by `reference` (this backup when null). A file
//! larger than a part is cut into pieces (tar entries named
//! `<path>.pgpilot-piece-NNNN`); each of those carries its own SHA-256, so
//! the pieces of a file can be hashed, restored and checked in parallel,
//! and the file's `sha256` is then the SHA-256 of its pieces' (see
//! [`pieces_sha256`]). A file stored whole (entry named `<path>`) has the
//! SHA-256 of its content.
//! The `sha256` of the envelope covers the manifest's exact text.
//!
//! With data checksums on, the backup verifies the pages of relation files
//! as it copies them (`data::pagecheck`): a file with pages that failed
//! lists their blocks in `checksum_errors` (`checksum_error_count` counts
//! them all), and the manifest's `error` is set; the data is stored as it
//! was read. A file an incremental refers to keeps the list of the copy it
//! refers to. Manifests written before these fields read as "not checked,
//! no error".

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::archive::wal::to_hex;
use crate::backup::{BackupError, Context};
use crate::repo::layout::Layout;
use crate::repo::{PutMode, Storage, StorageError};

/// Format of manifests this pgpilot writes and reads.
pub const FORMAT: u32 = 1;

/// Block numbers kept per file in the manifest; the count goes on.
pub const MAX_LISTED: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    Full,
    Incr,
}

impl BackupType {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupType::Full => "full",
            BackupType::Incr => "incr",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compression {
    /// Always "zstd".
    pub kind: String,
    pub level: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub label: String,
    #[serde(rename = "type")]
    pub backup_type: BackupType,
    /// The backup this one is incremental to.
    pub prior: Option<String>,
    /// Every other backup whose parts this one's files are in, oldest first.
    pub reference: Vec<String>,
    pub stanza: String,
    /// The cluster's system identifier (decimal).
    pub system_identifier: String,
    /// Major version (`PG_VERSION`), and `server_version_num`.
    pub pg_version: String,
    pub pg_version_num: i32,
    /// Taken from a standby.
    pub from_standby: bool,
    /// Timeline of the start and of the stop position.
    pub timeline: u32,
    pub stop_timeline: u32,
    pub start_lsn: String,
    pub stop_lsn: String,
    /// First and last WAL segment the backup needs.
    pub start_wal: String,
    pub stop_wal: String,
    pub wal_segment_size: u64,
    /// Microseconds since the epoch: pg_backup_start called, pg_backup_stop returned.
    pub start_time_us: i64,
    pub stop_time_us: i64,
    /// The files PostgreSQL's pg_backup_stop returned, written into the
    /// data directory on restore.
    pub backup_label: String,
    pub tablespace_map: Option<String>,
    pub compression: Compression,
    pub pgpilot_version: String,
    /// This backup's own data parts.
    pub parts: Vec<Part>,
    pub directories: Vec<Dir>,
    pub links: Vec<Link>,
    pub files: Vec<File>,
    /// The pages of relation files were verified against their checksums
    /// while copied (the cluster has data checksums).
    #[serde(default)]
    pub page_checksums: bool,
    /// Blocks per relation segment file (`RELSEG_SIZE`), recorded with
    /// page checks so that a restore can number the blocks of `<node>.N`
    /// files; absent in manifests written before restores checked pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_blocks: Option<u32>,
    /// A file of this backup (copied by it or referred to) holds pages
    /// that failed their checksum: see the files' `checksum_errors`.
    #[serde(default)]
    pub error: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub index: u32,
    /// Bytes stored (compressed).
    pub size: u64,
    /// Bytes of the tar inside.
    pub raw_size: u64,
    /// SHA-256 of the stored bytes.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dir {
    pub path: String,
    pub mode: u32,
}

/// A symbolic link of the data directory: a tablespace (`pg_tblspc/<oid>`)
/// or `pg_wal`. The files under it are in the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub path: String,
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct File {
    pub path: String,
    pub size: u64,
    pub mtime: i64,
    pub mtime_ns: u32,
    pub mode: u32,
    pub sha256: String,
    /// The backup whose parts hold the data; `None`: this one.
    pub reference: Option<String>,
    pub pieces: Vec<Piece>,
    /// Blocks whose page failed its checksum when the file was copied,
    /// ascending, at most [`MAX_LISTED`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checksum_errors: Vec<u32>,
    /// How many pages failed in all.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub checksum_error_count: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    pub part: u32,
    /// Where in the file this piece goes.
    pub offset: u64,
    pub len: u64,
    /// Present when the file has more than one piece.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl File {
    /// Stored as pieces that carry their own SHA-256 (a file cut across parts).
    pub fn is_split(&self) -> bool {
        self.pieces.iter().any(|p| p.sha256.is_some())
    }

    /// The tar entry name of piece `index`.
    pub fn entry_name(&self, index: usize) -> String {
        if self.is_split() {
            format!("{}.pgpilot-piece-{index:04}", self.path)
        } else {
            self.path.clone()
        }
    }

    /// Pages of the stored copy failed their checksum.
    pub fn has_page_errors(&self) -> bool {
        self.checksum_error_count > 0
    }

    /// The SHA-256 piece `index` must have.
    pub fn piece_sha256(&self, index: usize) -> &str {
        match self.pieces.get(index).and_then(|p| p.sha256.as_deref()) {
            Some(sha) => sha,
            None => &self.sha256,
        }
    }
}

impl Manifest {
    /// The backup holding `file`'s data.
    pub fn data_label<'a>(&'a self, file: &'a File) -> &'a str {
        file.reference.as_deref().unwrap_or(&self.label)
    }

    pub fn start_lsn(&self) -> u64 {
        crate::lsn::parse_lsn(&self.start_lsn).unwrap_or(0)
    }

    pub fn stop_lsn(&self) -> u64 {
        crate::lsn::parse_lsn(&self.stop_lsn).unwrap_or(0)
    }

    /// The files holding pages that failed their checksum.
    pub fn damaged_files(&self) -> impl Iterator<Item = &File> {
        self.files.iter().filter(|f| f.has_page_errors())
    }

    /// Sum of the file sizes.
    pub fn data_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Bytes of the files stored by this backup itself.
    pub fn delta_size(&self) -> u64 {
        self.files
            .iter()
            .filter(|f| f.reference.is_none())
            .map(|f| f.size)
            .sum()
    }

    /// Bytes stored by this backup itself (compressed).
    pub fn stored_size(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum()
    }

    /// Checks on the content that the checksum cannot make: paths stay
    /// inside the data directory, pieces cover each file exactly once,
    /// pieces point at parts that exist.
    pub fn validate(&self) -> Result<(), String> {
        check_label(&self.label)?;
        for label in self.reference.iter().chain(self.prior.iter()) {
            check_label(label)?;
        }
        if self.compression.kind != "zstd" {
            return Err(format!("unknown compression {:?}", self.compression.kind));
        }
        if !self.wal_segment_size.is_power_of_two() || self.wal_segment_size < 1 << 20 {
            return Err(format!("bad wal_segment_size {}", self.wal_segment_size));
        }
        let own_parts: std::collections::BTreeSet<u32> =
            self.parts.iter().map(|p| p.index).collect();
        for dir in &self.directories {
            check_path(&dir.path)?;
        }
        for link in &self.links {
            check_path(&link.path)?;
            let allowed = link.path == "pg_wal"
                || link
                    .path
                    .strip_prefix("pg_tblspc/")
                    .is_some_and(|oid| !oid.is_empty() && oid.bytes().all(|b| b.is_ascii_digit()));
            if !allowed || !link.target.starts_with('/') {
                return Err(format!(
                    "link {} -> {} is not a tablespace or pg_wal link to an absolute path",
                    link.path, link.target
                ));
            }
        }
        for file in &self.files {
            check_path(&file.path)?;
            if !crate::repo::layout::is_sha256_hex(&file.sha256) {
                return Err(format!("{}: bad sha256", file.path));
            }
            let mut next = 0;
            let split = file.is_split();
            for piece in &file.pieces {
                if piece.offset != next || piece.len == 0 {
                    return Err(format!("{}: pieces do not cover the file", file.path));
                }
                next += piece.len;
                if (split || file.pieces.len() > 1)
                    && !piece
                        .sha256
                        .as_deref()
                        .is_some_and(crate::repo::layout::is_sha256_hex)
                {
                    return Err(format!("{}: a piece has no sha256", file.path));
                }
                match &file.reference {
                    None if !own_parts.contains(&piece.part) => {
                        return Err(format!(
                            "{}: part {} is not one of this backup's",
                            file.path, piece.part
                        ))
                    }
                    Some(label) if !self.reference.contains(label) => {
                        return Err(format!(
                            "{}: refers to {label}, not in the reference list",
                            file.path
                        ))
                    }
                    _ => {}
                }
            }
            if next != file.size {
                return Err(format!("{}: pieces do not cover the file", file.path));
            }
            if split && pieces_sha256(&file.pieces) != file.sha256 {
                return Err(format!(
                    "{}: the sha256 is not that of its pieces",
                    file.path
                ));
            }
            if (file.checksum_error_count as usize) < file.checksum_errors.len() {
                return Err(format!(
                    "{}: lists more damaged pages than it counts",
                    file.path
                ));
            }
        }
        if self.error != self.damaged_files().next().is_some() {
            return Err("the error flag does not match the files' page checksum errors".into());
        }
        Ok(())
    }

    pub async fn load(
        storage: &dyn Storage,
        layout: &Layout,
        label: &str,
    ) -> Result<Manifest, LoadError> {
        let key = layout.manifest_key(label);
        let bytes = storage
            .get(&key)
            .await
            .map_err(LoadError::Storage)?
            .into_bytes(&key, 4 << 30)
            .await
            .map_err(LoadError::Storage)?;
        let manifest: Manifest =
            unseal(&bytes).map_err(|why| LoadError::Corrupt(format!("{key}: {why}")))?;
        manifest
            .validate()
            .map_err(|why| LoadError::Corrupt(format!("{key}: {why}")))?;
        if manifest.label != label {
            return Err(LoadError::Corrupt(format!(
                "{key} describes backup {}, not {label}",
                manifest.label
            )));
        }
        Ok(manifest)
    }

    /// Store the manifest (create-only: a label is never reused).
    pub async fn store(&self, storage: &dyn Storage, layout: &Layout) -> Result<(), StorageError> {
        storage
            .put(
                &layout.manifest_key(&self.label),
                seal(self).into(),
                PutMode::CreateNew,
            )
            .await
            .map(|_| ())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Storage(StorageError),
    #[error("{0}")]
    Corrupt(String),
}

/// A manifest or catalog that could not be loaded, as a command's error.
pub(crate) fn load_error(context: &Context, e: LoadError) -> BackupError {
    match e {
        LoadError::Storage(e) => context.repo_err(e),
        LoadError::Corrupt(why) => BackupError::Corrupt(why),
    }
}

/// The `sha256` of a file cut into pieces: the SHA-256 of the pieces'
/// SHA-256s, each as lower-case hex followed by a newline, in order
/// (`sha256sum` of the pieces, `cut -c1-64`, then `sha256sum`).
pub fn pieces_sha256(pieces: &[Piece]) -> String {
    let mut hasher = Sha256::new();
    for piece in pieces {
        hasher.update(piece.sha256.as_deref().unwrap_or("").as_bytes());
        hasher.update(b"\n");
    }
    to_hex(&hasher.finalize())
}

/// Labels are plain names: they become key segments.
pub fn check_label(label: &str) -> Result<(), String> {
    let ok = !label.is_empty()
        && label.len() <= 100
        && !label.starts_with('.')
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{label:?} is not a backup label (letters, digits, '-', '_', '.'; up to 100)"
        ))
    }
}

/// A relative path inside the data directory.
pub fn check_path(path: &str) -> Result<(), String> {
    let ok = !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\0')
        && path
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{path:?} is not a relative path inside the data directory"
        ))
    }
}

#[derive(Serialize)]
struct SealedOut<'a> {
    format: u32,
    sha256: String,
    manifest: &'a serde_json::value::RawValue,
}

#[derive(Deserialize)]
struct SealedIn<'a> {
    format: u32,
    sha256: String,
    #[serde(borrow)]
    manifest: &'a serde_json::value::RawValue,
}

/// `{"format":1,"sha256":"<of the body's text>","manifest":<body>}`.
pub fn seal<T: Serialize>(value: &T) -> Vec<u8> {
    let body = serde_json::to_string(value).expect("serializable");
    let raw = serde_json::value::RawValue::from_string(body).expect("valid JSON");
    let sha256 = to_hex(&Sha256::digest(raw.get().as_bytes()));
    serde_json::to_vec(&SealedOut {
        format: FORMAT,
        sha256,
        manifest: &raw,
    })
    .expect("serializable")
}

/// Parse what [`seal`] wrote, refusing a body whose SHA-256 differs.
pub fn unseal<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let sealed: SealedIn<'_> =
        serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON ({e})"))?;
    if sealed.format != FORMAT {
        return Err(format!(
            "format {} is not {FORMAT}: written by another pgpilot version?",
            sealed.format
        ));
    }
    let got = to_hex(&Sha256::digest(sealed.manifest.get().as_bytes()));
    if got != sealed.sha256 {
        return Err(format!(
            "checksum mismatch: the content hashes to {got}, the envelope says {}",
            sealed.sha256
        ));
    }
    serde_json::from_str(sealed.manifest.get()).map_err(|e| format!("unexpected content ({e})"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        let sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".to_string();
        let mut m = Manifest {
            label: "20260101-000000F".into(),
            backup_type: BackupType::Full,
            prior: None,
            reference: vec![],
            stanza: "demo".into(),
            system_identifier: "7".into(),
            pg_version: "15".into(),
            pg_version_num: 150_000,
            from_standby: false,
            timeline: 1,
            stop_timeline: 1,
            start_lsn: "0/2000028".into(),
            stop_lsn: "0/2000100".into(),
            start_wal: "000000010000000000000002".into(),
            stop_wal: "000000010000000000000002".into(),
            wal_segment_size: 16 << 20,
            start_time_us: 1,
            stop_time_us: 2,
            backup_label: "START WAL LOCATION: 0/2000028".into(),
            tablespace_map: None,
            compression: Compression {
                kind: "zstd".into(),
                level: 3,
            },
            pgpilot_version: "test".into(),
            parts: vec![Part {
                index: 0,
                size: 10,
                raw_size: 20,
                sha256: sha.clone(),
            }],
            directories: vec![Dir {
                path: "base".into(),
                mode: 0o700,
            }],
            links: vec![],
            files: vec![
                File {
                    path: "PG_VERSION".into(),
                    size: 3,
                    mtime: 1,
                    mtime_ns: 0,
                    mode: 0o600,
                    sha256: sha.clone(),
                    reference: None,
                    pieces: vec![Piece {
                        part: 0,
                        offset: 0,
                        len: 3,
                        sha256: None,
                    }],
                    checksum_errors: vec![],
                    checksum_error_count: 0,
                },
                File {
                    path: "base/1/1".into(),
                    size: 10,
                    mtime: 1,
                    mtime_ns: 0,
                    mode: 0o600,
                    sha256: sha.clone(),
                    reference: None,
                    pieces: vec![
                        Piece {
                            part: 0,
                            offset: 0,
                            len: 4,
                            sha256: Some(sha.clone()),
                        },
                        Piece {
                            part: 0,
                            offset: 4,
                            len: 6,
                            sha256: Some(sha.clone()),
                        },
                    ],
                    checksum_errors: vec![],
                    checksum_error_count: 0,
                },
            ],
            page_checksums: true,
            segment_blocks: Some(131_072),
            error: false,
        };
        m.files[1].sha256 = pieces_sha256(&m.files[1].pieces);
        m
    }

    #[test]
    fn seal_round_trip_and_tamper() {
        let m = sample();
        m.validate().unwrap();
        let bytes = seal(&m);
        let back: Manifest = unseal(&bytes).unwrap();
        assert_eq!(back, m);
        // A changed byte inside the body: the checksum catches it.
        let text = String::from_utf8(bytes.clone()).unwrap();
        let tampered = text.replacen("\"size\":3", "\"size\":4", 1);
        assert_ne!(tampered, text);
        let err = unseal::<Manifest>(tampered.as_bytes()).unwrap_err();
        assert!(err.contains("checksum mismatch"), "{err}");
        let mut flipped = bytes.clone();
        flipped[bytes.len() / 2] ^= 0x01;
        assert!(unseal::<Manifest>(&flipped).is_err());
        assert_eq!(m.files[1].entry_name(1), "base/1/1.pgpilot-piece-0001");
        assert_eq!(m.files[0].entry_name(0), "PG_VERSION");
    }

    #[test]
    fn validation() {
        let mut m = sample();
        m.files[0].path = "../etc/passwd".into();
        assert!(m.validate().is_err());
        let mut m = sample();
        m.files[1].pieces[1].offset = 5;
        assert!(m.validate().is_err());
        let mut m = sample();
        m.files[0].pieces[0].part = 9;
        assert!(m.validate().is_err());
        let mut m = sample();
        m.links.push(Link {
            path: "etc".into(),
            target: "/etc".into(),
        });
        assert!(m.validate().is_err());
        let mut m = sample();
        m.files[0].reference = Some("20250101-000000F".into());
        assert!(m.validate().is_err());
        m.reference.push("20250101-000000F".into());
        m.validate().unwrap();
        // Page checksum errors and the backup's flag go together.
        let mut m = sample();
        m.files[1].checksum_errors = vec![1, 4];
        m.files[1].checksum_error_count = 2;
        assert!(m.validate().is_err());
        m.error = true;
        m.validate().unwrap();
        m.files[1].checksum_error_count = 1;
        assert!(m.validate().is_err());
    }

    #[test]
    fn manifests_without_page_check_fields_still_load() {
        // Written before page checks: no page_checksums, error or
        // checksum_errors keys.
        let mut value = serde_json::to_value(sample()).unwrap();
        let object = value.as_object_mut().unwrap();
        object.remove("page_checksums");
        object.remove("error");
        let text = value.to_string();
        assert!(!text.contains("checksum_error"));
        let old: Manifest = serde_json::from_str(&text).unwrap();
        assert!(!old.page_checksums && !old.error);
        old.validate().unwrap();
        // A damaged file round-trips its list.
        let mut m = sample();
        m.error = true;
        m.files[0].checksum_errors = vec![3];
        m.files[0].checksum_error_count = 7;
        let back: Manifest = unseal(&seal(&m)).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.damaged_files().count(), 1);
    }
}
