//! What the leader reads for the `database` relations: the primary's roles,
//! databases and version (one psql query), and our relation secrets.

use std::collections::BTreeMap;

use super::{superuser_password, Observed, WORKLOAD_TIMEOUT};
use crate::client::{self, ClientsView, SecretGroup};
use crate::cluster;
use crate::context::{Event, DATABASE_ENDPOINT};
use crate::extensions;
use crate::snap::SnapDriver;
use crate::tools::HookTools;

/// Only the leader serves clients; it reads the primary while it has
/// `database` relations, in their hooks (a broken one leaves a user to
/// drop), and at update-status (a drop that failed before).
pub fn worth_reading(o: &Observed) -> bool {
    let database_hook =
        matches!(&o.event, Event::Relation { endpoint, .. } if endpoint == DATABASE_ENDPOINT);
    o.is_leader
        && (!o.relations_on(DATABASE_ENDPOINT).is_empty()
            || database_hook
            || matches!(o.event, Event::UpdateStatus))
}

pub(super) fn read_view(o: &Observed, snap: &dyn SnapDriver) -> Option<ClientsView> {
    if !worth_reading(o) {
        return None;
    }
    let primary = cluster::leader(o.cluster.as_deref()?).filter(|l| l.is_healthy())?;
    let env = [("PGPASSWORD".to_string(), superuser_password(o)?)];
    let args = extensions::psql_args(primary.host_only(), primary.port(), "postgres");
    let out = snap
        .run_app_with(
            "psql",
            &args,
            Some(client::VIEW_SQL),
            &env,
            WORKLOAD_TIMEOUT,
        )
        .ok()?;
    client::parse_view(&out).ok()
}

/// The content of every secret our application bags on `database`
/// relations name (the leader's; the owner reads its latest revision).
pub(super) fn read_secrets(
    o: &Observed,
    tools: &dyn HookTools,
) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    if !o.is_leader {
        return out;
    }
    for rel in o.relations_on(DATABASE_ENDPOINT) {
        for group in SecretGroup::ALL {
            let Some(uri) = rel
                .local_app_data
                .get(&group.bag_key())
                .filter(|u| !u.is_empty())
            else {
                continue;
            };
            if let Ok(content) = tools.secret_get(uri, false) {
                out.insert(uri.clone(), content);
            }
        }
    }
    out
}
