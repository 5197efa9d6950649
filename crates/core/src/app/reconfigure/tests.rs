//! Tests of reconfiguring from a form: what is kept, what is refused, what is written.

use super::*;
use crate::job::{ConnectionKind, ImapSettings, template};

/// A job folder holding `text` as `job.toml`.
fn job_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = std::fs::canonicalize(dir.path())
        .expect("canonical tempdir")
        .join("job.toml");
    std::fs::write(&path, text).expect("write job");
    (dir, path)
}

fn form(pairs: &[(&str, FieldValue)]) -> BTreeMap<String, FieldValue> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn text(s: &str) -> FieldValue {
    FieldValue::Text(s.to_owned())
}

/// The form of one section as the console shows it.
fn section_view(path: &Path, section: Section) -> SectionView {
    connections_in(path)
        .expect("view")
        .sections
        .into_iter()
        .find(|s| s.section == section)
        .unwrap_or_else(|| panic!("no form for {section:?}"))
}

/// A form's values as shown: what sending the form back unchanged sends.
fn shown(section: &SectionView) -> BTreeMap<String, FieldValue> {
    section
        .fields
        .iter()
        .map(|f| (f.name.to_owned(), f.value.clone()))
        .collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).expect("read job")
}

fn source_imap(path: &Path) -> ImapSettings {
    let job = Job::load(path).unwrap_or_else(|e| panic!("the written job loads: {e}"));
    match job.source.kind {
        ConnectionKind::Imap(settings) => settings,
        ConnectionKind::Maildir { .. } => panic!("expected imap"),
    }
}

/// The problems of a refused form, as (field, message).
fn refused(
    path: &Path,
    section: Section,
    changes: &[(&str, FieldValue)],
) -> Vec<(Option<String>, String)> {
    match reconfigure_file(path, section, &form(changes)) {
        Err(AppError::Fields { problems, message }) => {
            assert!(
                message.starts_with("The job file was not changed"),
                "{message}"
            );
            problems.into_iter().map(|p| (p.field, p.message)).collect()
        }
        Err(other) => panic!("expected AppError::Fields, got {other:?}"),
        Ok(outcome) => panic!("expected a refusal, got {outcome:?}"),
    }
}

#[test]
fn comments_and_layout_are_kept_byte_for_byte_outside_the_changed_values() {
    let (_dir, path) = job_file(template());
    let outcome = reconfigure_file(
        &path,
        Section::Source,
        &form(&[
            ("host", text("imap.old.example")),
            ("security", text("starttls")),
            ("port", text("1143")),
            (
                "admin_password",
                FieldValue::Secret(SecretRef::File("old.secret".into())),
            ),
        ]),
    )
    .expect("a valid change is written");
    assert_eq!(
        outcome.changed,
        [
            "source.host",
            "source.port",
            "source.security",
            "source.admin_password"
        ]
    );
    let expected = template()
        .replacen(
            "host = \"mail.old.example\"",
            "host = \"imap.old.example\"",
            1,
        )
        .replacen(
            "security = \"tls\"                         # tls",
            "security = \"starttls\"                         # tls",
            1,
        )
        .replacen(
            "admin_password = { env = \"SOURCE_ADMIN_PASSWORD\" }",
            "admin_password = { file = \"old.secret\" }",
            1,
        )
        .replacen(
            "# at once to this server, across all mailboxes\n",
            "# at once to this server, across all mailboxes\nport = 1143\n",
            1,
        );
    assert_eq!(read(&path), expected);
    let imap = source_imap(&path);
    assert_eq!((imap.host.as_str(), imap.port), ("imap.old.example", 1143));
}

#[test]
fn a_bad_port_is_refused_at_its_field_and_the_file_is_unchanged() {
    let (_dir, path) = job_file(template());
    for port in ["abc", "70000", "0", "-1"] {
        let problems = refused(&path, Section::Source, &[("port", text(port))]);
        assert_eq!(problems.len(), 1, "{port}: {problems:?}");
        assert_eq!(problems[0].0.as_deref(), Some("source.port"), "{port}");
        assert_eq!(read(&path), template(), "{port}");
    }
    let problems = refused(&path, Section::Source, &[("port", text("0"))]);
    assert_eq!(problems[0].1, "Must be from 1 to 65535");
}

#[test]
fn an_unknown_security_is_refused_at_its_field() {
    let (_dir, path) = job_file(template());
    let problems = refused(&path, Section::Source, &[("security", text("ssl"))]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0.as_deref(), Some("source.security"));
    assert!(problems[0].1.contains("starttls"), "{}", problems[0].1);
    assert_eq!(read(&path), template());
}

#[test]
fn a_password_in_clear_is_refused_and_never_echoed() {
    let (_dir, path) = job_file(template());
    let problems = refused(
        &path,
        Section::Source,
        &[("admin_password", text("hunter2"))],
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0.as_deref(), Some("source.admin_password"));
    assert!(!problems[0].1.contains("hunter2"), "{}", problems[0].1);
    assert_eq!(read(&path), template());
}

#[test]
fn every_bad_field_is_named_at_once() {
    let (_dir, path) = job_file(template());
    let problems = refused(
        &path,
        Section::Source,
        &[
            ("port", text("abc")),
            ("security", text("ssl")),
            ("host", text("mail.old.example:993")),
        ],
    );
    let fields: Vec<_> = problems.iter().filter_map(|p| p.0.as_deref()).collect();
    assert_eq!(
        fields,
        ["source.host", "source.port", "source.security"],
        "{problems:?}"
    );
    assert_eq!(read(&path), template());
}

#[test]
fn a_valid_change_is_written_and_load_sees_it() {
    let (dir, path) = job_file(template());
    reconfigure_file(
        &path,
        Section::Source,
        &form(&[
            ("security", text("plain")),
            ("allow_plain", FieldValue::Flag(true)),
        ]),
    )
    .expect("written");
    let imap = source_imap(&path);
    assert_eq!(imap.security, crate::job::Security::Plain);
    assert_eq!(imap.port, 143, "the default port follows the security");
    // No temporary file is left beside the job.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["job.toml"]);
}

const WITH_CA: &str = "name = \"t\"\n\n[source]\nkind = \"imap\"\nhost = \"mail.example\"\n\
    # The old server's own CA.\ntls_ca = \"ca.pem\"   # issued in 2019\nauth = \"admin\"\n\
    admin_user = \"admin\"\nadmin_password = { env = \"PW\" }\n\n\
    [target]\nkind = \"imap\"\nhost = \"new.example\"\nauth = \"admin\"\nadmin_user = \"admin\"\n\
    admin_password = { env = \"PW\" }\n# The new server's CA.\ntls_ca = \"new-ca.pem\"\n\n\
    [migration]\nconcurrency = 2\n";

#[test]
fn an_emptied_field_removes_its_key_and_keeps_the_comments_above_it() {
    let (_dir, path) = job_file(WITH_CA);
    reconfigure_file(&path, Section::Source, &form(&[("tls_ca", text(""))])).expect("written");
    assert_eq!(
        read(&path),
        WITH_CA.replace("tls_ca = \"ca.pem\"   # issued in 2019\n", "")
    );
    assert_eq!(source_imap(&path).tls_ca, None);
    // The last key of its table: its comment stays before the next table.
    reconfigure_file(
        &path,
        Section::Target,
        &form(&[("tls_ca", FieldValue::Empty)]),
    )
    .expect("written");
    assert!(
        read(&path).ends_with("admin_password = { env = \"PW\" }\n# The new server's CA.\n\n[migration]\nconcurrency = 2\n"),
        "{}",
        read(&path)
    );
}

#[test]
fn sending_the_shown_values_back_changes_nothing() {
    let (_dir, path) = job_file(template());
    let view = connections_in(&path).expect("view");
    for section in &view.sections {
        let values = shown(section);
        let outcome = reconfigure_file(&path, section.section, &values).expect("no change");
        assert!(outcome.changed.is_empty(), "{outcome:?}");
    }
    assert_eq!(read(&path), template());
}

#[test]
fn secrets_are_shown_as_their_reference_only() {
    let (_dir, path) = job_file(template());
    let view = serde_json::to_value(connections_in(&path).expect("view")).expect("json");
    let source = &view["sections"][0];
    assert_eq!(source["section"], "source");
    assert_eq!(source["kind"], "imap");
    let value = |name: &str| {
        source["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .map(|f| f["value"].clone())
            .unwrap_or_else(|| panic!("no field {name}"))
    };
    assert_eq!(
        value("admin_password"),
        serde_json::json!({"env": "SOURCE_ADMIN_PASSWORD"})
    );
    assert_eq!(value("host"), "mail.old.example");
    assert_eq!(value("port"), serde_json::Value::Null);
    assert_eq!(view["sections"][1]["present"], false);
}

#[test]
fn keys_the_form_does_not_know_are_refused_and_untouched() {
    let (_dir, path) = job_file(template());
    let problems = refused(
        &path,
        Section::Source,
        &[("kind", text("maildir")), ("host", text("x.example"))],
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0, None);
    assert!(problems[0].1.contains("source.kind"), "{}", problems[0].1);
    assert_eq!(read(&path), template());
}

#[test]
fn a_directory_form_adds_the_directory_after_its_connection() {
    let (_dir, path) = job_file(template());
    // Half a directory is refused, with every missing key named.
    let problems = refused(
        &path,
        Section::TargetDirectory,
        &[("url", text("ldap://dc.new.example"))],
    );
    let fields: Vec<_> = problems.iter().filter_map(|p| p.0.as_deref()).collect();
    assert_eq!(
        fields,
        [
            "target.directory.bind_dn",
            "target.directory.bind_password",
            "target.directory.base"
        ],
        "{problems:?}"
    );
    assert_eq!(read(&path), template());
    reconfigure_file(
        &path,
        Section::TargetDirectory,
        &form(&[
            ("url", text("ldap://dc.new.example")),
            ("bind_dn", text("cn=reader,dc=new,dc=example")),
            (
                "bind_password",
                FieldValue::Secret(SecretRef::Env("NEW_LDAP".into())),
            ),
            ("base", text("ou=people,dc=new,dc=example")),
        ]),
    )
    .expect("written");
    let written = read(&path);
    assert!(
        written.contains(
            "max_connections = 10\n\n[target.directory]\nkind = \"ldap\"\n\
             url = \"ldap://dc.new.example\"\nbind_dn = \"cn=reader,dc=new,dc=example\"\n\
             bind_password = { env = \"NEW_LDAP\" }\nbase = \"ou=people,dc=new,dc=example\"\n\n\
             [mailboxes]\n"
        ),
        "{written}"
    );
    let job = Job::load(&path).expect("loads");
    let directory = job
        .target
        .directory
        .and_then(|d| d.as_ldap().cloned())
        .expect("a target directory");
    assert_eq!(directory.base, "ou=people,dc=new,dc=example");
}

#[test]
fn tls_verify_is_written_as_a_boolean_and_its_default_removes_it() {
    let (_dir, path) = job_file(template());
    reconfigure_file(
        &path,
        Section::Source,
        &form(&[("tls_verify", text("false"))]),
    )
    .expect("written");
    assert!(
        read(&path).contains("tls_verify = false\n"),
        "{}",
        read(&path)
    );
    assert!(!source_imap(&path).tls_verify);
    let view = serde_json::to_value(connections_in(&path).expect("view")).expect("json");
    let shown = view["sections"][0]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "tls_verify")
        .cloned()
        .unwrap();
    assert_eq!(shown["value"], false);
    assert_eq!(shown["input"], "boolean");
    // The default (an empty choice) takes the key out again: the file is as it was.
    reconfigure_file(&path, Section::Source, &form(&[("tls_verify", text(""))])).expect("written");
    assert_eq!(read(&path), template());
    assert_eq!(
        refused(&path, Section::Source, &[("tls_verify", text("maybe"))]),
        [(
            Some("source.tls_verify".to_owned()),
            "Expected true or false".to_owned()
        )]
    );
}

#[test]
fn max_connections_and_the_login_form_are_validated_as_the_job_file_is() {
    let (_dir, path) = job_file(template());
    let problems = refused(&path, Section::Source, &[("max_connections", text("many"))]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0.as_deref(), Some("source.max_connections"));
    // Per-mailbox passwords with the admin's keys still there: the admin keys are named.
    let problems = refused(&path, Section::Source, &[("auth", text("per-mailbox"))]);
    assert!(
        problems
            .iter()
            .any(|p| p.0.as_deref() == Some("source.admin_user")),
        "{problems:?}"
    );
    assert_eq!(read(&path), template());
    reconfigure_file(
        &path,
        Section::Source,
        &form(&[
            ("max_connections", text("3")),
            ("admin_login", text("master-separator")),
            ("master_separator", text("%")),
        ]),
    )
    .expect("written");
    let imap = source_imap(&path);
    assert_eq!(imap.max_connections, 3);
    assert_eq!(imap.max_connections_per_mailbox, None);
    assert!(
        matches!(
            &imap.auth,
            crate::job::Auth::Admin {
                login: crate::job::AdminLogin::MasterSeparator(sep),
                ..
            } if sep == "%"
        ),
        "{:?}",
        imap.auth
    );
}

#[test]
fn max_connections_per_mailbox_is_set_checked_and_cleared_by_the_form() {
    let (_dir, path) = job_file(template());
    let problems = refused(
        &path,
        Section::Target,
        &[("max_connections_per_mailbox", text("0"))],
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(
        problems[0].0.as_deref(),
        Some("target.max_connections_per_mailbox")
    );
    assert!(problems[0].1.contains("at least 1"), "{problems:?}");
    assert_eq!(read(&path), template());
    reconfigure_file(
        &path,
        Section::Target,
        &form(&[("max_connections_per_mailbox", text("2"))]),
    )
    .expect("written");
    assert!(read(&path).contains("max_connections_per_mailbox = 2"));
    let job = Job::load(&path).expect("valid");
    let ConnectionKind::Imap(target) = &job.target.kind else {
        panic!("an IMAP target")
    };
    assert_eq!(target.max_connections_per_mailbox, Some(2));
    // Emptied, the key goes: no cap of its own.
    reconfigure_file(
        &path,
        Section::Target,
        &form(&[("max_connections_per_mailbox", FieldValue::Empty)]),
    )
    .expect("written");
    assert!(!read(&path).contains("max_connections_per_mailbox"));
}

#[test]
fn the_creation_form_adds_target_create_with_its_list_of_object_classes() {
    let (_dir, path) = job_file(template());
    let create = [
        ("base", text("ou=people,dc=new,dc=example")),
        ("domain", text("new.example")),
        ("object_classes", text("inetOrgPerson, mailUser")),
        (
            "initial_password",
            FieldValue::Secret(SecretRef::Env("NEW_INITIAL".into())),
        ),
    ];
    // Creation writes to the target directory: without one, the form is refused.
    let problems = refused(&path, Section::TargetCreate, &create);
    assert!(
        problems
            .iter()
            .any(|p| p.0.is_none() && p.1.contains("add [target.directory]")),
        "{problems:?}"
    );
    assert_eq!(read(&path), template());
    reconfigure_file(
        &path,
        Section::TargetDirectory,
        &form(&[
            ("url", text("ldap://dc.new.example")),
            ("bind_dn", text("cn=reader,dc=new,dc=example")),
            (
                "bind_password",
                FieldValue::Secret(SecretRef::Env("NEW_LDAP".into())),
            ),
            ("base", text("ou=people,dc=new,dc=example")),
        ]),
    )
    .expect("directory written");
    // A bad domain is refused at its field.
    let mut bad = create.to_vec();
    bad[1] = ("domain", text("not a domain"));
    let problems = refused(&path, Section::TargetCreate, &bad);
    assert_eq!(
        problems[0].0.as_deref(),
        Some("target.create.domain"),
        "{problems:?}"
    );
    reconfigure_file(&path, Section::TargetCreate, &form(&create)).expect("written");
    let written = read(&path);
    assert!(
        written.contains(
            "[target.create]\nbase = \"ou=people,dc=new,dc=example\"\ndomain = \"new.example\"\n\
             object_classes = [\"inetOrgPerson\", \"mailUser\"]\n\
             initial_password = { env = \"NEW_INITIAL\" }\n"
        ),
        "{written}"
    );
    let job = Job::load(&path).expect("loads");
    let created = job.target.create.expect("[target.create]");
    assert_eq!(created.object_classes, ["inetOrgPerson", "mailUser"]);
    // Shown back as the list it is; sending it back changes nothing.
    let section = section_view(&path, Section::TargetCreate);
    assert!(section.present);
    let values = shown(&section);
    assert_eq!(
        values["object_classes"],
        FieldValue::List(vec!["inetOrgPerson".into(), "mailUser".into()])
    );
    let again = reconfigure_file(&path, Section::TargetCreate, &values).expect("no change");
    assert!(again.changed.is_empty(), "{again:?}");
    assert_eq!(read(&path), written);
}

#[test]
fn a_pin_written_as_one_string_is_shown_and_kept_as_it_is() {
    let pin = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";
    let job = template().replacen(
        "host = \"mail.old.example\"\n",
        &format!("host = \"mail.old.example\"\ntls_pin_sha256 = \"{pin}\"\n"),
        1,
    );
    let (_dir, path) = job_file(&job);
    let values = shown(&section_view(&path, Section::Source));
    assert_eq!(values["tls_pin_sha256"], text(pin));
    let outcome = reconfigure_file(&path, Section::Source, &values).expect("no change");
    assert!(outcome.changed.is_empty(), "{outcome:?}");
    assert_eq!(read(&path), job);
    // Two pins are written as a list.
    reconfigure_file(
        &path,
        Section::Source,
        &form(&[("tls_pin_sha256", text(&format!("{pin}, {pin}")))]),
    )
    .expect("written");
    assert!(read(&path).contains(&format!("tls_pin_sha256 = [\"{pin}\", \"{pin}\"]\n")));
}

#[test]
fn an_oauth2_form_writes_the_oauth2_table_and_the_login_becomes_oauth2() {
    let (_dir, path) = job_file(template());
    // A secret in clear is refused at its field, never written.
    let problems = refused(
        &path,
        Section::TargetOAuth2,
        &[("client_secret", text("s3cret"))],
    );
    assert_eq!(
        problems[0].0.as_deref(),
        Some("target.oauth2.client_secret"),
        "{problems:?}"
    );
    assert!(
        !problems.iter().any(|p| p.1.contains("s3cret")),
        "{problems:?}"
    );
    assert_eq!(read(&path), template());
    // Half a table is refused with its missing keys named.
    let problems = refused(
        &path,
        Section::TargetOAuth2,
        &[("flow", text("client-credentials"))],
    );
    assert!(
        problems
            .iter()
            .any(|p| p.0.as_deref() == Some("target.oauth2.tenant")),
        "{problems:?}"
    );
    assert_eq!(read(&path), template());
    // A whole one is written, and the target's login becomes OAuth2 in the same edit.
    let outcome = reconfigure_file(
        &path,
        Section::TargetOAuth2,
        &form(&[
            ("flow", text("client-credentials")),
            ("tenant", text("contoso.onmicrosoft.com")),
            ("client_id", text("00000000-1111-2222-3333-444444444444")),
            (
                "client_secret",
                FieldValue::Secret(SecretRef::Env("ENTRA_SECRET".into())),
            ),
        ]),
    )
    .expect("written");
    assert!(!outcome.changed.is_empty());
    let job = Job::load(&path).expect("loads");
    let ConnectionKind::Imap(imap) = &job.target.kind else {
        panic!("imap target")
    };
    assert!(
        matches!(&imap.auth, crate::job::Auth::OAuth2(_)),
        "{:?}",
        imap.auth
    );
    let written = read(&path);
    assert!(written.contains("[target.oauth2]\n"), "{written}");
    assert!(!written.contains("TARGET_ADMIN_PASSWORD"), "{written}");
    let section = section_view(&path, Section::TargetOAuth2);
    assert!(section.present);
    assert_eq!(section.kind.as_deref(), Some("oauth2"));
}

/// A job whose target is Microsoft 365: Entra ID through Graph with its own application, and
/// creation there.
const GRAPH_JOB: &str = "name = \"to-m365\"\n\n[source]\nkind = \"imap\"\nhost = \"mail.old.example\"\n\
    auth = \"admin\"\nadmin_user = \"admin\"\nadmin_password = { env = \"PW\" }\n\n\
    [target]\nkind = \"imap\"\nhost = \"outlook.office365.com\"\nauth = \"admin\"\n\
    admin_user = \"admin\"\nadmin_password = { env = \"PW\" }\n\n\
    # Entra ID, read through Microsoft Graph\n[target.directory]\nkind = \"graph\"\n\n\
    [target.directory.oauth2]\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"app\"\n\
    client_secret = { env = \"GRAPH_SECRET\" }\n\n\
    [target.create]\ndomain = \"contoso.com\"\nlicense_sku = \"6fd2c87f-b296-42f0-b197-1e91e994b900\"\n\
    usage_location = \"CH\"\ninitial_password = { env = \"FIRST\" }\n";

fn names(section: &SectionView) -> Vec<&str> {
    section.fields.iter().map(|f| f.name).collect()
}

#[test]
fn a_graph_directory_has_graphs_keys_and_its_applications_form() {
    let (_dir, path) = job_file(GRAPH_JOB);
    let directory = section_view(&path, Section::TargetDirectory);
    assert_eq!(directory.kind.as_deref(), Some("graph"));
    assert_eq!(
        names(&directory),
        ["graph_url", "tls_ca", "filter", "allow_plain"]
    );
    let app = section_view(&path, Section::TargetDirectoryOAuth2);
    assert!(app.present);
    assert_eq!(app.kind.as_deref(), Some("graph"));
    for imap_only in ["mechanism", "key_file"] {
        assert!(!names(&app).contains(&imap_only), "{:?}", names(&app));
    }
    let flow = app.fields.iter().find(|f| f.name == "flow").unwrap();
    assert_eq!(flow.choices, ["client-credentials"]);
    // The IMAP login's own application keeps both flows, the key file and the mechanism.
    let login = section_view(&path, Section::TargetOAuth2);
    assert!(names(&login).contains(&"mechanism") && names(&login).contains(&"key_file"));
    assert_eq!(
        shown(&app).get("client_secret"),
        Some(&FieldValue::Secret(SecretRef::Env("GRAPH_SECRET".into())))
    );
    let create = section_view(&path, Section::TargetCreate);
    assert_eq!(
        names(&create),
        [
            "domain",
            "license_sku",
            "usage_location",
            "initial_password",
            "mailbox_wait_seconds"
        ]
    );
    // The source's directory is LDAP (none yet): its form is LDAP's, and it has no
    // application form.
    assert_eq!(
        section_view(&path, Section::SourceDirectory).fields[1].name,
        "url"
    );
    let sections: Vec<Section> = connections_in(&path)
        .unwrap()
        .sections
        .iter()
        .map(|s| s.section)
        .collect();
    assert!(!sections.contains(&Section::SourceDirectoryOAuth2));
    // Sent back as shown, nothing changes.
    for section in [
        Section::TargetDirectory,
        Section::TargetDirectoryOAuth2,
        Section::TargetCreate,
    ] {
        let shown = shown(&section_view(&path, section));
        let outcome = reconfigure_file(&path, section, &shown).expect("nothing to change");
        assert!(outcome.changed.is_empty(), "{section:?}: {outcome:?}");
    }
    assert_eq!(read(&path), GRAPH_JOB);
}

#[test]
fn a_graph_directory_form_is_validated_as_the_job_file_is_and_writes_in_place() {
    let (_dir, path) = job_file(GRAPH_JOB);
    // An LDAP filter and an LDAP key are refused in the job file's words; nothing is written.
    let problems = refused(
        &path,
        Section::TargetDirectory,
        &[("filter", text("(objectClass=user)"))],
    );
    assert_eq!(
        problems,
        [(
            Some("target.directory.filter".to_owned()),
            "An OData $filter such as accountEnabled eq true, not an LDAP filter".to_owned()
        )]
    );
    let problems = refused(
        &path,
        Section::TargetDirectory,
        &[("base", text("ou=people"))],
    );
    assert_eq!(
        problems,
        [(
            None,
            "Not a setting this form can change: target.directory.base".to_owned()
        )]
    );
    let problems = refused(
        &path,
        Section::TargetDirectory,
        &[("graph_url", text("http://graph.example/v1.0"))],
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0.as_deref(), Some("target.directory.graph_url"));
    assert!(problems[0].1.contains("unencrypted"), "{problems:?}");
    assert_eq!(read(&path), GRAPH_JOB);

    let filter = "accountEnabled eq true and department eq 'Sales'";
    let outcome = reconfigure_file(
        &path,
        Section::TargetDirectory,
        &form(&[("filter", text(filter))]),
    )
    .expect("written");
    assert_eq!(outcome.changed, ["target.directory.filter"]);
    let written = read(&path);
    assert!(
        written.contains(
            "# Entra ID, read through Microsoft Graph\n[target.directory]\nkind = \"graph\"\n\
             filter = \"accountEnabled eq true and department eq 'Sales'\"\n\n\
             [target.directory.oauth2]\n"
        ),
        "{written}"
    );
    let job = Job::load(&path).expect("loads");
    let graph = job
        .target
        .directory
        .as_ref()
        .and_then(|d| d.as_graph())
        .expect("graph");
    assert_eq!(graph.filter.as_deref(), Some(filter));
}

#[test]
fn a_graph_directorys_application_is_written_in_its_own_table_and_leaves_the_login_alone() {
    let (_dir, path) = job_file(GRAPH_JOB);
    let problems = refused(
        &path,
        Section::TargetDirectoryOAuth2,
        &[("client_secret", text("s3cr3t-in-clear"))],
    );
    assert_eq!(
        problems[0].0.as_deref(),
        Some("target.directory.oauth2.client_secret")
    );
    assert!(!format!("{problems:?}").contains("s3cr3t"), "{problems:?}");
    assert!(
        refused(
            &path,
            Section::TargetDirectoryOAuth2,
            &[("mechanism", text("xoauth2"))]
        )[0]
        .1
        .contains("Not a setting this form can change")
    );
    assert_eq!(read(&path), GRAPH_JOB);
    reconfigure_file(
        &path,
        Section::TargetDirectoryOAuth2,
        &form(&[
            ("client_id", text("11111111-2222-3333-4444-555555555555")),
            (
                "client_secret",
                FieldValue::Secret(SecretRef::File("graph.secret".into())),
            ),
        ]),
    )
    .expect("written");
    let written = read(&path);
    assert!(
        written.contains(
            "[target.directory.oauth2]\ntenant = \"contoso.onmicrosoft.com\"\n\
             client_id = \"11111111-2222-3333-4444-555555555555\"\n\
             client_secret = { file = \"graph.secret\" }\n"
        ),
        "{written}"
    );
    // Unlike [target.oauth2]'s form, this one is not a choice of the IMAP login.
    assert!(written.contains("[target]\nkind = \"imap\"\nhost = \"outlook.office365.com\"\nauth = \"admin\"\nadmin_user = \"admin\"\n"), "{written}");
    Job::load(&path).expect("loads");
}

#[test]
fn creation_in_entra_id_has_its_licence_keys_and_refuses_ldaps() {
    let (_dir, path) = job_file(GRAPH_JOB);
    let problems = refused(
        &path,
        Section::TargetCreate,
        &[
            ("usage_location", text("Switzerland")),
            ("mailbox_wait_seconds", text("soon")),
        ],
    );
    let fields: Vec<_> = problems.iter().filter_map(|p| p.0.as_deref()).collect();
    assert_eq!(
        fields,
        [
            "target.create.usage_location",
            "target.create.mailbox_wait_seconds"
        ],
        "{problems:?}"
    );
    let problems = refused(
        &path,
        Section::TargetCreate,
        &[("object_classes", text("inetOrgPerson"))],
    );
    assert!(problems[0].1.contains("Not a setting"), "{problems:?}");
    assert_eq!(read(&path), GRAPH_JOB);
    reconfigure_file(
        &path,
        Section::TargetCreate,
        &form(&[("mailbox_wait_seconds", text("120"))]),
    )
    .expect("written");
    assert!(
        read(&path)
            .ends_with("initial_password = { env = \"FIRST\" }\nmailbox_wait_seconds = 120\n")
    );
    let job = Job::load(&path).expect("loads");
    let wait = job
        .target
        .directory
        .as_ref()
        .and_then(|d| d.as_graph())
        .and_then(|g| g.create.as_ref())
        .map(|c| c.mailbox_wait_seconds);
    assert_eq!(wait, Some(120));
}
