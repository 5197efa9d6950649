//! Reconfigure a connection from the web console (SPEC §7): the editable keys of the job
//! file's connections and directories, read for a form, and a form's changes written back.
//!
//! Editing the job file is how a connection is reconfigured (SPEC §3), so a form is nothing but
//! an edit of that file made for the admin: the file's text is edited with `toml_edit`, which
//! keeps every comment, blank line and key order, only the keys the form changed are touched,
//! and the edited text must pass [`Job::parse`], the very validation a hand edit meets on the
//! next command. Only then is it written, atomically; a refused form writes nothing. The
//! job-change rule then applies as for a hand edit (every service notices an edited file by
//! its SHA-256); [`reconfigure`] applies it at once, so the console shows its effect.
//!
//! Secrets stay out of the file and out of the browser: a secret key is shown and accepted only
//! as its reference (`{ "env": "NAME" }` or `{ "file": "path" }`); a plain value is refused.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml_edit::{DocumentMut, InlineTable, Item, Table, TableLike, Value};

use super::{App, AppError, Result, job_changed};
use crate::job::{Job, JobError, JobProblem};
use crate::model::EntryId;

/// One form of the console: a connection or its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Section {
    #[serde(rename = "source")]
    Source,
    #[serde(rename = "target")]
    Target,
    #[serde(rename = "source.directory")]
    SourceDirectory,
    #[serde(rename = "target.directory")]
    TargetDirectory,
    #[serde(rename = "target.create")]
    TargetCreate,
    #[serde(rename = "source.oauth2")]
    SourceOAuth2,
    #[serde(rename = "target.oauth2")]
    TargetOAuth2,
    #[serde(rename = "source.directory.oauth2")]
    SourceDirectoryOAuth2,
    #[serde(rename = "target.directory.oauth2")]
    TargetDirectoryOAuth2,
}

impl Section {
    pub const ALL: [Section; 9] = [
        Section::Source,
        Section::SourceOAuth2,
        Section::SourceDirectory,
        Section::SourceDirectoryOAuth2,
        Section::Target,
        Section::TargetOAuth2,
        Section::TargetDirectory,
        Section::TargetDirectoryOAuth2,
        Section::TargetCreate,
    ];

    /// The section's table in the job file, as a dotted key.
    pub fn as_str(self) -> &'static str {
        match self {
            Section::Source => "source",
            Section::Target => "target",
            Section::SourceDirectory => "source.directory",
            Section::TargetDirectory => "target.directory",
            Section::TargetCreate => "target.create",
            Section::SourceOAuth2 => "source.oauth2",
            Section::TargetOAuth2 => "target.oauth2",
            Section::SourceDirectoryOAuth2 => "source.directory.oauth2",
            Section::TargetDirectoryOAuth2 => "target.directory.oauth2",
        }
    }

    pub fn parse(text: &str) -> Option<Section> {
        Section::ALL.into_iter().find(|s| s.as_str() == text)
    }

    fn title(self) -> &'static str {
        match self {
            Section::Source => "Source server",
            Section::Target => "Target server",
            Section::SourceDirectory => "Source directory",
            Section::TargetDirectory => "Target directory",
            Section::TargetCreate => "Mailbox creation in the target directory",
            Section::SourceOAuth2 => "Source OAuth2 (auth = \"oauth2\")",
            Section::TargetOAuth2 => "Target OAuth2 (auth = \"oauth2\")",
            Section::SourceDirectoryOAuth2 => "Source directory's application (Microsoft Graph)",
            Section::TargetDirectoryOAuth2 => "Target directory's application (Microsoft Graph)",
        }
    }

    fn side(self) -> &'static str {
        match self {
            Section::Source
            | Section::SourceDirectory
            | Section::SourceOAuth2
            | Section::SourceDirectoryOAuth2 => "source",
            Section::Target
            | Section::TargetDirectory
            | Section::TargetCreate
            | Section::TargetOAuth2
            | Section::TargetDirectoryOAuth2 => "target",
        }
    }

    fn is_directory(self) -> bool {
        matches!(self, Section::SourceDirectory | Section::TargetDirectory)
    }

    /// The connection's own OAuth2 table (`[side.oauth2]`), whose form chooses OAuth2.
    fn is_connection_oauth2(self) -> bool {
        matches!(self, Section::SourceOAuth2 | Section::TargetOAuth2)
    }

    /// The section's table inside its side's (`directory`, `create`, `oauth2`,
    /// `directory.oauth2`); empty for the connection itself.
    fn sub_path(self) -> &'static [&'static str] {
        match self {
            Section::Source | Section::Target => &[],
            Section::SourceDirectory | Section::TargetDirectory => &["directory"],
            Section::TargetCreate => &["create"],
            Section::SourceOAuth2 | Section::TargetOAuth2 => &["oauth2"],
            Section::SourceDirectoryOAuth2 | Section::TargetDirectoryOAuth2 => {
                &["directory", "oauth2"]
            }
        }
    }

    /// Every key the section's form can edit, whatever the connection's or directory's kind.
    fn fields(self) -> impl Iterator<Item = &'static Field> {
        let list: &[Field] = match self.sub_path() {
            [] => CONNECTION_FIELDS,
            ["create"] => CREATE_FIELDS,
            ["oauth2"] | ["directory", "oauth2"] => OAUTH2_FIELDS,
            _ => DIRECTORY_FIELDS,
        };
        list.iter()
    }

    /// The key `name` as the form of this kind has it (a directory's `filter` is an LDAP
    /// filter or an OData one).
    fn field(self, name: &str, kind: Applies) -> Option<&'static Field> {
        self.fields()
            .find(|f| f.name == name && (f.applies == Applies::Always || f.applies == kind))
    }
}

/// What a field holds, and so how the form's text is written in TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Input {
    /// A string.
    Text,
    /// An integer; text that is not one is written as a string, for the validation to refuse
    /// in the job file's own words.
    Number,
    /// A string, one of `choices`.
    Choice,
    /// `true`, or the key left out (its default is false).
    Flag,
    /// `true` or `false`, or the key left out for its default (`tls_verify`, default true).
    Boolean,
    /// A list of strings, typed as one text with commas between them.
    List,
    /// A secret reference: `{ env = "NAME" }` or `{ file = "path" }`.
    Secret,
}

/// Which kinds of connection or directory a key applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applies {
    Imap,
    Maildir,
    /// An LDAP directory (and creation in one).
    Ldap,
    /// Entra ID through Microsoft Graph (and creation in it).
    Graph,
    Always,
}

impl Applies {
    fn of(kind: Option<&str>) -> Applies {
        match kind {
            Some("maildir") => Applies::Maildir,
            Some("ldap") => Applies::Ldap,
            Some("graph") => Applies::Graph,
            // `imap` and the connection's `oauth2` (the IMAP login's application).
            _ => Applies::Imap,
        }
    }
}

/// One editable key.
#[derive(Debug)]
struct Field {
    name: &'static str,
    label: &'static str,
    input: Input,
    choices: &'static [&'static str],
    /// The default or an example, shown in an empty input.
    hint: &'static str,
    applies: Applies,
}

const fn field(name: &'static str, label: &'static str, input: Input, hint: &'static str) -> Field {
    Field {
        name,
        label,
        input,
        choices: &[],
        hint,
        applies: Applies::Always,
    }
}

const fn imap(name: &'static str, label: &'static str, input: Input, hint: &'static str) -> Field {
    Field {
        applies: Applies::Imap,
        ..field(name, label, input, hint)
    }
}

const fn ldap(name: &'static str, label: &'static str, input: Input, hint: &'static str) -> Field {
    Field {
        applies: Applies::Ldap,
        ..field(name, label, input, hint)
    }
}

const fn graph(name: &'static str, label: &'static str, input: Input, hint: &'static str) -> Field {
    Field {
        applies: Applies::Graph,
        ..field(name, label, input, hint)
    }
}

const CONNECTION_FIELDS: &[Field] = &[
    imap("host", "Host", Input::Text, "mail.example.org"),
    imap("port", "Port", Input::Number, "993 with tls, 143 otherwise"),
    Field {
        choices: &["tls", "starttls", "plain"],
        ..imap("security", "Security", Input::Choice, "tls")
    },
    imap("allow_plain", "Allow plain", Input::Flag, ""),
    imap(
        "tls_ca",
        "TLS CA file",
        Input::Text,
        "ca.pem (besides the system's)",
    ),
    imap(
        "tls_pin_sha256",
        "Pinned certificate",
        Input::List,
        "SHA-256 fingerprint(s), AB:CD:… (commas between)",
    ),
    imap(
        "tls_verify",
        "Verify the certificate",
        Input::Boolean,
        "true (false only for a lab)",
    ),
    Field {
        choices: &["admin", "per-mailbox", "oauth2"],
        ..imap(
            "auth",
            "Login",
            Input::Choice,
            "admin, per-mailbox passwords, or oauth2",
        )
    },
    imap("admin_user", "Admin user", Input::Text, "migration-admin"),
    Field {
        choices: &["sasl-authzid", "master-separator"],
        ..imap("admin_login", "Admin login", Input::Choice, "sasl-authzid")
    },
    imap(
        "master_separator",
        "Master separator",
        Input::Text,
        "* (with master-separator)",
    ),
    imap("admin_password", "Admin password", Input::Secret, ""),
    imap(
        "max_connections",
        "Most connections",
        Input::Number,
        "to this server at once",
    ),
    imap(
        "max_connections_per_mailbox",
        "Most per mailbox",
        Input::Number,
        "to one mailbox at once",
    ),
    Field {
        applies: Applies::Maildir,
        ..field(
            "path",
            "Maildir folder",
            Input::Text,
            "one Maildir++ tree per login",
        )
    },
];

const DIRECTORY_FIELDS: &[Field] = &[
    Field {
        choices: &["openldap", "active-directory"],
        ..ldap("schema", "Schema", Input::Choice, "openldap")
    },
    ldap("url", "URL", Input::Text, "ldaps://dc.example.org:636"),
    Field {
        choices: &["starttls", "plain", "tls"],
        ..ldap(
            "security",
            "Security",
            Input::Choice,
            "starttls, or tls for ldaps://",
        )
    },
    ldap(
        "tls_ca",
        "TLS CA file",
        Input::Text,
        "ca.pem (besides the system's)",
    ),
    ldap(
        "tls_pin_sha256",
        "Pinned certificate",
        Input::List,
        "SHA-256 fingerprint(s), AB:CD:… (commas between)",
    ),
    ldap(
        "bind_dn",
        "Bind DN",
        Input::Text,
        "cn=reader,dc=example,dc=org",
    ),
    ldap("bind_password", "Bind password", Input::Secret, ""),
    ldap("base", "Base", Input::Text, "ou=people,dc=example,dc=org"),
    ldap("filter", "Filter", Input::Text, "(objectClass=*)"),
    ldap("id_attribute", "ID attribute", Input::Text, "entryUUID"),
    ldap("login_attribute", "Login attribute", Input::Text, "uid"),
    ldap(
        "primary_address_attribute",
        "Primary address",
        Input::Text,
        "mail",
    ),
    ldap(
        "alias_attribute",
        "Alias attribute",
        Input::Text,
        "e.g. mailAlternateAddress",
    ),
    ldap("display_name_attribute", "Display name", Input::Text, "cn"),
    graph(
        "graph_url",
        "Graph URL",
        Input::Text,
        "https://graph.microsoft.com/v1.0",
    ),
    graph(
        "tls_ca",
        "TLS CA file",
        Input::Text,
        "ca.pem (besides the system's)",
    ),
    graph(
        "filter",
        "Filter (OData)",
        Input::Text,
        "accountEnabled eq true (the default)",
    ),
    graph(
        "allow_plain",
        "Allow plain HTTP (loopback)",
        Input::Flag,
        "",
    ),
];

/// `[side.oauth2]` (kind `oauth2`: the IMAP login's application) and `[side.directory.oauth2]`
/// (kind `graph`: a Graph directory's own application, which is an Entra ID one and has no
/// SASL mechanism).
const OAUTH2_FIELDS: &[Field] = &[
    Field {
        choices: &["client-credentials", "service-account"],
        ..imap(
            "flow",
            "Flow",
            Input::Choice,
            "client-credentials (Entra ID) or service-account (Google)",
        )
    },
    Field {
        choices: &["client-credentials"],
        ..graph("flow", "Flow", Input::Choice, "client-credentials")
    },
    field(
        "tenant",
        "Tenant",
        Input::Text,
        "contoso.onmicrosoft.com or its ID",
    ),
    field(
        "client_id",
        "Client ID",
        Input::Text,
        "the app registration's ID",
    ),
    field("client_secret", "Client secret", Input::Secret, ""),
    field(
        "client_certificate",
        "Client certificate",
        Input::Text,
        "cert.pem (instead of a secret)",
    ),
    field("client_key", "Client key", Input::Secret, ""),
    imap("key_file", "Service account key", Input::Secret, ""),
    field(
        "token_url",
        "Token URL",
        Input::Text,
        "Entra ID's for the tenant, or the key's",
    ),
    field(
        "scope",
        "Scope",
        Input::Text,
        "Exchange Online's, Gmail's or Graph's",
    ),
    Field {
        choices: &["xoauth2", "oauthbearer"],
        ..imap("mechanism", "Mechanism", Input::Choice, "xoauth2")
    },
    field(
        "tls_ca",
        "TLS CA file",
        Input::Text,
        "for the token endpoint (besides the system's)",
    ),
    field(
        "allow_plain",
        "Allow plain HTTP (loopback)",
        Input::Flag,
        "",
    ),
];

const CREATE_FIELDS: &[Field] = &[
    ldap(
        "base",
        "Base",
        Input::Text,
        "ou=people,dc=new,dc=example (where users are added)",
    ),
    field("domain", "Domain", Input::Text, "new.example"),
    ldap(
        "object_classes",
        "Object classes",
        Input::List,
        "inetOrgPerson, … (commas between)",
    ),
    graph(
        "license_sku",
        "Licence (skuId)",
        Input::Text,
        "a skuId with Exchange Online",
    ),
    graph(
        "usage_location",
        "Usage location",
        Input::Text,
        "CH (two letters, required for a licence)",
    ),
    field("initial_password", "Initial password", Input::Secret, ""),
    graph(
        "mailbox_wait_seconds",
        "Wait for the mailbox",
        Input::Number,
        "600 seconds; 0: do not wait",
    ),
];

/// A secret as the form shows and sends it: where the secret is, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SecretRef {
    Env(String),
    File(String),
}

/// A field's value in a form: JSON `null`, a boolean, an integer, a string, or a secret
/// reference object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FieldValue {
    /// Not in the file; sent by a form, it removes the key.
    Empty,
    Flag(bool),
    Number(i64),
    Text(String),
    List(Vec<String>),
    Secret(SecretRef),
}

/// The forms: every section's editable keys with their values as written in the file.
#[derive(Debug, Serialize)]
pub struct ConnectionsView {
    /// The job file.
    pub path: PathBuf,
    pub sections: Vec<SectionView>,
}

#[derive(Debug, Serialize)]
pub struct SectionView {
    pub section: Section,
    pub title: &'static str,
    /// Whether the table is in the file (a directory may not be; its form adds it).
    pub present: bool,
    /// The connection's `kind` (`imap`, `maildir`); `ldap` for a directory.
    pub kind: Option<String>,
    pub fields: Vec<FieldView>,
}

#[derive(Debug, Serialize)]
pub struct FieldView {
    /// The key in the section (`port`).
    pub name: &'static str,
    /// The dotted key (`source.port`): the one errors name.
    pub key: String,
    pub label: &'static str,
    pub input: Input,
    pub choices: &'static [&'static str],
    pub hint: &'static str,
    pub value: FieldValue,
}

/// What a written form changed.
#[derive(Debug, Serialize)]
pub struct ReconfigureOutcome {
    pub section: Section,
    /// The dotted keys written or removed, in form order; empty when nothing differed.
    pub changed: Vec<String>,
    /// Entries removed by the job-change rule at once (their source mailbox is missing).
    pub removed: Vec<EntryId>,
    pub message: String,
}

/// One reason a form was refused. `field` is the dotted key of the form field concerned, or
/// `None` for a problem of the file that no field of the form holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldProblem {
    pub field: Option<String>,
    pub message: String,
}

/// The forms of the job's connections and directories, values as the job file has them now.
///
/// # Errors
///
/// [`AppError::Input`] when the job file cannot be read or is not TOML.
pub fn connections(app: &App<'_>) -> Result<ConnectionsView> {
    connections_in(&app.job.path)
}

/// Writes a form's changes into one section of the job file (see the module's documentation).
///
/// Only the fields whose value differs from the file's are touched; an empty field removes its
/// key; keys the form does not know are never touched.
///
/// # Errors
///
/// [`AppError::Fields`] when the form is refused (the file is unchanged), each problem next to
/// its field; [`AppError::Input`] when the file cannot be read, is not TOML, or changed while
/// the form was saved; [`AppError::Unavailable`] when it cannot be written.
pub fn reconfigure(
    app: &App<'_>,
    section: Section,
    changes: &BTreeMap<String, FieldValue>,
) -> Result<ReconfigureOutcome> {
    let mut outcome = reconfigure_file(&app.job.path, section, changes)?;
    if outcome.changed.is_empty() {
        return Ok(outcome);
    }
    // The job-change rule at once, rather than at the next command that opens the state: the
    // console then shows what the edit removed, and the admin is told.
    let job = Job::load(&app.job.path).map_err(|e| AppError::Input(e.to_string()))?;
    let opened = app
        .backends
        .open_store(&job)
        .map_err(AppError::from)
        .and_then(|mut store| job_changed(&job, store.as_mut()));
    match opened {
        Ok(removed) => {
            app.removed_notice("The job file changed", &removed);
            if !removed.is_empty() {
                outcome.message.push_str(&format!(
                    "; removed {} whose source mailbox is missing",
                    crate::text::counted(removed.len(), "entry", "entries")
                ));
            }
            outcome.removed = removed;
        }
        // The file is written and stays so; the rule applies at the next command instead.
        Err(e) => outcome.message.push_str(&format!(
            "; the job-change rule applies at the next command ({e})"
        )),
    }
    Ok(outcome)
}

/// [`connections`] of the job file at `path`.
pub fn connections_in(path: &Path) -> Result<ConnectionsView> {
    let file = JobText::read(path)?;
    let doc = file.document()?;
    let sections = Section::ALL
        .into_iter()
        // A directory's own application is a Graph directory's only.
        .filter(|&section| {
            section.sub_path() != ["directory", "oauth2"]
                || directory_kind(&doc, section.side()) == "graph"
        })
        .map(|section| {
            let table = section_table(&doc, section);
            let kind = section_kind(&doc, section);
            let applies = Applies::of(kind.as_deref());
            let fields = section
                .fields()
                .filter(|f| f.applies == Applies::Always || f.applies == applies)
                .map(|f| FieldView {
                    name: f.name,
                    key: format!("{}.{}", section.as_str(), f.name),
                    label: f.label,
                    input: f.input,
                    choices: f.choices,
                    hint: f.hint,
                    value: table.map_or(FieldValue::Empty, |t| current(t, f)),
                })
                .collect();
            SectionView {
                section,
                title: section.title(),
                present: table.is_some(),
                kind,
                fields,
            }
        })
        .collect();
    Ok(ConnectionsView {
        path: path.to_path_buf(),
        sections,
    })
}

/// [`reconfigure`] of the job file at `path`.
pub fn reconfigure_file(
    path: &Path,
    section: Section,
    changes: &BTreeMap<String, FieldValue>,
) -> Result<ReconfigureOutcome> {
    let file = JobText::read(path)?;
    let original = file.document()?;
    let table = section_table(&original, section);
    let applies = Applies::of(section_kind(&original, section).as_deref());

    // What the form asks, field by field; a field whose value is the file's is left alone.
    let mut wanted: Vec<(&'static Field, FieldValue)> = Vec::new();
    let mut refused = Vec::new();
    for (name, value) in changes {
        let key = format!("{}.{name}", section.as_str());
        let Some(field) = section.field(name, applies) else {
            refused.push(FieldProblem {
                field: None,
                message: format!("Not a setting this form can change: {key}"),
            });
            continue;
        };
        match desired(field, value) {
            Err(message) => refused.push(FieldProblem {
                field: Some(key),
                message,
            }),
            Ok(value) => {
                let now = table.map_or(FieldValue::Empty, |t| current(t, field));
                if !same(field, &now, &value) {
                    wanted.push((field, value));
                }
            }
        }
    }
    if !refused.is_empty() {
        return Err(refusal(refused));
    }
    // In the form's order, so that added keys come in that order too.
    wanted.sort_by_key(|(f, _)| section.fields().position(|g| g.name == f.name));
    let changed: Vec<String> = wanted
        .iter()
        .map(|(f, _)| format!("{}.{}", section.as_str(), f.name))
        .collect();
    if wanted.is_empty() {
        return Ok(ReconfigureOutcome {
            section,
            changed,
            removed: Vec::new(),
            message: format!("Nothing to change in [{}]", section.as_str()),
        });
    }

    // The validation stops at the first value of a wrong type, so a refused field is put back
    // as the file has it and the rest checked again: the admin sees every bad field at once.
    let mut problems: Vec<FieldProblem> = Vec::new();
    let edited = loop {
        let mut doc = original.clone();
        edit(&mut doc, section, &wanted)?;
        let text = doc.to_string();
        let found = match Job::parse(path, &text) {
            Ok(_) if problems.is_empty() => break text,
            // Every refused field put back, the rest is valid: the loop below reports.
            Ok(_) => Vec::new(),
            Err(JobError::Invalid {
                problems: found, ..
            }) => found,
            Err(other) => return Err(AppError::Input(other.to_string())),
        };
        let before = wanted.len();
        for problem in found {
            let field = form_field(&problem);
            if let Some(key) = &field {
                wanted.retain(|(f, _)| format!("{}.{}", section.as_str(), f.name) != *key);
            }
            let problem = FieldProblem {
                message: match (&field, &problem.key) {
                    (None, Some(key)) => format!("{key}: {}", capitalised(&problem.message)),
                    _ => capitalised(&problem.message),
                },
                field,
            };
            if !problems.contains(&problem) {
                problems.push(problem);
            }
        }
        if wanted.len() == before {
            // In the form's order, the file's own problems last.
            problems.sort_by_key(|p| {
                p.field
                    .as_deref()
                    .and_then(|key| {
                        let name = key.strip_prefix(section.as_str())?.strip_prefix('.')?;
                        section.fields().position(|f| f.name == name)
                    })
                    .unwrap_or(usize::MAX)
            });
            return Err(refusal(problems));
        }
    };
    file.replace(&edited)?;
    Ok(ReconfigureOutcome {
        section,
        message: format!(
            "Saved [{}] in {}: {}",
            section.as_str(),
            path.display(),
            changed.join(", ")
        ),
        changed,
        removed: Vec::new(),
    })
}

fn refusal(problems: Vec<FieldProblem>) -> AppError {
    let n = problems.len();
    AppError::Fields {
        message: format!(
            "The job file was not changed: {n} {} to fix",
            if n == 1 { "problem" } else { "problems" }
        ),
        problems,
    }
}

/// The job's messages start in lower case, to follow a key; alone beside a field they start
/// with a capital.
fn capitalised(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The form field (a dotted key) a job problem is about, if a form has it. A problem inside a
/// value (`source.admin_password.env`) is the field's.
fn form_field(problem: &JobProblem) -> Option<String> {
    let key = problem.key.as_deref()?;
    Section::ALL.into_iter().find_map(|section| {
        let name = key.strip_prefix(section.as_str())?.strip_prefix('.')?;
        let name = name.split('.').next()?;
        section
            .fields()
            .find(|f| f.name == name)
            .map(|f| format!("{}.{}", section.as_str(), f.name))
    })
}

/// The form's value for `field`, as it would be written; `Err` says why it cannot be.
fn desired(field: &Field, value: &FieldValue) -> std::result::Result<FieldValue, String> {
    let text = |s: &str| {
        let s = s.trim();
        if s.is_empty() {
            FieldValue::Empty
        } else {
            FieldValue::Text(s.to_owned())
        }
    };
    match (field.input, value) {
        (_, FieldValue::Empty) => Ok(FieldValue::Empty),
        (Input::Secret, FieldValue::Text(s)) if s.is_empty() => Ok(FieldValue::Empty),
        // The one refusal that is not the job file's: the value would be a secret in clear.
        (Input::Secret, FieldValue::Text(_) | FieldValue::Number(_) | FieldValue::Flag(_)) => Err(
            "A secret is never written in the job file: give the name of the environment \
                 variable or the path of the file that holds it"
                .to_owned(),
        ),
        (Input::Secret, FieldValue::Secret(SecretRef::Env(v))) => Ok(match v.trim() {
            "" => FieldValue::Empty,
            v => FieldValue::Secret(SecretRef::Env(v.to_owned())),
        }),
        (Input::Secret, FieldValue::Secret(SecretRef::File(v))) => Ok(match v.trim() {
            "" => FieldValue::Empty,
            v => FieldValue::Secret(SecretRef::File(v.to_owned())),
        }),
        (_, FieldValue::Secret(_)) => Err("Expected a value, not a secret reference".to_owned()),
        (Input::Boolean, FieldValue::Flag(b)) => Ok(FieldValue::Flag(*b)),
        (Input::Boolean, FieldValue::Text(s)) => match s.trim() {
            "" => Ok(FieldValue::Empty),
            "true" => Ok(FieldValue::Flag(true)),
            "false" => Ok(FieldValue::Flag(false)),
            _ => Err("Expected true or false".to_owned()),
        },
        (Input::Boolean, _) => Err("Expected true or false".to_owned()),
        (Input::List, FieldValue::Text(s)) => {
            let items: Vec<String> = s
                .split(',')
                .map(str::trim)
                .filter(|i| !i.is_empty())
                .map(str::to_owned)
                .collect();
            Ok(if items.is_empty() {
                FieldValue::Empty
            } else {
                FieldValue::List(items)
            })
        }
        (Input::List, FieldValue::List(items)) => Ok(if items.is_empty() {
            FieldValue::Empty
        } else {
            FieldValue::List(items.iter().map(|i| i.trim().to_owned()).collect())
        }),
        (Input::List, _) => Err("Expected a list of names, commas between them".to_owned()),
        (_, FieldValue::List(_)) => Err("Expected one value, not a list".to_owned()),
        (Input::Flag, FieldValue::Flag(true)) => Ok(FieldValue::Flag(true)),
        (Input::Flag, FieldValue::Flag(false)) => Ok(FieldValue::Empty),
        (Input::Flag, _) => Err("Expected true or false".to_owned()),
        (_, FieldValue::Flag(_)) => Err("Expected a value, not true or false".to_owned()),
        (Input::Number, FieldValue::Number(n)) => Ok(FieldValue::Number(*n)),
        (Input::Number, FieldValue::Text(s)) => Ok(match s.trim().parse::<i64>() {
            Ok(n) => FieldValue::Number(n),
            Err(_) => text(s),
        }),
        (Input::Text | Input::Choice, FieldValue::Number(n)) => Ok(text(&n.to_string())),
        (Input::Text | Input::Choice, FieldValue::Text(s)) => Ok(text(s)),
    }
}

/// Whether the file's value and the form's mean the same, so the key is left as written.
fn same(field: &Field, now: &FieldValue, wanted: &FieldValue) -> bool {
    match field.input {
        // An absent flag is false.
        Input::Flag => (now == &FieldValue::Flag(true)) == (wanted == &FieldValue::Flag(true)),
        // One value written as a string is the list of that one value.
        Input::List => match (now, wanted) {
            (FieldValue::Text(one), FieldValue::List(list)) => list.len() == 1 && list[0] == *one,
            _ => now == wanted,
        },
        _ => now == wanted,
    }
}

/// The value of `field` in `table` as a form shows it. A secret is shown only as its
/// reference: anything else at a secret's key shows as empty, never as its text.
fn current(table: &dyn TableLike, field: &Field) -> FieldValue {
    let Some(item) = table.get(field.name) else {
        return FieldValue::Empty;
    };
    if field.input == Input::Secret {
        return item
            .as_table_like()
            .and_then(secret_ref)
            .map_or(FieldValue::Empty, FieldValue::Secret);
    }
    match item.as_value() {
        Some(Value::String(s)) => FieldValue::Text(s.value().clone()),
        Some(Value::Integer(n)) => FieldValue::Number(*n.value()),
        Some(Value::Boolean(b)) => FieldValue::Flag(*b.value()),
        Some(Value::Array(a)) if a.iter().all(|v| v.as_str().is_some()) => FieldValue::List(
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        ),
        // Not a value this key can have; shown as written, and left so unless changed.
        Some(other) => FieldValue::Text(other.clone().decorated("", "").to_string()),
        None => FieldValue::Text(item.to_string().trim().to_owned()),
    }
}

fn secret_ref(table: &dyn TableLike) -> Option<SecretRef> {
    let mut pairs = table.iter();
    let (key, value) = pairs.next()?;
    if pairs.next().is_some() {
        return None;
    }
    let value = value.as_str()?.to_owned();
    match key {
        "env" => Some(SecretRef::Env(value)),
        "file" => Some(SecretRef::File(value)),
        _ => None,
    }
}

fn section_table(doc: &DocumentMut, section: Section) -> Option<&dyn TableLike> {
    let mut table = doc.get(section.side())?.as_table_like()?;
    for name in section.sub_path() {
        table = table.get(name)?.as_table_like()?;
    }
    Some(table)
}

/// `kind` of the side's directory as written (`ldap` when not written or no directory).
fn directory_kind<'a>(doc: &'a DocumentMut, side: &str) -> &'a str {
    doc.get(side)
        .and_then(Item::as_table_like)
        .and_then(|t| t.get("directory"))
        .and_then(Item::as_table_like)
        .and_then(|t| t.get("kind"))
        .and_then(Item::as_str)
        .unwrap_or("ldap")
}

/// The kind the section's form is for: the connection's (`imap`, `maildir`), the
/// directory's (`ldap`, `graph`; creation follows the target's directory), or `oauth2`.
fn section_kind(doc: &DocumentMut, section: Section) -> Option<String> {
    match section.sub_path() {
        [] => section_table(doc, section)
            .and_then(|t| t.get("kind"))
            .and_then(Item::as_str)
            .map(str::to_owned),
        ["directory"] | ["create"] => Some(directory_kind(doc, section.side()).to_owned()),
        // A directory's own application is a Graph one (the only kind that has it).
        ["directory", "oauth2"] => Some("graph".to_owned()),
        _ => Some("oauth2".to_owned()),
    }
}

/// Applies the changes to the document: values replaced in place (their comments kept), keys
/// removed (the comment lines above them kept), new keys added at the end of the section.
fn edit(doc: &mut DocumentMut, section: Section, wanted: &[(&Field, FieldValue)]) -> Result<()> {
    let side = section.side();
    let missing = || AppError::Input(format!("The job file has no [{side}] section"));
    let side_table = doc
        .get_mut(side)
        .and_then(Item::as_table_like_mut)
        .ok_or_else(missing)?;
    // Filling in the OAuth2 form is choosing OAuth2 for the connection: its login becomes
    // `auth = "oauth2"` in the same edit, and the admin's password keys go (each form saves
    // alone, and neither half would pass the job file's checks on its own).
    if section.is_connection_oauth2()
        && wanted.iter().any(|(_, v)| *v != FieldValue::Empty)
        && side_table.get("auth").and_then(Item::as_str) != Some("oauth2")
    {
        match side_table.get_mut("auth") {
            Some(Item::Value(old)) => {
                let mut new = Value::from("oauth2");
                *new.decor_mut() = old.decor().clone();
                *old = new;
            }
            _ => {
                side_table.insert("auth", Item::Value(Value::from("oauth2")));
            }
        }
        for key in [
            "admin_user",
            "admin_password",
            "admin_login",
            "master_separator",
        ] {
            remove_key(side_table, key);
        }
    }
    let mut table: &mut dyn TableLike = side_table;
    let mut at = side.to_owned();
    for name in section.sub_path() {
        at = format!("{at}.{name}");
        if !table.contains_key(name) {
            if wanted.iter().all(|(_, v)| *v == FieldValue::Empty) {
                return Ok(());
            }
            let mut new = Table::new();
            if section.is_directory() {
                new.insert("kind", Item::Value(Value::from("ldap")));
            }
            table.insert(name, Item::Table(new));
        }
        table = table
            .get_mut(name)
            .and_then(Item::as_table_like_mut)
            .ok_or_else(|| AppError::Input(format!("[{at}] in the job file is not a table")))?;
    }
    let mut orphans = String::new();
    for (field, value) in wanted {
        match to_toml(value) {
            None => {
                if let Some(prefix) = remove_key(table, field.name) {
                    orphans.push_str(&prefix);
                }
            }
            Some(mut new) => match table.get_mut(field.name) {
                Some(Item::Value(old)) => {
                    *new.decor_mut() = old.decor().clone();
                    *old = new;
                }
                _ => {
                    // Absent, or written as a table of its own: replaced by the value.
                    table.insert(field.name, Item::Value(new));
                }
            },
        }
    }
    if !orphans.is_empty() {
        let path: Vec<&str> = section.as_str().split('.').collect();
        keep_after_table(doc, &path, &orphans);
    }
    Ok(())
}

/// Removes `key`, handing the comments and blank lines above it to the next key. Returns them
/// when the key was the table's last, for the caller to keep after the table.
fn remove_key(table: &mut dyn TableLike, key: &str) -> Option<String> {
    let names: Vec<String> = table.iter().map(|(k, _)| k.to_owned()).collect();
    let prefix = raw(table.key(key).and_then(|k| k.leaf_decor().prefix()));
    table.remove(key)?;
    if prefix.is_empty() {
        return None;
    }
    let next = names.iter().skip_while(|k| *k != key).nth(1);
    let theirs = next.and_then(|next| table.key(next).map(|k| raw(k.leaf_decor().prefix())));
    match (next, theirs) {
        (Some(next), Some(theirs)) => {
            if let Some(mut next) = table.key_mut(next) {
                next.leaf_decor_mut()
                    .set_prefix(format!("{prefix}{theirs}"));
            }
            None
        }
        _ => Some(prefix),
    }
}

/// Puts `text` (comment lines) just after the table at `path`: before the next table's
/// header in the file, or at the end of the file.
fn keep_after_table(doc: &mut DocumentMut, path: &[&str], text: &str) {
    let mut headers = Vec::new();
    header_tables(doc.as_table(), &mut Vec::new(), &mut headers);
    let mine = headers
        .iter()
        .find(|(_, p)| p.iter().map(String::as_str).eq(path.iter().copied()))
        .map(|(position, _)| *position);
    let next = mine
        .and_then(|mine| {
            headers
                .iter()
                .filter(|(position, _)| *position > mine)
                .min_by_key(|(position, _)| *position)
        })
        .map(|(_, p)| p.clone());
    let next = next.and_then(|p| {
        let mut table = doc.as_table_mut();
        for key in &p {
            table = table.get_mut(key)?.as_table_mut()?;
        }
        Some(table)
    });
    match next {
        Some(table) => {
            let theirs = raw(table.decor().prefix());
            table.decor_mut().set_prefix(format!("{text}{theirs}"));
        }
        None => {
            let theirs = doc.trailing().as_str().unwrap_or("").to_owned();
            doc.set_trailing(format!("{text}{theirs}"));
        }
    }
}

/// Every table written as a `[header]`, with its place in the file and its path.
fn header_tables(table: &Table, path: &mut Vec<String>, out: &mut Vec<(i64, Vec<String>)>) {
    for (key, item) in table.iter() {
        if let Item::Table(inner) = item {
            path.push(key.to_owned());
            if !inner.is_dotted()
                && !inner.is_implicit()
                && let Some(position) = inner.position()
            {
                // `as`: the position's integer type differs between toml_edit versions.
                out.push((position as i64, path.clone()));
            }
            header_tables(inner, path, out);
            path.pop();
        }
    }
}

/// The text of a piece of decor (comments and whitespace), empty when there is none.
fn raw(piece: Option<&toml_edit::RawString>) -> String {
    piece.and_then(|p| p.as_str()).unwrap_or("").to_owned()
}

fn to_toml(value: &FieldValue) -> Option<Value> {
    match value {
        FieldValue::Empty => None,
        FieldValue::Flag(b) => Some(Value::from(*b)),
        FieldValue::List(items) => {
            let mut array: toml_edit::Array = items.iter().map(String::as_str).collect();
            array.fmt();
            Some(Value::Array(array))
        }
        FieldValue::Number(n) => Some(Value::from(*n)),
        FieldValue::Text(s) => Some(Value::from(s.as_str())),
        FieldValue::Secret(secret) => {
            let (key, value) = match secret {
                SecretRef::Env(v) => ("env", v),
                SecretRef::File(v) => ("file", v),
            };
            let mut table = InlineTable::new();
            table.insert(key, Value::from(value.as_str()));
            table.fmt();
            Some(Value::InlineTable(table))
        }
    }
}

/// The job file's text as read, to be replaced only if it is still the same when written.
struct JobText {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl JobText {
    fn read(path: &Path) -> Result<JobText> {
        let bytes = std::fs::read(path).map_err(|e| {
            AppError::Input(format!(
                "Unable to read the job file {}: {e}",
                path.display()
            ))
        })?;
        Ok(JobText {
            path: path.to_path_buf(),
            bytes,
        })
    }

    fn document(&self) -> Result<DocumentMut> {
        let text = std::str::from_utf8(&self.bytes).map_err(|_| {
            AppError::Input(format!(
                "The job file {} is not valid UTF-8: fix it by hand first",
                self.path.display()
            ))
        })?;
        text.strip_prefix('\u{feff}')
            .unwrap_or(text)
            .parse::<DocumentMut>()
            .map_err(|e| {
                AppError::Input(format!(
                    "The job file {} is not valid TOML now: {}",
                    self.path.display(),
                    e.message()
                ))
            })
    }

    /// Writes `text` in place of the file, atomically: a temporary file beside it, flushed to
    /// disk, renamed over it. A crash leaves the old file or the new one, never half of one.
    fn replace(&self, text: &str) -> Result<()> {
        let unavailable = |what: &str, e: std::io::Error| {
            AppError::Unavailable(format!(
                "Unable to {what} the job file {}: {e}",
                self.path.display()
            ))
        };
        // A hand edit made while the form was filled in must not be overwritten unseen.
        let now = std::fs::read(&self.path).map_err(|e| unavailable("read", e))?;
        if now != self.bytes {
            return Err(AppError::Input(format!(
                "The job file {} changed while the form was saved: nothing was written; \
                 reload the form and try again",
                self.path.display()
            )));
        }
        let bom = if self.bytes.starts_with("\u{feff}".as_bytes()) {
            "\u{feff}"
        } else {
            ""
        };
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        let name = self
            .path
            .file_name()
            .map_or_else(|| "job".into(), |n| n.to_string_lossy());
        let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let written = (|| {
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)?;
            out.write_all(bom.as_bytes())?;
            out.write_all(text.as_bytes())?;
            out.sync_all()?;
            // The job file may be readable by its owner only; the new one stays so.
            let permissions = std::fs::metadata(&self.path)?.permissions();
            std::fs::set_permissions(&temp, permissions)?;
            std::fs::rename(&temp, &self.path)
        })();
        if let Err(e) = written {
            // The temporary file is ours and worthless now; failing to remove it changes
            // nothing about the job file, which is still the old one.
            let _ = std::fs::remove_file(&temp);
            return Err(unavailable("write", e));
        }
        // The rename is durable once the folder is flushed; some filesystems cannot flush a
        // folder, and the new file is in place either way.
        if let Ok(folder) = std::fs::File::open(dir) {
            let _ = folder.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
