//! Mutation fuzzing of the readers of admin input, on the stable toolchain: the mailboxes CSV,
//! the job file and modified UTF-7 folder names. Mutated inputs must give a value or an error
//! — never a panic.
//!
//! CI runs a short round; `MAILFERRY_FUZZ_ITERATIONS=1000000 cargo test --release -p
//! mailferry-core --test fuzz` is the long run.

use std::path::Path;

use mailferry_core::csvfile::parse_mailboxes_csv_bytes;
use mailferry_core::job::{Job, template};
use mailferry_core::mutf7;

/// A small xorshift: deterministic, so a failure can be replayed from its iteration number.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, input: &[u8], pieces: &[&[u8]]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(5) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                let j = (i + rng.below(40)).min(v.len());
                v.drain(i..j);
            }
            2 => {
                let i = rng.below(v.len() + 1);
                let piece = pieces[rng.below(pieces.len())];
                v.splice(i..i, piece.iter().copied());
            }
            3 if !v.is_empty() => {
                let i = rng.below(v.len());
                let j = (i + rng.below(80)).min(v.len());
                let piece = v[i..j].to_vec();
                v.splice(i..i, piece);
            }
            _ => {
                let i = rng.below(v.len() + 1);
                v.insert(i, rng.next() as u8);
            }
        }
    }
    v
}

fn iterations(default: u64) -> u64 {
    std::env::var("MAILFERRY_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const CSV: &[u8] = b"\xef\xbb\xbfSource ID,Source addresses,Source login,Source password,Target addresses,Target login,Stage\n\
1,a@old.example;al@old.example,alice,pw,a@new.example,alice,1\n\
2,\"b@old.example\",,,\"b@new.example; bb@new.example\",,\n\
3,c@old.example,,,,,2\n";

#[test]
fn the_csv_reader_never_panics() {
    let mut rng = Rng(0xc5f0_0d15_ea5e_0001);
    let pieces: &[&[u8]] = &[
        b",", b";", b"\"", b"\n", b"\r\n", b"@", b"\xff", b"Stage", b"0", b"-1",
    ];
    let mut accepted = 0;
    for _ in 0..iterations(20_000) {
        let input = mutate(&mut rng, CSV, pieces);
        if parse_mailboxes_csv_bytes(Path::new("boxes.csv"), &input).is_ok() {
            accepted += 1;
        }
    }
    assert!(
        accepted > 0,
        "no mutated CSV was ever accepted: the seed itself is broken"
    );
}

#[test]
fn the_job_reader_never_panics() {
    let mut rng = Rng(0x10b_f11e_0002);
    let seed = template();
    let pieces: &[&[u8]] = &[
        b"=",
        b"\"",
        b"[",
        b"]",
        b"{ env = \"X\" }",
        b"\n",
        b"#",
        b"port = 99999\n",
        b"'''",
        b"[source.directory]\n",
        b"\xff",
    ];
    let dir = std::env::temp_dir();
    let path = dir.join("fuzz-job.toml");
    for _ in 0..iterations(3_000) {
        let input = mutate(&mut rng, seed.as_bytes(), pieces);
        let text = String::from_utf8_lossy(&input);
        let _ = Job::parse(&path, &text);
    }
}

#[test]
fn modified_utf7_decodes_any_text_without_panicking_and_round_trips_what_it_encodes() {
    let mut rng = Rng(0x7f7_0003);
    let alphabet: Vec<char> = "&-+,/AZaz09 .\u{e9}\u{fc}\u{65e5}\u{1f600}\u{0}\u{7f}"
        .chars()
        .collect();
    for _ in 0..iterations(50_000) {
        let len = rng.below(24);
        let s: String = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        let _ = mutf7::decode(&s);
        let encoded = mutf7::encode(&s);
        assert!(encoded.is_ascii(), "{s:?} encoded to {encoded:?}");
        assert_eq!(mutf7::decode(&encoded).as_deref(), Ok(s.as_str()), "{s:?}");
    }
}
