//! `pgpilot ctl list`: the member table operators know from `patronictl list`.
//!
//! ```text
//! + Cluster: demo (7445412516225875488) ---+----+-----------+
//! | Member | Host           | Role    | State     | TL | Lag in MB |
//! +--------+----------------+---------+-----------+----+-----------+
//! | pg1    | 127.0.0.1:7011 | Leader  | running   |  1 |           |
//! | pg2    | 127.0.0.1:7012 | Replica | streaming |  1 |         0 |
//! +--------+----------------+---------+-----------+----+-----------+
//! ```
//!
//! The rows come from [`crate::api::cluster::report`], the same report the
//! REST API serves at `/cluster`; this file only renders it.

use serde::Serialize;

use super::{CtlError, Target};
use crate::api::cluster::{ClusterReport, MemberReport};

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Pretty)]
    pub format: Format,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A table with the cluster's name and system identifier in its top border.
    Pretty,
    /// A JSON array, one object per member (patronictl's keys).
    Json,
    /// Tab-separated values with a header line.
    Tsv,
}

pub async fn run(target: &Target, args: &ListArgs) -> Result<(), CtlError> {
    let report = super::fetch_report(target).await?;
    let text = render(&report, args.format);
    // A closed pipe (`| head`) is not an error worth a panic.
    use std::io::Write as _;
    match std::io::stdout().write_all(text.as_bytes()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CtlError::failure(format!("cannot write the output: {e}"))),
    }
}

/// The report in the requested format, ending with a newline.
pub fn render(report: &ClusterReport, format: Format) -> String {
    match format {
        Format::Pretty => render_pretty(report),
        Format::Json => render_json(report),
        Format::Tsv => render_tsv(report),
    }
}

/// Lag as patronictl shows it: whole MB, "unknown", or nothing (the leader).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
enum LagMb {
    Mb(u64),
    Text(String),
}

impl LagMb {
    fn of(member: &MemberReport) -> Option<LagMb> {
        match member.lag.as_ref()? {
            serde_json::Value::Number(n) => {
                let bytes = n.as_f64().unwrap_or(0.0).max(0.0);
                Some(LagMb::Mb((bytes / 1_048_576.0).round() as u64))
            }
            serde_json::Value::String(s) => Some(LagMb::Text(s.clone())),
            serde_json::Value::Null => None,
            other => Some(LagMb::Text(other.to_string())),
        }
    }

    fn text(&self) -> String {
        match self {
            LagMb::Mb(mb) => mb.to_string(),
            LagMb::Text(s) => s.clone(),
        }
    }
}

/// One member as patronictl names its columns (also the JSON keys).
#[derive(Debug, Clone, Serialize)]
struct Row {
    #[serde(rename = "Cluster")]
    cluster: String,
    #[serde(rename = "Member")]
    member: String,
    #[serde(rename = "Host", skip_serializing_if = "String::is_empty")]
    host: String,
    #[serde(rename = "Role")]
    role: String,
    #[serde(rename = "State")]
    state: String,
    #[serde(rename = "TL", skip_serializing_if = "Option::is_none")]
    tl: Option<u32>,
    #[serde(rename = "Lag in MB", skip_serializing_if = "Option::is_none")]
    lag: Option<LagMb>,
    #[serde(rename = "Pending restart", skip_serializing_if = "Option::is_none")]
    pending_restart: Option<&'static str>,
}

/// `sync_standby` → `Sync Standby`, `leader` → `Leader`.
fn title_case(role: &str) -> String {
    role.split('_')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            match chars.next() {
                Some(first) => first
                    .to_uppercase()
                    .chain(chars.flat_map(char::to_lowercase))
                    .collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<String>>()
        .join(" ")
}

fn rows(report: &ClusterReport) -> Vec<Row> {
    report
        .members
        .iter()
        .map(|m| Row {
            cluster: report.scope.clone(),
            member: m.name.clone(),
            host: match m.port {
                Some(port) => format!("{}:{port}", m.host),
                None => m.host.clone(),
            },
            role: title_case(&m.role),
            state: m.state.clone(),
            tl: m.timeline,
            lag: LagMb::of(m),
            pending_restart: m.pending_restart.then_some("*"),
        })
        .collect()
}

/// Columns shown; "Pending restart" only when some member needs one.
fn columns(rows: &[Row]) -> Vec<&'static str> {
    let mut columns = vec!["Member", "Host", "Role", "State", "TL", "Lag in MB"];
    if rows.iter().any(|r| r.pending_restart.is_some()) {
        columns.push("Pending restart");
    }
    columns
}

fn cells(row: &Row, columns: &[&str]) -> Vec<String> {
    columns
        .iter()
        .map(|c| match *c {
            "Cluster" => row.cluster.clone(),
            "Member" => row.member.clone(),
            "Host" => row.host.clone(),
            "Role" => row.role.clone(),
            "State" => row.state.clone(),
            "TL" => row.tl.map(|t| t.to_string()).unwrap_or_default(),
            "Lag in MB" => row.lag.as_ref().map(LagMb::text).unwrap_or_default(),
            "Pending restart" => row.pending_restart.unwrap_or("").to_string(),
            _ => String::new(),
        })
        .collect()
}

fn render_pretty(report: &ClusterReport) -> String {
    let rows = rows(report);
    let columns = columns(&rows);
    let body: Vec<Vec<String>> = rows.iter().map(|r| cells(r, &columns)).collect();
    let right: Vec<bool> = columns
        .iter()
        .map(|c| matches!(*c, "TL" | "Lag in MB"))
        .collect();
    let title = format!(
        " Cluster: {} ({}) ",
        report.scope,
        report.system_id.as_deref().unwrap_or("uninitialized")
    );
    let mut out = table(&title, &columns, &right, &body);
    if let Some(s) = &report.scheduled_switchover {
        out.push_str(&format!(" Switchover scheduled at: {}\n", s.at));
        if let Some(from) = &s.from {
            out.push_str(&format!("                    from: {from}\n"));
        }
        if let Some(to) = &s.to {
            out.push_str(&format!("                      to: {to}\n"));
        }
    }
    if report.pause {
        out.push_str(" Maintenance mode: on\n");
    }
    out
}

fn width(s: &str) -> usize {
    s.chars().count()
}

/// A prettytable-style table whose top border carries `title` (as
/// patronictl draws it); the last column widens if the title would not fit.
pub(crate) fn table(title: &str, columns: &[&str], right: &[bool], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|c| width(c)).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(cell));
        }
    }
    // Border length is 1 + sum(w + 3); the title needs its length plus the
    // leading '+' and at least "-+" after it.
    let border_len = |widths: &[usize]| 1 + widths.iter().map(|w| w + 3).sum::<usize>();
    let short = (width(title) + 3).saturating_sub(border_len(&widths));
    if let Some(last) = widths.last_mut() {
        *last += short;
    }

    let rule: String = std::iter::once("+".to_string())
        .chain(widths.iter().map(|w| format!("{}+", "-".repeat(w + 2))))
        .collect();
    let line = |cells: &[String]| -> String {
        let mut s = String::from("|");
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = " ".repeat(w - width(cell));
            if right[i] {
                s.push_str(&format!(" {pad}{cell} |"));
            } else {
                s.push_str(&format!(" {cell}{pad} |"));
            }
        }
        s
    };
    let top: String = {
        let title_chars: Vec<char> = title.chars().collect();
        let rule_chars: Vec<char> = rule.chars().collect();
        let take = title_chars.len().min(rule_chars.len().saturating_sub(2));
        std::iter::once(rule_chars[0])
            .chain(title_chars[..take].iter().copied())
            .chain(rule_chars[1 + take..].iter().copied())
            .collect()
    };

    let header: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
    let mut out = String::new();
    out.push_str(&top);
    out.push('\n');
    out.push_str(&line(&header));
    out.push('\n');
    out.push_str(&rule);
    out.push('\n');
    if !rows.is_empty() {
        for row in rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        out.push_str(&rule);
        out.push('\n');
    }
    out
}

fn render_json(report: &ClusterReport) -> String {
    let mut out = serde_json::to_string(&rows(report)).expect("rows serialize");
    out.push('\n');
    out
}

fn render_tsv(report: &ClusterReport) -> String {
    let rows = rows(report);
    let mut columns = vec!["Cluster"];
    columns.extend(self::columns(&rows));
    let mut out = columns.join("\t");
    out.push('\n');
    for row in &rows {
        out.push_str(&cells(row, &columns).join("\t"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Tags;

    fn member(
        name: &str,
        port: u16,
        role: &str,
        state: &str,
        lag: Option<serde_json::Value>,
    ) -> MemberReport {
        MemberReport {
            name: name.into(),
            role: role.into(),
            state: state.into(),
            api_url: format!("http://127.0.0.1:{}/patroni", port + 10),
            host: "127.0.0.1".into(),
            port: Some(port),
            timeline: Some(1),
            lag,
            tags: Tags::default(),
            pending_restart: false,
        }
    }

    fn demo() -> ClusterReport {
        ClusterReport {
            members: vec![
                member("pg1", 7011, "leader", "running", None),
                member(
                    "pg2",
                    7012,
                    "replica",
                    "streaming",
                    Some(serde_json::json!(0)),
                ),
                member(
                    "pg3",
                    7013,
                    "sync_standby",
                    "streaming",
                    Some(serde_json::json!(3_500_000)),
                ),
            ],
            scope: "demo".into(),
            system_id: Some("7445412516225875488".into()),
            pause: false,
            scheduled_switchover: None,
        }
    }

    #[test]
    fn pretty_table_matches_patronictl_layout() {
        let expected = "\
+ Cluster: demo (7445412516225875488) ---+-----------+----+-----------+
| Member | Host           | Role         | State     | TL | Lag in MB |
+--------+----------------+--------------+-----------+----+-----------+
| pg1    | 127.0.0.1:7011 | Leader       | running   |  1 |           |
| pg2    | 127.0.0.1:7012 | Replica      | streaming |  1 |         0 |
| pg3    | 127.0.0.1:7013 | Sync Standby | streaming |  1 |         3 |
+--------+----------------+--------------+-----------+----+-----------+
";
        assert_eq!(render(&demo(), Format::Pretty), expected);
    }

    #[test]
    fn every_line_of_the_table_has_the_same_width() {
        let text = render(&demo(), Format::Pretty);
        let widths: Vec<usize> = text.lines().map(width).collect();
        assert!(widths.iter().all(|w| *w == widths[0]), "{text}");
    }

    #[test]
    fn pause_and_unknown_lag_and_pending_restart() {
        let mut report = demo();
        report.pause = true;
        report.members[1].lag = Some(serde_json::json!("unknown"));
        report.members[1].state = "stopped".into();
        report.members[1].timeline = None;
        report.members[2].pending_restart = true;
        let text = render(&report, Format::Pretty);
        assert!(text.contains("| Pending restart |"), "{text}");
        assert!(text.contains("| pg2    | 127.0.0.1:7012 | Replica      | stopped   |    |   unknown |                 |"), "{text}");
        assert!(
            text.contains("|  1 |         3 | *               |"),
            "{text}"
        );
        assert!(text.ends_with("+\n Maintenance mode: on\n"), "{text}");
    }

    #[test]
    fn empty_cluster_shows_header_only() {
        let report = ClusterReport {
            members: vec![],
            scope: "nothing".into(),
            system_id: None,
            pause: false,
            scheduled_switchover: None,
        };
        let expected = "\
+ Cluster: nothing (uninitialized) -+-----------+
| Member | Host | Role | State | TL | Lag in MB |
+--------+------+------+-------+----+-----------+
";
        assert_eq!(render(&report, Format::Pretty), expected);
    }

    #[test]
    fn long_title_widens_the_table() {
        let report = ClusterReport {
            members: vec![],
            scope: "a-very-long-cluster-name-that-does-not-fit".into(),
            system_id: Some("7445412516225875488".into()),
            pause: false,
            scheduled_switchover: None,
        };
        let text = render(&report, Format::Pretty);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with(
                "+ Cluster: a-very-long-cluster-name-that-does-not-fit (7445412516225875488) -"
            ),
            "{text}"
        );
        assert!(lines[0].ends_with('+'), "{text}");
        assert!(lines.iter().all(|l| width(l) == width(lines[0])), "{text}");
    }

    #[test]
    fn json_uses_patronictl_keys_and_omits_empty_values() {
        let text = render(&demo(), Format::Json);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            serde_json::json!([
                {"Cluster": "demo", "Member": "pg1", "Host": "127.0.0.1:7011", "Role": "Leader", "State": "running", "TL": 1},
                {"Cluster": "demo", "Member": "pg2", "Host": "127.0.0.1:7012", "Role": "Replica", "State": "streaming", "TL": 1, "Lag in MB": 0},
                {"Cluster": "demo", "Member": "pg3", "Host": "127.0.0.1:7013", "Role": "Sync Standby", "State": "streaming", "TL": 1, "Lag in MB": 3},
            ])
        );
        // Key order follows the columns, as patronictl prints them.
        assert!(
            text.starts_with(
                r#"[{"Cluster":"demo","Member":"pg1","Host":"127.0.0.1:7011","Role":"Leader""#
            ),
            "{text}"
        );
    }

    #[test]
    fn tsv_has_a_header_and_the_cluster_column() {
        let text = render(&demo(), Format::Tsv);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "Cluster\tMember\tHost\tRole\tState\tTL\tLag in MB"
        );
        assert_eq!(lines[1], "demo\tpg1\t127.0.0.1:7011\tLeader\trunning\t1\t");
        assert_eq!(
            lines[3],
            "demo\tpg3\t127.0.0.1:7013\tSync Standby\tstreaming\t1\t3"
        );
    }

    #[test]
    fn roles_are_title_cased() {
        assert_eq!(title_case("standby_leader"), "Standby Leader");
        assert_eq!(title_case("replica"), "Replica");
    }
}
