//! Starts one test Dovecot and keeps it running until Enter is pressed (or stdin closes),
//! for poking at it by hand:
//!
//! ```text
//! cargo run -p mailferry-testkit --example serve -- [--exchange] [--dot] \
//!     [--tls implicit|starttls] [--quota BYTES] [--no-special-use] [USER...]
//! ```
//!
//! Users default to `alice bob`; passwords are `pw-<user>`, master user `admin`/`adminpass`.

use std::io::BufRead;

use mailferry_testkit::{Dovecot, DovecotConfig, Layout, Profile, Tls};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut users = Vec::new();
    let mut cfg = DovecotConfig::new(&[]);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--exchange" => cfg.profile = Profile::ExchangeLike,
            "--dot" => cfg.layout = Layout::DotInboxPrefix,
            "--no-special-use" => cfg.special_use = false,
            "--tls" => {
                cfg.tls = match args.next().as_deref() {
                    Some("implicit") => Tls::Implicit,
                    Some("starttls") => Tls::StartTls,
                    other => panic!("--tls implicit|starttls, not {other:?}"),
                }
            }
            "--quota" => {
                let bytes = args.next().and_then(|b| b.parse().ok());
                cfg.quota_bytes = Some(bytes.expect("--quota BYTES"));
            }
            user => users.push(user.to_owned()),
        }
    }
    if users.is_empty() {
        users = vec!["alice".to_owned(), "bob".to_owned()];
    }
    cfg.users = users
        .iter()
        .map(|u| (u.clone(), format!("pw-{u}")))
        .collect();

    let server = Dovecot::start(cfg);
    println!("dovecot listening on {}:{}", server.host(), server.port());
    println!("dir:   {}", server.dir().display());
    if let Some(ca) = server.ca_pem() {
        println!("ca:    {}", ca.display());
    }
    for user in &users {
        println!("user:  {user} / pw-{user}   (master: \"{user}*admin\" / adminpass)");
    }
    println!("press Enter to stop");
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
}
