//! `[postgresql.callbacks]`: programs pgpilot runs on start, stop, restart,
//! reload and role changes, as Patroni's callbacks.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Invalid;

/// `[postgresql.callbacks]`: each program is run in the background with
/// three more arguments, `<action> <role> <scope>`, as Patroni does.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CallbacksSection {
    /// Run when pgpilot has started PostgreSQL (in the role it had).
    #[serde(default)]
    pub on_start: Option<CommandLine>,
    /// Run when pgpilot has stopped a running PostgreSQL.
    #[serde(default)]
    pub on_stop: Option<CommandLine>,
    /// Run when pgpilot has restarted PostgreSQL in the same role.
    #[serde(default)]
    pub on_restart: Option<CommandLine>,
    /// Run when pgpilot has made PostgreSQL reload its configuration.
    #[serde(default)]
    pub on_reload: Option<CommandLine>,
    /// Run when the member's role changed: promotion, a former primary
    /// started as a replica, a primary that failed to start (`demoted`).
    #[serde(default)]
    pub on_role_change: Option<CommandLine>,
    /// Seconds a callback may run before it is killed (with its children).
    #[serde(default = "default_callback_timeout")]
    pub callback_timeout: u64,
}

impl Default for CallbacksSection {
    fn default() -> Self {
        CallbacksSection {
            on_start: None,
            on_stop: None,
            on_restart: None,
            on_reload: None,
            on_role_change: None,
            callback_timeout: default_callback_timeout(),
        }
    }
}

impl CallbacksSection {
    /// The configured callbacks with their keys: `(key, command line)`.
    pub fn configured(&self) -> impl Iterator<Item = (&'static str, &CommandLine)> {
        [
            ("on_start", &self.on_start),
            ("on_stop", &self.on_stop),
            ("on_restart", &self.on_restart),
            ("on_reload", &self.on_reload),
            ("on_role_change", &self.on_role_change),
        ]
        .into_iter()
        .filter_map(|(key, command)| command.as_ref().map(|c| (key, c)))
    }

    /// The programs the callbacks run, with their keys (valid command
    /// lines only; [`crate::member_file`] checks that they can be run).
    pub fn programs(&self) -> impl Iterator<Item = (String, std::path::PathBuf)> + '_ {
        self.configured().filter_map(|(key, command)| {
            let argv = command.argv().ok()?;
            Some((
                format!("postgresql.callbacks.{key}"),
                argv[0].clone().into(),
            ))
        })
    }

    pub(super) fn validate(&self) -> Result<(), Invalid> {
        for (key, command) in self.configured() {
            let key = format!("postgresql.callbacks.{key}");
            let argv = command.argv().map_err(|m| Invalid::new(&key, m))?;
            let program = Path::new(&argv[0]);
            if !program.is_absolute() {
                return Err(Invalid::new(
                    key,
                    format!(
                        "the program {:?} must be an absolute path",
                        program.display().to_string()
                    ),
                ));
            }
        }
        if !(1..=3600).contains(&self.callback_timeout) {
            return Err(Invalid::new(
                "postgresql.callbacks.callback_timeout",
                "must be between 1 and 3600 seconds",
            ));
        }
        Ok(())
    }
}

/// A program and its arguments: one string split into words like a POSIX
/// shell does (quotes and backslashes only, as Patroni's `shlex.split`: see
/// [`split_words`]), or an array of strings taken as they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum CommandLine {
    Line(String),
    Argv(Vec<String>),
}

impl CommandLine {
    /// The program and its arguments, or why the value is unusable.
    pub fn argv(&self) -> Result<Vec<String>, String> {
        let argv = match self {
            CommandLine::Line(line) => split_words(line)?,
            CommandLine::Argv(argv) => argv.clone(),
        };
        if argv.first().is_none_or(|p| p.is_empty()) {
            return Err("needs a program: an absolute path".into());
        }
        if argv.iter().any(|a| a.contains('\0')) {
            return Err("must not contain a NUL character".into());
        }
        Ok(argv)
    }
}

/// Split a command line into words as Python's `shlex.split` does (what
/// Patroni applies to its callbacks): whitespace separates words; `'...'`
/// keeps everything; `"..."` keeps everything but `\"` and `\\`; a
/// backslash outside quotes keeps the next character. No variables, globs,
/// comments or other shell syntax.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\r' | '\n' => words.extend(word.take()),
            '\\' => {
                let next = chars
                    .next()
                    .ok_or("ends with a backslash that escapes nothing")?;
                word.get_or_insert_default().push(next);
            }
            '\'' => {
                let word = word.get_or_insert_default();
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("has a ' without its closing quote".into()),
                    }
                }
            }
            '"' => {
                let word = word.get_or_insert_default();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("has a \" without its closing quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("has a \" without its closing quote".into()),
                    }
                }
            }
            c => word.get_or_insert_default().push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

impl<'de> Deserialize<'de> for CommandLine {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = CommandLine;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a command line: a string or an array of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CommandLine, E> {
                Ok(CommandLine::Line(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<CommandLine, A::Error> {
                let mut argv = Vec::new();
                while let Some(arg) = seq.next_element::<String>()? {
                    argv.push(arg);
                }
                Ok(CommandLine::Argv(argv))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

fn default_callback_timeout() -> u64 {
    30
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests_support::EXAMPLE;
    use crate::config::Config;
    use std::os::unix::fs::PermissionsExt;

    fn parse(text: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    /// `[postgresql.callbacks]` with `body`, before `[api]`.
    fn with_callbacks(body: &str) -> String {
        EXAMPLE.replace("[api]", &format!("[postgresql.callbacks]\n{body}\n[api]"))
    }

    #[test]
    fn words_split_like_python_shlex() {
        let ok = |line: &str, want: &[&str]| assert_eq!(split_words(line).unwrap(), want, "{line}");
        ok("/usr/local/bin/cb", &["/usr/local/bin/cb"]);
        ok("  /cb   a\tb\n", &["/cb", "a", "b"]);
        ok("/cb 'a b' \"c d\" e\\ f", &["/cb", "a b", "c d", "e f"]);
        ok("/cb '' \"\"", &["/cb", "", ""]);
        ok("/cb a'b'\"c\"d", &["/cb", "abcd"]);
        ok(
            r#"/cb "q\"q" "b\\s" "\$HOME" 'x\y'"#,
            &["/cb", "q\"q", "b\\s", "\\$HOME", "x\\y"],
        );
        ok("/cb $HOME #1 *", &["/cb", "$HOME", "#1", "*"]);
        ok("", &[]);
        for bad in ["/cb 'open", "/cb \"open", "/cb \"a\\", "/cb a\\"] {
            assert!(split_words(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn callbacks_default_to_none() {
        let c = parse(EXAMPLE).unwrap();
        assert_eq!(c.postgresql.callbacks, CallbacksSection::default());
        assert_eq!(c.postgresql.callbacks.callback_timeout, 30);
        assert_eq!(c.postgresql.callbacks.configured().count(), 0);
    }

    #[test]
    fn callbacks_take_a_string_or_an_array() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("my callback.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = script.display().to_string();
        // A basic TOML string: `\"` is a quote, `\\'` a backslash and a quote.
        let text = with_callbacks(&format!(
            r#"on_start = "\"{path}\" --vip \"10.0.0.9 24\" it\\'s"
on_role_change = ["{path}", "--vip", ""]
callback_timeout = 5"#
        ));
        let c = parse(&text).unwrap();
        let cb = &c.postgresql.callbacks;
        assert_eq!(
            cb.on_start.as_ref().unwrap().argv().unwrap(),
            [path.as_str(), "--vip", "10.0.0.9 24", "it's"]
        );
        assert_eq!(
            cb.on_role_change.as_ref().unwrap().argv().unwrap(),
            [path.as_str(), "--vip", ""]
        );
        assert_eq!(cb.callback_timeout, 5);
        let keys: Vec<&str> = cb.configured().map(|(k, _)| k).collect();
        assert_eq!(keys, ["on_start", "on_role_change"]);
        // What `ctl` prints parses back to the same.
        let again: CallbacksSection = toml::from_str(&toml::to_string(cb).unwrap()).unwrap();
        assert_eq!(&again, cb);
    }

    #[test]
    fn callbacks_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain.sh");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let plain = plain.display().to_string();
        let dir_path = dir.path().display().to_string();
        let cases = [
            (
                "on_start = \"relative/cb.sh\"",
                "postgresql.callbacks.on_start",
                "absolute path",
            ),
            (
                "on_stop = \"/nonexistent/cb.sh x\"",
                "postgresql.callbacks.on_stop",
                "/nonexistent/cb.sh",
            ),
            (
                "on_restart = \"/bin/true 'unclosed\"",
                "postgresql.callbacks.on_restart",
                "without its closing quote",
            ),
            (
                "on_reload = []",
                "postgresql.callbacks.on_reload",
                "needs a program",
            ),
            (
                "on_reload = \"  \"",
                "postgresql.callbacks.on_reload",
                "needs a program",
            ),
            (
                &format!("on_role_change = \"{dir_path}\""),
                "postgresql.callbacks.on_role_change",
                "not a file",
            ),
            (
                "on_start = 3",
                "postgresql.callbacks.on_start",
                "a string or an array of strings",
            ),
            (
                "on_start = [\"/bin/true\", 3]",
                "postgresql.callbacks.on_start[1]",
                "expected a string",
            ),
            (
                "on_promote = \"/bin/true\"",
                "postgresql.callbacks.on_promote",
                "unknown field",
            ),
            (
                "callback_timeout = 0",
                "postgresql.callbacks.callback_timeout",
                "between 1 and 3600",
            ),
            (
                "callback_timeout = 3601",
                "postgresql.callbacks.callback_timeout",
                "between 1 and 3600",
            ),
        ];
        let mut cases: Vec<(String, &str, &str)> = cases
            .iter()
            .map(|(t, k, m)| (t.to_string(), *k, *m))
            .collect();
        // Root may execute a file with no x bit at all, but not one without any.
        cases.push((
            format!("on_stop = \"{plain}\""),
            "postgresql.callbacks.on_stop",
            "not executable",
        ));
        for (body, key, message) in cases {
            let err = parse(&with_callbacks(&body)).unwrap_err();
            assert_eq!(err.key(), Some(key), "{body}: {err}");
            assert!(err.to_string().contains(message), "{body}: {err}");
        }
        // The smallest working ones.
        let c = parse(&with_callbacks(
            "on_start = \"/bin/true\"\ncallback_timeout = 3600",
        ))
        .unwrap();
        assert_eq!(
            c.postgresql.callbacks.on_start,
            Some(CommandLine::Line("/bin/true".into()))
        );
    }
}
