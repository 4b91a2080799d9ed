//! `meta/snap.yaml` as snapd reads it: apps, hooks, environments, and the
//! environment expansion of snap-exec (Go's `os.Expand` plus snapd's
//! `${VAR:-word}` / `${VAR:+word}`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde_norway::Value as Yaml;

/// snapd's default `stop-timeout` (timeout.DefaultTimeout), not systemd's 90 s.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// systemd's default `RestartSec` (snapd writes none unless `restart-delay` is set).
pub const DEFAULT_RESTART_DELAY: Duration = Duration::from_millis(100);

/// systemd's `Restart=` values, from snap.yaml's `restart-condition`
/// (snapd's default: on-failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartCondition {
    Never,
    Always,
    OnSuccess,
    OnFailure,
    OnAbnormal,
    OnAbort,
    OnWatchdog,
}

impl RestartCondition {
    fn parse(text: &str) -> anyhow::Result<RestartCondition> {
        Ok(match text {
            "never" | "no" => RestartCondition::Never,
            "always" => RestartCondition::Always,
            "on-success" => RestartCondition::OnSuccess,
            "on-failure" => RestartCondition::OnFailure,
            "on-abnormal" => RestartCondition::OnAbnormal,
            "on-abort" => RestartCondition::OnAbort,
            "on-watchdog" => RestartCondition::OnWatchdog,
            other => anyhow::bail!("unknown restart-condition {other:?}"),
        })
    }

    /// systemd's rule for a main process that ended with `code` (exit code)
    /// or `signal`, when nobody asked the unit to stop. A clean end is exit
    /// code 0 or SIGHUP, SIGINT, SIGTERM, SIGPIPE.
    pub fn restarts(self, code: Option<i32>, signal: Option<i32>) -> bool {
        let clean_signal = signal.is_some_and(|s| {
            [libc::SIGHUP, libc::SIGINT, libc::SIGTERM, libc::SIGPIPE].contains(&s)
        });
        let clean = code == Some(0) || clean_signal;
        let unclean_signal = signal.is_some() && !clean_signal;
        match self {
            RestartCondition::Never | RestartCondition::OnWatchdog => false,
            RestartCondition::Always => true,
            RestartCondition::OnSuccess => clean,
            RestartCondition::OnFailure => !clean,
            RestartCondition::OnAbnormal | RestartCondition::OnAbort => unclean_signal,
        }
    }
}

/// An app of meta/snap.yaml.
#[derive(Debug, Clone)]
pub struct App {
    pub name: String,
    /// Relative to $SNAP, then arguments (split on spaces, `$VAR` expanded).
    pub command: String,
    pub command_chain: Vec<String>,
    /// `simple`, `forking`, `oneshot`, `notify`, `dbus`; `None`: a command app.
    pub daemon: Option<String>,
    /// `install-mode: disable`: not enabled nor started at install.
    pub install_disabled: bool,
    pub restart_condition: RestartCondition,
    pub stop_timeout: Duration,
    pub restart_delay: Duration,
    /// The signal systemd stops the unit with (`stop-mode`).
    pub kill_signal: i32,
    /// `KillMode=control-group` (snapd's default stop-mode and the `*-all`
    /// ones): every process of the unit gets the signal, and whatever is
    /// left when the main process ends is stopped too. Otherwise
    /// (`KillMode=process`) only the main process.
    pub kill_all: bool,
    pub environment: Vec<(String, String)>,
}

impl App {
    pub fn is_service(&self) -> bool {
        self.daemon.is_some()
    }
}

/// A hook's own entries of meta/snap.yaml (the hook exists when
/// meta/hooks/NAME does).
#[derive(Debug, Clone, Default)]
pub struct HookMeta {
    pub command_chain: Vec<String>,
    pub environment: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct SnapMeta {
    pub name: String,
    pub version: String,
    pub base: Option<String>,
    pub environment: Vec<(String, String)>,
    pub apps: BTreeMap<String, App>,
    pub hooks: BTreeMap<String, HookMeta>,
    /// `system-usernames` keys (`_daemon_`, `snap_daemon`).
    pub system_usernames: Vec<String>,
}

impl SnapMeta {
    pub fn read(snap_dir: &Path) -> anyhow::Result<SnapMeta> {
        let path = snap_dir.join("meta/snap.yaml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        SnapMeta::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<SnapMeta> {
        let doc: Yaml = serde_norway::from_str(text)?;
        let name = scalar(doc.get("name")).context("no name")?;
        let version = scalar(doc.get("version")).unwrap_or_default();
        let mut apps = BTreeMap::new();
        if let Some(Yaml::Mapping(map)) = doc.get("apps") {
            for (key, body) in map {
                let app_name = scalar(Some(key)).context("an app without a name")?;
                let app = parse_app(&app_name, body).with_context(|| format!("app {app_name}"))?;
                apps.insert(app_name, app);
            }
        }
        let mut hooks = BTreeMap::new();
        if let Some(Yaml::Mapping(map)) = doc.get("hooks") {
            for (key, body) in map {
                let hook_name = scalar(Some(key)).context("a hook without a name")?;
                hooks.insert(
                    hook_name,
                    HookMeta {
                        command_chain: strings(body.get("command-chain")),
                        environment: environment(body.get("environment")),
                    },
                );
            }
        }
        let system_usernames = match doc.get("system-usernames") {
            Some(Yaml::Mapping(map)) => map.keys().filter_map(|k| scalar(Some(k))).collect(),
            _ => Vec::new(),
        };
        Ok(SnapMeta {
            name,
            version,
            base: scalar(doc.get("base")),
            environment: environment(doc.get("environment")),
            apps,
            hooks,
            system_usernames,
        })
    }

    /// snapd refuses invalid nested option names only for core26 and later.
    pub fn strict_option_names(&self) -> bool {
        self.base
            .as_deref()
            .and_then(|b| b.strip_prefix("core"))
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n >= 26)
    }

    pub fn services(&self) -> impl Iterator<Item = &App> {
        self.apps.values().filter(|a| a.is_service())
    }
}

fn parse_app(name: &str, body: &Yaml) -> anyhow::Result<App> {
    let duration = |key: &str, default: Duration| -> anyhow::Result<Duration> {
        match scalar(body.get(key)) {
            Some(text) => parse_go_duration(&text).with_context(|| format!("{key}: {text:?}")),
            None => Ok(default),
        }
    };
    let stop_mode = scalar(body.get("stop-mode")).unwrap_or_default();
    let kill_signal = match stop_mode.trim_end_matches("-all") {
        "" | "sigterm" => libc::SIGTERM,
        "sighup" => libc::SIGHUP,
        "sigusr1" => libc::SIGUSR1,
        "sigusr2" => libc::SIGUSR2,
        "sigint" => libc::SIGINT,
        other => anyhow::bail!("unknown stop-mode {other:?}"),
    };
    Ok(App {
        name: name.to_string(),
        command: scalar(body.get("command")).context("no command")?,
        command_chain: strings(body.get("command-chain")),
        daemon: scalar(body.get("daemon")),
        install_disabled: scalar(body.get("install-mode")).as_deref() == Some("disable"),
        restart_condition: match scalar(body.get("restart-condition")) {
            Some(text) => RestartCondition::parse(&text)?,
            None => RestartCondition::OnFailure,
        },
        stop_timeout: duration("stop-timeout", DEFAULT_STOP_TIMEOUT)?,
        restart_delay: duration("restart-delay", DEFAULT_RESTART_DELAY)?,
        kill_signal,
        kill_all: stop_mode.is_empty() || stop_mode.ends_with("-all"),
        environment: environment(body.get("environment")),
    })
}

fn scalar(value: Option<&Yaml>) -> Option<String> {
    match value? {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn strings(value: Option<&Yaml>) -> Vec<String> {
    match value {
        Some(Yaml::Sequence(items)) => items.iter().filter_map(|i| scalar(Some(i))).collect(),
        _ => Vec::new(),
    }
}

/// An `environment:` mapping, in its order (snapd expands in order).
fn environment(value: Option<&Yaml>) -> Vec<(String, String)> {
    match value {
        Some(Yaml::Mapping(map)) => map
            .iter()
            .filter_map(|(k, v)| Some((scalar(Some(k))?, scalar(Some(v)).unwrap_or_default())))
            .collect(),
        _ => Vec::new(),
    }
}

/// Go's `time.ParseDuration` for the forms snap.yaml uses ("30s", "1m30s",
/// "500ms", "1.5h").
pub fn parse_go_duration(text: &str) -> anyhow::Result<Duration> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    anyhow::ensure!(!rest.is_empty(), "empty duration");
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..num_len].parse().context("bad number")?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => anyhow::bail!("unknown unit {other:?}"),
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

/// snap-exec's environment expansion (osutil.Environment.ExtendWithExpanded):
/// each entry in order, expanded against the environment as it grows.
pub fn extend_with_expanded(env: &mut BTreeMap<String, String>, entries: &[(String, String)]) {
    for (key, value) in entries {
        let expanded = expand(value, env);
        env.insert(key.clone(), expanded);
    }
}

/// Go's `os.Expand` with snapd's mapping: `$VAR`, `${VAR}`,
/// `${VAR:-word}`, `${VAR:+word}`; an undefined variable is empty.
pub fn expand(text: &str, env: &BTreeMap<String, String>) -> String {
    let s = text.as_bytes();
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    let mut j = 0;
    while j < s.len() {
        if s[j] == b'$' && j + 1 < s.len() {
            out.extend_from_slice(&s[i..j]);
            let (name, width) = shell_name(&text[j + 1..]);
            if name.is_empty() && width > 0 {
                // Bad syntax: Go eats the characters.
            } else if name.is_empty() {
                out.push(b'$');
            } else {
                out.extend_from_slice(lookup(name, env).as_bytes());
            }
            j += width;
            i = j + 1;
        }
        j += 1;
    }
    out.extend_from_slice(&s[i.min(s.len())..]);
    String::from_utf8_lossy(&out).into_owned()
}

fn lookup(name: &str, env: &BTreeMap<String, String>) -> String {
    // snapd's envExpandRegExp `[a-zA-Z0-9_]+:[+-]`, leftmost match.
    let bytes = name.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut start = 0;
    while start < bytes.len() {
        if !word(bytes[start]) {
            start += 1;
            continue;
        }
        let mut end = start;
        while end < bytes.len() && word(bytes[end]) {
            end += 1;
        }
        if end + 1 < bytes.len() && bytes[end] == b':' && matches!(bytes[end + 1], b'+' | b'-') {
            let var = env.get(&name[start..end]).cloned().unwrap_or_default();
            let word_text = &name[end + 2..];
            return match (bytes[end + 1], var.is_empty()) {
                (b'-', true) => expand(word_text, env),
                (b'-', false) => var,
                (_, true) => String::new(),
                (_, false) => expand(word_text, env),
            };
        }
        start = end;
    }
    env.get(name).cloned().unwrap_or_default()
}

/// Go's `getShellName`: the variable name after a `$` and how many bytes it takes.
fn shell_name(s: &str) -> (&str, usize) {
    let b = s.as_bytes();
    let special = |c: u8| b"*#$@!?-0123456789".contains(&c);
    if b[0] == b'{' {
        if b.len() > 2 && special(b[1]) && b[2] == b'}' {
            return (&s[1..2], 3);
        }
        for i in 1..b.len() {
            if b[i] == b'}' {
                if i == 1 {
                    return ("", 2);
                }
                return (&s[1..i], i + 1);
            }
        }
        return ("", 1);
    }
    if special(b[0]) {
        return (&s[0..1], 1);
    }
    let n = b
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count();
    (&s[..n], n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expansion_is_snap_execs() {
        let e = env(&[("SNAP", "/snap/x/1"), ("PATH", "/usr/bin"), ("EMPTY", "")]);
        assert_eq!(expand("$SNAP/bin:$PATH", &e), "/snap/x/1/bin:/usr/bin");
        assert_eq!(expand("${SNAP}x", &e), "/snap/x/1x");
        assert_eq!(expand("$NOPE/a", &e), "/a");
        assert_eq!(expand("a$", &e), "a$");
        assert_eq!(expand("a$/b", &e), "a$/b");
        assert_eq!(expand("${}z", &e), "z");
        assert_eq!(
            expand("${SNAP_LIBRARY_PATH}${PATH:+:$PATH}", &e),
            ":/usr/bin"
        );
        assert_eq!(expand("x${EMPTY:+:$PATH}", &e), "x");
        assert_eq!(expand("${EMPTY:-$SNAP}", &e), "/snap/x/1");
        let mut grown = e.clone();
        extend_with_expanded(
            &mut grown,
            &[
                ("PATH".into(), "$SNAP/usr/bin:$PATH".into()),
                ("A".into(), "$PATH".into()),
            ],
        );
        assert_eq!(grown["A"], "/snap/x/1/usr/bin:/usr/bin");
    }

    #[test]
    fn durations_and_restart_rules() {
        assert_eq!(parse_go_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_go_duration("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert!(parse_go_duration("10").is_err());
        let always = RestartCondition::Always;
        assert!(always.restarts(Some(0), None));
        let on_failure = RestartCondition::OnFailure;
        assert!(on_failure.restarts(Some(1), None));
        assert!(!on_failure.restarts(Some(0), None));
        assert!(!on_failure.restarts(None, Some(libc::SIGTERM)));
        assert!(on_failure.restarts(None, Some(libc::SIGKILL)));
        assert!(!RestartCondition::OnAbnormal.restarts(Some(1), None));
        assert!(RestartCondition::OnAbnormal.restarts(None, Some(libc::SIGSEGV)));
        assert!(!RestartCondition::Never.restarts(Some(1), None));
    }

    #[test]
    fn reads_apps_hooks_and_environment() {
        let meta = SnapMeta::parse(
            "name: demo\nversion: '1.0'\nbase: core24\n\
             environment:\n  B: $SNAP/b\n  A: x\n\
             system-usernames:\n  _daemon_: shared\n\
             apps:\n  svc:\n    command: bin/svc --flag $SNAP_DATA\n    command-chain: [bin/chain]\n    daemon: simple\n    install-mode: disable\n    restart-condition: always\n    stop-timeout: 5s\n    stop-mode: sigterm\n\
             \x20 cmd:\n    command: bin/cmd\n    environment:\n      K: v\n\
             hooks:\n  configure:\n    plugs: [network]\n",
        )
        .unwrap();
        assert_eq!(meta.name, "demo");
        assert_eq!(
            meta.environment,
            vec![("B".into(), "$SNAP/b".into()), ("A".into(), "x".into())]
        );
        assert_eq!(meta.system_usernames, vec!["_daemon_".to_string()]);
        let svc = &meta.apps["svc"];
        assert!(svc.is_service() && svc.install_disabled && !svc.kill_all);
        assert_eq!(svc.restart_condition, RestartCondition::Always);
        assert_eq!(svc.stop_timeout, Duration::from_secs(5));
        assert_eq!(svc.command_chain, vec!["bin/chain".to_string()]);
        let cmd = &meta.apps["cmd"];
        assert!(!cmd.is_service() && cmd.kill_all);
        assert_eq!(cmd.stop_timeout, DEFAULT_STOP_TIMEOUT);
        assert!(meta.hooks.contains_key("configure"));
        assert!(!meta.strict_option_names());
    }
}
