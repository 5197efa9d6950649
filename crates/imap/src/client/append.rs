//! APPEND and MULTIAPPEND on a [`Client`](super::Client): sent pipelined with LITERAL+ (or
//! waiting for each continuation without it), answered later by tag.

use std::io::Write;

use super::{AppendRequest, Client, Error, FLUSH_AT, Result, timed_out};
use crate::proto::codes::AppendUid;
use crate::proto::command::{message_head, quote};

impl Client {
    /// Starts an APPEND and returns its tag without waiting for the answer. With LITERAL+ the
    /// message goes out at once (pipelined); otherwise this waits for the continuation.
    pub fn append_send(&mut self, req: &AppendRequest<'_>) -> Result<String> {
        self.trace(&format!(
            "APPEND {} ({} bytes)",
            quote(req.mailbox),
            req.message.len()
        ));
        let tag = self.tag();
        let plus = self.has("LITERAL+");
        let head = format!(
            "{tag} APPEND {}{}",
            quote(req.mailbox),
            message_head(req.flags, req.date, req.message.len(), plus)
        );
        self.out.extend_from_slice(head.as_bytes());
        if !plus {
            self.wait_continuation()?;
        }
        self.push_literal(req.message)?;
        self.end_command()?;
        Ok(tag)
    }

    /// Starts one MULTIAPPEND (RFC 3502) of several messages to one mailbox: the server
    /// stores all of them or none, in one transaction. Needs MULTIAPPEND and LITERAL+.
    pub fn multiappend_send(
        &mut self,
        mailbox: &str,
        reqs: &[AppendRequest<'_>],
    ) -> Result<String> {
        if !self.has("MULTIAPPEND") || !self.has("LITERAL+") {
            return Err(Error::Unsupported("MULTIAPPEND with LITERAL+"));
        }
        self.trace(&format!(
            "APPEND {} ({} {})",
            quote(mailbox),
            reqs.len(),
            if reqs.len() == 1 {
                "message"
            } else {
                "messages"
            }
        ));
        let tag = self.tag();
        self.out
            .extend_from_slice(format!("{tag} APPEND {}", quote(mailbox)).as_bytes());
        for req in reqs {
            self.out.extend_from_slice(
                message_head(req.flags, req.date, req.message.len(), true).as_bytes(),
            );
            self.push_literal(req.message)?;
        }
        self.end_command()?;
        Ok(tag)
    }

    /// A literal's bytes: buffered when small, written straight through when large so a big
    /// message is not copied into the output buffer.
    fn push_literal(&mut self, bytes: &[u8]) -> Result<()> {
        if self.out.len() + bytes.len() > FLUSH_AT {
            self.flush()?;
            self.stream
                .write_all(bytes)
                .map_err(|e| Error::Io(timed_out(e, self.timeout)))?;
        } else {
            self.out.extend_from_slice(bytes);
        }
        Ok(())
    }

    fn end_command(&mut self) -> Result<()> {
        self.out.extend_from_slice(b"\r\n");
        if self.out.len() > FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    /// Waits for a MULTIAPPEND; returns the UIDs in message order when the server has UIDPLUS
    /// and its APPENDUID names exactly `count` of them.
    pub fn multiappend_finish(&mut self, tag: &str, count: usize) -> Result<Option<Vec<u32>>> {
        let code = self.finish(tag, "APPEND")?;
        Ok(code
            .as_ref()
            .and_then(AppendUid::parse)
            .and_then(|a| (a.uids.len() == count).then_some(a.uids)))
    }

    /// Waits for an APPEND started by [`Client::append_send`]; returns `(UIDVALIDITY, UID)`
    /// from APPENDUID when the server has UIDPLUS.
    pub fn append_finish(&mut self, tag: &str) -> Result<Option<(u32, u32)>> {
        let code = self.finish(tag, "APPEND")?;
        Ok(code
            .as_ref()
            .and_then(AppendUid::parse)
            .and_then(|a| match a.uids.as_slice() {
                &[uid] => Some((a.uid_validity.get(), uid)),
                _ => None,
            }))
    }
}
