//! `tls_pin_sha256`: the SHA-256 fingerprints of the only server certificates a connection
//! accepts.

use std::fmt;

/// A certificate's SHA-256 fingerprint, over its DER encoding, as `openssl x509 -fingerprint
/// -sha256` prints it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertificatePin(pub [u8; 32]);

impl CertificatePin {
    /// Reads `AB:CD:…` (64 hex digits; colons, spaces and case optional). The error says what
    /// is wrong without quoting the text.
    pub fn parse(text: &str) -> Result<CertificatePin, String> {
        let digits: Vec<char> = text
            .trim()
            .chars()
            .filter(|c| *c != ':' && *c != ' ')
            .collect();
        if let Some(c) = digits.iter().find(|c| !c.is_ascii_hexdigit()) {
            return Err(format!(
                "a SHA-256 fingerprint is 64 hex digits, optionally in pairs separated by \
                 colons (as `openssl x509 -noout -fingerprint -sha256 -in CERT` prints it); \
                 `{c}` is not a hex digit"
            ));
        }
        if digits.len() != 64 {
            return Err(format!(
                "a SHA-256 fingerprint is 64 hex digits (32 bytes, as `openssl x509 -noout \
                 -fingerprint -sha256 -in CERT` prints it); this one has {}",
                digits.len()
            ));
        }
        let mut bytes = [0u8; 32];
        for (i, pair) in digits.chunks(2).enumerate() {
            let hex: String = pair.iter().collect();
            bytes[i] = u8::from_str_radix(&hex, 16).map_err(|e| e.to_string())?;
        }
        Ok(CertificatePin(bytes))
    }
}

/// `AB:CD:…`, upper case.
impl fmt::Display for CertificatePin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CertificatePin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertificatePin({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "3F:A1:00:FF:12:34:56:78:9A:BC:DE:F0:01:23:45:67:89:AB:CD:EF:FE:DC:BA:98:76:54:32:10:0F:1E:2D:3C";

    #[test]
    fn colons_and_case_are_optional() {
        let pin = CertificatePin::parse(FP).unwrap();
        assert_eq!(pin.to_string(), FP);
        assert_eq!(
            CertificatePin::parse(&FP.replace(':', "").to_lowercase()).unwrap(),
            pin
        );
        assert_eq!(pin.0[0], 0x3f);
        assert_eq!(pin.0[31], 0x3c);
    }

    #[test]
    fn a_wrong_length_or_digit_is_explained() {
        let short = CertificatePin::parse("AB:CD").unwrap_err();
        assert!(
            short.contains("64 hex digits") && short.ends_with("this one has 4"),
            "{short}"
        );
        // a SHA-1 fingerprint (40 digits) is a common mix-up
        let sha1 = CertificatePin::parse(&"AB".repeat(20)).unwrap_err();
        assert!(sha1.ends_with("this one has 40"), "{sha1}");
        let bad = CertificatePin::parse(&FP.replace("3F", "3G")).unwrap_err();
        assert!(bad.ends_with("`G` is not a hex digit"), "{bad}");
    }
}
