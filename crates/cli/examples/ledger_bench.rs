//! How many ledger writes one state database sustains (issue 8, "Running at scale"), through
//! the store port exactly as a pass writes them: each writer holds the lease of its own entry,
//! fences its writes by it, and records groups of intents (`insert_pending`, one commit)
//! that it then marks copied (`complete`, one commit), as the engine does around each
//! MULTIAPPEND group. Run by `bench/scale.sh` on a throwaway job; a benchmark, not a test.
//!
//! ```sh
//! cargo run --release -p mailferry --example ledger_bench -- JOB [WRITERS] [SECONDS] [GROUP]
//! ```
//!
//! JOB's entries must exist (`match` first); writer *i* writes into entry *i*'s ledger under
//! the source folder `ledger-bench` (which a real pass never has), with a UIDVALIDITY of the
//! run's own. Prints one line of JSON:
//! writers, group, seconds, rows (each an intent and its completion), rows per second.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mailferry_adapters::Standard;
use mailferry_core::job::Job;
use mailferry_core::model::{Fingerprint, Flags, LedgerRow, LedgerState, Uid, UidValidity};
use mailferry_core::ports::Backends;

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("argument {n}: a number, not {v}"))
        })
        .unwrap_or(default)
}

fn main() {
    let job = std::env::args()
        .nth(1)
        .expect("usage: ledger_bench JOB [WRITERS] [SECONDS] [GROUP]");
    let writers = arg(2, 4);
    let seconds = arg(3, 10);
    // The engine's MULTIAPPEND group holds up to 128 messages (or 8 MB).
    let group = arg(4, 128);
    let job = Job::load(Path::new(&job)).unwrap_or_else(|e| panic!("{e}"));
    let entries = Standard
        .open_store(&job)
        .and_then(|s| s.entries())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        entries.len() >= writers,
        "the job has {} entries, {writers} writers need as many",
        entries.len()
    );
    let run_validity = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| (d.as_secs() % u64::from(u32::MAX)) as u32)
        .max(1);
    let stop = Arc::new(AtomicBool::new(false));
    let rows = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = entries
        .into_iter()
        .take(writers)
        .map(|entry| {
            let (job, stop, rows) = (job.clone(), stop.clone(), rows.clone());
            std::thread::spawn(move || {
                let mut store = Standard.open_store(&job).unwrap_or_else(|e| panic!("{e}"));
                let holder = format!("ledger-bench-{}", entry.id.as_str());
                let lease = store
                    .lease(&entry.id, &holder, Duration::from_secs(600))
                    .unwrap_or_else(|e| panic!("{e}"))
                    .unwrap_or_else(|h| panic!("{} holds {}", h.holder, entry.id.as_str()));
                store.fence(&lease);
                // A UIDVALIDITY of its own per run, so that a second run on the same job
                // writes new rows beside the first one's.
                let validity = UidValidity::new(run_validity).unwrap();
                let mut next = 1u32;
                while !stop.load(Ordering::Relaxed) {
                    let intents: Vec<LedgerRow> = (0..group)
                        .map(|_| {
                            let uid = next;
                            next += 1;
                            LedgerRow {
                                source_folder: "ledger-bench".into(),
                                uid_validity: validity,
                                uid: Uid::new(uid).unwrap(),
                                target_folder: "ledger-bench".into(),
                                target_uid: None,
                                target_uidnext: Some(uid),
                                fingerprint: Fingerprint::new(format!(
                                    "{uid:08x}0123456789abcdef0123456789abcdef0123456789ab"
                                )),
                                size: 54_000,
                                flags: Flags::from_stored("\\Seen"),
                                state: LedgerState::Pending,
                            }
                        })
                        .collect();
                    store
                        .insert_pending(&entry.id, &intents)
                        .unwrap_or_else(|e| panic!("{e}"));
                    let copied: Vec<_> = intents.iter().map(|r| (r, Some(r.uid))).collect();
                    store
                        .complete(&entry.id, &copied, &[])
                        .unwrap_or_else(|e| panic!("{e}"));
                    rows.fetch_add(group as u64, Ordering::Relaxed);
                }
                let _ = store.release(&lease);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds as u64));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("a writer panicked");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = rows.load(Ordering::Relaxed);
    println!(
        "{{\"writers\": {writers}, \"group\": {group}, \"seconds\": {elapsed:.2}, \"rows\": {n}, \
         \"rows_per_s\": {:.0}}}",
        n as f64 / elapsed
    );
}
