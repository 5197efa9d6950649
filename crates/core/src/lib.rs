//! mailferry's domain: the job, its entries, folder mapping, the ledger and the copy engine.
//!
//! Nothing here parses command lines or draws progress bars; the binary does that. Servers are
//! reached through `mailferry-imap`, state lives in [`store`].

pub mod csvfile;
pub mod directory;
pub mod engine;
pub mod entries;
pub mod fingerprint;
pub mod folders;
pub mod identities;
pub mod job;
pub mod maildir;
pub mod matching;
pub mod migrate;
pub mod refresh;
pub mod report;
pub mod session;
pub mod store;
