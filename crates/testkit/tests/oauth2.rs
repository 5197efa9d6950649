//! The OAuth2 parts of the test kit against a real Dovecot: tokens from the kit's endpoint
//! open mailboxes with XOAUTH2 and OAUTHBEARER, expire, and are refused where they should be.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use mailferry_testkit::oauth2::{
    DovecotOAuth2, SigningKey, TestClient, TestKeyPair, TokenEndpoint, TokenEndpointConfig,
    TokenMatch,
};
use mailferry_testkit::{Dovecot, DovecotConfig};
use serde_json::{Value, json};

/// Posts a form to the endpoint; (status, JSON).
fn post(url: &str, form: &str) -> (u16, Value) {
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = TcpStream::connect(authority).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    )
    .unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let status: u16 = all[9..12].parse().unwrap();
    let (head, body) = all.split_once("\r\n\r\n").unwrap();
    let body = if head.contains("chunked") {
        // Join the chunks.
        let mut out = String::new();
        let mut rest = body;
        loop {
            let (size, after) = rest.split_once("\r\n").unwrap();
            let n = usize::from_str_radix(size, 16).unwrap();
            if n == 0 {
                break;
            }
            out.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        out
    } else {
        body.to_string()
    };
    (status, serde_json::from_str(&body).unwrap())
}

/// `AUTHENTICATE <mechanism> <initial response>` on a fresh connection: the tagged line.
fn authenticate(server: &Dovecot, mechanism: &str, raw: &[u8]) -> String {
    let s = TcpStream::connect((server.host(), server.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let ir = base64::engine::general_purpose::STANDARD.encode(raw);
    write!(w, "a AUTHENTICATE {mechanism} {ir}\r\n").unwrap();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line.starts_with("+ ") {
            // The error challenge: end the exchange as RFC 7628 says.
            w.write_all(b"AQ==\r\n").unwrap();
        } else if line.starts_with("a ") {
            return line;
        }
    }
}

fn xoauth2(user: &str, token: &str) -> Vec<u8> {
    format!("user={user}\x01auth=Bearer {token}\x01\x01").into_bytes()
}

#[test]
fn app_tokens_open_every_mailbox_of_the_domain_but_a_denied_one_until_they_expire() {
    let key = SigningKey::random();
    let mut cfg = DovecotConfig::new(&["ada@new.test", "bea@new.test", "cyd@new.test"]);
    let mut oauth2 = DovecotOAuth2::new(&key, TokenMatch::Domain);
    oauth2.denied = vec!["cyd@new.test".into()];
    cfg.oauth2 = Some(oauth2);
    let server = Dovecot::start(cfg);
    let mut ecfg = TokenEndpointConfig::new(&key, "new.test");
    ecfg.lifetime = Duration::from_secs(2);
    ecfg.clients = vec![TestClient::Secret {
        client_id: "app-1".into(),
        secret: "right secret".into(),
    }];
    let endpoint = TokenEndpoint::start(ecfg);
    let scope = "https%3A%2F%2Foutlook.office365.com%2F.default";

    let (status, v) = post(
        &endpoint.url(),
        &format!(
            "grant_type=client_credentials&client_id=app-1&client_secret=right+secret&scope={scope}"
        ),
    );
    assert_eq!(status, 200, "{v}");
    let token = v["access_token"].as_str().unwrap().to_string();
    assert_eq!(v["expires_in"], 2);
    for user in ["ada@new.test", "bea@new.test"] {
        let tagged = authenticate(&server, "XOAUTH2", &xoauth2(user, &token));
        assert!(
            tagged.starts_with("a OK"),
            "{user}: {tagged}\n{}",
            server.log_tail(20)
        );
    }
    let bearer = format!("n,a=ada@new.test,\x01auth=Bearer {token}\x01\x01");
    let tagged = authenticate(&server, "OAUTHBEARER", bearer.as_bytes());
    assert!(
        tagged.starts_with("a OK"),
        "{tagged}\n{}",
        server.log_tail(20)
    );
    let tagged = authenticate(&server, "XOAUTH2", &xoauth2("cyd@new.test", &token));
    assert!(
        tagged.starts_with("a NO [AUTHENTICATIONFAILED]"),
        "{tagged}"
    );
    let tagged = authenticate(&server, "XOAUTH2", &xoauth2("ada@other.test", &token));
    assert!(tagged.starts_with("a NO"), "another domain: {tagged}");
    // A token signed with another key.
    let forged = SigningKey::random().sign(&json!({"sub": "x", "email": "app@new.test", "exp": 4_000_000_000u64, "iss": mailferry_testkit::oauth2::ISSUER}));
    let tagged = authenticate(&server, "XOAUTH2", &xoauth2("ada@new.test", &forged));
    assert!(tagged.starts_with("a NO"), "forged: {tagged}");
    // Password and master logins still work.
    let tagged = authenticate(&server, "PLAIN", b"ada@new.test\0admin\0adminpass");
    assert!(tagged.starts_with("a OK"), "{tagged}");
    // The token expires.
    std::thread::sleep(Duration::from_millis(3100));
    let tagged = authenticate(&server, "XOAUTH2", &xoauth2("ada@new.test", &token));
    assert!(
        tagged.starts_with("a NO [AUTHENTICATIONFAILED]"),
        "expired: {tagged}"
    );

    // Entra's refusals.
    let (status, v) = post(
        &endpoint.url(),
        &format!("grant_type=client_credentials&client_id=app-1&client_secret=wrong&scope={scope}"),
    );
    assert_eq!((status, v["error"].as_str()), (401, Some("invalid_client")));
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS7000215:")
    );
    let (status, v) = post(
        &endpoint.url(),
        &format!("grant_type=client_credentials&client_id=nobody&client_secret=x&scope={scope}"),
    );
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS700016:")
    );
    endpoint.fail_with(Some((503, json!({"error": "temporarily_unavailable"}))));
    let (status, _) = post(&endpoint.url(), "grant_type=client_credentials");
    assert_eq!(status, 503);
    let stats = endpoint.stats();
    assert_eq!(
        (stats.requests, stats.issued, stats.refused),
        (4, 1, 3),
        "{stats:?}"
    );
}

#[test]
fn service_account_tokens_open_only_their_own_mailbox() {
    let key = SigningKey::random();
    let mut cfg = DovecotConfig::new(&["ada@ws.test", "bea@ws.test"]);
    cfg.oauth2 = Some(DovecotOAuth2::new(&key, TokenMatch::User));
    let server = Dovecot::start(cfg);
    let pair = Arc::new(TestKeyPair::generate("sa"));
    let mut ecfg = TokenEndpointConfig::new(&key, "ws.test");
    ecfg.clients = vec![TestClient::ServiceAccount {
        client_email: "sa@proj.iam.gserviceaccount.com".into(),
        key: pair.clone(),
    }];
    let endpoint = TokenEndpoint::start(ecfg);
    // The assertion, signed with openssl so this test does not lean on mailferry's code.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let input = format!(
        "{}.{}",
        b64(&json!({"alg": "RS256", "typ": "JWT"})),
        b64(
            &json!({"iss": "sa@proj.iam.gserviceaccount.com", "sub": "ada@ws.test",
                    "scope": "https://mail.google.com/", "aud": endpoint.url(),
                    "iat": now, "exp": now + 3600})
        )
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in"), &input).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&pair.key_pem)
        .arg(dir.path().join("in"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let jwt = format!(
        "{input}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&out.stdout)
    );
    let (status, v) = post(
        &endpoint.url(),
        &format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={jwt}"
        ),
    );
    assert_eq!(status, 200, "{v}");
    let token = v["access_token"].as_str().unwrap();
    let tagged = authenticate(&server, "XOAUTH2", &xoauth2("ada@ws.test", token));
    assert!(
        tagged.starts_with("a OK"),
        "{tagged}\n{}",
        server.log_tail(20)
    );
    let tagged = authenticate(&server, "XOAUTH2", &xoauth2("bea@ws.test", token));
    assert!(
        tagged.starts_with("a NO"),
        "ada's token opened bea: {tagged}"
    );
    // A tampered assertion.
    let (status, v) = post(
        &endpoint.url(),
        &format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={}x",
            &jwt[..jwt.len() - 1]
        ),
    );
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "{v}"
    );
    assert_eq!(endpoint.stats().subjects, vec!["ada@ws.test".to_string()]);
}
