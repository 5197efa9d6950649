//! Phase 3c: storing a folder's messages on the target, intent first.
//!
//! The crash-safety rule lives here: a group's ledger rows are committed as `pending` intents,
//! with the target folder's UIDNEXT as seen before sending, *before* the first byte of their
//! APPENDs leaves; they become `copied` with the target UID once the server said OK, in one
//! transaction per group. A crash in between leaves intents that [`super::reconcile`] judges.

use std::collections::VecDeque;
use std::sync::mpsc::Receiver;

use super::copy::{BudgetShare, Message, Next, next_group};
use super::decide::{Vanished, take_vanished};
use super::scan::FolderWork;
use super::{EngineError, Pass, Result, on};
use crate::fingerprint::{Kind, fingerprint, fingerprint_as, message_id};
use crate::model::{LedgerRow, LedgerState, Side, UidValidity};
use crate::ports::store::{Orphan, StoreErrorKind};
use crate::ports::{AppendOutcome, AppendTicket, MailSession, Outgoing, SessionError};

/// One group's APPENDs on the wire: their intents, messages and the session's ticket.
struct InFlight {
    rows: Vec<LedgerRow>,
    msgs: Vec<Message>,
    ticket: AppendTicket,
}

impl InFlight {
    fn bytes(&self) -> usize {
        bytes(&self.msgs)
    }
}

fn bytes(msgs: &[Message]) -> usize {
    msgs.iter().map(|m| m.body.len()).sum()
}

fn outgoing(msgs: &[Message]) -> Vec<Outgoing<'_>> {
    msgs.iter()
        .map(|m| Outgoing {
            flags: &m.flags,
            internal_date: m.date.as_deref(),
            body: &m.body,
        })
        .collect()
}

impl Pass<'_, '_> {
    pub(super) fn append_messages(
        &mut self,
        dst: &mut dyn MailSession,
        w: &FolderWork,
        rx: Receiver<Message>,
        budget: &BudgetShare<'_>,
        vanished: &mut Vanished,
        moves: &mut Vec<(LedgerRow, LedgerRow)>,
    ) -> Result<()> {
        let folder = w.source.path.as_str().to_string();
        let target_folder = w.item.target_path.as_str().to_string();
        let target_raw = w.item.target_raw_name.clone();
        // The intents' UIDNEXT need only be a lower bound of the UIDs their copies get (UIDs
        // only grow): a STATUS read earlier in the pass serves, else one now.
        let status = match &w.target_status {
            Some(status) => status.clone(),
            None => dst.status(&target_raw).map_err(on(Side::Target))?,
        };
        let mut uid_next = status.uid_next;
        let target = (target_folder.as_str(), status.uid_validity);
        // Two groups in flight: while the server stores one, the next one's intents are
        // committed and its APPENDs sent, so neither the fsync nor the round trip stalls.
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        // Whether any vanished row was written by a version before BLAKE3 (see below); only
        // ever taken from, so it stays true of what is left.
        let legacy = vanished.keys().any(|f| Kind::of(f) == Kind::Sha256);
        loop {
            let group = match next_group(&rx, !in_flight.is_empty(), self.attempts.group_bytes()) {
                Next::Group(group) => group,
                Next::Idle => {
                    self.finish_first(dst, &mut in_flight, &folder, target, budget, &mut uid_next)?;
                    continue;
                }
                Next::Done => {
                    while !in_flight.is_empty() {
                        self.finish_first(
                            dst,
                            &mut in_flight,
                            &folder,
                            target,
                            budget,
                            &mut uid_next,
                        )?;
                    }
                    return Ok(());
                }
            };
            let mut rows = Vec::with_capacity(group.len());
            let mut msgs = Vec::with_capacity(group.len());
            for m in group {
                let fp = fingerprint(&m.body);
                // A row an earlier version wrote holds a SHA-256 fingerprint: looked for in
                // that kind too when such rows are among the vanished.
                let old = take_vanished(vanished, &fp).or_else(|| {
                    legacy
                        .then(|| take_vanished(vanished, &fingerprint_as(Kind::Sha256, &m.body)))
                        .flatten()
                });
                if let Some(old) = old {
                    // Already on the target: moved there after this folder's copies, and given
                    // the flags the source has now.
                    let new = LedgerRow {
                        source_folder: folder.clone(),
                        uid_validity: w.uid_validity,
                        uid: m.uid,
                        target_folder: target_folder.clone(),
                        flags: m.flags.clone(),
                        ..old.clone()
                    };
                    moves.push((old, new));
                    budget.recycle(m.body);
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
                    flags: m.flags.clone(),
                    state: LedgerState::Pending,
                });
                msgs.push(m);
            }
            if msgs.is_empty() {
                continue;
            }
            // The intents are durable before the first byte of their APPENDs leaves.
            self.store().insert_pending(&self.entry.id, &rows)?;
            let ticket = match dst.send_appends(&target_raw, &outgoing(&msgs)) {
                Ok(ticket) => ticket,
                Err(e) => {
                    let largest = in_flight.iter().map(InFlight::bytes).max();
                    self.groups_lost(largest.unwrap_or(0).max(bytes(&msgs)), &e);
                    return Err(on(Side::Target)(e));
                }
            };
            in_flight.push_back(InFlight { rows, msgs, ticket });
            if in_flight.len() > 1 {
                self.finish_first(dst, &mut in_flight, &folder, target, budget, &mut uid_next)?;
            }
        }
    }

    /// Finishes the oldest group on the wire, if any. When the connection is lost meanwhile,
    /// the groups of the next attempts are made smaller than the ones unanswered.
    fn finish_first(
        &mut self,
        dst: &mut dyn MailSession,
        in_flight: &mut VecDeque<InFlight>,
        folder: &str,
        target: (&str, UidValidity),
        budget: &BudgetShare<'_>,
        uid_next: &mut u32,
    ) -> Result<()> {
        let Some(g) = in_flight.pop_front() else {
            return Ok(());
        };
        let largest = in_flight
            .iter()
            .map(InFlight::bytes)
            .fold(g.bytes(), usize::max);
        let finished = self.finish_group(dst, g, folder, target, budget, uid_next);
        match &finished {
            Ok(()) => self.attempts.group_stored(),
            Err(EngineError::Session {
                side: Side::Target,
                source,
            }) => self.groups_lost(largest, source),
            Err(_) => {}
        }
        finished
    }

    /// A transient error on the target with groups of up to `largest` bytes unanswered.
    fn groups_lost(&mut self, largest: usize, e: &SessionError) {
        if e.is_transient() {
            self.attempts.group_lost(largest);
        }
    }

    /// Reads the answers to one group's APPENDs and records them in one transaction.
    fn finish_group(
        &mut self,
        dst: &mut dyn MailSession,
        g: InFlight,
        folder: &str,
        (target_folder, target_validity): (&str, UidValidity),
        budget: &BudgetShare<'_>,
        uid_next: &mut u32,
    ) -> Result<()> {
        let outcomes = dst
            .finish_appends(g.ticket, &outgoing(&g.msgs))
            .map_err(on(Side::Target))?;
        let mut copied = Vec::new();
        let mut failed = Vec::new();
        let mut failures = Vec::new();
        let mut broken = None;
        for ((outcome, m), row) in outcomes.into_iter().zip(&g.msgs).zip(&g.rows) {
            match outcome {
                AppendOutcome::Stored(target_uid) => {
                    if let Some(u) = target_uid {
                        *uid_next = (*uid_next).max(u.get() + 1);
                    }
                    copied.push((row, target_uid));
                    self.stats.copied += 1;
                    self.stats.bytes += m.body.len() as u64;
                    self.ctx
                        .observer
                        .copied(&self.entry.id, 1, m.body.len() as u64);
                }
                AppendOutcome::Refused(reason) => {
                    failed.push(row);
                    failures.push((
                        row.uid_validity,
                        m.uid,
                        m.body.len() as u64,
                        message_id(&m.body),
                        reason,
                    ));
                }
                AppendOutcome::Lost(e) => {
                    // The connection is gone: record what is known; this message and the
                    // rest stay pending for the next attempt to reconcile.
                    broken = Some(e);
                    break;
                }
            }
        }
        let completed = self.store().complete(&self.entry.id, &copied, &failed);
        if let Err(e) = completed {
            if e.kind == StoreErrorKind::LeaseLost {
                // Another process took the entry over while these APPENDs were on the wire
                // (this one was paused, say): the copies they made are named by no ledger row
                // and may duplicate the new holder's. Only a holder of the lease may remove
                // them (its reconciliation may adopt one), so they are recorded for it.
                let orphans: Vec<Orphan> = copied
                    .iter()
                    .filter_map(|(row, uid)| {
                        Some(Orphan {
                            target_folder: target_folder.to_string(),
                            uid_validity: target_validity,
                            uid: (*uid)?,
                            fingerprint: row.fingerprint.clone(),
                        })
                    })
                    .collect();
                self.store().record_orphans(&self.entry.id, &orphans)?;
            }
            return Err(e.into());
        }
        if let Some(source) = broken {
            return Err(EngineError::Session {
                side: Side::Target,
                source,
            });
        }
        for (uid_validity, uid, size, mid, reason) in failures {
            self.fail(folder, uid_validity, uid, size, mid, reason)?;
        }
        for m in g.msgs {
            budget.recycle(m.body);
        }
        Ok(())
    }
}
