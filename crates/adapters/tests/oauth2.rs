//! The IMAP connector with `auth = "oauth2"` against a real Dovecot (its oauth2 passdb) and
//! the test kit's token endpoint: the three grants, both mechanisms, the shared token, the
//! one refetch after AUTHENTICATIONFAILED, and the words a failure ends with.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mailferry_adapters::ImapConnector;
use mailferry_core::job::{
    Auth, ClientCredential, ImapSettings, OAuth2Config, OAuth2Flow, OAuth2Mechanism, Secret,
    Security,
};
use mailferry_core::model::Side;
use mailferry_core::ports::Connector;
use mailferry_testkit::oauth2::{
    DovecotOAuth2, SigningKey, TestClient, TestKeyPair, TokenEndpoint, TokenEndpointConfig,
    TokenMatch, entra_error,
};
use mailferry_testkit::{Dovecot, DovecotConfig};

const SECRET: &str = "the-client-secret~42";

struct Setup {
    server: Dovecot,
    endpoint: TokenEndpoint,
    dir: tempfile::TempDir,
}

fn setup(
    users: &[&str],
    matching: TokenMatch,
    denied: &[&str],
    tune: impl FnOnce(&mut TokenEndpointConfig),
) -> Setup {
    let key = SigningKey::random();
    let mut cfg = DovecotConfig::new(users);
    let mut oauth2 = DovecotOAuth2::new(&key, matching);
    oauth2.denied = denied.iter().map(|u| u.to_string()).collect();
    cfg.oauth2 = Some(oauth2);
    let server = Dovecot::start(cfg);
    let mut ecfg = TokenEndpointConfig::new(&key, "new.test");
    ecfg.clients = vec![TestClient::Secret {
        client_id: "app-1".into(),
        secret: SECRET.into(),
    }];
    tune(&mut ecfg);
    let endpoint = TokenEndpoint::start(ecfg);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), format!("{SECRET}\n")).unwrap();
    Setup {
        server,
        endpoint,
        dir,
    }
}

impl Setup {
    fn settings(&self, flow: OAuth2Flow, mechanism: OAuth2Mechanism) -> ImapSettings {
        ImapSettings {
            host: self.server.host().to_string(),
            port: self.server.port(),
            security: Security::Plain,
            tls_ca: None,
            tls_verify: true,
            tls_pin_sha256: Vec::new(),
            auth: Auth::OAuth2(Box::new(OAuth2Config {
                flow,
                token_url: Some(self.endpoint.url()),
                scope: "https://outlook.office365.com/.default".into(),
                mechanism,
                tls_ca: None,
            })),
            max_connections: 16,
            max_connections_per_mailbox: None,
            profile: Default::default(),
        }
    }

    fn secret_flow(&self, client_id: &str) -> OAuth2Flow {
        OAuth2Flow::ClientCredentials {
            tenant: None,
            client_id: client_id.into(),
            credential: ClientCredential::Secret(Secret::File(self.path("secret"))),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn connector(&self, client_id: &str) -> ImapConnector {
        ImapConnector::new(
            Side::Target,
            &self.settings(self.secret_flow(client_id), OAuth2Mechanism::XOAuth2),
        )
        .unwrap()
    }
}

fn opens(connector: &ImapConnector, login: &str) {
    let mut session = connector
        .open(login, None)
        .unwrap_or_else(|e| panic!("{login}: {e}"));
    session.folders().expect("list");
    session.logout();
}

fn open_error(connector: &ImapConnector, login: &str) -> String {
    match connector.open(login, None) {
        Ok(_) => panic!("{login} opened"),
        Err(e) => e.to_string(),
    }
}

/// Asserts no token the endpoint issued, and not the secret, is in `text`.
fn assert_clean(text: &str, endpoint: &TokenEndpoint) {
    assert!(!text.contains(SECRET), "{text}");
    for token in endpoint.stats().tokens {
        assert!(!text.contains(&token), "a token in: {text}");
        let sig = token.rsplit('.').next().unwrap();
        assert!(!text.contains(sig), "a token's signature in: {text}");
    }
}

#[test]
fn one_app_token_serves_every_mailbox_and_a_refused_one_is_fetched_again_once() {
    // Tokens die after 2 s but are announced for an hour: the cache hands out a dead one.
    let s = setup(
        &["ada@new.test", "bea@new.test", "cyd@new.test"],
        TokenMatch::Domain,
        &[],
        |c| {
            c.lifetime = Duration::from_secs(2);
            c.advertised_lifetime = Some(Duration::from_secs(3600));
        },
    );
    let connector = s.connector("app-1");
    for user in ["ada@new.test", "bea@new.test", "cyd@new.test"] {
        opens(&connector, user);
    }
    assert_eq!(s.endpoint.stats().issued, 1, "one token for every mailbox");

    std::thread::sleep(Duration::from_millis(3500));
    // Eight sessions at once are refused the dead token; one new token serves them all.
    std::thread::scope(|scope| {
        for i in 0..8 {
            let connector = &connector;
            scope.spawn(move || opens(connector, ["ada@new.test", "bea@new.test"][i % 2]));
        }
    });
    let stats = s.endpoint.stats();
    assert_eq!((stats.requests, stats.issued), (2, 2), "{stats:?}");

    // The identity provider now refuses the client: both parties' words, no secret.
    std::thread::sleep(Duration::from_millis(3500));
    s.endpoint.fail_with(Some((
        401,
        entra_error("invalid_client", 7000215, "Invalid client secret provided."),
    )));
    let e = open_error(&connector, "ada@new.test");
    assert!(
        e.starts_with("AUTHENTICATE XOAUTH2 failed: [AUTHENTICATIONFAILED]"),
        "{e}"
    );
    assert!(
        e.contains("fetching a new token failed: the identity provider at http://127.0.0.1:"),
        "{e}"
    );
    assert!(
        e.contains("(HTTP 401): invalid_client: AADSTS7000215: Invalid client secret provided."),
        "{e}"
    );
    assert!(
        e.contains("likely cause: the client secret is wrong"),
        "{e}"
    );
    assert_clean(&e, &s.endpoint);
}

#[test]
fn a_mailbox_without_permission_fails_after_one_fresh_token_and_names_step_4() {
    let s = setup(
        &["ada@new.test", "cyd@new.test"],
        TokenMatch::Domain,
        &["cyd@new.test"],
        |_| {},
    );
    let connector = s.connector("app-1");
    opens(&connector, "ada@new.test");
    let e = open_error(&connector, "cyd@new.test");
    assert!(
        e.starts_with("AUTHENTICATE XOAUTH2 failed: [AUTHENTICATIONFAILED]"),
        "{e}"
    );
    assert!(
        e.contains("the identity provider issued a new token"),
        "{e}"
    );
    assert!(
        e.contains(
            "step 4 of 4, the mailbox permission (Add-MailboxPermission -Identity cyd@new.test"
        ),
        "{e}"
    );
    assert!(
        e.contains("step 3 of 4, the service principal (New-ServicePrincipal"),
        "{e}"
    );
    assert_eq!(s.endpoint.stats().issued, 2, "fetched again once, not more");
    assert_clean(&e, &s.endpoint);
}

#[test]
fn a_token_without_the_imap_role_names_steps_1_and_2() {
    let s = setup(
        &["ada@new.test"],
        TokenMatch::Domain,
        &["ada@new.test"],
        |c| {
            c.roles = Vec::new();
        },
    );
    let e = open_error(&s.connector("app-1"), "ada@new.test");
    assert!(
        e.contains("step 1 of 4 or 2 of 4: the token has no IMAP.AccessAsApp role"),
        "{e}"
    );
}

#[test]
fn check_credentials_says_what_the_identity_provider_said_and_the_likely_cause() {
    let s = setup(&["ada@new.test"], TokenMatch::Domain, &[], |_| {});
    let ok = s
        .connector("app-1")
        .check_credentials("ada@new.test")
        .unwrap()
        .unwrap();
    assert!(
        ok.contains("client credentials with a secret, client ID app-1"),
        "{ok}"
    );
    let unknown = s
        .connector("nobody")
        .check_credentials("ada@new.test")
        .unwrap()
        .unwrap_err();
    assert!(
        unknown.contains(
            "unauthorized_client: AADSTS700016: Application with identifier 'nobody' was not found"
        ),
        "{unknown}"
    );
    assert!(
        unknown.contains("likely cause: the client_id is not an application in this tenant"),
        "{unknown}"
    );
    std::fs::write(s.path("secret"), "wrong").unwrap();
    let wrong = s
        .connector("app-1")
        .check_credentials("ada@new.test")
        .unwrap()
        .unwrap_err();
    assert!(wrong.contains("invalid_client: AADSTS7000215"), "{wrong}");
    assert!(!wrong.contains("wrong\""), "{wrong}");
    // A connector with a password login needs nothing from elsewhere.
    let plain = ImapSettings {
        auth: Auth::PerMailbox,
        ..s.settings(s.secret_flow("app-1"), OAuth2Mechanism::XOAuth2)
    };
    assert!(
        ImapConnector::new(Side::Target, &plain)
            .unwrap()
            .check_credentials("x")
            .is_none()
    );
}

#[test]
fn a_certificate_client_assertion_with_oauthbearer() {
    let pair = Arc::new(TestKeyPair::generate("mailferry app"));
    let s = setup(&["ada@new.test"], TokenMatch::Domain, &[], |c| {
        c.clients.push(TestClient::Certificate {
            client_id: "app-cert".into(),
            key: pair.clone(),
        });
    });
    let flow = OAuth2Flow::ClientCredentials {
        tenant: None,
        client_id: "app-cert".into(),
        credential: ClientCredential::Certificate {
            certificate: pair.certificate_pem.clone(),
            key: Secret::File(pair.key_pem.clone()),
        },
    };
    let connector = ImapConnector::new(
        Side::Target,
        &s.settings(flow, OAuth2Mechanism::OAuthBearer),
    )
    .unwrap();
    opens(&connector, "ada@new.test");
    assert_eq!(
        s.endpoint.stats().by_grant.get("client_assertion"),
        Some(&1)
    );
    // Another key pair's certificate: Entra's AADSTS700027.
    let other = TestKeyPair::generate("not registered");
    let flow = OAuth2Flow::ClientCredentials {
        tenant: None,
        client_id: "app-cert".into(),
        credential: ClientCredential::Certificate {
            certificate: other.certificate_pem.clone(),
            key: Secret::File(other.key_pem.clone()),
        },
    };
    let e = ImapConnector::new(
        Side::Target,
        &s.settings(flow, OAuth2Mechanism::OAuthBearer),
    )
    .unwrap()
    .check_credentials("ada@new.test")
    .unwrap()
    .unwrap_err();
    assert!(e.contains("AADSTS700027"), "{e}");
    assert!(e.contains("upload this certificate"), "{e}");
}

#[test]
fn a_service_account_gets_one_token_per_mailbox() {
    let pair = Arc::new(TestKeyPair::generate("sa"));
    let s = setup(
        &["ada@new.test", "bea@new.test"],
        TokenMatch::User,
        &[],
        |c| {
            c.clients = vec![TestClient::ServiceAccount {
                client_email: "sa@proj.iam.gserviceaccount.com".into(),
                key: pair.clone(),
            }];
        },
    );
    std::fs::write(
        s.path("sa.json"),
        pair.service_account_json("sa@proj.iam.gserviceaccount.com", &s.endpoint.url()),
    )
    .unwrap();
    let mut settings = s.settings(
        OAuth2Flow::ServiceAccount {
            key: Secret::File(s.path("sa.json")),
        },
        OAuth2Mechanism::XOAuth2,
    );
    if let Auth::OAuth2(c) = &mut settings.auth {
        c.token_url = None; // the key's token_uri, which is plain http here
        c.scope = "https://mail.google.com/".into();
    }
    let e = ImapConnector::new(Side::Source, &settings).err().unwrap();
    assert!(
        e.starts_with("source.oauth2.key_file: token_uri http://127.0.0.1:"),
        "{e}"
    );
    assert!(
        e.ends_with("is not https://; write the token endpoint as token_url in the job file"),
        "{e}"
    );
    if let Auth::OAuth2(c) = &mut settings.auth {
        c.token_url = Some(s.endpoint.url());
    }
    let connector = ImapConnector::new(Side::Source, &settings).unwrap();
    opens(&connector, "ada@new.test");
    opens(&connector, "bea@new.test");
    opens(&connector, "ada@new.test");
    let stats = s.endpoint.stats();
    assert_eq!(
        stats.subjects,
        vec!["ada@new.test", "bea@new.test"],
        "{stats:?}"
    );
    assert_eq!(stats.by_grant.get("jwt_bearer"), Some(&2));
}

#[test]
fn an_https_token_endpoint_is_trusted_through_tls_ca_and_refused_without_it() {
    let s = setup(&["ada@new.test"], TokenMatch::Domain, &[], |c| c.tls = true);
    assert!(s.endpoint.url().starts_with("https://127.0.0.1:"));
    let mut settings = s.settings(s.secret_flow("app-1"), OAuth2Mechanism::XOAuth2);
    // Without the private CA the certificate is not trusted: nothing is sent.
    let e = ImapConnector::new(Side::Target, &settings)
        .unwrap()
        .check_credentials("ada@new.test")
        .unwrap()
        .unwrap_err();
    assert!(e.contains("TLS with 127.0.0.1:"), "{e}");
    assert!(e.contains("certificate"), "{e}");
    assert_eq!(s.endpoint.stats().requests, 0);
    if let Auth::OAuth2(c) = &mut settings.auth {
        c.tls_ca = s.endpoint.ca_pem();
    }
    let connector = ImapConnector::new(Side::Target, &settings).unwrap();
    opens(&connector, "ada@new.test");
    assert_eq!(s.endpoint.stats().issued, 1);
}

/// An IMAP server that answers like Exchange Online to a refused token: a greeting without
/// capabilities, `+ ` to `AUTHENTICATE XOAUTH2`, then a bare `NO AUTHENTICATE failed.` (no
/// response code). Returns the port and, when done, how many AUTHENTICATEs it saw.
fn exchange_like_refusing_server() -> (u16, std::thread::JoinHandle<usize>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        let mut w = sock.try_clone().unwrap();
        let mut r = BufReader::new(sock);
        w.write_all(b"* OK The Microsoft Exchange IMAP4 service is ready.\r\n")
            .unwrap();
        let mut seen = 0;
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap() == 0 {
                return seen;
            }
            let tag = line.split(' ').next().unwrap().to_string();
            if line.trim_end().ends_with("AUTHENTICATE XOAUTH2") {
                seen += 1;
                w.write_all(b"+ \r\n").unwrap();
                line.clear();
                r.read_line(&mut line).unwrap();
                w.write_all(format!("{tag} NO AUTHENTICATE failed.\r\n").as_bytes())
                    .unwrap();
            } else {
                w.write_all(format!("{tag} BAD Command Error. 10\r\n").as_bytes())
                    .unwrap();
            }
        }
    });
    (port, handle)
}

#[test]
fn exchange_onlines_bare_no_also_gets_one_fresh_token() {
    let s = setup(&["ada@new.test"], TokenMatch::Domain, &[], |_| {});
    let (port, server) = exchange_like_refusing_server();
    let settings = ImapSettings {
        port,
        ..s.settings(s.secret_flow("app-1"), OAuth2Mechanism::XOAuth2)
    };
    let e = open_error(
        &ImapConnector::new(Side::Target, &settings).unwrap(),
        "ada@contoso.example",
    );
    assert!(
        e.starts_with("AUTHENTICATE XOAUTH2 failed: AUTHENTICATE failed."),
        "{e}"
    );
    assert!(
        e.contains("the identity provider issued a new token"),
        "{e}"
    );
    assert!(
        e.contains("Add-MailboxPermission -Identity ada@contoso.example"),
        "{e}"
    );
    assert_eq!(s.endpoint.stats().issued, 2);
    assert_eq!(server.join().unwrap(), 2, "two AUTHENTICATEs, no more");
    assert_clean(&e, &s.endpoint);
}

#[test]
fn a_refusal_by_the_identity_provider_is_asked_once_for_many_mailboxes() {
    let users = [
        "ada@new.test",
        "bea@new.test",
        "cyd@new.test",
        "dan@new.test",
    ];
    let s = setup(&users, TokenMatch::Domain, &[], |_| {});
    let connector = s.connector("unknown-app");
    std::thread::scope(|scope| {
        for user in users {
            let connector = &connector;
            scope.spawn(move || {
                let e = open_error(connector, user);
                assert!(e.contains("AADSTS700016"), "{e}");
            });
        }
    });
    assert_eq!(s.endpoint.stats().requests, 1);
}
