//! Validation (stage 2): turns the raw structs into a [`Job`], collecting every problem.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::raw::{
    AuthKeys, RawAdminLogin, RawAuth, RawConnection, RawCreate, RawDirectory, RawFlow, RawJob,
    RawKind, RawMechanism, RawMigration, RawOAuth2, RawSecret,
};
use super::spans::{KeyPlace, line_column};
use super::{
    AdminLogin, Auth, CertificatePin, ClientCredential, Connection, ConnectionKind, CreateConfig,
    DEFAULT_MAILBOX_WAIT_SECONDS, DEFAULT_MASTER_SEPARATOR, DEFAULT_MAX_CONNECTIONS, Date,
    DateError, DirectoryConfig, DirectoryKind, DirectorySecurity, EXCHANGE_ONLINE_SCOPE,
    GMAIL_SCOPE, GRAPH_SCOPE, GRAPH_URL, GraphConfig, GraphCreate, IMAP_PORT, IMAP_TLS_PORT,
    ImapSettings, Job, JobProblem, MigrationSettings, NetworkSettings, OAuth2Config, OAuth2Flow,
    OAuth2Mechanism, Secret, Security, StateLocation, entra_token_url,
};
use crate::profile::{Profile, ProfileChoice, ProfileSettings};

/// `schema = "active-directory"` in a directory section.
const ACTIVE_DIRECTORY: &str = "active-directory";
/// Active Directory's mailboxes: enabled user accounts (bit 2 of `userAccountControl` is
/// "disabled"), not contacts, groups or computers.
const AD_MAILBOX_FILTER: &str = "(&(objectCategory=person)(objectClass=user)\
     (!(userAccountControl:1.2.840.113556.1.4.803:=2)))";
/// The object classes of a user AD creates.
const AD_OBJECT_CLASSES: [&str; 4] = ["top", "person", "organizationalPerson", "user"];

/// A Graph directory's default `filter`: enabled accounts (as AD's default filter leaves out
/// disabled ones).
const GRAPH_MAILBOX_FILTER: &str = "accountEnabled eq true";

/// Which directory a side has, for the defaults and keys of `[target.create]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flavour {
    OpenLdap,
    ActiveDirectory,
    Graph,
}

/// `8-4-4-4-12` hexadecimal digits.
pub(super) fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The largest value of `[migration]`'s `*_seconds` keys: a day.
const MAX_NETWORK_SECONDS: u64 = 86_400;

const PIN_FORM: &str = "a SHA-256 fingerprint as a string (\"AB:CD:…\"), or a list of them";

/// Collects the problems of one job file.
pub(super) struct Checker<'a> {
    pub(super) text: &'a str,
    pub(super) places: Vec<KeyPlace>,
    pub(super) dir: &'a Path,
    pub(super) problems: Vec<JobProblem>,
}

impl Checker<'_> {
    pub(super) fn job(&mut self, raw: RawJob, file: &Path) -> Option<Job> {
        let name = self.text("name", raw.name, "missing: a short name for the job");
        let state = self.state(raw.state, file);
        let state_password = match raw.state_password {
            Some(secret) => {
                if let Some(StateLocation::Sqlite(_)) = state {
                    self.problem(
                        "state_password",
                        "only a postgres:// state has a password; an SQLite state is a file",
                    );
                }
                self.secret("state_password", secret)
            }
            None => None,
        };
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
            state_password,
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

    /// `<section>.tls_pin_sha256`: one fingerprint or a list of them.
    fn pins(
        &mut self,
        section: &str,
        raw: Option<toml::Value>,
        has_ca: bool,
    ) -> Vec<CertificatePin> {
        let key = format!("{section}.tls_pin_sha256");
        let texts = match raw {
            None => return Vec::new(),
            Some(toml::Value::String(one)) => vec![one],
            Some(toml::Value::Array(list)) => {
                let mut texts = Vec::new();
                for value in list {
                    match value {
                        toml::Value::String(text) => texts.push(text),
                        _ => {
                            self.problem(&key, PIN_FORM);
                            return Vec::new();
                        }
                    }
                }
                texts
            }
            Some(_) => {
                self.problem(&key, PIN_FORM);
                return Vec::new();
            }
        };
        if texts.is_empty() {
            self.problem(
                &key,
                "an empty list pins nothing: name at least one fingerprint",
            );
            return Vec::new();
        }
        if has_ca {
            self.problem(
                &key,
                format!(
                    "a pin accepts exactly the pinned certificates, so {section}.tls_ca would \
                     not be read: remove one of them"
                ),
            );
        }
        let mut pins = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            match CertificatePin::parse(text) {
                Ok(pin) => pins.push(pin),
                Err(e) if texts.len() == 1 => self.problem(&key, e),
                Err(e) => self.problem(
                    &key,
                    format!("fingerprint {} of {}: {e}", i + 1, texts.len()),
                ),
            }
        }
        pins
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
        let flavour = match raw.directory.as_ref() {
            Some(d) if d.kind.as_deref() == Some("graph") => Flavour::Graph,
            Some(d) if d.schema.as_deref() == Some(ACTIVE_DIRECTORY) => Flavour::ActiveDirectory,
            _ => Flavour::OpenLdap,
        };
        let raw_directory = raw.directory.take();
        let raw_create = raw.create.take();
        // The connection first: a Graph directory may use the connection's application.
        let connection = self.connection_kind(side, raw);
        let shared = connection.as_ref().and_then(|c| match &c.kind {
            ConnectionKind::Imap(ImapSettings {
                auth: Auth::OAuth2(o),
                ..
            }) => Some((**o).clone()),
            _ => None,
        });
        let mut directory =
            raw_directory.and_then(|d| self.directory(&key("directory"), d, side, shared.as_ref()));
        let create = match raw_create {
            Some(c) if side == "target" => {
                if directory.is_none() && !self.has_problem_at(&key("directory")) {
                    self.problem(
                        &key("create"),
                        "mailbox creation writes to the target directory: add [target.directory]",
                    );
                }
                let (create, graph) = self.create(&key("create"), c, flavour);
                if let (Some(DirectoryKind::Graph(g)), Some(graph)) = (directory.as_mut(), graph) {
                    g.create = Some(graph);
                }
                create
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
        let mut connection = connection?;
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

    fn directory(
        &mut self,
        key: &str,
        raw: RawDirectory,
        side: &str,
        shared: Option<&OAuth2Config>,
    ) -> Option<DirectoryKind> {
        let k = |name: &str| format!("{key}.{name}");
        match raw.kind.as_deref() {
            Some("graph") => {
                return self
                    .graph_directory(key, raw, side, shared)
                    .map(|g| DirectoryKind::Graph(Box::new(g)));
            }
            Some("ldap") => {}
            Some(other) => self.problem(
                &k("kind"),
                format!("unknown kind `{other}`; use \"ldap\" or \"graph\""),
            ),
            None => self.problem(
                &k("kind"),
                "missing: \"ldap\" (LDAP, Active Directory) or \"graph\" (Entra ID)",
            ),
        }
        let graph_only = [
            ("graph_url", raw.graph_url.is_some()),
            ("allow_plain", raw.allow_plain.is_some()),
            ("oauth2", raw.oauth2.is_some()),
        ];
        for (name, _) in graph_only.iter().filter(|(_, present)| *present) {
            self.problem(&k(name), "only used with kind = \"graph\"; remove it");
        }
        self.ldap_directory(key, raw).map(DirectoryKind::Ldap)
    }

    /// `kind = "graph"`: Entra ID through Microsoft Graph.
    fn graph_directory(
        &mut self,
        key: &str,
        raw: RawDirectory,
        side: &str,
        shared: Option<&OAuth2Config>,
    ) -> Option<GraphConfig> {
        let k = |name: &str| format!("{key}.{name}");
        let ldap_only = [
            ("schema", raw.schema.is_some()),
            ("url", raw.url.is_some()),
            ("bind_dn", raw.bind_dn.is_some()),
            ("bind_password", raw.bind_password.is_some()),
            ("base", raw.base.is_some()),
            ("security", raw.security.is_some()),
            ("tls_pin_sha256", raw.tls_pin_sha256.is_some()),
            ("id_attribute", raw.id_attribute.is_some()),
            ("login_attribute", raw.login_attribute.is_some()),
            (
                "primary_address_attribute",
                raw.primary_address_attribute.is_some(),
            ),
            ("alias_attribute", raw.alias_attribute.is_some()),
            (
                "display_name_attribute",
                raw.display_name_attribute.is_some(),
            ),
        ];
        for (name, _) in ldap_only.iter().filter(|(_, present)| *present) {
            self.problem(
                &k(name),
                "not used with kind = \"graph\" (Microsoft Graph has its own names for \
                 users and addresses); remove it",
            );
        }
        let graph_url = raw
            .graph_url
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .unwrap_or_else(|| GRAPH_URL.to_owned());
        let url_ok = self.web_url(
            &k("graph_url"),
            &graph_url,
            raw.allow_plain == Some(true),
            &k("allow_plain"),
            "the application's tokens and the directory's users",
        );
        let tls_ca = raw
            .tls_ca
            .as_deref()
            .and_then(|ca| self.path(&k("tls_ca"), ca));
        let filter = match raw.filter.map(|f| f.trim().to_owned()) {
            None => Some(GRAPH_MAILBOX_FILTER.to_owned()),
            Some(f) if f.is_empty() => None,
            Some(f) if f.starts_with('(') && f.contains('=') && !f.contains(" eq ") => {
                self.problem(
                    &k("filter"),
                    "an OData $filter such as accountEnabled eq true, not an LDAP filter",
                );
                None
            }
            Some(f) => Some(f),
        };
        let (oauth2, oauth2_key) = match (raw.oauth2, shared) {
            (Some(o), _) => (
                self.oauth2_table(&k("oauth2"), o, GRAPH_SCOPE, true),
                k("oauth2"),
            ),
            (None, Some(c)) => match &c.flow {
                OAuth2Flow::ClientCredentials { .. } => (
                    Some(OAuth2Config {
                        scope: GRAPH_SCOPE.to_owned(),
                        ..c.clone()
                    }),
                    format!("{side}.oauth2"),
                ),
                OAuth2Flow::ServiceAccount { .. } => {
                    self.problem(
                        &k("oauth2"),
                        format!(
                            "Microsoft Graph needs an Entra ID application (flow = \
                             \"client-credentials\"), not the connection's service account: \
                             add [{key}.oauth2]"
                        ),
                    );
                    (None, String::new())
                }
            },
            (None, None) => {
                if !self.has_problem_at(&format!("{side}.oauth2")) {
                    self.problem(
                        &k("oauth2"),
                        format!(
                            "missing: [{key}.oauth2] (tenant, client_id, client_secret), or \
                             auth = \"oauth2\" on [{side}], whose application is then used"
                        ),
                    );
                }
                (None, String::new())
            }
        };
        url_ok.then_some(())?;
        Some(GraphConfig {
            graph_url,
            tls_ca,
            oauth2: oauth2?,
            oauth2_key,
            filter,
            create: None,
        })
    }

    fn ldap_directory(&mut self, key: &str, raw: RawDirectory) -> Option<DirectoryConfig> {
        let k = |name: &str| format!("{key}.{name}");
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
        let tls_pin_sha256 =
            if security == Some(DirectorySecurity::Plain) && raw.tls_pin_sha256.is_some() {
                self.problem(&k("tls_pin_sha256"), "not used with security = \"plain\"");
                Vec::new()
            } else {
                self.pins(key, raw.tls_pin_sha256, tls_ca.is_some())
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
        let ad = match raw.schema.as_deref() {
            None | Some("openldap") => false,
            Some(ACTIVE_DIRECTORY) => true,
            Some(other) => {
                self.problem(
                    &k("schema"),
                    format!("unknown schema `{other}`; use \"openldap\" or \"active-directory\""),
                );
                false
            }
        };
        // What each schema's entries look like; every key written in the file wins.
        let default = |openldap: &'static str, active_directory: &'static str| {
            if ad { active_directory } else { openldap }
        };
        let filter = raw
            .filter
            .unwrap_or_else(|| default("(objectClass=*)", AD_MAILBOX_FILTER).into());
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
        let id_attribute = attribute(
            self,
            "id_attribute",
            raw.id_attribute,
            default("entryUUID", "objectGUID"),
        );
        let login_attribute = attribute(
            self,
            "login_attribute",
            raw.login_attribute,
            default("uid", "sAMAccountName"),
        );
        let primary = attribute(
            self,
            "primary_address_attribute",
            raw.primary_address_attribute,
            "mail",
        );
        let alias_attribute = match raw.alias_attribute {
            Some(a) => Some(attribute(self, "alias_attribute", Some(a), "")),
            None if ad => Some("proxyAddresses".to_string()),
            None => None,
        };
        let display = attribute(
            self,
            "display_name_attribute",
            raw.display_name_attribute,
            default("cn", "displayName"),
        );
        Some(DirectoryConfig {
            url: url?,
            security: security?,
            tls_ca,
            tls_pin_sha256,
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

    fn create(
        &mut self,
        key: &str,
        raw: RawCreate,
        flavour: Flavour,
    ) -> (Option<CreateConfig>, Option<GraphCreate>) {
        let k = |name: &str| format!("{key}.{name}");
        if flavour == Flavour::Graph {
            return self.graph_create(key, raw);
        }
        let graph_only = [
            ("license_sku", raw.license_sku.is_some()),
            ("usage_location", raw.usage_location.is_some()),
            ("mailbox_wait_seconds", raw.mailbox_wait_seconds.is_some()),
        ];
        for (name, _) in graph_only.iter().filter(|(_, present)| *present) {
            self.problem(
                &k(name),
                "only used when the target directory is Microsoft Graph (kind = \"graph\")",
            );
        }
        let active_directory = flavour == Flavour::ActiveDirectory;
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
        let object_classes = raw.object_classes.unwrap_or_else(|| {
            if active_directory {
                AD_OBJECT_CLASSES.iter().map(|c| c.to_string()).collect()
            } else {
                vec!["inetOrgPerson".into()]
            }
        });
        if object_classes.is_empty() {
            self.problem(&k("object_classes"), "must name at least one object class");
        }
        let initial_password = raw
            .initial_password
            .and_then(|p| self.secret(&k("initial_password"), p));
        let create = (|| {
            Some(CreateConfig {
                base: base?,
                domain: domain?.to_ascii_lowercase(),
                object_classes,
                initial_password,
            })
        })();
        (create, None)
    }

    /// `[target.create]` of a Graph target: the domain of the new users' names, the licence
    /// that gives them a mailbox, their usage location and their first password.
    fn graph_create(
        &mut self,
        key: &str,
        raw: RawCreate,
    ) -> (Option<CreateConfig>, Option<GraphCreate>) {
        let k = |name: &str| format!("{key}.{name}");
        for (name, present) in [
            ("base", raw.base.is_some()),
            ("object_classes", raw.object_classes.is_some()),
        ] {
            if present {
                self.problem(
                    &k(name),
                    "not used when the target directory is Microsoft Graph; remove it",
                );
            }
        }
        let domain = self.domain(&k("domain"), raw.domain);
        let license_sku = self.text(
            &k("license_sku"),
            raw.license_sku,
            "missing: the skuId of the licence that gives a user an Exchange Online mailbox \
             (GET /subscribedSkus lists them)",
        );
        if let Some(sku) = &license_sku
            && !is_guid(sku)
        {
            self.problem(
                &k("license_sku"),
                "must be a skuId, a GUID such as 6fd2c87f-b296-42f0-b197-1e91e994b900",
            );
        }
        let usage_location = self.text(
            &k("usage_location"),
            raw.usage_location,
            "missing: the users' usage location, a two-letter country code such as \"CH\" \
             (Entra ID assigns no licence without one)",
        );
        if let Some(u) = &usage_location
            && !(u.len() == 2 && u.chars().all(|c| c.is_ascii_alphabetic()))
        {
            self.problem(
                &k("usage_location"),
                "must be a two-letter country code (ISO 3166-1), such as \"CH\"",
            );
        }
        let initial_password = match raw.initial_password {
            Some(p) => self.secret(&k("initial_password"), p),
            None => {
                self.problem(
                    &k("initial_password"),
                    "missing: Entra ID creates no user without a password: \
                     { env = \"VAR\" } or { file = \"path\" }",
                );
                None
            }
        };
        let graph = (|| {
            Some(GraphCreate {
                license_sku: license_sku?.to_ascii_lowercase(),
                usage_location: usage_location?.to_ascii_uppercase(),
                mailbox_wait_seconds: raw
                    .mailbox_wait_seconds
                    .unwrap_or(DEFAULT_MAILBOX_WAIT_SECONDS),
            })
        })();
        let create = domain.map(|domain| CreateConfig {
            base: String::new(),
            domain,
            object_classes: Vec::new(),
            initial_password,
        });
        (create, graph)
    }

    /// `domain` of `[target.create]`, lower-cased.
    fn domain(&mut self, key: &str, raw: Option<String>) -> Option<String> {
        let domain = self.text(key, raw, "missing: the domain of created addresses")?;
        if domain.contains('@') || domain.contains(char::is_whitespace) || !domain.contains('.') {
            self.problem(key, "must be a domain name such as new.example");
        }
        Some(domain.to_ascii_lowercase())
    }

    fn maildir(&mut self, side: &str, raw: RawConnection) -> Option<Connection> {
        let imap_only = [
            ("host", raw.host.is_some()),
            ("port", raw.port.is_some()),
            ("security", raw.security.is_some()),
            ("allow_plain", raw.allow_plain.is_some()),
            ("tls_ca", raw.tls_ca.is_some()),
            ("tls_verify", raw.tls_verify.is_some()),
            ("tls_pin_sha256", raw.tls_pin_sha256.is_some()),
            ("auth", raw.auth.is_some()),
            ("admin_user", raw.admin_user.is_some()),
            ("admin_password", raw.admin_password.is_some()),
            ("admin_login", raw.admin_login.is_some()),
            ("master_separator", raw.master_separator.is_some()),
            ("max_connections", raw.max_connections.is_some()),
            (
                "max_connections_per_mailbox",
                raw.max_connections_per_mailbox.is_some(),
            ),
            ("oauth2", raw.oauth2.is_some()),
            ("profile", raw.profile.is_some()),
            ("max_message_size", raw.max_message_size.is_some()),
            ("disarm_read_receipts", raw.disarm_read_receipts.is_some()),
            (
                "include_virtual_folders",
                raw.include_virtual_folders.is_some(),
            ),
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
            if raw.tls_pin_sha256.is_some() {
                self.problem(&key("tls_pin_sha256"), "not used with security = \"plain\"");
            }
        }
        let tls_ca = match raw.tls_ca {
            Some(ca) => self.path(&key("tls_ca"), &ca),
            None => None,
        };
        let tls_pin_sha256 = match raw.tls_pin_sha256 {
            Some(_) if security == Security::Plain => Vec::new(),
            Some(_) if raw.tls_verify == Some(false) => {
                self.problem(
                    &key("tls_pin_sha256"),
                    "a pin is a way to verify the certificate, and tls_verify = false turns \
                     verification off: remove one of them",
                );
                Vec::new()
            }
            pins => self.pins(side, pins, tls_ca.is_some()),
        };
        let choice = match raw.profile.as_deref() {
            None | Some("auto") => ProfileChoice::Auto,
            Some(name) => match Profile::from_name(name) {
                Some(p) => ProfileChoice::Named(p),
                None => {
                    self.problem(
                        &key("profile"),
                        "expected one of \"auto\", \"exchange-online\", \"gmail\", \
                         \"dovecot\", \"cyrus\", \"generic\"",
                    );
                    ProfileChoice::Auto
                }
            },
        };
        if raw.max_message_size == Some(0) {
            self.problem(&key("max_message_size"), "must be at least 1 (bytes)");
        }
        let profile = ProfileSettings {
            choice,
            max_message_size: raw.max_message_size,
            disarm_read_receipts: raw.disarm_read_receipts,
            include_virtual_folders: raw.include_virtual_folders,
            max_connections: raw.max_connections,
        };
        let profile_default = profile
            .named()
            .and_then(|p| p.quirks().max_connections)
            .unwrap_or(DEFAULT_MAX_CONNECTIONS);
        let max_connections = self.at_least_one(
            &key("max_connections"),
            raw.max_connections,
            profile_default,
        );
        let max_connections_per_mailbox = raw
            .max_connections_per_mailbox
            .map(|n| self.at_least_one(&key("max_connections_per_mailbox"), Some(n), n));
        let auth = self.auth(
            side,
            AuthKeys {
                auth: raw.auth,
                user: raw.admin_user,
                password: raw.admin_password,
                login: raw.admin_login,
                separator: raw.master_separator,
                oauth2: raw.oauth2,
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
                tls_pin_sha256,
                auth: auth?,
                max_connections,
                max_connections_per_mailbox,
                profile,
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
            oauth2,
        } = keys;
        if oauth2.is_some() && !matches!(auth, Some(RawAuth::OAuth2)) {
            self.problem(
                &key("oauth2"),
                "only used with auth = \"oauth2\"; remove it or set auth = \"oauth2\"",
            );
        }
        match auth {
            None => {
                self.problem(
                    &key("auth"),
                    "missing: \"admin\", \"per-mailbox\" or \"oauth2\"",
                );
                None
            }
            Some(RawAuth::OAuth2) => {
                let admin_only = [
                    ("admin_user", user.is_some()),
                    ("admin_password", password.is_some()),
                    ("admin_login", login.is_some()),
                    ("master_separator", separator.is_some()),
                ];
                for (name, _) in admin_only.iter().filter(|(_, present)| *present) {
                    self.problem(&key(name), "not used with auth = \"oauth2\"; remove it");
                }
                match oauth2 {
                    Some(raw) => self
                        .oauth2(&key("oauth2"), raw)
                        .map(|c| Auth::OAuth2(Box::new(c))),
                    None => {
                        self.problem(
                            &key("oauth2"),
                            format!(
                                "auth = \"oauth2\" needs a [{side}.oauth2] table (flow, \
                                 client_id, …)"
                            ),
                        );
                        None
                    }
                }
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

    fn oauth2(&mut self, key: &str, raw: RawOAuth2) -> Option<OAuth2Config> {
        self.oauth2_table(key, raw, EXCHANGE_ONLINE_SCOPE, false)
    }

    /// An oauth2 table: `[side.oauth2]` (an IMAP login), or with `directory` a Graph
    /// directory's own application, whose flow is client credentials (the default there) and
    /// which has no SASL mechanism.
    fn oauth2_table(
        &mut self,
        key: &str,
        mut raw: RawOAuth2,
        client_credentials_scope: &str,
        directory: bool,
    ) -> Option<OAuth2Config> {
        let k = |name: &str| format!("{key}.{name}");
        if directory {
            if raw.mechanism.is_some() {
                self.problem(
                    &k("mechanism"),
                    "not used for a directory (Microsoft Graph takes the token over HTTPS); \
                     remove it",
                );
            }
            match raw.flow {
                None => raw.flow = Some(RawFlow::ClientCredentials),
                Some(RawFlow::ServiceAccount) => {
                    self.problem(
                        &k("flow"),
                        "Microsoft Graph needs an Entra ID application: flow = \
                         \"client-credentials\" (the default here)",
                    );
                    return None;
                }
                Some(RawFlow::ClientCredentials) => {}
            }
        }
        let mechanism = match raw.mechanism {
            None | Some(RawMechanism::Xoauth2) => OAuth2Mechanism::XOAuth2,
            Some(RawMechanism::Oauthbearer) => OAuth2Mechanism::OAuthBearer,
        };
        let tls_ca = raw
            .tls_ca
            .as_deref()
            .and_then(|ca| self.path(&k("tls_ca"), ca));
        let scope = match raw.scope {
            Some(scope) if scope.trim().is_empty() => {
                self.problem(
                    &k("scope"),
                    "must not be empty; leave it out for the default",
                );
                None
            }
            other => other.map(|s| s.trim().to_owned()),
        };
        let token_url = raw.token_url.map(|u| u.trim().to_owned());
        let (flow, default_url, default_scope) = match raw.flow {
            None => {
                self.problem(
                    &k("flow"),
                    "missing: \"client-credentials\" (Entra ID / Microsoft 365) or \
                     \"service-account\" (Google Workspace)",
                );
                return None;
            }
            Some(RawFlow::ClientCredentials) => {
                if raw.key_file.is_some() {
                    self.problem(
                        &k("key_file"),
                        "only used with flow = \"service-account\"; remove it",
                    );
                }
                let tenant = match raw.tenant {
                    Some(t) if t.trim().is_empty() || t.contains(['/', '?', '#', ' ']) => {
                        self.problem(
                            &k("tenant"),
                            "must be the directory (tenant) ID or a domain such as \
                             contoso.onmicrosoft.com",
                        );
                        None
                    }
                    other => other.map(|t| t.trim().to_owned()),
                };
                if tenant.is_none() && token_url.is_none() && !self.has_problem_at(&k("tenant")) {
                    self.problem(
                        &k("tenant"),
                        "missing: the directory (tenant) ID, or a token_url",
                    );
                }
                let client_id = self.text(
                    &k("client_id"),
                    raw.client_id,
                    "missing: the application (client) ID",
                );
                let credential = match (raw.client_secret, raw.client_certificate, raw.client_key) {
                    (Some(secret), None, None) => self
                        .secret(&k("client_secret"), secret)
                        .map(ClientCredential::Secret),
                    (None, Some(cert), Some(key_ref)) => {
                        let certificate = self.path(&k("client_certificate"), &cert);
                        let key = self.secret(&k("client_key"), key_ref);
                        Some(ClientCredential::Certificate {
                            certificate: certificate?,
                            key: key?,
                        })
                    }
                    (None, Some(_), None) => {
                        self.problem(
                            &k("client_key"),
                            "missing: the certificate's private key, { file = \"key.pem\" }",
                        );
                        None
                    }
                    (None, None, Some(_)) => {
                        self.problem(
                            &k("client_certificate"),
                            "missing: the certificate (PEM) whose private key client_key is",
                        );
                        None
                    }
                    (Some(_), _, _) => {
                        self.problem(
                            &k("client_secret"),
                            "either client_secret or client_certificate + client_key, not both",
                        );
                        None
                    }
                    (None, None, None) => {
                        self.problem(
                            &k("client_secret"),
                            "missing: client_secret = { env | file }, or client_certificate \
                             + client_key",
                        );
                        None
                    }
                };
                let default_url = tenant.as_deref().map(entra_token_url);
                (
                    OAuth2Flow::ClientCredentials {
                        tenant,
                        client_id: client_id?,
                        credential: credential?,
                    },
                    default_url,
                    client_credentials_scope,
                )
            }
            Some(RawFlow::ServiceAccount) => {
                let others = [
                    ("tenant", raw.tenant.is_some()),
                    ("client_id", raw.client_id.is_some()),
                    ("client_secret", raw.client_secret.is_some()),
                    ("client_certificate", raw.client_certificate.is_some()),
                    ("client_key", raw.client_key.is_some()),
                ];
                for (name, _) in others.iter().filter(|(_, present)| *present) {
                    self.problem(
                        &k(name),
                        "only used with flow = \"client-credentials\"; a service account's \
                         key file holds its identity",
                    );
                }
                let key_file = match raw.key_file {
                    Some(raw) => self.secret(&k("key_file"), raw),
                    None => {
                        self.problem(
                            &k("key_file"),
                            "missing: the service account's JSON key, { file = \"key.json\" }",
                        );
                        None
                    }
                };
                (
                    OAuth2Flow::ServiceAccount { key: key_file? },
                    None,
                    GMAIL_SCOPE,
                )
            }
        };
        let token_url = token_url.or(default_url);
        if let Some(url) = &token_url {
            self.token_url(&k("token_url"), url, raw.allow_plain == Some(true));
        } else if raw.allow_plain.is_some() {
            self.problem(&k("allow_plain"), "only used with an http:// token_url");
        }
        Some(OAuth2Config {
            flow,
            token_url,
            scope: scope.unwrap_or_else(|| default_scope.to_owned()),
            mechanism,
            tls_ca,
        })
    }

    /// `https://host[:port]/path`, or `http://` to the loopback interface with
    /// `allow_plain = true`.
    fn token_url(&mut self, key: &str, url: &str, allow_plain: bool) {
        let allow_key = key.replace("token_url", "allow_plain");
        self.web_url(
            key,
            url,
            allow_plain,
            &allow_key,
            "the client's credentials",
        );
    }

    /// An HTTPS URL, or `http://` to the loopback interface confirmed by `allow_key = true`;
    /// `exposed` says what plain HTTP would expose. Whether it is acceptable.
    fn web_url(
        &mut self,
        key: &str,
        url: &str,
        allow_plain: bool,
        allow_key: &str,
        exposed: &str,
    ) -> bool {
        let (plain, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (true, rest)
        } else {
            self.problem(
                key,
                "must start with https:// (or http:// on the loopback interface)",
            );
            return false;
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => match v6.split_once(']') {
                Some((host, after)) => (host, after.strip_prefix(':')),
                None => ("", None),
            },
            None => match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
            self.problem(key, "the port must be a number from 1 to 65535");
            return false;
        }
        if host.is_empty() || host.contains('@') {
            self.problem(key, "must name a host: https://login.example/path");
            return false;
        }
        let table = allow_key.rsplit_once('.').map_or("", |(t, _)| t);
        if plain {
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                self.problem(
                    key,
                    format!(
                        "http:// sends {exposed} unencrypted; it is only allowed to the \
                         loopback interface (localhost, 127.0.0.1, ::1), with allow_plain = true"
                    ),
                );
                return false;
            } else if !allow_plain {
                self.problem(
                    key,
                    format!(
                        "http:// sends {exposed} unencrypted; add allow_plain = true to \
                         [{table}] to confirm"
                    ),
                );
                return false;
            }
        } else if allow_plain {
            self.problem(
                allow_key,
                format!(
                    "only used with an http:// {}",
                    key.rsplit('.').next().unwrap_or(key)
                ),
            );
        }
        true
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
        let network = self.network(&raw);
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
            lease_seconds: self.lease_seconds(raw.lease_seconds),
            network,
        }
    }

    /// `[migration]`'s timeout and retry keys.
    fn network(&mut self, raw: &RawMigration) -> NetworkSettings {
        let defaults = NetworkSettings::default();
        let mut seconds = |key: &str, value: Option<u64>, default: Duration| match value {
            None => default,
            Some(s) if !(1..=MAX_NETWORK_SECONDS).contains(&s) => {
                self.problem(
                    key,
                    format!(
                        "{s}: expected a whole number of seconds from 1 to {MAX_NETWORK_SECONDS}"
                    ),
                );
                default
            }
            Some(s) => Duration::from_secs(s),
        };
        let io_timeout = seconds(
            "migration.io_timeout_seconds",
            raw.io_timeout_seconds,
            defaults.io_timeout,
        );
        let retry_first_delay = seconds(
            "migration.retry_first_delay_seconds",
            raw.retry_first_delay_seconds,
            defaults.retry_first_delay,
        );
        let retry_max_delay = seconds(
            "migration.retry_max_delay_seconds",
            raw.retry_max_delay_seconds,
            defaults.retry_max_delay.max(retry_first_delay),
        );
        if retry_max_delay < retry_first_delay {
            self.problem(
                "migration.retry_max_delay_seconds",
                format!(
                    "{} is less than retry_first_delay_seconds = {}",
                    retry_max_delay.as_secs(),
                    retry_first_delay.as_secs()
                ),
            );
        }
        NetworkSettings {
            io_timeout,
            retry_first_delay,
            retry_max_delay,
            retries_without_progress: raw
                .retries_without_progress
                .unwrap_or(defaults.retries_without_progress),
        }
    }

    fn lease_seconds(&mut self, value: Option<u64>) -> u64 {
        let value = value.unwrap_or(super::DEFAULT_LEASE_SECONDS);
        let range = super::LEASE_SECONDS_RANGE;
        if !range.contains(&value) {
            self.problem(
                "migration.lease_seconds",
                format!(
                    "must be from {} to {} (seconds a claim on a mailbox's pass lasts \
                     without renewal)",
                    range.start(),
                    range.end()
                ),
            );
        }
        value
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
