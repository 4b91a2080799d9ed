//! The process table, read from /proc: what belongs to a unit or a machine.
//!
//! systemd knows a unit's processes from its cgroup; the fixture has none
//! and finds them by three marks, each robust where the others are not:
//! - descendants (through /proc/PID/stat's parent pid) of a process already
//!   known to belong, seen every half second while the unit runs and
//!   remembered as (pid, start time), so an orphan that was seen once is
//!   still found after its parent exits;
//! - the environment at exec (/proc/PID/environ): systemd gives every
//!   process of a service `INVOCATION_ID`, inherited by whatever it starts
//!   (PostgreSQL too), also through setsid and double forks;
//! - for the whole machine, `SNAP_DATA`/`SNAP_COMMON` under the machine's
//!   root, which every hook, app and service process of the snap inherits.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::process::{alive, signal, Signal};

/// A live (not zombie) process: pid, parent pid, start time in clock ticks.
#[derive(Debug, Clone, Copy)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub start: u64,
}

/// Every live process.
pub fn scan() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_stat)
        .collect()
}

fn read_stat(pid: i32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); ppid is field 4, starttime field 22.
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    Some(Proc {
        pid,
        ppid: fields.get(1)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// The start time of a live `pid`.
pub fn start_time(pid: i32) -> Option<u64> {
    read_stat(pid).map(|p| p.start)
}

/// Does the environment `pid` was started with hold one of `entries`
/// ("KEY=VALUE", exactly)?
pub fn environ_has(pid: i32, entries: &[String]) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    raw.split(|b| *b == 0)
        .any(|item| entries.iter().any(|e| e.as_bytes() == item))
}

/// Processes known to belong, remembered across scans as (pid, start time).
#[derive(Debug, Default)]
pub struct Tracked {
    known: HashSet<(i32, u64)>,
}

impl Tracked {
    /// Remember `pid` (if alive).
    pub fn add(&mut self, pid: i32) {
        if let Some(start) = start_time(pid) {
            self.known.insert((pid, start));
        }
    }

    /// Refresh: drop the dead, add `seeds`, the processes whose environment
    /// holds one of `marks` (when given), and every descendant of all these.
    /// Returns the live members, sorted.
    pub fn refresh(&mut self, seeds: &[i32], marks: &[String]) -> Vec<i32> {
        let table = scan();
        let by_pid: HashMap<i32, &Proc> = table.iter().map(|p| (p.pid, p)).collect();
        let me = std::process::id() as i32;
        let mut members: HashSet<i32> = self
            .known
            .iter()
            .filter(|(pid, start)| by_pid.get(pid).is_some_and(|p| p.start == *start))
            .map(|(pid, _)| *pid)
            .collect();
        members.extend(seeds.iter().filter(|p| by_pid.contains_key(p)));
        if !marks.is_empty() {
            members.extend(
                table
                    .iter()
                    .filter(|p| p.pid != me && environ_has(p.pid, marks))
                    .map(|p| p.pid),
            );
        }
        let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
        for p in &table {
            children.entry(p.ppid).or_default().push(p.pid);
        }
        let mut stack: Vec<i32> = members.iter().copied().collect();
        while let Some(pid) = stack.pop() {
            for child in children.get(&pid).into_iter().flatten() {
                if members.insert(*child) {
                    stack.push(*child);
                }
            }
        }
        members.remove(&me);
        self.known = members
            .iter()
            .filter_map(|pid| by_pid.get(pid).map(|p| (p.pid, p.start)))
            .collect();
        let mut out: Vec<i32> = members.into_iter().collect();
        out.sort_unstable();
        out
    }
}

/// Send `sig` (and SIGCONT, as systemd does, so a stopped process acts on
/// it) to each pid.
pub fn signal_all(pids: &[i32], sig: Signal) {
    for pid in pids {
        signal(*pid, sig);
        if sig != Signal::SIGKILL {
            signal(*pid, Signal::SIGCONT);
        }
    }
}

/// Wait until none of `pids` is alive, or `deadline`; true if all are gone.
pub fn wait_all_gone(pids: &[i32], deadline: Instant) -> bool {
    loop {
        if !pids.iter().any(|p| alive(*p)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM `pids`, SIGKILL whatever is left at `deadline`, wait a little more.
pub fn terminate(pids: &[i32], deadline: Instant) {
    if pids.is_empty() {
        return;
    }
    signal_all(pids, Signal::SIGTERM);
    if !wait_all_gone(pids, deadline) {
        signal_all(pids, Signal::SIGKILL);
        wait_all_gone(pids, Instant::now() + Duration::from_secs(5));
    }
}
