//! The `database` endpoint (interface `postgresql_client`, the v0 wire
//! format of data_interfaces v0), as plain data: what a requirer asks for
//! (its application bag), the checks of that request, what the primary has
//! (roles, databases, version: [`ClientsView`]), the SQL that makes and
//! drops a relation's user, and what we answer (endpoints, URIs, the
//! fields that go in Juju secrets and those that go in plain text).
//!
//! [`crate::observe`] reads, [`crate::reconcile`] decides, [`crate::apply`]
//! runs the SQL and the secret tools. docs/charm-relations.md "database" says the same
//! for operators.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::cluster::ClusterMember;
use crate::relation::Databag;

/// The user of relation `database:7` is `relation-7` (today's name).
pub const USER_PREFIX: &str = "relation-";

/// The group that `extra-user-roles: admin` joins: it has every privilege
/// on the databases this charm makes (today's charm's `admin`).
pub const ADMIN_GROUP: &str = "admin";

/// The longest database name accepted (today's charm, PostgreSQL 16 track).
pub const MAX_DATABASE_NAME: usize = 49;

/// Names a requirer may not ask for as its database.
pub const RESERVED_DATABASES: &[&str] = &["postgres", "template0", "template1", "databases"];

/// Roles no relation user may be made a member of: the system users (the
/// charm's and PostgreSQL's own). A member could `SET ROLE` to them.
pub const FORBIDDEN_ROLES: &[&str] = &[
    "operator",
    "replication",
    "monitoring",
    "patroni",
    "backup",
    "rewind",
    "postgres",
    "pg_database_owner",
];

/// Names in `extra-user-roles` that only tag the request for access
/// control elsewhere; today's charm drops them, and so does this one.
pub const ACCESS_GROUPS: &[&str] = &["identity_access", "internal_access", "relation_access"];

/// The user of a relation, from its number (`7`) or id (`database:7`).
pub fn username(relation: &str) -> String {
    format!("{USER_PREFIX}{}", number(relation))
}

/// `7` for `database:7`.
pub fn number(relation: &str) -> &str {
    relation.rsplit_once(':').map_or(relation, |(_, n)| n)
}

/// The relation number of a relation user (`relation-7` → `7`).
pub fn relation_of_user(role: &str) -> Option<&str> {
    let n = role.strip_prefix(USER_PREFIX)?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(n)
}

/// The groups of secret fields (data_interfaces v0): one secret per group
/// per relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecretGroup {
    User,
    Tls,
}

impl SecretGroup {
    pub const ALL: [SecretGroup; 2] = [SecretGroup::User, SecretGroup::Tls];

    pub fn name(self) -> &'static str {
        match self {
            SecretGroup::User => "user",
            SecretGroup::Tls => "tls",
        }
    }

    /// The group a field belongs to, if it may travel in a secret.
    pub fn of(field: &str) -> Option<SecretGroup> {
        match field {
            "username" | "password" | "uris" | "read-only-uris" => Some(SecretGroup::User),
            "tls" | "tls-ca" => Some(SecretGroup::Tls),
            _ => None,
        }
    }

    /// The key of our application bag holding the secret's URI.
    pub fn bag_key(self) -> String {
        format!("secret-{}", self.name())
    }

    /// The owner's label: `database.7.user.secret`.
    pub fn label(self, relation: &str) -> String {
        format!("database.{}.{}.secret", number(relation), self.name())
    }
}

/// What a requirer asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    pub database: String,
    /// `requested-secrets`; `None`: every field in plain text.
    pub secrets: Option<BTreeSet<String>>,
    /// `extra-user-roles`, lower-cased, access-group tags dropped.
    pub user_roles: Vec<String>,
    /// `extra-group-roles`.
    pub group_roles: Vec<String>,
}

/// A request this charm refuses; the message goes after the relation's
/// name in a blocked status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("asks in the v1 format (version: v1), which this charm does not serve; relate a requirer that uses data_interfaces v0")]
    V1,
    #[error(
        "database {0:?} ends in *: prefix requests are not supported; ask for one database by name"
    )]
    Prefix(String),
    #[error("invalid database name {name:?}: {why}; ask for another name")]
    InvalidDatabase { name: String, why: String },
    #[error("requested-secrets is not a JSON list of field names ({0}); fix the requirer")]
    RequestedSecrets(String),
}

/// The request in a requirer's application bag; `None` until it names a
/// database. The `data` key (the requirer library's bookkeeping) is not
/// read.
pub fn parse_request(bag: &Databag) -> Result<Option<Request>, RequestError> {
    let get = |k: &str| bag.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    if get("version") == Some("v1") || get("requests").is_some() {
        return Err(RequestError::V1);
    }
    let Some(database) = get("database") else {
        return Ok(None);
    };
    if database.ends_with('*') {
        return Err(RequestError::Prefix(database.to_string()));
    }
    check_database_name(database)?;
    let secrets = match get("requested-secrets") {
        None => None,
        Some(text) => {
            let list: Vec<String> = serde_json::from_str(text)
                .map_err(|e| RequestError::RequestedSecrets(e.to_string()))?;
            Some(list.into_iter().collect::<BTreeSet<_>>()).filter(|s| !s.is_empty())
        }
    };
    let roles = |key: &str| -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in get(key).unwrap_or("").split(',') {
            let r = r.trim().to_lowercase();
            if !r.is_empty() && !ACCESS_GROUPS.contains(&r.as_str()) && !out.contains(&r) {
                out.push(r);
            }
        }
        out
    };
    Ok(Some(Request {
        database: database.to_string(),
        secrets,
        user_roles: roles("extra-user-roles"),
        group_roles: roles("extra-group-roles"),
    }))
}

/// PostgreSQL 16 track's rules (length, reserved names), and no control
/// characters.
pub fn check_database_name(name: &str) -> Result<(), RequestError> {
    let invalid = |why: &str| {
        Err(RequestError::InvalidDatabase {
            name: name.to_string(),
            why: why.to_string(),
        })
    };
    if name.len() > MAX_DATABASE_NAME {
        return invalid(&format!("longer than {MAX_DATABASE_NAME} bytes"));
    }
    if RESERVED_DATABASES.contains(&name) {
        return invalid("reserved by the charm");
    }
    if name.chars().any(char::is_control) {
        return invalid("it holds a control character");
    }
    Ok(())
}

/// What the relation user is, as attributes and group memberships.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserSpec {
    pub superuser: bool,
    pub createdb: bool,
    pub createrole: bool,
    pub member_of: BTreeSet<String>,
}

/// A role in `extra-user-roles` or `extra-group-roles` that is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} asks for {role:?}, {why}")]
pub struct RoleError {
    pub key: &'static str,
    pub role: String,
    pub why: String,
}

const ALLOWED: &str = "allowed: createdb, createrole, superuser, admin, or an existing group role (pg_*, charmed_*, ...)";

/// The user's attributes and groups from the request, against the roles
/// the primary has: `superuser`, `createdb`, `createrole` are attributes;
/// `admin` is the [`ADMIN_GROUP`] plus CREATEDB (today's meaning); any
/// other name must be an existing group role (one that cannot log in) that
/// is not a system user's.
pub fn user_spec(request: &Request, view: &ClientsView) -> Result<UserSpec, RoleError> {
    let mut spec = UserSpec::default();
    let lists = [
        ("extra-user-roles", &request.user_roles, true),
        ("extra-group-roles", &request.group_roles, false),
    ];
    for (key, roles, attributes) in lists {
        for role in roles {
            let refuse = |why: String| RoleError {
                key,
                role: role.clone(),
                why,
            };
            match role.as_str() {
                "superuser" if attributes => spec.superuser = true,
                "createdb" if attributes => spec.createdb = true,
                "createrole" if attributes => spec.createrole = true,
                ADMIN_GROUP if attributes => {
                    spec.createdb = true;
                    spec.member_of.insert(ADMIN_GROUP.to_string());
                }
                r if FORBIDDEN_ROLES.contains(&r) || relation_of_user(r).is_some() => {
                    return Err(refuse(format!(
                        "a system or relation user, which no relation may join; {ALLOWED}"
                    )))
                }
                r => match view.roles.get(r) {
                    None => {
                        return Err(refuse(format!(
                            "which is not a role of this cluster; {ALLOWED}"
                        )))
                    }
                    Some(info) if info.login => {
                        return Err(refuse(format!(
                            "which is a user (it can log in), not a group role; {ALLOWED}"
                        )))
                    }
                    Some(_) => {
                        spec.member_of.insert(r.to_string());
                    }
                },
            }
        }
    }
    Ok(spec)
}

/// A role as the primary has it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct RoleInfo {
    pub login: bool,
    pub superuser: bool,
    pub createdb: bool,
    pub createrole: bool,
    #[serde(default)]
    pub member_of: BTreeSet<String>,
}

impl RoleInfo {
    /// Does the role already have what `spec` asks (and no other group)?
    pub fn matches(&self, spec: &UserSpec) -> bool {
        self.login
            && self.superuser == spec.superuser
            && self.createdb == spec.createdb
            && self.createrole == spec.createrole
            && self.member_of == spec.member_of
    }
}

/// What the leader reads on the primary for the client relations.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientsView {
    /// `16.4` (the first word of `server_version`).
    pub version: String,
    /// Databases that are not templates.
    pub databases: BTreeSet<String>,
    pub roles: BTreeMap<String, RoleInfo>,
}

impl ClientsView {
    /// The relation users the primary has: their relation numbers.
    pub fn relation_users(&self) -> impl Iterator<Item = &str> {
        self.roles.keys().filter_map(|r| relation_of_user(r))
    }
}

/// One query on the primary (database `postgres`): version, databases,
/// roles with their attributes and groups, as JSON.
pub const VIEW_SQL: &str = "\
SELECT json_build_object(
    'version', current_setting('server_version'),
    'databases', (SELECT coalesce(json_agg(datname ORDER BY datname), '[]')
                    FROM pg_database WHERE NOT datistemplate),
    'roles', (SELECT coalesce(json_object_agg(r.rolname, json_build_object(
                  'login', r.rolcanlogin, 'superuser', r.rolsuper,
                  'createdb', r.rolcreatedb, 'createrole', r.rolcreaterole,
                  'member_of', (SELECT coalesce(json_agg(g.rolname), '[]')
                                  FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                                 WHERE m.member = r.oid))), '{}')
                FROM pg_roles r));
";

#[derive(Debug, thiserror::Error)]
#[error("psql printed something else than the clients' JSON: {0}")]
pub struct ParseError(String);

pub fn parse_view(out: &str) -> Result<ClientsView, ParseError> {
    #[derive(Deserialize)]
    struct View {
        version: String,
        databases: BTreeSet<String>,
        roles: BTreeMap<String, RoleInfo>,
    }
    let v: View = serde_json::from_str(out.trim()).map_err(|e| ParseError(e.to_string()))?;
    Ok(ClientsView {
        version: v
            .version
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string(),
        databases: v.databases,
        roles: v.roles,
    })
}

/// `"name"` with inner quotes doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` with inner quotes doubled (standard_conforming_strings is on).
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The first line of every script that changes something: its commits do
/// not wait for a synchronous standby. While the cluster has none yet
/// (units still joining, `synchronous_mode_strict`), a commit would wait
/// for one, and the hook with it. A change lost with a primary that fails
/// before its standbys replayed it is made again by the next hook: the
/// decision compares with what the primary has.
pub const LOCAL_COMMIT: &str = "SET synchronous_commit = local;\n";

/// Nothing this transaction runs is logged, nor its errors' statements,
/// nor kept by pg_stat_statements.
const QUIET: &str = "SET LOCAL log_statement = 'none';
SET LOCAL log_min_duration_statement = -1;
SET LOCAL log_min_error_statement = 'panic';
SET LOCAL pg_stat_statements.track_utility = off;
";

/// Create a group role if it does not exist.
fn create_group_sql(role: &str) -> String {
    format!(
        "DO $do$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {}) THEN CREATE ROLE {} NOLOGIN; END IF; END $do$;\n",
        literal(role),
        ident(role)
    )
}

/// On `postgres`: the user with its password, attributes and groups (one
/// transaction that logs nothing), then its database if missing, closed to
/// others (`REVOKE ALL ... FROM PUBLIC`) and open to the user and
/// [`ADMIN_GROUP`]. `leave` are groups the user is in and should not be.
/// `verifier` is the password's SCRAM-SHA-256 verifier (what PostgreSQL
/// stores; [`crate::apply`] computes it), so the password itself never
/// reaches the server.
pub fn ensure_user_sql(
    user: &str,
    verifier: &str,
    spec: &UserSpec,
    leave: &BTreeSet<String>,
    database: &str,
) -> String {
    let flag = |on: bool, name: &str| format!("{}{name}", if on { "" } else { "NO" });
    let mut sql = format!("{LOCAL_COMMIT}BEGIN;\n");
    sql.push_str(QUIET);
    sql.push_str(&create_group_sql(ADMIN_GROUP));
    sql.push_str(&format!(
        "DO $do$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {}) THEN CREATE ROLE {}; END IF; END $do$;\n",
        literal(user),
        ident(user)
    ));
    sql.push_str(&format!(
        "ALTER ROLE {} WITH LOGIN {} {} {} PASSWORD {};\n",
        ident(user),
        flag(spec.superuser, "SUPERUSER"),
        flag(spec.createdb, "CREATEDB"),
        flag(spec.createrole, "CREATEROLE"),
        literal(verifier)
    ));
    for group in &spec.member_of {
        sql.push_str(&format!("GRANT {} TO {};\n", ident(group), ident(user)));
    }
    for group in leave.iter().filter(|g| !spec.member_of.contains(*g)) {
        sql.push_str(&format!("REVOKE {} FROM {};\n", ident(group), ident(user)));
    }
    sql.push_str("COMMIT;\n");
    sql.push_str(&format!(
        "SELECT format('CREATE DATABASE %I', {db}) WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = {db})\\gexec\n",
        db = literal(database)
    ));
    let db = ident(database);
    sql.push_str(&format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC;\n"));
    sql.push_str(&format!(
        "GRANT ALL ON DATABASE {db} TO {}, {};\n",
        ident(user),
        ident(ADMIN_GROUP)
    ));
    sql
}

/// In the user's database: the schema `public` and what it holds are the
/// user's to use (PostgreSQL 15 and later give `public` to the database's
/// owner only). Objects the user creates are its own.
pub fn database_grants_sql(user: &str) -> String {
    let u = ident(user);
    format!(
        "{LOCAL_COMMIT}GRANT ALL ON SCHEMA public TO {u};
GRANT ALL ON ALL TABLES IN SCHEMA public TO {u};
GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {u};
GRANT ALL ON ALL FUNCTIONS IN SCHEMA public TO {u};
"
    )
}

/// First step of a drop, on `postgres`: the user can no longer log in, its
/// sessions end (their count is printed), and the databases to clean come
/// back as JSON on the last line (`[]` when the role is gone already).
pub fn drop_prepare_sql(user: &str) -> String {
    let (l, i) = (literal(user), ident(user));
    format!(
        "{LOCAL_COMMIT}DO $do$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = {l}) THEN ALTER ROLE {i} NOLOGIN; END IF; END $do$;
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = {l};
SELECT CASE WHEN EXISTS (SELECT FROM pg_roles WHERE rolname = {l})
       THEN (SELECT coalesce(json_agg(datname ORDER BY datname), '[]') FROM pg_database
              WHERE NOT datistemplate AND datallowconn)
       ELSE '[]' END;
"
    )
}

/// Sessions of `user` on one member (a replica's read-only sessions).
pub fn terminate_sql(user: &str) -> String {
    format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = {};\n",
        literal(user)
    )
}

/// In each database: what the user owns goes to the superuser, its
/// privileges go.
pub fn drop_owned_sql(user: &str, superuser: &str) -> String {
    format!(
        "{LOCAL_COMMIT}REASSIGN OWNED BY {u} TO {s};\nDROP OWNED BY {u};\n",
        u = ident(user),
        s = ident(superuser)
    )
}

pub fn drop_role_sql(user: &str) -> String {
    format!("{LOCAL_COMMIT}DROP ROLE IF EXISTS {};\n", ident(user))
}

/// Where clients connect: the primary, and the healthy replicas (sorted;
/// the primary when there is none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// `ip:port`.
    pub primary: String,
    pub read_only: Vec<String>,
}

/// `None` while the cluster has no running primary.
pub fn endpoints(cluster: &[ClusterMember]) -> Option<Endpoints> {
    let primary = cluster.iter().find(|m| m.is_leader() && m.is_healthy())?;
    let address = |m: &ClusterMember| format!("{}:{}", m.host_only(), m.port());
    let mut read_only: Vec<String> = cluster
        .iter()
        .filter(|m| !m.is_leader() && m.is_healthy())
        .map(address)
        .collect();
    read_only.sort();
    if read_only.is_empty() {
        read_only.push(address(primary));
    }
    Some(Endpoints {
        primary: address(primary),
        read_only,
    })
}

/// `postgresql://user:password@h1,h2:port/database`: the hosts joined by
/// commas, the port once after the last (today's form; every member
/// listens on the same port). User, password and database are
/// percent-encoded.
pub fn uri(user: &str, password: &str, endpoints: &[String], database: &str) -> String {
    let hosts: Vec<&str> = endpoints
        .iter()
        .map(|e| e.rsplit_once(':').map_or(e.as_str(), |(h, _)| h))
        .collect();
    let port = endpoints
        .last()
        .and_then(|e| e.rsplit_once(':'))
        .map_or("5432", |(_, p)| p);
    format!(
        "postgresql://{}:{}@{}:{port}/{}",
        encode(user),
        encode(password),
        hosts.join(","),
        encode(database)
    )
}

/// Percent-encoding of everything but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `tls` and `tls-ca` for a CA (PEM) when TLS is on, `None` while it is off:
/// the hook for the certificates relation.
pub fn tls_fields(ca: Option<&str>) -> [(&'static str, String); 2] {
    match ca {
        Some(pem) => [("tls", "True".into()), ("tls-ca", pem.to_string())],
        None => [("tls", "False".into()), ("tls-ca", String::new())],
    }
}

/// Every field of the answer to one relation, in plain text: the caller
/// splits them with [`split`].
pub struct AnswerInput<'a> {
    pub user: &'a str,
    pub password: &'a str,
    pub database: &'a str,
    pub version: &'a str,
    pub endpoints: &'a Endpoints,
    pub tls_ca: Option<&'a str>,
}

pub fn answer_fields(a: &AnswerInput<'_>) -> Databag {
    let e = a.endpoints;
    let mut f: Databag = [
        ("database", a.database.to_string()),
        ("endpoints", e.primary.clone()),
        ("read-only-endpoints", e.read_only.join(",")),
        ("version", a.version.to_string()),
        ("username", a.user.to_string()),
        ("password", a.password.to_string()),
        (
            "uris",
            uri(
                a.user,
                a.password,
                std::slice::from_ref(&e.primary),
                a.database,
            ),
        ),
        (
            "read-only-uris",
            uri(a.user, a.password, &e.read_only, a.database),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in tls_fields(a.tls_ca) {
        f.insert(k.to_string(), v);
    }
    f
}

/// The answer split as data_interfaces v0 does: a field the requirer
/// listed in `requested-secrets` goes in its group's secret, any other in
/// plain text. `read-only-uris` is sent only in a secret (today's rule);
/// empty values are left out (an empty value removes a key).
pub fn split(
    fields: &Databag,
    requested: Option<&BTreeSet<String>>,
) -> (Databag, BTreeMap<SecretGroup, Databag>) {
    let mut plain = Databag::new();
    let mut secrets: BTreeMap<SecretGroup, Databag> = BTreeMap::new();
    for (k, v) in fields.iter().filter(|(_, v)| !v.is_empty()) {
        let in_secret = requested.is_some_and(|r| r.contains(k));
        match SecretGroup::of(k) {
            Some(g) if in_secret => {
                secrets.entry(g).or_default().insert(k.clone(), v.clone());
            }
            _ if k == "read-only-uris" => {}
            _ => {
                plain.insert(k.clone(), v.clone());
            }
        }
    }
    (plain, secrets)
}

#[cfg(test)]
#[path = "client_tests.rs"]
pub(crate) mod tests;
