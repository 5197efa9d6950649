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

#[cfg(test)]
mod tests {
    crate::store_conformance!(Box::new(super::MemoryStore::new()));
}
