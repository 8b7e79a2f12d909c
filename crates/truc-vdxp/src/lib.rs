#![forbid(unsafe_code)]
//! The HTTP profile the relay speaks upward to the national document exchange axis (VDXP),
//! shared by the client (`truc-upstream`) and the project's simulator (`truc-axis-sim`).
//!
//! Every name of the profile lives in this crate, so a change of the live service is one
//! edit here. See `../shared/spec/national-axis.md` for the profile itself.
//!
//! Operation parameters travel as headers `XroadVnpt-<name>`; the sender also sends
//! `XroadVnpt-sign-header` (a JSON object of every parameter header sent),
//! `XroadVnpt-sign-header-key` (the parameter names joined with `;`),
//! `XroadVnpt-hash-header` (hex HMAC-SHA256 of the sign-header bytes with the system's
//! secret) and `XroadVnpt-version`. The secret itself is never sent.

use std::collections::BTreeMap;

mod answer;
pub use answer::{AnswerError, EdocAnswerReader};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use truc_edxml::CalendarDate;

/// Names of the operations (`{base}/{operation}`).
pub mod op {
    /// Send a package (multipart, file field [`super::FILE_FIELD`]).
    pub const SEND_EDOC: &str = "sendEdoc";
    /// Packages waiting for this system.
    pub const GET_RECEIVED_EDOC_LIST: &str = "getReceivedEdocList";
    /// One package, base64.
    pub const GET_EDOC: &str = "getEdoc";
    /// Acknowledge (or fail) a received package.
    pub const UPDATE_STATUS: &str = "updateStatus";
    /// What happened to a package this system sent.
    pub const GET_SENT_EDOC_LIST: &str = "getSentEdocList";
    /// The national directory.
    pub const GET_AGENCIES_LIST: &str = "getAgenciesList";
    /// Every operation.
    pub const ALL: [&str; 6] = [
        SEND_EDOC,
        GET_RECEIVED_EDOC_LIST,
        GET_EDOC,
        UPDATE_STATUS,
        GET_SENT_EDOC_LIST,
        GET_AGENCIES_LIST,
    ];
}

/// Names of the parameters.
pub mod param {
    /// This relay's system id (every call).
    pub const SYSTEM_ID: &str = "systemid";
    /// Call time, [`super::format_timestamp`] (every call).
    pub const TIMESTAMP: &str = "timestamp";
    /// Sender OrganId (sendEdoc).
    pub const FROM: &str = "from";
    /// JSON array of recipient OrganIds (sendEdoc, optional).
    pub const TO: &str = "to";
    /// `eDoc`.
    pub const SERVICE_TYPE: &str = "servicetype";
    /// `edoc` or `status`.
    pub const MESSAGE_TYPE: &str = "messagetype";
    /// Hex SHA-256 of the package (sendEdoc).
    pub const HASH_FILE: &str = "hash-file";
    /// The axis's transport id.
    pub const DOC_ID: &str = "docId";
    /// `done`, `fail` or `processing` (updateStatus).
    pub const STATUS: &str = "status";
}

/// Values of some parameters.
pub mod value {
    /// `servicetype` of documents and statuses.
    pub const SERVICE_EDOC: &str = "eDoc";
    /// `messagetype` of documents.
    pub const MESSAGE_EDOC: &str = "edoc";
    /// `messagetype` of status packages.
    pub const MESSAGE_STATUS: &str = "status";
    /// `updateStatus`: stored, remove it from the pending list.
    pub const STATUS_DONE: &str = "done";
    /// `updateStatus`: can never be delivered.
    pub const STATUS_FAIL: &str = "fail";
    /// `updateStatus`: being handled.
    pub const STATUS_PROCESSING: &str = "processing";
}

/// Prefix of every parameter header.
pub const HEADER_PREFIX: &str = "XroadVnpt-";
/// The signed JSON of the parameter headers.
pub const SIGN_HEADER: &str = "XroadVnpt-sign-header";
/// The parameter names, joined with `;`.
pub const SIGN_HEADER_KEY: &str = "XroadVnpt-sign-header-key";
/// Hex HMAC-SHA256 of the sign-header.
pub const HASH_HEADER: &str = "XroadVnpt-hash-header";
/// The profile version header.
pub const VERSION_HEADER: &str = "XroadVnpt-version";
/// The profile version.
pub const VERSION: &str = "3.0.201608";
/// The multipart field carrying the package in `sendEdoc`.
pub const FILE_FIELD: &str = "file_doc";
/// `ErrorCode` of success.
pub const OK_CODE: &str = "0";

/// The signing headers that are not parameters.
fn is_control(name: &str) -> bool {
    [SIGN_HEADER, SIGN_HEADER_KEY, HASH_HEADER, VERSION_HEADER]
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
}

/// Builds the headers of a call: one per parameter, then the signature headers.
pub fn sign(params: &[(&str, &str)], secret: &[u8]) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (format!("{HEADER_PREFIX}{k}"), (*v).to_owned()))
        .collect();
    let object: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let sign_header = serde_json::Value::Object(object).to_string();
    let keys = params.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(";");
    let hash = hmac_hex(secret, sign_header.as_bytes());
    headers.push((SIGN_HEADER.to_owned(), sign_header));
    headers.push((SIGN_HEADER_KEY.to_owned(), keys));
    headers.push((HASH_HEADER.to_owned(), hash));
    headers.push((VERSION_HEADER.to_owned(), VERSION.to_owned()));
    headers
}

/// Lowercase hex HMAC-SHA256.
pub fn hmac_hex(secret: &[u8], data: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(data);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why a signed call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A signing header is missing.
    #[error("missing header {0}")]
    Missing(&'static str),
    /// The sign-header is not a JSON object of strings.
    #[error("the sign-header is not a JSON object of strings")]
    BadSignHeader,
    /// The sign-header does not list exactly the parameter headers sent, with their values.
    #[error("the sign-header does not match the headers sent ({0})")]
    Mismatch(String),
    /// No such system.
    #[error("unknown system {0:?}")]
    UnknownSystem(String),
    /// The HMAC does not match: wrong secret, or altered headers.
    #[error("the signature does not match: wrong secret or altered headers")]
    BadSignature,
    /// The timestamp is unreadable or outside the allowed skew.
    #[error("timestamp {0:?} is missing, unreadable or too far from the server's clock")]
    Stale(String),
}

impl VerifyError {
    /// The profile's `ErrorCode` for this refusal (the simulator's catalogue).
    pub fn error_code(&self) -> &'static str {
        match self {
            VerifyError::Missing(_) | VerifyError::BadSignHeader | VerifyError::Mismatch(_) => {
                "AUTH_HEADERS"
            }
            VerifyError::UnknownSystem(_) => "AUTH_SYSTEM",
            VerifyError::BadSignature => "AUTH_SIGNATURE",
            VerifyError::Stale(_) => "AUTH_TIMESTAMP",
        }
    }
}

/// Checks a call's headers (name, value pairs as received): the sign-header lists exactly
/// the parameter headers present with the same values, its HMAC matches the system's
/// secret, and the timestamp is within `skew_secs` of `now_unix`. Returns the parameters
/// by name (without the prefix).
pub fn verify<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    secret_of: impl Fn(&str) -> Option<Vec<u8>>,
    now_unix: i64,
    skew_secs: i64,
) -> Result<BTreeMap<String, String>, VerifyError> {
    let mut params = BTreeMap::new();
    let mut sign_header = None;
    let mut hash = None;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(SIGN_HEADER) {
            sign_header = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case(HASH_HEADER) {
            hash = Some(value.to_owned());
        } else if is_control(name) {
            continue;
        } else if name.len() > HEADER_PREFIX.len()
            && name[..HEADER_PREFIX.len()].eq_ignore_ascii_case(HEADER_PREFIX)
        {
            params.insert(name[HEADER_PREFIX.len()..].to_owned(), value.to_owned());
        }
    }
    let sign_header = sign_header.ok_or(VerifyError::Missing(SIGN_HEADER))?;
    let hash = hash.ok_or(VerifyError::Missing(HASH_HEADER))?;
    let signed_original: BTreeMap<String, String> =
        serde_json::from_str(&sign_header).map_err(|_| VerifyError::BadSignHeader)?;
    // Header names are case-insensitive on the wire (HTTP/2 lowercases them): compare
    // lowercased, but name the parameters as the signer wrote them (`docId`).
    let signed: BTreeMap<String, String> = signed_original
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    let sent: BTreeMap<String, String> = params
        .iter()
        .map(|(k, v)| {
            (
                format!("{HEADER_PREFIX}{k}").to_ascii_lowercase(),
                v.clone(),
            )
        })
        .collect();
    if signed != sent {
        let missing: Vec<&String> = sent.keys().filter(|k| !signed.contains_key(*k)).collect();
        let extra: Vec<&String> = signed.keys().filter(|k| !sent.contains_key(*k)).collect();
        return Err(VerifyError::Mismatch(format!(
            "unsigned: {missing:?}, signed but absent or different: {extra:?}"
        )));
    }
    let params: BTreeMap<String, String> = signed_original
        .into_iter()
        .filter_map(|(k, v)| {
            let name = k.get(HEADER_PREFIX.len()..)?.to_owned();
            Some((name, v))
        })
        .collect();
    let system = params
        .get(param::SYSTEM_ID)
        .cloned()
        .ok_or(VerifyError::Missing("XroadVnpt-systemid"))?;
    let secret = secret_of(&system).ok_or_else(|| VerifyError::UnknownSystem(system.clone()))?;
    if !constant_time_eq(
        hmac_hex(&secret, sign_header.as_bytes()).as_bytes(),
        hash.to_ascii_lowercase().as_bytes(),
    ) {
        return Err(VerifyError::BadSignature);
    }
    let ts = params.get(param::TIMESTAMP).cloned().unwrap_or_default();
    match parse_timestamp(&ts) {
        Some(t) if (t - now_unix).abs() <= skew_secs => {}
        _ => return Err(VerifyError::Stale(ts)),
    }
    Ok(params)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The profile's timestamp, `ddMMyyyy'T'HHmmss+SSSS` (Java SimpleDateFormat: `SSSS` is the
/// millisecond, zero-padded to four digits), in UTC.
pub fn format_timestamp(unix_millis: i64) -> String {
    let secs = unix_millis.div_euclid(1000);
    let ms = unix_millis.rem_euclid(1000);
    let date = CalendarDate::from_unix_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{:02}{:02}{:04}T{:02}{:02}{:02}+{ms:04}",
        date.day,
        date.month,
        date.year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses [`format_timestamp`] back to Unix seconds.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20 || b[8] != b'T' || b[15] != b'+' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (d, m, y) = (num(0..2)?, num(2..4)?, num(4..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    num(16..20)?;
    if hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let date = CalendarDate::new(
        u16::try_from(y).ok()?,
        u8::try_from(m).ok()?,
        u8::try_from(d).ok()?,
    )?;
    Some(date.unix_days() * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// The envelope of every response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// `OK` or `FAIL`.
    pub status: String,
    /// `"0"` on success.
    #[serde(rename = "ErrorCode")]
    pub error_code: String,
    /// Human-readable.
    #[serde(rename = "ErrorDesc", default)]
    pub error_desc: String,
}

impl Envelope {
    /// Success.
    pub fn ok() -> Self {
        Envelope {
            status: "OK".into(),
            error_code: OK_CODE.into(),
            error_desc: String::new(),
        }
    }

    /// A refusal.
    pub fn fail(code: &str, desc: impl Into<String>) -> Self {
        Envelope {
            status: "FAIL".into(),
            error_code: code.into(),
            error_desc: desc.into(),
        }
    }

    /// Whether the call succeeded.
    pub fn is_ok(&self) -> bool {
        self.error_code == OK_CODE
    }
}

/// One entry of `getReceivedEdocList`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedItem {
    /// The axis's transport id.
    #[serde(rename = "docId")]
    pub doc_id: String,
    /// `eDoc`.
    #[serde(rename = "serviceType")]
    pub service_type: String,
    /// `edoc` or `status`.
    #[serde(rename = "messageType")]
    pub message_type: String,
    /// Sender OrganId.
    pub from: String,
    /// Recipient OrganIds.
    pub to: String,
    /// Transport status.
    pub status: String,
    /// Its description.
    #[serde(default)]
    pub status_desc: String,
    /// When it arrived.
    #[serde(default)]
    pub created_time: String,
    /// Last change.
    #[serde(default)]
    pub updated_time: String,
}

/// One recipient line of `getSentEdocList`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SentItem {
    /// The sender's transport id.
    pub sender_doc_id: String,
    /// The recipient's copy's transport id (empty if not delivered).
    pub receiver_doc_id: String,
    /// Sender OrganId.
    pub from_code: String,
    /// Recipient OrganId.
    pub to_code: String,
    /// Sending status.
    pub send_status: String,
    /// Its description.
    pub send_status_desc: String,
    /// Receiving status (`done`, `fail`, `processing`, `pending`).
    pub receive_status: String,
    /// Its description.
    pub receive_status_desc: String,
    /// When sent.
    pub sent_time: String,
    /// When received.
    pub received_time: String,
    /// Ký hiệu.
    pub notation: String,
    /// Trích yếu.
    pub title: String,
}

/// One body of the national directory (`getAgenciesList`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agency {
    /// Directory id.
    pub id: String,
    /// Parent's directory id.
    pub pid: String,
    /// OrganId.
    pub code: String,
    /// Name.
    pub name: String,
    /// Mail address.
    #[serde(default)]
    pub mail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_000_000; // 2026-11-18

    fn headers(h: &[(String, String)]) -> Vec<(&str, &str)> {
        h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    fn secret(system: &str) -> Option<Vec<u8>> {
        (system == "bogtvt").then(|| b"s3cret".to_vec())
    }

    #[test]
    fn signed_calls_verify_and_tampering_does_not() {
        let ts = format_timestamp(NOW * 1000 + 123);
        let h = sign(
            &[
                (param::SYSTEM_ID, "bogtvt"),
                (param::TIMESTAMP, &ts),
                (param::DOC_ID, "abc"),
            ],
            b"s3cret",
        );
        let params = verify(headers(&h), secret, NOW, 300).expect("valid");
        assert_eq!(params.get("docId").map(String::as_str), Some("abc"));
        // As received over HTTP/2: header names lowercased.
        let lower: Vec<(String, String)> = h
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        let params = verify(headers(&lower), secret, NOW, 300).expect("valid lowercased");
        assert_eq!(params.get("docId").map(String::as_str), Some("abc"));
        assert!(
            h.iter()
                .all(|(k, v)| !v.contains("s3cret") && !k.contains("s3cret")),
            "the secret is never sent"
        );

        // A changed value.
        let mut t = h.clone();
        t[2].1 = "other".into();
        assert!(matches!(
            verify(headers(&t), secret, NOW, 300),
            Err(VerifyError::Mismatch(_))
        ));
        // An extra unsigned parameter.
        let mut t = h.clone();
        t.push(("XroadVnpt-status".into(), "done".into()));
        assert!(matches!(
            verify(headers(&t), secret, NOW, 300),
            Err(VerifyError::Mismatch(_))
        ));
        // The wrong secret.
        let wrong = sign(
            &[(param::SYSTEM_ID, "bogtvt"), (param::TIMESTAMP, &ts)],
            b"guess",
        );
        assert_eq!(
            verify(headers(&wrong), secret, NOW, 300),
            Err(VerifyError::BadSignature)
        );
        // An unknown system.
        let other = sign(
            &[(param::SYSTEM_ID, "other"), (param::TIMESTAMP, &ts)],
            b"x",
        );
        assert!(matches!(
            verify(headers(&other), secret, NOW, 300),
            Err(VerifyError::UnknownSystem(_))
        ));
        // A stale timestamp.
        let old = format_timestamp((NOW - 600) * 1000);
        let stale = sign(
            &[(param::SYSTEM_ID, "bogtvt"), (param::TIMESTAMP, &old)],
            b"s3cret",
        );
        assert!(matches!(
            verify(headers(&stale), secret, NOW, 300),
            Err(VerifyError::Stale(_))
        ));
        assert_eq!(VerifyError::BadSignature.error_code(), "AUTH_SIGNATURE");
    }

    #[test]
    fn timestamps_round_trip_in_the_java_format() {
        let t = format_timestamp(1_795_000_000_123);
        assert_eq!(t, "18112026T110640+0123");
        assert_eq!(parse_timestamp(&t), Some(1_795_000_000));
        for bad in [
            "",
            "18112026 071320+0123",
            "18132026T071320+0123",
            "x8112026T071320+0123",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn envelopes_use_the_profile_field_names() {
        let json = serde_json::to_string(&Envelope::fail("AUTH_SIGNATURE", "bad")).expect("json");
        assert_eq!(
            json,
            r#"{"status":"FAIL","ErrorCode":"AUTH_SIGNATURE","ErrorDesc":"bad"}"#
        );
        assert!(Envelope::ok().is_ok());
    }
}
