//! A Microsoft Graph stand-in on loopback ([`GraphStub`]): the `/v1.0/users` endpoints a
//! directory needs, answering with the JSON of Microsoft's documentation examples (the
//! fixtures in `crates/testkit/fixtures/graph/`, whose README names each source).
//!
//! It keeps users as Graph's JSON objects, and does what the documentation says Graph does:
//! `$select` (only the selected properties are returned), `$filter` (`eq` on properties,
//! `proxyAddresses/any(p:p eq '…')`, `and`, `or`, parentheses; strings compared ignoring
//! case), `$top` and paging through `@odata.nextLink` with a `$skiptoken`, `$count=true`
//! answered only with `ConsistencyLevel: eventual` on that very request, `404` for an unknown
//! user, `POST /users`, `POST /users/{id}/assignLicense` and a mailbox that answers
//! `GET /users/{id}/mailboxSettings` a while after its licence.
//!
//! Every request must carry a token of the test kit's token endpoint
//! ([`crate::oauth2::TokenEndpoint`]) for `https://graph.microsoft.com`, signed with the same
//! key; its `roles` decide what the application may do, as Entra ID's application permissions
//! do: reading users needs `User.Read.All` (or `User.ReadWrite.All`, `Directory.Read.All`,
//! `Directory.ReadWrite.All`), creating them and assigning licences `User.ReadWrite.All` (or
//! `Directory.ReadWrite.All`), reading mailbox settings `MailboxSettings.Read` (or
//! `MailboxSettings.ReadWrite`). Without them the answer is the documented
//! `403 Authorization_RequestDenied`.

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::http::{self, Request, read_request};
use crate::oauth2::SigningKey;

/// The documented examples, as published (see `fixtures/graph/README.md`).
pub mod fixtures {
    /// List users, example 1.
    pub const LIST_USERS: &str = include_str!("../fixtures/graph/list-users.json");
    /// Get user, example 1.
    pub const GET_USER: &str = include_str!("../fixtures/graph/get-user.json");
    /// Create User, example 1 (201).
    pub const CREATE_USER: &str = include_str!("../fixtures/graph/create-user.json");
    /// user: assignLicense (200).
    pub const ASSIGN_LICENSE: &str = include_str!("../fixtures/graph/assign-license.json");
    /// Get mailbox settings, example 1.
    pub const MAILBOX_SETTINGS: &str = include_str!("../fixtures/graph/mailbox-settings.json");
    /// The throttling guidance's sample 429 body.
    pub const THROTTLED: &str = include_str!("../fixtures/graph/error-throttled.json");
    /// The daemon-app troubleshooting's 403 body.
    pub const AUTHORIZATION_DENIED: &str =
        include_str!("../fixtures/graph/error-authorization-denied.json");
    /// The error responses page's example body.
    pub const ERROR_EXAMPLE: &str = include_str!("../fixtures/graph/error-example.json");

    /// A fixture as JSON.
    pub fn json(text: &str) -> serde_json::Value {
        serde_json::from_str(text).expect("a fixture is JSON")
    }
}

/// The audience of a Graph token.
pub const GRAPH_AUDIENCE: &str = "https://graph.microsoft.com";

const READ_ROLES: [&str; 4] = [
    "User.Read.All",
    "User.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const WRITE_ROLES: [&str; 2] = ["User.ReadWrite.All", "Directory.ReadWrite.All"];
const MAILBOX_ROLES: [&str; 2] = ["MailboxSettings.Read", "MailboxSettings.ReadWrite"];

/// How to start a [`GraphStub`].
#[derive(Debug, Clone)]
pub struct GraphStubConfig {
    /// The token endpoint's key: tokens are checked with it.
    pub key: SigningKey,
    /// Users per page when the request has no `$top` (Graph's default is 100).
    pub page_size: usize,
    /// The licences (`skuId`, lower case) the tenant has.
    pub skus: Vec<String>,
    /// How long after its licence a new user's mailbox answers.
    pub mailbox_delay: Duration,
}

impl GraphStubConfig {
    pub fn new(key: &SigningKey) -> GraphStubConfig {
        GraphStubConfig {
            key: key.clone(),
            page_size: 100,
            skus: vec![E3_SKU.to_string()],
            mailbox_delay: Duration::from_millis(1500),
        }
    }
}

/// The skuId of Office 365 E3 (`ENTERPRISEPACK`), the stub tenant's licence.
pub const E3_SKU: &str = "6fd2c87f-b296-42f0-b197-1e91e994b900";

/// One request the stub received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    /// The path, percent-decoded, without the query.
    pub path: String,
    /// The query parameters, percent-decoded.
    pub query: BTreeMap<String, String>,
    /// The `ConsistencyLevel` header.
    pub consistency_level: Option<String>,
    /// The status answered.
    pub status: u16,
}

struct State {
    users: Vec<Value>,
    /// When each licensed user's mailbox answers, by user ID.
    mailboxes: BTreeMap<String, Instant>,
    /// Requests still to be answered `429` with `Retry-After` (seconds).
    throttle: Vec<u64>,
    seen: Vec<SeenRequest>,
}

/// The stub: plain HTTP on loopback (`http://127.0.0.1:PORT/v1.0`), one thread, stopped on
/// drop.
pub struct GraphStub {
    server: http::Server,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for GraphStub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GraphStub({})", self.url())
    }
}

impl GraphStub {
    pub fn start(cfg: GraphStubConfig) -> GraphStub {
        let state = Arc::new(Mutex::new(State {
            users: Vec::new(),
            mailboxes: BTreeMap::new(),
            throttle: Vec::new(),
            seen: Vec::new(),
        }));
        let server = {
            let state = state.clone();
            http::Server::start("the Graph stub", move |port| {
                let base = format!("http://127.0.0.1:{port}/v1.0");
                move |sock, _| {
                    let _ = serve(sock, &cfg, &base, &state);
                }
            })
        };
        GraphStub { server, state }
    }

    /// `http://127.0.0.1:PORT/v1.0`, the `graph_url` of a job.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1.0", self.server.port())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a user (a Graph user object; it must have an `id`). Its mailbox answers at once
    /// when it has `mail`.
    pub fn add_user(&self, user: Value) {
        let id = user["id"].as_str().expect("a user has an id").to_string();
        let mut st = self.state();
        if !user["mail"].is_null() {
            st.mailboxes.insert(id, Instant::now());
        }
        st.users.push(user);
    }

    /// A mailbox user as Exchange Online shows one: `mail` the primary address, every
    /// address in `proxyAddresses` (`SMTP:` the primary, `smtp:` the others).
    pub fn add_mailbox(&self, id: &str, upn: &str, display_name: &str, addresses: &[&str]) {
        let mut proxy: Vec<String> = Vec::new();
        for (i, a) in addresses.iter().enumerate() {
            proxy.push(format!("{}:{a}", if i == 0 { "SMTP" } else { "smtp" }));
        }
        self.add_user(json!({
            "id": id,
            "displayName": display_name,
            "mail": addresses.first().copied(),
            "proxyAddresses": proxy,
            "userPrincipalName": upn,
            "accountEnabled": true,
        }));
    }

    /// Changes a user's properties (a merge of `patch` into the user object).
    pub fn patch_user(&self, id: &str, patch: Value) {
        let mut st = self.state();
        let user = st
            .users
            .iter_mut()
            .find(|u| u["id"] == id)
            .unwrap_or_else(|| panic!("no user {id}"));
        if let (Some(u), Some(p)) = (user.as_object_mut(), patch.as_object()) {
            for (k, v) in p {
                u.insert(k.clone(), v.clone());
            }
        }
    }

    /// Deletes a user.
    pub fn remove_user(&self, id: &str) {
        self.state().users.retain(|u| u["id"] != id);
    }

    /// The users as the stub holds them.
    pub fn users(&self) -> Vec<Value> {
        self.state().users.clone()
    }

    /// The next requests are answered `429 Too Many Requests` with these `Retry-After`
    /// seconds (the throttling guidance's sample body), one each.
    pub fn throttle(&self, retry_after: &[u64]) {
        self.state().throttle.extend_from_slice(retry_after);
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.state().seen.clone()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A Graph error body in the documented shape.
pub fn graph_error(code: &str, message: &str) -> Value {
    json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": "2026-12-02T00:00:00",
                "request-id": "00000000-0000-0000-0000-000000000000",
                "client-request-id": "00000000-0000-0000-0000-000000000000"
            }
        }
    })
}

fn not_found(id: &str) -> (u16, Value) {
    (
        404,
        graph_error(
            "Request_ResourceNotFound",
            &format!(
                "Resource '{id}' does not exist or one of its queried reference-property \
                 objects are not present."
            ),
        ),
    )
}

fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'$' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The claims of a token signed with `key`, if its signature verifies.
fn verify_hs256(token: &str, key: &SigningKey) -> Option<Value> {
    let mut parts = token.split('.');
    let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()?;
    if !key.verify(format!("{h}.{c}").as_bytes(), &sig) {
        return None;
    }
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()?;
    serde_json::from_slice(&claims).ok()
}

fn serve<S: Read + Write>(
    sock: S,
    cfg: &GraphStubConfig,
    base: &str,
    state: &Mutex<State>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(sock);
    let request = read_request(&mut reader)?;
    let (status, retry_after, answer) = {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        let (status, retry_after, answer) = if !st.throttle.is_empty() {
            let wait = st.throttle.remove(0);
            (429, Some(wait), fixtures::json(fixtures::THROTTLED))
        } else {
            let (status, answer) = route(&request, cfg, base, &mut st);
            (status, None, answer)
        };
        st.seen.push(SeenRequest {
            method: request.method.clone(),
            path: request.path.clone(),
            query: request.query.clone(),
            consistency_level: request.header("consistencylevel").map(str::to_string),
            status,
        });
        (status, retry_after, answer)
    };
    let text = answer.to_string();
    let reason = http::reason(status);
    let retry = retry_after
        .map(|s| format!("Retry-After: {s}\r\n"))
        .unwrap_or_default();
    let out = reader.get_mut();
    write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n{retry}\
         request-id: 00000000-0000-0000-0000-000000000000\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n{text}",
        text.len()
    )?;
    out.flush()
}

/// The application's roles, or the error to answer.
fn roles(request: &Request, cfg: &GraphStubConfig) -> Result<Vec<String>, (u16, Value)> {
    let invalid = |why: &str| {
        (
            401,
            graph_error(
                "InvalidAuthenticationToken",
                &format!("Access token {why}."),
            ),
        )
    };
    let token = request
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .ok_or_else(|| invalid("is empty"))?;
    let claims = verify_hs256(token, &cfg.key).ok_or_else(|| invalid("validation failure"))?;
    if claims["aud"] != GRAPH_AUDIENCE {
        return Err(invalid(
            "validation failure. Invalid audience (a token for another resource)",
        ));
    }
    if claims["exp"].as_u64().unwrap_or(0) <= now() {
        return Err(invalid("has expired or is not yet valid"));
    }
    Ok(claims["roles"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

fn route(request: &Request, cfg: &GraphStubConfig, base: &str, st: &mut State) -> (u16, Value) {
    let roles = match roles(request, cfg) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let has = |needed: &[&str]| roles.iter().any(|r| needed.contains(&r.as_str()));
    let denied = || (403, fixtures::json(fixtures::AUTHORIZATION_DENIED));
    let Some(rest) = request.path.strip_prefix("/v1.0/users") else {
        return (
            400,
            graph_error(
                "BadRequest",
                "Invalid version: the stub serves /v1.0/users only",
            ),
        );
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match (request.method.as_str(), segments.as_slice()) {
        ("GET", []) => {
            if !has(&READ_ROLES) {
                return denied();
            }
            list(request, cfg, base, st)
        }
        ("GET", [id]) => {
            if !has(&READ_ROLES) {
                return denied();
            }
            match st.users.iter().find(|u| u["id"] == *id) {
                Some(u) => {
                    let mut body = select(u, request.query.get("$select"));
                    body["@odata.context"] =
                        json!("https://graph.microsoft.com/v1.0/$metadata#users/$entity");
                    (200, body)
                }
                None => not_found(id),
            }
        }
        ("GET", [id, "mailboxSettings"]) => {
            if !has(&MAILBOX_ROLES) {
                return denied();
            }
            if !st.users.iter().any(|u| u["id"] == *id) {
                return not_found(id);
            }
            match st.mailboxes.get(*id) {
                Some(at) if *at <= Instant::now() => {
                    (200, fixtures::json(fixtures::MAILBOX_SETTINGS))
                }
                _ => (
                    404,
                    graph_error(
                        "MailboxNotEnabledForRESTAPI",
                        "REST API is not yet supported for this mailbox.",
                    ),
                ),
            }
        }
        ("POST", []) => {
            if !has(&WRITE_ROLES) {
                return denied();
            }
            create(request, st)
        }
        ("POST", [id, "assignLicense"]) => {
            if !has(&WRITE_ROLES) {
                return denied();
            }
            assign_license(request, cfg, id, st)
        }
        _ => (
            400,
            graph_error(
                "Request_BadRequest",
                &format!(
                    "{} {} is not served by the stub",
                    request.method, request.path
                ),
            ),
        ),
    }
}

/// The user with only the `$select`ed properties (all of them without `$select`).
fn select(user: &Value, selected: Option<&String>) -> Value {
    match selected {
        None => user.clone(),
        Some(list) => {
            let mut out = serde_json::Map::new();
            for name in list.split(',').map(str::trim) {
                out.insert(
                    name.to_string(),
                    user.get(name).cloned().unwrap_or(Value::Null),
                );
            }
            Value::Object(out)
        }
    }
}

fn list(request: &Request, cfg: &GraphStubConfig, base: &str, st: &State) -> (u16, Value) {
    let q = &request.query;
    let count = q.get("$count").is_some_and(|c| c == "true");
    if count && request.header("consistencylevel") != Some("eventual") {
        return (
            400,
            graph_error(
                "Request_BadRequest",
                "$count is not currently supported without the ConsistencyLevel:eventual \
                 header (an advanced query).",
            ),
        );
    }
    let filter = match q.get("$filter").map(|f| Filter::parse(f)) {
        None => None,
        Some(Ok(f)) => Some(f),
        Some(Err(why)) => {
            return (
                400,
                graph_error(
                    "Request_UnsupportedQuery",
                    &format!("Unsupported query: {why}"),
                ),
            );
        }
    };
    let matching: Vec<&Value> = st
        .users
        .iter()
        .filter(|u| filter.as_ref().is_none_or(|f| f.matches(u)))
        .collect();
    let top = q
        .get("$top")
        .and_then(|t| t.parse::<usize>().ok())
        .map_or(cfg.page_size, |t| t.min(cfg.page_size).max(1));
    let skip = q
        .get("$skiptoken")
        .and_then(|t| {
            t.strip_prefix("X'")?
                .strip_suffix('\'')?
                .parse::<usize>()
                .ok()
        })
        .unwrap_or(0);
    let page: Vec<Value> = matching
        .iter()
        .skip(skip)
        .take(top)
        .map(|u| select(u, q.get("$select")))
        .collect();
    let mut body = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users",
        "value": page,
    });
    if count && skip == 0 {
        body["@odata.count"] = json!(matching.len());
    }
    if skip + top < matching.len() {
        let mut params: Vec<String> = q
            .iter()
            .filter(|(k, _)| *k != "$skiptoken")
            .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
            .collect();
        params.push(format!(
            "$skiptoken={}",
            percent_encode(&format!("X'{}'", skip + top))
        ));
        body["@odata.nextLink"] = json!(format!("{base}/users?{}", params.join("&")));
    }
    (200, body)
}

fn create(request: &Request, st: &mut State) -> (u16, Value) {
    let bad = |message: &str| (400, graph_error("Request_BadRequest", message));
    let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
        return bad("Invalid JSON in the request body.");
    };
    for required in [
        "accountEnabled",
        "displayName",
        "mailNickname",
        "userPrincipalName",
        "passwordProfile",
    ] {
        if body.get(required).is_none_or(Value::is_null) {
            return bad(&format!(
                "Invalid value specified for property '{required}' of resource 'User'."
            ));
        }
    }
    let upn = body["userPrincipalName"].as_str().unwrap_or("").to_string();
    if st.users.iter().any(|u| {
        u["userPrincipalName"]
            .as_str()
            .is_some_and(|x| x.eq_ignore_ascii_case(&upn))
    }) {
        return bad(
            "Another object with the same value for property userPrincipalName already exists.",
        );
    }
    let password = body["passwordProfile"]["password"].as_str().unwrap_or("");
    if password.len() < 8 {
        return bad(
            "The specified password does not comply with password complexity requirements. \
             Please provide a different password.",
        );
    }
    let id = random_guid();
    let user = json!({
        "id": id,
        "accountEnabled": body["accountEnabled"],
        "displayName": body["displayName"],
        "mailNickname": body["mailNickname"],
        "userPrincipalName": upn,
        "usageLocation": body.get("usageLocation").cloned().unwrap_or(Value::Null),
        "mail": null,
        "proxyAddresses": [],
        "assignedLicenses": [],
    });
    st.users.push(user);
    // The documented example's response, with this user's values.
    let mut answer = fixtures::json(fixtures::CREATE_USER);
    for (k, v) in [
        ("id", json!(id)),
        ("displayName", body["displayName"].clone()),
        ("userPrincipalName", json!(upn)),
        ("mail", Value::Null),
        ("givenName", Value::Null),
        ("surname", Value::Null),
        ("jobTitle", Value::Null),
        ("mobilePhone", Value::Null),
        ("officeLocation", Value::Null),
    ] {
        answer[k] = v;
    }
    (201, answer)
}

fn assign_license(
    request: &Request,
    cfg: &GraphStubConfig,
    id: &str,
    st: &mut State,
) -> (u16, Value) {
    let bad = |message: &str| (400, graph_error("Request_BadRequest", message));
    let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
        return bad("Invalid JSON in the request body.");
    };
    let Some(user) = st.users.iter_mut().find(|u| u["id"] == id) else {
        return not_found(id);
    };
    let skus: Vec<String> = body["addLicenses"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l["skuId"].as_str().map(str::to_ascii_lowercase))
                .collect()
        })
        .unwrap_or_default();
    if body.get("removeLicenses").is_none() {
        return bad("Invalid value specified for property 'removeLicenses'.");
    }
    if let Some(unknown) = skus.iter().find(|s| !cfg.skus.contains(s)) {
        return bad(&format!(
            "License {unknown} does not correspond to a valid company License."
        ));
    }
    if user["usageLocation"].as_str().is_none_or(str::is_empty) {
        return bad("License assignment cannot be done for user with invalid usage location.");
    }
    user["assignedLicenses"] = json!(
        skus.iter()
            .map(|s| json!({"disabledPlans": [], "skuId": s}))
            .collect::<Vec<_>>()
    );
    // Exchange Online provisions the mailbox: its address appears, and later it answers.
    let upn = user["userPrincipalName"].as_str().unwrap_or("").to_string();
    user["mail"] = json!(upn);
    user["proxyAddresses"] = json!([format!("SMTP:{upn}")]);
    st.mailboxes
        .insert(id.to_string(), Instant::now() + cfg.mailbox_delay);
    let mut answer = fixtures::json(fixtures::ASSIGN_LICENSE);
    answer["assignedLicenses"] = user["assignedLicenses"].clone();
    (200, answer)
}

fn random_guid() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("random bytes");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The part of OData `$filter` the stub understands.
#[derive(Debug)]
enum Filter {
    Or(Box<Filter>, Box<Filter>),
    And(Box<Filter>, Box<Filter>),
    /// `property eq value`.
    Eq(String, Value),
    /// `property/any(v:v eq 'value')`.
    Any(String, String),
}

impl Filter {
    fn parse(text: &str) -> Result<Filter, String> {
        let tokens = tokenize(text)?;
        let mut p = Parser { tokens, at: 0 };
        let f = p.or()?;
        if p.at != p.tokens.len() {
            return Err(format!("unexpected {:?}", p.tokens[p.at]));
        }
        Ok(f)
    }

    fn matches(&self, user: &Value) -> bool {
        let same = |a: &Value, b: &Value| match (a, b) {
            (Value::String(a), Value::String(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => a == b,
        };
        match self {
            Filter::Or(a, b) => a.matches(user) || b.matches(user),
            Filter::And(a, b) => a.matches(user) && b.matches(user),
            Filter::Eq(property, value) => same(&user[property.as_str()], value),
            Filter::Any(property, value) => user[property.as_str()]
                .as_array()
                .is_some_and(|a| a.iter().any(|v| same(v, &json!(value)))),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Open,
    Close,
    Colon,
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            ')' => {
                out.push(Token::Close);
                i += 1;
            }
            ':' => {
                out.push(Token::Colon);
                i += 1;
            }
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("an unclosed string".into()),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            s.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(c) => {
                            s.push(*c);
                            i += 1;
                        }
                    }
                }
                out.push(Token::Text(s));
            }
            _ => {
                let start = i;
                while i < chars.len() && !chars[i].is_whitespace() && !"():'".contains(chars[i]) {
                    i += 1;
                }
                out.push(Token::Word(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn word(&self, w: &str) -> bool {
        matches!(self.tokens.get(self.at), Some(Token::Word(x)) if x == w)
    }

    fn or(&mut self) -> Result<Filter, String> {
        let mut f = self.and()?;
        while self.word("or") {
            self.at += 1;
            f = Filter::Or(Box::new(f), Box::new(self.and()?));
        }
        Ok(f)
    }

    fn and(&mut self) -> Result<Filter, String> {
        let mut f = self.factor()?;
        while self.word("and") {
            self.at += 1;
            f = Filter::And(Box::new(f), Box::new(self.factor()?));
        }
        Ok(f)
    }

    fn factor(&mut self) -> Result<Filter, String> {
        match self.next() {
            Some(Token::Open) => {
                let f = self.or()?;
                match self.next() {
                    Some(Token::Close) => Ok(f),
                    other => Err(format!("expected ), found {other:?}")),
                }
            }
            Some(Token::Word(w)) if w.ends_with("/any") => {
                let property = w.trim_end_matches("/any").to_string();
                let v = match (self.next(), self.next(), self.next()) {
                    (Some(Token::Open), Some(Token::Word(v)), Some(Token::Colon)) => v,
                    _ => return Err("expected (v: after any".into()),
                };
                match (self.next(), self.next(), self.next(), self.next()) {
                    (
                        Some(Token::Word(v2)),
                        Some(Token::Word(eq)),
                        Some(Token::Text(value)),
                        Some(Token::Close),
                    ) if v2 == v && eq == "eq" => Ok(Filter::Any(property, value)),
                    _ => Err("only any(v:v eq 'value') is understood".into()),
                }
            }
            Some(Token::Word(property)) => {
                if !self.word("eq") {
                    return Err(format!("only eq is understood after {property}"));
                }
                self.at += 1;
                let value = match self.next() {
                    Some(Token::Text(t)) => json!(t),
                    Some(Token::Word(w)) if w == "true" => json!(true),
                    Some(Token::Word(w)) if w == "false" => json!(false),
                    Some(Token::Word(w)) if w == "null" => Value::Null,
                    other => return Err(format!("a bad value {other:?}")),
                };
                Ok(Filter::Eq(property, value))
            }
            other => Err(format!("unexpected {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_as_a_directory_adapter_writes_them() {
        let user = json!({"mail": "Bob@Contoso.com", "accountEnabled": true,
                          "proxyAddresses": ["SMTP:bob@contoso.com", "smtp:b@old.example"]});
        let yes = [
            "accountEnabled eq true",
            "mail eq 'bob@contoso.com'",
            "(accountEnabled eq true) and (mail eq 'x@y' or proxyAddresses/any(p:p eq 'smtp:B@old.example'))",
        ];
        for f in yes {
            assert!(Filter::parse(f).unwrap().matches(&user), "{f}");
        }
        assert!(
            !Filter::parse("accountEnabled eq false")
                .unwrap()
                .matches(&user)
        );
        assert!(
            !Filter::parse("proxyAddresses/any(p:p eq 'smtp:o''neil@x')")
                .unwrap()
                .matches(&user)
        );
        assert!(Filter::parse("startswith(mail,'b')").is_err());
    }

    #[test]
    fn the_fixtures_are_json() {
        for f in [
            fixtures::LIST_USERS,
            fixtures::GET_USER,
            fixtures::CREATE_USER,
            fixtures::ASSIGN_LICENSE,
            fixtures::MAILBOX_SETTINGS,
            fixtures::THROTTLED,
            fixtures::AUTHORIZATION_DENIED,
            fixtures::ERROR_EXAMPLE,
        ] {
            let _ = fixtures::json(f);
        }
    }
}
