//! TLS for the REST API, with rustls and its `ring` provider: the server
//! side (optional client-certificate verification) and the client side used
//! by `pgpilot ctl` and by members calling each other's API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::config::{ApiTls, Config, Invalid, VerifyClient};

/// How long a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The crypto provider every TLS configuration here uses (no process-wide default).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file (at least one).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("{} holds no PEM private key", path.display())
        }
        other => format!("cannot read the private key in {}: {other}", path.display()),
    })
}

/// A trust store made of the certificates in a PEM bundle.
pub fn root_store(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: unusable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

/// The server configuration for `[api.tls]`; errors name the key at fault.
pub fn server_config(tls: &ApiTls) -> Result<Arc<ServerConfig>, Invalid> {
    let certs = read_certs(&tls.cert_file).map_err(|m| Invalid::new("api.tls.cert_file", m))?;
    let key = read_key(&tls.key_file).map_err(|m| Invalid::new("api.tls.key_file", m))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Invalid::new("api.tls", e.to_string()))?;
    let builder = match (tls.verify_client, &tls.ca_file) {
        (VerifyClient::None, _) | (_, None) => builder.with_no_client_auth(),
        (mode, Some(ca)) => {
            let roots = root_store(ca).map_err(|m| Invalid::new("api.tls.ca_file", m))?;
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            if mode == VerifyClient::Optional {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|e| Invalid::new("api.tls.ca_file", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        Invalid::new(
            "api.tls.key_file",
            format!("cannot be used with api.tls.cert_file: {e}"),
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What a client trusts and shows when it calls a member's API over https.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// CA bundle for the servers' certificates; `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (for `verify_client`).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Do not verify the server's certificate (ctl `--insecure`).
    pub insecure: bool,
}

impl ClientTls {
    /// A member calling other members: it trusts `api.tls.ca_file` and
    /// shows its own certificate.
    pub fn for_member(config: &Config) -> Self {
        match &config.api.tls {
            Some(tls) => ClientTls {
                ca_file: tls.ca_file.clone(),
                cert_file: Some(tls.cert_file.clone()),
                key_file: Some(tls.key_file.clone()),
                insecure: false,
            },
            None => ClientTls::default(),
        }
    }
}

/// The rustls client configuration for `tls`.
pub fn client_config(tls: &ClientTls) -> Result<ClientConfig, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if tls.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::tls::NoVerification(provider)))
    } else {
        let roots = match &tls.ca_file {
            Some(ca) => root_store(ca)?,
            None => {
                let mut roots = RootCertStore::empty();
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
                roots
            }
        };
        builder.with_root_certificates(roots)
    };
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .map_err(|e| format!("client certificate {}: {e}", cert.display()))?,
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("a client certificate needs both a certificate and a key file".into()),
    };
    Ok(config)
}

/// Who is on the other end of a TLS connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// The client presented a certificate that verified against `api.tls.ca_file`.
    pub client_cert: bool,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, ApiListener>>
    for PeerInfo
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, ApiListener>) -> Self {
        *stream.remote_addr()
    }
}

/// The REST API's TLS configuration in force; `None` serves plain HTTP.
/// A reload (SIGHUP, `POST /reload`) replaces it: new connections get the
/// renewed certificate, or TLS turned on or off, without a restart.
pub type TlsSlot = Arc<std::sync::RwLock<Option<Arc<ServerConfig>>>>;

/// The slot for `[api.tls]` as configured (`None`: plain HTTP).
pub fn slot(tls: Option<&ApiTls>) -> Result<TlsSlot, Invalid> {
    let config = tls.map(server_config).transpose()?;
    Ok(Arc::new(std::sync::RwLock::new(config)))
}

/// One accepted connection: plain, or after its TLS handshake.
pub enum ApiStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl tokio::io::AsyncRead for ApiStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            ApiStream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            ApiStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for ApiStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ApiStream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            ApiStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            ApiStream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            ApiStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            ApiStream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            ApiStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

type Accepted = (ApiStream, PeerInfo);

/// A listener that hands axum finished connections: TLS when the slot
/// holds a configuration at accept time, else plain HTTP. Handshakes run
/// in their own tasks (with a time limit), so a slow client holds up nobody.
pub struct ApiListener {
    accepted: mpsc::Receiver<Accepted>,
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ApiListener {
    pub fn new(listener: TcpListener, slot: TlsSlot) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, accepted) = mpsc::channel(64);
        let task = tokio::spawn(async move {
            loop {
                let (tcp, addr) = match listener.accept().await {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        tracing::warn!(error = %e, "REST API: cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let config = slot.read().map(|c| c.clone()).unwrap_or_default();
                let Some(config) = config else {
                    let peer = PeerInfo {
                        addr,
                        client_cert: false,
                    };
                    let _ = tx.send((ApiStream::Plain(tcp), peer)).await;
                    continue;
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let client_cert = stream.get_ref().1.peer_certificates().is_some();
                            let peer = PeerInfo { addr, client_cert };
                            let _ = tx.send((ApiStream::Tls(Box::new(stream)), peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(client = %addr, error = %e, "REST API: TLS handshake failed")
                        }
                        Err(_) => {
                            tracing::debug!(client = %addr, "REST API: TLS handshake timed out")
                        }
                    }
                });
            }
        });
        Ok(ApiListener {
            accepted,
            local,
            task,
        })
    }
}

impl Drop for ApiListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for ApiListener {
    type Io = ApiStream;
    type Addr = PeerInfo;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accept task ended (it never does on its own): serve nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(PeerInfo {
            addr: self.local,
            client_cert: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener as _;

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/snap/testdata")
            .join(name)
    }

    /// A reload swaps the slot: the next connection is plain, then TLS, then
    /// plain again, on the same listener.
    #[tokio::test]
    async fn the_listener_follows_its_slot() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let slot = slot(None).unwrap();
        let mut listener = ApiListener::new(tcp, slot.clone()).unwrap();
        let addr = listener.local_addr().unwrap().addr;

        let _plain = TcpStream::connect(addr).await.unwrap();
        let (io, peer) = listener.accept().await;
        assert!(matches!(io, ApiStream::Plain(_)));
        assert!(!peer.client_cert);

        let tls = ApiTls {
            cert_file: testdata("cert.pem"),
            key_file: testdata("key.pem"),
            ca_file: None,
            verify_client: VerifyClient::None,
        };
        *slot.write().unwrap() = Some(server_config(&tls).unwrap());
        let client = client_config(&ClientTls {
            insecure: true,
            ..Default::default()
        })
        .unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let handshake = tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("test").unwrap();
            connector.connect(name, tcp).await.map(|_| ())
        });
        let (io, _) = listener.accept().await;
        assert!(matches!(io, ApiStream::Tls(_)));
        handshake.await.unwrap().unwrap();

        *slot.write().unwrap() = None;
        let _plain = TcpStream::connect(addr).await.unwrap();
        let (io, _) = listener.accept().await;
        assert!(matches!(io, ApiStream::Plain(_)));
    }
}
