//! `trucd demo`: the whole exchange in one process, on the embedded store.
//!
//! This relay serves the transport ministry with its generated registry (57 level-2 and
//! 226 level-3 units); a second relay serves a second ministry; a national-axis simulator
//! joins them over HTTP; adapters of a few units connect over mutual TLS. A realistic set
//! of documents flows (level-2 to level-2, to and from level-3 units, across the national
//! axis, a revocation) and every recipient answers with statuses 01 → 06. The demo prints
//! what happens, a summary, and leaves the relay running for `trucctl` until Ctrl-C.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use sha2::{Digest, Sha256};
use truc_axis_sim::{LocalSimulator, SystemConfig};
use truc_client::{Client, ClientTls};
use truc_edxml::{
    BusinessDocType, CalendarDate, DocumentBuilder, DocumentId, KnownStatus, OrgCode,
    StatusBuilder, StatusCode,
};
use truc_relay::{sample_transport_ministry, RegistryFile, Relay, Unit, UnitState};
use truc_store::Timestamp;

use crate::admin::vietnam_today;
use crate::pki::{LocalCa, LocalCert};
use crate::{Config, Listeners, ServeOptions};

/// Options of `trucd demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Where the stores and certificates go (default: a new temporary directory, removed
    /// when the demo stops).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The admin API's address (if taken, a free port is used instead).
    #[arg(long, default_value = "127.0.0.1:7480")]
    pub admin_listen: SocketAddr,
    /// Stop after printing the summary instead of running until Ctrl-C.
    #[arg(long)]
    pub exit_after_summary: bool,
    /// Show the relays' logs.
    #[arg(long)]
    pub verbose: bool,
}

/// The numbers of a demo run, for its test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoSummary {
    /// Documents submitted by adapters (both ministries).
    pub documents_sent: u64,
    /// Deliveries of documents expected at recipients.
    pub deliveries_expected: u64,
    /// Deliveries of documents acknowledged by recipients' adapters (distinct).
    pub deliveries_received: u64,
    /// Status packages the senders' adapters received (distinct).
    pub statuses_received: u64,
    /// Status packages expected back at senders.
    pub statuses_expected: u64,
    /// Deliveries received more than once (allowed: delivery is at least once).
    pub duplicates: u64,
    /// Documents of this ministry past due without a "completed" status.
    pub overdue: u64,
    /// The admin API of this ministry's relay.
    pub admin_url: String,
    /// A token for it.
    pub admin_token: String,
}

const MINISTRY_A: &str = "000.00.00.G04";
const MINISTRY_B: &str = "000.00.00.G12";

/// Level-2 units of ministry A with an adapter in the demo.
const A_ADAPTERS: &[&str] = &[
    "000.00.01.G04", // Văn phòng Bộ
    "000.00.05.G04", // Tổng cục Đường bộ Việt Nam
    "000.00.07.G04", // Cục Hàng hải Việt Nam
    "000.00.09.G04", // Cục Đăng kiểm Việt Nam
];
/// Level-2 units of ministry B with an adapter.
const B_ADAPTERS: &[&str] = &["000.00.01.G12", "000.00.07.G12"];

/// The second ministry's small registry.
fn ministry_b_registry() -> anyhow::Result<RegistryFile> {
    let unit = |code: &str, name: &str| -> anyhow::Result<Unit> {
        Ok(Unit {
            code: OrgCode::parse(code)?,
            name: name.into(),
            parent: None,
            state: UnitState::Active,
            certificates: Vec::new(),
            names: Vec::new(),
            served_by: None,
        })
    };
    let mut ministry = unit(MINISTRY_B, "Bộ Tài chính")?;
    ministry.served_by = Some(OrgCode::parse("000.00.01.G12")?);
    Ok(RegistryFile {
        ministry: OrgCode::parse(MINISTRY_B)?,
        units: vec![
            ministry,
            unit("000.00.01.G12", "Văn phòng Bộ Tài chính")?,
            unit("000.00.07.G12", "Tổng cục Thuế")?,
            unit("000.01.07.G12", "Cục Thuế thành phố Hà Nội")?,
            unit("000.02.07.G12", "Cục Thuế Thành phố Hồ Chí Minh")?,
        ],
    })
}

/// One planned document.
struct Planned {
    from: &'static str,
    to: &'static [&'static str],
    number: &'static str,
    notation: &'static str,
    subject: &'static str,
    /// Days from today to its due date (negative: already past).
    due_in_days: Option<i64>,
    /// Revokes the planned document at this index.
    revokes: Option<usize>,
    /// The last status its recipients send (06 unless the work is still going on).
    last_status: KnownStatus,
}

const PLAN: &[Planned] = &[
    Planned {
        from: "000.00.01.G04",
        to: &["000.00.05.G04", "000.00.07.G04", "000.00.09.G04"],
        number: "1520",
        notation: "BGTVT-VP",
        subject: "Về việc triển khai kế hoạch bảo đảm trật tự an toàn giao thông dịp Tết",
        due_in_days: Some(-2),
        revokes: None,
        last_status: KnownStatus::Completed,
    },
    Planned {
        from: "000.00.05.G04",
        to: &["000.01.05.G04", "000.02.05.G04"],
        number: "846",
        notation: "TCĐBVN-QLBTĐB",
        subject: "Về việc kiểm tra, xử lý cầu yếu trên quốc lộ",
        due_in_days: Some(-1),
        revokes: None,
        last_status: KnownStatus::InProgress,
    },
    Planned {
        from: "000.03.07.G04",
        to: &["000.00.01.G04"],
        number: "112",
        notation: "CVHH-PC",
        subject: "Báo cáo tình hình hoạt động hàng hải tháng 11",
        due_in_days: None,
        revokes: None,
        last_status: KnownStatus::Completed,
    },
    Planned {
        from: "000.00.09.G04",
        to: &["000.01.07.G12"],
        number: "2291",
        notation: "ĐKVN-TC",
        subject: "Đề nghị phối hợp cung cấp số liệu thu phí kiểm định năm 2026",
        due_in_days: Some(10),
        revokes: None,
        last_status: KnownStatus::Completed,
    },
    Planned {
        from: "000.00.01.G04",
        to: &["000.00.01.G12"],
        number: "1533",
        notation: "BGTVT-TC",
        subject: "Góp ý dự thảo Thông tư hướng dẫn quản lý phí sử dụng đường bộ",
        due_in_days: Some(15),
        revokes: None,
        last_status: KnownStatus::Assigned,
    },
    Planned {
        from: "000.00.07.G12",
        to: &["000.03.09.G04"],
        number: "5102",
        notation: "TCT-CS",
        subject: "Hướng dẫn thủ tục hoàn thuế giá trị gia tăng",
        due_in_days: None,
        revokes: None,
        last_status: KnownStatus::Completed,
    },
    Planned {
        from: "000.00.01.G04",
        to: &["000.00.05.G04"],
        number: "1541",
        notation: "BGTVT-VP",
        subject: "Về việc tổ chức hội nghị sơ kết (đã thu hồi)",
        due_in_days: None,
        revokes: None,
        last_status: KnownStatus::Arrived,
    },
    Planned {
        from: "000.00.01.G04",
        to: &["000.00.05.G04"],
        number: "1542",
        notation: "BGTVT-VP",
        subject: "Thu hồi Công văn số 1541/BGTVT-VP",
        due_in_days: None,
        revokes: Some(6),
        last_status: KnownStatus::RecallAgreed,
    },
];

/// The statuses a recipient sends for a document, in order (01 is the relay's, on ack).
fn answers(last: KnownStatus) -> Vec<KnownStatus> {
    use KnownStatus::*;
    match last {
        Arrived => Vec::new(),
        RecallAgreed | RecallRefused | Refused => vec![last],
        _ => [Accepted, Assigned, InProgress, Completed]
            .into_iter()
            .take_while(|s| s.code() <= last.code())
            .collect(),
    }
}

/// What the adapters saw.
#[derive(Default)]
struct Ledger {
    /// (message id, recipient) of documents acknowledged.
    received: BTreeSet<(String, String)>,
    /// (message id) of status packages received by senders.
    statuses: BTreeSet<String>,
    duplicates: u64,
}

/// A running relay of the demo.
struct DemoRelay {
    relay: Arc<Relay>,
    grpc: SocketAddr,
    admin: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

struct Pki {
    ca: LocalCa,
    dir: PathBuf,
}

impl Pki {
    fn write(&self, name: &str, text: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

#[allow(clippy::too_many_arguments)]
async fn start_relay(
    dir: &Path,
    pki: &Pki,
    ministry: &str,
    mut registry: RegistryFile,
    adapters: &[&str],
    axis: (&str, &str, &str),
    admin: Option<(SocketAddr, &str)>,
    log: Option<Arc<dyn crate::admin::LogControl>>,
    certs: &mut BTreeMap<String, LocalCert>,
) -> anyhow::Result<DemoRelay> {
    let server = pki.ca.issue("truc relay", &["localhost", "127.0.0.1"])?;
    let tag = ministry.replace('.', "-");
    let cert = pki.write(&format!("relay-{tag}.pem"), &server.cert)?;
    let key = pki.write(&format!("relay-{tag}.key"), &server.key)?;
    for code in adapters {
        let c = pki.ca.issue(&format!("adapter {code}"), &[])?;
        if let Some(u) = registry.units.iter_mut().find(|u| u.code.as_str() == *code) {
            u.certificates.push(c.fingerprint.clone());
        }
        certs.insert((*code).to_owned(), c);
    }
    let registry_path = dir.join(format!("registry-{tag}.toml"));
    std::fs::write(&registry_path, registry.to_toml())?;
    let (base, system, secret) = axis;
    let (admin_listen, token_sha) = match admin {
        Some((addr, sha)) => (
            addr.to_string(),
            format!("[[admin.tokens]]\nname = \"demo\"\nsha256 = \"{sha}\"\n"),
        ),
        None => ("127.0.0.1:0".into(), String::new()),
    };
    let text = format!(
        "ministry = \"{ministry}\"\nlisten = \"127.0.0.1:0\"\nstore_dir = {store:?}\nregistry_file = {registry:?}\n\n[tls]\ncert = {cert:?}\nkey = {key:?}\nclient_ca = {ca:?}\n\n[limits]\nretry_base_ms = 200\n\n[upstream]\nbase_url = \"{base}\"\nsystem_id = \"{system}\"\nsecret = \"{secret}\"\npoll_secs = 1\n\n[admin]\nenabled = {enabled}\nlisten = \"{admin_listen}\"\n{token_sha}",
        store = dir.join(format!("store-{tag}")),
        registry = registry_path,
        ca = pki.dir.join("ca.pem"),
        enabled = admin.is_some(),
    );
    let (config, _) = Config::layered(Some(&text), std::iter::empty())?;
    let listeners = match Listeners::bind(&config).await {
        Ok(l) => l,
        Err(_) if admin.is_some() => {
            // The usual admin port is taken (another trucd?): any free port will do.
            let mut fallback = config.clone();
            fallback.admin.listen = SocketAddr::from(([127, 0, 0, 1], 0));
            Listeners::bind(&fallback).await?
        }
        Err(e) => return Err(e),
    };
    let grpc = listeners.grpc.local_addr()?;
    let admin_addr = listeners
        .admin
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;
    let prepared = crate::prepare(&config).await?;
    let relay = prepared.relay.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(crate::serve(
        listeners,
        config,
        prepared,
        ServeOptions {
            log,
            lifecycle: None,
        },
        async {
            let _ = stopped.await;
        },
    ));
    Ok(DemoRelay {
        relay,
        grpc,
        admin: admin_addr.filter(|_| admin.is_some()),
        stop: Some(stop),
        task,
    })
}

async fn connect(relay: &DemoRelay, pki: &Pki, cert: &LocalCert) -> anyhow::Result<Client> {
    let tls = ClientTls {
        ca: pki.ca.pem.clone().into_bytes(),
        cert: cert.cert.clone().into_bytes(),
        key: cert.key.clone().into_bytes(),
        domain: "localhost".into(),
    };
    Ok(Client::connect(&format!("https://{}", relay.grpc), Some(tls)).await?)
}

fn unit_name(relays: &[&Relay], code: &str) -> String {
    let Ok(code) = OrgCode::parse(code) else {
        return code.to_owned();
    };
    relays
        .iter()
        .find_map(|r| r.registry().unit(&code))
        .map(|u| u.name)
        .unwrap_or_else(|| code.to_string())
}

/// Runs the demo; returns after the summary when `exit_after_summary`, else when
/// `shutdown` completes.
pub async fn run(
    args: DemoArgs,
    log: Option<Arc<dyn crate::admin::LogControl>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let summary = run_exchange(&args, log, shutdown).await?;
    if summary.lost() > 0 {
        anyhow::bail!("{} deliveries did not arrive", summary.lost());
    }
    Ok(())
}

impl DemoSummary {
    /// Deliveries and statuses that did not arrive.
    pub fn lost(&self) -> u64 {
        (self.deliveries_expected - self.deliveries_received.min(self.deliveries_expected))
            + (self.statuses_expected - self.statuses_received.min(self.statuses_expected))
    }
}

/// The demo's body, returning its numbers.
pub async fn run_exchange(
    args: &DemoArgs,
    log: Option<Arc<dyn crate::admin::LogControl>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<DemoSummary> {
    let started = Instant::now();
    let temp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            temp = tempfile::Builder::new().prefix("truc-demo-").tempdir()?;
            temp.path().to_owned()
        }
    };
    println!("truc demo: the document exchange of a ministry, in one process");
    println!("  working directory: {}", dir.display());

    // Certificates: one CA for both relays and all adapters.
    let pki = Pki {
        ca: LocalCa::new("truc demo CA")?,
        dir: dir.clone(),
    };
    pki.write("ca.pem", &pki.ca.pem)?;

    // The national axis: a simulator with one system per ministry.
    let axis = LocalSimulator::start(vec![
        SystemConfig {
            id: "bogtvt".into(),
            secret: "demo-secret-gtvt".into(),
            organs: vec![MINISTRY_A.into()],
            name: "Bộ Giao thông vận tải".into(),
        },
        SystemConfig {
            id: "botc".into(),
            secret: "demo-secret-tc".into(),
            organs: vec![MINISTRY_B.into()],
            name: "Bộ Tài chính".into(),
        },
    ])
    .await
    .context("starting the national-axis simulator")?;
    println!("  national axis (simulator): {}", axis.base_url);

    // The admin token of this ministry's relay, made fresh for each run.
    let token = random_token()?;
    let token_sha: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    let mut certs = BTreeMap::new();
    let registry_a = sample_transport_ministry(&OrgCode::parse(MINISTRY_A)?);
    let level2 = registry_a
        .units
        .iter()
        .filter(|u| u.code.level() == Some(truc_edxml::OrgLevel::Two))
        .count();
    let level3 = registry_a
        .units
        .iter()
        .filter(|u| u.code.level() == Some(truc_edxml::OrgLevel::Three))
        .count();
    let mut relay_a = start_relay(
        &dir,
        &pki,
        MINISTRY_A,
        registry_a,
        A_ADAPTERS,
        (&axis.base_url, "bogtvt", "demo-secret-gtvt"),
        Some((args.admin_listen, &token_sha)),
        log,
        &mut certs,
    )
    .await
    .context("starting this ministry's relay")?;
    let mut relay_b = start_relay(
        &dir,
        &pki,
        MINISTRY_B,
        ministry_b_registry()?,
        B_ADAPTERS,
        (&axis.base_url, "botc", "demo-secret-tc"),
        None,
        None,
        &mut certs,
    )
    .await
    .context("starting the second ministry's relay")?;
    let admin_url = relay_a
        .admin
        .map(|a| format!("http://{a}"))
        .unwrap_or_default();
    println!(
        "  relay of {MINISTRY_A} (Bộ Giao thông vận tải): gRPC {} · {level2} level-2 and {level3} level-3 units · admin {admin_url}",
        relay_a.grpc
    );
    println!(
        "  relay of {MINISTRY_B} (Bộ Tài chính): gRPC {}",
        relay_b.grpc
    );
    let engines = [relay_a.relay.as_ref(), relay_b.relay.as_ref()];
    let names: BTreeMap<String, String> = PLAN
        .iter()
        .flat_map(|p| std::iter::once(p.from).chain(p.to.iter().copied()))
        .chain(A_ADAPTERS.iter().copied())
        .chain(B_ADAPTERS.iter().copied())
        .map(|c| (c.to_owned(), unit_name(&engines, c)))
        .collect();

    // Adapters: each level-2 unit's inbox; recipients answer with statuses.
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let plan_by_doc: Arc<Mutex<BTreeMap<String, KnownStatus>>> = Arc::default();
    let mut adapters: BTreeMap<String, Client> = BTreeMap::new();
    let mut inbox_tasks = Vec::new();
    for (code, cert) in &certs {
        let relay = if code.ends_with("G04") {
            &relay_a
        } else {
            &relay_b
        };
        let client = connect(relay, &pki, cert)
            .await
            .with_context(|| format!("connecting the adapter of {code}"))?;
        adapters.insert(code.clone(), client.clone());
        inbox_tasks.push(tokio::spawn(adapter_loop(
            client,
            ledger.clone(),
            plan_by_doc.clone(),
            names.clone(),
        )));
    }
    println!("  adapters connected over mutual TLS: {}", certs.len());
    println!();

    // The documents.
    let today = vietnam_today(Timestamp::now());
    let mut ids: Vec<DocumentId> = Vec::new();
    let mut deliveries_expected = 0;
    let mut statuses_expected = 0;
    println!("Sending {} documents:", PLAN.len());
    for (i, p) in PLAN.iter().enumerate() {
        let to: Vec<OrgCode> =
            p.to.iter()
                .map(|c| OrgCode::parse(c))
                .collect::<Result<_, _>>()?;
        let mut builder =
            DocumentBuilder::new(OrgCode::parse(p.from)?, to, today, p.number, p.notation)
                .subject(p.subject);
        builder.due_date = p
            .due_in_days
            .map(|d| CalendarDate::from_unix_days(today.unix_days() + d));
        if let Some(target) = p.revokes {
            let target = ids
                .get(target)
                .cloned()
                .context("a revocation of a document not sent yet")?;
            builder = builder.affecting(BusinessDocType::Revoke, target);
        }
        let document_id = builder.effective_document_id();
        plan_by_doc
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .insert(document_id.to_string(), p.last_status);
        let package = builder.build();
        let adapter = adapter_for(p.from);
        let client = adapters
            .get_mut(adapter)
            .with_context(|| format!("no adapter for {}", p.from))?;
        let receipt = client.submit_document(&package, None).await?;
        let routes: Vec<&str> = receipt
            .routes
            .iter()
            .map(|r| match r.kind {
                1 => "local",
                2 => "via parent",
                3 => "national axis",
                4 => "held",
                _ => "?",
            })
            .collect();
        println!(
            "  [{}/{}] {}/{} {} → {}  ({})",
            i + 1,
            PLAN.len(),
            p.number,
            p.notation,
            names.get(p.from).map_or(p.from, String::as_str),
            p.to.iter()
                .map(|c| names.get(*c).map_or(*c, String::as_str))
                .collect::<Vec<_>>()
                .join(", "),
            routes.join(", ")
        );
        ids.push(document_id);
        deliveries_expected += p.to.len() as u64;
        let answered = answers(p.last_status).len() as u64;
        // Every recipient's answers reach the sender; so does the relay's 01 when the
        // document crossed the national axis (inside a ministry, 01 is recorded only).
        let crossed = p.to.iter().any(|t| ministry_of(t) != ministry_of(p.from));
        statuses_expected += p.to.len() as u64 * (answered + u64::from(crossed));
    }
    println!();
    println!("Waiting for deliveries and statuses (01 arrived → 06 completed)...");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last_report = Instant::now();
    loop {
        let (got, statuses) = {
            let l = ledger.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            (l.received.len() as u64, l.statuses.len() as u64)
        };
        if got >= deliveries_expected && statuses >= statuses_expected {
            break;
        }
        if Instant::now() > deadline {
            println!("  gave up waiting: {got}/{deliveries_expected} deliveries, {statuses}/{statuses_expected} statuses");
            break;
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            println!("  … {got}/{deliveries_expected} deliveries, {statuses}/{statuses_expected} statuses");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The summary.
    let (received, statuses, duplicates) = {
        let l = ledger.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        (
            l.received.len() as u64,
            l.statuses.len() as u64,
            l.duplicates,
        )
    };
    let store = relay_a.relay.store();
    let overdue = store.overdue(today, 100).await?;
    println!();
    println!("Summary for {MINISTRY_A} (from the relay's store):");
    let traffic = store
        .traffic(Timestamp(0), Timestamp::now().plus(Duration::from_secs(1)))
        .await?;
    println!(
        "  {:<15} {:<52} {:>5} {:>9} {:>9} {:>9}",
        "unit", "name", "sent", "received", "statuses", "statuses"
    );
    println!(
        "  {:<15} {:<52} {:>5} {:>9} {:>9} {:>9}",
        "", "", "docs", "docs", "sent", "received"
    );
    for t in &traffic {
        let name: String = unit_name(&engines, t.unit.as_str())
            .chars()
            .take(52)
            .collect();
        println!(
            "  {:<15} {:<52} {:>5} {:>9} {:>9} {:>9}",
            t.unit.as_str(),
            name,
            t.documents_sent,
            t.documents_received,
            t.statuses_sent,
            t.statuses_received
        );
    }
    let documents_sent = PLAN.len() as u64;
    println!();
    println!(
        "  documents sent: {documents_sent} · deliveries acknowledged: {received}/{deliveries_expected} · statuses back at senders: {statuses}/{statuses_expected} · duplicates: {duplicates} · overdue: {}",
        overdue.len()
    );
    for o in &overdue {
        println!(
            "  overdue: {} (due {}) waiting for 06 from {}",
            o.message
                .document_id
                .as_ref()
                .map(|d| d.to_string())
                .unwrap_or_default(),
            o.due_date,
            o.pending
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for index in [0usize, 3] {
        if let Some(id) = ids.get(index) {
            print_timeline(store.as_ref(), id, &names).await?;
        }
    }
    let summary = DemoSummary {
        documents_sent,
        deliveries_expected,
        deliveries_received: received,
        statuses_received: statuses,
        statuses_expected,
        duplicates,
        overdue: overdue.len() as u64,
        admin_url: admin_url.clone(),
        admin_token: token.clone(),
    };
    println!();
    println!(
        "demo: {} documents, {}/{} deliveries, {}/{} statuses, {} lost, in {:.1} s",
        summary.documents_sent,
        summary.deliveries_received,
        summary.deliveries_expected,
        summary.statuses_received,
        summary.statuses_expected,
        summary.lost(),
        started.elapsed().as_secs_f64()
    );

    if !args.exit_after_summary {
        println!();
        println!("The relay keeps running. In another terminal:");
        println!("  export TRUC_ADMIN_URL={admin_url} TRUC_ADMIN_TOKEN={token}");
        println!("  cargo run -p trucctl -- status");
        println!("  cargo run -p trucctl -- queues");
        println!("  cargo run -p trucctl -- units list --parent 000.00.05.G04");
        println!(
            "  cargo run -p trucctl -- trace '{}'",
            ids.first().map(|d| d.to_string()).unwrap_or_default()
        );
        println!("  cargo run -p trucctl -- overdue");
        println!("  cargo run -p trucctl -- stats --unit 000.00.01.G04");
        println!("  cargo run -p trucctl -- audit verify");
        println!("  curl {admin_url}/metrics");
        println!("Press Ctrl-C to stop.");
        shutdown.await;
    }
    for task in inbox_tasks {
        task.abort();
    }
    for relay in [&mut relay_a, &mut relay_b] {
        if let Some(stop) = relay.stop.take() {
            let _ = stop.send(());
        }
    }
    for relay in [relay_a, relay_b] {
        let _ = tokio::time::timeout(Duration::from_secs(15), relay.task).await;
    }
    drop(axis);
    Ok(summary)
}

/// A fresh admin token: 32 random bytes from the operating system, hex.
pub fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn ministry_of(code: &str) -> &str {
    code.rsplit('.').next().unwrap_or(code)
}

/// The level-2 unit whose adapter speaks for `code` (itself, or its parent for a level-3
/// unit: `000.03.07.G04` → `000.00.07.G04`).
fn adapter_for(code: &str) -> &'static str {
    let parts: Vec<&str> = code.split('.').collect();
    A_ADAPTERS
        .iter()
        .chain(B_ADAPTERS)
        .copied()
        .find(|a| {
            let ap: Vec<&str> = a.split('.').collect();
            ap.len() == 4 && parts.len() == 4 && ap[2] == parts[2] && ap[3] == parts[3]
        })
        .unwrap_or("")
}

async fn adapter_loop(
    mut client: Client,
    ledger: Arc<Mutex<Ledger>>,
    plan: Arc<Mutex<BTreeMap<String, KnownStatus>>>,
    names: BTreeMap<String, String>,
) {
    let sender = client.clone();
    let name = |c: &str| names.get(c).cloned().unwrap_or_else(|| c.to_owned());
    let result = client
        .run_inbox(64, |d| {
            let mut answer = Vec::new();
            if let Ok(mut l) = ledger.lock() {
                if d.kind == "status" {
                    if !l.statuses.insert(d.message_id.clone()) {
                        l.duplicates += 1;
                    } else {
                        let label = StatusCode::new(&d.status_code)
                            .known()
                            .map(|k| k.name_vi())
                            .unwrap_or("?");
                        println!(
                            "  ← status {} ({label}) from {} for {}",
                            d.status_code,
                            name(&d.sender),
                            d.document_id
                        );
                    }
                } else if !l
                    .received
                    .insert((d.message_id.clone(), d.recipient.clone()))
                {
                    l.duplicates += 1;
                } else {
                    println!("  ✓ {} received {}", name(&d.recipient), d.document_id);
                    let last = plan
                        .lock()
                        .ok()
                        .and_then(|p| p.get(&d.document_id).copied())
                        .unwrap_or(KnownStatus::Arrived);
                    answer = answers(last);
                }
            }
            let (recipient, document) = (d.recipient.clone(), d.document_id.clone());
            let mut sender = sender.clone();
            async move {
                if !answer.is_empty() {
                    // Answer in the background, like a clerk would, a moment later.
                    tokio::spawn(async move {
                        for status in answer {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            let Ok(from) = OrgCode::parse(&recipient) else {
                                return;
                            };
                            // Stamped with Vietnam's clock, as the units' systems do.
                            let stamp = Timestamp::now().in_vietnam();
                            let package = StatusBuilder::new(
                                from,
                                DocumentId::new(&document),
                                status.into(),
                                &stamp.to_string(),
                            )
                            .build();
                            if let Err(e) = sender.submit_status(&package, None).await {
                                eprintln!("  ! status {} from {recipient}: {e}", status.code());
                                return;
                            }
                        }
                    });
                }
                Ok::<(), std::convert::Infallible>(())
            }
        })
        .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "demo adapter stopped");
    }
}

async fn print_timeline(
    store: &dyn truc_store::Store,
    id: &DocumentId,
    names: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let trace = store.trace(id).await?;
    println!();
    println!("Timeline of {id}:");
    // The document's own journey, then the statuses its recipients sent back.
    let documents: BTreeSet<truc_store::MessageId> = trace
        .messages
        .iter()
        .filter(|m| m.kind == truc_edxml::PackageKind::Document)
        .map(|m| m.id)
        .collect();
    let start = trace.events.first().map(|e| e.at).unwrap_or_default();
    for e in trace
        .events
        .iter()
        .filter(|e| documents.contains(&e.message_id))
    {
        let kind = serde_json::to_value(e.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        println!(
            "  +{:>6} ms  {:<13} {}{}",
            e.at.0.saturating_sub(start.0),
            kind,
            e.recipient
                .as_ref()
                .map(|r| format!("{r} "))
                .unwrap_or_default(),
            e.detail
        );
    }
    for s in &trace.statuses {
        let label = s.code.known().map(|k| k.name_vi()).unwrap_or("?");
        println!(
            "  +{:>6} ms  status {}     {} ({label})",
            s.at.0.saturating_sub(start.0),
            s.code,
            names
                .get(s.from.as_str())
                .cloned()
                .unwrap_or_else(|| s.from.to_string()),
        );
    }
    Ok(())
}
