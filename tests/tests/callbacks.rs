//! Patroni-compatible callbacks (`[postgresql.callbacks]`) on a real
//! three-member cluster. Every callback of every member points at a small
//! script that appends `<action> <role> <scope> <epoch seconds>` to the
//! member's own file, so the test sees what ran where and when:
//!
//! - a bad callback program is a configuration error naming the key (exit 2);
//! - after bootstrap the leader has `on_start primary`, the replicas
//!   `on_start replica`;
//! - after a switchover the new primary gets `on_role_change primary` within
//!   seconds, the old one `on_stop primary` then `on_role_change replica`
//!   (no `on_start`: as in Patroni, a role change replaces it);
//! - callbacks that hang are killed after `callback_timeout` (with their
//!   children) and do not slow the next switchover down.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pgpilot_e2e::http::Method;
use pgpilot_e2e::{wait_until, Cluster};

const READY: Duration = Duration::from_secs(120);
/// How long a callback may hang before pgpilot kills it (`callback_timeout`).
const CALLBACK_TIMEOUT: u64 = 3;
/// The new primary's `on_role_change primary` must have run this soon after
/// the switchover was answered.
const ROLE_CHANGE_WITHIN: f64 = 3.0;

/// One member's callback script and what it wrote.
struct Recorder {
    script: PathBuf,
    log: PathBuf,
}

/// One line the script wrote: `<action> <role> <scope> <epoch seconds>`.
#[derive(Debug, Clone, PartialEq)]
struct Call {
    action: String,
    role: String,
    scope: String,
    at: f64,
}

impl Recorder {
    /// Write `<dir>/callback-<member>.sh` (mode 0755). While the file
    /// `slow` exists, the script also hangs in a child `sleep` whose pid
    /// goes to `<log>.<action>.pid`.
    fn create(dir: &Path, member: &str, slow: &Path) -> anyhow::Result<Recorder> {
        let script = dir.join(format!("callback-{member}.sh"));
        let log = dir.join(format!("callbacks-{member}.log"));
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n\
                 echo \"$1 $2 $3 $(date +%s.%N)\" >> '{log}'\n\
                 if [ -e '{slow}' ]; then\n\
                 \x20 echo \"hanging on purpose\" >&2\n\
                 \x20 sleep 120 &\n\
                 \x20 echo $! > '{log}'.\"$1\".pid\n\
                 \x20 wait\n\
                 \x20 echo \"$1 $2 $3 woke\" >> '{log}'\n\
                 fi\n",
                log = log.display(),
                slow = slow.display()
            ),
        )?;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        Ok(Recorder { script, log })
    }

    /// The member's `[postgresql.callbacks]`: every callback runs the script.
    fn toml(&self) -> String {
        let mut toml = String::from("\n[postgresql.callbacks]\n");
        for key in [
            "on_start",
            "on_stop",
            "on_restart",
            "on_reload",
            "on_role_change",
        ] {
            toml.push_str(&format!(
                "{key} = {:?}\n",
                self.script.display().to_string()
            ));
        }
        toml.push_str(&format!("callback_timeout = {CALLBACK_TIMEOUT}\n"));
        toml
    }

    fn calls(&self) -> Vec<Call> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let (action, role, scope, at) =
                    (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
                Some(Call {
                    action: action.into(),
                    role: role.into(),
                    scope: scope.into(),
                    at: at.parse().unwrap_or(f64::NAN),
                })
            })
            .collect()
    }

    /// `"<action> <role>"` of every call, in order (the scope is checked apart).
    fn summary(&self) -> Vec<String> {
        self.calls()
            .iter()
            .map(|c| format!("{} {}", c.action, c.role))
            .collect()
    }

    fn raw(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait for a call `<action> <role>` after the first `skip` lines.
    async fn wait_call(
        &self,
        c: &Cluster,
        member: &str,
        action: &str,
        role: &str,
        skip: usize,
        timeout: Duration,
    ) -> anyhow::Result<Call> {
        wait_until(
            &format!("{member} to run `{action} {role}`"),
            timeout,
            async || {
                self.calls()
                    .into_iter()
                    .skip(skip)
                    .find(|call| call.action == action && call.role == role)
                    .ok_or_else(|| anyhow::anyhow!("calls so far: {:?}", self.summary()))
            },
        )
        .await
        .map_err(|e| c.with_logs(e))
    }

    /// Pid of the `sleep` the script started for `action`, if it did.
    fn sleeper(&self, action: &str) -> Option<i32> {
        let mut name = self.log.as_os_str().to_owned();
        name.push(format!(".{action}.pid"));
        std::fs::read_to_string(PathBuf::from(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// POST /switchover to the leader `from`, naming `to`; the time it took to
/// be answered 200 and the epoch instant of the answer.
async fn switchover(c: &Cluster, from: usize, to: usize) -> anyhow::Result<(Duration, f64)> {
    let body = serde_json::json!({
        "leader": c.member(from).name,
        "candidate": c.member(to).name,
    });
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()?;
    let started = Instant::now();
    let response = client
        .request(Method::POST, c.member(from).api_url("/switchover"))
        .json(&body)
        .send()
        .await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    let (took, answered) = (started.elapsed(), epoch_now());
    anyhow::ensure!(
        status == 200,
        "switchover {} -> {}: {status} {text}\n{}",
        c.member(from).name,
        c.member(to).name,
        c.logs(40)
    );
    Ok((took, answered))
}

/// Wait until `want` leads with streaming replicas.
async fn wait_leader_is(c: &Cluster, want: usize) -> anyhow::Result<()> {
    wait_until(
        &format!("{} to lead with streaming replicas", c.member(want).name),
        Duration::from_secs(60),
        async || {
            let leader = c.wait_ready(Duration::from_secs(5)).await?;
            anyhow::ensure!(leader == want, "{} leads", c.member(leader).name);
            Ok(())
        },
    )
    .await
    .map_err(|e| c.with_logs(e))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_run_on_start_switchover_and_are_killed_after_their_timeout() -> anyhow::Result<()>
{
    let mut c = Cluster::builder().members(0).start().await?;
    let dir = c.path().join("callbacks");
    std::fs::create_dir(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let slow = dir.join("slow");

    // A callback program that does not exist: refused at start, naming the key.
    let mut bad = c.member_options("bad");
    bad.extra_toml =
        "\n[postgresql.callbacks]\non_start = \"/nonexistent/callback.sh start\"\n".into();
    let bad = c.add_member(bad)?;
    let out = c.member(bad).run_once(Duration::from_secs(30)).await?;
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.contains("key `postgresql.callbacks.on_start`")
            && out.stderr.contains("/nonexistent/callback.sh"),
        "{}",
        out.stderr
    );

    let mut members = Vec::new();
    let mut recorders = Vec::new();
    for name in ["m1", "m2", "m3"] {
        let recorder = Recorder::create(&dir, name, &slow)?;
        let mut options = c.member_options(name);
        options.extra_toml = recorder.toml();
        members.push(c.add_member(options)?);
        recorders.push(recorder);
    }
    for &i in &members {
        c.start_member(i)?;
    }
    let leader = c.wait_ready(READY).await?;
    let at = |i: usize| &recorders[members.iter().position(|&m| m == i).expect("a member")];
    let replicas: Vec<usize> = members.iter().copied().filter(|&i| i != leader).collect();
    let scope = pgpilot_e2e::SCOPE;

    // Bootstrap: the leader announced itself as a started primary, the
    // replicas as started replicas; nobody changed role.
    at(leader)
        .wait_call(
            &c,
            "leader",
            "on_start",
            "primary",
            0,
            Duration::from_secs(10),
        )
        .await?;
    for &r in &replicas {
        at(r)
            .wait_call(
                &c,
                &c.member(r).name,
                "on_start",
                "replica",
                0,
                Duration::from_secs(10),
            )
            .await?;
    }
    for &i in &members {
        let calls = at(i).calls();
        assert!(
            calls.iter().all(|call| call.scope == scope),
            "every call names the scope {scope}: {}",
            at(i).raw()
        );
        assert!(
            calls.iter().all(|call| call.action != "on_role_change"),
            "{}: {:?}",
            c.member(i).name,
            at(i).summary()
        );
        eprintln!(
            "{} after bootstrap: {:?}",
            c.member(i).name,
            at(i).summary()
        );
    }
    let first = at(leader).calls();
    assert_eq!(
        (first[0].action.as_str(), first[0].role.as_str()),
        ("on_start", "primary"),
        "{:?}",
        at(leader).summary()
    );

    // Switchover: the candidate's on_role_change primary comes within a
    // couple of seconds; the old primary stops, then comes back through a
    // role change (no on_start).
    let (old, new, other) = (leader, replicas[0], replicas[1]);
    let seen: Vec<usize> = members.iter().map(|&i| at(i).calls().len()).collect();
    let seen_of = |i: usize| seen[members.iter().position(|&m| m == i).expect("a member")];
    let asked = epoch_now();
    let (took, answered) = switchover(&c, old, new).await?;
    let promoted = at(new)
        .wait_call(
            &c,
            "the new primary",
            "on_role_change",
            "primary",
            seen_of(new),
            Duration::from_secs(10),
        )
        .await?;
    let delay = promoted.at - answered;
    eprintln!(
        "switchover {} -> {} answered in {:.2}s; on_role_change primary ran {:.2}s after the request, {delay:+.2}s after the answer",
        c.member(old).name,
        c.member(new).name,
        took.as_secs_f64(),
        promoted.at - asked,
    );
    assert!(
        promoted.at >= asked && delay <= ROLE_CHANGE_WITHIN,
        "on_role_change primary at {:.2}, switchover asked at {asked:.2}, answered at {answered:.2}",
        promoted.at
    );
    let stopped = at(old)
        .wait_call(
            &c,
            "the old primary",
            "on_stop",
            "primary",
            seen_of(old),
            Duration::from_secs(10),
        )
        .await?;
    let demoted = at(old)
        .wait_call(
            &c,
            "the old primary",
            "on_role_change",
            "replica",
            seen_of(old),
            Duration::from_secs(60),
        )
        .await?;
    eprintln!(
        "old primary: on_stop primary {:+.2}s, on_role_change replica {:+.2}s after the answer",
        stopped.at - answered,
        demoted.at - answered
    );
    assert!(stopped.at <= demoted.at);
    let since: Vec<String> = at(old).summary().split_off(seen_of(old));
    assert!(
        !since.iter().any(|s| s.starts_with("on_start")),
        "a former primary started as a replica gets on_role_change, not on_start: {since:?}"
    );
    // The third member only follows the new leader: a reload, no role change.
    at(other)
        .wait_call(
            &c,
            "the other replica",
            "on_reload",
            "replica",
            seen_of(other),
            Duration::from_secs(30),
        )
        .await?;
    assert!(
        !at(other).summary()[seen_of(other)..]
            .iter()
            .any(|s| s.starts_with("on_role_change")),
        "{:?}",
        at(other).summary()
    );
    wait_leader_is(&c, new).await?;

    // Callbacks that hang: each is killed after callback_timeout, and the
    // switchover back takes its usual time.
    std::fs::write(&slow, "")?;
    let seen: Vec<usize> = members.iter().map(|&i| at(i).calls().len()).collect();
    let seen_of = |i: usize| seen[members.iter().position(|&m| m == i).expect("a member")];
    let (took_slow, answered) = switchover(&c, new, old).await?;
    eprintln!(
        "with hanging callbacks the switchover back answered in {:.2}s (first one: {:.2}s)",
        took_slow.as_secs_f64(),
        took.as_secs_f64()
    );
    assert!(
        took_slow < took + Duration::from_secs(5) && took_slow < Duration::from_secs(20),
        "hanging callbacks slowed the switchover: {took_slow:?} against {took:?}"
    );
    let promoted = at(old)
        .wait_call(
            &c,
            "the new primary",
            "on_role_change",
            "primary",
            seen_of(old),
            Duration::from_secs(10),
        )
        .await?;
    eprintln!(
        "hanging on_role_change primary started {:+.2}s after the answer",
        promoted.at - answered
    );
    // Killed after callback_timeout, with its child.
    let sleeper = wait_until(
        "the hanging callback's sleep pid",
        Duration::from_secs(5),
        async || {
            at(old)
                .sleeper("on_role_change")
                .ok_or_else(|| anyhow::anyhow!("no pid file yet"))
        },
    )
    .await?;
    let kill_message =
        format!("callback on_role_change still ran after callback_timeout ({CALLBACK_TIMEOUT}s)");
    wait_until(
        "the hanging on_role_change to be killed",
        Duration::from_secs(CALLBACK_TIMEOUT + 10),
        async || {
            anyhow::ensure!(
                !pgpilot_e2e::process::alive(sleeper),
                "its sleep {sleeper} still runs"
            );
            anyhow::ensure!(
                c.member(old).log().contains(&kill_message),
                "the sidecar has not logged the kill yet"
            );
            Ok(())
        },
    )
    .await
    .map_err(|e| c.with_logs(e))?;
    let killed_after = epoch_now() - promoted.at;
    eprintln!("hanging callback gone {killed_after:.1}s after it started");
    // The old primary of this round stopped and came back as a replica
    // meanwhile, its hanging callbacks killed the same way.
    at(new)
        .wait_call(
            &c,
            "the old primary",
            "on_role_change",
            "replica",
            seen_of(new),
            Duration::from_secs(60),
        )
        .await?;
    wait_leader_is(&c, old).await?;
    std::fs::remove_file(&slow)?;
    // A killed callback never finished its work.
    for &i in &members {
        assert!(
            !at(i).raw().contains("woke"),
            "{}: a hanging callback was not killed: {}",
            c.member(i).name,
            at(i).raw()
        );
        eprintln!("{}: {:?}", c.member(i).name, at(i).summary());
    }
    c.shutdown(Duration::from_secs(15));
    Ok(())
}
