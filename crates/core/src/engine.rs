//! The copy engine: one pass over one entry (a source mailbox and its target mailbox).
//!
//! A pass, in order:
//! 1. log in to both servers, read both folder trees, plan the target tree, create missing
//!    folders and make the target's subscriptions for the job's folders equal the source's;
//! 2. resolve `pending` ledger rows left by a killed pass ([`reconcile_pending`]);
//! 3. per source folder: skip it after one STATUS if nothing changed since the last checkpoint;
//!    otherwise scan UIDs and flags, copy what the ledger lacks, and set changed flags;
//! 4. messages that vanished from one folder and appear in another (same fingerprint) are moved
//!    on the target, not copied again; a UIDVALIDITY change is resolved the same way.
//!
//! Copying streams: a fetcher thread reads `BODY.PEEK[]` from the source in batches and hands
//! messages over a channel bounded by a byte budget; this thread APPENDs them pipelined.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use mailferry_imap::{AppendRequest, Client, Endpoint, Error as ImapError, Fetch, Login, uid_set};

use crate::session::MailSession;

use crate::fingerprint::{fingerprint, message_id};
use crate::folders::{FolderPlanItem, FolderRules, FolderTree, Namespace, ServerFolder};
use crate::store::{Checkpoint, Entry, Failure, LedgerRow, RunEntry, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{side}: {source}")]
    Imap {
        side: &'static str,
        #[source]
        source: ImapError,
    },
    #[error("{side} login: {source}")]
    Login {
        side: &'static str,
        #[source]
        source: ImapError,
    },
    #[error("State database: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Config(String),
}

impl EngineError {
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            EngineError::Imap { source, .. } | EngineError::Login { source, .. }
                if source.is_transient()
        )
    }
}

type Result<T> = std::result::Result<T, EngineError>;

fn on(side: &'static str) -> impl Fn(ImapError) -> EngineError {
    move |source| EngineError::Imap { side, source }
}

/// Caps the connections to one server, shared by every mailbox of the run.
pub struct ConnectionLimit {
    max: usize,
    used: Mutex<usize>,
    freed: Condvar,
}

pub struct Permit<'a>(&'a ConnectionLimit);

impl ConnectionLimit {
    pub fn new(max: usize) -> ConnectionLimit {
        ConnectionLimit {
            max: max.max(1),
            used: Mutex::new(0),
            freed: Condvar::new(),
        }
    }
    pub fn acquire(&self) -> Permit<'_> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used >= self.max {
            used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut used = self.0.used.lock().unwrap_or_else(|e| e.into_inner());
        *used -= 1;
        self.0.freed.notify_one();
    }
}

/// How mailferry logs in to one server for a mailbox.
#[derive(Clone)]
pub enum Access {
    /// `LOGIN user<sep>admin password` (Dovecot's master-user form).
    MasterSeparator {
        admin: String,
        password: String,
        separator: String,
    },
    /// `AUTHENTICATE PLAIN` with authzid = the mailbox, authcid = the admin.
    SaslAuthzid { admin: String, password: String },
    /// The mailbox's own password (from the CSV, at run time).
    PerMailbox,
}

impl Access {
    pub fn login(&self, mailbox_login: &str, own_password: Option<&str>) -> Result<Login> {
        Ok(match self {
            Access::MasterSeparator {
                admin,
                password,
                separator,
            } => Login::Plain {
                user: format!("{mailbox_login}{separator}{admin}"),
                password: password.clone(),
            },
            Access::SaslAuthzid { admin, password } => Login::SaslPlain {
                authzid: mailbox_login.to_string(),
                authcid: admin.clone(),
                password: password.clone(),
            },
            Access::PerMailbox => Login::Plain {
                user: mailbox_login.to_string(),
                password: own_password
                    .ok_or_else(|| {
                        EngineError::Config(format!(
                            "No password for {mailbox_login}: auth = \"per-mailbox\" needs its \
                             password in the mailboxes CSV"
                        ))
                    })?
                    .to_string(),
            },
        })
    }
}

/// Where one side's mailboxes live.
pub enum Backend {
    Imap {
        endpoint: Endpoint,
        access: Access,
    },
    /// A folder with one Maildir++ tree per mailbox login; `create` for a target.
    Maildir {
        root: std::path::PathBuf,
        create: bool,
    },
}

/// One server of the job, ready to connect to.
pub struct Server {
    pub backend: Backend,
    pub limit: ConnectionLimit,
}

impl Server {
    /// Opens a session for one mailbox on `side` ("source" or "target"): an IMAP login, or
    /// its Maildir++ tree. Errors say which side and whether connecting or logging in failed.
    pub fn connect(
        &self,
        side: &'static str,
        mailbox_login: &str,
        own_password: Option<&str>,
    ) -> Result<Box<dyn MailSession>> {
        let login_failed = |source| EngineError::Login { side, source };
        match &self.backend {
            Backend::Imap { endpoint, access } => {
                let login = access.login(mailbox_login, own_password)?;
                let mut c = Client::connect(endpoint).map_err(on(side))?;
                c.login(&login).map_err(login_failed)?;
                Ok(Box::new(c))
            }
            Backend::Maildir { root, create } => {
                let session =
                    crate::maildir::open(root, mailbox_login, *create).map_err(login_failed)?;
                Ok(Box::new(session))
            }
        }
    }
}

/// What limits a pass: folder scope, dates, deleted messages.
#[derive(Debug, Clone)]
pub struct PassSettings {
    pub rules: FolderRules,
    /// IMAP search dates (`1-Jan-2020`).
    pub since: Option<String>,
    pub until: Option<String>,
    pub skip_deleted: bool,
}

impl PassSettings {
    /// A text that changes whenever a message filter changes, so that checkpoints taken under
    /// another filter do not let a folder be skipped.
    fn filter_key(&self) -> String {
        format!(
            "since={:?};until={:?};skip_deleted={}",
            self.since, self.until, self.skip_deleted
        )
    }
}

/// Live progress, for bars on a terminal and lines otherwise.
pub trait Progress: Sync {
    fn planned(&self, entry: &str, messages: u64, bytes: u64);
    fn copied(&self, entry: &str, messages: u64, bytes: u64);
}

pub struct NoProgress;

impl Progress for NoProgress {
    fn planned(&self, _: &str, _: u64, _: u64) {}
    fn copied(&self, _: &str, _: u64, _: u64) {}
}

/// Everything a pass needs besides the entry itself.
pub struct PassContext<'a> {
    pub source: &'a Server,
    pub target: &'a Server,
    pub settings: &'a PassSettings,
    pub store: &'a Mutex<Store>,
    pub run: i64,
    pub progress: &'a dyn Progress,
    pub retries: u32,
    pub retry_delay: Duration,
}

/// Passwords of one entry, when `auth = "per-mailbox"` (never stored).
#[derive(Clone, Default)]
pub struct EntryPasswords {
    pub source: Option<String>,
    pub target: Option<String>,
}

/// Runs one pass for an entry, retrying transient failures with backoff; never panics on
/// server trouble: the result says what happened, with the server's words.
pub fn migrate_entry(ctx: &PassContext<'_>, entry: &Entry, pw: &EntryPasswords) -> RunEntry {
    let started = Instant::now();
    let mut stats = RunEntry {
        entry_id: entry.id.clone(),
        ..RunEntry::default()
    };
    let mut delay = ctx.retry_delay;
    let mut attempt = 0;
    let outcome = loop {
        attempt += 1;
        let mut pass = Pass {
            ctx,
            entry,
            stats: &mut stats,
        };
        match pass.run(pw) {
            Ok(()) => break Ok(()),
            Err(e) if e.is_transient() && attempt <= ctx.retries => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(60));
            }
            Err(e) => break Err(e),
        }
    };
    stats.seconds = started.elapsed().as_secs_f64();
    match outcome {
        Ok(()) if stats.failed == 0 => stats.state = "migrated".into(),
        Ok(()) => stats.state = "partial".into(),
        Err(e) => {
            stats.state = "failed".into();
            stats.error = Some(e.to_string());
        }
    }
    stats
}

struct Pass<'a, 'b> {
    ctx: &'a PassContext<'b>,
    entry: &'a Entry,
    stats: &'a mut RunEntry,
}

/// One source folder's messages that need work, found by the scan.
struct FolderWork {
    item: FolderPlanItem,
    source: crate::folders::Folder,
    uid_validity: u32,
    status: mailferry_imap::FolderStatus,
    to_copy: Vec<(u32, u64)>,
    flag_updates: Vec<(LedgerRow, String)>,
}

impl Pass<'_, '_> {
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.ctx.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fail(
        &mut self,
        folder: &str,
        uid: Option<u32>,
        size: Option<u64>,
        mid: Option<String>,
        reason: String,
    ) -> Result<()> {
        self.stats.failed += 1;
        let f = Failure {
            entry_id: self.entry.id.clone(),
            folder: folder.to_string(),
            uid,
            size,
            message_id: mid,
            reason,
        };
        self.store().record_failure(self.ctx.run, &f)?;
        Ok(())
    }

    fn run(&mut self, pw: &EntryPasswords) -> Result<()> {
        let target_login = self.entry.target_login.clone().ok_or_else(|| {
            EngineError::Config(format!("Entry {} has no target mailbox", self.entry.id))
        })?;
        let _src_permit = self.ctx.source.limit.acquire();
        let mut src =
            self.ctx
                .source
                .connect("source", &self.entry.source_login, pw.source.as_deref())?;
        let _dst_permit = self.ctx.target.limit.acquire();
        let mut dst = self
            .ctx
            .target
            .connect("target", &target_login, pw.target.as_deref())?;

        let src_tree = src.tree().map_err(on("source"))?;
        let dst_tree = dst.tree().map_err(on("target"))?;
        let plan = crate::folders::plan_folders(&src_tree, &dst_tree, &self.ctx.settings.rules);
        self.prepare_target_tree(dst.as_mut(), &dst_tree, &plan)?;
        reconcile_pending(dst.as_mut(), &dst_tree, self.ctx.store, &self.entry.id)?;

        // Scan every folder that changed; collect the work and the vanished ledger rows.
        let mut work = Vec::new();
        let mut vanished: HashMap<String, Vec<LedgerRow>> = HashMap::new();
        for item in plan.iter().filter(|i| i.selectable) {
            if let Some(w) = self.scan_folder(src.as_mut(), item, &mut vanished)? {
                work.push(w);
            }
        }
        let (messages, bytes) = work.iter().fold((0, 0), |(m, b), w| {
            (
                m + w.to_copy.len() as u64,
                b + w.to_copy.iter().map(|(_, s)| s).sum::<u64>(),
            )
        });
        self.ctx.progress.planned(&self.entry.id, messages, bytes);

        for mut w in work {
            let failed_before = self.stats.failed;
            if !w.to_copy.is_empty() {
                let to_copy = std::mem::take(&mut w.to_copy);
                self.copy_folder(
                    src.as_mut(),
                    dst.as_mut(),
                    &dst_tree,
                    &w,
                    &to_copy,
                    &mut vanished,
                )?;
            }
            self.update_flags(dst.as_mut(), &dst_tree, &w)?;
            if self.stats.failed == failed_before {
                let c = Checkpoint {
                    uid_validity: w.uid_validity,
                    uid_next: w.status.uid_next,
                    messages: w.status.messages,
                    highest_modseq: w.status.highest_modseq,
                    filter: self.ctx.settings.filter_key(),
                };
                self.store()
                    .set_checkpoint(&self.entry.id, w.source.path.as_str(), &c)?;
            }
        }
        src.logout();
        dst.logout();
        Ok(())
    }

    fn prepare_target_tree(
        &mut self,
        dst: &mut dyn MailSession,
        dst_tree: &FolderTree,
        plan: &[FolderPlanItem],
    ) -> Result<()> {
        let mut subscribed_now: HashSet<&str> = HashSet::new();
        for f in dst_tree.folders() {
            if f.subscribed {
                subscribed_now.insert(f.path.as_str());
            }
        }
        let mut done = HashSet::new();
        for item in plan {
            let name = item.target_raw_name.as_str();
            if !done.insert(name.to_string()) {
                continue;
            }
            if item.create
                && let Err(e) = dst.create(name)
            {
                // Another pass (or the server's autocreate) may have made it meanwhile.
                if e.code() != Some("ALREADYEXISTS") {
                    return Err(EngineError::Imap {
                        side: "target",
                        source: e,
                    });
                }
            }
            if item.source.is_none() {
                continue;
            }
            let is_sub = subscribed_now.contains(item.target_path.as_str());
            if item.subscribe && !is_sub {
                dst.subscribe(name).map_err(on("target"))?;
            } else if !item.subscribe && is_sub && item.target_path.as_str() != "INBOX" {
                dst.unsubscribe(name).map_err(on("target"))?;
            }
        }
        Ok(())
    }

    /// Decides what a folder needs. Returns `None` when STATUS shows nothing changed.
    fn scan_folder(
        &mut self,
        src: &mut dyn MailSession,
        item: &FolderPlanItem,
        vanished: &mut HashMap<String, Vec<LedgerRow>>,
    ) -> Result<Option<FolderWork>> {
        let Some(source) = item.source.clone() else {
            return Ok(None);
        };
        let folder = source.path.as_str().to_string();
        let raw = source.raw_name.as_str();
        let status = src.status(raw).map_err(on("source"))?;
        let checkpoint = self.store().checkpoint(&self.entry.id, &folder)?;
        let filter = self.ctx.settings.filter_key();
        if let Some(c) = &checkpoint
            && c.uid_validity == status.uid_validity
            && c.uid_next == status.uid_next
            && c.messages == status.messages
            && c.filter == filter
            && status.highest_modseq.is_some()
            && c.highest_modseq == status.highest_modseq
        {
            return Ok(None);
        }

        let selected = src.select(raw, true).map_err(on("source"))?;
        let ledger = self.store().ledger_folder(&self.entry.id, &folder)?;
        let mut by_uid: HashMap<u32, LedgerRow> = HashMap::new();
        for row in ledger {
            if row.uid_validity == selected.uid_validity {
                by_uid.insert(row.uid, row);
            } else {
                // UIDVALIDITY changed: the old rows are matched again by fingerprint.
                vanished
                    .entry(row.fingerprint.clone())
                    .or_default()
                    .push(row);
            }
        }
        let in_range: Option<HashSet<u32>> =
            match (&self.ctx.settings.since, &self.ctx.settings.until) {
                (None, None) => None,
                (since, until) => Some(
                    src.uids_in_range(since.as_deref(), until.as_deref())
                        .map_err(on("source"))?
                        .into_iter()
                        .collect(),
                ),
            };
        let mut to_copy = Vec::new();
        let mut flag_updates = Vec::new();
        let mut seen = HashSet::new();
        let skip_deleted = self.ctx.settings.skip_deleted;
        if selected.exists > 0 {
            src.uid_fetch("1:*", "UID FLAGS RFC822.SIZE", &mut |f| {
                let Some(uid) = f.uid() else { return Ok(()) };
                seen.insert(uid);
                let flags = normalise_flags(f.flags().unwrap_or_default());
                match by_uid.get(&uid) {
                    Some(row) if !row.pending => {
                        if row.flags != flags {
                            flag_updates.push((row.clone(), flags));
                        }
                    }
                    Some(_) => {}
                    None => {
                        let deleted = flags
                            .split(' ')
                            .any(|f| f.eq_ignore_ascii_case("\\Deleted"));
                        let wanted = in_range.as_ref().is_none_or(|r| r.contains(&uid));
                        if (deleted && skip_deleted) || !wanted {
                            self.stats.skipped += 1;
                        } else {
                            let size = f.get("RFC822.SIZE").and_then(|v| v.as_u64()).unwrap_or(0);
                            to_copy.push((uid, size));
                        }
                    }
                }
                Ok(())
            })
            .map_err(on("source"))?;
        }
        for (uid, row) in by_uid {
            if !seen.contains(&uid) && !row.pending {
                vanished
                    .entry(row.fingerprint.clone())
                    .or_default()
                    .push(row);
            }
        }
        to_copy.sort_unstable();
        Ok(Some(FolderWork {
            item: item.clone(),
            source,
            uid_validity: selected.uid_validity,
            status,
            to_copy,
            flag_updates,
        }))
    }

    fn copy_folder(
        &mut self,
        src: &mut dyn MailSession,
        dst: &mut dyn MailSession,
        tree: &FolderTree,
        w: &FolderWork,
        to_copy: &[(u32, u64)],
        vanished: &mut HashMap<String, Vec<LedgerRow>>,
    ) -> Result<()> {
        // The scan left another folder selected: select this one again, and make sure its
        // UIDs still mean what the scan saw.
        let selected = src.select(&w.source.raw_name, true).map_err(on("source"))?;
        if selected.uid_validity != w.uid_validity {
            return Err(EngineError::Imap {
                side: "source",
                source: ImapError::Aborted(format!(
                    "UIDVALIDITY of {} changed during the pass; it is reconciled on the next attempt",
                    w.source.path
                )),
            });
        }
        let budget = Arc::new(ByteBudget::new(BYTE_BUDGET));
        let (tx, rx) = sync_channel::<Message>(256);
        let fetch_budget = budget.clone();
        let mut moves = Vec::new();
        std::thread::scope(|scope| {
            let fetcher = scope.spawn(move || fetch_messages(src, to_copy, tx, &fetch_budget));
            let appended = self.append_messages(dst, w, rx, &budget, vanished, &mut moves);
            budget.close();
            let fetched = fetcher
                .join()
                .unwrap_or_else(|_| Err(ImapError::Aborted("the fetcher thread panicked".into())));
            appended?;
            match fetched {
                Ok(()) | Err(ImapError::Aborted(_)) => Ok(()),
                Err(e) => Err(EngineError::Imap {
                    side: "source",
                    source: e,
                }),
            }
        })?;
        self.apply_moves(dst, tree, &w.item.target_raw_name, moves)
    }

    fn append_messages(
        &mut self,
        dst: &mut dyn MailSession,
        w: &FolderWork,
        rx: Receiver<Message>,
        budget: &ByteBudget,
        vanished: &mut HashMap<String, Vec<LedgerRow>>,
        moves: &mut Vec<(LedgerRow, LedgerRow)>,
    ) -> Result<()> {
        let folder = w.source.path.as_str().to_string();
        let target_folder = w.item.target_path.as_str().to_string();
        let target_raw = w.item.target_raw_name.clone();
        let mut uid_next = dst.status(&target_raw).map_err(on("target"))?.uid_next;
        // Two groups in flight: while the server stores one, the next one's intents are
        // committed and its APPENDs sent, so neither the fsync nor the round trip stalls.
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        loop {
            let Some(group) = next_group(&rx) else {
                while let Some(g) = in_flight.pop_front() {
                    self.finish_group(dst, g, &folder, budget, &mut uid_next)?;
                }
                return Ok(());
            };
            let mut rows = Vec::with_capacity(group.len());
            let mut msgs = Vec::with_capacity(group.len());
            for m in group {
                let fp = fingerprint(&m.body);
                if let Some(old) = take_vanished(vanished, &fp) {
                    // Already on the target: moved there after this folder's copies.
                    let new = LedgerRow {
                        source_folder: folder.clone(),
                        uid_validity: w.uid_validity,
                        uid: m.uid,
                        target_folder: target_folder.clone(),
                        ..old.clone()
                    };
                    moves.push((old, new));
                    budget.release(m.body.len());
                    continue;
                }
                rows.push(LedgerRow {
                    source_folder: folder.clone(),
                    uid_validity: w.uid_validity,
                    uid: m.uid,
                    target_folder: target_folder.clone(),
                    target_uid: None,
                    target_uidnext: Some(uid_next),
                    fingerprint: fp,
                    size: m.body.len() as u64,
                    flags: normalise_flags(m.flags.clone()),
                    pending: true,
                });
                msgs.push(m);
            }
            if msgs.is_empty() {
                continue;
            }
            // The intents are durable before the first byte of their APPENDs leaves.
            self.store().insert_pending(&self.entry.id, &rows)?;
            let tags = if dst.has("MULTIAPPEND") && dst.has("LITERAL+") && msgs.len() > 1 {
                let reqs: Vec<AppendRequest<'_>> =
                    msgs.iter().map(|m| m.request(&target_raw)).collect();
                Sent::Multi(
                    dst.multiappend_send(&target_raw, &reqs)
                        .map_err(on("target"))?,
                )
            } else {
                Sent::Each(send_each(dst, &target_raw, &msgs)?)
            };
            in_flight.push_back(InFlight {
                rows,
                msgs,
                tags,
                target_raw: target_raw.clone(),
            });
            if in_flight.len() > 1
                && let Some(g) = in_flight.pop_front()
            {
                self.finish_group(dst, g, &folder, budget, &mut uid_next)?;
            }
        }
    }

    /// Reads the answers to one group's APPENDs and records them in one transaction.
    fn finish_group(
        &mut self,
        dst: &mut dyn MailSession,
        g: InFlight,
        folder: &str,
        budget: &ByteBudget,
        uid_next: &mut u32,
    ) -> Result<()> {
        let tags = match g.tags {
            Sent::Each(tags) => tags,
            Sent::Multi(tag) => match dst.multiappend_finish(&tag, g.msgs.len()) {
                Ok(uids) => {
                    let copied: Vec<(&LedgerRow, Option<u32>)> = g
                        .rows
                        .iter()
                        .enumerate()
                        .map(|(i, r)| (r, uids.as_ref().map(|u| u[i])))
                        .collect();
                    if let Some(u) = uids.as_ref().and_then(|u| u.iter().max()) {
                        *uid_next = (*uid_next).max(u + 1);
                    }
                    self.store().complete(&self.entry.id, &copied, &[])?;
                    for m in &g.msgs {
                        self.stats.copied += 1;
                        self.stats.bytes += m.body.len() as u64;
                        self.ctx
                            .progress
                            .copied(&self.entry.id, 1, m.body.len() as u64);
                        budget.release(m.body.len());
                    }
                    return Ok(());
                }
                // MULTIAPPEND stores all or nothing (RFC 3502): one refused message refused
                // the group, so send them one by one to find it and keep the others.
                Err(e @ (ImapError::No { .. } | ImapError::Bad { .. })) if !e.is_transient() => {
                    send_each(dst, &g.target_raw, &g.msgs)?
                }
                Err(e) => {
                    return Err(EngineError::Imap {
                        side: "target",
                        source: e,
                    });
                }
            },
        };
        let mut copied = Vec::new();
        let mut failed = Vec::new();
        let mut failures = Vec::new();
        for ((tag, m), row) in tags.iter().zip(&g.msgs).zip(&g.rows) {
            match dst.append_finish(tag) {
                Ok(uid) => {
                    let target_uid = uid.map(|(_, u)| u);
                    if let Some(u) = target_uid {
                        *uid_next = (*uid_next).max(u + 1);
                    }
                    copied.push((row, target_uid));
                    self.stats.copied += 1;
                    self.stats.bytes += m.body.len() as u64;
                    self.ctx
                        .progress
                        .copied(&self.entry.id, 1, m.body.len() as u64);
                }
                Err(e @ (ImapError::No { .. } | ImapError::Bad { .. })) if !e.is_transient() => {
                    failed.push(row);
                    failures.push((
                        m.uid,
                        m.body.len() as u64,
                        message_id(&m.body),
                        e.to_string(),
                    ));
                }
                Err(e) => {
                    // The connection is gone: record what is known; the rest stays pending
                    // for the next attempt to reconcile.
                    self.store().complete(&self.entry.id, &copied, &failed)?;
                    return Err(EngineError::Imap {
                        side: "target",
                        source: e,
                    });
                }
            }
        }
        self.store().complete(&self.entry.id, &copied, &failed)?;
        for (uid, size, mid, reason) in failures {
            self.fail(folder, Some(uid), Some(size), mid, reason)?;
        }
        for m in &g.msgs {
            budget.release(m.body.len());
        }
        Ok(())
    }

    /// New source messages that are byte-for-byte messages the ledger saw vanish (moved
    /// between source folders, or renumbered by a UIDVALIDITY change) are already on the
    /// target: one UID MOVE per target folder they sit in, then the ledger re-keyed in one
    /// transaction. They are never copied again.
    fn apply_moves(
        &mut self,
        dst: &mut dyn MailSession,
        tree: &FolderTree,
        target_raw: &str,
        moves: Vec<(LedgerRow, LedgerRow)>,
    ) -> Result<()> {
        let mut rekeys = Vec::with_capacity(moves.len());
        let mut by_folder: BTreeMap<String, Vec<(LedgerRow, LedgerRow)>> = BTreeMap::new();
        for (old, mut new) in moves {
            if old.target_folder == new.target_folder {
                rekeys.push((old, new));
            } else if old.target_uid.is_none() {
                // Without its target UID the copy cannot be moved: it stays where it is.
                new.target_folder = old.target_folder.clone();
                rekeys.push((old, new));
            } else {
                by_folder
                    .entry(old.target_folder.clone())
                    .or_default()
                    .push((old, new));
            }
        }
        for (folder, pairs) in by_folder {
            dst.select(&target_raw_name(tree, &folder), false)
                .map_err(on("target"))?;
            let mut uids: Vec<u32> = pairs.iter().filter_map(|(o, _)| o.target_uid).collect();
            uids.sort_unstable();
            let moved: HashMap<u32, u32> = dst
                .uid_move(&uids, target_raw)
                .map_err(on("target"))?
                .into_iter()
                .collect();
            for (old, mut new) in pairs {
                new.target_uid = old.target_uid.and_then(|u| moved.get(&u).copied());
                rekeys.push((old, new));
            }
        }
        self.stats.moved += rekeys.len() as u64;
        self.store().rekey(&self.entry.id, &rekeys)?;
        Ok(())
    }

    /// Brings flags up to date: one UID STORE per target folder and flag set.
    fn update_flags(
        &mut self,
        dst: &mut dyn MailSession,
        tree: &FolderTree,
        w: &FolderWork,
    ) -> Result<()> {
        let mut groups: BTreeMap<(&str, &str), Vec<&LedgerRow>> = BTreeMap::new();
        for (row, flags) in &w.flag_updates {
            if row.target_uid.is_some() {
                groups
                    .entry((row.target_folder.as_str(), flags.as_str()))
                    .or_default()
                    .push(row);
            }
        }
        let mut selected = None;
        let mut updates = Vec::new();
        for ((folder, flags), rows) in groups {
            if selected != Some(folder) {
                dst.select(&target_raw_name(tree, folder), false)
                    .map_err(on("target"))?;
                selected = Some(folder);
            }
            let mut uids: Vec<u32> = rows.iter().filter_map(|r| r.target_uid).collect();
            uids.sort_unstable();
            dst.store_flags(&uids, flags).map_err(on("target"))?;
            updates.extend(rows.into_iter().map(|r| (r, flags.to_string())));
        }
        if !updates.is_empty() {
            self.stats.flags_updated += updates.len() as u64;
            self.store().set_flags(&self.entry.id, &updates)?;
        }
        Ok(())
    }
}

/// The target server's name for a target folder path of the ledger.
fn target_raw_name(tree: &FolderTree, path: &str) -> String {
    tree.raw_name_for(&crate::folders::FolderPath::parse(path))
}

fn take_vanished(vanished: &mut HashMap<String, Vec<LedgerRow>>, fp: &str) -> Option<LedgerRow> {
    let rows = vanished.get_mut(fp)?;
    let row = rows.pop();
    if rows.is_empty() {
        vanished.remove(fp);
    }
    row
}

/// Flags as the ledger keeps them: sorted, space-separated, `\Recent` left out.
pub fn normalise_flags(mut flags: Vec<String>) -> String {
    flags.retain(|f| !f.eq_ignore_ascii_case("\\Recent"));
    flags.sort_by_key(|f| f.to_ascii_lowercase());
    flags.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    flags.join(" ")
}

/// Reads a server's folder tree: namespace, LIST and LSUB.
pub fn read_tree(c: &mut Client) -> std::result::Result<FolderTree, ImapError> {
    let list = c.list()?;
    let ns = c.namespace()?;
    let delimiter = list.iter().find_map(|l| l.delimiter);
    let namespace = match ns {
        Some((prefix, d)) => Namespace {
            prefix,
            delimiter: d.or(delimiter),
        },
        None => Namespace {
            prefix: String::new(),
            delimiter,
        },
    };
    let subscribed: HashSet<String> = c.lsub()?.into_iter().map(|l| l.name).collect();
    let folders = list
        .into_iter()
        .map(|l| ServerFolder {
            subscribed: subscribed.contains(&l.name),
            raw_name: l.name,
            delimiter: l.delimiter,
            attributes: l.attributes,
        })
        .collect();
    Ok(FolderTree::from_list(&namespace, folders))
}

const BYTE_BUDGET: usize = 64 << 20;
const GROUP_MESSAGES: usize = 128;
const GROUP_BYTES: usize = 8 << 20;
const FETCH_BATCH_BYTES: u64 = 16 << 20;
const FETCH_BATCH_MESSAGES: usize = 500;

/// One group's APPENDs on the wire: their intents, messages and tags.
struct InFlight {
    rows: Vec<LedgerRow>,
    msgs: Vec<Message>,
    tags: Sent,
    target_raw: String,
}

/// A group went out as one MULTIAPPEND, or as one APPEND per message.
enum Sent {
    Multi(String),
    Each(Vec<String>),
}

fn send_each(dst: &mut dyn MailSession, target_raw: &str, msgs: &[Message]) -> Result<Vec<String>> {
    msgs.iter()
        .map(|m| {
            dst.append_send(&m.request(target_raw))
                .map_err(on("target"))
        })
        .collect()
}

impl Message {
    fn request<'a>(&'a self, mailbox: &'a str) -> AppendRequest<'a> {
        AppendRequest {
            mailbox,
            flags: &self.flags,
            date: self.date.as_deref(),
            message: &self.body,
        }
    }
}

/// How long a group waits for more messages before it goes out as it is.
const GROUP_WAIT: Duration = Duration::from_millis(3);

/// The next group of messages: at least one (`None` when the fetcher is done), then whatever
/// arrives within a few milliseconds, up to a count and a size.
fn next_group(rx: &Receiver<Message>) -> Option<Vec<Message>> {
    let first = rx.recv().ok()?;
    let mut bytes = first.body.len();
    let mut group = vec![first];
    while group.len() < GROUP_MESSAGES && bytes < GROUP_BYTES {
        match rx.recv_timeout(GROUP_WAIT) {
            Ok(m) => {
                bytes += m.body.len();
                group.push(m);
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        }
    }
    Some(group)
}

struct Message {
    uid: u32,
    flags: Vec<String>,
    date: Option<String>,
    body: Vec<u8>,
}

/// Bytes of message bodies in flight between the fetcher and the appender. A message larger
/// than the budget still passes, alone.
struct ByteBudget {
    cap: usize,
    state: Mutex<(usize, bool)>,
    freed: Condvar,
}

impl ByteBudget {
    fn new(cap: usize) -> ByteBudget {
        ByteBudget {
            cap,
            state: Mutex::new((0, false)),
            freed: Condvar::new(),
        }
    }
    /// Returns false when the consumer is gone.
    fn acquire(&self, n: usize) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while !s.1 && s.0 > 0 && s.0 + n > self.cap {
            s = self.freed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        if s.1 {
            return false;
        }
        s.0 += n;
        true
    }
    fn release(&self, n: usize) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 = s.0.saturating_sub(n);
        self.freed.notify_all();
    }
    fn close(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.1 = true;
        self.freed.notify_all();
    }
}

fn fetch_messages(
    src: &mut dyn MailSession,
    to_copy: &[(u32, u64)],
    tx: SyncSender<Message>,
    budget: &ByteBudget,
) -> std::result::Result<(), ImapError> {
    let mut start = 0;
    while start < to_copy.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < to_copy.len()
            && end - start < FETCH_BATCH_MESSAGES
            && (end == start || bytes + to_copy[end].1 <= FETCH_BATCH_BYTES)
        {
            bytes += to_copy[end].1;
            end += 1;
        }
        let set = uid_set(to_copy[start..end].iter().map(|(u, _)| *u));
        src.uid_fetch(
            &set,
            "UID FLAGS INTERNALDATE BODY.PEEK[]",
            &mut |mut f: Fetch| {
                let Some(uid) = f.uid() else { return Ok(()) };
                let flags = f.flags().unwrap_or_default();
                let date = f.get("INTERNALDATE").and_then(|v| v.as_text());
                let body = f
                    .take("BODY[]")
                    .and_then(|v| v.into_bytes())
                    .unwrap_or_default();
                if !budget.acquire(body.len()) {
                    return Err(ImapError::Aborted("the target side stopped".into()));
                }
                tx.send(Message {
                    uid,
                    flags,
                    date,
                    body,
                })
                .map_err(|_| ImapError::Aborted("the target side stopped".into()))
            },
        )?;
        start = end;
    }
    Ok(())
}

/// Resolves intents left by a pass that was killed between committing an intent and recording
/// the APPEND's answer. The message may or may not be on the target. Candidates are the target
/// messages at or above the UIDNEXT recorded in the intent that the ledger does not already
/// own; a candidate with the same fingerprint is the copy (recorded as copied), and an intent
/// with no such candidate was never stored (forgotten, so this pass copies it again).
pub fn reconcile_pending(
    dst: &mut dyn MailSession,
    tree: &FolderTree,
    store: &Mutex<Store>,
    entry: &str,
) -> Result<()> {
    let pending = store
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .ledger_pending(entry)?;
    if pending.is_empty() {
        return Ok(());
    }
    let mut by_folder: BTreeMap<String, Vec<LedgerRow>> = BTreeMap::new();
    for row in pending {
        by_folder
            .entry(row.target_folder.clone())
            .or_default()
            .push(row);
    }
    for (folder, rows) in by_folder {
        let path = crate::folders::FolderPath::parse(&folder);
        let mut found: HashMap<String, Vec<u32>> = HashMap::new();
        if tree.get(&path).is_some() {
            let raw = tree.raw_name_for(&path);
            wait_until_quiet(dst, &raw)?;
            let selected = dst.select(&raw, true).map_err(on("target"))?;
            let low = rows
                .iter()
                .filter_map(|r| r.target_uidnext)
                .min()
                .unwrap_or(1);
            let known: HashSet<u32> = store
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .target_uids(entry, &folder)?
                .into_iter()
                .collect();
            if selected.exists > 0 {
                let mut candidates = Vec::new();
                dst.uid_fetch(&format!("{low}:*"), "UID", &mut |f| {
                    if let Some(u) = f.uid()
                        && u >= low
                        && !known.contains(&u)
                    {
                        candidates.push(u);
                    }
                    Ok(())
                })
                .map_err(on("target"))?;
                candidates.sort_unstable();
                for chunk in candidates.chunks(200) {
                    dst.uid_fetch(
                        &uid_set(chunk.iter().copied()),
                        "UID BODY.PEEK[]",
                        &mut |mut f| {
                            if let (Some(u), Some(body)) =
                                (f.uid(), f.take("BODY[]").and_then(|v| v.into_bytes()))
                            {
                                found.entry(fingerprint(&body)).or_default().push(u);
                            }
                            Ok(())
                        },
                    )
                    .map_err(on("target"))?;
                }
            }
        }
        let mut copied = Vec::new();
        let mut forgotten = Vec::new();
        for row in &rows {
            match found.get_mut(&row.fingerprint).and_then(Vec::pop) {
                Some(uid) => copied.push((row, Some(uid))),
                None => forgotten.push(row),
            }
        }
        store
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .complete(entry, &copied, &forgotten)?;
    }
    Ok(())
}

/// How long a target folder must stay unchanged before in-doubt intents are judged.
const QUIET_PERIOD: Duration = Duration::from_secs(2);
const QUIET_LIMIT: Duration = Duration::from_secs(60);

/// Waits until a target folder stops changing. A killed client's pipelined APPENDs may still
/// sit in the server's input buffer, and servers (Dovecot among them) go on storing them after
/// the client is gone: judging intents before that backlog is stored would copy those messages
/// a second time. Only runs when a previous pass left intents in doubt.
fn wait_until_quiet(dst: &mut dyn MailSession, raw: &str) -> Result<()> {
    let started = Instant::now();
    let mut last = dst.status(raw).map_err(on("target"))?;
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < QUIET_PERIOD && started.elapsed() < QUIET_LIMIT {
        std::thread::sleep(Duration::from_millis(250));
        let now = dst.status(raw).map_err(on("target"))?;
        if now.uid_next != last.uid_next || now.messages != last.messages {
            last = now;
            quiet_since = Instant::now();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_normalised_without_recent() {
        assert_eq!(
            normalise_flags(vec![
                "\\Seen".into(),
                "$Label1".into(),
                "\\Recent".into(),
                "\\seen".into()
            ]),
            "$Label1 \\Seen"
        );
    }

    #[test]
    fn byte_budget_lets_one_big_message_through() {
        let b = ByteBudget::new(10);
        assert!(b.acquire(50));
        b.release(50);
        assert!(b.acquire(6));
        b.close();
        assert!(!b.acquire(6));
    }
}
