//! A fault-injecting TCP proxy, to put a bad network between a client and a real server.
//!
//! Real networks cut connections mid-stream, reset them, stall without closing (a NAT that
//! forgot the flow, a server that hangs) and crawl. A [`Proxy`] listens on a free loopback
//! port and forwards every connection to one upstream address, with the [`Faults`] its plan
//! chooses for that connection (by the connection's number, from 0), so a test can say "cut
//! every connection after 1–3 MB" or "stall the first connection once, then behave":
//!
//! ```no_run
//! use std::time::Duration;
//! use mailferry_testkit::proxy::{Faults, Proxy};
//!
//! # let upstream: std::net::SocketAddr = "127.0.0.1:143".parse().unwrap();
//! let proxy = Proxy::start(upstream, |n| Faults {
//!     cut_up_after: Some(1_000_000 + n * 1000),
//!     ..Faults::default()
//! });
//! // connect to proxy.host():proxy.port() instead of the server
//! # let _ = proxy.port();
//! ```
//!
//! Byte counts are exact: a cut after N bytes forwards exactly N bytes in that direction.
//! Threads only (two per connection), std only.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::{JoinHandle, sleep};
use std::time::{Duration, Instant};

use crate::HOST;

/// How a direction of a connection is named: client → server is up, server → client down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

/// A stall: once `after` bytes went in `direction`, nothing is forwarded either way for
/// `duration`, and the connection stays open; then forwarding resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    pub direction: Direction,
    pub after: u64,
    pub duration: Duration,
}

/// What goes wrong on one connection. The default forwards everything faithfully.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Close the connection (both ways) once this many bytes went client → server.
    pub cut_up_after: Option<u64>,
    /// Close the connection (both ways) once this many bytes went server → client.
    pub cut_down_after: Option<u64>,
    /// A cut resets the connection (RST to both ends) instead of closing it.
    pub reset: bool,
    pub stall: Option<Stall>,
    /// A slow link: at most this many bytes a second in each direction.
    pub bytes_per_second: Option<u64>,
}

/// What has happened on the proxy's connections so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    pub connections: u64,
    /// Connections cut (closed or reset) by a fault.
    pub cuts: u64,
    pub stalls: u64,
}

type Plan = dyn Fn(u64) -> Faults + Send + Sync;

struct Shared {
    upstream: SocketAddr,
    plan: Box<Plan>,
    stop: AtomicBool,
    connections: AtomicU64,
    cuts: AtomicU64,
    stalls: AtomicU64,
    /// The connections still open, to close them when the proxy is dropped. Weak, so that a
    /// connection's sockets are closed as soon as its two pumps are done.
    open: Mutex<Vec<Weak<Conn>>>,
}

/// A running proxy; dropping it closes its listener and every connection through it.
pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`; connection `n` (from 0,
    /// in the order they were accepted) gets the faults `plan(n)`.
    pub fn start(
        upstream: SocketAddr,
        plan: impl Fn(u64) -> Faults + Send + Sync + 'static,
    ) -> Proxy {
        let listener = TcpListener::bind((HOST, 0)).expect("bind the proxy's port");
        let port = listener.local_addr().expect("proxy address").port();
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let shared = Arc::new(Shared {
            upstream,
            plan: Box::new(plan),
            stop: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            open: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name(format!("proxy:{port}"))
            .spawn(move || accept_loop(listener, &s))
            .expect("spawn the proxy");
        Proxy {
            port,
            shared,
            accept: Some(accept),
        }
    }

    /// The proxy in front of a server of this kit.
    pub fn before(
        server: &crate::Dovecot,
        plan: impl Fn(u64) -> Faults + Send + Sync + 'static,
    ) -> Proxy {
        let upstream = format!("{}:{}", server.host(), server.port())
            .parse()
            .expect("server address");
        Proxy::start(upstream, plan)
    }

    pub fn host(&self) -> &str {
        HOST
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            connections: self.shared.connections.load(Ordering::SeqCst),
            cuts: self.shared.cuts.load(Ordering::SeqCst),
            stalls: self.shared.stalls.load(Ordering::SeqCst),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for c in lock(&self.shared.open).drain(..) {
            if let Some(c) = c.upgrade() {
                c.close(false);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept_loop(listener: TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                sleep(Duration::from_millis(2));
                continue;
            }
            Err(_) => {
                sleep(Duration::from_millis(2));
                continue;
            }
        };
        let n = shared.connections.fetch_add(1, Ordering::SeqCst);
        // A server that is down (restarting) refuses: so does the proxy, by closing at once.
        let Ok(server) = TcpStream::connect(shared.upstream) else {
            drop(client);
            continue;
        };
        if client.set_nonblocking(false).is_err() {
            continue;
        }
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let conn = Arc::new(Conn {
            client,
            server,
            faults: (shared.plan)(n),
            closed: AtomicBool::new(false),
            stalled_until: Mutex::new(None),
            stalled: AtomicBool::new(false),
        });
        {
            let mut open = lock(&shared.open);
            open.retain(|c| c.strong_count() > 0);
            open.push(Arc::downgrade(&conn));
        }
        for direction in [Direction::Up, Direction::Down] {
            let c = Arc::clone(&conn);
            let s = Arc::clone(shared);
            let _ = std::thread::Builder::new()
                .name(format!("proxy-{n}-{direction:?}"))
                .spawn(move || c.pump(direction, &s));
        }
    }
}

/// One proxied connection.
struct Conn {
    client: TcpStream,
    server: TcpStream,
    faults: Faults,
    closed: AtomicBool,
    stalled_until: Mutex<Option<Instant>>,
    /// Whether the stall has fired (it fires once).
    stalled: AtomicBool,
}

const CHUNK: usize = 64 * 1024;

impl Conn {
    /// Forwards one direction until either side closes or a fault cuts the connection.
    fn pump(&self, direction: Direction, shared: &Shared) {
        let (mut from, mut to) = match direction {
            Direction::Up => (&self.client, &self.server),
            Direction::Down => (&self.server, &self.client),
        };
        let cut_after = match direction {
            Direction::Up => self.faults.cut_up_after,
            Direction::Down => self.faults.cut_down_after,
        };
        let stall = self.faults.stall.filter(|s| s.direction == direction);
        let rate = self.faults.bytes_per_second.filter(|r| *r > 0);
        let mut sent: u64 = 0;
        let mut buf = vec![0u8; CHUNK];
        loop {
            if cut_after.is_some_and(|c| sent >= c) {
                shared.cuts.fetch_add(1, Ordering::SeqCst);
                self.close(self.faults.reset);
                return;
            }
            if let Some(s) = stall
                && sent >= s.after
                && !self.stalled.swap(true, Ordering::SeqCst)
            {
                shared.stalls.fetch_add(1, Ordering::SeqCst);
                *lock(&self.stalled_until) = Some(Instant::now() + s.duration);
            }
            // Read no further than the next fault, so that it fires at its exact byte.
            let mut want = CHUNK as u64;
            for limit in [cut_after, stall.filter(|s| sent < s.after).map(|s| s.after)]
                .into_iter()
                .flatten()
            {
                want = want.min(limit.saturating_sub(sent));
            }
            if let Some(r) = rate {
                want = want.min((r / 10).max(1));
            }
            let n = match from.read(&mut buf[..want.max(1) as usize]) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            self.wait_out_stall();
            if self.closed.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
                break;
            }
            sent += n as u64;
            if let Some(r) = rate {
                sleep(Duration::from_secs_f64(n as f64 / r as f64));
            }
        }
        self.close(false);
    }

    /// Holds this direction while the connection is stalled (or until it is closed).
    fn wait_out_stall(&self) {
        loop {
            let until = *lock(&self.stalled_until);
            match until {
                Some(t) if Instant::now() < t && !self.closed.load(Ordering::SeqCst) => {
                    sleep(Duration::from_millis(10));
                }
                _ => return,
            }
        }
    }

    /// Ends the connection both ways: a close (FIN) or, with `reset`, an RST to both ends.
    fn close(&self, reset: bool) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        for s in [&self.client, &self.server] {
            if reset {
                // SO_LINGER with a zero timeout makes the close send RST. The sockets are
                // closed when the last pump lets go of the connection; shutting down the
                // reading side (which sends nothing on Linux) wakes the pumps so they do.
                let linger = libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                // SAFETY: a valid socket and a correctly sized option value.
                unsafe {
                    libc::setsockopt(
                        s.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        (&linger as *const libc::linger).cast(),
                        std::mem::size_of::<libc::linger>() as libc::socklen_t,
                    );
                }
                let _ = s.shutdown(Shutdown::Read);
            } else {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that echoes every byte back, on a free port.
    fn echo_server() -> SocketAddr {
        let l = TcpListener::bind((HOST, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                std::thread::spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let _ = io::copy(&mut r, &mut s);
                });
            }
        });
        addr
    }

    fn connect(p: &Proxy) -> TcpStream {
        let s = TcpStream::connect((p.host(), p.port())).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// Writes `data`, then reads until EOF or an error; returns what came back and the error.
    fn exchange(s: &mut TcpStream, data: &[u8]) -> (Vec<u8>, Option<io::ErrorKind>) {
        let mut w = s.try_clone().unwrap();
        let data = data.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(&data);
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        let err = loop {
            match s.read(&mut buf) {
                Ok(0) => break None,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break Some(e.kind()),
            }
        };
        let _ = writer.join();
        (got, err)
    }

    #[test]
    fn without_faults_every_byte_goes_both_ways() {
        let p = Proxy::start(echo_server(), |_| Faults::default());
        let mut s = connect(&p);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        s.write_all(&data).unwrap();
        let mut back = vec![0u8; data.len()];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(p.stats().connections, 1);
        assert_eq!(p.stats().cuts, 0);
    }

    /// An upstream that sends `n` bytes to every connection, then holds it open.
    fn talker(n: usize) -> SocketAddr {
        let l = TcpListener::bind((HOST, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                std::thread::spawn(move || {
                    let _ = s.write_all(&vec![7u8; n]);
                    let _ = s.read(&mut [0u8; 1]);
                });
            }
        });
        addr
    }

    #[test]
    fn a_cut_forwards_exactly_that_many_bytes_then_closes_and_the_next_connection_is_whole() {
        let p = Proxy::start(talker(250_000), |n| Faults {
            cut_down_after: (n == 0).then_some(100_000),
            ..Faults::default()
        });
        let (got, err) = exchange(&mut connect(&p), b"");
        assert_eq!((got.len(), err), (100_000, None));
        assert_eq!(p.stats().cuts, 1);

        let mut whole = vec![0u8; 250_000];
        connect(&p).read_exact(&mut whole).unwrap();
        assert!(whole.iter().all(|b| *b == 7));
    }

    #[test]
    fn a_cut_upwards_lets_the_server_see_only_that_many_bytes() {
        let p = Proxy::start(echo_server(), |_| Faults {
            cut_up_after: Some(10_000),
            ..Faults::default()
        });
        let (got, _) = exchange(&mut connect(&p), &vec![1u8; 50_000]);
        assert!(got.len() <= 10_000, "{}", got.len());
        assert_eq!(p.stats().cuts, 1);
    }

    #[test]
    fn a_reset_is_seen_as_a_reset() {
        let p = Proxy::start(echo_server(), |_| Faults {
            cut_down_after: Some(1_000),
            reset: true,
            ..Faults::default()
        });
        let mut s = connect(&p);
        let (got, err) = exchange(&mut s, &vec![2u8; 200_000]);
        assert!(got.len() <= 1_000, "{}", got.len());
        assert_eq!(err, Some(io::ErrorKind::ConnectionReset));
    }

    #[test]
    fn a_stall_holds_the_bytes_without_closing_then_forwards_them() {
        let p = Proxy::start(echo_server(), |_| Faults {
            stall: Some(Stall {
                direction: Direction::Up,
                after: 3,
                duration: Duration::from_millis(800),
            }),
            ..Faults::default()
        });
        let mut s = connect(&p);
        let started = Instant::now();
        s.write_all(b"abcdef").unwrap();
        // "abc" went up, and its echo may race back before the stall holds the other way
        // too; "def" must not arrive while the stall lasts.
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 6];
        loop {
            match s.read(&mut buf) {
                Ok(0) => panic!("the proxy closed during the stall"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => {
                    assert!(
                        matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ),
                        "{e}"
                    );
                    break;
                }
            }
        }
        assert!(
            b"abc".starts_with(&got),
            "{got:?} came back during the stall"
        );
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = vec![0u8; 6 - got.len()];
        s.read_exact(&mut rest).unwrap();
        got.extend_from_slice(&rest);
        assert_eq!(got, b"abcdef");
        assert!(started.elapsed() >= Duration::from_millis(750));
        assert_eq!(p.stats().stalls, 1);
    }

    #[test]
    fn a_slow_link_takes_as_long_as_its_rate_says() {
        let p = Proxy::start(echo_server(), |_| Faults {
            bytes_per_second: Some(100_000),
            ..Faults::default()
        });
        let mut s = connect(&p);
        let started = Instant::now();
        let data = vec![3u8; 50_000];
        s.write_all(&data).unwrap();
        let mut back = vec![0u8; data.len()];
        s.read_exact(&mut back).unwrap();
        // 50 kB at 100 kB/s up, and again down (pipelined): at least half a second.
        assert!(
            started.elapsed() >= Duration::from_millis(450),
            "{:?}",
            started.elapsed()
        );
    }
}
