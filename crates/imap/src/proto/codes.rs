//! Response codes as types. The parser ([`crate::response`]) keeps a code as its name and raw
//! arguments; here the codes a migration acts on get their meaning, checked: an APPENDUID
//! with a zero UIDVALIDITY or a COPYUID whose two sets differ in length is refused rather
//! than mapped to the wrong messages.

use std::num::NonZeroU32;

use crate::proto::command::expand_uid_set;
use crate::response::{Code, Value};

/// `[APPENDUID uidvalidity uid-set]` (RFC 4315 §3): the UIDs the server gave the appended
/// messages, in message order. One UID for a plain APPEND, a set for a MULTIAPPEND (RFC 3502).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendUid {
    pub uid_validity: NonZeroU32,
    pub uids: Vec<u32>,
}

/// `[COPYUID uidvalidity source-set dest-set]` (RFC 4315 §3, sent by COPY and by MOVE, RFC
/// 6851 §4.3): `from[i]` became `to[i]` in the destination, whose UIDVALIDITY this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyUid {
    pub uid_validity: NonZeroU32,
    pub from: Vec<u32>,
    pub to: Vec<u32>,
}

impl CopyUid {
    /// `(old UID, new UID)` pairs.
    pub fn pairs(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.from.iter().copied().zip(self.to.iter().copied())
    }
}

/// The response codes mailferry acts on. The RFC 5530 names decide whether a failure is worth
/// retrying; the others are carried as their name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypedCode {
    AppendUid(AppendUid),
    CopyUid(CopyUid),
    /// CREATE of a mailbox that exists (RFC 5530 §3).
    AlreadyExists,
    /// APPEND or COPY to a mailbox that does not exist yet (RFC 3501 §7.1).
    TryCreate,
    /// The user's quota is used up (RFC 5530 §3).
    OverQuota,
    /// A server limit was hit, such as too many connections (RFC 5530 §3).
    Limit,
    /// Temporary failure, such as a backend being down (RFC 5530 §3).
    Unavailable,
    /// Rate limiting. Not in RFC 5530, but servers send it for a temporary condition.
    Throttled,
    /// Wrong credentials (RFC 5530 §3).
    AuthenticationFailed,
    /// Any other code, by its upper-case name.
    Other(String),
}

impl TypedCode {
    /// The typed meaning of `code`, or `None` when it is APPENDUID or COPYUID with arguments
    /// that cannot be trusted (missing, not numbers, UIDVALIDITY 0, sets of unequal length).
    pub fn parse(code: &Code) -> Option<TypedCode> {
        Some(match code.name.as_str() {
            "APPENDUID" => TypedCode::AppendUid(AppendUid::parse(code)?),
            "COPYUID" => TypedCode::CopyUid(CopyUid::parse(code)?),
            "ALREADYEXISTS" => TypedCode::AlreadyExists,
            "TRYCREATE" => TypedCode::TryCreate,
            "OVERQUOTA" => TypedCode::OverQuota,
            "LIMIT" => TypedCode::Limit,
            "UNAVAILABLE" => TypedCode::Unavailable,
            "THROTTLED" => TypedCode::Throttled,
            "AUTHENTICATIONFAILED" => TypedCode::AuthenticationFailed,
            other => TypedCode::Other(other.to_string()),
        })
    }
}

impl AppendUid {
    /// From `[APPENDUID …]`; `None` for any other code or for arguments out of RFC 4315's
    /// grammar (`nz-number`, `uid-set`).
    pub fn parse(code: &Code) -> Option<AppendUid> {
        if code.name != "APPENDUID" {
            return None;
        }
        let [validity, set] = code.args.as_slice() else {
            return None;
        };
        Some(AppendUid {
            uid_validity: nz_number(validity)?,
            uids: uids(set)?,
        })
    }
}

impl CopyUid {
    /// From `[COPYUID …]`; `None` for any other code, for arguments out of RFC 4315's
    /// grammar, or when the two sets do not pair up one to one.
    pub fn parse(code: &Code) -> Option<CopyUid> {
        if code.name != "COPYUID" {
            return None;
        }
        let [validity, from, to] = code.args.as_slice() else {
            return None;
        };
        let (from, to) = (uids(from)?, uids(to)?);
        (from.len() == to.len()).then_some(CopyUid {
            uid_validity: nz_number(validity)?,
            from,
            to,
        })
    }
}

fn nz_number(v: &Value) -> Option<NonZeroU32> {
    NonZeroU32::new(v.as_u64()?.try_into().ok()?)
}

/// A uid-set; UID 0 does not exist (RFC 3501 §2.3.1.1), so a set holding it is refused.
fn uids(v: &Value) -> Option<Vec<u32>> {
    let Value::Atom(set) = v else { return None };
    let uids = expand_uid_set(set)?;
    (!uids.contains(&0)).then_some(uids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::{self, Response, Untagged};

    /// The code of one whole response line, parsed as the driver does.
    fn code_of(line: &[u8]) -> Code {
        match response::parse(line).unwrap() {
            Response::Tagged { code, .. } | Response::Untagged(Untagged::Status { code, .. }) => {
                code.unwrap()
            }
            other => panic!("no code in {other:?}"),
        }
    }

    fn typed(line: &[u8]) -> Option<TypedCode> {
        TypedCode::parse(&code_of(line))
    }

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn appenduid_single_and_multiappend_sets() {
        let cases: &[(&[u8], u32, &[u32])] = &[
            (b"A1 OK [APPENDUID 1700000000 5:7] Append completed.\r\n", 1_700_000_000, &[5, 6, 7]),
            // Dovecot 2.3, one message.
            (
                b"m4 OK [APPENDUID 1712345678 42] Append completed (0.004 + 0.000 + 0.003 secs).\r\n",
                1_712_345_678,
                &[42],
            ),
            // Cyrus 3, a MULTIAPPEND of three.
            (b"m9 OK [APPENDUID 1591234567 3:4,8] Completed\r\n", 1_591_234_567, &[3, 4, 8]),
        ];
        for &(line, validity, uids) in cases {
            assert_eq!(
                typed(line),
                Some(TypedCode::AppendUid(AppendUid {
                    uid_validity: nz(validity),
                    uids: uids.to_vec()
                })),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    /// A response line, the UIDVALIDITY in it and the (old, new) pairs it reports.
    type CopyCase = (&'static [u8], u32, &'static [(u32, u32)]);

    #[test]
    fn copyuid_pairs_old_and_new_uids() {
        let cases: &[CopyCase] = &[
            // Dovecot sends MOVE's COPYUID untagged, before the tagged OK (RFC 6851 §4.3).
            (
                b"* OK [COPYUID 1712345678 3:4 7:8] Moved UIDs.\r\n",
                1_712_345_678,
                &[(3, 7), (4, 8)],
            ),
            // Dovecot's COPY.
            (
                b"m7 OK [COPYUID 1712345678 10,12 20:21] Copy completed (0.001 + 0.000 secs).\r\n",
                1_712_345_678,
                &[(10, 20), (12, 21)],
            ),
            // Cyrus 3.
            (
                b"* OK [COPYUID 1591234567 1:3 4:6] Completed\r\n",
                1_591_234_567,
                &[(1, 4), (2, 5), (3, 6)],
            ),
        ];
        for &(line, validity, pairs) in cases {
            let Some(TypedCode::CopyUid(c)) = typed(line) else {
                panic!("{}", String::from_utf8_lossy(line));
            };
            assert_eq!(c.uid_validity, nz(validity));
            assert_eq!(c.pairs().collect::<Vec<_>>(), pairs);
        }
    }

    #[test]
    fn untrustworthy_uid_codes_are_refused() {
        let refused: &[&[u8]] = &[
            b"A1 OK [APPENDUID 0 5] Append completed.\r\n",
            b"A1 OK [APPENDUID 1700000000] Append completed.\r\n",
            b"A1 OK [APPENDUID 1700000000 x] Append completed.\r\n",
            b"A1 OK [APPENDUID 1700000000 0:2] Append completed.\r\n",
            b"A1 OK [APPENDUID 4294967296 5] Append completed.\r\n",
            b"A1 OK [COPYUID 0 1:2 3:4] Done\r\n",
            b"A1 OK [COPYUID 17 1:3 3:4] Done\r\n",
            b"A1 OK [COPYUID 17 1:2] Done\r\n",
        ];
        for line in refused {
            assert_eq!(typed(line), None, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn rfc_5530_codes_in_servers_words() {
        let cases: &[(&[u8], TypedCode)] = &[
            // Dovecot 2.3: CREATE of an existing folder, APPEND to a missing one, APPEND over quota.
            (b"m3 NO [ALREADYEXISTS] Mailbox already exists\r\n", TypedCode::AlreadyExists),
            (b"m3 NO [TRYCREATE] Mailbox doesn't exist: Archive\r\n", TypedCode::TryCreate),
            (
                b"m5 NO [OVERQUOTA] Quota exceeded (mailbox for user is full)\r\n",
                TypedCode::OverQuota,
            ),
            // Cyrus 3.
            (b"m5 NO [OVERQUOTA] Over quota\r\n", TypedCode::OverQuota),
            // Dovecot 2.3 when its authentication backend is down.
            (
                b"m1 NO [UNAVAILABLE] Temporary authentication failure. [mx1:2026-12-01 10:00:00]\r\n",
                TypedCode::Unavailable,
            ),
            // Dovecot 2.3, wrong password.
            (
                b"m1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
                TypedCode::AuthenticationFailed,
            ),
            // Codes are case-insensitive; these two in no particular server's words.
            (b"* BYE [limit] Too many connections\r\n", TypedCode::Limit),
            (b"m2 NO [THROTTLED] Too many commands\r\n", TypedCode::Throttled),
            (b"m1 OK [READ-ONLY] Examine completed\r\n", TypedCode::Other("READ-ONLY".into())),
            (b"m1 NO [nonexistent] Unknown\r\n", TypedCode::Other("NONEXISTENT".into())),
        ];
        for (line, expected) in cases {
            assert_eq!(
                typed(line).as_ref(),
                Some(expected),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn the_specific_parsers_refuse_other_codes() {
        let code = code_of(b"A1 OK [COPYUID 17 1 2] Done\r\n");
        assert_eq!(AppendUid::parse(&code), None);
        let code = code_of(b"A1 OK [APPENDUID 17 1] Done\r\n");
        assert_eq!(CopyUid::parse(&code), None);
    }
}
