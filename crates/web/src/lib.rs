//! mailferry's web UI (SPEC §7): a blocking HTTP/1.1 server on one address, a page compiled
//! into the binary, a JSON API and a server-sent-events stream of live progress.
//!
//! The web crate owns its port, [`Services`]: narrow, JSON-shaped calls that the command line
//! implements on the core. The UI therefore never reaches into the domain, and both always
//! agree because they run the same code.
//!
//! Security: the console can start migrations and change entries, so every request must
//! carry the per-start token's cookie (pages, API and event stream alike); the `Host` must be
//! the listen address (against DNS rebinding) and a state-changing request's `Origin`, when
//! present, must be the console's own (against cross-site requests). No secret of the job is
//! ever sent to the browser: the services return what the CLI prints, which holds none, and
//! the connection forms show a secret only as its reference (a variable's name, a file's path).

mod http;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use http::{Request, Response};

/// The default address of `mailferry serve` without `--listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8025";

/// What went wrong in a service, and so which HTTP status the UI gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request cannot be done as asked (HTTP 400): nothing changed.
    BadInput,
    /// A server, directory or feature is not available (HTTP 503).
    Unavailable,
    /// Anything else (HTTP 500).
    Internal,
}

impl ErrorKind {
    fn status(self) -> u16 {
        match self {
            ErrorKind::BadInput => 400,
            ErrorKind::Unavailable => 503,
            ErrorKind::Internal => 500,
        }
    }

    fn key(self) -> &'static str {
        match self {
            ErrorKind::BadInput => "bad_input",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ServiceError {
    pub kind: ErrorKind,
    pub message: String,
    /// What the page can show beside the message: `{"problems": [{"field", "message"}]}` for
    /// a refused form. Merged into the error's JSON.
    pub details: Option<Value>,
}

impl ServiceError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ServiceError {
            kind,
            message: message.into(),
            details: None,
        }
    }
    pub fn bad_input(message: impl Into<String>) -> Self {
        ServiceError::new(ErrorKind::BadInput, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        ServiceError::new(ErrorKind::Unavailable, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        ServiceError::new(ErrorKind::Internal, message)
    }
    /// The same error with details for the page (an object; its keys join the error's JSON).
    #[must_use]
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }
}

pub type ServiceResult = Result<Value, ServiceError>;

/// The entries as the console sends them: the whole list as one JSON text (exactly `status
/// --json`) and each entry's own JSON text with its ID, in the list's order. Text, not a
/// `Value` tree: for 10,000 entries a tree took about 50 MB, and every event stream kept one
/// more to compare with; an event stream now keeps only references to these texts.
#[derive(Debug, Default)]
pub struct Entries {
    pub text: Arc<str>,
    pub each: Vec<(Arc<str>, Arc<str>)>,
}

impl Entries {
    /// From a `status --json` value.
    pub fn of(v: &Value) -> Entries {
        Entries {
            text: v.to_string().into(),
            each: entry_list(v)
                .map(|(id, e)| (id.into(), e.to_string().into()))
                .collect(),
        }
    }
}

/// The web UI's port: what the console asks of the application. Every answer is the JSON the
/// matching CLI command prints with `--json` (SPEC §4) where there is one.
pub trait Services: Send + Sync {
    /// `{"name", "path", "connections": {"source": {"host", "port", "kind", "directory"},
    /// "target": {…}}}`; `directory` is the directory URL or null.
    fn job(&self) -> ServiceResult;
    /// Exactly `status --json`: `{"entries": [...]}`.
    fn entries(&self) -> ServiceResult;
    /// [`Services::entries`] as [`Entries`] texts, which a service may keep ready and share:
    /// a console's first load and each event stream's first tick send the whole text as it
    /// is, and the streams compare each entry's text with what they sent.
    fn entries_shared(&self) -> Result<Arc<Entries>, ServiceError> {
        self.entries().map(|v| Arc::new(Entries::of(&v)))
    }
    /// A token that changes whenever [`Services::entries`] may answer differently, or `None`
    /// when there is no cheap way to tell. The event stream reads the entries again only when
    /// it changes: with 10,000 entries, reading and comparing them every second would keep a
    /// core busy for each browser watching.
    fn entries_version(&self) -> Option<String> {
        None
    }
    /// Exactly `check --json`: `{"ok", "servers": [{"side", "checks": [...]}]}`.
    fn check(&self) -> ServiceResult;
    /// Exactly `refresh-addresses --json` for these entry IDs, `report` included.
    fn refresh(&self, ids: &[String]) -> ServiceResult;
    /// Starts a pass over these entries in the background and returns at once.
    fn start_migration(&self, ids: &[String]) -> ServiceResult;
    fn stop_migration(&self) -> ServiceResult;
    /// Every message of one entry that the latest migration could not copy: `{"id",
    /// "failures": [{"folder", "uid", "size", "message_id", "reason"}]}`, the `errors` of that
    /// entry in `migrate --json`. Bad input for an ID that names no entry.
    fn failures(&self, id: &str) -> ServiceResult;
    /// A snapshot: `{"running", "entries": {ID: {"state", "copied", "bytes",
    /// "planned_messages", "planned_bytes", "rate"}}, "overall": {…same counters…}}`.
    fn progress(&self) -> ServiceResult;
    /// `match --auto` limited to these entries.
    fn match_auto(&self, ids: &[String]) -> ServiceResult;
    /// `match --set ID=ADDRESS`.
    fn match_set(&self, id: &str, address: &str) -> ServiceResult;
    /// `match --skip` for these entries.
    fn skip(&self, ids: &[String]) -> ServiceResult;
    /// `match --create` for these entries: their mailboxes are to be created on the target.
    fn match_create(&self, ids: &[String]) -> ServiceResult;
    /// `match --stage N --mailbox …` for these entries.
    fn stage(&self, ids: &[String], stage: u32) -> ServiceResult;
    /// `create --json`: creates the target mailboxes of entries waiting for creation.
    fn create(&self) -> ServiceResult;
    /// `report --kind KIND --format FORMAT`: kind `migration` | `refresh`, format `html` |
    /// `csv` | `json`.
    /// `run`: the run's number as [`Services::runs`] lists it; `None` for the latest.
    fn report(&self, kind: &str, format: &str, run: Option<i64>) -> Result<String, ServiceError>;
    /// `report --list --json`: `{"runs": [{"kind", "run", "started", "finished", "entries",
    /// "copied", "failed"}]}`, newest first.
    fn runs(&self) -> ServiceResult;
    /// The forms of the job's connections and directories: `{"path", "sections": [{"section",
    /// "title", "present", "kind", "fields": [{"name", "key", "label", "input", "choices",
    /// "hint", "value"}]}]}`. A secret's value is its reference (`{"env": NAME}` or
    /// `{"file": PATH}`), never the secret.
    fn connections(&self) -> ServiceResult;
    /// Writes a form's `fields` (name → value, `null` to remove) into `section` of the job
    /// file: `{"section", "changed", "message"}`. A refused form is bad input with
    /// `{"problems": [{"field", "message"}]}` as details, and changes nothing.
    fn reconfigure(&self, section: &str, fields: &Value) -> ServiceResult;
}

#[derive(Debug, Clone, Copy)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    /// Whether the admin chose the address (`--listen`). A default address that is taken
    /// falls back to a free port; a chosen one is an error.
    pub explicit_listen: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("Unable to listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "Not listening on {0}: an address that means every interface would accept requests \
         for any host name, which the console refuses (DNS rebinding). Give the address of one \
         interface, such as --listen 192.0.2.10:8025, or keep the default 127.0.0.1:8025 and \
         reach it through an SSH tunnel (ssh -L 8025:127.0.0.1:8025 HOST)"
    )]
    Unspecified(SocketAddr),
    #[error("Unable to read random bytes for the access token from /dev/urandom: {0}")]
    Random(#[source] std::io::Error),
    #[error("The web server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// More simultaneous connections than a console needs are refused, so a runaway client
/// cannot exhaust the process's threads.
const MAX_CONNECTIONS: usize = 64;

struct Server {
    services: Arc<dyn Services>,
    shutdown: Arc<AtomicBool>,
    token: String,
    cookie_name: String,
    /// `Host` values that name this server.
    hosts: Vec<String>,
    /// The `Origin`s of this server's own pages.
    origins: Vec<String>,
    connections: AtomicUsize,
}

/// Binds, prints `Open http://HOST:PORT/?token=TOKEN` as the first line on standard output,
/// and serves until `shutdown` is set.
pub fn serve(
    cfg: ServeConfig,
    services: Arc<dyn Services>,
    shutdown: Arc<AtomicBool>,
) -> Result<(), WebError> {
    if cfg.listen.ip().is_unspecified() {
        return Err(WebError::Unspecified(cfg.listen));
    }
    let listener = match TcpListener::bind(cfg.listen) {
        Ok(l) => l,
        Err(e) if !cfg.explicit_listen && e.kind() == std::io::ErrorKind::AddrInUse => {
            let any = SocketAddr::new(cfg.listen.ip(), 0);
            TcpListener::bind(any).map_err(|source| WebError::Bind { addr: any, source })?
        }
        Err(source) => {
            return Err(WebError::Bind {
                addr: cfg.listen,
                source,
            });
        }
    };
    let addr = listener.local_addr()?;
    let host = host_of(addr);
    if !addr.ip().is_loopback() {
        eprintln!(
            "mailferry: WARNING: listening on {host}, which is not a loopback address: the \
             console travels unencrypted over the network, and anyone who sees the token can \
             control this job (an SSH tunnel to 127.0.0.1 keeps it on this machine)"
        );
    }
    let token = random_token()?;
    let port = addr.port();
    let mut hosts = vec![format!("127.0.0.1:{port}"), format!("localhost:{port}")];
    if !hosts.contains(&host) {
        hosts.push(host.clone());
    }
    let server = Arc::new(Server {
        services,
        shutdown,
        origins: hosts.iter().map(|h| format!("http://{h}")).collect(),
        hosts,
        // Cookies are per host, not per port: two consoles on one machine must not clash.
        cookie_name: format!("mailferry_{port}"),
        token,
        connections: AtomicUsize::new(0),
    });
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "Open http://{host}/?token={}", server.token)?;
        out.flush()?;
    }
    // A blocking accept takes each connection at once (polling a non-blocking one made every
    // request wait for the next poll, 25 ms on average); a watcher wakes it with a connection
    // of its own once `shutdown` is set.
    let wake = SocketAddr::new(
        match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        },
        port,
    );
    {
        let shutdown = Arc::clone(&server.shutdown);
        std::thread::Builder::new()
            .name("web-shutdown".into())
            .spawn(move || {
                while !shutdown.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
            })?;
    }
    loop {
        let accepted = listener.accept();
        if server.shutdown.load(Ordering::SeqCst) {
            break;
        }
        match accepted {
            Ok((stream, _)) => {
                let s = Arc::clone(&server);
                let spawned = std::thread::Builder::new()
                    .name("web".into())
                    .spawn(move || s.connection(stream));
                if let Err(e) = spawned {
                    eprintln!("mailferry: Unable to start a connection thread: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of file descriptors and the like: say so, and keep serving.
                eprintln!("mailferry: Unable to accept a connection: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    Ok(())
}

fn host_of(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

fn random_token() -> Result<String, WebError> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(WebError::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compares without an early exit, so the time taken says nothing about the token.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The page, compiled in: no external resources, no build step.
const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The page's policy: its own scripts and styles only, framed by nobody but itself (the
/// Reports tab frames the report pages).
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                        connect-src 'self'; img-src 'self' data:; frame-src 'self'; \
                        frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
/// A report page has inline styles and no scripts, and only the console may frame it.
const REPORT_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'; base-uri 'none'";

enum Reply {
    Full(Response),
    Events,
}

impl Server {
    fn connection(&self, stream: TcpStream) {
        let n = self.connections.fetch_add(1, Ordering::SeqCst);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(15)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(15)));
        // An answer goes out as a head and a body: with Nagle's algorithm the body waits for
        // the client's delayed ACK of the head, 40 ms on Linux, on every request.
        let _ = stream.set_nodelay(true);
        if n >= MAX_CONNECTIONS {
            let _ = http::write_response(&stream, &Response::text(503, "Too many connections"));
        } else {
            match http::read_request(&stream) {
                Ok(req) => match self.handle(&req) {
                    Reply::Full(r) => {
                        let _ = http::write_response(&stream, &r);
                    }
                    Reply::Events => self.events(&stream),
                },
                Err(http::ReadError::Bad(why)) => {
                    let _ = http::write_response(&stream, &Response::text(400, why));
                }
                Err(http::ReadError::Gone) => {}
            }
        }
        self.connections.fetch_sub(1, Ordering::SeqCst);
    }

    fn handle(&self, req: &Request) -> Reply {
        // DNS rebinding: a page of another site that resolves its name to 127.0.0.1 sends
        // its own name as Host.
        if !req
            .header("host")
            .is_some_and(|h| self.hosts.iter().any(|ok| ok.eq_ignore_ascii_case(h)))
        {
            return Reply::Full(Response::text(
                421,
                "This console answers only to its own address",
            ));
        }
        if req.method == "GET"
            && req.path == "/"
            && let Some(t) = req.query("token")
        {
            if !same_secret(t, &self.token) {
                return Reply::Full(unauthorised());
            }
            // The token leaves the address bar (and the history) at once; the cookie keeps it.
            return Reply::Full(
                Response::text(303, "Opening the console")
                    .with("Location", "/")
                    .with(
                        "Set-Cookie",
                        format!(
                            "{}={}; HttpOnly; SameSite=Strict; Path=/",
                            self.cookie_name, self.token
                        ),
                    ),
            );
        }
        if !req
            .cookie(&self.cookie_name)
            .is_some_and(|c| same_secret(c, &self.token))
        {
            return Reply::Full(unauthorised());
        }
        let changes = !matches!(req.method.as_str(), "GET" | "HEAD");
        if changes {
            if let Some(o) = req.header("origin")
                && !self.origins.iter().any(|ok| ok.eq_ignore_ascii_case(o))
            {
                return Reply::Full(Response::text(403, "Requests from other sites are refused"));
            }
            // A cross-site form cannot send this type without the browser asking first.
            if !req
                .header("content-type")
                .is_some_and(|t| t.starts_with("application/json"))
            {
                return Reply::Full(Response::text(415, "Send JSON (application/json)"));
            }
        }
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/") => Reply::Full(
                Response::new(200, "text/html; charset=utf-8", INDEX_HTML)
                    .with("Content-Security-Policy", PAGE_CSP),
            ),
            ("GET", "/app.js") => {
                Reply::Full(Response::new(200, "text/javascript; charset=utf-8", APP_JS))
            }
            ("GET", "/app.css") => {
                Reply::Full(Response::new(200, "text/css; charset=utf-8", APP_CSS))
            }
            ("GET", "/api/events") => Reply::Events,
            ("GET", "/api/job") => Reply::Full(answer(self.services.job(), 200)),
            ("GET", "/api/entries") => Reply::Full(match self.services.entries_shared() {
                Ok(entries) => Response::new(200, "application/json", entries.text.to_string()),
                Err(e) => failure(&e),
            }),
            ("GET", "/api/progress") => Reply::Full(answer(self.services.progress(), 200)),
            ("GET", "/api/connections") => Reply::Full(answer(self.services.connections(), 200)),
            ("GET", "/api/failures") => Reply::Full(match req.query("id") {
                Some(id) if !id.is_empty() => answer(self.services.failures(id), 200),
                _ => failure(&ServiceError::bad_input(
                    "Say which entry: /api/failures?id=ENTRY_ID",
                )),
            }),
            ("GET", "/api/runs") => Reply::Full(answer(self.services.runs(), 200)),
            ("GET", p) if p.starts_with("/api/reports/") => {
                Reply::Full(self.report(&p["/api/reports/".len()..], req))
            }
            ("POST", p) => Reply::Full(self.post(p, req)),
            (_, p) if p.starts_with("/api/") || p == "/" => {
                Reply::Full(Response::text(405, "Method not allowed"))
            }
            _ => Reply::Full(Response::text(404, "Not found")),
        }
    }

    fn post(&self, path: &str, req: &Request) -> Response {
        let body: Value = if req.body.is_empty() {
            json!({})
        } else {
            match serde_json::from_slice(&req.body) {
                Ok(v) => v,
                Err(e) => return failure(&ServiceError::bad_input(format!("Bad JSON: {e}"))),
            }
        };
        let s = &self.services;
        let result = match path {
            "/api/check" => s.check(),
            "/api/refresh" => ids(&body).and_then(|ids| s.refresh(&ids)),
            "/api/migrate" => ids(&body).and_then(|ids| s.start_migration(&ids)),
            "/api/stop" => s.stop_migration(),
            "/api/match" => match (body["id"].as_str(), body["address"].as_str()) {
                (Some(id), Some(address)) => s.match_set(id, address),
                _ => ids(&body).and_then(|ids| s.match_auto(&ids)),
            },
            "/api/skip" => ids(&body).and_then(|ids| s.skip(&ids)),
            "/api/match-create" => ids(&body).and_then(|ids| s.match_create(&ids)),
            "/api/stage" => match body["stage"].as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => ids(&body).and_then(|ids| s.stage(&ids, n)),
                None => Err(ServiceError::bad_input(
                    "Say which stage: {\"ids\": [...], \"stage\": N} with N a whole number",
                )),
            },
            "/api/create" => s.create(),
            "/api/reconfigure" => match (body["section"].as_str(), body.get("fields")) {
                (Some(section), Some(fields)) if fields.is_object() => {
                    s.reconfigure(section, fields)
                }
                _ => Err(ServiceError::bad_input(
                    "Say what to change: {\"section\": \"source\", \"fields\": {...}}",
                )),
            },
            _ => return Response::text(404, "Not found"),
        };
        answer(result, 200)
    }

    fn report(&self, kind: &str, req: &Request) -> Response {
        let format = req.query("format").unwrap_or("html");
        if !matches!(kind, "migration" | "refresh") || !matches!(format, "html" | "csv" | "json") {
            return failure(&ServiceError::bad_input(
                "Reports are /api/reports/migration or /api/reports/refresh, with format html, \
                 csv or json",
            ));
        }
        let run = match req.query("run").map(str::parse::<i64>) {
            None => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                return failure(&ServiceError::bad_input(
                    "run must be a run's number, as /api/runs lists it",
                ));
            }
        };
        match self.services.report(kind, format, run) {
            Err(e) => failure(&e),
            Ok(text) => {
                let ct = match format {
                    "html" => "text/html; charset=utf-8",
                    "csv" => "text/csv; charset=utf-8",
                    _ => "application/json",
                };
                let mut r =
                    Response::new(200, ct, text).with("Content-Security-Policy", REPORT_CSP);
                if req.query("download").is_some() {
                    r = r.with(
                        "Content-Disposition",
                        match run {
                            Some(n) => {
                                format!("attachment; filename=\"{kind}-report-run-{n}.{format}\"")
                            }
                            None => format!("attachment; filename=\"{kind}-report.{format}\""),
                        },
                    );
                }
                r
            }
        }
    }

    /// Server-sent events: the progress snapshot about once a second; all entries once, as
    /// `entries`, then only what changed, as `entries-changed` (`{"changed": [...],
    /// "removed": [ids]}`), until the browser goes away or the server stops. During a
    /// migration only the few entries being migrated change each second: sending all 10,000
    /// to every browser every second would cost more than the rows it updates.
    fn events(&self, mut stream: &TcpStream) {
        let headers = vec![("Content-Type".to_string(), "text/event-stream".to_string())];
        if http::write_head(&mut stream, 200, &headers, None).is_err() {
            return;
        }
        let mut sent: Option<Sent> = None;
        let mut last_version: Option<String> = None;
        while !self.shutdown.load(Ordering::SeqCst) {
            let mut chunk = String::new();
            match self.services.progress() {
                Ok(p) => chunk.push_str(&format!("event: progress\ndata: {p}\n\n")),
                Err(e) => chunk.push_str(&format!("event: failure\ndata: {}\n\n", error_json(&e))),
            }
            // Asked before the entries: a change while they are read shows at the next tick.
            let version = self.services.entries_version();
            if version.is_none() || version != last_version {
                match self.services.entries_shared() {
                    Ok(now) => {
                        last_version = version;
                        match sent.as_mut() {
                            // The first tick sends the text as the services keep it.
                            None => {
                                chunk.push_str("event: entries\ndata: ");
                                chunk.push_str(&now.text);
                                chunk.push_str("\n\n");
                                sent = Some(Sent::of(&now));
                            }
                            Some(before) => {
                                if let Some(delta) = before.update(&now) {
                                    chunk.push_str("event: entries-changed\ndata: ");
                                    chunk.push_str(&delta);
                                    chunk.push_str("\n\n");
                                }
                            }
                        }
                    }
                    Err(e) => {
                        chunk.push_str(&format!("event: failure\ndata: {}\n\n", error_json(&e)))
                    }
                }
            }
            if stream.write_all(chunk.as_bytes()).is_err() || stream.flush().is_err() {
                return;
            }
            for _ in 0..10 {
                if self.shutdown.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The entries one event stream has sent, by ID, to send only what changed next time: the
/// services' own texts, shared, not copies.
struct Sent(HashMap<Arc<str>, Arc<str>>);

impl Sent {
    fn of(entries: &Entries) -> Sent {
        Sent(entries.each.iter().cloned().collect())
    }

    /// Remembers `entries` and returns `{"changed": [...], "removed": [...]}`, or `None`
    /// when no entry changed.
    fn update(&mut self, entries: &Entries) -> Option<String> {
        let mut changed: Vec<&str> = Vec::new();
        let mut now = HashMap::with_capacity(entries.each.len());
        for (id, text) in &entries.each {
            let same = self
                .0
                .get(id)
                .is_some_and(|old| Arc::ptr_eq(old, text) || old == text);
            if !same {
                changed.push(text);
            }
            now.insert(id.clone(), text.clone());
        }
        let mut removed: Vec<&str> = self
            .0
            .keys()
            .filter(|id| !now.contains_key(*id))
            .map(|id| &**id)
            .collect();
        removed.sort_unstable();
        let delta = (!changed.is_empty() || !removed.is_empty()).then(|| {
            format!(
                "{{\"changed\":[{}],\"removed\":{}}}",
                changed.join(","),
                Value::from(removed)
            )
        });
        self.0 = now;
        delta
    }
}

fn entry_list(v: &Value) -> impl Iterator<Item = (&str, &Value)> {
    v["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["id"].as_str()?, e)))
}

fn unauthorised() -> Response {
    Response::new(
        401,
        "text/html; charset=utf-8",
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>mailferry: \
         not authorised</title></head><body><h1>Not authorised</h1><p>Open the address that \
         <code>mailferry serve</code> printed when it started (it ends in \
         <code>?token=…</code>).</p></body></html>",
    )
}

fn ids(body: &Value) -> Result<Vec<String>, ServiceError> {
    let list = body["ids"]
        .as_array()
        .ok_or_else(|| ServiceError::bad_input("Say which entries: {\"ids\": [...]}"))?;
    list.iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| ServiceError::bad_input("Entry IDs are strings"))
        })
        .collect()
}

fn error_json(e: &ServiceError) -> Value {
    let mut v = json!({"error": e.message, "kind": e.kind.key()});
    if let (Some(Value::Object(details)), Some(out)) = (&e.details, v.as_object_mut()) {
        for (key, value) in details {
            out.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    v
}

fn failure(e: &ServiceError) -> Response {
    Response::json(e.kind.status(), &error_json(e))
}

fn answer(result: ServiceResult, status: u16) -> Response {
    match result {
        Ok(v) => Response::json(status, &v),
        Err(e) => failure(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_stream_sends_only_changed_entries() {
        let a = json!({"id": "a", "state": "new"});
        let b = json!({"id": "b", "state": "new"});
        let first = Entries::of(&json!({"entries": [a, b]}));
        let mut sent = Sent::of(&first);
        assert_eq!(sent.update(&first), None, "the same texts");
        let again = Entries::of(&json!({"entries": [a, b], "passes": [1]}));
        assert_eq!(sent.update(&again), None, "equal texts");
        let b2 = json!({"id": "b", "state": "migrated"});
        let c = json!({"id": "c", "state": "new"});
        let delta = sent.update(&Entries::of(&json!({"entries": [b2, c]})));
        let delta: Value = serde_json::from_str(&delta.unwrap()).unwrap();
        assert_eq!(delta, json!({"changed": [b2, c], "removed": ["a"]}));
        assert_eq!(
            sent.update(&Entries::of(&json!({"entries": [c, b2]}))),
            None
        );
        let delta = sent.update(&Entries::of(&json!({"entries": [c]}))).unwrap();
        assert_eq!(delta, r#"{"changed":[],"removed":["b"]}"#);
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }

    #[test]
    fn a_refused_form_sends_its_problems_beside_the_message() {
        let e = ServiceError::bad_input("Not changed").with_details(json!({
            "problems": [{"field": "source.port", "message": "Must be from 1 to 65535"}],
            "error": "not this one",
        }));
        assert_eq!(
            error_json(&e),
            json!({
                "error": "Not changed",
                "kind": "bad_input",
                "problems": [{"field": "source.port", "message": "Must be from 1 to 65535"}],
            })
        );
    }

    #[test]
    fn tokens_are_fresh_and_long() {
        let a = random_token().unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, random_token().unwrap());
    }
}
