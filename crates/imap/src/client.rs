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
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rustls::pki_types::ServerName;

use crate::proto::codes::{AppendUid, CopyUid, TypedCode};
use crate::proto::command::{
    MAX_SET_CHARS, find_sync_literal, message_head, push_astring, quote, uid_sets,
};
use crate::response::{self, Code, Fetch, Framer, ListItem, Response, Status, Untagged};
use crate::tls::{self, TlsError};

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
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Login::Plain { user, .. } => write!(f, "LOGIN {user}"),
            Login::SaslPlain {
                authzid, authcid, ..
            } => write!(f, "AUTHENTICATE PLAIN {authzid} as {authcid}"),
        }
    }
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

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

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

pub struct Client {
    stream: Stream,
    rbuf: Vec<u8>,
    framer: Framer,
    out: Vec<u8>,
    next_tag: u32,
    caps: BTreeSet<String>,
    /// Tagged responses that arrived while waiting for something else (pipelining).
    done: HashMap<String, Response>,
    pub peer: String,
    /// The read and write timeout of the socket, for the error that says it expired.
    timeout: Duration,
}

const READ_CHUNK: usize = 64 * 1024;

/// `MAILFERRY_TRACE=FILE` appends every command sent (its first line: never a message body,
/// never a password) to FILE, one line each, prefixed by the server address. For admins
/// debugging a server, and for tests that count what a pass costs.
fn trace_sink() -> Option<&'static std::sync::Mutex<std::fs::File>> {
    static SINK: std::sync::OnceLock<Option<std::sync::Mutex<std::fs::File>>> =
        std::sync::OnceLock::new();
    SINK.get_or_init(|| {
        let path = std::env::var_os("MAILFERRY_TRACE")?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
            .map(std::sync::Mutex::new)
    })
    .as_ref()
}
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
            rbuf: Vec::with_capacity(READ_CHUNK),
            framer: Framer::default(),
            out: Vec::new(),
            next_tag: 1,
            caps: BTreeSet::new(),
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
                ..
            }) => {
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
        self.caps.contains(capability)
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
        self.trace(&format!("{login:?} (password not shown)"));
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
        };
        self.absorb_capability_code(&tagged);
        if tagged.is_none() || self.caps.is_empty() || !self.caps.contains("IMAP4REV1") {
            self.capability()?;
        }
        Ok(())
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
        if let Some(sink) = trace_sink() {
            let mut f = sink.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(f, "{} {command}", self.peer);
        }
    }

    fn tag(&mut self) -> String {
        let t = format!("m{}", self.next_tag);
        self.next_tag += 1;
        t
    }

    fn flush(&mut self) -> Result<()> {
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

    /// Reads one whole response, flushing pending output first.
    pub fn read_response(&mut self) -> Result<Response> {
        self.flush()?;
        loop {
            if let Some(n) = self.framer.frame(&self.rbuf) {
                self.framer.reset();
                let parsed = response::parse(&self.rbuf[..n]);
                self.rbuf.drain(..n);
                // After a large literal, give the memory back rather than keep it for the
                // connection's lifetime.
                if self.rbuf.capacity() > 4 * READ_CHUNK && self.rbuf.len() < READ_CHUNK {
                    self.rbuf.shrink_to(2 * READ_CHUNK);
                }
                return Ok(parsed?);
            }
            let len = self.rbuf.len();
            self.rbuf.resize(len + READ_CHUNK, 0);
            let got = match self.stream.read(&mut self.rbuf[len..]) {
                Ok(n) => n,
                Err(e) => {
                    self.rbuf.truncate(len);
                    return Err(Error::Io(timed_out(e, self.timeout)));
                }
            };
            self.rbuf.truncate(len + got);
            if got == 0 {
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                )));
            }
        }
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
        self.trace(command);
        let tag = self.tag();
        self.out
            .extend_from_slice(format!("{tag} {command}\r\n").as_bytes());
        let mut untagged = Vec::new();
        let verb = command.split(' ').take(2).collect::<Vec<_>>().join(" ");
        self.finish_with(&tag, &verb, |u| {
            untagged.push(u);
            Ok(())
        })?;
        Ok(untagged)
    }

    pub fn namespace(&mut self) -> Result<Option<(String, Option<char>)>> {
        if !self.has("NAMESPACE") {
            return Ok(None);
        }
        for u in self.run("NAMESPACE")? {
            if let Untagged::Namespace(ns) = u {
                return Ok(ns.into_iter().next());
            }
        }
        Ok(None)
    }

    pub fn list(&mut self) -> Result<Vec<ListItem>> {
        Ok(self
            .run("LIST \"\" \"*\"")?
            .into_iter()
            .filter_map(|u| match u {
                Untagged::List(l) => Some(l),
                _ => None,
            })
            .collect())
    }

    pub fn lsub(&mut self) -> Result<Vec<ListItem>> {
        Ok(self
            .run("LSUB \"\" \"*\"")?
            .into_iter()
            .filter_map(|u| match u {
                Untagged::Lsub(l) => Some(l),
                _ => None,
            })
            .collect())
    }

    pub fn status(&mut self, mailbox: &str) -> Result<FolderStatus> {
        let mut items = "MESSAGES UIDNEXT UIDVALIDITY".to_string();
        if self.has("CONDSTORE") {
            items.push_str(" HIGHESTMODSEQ");
        }
        let mut st = FolderStatus::default();
        for u in self.run(&format!("STATUS {} ({items})", quote(mailbox)))? {
            if let Untagged::MailboxStatus { items, .. } = u {
                for (k, v) in items {
                    match k.as_str() {
                        "MESSAGES" => st.messages = v as u32,
                        "UIDNEXT" => st.uid_next = v as u32,
                        "UIDVALIDITY" => st.uid_validity = v as u32,
                        "HIGHESTMODSEQ" => st.highest_modseq = Some(v),
                        _ => {}
                    }
                }
            }
        }
        Ok(st)
    }

    /// SELECT (or EXAMINE when `read_only`), with CONDSTORE where the server has it. Always
    /// sent, even for the folder already selected: callers need its fresh UIDVALIDITY.
    pub fn select(&mut self, mailbox: &str, read_only: bool) -> Result<Selected> {
        let verb = if read_only { "EXAMINE" } else { "SELECT" };
        let condstore = if self.has("CONDSTORE") {
            " (CONDSTORE)"
        } else {
            ""
        };
        self.trace(&format!("{verb} {}", quote(mailbox)));
        let tag = self.tag();
        self.out.extend_from_slice(
            format!("{tag} {verb} {}{condstore}\r\n", quote(mailbox)).as_bytes(),
        );
        let mut sel = Selected {
            name: mailbox.to_string(),
            read_only,
            ..Selected::default()
        };
        let code = self.finish_with(&tag, verb, |u| {
            match u {
                Untagged::Exists(n) => sel.exists = n,
                Untagged::Status {
                    code: Some(code), ..
                } => apply_select_code(&mut sel, &code),
                _ => {}
            }
            Ok(())
        })?;
        if let Some(code) = code
            && code.name == "READ-ONLY"
        {
            sel.read_only = true;
        }
        Ok(sel)
    }

    /// `UID FETCH set (items)`, handing each FETCH response to `each` as it arrives, so a
    /// folder is never held in memory.
    pub fn uid_fetch(
        &mut self,
        set: &str,
        items: &str,
        mut each: impl FnMut(Fetch) -> Result<()>,
    ) -> Result<()> {
        self.trace(&format!("UID FETCH {set} ({items})"));
        let tag = self.tag();
        self.out
            .extend_from_slice(format!("{tag} UID FETCH {set} ({items})\r\n").as_bytes());
        self.finish_with(&tag, "UID FETCH", |u| match u {
            Untagged::Fetch(f) => each(f),
            _ => Ok(()),
        })?;
        Ok(())
    }

    pub fn uid_search(&mut self, criteria: &str) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        for u in self.run(&format!("UID SEARCH {criteria}"))? {
            if let Untagged::Search(uids) = u {
                out.extend(uids);
            }
        }
        Ok(out)
    }

    pub fn create(&mut self, mailbox: &str) -> Result<()> {
        self.run(&format!("CREATE {}", quote(mailbox))).map(drop)
    }

    pub fn subscribe(&mut self, mailbox: &str) -> Result<()> {
        self.run(&format!("SUBSCRIBE {}", quote(mailbox))).map(drop)
    }

    pub fn unsubscribe(&mut self, mailbox: &str) -> Result<()> {
        self.run(&format!("UNSUBSCRIBE {}", quote(mailbox)))
            .map(drop)
    }

    /// Moves messages of the selected folder to another folder (MOVE, RFC 6851, or COPY +
    /// `\Deleted` + UID EXPUNGE), one command per [`uid_sets`] chunk so no command line grows
    /// past RFC 2683's advice. Returns (old UID, new UID) pairs from the chunks' COPYUIDs when
    /// the server reports them. Without MOVE and UIDPLUS the originals stay, flagged
    /// `\Deleted`: a plain EXPUNGE would also remove the user's other deleted messages. When a
    /// chunk fails, the chunks before it have moved.
    pub fn uid_move(&mut self, uids: &[u32], to: &str) -> Result<Vec<(u32, u32)>> {
        let mut pairs = Vec::new();
        for set in uid_sets(uids, MAX_SET_CHARS) {
            if let Some(copied) = self.uid_move_set(&set, to)? {
                pairs.extend(copied.pairs());
            }
        }
        Ok(pairs)
    }

    /// One chunk of [`Client::uid_move`], returning its COPYUID.
    fn uid_move_set(&mut self, set: &str, to: &str) -> Result<Option<CopyUid>> {
        self.trace(&format!("UID MOVE {set} {}", quote(to)));
        let code = if self.has("MOVE") {
            let tag = self.tag();
            self.out
                .extend_from_slice(format!("{tag} UID MOVE {set} {}\r\n", quote(to)).as_bytes());
            // RFC 6851 §4.3: MOVE reports COPYUID in an untagged OK before the tagged one.
            let mut copyuid = None;
            let code = self.finish_with(&tag, "UID MOVE", |u| {
                if let Untagged::Status { code: Some(c), .. } = u
                    && c.name == "COPYUID"
                {
                    copyuid = Some(c);
                }
                Ok(())
            })?;
            copyuid.or(code)
        } else {
            let tag = self.tag();
            self.out
                .extend_from_slice(format!("{tag} UID COPY {set} {}\r\n", quote(to)).as_bytes());
            let code = self.finish(&tag, "UID COPY")?;
            self.run(&format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"))?;
            // UID EXPUNGE (RFC 4315 §2.1) removes only these messages.
            if self.has("UIDPLUS") {
                self.run(&format!("UID EXPUNGE {set}"))?;
            }
            code
        };
        Ok(code.as_ref().and_then(CopyUid::parse))
    }

    /// Sets exactly `flags` (system flags and keywords, as IMAP writes them) on the messages
    /// of the selected folder, replacing what they had: `UID STORE set FLAGS.SILENT (flags)`,
    /// one command per [`uid_sets`] chunk. SILENT spares the untagged FETCH per message (RFC
    /// 3501 §6.4.6).
    pub fn uid_store_flags(&mut self, uids: &[u32], flags: &[String]) -> Result<()> {
        let flags = flags.join(" ");
        for set in uid_sets(uids, MAX_SET_CHARS) {
            self.run(&format!("UID STORE {set} FLAGS.SILENT ({flags})"))?;
        }
        Ok(())
    }

    /// [`Client::uid_fetch`] of the given UIDs, one command per [`uid_sets`] chunk.
    pub fn uid_fetch_uids(
        &mut self,
        uids: &[u32],
        items: &str,
        mut each: impl FnMut(Fetch) -> Result<()>,
    ) -> Result<()> {
        for set in uid_sets(uids, MAX_SET_CHARS) {
            self.uid_fetch(&set, items, &mut each)?;
        }
        Ok(())
    }

    /// Starts an APPEND and returns its tag without waiting for the answer. With LITERAL+ the
    /// message goes out at once (pipelined); otherwise this waits for the continuation.
    pub fn append_send(&mut self, req: &AppendRequest<'_>) -> Result<String> {
        self.trace(&format!(
            "APPEND {} ({} bytes)",
            quote(req.mailbox),
            req.message.len()
        ));
        let tag = self.tag();
        let plus = self.has("LITERAL+");
        let head = format!(
            "{tag} APPEND {}{}",
            quote(req.mailbox),
            message_head(req.flags, req.date, req.message.len(), plus)
        );
        self.out.extend_from_slice(head.as_bytes());
        if !plus {
            self.wait_continuation()?;
        }
        self.push_literal(req.message)?;
        self.end_command()?;
        Ok(tag)
    }

    /// Starts one MULTIAPPEND (RFC 3502) of several messages to one mailbox: the server
    /// stores all of them or none, in one transaction. Needs MULTIAPPEND and LITERAL+.
    pub fn multiappend_send(
        &mut self,
        mailbox: &str,
        reqs: &[AppendRequest<'_>],
    ) -> Result<String> {
        if !self.has("MULTIAPPEND") || !self.has("LITERAL+") {
            return Err(Error::Unsupported("MULTIAPPEND with LITERAL+"));
        }
        self.trace(&format!(
            "APPEND {} ({} messages)",
            quote(mailbox),
            reqs.len()
        ));
        let tag = self.tag();
        self.out
            .extend_from_slice(format!("{tag} APPEND {}", quote(mailbox)).as_bytes());
        for req in reqs {
            self.out.extend_from_slice(
                message_head(req.flags, req.date, req.message.len(), true).as_bytes(),
            );
            self.push_literal(req.message)?;
        }
        self.end_command()?;
        Ok(tag)
    }

    /// A literal's bytes: buffered when small, written straight through when large so a big
    /// message is not copied into the output buffer.
    fn push_literal(&mut self, bytes: &[u8]) -> Result<()> {
        if self.out.len() + bytes.len() > FLUSH_AT {
            self.flush()?;
            self.stream
                .write_all(bytes)
                .map_err(|e| Error::Io(timed_out(e, self.timeout)))?;
        } else {
            self.out.extend_from_slice(bytes);
        }
        Ok(())
    }

    fn end_command(&mut self) -> Result<()> {
        self.out.extend_from_slice(b"\r\n");
        if self.out.len() > FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    /// Waits for a MULTIAPPEND; returns the UIDs in message order when the server has UIDPLUS
    /// and its APPENDUID names exactly `count` of them.
    pub fn multiappend_finish(&mut self, tag: &str, count: usize) -> Result<Option<Vec<u32>>> {
        let code = self.finish(tag, "APPEND")?;
        Ok(code
            .as_ref()
            .and_then(AppendUid::parse)
            .and_then(|a| (a.uids.len() == count).then_some(a.uids)))
    }

    /// Waits for an APPEND started by [`Client::append_send`]; returns `(UIDVALIDITY, UID)`
    /// from APPENDUID when the server has UIDPLUS.
    pub fn append_finish(&mut self, tag: &str) -> Result<Option<(u32, u32)>> {
        let code = self.finish(tag, "APPEND")?;
        Ok(code
            .as_ref()
            .and_then(AppendUid::parse)
            .and_then(|a| match a.uids.as_slice() {
                &[uid] => Some((a.uid_validity.get(), uid)),
                _ => None,
            }))
    }

    pub fn logout(mut self) {
        let _ = self.run("LOGOUT");
    }
}

fn apply_select_code(sel: &mut Selected, code: &Code) {
    let arg = || code.args.first().and_then(|v| v.as_u64());
    match code.name.as_str() {
        "UIDVALIDITY" => sel.uid_validity = arg().unwrap_or(0) as u32,
        "UIDNEXT" => sel.uid_next = arg().map(|v| v as u32),
        "HIGHESTMODSEQ" => sel.highest_modseq = arg(),
        _ => {}
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

/// A socket timeout in words: the OS says "Resource temporarily unavailable" (EAGAIN) when
/// a read or write timeout expires, which tells an admin nothing.
fn timed_out(e: io::Error, timeout: Duration) -> io::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the server did not answer within {} s (the I/O timeout)",
                timeout.as_secs()
            ),
        ),
        _ => e,
    }
}

fn connect_tcp(address: &str, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address found")))
}

fn tls_wrap(
    ep: &Endpoint,
    tcp: TcpStream,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let config = tls::client_config(ep.ca_file.as_deref(), ep.verify_certificates)?;
    let name = ServerName::try_from(ep.host.clone())
        .map_err(|e| Error::Tls(format!("invalid server name {:?}: {e}", ep.host)))?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name)
        .map_err(|e| Error::Tls(e.to_string()))?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    // Complete the handshake now so certificate problems are reported as such.
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| match e.kind() {
                // rustls reports what it refuses (a certificate, a protocol version) as
                // InvalidData: no retry helps. Anything else is the network failing during
                // the handshake (reset, closed, timed out), which a retry may get past.
                io::ErrorKind::InvalidData => {
                    Error::Tls(format!("handshake with {}: {e}", ep.host))
                }
                _ => Error::Io(io::Error::new(
                    e.kind(),
                    format!(
                        "TLS handshake with {}: {}",
                        ep.host,
                        timed_out(e, ep.timeout)
                    ),
                )),
            })?;
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::command::{expand_uid_set, uid_set};

    /// Plays a scripted server on loopback: for each step, reads until the client sent the
    /// expected bytes, then answers. Returns what the client sent in all.
    fn scripted_server(
        steps: Vec<(&'static [u8], &'static [u8])>,
    ) -> (u16, std::thread::JoinHandle<Vec<u8>>) {
        serve(owned(steps), false)
    }

    /// Like [`scripted_server`], but each step's bytes must be the last the client sent before
    /// the answer: a client that does not wait for the server (a `+` continuation, a tagged
    /// OK) fails the test.
    fn lockstep_server(
        steps: Vec<(&'static [u8], &'static [u8])>,
    ) -> (u16, std::thread::JoinHandle<Vec<u8>>) {
        serve(owned(steps), true)
    }

    fn owned(steps: Vec<(&'static [u8], &'static [u8])>) -> Vec<(Vec<u8>, Vec<u8>)> {
        steps
            .into_iter()
            .map(|(e, a)| (e.to_vec(), a.to_vec()))
            .collect()
    }

    fn serve(
        steps: Vec<(Vec<u8>, Vec<u8>)>,
        lockstep: bool,
    ) -> (u16, std::thread::JoinHandle<Vec<u8>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            for (expect, answer) in steps {
                while !seen.windows(expect.len().max(1)).any(|w| w == expect) && !expect.is_empty()
                {
                    let mut buf = [0u8; 4096];
                    let n = sock.read(&mut buf).unwrap();
                    assert!(
                        n > 0,
                        "client closed; sent so far: {:?}",
                        String::from_utf8_lossy(&seen)
                    );
                    seen.extend_from_slice(&buf[..n]);
                }
                if lockstep {
                    assert!(
                        seen.ends_with(&expect),
                        "the client sent more before the server answered: {:?}",
                        String::from_utf8_lossy(&seen)
                    );
                }
                sock.write_all(&answer).unwrap();
            }
            seen
        });
        (port, handle)
    }

    fn plain_endpoint(port: u16) -> Endpoint {
        Endpoint {
            host: "127.0.0.1".into(),
            port,
            security: Security::Plain,
            ca_file: None,
            verify_certificates: true,
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn a_server_that_stops_answering_costs_one_timeout_and_the_error_is_transient() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            sock.write_all(b"* OK [CAPABILITY IMAP4rev1] ready\r\n")
                .unwrap();
            // Neither answers nor closes until the test is done.
            let _ = held.recv();
        });
        let mut ep = plain_endpoint(port);
        ep.timeout = Duration::from_secs(1);
        let mut c = Client::connect(&ep).unwrap();
        let started = std::time::Instant::now();
        let e = c.status("INBOX").unwrap_err();
        let waited = started.elapsed();
        release.send(()).unwrap();
        server.join().unwrap();
        assert!(e.is_transient(), "{e}");
        assert_eq!(
            e.to_string(),
            "Connection error: the server did not answer within 1 s (the I/O timeout)"
        );
        assert!(waited < Duration::from_secs(3), "{waited:?}");
    }

    #[test]
    fn append_without_literal_plus_waits_for_the_continuation() {
        let (port, server) = scripted_server(vec![
            (b"", b"* OK [CAPABILITY IMAP4rev1 UIDPLUS] ready\r\n"),
            (b"{5}\r\n", b"+ go ahead\r\n"),
            (b"hello\r\n", b"m1 OK [APPENDUID 9 4] stored\r\n"),
        ]);
        let mut c = Client::connect(&plain_endpoint(port)).unwrap();
        let flags = vec!["\\Seen".to_string()];
        let tag = c
            .append_send(&AppendRequest {
                mailbox: "Sent Items",
                flags: &flags,
                date: Some("01-Jan-2020 10:00:00 +0000"),
                message: b"hello",
            })
            .unwrap();
        assert_eq!(c.append_finish(&tag).unwrap(), Some((9, 4)));
        drop(c);
        let sent = server.join().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&sent),
            "m1 APPEND \"Sent Items\" (\\Seen) \"01-Jan-2020 10:00:00 +0000\" {5}\r\nhello\r\n"
        );
    }

    #[test]
    fn multiappend_sends_one_command_and_reads_the_uid_set() {
        let (port, server) = scripted_server(vec![
            (
                b"",
                b"* OK [CAPABILITY IMAP4rev1 LITERAL+ MULTIAPPEND UIDPLUS] ready\r\n",
            ),
            (b"two\r\n", b"m1 OK [APPENDUID 7 10:11] done\r\n"),
        ]);
        let mut c = Client::connect(&plain_endpoint(port)).unwrap();
        let reqs = [
            AppendRequest {
                mailbox: "INBOX",
                flags: &[],
                date: None,
                message: b"one",
            },
            AppendRequest {
                mailbox: "INBOX",
                flags: &[],
                date: None,
                message: b"two",
            },
        ];
        let tag = c.multiappend_send("INBOX", &reqs).unwrap();
        assert_eq!(c.multiappend_finish(&tag, 2).unwrap(), Some(vec![10, 11]));
        drop(c);
        assert_eq!(
            String::from_utf8_lossy(&server.join().unwrap()),
            "m1 APPEND \"INBOX\" {3+}\r\none {3+}\r\ntwo\r\n"
        );
    }

    #[test]
    fn a_refused_login_keeps_the_servers_words_and_hides_the_password() {
        let (port, _server) = scripted_server(vec![
            (
                b"",
                b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready\r\n",
            ),
            (
                b"\r\n",
                b"m1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
            ),
        ]);
        let mut c = Client::connect(&plain_endpoint(port)).unwrap();
        let e = c
            .login(&Login::SaslPlain {
                authzid: "alice".into(),
                authcid: "admin".into(),
                password: "s3cret".into(),
            })
            .unwrap_err();
        let text = e.to_string();
        assert_eq!(e.code(), Some("AUTHENTICATIONFAILED"));
        assert!(text.contains("Authentication failed."), "{text}");
        assert!(!text.contains("s3cret"));
        assert!(!e.is_transient());
    }

    #[test]
    fn sasl_plain_without_sasl_ir_sends_the_credentials_after_the_continuation() {
        let (port, server) = lockstep_server(vec![
            (b"", b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n"),
            (b"m1 AUTHENTICATE PLAIN\r\n", b"+ \r\n"),
            (
                b"YWxpY2UAYWRtaW4AczNjcmV0\r\n",
                b"m1 OK [CAPABILITY IMAP4rev1 MOVE] Logged in\r\n",
            ),
        ]);
        let mut c = Client::connect(&plain_endpoint(port)).unwrap();
        c.login(&Login::SaslPlain {
            authzid: "alice".into(),
            authcid: "admin".into(),
            password: "s3cret".into(),
        })
        .unwrap();
        assert!(c.has("MOVE"), "capabilities come from the tagged OK");
        drop(c);
        assert_eq!(
            String::from_utf8_lossy(&server.join().unwrap()),
            // base64("alice\0admin\0s3cret"), RFC 4616 §2.
            "m1 AUTHENTICATE PLAIN\r\nYWxpY2UAYWRtaW4AczNjcmV0\r\n"
        );
    }

    #[test]
    fn login_with_an_8bit_password_waits_for_the_continuation_before_the_literal() {
        let (port, server) = lockstep_server(vec![
            (b"", b"* OK [CAPABILITY IMAP4rev1] ready\r\n"),
            (b"m1 LOGIN \"bob\" {9}\r\n", b"+ OK\r\n"),
            (
                "p\u{e4}ssword\r\n".as_bytes(),
                b"m1 OK [CAPABILITY IMAP4rev1] Logged in\r\n",
            ),
        ]);
        let mut c = Client::connect(&plain_endpoint(port)).unwrap();
        c.login(&Login::Plain {
            user: "bob".into(),
            password: "p\u{e4}ssword".into(),
        })
        .unwrap();
        drop(c);
        assert_eq!(
            String::from_utf8(server.join().unwrap()).unwrap(),
            "m1 LOGIN \"bob\" {9}\r\np\u{e4}ssword\r\n"
        );
    }

    #[test]
    fn append_without_literal_plus_sends_nothing_before_the_continuation() {
        let (port, _server) = lockstep_server(vec![
            (b"", b"* OK [CAPABILITY IMAP4rev1 UIDPLUS] ready\r\n"),
            (b"{5}\r\n", b"+ go ahead\r\n"),
            (b"hello\r\n", b"m1 OK [APPENDUID 9 4] stored\r\n"),
        ]);
        let mut c = Client::connect(&plain_endpoint(port)).unwrap();
        let tag = c
            .append_send(&AppendRequest {
                mailbox: "INBOX",
                flags: &[],
                date: None,
                message: b"hello",
            })
            .unwrap();
        assert_eq!(c.append_finish(&tag).unwrap(), Some((9, 4)));
    }

    #[test]
    fn without_move_uid_move_copies_flags_deleted_and_expunges_only_those_uids() {
        let (port, server) = lockstep_server(vec![
            (b"", b"* OK [CAPABILITY IMAP4rev1 UIDPLUS] ready\r\n"),
            (
                b"m1 UID COPY 3:4,9 \"Archive\"\r\n",
                b"m1 OK [COPYUID 77 3:4,9 10:12] Copy completed.\r\n",
            ),
            (
                b"m2 UID STORE 3:4,9 +FLAGS.SILENT (\\Deleted)\r\n",
                b"m2 OK Store completed.\r\n",
            ),
            (
                b"m3 UID EXPUNGE 3:4,9\r\n",
                b"* 3 EXPUNGE\r\n* 2 EXPUNGE\r\n* 1 EXPUNGE\r\nm3 OK Expunge completed.\r\n",
            ),
        ]);
        let mut c = Client::connect(&plain_endpoint(port)).unwrap();
        let pairs = c.uid_move(&[3, 4, 9], "Archive").unwrap();
        assert_eq!(pairs, [(3, 10), (4, 11), (9, 12)]);
        drop(c);
        assert_eq!(
            String::from_utf8_lossy(&server.join().unwrap()),
            "m1 UID COPY 3:4,9 \"Archive\"\r\n\
             m2 UID STORE 3:4,9 +FLAGS.SILENT (\\Deleted)\r\n\
             m3 UID EXPUNGE 3:4,9\r\n"
        );
    }

    /// Without UIDPLUS there is no UID EXPUNGE, and a plain EXPUNGE would also remove the
    /// user's own `\Deleted` messages: the originals stay, flagged.
    #[test]
    fn without_move_or_uidplus_the_originals_stay_flagged_deleted() {
        let (port, server) = lockstep_server(vec![
            (b"", b"* OK [CAPABILITY IMAP4rev1] ready\r\n"),
            (
                b"m1 UID COPY 5 \"Archive\"\r\n",
                b"m1 OK Copy completed.\r\n",
            ),
            (
                b"m2 UID STORE 5 +FLAGS.SILENT (\\Deleted)\r\n",
                b"m2 OK Store completed.\r\n",
            ),
            (b"m3 NOOP\r\n", b"m3 OK NOOP completed.\r\n"),
        ]);
        let mut c = Client::connect(&plain_endpoint(port)).unwrap();
        assert_eq!(c.uid_move(&[5], "Archive").unwrap(), []);
        c.run("NOOP").unwrap();
        drop(c);
        let sent = String::from_utf8(server.join().unwrap()).unwrap();
        assert!(!sent.contains("EXPUNGE"), "{sent}");
    }

    #[test]
    fn pipelined_appends_answered_out_of_order_each_get_their_own_outcome() {
        let (port, server) = scripted_server(vec![
            (
                b"",
                b"* OK [CAPABILITY IMAP4rev1 LITERAL+ UIDPLUS] ready\r\n",
            ),
            (
                b"two\r\n",
                b"m2 OK [APPENDUID 9 5] Append completed.\r\n\
                  m1 NO [OVERQUOTA] Quota exceeded (mailbox for user is full)\r\n",
            ),
        ]);
        let mut c = Client::connect(&plain_endpoint(port)).unwrap();
        let message = |m: &'static [u8]| AppendRequest {
            mailbox: "INBOX",
            flags: &[],
            date: None,
            message: m,
        };
        let first = c.append_send(&message(b"one")).unwrap();
        let second = c.append_send(&message(b"two")).unwrap();
        let e = c.append_finish(&first).unwrap_err();
        assert_eq!(e.code_typed(), Some(TypedCode::OverQuota));
        assert!(!e.is_transient());
        assert!(e.to_string().contains("Quota exceeded"), "{e}");
        assert_eq!(c.append_finish(&second).unwrap(), Some((9, 5)));
        drop(c);
        assert_eq!(
            String::from_utf8_lossy(&server.join().unwrap()),
            "m1 APPEND \"INBOX\" {3+}\r\none\r\nm2 APPEND \"INBOX\" {3+}\r\ntwo\r\n"
        );
    }

    #[test]
    fn bye_in_the_middle_of_a_command_is_a_transient_error_with_the_servers_words() {
        let (port, _server) = scripted_server(vec![
            (b"", b"* OK [CAPABILITY IMAP4rev1] ready\r\n"),
            (
                b"m1 UID FETCH 1:* (UID FLAGS)\r\n",
                b"* 1 FETCH (UID 5 FLAGS (\\Seen))\r\n* BYE Server shutting down.\r\n",
            ),
        ]);
        let mut c = Client::connect(&plain_endpoint(port)).unwrap();
        let mut uids = Vec::new();
        let e = c
            .uid_fetch("1:*", "UID FLAGS", |f| {
                uids.extend(f.uid());
                Ok(())
            })
            .unwrap_err();
        assert_eq!(uids, [5], "data before the BYE is still handed over");
        assert!(
            matches!(&e, Error::Bye(text) if text == "Server shutting down."),
            "{e}"
        );
        assert!(e.is_transient());
    }

    /// 10,000 scattered UIDs are one command line of ~80,000 characters unchunked; RFC 2683
    /// §3.2.1.5 advises ~1,000. Each chunk's COPYUID is merged into one list of pairs.
    #[test]
    fn a_large_scattered_uid_move_is_sent_as_several_short_commands() {
        let uids: Vec<u32> = (0..10_000).map(|i| 1_000_001 + 2 * i).collect();
        let sets = uid_sets(&uids, MAX_SET_CHARS);
        assert!(sets.len() > 1);
        let mut steps = vec![(
            Vec::new(),
            b"* OK [CAPABILITY IMAP4rev1 MOVE UIDPLUS] ready\r\n".to_vec(),
        )];
        for (i, set) in sets.iter().enumerate() {
            let tag = format!("m{}", i + 1);
            let to = uid_set(expand_uid_set(set).unwrap().iter().map(|u| u - 1_000_000));
            steps.push((
                format!("{tag} UID MOVE {set} \"Archive\"\r\n").into_bytes(),
                format!("* OK [COPYUID 8 {set} {to}] Moved UIDs.\r\n{tag} OK Move completed.\r\n")
                    .into_bytes(),
            ));
        }
        let (port, server) = serve(steps, true);
        let mut c = Client::connect(&plain_endpoint(port)).unwrap();
        let pairs = c.uid_move(&uids, "Archive").unwrap();
        let expected: Vec<(u32, u32)> = uids.iter().map(|&u| (u, u - 1_000_000)).collect();
        assert_eq!(pairs, expected);
        drop(c);
        let sent = String::from_utf8(server.join().unwrap()).unwrap();
        let lines: Vec<&str> = sent.split_terminator("\r\n").collect();
        assert_eq!(lines.len(), sets.len());
        for line in lines {
            assert!(
                line.starts_with('m') && line.contains(" UID MOVE "),
                "{line}"
            );
            assert!(line.len() + 2 <= 1_000, "{} characters", line.len() + 2);
        }
    }

    #[test]
    fn uid_store_flags_replaces_the_flags_silently() {
        let (port, server) = lockstep_server(vec![
            (b"", b"* OK [CAPABILITY IMAP4rev1] ready\r\n"),
            (
                b"m1 UID STORE 1:3,7 FLAGS.SILENT (\\Seen $Label1)\r\n",
                b"m1 OK Store completed.\r\n",
            ),
            (
                b"m2 UID STORE 9 FLAGS.SILENT ()\r\n",
                b"m2 OK Store completed.\r\n",
            ),
        ]);
        let mut c = Client::connect(&plain_endpoint(port)).unwrap();
        let flags = ["\\Seen".to_string(), "$Label1".to_string()];
        c.uid_store_flags(&[1, 2, 3, 7], &flags).unwrap();
        c.uid_store_flags(&[9], &[]).unwrap();
        c.uid_store_flags(&[], &flags).unwrap();
        drop(c);
        assert_eq!(
            String::from_utf8_lossy(&server.join().unwrap()),
            "m1 UID STORE 1:3,7 FLAGS.SILENT (\\Seen $Label1)\r\nm2 UID STORE 9 FLAGS.SILENT ()\r\n"
        );
    }

    #[test]
    fn uid_fetch_uids_sends_one_fetch_per_chunk() {
        let uids: Vec<u32> = (1..=400).map(|i| 3 * i).collect();
        let sets = uid_sets(&uids, MAX_SET_CHARS);
        assert_eq!(sets.len(), 2);
        let mut steps = vec![(
            Vec::new(),
            b"* OK [CAPABILITY IMAP4rev1] ready\r\n".to_vec(),
        )];
        for (i, set) in sets.iter().enumerate() {
            let tag = format!("m{}", i + 1);
            let first = expand_uid_set(set).unwrap()[0];
            steps.push((
                format!("{tag} UID FETCH {set} (UID)\r\n").into_bytes(),
                format!("* 1 FETCH (UID {first})\r\n{tag} OK Fetch completed.\r\n").into_bytes(),
            ));
        }
        let (port, _server) = serve(steps, true);
        let mut c = Client::connect(&plain_endpoint(port)).unwrap();
        let mut seen = Vec::new();
        c.uid_fetch_uids(&uids, "UID", |f| {
            seen.extend(f.uid());
            Ok(())
        })
        .unwrap();
        // `3,6,9,12,…,702` is 899 characters; `,705` would pass 900.
        assert_eq!(seen, [3, 705]);
    }

    #[test]
    fn code_typed_reads_the_code_a_no_carried() {
        let no = |code: &str| Error::No {
            command: "CREATE".into(),
            code: Some(code.into()),
            text: "x".into(),
        };
        assert_eq!(
            no("ALREADYEXISTS").code_typed(),
            Some(TypedCode::AlreadyExists)
        );
        assert_eq!(no("TRYCREATE").code_typed(), Some(TypedCode::TryCreate));
        assert_eq!(Error::Bye("bye".into()).code_typed(), None);
    }

    #[test]
    fn transient_errors() {
        let no = |code: &str| Error::No {
            command: "APPEND".into(),
            code: Some(code.into()),
            text: "x".into(),
        };
        assert!(no("UNAVAILABLE").is_transient());
        assert!(no("THROTTLED").is_transient());
        assert!(!no("OVERQUOTA").is_transient());
        assert!(Error::Bye("bye".into()).is_transient());
    }
}
