//! `mailferry serve` (SPEC §7): the console's locks over plain HTTP, and the console itself in
//! a real headless chromium against real directories and Dovecot servers: selecting rows,
//! Refresh email addresses and its results window, and a migration watched live.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mailferry_testkit::browser::{Browser, Kind, Modifier};
use mailferry_testkit::{Dovecot, DovecotConfig, LdapUsers, Slapd, SlapdConfig, person_ldif};
use serde_json::Value;

use crate::lab::*;

/// A running `mailferry serve`, stopped (by its own handle) when dropped.
struct Served {
    child: Child,
    url: String,
    base: String,
    port: u16,
    token: String,
}

impl Served {
    fn start(mut cmd: Command) -> Served {
        let mut child = cmd
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start mailferry serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the first line");
        let url = line
            .trim()
            .strip_prefix("Open ")
            .unwrap_or_else(|| panic!("first line is not `Open URL`: {line:?}"))
            .to_string();
        let (base, token) = url.split_once("/?token=").expect("token in the URL");
        let port = base.rsplit(':').next().unwrap().parse().unwrap();
        Served {
            base: base.to_string(),
            token: token.to_string(),
            url,
            port,
            child,
        }
    }

    fn cookie(&self) -> String {
        format!("mailferry_{}={}", self.port, self.token)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One raw HTTP request; returns the status, the lower-cased head and the body. `Host` is
/// the server's own unless `headers` gives one.
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    http_at("127.0.0.1", port, method, path, headers, body)
}

/// [`http`] to a server listening on `ip`.
fn http_at(
    ip: &str,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect((ip, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {ip}:{port}\r\n"));
    }
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    // An event stream never ends: what arrived within 2.5 s is enough.
    let deadline = std::time::Instant::now() + Duration::from_millis(2500);
    let mut buf = [0u8; 8192];
    while std::time::Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .parse()
        .unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// This machine's first IPv4 address that is not a loopback one, as `hostname -I` lists them.
fn non_loopback_ipv4() -> String {
    let out = Command::new("hostname")
        .arg("-I")
        .output()
        .expect("run `hostname -I` (Debian package hostname)");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .unwrap_or_else(|| {
            panic!(
                "this test needs an IPv4 address besides 127.0.0.1 (hostname -I printed {:?})",
                String::from_utf8_lossy(&out.stdout)
            )
        })
        .to_string()
}

#[test]
fn a_non_loopback_address_must_be_asked_for_and_is_warned_about() {
    let lab = Lab::new(&["alice"]);
    let job = lab.job();
    let job = job.to_str().unwrap();
    // Every interface at once would take any Host: refused, with the way to do it instead.
    let out = lab.mailferry(&["serve", job, "--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("0.0.0.0:0")
            && err.contains("--listen 192.0.2.10:8025")
            && err.contains("ssh -L"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "nothing listened");

    // One interface's address: served, with a warning on standard error.
    let ip = non_loopback_ipv4();
    let mut child = lab
        .command(&["serve", job, "--listen", &format!("{ip}:0")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("Open ")
        .expect("Open URL")
        .to_string();
    let (base, token) = url.split_once("/?token=").unwrap();
    assert!(base.starts_with(&format!("http://{ip}:")), "{url}");
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    let cookie = format!("mailferry_{port}={token}");
    assert_eq!(
        http_at(&ip, port, "GET", "/api/job", &[("Cookie", &cookie)], "").0,
        200
    );
    // Still locked to its own host name: another one is refused.
    assert_eq!(
        http_at(
            &ip,
            port,
            "GET",
            "/api/job",
            &[
                ("Cookie", &cookie),
                ("Host", &format!("evil.example:{port}"))
            ],
            ""
        )
        .0,
        421
    );
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains(&format!(
            "WARNING: listening on {ip}:{port}, which is not a loopback address"
        )),
        "{err}"
    );
    assert!(status.success(), "SIGTERM stops serve cleanly: {status:?}");
}

#[test]
fn serve_is_locked_to_its_token_host_and_origin() {
    let lab = Lab::new(&["alice"]);
    let job = lab.job();
    let job = job.to_str().unwrap();
    assert!(lab.mailferry(&["match", job]).status.success());
    let mut cmd = lab.command(&["serve", job]);
    cmd.stderr(Stdio::null());
    let s = Served::start(cmd);
    assert!(
        s.base.starts_with("http://127.0.0.1:") && s.token.len() == 64,
        "{}",
        s.url
    );
    let cookie = s.cookie();

    // Without the cookie: pages, API and event stream alike.
    for path in ["/", "/app.js", "/api/entries", "/api/events", "/api/job"] {
        assert_eq!(http(s.port, "GET", path, &[], "").0, 401, "{path}");
    }
    let wrong = format!("mailferry_{}={}", s.port, "0".repeat(64));
    assert_eq!(
        http(s.port, "GET", "/api/entries", &[("Cookie", &wrong)], "").0,
        401
    );
    assert_eq!(http(s.port, "GET", "/?token=nope", &[], "").0, 401);
    let json = [("Content-Type", "application/json")];
    assert_eq!(
        http(
            s.port,
            "POST",
            "/api/skip",
            &json,
            r#"{"ids":["id-alice"]}"#
        )
        .0,
        401
    );

    // The token URL sets the cookie and sends the browser to / without the token.
    let (status, head, _) = http(s.port, "GET", &format!("/?token={}", s.token), &[], "");
    assert_eq!(status, 303, "{head}");
    assert!(head.contains("\r\nlocation: /\r\n"), "{head}");
    let set = head
        .lines()
        .find(|l| l.starts_with("set-cookie:"))
        .expect("a cookie");
    assert!(set.contains(&cookie.to_ascii_lowercase()), "{set}");
    for attr in ["httponly", "samesite=strict", "path=/"] {
        assert!(set.contains(attr), "{set}");
    }

    // With it: everything answers.
    let c = [("Cookie", cookie.as_str())];
    let (status, _, body) = http(s.port, "GET", "/api/entries", &c, "");
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["entries"][0]["id"], "id-alice");
    assert_eq!(http(s.port, "GET", "/", &c, "").0, 200);
    let (status, head, body) = http(s.port, "GET", "/api/events", &c, "");
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(body.contains("event: progress\ndata: {"), "{body}");
    assert!(body.contains("event: entries\ndata: {"), "{body}");

    // A foreign Host (DNS rebinding) is refused even with the cookie; localhost is fine.
    let evil = format!("evil.example:{}", s.port);
    let h = [("Cookie", cookie.as_str()), ("Host", evil.as_str())];
    assert_eq!(http(s.port, "GET", "/api/entries", &h, "").0, 421);
    let local = format!("localhost:{}", s.port);
    let h = [("Cookie", cookie.as_str()), ("Host", local.as_str())];
    assert_eq!(http(s.port, "GET", "/api/entries", &h, "").0, 200);

    // A state-changing request from another origin is refused, and nothing changes.
    let post = [
        ("Cookie", cookie.as_str()),
        ("Content-Type", "application/json"),
        ("Origin", "http://evil.example"),
    ];
    assert_eq!(
        http(
            s.port,
            "POST",
            "/api/skip",
            &post,
            r#"{"ids":["id-alice"]}"#
        )
        .0,
        403
    );
    let (_, status_json) = lab.json(&["status", job]);
    assert_eq!(status_json["entries"][0]["origin"], "csv");
    // A form (not JSON) cannot change anything either.
    let form = [("Cookie", cookie.as_str()), ("Content-Type", "text/plain")];
    assert_eq!(
        http(
            s.port,
            "POST",
            "/api/skip",
            &form,
            r#"{"ids":["id-alice"]}"#
        )
        .0,
        415
    );
    // The console's own origin is fine.
    let own = format!("http://127.0.0.1:{}", s.port);
    let post = [
        ("Cookie", cookie.as_str()),
        ("Content-Type", "application/json"),
        ("Origin", own.as_str()),
    ];
    let (status, _, body) = http(
        s.port,
        "POST",
        "/api/skip",
        &post,
        r#"{"ids":["id-alice"]}"#,
    );
    assert_eq!(status, 200, "{body}");
    let (_, status_json) = lab.json(&["status", job]);
    assert_eq!(status_json["entries"][0]["origin"], "skip");
    // An unknown entry is bad input.
    let (status, _, body) = http(s.port, "POST", "/api/skip", &post, r#"{"ids":["nobody"]}"#);
    assert_eq!(
        (status, body.contains("No entry has the ID")),
        (400, true),
        "{body}"
    );
}

const USERS: [&str; 6] = ["alice", "bob", "carol", "dave", "erin", "frank"];

/// The domain-switch story of the directories test, smaller: after discovery and matching,
/// alice and bob changed domain in the source directory, frank left it, and alice changed
/// domain in the target directory too.
struct World {
    dir: tempfile::TempDir,
    old_ldap: Slapd,
    new_ldap: Slapd,
    source: Dovecot,
    _target: Dovecot,
}

impl World {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mailferry"));
        c.args(args)
            .env("MF_TEST_ADMIN_PW", ADMIN_PW)
            .env("MF_OLD_LDAP_PW", self.old_ldap.admin_password())
            .env("MF_NEW_LDAP_PW", self.new_ldap.admin_password())
            .current_dir(self.dir.path());
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.command(args).output().unwrap();
        assert!(
            out.status.success(),
            "mailferry {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn job(&self) -> String {
        self.dir.path().join("job.toml").display().to_string()
    }
}

fn world() -> World {
    let mut old = SlapdConfig::new("dc=old,dc=example");
    let people = "ou=people,dc=old,dc=example";
    for u in USERS {
        old.seed.push_str(&person_ldif(
            people,
            u,
            &format!("{u} person"),
            &format!("{u}@old.example"),
            &[],
            "x",
        ));
    }
    let mut new = SlapdConfig::new("dc=new,dc=example");
    let npeople = "ou=people,dc=new,dc=example";
    for (uid, mail, aliases) in [
        ("alice", "alice@new.example", vec![]),
        ("robert", "robert@new.example", vec!["bob@old.example"]),
        ("esmith", "e.smith@new.example", vec![]),
        ("frank", "frank@new.example", vec![]),
    ] {
        new.seed
            .push_str(&person_ldif(npeople, uid, uid, mail, &aliases, "x"));
    }
    let old_ldap = Slapd::start(old);
    let new_ldap = Slapd::start(new);
    let source = Dovecot::start(DovecotConfig::new(&USERS));
    let mut tcfg = DovecotConfig::new(&[]);
    tcfg.ldap_users = Some(LdapUsers::from_slapd(&new_ldap));
    let target = Dovecot::start(tcfg);
    let dir = tempfile::tempdir().unwrap();
    let directory = |side: &str, l: &Slapd, var: &str| {
        format!(
            "[{side}.directory]\nkind = \"ldap\"\nurl = \"{}\"\nsecurity = \"plain\"\n\
             bind_dn = \"{}\"\nbind_password = {{ env = \"{var}\" }}\nbase = \"{}\"\n\
             filter = \"(objectClass=inetOrgPerson)\"\nalias_attribute = \"mailLocalAddress\"\n\n",
            l.url(),
            l.admin_dn(),
            l.people()
        )
    };
    let imap = |side: &str, d: &Dovecot| {
        format!(
            "[{side}]\nkind = \"imap\"\nhost = \"{}\"\nport = {}\nsecurity = \"plain\"\n\
             allow_plain = true\nauth = \"admin\"\nadmin_user = \"admin\"\n\
             admin_password = {{ env = \"MF_TEST_ADMIN_PW\" }}\nadmin_login = \"master-separator\"\n\n",
            d.host(),
            d.port()
        )
    };
    let job = format!(
        "name = \"web console\"\n\n{}{}{}{}[target.create]\nbase = \"{}\"\ndomain = \"new.example\"\n\
         object_classes = [\"inetOrgPerson\"]\n",
        imap("source", &source),
        directory("source", &old_ldap, "MF_OLD_LDAP_PW"),
        imap("target", &target),
        directory("target", &new_ldap, "MF_NEW_LDAP_PW"),
        new_ldap.people()
    );
    std::fs::write(dir.path().join("job.toml"), job).unwrap();
    let w = World {
        dir,
        old_ldap,
        new_ldap,
        source,
        _target: target,
    };
    let job = w.job();
    w.ok(&["discover", &job]);
    w.ok(&[
        "match",
        &job,
        "--set",
        "erin@old.example=e.smith@new.example",
    ]);
    // alice (same local part), bob (robert has his old address), frank; carol and dave not.
    let out = w.ok(&["match", &job, "--auto"]);
    assert!(out.contains("Automatic matching: 3 matched"), "{out}");
    w.ok(&["match", &job, "--create", "carol"]);
    // alice gets enough mail (12 MB) that the pass takes a few seconds to watch.
    fill(
        &w.source,
        "alice",
        "INBOX",
        &(0..1000).map(|i| generated(i, 12_000)).collect::<Vec<_>>(),
    );
    fill(
        &w.source,
        "bob",
        "INBOX",
        &(0..20).map(|i| generated(i, 2_000)).collect::<Vec<_>>(),
    );

    for u in ["alice", "bob"] {
        w.old_ldap.modify(&format!(
            "dn: uid={u},{}\nchangetype: modify\nreplace: mail\nmail: {u}@legacy.example\n",
            w.old_ldap.people()
        ));
    }
    w.old_ldap.modify(&format!(
        "dn: uid=frank,{}\nchangetype: delete\n",
        w.old_ldap.people()
    ));
    w.new_ldap.modify(&format!(
        "dn: uid=alice,{}\nchangetype: modify\nreplace: mail\nmail: alice@corp.example\n",
        w.new_ldap.people()
    ));
    w
}

/// Where the screenshots go: `docs/screenshots` when `MAILFERRY_SCREENSHOTS=docs` (to renew
/// the README's pictures), otherwise a folder under the system's temp dir, so a test run
/// leaves the checkout as it was.
fn screenshots() -> PathBuf {
    let dir = if std::env::var("MAILFERRY_SCREENSHOTS").as_deref() == Ok("docs") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots")
    } else {
        std::env::temp_dir().join("mailferry-screenshots")
    };
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// The entry IDs of the rows marked selected, in the grid's order.
fn selected(b: &Browser) -> Vec<String> {
    let v = b
        .execute(
            "return [...document.querySelectorAll('tr[data-entry-id][aria-selected=\"true\"]')]\
             .map(r => r.dataset.entryId);",
        )
        .unwrap();
    serde_json::from_value(v).unwrap()
}

/// Clicks an entry's row (its target cell), with a modifier or not. The grid is drawn again
/// after every click and whenever live updates arrive, so the row is found afresh, and found
/// again if it was redrawn between finding and clicking.
fn click_row(b: &Browser, id: &str, m: Option<Modifier>) {
    let css = format!("tr[data-entry-id=\"{id}\"] td:nth-child(3)");
    for attempt in 0.. {
        let e = b.find(&css).unwrap();
        let r = match m {
            Some(m) => b.click_with(&e, m),
            None => b.click(&e),
        };
        match r {
            Ok(()) => return,
            Err(err) if err.0.contains("stale element") && attempt < 5 => {}
            Err(err) => panic!("click {id}: {err}"),
        }
    }
}

#[test]
fn console_selects_refreshes_and_migrates_live() {
    console_story(Kind::Chromium);
}

/// The same story in Firefox ESR (driven over Marionette): the page's selection gestures,
/// dialogs, event stream and reports work there too.
#[test]
fn console_selects_refreshes_and_migrates_live_in_firefox() {
    console_story(Kind::Firefox);
}

fn console_story(kind: Kind) {
    // The committed screenshots are Chromium's; Firefox's go to the temp dir, to look at.
    let shots = match kind {
        Kind::Chromium => screenshots(),
        Kind::Firefox => {
            let d = std::env::temp_dir().join("mailferry-screenshots/firefox");
            std::fs::create_dir_all(&d).expect("screenshot dir");
            d
        }
    };
    let w = world();
    let job = w.job();
    let status: Value = serde_json::from_str(&w.ok(&["status", &job, "--json"])).unwrap();
    let id_of: BTreeMap<String, String> = status["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["source"]["login"].as_str().unwrap().to_string(),
                e["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let ids = |users: &[&str]| -> Vec<String> { users.iter().map(|u| id_of[*u].clone()).collect() };

    let mut cmd = w.command(&["serve", &job]);
    cmd.stderr(Stdio::null());
    let s = Served::start(cmd);
    let b = Browser::start_kind(kind).unwrap_or_else(|e| panic!("{e}"));
    b.goto(&s.url).unwrap();
    assert_eq!(
        b.url().unwrap(),
        format!("{}/", s.base),
        "the token leaves the address bar"
    );
    let cookies = b.cookies().unwrap();
    assert!(
        cookies
            .iter()
            .any(|c| c["name"] == format!("mailferry_{}", s.port)
                && c["httpOnly"] == true
                && c["sameSite"] == "Strict"),
        "{cookies:?}"
    );
    if let Err(e) = b.wait_for("tr[data-entry-id]", Duration::from_secs(10)) {
        let _ = b.screenshot_png(Path::new("/tmp/mailferry-web-failure.png"));
        panic!(
            "{e}; the page says: {}",
            b.execute("return document.body.innerText.slice(0, 2000);")
                .unwrap_or_default()
        );
    }
    // A marker that a reload would lose: the grid must update in place.
    b.execute("window.__stayed = true; return null;").unwrap();
    let rows = b.find_all("tr[data-entry-id]").unwrap();
    assert_eq!(rows.len(), 6);
    let order: Vec<String> = serde_json::from_value(
        b.execute("return [...document.querySelectorAll('tr[data-entry-id]')].map(r => r.dataset.entryId);")
            .unwrap(),
    )
    .unwrap();
    // Sorted by the source's primary address: alice, bob, carol, dave, erin, frank.
    assert_eq!(order, ids(&USERS));

    // Click selects one; Ctrl+click adds another.
    click_row(&b, &id_of["alice"], None);
    assert_eq!(selected(&b), ids(&["alice"]));
    click_row(&b, &id_of["carol"], Some(Modifier::Ctrl));
    assert_eq!(selected(&b), ids(&["alice", "carol"]));
    // Ctrl+click again takes it out.
    click_row(&b, &id_of["carol"], Some(Modifier::Ctrl));
    assert_eq!(selected(&b), ids(&["alice"]));
    // Shift+click selects the range from the last clicked row.
    click_row(&b, &id_of["bob"], None);
    click_row(&b, &id_of["erin"], Some(Modifier::Shift));
    assert_eq!(selected(&b), ids(&["bob", "carol", "dave", "erin"]));
    // A row's checkbox toggles it alone.
    b.click(
        &b.find(&format!(
            "tr[data-entry-id=\"{}\"] input[type=checkbox]",
            id_of["frank"]
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        selected(&b),
        ids(&["bob", "carol", "dave", "erin", "frank"])
    );
    // Ctrl+A selects every row shown; with a filter, only those shown.
    b.keys_ctrl_a().unwrap();
    assert_eq!(selected(&b), ids(&USERS));
    click_row(&b, &id_of["alice"], None);
    b.send_keys(&b.find("#filter").unwrap(), "old.example")
        .unwrap();
    b.wait_until(
        "return document.querySelectorAll('tr[data-entry-id]').length === 6;",
        Duration::from_secs(3),
    )
    .unwrap();
    b.execute("document.getElementById('filter').value = 'ar'; document.getElementById('filter').dispatchEvent(new Event('input')); return null;")
        .unwrap();
    // "ar" is in carol alone.
    let shown: Vec<String> = serde_json::from_value(
        b.execute("return [...document.querySelectorAll('tr[data-entry-id]')].map(r => r.dataset.entryId);")
            .unwrap(),
    )
    .unwrap();
    b.click(&b.find("#grid").unwrap()).unwrap();
    b.keys_ctrl_a().unwrap();
    let mut want = shown.clone();
    want.sort();
    let mut got = selected(&b);
    got.sort();
    assert_eq!(got, want, "Ctrl+A selects the rows shown");
    let count = b.text(&b.find("#selection-count").unwrap()).unwrap();
    assert!(
        count.starts_with(&format!("{} of 6 selected", shown.len() + 1)),
        "{count}: alice stays selected, hidden"
    );
    b.execute("document.getElementById('filter').value = ''; document.getElementById('filter').dispatchEvent(new Event('input')); return null;")
        .unwrap();

    // Refresh email addresses on every entry.
    click_row(&b, &id_of["alice"], None);
    b.keys_ctrl_a().unwrap();
    assert_eq!(selected(&b).len(), 6);
    b.screenshot_png(&shots.join("jobs.png")).unwrap();
    b.click(&b.find("#btn-refresh").unwrap()).unwrap();
    let dialog = b
        .wait_for("#refresh-dialog[role=dialog]", Duration::from_secs(30))
        .unwrap();
    assert_eq!(
        b.text(&b.find("#refresh-dialog h2").unwrap()).unwrap(),
        "Refresh email addresses — results"
    );
    let _ = dialog;
    let counts = |side: &str| -> BTreeMap<String, u64> {
        let v = b
            .execute(&format!(
                "return Object.fromEntries([...document.querySelectorAll('#refresh-dialog [data-side=\"{side}\"] [data-count]')]\
                 .map(c => [c.dataset.count, Number(c.textContent)]));"
            ))
            .unwrap();
        serde_json::from_value(v).unwrap()
    };
    let labels = |side: &str| -> Vec<String> {
        let v = b
            .execute(&format!(
                "return [...document.querySelectorAll('#refresh-dialog [data-side=\"{side}\"] tr')]\
                 .map(r => r.cells[0].textContent + ' ' + r.cells[1].textContent);"
            ))
            .unwrap();
        serde_json::from_value(v).unwrap()
    };
    let m = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
    };
    // Source: alice and bob changed domain, frank left; carol, dave and erin did not change.
    assert_eq!(
        counts("source"),
        m(&[("refreshed", 2), ("not_changed", 3), ("missing", 1)])
    );
    // Target: alice changed; bob (robert) and frank not; erin manual; carol not created;
    // dave is unmatched and gets no target result.
    assert_eq!(
        counts("target"),
        m(&[
            ("refreshed", 1),
            ("not_changed", 2),
            ("missing", 0),
            ("manual", 1),
            ("not_created", 1)
        ])
    );
    assert_eq!(
        labels("source"),
        [
            "✓ Refreshed",
            "= Not changed",
            "✖ Not refreshed - missing mailboxes"
        ]
    );
    assert_eq!(
        labels("target"),
        [
            "✓ Refreshed",
            "= Not changed",
            "✖ Not refreshed - missing mailboxes",
            "⚠ Not refreshed - addresses entered manually",
            "⚠ Not refreshed - mailboxes not created yet"
        ]
    );
    // The CLI's record of the same run says the same.
    let cli: Value =
        serde_json::from_str(&w.ok(&["report", &job, "--kind", "refresh", "--format", "json"]))
            .unwrap();
    for side in ["source", "target"] {
        let cli_counts: BTreeMap<String, u64> =
            serde_json::from_value(cli[side]["counts"].clone()).unwrap();
        let shown: BTreeMap<String, u64> = counts(side);
        for (k, n) in &shown {
            assert_eq!(cli_counts[k], *n, "{side} {k}");
        }
    }
    assert_eq!(cli["removed_next"], serde_json::json!([id_of["frank"]]));
    let removed = b.text(&b.find("#removed-next").unwrap()).unwrap();
    assert!(
        removed.contains("frank@old.example") && removed.contains(&id_of["frank"]),
        "{removed}"
    );
    assert!(
        b.find("#open-report").is_ok()
            && b.find("#refresh-csv").is_ok()
            && b.find("#refresh-json").is_ok()
    );
    b.screenshot_png(&shots.join("refresh-results.png"))
        .unwrap();
    b.click(&b.find("#close-refresh").unwrap()).unwrap();
    b.wait_until(
        "return document.getElementById('overlay').hidden === true;",
        Duration::from_secs(3),
    )
    .unwrap();
    // The grid now shows the refreshed addresses and each side's result.
    b.wait_until(
        &format!(
            "return document.querySelector('tr[data-entry-id=\"{}\"]').textContent.includes('alice@legacy.example');",
            id_of["alice"]
        ),
        Duration::from_secs(5),
    )
    .unwrap();

    // Check connections: the Dashboard shows each check beside its side, and keeps the last
    // result for the next load of the page.
    b.click(&b.find("#btn-check").unwrap()).unwrap();
    b.wait_until(
        "const t = document.getElementById('check-when'); return !!t && t.textContent.startsWith('Last checked');",
        Duration::from_secs(30),
    )
    .unwrap();
    let checks = b.text(&b.find("#check-table").unwrap()).unwrap();
    assert!(
        checks.contains("source") && checks.contains("target") && checks.contains("OK"),
        "{checks}"
    );
    let job_view: Value = serde_json::from_str(
        b.execute_async(
            "const done = arguments[0]; fetch('/api/job').then(r => r.text()).then(done);",
        )
        .unwrap()
        .as_str()
        .unwrap(),
    )
    .unwrap();
    assert!(
        job_view["last_check"]["result"]["servers"].is_array()
            && job_view["last_check"]["at"].is_string(),
        "{job_view}"
    );
    b.click(&b.find("#tab-jobs").unwrap()).unwrap();

    // Start migration on alice and bob; watch the rows turn migrated without a reload.
    click_row(&b, &id_of["alice"], None);
    click_row(&b, &id_of["bob"], Some(Modifier::Ctrl));
    assert_eq!(selected(&b), ids(&["alice", "bob"]));
    b.click(&b.find("#btn-migrate").unwrap()).unwrap();
    let state_of = |u: &str| {
        format!(
            "document.querySelector('tr[data-entry-id=\"{}\"] td[data-col=state]').textContent",
            id_of[u]
        )
    };
    // Live progress in the grid while alice's 1,000 messages copy (queued, then copying;
    // the event stream ticks once a second).
    let saw_progress = b
        .wait_until(
            &format!(
                "const s = {}; return s.includes('copying') || s.includes('queued');",
                state_of("alice")
            ),
            Duration::from_secs(30),
        )
        .is_ok();
    if saw_progress {
        b.screenshot_png(&shots.join("jobs-migrating.png")).unwrap();
    }
    b.click(&b.find("#tab-dashboard").unwrap()).unwrap();
    b.screenshot_png(&shots.join("progress.png")).unwrap();
    b.click(&b.find("#tab-jobs").unwrap()).unwrap();
    b.wait_until(
        &format!(
            "return {}.trim() === 'migrated' && {}.trim() === 'migrated';",
            state_of("alice"),
            state_of("bob")
        ),
        Duration::from_secs(120),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {}",
            b.execute(&format!("return {};", state_of("alice")))
                .unwrap()
        )
    });
    assert_eq!(
        b.execute("return window.__stayed === true;").unwrap(),
        true,
        "no reload"
    );
    assert!(
        saw_progress,
        "the grid showed alice queued or copying before she was migrated"
    );
    // frank's source mailbox was missing: the pass removed him first, and the grid too.
    b.wait_until(
        &format!(
            "return !document.querySelector('tr[data-entry-id=\"{}\"]');",
            id_of["frank"]
        ),
        Duration::from_secs(5),
    )
    .unwrap();
    b.click(&b.find("#tab-dashboard").unwrap()).unwrap();
    b.wait_until(
        "return document.getElementById('overall').textContent.includes('Last pass finished: 2 of 2 mailboxes');",
        Duration::from_secs(5),
    )
    .unwrap();
    let good = b.text(&b.find("#good-summary").unwrap()).unwrap();
    assert_eq!(good, "2 of 5 mailboxes migrated");
    b.screenshot_png(&shots.join("dashboard.png")).unwrap();
    // The CLI agrees.
    let status: Value = serde_json::from_str(&w.ok(&["status", &job, "--json"])).unwrap();
    for e in status["entries"].as_array().unwrap() {
        let migrated = e["state"] == "migrated";
        assert_eq!(
            migrated,
            e["id"] == id_of["alice"] || e["id"] == id_of["bob"],
            "{e}"
        );
    }
    // The grid's Size is the bytes the ledger has copied, as `status` says.
    let alice = status["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id_of["alice"])
        .unwrap();
    let size = alice["size"].as_u64().unwrap();
    assert!(size > 1_000_000, "{alice}");
    b.click(&b.find("#tab-jobs").unwrap()).unwrap();
    b.wait_until(
        &format!(
            "return !!document.querySelector('tr[data-entry-id=\"{}\"] td[title=\"{size} bytes copied\"]');",
            id_of["alice"]
        ),
        Duration::from_secs(5),
    )
    .unwrap();
    b.click(&b.find("#tab-reports").unwrap()).unwrap();
    // Every run is listed, as `report --list` lists it; Show opens that run's report.
    let listed: Value = serde_json::from_str(&w.ok(&["report", &job, "--list", "--json"])).unwrap();
    let runs = listed["runs"].as_array().unwrap().clone();
    let kinds: Vec<&str> = runs.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert!(
        kinds.contains(&"migration") && kinds.contains(&"refresh"),
        "{listed}"
    );
    b.wait_until(
        &format!(
            "return document.querySelectorAll('#runs tbody tr').length === {};",
            runs.len()
        ),
        Duration::from_secs(5),
    )
    .unwrap();
    let migration = runs.iter().find(|r| r["kind"] == "migration").unwrap();
    let n = migration["run"].as_i64().unwrap();
    b.click(
        &b.find(&format!(
            "#runs button[data-show-kind=migration][data-show-run=\"{n}\"]"
        ))
        .unwrap(),
    )
    .unwrap();
    b.wait_until(
        &format!(
            "const d = document.getElementById('report-migration').contentDocument; \
             return !!d && !!d.body && d.body.textContent.includes('Run {n}:') \
             && document.getElementById('migration-json').href.endsWith('&run={n}');"
        ),
        Duration::from_secs(5),
    )
    .unwrap();
    let title = b.text(&b.find("#migration-report-title").unwrap()).unwrap();
    assert!(title.contains(&format!("run {n}")), "{title}");
    // The page's JSON of that run is the CLI's `report --run N`.
    // (As text: a round trip through the page's numbers would turn 2.0 into 2.)
    let page = b
        .execute_async(&format!(
            "const done = arguments[0]; \
             fetch('/api/reports/migration?format=json&run={n}').then(r => r.text()).then(done);"
        ))
        .unwrap();
    let page: Value = serde_json::from_str(page.as_str().unwrap()).unwrap();
    let cli: Value = serde_json::from_str(&w.ok(&[
        "report",
        &job,
        "--kind",
        "migration",
        "--run",
        &n.to_string(),
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(page, cli);
    assert_eq!(page["run"], n);
    std::thread::sleep(Duration::from_millis(300));
    b.screenshot_png(&shots.join("reports.png")).unwrap();

    // Match: dave has no target; "Create on the target" marks his mailbox for creation, and
    // a stage is given to dave and bob, as `match --create` and `match --stage` do.
    b.click(&b.find("#tab-jobs").unwrap()).unwrap();
    click_row(&b, &id_of["dave"], None);
    b.click(&b.find("#btn-match").unwrap()).unwrap();
    b.wait_for("#match-dialog:not([hidden])", Duration::from_secs(3))
        .unwrap();
    b.click(&b.find("#match-create").unwrap()).unwrap();
    b.wait_until(
        &format!(
            "return document.querySelector('tr[data-entry-id=\"{}\"]').textContent.includes('pending-creation');",
            id_of["dave"]
        ),
        Duration::from_secs(5),
    )
    .unwrap();
    click_row(&b, &id_of["dave"], None);
    click_row(&b, &id_of["bob"], Some(Modifier::Ctrl));
    b.click(&b.find("#btn-match").unwrap()).unwrap();
    b.wait_for("#match-dialog:not([hidden])", Duration::from_secs(3))
        .unwrap();
    b.send_keys(&b.find("#match-stage").unwrap(), "2").unwrap();
    b.click(&b.find("#match-stage-set").unwrap()).unwrap();
    let status_of =
        || -> Value { serde_json::from_str(&w.ok(&["status", &job, "--json"])).unwrap() };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let st = status_of();
        let of = |u: &str| {
            st["entries"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["id"] == id_of[u])
                .cloned()
                .unwrap()
        };
        let (dave, bob) = (of("dave"), of("bob"));
        if dave["stage"] == 2 && bob["stage"] == 2 {
            assert_eq!(dave["origin"], "pending-creation", "{dave}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stage 2 not set: {dave} {bob}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The target directory of the reconfigure test: never reached (`status` needs no directory),
/// commented so that the test can see the comments kept.
const TARGET_DIRECTORY: &str = "# The new directory, bound read-only.\n[target.directory]\n\
    kind = \"ldap\"\nurl = \"ldap://127.0.0.1:9\"\nsecurity = \"plain\"   # loopback only\n\
    bind_dn = \"cn=reader,dc=new,dc=example\"\nbind_password = { env = \"MF_NEW_LDAP_PW\" }\n\
    base = \"ou=people,dc=new,dc=example\"   # where the staff are\n";

/// Sets an input of the page to `text` as typing would (the old text cleared first).
fn type_into(b: &Browser, css: &str, text: &str) {
    b.execute_with(
        "const e = document.querySelector(arguments[0]); e.value = ''; return null;",
        &[serde_json::json!(css)],
    )
    .unwrap();
    b.send_keys(&b.find(css).unwrap(), text).unwrap();
}

/// A job with `extra` (a directory) written after its connections, matched, and `serve` on
/// it; the file's text as written.
fn serve_job_with(extra: &str) -> (Lab, Served, String) {
    let lab = Lab::new(&["alice"]);
    let job = lab.job();
    let job = job.to_str().unwrap();
    assert!(lab.mailferry(&["match", job]).status.success());
    lab.write_job(extra);
    let before = std::fs::read_to_string(lab.job()).unwrap();
    let mut cmd = lab.command(&["serve", job]);
    cmd.stderr(Stdio::null());
    let s = Served::start(cmd);
    (lab, s, before)
}

/// Saves the form of `section` and waits until it says it saved.
fn save_form(b: &Browser, section: &str) {
    b.click(
        &b.find(&format!(
            "form[data-section=\"{section}\"] button[type=submit]"
        ))
        .unwrap(),
    )
    .unwrap();
    b.wait_until(
        &format!(
            "return document.querySelector('form[data-section=\"{section}\"] .form-status').textContent.startsWith('Saved');"
        ),
        Duration::from_secs(10),
    )
    .unwrap();
}

/// Waits for the error shown beside the field `key` (its element is there, empty, before the
/// answer comes) and returns it.
fn field_error(b: &Browser, key: &str) -> String {
    let css = format!("[data-field=\"{key}\"] .field-error");
    b.wait_until(
        &format!("return document.querySelector('{css}').textContent !== '';"),
        Duration::from_secs(10),
    )
    .unwrap();
    b.text(&b.find(&css).unwrap()).unwrap()
}

#[test]
fn connection_forms_refuse_a_bad_value_and_write_a_good_one_keeping_comments() {
    let (lab, s, before) = serve_job_with(TARGET_DIRECTORY);
    let job = lab.job();
    let job = job.to_str().unwrap();

    // The form posts under the same locks as every other change.
    let cookie = s.cookie();
    let evil = [
        ("Cookie", cookie.as_str()),
        ("Content-Type", "application/json"),
        ("Origin", "http://evil.example"),
    ];
    let change = r#"{"section":"source","fields":{"port":"1"}}"#;
    assert_eq!(
        http(s.port, "POST", "/api/reconfigure", &evil, change).0,
        403
    );
    let plain = [("Cookie", cookie.as_str()), ("Content-Type", "text/plain")];
    assert_eq!(
        http(s.port, "POST", "/api/reconfigure", &plain, change).0,
        415
    );
    assert_eq!(std::fs::read_to_string(lab.job()).unwrap(), before);

    let b = Browser::start().unwrap_or_else(|e| panic!("{e}"));
    b.goto(&s.url).unwrap();
    b.wait_for("tr[data-entry-id]", Duration::from_secs(10))
        .unwrap();
    b.click(&b.find("#tab-connections").unwrap()).unwrap();
    let port = "form[data-section=\"source\"] [data-field=\"source.port\"] input";
    b.wait_for(port, Duration::from_secs(10)).unwrap();
    // The secret is shown as its reference, never as a password.
    let secret = b
        .attr(&b.find("#f-source-admin_password").unwrap(), "value")
        .unwrap();
    assert_eq!(secret.as_deref(), Some("MF_TEST_ADMIN_PW"));

    // A port out of range: the error shows beside the field, and the file is as it was.
    type_into(&b, port, "99999");
    b.click(
        &b.find("form[data-section=\"source\"] button[type=submit]")
            .unwrap(),
    )
    .unwrap();
    let text = field_error(&b, "source.port");
    assert!(text.contains("65535"), "{text}");
    assert_eq!(
        b.execute(
            "return [...document.querySelectorAll('.field-error')].filter(e => e.textContent).length;"
        )
        .unwrap(),
        1,
        "only the port is marked"
    );
    assert_eq!(std::fs::read_to_string(lab.job()).unwrap(), before);
    b.screenshot_png(&screenshots().join("connections.png"))
        .unwrap();

    // A good change: the target directory's base. The file changes in that value only.
    let base = "#f-target-directory-base";
    type_into(&b, base, "ou=staff,dc=new,dc=example");
    save_form(&b, "target.directory");
    let after = std::fs::read_to_string(lab.job()).unwrap();
    assert_eq!(
        after,
        before.replace(
            "base = \"ou=people,dc=new,dc=example\"   # where the staff are",
            "base = \"ou=staff,dc=new,dc=example\"   # where the staff are"
        )
    );
    b.screenshot_png(&screenshots().join("connections-saved.png"))
        .unwrap();
    // The CLI reads the edited job as any other.
    let (code, status) = lab.json(&["status", job]);
    assert_eq!(code, 0, "{status}");
    assert_eq!(status["entries"][0]["id"], "id-alice");
}

const GRAPH_DIRECTORY: &str = "# Entra ID, read through Microsoft Graph.\n[target.directory]\n\
    kind = \"graph\"\ngraph_url = \"http://127.0.0.1:9/v1.0\"\nallow_plain = true\n\n\
    [target.directory.oauth2]\ntenant = \"contoso-test\"\nclient_id = \"graph-app\"\n\
    client_secret = { env = \"MF_GRAPH_SECRET\" }   # the app's secret\n\
    token_url = \"http://127.0.0.1:9/token\"\nallow_plain = true\n";

/// A Graph directory has Graph's keys in the console and its application's own form, each
/// validated as the job file is and written in place.
#[test]
fn a_graph_directory_and_its_application_are_edited_from_the_console() {
    let (lab, s, before) = serve_job_with(GRAPH_DIRECTORY);
    let job = lab.job();
    let job = job.to_str().unwrap();
    let b = Browser::start().unwrap_or_else(|e| panic!("{e}"));
    b.goto(&s.url).unwrap();
    b.wait_for("tr[data-entry-id]", Duration::from_secs(10))
        .unwrap();
    b.click(&b.find("#tab-connections").unwrap()).unwrap();
    b.wait_for(
        "form[data-section=\"target.directory.oauth2\"] #f-target-directory-oauth2-client_id",
        Duration::from_secs(10),
    )
    .unwrap();
    let count = |css: &str| {
        b.execute_with(
            "return document.querySelectorAll(arguments[0]).length;",
            &[serde_json::json!(css)],
        )
        .unwrap()
    };
    assert_eq!(count("#f-target-directory-graph_url"), 1);
    assert_eq!(count("#f-target-directory-base"), 0, "no LDAP keys");
    assert_eq!(count("#f-target-directory-oauth2-mechanism"), 0);
    assert_eq!(
        count("form[data-section=\"source.directory.oauth2\"]"),
        0,
        "the source's directory is not Graph"
    );
    let secret = b
        .attr(
            &b.find("#f-target-directory-oauth2-client_secret").unwrap(),
            "value",
        )
        .unwrap();
    assert_eq!(secret.as_deref(), Some("MF_GRAPH_SECRET"));

    // An LDAP filter: refused beside the field, in the job file's words; nothing written.
    let filter = "#f-target-directory-filter";
    let save = "form[data-section=\"target.directory\"] button[type=submit]";
    type_into(&b, filter, "(objectClass=user)");
    b.click(&b.find(save).unwrap()).unwrap();
    let text = field_error(&b, "target.directory.filter");
    assert!(text.contains("OData"), "{text}");
    assert_eq!(std::fs::read_to_string(lab.job()).unwrap(), before);

    type_into(
        &b,
        filter,
        "accountEnabled eq true and department eq 'Sales'",
    );
    save_form(&b, "target.directory");
    // The application's client ID, in its own table; the IMAP login stays the admin's.
    type_into(&b, "#f-target-directory-oauth2-client_id", "graph-app-2");
    save_form(&b, "target.directory.oauth2");
    b.screenshot_png(&screenshots().join("connections-graph.png"))
        .unwrap();
    let after = std::fs::read_to_string(lab.job()).unwrap();
    assert_eq!(
        after,
        before
            .replace(
                "allow_plain = true\n\n[target.directory.oauth2]",
                "allow_plain = true\nfilter = \"accountEnabled eq true and department eq 'Sales'\"\n\n[target.directory.oauth2]"
            )
            .replace("client_id = \"graph-app\"", "client_id = \"graph-app-2\"")
    );
    let (code, status) = lab.json(&["status", job]);
    assert_eq!(code, 0, "{status}");
}

/// A `migrate` run from a terminal shows in the console while it runs (from the leases and
/// progress it writes to the state), and SIGTERM stops `serve` cleanly.
#[test]
fn a_migrate_process_shows_live_in_the_console_and_sigterm_stops_serve() {
    let lab = Lab::new(&["alice"]);
    fill(
        &lab.source,
        "alice",
        "INBOX",
        &(0..3000).map(|i| generated(i, 8_000)).collect::<Vec<_>>(),
    );
    let jobp = lab.job();
    let job = jobp.to_str().unwrap();
    assert!(lab.mailferry(&["match", job]).status.success());
    let mut cmd = lab.command(&["serve", job]);
    cmd.stderr(Stdio::null());
    let mut s = Served::start(cmd);
    let cookie = s.cookie();
    let get = |path: &str| -> Value {
        let (status, _, body) = http(s.port, "GET", path, &[("Cookie", &cookie)], "");
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    };

    let mut migrate = lab
        .command(&["migrate", job, "--all"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // While it runs, the console shows the pass: held by the other process, with a count.
    let start = std::time::Instant::now();
    let mut seen: Option<Value> = None;
    while start.elapsed() < Duration::from_secs(120) {
        let p = get("/api/progress");
        let e = &p["entries"]["id-alice"];
        if p["running"] == true && e["state"] == "copying" && e["copied"].as_u64() > Some(0) {
            seen = Some(p.clone());
            break;
        }
        if migrate.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let seen = seen.expect("the console never showed the terminal's pass with a count");
    let by = seen["entries"]["id-alice"]["by"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        by.ends_with(&format!(":{}", migrate.id())),
        "held by {by}, not the migrate process {}",
        migrate.id()
    );
    assert!(
        seen["overall"]["planned_messages"].as_u64() == Some(3000),
        "{seen:#}"
    );
    assert!(migrate.wait().unwrap().success());
    // Finished: the grid's entry says migrated, the pass is gone from the progress.
    let entries = get("/api/entries");
    assert_eq!(entries["entries"][0]["state"], "migrated", "{entries:#}");
    let p = get("/api/progress");
    assert_eq!(p["elsewhere"], 0, "{p:#}");

    // SIGTERM: serve stops by itself, exit status 0.
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) }, 0);
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "serve did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

/// The drill-down behind a failed count: a target with a small quota refuses some of ann's
/// messages; after a migration started in the console, ann's Failed count opens a dialog
/// listing every refused message with Dovecot's words, exactly as the migration report does.
#[test]
fn a_failed_count_opens_the_messages_not_copied_with_the_servers_words() {
    let mut dst = DovecotConfig::new(&["ann", "bob"]);
    dst.quota_bytes = Some(60_000);
    let lab = Lab::with(DovecotConfig::new(&["ann", "bob"]), dst);
    // 100 kB for ann against 60 kB of quota; bob's 6 kB fit.
    fill(
        &lab.source,
        "ann",
        "INBOX",
        &(0..20).map(|i| generated(i, 5_000)).collect::<Vec<_>>(),
    );
    fill(
        &lab.source,
        "bob",
        "INBOX",
        &(0..3).map(|i| generated(i, 2_000)).collect::<Vec<_>>(),
    );
    let jobp = lab.job();
    let job = jobp.to_str().unwrap();
    assert!(lab.mailferry(&["match", job]).status.success());
    let mut cmd = lab.command(&["serve", job]);
    cmd.stderr(Stdio::null());
    let s = Served::start(cmd);
    let b = Browser::start().unwrap_or_else(|e| panic!("{e}"));
    b.goto(&s.url).unwrap();
    b.wait_for("tr[data-entry-id]", Duration::from_secs(10))
        .unwrap();
    // No pass yet: no count to open.
    assert!(b.find_all("button[data-failures]").unwrap().is_empty());

    click_row(&b, "id-ann", None);
    b.keys_ctrl_a().unwrap();
    assert_eq!(selected(&b), ["id-ann", "id-bob"]);
    b.click(&b.find("#btn-migrate").unwrap()).unwrap();
    let state_of = |id: &str| {
        format!(
            "document.querySelector('tr[data-entry-id=\"{id}\"] td[data-col=state]').textContent.trim()"
        )
    };
    b.wait_until(
        &format!(
            "return {} === 'partial' && {} === 'migrated';",
            state_of("id-ann"),
            state_of("id-bob")
        ),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {}",
            b.execute("return document.getElementById('rows').innerText;")
                .unwrap()
        )
    });

    // What the CLI's migration report says of ann.
    let report: Value = serde_json::from_str(
        &String::from_utf8(
            lab.mailferry(&["report", job, "--kind", "migration", "--format", "json"])
                .stdout,
        )
        .unwrap(),
    )
    .unwrap();
    let ann = report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "id-ann")
        .unwrap()
        .clone();
    let errors = ann["errors"].as_array().unwrap();
    let failed = ann["failed"].as_u64().unwrap();
    assert!(failed > 0 && errors.len() as u64 == failed, "{ann:#}");

    // bob copied everything: his count is a plain 0. ann's count is a button.
    assert!(
        b.find_all("tr[data-entry-id=\"id-bob\"] button[data-failures]")
            .unwrap()
            .is_empty()
    );
    let button = "tr[data-entry-id=\"id-ann\"] button[data-failures]";
    assert_eq!(
        b.text(&b.find(button).unwrap()).unwrap(),
        failed.to_string()
    );
    for attempt in 0.. {
        match b.click(&b.find(button).unwrap()) {
            Ok(()) => break,
            Err(err) if err.0.contains("stale element") && attempt < 5 => {}
            Err(err) => panic!("click the failed count: {err}"),
        }
    }
    b.wait_until(
        "return !document.getElementById('failures-dialog').hidden \
         && document.querySelectorAll('#failures-table tbody tr').length > 0;",
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(b.find("#failures-dialog[role=dialog]").is_ok());
    // Opening the list leaves the selection as it was.
    assert_eq!(selected(&b), ["id-ann", "id-bob"]);
    let title = b.text(&b.find("#failures-title").unwrap()).unwrap();
    assert!(
        title.contains("ann@old.example") && title.contains("id-ann"),
        "{title}"
    );
    let shown: Vec<Vec<String>> = serde_json::from_value(
        b.execute(
            "return [...document.querySelectorAll('#failures-table tbody tr')]\
             .map(r => [...r.cells].map(c => c.textContent));",
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(shown.len(), errors.len(), "{shown:?}");
    for (row, err) in shown.iter().zip(errors) {
        let [folder, uid, size, message_id, words] = &row[..] else {
            panic!("five columns: {row:?}")
        };
        assert_eq!(folder, "INBOX");
        assert_eq!(uid, &err["uid"].as_u64().unwrap().to_string());
        assert!(size.ends_with("kB"), "{row:?}");
        // `<gen-…>` shows as text: a Message-ID from a server is never markup.
        assert!(message_id.starts_with("<gen-"), "{row:?}");
        assert_eq!(message_id, err["message_id"].as_str().unwrap());
        assert_eq!(words, err["reason"].as_str().unwrap());
        assert!(words.contains("OVERQUOTA"), "{row:?}");
    }
    assert_eq!(
        b.execute(
            "return [...document.querySelectorAll('#failures-table tbody td')]\
             .filter(td => td.children.length > 0).length;"
        )
        .unwrap(),
        0,
        "no element was made of a server's words"
    );
    b.screenshot_png(&screenshots().join("failures.png"))
        .unwrap();
    // Escape closes it.
    b.send_keys(&b.find("#close-failures").unwrap(), "\u{E00C}")
        .unwrap();
    b.wait_until(
        "return document.getElementById('overlay').hidden === true;",
        Duration::from_secs(3),
    )
    .unwrap();

    // The API: an ID is required and must name an entry; bob's list is empty.
    let cookie = s.cookie();
    let c = [("Cookie", cookie.as_str())];
    let (status, _, body) = http(s.port, "GET", "/api/failures?id=id-bob", &c, "");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v, serde_json::json!({"id": "id-bob", "failures": []}));
    let (status, _, body) = http(s.port, "GET", "/api/failures?id=nobody", &c, "");
    assert_eq!(
        (status, body.contains("No entry has the ID")),
        (400, true),
        "{body}"
    );
    assert_eq!(http(s.port, "GET", "/api/failures", &c, "").0, 400);
    assert_eq!(
        http(s.port, "GET", "/api/failures?id=id-ann", &[], "").0,
        401
    );
}

/// What a pass adds to its counts, kept in the state, shows in the console: the Jobs grid
/// row of a mailbox whose custom keywords the target dropped says so (the folders in its
/// title, escaped), and the migration report the Reports page frames has the column.
#[test]
fn keywords_dropped_by_the_target_show_in_the_jobs_grid_and_the_report() {
    let mut dst = DovecotConfig::new(&["erin"]);
    dst.profile = mailferry_testkit::Profile::ExchangeLike;
    let lab = Lab::with(DovecotConfig::new(&["erin"]), dst);
    let job = std::fs::read_to_string(lab.job())
        .unwrap()
        .replace("[target]\n", "[target]\nprofile = \"exchange-online\"\n");
    std::fs::write(lab.job(), job).unwrap();
    let mut msgs: Vec<Msg> = (0..3).map(|i| generated(i, 2_000)).collect();
    for m in &mut msgs {
        m.flags = vec!["$Custom".into(), "\\Seen".into()];
    }
    assert_eq!(fill(&lab.source, "erin", "<b>Notes</b>", &msgs), []);
    let jobp = lab.job();
    let job = jobp.to_str().unwrap();
    assert!(lab.mailferry(&["match", job]).status.success());
    let (code, v) = lab.json(&["migrate", job, "--all"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["entries"][0]["keywords_dropped"][0]["count"], 3, "{v:#}");

    let mut cmd = lab.command(&["serve", job]);
    cmd.stderr(Stdio::null());
    let s = Served::start(cmd);
    let b = Browser::start().unwrap_or_else(|e| panic!("{e}"));
    b.goto(&s.url).unwrap();
    b.wait_for("tr[data-entry-id] .pass-note", Duration::from_secs(10))
        .unwrap();
    let note = b
        .execute(
            "const n = document.querySelector('tr[data-entry-id=\"id-erin\"] [data-keywords-dropped]'); \
             return [n.dataset.keywordsDropped, n.textContent, n.parentElement.title, \
                     n.parentElement.querySelectorAll('b').length];",
        )
        .unwrap();
    assert_eq!(
        note,
        serde_json::json!([
            "3",
            "3 keywords dropped",
            "3 custom keywords dropped (<b>Notes</b> 3)",
            0
        ])
    );

    let cookie = s.cookie();
    let c = [("Cookie", cookie.as_str())];
    let (status, _, html) = http(s.port, "GET", "/api/reports/migration?format=html", &c, "");
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("<th>Keywords dropped</th>")
            && html.contains("<td>3 (&lt;b&gt;Notes&lt;/b&gt; 3)</td>"),
        "{html}"
    );
}
