//! A blocking IMAP connection: TCP, rustls (implicit TLS or STARTTLS), login, and the commands
//! a migration needs, with pipelined APPEND.
//!
//! Blocking I/O on one thread per connection keeps the flow easy to reason about: the engine
//! runs a reader thread on the source and a writer on the target, joined by a bounded channel.
//! Pipelining still works because with LITERAL+ an APPEND is a plain write, and the answers
//! (a few dozen bytes each) are read back in order while later APPENDs are on the wire.
//!
//! The bytes of each command come from [`crate::proto::command`] and the meaning of response
//! codes from [`crate::proto::codes`]; this driver sequences them: tags, waiting for `+`
//! continuations, chunking long UID lists, and falling back from MOVE to COPY.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;

use crate::proto::codes::TypedCode;
use crate::proto::command::{find_sync_literal, push_astring};
use crate::response::{self, Code, Framer, Response, Status, TakenLiteral, Untagged};
use crate::tls::TlsError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    Tls,
    StartTls,
    Plain,
}

/// Where and how to connect. Certificates are verified unless `verify_certificates` is false,
/// which only an explicit job setting can ask for.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub ca_file: Option<PathBuf>,
    pub verify_certificates: bool,
    /// SHA-256 fingerprints of the only certificates accepted (`tls_pin_sha256`); empty for
    /// the usual chain and name verification.
    pub pins: Vec<crate::tls::Pin>,
    pub timeout: Duration,
}

/// How to log in. The master-user form (`user*admin`) is a plain LOGIN whose user name the
/// caller has already built.
#[derive(Clone)]
pub enum Login {
    Plain {
        user: String,
        password: String,
    },
    /// SASL PLAIN (RFC 4616) acting as `authzid` with the admin's credentials.
    SaslPlain {
        authzid: String,
        authcid: String,
        password: String,
    },
    /// An OAuth2 access token for `user` (the mailbox), with SASL XOAUTH2 or OAUTHBEARER.
    OAuth2 {
        user: String,
        token: String,
        mechanism: OAuthMechanism,
    },
}

/// The SASL mechanisms that carry an OAuth2 bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthMechanism {
    /// Google's and Microsoft's `XOAUTH2`.
    XOAuth2,
    /// RFC 7628 `OAUTHBEARER`.
    OAuthBearer,
}

impl OAuthMechanism {
    pub fn name(self) -> &'static str {
        match self {
            OAuthMechanism::XOAuth2 => "XOAUTH2",
            OAuthMechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// The SASL initial response (before base64): XOAUTH2 is
    /// `user=<user>^Aauth=Bearer <token>^A^A`; OAUTHBEARER (RFC 7628 §3.1) is the GS2 header
    /// `n,a=<user>,` (with `=` and `,` in the user escaped as `=3D` and `=2C`) then
    /// `^Aauth=Bearer <token>^A^A`.
    pub fn initial_response(self, user: &str, token: &str) -> Vec<u8> {
        let mut raw = match self {
            OAuthMechanism::XOAuth2 => format!("user={user}"),
            OAuthMechanism::OAuthBearer => {
                format!("n,a={},", user.replace('=', "=3D").replace(',', "=2C"))
            }
        }
        .into_bytes();
        raw.push(1);
        raw.extend_from_slice(b"auth=Bearer ");
        raw.extend_from_slice(token.as_bytes());
        raw.extend_from_slice(&[1, 1]);
        raw
    }

    /// What the client answers to the server's error challenge so that the server ends the
    /// exchange with its tagged NO: an empty response for XOAUTH2 (Google's and Microsoft's
    /// documentation), `%x01` for OAUTHBEARER (RFC 7628 §3.2.3).
    pub fn error_answer(self) -> &'static str {
        match self {
            OAuthMechanism::XOAuth2 => "",
            // base64 of 0x01
            OAuthMechanism::OAuthBearer => "AQ==",
        }
    }
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Login::Plain { user, .. } => write!(f, "LOGIN {user}"),
            Login::SaslPlain {
                authzid, authcid, ..
            } => write!(f, "AUTHENTICATE PLAIN {authzid} as {authcid}"),
            Login::OAuth2 {
                user, mechanism, ..
            } => write!(f, "AUTHENTICATE {} as {user}", mechanism.name()),
        }
    }
}

impl Login {
    /// The trace line of a login: who logs in and how, never the password, the token or the
    /// SASL response.
    pub fn trace_line(&self) -> String {
        match self {
            Login::OAuth2 { .. } => format!("{self:?} (token not shown)"),
            _ => format!("{self:?} (password not shown)"),
        }
    }
}

/// What the trace shows of a command line: all of it, except for a `LOGIN` or an
/// `AUTHENTICATE` sent as a plain command, whose arguments (a password, a SASL response with
/// a token) are cut. (Logins are traced by [`Login::trace_line`]; this guards every other
/// path.)
pub(crate) fn traced(command: &str) -> std::borrow::Cow<'_, str> {
    let mut words = command.splitn(3, ' ');
    let verb = words.next().unwrap_or("");
    if verb.eq_ignore_ascii_case("LOGIN") {
        return "LOGIN (credentials not shown)".into();
    }
    if verb.eq_ignore_ascii_case("AUTHENTICATE") {
        let mechanism = words.next().unwrap_or("");
        if words.next().is_some() {
            return format!("AUTHENTICATE {mechanism} (response not shown)").into();
        }
    }
    command.into()
}

/// The `status` of an OAUTHBEARER / XOAUTH2 error challenge (RFC 7628 §3.2.2: base64 of a
/// JSON object such as `{"status":"invalid_token","scope":"…"}`), in words for an error
/// message; the decoded JSON when it has no status, or `None` when it is not base64 text.
fn oauth_challenge_status(challenge: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(challenge.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let text: String = text.chars().filter(|c| !c.is_control()).take(300).collect();
    let status = text.split_once("\"status\"").and_then(|(_, rest)| {
        let rest = rest.trim_start().strip_prefix(':')?.trim_start();
        let rest = rest.strip_prefix('"')?;
        rest.split_once('"').map(|(value, _)| value.to_string())
    });
    Some(match status {
        Some(status) => format!("status {status} ({text})"),
        None => text,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Cannot connect to {address}: {source}")]
    Connect { address: String, source: io::Error },
    #[error("Connection error: {0}")]
    Io(#[from] io::Error),
    #[error("TLS error: {0}")]
    Tls(String),
    /// The TLS settings cannot work (an unreadable or empty `tls_ca`): not worth a retry.
    #[error(transparent)]
    TlsConfig(#[from] TlsError),
    #[error(transparent)]
    Parse(#[from] response::ParseError),
    #[error("{command} failed: {}", server_words(.code, .text))]
    No {
        command: String,
        code: Option<String>,
        text: String,
    },
    #[error("{command} rejected by the server: {}", server_words(.code, .text))]
    Bad {
        command: String,
        code: Option<String>,
        text: String,
    },
    #[error("Server closed the connection: {0}")]
    Bye(String),
    #[error("Server does not support {0}")]
    Unsupported(&'static str),
    #[error("{0}")]
    Aborted(String),
}

fn server_words(code: &Option<String>, text: &str) -> String {
    match code {
        Some(c) => format!("[{c}] {text}"),
        None => text.to_string(),
    }
}

impl Error {
    /// Whether trying again later (on a new connection) may succeed: dropped connections,
    /// `BYE`, and the response codes RFC 5530 defines for temporary conditions.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::Io(_) | Error::Bye(_) => true,
            Error::No { code: Some(c), .. } => {
                let name = c.split_whitespace().next().unwrap_or("");
                matches!(
                    name,
                    "UNAVAILABLE" | "LIMIT" | "THROTTLED" | "INUSE" | "SERVERBUG"
                )
            }
            _ => false,
        }
    }

    /// Whether the server dropped the connection: it closed it (end of stream), reset or
    /// aborted it, or said `BYE` (the close after this client's own LOGOUT never reaches
    /// here). Not this client's own I/O timeout, nor a connection that could not be opened.
    pub fn is_dropped_by_server(&self) -> bool {
        match self {
            Error::Bye(_) => true,
            Error::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            ),
            _ => false,
        }
    }

    /// The server's response code, if it gave one (`OVERQUOTA`, `AUTHENTICATIONFAILED`, …).
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::No { code, .. } | Error::Bad { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// [`Error::code`] with its meaning: `Some(TypedCode::OverQuota)` and so on. The code is
    /// kept as text (name, then its atoms), which is all a NO or BAD carries.
    pub fn code_typed(&self) -> Option<TypedCode> {
        let mut words = self.code()?.split(' ');
        let code = Code {
            name: words.next()?.to_string(),
            args: words
                .map(|w| response::Value::Atom(w.to_string()))
                .collect(),
        };
        TypedCode::parse(&code)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Writes a line of this process's own to the `MAILFERRY_TRACE` file, if there is one, as
/// `ADDRESS # note`: what the caller decided about that server (adaptive throttling's
/// changes to its connection cap). Never a secret.
pub fn trace_note(peer: &str, note: &str) {
    if let Some(sink) = trace_sink() {
        let mut f = sink.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(f, "{peer} # {note}");
    }
}

mod append;
mod mailbox;
pub use mailbox::TreeLists;
mod net;
mod readbuf;
#[cfg(test)]
mod tests;

use net::{Stream, connect_tcp, timed_out, tls_wrap, trace_sink};

/// What SELECT / EXAMINE said about a folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selected {
    pub name: String,
    pub exists: u32,
    pub uid_validity: u32,
    pub uid_next: Option<u32>,
    pub highest_modseq: Option<u64>,
    pub read_only: bool,
}

/// STATUS of a folder, for the one-command "has anything changed" check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FolderStatus {
    pub messages: u32,
    pub uid_validity: u32,
    pub uid_next: u32,
    pub highest_modseq: Option<u64>,
}

/// One message to APPEND. `date` is an INTERNALDATE as the source server sent it.
pub struct AppendRequest<'a> {
    pub mailbox: &'a str,
    pub flags: &'a [String],
    pub date: Option<&'a str>,
    pub message: &'a [u8],
}

/// A large literal being read into its own buffer.
struct Reading {
    literal: TakenLiteral,
    /// Its length, as the server announced it.
    len: usize,
    /// How many of its bytes arrived; the buffer's length is how many are zeroed, which is
    /// at most [`LITERAL_READ`] more.
    filled: usize,
}

pub struct Client {
    stream: Stream,
    rbuf: readbuf::ReadBuf,
    framer: Framer,
    /// Large literals of the response being read, each read into a buffer of its own.
    taken: Vec<TakenLiteral>,
    /// The large literal being read: kept across a failed read.
    reading: Option<Reading>,
    /// Buffers lent by the caller for the next large literals ([`Client::lend_buffers`]).
    spare: Vec<Vec<u8>>,
    /// The largest capacity `rbuf` has had: what the tests check stays small.
    rbuf_peak: usize,
    out: Vec<u8>,
    next_tag: u32,
    caps: BTreeSet<String>,
    /// The text of the server's greeting (`Dovecot ready.`), for recognising the server.
    greeting: String,
    /// Capabilities this client must not use even when advertised (a server profile's).
    forgotten: BTreeSet<String>,
    /// Whether `ENABLE QRESYNC` succeeded (expunges then come as `VANISHED`).
    qresync: bool,
    /// The tag of an `ENABLE QRESYNC` sent ahead of the next command and not answered yet
    /// ([`Client::enable_qresync_with_next`]); its answers are taken out of the responses.
    enabling: Option<String>,
    /// Tagged responses that arrived while waiting for something else (pipelining).
    done: HashMap<String, Response>,
    pub peer: String,
    /// The read and write timeout of the socket, for the error that says it expired.
    timeout: Duration,
}

const READ_CHUNK: usize = 64 * 1024;

/// A literal this long or longer (a message body, in practice) is read straight into a
/// buffer of its exact size, which becomes the body the caller gets: it is never copied out
/// of the read buffer, and the read buffer never grows to a message's size. Shorter literals
/// arrive within a read or two and are copied out as the response is parsed.
const TAKE_LITERAL_AT: usize = READ_CHUNK;

/// The most one read of a taken literal asks for.
const LITERAL_READ: usize = 1 << 20;

const FLUSH_AT: usize = 256 * 1024;

impl Client {
    /// Connects, reads the greeting and, for STARTTLS, upgrades the connection.
    pub fn connect(ep: &Endpoint) -> Result<Client> {
        let address = format!("{}:{}", ep.host, ep.port);
        let tcp = connect_tcp(&address, ep.timeout).map_err(|source| Error::Connect {
            address: address.clone(),
            source,
        })?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(ep.timeout))?;
        tcp.set_write_timeout(Some(ep.timeout))?;
        let stream = match ep.security {
            Security::Tls => Stream::Tls(Box::new(tls_wrap(ep, tcp)?)),
            _ => Stream::Plain(tcp),
        };
        let mut client = Client {
            stream,
            rbuf: readbuf::ReadBuf::with_capacity(READ_CHUNK),
            framer: Framer::default(),
            taken: Vec::new(),
            reading: None,
            spare: Vec::new(),
            rbuf_peak: 0,
            out: Vec::new(),
            next_tag: 1,
            caps: BTreeSet::new(),
            greeting: String::new(),
            forgotten: BTreeSet::new(),
            qresync: false,
            enabling: None,
            done: HashMap::new(),
            peer: address,
            timeout: ep.timeout,
        };
        client.read_greeting()?;
        if ep.security == Security::StartTls {
            if !client.has("STARTTLS") {
                client.capability()?;
            }
            if !client.has("STARTTLS") {
                return Err(Error::Unsupported("STARTTLS"));
            }
            client.run("STARTTLS")?;
            // Anything the server sent before the handshake must not be trusted (RFC 3501
            // §6.2.1): drop it, and forget capabilities learned in the clear.
            client.rbuf.clear();
            client.taken.clear();
            client.reading = None;
            client.framer.reset();
            client.caps.clear();
            let Stream::Plain(tcp) = client.stream else {
                unreachable!("STARTTLS is only issued on a plain stream")
            };
            client.stream = Stream::Tls(Box::new(tls_wrap(ep, tcp)?));
            client.capability()?;
        }
        Ok(client)
    }

    fn read_greeting(&mut self) -> Result<()> {
        match self.read_response()? {
            Response::Untagged(Untagged::Status {
                status: Status::Ok | Status::PreAuth,
                code,
                text,
            }) => {
                self.greeting = text;
                self.absorb_capability_code(&code);
                Ok(())
            }
            Response::Untagged(Untagged::Status {
                status: Status::Bye,
                text,
                ..
            }) => Err(Error::Bye(text)),
            other => Err(Error::Tls(format!(
                "unexpected greeting {other:?} (is this an IMAP port, and is the security setting right?)"
            ))),
        }
    }

    fn absorb_capability_code(&mut self, code: &Option<Code>) {
        if let Some(c) = code
            && c.name == "CAPABILITY"
        {
            self.caps = c
                .args
                .iter()
                .filter_map(|v| v.as_text())
                .map(|s| s.to_ascii_uppercase())
                .collect();
        }
    }

    pub fn has(&self, capability: &str) -> bool {
        self.caps.contains(capability) && !self.forgotten.contains(capability)
    }

    /// The text of the server's greeting, without its response code.
    pub fn greeting(&self) -> &str {
        &self.greeting
    }

    /// Never uses `capability` (upper case, `CONDSTORE`) on this connection, even when the
    /// server advertises it now or later: a server profile says it is broken or unwanted.
    pub fn forget(&mut self, capability: &str) {
        self.forgotten.insert(capability.to_ascii_uppercase());
    }

    pub fn capabilities(&self) -> impl Iterator<Item = &str> {
        self.caps.iter().map(String::as_str)
    }

    pub fn capability(&mut self) -> Result<()> {
        let untagged = self.run("CAPABILITY")?;
        for u in untagged {
            if let Untagged::Capability(c) = u {
                self.caps = c.into_iter().collect();
            }
        }
        Ok(())
    }

    /// Logs in. The password never appears in errors or logs.
    pub fn login(&mut self, login: &Login) -> Result<()> {
        self.trace_line(&login.trace_line());
        let tagged = match login {
            Login::Plain { user, password } => {
                let tag = self.tag();
                let mut line = format!("{tag} LOGIN ").into_bytes();
                push_astring(&mut line, user.as_bytes(), self.has("LITERAL+"));
                line.push(b' ');
                push_astring(&mut line, password.as_bytes(), self.has("LITERAL+"));
                self.send_with_sync_literals(&line)?;
                self.finish(&tag, "LOGIN")?
            }
            Login::SaslPlain {
                authzid,
                authcid,
                password,
            } => {
                let mut raw = Vec::new();
                raw.extend_from_slice(authzid.as_bytes());
                raw.push(0);
                raw.extend_from_slice(authcid.as_bytes());
                raw.push(0);
                raw.extend_from_slice(password.as_bytes());
                let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
                let tag = self.tag();
                if self.has("SASL-IR") {
                    self.out.extend_from_slice(
                        format!("{tag} AUTHENTICATE PLAIN {encoded}\r\n").as_bytes(),
                    );
                } else {
                    self.out
                        .extend_from_slice(format!("{tag} AUTHENTICATE PLAIN\r\n").as_bytes());
                    self.wait_continuation()?;
                    self.out
                        .extend_from_slice(format!("{encoded}\r\n").as_bytes());
                }
                self.finish(&tag, "AUTHENTICATE PLAIN")?
            }
            Login::OAuth2 {
                user,
                token,
                mechanism,
            } => self.authenticate_oauth(user, token, *mechanism)?,
        };
        self.absorb_capability_code(&tagged);
        if tagged.is_none() || self.caps.is_empty() || !self.caps.contains("IMAP4REV1") {
            self.capability()?;
        }
        Ok(())
    }

    /// `AUTHENTICATE XOAUTH2` / `OAUTHBEARER`: the initial response inline with SASL-IR, else
    /// after the server's empty continuation. A server that refuses the token sends its error
    /// as a continuation first; it is answered as the mechanism requires, and the tagged NO
    /// that follows is the error, with the challenge's status added to the server's words.
    fn authenticate_oauth(
        &mut self,
        user: &str,
        token: &str,
        mechanism: OAuthMechanism,
    ) -> Result<Option<Code>> {
        let encoded = base64::engine::general_purpose::STANDARD
            .encode(mechanism.initial_response(user, token));
        let name = mechanism.name();
        let command = format!("AUTHENTICATE {name}");
        let tag = self.tag();
        if self.has("SASL-IR") {
            self.out
                .extend_from_slice(format!("{tag} {command} {encoded}\r\n").as_bytes());
        } else {
            self.out
                .extend_from_slice(format!("{tag} {command}\r\n").as_bytes());
            self.wait_continuation_for(&tag, &command)?;
            self.out
                .extend_from_slice(format!("{encoded}\r\n").as_bytes());
        }
        drop(encoded);
        let mut challenge = None;
        loop {
            match self.read_response()? {
                Response::Continuation(text) => {
                    if challenge.is_some() {
                        return Err(Error::Aborted(format!(
                            "{command}: the server asked for a second continuation"
                        )));
                    }
                    challenge = Some(oauth_challenge_status(&text));
                    self.out
                        .extend_from_slice(format!("{}\r\n", mechanism.error_answer()).as_bytes());
                }
                Response::Tagged {
                    tag: t,
                    status,
                    code,
                    text,
                } if t == tag => {
                    if status == Status::Ok {
                        return Ok(code);
                    }
                    let text = match challenge.flatten() {
                        Some(status) => format!("{text} (the server's OAuth2 {status})"),
                        None => text,
                    };
                    return Err(status_error(&command, status, code, text));
                }
                Response::Tagged { tag, .. } => {
                    return Err(Error::Aborted(format!(
                        "{command}: an answer to an unknown command {tag} arrived"
                    )));
                }
                Response::Untagged(u) => self.check_bye(&u)?,
            }
        }
    }

    /// Waits for the continuation of command `tag`; its tagged answer instead is its error.
    fn wait_continuation_for(&mut self, tag: &str, command: &str) -> Result<()> {
        loop {
            match self.read_response()? {
                Response::Continuation(_) => return Ok(()),
                Response::Tagged {
                    tag: t,
                    status,
                    code,
                    text,
                } if t == tag => {
                    return Err(status_error(
                        command,
                        if status == Status::Ok {
                            Status::No
                        } else {
                            status
                        },
                        code,
                        text,
                    ));
                }
                Response::Tagged { tag, .. } => {
                    return Err(Error::Aborted(format!(
                        "{command}: an answer to an unknown command {tag} arrived"
                    )));
                }
                Response::Untagged(u) => self.check_bye(&u)?,
            }
        }
    }

    /// Sends a command line that may contain `{n}` synchronising literals, waiting for the
    /// server's continuation before each literal's bytes.
    fn send_with_sync_literals(&mut self, line: &[u8]) -> Result<()> {
        let mut rest = line;
        while let Some(pos) = find_sync_literal(rest) {
            let (head, tail) = rest.split_at(pos);
            self.out.extend_from_slice(head);
            self.wait_continuation()?;
            rest = tail;
        }
        self.out.extend_from_slice(rest);
        self.out.extend_from_slice(b"\r\n");
        Ok(())
    }

    fn wait_continuation(&mut self) -> Result<()> {
        loop {
            match self.read_response()? {
                Response::Continuation(_) => return Ok(()),
                Response::Tagged {
                    tag,
                    status,
                    code,
                    text,
                } => {
                    if status != Status::Ok {
                        return Err(status_error("command", status, code, text));
                    }
                    self.done.insert(
                        tag.clone(),
                        Response::Tagged {
                            tag,
                            status,
                            code,
                            text,
                        },
                    );
                }
                Response::Untagged(u) => self.check_bye(&u)?,
            }
        }
    }

    fn check_bye(&mut self, u: &Untagged) -> Result<()> {
        if let Untagged::Status {
            status: Status::Bye,
            text,
            ..
        } = u
        {
            // A BYE is followed by the server closing; report the server's words then.
            return Err(Error::Bye(text.clone()));
        }
        Ok(())
    }

    fn trace(&self, command: &str) {
        self.trace_line(&traced(command));
    }

    fn trace_line(&self, line: &str) {
        if let Some(sink) = trace_sink() {
            let mut f = sink.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(f, "{} {line}", self.peer);
        }
    }

    fn tag(&mut self) -> String {
        let t = format!("m{}", self.next_tag);
        self.next_tag += 1;
        t
    }

    /// Queues `command` (a complete line without tag and CRLF) under a new tag, traced, to go
    /// out with the next flush; returns the tag.
    fn queue(&mut self, command: &str) -> String {
        self.trace(command);
        let tag = self.tag();
        self.out
            .extend_from_slice(format!("{tag} {command}\r\n").as_bytes());
        tag
    }

    /// Sends the commands queued so far (by the `_send` and `_queue` methods) without
    /// reading anything: they travel while the caller does other work.
    pub fn flush(&mut self) -> Result<()> {
        if !self.out.is_empty() {
            let timeout = self.timeout;
            self.stream
                .write_all(&self.out)
                .and_then(|()| self.stream.flush())
                .map_err(|e| Error::Io(timed_out(e, timeout)))?;
            self.out.clear();
        }
        Ok(())
    }

    /// Reads one whole response, flushing pending output first. The answers of an `ENABLE
    /// QRESYNC` sent ahead ([`Client::enable_qresync_with_next`]) are taken here, whatever
    /// command is being read, and not returned.
    pub fn read_response(&mut self) -> Result<Response> {
        loop {
            let r = self.read_one_response()?;
            let Some(enabling) = &self.enabling else {
                return Ok(r);
            };
            match &r {
                Response::Tagged { tag, .. } if tag == enabling => self.enabling = None,
                Response::Untagged(Untagged::Other(values)) if mailbox::enabled_qresync(values) => {
                    self.qresync = true;
                }
                _ => return Ok(r),
            }
        }
    }

    fn read_one_response(&mut self) -> Result<Response> {
        self.flush()?;
        loop {
            if self.reading.is_some() {
                self.read_literal()?;
            }
            if let Some(n) = self.framer.frame(self.rbuf.data())? {
                self.framer.reset();
                let parsed =
                    response::parse_with(&self.rbuf.data()[..n], std::mem::take(&mut self.taken));
                self.rbuf.consume(n);
                // After a long response (a SEARCH of a large folder), give the memory back
                // rather than keep it for the connection's lifetime.
                if self.rbuf.capacity() > 4 * READ_CHUNK && self.rbuf.len() < READ_CHUNK {
                    self.rbuf.shrink_to(2 * READ_CHUNK);
                }
                return Ok(parsed?);
            }
            if let Some((at, len)) = self.framer.pending_literal()
                && len >= TAKE_LITERAL_AT
            {
                self.take_literal(at, len)?;
                continue;
            }
            let got = self
                .rbuf
                .read_from(&mut self.stream, READ_CHUNK)
                .map_err(|e| Error::Io(timed_out(e, self.timeout)))?;
            self.rbuf_peak = self.rbuf_peak.max(self.rbuf.capacity());
            if got == 0 {
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                )));
            }
        }
    }

    /// Takes the literal of `len` bytes that starts at `at` in the read buffer out of it,
    /// into a buffer of its own (a lent one, [`Client::spare_for`], else a fresh one of exactly
    /// that size): what already arrived is moved (the bytes after it close up), the rest is
    /// read straight into it by [`Client::read_literal`].
    fn take_literal(&mut self, at: usize, len: usize) -> Result<()> {
        let mut bytes = self.spare_for(len).unwrap_or_default();
        bytes.try_reserve_exact(len).map_err(|_| {
            Error::Io(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("no memory for a literal of {len} bytes"),
            ))
        })?;
        let here = (self.rbuf.len() - at).min(len);
        self.rbuf.take_into(at, here, &mut bytes);
        self.framer.literal_taken();
        self.reading = Some(Reading {
            literal: TakenLiteral { at, bytes },
            len,
            filled: here,
        });
        Ok(())
    }

    /// The smallest lent buffer that holds `len` bytes, else the largest one, to be grown
    /// (growing a large buffer keeps its pages): emptied.
    fn spare_for(&mut self, len: usize) -> Option<Vec<u8>> {
        let capacity = |i: &usize| self.spare[*i].capacity();
        let all = 0..self.spare.len();
        let i = all
            .clone()
            .filter(|i| capacity(i) >= len)
            .min_by_key(capacity)
            .or_else(|| all.max_by_key(capacity))?;
        let mut buffer = self.spare.swap_remove(i);
        buffer.clear();
        Some(buffer)
    }

    /// Buffers to read the next large literals (message bodies) into, where one is large
    /// enough, instead of fresh memory: the caller's, from bodies it is done with. A literal
    /// taken into one becomes the value the caller gets, as a fresh buffer would.
    pub fn lend_buffers(&mut self, buffers: Vec<Vec<u8>>) {
        self.spare.extend(buffers);
    }

    /// The lent buffers no literal was read into.
    pub fn unused_buffers(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.spare)
    }

    /// Reads the rest of the literal being taken; after an error (a timeout), what arrived
    /// is kept and the next read goes on from there.
    fn read_literal(&mut self) -> Result<()> {
        let Some(r) = &mut self.reading else {
            return Ok(());
        };
        let bytes = &mut r.literal.bytes;
        while r.filled < r.len {
            // The buffer is zeroed ahead of the reads once, a part at a time: a read that
            // returns less than it was offered leaves the rest to the next ones, without
            // zeroing it again (a loopback read returns a fraction of a megabyte).
            if r.filled == bytes.len() {
                let more = (r.len - bytes.len()).min(LITERAL_READ);
                bytes.resize(bytes.len() + more, 0);
            }
            match self.stream.read(&mut bytes[r.filled..]) {
                Ok(0) => {
                    return Err(Error::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    )));
                }
                Ok(n) => r.filled += n,
                Err(e) => return Err(Error::Io(timed_out(e, self.timeout))),
            }
        }
        if let Some(r) = self.reading.take() {
            self.taken.push(r.literal);
        }
        Ok(())
    }

    /// Reads until the tagged response for `tag`, handing untagged responses to `each`.
    fn finish_with(
        &mut self,
        tag: &str,
        command: &str,
        mut each: impl FnMut(Untagged) -> Result<()>,
    ) -> Result<Option<Code>> {
        let mut bye = None;
        let result = loop {
            if let Some(r) = self.done.remove(tag) {
                break r;
            }
            let r = match self.read_response() {
                Ok(r) => r,
                Err(e) => {
                    return Err(match bye {
                        Some(text) => Error::Bye(text),
                        None => e,
                    });
                }
            };
            match r {
                Response::Tagged { tag: ref t, .. } if t == tag => break r,
                Response::Tagged { ref tag, .. } => {
                    self.done.insert(tag.clone(), r);
                }
                Response::Untagged(Untagged::Status {
                    status: Status::Bye,
                    text,
                    ..
                }) => bye = Some(text),
                Response::Untagged(u) => each(u)?,
                Response::Continuation(_) => {
                    return Err(Error::Aborted(format!(
                        "{command}: the server asked for a continuation that was not expected"
                    )));
                }
            }
        };
        let Response::Tagged {
            status, code, text, ..
        } = result
        else {
            unreachable!("only tagged responses end a command")
        };
        if status == Status::Ok {
            Ok(code)
        } else {
            Err(status_error(command, status, code, text))
        }
    }

    fn finish(&mut self, tag: &str, command: &str) -> Result<Option<Code>> {
        self.finish_with(tag, command, |_| Ok(()))
    }

    /// Runs one command (a complete line without tag and CRLF) and returns its untagged data.
    pub fn run(&mut self, command: &str) -> Result<Vec<Untagged>> {
        let mut untagged = Vec::new();
        self.pipeline(&[command], |_, u| untagged.push(u))?;
        Ok(untagged)
    }

    /// Sends `commands` together, all before the first answer is read, then reads their
    /// answers in order, handing `each` every untagged response with the index of the
    /// command being waited for (a server answering in order answers that one). After a
    /// refusal the other answers are still read, so the connection stays in step, and the
    /// first refusal is the error.
    pub(super) fn pipeline<S: AsRef<str>>(
        &mut self,
        commands: &[S],
        each: impl FnMut(usize, Untagged),
    ) -> Result<()> {
        match self
            .pipeline_each(commands, each)?
            .into_iter()
            .find_map(Result::err)
        {
            Some(refused) => Err(refused),
            None => Ok(()),
        }
    }

    /// [`Client::pipeline`], saying how each command went: `Ok` or the server's refusal (NO
    /// or BAD), in the commands' order. Anything else (the connection lost, a BYE) is the
    /// error, at once.
    pub(super) fn pipeline_each<S: AsRef<str>>(
        &mut self,
        commands: &[S],
        mut each: impl FnMut(usize, Untagged),
    ) -> Result<Vec<Result<()>>> {
        let mut tags = Vec::with_capacity(commands.len());
        for command in commands {
            let command = command.as_ref();
            let tag = self.queue(command);
            let verb = command.split(' ').take(2).collect::<Vec<_>>().join(" ");
            tags.push((tag, verb));
        }
        let mut outcomes = Vec::with_capacity(tags.len());
        for (i, (tag, verb)) in tags.iter().enumerate() {
            match self.finish_with(tag, verb, |u| {
                each(i, u);
                Ok(())
            }) {
                Ok(_) => outcomes.push(Ok(())),
                Err(e @ (Error::No { .. } | Error::Bad { .. })) => outcomes.push(Err(e)),
                Err(e) => return Err(e),
            }
        }
        Ok(outcomes)
    }

    /// Ends the session: sends LOGOUT and closes the connection without waiting for the
    /// server's BYE and OK. Every command before it was answered already, so the answer
    /// carries nothing, and waiting for it costs a round trip per connection, which on a
    /// distant server is a good part of a pass with nothing to do. The server reads the LOGOUT
    /// before the end of the connection and logs a logout, as for a client that waited.
    pub fn logout(mut self) {
        self.queue("LOGOUT");
        if self.flush().is_ok() {
            self.stream.close();
        }
    }
}

fn status_error(command: &str, status: Status, code: Option<Code>, text: String) -> Error {
    let code = code.map(|c| {
        let mut s = c.name;
        for a in c.args {
            if let Some(t) = a.as_text() {
                s.push(' ');
                s.push_str(&t);
            }
        }
        s
    });
    let command = command.to_string();
    match status {
        Status::Bad => Error::Bad {
            command,
            code,
            text,
        },
        Status::Bye => Error::Bye(text),
        _ => Error::No {
            command,
            code,
            text,
        },
    }
}
