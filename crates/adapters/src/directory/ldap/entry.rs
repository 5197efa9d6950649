//! Search entries as mailboxes: the ID (GUIDs included), the login and the addresses
//! (`proxyAddresses` included). Pure: no connection needed.

use ldap3::SearchEntry;
use mailferry_core::model::{DirectoryMailbox, EmailAddress, MailboxId, push_unique_address};
use mailferry_core::ports::LdapSettings;

pub(super) fn is_guid_attribute(name: &str) -> bool {
    name.eq_ignore_ascii_case("objectGUID") || name.eq_ignore_ascii_case("mS-DS-ConsistencyGuid")
}

pub(super) fn is_proxy_attribute(name: &str) -> bool {
    name.eq_ignore_ascii_case("proxyAddresses")
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
pub(super) fn to_dir_entry(s: &LdapSettings, e: &SearchEntry) -> Result<DirectoryMailbox, String> {
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
        push_unique_address(&mut addresses, a);
    }
    let display_name = s
        .display_name_attribute
        .as_deref()
        .and_then(|a| first_text(e, a));
    Ok(DirectoryMailbox {
        id: MailboxId::new(id),
        dn: e.dn.clone(),
        login,
        addresses,
        display_name,
    })
}

/// `local@domain` by the one address rule ([`EmailAddress::parse`]); `None` for something
/// that is not an address.
pub(crate) fn normalize_address(raw: &str) -> Option<String> {
    EmailAddress::parse(raw).ok().map(EmailAddress::into_string)
}

/// Splits `proxyAddresses` values into the primary (`SMTP:`, the first one if several) and
/// the others (`smtp:`, and any further `SMTP:`), normalised; other prefixes are ignored.
pub(crate) fn split_proxy_addresses<'a>(
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
        let Some(address) = normalize_address(address.trim()) else {
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
        push_unique_address(&mut list, a);
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
