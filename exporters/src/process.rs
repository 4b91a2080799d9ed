//! The calling process's own metrics (client_golang's `process_*` names),
//! read from `/proc/self` without the `procfs` dependency the `prometheus`
//! crate's `process` feature would pull in.

use crate::family::{Family, Kind};

/// What `/proc/self/stat` tells.
#[derive(Debug, PartialEq)]
struct Stat {
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    /// Since boot, in clock ticks.
    start_ticks: u64,
    virtual_bytes: u64,
    rss_pages: u64,
}

/// Fields are counted after the command name, which may hold spaces and
/// parentheses: everything up to the last `)` is skipped.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 of proc(5) (state).
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: field(14)? + field(15)?,
        start_ticks: field(22)?,
        virtual_bytes: field(23)?,
        rss_pages: field(24)?,
    })
}

/// `btime` of `/proc/stat`: boot time, epoch seconds.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft "Max open files" limit of `/proc/self/limits`.
fn parse_max_fds(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        Some(f64::INFINITY)
    } else {
        soft.parse().ok()
    }
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf reads a configuration value; it has no preconditions.
    let value = unsafe { libc::sysconf(name) };
    (value > 0).then_some(value as u64)
}

/// The process families; whatever cannot be read is left out.
pub fn families() -> Vec<Family> {
    let mut out = Vec::new();
    let ticks = sysconf(libc::_SC_CLK_TCK).unwrap_or(100) as f64;
    let page = sysconf(libc::_SC_PAGESIZE).unwrap_or(4096);
    if let Some(stat) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|t| parse_stat(&t))
    {
        out.push(Family::single(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            Kind::Counter,
            stat.cpu_ticks as f64 / ticks,
        ));
        out.push(Family::single(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            Kind::Gauge,
            (stat.rss_pages * page) as f64,
        ));
        out.push(Family::single(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            Kind::Gauge,
            stat.virtual_bytes as f64,
        ));
        if let Some(boot) = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| parse_boot_time(&t))
        {
            out.push(Family::single(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                Kind::Gauge,
                boot as f64 + stat.start_ticks as f64 / ticks,
            ));
        }
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        out.push(Family::single(
            "process_open_fds",
            "Number of open file descriptors.",
            Kind::Gauge,
            entries.count() as f64,
        ));
    }
    if let Some(max) = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| parse_max_fds(&t))
    {
        out.push(Family::single(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            Kind::Gauge,
            max,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let text = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 1500 0 0 0 \
                    250 50 0 0 20 0 7 0 123456 20000000 900 18446744073709551615 \
                    1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                cpu_ticks: 300,
                start_ticks: 123456,
                virtual_bytes: 20000000,
                rss_pages: 900,
            })
        );
    }

    #[test]
    fn boot_time_and_fd_limit() {
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1700000000)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(1024.0));
    }

    #[test]
    fn this_process_is_readable() {
        let names: Vec<String> = families().iter().map(|f| f.name().to_string()).collect();
        for expected in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_start_time_seconds",
            "process_open_fds",
            "process_max_fds",
        ] {
            assert!(names.iter().any(|n| n == expected), "{expected} missing");
        }
    }
}
