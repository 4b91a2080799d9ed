//! The fixture's snapd state: the snap's committed configuration, the
//! contexts `snapctl` calls arrive in (one per running hook, one for the
//! apps), and the service commands a `configure` hook queued.
//!
//! The state lives in the test process, behind a mutex, and `snapctl`
//! reaches it over the machine's socket (see `server.rs`), as the real one
//! reaches snapd over /run/snapd-snap.socket. After every commit it is also
//! written to `ROOT/var/lib/snapd/state.json` (temporary file + rename) for
//! a post-mortem.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::{json, Value};

use super::config;

/// A service command: `snapctl start|stop|restart`, `snap start|stop|restart`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Start { enable: bool },
    Stop { disable: bool },
    Restart,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceOp {
    pub action: Action,
    /// App names, sorted.
    pub apps: Vec<String>,
    /// The apps named one by one (not through the snap's name): a restart
    /// starts them even when inactive.
    pub explicit: Vec<String>,
}

impl std::fmt::Display for ServiceOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (verb, flag) = match self.action {
            Action::Start { enable } => ("start", enable.then_some(" --enable")),
            Action::Stop { disable } => ("stop", disable.then_some(" --disable")),
            Action::Restart => ("restart", None),
        };
        write!(f, "{verb}{} {}", flag.unwrap_or(""), self.apps.join(" "))
    }
}

/// The transaction of a hook: snapd's pristine snapshot plus changes.
#[derive(Debug, Clone)]
pub struct Transaction {
    pristine: Value,
    changes: Vec<(String, Value)>,
}

impl Transaction {
    pub fn new(pristine: Value) -> Transaction {
        Transaction {
            pristine,
            changes: Vec::new(),
        }
    }

    /// The configuration as this transaction sees it.
    pub fn view(&self, snap: &str) -> Value {
        let mut view = self.pristine.clone();
        for (key, value) in &self.changes {
            // Each change was checked against the view when it was made.
            let _ = config::apply(&mut view, snap, key, value.clone());
        }
        view
    }

    /// Record `key = value` (null: unset), refused like snapd refuses it.
    pub fn set(&mut self, snap: &str, key: &str, value: Value) -> Result<(), String> {
        let mut view = self.view(snap);
        config::apply(&mut view, snap, key, value.clone())?;
        self.changes.push((key.to_string(), value));
        Ok(())
    }

    /// Apply the changes onto `config` (snapd's commit re-reads the
    /// current configuration, so concurrent commits are not lost).
    pub fn commit_onto(&self, snap: &str, config: &mut Value) {
        for (key, value) in &self.changes {
            let _ = config::apply(config, snap, key, value.clone());
        }
    }
}

/// Where a `snapctl` call comes from.
#[derive(Debug, Clone)]
pub struct Context {
    /// The hook's name; `None` for the apps' context (snapd's "ephemeral"
    /// context: changes commit at once, service commands run at once).
    pub hook: Option<String>,
    pub transaction: Option<Transaction>,
    /// Service commands a configure hook queued: carried out after the
    /// hook succeeds, dropped when it fails.
    pub queued: Vec<ServiceOp>,
}

pub struct State {
    pub snap: String,
    /// The committed configuration: a JSON object.
    pub config: Value,
    pub contexts: HashMap<String, Context>,
    /// The cookie of the apps' context (snapd's /var/lib/snapd/cookie/snap.NAME).
    pub app_cookie: String,
    path: PathBuf,
}

impl State {
    pub fn new(snap: &str, path: PathBuf) -> anyhow::Result<State> {
        let app_cookie = random_token(44)?;
        let mut contexts = HashMap::new();
        contexts.insert(
            app_cookie.clone(),
            Context {
                hook: None,
                transaction: None,
                queued: Vec::new(),
            },
        );
        let state = State {
            snap: snap.to_string(),
            config: json!({}),
            contexts,
            app_cookie,
            path,
        };
        state.save()?;
        Ok(state)
    }

    /// A context for a hook about to run, seeing `pristine` plus `patch`.
    pub fn begin_hook(
        &mut self,
        hook: &str,
        patch: &[(String, Value)],
        strict_names: bool,
    ) -> Result<String, String> {
        let mut transaction = Transaction::new(self.config.clone());
        for (key, value) in patch {
            if strict_names {
                if let Some(bad) = config::invalid_map_key(value) {
                    return Err(format!("invalid option name: {bad:?}"));
                }
            }
            transaction.set(&self.snap, key, value.clone())?;
        }
        let cookie = random_token(44).map_err(|e| format!("{e:#}"))?;
        self.contexts.insert(
            cookie.clone(),
            Context {
                hook: Some(hook.to_string()),
                transaction: Some(transaction),
                queued: Vec::new(),
            },
        );
        Ok(cookie)
    }

    /// Forget a hook's context; with `commit`, its changes become the configuration.
    pub fn end_hook(&mut self, cookie: &str, commit: bool) -> anyhow::Result<Vec<ServiceOp>> {
        let context = self
            .contexts
            .remove(cookie)
            .context("internal error: the hook's context is gone")?;
        if !commit {
            return Ok(Vec::new());
        }
        if let Some(transaction) = &context.transaction {
            transaction.commit_onto(&self.snap, &mut self.config);
            self.save()?;
        }
        Ok(context.queued)
    }

    /// The configuration `cookie`'s context sees.
    pub fn view(&self, cookie: &str) -> Option<Value> {
        let context = self.contexts.get(cookie)?;
        Some(match &context.transaction {
            Some(t) => t.view(&self.snap),
            None => self.config.clone(),
        })
    }

    /// `snapctl set` in `cookie`'s context: into the hook's transaction, or
    /// committed at once for the apps' context.
    pub fn set(
        &mut self,
        cookie: &str,
        pairs: &[(String, Value)],
        strict_names: bool,
    ) -> Result<(), String> {
        let snap = self.snap.clone();
        let context = self
            .contexts
            .get_mut(cookie)
            .ok_or("cannot find the context")?;
        let mut scratch = context
            .transaction
            .clone()
            .unwrap_or_else(|| Transaction::new(self.config.clone()));
        for (key, value) in pairs {
            if strict_names {
                if let Some(bad) = config::invalid_map_key(value) {
                    return Err(format!("invalid option name: {bad:?}"));
                }
            }
            scratch.set(&snap, key, value.clone())?;
        }
        if context.transaction.is_some() {
            context.transaction = Some(scratch);
        } else {
            scratch.commit_onto(&snap, &mut self.config);
            self.save().map_err(|e| format!("{e:#}"))?;
        }
        Ok(())
    }

    /// Write state.json (for a post-mortem; nothing reads it back).
    pub fn save(&self) -> anyhow::Result<()> {
        let doc = json!({ "config": { &self.snap: &self.config } });
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("renaming {} into place", tmp.display()))?;
        Ok(())
    }
}

/// `len` random letters and digits, like snapd's context ids and cookies.
pub fn random_token(len: usize) -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; len];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_transactions_commit_or_vanish() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::new("s", dir.path().join("state.json")).unwrap();
        state
            .set(
                &state.app_cookie.clone(),
                &[("a.b".into(), json!(1))],
                false,
            )
            .unwrap();
        assert_eq!(state.config, json!({"a": {"b": 1}}));

        let cookie = state
            .begin_hook("configure", &[("a.c".into(), json!("x"))], false)
            .unwrap();
        state
            .set(&cookie, &[("d".into(), json!(true))], false)
            .unwrap();
        assert_eq!(
            state.view(&cookie).unwrap(),
            json!({"a": {"b": 1, "c": "x"}, "d": true})
        );
        // Others still see the committed configuration.
        assert_eq!(
            state.view(&state.app_cookie.clone()).unwrap(),
            json!({"a": {"b": 1}})
        );
        state.end_hook(&cookie, false).unwrap();
        assert_eq!(state.config, json!({"a": {"b": 1}}));

        let cookie = state
            .begin_hook("configure", &[("a.b".into(), Value::Null)], false)
            .unwrap();
        state.end_hook(&cookie, true).unwrap();
        assert_eq!(state.config, json!({"a": {}}));
        let saved: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("state.json")).unwrap()).unwrap();
        assert_eq!(saved["config"]["s"], json!({"a": {}}));

        assert_eq!(
            state.begin_hook("configure", &[("A".into(), json!(1))], false),
            Err(r#"invalid option name: "A""#.to_string())
        );
        assert!(state
            .begin_hook("configure", &[("a".into(), json!({"X": 1}))], true)
            .is_err());
        assert_eq!(random_token(44).unwrap().len(), 44);
    }
}
