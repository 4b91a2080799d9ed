//! "Not streamed since it was made": a sibling file of the data directory,
//! written when a replica's copy is made (pg_basebackup or a restored
//! backup) and removed once its WAL receiver has streamed from a leader
//! (or it runs as a primary). It outlives a restart of pgpilot, so a replica
//! that holds nothing but its copy's WAL is known as such after one too.

use std::path::PathBuf;

use super::{PgError, Postgres};

impl Postgres {
    fn not_streamed_marker(&self) -> PathBuf {
        self.data_dir().with_extension("pgpilot-not-streamed")
    }

    /// Record that the data directory was just made and has not streamed.
    pub fn mark_not_streamed(&self) -> Result<(), PgError> {
        let path = self.not_streamed_marker();
        std::fs::write(&path, b"").map_err(|e| {
            PgError::Setup(format!(
                "cannot write {} (it records that this new replica has not streamed yet): {e}; \
                 make the data directory's parent writable by pgpilot",
                path.display()
            ))
        })
    }

    /// The data directory was made and has not streamed from a leader since.
    pub fn not_streamed(&self) -> bool {
        self.not_streamed_marker().exists()
    }

    /// It has streamed (or runs as a primary): forget that it was new.
    pub fn clear_not_streamed(&self) -> Result<(), PgError> {
        match std::fs::remove_file(self.not_streamed_marker()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(PgError::Setup(format!(
                "cannot remove {}: {e}",
                self.not_streamed_marker().display()
            ))),
        }
    }
}
