//! mailferry's integration tests: one binary, real Dovecot servers started by the test kit,
//! the real `mailferry` binary. Every test starts its own servers on free loopback ports.

mod ad;
mod caps;
mod concurrent;
mod copy;
mod corpus;
mod crash;
mod cyrus;
mod delta;
mod directories;
mod failures;
mod graph;
mod hostile;
mod lab;
mod machines;
mod maildir;
mod network;
mod oauth2;
mod orphans;
mod pg_faults;
mod postgres;
mod profiles;
mod scale;
mod tls;
mod verify;
mod web;
mod workers;
