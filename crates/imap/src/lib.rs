//! mailferry's IMAP client.
//!
//! No Rust IMAP client offers what a migration needs all at once (pipelined APPEND with
//! LITERAL+, APPENDUID, streaming FETCH, SASL PLAIN with an authorization identity), so this
//! crate has its own: [`response`] frames and parses server bytes without doing any I/O (and is
//! unit-tested on scripted bytes), and [`client`] drives a blocking TCP/rustls connection.

pub mod client;
pub mod mutf7;
pub mod response;

pub use client::{
    AppendRequest, Client, Endpoint, Error, FolderStatus, Login, Result, Security, Selected,
    expand_uid_set, uid_set,
};
pub use response::{Fetch, ListItem, Value};
