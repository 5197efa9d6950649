//! `mailferry check`: reach every server of the job, log in as one mailbox, and say what works
//! and what does not, with the server's own words.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

use mailferry_core::engine::{Backend, EntryPasswords, Server};
use mailferry_core::identities;
use mailferry_core::job::Job;
use mailferry_core::migrate::server_for;
use mailferry_core::store::Entry;

/// One line of the check: what was tried, whether it worked, and the details.
struct Check {
    what: String,
    ok: bool,
    detail: String,
}

fn line(what: impl Into<String>, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        what: what.into(),
        ok,
        detail: detail.into(),
    }
}

pub fn run(
    job: &Job,
    sample: Option<&Entry>,
    passwords: &HashMap<String, EntryPasswords>,
    as_json: bool,
) -> Result<ExitCode> {
    let mut results = Vec::new();
    for (side, conn) in [("source", &job.source), ("target", &job.target)] {
        let mut checks = match server_for(side, conn) {
            Err(e) => vec![line("configuration", false, e)],
            Ok(server) => check_server(side, &server, sample, passwords),
        };
        if let Some(cfg) = &conn.directory {
            let what = format!("directory {}", cfg.url);
            checks.push(match identities::connect(side, conn) {
                Ok(_) => line(what, true, format!("bound as {}", cfg.bind_dn)),
                Err(e) => line(what, false, e.to_string()),
            });
        }
        results.push((side, checks));
    }
    let all_ok = results.iter().all(|(_, c)| c.iter().all(|c| c.ok));
    if as_json {
        let servers: Vec<_> = results
            .iter()
            .map(|(side, checks)| {
                json!({"side": side, "checks": checks.iter().map(|c|
                    json!({"check": c.what, "ok": c.ok, "detail": c.detail})).collect::<Vec<_>>()})
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"ok": all_ok, "servers": servers}))?
        );
    } else {
        for (side, checks) in &results {
            for c in checks {
                let status = if c.ok { "OK" } else { "FAIL" };
                println!("{side:<7} {status:<4} {}: {}", c.what, c.detail);
            }
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn check_server(
    side: &'static str,
    server: &Server,
    sample: Option<&Entry>,
    passwords: &HashMap<String, EntryPasswords>,
) -> Vec<Check> {
    let mut checks = Vec::new();
    match &server.backend {
        Backend::Imap { endpoint: ep, .. } => match mailferry_imap::Client::connect(ep) {
            Err(e) => {
                checks.push(line(
                    format!("connect {}:{}", ep.host, ep.port),
                    false,
                    e.to_string(),
                ));
                return checks;
            }
            Ok(c) => {
                let caps: Vec<&str> = c.capabilities().collect();
                checks.push(line(
                    format!("connect {}:{} ({:?})", ep.host, ep.port, ep.security),
                    true,
                    format!("capabilities: {}", caps.join(" ")),
                ));
                c.logout();
            }
        },
        Backend::Maildir { root, create } => {
            let (ok, detail) = match (root.is_dir(), create) {
                (true, _) => (true, "found"),
                (false, true) => (true, "will be created by the first pass"),
                (false, false) => (false, "no such directory"),
            };
            checks.push(line(format!("maildir {}", root.display()), ok, detail));
            if !root.is_dir() {
                return checks;
            }
        }
    }
    let Some(entry) = sample else {
        checks.push(line(
            "login",
            false,
            "no entries yet: import them with `mailferry match --csv`, then check again",
        ));
        return checks;
    };
    let login = if side == "source" {
        entry.source_login.clone()
    } else {
        entry.target_login.clone().unwrap_or_default()
    };
    let pw = passwords.get(&entry.id).cloned().unwrap_or_default();
    let own = if side == "source" {
        pw.source
    } else {
        pw.target
    };
    match server.connect(side, &login, own.as_deref()) {
        Ok(mut session) => {
            let detail = match session.tree() {
                Ok(t) => format!("{} folders", t.folders().count()),
                Err(e) => format!("LIST failed: {e}"),
            };
            checks.push(line(format!("login as {login}"), true, detail));
            session.logout();
        }
        Err(err) => checks.push(line(format!("login as {login}"), false, err.to_string())),
    }
    checks
}
