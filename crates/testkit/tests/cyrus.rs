//! The test kit's Cyrus IMAP: users log in, the admin acts for them with SASL PLAIN, folders
//! are '/'-separated, bare LF is refused as Cyrus refuses it, its log is readable, and a
//! dropped server is gone.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use mailferry_testkit::{Cyrus, CyrusConfig};

/// A tiny line-based IMAP client for these tests only.
struct Imap {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next_tag: u32,
    greeting: String,
}

impl Imap {
    fn connect(server: &Cyrus) -> Imap {
        let stream = TcpStream::connect((server.host(), server.port())).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let writer = stream.try_clone().expect("clone");
        let mut imap = Imap {
            reader: BufReader::new(stream),
            writer,
            next_tag: 1,
            greeting: String::new(),
        };
        imap.greeting = imap.line();
        assert!(imap.greeting.starts_with("* OK"), "{}", imap.greeting);
        imap
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read line");
        assert!(!line.is_empty(), "server closed the connection");
        line
    }

    /// Sends `command` (bytes, literals included) and returns every line up to the tagged one.
    fn cmd(&mut self, command: &[u8]) -> Vec<String> {
        let tag = format!("t{}", self.next_tag);
        self.next_tag += 1;
        let mut bytes = format!("{tag} ").into_bytes();
        bytes.extend_from_slice(command);
        bytes.extend_from_slice(b"\r\n");
        self.writer.write_all(&bytes).expect("write");
        let mut lines = Vec::new();
        loop {
            let line = self.line();
            let done = line.starts_with(&format!("{tag} "));
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    fn ok(&mut self, command: &str) -> Vec<String> {
        let lines = self.cmd(command.as_bytes());
        let last = lines.last().expect("a tagged line");
        assert!(
            last.split_whitespace().nth(1) == Some("OK"),
            "{command}: {lines:?}"
        );
        lines
    }

    fn append(&mut self, folder: &str, message: &[u8]) -> String {
        let mut command = format!("APPEND \"{folder}\" {{{}+}}\r\n", message.len()).into_bytes();
        command.extend_from_slice(message);
        self.cmd(&command).pop().expect("a tagged line")
    }
}

/// SASL PLAIN's initial response: authzid NUL authcid NUL password, in base64.
fn plain(authzid: &str, authcid: &str, password: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = format!("{authzid}\0{authcid}\0{password}").into_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn users_log_in_and_the_admin_acts_for_them_with_sasl_plain() {
    let server = Cyrus::start(CyrusConfig::new(&["alice", "bob"]));
    let mut alice = Imap::connect(&server);
    assert!(
        alice.greeting.contains("Cyrus IMAP 3.6"),
        "{}",
        alice.greeting
    );
    alice.ok("LOGIN alice pw-alice");
    alice.ok("CREATE \"Archive/2024\"");
    // The personal namespace is ("" "/"), as the test kit's Dovecot with Layout::Slash.
    let namespace = alice.ok("NAMESPACE");
    assert!(
        namespace[0].starts_with("* NAMESPACE ((\"\" \"/\"))"),
        "{namespace:?}"
    );
    let wrong = alice.cmd(b"LOGIN alice wrong");
    assert!(!wrong.last().unwrap().contains(" OK "), "{wrong:?}");

    // The admin, acting as alice, sees alice's folders as alice does.
    let mut admin = Imap::connect(&server);
    admin.ok(&format!(
        "AUTHENTICATE PLAIN {}",
        plain("alice", server.admin(), server.admin_password())
    ));
    let list = admin.ok("LIST \"\" \"*\"").join("");
    assert!(list.contains("\"/\" Archive/2024"), "{list}");
    assert!(list.contains("\"/\" INBOX"), "{list}");
    // bob's password does not let bob act as alice: only admins may.
    let mut bob = Imap::connect(&server);
    let refused =
        bob.cmd(format!("AUTHENTICATE PLAIN {}", plain("alice", "bob", "pw-bob")).as_bytes());
    assert!(refused.last().unwrap().contains(" NO "), "{refused:?}");
    // The admin's own commands.
    let acl = server.admin_command("GETACL \"user/bob\"");
    assert!(
        acl.iter().any(|l| l.starts_with("* ACL user/bob bob ")),
        "{acl:?}"
    );
}

#[test]
fn bare_lf_is_refused_and_crlf_kept_and_the_log_says_so() {
    let server = Cyrus::start(CyrusConfig::new(&["carol"]));
    let mut carol = Imap::connect(&server);
    carol.ok("LOGIN carol pw-carol");
    let lf = carol.append("INBOX", b"Subject: lf\n\nbody\n");
    assert!(lf.contains("NO") && lf.contains("bare newlines"), "{lf}");
    let crlf = carol.append("INBOX", b"Subject: crlf\r\n\r\nbody\r\n");
    assert!(crlf.contains("OK [APPENDUID"), "{crlf}");
    carol.ok("SELECT INBOX");
    let fetched = carol.ok("FETCH 1:* (BODY.PEEK[])");
    assert_eq!(fetched.len(), 6, "{fetched:?}");
    assert_eq!(fetched[1], "Subject: crlf\r\n");
    // Cyrus logs through syslog(3); the test kit's shim puts it in a file.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.log_tail(200).contains("login:") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = server.log_tail(200);
    assert!(log.contains("login:") && log.contains("carol"), "{log}");
}

#[test]
fn a_dropped_server_is_gone_with_its_directory() {
    let server = Cyrus::start(CyrusConfig::new(&["dave"]));
    let port = server.port();
    let dir = server.dir().to_path_buf();
    let mut dave = Imap::connect(&server);
    dave.ok("LOGIN dave pw-dave");
    drop(server);
    assert!(!dir.exists(), "{} is still there", dir.display());
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still accepts connections"
    );
}
