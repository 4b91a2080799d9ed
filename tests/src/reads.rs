//! A read prober: a client that asks one member a read-only question on a
//! new connection every 100 ms, as an application's read pool would, and
//! records when it was answered and whether the member was read-only.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// One probe: when it was sent, and `Some(in_recovery)` when answered.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub sent: Instant,
    pub answer: Option<bool>,
}

pub struct ReadProbe {
    samples: Arc<Mutex<Vec<Probe>>>,
    task: JoinHandle<()>,
}

/// What the probes saw around an outage that started after `from`.
#[derive(Debug, Clone, Copy)]
pub struct Outage {
    /// The first probe after `from` that got no answer.
    pub first_failure: Instant,
    /// The first probe after that answered read-only (a standby).
    pub read_only_again: Option<Instant>,
    /// Probes between `read_only_again` and `until` without an answer.
    pub failures_after: usize,
    /// Probes between `read_only_again` and `until`.
    pub probes_after: usize,
}

impl ReadProbe {
    /// Start probing the instance on 127.0.0.1:`port`. Bounded: it stops by
    /// itself after `at_most`.
    pub fn start(port: u16, at_most: Duration) -> ReadProbe {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let sink = samples.clone();
        let task = tokio::spawn(async move {
            let end = Instant::now() + at_most;
            while Instant::now() < end {
                let sent = Instant::now();
                let answer = tokio::time::timeout(Duration::from_secs(2), async {
                    let rows = crate::sql::query_strings(port, "SELECT pg_is_in_recovery()::text")
                        .await
                        .ok()?;
                    rows.first().and_then(|r| r.first()).map(|v| v == "true")
                })
                .await
                .ok()
                .flatten();
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Probe { sent, answer });
                tokio::time::sleep(Duration::from_millis(100).saturating_sub(sent.elapsed())).await;
            }
        });
        ReadProbe { samples, task }
    }

    /// Stop probing; every probe made.
    pub fn stop(self) -> Vec<Probe> {
        self.task.abort();
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.clone()
    }
}

/// The outage seen in `probes` after `from`, and how reads went from the
/// moment they came back read-only until `until`; `None` when every probe
/// after `from` was answered.
pub fn outage(probes: &[Probe], from: Instant, until: Instant) -> Option<Outage> {
    let after: Vec<&Probe> = probes.iter().filter(|p| p.sent >= from).collect();
    let first = after.iter().position(|p| p.answer.is_none())?;
    let back = after[first..]
        .iter()
        .find(|p| p.answer == Some(true))
        .map(|p| p.sent);
    let window: Vec<&&Probe> = after
        .iter()
        .filter(|p| back.is_some_and(|b| p.sent >= b) && p.sent < until)
        .collect();
    Some(Outage {
        first_failure: after[first].sent,
        read_only_again: back,
        failures_after: window.iter().filter(|p| p.answer.is_none()).count(),
        probes_after: window.len(),
    })
}
