//! A missing Cyrus is a loud failure that says how to install it (its own test binary: it sets
//! `MAILFERRY_CYRUS_ROOT`, which other tests must not see).

use mailferry_testkit::{CYRUS_ROOT_ENV, Cyrus, CyrusConfig};

#[test]
fn a_missing_cyrus_says_which_script_installs_it() {
    let empty = tempfile::tempdir().expect("temp dir");
    // SAFETY: this binary's only test; no other thread reads the environment meanwhile.
    unsafe { std::env::set_var(CYRUS_ROOT_ENV, empty.path()) };
    let panic = std::panic::catch_unwind(|| Cyrus::start(CyrusConfig::new(&["x"])))
        .expect_err("Cyrus::start must fail without Cyrus");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("scripts/install-deps.sh"), "{message}");
    assert!(message.contains("usr/lib/cyrus/bin/master"), "{message}");
}
