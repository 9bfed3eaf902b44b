//! `synap certs`: a throwaway CA and certificates for the nodes, for tests,
//! local clusters and `scripts/cluster-up --tls`. Production clusters
//! bring certificates from their own CA.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use super::TlsError;

/// The CA's name. A CA read back from its key file is signed again under
/// this name, which is what its certificates name as their issuer.
const CA_NAME: &str = "Synap throwaway CA";

/// What [`make`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Made {
    /// The CA certificate, to give to clients (`--ca`) and nodes
    /// (`--tls-ca`, `--tls-client-ca`).
    pub ca: PathBuf,
    /// Whether the CA was made now (false: an earlier one was reused).
    pub new_ca: bool,
    /// Each node's certificate and key files, in the order asked.
    pub nodes: Vec<(PathBuf, PathBuf)>,
}

fn failed(path: &Path, e: impl ToString) -> TlsError {
    TlsError::File { path: path.to_owned(), reason: e.to_string() }
}

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

/// Writes `text` to `path`, readable by its owner only when it is a key.
fn write(path: &Path, text: &str, secret: bool) -> Result<(), TlsError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| failed(path, e))?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(|e| failed(path, e))
}

/// In `dir`: `ca.pem` and `ca.key` (reused when both exist), and for every
/// name `NAME.pem` and `NAME.key`, a certificate for servers and clients
/// whose names are `NAME` and every entry of `hosts` (DNS names or IP
/// addresses).
pub fn make(dir: &Path, names: &[String], hosts: &[String]) -> Result<Made, TlsError> {
    std::fs::create_dir_all(dir).map_err(|e| failed(dir, e))?;
    let (ca_cert_path, ca_key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    let new_ca = !(ca_cert_path.exists() && ca_key_path.exists());
    let ca_key = if new_ca {
        KeyPair::generate().map_err(|e| failed(&ca_key_path, e))?
    } else {
        let pem = std::fs::read_to_string(&ca_key_path).map_err(|e| failed(&ca_key_path, e))?;
        KeyPair::from_pem(&pem).map_err(|e| failed(&ca_key_path, e))?
    };
    let ca = ca_params().and_then(|p| p.self_signed(&ca_key)).map_err(|e| failed(&ca_cert_path, e))?;
    if new_ca {
        write(&ca_key_path, &ca_key.serialize_pem(), true)?;
        write(&ca_cert_path, &ca.pem(), false)?;
    }
    let mut nodes = Vec::new();
    for name in names {
        let (cert_path, key_path) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
        let mut alt_names = vec![name.clone()];
        alt_names.extend(hosts.iter().filter(|h| *h != name).cloned());
        let mut params = CertificateParams::new(alt_names).map_err(|e| failed(&cert_path, e))?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name.as_str());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(|e| failed(&key_path, e))?;
        let cert = params.signed_by(&key, &ca, &ca_key).map_err(|e| failed(&cert_path, e))?;
        write(&key_path, &key.serialize_pem(), true)?;
        write(&cert_path, &cert.pem(), false)?;
        nodes.push((cert_path, key_path));
    }
    Ok(Made { ca: ca_cert_path, new_ca, nodes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{client_config, server_config, TlsFiles};

    #[test]
    fn made_certificates_load_as_server_and_client_set_ups() {
        let dir = tempfile::tempdir().unwrap();
        let made = make(dir.path(), &["n1".into()], &["127.0.0.1".into(), "localhost".into()]).unwrap();
        assert!(made.new_ca);
        let (cert, key) = made.nodes[0].clone();
        let files =
            TlsFiles { cert: cert.clone(), key: key.clone(), ca: Some(made.ca.clone()), client_ca: Some(made.ca) };
        server_config(&files).unwrap();
        files.peer_client_config().unwrap();
        client_config(files.ca.as_deref(), None).unwrap();

        // A second run reuses the CA and still issues loadable certificates.
        let again = make(dir.path(), &["n2".into()], &[]).unwrap();
        assert!(!again.new_ca);
        let (cert2, key2) = again.nodes[0].clone();
        server_config(&TlsFiles { cert: cert2, key: key2, ca: None, client_ca: None }).unwrap();
    }

    #[test]
    fn a_key_that_does_not_match_its_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let made = make(dir.path(), &["a".into(), "b".into()], &[]).unwrap();
        let files = TlsFiles { cert: made.nodes[0].0.clone(), key: made.nodes[1].1.clone(), ca: None, client_ca: None };
        let error = server_config(&files).unwrap_err().to_string();
        assert!(error.contains("a.pem") && error.contains("b.key"), "{error}");
        let missing = TlsFiles { cert: dir.path().join("none.pem"), ..files };
        assert!(server_config(&missing).unwrap_err().to_string().contains("none.pem"));
    }
}
