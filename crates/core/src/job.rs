//! The job file: a TOML document (SPEC §3) turned into a validated [`Job`] plan.
//!
//! Loading happens in two stages, on purpose:
//!
//! 1. **Raw**: serde reads the file into private `Raw*` structs that mirror the file's keys one
//!    to one and reject unknown keys (`deny_unknown_fields`), so a misspelt key is an error
//!    rather than a silently ignored setting. Nearly every raw field is optional, so this stage
//!    only fails on syntax errors, unknown keys and values of the wrong type.
//! 2. **Plan**: [`Job::load`] checks what serde cannot (required keys, keys that do not apply to
//!    the chosen kind, ranges, dates, plain-text connections, …), applies defaults and resolves
//!    relative paths against the job file's folder. It collects *every* problem before failing,
//!    so an administrator fixes a file in one round instead of one error at a time.
//!
//! Every problem names the file and the dotted key (`source.port`), and carries the line and
//! column of the offending key or value when the file has it. Error messages never quote the
//! file's text: a line of a job file may hold a password that someone wrote there by mistake.
//!
//! Secrets are never part of the file or of a [`Job`]: a [`Secret`] only says *where* to find
//! one (an environment variable or a file), and [`Secret::reveal`] reads it when a connection is
//! actually made. Loading a job therefore never needs the secrets to be present.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};

/// Default IMAP port with implicit TLS (`security = "tls"`).
pub const IMAP_TLS_PORT: u16 = 993;
/// Default IMAP port for `security = "starttls"` and `security = "plain"`.
pub const IMAP_PORT: u16 = 143;
/// Default `max_connections` of an IMAP connection.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10;
/// Default `migration.concurrency`.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Default `master_separator` for `admin_login = "master-separator"`.
pub const DEFAULT_MASTER_SEPARATOR: &str = "*";

const SECRET_FORM: &str = "a secret must be written as { env = \"VARIABLE\" } or \
     { file = \"path\" }; secrets are never written in the job file";

// ---------------------------------------------------------------------------------------------
// The plan
// ---------------------------------------------------------------------------------------------

/// A validated job: everything in the job file, with defaults applied and paths resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The job's name (`name`).
    pub name: String,
    /// The job file itself, as an absolute path.
    pub path: PathBuf,
    /// Where the job's state (entries, ledger) lives (`state`).
    pub state: StateLocation,
    /// Cutover or staged (`mode`, default cutover).
    pub mode: Mode,
    /// The server mailboxes are copied from (`[source]`).
    pub source: Connection,
    /// The server mailboxes are copied to (`[target]`).
    pub target: Connection,
    /// The mailboxes CSV (`mailboxes.csv`), absolute.
    pub mailboxes_csv: Option<PathBuf>,
    /// How mailboxes are migrated (`[migration]`).
    pub migration: MigrationSettings,
}

/// Where a job's state database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateLocation {
    /// A `SQLite` database file (absolute path).
    Sqlite(PathBuf),
    /// A `PostgreSQL` URL, for several workers sharing a job. Parsed, but not supported yet.
    Postgres(String),
}

/// The migration style of SPEC §1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Migrate everything, switch over, refresh addresses, run a delta pass.
    #[default]
    Cutover,
    /// Mailboxes are migrated and switched over in stages.
    Staged,
}

/// One side of a job: how to reach a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// What kind of server this is, with its settings.
    pub kind: ConnectionKind,
    /// Where this side's mailbox identities come from (`[side.directory]`).
    pub directory: Option<DirectoryConfig>,
    /// How mailferry creates mailboxes on this side (`[target.create]`; target only).
    pub create: Option<CreateConfig>,
}

/// How a directory connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectorySecurity {
    /// `ldap://` without encryption (needs `security = "plain"` written out).
    Plain,
    /// `ldap://` upgraded with StartTLS (the default for `ldap://`).
    StartTls,
    /// `ldaps://`.
    Tls,
}

/// An LDAP / Active Directory directory (SPEC §3 `[source.directory]`). In the job the
/// bind password is a [`Secret`]; [`DirectoryConfig::reveal`] gives the same settings with the
/// password read (`crate::directory::DirectorySettings`).
#[derive(Clone, PartialEq, Eq)]
pub struct DirectoryConfig<P = Secret> {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: String,
    pub security: DirectorySecurity,
    /// Extra trust anchor (PEM CA certificates), besides the system's.
    pub tls_ca: Option<PathBuf>,
    /// DN to bind as; empty for an anonymous bind.
    pub bind_dn: String,
    pub bind_password: P,
    /// Search base of the mailboxes (subtree).
    pub base: String,
    pub filter: String,
    /// `entryUUID` (default), or `objectGUID` on Active Directory.
    pub id_attribute: String,
    /// What the mail server logs in as (default `uid`).
    pub login_attribute: String,
    /// Default `mail`; further values count as aliases.
    pub primary_address_attribute: String,
    /// `mailAlternateAddress`, `mailLocalAddress`, or `proxyAddresses` (AD style: `SMTP:`
    /// marks the primary, `smtp:` the others).
    pub alias_attribute: Option<String>,
    /// Default `cn`.
    pub display_name_attribute: Option<String>,
}

impl DirectoryConfig {
    /// The same settings with the bind password read from its environment variable or file.
    pub fn reveal(&self) -> Result<DirectoryConfig<String>, JobError> {
        Ok(DirectoryConfig {
            bind_password: self.bind_password.reveal()?,
            url: self.url.clone(),
            security: self.security,
            tls_ca: self.tls_ca.clone(),
            bind_dn: self.bind_dn.clone(),
            base: self.base.clone(),
            filter: self.filter.clone(),
            id_attribute: self.id_attribute.clone(),
            login_attribute: self.login_attribute.clone(),
            primary_address_attribute: self.primary_address_attribute.clone(),
            alias_attribute: self.alias_attribute.clone(),
            display_name_attribute: self.display_name_attribute.clone(),
        })
    }
}

impl<P> DirectoryConfig<P> {
    /// Whether addresses are stored Exchange-style (`proxyAddresses`: `SMTP:` primary,
    /// `smtp:` others, other prefixes ignored).
    pub fn proxy_addresses(&self) -> bool {
        self.alias_attribute
            .as_deref()
            .is_some_and(|a| a.eq_ignore_ascii_case("proxyAddresses"))
    }
}

/// Never prints the password, read or not.
impl<P> fmt::Debug for DirectoryConfig<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectoryConfig")
            .field("url", &self.url)
            .field("security", &self.security)
            .field("tls_ca", &self.tls_ca)
            .field("bind_dn", &self.bind_dn)
            .field("bind_password", &"<hidden>")
            .field("base", &self.base)
            .field("filter", &self.filter)
            .field("id_attribute", &self.id_attribute)
            .field("login_attribute", &self.login_attribute)
            .field("primary_address_attribute", &self.primary_address_attribute)
            .field("alias_attribute", &self.alias_attribute)
            .field("display_name_attribute", &self.display_name_attribute)
            .finish()
    }
}

/// Mailbox creation in the target directory (SPEC §3 `[target.create]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateConfig {
    /// Where new entries go.
    pub base: String,
    /// A created mailbox's address is `<source local part>@domain`.
    pub domain: String,
    pub object_classes: Vec<String>,
    pub initial_password: Option<Secret>,
}

/// The kinds of server mailferry can talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionKind {
    /// An IMAP server.
    Imap(ImapSettings),
    /// A local directory holding one Maildir++ tree per mailbox, named by the mailbox's login.
    Maildir {
        /// The directory holding the Maildir++ trees (absolute).
        root: PathBuf,
    },
}

/// How to reach and log in to an IMAP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapSettings {
    /// Host name or IP address.
    pub host: String,
    /// TCP port; default 993 for `tls`, 143 otherwise.
    pub port: u16,
    /// Transport security.
    pub security: Security,
    /// An extra trust anchor (a CA certificate file, absolute).
    pub tls_ca: Option<PathBuf>,
    /// Whether the server certificate is verified; only an explicit `tls_verify = false`
    /// turns verification off.
    pub tls_verify: bool,
    /// How mailferry logs in.
    pub auth: Auth,
    /// Most connections opened to this server at once, across all mailboxes (at least 1).
    pub max_connections: usize,
}

/// Transport security of an IMAP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// TLS from the first byte (usually port 993). The default.
    #[default]
    Tls,
    /// Plain TCP upgraded with STARTTLS (usually port 143).
    StartTls,
    /// No encryption at all; needs `allow_plain = true`.
    Plain,
}

/// How mailferry logs in to an IMAP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// One administrator account that can open every mailbox.
    Admin {
        /// The administrator's login.
        user: String,
        /// Where the administrator's password is.
        password: Secret,
        /// How the administrator logs in as a mailbox.
        login: AdminLogin,
    },
    /// Each mailbox logs in with its own password, from the mailboxes CSV.
    PerMailbox,
}

/// How an administrator logs in as a given mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminLogin {
    /// `AUTHENTICATE PLAIN` with the mailbox as authorization identity (the default).
    SaslAuthzid,
    /// `LOGIN mailbox<separator>admin`, as Dovecot master users do.
    MasterSeparator(String),
}

/// Where a secret can be found. It never holds the secret itself, so printing it (`Debug`) is
/// safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// An environment variable, by name.
    Env(String),
    /// A file (absolute path) whose content is the secret.
    File(PathBuf),
}

impl Secret {
    /// Reads the secret: the environment variable's value, or the file's content without one
    /// trailing newline.
    ///
    /// # Errors
    ///
    /// [`JobError::SecretEnv`] when the variable is unset, empty or not UTF-8;
    /// [`JobError::SecretFile`] when the file cannot be read; [`JobError::SecretFileEmpty`].
    /// Each names the variable or the file, never the secret.
    pub fn reveal(&self) -> Result<String, JobError> {
        match self {
            Secret::Env(var) => env_secret(var, std::env::var(var)),
            Secret::File(file) => {
                let text =
                    std::fs::read_to_string(file).map_err(|source| JobError::SecretFile {
                        file: file.clone(),
                        source,
                    })?;
                let value = text
                    .strip_suffix("\r\n")
                    .or_else(|| text.strip_suffix('\n'))
                    .unwrap_or(&text);
                if value.is_empty() {
                    return Err(JobError::SecretFileEmpty { file: file.clone() });
                }
                Ok(value.to_owned())
            }
        }
    }
}

/// The secret in environment variable `var`, given what reading it gave.
fn env_secret(var: &str, value: Result<String, std::env::VarError>) -> Result<String, JobError> {
    let reason = match value {
        Ok(value) if !value.is_empty() => return Ok(value),
        Ok(_) => "is empty",
        Err(std::env::VarError::NotPresent) => "is not set",
        Err(std::env::VarError::NotUnicode(_)) => "is not valid UTF-8",
    };
    Err(JobError::SecretEnv {
        var: var.to_owned(),
        reason,
    })
}

/// How mailboxes are migrated (`[migration]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationSettings {
    /// Mailboxes migrated at once (at least 1, default 4).
    pub concurrency: usize,
    /// Globs over '/'-separated source folder paths; default `["*"]`.
    pub include_folders: Vec<String>,
    /// Globs of folders left out; default empty.
    pub exclude_folders: Vec<String>,
    /// Only messages with an INTERNALDATE on or after this day.
    pub since: Option<Date>,
    /// Only messages with an INTERNALDATE before this day (IMAP `BEFORE` semantics).
    pub until: Option<Date>,
    /// Whether messages flagged `\Deleted` are left out (default true).
    pub skip_deleted: bool,
    /// Explicit folder renames, source path → target path.
    pub folder_map: BTreeMap<String, String>,
}

impl Default for MigrationSettings {
    fn default() -> Self {
        MigrationSettings {
            concurrency: DEFAULT_CONCURRENCY,
            include_folders: vec!["*".to_owned()],
            exclude_folders: Vec::new(),
            since: None,
            until: None,
            skip_deleted: true,
            folder_map: BTreeMap::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dates
// ---------------------------------------------------------------------------------------------

/// A calendar date (proleptic Gregorian), as written `YYYY-MM-DD` in the job file.
///
/// Fields are ordered year, month, day so the derived ordering is chronological.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Year, 1 to 9999.
    pub year: i32,
    /// Month, 1 to 12.
    pub month: u32,
    /// Day of the month, 1 to 31.
    pub day: u32,
}

/// Why a text is not a [`Date`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    /// The text is not shaped `YYYY-MM-DD`.
    #[error("expected a date written YYYY-MM-DD, such as 2020-01-31")]
    Format,
    /// The numbers do not name a day of the calendar (month 13, 30 February, year 0).
    #[error("{year:04}-{month:02}-{day:02} is not a calendar date")]
    NoSuchDay {
        /// The year written.
        year: i32,
        /// The month written.
        month: u32,
        /// The day written.
        day: u32,
    },
}

const MONTH_NAMES: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

impl Date {
    /// A date, checked against the calendar.
    ///
    /// # Errors
    ///
    /// [`DateError::NoSuchDay`] when the numbers name no day (years run from 1 to 9999).
    pub fn new(year: i32, month: u32, day: u32) -> Result<Date, DateError> {
        let valid = (1..=9999).contains(&year)
            && (1..=12).contains(&month)
            && day >= 1
            && day <= days_in_month(year, month);
        if valid {
            Ok(Date { year, month, day })
        } else {
            Err(DateError::NoSuchDay { year, month, day })
        }
    }

    /// The date as IMAP `SEARCH` writes it (RFC 3501 `date`), e.g. `1-Jan-2020`.
    #[must_use]
    pub fn imap_format(&self) -> String {
        let month = usize::try_from(self.month)
            .ok()
            .and_then(|m| MONTH_NAMES.get(m.wrapping_sub(1)))
            .copied()
            .unwrap_or("???");
        format!("{}-{}-{}", self.day, month, self.year)
    }
}

fn is_leap_year(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

impl FromStr for Date {
    type Err = DateError;

    /// Parses exactly `YYYY-MM-DD` (four, two and two digits).
    fn from_str(text: &str) -> Result<Date, DateError> {
        let bytes = text.as_bytes();
        let shaped = bytes.len() == 10
            && bytes[4] == b'-'
            && bytes[7] == b'-'
            && bytes
                .iter()
                .enumerate()
                .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit());
        if !shaped {
            return Err(DateError::Format);
        }
        let number =
            |range: Range<usize>| text[range].parse::<u32>().map_err(|_| DateError::Format);
        let year = i32::try_from(number(0..4)?).map_err(|_| DateError::Format)?;
        Date::new(year, number(5..7)?, number(8..10)?)
    }
}

impl fmt::Display for Date {
    /// Writes `YYYY-MM-DD`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Everything that can go wrong with a job file or a secret.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The job file could not be read.
    #[error("cannot read job file {}: {source}", file.display())]
    Read {
        /// The job file.
        file: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The job file was read but is not a valid job; every problem found is listed.
    #[error("invalid job file {}:{}", file.display(), ProblemLines(problems))]
    Invalid {
        /// The job file.
        file: PathBuf,
        /// What is wrong, in file order where possible.
        problems: Vec<JobProblem>,
    },
    /// A secret's environment variable is unusable.
    #[error("secret environment variable {var} {reason}")]
    SecretEnv {
        /// The variable's name.
        var: String,
        /// What is wrong with it ("is not set", "is empty", …).
        reason: &'static str,
    },
    /// A secret's file could not be read.
    #[error("cannot read secret file {}: {source}", file.display())]
    SecretFile {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A secret's file is empty.
    #[error("secret file {} is empty", file.display())]
    SecretFileEmpty {
        /// The file.
        file: PathBuf,
    },
}

/// One thing wrong in a job file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobProblem {
    /// The dotted key concerned (`source.port`), when there is one.
    pub key: Option<String>,
    /// 1-based line in the job file, when the problem has a place in it.
    pub line: Option<usize>,
    /// 1-based column (in characters) in that line.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for JobProblem {
    /// `line 3, column 8: source.port: what is wrong`, leaving out what is unknown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, "line {line}, column {column}: ")?,
            (Some(line), None) => write!(f, "line {line}: ")?,
            _ => {}
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Displays problems one per line, each on a new indented line.
struct ProblemLines<'a>(&'a [JobProblem]);

impl fmt::Display for ProblemLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for problem in self.0 {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Raw file structure (stage 1)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Option<String>,
    state: Option<String>,
    mode: Option<Mode>,
    source: Option<RawConnection>,
    target: Option<RawConnection>,
    mailboxes: Option<RawMailboxes>,
    migration: Option<RawMigration>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawKind {
    Imap,
    Maildir,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RawAuth {
    Admin,
    PerMailbox,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RawAdminLogin {
    SaslAuthzid,
    MasterSeparator,
}

/// `[source]` / `[target]`: the union of the keys of every kind; stage 2 rejects the keys that
/// do not apply to the chosen kind.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnection {
    kind: Option<RawKind>,
    host: Option<String>,
    port: Option<u16>,
    security: Option<Security>,
    allow_plain: Option<bool>,
    tls_ca: Option<String>,
    tls_verify: Option<bool>,
    auth: Option<RawAuth>,
    admin_user: Option<String>,
    admin_password: Option<RawSecret>,
    admin_login: Option<RawAdminLogin>,
    master_separator: Option<String>,
    max_connections: Option<usize>,
    path: Option<String>,
    directory: Option<RawDirectory>,
    create: Option<RawCreate>,
}

/// The login keys of an IMAP connection, taken out of [`RawConnection`].
struct AuthKeys {
    auth: Option<RawAuth>,
    user: Option<String>,
    password: Option<RawSecret>,
    login: Option<RawAdminLogin>,
    separator: Option<String>,
}

/// `[source.directory]` / `[target.directory]` (SPEC §3). Parsed so the file format is settled,
/// but refused by stage 2 until directories are implemented.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirectory {
    kind: Option<String>,
    url: Option<String>,
    bind_dn: Option<String>,
    bind_password: Option<RawSecret>,
    base: Option<String>,
    filter: Option<String>,
    security: Option<String>,
    tls_ca: Option<String>,
    id_attribute: Option<String>,
    login_attribute: Option<String>,
    primary_address_attribute: Option<String>,
    alias_attribute: Option<String>,
    display_name_attribute: Option<String>,
}

/// `[target.create]` (SPEC §3): mailbox creation in the target directory. Parsed, refused by
/// stage 2 until directories are implemented.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCreate {
    base: Option<String>,
    domain: Option<String>,
    object_classes: Option<Vec<String>>,
    initial_password: Option<RawSecret>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMailboxes {
    csv: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMigration {
    concurrency: Option<usize>,
    include_folders: Option<Vec<String>>,
    exclude_folders: Option<Vec<String>>,
    /// A string or a TOML local date; both are accepted.
    since: Option<toml::Value>,
    until: Option<toml::Value>,
    skip_deleted: Option<bool>,
    folder_map: Option<BTreeMap<String, String>>,
}

/// A secret reference as written: `{ env = "VAR" }` or `{ file = "path" }`.
///
/// Deserialized by hand so that a secret written in clear (`admin_password = "hunter2"`) gets
/// an explanation instead of serde's "invalid type: string \"hunter2\"", which would echo it.
#[derive(Debug)]
enum RawSecret {
    Env(String),
    File(String),
}

impl<'de> Deserialize<'de> for RawSecret {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawSecretVisitor)
    }
}

struct RawSecretVisitor;

impl RawSecretVisitor {
    fn refuse<E: de::Error>() -> Result<RawSecret, E> {
        Err(E::custom(SECRET_FORM))
    }
}

impl<'de> Visitor<'de> for RawSecretVisitor {
    type Value = RawSecret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{ env = \"VARIABLE\" } or { file = \"path\" }")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<RawSecret, E> {
        Self::refuse()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawSecret, E> {
        Self::refuse()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawSecret, E> {
        Self::refuse()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawSecret, E> {
        Self::refuse()
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawSecret, E> {
        Self::refuse()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<RawSecret, A::Error> {
        Self::refuse()
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawSecret, A::Error> {
        let mut found: Option<RawSecret> = None;
        while let Some(key) = map.next_key::<String>()? {
            let value = match key.as_str() {
                "env" => RawSecret::Env(map.next_value()?),
                "file" => RawSecret::File(map.next_value()?),
                _ => return Self::refuse(),
            };
            if found.is_some() {
                return Err(de::Error::custom(
                    "a secret is either { env = \"VARIABLE\" } or { file = \"path\" }, not both",
                ));
            }
            found = Some(value);
        }
        found.map_or_else(Self::refuse, Ok)
    }
}

// ---------------------------------------------------------------------------------------------
// Where keys are in the file
// ---------------------------------------------------------------------------------------------

/// One key of the document with its place: used to name the key of a serde error (which only
/// has a byte span) and to give stage-2 problems a line and column.
struct KeyPlace {
    path: String,
    /// How many tables deep the key is (0 for a top-level key).
    depth: usize,
    key: Range<usize>,
    value: Range<usize>,
}

/// The places of every key, nested tables included.
fn key_places(text: &str) -> Vec<KeyPlace> {
    let mut places = Vec::new();
    if let Ok(document) = toml::de::DeTable::parse(text) {
        collect_places(document.get_ref(), "", 0, &mut places);
    }
    places
}

fn collect_places(
    table: &toml::de::DeTable<'_>,
    prefix: &str,
    depth: usize,
    places: &mut Vec<KeyPlace>,
) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        if let toml::de::DeValue::Table(inner) = value.get_ref() {
            collect_places(inner, &path, depth + 1, places);
        }
        places.push(KeyPlace {
            path,
            depth,
            key: key.span(),
            value: value.span(),
        });
    }
}

/// The deepest key whose name or value holds `span`.
fn key_at(places: &[KeyPlace], span: &Range<usize>) -> Option<String> {
    let holds = |outer: &Range<usize>| outer.start <= span.start && span.end <= outer.end;
    places
        .iter()
        .filter(|place| holds(&place.key) || holds(&place.value))
        .max_by_key(|place| place.depth)
        .map(|place| place.path.clone())
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Rewrites Rust type names in serde messages into words.
fn humanize(message: &str) -> String {
    message
        .replace("expected u16", "expected a whole number from 0 to 65535")
        .replace("expected usize", "expected a whole number, 0 or more")
        .replace("expected a boolean", "expected true or false")
}

// ---------------------------------------------------------------------------------------------
// Validation (stage 2)
// ---------------------------------------------------------------------------------------------

/// Collects the problems of one job file.
struct Checker<'a> {
    text: &'a str,
    places: Vec<KeyPlace>,
    dir: &'a Path,
    problems: Vec<JobProblem>,
}

impl Checker<'_> {
    fn job(&mut self, raw: RawJob, file: &Path) -> Option<Job> {
        let name = self.text("name", raw.name, "missing: a short name for the job");
        let state = self.state(raw.state, file);
        if let Some(StateLocation::Postgres(_)) = state {
            self.problem("state", "postgres state is not supported yet");
        }
        let source = self.connection("source", raw.source);
        let target = self.connection("target", raw.target);
        let mailboxes_csv = match raw.mailboxes.and_then(|mailboxes| mailboxes.csv) {
            Some(csv) => self.path("mailboxes.csv", &csv),
            None => None,
        };
        let migration = self.migration(raw.migration);
        Some(Job {
            name: name?,
            path: file.to_path_buf(),
            state: state?,
            mode: raw.mode.unwrap_or_default(),
            source: source?,
            target: target?,
            mailboxes_csv,
            migration,
        })
    }

    /// Records a problem about `key`, placed at its value in the file when it is there.
    fn problem(&mut self, key: &str, message: impl Into<String>) {
        let place = self
            .places
            .iter()
            .find(|place| place.path == key)
            .map(|place| line_column(self.text, place.value.start));
        self.problems.push(JobProblem {
            key: Some(key.to_owned()),
            line: place.map(|(line, _)| line),
            column: place.map(|(_, column)| column),
            message: message.into(),
        });
    }

    /// A path from the file, resolved against the job file's folder; empty is a problem.
    fn path(&mut self, key: &str, value: &str) -> Option<PathBuf> {
        if value.trim().is_empty() {
            self.problem(key, "must not be empty");
            return None;
        }
        Some(resolve(self.dir, value))
    }

    /// A text that must not be empty (after trimming); returned trimmed.
    fn text(&mut self, key: &str, value: Option<String>, missing: &str) -> Option<String> {
        match value {
            None => {
                self.problem(key, missing);
                None
            }
            Some(value) if value.trim().is_empty() => {
                self.problem(key, "must not be empty");
                None
            }
            Some(value) => Some(value.trim().to_owned()),
        }
    }

    fn at_least_one(&mut self, key: &str, value: Option<usize>, default: usize) -> usize {
        let value = value.unwrap_or(default);
        if value == 0 {
            self.problem(key, "must be at least 1");
        }
        value
    }

    fn secret(&mut self, key: &str, raw: RawSecret) -> Option<Secret> {
        match raw {
            RawSecret::Env(var) => {
                if var.is_empty() || var.contains(['=', '\0']) {
                    self.problem(key, "env must name an environment variable");
                    None
                } else {
                    Some(Secret::Env(var))
                }
            }
            RawSecret::File(file) => self.path(key, &file).map(Secret::File),
        }
    }

    fn state(&mut self, raw: Option<String>, job_file: &Path) -> Option<StateLocation> {
        let Some(raw) = raw else {
            let stem = job_file
                .file_stem()
                .map_or_else(|| "job".into(), |s| s.to_string_lossy());
            return Some(StateLocation::Sqlite(self.dir.join(format!("{stem}.db"))));
        };
        if let Some(file) = raw.strip_prefix("sqlite://") {
            return self.path("state", file).map(StateLocation::Sqlite);
        }
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Some(StateLocation::Postgres(raw));
        }
        if let Some((scheme, _)) = raw.split_once("://") {
            self.problem(
                "state",
                format!(
                    "unknown database type `{scheme}`; use \"sqlite://FILE\" or \"postgres://…\""
                ),
            );
            return None;
        }
        self.path("state", &raw).map(StateLocation::Sqlite)
    }

    fn connection(&mut self, side: &str, raw: Option<RawConnection>) -> Option<Connection> {
        let Some(mut raw) = raw else {
            self.problem(side, format!("the [{side}] section is missing"));
            return None;
        };
        let key = |name: &str| format!("{side}.{name}");
        let directory = raw
            .directory
            .take()
            .and_then(|d| self.directory(&key("directory"), d));
        let create = match raw.create.take() {
            Some(c) if side == "target" => {
                if directory.is_none() && !self.has_problem_at(&key("directory")) {
                    self.problem(
                        &key("create"),
                        "mailbox creation writes to the target directory: add [target.directory]",
                    );
                }
                self.create(&key("create"), c)
            }
            Some(_) => {
                self.problem(
                    &key("create"),
                    "mailbox creation is a setting of the target only ([target.create])",
                );
                None
            }
            None => None,
        };
        let mut connection = self.connection_kind(side, raw)?;
        connection.directory = directory;
        connection.create = create;
        Some(connection)
    }

    fn connection_kind(&mut self, side: &str, raw: RawConnection) -> Option<Connection> {
        let key = |name: &str| format!("{side}.{name}");
        match raw.kind {
            None => {
                self.problem(&key("kind"), "missing: \"imap\" or \"maildir\"");
                None
            }
            Some(RawKind::Maildir) => self.maildir(side, raw),
            Some(RawKind::Imap) => self.imap(side, raw),
        }
    }

    fn has_problem_at(&self, key: &str) -> bool {
        self.problems
            .iter()
            .any(|p| p.key.as_deref().is_some_and(|k| k.starts_with(key)))
    }

    fn directory(&mut self, key: &str, raw: RawDirectory) -> Option<DirectoryConfig> {
        let k = |name: &str| format!("{key}.{name}");
        match raw.kind.as_deref() {
            Some("ldap") => {}
            Some(other) => {
                self.problem(&k("kind"), format!("unknown kind `{other}`; use \"ldap\""))
            }
            None => self.problem(&k("kind"), "missing: \"ldap\""),
        }
        let url = self.text(
            &k("url"),
            raw.url,
            "missing: ldap://host:389 or ldaps://host:636",
        );
        let security = match (url.as_deref(), raw.security.as_deref()) {
            (Some(u), None | Some("tls")) if u.starts_with("ldaps://") => {
                Some(DirectorySecurity::Tls)
            }
            (Some(u), Some(_)) if u.starts_with("ldaps://") => {
                self.problem(
                    &k("security"),
                    "an ldaps:// URL is always TLS; remove security",
                );
                None
            }
            (Some(u), None | Some("starttls")) if u.starts_with("ldap://") => {
                Some(DirectorySecurity::StartTls)
            }
            (Some(u), Some("plain")) if u.starts_with("ldap://") => Some(DirectorySecurity::Plain),
            (Some(u), Some(other)) if u.starts_with("ldap://") => {
                self.problem(
                    &k("security"),
                    format!("unknown value `{other}`; use \"starttls\" or \"plain\""),
                );
                None
            }
            (Some(_), _) => {
                self.problem(&k("url"), "must start with ldap:// or ldaps://");
                None
            }
            (None, _) => None,
        };
        let tls_ca = match raw.tls_ca {
            Some(ca) if security == Some(DirectorySecurity::Plain) => {
                let _ = ca;
                self.problem(&k("tls_ca"), "not used with security = \"plain\"");
                None
            }
            Some(ca) => self.path(&k("tls_ca"), &ca),
            None => None,
        };
        let bind_dn = self.text(&k("bind_dn"), raw.bind_dn, "missing: the DN to bind as");
        let bind_password = match raw.bind_password {
            Some(p) => self.secret(&k("bind_password"), p),
            None => {
                self.problem(
                    &k("bind_password"),
                    "missing: { env = \"VAR\" } or { file = \"path\" }",
                );
                None
            }
        };
        let base = self.text(
            &k("base"),
            raw.base,
            "missing: the DN under which the mailboxes are",
        );
        let filter = raw.filter.unwrap_or_else(|| "(objectClass=*)".into());
        if !(filter.starts_with('(') && filter.ends_with(')')) {
            self.problem(
                &k("filter"),
                "an LDAP filter is written in parentheses, e.g. (objectClass=inetOrgPerson)",
            );
        }
        let attribute = |this: &mut Self, name: &str, value: Option<String>, default: &str| {
            let v = value.unwrap_or_else(|| default.to_string());
            if v.is_empty()
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ';')
            {
                this.problem(&k(name), "must be an LDAP attribute name");
            }
            v
        };
        let id_attribute = attribute(self, "id_attribute", raw.id_attribute, "entryUUID");
        let login_attribute = attribute(self, "login_attribute", raw.login_attribute, "uid");
        let primary = attribute(
            self,
            "primary_address_attribute",
            raw.primary_address_attribute,
            "mail",
        );
        let alias_attribute = raw
            .alias_attribute
            .map(|a| attribute(self, "alias_attribute", Some(a), ""));
        let display = attribute(
            self,
            "display_name_attribute",
            raw.display_name_attribute,
            "cn",
        );
        Some(DirectoryConfig {
            url: url?,
            security: security?,
            tls_ca,
            bind_dn: bind_dn?,
            bind_password: bind_password?,
            base: base?,
            filter,
            id_attribute,
            login_attribute,
            primary_address_attribute: primary,
            alias_attribute,
            display_name_attribute: Some(display),
        })
    }

    fn create(&mut self, key: &str, raw: RawCreate) -> Option<CreateConfig> {
        let k = |name: &str| format!("{key}.{name}");
        let base = self.text(
            &k("base"),
            raw.base,
            "missing: the DN under which new mailboxes are added",
        );
        let domain = self.text(
            &k("domain"),
            raw.domain,
            "missing: the domain of created addresses",
        );
        if let Some(d) = &domain
            && (d.contains('@') || d.contains(char::is_whitespace) || !d.contains('.'))
        {
            self.problem(&k("domain"), "must be a domain name such as new.example");
        }
        let object_classes = raw
            .object_classes
            .unwrap_or_else(|| vec!["inetOrgPerson".into()]);
        if object_classes.is_empty() {
            self.problem(&k("object_classes"), "must name at least one object class");
        }
        let initial_password = raw
            .initial_password
            .and_then(|p| self.secret(&k("initial_password"), p));
        Some(CreateConfig {
            base: base?,
            domain: domain?.to_ascii_lowercase(),
            object_classes,
            initial_password,
        })
    }

    fn maildir(&mut self, side: &str, raw: RawConnection) -> Option<Connection> {
        let imap_only = [
            ("host", raw.host.is_some()),
            ("port", raw.port.is_some()),
            ("security", raw.security.is_some()),
            ("allow_plain", raw.allow_plain.is_some()),
            ("tls_ca", raw.tls_ca.is_some()),
            ("tls_verify", raw.tls_verify.is_some()),
            ("auth", raw.auth.is_some()),
            ("admin_user", raw.admin_user.is_some()),
            ("admin_password", raw.admin_password.is_some()),
            ("admin_login", raw.admin_login.is_some()),
            ("master_separator", raw.master_separator.is_some()),
            ("max_connections", raw.max_connections.is_some()),
        ];
        for (name, _) in imap_only.iter().filter(|(_, present)| *present) {
            self.problem(
                &format!("{side}.{name}"),
                "not used with kind = \"maildir\"; remove it",
            );
        }
        let root = match raw.path {
            Some(path) => self.path(&format!("{side}.path"), &path),
            None => {
                self.problem(
                    &format!("{side}.path"),
                    "missing: the directory holding one Maildir++ tree per mailbox login",
                );
                None
            }
        }?;
        Some(Connection {
            kind: ConnectionKind::Maildir { root },
            directory: None,
            create: None,
        })
    }

    fn imap(&mut self, side: &str, raw: RawConnection) -> Option<Connection> {
        let key = |name: &str| format!("{side}.{name}");
        if raw.path.is_some() {
            self.problem(&key("path"), "not used with kind = \"imap\"; remove it");
        }
        let host = self.text(
            &key("host"),
            raw.host,
            "missing: the IMAP server's host name",
        );
        if let Some(host) = &host {
            if host.contains("://") {
                self.problem(
                    &key("host"),
                    "write the host name only; the port and security have their own keys",
                );
            } else if host.contains(char::is_whitespace) {
                self.problem(&key("host"), "a host name has no spaces");
            } else if host.matches(':').count() == 1 {
                self.problem(
                    &key("host"),
                    "write the port in `port`, not in the host name",
                );
            }
        }
        let security = raw.security.unwrap_or_default();
        let port = raw.port.unwrap_or(match security {
            Security::Tls => IMAP_TLS_PORT,
            Security::StartTls | Security::Plain => IMAP_PORT,
        });
        if port == 0 {
            self.problem(&key("port"), "must be from 1 to 65535");
        }
        if security == Security::Plain {
            if raw.allow_plain != Some(true) {
                self.problem(
                    &key("security"),
                    "\"plain\" sends passwords and mail unencrypted; add allow_plain = true \
                     to confirm (e.g. for a server on the loopback interface)",
                );
            }
            if raw.tls_ca.is_some() {
                self.problem(&key("tls_ca"), "not used with security = \"plain\"");
            }
            if raw.tls_verify.is_some() {
                self.problem(&key("tls_verify"), "not used with security = \"plain\"");
            }
        }
        let tls_ca = match raw.tls_ca {
            Some(ca) => self.path(&key("tls_ca"), &ca),
            None => None,
        };
        let max_connections = self.at_least_one(
            &key("max_connections"),
            raw.max_connections,
            DEFAULT_MAX_CONNECTIONS,
        );
        let auth = self.auth(
            side,
            AuthKeys {
                auth: raw.auth,
                user: raw.admin_user,
                password: raw.admin_password,
                login: raw.admin_login,
                separator: raw.master_separator,
            },
        );
        Some(Connection {
            directory: None,
            create: None,
            kind: ConnectionKind::Imap(ImapSettings {
                host: host?,
                port,
                security,
                tls_ca,
                tls_verify: raw.tls_verify.unwrap_or(true),
                auth: auth?,
                max_connections,
            }),
        })
    }

    fn auth(&mut self, side: &str, keys: AuthKeys) -> Option<Auth> {
        let key = |name: &str| format!("{side}.{name}");
        let AuthKeys {
            auth,
            user,
            password,
            login,
            separator,
        } = keys;
        match auth {
            None => {
                self.problem(&key("auth"), "missing: \"admin\" or \"per-mailbox\"");
                None
            }
            Some(RawAuth::PerMailbox) => {
                let admin_only = [
                    ("admin_user", user.is_some()),
                    ("admin_password", password.is_some()),
                    ("admin_login", login.is_some()),
                    ("master_separator", separator.is_some()),
                ];
                for (name, _) in admin_only.iter().filter(|(_, present)| *present) {
                    self.problem(
                        &key(name),
                        "not used with auth = \"per-mailbox\"; remove it",
                    );
                }
                Some(Auth::PerMailbox)
            }
            Some(RawAuth::Admin) => {
                let user = self.text(
                    &key("admin_user"),
                    user,
                    "missing: the administrator's login (auth = \"admin\")",
                );
                let password = match password {
                    Some(raw) => self.secret(&key("admin_password"), raw),
                    None => {
                        self.problem(
                            &key("admin_password"),
                            "missing: { env = \"VARIABLE\" } or { file = \"path\" }",
                        );
                        None
                    }
                };
                let login = match (login.unwrap_or(RawAdminLogin::SaslAuthzid), separator) {
                    (RawAdminLogin::SaslAuthzid, None) => Some(AdminLogin::SaslAuthzid),
                    (RawAdminLogin::SaslAuthzid, Some(_)) => {
                        self.problem(
                            &key("master_separator"),
                            "only used with admin_login = \"master-separator\"",
                        );
                        None
                    }
                    (RawAdminLogin::MasterSeparator, separator) => {
                        let separator =
                            separator.unwrap_or_else(|| DEFAULT_MASTER_SEPARATOR.to_owned());
                        if separator.is_empty() || separator.contains(char::is_whitespace) {
                            self.problem(
                                &key("master_separator"),
                                "must be one or more characters, without spaces",
                            );
                            None
                        } else {
                            Some(AdminLogin::MasterSeparator(separator))
                        }
                    }
                };
                Some(Auth::Admin {
                    user: user?,
                    password: password?,
                    login: login?,
                })
            }
        }
    }

    fn date(&mut self, key: &str, value: Option<toml::Value>) -> Option<Date> {
        let parsed = match value? {
            toml::Value::String(text) => text.trim().parse::<Date>(),
            toml::Value::Datetime(toml::value::Datetime {
                date: Some(date),
                time: None,
                offset: None,
            }) => Date::new(
                i32::from(date.year),
                u32::from(date.month),
                u32::from(date.day),
            ),
            _ => Err(DateError::Format),
        };
        parsed.map_err(|e| self.problem(key, e.to_string())).ok()
    }

    fn folders(&mut self, key: &str, folders: &[String]) {
        if folders.iter().any(|folder| folder.trim().is_empty()) {
            self.problem(key, "a folder pattern must not be empty");
        }
    }

    fn migration(&mut self, raw: Option<RawMigration>) -> MigrationSettings {
        let defaults = MigrationSettings::default();
        let Some(raw) = raw else {
            return defaults;
        };
        let concurrency = self.at_least_one(
            "migration.concurrency",
            raw.concurrency,
            defaults.concurrency,
        );
        let include_folders = raw.include_folders.unwrap_or(defaults.include_folders);
        if include_folders.is_empty() {
            self.problem(
                "migration.include_folders",
                "an empty list would migrate nothing; leave it out to migrate every folder",
            );
        }
        self.folders("migration.include_folders", &include_folders);
        let exclude_folders = raw.exclude_folders.unwrap_or_default();
        self.folders("migration.exclude_folders", &exclude_folders);
        let since = self.date("migration.since", raw.since);
        let until = self.date("migration.until", raw.until);
        if let (Some(since), Some(until)) = (since, until)
            && since > until
        {
            self.problem(
                "migration.until",
                format!("{until} is before since = {since}"),
            );
        }
        let folder_map = raw.folder_map.unwrap_or_default();
        if folder_map
            .iter()
            .any(|(from, to)| from.trim().is_empty() || to.trim().is_empty())
        {
            self.problem(
                "migration.folder_map",
                "folder names must not be empty on either side",
            );
        }
        MigrationSettings {
            concurrency,
            include_folders,
            exclude_folders,
            since,
            until,
            skip_deleted: raw.skip_deleted.unwrap_or(defaults.skip_deleted),
            folder_map,
        }
    }
}

/// The job file's absolute path: its folder canonical (no `..`, no symlinked folders), its name
/// as given.
fn job_file_path(path: &Path) -> io::Result<PathBuf> {
    let absolute = std::path::absolute(path)?;
    match (absolute.parent(), absolute.file_name()) {
        (Some(dir), Some(name)) => Ok(std::fs::canonicalize(dir)?.join(name)),
        _ => Ok(absolute),
    }
}

/// `value` resolved against `dir` when relative, without `.` components.
fn resolve(dir: &Path, value: &str) -> PathBuf {
    let path = Path::new(value);
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    };
    joined
        .components()
        .filter(|component| *component != Component::CurDir)
        .collect()
}

impl Job {
    /// Reads and validates a job file. Reads no secret: see [`Secret::reveal`].
    ///
    /// Relative paths in the file are resolved against the file's folder; the returned
    /// [`Job::path`] is absolute.
    ///
    /// # Errors
    ///
    /// [`JobError::Read`] when the file cannot be read; [`JobError::Invalid`] listing every
    /// problem found at once, each naming its key and, when the file has it, its line and column.
    pub fn load(path: &Path) -> Result<Job, JobError> {
        let file = job_file_path(path).map_err(|source| JobError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        let bytes = std::fs::read(&file).map_err(|source| JobError::Read {
            file: file.clone(),
            source,
        })?;
        let invalid = |problems| JobError::Invalid {
            file: file.clone(),
            problems,
        };
        let text = match std::str::from_utf8(&bytes) {
            Ok(text) => text.strip_prefix('\u{feff}').unwrap_or(text),
            Err(error) => {
                let valid = String::from_utf8_lossy(&bytes[..error.valid_up_to()]);
                let (line, column) = line_column(&valid, valid.len());
                return Err(invalid(vec![JobProblem {
                    key: None,
                    line: Some(line),
                    column: Some(column),
                    message: "the job file is not valid UTF-8".to_owned(),
                }]));
            }
        };
        let places = key_places(text);
        let raw: RawJob = toml::from_str(text).map_err(|error| {
            let span = error.span();
            let place = span.as_ref().map(|span| line_column(text, span.start));
            invalid(vec![JobProblem {
                key: span.and_then(|span| key_at(&places, &span)),
                line: place.map(|(line, _)| line),
                column: place.map(|(_, column)| column),
                message: humanize(error.message()),
            }])
        })?;
        let dir = file.parent().unwrap_or(Path::new("/"));
        let mut checker = Checker {
            text,
            places,
            dir,
            problems: Vec::new(),
        };
        let job = checker.job(raw, &file);
        let mut problems = checker.problems;
        match job {
            Some(job) if problems.is_empty() => Ok(job),
            _ => {
                problems.sort_by_key(|problem| problem.line.unwrap_or(usize::MAX));
                Err(invalid(problems))
            }
        }
    }
}

/// The commented job file that `mailferry init` writes. It loads as is (secrets are only read
/// when a connection is made).
#[must_use]
pub fn template() -> &'static str {
    TEMPLATE
}

const TEMPLATE: &str = r#"# mailferry job file: one migration, from a source server to a target server.
# Edit it, then run `mailferry check` on it. Editing this file later is how the job is
# reconfigured; mailferry keeps the state (entries, ledger) that still applies.
# Relative paths are relative to this file's folder.
# Secrets are never written in this file: a secret is { env = "VARIABLE" } or { file = "path" }.

name = "my-migration"

# Where the job's state (entries, ledger) is kept.
# Default: <this file's name>.db beside this file.
# state = "sqlite://my-migration.db"

# "cutover": migrate everything, switch over, refresh addresses, run a delta pass.
# "staged": mailboxes are assigned to stages and migrated stage by stage.
mode = "cutover"

[source]
kind = "imap"                            # imap | maildir (maildir: path = "dir", no other keys)
host = "mail.old.example"
# port = 993                             # default: 993 for tls, 143 for starttls and plain
security = "tls"                         # tls | starttls | plain
# allow_plain = true                     # required for security = "plain" (e.g. loopback)
# tls_ca = "source-ca.pem"               # extra trust anchor (a CA certificate)
# tls_verify = false                     # only for tests: accept any certificate
auth = "admin"                           # admin | per-mailbox (passwords from the CSV)
admin_user = "migration-admin"
admin_password = { env = "SOURCE_ADMIN_PASSWORD" }
admin_login = "sasl-authzid"             # sasl-authzid | master-separator
# master_separator = "*"                 # for master-separator: LOGIN mailbox*admin
max_connections = 10                     # at once to this server, across all mailboxes

[target]
kind = "imap"
host = "mail.new.example"
security = "tls"
auth = "admin"
admin_user = "migration-admin"
admin_password = { env = "TARGET_ADMIN_PASSWORD" }
# admin_password = { file = "target-admin.secret" }
max_connections = 10

[mailboxes]
# The mailboxes to migrate: columns Source ID, Source addresses, and optionally Source login,
# Source password, Target addresses, Target login, Target password, Stage.
csv = "mailboxes.csv"

[migration]
concurrency = 4                          # mailboxes migrated at once
include_folders = ["*"]                  # globs over source folder paths, '/'-separated
exclude_folders = []                     # e.g. ["Junk", "Trash"]
# since = "2020-01-01"                   # only messages received on or after this day
# until = "2026-01-01"                   # only messages received before this day
skip_deleted = true                      # messages flagged \Deleted are not copied
# folder_map = { "Old Archive" = "Archive/Old" }   # explicit folder renames
"#;

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `text` as `job.toml` in a fresh folder and loads it.
    fn load(text: &str) -> (tempfile::TempDir, Result<Job, JobError>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = real(&dir).join("job.toml");
        std::fs::write(&path, text).expect("write job");
        let job = Job::load(&path);
        (dir, job)
    }

    /// The tempdir's canonical path, as [`Job::load`] reports paths.
    fn real(dir: &tempfile::TempDir) -> PathBuf {
        std::fs::canonicalize(dir.path()).expect("canonical tempdir")
    }

    fn load_ok(text: &str) -> (tempfile::TempDir, Job) {
        let (dir, job) = load(text);
        match job {
            Ok(job) => (dir, job),
            Err(error) => panic!("expected a valid job, got: {error}"),
        }
    }

    fn problems(text: &str) -> Vec<JobProblem> {
        match load(text).1 {
            Ok(job) => panic!("expected an invalid job, got {job:?}"),
            Err(JobError::Invalid { problems, .. }) => problems,
            Err(other) => panic!("expected JobError::Invalid, got {other:?}"),
        }
    }

    /// The problems rendered as text, one per problem.
    fn problem_texts(text: &str) -> Vec<String> {
        problems(text).iter().map(ToString::to_string).collect()
    }

    const IMAP: &str = "kind = \"imap\"\nhost = \"mail.example\"\nauth = \"admin\"\n\
                        admin_user = \"admin\"\nadmin_password = { env = \"PW\" }\n";

    /// A valid job with the given extra source keys and extra trailing text.
    fn job_with(source_extra: &str, rest: &str) -> String {
        format!("name = \"t\"\n[source]\n{IMAP}{source_extra}\n[target]\n{IMAP}\n{rest}",)
    }

    fn imap(connection: &Connection) -> &ImapSettings {
        match &connection.kind {
            ConnectionKind::Imap(settings) => settings,
            ConnectionKind::Maildir { .. } => panic!("expected imap"),
        }
    }

    #[test]
    fn template_loads() {
        let (dir, job) = load_ok(template());
        assert_eq!(job.name, "my-migration");
        assert_eq!(job.mode, Mode::Cutover);
        assert_eq!(job.state, StateLocation::Sqlite(real(&dir).join("job.db")));
        assert_eq!(job.mailboxes_csv, Some(real(&dir).join("mailboxes.csv")));
        let source = imap(&job.source);
        assert_eq!(source.host, "mail.old.example");
        assert_eq!(
            source.auth,
            Auth::Admin {
                user: "migration-admin".into(),
                password: Secret::Env("SOURCE_ADMIN_PASSWORD".into()),
                login: AdminLogin::SaslAuthzid,
            }
        );
        assert_eq!(imap(&job.target).host, "mail.new.example");
        assert_eq!(job.migration, MigrationSettings::default());
    }

    #[test]
    fn minimal_job_gets_defaults() {
        let (dir, job) = load_ok(&job_with("", ""));
        assert_eq!(job.path, real(&dir).join("job.toml"));
        assert_eq!(job.mode, Mode::Cutover);
        assert_eq!(job.state, StateLocation::Sqlite(real(&dir).join("job.db")));
        assert_eq!(job.mailboxes_csv, None);
        let source = imap(&job.source);
        assert_eq!(source.port, 993);
        assert_eq!(source.security, Security::Tls);
        assert!(source.tls_verify);
        assert_eq!(source.tls_ca, None);
        assert_eq!(source.max_connections, 10);
        let migration = &job.migration;
        assert_eq!(migration.concurrency, 4);
        assert_eq!(migration.include_folders, vec!["*".to_owned()]);
        assert!(migration.exclude_folders.is_empty());
        assert!(migration.skip_deleted);
        assert_eq!(migration.since, None);
        assert!(migration.folder_map.is_empty());
    }

    #[test]
    fn default_ports_follow_security() {
        let (_dir, job) = load_ok(&job_with("security = \"starttls\"", ""));
        assert_eq!(imap(&job.source).port, 143);
        assert_eq!(imap(&job.source).security, Security::StartTls);
        let (_dir, job) = load_ok(&job_with("security = \"plain\"\nallow_plain = true", ""));
        assert_eq!(imap(&job.source).port, 143);
        assert_eq!(imap(&job.source).security, Security::Plain);
        let (_dir, job) = load_ok(&job_with("security = \"tls\"", ""));
        assert_eq!(imap(&job.source).port, 993);
        let (_dir, job) = load_ok(&job_with("security = \"tls\"\nport = 10993", ""));
        assert_eq!(imap(&job.source).port, 10993);
    }

    #[test]
    fn plain_requires_allow_plain() {
        let texts = problem_texts(&job_with("security = \"plain\"", ""));
        assert_eq!(
            texts,
            vec![
                "line 8, column 12: source.security: \"plain\" sends passwords and mail \
                 unencrypted; add allow_plain = true to confirm (e.g. for a server on the \
                 loopback interface)"
            ]
        );
        let texts = problem_texts(&job_with("security = \"plain\"\nallow_plain = false", ""));
        assert_eq!(texts.len(), 1);
        assert!(texts[0].contains("add allow_plain = true"));
    }

    #[test]
    fn plain_rejects_tls_keys() {
        let texts = problem_texts(&job_with(
            "security = \"plain\"\nallow_plain = true\ntls_ca = \"ca.pem\"\ntls_verify = true",
            "",
        ));
        assert_eq!(
            texts,
            vec![
                "line 10, column 10: source.tls_ca: not used with security = \"plain\"",
                "line 11, column 14: source.tls_verify: not used with security = \"plain\"",
            ]
        );
    }

    #[test]
    fn tls_verify_can_be_turned_off_explicitly() {
        let (_dir, job) = load_ok(&job_with("tls_verify = false", ""));
        assert!(!imap(&job.source).tls_verify);
        assert!(imap(&job.target).tls_verify);
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let texts = problem_texts(&format!("colour = \"blue\"\n{}", job_with("", "")));
        assert_eq!(
            texts.len(),
            1,
            "serde stops at the first unknown key: {texts:?}"
        );
        assert!(
            texts[0].starts_with(
                "line 1, column 1: colour: unknown field `colour`, expected one of `name`"
            ),
            "{}",
            texts[0]
        );

        let texts = problem_texts(&job_with("prot = 993", ""));
        assert!(
            texts[0].starts_with("line 8, column 1: source.prot: unknown field `prot`"),
            "{}",
            texts[0]
        );

        let texts = problem_texts(&job_with("", "[migration]\nconcurency = 2"));
        assert!(
            texts[0]
                .starts_with("line 17, column 1: migration.concurency: unknown field `concurency`"),
            "{}",
            texts[0]
        );
    }

    #[test]
    fn unknown_section_is_rejected_by_name() {
        let texts = problem_texts(&job_with("", "[source.extra]\nx = 1"));
        assert!(
            texts[0].starts_with("line 16, column 9: source.extra: unknown field `extra`"),
            "{}",
            texts[0]
        );
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let error = load("name = \"t\"\n[source]\nhost = \"unterminated\n")
            .1
            .unwrap_err();
        let JobError::Invalid { file, problems } = &error else {
            panic!("{error:?}");
        };
        assert!(file.ends_with("job.toml"));
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, Some(3));
        assert!(problems[0].column.is_some());
        let text = error.to_string();
        assert!(text.starts_with("invalid job file "), "{text}");
        assert!(text.contains("job.toml:\n  line 3, column "), "{text}");
    }

    #[test]
    fn wrong_type_names_key_in_plain_words() {
        let texts = problem_texts(&job_with("port = 99999", ""));
        assert_eq!(
            texts,
            vec![
                "line 8, column 8: source.port: invalid value: integer `99999`, expected a \
                 whole number from 0 to 65535"
            ]
        );
        let texts = problem_texts(&job_with("", "[migration]\nskip_deleted = \"yes\""));
        assert_eq!(
            texts,
            vec![
                "line 17, column 16: migration.skip_deleted: invalid type: string \"yes\", \
                 expected true or false"
            ]
        );
    }

    #[test]
    fn unknown_enum_value_lists_choices() {
        let texts = problem_texts(&job_with("security = \"ssl\"", ""));
        assert_eq!(
            texts,
            vec![
                "line 8, column 12: source.security: unknown variant `ssl`, expected one of \
                 `tls`, `starttls`, `plain`"
            ]
        );
    }

    #[test]
    fn secret_in_clear_is_rejected_without_echoing_it() {
        let text = "name = \"t\"\n[source]\nkind = \"imap\"\nhost = \"h\"\nauth = \"admin\"\n\
                    admin_user = \"a\"\nadmin_password = \"hunter2\"\n";
        let error = load(text).1.unwrap_err();
        let message = error.to_string();
        assert!(!message.contains("hunter2"), "{message}");
        let JobError::Invalid { problems, .. } = error else {
            panic!("{error:?}");
        };
        assert_eq!(
            problems[0].to_string(),
            "line 7, column 18: source.admin_password: a secret must be written as \
             { env = \"VARIABLE\" } or { file = \"path\" }; secrets are never written in the \
             job file"
        );

        let text = text.replace("\"hunter2\"", "123456");
        let message = load(&text).1.unwrap_err().to_string();
        assert!(!message.contains("123456"), "{message}");
        assert!(message.contains("source.admin_password: a secret must be written as"));
    }

    #[test]
    fn secret_with_both_env_and_file_is_rejected() {
        let text =
            job_with("", "").replacen("{ env = \"PW\" }", "{ env = \"PW\", file = \"pw.txt\" }", 1);
        let texts = problem_texts(&text);
        assert_eq!(texts.len(), 1);
        assert!(
            texts[0].ends_with(
                "source.admin_password: a secret is either { env = \"VARIABLE\" } or \
                 { file = \"path\" }, not both"
            ),
            "{}",
            texts[0]
        );
        let text = job_with("", "").replacen("{ env = \"PW\" }", "{ value = \"x\" }", 1);
        assert!(problem_texts(&text)[0].contains("source.admin_password: a secret must be"));
        let text = job_with("", "").replacen("{ env = \"PW\" }", "{}", 1);
        assert!(problem_texts(&text)[0].contains("source.admin_password: a secret must be"));
        let text = job_with("", "").replacen("{ env = \"PW\" }", "{ env = \"\" }", 1);
        assert!(
            problem_texts(&text)[0]
                .ends_with("source.admin_password: env must name an environment variable")
        );
    }

    #[test]
    fn secret_from_env_is_revealed() {
        // The environment is shared by parallel tests and changing it is unsafe: read a variable
        // that is set anyway, and check the other cases on `env_secret` directly.
        if let Ok(path) = std::env::var("PATH") {
            assert_eq!(Secret::Env("PATH".into()).reveal().unwrap(), path);
        }
        let missing = Secret::Env("MAILFERRY_JOB_TEST_SECRET_UNSET".into());
        assert_eq!(
            missing.reveal().unwrap_err().to_string(),
            "secret environment variable MAILFERRY_JOB_TEST_SECRET_UNSET is not set"
        );
        assert_eq!(env_secret("PW", Ok("s3cret".into())).unwrap(), "s3cret");
        assert_eq!(
            env_secret("PW", Ok(String::new())).unwrap_err().to_string(),
            "secret environment variable PW is empty"
        );
        let not_unicode = std::env::VarError::NotUnicode(std::ffi::OsString::new());
        assert_eq!(
            env_secret("PW", Err(not_unicode)).unwrap_err().to_string(),
            "secret environment variable PW is not valid UTF-8"
        );
    }

    #[test]
    fn secret_file_is_relative_to_job_file_and_trimmed_of_one_newline() {
        let text = job_with("", "").replacen("{ env = \"PW\" }", "{ file = \"pw.txt\" }", 1);
        let (dir, job) = load_ok(&text);
        let Auth::Admin { password, .. } = &imap(&job.source).auth else {
            panic!("admin auth expected");
        };
        let file = real(&dir).join("pw.txt");
        assert_eq!(password, &Secret::File(file.clone()));

        let error = password.reveal().unwrap_err();
        assert!(matches!(error, JobError::SecretFile { .. }));
        assert!(
            error
                .to_string()
                .starts_with(&format!("cannot read secret file {}: ", file.display())),
            "{error}"
        );

        std::fs::write(&file, "pass word\n\n").unwrap();
        assert_eq!(password.reveal().unwrap(), "pass word\n");
        std::fs::write(&file, "pw\r\n").unwrap();
        assert_eq!(password.reveal().unwrap(), "pw");
        std::fs::write(&file, "pw").unwrap();
        assert_eq!(password.reveal().unwrap(), "pw");
        std::fs::write(&file, "\n").unwrap();
        assert_eq!(
            password.reveal().unwrap_err().to_string(),
            format!("secret file {} is empty", file.display())
        );
    }

    #[test]
    fn secret_debug_shows_only_where_it_is() {
        let debug = format!("{:?}", Secret::Env("PW".into()));
        assert_eq!(debug, "Env(\"PW\")");
    }

    #[test]
    fn relative_paths_resolve_against_job_folder() {
        let text = format!(
            "state = \"sqlite://./state/x.db\"\n{}",
            job_with(
                "tls_ca = \"certs/ca.pem\"",
                "[mailboxes]\ncsv = \"boxes.csv\""
            )
        );
        let (dir, job) = load_ok(&text);
        let dir = real(&dir);
        assert_eq!(
            job.state,
            StateLocation::Sqlite(dir.join("state").join("x.db"))
        );
        assert_eq!(job.mailboxes_csv, Some(dir.join("boxes.csv")));
        assert_eq!(
            imap(&job.source).tls_ca,
            Some(dir.join("certs").join("ca.pem"))
        );
    }

    #[test]
    fn relative_job_path_becomes_absolute() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rel.toml"), job_with("", "")).unwrap();
        // A path relative to the current directory, which tests must not change (they share
        // it): climb to the root with `..`, then down to the file.
        let cwd = std::env::current_dir().unwrap();
        let relative: PathBuf = std::iter::repeat_n("..", cwd.components().count())
            .collect::<PathBuf>()
            .join(dir.path().strip_prefix("/").unwrap())
            .join("rel.toml");
        let job = Job::load(&relative).unwrap();
        assert_eq!(job.path, real(&dir).join("rel.toml"));
        assert_eq!(job.state, StateLocation::Sqlite(real(&dir).join("rel.db")));
    }

    #[test]
    fn absolute_paths_are_kept() {
        let text = format!(
            "state = \"sqlite:///var/lib/x.db\"\n{}",
            job_with("", "[mailboxes]\ncsv = \"/srv/boxes.csv\"")
        );
        let (_dir, job) = load_ok(&text);
        assert_eq!(job.state, StateLocation::Sqlite("/var/lib/x.db".into()));
        assert_eq!(job.mailboxes_csv, Some("/srv/boxes.csv".into()));
    }

    #[test]
    fn state_without_scheme_is_a_sqlite_file() {
        let text = format!("state = \"s.db\"\n{}", job_with("", ""));
        let (dir, job) = load_ok(&text);
        assert_eq!(job.state, StateLocation::Sqlite(real(&dir).join("s.db")));
    }

    #[test]
    fn postgres_state_is_not_supported_yet() {
        let text = format!(
            "state = \"postgres://db.example/jobs\"\n{}",
            job_with("", "")
        );
        assert_eq!(
            problem_texts(&text),
            vec!["line 1, column 9: state: postgres state is not supported yet"]
        );
    }

    #[test]
    fn unknown_state_scheme_is_rejected() {
        let text = format!("state = \"mysql://db\"\n{}", job_with("", ""));
        assert_eq!(
            problem_texts(&text),
            vec![
                "line 1, column 9: state: unknown database type `mysql`; use \
                 \"sqlite://FILE\" or \"postgres://…\""
            ]
        );
    }

    #[test]
    fn directories_and_creation_are_read_with_defaults() {
        let text = job_with(
            "",
            "[source.directory]\nkind = \"ldap\"\nurl = \"ldap://dc.old.example\"\n\
             bind_dn = \"cn=reader,dc=old\"\nbind_password = { env = \"LDAP_PW\" }\n\
             base = \"ou=people,dc=old\"\nalias_attribute = \"mailLocalAddress\"\n\
             [target.directory]\nkind = \"ldap\"\nurl = \"ldaps://dc.new.example\"\n\
             bind_dn = \"cn=admin,dc=new\"\nbind_password = { file = \"pw\" }\n\
             base = \"ou=people,dc=new\"\nid_attribute = \"objectGUID\"\n\
             [target.create]\nbase = \"ou=people,dc=new\"\ndomain = \"New.Example\"\n",
        );
        let (_dir, job) = load_ok(&text);
        let d = job.source.directory.expect("source directory");
        assert_eq!(d.security, DirectorySecurity::StartTls);
        assert_eq!(d.filter, "(objectClass=*)");
        assert_eq!(
            (
                d.id_attribute.as_str(),
                d.login_attribute.as_str(),
                d.primary_address_attribute.as_str()
            ),
            ("entryUUID", "uid", "mail")
        );
        assert_eq!(d.alias_attribute.as_deref(), Some("mailLocalAddress"));
        let t = job.target.directory.expect("target directory");
        assert_eq!(t.security, DirectorySecurity::Tls);
        assert_eq!(t.id_attribute, "objectGUID");
        let c = job.target.create.expect("create");
        assert_eq!(c.domain, "new.example");
        assert_eq!(c.object_classes, vec!["inetOrgPerson".to_string()]);
    }

    #[test]
    fn bad_directory_settings_name_their_keys() {
        let text = job_with(
            "",
            "[source.directory]\nkind = \"ad\"\nurl = \"http://dc\"\nbase = \"dc=x\"\n\
             filter = \"objectClass=*\"\n[target.create]\ndomain = \"x\"\n",
        );
        let texts = problem_texts(&text);
        for expected in [
            "source.directory.kind: unknown kind `ad`",
            "source.directory.url: must start with ldap:// or ldaps://",
            "source.directory.bind_dn: missing",
            "source.directory.bind_password: missing",
            "source.directory.filter: an LDAP filter is written in parentheses",
            "target.create: mailbox creation writes to the target directory",
            "target.create.base: missing",
            "target.create.domain: must be a domain name",
        ] {
            assert!(
                texts.iter().any(|t| t.contains(expected)),
                "{expected} not in {texts:#?}"
            );
        }
    }

    #[test]
    fn directory_section_still_rejects_unknown_keys() {
        let texts = problem_texts(&job_with("", "[source.directory]\nbindpw = 1"));
        assert!(
            texts[0]
                .starts_with("line 17, column 1: source.directory.bindpw: unknown field `bindpw`"),
            "{}",
            texts[0]
        );
    }

    #[test]
    fn source_create_is_rejected() {
        let texts = problem_texts(&job_with("", "[source.create]\ndomain = \"x\""));
        assert_eq!(
            texts,
            vec![
                "line 16, column 1: source.create: mailbox creation is a setting of the \
                 target only ([target.create])"
            ]
        );
    }

    #[test]
    fn master_separator_login() {
        let (_dir, job) = load_ok(&job_with("admin_login = \"master-separator\"", ""));
        let Auth::Admin { login, .. } = &imap(&job.source).auth else {
            panic!()
        };
        assert_eq!(login, &AdminLogin::MasterSeparator("*".into()));

        let (_dir, job) = load_ok(&job_with(
            "admin_login = \"master-separator\"\nmaster_separator = \"%\"",
            "",
        ));
        let Auth::Admin { login, .. } = &imap(&job.source).auth else {
            panic!()
        };
        assert_eq!(login, &AdminLogin::MasterSeparator("%".into()));

        assert_eq!(
            problem_texts(&job_with("master_separator = \"%\"", "")),
            vec![
                "line 8, column 20: source.master_separator: only used with admin_login = \
                 \"master-separator\""
            ]
        );
        assert_eq!(
            problem_texts(&job_with(
                "admin_login = \"master-separator\"\nmaster_separator = \"\"",
                ""
            )),
            vec![
                "line 9, column 20: source.master_separator: must be one or more characters, \
                 without spaces"
            ]
        );
    }

    #[test]
    fn per_mailbox_auth() {
        let text = "name = \"t\"\n[source]\nkind = \"imap\"\nhost = \"h\"\nauth = \"per-mailbox\"\n\
                    [target]\nkind = \"imap\"\nhost = \"h2\"\nauth = \"per-mailbox\"\n\
                    admin_user = \"a\"\n";
        assert_eq!(
            problem_texts(text),
            vec![
                "line 10, column 14: target.admin_user: not used with auth = \"per-mailbox\"; \
                 remove it"
            ]
        );
        let (_dir, job) = load_ok(text.trim_end_matches("admin_user = \"a\"\n"));
        assert_eq!(imap(&job.source).auth, Auth::PerMailbox);
        assert_eq!(imap(&job.target).auth, Auth::PerMailbox);
    }

    #[test]
    fn admin_auth_needs_user_and_password() {
        let text = "name = \"t\"\n[source]\nkind = \"imap\"\nhost = \"h\"\nauth = \"admin\"\n\
                    [target]\nkind = \"imap\"\nhost = \"h2\"\nauth = \"per-mailbox\"\n";
        assert_eq!(
            problem_texts(text),
            vec![
                "source.admin_user: missing: the administrator's login (auth = \"admin\")",
                "source.admin_password: missing: { env = \"VARIABLE\" } or { file = \"path\" }",
            ]
        );
    }

    #[test]
    fn imap_needs_host_and_auth() {
        let text = "name = \"t\"\n[source]\nkind = \"imap\"\n[target]\nkind = \"imap\"\nhost = \" \"\nauth = \"per-mailbox\"\n";
        assert_eq!(
            problem_texts(text),
            vec![
                "line 6, column 8: target.host: must not be empty",
                "source.host: missing: the IMAP server's host name",
                "source.auth: missing: \"admin\" or \"per-mailbox\"",
            ]
        );
    }

    #[test]
    fn host_must_be_a_plain_host_name() {
        let with_host = |host: &str| job_with("", "").replacen("mail.example", host, 1);
        assert!(
            problem_texts(&with_host("imaps://mail.example"))[0].ends_with(
                "source.host: write the host name only; the port and security have their own keys"
            )
        );
        assert!(
            problem_texts(&with_host("mail.example:993"))[0]
                .ends_with("source.host: write the port in `port`, not in the host name")
        );
        assert!(
            problem_texts(&with_host("mail example"))[0]
                .ends_with("source.host: a host name has no spaces")
        );
        let (_dir, job) = load_ok(&with_host("::1"));
        assert_eq!(imap(&job.source).host, "::1");
    }

    #[test]
    fn port_zero_is_rejected() {
        assert_eq!(
            problem_texts(&job_with("port = 0", "")),
            vec!["line 8, column 8: source.port: must be from 1 to 65535"]
        );
    }

    #[test]
    fn maildir_connection() {
        let text = "name = \"t\"\n[source]\nkind = \"maildir\"\npath = \"export\"\n\
                    [target]\nkind = \"maildir\"\npath = \"/srv/mail\"\n";
        let (dir, job) = load_ok(text);
        assert_eq!(
            job.source.kind,
            ConnectionKind::Maildir {
                root: real(&dir).join("export")
            }
        );
        assert_eq!(
            job.target.kind,
            ConnectionKind::Maildir {
                root: "/srv/mail".into()
            }
        );
    }

    #[test]
    fn maildir_rejects_imap_keys_and_needs_path() {
        let text = "name = \"t\"\n[source]\nkind = \"maildir\"\nhost = \"h\"\nport = 993\n\
                    [target]\nkind = \"maildir\"\npath = \"m\"\n";
        assert_eq!(
            problem_texts(text),
            vec![
                "line 4, column 8: source.host: not used with kind = \"maildir\"; remove it",
                "line 5, column 8: source.port: not used with kind = \"maildir\"; remove it",
                "source.path: missing: the directory holding one Maildir++ tree per mailbox login",
            ]
        );
        let text = job_with("path = \"x\"", "");
        assert_eq!(
            problem_texts(&text),
            vec!["line 8, column 8: source.path: not used with kind = \"imap\"; remove it"]
        );
    }

    #[test]
    fn missing_sections_and_keys() {
        assert_eq!(
            problem_texts("[source]\nhost = \"h\"\n"),
            vec![
                "name: missing: a short name for the job",
                "source.kind: missing: \"imap\" or \"maildir\"",
                "target: the [target] section is missing",
            ]
        );
    }

    #[test]
    fn counts_must_be_at_least_one() {
        assert_eq!(
            problem_texts(&job_with(
                "max_connections = 0",
                "[migration]\nconcurrency = 0"
            )),
            vec![
                "line 8, column 19: source.max_connections: must be at least 1",
                "line 17, column 15: migration.concurrency: must be at least 1",
            ]
        );
        let texts = problem_texts(&job_with("max_connections = -1", ""));
        assert_eq!(
            texts,
            vec![
                "line 8, column 19: source.max_connections: invalid value: integer `-1`, \
                 expected a whole number, 0 or more"
            ]
        );
    }

    #[test]
    fn migration_settings() {
        let text = format!(
            "mode = \"staged\"\n{}",
            job_with(
                "",
                "[migration]\nconcurrency = 2\ninclude_folders = [\"INBOX\", \"Projects/*\"]\n\
                 exclude_folders = [\"Junk\"]\nsince = \"2020-01-01\"\nuntil = 2026-02-28\n\
                 skip_deleted = false\nfolder_map = { \"Old Archive\" = \"Archive/Old\" }\n"
            )
        );
        let (_dir, job) = load_ok(&text);
        assert_eq!(job.mode, Mode::Staged);
        let m = &job.migration;
        assert_eq!(m.concurrency, 2);
        assert_eq!(m.include_folders, vec!["INBOX", "Projects/*"]);
        assert_eq!(m.exclude_folders, vec!["Junk"]);
        assert_eq!(
            m.since,
            Some(Date {
                year: 2020,
                month: 1,
                day: 1
            })
        );
        assert_eq!(
            m.until,
            Some(Date {
                year: 2026,
                month: 2,
                day: 28
            })
        );
        assert!(!m.skip_deleted);
        assert_eq!(
            m.folder_map.get("Old Archive").map(String::as_str),
            Some("Archive/Old")
        );
    }

    #[test]
    fn error_inside_quoted_key_names_the_full_key() {
        let texts = problem_texts(&job_with("", "[migration.folder_map]\n\"Old.Archive\" = 5"));
        assert_eq!(
            texts,
            vec![
                "line 17, column 17: migration.folder_map.Old.Archive: invalid type: integer \
                 `5`, expected a string"
            ]
        );
    }

    #[test]
    fn bad_folder_lists_are_rejected() {
        assert_eq!(
            problem_texts(&job_with(
                "",
                "[migration]\ninclude_folders = []\nexclude_folders = [\"\"]"
            )),
            vec![
                "line 17, column 19: migration.include_folders: an empty list would migrate \
                 nothing; leave it out to migrate every folder",
                "line 18, column 19: migration.exclude_folders: a folder pattern must not be empty",
            ]
        );
    }

    #[test]
    fn bad_dates_are_rejected() {
        let texts = problem_texts(&job_with(
            "",
            "[migration]\nsince = \"2021-02-29\"\nuntil = \"01/02/2020\"",
        ));
        assert_eq!(
            texts,
            vec![
                "line 17, column 9: migration.since: 2021-02-29 is not a calendar date",
                "line 18, column 9: migration.until: expected a date written YYYY-MM-DD, such \
                 as 2020-01-31",
            ]
        );
        let texts = problem_texts(&job_with("", "[migration]\nsince = 2020-01-01T10:00:00"));
        assert_eq!(
            texts,
            vec![
                "line 17, column 9: migration.since: expected a date written YYYY-MM-DD, such \
                 as 2020-01-31"
            ]
        );
    }

    #[test]
    fn since_must_not_be_after_until() {
        assert_eq!(
            problem_texts(&job_with(
                "",
                "[migration]\nsince = \"2024-05-02\"\nuntil = \"2024-05-01\""
            )),
            vec!["line 18, column 9: migration.until: 2024-05-01 is before since = 2024-05-02"]
        );
        let (_dir, job) = load_ok(&job_with(
            "",
            "[migration]\nsince = \"2024-05-01\"\nuntil = \"2024-05-01\"",
        ));
        assert_eq!(job.migration.since, job.migration.until);
    }

    #[test]
    fn several_problems_are_reported_together() {
        let text = "name = \"\"\n[source]\nkind = \"imap\"\nhost = \"h\"\nsecurity = \"plain\"\n\
                    auth = \"per-mailbox\"\nmax_connections = 0\n\
                    [target]\nkind = \"maildir\"\n[migration]\nconcurrency = 0\n";
        let error = load(text).1.unwrap_err();
        let JobError::Invalid { file, problems } = &error else {
            panic!("{error:?}")
        };
        let keys: Vec<_> = problems.iter().filter_map(|p| p.key.as_deref()).collect();
        assert_eq!(
            keys,
            vec![
                "name",
                "source.security",
                "source.max_connections",
                "migration.concurrency",
                "target.path",
            ]
        );
        let display = error.to_string();
        let mut lines = display.lines();
        assert_eq!(
            lines.next(),
            Some(format!("invalid job file {}:", file.display()).as_str())
        );
        assert_eq!(lines.count(), 5);
    }

    #[test]
    fn unreadable_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = real(&dir).join("nope.toml");
        let error = Job::load(&path).unwrap_err();
        assert!(matches!(error, JobError::Read { .. }));
        assert!(
            error
                .to_string()
                .starts_with(&format!("cannot read job file {}: ", path.display())),
            "{error}"
        );
    }

    #[test]
    fn invalid_utf8_is_reported_with_its_line() {
        let mut bytes = job_with("", "").into_bytes();
        bytes.extend_from_slice(b"# caf\xe9\n");
        let dir = tempfile::tempdir().unwrap();
        let path = real(&dir).join("job.toml");
        std::fs::write(&path, bytes).unwrap();
        let error = Job::load(&path).unwrap_err();
        let text = error.to_string();
        assert!(
            text.ends_with("line 16, column 6: the job file is not valid UTF-8"),
            "{text}"
        );
    }

    #[test]
    fn byte_order_mark_is_accepted() {
        let (_dir, job) = load_ok(&format!("\u{feff}{}", job_with("", "")));
        assert_eq!(job.name, "t");
    }

    #[test]
    fn name_is_trimmed() {
        let (_dir, job) = load_ok(&job_with("", "").replacen("\"t\"", "\" contoso \"", 1));
        assert_eq!(job.name, "contoso");
    }

    #[test]
    fn dates_parse_and_format() {
        let date: Date = "2020-01-01".parse().unwrap();
        assert_eq!(
            date,
            Date {
                year: 2020,
                month: 1,
                day: 1
            }
        );
        assert_eq!(date.imap_format(), "1-Jan-2020");
        assert_eq!(date.to_string(), "2020-01-01");
        let date: Date = "2024-12-25".parse().unwrap();
        assert_eq!(date.imap_format(), "25-Dec-2024");
        assert!("2024-02-29".parse::<Date>().is_ok());
        assert!("2000-02-29".parse::<Date>().is_ok());
        assert_eq!(
            "1900-02-29".parse::<Date>(),
            Err(DateError::NoSuchDay {
                year: 1900,
                month: 2,
                day: 29
            })
        );
        assert!("2023-02-29".parse::<Date>().is_err());
        assert!("2023-04-31".parse::<Date>().is_err());
        assert!("2023-13-01".parse::<Date>().is_err());
        assert!("2023-00-10".parse::<Date>().is_err());
        assert!("2023-01-00".parse::<Date>().is_err());
        assert!("0000-01-01".parse::<Date>().is_err());
        for bad in [
            "2023-1-01",
            "2023/01/01",
            "20230101",
            "2023-01-01 ",
            "+023-01-01",
            "2023-01-+1",
            "",
        ] {
            assert_eq!(bad.parse::<Date>(), Err(DateError::Format), "{bad:?}");
        }
        assert!(Date::new(2020, 1, 1).unwrap() < Date::new(2020, 1, 2).unwrap());
        assert!(Date::new(2019, 12, 31).unwrap() < Date::new(2020, 1, 1).unwrap());
    }
}
