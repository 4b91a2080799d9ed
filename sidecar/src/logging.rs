//! The logging hook. The binary's entry (main.rs) builds the tracing
//! subscriber: process set-up is its job alone. A command learns its log
//! settings only once it has read the member file, so it asks for the set-up
//! through here; without an installed hook (the library used by the tests
//! crate) nothing is set up.

use std::sync::OnceLock;

/// The log settings of the member file (`[log]`), and the file to append to.
pub struct Settings<'a> {
    pub level: &'a str,
    pub json: bool,
    pub file: Option<std::fs::File>,
}

/// The set-up the binary installs.
pub type SetUp = fn(Settings<'_>);

static HOOK: OnceLock<SetUp> = OnceLock::new();

/// Install the process's set-up (main.rs, once, before any command runs).
pub fn install(set_up: SetUp) {
    let _ = HOOK.set(set_up);
}

/// Log to stderr at `level` (an `EnvFilter` directive), as JSON if `json`.
pub fn set_up(level: &str, json: bool) {
    set_up_with_file(level, json, None);
}

/// Log to stderr and, when given, also append to `file` (`log.file`).
pub fn set_up_with_file(level: &str, json: bool, file: Option<std::fs::File>) {
    if let Some(hook) = HOOK.get() {
        hook(Settings { level, json, file });
    }
}
