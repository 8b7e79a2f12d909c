//! Mutual TLS for the adapters' listener, reloadable without a restart.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use sha2::{Digest, Sha256};

use crate::config::TlsConfig;

/// How long a client certificate's check against the current CA and revocation lists
/// holds before the next call checks it again (it may have expired meanwhile).
const CHECK_HOLDS: Duration = Duration::from_secs(3600);

/// Client certificates checked at once, at most, before the record of them starts afresh.
const MOST_CHECKED: usize = 10_000;

/// One loaded configuration.
struct Loaded {
    config: Arc<ServerConfig>,
    /// The verifier of adapters' certificates it uses (the CA, the revocation lists).
    verifier: Arc<dyn ClientCertVerifier>,
    /// Counts the loads: a check made under an earlier one is made again.
    generation: u64,
}

/// The current TLS configuration; new connections use the latest one after a reload, and
/// connections opened before it have their certificate checked again at their next call
/// (a certificate revoked since, or no longer signed by the adapters' CA, is refused then).
#[derive(Clone)]
pub struct ReloadableTls {
    paths: TlsConfig,
    current: Arc<RwLock<Arc<Loaded>>>,
    /// Fingerprint → the load it was checked under, and when.
    checked: Arc<Mutex<HashMap<String, (u64, Instant)>>>,
}

impl std::fmt::Debug for ReloadableTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadableTls")
            .field("paths", &self.paths)
            .field("generation", &self.loaded().generation)
            .finish()
    }
}

impl ReloadableTls {
    /// Loads the certificates.
    pub fn load(paths: &TlsConfig) -> anyhow::Result<Self> {
        let (config, verifier) = build(paths)?;
        Ok(ReloadableTls {
            paths: paths.clone(),
            current: Arc::new(RwLock::new(Arc::new(Loaded {
                config: Arc::new(config),
                verifier,
                generation: 0,
            }))),
            checked: Arc::default(),
        })
    }

    fn loaded(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The configuration for a new connection.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.loaded().config.clone()
    }

    /// Re-reads the certificate files; on error the previous configuration stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let (config, verifier) = build(&self.paths)?;
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let generation = current.generation + 1;
        *current = Arc::new(Loaded {
            config: Arc::new(config),
            verifier,
            generation,
        });
        Ok(())
    }

    /// Checks a connection's client certificate chain (`fingerprint` names its first
    /// certificate) against the current CA and revocation lists, unless that was done
    /// under the current load less than an hour ago: what the handshake checked may no
    /// longer hold on a connection that has been open since. The reason if it is refused.
    pub fn recheck(&self, fingerprint: &str, chain: &[CertificateDer<'_>]) -> Result<(), String> {
        let loaded = self.loaded();
        {
            let checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((generation, at)) = checked.get(fingerprint) {
                if *generation == loaded.generation && at.elapsed() < CHECK_HOLDS {
                    return Ok(());
                }
            }
        }
        let (end_entity, intermediates) = chain
            .split_first()
            .ok_or_else(|| "no client certificate".to_owned())?;
        let verdict =
            loaded
                .verifier
                .verify_client_cert(end_entity, intermediates, UnixTime::now());
        let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        match verdict {
            Ok(_) => {
                if checked.len() >= MOST_CHECKED {
                    checked.clear();
                }
                checked.insert(fingerprint.to_owned(), (loaded.generation, Instant::now()));
                Ok(())
            }
            Err(e) => {
                checked.remove(fingerprint);
                Err(e.to_string())
            }
        }
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

fn build(paths: &TlsConfig) -> anyhow::Result<(ServerConfig, Arc<dyn ClientCertVerifier>)> {
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
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(certs, key)
        .context("the server certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((config, verifier))
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
