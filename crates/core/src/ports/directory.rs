//! The directory port: where mailbox identities come from (LDAP, Active Directory, Entra ID
//! through Microsoft Graph), and the provisioner that creates target mailboxes.
//!
//! mailferry never identifies a mailbox by its email address, because addresses are exactly
//! what changes during a migration. Each mailbox is keyed by the directory's stable ID
//! ([`MailboxId`]); its login and addresses are read from the directory.

use crate::model::{DirectoryMailbox, MailboxId, NewMailbox};

/// A listing of a directory's mailboxes, with the entries it could not use and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub mailboxes: Vec<DirectoryMailbox>,
    /// One line per entry that is not usable as a mailbox (no address, no login, …).
    pub skipped: Vec<String>,
}

/// What `check` learns from a quick look at a directory ([`Directory::probe`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectoryProbe {
    /// Entries read that match the base and filter (at most a small sample).
    pub sampled: usize,
    /// How many of those are usable as mailboxes.
    pub mailboxes: usize,
    /// Why the others are not (one line each, as in [`Listing::skipped`]).
    pub skipped: Vec<String>,
    /// Whether more entries match than were read.
    pub more: bool,
}

pub trait Directory: Send {
    /// The directory's URL (or name), for messages.
    fn url(&self) -> &str;
    /// Who it is bound as, for `check`.
    fn bound_as(&self) -> &str;
    /// Every mailbox under the configured base and filter (paged).
    fn list(&mut self) -> Result<Listing, DirectoryError>;
    /// The mailbox with this stable ID, if the directory still has it.
    fn lookup(&mut self, id: &MailboxId) -> Result<Option<DirectoryMailbox>, DirectoryError>;
    /// Mailboxes that have this address (primary or alias).
    fn find_by_address(&mut self, address: &str) -> Result<Vec<DirectoryMailbox>, DirectoryError>;
    /// A quick look for `check`: the base exists, the filter matches entries, and they read as
    /// mailboxes with the configured attributes. The default lists everything; adapters
    /// read a small sample instead.
    fn probe(&mut self) -> Result<DirectoryProbe, DirectoryError> {
        let listing = self.list()?;
        Ok(DirectoryProbe {
            sampled: listing.mailboxes.len() + listing.skipped.len(),
            mailboxes: listing.mailboxes.len(),
            skipped: listing.skipped,
            more: false,
        })
    }
}

pub trait Provisioner: Send {
    /// Creates a mailbox and returns it as the directory now describes it. A refusal carries
    /// the directory's words (an existing name, a password policy).
    fn create(&mut self, m: &NewMailbox) -> Result<DirectoryMailbox, DirectoryError>;
    /// What the last [`Provisioner::create`] has to tell besides the mailbox (e.g. how long
    /// the new mailbox took to answer, or that it did not within the time allowed), taken.
    fn take_note(&mut self) -> Option<String> {
        None
    }
}

/// What went wrong talking to a directory. `Display` always names the directory URL and,
/// where the server refused something, gives its result code name, number and text.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The directory could not be reached: TCP connect, StartTLS or the TLS handshake failed
    /// (including certificate verification), or it timed out.
    #[error("Cannot connect to directory {url}: {reason}")]
    Unreachable {
        /// Directory URL.
        url: String,
        /// What failed, in the words of the system, TLS library or server.
        reason: String,
    },
    /// The server answered an operation with an error result.
    #[error("Directory {url}: {operation} failed: {}{}", ldap_words(*.code, .text),
        .hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default())]
    Ldap {
        /// Directory URL.
        url: String,
        /// What was attempted, e.g. `bind as cn=reader,dc=example,dc=com`.
        operation: String,
        /// LDAP result code (RFC 4511 appendix A), e.g. 49.
        code: u32,
        /// The server's diagnostic text (may be empty).
        text: String,
        /// mailferry's advice for a common cause, if any.
        hint: Option<String>,
    },
    /// The connection broke, or the server stopped answering, during an operation.
    #[error("Directory {url}: {operation} failed: {reason}")]
    Connection {
        /// Directory URL.
        url: String,
        /// What was attempted.
        operation: String,
        /// What happened.
        reason: String,
    },
    /// The settings cannot work (URL, security, `tls_ca`, filter, new mailbox).
    #[error("Directory {url}: {reason}")]
    Config {
        /// Directory URL.
        url: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A web directory (Microsoft Graph) or its identity provider refused a request or
    /// answered with an error: its own words (`Authorization_RequestDenied: Insufficient
    /// privileges to complete the operation.`, `AADSTS90002: Tenant … not found`), secrets
    /// cut out, then mailferry's advice for a common cause in parentheses.
    #[error("Directory {url}: {operation} failed: {words}")]
    Refused {
        /// Directory URL.
        url: String,
        /// What was attempted, e.g. `list users`.
        operation: String,
        /// The HTTP status, when there was one.
        status: Option<u16>,
        /// The service's error code (`Authorization_RequestDenied`, `AADSTS700016`).
        code: Option<String>,
        /// The service's words, as given (and mailferry's advice, if any).
        words: String,
        /// Whether trying again later may work (throttled, unavailable).
        transient: bool,
    },
    /// A mailbox ID that cannot be searched for, such as a non-GUID for `objectGUID`.
    #[error("Directory {url}: {id:?} is not a valid {attribute} value")]
    InvalidId {
        /// Directory URL.
        url: String,
        /// The ID given.
        id: String,
        /// The ID attribute.
        attribute: String,
    },
    /// An entry exists but cannot be used as a mailbox, or more than one entry has one ID.
    #[error("Directory {url}: {dn}: {reason}")]
    Entry {
        /// Directory URL.
        url: String,
        /// The entry (or entries, comma-separated in brackets) concerned.
        dn: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl DirectoryError {
    /// True when the directory could not be reached (connect, StartTLS or TLS failure,
    /// timeout) or the connection broke during an operation — as opposed to the server
    /// refusing something, or a configuration error.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            DirectoryError::Unreachable { .. } | DirectoryError::Connection { .. }
        )
    }

    /// Whether trying again later, on a new connection, may succeed: the cases of
    /// [`DirectoryError::is_unreachable`], and the server saying `busy (51)` or
    /// `unavailable (52)`.
    pub fn is_transient(&self) -> bool {
        self.is_unreachable()
            || matches!(self.result_code(), Some(51 | 52))
            || matches!(
                self,
                DirectoryError::Refused {
                    transient: true,
                    ..
                }
            )
    }

    /// The web service's error code when it refused something (`Request_BadRequest`,
    /// `Authorization_RequestDenied`, an `AADSTS…` code).
    pub fn service_code(&self) -> Option<&str> {
        match self {
            DirectoryError::Refused { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// The LDAP result code when the server refused an operation (e.g. 49 for bad
    /// credentials, 68 when the entry to add already exists).
    pub fn result_code(&self) -> Option<u32> {
        match self {
            DirectoryError::Ldap { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// `name (code)` plus `: text` when the server gave one: LDAP's own words for a result.
pub fn ldap_words(code: u32, text: &str) -> String {
    let name = result_code_name(code);
    if text.trim().is_empty() {
        format!("{name} ({code})")
    } else {
        format!("{name} ({code}): {}", text.trim())
    }
}

/// RFC 4511 appendix A (plus the codes of common extensions) result code names.
pub fn result_code_name(code: u32) -> &'static str {
    match code {
        0 => "success",
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        5 => "compareFalse",
        6 => "compareTrue",
        7 => "authMethodNotSupported",
        8 => "strongerAuthRequired",
        10 => "referral",
        11 => "adminLimitExceeded",
        12 => "unavailableCriticalExtension",
        13 => "confidentialityRequired",
        14 => "saslBindInProgress",
        16 => "noSuchAttribute",
        17 => "undefinedAttributeType",
        18 => "inappropriateMatching",
        19 => "constraintViolation",
        20 => "attributeOrValueExists",
        21 => "invalidAttributeSyntax",
        32 => "noSuchObject",
        33 => "aliasProblem",
        34 => "invalidDNSyntax",
        36 => "aliasDereferencingProblem",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        54 => "loopDetect",
        64 => "namingViolation",
        65 => "objectClassViolation",
        66 => "notAllowedOnNonLeaf",
        67 => "notAllowedOnRDN",
        68 => "entryAlreadyExists",
        69 => "objectClassModsProhibited",
        71 => "affectsMultipleDSAs",
        80 => "other",
        118 => "canceled",
        119 => "noSuchOperation",
        120 => "tooLate",
        121 => "cannotCancel",
        122 => "assertionFailed",
        123 => "authorizationDenied",
        _ => "unknown result code",
    }
}
