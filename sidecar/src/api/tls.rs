//! The REST API's listener: plain or TLS connections, following the
//! configuration in its [`TlsSlot`] (the certificates and rustls
//! configurations themselves are [`crate::tls`]'s).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::tls::TlsSlot;

/// How long a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use super::*;
    use crate::config::{ApiTls, VerifyClient};
    use crate::tls::{client_config, server_config, slot, ClientTls};
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
