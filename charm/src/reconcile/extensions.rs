//! The plugin options' extensions (the leader, on a cluster with a healthy
//! primary): from what the options ask for and what the databases have
//! (read only when [`extensions::worth_reading`]), one `SetExtensions` step
//! per database that differs; nothing when they agree. An extension to drop
//! that objects still use is left alone and blocks the leader's unit and the
//! application with a message naming the option, until the objects are gone
//! or the option is true again. Once every database agrees, the leader
//! records it, and stops reading until the options change (or the next
//! config-changed).

use super::Reconciler;
use crate::cluster::{self, ClusterMember};
use crate::config::{plugins, CharmConfig, Extensions};
use crate::context::Event;
use crate::extensions::{self, ExtensionsView};
use crate::observe::Passwords;
use crate::peer::APP_EXTENSIONS;
use crate::plan::Step;
use crate::status::Status;
use crate::tools::LogLevel;

/// What one database needs, in the order the SQL runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseChange {
    pub database: String,
    /// Dependencies first.
    pub create: Vec<String>,
    /// Dependents first.
    pub drop: Vec<String>,
}

/// An extension the options drop that objects in a database still use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StillUsed {
    pub database: String,
    pub extension: String,
}

/// The changes that make every database have what `desired` says, and the
/// drops that must wait for the objects that use the extension.
pub fn extension_changes(
    desired: &Extensions,
    view: &ExtensionsView,
) -> (Vec<DatabaseChange>, Vec<StillUsed>) {
    let order: Vec<&str> = plugins::creation_order().collect();
    let wants = |e: &str, on: bool| desired.get(e) == Some(&on);
    let mut changes = Vec::new();
    let mut still_used = Vec::new();
    for (database, installed) in &view.installed {
        let has = |e: &str| installed.contains(e);
        let used = |e: &str| view.in_use.get(database).is_some_and(|u| u.contains(e));
        let create: Vec<String> = order
            .iter()
            .filter(|e| wants(e, true) && !has(e))
            .map(|e| e.to_string())
            .collect();
        let mut kept: Vec<&str> = Vec::new();
        let mut drop = Vec::new();
        for e in order.iter().rev().filter(|e| wants(e, false) && has(e)) {
            if used(e) {
                still_used.push(StillUsed {
                    database: database.clone(),
                    extension: e.to_string(),
                });
                kept.push(e);
            } else if !kept.iter().any(|k| needs(k, e)) {
                drop.push(e.to_string());
            }
        }
        if !create.is_empty() || !drop.is_empty() {
            changes.push(DatabaseChange {
                database: database.clone(),
                create,
                drop,
            });
        }
    }
    (changes, still_used)
}

/// Does extension `dependent` need `dependency` (their options say so)?
fn needs(dependent: &str, dependency: &str) -> bool {
    let option = |e: &str| plugins::option_of(e);
    let Some(p) = option(dependent).and_then(plugins::plugin) else {
        return false;
    };
    option(dependency).is_some_and(|d| p.requires.contains(&d))
}

impl Reconciler<'_> {
    /// The leader's part: SQL steps for the databases that differ, the
    /// record once they all agree, a blocked status while a drop waits.
    pub(super) fn manage_extensions(
        &mut self,
        cfg: &CharmConfig,
        passwords: &Passwords,
    ) -> Option<Status> {
        let o = self.o;
        if matches!(o.event, Event::ConfigChanged) {
            for note in &cfg.notes {
                self.plan.log(LogLevel::Warning, note.clone());
            }
        }
        let view = o.extensions.as_ref()?;
        let primary = o
            .cluster
            .as_deref()
            .and_then(cluster::leader)
            .filter(|l| l.is_healthy())?;
        let (changes, still_used) = extension_changes(&cfg.extensions, view);
        for change in changes {
            self.plan.push(set_extensions(primary, change, passwords));
        }
        let Some(first) = still_used.first() else {
            self.set_app(APP_EXTENSIONS, extensions::record(&cfg.extensions));
            return None;
        };
        // The databases do not agree: read them again at every hook until
        // they do, so the status stays until the objects are gone.
        self.set_app(APP_EXTENSIONS, "");
        let option = plugins::option_of(&first.extension).unwrap_or("plugin_?_enable");
        let blocked = Status::blocked(format!(
            "config {option}=false: extension {} is still used in database {:?}; drop what uses it, or set {option}=true",
            first.extension, first.database
        ));
        self.app_status = Some(blocked.clone());
        Some(blocked)
    }
}

fn set_extensions(primary: &ClusterMember, change: DatabaseChange, passwords: &Passwords) -> Step {
    Step::SetExtensions {
        host: primary.host_only().to_string(),
        port: primary.port(),
        database: change.database,
        create: change.create,
        drop: change.drop,
        superuser_password: passwords.get("operator").cloned().unwrap_or_default(),
    }
}

#[cfg(test)]
#[path = "extensions_tests.rs"]
mod tests;
