//! mailferry's domain: the job, its entries, folder mapping, the ledger's rules, the copy
//! engine, Refresh email addresses, and one application service per command.
//!
//! Nothing here does I/O with a server or a database: the engine and the services speak to the
//! [`ports`], which `mailferry-adapters` implements (SQLite, LDAP, IMAP, Maildir). The binary
//! and the web UI call [`app`] and print or render its typed outcomes.

pub mod app;
pub mod csvfile;
pub mod engine;
pub mod entries;
pub mod fingerprint;
pub mod folders;
pub mod job;
pub mod matching;
pub mod model;
pub mod mutf7;
pub mod ports;
pub mod profile;
pub mod refresh;
pub mod report;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod text;
