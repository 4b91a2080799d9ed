//! The member configuration in force: the file `pgpilot run` started with,
//! with the credentials and callbacks of the last reload
//! ([`super::reload`]). Every reader takes one [`Arc<Config>`] and uses it
//! whole, so a role's name and password (or the API's user and password)
//! always come from the same reload; a reload swaps the whole value.
//!
//! It also remembers the superuser passwords PostgreSQL may still expect:
//! after a reload the new one is only accepted once the primary has run
//! `ALTER ROLE` (and, on a replica, once that has replicated). Local
//! connections fall back to those until the current one works.

use std::sync::{Arc, RwLock};

use super::{Config, Credentials};

/// At most this many older superuser passwords are kept to fall back to.
const MAX_FALLBACKS: usize = 3;

pub struct LiveConfig {
    state: RwLock<State>,
}

struct State {
    config: Arc<Config>,
    /// Counts reloads that changed something.
    generation: u64,
    /// Superuser credentials that worked before, newest first, until the
    /// current ones are seen to work.
    fallbacks: Vec<Credentials>,
}

impl LiveConfig {
    pub fn new(config: Arc<Config>) -> Self {
        LiveConfig {
            state: RwLock::new(State {
                config,
                generation: 0,
                fallbacks: Vec::new(),
            }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The configuration in force now.
    pub fn get(&self) -> Arc<Config> {
        self.read().config.clone()
    }

    /// How many reloads changed something so far.
    pub fn generation(&self) -> u64 {
        self.read().generation
    }

    /// Put `config` in force; returns the new generation. A superuser
    /// password that changes is kept as a fallback until the new one works.
    pub fn replace(&self, config: Arc<Config>) -> u64 {
        let mut state = self.write();
        let old = state.config.postgresql.authentication.superuser.clone();
        let new = &config.postgresql.authentication.superuser;
        if old.password != new.password || old.username != new.username {
            state.fallbacks.retain(|c| c.password != old.password);
            state.fallbacks.insert(0, old);
            state.fallbacks.retain(|c| c.password != new.password);
            state.fallbacks.truncate(MAX_FALLBACKS);
        }
        state.config = config;
        state.generation += 1;
        state.generation
    }

    /// The configuration in force, its generation and the superuser
    /// credentials to try when its own are refused (newest first).
    pub fn superuser_view(&self) -> (Arc<Config>, u64, Vec<Credentials>) {
        let state = self.read();
        (
            state.config.clone(),
            state.generation,
            state.fallbacks.clone(),
        )
    }

    /// PostgreSQL accepted the superuser credentials of `generation`: if
    /// they are still the current ones, forget the older ones.
    pub fn superuser_accepted(&self, generation: u64) {
        let mut state = self.write();
        if state.generation == generation && !state.fallbacks.is_empty() {
            state.fallbacks.clear();
            tracing::info!("PostgreSQL accepts the superuser's new password");
        }
    }

    /// PostgreSQL has not been seen accepting the current superuser
    /// password since it changed.
    pub fn superuser_unconfirmed(&self) -> bool {
        !self.read().fallbacks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(password: &str) -> Arc<Config> {
        let mut c = Config::parse(
            crate::config::tests_support::EXAMPLE,
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        c.postgresql.authentication.superuser.password = password.into();
        Arc::new(c)
    }

    fn passwords(list: &[Credentials]) -> Vec<&str> {
        list.iter().map(|c| c.password.as_str()).collect()
    }

    #[test]
    fn old_superuser_passwords_are_kept_until_the_new_one_works() {
        let live = LiveConfig::new(config("a"));
        assert!(!live.superuser_unconfirmed());
        let g1 = live.replace(config("b"));
        let (now, generation, fallbacks) = live.superuser_view();
        assert_eq!(now.postgresql.authentication.superuser.password, "b");
        assert_eq!(generation, g1);
        assert_eq!(passwords(&fallbacks), vec!["a"]);
        // Changed again before PostgreSQL took "b": both may still be what it expects.
        let g2 = live.replace(config("c"));
        assert_eq!(passwords(&live.superuser_view().2), vec!["b", "a"]);
        // An acceptance seen for an older generation proves nothing about "c".
        live.superuser_accepted(g1);
        assert!(live.superuser_unconfirmed());
        live.superuser_accepted(g2);
        assert!(!live.superuser_unconfirmed());
        assert!(live.superuser_view().2.is_empty());
    }

    #[test]
    fn going_back_to_an_old_password_drops_it_from_the_fallbacks() {
        let live = LiveConfig::new(config("a"));
        live.replace(config("b"));
        live.replace(config("a"));
        assert_eq!(passwords(&live.superuser_view().2), vec!["b"]);
        // A reload that changes other keys only keeps the fallbacks as they are.
        let mut other = (*config("a")).clone();
        other.api.password = Some("x".into());
        other.api.username = Some("u".into());
        live.replace(Arc::new(other));
        assert_eq!(passwords(&live.superuser_view().2), vec!["b"]);
    }

    #[test]
    fn at_most_three_fallbacks() {
        let live = LiveConfig::new(config("0"));
        for p in ["1", "2", "3", "4", "5"] {
            live.replace(config(p));
        }
        assert_eq!(passwords(&live.superuser_view().2), vec!["4", "3", "2"]);
    }
}
