//! OAuth2 for tests: a Dovecot that takes signed tokens (its `oauth2` passdb with local JWT
//! validation, see [`DovecotOAuth2`]) and a token endpoint on loopback ([`TokenEndpoint`])
//! that issues them for the three grants mailferry uses:
//!
//! - `client_credentials` with a `client_secret` (Entra ID's app secret);
//! - `client_credentials` with a `client_assertion`: an RS256 JWT whose signature is checked
//!   with the client certificate's public key (`ring`), whose `x5t` must be the
//!   certificate's SHA-1 thumbprint, and whose `aud`, `iss`, `sub`, `exp`, `nbf` and `jti`
//!   are checked as Entra ID does;
//! - `urn:ietf:params:oauth:grant-type:jwt-bearer` (Google's service accounts), with `sub` =
//!   the mailbox.
//!
//! Issued tokens are HS256 JWTs that live [`TokenEndpointConfig::lifetime`] (a few seconds,
//! so tests see them expire), carrying `email` (the name Dovecot matches), `roles` and
//! `exp`. Refusals are Entra ID's JSON errors (`invalid_client` with `AADSTS7000215` for a
//! wrong secret, `unauthorized_client` with `AADSTS700016` for an unknown client, …); a test
//! can also make the endpoint fail on purpose ([`TokenEndpoint::fail_with`]). Every request
//! is counted.
//!
//! Key material for the certificate and the service account comes from the `openssl` CLI
//! ([`TestKeyPair::generate`]).

use std::collections::{BTreeMap, HashSet};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use serde_json::{Value, json};

use crate::http;

/// The issuer of the test tokens (Dovecot checks it).
pub const ISSUER: &str = "https://token-endpoint.mailferry-testkit.invalid";

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The HS256 key shared by the token endpoint (which signs) and Dovecot (which validates).
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// 32 random bytes.
    pub fn random() -> SigningKey {
        use ring::rand::SecureRandom;
        let mut key = vec![0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut key)
            .expect("random bytes");
        SigningKey(key)
    }

    /// An HS256 JWT of `claims`.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "HS256", "typ": "JWT"});
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.0);
        let tag = ring::hmac::sign(&key, input.as_bytes());
        format!("{input}.{}", b64url(tag.as_ref()))
    }

    /// Whether `tag` is the HS256 signature of `input` with this key.
    pub fn verify(&self, input: &[u8], tag: &[u8]) -> bool {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.0);
        ring::hmac::verify(&key, input, tag).is_ok()
    }

    /// The content of Dovecot's key file: the key in (standard) base64.
    fn dovecot_file(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.0)
    }
}

/// Which mailboxes a token opens on the Dovecot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMatch {
    /// Any mailbox of the domain its `email` claim names (`app@new.test` opens every
    /// `…@new.test`): Exchange Online's application access, one token for all mailboxes.
    /// Dovecot's `username_format = %d`.
    Domain,
    /// Only the mailbox its `email` claim names: Google's delegation, one token per mailbox.
    User,
}

/// [`crate::DovecotConfig::oauth2`]: logins with `AUTHENTICATE XOAUTH2` / `OAUTHBEARER` and
/// a token signed with `key`. Password logins of the users and the master user still work
/// (for seeding and comparing mail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DovecotOAuth2 {
    pub key: SigningKey,
    pub matching: TokenMatch,
    /// Mailboxes no token opens (a deny passdb): Exchange's mailbox without
    /// `Add-MailboxPermission`.
    pub denied: Vec<String>,
}

impl DovecotOAuth2 {
    pub fn new(key: &SigningKey, matching: TokenMatch) -> DovecotOAuth2 {
        DovecotOAuth2 {
            key: key.clone(),
            matching,
            denied: Vec::new(),
        }
    }

    /// Writes the key file (`etc/oauth2-keys/default/HS256/default`: the key in base64), the
    /// passdb's settings and the denied users under `dir/etc`; returns what it wrote, so
    /// that as root their modes can be opened to Dovecot's auth process.
    pub(crate) fn prepare(&self, dir: &Path) -> Vec<PathBuf> {
        let keys = dir.join("etc/oauth2-keys/default/HS256");
        std::fs::create_dir_all(&keys).expect("create the oauth2 key dir");
        std::fs::write(keys.join("default"), self.key.dovecot_file()).expect("write key");
        let format = match self.matching {
            TokenMatch::Domain => "%d",
            TokenMatch::User => "%Lu",
        };
        std::fs::write(
            dir.join("etc/oauth2.conf.ext"),
            format!(
                "introspection_mode = local\n\
                 local_validation_key_dict = fs:posix:prefix={}/etc/oauth2-keys/\n\
                 issuers = {ISSUER}\n\
                 username_attribute = email\n\
                 username_format = {format}\n",
                dir.display()
            ),
        )
        .expect("write oauth2.conf.ext");
        let denied: String = self.denied.iter().map(|u| format!("{u}:\n")).collect();
        std::fs::write(dir.join("etc/oauth2-denied"), denied).expect("write denied users");
        vec![
            dir.join("etc/oauth2-keys"),
            dir.join("etc/oauth2-keys/default"),
            keys.clone(),
            keys.join("default"),
            dir.join("etc/oauth2.conf.ext"),
            dir.join("etc/oauth2-denied"),
        ]
    }

    /// The passdbs: tokens for the denied users refused, then the oauth2 passdb.
    pub(crate) fn passdbs(&self, dir: &Path) -> (String, String) {
        let dir = dir.display();
        (
            format!(
                "passdb {{\n  driver = passwd-file\n  args = username_format=%u {dir}/etc/oauth2-denied\n  \
                 deny = yes\n  mechanisms = xoauth2 oauthbearer\n}}\n"
            ),
            format!(
                "passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  \
                 args = {dir}/etc/oauth2.conf.ext\n}}\n"
            ),
        )
    }
}

/// An RSA key pair and a self-signed certificate, made with the `openssl` CLI in a directory
/// that lives as long as this value.
pub struct TestKeyPair {
    _dir: tempfile::TempDir,
    /// PKCS#8 PEM.
    pub key_pem: PathBuf,
    pub certificate_pem: PathBuf,
    /// The public key as PKCS#1 RSAPublicKey DER (what `ring` verifies with).
    public_der: Vec<u8>,
    /// The certificate's DER, for its thumbprint.
    certificate_der: Vec<u8>,
}

impl std::fmt::Debug for TestKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TestKeyPair({})", self.certificate_pem.display())
    }
}

impl TestKeyPair {
    /// # Panics
    /// Without the `openssl` CLI (`apt-get install openssl`).
    pub fn generate(name: &str) -> TestKeyPair {
        let dir = tempfile::tempdir().expect("temp dir");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| {
                    panic!("mailferry-testkit: cannot run openssl ({e}): apt-get install openssl")
                });
            assert!(
                out.status.success(),
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let subject = format!("/CN={name}");
        run(&[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &subject,
            "-keyout", "key.pem", "-out", "cert.pem",
        ]);
        run(&[
            "rsa",
            "-in",
            "key.pem",
            "-RSAPublicKey_out",
            "-outform",
            "DER",
            "-out",
            "pub.der",
        ]);
        run(&[
            "x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der",
        ]);
        let read = |f: &str| std::fs::read(dir.path().join(f)).expect("read openssl output");
        TestKeyPair {
            key_pem: dir.path().join("key.pem"),
            certificate_pem: dir.path().join("cert.pem"),
            public_der: read("pub.der"),
            certificate_der: read("cert.der"),
            _dir: dir,
        }
    }

    /// Google's JSON key for a service account with this key pair, naming `token_uri`.
    pub fn service_account_json(&self, client_email: &str, token_uri: &str) -> String {
        let pem = std::fs::read_to_string(&self.key_pem).expect("read key");
        json!({
            "type": "service_account",
            "project_id": "mailferry-test",
            "private_key_id": "k1",
            "private_key": pem,
            "client_email": client_email,
            "client_id": "1234567890",
            "token_uri": token_uri,
        })
        .to_string()
    }

    fn x5t(&self) -> String {
        b64url(
            ring::digest::digest(
                &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
                &self.certificate_der,
            )
            .as_ref(),
        )
    }
}

/// A client of the token endpoint.
#[derive(Debug, Clone)]
pub enum TestClient {
    /// `client_id` with `client_secret`.
    Secret { client_id: String, secret: String },
    /// `client_id` proving itself with a client assertion signed by `key`'s private key.
    Certificate {
        client_id: String,
        key: Arc<TestKeyPair>,
    },
    /// A service account (`iss` = `client_email`).
    ServiceAccount {
        client_email: String,
        key: Arc<TestKeyPair>,
    },
}

/// How to start a [`TokenEndpoint`].
#[derive(Debug, Clone)]
pub struct TokenEndpointConfig {
    /// Signs the issued tokens; give Dovecot the same ([`DovecotOAuth2`]).
    pub key: SigningKey,
    /// How long an issued token lives (its `exp`).
    pub lifetime: Duration,
    /// The `expires_in` told to the client, when it differs from [`Self::lifetime`]: a token
    /// that dies before the client expects (revoked, or a server whose clock runs ahead).
    pub advertised_lifetime: Option<Duration>,
    pub clients: Vec<TestClient>,
    /// The `email` of an application's token: `app@<domain>` (see [`TokenMatch::Domain`]).
    pub domain: String,
    /// The `roles` of an application's token (Entra ID: `IMAP.AccessAsApp` once permission
    /// and consent are in place).
    pub roles: Vec<String>,
    /// The `roles` of an application's token for Microsoft Graph (scope
    /// `https://graph.microsoft.com/.default`): its application permissions there.
    pub graph_roles: Vec<String>,
    /// The tenant in the URL path; a request to another tenant's path is refused with
    /// Entra ID's `AADSTS90002`.
    pub tenant: String,
    /// Serve HTTPS with a certificate for 127.0.0.1 from a private CA
    /// ([`TokenEndpoint::ca_pem`]) instead of plain HTTP.
    pub tls: bool,
}

impl TokenEndpointConfig {
    pub fn new(key: &SigningKey, domain: &str) -> TokenEndpointConfig {
        TokenEndpointConfig {
            key: key.clone(),
            lifetime: Duration::from_secs(3600),
            advertised_lifetime: None,
            clients: Vec::new(),
            domain: domain.to_string(),
            roles: vec!["IMAP.AccessAsApp".to_string()],
            graph_roles: vec!["User.Read.All".to_string()],
            tenant: "contoso-test".to_string(),
            tls: false,
        }
    }
}

/// What the endpoint has seen. `Debug` counts the tokens instead of printing them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TokenStats {
    /// Requests received (any path, any outcome).
    pub requests: usize,
    /// Tokens issued.
    pub issued: usize,
    /// Requests refused (by a check or on purpose).
    pub refused: usize,
    /// Issued tokens by grant: `client_secret`, `client_assertion`, `jwt_bearer`.
    pub by_grant: BTreeMap<String, usize>,
    /// `sub` of each jwt-bearer token issued.
    pub subjects: Vec<String>,
    /// Every access token issued, for tests that look for them where they must not be.
    pub tokens: Vec<String>,
}

impl std::fmt::Debug for TokenStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStats")
            .field("requests", &self.requests)
            .field("issued", &self.issued)
            .field("refused", &self.refused)
            .field("by_grant", &self.by_grant)
            .field("subjects", &self.subjects)
            .field("tokens", &format_args!("<{} not shown>", self.tokens.len()))
            .finish()
    }
}

struct State {
    stats: TokenStats,
    fail: Option<(u16, Value)>,
    jtis: HashSet<String>,
}

/// The token endpoint: plain HTTP on loopback (`http://127.0.0.1:PORT/<tenant>/oauth2/v2.0/
/// token`; mailferry needs `allow_plain = true` for it), one thread, stopped on drop.
pub struct TokenEndpoint {
    server: http::Server,
    tenant: String,
    tls_dir: Option<tempfile::TempDir>,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for TokenEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenEndpoint({})", self.url())
    }
}

impl TokenEndpoint {
    pub fn start(cfg: TokenEndpointConfig) -> TokenEndpoint {
        let state = Arc::new(Mutex::new(State {
            stats: TokenStats::default(),
            fail: None,
            jtis: HashSet::new(),
        }));
        let scheme = if cfg.tls { "https" } else { "http" };
        let tenant = cfg.tenant.clone();
        let (tls_dir, tls) = if cfg.tls {
            let dir = tempfile::tempdir().expect("temp dir");
            crate::generate_tls(dir.path());
            let config = server_config(dir.path());
            (Some(dir), Some(config))
        } else {
            (None, None)
        };
        let server = {
            let state = state.clone();
            http::Server::start("the token endpoint", move |port| {
                let url = format!(
                    "{scheme}://127.0.0.1:{port}/{}/oauth2/v2.0/token",
                    cfg.tenant
                );
                move |sock, n| {
                    // Every other answer chunked, as a proxy in front of a real endpoint
                    // might send it.
                    let chunked = n.is_multiple_of(2);
                    match &tls {
                        None => {
                            let _ = serve(sock, &cfg, &url, &state, chunked);
                        }
                        Some(config) => {
                            if let Ok(conn) = rustls::ServerConnection::new(config.clone()) {
                                let stream = rustls::StreamOwned::new(conn, sock);
                                let _ = serve(stream, &cfg, &url, &state, chunked);
                            }
                        }
                    }
                }
            })
        };
        TokenEndpoint {
            server,
            tenant,
            tls_dir,
            state,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls_dir.is_some() {
            "https"
        } else {
            "http"
        };
        format!(
            "{scheme}://127.0.0.1:{}/{}/oauth2/v2.0/token",
            self.server.port(),
            self.tenant
        )
    }

    /// The private CA that signed the endpoint's certificate ([`TokenEndpointConfig::tls`]).
    pub fn ca_pem(&self) -> Option<PathBuf> {
        self.tls_dir.as_ref().map(|d| d.path().join("ca.pem"))
    }

    pub fn stats(&self) -> TokenStats {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stats
            .clone()
    }

    /// Every request from now on is answered with `status` and `body` (`None`: normal
    /// service again).
    pub fn fail_with(&self, failure: Option<(u16, Value)>) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).fail = failure;
    }
}

/// Entra ID's error body for `code` (as its v2.0 endpoint words them).
pub fn entra_error(error: &str, code: u32, description: &str) -> Value {
    json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {description} Trace ID: 00000000-0000-0000-0000-000000000000 \
             Correlation ID: 00000000-0000-0000-0000-000000000000 Timestamp: 2026-12-02 \
             00:00:00Z"
        ),
        "error_codes": [code],
        "timestamp": "2026-12-02 00:00:00Z",
        "trace_id": "00000000-0000-0000-0000-000000000000",
        "correlation_id": "00000000-0000-0000-0000-000000000000",
    })
}

/// A rustls server configuration with the certificate and key `generate_tls` wrote in `dir`.
fn server_config(dir: &Path) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("cert.pem"))
        .expect("read cert.pem")
        .map(|c| c.expect("a certificate"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).expect("read key.pem");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate");
    Arc::new(config)
}

fn serve<S: Read + Write>(
    sock: S,
    cfg: &TokenEndpointConfig,
    url: &str,
    state: &Mutex<State>,
    chunked: bool,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(sock);
    let request = http::read_request(&mut reader)?;
    let form = request.form();
    let (status, answer) = {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        st.stats.requests += 1;
        let outcome = if let Some((status, body)) = st.fail.clone() {
            Err((status, body))
        } else if request.target != format!("/{}/oauth2/v2.0/token", cfg.tenant) {
            let tenant = request
                .target
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or("")
                .to_string();
            Err((
                400,
                entra_error(
                    "invalid_request",
                    90002,
                    &format!(
                        "Tenant '{tenant}' not found. Check to make sure you have the correct \
                         tenant ID and are signing into the correct cloud."
                    ),
                ),
            ))
        } else if request.method != "POST" {
            Err((
                405,
                json!({"error": "invalid_request", "error_description": "POST only"}),
            ))
        } else {
            issue(cfg, url, &form, &mut st)
        };
        match outcome {
            Ok((grant, token, sub)) => {
                st.stats.issued += 1;
                *st.stats.by_grant.entry(grant.to_string()).or_default() += 1;
                if let Some(sub) = sub {
                    st.stats.subjects.push(sub);
                }
                st.stats.tokens.push(token.clone());
                let told = cfg.advertised_lifetime.unwrap_or(cfg.lifetime).as_secs();
                (
                    200,
                    json!({
                        "token_type": "Bearer",
                        "expires_in": told,
                        "ext_expires_in": told,
                        "access_token": token,
                    }),
                )
            }
            Err((status, body)) => {
                st.stats.refused += 1;
                (status, body)
            }
        }
    };
    let text = answer.to_string();
    let reason = http::reason(status);
    let out = reader.get_mut();
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n"
    );
    if chunked {
        // Two chunks, as a proxy in front of a real endpoint might send them.
        let (a, b) = text.split_at(text.len() / 2);
        write!(
            out,
            "{head}Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        )?;
    } else {
        write!(out, "{head}Content-Length: {}\r\n\r\n{text}", text.len())?;
    }
    out.flush()
}

type Issued = (&'static str, String, Option<String>);

fn unknown_client(cfg: &TokenEndpointConfig, id: &str) -> (u16, Value) {
    (
        400,
        entra_error(
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{id}' was not found in the directory '{}'. This \
                 can happen if the application has not been installed by the administrator of \
                 the tenant or consented to by any user in the tenant.",
                cfg.tenant
            ),
        ),
    )
}

fn issue(
    cfg: &TokenEndpointConfig,
    url: &str,
    form: &BTreeMap<String, String>,
    st: &mut State,
) -> Result<Issued, (u16, Value)> {
    let field = |k: &str| form.get(k).map(String::as_str);
    let now = now();
    let lifetime = cfg.lifetime.as_secs();
    let graph = field("scope") == Some("https://graph.microsoft.com/.default");
    let app_token = |client_id: &str| {
        let (aud, roles) = if graph {
            ("https://graph.microsoft.com", &cfg.graph_roles)
        } else {
            ("https://outlook.office365.com", &cfg.roles)
        };
        cfg.key.sign(&json!({
            "iss": ISSUER,
            "aud": aud,
            "sub": client_id,
            "appid": client_id,
            "email": format!("app@{}", cfg.domain),
            "roles": roles,
            "iat": now,
            "exp": now + lifetime,
        }))
    };
    match field("grant_type") {
        Some("client_credentials") => {
            let id = field("client_id").unwrap_or("");
            if !graph && field("scope") != Some("https://outlook.office365.com/.default") {
                return Err((
                    400,
                    entra_error(
                        "invalid_scope",
                        1002012,
                        "The provided value for scope is not valid. Client credential flows \
                         must have a scope value with /.default suffixed to the resource \
                         identifier (application ID URI).",
                    ),
                ));
            }
            let client = cfg.clients.iter().find(|c| match c {
                TestClient::Secret { client_id, .. }
                | TestClient::Certificate { client_id, .. } => client_id == id,
                TestClient::ServiceAccount { .. } => false,
            });
            match (client, field("client_secret"), field("client_assertion")) {
                (None, _, _) => Err(unknown_client(cfg, id)),
                (Some(TestClient::Secret { secret, .. }), Some(given), None) => {
                    if given == secret {
                        Ok(("client_secret", app_token(id), None))
                    } else {
                        Err((
                            401,
                            entra_error(
                                "invalid_client",
                                7000215,
                                "Invalid client secret provided. Ensure the secret being sent \
                                 in the request is the client secret value, not the client \
                                 secret ID, for a secret added to app '{id}'.",
                            ),
                        ))
                    }
                }
                (Some(TestClient::Certificate { key, .. }), None, Some(assertion)) => {
                    if field("client_assertion_type")
                        != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
                    {
                        return Err((
                            400,
                            entra_error(
                                "invalid_request",
                                900144,
                                "The request body must contain the following parameter: 'client_assertion_type'.",
                            ),
                        ));
                    }
                    let claims = verify_rs256(assertion, key).map_err(|why| {
                        (
                            401,
                            entra_error(
                                "invalid_client",
                                700027,
                                &format!("Client assertion failed signature validation: {why}."),
                            ),
                        )
                    })?;
                    let bad = |why: &str| {
                        Err((
                            401,
                            entra_error(
                                "invalid_client",
                                700024,
                                &format!(
                                    "Client assertion is not within its valid time range or is wrong: {why}."
                                ),
                            ),
                        ))
                    };
                    let num = |k: &str| claims.get(k).and_then(Value::as_u64).unwrap_or(0);
                    if claims["aud"] != url {
                        return bad("aud is not the token endpoint");
                    }
                    if claims["iss"] != id || claims["sub"] != id {
                        return bad("iss and sub must be the client ID");
                    }
                    if num("exp") <= now || num("nbf") > now + 5 || num("iat") > now + 5 {
                        return bad("exp, nbf or iat");
                    }
                    let jti = claims["jti"].as_str().unwrap_or("").to_string();
                    if jti.is_empty() || !st.jtis.insert(jti) {
                        return bad("jti missing or used before");
                    }
                    Ok(("client_assertion", app_token(id), None))
                }
                (Some(_), _, _) => Err((
                    401,
                    entra_error(
                        "invalid_client",
                        7000218,
                        "The request body must contain the following parameter: \
                         'client_assertion' or 'client_secret'.",
                    ),
                )),
            }
        }
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => {
            let assertion = field("assertion").unwrap_or("");
            let iss = assertion
                .split('.')
                .nth(1)
                .and_then(b64url_decode)
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|c| c["iss"].as_str().map(str::to_string))
                .unwrap_or_default();
            let google = |error: &str, description: &str| {
                Err((
                    400,
                    json!({"error": error, "error_description": description}),
                ))
            };
            let Some(TestClient::ServiceAccount { key, .. }) = cfg.clients.iter().find(|c| {
                matches!(c, TestClient::ServiceAccount { client_email, .. } if *client_email == iss)
            }) else {
                return google("invalid_client", "The OAuth client was not found.");
            };
            let Ok(claims) = verify_rs256(assertion, key) else {
                return google("invalid_grant", "Invalid JWT Signature.");
            };
            let num = |k: &str| claims.get(k).and_then(Value::as_u64).unwrap_or(0);
            if claims["aud"] != url {
                return google(
                    "invalid_grant",
                    "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
                );
            }
            if num("exp") <= now || num("iat") > now + 5 || num("exp") - num("iat") > 3600 {
                return google(
                    "invalid_grant",
                    "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
                );
            }
            if claims["scope"] != "https://mail.google.com/" {
                return google(
                    "unauthorized_client",
                    "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.",
                );
            }
            let Some(sub) = claims["sub"].as_str().filter(|s| s.contains('@')) else {
                return google("invalid_grant", "Invalid email or User ID");
            };
            let token = cfg.key.sign(&json!({
                "iss": ISSUER,
                "aud": "https://mail.google.com/",
                "sub": sub,
                "email": sub,
                "iat": now,
                "exp": now + lifetime,
            }));
            Ok(("jwt_bearer", token, Some(sub.to_string())))
        }
        _ => Err((
            400,
            entra_error(
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type.",
            ),
        )),
    }
}

/// The claims of an RS256 JWT whose signature `key`'s public key verifies (and, when its
/// header has `x5t`, that names `key`'s certificate).
fn verify_rs256(jwt: &str, key: &TestKeyPair) -> Result<Value, String> {
    let mut parts = jwt.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a compact JWS".into());
    };
    let header: Value = b64url_decode(h)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("a bad header")?;
    if header["alg"] != "RS256" {
        return Err("alg is not RS256".into());
    }
    if let Some(x5t) = header.get("x5t")
        && *x5t != key.x5t()
    {
        return Err("x5t is not the thumbprint of a registered certificate".into());
    }
    let sig = b64url_decode(s).ok_or("a bad signature encoding")?;
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &key.public_der)
        .verify(format!("{h}.{c}").as_bytes(), &sig)
        .map_err(|_| "the signature does not verify".to_string())?;
    b64url_decode(c)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| "bad claims".to_string())
}
