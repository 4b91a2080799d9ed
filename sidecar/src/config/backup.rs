//! The `[backup]` section of the member's file: the repository and how WAL
//! and backups are written to it. `docs/configuration.md` documents the
//! same keys for operators.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Invalid;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSection {
    /// Where backups and WAL go: `"posix"` (a directory) or `"s3"`.
    pub repository: RepositoryType,
    /// This cluster's area in the repository; default `cluster.scope`.
    #[serde(default)]
    pub stanza: Option<String>,
    /// zstd level for WAL and backups: 1 (fastest) to 19 (smallest).
    #[serde(default = "default_compression_level")]
    pub compression_level: i32,
    /// Transfers run at once (multipart parts; backup files).
    #[serde(default = "default_parallelism")]
    pub parallelism: usize,
    /// Seconds archive-push and archive-get may take before they give up
    /// with an error; also how long a backup waits for its WAL to be archived.
    #[serde(default = "default_archive_timeout")]
    pub archive_timeout: u64,
    /// Uncompressed MiB per data part of a base backup.
    #[serde(default = "default_part_mib")]
    pub part_mib: u64,
    /// Async WAL archiving: the running sidecar pushes ready segments ahead
    /// (`parallelism` at once) and archive-push returns at once for them;
    /// archive-get prefetches the next segments.
    #[serde(default)]
    pub archive_async: bool,
    /// Directory for async archiving's acknowledgements and prefetched WAL;
    /// default `<data_dir>.pgpilot-spool` beside the data directory.
    #[serde(default)]
    pub spool_path: Option<PathBuf>,
    /// Async archive-get: segments to prefetch ahead of recovery (0 = none).
    #[serde(default = "default_archive_get_queue")]
    pub archive_get_queue: usize,
    /// `pgpilot expire`: keep this many full backups (and their incrementals).
    #[serde(default)]
    pub retention_full: Option<u32>,
    /// `pgpilot expire`: keep the full backups of the last this many days,
    /// and the newest one before them (so that any time in the window can
    /// be restored).
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// The directory repository (with `repository = "posix"`).
    #[serde(default)]
    pub posix: Option<PosixSection>,
    /// The S3 repository (with `repository = "s3"`).
    #[serde(default)]
    pub s3: Option<S3Section>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RepositoryType {
    Posix,
    S3,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PosixSection {
    /// Absolute path of an existing directory, writable by PostgreSQL's OS user.
    pub path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UriStyle {
    /// `https://<bucket>.<endpoint host>/<key>` (virtual-hosted).
    #[default]
    Host,
    /// `https://<endpoint host>/<bucket>/<key>`.
    Path,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3Section {
    /// Endpoint URL (`https://host[:port]` or `http://...`); default: AWS's for `region`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region that requests are signed for.
    #[serde(default = "default_region")]
    pub region: String,
    /// Bucket name; the bucket must exist.
    pub bucket: String,
    /// Key prefix inside the bucket ("" = the bucket's top).
    #[serde(default)]
    pub prefix: String,
    /// `"host"` (bucket in the host name) or `"path"` (bucket in the path).
    #[serde(default)]
    pub uri_style: UriStyle,
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
    /// PEM file of the CA certificates to trust instead of the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Verify the server's TLS certificate. Off invites man-in-the-middle attacks.
    #[serde(default = "default_true")]
    pub verify_tls: bool,
    /// Server-side encryption: `"AES256"` or `"aws:kms"`.
    #[serde(default)]
    pub sse: Option<String>,
    /// KMS key id, with `sse = "aws:kms"`; default: the account's S3 key.
    #[serde(default)]
    pub sse_kms_key_id: Option<String>,
    /// Storage class of new objects (`STANDARD_IA`, ...); default: the bucket's.
    #[serde(default)]
    pub storage_class: Option<String>,
    /// MiB per part of a multipart upload; larger objects go up in parts.
    #[serde(default = "default_part_size_mib")]
    pub part_size_mib: u64,
    /// Seconds allowed to open a connection.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: u64,
    /// Seconds one request may take from sending to the server's response headers.
    #[serde(default = "default_read_timeout")]
    pub read_timeout: u64,
    /// Attempts per request, on 5xx, 429, timeouts and connection errors.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
}

fn default_compression_level() -> i32 {
    3
}
fn default_parallelism() -> usize {
    2
}
fn default_archive_timeout() -> u64 {
    60
}
fn default_part_mib() -> u64 {
    16
}
fn default_archive_get_queue() -> usize {
    8
}
fn default_region() -> String {
    "us-east-1".into()
}
fn default_true() -> bool {
    true
}
fn default_part_size_mib() -> u64 {
    16
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_read_timeout() -> u64 {
    60
}
fn default_max_attempts() -> u32 {
    4
}

/// A stanza or prefix segment: plain characters, never `.` or `..`.
fn check_segment(key: &str, value: &str) -> Result<(), Invalid> {
    if value.is_empty() || value.len() > 100 {
        return Err(Invalid::new(key, "must be 1 to 100 characters"));
    }
    if value == "." || value == ".." {
        return Err(Invalid::new(key, format!("{value:?} is not allowed")));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Invalid::new(
            key,
            format!("{value:?} may only contain letters, digits, '-', '_' and '.'"),
        ));
    }
    Ok(())
}

impl BackupSection {
    /// Where the repository is, for messages: its directory or `s3://bucket`.
    pub fn location(&self) -> String {
        match (&self.posix, &self.s3) {
            (Some(p), _) if self.repository == RepositoryType::Posix => {
                p.path.display().to_string()
            }
            (_, Some(s3)) => format!("s3://{}", s3.bucket),
            _ => "(unset)".into(),
        }
    }

    /// The stanza in use: `stanza`, else the cluster's scope.
    pub fn stanza<'a>(&'a self, scope: &'a str) -> &'a str {
        self.stanza.as_deref().unwrap_or(scope)
    }

    pub fn archive_timeout(&self) -> Duration {
        Duration::from_secs(self.archive_timeout)
    }

    /// The spool directory of async archiving: `spool_path`, else
    /// `<data_dir>.pgpilot-spool` beside the data directory (never inside
    /// it: pg_basebackup and base backups copy unknown files there).
    pub fn spool_dir(&self, data_dir: &std::path::Path) -> Result<PathBuf, Invalid> {
        if let Some(path) = &self.spool_path {
            return Ok(path.clone());
        }
        match (data_dir.parent(), data_dir.file_name()) {
            (Some(parent), Some(name)) => {
                let mut name = name.to_os_string();
                name.push(".pgpilot-spool");
                Ok(parent.join(name))
            }
            _ => Err(Invalid::new(
                "backup.spool_path",
                format!(
                    "no default beside the data directory {}: set it",
                    data_dir.display()
                ),
            )),
        }
    }

    /// The spool must be absolute and outside the data directory.
    pub fn validate_spool(&self, data_dir: &std::path::Path) -> Result<(), Invalid> {
        if let Some(path) = &self.spool_path {
            if !path.is_absolute() {
                return Err(Invalid::new(
                    "backup.spool_path",
                    "must be an absolute path",
                ));
            }
            if path.starts_with(data_dir) {
                return Err(Invalid::new(
                    "backup.spool_path",
                    format!(
                        "must be outside postgresql.data_dir ({}): base backups copy the files \
                         they find there",
                        data_dir.display()
                    ),
                ));
            }
        }
        if self.archive_async {
            self.spool_dir(data_dir)?;
        }
        Ok(())
    }

    /// Checks serde cannot express; the error names the key.
    pub fn validate(&self) -> Result<(), Invalid> {
        if let Some(stanza) = &self.stanza {
            check_segment("backup.stanza", stanza)?;
        }
        if !(1..=22).contains(&self.compression_level) {
            return Err(Invalid::new(
                "backup.compression_level",
                "must be between 1 and 22 (3 is a good default)",
            ));
        }
        if !(1..=64).contains(&self.parallelism) {
            return Err(Invalid::new(
                "backup.parallelism",
                "must be between 1 and 64",
            ));
        }
        if !(1..=86_400).contains(&self.archive_timeout) {
            return Err(Invalid::new(
                "backup.archive_timeout",
                "must be between 1 and 86400 seconds",
            ));
        }
        if !(1..=1024).contains(&self.part_mib) {
            return Err(Invalid::new(
                "backup.part_mib",
                "must be between 1 and 1024",
            ));
        }
        if self.archive_get_queue > 1024 {
            return Err(Invalid::new(
                "backup.archive_get_queue",
                "must be between 0 and 1024 segments",
            ));
        }
        if self.retention_full == Some(0) {
            return Err(Invalid::new(
                "backup.retention_full",
                "must be at least 1 (expire never removes the newest full backup)",
            ));
        }
        if self.retention_days == Some(0) {
            return Err(Invalid::new("backup.retention_days", "must be at least 1"));
        }
        match self.repository {
            RepositoryType::Posix => {
                let posix = self.posix.as_ref().ok_or_else(|| {
                    Invalid::new(
                        "backup.posix.path",
                        "repository = \"posix\" needs [backup.posix] with path",
                    )
                })?;
                if !posix.path.is_absolute() {
                    return Err(Invalid::new(
                        "backup.posix.path",
                        "must be an absolute path",
                    ));
                }
            }
            RepositoryType::S3 => {
                let s3 = self.s3.as_ref().ok_or_else(|| {
                    Invalid::new(
                        "backup.s3",
                        "repository = \"s3\" needs [backup.s3] with bucket, access_key and secret_key",
                    )
                })?;
                s3.validate()?;
            }
        }
        Ok(())
    }
}

impl S3Section {
    fn validate(&self) -> Result<(), Invalid> {
        if let Some(endpoint) = &self.endpoint {
            let host = endpoint_host(endpoint).ok_or_else(|| {
                Invalid::new(
                    "backup.s3.endpoint",
                    format!(
                        "{endpoint:?} must look like https://host[:port] or http://host[:port]"
                    ),
                )
            })?;
            let is_ip = host.parse::<std::net::IpAddr>().is_ok()
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::Ipv6Addr>()
                    .is_ok();
            if is_ip && self.uri_style == UriStyle::Host {
                return Err(Invalid::new(
                    "backup.s3.uri_style",
                    format!("the endpoint {endpoint:?} is an IP address: set uri_style = \"path\""),
                ));
            }
        }
        if self.region.trim().is_empty() {
            return Err(Invalid::new("backup.s3.region", "must not be empty"));
        }
        let bucket_ok = (3..=63).contains(&self.bucket.len())
            && self
                .bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !bucket_ok {
            return Err(Invalid::new(
                "backup.s3.bucket",
                format!(
                    "{:?} is not a bucket name: 3 to 63 lower-case letters, digits, '-' and '.'",
                    self.bucket
                ),
            ));
        }
        for segment in self.prefix.split('/').filter(|s| !s.is_empty()) {
            check_segment("backup.s3.prefix", segment)?;
        }
        if self.access_key.is_empty() {
            return Err(Invalid::new("backup.s3.access_key", "must not be empty"));
        }
        if self.secret_key.is_empty() {
            return Err(Invalid::new("backup.s3.secret_key", "must not be empty"));
        }
        if let Some(ca) = &self.ca_file {
            if !ca.is_absolute() {
                return Err(Invalid::new(
                    "backup.s3.ca_file",
                    "must be an absolute path",
                ));
            }
        }
        match self.sse.as_deref() {
            None | Some("AES256") => {
                if self.sse_kms_key_id.is_some() {
                    return Err(Invalid::new(
                        "backup.s3.sse_kms_key_id",
                        "needs sse = \"aws:kms\"",
                    ));
                }
            }
            Some("aws:kms") => {}
            Some(other) => {
                return Err(Invalid::new(
                    "backup.s3.sse",
                    format!("{other:?} is not \"AES256\" or \"aws:kms\""),
                ))
            }
        }
        if let Some(class) = &self.storage_class {
            if class.is_empty()
                || !class
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                return Err(Invalid::new(
                    "backup.s3.storage_class",
                    format!("{class:?} is not a storage class such as STANDARD_IA"),
                ));
            }
        }
        if !(5..=5120).contains(&self.part_size_mib) {
            return Err(Invalid::new(
                "backup.s3.part_size_mib",
                "must be between 5 and 5120 (S3's limits)",
            ));
        }
        for (key, value) in [
            ("backup.s3.connect_timeout", self.connect_timeout),
            ("backup.s3.read_timeout", self.read_timeout),
        ] {
            if !(1..=3600).contains(&value) {
                return Err(Invalid::new(key, "must be between 1 and 3600 seconds"));
            }
        }
        if !(1..=20).contains(&self.max_attempts) {
            return Err(Invalid::new(
                "backup.s3.max_attempts",
                "must be between 1 and 20",
            ));
        }
        Ok(())
    }

    /// The prefix as keys use it: no leading or doubled '/', and a trailing
    /// '/' unless empty.
    pub fn normalized_prefix(&self) -> String {
        let segments: Vec<&str> = self.prefix.split('/').filter(|s| !s.is_empty()).collect();
        if segments.is_empty() {
            String::new()
        } else {
            format!("{}/", segments.join("/"))
        }
    }
}

/// The host of `http(s)://host[:port][/]`, if the URL has that shape.
fn endpoint_host(endpoint: &str) -> Option<&str> {
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains('/') || authority.contains('@') {
        return None;
    }
    let host = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let after = &authority[end + 1..];
        if !after.is_empty() && !after.strip_prefix(':')?.parse::<u16>().is_ok_and(|p| p > 0) {
            return None;
        }
        &authority[..=end]
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => {
                port.parse::<u16>().ok().filter(|p| *p > 0)?;
                host
            }
            None => authority,
        }
    };
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::tests_support::EXAMPLE;
    use crate::config::{Config, ConfigError};

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::parse(&format!("{EXAMPLE}\n{extra}"), Path::new("test.toml"))
    }

    fn key_of(extra: &str) -> String {
        match parse(extra) {
            Err(e) => e.key().unwrap_or("<none>").to_string(),
            Ok(_) => panic!("accepted: {extra}"),
        }
    }

    const S3: &str = r#"
[backup]
repository = "s3"
[backup.s3]
endpoint = "http://127.0.0.1:9000"
uri_style = "path"
bucket = "backups"
prefix = "/team/pg/"
access_key = "a"
secret_key = "s"
"#;

    #[test]
    fn no_backup_section_is_fine() {
        assert!(parse("").unwrap().backup.is_none());
    }

    #[test]
    fn posix_defaults() {
        let c = parse("[backup]\nrepository = \"posix\"\n[backup.posix]\npath = \"/srv/backup\"\n")
            .unwrap();
        let b = c.backup.unwrap();
        assert_eq!(b.stanza(&c.cluster.scope), "demo");
        assert_eq!(b.compression_level, 3);
        assert_eq!(b.parallelism, 2);
        assert_eq!(b.archive_timeout, 60);
    }

    #[test]
    fn s3_parses() {
        let c = parse(S3).unwrap();
        let s3 = c.backup.unwrap().s3.unwrap();
        assert_eq!(s3.normalized_prefix(), "team/pg/");
        assert!(s3.verify_tls);
        assert_eq!(s3.part_size_mib, 16);
        assert_eq!(s3.region, "us-east-1");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("[backup]\nrepository = \"nfs\"\n", "backup.repository"),
            ("[backup]\nrepository = \"posix\"\n", "backup.posix.path"),
            ("[backup]\nrepository = \"s3\"\n", "backup.s3"),
            (
                "[backup]\nrepository = \"posix\"\n[backup.posix]\npath = \"rel\"\n",
                "backup.posix.path",
            ),
            (
                "[backup]\nrepository = \"posix\"\ncompression_level = 0\n[backup.posix]\npath = \"/b\"\n",
                "backup.compression_level",
            ),
            (
                "[backup]\nrepository = \"posix\"\nstanza = \"..\"\n[backup.posix]\npath = \"/b\"\n",
                "backup.stanza",
            ),
            (
                "[backup]\nrepository = \"posix\"\nparallelism = 0\n[backup.posix]\npath = \"/b\"\n",
                "backup.parallelism",
            ),
            (
                "[backup]\nrepository = \"posix\"\narchive_timeout = 0\n[backup.posix]\npath = \"/b\"\n",
                "backup.archive_timeout",
            ),
            (
                "[backup]\nrepository = \"posix\"\ncolour = 1\n[backup.posix]\npath = \"/b\"\n",
                "backup.colour",
            ),
            (
                "[backup]\nrepository = \"posix\"\npart_mib = 0\n[backup.posix]\npath = \"/b\"\n",
                "backup.part_mib",
            ),
            (
                "[backup]\nrepository = \"posix\"\nretention_full = 0\n[backup.posix]\npath = \"/b\"\n",
                "backup.retention_full",
            ),
        ];
        for (text, key) in cases {
            assert_eq!(key_of(text), key, "{text}");
        }
        let s3_cases = [
            (
                "bucket = \"backups\"",
                "bucket = \"Backups\"",
                "backup.s3.bucket",
            ),
            ("uri_style = \"path\"", "", "backup.s3.uri_style"),
            (
                "endpoint = \"http://127.0.0.1:9000\"",
                "endpoint = \"ftp://x\"",
                "backup.s3.endpoint",
            ),
            (
                "prefix = \"/team/pg/\"",
                "prefix = \"a/../b\"",
                "backup.s3.prefix",
            ),
            (
                "access_key = \"a\"",
                "access_key = \"\"",
                "backup.s3.access_key",
            ),
            ("secret_key = \"s\"", "", "backup.s3.secret_key"),
            (
                "bucket = \"backups\"",
                "bucket = \"backups\"\nsse = \"AES128\"",
                "backup.s3.sse",
            ),
            (
                "bucket = \"backups\"",
                "bucket = \"backups\"\nsse_kms_key_id = \"k\"",
                "backup.s3.sse_kms_key_id",
            ),
            (
                "bucket = \"backups\"",
                "bucket = \"backups\"\nstorage_class = \"cold storage\"",
                "backup.s3.storage_class",
            ),
            (
                "bucket = \"backups\"",
                "bucket = \"backups\"\npart_size_mib = 4",
                "backup.s3.part_size_mib",
            ),
            (
                "bucket = \"backups\"",
                "bucket = \"backups\"\nca_file = \"ca.pem\"",
                "backup.s3.ca_file",
            ),
            (
                "bucket = \"backups\"",
                "bucket = \"backups\"\nread_timeout = 0",
                "backup.s3.read_timeout",
            ),
            (
                "bucket = \"backups\"",
                "bucket = \"backups\"\nmax_attempts = 0",
                "backup.s3.max_attempts",
            ),
        ];
        for (from, to, key) in s3_cases {
            let text = S3.replace(from, to);
            assert_eq!(key_of(&text), key, "{text}");
        }
    }

    #[test]
    fn endpoint_hosts() {
        use super::endpoint_host;
        assert_eq!(
            endpoint_host("https://s3.amazonaws.com"),
            Some("s3.amazonaws.com")
        );
        assert_eq!(endpoint_host("http://127.0.0.1:9000/"), Some("127.0.0.1"));
        assert_eq!(endpoint_host("http://[::1]:9000"), Some("[::1]"));
        assert_eq!(endpoint_host("http://host:0"), None);
        assert_eq!(endpoint_host("http://host/path"), None);
        assert_eq!(endpoint_host("s3.amazonaws.com"), None);
    }
}
