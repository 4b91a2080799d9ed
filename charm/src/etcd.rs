//! etcd membership through the snap's `etcdctl` (v3 API): the argv of
//! `member list/add/promote/remove` and the JSON of `member list -w json`,
//! plus the URLs and the `etcd.*` snap keys of one unit's member.

use serde::Deserialize;
use serde_json::Value;

use crate::peer::EtcdEntry;

pub const CLIENT_PORT: u16 = 2379;
pub const PEER_PORT: u16 = 2380;
/// Clients over TLS get their own port: etcd 3.4 serving http and https on
/// one port sends plain gRPC to its TLS server ("first record does not look
/// like a TLS handshake"), so http (2379) and https (2378) are apart while
/// both are served, and https stays on 2378.
pub const CLIENT_TLS_PORT: u16 = 2378;

pub fn client_url(ip: &str) -> String {
    format!("http://{ip}:{CLIENT_PORT}")
}

pub fn peer_url(ip: &str) -> String {
    format!("http://{ip}:{PEER_PORT}")
}

/// `url` with the scheme `https://` (`true`) or `http://`.
pub fn with_scheme(url: &str, https: bool) -> String {
    let scheme = if https { "https" } else { "http" };
    format!("{scheme}://{}", address(url))
}

/// A URL's host (an IPv4 address or a name).
fn host(url: &str) -> &str {
    let a = address(url);
    a.rsplit_once(':').map(|(h, _)| h).unwrap_or(a)
}

/// The client URL of the member at `url`'s host: `http://HOST:2379` or
/// `https://HOST:2378`.
pub fn client_url_as(url: &str, https: bool) -> String {
    let h = host(url);
    if https {
        format!("https://{h}:{CLIENT_TLS_PORT}")
    } else {
        format!("http://{h}:{CLIENT_PORT}")
    }
}

/// Whether two URLs name the same machine (any scheme, any port).
pub fn same_host(a: &str, b: &str) -> bool {
    host(a) == host(b)
}

pub fn is_https(url: &str) -> bool {
    url.starts_with("https://")
}

/// How a unit's etcd runs with respect to TLS (`etcd-tls` in its unit
/// bag); the leader moves the cluster between them one member at a time
/// (crate::etcd_tls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// No TLS: http peers and clients.
    Plain,
    /// The certificate loaded: peers still http (but its own connections
    /// can reach https peers), clients on http and https on one port.
    Loaded,
    /// https peers, https-only clients.
    On,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Plain => "",
            Level::Loaded => "loaded",
            Level::On => "on",
        }
    }

    /// Unset (and anything unknown) is plain: etcd started before the
    /// charm knew TLS.
    pub fn parse(value: Option<&str>) -> Level {
        match value.unwrap_or_default() {
            "loaded" => Level::Loaded,
            "on" => Level::On,
            _ => Level::Plain,
        }
    }
}

/// etcd's own copy of the unit's certificate (`etcd-tls.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCopy {
    pub cert: String,
    pub key: String,
    pub ca: String,
}

impl TlsCopy {
    pub const KEYS: [&'static str; 3] = ["etcd-tls.cert", "etcd-tls.key", "etcd-tls.ca"];

    /// The snap keys that hold it.
    pub fn snap_keys(copy: Option<&TlsCopy>) -> Vec<(String, Value)> {
        let values = copy.map(|c| [c.cert.clone(), c.key.clone(), c.ca.clone()]);
        Self::KEYS
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let v = values.as_ref().map(|v| Value::from(v[i].clone()));
                (k.to_string(), v.unwrap_or(Value::Null))
            })
            .collect()
    }
}

/// The listener keys of a member at `level`: client listeners, advertised
/// client URL, peer listener and advertised peer URL, with etcd's copy of
/// the certificate (unset when plain).
pub fn listener_keys(ip: &str, level: Level, copy: Option<&TlsCopy>) -> Vec<(String, Value)> {
    let http = client_url(ip);
    let https = client_url_as(&http, true);
    let (listen, advertise) = match level {
        Level::Plain => (http.clone(), http),
        Level::Loaded => (format!("{http},{https}"), http),
        Level::On => (https.clone(), https),
    };
    let peer = with_scheme(&peer_url(ip), level == Level::On);
    let tls = level != Level::Plain;
    let mut keys: Vec<(String, Value)> = [
        ("etcd.listen-client-urls", listen),
        ("etcd.advertise-client-urls", advertise),
        ("etcd.listen-peer-urls", peer.clone()),
        ("etcd.initial-advertise-peer-urls", peer),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Value::from(v)))
    .collect();
    keys.extend(TlsCopy::snap_keys(copy.filter(|_| tls)));
    keys
}

/// `etcd.initial-cluster` with `name`'s URL replaced by `peer_url` (etcd
/// ignores the value once it has data; the snap checks that it names the
/// member's advertised peer URL).
pub fn with_own_peer_url(initial_cluster: &str, name: &str, peer_url: &str) -> String {
    let mut found = false;
    let mut items: Vec<String> = initial_cluster
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| match item.split_once('=') {
            Some((n, _)) if n == name => {
                found = true;
                format!("{n}={peer_url}")
            }
            _ => item.to_string(),
        })
        .collect();
    if !found {
        items.push(format!("{name}={peer_url}"));
    }
    items.join(",")
}

/// A URL's `host:port`, without its scheme and a trailing `/`.
fn address(url: &str) -> &str {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    rest.strip_suffix('/').unwrap_or(rest)
}

/// Whether two URLs name the same listener whatever their scheme: a member
/// whose peer or client URLs move between `http://` and `https://` (TLS on
/// or off) is the same member, not a ghost.
pub fn same_address(a: &str, b: &str) -> bool {
    address(a) == address(b)
}

/// Whether one of `urls` names the listener of `url`, whatever the scheme.
pub fn lists_address(urls: &[String], url: &str) -> bool {
    urls.iter().any(|u| same_address(u, url))
}

/// One member of `etcdctl member list -w json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EtcdMember {
    #[serde(rename = "ID")]
    pub id: u64,
    /// Empty until the member has started.
    #[serde(default)]
    pub name: String,
    #[serde(rename = "peerURLs", default)]
    pub peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", default)]
    pub client_urls: Vec<String>,
    #[serde(rename = "isLearner", default)]
    pub is_learner: bool,
}

impl EtcdMember {
    /// etcdctl takes member ids in hexadecimal.
    pub fn hex_id(&self) -> String {
        format!("{:x}", self.id)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("etcdctl member list printed something else than JSON members: {0}")]
pub struct ParseError(String);

pub fn parse_member_list(out: &str) -> Result<Vec<EtcdMember>, ParseError> {
    #[derive(Deserialize)]
    struct List {
        #[serde(default)]
        members: Vec<EtcdMember>,
    }
    let list: List = serde_json::from_str(out.trim()).map_err(|e| ParseError(e.to_string()))?;
    Ok(list.members)
}

fn base(endpoints: &[String]) -> Vec<String> {
    vec![
        format!("--endpoints={}", endpoints.join(",")),
        "--command-timeout=5s".to_string(),
    ]
}

/// `etcdctl del --prefix PREFIX`: every key of a cluster (`/pgpilot/<scope>/`).
pub fn del_prefix_args(endpoints: &[String], prefix: &str) -> Vec<String> {
    let mut a = base(endpoints);
    a.extend(["del".to_string(), "--prefix".into(), prefix.to_string()]);
    a
}

pub fn member_list_args(endpoints: &[String]) -> Vec<String> {
    let mut a = base(endpoints);
    a.extend(["member", "list", "-w", "json"].map(String::from));
    a
}

pub fn member_add_learner_args(endpoints: &[String], name: &str, peer_url: &str) -> Vec<String> {
    let mut a = base(endpoints);
    a.extend([
        "member".to_string(),
        "add".to_string(),
        name.to_string(),
        format!("--peer-urls={peer_url}"),
        "--learner".to_string(),
    ]);
    a
}

pub fn member_promote_args(endpoints: &[String], id: u64) -> Vec<String> {
    let mut a = base(endpoints);
    a.extend([
        "member".to_string(),
        "promote".to_string(),
        format!("{id:x}"),
    ]);
    a
}

pub fn member_remove_args(endpoints: &[String], id: u64) -> Vec<String> {
    let mut a = base(endpoints);
    a.extend([
        "member".to_string(),
        "remove".to_string(),
        format!("{id:x}"),
    ]);
    a
}

/// `etcdctl member update ID --peer-urls=URL`: the member's peer URL moves
/// (etcd over TLS, on or off).
pub fn member_update_args(endpoints: &[String], id: u64, peer_url: &str) -> Vec<String> {
    let mut a = base(endpoints);
    a.extend([
        "member".to_string(),
        "update".to_string(),
        format!("{id:x}"),
        format!("--peer-urls={peer_url}"),
    ]);
    a
}

/// `etcdctl endpoint health` of one endpoint.
pub fn endpoint_health_args(endpoint: &str) -> Vec<String> {
    vec![
        format!("--endpoints={endpoint}"),
        "--command-timeout=3s".to_string(),
        "endpoint".to_string(),
        "health".to_string(),
    ]
}

/// etcd refuses to promote a learner that has not caught up yet: not a
/// failure, the next hook tries again.
pub fn is_not_caught_up(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    s.contains("not in sync") || s.contains("can only promote a learner member which is in sync")
}

/// The `etcd.*` snap keys that make `me` start as a member of `members`.
/// Written once, before the member first starts: etcd reads its initial
/// cluster only when its data directory is empty.
pub fn bootstrap_keys(
    me: &EtcdEntry,
    ip: &str,
    members: &[EtcdEntry],
    token: &str,
    level: Level,
    copy: Option<&TlsCopy>,
) -> Vec<(String, Value)> {
    let initial_cluster = members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url))
        .collect::<Vec<_>>()
        .join(",");
    let pairs = [
        ("etcd.name", me.name.clone()),
        ("etcd.initial-cluster", initial_cluster),
        ("etcd.initial-cluster-state", me.initial_state.clone()),
        ("etcd.initial-cluster-token", token.to_string()),
    ];
    let mut keys: Vec<(String, Value)> = pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::from(v)))
        .collect();
    // The unit's address only: clients (pgpilot, etcdctl, the charm) are
    // given it, and a loopback listener would collide where units share
    // one loopback (LXD containers do not, the test model does).
    keys.extend(listener_keys(ip, level, copy));
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_members_with_a_learner_that_has_not_started() {
        let out = r#"{"header":{"cluster_id":14841639068965178418,"member_id":10276657743932975437,"raft_term":2},"members":[{"ID":10276657743932975437,"name":"postgresql-0","peerURLs":["http://10.0.0.1:2380"],"clientURLs":["http://10.0.0.1:2379"]},{"ID":17131947113617133043,"peerURLs":["http://10.0.0.2:2380"],"isLearner":true}]}"#;
        let m = parse_member_list(out).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].id, 10276657743932975437);
        assert_eq!(m[0].hex_id(), "8e9e05c52164694d");
        assert!(!m[0].is_learner);
        assert_eq!(m[1].name, "");
        assert!(m[1].is_learner);
        assert!(m[1].client_urls.is_empty());
        assert!(parse_member_list("Error: context deadline exceeded").is_err());
    }

    #[test]
    fn a_url_that_changed_scheme_names_the_same_listener() {
        assert!(same_address(
            "http://10.0.0.1:2380",
            "https://10.0.0.1:2380"
        ));
        assert!(same_address(
            "https://10.0.0.1:2380/",
            "https://10.0.0.1:2380"
        ));
        assert!(!same_address(
            "https://10.0.0.1:2380",
            "https://10.0.0.2:2380"
        ));
        assert!(!same_address(
            "https://10.0.0.1:2379",
            "https://10.0.0.1:2380"
        ));
        let urls = vec!["https://10.0.0.2:2380".to_string()];
        assert!(lists_address(&urls, "http://10.0.0.2:2380"));
        assert!(!lists_address(&urls, "http://10.0.0.3:2380"));
    }

    #[test]
    fn etcdctl_argv() {
        let eps = vec![
            "http://10.0.0.1:2379".to_string(),
            "http://10.0.0.2:2379".to_string(),
        ];
        assert_eq!(
            member_list_args(&eps).join(" "),
            "--endpoints=http://10.0.0.1:2379,http://10.0.0.2:2379 --command-timeout=5s member list -w json"
        );
        assert_eq!(
            member_add_learner_args(&eps, "postgresql-2", "http://10.0.0.3:2380").join(" "),
            "--endpoints=http://10.0.0.1:2379,http://10.0.0.2:2379 --command-timeout=5s member add postgresql-2 --peer-urls=http://10.0.0.3:2380 --learner"
        );
        assert_eq!(
            member_promote_args(&eps, 255).join(" "),
            "--endpoints=http://10.0.0.1:2379,http://10.0.0.2:2379 --command-timeout=5s member promote ff"
        );
        assert_eq!(member_remove_args(&eps, 10276657743932975437)[3], "remove");
        assert!(is_not_caught_up(
            "Error: etcdserver: can only promote a learner member which is in sync with leader"
        ));
    }

    #[test]
    fn bootstrap_keys_name_every_admitted_member() {
        let entry = |n: u8, state: &str| EtcdEntry {
            name: format!("postgresql-{n}"),
            unit: format!("postgresql/{n}"),
            peer_url: peer_url(&format!("10.0.0.{}", n + 1)),
            client_url: client_url(&format!("10.0.0.{}", n + 1)),
            learner: n > 0,
            initial_state: state.into(),
        };
        let members = vec![entry(0, "new"), entry(1, "existing")];
        let keys = bootstrap_keys(
            &members[1],
            "10.0.0.2",
            &members,
            "dev-postgresql",
            Level::Plain,
            None,
        );
        let get = |k: &str| {
            keys.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str().unwrap().to_string())
                .unwrap()
        };
        assert_eq!(
            get("etcd.initial-cluster"),
            "postgresql-0=http://10.0.0.1:2380,postgresql-1=http://10.0.0.2:2380"
        );
        assert_eq!(get("etcd.initial-cluster-state"), "existing");
        assert_eq!(get("etcd.name"), "postgresql-1");
        assert_eq!(get("etcd.listen-client-urls"), "http://10.0.0.2:2379");
        assert!(keys
            .iter()
            .filter(|(k, _)| k.starts_with("etcd-tls.") || k.contains("skip"))
            .all(|(_, v)| v.is_null()));
    }

    /// The three levels' listeners: loaded serves clients on http (2379)
    /// and https (2378), peers stay http; on is https only.
    #[test]
    fn listener_keys_by_level() {
        let copy = TlsCopy {
            cert: "C".into(),
            key: "K".into(),
            ca: "A".into(),
        };
        let get = |level: Level, key: &str| {
            listener_keys("10.0.0.2", level, Some(&copy))
                .into_iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .unwrap()
        };
        let rows = [
            (
                Level::Plain,
                "http://10.0.0.2:2379",
                "http://10.0.0.2:2379",
                "http://10.0.0.2:2380",
            ),
            (
                Level::Loaded,
                "http://10.0.0.2:2379,https://10.0.0.2:2378",
                "http://10.0.0.2:2379",
                "http://10.0.0.2:2380",
            ),
            (
                Level::On,
                "https://10.0.0.2:2378",
                "https://10.0.0.2:2378",
                "https://10.0.0.2:2380",
            ),
        ];
        for (level, listen, advertise, peer) in rows {
            assert_eq!(get(level, "etcd.listen-client-urls"), listen, "{level:?}");
            assert_eq!(get(level, "etcd.advertise-client-urls"), advertise);
            assert_eq!(get(level, "etcd.listen-peer-urls"), peer);
            assert_eq!(get(level, "etcd.initial-advertise-peer-urls"), peer);
            let tls = level != Level::Plain;
            assert_eq!(get(level, "etcd-tls.key").as_str() == Some("K"), tls);
            assert_eq!(Level::parse(Some(level.as_str())), level);
        }
        assert_eq!(Level::parse(Some("junk")), Level::Plain);
        assert_eq!(
            with_own_peer_url("a=http://1:2380,b=http://2:2380", "b", "https://2:2380"),
            "a=http://1:2380,b=https://2:2380"
        );
        assert_eq!(
            with_own_peer_url("a=http://1:2380", "b", "https://2:2380"),
            "a=http://1:2380,b=https://2:2380"
        );
        assert_eq!(
            with_scheme("http://10.0.0.1:2380/", true),
            "https://10.0.0.1:2380"
        );
        assert_eq!(
            client_url_as("http://10.0.0.1:2379", true),
            "https://10.0.0.1:2378"
        );
        assert_eq!(
            client_url_as("https://10.0.0.1:2378/", false),
            "http://10.0.0.1:2379"
        );
        assert!(same_host("https://10.0.0.1:2378", "http://10.0.0.1:2379"));
        assert!(!same_host("https://10.0.0.11:2378", "http://10.0.0.1:2379"));
        assert!(
            member_update_args(&["https://1:2379".into()], 255, "https://1:2380")
                .join(" ")
                .ends_with("member update ff --peer-urls=https://1:2380")
        );
    }
}
