//! Reading a `getEdoc` answer as it arrives.
//!
//! The answer is one JSON object: the envelope (`status`, `ErrorCode`, `ErrorDesc`) and
//! `data`, the whole package in base64. A package may be hundreds of megabytes, so the
//! answer is read piece by piece: `data` is decoded as its characters arrive and handed on,
//! and only the (small) other members are kept. Memory stays that of one piece, whatever the
//! package's size.

use serde::Deserialize;

use crate::Envelope;

/// Most bytes the members other than `data` may take together: they are the envelope.
const MAX_OTHER_MEMBERS: usize = 64 * 1024;

/// Why an answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// Not the JSON object of the profile.
    #[error("the answer is not a JSON object of the profile: {0}")]
    Json(String),
    /// `data` is not base64.
    #[error("the package in the answer is not base64: {0}")]
    Base64(String),
}

/// Where the reader is in the answer's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before `{`.
    Start,
    /// Before a member's name (or `}`).
    BeforeKey { first: bool },
    /// In a member's name.
    Key { escaped: bool },
    /// Between a name and `:`.
    AfterKey,
    /// Before a member's value.
    BeforeValue,
    /// In `data`'s string.
    Data,
    /// After a backslash in `data`.
    DataEscape,
    /// In a `\uXXXX` escape in `data`: the digits read so far and their value.
    DataUnicode { digits: u8, value: u32 },
    /// In another member's value: nesting depth, and whether in a string (and just after
    /// a backslash in it).
    Other {
        depth: u32,
        in_string: bool,
        escaped: bool,
    },
    /// After a value: `,` or `}`.
    AfterValue,
    /// After the closing `}`: only white space.
    End,
}

/// Reads a `getEdoc` answer piece by piece: [`feed`](Self::feed) each piece of the body,
/// receiving the package's bytes decoded so far, then [`finish`](Self::finish) for the
/// envelope.
#[derive(Debug)]
pub struct EdocAnswerReader {
    state: State,
    /// The current member's name, as written.
    key: Vec<u8>,
    /// The members other than `data`, as a JSON object's text without its braces.
    others: Vec<u8>,
    /// Base64 characters not yet decoded (fewer than four after each piece).
    pending: Vec<u8>,
    /// `data` was seen (as a string).
    data_seen: bool,
    /// `data` members seen, whatever their value (a second one is refused).
    data_members: u8,
    /// A quad with `=` was decoded: `data` must end there.
    padded: bool,
    /// Decoded bytes handed on so far.
    decoded: u64,
}

impl Default for EdocAnswerReader {
    fn default() -> Self {
        Self::new()
    }
}

impl EdocAnswerReader {
    /// A reader at the start of an answer.
    pub fn new() -> Self {
        EdocAnswerReader {
            state: State::Start,
            key: Vec::new(),
            others: Vec::new(),
            pending: Vec::new(),
            data_seen: false,
            data_members: 0,
            padded: false,
            decoded: 0,
        }
    }

    /// Package bytes decoded so far.
    pub fn decoded(&self) -> u64 {
        self.decoded
    }

    /// Reads the next piece of the answer, appending the package bytes it completes to
    /// `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), AnswerError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Data => {
                    // The bulk of the answer: a run of base64 up to a quote or a backslash.
                    let rest = &input[i..];
                    let run = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
                    self.pending.extend_from_slice(&rest[..run]);
                    i += run;
                    if let Some(&end) = input.get(i) {
                        self.state = if end == b'"' {
                            State::AfterValue
                        } else {
                            State::DataEscape
                        };
                        i += 1;
                    }
                    self.decode_pending(out)?;
                    continue;
                }
                State::DataEscape => {
                    self.state = State::Data;
                    match b {
                        b'/' => self.pending.push(b'/'),
                        // Line breaks some encoders put in long base64.
                        b'n' | b'r' | b't' => {}
                        b'u' => {
                            self.state = State::DataUnicode {
                                digits: 0,
                                value: 0,
                            }
                        }
                        _ => {
                            return Err(AnswerError::Base64(format!(
                                "the escape \\{} in data",
                                char::from(b).escape_default()
                            )))
                        }
                    }
                }
                State::DataUnicode { digits, value } => {
                    let digit = char::from(b).to_digit(16).ok_or_else(|| {
                        AnswerError::Json("a \\u escape without four hex digits".into())
                    })?;
                    let value = value * 16 + digit;
                    if digits < 3 {
                        self.state = State::DataUnicode {
                            digits: digits + 1,
                            value,
                        };
                    } else {
                        self.state = State::Data;
                        match char::from_u32(value) {
                            Some(c) if c.is_ascii_whitespace() => {}
                            Some(c) if c.is_ascii_alphanumeric() || "+/=".contains(c) => {
                                self.pending.push(c as u8)
                            }
                            _ => {
                                return Err(AnswerError::Base64(format!(
                                    "the character U+{value:04X} in data"
                                )))
                            }
                        }
                    }
                }
                State::Other {
                    depth,
                    in_string,
                    escaped,
                } => {
                    let ends_scalar =
                        !in_string && depth == 0 && (b == b',' || b == b'}' || is_json_space(b));
                    if ends_scalar {
                        // Not part of the value: read it again after it.
                        self.state = State::AfterValue;
                        continue;
                    }
                    self.keep_other(&[b])?;
                    self.state = match (in_string, escaped, b) {
                        (true, true, _) => State::Other {
                            depth,
                            in_string: true,
                            escaped: false,
                        },
                        (true, false, b'\\') => State::Other {
                            depth,
                            in_string: true,
                            escaped: true,
                        },
                        (true, false, b'"') if depth == 0 => State::AfterValue,
                        (true, false, b'"') => State::Other {
                            depth,
                            in_string: false,
                            escaped: false,
                        },
                        (true, false, _) => State::Other {
                            depth,
                            in_string: true,
                            escaped: false,
                        },
                        (false, _, b'"') => State::Other {
                            depth,
                            in_string: true,
                            escaped: false,
                        },
                        (false, _, b'{' | b'[') => State::Other {
                            depth: depth + 1,
                            in_string: false,
                            escaped: false,
                        },
                        (false, _, b'}' | b']') if depth == 1 => State::AfterValue,
                        (false, _, b'}' | b']') => State::Other {
                            depth: depth.saturating_sub(1),
                            in_string: false,
                            escaped: false,
                        },
                        (false, _, _) => State::Other {
                            depth,
                            in_string: false,
                            escaped: false,
                        },
                    };
                }
                State::Key { escaped } => {
                    match (escaped, b) {
                        (false, b'"') => self.state = State::AfterKey,
                        (false, b'\\') => self.state = State::Key { escaped: true },
                        _ => self.state = State::Key { escaped: false },
                    }
                    if self.state != State::AfterKey {
                        if self.key.len() >= 256 {
                            return Err(AnswerError::Json("a member name is too long".into()));
                        }
                        self.key.push(b);
                    }
                }
                _ if is_json_space(b) => {}
                State::Start if b == b'{' => self.state = State::BeforeKey { first: true },
                State::BeforeKey { .. } if b == b'"' => {
                    self.key.clear();
                    self.state = State::Key { escaped: false };
                }
                State::BeforeKey { first: true } if b == b'}' => self.state = State::End,
                State::AfterKey if b == b':' => self.state = State::BeforeValue,
                State::BeforeValue if self.key_is_data() && self.data_members > 0 => {
                    return Err(AnswerError::Json("data appears twice".into()));
                }
                State::BeforeValue if b == b'"' && self.key_is_data() => {
                    self.data_members += 1;
                    self.data_seen = true;
                    self.state = State::Data;
                }
                State::BeforeValue => {
                    if self.key_is_data() {
                        // `data` that is not a string (null in an error answer).
                        self.data_members += 1;
                    }
                    if !self.others.is_empty() {
                        self.keep_other(b",")?;
                    }
                    let key = std::mem::take(&mut self.key);
                    self.keep_other(b"\"")?;
                    self.keep_other(&key)?;
                    self.keep_other(b"\":")?;
                    self.key = key;
                    self.state = State::Other {
                        depth: 0,
                        in_string: false,
                        escaped: false,
                    };
                    // The value's first byte, read again in its state.
                    continue;
                }
                State::AfterValue if b == b',' => self.state = State::BeforeKey { first: false },
                State::AfterValue if b == b'}' => self.state = State::End,
                _ => {
                    return Err(AnswerError::Json(format!(
                        "unexpected {:?} after {} package bytes",
                        char::from(b),
                        self.decoded
                    )))
                }
            }
            i += 1;
        }
        Ok(())
    }

    /// The answer is over: its envelope, and whether it carried a package (every byte of
    /// which [`feed`](Self::feed) has handed on).
    pub fn finish(self) -> Result<(Envelope, bool), AnswerError> {
        if self.state != State::End {
            return Err(AnswerError::Json(
                "the answer ends before its object does".into(),
            ));
        }
        // `data`'s closing quote decoded every whole quad: what is left is not one.
        if !self.pending.is_empty() {
            return Err(AnswerError::Base64(format!(
                "{} characters left over at the end",
                self.pending.len()
            )));
        }
        let mut text = Vec::with_capacity(self.others.len() + 2);
        text.push(b'{');
        text.extend_from_slice(&self.others);
        text.push(b'}');
        // Read as a JSON value first: reading straight into the envelope would skip the
        // members it does not know without checking them (their UTF-8, say).
        let members: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| AnswerError::Json(e.to_string()))?;
        let envelope =
            Envelope::deserialize(&members).map_err(|e| AnswerError::Json(e.to_string()))?;
        Ok((envelope, self.data_seen))
    }

    /// Whether the member being read is `data` (its name may be written with escapes).
    fn key_is_data(&self) -> bool {
        if !self.key.contains(&b'\\') {
            return self.key == b"data";
        }
        let mut quoted = Vec::with_capacity(self.key.len() + 2);
        quoted.push(b'"');
        quoted.extend_from_slice(&self.key);
        quoted.push(b'"');
        serde_json::from_slice::<String>(&quoted).is_ok_and(|k| k == "data")
    }

    fn keep_other(&mut self, bytes: &[u8]) -> Result<(), AnswerError> {
        if self.others.len() + bytes.len() > MAX_OTHER_MEMBERS {
            return Err(AnswerError::Json(format!(
                "the members besides data take more than {MAX_OTHER_MEMBERS} bytes"
            )));
        }
        self.others.extend_from_slice(bytes);
        Ok(())
    }

    /// Decodes every complete quad of pending base64.
    fn decode_pending(&mut self, out: &mut Vec<u8>) -> Result<(), AnswerError> {
        let whole = self.pending.len() / 4 * 4;
        if whole == 0 {
            return Ok(());
        }
        if self.padded {
            return Err(AnswerError::Base64("characters after the padding".into()));
        }
        let before = out.len();
        base64_simd::STANDARD
            .decode_append(&self.pending[..whole], out)
            .map_err(|e| AnswerError::Base64(e.to_string()))?;
        self.padded = self.pending[whole - 1] == b'=';
        self.decoded += (out.len() - before) as u64;
        self.pending.drain(..whole);
        Ok(())
    }
}

/// JSON's white space (not form feed or vertical tab, which Rust's ASCII white space has).
fn is_json_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 3) as u8).collect()
    }

    /// Reads `answer` cut into pieces of `piece` bytes.
    fn read(answer: &[u8], piece: usize) -> Result<(Envelope, bool, Vec<u8>), AnswerError> {
        let mut reader = EdocAnswerReader::new();
        let mut out = Vec::new();
        for chunk in answer.chunks(piece.max(1)) {
            reader.feed(chunk, &mut out)?;
        }
        assert_eq!(reader.decoded(), out.len() as u64);
        let (envelope, had_data) = reader.finish()?;
        Ok((envelope, had_data, out))
    }

    #[test]
    fn a_package_is_the_same_in_every_cutting() {
        for len in [0, 1, 2, 3, 4, 1000, 70_000] {
            let bytes = package(len);
            let b64 = base64_simd::STANDARD.encode_to_string(&bytes);
            let answer = serde_json::json!({
                "status": "OK", "ErrorCode": "0", "ErrorDesc": "", "data": b64
            })
            .to_string();
            for piece in [1, 2, 3, 5, 64, 4096, answer.len()] {
                let (envelope, had_data, out) = read(answer.as_bytes(), piece).expect("reads");
                assert!(envelope.is_ok());
                assert!(had_data);
                assert_eq!(out, bytes, "{len} bytes in pieces of {piece}");
            }
        }
    }

    #[test]
    fn members_in_any_order_escaped_slashes_and_wrapped_base64_are_read() {
        let bytes = package(300);
        let b64 = base64_simd::STANDARD.encode_to_string(&bytes);
        // As a Java encoder may write it: `/` escaped, lines of 76 with escaped CRLF.
        let wrapped: Vec<String> = b64
            .as_bytes()
            .chunks(76)
            .map(|l| String::from_utf8_lossy(l).replace('/', "\\/"))
            .collect();
        let data = wrapped.join("\\r\\n");
        let answer = format!(
            r#" {{ "data" : "{data}", "extra": {{"a": [1, "}}", {{"b": null}}]}}, "n": -1.5e3,
              "ok": true, "ErrorDesc": "th\u00e0nh c\u00f4ng \"ok\"", "ErrorCode": "0",
              "status": "OK" }} "#
        );
        for piece in [1, 7, answer.len()] {
            let (envelope, had_data, out) = read(answer.as_bytes(), piece).expect("reads");
            assert_eq!(envelope.error_desc, "thành công \"ok\"");
            assert!(envelope.is_ok() && had_data);
            assert_eq!(out, bytes);
        }
        // A name written with escapes is still `data`.
        let answer = r#"{"status":"OK","ErrorCode":"0","d\u0061ta":"QUJD"}"#;
        assert_eq!(read(answer.as_bytes(), 1).expect("reads").2, b"ABC");
        // A \u escape of a base64 character is that character.
        let answer = r#"{"status":"OK","ErrorCode":"0","data":"QU\u004A\u0044"}"#;
        assert_eq!(read(answer.as_bytes(), 1).expect("reads").2, b"ABC");
    }

    #[test]
    fn an_error_answer_has_no_package() {
        let answer =
            r#"{"status":"FAIL","ErrorCode":"NOT_FOUND","ErrorDesc":"no such docId","data":null}"#;
        let (envelope, had_data, out) = read(answer.as_bytes(), 3).expect("reads");
        assert_eq!(envelope.error_code, "NOT_FOUND");
        assert!(!had_data);
        assert!(out.is_empty());
    }

    #[test]
    fn damaged_answers_are_refused() {
        for answer in [
            "",
            "[]",
            r#"{"status":"OK","ErrorCode":"0","data":"QUJD"#,
            r#"{"status":"OK","ErrorCode":"0","data":"QUJ"}"#,
            r#"{"status":"OK","ErrorCode":"0","data":"QQ==QUJD"}"#,
            r#"{"status":"OK","ErrorCode":"0","data":"QU*D"}"#,
            r#"{"status":"OK","ErrorCode":"0","data":"QUJD\"x"}"#,
            r#"{"status":"OK","ErrorCode":"0","data":"QUJD\u00e0"}"#,
            r#"{"status":"OK","ErrorCode":"0","data":"QUJD","data":"QUJD"}"#,
            r#"{"status":"OK","ErrorCode":"0","data":"QUJD","data":null}"#,
            // Found by fuzzing: a form feed is not JSON white space.
            "{\"status\":\"OK\",\u{c}\"ErrorCode\":\"0\",\"data\":\"QUJD\"}",
            r#"{"status":"OK","ErrorCode":"0","data":null,"data":"QUJD"}"#,
            r#"{"status":"OK","ErrorCode":"0","data":"QUJD"} x"#,
            r#"{"status":"OK","ErrorCode":"0" "data":"QUJD"}"#,
            r#"{"status":"OK","data":"QUJD"}"#,
            // A raw control character in a member the envelope does not know.
            "{\"status\":\"OK\",\"ErrorCode\":\"0\",\"x\":\"\u{1}\",\"data\":\"QUJD\"}",
        ] {
            assert!(read(answer.as_bytes(), 2).is_err(), "{answer:?} is refused");
        }
        // Found by fuzzing: a member the envelope does not know, not UTF-8, was skipped
        // unchecked when the envelope was read straight from the members' text.
        let not_utf8 = b"{\"status\":\"OK\",\"ErrorCode\":\"0\",\"x\":\"\x9e\",\"data\":\"QUJD\"}";
        assert!(read(not_utf8, 2).is_err());
    }

    #[test]
    fn the_envelope_cannot_grow_without_bound() {
        let mut reader = EdocAnswerReader::new();
        let mut out = Vec::new();
        reader
            .feed(br#"{"status":"OK","ErrorCode":"0","junk":""#, &mut out)
            .expect("start");
        let filler = vec![b'x'; 4096];
        let mut refused = false;
        for _ in 0..100 {
            if reader.feed(&filler, &mut out).is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused, "refused before 400 KiB of envelope");
    }
}
