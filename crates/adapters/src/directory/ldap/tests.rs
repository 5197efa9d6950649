//! Unit tests that need no server.

use std::collections::{HashMap, HashSet};

use ldap3::SearchEntry;

use super::add::{new_entry_attributes, new_entry_dn};
use super::entry::{normalize_address, to_dir_entry};
use super::search::{and_filter, base_filter, id_assertion};
use super::*;

fn settings() -> LdapSettings {
    LdapSettings {
        url: "ldap://127.0.0.1:1".into(),
        security: DirectorySecurity::Plain,
        tls_ca: None,
        tls_pin_sha256: Vec::new(),
        bind_dn: "cn=reader,dc=example".into(),
        bind_password: "s3cret-pw".into(),
        base: "ou=people,dc=example".into(),
        filter: "(objectClass=inetOrgPerson)".into(),
        id_attribute: "entryUUID".into(),
        login_attribute: "uid".into(),
        primary_address_attribute: "mail".into(),
        alias_attribute: Some("mailLocalAddress".into()),
        display_name_attribute: Some("cn".into()),
    }
}

fn ad_settings() -> LdapSettings {
    LdapSettings {
        id_attribute: "objectGUID".into(),
        login_attribute: "sAMAccountName".into(),
        alias_attribute: Some("proxyAddresses".into()),
        display_name_attribute: Some("displayName".into()),
        ..settings()
    }
}

fn entry(dn: &str, attrs: &[(&str, &[&str])]) -> SearchEntry {
    SearchEntry {
        dn: dn.into(),
        attrs: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect(),
        bin_attrs: HashMap::new(),
    }
}

const AD_BYTES: [u8; 16] = [
    0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
];

#[test]
fn guid_bytes_to_string() {
    assert_eq!(
        guid_to_string(&AD_BYTES).as_deref(),
        Some("76543210-ba98-fedc-0123-456789abcdef")
    );
    // .NET: new Guid("00112233-4455-6677-8899-aabbccddeeff").ToByteArray()
    let dotnet = [
        0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
        0xff,
    ];
    assert_eq!(
        guid_to_string(&dotnet).as_deref(),
        Some("00112233-4455-6677-8899-aabbccddeeff")
    );
    assert_eq!(guid_to_string(&AD_BYTES[..15]), None);
    assert_eq!(guid_to_string(&[0; 17]), None);
}

#[test]
fn guid_string_to_filter_escape() {
    let expected = "\\10\\32\\54\\76\\98\\ba\\dc\\fe\\01\\23\\45\\67\\89\\ab\\cd\\ef";
    for g in [
        "76543210-ba98-fedc-0123-456789abcdef",
        "{76543210-BA98-FEDC-0123-456789ABCDEF}",
        " 76543210-ba98-fedc-0123-456789abcdef ",
    ] {
        assert_eq!(guid_filter_escape(g).as_deref(), Some(expected), "{g}");
    }
    // Round trip.
    let s = guid_to_string(&AD_BYTES).unwrap();
    assert_eq!(guid_filter_escape(&s).as_deref(), Some(expected));
    for bad in [
        "",
        "76543210ba98fedc0123456789abcdef",
        "76543210-ba98-fedc-0123-456789abcdeg",
        "76543210-ba98-fedc-0123-456789abcde",
        "7654321-0ba98-fedc-0123-456789abcdef",
        "{76543210-ba98-fedc-0123-456789abcdef",
        "7654321é-ba98-fedc-0123-456789abcdef",
    ] {
        assert_eq!(guid_filter_escape(bad), None, "{bad}");
    }
}

#[test]
fn proxy_addresses_primary_first_others_ignored() {
    let values: Vec<String> = [
        "smtp:Alias@Old.Example",
        "X500:/o=Org/ou=Exchange/cn=Recipients/cn=jdoe",
        "SMTP:John.Doe@OLD.example",
        "sip:john.doe@old.example",
        "smtp:john.doe@old.example",
        "SMTP:second-primary@old.example",
        "smtp:not-an-address",
        "noprefix@old.example",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(
        parse_proxy_addresses(&values),
        vec![
            "John.Doe@old.example",
            "Alias@old.example",
            "second-primary@old.example"
        ]
    );
    assert!(parse_proxy_addresses(&[]).is_empty());
    assert_eq!(
        parse_proxy_addresses(&["smtp:a@x.example".to_string()]),
        vec!["a@x.example"]
    );
}

#[test]
fn address_normalisation() {
    assert_eq!(
        normalize_address(" John.Doe@Old.EXAMPLE ").as_deref(),
        Some("John.Doe@old.example")
    );
    // One rule for every input (`EmailAddress::parse`): a quoted local part is refused here
    // as in the CSV, since no mail system in practice hands one out.
    assert_eq!(normalize_address("\"a@b\"@Example.org"), None);
    for bad in [
        "",
        "john",
        "@old.example",
        "john@",
        "jo hn@x.example",
        "a@.x",
        "a@x.",
    ] {
        assert_eq!(normalize_address(bad), None, "{bad}");
    }
}

#[test]
fn entry_addresses_primary_first_deduplicated() {
    let e = entry(
        "uid=jdoe,ou=people,dc=example",
        &[
            ("entryUUID", &["1b0e2c4a-1111-2222-3333-444455556666"]),
            ("uid", &["jdoe"]),
            ("cn", &["John Doe"]),
            ("mail", &["John.Doe@Old.Example", "jd@old.example"]),
            (
                "mailLocalAddress",
                &[
                    "john.doe@OLD.example",
                    "JD@old.example",
                    "john@old.example",
                    "bogus",
                ],
            ),
        ],
    );
    let d = to_dir_entry(&settings(), &e).unwrap();
    assert_eq!(d.id, "1b0e2c4a-1111-2222-3333-444455556666");
    assert_eq!(d.login, "jdoe");
    assert_eq!(d.display_name.as_deref(), Some("John Doe"));
    assert_eq!(
        d.addresses,
        vec!["John.Doe@old.example", "jd@old.example", "john@old.example"]
    );
}

#[test]
fn entry_attribute_names_ignore_case() {
    let e = entry(
        "uid=a,dc=example",
        &[
            ("ENTRYUUID", &["id-1"]),
            ("UID", &["a"]),
            ("Mail", &["a@x.example"]),
        ],
    );
    let d = to_dir_entry(&settings(), &e).unwrap();
    assert_eq!((d.id.as_str(), d.login.as_str()), ("id-1", "a"));
    assert_eq!(d.display_name, None);
}

#[test]
fn entry_lacking_what_a_mailbox_needs_is_refused() {
    let s = settings();
    let no_id = entry("uid=a,dc=x", &[("uid", &["a"]), ("mail", &["a@x.example"])]);
    assert_eq!(to_dir_entry(&s, &no_id).unwrap_err(), "no entryUUID");
    let no_login = entry(
        "uid=a,dc=x",
        &[("entryUUID", &["1"]), ("mail", &["a@x.example"])],
    );
    assert_eq!(to_dir_entry(&s, &no_login).unwrap_err(), "no uid");
    let no_mail = entry(
        "uid=a,dc=x",
        &[
            ("entryUUID", &["1"]),
            ("uid", &["a"]),
            ("mailLocalAddress", &["a@x.example"]),
        ],
    );
    assert_eq!(to_dir_entry(&s, &no_mail).unwrap_err(), "no mail");
    let bad_mail = entry(
        "uid=a,dc=x",
        &[("entryUUID", &["1"]), ("uid", &["a"]), ("mail", &["a"])],
    );
    assert!(
        to_dir_entry(&s, &bad_mail)
            .unwrap_err()
            .contains("not an email address")
    );
}

#[test]
fn active_directory_entry() {
    let s = ad_settings();
    let mut e = entry(
        "CN=John Doe,OU=Users,DC=corp,DC=example",
        &[
            ("sAMAccountName", &["jdoe"]),
            ("displayName", &["John Doe"]),
            ("mail", &["john.doe@corp.example"]),
            (
                "proxyAddresses",
                &[
                    "X500:/o=x",
                    "smtp:jd@corp.example",
                    "SMTP:John.Doe@corp.example",
                    "smtp:john@legacy.example",
                ],
            ),
        ],
    );
    e.bin_attrs
        .insert("objectGUID".into(), vec![AD_BYTES.to_vec()]);
    let d = to_dir_entry(&s, &e).unwrap();
    assert_eq!(d.id, "76543210-ba98-fedc-0123-456789abcdef");
    assert_eq!(
        d.addresses,
        vec![
            "john.doe@corp.example",
            "jd@corp.example",
            "john@legacy.example"
        ]
    );
    // Without mail, proxyAddresses' SMTP: is the primary.
    e.attrs.remove("mail");
    let d = to_dir_entry(&s, &e).unwrap();
    assert_eq!(d.addresses[0], "John.Doe@corp.example");
    // A GUID whose bytes happen to be valid UTF-8 arrives among the text values.
    let ascii: Vec<u8> = (0x30..0x40).collect();
    e.bin_attrs.clear();
    e.attrs.insert(
        "objectGUID".into(),
        vec![String::from_utf8(ascii.clone()).unwrap()],
    );
    assert_eq!(
        to_dir_entry(&s, &e).unwrap().id,
        guid_to_string(&ascii).unwrap()
    );
    e.attrs.insert("objectGUID".into(), vec!["short".into()]);
    assert!(
        to_dir_entry(&s, &e)
            .unwrap_err()
            .contains("not a 16-byte GUID")
    );
}

#[test]
fn dn_escaping_of_login() {
    let cases = [
        ("jdoe", "uid=jdoe,ou=p,dc=x"),
        ("Doe, John", "uid=Doe\\, John,ou=p,dc=x"),
        ("a+b", "uid=a\\+b,ou=p,dc=x"),
        ("say \"hi\"", "uid=say \\\"hi\\\",ou=p,dc=x"),
        ("back\\slash", "uid=back\\\\slash,ou=p,dc=x"),
        ("<x>;y", "uid=\\<x\\>\\;y,ou=p,dc=x"),
        ("a=b", "uid=a\\=b,ou=p,dc=x"),
        ("#hash", "uid=\\#hash,ou=p,dc=x"),
        ("mid#hash", "uid=mid#hash,ou=p,dc=x"),
        (" lead", "uid=\\ lead,ou=p,dc=x"),
        ("trail ", "uid=trail\\ ,ou=p,dc=x"),
        ("in side", "uid=in side,ou=p,dc=x"),
        (" ", "uid=\\ ,ou=p,dc=x"),
        ("nul\0", "uid=nul\\00,ou=p,dc=x"),
        ("jürgen", "uid=jürgen,ou=p,dc=x"),
    ];
    for (login, dn) in cases {
        assert_eq!(new_entry_dn("uid", login, "ou=p,dc=x"), dn, "{login:?}");
    }
}

#[test]
fn new_entry_attributes_merge_and_fall_back() {
    let s = settings();
    let m = NewMailbox {
        base: "ou=people,dc=new".into(),
        login: "jdoe".into(),
        address: "jdoe@NEW.example".into(),
        display_name: Some("John Doe".into()),
        object_classes: vec!["inetOrgPerson".into(), "inetLocalMailRecipient".into()],
        password: Some("initial".into()),
    };
    let attrs: HashMap<String, HashSet<String>> =
        new_entry_attributes(&s, &m).into_iter().collect();
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
    assert_eq!(
        attrs["objectClass"],
        set(&["inetOrgPerson", "inetLocalMailRecipient"])
    );
    assert_eq!(attrs["uid"], set(&["jdoe"]));
    assert_eq!(attrs["mail"], set(&["jdoe@new.example"]));
    assert_eq!(attrs["cn"], set(&["John Doe"])); // display attribute cn merged
    assert_eq!(attrs["sn"], set(&["John Doe"]));
    assert_eq!(attrs["userPassword"], set(&["initial"]));
    assert_eq!(attrs.len(), 6);

    // Login attribute cn: both values under one cn; no display name → login.
    let s = LdapSettings {
        login_attribute: "CN".into(),
        display_name_attribute: Some("displayName".into()),
        ..settings()
    };
    let m = NewMailbox {
        display_name: None,
        password: None,
        ..m
    };
    let attrs = new_entry_attributes(&s, &m);
    let names: Vec<&str> = attrs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["objectClass", "CN", "mail", "sn", "displayName"]);
    assert_eq!(attrs[1].1, set(&["jdoe"]));
    assert_eq!(attrs[3].1, set(&["jdoe"]));
}

#[test]
fn filters() {
    assert_eq!(base_filter(""), "(objectClass=*)");
    assert_eq!(base_filter(" objectClass=person "), "(objectClass=person)");
    assert_eq!(and_filter("(a=b)", "(c=d)"), "(&(a=b)(c=d))");
    let s = settings();
    assert_eq!(
        id_assertion(&s, "x*(y)").unwrap(),
        "(entryUUID=x\\2a\\28y\\29)"
    );
    assert!(matches!(
        id_assertion(&s, ""),
        Err(DirectoryError::InvalidId { .. })
    ));
    let ad = ad_settings();
    assert_eq!(
        id_assertion(&ad, "76543210-ba98-fedc-0123-456789abcdef").unwrap(),
        "(objectGUID=\\10\\32\\54\\76\\98\\ba\\dc\\fe\\01\\23\\45\\67\\89\\ab\\cd\\ef)"
    );
    let err = id_assertion(&ad, "jdoe").unwrap_err();
    assert_eq!(
        err.to_string(),
        "Directory ldap://127.0.0.1:1: \"jdoe\" is not a valid objectGUID value"
    );
}

#[test]
fn url_and_security_must_agree() {
    let with = |url: &str, security: DirectorySecurity| LdapSettings {
        url: url.into(),
        security,
        ..settings()
    };
    assert!(!uses_tls(&with("ldap://h", DirectorySecurity::Plain)).unwrap());
    assert!(uses_tls(&with("ldap://h", DirectorySecurity::StartTls)).unwrap());
    assert!(uses_tls(&with("LDAPS://h:636", DirectorySecurity::Tls)).unwrap());
    for (url, sec) in [
        ("ldap://h", DirectorySecurity::Tls),
        ("ldaps://h", DirectorySecurity::Plain),
        ("ldaps://h", DirectorySecurity::StartTls),
        ("http://h", DirectorySecurity::Plain),
        ("h:389", DirectorySecurity::Plain),
    ] {
        let err = LdapDirectory::connect(&with(url, sec)).unwrap_err();
        assert!(matches!(err, DirectoryError::Config { .. }), "{url}: {err}");
        assert!(!err.is_unreachable());
    }
}

#[test]
fn debug_hides_the_password() {
    let shown = format!("{:?}", settings());
    assert!(!shown.contains("s3cret-pw"), "{shown}");
    assert!(shown.contains("<hidden>"));
}

#[test]
fn error_words() {
    let e = DirectoryError::Ldap {
        url: "ldap://dc:389".into(),
        operation: "bind as cn=x".into(),
        code: 49,
        text: String::new(),
        hint: None,
    };
    assert_eq!(
        e.to_string(),
        "Directory ldap://dc:389: bind as cn=x failed: invalidCredentials (49)"
    );
    assert_eq!(e.result_code(), Some(49));
    let e = DirectoryError::Ldap {
        url: "ldap://dc:389".into(),
        operation: "search".into(),
        code: 32,
        text: "no such base ".into(),
        hint: Some("check base".into()),
    };
    assert_eq!(
        e.to_string(),
        "Directory ldap://dc:389: search failed: noSuchObject (32): no such base (check base)"
    );
}

#[test]
fn busy_and_unavailable_are_transient_bad_credentials_not() {
    let refused = |code| DirectoryError::Ldap {
        url: "ldap://dc".into(),
        operation: "search".into(),
        code,
        text: String::new(),
        hint: None,
    };
    assert!(refused(51).is_transient());
    assert!(refused(52).is_transient());
    assert!(!refused(49).is_transient());
    assert!(!refused(49).is_unreachable());
    let lost = DirectoryError::Connection {
        url: "ldap://dc".into(),
        operation: "search".into(),
        reason: "connection reset".into(),
    };
    assert!(lost.is_transient() && lost.is_unreachable());
}

#[test]
fn tls_ca_without_a_certificate_is_a_configuration_error() {
    let not_pem = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_pem.path(), "not a certificate\n").unwrap();
    let err = LdapDirectory::connect(&LdapSettings {
        url: "ldaps://127.0.0.1:1".into(),
        security: DirectorySecurity::Tls,
        tls_ca: Some(not_pem.path().to_path_buf()),
        ..settings()
    })
    .unwrap_err();
    assert!(matches!(err, DirectoryError::Config { .. }), "{err}");
    assert!(err.to_string().contains("No PEM certificate"), "{err}");
}
