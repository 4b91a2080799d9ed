//! Builders the unit tests of several modules share.

use crate::cluster::{ClusterMember, Role};
use crate::relation::Databag;

/// A databag from pairs.
pub fn bag(pairs: &[(&str, &str)]) -> Databag {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Member `postgresql-N` of `patronictl list`, at `10.0.0.(N+1):5432`.
pub fn member(n: usize, role: Role, state: &str) -> ClusterMember {
    ClusterMember {
        name: format!("postgresql-{n}"),
        host: format!("10.0.0.{}:5432", n + 1),
        role,
        state: state.into(),
        pending_restart: false,
    }
}
