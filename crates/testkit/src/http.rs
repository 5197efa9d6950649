//! The small HTTP/1.1 server under the test kit's stand-ins for vendor endpoints (the Graph
//! stub, the token endpoint): one thread on a loopback port, one request per connection,
//! stopped on drop. Each stand-in reads the request with [`read_request`] and writes its own
//! answer, as the vendor's documentation shows it.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// A listener on `127.0.0.1`, its thread handing each connection to the stand-in.
pub(crate) struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens on a free loopback port and calls `serve(port)` for the handler: it gets every
    /// connection accepted, blocking, with a read timeout of 10 s, and the number of
    /// connections so far (1 for the first). `what` names the stand-in in the panic when the
    /// port cannot be bound.
    pub(crate) fn start<F>(what: &str, serve: impl FnOnce(u16) -> F) -> Server
    where
        F: FnMut(TcpStream, u64) + Send + 'static,
    {
        let listener =
            TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind {what}: {e}"));
        let port = listener.local_addr().expect("local addr").port();
        let mut each = serve(port);
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((sock, _)) => {
                            n += 1;
                            let _ = sock.set_nonblocking(false);
                            let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
                            each(sock, n);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Server {
            port,
            stop,
            thread: Some(thread),
        }
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request as it came.
pub(crate) struct Request {
    pub method: String,
    /// The request target as sent: path and query.
    pub target: String,
    /// The path, percent-decoded.
    pub path: String,
    /// The query's parameters, percent-decoded.
    pub query: BTreeMap<String, String>,
    headers: Vec<(String, String)>,
    /// At most 1 MiB of it.
    pub body: Vec<u8>,
}

impl Request {
    /// The value of the header `name` (the first one; names compared ignoring case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as `application/x-www-form-urlencoded` parameters.
    pub(crate) fn form(&self) -> BTreeMap<String, String> {
        String::from_utf8_lossy(&self.body)
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (decode(k, true), decode(v, true)))
            .collect()
    }
}

/// Reads the request line, the headers and a body of `Content-Length` bytes.
pub(crate) fn read_request(reader: &mut impl BufRead) -> std::io::Result<Request> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length.min(1 << 20)];
    reader.read_exact(&mut body)?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let query = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k, false), decode(v, false))
        })
        .collect();
    Ok(Request {
        method,
        path: decode(path, false),
        target,
        query,
        headers,
        body,
    })
}

/// `%XX` decoded (a `%` without two hex digits after it stays); `+` is a space in a form.
pub(crate) fn decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) if plus_is_space => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The reason phrase of a status the stand-ins answer with.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_read_with_its_query_headers_and_body_decoded() {
        let raw = b"POST /t%20x/token?a=1&%24top=2&flag HTTP/1.1\r\nHost: x\r\n\
                    content-length: 16\r\nAuthorization: Bearer t\r\n\r\nk=a+b%26c&bad=%zz";
        let r = read_request(&mut &raw[..]).unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.target, "/t%20x/token?a=1&%24top=2&flag");
        assert_eq!(r.path, "/t x/token");
        assert_eq!(r.query.get("$top").map(String::as_str), Some("2"));
        assert_eq!(r.query.get("flag").map(String::as_str), Some(""));
        assert_eq!(r.header("AUTHORIZATION"), Some("Bearer t"));
        assert_eq!(r.body, b"k=a+b%26c&bad=%z");
        let form = r.form();
        assert_eq!(form.get("k").map(String::as_str), Some("a b&c"));
        assert_eq!(form.get("bad").map(String::as_str), Some("%z"));
        assert_eq!(decode("a+b", false), "a+b");
    }
}
