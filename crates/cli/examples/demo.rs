//! The end-to-end demo (`scripts/demo.sh`): the product's whole story with real servers,
//! driven through the `mailferry` binary exactly as an admin would.
//!
//! Two OpenLDAP directories (old and new) and two Dovecot servers whose users come from them.
//! The old server is Courier-style (`.` separator, `INBOX.` prefix, Outlook folder names);
//! the new one uses `/` and the usual names. The demo discovers the mailboxes in the old
//! directory, matches them in the new one (automatically, by hand, and by creating one),
//! checks, runs a full pass, a delta pass, switches the domain in both directories, refreshes
//! the job's addresses, runs the final delta pass and writes the reports.
//!
//! `--ui` does the same up to the domain switch, then leaves `mailferry serve` running on the
//! job, so the user does the refresh and the final pass in the web console; Ctrl+C stops it
//! and everything else.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mailferry_imap::{AppendRequest, Client, Endpoint, Login, Security};
use mailferry_testkit::{
    Dovecot, DovecotConfig, Layout, LdapUsers, Slapd, SlapdConfig, person_ldif,
};

const USAGE: &str = "usage: scripts/demo.sh [--ui] [DIR]\n  \
    DIR   where the job, its state and the reports stay (default demo-out)\n  \
    --ui  stop before Refresh email addresses and leave the web console running instead";

/// The people of the demo organisation: login and display name in the old directory.
const PEOPLE: [(&str, &str); 4] = [
    ("alice", "Alice Martin"),
    ("bob", "Bob Chen"),
    ("carol", "Carol Diaz"),
    ("dave", "Dave Evans"),
];
/// The same people in the new directory (login, display name, primary address, aliases),
/// set up so that each way of matching shows once: alice by her local part, bob (robert now)
/// by the alias his new mailbox already has, carol (c.diaz) only by hand. dave has no
/// mailbox there yet: the demo creates it.
const NEW_PEOPLE: [(&str, &str, &str, &[&str]); 3] = [
    ("alice", "Alice Martin", "alice@new.example", &[]),
    (
        "robert",
        "Robert Chen",
        "robert@new.example",
        &["bob@old.example"],
    ),
    ("cdiaz", "C. Diaz", "c.diaz@new.example", &[]),
];
/// The organisation's domain after the switch-over, in both directories.
const FINAL_DOMAIN: &str = "corp.example";

/// The job file names environment variables for its secrets, never the secrets themselves;
/// the demo sets them for every `mailferry` it runs.
const ADMIN_VAR: &str = "MAILFERRY_DEMO_ADMIN_PASSWORD";
const OLD_LDAP_VAR: &str = "MAILFERRY_DEMO_OLD_LDAP_PASSWORD";
const NEW_LDAP_VAR: &str = "MAILFERRY_DEMO_NEW_LDAP_PASSWORD";
const INITIAL_VAR: &str = "MAILFERRY_DEMO_INITIAL_PASSWORD";
/// The test kit's Dovecot master user is `admin` with this password.
const ADMIN_PASSWORD: &str = "adminpass";
/// The password `mailferry create` gives the mailboxes it creates.
const INITIAL_PASSWORD: &str = "welcome-to-corp";
/// Commands run in the demo folder, so the job is named as an admin would type it.
const JOB: &str = "job.toml";

/// Set by SIGINT, SIGTERM or SIGHUP: the demo then stops at the next step, and its servers
/// are stopped on the way out (they run in process groups of their own, so Ctrl+C does not
/// reach them, and the demo must not die before it has stopped them).
static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::SeqCst);
}

/// Why the story stopped early.
enum Stop {
    /// Ctrl+C (or SIGTERM/SIGHUP).
    Interrupted,
    /// A command failed; the text says what to look at.
    Failed(String),
}

/// Everything the demo runs; dropping it stops the servers and removes their directories.
struct World {
    out: PathBuf,
    old_ldap: Slapd,
    new_ldap: Slapd,
    source: Dovecot,
    target: Dovecot,
}

fn main() -> ExitCode {
    let mut ui = false;
    let mut out = PathBuf::from("demo-out");
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--ui" => ui = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            a if a.starts_with('-') => {
                eprintln!("demo: unknown option {a}\n{USAGE}");
                return ExitCode::from(2);
            }
            a => out = PathBuf::from(a),
        }
    }
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(
                signal,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
    let out = match prepare(&out) {
        Ok(out) => out,
        Err(e) => {
            eprintln!(
                "demo: cannot use {} for the job and its reports: {e}; pass another folder: \
                 scripts/demo.sh DIR",
                out.display()
            );
            return ExitCode::from(2);
        }
    };

    // A missing OpenLDAP or Dovecot panics here with what to install (scripts/install-deps.sh
    // does it as root); servers already started are stopped by the unwinding.
    println!(
        "mailferry demo: the organisation old.example moves its four mailboxes to a new mail \
         server\nand, at the switch-over, to its new domain {FINAL_DOMAIN}. Every step says what \
         it does and\nshows the command it runs (lines starting with $)."
    );
    let world = start(out.clone());
    let result = story(&world, ui);
    drop(world);
    match result {
        Ok(()) => {
            println!(
                "\nThe servers and directories are stopped. The job, its state and the reports stay in {}.",
                out.display()
            );
            if !ui {
                println!(
                    "To click through the same story in the web console: scripts/demo.sh --ui"
                );
            }
            ExitCode::SUCCESS
        }
        Err(Stop::Interrupted) => {
            println!(
                "\nInterrupted: the servers and directories are stopped. What the demo did so far \
                 stays in {}.",
                out.display()
            );
            ExitCode::from(130)
        }
        Err(Stop::Failed(why)) => {
            eprintln!(
                "\ndemo: {why}\nThe servers and directories are stopped; the job stays in {}.",
                out.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// Creates the demo folder and removes what an earlier run left there, so every run starts
/// from an empty job.
fn prepare(out: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(out)?;
    let out = out.canonicalize()?;
    for stale in [
        "job.db",
        "job.db-wal",
        "job.db-shm",
        "report.html",
        "report.json",
        "refresh.html",
        // written by the demo before it had directories
        "mailboxes.csv",
    ] {
        let _ = std::fs::remove_file(out.join(stale));
    }
    if let Ok(reports) = std::fs::read_dir(out.join("reports")) {
        for r in reports.flatten() {
            if r.file_name().to_string_lossy().starts_with("refresh-") {
                let _ = std::fs::remove_file(r.path());
            }
        }
    }
    Ok(out)
}

fn start(out: PathBuf) -> World {
    step_title("Starting two directories (OpenLDAP) and two mail servers (Dovecot) on loopback");
    let mut old = SlapdConfig::new("dc=old,dc=example");
    let old_people = "ou=people,dc=old,dc=example";
    for (uid, name) in PEOPLE {
        old.seed.push_str(&person_ldif(
            old_people,
            uid,
            name,
            &format!("{uid}@old.example"),
            &[],
            &format!("pw-{uid}"),
        ));
    }
    let mut new = SlapdConfig::new("dc=new,dc=example");
    let new_people = "ou=people,dc=new,dc=example";
    for (uid, name, mail, aliases) in NEW_PEOPLE {
        new.seed.push_str(&person_ldif(
            new_people,
            uid,
            name,
            mail,
            aliases,
            &format!("pw-{uid}"),
        ));
    }
    let old_ldap = Slapd::start(old);
    let new_ldap = Slapd::start(new);

    let mut old_server = DovecotConfig::new(&[]);
    old_server.layout = Layout::DotInboxPrefix;
    old_server.ldap_users = Some(LdapUsers::from_slapd(&old_ldap));
    let source = Dovecot::start(old_server);
    let mut new_server = DovecotConfig::new(&[]);
    new_server.ldap_users = Some(LdapUsers::from_slapd(&new_ldap));
    let target = Dovecot::start(new_server);

    println!(
        "  old directory {} ({}): alice, bob, carol and dave @old.example",
        old_ldap.url(),
        old_ldap.suffix()
    );
    println!(
        "  new directory {} ({}): alice@new.example, robert@new.example (alias \
         bob@old.example), c.diaz@new.example; no dave",
        new_ldap.url(),
        new_ldap.suffix()
    );
    println!(
        "  old server 127.0.0.1:{} ('.' separator, INBOX. prefix), users from the old directory",
        source.port()
    );
    println!(
        "  new server 127.0.0.1:{} ('/' separator), users from the new directory: a mailbox \
         added there can log in at once",
        target.port()
    );
    World {
        out,
        old_ldap,
        new_ldap,
        source,
        target,
    }
}

fn story(w: &World, ui: bool) -> Result<(), Stop> {
    step("Filling the old server with sample mailboxes")?;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mail");
    let real: Vec<Vec<u8>> = read_messages(&fixtures)
        .into_iter()
        .filter(|m| !m.is_empty())
        .collect();
    for (n, (user, _)) in PEOPLE.iter().enumerate() {
        let mut c = connect(&w.source, user);
        append(&mut c, "INBOX", &real, n);
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
        println!(
            "  {user}: {} messages in INBOX, Sent Items, Archive.2024 and Réunions",
            real.len() + 75
        );
    }

    std::fs::write(w.out.join(JOB), job_file(w))
        .map_err(|e| Stop::Failed(format!("cannot write {}: {e}", w.out.join(JOB).display())))?;
    println!(
        "\n  Wrote {}/{JOB}: both servers, both directories ([source.directory], \
         [target.directory]),\n  and [target.create] for mailboxes the new server lacks. \
         Passwords come from MAILFERRY_DEMO_*\n  environment variables: a job file never holds \
         a secret.\n  The commands below run in {0}; `cat {0}/{JOB}` shows how a job is written.",
        w.out.display()
    );

    step("Learning who the mailboxes are, from the old directory")?;
    say("discover reads every person of the old directory into the job, keyed by a mailbox ID");
    say("(the entryUUID) that survives renames and domain changes.");
    mailferry(w, &["discover", JOB])?;

    step("Pairing each mailbox with one in the new directory")?;
    say("match --auto tries, in order: the same primary address, the same address among the");
    say("aliases, the same local part, the same display name. status shows who is left, and why.");
    mailferry(w, &["match", JOB, "--auto"])?;
    mailferry(w, &["status", JOB])?;

    step("carol is c.diaz on the new server: a manual match")?;
    say("No rule can know that, so the admin says it; the new directory must have the address.");
    mailferry(
        w,
        &[
            "match",
            JOB,
            "--set",
            "carol@old.example=c.diaz@new.example",
        ],
    )?;

    step("dave has no mailbox on the new server yet: create one")?;
    say("--create marks the entry; create adds the person to the new directory as");
    say("dave@new.example ([target.create]), and the new server lets him log in at once.");
    mailferry(w, &["match", JOB, "--create", "dave"])?;
    mailferry(w, &["create", JOB])?;

    step("Checking both servers and both directories before copying anything")?;
    mailferry(w, &["check", JOB])?;

    step("The full pass: every folder, message, flag and subscription")?;
    mailferry(w, &["migrate", JOB, "--all"])?;

    step("Meanwhile people keep working: new mail arrives, and alice flags some")?;
    for (n, (user, _)) in PEOPLE.iter().enumerate() {
        let mut c = connect(&w.source, user);
        append(&mut c, "INBOX", &generated(1000 + n * 10, 3), n);
        c.logout();
    }
    let mut c = connect(&w.source, "alice");
    c.select("INBOX.Archive.2024", false).expect("select");
    c.run("UID STORE 1:5 +FLAGS (\\Seen \\Flagged)")
        .expect("store");
    c.logout();
    say("3 new messages in every INBOX; 5 of alice's archived messages flagged.");

    step("A delta pass: only what changed is copied")?;
    say("Run it as often as you like until the switch-over; the ledger makes sure no message");
    say("is ever copied twice.");
    mailferry(w, &["migrate", JOB, "--all"])?;

    step(&format!(
        "Switch-over: the organisation's domain becomes {FINAL_DOMAIN}, in both directories"
    ))?;
    say("The directory admins rewrite every mail attribute and keep the old address as an");
    say("alias, so mail sent to it still arrives. In LDIF (ldapmodify), for alice on each side:");
    let old_changes: Vec<(&str, String)> = PEOPLE
        .iter()
        .map(|(uid, _)| (*uid, format!("{uid}@old.example")))
        .collect();
    let new_changes: Vec<(&str, String)> = [
        ("alice", "alice@new.example"),
        ("robert", "robert@new.example"),
        ("cdiaz", "c.diaz@new.example"),
        ("dave", "dave@new.example"),
    ]
    .iter()
    .map(|(uid, mail)| (*uid, (*mail).to_string()))
    .collect();
    for (ldap, changes) in [(&w.old_ldap, &old_changes), (&w.new_ldap, &new_changes)] {
        for (i, (uid, mail)) in changes.iter().enumerate() {
            let ldif = switch_domain(ldap, uid, mail);
            if i == 0 {
                println!();
                for line in ldif.lines() {
                    println!("    {line}");
                }
            }
        }
    }
    println!();
    say("Done likewise for bob, carol and dave (old) and robert, cdiaz and dave (new).");
    say("The job still holds the old addresses.");
    for (n, (user, _)) in PEOPLE.iter().enumerate() {
        let mut c = connect(&w.source, user);
        append(&mut c, "INBOX", &generated(2000 + n * 10, 2), n);
        c.logout();
    }
    say("And 2 more messages reached every old INBOX before the mail routing changed.");

    if ui {
        return console(w);
    }

    step("Refresh email addresses: the job learns the new addresses")?;
    say("Every mailbox is looked up again by its ID in both directories. carol's target was");
    say("entered by hand, so it is left for you to check rather than overwritten.");
    mailferry(w, &["refresh-addresses", JOB, "--all"])?;

    step("carol's match was entered by hand: check it and set it again")?;
    say("Her new mailbox is c.diaz@corp.example now (the new directory says so); the job");
    say("still points at c.diaz@new.example until the admin confirms it.");
    mailferry(
        w,
        &[
            "match",
            JOB,
            "--set",
            "carol@corp.example=c.diaz@corp.example",
        ],
    )?;

    step("The final delta pass: the mail that arrived meanwhile, exactly once")?;
    mailferry(w, &["migrate", JOB, "--all"])?;

    step("Where things stand, and the reports")?;
    mailferry(w, &["status", JOB])?;
    mailferry(
        w,
        &["report", JOB, "--format", "html", "--out", "report.html"],
    )?;
    mailferry(
        w,
        &["report", JOB, "--format", "json", "--out", "report.json"],
    )?;
    mailferry(
        w,
        &[
            "report",
            JOB,
            "--kind",
            "refresh",
            "--format",
            "html",
            "--out",
            "refresh.html",
        ],
    )?;
    println!();
    say("report.html and report.json: the last pass, per mailbox and every message not copied.");
    say("refresh.html: the refresh; refresh-addresses also wrote one in reports/ itself.");
    Ok(())
}

/// `--ui`: leaves the web console running on the job until Ctrl+C.
fn console(w: &World) -> Result<(), Stop> {
    step("The web console, on the same job")?;
    say("The directories have switched domain and new mail waits on the old server: the rest");
    say("is yours. In the Jobs tab:");
    say("  1. click the grid, press Ctrl+A to select every mailbox, and click");
    say("     'Refresh email addresses': the results window shows what changed, side by side;");
    say("  2. carol's match was entered by hand, so it was not refreshed: select her row, click");
    say("     'Match', type c.diaz@corp.example and click 'Match to this address';");
    say("  3. select every mailbox again and click 'Start migration' for the final delta pass;");
    say("     the Dashboard shows it live, and the Reports tab has both reports.");
    println!("\n$ mailferry serve {JOB}");
    let mut child = Command::new(mailferry_bin()?)
        .args(["serve", JOB])
        .current_dir(&w.out)
        .envs(secrets(w))
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Stop::Failed(format!("cannot run mailferry serve: {e}")))?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let Some(Ok(open)) = lines.next() else {
        let _ = child.wait();
        if SIGNALLED.load(Ordering::SeqCst) {
            return Err(Stop::Interrupted);
        }
        return Err(Stop::Failed(
            "mailferry serve stopped before it printed its address; its message is above".into(),
        ));
    };
    println!("{open}");
    let port = open
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .unwrap_or("PORT");
    println!(
        "\n  Open that address in a browser on this machine (the token in it logs you in).\n  \
         From another machine: ssh -L {port}:127.0.0.1:{port} THIS-HOST, then open it there.\n  \
         Press Ctrl+C here to stop the console, the servers and the directories."
    );
    let _ = std::io::stdout().flush();
    // Whatever else serve prints goes on to the terminal; keeping the pipe open also keeps
    // serve from ever writing into a closed one.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            println!("{line}");
        }
    });
    let mut stopping = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(_) => break None,
        }
        // Ctrl+C reaches serve as well (it is in the terminal's process group); SIGTERM
        // covers a demo stopped with `kill`, which serve would not see.
        if !stopping && SIGNALLED.load(Ordering::SeqCst) {
            stopping = true;
            println!("\nStopping the console…");
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill has no memory-safety preconditions; pid is our own child.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if stopping || status.is_some_and(|s| s.success()) {
        println!("The console stopped.");
        Ok(())
    } else {
        Err(Stop::Failed(
            "mailferry serve stopped by itself; its message is above".into(),
        ))
    }
}

/// Rewrites `uid`'s primary address to the final domain and keeps the old one as an alias;
/// returns the LDIF it applied.
fn switch_domain(ldap: &Slapd, uid: &str, old_mail: &str) -> String {
    let local = old_mail.split('@').next().unwrap_or(uid);
    let mut ldif = format!(
        "dn: uid={uid},{}\nchangetype: modify\nreplace: mail\nmail: {local}@{FINAL_DOMAIN}\n-\n",
        ldap.people()
    );
    // A mailbox mailferry created is a plain inetOrgPerson: aliases need the auxiliary class.
    let classes = ldap.search(&format!("(uid={uid})"), &["objectClass"]);
    if !classes.contains("inetLocalMailRecipient") {
        ldif.push_str("add: objectClass\nobjectClass: inetLocalMailRecipient\n-\n");
    }
    ldif.push_str(&format!(
        "add: mailLocalAddress\nmailLocalAddress: {old_mail}\n"
    ));
    ldap.modify(&ldif);
    ldif
}

/// Prints a step's title; stops the story first if the user pressed Ctrl+C.
fn step(what: &str) -> Result<(), Stop> {
    if SIGNALLED.load(Ordering::SeqCst) {
        return Err(Stop::Interrupted);
    }
    step_title(what);
    Ok(())
}

fn step_title(what: &str) {
    println!("\n== {what}");
}

fn say(what: &str) {
    println!("  {what}");
}

/// The `mailferry` binary built beside this example (`target/release/mailferry`).
fn mailferry_bin() -> Result<PathBuf, Stop> {
    let exe = std::env::current_exe()
        .map_err(|e| Stop::Failed(format!("cannot find the demo's own path: {e}")))?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join("mailferry"))
        .filter(|p| p.is_file());
    bin.ok_or_else(|| {
        Stop::Failed(format!(
            "no mailferry binary beside {}: build it with cargo build --release --bin mailferry \
             (scripts/demo.sh does)",
            exe.display()
        ))
    })
}

fn secrets(w: &World) -> [(&'static str, &str); 4] {
    [
        (ADMIN_VAR, ADMIN_PASSWORD),
        (OLD_LDAP_VAR, w.old_ldap.admin_password()),
        (NEW_LDAP_VAR, w.new_ldap.admin_password()),
        (INITIAL_VAR, INITIAL_PASSWORD),
    ]
}

/// Runs one command in the demo folder, showing it as the admin would type it.
fn mailferry(w: &World, args: &[&str]) -> Result<(), Stop> {
    println!("\n$ mailferry {}", args.join(" "));
    let _ = std::io::stdout().flush();
    let status = Command::new(mailferry_bin()?)
        .args(args)
        .current_dir(&w.out)
        .envs(secrets(w))
        .status()
        .map_err(|e| Stop::Failed(format!("cannot run mailferry: {e}")))?;
    if SIGNALLED.load(Ordering::SeqCst) {
        return Err(Stop::Interrupted);
    }
    if !status.success() {
        return Err(Stop::Failed(format!(
            "`mailferry {}` failed (exit status {}); its output above says why",
            args.join(" "),
            status.code().unwrap_or(-1)
        )));
    }
    Ok(())
}

fn job_file(w: &World) -> String {
    let server = |name: &str, d: &Dovecot| {
        format!(
            "[{name}]\nkind = \"imap\"\nhost = \"{}\"\nport = {}\n\
             security = \"plain\"           # loopback only; use tls or starttls for real servers\n\
             allow_plain = true\nauth = \"admin\"\nadmin_user = \"admin\"\n\
             admin_password = {{ env = \"{ADMIN_VAR}\" }}\nadmin_login = \"master-separator\"\n\n",
            d.host(),
            d.port()
        )
    };
    let directory = |name: &str, l: &Slapd, var: &str| {
        format!(
            "[{name}.directory]\nkind = \"ldap\"\nurl = \"{}\"\n\
             security = \"plain\"           # loopback only; starttls (the default) or ldaps:// for real ones\n\
             bind_dn = \"{}\"\nbind_password = {{ env = \"{var}\" }}\nbase = \"{}\"\n\
             filter = \"(objectClass=inetOrgPerson)\"\nid_attribute = \"entryUUID\"\n\
             login_attribute = \"uid\"\nprimary_address_attribute = \"mail\"\n\
             alias_attribute = \"mailLocalAddress\"\ndisplay_name_attribute = \"cn\"\n\n",
            l.url(),
            l.admin_dn(),
            l.people()
        )
    };
    format!(
        "# mailferry demo job (written by scripts/demo.sh)\nname = \"demo\"\nmode = \"cutover\"\n\n\
         {}{}{}{}\
         # where mailferry create adds the mailboxes the new server lacks\n\
         [target.create]\nbase = \"{}\"\ndomain = \"new.example\"\n\
         object_classes = [\"inetOrgPerson\"]\ninitial_password = {{ env = \"{INITIAL_VAR}\" }}\n\n\
         [migration]\nconcurrency = 4\n",
        server("source", &w.source),
        directory("source", &w.old_ldap, OLD_LDAP_VAR),
        server("target", &w.target),
        directory("target", &w.new_ldap, NEW_LDAP_VAR),
        w.new_ldap.people()
    )
}

fn connect(d: &Dovecot, user: &str) -> Client {
    let mut c = Client::connect(&Endpoint {
        host: d.host().to_string(),
        port: d.port(),
        security: Security::Plain,
        ca_file: None,
        verify_certificates: true,
        pins: Vec::new(),
        timeout: Duration::from_secs(60),
    })
    .expect("connect");
    c.login(&Login::Plain {
        user: format!("{user}*admin"),
        password: ADMIN_PASSWORD.into(),
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
