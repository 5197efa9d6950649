//! Entra ID through Microsoft Graph as a directory (`kind = "graph"`): the users of a
//! Microsoft 365 tenant as mailboxes, and creating licensed users there.
//!
//! - listing: `GET /users?$select=id,mail,proxyAddresses,userPrincipalName,displayName,
//!   accountEnabled` with the job's `$filter`, page by page through `@odata.nextLink`;
//! - lookup by ID: `GET /users/{id}` (a `404` is a missing mailbox);
//! - find by address: `$filter=mail eq '…' or proxyAddresses/any(p:p eq 'smtp:…')`, an
//!   advanced query (`ConsistencyLevel: eventual` and `$count=true`);
//! - creation ([`create`]): `POST /users`, `POST /users/{id}/assignLicense`, then a bounded
//!   wait for `GET /users/{id}/mailboxSettings` to answer `200`.
//!
//! The mailbox ID is the user's `id`; the primary address is `mail` (else the `SMTP:` entry
//! of `proxyAddresses`), the aliases the `smtp:` entries, the login the `userPrincipalName`.
//!
//! Requests go through the OAuth2 module's HTTP client (the one rustls policy) with the
//! application's token from its [`TokenProvider`] (client credentials, scope
//! `https://graph.microsoft.com/.default`); `429` and `503` are retried after `Retry-After`.
//! Graph's error bodies (`{"error": {"code", "message"}}`) are shown in its words; a token,
//! a secret or a key never is.

mod create;
#[cfg(test)]
mod tests;
mod users;

use std::time::Duration;

use mailferry_core::job::{GraphConfig, GraphCreate, OAuth2Flow};
use mailferry_core::model::{DirectoryMailbox, MailboxId, NewMailbox};
use mailferry_core::ports::{Directory, DirectoryError, DirectoryProbe, Listing, Provisioner};
use serde_json::Value;

use crate::oauth2::http::{HttpClient, HttpError, Request, Response, Url};
use crate::oauth2::{Token, TokenError, TokenProvider, entra_hint};

/// How long a request may take (connect, send, each read).
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// Sends of one request when Graph throttles (`429`, `503`) or the network fails.
const ATTEMPTS: u32 = 4;
/// Users asked for per page (Graph's maximum for users is 999).
pub const PAGE_SIZE: usize = 999;
/// Users `check` reads.
pub const PROBE_SIZE: usize = 20;
/// The properties read of each user.
pub const SELECT: &str = "id,mail,proxyAddresses,userPrincipalName,displayName,accountEnabled";
/// The longest Graph text quoted in an error.
const MAX_WORDS: usize = 1000;

/// An open Graph directory: at connect the application's token is fetched and one user read
/// (so that a wrong tenant, client or secret, a missing permission or an unreachable
/// `graph_url` is known before anything changes); the token is refreshed as needed.
pub struct GraphDirectory {
    url: String,
    base: Url,
    http: HttpClient,
    tokens: TokenProvider,
    client_id: String,
    /// `application <client ID>`, for `check`.
    bound: String,
    filter: Option<String>,
    create: Option<GraphCreate>,
    note: Option<String>,
    /// How long creation waits between looks at a new mailbox.
    poll: Duration,
}

impl std::fmt::Debug for GraphDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GraphDirectory({}, {})",
            self.url,
            self.tokens.describe()
        )
    }
}

impl GraphDirectory {
    /// Reads the application's credential, checks the URLs and gets a first token.
    pub fn connect(g: &GraphConfig) -> Result<GraphDirectory, DirectoryError> {
        let config = |reason: String| DirectoryError::Config {
            url: g.graph_url.clone(),
            reason,
        };
        let base = Url::parse(&g.graph_url).map_err(|e| config(format!("graph_url: {e}")))?;
        let tokens = TokenProvider::new(&g.oauth2, TIMEOUT)
            .map_err(|e| config(format!("{}.{e}", g.oauth2_key)))?;
        let http = HttpClient::new(g.tls_ca.as_deref(), TIMEOUT)
            .map_err(|e| config(format!("tls_ca: {e}")))?;
        let client_id = match &g.oauth2.flow {
            OAuth2Flow::ClientCredentials { client_id, .. } => client_id.clone(),
            OAuth2Flow::ServiceAccount { .. } => {
                return Err(config(
                    "Microsoft Graph needs an Entra ID application (client credentials)".into(),
                ));
            }
        };
        let dir = GraphDirectory {
            url: g.graph_url.clone(),
            base,
            http,
            tokens,
            bound: format!("application {client_id}"),
            client_id,
            filter: g.filter.clone(),
            create: g.create.clone(),
            note: None,
            poll: Duration::from_secs(5),
        };
        // Reached now, as an LDAP directory is bound at connect: a wrong tenant or secret, a
        // missing permission or an unreachable graph_url is known before anything changes.
        let url = dir.url_of("/users?$select=id&$top=1");
        dir.get_json("read users", &url, false)?;
        Ok(dir)
    }

    /// The time between looks at a new mailbox (tests shorten it).
    pub fn set_poll_interval(&mut self, poll: Duration) {
        self.poll = poll;
    }

    fn token(&self, refused: Option<&Token>) -> Result<Token, DirectoryError> {
        self.tokens
            .token("", refused)
            .map_err(|e| token_error(&self.url, &e))
    }

    /// `graph_url` + `path_and_query` (which starts with `/`).
    fn url_of(&self, path_and_query: &str) -> Url {
        let mut u = self.base.clone();
        u.path = format!("{}{path_and_query}", self.base.path.trim_end_matches('/'));
        u
    }

    /// Whether `url` (an `@odata.nextLink`) is on the configured Graph endpoint: the token
    /// is never sent anywhere else.
    fn same_origin(&self, url: &Url) -> bool {
        url.https == self.base.https
            && url.host.eq_ignore_ascii_case(&self.base.host)
            && url.port == self.base.port
    }

    /// Sends `request` with the application's token; on `401` once more with a fresh one.
    /// A transport failure is `Unreachable`; any answer is returned as it is.
    fn send(
        &self,
        operation: &str,
        build: impl Fn(&str) -> Request,
    ) -> Result<Response, DirectoryError> {
        let mut token = self.token(None)?;
        let mut refreshed = false;
        loop {
            let response = self
                .http
                .send_retrying(&build(token.secret()), ATTEMPTS)
                .map_err(|e| self.http_error(operation, e))?;
            if response.status == 401 && !refreshed {
                refreshed = true;
                token = self.token(Some(&token))?;
                continue;
            }
            return Ok(response);
        }
    }

    fn http_error(&self, operation: &str, e: HttpError) -> DirectoryError {
        match e {
            HttpError::Throttled { status, wait, .. } => DirectoryError::Refused {
                url: self.url.clone(),
                operation: operation.to_string(),
                status: Some(status),
                code: None,
                words: format!(
                    "HTTP {status}: Graph asks to wait {} s, longer than mailferry waits",
                    wait.as_secs()
                ),
                transient: true,
            },
            HttpError::Connect { .. } | HttpError::Io { .. } | HttpError::Tls { .. } => {
                DirectoryError::Unreachable {
                    url: self.url.clone(),
                    reason: e.to_string(),
                }
            }
            other => DirectoryError::Connection {
                url: self.url.clone(),
                operation: operation.to_string(),
                reason: other.to_string(),
            },
        }
    }

    /// `GET` of a JSON answer; `Ok(None)` for a `404`.
    fn get_json(
        &self,
        operation: &str,
        url: &Url,
        advanced: bool,
    ) -> Result<Option<Value>, DirectoryError> {
        let response = self.send(operation, |token| {
            let r = Request::new("GET", url.clone()).bearer(token);
            if advanced {
                r.header("ConsistencyLevel", "eventual")
            } else {
                r
            }
        })?;
        if response.status == 404 {
            return Ok(None);
        }
        self.json_answer(operation, &response).map(Some)
    }

    /// The JSON of a 2xx answer, or Graph's refusal in its words.
    fn json_answer(&self, operation: &str, r: &Response) -> Result<Value, DirectoryError> {
        if !(200..300).contains(&r.status) {
            return Err(self.refusal(operation, r));
        }
        r.json().map_err(|e| DirectoryError::Connection {
            url: self.url.clone(),
            operation: operation.to_string(),
            reason: e.to_string(),
        })
    }

    /// Graph's error body as `code: message (HTTP status)`, with a hint for the common causes.
    fn refusal(&self, operation: &str, r: &Response) -> DirectoryError {
        let json = r.json().ok();
        let error = json.as_ref().and_then(|j| j.get("error"));
        let text = |name: &str| {
            error
                .and_then(|e| e.get(name))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let code = text("code");
        let message = text("message");
        let mut words = match (&code, &message) {
            (Some(c), Some(m)) if !m.is_empty() => format!("{c}: {m}"),
            (Some(c), _) => c.clone(),
            (None, Some(m)) => m.clone(),
            (None, None) => {
                let body = String::from_utf8_lossy(&r.body);
                let body = body.trim();
                if body.is_empty() {
                    r.reason.clone()
                } else {
                    body.to_string()
                }
            }
        };
        if words.chars().count() > MAX_WORDS {
            words = words.chars().take(MAX_WORDS).collect::<String>() + "…";
        }
        words = format!("{words} (HTTP {})", r.status);
        if let Some(hint) = graph_hint(code.as_deref(), operation, &self.client_id) {
            words = format!("{words} ({hint})");
        }
        DirectoryError::Refused {
            url: self.url.clone(),
            operation: operation.to_string(),
            status: Some(r.status),
            code,
            words,
            transient: matches!(r.status, 429 | 503 | 502 | 504),
        }
    }
}

/// The identity provider's refusal, in the oauth2 module's words, with a hint for Graph.
fn token_error(url: &str, e: &TokenError) -> DirectoryError {
    match e {
        TokenError::Unreachable {
            transient: true, ..
        } => DirectoryError::Unreachable {
            url: url.to_string(),
            reason: format!("getting a token: {e}"),
        },
        TokenError::Config(reason) => DirectoryError::Config {
            url: url.to_string(),
            reason: reason.clone(),
        },
        _ => {
            let code = e.code();
            let hint = match code.as_deref() {
                Some("AADSTS65001" | "AADSTS650051" | "AADSTS650052") => Some(
                    "likely cause: admin consent: grant admin consent for the application \
                     permission User.Read.All of Microsoft Graph (API permissions > Grant \
                     admin consent)"
                        .to_string(),
                ),
                Some("AADSTS500011" | "AADSTS70011" | "AADSTS1002012") => Some(
                    "likely cause: the scope: a Graph directory asks for \
                     https://graph.microsoft.com/.default; add the application permission \
                     User.Read.All of Microsoft Graph"
                        .to_string(),
                ),
                _ => entra_hint(e),
            };
            DirectoryError::Refused {
                url: url.to_string(),
                operation: "getting a token".into(),
                status: match e {
                    TokenError::Refused { status, .. } => Some(*status),
                    _ => None,
                },
                code,
                words: match hint {
                    Some(h) => format!("{e} ({h})"),
                    None => e.to_string(),
                },
                transient: false,
            }
        }
    }
}

/// What to tell an admin about a Graph refusal.
fn graph_hint(code: Option<&str>, operation: &str, client_id: &str) -> Option<String> {
    let writing = operation.starts_with("create") || operation.starts_with("assign");
    let words = match code? {
        "Authorization_RequestDenied" | "Authorization_IdentityNotFound" if writing => format!(
            "likely cause: the application {client_id} lacks the application permission \
             User.ReadWrite.All of Microsoft Graph (users and their licences), or its admin \
             consent"
        ),
        "Authorization_RequestDenied" | "Authorization_IdentityNotFound" => format!(
            "likely cause: the application {client_id} lacks the application permission \
             User.Read.All of Microsoft Graph, or its admin consent (API permissions > Grant \
             admin consent)"
        ),
        "ErrorAccessDenied" | "AccessDenied" if operation.contains("mailbox") => {
            "likely cause: waiting for a new mailbox reads its mailboxSettings, which needs \
             the application permission MailboxSettings.Read"
                .to_string()
        }
        "InvalidAuthenticationToken" => "likely cause: the token is not for Microsoft Graph: \
             the scope must be https://graph.microsoft.com/.default"
            .to_string(),
        _ => return None,
    };
    Some(words)
}

impl Directory for GraphDirectory {
    fn url(&self) -> &str {
        &self.url
    }
    fn bound_as(&self) -> &str {
        &self.bound
    }
    fn list(&mut self) -> Result<Listing, DirectoryError> {
        self.list_pages(None)
    }
    fn lookup(&mut self, id: &MailboxId) -> Result<Option<DirectoryMailbox>, DirectoryError> {
        self.lookup_id(id.as_str())
    }
    fn find_by_address(&mut self, address: &str) -> Result<Vec<DirectoryMailbox>, DirectoryError> {
        self.find(address)
    }
    fn probe(&mut self) -> Result<DirectoryProbe, DirectoryError> {
        let (listing, more) = self.first_page(PROBE_SIZE)?;
        Ok(DirectoryProbe {
            sampled: listing.mailboxes.len() + listing.skipped.len(),
            mailboxes: listing.mailboxes.len(),
            skipped: listing.skipped,
            more,
        })
    }
}

impl Provisioner for GraphDirectory {
    fn create(&mut self, m: &NewMailbox) -> Result<DirectoryMailbox, DirectoryError> {
        self.note = None;
        self.create_user(m)
    }
    fn take_note(&mut self) -> Option<String> {
        self.note.take()
    }
}
