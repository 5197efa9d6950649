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

mod check;
mod date;
mod error;
mod pin;
mod raw;
mod secret;
mod spans;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use date::{Date, DateError};
pub use error::{JobError, JobProblem};
pub use pin::CertificatePin;
pub use secret::Secret;

use crate::profile::ProfileSettings;

use check::Checker;
use raw::RawJob;
use spans::{humanize, key_at, key_places, line_column};

/// Default IMAP port with implicit TLS (`security = "tls"`).
pub const IMAP_TLS_PORT: u16 = 993;
/// Default IMAP port for `security = "starttls"` and `security = "plain"`.
pub const IMAP_PORT: u16 = 143;
/// Default `max_connections` of an IMAP connection.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10;
/// Default `migration.concurrency`.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Default `migration.lease_seconds`.
pub const DEFAULT_LEASE_SECONDS: u64 = 30;
/// The range `migration.lease_seconds` must be in: a shorter lease would expire under a busy
/// database's normal delays; a longer one only delays the take-over of a dead process's work.
pub const LEASE_SECONDS_RANGE: std::ops::RangeInclusive<u64> = 5..=3600;
/// Default `master_separator` for `admin_login = "master-separator"`.
pub const DEFAULT_MASTER_SEPARATOR: &str = "*";

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
    /// The PostgreSQL state's password (`state_password = { env | file }`); without it the
    /// environment's `MAILFERRY_STATE_PASSWORD` or the standard `~/.pgpass` is used.
    pub state_password: Option<Secret>,
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

impl Job {
    /// Where reports are written: `reports/` beside the job file.
    pub fn reports_dir(&self) -> PathBuf {
        self.path.parent().unwrap_or(Path::new(".")).join("reports")
    }

    /// The SHA-256 of the job file as it is now (lower-case hex), to notice an edited job.
    pub fn file_sha256(&self) -> std::io::Result<String> {
        use sha2::Digest;
        let bytes = std::fs::read(&self.path)?;
        let digest = sha2::Sha256::digest(&bytes);
        Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// Where a job's state database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateLocation {
    /// A `SQLite` database file (absolute path).
    Sqlite(PathBuf),
    /// A `PostgreSQL` URL (`postgres://USER@HOST:PORT/DB?sslmode=…`), for processes on several
    /// machines sharing a job; its password is never in the URL.
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
    pub directory: Option<DirectoryKind>,
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
    /// `tls_pin_sha256`: when not empty, exactly the certificates with these fingerprints are
    /// accepted (and `tls_ca` is not used).
    pub tls_pin_sha256: Vec<CertificatePin>,
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
            tls_pin_sha256: self.tls_pin_sha256.clone(),
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
            .field("tls_pin_sha256", &self.tls_pin_sha256)
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

/// A side's directory (`[side.directory]`): LDAP / Active Directory, or Entra ID through
/// Microsoft Graph.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // one per side, read often: LDAP stays unboxed
pub enum DirectoryKind {
    /// `kind = "ldap"`.
    Ldap(DirectoryConfig),
    /// `kind = "graph"`.
    Graph(Box<GraphConfig>),
}

impl DirectoryKind {
    /// The directory's URL, for messages: the LDAP URL or the Graph URL.
    pub fn url(&self) -> &str {
        match self {
            DirectoryKind::Ldap(l) => &l.url,
            DirectoryKind::Graph(g) => &g.graph_url,
        }
    }

    /// The LDAP settings, if this is an LDAP directory.
    pub fn as_ldap(&self) -> Option<&DirectoryConfig> {
        match self {
            DirectoryKind::Ldap(l) => Some(l),
            DirectoryKind::Graph(_) => None,
        }
    }

    /// The Graph settings, if this is Entra ID through Microsoft Graph.
    pub fn as_graph(&self) -> Option<&GraphConfig> {
        match self {
            DirectoryKind::Graph(g) => Some(g),
            DirectoryKind::Ldap(_) => None,
        }
    }
}

/// Microsoft Graph's v1.0 endpoint (the default `graph_url`).
pub const GRAPH_URL: &str = "https://graph.microsoft.com/v1.0";
/// The scope of a Graph token (client credentials: the application permissions consented).
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
/// Default `[target.create] mailbox_wait_seconds` for a Graph target.
pub const DEFAULT_MAILBOX_WAIT_SECONDS: u64 = 600;

/// Entra ID through Microsoft Graph (`kind = "graph"`). No secret is held here: the
/// application's credential is a [`Secret`] reference inside [`GraphConfig::oauth2`], read
/// when the directory is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphConfig {
    /// `graph_url`, without a trailing slash (default [`GRAPH_URL`]).
    pub graph_url: String,
    /// An extra trust anchor (PEM CA certificates) for `graph_url`'s HTTPS.
    pub tls_ca: Option<PathBuf>,
    /// The application's client credentials, scope [`GRAPH_SCOPE`] unless written.
    pub oauth2: OAuth2Config,
    /// Where [`GraphConfig::oauth2`] was written, for messages: `target.directory.oauth2`,
    /// or `target.oauth2` when the connection's application is reused.
    pub oauth2_key: String,
    /// OData `$filter` of the users that are mailboxes; `None` lists every user.
    pub filter: Option<String>,
    /// Creation in this directory (`[target.create]` of a Graph target).
    pub create: Option<GraphCreate>,
}

/// What creating a mailbox in Entra ID needs besides the address (`[target.create]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphCreate {
    /// The licence (`skuId`) assigned so that Exchange Online provisions a mailbox.
    pub license_sku: String,
    /// `usageLocation` (two-letter country code), required for a licence.
    pub usage_location: String,
    /// How long to wait for the new mailbox to answer (0: do not wait).
    pub mailbox_wait_seconds: u64,
}

/// Mailbox creation in the target directory (SPEC §3 `[target.create]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateConfig {
    /// Where new entries go (LDAP; empty for a Graph target, whose users have no place).
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
    /// `tls_pin_sha256`: when not empty, exactly the certificates with these fingerprints are
    /// accepted (and `tls_ca` is not used).
    pub tls_pin_sha256: Vec<CertificatePin>,
    /// How mailferry logs in.
    pub auth: Auth,
    /// Most connections opened to this server at once, across all mailboxes (at least 1):
    /// the job file's value, or the named profile's default, or [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// `max_connections_per_mailbox`: most connections to one mailbox of this server at once,
    /// by every process of the job together (at least 1); `None`: only `max_connections`.
    pub max_connections_per_mailbox: Option<usize>,
    /// `profile` and the limits the job file overrides (see [`crate::profile`]).
    pub profile: ProfileSettings,
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
    /// An OAuth2 access token of an application (`auth = "oauth2"` with `[side.oauth2]`),
    /// given to the server with SASL XOAUTH2 or OAUTHBEARER as each mailbox's login.
    OAuth2(Box<OAuth2Config>),
}

/// Default scope of `flow = "client-credentials"`: Exchange Online.
pub const EXCHANGE_ONLINE_SCOPE: &str = "https://outlook.office365.com/.default";
/// Default scope of `flow = "service-account"`: Gmail (IMAP).
pub const GMAIL_SCOPE: &str = "https://mail.google.com/";
/// Google's token endpoint, when a service account's key has no `token_uri`.
pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

/// Entra ID's v2.0 token endpoint of a tenant (the default `token_url` of
/// `flow = "client-credentials"`).
#[must_use]
pub fn entra_token_url(tenant: &str) -> String {
    format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token")
}

/// `[side.oauth2]`: how an application gets its access tokens. No secret is held here: the
/// client secret, the private key and the service account's key are [`Secret`] references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth2Config {
    /// The grant.
    pub flow: OAuth2Flow,
    /// The token endpoint; `None` only for a service account whose key names it
    /// (`token_uri`, else [`GOOGLE_TOKEN_URL`]).
    pub token_url: Option<String>,
    /// The scope asked for.
    pub scope: String,
    /// The SASL mechanism the IMAP server is given the token with.
    pub mechanism: OAuth2Mechanism,
    /// An extra trust anchor (PEM CA certificates) for the token endpoint's HTTPS.
    pub tls_ca: Option<PathBuf>,
}

/// The OAuth2 grants mailferry uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OAuth2Flow {
    /// `client_credentials` (RFC 6749 §4.4): one application token for every mailbox
    /// (Entra ID / Exchange Online).
    ClientCredentials {
        /// The directory (tenant) ID or domain, when given.
        tenant: Option<String>,
        /// The application (client) ID.
        client_id: String,
        /// How the application proves itself.
        credential: ClientCredential,
    },
    /// Google's service account with domain-wide delegation: a JWT bearer grant (RFC 7523)
    /// per mailbox, with `sub` = the mailbox.
    ServiceAccount {
        /// The service account's JSON key.
        key: Secret,
    },
}

/// How a client-credentials application authenticates to the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCredential {
    /// `client_secret`.
    Secret(Secret),
    /// A JWT client assertion signed with the certificate's private key (RS256).
    Certificate {
        /// The certificate (PEM), whose thumbprint names the key to the identity provider.
        certificate: PathBuf,
        /// The RSA private key (PEM, PKCS#8 or PKCS#1).
        key: Secret,
    },
}

/// SASL mechanism for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OAuth2Mechanism {
    /// Google's and Microsoft's `XOAUTH2` (the default).
    #[default]
    XOAuth2,
    /// RFC 7628 `OAUTHBEARER`.
    OAuthBearer,
}

/// How an administrator logs in as a given mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminLogin {
    /// `AUTHENTICATE PLAIN` with the mailbox as authorization identity (the default).
    SaslAuthzid,
    /// `LOGIN mailbox<separator>admin`, as Dovecot master users do.
    MasterSeparator(String),
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
    /// How long a process's claim on an entry's pass lasts without renewal before another
    /// process may take it over (default 30, from 5 to 3600).
    pub lease_seconds: u64,
    /// Timeouts and retries (`io_timeout_seconds`, `retry_*`).
    pub network: NetworkSettings,
}

impl MigrationSettings {
    /// How long a lease lasts without renewal; also how long a worker may miss its
    /// heartbeat before it is shown as gone, and how long the PostgreSQL store keeps trying
    /// to reconnect.
    pub fn lease(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lease_seconds)
    }

    /// How often held leases are renewed: a third of the lease (at least a second), so that
    /// two renewals in a row may fail before the lease expires.
    pub fn renew_every(&self) -> std::time::Duration {
        (self.lease() / 3).max(std::time::Duration::from_secs(1))
    }
}

/// How long a server may keep mailferry waiting, and how failed attempts are retried
/// (`[migration]` `io_timeout_seconds`, `retry_first_delay_seconds`, `retry_max_delay_seconds`,
/// `retries_without_progress`; README, "Failures").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSettings {
    /// How long an IMAP connect, read or write may wait (default 60 s). The environment
    /// variable `MAILFERRY_IO_TIMEOUT_SECONDS`, when set, overrides it.
    pub io_timeout: Duration,
    /// The first wait before a failed attempt is tried again (default 1 s); it doubles after
    /// each attempt without progress.
    pub retry_first_delay: Duration,
    /// The longest wait between two attempts (default 60 s).
    pub retry_max_delay: Duration,
    /// How many retries in a row without progress an entry gets before it fails (default 4).
    pub retries_without_progress: u32,
}

/// Default of `io_timeout_seconds`.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of `retry_first_delay_seconds`.
pub const DEFAULT_RETRY_FIRST_DELAY: Duration = Duration::from_secs(1);
/// Default of `retry_max_delay_seconds`.
pub const DEFAULT_RETRY_MAX_DELAY: Duration = Duration::from_secs(60);
/// Default of `retries_without_progress`.
pub const DEFAULT_RETRIES_WITHOUT_PROGRESS: u32 = 4;

impl Default for NetworkSettings {
    fn default() -> Self {
        NetworkSettings {
            io_timeout: DEFAULT_IO_TIMEOUT,
            retry_first_delay: DEFAULT_RETRY_FIRST_DELAY,
            retry_max_delay: DEFAULT_RETRY_MAX_DELAY,
            retries_without_progress: DEFAULT_RETRIES_WITHOUT_PROGRESS,
        }
    }
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
            lease_seconds: DEFAULT_LEASE_SECONDS,
            network: NetworkSettings::default(),
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
        match std::str::from_utf8(&bytes) {
            Ok(text) => validate(file, text),
            Err(error) => {
                let valid = String::from_utf8_lossy(&bytes[..error.valid_up_to()]);
                let (line, column) = line_column(&valid, valid.len());
                Err(JobError::Invalid {
                    file,
                    problems: vec![JobProblem {
                        key: None,
                        line: Some(line),
                        column: Some(column),
                        message: "the job file is not valid UTF-8".to_owned(),
                    }],
                })
            }
        }
    }

    /// Validates `text` exactly as [`Job::load`] would if it were the content of the job file
    /// at `path`: relative paths resolve against `path`'s folder, errors name `path`. Reads
    /// neither `path` nor any secret; `path`'s folder must exist.
    ///
    /// This is how an edit of the job file (a form of the web console) is checked before it is
    /// written: the edited text must pass the very checks that a hand edit meets on the next
    /// command.
    ///
    /// # Errors
    ///
    /// As [`Job::load`], without [`JobError::Read`] for the file itself.
    pub fn parse(path: &Path, text: &str) -> Result<Job, JobError> {
        let file = job_file_path(path).map_err(|source| JobError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        validate(file, text)
    }
}

/// Both stages over the text of the job file `file` (absolute, its folder canonical).
fn validate(file: PathBuf, text: &str) -> Result<Job, JobError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let invalid = |problems| JobError::Invalid {
        file: file.clone(),
        problems,
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

/// The commented job file that `mailferry init` writes. It loads as is (secrets are only read
/// when a connection is made).
#[must_use]
pub fn template() -> &'static str {
    TEMPLATE
}

/// The template's text, kept in `template.toml` beside this file.
const TEMPLATE: &str = include_str!("template.toml");
