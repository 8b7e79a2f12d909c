//! Mutual TLS for the adapters' listener, reloadable without a restart.

use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::config::TlsConfig;

/// The current TLS configuration; new connections use the latest one after a reload.
#[derive(Debug, Clone)]
pub struct ReloadableTls {
    paths: TlsConfig,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl ReloadableTls {
    /// Loads the certificates.
    pub fn load(paths: &TlsConfig) -> anyhow::Result<Self> {
        let config = build(paths)?;
        Ok(ReloadableTls {
            paths: paths.clone(),
            current: Arc::new(RwLock::new(Arc::new(config))),
        })
    }

    /// The configuration for a new connection.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the certificate files; on error the previous configuration stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let config = build(&self.paths)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        Ok(())
    }
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificates in {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", path.display());
    Ok(certs)
}

fn build(paths: &TlsConfig) -> anyhow::Result<ServerConfig> {
    let certs = read_certs(&paths.cert)?;
    let key = PrivateKeyDer::from_pem_file(&paths.key)
        .with_context(|| format!("reading the private key {}", paths.key.display()))?;
    let mut roots = RootCertStore::empty();
    for ca in read_certs(&paths.client_ca)? {
        roots
            .add(ca)
            .with_context(|| format!("client CA in {}", paths.client_ca.display()))?;
    }
    let mut verifier = WebPkiClientVerifier::builder(Arc::new(roots));
    if let Some(path) = &paths.client_crl {
        let crls = CertificateRevocationListDer::pem_file_iter(path)
            .with_context(|| format!("reading revocation lists from {}", path.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("parsing revocation lists in {}", path.display()))?;
        anyhow::ensure!(!crls.is_empty(), "no revocation list in {}", path.display());
        // The adapters' certificates are checked; a certificate of a CA the lists do not
        // cover (another CA of the bundle) is not refused for that.
        verifier = verifier
            .with_crls(crls)
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status();
    }
    let verifier = verifier
        .build()
        .context("building the client certificate verifier")?;
    let mut config = ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .context("the server certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The SHA-256 fingerprint (lowercase hex) of a certificate: how the registry names an
/// adapter's certificate.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    // Computed for every call an adapter makes: one allocation, not one per byte.
    truc_edxml::Sha256Digest(Sha256::digest(cert.as_ref()).into()).to_hex()
}

/// The DNS subject alternative names of a (verified) certificate.
pub fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    webpki::EndEntityCert::try_from(cert)
        .map(|c| c.valid_dns_names().map(str::to_owned).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_is_the_lowercase_hex_sha256_of_the_certificate() {
        // The SHA-256 of "abc" (FIPS 180-2, appendix B.1): what `sha256sum` prints.
        let cert = CertificateDer::from(b"abc".to_vec());
        assert_eq!(
            fingerprint(&cert),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
