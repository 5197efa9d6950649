//! PostgreSQL-specific behaviour: the state URL, the password and where it comes from, schema
//! versions, two processes racing for one lease, TLS. What every store must do is the
//! conformance suite's (`mailferry_core::store_conformance!`), run here on a real server from
//! the test kit, one database per test.

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use mailferry_testkit::postgres::{Postgres, PostgresConfig, PostgresDatabase};

use super::connect::{password_from, pgpass_lookup};
use super::*;
use mailferry_core::model::Origin;

const HOUR: Duration = Duration::from_secs(3600);

fn url_of(db: &PostgresDatabase) -> PostgresUrl {
    PostgresUrl::parse(&db.url(), Path::new("/")).expect("the test kit's URL parses")
}

fn open(db: &PostgresDatabase) -> PostgresStore {
    PostgresStore::open(&url_of(db), Some(&Password::new(db.password())))
        .unwrap_or_else(|e| panic!("opening {}: {e}", db.url()))
}

fn fresh() -> (PostgresDatabase, PostgresStore) {
    let db = Postgres::shared().fresh_database();
    let store = open(&db);
    (db, store)
}

#[test]
fn stores_used_in_turn_on_one_thread_keep_their_prepared_statements() {
    let prepares = || super::conn::PREPARES.with(std::cell::Cell::get);
    let entry = EntryId::new("e".to_string());
    let stores: Vec<(PostgresDatabase, PostgresStore)> = (0..3).map(|_| fresh()).collect();
    for (_, s) in &stores {
        s.ledger_folder(&entry, "INBOX").unwrap();
    }
    let first_round = prepares();
    assert!(
        first_round >= 3,
        "each session prepares it once: {first_round}"
    );
    for _ in 0..5 {
        for (_, s) in &stores {
            s.ledger_folder(&entry, "INBOX").unwrap();
        }
    }
    // Before, the thread's one cache was dropped at every switch of store: 15 more.
    assert_eq!(
        prepares(),
        first_round,
        "prepared again after a switch of store"
    );
}

fn parse(raw: &str) -> Result<PostgresUrl> {
    PostgresUrl::parse(raw, Path::new("/jobs"))
}

// ---------------------------------------------------------------- the state URL

#[test]
fn a_state_url_names_user_host_port_database_and_defaults_to_verified_tls() {
    let url = parse("postgres://mf%40ops@db.example:6432/state_1").unwrap();
    assert_eq!(
        url,
        PostgresUrl {
            user: "mf@ops".into(),
            host: "db.example".into(),
            port: 6432,
            dbname: "state_1".into(),
            tls: Tls::Verified { root_cert: None },
        }
    );
    assert_eq!(url.to_string(), "postgres://mf@ops@db.example:6432/state_1");
    let v6 = parse("postgresql://mf@[::1]/s?sslmode=disable").unwrap();
    assert_eq!(
        (v6.host.as_str(), v6.port, &v6.tls),
        ("::1", 5432, &Tls::Off)
    );
    assert_eq!(v6.to_string(), "postgres://mf@[::1]:5432/s");
    let ca = parse("postgres://mf@db/s?sslmode=verify-full&sslrootcert=ca.pem").unwrap();
    assert_eq!(
        ca.tls,
        Tls::Verified {
            root_cert: Some("/jobs/ca.pem".into())
        }
    );
}

#[test]
fn sslmodes_that_fall_back_to_plain_text_unannounced_are_refused() {
    for mode in ["prefer", "allow"] {
        let err = parse(&format!("postgres://mf@db/s?sslmode={mode}")).unwrap_err();
        assert!(
            err.message
                .starts_with(&format!("sslmode={mode} would fall back")),
            "{err}"
        );
    }
    let err = parse("postgres://mf@db/s?sslmode=sometimes").unwrap_err();
    assert!(err.message.contains("Unknown sslmode"), "{err}");
    let err = parse("postgres://mf@db/s?sslmode=disable&sslrootcert=ca.pem").unwrap_err();
    assert!(err.message.contains("sslrootcert is given"), "{err}");
}

#[test]
fn a_state_url_without_user_or_database_or_with_unknown_parameters_is_refused() {
    for raw in [
        "postgres://db.example/s",
        "postgres://mf@db.example",
        "postgres://mf@db.example:99999/s",
        "postgres://mf@db.example/s?password=x",
        "mysql://mf@db.example/s",
    ] {
        assert!(parse(raw).is_err(), "{raw} was accepted");
    }
}

#[test]
fn a_password_in_the_state_url_is_refused_without_being_repeated() {
    let err = parse("postgres://mf:s3cr3t-pw@db.example/s").unwrap_err();
    assert!(err.message.contains("must not carry a password"), "{err}");
    assert!(!err.message.contains("s3cr3t-pw"), "{err}");
}

/// Through `Standard::open_store`, as `migrate` opens a job's state.
#[test]
fn the_job_s_postgres_state_is_opened_by_the_standard_backends() {
    use mailferry_core::job::{Job, StateLocation};
    use mailferry_core::ports::Backends;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.toml");
    let text = "name = \"t\"\n[source]\nkind = \"maildir\"\npath = \"src\"\n\
                [target]\nkind = \"maildir\"\npath = \"dst\"\n";
    let mut job = Job::parse(&path, text).unwrap_or_else(|e| panic!("{e}"));
    job.state = StateLocation::Postgres("postgres://mf:hunter2-pw@127.0.0.1:1/s".into());
    let err = crate::Standard.open_store(&job).err().unwrap();
    assert!(!err.message.contains("hunter2-pw"), "{err}");
    assert!(err.message.contains("must not carry a password"), "{err}");

    let db = Postgres::shared().fresh_database();
    job.state = StateLocation::Postgres(db.url().replace("disable", "prefer"));
    let err = crate::Standard.open_store(&job).err().unwrap();
    assert!(err.message.contains("sslmode=prefer"), "{err}");
}

// ---------------------------------------------------------------- the password

fn target() -> PostgresUrl {
    parse("postgres://mf@db.example:5432/state").unwrap()
}

#[test]
fn the_environment_variable_comes_before_the_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgpass");
    std::fs::write(&file, "*:*:*:*:from-file\n").unwrap();
    set_mode(&file, 0o600);
    let got = password_from(Some("from-env".into()), Some(&file), &target()).unwrap();
    assert_eq!(got, Some(Password::new("from-env")));
    let got = password_from(None, Some(&file), &target()).unwrap();
    assert_eq!(got, Some(Password::new("from-file")));
    let none = password_from(None, Some(&dir.path().join("absent")), &target()).unwrap();
    assert_eq!(none, None);
}

#[test]
fn the_first_matching_pgpass_line_wins_with_wildcards_and_escapes() {
    let text = "# comment\n\
                other.example:5432:state:mf:not-this-one\n\
                db.example:6432:*:mf:wrong-port\n\
                db.example:5432:*:mf:pa\\:ss\\\\word:with-colon\n\
                *:*:*:*:fallback\n";
    assert_eq!(
        pgpass_lookup(text, &target()).as_deref(),
        Some("pa:ss\\word:with-colon")
    );
    let other = parse("postgres://someone@elsewhere/x").unwrap();
    assert_eq!(pgpass_lookup(text, &other).as_deref(), Some("fallback"));
    assert_eq!(pgpass_lookup("db.example:5432:state:mf\n", &target()), None);
}

#[test]
fn a_password_file_others_can_read_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgpass");
    std::fs::write(&file, "*:*:*:*:pw-in-file\n").unwrap();
    set_mode(&file, 0o644);
    let err = password_from(None, Some(&file), &target()).unwrap_err();
    assert!(err.message.contains("chmod 600"), "{err}");
    assert!(err.message.contains(&file.display().to_string()), "{err}");
    assert!(!err.message.contains("pw-in-file"), "{err}");
}

#[test]
fn a_password_is_not_in_debug_output() {
    assert_eq!(format!("{:?}", Password::new("hunter2")), "Password(…)");
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

// ---------------------------------------------------------------- connecting

#[test]
fn a_wrong_password_is_refused_in_the_server_s_words_and_not_repeated() {
    let db = Postgres::shared().fresh_database();
    let wrong = "wrong-Pa55word-xyz";
    let err = PostgresStore::open(&url_of(&db), Some(&Password::new(wrong)))
        .err()
        .unwrap();
    assert!(
        err.message.starts_with(&format!(
            "Unable to open the state database {}:",
            url_of(&db)
        )),
        "{err}"
    );
    assert!(
        err.message.contains("password authentication failed"),
        "{err}"
    );
    assert!(!err.message.contains(wrong), "{err}");
    assert!(!err.message.contains(db.password()), "{err}");
}

#[test]
fn no_password_where_the_server_asks_for_one_says_where_to_put_it() {
    let db = Postgres::shared().fresh_database();
    let err = PostgresStore::open(&url_of(&db), None).err().unwrap();
    assert!(
        err.message.contains("MAILFERRY_STATE_PASSWORD") && err.message.contains(".pgpass"),
        "{err}"
    );
}

#[test]
fn a_server_that_is_not_there_is_named_in_the_error() {
    // A port nothing listens on: the kit's server is elsewhere, and port 1 needs root.
    let url = parse("postgres://mf@127.0.0.1:1/s?sslmode=disable").unwrap();
    let err = PostgresStore::open(&url, Some(&Password::new("pw-here")))
        .err()
        .unwrap();
    assert!(
        err.message
            .starts_with("Unable to open the state database postgres://mf@127.0.0.1:1/s:"),
        "{err}"
    );
    assert!(!err.message.contains("pw-here"), "{err}");
    assert_eq!(err.kind, StoreErrorKind::Other);
}

// ---------------------------------------------------------------- schema versions

#[test]
fn the_schema_is_created_on_first_use_and_migrated_once() {
    let (db, store) = fresh();
    drop(store);
    drop(open(&db));
    // Each version applied once, in order.
    let versions = Postgres::shared().psql(
        &db.name,
        "SELECT string_agg(version::text, ',' ORDER BY version) FROM mailferry_schema",
    );
    let expected: Vec<String> = (1..=schema::VERSION).map(|v| v.to_string()).collect();
    assert_eq!(versions.trim(), expected.join(","));
}

#[test]
fn a_newer_schema_is_refused_and_left_alone() {
    let (db, store) = fresh();
    drop(store);
    let newer = schema::VERSION + 1;
    Postgres::shared().psql(
        &db.name,
        &format!("INSERT INTO mailferry_schema (version) VALUES ({newer})"),
    );
    let err = PostgresStore::open(&url_of(&db), Some(&Password::new(db.password())))
        .err()
        .unwrap();
    assert_eq!(err.kind, StoreErrorKind::Schema);
    assert!(
        err.message.contains("written by a newer mailferry")
            && err.message.contains(&url_of(&db).to_string()),
        "{err}"
    );
    let max = Postgres::shared().psql(&db.name, "SELECT max(version) FROM mailferry_schema");
    assert_eq!(max.trim(), newer.to_string());
}

#[test]
fn a_database_with_another_program_s_entries_table_is_not_taken_for_a_state() {
    let db = Postgres::shared().fresh_database();
    Postgres::shared().psql(
        &db.name,
        &format!(
            "CREATE TABLE entries (x int); ALTER TABLE entries OWNER TO \"{}\"",
            db.user
        ),
    );
    let err = PostgresStore::open(&url_of(&db), Some(&Password::new(db.password())))
        .err()
        .unwrap();
    assert_eq!(err.kind, StoreErrorKind::Schema);
    assert!(err.message.contains("not a mailferry state"), "{err}");
}

#[test]
fn processes_opening_a_new_database_at_once_all_succeed() {
    let db = Postgres::shared().fresh_database();
    let start = Arc::new(Barrier::new(4));
    let opened: Vec<_> = (0..4)
        .map(|_| {
            let (db, start) = (db.clone(), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                PostgresStore::open(&url_of(&db), Some(&Password::new(db.password()))).map(|_| ())
            })
        })
        .collect();
    for t in opened {
        t.join().unwrap().unwrap();
    }
    let versions = Postgres::shared().psql(&db.name, "SELECT count(*) FROM mailferry_schema");
    assert_eq!(versions.trim(), schema::VERSION.to_string());
}

#[test]
fn an_unknown_stored_value_is_an_error_not_a_guess() {
    let (db, store) = fresh();
    Postgres::shared().psql(
        &db.name,
        "INSERT INTO entries (id, source_login, origin) VALUES ('x', 'x', 'sideways')",
    );
    let err = store.entries().unwrap_err();
    assert!(err.message.contains("Unknown origin \"sideways\""), "{err}");
}

#[test]
fn a_message_size_beyond_the_database_s_integers_is_refused_with_nothing_written() {
    let (_db, mut store) = fresh();
    let mut row = LedgerRow {
        source_folder: "INBOX".into(),
        uid_validity: mailferry_core::testing::validity(7),
        uid: mailferry_core::testing::uid(1),
        target_folder: "INBOX".into(),
        target_uid: None,
        target_uidnext: Some(1),
        fingerprint: "fp".into(),
        size: 10,
        flags: Flags::default(),
        state: mailferry_core::model::LedgerState::Pending,
    };
    let mut huge = row.clone();
    huge.uid = mailferry_core::testing::uid(2);
    huge.size = u64::MAX;
    let id = EntryId::from("u1");
    let err = store.insert_pending(&id, &[row.clone(), huge]).unwrap_err();
    assert!(err.message.contains("too large"), "{err}");
    assert!(store.ledger_all(&id).unwrap().is_empty());
    row.uid = mailferry_core::testing::uid(3);
    store.insert_pending(&id, &[row]).unwrap();
}

// ---------------------------------------------------------------- two processes

/// Two connections (as two processes on two machines would have) claim the same free entry
/// at the same moment, many times over: exactly one wins each time, and the loser is told
/// the winner's name and epoch.
#[test]
fn two_connections_racing_for_one_lease_never_both_win() {
    let db = Postgres::shared().fresh_database();
    let rounds = 25;
    let start = Arc::new(Barrier::new(2));
    let racers: Vec<_> = ["host-a:1", "host-b:2"]
        .into_iter()
        .map(|holder| {
            let (db, start) = (db.clone(), Arc::clone(&start));
            std::thread::spawn(move || {
                let mut store = open(&db);
                (0..rounds)
                    .map(|round| {
                        let id = EntryId::new(format!("e{round:02}"));
                        start.wait();
                        match store.lease(&id, holder, HOUR).unwrap() {
                            Ok(lease) => (holder.to_string(), lease.epoch),
                            Err(h) => (format!("refused by {}", h.holder), h.epoch),
                        }
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<Vec<(String, i64)>> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!((results[0].len(), results[1].len()), (rounds, rounds));
    for (round, (a, b)) in results[0].iter().zip(&results[1]).enumerate() {
        let winners = [a, b]
            .iter()
            .filter(|(who, _)| !who.starts_with("refused"))
            .count();
        assert_eq!(winners, 1, "round {round}: {a:?} {b:?}");
        let (winner, loser) = if a.0.starts_with("refused") {
            (b, a)
        } else {
            (a, b)
        };
        assert_eq!(loser, &(format!("refused by {}", winner.0), winner.1));
        assert_eq!(winner.1, 1);
    }
}

/// Six connections (six processes, on as many machines) claim six different entries at the
/// same moment, each pass using one connection of a target capped at 2, many times over:
/// never more than two win a round (the claims are counted under one advisory lock), and
/// the others are told the target is full.
#[test]
fn six_connections_racing_for_a_capped_server_never_exceed_its_cap() {
    use mailferry_core::ports::store::{Refusal, ServerUse};
    let db = Postgres::shared().fresh_database();
    let (racers, rounds, cap) = (6, 15, 2);
    let start = Arc::new(Barrier::new(racers));
    let done = Arc::new(Barrier::new(racers));
    let threads: Vec<_> = (0..racers)
        .map(|n| {
            let (db, start, done) = (db.clone(), Arc::clone(&start), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut store = open(&db);
                let holder = format!("host-{n}:1");
                let uses = [ServerUse {
                    server: "new.example:993".into(),
                    mailbox: format!("user{n}"),
                    connections: 1,
                    max_connections: cap,
                    max_per_mailbox: None,
                }];
                (0..rounds)
                    .map(|round| {
                        let id = EntryId::new(format!("r{round:02}-{n}"));
                        start.wait();
                        let got = store.claim(&id, &holder, HOUR, None, &uses).unwrap();
                        // Every claim of the round is in before any is given back.
                        done.wait();
                        match got {
                            Ok(lease) => {
                                store.release(&lease).unwrap();
                                true
                            }
                            Err(Refusal::Full(full)) => {
                                assert_eq!(full.cap, cap);
                                false
                            }
                            Err(other) => panic!("refused as {other:?}"),
                        }
                    })
                    .collect::<Vec<bool>>()
            })
        })
        .collect();
    let won: Vec<Vec<bool>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for round in 0..rounds {
        let winners = won.iter().filter(|w| w[round]).count();
        assert_eq!(winners, cap as usize, "round {round}: {winners} claims won");
    }
}

/// Two processes both see the same holder gone and take over from its epoch at once: only
/// one takes it.
#[test]
fn two_take_overs_from_the_same_epoch_never_both_win() {
    let db = Postgres::shared().fresh_database();
    let id = EntryId::from("u1");
    let gone = open(&db)
        .lease(&id, "host-dead:1", HOUR)
        .unwrap()
        .unwrap_or_else(|h| panic!("refused by {}", h.holder));
    let start = Arc::new(Barrier::new(2));
    let racers: Vec<_> = ["host-a:1", "host-b:2"]
        .into_iter()
        .map(|holder| {
            let (db, start, id) = (db.clone(), Arc::clone(&start), id.clone());
            std::thread::spawn(move || {
                let mut store = open(&db);
                start.wait();
                store.take_over(&id, holder, HOUR, gone.epoch).unwrap()
            })
        })
        .collect();
    let results: Vec<_> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    let won: Vec<&Lease> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    assert_eq!(won[0].epoch, gone.epoch + 1);
}

/// Expiry is the database's clock: a claim whose expiry the database has passed is free,
/// whatever this process's clock says.
#[test]
fn a_lease_expires_by_the_database_s_clock() {
    let (db, mut store) = fresh();
    let id = EntryId::from("u1");
    let first = store.lease(&id, "host-a:1", HOUR).unwrap().unwrap();
    Postgres::shared().psql(
        &db.name,
        "UPDATE leases SET expires = clock_timestamp() - interval '1 second'",
    );
    assert!(store.live_passes().unwrap().is_empty());
    let next = store.lease(&id, "host-b:2", HOUR).unwrap().unwrap();
    assert_eq!(next.epoch, first.epoch + 1);
}

#[test]
fn entries_added_by_two_processes_at_once_are_all_kept() {
    let db = Postgres::shared().fresh_database();
    drop(open(&db));
    let start = Arc::new(Barrier::new(2));
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let (db, start) = (db.clone(), Arc::clone(&start));
            std::thread::spawn(move || {
                let mut store = open(&db);
                let batch: Vec<Entry> = (0..30)
                    .map(|i| Entry::new(EntryId::new(format!("e{i:02}")), "x".into(), Origin::Csv))
                    .collect();
                start.wait();
                store.upsert_entries(&batch).unwrap()
            })
        })
        .collect();
    let counts: Vec<(usize, usize)> = writers.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(counts.iter().map(|c| c.0).sum::<usize>(), 30, "{counts:?}");
    assert_eq!(open(&db).entries().unwrap().len(), 30);
}

// ---------------------------------------------------------------- TLS

/// Against a server with TLS: its CA as sslrootcert connects; without it the certificate
/// is refused, and the error says what to add.
#[test]
fn tls_verifies_the_server_certificate_against_sslrootcert() {
    let server = Postgres::start(PostgresConfig {
        tls: true,
        ..PostgresConfig::default()
    });
    let ca = server.ca_pem().unwrap();
    let db = server.database("mailferry");
    let password = Password::new(db.password());
    let with_ca = PostgresUrl::parse(
        &format!(
            "postgres://{}@localhost:{}/{}?sslmode=verify-full&sslrootcert={}",
            db.user,
            db.port,
            db.name,
            ca.display()
        ),
        Path::new("/"),
    )
    .unwrap();
    let mut store = PostgresStore::open(&with_ca, Some(&password)).unwrap();
    store.set_meta(MetaKey::JobFileSha256, "over TLS").unwrap();
    let ssl = server.psql(
        "mailferry",
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE s.ssl AND a.application_name = 'mailferry'",
    );
    assert_eq!(ssl.trim(), "1");

    let without = PostgresUrl::parse(
        &format!("postgres://{}@localhost:{}/{}", db.user, db.port, db.name),
        Path::new("/"),
    )
    .unwrap();
    let err = PostgresStore::open(&without, Some(&password))
        .err()
        .unwrap();
    assert!(err.message.contains("sslrootcert=FILE"), "{err}");
}

/// The store port's rules, on a fresh database of the test kit's server per test.
mod conformance {
    fn fresh() -> Box<super::PostgresStore> {
        Box::new(super::fresh().1)
    }

    mailferry_core::store_conformance!(fresh());
}

// ---------------------------------------------------------------- a broken connection

fn ledger_row(uid: u32) -> LedgerRow {
    LedgerRow {
        source_folder: "INBOX".into(),
        uid_validity: mailferry_core::testing::validity(7),
        uid: mailferry_core::testing::uid(uid),
        target_folder: "INBOX".into(),
        target_uid: None,
        target_uidnext: Some(1),
        fingerprint: format!("fp{uid}").as_str().into(),
        size: 10,
        flags: Flags::default(),
        state: mailferry_core::model::LedgerState::Pending,
    }
}

/// One entry's pass as the engine writes it: its claim, fenced; an intent, the copy
/// recorded, a checkpoint, a failure, and the outcome with the claim given back. Every
/// write must succeed once, whatever happened to the connection under it.
fn one_pass(store: &mut PostgresStore, run: RunId, n: u32) {
    let id = EntryId::new(format!("e{n:04}"));
    let lease = store
        .lease(&id, "host-a:1", HOUR)
        .unwrap_or_else(|e| panic!("lease {id}: {e}"))
        .unwrap_or_else(|h| panic!("lease {id}: refused by {} (epoch {})", h.holder, h.epoch));
    store.fence(&lease);
    let rows = [ledger_row(1), ledger_row(2)];
    store
        .insert_pending(&id, &rows)
        .unwrap_or_else(|e| panic!("insert_pending {id}: {e}"));
    let copied: Vec<(&LedgerRow, Option<Uid>)> = rows
        .iter()
        .map(|r| (r, Some(mailferry_core::testing::uid(r.uid.get()))))
        .collect();
    store
        .complete(&id, &copied, &[])
        .unwrap_or_else(|e| panic!("complete {id}: {e}"));
    store
        .set_checkpoint(
            &id,
            "INBOX",
            &Checkpoint {
                uid_validity: 7,
                uid_next: 3,
                messages: 2,
                highest_modseq: None,
                filter: String::new(),
            },
        )
        .unwrap_or_else(|e| panic!("set_checkpoint {id}: {e}"));
    store
        .record_failure(
            run,
            &Failure {
                entry_id: id.clone(),
                folder: "INBOX".into(),
                uid: None,
                size: None,
                message_id: None,
                reason: "a reason".into(),
            },
        )
        .unwrap_or_else(|e| panic!("record_failure {id}: {e}"));
    let result = RunEntry {
        entry_id: id.clone(),
        state: EntryState::Migrated,
        copied: 2,
        skipped: 0,
        failed: 1,
        bytes: 20,
        moved: 0,
        flags_updated: 0,
        seconds: 0.1,
        error: None,
        keywords_dropped: Vec::new(),
        throttled_seconds: 0.0,
    };
    store
        .finish_pass(
            run,
            &result,
            "2026-01-01T00:00:00Z",
            &lease,
            AfterPass::Keep,
        )
        .unwrap_or_else(|e| panic!("finish_pass {id}: {e}"));
    store.unfence(&id);
}

/// What `passes` passes left: every entry's two rows copied, one failure each, one run line
/// each, every claim given back.
fn assert_passes_recorded_once(store: &PostgresStore, run: RunId, passes: u32) {
    for n in 0..passes {
        let id = EntryId::new(format!("e{n:04}"));
        let rows = store.ledger_all(&id).unwrap();
        assert_eq!(rows.len(), 2, "{id}: {rows:?}");
        assert!(
            rows.iter()
                .all(|r| r.state == mailferry_core::model::LedgerState::Copied),
            "{id}: {rows:?}"
        );
    }
    assert_eq!(store.failures(run).unwrap().len(), passes as usize);
    assert_eq!(store.run_entries(run).unwrap().len(), passes as usize);
    let live = store.live_passes().unwrap();
    assert!(
        live.iter().all(|p| !p.entry.as_str().starts_with('e')),
        "{live:?}"
    );
}

/// The connection is cut under the store again and again, at every point of its traffic
/// from the server (connection n after 3,000 + 13·n bytes: past the start-up, then through
/// the passes' statements, their answers and their COMMITs' answers). Every write succeeds
/// exactly once: a write whose COMMIT's answer was lost is found committed (its stamp) and
/// not done again — doing it again would be refused (an intent already recorded, a claim
/// already held or given back).
#[test]
fn a_connection_cut_at_any_point_costs_no_write_and_applies_none_twice() {
    let db = Postgres::shared().fresh_database();
    drop(open(&db));
    let upstream = format!("{}:{}", db.host, db.port).parse().unwrap();
    let proxy = mailferry_testkit::proxy::Proxy::start(upstream, |n| {
        mailferry_testkit::proxy::Faults {
            // The first connection is the store's opening, which is not tried again.
            cut_down_after: Some(if n == 0 { 8_000 } else { 3_000 + 13 * n }),
            ..Default::default()
        }
    });
    let url = PostgresUrl {
        port: proxy.port(),
        ..url_of(&db)
    };
    let mut store = PostgresStore::open(&url, Some(&Password::new(db.password())))
        .unwrap()
        .reconnecting_for(Duration::from_secs(20));
    let run = store.start_run(RunKind::Migrate).unwrap();
    let passes = 120;
    for n in 0..passes {
        one_pass(&mut store, run, n);
    }
    assert!(
        proxy.stats().cuts >= 40,
        "too few cuts to mean anything: {:?}",
        proxy.stats()
    );
    // Checked on a connection of its own: the proxy would cut a long answer forever.
    let direct = open(&db);
    assert_passes_recorded_once(&direct, run, passes);
    assert_eq!(direct.runs(RunKind::Migrate).unwrap().len(), 1);
}

/// The server restarts (a fast shutdown: every session ends, 2 s with nothing listening,
/// then up again with the same data on the same port) while a store writes: no write fails
/// and none is applied twice; a claim taken before the restart still fences the writes
/// after it.
#[test]
fn a_server_restart_costs_no_write_and_applies_none_twice() {
    let mut server = Postgres::start(PostgresConfig::default());
    let db = server.fresh_database();
    let restarted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (db, restarted) = (db.clone(), Arc::clone(&restarted));
        std::thread::spawn(move || {
            let mut store = open(&db);
            let run = store.start_run(RunKind::Migrate).unwrap();
            // A claim held across the restart, and the fence on it.
            let held = EntryId::from("held");
            let lease = store.lease(&held, "host-a:1", HOUR).unwrap().unwrap();
            store.fence(&lease);
            let mut n = 0;
            let mut after = 0;
            while after < 30 {
                one_pass(&mut store, run, n);
                n += 1;
                if restarted.load(std::sync::atomic::Ordering::SeqCst) {
                    after += 1;
                }
            }
            store.insert_pending(&held, &[ledger_row(9)]).unwrap();
            (store, run, n, lease)
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    server.restart(Duration::from_secs(2));
    restarted.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut store, run, passes, lease) = writer.join().unwrap();
    assert!(passes > 30, "{passes}");
    assert_passes_recorded_once(&store, run, passes);
    // The fence still holds: taken over, the old claim's writes are refused.
    server.psql(
        &db.name,
        "UPDATE leases SET expires = clock_timestamp() - interval '1 second' \
         WHERE entry_id = 'held'",
    );
    let mut other = open(&db);
    let taken = other
        .take_over(&lease.entry, "host-b:2", HOUR, lease.epoch)
        .unwrap()
        .unwrap();
    assert_eq!(taken.epoch, lease.epoch + 1);
    let err = store
        .insert_pending(&lease.entry, &[ledger_row(10)])
        .unwrap_err();
    assert_eq!(err.kind, StoreErrorKind::LeaseLost, "{err}");
    assert_eq!(store.ledger_all(&lease.entry).unwrap().len(), 1);
}

/// A server that stays away: the operation fails after the wait, naming the server and no
/// password, and a later operation fails at once instead of waiting again.
#[test]
fn a_server_that_stays_away_fails_the_operation_after_the_wait() {
    let mut server = Postgres::start(PostgresConfig::default());
    let db = server.fresh_database();
    let mut store = open(&db).reconnecting_for(Duration::from_secs(2));
    server.stop_server();
    let started = std::time::Instant::now();
    let err = store.start_run(RunKind::Migrate).unwrap_err();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert!(
        err.message.starts_with(&format!(
            "Lost the connection to the state database {} and could not reconnect within 2 s",
            url_of(&db)
        )),
        "{err}"
    );
    assert!(!err.message.contains(db.password()), "{err}");
    let started = std::time::Instant::now();
    assert!(store.entries().is_err());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Back again: the store is too.
    server.start_again();
    assert!(store.entries().unwrap().is_empty());
}
