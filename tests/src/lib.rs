#![forbid(unsafe_code)]
//! Cross-crate, black-box tests of the relay: they start a real `trucd` (in-process through
//! `trucd::run` on port 0, or as a process) and real adapters over real TLS sockets.
//! Shared helpers live here; the tests themselves are in `tests/tests/`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use truc_client::{Client, ClientTls};
use truc_edxml::OrgCode;
use truc_relay::{sample_transport_ministry, RegistryFile};

/// The sample packages: `../shared/samples` when it sits beside the checkout, else the copy
/// kept in `tests/fixtures/samples` so a lone clone still passes.
pub fn samples_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let shared = root.join("../shared/samples");
    if shared.join("expect.json").is_file() {
        shared
    } else {
        root.join("tests/fixtures/samples")
    }
}

/// A sample package's bytes.
pub fn sample(path: &str) -> Vec<u8> {
    std::fs::read(samples_dir().join(path)).unwrap_or_else(|e| panic!("sample {path}: {e}"))
}

/// A unit code.
pub fn code(s: &str) -> OrgCode {
    OrgCode::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Now on Vietnam's wall clock, as the units' systems stamp their statuses (timelines are
/// ordered by the stamps).
pub fn vietnam_now() -> truc_edxml::VietnamTime {
    truc_store::Timestamp::now().in_vietnam()
}

/// A test certificate authority, generated per test run (no private key is committed): the
/// daemon's own, as the demo uses.
pub use trucd::pki::{LocalCa as TestCa, LocalCert as TestCert};

/// Installs the rustls crypto provider once per test process, as `trucd`'s `main` does.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A relay running in this process over mutual TLS, with the generated registry of the
/// transport ministry, and adapters' certificates for some of its units.
pub struct TestRelay {
    /// Where it listens for adapters.
    pub addr: SocketAddr,
    /// Where its admin API listens (token: [`ADMIN_TOKEN`]).
    pub admin_addr: Option<SocketAddr>,
    /// Its working directory (store, certificates).
    pub dir: tempfile::TempDir,
    ca: TestCa,
    server_ca_pem: String,
    /// Certificates registered per unit.
    pub certs: Vec<(OrgCode, TestCert)>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    process: Option<std::process::Child>,
    engine: Option<std::sync::Arc<truc_relay::Relay>>,
}

/// Certificates, registry and configuration of a test relay, in a temporary directory.
struct Setup {
    dir: tempfile::TempDir,
    ca: TestCa,
    certs: Vec<(OrgCode, TestCert)>,
    config_text: String,
}

impl Setup {
    fn new(
        adapters: &[&str],
        adjust: impl FnOnce(&mut RegistryFile),
        extra_limits: &str,
    ) -> anyhow::Result<Self> {
        Self::for_ministry("000.00.00.G04", adapters, adjust, extra_limits, "")
    }

    fn for_ministry(
        ministry: &str,
        adapters: &[&str],
        adjust: impl FnOnce(&mut RegistryFile),
        extra_limits: &str,
        extra_config: &str,
    ) -> anyhow::Result<Self> {
        install_crypto();
        let dir = tempfile::tempdir()?;
        let ca = TestCa::new("truc test CA")?;
        let server = ca.issue("relay", &["localhost", "127.0.0.1"])?;
        write(dir.path(), "ca.pem", &ca.pem)?;
        // A revocation list that names nothing yet (see TestRelay::revoke).
        write(dir.path(), "crl.pem", &ca.revocation_list(1, &[])?)?;
        write(dir.path(), "server.pem", &server.cert)?;
        write(dir.path(), "server.key", &server.key)?;
        let ministry = code(ministry);
        let mut registry = sample_transport_ministry(&ministry);
        let mut certs = Vec::new();
        for unit in adapters {
            let cert = ca.issue(&format!("adapter {unit}"), &["adapter.example"])?;
            if let Some(u) = registry.units.iter_mut().find(|u| u.code.as_str() == *unit) {
                u.certificates.push(cert.fingerprint.clone());
            }
            certs.push((code(unit), cert));
        }
        adjust(&mut registry);
        write(dir.path(), "registry.toml", &registry.to_toml())?;
        // The size limit of the tests, unless the caller sets its own.
        let size_limit = if extra_limits.contains("max_package_bytes") {
            String::new()
        } else {
            format!("max_package_bytes = {}\n", 300 * 1024 * 1024)
        };
        // Short leases, so that what a test leaves claimed comes back soon, unless the
        // caller sets its own.
        let lease = if extra_limits.contains("lease_secs") {
            ""
        } else {
            "lease_secs = 5\n"
        };
        let config_text = format!(
            "ministry = \"{ministry}\"\nstore_dir = {:?}\nregistry_file = {:?}\n\n{extra_config}\n\n[[admin.tokens]]\nname = \"test\"\nsha256 = \"{}\"\n\n[tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\nclient_crl = {:?}\n\n[limits]\n{lease}{size_limit}{}\n",
            dir.path().join("store"),
            dir.path().join("registry.toml"),
            admin_token_sha256(),
            dir.path().join("server.pem"),
            dir.path().join("server.key"),
            dir.path().join("ca.pem"),
            dir.path().join("crl.pem"),
            extra_limits,
        );
        Ok(Setup {
            dir,
            ca,
            certs,
            config_text,
        })
    }
}

/// The `trucctl` binary beside this test binary, built on demand like [`trucd_binary`].
pub fn trucctl_binary() -> anyhow::Result<PathBuf> {
    workspace_binary("trucctl")
}

/// Starts `trucd serve` on a configuration (optionally under a shell prefix setting
/// resource limits); returns it with its gRPC and admin addresses once it reports them.
fn launch_trucd(
    config_path: &Path,
    shell_prefix: Option<&str>,
) -> anyhow::Result<(std::process::Child, SocketAddr, SocketAddr)> {
    use std::io::BufRead;
    let mut command = match shell_prefix {
        Some(prefix) => {
            let mut c = std::process::Command::new("sh");
            c.arg("-c")
                .arg(format!("{prefix}; exec \"$0\" \"$@\""))
                .arg(trucd_binary()?);
            c
        }
        None => std::process::Command::new(trucd_binary()?),
    };
    // The test's own TRUC_* variables (fault drill sizes...) are not settings.
    for (name, _) in std::env::vars() {
        if name.starts_with("TRUC_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .args(["serve", "--config"])
        .arg(config_path)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--log-format", "pretty", "--log-level", "info"])
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Some(at) = line.find("addr=") else {
                continue;
            };
            let addr = line[at + 5..]
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_owned();
            if line.contains("gRPC listener bound") {
                let _ = tx.send((true, addr));
            } else if line.contains("admin listener bound") {
                let _ = tx.send((false, addr));
            }
        }
    });
    let mut addr = None;
    let mut admin_addr = None;
    while addr.is_none() || admin_addr.is_none() {
        let (grpc, found) = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .map_err(|_| anyhow::anyhow!("trucd did not report its addresses"))?;
        let found: SocketAddr = found.parse()?;
        if grpc {
            addr = Some(found);
        } else {
            admin_addr = Some(found);
        }
    }
    match (addr, admin_addr) {
        (Some(a), Some(b)) => Ok((child, a, b)),
        _ => anyhow::bail!("no addresses"),
    }
}

/// A submission that sends its header and the first bytes of a package, then nothing, like
/// a stalled or slowloris client. Keep the sender to keep the call open; the handle answers
/// with the relay's verdict.
pub type StalledSubmission = (
    tokio::sync::mpsc::Sender<truc_client::proto::SubmitDocumentRequest>,
    tokio::task::JoinHandle<Result<tonic::Response<truc_client::Receipt>, tonic::Status>>,
);

/// The next delivery of `inbox`, within 20 s (a test that waits longer has failed).
pub async fn next_delivery(inbox: &mut truc_client::Inbox) -> truc_client::Delivery {
    tokio::time::timeout(std::time::Duration::from_secs(20), inbox.next())
        .await
        .expect("a delivery within 20 s")
        .expect("inbox")
        .expect("a delivery, not the end of the stream")
}

/// The relay's stable error code of a refusal (its `truc-error-code` metadata).
pub fn error_code(status: &tonic::Status) -> Option<&str> {
    status
        .metadata()
        .get("truc-error-code")
        .and_then(|v| v.to_str().ok())
}

/// Starts a [`StalledSubmission`] on an adapter's connection.
pub async fn stalled_submission(client: &Client) -> StalledSubmission {
    stalled_submission_of_size(client, 0).await
}

/// Like [`stalled_submission`], with a declared size (0: undeclared).
pub async fn stalled_submission_of_size(client: &Client, size: u64) -> StalledSubmission {
    use truc_client::proto::{submit_document_request::Part, SubmitDocumentRequest, SubmitHeader};
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut grpc = client.grpc();
    let call = tokio::spawn(async move {
        grpc.submit_document(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    for part in [
        Part::Header(SubmitHeader {
            size,
            ..SubmitHeader::default()
        }),
        Part::Chunk(bytes::Bytes::from_static(b"<?xml version=\"1.0\"?><edXML")),
    ] {
        let _ = tx.send(SubmitDocumentRequest { part: Some(part) }).await;
    }
    (tx, call)
}

/// The admin API token of every test relay.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Its SHA-256, as configured.
pub fn admin_token_sha256() -> String {
    Sha256::digest(ADMIN_TOKEN.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `trucd` binary beside this test binary (built by `cargo test --workspace`), built
/// on demand when only this package's tests are run.
pub fn trucd_binary() -> anyhow::Result<PathBuf> {
    workspace_binary("trucd")
}

/// A binary of the workspace (package and binary share the name) in the target directory
/// of this test, built when missing.
fn workspace_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let debug_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow::anyhow!("no target directory"))?;
    let bin = debug_dir.join(name);
    if !bin.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", name, "--bin", name])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()?;
        anyhow::ensure!(status.success(), "building {name} failed");
    }
    Ok(bin)
}

impl TestRelay {
    /// Starts a relay whose registry gives these level-2 units an adapter certificate.
    pub async fn start(adapters: &[&str]) -> anyhow::Result<Self> {
        Self::start_with(adapters, |_| {}).await
    }

    /// Same, letting the caller adjust the registry and config.
    pub async fn start_with(
        adapters: &[&str],
        adjust: impl FnOnce(&mut RegistryFile),
    ) -> anyhow::Result<Self> {
        Self::start_full(adapters, adjust, "").await
    }

    /// A relay of `ministry` (its generated registry), with extra top-level TOML
    /// (such as an `[upstream]` section, written as dotted keys).
    pub async fn start_ministry(
        ministry: &str,
        adapters: &[&str],
        extra_config: &str,
    ) -> anyhow::Result<Self> {
        Self::start_ministry_with(ministry, adapters, extra_config, "").await
    }

    /// Same, with extra `[limits]` settings too.
    pub async fn start_ministry_with(
        ministry: &str,
        adapters: &[&str],
        extra_config: &str,
        extra_limits: &str,
    ) -> anyhow::Result<Self> {
        let setup = Setup::for_ministry(ministry, adapters, |_| {}, extra_limits, extra_config)?;
        Self::start_setup(setup).await
    }

    /// Same, with extra `[limits]` settings (TOML lines).
    pub async fn start_full(
        adapters: &[&str],
        adjust: impl FnOnce(&mut RegistryFile),
        extra_limits: &str,
    ) -> anyhow::Result<Self> {
        let setup = Setup::new(adapters, adjust, extra_limits)?;
        Self::start_setup(setup).await
    }

    async fn start_setup(setup: Setup) -> anyhow::Result<Self> {
        let config = trucd::Config::from_toml(&setup.config_text)?;
        let listeners = trucd::Listeners {
            grpc: tokio::net::TcpListener::bind("127.0.0.1:0").await?,
            admin: Some(tokio::net::TcpListener::bind("127.0.0.1:0").await?),
        };
        let addr = listeners.grpc.local_addr()?;
        let admin_addr = listeners
            .admin
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let prepared = trucd::prepare(&config).await?;
        let engine = prepared.relay.clone();
        let task = tokio::spawn(trucd::serve(
            listeners,
            config,
            prepared,
            trucd::ServeOptions::default(),
            async {
                let _ = stopped.await;
            },
        ));
        let relay = TestRelay {
            addr,
            admin_addr,
            dir: setup.dir,
            server_ca_pem: setup.ca.pem.clone(),
            ca: setup.ca,
            certs: setup.certs,
            stop: Some(stop),
            task: Some(task),
            process: None,
            engine: Some(engine),
        };
        relay.wait_ready().await?;
        Ok(relay)
    }

    /// Starts the real `trucd` binary as a child process (killed when this is dropped).
    pub async fn spawn_process(adapters: &[&str]) -> anyhow::Result<Self> {
        Self::spawn_process_with(adapters, "").await
    }

    /// Same, with extra `[limits]` settings (TOML lines).
    pub async fn spawn_process_with(adapters: &[&str], extra_limits: &str) -> anyhow::Result<Self> {
        let setup = Setup::new(adapters, |_| {}, extra_limits)?;
        Self::spawn_setup(setup, None).await
    }

    /// Same, with extra top-level TOML (sections) and `[limits]` lines, started through `sh -c "PREFIX; exec
    /// trucd ..."` (resource limits such as `ulimit -f` for a disk that fills up).
    pub async fn spawn_process_under(
        adapters: &[&str],
        extra_config: &str,
        extra_limits: &str,
        shell_prefix: Option<&str>,
    ) -> anyhow::Result<Self> {
        let setup = Setup::for_ministry(
            "000.00.00.G04",
            adapters,
            |_| {},
            extra_limits,
            extra_config,
        )?;
        Self::spawn_setup(setup, shell_prefix).await
    }

    /// The real `trucd` binary as the relay of `ministry`, with extra top-level TOML (an
    /// `[upstream]` section as dotted keys, say).
    pub async fn spawn_ministry_process(
        ministry: &str,
        adapters: &[&str],
        extra_config: &str,
    ) -> anyhow::Result<Self> {
        let setup = Setup::for_ministry(ministry, adapters, |_| {}, "", extra_config)?;
        Self::spawn_setup(setup, None).await
    }

    async fn spawn_setup(setup: Setup, shell_prefix: Option<&str>) -> anyhow::Result<Self> {
        let config_path = setup.dir.path().join("trucd.toml");
        std::fs::write(&config_path, &setup.config_text)?;
        let (child, addr, admin_addr) = launch_trucd(&config_path, shell_prefix)?;
        let admin_addr = Some(admin_addr);
        let relay = TestRelay {
            addr,
            admin_addr,
            dir: setup.dir,
            server_ca_pem: setup.ca.pem.clone(),
            ca: setup.ca,
            certs: setup.certs,
            stop: None,
            task: None,
            process: Some(child),
            engine: None,
        };
        relay.wait_ready().await?;
        Ok(relay)
    }

    /// The engine of an in-process relay (its store, registry), for checks.
    pub fn engine(&self) -> Option<&std::sync::Arc<truc_relay::Relay>> {
        self.engine.as_ref()
    }

    /// Waits (up to `limit`) for a relay process to exit by itself; its status, or `None`
    /// if it is still running (or not a process).
    pub async fn wait_exit(
        &mut self,
        limit: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        let child = self.process.as_mut()?;
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        None
    }

    /// Starts a relay process again on its configuration and store, after it exited (or
    /// kills it first); its addresses change.
    pub async fn restart_process(&mut self) -> anyhow::Result<()> {
        if let Some(mut old) = self.process.take() {
            let _ = old.kill();
            let _ = old.wait();
        }
        let config = self.dir.path().join("trucd.toml");
        let (child, addr, admin) = launch_trucd(&config, None)?;
        self.process = Some(child);
        self.addr = addr;
        self.admin_addr = Some(admin);
        self.wait_ready().await
    }

    /// Sends a signal (`"TERM"`, `"INT"`, `"HUP"`) to a relay process.
    pub fn signal(&self, name: &str) -> anyhow::Result<()> {
        let pid = self.pid().ok_or_else(|| anyhow::anyhow!("not a process"))?;
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{name} {pid} failed");
        Ok(())
    }

    /// The sum of the relay's `/metrics` samples of `family` whose labels include every
    /// `name="value"` of `labels` (0 if there are none).
    pub async fn metric(&self, family: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
        let admin = self
            .admin_addr
            .ok_or_else(|| anyhow::anyhow!("this relay has no admin API"))?;
        let text = reqwest::get(format!("http://{admin}/metrics"))
            .await?
            .text()
            .await?;
        let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        Ok(text
            .lines()
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (name, rest) = series.split_once('{').unwrap_or((series, ""));
                (name == family && wanted.iter().all(|w| rest.contains(w.as_str())))
                    .then(|| value.parse::<f64>().ok())
                    .flatten()
            })
            .sum())
    }

    /// The process id of a relay started with [`spawn_process`](Self::spawn_process).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.id())
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        anyhow::bail!("the relay did not start listening")
    }

    /// The adapter client of a unit registered at start.
    pub async fn adapter(&self, unit: &str) -> anyhow::Result<Client> {
        let cert = self
            .certs
            .iter()
            .find(|(c, _)| c.as_str() == unit)
            .map(|(_, c)| c.clone())
            .ok_or_else(|| anyhow::anyhow!("no certificate for {unit}"))?;
        self.client_with(&cert).await
    }

    /// A client presenting `cert`.
    pub async fn client_with(&self, cert: &TestCert) -> anyhow::Result<Client> {
        self.client_trusting(cert, &self.server_ca_pem).await
    }

    /// A client presenting `cert` and trusting `ca_pem` for the relay's certificate.
    pub async fn client_trusting(&self, cert: &TestCert, ca_pem: &str) -> anyhow::Result<Client> {
        let tls = ClientTls {
            ca: ca_pem.to_owned().into_bytes(),
            cert: cert.cert.clone().into_bytes(),
            key: cert.key.clone().into_bytes(),
            domain: "localhost".into(),
        };
        Ok(Client::connect(
            &format!("https://localhost:{}", self.addr.port()),
            Some(tls),
        )
        .await?)
    }

    /// Writes a revocation list of the test CA naming `revoked` over the relay's (read at
    /// start and at each reload: SIGHUP for a process).
    pub fn revoke(&self, revoked: &[&TestCert]) -> anyhow::Result<()> {
        let crl = self.ca.revocation_list(2, revoked)?;
        std::fs::write(self.dir.path().join("crl.pem"), crl)?;
        Ok(())
    }

    /// The certificate registered for a unit at start.
    pub fn cert_of(&self, unit: &str) -> Option<TestCert> {
        self.certs
            .iter()
            .find(|(c, _)| c.as_str() == unit)
            .map(|(_, c)| c.clone())
    }

    /// A certificate from the adapters' CA with these DNS names.
    pub fn issue(&self, common_name: &str, names: &[&str]) -> anyhow::Result<TestCert> {
        Ok(self.ca.issue(common_name, names)?)
    }

    /// A certificate from the same CA that no unit registered.
    pub fn unregistered_cert(&self) -> anyhow::Result<TestCert> {
        Ok(self.ca.issue("stranger", &["stranger.example"])?)
    }

    /// Stops the relay gracefully and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    std::fs::write(dir.join(name), text)?;
    Ok(())
}
