//! `trucctl doc`: inspect packages, and build test packages for adapter developers.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::PathBuf;

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use serde::Serialize;
use truc_edxml::{
    parse_reader, AttachmentSource, BusinessDocType, CalendarDate, DocumentBuilder, DocumentId,
    Limits, OrgCode, PackageMeta, ReadError, StatusBuilder, StatusCode, VietnamTime,
};

use crate::Outcome;

/// `trucctl doc ...`
#[derive(Debug, Subcommand)]
pub enum DocCommand {
    /// Print what the relay reads from each package: sender, recipients, ids, attachments.
    Inspect(InspectArgs),
    /// Build a document package from flags, to test an adapter or the relay.
    New(NewArgs),
    /// Build a status package (01 arrived ... 06 completed) answering a document.
    NewStatus(NewStatusArgs),
}

/// Arguments of `doc inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Package files to read.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// One JSON object per file on standard output, instead of a readable summary.
    #[arg(long)]
    json: bool,
}

/// Arguments of `doc new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// Sender unit code, e.g. 000.00.05.G04.
    #[arg(long, value_parser = parse_org)]
    from: OrgCode,
    /// Recipient unit code; repeat for several.
    #[arg(long, required = true, value_parser = parse_org)]
    to: Vec<OrgCode>,
    /// Subject (trích yếu).
    #[arg(long)]
    subject: String,
    /// Document number (số).
    #[arg(long, default_value = "1")]
    number: String,
    /// Document notation (ký hiệu), e.g. BGTVT-VP.
    #[arg(long, default_value = "TEST")]
    notation: String,
    /// Promulgation date, yyyy/MM/dd (default: today in Vietnam).
    #[arg(long, value_parser = parse_date)]
    date: Option<CalendarDate>,
    /// Processing deadline, yyyy/MM/dd.
    #[arg(long, value_parser = parse_date)]
    due: Option<CalendarDate>,
    /// Priority: 0 normal, 1 urgent, 2 very urgent, 3 hỏa tốc, 4 hỏa tốc hẹn giờ.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=4))]
    priority: u8,
    /// File to attach; repeat for several.
    #[arg(long = "attach")]
    attachments: Vec<PathBuf>,
    /// Revoke (1), update (2) or replace (3) the document with this DocumentId.
    #[arg(long, requires = "target", value_parser = clap::value_parser!(u8).range(1..=3))]
    business: Option<u8>,
    /// The DocumentId affected by --business.
    #[arg(long)]
    target: Option<String>,
    /// Write to this file instead of standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

/// Arguments of `doc new-status`.
#[derive(Debug, Args)]
pub struct NewStatusArgs {
    /// Unit reporting the status.
    #[arg(long, value_parser = parse_org)]
    from: OrgCode,
    /// DocumentId of the answered document.
    #[arg(long)]
    document_id: String,
    /// Status code: 01 arrived, 02 refused, 03 accepted, 04 assigned, 05 in progress,
    /// 06 completed, 13/15/16 recall.
    #[arg(long)]
    code: String,
    /// Timestamp, yyyy/MM/dd HH:mm:ss in Vietnam time (default: now).
    #[arg(long)]
    timestamp: Option<String>,
    /// Write to this file instead of standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

/// Runs a `doc` command.
pub fn run(cmd: DocCommand) -> Outcome {
    match cmd {
        DocCommand::Inspect(args) => inspect(args),
        DocCommand::New(args) => into_outcome(new_document(args)),
        DocCommand::NewStatus(args) => into_outcome(new_status(args)),
    }
}

fn into_outcome(result: anyhow::Result<()>) -> Outcome {
    match result {
        Ok(()) => Outcome::Success,
        Err(e) => Outcome::Failed(e),
    }
}

/// The JSON shape of `doc inspect --json`: flat, stable, for scripts.
#[derive(Debug, Serialize)]
struct InspectReport<'a> {
    file: String,
    kind: &'static str,
    from: &'a str,
    to: Vec<&'a str>,
    document_id: Option<&'a str>,
    business_doc_type: u8,
    priority: Option<u8>,
    due_date: Option<String>,
    subject: Option<&'a str>,
    status_code: Option<&'a str>,
    status_known: Option<bool>,
    attachments: AttachmentsReport<'a>,
    signature: bool,
    signer_subject: Option<&'a str>,
    sha256: String,
    size: u64,
    warnings: &'a [String],
}

#[derive(Debug, Serialize)]
struct AttachmentsReport<'a> {
    count: usize,
    total_bytes: u64,
    items: Vec<AttachmentReport<'a>>,
}

#[derive(Debug, Serialize)]
struct AttachmentReport<'a> {
    name: &'a str,
    content_type: &'a str,
    size: u64,
    sha256: Option<String>,
}

#[derive(Debug, Serialize)]
struct ErrorReport<'a> {
    file: String,
    error: ErrorBody<'a>,
}

#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: String,
}

impl<'a> InspectReport<'a> {
    fn new(file: String, meta: &'a PackageMeta) -> Self {
        let doc = meta.document();
        let status = meta.status();
        let attachments = doc.map(|d| d.attachments.as_slice()).unwrap_or_default();
        InspectReport {
            file,
            kind: meta.kind().as_str(),
            from: meta.from().as_str(),
            to: meta.recipients().map(OrgCode::as_str).collect(),
            document_id: meta.document_id().map(DocumentId::as_str),
            business_doc_type: meta.business_doc_type().code(),
            priority: doc.and_then(|d| d.priority),
            due_date: doc.and_then(|d| d.due_date).map(|d| d.to_string()),
            subject: doc.map(|d| d.subject.as_str()),
            status_code: status.map(|s| s.status_code.as_str()),
            status_known: status.map(|s| s.status_code.known().is_some()),
            attachments: AttachmentsReport {
                count: attachments.len(),
                total_bytes: meta.attachment_bytes(),
                items: attachments
                    .iter()
                    .map(|a| AttachmentReport {
                        name: &a.name,
                        content_type: &a.content_type,
                        size: a.size,
                        sha256: a.sha256.map(|d| d.to_hex()),
                    })
                    .collect(),
            },
            signature: meta.signature.is_some(),
            signer_subject: meta
                .signature
                .as_ref()
                .and_then(|s| s.signer_subject.as_deref()),
            sha256: meta.sha256.to_hex(),
            size: meta.size,
            warnings: &meta.warnings,
        }
    }
}

fn inspect(args: InspectArgs) -> Outcome {
    let mut refused = false;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for path in &args.files {
        let name = path.display().to_string();
        let result = File::open(path)
            .map_err(ReadError::Io)
            .and_then(|f| parse_reader(BufReader::new(f), &Limits::default()));
        let written = match result {
            Ok(meta) => {
                let report = InspectReport::new(name, &meta);
                if args.json {
                    serde_json::to_writer(&mut out, &report)
                        .map_err(std::io::Error::from)
                        .and_then(|()| writeln!(out))
                } else {
                    write_summary(&mut out, &report, &meta)
                }
            }
            Err(ReadError::Io(e)) => {
                return Outcome::Failed(anyhow!(e).context(format!("cannot read {name}")));
            }
            Err(ReadError::Invalid(e)) => {
                refused = true;
                eprintln!("{name}: {}: {e}", e.code());
                if args.json {
                    let report = ErrorReport {
                        file: name,
                        error: ErrorBody {
                            code: e.code(),
                            message: e.to_string(),
                        },
                    };
                    serde_json::to_writer(&mut out, &report)
                        .map_err(std::io::Error::from)
                        .and_then(|()| writeln!(out))
                } else {
                    Ok(())
                }
            }
        };
        if let Err(e) = written {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                break;
            }
            return Outcome::Failed(anyhow!(e).context("writing to standard output"));
        }
    }
    if refused {
        Outcome::Refused
    } else {
        Outcome::Success
    }
}

fn write_summary(
    out: &mut impl Write,
    r: &InspectReport<'_>,
    meta: &PackageMeta,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{}: {} package, {} bytes, sha256 {}",
        r.file, r.kind, r.size, r.sha256
    )?;
    if let Some(d) = meta.document() {
        writeln!(
            out,
            "  from        {}  {}",
            d.from.organ_id, d.from.organ_name
        )?;
        for (i, to) in d.to.iter().enumerate() {
            let label = if i == 0 { "to" } else { "" };
            writeln!(out, "  {label:<10}  {}  {}", to.organ_id, to.organ_name)?;
        }
        if let Some(id) = &d.document_id {
            writeln!(out, "  document    {id}")?;
        }
        writeln!(
            out,
            "  type        {} {}/{}{}",
            d.document_type_name,
            d.code_number,
            d.code_notation,
            d.promulgation_date
                .map(|p| format!(", promulgated {p}"))
                .unwrap_or_default()
        )?;
        writeln!(out, "  subject     {}", d.subject)?;
        let business = match d.business.doc_type {
            BusinessDocType::New => "new".to_owned(),
            other => format!(
                "{} of {}",
                match other {
                    BusinessDocType::Revoke => "revocation",
                    BusinessDocType::Update => "update",
                    _ => "replacement",
                },
                d.affected_document_id()
                    .map(DocumentId::as_str)
                    .unwrap_or("(unnamed document)")
            ),
        };
        writeln!(
            out,
            "  business    {} {business}",
            d.business.doc_type.code()
        )?;
        let priority = match d.priority {
            Some(0) | None => "normal",
            Some(1) => "urgent (khẩn)",
            Some(2) => "very urgent (thượng khẩn)",
            Some(3) => "hỏa tốc",
            Some(_) => "hỏa tốc hẹn giờ",
        };
        writeln!(
            out,
            "  priority    {priority}{}",
            d.due_date.map(|d| format!(", due {d}")).unwrap_or_default()
        )?;
        writeln!(
            out,
            "  attachments {}, {} bytes decoded",
            d.attachments.len(),
            meta.attachment_bytes()
        )?;
        for a in &d.attachments {
            writeln!(
                out,
                "    {}  {}  {} bytes  sha256 {}",
                a.name,
                a.content_type,
                a.size,
                a.sha256.map(|s| s.to_hex()).unwrap_or_default()
            )?;
        }
    }
    if let Some(s) = meta.status() {
        writeln!(
            out,
            "  from        {}  {}",
            s.from.organ_id, s.from.organ_name
        )?;
        let meaning = s
            .status_code
            .known()
            .map(|k| format!("{} ({})", k.name_vi(), k.name_en()))
            .unwrap_or_else(|| "not a code of QCVN 102".into());
        writeln!(out, "  status      {} {meaning}", s.status_code)?;
        if let Some(id) = &s.response_for.document_id {
            writeln!(out, "  answers     {id}")?;
        }
        writeln!(out, "  at          {}", s.timestamp)?;
    }
    let signature = match r.signer_subject {
        Some(subject) => format!("yes ({subject})"),
        None if r.signature => "yes".into(),
        None => "no".into(),
    };
    writeln!(out, "  signature   {signature}")?;
    for w in r.warnings {
        writeln!(out, "  warning     {w}")?;
    }
    Ok(())
}

fn parse_org(s: &str) -> Result<OrgCode, String> {
    OrgCode::parse(s).map_err(|e| format!("{s:?} is not a unit code: {e}"))
}

fn parse_date(s: &str) -> Result<CalendarDate, String> {
    CalendarDate::parse(s).ok_or_else(|| format!("{s:?} is not a yyyy/MM/dd date"))
}

/// Now on Vietnam's wall clock, the one edXML dates and timestamps are written in.
fn now_in_vietnam() -> VietnamTime {
    truc_store::Timestamp::now().in_vietnam()
}

fn write_output(bytes: &[u8], output: Option<PathBuf>) -> anyhow::Result<()> {
    match output {
        Some(path) => {
            std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))
        }
        None => std::io::stdout()
            .lock()
            .write_all(bytes)
            .context("writing to standard output"),
    }
}

fn new_document(args: NewArgs) -> anyhow::Result<()> {
    let promulgated = args.date.unwrap_or_else(|| now_in_vietnam().date);
    let mut builder = DocumentBuilder::new(
        args.from,
        args.to,
        promulgated,
        &args.number,
        &args.notation,
    )
    .subject(&args.subject);
    builder.priority = args.priority;
    builder.due_date = args.due;
    if let (Some(kind), Some(target)) = (args.business, &args.target) {
        let kind = BusinessDocType::try_from(kind).map_err(|e| anyhow!("--business: {e}"))?;
        builder = builder.affecting(kind, DocumentId::new(target));
    }
    for path in &args.attachments {
        let data =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "attachment".into());
        builder = builder.attachment(AttachmentSource::new(&name, data));
    }
    write_output(&builder.build(), args.output)
}

fn new_status(args: NewStatusArgs) -> anyhow::Result<()> {
    let timestamp = args
        .timestamp
        .unwrap_or_else(|| now_in_vietnam().to_string());
    let builder = StatusBuilder::new(
        args.from,
        DocumentId::new(&args.document_id),
        StatusCode::new(&args.code),
        &timestamp,
    );
    write_output(&builder.build(), args.output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_date_from_the_clock_is_plausible() {
        let now = now_in_vietnam();
        assert!(now.date.year >= 2024, "{now:?}");
        let time = now.to_string();
        assert!(time.starts_with(&now.date.to_string()));
        assert_eq!(time.len(), "2026/11/21 10:00:00".len());
    }
}
