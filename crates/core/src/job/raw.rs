//! Raw file structure (stage 1): the `Raw*` structs serde reads the file into.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};

use super::{Mode, Security};

const SECRET_FORM: &str = "a secret must be written as { env = \"VARIABLE\" } or \
     { file = \"path\" }; secrets are never written in the job file";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJob {
    pub(super) name: Option<String>,
    pub(super) state: Option<String>,
    pub(super) state_password: Option<RawSecret>,
    pub(super) mode: Option<Mode>,
    pub(super) source: Option<RawConnection>,
    pub(super) target: Option<RawConnection>,
    pub(super) mailboxes: Option<RawMailboxes>,
    pub(super) migration: Option<RawMigration>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawKind {
    Imap,
    Maildir,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum RawAuth {
    Admin,
    PerMailbox,
    #[serde(rename = "oauth2")]
    OAuth2,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum RawFlow {
    ClientCredentials,
    ServiceAccount,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawMechanism {
    Xoauth2,
    Oauthbearer,
}

/// `[source.oauth2]` / `[target.oauth2]`: the union of both flows' keys; stage 2 rejects the
/// keys of the other flow.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOAuth2 {
    pub(super) flow: Option<RawFlow>,
    pub(super) tenant: Option<String>,
    pub(super) client_id: Option<String>,
    pub(super) client_secret: Option<RawSecret>,
    pub(super) client_certificate: Option<String>,
    pub(super) client_key: Option<RawSecret>,
    pub(super) key_file: Option<RawSecret>,
    pub(super) token_url: Option<String>,
    pub(super) scope: Option<String>,
    pub(super) mechanism: Option<RawMechanism>,
    pub(super) allow_plain: Option<bool>,
    pub(super) tls_ca: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum RawAdminLogin {
    SaslAuthzid,
    MasterSeparator,
}

/// `[source]` / `[target]`: the union of the keys of every kind; stage 2 rejects the keys that
/// do not apply to the chosen kind.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConnection {
    pub(super) kind: Option<RawKind>,
    pub(super) host: Option<String>,
    pub(super) port: Option<u16>,
    pub(super) security: Option<Security>,
    pub(super) allow_plain: Option<bool>,
    pub(super) tls_ca: Option<String>,
    pub(super) tls_verify: Option<bool>,
    /// A string or a list of strings; read in stage 2.
    pub(super) tls_pin_sha256: Option<toml::Value>,
    pub(super) auth: Option<RawAuth>,
    pub(super) admin_user: Option<String>,
    pub(super) admin_password: Option<RawSecret>,
    pub(super) admin_login: Option<RawAdminLogin>,
    pub(super) master_separator: Option<String>,
    pub(super) max_connections: Option<usize>,
    pub(super) max_connections_per_mailbox: Option<usize>,
    pub(super) profile: Option<String>,
    pub(super) max_message_size: Option<u64>,
    pub(super) disarm_read_receipts: Option<bool>,
    pub(super) include_virtual_folders: Option<bool>,
    pub(super) path: Option<String>,
    pub(super) directory: Option<RawDirectory>,
    pub(super) create: Option<RawCreate>,
    pub(super) oauth2: Option<RawOAuth2>,
}

/// The login keys of an IMAP connection, taken out of [`RawConnection`].
pub(super) struct AuthKeys {
    pub(super) auth: Option<RawAuth>,
    pub(super) user: Option<String>,
    pub(super) password: Option<RawSecret>,
    pub(super) login: Option<RawAdminLogin>,
    pub(super) separator: Option<String>,
    pub(super) oauth2: Option<RawOAuth2>,
}

/// `[source.directory]` / `[target.directory]` (SPEC §3). Parsed so the file format is settled,
/// but refused by stage 2 until directories are implemented.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDirectory {
    pub(super) kind: Option<String>,
    /// `openldap` (the default) or `active-directory`: the defaults of the attribute keys.
    pub(super) schema: Option<String>,
    pub(super) url: Option<String>,
    pub(super) bind_dn: Option<String>,
    pub(super) bind_password: Option<RawSecret>,
    pub(super) base: Option<String>,
    pub(super) filter: Option<String>,
    pub(super) security: Option<String>,
    pub(super) tls_ca: Option<String>,
    /// A string or a list of strings; read in stage 2.
    pub(super) tls_pin_sha256: Option<toml::Value>,
    pub(super) id_attribute: Option<String>,
    pub(super) login_attribute: Option<String>,
    pub(super) primary_address_attribute: Option<String>,
    pub(super) alias_attribute: Option<String>,
    pub(super) display_name_attribute: Option<String>,
    /// `kind = "graph"`: the Graph endpoint, its plain-HTTP confirmation and the application.
    pub(super) graph_url: Option<String>,
    pub(super) allow_plain: Option<bool>,
    pub(super) oauth2: Option<RawOAuth2>,
}

/// `[target.create]` (SPEC §3): mailbox creation in the target directory. Parsed, refused by
/// stage 2 until directories are implemented.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCreate {
    pub(super) base: Option<String>,
    pub(super) domain: Option<String>,
    pub(super) object_classes: Option<Vec<String>>,
    pub(super) initial_password: Option<RawSecret>,
    /// Graph targets: the licence, the usage location and how long to wait for the mailbox.
    pub(super) license_sku: Option<String>,
    pub(super) usage_location: Option<String>,
    pub(super) mailbox_wait_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMailboxes {
    pub(super) csv: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMigration {
    pub(super) concurrency: Option<usize>,
    pub(super) include_folders: Option<Vec<String>>,
    pub(super) exclude_folders: Option<Vec<String>>,
    /// A string or a TOML local date; both are accepted.
    pub(super) since: Option<toml::Value>,
    pub(super) until: Option<toml::Value>,
    pub(super) skip_deleted: Option<bool>,
    pub(super) folder_map: Option<BTreeMap<String, String>>,
    pub(super) lease_seconds: Option<u64>,
    pub(super) io_timeout_seconds: Option<u64>,
    pub(super) retry_first_delay_seconds: Option<u64>,
    pub(super) retry_max_delay_seconds: Option<u64>,
    pub(super) retries_without_progress: Option<u32>,
}

/// A secret reference as written: `{ env = "VAR" }` or `{ file = "path" }`.
///
/// Deserialized by hand so that a secret written in clear (`admin_password = "hunter2"`) gets
/// an explanation instead of serde's "invalid type: string \"hunter2\"", which would echo it.
#[derive(Debug)]
pub(super) enum RawSecret {
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
