//! Signed JWTs (RFC 7519, RS256 per RFC 7518 §3.3) for the two grants that prove who the
//! client is with a key instead of a secret: Entra ID's certificate credential (a client
//! assertion, RFC 7523 §2.2, whose header names the certificate by its SHA-1 and SHA-256
//! thumbprints `x5t` and `x5t#S256`) and Google's service account (a JWT bearer grant,
//! RFC 7523 §2.1, with `sub` = the mailbox). Signing and digests are `ring`'s; keys and
//! certificates are read from PEM with rustls' pki-types.

use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

/// How long a client assertion is valid (Entra ID accepts up to 10 minutes' skew; the
/// assertion is used once, right away).
pub const ASSERTION_LIFETIME: u64 = 600;
/// `exp - iat` of a Google service-account assertion (Google's maximum).
pub const SERVICE_ACCOUNT_LIFETIME: u64 = 3600;

/// base64url without padding (RFC 7515 §2).
pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An RSA private key. Never printed.
pub struct RsaKey(RsaKeyPair);

impl std::fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RsaKey({} bits, not shown)",
            self.0.public().modulus_len() * 8
        )
    }
}

impl RsaKey {
    /// The first private key of a PEM text: `PRIVATE KEY` (PKCS#8, as Google's keys and
    /// `openssl genpkey` write) or `RSA PRIVATE KEY` (PKCS#1). The error never quotes the text.
    pub fn from_pem(pem: &str) -> Result<RsaKey, String> {
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
            format!("no PEM private key found ({e}); expected -----BEGIN PRIVATE KEY-----")
        })?;
        let pair = match &der {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            _ => return Err("the private key is not an RSA key (RS256 needs one)".into()),
        }
        .map_err(|e| format!("the private key is not a usable RSA key: {e}"))?;
        Ok(RsaKey(pair))
    }

    /// The DER of the public key (RSAPublicKey, PKCS#1), for verification in tests.
    pub fn public_der(&self) -> Vec<u8> {
        use ring::signature::KeyPair as _;
        self.0.public_key().as_ref().to_vec()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let mut signature = vec![0u8; self.0.public().modulus_len()];
        self.0
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            .map_err(|_| "RSA signing failed".to_string())?;
        Ok(signature)
    }
}

/// A compact JWS: `b64url(header).b64url(claims).b64url(RS256 signature)`.
pub fn sign(header: &Value, claims: &Value, key: &RsaKey) -> Result<String, String> {
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let signature = key.sign(input.as_bytes())?;
    Ok(format!("{input}.{}", b64url(&signature)))
}

/// The thumbprints by which Entra ID finds a certificate credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbprints {
    /// base64url of the SHA-1 of the certificate's DER (`x5t`).
    pub x5t: String,
    /// base64url of its SHA-256 (`x5t#S256`).
    pub x5t_s256: String,
}

impl Thumbprints {
    /// Of the first certificate of a PEM text.
    pub fn from_pem(pem: &str) -> Result<Thumbprints, String> {
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
            format!("no PEM certificate found ({e}); expected -----BEGIN CERTIFICATE-----")
        })?;
        Ok(Thumbprints::of_der(der.as_ref()))
    }

    pub fn of_der(der: &[u8]) -> Thumbprints {
        use ring::digest::{SHA1_FOR_LEGACY_USE_ONLY, SHA256, digest};
        Thumbprints {
            x5t: b64url(digest(&SHA1_FOR_LEGACY_USE_ONLY, der).as_ref()),
            x5t_s256: b64url(digest(&SHA256, der).as_ref()),
        }
    }
}

/// A random `jti` (128 bits, hex).
pub fn jti() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "no random numbers".to_string())?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Entra ID's certificate credential: `aud` = the token endpoint, `iss` = `sub` = the
/// client ID, a fresh `jti`, `nbf` = `iat` = now, `exp` = now + [`ASSERTION_LIFETIME`].
pub fn client_assertion(
    client_id: &str,
    token_url: &str,
    key: &RsaKey,
    thumbprints: &Thumbprints,
    now: u64,
) -> Result<String, String> {
    let header = json!({
        "alg": "RS256",
        "typ": "JWT",
        "x5t": thumbprints.x5t,
        "x5t#S256": thumbprints.x5t_s256,
    });
    let claims = json!({
        "aud": token_url,
        "iss": client_id,
        "sub": client_id,
        "jti": jti()?,
        "nbf": now,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME,
    });
    sign(&header, &claims, key)
}

/// Google's service-account assertion for one mailbox (domain-wide delegation): `iss` = the
/// service account, `sub` = the mailbox, `scope`, `aud` = the token endpoint, `iat`, `exp` =
/// `iat` + 3600.
pub fn service_account_assertion(
    client_email: &str,
    key_id: Option<&str>,
    mailbox: &str,
    scope: &str,
    token_url: &str,
    key: &RsaKey,
    now: u64,
) -> Result<String, String> {
    let mut header = json!({ "alg": "RS256", "typ": "JWT" });
    if let Some(kid) = key_id {
        header["kid"] = Value::String(kid.to_string());
    }
    let claims = json!({
        "iss": client_email,
        "sub": mailbox,
        "scope": scope,
        "aud": token_url,
        "iat": now,
        "exp": now + SERVICE_ACCOUNT_LIFETIME,
    });
    sign(&header, &claims, key)
}

/// The claims of a JWT, read without checking its signature: for telling an admin what a
/// token the identity provider issued carries (its `roles`), never for trusting it.
pub fn unverified_claims(jwt: &str) -> Option<Value> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    /// A 2048-bit RSA key and a self-signed certificate for it, made with the `openssl` CLI
    /// (which scripts/install-deps.sh installs): `(key PEM, certificate PEM)`.
    pub(crate) fn test_key_and_certificate() -> (String, String) {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=mailferry test app",
                "-keyout",
                "key.pem",
                "-out",
                "cert.pem",
            ])
            .current_dir(dir.path())
            .output()
            .expect("the openssl CLI (apt-get install openssl)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            std::fs::read_to_string(dir.path().join("key.pem")).unwrap(),
            std::fs::read_to_string(dir.path().join("cert.pem")).unwrap(),
        )
    }

    fn verify(jwt: &str, key: &RsaKey) -> (Value, Value) {
        let mut parts = jwt.split('.');
        let (h, c, s) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        assert!(parts.next().is_none());
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .unwrap();
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public_der())
            .verify(format!("{h}.{c}").as_bytes(), &sig)
            .expect("a valid RS256 signature");
        let decode = |p: &str| -> Value {
            serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p)
                    .unwrap(),
            )
            .unwrap()
        };
        (decode(h), decode(c))
    }

    #[test]
    fn a_client_assertion_is_signed_rs256_and_names_the_certificate() {
        let (key_pem, cert_pem) = test_key_and_certificate();
        let key = RsaKey::from_pem(&key_pem).unwrap();
        let thumbs = Thumbprints::from_pem(&cert_pem).unwrap();
        let url = "https://login.microsoftonline.com/t/oauth2/v2.0/token";
        let jwt = client_assertion("app-id", url, &key, &thumbs, 1_700_000_000).unwrap();
        let (header, claims) = verify(&jwt, &key);
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["typ"], "JWT");
        // The thumbprints as openssl computes them.
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.der"), der.as_ref()).unwrap();
        for (alg, field) in [("-sha1", "x5t"), ("-sha256", "x5t#S256")] {
            let out = std::process::Command::new("openssl")
                .args(["dgst", alg, "-binary", "c.der"])
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert_eq!(header[field], b64url(&out.stdout), "{field}");
        }
        assert_eq!(claims["aud"], url);
        assert_eq!(claims["iss"], "app-id");
        assert_eq!(claims["sub"], "app-id");
        assert_eq!(claims["nbf"], 1_700_000_000u64);
        assert_eq!(claims["iat"], 1_700_000_000u64);
        assert_eq!(claims["exp"], 1_700_000_600u64);
        assert_eq!(claims["jti"].as_str().unwrap().len(), 32);
        let again = client_assertion("app-id", url, &key, &thumbs, 1_700_000_000).unwrap();
        assert_ne!(
            verify(&again, &key).1["jti"],
            claims["jti"],
            "a jti is used once"
        );
    }

    #[test]
    fn a_service_account_assertion_carries_the_mailbox_as_sub() {
        let (key_pem, _) = test_key_and_certificate();
        let key = RsaKey::from_pem(&key_pem).unwrap();
        let jwt = service_account_assertion(
            "migrator@proj.iam.gserviceaccount.com",
            Some("k1"),
            "alice@example.org",
            "https://mail.google.com/",
            "https://oauth2.googleapis.com/token",
            &key,
            1_000,
        )
        .unwrap();
        let (header, claims) = verify(&jwt, &key);
        assert_eq!(header, json!({"alg": "RS256", "typ": "JWT", "kid": "k1"}));
        assert_eq!(
            claims,
            json!({
                "iss": "migrator@proj.iam.gserviceaccount.com",
                "sub": "alice@example.org",
                "scope": "https://mail.google.com/",
                "aud": "https://oauth2.googleapis.com/token",
                "iat": 1_000,
                "exp": 4_600,
            })
        );
        assert_eq!(unverified_claims(&jwt).unwrap(), claims);
    }

    #[test]
    fn a_pkcs1_key_works_and_bad_pem_is_explained_without_quoting_it() {
        let (key_pem, _) = test_key_and_certificate();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k.pem"), &key_pem).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["rsa", "-in", "k.pem", "-traditional", "-out", "k1.pem"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pkcs1 = std::fs::read_to_string(dir.path().join("k1.pem")).unwrap();
        assert!(pkcs1.contains("BEGIN RSA PRIVATE KEY"));
        let key = RsaKey::from_pem(&pkcs1).unwrap();
        verify(
            &sign(&json!({"alg": "RS256"}), &json!({"a": 1}), &key).unwrap(),
            &key,
        );
        let e = RsaKey::from_pem("secret-looking text").unwrap_err();
        assert!(!e.contains("secret-looking"), "{e}");
        assert!(!format!("{key:?}").contains("BEGIN"), "{key:?}");
    }
}
