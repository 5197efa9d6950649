//! OAuth2 app-only logins (issue 9) against a real Dovecot with its oauth2 passdb and the test
//! kit's token endpoint: the test of record migrates real and generated messages to a target
//! that only takes tokens, tokens that live two seconds, through connections cut every few
//! megabytes, and checks the copy message by message (bytes, flags, INTERNALDATE, each once)
//! and that no token or secret is left anywhere. `check` names the set-up step that failed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use mailferry_testkit::DovecotConfig;
use mailferry_testkit::oauth2::{
    DovecotOAuth2, SigningKey, TestClient, TokenEndpoint, TokenEndpointConfig, TokenMatch,
};
use mailferry_testkit::proxy::{Faults, Proxy};
use serde_json::Value;

use crate::lab::*;

const SECRET: &str = "s3cret-Value~of.the_app";
const USERS: [&str; 3] = ["ada@new.test", "bea@new.test", "cyd@new.test"];

struct OAuthLab {
    lab: Lab,
    endpoint: TokenEndpoint,
}

/// A source with password logins and a target that takes only tokens for mailboxes (its
/// master user stays, for comparing), the token endpoint knowing client `app-1`.
fn oauth_lab(users: &[&str], denied: &[&str], lifetime: Duration) -> OAuthLab {
    let key = SigningKey::random();
    let mut target = DovecotConfig::new(users);
    let mut oauth2 = DovecotOAuth2::new(&key, TokenMatch::Domain);
    oauth2.denied = denied.iter().map(|u| u.to_string()).collect();
    target.oauth2 = Some(oauth2);
    let lab = Lab::with(DovecotConfig::new(users), target);
    let mut cfg = TokenEndpointConfig::new(&key, "new.test");
    cfg.lifetime = lifetime;
    cfg.clients = vec![TestClient::Secret {
        client_id: "app-1".into(),
        secret: SECRET.into(),
    }];
    let endpoint = TokenEndpoint::start(cfg);
    let mut csv =
        String::from("Source ID,Source addresses,Source login,Target addresses,Target login\n");
    for u in users {
        let local = u.split('@').next().unwrap();
        csv.push_str(&format!(
            "id-{local},{local}@old.example,{u},{local}@new.example,{u}\n"
        ));
    }
    std::fs::write(lab.dir.path().join("mailboxes.csv"), csv).unwrap();
    OAuthLab { lab, endpoint }
}

impl OAuthLab {
    /// The job: the source by master user, the target by OAuth2 (client `client_id`, the
    /// secret from MF_TEST_CLIENT_SECRET), each on the given port.
    fn write_job(&self, source_port: u16, target_port: u16, client_id: &str) {
        let host = self.lab.source.host();
        let text = format!(
            "name = \"oauth2\"\n\n\
             [source]\nkind = \"imap\"\nhost = \"{host}\"\nport = {source_port}\n\
             security = \"plain\"\nallow_plain = true\nauth = \"admin\"\nadmin_user = \"admin\"\n\
             admin_password = {{ env = \"MF_TEST_ADMIN_PW\" }}\n\
             admin_login = \"master-separator\"\nmax_connections = 8\n\n\
             [target]\nkind = \"imap\"\nhost = \"{host}\"\nport = {target_port}\n\
             security = \"plain\"\nallow_plain = true\nauth = \"oauth2\"\nmax_connections = 8\n\n\
             [target.oauth2]\nflow = \"client-credentials\"\ntenant = \"contoso-test\"\n\
             client_id = \"{client_id}\"\nclient_secret = {{ env = \"MF_TEST_CLIENT_SECRET\" }}\n\
             token_url = \"{}\"\nallow_plain = true\n\n\
             [mailboxes]\ncsv = \"mailboxes.csv\"\n\n[migration]\nconcurrency = 3\n",
            self.endpoint.url()
        );
        std::fs::write(self.lab.job(), text).unwrap();
    }

    fn job(&self) -> String {
        self.lab.job().to_str().unwrap().to_string()
    }

    /// Runs mailferry with the client secret `secret` in its environment and the trace on.
    fn run(&self, args: &[&str], secret: &str) -> (i32, String, String) {
        let out = self
            .lab
            .command(args)
            .env("MF_TEST_CLIENT_SECRET", secret)
            .env("MAILFERRY_TRACE", self.trace())
            .output()
            .expect("run mailferry");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn trace(&self) -> PathBuf {
        self.lab.dir.path().join("trace.log")
    }

    fn json(&self, args: &[&str], secret: &str) -> (i32, Value, String) {
        let mut all = args.to_vec();
        all.push("--json");
        let (code, out, err) = self.run(&all, secret);
        let v = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}\n{err}"));
        (code, v, format!("{out}\n{err}"))
    }
}

fn corpus_archive() -> PathBuf {
    let dir = std::env::var_os("MAILFERRY_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus")
        });
    assert!(
        dir.join("MANIFEST.tsv").is_file(),
        "The shared corpus is not at {}: put the project's shared/ beside the checkout or set \
         MAILFERRY_CORPUS=/path/to/corpus",
        dir.display()
    );
    dir.join("Archive")
}

/// Every file below `dir`, with its bytes.
fn files_below(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
}

/// What must appear nowhere: the secret, every token issued, each token's signature, and the
/// SASL responses (base64) that carried them.
fn secrets(endpoint: &TokenEndpoint, users: &[&str]) -> Vec<String> {
    let mut out = vec![SECRET.to_string(), http_form(SECRET)];
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    for token in endpoint.stats().tokens {
        out.push(token.rsplit('.').next().unwrap().to_string());
        for user in users {
            out.push(b64(&format!("user={user}\x01auth=Bearer {token}\x01\x01")));
        }
        out.push(token);
    }
    out
}

fn http_form(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// No secret in any file of the job's folder (state, WAL, trace, reports) or in `output`.
fn assert_nothing_secret(ol: &OAuthLab, users: &[&str], output: &str) {
    let secrets = secrets(&ol.endpoint, users);
    assert!(secrets.len() > 2, "no token was issued");
    for (path, bytes) in files_below(ol.lab.dir.path()) {
        for s in &secrets {
            assert!(
                !contains(&bytes, s),
                "a secret or token in {}",
                path.display()
            );
        }
    }
    for s in &secrets {
        assert!(
            !output.contains(s.as_str()),
            "a secret or token in the output:\n{output}"
        );
    }
}

#[test]
fn a_migration_to_an_oauth2_target_with_two_second_tokens_and_cut_connections_is_exact() {
    let ol = oauth_lab(&USERS, &[], Duration::from_secs(2));
    // Real messages (the corpus' Archive, about 3 MB) for each user, with varied flags and
    // dates, and 2 MB of generated ones in the INBOX.
    let archive = messages_in(&corpus_archive());
    assert!(archive.len() > 100, "{} corpus messages", archive.len());
    for (u, user) in USERS.iter().enumerate() {
        let real: Vec<Msg> = archive
            .iter()
            .enumerate()
            .map(|(i, (_, body))| {
                let g = generated(u * 1000 + i, 0);
                Msg {
                    body: body.clone(),
                    flags: g.flags,
                    date: g.date,
                }
            })
            .collect();
        assert!(fill(&ol.lab.source, user, "Archive/2002", &real).is_empty());
        let inbox: Vec<Msg> = (0..50)
            .map(|i| generated(u * 1000 + 500 + i, 40_000))
            .collect();
        assert!(fill(&ol.lab.source, user, "INBOX", &inbox).is_empty());
    }
    // Every connection is cut one way or the other: to the source after 2-3.5 MB, to the
    // target after 1.2-2.5 MB. Each mailbox's 3-4.5 MB of mail crosses several connections
    // on both sides, and each new target connection needs a token. (Cuts much shorter than
    // a MULTIAPPEND group, up to 128 messages, would leave a mailbox no progress.)
    let cuts = |salt: u64, low: u64, span: u64| {
        move |n: u64| {
            let x = (n + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt;
            Faults {
                cut_up_after: Some(low + x % span),
                cut_down_after: Some(low + (x >> 17) % span),
                reset: n % 3 == 2,
                ..Faults::default()
            }
        }
    };
    let source = Proxy::before(&ol.lab.source, cuts(7, 2_000_000, 1_500_000));
    let target = Proxy::before(&ol.lab.target, cuts(11, 1_200_000, 1_300_000));
    ol.write_job(source.port(), target.port(), "app-1");
    let (code, out, err) = ol.run(&["match", &ol.job()], SECRET);
    assert_eq!(code, 0, "{out}\n{err}");

    let (code, v, output) = ol.json(&["migrate", &ol.job(), "--all"], SECRET);
    let stats = ol.endpoint.stats();
    let cut = source.stats().cuts + target.stats().cuts;
    assert_eq!(code, 0, "{cut} cuts, {stats:?}: {v:#}\n{output}");
    assert_eq!(v["failed"], 0, "{v:#}");
    // Each message has one ledger row, copied (the pass report counts the last attempt's).
    let messages = USERS.len() * (archive.len() + 50);
    let rows: i64 = rusqlite::Connection::open(ol.lab.db())
        .unwrap()
        .query_row(
            "SELECT count(*) FROM ledger WHERE state = 'copied'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows as usize, messages);
    eprintln!(
        "oauth2 pass: {} tokens issued in {} requests; source {:?}; target {:?}",
        stats.issued,
        stats.requests,
        source.stats(),
        target.stats()
    );
    assert!(
        target.stats().cuts >= 3,
        "only {} target cuts",
        target.stats().cuts
    );
    assert!(
        target.stats().connections >= 2 * USERS.len() as u64,
        "the target was reconnected to: {:?}",
        target.stats()
    );
    // Tokens expired during the pass and new ones were fetched; one at a time, not one per
    // connection.
    assert!(stats.issued >= 2, "{stats:?}");
    assert!(
        (stats.issued as u64) < target.stats().connections,
        "{stats:?} {:?}",
        target.stats()
    );
    assert_eq!(stats.by_grant.get("client_secret"), Some(&stats.issued));

    for user in USERS {
        let mut src = snapshot(&ol.lab.source, user);
        assert!(total(&src) >= archive.len() + 50);
        as_target_stores_them(&ol.lab.target, user, &mut src);
        assert_same(&src, &snapshot(&ol.lab.target, user), str::to_string);
    }

    // A second pass copies nothing more.
    let (code, v2, output2) = ol.json(&["migrate", &ol.job(), "--all"], SECRET);
    assert_eq!(code, 0, "{v2:#}\n{output2}");
    assert_eq!(v2["copied"], 0, "{v2:#}");
    assert_eq!(v2["failed"], 0, "{v2:#}");
    for user in USERS {
        let mut src = snapshot(&ol.lab.source, user);
        as_target_stores_them(&ol.lab.target, user, &mut src);
        assert_same(&src, &snapshot(&ol.lab.target, user), str::to_string);
    }

    // Reports in every format, then nothing secret anywhere: state, trace, reports, output.
    let mut all_output = format!("{output}\n{output2}");
    for format in ["html", "csv", "json"] {
        let file = ol.lab.dir.path().join(format!("report.{format}"));
        let (code, out, err) = ol.run(
            &[
                "report",
                &ol.job(),
                "--format",
                format,
                "--out",
                file.to_str().unwrap(),
            ],
            SECRET,
        );
        assert_eq!(code, 0, "{out}\n{err}");
        assert!(file.is_file());
        all_output.push_str(&out);
        all_output.push_str(&err);
    }
    let trace = std::fs::read_to_string(ol.trace()).expect("the trace was written");
    for user in USERS {
        assert!(
            trace.contains(&format!("AUTHENTICATE XOAUTH2 as {user} (token not shown)")),
            "the trace shows the logins: {}",
            &trace[..trace.len().min(2000)]
        );
    }
    assert_nothing_secret(&ol, &USERS, &all_output);
}

/// `check --json`: the target's lines.
fn target_checks(ol: &OAuthLab, secret: &str) -> (i32, Vec<Value>, String) {
    let (code, v, output) = ol.json(&["check", &ol.job()], secret);
    let target = v["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["side"] == "target")
        .unwrap()["checks"]
        .as_array()
        .unwrap()
        .clone();
    (code, target, output)
}

fn line<'a>(checks: &'a [Value], name: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["check"].as_str().unwrap().starts_with(name))
        .unwrap_or_else(|| panic!("no {name} line in {checks:#?}"))
}

#[test]
fn check_says_which_step_failed_for_a_wrong_secret_an_unknown_client_and_a_mailbox_without_permission()
 {
    let ol = oauth_lab(
        &["cyd@new.test"],
        &["cyd@new.test"],
        Duration::from_secs(60),
    );
    let (source, target) = (ol.lab.source.port(), ol.lab.target.port());
    ol.write_job(source, target, "app-1");
    let (code, out, err) = ol.run(&["match", &ol.job()], SECRET);
    assert_eq!(code, 0, "{out}\n{err}");
    let mut output = String::new();

    // The right client, but the mailbox has no permission for it (step 4).
    let (code, checks, o) = target_checks(&ol, SECRET);
    output.push_str(&o);
    assert_eq!(code, 1, "{checks:#?}");
    let token = line(&checks, "oauth2 token");
    assert_eq!(token["ok"], true, "{token:#}");
    let login = line(&checks, "login as cyd@new.test");
    assert_eq!(login["ok"], false, "{login:#}");
    let detail = login["detail"].as_str().unwrap();
    assert!(detail.contains("[AUTHENTICATIONFAILED]"), "{detail}");
    assert!(
        detail.contains("likely cause: step 4 of 4, the mailbox permission (Add-MailboxPermission -Identity cyd@new.test"),
        "{detail}"
    );

    // A wrong secret: the identity provider's words, the cause, and no login tried.
    let (code, checks, o) = target_checks(&ol, "not-the-secret");
    output.push_str(&o);
    assert_eq!(code, 1);
    let token = line(&checks, "oauth2 token");
    assert_eq!(token["ok"], false);
    let detail = token["detail"].as_str().unwrap();
    assert!(
        detail.contains("invalid_client: AADSTS7000215: Invalid client secret provided."),
        "{detail}"
    );
    assert!(
        detail.contains("likely cause: the client secret is wrong"),
        "{detail}"
    );
    assert!(!detail.contains("not-the-secret"), "{detail}");
    assert!(
        checks
            .iter()
            .all(|c| !c["check"].as_str().unwrap().starts_with("login")),
        "{checks:#?}"
    );

    // An unknown client.
    ol.write_job(source, target, "00000000-dead-beef-0000-000000000000");
    let (code, checks, o) = target_checks(&ol, SECRET);
    output.push_str(&o);
    assert_eq!(code, 1);
    let detail = line(&checks, "oauth2 token")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains("AADSTS700016: Application with identifier '00000000-dead-beef-0000-000000000000' was not found"), "{detail}");
    assert!(
        detail.contains("likely cause: the client_id is not an application in this tenant"),
        "{detail}"
    );

    // The plain text form says the same.
    ol.write_job(source, target, "app-1");
    let (code, out, err) = ol.run(&["check", &ol.job()], SECRET);
    assert_eq!(code, 1);
    assert!(
        out.contains("target OK   oauth2 token: token from http://127.0.0.1:"),
        "{out}\n{err}"
    );
    assert!(
        out.contains("target FAIL login as cyd@new.test: AUTHENTICATE XOAUTH2 failed"),
        "{out}"
    );
    output.push_str(&out);
    output.push_str(&err);
    assert_nothing_secret(&ol, &["cyd@new.test"], &output);
}

#[test]
fn from_a_service_account_source_with_oauthbearer_to_a_certificate_target() {
    use mailferry_testkit::oauth2::TestKeyPair;
    use std::sync::Arc;
    let users = ["dan@ws.test", "eve@ws.test"];
    // Google-like source: one token per mailbox; Entra-like target: a certificate credential.
    let (source_key, target_key) = (SigningKey::random(), SigningKey::random());
    let mut source = DovecotConfig::new(&users);
    source.oauth2 = Some(DovecotOAuth2::new(&source_key, TokenMatch::User));
    let mut target = DovecotConfig::new(&users);
    target.oauth2 = Some(DovecotOAuth2::new(&target_key, TokenMatch::Domain));
    let lab = Lab::with(source, target);
    let sa = Arc::new(TestKeyPair::generate("service account"));
    let app = Arc::new(TestKeyPair::generate("migration app"));
    let mut google = TokenEndpointConfig::new(&source_key, "ws.test");
    google.lifetime = Duration::from_secs(3);
    google.clients = vec![TestClient::ServiceAccount {
        client_email: "migrator@proj.iam.gserviceaccount.com".into(),
        key: sa.clone(),
    }];
    let google = TokenEndpoint::start(google);
    let mut entra = TokenEndpointConfig::new(&target_key, "ws.test");
    entra.lifetime = Duration::from_secs(3);
    entra.clients = vec![TestClient::Certificate {
        client_id: "app-cert".into(),
        key: app.clone(),
    }];
    let entra = TokenEndpoint::start(entra);
    let dir = lab.dir.path();
    std::fs::write(
        dir.join("sa.json"),
        sa.service_account_json(
            "migrator@proj.iam.gserviceaccount.com",
            "https://unused.invalid/token",
        ),
    )
    .unwrap();
    std::fs::copy(&app.certificate_pem, dir.join("app.pem")).unwrap();
    std::fs::copy(&app.key_pem, dir.join("app.key")).unwrap();
    let host = lab.source.host();
    let job = format!(
        "name = \"both\"\n\
         [source]\nkind = \"imap\"\nhost = \"{host}\"\nport = {}\nsecurity = \"plain\"\n\
         allow_plain = true\nauth = \"oauth2\"\n\
         [source.oauth2]\nflow = \"service-account\"\nkey_file = {{ file = \"sa.json\" }}\n\
         token_url = \"{}\"\nallow_plain = true\nmechanism = \"oauthbearer\"\n\
         [target]\nkind = \"imap\"\nhost = \"{host}\"\nport = {}\nsecurity = \"plain\"\n\
         allow_plain = true\nauth = \"oauth2\"\n\
         [target.oauth2]\nflow = \"client-credentials\"\nclient_id = \"app-cert\"\n\
         client_certificate = \"app.pem\"\nclient_key = {{ file = \"app.key\" }}\n\
         token_url = \"{}\"\nallow_plain = true\n\
         [mailboxes]\ncsv = \"mailboxes.csv\"\n",
        lab.source.port(),
        google.url(),
        lab.target.port(),
        entra.url()
    );
    std::fs::write(lab.job(), job).unwrap();
    let mut csv =
        String::from("Source ID,Source addresses,Source login,Target addresses,Target login\n");
    for u in users {
        let local = u.split('@').next().unwrap();
        csv.push_str(&format!("id-{local},{u},{u},{local}@new.example,{u}\n"));
    }
    std::fs::write(dir.join("mailboxes.csv"), csv).unwrap();
    for (n, user) in users.iter().enumerate() {
        let msgs: Vec<Msg> = (0..40)
            .map(|i| generated(n * 100 + i, 5_000 + i * 300))
            .collect();
        assert!(fill(&lab.source, user, "INBOX", &msgs).is_empty());
        assert!(fill(&lab.source, user, "Projects/2026", &msgs[..10]).is_empty());
    }
    let jobp = lab.job().to_str().unwrap().to_string();
    let out = lab.mailferry(&["match", &jobp]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = lab.mailferry(&["check", &jobp]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("source OK   oauth2 token: token from http://127.0.0.1:"),
        "{text}"
    );
    assert!(
        text.contains(
            "service account migrator@proj.iam.gserviceaccount.com, one token per mailbox"
        ),
        "{text}"
    );
    assert!(
        text.contains("client credentials with a certificate, client ID app-cert"),
        "{text}"
    );
    let (code, v) = lab.json(&["migrate", &jobp, "--all"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["failed"], 0, "{v:#}");
    for user in users {
        assert_same(
            &snapshot(&lab.source, user),
            &snapshot(&lab.target, user),
            str::to_string,
        );
    }
    let g = google.stats();
    // check's tokens and the pass's: every subject is a mailbox, nothing else.
    assert!(
        g.subjects.iter().all(|s| users.contains(&s.as_str())),
        "{g:?}"
    );
    assert!(
        users.iter().all(|u| g.subjects.iter().any(|s| s == u)),
        "{g:?}"
    );
    assert!(
        entra
            .stats()
            .by_grant
            .get("client_assertion")
            .is_some_and(|n| *n >= 1)
    );
}
