//! REST API security (issue 3, item 10): HTTP Basic auth for unsafe
//! methods, the API over TLS (members still reach each other), and client
//! certificates (`verify_client = optional | required`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use pgpilot::client::{ApiClient, ClientError, Reply};
use pgpilot::tls::ClientTls;
use pgpilot_e2e::http::Method;
use pgpilot_e2e::openssl::{issue, self_signed_ca};
use pgpilot_e2e::ops::ctl_with_config as ctl;
use pgpilot_e2e::{wait_until, Cluster};
use serde_json::{json, Value};

const READY: Duration = Duration::from_secs(120);

/// Create the cluster's members without starting them, let `edit` change
/// each configuration file, then start them all.
async fn start_cluster(members: usize, edit: impl Fn(&str) -> String) -> anyhow::Result<Cluster> {
    let mut c = Cluster::builder().members(0).start().await?;
    for n in 1..=members {
        let options = c.member_options(&format!("m{n}"));
        let i = c.add_member(options)?;
        let text = edit(&c.member(i).config_text());
        c.member(i).write_config(&text)?;
    }
    for i in 0..members {
        c.start_member(i)?;
    }
    Ok(c)
}

fn with_credentials(config: &str) -> String {
    config.replacen(
        "[api]\n",
        "[api]\nusername = \"admin\"\npassword = \"s3cret:pw\"\n",
        1,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_guards_unsafe_methods_only() -> anyhow::Result<()> {
    let c = start_cluster(2, with_credentials).await?;
    let leader = c.wait_ready(READY).await?;
    let url = c.member(leader).api_url("/reload");
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()?;

    // No credentials, wrong ones: 401 with the challenge, nothing done.
    let r = http.post(&url).send().await?;
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(
        r.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Basic realm=\"pgpilot\"")
    );
    assert_eq!(r.text().await?, "no auth header received");
    let r = http
        .post(&url)
        .basic_auth("admin", Some("wrong"))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.text().await?, "not authenticated");
    let r = http
        .patch(c.member(leader).api_url("/config"))
        .json(&json!({"pause": true}))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(c.get(leader, "/config").await?.json()?.get("pause"), None);
    let r = http
        .delete(c.member(leader).api_url("/switchover"))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 401);

    // The right ones: carried out.
    let r = http
        .post(&url)
        .basic_auth("admin", Some("s3cret:pw"))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await?);
    let r = http
        .patch(c.member(leader).api_url("/config"))
        .basic_auth("admin", Some("s3cret:pw"))
        .json(&json!({"postgresql": {"parameters": {"work_mem": "9MB"}}}))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await?);

    // Safe methods stay open.
    for path in ["/patroni", "/cluster", "/config", "/history", "/health"] {
        assert_eq!(c.status(leader, path).await, Some(200), "GET {path}");
    }
    assert_eq!(
        c.request(leader, Method::HEAD, "/primary").await?.status,
        200
    );

    // ctl takes the credentials from the member's file, or --api-user.
    let config = c.member(leader).config_path.clone();
    let out = ctl(&config, &["reload", "--force"]).await?;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        out.stdout.matches("Success: reload on member").count(),
        2,
        "{out:?}"
    );
    let out = ctl(&config, &["reload", "--force", "--api-user", "admin:nope"]).await?;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.contains("status code=401"), "{out:?}");
    Ok(())
}

/// Certificates made with the openssl CLI in `dir`.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    /// A certificate from another CA.
    rogue_cert: PathBuf,
    rogue_key: PathBuf,
}

fn make_pki(dir: &Path) -> anyhow::Result<Pki> {
    std::fs::create_dir_all(dir)?;
    self_signed_ca(dir, "ca", "pgpilot-e2e CA")?;
    self_signed_ca(dir, "rogue", "somebody else")?;
    issue(
        dir,
        "server",
        "/CN=127.0.0.1",
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n\
         basicConstraints = CA:FALSE\n\
         keyUsage = digitalSignature, keyEncipherment\n\
         extendedKeyUsage = serverAuth, clientAuth\n",
    )?;
    issue(
        dir,
        "client",
        "/CN=operator",
        "basicConstraints = CA:FALSE\n\
         keyUsage = digitalSignature\n\
         extendedKeyUsage = clientAuth\n",
    )?;
    // PostgreSQL does not read these; the sidecar runs as root.
    Ok(Pki {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
        rogue_cert: dir.join("rogue.pem"),
        rogue_key: dir.join("rogue.key"),
    })
}

fn tls_section(pki: &Pki, verify_client: &str) -> String {
    format!(
        "\n[api.tls]\ncert_file = {:?}\nkey_file = {:?}\nca_file = {:?}\nverify_client = {verify_client:?}\n",
        pki.server_cert.display().to_string(),
        pki.server_key.display().to_string(),
        pki.ca.display().to_string(),
    )
}

fn https(c: &Cluster, i: usize, path: &str) -> String {
    format!("https://127.0.0.1:{}{path}", c.member(i).api_port)
}

fn client(ca: Option<&Path>, identity: Option<(&Path, &Path)>) -> ApiClient {
    let tls = ClientTls {
        ca_file: ca.map(Path::to_path_buf),
        cert_file: identity.map(|(c, _)| c.to_path_buf()),
        key_file: identity.map(|(_, k)| k.to_path_buf()),
        insecure: false,
    };
    ApiClient::new(&tls, Duration::from_secs(90), Duration::from_secs(3)).expect("client builds")
}

/// Wait until `/cluster` (over https) shows one leader and every other
/// member streaming; the leader's index.
async fn wait_ready_tls(c: &Cluster, client: &ApiClient, members: usize) -> anyhow::Result<usize> {
    wait_until(
        "a leader and streaming replicas (https)",
        READY,
        async || {
            let mut leaders = Vec::new();
            for i in 0..members {
                let reply = client
                    .request(Method::GET, &https(c, i, "/primary"), None)
                    .await?;
                if reply.status == 200 {
                    leaders.push(i);
                }
            }
            let [leader] = leaders.as_slice() else {
                anyhow::bail!("members answering /primary with 200: {leaders:?}");
            };
            let cluster: Value = client.get_json(&https(c, *leader, "/cluster")).await?;
            let listed = cluster["members"].as_array().cloned().unwrap_or_default();
            anyhow::ensure!(listed.len() == members, "/cluster: {cluster}");
            for m in &listed {
                let api = m["api_url"].as_str().unwrap_or("");
                anyhow::ensure!(api.starts_with("https://"), "api_url {api:?}");
                let ok = (m["role"] == "leader" && m["state"] == "running")
                    || (m["role"] == "replica" && m["state"] == "streaming");
                anyhow::ensure!(ok, "/cluster: {cluster}");
            }
            Ok(*leader)
        },
    )
    .await
    .map_err(|e| c.with_logs(e))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_over_tls_members_reach_each_other() -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let pki = make_pki(scratch.path())?;
    let section = tls_section(&pki, "none");
    let c = start_cluster(3, |text| format!("{text}{section}")).await?;
    let trusted = client(Some(&pki.ca), None);
    let leader = wait_ready_tls(&c, &trusted, 3).await?;

    // Plain HTTP on the TLS port gets no answer; a client that does not
    // trust the CA refuses the server.
    let plain = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?;
    let answered = plain
        .get(c.member(leader).api_url("/patroni"))
        .send()
        .await
        .map(|r| r.status().as_u16());
    assert!(answered.is_err(), "plain http answered: {answered:?}");
    let untrusting = client(Some(&pki.rogue_cert), None);
    let err = untrusting
        .request(Method::GET, &https(&c, leader, "/patroni"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");

    // A switchover needs the members to reach each other's API over https
    // (the candidate is probed, the old leader waits for its checkpoint).
    let candidate = (leader + 1) % 3;
    let reply = trusted
        .request(
            Method::POST,
            &https(&c, leader, "/switchover"),
            Some(&json!({"leader": c.member(leader).name, "candidate": c.member(candidate).name})),
        )
        .await?;
    assert_eq!(
        reply,
        Reply {
            status: 200,
            body: format!(
                "Successfully switched over to \"{}\"",
                c.member(candidate).name
            )
        },
        "{}",
        c.logs(40)
    );
    assert_eq!(wait_ready_tls(&c, &trusted, 3).await?, candidate);
    let log = c.member(leader).log();
    assert!(
        !log.contains("no replica reachable"),
        "the old leader could not reach its peers over https:\n{log}"
    );

    // ctl with a member's file: it trusts api.tls.ca_file.
    let back = c.member(leader).name.clone();
    let out = ctl(
        &c.member(candidate).config_path,
        &["switchover", "--candidate", &back, "--force"],
    )
    .await?;
    assert_eq!(out.code, Some(0), "{out:?}\n{}", c.logs(40));
    assert_eq!(wait_ready_tls(&c, &trusted, 3).await?, leader);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_certificates_refuse_clients_without_one() -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let pki = make_pki(scratch.path())?;
    let section = tls_section(&pki, "required");
    let c = start_cluster(2, |text| format!("{text}{section}")).await?;
    let operator = client(Some(&pki.ca), Some((&pki.client_cert, &pki.client_key)));
    let leader = wait_ready_tls(&c, &operator, 2).await?;

    // No certificate, or one from another CA: the handshake fails, for
    // safe methods too.
    for (what, stranger) in [
        ("no certificate", client(Some(&pki.ca), None)),
        (
            "another CA's certificate",
            client(Some(&pki.ca), Some((&pki.rogue_cert, &pki.rogue_key))),
        ),
    ] {
        let result = stranger
            .request(Method::GET, &https(&c, leader, "/patroni"), None)
            .await;
        assert!(
            matches!(result, Err(ClientError::Unreachable { .. })),
            "{what}: {result:?}"
        );
    }
    let reply = operator
        .request(Method::GET, &https(&c, leader, "/patroni"), None)
        .await?;
    assert_eq!(reply.status, 200);

    // Members show their own certificate to each other: a switchover works.
    let replica = 1 - leader;
    let reply = operator
        .request(
            Method::POST,
            &https(&c, replica, "/switchover"),
            Some(&json!({"leader": c.member(leader).name, "candidate": c.member(replica).name})),
        )
        .await?;
    assert_eq!(reply.status, 200, "{reply:?}\n{}", c.logs(40));
    assert_eq!(wait_ready_tls(&c, &operator, 2).await?, replica);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_certificates_guard_unsafe_methods() -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let pki = make_pki(scratch.path())?;
    let section = tls_section(&pki, "optional");
    let c = start_cluster(1, |text| format!("{}{section}", with_credentials(text))).await?;
    let anonymous = client(Some(&pki.ca), None);
    let leader = wait_ready_tls(&c, &anonymous, 1).await?;
    let with_cert = client(Some(&pki.ca), Some((&pki.client_cert, &pki.client_key)));

    // Safe methods need neither certificate nor credentials.
    let reply = anonymous
        .request(Method::GET, &https(&c, leader, "/patroni"), None)
        .await?;
    assert_eq!(reply.status, 200);
    // Unsafe ones need a certificate first (403), then credentials (401).
    let reload = https(&c, leader, "/reload");
    let reply = anonymous
        .clone()
        .with_basic_auth("admin", "s3cret:pw")
        .request(Method::POST, &reload, None)
        .await?;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (403, "client certificate required")
    );
    let reply = with_cert.request(Method::POST, &reload, None).await?;
    assert_eq!(reply.status, 401, "{reply:?}");
    let reply = with_cert
        .clone()
        .with_basic_auth("admin", "s3cret:pw")
        .request(Method::POST, &reload, None)
        .await?;
    assert_eq!(reply.status, 200, "{reply:?}");
    Ok(())
}
