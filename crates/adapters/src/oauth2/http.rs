//! A small blocking HTTP/1.1 client for identity providers and directory APIs: one request per
//! connection (`Connection: close`), HTTPS through the one rustls policy of
//! [`mailferry_imap::tls`], `Content-Length` and chunked response bodies, a cap on the size of
//! a response, socket timeouts, and a retry that honours `429` / `503` with `Retry-After`.
//!
//! It is written for the token endpoint (a form POST, a JSON answer) and shaped so a Microsoft
//! Graph directory adapter can use it as is: any method, any headers (`Authorization: Bearer`),
//! JSON bodies. Request bodies and headers are never part of an error or of `Debug` output:
//! they carry client secrets and tokens.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;

/// The largest response body read (token answers are a few kilobytes; a Graph page of users
/// a few hundred).
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// The largest status line plus headers read.
const MAX_HEAD: usize = 64 * 1024;
/// The longest `Retry-After` honoured; a longer one is an error with the server's words.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// An `http://` or `https://` URL, split into what a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// Parses `https://host[:port][/path]` (or `http://`); IPv6 hosts in brackets.
    pub fn parse(text: &str) -> Result<Url, HttpError> {
        let bad = |why: &str| HttpError::Url(format!("{text}: {why}"));
        let (https, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(bad("must start with https:// or http://"));
        };
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let path = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
                (host, after.strip_prefix(':'))
            }
            None => match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            },
        };
        if host.is_empty() || host.contains('@') {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?,
            None if https => 443,
            None => 80,
        };
        Ok(Url {
            https,
            host: host.to_string(),
            port,
            path,
        })
    }

    /// `host:port` as the `Host` header and for connecting.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Url {
    /// Without the query, which may carry parameters that are nobody's business in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        let path = self.path.split('?').next().unwrap_or("/");
        write!(f, "{scheme}://{}{path}", self.authority())
    }
}

/// One request. Its headers and body are never printed.
#[derive(Clone)]
pub struct Request {
    pub method: &'static str,
    pub url: Url,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} (headers and body not shown)",
            self.method, self.url
        )
    }
}

impl Request {
    pub fn new(method: &'static str, url: Url) -> Request {
        Request {
            method,
            url,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// `POST` of `application/x-www-form-urlencoded` fields (RFC 6749 §4.4.2).
    pub fn post_form(url: Url, fields: &[(&str, &str)]) -> Request {
        let body = fields
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        Request::new("POST", url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body.into_bytes())
    }

    /// A request with a JSON body.
    pub fn json(method: &'static str, url: Url, value: &serde_json::Value) -> Request {
        Request::new(method, url)
            .header("Content-Type", "application/json")
            .body(value.to_string().into_bytes())
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Request {
        self.header("Authorization", &format!("Bearer {token}"))
    }

    pub fn body(mut self, body: Vec<u8>) -> Request {
        self.body = body;
        self
    }

    fn head(&self) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n\
             User-Agent: mailferry/{}\r\n",
            self.method,
            self.url.path,
            self.url.authority(),
            env!("CARGO_PKG_VERSION"),
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !self.body.is_empty() || matches!(self.method, "POST" | "PUT" | "PATCH") {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        head.push_str("\r\n");
        head.into_bytes()
    }
}

/// `application/x-www-form-urlencoded` of one name or value.
pub fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A whole response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `Retry-After` in seconds, whole or with a fraction (Microsoft Graph's throttling
    /// guidance shows `Retry-After: 2.128`); the HTTP-date form is not used by the services
    /// here and counts as one second.
    pub fn retry_after(&self) -> Option<Duration> {
        let value = self.header("Retry-After")?.trim();
        Some(match value.parse::<u64>() {
            Ok(s) => Duration::from_secs(s),
            Err(_) => value
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
                .map_or(Duration::from_secs(1), Duration::from_secs_f64),
        })
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            HttpError::Protocol(format!(
                "the answer (HTTP {}) is not JSON: {e}",
                self.status
            ))
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("bad URL {0}")]
    Url(String),
    #[error("cannot connect to {address}: {source}")]
    Connect { address: String, source: io::Error },
    #[error("connection to {address}: {source}")]
    Io { address: String, source: io::Error },
    #[error("TLS with {address}: {message}")]
    Tls { address: String, message: String },
    #[error(transparent)]
    TlsConfig(#[from] mailferry_imap::tls::TlsError),
    #[error("{0}")]
    Protocol(String),
    #[error("the answer of {url} is larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("{url} answered HTTP {status} and asks to wait {wait:?}, longer than mailferry waits")]
    Throttled {
        url: String,
        status: u16,
        wait: Duration,
    },
}

impl HttpError {
    /// Whether trying again later may work (the network, not the request).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            HttpError::Connect { .. } | HttpError::Io { .. } | HttpError::Throttled { .. }
        )
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => match s.read(buf) {
                // A server that closes without close_notify after a complete body (common
                // with `Connection: close`) is an end of stream; a short body is caught by
                // its length.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
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

/// A client: the TLS policy and the limits, shared by every request.
#[derive(Clone)]
pub struct HttpClient {
    tls: Arc<ClientConfig>,
    timeout: Duration,
    max_body: usize,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HttpClient(timeout {:?})", self.timeout)
    }
}

impl HttpClient {
    /// Certificates verified against the system's trust anchors plus `ca` (a PEM file).
    pub fn new(ca: Option<&Path>, timeout: Duration) -> Result<HttpClient, HttpError> {
        Ok(HttpClient {
            tls: Arc::new(mailferry_imap::tls::client_config(ca, true, &[])?),
            timeout,
            max_body: MAX_BODY,
        })
    }

    /// The same client with another cap on response bodies.
    pub fn with_max_body(mut self, max_body: usize) -> HttpClient {
        self.max_body = max_body;
        self
    }

    /// Sends one request and reads the whole response (any status).
    pub fn send(&self, request: &Request) -> Result<Response, HttpError> {
        let url = &request.url;
        let address = url.authority();
        let io_err = |source: io::Error| HttpError::Io {
            address: address.clone(),
            source: timed_out(source, self.timeout),
        };
        let tcp =
            connect(&url.host, url.port, self.timeout).map_err(|source| HttpError::Connect {
                address: address.clone(),
                source,
            })?;
        tcp.set_read_timeout(Some(self.timeout)).map_err(io_err)?;
        tcp.set_write_timeout(Some(self.timeout)).map_err(io_err)?;
        tcp.set_nodelay(true).map_err(io_err)?;
        let mut stream = if url.https {
            let name = ServerName::try_from(url.host.clone()).map_err(|e| HttpError::Tls {
                address: address.clone(),
                message: format!("invalid server name: {e}"),
            })?;
            let conn = rustls::ClientConnection::new(self.tls.clone(), name).map_err(|e| {
                HttpError::Tls {
                    address: address.clone(),
                    message: e.to_string(),
                }
            })?;
            let mut s = rustls::StreamOwned::new(conn, tcp);
            while s.conn.is_handshaking() {
                s.conn.complete_io(&mut s.sock).map_err(|e| {
                    if e.kind() == io::ErrorKind::InvalidData {
                        HttpError::Tls {
                            address: address.clone(),
                            message: e.to_string(),
                        }
                    } else {
                        io_err(e)
                    }
                })?;
            }
            Stream::Tls(Box::new(s))
        } else {
            Stream::Plain(tcp)
        };
        let mut out = request.head();
        out.extend_from_slice(&request.body);
        stream
            .write_all(&out)
            .and_then(|()| stream.flush())
            .map_err(io_err)?;
        drop(out);
        let mut reader = BufReader::new(stream);
        read_response(&mut reader, self.max_body, &url.to_string(), request.method).map_err(|e| {
            match e {
                ReadError::Io(source) => io_err(source),
                ReadError::Http(e) => e,
            }
        })
    }

    /// [`HttpClient::send`], again after `429` or `503` (waiting what `Retry-After` says, or
    /// 1, 2, 4 … seconds) and after a broken connection, up to `attempts` sends in all.
    pub fn send_retrying(&self, request: &Request, attempts: u32) -> Result<Response, HttpError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= attempts.max(1);
            let backoff = Duration::from_secs(1 << (attempt - 1).min(5));
            match self.send(request) {
                Ok(r) if matches!(r.status, 429 | 503) && !last => {
                    let wait = r.retry_after().unwrap_or(backoff);
                    if wait > MAX_RETRY_AFTER {
                        return Err(HttpError::Throttled {
                            url: request.url.to_string(),
                            status: r.status,
                            wait,
                        });
                    }
                    std::thread::sleep(wait);
                }
                Err(e) if e.is_transient() && !last => std::thread::sleep(backoff),
                other => return other,
            }
        }
    }
}

fn connect(host: &str, port: u16, timeout: Duration) -> io::Result<TcpStream> {
    use std::net::ToSocketAddrs;
    let mut last = None;
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address found")))
}

fn timed_out(e: io::Error, timeout: Duration) -> io::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {} s", timeout.as_secs()),
        ),
        _ => e,
    }
}

enum ReadError {
    Io(io::Error),
    Http(HttpError),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> ReadError {
        ReadError::Io(e)
    }
}

fn protocol(url: &str, what: &str) -> ReadError {
    ReadError::Http(HttpError::Protocol(format!("{url}: {what}")))
}

/// One line of at most `limit` bytes, without its CRLF.
fn read_line(r: &mut impl BufRead, limit: usize, url: &str) -> Result<String, ReadError> {
    let mut line = Vec::new();
    let n = r.take(limit as u64 + 1).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(protocol(
            url,
            "the server closed the connection without an answer",
        ));
    }
    if n > limit {
        return Err(protocol(url, "the answer's head is too long"));
    }
    if !line.ends_with(b"\n") {
        return Err(protocol(
            url,
            "the connection ended in the middle of the answer",
        ));
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| protocol(url, "the answer's head is not text"))
}

fn read_response(
    r: &mut impl BufRead,
    max_body: usize,
    url: &str,
    method: &str,
) -> Result<Response, ReadError> {
    let mut budget = MAX_HEAD;
    let status_line = read_line(r, budget, url)?;
    budget = budget.saturating_sub(status_line.len());
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or_else(|| protocol(url, "the answer is not HTTP/1.x"))?;
    let reason = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let line = read_line(r, budget, url)?;
        budget = budget.saturating_sub(line.len() + 2);
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| protocol(url, "a header line without a colon"))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let too_large = || {
        ReadError::Http(HttpError::TooLarge {
            url: url.to_string(),
            limit: max_body,
        })
    };
    let mut body = Vec::new();
    let no_body = method == "HEAD" || status == 204 || status == 304 || status / 100 == 1;
    if no_body {
    } else if header("Transfer-Encoding")
        .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"))
    {
        loop {
            let size_line = read_line(r, 1024, url)?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| protocol(url, "a bad chunk size"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !read_line(r, 8192, url)?.is_empty() {}
                break;
            }
            if body.len() + size > max_body {
                return Err(too_large());
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])
                .map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => {
                        protocol(url, "the connection ended in a chunk")
                    }
                    _ => ReadError::Io(e),
                })?;
            if !read_line(r, 2, url)?.is_empty() {
                return Err(protocol(url, "a chunk without its CRLF"));
            }
        }
    } else if let Some(length) = header("Content-Length") {
        let length = length
            .parse::<usize>()
            .map_err(|_| protocol(url, "a bad Content-Length"))?;
        if length > max_body {
            return Err(too_large());
        }
        body.resize(length, 0);
        r.read_exact(&mut body).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                protocol(url, "the connection ended before the body did")
            }
            _ => ReadError::Io(e),
        })?;
    } else {
        r.take(max_body as u64 + 1).read_to_end(&mut body)?;
        if body.len() > max_body {
            return Err(too_large());
        }
    }
    Ok(Response {
        status,
        reason,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server on loopback that reads one request and answers `answer`; returns the port
    /// and the request it saw.
    fn one_shot(answer: Vec<u8>) -> (u16, std::thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = sock.read(&mut buf).unwrap();
                seen.extend_from_slice(&buf[..n]);
                if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                    if seen.len() >= end + 4 + len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            sock.write_all(&answer).unwrap();
            seen
        });
        (port, handle)
    }

    fn client() -> HttpClient {
        HttpClient::new(None, Duration::from_secs(5)).unwrap()
    }

    fn url(port: u16, path: &str) -> Url {
        Url::parse(&format!("http://127.0.0.1:{port}{path}")).unwrap()
    }

    #[test]
    fn urls_are_split_and_printed_without_their_query() {
        let u = Url::parse("https://login.microsoftonline.com/t/oauth2/v2.0/token?x=1").unwrap();
        assert_eq!(u.host, "login.microsoftonline.com");
        assert_eq!(u.port, 443);
        assert_eq!(u.path, "/t/oauth2/v2.0/token?x=1");
        assert_eq!(
            u.to_string(),
            "https://login.microsoftonline.com:443/t/oauth2/v2.0/token"
        );
        let u = Url::parse("http://[::1]:8080").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 8080, "/")
        );
        assert!(Url::parse("ftp://x/").is_err());
        assert!(Url::parse("https://x:0/").is_err());
        assert!(Url::parse("https://user@x/").is_err());
    }

    #[test]
    fn form_fields_are_encoded_as_rfc_6749_appendix_b_says() {
        assert_eq!(form_encode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
        assert_eq!(
            form_encode("https://outlook.office365.com/.default"),
            "https%3A%2F%2Foutlook.office365.com%2F.default"
        );
    }

    #[test]
    fn a_form_post_sends_its_length_and_reads_a_content_length_body() {
        let (port, server) = one_shot(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"a\":\"bc\"}\n"
                .to_vec(),
        );
        let r = client()
            .send(&Request::post_form(
                url(port, "/token"),
                &[("grant_type", "client_credentials"), ("x", "a b")],
            ))
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.json().unwrap()["a"], "bc");
        let seen = String::from_utf8(server.join().unwrap()).unwrap();
        assert!(seen.starts_with("POST /token HTTP/1.1\r\n"), "{seen}");
        assert!(
            seen.contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")),
            "{seen}"
        );
        assert!(seen.contains("\r\nContent-Length: 35\r\n"), "{seen}");
        assert!(
            seen.ends_with("\r\n\r\ngrant_type=client_credentials&x=a+b"),
            "{seen}"
        );
    }

    #[test]
    fn chunked_bodies_are_joined_and_trailers_skipped() {
        let (port, _server) = one_shot(
            b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\n{\"err\r\n8;ext=1\r\nor\":\"x\"}\r\n0\r\nX-Trailer: 1\r\n\r\n"
                .to_vec(),
        );
        let r = client().send(&Request::new("GET", url(port, "/"))).unwrap();
        assert_eq!((r.status, r.reason.as_str()), (400, "Bad Request"));
        assert_eq!(r.body, b"{\"error\":\"x\"}");
    }

    #[test]
    fn a_body_until_close_and_a_bearer_header() {
        let (port, server) =
            one_shot(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it".to_vec());
        let r = client()
            .send(&Request::new("GET", url(port, "/v1.0/users")).bearer("tok"))
            .unwrap();
        assert_eq!(r.body, b"all of it");
        let seen = String::from_utf8(server.join().unwrap()).unwrap();
        assert!(seen.contains("\r\nAuthorization: Bearer tok\r\n"), "{seen}");
    }

    #[test]
    fn answers_over_the_cap_and_broken_answers_are_errors() {
        let (port, _s) = one_shot(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec());
        let e = client()
            .with_max_body(1000)
            .send(&Request::new("GET", url(port, "/")))
            .unwrap_err();
        assert!(matches!(e, HttpError::TooLarge { limit: 1000, .. }), "{e}");
        let (port, _s) =
            one_shot(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffff\r\n".to_vec());
        let e = client()
            .with_max_body(1000)
            .send(&Request::new("GET", url(port, "/")))
            .unwrap_err();
        assert!(matches!(e, HttpError::TooLarge { .. }), "{e}");
        let (port, _s) = one_shot(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort".to_vec());
        let e = client()
            .send(&Request::new("GET", url(port, "/")))
            .unwrap_err();
        assert!(e.to_string().contains("ended before the body did"), "{e}");
        let (port, _s) = one_shot(b"SSH-2.0-OpenSSH\r\n".to_vec());
        let e = client()
            .send(&Request::new("GET", url(port, "/")))
            .unwrap_err();
        assert!(e.to_string().contains("not HTTP/1.x"), "{e}");
    }

    #[test]
    fn a_silent_server_costs_one_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = std::thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_secs(3));
            drop(sock);
        });
        let started = std::time::Instant::now();
        let e = HttpClient::new(None, Duration::from_secs(1))
            .unwrap()
            .send(&Request::new("GET", url(port, "/")))
            .unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(e.to_string().contains("no answer within 1 s"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(3));
        hold.join().unwrap();
    }

    #[test]
    fn throttled_answers_are_retried_after_retry_after() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let answers: [&[u8]; 2] = [
                b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            ];
            let mut times = Vec::new();
            for answer in answers {
                let (mut sock, _) = listener.accept().unwrap();
                times.push(std::time::Instant::now());
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).unwrap();
                sock.write_all(answer).unwrap();
            }
            times[1] - times[0]
        });
        let r = client()
            .send_retrying(&Request::new("GET", url(port, "/")), 3)
            .unwrap();
        assert_eq!(r.body, b"ok");
        assert!(server.join().unwrap() >= Duration::from_millis(900));
    }

    #[test]
    fn retry_after_in_whole_or_fractional_seconds() {
        let with = |v: &str| Response {
            status: 429,
            reason: String::new(),
            headers: vec![("Retry-After".into(), v.into())],
            body: Vec::new(),
        };
        assert_eq!(with("10").retry_after(), Some(Duration::from_secs(10)));
        assert_eq!(
            with("2.128").retry_after(),
            Some(Duration::from_millis(2128))
        );
        assert_eq!(
            with("Wed, 21 Oct 2015 07:28:00 GMT").retry_after(),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn a_request_prints_without_headers_or_body() {
        let r =
            Request::post_form(url(1, "/t?code=1"), &[("client_secret", "s3cret")]).bearer("tok3n");
        let shown = format!("{r:?}");
        assert_eq!(
            shown,
            "POST http://127.0.0.1:1/t (headers and body not shown)"
        );
    }
}
