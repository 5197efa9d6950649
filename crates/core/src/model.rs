//! The domain's vocabulary: sides, origins, states, results, identities, addresses, flags,
//! and IMAP's UIDs and UIDVALIDITY values.
//!
//! Every value the store keeps as text has one type here with one spelling (`as_str`) and one
//! parse (`parse`), so a typo no longer compiles into a silent change of behaviour. The text
//! values are the ones the state database has always held, so existing state files keep
//! working without a migration.

use std::fmt;

use serde::{Serialize, Serializer};

/// Declares a text-valued enum: its variants, their stored/JSON spelling, and `parse`.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The spelling kept in the state database and shown in `--json` output.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The value for a stored spelling; `None` for anything else.
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

text_enum! {
    /// Which end of the migration a server, directory or result belongs to.
    Side { Source = "source", Target = "target" }
}

text_enum! {
    /// How an entry's target was set (SPEC §2 "match origin"), or why it has none.
    Origin {
        Auto = "auto",
        Manual = "manual",
        Csv = "csv",
        Created = "created",
        PendingCreation = "pending-creation",
        Skip = "skip",
        Unmatched = "unmatched",
    }
}

impl Origin {
    /// Whether entries of this origin take part in a pass (they have a target mailbox that
    /// exists and the admin has not set them aside).
    pub fn migrates(self) -> bool {
        !matches!(
            self,
            Origin::Skip | Origin::PendingCreation | Origin::Unmatched
        )
    }
}

text_enum! {
    /// Where an entry stands after its last pass.
    EntryState {
        /// No pass has run yet.
        New = "new",
        /// The last pass copied everything in scope.
        Migrated = "migrated",
        /// The last pass finished, but some messages were refused.
        Partial = "partial",
        /// The last pass could not finish (login refused, server gone, …).
        Failed = "failed",
    }
}

text_enum! {
    /// A ledger row's state: an intent committed before its APPEND, or a recorded copy.
    LedgerState { Pending = "pending", Copied = "copied" }
}

text_enum! {
    /// What kind of run a `runs` row records.
    RunKind { Migrate = "migrate" }
}

text_enum! {
    /// The five results of Refresh email addresses (SPEC §6), in the order the summary lists
    /// them.
    RefreshResult {
        Refreshed = "refreshed",
        NotChanged = "not_changed",
        Missing = "missing",
        Manual = "manual",
        NotCreated = "not_created",
    }
}

impl RefreshResult {
    /// The words an admin reads (SPEC §6).
    pub fn label(self) -> &'static str {
        match self {
            RefreshResult::Refreshed => "Refreshed",
            RefreshResult::NotChanged => "Not changed",
            RefreshResult::Missing => "Not refreshed - missing mailboxes",
            RefreshResult::Manual => "Not refreshed - addresses entered manually",
            RefreshResult::NotCreated => "Not refreshed - mailboxes not created yet",
        }
    }

    /// Whether this result can occur on a side (source mailboxes are never manual or waiting).
    pub fn applies_to(self, side: Side) -> bool {
        side == Side::Target
            || matches!(
                self,
                RefreshResult::Refreshed | RefreshResult::NotChanged | RefreshResult::Missing
            )
    }
}

/// Declares a text newtype for an identity: never empty in practice, compared exactly.
macro_rules! text_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(String);

        impl $name {
            pub fn new(text: impl Into<String>) -> $name {
                $name(text.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> $name {
                $name(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> $name {
                $name(s.to_owned())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    };
}

text_id! {
    /// An entry's ID: its source mailbox ID (SPEC §4 "An entry's ID is its source mailbox ID").
    EntryId
}

text_id! {
    /// A mailbox's stable identity in a directory (`entryUUID`, `objectGUID` as a GUID
    /// string) or the CSV's `Source ID`. Never an email address.
    MailboxId
}

text_id! {
    /// The ledger's content hash of a message (see `fingerprint`).
    Fingerprint
}

/// Declares a non-zero IMAP number: RFC 3501 §2.3.1.1 makes UIDs and UIDVALIDITY values
/// `nz-number`s, so `new` refuses 0 and a value from a server or the store is checked once,
/// where it enters. Kept and shown as the bare integer (serde transparent), so the state
/// database and `--json` output hold the same numbers as before.
macro_rules! nz_number {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(u32);

        impl $name {
            /// The value for a number a server or the store gave; `None` for 0.
            pub fn new(value: u32) -> Option<$name> {
                (value != 0).then_some($name(value))
            }

            pub fn get(self) -> u32 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

nz_number! {
    /// A message's UID in one folder (RFC 3501 §2.3.1.1), meaningful with the folder's
    /// [`UidValidity`].
    Uid
}

impl Uid {
    /// The lowest UID there is: a scan from here sees every message.
    pub const FIRST: Uid = Uid(1);
}

nz_number! {
    /// A folder's UIDVALIDITY (RFC 3501 §2.3.1.1): while it stays the same, a UID names the
    /// same message.
    UidValidity
}

/// An email address checked by the one rule every input uses (CSV cells, directory values,
/// `match --set`): `local@domain`, the domain lower-cased, the local part kept as written
/// since a server may treat it case-sensitively. Two addresses are the same mailbox when they
/// are equal ignoring case ([`EmailAddress::same_as`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

/// Characters that cannot appear unquoted in the local part of an address (RFC 5322 specials);
/// quoted local parts are not accepted, as no mail system in practice hands them out.
const LOCAL_SPECIALS: &[char] = &['<', '>', '(', ')', '[', ']', '\\', ',', ';', ':', '"', '@'];

impl EmailAddress {
    /// Checks one address (surrounding blanks removed); the error says what is wrong, in
    /// words for an admin.
    pub fn parse(raw: &str) -> Result<EmailAddress, String> {
        let address = raw.trim();
        if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("it contains a space or a control character".to_owned());
        }
        let (local, domain) = match address.split_once('@') {
            None => return Err("it has no @".to_owned()),
            Some((_, domain)) if domain.contains('@') => {
                return Err("it has more than one @".to_owned());
            }
            Some(parts) => parts,
        };
        if local.is_empty() {
            return Err("nothing before the @".to_owned());
        }
        if domain.is_empty() {
            return Err("nothing after the @".to_owned());
        }
        if let Some(c) = local.chars().find(|c| LOCAL_SPECIALS.contains(c)) {
            return Err(format!("`{c}` is not allowed before the @"));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err("dots before the @ must be between other characters".to_owned());
        }
        for label in domain.split('.') {
            if label.is_empty() {
                return Err(
                    "the domain has an empty part (two dots, or a dot at an end)".to_owned(),
                );
            }
            if let Some(c) = label.chars().find(|c| !(c.is_alphanumeric() || *c == '-')) {
                return Err(format!("`{c}` is not allowed in a domain"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err("a part of the domain starts or ends with `-`".to_owned());
            }
        }
        Ok(EmailAddress(format!("{local}@{}", domain.to_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// What comes before the `@`.
    pub fn local_part(&self) -> &str {
        local_part(&self.0)
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, d)| d)
    }

    /// Whether two addresses name the same mailbox: equal ignoring case.
    pub fn same_as(&self, other: &str) -> bool {
        same_address(&self.0, other)
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The one equality rule for stored addresses: equal ignoring case.
pub fn same_address(a: &str, b: &str) -> bool {
    a.to_lowercase() == b.to_lowercase()
}

/// Whether two address lists are the same, in order, by [`same_address`].
pub fn same_addresses(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_address(x, y))
}

/// Appends an address unless the list has it already (by [`same_address`]).
pub fn push_unique_address(list: &mut Vec<String>, address: String) {
    if !list.iter().any(|a| same_address(a, &address)) {
        list.push(address);
    }
}

/// What comes before the last `@` of a stored address (the whole text without one).
pub fn local_part(address: &str) -> &str {
    address.rsplit_once('@').map_or(address, |(l, _)| l)
}

/// A message's flags and keywords as the ledger keeps them: `\Recent` left out (a session
/// property, RFC 3501 §2.3.2, never copied), deduplicated ignoring case, sorted, and stored as
/// one space-separated text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Flags(String);

impl Flags {
    /// Flags as a server or a Maildir reported them.
    pub fn from_server<S: AsRef<str>>(flags: impl IntoIterator<Item = S>) -> Flags {
        let mut list: Vec<String> = flags
            .into_iter()
            .map(|f| f.as_ref().to_owned())
            .filter(|f| !f.is_empty() && !f.eq_ignore_ascii_case("\\Recent"))
            .collect();
        list.sort_by_key(|f| f.to_ascii_lowercase());
        list.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
        Flags(list.join(" "))
    }

    /// Flags as the ledger stored them (already normalised).
    pub fn from_stored(text: &str) -> Flags {
        Flags::from_server(text.split(' '))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.split(' ').filter(|f| !f.is_empty())
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_owned).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the message is flagged `\Deleted` (for `skip_deleted`).
    pub fn is_deleted(&self) -> bool {
        self.iter().any(|f| f.eq_ignore_ascii_case("\\Deleted"))
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An entry as stored: one source mailbox and the target it goes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub id: EntryId,
    pub source_login: String,
    pub source_addresses: Vec<String>,
    pub target_login: Option<String>,
    pub target_addresses: Vec<String>,
    pub origin: Origin,
    pub stage: Option<u32>,
    pub state: EntryState,
    pub copied: u64,
    pub failed: u64,
    pub last_pass: Option<String>,
    pub last_error: Option<String>,
    /// The source mailbox's display name (from the directory), for matching.
    pub source_display_name: Option<String>,
    /// The target mailbox's stable ID in the target directory, once known.
    pub target_id: Option<MailboxId>,
    /// Why automatic matching found nothing (or too much).
    pub match_note: Option<String>,
    /// The source directory no longer has this mailbox; removed at the next job edit or
    /// `migrate`.
    pub missing_source: bool,
}

impl Entry {
    /// A new entry as discovery or a CSV creates it: nothing copied yet.
    pub fn new(id: EntryId, source_login: String, origin: Origin) -> Entry {
        Entry {
            id,
            source_login,
            source_addresses: Vec::new(),
            target_login: None,
            target_addresses: Vec::new(),
            origin,
            stage: None,
            state: EntryState::New,
            copied: 0,
            failed: 0,
            last_pass: None,
            last_error: None,
            source_display_name: None,
            target_id: None,
            match_note: None,
            missing_source: false,
        }
    }

    /// Whether the entry takes part in a pass: it has a target, and is not skipped or waiting.
    pub fn is_migratable(&self) -> bool {
        self.target_login.is_some() && self.origin.migrates()
    }

    /// The login on one side (`None` for a target not matched yet).
    pub fn login(&self, side: Side) -> Option<&str> {
        match side {
            Side::Source => Some(&self.source_login),
            Side::Target => self.target_login.as_deref(),
        }
    }
}

/// One ledger row: where a source message went on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    pub source_folder: String,
    pub uid_validity: UidValidity,
    pub uid: Uid,
    pub target_folder: String,
    pub target_uid: Option<Uid>,
    /// The target folder's UIDNEXT seen before the APPEND was sent (intents only). A bound,
    /// not a UID: a plain number, 0 when the server's STATUS left UIDNEXT out.
    pub target_uidnext: Option<u32>,
    pub fingerprint: Fingerprint,
    pub size: u64,
    pub flags: Flags,
    pub state: LedgerState,
}

impl LedgerRow {
    pub fn is_pending(&self) -> bool {
        self.state == LedgerState::Pending
    }
}

/// One line of a refresh: one side of one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefreshLine {
    pub side: Side,
    pub result: RefreshResult,
    pub entry: EntryId,
    pub id: Option<MailboxId>,
    pub before: Vec<String>,
    pub after: Vec<String>,
}

/// A refresh run as stored: which sides could be refreshed, and every line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    pub started: String,
    pub source_available: bool,
    pub source_reason: Option<String>,
    pub target_available: bool,
    pub target_reason: Option<String>,
    pub lines: Vec<RefreshLine>,
}

impl RefreshRecord {
    pub fn available(&self, side: Side) -> (bool, Option<&str>) {
        match side {
            Side::Source => (self.source_available, self.source_reason.as_deref()),
            Side::Target => (self.target_available, self.target_reason.as_deref()),
        }
    }
}

/// What a folder looked like when its last pass finished, so an unchanged folder costs one
/// STATUS. `filter` is the message filter in force then ([`crate::engine::PassSettings`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The folder's UIDVALIDITY, as a plain number: `verify --repair` spoils a checkpoint
    /// with 0, which no folder's UIDVALIDITY equals (RFC 3501 §2.3.1.1), so the folder is
    /// scanned again.
    pub uid_validity: u32,
    /// UIDNEXT as STATUS gave it: a bound, not a UID (0 when the server left it out).
    pub uid_next: u32,
    pub messages: u32,
    pub highest_modseq: Option<u64>,
    pub filter: String,
}

/// A run's ID in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct RunId(pub i64);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What one pass did for one entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunEntry {
    pub entry_id: EntryId,
    pub state: EntryState,
    pub copied: u64,
    pub skipped: u64,
    pub failed: u64,
    pub bytes: u64,
    pub moved: u64,
    pub flags_updated: u64,
    pub seconds: f64,
    pub error: Option<String>,
    /// Custom keywords the target could not store (a profile without keywords, such as
    /// Exchange Online's), dropped from the copied messages, per target folder: never a
    /// failure.
    pub keywords_dropped: Vec<KeywordsDropped>,
    /// Seconds the pass's sessions (source and target) waited on throttling servers.
    pub throttled_seconds: f64,
}

/// Custom keywords dropped in one folder (see [`RunEntry::keywords_dropped`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct KeywordsDropped {
    pub folder: String,
    pub count: u64,
}

impl RunEntry {
    pub fn new(entry_id: EntryId) -> RunEntry {
        RunEntry {
            entry_id,
            state: EntryState::New,
            copied: 0,
            skipped: 0,
            failed: 0,
            bytes: 0,
            moved: 0,
            flags_updated: 0,
            seconds: 0.0,
            error: None,
            keywords_dropped: Vec::new(),
            throttled_seconds: 0.0,
        }
    }

    /// How many custom keywords the pass dropped, all folders together.
    pub fn keywords_dropped_total(&self) -> u64 {
        self.keywords_dropped.iter().map(|k| k.count).sum()
    }
}

/// A message a pass could not copy, with the server's words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub entry_id: EntryId,
    pub folder: String,
    pub uid: Option<Uid>,
    pub size: Option<u64>,
    pub message_id: Option<String>,
    pub reason: String,
}

/// One mailbox as a directory describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirectoryMailbox {
    /// The stable mailbox ID (`entryUUID`, or `objectGUID` as a lowercase GUID string).
    pub id: MailboxId,
    /// The entry's distinguished name (or the directory's own name for it).
    pub dn: String,
    /// The login attribute's (first) value.
    pub login: String,
    /// Primary address first, then the aliases; never empty. Deduplicated ignoring case;
    /// domains are lower-cased, local parts kept as the directory has them.
    pub addresses: Vec<String>,
    /// The display name attribute's (first) value, if configured and present.
    pub display_name: Option<String>,
}

/// A mailbox to create in the target directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMailbox {
    /// Parent of the new entry, e.g. `ou=people,dc=new,dc=example`.
    pub base: String,
    /// Login; also the RDN value (`<login_attribute>=<login>,<base>`).
    pub login: String,
    /// Primary address.
    pub address: String,
    /// Display name; `cn` and `sn` fall back to the login without one.
    pub display_name: Option<String>,
    /// Values of `objectClass`, e.g. `["inetOrgPerson"]`.
    pub object_classes: Vec<String>,
    /// Initial password, sent as given (the server hashes it only if it is configured to,
    /// e.g. OpenLDAP's ppolicy `hash_cleartext`).
    pub password: Option<String>,
}

/// The current time as RFC 3339 UTC, for run records.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_values_are_the_stored_ones() {
        assert_eq!(Origin::PendingCreation.as_str(), "pending-creation");
        for o in Origin::ALL {
            assert_eq!(Origin::parse(o.as_str()), Some(*o));
        }
        for s in EntryState::ALL {
            assert_eq!(EntryState::parse(s.as_str()), Some(*s));
        }
        assert_eq!(
            RefreshResult::parse("not_created"),
            Some(RefreshResult::NotCreated)
        );
        assert_eq!(Side::parse("Source"), None);
        assert_eq!(
            serde_json::to_value(Origin::Csv).unwrap(),
            serde_json::json!("csv")
        );
    }

    #[test]
    fn uids_are_non_zero_and_serialise_as_numbers() {
        assert_eq!(Uid::new(0), None);
        assert_eq!(UidValidity::new(0), None);
        let uid = Uid::new(42).unwrap();
        assert_eq!(uid.get(), 42);
        assert_eq!(uid.to_string(), "42");
        assert_eq!(Uid::FIRST.get(), 1);
        assert_eq!(
            serde_json::to_value(UidValidity::new(7)).unwrap(),
            serde_json::json!(7)
        );
    }

    #[test]
    fn flags_normalised_without_recent() {
        let f = Flags::from_server(["\\Seen", "$Label1", "\\Recent", "\\seen"]);
        assert_eq!(f.as_str(), "$Label1 \\Seen");
        assert_eq!(Flags::from_stored(f.as_str()), f);
        assert!(Flags::from_server(["\\Deleted"]).is_deleted());
        assert!(Flags::from_server(Vec::<String>::new()).is_empty());
        assert_eq!(Flags::from_stored("").iter().count(), 0);
    }

    #[test]
    fn one_address_rule() {
        let a = EmailAddress::parse(" John.Doe@Example.COM ").unwrap();
        assert_eq!(a.as_str(), "John.Doe@example.com");
        assert_eq!(a.local_part(), "John.Doe");
        assert_eq!(a.domain(), "example.com");
        assert!(a.same_as("john.doe@EXAMPLE.com"));
        assert_eq!(
            EmailAddress::parse("j@MÜNCHEN.de").unwrap().as_str(),
            "j@münchen.de"
        );
        for (bad, why) in [
            ("nobody", "it has no @"),
            ("a@b@c", "it has more than one @"),
            ("@x.org", "nothing before the @"),
            ("a@", "nothing after the @"),
            ("a b@x.org", "it contains a space or a control character"),
            (
                "a@x..org",
                "the domain has an empty part (two dots, or a dot at an end)",
            ),
        ] {
            assert_eq!(EmailAddress::parse(bad).unwrap_err(), why, "{bad}");
        }
    }

    #[test]
    fn migratable_entries() {
        let mut e = Entry::new("1".into(), "a".into(), Origin::Csv);
        assert!(!e.is_migratable());
        e.target_login = Some("b".into());
        assert!(e.is_migratable());
        e.origin = Origin::Skip;
        assert!(!e.is_migratable());
    }
}
