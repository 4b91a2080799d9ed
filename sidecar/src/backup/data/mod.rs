//! The data path: the bytes of a data directory into compressed tar parts
//! in the repository, and back, each checked on the way.
//!
//! | module | does |
//! |---|---|
//! | [`walk`] | which files of the data directory a backup holds |
//! | [`pipeline`] | the backup's data path: read + hash, compress, upload in parallel |
//! | [`tar`] | the tar format of the data parts |
//! | [`pagecheck`] | PostgreSQL's page checksums, verified while a backup copies |
//! | [`extract`] | the restore's and verify's data path: download, decompress, check against the manifest |
//! | [`place`] | the restore's file writes: at their offsets, direct I/O for large files |
//! | [`restorepages`] | the page check while a restore writes, and its report |
//! | [`datadir`] | the restore's target directory: checks, `--delta`, tree, last steps, undo |
//! | [`progress`] | progress of a long command: a bar on a terminal, log lines otherwise |
//!
//! May import [`super::model`] and the shared items of [`super`], never
//! [`super::command`]: the commands decide, this moves and checks bytes.

pub(in crate::backup) mod datadir;
pub(in crate::backup) mod extract;
pub(in crate::backup) mod pagecheck;
pub(in crate::backup) mod pipeline;
pub(in crate::backup) mod place;
pub(in crate::backup) mod progress;
pub(in crate::backup) mod restorepages;
#[cfg(test)]
mod roundtrip;
pub(in crate::backup) mod tar;
pub(in crate::backup) mod walk;
