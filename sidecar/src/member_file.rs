//! The member file on disk: reading it ([`Config::load`]), and checking
//! the files its values name ([`check_files`]: TLS certificates and keys,
//! callback programs), so that a bad certificate is a configuration error
//! at start, not a REST API or a PostgreSQL that silently never comes up.
//! [`crate::config`] itself parses and validates values and reads nothing.

use std::path::Path;

use crate::config::backup::BackupSection;
use crate::config::{Config, ConfigError, Invalid, PostgresTls};
use crate::tls::{read_certs, read_key};

impl Config {
    /// Read, parse and validate a file. The error names the key at fault.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::parse(&text, path)?;
        config.source = Some(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()));
        Ok(config)
    }

    /// Parse and validate TOML text, then check the files it names; `path`
    /// is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config = Config::from_toml(text, path)?;
        check_files(&config).map_err(|inv| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: inv.key,
            message: inv.message,
        })?;
        Ok(config)
    }
}

impl BackupSection {
    /// Load a member file that must have a `[backup]` section (every
    /// archive and backup command starts here).
    pub fn load(
        config_path: &std::path::Path,
    ) -> Result<(crate::config::Config, BackupSection), String> {
        let config = crate::config::Config::load(config_path).map_err(|e| e.to_string())?;
        let backup = config.backup.clone().ok_or_else(|| {
            format!(
                "{}: no [backup] section: no backup repository (and no WAL archiving) is configured",
                config_path.display()
            )
        })?;
        Ok((config, backup))
    }
}

/// The files a valid configuration names can be used: the callback
/// programs run, the TLS certificates and keys read.
pub fn check_files(config: &Config) -> Result<(), Invalid> {
    for (key, program) in config.postgresql.callbacks.programs() {
        check_program(&key, &program)?;
    }
    if let Some(tls) = &config.postgresql.tls {
        postgres_tls_files(tls)?;
    }
    if let Some(tls) = &config.api.tls {
        crate::tls::server_config(tls)?;
    }
    Ok(())
}

/// `[postgresql.tls]`'s files are read now: a bad certificate is a
/// configuration error, not a PostgreSQL that refuses to start.
fn postgres_tls_files(tls: &PostgresTls) -> Result<(), Invalid> {
    read_certs(&tls.cert_file).map_err(|m| Invalid::new("postgresql.tls.cert_file", m))?;
    read_key(&tls.key_file).map_err(|m| Invalid::new("postgresql.tls.key_file", m))?;
    if let Some(ca) = &tls.ca_file {
        read_certs(ca).map_err(|m| Invalid::new("postgresql.tls.ca_file", m))?;
    }
    Ok(())
}

/// A program pgpilot runs itself: an absolute path to an executable file.
pub fn check_program(key: &str, program: &Path) -> Result<(), Invalid> {
    match std::fs::metadata(program) {
        Err(e) => Err(Invalid::new(
            key,
            format!("cannot use the program {}: {e}", program.display()),
        )),
        Ok(meta) if !meta.is_file() => Err(Invalid::new(
            key,
            format!("the program {} is not a file", program.display()),
        )),
        Ok(_) => nix::unistd::access(program, nix::unistd::AccessFlags::X_OK).map_err(|e| {
            Invalid::new(
                key,
                format!(
                    "the program {} is not executable by pgpilot's user: {}",
                    program.display(),
                    e.desc()
                ),
            )
        }),
    }
}
