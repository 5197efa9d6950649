//! OAuth2 access tokens for IMAP logins (`auth = "oauth2"`): the grants Entra ID and Google
//! use for app-only access, a token cache shared by the whole run, and what to tell an admin
//! when the identity provider or the server says no.
//!
//! - [`http`]: the small blocking HTTPS client (also meant for a Graph directory adapter);
//! - [`jwt`]: RS256 client assertions and service-account assertions;
//! - [`cache`]: tokens shared across threads, refreshed before they expire, fetched by one
//!   thread at a time, fetched again once after a refusal.
//!
//! A token, a client secret, a private key or an assertion is never part of an error, a
//! `Debug` output or a trace: the identity provider's words are shown as given, with any
//! secret of the request cut out.

pub mod cache;
pub mod http;
pub mod jwt;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mailferry_core::job::{
    ClientCredential, GOOGLE_TOKEN_URL, OAuth2Config, OAuth2Flow, OAuth2Mechanism,
};
use mailferry_imap::OAuthMechanism;
use serde_json::Value;

pub use cache::{Token, TokenCache};
use http::{HttpClient, HttpError, Request, Url};
use jwt::{RsaKey, Thumbprints};

/// Token requests sent before a throttled or unreachable identity provider counts as down.
const ATTEMPTS: u32 = 3;
/// The lifetime assumed when a token answer has no `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// The longest identity-provider text quoted in an error.
const MAX_WORDS: usize = 1000;
/// How long a refusal by the identity provider (a wrong secret, an unknown client) is given
/// as the answer without asking again: a run over a thousand mailboxes asks once.
pub const REFUSAL_MEMORY: Duration = Duration::from_secs(30);

/// Why no token could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// The identity provider answered with an error (`invalid_client`, `AADSTS700016` …).
    #[error("the identity provider at {url} refused the token request (HTTP {status}): {words}")]
    Refused {
        url: String,
        status: u16,
        /// The `error` field (RFC 6749 §5.2).
        error: Option<String>,
        /// `error`, `error_description` and the like, as given, secrets cut out.
        words: String,
    },
    /// The identity provider could not be reached, or answered with something else.
    #[error("the identity provider at {url}: {message}")]
    Unreachable {
        url: String,
        message: String,
        transient: bool,
    },
    /// The settings cannot work (an unreadable key, a bad URL).
    #[error("{0}")]
    Config(String),
}

impl TokenError {
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            TokenError::Unreachable {
                transient: true,
                ..
            }
        )
    }

    /// Entra ID's `AADSTS…` code of the refusal, or the OAuth2 `error`.
    pub fn code(&self) -> Option<String> {
        let TokenError::Refused { error, words, .. } = self else {
            return None;
        };
        words
            .split(|c: char| !c.is_ascii_alphanumeric())
            .find(|w| w.starts_with("AADSTS") && w.len() > 6)
            .map(str::to_string)
            .or_else(|| error.clone())
    }
}

/// How the application proves itself to the token endpoint.
enum Grant {
    ClientSecret {
        client_id: String,
        secret: String,
    },
    ClientAssertion {
        client_id: String,
        key: RsaKey,
        thumbprints: Thumbprints,
    },
    ServiceAccount {
        client_email: String,
        key_id: Option<String>,
        key: RsaKey,
    },
}

/// Gets the tokens of one side's `[side.oauth2]`, for every mailbox and thread of the run.
pub struct TokenProvider {
    grant: Grant,
    url: Url,
    url_text: String,
    scope: String,
    mechanism: OAuthMechanism,
    http: HttpClient,
    cache: TokenCache,
    /// The identity provider's last refusal per cache key, repeated for [`REFUSAL_MEMORY`]
    /// instead of asking again for every mailbox of the run.
    refusals: Mutex<HashMap<String, (Instant, TokenError)>>,
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenProvider({})", self.describe())
    }
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TokenProvider {
    /// Reads the secrets and keys of `config` now; an error names the key (`client_secret`,
    /// `key_file`, …) relative to the oauth2 table, never a secret.
    pub fn new(config: &OAuth2Config, timeout: Duration) -> Result<TokenProvider, String> {
        let read = |key: &str, secret: &mailferry_core::job::Secret| {
            secret.reveal().map_err(|e| format!("{key}: {e}"))
        };
        let (grant, default_url) = match &config.flow {
            OAuth2Flow::ClientCredentials {
                client_id,
                credential,
                ..
            } => match credential {
                ClientCredential::Secret(secret) => (
                    Grant::ClientSecret {
                        client_id: client_id.clone(),
                        secret: read("client_secret", secret)?,
                    },
                    None,
                ),
                ClientCredential::Certificate { certificate, key } => {
                    let pem = std::fs::read_to_string(certificate).map_err(|e| {
                        format!(
                            "client_certificate: cannot read {}: {e}",
                            certificate.display()
                        )
                    })?;
                    let thumbprints = Thumbprints::from_pem(&pem).map_err(|e| {
                        format!("client_certificate {}: {e}", certificate.display())
                    })?;
                    let key = RsaKey::from_pem(&read("client_key", key)?)
                        .map_err(|e| format!("client_key: {e}"))?;
                    (
                        Grant::ClientAssertion {
                            client_id: client_id.clone(),
                            key,
                            thumbprints,
                        },
                        None,
                    )
                }
            },
            OAuth2Flow::ServiceAccount { key } => {
                let text = read("key_file", key)?;
                let json: Value = serde_json::from_str(&text).map_err(|e| {
                    format!(
                        "key_file: not a JSON service-account key (at line {}, column {})",
                        e.line(),
                        e.column()
                    )
                })?;
                let field = |name: &str| json.get(name).and_then(Value::as_str);
                if field("type").is_some_and(|t| t != "service_account") {
                    return Err(format!(
                        "key_file: a key of type {:?}; a service account's JSON key has type \
                         \"service_account\"",
                        field("type").unwrap_or("")
                    ));
                }
                let client_email = field("client_email")
                    .ok_or("key_file: no client_email in the key")?
                    .to_string();
                let key = RsaKey::from_pem(
                    field("private_key").ok_or("key_file: no private_key in the key")?,
                )
                .map_err(|e| format!("key_file: private_key: {e}"))?;
                let token_uri = field("token_uri").map(str::to_string);
                if let Some(uri) = &token_uri
                    && !uri.starts_with("https://")
                    && config.token_url.is_none()
                {
                    return Err(format!(
                        "key_file: token_uri {uri} is not https://; write the token endpoint \
                         as token_url in the job file"
                    ));
                }
                (
                    Grant::ServiceAccount {
                        client_email,
                        key_id: field("private_key_id").map(str::to_string),
                        key,
                    },
                    Some(token_uri.unwrap_or_else(|| GOOGLE_TOKEN_URL.to_string())),
                )
            }
        };
        let url_text = config
            .token_url
            .clone()
            .or(default_url)
            .ok_or("token_url: missing")?;
        let url = Url::parse(&url_text).map_err(|e| format!("token_url: {e}"))?;
        let http = HttpClient::new(config.tls_ca.as_deref(), timeout)
            .map_err(|e| format!("tls_ca: {e}"))?;
        Ok(TokenProvider {
            grant,
            url,
            url_text,
            scope: config.scope.clone(),
            mechanism: match config.mechanism {
                OAuth2Mechanism::XOAuth2 => OAuthMechanism::XOAuth2,
                OAuth2Mechanism::OAuthBearer => OAuthMechanism::OAuthBearer,
            },
            http,
            cache: TokenCache::default(),
            refusals: Mutex::new(HashMap::new()),
        })
    }

    /// `token from https://…/token (client credentials, client ID …)`.
    pub fn describe(&self) -> String {
        let what = match &self.grant {
            Grant::ClientSecret { client_id, .. } => {
                format!("client credentials with a secret, client ID {client_id}")
            }
            Grant::ClientAssertion { client_id, .. } => {
                format!("client credentials with a certificate, client ID {client_id}")
            }
            Grant::ServiceAccount { client_email, .. } => {
                format!("service account {client_email}, one token per mailbox")
            }
        };
        format!(
            "token from {} ({what}, scope {})",
            self.url_text, self.scope
        )
    }

    pub fn mechanism(&self) -> OAuthMechanism {
        self.mechanism
    }

    /// Whether this is Entra ID's client-credentials flow (for the set-up hints).
    pub fn is_client_credentials(&self) -> bool {
        !matches!(self.grant, Grant::ServiceAccount { .. })
    }

    /// The token for `mailbox` (the application's for client credentials): cached while
    /// fresh, else fetched. With `refused`, the token the server just refused is not handed
    /// out again.
    pub fn token(&self, mailbox: &str, refused: Option<&Token>) -> Result<Token, TokenError> {
        let key = match self.grant {
            Grant::ServiceAccount { .. } => mailbox,
            _ => "",
        };
        self.cache.get(key, refused, || {
            let mut refusals = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, error)) = refusals.get(key)
                && at.elapsed() < REFUSAL_MEMORY
            {
                return Err(error.clone());
            }
            drop(refusals);
            let result = self.fetch(mailbox);
            refusals = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
            match &result {
                Err(e @ TokenError::Refused { .. }) => {
                    refusals.insert(key.to_string(), (Instant::now(), e.clone()));
                }
                _ => {
                    refusals.remove(key);
                }
            }
            result
        })
    }

    fn fetch(&self, mailbox: &str) -> Result<Token, TokenError> {
        let now = now_seconds();
        let local = |e: String| TokenError::Config(format!("signing the token request: {e}"));
        let (fields, hidden): (Vec<(&str, String)>, Vec<String>) = match &self.grant {
            Grant::ClientSecret { client_id, secret } => (
                vec![
                    ("grant_type", "client_credentials".into()),
                    ("client_id", client_id.clone()),
                    ("client_secret", secret.clone()),
                    ("scope", self.scope.clone()),
                ],
                vec![secret.clone()],
            ),
            Grant::ClientAssertion {
                client_id,
                key,
                thumbprints,
            } => {
                let assertion =
                    jwt::client_assertion(client_id, &self.url_text, key, thumbprints, now)
                        .map_err(local)?;
                (
                    vec![
                        ("grant_type", "client_credentials".into()),
                        ("client_id", client_id.clone()),
                        (
                            "client_assertion_type",
                            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                        ),
                        ("client_assertion", assertion.clone()),
                        ("scope", self.scope.clone()),
                    ],
                    vec![assertion],
                )
            }
            Grant::ServiceAccount {
                client_email,
                key_id,
                key,
            } => {
                let assertion = jwt::service_account_assertion(
                    client_email,
                    key_id.as_deref(),
                    mailbox,
                    &self.scope,
                    &self.url_text,
                    key,
                    now,
                )
                .map_err(local)?;
                (
                    vec![
                        (
                            "grant_type",
                            "urn:ietf:params:oauth:grant-type:jwt-bearer".into(),
                        ),
                        ("assertion", assertion.clone()),
                    ],
                    vec![assertion],
                )
            }
        };
        let form: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let request = Request::post_form(self.url.clone(), &form);
        let url = self.url_text.clone();
        let response = self
            .http
            .send_retrying(&request, ATTEMPTS)
            .map_err(|e: HttpError| TokenError::Unreachable {
                url: url.clone(),
                transient: e.is_transient(),
                message: scrub(&e.to_string(), &hidden),
            })?;
        let json = response.json().ok();
        let field = |name: &str| {
            json.as_ref()
                .and_then(|j| j.get(name))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        if response.status != 200 || field("error").is_some() {
            let words = match (field("error"), field("error_description")) {
                (Some(e), Some(d)) => format!("{e}: {d}"),
                (Some(e), None) => e,
                (None, Some(d)) => d,
                (None, None) => {
                    let text = String::from_utf8_lossy(&response.body);
                    let text = text.trim();
                    if text.is_empty() {
                        response.reason.clone()
                    } else {
                        text.to_string()
                    }
                }
            };
            if matches!(response.status, 429 | 503) || response.status >= 500 {
                return Err(TokenError::Unreachable {
                    url,
                    transient: true,
                    message: format!("HTTP {}: {}", response.status, scrub(&words, &hidden)),
                });
            }
            return Err(TokenError::Refused {
                url,
                status: response.status,
                error: field("error"),
                words: scrub(&words, &hidden),
            });
        }
        let Some(access_token) = field("access_token").filter(|t| !t.is_empty()) else {
            return Err(TokenError::Unreachable {
                url,
                transient: false,
                message: "the answer has no access_token".into(),
            });
        };
        let lifetime = json
            .as_ref()
            .and_then(|j| j.get("expires_in"))
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.trim().parse().ok()))
            .map_or(DEFAULT_LIFETIME, Duration::from_secs);
        Ok(Token::new(access_token, lifetime))
    }
}

/// `text` with every secret in `hidden` (and its form-encoded spelling) cut out, shortened
/// to [`MAX_WORDS`] characters.
fn scrub(text: &str, hidden: &[String]) -> String {
    let mut out = text.to_string();
    for secret in hidden.iter().filter(|s| s.len() >= 4) {
        out = out.replace(secret.as_str(), "<hidden>");
        out = out.replace(&http::form_encode(secret), "<hidden>");
    }
    if out.chars().count() > MAX_WORDS {
        out = out.chars().take(MAX_WORDS).collect::<String>() + "…";
    }
    out
}

/// Which Exchange Online set-up step an identity provider's refusal points to, in words.
pub fn entra_hint(error: &TokenError) -> Option<String> {
    let code = error.code()?;
    let words = match code.as_str() {
        "AADSTS700016" => {
            "the client_id is not an application in this tenant: check client_id and tenant \
             against the app registration (Entra ID > App registrations > Overview)"
        }
        "AADSTS7000215" => {
            "the client secret is wrong: use the secret's Value (not its Secret ID) from \
             Certificates & secrets"
        }
        "AADSTS7000222" => {
            "the client secret has expired: add a new one under Certificates & secrets"
        }
        "AADSTS700027" | "AADSTS700024" | "AADSTS700023" => {
            "the client assertion was refused: upload this certificate (its public part) to \
             the app registration under Certificates & secrets, and check the machine's clock"
        }
        "AADSTS90002" | "AADSTS900023" | "AADSTS90013" => {
            "the tenant is not found: use the directory (tenant) ID or the primary domain"
        }
        "AADSTS65001" | "AADSTS650051" | "AADSTS650052" => {
            "step 2 of 4, admin consent: grant admin consent for the IMAP.AccessAsApp \
             permission (API permissions > Grant admin consent)"
        }
        "AADSTS650057" | "AADSTS500011" | "AADSTS70011" | "AADSTS1002012" => {
            "step 1 of 4, the permission: add the application permission IMAP.AccessAsApp of \
             Office 365 Exchange Online, and keep scope = \
             \"https://outlook.office365.com/.default\""
        }
        "AADSTS7000112" | "AADSTS7000111" => "the application is disabled in the tenant",
        "invalid_client" => "the client ID or its secret or certificate is wrong",
        "unauthorized_client" => {
            "the application may not use this grant: for Google, add the service account's \
             client ID under domain-wide delegation with the scope https://mail.google.com/"
        }
        "invalid_grant" => {
            "the grant was refused: for Google, the mailbox must be a user of the Workspace \
             domain and the machine's clock must be right"
        }
        "invalid_scope" => "the scope is not one the application may ask for",
        _ => return None,
    };
    Some(format!("likely cause: {words}"))
}

/// Which Exchange Online set-up step a server's refusal of a fresh token points to, from the
/// `roles` the token carries.
pub fn login_hint(provider: &TokenProvider, token: &Token, mailbox: &str) -> String {
    if !provider.is_client_credentials() {
        return "likely cause: domain-wide delegation for this service account and scope, or \
                IMAP turned off for the user in the Google Admin console"
            .into();
    }
    let roles: Vec<String> = jwt::unverified_claims(token.secret())
        .and_then(|c| c.get("roles").cloned())
        .and_then(|r| r.as_array().cloned())
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if roles.iter().any(|r| r == "IMAP.AccessAsApp") {
        format!(
            "likely cause: step 4 of 4, the mailbox permission (Add-MailboxPermission -Identity \
             {mailbox} -User <service principal> -AccessRights FullAccess), or, if no mailbox \
             can be opened, step 3 of 4, the service principal (New-ServicePrincipal -AppId \
             <client ID> -ObjectId <the enterprise application's object ID>)"
        )
    } else {
        "likely cause: step 1 of 4 or 2 of 4: the token has no IMAP.AccessAsApp role; add the \
         application permission IMAP.AccessAsApp (Office 365 Exchange Online) and grant admin \
         consent"
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_prints_where_and_who_but_no_secret_or_key() {
        use mailferry_core::job::Secret;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s"), "the-secret-value\n").unwrap();
        let (key_pem, cert_pem) = jwt::tests::test_key_and_certificate();
        std::fs::write(dir.path().join("k.pem"), &key_pem).unwrap();
        std::fs::write(dir.path().join("c.pem"), &cert_pem).unwrap();
        let config = |credential| OAuth2Config {
            flow: OAuth2Flow::ClientCredentials {
                tenant: Some("t".into()),
                client_id: "app".into(),
                credential,
            },
            token_url: Some("https://login.example/t/token".into()),
            scope: "s".into(),
            mechanism: OAuth2Mechanism::XOAuth2,
            tls_ca: None,
        };
        let secret = TokenProvider::new(
            &config(ClientCredential::Secret(Secret::File(dir.path().join("s")))),
            Duration::from_secs(5),
        )
        .unwrap();
        let shown = format!("{secret:?} {}", secret.describe());
        assert!(shown.contains("client ID app") && shown.contains("https://login.example/t/token"));
        assert!(!shown.contains("the-secret-value"), "{shown}");
        let access = crate::credentials::Access::OAuth2(std::sync::Arc::new(secret));
        assert!(!format!("{access:?}").contains("the-secret-value"));
        let cert = TokenProvider::new(
            &config(ClientCredential::Certificate {
                certificate: dir.path().join("c.pem"),
                key: Secret::File(dir.path().join("k.pem")),
            }),
            Duration::from_secs(5),
        )
        .unwrap();
        let shown = format!("{cert:?}");
        let key_body = key_pem.lines().nth(1).unwrap();
        assert!(!shown.contains(key_body), "{shown}");
        // A missing key file is named, not quoted.
        let e = TokenProvider::new(
            &config(ClientCredential::Certificate {
                certificate: dir.path().join("c.pem"),
                key: Secret::File(dir.path().join("missing.pem")),
            }),
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(e.starts_with("client_key: cannot read secret file "), "{e}");
    }

    #[test]
    fn secrets_are_cut_out_of_the_identity_providers_words() {
        let words = scrub(
            "invalid_client: bad secret s3cr3t+/= (echoed as s3cr3t%2B%2F%3D)",
            &["s3cr3t+/=".into()],
        );
        assert_eq!(
            words,
            "invalid_client: bad secret <hidden> (echoed as <hidden>)"
        );
        assert_eq!(scrub(&"x".repeat(2000), &[]).chars().count(), MAX_WORDS + 1);
    }

    #[test]
    fn entra_codes_name_the_step() {
        let refused = |error: &str, words: &str| TokenError::Refused {
            url: "u".into(),
            status: 400,
            error: Some(error.into()),
            words: words.into(),
        };
        let e = refused(
            "unauthorized_client",
            "unauthorized_client: AADSTS700016: Application with identifier 'x' was not found",
        );
        assert_eq!(e.code().as_deref(), Some("AADSTS700016"));
        assert!(
            entra_hint(&e)
                .unwrap()
                .contains("client_id is not an application")
        );
        let e = refused(
            "invalid_client",
            "invalid_client: AADSTS7000215: Invalid client secret provided.",
        );
        assert!(entra_hint(&e).unwrap().contains("client secret is wrong"));
        let e = refused(
            "invalid_grant",
            "invalid_grant: AADSTS65001: The user or administrator has not consented",
        );
        assert!(
            entra_hint(&e)
                .unwrap()
                .contains("step 2 of 4, admin consent")
        );
        let e = refused("invalid_client", "invalid_client");
        assert_eq!(e.code().as_deref(), Some("invalid_client"));
        assert_eq!(entra_hint(&refused("x_y", "no code here")), None);
    }
}
