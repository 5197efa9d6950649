//! The `maildir` connection kind: a folder holding one Maildir++ tree per mailbox login, as a
//! target (export) and as a source (import), so mail moves with no server at one end.

use std::path::Path;

use crate::lab::*;

fn job_text(name: &str, source: &str, target: &str) -> String {
    format!(
        "name = \"{name}\"\nstate = \"{name}.db\"\n\n{source}\n{target}\n[mailboxes]\ncsv = \"mailboxes.csv\"\n"
    )
}

fn imap_side(side: &str, d: &mailferry_testkit::Dovecot) -> String {
    format!(
        "[{side}]\nkind = \"imap\"\nhost = \"{}\"\nport = {}\nsecurity = \"plain\"\nallow_plain = true\n\
         auth = \"admin\"\nadmin_user = \"admin\"\nadmin_password = {{ env = \"MF_TEST_ADMIN_PW\" }}\n\
         admin_login = \"master-separator\"\n",
        d.host(),
        d.port()
    )
}

fn maildir_side(side: &str, path: &str) -> String {
    format!("[{side}]\nkind = \"maildir\"\npath = \"{path}\"\n")
}

/// Message files of one Maildir folder (`cur/` and `new/`), as sorted byte strings.
fn files_of(folder: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for sub in ["cur", "new"] {
        if let Ok(entries) = std::fs::read_dir(folder.join(sub)) {
            for e in entries.flatten() {
                out.push(std::fs::read(e.path()).unwrap());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn imap_to_maildir_and_back_keeps_bytes_flags_and_dates() {
    let lab = Lab::new(&["ivy"]);
    let fixtures: Vec<Msg> = messages_in(&fixtures())
        .into_iter()
        .filter(|(_, b)| !b.is_empty())
        .enumerate()
        .map(|(i, (_, body))| Msg {
            body,
            ..generated(i, 0)
        })
        .collect();
    fill(&lab.source, "ivy", "INBOX", &fixtures);
    fill(
        &lab.source,
        "ivy",
        "Archive/2019",
        &(0..30).map(|i| generated(i, 2_000)).collect::<Vec<_>>(),
    );
    fill(
        &lab.source,
        "ivy",
        "Junk/&ANw-berpr&APw-ft",
        &(30..40).map(|i| generated(i, 700)).collect::<Vec<_>>(),
    );
    let dir = lab.dir.path();
    std::fs::write(
        dir.join("export.toml"),
        job_text(
            "export",
            &imap_side("source", &lab.source),
            &maildir_side("target", "export"),
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("import.toml"),
        job_text(
            "import",
            &maildir_side("source", "export"),
            &imap_side("target", &lab.target),
        ),
    )
    .unwrap();
    let export = dir.join("export.toml");
    let import = dir.join("import.toml");
    for job in [&export, &import] {
        assert!(
            lab.mailferry(&["match", job.to_str().unwrap()])
                .status
                .success()
        );
        let (code, v) = lab.json(&["migrate", job.to_str().unwrap(), "--all"]);
        assert_eq!(code, 0, "{v:#}");
        assert_eq!(v["copied"], (fixtures.len() + 40) as u64, "{v:#}");
    }

    // The export holds the source server's exact bytes.
    let source = snapshot(&lab.source, "ivy");
    let bytes = |folder: &str| {
        let mut b: Vec<Vec<u8>> = source[folder].iter().map(|m| m.body.clone()).collect();
        b.sort();
        b
    };
    assert_eq!(files_of(&dir.join("export/ivy")), bytes("INBOX"));
    assert_eq!(
        files_of(&dir.join("export/ivy/.Archive.2019")),
        bytes("Archive/2019")
    );
    assert_eq!(
        files_of(&dir.join("export/ivy/.Junk.&ANw-berpr&APw-ft")),
        bytes("Junk/Überprüft")
    );

    // And the server that imported it holds what the first one holds.
    assert_same(
        &utc_dates(source),
        &utc_dates(snapshot(&lab.target, "ivy")),
        str::to_string,
    );

    // Maildir to Maildir, no server at all: the same files, byte for byte.
    std::fs::write(
        dir.join("copy.toml"),
        job_text(
            "copy",
            &maildir_side("source", "export"),
            &maildir_side("target", "copy"),
        ),
    )
    .unwrap();
    let copy = dir.join("copy.toml");
    assert!(
        lab.mailferry(&["match", copy.to_str().unwrap()])
            .status
            .success()
    );
    let (code, v) = lab.json(&["migrate", copy.to_str().unwrap(), "--all"]);
    assert_eq!(
        (code, v["copied"].as_u64()),
        (0, Some((fixtures.len() + 40) as u64)),
        "{v:#}"
    );
    for folder in ["", ".Archive.2019", ".Junk.&ANw-berpr&APw-ft"] {
        assert_eq!(
            files_of(&dir.join("copy/ivy").join(folder)),
            files_of(&dir.join("export/ivy").join(folder)),
            "{folder}"
        );
    }

    // Delta passes both ways copy nothing new; a new message goes through once.
    fill(&lab.source, "ivy", "Archive/2019", &[generated(99, 1_000)]);
    for job in [&export, &import] {
        let (code, v) = lab.json(&["migrate", job.to_str().unwrap(), "--all"]);
        assert_eq!((code, v["copied"].as_u64()), (0, Some(1)), "{v:#}");
    }
    assert_same(
        &utc_dates(snapshot(&lab.source, "ivy")),
        &utc_dates(snapshot(&lab.target, "ivy")),
        str::to_string,
    );
}
