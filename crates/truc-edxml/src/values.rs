//! Small typed values of edXML: dates, document ids, business types, status codes, digests.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::org_code::OrgCode;

/// A calendar date as edXML writes it (`yyyy/MM/dd`).
///
/// Kept as plain numbers so the relay can compare deadlines (`DueDate`) without a time zone
/// library; the wire form is preserved by `Display`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CalendarDate {
    /// Year, e.g. 2026.
    pub year: u16,
    /// Month, 1-12.
    pub month: u8,
    /// Day of the month, 1-31.
    pub day: u8,
}

impl CalendarDate {
    /// Builds a date, checking that it exists.
    pub fn new(year: u16, month: u8, day: u8) -> Option<Self> {
        let days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
            2 => 28,
            _ => return None,
        };
        (year >= 1 && (1..=days).contains(&day)).then_some(CalendarDate { year, month, day })
    }

    /// The date `days` days after 1970-01-01 (proleptic Gregorian calendar), so callers can
    /// turn a Unix time into a date without a time zone library.
    pub fn from_unix_days(days: i64) -> Self {
        // Howard Hinnant's days-to-civil algorithm.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (yoe + era * 400 + i64::from(month <= 2)).clamp(1, 9999) as u16;
        CalendarDate { year, month, day }
    }

    /// Days since 1970-01-01 (the inverse of [`from_unix_days`](Self::from_unix_days)).
    pub fn unix_days(&self) -> i64 {
        let (y, m, d) = (
            i64::from(self.year),
            i64::from(self.month),
            i64::from(self.day),
        );
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// Parses `yyyy/MM/dd`, also `yyyy-MM-dd` and `dd/MM/yyyy` as some producers write them.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let parts: Vec<&str> = s.split(['/', '-']).collect();
        let [a, b, c] = parts.as_slice() else {
            return None;
        };
        let num = |p: &str| -> Option<u16> {
            (!p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse().ok())
                .flatten()
        };
        let (y, m, d) = if a.len() == 4 {
            (num(a)?, num(b)?, num(c)?)
        } else if c.len() == 4 {
            (num(c)?, num(b)?, num(a)?)
        } else {
            return None;
        };
        CalendarDate::new(y, u8::try_from(m).ok()?, u8::try_from(d).ok()?)
    }
}

impl fmt::Display for CalendarDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}/{:02}/{:02}", self.year, self.month, self.day)
    }
}

impl TryFrom<String> for CalendarDate {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        CalendarDate::parse(&s).ok_or_else(|| format!("{s:?} is not a yyyy/MM/dd date"))
    }
}

impl From<CalendarDate> for String {
    fn from(d: CalendarDate) -> String {
        d.to_string()
    }
}

/// A wall-clock time in Vietnam (UTC+7, no daylight saving), as edXML writes `Timestamp`
/// (`yyyy/MM/dd HH:mm:ss`).
///
/// The ministries' systems stamp statuses and trace headers with their local clock and no
/// zone, so this is the one place that turns such a stamp into an instant and back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VietnamTime {
    /// The day, in Vietnam.
    pub date: CalendarDate,
    /// Seconds since midnight, in Vietnam (0..86,400).
    pub second_of_day: u32,
}

impl VietnamTime {
    /// Vietnam's offset from UTC, in seconds.
    pub const UTC_OFFSET_SECONDS: i64 = 7 * 3600;

    /// The time in Vietnam at `seconds` since the Unix epoch.
    pub fn from_unix_seconds(seconds: i64) -> Self {
        let local = seconds + Self::UTC_OFFSET_SECONDS;
        VietnamTime {
            date: CalendarDate::from_unix_days(local.div_euclid(86_400)),
            second_of_day: local.rem_euclid(86_400) as u32,
        }
    }

    /// Seconds since the Unix epoch (the inverse of
    /// [`from_unix_seconds`](Self::from_unix_seconds)).
    pub fn unix_seconds(&self) -> i64 {
        self.date.unix_days() * 86_400 + i64::from(self.second_of_day) - Self::UTC_OFFSET_SECONDS
    }

    /// Parses `yyyy/MM/dd HH:mm:ss` (Vietnam time), also with `-` in the date, a `T` before
    /// the time, no seconds, a fraction of a second (ignored), or an explicit zone (`Z`,
    /// `+07:00`, `+0700`) as some producers write them. `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let split = s.find([' ', 'T'])?;
        let date = CalendarDate::parse(&s[..split])?;
        let rest = s[split + 1..].trim_start();
        // An explicit zone: `Z`, or a sign after the time.
        let (clock, offset) = if let Some(clock) = rest.strip_suffix(['Z', 'z']) {
            (clock, Some(0))
        } else if let Some(at) = rest.rfind(['+', '-']) {
            (&rest[..at], Some(Self::parse_offset(&rest[at..])?))
        } else {
            (rest, None)
        };
        // `08:00:00 +07:00`: a space before the zone.
        let clock = clock.trim_end();
        let clock = clock.split_once('.').map_or(clock, |(whole, fraction)| {
            if fraction.bytes().all(|b| b.is_ascii_digit()) {
                whole
            } else {
                clock
            }
        });
        let mut parts = clock.split(':');
        let mut number = |max: u32| -> Option<u32> {
            let p = parts.next()?;
            (p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse().ok())
                .flatten()
                .filter(|n| *n <= max)
        };
        let (hours, minutes) = (number(23)?, number(59)?);
        let seconds = match parts.next() {
            None => 0,
            Some(p) if p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().ok().filter(|n: &u32| *n <= 59)?
            }
            Some(_) => return None,
        };
        if parts.next().is_some() {
            return None;
        }
        let written = VietnamTime {
            date,
            second_of_day: hours * 3600 + minutes * 60 + seconds,
        };
        Some(match offset {
            None => written,
            // The stamp is in another zone: the same instant, in Vietnam.
            Some(offset) => VietnamTime::from_unix_seconds(
                written.unix_seconds() + Self::UTC_OFFSET_SECONDS - offset,
            ),
        })
    }

    /// `+07:00`, `-0530`, `+07` as seconds east of UTC.
    fn parse_offset(s: &str) -> Option<i64> {
        let sign = match s.as_bytes().first()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let digits: String = s[1..].chars().filter(|c| *c != ':').collect();
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let (h, m) = match digits.len() {
            2 => (digits.parse::<i64>().ok()?, 0),
            4 => (
                digits[..2].parse::<i64>().ok()?,
                digits[2..].parse::<i64>().ok()?,
            ),
            _ => return None,
        };
        (h <= 14 && m <= 59).then_some(sign * (h * 3600 + m * 60))
    }
}

impl fmt::Display for VietnamTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.second_of_day;
        write!(
            f,
            "{} {:02}:{:02}:{:02}",
            self.date,
            s / 3600,
            s / 60 % 60,
            s % 60
        )
    }
}

/// A document identifier (mã định danh văn bản), kept exactly as written.
///
/// Deduplication and status routing key on it, so the raw string is the identity; the parsed
/// shape is a convenience. Both known shapes are recognised and any other is accepted as is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct DocumentId(String);

/// The recognised structure of a [`DocumentId`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentIdShape {
    /// `<issuer>,<yyyy/MM/dd>,<number>/<notation>`, as in the official SDK samples.
    Standard {
        /// The issuing unit.
        issuer: OrgCode,
        /// Promulgation date.
        date: CalendarDate,
        /// Số (CodeNumber).
        number: String,
        /// Ký hiệu (CodeNotation).
        notation: String,
    },
    /// `<issuer>,<yyyy>,<number>`, as in older samples.
    Legacy {
        /// The issuing unit.
        issuer: OrgCode,
        /// Year.
        year: u16,
        /// The number part as written.
        number: String,
    },
    /// Anything else: accepted, never a reason to refuse a package.
    Other,
}

impl DocumentId {
    /// Wraps a document id (surrounding whitespace removed).
    pub fn new(raw: &str) -> Self {
        DocumentId(raw.trim().to_owned())
    }

    /// The standard id of a document: `<issuer>,<yyyy/MM/dd>,<number>/<notation>`.
    pub fn standard(issuer: &OrgCode, date: CalendarDate, number: &str, notation: &str) -> Self {
        DocumentId(format!("{issuer},{date},{number}/{notation}"))
    }

    /// The id as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Recognises the shape of the id.
    pub fn shape(&self) -> DocumentIdShape {
        let mut parts = self.0.splitn(3, ',');
        let (Some(issuer), Some(date), Some(number)) = (parts.next(), parts.next(), parts.next())
        else {
            return DocumentIdShape::Other;
        };
        let Ok(issuer) = OrgCode::parse(issuer) else {
            return DocumentIdShape::Other;
        };
        let number = number.trim();
        if let Some(date) = CalendarDate::parse(date).filter(|_| date.trim().len() == 10) {
            if let Some((num, notation)) = number.split_once('/') {
                return DocumentIdShape::Standard {
                    issuer,
                    date,
                    number: num.to_owned(),
                    notation: notation.to_owned(),
                };
            }
            return DocumentIdShape::Other;
        }
        let year = date.trim();
        if year.len() == 4 && year.bytes().all(|b| b.is_ascii_digit()) && !number.is_empty() {
            if let Ok(year) = year.parse() {
                return DocumentIdShape::Legacy {
                    issuer,
                    year,
                    number: number.to_owned(),
                };
            }
        }
        DocumentIdShape::Other
    }

    /// The issuing unit, when the shape names one.
    pub fn issuer(&self) -> Option<OrgCode> {
        match self.shape() {
            DocumentIdShape::Standard { issuer, .. } | DocumentIdShape::Legacy { issuer, .. } => {
                Some(issuer)
            }
            DocumentIdShape::Other => None,
        }
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for DocumentId {
    fn from(s: String) -> Self {
        DocumentId::new(&s)
    }
}

impl From<DocumentId> for String {
    fn from(d: DocumentId) -> String {
        d.0
    }
}

/// What a document does to earlier ones (`Bussiness/BussinessDocType`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(into = "u8", try_from = "u8")]
pub enum BusinessDocType {
    /// 0: a new document.
    #[default]
    New = 0,
    /// 1: revokes (thu hồi) an earlier document.
    Revoke = 1,
    /// 2: updates an earlier document.
    Update = 2,
    /// 3: replaces an earlier document.
    Replace = 3,
}

impl BusinessDocType {
    /// The numeric code on the wire.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<BusinessDocType> for u8 {
    fn from(t: BusinessDocType) -> u8 {
        t as u8
    }
}

impl TryFrom<u8> for BusinessDocType {
    type Error = String;
    fn try_from(n: u8) -> Result<Self, String> {
        match n {
            0 => Ok(BusinessDocType::New),
            1 => Ok(BusinessDocType::Revoke),
            2 => Ok(BusinessDocType::Update),
            3 => Ok(BusinessDocType::Replace),
            _ => Err(format!("BussinessDocType must be 0-3, not {n}")),
        }
    }
}

/// The status codes the standard defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KnownStatus {
    /// 01 đã đến: arrived, not yet handled.
    Arrived,
    /// 02 từ chối tiếp nhận: refused.
    Refused,
    /// 03 đã tiếp nhận: accepted / registered.
    Accepted,
    /// 04 phân công: assigned for processing.
    Assigned,
    /// 05 đang xử lý: being processed.
    InProgress,
    /// 06 hoàn thành: completed.
    Completed,
    /// 13: the sender asks to recall.
    RecallRequested,
    /// 15: the recipient agrees to the recall, revocation or update.
    RecallAgreed,
    /// 16: the recipient refuses the recall, revocation or update.
    RecallRefused,
}

impl KnownStatus {
    /// Every known status, in code order.
    pub const ALL: [KnownStatus; 9] = [
        KnownStatus::Arrived,
        KnownStatus::Refused,
        KnownStatus::Accepted,
        KnownStatus::Assigned,
        KnownStatus::InProgress,
        KnownStatus::Completed,
        KnownStatus::RecallRequested,
        KnownStatus::RecallAgreed,
        KnownStatus::RecallRefused,
    ];

    /// The two-digit code.
    pub fn code(self) -> &'static str {
        match self {
            KnownStatus::Arrived => "01",
            KnownStatus::Refused => "02",
            KnownStatus::Accepted => "03",
            KnownStatus::Assigned => "04",
            KnownStatus::InProgress => "05",
            KnownStatus::Completed => "06",
            KnownStatus::RecallRequested => "13",
            KnownStatus::RecallAgreed => "15",
            KnownStatus::RecallRefused => "16",
        }
    }

    /// The Vietnamese name used in the documents of the standard.
    pub fn name_vi(self) -> &'static str {
        match self {
            KnownStatus::Arrived => "Đã đến",
            KnownStatus::Refused => "Từ chối tiếp nhận",
            KnownStatus::Accepted => "Đã tiếp nhận",
            KnownStatus::Assigned => "Phân công",
            KnownStatus::InProgress => "Đang xử lý",
            KnownStatus::Completed => "Hoàn thành",
            KnownStatus::RecallRequested => "Đề nghị thu hồi",
            KnownStatus::RecallAgreed => "Đồng ý thu hồi/cập nhật",
            KnownStatus::RecallRefused => "Từ chối thu hồi/cập nhật",
        }
    }

    /// An English name for logs and dashboards.
    pub fn name_en(self) -> &'static str {
        match self {
            KnownStatus::Arrived => "arrived",
            KnownStatus::Refused => "refused",
            KnownStatus::Accepted => "accepted",
            KnownStatus::Assigned => "assigned",
            KnownStatus::InProgress => "in progress",
            KnownStatus::Completed => "completed",
            KnownStatus::RecallRequested => "recall requested",
            KnownStatus::RecallAgreed => "recall agreed",
            KnownStatus::RecallRefused => "recall refused",
        }
    }
}

/// A status code as found in a status package: a known one, or any other value, kept.
///
/// Unknown codes are not refused (producers invent local ones); they are flagged so
/// operators can see them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct StatusCode(String);

impl StatusCode {
    /// Normalises a code: numbers get two digits (`3` → `03`), anything else is kept.
    pub fn new(raw: &str) -> Self {
        let raw = raw.trim();
        match raw.parse::<u8>() {
            Ok(n) if raw.len() <= 3 => StatusCode(format!("{n:02}")),
            _ => StatusCode(raw.to_owned()),
        }
    }

    /// The code, normalised.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The standard meaning, if this is one of the defined codes.
    pub fn known(&self) -> Option<KnownStatus> {
        KnownStatus::ALL.into_iter().find(|k| k.code() == self.0)
    }
}

impl From<KnownStatus> for StatusCode {
    fn from(k: KnownStatus) -> Self {
        StatusCode(k.code().to_owned())
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for StatusCode {
    fn from(s: String) -> Self {
        StatusCode::new(&s)
    }
}

impl From<StatusCode> for String {
    fn from(c: StatusCode) -> String {
        c.0
    }
}

/// A SHA-256 digest, shown and serialised as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        s
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(Sha256Digest(out))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest;
        Sha256Digest(sha2::Sha256::digest(bytes).into())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl From<Sha256Digest> for String {
    fn from(d: Sha256Digest) -> String {
        d.to_hex()
    }
}

impl TryFrom<String> for Sha256Digest {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Sha256Digest::from_hex(&s).ok_or_else(|| format!("{s:?} is not a SHA-256 hex digest"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vietnam_time_is_seven_hours_ahead_of_utc_and_round_trips() {
        // 2026-12-07T01:00:00Z is 08:00 in Hà Nội.
        let t = VietnamTime::from_unix_seconds(1_796_605_200);
        assert_eq!(t.to_string(), "2026/12/07 08:00:00");
        assert_eq!(t.unix_seconds(), 1_796_605_200);
        // Just before midnight UTC is the next morning in Vietnam.
        let t = VietnamTime::from_unix_seconds(1_796_601_599);
        assert_eq!(t.to_string(), "2026/12/07 06:59:59");
        for seconds in [0, 1, 25_199, 25_200, 86_399, 951_782_400, 1_796_605_200] {
            let t = VietnamTime::from_unix_seconds(seconds);
            assert_eq!(t.unix_seconds(), seconds);
            assert_eq!(VietnamTime::parse(&t.to_string()), Some(t));
        }
    }

    #[test]
    fn vietnam_time_reads_the_shapes_producers_write() {
        let eight = VietnamTime::parse("2026/12/07 08:00:00").expect("a stamp");
        assert_eq!(eight.unix_seconds(), 1_796_605_200);
        for same in [
            "2026-12-07 08:00:00",
            "2026-12-07T08:00:00",
            " 2026/12/07 08:00 ",
            "2026/12/07 08:00:00.250",
            "2026-12-07T01:00:00Z",
            "2026-12-07T08:00:00+07:00",
            "2026-12-07T08:00:00+0700",
            "2026/12/07 08:00:00 +07:00",
            "2026/12/07 01:00:00 Z",
            "2026-12-06T20:00:00-05:00",
            "07/12/2026 08:00:00",
        ] {
            assert_eq!(VietnamTime::parse(same), Some(eight), "{same}");
        }
        for bad in [
            "",
            "2026/12/07",
            "2026/12/07 24:00:00",
            "2026/12/07 08:60:00",
            "2026/12/07 08:00:61",
            "2026/02/30 08:00:00",
            "2026/12/07 8:00:00",
            "2026/12/07 08:00:00:00",
            "2026/12/07 08:00:00+99:00",
            "2026/12/07 08:00:00.x",
            "hôm nay 08:00",
        ] {
            assert_eq!(VietnamTime::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn unix_days_to_dates() {
        assert_eq!(
            CalendarDate::from_unix_days(0),
            CalendarDate::new(1970, 1, 1).expect("d")
        );
        assert_eq!(
            CalendarDate::from_unix_days(11_016),
            CalendarDate::new(2000, 2, 29).expect("d")
        );
        assert_eq!(
            CalendarDate::from_unix_days(20_778),
            CalendarDate::new(2026, 11, 21).expect("d")
        );
        assert_eq!(
            CalendarDate::from_unix_days(-1),
            CalendarDate::new(1969, 12, 31).expect("d")
        );
    }

    #[test]
    fn dates() {
        assert_eq!(
            CalendarDate::parse("2026/11/20"),
            CalendarDate::new(2026, 11, 20)
        );
        assert_eq!(
            CalendarDate::parse("2026-11-20"),
            CalendarDate::new(2026, 11, 20)
        );
        assert_eq!(
            CalendarDate::parse("20/11/2026"),
            CalendarDate::new(2026, 11, 20)
        );
        assert_eq!(CalendarDate::parse("2024/02/29").map(|d| d.day), Some(29));
        assert_eq!(CalendarDate::parse("2026/02/29"), None);
        assert_eq!(CalendarDate::parse("2026/13/01"), None);
        assert_eq!(CalendarDate::parse("soon"), None);
        assert_eq!(
            CalendarDate::parse("2026/1/5").map(|d| d.to_string()),
            Some("2026/01/05".into())
        );
    }

    #[test]
    fn document_id_shapes() {
        let id = DocumentId::new("000.00.00.G22,2015/09/30,7816/VPCP-TTĐT");
        assert_eq!(
            id.shape(),
            DocumentIdShape::Standard {
                issuer: OrgCode::parse("000.00.00.G22").expect("code"),
                date: CalendarDate::new(2015, 9, 30).expect("date"),
                number: "7816".into(),
                notation: "VPCP-TTĐT".into()
            }
        );
        let legacy = DocumentId::new("000.00.00.G22,2015,7816");
        assert!(matches!(
            legacy.shape(),
            DocumentIdShape::Legacy { year: 2015, .. }
        ));
        for other in ["", "abc", "x,y,z", "000.00.00.G22,2015/09/30,7816"] {
            assert_eq!(
                DocumentId::new(other).shape(),
                DocumentIdShape::Other,
                "{other}"
            );
        }
    }

    #[test]
    fn status_codes() {
        assert_eq!(StatusCode::new("3").as_str(), "03");
        assert_eq!(StatusCode::new("03").known(), Some(KnownStatus::Accepted));
        assert_eq!(
            StatusCode::new("16").known(),
            Some(KnownStatus::RecallRefused)
        );
        assert_eq!(StatusCode::new("07").known(), None);
        assert_eq!(StatusCode::new("xx").as_str(), "xx");
    }

    #[test]
    fn digest_hex_round_trip() {
        let d = Sha256Digest::of(b"abc");
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Sha256Digest::from_hex(&d.to_hex()), Some(d));
        assert_eq!(Sha256Digest::from_hex("zz"), None);
    }
}
