//! Reading the directory: the paged listing, lookup by ID, and search by address.

use std::collections::HashMap;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Scope, SearchEntry, SearchOptions, ldap_escape};
use mailferry_core::model::{DirectoryMailbox, MailboxId};
use mailferry_core::ports::{DirectoryError, DirectoryProbe, LdapSettings};

use super::entry::{
    guid_filter_escape, is_guid_attribute, is_proxy_attribute, normalize_address, to_dir_entry,
};
use super::error::{op_error, with_size_limit_hint};
use super::{LdapDirectory, PAGE_SIZE, PROBE_SIZE, REPLY_TIMEOUT};

impl LdapDirectory {
    /// Every mailbox under `base` matching `filter`, read with paged searches. Entries that
    /// lack the ID, the login or a primary address are left out; see
    /// [`LdapDirectory::list_with_warnings`] to learn which.
    pub fn list(&mut self) -> Result<Vec<DirectoryMailbox>, DirectoryError> {
        self.list_with_warnings().map(|(entries, _)| entries)
    }

    /// Like [`LdapDirectory::list`], and also returns one warning per entry left out
    /// (`<dn>: skipped: <why>`), including entries whose ID repeats an earlier one.
    pub fn list_with_warnings(
        &mut self,
    ) -> Result<(Vec<DirectoryMailbox>, Vec<String>), DirectoryError> {
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
        let mut seen: HashMap<MailboxId, String> = HashMap::new();
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
    pub fn lookup(&mut self, id: &str) -> Result<Option<DirectoryMailbox>, DirectoryError> {
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
    pub fn find_by_address(
        &mut self,
        address: &str,
    ) -> Result<Vec<DirectoryMailbox>, DirectoryError> {
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

    /// For `check`: the first [`PROBE_SIZE`] entries under the base matching the filter, and
    /// whether each reads as a mailbox. A base that does not exist is the server's
    /// `noSuchObject (32)`; more entries than the sample is not an error.
    pub fn probe(&mut self) -> Result<DirectoryProbe, DirectoryError> {
        let s = &self.settings;
        let filter = base_filter(&s.filter);
        let operation = format!("search under {} for {filter}", s.base);
        let ldap3::SearchResult(entries, result) = self
            .conn
            .with_search_options(SearchOptions::new().sizelimit(PROBE_SIZE))
            .with_timeout(REPLY_TIMEOUT)
            .search(&s.base, Scope::Subtree, &filter, requested_attributes(s))
            .map_err(|e| op_error(s, &operation, e))?;
        // sizeLimitExceeded (4): more match than the sample, which is what was asked.
        if result.rc != 0 && result.rc != 4 {
            return Err(op_error(
                s,
                &operation,
                ldap3::LdapError::LdapResult { result },
            ));
        }
        let mut probe = DirectoryProbe {
            more: result.rc == 4,
            ..DirectoryProbe::default()
        };
        for raw in entries
            .into_iter()
            .filter(|e| !e.is_ref() && !e.is_intermediate())
        {
            let entry = SearchEntry::construct(raw);
            probe.sampled += 1;
            match to_dir_entry(s, &entry) {
                Ok(_) => probe.mailboxes += 1,
                Err(why) => probe.skipped.push(format!("{}: skipped: {why}", entry.dn)),
            }
        }
        Ok(probe)
    }

    /// A plain (unpaged) search returning the entries only.
    pub(super) fn search(
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
}

/// The configured filter with its parentheses; `(objectClass=*)` when empty.
pub(super) fn base_filter(filter: &str) -> String {
    let f = filter.trim();
    if f.is_empty() {
        "(objectClass=*)".to_string()
    } else if f.starts_with('(') {
        f.to_string()
    } else {
        format!("({f})")
    }
}

pub(super) fn and_filter(filter: &str, extra: &str) -> String {
    format!("(&{}{extra})", base_filter(filter))
}

/// The filter item selecting `id`.
pub(super) fn id_assertion(s: &LdapSettings, id: &str) -> Result<String, DirectoryError> {
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
fn requested_attributes(s: &LdapSettings) -> Vec<String> {
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
