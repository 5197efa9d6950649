//! IMAP without I/O: what the client puts on the wire ([`command`]) and what the server's
//! response codes mean ([`codes`]). Nothing here reads or writes a socket, so every encoder
//! and every code is pinned by known-answer tests on exact bytes; the driver in
//! [`crate::client`] only moves those bytes.

pub mod codes;
pub mod command;
