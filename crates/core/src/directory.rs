//! Where mailbox identities come from: an LDAP directory (OpenLDAP, 389-DS, Active Directory).
//!
//! mailferry never identifies a mailbox by its email address, because addresses are exactly
//! what changes during a migration (a domain switch, a renamed user). Each mailbox is keyed by
//! the directory's stable ID instead — `entryUUID`, or Active Directory's binary `objectGUID`
//! written as a GUID string — and its login and addresses are read from the directory. This
//! module is the only place that speaks LDAP:
//!
//! - `discover` lists the source mailboxes with [`Directory::list`] /
//!   [`Directory::list_with_warnings`];
//! - matching finds target mailboxes with [`Directory::find_by_address`];
//! - creation adds an entry with [`Directory::add_mailbox`];
//! - Refresh email addresses looks each mailbox up again by its ID with [`Directory::lookup`].
//!
//! Every listing is paged (RFC 2696, [`PAGE_SIZE`] entries a page): directories cap what an
//! unpaged search returns (OpenLDAP's default `sizelimit` is 500, Active Directory's
//! `MaxPageSize` 1,000), and an organisation has more mailboxes than that.
//!
//! The connection is ldap3's blocking [`LdapConn`]. TLS (StartTLS or `ldaps://`) is rustls with
//! the *ring* provider, always verified, against the system's trust anchors plus the job's
//! `tls_ca`; the configuration is built here with an explicit provider, so no process-wide
//! default provider is needed or installed. Errors carry the directory URL and the server's own
//! words (result code name, number and diagnostic text), so `check` can show them as they are.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{LdapConn, LdapConnSettings, LdapError, LdapResult, Scope, SearchEntry, ldap_escape};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::job::{DirectoryConfig, DirectorySecurity};

/// How long connecting (TCP, StartTLS and the TLS handshake together) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the server may stay silent during an operation (reset by every search entry).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(120);
/// Entries per page of a paged search (RFC 2696 simple paged results).
pub const PAGE_SIZE: i32 = 500;

/// Where and how to read mailbox identities: a job's `[…directory]` table with its bind
/// password read.
pub type DirectorySettings = DirectoryConfig<String>;

/// One mailbox as the directory describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DirEntry {
    /// The stable mailbox ID (`entryUUID`, or `objectGUID` as a lowercase GUID string).
    pub id: String,
    /// The entry's distinguished name.
    pub dn: String,
    /// The login attribute's (first) value.
    pub login: String,
    /// Primary address first, then the aliases; never empty. Deduplicated ignoring case;
    /// domains are lower-cased, local parts kept as the directory has them.
    pub addresses: Vec<String>,
    /// The display name attribute's (first) value, if configured and present.
    pub display_name: Option<String>,
}

/// A mailbox to create in the target directory (see [`Directory::add_mailbox`]).
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
    /// Initial `userPassword`, sent as given (the server hashes it only if it is configured
    /// to, e.g. OpenLDAP's ppolicy `hash_cleartext`).
    pub password: Option<String>,
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
        self.is_unreachable() || matches!(self.result_code(), Some(51 | 52))
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

/// An open, bound connection to one directory.
pub struct Directory {
    conn: LdapConn,
    settings: DirectorySettings,
}

impl fmt::Debug for Directory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Directory")
            .field("url", &self.settings.url)
            .field("base", &self.settings.base)
            .finish_non_exhaustive()
    }
}

impl Directory {
    /// Connects (within [`CONNECT_TIMEOUT`]), upgrades with StartTLS when asked, verifies the
    /// server certificate against the system's trust anchors plus `tls_ca`, and does a simple
    /// bind as `bind_dn`.
    pub fn connect(s: &DirectorySettings) -> Result<Directory, DirectoryError> {
        let tls = uses_tls(s)?;
        let mut conn_settings = LdapConnSettings::new().set_conn_timeout(CONNECT_TIMEOUT);
        if tls {
            conn_settings = conn_settings
                .set_config(Arc::new(tls_config(s)?))
                .set_starttls(s.security == DirectorySecurity::StartTls);
        }
        let conn =
            LdapConn::with_settings(conn_settings, &s.url).map_err(|e| connect_error(s, e))?;
        let mut dir = Directory {
            conn,
            settings: s.clone(),
        };
        dir.bind()?;
        Ok(dir)
    }

    fn bind(&mut self) -> Result<(), DirectoryError> {
        let s = &self.settings;
        let operation = if s.bind_dn.is_empty() {
            "anonymous bind".to_string()
        } else {
            format!("bind as {}", s.bind_dn)
        };
        self.conn
            .with_timeout(REPLY_TIMEOUT)
            .simple_bind(&s.bind_dn, &s.bind_password)
            .and_then(LdapResult::success)
            .map_err(|e| op_error(s, &operation, e))?;
        Ok(())
    }

    /// Every mailbox under `base` matching `filter`, read with paged searches. Entries that
    /// lack the ID, the login or a primary address are left out; see
    /// [`Directory::list_with_warnings`] to learn which.
    pub fn list(&mut self) -> Result<Vec<DirEntry>, DirectoryError> {
        self.list_with_warnings().map(|(entries, _)| entries)
    }

    /// Like [`Directory::list`], and also returns one warning per entry left out
    /// (`<dn>: skipped: <why>`), including entries whose ID repeats an earlier one.
    pub fn list_with_warnings(&mut self) -> Result<(Vec<DirEntry>, Vec<String>), DirectoryError> {
        let s = &self.settings;
        let filter = base_filter(&s.filter);
        let operation = format!("paged search under {} for {filter}", s.base);
        let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
            Box::new(EntriesOnly::new()),
            Box::new(PagedResults::new(PAGE_SIZE)),
        ];
        let mut stream = self
            .conn
            .with_timeout(REPLY_TIMEOUT)
            .streaming_search_with(
                adapters,
                &s.base,
                Scope::Subtree,
                &filter,
                requested_attributes(s),
            )
            .map_err(|e| op_error(s, &operation, e))?;
        let mut entries = Vec::new();
        let mut warnings = Vec::new();
        let mut seen: HashMap<String, String> = HashMap::new();
        while let Some(raw) = stream
            .next()
            .map_err(|e| with_size_limit_hint(s, op_error(s, &operation, e)))?
        {
            let entry = SearchEntry::construct(raw);
            match to_dir_entry(s, &entry) {
                Ok(e) => match seen.get(&e.id) {
                    Some(first) => warnings.push(format!(
                        "{}: skipped: {} {} is also the ID of {first}",
                        e.dn, s.id_attribute, e.id
                    )),
                    None => {
                        seen.insert(e.id.clone(), e.dn.clone());
                        entries.push(e);
                    }
                },
                Err(why) => warnings.push(format!("{}: skipped: {why}", entry.dn)),
            }
        }
        stream
            .result()
            .success()
            .map_err(|e| with_size_limit_hint(s, op_error(s, &operation, e)))?;
        Ok((entries, warnings))
    }

    /// The mailbox whose ID attribute equals `id` (and that matches `filter`), if any.
    ///
    /// For `objectGUID` the ID is a GUID string and is searched for as its 16 bytes; other
    /// ID attributes are compared as text by the server. An entry that is found but lacks the
    /// login or a primary address is an error, not `None`: the mailbox exists, and calling it
    /// missing would make Refresh drop it.
    pub fn lookup(&mut self, id: &str) -> Result<Option<DirEntry>, DirectoryError> {
        let s = &self.settings;
        let assertion = id_assertion(s, id)?;
        let filter = and_filter(&s.filter, &assertion);
        let base = s.base.clone();
        let mut found = self.search(&base, Scope::Subtree, &filter)?;
        match found.len() {
            0 => Ok(None),
            1 => {
                let entry = found.remove(0);
                to_dir_entry(&self.settings, &entry)
                    .map(Some)
                    .map_err(|reason| self.entry_error(&entry.dn, reason))
            }
            n => {
                let dns: Vec<&str> = found.iter().map(|e| e.dn.as_str()).collect();
                Err(self.entry_error(
                    &format!("[{}]", dns.join("; ")),
                    format!("{n} entries have {} {id}", self.settings.id_attribute),
                ))
            }
        }
    }

    /// The mailboxes whose primary address or an alias equals `address` (ignoring case).
    /// With `proxyAddresses` the server is asked for `smtp:<address>`, which matches both the
    /// primary (`SMTP:`) and the other addresses. Entries unusable as mailboxes are left out.
    pub fn find_by_address(&mut self, address: &str) -> Result<Vec<DirEntry>, DirectoryError> {
        let s = &self.settings;
        let wanted = normalize_address(address).unwrap_or_else(|| address.trim().to_string());
        let escaped = ldap_escape(wanted.as_str()).into_owned();
        let assertion = |attr: &str, proxy: bool| {
            if proxy {
                format!("({attr}=smtp:{escaped})")
            } else {
                format!("({attr}={escaped})")
            }
        };
        let mut terms = assertion(
            &s.primary_address_attribute,
            is_proxy_attribute(&s.primary_address_attribute),
        );
        if let Some(alias) = &s.alias_attribute {
            terms.push_str(&assertion(alias, s.proxy_addresses()));
        }
        let filter = and_filter(&s.filter, &format!("(|{terms})"));
        let base = s.base.clone();
        let found = self.search(&base, Scope::Subtree, &filter)?;
        let wanted = wanted.to_lowercase();
        Ok(found
            .iter()
            .filter_map(|e| to_dir_entry(&self.settings, e).ok())
            .filter(|e| e.addresses.iter().any(|a| a.to_lowercase() == wanted))
            .collect())
    }

    /// Adds `<login_attribute>=<login>,<base>` with `objectClass` = `object_classes`, the login
    /// attribute, the primary address attribute, `cn` and `sn` (the display name, or the
    /// login), the display name attribute and `userPassword` when given; then reads the entry
    /// back, with its ID, and returns it.
    ///
    /// An entry that already exists is the server's `entryAlreadyExists (68)`
    /// ([`DirectoryError::result_code`]). If the new entry does not match the directory's
    /// `filter` (so later lookups would not find it) that is an error too, saying the entry
    /// was created.
    pub fn add_mailbox(&mut self, m: &NewMailbox) -> Result<DirEntry, DirectoryError> {
        let s = &self.settings;
        let config = |reason: String| DirectoryError::Config {
            url: s.url.clone(),
            reason,
        };
        if m.login.trim().is_empty() {
            return Err(config("cannot create a mailbox with an empty login".into()));
        }
        if m.object_classes.is_empty() {
            return Err(config(format!(
                "cannot create {}: no object classes configured",
                m.login
            )));
        }
        if normalize_address(&m.address).is_none() {
            return Err(config(format!(
                "cannot create {}: {:?} is not an email address",
                m.login, m.address
            )));
        }
        let dn = new_entry_dn(&s.login_attribute, &m.login, &m.base);
        let attributes = new_entry_attributes(s, m);
        let operation = format!("add {dn}");
        self.conn
            .with_timeout(REPLY_TIMEOUT)
            .add(&dn, attributes)
            .and_then(LdapResult::success)
            .map_err(|e| op_error(s, &operation, e))?;

        let filter = base_filter(&s.filter);
        let mut found = self.search(&dn, Scope::Base, &filter)?;
        if found.is_empty() {
            let reason = if self.search(&dn, Scope::Base, "(objectClass=*)")?.is_empty() {
                "was created but cannot be read back".to_string()
            } else {
                format!(
                    "was created but does not match the directory filter {filter}, so it \
                     would not be found again: add the missing object classes"
                )
            };
            return Err(self.entry_error(&dn, reason));
        }
        let entry = found.remove(0);
        to_dir_entry(&self.settings, &entry)
            .map_err(|why| self.entry_error(&dn, format!("was created but {why}")))
    }

    /// A plain (unpaged) search returning the entries only.
    fn search(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        let s = &self.settings;
        let operation = format!("search under {base} for {filter}");
        let (entries, _) = self
            .conn
            .with_timeout(REPLY_TIMEOUT)
            .search(base, scope, filter, requested_attributes(s))
            .and_then(|r| r.success())
            .map_err(|e| op_error(s, &operation, e))?;
        Ok(entries
            .into_iter()
            .filter(|e| !e.is_ref() && !e.is_intermediate())
            .map(SearchEntry::construct)
            .collect())
    }

    fn entry_error(&self, dn: &str, reason: String) -> DirectoryError {
        DirectoryError::Entry {
            url: self.settings.url.clone(),
            dn: dn.to_string(),
            reason,
        }
    }
}

impl Drop for Directory {
    fn drop(&mut self) {
        // Polite goodbye; the socket closes either way.
        let _ = self.conn.unbind();
    }
}

/// Adds what to do to a `sizeLimitExceeded (4)` of a paged search. OpenLDAP caps even the
/// total of a paged search (`size.prtotal` defaults to the size limit, 500) for every bind DN
/// but the rootdn, so a migration account usually needs a `limits` line.
fn with_size_limit_hint(s: &DirectorySettings, mut err: DirectoryError) -> DirectoryError {
    if let DirectoryError::Ldap {
        code: 4,
        hint: hint @ None,
        ..
    } = &mut err
    {
        let (who, selector) = if s.bind_dn.is_empty() {
            ("anonymous".to_string(), "anonymous".to_string())
        } else {
            (s.bind_dn.clone(), format!("dn.exact=\"{}\"", s.bind_dn))
        };
        *hint = Some(format!(
            "the server limits how many entries {who} may read, even page by page: raise that \
             limit for it, e.g. OpenLDAP `limits {selector} size=unlimited`"
        ));
    }
    err
}

/// Whether the connection uses TLS, checking that the URL and `security` agree.
fn uses_tls(s: &DirectorySettings) -> Result<bool, DirectoryError> {
    let config = |reason: String| DirectoryError::Config {
        url: s.url.clone(),
        reason,
    };
    let scheme = s
        .url
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase())
        .unwrap_or_default();
    match (scheme.as_str(), &s.security) {
        ("ldaps", DirectorySecurity::Tls) => Ok(true),
        ("ldaps", _) => Err(config(
            "an ldaps:// URL is TLS from the start: set security = \"tls\" (or use ldap:// \
             for StartTLS or plain)"
                .into(),
        )),
        ("ldap", DirectorySecurity::Tls) => Err(config(
            "security = \"tls\" needs an ldaps:// URL (or use security = \"starttls\" with \
             ldap://)"
                .into(),
        )),
        ("ldap", DirectorySecurity::StartTls) => Ok(true),
        ("ldap", DirectorySecurity::Plain) => Ok(false),
        _ => Err(config(
            "not an LDAP URL: expected ldap://host[:port] or ldaps://host[:port]".into(),
        )),
    }
}

/// rustls client configuration: ring, system trust anchors plus `tls_ca`, verification on.
fn tls_config(s: &DirectorySettings) -> Result<rustls::ClientConfig, DirectoryError> {
    let config = |reason: String| DirectoryError::Config {
        url: s.url.clone(),
        reason,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config(format!("TLS set-up: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = &s.tls_ca {
        let bad = |e: &dyn fmt::Display| config(format!("tls_ca {}: {e}", ca.display()));
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(&e))? {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad(&"no PEM certificate in the file"));
        }
    }
    // Unreadable system certificates are skipped: the ones that load still count.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// Maps a failure of `LdapConn::with_settings` (TCP, StartTLS, TLS).
fn connect_error(s: &DirectorySettings, e: LdapError) -> DirectoryError {
    let reason = match e {
        LdapError::UrlParsing { .. } | LdapError::UnknownScheme(_) => {
            return DirectoryError::Config {
                url: s.url.clone(),
                reason: format!("bad URL: {e}"),
            };
        }
        LdapError::LdapResult { result } => format!(
            "StartTLS refused: {}",
            ldap_words(result.rc, &result_text(&result))
        ),
        LdapError::Timeout { .. } => {
            format!("no connection within {} s", CONNECT_TIMEOUT.as_secs())
        }
        LdapError::Io { source } => source.to_string(),
        other => other.to_string(),
    };
    let reason = if reason.contains("UnknownIssuer") {
        match &s.tls_ca {
            None => format!(
                "{reason} (no trusted CA signed the server's certificate: if it comes from a \
                 private CA, set tls_ca to that CA's certificate)"
            ),
            Some(ca) => format!(
                "{reason} (neither the system's trust anchors nor tls_ca {} signed the \
                 server's certificate)",
                ca.display()
            ),
        }
    } else {
        reason
    };
    DirectoryError::Unreachable {
        url: s.url.clone(),
        reason,
    }
}

/// Maps a failure of an operation on an open connection.
fn op_error(s: &DirectorySettings, operation: &str, e: LdapError) -> DirectoryError {
    let url = s.url.clone();
    let operation = operation.to_string();
    match e {
        LdapError::LdapResult { result } => DirectoryError::Ldap {
            url,
            operation,
            code: result.rc,
            text: result_text(&result),
            hint: None,
        },
        LdapError::FilterParsing => DirectoryError::Config {
            url,
            reason: format!("{operation}: not a valid LDAP search filter"),
        },
        LdapError::Timeout { .. } => DirectoryError::Connection {
            url,
            operation,
            reason: format!("no answer within {} s", REPLY_TIMEOUT.as_secs()),
        },
        LdapError::Io { source } => DirectoryError::Connection {
            url,
            operation,
            reason: source.to_string(),
        },
        other => DirectoryError::Connection {
            url,
            operation,
            reason: other.to_string(),
        },
    }
}

/// The diagnostic text of a result, with the referral targets of a `referral (10)`.
fn result_text(r: &LdapResult) -> String {
    if r.refs.is_empty() {
        r.text.clone()
    } else if r.text.is_empty() {
        format!("referred to {}", r.refs.join(", "))
    } else {
        format!("{} (referred to {})", r.text, r.refs.join(", "))
    }
}

/// `name (code)` plus `: text` when the server gave one: LDAP's own words for a result.
fn ldap_words(code: u32, text: &str) -> String {
    let name = result_code_name(code);
    if text.trim().is_empty() {
        format!("{name} ({code})")
    } else {
        format!("{name} ({code}): {}", text.trim())
    }
}

/// RFC 4511 appendix A (plus the codes of common extensions) result code names.
fn result_code_name(code: u32) -> &'static str {
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

fn is_guid_attribute(name: &str) -> bool {
    name.eq_ignore_ascii_case("objectGUID") || name.eq_ignore_ascii_case("mS-DS-ConsistencyGuid")
}

fn is_proxy_attribute(name: &str) -> bool {
    name.eq_ignore_ascii_case("proxyAddresses")
}

/// The configured filter with its parentheses; `(objectClass=*)` when empty.
fn base_filter(filter: &str) -> String {
    let f = filter.trim();
    if f.is_empty() {
        "(objectClass=*)".to_string()
    } else if f.starts_with('(') {
        f.to_string()
    } else {
        format!("({f})")
    }
}

fn and_filter(filter: &str, extra: &str) -> String {
    format!("(&{}{extra})", base_filter(filter))
}

/// The filter item selecting `id`.
fn id_assertion(s: &DirectorySettings, id: &str) -> Result<String, DirectoryError> {
    let attr = &s.id_attribute;
    if is_guid_attribute(attr) {
        let escaped = guid_filter_escape(id).ok_or_else(|| DirectoryError::InvalidId {
            url: s.url.clone(),
            id: id.to_string(),
            attribute: attr.clone(),
        })?;
        Ok(format!("({attr}={escaped})"))
    } else if id.is_empty() {
        Err(DirectoryError::InvalidId {
            url: s.url.clone(),
            id: String::new(),
            attribute: attr.clone(),
        })
    } else {
        Ok(format!("({attr}={})", ldap_escape(id)))
    }
}

/// The attributes every search asks for; operational ones (`entryUUID`) must be named.
fn requested_attributes(s: &DirectorySettings) -> Vec<String> {
    let mut attrs: Vec<String> = Vec::new();
    let wanted = [
        Some(&s.id_attribute),
        Some(&s.login_attribute),
        Some(&s.primary_address_attribute),
        s.alias_attribute.as_ref(),
        s.display_name_attribute.as_ref(),
    ];
    for a in wanted.into_iter().flatten() {
        if !attrs.iter().any(|x| x.eq_ignore_ascii_case(a)) {
            attrs.push(a.clone());
        }
    }
    attrs
}

/// Text values of an attribute (its name compared ignoring case, options such as `;binary`
/// not accepted).
fn text_values<'e>(e: &'e SearchEntry, attr: &str) -> Vec<&'e str> {
    e.attrs
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(attr))
        .flat_map(|(_, values)| values.iter().map(String::as_str))
        .collect()
}

/// The first non-blank text value, trimmed.
fn first_text(e: &SearchEntry, attr: &str) -> Option<String> {
    text_values(e, attr)
        .into_iter()
        .map(str::trim)
        .find(|v| !v.is_empty())
        .map(str::to_string)
}

/// The first value as bytes, whether ldap3 could decode it as UTF-8 or not.
fn first_bytes(e: &SearchEntry, attr: &str) -> Option<Vec<u8>> {
    let binary = e
        .bin_attrs
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(attr))
        .flat_map(|(_, values)| values.iter())
        .next()
        .cloned();
    binary.or_else(|| text_values(e, attr).first().map(|v| v.as_bytes().to_vec()))
}

/// Turns a search entry into a mailbox, or says why it is not one.
fn to_dir_entry(s: &DirectorySettings, e: &SearchEntry) -> Result<DirEntry, String> {
    let id_attr = &s.id_attribute;
    let id = if is_guid_attribute(id_attr) {
        let bytes = first_bytes(e, id_attr).ok_or_else(|| format!("no {id_attr}"))?;
        guid_to_string(&bytes)
            .ok_or_else(|| format!("{id_attr} is {} bytes, not a 16-byte GUID", bytes.len()))?
    } else {
        match first_text(e, id_attr) {
            Some(id) => id,
            None if first_bytes(e, id_attr).is_some() => {
                return Err(format!(
                    "{id_attr} is binary; the only binary IDs understood are GUIDs (objectGUID)"
                ));
            }
            None => return Err(format!("no {id_attr}")),
        }
    };
    let login =
        first_text(e, &s.login_attribute).ok_or_else(|| format!("no {}", s.login_attribute))?;

    let primary_attr = &s.primary_address_attribute;
    let primary_values = text_values(e, primary_attr);
    let (mut primary, mut others) = if is_proxy_attribute(primary_attr) {
        split_proxy_addresses(primary_values.iter().copied())
    } else {
        let mut values = primary_values
            .iter()
            .map(|v| v.trim())
            .filter(|v| !v.is_empty());
        let primary = match values.next() {
            Some(v) => Some(
                normalize_address(v)
                    .ok_or_else(|| format!("{primary_attr} {v:?} is not an email address"))?,
            ),
            None => None,
        };
        (primary, values.filter_map(normalize_address).collect())
    };
    if let Some(alias_attr) = &s.alias_attribute {
        let values = text_values(e, alias_attr);
        if s.proxy_addresses() {
            let (smtp_primary, smtp_others) = split_proxy_addresses(values.iter().copied());
            // The directory's own primary wins; SMTP: stands in when it has none.
            match (&primary, smtp_primary) {
                (None, Some(p)) => primary = Some(p),
                (Some(_), Some(p)) => others.push(p),
                (_, None) => {}
            }
            others.extend(smtp_others);
        } else {
            others.extend(values.into_iter().filter_map(normalize_address));
        }
    }
    let primary = primary.ok_or_else(|| format!("no {primary_attr}"))?;
    let mut addresses = Vec::with_capacity(1 + others.len());
    for a in std::iter::once(primary).chain(others) {
        push_unique(&mut addresses, a);
    }
    let display_name = s
        .display_name_attribute
        .as_deref()
        .and_then(|a| first_text(e, a));
    Ok(DirEntry {
        id,
        dn: e.dn.clone(),
        login,
        addresses,
        display_name,
    })
}

/// Appends `address` unless the list already has it (ignoring case).
fn push_unique(list: &mut Vec<String>, address: String) {
    let lower = address.to_lowercase();
    if !list.iter().any(|a| a.to_lowercase() == lower) {
        list.push(address);
    }
}

/// `local@domain` with the domain lower-cased and surrounding blanks removed; `None` for
/// something that is not an address (no `@`, an empty part, blanks inside).
fn normalize_address(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let (local, domain) = raw.rsplit_once('@')?;
    if local.is_empty()
        || domain.is_empty()
        || raw.chars().any(char::is_whitespace)
        || domain.starts_with('.')
        || domain.ends_with('.')
    {
        return None;
    }
    Some(format!("{local}@{}", domain.to_lowercase()))
}

/// Splits `proxyAddresses` values into the primary (`SMTP:`, the first one if several) and
/// the others (`smtp:`, and any further `SMTP:`), normalised; other prefixes are ignored.
fn split_proxy_addresses<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> (Option<String>, Vec<String>) {
    let mut primary = None;
    let mut others = Vec::new();
    for value in values {
        let Some((prefix, address)) = value.trim().split_once(':') else {
            continue;
        };
        if !prefix.eq_ignore_ascii_case("smtp") {
            continue;
        }
        let Some(address) = normalize_address(address) else {
            continue;
        };
        if prefix == "SMTP" && primary.is_none() {
            primary = Some(address);
        } else {
            others.push(address);
        }
    }
    (primary, others)
}

/// The email addresses in Exchange `proxyAddresses` values: the primary (`SMTP:`) first, then
/// the others (`smtp:`), normalised and deduplicated ignoring case. Values with other
/// prefixes (`X500:`, `sip:`, `x400:`) are not email addresses and are left out.
pub fn parse_proxy_addresses(values: &[String]) -> Vec<String> {
    let (primary, others) = split_proxy_addresses(values.iter().map(String::as_str));
    let mut list = Vec::new();
    for a in primary.into_iter().chain(others) {
        push_unique(&mut list, a);
    }
    list
}

/// Active Directory `objectGUID` bytes as the usual GUID string, lowercase, without braces:
/// `01234567-89ab-cdef-0123-456789abcdef`. The first three groups are stored little-endian,
/// the last two as they are. `None` unless there are exactly 16 bytes.
pub fn guid_to_string(bytes: &[u8]) -> Option<String> {
    let b: &[u8; 16] = bytes.try_into().ok()?;
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-\
         {:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3],
        b[2],
        b[1],
        b[0],
        b[5],
        b[4],
        b[7],
        b[6],
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    ))
}

/// The inverse of [`guid_to_string`] for a search filter: the GUID's 16 bytes, in stored
/// order, each written `\xx`. Accepts either case and optional braces; `None` for anything
/// that is not a GUID in the 8-4-4-4-12 form.
pub fn guid_filter_escape(guid: &str) -> Option<String> {
    let g = guid.trim();
    let g = g
        .strip_prefix('{')
        .and_then(|g| g.strip_suffix('}'))
        .unwrap_or(g);
    let groups: Vec<&str> = g.split('-').collect();
    let lengths: Vec<usize> = groups.iter().map(|p| p.len()).collect();
    if lengths != [8, 4, 4, 4, 12] {
        return None;
    }
    let mut bytes = Vec::with_capacity(16);
    for group in &groups {
        for pair in group.as_bytes().chunks(2) {
            let pair = std::str::from_utf8(pair).ok()?;
            if !pair.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            bytes.push(u8::from_str_radix(pair, 16).ok()?);
        }
    }
    // Stored order: first three groups little-endian.
    bytes[0..4].reverse();
    bytes[4..6].reverse();
    bytes[6..8].reverse();
    Some(bytes.iter().map(|b| format!("\\{b:02x}")).collect())
}

/// An attribute value escaped for use in a DN (RFC 4514 section 2.4): `, + " \ < > ; =` and
/// NUL anywhere, `#` or a space at the start, and a space at the end.
fn escape_rdn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 4);
    for (i, c) in value.char_indices() {
        let first = i == 0;
        let last = i + c.len_utf8() == value.len();
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '\0' => out.push_str("\\00"),
            '#' if first => out.push_str("\\#"),
            ' ' if first || last => out.push_str("\\ "),
            _ => out.push(c),
        }
    }
    out
}

/// `<login_attribute>=<escaped login>,<base>`.
fn new_entry_dn(login_attribute: &str, login: &str, base: &str) -> String {
    format!("{login_attribute}={},{base}", escape_rdn_value(login))
}

/// The attributes of a new mailbox entry, merged by name (ignoring case).
fn new_entry_attributes(s: &DirectorySettings, m: &NewMailbox) -> Vec<(String, HashSet<String>)> {
    let mut attrs: Vec<(String, HashSet<String>)> = Vec::new();
    let mut put = |name: &str, value: String| match attrs
        .iter_mut()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
    {
        Some((_, values)) => {
            values.insert(value);
        }
        None => attrs.push((name.to_string(), HashSet::from([value]))),
    };
    for class in &m.object_classes {
        put("objectClass", class.clone());
    }
    put(&s.login_attribute, m.login.clone());
    // add_mailbox has checked that it is an address.
    let address = normalize_address(&m.address).unwrap_or_else(|| m.address.clone());
    if is_proxy_attribute(&s.primary_address_attribute) {
        put(&s.primary_address_attribute, format!("SMTP:{address}"));
    } else {
        put(&s.primary_address_attribute, address);
    }
    let name = m
        .display_name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or(&m.login)
        .to_string();
    put("cn", name.clone());
    put("sn", name.clone());
    if let Some(attr) = &s.display_name_attribute {
        put(attr, name);
    }
    if let Some(password) = &m.password {
        put("userPassword", password.clone());
    }
    attrs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DirectorySettings {
        DirectorySettings {
            url: "ldap://127.0.0.1:1".into(),
            security: DirectorySecurity::Plain,
            tls_ca: None,
            bind_dn: "cn=reader,dc=example".into(),
            bind_password: "s3cret-pw".into(),
            base: "ou=people,dc=example".into(),
            filter: "(objectClass=inetOrgPerson)".into(),
            id_attribute: "entryUUID".into(),
            login_attribute: "uid".into(),
            primary_address_attribute: "mail".into(),
            alias_attribute: Some("mailLocalAddress".into()),
            display_name_attribute: Some("cn".into()),
        }
    }

    fn ad_settings() -> DirectorySettings {
        DirectorySettings {
            id_attribute: "objectGUID".into(),
            login_attribute: "sAMAccountName".into(),
            alias_attribute: Some("proxyAddresses".into()),
            display_name_attribute: Some("displayName".into()),
            ..settings()
        }
    }

    fn entry(dn: &str, attrs: &[(&str, &[&str])]) -> SearchEntry {
        SearchEntry {
            dn: dn.into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
            bin_attrs: HashMap::new(),
        }
    }

    const AD_BYTES: [u8; 16] = [
        0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd,
        0xef,
    ];

    #[test]
    fn guid_bytes_to_string() {
        assert_eq!(
            guid_to_string(&AD_BYTES).as_deref(),
            Some("76543210-ba98-fedc-0123-456789abcdef")
        );
        // .NET: new Guid("00112233-4455-6677-8899-aabbccddeeff").ToByteArray()
        let dotnet = [
            0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ];
        assert_eq!(
            guid_to_string(&dotnet).as_deref(),
            Some("00112233-4455-6677-8899-aabbccddeeff")
        );
        assert_eq!(guid_to_string(&AD_BYTES[..15]), None);
        assert_eq!(guid_to_string(&[0; 17]), None);
    }

    #[test]
    fn guid_string_to_filter_escape() {
        let expected = "\\10\\32\\54\\76\\98\\ba\\dc\\fe\\01\\23\\45\\67\\89\\ab\\cd\\ef";
        for g in [
            "76543210-ba98-fedc-0123-456789abcdef",
            "{76543210-BA98-FEDC-0123-456789ABCDEF}",
            " 76543210-ba98-fedc-0123-456789abcdef ",
        ] {
            assert_eq!(guid_filter_escape(g).as_deref(), Some(expected), "{g}");
        }
        // Round trip.
        let s = guid_to_string(&AD_BYTES).unwrap();
        assert_eq!(guid_filter_escape(&s).as_deref(), Some(expected));
        for bad in [
            "",
            "76543210ba98fedc0123456789abcdef",
            "76543210-ba98-fedc-0123-456789abcdeg",
            "76543210-ba98-fedc-0123-456789abcde",
            "7654321-0ba98-fedc-0123-456789abcdef",
            "{76543210-ba98-fedc-0123-456789abcdef",
            "7654321é-ba98-fedc-0123-456789abcdef",
        ] {
            assert_eq!(guid_filter_escape(bad), None, "{bad}");
        }
    }

    #[test]
    fn proxy_addresses_primary_first_others_ignored() {
        let values: Vec<String> = [
            "smtp:Alias@Old.Example",
            "X500:/o=Org/ou=Exchange/cn=Recipients/cn=jdoe",
            "SMTP:John.Doe@OLD.example",
            "sip:john.doe@old.example",
            "smtp:john.doe@old.example",
            "SMTP:second-primary@old.example",
            "smtp:not-an-address",
            "noprefix@old.example",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            parse_proxy_addresses(&values),
            vec![
                "John.Doe@old.example",
                "Alias@old.example",
                "second-primary@old.example"
            ]
        );
        assert!(parse_proxy_addresses(&[]).is_empty());
        assert_eq!(
            parse_proxy_addresses(&["smtp:a@x.example".to_string()]),
            vec!["a@x.example"]
        );
    }

    #[test]
    fn address_normalisation() {
        assert_eq!(
            normalize_address(" John.Doe@Old.EXAMPLE ").as_deref(),
            Some("John.Doe@old.example")
        );
        assert_eq!(
            normalize_address("\"a@b\"@Example.org").as_deref(),
            Some("\"a@b\"@example.org")
        );
        for bad in [
            "",
            "john",
            "@old.example",
            "john@",
            "jo hn@x.example",
            "a@.x",
            "a@x.",
        ] {
            assert_eq!(normalize_address(bad), None, "{bad}");
        }
    }

    #[test]
    fn entry_addresses_primary_first_deduplicated() {
        let e = entry(
            "uid=jdoe,ou=people,dc=example",
            &[
                ("entryUUID", &["1b0e2c4a-1111-2222-3333-444455556666"]),
                ("uid", &["jdoe"]),
                ("cn", &["John Doe"]),
                ("mail", &["John.Doe@Old.Example", "jd@old.example"]),
                (
                    "mailLocalAddress",
                    &[
                        "john.doe@OLD.example",
                        "JD@old.example",
                        "john@old.example",
                        "bogus",
                    ],
                ),
            ],
        );
        let d = to_dir_entry(&settings(), &e).unwrap();
        assert_eq!(d.id, "1b0e2c4a-1111-2222-3333-444455556666");
        assert_eq!(d.login, "jdoe");
        assert_eq!(d.display_name.as_deref(), Some("John Doe"));
        assert_eq!(
            d.addresses,
            vec!["John.Doe@old.example", "jd@old.example", "john@old.example"]
        );
    }

    #[test]
    fn entry_attribute_names_ignore_case() {
        let e = entry(
            "uid=a,dc=example",
            &[
                ("ENTRYUUID", &["id-1"]),
                ("UID", &["a"]),
                ("Mail", &["a@x.example"]),
            ],
        );
        let d = to_dir_entry(&settings(), &e).unwrap();
        assert_eq!((d.id.as_str(), d.login.as_str()), ("id-1", "a"));
        assert_eq!(d.display_name, None);
    }

    #[test]
    fn entry_lacking_what_a_mailbox_needs_is_refused() {
        let s = settings();
        let no_id = entry("uid=a,dc=x", &[("uid", &["a"]), ("mail", &["a@x.example"])]);
        assert_eq!(to_dir_entry(&s, &no_id).unwrap_err(), "no entryUUID");
        let no_login = entry(
            "uid=a,dc=x",
            &[("entryUUID", &["1"]), ("mail", &["a@x.example"])],
        );
        assert_eq!(to_dir_entry(&s, &no_login).unwrap_err(), "no uid");
        let no_mail = entry(
            "uid=a,dc=x",
            &[
                ("entryUUID", &["1"]),
                ("uid", &["a"]),
                ("mailLocalAddress", &["a@x.example"]),
            ],
        );
        assert_eq!(to_dir_entry(&s, &no_mail).unwrap_err(), "no mail");
        let bad_mail = entry(
            "uid=a,dc=x",
            &[("entryUUID", &["1"]), ("uid", &["a"]), ("mail", &["a"])],
        );
        assert!(
            to_dir_entry(&s, &bad_mail)
                .unwrap_err()
                .contains("not an email address")
        );
    }

    #[test]
    fn active_directory_entry() {
        let s = ad_settings();
        let mut e = entry(
            "CN=John Doe,OU=Users,DC=corp,DC=example",
            &[
                ("sAMAccountName", &["jdoe"]),
                ("displayName", &["John Doe"]),
                ("mail", &["john.doe@corp.example"]),
                (
                    "proxyAddresses",
                    &[
                        "X500:/o=x",
                        "smtp:jd@corp.example",
                        "SMTP:John.Doe@corp.example",
                        "smtp:john@legacy.example",
                    ],
                ),
            ],
        );
        e.bin_attrs
            .insert("objectGUID".into(), vec![AD_BYTES.to_vec()]);
        let d = to_dir_entry(&s, &e).unwrap();
        assert_eq!(d.id, "76543210-ba98-fedc-0123-456789abcdef");
        assert_eq!(
            d.addresses,
            vec![
                "john.doe@corp.example",
                "jd@corp.example",
                "john@legacy.example"
            ]
        );
        // Without mail, proxyAddresses' SMTP: is the primary.
        e.attrs.remove("mail");
        let d = to_dir_entry(&s, &e).unwrap();
        assert_eq!(d.addresses[0], "John.Doe@corp.example");
        // A GUID whose bytes happen to be valid UTF-8 arrives among the text values.
        let ascii: Vec<u8> = (0x30..0x40).collect();
        e.bin_attrs.clear();
        e.attrs.insert(
            "objectGUID".into(),
            vec![String::from_utf8(ascii.clone()).unwrap()],
        );
        assert_eq!(
            to_dir_entry(&s, &e).unwrap().id,
            guid_to_string(&ascii).unwrap()
        );
        e.attrs.insert("objectGUID".into(), vec!["short".into()]);
        assert!(
            to_dir_entry(&s, &e)
                .unwrap_err()
                .contains("not a 16-byte GUID")
        );
    }

    #[test]
    fn dn_escaping_of_login() {
        let cases = [
            ("jdoe", "uid=jdoe,ou=p,dc=x"),
            ("Doe, John", "uid=Doe\\, John,ou=p,dc=x"),
            ("a+b", "uid=a\\+b,ou=p,dc=x"),
            ("say \"hi\"", "uid=say \\\"hi\\\",ou=p,dc=x"),
            ("back\\slash", "uid=back\\\\slash,ou=p,dc=x"),
            ("<x>;y", "uid=\\<x\\>\\;y,ou=p,dc=x"),
            ("a=b", "uid=a\\=b,ou=p,dc=x"),
            ("#hash", "uid=\\#hash,ou=p,dc=x"),
            ("mid#hash", "uid=mid#hash,ou=p,dc=x"),
            (" lead", "uid=\\ lead,ou=p,dc=x"),
            ("trail ", "uid=trail\\ ,ou=p,dc=x"),
            ("in side", "uid=in side,ou=p,dc=x"),
            (" ", "uid=\\ ,ou=p,dc=x"),
            ("nul\0", "uid=nul\\00,ou=p,dc=x"),
            ("jürgen", "uid=jürgen,ou=p,dc=x"),
        ];
        for (login, dn) in cases {
            assert_eq!(new_entry_dn("uid", login, "ou=p,dc=x"), dn, "{login:?}");
        }
    }

    #[test]
    fn new_entry_attributes_merge_and_fall_back() {
        let s = settings();
        let m = NewMailbox {
            base: "ou=people,dc=new".into(),
            login: "jdoe".into(),
            address: "jdoe@NEW.example".into(),
            display_name: Some("John Doe".into()),
            object_classes: vec!["inetOrgPerson".into(), "inetLocalMailRecipient".into()],
            password: Some("initial".into()),
        };
        let attrs: HashMap<String, HashSet<String>> =
            new_entry_attributes(&s, &m).into_iter().collect();
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
        assert_eq!(
            attrs["objectClass"],
            set(&["inetOrgPerson", "inetLocalMailRecipient"])
        );
        assert_eq!(attrs["uid"], set(&["jdoe"]));
        assert_eq!(attrs["mail"], set(&["jdoe@new.example"]));
        assert_eq!(attrs["cn"], set(&["John Doe"])); // display attribute cn merged
        assert_eq!(attrs["sn"], set(&["John Doe"]));
        assert_eq!(attrs["userPassword"], set(&["initial"]));
        assert_eq!(attrs.len(), 6);

        // Login attribute cn: both values under one cn; no display name → login.
        let s = DirectorySettings {
            login_attribute: "CN".into(),
            display_name_attribute: Some("displayName".into()),
            ..settings()
        };
        let m = NewMailbox {
            display_name: None,
            password: None,
            ..m
        };
        let attrs = new_entry_attributes(&s, &m);
        let names: Vec<&str> = attrs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["objectClass", "CN", "mail", "sn", "displayName"]);
        assert_eq!(attrs[1].1, set(&["jdoe"]));
        assert_eq!(attrs[3].1, set(&["jdoe"]));
    }

    #[test]
    fn filters() {
        assert_eq!(base_filter(""), "(objectClass=*)");
        assert_eq!(base_filter(" objectClass=person "), "(objectClass=person)");
        assert_eq!(and_filter("(a=b)", "(c=d)"), "(&(a=b)(c=d))");
        let s = settings();
        assert_eq!(
            id_assertion(&s, "x*(y)").unwrap(),
            "(entryUUID=x\\2a\\28y\\29)"
        );
        assert!(matches!(
            id_assertion(&s, ""),
            Err(DirectoryError::InvalidId { .. })
        ));
        let ad = ad_settings();
        assert_eq!(
            id_assertion(&ad, "76543210-ba98-fedc-0123-456789abcdef").unwrap(),
            "(objectGUID=\\10\\32\\54\\76\\98\\ba\\dc\\fe\\01\\23\\45\\67\\89\\ab\\cd\\ef)"
        );
        let err = id_assertion(&ad, "jdoe").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Directory ldap://127.0.0.1:1: \"jdoe\" is not a valid objectGUID value"
        );
    }

    #[test]
    fn url_and_security_must_agree() {
        let with = |url: &str, security: DirectorySecurity| DirectorySettings {
            url: url.into(),
            security,
            ..settings()
        };
        assert!(!uses_tls(&with("ldap://h", DirectorySecurity::Plain)).unwrap());
        assert!(uses_tls(&with("ldap://h", DirectorySecurity::StartTls)).unwrap());
        assert!(uses_tls(&with("LDAPS://h:636", DirectorySecurity::Tls)).unwrap());
        for (url, sec) in [
            ("ldap://h", DirectorySecurity::Tls),
            ("ldaps://h", DirectorySecurity::Plain),
            ("ldaps://h", DirectorySecurity::StartTls),
            ("http://h", DirectorySecurity::Plain),
            ("h:389", DirectorySecurity::Plain),
        ] {
            let err = Directory::connect(&with(url, sec)).unwrap_err();
            assert!(matches!(err, DirectoryError::Config { .. }), "{url}: {err}");
            assert!(!err.is_unreachable());
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let shown = format!("{:?}", settings());
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(shown.contains("<hidden>"));
    }

    #[test]
    fn error_words() {
        let e = DirectoryError::Ldap {
            url: "ldap://dc:389".into(),
            operation: "bind as cn=x".into(),
            code: 49,
            text: String::new(),
            hint: None,
        };
        assert_eq!(
            e.to_string(),
            "Directory ldap://dc:389: bind as cn=x failed: invalidCredentials (49)"
        );
        assert_eq!(e.result_code(), Some(49));
        let e = DirectoryError::Ldap {
            url: "ldap://dc:389".into(),
            operation: "search".into(),
            code: 32,
            text: "no such base ".into(),
            hint: Some("check base".into()),
        };
        assert_eq!(
            e.to_string(),
            "Directory ldap://dc:389: search failed: noSuchObject (32): no such base (check base)"
        );
    }

    #[test]
    fn busy_and_unavailable_are_transient_bad_credentials_not() {
        let refused = |code| DirectoryError::Ldap {
            url: "ldap://dc".into(),
            operation: "search".into(),
            code,
            text: String::new(),
            hint: None,
        };
        assert!(refused(51).is_transient());
        assert!(refused(52).is_transient());
        assert!(!refused(49).is_transient());
        assert!(!refused(49).is_unreachable());
        let lost = DirectoryError::Connection {
            url: "ldap://dc".into(),
            operation: "search".into(),
            reason: "connection reset".into(),
        };
        assert!(lost.is_transient() && lost.is_unreachable());
    }

    #[test]
    fn tls_ca_without_a_certificate_is_a_configuration_error() {
        let not_pem = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(not_pem.path(), "not a certificate\n").unwrap();
        let err = Directory::connect(&DirectorySettings {
            url: "ldaps://127.0.0.1:1".into(),
            security: DirectorySecurity::Tls,
            tls_ca: Some(not_pem.path().to_path_buf()),
            ..settings()
        })
        .unwrap_err();
        assert!(matches!(err, DirectoryError::Config { .. }), "{err}");
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }
}

/// Against a real OpenLDAP `slapd` from the test kit: the admin (rootdn) has no size limit,
/// everyone else slapd's default of 500 entries; `-d stats` logs every search result.
#[cfg(test)]
mod slapd_tests {
    use super::*;
    use mailferry_testkit::{Slapd, SlapdConfig, person_ldif};

    const SUFFIX: &str = "dc=old,dc=example";
    const PEOPLE: &str = "ou=people,dc=old,dc=example";
    const READER_PASSWORD: &str = "reader-pw";

    fn start(seed: String) -> Slapd {
        let mut cfg = SlapdConfig::new(SUFFIX);
        cfg.seed = seed;
        Slapd::start(cfg)
    }

    /// A directory with `user0000` … `user1199`, more than slapd's size limit of 500.
    fn start_with_1200_users() -> Slapd {
        let seed = (0..1200)
            .map(|i| {
                let uid = format!("user{i:04}");
                let mail = format!("{uid}@Old.Example");
                person_ldif(PEOPLE, &uid, &format!("User {i}"), &mail, &[], "pw")
            })
            .collect();
        start(seed)
    }

    /// A bind DN that, unlike the admin, is subject to slapd's size limit.
    fn add_reader(slapd: &Slapd) -> String {
        let dn = format!("cn=reader,{PEOPLE}");
        slapd.add(&format!(
            "dn: {dn}\nobjectClass: applicationProcess\nobjectClass: simpleSecurityObject\n\
             cn: reader\nuserPassword: {READER_PASSWORD}\n\n"
        ));
        dn
    }

    fn settings(slapd: &Slapd, bind_dn: &str, bind_password: &str) -> DirectorySettings {
        DirectorySettings {
            url: slapd.url(),
            security: DirectorySecurity::Plain,
            tls_ca: None,
            bind_dn: bind_dn.into(),
            bind_password: bind_password.into(),
            base: slapd.people(),
            filter: "(objectClass=inetOrgPerson)".into(),
            id_attribute: "entryUUID".into(),
            login_attribute: "uid".into(),
            primary_address_attribute: "mail".into(),
            alias_attribute: Some("mailLocalAddress".into()),
            display_name_attribute: Some("cn".into()),
        }
    }

    fn admin_settings(slapd: &Slapd) -> DirectorySettings {
        settings(slapd, &slapd.admin_dn(), slapd.admin_password())
    }

    fn connect_admin(slapd: &Slapd) -> Directory {
        Directory::connect(&admin_settings(slapd)).unwrap()
    }

    /// `nentries=` of every search result in slapd's log, in order.
    fn logged_search_results(slapd: &Slapd) -> Vec<usize> {
        let log = std::fs::read_to_string(slapd.dir().join("slapd.log")).unwrap();
        log.lines()
            .filter(|l| l.contains("SEARCH RESULT"))
            .filter_map(|l| l.split("nentries=").nth(1))
            .map(|n| n.split_whitespace().next().unwrap().parse().unwrap())
            .collect()
    }

    fn jdoe() -> String {
        person_ldif(
            PEOPLE,
            "jdoe",
            "John Doe",
            "john.doe@old.example",
            &["jd@old.example", "John.Doe@old.example"],
            "pw",
        )
    }

    fn new_mailbox(login: &str) -> NewMailbox {
        NewMailbox {
            base: PEOPLE.into(),
            login: login.into(),
            address: "New.Person@NEW.example".into(),
            display_name: Some("New Person".into()),
            object_classes: vec!["inetOrgPerson".into()],
            password: Some("initial-pw".into()),
        }
    }

    #[test]
    fn list_reads_all_entries_in_pages_of_500() {
        let slapd = start_with_1200_users();
        let mut dir = connect_admin(&slapd);
        let before = logged_search_results(&slapd).len();

        let entries = dir.list().unwrap();

        assert_eq!(entries.len(), 1200);
        // slapd may log a result just after sending it: give its log a moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut results = logged_search_results(&slapd);
        while results.len() < before + 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            results = logged_search_results(&slapd);
        }
        assert_eq!(
            results[before..],
            [500, 500, 200],
            "one search operation per page; {}",
            slapd.log_tail(20)
        );
        let ids: HashSet<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids.len(), 1200);
        let dn = format!("uid=user0777,{PEOPLE}");
        let e = entries.iter().find(|e| e.login == "user0777").unwrap();
        assert_eq!(
            *e,
            DirEntry {
                id: slapd.entry_uuid(&dn),
                dn,
                login: "user0777".into(),
                addresses: vec!["user0777@old.example".into()],
                display_name: Some("User 777".into()),
            }
        );
    }

    #[test]
    fn size_limit_on_the_paged_total_names_the_limit_to_raise() {
        let slapd = start_with_1200_users();
        let reader = add_reader(&slapd);
        let mut dir = Directory::connect(&settings(&slapd, &reader, READER_PASSWORD)).unwrap();

        let err = dir.list().unwrap_err();

        assert_eq!(err.result_code(), Some(4), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "Directory {}: paged search under {PEOPLE} for (objectClass=inetOrgPerson) \
                 failed: sizeLimitExceeded (4) (the server limits how many entries {reader} \
                 may read, even page by page: raise that limit for it, e.g. OpenLDAP \
                 `limits dn.exact=\"{reader}\" size=unlimited`)",
                slapd.url()
            )
        );
    }

    #[test]
    fn list_skips_entries_that_are_not_mailboxes_with_warnings() {
        let mut seed = jdoe();
        seed.push_str(&format!(
            "dn: cn=nomail,{PEOPLE}\nobjectClass: inetOrgPerson\ncn: nomail\nsn: x\nuid: nomail\n\n\
             dn: cn=nouid,{PEOPLE}\nobjectClass: inetOrgPerson\ncn: nouid\nsn: x\n\
             mail: nouid@old.example\n\n"
        ));
        let slapd = start(seed);
        let mut dir = connect_admin(&slapd);

        let (entries, mut warnings) = dir.list_with_warnings().unwrap();

        let logins: Vec<&str> = entries.iter().map(|e| e.login.as_str()).collect();
        assert_eq!(logins, ["jdoe"]);
        warnings.sort();
        assert_eq!(
            warnings,
            [
                format!("cn=nomail,{PEOPLE}: skipped: no mail"),
                format!("cn=nouid,{PEOPLE}: skipped: no uid"),
            ]
        );
    }

    #[test]
    fn lookup_by_entry_uuid() {
        let slapd = start(jdoe());
        let dn = format!("uid=jdoe,{PEOPLE}");
        let uuid = slapd.entry_uuid(&dn);
        let mut dir = connect_admin(&slapd);

        let found = dir.lookup(&uuid).unwrap();

        let expected = DirEntry {
            id: uuid,
            dn,
            login: "jdoe".into(),
            addresses: vec!["john.doe@old.example".into(), "jd@old.example".into()],
            display_name: Some("John Doe".into()),
        };
        assert_eq!(found, Some(expected));
    }

    #[test]
    fn lookup_of_an_unknown_id_is_none() {
        let slapd = start(jdoe());
        let mut dir = connect_admin(&slapd);
        assert_eq!(
            dir.lookup("00000000-0000-0000-0000-000000000000").unwrap(),
            None
        );
    }

    #[test]
    fn lookup_after_a_domain_switch_has_the_new_addresses() {
        let slapd = start(jdoe());
        let dn = format!("uid=jdoe,{PEOPLE}");
        let uuid = slapd.entry_uuid(&dn);
        slapd.modify(&format!(
            "dn: {dn}\nchangetype: modify\nreplace: mail\nmail: john.doe@new.example\n-\n\
             replace: mailLocalAddress\nmailLocalAddress: jd@new.example\n-\n\n"
        ));
        let mut dir = connect_admin(&slapd);

        let found = dir.lookup(&uuid).unwrap().unwrap();

        assert_eq!(found.addresses, ["john.doe@new.example", "jd@new.example"]);
    }

    #[test]
    fn lookup_of_an_entry_without_address_is_an_error_not_missing() {
        let slapd = start(jdoe());
        let dn = format!("uid=jdoe,{PEOPLE}");
        let uuid = slapd.entry_uuid(&dn);
        slapd.modify(&format!(
            "dn: {dn}\nchangetype: modify\ndelete: mail\n-\n\n"
        ));
        let mut dir = connect_admin(&slapd);

        let err = dir.lookup(&uuid).unwrap_err();

        assert_eq!(
            err.to_string(),
            format!("Directory {}: {dn}: no mail", slapd.url())
        );
    }

    #[test]
    fn find_by_address_matches_primary_or_alias_ignoring_case() {
        let mut seed = jdoe();
        seed.push_str(&person_ldif(
            PEOPLE,
            "mary",
            "Mary",
            "mary@old.example",
            &[],
            "pw",
        ));
        let slapd = start(seed);
        let mut dir = connect_admin(&slapd);

        for (address, login) in [
            ("JD@Old.Example", Some("jdoe")),
            ("john.doe@OLD.example", Some("jdoe")),
            ("mary@old.example", Some("mary")),
            ("nobody@old.example", None),
        ] {
            let found = dir.find_by_address(address).unwrap();
            let logins: Vec<&str> = found.iter().map(|e| e.login.as_str()).collect();
            assert_eq!(logins, Vec::from_iter(login), "{address}");
        }
    }

    #[test]
    fn find_by_address_escapes_filter_metacharacters() {
        let slapd = start(jdoe());
        let mut dir = connect_admin(&slapd);
        assert_eq!(dir.find_by_address("*").unwrap(), []);
        assert_eq!(dir.find_by_address("*)(uid=*").unwrap(), []);
    }

    #[test]
    fn add_mailbox_then_lookup() {
        let slapd = start(String::new());
        let mut dir = connect_admin(&slapd);

        let created = dir.add_mailbox(&new_mailbox("Doe, John+#1")).unwrap();

        // slapd hands the DN back in its own escaping ("uid=Doe\2C John\2B#1,…").
        assert!(
            created.dn.ends_with(&format!(",{PEOPLE}")),
            "{}",
            created.dn
        );
        assert_eq!(created.id, slapd.entry_uuid(&created.dn));
        assert_eq!(created.login, "Doe, John+#1");
        assert_eq!(created.addresses, ["New.Person@new.example"]);
        assert_eq!(created.display_name.as_deref(), Some("New Person"));
        assert_eq!(dir.lookup(&created.id).unwrap(), Some(created));
    }

    #[test]
    fn added_mailbox_can_bind_with_its_initial_password() {
        let slapd = start(String::new());
        let created = connect_admin(&slapd)
            .add_mailbox(&new_mailbox("jdoe"))
            .unwrap();
        Directory::connect(&settings(&slapd, &created.dn, "initial-pw")).unwrap();
    }

    #[test]
    fn adding_an_existing_mailbox_is_entry_already_exists() {
        let slapd = start(jdoe());
        let err = connect_admin(&slapd)
            .add_mailbox(&new_mailbox("jdoe"))
            .unwrap_err();
        assert_eq!(err.result_code(), Some(68));
        assert_eq!(
            err.to_string(),
            format!(
                "Directory {}: add uid=jdoe,{PEOPLE} failed: entryAlreadyExists (68)",
                slapd.url()
            )
        );
    }

    #[test]
    fn adding_a_mailbox_outside_the_filter_says_it_was_created() {
        let slapd = start(String::new());
        let mut dir = Directory::connect(&DirectorySettings {
            filter: "(objectClass=inetLocalMailRecipient)".into(),
            ..admin_settings(&slapd)
        })
        .unwrap();

        let err = dir.add_mailbox(&new_mailbox("jdoe")).unwrap_err();

        assert_eq!(
            err.to_string(),
            format!(
                "Directory {}: uid=jdoe,{PEOPLE}: was created but does not match the directory \
                 filter (objectClass=inetLocalMailRecipient), so it would not be found again: \
                 add the missing object classes",
                slapd.url()
            )
        );
    }

    #[test]
    fn adding_without_write_access_gives_the_servers_words() {
        let slapd = start(String::new());
        let reader = add_reader(&slapd);
        let mut dir = Directory::connect(&settings(&slapd, &reader, READER_PASSWORD)).unwrap();

        let err = dir.add_mailbox(&new_mailbox("jdoe")).unwrap_err();

        assert_eq!(
            err.to_string(),
            format!(
                "Directory {}: add uid=jdoe,{PEOPLE} failed: insufficientAccessRights (50): no \
                 write access to parent",
                slapd.url()
            )
        );
    }

    #[test]
    fn adding_a_mailbox_with_a_malformed_address_adds_nothing() {
        let slapd = start(String::new());
        let mut dir = connect_admin(&slapd);

        let err = dir
            .add_mailbox(&NewMailbox {
                address: "New Person".into(),
                ..new_mailbox("jdoe")
            })
            .unwrap_err();

        assert_eq!(
            err.to_string(),
            format!(
                "Directory {}: cannot create jdoe: \"New Person\" is not an email address",
                slapd.url()
            )
        );
        assert_eq!(dir.list().unwrap(), []);
    }

    #[test]
    fn wrong_bind_password_is_invalid_credentials() {
        let slapd = start(String::new());

        let err = Directory::connect(&settings(&slapd, &slapd.admin_dn(), "wrong")).unwrap_err();

        assert!(!err.is_unreachable());
        assert_eq!(err.result_code(), Some(49));
        assert_eq!(
            err.to_string(),
            format!(
                "Directory {}: bind as {} failed: invalidCredentials (49)",
                slapd.url(),
                slapd.admin_dn()
            )
        );
    }

    #[test]
    fn nothing_listening_is_unreachable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("ldap://127.0.0.1:{port}");
        let s = DirectorySettings {
            url: url.clone(),
            security: DirectorySecurity::Plain,
            tls_ca: None,
            bind_dn: String::new(),
            bind_password: String::new(),
            base: "dc=x".into(),
            filter: String::new(),
            id_attribute: "entryUUID".into(),
            login_attribute: "uid".into(),
            primary_address_attribute: "mail".into(),
            alias_attribute: None,
            display_name_attribute: None,
        };

        let err = Directory::connect(&s).unwrap_err();

        assert!(err.is_unreachable(), "{err}");
        let shown = err.to_string();
        assert!(
            shown.starts_with(&format!("Cannot connect to directory {url}: ")),
            "{shown}"
        );
    }

    /// Against a slapd with TLS: connecting with its CA as `tls_ca` works, without it the
    /// certificate is refused.
    fn assert_verified(security: DirectorySecurity) {
        let mut cfg = SlapdConfig::new(SUFFIX);
        cfg.tls = true;
        cfg.seed = jdoe();
        let slapd = Slapd::start(cfg);
        let url = match security {
            DirectorySecurity::Tls => slapd.ldaps_url().unwrap(),
            _ => slapd.url(),
        };
        let s = DirectorySettings {
            url: url.clone(),
            security,
            tls_ca: slapd.ca_pem(),
            ..admin_settings(&slapd)
        };

        let logins: Vec<String> = Directory::connect(&s)
            .unwrap()
            .list()
            .unwrap()
            .into_iter()
            .map(|e| e.login)
            .collect();
        assert_eq!(logins, ["jdoe"]);

        let err = Directory::connect(&DirectorySettings { tls_ca: None, ..s }).unwrap_err();
        assert!(err.is_unreachable(), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "Cannot connect to directory {url}: invalid peer certificate: UnknownIssuer (no \
                 trusted CA signed the server's certificate: if it comes from a private CA, set \
                 tls_ca to that CA's certificate)"
            )
        );
    }

    #[test]
    fn ldaps_is_verified_against_tls_ca() {
        assert_verified(DirectorySecurity::Tls);
    }

    #[test]
    fn starttls_is_verified_against_tls_ca() {
        assert_verified(DirectorySecurity::StartTls);
    }
}
