//! The directory commands: `discover`, `match`, `create`, `refresh-addresses`, and the
//! removal of entries whose source mailbox went missing. Wiring only: the work is in
//! `mailferry_core::identities`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::json;

use mailferry_core::directory::Directory;
use mailferry_core::entries::{Selection, select};
use mailferry_core::identities::{self, IdentityError};
use mailferry_core::job::Job;
use mailferry_core::report;
use mailferry_core::store::{Entry, Store};

use crate::{print_json, usage};

/// A directory error before anything changed is the admin's to fix: exit 2 for bad
/// configuration, 1 for an unreachable or refusing directory.
fn directory(side: &'static str, job: &Job) -> Result<Option<Directory>> {
    let conn = if side == "source" {
        &job.source
    } else {
        &job.target
    };
    match identities::connect(side, conn) {
        Ok(d) => Ok(d),
        Err(IdentityError::Input(m)) => Err(usage(m)),
        Err(e) => Err(anyhow::anyhow!("{e}")),
    }
}

fn need(side: &'static str, job: &Job, what: &str) -> Result<Directory> {
    directory(side, job)?
        .ok_or_else(|| usage(format!("{what} needs [{side}.directory] in the job file")))
}

pub fn discover(job: &Job, store: &mut Store, as_json: bool) -> Result<ExitCode> {
    let mut dir = need("source", job, "discover")?;
    let d = identities::discover(&mut dir, store)?;
    if as_json {
        print_json(&json!({"added": d.added, "known": d.known, "warnings": d.warnings}));
    } else {
        println!(
            "Discovered {} new mailboxes ({} already known).",
            d.added.len(),
            d.known
        );
        for w in &d.warnings {
            println!("  skipped: {w}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `match` was asked to do besides importing a CSV.
pub struct MatchActions {
    pub auto: bool,
    pub set: Vec<String>,
    pub create: Vec<String>,
    pub skip: Vec<String>,
    pub stage: Option<u32>,
    pub mailboxes: Vec<String>,
}

impl MatchActions {
    pub fn any(&self) -> bool {
        self.auto
            || !self.set.is_empty()
            || !self.create.is_empty()
            || !self.skip.is_empty()
            || self.stage.is_some()
    }
}

fn one<'a>(entries: &'a [Entry], m: &str) -> Result<&'a Entry> {
    let found = select(entries, &Selection::Mailboxes(vec![m.to_string()])).map_err(usage)?;
    found
        .into_iter()
        .next()
        .ok_or_else(|| usage(format!("no entry matches {m:?}")))
}

pub fn match_actions(
    job: &Job,
    store: &mut Store,
    a: &MatchActions,
    as_json: bool,
) -> Result<ExitCode> {
    let entries = store.entries()?;
    // Check every name before changing anything.
    let mut sets = Vec::new();
    for s in &a.set {
        let (m, address) = s
            .split_once('=')
            .ok_or_else(|| usage(format!("--set {s:?}: write M=TARGET_ADDRESS")))?;
        if !address.contains('@') {
            return Err(usage(format!("--set {s:?}: {address:?} is not an address")));
        }
        sets.push((one(&entries, m)?.clone(), address.trim().to_string()));
    }
    let creates: Vec<Entry> = a
        .create
        .iter()
        .map(|m| one(&entries, m).cloned())
        .collect::<Result<_>>()?;
    let skips: Vec<Entry> = a
        .skip
        .iter()
        .map(|m| one(&entries, m).cloned())
        .collect::<Result<_>>()?;
    if a.stage.is_some() && a.mailboxes.is_empty() {
        return Err(usage(
            "--stage N needs the entries: --mailbox M (repeatable)",
        ));
    }
    let staged: Vec<Entry> = a
        .mailboxes
        .iter()
        .map(|m| one(&entries, m).cloned())
        .collect::<Result<_>>()?;
    if !creates.is_empty() && job.target.create.is_none() {
        return Err(usage("--create needs [target.create] in the job file"));
    }

    let mut report = serde_json::Map::new();
    if a.auto {
        let mut dir = need("target", job, "match --auto")?;
        let r = identities::auto_match_entries(&mut dir, store, &entries)?;
        if !as_json {
            for (id, target, rule) in &r.matched {
                println!("{id}: matched to {target} (same {rule})");
            }
            for (id, why) in &r.unmatched {
                println!("{id}: not matched: {why}");
            }
            println!(
                "Automatic matching: {} matched, {} left unmatched.",
                r.matched.len(),
                r.unmatched.len()
            );
        }
        report.insert("auto".into(), json!(r));
    }
    let mut target_dir = if sets.is_empty() {
        None
    } else {
        directory("target", job)?
    };
    for (e, address) in &sets {
        let u =
            identities::set_manual(store, e, address, target_dir.as_mut()).map_err(
                |err| match err {
                    IdentityError::Input(m) => usage(m),
                    other => anyhow::anyhow!("{other}"),
                },
            )?;
        if !as_json {
            println!(
                "{}: matched manually to {}",
                u.id,
                u.target_addresses.join(", ")
            );
        }
    }
    if let Some(create) = &job.target.create {
        for e in &creates {
            let u = identities::mark_for_creation(store, e, create)?;
            if !as_json {
                println!(
                    "{}: to be created as {} (run `mailferry create`)",
                    u.id,
                    u.target_addresses.join(", ")
                );
            }
        }
    }
    for e in &skips {
        identities::mark_skip(store, e)?;
        if !as_json {
            println!("{}: will not be migrated", e.id);
        }
    }
    if let Some(n) = a.stage {
        identities::set_stage(store, &staged, n)?;
        if !as_json {
            println!(
                "Stage {n}: {}",
                staged
                    .iter()
                    .map(|e| e.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    if as_json {
        print_json(&serde_json::Value::Object(report));
    }
    Ok(ExitCode::SUCCESS)
}

/// After a CSV import, with a target directory: learn the CSV targets' mailbox IDs.
pub fn resolve_csv_targets(job: &Job, store: &mut Store) -> Result<()> {
    if let Some(mut dir) = directory("target", job)? {
        identities::resolve_csv_targets(&mut dir, store)?;
    }
    Ok(())
}

pub fn create(job: &Job, store: &mut Store, as_json: bool) -> Result<ExitCode> {
    let Some(create) = &job.target.create else {
        return Err(usage("create needs [target.create] in the job file"));
    };
    let mut dir = need("target", job, "create")?;
    let password = match &create.initial_password {
        Some(s) => Some(
            s.reveal()
                .map_err(|e| usage(format!("target.create.initial_password: {e}")))?,
        ),
        None => None,
    };
    let entries = store.entries()?;
    let results = identities::create_pending(&mut dir, store, create, password, &entries)?;
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    if as_json {
        let list: Vec<_> = results
            .iter()
            .map(|(id, r)| match r {
                Ok(a) => json!({"id": id, "created": a}),
                Err(e) => json!({"id": id, "error": e}),
            })
            .collect();
        print_json(&json!({"entries": list, "created": results.len() - failed, "failed": failed}));
    } else {
        for (id, r) in &results {
            match r {
                Ok(a) => println!("{id}: created {a}"),
                Err(e) => println!("{id}: NOT created: {e}"),
            }
        }
        println!(
            "{} mailboxes created, {failed} failed.",
            results.len() - failed
        );
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn reports_dir(job: &Job) -> PathBuf {
    job.path.parent().unwrap_or(Path::new(".")).join("reports")
}

pub fn refresh_addresses(
    job: &Job,
    store: &mut Store,
    selection: &Selection,
    as_json: bool,
) -> Result<ExitCode> {
    let entries = store.entries()?;
    let selected: Vec<Entry> = select(&entries, selection)
        .map_err(usage)?
        .into_iter()
        .cloned()
        .collect();
    // The connections are checked first: nothing changes if a directory cannot be reached.
    let mut source = directory("source", job)
        .context("Cannot refresh: the source directory is not reachable")?;
    let mut target = directory("target", job)
        .context("Cannot refresh: the target directory is not reachable")?;
    let record = identities::refresh_addresses(source.as_mut(), target.as_mut(), store, &selected)?;
    let removed_next: Vec<String> = store.missing_source_ids()?;

    let dir = reports_dir(job);
    std::fs::create_dir_all(&dir).with_context(|| format!("Unable to create {}", dir.display()))?;
    let stem = format!(
        "refresh-{}",
        record
            .started
            .replace([':', '-'], "")
            .replace('T', "-")
            .trim_end_matches('Z')
    );
    let html = dir.join(format!("{stem}.html"));
    let html_abs = std::path::absolute(&html).unwrap_or(html.clone());
    let html_str = html_abs.display().to_string();
    std::fs::write(
        &html,
        report::refresh::html(&job.name, &record, &removed_next),
    )?;
    std::fs::write(
        dir.join(format!("{stem}.csv")),
        report::refresh::csv(&record),
    )?;
    let v = report::refresh::json(&record, &removed_next, Some(&html_str));
    std::fs::write(
        dir.join(format!("{stem}.json")),
        serde_json::to_string_pretty(&v)?,
    )?;
    if as_json {
        print_json(&v);
    } else {
        print!("{}", report::refresh::summary(&record, &removed_next));
        println!("Report: {html_str} (also .csv and .json)");
    }
    Ok(ExitCode::SUCCESS)
}

/// SPEC §6: entries whose source mailbox was missing go at the next `migrate` and when the job
/// file changes. Returns the IDs removed (and says so on standard error).
pub fn remove_missing(store: &mut Store, why: &str) -> Result<Vec<String>> {
    let removed = identities::remove_missing(store)?;
    if !removed.is_empty() {
        eprintln!(
            "{why}: removed {} entries whose source mailbox is missing: {}",
            removed.len(),
            removed.join(", ")
        );
    }
    Ok(removed)
}

/// Notices an edited job file (by its SHA-256) and removes missing-source entries then.
pub fn notice_job_change(job: &Job, store: &mut Store) -> Result<()> {
    use sha2::Digest;
    let bytes = std::fs::read(&job.path)
        .with_context(|| format!("Unable to read {}", job.path.display()))?;
    let digest = sha2::Sha256::digest(&bytes);
    let hash: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let before = store.meta("job_file_sha256")?;
    if before.as_deref().is_some_and(|b| b != hash) {
        remove_missing(store, "The job file changed")?;
    }
    store.set_meta("job_file_sha256", &hash)?;
    Ok(())
}
