//! TLS for every connection a node takes or makes: rustls with the ring
//! provider, no OpenSSL.
//!
//! A node with `--tls-cert`/`--tls-key` serves HTTPS and WSS on its one
//! port ([`listener`]); `--tls-ca` is what it checks its peers'
//! certificates against; `--tls-client-ca` makes it ask every connection
//! for a client certificate and refuse `/raft/*` to a connection that did
//! not present one signed by that CA (the public API stays reachable by
//! clients without certificates). A node with `--tls-client-ca` also
//! presents its own certificate to its peers: a cluster uses mutual TLS on
//! every node or on none. Certificates, keys and CAs are read again on
//! SIGHUP ([`listener::ServerTls::reload`]).
//!
//! [`certs`] makes a throwaway CA and node certificates (`synap certs`)
//! for tests and `scripts/cluster-up --tls`.

pub mod certs;
pub mod listener;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The files a TLS node is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// This node's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// The private key of that certificate (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA (PEM) that peers' certificates are checked against; without
    /// it, the system's roots.
    pub ca: Option<PathBuf>,
    /// The CA (PEM) that client certificates must chain to; set, `/raft/*`
    /// requires one and this node presents its own certificate to peers.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Whether `/raft/*` requires a client certificate (mutual TLS between
    /// nodes).
    pub fn mutual(&self) -> bool {
        self.client_ca.is_some()
    }

    /// The TLS set-up of this node's connections to its peers.
    pub fn peer_client_config(&self) -> Result<ClientConfig, TlsError> {
        let identity = self.mutual().then_some((self.cert.as_path(), self.key.as_path()));
        client_config(self.ca.as_deref(), identity)
    }
}

/// Why a TLS set-up could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate, key or CA file could not be used.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the combination (a key that does not match the
    /// certificate, say).
    #[error("TLS set-up: {0}")]
    Config(String),
}

fn file_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File { path: path.to_owned(), reason: reason.to_string() }
}

/// ring, named explicitly: another crate in the build enabling a second
/// provider must not make the choice ambiguous (rustls would then refuse to
/// pick one at run time).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in the PEM file at `path` (at least one).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certificates.is_empty() {
        return Err(file_error(path, "no PEM certificate in the file"));
    }
    Ok(certificates)
}

/// The private key in the PEM file at `path`.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => file_error(path, "no PEM private key in the file"),
        other => file_error(path, other),
    })
}

/// The CA certificates in the PEM file at `path`, as trust roots.
pub fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(path)? {
        roots.add(certificate).map_err(|e| file_error(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// The system's trust roots, for servers with publicly issued
/// certificates; unreadable ones are skipped.
fn native_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::debug!("system CA certificates: {error}");
    }
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    tracing::debug!(added, ignored, "system CA certificates loaded");
    roots
}

/// The server side of this node's TLS, from the files as they are now.
/// Only HTTP/1.1 is offered: the WebSocket routes need it.
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let chain = read_certificates(&files.cert)?;
    let key = read_key(&files.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca {
        Some(path) => {
            // Anonymous clients are let through the handshake: the public
            // API serves them; the router refuses them `/raft/*`.
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(read_roots(path)?), provider())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| file_error(path, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(format!("{} and {}: {e}", files.cert.display(), files.key.display())))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The client side of TLS: servers are checked against the CA at `ca` (or
/// the system's roots), and `identity` (certificate, key), if given, is
/// presented to servers that ask for a client certificate.
pub fn client_config(ca: Option<&Path>, identity: Option<(&Path, &Path)>) -> Result<ClientConfig, TlsError> {
    let roots = match ca {
        Some(path) => read_roots(path)?,
        None => native_roots(),
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(read_certificates(cert)?, read_key(key)?)
            .map_err(|e| TlsError::Config(format!("{} and {}: {e}", cert.display(), key.display())))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A reqwest client over `tls` (or the built-in roots without it), with
/// `customise` applied: one way to build every HTTP client that may talk
/// HTTPS to a node.
pub fn http_client(
    tls: Option<&ClientConfig>,
    customise: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
) -> Result<reqwest::Client, TlsError> {
    let mut builder = customise(reqwest::Client::builder());
    if let Some(tls) = tls {
        builder = builder.use_preconfigured_tls(tls.clone());
    }
    builder.build().map_err(|e| TlsError::Config(format!("HTTP client: {e}")))
}
