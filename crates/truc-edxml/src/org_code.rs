//! Unit codes (mã định danh cơ quan, QCVN 102:2016 and Amendment 1:2022).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a string is not a unit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum OrgCodeError {
    /// Nothing at all.
    #[error("empty")]
    Empty,
    /// Longer than the 35 characters Amendment 1:2022 allows.
    #[error("longer than 35 characters")]
    TooLong,
    /// A character outside letters, digits, `.`, `-` and `_`.
    #[error("only letters, digits, '.', '-' and '_' are allowed")]
    BadCharacter,
    /// Not dot-separated segments (`ABC`, `a..b`, `.x`).
    #[error("expected dot-separated parts such as 000.00.05.G04")]
    NoStructure,
    /// The 13-character form with a lower level set under an empty higher level
    /// (`000.05.00.G04`).
    #[error("a lower level is set under an empty higher level")]
    LevelGap,
}

/// The level of a unit in the standard 13-character code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum OrgLevel {
    /// A ministry, a province: `000.00.00.G04`.
    One = 1,
    /// A Tổng cục, Cục, Vụ, Sở: `000.00.05.G04`.
    Two = 2,
    /// A unit under level 2: `000.03.05.G04`.
    Three = 3,
    /// A unit under level 3: `001.03.05.G04`.
    Four = 4,
}

impl From<OrgLevel> for u8 {
    fn from(level: OrgLevel) -> u8 {
        level as u8
    }
}

impl TryFrom<u8> for OrgLevel {
    type Error = String;
    fn try_from(n: u8) -> Result<Self, String> {
        match n {
            1 => Ok(OrgLevel::One),
            2 => Ok(OrgLevel::Two),
            3 => Ok(OrgLevel::Three),
            4 => Ok(OrgLevel::Four),
            _ => Err(format!("unit level must be 1-4, not {n}")),
        }
    }
}

/// A unit code, validated.
///
/// Routing hinges on it: the relay derives a unit's level and parent from the standard
/// `V1V2V3.Z1Z2.Y1Y2.MX1X2` form, and for the free-form codes of Amendment 1:2022
/// (`H37.DN.001`, `vxp.saas.03`) defers to the unit registry. The code is kept exactly as
/// written, since it is compared with the registry and echoed back to other systems.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrgCode(String);

impl OrgCode {
    /// Parses and validates a unit code (surrounding whitespace is ignored).
    pub fn parse(s: &str) -> Result<Self, OrgCodeError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(OrgCodeError::Empty);
        }
        if s.chars().count() > 35 {
            return Err(OrgCodeError::TooLong);
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err(OrgCodeError::BadCharacter);
        }
        let parts = s.split('.');
        if s.split('.').count() < 2 || parts.clone().any(str::is_empty) {
            return Err(OrgCodeError::NoStructure);
        }
        if let Some(parts) = standard_parts(s) {
            let [v, z, y, _] = parts;
            let (v, z, y) = (v != "000", z != "00", y != "00");
            if (v && !z) || (z && !y) {
                return Err(OrgCodeError::LevelGap);
            }
        }
        Ok(OrgCode(s.to_owned()))
    }

    /// The code as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the code has the standard 13-character form.
    pub fn is_standard(&self) -> bool {
        standard_parts(&self.0).is_some()
    }

    /// The level, for standard codes; `None` for free-form codes (ask the registry).
    pub fn level(&self) -> Option<OrgLevel> {
        let [v, z, y, _] = standard_parts(&self.0)?;
        Some(if v != "000" {
            OrgLevel::Four
        } else if z != "00" {
            OrgLevel::Three
        } else if y != "00" {
            OrgLevel::Two
        } else {
            OrgLevel::One
        })
    }

    /// The parent unit, derived by zeroing the lowest non-zero part. `None` for a level-1
    /// code, and for free-form codes, whose parent comes from the registry.
    pub fn parent(&self) -> Option<OrgCode> {
        let [v, z, y, m] = standard_parts(&self.0)?;
        let parent = match self.level()? {
            OrgLevel::One => return None,
            OrgLevel::Two => format!("000.00.00.{m}"),
            OrgLevel::Three => format!("000.00.{y}.{m}"),
            OrgLevel::Four => format!("000.{z}.{y}.{m}"),
        };
        let _ = v;
        Some(OrgCode(parent))
    }

    /// The level-1 body (ministry, province) this standard code belongs to.
    pub fn top(&self) -> Option<OrgCode> {
        let [_, _, _, m] = standard_parts(&self.0)?;
        Some(OrgCode(format!("000.00.00.{m}")))
    }

    /// Whether `self` is `other` or one of its descendants, judged from standard codes.
    pub fn is_within(&self, other: &OrgCode) -> bool {
        let mut cur = Some(self.clone());
        while let Some(code) = cur {
            if &code == other {
                return true;
            }
            cur = code.parent();
        }
        false
    }
}

/// The four parts of a standard code, lowest level first, or `None` if not of that form.
fn standard_parts(s: &str) -> Option<[&str; 4]> {
    let b = s.as_bytes();
    if b.len() != 13 || b[3] != b'.' || b[6] != b'.' || b[9] != b'.' {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if !(digits(0..3) && digits(4..6) && digits(7..9) && digits(11..13)) {
        return None;
    }
    if !b[10].is_ascii_uppercase() {
        return None;
    }
    Some([&s[0..3], &s[4..6], &s[7..9], &s[10..13]])
}

impl fmt::Display for OrgCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for OrgCode {
    type Err = OrgCodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OrgCode::parse(s)
    }
}

impl TryFrom<String> for OrgCode {
    type Error = OrgCodeError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        OrgCode::parse(&s)
    }
}

impl From<OrgCode> for String {
    fn from(code: OrgCode) -> String {
        code.0
    }
}

impl AsRef<str> for OrgCode {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(s: &str) -> OrgCode {
        OrgCode::parse(s).expect(s)
    }

    #[test]
    fn levels_and_parents() {
        assert_eq!(code("000.00.00.G04").level(), Some(OrgLevel::One));
        assert_eq!(code("000.00.00.G04").parent(), None);
        assert_eq!(code("000.00.05.G04").level(), Some(OrgLevel::Two));
        assert_eq!(code("000.00.05.G04").parent(), Some(code("000.00.00.G04")));
        assert_eq!(code("000.03.05.G04").level(), Some(OrgLevel::Three));
        assert_eq!(code("000.03.05.G04").parent(), Some(code("000.00.05.G04")));
        assert_eq!(code("001.03.05.G04").level(), Some(OrgLevel::Four));
        assert_eq!(code("001.03.05.G04").parent(), Some(code("000.03.05.G04")));
        assert_eq!(code("001.03.05.G04").top(), Some(code("000.00.00.G04")));
        assert!(code("000.03.05.G04").is_within(&code("000.00.00.G04")));
        assert!(!code("000.03.05.G04").is_within(&code("000.00.00.G12")));
    }

    #[test]
    fn free_form_codes_are_accepted_without_a_derived_parent() {
        for s in ["H37.DN.001", "vxp.saas.03", "99.99.99.G21", "a.b"] {
            let c = code(s);
            assert!(!c.is_standard(), "{s}");
            assert_eq!(c.level(), None);
            assert_eq!(c.parent(), None);
        }
        assert!(OrgCode::parse("a.".repeat(17).trim_end_matches('.')).is_ok());
    }

    #[test]
    fn refuses_non_codes() {
        assert_eq!(OrgCode::parse(""), Err(OrgCodeError::Empty));
        assert_eq!(OrgCode::parse("ABC"), Err(OrgCodeError::NoStructure));
        assert_eq!(OrgCode::parse("a..b"), Err(OrgCodeError::NoStructure));
        assert_eq!(
            OrgCode::parse("000 .00.00.G04"),
            Err(OrgCodeError::BadCharacter)
        );
        assert_eq!(
            OrgCode::parse(&"a.b".repeat(12)),
            Err(OrgCodeError::TooLong)
        );
        assert_eq!(OrgCode::parse("000.05.00.G04"), Err(OrgCodeError::LevelGap));
        assert_eq!(OrgCode::parse("001.00.05.G04"), Err(OrgCodeError::LevelGap));
    }

    #[test]
    fn whitespace_around_is_ignored() {
        assert_eq!(code(" 000.00.05.G04\r\n").as_str(), "000.00.05.G04");
    }
}
