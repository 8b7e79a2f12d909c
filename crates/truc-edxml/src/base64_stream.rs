//! Streaming base64 decoding of attachment content: size and SHA-256, nothing kept.

use base64_simd::AsOut;
use memchr::memchr3;
use sha2::{Digest, Sha256};

use crate::values::Sha256Digest;

/// Significant characters decoded at a time (a multiple of 4).
const BLOCK: usize = 64 * 1024;

/// Why attachment content is not valid base64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Base64Problem {
    /// The text is not base64; the reason says where.
    Invalid(String),
    /// The decoded size passed the limit.
    TooLarge,
}

/// Decodes base64 text arriving in arbitrary pieces, hashing the decoded bytes as it goes
/// (unless asked not to: a relay forwarding the package whole has no use for the digest).
///
/// Whitespace (line breaks every 76 characters, as many encoders write) is skipped. Memory
/// stays at one block whatever the attachment's size.
///
/// Problems are reported at deterministic points whatever the chunking of the input: the size
/// limit as soon as the characters received could not decode within it, invalid text only
/// when the content ends (decoding stops at the first problem, counting does not). This keeps
/// the reader's answer the same for a package fed whole or in any pieces.
pub(crate) struct Base64Stream {
    staging: Vec<u8>,
    out: Vec<u8>,
    hasher: Option<Sha256>,
    size: u64,
    /// Significant characters decoded so far.
    chars: u64,
    /// Significant characters received so far.
    received: u64,
    padded: bool,
    invalid: Option<String>,
    max_size: u64,
    max_chars: u64,
}

impl Base64Stream {
    /// A stream that refuses more than `max_size` decoded bytes, and hashes them if
    /// `digest`.
    pub(crate) fn new(max_size: u64, digest: bool) -> Self {
        Base64Stream {
            staging: Vec::new(),
            out: Vec::new(),
            hasher: digest.then(Sha256::new),
            size: 0,
            chars: 0,
            received: 0,
            padded: false,
            invalid: None,
            max_size,
            max_chars: (max_size.saturating_add(2) / 3).saturating_mul(4),
        }
    }

    /// Feeds a piece of the element's text.
    pub(crate) fn push(&mut self, mut text: &[u8]) -> Result<(), Base64Problem> {
        while !text.is_empty() {
            let end = memchr3(b'\n', b'\r', b' ', text).unwrap_or(text.len());
            let mut segment = &text[..end];
            // Tabs are rare; split on them here rather than slowing the common path.
            while let Some(tab) = memchr::memchr(b'\t', segment) {
                self.push_segment(&segment[..tab])?;
                segment = &segment[tab + 1..];
            }
            self.push_segment(segment)?;
            text = &text[end..];
            let skip = text
                .iter()
                .position(|b| !matches!(b, b'\n' | b'\r' | b' ' | b'\t'))
                .unwrap_or(text.len());
            text = &text[skip..];
        }
        Ok(())
    }

    fn push_segment(&mut self, mut segment: &[u8]) -> Result<(), Base64Problem> {
        if segment.is_empty() {
            return Ok(());
        }
        self.received += segment.len() as u64;
        if self.received > self.max_chars {
            return Err(Base64Problem::TooLarge);
        }
        if self.invalid.is_some() {
            return Ok(());
        }
        if self.staging.is_empty() {
            let direct = segment.len() - segment.len() % 4;
            for block in segment[..direct].chunks(BLOCK) {
                self.decode(block, base64_simd::STANDARD);
            }
            segment = &segment[direct..];
        }
        while !segment.is_empty() {
            let take = (BLOCK - self.staging.len()).min(segment.len());
            self.staging.extend_from_slice(&segment[..take]);
            segment = &segment[take..];
            if self.staging.len() == BLOCK {
                let block = std::mem::take(&mut self.staging);
                self.decode(&block, base64_simd::STANDARD);
                self.staging = block;
                self.staging.clear();
            }
        }
        Ok(())
    }

    /// Decodes one block; the first problem is recorded and stops further decoding.
    fn decode(&mut self, block: &[u8], engine: base64_simd::Base64) {
        if self.invalid.is_some() {
            return;
        }
        self.out.resize(block.len() / 4 * 3 + 3, 0);
        let decoded = if self.padded {
            None
        } else {
            engine.decode(block, self.out.as_mut_slice().as_out()).ok()
        };
        match decoded {
            Some(decoded) => {
                if let Some(h) = &mut self.hasher {
                    h.update(&*decoded);
                }
                self.size += decoded.len() as u64;
                self.chars += block.len() as u64;
                self.padded = block.last() == Some(&b'=');
            }
            None => self.invalid = Some(first_problem(block, self.chars, self.padded)),
        }
    }

    /// Ends the content; returns the decoded size and digest (if it was asked for).
    pub(crate) fn finish(mut self) -> Result<(u64, Option<Sha256Digest>), Base64Problem> {
        let rest = std::mem::take(&mut self.staging);
        let whole = rest.len() - rest.len() % 4;
        if whole > 0 {
            self.decode(&rest[..whole], base64_simd::STANDARD);
        }
        match rest.len() % 4 {
            0 => {}
            // Unpadded final group: some encoders omit the padding; accept it.
            2 | 3 => self.decode(&rest[whole..], base64_simd::STANDARD_NO_PAD),
            _ if self.invalid.is_none() => {
                self.invalid = Some(format!(
                    "{} characters is not a whole number of base64 groups",
                    self.received
                ))
            }
            _ => {}
        }
        if let Some(reason) = self.invalid {
            return Err(Base64Problem::Invalid(reason));
        }
        if self.size > self.max_size {
            return Err(Base64Problem::TooLarge);
        }
        Ok((
            self.size,
            self.hasher.map(|h| Sha256Digest(h.finalize().into())),
        ))
    }
}

/// The value of a base64 character, or `None`.
fn sextet(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Describes the first problem of a block the decoder refused, by its position in the whole
/// content (`offset` characters came before, a multiple of 4), so the message is the same
/// however the content was split.
fn first_problem(block: &[u8], offset: u64, padded_before: bool) -> String {
    let mut padded = padded_before;
    let mut pending_pad = false;
    for (j, &b) in block.iter().enumerate() {
        let i = offset + j as u64;
        if padded {
            return format!("text continues after '=' padding at character {i}");
        }
        let quad_pos = i % 4;
        if b == b'=' {
            match quad_pos {
                0 | 1 => return format!("misplaced '=' padding at character {i}"),
                2 => {
                    if j.checked_sub(1)
                        .and_then(|k| block.get(k))
                        .and_then(|&c| sextet(c))
                        .is_some_and(|v| v & 0x0F != 0)
                    {
                        return format!("non-zero bits before '=' padding at character {}", i - 1);
                    }
                    pending_pad = true;
                }
                _ => {
                    if !pending_pad
                        && j.checked_sub(1)
                            .and_then(|k| block.get(k))
                            .and_then(|&c| sextet(c))
                            .is_some_and(|v| v & 0x03 != 0)
                    {
                        return format!("non-zero bits before '=' padding at character {}", i - 1);
                    }
                    pending_pad = false;
                    padded = true;
                }
            }
            continue;
        }
        if pending_pad {
            return format!("misplaced '=' padding at character {}", i - 1);
        }
        if sextet(b).is_none() {
            return format!("invalid character {:?} at character {i}", char::from(b));
        }
    }
    format!(
        "invalid base64 in characters {offset} to {}",
        offset + block.len() as u64
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pieces: &[&[u8]]) -> Result<(u64, Sha256Digest), Base64Problem> {
        let mut s = Base64Stream::new(u64::MAX, true);
        for p in pieces {
            s.push(p)?;
        }
        s.finish()
            .map(|(size, digest)| (size, digest.expect("asked for")))
    }

    /// Without the digest: the same sizes and the same refusals.
    fn run_without_digest(pieces: &[&[u8]]) -> Result<u64, Base64Problem> {
        let mut s = Base64Stream::new(u64::MAX, false);
        for p in pieces {
            s.push(p)?;
        }
        let (size, digest) = s.finish()?;
        assert_eq!(digest, None);
        Ok(size)
    }

    #[test]
    fn without_the_digest_sizes_and_refusals_are_the_same() {
        for pieces in [
            &[&b"aGVs"[..], b"bG8g\r\n", b"d29y\tbGQ", b"="][..],
            &[b"!!!not*base64!!!"],
            &[b"aGVsbG8"],
            &[b"aGVsb"],
        ] {
            assert_eq!(
                run_without_digest(pieces),
                run(pieces).map(|(size, _)| size),
                "{pieces:?}"
            );
        }
    }

    #[test]
    fn decodes_across_pieces_and_whitespace() {
        let expected = (11, Sha256Digest::of(b"hello world"));
        assert_eq!(run(&[b"aGVsbG8gd29ybGQ="]), Ok(expected));
        assert_eq!(
            run(&[b"aGVs", b"bG8g\r\n", b"d29y\tbGQ", b"="]),
            Ok(expected)
        );
        assert_eq!(run(&[b"a", b"G", b"V", b"s", b"bG8gd29ybGQ"]), Ok(expected));
        assert_eq!(run(&[b" \r\n "]), Ok((0, Sha256Digest::of(b""))));
    }

    #[test]
    fn large_content_matches_a_one_shot_digest() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let text = base64_simd::STANDARD.encode_to_string(&data);
        let wrapped: Vec<u8> = text
            .as_bytes()
            .chunks(76)
            .flat_map(|line| line.iter().copied().chain(*b"\r\n"))
            .collect();
        for piece in [1usize, 1000, 65_537, wrapped.len()] {
            let pieces: Vec<&[u8]> = wrapped.chunks(piece).collect();
            assert_eq!(
                run(&pieces),
                Ok((data.len() as u64, Sha256Digest::of(&data)))
            );
        }
    }

    #[test]
    fn refuses_invalid_text() {
        assert!(
            matches!(run(&[b"!!!not*base64!!!"]), Err(Base64Problem::Invalid(m)) if m.contains("'!'"))
        );
        assert!(matches!(run(&[b"aGVsbG8="]).map(|r| r.0), Ok(5)));
        assert!(run(&[b"aGVsbG8=", b"aGVs"]).is_err());
        assert!(run(&[b"aGVsb"]).is_err());
        let mut s = Base64Stream::new(4, true);
        assert_eq!(s.push(b"aGVsbG8gd29ybGQ="), Err(Base64Problem::TooLarge));
    }

    #[test]
    fn problems_are_named_by_position_whatever_the_split() {
        let cases: [(&[u8], &str); 7] = [
            (
                b"QQ==QUFB",
                "text continues after '=' padding at character 4",
            ),
            (b"QQ=AQUFB", "misplaced '=' padding at character 2"),
            (b"Q===", "misplaced '=' padding at character 1"),
            (b"QR==", "non-zero bits before '=' padding at character 1"),
            (b"QUF=", "non-zero bits before '=' padding at character 2"),
            (b"QUFB\xC3\xA9", "invalid character '\u{c3}' at character 4"),
            (
                b"QUFBQUFBQ",
                "9 characters is not a whole number of base64 groups",
            ),
        ];
        for (text, reason) in cases {
            for piece in 1..=text.len() {
                let pieces: Vec<&[u8]> = text.chunks(piece).collect();
                assert_eq!(
                    run(&pieces),
                    Err(Base64Problem::Invalid(reason.into())),
                    "{:?} in pieces of {piece}",
                    String::from_utf8_lossy(text)
                );
            }
        }
        // Invalid text is reported when the content ends, not when it is seen.
        let mut s = Base64Stream::new(u64::MAX, true);
        assert_eq!(s.push(b"!!!!"), Ok(()));
        assert!(s.finish().is_err());
    }
}
