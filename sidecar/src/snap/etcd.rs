//! The `etcd.*` snap keys → etcd's configuration file (`etcd --config-file`,
//! YAML) and the environment of the snap's `etcdctl`. Pure.
//!
//! With `etcd-tls.*` set (the unit's certificate, key and CA, copied to
//! `$SNAP_DATA/etc/etcd/{cert,key,ca}.pem`), etcd's two transport-security
//! blocks name those files unless `etcd.client-tls` / `etcd.peer-tls` are
//! set: clients get the certificate (no client certificate is asked for),
//! peers the certificate and the CA with `client-cert-auth` (a peer proves
//! itself with a certificate from the same CA), and the snap's etcdctl
//! trusts the CA. Which listeners are https stays with the URL keys.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use super::tls::TlsPaths;
use super::{Outcome, SnapError, SnapPaths};

/// A URL list: snapd stores `etcd.listen-client-urls=http://a:2379,http://b:2379`
/// as a string; a JSON list is taken too.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Urls {
    One(String),
    Many(Vec<String>),
}

impl Urls {
    fn list(&self) -> Vec<String> {
        match self {
            Urls::One(s) => s
                .split(',')
                .map(|u| u.trim().to_string())
                .filter(|u| !u.is_empty())
                .collect(),
            Urls::Many(v) => v.iter().map(|u| u.trim().to_string()).collect(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Tls {
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default)]
    trusted_ca_file: Option<PathBuf>,
    #[serde(default)]
    client_cert_auth: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Tree {
    name: String,
    initial_cluster: String,
    #[serde(default = "default_state")]
    initial_cluster_state: String,
    #[serde(default = "default_token")]
    initial_cluster_token: String,
    listen_client_urls: Urls,
    advertise_client_urls: Urls,
    listen_peer_urls: Urls,
    initial_advertise_peer_urls: Urls,
    #[serde(default)]
    client_tls: Option<Tls>,
    #[serde(default)]
    peer_tls: Option<Tls>,
    /// Milliseconds (etcd's default 100).
    #[serde(default)]
    heartbeat_interval: Option<u32>,
    /// Milliseconds (etcd's default 1000).
    #[serde(default)]
    election_timeout: Option<u32>,
}

fn default_state() -> String {
    "new".into()
}
fn default_token() -> String {
    "charmed-postgresql".into()
}

/// What the configure hook writes for etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// `etcd.conf.yml`.
    pub config: String,
    /// `etcdctl.env`: endpoints and TLS files for the snap's etcdctl.
    pub etcdctl_env: String,
}

fn check_urls(key: &str, urls: &[String], tls: bool) -> Result<(), SnapError> {
    if urls.is_empty() {
        return Err(SnapError::new(key, "needs at least one URL"));
    }
    for url in urls {
        let rest = if let Some(r) = url.strip_prefix("http://") {
            r
        } else if let Some(r) = url.strip_prefix("https://") {
            if !tls {
                return Err(SnapError::new(
                    key,
                    format!("{url:?} is https: set the matching etcd.*-tls.cert-file and key-file"),
                ));
            }
            r
        } else {
            return Err(SnapError::new(
                key,
                format!("{url:?} is not a URL: write http://HOST:PORT or https://HOST:PORT"),
            ));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let ok = rest.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty()
                && !host.contains('/')
                && !host.contains(char::is_whitespace)
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !ok {
            return Err(SnapError::new(
                key,
                format!("{url:?} is not a URL: write http://HOST:PORT with a port from 1 to 65535"),
            ));
        }
    }
    Ok(())
}

fn check_name(key: &str, name: &str) -> Result<(), SnapError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(SnapError::new(
            key,
            format!("{name:?}: 1-63 letters, digits, '-', '_' or '.'"),
        ))
    }
}

fn check_tls(key: &str, tls: &Option<Tls>) -> Result<(), SnapError> {
    if let Some(tls) = tls {
        for (k, path) in [
            ("cert-file", Some(&tls.cert_file)),
            ("key-file", Some(&tls.key_file)),
            ("trusted-ca-file", tls.trusted_ca_file.as_ref()),
        ] {
            if path.is_some_and(|p| !p.is_absolute()) {
                return Err(SnapError::new(
                    format!("{key}.{k}"),
                    "must be an absolute path",
                ));
            }
        }
        if tls.client_cert_auth && tls.trusted_ca_file.is_none() {
            return Err(SnapError::new(
                format!("{key}.trusted-ca-file"),
                "client-cert-auth needs the CA that signs the client certificates",
            ));
        }
    }
    Ok(())
}

/// `name1=url1,name2=url2` → pairs.
fn parse_cluster(value: &str) -> Result<Vec<(String, String)>, SnapError> {
    let key = "etcd.initial-cluster";
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, url) = item.split_once('=').ok_or_else(|| {
            SnapError::new(
                key,
                format!("{item:?} is not NAME=PEER-URL (entries are separated by commas)"),
            )
        })?;
        check_name(key, name)?;
        check_urls(key, &[url.to_string()], true)?;
        out.push((name.to_string(), url.to_string()));
    }
    if out.is_empty() {
        return Err(SnapError::new(
            key,
            "needs at least this member: NAME=PEER-URL",
        ));
    }
    Ok(out)
}

fn yaml_str(s: &str) -> String {
    // A JSON string is a YAML double-quoted scalar.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn tls_block(out: &mut String, key: &str, tls: &Tls) {
    out.push_str(&format!("{key}:\n"));
    out.push_str(&format!(
        "  cert-file: {}\n  key-file: {}\n",
        yaml_str(&tls.cert_file.to_string_lossy()),
        yaml_str(&tls.key_file.to_string_lossy())
    ));
    if let Some(ca) = &tls.trusted_ca_file {
        out.push_str(&format!(
            "  trusted-ca-file: {}\n",
            yaml_str(&ca.to_string_lossy())
        ));
    }
    out.push_str(&format!("  client-cert-auth: {}\n", tls.client_cert_auth));
}

/// etcd's files for the `etcd` tree, or the first setting it lacks;
/// `etcd_tls`: where the `etcd-tls.*` copy of the certificate is written,
/// when it is set.
pub fn render(
    tree: &Value,
    paths: &SnapPaths,
    etcd_tls: Option<&TlsPaths>,
) -> Result<Outcome<Rendered>, SnapError> {
    if tree.is_null() || tree.as_str() == Some("") {
        return Ok(Outcome::Missing(vec!["etcd.name".into()]));
    }
    let mut tree: Tree = match serde_path_to_error::deserialize(tree) {
        Ok(t) => t,
        Err(e) => {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            if let Some(field) = message
                .strip_prefix("missing field `")
                .and_then(|m| m.split('`').next())
            {
                let key = if path == "." {
                    format!("etcd.{field}")
                } else {
                    format!("etcd.{path}.{field}")
                };
                return Ok(Outcome::Missing(vec![key]));
            }
            let key = if path == "." {
                "etcd".to_string()
            } else {
                format!("etcd.{path}")
            };
            let message = if message.starts_with("data did not match any variant") {
                "must be a URL or a comma-separated list of URLs".to_string()
            } else {
                message
            };
            return Err(SnapError::new(key, message));
        }
    };
    check_name("etcd.name", &tree.name)?;
    check_name("etcd.initial-cluster-token", &tree.initial_cluster_token)?;
    if !matches!(tree.initial_cluster_state.as_str(), "new" | "existing") {
        return Err(SnapError::new(
            "etcd.initial-cluster-state",
            format!(
                "{:?}: must be `new` (a new cluster) or `existing` (join a running one)",
                tree.initial_cluster_state
            ),
        ));
    }
    check_tls("etcd.client-tls", &tree.client_tls)?;
    check_tls("etcd.peer-tls", &tree.peer_tls)?;
    if let Some(files) = etcd_tls {
        tree.client_tls.get_or_insert_with(|| Tls {
            cert_file: files.cert.clone(),
            key_file: files.key.clone(),
            trusted_ca_file: None,
            client_cert_auth: false,
        });
        tree.peer_tls.get_or_insert_with(|| Tls {
            cert_file: files.cert.clone(),
            key_file: files.key.clone(),
            trusted_ca_file: Some(files.ca.clone()),
            client_cert_auth: true,
        });
    }
    let client_tls = tree.client_tls.is_some();
    let peer_tls = tree.peer_tls.is_some();
    let lists = [
        (
            "etcd.listen-client-urls",
            tree.listen_client_urls.list(),
            client_tls,
        ),
        (
            "etcd.advertise-client-urls",
            tree.advertise_client_urls.list(),
            client_tls,
        ),
        (
            "etcd.listen-peer-urls",
            tree.listen_peer_urls.list(),
            peer_tls,
        ),
        (
            "etcd.initial-advertise-peer-urls",
            tree.initial_advertise_peer_urls.list(),
            peer_tls,
        ),
    ];
    for (key, urls, tls) in &lists {
        check_urls(key, urls, *tls)?;
    }
    let cluster = parse_cluster(&tree.initial_cluster)?;
    let mut names = BTreeMap::new();
    for (name, url) in &cluster {
        names
            .entry(name.clone())
            .or_insert_with(Vec::new)
            .push(url.clone());
    }
    let own = names.get(&tree.name).ok_or_else(|| {
        SnapError::new(
            "etcd.initial-cluster",
            format!(
                "does not name this member ({:?}): add NAME=PEER-URL for it",
                tree.name
            ),
        )
    })?;
    let advertised = &lists[3].1;
    if !own.iter().all(|u| advertised.contains(u)) {
        return Err(SnapError::new(
            "etcd.initial-cluster",
            format!(
                "gives this member the peer URL(s) {own:?}, but etcd.initial-advertise-peer-urls is {advertised:?}: they must match"
            ),
        ));
    }
    for (key, value) in [
        ("etcd.heartbeat-interval", tree.heartbeat_interval),
        ("etcd.election-timeout", tree.election_timeout),
    ] {
        if value == Some(0) {
            return Err(SnapError::new(key, "must be at least 1 (milliseconds)"));
        }
    }
    let heartbeat = tree.heartbeat_interval.unwrap_or(100);
    let election = tree.election_timeout.unwrap_or(1000);
    if election < 5 * heartbeat {
        return Err(SnapError::new(
            "etcd.election-timeout",
            format!("{election} ms must be at least 5 x etcd.heartbeat-interval ({heartbeat} ms)"),
        ));
    }

    let joined = |urls: &[String]| yaml_str(&urls.join(","));
    let mut config = String::from(
        "# Written by the charmed-postgresql snap's configure hook from\n\
         # `snap get charmed-postgresql etcd`. Do not edit: change it with `snap set`.\n",
    );
    config.push_str(&format!("name: {}\n", yaml_str(&tree.name)));
    config.push_str(&format!(
        "data-dir: {}\n",
        yaml_str(&paths.etcd_data_dir().to_string_lossy())
    ));
    config.push_str(&format!("listen-client-urls: {}\n", joined(&lists[0].1)));
    config.push_str(&format!("advertise-client-urls: {}\n", joined(&lists[1].1)));
    config.push_str(&format!("listen-peer-urls: {}\n", joined(&lists[2].1)));
    config.push_str(&format!(
        "initial-advertise-peer-urls: {}\n",
        joined(&lists[3].1)
    ));
    let cluster_text: Vec<String> = cluster.iter().map(|(n, u)| format!("{n}={u}")).collect();
    config.push_str(&format!(
        "initial-cluster: {}\n",
        yaml_str(&cluster_text.join(","))
    ));
    config.push_str(&format!(
        "initial-cluster-state: {}\n",
        yaml_str(&tree.initial_cluster_state)
    ));
    config.push_str(&format!(
        "initial-cluster-token: {}\n",
        yaml_str(&tree.initial_cluster_token)
    ));
    config.push_str(&format!("heartbeat-interval: {heartbeat}\n"));
    config.push_str(&format!("election-timeout: {election}\n"));
    config.push_str("logger: \"zap\"\n");
    config.push_str(&format!(
        "log-outputs: [\"stderr\", {}]\n",
        yaml_str(&paths.etcd_log_file().to_string_lossy())
    ));
    if let Some(tls) = &tree.client_tls {
        tls_block(&mut config, "client-transport-security", tls);
    }
    if let Some(tls) = &tree.peer_tls {
        tls_block(&mut config, "peer-transport-security", tls);
    }

    let mut env = format!("ETCDCTL_ENDPOINTS={}\n", shell_quote(&lists[1].1.join(",")));
    let client_ca = tree
        .client_tls
        .as_ref()
        .and_then(|t| t.trusted_ca_file.as_ref());
    // etcdctl trusts the CA of the `etcd-tls` copy when clients are not
    // configured apart (they present no certificate then).
    if let Some(ca) = client_ca.or(etcd_tls.map(|f| &f.ca)) {
        env.push_str(&format!(
            "ETCDCTL_CACERT={}\n",
            shell_quote(&ca.to_string_lossy())
        ));
    }
    if let Some(tls) = &tree.client_tls {
        env.push_str(&format!(
            "ETCDCTL_CERT={}\nETCDCTL_KEY={}\n",
            shell_quote(&tls.cert_file.to_string_lossy()),
            shell_quote(&tls.key_file.to_string_lossy())
        ));
    }
    env.push_str("export ETCDCTL_ENDPOINTS ETCDCTL_CACERT ETCDCTL_CERT ETCDCTL_KEY\n");
    Ok(Outcome::Ready(Rendered {
        config,
        etcdctl_env: env,
    }))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths() -> SnapPaths {
        crate::snap::test_paths()
    }

    fn tree() -> Value {
        json!({
            "name": "m1",
            "initial-cluster": "m1=http://127.0.0.11:2380,m2=http://127.0.0.12:2380",
            "initial-cluster-state": "new",
            "listen-client-urls": "http://127.0.0.11:2379",
            "advertise-client-urls": "http://127.0.0.11:2379",
            "listen-peer-urls": "http://127.0.0.11:2380",
            "initial-advertise-peer-urls": "http://127.0.0.11:2380"
        })
    }

    fn err(t: &Value) -> SnapError {
        render(t, &paths(), None).unwrap_err()
    }

    #[test]
    fn renders_etcd_yaml_and_etcdctl_env() {
        let Outcome::Ready(r) = render(&tree(), &paths(), None).unwrap() else {
            panic!("missing")
        };
        assert!(r.config.contains("name: \"m1\"\n"), "{}", r.config);
        assert!(r
            .config
            .contains("data-dir: \"/var/snap/charmed-postgresql/common/var/lib/etcd\"\n"));
        assert!(r.config.contains(
            "initial-cluster: \"m1=http://127.0.0.11:2380,m2=http://127.0.0.12:2380\"\n"
        ));
        assert!(r
            .etcdctl_env
            .starts_with("ETCDCTL_ENDPOINTS='http://127.0.0.11:2379'\n"));
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut t = tree();
        t["listen-client-urls"] = json!("127.0.0.1:2379");
        assert_eq!(err(&t).key, "etcd.listen-client-urls");
        let mut t = tree();
        t["initial-cluster-state"] = json!("old");
        assert_eq!(err(&t).key, "etcd.initial-cluster-state");
        let mut t = tree();
        t["initial-cluster"] = json!("m2=http://127.0.0.12:2380");
        assert_eq!(err(&t).key, "etcd.initial-cluster");
        let mut t = tree();
        t["listen-peer-urls"] = json!("http://127.0.0.11:notaport");
        assert_eq!(err(&t).key, "etcd.listen-peer-urls");
        let mut t = tree();
        t["colour"] = json!("blue");
        assert!(err(&t).message.contains("unknown field"));
        let mut t = tree();
        t["advertise-client-urls"] = json!("https://127.0.0.11:2379");
        assert_eq!(err(&t).key, "etcd.advertise-client-urls");
    }

    /// The `etcd-tls` copy: https listeners allowed, both transport blocks
    /// name its files (peers must present a certificate from the CA,
    /// clients need not), etcdctl trusts the CA; explicit blocks win.
    #[test]
    fn the_etcd_tls_copy_fills_both_transport_blocks() {
        let files = TlsPaths::in_dir(std::path::Path::new("/s/etc/etcd"));
        let mut t = tree();
        t["listen-client-urls"] = json!("http://127.0.0.11:2379,https://127.0.0.11:2379");
        t["listen-peer-urls"] = json!("https://127.0.0.11:2380");
        t["initial-advertise-peer-urls"] = json!("https://127.0.0.11:2380");
        t["initial-cluster"] = json!("m1=https://127.0.0.11:2380,m2=http://127.0.0.12:2380");
        assert_eq!(err(&t).key, "etcd.listen-client-urls");
        let Outcome::Ready(r) = render(&t, &paths(), Some(&files)).unwrap() else {
            panic!("missing")
        };
        let client = "client-transport-security:\n  cert-file: \"/s/etc/etcd/cert.pem\"\n  key-file: \"/s/etc/etcd/key.pem\"\n  client-cert-auth: false\n";
        assert!(r.config.contains(client), "{}", r.config);
        let peer = "peer-transport-security:\n  cert-file: \"/s/etc/etcd/cert.pem\"\n  key-file: \"/s/etc/etcd/key.pem\"\n  trusted-ca-file: \"/s/etc/etcd/ca.pem\"\n  client-cert-auth: true\n";
        assert!(r.config.contains(peer), "{}", r.config);
        assert!(r
            .etcdctl_env
            .contains("ETCDCTL_CACERT='/s/etc/etcd/ca.pem'\n"));
        // An explicit client block wins over the copy.
        let mut t = tree();
        t["client-tls"] = json!({"cert-file": "/x/c.pem", "key-file": "/x/k.pem"});
        let Outcome::Ready(r) = render(&t, &paths(), Some(&files)).unwrap() else {
            panic!("missing")
        };
        assert!(r.config.contains("cert-file: \"/x/c.pem\""));
        assert!(r.config.contains("trusted-ca-file: \"/s/etc/etcd/ca.pem\""));
    }

    #[test]
    fn missing_settings_are_reported() {
        let mut t = tree();
        t.as_object_mut().unwrap().remove("name");
        assert!(matches!(
            render(&t, &paths(), None).unwrap(),
            Outcome::Missing(k) if k == vec!["etcd.name".to_string()]
        ));
    }
}
