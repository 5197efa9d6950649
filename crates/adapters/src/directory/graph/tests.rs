//! The Graph directory against the test kit's Graph stand-in, which answers with Microsoft's
//! documented examples (`crates/testkit/fixtures/graph/`), and its token endpoint.

use std::time::{Duration, Instant};

use mailferry_core::job::{
    ClientCredential, GRAPH_SCOPE, GraphConfig, GraphCreate, OAuth2Config, OAuth2Flow,
    OAuth2Mechanism, Secret,
};
use mailferry_core::model::{MailboxId, NewMailbox};
use mailferry_core::ports::{Directory, DirectoryError, Provisioner};
use mailferry_testkit::graph::{E3_SKU, GraphStub, GraphStubConfig, fixtures};
use mailferry_testkit::oauth2::{SigningKey, TestClient, TokenEndpoint, TokenEndpointConfig};
use serde_json::json;

use super::GraphDirectory;
use super::users::{query_encode, to_mailbox};

const SECRET: &str = "graph-app-secret-value";

struct Tenant {
    _dir: tempfile::TempDir,
    endpoint: TokenEndpoint,
    graph: GraphStub,
    secret_file: std::path::PathBuf,
}

fn tenant(roles: &[&str], page_size: usize) -> Tenant {
    let key = SigningKey::random();
    let mut cfg = TokenEndpointConfig::new(&key, "contoso.com");
    cfg.clients.push(TestClient::Secret {
        client_id: "graph-app".into(),
        secret: SECRET.into(),
    });
    cfg.graph_roles = roles.iter().map(|r| r.to_string()).collect();
    let endpoint = TokenEndpoint::start(cfg);
    let mut gcfg = GraphStubConfig::new(&key);
    gcfg.page_size = page_size;
    gcfg.mailbox_delay = Duration::from_millis(1200);
    let graph = GraphStub::start(gcfg);
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    Tenant {
        _dir: dir,
        endpoint,
        graph,
        secret_file,
    }
}

impl Tenant {
    fn config(&self) -> GraphConfig {
        GraphConfig {
            graph_url: self.graph.url(),
            tls_ca: None,
            oauth2: OAuth2Config {
                flow: OAuth2Flow::ClientCredentials {
                    tenant: Some("contoso-test".into()),
                    client_id: "graph-app".into(),
                    credential: ClientCredential::Secret(Secret::File(self.secret_file.clone())),
                },
                token_url: Some(self.endpoint.url()),
                scope: GRAPH_SCOPE.into(),
                mechanism: OAuth2Mechanism::XOAuth2,
                tls_ca: None,
            },
            oauth2_key: "target.directory.oauth2".into(),
            filter: None,
            create: Some(GraphCreate {
                license_sku: E3_SKU.into(),
                usage_location: "CH".into(),
                mailbox_wait_seconds: 10,
            }),
        }
    }

    fn open(&self) -> GraphDirectory {
        let mut d = GraphDirectory::connect(&self.config()).expect("connect to the Graph stub");
        d.set_poll_interval(Duration::from_millis(200));
        d
    }
}

#[test]
fn the_documented_user_objects_read_as_mailboxes() {
    // List users, example 1: a room with mail, an administrator without (no mailbox).
    let list = fixtures::json(fixtures::LIST_USERS);
    let users = list["value"].as_array().unwrap();
    let adams = to_mailbox(&users[0]).unwrap();
    assert_eq!(
        adams.id,
        MailboxId::new("6ea91a8d-e32e-41a1-b7bd-d2d185eed0e0")
    );
    assert_eq!(adams.login, "Adams@contoso.com");
    assert_eq!(adams.addresses, vec!["Adams@contoso.com".to_string()]);
    assert_eq!(adams.display_name.as_deref(), Some("Conf Room Adams"));
    assert!(to_mailbox(&users[1]).unwrap_err().contains("no mail"));
    // Get user, example 1.
    let adele = to_mailbox(&fixtures::json(fixtures::GET_USER)).unwrap();
    assert_eq!(adele.id.as_str(), "87d349ed-44d7-43e1-9a83-5f2406dee5bd");
    assert_eq!(adele.addresses, vec!["AdeleV@contoso.com".to_string()]);
    // proxyAddresses as the user resource describes them (with its space after the colon):
    // SMTP: the primary when there is no mail, smtp: aliases, other prefixes ignored.
    let bob = to_mailbox(&json!({
        "id": "00000000-0000-0000-0000-0000000000b0",
        "userPrincipalName": "bob@contoso.com",
        "mail": null,
        "proxyAddresses": ["smtp: bob@sales.contoso.com", "SMTP: bob@contoso.com",
                           "X500:/o=ExchangeLabs/ou=Exchange/cn=Recipients/cn=bob", "SIP:bob@contoso.com"],
    }))
    .unwrap();
    assert_eq!(
        bob.addresses,
        vec!["bob@contoso.com", "bob@sales.contoso.com"]
    );
    // With mail, mail is the primary even if proxyAddresses lists SMTP: first.
    let c = to_mailbox(&json!({
        "id": "00000000-0000-0000-0000-0000000000c0", "userPrincipalName": "c@contoso.com",
        "mail": "carol@contoso.com", "proxyAddresses": ["SMTP:carol@contoso.com", "smtp:c@old.example"],
    }))
    .unwrap();
    assert_eq!(c.addresses, vec!["carol@contoso.com", "c@old.example"]);
    assert_eq!(query_encode("a b+c&d#é"), "a%20b%2Bc%26d%23%C3%A9");
}

#[test]
fn listing_pages_through_next_links_with_select() {
    let t = tenant(&["User.Read.All"], 2);
    for u in fixtures::json(fixtures::LIST_USERS)["value"]
        .as_array()
        .unwrap()
    {
        t.graph.add_user(u.clone());
    }
    for i in 0..5 {
        t.graph.add_mailbox(
            &format!("00000000-0000-0000-0000-00000000000{i}"),
            &format!("u{i}@contoso.com"),
            &format!("User {i}"),
            &[&format!("u{i}@contoso.com"), &format!("u{i}@old.example")],
        );
    }
    let mut d = t.open();
    let listing = d.list().unwrap();
    assert_eq!(listing.mailboxes.len(), 6, "{listing:?}");
    assert_eq!(
        listing.skipped,
        vec!["admin@contoso.com: no mail and no SMTP: address in proxyAddresses (no mailbox)"]
    );
    let u3 = listing
        .mailboxes
        .iter()
        .find(|m| m.login == "u3@contoso.com")
        .unwrap();
    assert_eq!(u3.addresses, vec!["u3@contoso.com", "u3@old.example"]);
    let gets: Vec<_> = t
        .graph
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1.0/users" && r.query.get("$top").map(String::as_str) != Some("1"))
        .collect();
    assert_eq!(gets.len(), 4, "7 users, 2 a page: {gets:?}");
    for r in &gets {
        assert_eq!(
            r.query.get("$select").map(String::as_str),
            Some("id,mail,proxyAddresses,userPrincipalName,displayName,accountEnabled")
        );
    }
    assert!(gets[1].query.contains_key("$skiptoken"));
    // check's probe reads one page only.
    let before = t.graph.requests().len();
    let probe = d.probe().unwrap();
    assert_eq!((probe.sampled, probe.more), (2, true));
    assert_eq!(t.graph.requests().len(), before + 1);
}

#[test]
fn filter_lookup_and_find_by_address() {
    let t = tenant(&["User.Read.All"], 1);
    t.graph.add_mailbox(
        "11111111-1111-1111-1111-111111111111",
        "alice@contoso.com",
        "Alice",
        &["alice@contoso.com", "alice@old.example"],
    );
    t.graph.add_mailbox(
        "22222222-2222-2222-2222-222222222222",
        "bob@contoso.com",
        "Bob",
        &["bob@contoso.com"],
    );
    t.graph.add_mailbox(
        "33333333-3333-3333-3333-333333333333",
        "gone@contoso.com",
        "Disabled",
        &["gone@contoso.com"],
    );
    t.graph.patch_user(
        "33333333-3333-3333-3333-333333333333",
        json!({"accountEnabled": false}),
    );
    let mut cfg = t.config();
    cfg.filter = Some("accountEnabled eq true".into());
    let mut d = GraphDirectory::connect(&cfg).unwrap();
    let listing = d.list().unwrap();
    assert_eq!(listing.mailboxes.len(), 2);
    // The filter is an advanced query: the header on every page, not only the first.
    let pages: Vec<_> = t
        .graph
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1.0/users" && r.query.contains_key("$filter"))
        .collect();
    assert_eq!(pages.len(), 2);
    assert!(
        pages
            .iter()
            .all(|r| r.consistency_level.as_deref() == Some("eventual")
                && r.query.get("$count").map(String::as_str) == Some("true"))
    );
    // Lookup by id; a deleted user is missing.
    let alice = d
        .lookup(&MailboxId::new("11111111-1111-1111-1111-111111111111"))
        .unwrap()
        .unwrap();
    assert_eq!(
        alice.addresses,
        vec!["alice@contoso.com", "alice@old.example"]
    );
    t.graph.remove_user("22222222-2222-2222-2222-222222222222");
    assert_eq!(
        d.lookup(&MailboxId::new("22222222-2222-2222-2222-222222222222"))
            .unwrap(),
        None
    );
    assert!(matches!(
        d.lookup(&MailboxId::new("cn=alice,dc=x")).unwrap_err(),
        DirectoryError::InvalidId { .. }
    ));
    // Find by an alias (smtp:), by mail, and not the disabled one.
    let found = d.find_by_address("ALICE@old.example").unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id.as_str(), "11111111-1111-1111-1111-111111111111");
    assert_eq!(d.find_by_address("alice@contoso.com").unwrap().len(), 1);
    assert!(d.find_by_address("gone@contoso.com").unwrap().is_empty());
    let last = t.graph.requests().pop().unwrap();
    assert_eq!(last.consistency_level.as_deref(), Some("eventual"));
    assert_eq!(
        last.query.get("$filter").map(String::as_str),
        Some(
            "(accountEnabled eq true) and (mail eq 'gone@contoso.com' or proxyAddresses/any(p:p eq 'smtp:gone@contoso.com'))"
        )
    );
}

#[test]
fn throttling_is_waited_out_as_retry_after_says() {
    let t = tenant(&["User.Read.All"], 100);
    t.graph.add_mailbox(
        "11111111-1111-1111-1111-111111111111",
        "a@contoso.com",
        "A",
        &["a@contoso.com"],
    );
    let mut d = t.open();
    t.graph.throttle(&[1, 1]);
    let started = Instant::now();
    let listing = d.list().unwrap();
    assert_eq!(listing.mailboxes.len(), 1);
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    let statuses: Vec<u16> = t.graph.requests().iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        vec![200, 429, 429, 200],
        "the connect probe, then the listing"
    );
}

#[test]
fn refusals_are_graphs_and_the_identity_providers_words_without_secrets() {
    // An application without User.Read.All.
    let t = tenant(&["Mail.Send"], 100);
    let e = GraphDirectory::connect(&t.config()).unwrap_err();
    let text = e.to_string();
    assert_eq!(e.service_code(), Some("Authorization_RequestDenied"));
    assert!(
        text.contains("read users failed: Authorization_RequestDenied: Insufficient privileges to complete the operation. (HTTP 403)"),
        "{text}"
    );
    assert!(text.contains("User.Read.All"), "{text}");
    for token in t.endpoint.stats().tokens {
        assert!(!text.contains(&token));
    }
    // A wrong tenant: Entra ID's AADSTS90002, at connect.
    let mut cfg = t.config();
    cfg.oauth2.token_url = Some(t.endpoint.url().replace("contoso-test", "fabrikam"));
    let e = GraphDirectory::connect(&cfg).unwrap_err();
    let text = e.to_string();
    assert_eq!(e.service_code(), Some("AADSTS90002"));
    assert!(text.contains("Tenant 'fabrikam' not found"), "{text}");
    assert!(text.contains("the tenant is not found"), "{text}");
    // A wrong secret: AADSTS7000215, the secret not quoted.
    std::fs::write(&t.secret_file, "wrong-secret-value").unwrap();
    let e = GraphDirectory::connect(&t.config()).unwrap_err();
    assert_eq!(e.service_code(), Some("AADSTS7000215"));
    assert!(!e.to_string().contains("wrong-secret-value"));
    // An unreachable graph_url: the token is had, Graph is not there.
    std::fs::write(&t.secret_file, SECRET).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut cfg = t.config();
    cfg.graph_url = format!("http://127.0.0.1:{port}/v1.0");
    let e = GraphDirectory::connect(&cfg).unwrap_err();
    assert!(e.is_unreachable(), "{e}");
    assert!(
        e.to_string().starts_with(&format!(
            "Cannot connect to directory http://127.0.0.1:{port}/v1.0"
        )),
        "{e}"
    );
}

fn new_mailbox(address: &str, password: &str) -> NewMailbox {
    NewMailbox {
        base: String::new(),
        login: address.split('@').next().unwrap().into(),
        address: address.into(),
        display_name: Some("Adele Vance".into()),
        object_classes: Vec::new(),
        password: Some(password.into()),
    }
}

#[test]
fn creation_posts_the_user_assigns_the_licence_and_waits_for_the_mailbox() {
    let t = tenant(&["User.ReadWrite.All", "MailboxSettings.Read"], 100);
    let mut d = t.open();
    let created = d
        .create(&new_mailbox("adelev@contoso.com", "xWwvJ]6NMw+bWH-d"))
        .unwrap();
    assert_eq!(created.login, "adelev@contoso.com");
    assert_eq!(created.addresses, vec!["adelev@contoso.com"]);
    let note = d.take_note().unwrap();
    assert!(
        note.starts_with("licence assigned; the mailbox answered after"),
        "{note}"
    );
    let user = t
        .graph
        .users()
        .into_iter()
        .find(|u| u["id"] == created.id.as_str())
        .unwrap();
    assert_eq!(user["usageLocation"], "CH");
    assert_eq!(user["assignedLicenses"][0]["skuId"], E3_SKU);
    let paths: Vec<String> = t
        .graph
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(paths[0], "GET /v1.0/users", "the connect probe");
    assert_eq!(paths[1], "POST /v1.0/users");
    assert_eq!(
        paths[2],
        format!("POST /v1.0/users/{}/assignLicense", created.id.as_str())
    );
    assert!(
        paths[3..]
            .iter()
            .all(|p| p.ends_with("/mailboxSettings") || p.starts_with("GET /v1.0/users/"))
    );
    // An existing userPrincipalName and a password the policy refuses: Graph's words.
    let e = d
        .create(&new_mailbox("adelev@contoso.com", "xWwvJ]6NMw+bWH-d"))
        .unwrap_err();
    assert!(e.to_string().contains("Request_BadRequest: Another object with the same value for property userPrincipalName already exists. (HTTP 400)"), "{e}");
    let e = d
        .create(&new_mailbox("short@contoso.com", "abc"))
        .unwrap_err();
    assert!(
        e.to_string().contains("password complexity requirements"),
        "{e}"
    );
    assert!(!e.to_string().contains("abc\""));
}

#[test]
fn a_mailbox_that_does_not_answer_in_time_is_reported_and_a_missing_write_permission_named() {
    let t = tenant(&["User.ReadWrite.All", "MailboxSettings.Read"], 100);
    let mut cfg = t.config();
    cfg.create.as_mut().unwrap().mailbox_wait_seconds = 1;
    let mut d = GraphDirectory::connect(&cfg).unwrap();
    d.set_poll_interval(Duration::from_millis(300));
    // The stub's mailbox answers 1.2 s after its licence; mailferry waits 1 s.
    let created = d
        .create(&new_mailbox("late@contoso.com", "Passw0rd!long"))
        .unwrap();
    let note = d.take_note().unwrap();
    assert!(note.contains("did not answer within 1 s"), "{note}");
    assert_eq!(created.addresses, vec!["late@contoso.com"]);
    // Reading only: creation is refused with Graph's words and the permission to add.
    let r = tenant(&["User.Read.All"], 100);
    let mut d = r.open();
    let e = d
        .create(&new_mailbox("x@contoso.com", "Passw0rd!long"))
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("create user x@contoso.com failed: Authorization_RequestDenied"),
        "{text}"
    );
    assert!(text.contains("User.ReadWrite.All"), "{text}");
    assert!(r.graph.users().is_empty());
}
