//! SQLite-specific behaviour: schema versions and files written by earlier releases. What every
//! store must do is the conformance suite's (`mailferry_core::store_conformance!`).

use rusqlite::Connection;

use super::*;
use mailferry_core::model::Origin;

/// The schema of mailferry 0.1 before it had any later column: what a state file of the
/// first release holds.
const FIRST_RELEASE: &str = "
CREATE TABLE entries (
    id TEXT PRIMARY KEY NOT NULL, source_login TEXT NOT NULL,
    source_addresses TEXT NOT NULL DEFAULT '[]', target_login TEXT,
    target_addresses TEXT NOT NULL DEFAULT '[]', origin TEXT NOT NULL, stage INTEGER,
    state TEXT NOT NULL DEFAULT 'new', copied INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0, last_pass TEXT, last_error TEXT) STRICT;
INSERT INTO entries (id, source_login, source_addresses, target_login, target_addresses, origin)
    VALUES ('u1', 'alice', '[\"alice@old.example\"]', 'alice', '[\"alice@new.example\"]', 'csv');
";

#[test]
fn a_first_release_database_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch(FIRST_RELEASE)
        .unwrap();
    let store = SqliteStore::open(&path).unwrap();
    let entries = store.entries().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].origin, Origin::Csv);
    assert_eq!(entries[0].target_addresses, ["alice@new.example"]);
    assert!(!entries[0].missing_source);
    drop(store);
    let version: i64 = Connection::open(&path)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, schema::VERSION);
    // Opening again runs no migration twice.
    assert_eq!(
        SqliteStore::open(&path).unwrap().entries().unwrap().len(),
        1
    );
}

#[test]
fn a_newer_schema_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.db");
    drop(SqliteStore::open(&path).unwrap());
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", schema::VERSION + 1)
        .unwrap();
    let err = SqliteStore::open(&path).err().unwrap();
    assert_eq!(err.kind, StoreErrorKind::Schema);
    assert!(
        err.message.contains("written by a newer mailferry")
            && err.message.contains(&path.display().to_string()),
        "{err}"
    );
    let version: i64 = Connection::open(&path)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, schema::VERSION + 1);
}

#[test]
fn a_file_that_is_not_a_database_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.db");
    std::fs::write(
        &path,
        b"this is not SQLite, just text that is long enough to be a header",
    )
    .unwrap();
    let err = SqliteStore::open(&path).err().unwrap();
    assert!(
        err.message.starts_with("Unable to open the state database"),
        "{err}"
    );
}

#[test]
fn an_unknown_stored_value_is_an_error_not_a_guess() {
    let store = SqliteStore::open_in_memory().unwrap();
    store
        .conn
        .execute_batch(
            "INSERT INTO entries (id, source_login, origin) VALUES ('x', 'x', 'sideways')",
        )
        .unwrap();
    let err = store.entries().unwrap_err();
    assert!(err.message.contains("unknown origin \"sideways\""), "{err}");
}

/// The store port's rules, on an SQLite database in memory and on one in a file.
mod conformance {
    use super::SqliteStore;

    mailferry_core::store_conformance!(Box::new(
        SqliteStore::open_in_memory().expect("an in-memory database")
    ));

    mod on_disk {
        use super::SqliteStore;

        use std::sync::OnceLock;
        use std::sync::atomic::{AtomicU32, Ordering};

        /// A fresh database file per test, all in one folder of this test process.
        fn on_disk() -> Box<SqliteStore> {
            static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let dir = DIR.get_or_init(|| tempfile::tempdir().expect("tempdir"));
            let path = dir
                .path()
                .join(format!("job-{}.db", NEXT.fetch_add(1, Ordering::SeqCst)));
            Box::new(SqliteStore::open(&path).expect("a database file"))
        }

        mailferry_core::store_conformance!(on_disk());
    }
}
