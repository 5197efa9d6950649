//! Known-answer tests of the IMAP session's server profiles: a scripted server on loopback
//! answers with Exchange Online's and Gmail's documented or publicly captured words (greetings
//! and capability lists from Cocoanetics/SwiftMail PR #109 and Google's IMAP extensions page,
//! the throttling reply from imapsync's FAQ.Office365), and the test checks what the session
//! sent back. No real Exchange Online or Gmail can be reached from here.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailferry_adapters::ImapConnector;
use mailferry_core::job::{AdminLogin, Auth, ImapSettings, Secret, Security};
use mailferry_core::model::{Flags, Side};
use mailferry_core::ports::{
    AppendOutcome, Connector, MailSession, Outgoing, ScannedMessage, TreeChange,
};
use mailferry_core::profile::{ProfileChoice, ProfileSettings};

const EXO_GREETING: &str = "* OK The Microsoft Exchange IMAP4 service is ready. \
    [TQBOADIAUABSADEAMwBDAEEAMAAwADEANAAuAG4AYQBtAHAAcgBkADEAMwAuAHAAcgBvAGQALgBvAHUAdABsAG8AbwBrAC4AYwBvAG0A]";
/// Exchange Online's list (SwiftMail PR #109) plus CONDSTORE, which it does not advertise: to
/// show that the profile would not use it even if it did.
const EXO_CAPS: &str = "IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT \
    CHILDREN IDLE NAMESPACE LITERAL+ CONDSTORE";
const THROTTLED: &str = "NO Request is throttled. Suggested Backoff Time: 300 milliseconds";
const GMAIL_GREETING: &str = "* OK Gimap ready for requests from 192.0.2.1 a1mb12345678abc";
const GMAIL_CAPS: &str = "IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 \
    XYZZY SASL-IR AUTH=XOAUTH2 AUTH=PLAIN AUTH=PLAIN-CLIENTTOKEN AUTH=OAUTHBEARER AUTH=XOAUTH";

/// How the scripted server answers; `conn` counts connections from 0, `n` the times this
/// verb was seen on all connections.
type Script = dyn Fn(usize, &str, usize, &str) -> Answer + Send + Sync;

enum Answer {
    Say(String),
    /// Answer, then close the connection.
    SayAndHangUp(String),
    /// Nothing yet (a later answer says it).
    Silent,
}

struct Server {
    port: u16,
    /// Every command line received, with the connection number.
    seen: Arc<Mutex<Vec<(usize, String)>>>,
}

fn serve(greeting: &'static str, script: Arc<Script>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let counts = Arc::new(Mutex::new(std::collections::HashMap::<String, usize>::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for (conn, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { return };
            let (log, counts, script) =
                (Arc::clone(&log), Arc::clone(&counts), Arc::clone(&script));
            std::thread::spawn(move || talk(conn, stream, greeting, &*script, &log, &counts));
        }
    });
    Server { port, seen }
}

fn talk(
    conn: usize,
    mut stream: TcpStream,
    greeting: &str,
    script: &Script,
    log: &Mutex<Vec<(usize, String)>>,
    counts: &Mutex<std::collections::HashMap<String, usize>>,
) {
    stream
        .write_all(format!("{greeting}\r\n").as_bytes())
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut full = line.trim_end().to_string();
        // A literal: `{n+}` (LITERAL+) or `{n}` (synchronising), its bytes, then the rest.
        while let Some(n) = literal_len(&full) {
            if !full.ends_with("+}") {
                stream.write_all(b"+ go ahead\r\n").unwrap();
            }
            let mut body = vec![0; n];
            reader.read_exact(&mut body).unwrap();
            let mut rest = String::new();
            reader.read_line(&mut rest).unwrap();
            full = format!("{full}<{n} bytes>{}", rest.trim_end());
        }
        let mut words = full.splitn(3, ' ');
        let tag = words.next().unwrap_or("").to_string();
        let mut verb = words.next().unwrap_or("").to_ascii_uppercase();
        if verb == "UID" {
            verb = format!(
                "UID {}",
                full.split(' ').nth(2).unwrap_or("").to_ascii_uppercase()
            );
        }
        log.lock().unwrap().push((conn, full.clone()));
        let n = {
            let mut c = counts.lock().unwrap();
            let n = c.entry(verb.clone()).or_default();
            *n += 1;
            *n
        };
        let answer = if verb == "LOGOUT" {
            Answer::SayAndHangUp(format!("* BYE\r\n{tag} OK LOGOUT completed."))
        } else {
            script(conn, &verb, n, &tag)
        };
        match answer {
            Answer::Say(text) => stream.write_all(format!("{text}\r\n").as_bytes()).unwrap(),
            Answer::SayAndHangUp(text) => {
                let _ = stream.write_all(format!("{text}\r\n").as_bytes());
                return;
            }
            Answer::Silent => {}
        }
    }
}

fn literal_len(line: &str) -> Option<usize> {
    let open = line.rfind('{')?;
    let inner = line[open + 1..].strip_suffix('}')?;
    inner.trim_end_matches('+').parse().ok()
}

/// Exchange Online's usual answers to what the session sends.
fn exchange(verb: &str, tag: &str) -> Answer {
    Answer::Say(match verb {
        "CAPABILITY" => format!("* CAPABILITY {EXO_CAPS}\r\n{tag} OK CAPABILITY completed."),
        "LOGIN" => format!("{tag} OK LOGIN completed."),
        "STATUS" => format!(
            "* STATUS INBOX (MESSAGES 3 UIDNEXT 4 UIDVALIDITY 7)\r\n{tag} OK STATUS completed."
        ),
        "SELECT" => format!(
            "* 3 EXISTS\r\n* OK [UIDVALIDITY 7] UIDs valid\r\n{tag} OK [READ-WRITE] SELECT completed."
        ),
        "APPEND" => format!("{tag} OK [APPENDUID 7 9] APPEND completed."),
        "UID STORE" => format!("{tag} OK STORE completed."),
        _ => format!("{tag} BAD Command Error. 10"),
    })
}

fn settings(port: u16, choice: ProfileChoice, max_message_size: Option<u64>) -> ImapSettings {
    let dir = tempfile::tempdir().unwrap().keep();
    let pw = dir.join("pw");
    std::fs::write(&pw, "not-a-real-password\n").unwrap();
    ImapSettings {
        host: "127.0.0.1".into(),
        port,
        security: Security::Plain,
        tls_ca: None,
        tls_verify: true,
        tls_pin_sha256: Vec::new(),
        auth: Auth::Admin {
            user: "admin".into(),
            password: Secret::File(pw),
            login: AdminLogin::MasterSeparator("*".into()),
        },
        max_connections: 10,
        max_connections_per_mailbox: None,
        profile: ProfileSettings {
            choice,
            max_message_size,
            ..ProfileSettings::default()
        },
    }
}

fn lines(server: &Server) -> Vec<(usize, String)> {
    server.seen.lock().unwrap().clone()
}

#[test]
fn exchange_online_is_recognised_and_its_throttling_reply_is_waited_out() {
    let server = serve(
        EXO_GREETING,
        Arc::new(|_, verb, n, tag| match (verb, n) {
            ("STATUS", 1) => Answer::Say(format!("{tag} {THROTTLED}")),
            _ => exchange(verb, tag),
        }),
    );
    let connector = ImapConnector::new(
        Side::Target,
        &settings(server.port, ProfileChoice::Auto, None),
    )
    .unwrap();
    let probe = connector.probe().unwrap();
    assert!(
        probe
            .detail
            .contains("profile: exchange-online (recognised"),
        "{}",
        probe.detail
    );
    let mut s = connector.open("user@contoso.example", None).unwrap();
    assert_eq!(connector.profile().as_deref(), Some("exchange-online"));
    // The profile's default cap replaces the default 10 once recognised.
    assert_eq!(connector.limit().max(), 4);
    let started = Instant::now();
    let status = s.status("INBOX").unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(status.messages, 3);
    assert_eq!(status.highest_modseq, None);
    s.logout();
    let seen = lines(&server);
    let statuses: Vec<&String> = seen
        .iter()
        .map(|(_, l)| l)
        .filter(|l| l.contains("STATUS"))
        .collect();
    assert_eq!(statuses.len(), 2, "{seen:?}");
    // CONDSTORE is advertised by this script but never used.
    assert!(
        statuses.iter().all(|l| !l.contains("HIGHESTMODSEQ")),
        "{seen:?}"
    );
    assert!(seen.iter().all(|(_, l)| !l.contains("ENABLE")), "{seen:?}");
}

#[test]
fn a_throttling_reply_followed_by_a_disconnect_is_retried_once_on_a_new_connection() {
    let server = serve(
        EXO_GREETING,
        Arc::new(|_, verb, n, tag| match (verb, n) {
            ("STATUS", 1) => Answer::SayAndHangUp(format!("{tag} {THROTTLED}")),
            _ => exchange(verb, tag),
        }),
    );
    let connector = ImapConnector::new(
        Side::Target,
        &settings(server.port, ProfileChoice::Auto, None),
    )
    .unwrap();
    let mut s = connector.open("user@contoso.example", None).unwrap();
    assert_eq!(s.status("INBOX").unwrap().messages, 3);
    s.logout();
    let seen = lines(&server);
    let statuses: Vec<usize> = seen
        .iter()
        .filter(|(_, l)| l.contains(" STATUS "))
        .map(|(c, _)| *c)
        .collect();
    // Sent on the first connection, throttled and cut; sent again on a second one.
    assert_eq!(statuses, vec![0, 1], "{seen:?}");
}

#[test]
fn exchange_online_appends_refuse_oversize_locally_strip_keywords_and_reflag() {
    let server = serve(
        EXO_GREETING,
        Arc::new(|_, verb, _, tag| exchange(verb, tag)),
    );
    let connector = ImapConnector::new(
        Side::Target,
        &settings(server.port, ProfileChoice::Auto, Some(100)),
    )
    .unwrap();
    let mut s = connector.open("user@contoso.example", None).unwrap();
    let small = b"Subject: hi\r\n\r\nsmall\r\n".to_vec();
    let big = vec![b'x'; 500];
    let flagged = Flags::from_server(["\\Flagged", "$Custom", "\\Seen"]);
    let plain = Flags::from_server(["\\Seen"]);
    let messages = [
        Outgoing {
            flags: &flagged,
            internal_date: None,
            body: &small,
        },
        Outgoing {
            flags: &plain,
            internal_date: None,
            body: &big,
        },
    ];
    let ticket = s.send_appends("INBOX", &messages).unwrap();
    let outcomes = s.finish_appends(ticket, &messages).unwrap();
    assert_eq!(
        outcomes[0],
        AppendOutcome::Stored(mailferry_core::model::Uid::new(9))
    );
    match &outcomes[1] {
        AppendOutcome::Refused(reason) => assert!(
            reason.contains("max_message_size of 100 bytes") && reason.contains("exchange-online"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    s.logout();
    let seen = lines(&server);
    let appends: Vec<&String> = seen
        .iter()
        .map(|(_, l)| l)
        .filter(|l| l.contains("APPEND"))
        .collect();
    // One APPEND only (the big message is never sent), without the custom keyword.
    assert_eq!(appends.len(), 1, "{seen:?}");
    assert!(appends[0].contains("(\\Flagged \\Seen)"), "{seen:?}");
    assert!(!appends[0].contains("$Custom"), "{seen:?}");
    // \Flagged set again on the APPENDUID, with INBOX selected for it.
    assert!(
        seen.iter()
            .any(|(_, l)| l.ends_with("UID STORE 9 +FLAGS.SILENT (\\Flagged)")),
        "{seen:?}"
    );
    assert_eq!(
        connector.dropped_keywords("user@contoso.example"),
        vec![("INBOX".to_string(), 1)]
    );
}

#[test]
fn gmail_is_recognised_and_its_virtual_folders_are_left_out() {
    let list = "* LIST (\\HasNoChildren) \"/\" \"INBOX\"\r\n\
        * LIST (\\HasChildren \\Noselect) \"/\" \"[Gmail]\"\r\n\
        * LIST (\\All \\HasNoChildren) \"/\" \"[Gmail]/All Mail\"\r\n\
        * LIST (\\HasNoChildren \\Important) \"/\" \"[Gmail]/Important\"\r\n\
        * LIST (\\Flagged \\HasNoChildren) \"/\" \"[Gmail]/Starred\"\r\n\
        * LIST (\\HasNoChildren \\Sent) \"/\" \"[Gmail]/Sent Mail\"\r\n\
        * LIST (\\HasNoChildren) \"/\" \"Receipts\"";
    let server = serve(
        GMAIL_GREETING,
        Arc::new(move |_, verb, _, tag| {
            Answer::Say(match verb {
                "CAPABILITY" => {
                    format!("* CAPABILITY {GMAIL_CAPS}\r\n{tag} OK Thats all she wrote!")
                }
                "LOGIN" => format!("{tag} OK user authenticated (Success)"),
                "LIST" => format!("{list}\r\n{tag} OK Success"),
                "LSUB" => format!("{tag} OK Success"),
                "NAMESPACE" => format!("* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n{tag} OK Success"),
                _ => format!("{tag} BAD Unknown command"),
            })
        }),
    );
    let connector = ImapConnector::new(
        Side::Source,
        &settings(server.port, ProfileChoice::Auto, None),
    )
    .unwrap();
    let mut s = connector.open("user@example.com", None).unwrap();
    assert_eq!(connector.profile().as_deref(), Some("gmail"));
    let tree = s.folders().unwrap();
    let names: Vec<&str> = tree.folders().map(|f| f.raw_name.as_str()).collect();
    assert!(
        names.contains(&"[Gmail]/Sent Mail") && names.contains(&"Receipts"),
        "{names:?}"
    );
    for virtual_folder in ["[Gmail]/All Mail", "[Gmail]/Important", "[Gmail]/Starred"] {
        assert!(!names.contains(&virtual_folder), "{names:?}");
    }
    s.logout();

    // include_virtual_folders = true brings them back.
    let mut with = settings(server.port, ProfileChoice::Auto, None);
    with.profile.include_virtual_folders = Some(true);
    let connector = ImapConnector::new(Side::Source, &with).unwrap();
    let mut s = connector.open("user@example.com", None).unwrap();
    let tree = s.folders().unwrap();
    assert!(tree.folders().any(|f| f.raw_name == "[Gmail]/All Mail"));
    s.logout();
}

#[test]
fn a_throttled_reply_slows_the_server_down_and_is_counted_for_the_mailbox() {
    // RFC 5530's [THROTTLED] without a hint, on a generic server: the adaptive throttling
    // applies whatever the profile.
    let server = serve(
        "* OK IMAP server ready",
        Arc::new(|_, verb, n, tag| match (verb, n) {
            ("STATUS", 1) => Answer::Say(format!("{tag} NO [THROTTLED] Slow down")),
            _ => exchange(verb, tag),
        }),
    );
    let connector = ImapConnector::new(
        Side::Target,
        &settings(server.port, ProfileChoice::Auto, None),
    )
    .unwrap();
    let mut s = connector.open("u", None).unwrap();
    assert_eq!(connector.profile().as_deref(), Some("generic"));
    assert_eq!(connector.limit().max(), 10);
    let started = Instant::now();
    assert_eq!(s.status("INBOX").unwrap().messages, 3);
    // The first pause (1 s) was waited, the cap halved.
    assert!(started.elapsed() >= mailferry_core::ports::connector::FIRST_PAUSE);
    assert_eq!(connector.limit().max(), 5);
    assert!(connector.throttled_for("u") >= mailferry_core::ports::connector::FIRST_PAUSE);
    assert_eq!(connector.throttled_for("someone-else"), Duration::ZERO);
    s.logout();
}

#[test]
fn exchange_online_sessions_reconnect_before_the_failed_command_cut_off() {
    // Every STATUS is refused the way Exchange Online refuses a bad argument (imapsync
    // FAQ.Exchange: the session is dropped after about 10 such errors).
    let server = serve(
        EXO_GREETING,
        Arc::new(|_, verb, _, tag| match verb {
            "STATUS" => Answer::Say(format!("{tag} BAD Command Argument Error. 11")),
            _ => exchange(verb, tag),
        }),
    );
    let connector = ImapConnector::new(
        Side::Target,
        &settings(server.port, ProfileChoice::Auto, None),
    )
    .unwrap();
    let mut s = connector.open("u", None).unwrap();
    for _ in 0..9 {
        assert!(s.status("INBOX").unwrap_err().is_refusal());
    }
    s.logout();
    let seen = lines(&server);
    let conns: Vec<usize> = seen
        .iter()
        .filter(|(_, l)| l.contains(" STATUS "))
        .map(|(c, _)| *c)
        .collect();
    // Eight on the first connection, then a new one before the server's cut-off.
    assert_eq!(conns, [vec![0; 8], vec![1]].concat(), "{seen:?}");
}

#[test]
fn a_bye_mid_session_counts_as_a_drop_and_the_second_lowers_the_cap_by_one() {
    // STATUS on connections 1 and 2 is answered with BYE and a hang-up; every other answer
    // is normal, LOGOUT's BYE included.
    let server = serve(
        "* OK IMAP server ready",
        Arc::new(|conn, verb, _, tag| match (conn, verb) {
            (1 | 2, "STATUS") => {
                Answer::SayAndHangUp("* BYE Too many connections, shedding load".into())
            }
            _ => exchange(verb, tag),
        }),
    );
    let connector = ImapConnector::new(
        Side::Target,
        &settings(server.port, ProfileChoice::Auto, None),
    )
    .unwrap();
    // Connection 0: a normal session and its LOGOUT (the server's BYE to it is no drop).
    let mut s = connector.open("u", None).unwrap();
    assert_eq!(s.status("INBOX").unwrap().messages, 3);
    s.logout();
    assert_eq!(connector.limit().max(), 10);
    // Connection 1: dropped. The first drop is only noted.
    let mut s = connector.open("u", None).unwrap();
    let e = s.status("INBOX").unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("shedding load"), "{e}");
    assert_eq!(connector.limit().max(), 10);
    // A second one within 30 s: one connection less (not half), and a 1 s pause that the
    // next connection waits out, counted for the mailbox.
    let mut s = connector.open("u", None).unwrap();
    assert!(s.status("INBOX").is_err());
    assert_eq!(connector.limit().max(), 9);
    let started = Instant::now();
    let mut s = connector.open("u", None).unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.status("INBOX").unwrap().messages, 3);
    assert!(connector.throttled_for("u") >= Duration::from_millis(900));
    s.logout();
    assert_eq!(connector.limit().max(), 9);
}

#[test]
fn the_disconnect_after_a_throttling_reply_is_not_counted_again() {
    // Exchange Online's backoff hint and then a hang-up, on two connections in a row: the
    // replies halve the cap; the drops that follow them change nothing more.
    let server = serve(
        EXO_GREETING,
        Arc::new(|conn, verb, _, tag| match (conn, verb) {
            (0 | 2, "STATUS") => Answer::SayAndHangUp(format!("{tag} {THROTTLED}")),
            (1 | 3, "STATUS") => Answer::SayAndHangUp("* BYE Connection closed".into()),
            _ => exchange(verb, tag),
        }),
    );
    let mut imap = settings(server.port, ProfileChoice::Auto, None);
    imap.profile.max_connections = Some(8);
    imap.max_connections = 8;
    let connector = ImapConnector::new(Side::Target, &imap).unwrap();
    let mut s = connector.open("user@contoso.example", None).unwrap();
    // Throttled (cap 8 -> 4), retried on connection 1, which is dropped: the reply's echo.
    assert!(s.status("INBOX").is_err());
    assert_eq!(connector.limit().max(), 4);
    let mut s = connector.open("user@contoso.example", None).unwrap();
    assert!(s.status("INBOX").is_err());
    assert_eq!(connector.limit().max(), 2);
}

/// A first pass's tree changes go out together. Of their answers, a CREATE refused because
/// the folder exists is done, and a throttled one is waited out and asked again on its own,
/// as any command is: the batch succeeds.
#[test]
fn tree_changes_take_an_existing_folder_as_made_and_wait_out_a_throttled_one() {
    let server = serve(
        EXO_GREETING,
        Arc::new(|_, verb, n, tag| {
            Answer::Say(match (verb, n) {
                ("CREATE", 1) => format!("{tag} NO [ALREADYEXISTS] Mailbox already exists."),
                ("CREATE", 2) => format!("{tag} {THROTTLED}"),
                ("CREATE", _) => format!("{tag} OK CREATE completed."),
                ("SUBSCRIBE", _) => format!("{tag} OK SUBSCRIBE completed."),
                _ => return exchange(verb, tag),
            })
        }),
    );
    let connector = ImapConnector::new(
        Side::Target,
        &settings(server.port, ProfileChoice::Auto, None),
    )
    .unwrap();
    let mut s = connector.open("user@contoso.example", None).unwrap();
    let started = Instant::now();
    s.change_tree(&[
        TreeChange::Create("Archive"),
        TreeChange::Create("Projects"),
        TreeChange::Subscribe("Projects", true),
    ])
    .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    s.logout();
    let seen: Vec<String> = lines(&server)
        .into_iter()
        .map(|(_, l)| l.split_once(' ').unwrap().1.to_string())
        .filter(|l| l.starts_with("CREATE") || l.starts_with("SUBSCRIBE"))
        .collect();
    assert_eq!(
        seen,
        [
            "CREATE \"Archive\"",
            "CREATE \"Projects\"",
            "SUBSCRIBE \"Projects\"",
            "CREATE \"Projects\""
        ]
    );
}

/// A change the server refuses for good is the batch's error, with the server's words, once
/// asked again on its own.
#[test]
fn a_refused_tree_change_is_the_error_with_the_servers_words() {
    let server = serve(
        EXO_GREETING,
        Arc::new(|_, verb, _, tag| {
            Answer::Say(match verb {
                "CREATE" => format!("{tag} NO [CANNOT] Invalid mailbox name."),
                "SUBSCRIBE" => format!("{tag} OK SUBSCRIBE completed."),
                _ => return exchange(verb, tag),
            })
        }),
    );
    let connector = ImapConnector::new(
        Side::Target,
        &settings(server.port, ProfileChoice::Auto, None),
    )
    .unwrap();
    let mut s = connector.open("u", None).unwrap();
    let e = s
        .change_tree(&[
            TreeChange::Subscribe("INBOX", true),
            TreeChange::Create("Bad*Name"),
            TreeChange::Subscribe("Bad*Name", true),
        ])
        .unwrap_err();
    assert!(e.is_refusal(), "{e}");
    assert!(e.to_string().contains("Invalid mailbox name"), "{e}");
    s.logout();
    let creates = lines(&server)
        .iter()
        .filter(|(_, l)| l.contains(" CREATE "))
        .count();
    assert_eq!(creates, 2, "sent with the batch, then once more on its own");
}

const EXAMINED: &str = "* 3 EXISTS\r\n* OK [UIDVALIDITY 7] UIDs valid";
const SCANNED: &str = "* 1 FETCH (UID 4 FLAGS (\\Seen) RFC822.SIZE 120)\r\n\
    * 2 FETCH (UID 5 FLAGS () RFC822.SIZE 99)\r\n* 3 FETCH (UID 9 FLAGS () RFC822.SIZE 7)";

/// A source session on the scripted server, its profile recognised.
fn source_session(server: &Server) -> Box<dyn MailSession> {
    let connector = ImapConnector::new(
        Side::Source,
        &settings(server.port, ProfileChoice::Auto, None),
    )
    .unwrap();
    connector.open("user@contoso.example", None).unwrap()
}

/// A session's SELECT and scan of INBOX, sent together, nothing behind them: the SELECT's
/// EXISTS and each message's UID.
fn select_and_scan(server: &Server) -> (u32, Vec<u32>) {
    let mut s = source_session(server);
    let mut uids = Vec::new();
    let ticket = s.send_select_and_scan("INBOX").unwrap();
    let selected = s
        .finish_select_and_scan(ticket, &mut |sel, m: ScannedMessage| {
            assert_eq!(sel.uid_validity.get(), 7);
            uids.push(m.uid.get());
        })
        .unwrap();
    s.logout();
    (selected.exists, uids)
}

fn examines_and_fetches(server: &Server) -> Vec<String> {
    lines(server)
        .into_iter()
        .map(|(_, l)| l.split_once(' ').unwrap().1.to_string())
        .filter(|l| l.starts_with("EXAMINE") || l.starts_with("UID FETCH"))
        .map(|l| l.split(" (").next().unwrap().to_string())
        .collect()
}

/// A folder's scan goes out with its SELECT, in one round trip: this server answers the
/// EXAMINE only once it has the FETCH too.
#[test]
fn a_scan_goes_out_with_its_select_in_one_round_trip() {
    let examine = Arc::new(Mutex::new(String::new()));
    let server = serve(
        EXO_GREETING,
        Arc::new(move |_, verb, _, tag| match verb {
            "EXAMINE" => {
                *examine.lock().unwrap() = tag.to_string();
                Answer::Silent
            }
            "UID FETCH" => {
                let first = examine.lock().unwrap().clone();
                Answer::Say(format!(
                    "{EXAMINED}\r\n{first} OK [READ-ONLY] EXAMINE completed.\r\n\
                     {SCANNED}\r\n{tag} OK FETCH completed."
                ))
            }
            _ => exchange(verb, tag),
        }),
    );
    assert_eq!(select_and_scan(&server), (3, vec![4, 5, 9]));
    assert_eq!(
        examines_and_fetches(&server),
        ["EXAMINE \"INBOX\"", "UID FETCH 1:*"]
    );
}

/// A SELECT refused with Exchange Online's throttling reply: the FETCH sent behind it is
/// answered `BAD` (no folder selected) and dropped, the reply waited out, and both asked
/// again one after the other; each message comes once.
#[test]
fn a_throttled_select_with_its_scan_is_waited_out_and_asked_again() {
    let server = serve(
        EXO_GREETING,
        Arc::new(|_, verb, n, tag| {
            Answer::Say(match (verb, n) {
                ("EXAMINE", 1) => format!("{tag} {THROTTLED}"),
                ("EXAMINE", _) => format!("{EXAMINED}\r\n{tag} OK [READ-ONLY] EXAMINE completed."),
                ("UID FETCH", 1) => format!("{tag} BAD Command received in Invalid state."),
                ("UID FETCH", _) => format!("{SCANNED}\r\n{tag} OK FETCH completed."),
                _ => return exchange(verb, tag),
            })
        }),
    );
    let started = Instant::now();
    assert_eq!(select_and_scan(&server), (3, vec![4, 5, 9]));
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        examines_and_fetches(&server),
        [
            "EXAMINE \"INBOX\"",
            "UID FETCH 1:*",
            "EXAMINE \"INBOX\"",
            "UID FETCH 1:*"
        ]
    );
}

/// An empty folder's `UID FETCH 1:*`, sent before the SELECT said it is empty, refused by a
/// server that takes `*` for a message: the folder is empty, not an error.
#[test]
fn a_refused_scan_of_a_folder_found_empty_is_an_empty_scan() {
    let server = serve(
        EXO_GREETING,
        Arc::new(|_, verb, _, tag| {
            Answer::Say(match verb {
                "EXAMINE" => format!(
                    "* 0 EXISTS\r\n* OK [UIDVALIDITY 7] UIDs valid\r\n\
                     {tag} OK [READ-ONLY] EXAMINE completed."
                ),
                "UID FETCH" => format!("{tag} BAD Command Argument Error. 11"),
                _ => return exchange(verb, tag),
            })
        }),
    );
    assert_eq!(select_and_scan(&server), (0, vec![]));
}

/// Scans of two folders on their way at once: the first SELECT, throttled, cannot be asked
/// again before the second ticket's answers, so it is the error (the reply waited out,
/// then transient: the next attempt asks again); the second ticket still reads its folder.
#[test]
fn a_throttled_select_with_another_scan_behind_it_is_waited_out_and_transient() {
    let server = serve(
        EXO_GREETING,
        Arc::new(|_, verb, n, tag| {
            Answer::Say(match (verb, n) {
                ("EXAMINE", 1) => format!("{tag} {THROTTLED}"),
                ("EXAMINE", _) => {
                    format!("{EXAMINED}\r\n{tag} OK [READ-ONLY] EXAMINE completed.")
                }
                ("UID FETCH", 1) => format!("{tag} BAD Command received in Invalid state."),
                ("UID FETCH", _) => format!("{SCANNED}\r\n{tag} OK FETCH completed."),
                _ => return exchange(verb, tag),
            })
        }),
    );
    let mut s = source_session(&server);
    let first = s.send_select_and_scan("INBOX").unwrap();
    let second = s.send_select_and_scan("Sent").unwrap();
    let started = Instant::now();
    let e = s.finish_select_and_scan(first, &mut |_, _| {}).unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.message.contains("throttled"), "{e}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let mut uids = Vec::new();
    let selected = s
        .finish_select_and_scan(second, &mut |_, m| uids.push(m.uid.get()))
        .unwrap();
    assert_eq!((selected.exists, uids), (3, vec![4, 5, 9]));
    s.logout();
    assert_eq!(
        examines_and_fetches(&server),
        [
            "EXAMINE \"INBOX\"",
            "UID FETCH 1:*",
            "EXAMINE \"Sent\"",
            "UID FETCH 1:*"
        ]
    );
}
