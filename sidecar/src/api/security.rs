//! Access control for the unsafe methods (POST, PUT, PATCH, DELETE): HTTP
//! Basic auth when `api.username`/`api.password` are set, and a client
//! certificate when `api.tls.verify_client = "optional"`. GET, HEAD and
//! OPTIONS stay open (with `verify_client = "required"` the TLS handshake
//! itself already demands a certificate for every request).

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::tls::PeerInfo;
use super::ApiState;
use crate::config::{ApiSection, VerifyClient};
use crate::dcs::Dcs;

pub const REALM: &str = "pgpilot";

/// Methods that change nothing and need no credentials.
pub fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Why a request is refused, if it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 403: `verify_client = "optional"` and no client certificate.
    NeedCertificate,
    /// 401 with this message.
    Unauthenticated(&'static str),
}

/// The pure access decision for one request.
pub fn check(
    api: &ApiSection,
    method: &Method,
    authorization: Option<&[u8]>,
    client_cert: bool,
) -> Result<(), Refusal> {
    if is_safe(method) {
        return Ok(());
    }
    let verify = api.tls.as_ref().map(|t| t.verify_client);
    if verify == Some(VerifyClient::Optional) && !client_cert {
        return Err(Refusal::NeedCertificate);
    }
    let (Some(user), Some(password)) = (&api.username, &api.password) else {
        return Ok(());
    };
    let Some(header) = authorization else {
        return Err(Refusal::Unauthenticated("no auth header received"));
    };
    let given = basic_credentials(header);
    let expected = format!("{user}:{password}");
    match given {
        Some(given) if same_secret(&given, expected.as_bytes()) => Ok(()),
        _ => Err(Refusal::Unauthenticated("not authenticated")),
    }
}

/// The decoded `user:password` of an `Authorization: Basic ...` header.
fn basic_credentials(header: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, token) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()
}

/// Compare two secrets in time independent of where they differ (and of
/// their lengths): compare their SHA-256 digests without early exit.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let da = Sha256::digest(a);
    let db = Sha256::digest(b);
    da.iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The middleware in front of every route.
pub async fn guard<D: Dcs>(
    State(state): State<ApiState<D>>,
    request: Request,
    next: Next,
) -> Response {
    let client_cert = request
        .extensions()
        .get::<ConnectInfo<PeerInfo>>()
        .is_some_and(|c| c.0.client_cert);
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    // One value for user and password: a reload swaps them together.
    let config = state.shared.config();
    match check(&config.api, request.method(), authorization, client_cert) {
        Ok(()) => next.run(request).await,
        Err(Refusal::NeedCertificate) => {
            (StatusCode::FORBIDDEN, "client certificate required").into_response()
        }
        Err(Refusal::Unauthenticated(message)) => {
            tracing::warn!(method = %request.method(), path = %request.uri().path(), "REST API: {message}");
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, format!("Basic realm=\"{REALM}\""))],
                message,
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiTls;

    fn api(user: Option<&str>, verify: Option<VerifyClient>) -> ApiSection {
        ApiSection {
            listen: "127.0.0.1:8008".parse().unwrap(),
            connect_address: None,
            username: user.map(str::to_string),
            password: user.map(|_| "s3cret:with:colons".to_string()),
            tls: verify.map(|v| ApiTls {
                cert_file: "/c".into(),
                key_file: "/k".into(),
                ca_file: Some("/ca".into()),
                verify_client: v,
            }),
        }
    }

    fn basic(user_password: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_password)
        )
        .into_bytes()
    }

    #[test]
    fn safe_methods_are_open() {
        let a = api(Some("admin"), Some(VerifyClient::Optional));
        for m in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert_eq!(check(&a, &m, None, false), Ok(()));
        }
    }

    #[test]
    fn unsafe_methods_need_the_right_credentials() {
        let a = api(Some("admin"), None);
        assert_eq!(
            check(&a, &Method::POST, None, false),
            Err(Refusal::Unauthenticated("no auth header received"))
        );
        assert_eq!(
            check(&a, &Method::PATCH, Some(&basic("admin:wrong")), false),
            Err(Refusal::Unauthenticated("not authenticated"))
        );
        assert_eq!(
            check(&a, &Method::PUT, Some(b"Bearer xyz"), false),
            Err(Refusal::Unauthenticated("not authenticated"))
        );
        assert_eq!(
            check(
                &a,
                &Method::DELETE,
                Some(&basic("admin:s3cret:with:colons")),
                false
            ),
            Ok(())
        );
        let lower = format!(
            "basic {}",
            base64::engine::general_purpose::STANDARD.encode("admin:s3cret:with:colons")
        );
        assert_eq!(
            check(&a, &Method::POST, Some(lower.as_bytes()), false),
            Ok(())
        );
    }

    #[test]
    fn without_credentials_configured_everything_passes() {
        let a = api(None, None);
        assert_eq!(check(&a, &Method::POST, None, false), Ok(()));
    }

    #[test]
    fn optional_client_certificates_guard_unsafe_methods() {
        let a = api(None, Some(VerifyClient::Optional));
        assert_eq!(
            check(&a, &Method::POST, None, false),
            Err(Refusal::NeedCertificate)
        );
        assert_eq!(check(&a, &Method::POST, None, true), Ok(()));
        let a = api(None, Some(VerifyClient::None));
        assert_eq!(check(&a, &Method::POST, None, false), Ok(()));
    }

    #[test]
    fn secrets_compare_by_content() {
        assert!(same_secret(b"a:b", b"a:b"));
        assert!(!same_secret(b"a:b", b"a:c"));
        assert!(!same_secret(b"a:b", b"a:bb"));
    }
}
