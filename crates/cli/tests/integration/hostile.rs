//! A hostile source server: it logs every mailbox in, then answers the folder listing with
//! something no honest server sends — a literal of 100 GB, an endless line, lists nested ten
//! thousand deep, bytes that are not IMAP. mailferry must say what the server did, in words,
//! fail that mailbox only, allocate nothing the server asked for, and stay small.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::lab::*;

/// What the server sends instead of a folder list, chosen by the mailbox that logged in.
fn poison(login: &str) -> Vec<u8> {
    match login {
        // A literal of 100 GB announced, and then nothing.
        "ann" => b"* LIST () \"/\" {107374182400}\r\n".to_vec(),
        // A line that never ends: 80 MB without CRLF (more than any limit).
        "ben" => {
            let mut v = b"* LIST () \"/\" \"".to_vec();
            v.resize(80 << 20, b'a');
            v
        }
        // Ten thousand nested lists.
        "cat" => {
            let mut v = b"* LIST ".to_vec();
            v.extend(std::iter::repeat_n(b'(', 10_000));
            v.extend(std::iter::repeat_n(b')', 10_000));
            v.extend_from_slice(b" \"/\" INBOX\r\n");
            v
        }
        // Not IMAP at all.
        _ => b"\x00\x01\xffHTTP/1.1 400 Bad Request\r\n\r\n".to_vec(),
    }
}

/// Serves every connection on its own thread until dropped.
struct Hostile {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Hostile {
    fn start() -> Hostile {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(s) = s {
                    std::thread::spawn(move || serve(s));
                }
            }
        });
        Hostile { port, stop }
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(s: TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut out = s.try_clone().unwrap();
    let mut lines = BufReader::new(s);
    let _ = out.write_all(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hostile ready\r\n");
    let mut login = String::new();
    let mut line = String::new();
    while lines.read_line(&mut line).is_ok_and(|n| n > 0) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (Some(tag), Some(cmd)) = (words.first(), words.get(1)) else {
            line.clear();
            continue;
        };
        let answer = match cmd.to_ascii_uppercase().as_str() {
            "LOGIN" => {
                // `LOGIN "ann*admin" "…"`: the mailbox before the master separator.
                login = words
                    .get(2)
                    .map(|w| w.trim_matches('"'))
                    .and_then(|w| w.split('*').next())
                    .unwrap_or("")
                    .to_string();
                format!("{tag} OK [CAPABILITY IMAP4rev1] logged in\r\n").into_bytes()
            }
            "CAPABILITY" => format!("* CAPABILITY IMAP4rev1\r\n{tag} OK done\r\n").into_bytes(),
            "LIST" => poison(&login),
            "LOGOUT" => {
                let _ = out.write_all(format!("* BYE\r\n{tag} OK bye\r\n").as_bytes());
                return;
            }
            _ => format!("{tag} OK done\r\n").into_bytes(),
        };
        // The client may hang up halfway through a poison; that is its right.
        if out.write_all(&answer).is_err() {
            return;
        }
        line.clear();
    }
}

#[test]
fn a_hostile_server_gets_a_clear_error_per_mailbox_and_no_allocation() {
    let users = ["ann", "ben", "cat", "dan"];
    let lab = Lab::new(&users);
    let hostile = Hostile::start();
    lab.write_job_via(hostile.port, lab.target.port(), "");
    let job = lab.job();
    let job = job.to_str().unwrap();
    assert!(lab.mailferry(&["match", job]).status.success());
    let (code, report) = lab.json(&["migrate", job, "--all"]);
    assert_eq!(code, 1, "{report:#}");
    let error_of = |u: &str| -> String {
        report["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == format!("id-{u}"))
            .and_then(|e| e["error"].as_str())
            .unwrap_or_else(|| panic!("no error for {u}: {report:#}"))
            .to_string()
    };
    // Each mailbox failed on its own, with what the server did in words.
    let ann = error_of("ann");
    assert!(ann.contains("literal of 107374182400 bytes"), "ann: {ann}");
    let ben = error_of("ben");
    assert!(ben.contains("without ending the line"), "ben: {ben}");
    let cat = error_of("cat");
    assert!(cat.contains("nested lists"), "cat: {cat}");
    let dan = error_of("dan");
    assert!(!dan.is_empty(), "dan: {dan}");
    for e in report["entries"].as_array().unwrap() {
        assert_eq!(e["state"], "failed", "{e}");
        assert_eq!(e["copied"], 0, "{e}");
    }
    // Nothing of what the server announced was allocated: the process stayed small (the
    // endless line is refused once past the 64 MiB line limit).
    let rss = report["peak_rss_bytes"].as_u64().unwrap();
    assert!(rss < 160 << 20, "peak RSS {} MB", rss >> 20);
    // The state says the same, and a second pass fails the same way, no worse.
    let (_, status) = lab.json(&["status", job]);
    let states: Vec<&Value> = status["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["state"])
        .collect();
    assert!(states.iter().all(|s| *s == "failed"), "{status:#}");
}
