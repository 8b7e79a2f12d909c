//! What the tests against an HTTPS simulator share: a test CA, the axis's certificate from
//! it, and the simulator served over TLS.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use truc_axis_sim::Simulator;

/// A CA and a certificate for `localhost` it signed (PEM).
pub struct AxisTls {
    /// The CA's certificate.
    pub ca_pem: String,
    /// The axis's certificate.
    pub cert_pem: String,
    /// Its key.
    pub key_pem: String,
}

/// A self-signed CA named `name`, and its key.
fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let pem = params.self_signed(&key).expect("ca").pem();
    (params, key, pem)
}

/// The certificate (PEM) of a CA named `name` that signs nothing here.
#[allow(dead_code)]
pub fn unrelated_ca_pem(name: &str) -> String {
    ca(name).2
}

/// A CA named `ca_name` and the axis's certificate from it.
pub fn axis_tls(ca_name: &str) -> AxisTls {
    let (params, key, ca_pem) = ca(ca_name);
    let issuer = Issuer::new(params, key);
    let server_key = KeyPair::generate().expect("key");
    let server = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&server_key, &issuer)
        .expect("cert");
    AxisTls {
        ca_pem,
        cert_pem: server.pem(),
        key_pem: server_key.serialize_pem(),
    }
}

/// Serves `sim` over HTTPS with `tls` on 127.0.0.1; its port, and what stops it when
/// dropped.
pub async fn serve_https(sim: Simulator, tls: &AxisTls) -> (u16, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (cert_pem, key_pem) = (tls.cert_pem.clone(), tls.key_pem.clone());
    tokio::spawn(async move {
        let _ = sim
            .serve_tls(listener, cert_pem.as_bytes(), key_pem.as_bytes(), async {
                let _ = stopped.await;
            })
            .await;
    });
    (port, stop)
}
