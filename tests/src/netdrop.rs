//! Packet-level partitions: nftables rules that drop every packet to and
//! from a loopback port, in the kernel — established connections included,
//! retransmissions included — unlike [`crate::netcut`]'s proxy, whose
//! kernel still acknowledges what the client sends. Nothing is closed,
//! refused or reset: a client only notices through its own time-outs, as
//! with a real network partition.
//!
//! Each [`PacketDrop`] owns one nftables table, `pgpilot_e2e_<pid>_<n>`,
//! holding only rules for ports this process drew (never handed out twice,
//! see [`crate::ports`]), so parallel tests never touch each other's
//! traffic; the table is deleted when the value is dropped, and tables left
//! by a test process that was killed are deleted by the next one. Needs
//! root and the `nft` command (Debian's nftables; scripts/setup.sh installs
//! it).

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

const PREFIX: &str = "pgpilot_e2e_";
static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct PacketDrop {
    table: String,
    dropped: Mutex<BTreeSet<u16>>,
}

impl PacketDrop {
    /// A new, empty table (nothing dropped yet).
    pub fn new() -> anyhow::Result<PacketDrop> {
        remove_stale_tables();
        let table = format!(
            "{PREFIX}{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        nft(&format!(
            "add table inet {table}\n\
             add chain inet {table} out {{ type filter hook output priority 0; policy accept; }}\n"
        ))?;
        Ok(PacketDrop {
            table,
            dropped: Mutex::new(BTreeSet::new()),
        })
    }

    /// Drop every TCP packet to or from 127.0.0.1:`port` from now on.
    pub fn drop_port(&self, port: u16) -> anyhow::Result<()> {
        let mut dropped = self.dropped.lock().unwrap_or_else(|e| e.into_inner());
        dropped.insert(port);
        self.apply(&dropped)
    }

    /// Let packets of `port` through again; connections held open resume.
    pub fn pass_port(&self, port: u16) -> anyhow::Result<()> {
        let mut dropped = self.dropped.lock().unwrap_or_else(|e| e.into_inner());
        dropped.remove(&port);
        self.apply(&dropped)
    }

    /// Rewrite the chain with one pair of rules per dropped port (loopback
    /// packets of both directions pass the output hook).
    fn apply(&self, ports: &BTreeSet<u16>) -> anyhow::Result<()> {
        let table = &self.table;
        let mut script = format!("flush chain inet {table} out\n");
        for p in ports {
            script.push_str(&format!(
                "add rule inet {table} out ip daddr 127.0.0.0/8 tcp dport {p} drop\n\
                 add rule inet {table} out ip saddr 127.0.0.0/8 tcp sport {p} drop\n"
            ));
        }
        nft(&script)
    }
}

impl Drop for PacketDrop {
    fn drop(&mut self) {
        if let Err(e) = nft(&format!("delete table inet {}\n", self.table)) {
            eprintln!("netdrop: {e:#}");
        }
    }
}

/// Run an nft script (`nft -f -`).
fn nft(script: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot run nft ({e}): packet-level fault tests need nftables \
                 (apt-get install nftables; scripts/setup.sh installs it) and root"
            )
        })?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "nft failed ({}): {}\nscript:\n{script}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Delete the tables of test processes that are gone (killed before their
/// drop ran), so their rules cannot catch a port drawn again later.
fn remove_stale_tables() {
    let Ok(out) = Command::new("nft").args(["list", "tables"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.trim().strip_prefix("table inet ") else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = nft(&format!("delete table inet {name}\n"));
        }
    }
}
