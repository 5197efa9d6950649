//! Starts real Dovecot servers and talks raw IMAP to them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mailferry_testkit::{Dovecot, DovecotConfig, Layout, Profile, Tls};

/// A tiny line-based IMAP client for these tests only.
struct Imap {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next_tag: u32,
}

impl Imap {
    fn connect(server: &Dovecot) -> (Imap, String) {
        let stream = TcpStream::connect((server.host(), server.port())).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let writer = stream.try_clone().expect("clone");
        let mut imap = Imap {
            reader: BufReader::new(stream),
            writer,
            next_tag: 1,
        };
        let greeting = imap.line();
        (imap, greeting)
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read line");
        assert!(!line.is_empty(), "server closed the connection");
        line
    }

    fn tag(&mut self) -> String {
        let tag = format!("t{}", self.next_tag);
        self.next_tag += 1;
        tag
    }

    /// Sends `command` and returns (untagged lines, tagged completion line).
    fn cmd(&mut self, command: &str) -> (Vec<String>, String) {
        let tag = self.tag();
        self.writer
            .write_all(format!("{tag} {command}\r\n").as_bytes())
            .expect("write");
        self.collect(&tag)
    }

    fn collect(&mut self, tag: &str) -> (Vec<String>, String) {
        let mut untagged = Vec::new();
        loop {
            let line = self.line();
            if line.starts_with(&format!("{tag} ")) {
                return (untagged, line);
            }
            untagged.push(line);
        }
    }

    /// `APPEND mailbox {n}` with a synchronizing literal; returns the tagged line (or the
    /// tagged NO the server sent instead of the continuation).
    fn append(&mut self, mailbox: &str, message: &[u8]) -> String {
        let tag = self.tag();
        self.writer
            .write_all(format!("{tag} APPEND \"{mailbox}\" {{{}}}\r\n", message.len()).as_bytes())
            .expect("write");
        let first = self.line();
        if first.starts_with('+') {
            self.writer.write_all(message).expect("write literal");
            self.writer.write_all(b"\r\n").expect("write crlf");
            self.collect(&tag).1
        } else {
            assert!(first.starts_with(&format!("{tag} ")), "unexpected: {first}");
            first
        }
    }

    fn login(&mut self, user: &str, pass: &str) -> String {
        self.cmd(&format!("LOGIN \"{user}\" \"{pass}\"")).1
    }
}

fn assert_ok(line: &str, what: &str, server: &Dovecot) {
    assert!(
        line.split_whitespace().nth(1) == Some("OK"),
        "{what}: {line}\n{}",
        server.log_tail(30)
    );
}

fn message(subject: &str, body_len: usize) -> Vec<u8> {
    let mut msg = format!(
        "From: alice@example.test\r\nTo: bob@example.test\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@example.test>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\n"
    )
    .into_bytes();
    while msg.len() < body_len {
        msg.extend_from_slice(
            b"0123456789012345678901234567890123456789012345678901234567890123456789\r\n",
        );
    }
    msg
}

#[test]
fn full_profile_login_and_master_user() {
    let server = Dovecot::start(DovecotConfig::new(&["alice", "bob"]));
    assert_eq!(server.host(), "127.0.0.1");
    assert!(server.ca_pem().is_none());

    let (mut imap, greeting) = Imap::connect(&server);
    assert!(greeting.starts_with("* OK"), "{greeting}");
    let (caps, done) = imap.cmd("CAPABILITY");
    assert_ok(&done, "pre-login CAPABILITY", &server);
    let caps = caps.concat();
    assert!(caps.contains("AUTH=PLAIN"), "{caps}");
    assert!(!caps.contains("STARTTLS"), "{caps}");
    let done = imap.login("alice", "pw-alice");
    assert_ok(&done, "LOGIN alice", &server);
    let (caps, _) = imap.cmd("CAPABILITY");
    let caps = caps.concat();
    assert!(
        caps.contains("CONDSTORE") && caps.contains("SPECIAL-USE"),
        "{caps}"
    );
    let (list, done) = imap.cmd("LIST \"\" \"*\"");
    assert_ok(&done, "LIST", &server);
    let list = list.concat();
    assert!(list.contains("\"/\" INBOX"), "{list}");
    assert!(
        list.contains("\\Sent") && list.contains("\"/\" Sent"),
        "{list}"
    );
    imap.cmd("LOGOUT");

    // A failed login must not slow the next ones down.
    let (mut imap, _) = Imap::connect(&server);
    let done = imap.login("bob", "wrong");
    assert!(done.contains("NO"), "{done}");
    let started = Instant::now();
    let done = imap.login("alice*admin", "adminpass");
    assert_ok(&done, "LOGIN alice*admin (master user)", &server);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "login after a failure took {:?}",
        started.elapsed()
    );
    let (_, done) = imap.cmd("SELECT INBOX");
    assert_ok(&done, "SELECT", &server);

    // AUTHENTICATE PLAIN with authzid alice, authcid admin.
    let (mut imap, _) = Imap::connect(&server);
    let tag = imap.tag();
    // base64("alice\0admin\0adminpass")
    let plain = "YWxpY2UAYWRtaW4AYWRtaW5wYXNz";
    imap.writer
        .write_all(format!("{tag} AUTHENTICATE PLAIN {plain}\r\n").as_bytes())
        .expect("write");
    let (_, done) = imap.collect(&tag);
    assert_ok(&done, "AUTHENTICATE PLAIN as master", &server);

    assert!(server.mail_dir("alice").join("Maildir").is_dir());
    let out = server.doveadm(&["mailbox", "list", "-u", "alice"]);
    assert!(
        out.status.success(),
        "doveadm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Sent"));
}

#[test]
fn exchange_like_profile_hides_capabilities() {
    let mut cfg = DovecotConfig::new(&["alice"]);
    cfg.profile = Profile::ExchangeLike;
    let server = Dovecot::start(cfg);

    let (mut imap, greeting) = Imap::connect(&server);
    assert!(!greeting.contains("CONDSTORE"), "{greeting}");
    let (pre, _) = imap.cmd("CAPABILITY");
    let pre = pre.concat();
    assert!(
        pre.contains("IMAP4rev1") && pre.contains("AUTH=PLAIN"),
        "{pre}"
    );
    assert!(
        !pre.contains("CONDSTORE") && !pre.contains("SASL-IR"),
        "{pre}"
    );

    let done = imap.login("alice", "pw-alice");
    assert_ok(&done, "LOGIN", &server);
    let (caps, done) = imap.cmd("CAPABILITY");
    assert_ok(&done, "CAPABILITY", &server);
    let caps = caps.concat();
    assert!(
        caps.contains("IMAP4rev1 LITERAL+ UIDPLUS MOVE ID IDLE NAMESPACE CHILDREN"),
        "{caps}"
    );
    for missing in [
        "CONDSTORE",
        "MULTIAPPEND",
        "SPECIAL-USE",
        "COMPRESS",
        "QRESYNC",
    ] {
        assert!(!caps.contains(missing), "{missing} advertised: {caps}");
    }
}

#[test]
fn dot_inbox_prefix_layout() {
    let mut cfg = DovecotConfig::new(&["alice"]);
    cfg.layout = Layout::DotInboxPrefix;
    let server = Dovecot::start(cfg);

    let (mut imap, _) = Imap::connect(&server);
    assert_ok(&imap.login("alice", "pw-alice"), "LOGIN", &server);
    let (list, done) = imap.cmd("LIST \"\" \"*\"");
    assert_ok(&done, "LIST", &server);
    let list = list.concat();
    assert!(list.contains("\".\" INBOX\r\n"), "{list}");
    for (name, attr) in [
        ("INBOX.Sent Items", "\\Sent"),
        ("INBOX.Deleted Items", "\\Trash"),
        ("INBOX.Junk E-mail", "\\Junk"),
        ("INBOX.Drafts", "\\Drafts"),
        ("INBOX.Archive", "\\Archive"),
    ] {
        let line = list
            .lines()
            .find(|l| l.ends_with(&format!("\"{name}\"")) || l.ends_with(&format!(" {name}")))
            .unwrap_or_else(|| panic!("{name} missing from LIST: {list}"));
        assert!(line.contains(attr), "{name} lacks {attr}: {line}");
        assert!(line.contains("\".\""), "{line}");
    }
    let (ns, _) = imap.cmd("NAMESPACE");
    assert!(ns.concat().contains("((\"INBOX.\" \".\"))"), "{ns:?}");
}

/// Runs an `openssl s_client` command that sends `LOGOUT` and waits for the server to
/// close the connection.
fn s_client(cmd: &mut Command) -> std::process::Output {
    let mut child = cmd
        .args(["-crlf", "-ign_eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl s_client (apt-get install openssl)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"a LOGOUT\n").expect("write to s_client");
    drop(stdin);
    child.wait_with_output().expect("wait for s_client")
}

#[test]
fn implicit_tls_starts_with_private_ca() {
    let mut cfg = DovecotConfig::new(&["alice"]);
    cfg.tls = Tls::Implicit;
    let server = Dovecot::start(cfg);
    let ca = server.ca_pem().expect("ca.pem for TLS modes");
    assert!(ca.is_file(), "{}", ca.display());

    // A real handshake, verified against the CA, via the openssl CLI (the testkit must
    // not depend on rustls).
    let out = s_client(
        Command::new("openssl")
            .args(["s_client", "-connect"])
            .arg(format!("{}:{}", server.host(), server.port()))
            .args(["-servername", "localhost", "-verify_return_error"])
            .args(["-verify_hostname", "localhost", "-CAfile"])
            .arg(&ca),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("* OK") && stdout.contains("Verify return code: 0 (ok)"),
        "openssl s_client: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn starttls_is_offered() {
    let mut cfg = DovecotConfig::new(&["alice"]);
    cfg.tls = Tls::StartTls;
    let server = Dovecot::start(cfg);
    let ca = server.ca_pem().expect("ca.pem");
    assert!(ca.is_file());

    let (mut imap, _) = Imap::connect(&server);
    let (caps, _) = imap.cmd("CAPABILITY");
    assert!(caps.concat().contains("STARTTLS"), "{caps:?}");
    let (_, done) = imap.cmd("STARTTLS");
    assert_ok(&done, "STARTTLS", &server);

    let out = s_client(
        Command::new("openssl")
            .args(["s_client", "-starttls", "imap", "-connect"])
            .arg(format!("{}:{}", server.host(), server.port()))
            .args([
                "-verify_return_error",
                "-verify_hostname",
                "localhost",
                "-CAfile",
            ])
            .arg(&ca),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Verify return code: 0 (ok)"), "{stdout}");
}

#[test]
fn restart_keeps_port_and_mail() {
    let mut server = Dovecot::start(DovecotConfig::new(&["alice"]));
    let port = server.port();
    {
        let (mut imap, _) = Imap::connect(&server);
        assert_ok(&imap.login("alice", "pw-alice"), "LOGIN", &server);
        let done = imap.append("INBOX", &message("before-restart", 200));
        assert_ok(&done, "APPEND", &server);
        // Leave the connection open across the restart.
        server.restart();
        let mut rest = Vec::new();
        let _ = imap.reader.read_to_end(&mut rest);
    }
    assert_eq!(server.port(), port);

    let (mut imap, greeting) = Imap::connect(&server);
    assert!(greeting.starts_with("* OK"), "{greeting}");
    assert_ok(
        &imap.login("alice", "pw-alice"),
        "LOGIN after restart",
        &server,
    );
    let (untagged, done) = imap.cmd("SELECT INBOX");
    assert_ok(&done, "SELECT", &server);
    assert!(
        untagged.iter().any(|l| l == "* 1 EXISTS\r\n"),
        "{untagged:?}"
    );
    let (fetch, _) = imap.cmd("FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]");
    assert!(fetch.concat().contains("before-restart"), "{fetch:?}");

    // Still no login delay after a failed login.
    let (mut imap, _) = Imap::connect(&server);
    assert!(imap.login("alice", "wrong").contains(" NO "));
    let started = Instant::now();
    assert_ok(
        &imap.login("alice", "pw-alice"),
        "LOGIN after a failure",
        &server,
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    server.stop();
    server.stop(); // idempotent
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still listening after stop"
    );
}

#[test]
fn quota_rejects_oversized_append() {
    let mut cfg = DovecotConfig::new(&["alice"]);
    cfg.quota_bytes = Some(10_000);
    let server = Dovecot::start(cfg);

    let (mut imap, _) = Imap::connect(&server);
    let done = imap.login("alice", "pw-alice");
    assert_ok(&done, "LOGIN", &server);
    assert!(done.contains("QUOTA"), "QUOTA capability missing: {done}");
    assert_ok(
        &imap.append("INBOX", &message("small", 1_000)),
        "small APPEND",
        &server,
    );
    let done = imap.append("INBOX", &message("big", 20_000));
    assert!(
        done.contains(" NO ") && (done.contains("OVERQUOTA") || done.contains("Quota")),
        "oversized APPEND: {done}\n{}",
        server.log_tail(20)
    );
    let (root, done) = imap.cmd("GETQUOTAROOT INBOX");
    assert_ok(&done, "GETQUOTAROOT", &server);
    assert!(root.concat().contains("STORAGE"), "{root:?}");
}

#[test]
fn keep_dirs_env_is_not_set_by_default_and_dir_is_removed() {
    let server = Dovecot::start(DovecotConfig::new(&["alice"]));
    let dir = server.dir().to_path_buf();
    assert!(dir.join("etc/dovecot.conf").is_file());
    assert!(!server.log_tail(5).is_empty());
    drop(server);
    if std::env::var("MAILFERRY_KEEP_TEST_DIRS").as_deref() != Ok("1") {
        assert!(!dir.exists(), "{} not removed", dir.display());
    }
}
