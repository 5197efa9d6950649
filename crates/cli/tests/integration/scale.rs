//! Memory stays bounded: a 30 MB message costs a small multiple of 30 MB, and 20,000 messages
//! in one folder cost no more than a few.

use crate::lab::*;

/// Issue #11's bound for the whole process with a 30 MB message in flight. A body is held
/// once (read into a buffer of its size, then written from it), and freed bodies go back to
/// the system; before that, a 30 MB message cost a 32 MiB read buffer and a copy.
const BOUND: u64 = 64 << 20;

fn peak(v: &serde_json::Value) -> u64 {
    v["peak_rss_bytes"]
        .as_u64()
        .expect("peak_rss_bytes in migrate --json")
}

#[test]
fn a_30_mb_message_and_a_20000_message_folder_keep_memory_bounded() {
    let lab = Lab::new(&["big", "many"]);
    let mut huge = generated(1, 30_000_000);
    huge.flags = vec!["\\Seen".into(), "$Huge".into()];
    fill(&lab.source, "big", "INBOX", &[huge]);
    fill(
        &lab.source,
        "many",
        "INBOX",
        &(0..20_000).map(|i| generated(i, 700)).collect::<Vec<_>>(),
    );

    std::fs::write(
        lab.dir.path().join("mailboxes.csv"),
        "Source ID,Source addresses,Source login,Target addresses,Target login\nid-big,big@old.example,big,big@new.example,big\n",
    )
    .unwrap();
    let v = lab.migrate_ok();
    assert_eq!(v["copied"], 1);
    let big_peak = peak(&v);
    eprintln!(
        "peak RSS with one 30 MB message: {} MB",
        big_peak / 1_000_000
    );
    assert!(
        big_peak <= BOUND,
        "a 30 MB message cost {big_peak} bytes of memory"
    );
    assert_same(
        &snapshot(&lab.source, "big"),
        &snapshot(&lab.target, "big"),
        str::to_string,
    );

    std::fs::write(
        lab.dir.path().join("mailboxes.csv"),
        "Source ID,Source addresses,Source login,Target addresses,Target login\nid-many,many@old.example,many,many@new.example,many\n",
    )
    .unwrap();
    let v = lab.migrate_ok();
    assert_eq!(v["copied"], 20_000);
    let many_peak = peak(&v);
    eprintln!(
        "peak RSS with 20,000 messages: {} MB",
        many_peak / 1_000_000
    );
    assert!(
        many_peak <= BOUND,
        "20,000 small messages cost {many_peak} bytes of memory"
    );
    let src = snapshot(&lab.source, "many");
    assert_eq!(total(&src), 20_000);
    assert_same(&src, &snapshot(&lab.target, "many"), str::to_string);
}
