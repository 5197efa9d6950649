//! Server responses without I/O: framing bytes into whole responses, and parsing them.
//!
//! The framer is incremental so that a 30 MB literal arriving in 64 KiB reads is scanned once,
//! not once per read. The parser is deliberately lenient at the edges (unknown untagged responses
//! become [`Untagged::Other`], odd atoms are kept as they are) and strict where the engine
//! depends on a value (UIDs, UIDVALIDITY, literal lengths).

use std::fmt;

/// The largest literal accepted from a server: larger than any mailbox's largest message
/// (Exchange Online refuses above 150 MB, Gmail above 25 MB), small enough that a server
/// announcing a bogus size cannot make mailferry grow its buffer without end.
pub const MAX_LITERAL: usize = 1 << 30;
/// The most text outside literals one response may hold: a SEARCH of a million-message folder
/// is about 8 MB.
pub const MAX_LINE: usize = 64 << 20;

/// Finds the end of one complete response (line plus any literals it announces) in a buffer
/// that grows between calls. A response larger than the limits is an error as soon as that is
/// known, before its bytes arrive: a hostile or broken server cannot exhaust memory.
#[derive(Debug)]
pub struct Framer {
    /// Bytes of the current response already known to be complete (lines and literals).
    scanned: usize,
    /// Bytes of a literal still to arrive before scanning for the next CRLF resumes.
    literal_left: usize,
    /// Text outside literals of the current response so far.
    text: usize,
    /// Bytes after `scanned` already searched for the line's end and found without one: each
    /// byte of a long line is looked at once, however small the reads it arrives in.
    unended: usize,
    /// Bytes searched for a line's end, in all (to test that a long line costs its length).
    #[cfg(test)]
    searched: usize,
    /// Where the literal being waited for starts in the buffer, and its length.
    literal: (usize, usize),
    max_literal: usize,
    max_line: usize,
}

impl Default for Framer {
    fn default() -> Framer {
        Framer::with_limits(MAX_LITERAL, MAX_LINE)
    }
}

impl Framer {
    pub fn with_limits(max_literal: usize, max_line: usize) -> Framer {
        Framer {
            scanned: 0,
            literal_left: 0,
            text: 0,
            unended: 0,
            #[cfg(test)]
            searched: 0,
            literal: (0, 0),
            max_literal,
            max_line,
        }
    }

    /// Returns the length of the first complete response in `buf`, if it is all there.
    /// Call [`Framer::reset`] after consuming that many bytes.
    pub fn frame(&mut self, buf: &[u8]) -> Result<Option<usize>, ParseError> {
        loop {
            if self.literal_left > 0 {
                let available = buf.len() - self.scanned;
                if available < self.literal_left {
                    self.literal_left -= available;
                    self.scanned = buf.len();
                    return Ok(None);
                }
                self.scanned += self.literal_left;
                self.literal_left = 0;
            }
            let rest = &buf[self.scanned..];
            #[cfg(test)]
            {
                let ahead = &rest[self.unended..];
                self.searched += ahead
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(ahead.len(), |i| i + 1);
            }
            let Some(nl) = rest[self.unended..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|i| i + self.unended)
            else {
                if self.text + rest.len() > self.max_line {
                    return Err(ParseError(format!(
                        "the server sent more than {} bytes without ending the line",
                        self.max_line
                    )));
                }
                self.unended = rest.len();
                return Ok(None);
            };
            self.unended = 0;
            let line = &rest[..nl];
            self.text += nl + 1;
            if self.text > self.max_line {
                return Err(ParseError(format!(
                    "the server sent a response of more than {} bytes",
                    self.max_line
                )));
            }
            self.scanned += nl + 1;
            match literal_length(line)? {
                Some(n) if n > self.max_literal => {
                    return Err(ParseError(format!(
                        "the server announced a literal of {n} bytes; mailferry accepts at most \
                         {} bytes",
                        self.max_literal
                    )));
                }
                Some(n) => {
                    self.literal_left = n;
                    self.literal = (self.scanned, n);
                }
                None => return Ok(Some(self.scanned)),
            }
            if self.literal_left == 0 {
                continue;
            }
        }
    }

    /// Forgets the response just returned by [`Framer::frame`].
    pub fn reset(&mut self) {
        self.scanned = 0;
        self.literal_left = 0;
        self.text = 0;
        self.unended = 0;
    }

    /// The literal [`Framer::frame`] is waiting for, when it returned `None` for want of its
    /// bytes: where its first byte is (or will be) in the buffer, and its length. A caller
    /// may then read the literal into a buffer of its own, of exactly that size, rather than
    /// grow the shared one: see [`Framer::literal_taken`].
    pub fn pending_literal(&self) -> Option<(usize, usize)> {
        (self.literal_left > 0).then_some(self.literal)
    }

    /// Tells the framer that the caller has taken the [`Framer::pending_literal`] out of the
    /// buffer, whole: the bytes that followed it now start where it started, and framing
    /// resumes there. The literal goes to [`parse_with`] as a [`TakenLiteral`].
    pub fn literal_taken(&mut self) {
        if self.literal_left > 0 {
            self.scanned = self.literal.0;
            self.literal_left = 0;
        }
    }
}

/// A literal read into its own buffer instead of the response's (a message body of many
/// megabytes is then held once, at its exact size): `at` is the offset in the response's
/// bytes where the literal would have started, just after its `{n}` and CRLF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenLiteral {
    pub at: usize,
    pub bytes: Vec<u8>,
}

/// `{123}` or `{123+}` at the end of a line (before CRLF) announces a literal; a length too
/// large for this machine is an error, not a line without a literal.
fn literal_length(line: &[u8]) -> Result<Option<usize>, ParseError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(line) = line.strip_suffix(b"}") else {
        return Ok(None);
    };
    let Some(open) = line.iter().rposition(|&b| b == b'{') else {
        return Ok(None);
    };
    let digits = &line[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(digits);
    text.parse().map(Some).map_err(|_| {
        ParseError(format!(
            "the server announced a literal of {text} bytes, which cannot be held"
        ))
    })
}

/// A value in a response: what IMAP's grammar calls atoms, strings, literals, lists and NIL.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    Atom(String),
    /// A quoted string or a literal, as bytes (message bodies are not text).
    String(Vec<u8>),
    List(Vec<Value>),
    Nil,
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Atom(a) => write!(f, "{a}"),
            Value::String(s) if s.len() > 80 => write!(f, "<{} bytes>", s.len()),
            Value::String(s) => write!(f, "{:?}", String::from_utf8_lossy(s)),
            Value::List(l) => f.debug_list().entries(l).finish(),
            Value::Nil => write!(f, "NIL"),
        }
    }
}

impl Value {
    pub fn as_text(&self) -> Option<String> {
        match self {
            Value::Atom(a) => Some(a.clone()),
            Value::String(s) => Some(String::from_utf8_lossy(s).into_owned()),
            _ => None,
        }
    }
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Atom(a) => a.parse().ok(),
            _ => None,
        }
    }
    pub fn into_bytes(self) -> Option<Vec<u8>> {
        match self {
            Value::String(s) => Some(s),
            Value::Atom(a) => Some(a.into_bytes()),
            _ => None,
        }
    }
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
    Bye,
    PreAuth,
}

/// A response code (`[APPENDUID 1 2]`, `[OVERQUOTA]`, …): its name upper-cased and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    pub name: String,
    pub args: Vec<Value>,
}

/// One FETCH response, its items by upper-cased name (`UID`, `FLAGS`, `BODY[]`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub seq: u32,
    pub items: Vec<(String, Value)>,
}

impl Fetch {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.items.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
    pub fn take(&mut self, name: &str) -> Option<Value> {
        let i = self.items.iter().position(|(n, _)| n == name)?;
        Some(self.items.swap_remove(i).1)
    }
    pub fn uid(&self) -> Option<u32> {
        self.get("UID")?.as_u64()?.try_into().ok()
    }
    /// Flags as sent, `\Recent` left out: it is the server's, never copied.
    pub fn flags(&self) -> Option<Vec<String>> {
        let list = self.get("FLAGS")?.as_list()?;
        Some(
            list.iter()
                .filter_map(Value::as_text)
                .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
                .collect(),
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListItem {
    pub attributes: Vec<String>,
    pub delimiter: Option<char>,
    /// The name as sent (modified UTF-7, with any namespace prefix).
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Untagged {
    Status {
        status: Status,
        code: Option<Code>,
        text: String,
    },
    Capability(Vec<String>),
    List(ListItem),
    Lsub(ListItem),
    MailboxStatus {
        mailbox: String,
        items: Vec<(String, u64)>,
    },
    Exists(u32),
    Expunge(u32),
    Fetch(Fetch),
    Search(Vec<u32>),
    /// `ESEARCH [(TAG "t")] [UID] ALL set` (RFC 4731): the matches as inclusive ranges, as sent
    /// (a folder of 100,000 messages answers `1:100000`, not 600 kB of numbers). Other return
    /// data (MIN, MAX, COUNT) is skipped; no `ALL` means no match.
    Esearch {
        uid: bool,
        all: Vec<(u32, u32)>,
    },
    /// `VANISHED [(EARLIER)] uid-set` (QRESYNC, RFC 7162 §3.2.10): UIDs gone from the selected
    /// mailbox, kept as inclusive ranges `(low, high)` as sent, never expanded, so a hostile
    /// `1:4294967295` costs 8 bytes. At most [`MAX_VANISHED_RANGES`] ranges per response.
    Vanished {
        earlier: bool,
        uids: Vec<(u32, u32)>,
    },
    /// The personal namespaces: (prefix, delimiter).
    Namespace(Vec<(String, Option<char>)>),
    Other(Vec<Value>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Tagged {
        tag: String,
        status: Status,
        code: Option<Code>,
        text: String,
    },
    Untagged(Untagged),
    Continuation(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Unparseable server response: {}", self.0)
    }
}

impl std::error::Error for ParseError {}

/// Parses one framed response (as returned by [`Framer::frame`]).
pub fn parse(bytes: &[u8]) -> Result<Response, ParseError> {
    parse_with(bytes, Vec::new())
}

/// [`parse`] of a response some of whose literals were taken out of `bytes`
/// ([`Framer::literal_taken`]), in the order they came: each is moved into the response,
/// not copied.
pub fn parse_with(bytes: &[u8], taken: Vec<TakenLiteral>) -> Result<Response, ParseError> {
    let mut taken = taken;
    taken.reverse();
    let mut p = Parser {
        b: bytes,
        i: 0,
        depth: 0,
        taken,
    };
    if p.eat(b"+") {
        p.eat(b" ");
        return Ok(Response::Continuation(p.rest_of_line()));
    }
    if p.eat(b"* ") {
        return p.untagged().map(Response::Untagged);
    }
    let tag = p.atom()?;
    p.expect(b' ')?;
    let word = p.atom()?;
    let status = status_word(&word).ok_or_else(|| p.error("a status after the tag"))?;
    let (code, text) = p.code_and_text()?;
    Ok(Response::Tagged {
        tag,
        status,
        code,
        text,
    })
}

fn status_word(w: &str) -> Option<Status> {
    Some(match w.to_ascii_uppercase().as_str() {
        "OK" => Status::Ok,
        "NO" => Status::No,
        "BAD" => Status::Bad,
        "BYE" => Status::Bye,
        "PREAUTH" => Status::PreAuth,
        _ => return None,
    })
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
    /// Lists open around the current value.
    depth: usize,
    /// Literals taken out of `b`, the next one last.
    taken: Vec<TakenLiteral>,
}

/// The deepest nesting of parenthesised lists accepted: IMAP's deepest real structure (a
/// BODYSTRUCTURE of nested multiparts) stays well below it, and the parser recurses per level.
const MAX_DEPTH: usize = 100;

/// The most ranges one `VANISHED` response may list: a real server coalesces its uid-set into
/// ranges, so even a mailbox of millions of scattered expunges stays well below it.
pub const MAX_VANISHED_RANGES: usize = 1 << 20;

/// Parses an RFC 3501 `sequence-set` of UIDs without `*` (RFC 7162 `known-uids`) into inclusive
/// ranges, low first, refusing 0 and more than `max` ranges.
fn uid_ranges(text: &str, max: usize) -> Result<Vec<(u32, u32)>, String> {
    let mut out = Vec::new();
    for part in text.split(',') {
        if out.len() == max {
            return Err(format!("at most {max} ranges in a uid-set"));
        }
        let uid = |w: &str| -> Result<u32, String> {
            match w.parse::<u32>() {
                Ok(n) if n > 0 && w.bytes().all(|c| c.is_ascii_digit()) => Ok(n),
                _ => Err(format!("a UID (1 to 4294967295), not {w:?}")),
            }
        };
        let (a, b) = match part.split_once(':') {
            Some((a, b)) => (uid(a)?, uid(b)?),
            None => {
                let n = uid(part)?;
                (n, n)
            }
        };
        out.push((a.min(b), a.max(b)));
    }
    Ok(out)
}

impl Parser<'_> {
    fn error(&self, what: &str) -> ParseError {
        let end = self.b.len().min(self.i + 60);
        ParseError(format!(
            "expected {what} at byte {} near {:?}",
            self.i,
            String::from_utf8_lossy(&self.b[self.i.min(end)..end])
        ))
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn eat(&mut self, s: &[u8]) -> bool {
        if self.b[self.i..].starts_with(s) {
            self.i += s.len();
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: u8) -> Result<(), ParseError> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.error(&format!("{:?}", c as char)))
        }
    }
    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
    }
    fn at_line_end(&self) -> bool {
        matches!(self.peek(), None | Some(b'\r') | Some(b'\n'))
    }
    fn rest_of_line(&mut self) -> String {
        let start = self.i;
        while !self.at_line_end() {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.b[start..self.i]).into_owned()
    }

    /// An atom; `[...]` sections are part of it (`BODY[HEADER.FIELDS (X)]`, `BODY[]<0>`).
    fn atom(&mut self) -> Result<String, ParseError> {
        let start = self.i;
        let mut depth = 0usize;
        while let Some(c) = self.peek() {
            match c {
                b'[' => depth += 1,
                b']' if depth > 0 => depth -= 1,
                b']' => break,
                b' ' | b'(' | b')' | b'{' | b'"' | b'\r' | b'\n' if depth == 0 => break,
                b'\r' | b'\n' => break,
                _ => {}
            }
            self.i += 1;
        }
        if self.i == start {
            return Err(self.error("an atom"));
        }
        Ok(String::from_utf8_lossy(&self.b[start..self.i]).into_owned())
    }

    fn value(&mut self) -> Result<Value, ParseError> {
        match self.peek() {
            Some(b'(') => {
                self.i += 1;
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err(self.error(&format!("at most {MAX_DEPTH} nested lists")));
                }
                let mut items = Vec::new();
                loop {
                    self.skip_spaces();
                    match self.peek() {
                        Some(b')') => {
                            self.i += 1;
                            self.depth -= 1;
                            return Ok(Value::List(items));
                        }
                        None => return Err(self.error("')'")),
                        _ => items.push(self.value()?),
                    }
                }
            }
            Some(b'"') => self.quoted().map(Value::String),
            Some(b'{') => self.literal().map(Value::String),
            _ => {
                let a = self.atom()?;
                if a.eq_ignore_ascii_case("NIL") {
                    Ok(Value::Nil)
                } else {
                    Ok(Value::Atom(a))
                }
            }
        }
    }

    fn quoted(&mut self) -> Result<Vec<u8>, ParseError> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = self.peek().ok_or_else(|| self.error("an escaped char"))?;
                    out.push(c);
                    self.i += 1;
                }
                Some(b'\r') | Some(b'\n') | None => return Err(self.error("a closing quote")),
                Some(c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }

    fn literal(&mut self) -> Result<Vec<u8>, ParseError> {
        self.expect(b'{')?;
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        let n: usize = std::str::from_utf8(&self.b[start..self.i])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| self.error("a literal length"))?;
        self.eat(b"+");
        self.expect(b'}')?;
        self.eat(b"\r");
        self.expect(b'\n')?;
        if self.taken.last().is_some_and(|t| t.at == self.i) {
            let t = self.taken.pop().expect("just seen");
            if t.bytes.len() != n {
                return Err(self.error("a literal of the announced length"));
            }
            return Ok(t.bytes);
        }
        if self.b.len() < self.i + n {
            return Err(self.error("literal bytes"));
        }
        let v = self.b[self.i..self.i + n].to_vec();
        self.i += n;
        Ok(v)
    }

    fn number(&mut self) -> Result<u64, ParseError> {
        self.atom()?.parse().map_err(|_| self.error("a number"))
    }

    /// `[CODE args] text` after a status word.
    fn code_and_text(&mut self) -> Result<(Option<Code>, String), ParseError> {
        self.skip_spaces();
        let mut code = None;
        if self.peek() == Some(b'[') {
            self.i += 1;
            let name = {
                let start = self.i;
                while self
                    .peek()
                    .is_some_and(|c| !matches!(c, b' ' | b']' | b'\r' | b'\n'))
                {
                    self.i += 1;
                }
                String::from_utf8_lossy(&self.b[start..self.i]).to_ascii_uppercase()
            };
            let mut args = Vec::new();
            loop {
                self.skip_spaces();
                match self.peek() {
                    Some(b']') => {
                        self.i += 1;
                        break;
                    }
                    None | Some(b'\r') | Some(b'\n') => break,
                    _ => match self.value() {
                        Ok(v) => args.push(v),
                        // Free text inside a code we do not know: keep the name, drop the rest.
                        Err(_) => {
                            while !self.at_line_end() && self.peek() != Some(b']') {
                                self.i += 1;
                            }
                        }
                    },
                }
            }
            code = Some(Code { name, args });
            self.skip_spaces();
        }
        Ok((code, self.rest_of_line()))
    }

    fn untagged(&mut self) -> Result<Untagged, ParseError> {
        if self.peek().is_some_and(|c| c.is_ascii_digit()) {
            let n = self.number()? as u32;
            self.expect(b' ')?;
            let word = self.atom()?.to_ascii_uppercase();
            return Ok(match word.as_str() {
                "EXISTS" => Untagged::Exists(n),
                "EXPUNGE" => Untagged::Expunge(n),
                "FETCH" => {
                    self.skip_spaces();
                    let list = self.value()?;
                    let Value::List(values) = list else {
                        return Err(self.error("a FETCH list"));
                    };
                    let mut items = Vec::new();
                    let mut it = values.into_iter();
                    while let Some(name) = it.next() {
                        let name = name
                            .as_text()
                            .ok_or_else(|| self.error("a FETCH item name"))?
                            .to_ascii_uppercase();
                        let value = it.next().unwrap_or(Value::Nil);
                        items.push((name, value));
                    }
                    Untagged::Fetch(Fetch { seq: n, items })
                }
                _ => Untagged::Other(vec![Value::Atom(n.to_string()), Value::Atom(word)]),
            });
        }
        let word = self.atom()?;
        if let Some(status) = status_word(&word) {
            let (code, text) = self.code_and_text()?;
            return Ok(Untagged::Status { status, code, text });
        }
        let upper = word.to_ascii_uppercase();
        match upper.as_str() {
            "CAPABILITY" => Ok(Untagged::Capability(
                self.rest_of_line()
                    .split_ascii_whitespace()
                    .map(str::to_ascii_uppercase)
                    .collect(),
            )),
            "LIST" | "LSUB" => {
                let item = self.list_item()?;
                Ok(if upper == "LIST" {
                    Untagged::List(item)
                } else {
                    Untagged::Lsub(item)
                })
            }
            "STATUS" => {
                self.skip_spaces();
                let mailbox = self.value()?.as_text().unwrap_or_default();
                self.skip_spaces();
                let list = self.value()?;
                let values = list.as_list().unwrap_or_default();
                let mut items = Vec::new();
                for pair in values.chunks(2) {
                    if let [k, v] = pair
                        && let (Some(k), Some(v)) = (k.as_text(), v.as_u64())
                    {
                        items.push((k.to_ascii_uppercase(), v));
                    }
                }
                Ok(Untagged::MailboxStatus { mailbox, items })
            }
            "SEARCH" => {
                let mut uids = Vec::new();
                for w in self.rest_of_line().split_ascii_whitespace() {
                    if let Ok(u) = w.parse() {
                        uids.push(u);
                    }
                }
                Ok(Untagged::Search(uids))
            }
            "ESEARCH" => {
                let rest = self.rest_of_line();
                let mut rest = rest.trim_start();
                if rest.starts_with('(') {
                    // The search correlator, `(TAG "A5")`: one command at a time needs none.
                    let end = rest
                        .find(')')
                        .ok_or_else(|| self.error("ESEARCH: a closing )"))?;
                    rest = rest[end + 1..].trim_start();
                }
                let mut words = rest.split_ascii_whitespace().peekable();
                let uid = words.next_if(|w| w.eq_ignore_ascii_case("UID")).is_some();
                let mut all = Vec::new();
                while let Some(name) = words.next() {
                    let value = words
                        .next()
                        .ok_or_else(|| self.error(&format!("ESEARCH: a value after {name}")))?;
                    if name.eq_ignore_ascii_case("ALL") {
                        all = uid_ranges(value, MAX_VANISHED_RANGES)
                            .map_err(|e| self.error(&format!("ESEARCH ALL: {e}")))?;
                    }
                }
                Ok(Untagged::Esearch { uid, all })
            }
            "VANISHED" => {
                self.skip_spaces();
                let earlier = self.eat(b"(EARLIER)") || self.eat(b"(earlier)");
                self.skip_spaces();
                let rest = self.rest_of_line();
                let uids = uid_ranges(rest.trim(), MAX_VANISHED_RANGES)
                    .map_err(|e| self.error(&format!("VANISHED: {e}")))?;
                Ok(Untagged::Vanished { earlier, uids })
            }
            "NAMESPACE" => {
                self.skip_spaces();
                let personal = self.value()?;
                let mut out = Vec::new();
                if let Value::List(spaces) = personal {
                    for ns in spaces {
                        if let Some([prefix, delim, ..]) = ns.as_list() {
                            let prefix = prefix.as_text().unwrap_or_default();
                            let delim = delim.as_text().and_then(|d| d.chars().next());
                            out.push((prefix, delim));
                        }
                    }
                }
                Ok(Untagged::Namespace(out))
            }
            _ => {
                let mut values = vec![Value::Atom(word)];
                loop {
                    self.skip_spaces();
                    if self.at_line_end() {
                        break;
                    }
                    match self.value() {
                        Ok(v) => values.push(v),
                        Err(_) => {
                            values.push(Value::Atom(self.rest_of_line()));
                            break;
                        }
                    }
                }
                Ok(Untagged::Other(values))
            }
        }
    }

    fn list_item(&mut self) -> Result<ListItem, ParseError> {
        self.skip_spaces();
        let attrs = self.value()?;
        let attributes = attrs
            .as_list()
            .ok_or_else(|| self.error("LIST attributes"))?
            .iter()
            .filter_map(Value::as_text)
            .collect();
        self.skip_spaces();
        let delimiter = match self.value()? {
            Value::Nil => None,
            v => v.as_text().and_then(|d| d.chars().next()),
        };
        self.skip_spaces();
        let name = self
            .value()?
            .as_text()
            .ok_or_else(|| self.error("a mailbox name"))?;
        Ok(ListItem {
            attributes,
            delimiter,
            name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_all(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut f = Framer::default();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            while let Some(n) = f.frame(&buf).unwrap() {
                out.push(buf.drain(..n).collect());
                f.reset();
            }
        }
        out
    }

    #[test]
    fn a_bogus_literal_size_is_an_error_before_its_bytes_arrive() {
        let mut f = Framer::default();
        let err = f
            .frame(b"* 1 FETCH (UID 7 BODY[] {100000000000}\r\n")
            .unwrap_err();
        assert!(err.0.contains("literal of 100000000000 bytes"), "{err}");
        let mut f = Framer::default();
        let err = f
            .frame(b"* 1 FETCH (BODY[] {99999999999999999999999999}\r\n")
            .unwrap_err();
        assert!(err.0.contains("cannot be held"), "{err}");
    }

    #[test]
    fn a_long_line_arriving_in_small_reads_is_searched_once() {
        let mut f = Framer::default();
        let mut buf = b"* SEARCH".to_vec();
        // 1 MB of numbers, 100 bytes at a time: each call looks only at the new bytes.
        while buf.len() < 1 << 20 {
            buf.extend_from_slice(&b" 1234567890".repeat(9)[..99]);
            assert_eq!(f.frame(&buf), Ok(None));
        }
        buf.extend_from_slice(b"\r\n");
        assert_eq!(f.frame(&buf), Ok(Some(buf.len())));
        assert!(
            f.searched <= buf.len(),
            "searched {} bytes of a {}-byte line",
            f.searched,
            buf.len()
        );
    }

    #[test]
    fn an_endless_line_is_an_error_once_past_the_limit() {
        let mut f = Framer::with_limits(1 << 20, 1000);
        let mut buf = b"* SEARCH".to_vec();
        while buf.len() <= 1000 {
            assert_eq!(f.frame(&buf), Ok(None));
            buf.extend_from_slice(b" 12345");
        }
        let err = f.frame(&buf).unwrap_err();
        assert!(err.0.contains("without ending the line"), "{err}");
        // Many short lines of one response (literals between them) count together.
        let mut f = Framer::with_limits(1 << 20, 100);
        let mut buf = Vec::new();
        for _ in 0..20 {
            buf.extend_from_slice(b"* 1 FETCH (X {1}\r\nx");
        }
        assert!(f.frame(&buf).is_err());
    }

    #[test]
    fn lists_nested_past_the_limit_are_an_error_not_a_stack_overflow() {
        let deep = format!("* 1 FETCH (X {}{})\r\n", "(".repeat(5000), ")".repeat(5000));
        let err = parse(deep.as_bytes()).unwrap_err();
        assert!(err.0.contains("nested lists"), "{err}");
        let fine = format!("* 1 FETCH (X {}{})\r\n", "(".repeat(50), ")".repeat(50));
        assert!(parse(fine.as_bytes()).is_ok());
    }

    #[test]
    fn framer_waits_for_literal_split_across_reads() {
        let frames = frame_all(&[
            b"* 1 FETCH (UID 7 BODY[] {11}\r\nhello",
            b" ",
            b"world)\r\na1 OK done\r\n",
        ]);
        assert_eq!(frames.len(), 2);
        assert_eq!(
            frames[0],
            b"* 1 FETCH (UID 7 BODY[] {11}\r\nhello world)\r\n"
        );
        assert_eq!(frames[1], b"a1 OK done\r\n");
    }

    #[test]
    fn a_literal_taken_out_of_the_buffer_is_moved_into_the_response_whole() {
        let body = b"Subject: big\r\n\r\n{5}\r\nnot a literal\r\n".repeat(100);
        let head = format!("* 1 FETCH (UID 7 BODY[] {{{}}}\r\n", body.len());
        let mut f = Framer::default();
        // The line and the literal's first bytes arrive: the framer says where it starts.
        let mut buf = head.as_bytes().to_vec();
        buf.extend_from_slice(&body[..10]);
        assert_eq!(f.frame(&buf), Ok(None));
        assert_eq!(f.pending_literal(), Some((head.len(), body.len())));
        // The caller moves it out, then the rest of the response arrives.
        let taken = buf.split_off(head.len());
        f.literal_taken();
        assert_eq!(f.pending_literal(), None);
        let mut literal = taken;
        literal.extend_from_slice(&body[10..]);
        buf.extend_from_slice(b" FLAGS (\\Seen))\r\na1 OK done\r\n");
        let n = f.frame(&buf).unwrap().expect("the response is complete");
        let taken = vec![TakenLiteral {
            at: head.len(),
            bytes: literal,
        }];
        let Response::Untagged(Untagged::Fetch(mut fetch)) = parse_with(&buf[..n], taken).unwrap()
        else {
            panic!()
        };
        assert_eq!(fetch.uid(), Some(7));
        assert_eq!(fetch.flags().unwrap(), vec!["\\Seen"]);
        assert_eq!(fetch.take("BODY[]"), Some(Value::String(body.clone())));
        f.reset();
        assert_eq!(f.frame(&buf[n..]), Ok(Some(b"a1 OK done\r\n".len())));
        // A taken literal of another length than announced is an error, not a wrong body.
        let short = vec![TakenLiteral {
            at: head.len(),
            bytes: body[1..].to_vec(),
        }];
        assert!(parse_with(&buf[..n], short).is_err());
    }

    #[test]
    fn framer_handles_literal_containing_braces_and_newlines() {
        let body = b"line {5}\r\nnot a literal\r\n";
        let mut msg = format!("* 2 FETCH (BODY[] {{{}}}\r\n", body.len()).into_bytes();
        msg.extend_from_slice(body);
        msg.extend_from_slice(b" UID 9)\r\n");
        let frames = frame_all(&[&msg]);
        assert_eq!(frames, vec![msg.clone()]);
        let Response::Untagged(Untagged::Fetch(f)) = parse(&msg).unwrap() else {
            panic!()
        };
        assert_eq!(f.uid(), Some(9));
        assert_eq!(f.get("BODY[]"), Some(&Value::String(body.to_vec())));
    }

    #[test]
    fn fetch_with_flags_date_and_empty_literal() {
        let r = parse(
            b"* 3 FETCH (UID 12 FLAGS (\\Seen \\Recent $Label1) INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" RFC822.SIZE 0 BODY[] {0}\r\n)\r\n",
        )
        .unwrap();
        let Response::Untagged(Untagged::Fetch(f)) = r else {
            panic!("{r:?}")
        };
        assert_eq!(f.flags().unwrap(), vec!["\\Seen", "$Label1"]);
        assert_eq!(
            f.get("INTERNALDATE").unwrap().as_text().unwrap(),
            "17-Jul-1996 02:44:25 -0700"
        );
        assert_eq!(f.get("BODY[]"), Some(&Value::String(vec![])));
    }

    #[test]
    fn tagged_with_appenduid() {
        let r = parse(b"a7 OK [APPENDUID 1700000000 42] Append completed.\r\n").unwrap();
        assert_eq!(
            r,
            Response::Tagged {
                tag: "a7".into(),
                status: Status::Ok,
                code: Some(Code {
                    name: "APPENDUID".into(),
                    args: vec![Value::Atom("1700000000".into()), Value::Atom("42".into())]
                }),
                text: "Append completed.".into()
            }
        );
    }

    #[test]
    fn no_with_overquota_keeps_server_words() {
        let r = parse(b"a9 NO [OVERQUOTA] Quota exceeded (mailbox for user is full)\r\n").unwrap();
        let Response::Tagged {
            status, code, text, ..
        } = r
        else {
            panic!()
        };
        assert_eq!(status, Status::No);
        assert_eq!(code.unwrap().name, "OVERQUOTA");
        assert_eq!(text, "Quota exceeded (mailbox for user is full)");
    }

    #[test]
    fn list_lsub_status_namespace() {
        let r = parse(b"* LIST (\\HasNoChildren \\Sent) \".\" \"INBOX.Sent Items\"\r\n").unwrap();
        assert_eq!(
            r,
            Response::Untagged(Untagged::List(ListItem {
                attributes: vec!["\\HasNoChildren".into(), "\\Sent".into()],
                delimiter: Some('.'),
                name: "INBOX.Sent Items".into()
            }))
        );
        let r = parse(b"* LIST (\\Noselect) NIL Junk/&ANw-berpr&APw-ft\r\n").unwrap();
        let Response::Untagged(Untagged::List(item)) = r else {
            panic!()
        };
        assert_eq!(item.delimiter, None);
        assert_eq!(item.name, "Junk/&ANw-berpr&APw-ft");
        let r = parse(b"* LIST () \"/\" {7}\r\nA \"b\" c\r\n").unwrap();
        let Response::Untagged(Untagged::List(item)) = r else {
            panic!()
        };
        assert_eq!(item.name, "A \"b\" c");
        let r =
            parse(b"* STATUS \"INBOX\" (MESSAGES 3 UIDNEXT 4 UIDVALIDITY 1 HIGHESTMODSEQ 9)\r\n")
                .unwrap();
        assert_eq!(
            r,
            Response::Untagged(Untagged::MailboxStatus {
                mailbox: "INBOX".into(),
                items: vec![
                    ("MESSAGES".into(), 3),
                    ("UIDNEXT".into(), 4),
                    ("UIDVALIDITY".into(), 1),
                    ("HIGHESTMODSEQ".into(), 9)
                ]
            })
        );
        let r = parse(b"* NAMESPACE ((\"INBOX.\" \".\")) NIL ((\"#shared.\" \".\"))\r\n").unwrap();
        assert_eq!(
            r,
            Response::Untagged(Untagged::Namespace(vec![("INBOX.".into(), Some('.'))]))
        );
    }

    #[test]
    fn untagged_status_with_code_and_capability() {
        let r = parse(b"* OK [UIDVALIDITY 3857529045] UIDs valid\r\n").unwrap();
        let Response::Untagged(Untagged::Status { code, .. }) = r else {
            panic!()
        };
        let code = code.unwrap();
        assert_eq!(code.name, "UIDVALIDITY");
        assert_eq!(code.args[0].as_u64(), Some(3857529045));
        let r = parse(b"* CAPABILITY IMAP4rev1 LITERAL+ uidplus\r\n").unwrap();
        assert_eq!(
            r,
            Response::Untagged(Untagged::Capability(vec![
                "IMAP4REV1".into(),
                "LITERAL+".into(),
                "UIDPLUS".into()
            ]))
        );
        let r = parse(b"* OK [PERMANENTFLAGS (\\Answered \\*)] Flags permitted.\r\n").unwrap();
        let Response::Untagged(Untagged::Status { code, .. }) = r else {
            panic!()
        };
        assert_eq!(code.unwrap().name, "PERMANENTFLAGS");
    }

    #[test]
    fn continuation_search_and_bye() {
        assert_eq!(
            parse(b"+ OK\r\n").unwrap(),
            Response::Continuation("OK".into())
        );
        assert_eq!(
            parse(b"* SEARCH 2 84 882\r\n").unwrap(),
            Response::Untagged(Untagged::Search(vec![2, 84, 882]))
        );
        assert_eq!(
            parse(b"* SEARCH\r\n").unwrap(),
            Response::Untagged(Untagged::Search(vec![]))
        );
        // RFC 4731 §3.1's examples, and an answer with no match.
        assert_eq!(
            parse(b"* ESEARCH (TAG \"A282\") MIN 2 COUNT 3\r\n").unwrap(),
            Response::Untagged(Untagged::Esearch {
                uid: false,
                all: vec![]
            })
        );
        assert_eq!(
            parse(b"* ESEARCH (TAG \"A283\") UID ALL 2,10:11,13\r\n").unwrap(),
            Response::Untagged(Untagged::Esearch {
                uid: true,
                all: vec![(2, 2), (10, 11), (13, 13)]
            })
        );
        assert_eq!(
            parse(b"* ESEARCH (TAG \"A5\") UID\r\n").unwrap(),
            Response::Untagged(Untagged::Esearch {
                uid: true,
                all: vec![]
            })
        );
        assert!(parse(b"* ESEARCH (TAG \"A5\") UID ALL 0:4\r\n").is_err());
        assert!(parse(b"* ESEARCH (TAG \"A5\") UID ALL\r\n").is_err());
        let Response::Untagged(Untagged::Status { status, text, .. }) =
            parse(b"* BYE Server shutting down.\r\n").unwrap()
        else {
            panic!()
        };
        assert_eq!(status, Status::Bye);
        assert_eq!(text, "Server shutting down.");
    }

    #[test]
    fn vanished_keeps_ranges_and_earlier() {
        assert_eq!(
            parse(b"* VANISHED (EARLIER) 41,43:116,118,120:211,214:540\r\n").unwrap(),
            Response::Untagged(Untagged::Vanished {
                earlier: true,
                uids: vec![(41, 41), (43, 116), (118, 118), (120, 211), (214, 540)],
            })
        );
        assert_eq!(
            parse(b"* VANISHED 405,9:7\r\n").unwrap(),
            Response::Untagged(Untagged::Vanished {
                earlier: false,
                uids: vec![(405, 405), (7, 9)],
            })
        );
        // The widest range is one pair, not four billion UIDs.
        let Response::Untagged(Untagged::Vanished { uids, .. }) =
            parse(b"* VANISHED (EARLIER) 1:4294967295\r\n").unwrap()
        else {
            panic!()
        };
        assert_eq!(uids, vec![(1, u32::MAX)]);
    }

    #[test]
    fn vanished_out_of_bounds_is_an_error() {
        assert!(parse(b"* VANISHED 0:5\r\n").is_err());
        assert!(parse(b"* VANISHED 1:*\r\n").is_err());
        assert!(parse(b"* VANISHED 4294967296\r\n").is_err());
        assert!(parse(b"* VANISHED (EARLIER) \r\n").is_err());
        assert!(parse(b"* VANISHED 1,,2\r\n").is_err());
        assert!(uid_ranges("1,2,3", 2).is_err());
        assert_eq!(uid_ranges("1,2", 2).unwrap(), vec![(1, 1), (2, 2)]);
    }

    #[test]
    fn header_fields_section_is_one_atom() {
        let r = parse(
            b"* 1 FETCH (UID 5 BODY[HEADER.FIELDS (MESSAGE-ID)] {14}\r\nMessage-ID: x\n)\r\n",
        )
        .unwrap();
        let Response::Untagged(Untagged::Fetch(f)) = r else {
            panic!()
        };
        assert!(f.get("BODY[HEADER.FIELDS (MESSAGE-ID)]").is_some());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse(b"\r\n").is_err());
        assert!(parse(b"a1 MAYBE\r\n").is_err());
        assert!(parse(b"* 1 FETCH (UID {99}\r\nshort)\r\n").is_err());
    }
}
