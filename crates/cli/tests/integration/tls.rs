//! TLS: certificates are verified; a private CA is trusted only when the job names it.

use mailferry_testkit::{DovecotConfig, Tls};

use crate::lab::*;

#[test]
fn implicit_tls_and_starttls_verify_the_certificate() {
    let mut src = DovecotConfig::new(&["gus"]);
    src.tls = Tls::Implicit;
    let mut dst = DovecotConfig::new(&["gus"]);
    dst.tls = Tls::StartTls;
    let lab = Lab::with(src, dst);
    let job = std::fs::read_to_string(lab.job()).unwrap();
    let (source, target) = job.split_at(job.find("[target]").unwrap());
    let untrusted = format!(
        "{}{}",
        source.replace(
            "security = \"plain\"\nallow_plain = true",
            "security = \"tls\""
        ),
        target.replace(
            "security = \"plain\"\nallow_plain = true",
            "security = \"starttls\""
        )
    );
    std::fs::write(lab.job(), &untrusted).unwrap();
    let jobp = lab.job();
    let jobs = jobp.to_str().unwrap();
    assert!(lab.mailferry(&["match", jobs]).status.success());
    let out = lab.mailferry(&["check", jobs]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL") && text.contains("certificate"),
        "{text}"
    );

    let ca = |d: &mailferry_testkit::Dovecot| d.ca_pem().unwrap().display().to_string();
    let (source, target) = untrusted.split_at(untrusted.find("[target]").unwrap());
    let trusted = format!(
        "{}{}",
        source.replace(
            "security = \"tls\"",
            &format!("security = \"tls\"\ntls_ca = \"{}\"", ca(&lab.source))
        ),
        target.replace(
            "security = \"starttls\"",
            &format!("security = \"starttls\"\ntls_ca = \"{}\"", ca(&lab.target))
        )
    );
    std::fs::write(lab.job(), trusted).unwrap();
    let out = lab.mailferry(&["check", jobs]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    fill(
        &lab.source,
        "gus",
        "INBOX",
        &(0..10).map(|i| generated(i, 5_000)).collect::<Vec<_>>(),
    );
    let marks = lab.log_marks();
    let (code, v) = lab.json(&["migrate", jobs, "--all"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["copied"], 10, "{v:#}");
    assert_same(
        &snapshot(&lab.source, "gus"),
        &snapshot(&lab.target, "gus"),
        str::to_string,
    );
    // Over TLS too, the LOGOUT that is not waited for reaches the server before the close.
    assert_sessions_logged_out(&lab, marks, 1);
}

/// A source whose certificate names its host only in its CN (no subjectAltName), as many a
/// legacy server's does: refused even with its CA in `tls_ca`, with the reason, the
/// fingerprint and the option; accepted with `tls_pin_sha256`; refused with a wrong pin.
#[test]
fn a_common_name_only_certificate_is_explained_and_can_be_pinned() {
    let mut src = DovecotConfig::new(&["ivy"]);
    src.tls = Tls::Implicit;
    src.tls_cn_only = true;
    let lab = Lab::with(src, DovecotConfig::new(&["ivy"]));
    let fp = mailferry_testkit::openssl_fingerprint(&lab.source.cert_pem().unwrap());
    let plain = std::fs::read_to_string(lab.job()).unwrap();
    let (source, target) = plain.split_at(plain.find("[target]").unwrap());
    let with = |keys: &str| {
        format!(
            "{}{target}",
            source.replacen(
                "security = \"plain\"\nallow_plain = true",
                &format!("security = \"tls\"\n{keys}"),
                1
            )
        )
    };
    let jobp = lab.job();
    let job = jobp.to_str().unwrap();
    assert!(lab.mailferry(&["match", job]).status.success());

    let ca = lab.source.ca_pem().unwrap();
    std::fs::write(&jobp, with(&format!("tls_ca = \"{}\"", ca.display()))).unwrap();
    let out = lab.mailferry(&["check", job]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let fail = text
        .lines()
        .find(|l| l.starts_with("source FAIL"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        fail.contains(
            "the certificate of 127.0.0.1 names the host only in its CN (CN=localhost), with \
             no subjectAltName"
        ) && fail.contains(&format!("Its SHA-256 fingerprint is {fp}"))
            && fail.contains(&format!("tls_pin_sha256 = \"{fp}\"")),
        "{fail}"
    );

    // The pin, written as openssl prints it but in lower case without colons.
    let pin = fp.replace(':', "").to_lowercase();
    std::fs::write(&jobp, with(&format!("tls_pin_sha256 = \"{pin}\""))).unwrap();
    let out = lab.mailferry(&["check", job]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    fill(
        &lab.source,
        "ivy",
        "INBOX",
        &(0..3).map(|i| generated(i, 2_000)).collect::<Vec<_>>(),
    );
    let (code, v) = lab.json(&["migrate", job, "--all"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["copied"], 3, "{v:#}");

    let wrong = format!("{}00", &pin[..62]);
    let wrong = if wrong == pin {
        format!("{}11", &pin[..62])
    } else {
        wrong
    };
    std::fs::write(&jobp, with(&format!("tls_pin_sha256 = [\"{wrong}\"]"))).unwrap();
    let out = lab.mailferry(&["check", job]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "the certificate of 127.0.0.1 has the SHA-256 fingerprint {fp}, not the one \
             tls_pin_sha256 names"
        )),
        "{text}"
    );
}
