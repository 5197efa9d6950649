//! The one rustls client configuration, for IMAP, the LDAP directory and PostgreSQL, so all
//! trust the same certificates: the system's trust anchors plus the job's `tls_ca`, with the
//! ring provider chosen here rather than through a process-wide default.
//!
//! A connection may instead pin certificates (`tls_pin_sha256`): then exactly a certificate
//! whose SHA-256 fingerprint (over its DER, as `openssl x509 -fingerprint -sha256` prints it)
//! is pinned is accepted, whoever issued it and whatever names it holds, and every other
//! certificate is refused. The server still proves in the handshake that it holds the pinned
//! certificate's key.
//!
//! A refused certificate is explained ([`CertificateRefused`]): its fingerprint, and for the
//! commonest field case (a certificate naming its host only in the subject CN, with no
//! subjectAltName, which RFC 6125 name verification does not read) what is wrong and the safe
//! way through.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore,
    SignatureScheme,
};
use sha2::{Digest, Sha256};

/// A certificate's SHA-256 fingerprint, over its DER encoding.
pub type Pin = [u8; 32];

/// Why a client configuration could not be built. Each names the `tls_ca` file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS set-up failed: {0}")]
    Setup(rustls::Error),
    #[error("Cannot read tls_ca {}: {source}", path.display())]
    ReadCa { path: PathBuf, source: pem::Error },
    #[error("Certificate in tls_ca {} refused: {source}", path.display())]
    BadCertificate {
        path: PathBuf,
        source: rustls::Error,
    },
    /// An empty file, or one without a `BEGIN CERTIFICATE` block, is a mistake in the job
    /// (a key or the wrong file), not a request to trust nothing extra.
    #[error("No PEM certificate in tls_ca {}", path.display())]
    NoCertificate { path: PathBuf },
}

/// A rustls client configuration. With `verify` and no `pins`, server certificates must chain
/// to the system's trust anchors or to a certificate in `ca` (a PEM file) and name the host in
/// their subjectAltName; where the system has no trust anchors at all (a bare container) and no
/// `ca` is given, the Mozilla roots of webpki-roots stand in. With `pins`, exactly the
/// certificates with those SHA-256 fingerprints are accepted and `ca` is not read. Without
/// `verify` any certificate is accepted and neither is used: only an explicit
/// `tls_verify = false` in a job file asks for that.
pub fn client_config(
    ca: Option<&Path>,
    verify: bool,
    pins: &[Pin],
) -> Result<ClientConfig, TlsError> {
    build(ca, verify, pins, true)
}

/// [`client_config`] for a connection that has no `tls_pin_sha256` setting (the PostgreSQL
/// state): a refusal shows the certificate's fingerprint but does not offer a pin.
pub fn client_config_unpinned(ca: Option<&Path>) -> Result<ClientConfig, TlsError> {
    build(ca, true, &[], false)
}

fn build(
    ca: Option<&Path>,
    verify: bool,
    pins: &[Pin],
    offer_pin: bool,
) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?;
    if !verify {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification))
            .with_no_client_auth());
    }
    let check = if pins.is_empty() {
        let mut roots = RootCertStore::empty();
        if let Some(ca) = ca {
            add_ca_file(&mut roots, ca)?;
        }
        // Unreadable system certificates are skipped: the ones that load still count.
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| TlsError::Setup(rustls::Error::General(e.to_string())))?;
        Check::Chain(webpki)
    } else {
        Check::Pinned(pins.to_vec())
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Policy {
            check,
            algorithms,
            offer_pin,
        }))
        .with_no_client_auth())
}

fn add_ca_file(roots: &mut RootCertStore, ca: &Path) -> Result<(), TlsError> {
    let read = |source| TlsError::ReadCa {
        path: ca.to_path_buf(),
        source,
    };
    let mut added = 0;
    for cert in CertificateDer::pem_file_iter(ca).map_err(read)? {
        roots
            .add(cert.map_err(read)?)
            .map_err(|source| TlsError::BadCertificate {
                path: ca.to_path_buf(),
                source,
            })?;
        added += 1;
    }
    if added == 0 {
        return Err(TlsError::NoCertificate {
            path: ca.to_path_buf(),
        });
    }
    Ok(())
}

/// The SHA-256 fingerprint of a DER certificate.
pub fn fingerprint(der: &[u8]) -> Pin {
    Sha256::digest(der).into()
}

/// A fingerprint as `openssl x509 -fingerprint -sha256` prints it: `AB:CD:…`, upper case.
pub fn fingerprint_text(pin: &Pin) -> String {
    pin.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A server certificate mailferry refused, with its fingerprint and why. It travels inside
/// the handshake's error (as `rustls::Error::Other`); [`refusal`] finds it there so callers
/// can print these words rather than rustls's.
#[derive(Debug)]
pub struct CertificateRefused {
    /// The name the connection expected (host name or IP address).
    pub host: String,
    pub fingerprint: Pin,
    pub why: Refusal,
    /// Whether the connection has a `tls_pin_sha256` setting to offer.
    pub offer_pin: bool,
}

#[derive(Debug)]
pub enum Refusal {
    /// `tls_pin_sha256` is set and names another certificate (how many it names).
    NotPinned(usize),
    /// Not valid for the host because it has no subjectAltName: the host is only in its CN.
    OnlyCommonName { cn: Option<String> },
    /// Anything else name or chain verification refused (rustls's error).
    Verification(rustls::Error),
}

impl fmt::Display for CertificateRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fp = fingerprint_text(&self.fingerprint);
        let host = &self.host;
        let pin_hint = if self.offer_pin {
            format!(
                "; if that is the server's certificate (compare with `openssl x509 -noout \
                 -fingerprint -sha256 -in CERT` on the server), tls_pin_sha256 = \"{fp}\" \
                 accepts exactly that certificate for this connection"
            )
        } else {
            String::new()
        };
        match &self.why {
            Refusal::NotPinned(1) => write!(
                f,
                "the certificate of {host} has the SHA-256 fingerprint {fp}, not the one \
                 tls_pin_sha256 names"
            ),
            Refusal::NotPinned(n) => write!(
                f,
                "the certificate of {host} has the SHA-256 fingerprint {fp}, none of the {n} \
                 tls_pin_sha256 names"
            ),
            Refusal::OnlyCommonName { cn } => {
                let cn = cn
                    .as_deref()
                    .map_or_else(|| "no CN either".to_string(), |cn| format!("CN={cn}"));
                write!(
                    f,
                    "the certificate of {host} names the host only in its CN ({cn}), with no \
                     subjectAltName: name verification reads only the subjectAltName (RFC 6125), \
                     so the certificate is refused. Its SHA-256 fingerprint is {fp}{pin_hint}"
                )
            }
            Refusal::Verification(e) => {
                let pinnable = matches!(
                    e,
                    rustls::Error::InvalidCertificate(
                        CertificateError::UnknownIssuer
                            | CertificateError::NotValidForName
                            | CertificateError::NotValidForNameContext { .. }
                    )
                );
                if pinnable {
                    write!(
                        f,
                        "{e}; the certificate's SHA-256 fingerprint is {fp}{pin_hint}"
                    )
                } else {
                    write!(f, "{e}; the certificate's SHA-256 fingerprint is {fp}")
                }
            }
        }
    }
}

impl std::error::Error for CertificateRefused {}

/// The [`CertificateRefused`] inside a handshake's I/O error, if that is why it failed.
pub fn refusal(e: &io::Error) -> Option<&CertificateRefused> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::Other(OtherError(inner)) => inner.downcast_ref::<CertificateRefused>(),
        _ => None,
    }
}

/// The words for a failed handshake: mailferry's explanation of a refused certificate, or the
/// error as it is.
pub fn handshake_error_text(e: &io::Error) -> String {
    refusal(e).map_or_else(|| e.to_string(), ToString::to_string)
}

enum Check {
    Chain(Arc<WebPkiServerVerifier>),
    Pinned(Vec<Pin>),
}

/// Verification with explained refusals: the webpki chain and name checks, or the pins.
struct Policy {
    check: Check,
    algorithms: WebPkiSupportedAlgorithms,
    offer_pin: bool,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.check {
            Check::Chain(_) => f.write_str("Policy(chain)"),
            Check::Pinned(pins) => write!(f, "Policy({} pins)", pins.len()),
        }
    }
}

impl Policy {
    fn refused(
        &self,
        end_entity: &CertificateDer<'_>,
        host: &ServerName<'_>,
        why: Refusal,
    ) -> rustls::Error {
        rustls::Error::Other(OtherError(Arc::new(CertificateRefused {
            host: host.to_str().into_owned(),
            fingerprint: fingerprint(end_entity),
            why,
            offer_pin: self.offer_pin,
        })))
    }
}

/// Whether the certificate has no subjectAltName extension, and its subject CN.
fn common_name_only(der: &[u8]) -> Option<Option<String>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    if cert.subject_alternative_name().ok()?.is_some() {
        return None;
    }
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    Some(cn)
}

impl ServerCertVerifier for Policy {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.check {
            Check::Pinned(pins) => {
                if pins.contains(&fingerprint(end_entity)) {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(self.refused(end_entity, server_name, Refusal::NotPinned(pins.len())))
                }
            }
            Check::Chain(webpki) => webpki
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
                .map_err(|e| {
                    let why = match &e {
                        rustls::Error::InvalidCertificate(
                            CertificateError::NotValidForName
                            | CertificateError::NotValidForNameContext { .. },
                        ) => match common_name_only(end_entity) {
                            Some(cn) => Refusal::OnlyCommonName { cn },
                            None => Refusal::Verification(e),
                        },
                        rustls::Error::InvalidCertificate(_) => Refusal::Verification(e),
                        _ => return e,
                    };
                    self.refused(end_entity, server_name, why)
                }),
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Accepts any server certificate; used only when the job file says `tls_verify = false`.
#[derive(Debug)]
struct NoVerification;

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file in the temporary directory, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, contents: &[u8]) -> TempFile {
            let path =
                std::env::temp_dir().join(format!("mailferry-tls-{}-{name}", std::process::id()));
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn without_a_ca_file_the_system_or_webpki_roots_are_used() {
        assert!(client_config(None, true, &[]).is_ok());
    }

    #[test]
    fn a_missing_ca_file_is_named_in_the_error() {
        let e = client_config(Some(Path::new("/nonexistent/ca.pem")), true, &[]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("Cannot read tls_ca /nonexistent/ca.pem: "),
            "{text}"
        );
        assert!(!text.ends_with('.'), "{text}");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let file = TempFile::new("empty.pem", b"not a certificate\n");
        let e = client_config(Some(&file.0), true, &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("No PEM certificate in tls_ca {}", file.0.display())
        );
    }

    #[test]
    fn a_ca_file_with_a_broken_certificate_is_refused() {
        let file = TempFile::new(
            "broken.pem",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let e = client_config(Some(&file.0), true, &[]).unwrap_err();
        assert!(matches!(e, TlsError::BadCertificate { .. }), "{e}");
    }

    #[test]
    fn without_verification_the_ca_file_is_not_read() {
        assert!(client_config(Some(Path::new("/nonexistent/ca.pem")), false, &[]).is_ok());
    }

    /// Certificates made by the `openssl` CLI, as the test kit's servers make them.
    struct Certs {
        dir: tempfile::TempDir,
    }

    impl Certs {
        fn new(names: mailferry_testkit::CertNames) -> Certs {
            let dir = tempfile::tempdir().unwrap();
            mailferry_testkit::generate_certificates(dir.path(), names);
            Certs { dir }
        }
        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
        fn pin(&self) -> Pin {
            let text = mailferry_testkit::openssl_fingerprint(&self.path("cert.pem"));
            let hex: String = text.chars().filter(|c| *c != ':').collect();
            let mut pin = [0u8; 32];
            for (i, byte) in pin.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
            }
            pin
        }
    }

    /// A one-connection rustls server on loopback serving the certificates' `cert.pem`; the
    /// client handshakes with `config` for `host` and gets the handshake's result.
    fn handshake(certs: &Certs, config: ClientConfig, host: &str) -> Result<(), io::Error> {
        use std::net::{TcpListener, TcpStream};
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(certs.path("cert.pem"))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(certs.path("key.pem")).unwrap();
        let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut tcp, _) = listener.accept().unwrap();
            let mut conn = rustls::ServerConnection::new(Arc::new(server_config)).unwrap();
            while conn.is_handshaking() {
                if conn.complete_io(&mut tcp).is_err() {
                    break;
                }
            }
        });
        let mut tcp = TcpStream::connect(addr).unwrap();
        let name = ServerName::try_from(host.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut result = Ok(());
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut tcp) {
                result = Err(e);
                break;
            }
        }
        drop(tcp);
        server.join().unwrap();
        result
    }

    #[test]
    fn a_certificate_with_subject_alt_names_from_tls_ca_is_accepted() {
        let certs = Certs::new(mailferry_testkit::CertNames::Localhost);
        let config = client_config(Some(&certs.path("ca.pem")), true, &[]).unwrap();
        handshake(&certs, config, "localhost").unwrap();
    }

    #[test]
    fn a_common_name_only_certificate_is_refused_with_the_reason_and_its_fingerprint() {
        let certs = Certs::new(mailferry_testkit::CertNames::CommonNameOnly);
        let config = client_config(Some(&certs.path("ca.pem")), true, &[]).unwrap();
        let e = handshake(&certs, config, "localhost").unwrap_err();
        let refused = refusal(&e).expect("mailferry's refusal");
        assert_eq!(refused.fingerprint, certs.pin());
        let fp = mailferry_testkit::openssl_fingerprint(&certs.path("cert.pem"));
        assert_eq!(fingerprint_text(&refused.fingerprint), fp);
        let text = handshake_error_text(&e);
        assert_eq!(
            text,
            format!(
                "the certificate of localhost names the host only in its CN (CN=localhost), \
                 with no subjectAltName: name verification reads only the subjectAltName (RFC \
                 6125), so the certificate is refused. Its SHA-256 fingerprint is {fp}; if that \
                 is the server's certificate (compare with `openssl x509 -noout -fingerprint \
                 -sha256 -in CERT` on the server), tls_pin_sha256 = \"{fp}\" accepts exactly \
                 that certificate for this connection"
            )
        );
    }

    #[test]
    fn a_pinned_certificate_is_accepted_without_a_ca_and_whatever_its_names() {
        let certs = Certs::new(mailferry_testkit::CertNames::CommonNameOnly);
        let config = client_config(None, true, &[[0u8; 32], certs.pin()]).unwrap();
        handshake(&certs, config, "127.0.0.1").unwrap();
    }

    #[test]
    fn with_a_pin_every_other_certificate_is_refused_even_one_the_ca_signed() {
        let certs = Certs::new(mailferry_testkit::CertNames::Localhost);
        let mut wrong = certs.pin();
        wrong[0] ^= 1;
        let config = client_config(Some(&certs.path("ca.pem")), true, &[wrong]).unwrap();
        let e = handshake(&certs, config, "localhost").unwrap_err();
        let fp = mailferry_testkit::openssl_fingerprint(&certs.path("cert.pem"));
        assert_eq!(
            handshake_error_text(&e),
            format!(
                "the certificate of localhost has the SHA-256 fingerprint {fp}, not the one \
                 tls_pin_sha256 names"
            )
        );
    }

    #[test]
    fn an_unknown_issuer_is_refused_with_the_fingerprint() {
        let certs = Certs::new(mailferry_testkit::CertNames::Localhost);
        let config = client_config(None, true, &[]).unwrap();
        let e = handshake(&certs, config, "localhost").unwrap_err();
        let text = handshake_error_text(&e);
        let fp = mailferry_testkit::openssl_fingerprint(&certs.path("cert.pem"));
        assert!(
            text.starts_with(&format!(
                "invalid peer certificate: UnknownIssuer; the certificate's SHA-256 \
                 fingerprint is {fp}; "
            )),
            "{text}"
        );
    }

    #[test]
    fn a_certificate_for_another_name_is_refused_as_rustls_says_with_the_fingerprint() {
        let certs = Certs::new(mailferry_testkit::CertNames::Localhost);
        let config = client_config(Some(&certs.path("ca.pem")), true, &[]).unwrap();
        let e = handshake(&certs, config, "mail.example").unwrap_err();
        let text = handshake_error_text(&e);
        assert!(
            text.starts_with(
                "invalid peer certificate: certificate not valid for name \"mail.example\"; \
                 certificate is only valid for DnsName(\"localhost\") or IpAddress("
            ),
            "{text}"
        );
        assert!(text.contains("SHA-256 fingerprint is "), "{text}");
    }
}
