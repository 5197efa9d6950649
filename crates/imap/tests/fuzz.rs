//! Mutation fuzzing of the response framer and parser, on the stable toolchain: real server
//! responses are flipped, cut, spliced and repeated, fed in random chunks, and must give a
//! response or an error — never a panic, a hang or a runaway allocation.
//!
//! CI runs a short round; `MAILFERRY_FUZZ_ITERATIONS=5000000 cargo test --release -p
//! mailferry-imap --test fuzz` is the long run (README, "Tests").

use mailferry_imap::response::{Framer, parse};

const SEEDS: &[&[u8]] = &[
    b"* OK [CAPABILITY IMAP4rev1 LITERAL+ MULTIAPPEND UIDPLUS MOVE CONDSTORE] ready\r\n",
    b"* 1 FETCH (UID 7 FLAGS (\\Seen $Label1) INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" RFC822.SIZE 11 BODY[] {11}\r\nhello world)\r\n",
    b"a1 OK [APPENDUID 1700000000 5:7] Append completed.\r\n",
    b"* OK [COPYUID 38505 304,319:320 3956:3958] Done\r\n",
    b"* LIST (\\HasNoChildren \\Sent) \"/\" \"Sent Items\"\r\n",
    b"* LIST (\\Noselect) \".\" {5}\r\nINBOX\r\n",
    b"* STATUS \"INBOX\" (MESSAGES 3 UIDNEXT 4 UIDVALIDITY 7 HIGHESTMODSEQ 9)\r\n",
    b"* NAMESPACE ((\"INBOX.\" \".\")) NIL NIL\r\n",
    b"* SEARCH 1 2 3 4 5 100000\r\n",
    b"* ESEARCH (TAG \"m4\") UID ALL 1:3,7,10:100000 COUNT 99997\r\n",
    b"* VANISHED (EARLIER) 41,43:116\r\n",
    b"a2 NO [OVERQUOTA] Quota exceeded (mailbox for user is full)\r\n",
    b"+ \r\n",
    b"* BYE Server shutting down\r\n",
    b"* 3 FETCH (UID 9 BODYSTRUCTURE ((\"text\" \"plain\" NIL NIL NIL \"7bit\" 3 1)(\"text\" \"html\" NIL NIL NIL \"7bit\" 3 1) \"alternative\"))\r\n",
];

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

const INTERESTING: &[&[u8]] = &[
    b"{",
    b"}",
    b"{99999999999}",
    b"{4294967296}",
    b"(",
    b")",
    b"\"",
    b"\\",
    b"\r\n",
    b"\n",
    b"[",
    b"]",
    b" ",
    b"NIL",
    b"{0}\r\n",
    b"((((((((((",
    b"*",
    b"+",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v.truncate(i);
            }
            2 => {
                let i = rng.below(v.len() + 1);
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                v.splice(i..i, piece.iter().copied());
            }
            3 => {
                let other = SEEDS[rng.below(SEEDS.len())];
                v.extend_from_slice(other);
            }
            4 if !v.is_empty() => {
                let i = rng.below(v.len());
                let j = (i + rng.below(64)).min(v.len());
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

fn iterations() -> u64 {
    std::env::var("MAILFERRY_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

#[test]
fn the_framer_and_parser_never_panic_on_mutated_responses() {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut framed = 0u64;
    for _ in 0..iterations() {
        let seed = SEEDS[rng.below(SEEDS.len())];
        let input = mutate(&mut rng, seed);
        // Small limits, so the limit paths are taken too.
        let mut framer = Framer::with_limits(1 << 16, 1 << 12);
        let mut buf = Vec::new();
        let mut at = 0;
        while at < input.len() {
            let end = (at + 1 + rng.below(32)).min(input.len());
            buf.extend_from_slice(&input[at..end]);
            at = end;
            loop {
                match framer.frame(&buf) {
                    Ok(Some(n)) => {
                        assert!(n <= buf.len(), "framed past the buffer");
                        let _ = parse(&buf[..n]);
                        buf.drain(..n);
                        framer.reset();
                        framed += 1;
                    }
                    Ok(None) => break,
                    Err(_) => {
                        buf.clear();
                        framer.reset();
                        break;
                    }
                }
            }
            assert!(
                buf.len() <= (1 << 16) + (1 << 12) + 64,
                "the buffer outgrew the limits"
            );
        }
        // The parser alone, on whatever bytes, too.
        let _ = parse(&input);
    }
    assert!(
        framed > 0,
        "no input was ever framed: the fuzzer tests nothing"
    );
}
