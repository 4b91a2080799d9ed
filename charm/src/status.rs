//! Workload statuses: the four a charm may set, and the messages this charm
//! uses, in one place so that docs/charm.md and the tests quote the same text.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StatusKind {
    Active,
    Blocked,
    Waiting,
    Maintenance,
    /// Only read back from `status-get` (never set by a charm).
    Unknown,
    /// Only read back from `status-get`.
    Error,
}

impl StatusKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusKind::Active => "active",
            StatusKind::Blocked => "blocked",
            StatusKind::Waiting => "waiting",
            StatusKind::Maintenance => "maintenance",
            StatusKind::Unknown => "unknown",
            StatusKind::Error => "error",
        }
    }

    pub fn parse(text: &str) -> StatusKind {
        match text {
            "active" => StatusKind::Active,
            "blocked" => StatusKind::Blocked,
            "waiting" => StatusKind::Waiting,
            "maintenance" => StatusKind::Maintenance,
            "error" => StatusKind::Error,
            _ => StatusKind::Unknown,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub kind: StatusKind,
    pub message: String,
}

impl Status {
    pub fn active(message: impl Into<String>) -> Self {
        Status {
            kind: StatusKind::Active,
            message: message.into(),
        }
    }
    pub fn blocked(message: impl Into<String>) -> Self {
        Status {
            kind: StatusKind::Blocked,
            message: message.into(),
        }
    }
    pub fn waiting(message: impl Into<String>) -> Self {
        Status {
            kind: StatusKind::Waiting,
            message: message.into(),
        }
    }
    pub fn maintenance(message: impl Into<String>) -> Self {
        Status {
            kind: StatusKind::Maintenance,
            message: message.into(),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.kind.as_str())
        } else {
            write!(f, "{}: {}", self.kind.as_str(), self.message)
        }
    }
}

/// Messages that today's charm uses too (charm-snap.md §1.6), kept verbatim.
pub mod msg {
    pub const DISABLED: &str = "Disabled";
    pub const INSTALLING: &str = "installing PostgreSQL";
    pub const WAITING_TO_START: &str = "waiting to start PostgreSQL";
    pub const AWAITING_PASSWORDS: &str = "awaiting passwords generation";
    pub const AWAITING_MEMBER: &str = "awaiting for member to start";
    pub const PRIMARY: &str = "Primary";
    pub const PRIMARY_DEGRADED: &str = "Primary (degraded)";
    // New in this charm.
    pub const AWAITING_PEER_RELATION: &str = "waiting for the peer relation";
    pub const AWAITING_ADDRESS: &str = "waiting for this unit's address on the peer relation";
    pub const AWAITING_ETCD_ADMISSION: &str = "waiting to be added to the etcd cluster";
    pub const AWAITING_RESTART_TURN: &str = "waiting for its turn to restart";
    pub const STOPPED: &str = "stopped";
}
