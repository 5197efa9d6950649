//! `check`: reach every server and directory of the job, get an OAuth2 token where the job
//! uses one, log in (as one mailbox when an admin login is used), and say what works and what
//! does not, with the server's and the identity provider's own words and, for OAuth2, the
//! set-up step that is the likely cause.
//! Nothing is changed anywhere.

use serde::Serialize;

use super::{App, Result};
use crate::model::Side;
use crate::text::counted;

#[derive(Debug, Serialize)]
pub struct CheckOutcome {
    pub ok: bool,
    pub servers: Vec<SideChecks>,
}

impl CheckOutcome {
    /// SPEC §4's exit status: 0 when everything works, 2 when a line failed on the job file
    /// itself (an unset secret, a CA file that is not there), 1 when only servers refused.
    pub fn exit_code(&self) -> u8 {
        let lines = || self.servers.iter().flat_map(|s| &s.checks);
        if lines().any(|c| c.bad_input) {
            2
        } else if lines().all(|c| c.ok) {
            0
        } else {
            1
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SideChecks {
    pub side: Side,
    pub checks: Vec<Check>,
}

/// One line of the check: what was tried, whether it worked, and the details.
#[derive(Debug, Serialize)]
pub struct Check {
    pub check: String,
    pub ok: bool,
    pub detail: String,
    /// A failure of the job file, not of a server: the check exits 2. In `check --json` as
    /// `"bad_input": true`, left out on every other line.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub bad_input: bool,
}

/// What a login check says it found: "1 folder", "12 folders".
fn folders_found(tree: &crate::folders::FolderTree) -> String {
    counted(tree.folders().count(), "folder", "folders")
}

fn line(check: impl Into<String>, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        check: check.into(),
        ok,
        detail: detail.into(),
        bad_input: false,
    }
}

/// A failed line that the job file caused, not a server.
fn bad_input(check: impl Into<String>, detail: impl Into<String>) -> Check {
    Check {
        bad_input: true,
        ..line(check, false, detail)
    }
}

pub fn check(app: &App<'_>) -> Result<CheckOutcome> {
    // Read as it is: not even the job-change rule's bookkeeping (a check of a broken job
    // file must leave the state as the last good one left it).
    let store = app.backends.open_store_to_read(app.job)?;
    let sample = store.entries()?.into_iter().find(|e| e.is_migratable());
    drop(store);
    let passwords = app.passwords()?;
    let mut servers = Vec::new();
    for side in [Side::Source, Side::Target] {
        let mut checks = Vec::new();
        match app.backends.connector(app.job, side) {
            Err(e) => checks.push(bad_input("configuration", e)),
            Ok(connector) => match connector.probe() {
                Err(e) => checks.push(line(connector.describe(), false, e.to_string())),
                Ok(probe) => {
                    checks.push(line(connector.describe(), true, probe.detail));
                    if probe.can_log_in {
                        match &sample {
                            None => checks.push(line(
                                "login",
                                false,
                                "no entries yet: import them with `mailferry match --csv`, then \
                                 check again",
                            )),
                            Some(entry) => {
                                let login = entry.login(side).unwrap_or_default().to_string();
                                let pw = passwords.get(&entry.id).cloned().unwrap_or_default();
                                let own = match side {
                                    Side::Source => pw.source,
                                    Side::Target => pw.target,
                                };
                                // An OAuth2 token first: its refusal is the identity
                                // provider's, and a login without it would only repeat it.
                                let token = connector.check_credentials(&login);
                                let token_ok = !matches!(token, Some(Err(_)));
                                if let Some(got) = token {
                                    checks.push(match got {
                                        Ok(detail) => line("oauth2 token", true, detail),
                                        Err(e) => line("oauth2 token", false, e),
                                    });
                                }
                                if token_ok {
                                    let what = format!("login as {login}");
                                    checks.push(match connector.open(&login, own.as_deref()) {
                                        Ok(mut session) => {
                                            let detail = match session.folders() {
                                                Ok(t) => folders_found(&t),
                                                Err(e) => format!("LIST failed: {e}"),
                                            };
                                            session.logout();
                                            line(what, true, detail)
                                        }
                                        Err(e) => line(what, false, e.to_string()),
                                    });
                                }
                            }
                        }
                    }
                }
            },
        }
        if let Some(cfg) = &app.connection(side).directory {
            let what = format!("directory {}", cfg.url());
            checks.push(match app.directory(side) {
                Ok(Some(mut d)) => {
                    let bound = match d.bound_as() {
                        "" => "bound anonymously".to_string(),
                        who => format!("bound as {who}"),
                    };
                    match d.probe() {
                        Err(e) => line(what, false, format!("{bound}, but {e}")),
                        Ok(p) => probe_line(what, &bound, cfg, &p),
                    }
                }
                Ok(None) => line(what, false, "no directory"),
                Err(e) if e.exit_code() == 2 => bad_input(what, e.to_string()),
                Err(e) => line(what, false, e.to_string()),
            });
        }
        servers.push(SideChecks { side, checks });
    }
    let ok = servers.iter().all(|s| s.checks.iter().all(|c| c.ok));
    Ok(CheckOutcome { ok, servers })
}

/// The check line of a directory probe: working when the base and filter find entries that
/// read as mailboxes; otherwise why not (an empty base or filter, a wrong attribute name).
fn probe_line(
    what: String,
    bound: &str,
    cfg: &crate::job::DirectoryKind,
    p: &crate::ports::DirectoryProbe,
) -> Check {
    let (scope, fix) = match cfg {
        crate::job::DirectoryKind::Ldap(l) => (
            format!("under {} for {}", l.base, l.filter),
            "check base and filter",
        ),
        crate::job::DirectoryKind::Graph(g) => (
            match &g.filter {
                Some(f) => format!("among the users for {f}"),
                None => "among the users".to_string(),
            },
            "check filter",
        ),
    };
    if p.sampled == 0 {
        return line(what, false, format!("{bound}, but no entry {scope}: {fix}"));
    }
    let first_skip = p
        .skipped
        .first()
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    if p.mailboxes == 0 {
        return line(
            what,
            false,
            format!(
                "{bound}, but none of the {} read {scope} is a mailbox{first_skip}: \
                 check the attribute names",
                counted(p.sampled, "entry", "entries")
            ),
        );
    }
    let read = if p.more {
        format!("the first {}", counted(p.sampled, "entry", "entries"))
    } else {
        counted(p.sampled, "entry", "entries")
    };
    let skipped = if p.skipped.is_empty() {
        String::new()
    } else {
        format!(", {} skipped{first_skip}", p.skipped.len())
    };
    line(
        what,
        true,
        format!(
            "{bound}; {read} {scope}: {}{skipped}",
            counted(p.mailboxes, "mailbox", "mailboxes")
        ),
    )
}
