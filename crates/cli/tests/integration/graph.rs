//! Microsoft 365 as the target directory: a source slapd, a target whose directory is Entra ID
//! through Microsoft Graph (the test kit's Graph stand-in, which answers with Microsoft's
//! documented examples, and its token endpoint; no tenant can be reached from here). The
//! story of `directories.rs` on the target side: discover, manual, automatic and created
//! matches (the creation through Graph with its licence and its wait), a domain switch in
//! Entra ID, a deleted user, and Refresh email addresses with every result kind; then bad
//! Graph configurations that fail clearly and change nothing.

use std::collections::BTreeMap;

use mailferry_testkit::graph::{E3_SKU, GraphStub, GraphStubConfig};
use mailferry_testkit::oauth2::{SigningKey, TestClient, TokenEndpoint, TokenEndpointConfig};
use mailferry_testkit::{Slapd, SlapdConfig, person_ldif};
use serde_json::{Value, json};

use crate::directories::{counts, expect, results};
use crate::lab::{Runs, run_in};

const SOURCE_USERS: [&str; 7] = ["alice", "bob", "carol", "erin", "frank", "gus", "hank"];
const APP_SECRET: &str = "graph-story-secret";

const ALICE: &str = "a1a1a1a1-0000-4000-8000-000000000001";
const ROBERT: &str = "b2b2b2b2-0000-4000-8000-000000000002";
const ESMITH: &str = "e5e5e5e5-0000-4000-8000-000000000005";
const FRANK: &str = "f6f6f6f6-0000-4000-8000-000000000006";

struct World {
    lab_dir: tempfile::TempDir,
    ldap: Slapd,
    endpoint: TokenEndpoint,
    /// The same tenant's token endpoint for an application without Graph permissions.
    unconsented: TokenEndpoint,
    graph: GraphStub,
}

impl World {
    /// A job file in the lab: the source directory, and a target with the given token URL
    /// and `graph_url`, all sharing one state.
    fn write_job(&self, name: &str, token_url: &str, graph_url: &str) -> String {
        let job = format!(
            "name = \"to-m365\"\nstate = \"sqlite://state.db\"\n\n\
             [source]\nkind = \"maildir\"\npath = \"source-mail\"\n\n\
             [source.directory]\nkind = \"ldap\"\nurl = \"{ldap}\"\nsecurity = \"plain\"\n\
             bind_dn = \"{dn}\"\nbind_password = {{ env = \"MF_OLD_LDAP_PW\" }}\nbase = \"{people}\"\n\
             filter = \"(objectClass=inetOrgPerson)\"\nalias_attribute = \"mailLocalAddress\"\n\n\
             [target]\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = 1\nauth = \"oauth2\"\n\n\
             [target.oauth2]\nflow = \"client-credentials\"\ntenant = \"contoso-test\"\n\
             client_id = \"m365-app\"\nclient_secret = {{ env = \"MF_GRAPH_SECRET\" }}\n\
             token_url = \"{token_url}\"\nallow_plain = true\n\n\
             [target.directory]\nkind = \"graph\"\ngraph_url = \"{graph_url}\"\nallow_plain = true\n\n\
             [target.create]\ndomain = \"contoso.com\"\nlicense_sku = \"{E3_SKU}\"\n\
             usage_location = \"CH\"\ninitial_password = {{ env = \"MF_FIRST_PW\" }}\n\
             mailbox_wait_seconds = 30\n",
            ldap = self.ldap.url(),
            dn = self.ldap.admin_dn(),
            people = self.ldap.people(),
        );
        let path = self.lab_dir.path().join(name);
        std::fs::write(&path, job).unwrap();
        path.display().to_string()
    }
}

impl Runs for World {
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        run_in(
            self.lab_dir.path(),
            &[
                ("MF_OLD_LDAP_PW", self.ldap.admin_password()),
                ("MF_GRAPH_SECRET", APP_SECRET),
                ("MF_FIRST_PW", "Fi7st-Passw0rd!"),
            ],
            args,
        )
    }
}

fn token_endpoint(key: &SigningKey, roles: &[&str]) -> TokenEndpoint {
    let mut cfg = TokenEndpointConfig::new(key, "contoso.com");
    cfg.clients.push(TestClient::Secret {
        client_id: "m365-app".into(),
        secret: APP_SECRET.into(),
    });
    cfg.graph_roles = roles.iter().map(|r| r.to_string()).collect();
    TokenEndpoint::start(cfg)
}

fn world() -> World {
    let mut old = SlapdConfig::new("dc=old,dc=example");
    let people = "ou=people,dc=old,dc=example";
    for u in SOURCE_USERS {
        old.seed.push_str(&person_ldif(
            people,
            u,
            &format!("{u} person"),
            &format!("{u}@old.example"),
            &[],
            &format!("pw-{u}"),
        ));
    }
    let ldap = Slapd::start(old);
    let key = SigningKey::random();
    let endpoint = token_endpoint(
        &key,
        &[
            "User.ReadWrite.All",
            "MailboxSettings.Read",
            "Organization.Read.All",
        ],
    );
    let unconsented = token_endpoint(&key, &[]);
    let mut gcfg = GraphStubConfig::new(&key);
    gcfg.page_size = 2; // several pages for a handful of users
    gcfg.mailbox_delay = std::time::Duration::from_millis(1500);
    let graph = GraphStub::start(gcfg);
    // alice: the same local part; robert: bob's old address as an alias; esmith: erin's
    // (matched by hand); frank: the same local part. carol is created; gus waits; hank has
    // no match. A disabled account is left out by the default filter.
    graph.add_mailbox(ALICE, "alice@contoso.com", "Alice", &["alice@contoso.com"]);
    graph.add_mailbox(
        ROBERT,
        "robert@contoso.com",
        "Robert",
        &["robert@contoso.com", "bob@old.example"],
    );
    graph.add_mailbox(
        ESMITH,
        "e.smith@contoso.com",
        "E Smith",
        &["e.smith@contoso.com"],
    );
    graph.add_mailbox(FRANK, "frank@contoso.com", "Frank", &["frank@contoso.com"]);
    graph.add_mailbox(
        "d0d0d0d0-0000-4000-8000-00000000000d",
        "hank@contoso.com",
        "Hank (disabled)",
        &["hank@contoso.com"],
    );
    graph.patch_user(
        "d0d0d0d0-0000-4000-8000-00000000000d",
        json!({"accountEnabled": false}),
    );
    let lab_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(lab_dir.path().join("source-mail")).unwrap();
    World {
        lab_dir,
        ldap,
        endpoint,
        unconsented,
        graph,
    }
}

#[test]
fn microsoft_365_target_directory_through_graph() {
    let w = world();
    let job = w.write_job("job.toml", &w.endpoint.url(), &w.graph.url());
    let job = job.as_str();

    let v = w.json(&["discover", job]);
    assert_eq!(v["added"].as_array().unwrap().len(), 7, "{v:#}");
    let status = w.json(&["status", job]);
    let id_of: BTreeMap<String, String> = status["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["source"]["login"].as_str().unwrap().to_string(),
                e["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();

    w.ok(&[
        "match",
        job,
        "--set",
        "erin@old.example=e.smith@contoso.com",
    ]);
    let out = w.ok(&["match", job, "--auto"]);
    assert!(out.contains("Automatic matching: 3 matched"), "{out}");
    w.ok(&["match", job, "--create", "carol"]);
    let out = w.ok(&["create", job]);
    assert!(
        out.contains("created carol@contoso.com (licence assigned; the mailbox answered after"),
        "{out}"
    );
    w.ok(&["match", job, "--create", "gus"]);
    let carol = w
        .graph
        .users()
        .into_iter()
        .find(|u| u["userPrincipalName"] == "carol@contoso.com")
        .expect("carol created in Entra ID");
    assert_eq!(carol["assignedLicenses"][0]["skuId"], E3_SKU);
    assert_eq!(carol["usageLocation"], "CH");
    let carol_id = carol["id"].as_str().unwrap().to_string();

    // check reaches the Graph directory with the connection's application and Graph's scope.
    let (_, out, _) = w.run(&["check", job]);
    assert!(
        out.contains(&format!("OK   directory {}", w.graph.url()))
            && out.contains("bound as application m365-app"),
        "{out}"
    );

    let status = w.json(&["status", job]);
    let entry = |login: &str| -> Value {
        status["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["source"]["login"] == login)
            .unwrap()
            .clone()
    };
    for (login, o) in [
        ("alice", "auto"),
        ("bob", "auto"),
        ("frank", "auto"),
        ("erin", "manual"),
        ("carol", "created"),
        ("gus", "pending-creation"),
        ("hank", "unmatched"),
    ] {
        assert_eq!(entry(login)["origin"], o, "{login}: {status:#}");
    }

    // The domain switch in Entra ID (Exchange's email address policy: the new domain is
    // SMTP:, the old one an smtp: alias); robert is deleted; frank is left as he is.
    for (id, local) in [(ALICE, "alice"), (carol_id.as_str(), "carol")] {
        w.graph.patch_user(
            id,
            json!({
                "mail": format!("{local}@corp.example"),
                "proxyAddresses": [format!("SMTP:{local}@corp.example"),
                                   format!("smtp:{local}@contoso.com")],
            }),
        );
    }
    w.graph.remove_user(ROBERT);

    let before = w.graph.requests().len();
    let v = w.json(&["refresh-addresses", job, "--all"]);
    assert_eq!(
        counts(&v, "target"),
        expect(&[
            ("refreshed", 2),
            ("not_changed", 1),
            ("missing", 1),
            ("manual", 1),
            ("not_created", 1),
        ]),
        "{v:#}"
    );
    assert_eq!(counts(&v, "source"), expect(&[("not_changed", 7)]), "{v:#}");
    let dst = results(&v, "target", &id_of);
    let expected: BTreeMap<String, String> = [
        ("alice", "refreshed"),
        ("carol", "refreshed"),
        ("frank", "not_changed"),
        ("bob", "missing"),
        ("erin", "manual"),
        ("gus", "not_created"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(dst, expected, "hank is unmatched and gets no target result");
    let alice = v["mailboxes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["side"] == "target" && m["entry"] == id_of["alice"].as_str())
        .unwrap();
    assert_eq!(alice["before"], json!(["alice@contoso.com"]));
    assert_eq!(
        alice["after"],
        json!(["alice@corp.example", "alice@contoso.com"])
    );
    // Refresh looked each target mailbox up by its id.
    let lookups: Vec<String> = w.graph.requests()[before..]
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/v1.0/users/"))
        .map(|r| r.path.clone())
        .collect();
    assert!(
        lookups.contains(&format!("/v1.0/users/{ALICE}")),
        "{lookups:?}"
    );
    assert!(
        lookups.contains(&format!("/v1.0/users/{ROBERT}")),
        "{lookups:?}"
    );

    // Bad configurations: clear errors, nothing changed.
    let state_before = w.json(&["status", job])["entries"].clone();
    let denied = w.write_job("denied.toml", &w.unconsented.url(), &w.graph.url());
    let (code, out, err) = w.run(&["check", &denied]);
    assert_ne!(code, 0);
    assert!(
        out.contains("Authorization_RequestDenied: Insufficient privileges to complete the operation. (HTTP 403)")
            && out.contains("User.Read.All"),
        "{out}\n{err}"
    );
    let (code, out, err) = w.run(&["refresh-addresses", &denied, "--all"]);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("Authorization_RequestDenied"), "{out}\n{err}");

    let wrong_tenant = w.write_job(
        "tenant.toml",
        &w.endpoint.url().replace("contoso-test", "fabrikam"),
        &w.graph.url(),
    );
    let (code, out, _) = w.run(&["check", &wrong_tenant]);
    assert_ne!(code, 0);
    assert!(
        out.contains("AADSTS90002") && out.contains("Tenant 'fabrikam' not found"),
        "{out}"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let unreachable = w.write_job(
        "unreachable.toml",
        &w.endpoint.url(),
        &format!("http://127.0.0.1:{port}/v1.0"),
    );
    let (code, out, err) = w.run(&["refresh-addresses", &unreachable, "--all"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains(&format!(
            "Cannot connect to directory http://127.0.0.1:{port}/v1.0"
        )),
        "{out}\n{err}"
    );
    for secret in [APP_SECRET, "Fi7st-Passw0rd!"] {
        assert!(!out.contains(secret) && !err.contains(secret));
    }
    assert_eq!(w.json(&["status", job])["entries"], state_before);
}
