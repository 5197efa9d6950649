//! The `mailferry` command: parses the command line, calls one application service of
//! `mailferry_core::app` per command with the standard adapters, and prints its outcome.
//! No migration rule lives here: the web UI calls the same services.

mod progress;
mod serve;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use mailferry_adapters::Standard;
use mailferry_core::app::check::CheckOutcome;
use mailferry_core::app::matching::MatchRequest;
use mailferry_core::app::report::{ReportFormat, ReportKind as Kind};
use mailferry_core::app::{self, App, AppError};
use mailferry_core::entries::Selection;
use mailferry_core::job::{ConnectionKind, Job, template};
use mailferry_core::model::RunId;
use mailferry_core::report::human_bytes;
use mailferry_core::text::counted;

#[derive(Parser)]
#[command(
    name = "mailferry",
    version,
    about = "Move every mailbox of an organisation from one mail server to another",
    long_about = "Move every mailbox of an organisation from one mail server to another, and keep \
                  moving what is new until the switch-over, without duplicating or losing a \
                  message.\n\nExit status: 0 success; 1 some entries failed; 2 bad usage, bad job \
                  file or bad input (nothing changed); 3 migrate stopped by SIGINT or SIGTERM \
                  (run it again to continue). A worker stopped by SIGINT or SIGTERM exits 0."
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
        /// Queue the selected entries' passes for `mailferry worker` processes instead of
        /// passing them here
        #[arg(long)]
        enqueue_only: bool,
        #[arg(long)]
        json: bool,
    },
    /// Pass the entries queued by `migrate --enqueue-only`, `[migration] concurrency` at a
    /// time, and wait for more, until SIGTERM or SIGINT (then the passes in progress finish
    /// and it exits 0)
    Worker { job: PathBuf },
    /// The worker processes of the job: host, PID, heartbeat, passes, messages copied
    Workers {
        job: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Compare the ledger with both servers: copies the target lacks, source messages gone
    Verify {
        job: PathBuf,
        /// An entry ID, a source or target address, or a login (repeatable)
        #[arg(long = "mailbox", value_name = "M")]
        mailboxes: Vec<String>,
        /// Every entry of the job
        #[arg(long)]
        all: bool,
        /// Forget the rows whose copy the target lacks, so the next migrate copies them again
        #[arg(long)]
        repair: bool,
        #[arg(long)]
        json: bool,
    },
    /// The entry list: source, target, origin, stage, state, items copied and failed
    Status {
        job: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Write a report of the latest run (or of the run given by --run; --list lists them)
    Report {
        job: PathBuf,
        #[arg(long, value_enum, default_value = "migration")]
        kind: ReportKind,
        #[arg(long, value_enum, default_value = "html")]
        format: Format,
        /// Where to write it (default: standard output)
        #[arg(long)]
        out: Option<PathBuf>,
        /// The run to report on, as `report --list` numbers it (default: the latest)
        #[arg(long, value_name = "N")]
        run: Option<i64>,
        /// List every recorded run, newest first, instead of writing a report
        #[arg(long, conflicts_with_all = ["out", "run"])]
        list: bool,
        /// With --list: the list as JSON
        #[arg(long, requires = "list")]
        json: bool,
    },
    /// The web console for the job: prints `Open http://HOST:PORT/?token=…` first
    Serve {
        job: PathBuf,
        /// Address to listen on (default 127.0.0.1:8025; 127.0.0.1:0 picks a free port)
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
    },
    /// The job's state database
    #[command(subcommand)]
    State(StateCommand),
}

#[derive(Subcommand)]
enum StateCommand {
    /// Copy the job's whole state into another, empty store (SQLite to PostgreSQL, or back);
    /// then point the job's `state` at it
    Copy {
        job: PathBuf,
        /// postgres://USER@HOST:PORT/DB?sslmode=… (its password from MAILFERRY_STATE_PASSWORD
        /// or ~/.pgpass), or sqlite://FILE (beside the job file when relative)
        #[arg(long, value_name = "URL")]
        to: String,
        #[arg(long)]
        json: bool,
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

/// A failed command: what to print and the exit status (SPEC §4: 2 for bad usage or input
/// with nothing changed, 1 otherwise).
#[derive(Debug)]
struct Failed {
    code: u8,
    error: anyhow::Error,
}

impl From<AppError> for Failed {
    fn from(e: AppError) -> Failed {
        Failed {
            code: e.exit_code(),
            error: e.into(),
        }
    }
}

impl From<anyhow::Error> for Failed {
    fn from(error: anyhow::Error) -> Failed {
        Failed { code: 1, error }
    }
}

fn usage(msg: impl Into<String>) -> Failed {
    Failed {
        code: 2,
        error: anyhow::anyhow!(msg.into()),
    }
}

type Outcome = std::result::Result<ExitCode, Failed>;

fn main() -> ExitCode {
    tune_malloc();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("mailferry: {}", error_text(&f.error));
            ExitCode::from(f.code)
        }
    }
}

/// An error and its causes on one line, `outer: cause: cause`, leaving out a cause whose text
/// the line already holds (most of our errors show their source in their own text, and
/// anyhow's `{:#}` would print it twice).
fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

/// glibc's malloc, set for a process whose large allocations are message bodies of up to
/// tens of megabytes, made on one thread (a fetcher) and freed on another (an appender).
///
/// By default glibc serves an allocation above 128 KiB with its own mmap, but raises that
/// threshold to the size of each such block freed (up to 32 MiB): after the first large
/// message, every body up to that size comes from the arenas, whose freed memory stays in the
/// process, and each thread gets an arena of its own. The benchmark's medium corpus at
/// concurrency 4 then peaked at 130 MB of RSS with only 32 MB of bodies in flight; with the
/// threshold fixed at 256 KiB a body is mapped when it arrives and unmapped when it is stored,
/// and the peak was 50 MB (bench/README.md). Two arenas are enough for threads that spend
/// their time waiting on sockets. The `MALLOC_MMAP_THRESHOLD_` and `MALLOC_ARENA_MAX`
/// environment variables still win, for measuring.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    let unset = |name: &str| std::env::var_os(name).is_none();
    // SAFETY: mallopt only changes malloc's parameters, and runs before any other thread.
    unsafe {
        if unset("MALLOC_MMAP_THRESHOLD_") {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
        }
        if unset("MALLOC_ARENA_MAX") {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

/// Commands that only print what the state holds end as `ls` and `cat` do when their reader
/// goes away (`mailferry status --json | head`): killed by SIGPIPE, not panicking on the
/// print that fails with EPIPE (Rust ignores SIGPIPE). The other commands keep ignoring it:
/// a migration must not end because the pipe reading its output closed.
#[cfg(unix)]
fn die_of_sigpipe() {
    // SAFETY: restores the default action of one signal; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn die_of_sigpipe() {}

/// Notices from the services (entries removed, …) go to standard error.
fn notice(text: &str) {
    eprintln!("{text}");
}

fn run(cli: Cli) -> Outcome {
    let (path, json) = match &cli.command {
        Command::Init { job } => return init(job),
        Command::Serve { job, listen } => return serve::run(job, *listen),
        Command::State(StateCommand::Copy { job, json, .. }) => (job.clone(), *json),
        Command::Check { job, json }
        | Command::Discover { job, json }
        | Command::Match { job, json, .. }
        | Command::Create { job, json }
        | Command::RefreshAddresses { job, json, .. }
        | Command::Migrate { job, json, .. }
        | Command::Status { job, json }
        | Command::Workers { job, json }
        | Command::Verify { job, json, .. } => (job.clone(), *json),
        Command::Worker { job } => (job.clone(), false),
        Command::Report { job, .. } => (job.clone(), false),
    };
    if matches!(
        cli.command,
        Command::Status { .. } | Command::Workers { .. } | Command::Report { .. }
    ) {
        die_of_sigpipe();
    }
    let job = load(&path)?;
    let app = App::new(&job, &Standard).with_notices(&notice);
    match cli.command {
        // Answered above, before any job is loaded.
        Command::Init { job } => init(&job),
        Command::Check { .. } => check(&app, json),
        Command::Discover { .. } => {
            let d = app::discover::discover(&app)?;
            if json {
                print_json(&d)?;
            } else {
                println!(
                    "Discovered {} ({} already known).",
                    counted(d.added.len(), "new mailbox", "new mailboxes"),
                    d.known
                );
                for w in &d.warnings {
                    println!("  skipped: {w}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Match {
            csv,
            auto,
            set,
            create,
            skip,
            stage,
            mailboxes,
            ..
        } => {
            let req = MatchRequest {
                auto,
                auto_within: None,
                set,
                create,
                skip,
                stage,
                mailboxes,
            };
            match_cmd(&app, csv.as_deref(), &req, json)
        }
        Command::Create { .. } => create(&app, json),
        Command::RefreshAddresses { mailboxes, all, .. } => {
            let selection = match (all, mailboxes.is_empty()) {
                (true, true) => Selection::All,
                (false, false) => Selection::Mailboxes(mailboxes),
                (false, true) => {
                    return Err(usage("say which entries to refresh: --all or --mailbox M"));
                }
                (true, false) => return Err(usage("use either --all or --mailbox")),
            };
            let r = app::refresh::refresh(&app, &selection)?;
            if json {
                print_json(&r.report)?;
            } else {
                print!("{}", r.summary());
                println!(
                    "Report: {} (also .csv and .json)",
                    r.report.report.as_deref().unwrap_or("")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate {
            mailboxes,
            all,
            stage,
            enqueue_only,
            ..
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
            if enqueue_only {
                return enqueue(&app, &selection, json);
            }
            migrate(&app, &selection, json)
        }
        Command::Worker { .. } => worker(&app),
        Command::Workers { .. } => workers(&app, json),
        Command::Status { .. } => status(&app, json),
        Command::Verify {
            mailboxes,
            all,
            repair,
            ..
        } => {
            let selection = match (all, mailboxes.is_empty()) {
                (true, true) => Selection::All,
                (false, false) => Selection::Mailboxes(mailboxes),
                (false, true) => {
                    return Err(usage("say which entries to verify: --all or --mailbox M"));
                }
                (true, false) => return Err(usage("use either --all or --mailbox")),
            };
            verify(&app, &selection, repair, json)
        }
        Command::Report {
            list: true, json, ..
        } => report_list(&app, json),
        Command::Report {
            kind,
            format,
            out,
            run,
            ..
        } => report(&app, kind, format, run, out.as_deref()),
        // Answered above, before any job is loaded.
        Command::Serve { job, listen } => serve::run(&job, listen),
        Command::State(StateCommand::Copy { to, .. }) => state_copy(&app, &to, json),
    }
}

fn load(path: &Path) -> std::result::Result<Job, Failed> {
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

fn init(path: &Path) -> Outcome {
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

/// How the terminal names entries: by their source address, with the entry ID beside it
/// when the ID is something else (a directory's UUID, a CSV's Source ID).
struct Names(std::collections::HashMap<String, String>);

impl Names {
    fn of(app: &App<'_>) -> Names {
        // Only for display: without the state, entries are shown by their IDs.
        let entries = app::status::status(app)
            .map(|s| s.entries)
            .unwrap_or_default();
        Names(
            entries
                .into_iter()
                .filter_map(|e| {
                    let address = e.source.addresses.first()?.clone();
                    (address != e.id.as_str()).then(|| (e.id.into_string(), address))
                })
                .collect(),
        )
    }

    fn of_id(&self, id: &impl std::fmt::Display) -> String {
        let id = id.to_string();
        match self.0.get(&id) {
            Some(address) => format!("{address} ({id})"),
            None => id,
        }
    }
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn check(app: &App<'_>, json: bool) -> Outcome {
    let c: CheckOutcome = app::check::check(app)?;
    if json {
        print_json(&c)?;
    } else {
        for s in &c.servers {
            for line in &s.checks {
                let status = if line.ok { "OK" } else { "FAIL" };
                println!("{:<7} {status:<4} {}: {}", s.side, line.check, line.detail);
            }
        }
    }
    Ok(ExitCode::from(c.exit_code()))
}

fn match_cmd(app: &App<'_>, csv: Option<&Path>, req: &MatchRequest, json: bool) -> Outcome {
    let mut out = serde_json::Map::new();
    if csv.is_some() || !req.any() {
        let i = app::matching::import_csv(app, csv)?;
        if json {
            out.insert("import".into(), serde_json::to_value(&i).context("JSON")?);
        } else {
            println!(
                "Imported {}: {} added, {} updated (ledgers kept).",
                i.file.display(),
                counted(i.added, "entry", "entries"),
                i.updated
            );
        }
        if !req.any() && json {
            // The import alone: its keys at the top, as before.
            print_json(&i)?;
            return Ok(ExitCode::SUCCESS);
        }
    }
    if !req.any() {
        return Ok(ExitCode::SUCCESS);
    }
    let m = app::matching::match_entries(app, req)?;
    if json {
        let v = serde_json::to_value(&m).context("JSON")?;
        if let serde_json::Value::Object(map) = v {
            out.extend(map);
        }
        print_json(&out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let names = Names::of(app);
    if let Some(r) = &m.auto {
        for (id, target, rule) in &r.matched {
            println!("{}: matched to {target} (same {rule})", names.of_id(id));
        }
        for (id, why) in &r.unmatched {
            println!("{}: not matched: {why}", names.of_id(id));
        }
        println!(
            "Automatic matching: {} matched, {} left unmatched.",
            r.matched.len(),
            r.unmatched.len()
        );
    }
    for u in &m.manual {
        println!(
            "{}: matched manually to {}",
            names.of_id(&u.id),
            u.addresses.join(", ")
        );
    }
    for u in &m.to_create {
        println!(
            "{}: to be created as {} (run `mailferry create`)",
            names.of_id(&u.id),
            u.addresses.join(", ")
        );
    }
    for id in &m.skipped {
        println!("{}: will not be migrated", names.of_id(id));
    }
    if let Some(s) = &m.stage {
        let ids: Vec<String> = s.entries.iter().map(|e| names.of_id(e)).collect();
        println!("Stage {}: {}", s.stage, ids.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

fn create(app: &App<'_>, json: bool) -> Outcome {
    let c = app::create::create(app)?;
    if json {
        print_json(&c)?;
    } else {
        let names = Names::of(app);
        for e in &c.entries {
            match (&e.created, &e.error) {
                (Some(a), _) => match &e.note {
                    Some(note) => println!("{}: created {a} ({note})", names.of_id(&e.id)),
                    None => println!("{}: created {a}", names.of_id(&e.id)),
                },
                (None, Some(err)) => println!("{}: NOT created: {err}", names.of_id(&e.id)),
                (None, None) => {}
            }
        }
        println!(
            "{} created, {} failed.",
            counted(c.created, "mailbox", "mailboxes"),
            c.failed
        );
    }
    Ok(if c.failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The exit status of a `migrate` stopped by a signal.
const STOPPED: u8 = 3;

/// Set by the first SIGINT / SIGTERM during `migrate`; a plain static because a signal
/// handler may touch nothing else.
static STOP: AtomicBool = AtomicBool::new(false);

/// The first signal asks the runner to stop: the passes in flight finish their attempt and
/// are recorded, no other entry starts. The second exits at once, which is as safe as a kill:
/// every APPEND's intent is committed before the APPEND is sent, so the next `migrate`
/// reconciles what was on the wire, and SQLite rolls back a transaction cut short.
extern "C" fn on_stop_signal(_: libc::c_int) {
    if STOP.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe (std::process::exit is not: it runs exit
        // handlers and may take locks a stopped thread holds).
        unsafe { libc::_exit(130) };
    }
}

fn stop_on_signals() {
    // SAFETY: the handler only swaps an atomic and calls _exit, both async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

fn migrate(app: &App<'_>, selection: &Selection, json: bool) -> Outcome {
    let bars = progress::Bars::new(std::io::stderr().is_terminal() && !json, 0);
    stop_on_signals();
    let outcome = app::migrate::migrate(app, selection, &bars, &STOP)?;
    bars.finish();
    let stopped = STOP.load(Ordering::SeqCst).then(|| {
        format!(
            "Stopped by a signal: {} not started; run migrate again to continue",
            counted(outcome.not_started.len(), "mailbox", "mailboxes")
        )
    });
    let names = Names::of(app);
    if !json {
        for (id, origin) in &outcome.waiting {
            eprintln!("{}: not migrated ({origin})", names.of_id(id));
        }
    }
    // Said even with --json (on standard error): the admin must learn that another process
    // is at work on the job.
    for (id, holder) in &outcome.busy {
        eprintln!(
            "{}: not migrated by this process: another mailferry process ({}) has been \
             passing it since {}",
            names.of_id(id),
            holder.holder,
            holder.since
        );
    }
    for id in &outcome.taken_over {
        eprintln!(
            "{}: taken over by another mailferry process during this process's pass (its \
             claim ran out: paused or cut off): that process's pass is the one recorded, and \
             this one wrote nothing after the take-over",
            names.of_id(id)
        );
    }
    let Some(summary) = &outcome.summary else {
        if json {
            print_json(&outcome.report())?;
        } else {
            println!("Nothing to migrate: no selected entry has a target mailbox.");
        }
        if let Some(line) = stopped {
            eprintln!("{line}");
            return Ok(ExitCode::from(STOPPED));
        }
        return Ok(ExitCode::SUCCESS);
    };
    if json {
        let mut report = mailferry_core::report::MigrationReport::new(summary);
        report.peak_rss_bytes = peak_rss_bytes();
        print_json(&report)?;
    } else {
        for e in &summary.entries {
            let mut line = format!(
                "{:<30} {:<9} copied {:>6}  skipped {:>5}  failed {:>4}  moved {:>4}  flags {:>5}  {:>9}  {:.1}s",
                names.of_id(&e.entry_id),
                e.state.as_str(),
                e.copied,
                e.skipped,
                e.failed,
                e.moved,
                e.flags_updated,
                human_bytes(e.bytes),
                e.seconds
            );
            if let Some(err) = &e.error {
                line.push_str(&format!("\n    error: {err}"));
            }
            for k in &e.keywords_dropped {
                line.push_str(&format!(
                    "\n    {}: {} custom keywords dropped (the target cannot store them)",
                    k.folder, k.count
                ));
            }
            if e.throttled_seconds > 0.0 {
                line.push_str(&format!(
                    "\n    throttled: waited {:.1}s on the servers' throttling replies",
                    e.throttled_seconds
                ));
            }
            println!("{line}");
        }
        for f in &summary.failures {
            println!(
                "    not copied: {} {} UID {} ({}, Message-ID {}): {}",
                f.entry_id,
                f.folder,
                f.uid.map(|u| u.to_string()).unwrap_or_default(),
                human_bytes(f.size.unwrap_or(0)),
                f.message_id.as_deref().unwrap_or("none"),
                f.reason
            );
        }
        println!(
            "Pass done in {:.1}s: {} copied ({}), {} failed; {} of {} fully migrated.",
            summary.seconds,
            counted(summary.copied(), "message", "messages"),
            human_bytes(summary.bytes()),
            summary.failed(),
            summary.migrated(),
            counted(summary.entries.len(), "mailbox", "mailboxes")
        );
    }
    if let Some(line) = stopped {
        // With --json the report stays the only thing on standard output.
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
        return Ok(ExitCode::from(STOPPED));
    }
    Ok(if outcome.has_failures() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn enqueue(app: &App<'_>, selection: &Selection, json: bool) -> Outcome {
    let q = app::worker::enqueue(app, selection)?;
    if json {
        print_json(&q)?;
        return Ok(ExitCode::SUCCESS);
    }
    let names = Names::of(app);
    for (id, origin) in &q.waiting {
        eprintln!("{}: not queued ({origin})", names.of_id(id));
    }
    for id in &q.queued {
        println!("{}: queued", names.of_id(id));
    }
    for id in &q.already_queued {
        println!(
            "{}: queued already (it keeps its place; a pass running now is followed by \
             another)",
            names.of_id(id)
        );
    }
    println!(
        "Queued {} ({} queued already); {} in the queue for `mailferry worker`.",
        counted(q.queued.len(), "pass", "passes"),
        q.already_queued.len(),
        counted(q.in_queue, "entry waits", "entries wait"),
    );
    Ok(ExitCode::SUCCESS)
}

/// A worker's log: one line per pass, on standard output (a journal or `docker logs`).
struct PassLog;

impl mailferry_core::ports::Observer for PassLog {
    fn entry_finished(&self, r: &mailferry_core::model::RunEntry) {
        let mut line = format!(
            "{} {}: {} copied {} ({}), failed {}, in {:.1}s",
            mailferry_core::model::now(),
            r.entry_id,
            r.state.as_str(),
            r.copied,
            human_bytes(r.bytes),
            r.failed,
            r.seconds
        );
        if let Some(err) = &r.error {
            line.push_str(&format!(": {err}"));
        }
        println!("{line}");
    }
}

fn worker(app: &App<'_>) -> Outcome {
    stop_on_signals();
    println!(
        "{} worker {} on {}: waiting for queued passes (SIGTERM or SIGINT stops it)",
        mailferry_core::model::now(),
        mailferry_core::ports::Backends::process_name(&Standard),
        app.job.path.display()
    );
    let out = app::worker::work(app, &PassLog, &STOP)?;
    for id in &out.taken_over {
        eprintln!(
            "{id}: taken over by another mailferry process during this worker's pass (its \
             claim ran out): that process's pass is the one recorded"
        );
    }
    println!(
        "{} worker {} stopped: {}, {} copied ({}) in {:.0}s; recorded as run {}. Queued \
         passes not started stay queued.",
        mailferry_core::model::now(),
        out.name,
        counted(out.stats.passes, "pass", "passes"),
        counted(out.stats.messages, "message", "messages"),
        human_bytes(out.stats.bytes),
        out.seconds,
        out.run.0
    );
    Ok(ExitCode::SUCCESS)
}

fn workers(app: &App<'_>, json: bool) -> Outcome {
    let w = app::worker::workers(app)?;
    if json {
        print_json(&w)?;
        return Ok(ExitCode::SUCCESS);
    }
    if w.workers.is_empty() {
        println!("No worker has run on this job yet: start one with `mailferry worker JOB`.");
    } else {
        println!(
            "{:<28} {:>8} {:<8} {:<20} {:>9} {:>7} {:>9} {:>10} {:>8}",
            "HOST", "PID", "STATE", "STARTED", "HEARTBEAT", "PASSES", "MESSAGES", "BYTES", "MSG/S"
        );
        for x in &w.workers {
            println!(
                "{:<28} {:>8} {:<8} {:<20} {:>8.0}s {:>7} {:>9} {:>10} {:>8.1}",
                x.host,
                x.pid.map(|p| p.to_string()).unwrap_or_default(),
                x.state.as_str(),
                x.started,
                x.heartbeat_age_seconds,
                x.passes,
                x.messages,
                human_bytes(x.bytes),
                x.messages_per_second
            );
        }
    }
    println!("{} queued.", counted(w.queued, "entry", "entries"));
    Ok(ExitCode::SUCCESS)
}

fn verify(app: &App<'_>, selection: &Selection, repair: bool, json: bool) -> Outcome {
    let v = app::verify::verify(app, selection, repair)?;
    if json {
        print_json(&v)?;
    } else {
        let names = Names::of(app);
        for e in &v.entries {
            let name = names.of_id(&e.id);
            if let Some(err) = &e.error {
                println!("{name}: not verified: {err}");
                continue;
            }
            println!(
                "{name}: {} copies agree; {} missing on the target; {} gone from the source; \
                 {} not checked (pending or without a UID); {} target messages the ledger does \
                 not name",
                e.agreed,
                e.missing_on_target.len(),
                e.gone_from_source,
                e.unchecked,
                e.unknown_on_target
            );
            for (folder, uid) in &e.missing_on_target {
                println!("    missing: {folder} UID {uid}");
            }
            if e.repaired > 0 {
                println!(
                    "    repaired: {} forgotten; the next migrate copies {} again",
                    counted(e.repaired, "row", "rows"),
                    if e.repaired == 1 { "it" } else { "them" }
                );
            } else if !e.missing_on_target.is_empty() {
                println!("    run `mailferry verify --repair`, then migrate, to copy them again");
            }
        }
    }
    Ok(if v.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn status(app: &App<'_>, json: bool) -> Outcome {
    let s = app::status::status(app)?;
    if json {
        print_json(&s)?;
        return Ok(ExitCode::SUCCESS);
    }
    if s.entries.is_empty() {
        println!(
            "No entries yet: import them with `mailferry match {} --csv FILE`.",
            app.job.path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let w = s
        .entries
        .iter()
        .map(|e| e.id.as_str().chars().count())
        .max()
        .unwrap_or(2)
        .clamp(2, 40);
    println!(
        "{:<w$} {:<28} {:<28} {:<16} {:>5} {:<9} {:>7} {:>6}  last pass",
        "ID", "SOURCE", "TARGET", "ORIGIN", "STAGE", "STATE", "COPIED", "FAILED"
    );
    for e in &s.entries {
        println!(
            "{:<w$} {:<28} {:<28} {:<16} {:>5} {:<9} {:>7} {:>6}  {}",
            e.id.as_str(),
            e.source.addresses.first().unwrap_or(&e.source.login),
            e.target
                .as_ref()
                .map(|t| t.addresses.first().unwrap_or(&t.login).as_str())
                .unwrap_or("-"),
            e.origin.as_str(),
            e.stage.map(|s| s.to_string()).unwrap_or_default(),
            e.state.as_str(),
            e.copied,
            e.failed,
            e.last_pass.as_deref().unwrap_or("never")
        );
        if let Some(err) = &e.error {
            println!("    last error: {err}");
        }
        let dropped: u64 = e.keywords_dropped.iter().map(|k| k.count).sum();
        if dropped > 0 {
            let folders: Vec<String> = e
                .keywords_dropped
                .iter()
                .map(|k| format!("{} {}", k.folder, k.count))
                .collect();
            println!(
                "    last pass: {dropped} custom keywords dropped (the target cannot store them: {})",
                folders.join(", ")
            );
        }
        if e.throttled_seconds > 0.0 {
            println!(
                "    last pass: waited {:.1}s on the servers' throttling replies",
                e.throttled_seconds
            );
        }
        if let Some(note) = &e.match_note {
            println!("    not matched: {note}");
        }
        if e.missing_source {
            println!("    the source mailbox is missing: removed at the next job edit or migrate");
        }
        if let Some(q) = &e.queued
            && e.held_by.is_none()
        {
            println!("    queued for the workers since {q}");
            if e.queue_failures > 0 {
                println!(
                    "    its last {} failed; {}",
                    match e.queue_failures {
                        1 => "pass".to_string(),
                        n => format!("{n} passes in a row"),
                    },
                    match e.queue_retry_in_seconds {
                        0 => "a worker may try it again now".to_string(),
                        s => format!("no worker tries it again for {s} s"),
                    }
                );
            }
        }
        if let Some(p) = s.passes.iter().find(|p| p.entry == e.id) {
            println!(
                "    being migrated by {} {} since {} (heartbeat {:.0}s ago): {} of {} \
                 messages copied ({} of {})",
                if p.worker { "worker" } else { "process" },
                p.holder,
                p.since,
                p.heartbeat_age_seconds,
                p.progress.copied,
                p.progress.planned_messages,
                human_bytes(p.progress.bytes),
                human_bytes(p.progress.planned_bytes)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn state_copy(app: &App<'_>, to: &str, json: bool) -> Outcome {
    let dir = app.job.path.parent().unwrap_or(Path::new("."));
    let to = app::state::destination(to, dir)?;
    let out = app::state::copy(app, &to)?;
    if json {
        print_json(&out)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Copied the state into {}: {}, {}, {}, {} ({}, {} not copied), {}, {}.",
        out.to,
        counted(out.entries, "entry", "entries"),
        counted(out.ledger_rows, "ledger row", "ledger rows"),
        counted(out.checkpoints, "checkpoint", "checkpoints"),
        counted(out.runs, "run", "runs"),
        counted(out.run_lines, "line", "lines"),
        counted(out.failures, "message", "messages"),
        counted(out.refreshes, "refresh", "refreshes"),
        counted(out.queued, "queued pass", "queued passes")
    );
    println!(
        "The job still uses its old state: set `state = \"{}\"` in {} to go on from the copy \
         (and keep the old one until the next pass has run).",
        out.to,
        app.job.path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn report_list(app: &App<'_>, json: bool) -> Outcome {
    let runs = app::report::runs(app)?;
    if json {
        print_json(&serde_json::json!({ "runs": runs }))?;
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        println!("No run is recorded for this job yet.");
    }
    for r in &runs {
        let what = match (r.entries, r.copied, r.failed) {
            (Some(n), Some(c), Some(f)) => {
                format!(
                    "{}, {c} copied, {f} not copied",
                    counted(n, "mailbox", "mailboxes")
                )
            }
            _ => String::new(),
        };
        let end = r.finished.as_deref().unwrap_or(if r.kind == "migration" {
            "(not finished)"
        } else {
            ""
        });
        println!(
            "{:<9} --run {:<4} {}  {end:<20}  {what}",
            r.kind, r.run, r.started
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn report(
    app: &App<'_>,
    kind: ReportKind,
    format: Format,
    run: Option<i64>,
    out: Option<&Path>,
) -> Outcome {
    let kind = match kind {
        ReportKind::Migration => Kind::Migration,
        ReportKind::Refresh => Kind::Refresh,
    };
    let format = match format {
        Format::Html => ReportFormat::Html,
        Format::Csv => ReportFormat::Csv,
        Format::Json => ReportFormat::Json,
    };
    let text = app::report::report_of(app, kind, format, run.map(RunId))?;
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

#[cfg(test)]
mod tests {
    use super::error_text;

    /// An error whose own text shows its source, as `AppError::Store` does.
    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "State database: {}", self.0)
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_already_in_the_text_is_not_printed_twice_and_others_are_kept() {
        let io = || std::io::Error::other("file is not a database");
        let e = anyhow::Error::new(Outer(io()));
        assert_eq!(error_text(&e), "State database: file is not a database");
        let e = anyhow::Error::new(io()).context("reading job.toml");
        assert_eq!(error_text(&e), "reading job.toml: file is not a database");
    }
}
