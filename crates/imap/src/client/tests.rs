use super::*;
use crate::proto::command::{MAX_SET_CHARS, expand_uid_set, uid_set, uid_sets};

/// Plays a scripted server on loopback: for each step, reads until the client sent the
/// expected bytes, then answers. Returns what the client sent in all.
fn scripted_server(
    steps: Vec<(&'static [u8], &'static [u8])>,
) -> (u16, std::thread::JoinHandle<Vec<u8>>) {
    serve(owned(steps), false)
}

/// Like [`scripted_server`], but each step's bytes must be the last the client sent before
/// the answer: a client that does not wait for the server (a `+` continuation, a tagged
/// OK) fails the test.
fn lockstep_server(
    steps: Vec<(&'static [u8], &'static [u8])>,
) -> (u16, std::thread::JoinHandle<Vec<u8>>) {
    serve(owned(steps), true)
}

fn owned(steps: Vec<(&'static [u8], &'static [u8])>) -> Vec<(Vec<u8>, Vec<u8>)> {
    steps
        .into_iter()
        .map(|(e, a)| (e.to_vec(), a.to_vec()))
        .collect()
}

fn serve(
    steps: Vec<(Vec<u8>, Vec<u8>)>,
    lockstep: bool,
) -> (u16, std::thread::JoinHandle<Vec<u8>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut seen = Vec::new();
        for (expect, answer) in steps {
            while !seen.windows(expect.len().max(1)).any(|w| w == expect) && !expect.is_empty() {
                let mut buf = [0u8; 4096];
                let n = sock.read(&mut buf).unwrap();
                assert!(
                    n > 0,
                    "client closed; sent so far: {:?}",
                    String::from_utf8_lossy(&seen)
                );
                seen.extend_from_slice(&buf[..n]);
            }
            if lockstep {
                assert!(
                    seen.ends_with(&expect),
                    "the client sent more before the server answered: {:?}",
                    String::from_utf8_lossy(&seen)
                );
            }
            sock.write_all(&answer).unwrap();
        }
        seen
    });
    (port, handle)
}

fn plain_endpoint(port: u16) -> Endpoint {
    Endpoint {
        host: "127.0.0.1".into(),
        port,
        security: Security::Plain,
        ca_file: None,
        verify_certificates: true,
        pins: Vec::new(),
        timeout: Duration::from_secs(5),
    }
}

#[test]
fn a_server_that_stops_answering_costs_one_timeout_and_the_error_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (release, held) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        sock.write_all(b"* OK [CAPABILITY IMAP4rev1] ready\r\n")
            .unwrap();
        // Neither answers nor closes until the test is done.
        let _ = held.recv();
    });
    let mut ep = plain_endpoint(port);
    ep.timeout = Duration::from_secs(1);
    let mut c = Client::connect(&ep).unwrap();
    let started = std::time::Instant::now();
    let e = c.status("INBOX").unwrap_err();
    let waited = started.elapsed();
    release.send(()).unwrap();
    server.join().unwrap();
    assert!(e.is_transient(), "{e}");
    assert_eq!(
        e.to_string(),
        "Connection error: the server did not answer within 1 s (the I/O timeout)"
    );
    assert!(waited < Duration::from_secs(3), "{waited:?}");
}

#[test]
fn append_without_literal_plus_waits_for_the_continuation() {
    let (port, server) = scripted_server(vec![
        (b"", b"* OK [CAPABILITY IMAP4rev1 UIDPLUS] ready\r\n"),
        (b"{5}\r\n", b"+ go ahead\r\n"),
        (b"hello\r\n", b"m1 OK [APPENDUID 9 4] stored\r\n"),
    ]);
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    let flags = vec!["\\Seen".to_string()];
    let tag = c
        .append_send(&AppendRequest {
            mailbox: "Sent Items",
            flags: &flags,
            date: Some("01-Jan-2020 10:00:00 +0000"),
            message: b"hello",
        })
        .unwrap();
    assert_eq!(c.append_finish(&tag).unwrap(), Some((9, 4)));
    drop(c);
    let sent = server.join().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&sent),
        "m1 APPEND \"Sent Items\" (\\Seen) \"01-Jan-2020 10:00:00 +0000\" {5}\r\nhello\r\n"
    );
}

#[test]
fn multiappend_sends_one_command_and_reads_the_uid_set() {
    let (port, server) = scripted_server(vec![
        (
            b"",
            b"* OK [CAPABILITY IMAP4rev1 LITERAL+ MULTIAPPEND UIDPLUS] ready\r\n",
        ),
        (b"two\r\n", b"m1 OK [APPENDUID 7 10:11] done\r\n"),
    ]);
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    let reqs = [
        AppendRequest {
            mailbox: "INBOX",
            flags: &[],
            date: None,
            message: b"one",
        },
        AppendRequest {
            mailbox: "INBOX",
            flags: &[],
            date: None,
            message: b"two",
        },
    ];
    let tag = c.multiappend_send("INBOX", &reqs).unwrap();
    assert_eq!(c.multiappend_finish(&tag, 2).unwrap(), Some(vec![10, 11]));
    drop(c);
    assert_eq!(
        String::from_utf8_lossy(&server.join().unwrap()),
        "m1 APPEND \"INBOX\" {3+}\r\none {3+}\r\ntwo\r\n"
    );
}

#[test]
fn a_refused_login_keeps_the_servers_words_and_hides_the_password() {
    let (port, _server) = scripted_server(vec![
        (
            b"",
            b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready\r\n",
        ),
        (
            b"\r\n",
            b"m1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
        ),
    ]);
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    let e = c
        .login(&Login::SaslPlain {
            authzid: "alice".into(),
            authcid: "admin".into(),
            password: "s3cret".into(),
        })
        .unwrap_err();
    let text = e.to_string();
    assert_eq!(e.code(), Some("AUTHENTICATIONFAILED"));
    assert!(text.contains("Authentication failed."), "{text}");
    assert!(!text.contains("s3cret"));
    assert!(!e.is_transient());
}

#[test]
fn sasl_plain_without_sasl_ir_sends_the_credentials_after_the_continuation() {
    let (port, server) = lockstep_server(vec![
        (b"", b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n"),
        (b"m1 AUTHENTICATE PLAIN\r\n", b"+ \r\n"),
        (
            b"YWxpY2UAYWRtaW4AczNjcmV0\r\n",
            b"m1 OK [CAPABILITY IMAP4rev1 MOVE] Logged in\r\n",
        ),
    ]);
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    c.login(&Login::SaslPlain {
        authzid: "alice".into(),
        authcid: "admin".into(),
        password: "s3cret".into(),
    })
    .unwrap();
    assert!(c.has("MOVE"), "capabilities come from the tagged OK");
    drop(c);
    assert_eq!(
        String::from_utf8_lossy(&server.join().unwrap()),
        // base64("alice\0admin\0s3cret"), RFC 4616 §2.
        "m1 AUTHENTICATE PLAIN\r\nYWxpY2UAYWRtaW4AczNjcmV0\r\n"
    );
}

#[test]
fn login_with_an_8bit_password_waits_for_the_continuation_before_the_literal() {
    let (port, server) = lockstep_server(vec![
        (b"", b"* OK [CAPABILITY IMAP4rev1] ready\r\n"),
        (b"m1 LOGIN \"bob\" {9}\r\n", b"+ OK\r\n"),
        (
            "p\u{e4}ssword\r\n".as_bytes(),
            b"m1 OK [CAPABILITY IMAP4rev1] Logged in\r\n",
        ),
    ]);
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    c.login(&Login::Plain {
        user: "bob".into(),
        password: "p\u{e4}ssword".into(),
    })
    .unwrap();
    drop(c);
    assert_eq!(
        String::from_utf8(server.join().unwrap()).unwrap(),
        "m1 LOGIN \"bob\" {9}\r\np\u{e4}ssword\r\n"
    );
}

#[test]
fn append_without_literal_plus_sends_nothing_before_the_continuation() {
    let (port, _server) = lockstep_server(vec![
        (b"", b"* OK [CAPABILITY IMAP4rev1 UIDPLUS] ready\r\n"),
        (b"{5}\r\n", b"+ go ahead\r\n"),
        (b"hello\r\n", b"m1 OK [APPENDUID 9 4] stored\r\n"),
    ]);
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    let tag = c
        .append_send(&AppendRequest {
            mailbox: "INBOX",
            flags: &[],
            date: None,
            message: b"hello",
        })
        .unwrap();
    assert_eq!(c.append_finish(&tag).unwrap(), Some((9, 4)));
}

#[test]
fn without_move_uid_move_copies_flags_deleted_and_expunges_only_those_uids() {
    let (port, server) = lockstep_server(vec![
        (b"", b"* OK [CAPABILITY IMAP4rev1 UIDPLUS] ready\r\n"),
        (
            b"m1 UID COPY 3:4,9 \"Archive\"\r\n",
            b"m1 OK [COPYUID 77 3:4,9 10:12] Copy completed.\r\n",
        ),
        (
            b"m2 UID STORE 3:4,9 +FLAGS.SILENT (\\Deleted)\r\n",
            b"m2 OK Store completed.\r\n",
        ),
        (
            b"m3 UID EXPUNGE 3:4,9\r\n",
            b"* 3 EXPUNGE\r\n* 2 EXPUNGE\r\n* 1 EXPUNGE\r\nm3 OK Expunge completed.\r\n",
        ),
    ]);
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    let pairs = c.uid_move(&[3, 4, 9], "Archive").unwrap();
    assert_eq!(pairs, [(3, 10), (4, 11), (9, 12)]);
    drop(c);
    assert_eq!(
        String::from_utf8_lossy(&server.join().unwrap()),
        "m1 UID COPY 3:4,9 \"Archive\"\r\n\
             m2 UID STORE 3:4,9 +FLAGS.SILENT (\\Deleted)\r\n\
             m3 UID EXPUNGE 3:4,9\r\n"
    );
}

/// Without UIDPLUS there is no UID EXPUNGE, and a plain EXPUNGE would also remove the
/// user's own `\Deleted` messages: the originals stay, flagged.
#[test]
fn without_move_or_uidplus_the_originals_stay_flagged_deleted() {
    let (port, server) = lockstep_server(vec![
        (b"", b"* OK [CAPABILITY IMAP4rev1] ready\r\n"),
        (
            b"m1 UID COPY 5 \"Archive\"\r\n",
            b"m1 OK Copy completed.\r\n",
        ),
        (
            b"m2 UID STORE 5 +FLAGS.SILENT (\\Deleted)\r\n",
            b"m2 OK Store completed.\r\n",
        ),
        (b"m3 NOOP\r\n", b"m3 OK NOOP completed.\r\n"),
    ]);
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    assert_eq!(c.uid_move(&[5], "Archive").unwrap(), []);
    c.run("NOOP").unwrap();
    drop(c);
    let sent = String::from_utf8(server.join().unwrap()).unwrap();
    assert!(!sent.contains("EXPUNGE"), "{sent}");
}

#[test]
fn pipelined_appends_answered_out_of_order_each_get_their_own_outcome() {
    let (port, server) = scripted_server(vec![
        (
            b"",
            b"* OK [CAPABILITY IMAP4rev1 LITERAL+ UIDPLUS] ready\r\n",
        ),
        (
            b"two\r\n",
            b"m2 OK [APPENDUID 9 5] Append completed.\r\n\
                  m1 NO [OVERQUOTA] Quota exceeded (mailbox for user is full)\r\n",
        ),
    ]);
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    let message = |m: &'static [u8]| AppendRequest {
        mailbox: "INBOX",
        flags: &[],
        date: None,
        message: m,
    };
    let first = c.append_send(&message(b"one")).unwrap();
    let second = c.append_send(&message(b"two")).unwrap();
    let e = c.append_finish(&first).unwrap_err();
    assert_eq!(e.code_typed(), Some(TypedCode::OverQuota));
    assert!(!e.is_transient());
    assert!(e.to_string().contains("Quota exceeded"), "{e}");
    assert_eq!(c.append_finish(&second).unwrap(), Some((9, 5)));
    drop(c);
    assert_eq!(
        String::from_utf8_lossy(&server.join().unwrap()),
        "m1 APPEND \"INBOX\" {3+}\r\none\r\nm2 APPEND \"INBOX\" {3+}\r\ntwo\r\n"
    );
}

#[test]
fn bye_in_the_middle_of_a_command_is_a_transient_error_with_the_servers_words() {
    let (port, _server) = scripted_server(vec![
        (b"", b"* OK [CAPABILITY IMAP4rev1] ready\r\n"),
        (
            b"m1 UID FETCH 1:* (UID FLAGS)\r\n",
            b"* 1 FETCH (UID 5 FLAGS (\\Seen))\r\n* BYE Server shutting down.\r\n",
        ),
    ]);
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    let mut uids = Vec::new();
    let e = c
        .uid_fetch("1:*", "UID FLAGS", |f| {
            uids.extend(f.uid());
            Ok(())
        })
        .unwrap_err();
    assert_eq!(uids, [5], "data before the BYE is still handed over");
    assert!(
        matches!(&e, Error::Bye(text) if text == "Server shutting down."),
        "{e}"
    );
    assert!(e.is_transient());
}

/// 10,000 scattered UIDs are one command line of ~80,000 characters unchunked; RFC 2683
/// §3.2.1.5 advises ~1,000. Each chunk's COPYUID is merged into one list of pairs.
#[test]
fn a_large_scattered_uid_move_is_sent_as_several_short_commands() {
    let uids: Vec<u32> = (0..10_000).map(|i| 1_000_001 + 2 * i).collect();
    let sets = uid_sets(&uids, MAX_SET_CHARS);
    assert!(sets.len() > 1);
    let mut steps = vec![(
        Vec::new(),
        b"* OK [CAPABILITY IMAP4rev1 MOVE UIDPLUS] ready\r\n".to_vec(),
    )];
    for (i, set) in sets.iter().enumerate() {
        let tag = format!("m{}", i + 1);
        let to = uid_set(expand_uid_set(set).unwrap().iter().map(|u| u - 1_000_000));
        steps.push((
            format!("{tag} UID MOVE {set} \"Archive\"\r\n").into_bytes(),
            format!("* OK [COPYUID 8 {set} {to}] Moved UIDs.\r\n{tag} OK Move completed.\r\n")
                .into_bytes(),
        ));
    }
    let (port, server) = serve(steps, true);
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    let pairs = c.uid_move(&uids, "Archive").unwrap();
    let expected: Vec<(u32, u32)> = uids.iter().map(|&u| (u, u - 1_000_000)).collect();
    assert_eq!(pairs, expected);
    drop(c);
    let sent = String::from_utf8(server.join().unwrap()).unwrap();
    let lines: Vec<&str> = sent.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), sets.len());
    for line in lines {
        assert!(
            line.starts_with('m') && line.contains(" UID MOVE "),
            "{line}"
        );
        assert!(line.len() + 2 <= 1_000, "{} characters", line.len() + 2);
    }
}

#[test]
fn uid_store_flags_replaces_the_flags_silently() {
    let (port, server) = lockstep_server(vec![
        (b"", b"* OK [CAPABILITY IMAP4rev1] ready\r\n"),
        (
            b"m1 UID STORE 1:3,7 FLAGS.SILENT (\\Seen $Label1)\r\n",
            b"m1 OK Store completed.\r\n",
        ),
        (
            b"m2 UID STORE 9 FLAGS.SILENT ()\r\n",
            b"m2 OK Store completed.\r\n",
        ),
    ]);
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    let flags = ["\\Seen".to_string(), "$Label1".to_string()];
    c.uid_store_flags(&[1, 2, 3, 7], &flags).unwrap();
    c.uid_store_flags(&[9], &[]).unwrap();
    c.uid_store_flags(&[], &flags).unwrap();
    drop(c);
    assert_eq!(
        String::from_utf8_lossy(&server.join().unwrap()),
        "m1 UID STORE 1:3,7 FLAGS.SILENT (\\Seen $Label1)\r\nm2 UID STORE 9 FLAGS.SILENT ()\r\n"
    );
}

/// One FETCH per chunk of UIDs, all sent before the first answer is read: this server
/// answers nothing until it has the last one.
#[test]
fn uid_fetch_uids_sends_one_fetch_per_chunk_all_at_once() {
    let uids: Vec<u32> = (1..=400).map(|i| 3 * i).collect();
    let sets = uid_sets(&uids, MAX_SET_CHARS);
    assert_eq!(sets.len(), 2);
    let mut sent = String::new();
    let mut answers = String::new();
    for (i, set) in sets.iter().enumerate() {
        let tag = format!("m{}", i + 1);
        let first = expand_uid_set(set).unwrap()[0];
        sent.push_str(&format!("{tag} UID FETCH {set} (UID)\r\n"));
        answers.push_str(&format!(
            "* 1 FETCH (UID {first})\r\n{tag} OK Fetch completed.\r\n"
        ));
    }
    let steps = vec![
        (
            Vec::new(),
            b"* OK [CAPABILITY IMAP4rev1] ready\r\n".to_vec(),
        ),
        (sent.clone().into_bytes(), answers.into_bytes()),
    ];
    let (port, server) = serve(steps, true);
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    let mut seen = Vec::new();
    c.uid_fetch_uids(&uids, "UID", |f| {
        seen.extend(f.uid());
        Ok(())
    })
    .unwrap();
    // `3,6,9,12,…,702` is 899 characters; `,705` would pass 900.
    assert_eq!(seen, [3, 705]);
    drop(c);
    assert_eq!(String::from_utf8_lossy(&server.join().unwrap()), sent);
}

/// A large message body is read once, into a buffer of its exact size, which is the body the
/// caller gets: the read buffer stays small, so a connection never keeps the size of the
/// largest message it has seen, and the body is not held twice while the response is parsed.
/// A large literal that arrives in pieces, with a read timing out in the middle: what
/// arrived is kept, and reading on after the error finishes the body exactly.
#[test]
fn a_large_literal_cut_by_a_timeout_is_finished_by_the_next_read() {
    let body: Vec<u8> = (0..3_000_000u32).map(|i| b'a' + (i % 23) as u8).collect();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = body.clone();
    let server = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        sock.write_all(b"* OK [CAPABILITY IMAP4rev1] ready\r\n")
            .unwrap();
        let mut buf = [0u8; 256];
        let _ = sock.read(&mut buf).unwrap();
        let head = format!("* 1 FETCH (UID 5 BODY[] {{{}}}\r\n", sent.len());
        sock.write_all(head.as_bytes()).unwrap();
        // Small pieces, then a pause longer than the client's timeout, then the rest.
        for piece in sent[..1_000_000].chunks(10_000) {
            sock.write_all(piece).unwrap();
        }
        std::thread::sleep(Duration::from_millis(1500));
        sock.write_all(&sent[1_000_000..]).unwrap();
        sock.write_all(b")\r\nm1 OK done\r\n").unwrap();
    });
    let mut ep = plain_endpoint(port);
    ep.timeout = Duration::from_millis(500);
    let mut c = Client::connect(&ep).unwrap();
    let e = c.uid_fetch("5", "UID BODY.PEEK[]", |_| Ok(())).unwrap_err();
    assert!(e.is_transient(), "{e}");
    let mut got = None;
    while got.is_none() {
        match c.read_response() {
            Ok(Response::Untagged(Untagged::Fetch(mut f))) => {
                got = f.take("BODY[]").and_then(|v| v.into_bytes());
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => assert!(e.is_transient(), "{e}"),
        }
    }
    let got = got.unwrap();
    assert!(
        got == body,
        "{} bytes arrived, {} sent",
        got.len(),
        body.len()
    );
    assert_eq!(got.capacity(), body.len());
    server.join().unwrap();
}

/// Buffers the caller lends are used for large literals: the smallest that holds one, else
/// the largest, grown; the rest are given back unused. A body read into one needs no fresh
/// memory (or only for what the buffer grew by).
#[test]
fn a_large_literal_is_read_into_the_smallest_lent_buffer_that_holds_it() {
    let bodies = [
        vec![b'x'; 300_000],
        vec![b'y'; 900_000],
        vec![b'w'; 150_000],
    ];
    let answer = |tag: &str, uids: std::ops::RangeInclusive<usize>| {
        let mut a = Vec::new();
        for uid in uids {
            let body = &bodies[uid - 5];
            a.extend_from_slice(
                format!("* {uid} FETCH (UID {uid} BODY[] {{{}}}\r\n", body.len()).as_bytes(),
            );
            a.extend_from_slice(body);
            a.extend_from_slice(b")\r\n");
        }
        a.extend_from_slice(format!("{tag} OK Fetch completed.\r\n").as_bytes());
        a
    };
    let steps = vec![
        (
            Vec::new(),
            b"* OK [CAPABILITY IMAP4rev1] ready\r\n".to_vec(),
        ),
        (
            b"m1 UID FETCH 5:6 (UID BODY.PEEK[])\r\n".to_vec(),
            answer("m1", 5..=6),
        ),
        (
            b"m2 UID FETCH 7 (UID BODY.PEEK[])\r\n".to_vec(),
            answer("m2", 7..=7),
        ),
    ];
    let (port, _server) = serve(steps, true);
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    let lent: Vec<Vec<u8>> = [100_000, 1_000_000, 400_000]
        .into_iter()
        .map(|n| vec![b'z'; n])
        .collect();
    let addresses: Vec<*const u8> = lent.iter().map(|b| b.as_ptr()).collect();
    c.lend_buffers(lent);
    let mut got = Vec::new();
    let mut each = |mut f: crate::response::Fetch| {
        got.push(f.take("BODY[]").and_then(|v| v.into_bytes()).unwrap());
        Ok(())
    };
    c.uid_fetch("5:6", "UID BODY.PEEK[]", &mut each).unwrap();
    let unused = c.unused_buffers();
    assert_eq!(unused.len(), 1);
    assert_eq!(
        unused[0].as_ptr(),
        addresses[0],
        "the 100 kB buffer fits neither"
    );
    assert!(c.unused_buffers().is_empty(), "given back once");
    // A literal larger than every lent buffer grows the largest.
    c.lend_buffers(unused);
    c.uid_fetch("7", "UID BODY.PEEK[]", &mut each).unwrap();
    assert!(
        c.unused_buffers().is_empty(),
        "the 100 kB buffer was grown for it"
    );
    assert!(got == bodies, "the bodies arrived exactly");
    assert_eq!(
        got[0].as_ptr(),
        addresses[2],
        "300 kB went into the 400 kB buffer"
    );
    assert_eq!(
        got[1].as_ptr(),
        addresses[1],
        "900 kB went into the 1 MB buffer"
    );
}

#[test]
fn a_large_literal_is_read_into_its_own_buffer_and_the_read_buffer_stays_small() {
    let big: Vec<u8> = (0..5_000_000u32)
        .map(|i| {
            if i % 77 == 76 {
                b'\n'
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .collect();
    let small = b"Subject: small\r\n\r\nhi\r\n".to_vec();
    let mut answer = format!("* 1 FETCH (UID 5 BODY[] {{{}}}\r\n", big.len()).into_bytes();
    answer.extend_from_slice(&big);
    answer.extend_from_slice(b" FLAGS (\\Seen $Big))\r\n");
    answer.extend_from_slice(format!("* 2 FETCH (UID 6 BODY[] {{{}}}\r\n", small.len()).as_bytes());
    answer.extend_from_slice(&small);
    answer.extend_from_slice(b")\r\nm1 OK Fetch completed.\r\n");
    let steps = vec![
        (
            Vec::new(),
            b"* OK [CAPABILITY IMAP4rev1] ready\r\n".to_vec(),
        ),
        (
            b"m1 UID FETCH 5:6 (UID FLAGS BODY.PEEK[])\r\n".to_vec(),
            answer,
        ),
        (b"m2 NOOP\r\n".to_vec(), b"m2 OK done\r\n".to_vec()),
    ];
    let (port, _server) = serve(steps, true);
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    let mut got = Vec::new();
    c.uid_fetch("5:6", "UID FLAGS BODY.PEEK[]", |mut f| {
        let body = f.take("BODY[]").and_then(|v| v.into_bytes()).unwrap();
        got.push((f.uid(), f.flags(), body.len(), body.capacity(), body));
        Ok(())
    })
    .unwrap();
    assert_eq!(got.len(), 2);
    let (uid, flags, len, capacity, body) = &got[0];
    assert_eq!(
        (*uid, flags.as_deref()),
        (Some(5), Some(&["\\Seen".to_string(), "$Big".into()][..]))
    );
    assert!(body == &big, "the large body arrived exactly");
    assert_eq!(capacity, len, "the large body's buffer has its exact size");
    assert_eq!(got[1].4, small);
    assert!(
        c.rbuf_peak <= 4 * READ_CHUNK,
        "the read buffer grew to {} bytes for a {} byte literal",
        c.rbuf_peak,
        big.len()
    );
    // The connection goes on, framing from where the literal ended.
    c.run("NOOP").unwrap();
}

#[test]
fn code_typed_reads_the_code_a_no_carried() {
    let no = |code: &str| Error::No {
        command: "CREATE".into(),
        code: Some(code.into()),
        text: "x".into(),
    };
    assert_eq!(
        no("ALREADYEXISTS").code_typed(),
        Some(TypedCode::AlreadyExists)
    );
    assert_eq!(no("TRYCREATE").code_typed(), Some(TypedCode::TryCreate));
    assert_eq!(Error::Bye("bye".into()).code_typed(), None);
}

#[test]
fn transient_errors() {
    let no = |code: &str| Error::No {
        command: "APPEND".into(),
        code: Some(code.into()),
        text: "x".into(),
    };
    assert!(no("UNAVAILABLE").is_transient());
    assert!(no("THROTTLED").is_transient());
    assert!(!no("OVERQUOTA").is_transient());
    assert!(Error::Bye("bye".into()).is_transient());
}

/// A hostile or broken server announcing a literal of 100 GB gets a clear error at once, and
/// the client never grows its buffer towards it.
#[test]
fn a_server_announcing_a_100_gb_literal_gets_a_clear_error_not_an_allocation() {
    let (port, _server) = scripted_server(vec![
        (b"", b"* OK [CAPABILITY IMAP4rev1] ready\r\n"),
        (
            b"m1 UID FETCH 1 (BODY.PEEK[])\r\n",
            b"* 1 FETCH (UID 1 BODY[] {100000000000}\r\nFrom: x\r\n",
        ),
    ]);
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    let e = c.uid_fetch("1", "BODY.PEEK[]", |_| Ok(())).unwrap_err();
    assert!(
        e.to_string().contains("literal of 100000000000 bytes"),
        "{e}"
    );
    assert!(
        !e.is_transient(),
        "a bogus server is not retried as a network fault"
    );
    assert!(
        c.rbuf.capacity() < 1 << 20,
        "the buffer grew to {}",
        c.rbuf.capacity()
    );
}

fn oauth2_login(mechanism: OAuthMechanism) -> Login {
    Login::OAuth2 {
        user: "alice@x.example".into(),
        token: "tok.en".into(),
        mechanism,
    }
}

#[test]
fn sasl_oauth_initial_responses_are_the_documented_bytes() {
    // Google's and Microsoft's XOAUTH2 documentation: user=…^Aauth=Bearer …^A^A.
    assert_eq!(
        OAuthMechanism::XOAuth2.initial_response("alice@x.example", "tok.en"),
        b"user=alice@x.example\x01auth=Bearer tok.en\x01\x01"
    );
    // RFC 7628 §3.1: gs2-header "n,a=<authzid>," then kvpairs; ',' and '=' escaped (RFC 5801).
    assert_eq!(
        OAuthMechanism::OAuthBearer.initial_response("alice@x.example", "tok.en"),
        b"n,a=alice@x.example,\x01auth=Bearer tok.en\x01\x01"
    );
    assert_eq!(
        OAuthMechanism::OAuthBearer.initial_response("a,b=c", "t"),
        b"n,a=a=2Cb=3Dc,\x01auth=Bearer t\x01\x01"
    );
    // The RFC 7628 §4.1 example, byte for byte (its host and port pairs left out).
    let rfc = OAuthMechanism::OAuthBearer.initial_response(
        "user@example.com",
        "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==",
    );
    assert_eq!(
        rfc,
        b"n,a=user@example.com,\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01"
    );
}

#[test]
fn xoauth2_with_sasl_ir_sends_the_token_inline() {
    let (port, server) =
        lockstep_server(vec![
        (b"", b"* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2 SASL-IR] ready\r\n"),
        (
            b"m1 AUTHENTICATE XOAUTH2 dXNlcj1hbGljZUB4LmV4YW1wbGUBYXV0aD1CZWFyZXIgdG9rLmVuAQE=\r\n",
            b"m1 OK [CAPABILITY IMAP4rev1 MOVE] Logged in\r\n",
        ),
    ]);
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    c.login(&oauth2_login(OAuthMechanism::XOAuth2)).unwrap();
    assert!(c.has("MOVE"));
    drop(c);
    assert_eq!(
        String::from_utf8_lossy(&server.join().unwrap()),
        "m1 AUTHENTICATE XOAUTH2 dXNlcj1hbGljZUB4LmV4YW1wbGUBYXV0aD1CZWFyZXIgdG9rLmVuAQE=\r\n"
    );
}

#[test]
fn oauthbearer_without_sasl_ir_waits_for_the_continuation() {
    let (port, server) = lockstep_server(vec![
        (
            b"",
            b"* OK [CAPABILITY IMAP4rev1 AUTH=OAUTHBEARER] ready\r\n",
        ),
        (b"m1 AUTHENTICATE OAUTHBEARER\r\n", b"+ \r\n"),
        (
            b"bixhPWFsaWNlQHguZXhhbXBsZSwBYXV0aD1CZWFyZXIgdG9rLmVuAQE=\r\n",
            b"m1 OK [CAPABILITY IMAP4rev1] Logged in\r\n",
        ),
    ]);
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    c.login(&oauth2_login(OAuthMechanism::OAuthBearer)).unwrap();
    drop(c);
    assert_eq!(
        String::from_utf8_lossy(&server.join().unwrap()),
        "m1 AUTHENTICATE OAUTHBEARER\r\nbixhPWFsaWNlQHguZXhhbXBsZSwBYXV0aD1CZWFyZXIgdG9rLmVuAQE=\r\n"
    );
}

#[test]
fn a_refused_token_is_answered_as_the_mechanism_requires_and_reported_without_the_token() {
    for (mechanism, answer, sent) in [
        (
            OAuthMechanism::XOAuth2,
            &b"AQE=\r\n\r\n"[..],
            "m1 AUTHENTICATE XOAUTH2 dXNlcj1hbGljZUB4LmV4YW1wbGUBYXV0aD1CZWFyZXIgdG9rLmVuAQE=\r\n\r\n",
        ),
        (
            OAuthMechanism::OAuthBearer,
            &b"AQ==\r\n"[..],
            "m1 AUTHENTICATE OAUTHBEARER bixhPWFsaWNlQHguZXhhbXBsZSwBYXV0aD1CZWFyZXIgdG9rLmVuAQE=\r\nAQ==\r\n",
        ),
    ] {
        let answer: &'static [u8] = Box::leak(answer.to_vec().into_boxed_slice());
        let (port, server) = lockstep_server(vec![
            (b"", b"* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2 AUTH=OAUTHBEARER SASL-IR] hi\r\n"),
            (b"AQE=\r\n", b"+ eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NoZW1lcyI6ImJlYXJlciIsInNjb3BlIjoiaW1hcCJ9\r\n"),
            (
                answer,
                b"m1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
            ),
        ]);
        let mut c = Client::connect(&plain_endpoint(port)).unwrap();
        let e = c.login(&oauth2_login(mechanism)).unwrap_err();
        let text = e.to_string();
        assert_eq!(e.code(), Some("AUTHENTICATIONFAILED"), "{text}");
        assert_eq!(
            text,
            format!(
                "AUTHENTICATE {} failed: [AUTHENTICATIONFAILED] Authentication failed. (the \
                 server's OAuth2 status invalid_token ({{\"status\":\"invalid_token\",\
                 \"schemes\":\"bearer\",\"scope\":\"imap\"}}))",
                mechanism.name()
            )
        );
        assert!(!text.contains("tok.en"), "{text}");
        assert!(
            !text.contains("dXNlcj1hbGljZUB4LmV4YW1wbGUBYXV0aD1CZWFyZXIgdG9rLmVuAQE=")
                && !text.contains("bixhPWFsaWNlQHguZXhhbXBsZSwBYXV0aD1CZWFyZXIgdG9rLmVuAQE="),
            "{text}"
        );
        assert!(!format!("{e:?}").contains("tok.en"));
        drop(c);
        assert_eq!(String::from_utf8_lossy(&server.join().unwrap()), sent);
    }
}

#[test]
fn an_oauth2_login_is_traced_and_printed_without_its_token() {
    for mechanism in [OAuthMechanism::XOAuth2, OAuthMechanism::OAuthBearer] {
        let login = oauth2_login(mechanism);
        for shown in [format!("{login:?}"), login.trace_line()] {
            assert!(shown.contains("alice@x.example"), "{shown}");
            assert!(!shown.contains("tok.en"), "{shown}");
            assert!(
                !shown.contains("dXNlcj1hbGljZUB4LmV4YW1wbGUBYXV0aD1CZWFyZXIgdG9rLmVuAQE=")
                    && !shown.contains("bixhPWFsaWNlQHguZXhhbXBsZSwBYXV0aD1CZWFyZXIgdG9rLmVuAQE="),
                "{shown}"
            );
        }
    }
    assert_eq!(
        oauth2_login(OAuthMechanism::XOAuth2).trace_line(),
        "AUTHENTICATE XOAUTH2 as alice@x.example (token not shown)"
    );
}

#[test]
fn the_trace_cuts_credentials_from_any_login_command() {
    assert_eq!(traced("SELECT INBOX"), "SELECT INBOX");
    assert_eq!(traced("AUTHENTICATE XOAUTH2"), "AUTHENTICATE XOAUTH2");
    let ir = "dXNlcj1hbGljZUB4LmV4YW1wbGUBYXV0aD1CZWFyZXIgdG9rLmVuAQE=";
    assert_eq!(
        traced(&format!("AUTHENTICATE XOAUTH2 {ir}")),
        "AUTHENTICATE XOAUTH2 (response not shown)"
    );
    assert_eq!(
        traced("login alice s3cret"),
        "LOGIN (credentials not shown)"
    );
}

#[test]
fn only_the_server_dropping_the_connection_is_a_drop() {
    use std::io::ErrorKind;
    let io = |k: ErrorKind| Error::Io(std::io::Error::new(k, "x"));
    for k in [
        ErrorKind::UnexpectedEof,
        ErrorKind::ConnectionReset,
        ErrorKind::ConnectionAborted,
        ErrorKind::BrokenPipe,
    ] {
        assert!(io(k).is_dropped_by_server(), "{k:?}");
    }
    assert!(Error::Bye("Server shutting down.".into()).is_dropped_by_server());
    // Our own timeout, a refused connect and a refusal are not.
    assert!(!io(ErrorKind::TimedOut).is_dropped_by_server());
    assert!(!io(ErrorKind::WouldBlock).is_dropped_by_server());
    let connect = Error::Connect {
        address: "127.0.0.1:1".into(),
        source: std::io::Error::new(ErrorKind::ConnectionRefused, "refused"),
    };
    assert!(!connect.is_dropped_by_server());
    let no = Error::No {
        command: "STATUS".into(),
        code: Some("THROTTLED".into()),
        text: "slow down".into(),
    };
    assert!(!no.is_dropped_by_server());
}

/// With ESEARCH the UIDs come back as ranges; without it, as the plain list.
#[test]
fn uid_search_asks_for_esearch_ranges_where_the_server_offers_them() {
    let (port, server) = lockstep_server(vec![
        (b"", b"* OK [CAPABILITY IMAP4rev1 ESEARCH] ready\r\n"),
        (
            b"m1 UID SEARCH RETURN (ALL) ALL\r\n",
            b"* ESEARCH (TAG \"m1\") UID ALL 1:3,7\r\nm1 OK Search completed.\r\n",
        ),
        (
            b"m2 UID SEARCH RETURN (ALL) UID 9:12\r\n",
            b"* ESEARCH (TAG \"m2\") UID\r\nm2 OK Search completed.\r\n",
        ),
    ]);
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    assert_eq!(c.uid_search("ALL").unwrap(), [1, 2, 3, 7]);
    assert!(c.uid_search("UID 9:12").unwrap().is_empty());
    drop(c);
    server.join().unwrap();

    let (port, server) = lockstep_server(vec![
        (b"", b"* OK [CAPABILITY IMAP4rev1] ready\r\n"),
        (
            b"m1 UID SEARCH ALL\r\n",
            b"* SEARCH 1 2 3 7\r\nm1 OK Search completed.\r\n",
        ),
    ]);
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    assert_eq!(c.uid_search("ALL").unwrap(), [1, 2, 3, 7]);
    drop(c);
    server.join().unwrap();
}

/// Fourteen bytes that would expand to four billion UIDs get a clear error, not 16 GB.
#[test]
fn an_esearch_answer_of_every_possible_uid_is_an_error_not_an_allocation() {
    let (port, server) = scripted_server(vec![
        (b"", b"* OK [CAPABILITY IMAP4rev1 ESEARCH] ready\r\n"),
        (
            b"m1 UID SEARCH RETURN (ALL) ALL\r\n",
            b"* ESEARCH (TAG \"m1\") UID ALL 1:4294967295\r\nm1 OK Search completed.\r\n",
        ),
    ]);
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    let e = c.uid_search("ALL").unwrap_err();
    assert!(
        e.to_string().contains("an ESEARCH answer of more than"),
        "{e}"
    );
    drop(c);
    server.join().unwrap();
}

/// Several STATUS commands go out before the first answer is read: this server answers
/// nothing until it has the last of the three, so a client that waited for each answer would
/// time out. Answers are matched by the name they carry (the server answers in another
/// order, and spells one name otherwise, which is then taken by position).
#[test]
fn status_of_several_folders_is_one_round_trip_and_each_answer_finds_its_folder() {
    let (port, server) = scripted_server(vec![
        (b"", b"* OK [CAPABILITY IMAP4rev1 CONDSTORE] ready\r\n"),
        (
            b"m3 STATUS \"Sent\" (MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)\r\n",
            b"* STATUS \"Archive\" (MESSAGES 2 UIDNEXT 3 UIDVALIDITY 20 HIGHESTMODSEQ 5)\r\n\
              m2 OK done\r\n\
              * STATUS INBOX (MESSAGES 1 UIDNEXT 2 UIDVALIDITY 10 HIGHESTMODSEQ 4)\r\n\
              m1 OK done\r\n\
              * STATUS \"sent\" (MESSAGES 3 UIDNEXT 4 UIDVALIDITY 30 HIGHESTMODSEQ 6)\r\n\
              m3 OK done\r\n",
        ),
    ]);
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    let st = c.status_many(&["INBOX", "Archive", "Sent"]).unwrap();
    let got: Vec<(u32, u32, u32, Option<u64>)> = st
        .iter()
        .map(|s| (s.messages, s.uid_next, s.uid_validity, s.highest_modseq))
        .collect();
    assert_eq!(
        got,
        [
            (1, 2, 10, Some(4)),
            (2, 3, 20, Some(5)),
            (3, 4, 30, Some(6))
        ]
    );
    drop(c);
    let sent = server.join().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&sent).matches(" STATUS ").count(),
        3,
        "{}",
        String::from_utf8_lossy(&sent)
    );
}

/// A folder the server refuses does not leave the connection out of step: the answers after
/// it are read, the refusal is the error, and the next command gets its own answer.
#[test]
fn a_refused_status_among_several_is_the_error_and_the_connection_stays_in_step() {
    let (port, server) = scripted_server(vec![
        (b"", b"* OK [CAPABILITY IMAP4rev1] ready\r\n"),
        (
            b"m2 STATUS \"B\" (MESSAGES UIDNEXT UIDVALIDITY)\r\n",
            b"m1 NO [NONEXISTENT] Mailbox doesn't exist: A\r\n\
              * STATUS B (MESSAGES 7 UIDNEXT 8 UIDVALIDITY 9)\r\n\
              m2 OK done\r\n",
        ),
        (
            b"m3 STATUS \"C\" (MESSAGES UIDNEXT UIDVALIDITY)\r\n",
            b"* STATUS C (MESSAGES 1 UIDNEXT 2 UIDVALIDITY 3)\r\nm3 OK done\r\n",
        ),
    ]);
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    let e = c.status_many(&["A", "B"]).unwrap_err();
    assert!(e.to_string().contains("NONEXISTENT"), "{e}");
    assert_eq!(c.status("C").unwrap().messages, 1);
    drop(c);
    server.join().unwrap();
}

/// Tree changes go out together (this server answers nothing until it has the last), and
/// each gets its own outcome: the refusal in the middle is that command's, the commands on
/// either side of it went through, and the connection stays in step for the next command.
#[test]
fn commands_run_each_in_one_round_trip_with_an_outcome_each() {
    let (port, server) = scripted_server(vec![
        (b"", b"* OK [CAPABILITY IMAP4rev1] ready\r\n"),
        (
            b"m3 SUBSCRIBE \"B\"\r\n",
            b"m1 OK Create completed.\r\n\
              m2 NO [ALREADYEXISTS] Mailbox already exists\r\n\
              m3 OK Subscribe completed.\r\n",
        ),
        (
            b"m4 UNSUBSCRIBE \"C\"\r\n",
            b"m4 OK Unsubscribe completed.\r\n",
        ),
    ]);
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    let commands = ["CREATE \"A\"", "CREATE \"B\"", "SUBSCRIBE \"B\""].map(String::from);
    let outcomes = c.run_each(&commands).unwrap();
    assert_eq!(outcomes.len(), 3);
    assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
    let refused = outcomes[1].as_ref().unwrap_err();
    assert_eq!(refused.code(), Some("ALREADYEXISTS"), "{refused}");
    assert!(
        refused.to_string().contains("Mailbox already exists"),
        "{refused}"
    );
    c.unsubscribe("C").unwrap();
    drop(c);
    let sent = server.join().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&sent),
        "m1 CREATE \"A\"\r\nm2 CREATE \"B\"\r\nm3 SUBSCRIBE \"B\"\r\nm4 UNSUBSCRIBE \"C\"\r\n"
    );
}

/// A fetch queued with `uid_fetch_send` goes out before the answers of the one sent before
/// it are read: this server answers nothing until it has the second FETCH. The answers are
/// then read in order, each fetch's own.
#[test]
fn a_fetch_sent_ahead_is_on_the_wire_while_the_one_before_is_read() {
    let (port, server) = scripted_server(vec![
        (b"", b"* OK [CAPABILITY IMAP4rev1] ready\r\n"),
        (
            b"m2 UID FETCH 7:8 (UID BODY.PEEK[])\r\n",
            b"* 1 FETCH (UID 5 BODY[] {3}\r\nabc)\r\nm1 OK done\r\n\
              * 2 FETCH (UID 7 BODY[] {2}\r\nde)\r\n* 3 FETCH (UID 8 BODY[] {1}\r\nf)\r\n\
              m2 OK done\r\n",
        ),
    ]);
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    let first = c.uid_fetch_send(&[5], "UID BODY.PEEK[]");
    let second = c.uid_fetch_send(&[7, 8], "UID BODY.PEEK[]");
    let mut read = |tags: &[String]| {
        let mut got = Vec::new();
        c.uid_fetch_finish(tags, |mut f| {
            let body = f.take("BODY[]").and_then(|v| v.into_bytes()).unwrap();
            got.push((f.uid().unwrap(), body));
            Ok(())
        })
        .unwrap();
        got
    };
    assert_eq!(read(&first), vec![(5, b"abc".to_vec())]);
    assert_eq!(read(&second), vec![(7, b"de".to_vec()), (8, b"f".to_vec())]);
    drop(c);
    let sent = server.join().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&sent),
        "m1 UID FETCH 5 (UID BODY.PEEK[])\r\nm2 UID FETCH 7:8 (UID BODY.PEEK[])\r\n"
    );
}

/// A SELECT queued with a FETCH behind it: both go out before the first answer is read (this
/// server answers nothing until it has the FETCH), and each gets its own answers.
#[test]
fn a_select_and_the_fetch_behind_it_go_out_together() {
    let (port, server) = scripted_server(vec![
        (b"", b"* OK [CAPABILITY IMAP4rev1] ready\r\n"),
        (
            b"m2 UID FETCH 1:* (UID FLAGS RFC822.SIZE)\r\n",
            b"* 2 EXISTS\r\n* OK [UIDVALIDITY 9] ok\r\n* OK [UIDNEXT 4] ok\r\n\
              m1 OK [READ-ONLY] EXAMINE done\r\n\
              * 1 FETCH (UID 1 FLAGS (\\Seen) RFC822.SIZE 10)\r\n\
              * 2 FETCH (UID 3 FLAGS () RFC822.SIZE 20)\r\nm2 OK done\r\n",
        ),
    ]);
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    let select = c.select_send("INBOX", true);
    let fetch = c.uid_fetch_queue("1:*", "UID FLAGS RFC822.SIZE");
    let s = c.select_finish(&select, "INBOX", true).unwrap();
    assert_eq!((s.exists, s.uid_validity, s.uid_next), (2, 9, Some(4)));
    assert!(s.read_only);
    let mut got = Vec::new();
    c.uid_fetch_finish(&[fetch], |f| {
        got.push((
            f.uid().unwrap(),
            f.get("RFC822.SIZE").and_then(|v| v.as_u64()),
        ));
        Ok(())
    })
    .unwrap();
    assert_eq!(got, [(1, Some(10)), (3, Some(20))]);
    drop(c);
    let sent = server.join().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&sent),
        "m1 EXAMINE \"INBOX\"\r\nm2 UID FETCH 1:* (UID FLAGS RFC822.SIZE)\r\n"
    );
}

/// A connection lost in the middle of the answers is the error, not an outcome.
#[test]
fn commands_run_each_fail_as_a_whole_when_the_connection_is_lost() {
    let (port, server) = scripted_server(vec![
        (b"", b"* OK [CAPABILITY IMAP4rev1] ready\r\n"),
        (b"m2 CREATE \"B\"\r\n", b"m1 OK Create completed.\r\n"),
    ]);
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    let commands = ["CREATE \"A\"", "CREATE \"B\""].map(String::from);
    let e = c.run_each(&commands).unwrap_err();
    assert!(e.is_transient(), "{e}");
    server.join().unwrap();
}

/// A folder tree is read in one round trip: this server answers nothing until it has the
/// LSUB, the last of the three commands.
#[test]
fn list_namespace_and_lsub_go_out_together() {
    let (port, server) = scripted_server(vec![
        (b"", b"* OK [CAPABILITY IMAP4rev1 NAMESPACE] ready\r\n"),
        (
            b"m3 LSUB \"\" \"*\"\r\n",
            b"* LIST () \".\" INBOX\r\n* LIST () \".\" \"INBOX.Sent\"\r\nm1 OK done\r\n\
              * NAMESPACE ((\"INBOX.\" \".\")) NIL NIL\r\nm2 OK done\r\n\
              * LSUB () \".\" \"INBOX.Sent\"\r\nm3 OK done\r\n",
        ),
    ]);
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    let t = c.tree_lists(false).unwrap();
    let names =
        |l: &[crate::response::ListItem]| l.iter().map(|i| i.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&t.list), ["INBOX", "INBOX.Sent"]);
    assert_eq!(t.namespace, Some(("INBOX.".to_string(), Some('.'))));
    assert_eq!(names(&t.lsub), ["INBOX.Sent"]);
    drop(c);
    server.join().unwrap();
}

/// With LIST-STATUS the tree's LIST brings every selectable folder's STATUS (RFC 5819: each
/// after its LIST line); a folder without one (`\Noselect`) has none.
#[test]
fn the_tree_brings_the_statuses_where_the_server_has_list_status() {
    let (port, server) = scripted_server(vec![
        (
            b"",
            b"* OK [CAPABILITY IMAP4rev1 LIST-EXTENDED LIST-STATUS CONDSTORE] ready\r\n",
        ),
        (
            b"m1 LIST \"\" \"*\" RETURN (STATUS (MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ))\r\n\
              m2 LSUB \"\" \"*\"\r\n",
            b"* LIST () \"/\" INBOX\r\n\
              * STATUS INBOX (MESSAGES 3 UIDNEXT 4 UIDVALIDITY 7 HIGHESTMODSEQ 9)\r\n\
              * LIST (\\Noselect) \"/\" Archive\r\n\
              * LIST () \"/\" \"Archive/2020\"\r\n\
              * STATUS \"Archive/2020\" (MESSAGES 0 UIDNEXT 1 UIDVALIDITY 8 HIGHESTMODSEQ 1)\r\n\
              m1 OK done\r\n* LSUB () \"/\" INBOX\r\nm2 OK done\r\n",
        ),
    ]);
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    let t = c.tree_lists(true).unwrap();
    assert_eq!(t.list.len(), 3);
    let st: Vec<(&str, u32, u32, u32, Option<u64>)> = t
        .statuses
        .iter()
        .map(|(n, s)| {
            (
                n.as_str(),
                s.messages,
                s.uid_next,
                s.uid_validity,
                s.highest_modseq,
            )
        })
        .collect();
    assert_eq!(
        st,
        [
            ("INBOX", 3, 4, 7, Some(9)),
            ("Archive/2020", 0, 1, 8, Some(1))
        ]
    );
    drop(c);
    server.join().unwrap();
}

/// Without LIST-STATUS, or not asked for, the LIST is the plain one and brings no statuses.
#[test]
fn the_tree_asks_for_no_statuses_without_list_status() {
    for (caps, asked) in [
        ("IMAP4rev1 LIST-EXTENDED", true),
        ("IMAP4rev1 LIST-STATUS", false),
    ] {
        let greeting = format!("* OK [CAPABILITY {caps}] ready\r\n").into_bytes();
        let (port, server) = serve(
            vec![
                (Vec::new(), greeting),
                (
                    b"m1 LIST \"\" \"*\"\r\nm2 LSUB \"\" \"*\"\r\n".to_vec(),
                    b"* LIST () \"/\" INBOX\r\nm1 OK done\r\nm2 OK done\r\n".to_vec(),
                ),
            ],
            false,
        );
        let mut c = Client::connect(&plain_endpoint(port)).unwrap();
        let t = c.tree_lists(asked).unwrap();
        assert_eq!((t.list.len(), t.statuses.len()), (1, 0), "{caps}");
        drop(c);
        server.join().unwrap();
    }
}

/// `ENABLE QRESYNC` sent ahead of the next command, against a server that answers it with
/// `enable_answer`: the STATUS it rides with goes out before any answer (this server answers
/// nothing until it has both), gets its own answer, and a later delta FETCH asks for
/// VANISHED only when the server said `ENABLED QRESYNC`.
fn enable_sent_ahead(
    enable_answer: &[u8],
    fetch: &[u8],
    fetch_answer: &[u8],
) -> Option<Vec<(u32, u32)>> {
    let status =
        b"* STATUS INBOX (MESSAGES 1 UIDNEXT 2 UIDVALIDITY 10 HIGHESTMODSEQ 4)\r\nm2 OK done\r\n";
    let (port, server) = serve(
        vec![
            (
                Vec::new(),
                b"* OK [CAPABILITY IMAP4rev1 ENABLE CONDSTORE QRESYNC] ready\r\n".to_vec(),
            ),
            (
                b"m2 STATUS \"INBOX\" (MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)\r\n".to_vec(),
                [enable_answer, status].concat(),
            ),
            (fetch.to_vec(), fetch_answer.to_vec()),
        ],
        false,
    );
    let mut c = Client::connect(&plain_endpoint(port)).unwrap();
    c.enable_qresync_with_next();
    assert_eq!(c.status("INBOX").unwrap().messages, 1);
    let gone = c
        .uid_fetch_changed_since("1:*", "FLAGS", 4, |_| Ok(()))
        .unwrap();
    drop(c);
    server.join().unwrap();
    gone
}

#[test]
fn enable_qresync_rides_with_the_next_command_and_turns_vanished_on() {
    let gone = enable_sent_ahead(
        b"* ENABLED QRESYNC\r\nm1 OK Enabled.\r\n",
        b"m3 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 4 VANISHED)\r\n",
        b"* VANISHED (EARLIER) 7\r\nm3 OK done\r\n",
    );
    assert_eq!(gone, Some(vec![(7, 7)]));
}

#[test]
fn a_refused_enable_sent_ahead_leaves_qresync_off_and_the_command_unharmed() {
    let gone = enable_sent_ahead(
        b"m1 NO Not now.\r\n",
        b"m3 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 4)\r\n",
        b"m3 OK done\r\n",
    );
    assert_eq!(gone, None);
}

#[test]
fn logout_closes_without_waiting_for_the_answer() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        sock.write_all(b"* OK ready\r\n").unwrap();
        // No answer to anything: a client that waits for LOGOUT's OK never closes, and this
        // read times out.
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            match sock.read(&mut buf) {
                Ok(0) => return seen,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(e) => panic!(
                    "the client did not close after LOGOUT ({e}); it sent {:?}",
                    String::from_utf8_lossy(&seen)
                ),
            }
        }
    });
    let mut ep = plain_endpoint(port);
    ep.timeout = Duration::from_secs(60);
    Client::connect(&ep).unwrap().logout();
    assert_eq!(server.join().unwrap(), b"m1 LOGOUT\r\n");
}
