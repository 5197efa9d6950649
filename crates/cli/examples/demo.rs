//! The end-to-end demo (`scripts/demo.sh`): a real migration between two local Dovecot
//! servers, driven through the `mailferry` binary exactly as an admin would.
//!
//! The old server is Courier-style (`.` separator, `INBOX.` prefix, Outlook folder names);
//! the new one uses `/` and the usual names. Three mailboxes with real odd messages and
//! generated mail get a full pass, then new mail arrives and flags change, then a delta pass
//! copies only that, and the report is written.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mailferry_imap::{AppendRequest, Client, Endpoint, Login, Security};
use mailferry_testkit::{Dovecot, DovecotConfig, Layout};

const USERS: [&str; 3] = ["alice", "bob", "carol"];
const SECRET_VAR: &str = "MAILFERRY_DEMO_ADMIN_PASSWORD";

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "demo-out".into()));
    std::fs::create_dir_all(&out).expect("create the demo folder");
    let out = out.canonicalize().expect("demo folder path");
    for stale in [
        "job.db",
        "job.db-wal",
        "job.db-shm",
        "report.html",
        "report.json",
    ] {
        let _ = std::fs::remove_file(out.join(stale));
    }

    step("Starting two real Dovecot servers on loopback");
    let mut old = DovecotConfig::new(&USERS);
    old.layout = Layout::DotInboxPrefix;
    let source = Dovecot::start(old);
    let target = Dovecot::start(DovecotConfig::new(&USERS));
    println!(
        "  old server 127.0.0.1:{} ('.' separator, INBOX. prefix), new server 127.0.0.1:{}",
        source.port(),
        target.port()
    );

    step("Filling the old server with sample mailboxes");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mail");
    let real: Vec<Vec<u8>> = read_messages(&fixtures);
    for (n, user) in USERS.iter().enumerate() {
        let mut c = connect(&source, user);
        let inbox: Vec<Vec<u8>> = real.iter().filter(|m| !m.is_empty()).cloned().collect();
        append(&mut c, "INBOX", &inbox, n);
        append(&mut c, "INBOX.Sent Items", &generated(n * 100, 25), n);
        append(
            &mut c,
            "INBOX.Archive.2024",
            &generated(n * 100 + 30, 40),
            n,
        );
        append(
            &mut c,
            "INBOX.R&AOk-unions",
            &generated(n * 100 + 80, 10),
            n,
        );
        c.logout();
        println!("  {user}: {} messages in 4 folders", inbox.len() + 75);
    }

    std::fs::write(out.join("job.toml"), job_file(&source, &target)).expect("write job.toml");
    let mut csv =
        String::from("Source ID,Source addresses,Source login,Target addresses,Target login\n");
    for u in USERS {
        csv.push_str(&format!(
            "{u}-0001,{u}@old.example,{u},{u}@new.example,{u}\n"
        ));
    }
    std::fs::write(out.join("mailboxes.csv"), csv).expect("write mailboxes.csv");
    println!("  wrote {}/job.toml and mailboxes.csv", out.display());

    let job = out.join("job.toml");
    let job = job.to_str().expect("utf-8 path");
    mailferry(&out, &["match", job]);
    mailferry(&out, &["check", job]);
    mailferry(&out, &["migrate", job, "--all"]);

    step("New mail arrives on the old server and alice reads and flags some");
    for (n, user) in USERS.iter().enumerate() {
        let mut c = connect(&source, user);
        append(&mut c, "INBOX", &generated(1000 + n * 10, 3), n);
        c.logout();
    }
    let mut c = connect(&source, "alice");
    c.select("INBOX.Archive.2024", false).expect("select");
    c.run("UID STORE 1:5 +FLAGS (\\Seen \\Flagged)")
        .expect("store");
    c.logout();
    println!("  3 new messages per mailbox; 5 of alice's archived messages flagged");

    mailferry(&out, &["migrate", job, "--all"]);
    mailferry(&out, &["status", job]);
    let html = out.join("report.html");
    mailferry(
        &out,
        &[
            "report",
            job,
            "--format",
            "html",
            "--out",
            html.to_str().unwrap_or("report.html"),
        ],
    );
    let json = out.join("report.json");
    mailferry(
        &out,
        &[
            "report",
            job,
            "--format",
            "json",
            "--out",
            json.to_str().unwrap_or("report.json"),
        ],
    );

    step("Done");
    println!(
        "  The servers stop now. The job, its state and the reports stay in {}.",
        out.display()
    );
}

fn step(what: &str) {
    println!("\n== {what}");
}

fn mailferry(dir: &Path, args: &[&str]) {
    let exe = std::env::current_exe().expect("own path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join("mailferry"))
        .expect("target folder");
    println!("\n$ mailferry {}", args.join(" "));
    let status = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .env(SECRET_VAR, "adminpass")
        .status()
        .expect("run mailferry (build it first: cargo build --release)");
    if !status.success() {
        println!("  (exit status {})", status.code().unwrap_or(-1));
    }
}

fn job_file(source: &Dovecot, target: &Dovecot) -> String {
    let server = |name: &str, d: &Dovecot, login: &str| {
        format!(
            "[{name}]\nkind = \"imap\"\nhost = \"{}\"\nport = {}\n\
             security = \"plain\"           # loopback only; use tls or starttls for real servers\n\
             allow_plain = true\nauth = \"admin\"\nadmin_user = \"admin\"\n\
             admin_password = {{ env = \"{SECRET_VAR}\" }}\nadmin_login = \"{login}\"\n\n",
            d.host(),
            d.port()
        )
    };
    format!(
        "# mailferry demo job (written by scripts/demo.sh)\nname = \"demo\"\nmode = \"cutover\"\n\n{}{}\
         [mailboxes]\ncsv = \"mailboxes.csv\"\n\n[migration]\nconcurrency = 3\n",
        server("source", source, "master-separator"),
        server("target", target, "sasl-authzid")
    )
}

fn connect(d: &Dovecot, user: &str) -> Client {
    let mut c = Client::connect(&Endpoint {
        host: d.host().to_string(),
        port: d.port(),
        security: Security::Plain,
        ca_file: None,
        verify_certificates: true,
        timeout: Duration::from_secs(60),
    })
    .expect("connect");
    c.login(&Login::Plain {
        user: format!("{user}*admin"),
        password: "adminpass".into(),
    })
    .expect("login");
    c
}

fn append(c: &mut Client, folder: &str, msgs: &[Vec<u8>], seed: usize) {
    if folder != "INBOX" {
        let _ = c.create(folder);
        let _ = c.subscribe(folder);
    }
    for (i, m) in msgs.iter().enumerate() {
        let flags: Vec<String> = match (i + seed) % 4 {
            0 => vec!["\\Seen".into()],
            1 => vec!["\\Seen".into(), "\\Answered".into()],
            2 => vec!["$Label1".into()],
            _ => vec![],
        };
        let date = format!("{:02}-Mar-2024 09:{:02}:00 +0100", 1 + i % 28, i % 60);
        let tag = c
            .append_send(&AppendRequest {
                mailbox: folder,
                flags: &flags,
                date: Some(&date),
                message: m,
            })
            .expect("append");
        c.append_finish(&tag).expect("append accepted");
    }
}

fn generated(start: usize, n: usize) -> Vec<Vec<u8>> {
    (start..start + n)
        .map(|i| {
            format!(
                "From: Colleague {i} <c{i}@old.example>\r\nTo: team@old.example\r\n\
                 Subject: Demo message {i}\r\nMessage-ID: <demo-{i}@old.example>\r\n\
                 Date: Fri, 1 Mar 2024 09:00:00 +0100\r\n\r\nHello, this is message {i}.\r\n"
            )
            .into_bytes()
        })
        .collect()
}

fn read_messages(dir: &Path) -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "eml") {
                files.push(p);
            }
        }
    }
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}
