//! The web console's benchmark (issue 7, "Performance"): a job of 10,000 entries and a ledger
//! of 1,000,000 rows, `mailferry serve` on it, and headless Chromium timing what an admin
//! waits for. Run by `bench/web.sh`, which builds the release binary first; see
//! `bench/README.md`. A benchmark, not a test: it prints figures and judges nothing, except
//! that a step that never finishes stops it.
//!
//! ```sh
//! cargo run --release -p mailferry --example web_bench -- target/release/mailferry
//! ```
//!
//! Environment: `ENTRIES` (default 10000), `LEDGER` (default 1000000), `LOADS` (page loads
//! timed, default 3).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mailferry_testkit::browser::Browser;
use mailferry_testkit::{Slapd, SlapdConfig, person_ldif};
use serde_json::Value;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn mb(n: usize) -> String {
    format!("{:.2} MB", n as f64 / 1e6)
}

/// Prints a figure at once (a long run shows its progress) and keeps it for the table.
struct Figures(Vec<(String, String)>);

impl Figures {
    fn add(&mut self, what: &str, value: String) {
        eprintln!("[web-bench] {what}: {value}");
        self.0.push((what.to_string(), value));
    }
}

fn log(what: &str) {
    eprintln!("[web-bench] {what}");
}

/// A directory of `n` people `userNNNNN` with addresses at `domain`.
fn directory(suffix: &str, domain: &str, n: usize) -> Slapd {
    let mut cfg = SlapdConfig::new(suffix);
    let people = format!("ou=people,{suffix}");
    for i in 0..n {
        let u = format!("user{i:05}");
        cfg.seed.push_str(&person_ldif(
            &people,
            &u,
            &format!("User {i}"),
            &format!("{u}@{domain}"),
            &[],
            "x",
        ));
    }
    Slapd::start(cfg)
}

fn run(mf: &Path, dir: &Path, args: &[&str]) -> Duration {
    let t = Instant::now();
    let out = Command::new(mf)
        .args(args)
        .env("MF_OLD_LDAP_PW", "ldappass")
        .env("MF_NEW_LDAP_PW", "ldappass")
        .env("MF_ADMIN_PW", "never-used")
        .current_dir(dir)
        .output()
        .expect("run mailferry");
    assert!(
        out.status.success(),
        "mailferry {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

/// What an admin's state looks like after a few passes: every entry migrated (a few partial,
/// with refused messages), `ledger` rows spread over the entries in 10 folders, half the
/// source addresses out of date (so that a refresh has work), and one migrate run.
fn fill_state(db: &Path, ledger: usize) -> (usize, usize) {
    let mut conn = rusqlite::Connection::open(db).expect("open the state");
    let tx = conn.transaction().expect("transaction");
    let ids: Vec<String> = tx
        .prepare("SELECT id FROM entries ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let per = ledger.div_ceil(ids.len().max(1));
    let started = "2026-11-24T10:00:00Z";
    tx.execute(
        "INSERT INTO runs (started, finished, kind) VALUES (?1, '2026-11-24T10:30:00Z', 'migrate')",
        [started],
    )
    .unwrap();
    let run = tx.last_insert_rowid();
    let mut rows = 0usize;
    let mut failures = 0usize;
    {
        let mut row = tx
            .prepare(
                "INSERT INTO ledger (entry_id, source_folder, uid_validity, uid, target_folder, \
                 target_uid, target_uidnext, fingerprint, size, flags, state) \
                 VALUES (?1, ?2, 1, ?3, ?2, ?3, NULL, ?4, ?5, '\\Seen', 'copied')",
            )
            .unwrap();
        let mut fail = tx
            .prepare(
                "INSERT INTO failures (run_id, entry_id, folder, uid, size, message_id, reason) \
                 VALUES (?1, ?2, 'INBOX', ?3, 30000000, ?4, \
                 'APPEND failed: [LIMIT] Message too large <over 25 MB> & refused')",
            )
            .unwrap();
        let mut result = tx
            .prepare(
                "INSERT INTO run_entries (run_id, entry_id, state, copied, failed, bytes, seconds) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 3.5)",
            )
            .unwrap();
        let mut entry = tx
            .prepare(
                "UPDATE entries SET state = ?2, copied = ?3, failed = ?4, last_pass = ?5, \
                 source_addresses = CASE WHEN ?6 THEN json_array(source_login || '@legacy.example') \
                 ELSE source_addresses END WHERE id = ?1",
            )
            .unwrap();
        for (k, id) in ids.iter().enumerate() {
            let n = per.min(ledger - rows);
            for uid in 0..n {
                let folder = format!("Folder {:02}", uid % 10);
                let fp = format!("{k:08x}{uid:08x}{:016x}", (k * 7919 + uid) as u64);
                row.execute(rusqlite::params![
                    id,
                    folder,
                    uid as i64 + 1,
                    fp,
                    20_000 + uid
                ])
                .unwrap();
            }
            rows += n;
            // One entry in 50 has three messages the target refused.
            let failed = if k % 50 == 0 { 3 } else { 0 };
            for f in 0..failed {
                fail.execute(rusqlite::params![
                    run,
                    id,
                    1_000 + f,
                    format!("<big-{k}-{f}@bench.example>")
                ])
                .unwrap();
            }
            failures += failed;
            let state = if failed > 0 { "partial" } else { "migrated" };
            result
                .execute(rusqlite::params![run, id, state, n, failed, n * 20_000])
                .unwrap();
            entry
                .execute(rusqlite::params![
                    id,
                    state,
                    n,
                    failed,
                    "2026-11-24T10:29:00Z",
                    k % 2 == 0
                ])
                .unwrap();
        }
    }
    tx.commit().expect("commit");
    (rows, failures)
}

struct Served {
    child: Child,
    url: String,
    base: String,
    port: u16,
    cookie: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(mf: &Path, dir: &Path) -> Served {
    let log = std::fs::File::create(dir.join("serve.log")).expect("serve.log");
    let mut child = Command::new(mf)
        .args(["serve", "job.toml", "--listen", "127.0.0.1:0"])
        .env("MF_OLD_LDAP_PW", "ldappass")
        .env("MF_NEW_LDAP_PW", "ldappass")
        .env("MF_ADMIN_PW", "never-used")
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start mailferry serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the first line");
    let url = line
        .trim()
        .strip_prefix("Open ")
        .expect("Open URL")
        .to_string();
    let (base, token) = url.split_once("/?token=").expect("a token");
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    Served {
        cookie: format!("mailferry_{port}={token}"),
        base: base.to_string(),
        url: url.clone(),
        port,
        child,
    }
}

/// One GET, read to the end (the console closes every connection): status, body, time.
fn get(s: &Served, path: &str) -> (u16, Vec<u8>, Duration) {
    let t = Instant::now();
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nCookie: {}\r\n\r\n",
        s.port, s.cookie
    )
    .unwrap();
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).unwrap();
    let elapsed = t.elapsed();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, raw[split + 4..].to_vec(), elapsed)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of proc(5), counted from after the command name (field 3 is f[0]).
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// A `/proc/PID/status` figure in kB (`VmHWM`, the peak RSS; `VmRSS`, the RSS now), as MB.
fn status_mb(pid: u32, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// serve's RSS now and its peak so far: where in the run the memory goes.
fn rss(s: &Served, f: &mut Figures, after: &str) {
    let pid = s.child.id();
    f.add(
        &format!("serve RSS after {after}"),
        format!(
            "{:.0} MB: {:.0} MB anonymous, {:.0} MB of files (peak so far {:.0} MB)",
            status_mb(pid, "VmRSS:"),
            status_mb(pid, "RssAnon:"),
            status_mb(pid, "RssFile:"),
            status_mb(pid, "VmHWM:")
        ),
    );
}

/// The event stream: the first tick (progress and the entries), then `ticks` more, with the
/// server's CPU time over those.
fn event_stream(s: &Served, ticks: usize, f: &mut Figures) {
    let t = Instant::now();
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    write!(
        c,
        "GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nCookie: {}\r\n\r\n",
        s.port, s.cookie
    )
    .unwrap();
    let mut r = BufReader::new(c);
    // The head.
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    // One tick: a `progress` event, and an `entries` event when they changed.
    let read_event = |r: &mut BufReader<TcpStream>| -> (String, usize) {
        let mut name = String::new();
        let mut size = 0;
        loop {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            size += l.len();
            if l == "\n" {
                return (name, size);
            }
            if let Some(n) = l.strip_prefix("event: ") {
                name = n.trim().to_string();
            }
        }
    };
    let (e1, s1) = read_event(&mut r);
    let (e2, s2) = read_event(&mut r);
    assert_eq!((e1.as_str(), e2.as_str()), ("progress", "entries"));
    f.add(
        "event stream, first tick (progress + all entries)",
        format!("{} in {}", mb(s1 + s2), ms(t.elapsed())),
    );
    let cpu0 = cpu_seconds(s.child.id());
    let t0 = Instant::now();
    let mut sizes = Vec::new();
    for _ in 0..ticks {
        let (e, size) = read_event(&mut r);
        assert_eq!(e, "progress", "nothing changed, so no entries");
        sizes.push(size);
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(s.child.id()) - cpu0;
    f.add(
        "event stream, a tick with no change (progress only)",
        format!(
            "{} bytes; server CPU {:.1} ms per tick ({:.2} % of a core), over {ticks} ticks",
            sizes.iter().max().unwrap(),
            cpu * 1000.0 / ticks as f64,
            100.0 * cpu / wall
        ),
    );
}

/// Polls (without the test kit's 200 ms pause) until the script returns true.
fn until(b: &Browser, js: &str, timeout: Duration) -> Duration {
    let t = Instant::now();
    loop {
        if b.execute(js).unwrap() == true {
            return t.elapsed();
        }
        assert!(t.elapsed() < timeout, "still false after {timeout:?}: {js}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn click(b: &Browser, css: &str) {
    for attempt in 0.. {
        let e = b.find(css).unwrap();
        match b.click(&e) {
            Ok(()) => return,
            Err(err) if err.0.contains("stale element") && attempt < 10 => {}
            Err(err) => panic!("click {css}: {err}"),
        }
    }
}

const FIRST_ROW: &str = "tr[data-entry-id]:not([aria-selected=\"true\"]) td:nth-child(3)";
const ANY_ROW: &str = "tr[data-entry-id] td:nth-child(3)";
const ROWS: &str = "return document.querySelectorAll('tr[data-entry-id]').length > 0;";
const ONE_SELECTED: &str =
    "return document.getElementById('selection-count').textContent.startsWith('1 of ');";

/// Loads the Jobs tab and waits until it is interactive: rows drawn, and a click selects.
fn first_load(b: &Browser, url: &str, f: &mut Figures, label: &str) {
    let t = Instant::now();
    b.goto(url).unwrap();
    let loaded = t.elapsed();
    until(b, ROWS, Duration::from_secs(60));
    let rows = t.elapsed();
    click(b, FIRST_ROW);
    until(b, ONE_SELECTED, Duration::from_secs(60));
    let interactive = t.elapsed();
    let page: Value = b
        .execute(
            "const n = performance.getEntriesByType('navigation')[0];\
             const m = (k) => { const e = performance.getEntriesByName(k)[0]; return e ? e.startTime : null; };\
             return {dcl: n.domContentLoadedEventEnd, listen: m('mf-listen'),\
                     received: m('mf-entries-received'), drawn: m('mf-entries-drawn'),\
                     heap: performance.memory ? performance.memory.usedJSHeapSize : null};",
        )
        .unwrap();
    f.add(
        &format!("Jobs tab, {label}: interactive (rows drawn and a click selects)"),
        format!(
            "{} (load event {}, rows drawn {}; in the page: DOMContentLoaded {:.0} ms, event \
             stream opened {:.0} ms, entries arrived {:.0} ms, drawn {:.0} ms, JS heap {})",
            ms(interactive),
            ms(loaded),
            ms(rows),
            page["dcl"].as_f64().unwrap_or(0.0),
            page["listen"].as_f64().unwrap_or(0.0),
            page["received"].as_f64().unwrap_or(0.0),
            page["drawn"].as_f64().unwrap_or(0.0),
            page["heap"].as_f64().map_or("?".into(), |h| mb(h as usize)),
        ),
    );
}

/// Sets the filter as one input event and times the view's rebuild and layout in the page.
fn filter_in_page(b: &Browser, text: &str) -> (f64, Option<u64>) {
    let v = b
        .execute_with(
            "const f = document.getElementById('filter'); const t = performance.now();\
             f.value = arguments[0]; f.dispatchEvent(new Event('input'));\
             document.getElementById('rows').getBoundingClientRect();\
             const c = document.getElementById('selection-count').textContent;\
             const m = c.match(/· (\\d+) shown/);\
             return [performance.now() - t, m ? Number(m[1]) : null];",
            &[Value::from(text)],
        )
        .unwrap();
    // Without "N shown", every row is.
    (v[0].as_f64().unwrap(), v[1].as_u64())
}

fn main() {
    let mf = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/release/mailferry".into()),
    );
    let mf = std::fs::canonicalize(&mf).expect("the mailferry binary (first argument)");
    let n = env_usize("ENTRIES", 10_000);
    let ledger = env_usize("LEDGER", 1_000_000);
    let loads = env_usize("LOADS", 3);
    let mut f = Figures(Vec::new());

    log(&format!("starting two slapd with {n} people each"));
    let t = Instant::now();
    let old = directory("dc=old,dc=example", "old.example", n);
    let new = directory("dc=new,dc=example", "new.example", n);
    f.add(
        "two directories of people started (slapadd)",
        ms(t.elapsed()),
    );
    let dir = tempfile::Builder::new()
        .prefix("mailferry-web-bench-")
        .tempdir()
        .unwrap();
    let d = |side: &str, l: &Slapd, var: &str| {
        format!(
            "[{side}.directory]\nkind = \"ldap\"\nurl = \"{}\"\nsecurity = \"plain\"\n\
             bind_dn = \"{}\"\nbind_password = {{ env = \"{var}\" }}\nbase = \"{}\"\n\
             filter = \"(objectClass=inetOrgPerson)\"\n\n",
            l.url(),
            l.admin_dn(),
            l.people()
        )
    };
    // The servers are never reached: the console's grid and refresh need only the state
    // and the directories.
    let imap = |side: &str| {
        format!(
            "[{side}]\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = 9\nsecurity = \"plain\"\n\
             allow_plain = true\nauth = \"admin\"\nadmin_user = \"admin\"\n\
             admin_password = {{ env = \"MF_ADMIN_PW\" }}\n\n"
        )
    };
    std::fs::write(
        dir.path().join("job.toml"),
        format!(
            "name = \"web bench\"\n\n{}{}{}{}",
            imap("source"),
            d("source", &old, "MF_OLD_LDAP_PW"),
            imap("target"),
            d("target", &new, "MF_NEW_LDAP_PW"),
        ),
    )
    .unwrap();
    let took = run(&mf, dir.path(), &["discover", "job.toml"]);
    f.add(&format!("`discover` of {n} mailboxes"), ms(took));
    let took = run(&mf, dir.path(), &["match", "job.toml", "--auto"]);
    f.add(&format!("`match --auto` of {n} mailboxes"), ms(took));
    let t = Instant::now();
    let (rows, failures) = fill_state(&dir.path().join("job.db"), ledger);
    f.add(
        "state filled (SQLite, one transaction)",
        format!(
            "{rows} ledger rows, {failures} failures, in {}; database {}",
            ms(t.elapsed()),
            mb(std::fs::metadata(dir.path().join("job.db")).unwrap().len() as usize)
        ),
    );

    let s = serve(&mf, dir.path());
    log(&format!("serving on {}", s.base));
    rss(&s, &mut f, "start");
    // /api/entries: the first read fills the console's cache, the next ones are served from it.
    let (status, body, cold) = get(&s, "/api/entries");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["entries"].as_array().unwrap().len(), n);
    let mut warm: Vec<Duration> = (0..5).map(|_| get(&s, "/api/entries").2).collect();
    warm.sort();
    f.add(
        "GET /api/entries",
        format!(
            "{}; {} the first time (read from the state), {} after (median of 5, cached)",
            mb(body.len()),
            ms(cold),
            ms(warm[2])
        ),
    );
    rss(&s, &mut f, "GET /api/entries");
    let id = v["entries"][0]["id"].as_str().unwrap().to_string();
    let (status, body, took) = get(&s, &format!("/api/failures?id={id}"));
    assert_eq!(status, 200);
    f.add(
        "GET /api/failures (one entry; the run has all failures)",
        format!("{} bytes in {}", body.len(), ms(took)),
    );
    event_stream(&s, 10, &mut f);
    rss(&s, &mut f, "the event stream");

    let b = Browser::start().unwrap_or_else(|e| panic!("{e}"));
    first_load(&b, &s.url, &mut f, "first load");
    for k in 2..=loads {
        first_load(&b, &format!("{}/", s.base), &mut f, &format!("load {k}"));
    }

    rss(&s, &mut f, "the page loads");
    // The text filter: one input event each, timed in the page (rebuild, draw, layout).
    for text in ["user0123", "example", "no such mailbox", ""] {
        let (took, shown) = filter_in_page(&b, text);
        let shown = shown.unwrap_or(n as u64);
        f.add(
            &format!("filter {text:?} (one input event, in the page)"),
            format!("{took:.0} ms, {shown} rows shown"),
        );
    }
    // Typing it as an admin does: one rebuild per key, through WebDriver.
    let typed = "user0123";
    let want = (0..n)
        .filter(|i| format!("user{i:05}").contains(typed))
        .count();
    let t = Instant::now();
    b.send_keys(&b.find("#filter").unwrap(), typed).unwrap();
    until(
        &b,
        &format!(
            "return document.getElementById('filter').value === '{typed}' && \
             document.getElementById('selection-count').textContent.includes('· {want} shown');"
        ),
        Duration::from_secs(30),
    );
    f.add(
        "filter typed \"user0123\" (8 keys, WebDriver)",
        ms(t.elapsed()),
    );
    filter_in_page(&b, "");

    // Ctrl+A: every one of the 10,000 rows.
    click(&b, FIRST_ROW);
    let all = format!(
        "return document.getElementById('selection-count').textContent.startsWith('{n} of ');"
    );
    let t = Instant::now();
    b.keys_ctrl_a().unwrap();
    until(&b, &all, Duration::from_secs(30));
    f.add(&format!("Ctrl+A selects {n} (WebDriver)"), ms(t.elapsed()));
    click(&b, ANY_ROW);
    let took = b
        .execute(
            "const g = document.getElementById('grid'); g.focus(); const t = performance.now();\
             g.dispatchEvent(new KeyboardEvent('keydown', {key: 'a', ctrlKey: true, bubbles: true}));\
             document.getElementById('rows').getBoundingClientRect();\
             return performance.now() - t;",
        )
        .unwrap();
    until(&b, &all, Duration::from_secs(5));
    f.add(
        &format!("Ctrl+A selects {n} (in the page)"),
        format!("{:.0} ms", took.as_f64().unwrap()),
    );
    let took = b
        .execute(
            "const t = performance.now();\
             document.querySelector('th[data-sort=\"target\"] button').click();\
             document.getElementById('rows').getBoundingClientRect();\
             return performance.now() - t;",
        )
        .unwrap();
    f.add(
        &format!("sort {n} by target (in the page)"),
        format!("{:.0} ms", took.as_f64().unwrap()),
    );

    // Refresh email addresses of all of them, through the console, until the results show.
    let cpu0 = cpu_seconds(s.child.id());
    let t = Instant::now();
    click(&b, "#btn-refresh");
    until(
        &b,
        "return !document.getElementById('refresh-dialog').hidden;",
        Duration::from_secs(600),
    );
    let wall = t.elapsed();
    let cpu = cpu_seconds(s.child.id()) - cpu0;
    let page = b
        .execute(
            "const e = performance.getEntriesByType('resource').filter(r => r.name.endsWith('/api/refresh'))[0];\
             const c = [...document.querySelectorAll('#refresh-dialog [data-count]')]\
               .map(x => x.closest('[data-side]').dataset.side + ' ' + x.dataset.count + ' ' + x.textContent)\
               .filter(x => !x.endsWith(' 0'));\
             return [e.duration, e.encodedBodySize || e.transferSize || 0, c];",
        )
        .unwrap();
    f.add(
        &format!("Refresh email addresses of {n} (click to results shown)"),
        format!(
            "{} (POST /api/refresh {:.0} ms, answer {}; serve CPU {:.2} s); results: {}",
            ms(wall),
            page[0].as_f64().unwrap_or(0.0),
            mb(page[1].as_u64().unwrap_or(0) as usize),
            cpu,
            page[2]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap_or(""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    rss(&s, &mut f, "Refresh email addresses");
    f.add(
        "serve peak RSS",
        format!("{:.0} MB", status_mb(s.child.id(), "VmHWM:")),
    );
    drop(b);
    drop(s);

    println!("| what | figure |\n|---|---|");
    for (what, value) in &f.0 {
        println!("| {what} | {value} |");
    }
}
