//! The observer port: what a pass reports while it runs — progress bars on a terminal, the web
//! UI's event stream, a test's recorder.
//!
//! A push model, as ripgrep's `Sink`: the engine calls these as things happen, and every
//! method defaults to doing nothing, so an observer implements only what it shows. Calls come
//! from the worker threads at once, hence `Sync`; they must be cheap and never block on I/O.
//! Durable facts go to the store, never only here.

use crate::model::{EntryId, RunEntry};

pub trait Observer: Sync {
    /// A pass of this entry starts (after its lease is taken).
    fn entry_started(&self, _entry: &EntryId) {}
    /// The scan found this much to copy.
    fn planned(&self, _entry: &EntryId, _messages: u64, _bytes: u64) {}
    /// Messages were stored on the target and recorded in the ledger.
    fn copied(&self, _entry: &EntryId, _messages: u64, _bytes: u64) {}
    /// The entry's pass ended, whatever the outcome.
    fn entry_finished(&self, _result: &RunEntry) {}
}

/// An observer that shows nothing.
pub struct NoObserver;

impl Observer for NoObserver {}
