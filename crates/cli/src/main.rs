//! The `mailferry` command: parses the command line, loads the job, and wires the core's
//! pieces together. No migration logic lives here.

mod check;
mod identity;
mod progress;
mod serve;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use mailferry_core::csvfile::parse_mailboxes_csv;
use mailferry_core::engine::EntryPasswords;
use mailferry_core::entries::{Selection, entries_from_csv, select};
use mailferry_core::job::{Auth, ConnectionKind, Job, StateLocation, template};
use mailferry_core::migrate::{self, is_migratable};
use mailferry_core::report;
use mailferry_core::store::Store;

#[derive(Parser)]
#[command(
    name = "mailferry",
    version,
    about = "Move every mailbox of an organisation from one mail server to another",
    long_about = "Move every mailbox of an organisation from one mail server to another, and keep \
                  moving what is new until the switch-over, without duplicating or losing a \
                  message.\n\nExit status: 0 success; 1 some entries failed; 2 bad usage, bad job \
                  file or bad input (nothing changed)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a commented job file template
    Init { job: PathBuf },
    /// Connect to every server of the job, log in, and say what works
    Check {
        job: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Read the source mailboxes from the source directory into the job's entries
    Discover {
        job: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Pair source mailboxes with target mailboxes: from a CSV, automatically, or by hand
    Match {
        job: PathBuf,
        /// Import entries from this CSV (default: the job's [mailboxes] csv, when no other
        /// option is given)
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Match unmatched entries with the target directory's mailboxes
        #[arg(long)]
        auto: bool,
        /// Manual match: M=TARGET_ADDRESS (repeatable)
        #[arg(long = "set", value_name = "M=ADDRESS")]
        set: Vec<String>,
        /// Create this entry's mailbox on the target (repeatable); see `create`
        #[arg(long = "create", value_name = "M")]
        create: Vec<String>,
        /// Do not migrate this entry (repeatable)
        #[arg(long = "skip", value_name = "M")]
        skip: Vec<String>,
        /// Put the --mailbox entries in stage N
        #[arg(long)]
        stage: Option<u32>,
        /// The entries for --stage (repeatable)
        #[arg(long = "mailbox", value_name = "M")]
        mailboxes: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Create the target mailboxes of entries waiting for creation
    Create {
        job: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Look every selected entry up again by mailbox ID in both directories and update its
    /// addresses
    RefreshAddresses {
        job: PathBuf,
        /// An entry ID, a source or target address, or a login (repeatable)
        #[arg(long = "mailbox", value_name = "M")]
        mailboxes: Vec<String>,
        /// Every entry of the job
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Copy what is new: a full pass for new entries, a delta pass for the rest
    Migrate {
        job: PathBuf,
        /// An entry ID, a source or target address, or a login (repeatable)
        #[arg(long = "mailbox", value_name = "M")]
        mailboxes: Vec<String>,
        /// Every entry of the job
        #[arg(long)]
        all: bool,
        /// The entries of one stage
        #[arg(long)]
        stage: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// The entry list: source, target, origin, stage, state, items copied and failed
    Status {
        job: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Write a report of the latest run
    Report {
        job: PathBuf,
        #[arg(long, value_enum, default_value = "migration")]
        kind: ReportKind,
        #[arg(long, value_enum, default_value = "html")]
        format: Format,
        /// Where to write it (default: standard output)
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The web console for the job: prints `Open http://HOST:PORT/?token=…` first
    Serve {
        job: PathBuf,
        /// Address to listen on (default 127.0.0.1:8025; 127.0.0.1:0 picks a free port)
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ReportKind {
    Migration,
    Refresh,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Html,
    Csv,
    Json,
}

/// An error that means "bad usage or input, nothing changed" (exit status 2).
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

pub(crate) fn usage(msg: impl Into<String>) -> anyhow::Error {
    Usage(msg.into()).into()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mailferry: {e:#}");
            if e.downcast_ref::<Usage>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Init { job } => init(&job),
        Command::Check { job, json } => {
            let job = load(&job)?;
            let sample = open_store(&job)?.entries()?.into_iter().find(is_migratable);
            let passwords = read_passwords(&job)?;
            check::run(&job, sample.as_ref(), &passwords, json)
        }
        Command::Discover { job, json } => {
            let job = load(&job)?;
            identity::discover(&job, &mut open_store(&job)?, json)
        }
        Command::Match {
            job,
            csv,
            auto,
            set,
            create,
            skip,
            stage,
            mailboxes,
            json,
        } => {
            let job = load(&job)?;
            let actions = identity::MatchActions {
                auto,
                set,
                create,
                skip,
                stage,
                mailboxes,
            };
            let mut store = open_store(&job)?;
            if csv.is_some() || !actions.any() {
                match_csv(&job, &mut store, csv, json)?;
            }
            if actions.any() {
                identity::match_actions(&job, &mut store, &actions, json)
            } else {
                Ok(ExitCode::SUCCESS)
            }
        }
        Command::Create { job, json } => {
            let job = load(&job)?;
            identity::create(&job, &mut open_store(&job)?, json)
        }
        Command::RefreshAddresses {
            job,
            mailboxes,
            all,
            json,
        } => {
            let selection = match (all, mailboxes.is_empty()) {
                (true, true) => Selection::All,
                (false, false) => Selection::Mailboxes(mailboxes),
                (false, true) => {
                    return Err(usage("say which entries to refresh: --all or --mailbox M"));
                }
                (true, false) => return Err(usage("use either --all or --mailbox")),
            };
            let job = load(&job)?;
            identity::refresh_addresses(&job, &mut open_store(&job)?, &selection, json)
        }
        Command::Migrate {
            job,
            mailboxes,
            all,
            stage,
            json,
        } => {
            let selection = match (all, stage, mailboxes.is_empty()) {
                (true, None, true) => Selection::All,
                (false, Some(n), true) => Selection::Stage(n),
                (false, None, false) => Selection::Mailboxes(mailboxes),
                (false, None, true) => {
                    return Err(usage(
                        "say which entries to migrate: --all, --stage N or --mailbox M",
                    ));
                }
                _ => return Err(usage("use only one of --all, --stage and --mailbox")),
            };
            migrate(&load(&job)?, &selection, json)
        }
        Command::Status { job, json } => status(&load(&job)?, json),
        Command::Report {
            job,
            kind,
            format,
            out,
        } => report_cmd(&load(&job)?, kind, format, out.as_deref()),
        Command::Serve { job, listen } => serve::run(&job, listen),
    }
}

fn load(path: &Path) -> Result<Job> {
    let job = Job::load(path).map_err(|e| usage(e.to_string()))?;
    for (side, conn) in [("source", &job.source), ("target", &job.target)] {
        if let ConnectionKind::Imap(imap) = &conn.kind
            && !imap.tls_verify
        {
            eprintln!(
                "mailferry: WARNING: {side}: tls_verify = false: the server's certificate is \
                 not checked, so anyone in between can read the mail and the passwords"
            );
        }
    }
    Ok(job)
}

/// Opens the job's state; notices an edited job file first (SPEC §6 removals).
fn open_store(job: &Job) -> Result<Store> {
    let mut store = match &job.state {
        StateLocation::Sqlite(p) => Store::open(p)
            .with_context(|| format!("Unable to open the state database {}", p.display()))?,
        StateLocation::Postgres(_) => return Err(usage("postgres state is not supported yet")),
    };
    identity::notice_job_change(job, &mut store)?;
    Ok(store)
}

fn init(path: &Path) -> Result<ExitCode> {
    if path.exists() {
        return Err(usage(format!(
            "{} already exists; not overwriting it",
            path.display()
        )));
    }
    std::fs::write(path, template())
        .with_context(|| format!("Unable to write {}", path.display()))?;
    println!(
        "Wrote {}. Edit it, then: mailferry check {0}",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn match_csv(
    job: &Job,
    store: &mut Store,
    csv: Option<PathBuf>,
    as_json: bool,
) -> Result<ExitCode> {
    let path = csv
        .or_else(|| job.mailboxes_csv.clone())
        .ok_or_else(|| usage("no CSV: give --csv FILE or set [mailboxes] csv in the job file"))?;
    let rows = parse_mailboxes_csv(&path).map_err(|e| usage(e.to_string()))?;
    let existing = store.entries()?;
    let entries = entries_from_csv(&rows, &existing);
    let (added, updated) = store.upsert_entries(&entries)?;
    identity::resolve_csv_targets(job, store)?;
    if as_json {
        print_json(&json!({"file": path, "added": added, "updated": updated}));
    } else {
        println!(
            "Imported {}: {added} entries added, {updated} updated (ledgers kept).",
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Per-mailbox passwords, read from the CSV at run time (never stored).
fn read_passwords(job: &Job) -> Result<HashMap<String, EntryPasswords>> {
    let per_mailbox = |c: &mailferry_core::job::Connection| matches!(&c.kind, ConnectionKind::Imap(i) if matches!(i.auth, Auth::PerMailbox));
    if !per_mailbox(&job.source) && !per_mailbox(&job.target) {
        return Ok(HashMap::new());
    }
    let path = job
        .mailboxes_csv
        .as_ref()
        .ok_or_else(|| usage("auth = \"per-mailbox\" needs [mailboxes] csv with the passwords"))?;
    let rows = parse_mailboxes_csv(path).map_err(|e| usage(e.to_string()))?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.source_id,
                EntryPasswords {
                    source: r.source_password,
                    target: r.target_password,
                },
            )
        })
        .collect())
}

fn migrate(job: &Job, selection: &Selection, as_json: bool) -> Result<ExitCode> {
    let mut store = open_store(job)?;
    identity::remove_missing(&mut store, "Before this pass")?;
    let all = store.entries()?;
    let chosen = select(&all, selection).map_err(usage)?;
    let (runnable, waiting): (Vec<_>, Vec<_>) = chosen.into_iter().partition(|e| is_migratable(e));
    for e in &waiting {
        if !as_json {
            eprintln!("{}: not migrated ({})", e.id, e.origin);
        }
    }
    if runnable.is_empty() {
        if as_json {
            print_json(
                &json!({"entries": [], "copied": 0, "failed": 0, "bytes": 0, "seconds": 0.0}),
            );
        } else {
            println!("Nothing to migrate: no selected entry has a target mailbox.");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let passwords = read_passwords(job)?;
    let runnable: Vec<_> = runnable.into_iter().cloned().collect();
    let bars = progress::Bars::new(std::io::stderr().is_terminal() && !as_json, &runnable);
    let summary = migrate::run(job, store, runnable, &passwords, &bars)
        .map_err(|e| usage(format!("{e:#}")))?;
    bars.finish();
    if as_json {
        let mut v = report::migration_json(&summary);
        v["peak_rss_bytes"] = json!(peak_rss_bytes());
        print_json(&v);
    } else {
        for e in &summary.entries {
            let mut line = format!(
                "{:<30} {:<9} copied {:>6}  skipped {:>5}  failed {:>4}  moved {:>4}  flags {:>5}  {:>9}  {:.1}s",
                e.entry_id,
                e.state,
                e.copied,
                e.skipped,
                e.failed,
                e.moved,
                e.flags_updated,
                report::human_bytes(e.bytes),
                e.seconds
            );
            if let Some(err) = &e.error {
                line.push_str(&format!("\n    error: {err}"));
            }
            println!("{line}");
        }
        for f in &summary.failures {
            println!(
                "    not copied: {} {} UID {} ({}, Message-ID {}): {}",
                f.entry_id,
                f.folder,
                f.uid.map(|u| u.to_string()).unwrap_or_default(),
                report::human_bytes(f.size.unwrap_or(0)),
                f.message_id.as_deref().unwrap_or("none"),
                f.reason
            );
        }
        println!(
            "Pass done in {:.1}s: {} messages copied ({}), {} failed; {} of {} mailboxes fully migrated.",
            summary.seconds,
            summary.copied(),
            report::human_bytes(summary.bytes()),
            summary.failed(),
            summary
                .entries
                .iter()
                .filter(|e| e.state == "migrated")
                .count(),
            summary.entries.len()
        );
    }
    Ok(if summary.has_failures() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn status(job: &Job, as_json: bool) -> Result<ExitCode> {
    let store = open_store(job)?;
    let entries = store.entries()?;
    if as_json {
        let list: Vec<_> = entries
            .iter()
            .map(|e| {
                json!({
                    "id": e.id,
                    "source": {"login": e.source_login, "addresses": e.source_addresses},
                    "target": e.target_login.as_ref().map(|l| json!({"login": l, "addresses": e.target_addresses})),
                    "origin": e.origin, "stage": e.stage, "state": e.state,
                    "copied": e.copied, "failed": e.failed, "last_pass": e.last_pass,
                    "error": e.last_error, "match_note": e.match_note,
                    "missing_source": e.missing_source,
                })
            })
            .collect();
        print_json(&json!({"entries": list}));
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        println!(
            "No entries yet: import them with `mailferry match {} --csv FILE`.",
            job.path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:<28} {:<28} {:<10} {:>5} {:<9} {:>7} {:>6}  last pass",
        "ID", "SOURCE", "TARGET", "ORIGIN", "STAGE", "STATE", "COPIED", "FAILED"
    );
    for e in &entries {
        println!(
            "{:<20} {:<28} {:<28} {:<10} {:>5} {:<9} {:>7} {:>6}  {}",
            e.id,
            e.source_addresses.first().unwrap_or(&e.source_login),
            e.target_addresses
                .first()
                .or(e.target_login.as_ref())
                .map(String::as_str)
                .unwrap_or("-"),
            e.origin,
            e.stage.map(|s| s.to_string()).unwrap_or_default(),
            e.state,
            e.copied,
            e.failed,
            e.last_pass.as_deref().unwrap_or("never")
        );
        if let Some(err) = &e.last_error {
            println!("    last error: {err}");
        }
        if let Some(note) = &e.match_note {
            println!("    not matched: {note}");
        }
        if e.missing_source {
            println!("    the source mailbox is missing: removed at the next job edit or migrate");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn report_cmd(job: &Job, kind: ReportKind, format: Format, out: Option<&Path>) -> Result<ExitCode> {
    let store = open_store(job)?;
    let text = match kind {
        ReportKind::Migration => {
            let Some(summary) = report::last_migration(&store)? else {
                bail!(Usage("no migration has run yet for this job".into()));
            };
            match format {
                Format::Json => serde_json::to_string_pretty(&report::migration_json(&summary))?,
                Format::Csv => report::migration_csv(&summary),
                Format::Html => report::migration_html(&job.name, &summary),
            }
        }
        ReportKind::Refresh => {
            let Some(record) = store.last_refresh()? else {
                bail!(Usage("no refresh has run yet for this job".into()));
            };
            let removed_next: Vec<String> = store.missing_source_ids()?;
            match format {
                Format::Json => serde_json::to_string_pretty(&report::refresh::json(
                    &record,
                    &removed_next,
                    None,
                ))?,
                Format::Csv => report::refresh::csv(&record),
                Format::Html => report::refresh::html(&job.name, &record, &removed_next),
            }
        }
    };
    match out {
        Some(p) => {
            std::fs::write(p, text).with_context(|| format!("Unable to write {}", p.display()))?;
            println!("Wrote {}", p.display());
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// This process's peak resident memory (Linux `VmHWM`), for `--json` and the benchmark.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
