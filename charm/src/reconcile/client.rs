//! The `database` relations (the leader, on a cluster with a running
//! primary): for each requirer that names a database, its user and
//! database on the primary, then the answer — credentials in a secret
//! granted to the relation, endpoints in plain text. A hook publishes only
//! after the SQL step that makes the user, in the same hook: a failing step
//! stops the plan, and Juju then commits none of the hook's relation data
//! or secrets, so a half-made user is never published. The endpoints are
//! written at every leader hook, so a failover's peer relation-changed (a
//! member's `member-state`) moves them at once. Users of relations that
//! are gone are dropped (their databases stay); a broken relation's secrets
//! go with it. Replicas write nothing here.

use std::collections::BTreeSet;

use super::Reconciler;
use crate::client::{self, AnswerInput, ClientsView, Endpoints, SecretGroup};
use crate::cluster::{self, ClusterMember};
use crate::context::{unit_of_member, Event, RelationKind, DATABASE_ENDPOINT};
use crate::observe::{Observed, Passwords};
use crate::plan::Step;
use crate::relation::{bag_changes, RelationView};
use crate::status::{Status, StatusKind};
use crate::tools::LogLevel;

/// The relation a `database` relation-broken hook is about.
fn broken_relation(event: &Event) -> Option<&str> {
    match event {
        Event::Relation {
            endpoint,
            kind: RelationKind::Broken,
            relation_id,
            ..
        } if endpoint == DATABASE_ENDPOINT => Some(relation_id),
        _ => None,
    }
}

/// This unit leaves a `database` relation (it is being removed): like
/// leaving the peer relation, its hooks only tear down from now on, and its
/// relation-broken drops no user (the relation lives on for the others).
pub fn leaves_client_relation(event: &Event, unit: &str) -> bool {
    matches!(event, Event::Relation {
        endpoint,
        kind: RelationKind::Departed,
        departing_unit: Some(d),
        ..
    } if endpoint == DATABASE_ENDPOINT && d == unit)
}

/// pgpilot's members, less the replicas whose unit has left (or is
/// leaving) the peer relation: pgpilot lists a removed member until its key
/// expires, and nothing wakes the leader then.
fn serving_members(o: &Observed) -> Vec<ClusterMember> {
    let departing = o.event.departing_unit();
    let staying = |m: &ClusterMember| {
        let unit = unit_of_member(&m.name);
        o.peer
            .as_ref()
            .is_some_and(|p| p.unit_data.contains_key(&unit))
            && departing != Some(unit.as_str())
    };
    o.cluster
        .iter()
        .flatten()
        .filter(|m| m.is_leader() || staying(m))
        .cloned()
        .collect()
}

/// What one relation's answer needs besides the request.
struct Context<'c> {
    primary: &'c ClusterMember,
    endpoints: Option<Endpoints>,
    view: Option<&'c ClientsView>,
    superuser_password: String,
}

impl Reconciler<'_> {
    /// The leader's part; a blocked status when a request is refused.
    pub(super) fn manage_clients(&mut self, passwords: &Passwords) -> Option<Status> {
        let o = self.o;
        if !o.is_leader {
            return None;
        }
        self.remove_obsolete_revisions();
        let relations = o.relations_on(DATABASE_ENDPOINT);
        let broken = broken_relation(&o.event);
        // A broken relation's secrets go with it, whatever the cluster's
        // state (its user is dropped once the primary can be reached).
        if let Some(rel) = relations.iter().find(|r| Some(r.id.as_str()) == broken) {
            self.remove_secrets(rel);
        }
        let primary = o
            .cluster
            .as_deref()
            .and_then(cluster::leader)
            .filter(|l| l.is_healthy())?;
        let ctx = Context {
            primary,
            endpoints: client::endpoints(&serving_members(o)),
            view: o.clients.as_ref(),
            superuser_password: passwords.get("operator").cloned().unwrap_or_default(),
        };
        let mut fresh = o.host.fresh_client_passwords.iter();
        let mut refused = Vec::new();
        let live: Vec<&RelationView> = relations
            .iter()
            .filter(|r| Some(r.id.as_str()) != broken)
            .collect();
        for rel in &live {
            if let Err(why) = self.serve(rel, &ctx, &mut fresh) {
                let app = if rel.remote_app.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", rel.remote_app)
                };
                refused.push(format!("relation {}{app}: {why}", rel.id));
            }
        }
        if let Some(view) = ctx.view {
            let numbers: BTreeSet<&str> = live.iter().map(|r| client::number(&r.id)).collect();
            let replicas: Vec<(String, u16)> = o
                .cluster
                .iter()
                .flatten()
                .filter(|m| !m.is_leader() && m.is_healthy())
                .map(|m| (m.host_only().to_string(), m.port()))
                .collect();
            for n in view.relation_users().filter(|n| !numbers.contains(n)) {
                self.plan.push(Step::DropClientUser {
                    host: primary.host_only().to_string(),
                    port: primary.port(),
                    user: client::username(n),
                    replicas: replicas.clone(),
                    superuser_password: ctx.superuser_password.clone(),
                });
            }
        }
        let first = refused.first()?;
        for why in &refused {
            self.plan.log(LogLevel::Warning, why.clone());
        }
        let blocked = Status::blocked(first.clone());
        if self
            .app_status
            .as_ref()
            .is_none_or(|s| s.kind != StatusKind::Blocked)
        {
            self.app_status = Some(blocked.clone());
        }
        Some(blocked)
    }

    /// One relation: the user and database if needed, then the answer.
    /// `Err`: the request is refused (the message says why).
    fn serve<'p>(
        &mut self,
        rel: &RelationView,
        ctx: &Context<'_>,
        fresh: &mut impl Iterator<Item = &'p String>,
    ) -> Result<(), String> {
        let o = self.o;
        let Some(request) =
            client::parse_request(&rel.remote_app_data).map_err(|e| e.to_string())?
        else {
            return Ok(());
        };
        let bag = &rel.local_app_data;
        let secret_of = |g: SecretGroup| {
            let uri = bag.get(&g.bag_key()).filter(|u| !u.is_empty())?;
            Some((uri, o.client_secrets.get(uri)))
        };
        // A secret we published but cannot read now: leave the relation
        // alone rather than answer with a new password.
        if SecretGroup::ALL
            .iter()
            .any(|g| matches!(secret_of(*g), Some((_, None))))
        {
            self.plan.log(
                LogLevel::Warning,
                format!(
                    "relation {}: cannot read our secret; trying again at the next hook",
                    rel.id
                ),
            );
            return Ok(());
        }
        let user_secret = secret_of(SecretGroup::User).and_then(|(_, c)| c);
        // Relations answered in plain text before secrets stay so (as
        // data_interfaces v0 does).
        let plain_before = bag.contains_key("password") && user_secret.is_none();
        let requested = if plain_before {
            None
        } else {
            request.secrets.as_ref()
        };
        let published = user_secret
            .and_then(|c| c.get("password"))
            .or_else(|| bag.get("password"))
            .filter(|p| !p.is_empty());
        let user = client::username(&rel.id);

        let Some(view) = ctx.view else {
            // The primary could not be read: a published answer still
            // follows the endpoints; a new one waits.
            if let (Some(password), Some(endpoints)) = (published, &ctx.endpoints) {
                let version = bag.get("version").cloned().unwrap_or_default();
                self.answer(
                    rel, &request, requested, &user, password, &version, endpoints,
                );
            }
            return Ok(());
        };
        let spec = client::user_spec(&request, view).map_err(|e| e.to_string())?;
        let role = view.roles.get(&user);
        let made = published.is_some()
            && role.is_some_and(|r| r.matches(&spec))
            && view.databases.contains(&request.database);
        let password = match published {
            Some(p) => p.clone(),
            None => match fresh.next() {
                Some(p) => p.clone(),
                None => {
                    self.plan.log(
                        LogLevel::Info,
                        format!("relation {}: its user is made by the next hook", rel.id),
                    );
                    return Ok(());
                }
            },
        };
        let Some(endpoints) = &ctx.endpoints else {
            return Ok(());
        };
        if !made {
            self.plan.push(Step::EnsureClientUser {
                host: ctx.primary.host_only().to_string(),
                port: ctx.primary.port(),
                user: user.clone(),
                password: password.clone(),
                database: request.database.clone(),
                spec,
                leave: role.map(|r| r.member_of.clone()).unwrap_or_default(),
                superuser_password: ctx.superuser_password.clone(),
            });
        }
        self.answer(
            rel,
            &request,
            requested,
            &user,
            &password,
            &view.version,
            endpoints,
        );
        Ok(())
    }

    /// Secrets created or updated (only when their content differs), then
    /// the plain keys that differ.
    #[allow(clippy::too_many_arguments)]
    fn answer(
        &mut self,
        rel: &RelationView,
        request: &client::Request,
        requested: Option<&BTreeSet<String>>,
        user: &str,
        password: &str,
        version: &str,
        endpoints: &Endpoints,
    ) {
        let fields = client::answer_fields(&AnswerInput {
            user,
            password,
            database: &request.database,
            version,
            endpoints,
            // This unit's PostgreSQL serves TLS with the certificates
            // relation's CA: `tls` = True and the CA.
            tls_ca: crate::tls::active_ca(self.o),
        });
        let (mut plain, secrets) = client::split(&fields, requested);
        let bag = &rel.local_app_data;
        for group in SecretGroup::ALL {
            let key = group.bag_key();
            let uri = bag.get(&key).filter(|u| !u.is_empty());
            let content = secrets.get(&group);
            match (uri, content) {
                (Some(uri), wanted) => {
                    plain.insert(key, uri.clone());
                    let current = self.o.client_secrets.get(uri);
                    if let Some(c) = wanted.filter(|c| Some(*c) != current) {
                        self.plan.push(Step::UpdateAppSecret {
                            id: uri.clone(),
                            content: c.clone(),
                        });
                    }
                }
                (None, Some(c)) => self.plan.push(Step::CreateRelationSecret {
                    relation_id: rel.id.clone(),
                    label: group.label(&rel.id),
                    key,
                    content: c.clone(),
                }),
                (None, None) => {}
            }
        }
        // A `secret-<group>` key created by a step above is not in the
        // bag yet, nor in `plain`: left alone.
        let changes = bag_changes(bag, &plain);
        if !changes.is_empty() {
            self.plan.push(Step::SetRelationData {
                relation_id: rel.id.clone(),
                app: true,
                data: changes,
            });
        }
    }

    /// A broken relation's secrets go with it.
    fn remove_secrets(&mut self, rel: &RelationView) {
        for group in SecretGroup::ALL {
            if let Some(uri) = rel.local_app_data.get(&group.bag_key()) {
                if !uri.is_empty() {
                    self.plan.push(Step::RemoveSecret { id: uri.clone() });
                }
            }
        }
    }

    /// A revision of a relation secret nobody tracks any more.
    fn remove_obsolete_revisions(&mut self) {
        let o = self.o;
        if let Event::SecretRemove {
            id,
            revision: Some(revision),
            ..
        } = &o.event
        {
            let ours = o.relations_on(DATABASE_ENDPOINT).iter().any(|r| {
                SecretGroup::ALL.iter().any(|g| {
                    r.local_app_data
                        .get(&g.bag_key())
                        .is_some_and(|u| same_secret(u, id))
                })
            });
            if ours {
                self.plan.push(Step::RemoveSecretRevision {
                    id: id.clone(),
                    revision: *revision,
                });
            }
        }
    }
}

/// Secret URIs and ids name the same secret (`secret:ID`,
/// `secret://MODEL/ID`, `ID`).
fn same_secret(a: &str, b: &str) -> bool {
    let id = |s: &str| s.rsplit(['/', ':']).next().unwrap_or(s).to_string();
    id(a) == id(b)
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
