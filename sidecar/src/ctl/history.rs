//! `pgpilot ctl history`: the timeline history kept in etcd's `history`
//! key, one row per promotion, as patronictl shows it (the LSN as a byte
//! position, followed by PostgreSQL's notation).

use serde::Serialize;

use super::list::{table, Format};
use super::rest::print;
use super::{CtlError, Target};
use crate::cluster::HistoryEntry;

#[derive(clap::Args, Debug)]
pub struct HistoryArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Pretty)]
    pub format: Format,
}

const COLUMNS: [&str; 5] = ["TL", "LSN", "Reason", "Timestamp", "New Leader"];

#[derive(Debug, Serialize)]
struct Row<'a> {
    #[serde(rename = "TL")]
    tl: u32,
    #[serde(rename = "LSN")]
    lsn: u64,
    #[serde(rename = "Reason")]
    reason: &'a str,
    #[serde(rename = "Timestamp")]
    timestamp: &'a str,
    #[serde(rename = "New Leader")]
    new_leader: &'a str,
}

fn cells(entry: &HistoryEntry) -> Vec<String> {
    vec![
        entry.0.to_string(),
        format!("{} ({})", entry.1, crate::lsn::format_lsn(entry.1)),
        entry.2.clone(),
        entry.3.clone(),
        entry.4.clone(),
    ]
}

pub fn render(history: &[HistoryEntry], format: Format) -> String {
    match format {
        Format::Pretty => {
            let rows: Vec<Vec<String>> = history.iter().map(cells).collect();
            table("", &COLUMNS, &[true, true, false, false, false], &rows)
        }
        Format::Json => {
            let rows: Vec<Row> = history
                .iter()
                .map(|h| Row {
                    tl: h.0,
                    lsn: h.1,
                    reason: &h.2,
                    timestamp: &h.3,
                    new_leader: &h.4,
                })
                .collect();
            let mut s = serde_json::to_string(&rows).expect("rows serialize");
            s.push('\n');
            s
        }
        Format::Tsv => {
            let mut out = COLUMNS.join("\t");
            out.push('\n');
            for h in history {
                out.push_str(&format!("{}\t{}\t{}\t{}\t{}\n", h.0, h.1, h.2, h.3, h.4));
            }
            out
        }
    }
}

pub async fn run(target: &Target, args: &HistoryArgs) -> Result<(), CtlError> {
    let (_, view) = super::fetch_view(target).await?;
    print(&render(&view.history, args.format))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history() -> Vec<HistoryEntry> {
        vec![
            HistoryEntry(
                1,
                50_331_808,
                "no recovery target specified".into(),
                "2024-05-01T10:00:00Z".into(),
                "m2".into(),
            ),
            HistoryEntry(
                2,
                67_109_032,
                "no recovery target specified".into(),
                "2024-05-01T11:00:00Z".into(),
                "m1".into(),
            ),
        ]
    }

    #[test]
    fn pretty_table() {
        let text = render(&history(), Format::Pretty);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            "| TL |                  LSN | Reason                       | Timestamp            | New Leader |"
        );
        assert_eq!(
            lines[3],
            "|  1 | 50331808 (0/30000A0) | no recovery target specified | 2024-05-01T10:00:00Z | m2         |"
        );
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{text}");
    }

    #[test]
    fn json_and_tsv() {
        let json: serde_json::Value =
            serde_json::from_str(&render(&history(), Format::Json)).unwrap();
        assert_eq!(json[1]["TL"], 2);
        assert_eq!(json[1]["New Leader"], "m1");
        let tsv = render(&history(), Format::Tsv);
        assert!(tsv.starts_with("TL\tLSN\tReason\tTimestamp\tNew Leader\n1\t50331808\t"));
    }

    #[test]
    fn empty_history_is_a_header() {
        let text = render(&[], Format::Pretty);
        assert_eq!(text.lines().count(), 3, "{text}");
    }
}
