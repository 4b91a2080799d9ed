//! TLS pieces shared by the REST API, its clients and the S3 driver, with
//! rustls and its `ring` provider: certificates and keys read from PEM
//! files, the REST API's server configuration (optional client-certificate
//! verification) and the client configuration of `pgpilot ctl` and of
//! members calling each other's API.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::config::{ApiTls, Config, Invalid, VerifyClient};

/// Accept any server certificate (`verify_tls = false`, `ctl --insecure`);
/// handshake signatures are still checked.
#[derive(Debug)]
pub struct NoVerification(pub Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

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
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
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

/// The REST API's TLS configuration in force; `None` serves plain HTTP.
/// A reload (SIGHUP, `POST /reload`) replaces it: new connections get the
/// renewed certificate, or TLS turned on or off, without a restart.
pub type TlsSlot = Arc<std::sync::RwLock<Option<Arc<ServerConfig>>>>;

/// The slot for `[api.tls]` as configured (`None`: plain HTTP).
pub fn slot(tls: Option<&ApiTls>) -> Result<TlsSlot, Invalid> {
    let config = tls.map(server_config).transpose()?;
    Ok(Arc::new(std::sync::RwLock::new(config)))
}
