//! The restore that creates a cluster from a backup, as the member file's
//! `[bootstrap_from]` section asks (the section's schema and checks:
//! [`crate::config::bootstrap_from`]).

use super::request::{RestoreRequest, StartAs, TargetAction};
use crate::config::bootstrap_from::BootstrapFrom;
use crate::config::target::Target;

impl BootstrapFrom {
    /// The restore that creates the cluster: recovery to the target, then
    /// promotion. `timeline`: recovery_target_timeline to use when the file
    /// sets none. The section was validated when the file was loaded.
    pub fn request(
        &self,
        data_dir: &std::path::Path,
        timeline: Option<u32>,
    ) -> Result<RestoreRequest, String> {
        let target = Target::parse(&self.target_text()).map_err(|(_, m)| m)?;
        Ok(RestoreRequest {
            set: self.set().to_string(),
            target_action: (target != Target::End).then_some(TargetAction::Promote),
            target,
            target_exclusive: self.target_exclusive,
            target_timeline: self
                .target_timeline
                .clone()
                .or_else(|| timeline.map(|t| t.to_string())),
            delta: false,
            data_dir: data_dir.to_path_buf(),
            start_as: StartAs::Recovery,
        })
    }

    /// The target, parsed (valid once the file was loaded).
    pub fn parsed_target(&self) -> Result<Target, String> {
        Target::parse(&self.target_text()).map_err(|(_, m)| m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(toml_text: &str) -> BootstrapFrom {
        toml::from_str(toml_text).unwrap()
    }

    fn key(b: &BootstrapFrom, backup: bool) -> String {
        b.validate(backup).unwrap_err().key
    }

    #[test]
    fn initdb_takes_no_restore_keys() {
        assert!(section("").validate(false).is_ok());
        let b = section("target_time = '2026-01-01 00:00:00+00'");
        assert_eq!(key(&b, true), "bootstrap_from.target_time");
    }

    #[test]
    fn backup_needs_a_repository_and_a_valid_target() {
        let b = section("method = 'backup'");
        assert_eq!(key(&b, false), "bootstrap_from.method");
        assert!(b.validate(true).is_ok());
        let b = section("method = 'backup'\ntarget_time = 'yesterday'");
        assert_eq!(key(&b, true), "bootstrap_from.target_time");
        let b = section("method = 'backup'\ntarget_lsn = '0/1'\ntarget_xid = '5'");
        assert_eq!(key(&b, true), "bootstrap_from");
        let b = section("method = 'backup'\ntarget = 'now'");
        assert_eq!(key(&b, true), "bootstrap_from.target");
        let b = section("method = 'backup'\ntarget_timeline = 'newest'");
        assert_eq!(key(&b, true), "bootstrap_from.target_timeline");
        let b = section("method = 'backup'\ntarget_exclusive = true");
        assert_eq!(key(&b, true), "bootstrap_from.target_exclusive");
        let b = section("method = 'backup'\nset = ''");
        assert_eq!(key(&b, true), "bootstrap_from.set");
    }

    #[test]
    fn the_request_promotes_at_the_target() {
        let b = section("method = 'backup'\ntarget_time = '2026-01-01 00:00:00+00'");
        let r = b.request(std::path::Path::new("/d"), Some(3)).unwrap();
        assert_eq!(r.set, "latest");
        assert_eq!(r.target_action, Some(TargetAction::Promote));
        assert_eq!(r.target_timeline.as_deref(), Some("3"));
        assert_eq!(r.start_as, StartAs::Recovery);
        let b = section("method = 'backup'\nset = 'L'\ntarget_timeline = 'current'");
        let r = b.request(std::path::Path::new("/d"), Some(3)).unwrap();
        assert_eq!(r.target, Target::End);
        assert_eq!(r.target_action, None);
        assert_eq!(r.target_timeline.as_deref(), Some("current"));
    }
}
