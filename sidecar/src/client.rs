//! A small HTTP(S) client for members' REST APIs: `pgpilot ctl` and the HA
//! loop (peer status during a leader race) use it. hyper with rustls (ring),
//! so https works without a process-wide crypto provider.

use std::time::Duration;

use axum::http::{header, Method, Request};
use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

use crate::config::Config;
use crate::tls::{client_config, ClientTls};

/// Status and body of one answered request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Request(String),
    #[error("{method} {url}: {message}")]
    Unreachable {
        method: Method,
        url: String,
        message: String,
    },
    #[error("{method} {url}: no answer within {timeout:?}")]
    Timeout {
        method: Method,
        url: String,
        timeout: Duration,
    },
    #[error("{url}: the answer is not the expected JSON ({message})")]
    Json { url: String, message: String },
}

#[derive(Clone)]
pub struct ApiClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    authorization: Option<String>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("timeout", &self.timeout)
            .field("basic_auth", &self.authorization.is_some())
            .finish()
    }
}

impl ApiClient {
    /// A client for http and https URLs; `timeout` bounds each whole request.
    pub fn new(
        tls: &ClientTls,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Self, String> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_config(tls)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        // No pooling: members restart on the same port, and a request here
        // is rare enough that a fresh connection costs nothing.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        Ok(ApiClient {
            client,
            timeout,
            authorization: None,
        })
    }

    /// What a member uses to ask its peers: 2 s per request, 1 s to connect,
    /// the member's own certificate and CA when its API uses TLS.
    pub fn for_member(config: &Config) -> Result<Self, String> {
        let tls = ClientTls::for_member(config);
        ApiClient::new(&tls, Duration::from_secs(2), Duration::from_secs(1))
    }

    /// Send HTTP Basic credentials with every request.
    pub fn with_basic_auth(mut self, user: &str, password: &str) -> Self {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.authorization = Some(format!("Basic {token}"));
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// One request; `Err` only when no HTTP answer came.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Reply, ClientError> {
        self.request_with_headers(method, url, body, &[]).await
    }

    /// [`ApiClient::request`] with extra headers.
    pub async fn request_with_headers(
        &self,
        method: Method,
        url: &str,
        body: Option<&serde_json::Value>,
        headers: &[(header::HeaderName, String)],
    ) -> Result<Reply, ClientError> {
        let mut builder = Request::builder().method(method.clone()).uri(url);
        if let Some(auth) = &self.authorization {
            builder = builder.header(header::AUTHORIZATION, auth);
        }
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        let payload = match body {
            Some(json) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(json.to_string())
            }
            None => Bytes::new(),
        };
        let request = builder
            .body(Full::new(payload))
            .map_err(|e| ClientError::Request(format!("{method} {url}: {e}")))?;
        let unreachable = |message: String| ClientError::Unreachable {
            method: method.clone(),
            url: url.to_string(),
            message,
        };
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| unreachable(error_chain(&e)))?;
            let status = response.status().as_u16();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok(Reply {
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout {
                method,
                url: url.to_string(),
                timeout: self.timeout,
            }),
        }
    }

    /// `GET url` parsed as JSON, whatever the status (health checks answer
    /// 503 with the same body).
    pub async fn get_json<T: DeserializeOwned>(&self, url: &str) -> Result<T, ClientError> {
        let reply = self.request(Method::GET, url, None).await?;
        serde_json::from_str(&reply.body).map_err(|e| ClientError::Json {
            url: url.to_string(),
            message: e.to_string(),
        })
    }
}

/// An error with its causes: hyper's top-level message alone ("client
/// error (Connect)") says little.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The API's base URL from a member's published `api_url` (`.../patroni`).
pub fn base_url(api_url: &str) -> &str {
    api_url
        .trim_end_matches('/')
        .strip_suffix("/patroni")
        .unwrap_or(api_url.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_strips_the_status_path() {
        assert_eq!(
            base_url("http://10.0.0.1:8008/patroni"),
            "http://10.0.0.1:8008"
        );
        assert_eq!(base_url("https://h:8008/patroni/"), "https://h:8008");
        assert_eq!(base_url("http://h:8008"), "http://h:8008");
    }

    #[tokio::test]
    async fn unreachable_member_is_an_error_not_a_hang() {
        let client = ApiClient::new(
            &ClientTls::default(),
            Duration::from_secs(2),
            Duration::from_secs(1),
        )
        .unwrap();
        // Port 9 on loopback: nothing listens (discard is never enabled here).
        let err = client
            .request(Method::GET, "http://127.0.0.1:9/patroni", None)
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
    }
}
