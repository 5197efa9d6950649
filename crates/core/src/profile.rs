//! Server profiles: a named set of limits and quirks of one kind of IMAP server, each with
//! its source, each overridable in the job file (`profile = "auto" | "exchange-online" |
//! "gmail" | "dovecot" | "cyrus" | "generic"` on an IMAP connection).
//!
//! `auto` (the default) recognises the server from its greeting and its capabilities, once a
//! connection has been made; the other names are taken as given. Sources (see also README
//! "Migrating to Microsoft 365" and "Migrating from or to Google Workspace"):
//!
//! - Exchange Online's greeting (`The Microsoft Exchange IMAP4 service is ready`) and
//!   capability list (`IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT
//!   CHILDREN IDLE NAMESPACE LITERAL+`): a captured transcript in Cocoanetics/SwiftMail PR #109.
//! - Exchange Online advertises `ENABLE IMAP4rev2` on some tenants with a broken rev2 SEARCH:
//!   jstedfast/MailKit#2016. No CONDSTORE: MailKit#1437. No custom keywords (PERMANENTFLAGS
//!   without `\*`, "Command Argument Error. 11"): mscdex/node-imap#602, ikvk/imap_tools#181.
//! - Throttling (`Suggested Backoff Time: N milliseconds`), `\Flagged` lost on APPEND, the
//!   reserved folder name `Files`, read receipts, the cut-off after about 10 failed commands:
//!   imapsync's FAQ.d/FAQ.Office365.txt and FAQ.d/FAQ.Exchange.txt.
//! - Gmail's greeting (`Gimap ready`), `X-GM-EXT-1` and its virtual folders: Google's "IMAP
//!   extensions" page (developers.google.com/gmail/imap/imap-extensions). Its connection cap:
//!   Gmail Help "Too many simultaneous connections" (mail.google.com/support answer 97150,
//!   2008: 10 per account); later third-party pages (about.com/Lifewire, Canary Mail) say 15.

use std::fmt;
use std::time::Duration;

/// A kind of IMAP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    ExchangeOnline,
    Gmail,
    Dovecot,
    Cyrus,
    Generic,
}

/// `profile = …` as the job file gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProfileChoice {
    /// Recognised from the greeting and capabilities of the first connection.
    #[default]
    Auto,
    Named(Profile),
}

/// What the job file says about a connection's profile: its name and the limits it
/// overrides. `None` takes the profile's value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProfileSettings {
    pub choice: ProfileChoice,
    /// `max_message_size`: bytes; a larger message is refused locally, not sent.
    pub max_message_size: Option<u64>,
    /// `disarm_read_receipts`: rename `Disposition-Notification-To` before storing.
    pub disarm_read_receipts: Option<bool>,
    /// `include_virtual_folders`: copy Gmail's `[Gmail]/All Mail`, `Important`, `Starred`.
    pub include_virtual_folders: Option<bool>,
    /// `max_connections` as the file gives it (the connection's own value is the effective one).
    pub max_connections: Option<usize>,
}

/// Exchange Online's default per-message size limit (35 MB sending, 36 MB receiving, the
/// mailbox defaults; imapsync reports APPEND working up to about 45 MB).
pub const EXCHANGE_MAX_MESSAGE_SIZE: u64 = 35 * 1024 * 1024;
/// Gmail refuses more simultaneous IMAP connections per account than 10 (Google, 2008) or 15
/// (later third-party pages): stay at the lower figure.
pub const GMAIL_MAX_CONNECTIONS: usize = 10;
/// Exchange Online throttles above a few connections per mailbox (Quest: after 2; imapsync
/// advises few); the connections of a run are shared by its mailboxes.
pub const EXCHANGE_MAX_CONNECTIONS: usize = 4;
/// Exchange Online drops a session after about 10 failed commands: a session that has had
/// this many refusals is closed and opened again.
pub const EXCHANGE_FAILED_COMMANDS: u32 = 8;
/// The longest `Suggested Backoff Time` honoured in one go; a longer hint is capped (and the
/// command retried once after it), so a pass is not parked for hours by one reply.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The limits and quirks in force for one connection: a profile with the job file's
/// overrides applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quirks {
    pub profile: Profile,
    /// Messages larger than this are refused locally with the reason, before sending.
    pub max_message_size: Option<u64>,
    /// Custom keywords can be stored; when not, they are stripped before APPEND and counted.
    pub keywords: bool,
    /// `\Flagged` given in APPEND is lost, so it is set again after the append.
    pub reapply_flagged: bool,
    /// CONDSTORE may be used when advertised.
    pub condstore: bool,
    /// `ENABLE IMAP4rev2` must never be sent (mailferry sends no ENABLE at all today; the
    /// capability is also forgotten, so no later code can pick it up).
    pub forbid_imap4rev2: bool,
    pub disarm_read_receipts: bool,
    /// Gmail's virtual folders (`\All`, `\Important`, `\Flagged`) are listed.
    pub include_virtual_folders: bool,
    /// Default cap on simultaneous connections, when the job file sets none.
    pub max_connections: Option<usize>,
    /// Close and reopen a session after this many refused commands.
    pub max_failed_commands: Option<u32>,
    /// Folder names the server reserves, and the documented name mailferry uses instead.
    pub reserved_folders: &'static [(&'static str, &'static str)],
}

/// Exchange Online refuses to create a folder called `Files` ("NO Folder name is reserved",
/// imapsync FAQ.Office365): it is stored as `Files (migrated)`.
pub const EXCHANGE_RESERVED_FOLDERS: &[(&str, &str)] = &[("Files", "Files (migrated)")];

impl Profile {
    pub const ALL: [Profile; 5] = [
        Profile::ExchangeOnline,
        Profile::Gmail,
        Profile::Dovecot,
        Profile::Cyrus,
        Profile::Generic,
    ];

    /// The name used in the job file.
    pub fn name(self) -> &'static str {
        match self {
            Profile::ExchangeOnline => "exchange-online",
            Profile::Gmail => "gmail",
            Profile::Dovecot => "dovecot",
            Profile::Cyrus => "cyrus",
            Profile::Generic => "generic",
        }
    }

    pub fn from_name(name: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Recognises a server from its greeting's text and its capabilities (any case).
    pub fn detect<'a>(greeting: &str, capabilities: impl IntoIterator<Item = &'a str>) -> Profile {
        let caps: Vec<String> = capabilities
            .into_iter()
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let has = |c: &str| caps.iter().any(|x| x == c);
        let g = greeting.to_ascii_lowercase();
        if g.contains("microsoft exchange") || has("CLIENTACCESSRULES") {
            Profile::ExchangeOnline
        } else if g.contains("gimap") || has("X-GM-EXT-1") {
            Profile::Gmail
        } else if g.contains("dovecot") {
            Profile::Dovecot
        } else if g.contains("cyrus") {
            Profile::Cyrus
        } else {
            Profile::Generic
        }
    }

    /// The profile's own limits and quirks, before the job file's overrides.
    pub fn quirks(self) -> Quirks {
        let base = Quirks {
            profile: self,
            max_message_size: None,
            keywords: true,
            reapply_flagged: false,
            condstore: true,
            forbid_imap4rev2: false,
            disarm_read_receipts: false,
            include_virtual_folders: true,
            max_connections: None,
            max_failed_commands: None,
            reserved_folders: &[],
        };
        match self {
            Profile::ExchangeOnline => Quirks {
                max_message_size: Some(EXCHANGE_MAX_MESSAGE_SIZE),
                keywords: false,
                reapply_flagged: true,
                condstore: false,
                forbid_imap4rev2: true,
                max_connections: Some(EXCHANGE_MAX_CONNECTIONS),
                max_failed_commands: Some(EXCHANGE_FAILED_COMMANDS),
                reserved_folders: EXCHANGE_RESERVED_FOLDERS,
                ..base
            },
            Profile::Gmail => Quirks {
                include_virtual_folders: false,
                max_connections: Some(GMAIL_MAX_CONNECTIONS),
                ..base
            },
            Profile::Dovecot | Profile::Cyrus | Profile::Generic => base,
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl ProfileSettings {
    /// The quirks for a server recognised as `detected` (used when the choice is `auto`).
    pub fn resolve(&self, detected: Profile) -> Quirks {
        let profile = match self.choice {
            ProfileChoice::Auto => detected,
            ProfileChoice::Named(p) => p,
        };
        let mut q = profile.quirks();
        if let Some(size) = self.max_message_size {
            q.max_message_size = Some(size);
        }
        if let Some(d) = self.disarm_read_receipts {
            q.disarm_read_receipts = d;
        }
        if let Some(v) = self.include_virtual_folders {
            q.include_virtual_folders = v;
        }
        if let Some(n) = self.max_connections {
            q.max_connections = Some(n);
        }
        q
    }

    /// The named profile, when the file names one.
    pub fn named(&self) -> Option<Profile> {
        match self.choice {
            ProfileChoice::Auto => None,
            ProfileChoice::Named(p) => Some(p),
        }
    }
}

/// `Suggested Backoff Time: N milliseconds` in a server's words (Exchange Online's throttling
/// reply), capped at [`MAX_BACKOFF`].
pub fn suggested_backoff(text: &str) -> Option<Duration> {
    const MARK: &str = "suggested backoff time:";
    let lower = text.to_ascii_lowercase();
    let at = lower.find(MARK)? + MARK.len();
    let rest = lower[at..].trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let n: u64 = digits.parse().ok()?;
    let unit = rest[digits.len()..].trim_start();
    let d = if unit.starts_with("ms") || unit.starts_with("milli") {
        Duration::from_millis(n)
    } else if unit.starts_with('s') {
        Duration::from_secs(n)
    } else {
        Duration::from_millis(n)
    };
    Some(d.min(MAX_BACKOFF))
}

/// Whether a flag is a system flag (RFC 3501 §2.3.2) or one Exchange Online keeps
/// (`$MDNSent` is in its PERMANENTFLAGS): anything else is a custom keyword.
pub fn is_kept_without_keywords(flag: &str) -> bool {
    flag.starts_with('\\') || flag.eq_ignore_ascii_case("$MDNSent")
}

/// Renames `Disposition-Notification-To` in a message's header (not its body), as imapsync's
/// `--disarmreadreceipts` does, so that opening the migrated message sends no read receipt.
/// `None` when the header has none.
pub fn disarm_read_receipts(message: &[u8]) -> Option<Vec<u8>> {
    const NAME: &[u8] = b"disposition-notification-to:";
    let header_end = find(message, b"\r\n\r\n")
        .or_else(|| find(message, b"\n\n"))
        .unwrap_or(message.len());
    let mut starts = vec![0];
    starts.extend(
        message[..header_end]
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i + 1),
    );
    let hits: Vec<usize> = starts
        .into_iter()
        .filter(|&s| {
            message.len() >= s + NAME.len() && message[s..s + NAME.len()].eq_ignore_ascii_case(NAME)
        })
        .collect();
    if hits.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(message.len() + 2 * hits.len());
    let mut last = 0;
    for s in hits {
        out.extend_from_slice(&message[last..s]);
        out.extend_from_slice(b"X-");
        last = s;
    }
    out.extend_from_slice(&message[last..]);
    Some(out)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exchange Online's greeting and pre-auth capabilities, as captured in SwiftMail PR #109.
    const EXO_GREETING: &str = "The Microsoft Exchange IMAP4 service is ready. [TQBOADIAUABSADEAMwBDAEEAMAAwADEANAAuAG4AYQBtAHAAcgBkADEAMwAuAHAAcgBvAGQALgBvAHUAdABsAG8AbwBrAC4AYwBvAG0A]";
    const EXO_CAPS: &str = "IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+";
    /// Gmail's greeting and capabilities (Google's IMAP extensions page; public transcripts).
    const GMAIL_GREETING: &str = "Gimap ready for requests from 192.0.2.1 a1mb12345678abc";
    const GMAIL_CAPS: &str = "IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 XYZZY SASL-IR AUTH=XOAUTH2 AUTH=PLAIN AUTH=PLAIN-CLIENTTOKEN AUTH=OAUTHBEARER AUTH=XOAUTH";

    #[test]
    fn known_greetings_and_capabilities_are_recognised() {
        assert_eq!(
            Profile::detect(EXO_GREETING, EXO_CAPS.split(' ')),
            Profile::ExchangeOnline
        );
        // Post-auth Exchange Online capability additions alone, without the greeting.
        assert_eq!(
            Profile::detect("ready", "IMAP4rev1 CLIENTACCESSRULES".split(' ')),
            Profile::ExchangeOnline
        );
        assert_eq!(
            Profile::detect(GMAIL_GREETING, GMAIL_CAPS.split(' ')),
            Profile::Gmail
        );
        assert_eq!(
            Profile::detect("IMAP server ready", ["IMAP4rev1", "x-gm-ext-1"]),
            Profile::Gmail
        );
        assert_eq!(
            Profile::detect("Dovecot (Debian) ready.", ["IMAP4rev1"]),
            Profile::Dovecot
        );
        assert_eq!(
            Profile::detect(
                "imap.example Cyrus IMAP 3.6.1-Debian server ready",
                ["IMAP4rev1"]
            ),
            Profile::Cyrus
        );
        assert_eq!(
            Profile::detect("Courier-IMAP ready.", ["IMAP4rev1"]),
            Profile::Generic
        );
    }

    #[test]
    fn the_backoff_hint_is_read_from_exchange_onlines_throttling_reply() {
        // imapsync FAQ.Office365's capture.
        assert_eq!(
            suggested_backoff("Request is throttled. Suggested Backoff Time: 299961 milliseconds"),
            Some(Duration::from_millis(299961))
        );
        assert_eq!(
            suggested_backoff("Request is throttled. Suggested Backoff Time: 900000 milliseconds"),
            Some(MAX_BACKOFF)
        );
        assert_eq!(
            suggested_backoff("NO Request is throttled. Suggested Backoff Time: 1500 milliseconds"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(suggested_backoff("Command Argument Error. 11"), None);
    }

    #[test]
    fn overrides_win_over_the_profile() {
        let s = ProfileSettings {
            choice: ProfileChoice::Auto,
            max_message_size: Some(150 * 1024 * 1024),
            disarm_read_receipts: Some(true),
            include_virtual_folders: Some(true),
            max_connections: Some(2),
        };
        let q = s.resolve(Profile::ExchangeOnline);
        assert_eq!(q.max_message_size, Some(150 * 1024 * 1024));
        assert!(q.disarm_read_receipts && q.reapply_flagged && !q.keywords && !q.condstore);
        assert_eq!(q.max_connections, Some(2));
        let g = ProfileSettings::default().resolve(Profile::Gmail);
        assert!(!g.include_virtual_folders);
        assert_eq!(g.max_connections, Some(GMAIL_MAX_CONNECTIONS));
        let named = ProfileSettings {
            choice: ProfileChoice::Named(Profile::Dovecot),
            ..ProfileSettings::default()
        };
        assert_eq!(
            named.resolve(Profile::ExchangeOnline).profile,
            Profile::Dovecot
        );
    }

    #[test]
    fn read_receipts_are_disarmed_in_the_header_only() {
        let m = b"From: a@b\r\nDisposition-Notification-To: a@b\r\n\r\nDisposition-Notification-To: body\r\n";
        let out = disarm_read_receipts(m).unwrap();
        assert_eq!(
            out,
            b"From: a@b\r\nX-Disposition-Notification-To: a@b\r\n\r\nDisposition-Notification-To: body\r\n"
        );
        assert_eq!(disarm_read_receipts(b"From: a@b\r\n\r\nhi"), None);
    }
}
