//! Test doubles for the ports, so the engine and the services can be tested without a server
//! or a database: [`MemoryStore`] (the [`Store`](crate::ports::Store) port in memory) and
//! [`FakeConnector`] / [`FakeSession`] over [`FakeMailbox`]es (the mail session port, modelled
//! on what an IMAP server does), plus the store conformance suite every store must pass
//! ([`store_conformance!`](crate::store_conformance)).
//!
//! Compiled for this crate's own tests and, with the `testing` feature, for other crates'.

mod fake_mail;
mod memory_store;
pub mod store_conformance;

pub use fake_mail::{Counts, Crash, FakeConnector, FakeMailbox, FakeMessage, FakeSession, Op};
pub use memory_store::MemoryStore;

use crate::model::{Uid, UidValidity};

/// A UID for a test to write as a number (panics on 0, which no server sends).
pub fn uid(n: u32) -> Uid {
    Uid::new(n).expect("a UID is never 0")
}

/// A UIDVALIDITY for a test to write as a number (panics on 0, which no server sends).
pub fn validity(n: u32) -> UidValidity {
    UidValidity::new(n).expect("a UIDVALIDITY is never 0")
}

#[cfg(test)]
mod tests {
    crate::store_conformance!(Box::new(super::MemoryStore::new()));
}
