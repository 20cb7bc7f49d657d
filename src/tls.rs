//! TLS for every connection the bridge opens: the Plex REST calls and notification socket over `https://`, and
//! the MQTT connection over `mqtts://`. One rustls (with the `ring` provider), no OpenSSL.
//!
//! Trust: the platform's roots by default; with a CA file, only the certificates in it (a private CA or the
//! self-signed certificate of a broker); or — explicitly, loudly logged — no verification at all, for users who
//! reach PMS by bare IP while it presents its `*.plex.direct` certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_platform_verifier::BuilderVerifierExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// How to set up TLS for one peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TlsOptions {
    /// PEM file with the CA certificate(s) to trust instead of the platform's roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    /// Accept any server certificate. Dangerous; for a bare-IP Plex URL with a `*.plex.direct` certificate.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
}

/// The TLS setting a problem lies in, so that the configuration check names its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsSetting {
    /// [`TlsOptions::ca_file`].
    CaFile,
    /// [`TlsOptions::client_cert`].
    ClientCert,
    /// [`TlsOptions::client_key`].
    ClientKey,
}

impl TlsSetting {
    /// The key's name within its section (`ca_file`, `client_cert`, `client_key`).
    pub fn key(self) -> &'static str {
        match self {
            TlsSetting::CaFile => "ca_file",
            TlsSetting::ClientCert => "client_cert",
            TlsSetting::ClientKey => "client_key",
        }
    }

    /// What the file must hold, as the fix of a configuration error.
    pub fn fix(self) -> &'static str {
        match self {
            TlsSetting::CaFile => "point it at a readable PEM file with the CA certificate(s) to trust",
            TlsSetting::ClientCert => {
                "point it at a readable PEM file with the client certificate (its own certificate first)"
            }
            TlsSetting::ClientKey => {
                "point it at a readable PEM file with the private key (RSA, ECDSA or Ed25519) of client_cert"
            }
        }
    }
}

/// Why TLS could not be set up; names the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { setting: TlsSetting, path: String, source: std::io::Error },
    #[error("{path} holds no usable PEM {what}")]
    Pem { setting: TlsSetting, path: String, what: &'static str },
    #[error("{path} is not the private key of the client certificate")]
    KeyMismatch { path: String },
    #[error("{path} is refused: {source}")]
    Refused { setting: TlsSetting, path: String, source: rustls::Error },
    #[error("TLS set-up failed: {0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsError {
    /// The setting whose file is at fault (`None` for a problem with the platform's trust store).
    pub fn setting(&self) -> Option<TlsSetting> {
        match self {
            TlsError::Read { setting, .. } | TlsError::Pem { setting, .. } | TlsError::Refused { setting, .. } => {
                Some(*setting)
            }
            TlsError::KeyMismatch { .. } => Some(TlsSetting::ClientKey),
            TlsError::Rustls(_) => None,
        }
    }
}

/// A rustls client configuration for `options`. Every file is read, parsed and checked here (the CA
/// certificates, the client key's type, that it is the client certificate's key), so the configuration check
/// that calls it finds what a connection would fail on. Installs the `ring` provider if none is, so it never
/// panics for want of one.
pub fn client_config(options: &TlsOptions) -> Result<Arc<ClientConfig>, TlsError> {
    install_crypto_provider();
    let builder = ClientConfig::builder();
    let builder = if options.insecure_skip_verify {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerification::new()))
    } else if let Some(ca_file) = &options.ca_file {
        let mut roots = RootCertStore::empty();
        for cert in read_certs(ca_file, TlsSetting::CaFile)? {
            roots.add(cert).map_err(|source| refused(TlsSetting::CaFile, ca_file, source))?;
        }
        builder.with_root_certificates(roots)
    } else {
        builder.with_platform_verifier()?
    };
    let config = match (&options.client_cert, &options.client_key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(read_certs(cert, TlsSetting::ClientCert)?, read_key(key)?)
            .map_err(|source| match source {
                // The certificate itself does not parse; anything else (a key type rustls cannot sign with, a key
                // that is not the certificate's) is the key's.
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                    refused(TlsSetting::ClientCert, cert, source)
                }
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                    TlsError::KeyMismatch { path: key.display().to_string() }
                }
                source => refused(TlsSetting::ClientKey, key, source),
            })?,
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

fn refused(setting: TlsSetting, path: &Path, source: rustls::Error) -> TlsError {
    TlsError::Refused { setting, path: path.display().to_string(), source }
}

fn read(path: &Path, setting: TlsSetting) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { setting, path: path.display().to_string(), source })
}

/// The certificates of a PEM file (at least one).
fn read_certs(path: &Path, setting: TlsSetting) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path, setting)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(TlsError::Pem { setting, path: path.display().to_string(), what: "certificate" });
    }
    Ok(certs)
}

/// The private key of a PEM file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path, TlsSetting::ClientKey)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::Pem {
        setting: TlsSetting::ClientKey,
        path: path.display().to_string(),
        what: "private key",
    })
}

/// Wraps `tcp` in TLS to `host`, verifying its certificate per `config`.
pub async fn connect(config: Arc<ClientConfig>, host: &str, tcp: TcpStream) -> Result<TlsStream<TcpStream>, String> {
    let name = ServerName::try_from(host.to_owned()).map_err(|e| format!("invalid TLS server name {host:?}: {e}"))?;
    TlsConnector::from(config).connect(name, tcp).await.map_err(|e| describe_handshake_error(host, &e))
}

/// A handshake error with a hint at the usual fix.
pub fn describe_handshake_error(host: &str, error: &dyn std::fmt::Display) -> String {
    let text = error.to_string();
    let hint = if text.contains("UnknownIssuer") || text.contains("invalid peer certificate") {
        "; if the server uses a private CA or a self-signed certificate, point `ca_file` at it"
    } else if text.contains("NotValidForName") {
        "; the certificate is for another host name (for Plex use the *.plex.direct name, or set \
         insecure_skip_verify = true for a bare IP)"
    } else {
        ""
    };
    format!("TLS handshake with {host} failed: {text}{hint}")
}

/// Accepts every certificate (see [`TlsOptions::insecure_skip_verify`]); signatures are still checked so the
/// handshake itself stays well-formed.
#[derive(Debug)]
struct NoVerification {
    schemes: Vec<SignatureScheme>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl NoVerification {
    fn new() -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        NoVerification { schemes: provider.signature_verification_algorithms.supported_schemes(), provider }
    }
}

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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// Installs rustls' `ring` provider once per process (reqwest and the MQTT client are built without a provider
/// of their own, to keep aws-lc out of the build). Every entry point that opens a TLS connection calls it first.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Whether the URL's host is this machine (`127.0.0.0/8`, `::1`, `localhost`): the only place where a service
/// that carries a token may be spoken to without TLS (a test's fake plex.tv or Supervisor).
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    }
}
