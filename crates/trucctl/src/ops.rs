//! Commands that talk to a running relay's admin API: status, units, queues, dead letters,
//! traces, overdue documents, statistics, the audit log, backups and the log level.

use std::path::PathBuf;

use clap::Subcommand;
use serde::Serialize;
use truc_admin::paths;
use truc_edxml::OrgCode;
use truc_relay::{Unit, UnitState};
use truc_store::{Delivery, Timestamp};

use crate::api::{Api, ApiArgs, ApiError};
use crate::Outcome;

/// A command against the admin API.
#[derive(Debug, Subcommand)]
pub enum OpsCommand {
    /// Overview: version, store, units, queues, national-axis link.
    Status,
    /// The unit registry of the running relay.
    #[command(subcommand)]
    Units(UnitsCommand),
    /// Queue depths per destination, with the age of the oldest delivery.
    Queues,
    /// Dead letters: deliveries that failed for good.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Everything about a document (DocumentId) or a message (id): deliveries, events,
    /// statuses.
    Trace {
        /// A message id (26 characters) or a DocumentId.
        id: String,
    },
    /// Documents past their due date without a "completed" (06) status.
    Overdue {
        /// Compare with this day instead of today in Vietnam (YYYY-MM-DD).
        #[arg(long)]
        today: Option<String>,
        /// Most documents listed.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Packages sent and received per unit over a period.
    Stats {
        /// Start (YYYY-MM-DD, midnight in Vietnam; default: the beginning).
        #[arg(long)]
        from: Option<String>,
        /// End, inclusive (YYYY-MM-DD; default: now).
        #[arg(long)]
        to: Option<String>,
        /// Only this unit (and the level-3 units it serves).
        #[arg(long)]
        unit: Option<String>,
    },
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Back up the running relay's store to a directory on its machine.
    Backup {
        /// The directory (absolute; absent or empty).
        dir: PathBuf,
    },
    /// Show or change the relay's log filter at run time.
    LogLevel {
        /// The new filter (`info`, `debug`, `trucd=debug,info`); omit to show it.
        level: Option<String>,
    },
}

/// `trucctl units ...`
#[derive(Debug, Subcommand)]
pub enum UnitsCommand {
    /// List units.
    List {
        /// Only units in this state (pending, active, suspended).
        #[arg(long)]
        state: Option<String>,
        /// Only the level-3 units under this level-2 unit.
        #[arg(long)]
        parent: Option<String>,
    },
    /// Show one unit.
    Show {
        /// Its code.
        code: String,
    },
    /// Register a new unit.
    Add {
        /// Its code (e.g. 000.00.21.G04).
        #[arg(long)]
        code: String,
        /// Its name.
        #[arg(long)]
        name: String,
        /// Its parent, for a code that does not say it.
        #[arg(long)]
        parent: Option<String>,
        /// SHA-256 fingerprint of its adapter's certificate (repeatable).
        #[arg(long = "fingerprint")]
        fingerprints: Vec<String>,
        /// A DNS name of its adapter's certificates (repeatable).
        #[arg(long = "dns-name")]
        names: Vec<String>,
        /// Register it as pending (deliveries held until it is activated).
        #[arg(long)]
        pending: bool,
    },
    /// Suspend a unit: its adapter is refused, its deliveries held.
    Suspend {
        /// Its code.
        code: String,
    },
    /// Activate a unit: held deliveries are released to its inbox.
    Activate {
        /// Its code.
        code: String,
    },
    /// Change the adapter certificates of a unit: add the new one, later remove the old.
    RotateCert {
        /// Its code.
        code: String,
        /// Fingerprint to accept (repeatable).
        #[arg(long = "add")]
        add: Vec<String>,
        /// Fingerprint to stop accepting (repeatable).
        #[arg(long = "remove")]
        remove: Vec<String>,
        /// DNS name to accept (repeatable).
        #[arg(long = "add-dns-name")]
        add_names: Vec<String>,
        /// DNS name to stop accepting (repeatable).
        #[arg(long = "remove-dns-name")]
        remove_names: Vec<String>,
    },
}

/// `trucctl dlq ...`
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters.
    List {
        /// Most listed.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one dead letter with its events.
    Show {
        /// The message id.
        message_id: String,
        /// The recipient's code.
        recipient: String,
    },
    /// Offer a dead letter again (attempts start over).
    Requeue {
        /// The message id.
        message_id: String,
        /// The recipient's code.
        recipient: String,
    },
    /// Give up on a dead letter for good (kept in the audit log with the reason).
    Drop {
        /// The message id.
        message_id: String,
        /// The recipient's code.
        recipient: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
}

/// `trucctl audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain of the audit log (exit 1 if it is broken).
    Verify,
    /// Show entries.
    Log {
        /// First entry (1-based).
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Most entries.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

/// Runs a command against the admin API.
pub fn run(args: &ApiArgs, cmd: OpsCommand) -> Outcome {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(e.into()),
    };
    let api = match Api::from_args(args) {
        Ok(a) => a,
        Err(crate::api::SettingsError::Unreadable(e)) => return Outcome::Failed(e),
        Err(crate::api::SettingsError::Invalid(e)) => return Outcome::Usage(e),
    };
    match runtime.block_on(execute(&api, args.json, cmd)) {
        Ok(true) => Outcome::Success,
        Ok(false) => Outcome::Refused,
        Err(ApiError::Refused {
            status,
            code,
            message,
        }) => {
            eprintln!("trucctl: {code}: {message} (HTTP {status})");
            Outcome::Refused
        }
        Err(ApiError::Transport(message)) => Outcome::Failed(anyhow::anyhow!(message)),
    }
}

fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("trucctl: {e}"),
    }
}

/// Runs one command; `Ok(false)` when the answer means "refused" (a broken audit chain).
async fn execute(api: &Api, json: bool, cmd: OpsCommand) -> Result<bool, ApiError> {
    match cmd {
        OpsCommand::Status => {
            let s: truc_admin::StatusReport = api.get(paths::STATUS, &[]).await?;
            if json {
                print_json(&s);
            } else {
                print_status(&s);
            }
        }
        OpsCommand::Units(cmd) => return units(api, json, cmd).await,
        OpsCommand::Queues => {
            let q: truc_admin::QueueList = api.get(paths::QUEUES, &[]).await?;
            if json {
                print_json(&q);
            } else {
                print_queues(&q.queues, q.now);
            }
        }
        OpsCommand::Dlq(cmd) => return dlq(api, json, cmd).await,
        OpsCommand::Trace { id } => {
            let t: truc_admin::TraceReport = api.get(paths::TRACE, &[("id", id)]).await?;
            if json {
                print_json(&t);
            } else {
                print_trace(&t);
            }
        }
        OpsCommand::Overdue { today, limit } => {
            let mut query = vec![("limit", limit.to_string())];
            if let Some(t) = today {
                query.push(("today", t));
            }
            let r: truc_admin::OverdueReport = api.get(paths::OVERDUE, &query).await?;
            if json {
                print_json(&r);
            } else {
                println!("{} overdue document(s) on {}", r.documents.len(), r.today);
                let rows = r
                    .documents
                    .iter()
                    .map(|d| {
                        vec![
                            d.due_date.to_string(),
                            d.message
                                .document_id
                                .as_ref()
                                .map(|i| i.to_string())
                                .unwrap_or_default(),
                            d.message.summary.subject.clone(),
                            join(&d.pending),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["due", "document", "subject", "waiting for 06 from"], rows)
                );
            }
        }
        OpsCommand::Stats { from, to, unit } => {
            let mut query = Vec::new();
            for (k, v) in [("from", from), ("to", to), ("unit", unit)] {
                if let Some(v) = v {
                    query.push((k, v));
                }
            }
            let r: truc_admin::StatsReport = api.get(paths::STATS, &query).await?;
            if json {
                print_json(&r);
            } else {
                print_stats(&r);
            }
        }
        OpsCommand::Audit(AuditCommand::Verify) => {
            let r: truc_store::AuditReport = api.get(paths::AUDIT_VERIFY, &[]).await?;
            if json {
                print_json(&r);
            }
            return Ok(match r.first_bad {
                None => {
                    if !json {
                        println!(
                            "audit log intact: {} entries, hash chain verified",
                            r.entries
                        );
                    }
                    true
                }
                Some(bad) => {
                    eprintln!(
                        "trucctl: AUDIT_BROKEN: the audit chain breaks at entry {bad} of {}: the log was altered; restore from a backup and investigate",
                        r.entries
                    );
                    false
                }
            });
        }
        OpsCommand::Audit(AuditCommand::Log { from, limit }) => {
            let page: truc_admin::AuditPage = api
                .get(
                    paths::AUDIT,
                    &[("from", from.to_string()), ("limit", limit.to_string())],
                )
                .await?;
            if json {
                print_json(&page);
            } else {
                let rows = page
                    .entries
                    .iter()
                    .map(|e| {
                        vec![
                            e.seq.to_string(),
                            time(e.at),
                            e.actor.clone(),
                            e.action.clone(),
                            e.target.clone(),
                            e.detail.clone(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["#", "at", "who", "action", "target", "detail"], rows)
                );
            }
        }
        OpsCommand::Backup { dir } => {
            let dir = if dir.is_absolute() {
                dir
            } else {
                std::env::current_dir().map(|d| d.join(&dir)).unwrap_or(dir)
            };
            // Links are made in seconds, but copies across file systems take as long as
            // the store's size needs.
            let r: truc_store::BackupReport = api
                .post_long(
                    paths::BACKUP,
                    &truc_admin::BackupRequest {
                        dir: dir.display().to_string(),
                    },
                    std::time::Duration::from_secs(6 * 3600),
                )
                .await?;
            if json {
                print_json(&r);
            } else {
                println!(
                    "backup written to {}: {} records, {} blob files, {} payload segments, {} bytes",
                    r.path.display(),
                    r.records,
                    r.blobs,
                    r.segments,
                    r.bytes
                );
            }
        }
        OpsCommand::LogLevel { level } => {
            let r: truc_admin::LogLevel = match level {
                Some(level) => {
                    api.put(paths::LOG_LEVEL, &truc_admin::LogLevel { level })
                        .await?
                }
                None => api.get(paths::LOG_LEVEL, &[]).await?,
            };
            if json {
                print_json(&r);
            } else {
                println!("log level: {}", r.level);
            }
        }
    }
    Ok(true)
}

async fn units(api: &Api, json: bool, cmd: UnitsCommand) -> Result<bool, ApiError> {
    let unit_path = |code: &str| paths::fill(paths::UNIT, &[("code", code)]);
    match cmd {
        UnitsCommand::List { state, parent } => {
            let mut query = Vec::new();
            if let Some(s) = state {
                query.push(("state", s));
            }
            if let Some(p) = parent {
                query.push(("parent", p));
            }
            let list: truc_admin::UnitList = api.get(paths::UNITS, &query).await?;
            if json {
                print_json(&list);
            } else {
                let rows = list
                    .units
                    .iter()
                    .map(|u| {
                        vec![
                            u.code.to_string(),
                            u.name.clone(),
                            u.state.as_str().into(),
                            u.certificates.len().to_string(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["code", "name", "state", "certificates"], rows)
                );
                println!("{} unit(s)", list.units.len());
            }
        }
        UnitsCommand::Show { code } => {
            let u: Unit = api.get(&unit_path(&code), &[]).await?;
            print_unit(json, &u);
        }
        UnitsCommand::Add {
            code,
            name,
            parent,
            fingerprints,
            names,
            pending,
        } => {
            let parse = |c: &str| {
                OrgCode::parse(c).map_err(|e| ApiError::Refused {
                    status: 400,
                    code: truc_admin::codes::BAD_REQUEST.into(),
                    message: format!("{c:?}: {e}"),
                })
            };
            let unit = Unit {
                code: parse(&code)?,
                name,
                parent: parent.as_deref().map(parse).transpose()?,
                state: if pending {
                    UnitState::Pending
                } else {
                    UnitState::Active
                },
                certificates: fingerprints,
                names,
                served_by: None,
            };
            let u: Unit = api.post(paths::UNITS, Some(&unit)).await?;
            print_unit(json, &u);
        }
        UnitsCommand::Suspend { code } => {
            let r: truc_admin::StateChange = api
                .post::<(), _>(&paths::fill(paths::UNIT_SUSPEND, &[("code", &code)]), None)
                .await?;
            print_state_change(json, &r);
        }
        UnitsCommand::Activate { code } => {
            let r: truc_admin::StateChange = api
                .post::<(), _>(&paths::fill(paths::UNIT_ACTIVATE, &[("code", &code)]), None)
                .await?;
            print_state_change(json, &r);
        }
        UnitsCommand::RotateCert {
            code,
            add,
            remove,
            add_names,
            remove_names,
        } => {
            let change = truc_admin::CertificateChange {
                add,
                remove,
                add_names,
                remove_names,
            };
            let u: Unit = api
                .post(
                    &paths::fill(paths::UNIT_CERTIFICATES, &[("code", &code)]),
                    Some(&change),
                )
                .await?;
            print_unit(json, &u);
        }
    }
    Ok(true)
}

async fn dlq(api: &Api, json: bool, cmd: DlqCommand) -> Result<bool, ApiError> {
    let fill = |template: &str, m: &str, r: &str| {
        paths::fill(template, &[("message_id", m), ("recipient", r)])
    };
    match cmd {
        DlqCommand::List { limit } => {
            let list: truc_admin::DeadLetterList = api
                .get(paths::DEAD_LETTERS, &[("limit", limit.to_string())])
                .await?;
            if json {
                print_json(&list);
            } else {
                let rows = list
                    .dead_letters
                    .iter()
                    .map(|d| {
                        vec![
                            d.delivery.key.message_id.to_string(),
                            d.delivery.key.recipient.to_string(),
                            d.message
                                .document_id
                                .as_ref()
                                .map(|i| i.to_string())
                                .unwrap_or_default(),
                            d.delivery.attempts.to_string(),
                            d.delivery.dead_reason.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &["message", "recipient", "document", "attempts", "reason"],
                        rows
                    )
                );
                println!("{} dead letter(s)", list.dead_letters.len());
            }
        }
        DlqCommand::Show {
            message_id,
            recipient,
        } => {
            let d: truc_admin::DeadLetterDetail = api
                .get(&fill(paths::DEAD_LETTER, &message_id, &recipient), &[])
                .await?;
            if json {
                print_json(&d);
            } else {
                print_delivery(&d.delivery);
                println!(
                    "  document:  {}",
                    d.message
                        .document_id
                        .as_ref()
                        .map(|i| i.to_string())
                        .unwrap_or_default()
                );
                println!("  sender:    {}", d.message.sender);
                println!("  subject:   {}", d.message.summary.subject);
                println!("  events:");
                for e in &d.events {
                    println!("    {}  {:?}  {}", time(e.at), e.kind, e.detail);
                }
            }
        }
        DlqCommand::Requeue {
            message_id,
            recipient,
        } => {
            let d: Delivery = api
                .post::<(), _>(
                    &fill(paths::DEAD_LETTER_REQUEUE, &message_id, &recipient),
                    None,
                )
                .await?;
            if json {
                print_json(&d);
            } else {
                println!("requeued: {} is {} again", d.key, d.state.as_str());
            }
        }
        DlqCommand::Drop {
            message_id,
            recipient,
            reason,
        } => {
            let d: Delivery = api
                .post(
                    &fill(paths::DEAD_LETTER_DROP, &message_id, &recipient),
                    Some(&truc_admin::DropRequest { reason }),
                )
                .await?;
            if json {
                print_json(&d);
            } else {
                println!("dropped: {} is {}", d.key, d.state.as_str());
            }
        }
    }
    Ok(true)
}

fn print_unit(json: bool, u: &Unit) {
    if json {
        print_json(u);
        return;
    }
    println!("{} {}", u.code, u.name);
    println!("  state:        {}", u.state.as_str());
    if let Some(p) = &u.parent {
        println!("  parent:       {p}");
    }
    for fp in &u.certificates {
        println!("  certificate:  {fp}");
    }
    for n in &u.names {
        println!("  dns name:     {n}");
    }
    if let Some(s) = &u.served_by {
        println!("  served by:    {s}");
    }
}

fn print_state_change(json: bool, r: &truc_admin::StateChange) {
    if json {
        print_json(r);
    } else {
        println!(
            "{} is {}; {} held deliveries released",
            r.unit.code,
            r.unit.state.as_str(),
            r.released
        );
    }
}

fn print_status(s: &truc_admin::StatusReport) {
    let uptime = Timestamp::now().since(s.started_at).as_secs();
    println!("trucd {} serving {}", s.version, s.ministry);
    println!(
        "  up {}h{:02}m (since {}), adapters on {}",
        uptime / 3600,
        uptime / 60 % 60,
        time(s.started_at),
        s.grpc_addr
    );
    println!(
        "  units: {} ({} active, {} pending, {} suspended); inbox streams open: {}",
        s.units.total, s.units.active, s.units.pending, s.units.suspended, s.inbox_connections
    );
    println!(
        "  store {}: {} on disk, {} dead letter(s), {} flushes",
        s.store_dir,
        bytes(s.store.disk_bytes),
        s.store.dead_letters,
        s.store.flushes
    );
    match &s.national_axis {
        Some(l) => println!(
            "  national axis {}: circuit {}{}",
            l.base_url,
            l.circuit,
            if l.credentials_rejected {
                " — CREDENTIALS REJECTED: check [upstream] system_id, secret and the clock"
            } else {
                ""
            }
        ),
        None => println!("  national axis: not configured"),
    }
    let queued: u64 = s.queues.iter().map(|q| q.ready + q.waiting).sum();
    println!(
        "  queued deliveries: {queued} in {} queue(s)",
        s.queues.len()
    );
}

fn print_queues(queues: &[truc_store::QueueDepth], now: Timestamp) {
    let rows = queues
        .iter()
        .map(|q| {
            vec![
                match &q.destination {
                    truc_store::Destination::Inbox(c) => c.to_string(),
                    truc_store::Destination::NationalAxis => "national axis".into(),
                },
                q.ready.to_string(),
                q.waiting.to_string(),
                q.claimed.to_string(),
                q.oldest
                    .map(|o| age(now.since(o).as_secs()))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["destination", "ready", "retry-wait", "claimed", "oldest"],
            rows
        )
    );
    if queues.is_empty() {
        println!("all queues are empty");
    }
}

fn print_delivery(d: &Delivery) {
    println!("{}", d.key);
    println!("  state:     {}", d.state.as_str());
    println!("  attempts:  {}", d.attempts);
    println!("  queued:    {}", time(d.queued_at));
    if let Some(r) = &d.dead_reason {
        println!("  reason:    {r}");
    }
    if let Some(e) = &d.last_error {
        println!("  last error: {e}");
    }
}

fn print_trace(t: &truc_admin::TraceReport) {
    println!("Trace of {}", t.id);
    for m in &t.trace.messages {
        println!(
            "  message {} ({}) from {} to {} — {}",
            m.id,
            m.kind.as_str(),
            m.sender,
            join(&m.recipients),
            m.summary.subject
        );
    }
    println!("Deliveries:");
    let rows = t
        .trace
        .deliveries
        .iter()
        .map(|d| {
            vec![
                d.key.message_id.to_string(),
                d.key.recipient.to_string(),
                d.state.as_str().into(),
                d.attempts.to_string(),
                d.upstream_doc_id.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["message", "recipient", "state", "attempts", "axis docId"],
            rows
        )
    );
    println!("Events:");
    for e in &t.trace.events {
        println!(
            "  {}  {:<13} {}{}",
            time(e.at),
            serde_json::to_value(e.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            e.recipient
                .as_ref()
                .map(|r| format!("{r} "))
                .unwrap_or_default(),
            e.detail
        );
    }
    // When each reporter says it happened; the relay's own arrival time when that differs.
    println!("Statuses:");
    for s in &t.trace.statuses {
        let reported = s.reported_at.unwrap_or(s.at);
        println!(
            "  {}  {} {} from {}{}",
            time(reported),
            s.code,
            s.code
                .known()
                .map(|k| k.name_en())
                .unwrap_or("(unknown code)"),
            s.from,
            if s.reported_at.is_some_and(|r| r.0 / 1000 != s.at.0 / 1000) {
                format!(" (recorded here {})", time(s.at))
            } else {
                String::new()
            }
        );
    }
}

fn print_stats(r: &truc_admin::StatsReport) {
    let (mut sent, mut received) = (0, 0);
    let rows = r
        .units
        .iter()
        .map(|u| {
            sent += u.documents_sent;
            received += u.documents_received;
            vec![
                u.unit.to_string(),
                u.documents_sent.to_string(),
                u.documents_received.to_string(),
                u.statuses_sent.to_string(),
                u.statuses_received.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "unit",
                "documents sent",
                "documents received",
                "statuses sent",
                "statuses received"
            ],
            rows
        )
    );
    println!(
        "{} sent, {} received between {} and {}",
        thousands(sent),
        thousands(received),
        time(r.from),
        time(r.to)
    );
}

fn join(codes: &[OrgCode]) -> String {
    codes
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `2,719`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

fn age(secs: u64) -> String {
    match secs {
        s if s >= 86_400 => format!("{}d{}h", s / 86_400, s / 3600 % 24),
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// A time in Vietnam (UTC+7), the ministry's clock.
fn time(t: Timestamp) -> String {
    let mut shown = t.in_vietnam().to_string();
    shown.replace_range(..10, &shown[..10].replace('/', "-"));
    shown
}

/// A plain-text table with columns as wide as their widest cell.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| -> String {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths.get(i).copied().unwrap_or(0) - cell.chars().count();
            out.push_str(cell);
            if i + 1 < cells.len() {
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(headers.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_numbers_read_well() {
        let t = table(
            &["unit", "sent"],
            vec![vec!["Cục Hàng hải".into(), "936".into()]],
        );
        assert_eq!(t, "UNIT          SENT\nCục Hàng hải  936\n");
        assert_eq!(thousands(2719), "2,719");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(12), "12");
        assert_eq!(time(Timestamp(1_795_280_400_000)), "2026-11-22 00:00:00");
        assert_eq!(age(3725), "1h02m");
    }
}
