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
    let (code, v) = lab.json(&["migrate", jobs, "--all"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["copied"], 10, "{v:#}");
    assert_same(
        &snapshot(&lab.source, "gus"),
        &snapshot(&lab.target, "gus"),
        str::to_string,
    );
}
