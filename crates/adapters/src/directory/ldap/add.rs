//! Creating a mailbox: the new entry's DN and attributes, and adding it.

use std::collections::HashSet;

use ldap3::{LdapResult, Scope};
use mailferry_core::job::DirectorySecurity;
use mailferry_core::model::{DirectoryMailbox, NewMailbox};
use mailferry_core::ports::{DirectoryError, LdapSettings};

use super::entry::{is_proxy_attribute, normalize_address, to_dir_entry};
use super::error::op_error;
use super::search::base_filter;
use super::{LdapDirectory, REPLY_TIMEOUT};

impl LdapDirectory {
    /// Adds `<login_attribute>=<login>,<base>` with `objectClass` = `object_classes`, the login
    /// attribute, the primary address attribute, `cn` and `sn` (the display name, or the
    /// login), the display name attribute and `userPassword` when given; then reads the entry
    /// back, with its ID, and returns it.
    ///
    /// An entry that already exists is the server's `entryAlreadyExists (68)`
    /// ([`DirectoryError::result_code`]). If the new entry does not match the directory's
    /// `filter` (so later lookups would not find it) that is an error too, saying the entry
    /// was created.
    pub fn add_mailbox(&mut self, m: &NewMailbox) -> Result<DirectoryMailbox, DirectoryError> {
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
        let dn = if is_active_directory(m) {
            if m.password.is_some() && s.security == DirectorySecurity::Plain {
                return Err(config(format!(
                    "cannot create {}: Active Directory sets a password (unicodePwd) only over \
                     an encrypted connection: use ldaps:// or StartTLS",
                    m.login
                )));
            }
            let (dn, attributes) = ad_entry(s, m);
            let operation = format!("add {dn}");
            self.conn
                .with_timeout(REPLY_TIMEOUT)
                .add(&dn, attributes)
                .and_then(LdapResult::success)
                .map_err(|e| op_error(s, &operation, e))?;
            dn
        } else {
            let dn = new_entry_dn(&s.login_attribute, &m.login, &m.base);
            let attributes = new_entry_attributes(s, m);
            let operation = format!("add {dn}");
            self.conn
                .with_timeout(REPLY_TIMEOUT)
                .add(&dn, attributes)
                .and_then(LdapResult::success)
                .map_err(|e| op_error(s, &operation, e))?;
            dn
        };

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
pub(super) fn new_entry_dn(login_attribute: &str, login: &str, base: &str) -> String {
    format!("{login_attribute}={},{base}", escape_rdn_value(login))
}

/// The attributes of a new mailbox entry, merged by name (ignoring case).
pub(super) fn new_entry_attributes(
    s: &LdapSettings,
    m: &NewMailbox,
) -> Vec<(String, HashSet<String>)> {
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

/// An attribute name with its values, as bytes (`unicodePwd` is not text).
pub(super) type BinaryAttribute = (Vec<u8>, HashSet<Vec<u8>>);

/// Whether the new entry is an Active Directory user (`objectClass: user`), which AD creates
/// differently: named by its CN, with `sAMAccountName`, `userPrincipalName`, the password in
/// `unicodePwd` and the account enabled.
pub(super) fn is_active_directory(m: &NewMailbox) -> bool {
    m.object_classes
        .iter()
        .any(|c| c.eq_ignore_ascii_case("user"))
}

/// The DN and attributes of a new Active Directory user: `CN=<display name>,<base>` with
/// `sAMAccountName` (the login; AD allows 20 characters), `userPrincipalName` and `mail` (the
/// address), `proxyAddresses` (`SMTP:<address>`), `displayName`, the login attribute if it is
/// another one, and with a password `unicodePwd` (the quoted password in UTF-16LE, as AD
/// wants it) and `userAccountControl` 512 (a normal, enabled account). Without a password AD
/// leaves the account disabled.
pub(super) fn ad_entry(s: &LdapSettings, m: &NewMailbox) -> (String, Vec<BinaryAttribute>) {
    let address = normalize_address(&m.address).unwrap_or_else(|| m.address.clone());
    let name = m
        .display_name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or(&m.login)
        .to_string();
    let dn = format!("CN={},{}", escape_rdn_value(&name), m.base);
    let mut attrs: Vec<BinaryAttribute> = Vec::new();
    let mut put = |attr: &str, value: Vec<u8>| match attrs
        .iter_mut()
        .find(|(n, _)| n.eq_ignore_ascii_case(attr.as_bytes()))
    {
        Some((_, values)) => {
            values.insert(value);
        }
        None => attrs.push((attr.as_bytes().to_vec(), HashSet::from([value]))),
    };
    for class in &m.object_classes {
        put("objectClass", class.clone().into_bytes());
    }
    put("sAMAccountName", m.login.clone().into_bytes());
    put("userPrincipalName", address.clone().into_bytes());
    put("mail", address.clone().into_bytes());
    put("proxyAddresses", format!("SMTP:{address}").into_bytes());
    put("displayName", name.into_bytes());
    let known = [
        "sAMAccountName",
        "userPrincipalName",
        "mail",
        "proxyAddresses",
    ];
    if !known
        .iter()
        .any(|k| k.eq_ignore_ascii_case(&s.login_attribute))
    {
        put(&s.login_attribute, m.login.clone().into_bytes());
    }
    if let Some(password) = &m.password {
        let quoted = format!("\"{password}\"");
        put(
            "unicodePwd",
            quoted.encode_utf16().flat_map(u16::to_le_bytes).collect(),
        );
        put("userAccountControl", b"512".to_vec());
    }
    (dn, attrs)
}
