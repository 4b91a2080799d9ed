//! Patroni-compatible callbacks (`[postgresql.callbacks]`): after pgpilot
//! starts, stops, restarts or reloads PostgreSQL, or the member's role
//! changes, a configured program runs in the background as
//! `<program> [args...] <action> <role> <scope>`.
//!
//! Two parts:
//! - [`callback_for`], a pure function: from what the callbacks were last
//!   told about this member ([`Known`]) and what just happened ([`Event`]),
//!   which callback runs with which role word. Its table tests below say
//!   where pgpilot follows Patroni and why.
//! - [`runner`], which runs the programs: one at a time per member, a newer
//!   one killing an older one still running, each killed after
//!   `callback_timeout`. Nothing there waits on the HA loop or makes it
//!   wait, and a callback's outcome is only logged: it never changes an HA
//!   decision.

mod runner;

use std::sync::Mutex;
use std::time::Duration;

use crate::cluster::Role;
use crate::config::Config;

/// The five callbacks, named as Patroni's `postgresql.callbacks` keys (and
/// passed as the first argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callback {
    OnStart,
    OnStop,
    OnRestart,
    OnReload,
    OnRoleChange,
}

impl Callback {
    pub fn as_str(self) -> &'static str {
        match self {
            Callback::OnStart => "on_start",
            Callback::OnStop => "on_stop",
            Callback::OnRestart => "on_restart",
            Callback::OnReload => "on_reload",
            Callback::OnRoleChange => "on_role_change",
        }
    }
}

/// What pgpilot just did to the local PostgreSQL, or found it doing. The
/// role is `Primary` or `Replica` (what PostgreSQL runs, or ran, as).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// pgpilot started PostgreSQL and it accepts connections; also the end
    /// of a bootstrap (the new cluster's first primary).
    Started(Role),
    /// pgpilot stopped PostgreSQL and started it again (`ctl restart`).
    Restarted(Role),
    /// The standby was promoted.
    Promoted,
    /// pgpilot stopped a running PostgreSQL (demotion, switchover, fence,
    /// shutdown, reinitialize).
    Stopped(Role),
    /// pgpilot made the running PostgreSQL reload its configuration.
    Reloaded(Role),
    /// pgpilot could not start PostgreSQL.
    StartFailed(Role),
    /// A cycle found PostgreSQL running and answering, as `role` (its
    /// `pg_is_in_recovery()`).
    FoundRunning(Role),
}

/// What the callbacks were last told about this member (Patroni: the
/// member's role and whether a callback was called yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Known {
    /// The role of the last start, stop, restart or role change; `None`
    /// until the first one.
    pub role: Option<Role>,
    /// The last of them left PostgreSQL running.
    pub running: bool,
}

/// Which callback runs, with which role word, after `event`; and what the
/// callbacks know afterwards.
///
/// A start (or restart) in another role than the one last announced is a
/// role change, not a start: a former primary that comes back as a replica
/// gets `on_role_change replica`, never `on_start` (Patroni's
/// `follow()`). A primary that fails to start gets `on_role_change
/// demoted` (Patroni's `post_recover`). A stop is announced only once, and
/// only for an instance that was running.
pub fn callback_for(known: Known, event: Event) -> (Option<(Callback, Role)>, Known) {
    let role_change = |role: Role| known.role.is_some_and(|before| before != role);
    match event {
        // Found as announced: nothing new.
        Event::FoundRunning(role) if known.running && known.role == Some(role) => (None, known),
        // Found running, but that was not announced: the sidecar started
        // next to a running PostgreSQL (Patroni: on_start when no callback
        // was called yet), a start that timed out came up after all, a
        // promotion outlived `pg_ctl promote`'s timeout. Announce it as a
        // start would be.
        Event::Started(role) | Event::Restarted(role) | Event::FoundRunning(role) => {
            let callback = if role_change(role) {
                Callback::OnRoleChange
            } else if matches!(event, Event::Restarted(_)) {
                Callback::OnRestart
            } else {
                Callback::OnStart
            };
            (Some((callback, role)), running_as(role))
        }
        Event::Promoted => (
            Some((Callback::OnRoleChange, Role::Primary)),
            running_as(Role::Primary),
        ),
        Event::Stopped(role) if known.running => (
            Some((Callback::OnStop, role)),
            Known {
                role: Some(role),
                running: false,
            },
        ),
        Event::Stopped(_) => (None, known),
        Event::Reloaded(role) => (Some((Callback::OnReload, role)), known),
        Event::StartFailed(Role::Primary) => (
            Some((Callback::OnRoleChange, Role::Demoted)),
            Known {
                role: Some(Role::Demoted),
                running: false,
            },
        ),
        Event::StartFailed(_) => (
            None,
            Known {
                running: false,
                ..known
            },
        ),
    }
}

fn running_as(role: Role) -> Known {
    Known {
        role: Some(role),
        running: true,
    }
}

/// The programs of `[postgresql.callbacks]`, split into words.
#[derive(Debug, Clone, Default)]
struct Programs {
    on_start: Option<Vec<String>>,
    on_stop: Option<Vec<String>>,
    on_restart: Option<Vec<String>>,
    on_reload: Option<Vec<String>>,
    on_role_change: Option<Vec<String>>,
}

impl Programs {
    fn of(config: &Config) -> Self {
        let section = &config.postgresql.callbacks;
        // Validated at load; a command line that does not split is left out.
        let argv = |c: &Option<crate::config::CommandLine>| c.as_ref().and_then(|c| c.argv().ok());
        Programs {
            on_start: argv(&section.on_start),
            on_stop: argv(&section.on_stop),
            on_restart: argv(&section.on_restart),
            on_reload: argv(&section.on_reload),
            on_role_change: argv(&section.on_role_change),
        }
    }

    fn command(&self, callback: Callback) -> Option<&Vec<String>> {
        match callback {
            Callback::OnStart => self.on_start.as_ref(),
            Callback::OnStop => self.on_stop.as_ref(),
            Callback::OnRestart => self.on_restart.as_ref(),
            Callback::OnReload => self.on_reload.as_ref(),
            Callback::OnRoleChange => self.on_role_change.as_ref(),
        }
        .filter(|argv| !argv.is_empty())
    }
}

/// The configured callbacks of this member and the state of announcements.
/// Shared by the HA loop, the operator commands and the fence.
pub struct Callbacks {
    scope: String,
    /// Replaced whole by a reload ([`Callbacks::update`]).
    programs: Mutex<Programs>,
    /// What was announced, and how many events were (the generation).
    known: Mutex<(Known, u64)>,
    runner: runner::Runner,
}

impl Callbacks {
    pub fn new(config: &Config) -> Self {
        let section = &config.postgresql.callbacks;
        Callbacks {
            scope: config.cluster.scope.clone(),
            programs: Mutex::new(Programs::of(config)),
            known: Mutex::new((Known::default(), 0)),
            runner: runner::Runner::new(Duration::from_secs(section.callback_timeout)),
        }
    }

    /// A reloaded `[postgresql.callbacks]`: later events run the new
    /// programs, and callbacks started from now on get the new timeout.
    pub fn update(&self, config: &Config) {
        *self.programs.lock().unwrap_or_else(|e| e.into_inner()) = Programs::of(config);
        self.runner.set_timeout(Duration::from_secs(
            config.postgresql.callbacks.callback_timeout,
        ));
    }

    fn command(&self, callback: Callback) -> Option<Vec<String>> {
        self.programs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .command(callback)
            .cloned()
    }

    /// Record `event` and start its callback, if one is configured, in the
    /// background. Returns at once.
    pub fn notify(&self, event: Event) {
        self.notify_since(event, None);
    }

    /// The count of events so far: take it before observing PostgreSQL,
    /// hand it to [`Callbacks::notify_observed`] with what was observed.
    pub fn generation(&self) -> u64 {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).1
    }

    /// Like [`Callbacks::notify`] for an event seen by an observation made
    /// at `generation`; dropped if another event came meanwhile (the fence
    /// stopped PostgreSQL after the HA loop saw it running, say).
    pub fn notify_observed(&self, event: Event, generation: u64) {
        self.notify_since(event, Some(generation));
    }

    fn notify_since(&self, event: Event, generation: Option<u64>) {
        let mut state = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let (known, count) = &mut *state;
        if generation.is_some_and(|g| g != *count) {
            return;
        }
        let (fire, next) = callback_for(*known, event);
        *known = next;
        *count += 1;
        let Some((callback, role)) = fire else {
            return;
        };
        let Some(program) = self.command(callback) else {
            tracing::debug!(
                callback = callback.as_str(),
                role = role.as_str(),
                "no program configured for this callback"
            );
            return;
        };
        let mut argv = program;
        argv.extend([
            callback.as_str().to_string(),
            role.as_str().to_string(),
            self.scope.clone(),
        ]);
        // Under the lock: two events in a row reach the runner in order.
        self.runner.submit(runner::Request { callback, argv });
    }

    /// At shutdown: let the callbacks still running finish, each at most
    /// until its `callback_timeout`.
    pub async fn finish(&self) {
        self.runner.finish().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Callback::*;
    use Role::{Demoted, Primary, Replica};

    const NOTHING: Known = Known {
        role: None,
        running: false,
    };
    const fn ran(role: Role, running: bool) -> Known {
        Known {
            role: Some(role),
            running,
        }
    }

    /// One row: what the callbacks knew, what happened, the callback and
    /// role word that runs, what they know afterwards, and why.
    type Row = (Known, Event, Option<(Callback, Role)>, Known, &'static str);

    #[test]
    fn mapping_table() {
        #[rustfmt::skip]
        let table: &[Row] = &[
            // Starts.
            (NOTHING, Event::Started(Primary), Some((OnStart, Primary)), ran(Primary, true),
             "bootstrap done, or a primary started by a fresh sidecar: on_start primary (Patroni post_bootstrap)"),
            (NOTHING, Event::Started(Replica), Some((OnStart, Replica)), ran(Replica, true),
             "a new or restarted member starts as a replica: on_start replica"),
            (ran(Replica, false), Event::Started(Replica), Some((OnStart, Replica)), ran(Replica, true),
             "a replica stopped or crashed and starts again: on_start"),
            (ran(Replica, true), Event::Started(Replica), Some((OnStart, Replica)), ran(Replica, true),
             "a replica that crashed unnoticed starts again: on_start"),
            (ran(Primary, true), Event::Started(Primary), Some((OnStart, Primary)), ran(Primary, true),
             "a crashed primary restarted in place while it holds the key: on_start primary"),
            (ran(Primary, false), Event::Started(Replica), Some((OnRoleChange, Replica)), ran(Replica, true),
             "former primary (demoted, switched over, fenced) starts as a replica: on_role_change only, no on_start (Patroni follow())"),
            (ran(Primary, true), Event::Started(Replica), Some((OnRoleChange, Replica)), ran(Replica, true),
             "a primary that crashed and comes back as a replica: role change"),
            (ran(Demoted, false), Event::Started(Replica), Some((OnRoleChange, Replica)), ran(Replica, true),
             "a primary that failed to start comes back as a replica: role change"),
            (ran(Replica, false), Event::Started(Primary), Some((OnRoleChange, Primary)), ran(Primary, true),
             "a stopped standby started as the primary is a promotion"),
            (ran(Demoted, false), Event::Started(Primary), Some((OnRoleChange, Primary)), ran(Primary, true),
             "announced demoted, now primary again: role change"),
            // Promotion.
            (ran(Replica, true), Event::Promoted, Some((OnRoleChange, Primary)), ran(Primary, true),
             "promotion (failover, switchover candidate): on_role_change primary"),
            (NOTHING, Event::Promoted, Some((OnRoleChange, Primary)), ran(Primary, true),
             "promotion before anything was announced is still a role change"),
            // Stops.
            (ran(Primary, true), Event::Stopped(Primary), Some((OnStop, Primary)), ran(Primary, false),
             "demotion, switchover, fence: on_stop primary; the later start as a replica is the role change"),
            (ran(Replica, true), Event::Stopped(Replica), Some((OnStop, Replica)), ran(Replica, false),
             "replica stopped at shutdown or for reinitialize: on_stop replica"),
            (ran(Primary, false), Event::Stopped(Primary), None, ran(Primary, false),
             "a second stop (fence and demotion racing) is not announced twice"),
            (NOTHING, Event::Stopped(Replica), None, NOTHING,
             "never announced as running: no on_stop"),
            // Restarts.
            (ran(Primary, true), Event::Restarted(Primary), Some((OnRestart, Primary)), ran(Primary, true),
             "ctl restart of the leader: on_restart primary"),
            (ran(Replica, true), Event::Restarted(Replica), Some((OnRestart, Replica)), ran(Replica, true),
             "ctl restart of a replica: on_restart replica"),
            (ran(Primary, true), Event::Restarted(Replica), Some((OnRoleChange, Replica)), ran(Replica, true),
             "a primary without the lease restarted as a standby: role change instead of on_restart (Patroni)"),
            // Reloads leave the state alone.
            (ran(Replica, true), Event::Reloaded(Replica), Some((OnReload, Replica)), ran(Replica, true),
             "a replica repointed at a new leader, or new parameters: on_reload"),
            (ran(Primary, true), Event::Reloaded(Primary), Some((OnReload, Primary)), ran(Primary, true),
             "parameters changed on the leader: on_reload primary"),
            // Failed starts.
            (ran(Primary, false), Event::StartFailed(Primary), Some((OnRoleChange, Demoted)), ran(Demoted, false),
             "the leader's PostgreSQL does not start: on_role_change demoted (Patroni post_recover)"),
            (NOTHING, Event::StartFailed(Primary), Some((OnRoleChange, Demoted)), ran(Demoted, false),
             "also on a fresh sidecar holding the key"),
            (ran(Replica, true), Event::StartFailed(Replica), None, ran(Replica, false),
             "a replica that does not start: nothing to announce"),
            // Found running.
            (NOTHING, Event::FoundRunning(Primary), Some((OnStart, Primary)), ran(Primary, true),
             "the sidecar starts next to a running primary: on_start primary, once (Patroni)"),
            (NOTHING, Event::FoundRunning(Replica), Some((OnStart, Replica)), ran(Replica, true),
             "the sidecar starts next to a running replica: on_start replica"),
            (ran(Primary, true), Event::FoundRunning(Primary), None, ran(Primary, true),
             "every later cycle: nothing"),
            (ran(Replica, true), Event::FoundRunning(Replica), None, ran(Replica, true),
             "every later cycle of a replica: nothing"),
            (ran(Replica, false), Event::FoundRunning(Replica), Some((OnStart, Replica)), ran(Replica, true),
             "a start that timed out came up after all: the on_start it missed"),
            (ran(Replica, true), Event::FoundRunning(Primary), Some((OnRoleChange, Primary)), ran(Primary, true),
             "a promotion that outlived pg_ctl promote's timeout: the on_role_change it missed"),
            (ran(Demoted, false), Event::FoundRunning(Primary), Some((OnRoleChange, Primary)), ran(Primary, true),
             "a primary announced demoted after a failed start came up after all"),
        ];
        for (known, event, want, after, why) in table {
            let (got, next) = callback_for(*known, *event);
            assert_eq!(
                (got, next),
                (*want, *after),
                "{why}: {known:?} then {event:?}"
            );
        }
    }

    /// The sequences of the e2e test, step by step.
    #[test]
    fn switchover_sequences() {
        let run = |events: &[Event]| {
            let mut known = Known::default();
            let mut fired = Vec::new();
            for e in events {
                let (f, next) = callback_for(known, *e);
                known = next;
                fired.extend(f.map(|(c, r)| format!("{} {}", c.as_str(), r.as_str())));
            }
            fired
        };
        // The old primary: bootstrap, stop at the hand-over, back as a replica.
        assert_eq!(
            run(&[
                Event::Started(Primary),
                Event::FoundRunning(Primary),
                Event::Stopped(Primary),
                Event::Started(Replica),
                Event::Reloaded(Replica),
            ]),
            [
                "on_start primary",
                "on_stop primary",
                "on_role_change replica",
                "on_reload replica"
            ]
        );
        // The candidate: cloned, started, promoted, then back after another switchover.
        assert_eq!(
            run(&[
                Event::Started(Replica),
                Event::Promoted,
                Event::Stopped(Primary),
                Event::Started(Replica),
            ]),
            [
                "on_start replica",
                "on_role_change primary",
                "on_stop primary",
                "on_role_change replica"
            ]
        );
    }
}
