//! The socket under a [`Client`](super::Client): TCP with timeouts, rustls, and the command
//! trace for admins.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

use super::{Endpoint, Error, Result};
use crate::tls;

pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

/// A socket call interrupted by a signal (EINTR) is made again: the connection is fine. A
/// socket with a timeout gives EINTR even under `SA_RESTART` when the process is stopped and
/// continued (SIGSTOP, SIGCONT: signal(7)), and a paused process must then read the answers
/// its server sent meanwhile, not take the connection for broken.
fn again<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        again(|| match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        })
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        again(|| match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        })
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

impl Stream {
    /// Closes after the last command, without reading its answer: TLS's close_notify, then
    /// the end of the stream (FIN). Whatever the server sent already is read first, since
    /// closing a socket with unread data resets the connection (RST), and a reset can make
    /// the server's kernel drop the last command before the server has read it.
    pub(super) fn close(&mut self) {
        if let Stream::Tls(s) = self {
            s.conn.send_close_notify();
            while s.conn.wants_write() {
                if !matches!(s.conn.write_tls(&mut s.sock), Ok(n) if n > 0) {
                    break;
                }
            }
        }
        let sock = match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &mut s.sock,
        };
        let _ = sock.shutdown(std::net::Shutdown::Write);
        if sock.set_nonblocking(true).is_ok() {
            let mut buf = [0u8; 4096];
            while matches!(sock.read(&mut buf), Ok(n) if n > 0) {}
        }
    }
}

/// `MAILFERRY_TRACE=FILE` appends every command sent (its first line: never a message body,
/// never a password) to FILE, one line each, prefixed by the server address. For admins
/// debugging a server, and for tests that count what a pass costs.
pub(super) fn trace_sink() -> Option<&'static std::sync::Mutex<std::fs::File>> {
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
/// A socket timeout in words: the OS says "Resource temporarily unavailable" (EAGAIN) when
/// a read or write timeout expires, which tells an admin nothing.
pub(super) fn timed_out(e: io::Error, timeout: Duration) -> io::Error {
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

pub(super) fn connect_tcp(address: &str, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address found")))
}

pub(super) fn tls_wrap(
    ep: &Endpoint,
    tcp: TcpStream,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let config = tls::client_config(ep.ca_file.as_deref(), ep.verify_certificates, &ep.pins)?;
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
                io::ErrorKind::InvalidData => Error::Tls(format!(
                    "handshake with {}: {}",
                    ep.host,
                    tls::handshake_error_text(&e)
                )),
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
