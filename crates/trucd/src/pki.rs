//! Certificates made on the spot, for the demo and the tests: a certificate authority and
//! the leaf certificates it signs (relay server, adapters). Production certificates come
//! from the ministry's own CA (see `docs/operations.md`).

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer,
    KeyIdMethod, KeyPair, RevokedCertParams, SerialNumber,
};
use sha2::{Digest, Sha256};

/// A certificate authority whose key lives only in memory.
pub struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM).
    pub pem: String,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa").finish_non_exhaustive()
    }
}

/// A certificate with its key (PEM) and its SHA-256 fingerprint.
#[derive(Debug, Clone)]
pub struct LocalCert {
    /// Certificate, PEM.
    pub cert: String,
    /// Private key, PEM.
    pub key: String,
    /// SHA-256 of the DER certificate, lowercase hex: what the registry stores.
    pub fingerprint: String,
    /// Its serial number (what a revocation list names).
    pub serial: Vec<u8>,
}

impl LocalCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Result<Self, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key)?;
        Ok(LocalCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A leaf certificate for `names` (DNS names or IP addresses).
    pub fn issue(&self, common_name: &str, names: &[&str]) -> Result<LocalCert, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        // Positive, 16 bytes of the new key's digest: unique to the certificate.
        let mut serial: Vec<u8> = Sha256::digest(key.public_key_pem())[..16].to_vec();
        serial[0] &= 0x7f;
        serial[0] |= 0x01;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(LocalCert {
            serial,
            fingerprint: Sha256::digest(cert.der().as_ref())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }

    /// A revocation list (PEM) of this CA naming `revoked` (number `number`: a later list
    /// has a larger one).
    pub fn revocation_list(
        &self,
        number: u64,
        revoked: &[&LocalCert],
    ) -> Result<String, rcgen::Error> {
        let params = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2026, 1, 1),
            next_update: rcgen::date_time_ymd(2100, 1, 1),
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|c| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&c.serial),
                    revocation_time: rcgen::date_time_ymd(2026, 1, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer)?.pem()
    }
}
