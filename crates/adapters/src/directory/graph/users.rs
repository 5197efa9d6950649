//! Users as mailboxes: the queries (`$select`, `$filter`, paging) and the reading of a user
//! object. Reading is pure and tested on Microsoft's documented examples.

use mailferry_core::model::{DirectoryMailbox, MailboxId, push_unique_address};
use mailferry_core::ports::{DirectoryError, Listing};
use serde_json::Value;

use super::{GraphDirectory, PAGE_SIZE, SELECT};
use crate::directory::ldap::entry::{normalize_address, split_proxy_addresses};
use crate::oauth2::http::Url;

/// A query parameter's value percent-encoded for the request line: unreserved characters and
/// OData's punctuation kept (`'`, `(`, `)`, `,`, `:`, `/`, `$`), everything else (spaces,
/// `+`, `&`, `#`, `%`, non-ASCII) encoded.
pub(super) fn query_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'.'
            | b'_'
            | b'~'
            | b'\''
            | b'('
            | b')'
            | b','
            | b':'
            | b'/'
            | b'$'
            | b'@'
            | b'*' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// An OData string literal: in quotes, a quote doubled.
pub(super) fn odata_string(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Whether `id` has the form of a Graph object ID (a GUID).
pub(super) fn is_object_id(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A user object as a mailbox, or why it is not one.
pub(super) fn to_mailbox(user: &Value) -> Result<DirectoryMailbox, String> {
    let text = |name: &str| {
        user.get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let id = text("id").ok_or("no id")?;
    let login = text("userPrincipalName").ok_or("no userPrincipalName")?;
    let proxy: Vec<&str> = user
        .get("proxyAddresses")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let (smtp_primary, smtp_others) = split_proxy_addresses(proxy);
    let mail = match text("mail") {
        Some(m) => Some(
            normalize_address(m).ok_or_else(|| format!("mail {m:?} is not an email address"))?,
        ),
        None => None,
    };
    // `mail` wins; the SMTP: entry stands in when there is none.
    let (primary, others) = match (mail, smtp_primary) {
        (Some(m), Some(p)) => (m, std::iter::once(p).chain(smtp_others).collect::<Vec<_>>()),
        (Some(m), None) => (m, smtp_others),
        (None, Some(p)) => (p, smtp_others),
        (None, None) => {
            return Err("no mail and no SMTP: address in proxyAddresses (no mailbox)".into());
        }
    };
    let mut addresses = Vec::with_capacity(1 + others.len());
    for a in std::iter::once(primary).chain(others) {
        push_unique_address(&mut addresses, a);
    }
    Ok(DirectoryMailbox {
        id: MailboxId::new(id.to_ascii_lowercase()),
        dn: format!("users/{id}"),
        login: login.to_string(),
        addresses,
        display_name: text("displayName").map(str::to_string),
    })
}

/// A skipped user's line: who it is and why.
fn skipped(user: &Value, why: &str) -> String {
    let name = ["userPrincipalName", "displayName", "id"]
        .iter()
        .find_map(|k| user.get(*k).and_then(Value::as_str))
        .unwrap_or("a user");
    format!("{name}: {why}")
}

impl GraphDirectory {
    /// `/users?$select=…&$top=…[&$filter=…&$count=true]`, with whether it is an advanced
    /// query (a filter given: `ConsistencyLevel: eventual` lets every filter Graph knows
    /// work, `endsWith` included).
    fn users_query(&self, top: usize, filter: Option<&str>) -> (Url, bool) {
        let mut q = format!("/users?$select={}&$top={top}", query_encode(SELECT));
        if let Some(f) = filter {
            q.push_str(&format!("&$filter={}&$count=true", query_encode(f)));
        }
        (self.url_of(&q), filter.is_some())
    }

    /// One page: its users read into `listing`, and the next page's URL.
    fn page(
        &self,
        url: &Url,
        advanced: bool,
        listing: &mut Listing,
    ) -> Result<Option<Url>, DirectoryError> {
        let json =
            self.get_json("list users", url, advanced)?
                .ok_or_else(|| DirectoryError::Config {
                    url: self.url.clone(),
                    reason: "GET /users answered 404: check graph_url (…/v1.0)".into(),
                })?;
        for user in json
            .get("value")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match to_mailbox(user) {
                Ok(m) => listing.mailboxes.push(m),
                Err(why) => listing.skipped.push(skipped(user, &why)),
            }
        }
        let Some(next) = json.get("@odata.nextLink").and_then(Value::as_str) else {
            return Ok(None);
        };
        let next = Url::parse(next).map_err(|e| DirectoryError::Connection {
            url: self.url.clone(),
            operation: "list users".into(),
            reason: format!("@odata.nextLink: {e}"),
        })?;
        if !self.same_origin(&next) {
            return Err(DirectoryError::Connection {
                url: self.url.clone(),
                operation: "list users".into(),
                reason: format!(
                    "@odata.nextLink points to {next}, not to graph_url: not followed (the \
                     token is only sent to graph_url)"
                ),
            });
        }
        Ok(Some(next))
    }

    /// Every user under the filter, page by page (each page read and dropped before the
    /// next is asked for).
    pub(super) fn list_pages(&self, filter: Option<&str>) -> Result<Listing, DirectoryError> {
        let filter = filter.or(self.filter.as_deref());
        let (mut url, advanced) = self.users_query(PAGE_SIZE, filter);
        let mut listing = Listing::default();
        while let Some(next) = self.page(&url, advanced, &mut listing)? {
            url = next;
        }
        Ok(listing)
    }

    /// The first page of `top` users, and whether there are more.
    pub(super) fn first_page(&self, top: usize) -> Result<(Listing, bool), DirectoryError> {
        let (url, advanced) = self.users_query(top, self.filter.as_deref());
        let mut listing = Listing::default();
        let more = self.page(&url, advanced, &mut listing)?.is_some();
        Ok((listing, more))
    }

    /// `GET /users/{id}`: the mailbox, `None` when Graph has no such user (404), an error when
    /// the user is not a mailbox.
    pub(super) fn lookup_id(&self, id: &str) -> Result<Option<DirectoryMailbox>, DirectoryError> {
        if !is_object_id(id) {
            return Err(DirectoryError::InvalidId {
                url: self.url.clone(),
                id: id.to_string(),
                attribute: "id (a Graph user's object ID, a GUID)".into(),
            });
        }
        let url = self.url_of(&format!("/users/{id}?$select={}", query_encode(SELECT)));
        let Some(user) = self.get_json(&format!("get user {id}"), &url, false)? else {
            return Ok(None);
        };
        to_mailbox(&user)
            .map(Some)
            .map_err(|reason| DirectoryError::Entry {
                url: self.url.clone(),
                dn: format!("users/{id}"),
                reason,
            })
    }

    /// Users with this address as `mail` or in `proxyAddresses`, within the job's filter.
    pub(super) fn find(&self, address: &str) -> Result<Vec<DirectoryMailbox>, DirectoryError> {
        let a = address.trim();
        let by_address = format!(
            "mail eq {} or proxyAddresses/any(p:p eq {})",
            odata_string(a),
            odata_string(&format!("smtp:{a}"))
        );
        let filter = match &self.filter {
            Some(f) => format!("({f}) and ({by_address})"),
            None => by_address,
        };
        let listing = self.list_pages(Some(&filter))?;
        Ok(listing.mailboxes)
    }
}
