//! mailferry's IMAP client.
//!
//! No Rust IMAP client offers what a migration needs all at once (pipelined APPEND with
//! LITERAL+, APPENDUID, streaming FETCH, SASL PLAIN with an authorization identity), so this
//! crate has its own, split along the sans-IO seam:
//!
//! * [`proto`] and [`response`] do no I/O. [`proto::command`] encodes commands (quoting,
//!   literals, the APPEND message head, compact UID sets chunked to RFC 2683's ~1,000-character
//!   lines), [`response`] frames and parses the server's bytes, and [`proto::codes`] gives
//!   response codes their typed meaning (APPENDUID, COPYUID, the RFC 5530 codes). All of it is
//!   unit-tested on exact server bytes.
//! * [`client`] is the driver: a blocking TCP/rustls connection that writes those commands,
//!   reads responses, matches tags (pipelined APPEND) and runs the flows that need a round trip
//!   (STARTTLS, SASL continuations, synchronising literals, the MOVE fallback). It is tested
//!   against scripted servers on loopback.
//! * [`tls`] builds the one rustls client configuration, shared with the LDAP directory.

pub mod client;
pub mod proto;
pub mod response;
pub mod tls;

pub use client::{
    AppendRequest, Client, Endpoint, Error, FolderStatus, Login, OAuthMechanism, Result, Security,
    Selected, trace_note,
};
pub use proto::codes::{AppendUid, CopyUid, TypedCode};
pub use proto::command::{MAX_SET_CHARS, expand_uid_set, quote, uid_set, uid_sets};
pub use response::{Fetch, ListItem, Value};
