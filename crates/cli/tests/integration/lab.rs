//! The test lab: a real source and target server (two Dovecots, or a Dovecot and a Cyrus), a
//! job file for them, the `mailferry` binary, and helpers to fill a server and to compare what
//! two servers hold, over IMAP.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use mailferry_imap::{AppendRequest, Client, Endpoint, Login, Security};
use mailferry_testkit::{Cyrus, Dovecot, DovecotConfig};
use serde_json::Value;
use tempfile::TempDir;

pub const ADMIN_PW: &str = "adminpass";

/// A real IMAP server of the test kit, as the lab reaches it: its admin (password
/// [`ADMIN_PW`]) acting for any user.
pub trait ImapServer {
    fn host(&self) -> &str;
    fn port(&self) -> u16;
    fn ca_pem(&self) -> Option<PathBuf>;
    fn cert_pem(&self) -> Option<PathBuf>;
    /// The test's own login as `user` with the admin's password.
    fn admin_login(&self, user: &str) -> Login;
    /// The job file's `admin_login` for this server on `side` (`source` / `target`).
    fn job_admin_login(&self, side: &str) -> &'static str;
}

impl ImapServer for Dovecot {
    fn host(&self) -> &str {
        Dovecot::host(self)
    }
    fn port(&self) -> u16 {
        Dovecot::port(self)
    }
    fn ca_pem(&self) -> Option<PathBuf> {
        Dovecot::ca_pem(self)
    }
    fn cert_pem(&self) -> Option<PathBuf> {
        Dovecot::cert_pem(self)
    }
    fn admin_login(&self, user: &str) -> Login {
        Login::Plain {
            user: format!("{user}*admin"),
            password: ADMIN_PW.into(),
        }
    }
    /// Both work with the test kit's Dovecot; the lab has always used one of each.
    fn job_admin_login(&self, side: &str) -> &'static str {
        if side == "source" {
            "master-separator"
        } else {
            "sasl-authzid"
        }
    }
}

impl ImapServer for Cyrus {
    fn host(&self) -> &str {
        Cyrus::host(self)
    }
    fn port(&self) -> u16 {
        Cyrus::port(self)
    }
    fn ca_pem(&self) -> Option<PathBuf> {
        None
    }
    fn cert_pem(&self) -> Option<PathBuf> {
        None
    }
    fn admin_login(&self, user: &str) -> Login {
        Login::SaslPlain {
            authzid: user.into(),
            authcid: self.admin().into(),
            password: self.admin_password().into(),
        }
    }
    /// Cyrus has no master-user separator: an admin acts for a user with SASL PLAIN.
    fn job_admin_login(&self, _side: &str) -> &'static str {
        "sasl-authzid"
    }
}

pub struct Lab<S = Dovecot, T = Dovecot> {
    pub source: S,
    pub target: T,
    pub dir: TempDir,
    pub users: Vec<String>,
}

impl Lab {
    /// How long the two Dovecots' logs are now: where to read them from after a command.
    pub fn log_marks(&self) -> [usize; 2] {
        [self.source.log().len(), self.target.log().len()]
    }

    /// Two default Dovecots (`/` separator, full capabilities) with these users on both.
    pub fn new(users: &[&str]) -> Lab {
        Lab::with(DovecotConfig::new(users), DovecotConfig::new(users))
    }

    pub fn with(source: DovecotConfig, target: DovecotConfig) -> Lab {
        let users: Vec<String> = source.users.iter().map(|(u, _)| u.clone()).collect();
        let users: Vec<&str> = users.iter().map(String::as_str).collect();
        Lab::of(Dovecot::start(source), Dovecot::start(target), &users)
    }
}

impl<S: ImapServer, T: ImapServer> Lab<S, T> {
    /// A lab over servers already started, with these users on both.
    pub fn of(source: S, target: T, users: &[&str]) -> Lab<S, T> {
        let lab = Lab {
            source,
            target,
            dir: {
                let mut dir = tempfile::tempdir().expect("temp dir");
                if std::env::var("MAILFERRY_KEEP_TEST_DIRS").as_deref() == Ok("1") {
                    dir.disable_cleanup(true);
                    eprintln!("lab: kept job dir {}", dir.path().display());
                }
                dir
            },
            users: users.iter().map(|u| (*u).to_owned()).collect(),
        };
        lab.write_job("");
        lab.write_csv();
        lab
    }

    pub fn job(&self) -> PathBuf {
        self.dir.path().join("job.toml")
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("job.db")
    }

    /// The job file: both servers over plain loopback with the master user; `extra` is
    /// appended (a `[migration]` table, say).
    pub fn write_job(&self, extra: &str) {
        self.write_job_via(self.source.port(), self.target.port(), extra);
    }

    /// [`Lab::write_job`], reaching the servers on other loopback ports (a proxy's).
    pub fn write_job_via(&self, source_port: u16, target_port: u16, extra: &str) {
        let server = |name: &str, port: u16, login: &str| {
            format!(
                "[{name}]\nkind = \"imap\"\nhost = \"{}\"\nport = {port}\nsecurity = \"plain\"\n\
                 allow_plain = true\nauth = \"admin\"\nadmin_user = \"admin\"\n\
                 admin_password = {{ env = \"MF_TEST_ADMIN_PW\" }}\nadmin_login = \"{login}\"\n\
                 max_connections = 8\n\n",
                ImapServer::host(&self.source),
            )
        };
        let text = format!(
            "name = \"test\"\n\n{}{}[mailboxes]\ncsv = \"mailboxes.csv\"\n\n{extra}\n",
            server("source", source_port, self.source.job_admin_login("source")),
            server("target", target_port, self.target.job_admin_login("target")),
        );
        std::fs::write(self.job(), text).expect("write job");
    }

    pub fn write_csv(&self) {
        let mut csv =
            String::from("Source ID,Source addresses,Source login,Target addresses,Target login\n");
        for u in &self.users {
            csv.push_str(&format!("id-{u},{u}@old.example,{u},{u}@new.example,{u}\n"));
        }
        std::fs::write(self.dir.path().join("mailboxes.csv"), csv).expect("write csv");
    }

    pub fn mailferry(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run mailferry")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mailferry"));
        c.args(args)
            .env("MF_TEST_ADMIN_PW", ADMIN_PW)
            .current_dir(self.dir.path());
        c
    }

    /// Runs a reporting command with `--json`; returns the exit code and the JSON.
    pub fn json(&self, args: &[&str]) -> (i32, Value) {
        let mut all: Vec<&str> = args.to_vec();
        all.push("--json");
        let out = self.mailferry(&all);
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "mailferry {args:?} did not print JSON ({e}):\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), v)
    }

    /// Imports the CSV and runs `migrate --all`, asserting it succeeded; returns its JSON.
    pub fn migrate_ok(&self) -> Value {
        let job = self.job();
        let job = job.to_str().expect("utf-8 path");
        let out = self.mailferry(&["match", job]);
        assert!(
            out.status.success(),
            "match failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (code, v) = self.json(&["migrate", job, "--all"]);
        assert_eq!(code, 0, "migrate failed: {v:#}");
        v
    }
}

/// A certificate's SHA-256 fingerprint as `openssl x509 -fingerprint -sha256` gives it.
fn pin_of(cert: &std::path::Path) -> [u8; 32] {
    let hex: String = mailferry_testkit::openssl_fingerprint(cert)
        .chars()
        .filter(|c| *c != ':')
        .collect();
    let mut pin = [0u8; 32];
    for (i, b) in pin.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex fingerprint");
    }
    pin
}

pub fn connect(d: &impl ImapServer, user: &str) -> Client {
    let mut ep = Endpoint {
        host: d.host().to_string(),
        port: d.port(),
        security: Security::Plain,
        ca_file: d.ca_pem(),
        verify_certificates: true,
        // The test's own access to its server: exactly that server's certificate, whatever
        // names it holds (a CN-only one too).
        pins: d.cert_pem().map(|c| pin_of(&c)).into_iter().collect(),
        timeout: Duration::from_secs(60),
    };
    // A TLS server of the test kit is either implicit TLS (no plain listener) or STARTTLS.
    let mut c = match ep.ca_file {
        Some(_) => Client::connect(&Endpoint {
            security: Security::Tls,
            ..ep.clone()
        })
        .or_else(|_| {
            ep.security = Security::StartTls;
            Client::connect(&ep)
        })
        .expect("connect over TLS"),
        None => Client::connect(&ep).expect("connect"),
    };
    c.login(&d.admin_login(user)).expect("login");
    c
}

pub struct Msg {
    pub body: Vec<u8>,
    pub flags: Vec<String>,
    pub date: String,
}

/// A generated message of about `size` bytes, with flags, keywords and a date that vary
/// with `i`.
pub fn generated(i: usize, size: usize) -> Msg {
    let mut body = format!(
        "From: Sender {i} <sender{i}@old.example>\r\nTo: someone@old.example\r\n\
         Subject: Generated message {i}\r\nMessage-ID: <gen-{i}@mailferry.test>\r\n\
         Date: Mon, 2 Mar 2020 10:00:00 +0100\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    .into_bytes();
    let line = format!("Line of message {i}: the quick brown fox jumps over the lazy dog.\r\n");
    while body.len() < size {
        body.extend_from_slice(line.as_bytes());
    }
    let mut flags = Vec::new();
    for (m, f) in [
        (2, "\\Seen"),
        (5, "\\Answered"),
        (7, "$Label1"),
        (11, "ProjectX"),
        (13, "\\Flagged"),
        (17, "$Forwarded"),
    ] {
        if i.is_multiple_of(m) {
            flags.push(f.to_string());
        }
    }
    let zones = ["+0000", "+0200", "-0700", "+0530"];
    let date = format!(
        "{:02}-{}-{} {:02}:{:02}:{:02} {}",
        1 + i % 28,
        [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"
        ][i % 12],
        2015 + i % 11,
        i % 24,
        i % 60,
        (i * 7) % 60,
        zones[i % zones.len()]
    );
    Msg { body, flags, date }
}

/// Creates `folder` (a server name) if needed, subscribes it, and appends the messages.
/// Returns the server's refusal for each message it did not store.
pub fn fill(d: &impl ImapServer, user: &str, folder: &str, msgs: &[Msg]) -> Vec<(usize, String)> {
    let mut c = connect(d, user);
    if folder != "INBOX" {
        let _ = c.create(folder);
        let _ = c.subscribe(folder);
    }
    let mut refused = Vec::new();
    for chunk in msgs.chunks(100).enumerate() {
        let (n, chunk) = chunk;
        let mut tags = Vec::new();
        for m in chunk {
            tags.push(
                c.append_send(&AppendRequest {
                    mailbox: folder,
                    flags: &m.flags,
                    date: Some(&m.date),
                    message: &m.body,
                })
                .expect("append"),
            );
        }
        for (i, t) in tags.iter().enumerate() {
            if let Err(e) = c.append_finish(t) {
                refused.push((n * 100 + i, e.to_string()));
            }
        }
    }
    c.logout();
    refused
}

/// One message as a server returns it: exact bytes, flags (sorted, `\Recent` left out) and
/// INTERNALDATE.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seen {
    pub body: Vec<u8>,
    pub flags: String,
    pub date: String,
}

/// Everything a user's mailbox holds, by folder path ('/'-separated, prefix removed),
/// messages sorted so that two snapshots compare as multisets.
pub fn snapshot(d: &impl ImapServer, user: &str) -> BTreeMap<String, Vec<Seen>> {
    let mut c = connect(d, user);
    let tree = mailferry_adapters::session::imap::read_tree(&mut c).expect("list");
    let mut out = BTreeMap::new();
    for f in tree.folders() {
        if !f.selectable {
            continue;
        }
        let sel = c.select(&f.raw_name, true).expect("select");
        let mut msgs = Vec::new();
        if sel.exists > 0 {
            c.uid_fetch("1:*", "UID FLAGS INTERNALDATE BODY.PEEK[]", |mut m| {
                let flags =
                    mailferry_core::model::Flags::from_server(m.flags().unwrap_or_default())
                        .to_string();
                let date = m
                    .get("INTERNALDATE")
                    .and_then(|v| v.as_text())
                    .unwrap_or_default();
                let body = m
                    .take("BODY[]")
                    .and_then(|v| v.into_bytes())
                    .unwrap_or_default();
                msgs.push(Seen { body, flags, date });
                Ok(())
            })
            .expect("fetch");
        }
        msgs.sort();
        out.insert(f.path.as_str().to_string(), msgs);
    }
    c.logout();
    out
}

/// Subscribed folder paths.
pub fn subscriptions(d: &impl ImapServer, user: &str) -> Vec<String> {
    let mut c = connect(d, user);
    let tree = mailferry_adapters::session::imap::read_tree(&mut c).expect("list");
    let mut s: Vec<String> = tree
        .folders()
        .filter(|f| f.subscribed)
        .map(|f| f.path.as_str().to_string())
        .collect();
    s.sort();
    c.logout();
    s
}

/// Asserts the target holds exactly what the source holds in every folder of `folders`
/// (source path → target path), each message once, and reports differences readably.
pub fn assert_same(
    source: &BTreeMap<String, Vec<Seen>>,
    target: &BTreeMap<String, Vec<Seen>>,
    map: impl Fn(&str) -> String,
) {
    for (folder, msgs) in source {
        let tfolder = map(folder);
        let t = target
            .get(&tfolder)
            .unwrap_or_else(|| panic!("target lacks folder {tfolder} (source {folder})"));
        if t != msgs {
            let missing = msgs.iter().filter(|m| !t.contains(m)).count();
            let extra = t.iter().filter(|m| !msgs.contains(m)).count();
            let example = msgs.iter().find(|m| !t.contains(m)).map(|m| {
                (
                    String::from_utf8_lossy(&m.body[..m.body.len().min(200)]).to_string(),
                    m.flags.clone(),
                    m.date.clone(),
                )
            });
            let extra_example = t.iter().find(|m| !msgs.contains(m)).map(|m| {
                (
                    String::from_utf8_lossy(&m.body[..m.body.len().min(200)]).to_string(),
                    m.flags.clone(),
                    m.date.clone(),
                )
            });
            panic!(
                "folder {folder} -> {tfolder}: source {} messages, target {}; {missing} missing, {extra} extra; first missing: {example:?}; first extra: {extra_example:?}",
                msgs.len(),
                t.len()
            );
        }
    }
}

/// INTERNALDATE as an instant: Maildir keeps the time (the file's mtime), not the zone, and
/// Cyrus gives it in its own zone.
pub fn as_utc(date: &str) -> i64 {
    chrono::DateTime::parse_from_str(date.trim(), "%d-%b-%Y %H:%M:%S %z")
        .unwrap_or_else(|e| panic!("bad INTERNALDATE {date:?}: {e}"))
        .timestamp()
}

/// A snapshot with every INTERNALDATE as its instant (see [`as_utc`]).
pub fn utc_dates(mut s: BTreeMap<String, Vec<Seen>>) -> BTreeMap<String, Vec<Seen>> {
    for msgs in s.values_mut() {
        for m in msgs.iter_mut() {
            m.date = as_utc(&m.date).to_string();
        }
        msgs.sort();
    }
    s
}

pub fn total(s: &BTreeMap<String, Vec<Seen>>) -> usize {
    s.values().map(Vec::len).sum()
}

/// Messages of `dir` (recursively), sorted by path: name and bytes.
pub fn messages_in(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "eml") {
                let bytes = std::fs::read(&p).expect("read message");
                out.push((
                    p.strip_prefix(dir).unwrap_or(&p).display().to_string(),
                    bytes,
                ));
            }
        }
    }
    out.sort();
    out
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mail")
}

/// SPEC §3: where the target server normalises what it is given, the copy must be what that
/// server returns for the source's exact bytes. Dovecot's normalisation is not idempotent
/// (`CR CR CR LF` is stored as `CR CR LF` by the source, which the target then stores as
/// `CR LF`), so for every source message with a bare CR this asks the real target server:
/// it appends the source's exact bytes to a scratch folder and reads them back.
pub fn as_target_stores_them(
    target: &impl ImapServer,
    user: &str,
    source: &mut BTreeMap<String, Vec<Seen>>,
) {
    let has_bare_cr = |b: &[u8]| {
        b.iter()
            .enumerate()
            .any(|(i, &c)| c == b'\r' && b.get(i + 1) != Some(&b'\n'))
    };
    let mut c = connect(target, user);
    let scratch = "mailferry-test-oracle";
    let _ = c.create(scratch);
    for msgs in source.values_mut() {
        for m in msgs.iter_mut().filter(|m| has_bare_cr(&m.body)) {
            let tag = c
                .append_send(&AppendRequest {
                    mailbox: scratch,
                    flags: &[],
                    date: None,
                    message: &m.body,
                })
                .expect("append to the oracle folder");
            let (_, uid) = c.append_finish(&tag).expect("append").expect("APPENDUID");
            c.select(scratch, true).expect("select oracle");
            c.uid_fetch(&uid.to_string(), "BODY.PEEK[]", |mut f| {
                m.body = f.take("BODY[]").and_then(|v| v.into_bytes()).expect("body");
                Ok(())
            })
            .expect("fetch from the oracle folder");
        }
        msgs.sort();
    }
    c.logout();
}

/// A test world that runs `mailferry` in its job folder with its own secrets in the
/// environment: it says how (`run`), and gets `ok` and `json` from it.
pub trait Runs {
    /// The exit code, standard output and standard error.
    fn run(&self, args: &[&str]) -> (i32, String, String);

    /// Standard output of a command that must succeed.
    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "mailferry {args:?} failed:\n{out}\n{err}");
        out
    }

    /// The JSON a command prints with `--json`, whatever its exit code.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let (_, out, err) = self.run(&all);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{args:?}: no JSON ({e}):\n{out}\n{err}"))
    }
}

/// `mailferry ARGS` in `dir` with these variables set.
pub fn run_in(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mailferry"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .output()
        .expect("run mailferry");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// How many TCP connections are established on the server side of each of `ports` now, by
/// the kernel's own table (`/proc/net/tcp` and `tcp6`: sockets in state ESTABLISHED whose
/// local port is the server's). A connection the client has closed leaves this state at once
/// (loopback delivers the FIN synchronously), one being accepted enters it with the handshake.
/// The kernel writes the table a page at a time, and a socket that comes or goes meanwhile
/// can shift another into the next page: each connection (its two addresses) counts once.
/// Nor is the table one snapshot: a connection closed after the kernel wrote its page and one
/// opened later in a later page are both in it, though they never were at once. (Seen by
/// hand: a client that closes its one connection before it opens the next, beside 600 other
/// sockets, was read as two once in 127 reads by a sampler in Python. That is most likely the
/// CI's one third source connection under a cap of two, where the leases allow two.) So
/// [`ConnectionPeaks`] counts a level only when two samples in a row see it.
pub fn established_on(ports: &[u16]) -> Vec<usize> {
    let mut seen: Vec<std::collections::HashSet<(String, String)>> =
        vec![std::collections::HashSet::new(); ports.len()];
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let mut fields = line.split_whitespace();
            let (Some(local), Some(remote), Some(state)) =
                (fields.nth(1), fields.next(), fields.next())
            else {
                continue;
            };
            if state != "01" {
                continue;
            }
            let port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if let Some(i) = port.and_then(|p| ports.iter().position(|x| *x == p)) {
                seen[i].insert((local.to_string(), remote.to_string()));
            }
        }
    }
    seen.iter().map(std::collections::HashSet::len).collect()
}

/// Samples [`established_on`] as often as it can on a thread of its own, until stopped.
pub struct ConnectionPeaks {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(Vec<usize>, usize)>>,
}

impl ConnectionPeaks {
    pub fn start(ports: &[u16]) -> ConnectionPeaks {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ports, flag) = (ports.to_vec(), std::sync::Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut peaks = vec![0; ports.len()];
            let mut last = vec![0; ports.len()];
            let mut samples = 0;
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                let now = established_on(&ports);
                // A level held over two samples (a millisecond apart at least): a pass holds
                // its connections for its whole length, a table read across a close and an
                // open only for that read (see `established_on`).
                for ((peak, before), now) in peaks.iter_mut().zip(&last).zip(&now) {
                    *peak = (*peak).max(*before.min(now));
                }
                last = now;
                samples += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            (peaks, samples)
        });
        ConnectionPeaks {
            stop,
            thread: Some(thread),
        }
    }

    /// The most connections seen on each port, and how many samples were taken.
    pub fn stop(mut self) -> (Vec<usize>, usize) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("the sampler panicked")
    }
}

impl Drop for ConnectionPeaks {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Polls `done` every 100 ms until it holds; fails the test after `limit`, naming `what`.
pub fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not after {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The two Dovecots' logs from `marks` (their lengths before, from [`Lab::log_marks`]) show at
/// least `at_least` logins each, and every one of those sessions ended with a LOGOUT the
/// server read ("Disconnected: Logged out"), not with a connection closed or reset.
pub fn assert_sessions_logged_out(lab: &Lab, marks: [usize; 2], at_least: usize) {
    for (name, server, mark) in [
        ("source", &lab.source, marks[0]),
        ("target", &lab.target, marks[1]),
    ] {
        // Each login of the passes (`session=<ID>` in imap-login's line) and how the session
        // ended (imap's `<ID>: Info: Disconnected: ...`), once the server has read the close.
        let ends = || {
            let log = server.log()[mark..].to_string();
            let sessions: Vec<String> = log
                .lines()
                .filter(|l| l.contains("imap-login: Info: Login:"))
                .filter_map(|l| l.split("session=<").nth(1)?.split('>').next())
                .map(str::to_string)
                .collect();
            let ends: Vec<Option<String>> = sessions
                .iter()
                .map(|id| {
                    log.lines()
                        .find(|l| l.contains(&format!("<{id}>: Info: Disconnected:")))
                        .map(|l| l.split("Disconnected: ").nth(1).unwrap_or(l).to_string())
                })
                .collect();
            (log, ends)
        };
        let start = std::time::Instant::now();
        let (log, ends) = loop {
            let (log, ends) = ends();
            if ends.iter().all(Option::is_some) || start.elapsed() > Duration::from_secs(10) {
                break (log, ends);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            ends.len() >= at_least,
            "{name}: {at_least} sessions at least:\n{log}"
        );
        for end in &ends {
            assert!(
                end.as_deref().is_some_and(|e| e.starts_with("Logged out")),
                "{name}: a session ended {end:?}, not logged out:\n{log}"
            );
        }
    }
}
