//! The connection's read buffer: bytes read from the server and not yet framed.
//!
//! Responses are taken from its front by moving a start index, not by moving the bytes
//! after them: a 64 KiB read of a scan holds about a thousand short `FETCH` responses, and
//! closing up the buffer after each one moved about 32 KiB each time. The unread part is
//! moved to the front only when a read needs room. The buffer is zeroed once, as it grows,
//! not again ahead of every read.

use std::io::{self, Read};

pub(super) struct ReadBuf {
    /// Zeroed or once read: `buf.len()` is how much of it a read may be offered.
    buf: Vec<u8>,
    /// The unframed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl ReadBuf {
    pub(super) fn with_capacity(capacity: usize) -> ReadBuf {
        ReadBuf {
            buf: Vec::with_capacity(capacity),
            start: 0,
            end: 0,
        }
    }

    /// The bytes read and not yet consumed.
    pub(super) fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub(super) fn len(&self) -> usize {
        self.end - self.start
    }

    pub(super) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    pub(super) fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Drops the first `n` bytes of [`ReadBuf::data`].
    pub(super) fn consume(&mut self, n: usize) {
        assert!(n <= self.len(), "consumed {n} of {} bytes", self.len());
        self.start += n;
        if self.start == self.end {
            self.clear();
        }
    }

    /// Moves `data()[at..at + n]` to the end of `into`; the bytes after it close up.
    pub(super) fn take_into(&mut self, at: usize, n: usize, into: &mut Vec<u8>) {
        let from = self.start + at;
        into.extend_from_slice(&self.buf[from..from + n]);
        self.buf.copy_within(from + n..self.end, from);
        self.end -= n;
        if self.start == self.end {
            self.clear();
        }
    }

    /// Gives memory back after a long response, keeping `keep` bytes of room.
    pub(super) fn shrink_to(&mut self, keep: usize) {
        self.compact();
        self.buf.truncate(keep.max(self.end));
        self.buf.shrink_to(keep.max(self.end));
    }

    /// Reads once from `from`, offering at least `chunk` bytes of room. Returns how many
    /// bytes arrived (0 when the peer closed); after an error nothing changed.
    pub(super) fn read_from(&mut self, from: &mut impl Read, chunk: usize) -> io::Result<usize> {
        if self.buf.len() - self.end < chunk {
            self.compact();
            if self.buf.len() - self.end < chunk {
                self.buf.resize(self.end + chunk, 0);
            }
        }
        let got = from.read(&mut self.buf[self.end..])?;
        self.end += got;
        Ok(got)
    }

    /// Moves the unread bytes to the front.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out its bytes a few at a time.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(self.1).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn bytes_come_out_in_order_through_consume_take_and_compaction() {
        let input: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut from = Trickle(&input, 37);
        let mut buf = ReadBuf::with_capacity(64);
        let mut out = Vec::new();
        let mut taken = Vec::new();
        let mut round = 0usize;
        loop {
            let got = buf.read_from(&mut from, 64).unwrap();
            if got == 0 && buf.len() == 0 {
                break;
            }
            round += 1;
            // Take a few bytes out of the middle now and then, consume from the front
            // otherwise, and leave some unread for the next read to move.
            if round.is_multiple_of(5) && buf.len() >= 10 {
                let mut piece = Vec::new();
                buf.take_into(3, 4, &mut piece);
                taken.push((out.len() + 3, piece));
                out.extend_from_slice(&buf.data()[..3]);
                buf.consume(3);
            } else {
                let n = if got == 0 { buf.len() } else { buf.len() / 2 };
                out.extend_from_slice(&buf.data()[..n]);
                buf.consume(n);
            }
        }
        // Put the taken pieces back where they were.
        let mut whole = out;
        let mut shift = 0;
        for (at, piece) in taken {
            whole.splice(at + shift..at + shift, piece.iter().copied());
            shift += piece.len();
        }
        assert_eq!(whole, input);
        assert!(buf.capacity() <= 4 * 64, "grew to {}", buf.capacity());
    }

    #[test]
    fn shrinking_keeps_the_unread_bytes() {
        let input = vec![9u8; 1000];
        let mut buf = ReadBuf::with_capacity(16);
        buf.read_from(&mut Trickle(&input, 1000), 1000).unwrap();
        buf.consume(990);
        buf.shrink_to(32);
        assert_eq!(buf.data(), &[9u8; 10]);
        assert!(buf.capacity() < 1000);
    }
}
