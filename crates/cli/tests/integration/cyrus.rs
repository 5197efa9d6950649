//! Cyrus IMAP 3.6 as source and as target (the test kit's [`Cyrus`], unpacked privately by
//! `scripts/install-deps.sh`), with a Dovecot on the other side: the shared corpus both ways,
//! a folder tree with '/' and non-ASCII names, delta passes after flag changes, and a Maildir
//! source whose files end their lines in bare LF, which Cyrus would refuse as they are.
//!
//! Copies are compared over IMAP, message by message: `BODY[]` bytes, flags and keywords, and
//! INTERNALDATE as an instant (each server gives it in its own zone).

use std::collections::BTreeMap;
use std::path::Path;

use mailferry_testkit::{Cyrus, CyrusConfig, Dovecot, DovecotConfig};

use crate::corpus::{corpus_dir, fill_corpus};
use crate::lab::*;

/// `bytes` with a CR before every LF that lacks one: the form IMAP carries a message in
/// (RFC 3501 §2.2), written here apart from the Maildir reader it checks.
fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 32);
    let mut previous = 0u8;
    for &b in bytes {
        if b == b'\n' && previous != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        previous = b;
    }
    out
}

/// Asserts that `target` holds what `source` holds for `user`, folder by folder and message by
/// message; where a source message has a bare CR, the expected copy is what the target server
/// stores for the source's exact bytes (SPEC §3; see [`as_target_stores_them`]).
fn assert_copied(source: &impl ImapServer, target: &impl ImapServer, user: &str) {
    let mut src = utc_dates(snapshot(source, user));
    let dst = utc_dates(snapshot(target, user));
    as_target_stores_them(target, user, &mut src);
    assert_same(&src, &dst, str::to_string);
    let (src_subs, dst_subs) = (subscriptions(source, user), subscriptions(target, user));
    for s in &src_subs {
        assert!(
            dst_subs.contains(s),
            "{s} not subscribed on the target: {dst_subs:?}"
        );
    }
}

fn cyrus(users: &[&str]) -> Cyrus {
    Cyrus::start(CyrusConfig::new(users))
}

fn dovecot(users: &[&str]) -> Dovecot {
    Dovecot::start(DovecotConfig::new(users))
}

/// The corpus messages Cyrus refuses with "Message contains invalid header": a header line
/// without a colon (`something@bar.net>` left of a broken fold; `quite Delivered-To: ...`) or
/// with spaces before it (`From  : John Doe`), which RFC 5322 does not allow and Dovecot takes.
const CYRUS_REFUSES: [&str; 3] = [
    "Quirks/ruby-mail fixtures/mail-error_emails__multiple_references_with_one_invalid.eml",
    "Quirks/ruby-mail fixtures/mail-plain_emails__raw_email_incorrect_header.eml",
    "Quirks/ruby-mail fixtures/mail-rfc2822__example13.eml",
];
/// The one 0-byte corpus file, which both servers refuse.
const EMPTY: &str = "Quirks/ruby-mail fixtures/mail-sample_output_multipart.eml";

fn without_cr(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().copied().filter(|&b| b != b'\r').collect()
}

/// The corpus, Dovecot to Cyrus: Dovecot stores it as given and serves it with CRLF; Cyrus
/// takes every message but the three with invalid headers, which are reported failed with
/// Cyrus's words, and holds the same bytes, flags, keywords and dates for all the others.
#[test]
fn the_shared_corpus_goes_from_dovecot_to_cyrus_exactly() {
    let Some(dir) = corpus_dir() else {
        eprintln!("MAILFERRY_NO_CORPUS=1: the Dovecot-to-Cyrus corpus test was left out");
        return;
    };
    let lab = Lab::of(dovecot(&["corpus"]), cyrus(&["corpus"]), &["corpus"]);
    let refused = fill_corpus(&lab.source, &dir, <[u8]>::to_vec);
    // Dovecot refuses exactly the 0-byte file.
    let refused: Vec<&str> = refused.iter().map(|(path, _)| path.as_str()).collect();
    assert_eq!(refused, [EMPTY]);

    let job = lab.job();
    let job = job.to_str().unwrap();
    assert!(lab.mailferry(&["match", job]).status.success());
    let (code, v) = lab.json(&["migrate", job, "--all"]);
    assert_eq!(
        (code, v["copied"].as_u64(), v["failed"].as_u64()),
        (1, Some(3475), Some(3)),
        "{v:#}"
    );
    let errors = v["entries"][0]["errors"].to_string();
    assert_eq!(
        errors.matches("Message contains invalid header").count(),
        3,
        "{errors}"
    );

    // Everything else is on Cyrus exactly.
    let refused_bodies: Vec<Vec<u8>> = CYRUS_REFUSES
        .iter()
        .map(|path| without_cr(&std::fs::read(dir.join(path)).expect("read corpus file")))
        .collect();
    let mut src = utc_dates(snapshot(&lab.source, "corpus"));
    for msgs in src.values_mut() {
        msgs.retain(|m| !refused_bodies.contains(&without_cr(&m.body)));
    }
    assert_eq!(total(&src), 3475);
    let dst = utc_dates(snapshot(&lab.target, "corpus"));
    assert_eq!(total(&dst), 3475);
    assert!(dst.contains_key("Junk/Überprüft"), "{:?}", dst.keys());
    as_target_stores_them(&lab.target, "corpus", &mut src);
    assert_same(&src, &dst, str::to_string);
    assert_eq!(
        subscriptions(&lab.source, "corpus"),
        subscriptions(&lab.target, "corpus")
    );
}

/// The corpus, Cyrus to Dovecot. Cyrus refuses bare LF, so it is filled with each file's CRLF
/// form (what any IMAP server serves for it); it refuses the three invalid headers and the
/// empty file itself; Dovecot then holds exactly what Cyrus holds.
#[test]
fn the_shared_corpus_goes_from_cyrus_to_dovecot_exactly() {
    let Some(dir) = corpus_dir() else {
        eprintln!("MAILFERRY_NO_CORPUS=1: the Cyrus-to-Dovecot corpus test was left out");
        return;
    };
    let lab = Lab::of(cyrus(&["corpus"]), dovecot(&["corpus"]), &["corpus"]);
    let refused = fill_corpus(&lab.source, &dir, crlf);
    let mut expected: Vec<&str> = CYRUS_REFUSES.to_vec();
    expected.push(EMPTY);
    expected.sort_unstable();
    let mut paths: Vec<&str> = refused.iter().map(|(path, _)| path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(paths, expected, "{refused:?}");
    for (path, why) in &refused {
        let words = if path == EMPTY {
            "Zero-length message literal"
        } else {
            "Message contains invalid header"
        };
        assert!(why.contains(words), "{path}: {why}");
    }

    let v = lab.migrate_ok();
    assert_eq!(
        (v["copied"].as_u64(), v["failed"].as_u64()),
        (Some(3475), Some(0)),
        "{v:#}"
    );
    assert_eq!(total(&snapshot(&lab.source, "corpus")), 3475);
    assert_copied(&lab.source, &lab.target, "corpus");
}

/// A tree with '/' levels, an empty parent, a subfolder of INBOX and non-ASCII names (modified
/// UTF-7 on the wire) on a Dovecot.
fn fill_tree(server: &impl ImapServer, user: &str) {
    for (n, folder) in [
        "INBOX",
        "INBOX/Newsletters",
        "Archive/2019/Q1",
        "Junk/&ANw-berpr&APw-ft",
        "Entw&APw-rfe",
        "&BB8EQAQ4BDIENQRC-",
    ]
    .iter()
    .enumerate()
    {
        let msgs: Vec<Msg> = (n * 10..n * 10 + 8).map(|i| generated(i, 1_500)).collect();
        assert!(fill(server, user, folder, &msgs).is_empty(), "{folder}");
    }
    let mut c = connect(server, user);
    c.create("Empty Parent/Child").expect("create");
    c.subscribe("Empty Parent/Child").expect("subscribe");
    c.logout();
}

/// Changes flags and keywords of 9 messages in two folders (see [`generated`] for their flags
/// before) and adds two messages: what the next pass must carry over.
fn change_flags(server: &impl ImapServer, user: &str) {
    let mut c = connect(server, user);
    c.select("Archive/2019/Q1", false).expect("select");
    c.run("UID STORE 1:3 +FLAGS (\\Flagged $Label9)")
        .expect("store");
    c.run("UID STORE 5 -FLAGS (\\Seen)").expect("store");
    c.run("UID STORE 6 FLAGS (\\Answered Projekt-B)")
        .expect("store");
    c.select("Junk/&ANw-berpr&APw-ft", false).expect("select");
    c.run("UID STORE 1:* +FLAGS (\\Seen)").expect("store");
    c.logout();
    let new: Vec<Msg> = (200..202).map(|i| generated(i, 900)).collect();
    assert!(fill(server, user, "&BB8EQAQ4BDIENQRC-", &new).is_empty());
}

/// Runs the tree, a pass, a change on the source, a delta pass; checks the copy after each.
fn tree_and_delta(lab: &Lab<impl ImapServer, impl ImapServer>) {
    fill_tree(&lab.source, "tess");
    let v = lab.migrate_ok();
    assert_eq!(
        (v["copied"].as_u64(), v["failed"].as_u64()),
        (Some(48), Some(0)),
        "{v:#}"
    );
    assert_copied(&lab.source, &lab.target, "tess");
    let target = snapshot(&lab.target, "tess");
    for folder in [
        "Junk/Überprüft",
        "Entwürfe",
        "Привет",
        "Empty Parent/Child",
        "INBOX/Newsletters",
    ] {
        assert!(
            target.contains_key(folder),
            "{folder} missing: {:?}",
            target.keys()
        );
    }

    // A pass with nothing new changes nothing.
    let (code, v) = lab.json(&["migrate", lab.job().to_str().unwrap(), "--all"]);
    assert_eq!((code, v["copied"].as_u64()), (0, Some(0)), "{v:#}");

    change_flags(&lab.source, "tess");
    let (code, v) = lab.json(&["migrate", lab.job().to_str().unwrap(), "--all"]);
    assert_eq!((code, v["copied"].as_u64()), (0, Some(2)), "{v:#}");
    // UIDs 1-3 and 5-6 of Archive/2019/Q1, and the 4 unseen of the 8 in Junk/Überprüft.
    assert_eq!(v["entries"][0]["flags_updated"].as_u64(), Some(9), "{v:#}");
    assert_copied(&lab.source, &lab.target, "tess");
}

/// Flags changed on a Cyrus source reach the Dovecot target in a delta pass.
#[test]
fn a_tree_from_cyrus_with_non_ascii_names_and_a_delta_pass_after_flag_changes_on_cyrus() {
    tree_and_delta(&Lab::of(cyrus(&["tess"]), dovecot(&["tess"]), &["tess"]));
}

/// A delta pass changes flags and keywords on a Cyrus target.
#[test]
fn a_tree_to_cyrus_with_non_ascii_names_and_a_delta_pass_that_changes_flags_on_cyrus() {
    tree_and_delta(&Lab::of(dovecot(&["tess"]), cyrus(&["tess"]), &["tess"]));
}

/// One message file as an MTA or Dovecot's own store leaves it in Maildir: LF line ends.
fn write_message(folder: &Path, name: &str, body: &[u8], mtime: i64) {
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(folder.join(sub)).expect("maildir");
    }
    let path = folder.join("cur").join(name);
    std::fs::write(&path, body).expect("write message");
    let file = std::fs::File::options()
        .write(true)
        .open(&path)
        .expect("open message");
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime as u64);
    file.set_modified(when).expect("set mtime");
}

/// Messages whose lines end in bare LF, read from a Maildir tree, reach Cyrus (which refuses
/// bare LF) with CRLF: the copy is byte for byte the file's CRLF form — what Dovecot serves
/// for the same files — with the flags, keywords and dates the files carry.
#[test]
fn bare_lf_messages_from_a_maildir_source_reach_cyrus_with_crlf() {
    let server = cyrus(&["lena"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let tree = dir.path().join("mail");
    let home = tree.join("lena");
    // The fixtures as they are (most CRLF, a few LF) in INBOX, every one of them with LF line
    // ends (as an MTA delivers) in "Converted", and generated messages with LF in a subfolder.
    let fixtures: Vec<(String, Vec<u8>)> = messages_in(&fixtures())
        .into_iter()
        .filter(|(_, b)| !b.is_empty())
        .collect();
    let mut expected: BTreeMap<String, Vec<(Vec<u8>, i64)>> = BTreeMap::new();
    let mut lf_files = 0;
    for (i, (_, body)) in fixtures.iter().enumerate() {
        lf_files += usize::from(crlf(body) != *body);
        let mtime = 1_500_000_000 + i as i64 * 3_600;
        write_message(&home, &format!("{mtime}.M{i}P1.mx:2,S"), body, mtime);
        expected
            .entry("INBOX".into())
            .or_default()
            .push((crlf(body), mtime));
        let lf = String::from_utf8_lossy(body).contains("\r\n").then(|| {
            let mut lf = Vec::with_capacity(body.len());
            for (j, &b) in body.iter().enumerate() {
                if !(b == b'\r' && body.get(j + 1) == Some(&b'\n')) {
                    lf.push(b);
                }
            }
            lf
        });
        if let Some(lf) = lf {
            write_message(
                &home.join(".Converted"),
                &format!("{mtime}.M{i}P4.mx:2,"),
                &lf,
                mtime,
            );
            expected
                .entry("Converted".into())
                .or_default()
                .push((crlf(&lf), mtime));
        }
    }
    assert!(
        lf_files >= 1,
        "the fixtures should have bare-LF files: {lf_files}"
    );
    let converted = expected.get("Converted").map_or(0, Vec::len);
    assert!(converted >= 10, "{converted} fixtures converted to LF");
    for i in 0..10 {
        let body: Vec<u8> = generated(i, 800)
            .body
            .iter()
            .copied()
            .filter(|&b| b != b'\r')
            .collect();
        let mtime = 1_600_000_000 + i as i64 * 60;
        let info = if i % 2 == 0 { "FS" } else { "" };
        write_message(
            &home.join(".Archive.2019"),
            &format!("{mtime}.M{i}P2.mx:2,{info}"),
            &body,
            mtime,
        );
        expected
            .entry("Archive/2019".into())
            .or_default()
            .push((crlf(&body), mtime));
    }
    write_message(
        &home.join(".Entw&APw-rfe"),
        "1700000000.M1P3.mx:2,D",
        b"Subject: draft\n\nstill LF\n",
        1_700_000_000,
    );
    expected.entry("Entwürfe".into()).or_default().push((
        b"Subject: draft\r\n\r\nstill LF\r\n".to_vec(),
        1_700_000_000,
    ));

    let job = format!(
        "name = \"import\"\nstate = \"import.db\"\n\n[source]\nkind = \"maildir\"\npath = \"mail\"\n\n\
         [target]\nkind = \"imap\"\nhost = \"{}\"\nport = {}\nsecurity = \"plain\"\nallow_plain = true\n\
         auth = \"admin\"\nadmin_user = \"admin\"\nadmin_password = {{ env = \"MF_TEST_ADMIN_PW\" }}\n\
         admin_login = \"sasl-authzid\"\n\n[mailboxes]\ncsv = \"mailboxes.csv\"\n",
        server.host(),
        server.port()
    );
    std::fs::write(dir.path().join("import.toml"), job).expect("job");
    std::fs::write(
        dir.path().join("mailboxes.csv"),
        "Source ID,Source addresses,Source login,Target addresses,Target login\n\
         id-lena,lena@old.example,lena,lena@new.example,lena\n",
    )
    .expect("csv");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailferry"))
            .args(args)
            .env("MF_TEST_ADMIN_PW", ADMIN_PW)
            .current_dir(dir.path())
            .output()
            .expect("run mailferry");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        (out, v)
    };
    let (out, _) = run(&["match", "import.toml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (out, v) = run(&["migrate", "import.toml", "--all", "--json"]);
    let want = fixtures.len() + converted + 11;
    assert!(
        out.status.success() && v["copied"].as_u64() == Some(want as u64),
        "copied {want}? {v:#}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_tail(20)
    );

    let on_cyrus = snapshot(&server, "lena");
    for (folder, mut want) in expected {
        let got = on_cyrus
            .get(&folder)
            .unwrap_or_else(|| panic!("{folder} missing on Cyrus: {:?}", on_cyrus.keys()));
        let mut got: Vec<(Vec<u8>, i64)> = got
            .iter()
            .map(|m| (m.body.clone(), as_utc(&m.date)))
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got.len(), want.len(), "{folder}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(
                (String::from_utf8_lossy(&g.0), g.1),
                (String::from_utf8_lossy(&w.0), w.1),
                "{folder}"
            );
        }
    }
    // Flags and keywords from the file names.
    let archive = &on_cyrus["Archive/2019"];
    assert_eq!(
        archive
            .iter()
            .filter(|m| m.flags == "\\Flagged \\Seen")
            .count(),
        5,
        "{archive:?}"
    );
    assert!(on_cyrus["Entwürfe"].iter().all(|m| m.flags == "\\Draft"));
    assert!(on_cyrus["INBOX"].iter().all(|m| m.flags == "\\Seen"));

    // A second pass copies nothing again.
    let (_, v) = run(&["migrate", "import.toml", "--all", "--json"]);
    assert_eq!(v["copied"].as_u64(), Some(0), "{v:#}");

    // The same files served by Dovecot as its own Maildir: Cyrus holds what Dovecot serves.
    // (No special-use folders of its own, which the tree does not have.)
    let mut cfg = DovecotConfig::new(&["lena"]);
    cfg.special_use = false;
    let dovecot = Dovecot::start(cfg);
    let mail = dovecot.mail_dir("lena");
    copy_tree(&home, &mail.join("Maildir"));
    let owner = std::fs::metadata(mail.parent().expect("mail root")).expect("mail root");
    chown_tree(&mail, &owner);
    let served = utc_dates(snapshot(&dovecot, "lena"));
    assert_eq!(total(&served), want, "{:?}", served.keys());
    assert_same(&served, &utc_dates(on_cyrus), str::to_string);
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let path = entry.path();
        let dest = to.join(entry.file_name());
        if path.is_dir() {
            copy_tree(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).expect("copy");
            let mtime = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .expect("mtime");
            std::fs::File::options()
                .write(true)
                .open(&dest)
                .and_then(|f| f.set_modified(mtime))
                .expect("set mtime");
        }
    }
}

/// Gives `dir` and everything below it to the owner of `like` (Dovecot's mail owner as root).
fn chown_tree(dir: &Path, like: &std::fs::Metadata) {
    use std::os::unix::fs::MetadataExt;
    std::os::unix::fs::chown(dir, Some(like.uid()), Some(like.gid())).expect("chown");
    if dir.is_dir() {
        for entry in std::fs::read_dir(dir).expect("read dir") {
            chown_tree(&entry.expect("entry").path(), like);
        }
    }
}
