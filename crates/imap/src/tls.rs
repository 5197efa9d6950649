//! The one rustls client configuration, for IMAP and for the LDAP directory, so both trust the
//! same certificates: the system's trust anchors plus the job's `tls_ca`, with the ring
//! provider chosen here rather than through a process-wide default.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

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

/// A rustls client configuration. With `verify`, server certificates must chain to the
/// system's trust anchors or to a certificate in `ca` (a PEM file); where the system has no
/// trust anchors at all (a bare container) and no `ca` is given, the Mozilla roots of
/// webpki-roots stand in. Without `verify` any certificate is accepted and `ca` is not read:
/// only an explicit `tls_verify = false` in a job file asks for that.
pub fn client_config(ca: Option<&Path>, verify: bool) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?;
    if !verify {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification))
            .with_no_client_auth());
    }
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
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
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
        assert!(client_config(None, true).is_ok());
    }

    #[test]
    fn a_missing_ca_file_is_named_in_the_error() {
        let e = client_config(Some(Path::new("/nonexistent/ca.pem")), true).unwrap_err();
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
        let e = client_config(Some(&file.0), true).unwrap_err();
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
        let e = client_config(Some(&file.0), true).unwrap_err();
        assert!(matches!(e, TlsError::BadCertificate { .. }), "{e}");
    }

    #[test]
    fn without_verification_the_ca_file_is_not_read() {
        assert!(client_config(Some(Path::new("/nonexistent/ca.pem")), false).is_ok());
    }
}
