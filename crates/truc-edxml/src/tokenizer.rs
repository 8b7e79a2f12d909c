//! A push-mode, namespace-aware XML tokenizer that refuses DTDs.
//!
//! Why not a general XML library: the relay receives packages as a stream of chunks (gRPC
//! messages, HTTP bodies) of up to hundreds of megabytes, mostly base64 text. This tokenizer
//! accepts input in arbitrary chunks, hands character data to its sink in pieces as it arrives
//! (so an attachment is never held whole), keeps only one tag at a time in memory, and knows
//! nothing of DTDs, so entity expansion cannot happen. Text is found with `memchr`, which
//! makes the base64 bulk of a package nearly free to scan.

use memchr::{memchr, memchr2, memchr3};

use crate::error::EdxmlError;
use crate::limits::Limits;

/// An element's resolved namespace.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Namespace<'a> {
    /// The URI (empty when none).
    pub(crate) uri: &'a [u8],
    /// Its index in the sink's [`Sink::KNOWN_NAMESPACES`], if it is one of them: found once
    /// when the namespace is declared, so elements need no comparison of long URIs.
    pub(crate) known: Option<u8>,
}

/// Receives what the tokenizer finds. Text may arrive in several pieces for one element.
pub(crate) trait Sink {
    /// The namespace URIs the sink tells apart (indexed by a `u8`: any past the 256th would
    /// count as unknown).
    const KNOWN_NAMESPACES: &'static [&'static [u8]] = &[];

    /// An element opens; `local` is its name without prefix (checked to be a valid name).
    fn start_element(
        &mut self,
        ns: Namespace<'_>,
        local: &str,
        offset: u64,
    ) -> Result<(), EdxmlError>;
    /// The innermost open element closes.
    fn end_element(&mut self) -> Result<(), EdxmlError>;
    /// A piece of character data inside the root element, with references resolved.
    fn text(&mut self, text: &[u8]) -> Result<(), EdxmlError>;
}

const BOM: &[u8] = b"\xEF\xBB\xBF";
const XML_NS: &[u8] = b"http://www.w3.org/XML/1998/namespace";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The first bytes, until we know whether they start with a byte order mark.
    Start,
    /// Character data.
    Content,
    /// After `&`; the reference name so far is in `carry`.
    Reference,
    /// After `<`, deciding what kind of markup follows; the bytes so far are in `carry`.
    MarkupOpen,
    /// Inside a start or end tag; `quote` is the open quote or 0. A tag wholly inside the
    /// chunk being fed is read in place; one that spans chunks is gathered in `carry` (the
    /// bytes after `<`).
    Tag { quote: u8 },
    /// Inside a processing instruction (bytes after `<?` in `carry`).
    Pi,
    /// Inside a comment; `dashes` counts the `-` just seen (at most 2).
    Comment { dashes: u8 },
    /// Inside a CDATA section; `brackets` counts the `]` seen but not yet emitted.
    CData { brackets: u8 },
}

/// A namespace declaration in scope.
#[derive(Debug)]
struct Binding {
    prefix: Vec<u8>,
    uri: Vec<u8>,
    /// See [`Namespace::known`].
    known: Option<u8>,
}

/// The namespace bindings in scope: a stack, with the number each open element declared.
#[derive(Debug, Default)]
struct Namespaces {
    bindings: Vec<Binding>,
    declared_per_element: Vec<usize>,
}

impl Namespaces {
    fn resolve<S: Sink>(&self, prefix: &[u8]) -> Option<Namespace<'_>> {
        if prefix == b"xml" {
            return Some(Namespace {
                uri: XML_NS,
                known: known_index::<S>(XML_NS),
            });
        }
        self.bindings
            .iter()
            .rev()
            .find(|b| same_short(&b.prefix, prefix))
            .map(|b| Namespace {
                uri: &b.uri,
                known: b.known,
            })
    }
}

/// Whether two short byte strings (namespace prefixes) are equal: compared in place,
/// which for a handful of bytes is several times cheaper than a call to `memcmp`, and this
/// runs for every element.
fn same_short(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// The index of `uri` in the sink's known namespaces.
fn known_index<S: Sink>(uri: &[u8]) -> Option<u8> {
    S::KNOWN_NAMESPACES
        .iter()
        .position(|k| *k == uri)
        .and_then(|i| u8::try_from(i).ok())
}

/// The tokenizer's state between chunks.
#[derive(Debug)]
pub(crate) struct Tokenizer {
    state: State,
    carry: Vec<u8>,
    /// Absolute offset of the next byte to be fed.
    offset: u64,
    /// Absolute offset of the `<` or `&` that started the current markup or reference.
    markup_start: u64,
    /// Bytes of the byte order mark, if any (the XML declaration may only follow it).
    prolog_len: u64,
    /// Whether anything other than a BOM has been seen (the XML declaration must come first).
    seen_anything: bool,
    names: Vec<u8>,
    name_ends: Vec<usize>,
    ns: Namespaces,
    root_seen: bool,
    root_closed: bool,
    max_depth: usize,
    max_attributes: usize,
    max_markup: usize,
}

impl Tokenizer {
    pub(crate) fn new(limits: &Limits) -> Self {
        Tokenizer {
            state: State::Start,
            carry: Vec::new(),
            offset: 0,
            markup_start: 0,
            prolog_len: 0,
            seen_anything: false,
            names: Vec::new(),
            name_ends: Vec::new(),
            ns: Namespaces::default(),
            root_seen: false,
            root_closed: false,
            max_depth: limits.max_depth,
            max_attributes: limits.max_attributes,
            max_markup: limits.max_markup_bytes,
        }
    }

    /// Feeds the next chunk of the package.
    pub(crate) fn feed<S: Sink>(
        &mut self,
        mut input: &[u8],
        sink: &mut S,
    ) -> Result<(), EdxmlError> {
        while !input.is_empty() {
            let used = match self.state {
                State::Start => self.start(input, sink)?,
                State::Content => self.content(input, sink)?,
                State::Reference => self.reference(input, sink)?,
                State::MarkupOpen => self.markup_open(input)?,
                State::Tag { quote } => self.tag(input, quote, sink)?,
                State::Pi => self.pi(input)?,
                State::Comment { dashes } => self.comment(input, dashes),
                State::CData { brackets } => self.cdata(input, brackets, sink)?,
            };
            input = &input[used..];
            self.offset += used as u64;
        }
        Ok(())
    }

    /// Ends the package: anything still open means it was truncated.
    pub(crate) fn finish<S: Sink>(&mut self, sink: &mut S) -> Result<(), EdxmlError> {
        if self.state == State::Start {
            let pending = std::mem::take(&mut self.carry);
            self.offset = 0;
            self.decide_start(&pending, sink)?;
        }
        if !self.root_seen {
            return match self.state {
                State::Content if !self.seen_anything => Err(EdxmlError::Empty),
                _ => Err(EdxmlError::malformed(
                    self.offset,
                    "the package ends before its root element",
                )),
            };
        }
        if self.state != State::Content || !self.root_closed {
            let inside = self
                .open_name()
                .map(|n| format!(" inside <{}>", String::from_utf8_lossy(n)))
                .unwrap_or_default();
            return Err(EdxmlError::malformed(
                self.offset,
                format!("unexpected end of the package{inside} (truncated?)"),
            ));
        }
        Ok(())
    }

    fn depth(&self) -> usize {
        self.name_ends.len()
    }

    fn open_name(&self) -> Option<&[u8]> {
        let end = *self.name_ends.last()?;
        let start = if self.name_ends.len() >= 2 {
            self.name_ends[self.name_ends.len() - 2]
        } else {
            0
        };
        Some(&self.names[start..end])
    }

    fn malformed(&self, reason: impl Into<String>) -> EdxmlError {
        EdxmlError::malformed(self.markup_start, reason)
    }

    fn markup_too_long(&self) -> EdxmlError {
        EdxmlError::TooLong {
            element: format!("the markup at byte {}", self.markup_start),
            limit: self.max_markup,
        }
    }

    fn push_carry(&mut self, bytes: &[u8]) -> Result<(), EdxmlError> {
        if self.carry.len() + bytes.len() > self.max_markup {
            return Err(self.markup_too_long());
        }
        self.carry.extend_from_slice(bytes);
        Ok(())
    }

    fn start<S: Sink>(&mut self, input: &[u8], sink: &mut S) -> Result<usize, EdxmlError> {
        let take = (3 - self.carry.len()).min(input.len());
        self.carry.extend_from_slice(&input[..take]);
        let could_be_bom =
            BOM.starts_with(&self.carry) || matches!(self.carry.as_slice(), [0xFE] | [0xFF]);
        if could_be_bom && self.carry.len() < 3 {
            return Ok(take);
        }
        // The pending bytes start the package: replay them from offset 0, then leave `offset`
        // where the caller's own accounting of `take` expects it.
        let pending = std::mem::take(&mut self.carry);
        self.offset = 0;
        self.decide_start(&pending, sink)?;
        self.offset -= take as u64;
        Ok(take)
    }

    fn decide_start<S: Sink>(&mut self, pending: &[u8], sink: &mut S) -> Result<(), EdxmlError> {
        if pending.starts_with(b"\xFE\xFF") || pending.starts_with(b"\xFF\xFE") {
            return Err(EdxmlError::Encoding {
                encoding: "UTF-16".into(),
            });
        }
        self.state = State::Content;
        let rest = if pending.starts_with(BOM) {
            self.offset += BOM.len() as u64;
            self.prolog_len = BOM.len() as u64;
            &pending[BOM.len()..]
        } else {
            pending
        };
        self.feed(rest, sink)
    }

    fn content<S: Sink>(&mut self, input: &[u8], sink: &mut S) -> Result<usize, EdxmlError> {
        let stop = memchr2(b'<', b'&', input);
        let text = &input[..stop.unwrap_or(input.len())];
        if !text.is_empty() {
            self.emit_text(text, sink)?;
        }
        let Some(at) = stop else {
            return Ok(input.len());
        };
        self.markup_start = self.offset + at as u64;
        self.carry.clear();
        self.state = if input[at] == b'<' {
            State::MarkupOpen
        } else {
            State::Reference
        };
        Ok(at + 1)
    }

    fn emit_text<S: Sink>(&mut self, text: &[u8], sink: &mut S) -> Result<(), EdxmlError> {
        if self.depth() > 0 {
            return sink.text(text);
        }
        if let Some(bad) = text.iter().position(|b| !is_ws(*b)) {
            let where_ = if self.root_seen {
                "after the root element"
            } else {
                "before the root element: this is not an XML package"
            };
            return Err(EdxmlError::malformed(
                self.offset + bad as u64,
                format!("text {where_}"),
            ));
        }
        Ok(())
    }

    fn reference<S: Sink>(&mut self, input: &[u8], sink: &mut S) -> Result<usize, EdxmlError> {
        let end = memchr(b';', input);
        let piece = &input[..end.unwrap_or(input.len())];
        if self.carry.len() + piece.len() > 32 {
            return Err(self.malformed("unterminated or overlong reference after '&'"));
        }
        self.carry.extend_from_slice(piece);
        let Some(end) = end else {
            return Ok(input.len());
        };
        let name = std::mem::take(&mut self.carry);
        let mut buf = [0u8; 4];
        let resolved = resolve_reference(&name, &mut buf, self.markup_start)?;
        if self.depth() == 0 {
            return Err(self.malformed("reference outside the root element"));
        }
        sink.text(resolved)?;
        self.carry = name;
        self.carry.clear();
        self.state = State::Content;
        Ok(end + 1)
    }

    fn markup_open(&mut self, input: &[u8]) -> Result<usize, EdxmlError> {
        let b = input[0];
        if self.carry.is_empty() {
            match b {
                b'/' => self.state = State::Tag { quote: 0 },
                b'?' => {
                    self.state = State::Pi;
                    return Ok(1);
                }
                b'!' => {
                    self.carry.push(b'!');
                    return Ok(1);
                }
                _ if is_name_start(b) => self.state = State::Tag { quote: 0 },
                _ => {
                    return Err(self.malformed(format!(
                        "'<' followed by {:?} does not start any markup",
                        char::from(b)
                    )))
                }
            }
            self.seen_anything = true;
            return Ok(0);
        }
        self.carry.push(b);
        self.seen_anything = true;
        let seen = self.carry.as_slice();
        if seen == b"!--" {
            self.state = State::Comment { dashes: 0 };
            self.carry.clear();
        } else if seen == b"![CDATA[" {
            if self.depth() == 0 {
                return Err(self.malformed("CDATA section outside the root element"));
            }
            self.state = State::CData { brackets: 0 };
            self.carry.clear();
        } else if seen.len() >= 2
            && matches!(seen[1].to_ascii_uppercase(), b'D' | b'E' | b'A' | b'N')
        {
            // <!DOCTYPE, <!ENTITY, <!ELEMENT, <!ATTLIST, <!NOTATION: all DTD syntax.
            return Err(EdxmlError::DtdForbidden {
                offset: self.markup_start,
            });
        } else if !(b"!--".starts_with(seen) || b"![CDATA[".starts_with(seen)) {
            return Err(
                self.malformed(format!("unknown markup <{}", String::from_utf8_lossy(seen)))
            );
        }
        Ok(1)
    }

    fn tag<S: Sink>(&mut self, input: &[u8], quote: u8, sink: &mut S) -> Result<usize, EdxmlError> {
        if quote == 0 && self.carry.is_empty() {
            if let Some(end) = tag_end(input) {
                // The whole tag is in this chunk: read it in place, without copying it.
                if end > self.max_markup {
                    return Err(self.markup_too_long());
                }
                self.whole_tag(&input[..end], sink)?;
                self.state = State::Content;
                return Ok(end + 1);
            }
        }
        if quote != 0 {
            return match memchr(quote, input) {
                None => {
                    self.push_carry(input)?;
                    Ok(input.len())
                }
                Some(i) => {
                    self.push_carry(&input[..=i])?;
                    self.state = State::Tag { quote: 0 };
                    Ok(i + 1)
                }
            };
        }
        match memchr3(b'>', b'"', b'\'', input) {
            None => {
                self.push_carry(input)?;
                Ok(input.len())
            }
            Some(i) if input[i] == b'>' => {
                self.push_carry(&input[..i])?;
                let body = std::mem::take(&mut self.carry);
                let result = self.whole_tag(&body, sink);
                self.carry = body;
                self.carry.clear();
                result?;
                self.state = State::Content;
                Ok(i + 1)
            }
            Some(i) => {
                self.push_carry(&input[..=i])?;
                self.state = State::Tag { quote: input[i] };
                Ok(i + 1)
            }
        }
    }

    /// A complete tag's body (the bytes between `<` and `>`): an end tag or a start tag.
    fn whole_tag<S: Sink>(&mut self, body: &[u8], sink: &mut S) -> Result<(), EdxmlError> {
        match body.strip_prefix(b"/") {
            Some(name) => self.end_tag(name, sink),
            None => self.start_tag(body, sink),
        }
    }

    fn start_tag<S: Sink>(&mut self, body: &[u8], sink: &mut S) -> Result<(), EdxmlError> {
        let (body, empty) = match body.strip_suffix(b"/") {
            Some(b) => (b, true),
            None => (body, false),
        };
        let name_end = body.iter().position(|b| is_ws(*b)).unwrap_or(body.len());
        let qname = &body[..name_end];
        let qname_str = check_name(qname).map_err(|r| self.malformed(r))?;
        if self.root_closed {
            return Err(self.malformed("a second root element"));
        }
        if self.depth() >= self.max_depth {
            return Err(EdxmlError::TooDeep {
                limit: self.max_depth,
                offset: self.markup_start,
            });
        }

        let mut declared = 0usize;
        let mut count = 0usize;
        let mut rest = &body[name_end..];
        loop {
            rest = trim_start(rest);
            if rest.is_empty() {
                break;
            }
            let eq =
                memchr(b'=', rest).ok_or_else(|| self.malformed("attribute without a value"))?;
            let name = trim_end(&rest[..eq]);
            check_name(name).map_err(|r| self.malformed(r))?;
            rest = trim_start(&rest[eq + 1..]);
            let quote = match rest.first() {
                Some(q @ (b'"' | b'\'')) => *q,
                _ => return Err(self.malformed("attribute value without quotes")),
            };
            let close = memchr(quote, &rest[1..])
                .ok_or_else(|| self.malformed("unterminated attribute value"))?;
            let value = &rest[1..1 + close];
            if memchr(b'<', value).is_some() {
                return Err(self.malformed("'<' inside an attribute value"));
            }
            rest = &rest[close + 2..];
            if !rest.is_empty() && !is_ws(rest[0]) {
                return Err(self.malformed("attributes must be separated by whitespace"));
            }
            count += 1;
            if count > self.max_attributes {
                return Err(EdxmlError::TooManyAttributes {
                    element: String::from_utf8_lossy(qname).into_owned(),
                    limit: self.max_attributes,
                });
            }
            let prefix = if name == b"xmlns" {
                Some(&b""[..])
            } else {
                name.strip_prefix(b"xmlns:")
            };
            if let Some(prefix) = prefix {
                let uri = unescape_attribute(value, self.markup_start)?;
                if !prefix.is_empty() && uri.is_empty() {
                    return Err(
                        self.malformed("a namespace prefix cannot be bound to an empty URI")
                    );
                }
                let known = known_index::<S>(&uri);
                self.ns.bindings.push(Binding {
                    prefix: prefix.to_vec(),
                    uri,
                    known,
                });
                declared += 1;
            }
        }
        self.ns.declared_per_element.push(declared);

        let (prefix, local) = match qname_str.split_once(':') {
            Some((prefix, local)) => (prefix.as_bytes(), local),
            None => (&b""[..], qname_str),
        };
        let ns = match self.ns.resolve::<S>(prefix) {
            Some(ns) => ns,
            None if prefix.is_empty() => Namespace {
                uri: b"",
                known: None,
            },
            None => {
                let reason = format!(
                    "namespace prefix {:?} of <{}> is not declared",
                    String::from_utf8_lossy(prefix),
                    String::from_utf8_lossy(qname)
                );
                return Err(self.malformed(reason));
            }
        };
        self.root_seen = true;
        self.names.extend_from_slice(qname);
        self.name_ends.push(self.names.len());
        sink.start_element(ns, local, self.markup_start)?;
        if empty {
            self.close_element(sink)?;
        }
        Ok(())
    }

    fn end_tag<S: Sink>(&mut self, body: &[u8], sink: &mut S) -> Result<(), EdxmlError> {
        let name = trim_end(body);
        match self.open_name() {
            Some(open) if open == name => self.close_element(sink),
            Some(open) => Err(self.malformed(format!(
                "end tag </{}> does not match the open element <{}>",
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(open)
            ))),
            None => Err(self.malformed(format!(
                "end tag </{}> without an open element",
                String::from_utf8_lossy(name)
            ))),
        }
    }

    fn close_element<S: Sink>(&mut self, sink: &mut S) -> Result<(), EdxmlError> {
        self.name_ends.pop();
        let start = self.name_ends.last().copied().unwrap_or(0);
        self.names.truncate(start);
        let declared = self.ns.declared_per_element.pop().unwrap_or(0);
        let keep = self.ns.bindings.len().saturating_sub(declared);
        self.ns.bindings.truncate(keep);
        if self.name_ends.is_empty() {
            self.root_closed = true;
        }
        sink.end_element()
    }

    fn pi(&mut self, input: &[u8]) -> Result<usize, EdxmlError> {
        let Some(i) = memchr(b'>', input) else {
            self.push_carry(input)?;
            return Ok(input.len());
        };
        self.push_carry(&input[..i])?;
        if self.carry.last() != Some(&b'?') {
            self.push_carry(b">")?;
            return Ok(i + 1);
        }
        let body = std::mem::take(&mut self.carry);
        let result = self.processing_instruction(&body[..body.len() - 1]);
        self.carry = body;
        self.carry.clear();
        result?;
        self.seen_anything = true;
        self.state = State::Content;
        Ok(i + 1)
    }

    fn processing_instruction(&self, body: &[u8]) -> Result<(), EdxmlError> {
        let target_end = body.iter().position(|b| is_ws(*b)).unwrap_or(body.len());
        let target = &body[..target_end];
        if !target.eq_ignore_ascii_case(b"xml") {
            return Ok(());
        }
        if self.seen_anything || self.markup_start != self.prolog_len {
            return Err(self.malformed("the XML declaration must be at the very start"));
        }
        if let Some(encoding) = declared_encoding(&body[target_end..]) {
            let ok = [&b"utf-8"[..], b"utf8", b"us-ascii", b"ascii"]
                .iter()
                .any(|e| encoding.eq_ignore_ascii_case(e));
            if !ok {
                return Err(EdxmlError::Encoding {
                    encoding: String::from_utf8_lossy(encoding).into_owned(),
                });
            }
        }
        Ok(())
    }

    fn comment(&mut self, input: &[u8], dashes: u8) -> usize {
        match memchr(b'>', input) {
            None => {
                self.state = State::Comment {
                    dashes: trailing(b'-', dashes, input),
                };
                input.len()
            }
            Some(i) => {
                self.state = if trailing(b'-', dashes, &input[..i]) >= 2 {
                    State::Content
                } else {
                    State::Comment { dashes: 0 }
                };
                i + 1
            }
        }
    }

    fn cdata<S: Sink>(
        &mut self,
        input: &[u8],
        pending: u8,
        sink: &mut S,
    ) -> Result<usize, EdxmlError> {
        let (segment, terminator) = match memchr(b'>', input) {
            Some(i) => (&input[..i], true),
            None => (input, false),
        };
        let brackets = trailing(b']', pending, segment);
        let closes = terminator && brackets >= 2;
        // Text is the pending brackets plus the segment, less the trailing brackets we hold back
        // (or that form the `]]>` terminator).
        let held_in_segment = (brackets as usize).min(segment.len());
        let held_from_pending = brackets as usize - held_in_segment;
        let emit_pending = pending as usize - held_from_pending;
        if emit_pending > 0 {
            sink.text(&b"]]"[..emit_pending])?;
        }
        let body = &segment[..segment.len() - held_in_segment];
        if !body.is_empty() {
            sink.text(body)?;
        }
        if !terminator {
            self.state = State::CData { brackets };
            return Ok(input.len());
        }
        if closes {
            self.state = State::Content;
        } else {
            // A '>' that is not part of `]]>`: the held brackets and the '>' are text.
            if brackets > 0 {
                sink.text(&b"]]"[..brackets as usize])?;
            }
            sink.text(b">")?;
            self.state = State::CData { brackets: 0 };
        }
        Ok(segment.len() + 1)
    }
}

/// Where the `>` that ends a tag starting at `input[0]` is, skipping quoted attribute
/// values; `None` if the tag does not end within `input`.
fn tag_end(input: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let i = at + memchr3(b'>', b'"', b'\'', &input[at..])?;
        if input[i] == b'>' {
            return Some(i);
        }
        at = i + 1 + memchr(input[i], &input[i + 1..])? + 1;
    }
}

/// How many of `byte` end the stream made of `prev` such bytes followed by `segment`, at most 2.
fn trailing(byte: u8, prev: u8, segment: &[u8]) -> u8 {
    let n = segment
        .iter()
        .rev()
        .take(2)
        .take_while(|&&b| b == byte)
        .count();
    if n == segment.len() {
        (prev as usize + n).min(2) as u8
    } else {
        n as u8
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn trim_start(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_ws(*first) {
            break;
        }
        s = rest;
    }
    s
}

fn trim_end(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., last] = s {
        if !is_ws(*last) {
            break;
        }
        s = rest;
    }
    s
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':' || b >= 0x80
}

/// Bytes that may appear in a name: ASCII letters, digits, `_ : - .`, and every byte of a
/// multi-byte UTF-8 sequence (checked as UTF-8 separately).
const NAME_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'_' | b':' | b'-' | b'.') || c >= 0x80;
        b += 1;
    }
    table
};

/// Checks an element or attribute name and returns it as text.
fn check_name(name: &[u8]) -> Result<&str, String> {
    let Some(&first) = name.first() else {
        return Err("empty element or attribute name".into());
    };
    let invalid = || {
        format!(
            "{:?} is not a valid XML name",
            String::from_utf8_lossy(name)
        )
    };
    if !is_name_start(first) || !name.iter().all(|&b| NAME_BYTE[usize::from(b)]) {
        return Err(invalid());
    }
    std::str::from_utf8(name).map_err(|_| invalid())
}

/// Resolves the name of a reference (the bytes between `&` and `;`) to UTF-8.
fn resolve_reference<'b>(
    name: &[u8],
    buf: &'b mut [u8; 4],
    offset: u64,
) -> Result<&'b [u8], EdxmlError> {
    let c = match name {
        b"amp" => '&',
        b"lt" => '<',
        b"gt" => '>',
        b"quot" => '"',
        b"apos" => '\'',
        [b'#', b'x', hex @ ..] => char_ref(hex, 16, offset)?,
        [b'#', dec @ ..] => char_ref(dec, 10, offset)?,
        _ => {
            return Err(EdxmlError::EntityForbidden {
                name: String::from_utf8_lossy(name).into_owned(),
                offset,
            })
        }
    };
    Ok(c.encode_utf8(buf).as_bytes())
}

fn char_ref(digits: &[u8], radix: u32, offset: u64) -> Result<char, EdxmlError> {
    std::str::from_utf8(digits)
        .ok()
        .filter(|d| !d.is_empty() && d.len() <= 8)
        .and_then(|d| u32::from_str_radix(d, radix).ok())
        .and_then(char::from_u32)
        .filter(|&c| c != '\0')
        .ok_or_else(|| {
            EdxmlError::malformed(
                offset,
                format!(
                    "invalid character reference &#{};",
                    String::from_utf8_lossy(digits)
                ),
            )
        })
}

/// Resolves references in an attribute value.
fn unescape_attribute(value: &[u8], offset: u64) -> Result<Vec<u8>, EdxmlError> {
    let mut out = Vec::with_capacity(value.len());
    let mut rest = value;
    while let Some(amp) = memchr(b'&', rest) {
        out.extend_from_slice(&rest[..amp]);
        let semi = memchr(b';', &rest[amp..]).ok_or_else(|| {
            EdxmlError::malformed(offset, "unterminated reference in an attribute")
        })?;
        let mut buf = [0u8; 4];
        out.extend_from_slice(resolve_reference(
            &rest[amp + 1..amp + semi],
            &mut buf,
            offset,
        )?);
        rest = &rest[amp + semi + 1..];
    }
    out.extend_from_slice(rest);
    Ok(out)
}

/// The value of `encoding="..."` in the body of an XML declaration, if any.
fn declared_encoding(decl: &[u8]) -> Option<&[u8]> {
    let at = memchr::memmem::find(decl, b"encoding")?;
    let rest = trim_start(&decl[at + b"encoding".len()..]);
    let rest = trim_start(rest.strip_prefix(b"=")?);
    let quote = *rest.first()?;
    if quote != b'"' && quote != b'\'' {
        return None;
    }
    let end = memchr(quote, &rest[1..])?;
    Some(&rest[1..1 + end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        events: Vec<String>,
    }

    impl Sink for Recorder {
        fn start_element(
            &mut self,
            ns: Namespace<'_>,
            local: &str,
            _: u64,
        ) -> Result<(), EdxmlError> {
            self.events.push(format!(
                "<{{{}}}{}>",
                String::from_utf8_lossy(ns.uri),
                local
            ));
            Ok(())
        }
        fn end_element(&mut self) -> Result<(), EdxmlError> {
            self.events.push("</>".into());
            Ok(())
        }
        fn text(&mut self, text: &[u8]) -> Result<(), EdxmlError> {
            // Merge adjacent text pieces so chunking does not change the record.
            let t = String::from_utf8_lossy(text).into_owned();
            match self.events.last_mut() {
                Some(last) if last.starts_with('"') => {
                    last.pop();
                    last.push_str(&t);
                    last.push('"');
                }
                _ => self.events.push(format!("\"{t}\"")),
            }
            Ok(())
        }
    }

    fn run(input: &[u8], chunk: usize) -> Result<Vec<String>, EdxmlError> {
        let mut t = Tokenizer::new(&Limits::default());
        let mut r = Recorder::default();
        for piece in input.chunks(chunk.max(1)) {
            t.feed(piece, &mut r)?;
        }
        t.finish(&mut r)?;
        Ok(r.events)
    }

    const DOC: &[u8] = b"\xEF\xBB\xBF<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n<!-- c -- > -->\
<a xmlns=\"urn:d\" xmlns:p='urn:p'><p:b x=\"1 > 2\">t&amp;&#x41;&#66;<![CDATA[a]]b]>c]]]></p:b><c/>\
<?pi data?></a>\n";

    #[test]
    fn every_chunking_gives_the_same_events() {
        let whole = run(DOC, DOC.len()).expect("parses");
        assert_eq!(
            whole,
            vec![
                "<{urn:d}a>",
                "<{urn:p}b>",
                "\"t&ABa]]b]>c]\"",
                "</>",
                "<{urn:d}c>",
                "</>",
                "</>"
            ]
        );
        for chunk in 1..DOC.len() {
            assert_eq!(
                run(DOC, chunk).expect("parses"),
                whole,
                "chunk size {chunk}"
            );
        }
    }

    #[test]
    fn refuses_what_it_must() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "EDXML_EMPTY"),
            (b" \r\n ", "EDXML_EMPTY"),
            (b"hello", "EDXML_MALFORMED"),
            (b"<!DOCTYPE a []><a/>", "EDXML_DTD_FORBIDDEN"),
            (b"<!doctype a><a/>", "EDXML_DTD_FORBIDDEN"),
            (b"<!ENTITY x 'y'><a/>", "EDXML_DTD_FORBIDDEN"),
            (b"<a>&ent;</a>", "EDXML_ENTITY_FORBIDDEN"),
            (b"<a>&#0;</a>", "EDXML_MALFORMED"),
            (b"<a></b>", "EDXML_MALFORMED"),
            (b"<a><b></a>", "EDXML_MALFORMED"),
            (b"<a/><b/>", "EDXML_MALFORMED"),
            (b"<a/>x", "EDXML_MALFORMED"),
            (b"<p:a/>", "EDXML_MALFORMED"),
            (b"<a x=1/>", "EDXML_MALFORMED"),
            (b"<a", "EDXML_MALFORMED"),
            (b"<a>", "EDXML_MALFORMED"),
            (b"<a><!-- x", "EDXML_MALFORMED"),
            (b"\xFF\xFE<\x00a\x00/\x00>\x00", "EDXML_BAD_ENCODING"),
            (
                b"<?xml version='1.0' encoding='windows-1258'?><a/>",
                "EDXML_BAD_ENCODING",
            ),
            (b"<a/><?xml version='1.0'?>", "EDXML_MALFORMED"),
        ];
        for (input, code) in cases {
            for chunk in [1, 2, 3, 7, 1 << 20] {
                let err = run(input, chunk).expect_err("must fail");
                assert_eq!(
                    err.code(),
                    *code,
                    "{:?} chunk {chunk}: {err}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn a_tag_at_the_markup_limit_is_read_and_one_byte_more_is_refused_in_any_chunking() {
        let limits = Limits::default();
        // `<a x="…"/>`: the tag's body (between `<` and `>`) is `a x="…"/`. Inside a root
        // element, so that whole chunks hold the tag (the first bytes of a package are
        // read apart, to look for a byte order mark).
        let tag = |body_len: usize| format!("<r><a x=\"{}\"/></r>", "y".repeat(body_len - 7));
        let at_limit = tag(limits.max_markup_bytes);
        let over = tag(limits.max_markup_bytes + 1);
        for chunk in [1, 7, 4096, 1 << 20] {
            assert_eq!(
                run(at_limit.as_bytes(), chunk).expect("at the limit"),
                vec!["<{}r>", "<{}a>", "</>", "</>"],
                "chunk size {chunk}"
            );
            assert_eq!(
                run(over.as_bytes(), chunk).expect_err("over").code(),
                "EDXML_TOO_LONG",
                "chunk size {chunk}"
            );
        }
    }

    #[test]
    fn bounds_depth_and_tags() {
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert_eq!(
            run(deep.as_bytes(), 4096).expect_err("deep").code(),
            "EDXML_TOO_DEEP"
        );
        let long = format!("<a x=\"{}\"/>", "y".repeat(100_000));
        assert_eq!(
            run(long.as_bytes(), 4096).expect_err("long").code(),
            "EDXML_TOO_LONG"
        );
        let attrs: String = (0..100).map(|i| format!(" a{i}='1'")).collect();
        let many = format!("<a{attrs}/>");
        assert_eq!(
            run(many.as_bytes(), 4096).expect_err("many").code(),
            "EDXML_TOO_MANY_ATTRIBUTES"
        );
    }
}
