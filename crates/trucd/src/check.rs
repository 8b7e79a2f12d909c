//! `trucd check-config`: every path, certificate and address of a configuration, checked
//! before the daemon is started with it (at install time, after an edit, in CI of a
//! deployment).

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;
use crate::tls::ReloadableTls;

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub what: String,
    /// Passed.
    pub ok: bool,
    /// What was found, or what is wrong and what to do.
    pub detail: String,
}

fn check(what: &str, result: Result<String, String>) -> Check {
    match result {
        Ok(detail) => Check {
            what: what.into(),
            ok: true,
            detail,
        },
        Err(detail) => Check {
            what: what.into(),
            ok: false,
            detail,
        },
    }
}

/// Runs every check of `config` (nothing is changed; ports are bound and released).
pub async fn run(config: &Config) -> Vec<Check> {
    let mut out = vec![check("store_dir", store_dir(&config.store_dir))];
    if let Some(path) = &config.registry_file {
        out.push(check(
            "registry_file",
            crate::server::read_registry_file(&config.ministry, path)
                .map(|f| format!("{} units for {}", f.units.len(), f.ministry))
                .map_err(|e| format!("{e:#}")),
        ));
    }
    match (&config.tls, config.insecure_plaintext) {
        (Some(tls), false) => out.push(check(
            "tls",
            ReloadableTls::load(tls)
                .map(|_| {
                    format!(
                        "certificate {} with its key; adapters' CA {}",
                        tls.cert.display(),
                        tls.client_ca.display()
                    )
                })
                .map_err(|e| format!("{e:#}")),
        )),
        (None, true) => out.push(check(
            "tls",
            Ok("insecure_plaintext: development only, never expose this listener".into()),
        )),
        (Some(_), true) => out.push(check(
            "tls",
            Err("both [tls] and insecure_plaintext are set: choose one".into()),
        )),
        (None, false) => out.push(check(
            "tls",
            Err("no [tls] section (adapters are served over mutual TLS)".into()),
        )),
    }
    if let Some(up) = &config.upstream {
        out.push(check("upstream.base_url", base_url(&up.base_url)));
        if let Some(ca) = &up.ca_file {
            out.push(check("upstream.ca_file", certificates(ca)));
        }
        match (&up.client_cert, &up.client_key) {
            (Some(cert), Some(key)) => {
                out.push(check("upstream.client_cert", certificates(cert)));
                out.push(check("upstream.client_key", private_key(key)));
            }
            (None, None) => {}
            _ => out.push(check(
                "upstream.client_cert",
                Err("give both client_cert and client_key, or neither".into()),
            )),
        }
        out.push(check(
            "upstream.secret",
            if up.secret.trim().is_empty() {
                Err("empty: the axis operator gives each system a secret".into())
            } else {
                Ok("set".into())
            },
        ));
    }
    out.push(check("listen", bindable(config.listen).await));
    if config.admin.enabled {
        out.push(check("admin.listen", bindable(config.admin.listen).await));
        out.push(check(
            "admin.tokens",
            Ok(match config.admin.tokens.len() {
                0 => "none: /api/v1 refuses every call (health and metrics stay open)".into(),
                n => format!("{n} token(s)"),
            }),
        ));
    }
    out.push(check(
        "log_level",
        tracing_subscriber::EnvFilter::try_new(&config.log_level)
            .map(|_| config.log_level.clone())
            .map_err(|e| format!("{:?}: {e}", config.log_level)),
    ));
    out
}

fn store_dir(dir: &Path) -> Result<String, String> {
    let writable = |d: &Path| -> Result<(), String> {
        let probe = d.join(".trucd-check-config");
        std::fs::write(&probe, b"")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|e| format!("{} is not writable: {e}", d.display()))
    };
    if dir.is_dir() {
        writable(dir)?;
        if dir.join("truc-store.json").is_file() {
            Ok(format!("{}: an existing store", dir.display()))
        } else {
            Ok(format!("{}: a new store will be created", dir.display()))
        }
    } else if dir.exists() {
        Err(format!("{} exists and is not a directory", dir.display()))
    } else {
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !parent.is_dir() {
            return Err(format!(
                "neither {} nor its parent {} exist: create the parent",
                dir.display(),
                parent.display()
            ));
        }
        writable(parent)?;
        Ok(format!("{}: will be created", dir.display()))
    }
}

fn base_url(url: &str) -> Result<String, String> {
    match url.split_once("://") {
        Some(("https", rest)) if !rest.is_empty() => Ok(url.into()),
        Some(("http", rest)) if !rest.is_empty() => Ok(format!(
            "{url} (plain HTTP: only for a simulator or a test)"
        )),
        _ => Err(format!("{url:?} is not an https:// URL")),
    }
}

fn certificates(path: &Path) -> Result<String, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(format!(
        "{}: {} certificate(s)",
        path.display(),
        certs.len()
    ))
}

fn private_key(path: &Path) -> Result<String, String> {
    PrivateKeyDer::from_pem_file(path)
        .map(|_| format!("{}: a private key", path.display()))
        .map_err(|e| format!("{}: {e}", path.display()))
}

async fn bindable(addr: std::net::SocketAddr) -> Result<String, String> {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(_) => Ok(format!("{addr} is free")),
        Err(e) => Err(format!(
            "cannot listen on {addr}: {e} (another process, perhaps a running trucd, holds it)"
        )),
    }
}
