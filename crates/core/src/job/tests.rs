//! Tests of job loading, validation, secrets and dates.

use super::secret::env_secret;
use super::*;

/// Writes `text` as `job.toml` in a fresh folder and loads it.
fn load(text: &str) -> (tempfile::TempDir, Result<Job, JobError>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = real(&dir).join("job.toml");
    std::fs::write(&path, text).expect("write job");
    let job = Job::load(&path);
    (dir, job)
}

/// The tempdir's canonical path, as [`Job::load`] reports paths.
fn real(dir: &tempfile::TempDir) -> PathBuf {
    std::fs::canonicalize(dir.path()).expect("canonical tempdir")
}

fn load_ok(text: &str) -> (tempfile::TempDir, Job) {
    let (dir, job) = load(text);
    match job {
        Ok(job) => (dir, job),
        Err(error) => panic!("expected a valid job, got: {error}"),
    }
}

fn problems(text: &str) -> Vec<JobProblem> {
    match load(text).1 {
        Ok(job) => panic!("expected an invalid job, got {job:?}"),
        Err(JobError::Invalid { problems, .. }) => problems,
        Err(other) => panic!("expected JobError::Invalid, got {other:?}"),
    }
}

/// The problems rendered as text, one per problem.
fn problem_texts(text: &str) -> Vec<String> {
    problems(text).iter().map(ToString::to_string).collect()
}

const IMAP: &str = "kind = \"imap\"\nhost = \"mail.example\"\nauth = \"admin\"\n\
                    admin_user = \"admin\"\nadmin_password = { env = \"PW\" }\n";

/// A valid job with the given extra source keys and extra trailing text.
fn job_with(source_extra: &str, rest: &str) -> String {
    format!("name = \"t\"\n[source]\n{IMAP}{source_extra}\n[target]\n{IMAP}\n{rest}",)
}

fn imap(connection: &Connection) -> &ImapSettings {
    match &connection.kind {
        ConnectionKind::Imap(settings) => settings,
        ConnectionKind::Maildir { .. } => panic!("expected imap"),
    }
}

#[test]
fn template_loads() {
    let (dir, job) = load_ok(template());
    assert_eq!(job.name, "my-migration");
    assert_eq!(job.mode, Mode::Cutover);
    assert_eq!(job.state, StateLocation::Sqlite(real(&dir).join("job.db")));
    assert_eq!(job.mailboxes_csv, Some(real(&dir).join("mailboxes.csv")));
    let source = imap(&job.source);
    assert_eq!(source.host, "mail.old.example");
    assert_eq!(
        source.auth,
        Auth::Admin {
            user: "migration-admin".into(),
            password: Secret::Env("SOURCE_ADMIN_PASSWORD".into()),
            login: AdminLogin::SaslAuthzid,
        }
    );
    assert_eq!(imap(&job.target).host, "mail.new.example");
    assert_eq!(job.migration, MigrationSettings::default());
}

#[test]
fn minimal_job_gets_defaults() {
    let (dir, job) = load_ok(&job_with("", ""));
    assert_eq!(job.path, real(&dir).join("job.toml"));
    assert_eq!(job.mode, Mode::Cutover);
    assert_eq!(job.state, StateLocation::Sqlite(real(&dir).join("job.db")));
    assert_eq!(job.mailboxes_csv, None);
    let source = imap(&job.source);
    assert_eq!(source.port, 993);
    assert_eq!(source.security, Security::Tls);
    assert!(source.tls_verify);
    assert_eq!(source.tls_ca, None);
    assert_eq!(source.max_connections, 10);
    let migration = &job.migration;
    assert_eq!(migration.concurrency, 4);
    assert_eq!(migration.include_folders, vec!["*".to_owned()]);
    assert!(migration.exclude_folders.is_empty());
    assert!(migration.skip_deleted);
    assert_eq!(migration.since, None);
    assert!(migration.folder_map.is_empty());
}

#[test]
fn default_ports_follow_security() {
    let (_dir, job) = load_ok(&job_with("security = \"starttls\"", ""));
    assert_eq!(imap(&job.source).port, 143);
    assert_eq!(imap(&job.source).security, Security::StartTls);
    let (_dir, job) = load_ok(&job_with("security = \"plain\"\nallow_plain = true", ""));
    assert_eq!(imap(&job.source).port, 143);
    assert_eq!(imap(&job.source).security, Security::Plain);
    let (_dir, job) = load_ok(&job_with("security = \"tls\"", ""));
    assert_eq!(imap(&job.source).port, 993);
    let (_dir, job) = load_ok(&job_with("security = \"tls\"\nport = 10993", ""));
    assert_eq!(imap(&job.source).port, 10993);
}

#[test]
fn plain_requires_allow_plain() {
    let texts = problem_texts(&job_with("security = \"plain\"", ""));
    assert_eq!(
        texts,
        vec![
            "line 8, column 12: source.security: \"plain\" sends passwords and mail \
             unencrypted; add allow_plain = true to confirm (e.g. for a server on the \
             loopback interface)"
        ]
    );
    let texts = problem_texts(&job_with("security = \"plain\"\nallow_plain = false", ""));
    assert_eq!(texts.len(), 1);
    assert!(texts[0].contains("add allow_plain = true"));
}

#[test]
fn plain_rejects_tls_keys() {
    let texts = problem_texts(&job_with(
        "security = \"plain\"\nallow_plain = true\ntls_ca = \"ca.pem\"\ntls_verify = true",
        "",
    ));
    assert_eq!(
        texts,
        vec![
            "line 10, column 10: source.tls_ca: not used with security = \"plain\"",
            "line 11, column 14: source.tls_verify: not used with security = \"plain\"",
        ]
    );
}

#[test]
fn tls_verify_can_be_turned_off_explicitly() {
    let (_dir, job) = load_ok(&job_with("tls_verify = false", ""));
    assert!(!imap(&job.source).tls_verify);
    assert!(imap(&job.target).tls_verify);
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let texts = problem_texts(&format!("colour = \"blue\"\n{}", job_with("", "")));
    assert_eq!(
        texts.len(),
        1,
        "serde stops at the first unknown key: {texts:?}"
    );
    assert!(
        texts[0].starts_with(
            "line 1, column 1: colour: unknown field `colour`, expected one of `name`"
        ),
        "{}",
        texts[0]
    );

    let texts = problem_texts(&job_with("prot = 993", ""));
    assert!(
        texts[0].starts_with("line 8, column 1: source.prot: unknown field `prot`"),
        "{}",
        texts[0]
    );

    let texts = problem_texts(&job_with("", "[migration]\nconcurency = 2"));
    assert!(
        texts[0].starts_with("line 17, column 1: migration.concurency: unknown field `concurency`"),
        "{}",
        texts[0]
    );
}

#[test]
fn unknown_section_is_rejected_by_name() {
    let texts = problem_texts(&job_with("", "[source.extra]\nx = 1"));
    assert!(
        texts[0].starts_with("line 16, column 9: source.extra: unknown field `extra`"),
        "{}",
        texts[0]
    );
}

#[test]
fn syntax_error_has_line_and_column() {
    let error = load("name = \"t\"\n[source]\nhost = \"unterminated\n")
        .1
        .unwrap_err();
    let JobError::Invalid { file, problems } = &error else {
        panic!("{error:?}");
    };
    assert!(file.ends_with("job.toml"));
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].line, Some(3));
    assert!(problems[0].column.is_some());
    let text = error.to_string();
    assert!(text.starts_with("invalid job file "), "{text}");
    assert!(text.contains("job.toml:\n  line 3, column "), "{text}");
}

#[test]
fn wrong_type_names_key_in_plain_words() {
    let texts = problem_texts(&job_with("port = 99999", ""));
    assert_eq!(
        texts,
        vec![
            "line 8, column 8: source.port: invalid value: integer `99999`, expected a \
             whole number from 0 to 65535"
        ]
    );
    let texts = problem_texts(&job_with("", "[migration]\nskip_deleted = \"yes\""));
    assert_eq!(
        texts,
        vec![
            "line 17, column 16: migration.skip_deleted: invalid type: string \"yes\", \
             expected true or false"
        ]
    );
}

#[test]
fn unknown_enum_value_lists_choices() {
    let texts = problem_texts(&job_with("security = \"ssl\"", ""));
    assert_eq!(
        texts,
        vec![
            "line 8, column 12: source.security: unknown variant `ssl`, expected one of \
             `tls`, `starttls`, `plain`"
        ]
    );
}

#[test]
fn secret_in_clear_is_rejected_without_echoing_it() {
    let text = "name = \"t\"\n[source]\nkind = \"imap\"\nhost = \"h\"\nauth = \"admin\"\n\
                admin_user = \"a\"\nadmin_password = \"hunter2\"\n";
    let error = load(text).1.unwrap_err();
    let message = error.to_string();
    assert!(!message.contains("hunter2"), "{message}");
    let JobError::Invalid { problems, .. } = error else {
        panic!("{error:?}");
    };
    assert_eq!(
        problems[0].to_string(),
        "line 7, column 18: source.admin_password: a secret must be written as \
         { env = \"VARIABLE\" } or { file = \"path\" }; secrets are never written in the \
         job file"
    );

    let text = text.replace("\"hunter2\"", "123456");
    let message = load(&text).1.unwrap_err().to_string();
    assert!(!message.contains("123456"), "{message}");
    assert!(message.contains("source.admin_password: a secret must be written as"));
}

#[test]
fn secret_with_both_env_and_file_is_rejected() {
    let text =
        job_with("", "").replacen("{ env = \"PW\" }", "{ env = \"PW\", file = \"pw.txt\" }", 1);
    let texts = problem_texts(&text);
    assert_eq!(texts.len(), 1);
    assert!(
        texts[0].ends_with(
            "source.admin_password: a secret is either { env = \"VARIABLE\" } or \
             { file = \"path\" }, not both"
        ),
        "{}",
        texts[0]
    );
    let text = job_with("", "").replacen("{ env = \"PW\" }", "{ value = \"x\" }", 1);
    assert!(problem_texts(&text)[0].contains("source.admin_password: a secret must be"));
    let text = job_with("", "").replacen("{ env = \"PW\" }", "{}", 1);
    assert!(problem_texts(&text)[0].contains("source.admin_password: a secret must be"));
    let text = job_with("", "").replacen("{ env = \"PW\" }", "{ env = \"\" }", 1);
    assert!(
        problem_texts(&text)[0]
            .ends_with("source.admin_password: env must name an environment variable")
    );
}

#[test]
fn secret_from_env_is_revealed() {
    // The environment is shared by parallel tests and changing it is unsafe: read a variable
    // that is set anyway, and check the other cases on `env_secret` directly.
    if let Ok(path) = std::env::var("PATH") {
        assert_eq!(Secret::Env("PATH".into()).reveal().unwrap(), path);
    }
    let missing = Secret::Env("MAILFERRY_JOB_TEST_SECRET_UNSET".into());
    assert_eq!(
        missing.reveal().unwrap_err().to_string(),
        "secret environment variable MAILFERRY_JOB_TEST_SECRET_UNSET is not set"
    );
    assert_eq!(env_secret("PW", Ok("s3cret".into())).unwrap(), "s3cret");
    assert_eq!(
        env_secret("PW", Ok(String::new())).unwrap_err().to_string(),
        "secret environment variable PW is empty"
    );
    let not_unicode = std::env::VarError::NotUnicode(std::ffi::OsString::new());
    assert_eq!(
        env_secret("PW", Err(not_unicode)).unwrap_err().to_string(),
        "secret environment variable PW is not valid UTF-8"
    );
}

#[test]
fn secret_file_is_relative_to_job_file_and_trimmed_of_one_newline() {
    let text = job_with("", "").replacen("{ env = \"PW\" }", "{ file = \"pw.txt\" }", 1);
    let (dir, job) = load_ok(&text);
    let Auth::Admin { password, .. } = &imap(&job.source).auth else {
        panic!("admin auth expected");
    };
    let file = real(&dir).join("pw.txt");
    assert_eq!(password, &Secret::File(file.clone()));

    let error = password.reveal().unwrap_err();
    assert!(matches!(error, JobError::SecretFile { .. }));
    assert!(
        error
            .to_string()
            .starts_with(&format!("cannot read secret file {}: ", file.display())),
        "{error}"
    );

    std::fs::write(&file, "pass word\n\n").unwrap();
    assert_eq!(password.reveal().unwrap(), "pass word\n");
    std::fs::write(&file, "pw\r\n").unwrap();
    assert_eq!(password.reveal().unwrap(), "pw");
    std::fs::write(&file, "pw").unwrap();
    assert_eq!(password.reveal().unwrap(), "pw");
    std::fs::write(&file, "\n").unwrap();
    assert_eq!(
        password.reveal().unwrap_err().to_string(),
        format!("secret file {} is empty", file.display())
    );
}

#[test]
fn secret_debug_shows_only_where_it_is() {
    let debug = format!("{:?}", Secret::Env("PW".into()));
    assert_eq!(debug, "Env(\"PW\")");
}

#[test]
fn relative_paths_resolve_against_job_folder() {
    let text = format!(
        "state = \"sqlite://./state/x.db\"\n{}",
        job_with(
            "tls_ca = \"certs/ca.pem\"",
            "[mailboxes]\ncsv = \"boxes.csv\""
        )
    );
    let (dir, job) = load_ok(&text);
    let dir = real(&dir);
    assert_eq!(
        job.state,
        StateLocation::Sqlite(dir.join("state").join("x.db"))
    );
    assert_eq!(job.mailboxes_csv, Some(dir.join("boxes.csv")));
    assert_eq!(
        imap(&job.source).tls_ca,
        Some(dir.join("certs").join("ca.pem"))
    );
}

#[test]
fn relative_job_path_becomes_absolute() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rel.toml"), job_with("", "")).unwrap();
    // A path relative to the current directory, which tests must not change (they share
    // it): climb to the root with `..`, then down to the file.
    let cwd = std::env::current_dir().unwrap();
    let relative: PathBuf = std::iter::repeat_n("..", cwd.components().count())
        .collect::<PathBuf>()
        .join(dir.path().strip_prefix("/").unwrap())
        .join("rel.toml");
    let job = Job::load(&relative).unwrap();
    assert_eq!(job.path, real(&dir).join("rel.toml"));
    assert_eq!(job.state, StateLocation::Sqlite(real(&dir).join("rel.db")));
}

#[test]
fn absolute_paths_are_kept() {
    let text = format!(
        "state = \"sqlite:///var/lib/x.db\"\n{}",
        job_with("", "[mailboxes]\ncsv = \"/srv/boxes.csv\"")
    );
    let (_dir, job) = load_ok(&text);
    assert_eq!(job.state, StateLocation::Sqlite("/var/lib/x.db".into()));
    assert_eq!(job.mailboxes_csv, Some("/srv/boxes.csv".into()));
}

#[test]
fn state_without_scheme_is_a_sqlite_file() {
    let text = format!("state = \"s.db\"\n{}", job_with("", ""));
    let (dir, job) = load_ok(&text);
    assert_eq!(job.state, StateLocation::Sqlite(real(&dir).join("s.db")));
}

#[test]
fn a_postgres_state_takes_its_password_by_reference_only() {
    let text = format!(
        "state = \"postgres://mf@db.example/jobs\"\nstate_password = {{ env = \"PGPW\" }}\n{}",
        job_with("", "")
    );
    let (_dir, job) = load_ok(&text);
    assert_eq!(
        job.state,
        StateLocation::Postgres("postgres://mf@db.example/jobs".into())
    );
    assert_eq!(job.state_password, Some(Secret::Env("PGPW".into())));
    let plain = format!(
        "state = \"postgres://mf@db.example/jobs\"\nstate_password = \"hunter2\"\n{}",
        job_with("", "")
    );
    let problems = problem_texts(&plain);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("state_password"), "{problems:?}");
    assert!(!problems[0].contains("hunter2"), "{problems:?}");
    let sqlite = format!(
        "state_password = {{ env = \"PGPW\" }}\n{}",
        job_with("", "")
    );
    assert!(problem_texts(&sqlite)[0].contains("only a postgres:// state has a password"));
}

#[test]
fn unknown_state_scheme_is_rejected() {
    let text = format!("state = \"mysql://db\"\n{}", job_with("", ""));
    assert_eq!(
        problem_texts(&text),
        vec![
            "line 1, column 9: state: unknown database type `mysql`; use \
             \"sqlite://FILE\" or \"postgres://…\""
        ]
    );
}

#[test]
fn directories_and_creation_are_read_with_defaults() {
    let text = job_with(
        "",
        "[source.directory]\nkind = \"ldap\"\nurl = \"ldap://dc.old.example\"\n\
         bind_dn = \"cn=reader,dc=old\"\nbind_password = { env = \"LDAP_PW\" }\n\
         base = \"ou=people,dc=old\"\nalias_attribute = \"mailLocalAddress\"\n\
         [target.directory]\nkind = \"ldap\"\nurl = \"ldaps://dc.new.example\"\n\
         bind_dn = \"cn=admin,dc=new\"\nbind_password = { file = \"pw\" }\n\
         base = \"ou=people,dc=new\"\nid_attribute = \"objectGUID\"\n\
         [target.create]\nbase = \"ou=people,dc=new\"\ndomain = \"New.Example\"\n",
    );
    let (_dir, job) = load_ok(&text);
    let d = job
        .source
        .directory
        .and_then(|d| d.as_ldap().cloned())
        .expect("source directory");
    assert_eq!(d.security, DirectorySecurity::StartTls);
    assert_eq!(d.filter, "(objectClass=*)");
    assert_eq!(
        (
            d.id_attribute.as_str(),
            d.login_attribute.as_str(),
            d.primary_address_attribute.as_str()
        ),
        ("entryUUID", "uid", "mail")
    );
    assert_eq!(d.alias_attribute.as_deref(), Some("mailLocalAddress"));
    let t = job
        .target
        .directory
        .and_then(|d| d.as_ldap().cloned())
        .expect("target directory");
    assert_eq!(t.security, DirectorySecurity::Tls);
    assert_eq!(t.id_attribute, "objectGUID");
    let c = job.target.create.expect("create");
    assert_eq!(c.domain, "new.example");
    assert_eq!(c.object_classes, vec!["inetOrgPerson".to_string()]);
}

#[test]
fn bad_directory_settings_name_their_keys() {
    let text = job_with(
        "",
        "[source.directory]\nkind = \"ad\"\nurl = \"http://dc\"\nbase = \"dc=x\"\n\
         filter = \"objectClass=*\"\n[target.create]\ndomain = \"x\"\n",
    );
    let texts = problem_texts(&text);
    for expected in [
        "source.directory.kind: unknown kind `ad`",
        "source.directory.url: must start with ldap:// or ldaps://",
        "source.directory.bind_dn: missing",
        "source.directory.bind_password: missing",
        "source.directory.filter: an LDAP filter is written in parentheses",
        "target.create: mailbox creation writes to the target directory",
        "target.create.base: missing",
        "target.create.domain: must be a domain name",
    ] {
        assert!(
            texts.iter().any(|t| t.contains(expected)),
            "{expected} not in {texts:#?}"
        );
    }
}

#[test]
fn directory_section_still_rejects_unknown_keys() {
    let texts = problem_texts(&job_with("", "[source.directory]\nbindpw = 1"));
    assert!(
        texts[0].starts_with("line 17, column 1: source.directory.bindpw: unknown field `bindpw`"),
        "{}",
        texts[0]
    );
}

#[test]
fn source_create_is_rejected() {
    let texts = problem_texts(&job_with("", "[source.create]\ndomain = \"x\""));
    assert_eq!(
        texts,
        vec![
            "line 16, column 1: source.create: mailbox creation is a setting of the \
             target only ([target.create])"
        ]
    );
}

#[test]
fn master_separator_login() {
    let (_dir, job) = load_ok(&job_with("admin_login = \"master-separator\"", ""));
    let Auth::Admin { login, .. } = &imap(&job.source).auth else {
        panic!()
    };
    assert_eq!(login, &AdminLogin::MasterSeparator("*".into()));

    let (_dir, job) = load_ok(&job_with(
        "admin_login = \"master-separator\"\nmaster_separator = \"%\"",
        "",
    ));
    let Auth::Admin { login, .. } = &imap(&job.source).auth else {
        panic!()
    };
    assert_eq!(login, &AdminLogin::MasterSeparator("%".into()));

    assert_eq!(
        problem_texts(&job_with("master_separator = \"%\"", "")),
        vec![
            "line 8, column 20: source.master_separator: only used with admin_login = \
             \"master-separator\""
        ]
    );
    assert_eq!(
        problem_texts(&job_with(
            "admin_login = \"master-separator\"\nmaster_separator = \"\"",
            ""
        )),
        vec![
            "line 9, column 20: source.master_separator: must be one or more characters, \
             without spaces"
        ]
    );
}

#[test]
fn per_mailbox_auth() {
    let text = "name = \"t\"\n[source]\nkind = \"imap\"\nhost = \"h\"\nauth = \"per-mailbox\"\n\
                [target]\nkind = \"imap\"\nhost = \"h2\"\nauth = \"per-mailbox\"\n\
                admin_user = \"a\"\n";
    assert_eq!(
        problem_texts(text),
        vec![
            "line 10, column 14: target.admin_user: not used with auth = \"per-mailbox\"; \
             remove it"
        ]
    );
    let (_dir, job) = load_ok(text.trim_end_matches("admin_user = \"a\"\n"));
    assert_eq!(imap(&job.source).auth, Auth::PerMailbox);
    assert_eq!(imap(&job.target).auth, Auth::PerMailbox);
}

#[test]
fn admin_auth_needs_user_and_password() {
    let text = "name = \"t\"\n[source]\nkind = \"imap\"\nhost = \"h\"\nauth = \"admin\"\n\
                [target]\nkind = \"imap\"\nhost = \"h2\"\nauth = \"per-mailbox\"\n";
    assert_eq!(
        problem_texts(text),
        vec![
            "source.admin_user: missing: the administrator's login (auth = \"admin\")",
            "source.admin_password: missing: { env = \"VARIABLE\" } or { file = \"path\" }",
        ]
    );
}

#[test]
fn imap_needs_host_and_auth() {
    let text = "name = \"t\"\n[source]\nkind = \"imap\"\n[target]\nkind = \"imap\"\nhost = \" \"\nauth = \"per-mailbox\"\n";
    assert_eq!(
        problem_texts(text),
        vec![
            "line 6, column 8: target.host: must not be empty",
            "source.host: missing: the IMAP server's host name",
            "source.auth: missing: \"admin\", \"per-mailbox\" or \"oauth2\"",
        ]
    );
}

#[test]
fn host_must_be_a_plain_host_name() {
    let with_host = |host: &str| job_with("", "").replacen("mail.example", host, 1);
    assert!(
        problem_texts(&with_host("imaps://mail.example"))[0].ends_with(
            "source.host: write the host name only; the port and security have their own keys"
        )
    );
    assert!(
        problem_texts(&with_host("mail.example:993"))[0]
            .ends_with("source.host: write the port in `port`, not in the host name")
    );
    assert!(
        problem_texts(&with_host("mail example"))[0]
            .ends_with("source.host: a host name has no spaces")
    );
    let (_dir, job) = load_ok(&with_host("::1"));
    assert_eq!(imap(&job.source).host, "::1");
}

#[test]
fn port_zero_is_rejected() {
    assert_eq!(
        problem_texts(&job_with("port = 0", "")),
        vec!["line 8, column 8: source.port: must be from 1 to 65535"]
    );
}

#[test]
fn maildir_connection() {
    let text = "name = \"t\"\n[source]\nkind = \"maildir\"\npath = \"export\"\n\
                [target]\nkind = \"maildir\"\npath = \"/srv/mail\"\n";
    let (dir, job) = load_ok(text);
    assert_eq!(
        job.source.kind,
        ConnectionKind::Maildir {
            root: real(&dir).join("export")
        }
    );
    assert_eq!(
        job.target.kind,
        ConnectionKind::Maildir {
            root: "/srv/mail".into()
        }
    );
}

#[test]
fn maildir_rejects_imap_keys_and_needs_path() {
    let text = "name = \"t\"\n[source]\nkind = \"maildir\"\nhost = \"h\"\nport = 993\n\
                [target]\nkind = \"maildir\"\npath = \"m\"\n";
    assert_eq!(
        problem_texts(text),
        vec![
            "line 4, column 8: source.host: not used with kind = \"maildir\"; remove it",
            "line 5, column 8: source.port: not used with kind = \"maildir\"; remove it",
            "source.path: missing: the directory holding one Maildir++ tree per mailbox login",
        ]
    );
    let text = job_with("path = \"x\"", "");
    assert_eq!(
        problem_texts(&text),
        vec!["line 8, column 8: source.path: not used with kind = \"imap\"; remove it"]
    );
}

#[test]
fn missing_sections_and_keys() {
    assert_eq!(
        problem_texts("[source]\nhost = \"h\"\n"),
        vec![
            "name: missing: a short name for the job",
            "source.kind: missing: \"imap\" or \"maildir\"",
            "target: the [target] section is missing",
        ]
    );
}

#[test]
fn counts_must_be_at_least_one() {
    assert_eq!(
        problem_texts(&job_with(
            "max_connections = 0",
            "[migration]\nconcurrency = 0"
        )),
        vec![
            "line 8, column 19: source.max_connections: must be at least 1",
            "line 17, column 15: migration.concurrency: must be at least 1",
        ]
    );
    let texts = problem_texts(&job_with("max_connections = -1", ""));
    assert_eq!(
        texts,
        vec![
            "line 8, column 19: source.max_connections: invalid value: integer `-1`, \
             expected a whole number, 0 or more"
        ]
    );
}

#[test]
fn max_connections_per_mailbox_is_read_and_checked_with_file_line_and_key() {
    let (_dir, job) = load_ok(&job_with("max_connections_per_mailbox = 2", ""));
    assert_eq!(imap(&job.source).max_connections_per_mailbox, Some(2));
    assert_eq!(imap(&job.target).max_connections_per_mailbox, None);
    assert_eq!(
        problem_texts(&job_with("max_connections_per_mailbox = 0", "")),
        vec!["line 8, column 31: source.max_connections_per_mailbox: must be at least 1"]
    );
    assert_eq!(
        problem_texts(&job_with("max_connections_per_mailbox = \"two\"", "")),
        vec![
            "line 8, column 31: source.max_connections_per_mailbox: invalid type: string \
             \"two\", expected a whole number, 0 or more"
        ]
    );
    let (_dir, error) = load(&job_with("max_connections_per_mailbox = 0", ""));
    let error = error.unwrap_err().to_string();
    assert!(error.starts_with("invalid job file "), "{error}");
    assert!(error.contains("job.toml"), "{error}");
}

#[test]
fn migration_settings() {
    let text = format!(
        "mode = \"staged\"\n{}",
        job_with(
            "",
            "[migration]\nconcurrency = 2\ninclude_folders = [\"INBOX\", \"Projects/*\"]\n\
             exclude_folders = [\"Junk\"]\nsince = \"2020-01-01\"\nuntil = 2026-02-28\n\
             skip_deleted = false\nfolder_map = { \"Old Archive\" = \"Archive/Old\" }\n"
        )
    );
    let (_dir, job) = load_ok(&text);
    assert_eq!(job.mode, Mode::Staged);
    let m = &job.migration;
    assert_eq!(m.concurrency, 2);
    assert_eq!(m.include_folders, vec!["INBOX", "Projects/*"]);
    assert_eq!(m.exclude_folders, vec!["Junk"]);
    assert_eq!(
        m.since,
        Some(Date {
            year: 2020,
            month: 1,
            day: 1
        })
    );
    assert_eq!(
        m.until,
        Some(Date {
            year: 2026,
            month: 2,
            day: 28
        })
    );
    assert!(!m.skip_deleted);
    assert_eq!(
        m.folder_map.get("Old Archive").map(String::as_str),
        Some("Archive/Old")
    );
}

#[test]
fn lease_seconds_default_and_range() {
    let (_dir, job) = load_ok(&job_with("", ""));
    assert_eq!(job.migration.lease_seconds, 30);
    assert_eq!(job.migration.lease(), std::time::Duration::from_secs(30));
    assert_eq!(
        job.migration.renew_every(),
        std::time::Duration::from_secs(10)
    );
    let (_dir, job) = load_ok(&job_with("", "[migration]\nlease_seconds = 5"));
    assert_eq!(job.migration.lease(), std::time::Duration::from_secs(5));
    // A third of five seconds, not rounded down to nothing.
    assert_eq!(
        job.migration.renew_every(),
        std::time::Duration::from_secs(5) / 3
    );
    for (value, column) in [("4", 17), ("3601", 17), ("0", 17)] {
        assert_eq!(
            problem_texts(&job_with(
                "",
                &format!("[migration]\nlease_seconds = {value}")
            )),
            vec![format!(
                "line 17, column {column}: migration.lease_seconds: must be from 5 to 3600 \
                 (seconds a claim on a mailbox's pass lasts without renewal)"
            )],
            "lease_seconds = {value}"
        );
    }
    assert_eq!(
        problem_texts(&job_with("", "[migration]\nlease_seconds = \"30s\"")),
        vec![
            "line 17, column 17: migration.lease_seconds: invalid type: string \"30s\", \
             expected a whole number, 0 or more"
        ]
    );
}

#[test]
fn network_settings_default_and_parse() {
    let (_dir, job) = load_ok(&job_with("", ""));
    assert_eq!(job.migration.network, NetworkSettings::default());
    assert_eq!(job.migration.network.io_timeout, Duration::from_secs(60));
    assert_eq!(
        job.migration.network.retry_first_delay,
        Duration::from_secs(1)
    );
    assert_eq!(
        job.migration.network.retry_max_delay,
        Duration::from_secs(60)
    );
    assert_eq!(job.migration.network.retries_without_progress, 4);
    let (_dir, job) = load_ok(&job_with(
        "",
        "[migration]\nio_timeout_seconds = 20\nretry_first_delay_seconds = 2\n\
         retry_max_delay_seconds = 300\nretries_without_progress = 10\n",
    ));
    assert_eq!(
        job.migration.network,
        NetworkSettings {
            io_timeout: Duration::from_secs(20),
            retry_first_delay: Duration::from_secs(2),
            retry_max_delay: Duration::from_secs(300),
            retries_without_progress: 10,
        }
    );
    // A first delay above the default longest wait raises the default with it.
    let (_dir, job) = load_ok(&job_with(
        "",
        "[migration]\nretry_first_delay_seconds = 90\n",
    ));
    assert_eq!(
        job.migration.network.retry_max_delay,
        Duration::from_secs(90)
    );
}

#[test]
fn network_settings_errors_name_line_column_and_key() {
    assert_eq!(
        problem_texts(&job_with(
            "",
            "[migration]\nio_timeout_seconds = 0\nretry_first_delay_seconds = 100000\n"
        )),
        vec![
            "line 17, column 22: migration.io_timeout_seconds: 0: expected a whole number of \
             seconds from 1 to 86400",
            "line 18, column 29: migration.retry_first_delay_seconds: 100000: expected a whole \
             number of seconds from 1 to 86400",
        ]
    );
    assert_eq!(
        problem_texts(&job_with(
            "",
            "[migration]\nretry_first_delay_seconds = 30\nretry_max_delay_seconds = 10\n"
        )),
        vec![
            "line 18, column 27: migration.retry_max_delay_seconds: 10 is less than \
             retry_first_delay_seconds = 30"
        ]
    );
    assert_eq!(
        problem_texts(&job_with(
            "",
            "[migration]\nretries_without_progress = -1\n"
        )),
        vec![
            "line 17, column 28: migration.retries_without_progress: invalid value: integer \
             `-1`, expected a whole number from 0 to 4294967295"
        ]
    );
    assert_eq!(
        problem_texts(&job_with(
            "",
            "[migration]\nio_timeout_seconds = \"soon\"\n"
        )),
        vec![
            "line 17, column 22: migration.io_timeout_seconds: invalid type: string \"soon\", \
             expected a whole number, 0 or more"
        ]
    );
}

#[test]
fn error_inside_quoted_key_names_the_full_key() {
    let texts = problem_texts(&job_with("", "[migration.folder_map]\n\"Old.Archive\" = 5"));
    assert_eq!(
        texts,
        vec![
            "line 17, column 17: migration.folder_map.Old.Archive: invalid type: integer \
             `5`, expected a string"
        ]
    );
}

#[test]
fn bad_folder_lists_are_rejected() {
    assert_eq!(
        problem_texts(&job_with(
            "",
            "[migration]\ninclude_folders = []\nexclude_folders = [\"\"]"
        )),
        vec![
            "line 17, column 19: migration.include_folders: an empty list would migrate \
             nothing; leave it out to migrate every folder",
            "line 18, column 19: migration.exclude_folders: a folder pattern must not be empty",
        ]
    );
}

#[test]
fn bad_dates_are_rejected() {
    let texts = problem_texts(&job_with(
        "",
        "[migration]\nsince = \"2021-02-29\"\nuntil = \"01/02/2020\"",
    ));
    assert_eq!(
        texts,
        vec![
            "line 17, column 9: migration.since: 2021-02-29 is not a calendar date",
            "line 18, column 9: migration.until: expected a date written YYYY-MM-DD, such \
             as 2020-01-31",
        ]
    );
    let texts = problem_texts(&job_with("", "[migration]\nsince = 2020-01-01T10:00:00"));
    assert_eq!(
        texts,
        vec![
            "line 17, column 9: migration.since: expected a date written YYYY-MM-DD, such \
             as 2020-01-31"
        ]
    );
}

#[test]
fn since_must_not_be_after_until() {
    assert_eq!(
        problem_texts(&job_with(
            "",
            "[migration]\nsince = \"2024-05-02\"\nuntil = \"2024-05-01\""
        )),
        vec!["line 18, column 9: migration.until: 2024-05-01 is before since = 2024-05-02"]
    );
    let (_dir, job) = load_ok(&job_with(
        "",
        "[migration]\nsince = \"2024-05-01\"\nuntil = \"2024-05-01\"",
    ));
    assert_eq!(job.migration.since, job.migration.until);
}

#[test]
fn several_problems_are_reported_together() {
    let text = "name = \"\"\n[source]\nkind = \"imap\"\nhost = \"h\"\nsecurity = \"plain\"\n\
                auth = \"per-mailbox\"\nmax_connections = 0\n\
                [target]\nkind = \"maildir\"\n[migration]\nconcurrency = 0\n";
    let error = load(text).1.unwrap_err();
    let JobError::Invalid { file, problems } = &error else {
        panic!("{error:?}")
    };
    let keys: Vec<_> = problems.iter().filter_map(|p| p.key.as_deref()).collect();
    assert_eq!(
        keys,
        vec![
            "name",
            "source.security",
            "source.max_connections",
            "migration.concurrency",
            "target.path",
        ]
    );
    let display = error.to_string();
    let mut lines = display.lines();
    assert_eq!(
        lines.next(),
        Some(format!("invalid job file {}:", file.display()).as_str())
    );
    assert_eq!(lines.count(), 5);
}

#[test]
fn unreadable_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = real(&dir).join("nope.toml");
    let error = Job::load(&path).unwrap_err();
    assert!(matches!(error, JobError::Read { .. }));
    assert!(
        error
            .to_string()
            .starts_with(&format!("cannot read job file {}: ", path.display())),
        "{error}"
    );
}

#[test]
fn invalid_utf8_is_reported_with_its_line() {
    let mut bytes = job_with("", "").into_bytes();
    bytes.extend_from_slice(b"# caf\xe9\n");
    let dir = tempfile::tempdir().unwrap();
    let path = real(&dir).join("job.toml");
    std::fs::write(&path, bytes).unwrap();
    let error = Job::load(&path).unwrap_err();
    let text = error.to_string();
    assert!(
        text.ends_with("line 16, column 6: the job file is not valid UTF-8"),
        "{text}"
    );
}

#[test]
fn byte_order_mark_is_accepted() {
    let (_dir, job) = load_ok(&format!("\u{feff}{}", job_with("", "")));
    assert_eq!(job.name, "t");
}

#[test]
fn name_is_trimmed() {
    let (_dir, job) = load_ok(&job_with("", "").replacen("\"t\"", "\" contoso \"", 1));
    assert_eq!(job.name, "contoso");
}

#[test]
fn dates_parse_and_format() {
    let date: Date = "2020-01-01".parse().unwrap();
    assert_eq!(
        date,
        Date {
            year: 2020,
            month: 1,
            day: 1
        }
    );
    assert_eq!(date.imap_format(), "1-Jan-2020");
    assert_eq!(date.to_string(), "2020-01-01");
    let date: Date = "2024-12-25".parse().unwrap();
    assert_eq!(date.imap_format(), "25-Dec-2024");
    assert!("2024-02-29".parse::<Date>().is_ok());
    assert!("2000-02-29".parse::<Date>().is_ok());
    assert_eq!(
        "1900-02-29".parse::<Date>(),
        Err(DateError::NoSuchDay {
            year: 1900,
            month: 2,
            day: 29
        })
    );
    assert!("2023-02-29".parse::<Date>().is_err());
    assert!("2023-04-31".parse::<Date>().is_err());
    assert!("2023-13-01".parse::<Date>().is_err());
    assert!("2023-00-10".parse::<Date>().is_err());
    assert!("2023-01-00".parse::<Date>().is_err());
    assert!("0000-01-01".parse::<Date>().is_err());
    for bad in [
        "2023-1-01",
        "2023/01/01",
        "20230101",
        "2023-01-01 ",
        "+023-01-01",
        "2023-01-+1",
        "",
    ] {
        assert_eq!(bad.parse::<Date>(), Err(DateError::Format), "{bad:?}");
    }
    assert!(Date::new(2020, 1, 1).unwrap() < Date::new(2020, 1, 2).unwrap());
    assert!(Date::new(2019, 12, 31).unwrap() < Date::new(2020, 1, 1).unwrap());
}

const PIN: &str = "3F:A1:00:FF:12:34:56:78:9A:BC:DE:F0:01:23:45:67:89:AB:CD:EF:FE:DC:BA:98:76:54:32:10:0F:1E:2D:3C";

#[test]
fn tls_pin_sha256_is_one_fingerprint_or_a_list() {
    let one = format!("tls_pin_sha256 = \"{}\"", PIN.to_lowercase());
    let (_dir, job) = load_ok(&job_with(&one, ""));
    let pins = &imap(&job.source).tls_pin_sha256;
    assert_eq!(pins.len(), 1);
    assert_eq!(pins[0].to_string(), PIN);
    assert!(imap(&job.target).tls_pin_sha256.is_empty());

    let two = format!(
        "tls_pin_sha256 = [\"{PIN}\", \"{}\"]",
        PIN.replace(':', "").replace("3F", "00")
    );
    let (_dir, job) = load_ok(&job_with(&two, ""));
    assert_eq!(imap(&job.source).tls_pin_sha256.len(), 2);
}

#[test]
fn a_directory_takes_a_pin_too() {
    let text = job_with(
        "",
        &format!(
            "[source.directory]\nkind = \"ldap\"\nurl = \"ldaps://dc.old.example\"\n\
             bind_dn = \"cn=reader,dc=old\"\nbind_password = {{ env = \"LDAP_PW\" }}\n\
             base = \"ou=people,dc=old\"\ntls_pin_sha256 = \"{PIN}\"\n"
        ),
    );
    let (_dir, job) = load_ok(&text);
    let d = job
        .source
        .directory
        .and_then(|d| d.as_ldap().cloned())
        .expect("directory");
    assert_eq!(d.tls_pin_sha256.len(), 1);
    assert_eq!(d.tls_pin_sha256[0].to_string(), PIN);
}

#[test]
fn a_malformed_pin_is_named_with_its_place() {
    let texts = problem_texts(&job_with("tls_pin_sha256 = \"AB:CD:EF\"", ""));
    assert_eq!(
        texts,
        vec![
            "line 8, column 18: source.tls_pin_sha256: a SHA-256 fingerprint is 64 hex digits \
             (32 bytes, as `openssl x509 -noout -fingerprint -sha256 -in CERT` prints it); \
             this one has 6"
        ]
    );
    let texts = problem_texts(&job_with(
        &format!(
            "tls_pin_sha256 = [\"{PIN}\", \"{}\"]",
            PIN.replace("3F", "ZZ")
        ),
        "",
    ));
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(
        texts[0].starts_with("line 8, column 18: source.tls_pin_sha256: fingerprint 2 of 2: ")
            && texts[0].ends_with("`Z` is not a hex digit"),
        "{texts:?}"
    );
    let texts = problem_texts(&job_with("tls_pin_sha256 = 42", ""));
    assert!(
        texts[0].ends_with("a SHA-256 fingerprint as a string (\"AB:CD:…\"), or a list of them")
    );
    let texts = problem_texts(&job_with("tls_pin_sha256 = []", ""));
    assert!(texts[0].ends_with("an empty list pins nothing: name at least one fingerprint"));
}

#[test]
fn a_pin_contradicts_tls_ca_tls_verify_false_and_plain() {
    let texts = problem_texts(&job_with(
        &format!("tls_ca = \"ca.pem\"\ntls_pin_sha256 = \"{PIN}\""),
        "",
    ));
    assert_eq!(
        texts,
        vec![
            "line 9, column 18: source.tls_pin_sha256: a pin accepts exactly the pinned \
             certificates, so source.tls_ca would not be read: remove one of them"
        ]
    );
    let texts = problem_texts(&job_with(
        &format!("tls_verify = false\ntls_pin_sha256 = \"{PIN}\""),
        "",
    ));
    assert_eq!(texts.len(), 1);
    assert!(
        texts[0].contains("tls_verify = false turns verification off"),
        "{texts:?}"
    );
    let texts = problem_texts(&job_with(
        &format!("security = \"plain\"\nallow_plain = true\ntls_pin_sha256 = \"{PIN}\""),
        "",
    ));
    assert_eq!(
        texts,
        vec!["line 10, column 18: source.tls_pin_sha256: not used with security = \"plain\""]
    );
}

#[test]
fn the_active_directory_schema_gives_ads_defaults_and_written_keys_win() {
    let text = job_with(
        "",
        "[source.directory]\nkind = \"ldap\"\nschema = \"active-directory\"\n\
         url = \"ldaps://dc.old.example\"\nbind_dn = \"reader@old.example\"\n\
         bind_password = { env = \"LDAP_PW\" }\nbase = \"OU=Staff,DC=old,DC=example\"\n\
         [target.directory]\nkind = \"ldap\"\nschema = \"active-directory\"\n\
         url = \"ldaps://dc.new.example\"\nbind_dn = \"admin@new.example\"\n\
         bind_password = { env = \"LDAP_PW\" }\nbase = \"OU=Mail,DC=new,DC=example\"\n\
         login_attribute = \"userPrincipalName\"\nfilter = \"(objectClass=user)\"\n\
         [target.create]\nbase = \"OU=Mail,DC=new,DC=example\"\ndomain = \"new.example\"\n",
    );
    let (_dir, job) = load_ok(&text);
    let d = job
        .source
        .directory
        .and_then(|d| d.as_ldap().cloned())
        .expect("source directory");
    assert_eq!(
        (
            d.id_attribute.as_str(),
            d.login_attribute.as_str(),
            d.primary_address_attribute.as_str(),
            d.alias_attribute.as_deref(),
            d.display_name_attribute.as_deref(),
            d.filter.as_str(),
        ),
        (
            "objectGUID",
            "sAMAccountName",
            "mail",
            Some("proxyAddresses"),
            Some("displayName"),
            "(&(objectCategory=person)(objectClass=user)\
             (!(userAccountControl:1.2.840.113556.1.4.803:=2)))"
        )
    );
    let t = job
        .target
        .directory
        .and_then(|d| d.as_ldap().cloned())
        .expect("target directory");
    assert_eq!(t.login_attribute, "userPrincipalName");
    assert_eq!(t.filter, "(objectClass=user)");
    assert_eq!(t.id_attribute, "objectGUID");
    let c = job.target.create.expect("create");
    assert_eq!(
        c.object_classes,
        ["top", "person", "organizationalPerson", "user"]
    );
}

#[test]
fn an_unknown_directory_schema_is_named() {
    let text = job_with(
        "",
        "[source.directory]\nkind = \"ldap\"\nschema = \"ad\"\nurl = \"ldaps://dc\"\n\
         bind_dn = \"x\"\nbind_password = { env = \"PW\" }\nbase = \"DC=x\"\n",
    );
    assert_eq!(
        problem_texts(&text),
        vec![
            "line 18, column 10: source.directory.schema: unknown schema `ad`; use \
             \"openldap\" or \"active-directory\""
        ]
    );
}

/// A job whose target logs in with OAuth2, with `table` as its `[target.oauth2]`.
fn oauth2_job(table: &str) -> String {
    format!(
        "name = \"t\"\n[source]\n{IMAP}\n[target]\nkind = \"imap\"\nhost = \"outlook.office365.com\"\n\
         auth = \"oauth2\"\n[target.oauth2]\n{table}"
    )
}

fn oauth2(job: &Job) -> &OAuth2Config {
    match &imap(&job.target).auth {
        Auth::OAuth2(config) => config,
        other => panic!("expected oauth2, got {other:?}"),
    }
}

#[test]
fn oauth2_client_credentials_with_a_secret_gets_entra_defaults() {
    let (_dir, job) = load_ok(&oauth2_job(
        "flow = \"client-credentials\"\ntenant = \"contoso.onmicrosoft.com\"\n\
         client_id = \"00000000-1111-2222-3333-444444444444\"\n\
         client_secret = { env = \"CLIENT_SECRET\" }\n",
    ));
    let config = oauth2(&job);
    assert_eq!(
        config.token_url.as_deref(),
        Some("https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token")
    );
    assert_eq!(config.scope, "https://outlook.office365.com/.default");
    assert_eq!(config.mechanism, OAuth2Mechanism::XOAuth2);
    assert_eq!(
        config.flow,
        OAuth2Flow::ClientCredentials {
            tenant: Some("contoso.onmicrosoft.com".into()),
            client_id: "00000000-1111-2222-3333-444444444444".into(),
            credential: ClientCredential::Secret(Secret::Env("CLIENT_SECRET".into())),
        }
    );
}

#[test]
fn oauth2_client_certificate_and_overrides() {
    let (dir, job) = load_ok(&oauth2_job(
        "flow = \"client-credentials\"\nclient_id = \"app\"\n\
         client_certificate = \"certs/app.pem\"\nclient_key = { file = \"certs/app.key\" }\n\
         token_url = \"http://127.0.0.1:8080/token\"\nallow_plain = true\n\
         scope = \"imap\"\nmechanism = \"oauthbearer\"\ntls_ca = \"ca.pem\"\n",
    ));
    let config = oauth2(&job);
    assert_eq!(
        config.token_url.as_deref(),
        Some("http://127.0.0.1:8080/token")
    );
    assert_eq!(config.scope, "imap");
    assert_eq!(config.mechanism, OAuth2Mechanism::OAuthBearer);
    assert_eq!(config.tls_ca, Some(real(&dir).join("ca.pem")));
    assert_eq!(
        config.flow,
        OAuth2Flow::ClientCredentials {
            tenant: None,
            client_id: "app".into(),
            credential: ClientCredential::Certificate {
                certificate: real(&dir).join("certs/app.pem"),
                key: Secret::File(real(&dir).join("certs/app.key")),
            },
        }
    );
}

#[test]
fn oauth2_service_account_gets_google_defaults() {
    let (dir, job) = load_ok(&oauth2_job(
        "flow = \"service-account\"\nkey_file = { file = \"sa.json\" }\n",
    ));
    let config = oauth2(&job);
    assert_eq!(config.token_url, None, "the key's token_uri, else Google's");
    assert_eq!(config.scope, "https://mail.google.com/");
    assert_eq!(
        config.flow,
        OAuth2Flow::ServiceAccount {
            key: Secret::File(real(&dir).join("sa.json"))
        }
    );
}

#[test]
fn oauth2_problems_name_file_line_and_key() {
    // No table at all.
    let text = oauth2_job("").replace("[target.oauth2]\n", "");
    assert_eq!(
        problem_texts(&text),
        vec!["target.oauth2: auth = \"oauth2\" needs a [target.oauth2] table (flow, client_id, …)"]
    );
    // A secret in clear, a key of the other flow, no credential.
    let texts = problem_texts(&oauth2_job(
        "flow = \"client-credentials\"\ntenant = \"t1\"\nclient_id = \"app\"\n\
         client_secret = \"s3cr3t\"\n",
    ));
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(
        texts[0].starts_with("line 17, column 17: target.oauth2.client_secret: a secret must be"),
        "{texts:?}"
    );
    assert!(!texts.concat().contains("s3cr3t"));
    assert_eq!(
        problem_texts(&oauth2_job(
            "flow = \"client-credentials\"\nclient_id = \"app\"\nkey_file = { file = \"k\" }\n"
        )),
        vec![
            "line 16, column 12: target.oauth2.key_file: only used with flow = \
             \"service-account\"; remove it",
            "target.oauth2.tenant: missing: the directory (tenant) ID, or a token_url",
            "target.oauth2.client_secret: missing: client_secret = { env | file }, or \
             client_certificate + client_key",
        ]
    );
    assert_eq!(
        problem_texts(&oauth2_job(
            "flow = \"client-credentials\"\ntenant = \"t\"\nclient_id = \"app\"\n\
             client_certificate = \"c.pem\"\n"
        )),
        vec![
            "target.oauth2.client_key: missing: the certificate's private key, \
             { file = \"key.pem\" }"
        ]
    );
    assert_eq!(
        problem_texts(&oauth2_job(
            "flow = \"service-account\"\nclient_id = \"x\"\n"
        )),
        vec![
            "line 15, column 13: target.oauth2.client_id: only used with flow = \
             \"client-credentials\"; a service account's key file holds its identity",
            "target.oauth2.key_file: missing: the service account's JSON key, \
             { file = \"key.json\" }",
        ]
    );
    assert_eq!(
        problem_texts(&oauth2_job("tenant = \"t\"\n")),
        vec![
            "target.oauth2.flow: missing: \"client-credentials\" (Entra ID / Microsoft 365) \
             or \"service-account\" (Google Workspace)"
        ]
    );
    assert_eq!(
        problem_texts(&oauth2_job("flow = \"device-code\"\n")),
        vec![
            "line 14, column 8: target.oauth2.flow: unknown variant `device-code`, expected \
             `client-credentials` or `service-account`"
        ]
    );
    assert_eq!(
        problem_texts(&oauth2_job("flow = \"service-account\"\nsecret = 1\n")),
        vec![
            "line 15, column 1: target.oauth2.secret: unknown field `secret`, expected one of \
             `flow`, `tenant`, `client_id`, `client_secret`, `client_certificate`, \
             `client_key`, `key_file`, `token_url`, `scope`, `mechanism`, `allow_plain`, \
             `tls_ca`"
        ]
    );
}

#[test]
fn oauth2_table_and_admin_keys_do_not_mix() {
    let text = format!(
        "name = \"t\"\n[source]\n{IMAP}[source.oauth2]\nflow = \"service-account\"\n\
         key_file = {{ file = \"k\" }}\n[target]\nkind = \"imap\"\nhost = \"h\"\n\
         auth = \"oauth2\"\nadmin_user = \"a\"\n[target.oauth2]\nflow = \"service-account\"\n\
         key_file = {{ file = \"k\" }}\n"
    );
    assert_eq!(
        problem_texts(&text),
        vec![
            "line 8, column 1: source.oauth2: only used with auth = \"oauth2\"; remove it or set \
             auth = \"oauth2\"",
            "line 15, column 14: target.admin_user: not used with auth = \"oauth2\"; remove it",
        ]
    );
    let maildir = "name = \"t\"\n[source]\nkind = \"maildir\"\npath = \"m\"\n[source.oauth2]\n\
                   flow = \"service-account\"\n[target]\nkind = \"maildir\"\npath = \"n\"\n";
    assert_eq!(
        problem_texts(maildir),
        vec!["line 5, column 1: source.oauth2: not used with kind = \"maildir\"; remove it"]
    );
}

#[test]
fn oauth2_plain_token_url_only_on_loopback_with_allow_plain() {
    let base = "flow = \"client-credentials\"\nclient_id = \"app\"\n\
                client_secret = { env = \"S\" }\n";
    for url in [
        "http://127.0.0.1:8080/t",
        "http://localhost/t",
        "http://[::1]:9/t",
    ] {
        let (_dir, job) = load_ok(&oauth2_job(&format!(
            "{base}token_url = \"{url}\"\nallow_plain = true\n"
        )));
        assert_eq!(oauth2(&job).token_url.as_deref(), Some(url));
    }
    assert_eq!(
        problem_texts(&oauth2_job(&format!(
            "{base}token_url = \"http://127.0.0.1/t\"\n"
        ))),
        vec![
            "line 17, column 13: target.oauth2.token_url: http:// sends the client's \
             credentials unencrypted; add allow_plain = true to [target.oauth2] to confirm"
        ]
    );
    assert_eq!(
        problem_texts(&oauth2_job(&format!(
            "{base}token_url = \"http://idp.example/t\"\nallow_plain = true\n"
        ))),
        vec![
            "line 17, column 13: target.oauth2.token_url: http:// sends the client's \
             credentials unencrypted; it is only allowed to the loopback interface \
             (localhost, 127.0.0.1, ::1), with allow_plain = true"
        ]
    );
    assert_eq!(
        problem_texts(&oauth2_job(&format!(
            "{base}token_url = \"https://idp.example/t\"\nallow_plain = true\n"
        ))),
        vec!["line 18, column 15: target.oauth2.allow_plain: only used with an http:// token_url"]
    );
    assert_eq!(
        problem_texts(&oauth2_job(&format!("{base}token_url = \"ftp://idp/t\"\n"))),
        vec![
            "line 17, column 13: target.oauth2.token_url: must start with https:// (or \
             http:// on the loopback interface)"
        ]
    );
    assert_eq!(
        problem_texts(&oauth2_job(&format!(
            "{base}token_url = \"https://idp:99999/t\"\n"
        ))),
        vec![
            "line 17, column 13: target.oauth2.token_url: the port must be a number from 1 to 65535"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// kind = "graph"
// ---------------------------------------------------------------------------------------------

const GRAPH_APP: &str = "tenant = \"contoso.onmicrosoft.com\"\nclient_id = \"app\"\n\
                         client_secret = { env = \"GRAPH_SECRET\" }\n";

fn graph(job: &Job) -> &GraphConfig {
    job.target
        .directory
        .as_ref()
        .and_then(DirectoryKind::as_graph)
        .expect("a Graph target directory")
}

#[test]
fn a_graph_directory_with_its_own_application_and_the_defaults() {
    let (_dir, job) = load_ok(&job_with(
        "",
        &format!("[target.directory]\nkind = \"graph\"\n[target.directory.oauth2]\n{GRAPH_APP}"),
    ));
    let g = graph(&job);
    assert_eq!(g.graph_url, GRAPH_URL);
    assert_eq!(g.filter.as_deref(), Some("accountEnabled eq true"));
    assert_eq!(g.oauth2.scope, GRAPH_SCOPE);
    assert_eq!(
        g.oauth2.token_url.as_deref(),
        Some("https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token")
    );
    assert_eq!(g.oauth2_key, "target.directory.oauth2");
    assert!(matches!(
        &g.oauth2.flow,
        OAuth2Flow::ClientCredentials { client_id, .. } if client_id == "app"
    ));
    assert_eq!(job.target.directory.as_ref().unwrap().url(), GRAPH_URL);
}

#[test]
fn a_graph_directory_reuses_the_connections_application_with_the_graph_scope() {
    let target = format!(
        "kind = \"imap\"\nhost = \"outlook.office365.com\"\nauth = \"oauth2\"\n\
         [target.oauth2]\nflow = \"client-credentials\"\n{GRAPH_APP}\
         [target.directory]\nkind = \"graph\"\nfilter = \"\"\n\
         graph_url = \"http://127.0.0.1:8080/v1.0/\"\nallow_plain = true\n"
    );
    let text = format!("name = \"t\"\n[source]\n{IMAP}\n[target]\n{target}");
    let (_dir, job) = load_ok(&text);
    let g = graph(&job);
    assert_eq!(g.graph_url, "http://127.0.0.1:8080/v1.0");
    assert_eq!(g.filter, None, "an empty filter lists every user");
    assert_eq!(g.oauth2.scope, GRAPH_SCOPE);
    assert_eq!(g.oauth2_key, "target.oauth2");
    // The connection keeps its own scope.
    match &imap(&job.target).auth {
        Auth::OAuth2(o) => assert_eq!(o.scope, EXCHANGE_ONLINE_SCOPE),
        other => panic!("{other:?}"),
    }
}

#[test]
fn graph_directory_mistakes_name_file_line_column_and_key() {
    let texts = problem_texts(&job_with(
        "",
        "[target.directory]\nkind = \"graph\"\nbase = \"ou=people\"\n\
         filter = \"(objectClass=user)\"\ngraph_url = \"http://graph.example/v1.0\"\n",
    ));
    assert_eq!(
        texts,
        vec![
            "line 18, column 8: target.directory.base: not used with kind = \"graph\" \
             (Microsoft Graph has its own names for users and addresses); remove it",
            "line 19, column 10: target.directory.filter: an OData $filter such as \
             accountEnabled eq true, not an LDAP filter",
            "line 20, column 13: target.directory.graph_url: http:// sends the application's \
             tokens and the directory's users unencrypted; it is only allowed to the loopback \
             interface (localhost, 127.0.0.1, ::1), with allow_plain = true",
            "target.directory.oauth2: missing: [target.directory.oauth2] (tenant, client_id, \
             client_secret), or auth = \"oauth2\" on [target], whose application is then used",
        ]
    );
    let texts = problem_texts(&job_with(
        "",
        "[target.directory]\nkind = \"graph\"\ngraph_url = \"http://127.0.0.1:9/v1.0\"\n\
         [target.directory.oauth2]\nflow = \"service-account\"\nkey_file = { file = \"k\" }\n",
    ));
    assert_eq!(
        texts,
        vec![
            "line 18, column 13: target.directory.graph_url: http:// sends the application's \
             tokens and the directory's users unencrypted; add allow_plain = true to \
             [target.directory] to confirm",
            "line 20, column 8: target.directory.oauth2.flow: Microsoft Graph needs an Entra ID \
             application: flow = \"client-credentials\" (the default here)",
        ]
    );
    let texts = problem_texts(&job_with(
        "",
        "[target.directory]\nkind = \"ldap\"\nurl = \"ldap://dc\"\nbind_dn = \"cn=a\"\n\
         bind_password = { env = \"P\" }\nbase = \"dc=x\"\ngraph_url = \"https://g\"\n",
    ));
    assert_eq!(
        texts,
        vec![
            "line 22, column 13: target.directory.graph_url: only used with kind = \"graph\"; \
             remove it"
        ]
    );
}

#[test]
fn graph_creation_needs_a_licence_a_usage_location_and_a_password() {
    let directory =
        format!("[target.directory]\nkind = \"graph\"\n[target.directory.oauth2]\n{GRAPH_APP}");
    let (_dir, job) = load_ok(&job_with(
        "",
        &format!(
            "{directory}[target.create]\ndomain = \"Contoso.com\"\n\
             license_sku = \"6FD2C87F-B296-42F0-B197-1E91E994B900\"\nusage_location = \"ch\"\n\
             initial_password = {{ env = \"FIRST\" }}\n"
        ),
    ));
    let create = graph(&job).create.clone().expect("Graph creation");
    assert_eq!(create.license_sku, "6fd2c87f-b296-42f0-b197-1e91e994b900");
    assert_eq!(create.usage_location, "CH");
    assert_eq!(create.mailbox_wait_seconds, DEFAULT_MAILBOX_WAIT_SECONDS);
    let c = job.target.create.expect("[target.create]");
    assert_eq!(c.domain, "contoso.com");
    assert!(c.base.is_empty());
    let texts = problem_texts(&job_with(
        "",
        &format!(
            "{directory}[target.create]\nbase = \"ou=x\"\ndomain = \"contoso.com\"\n\
             license_sku = \"E3\"\nusage_location = \"Switzerland\"\n"
        ),
    ));
    assert_eq!(
        texts,
        vec![
            "line 23, column 8: target.create.base: not used when the target directory is \
             Microsoft Graph; remove it",
            "line 25, column 15: target.create.license_sku: must be a skuId, a GUID such as \
             6fd2c87f-b296-42f0-b197-1e91e994b900",
            "line 26, column 18: target.create.usage_location: must be a two-letter country \
             code (ISO 3166-1), such as \"CH\"",
            "target.create.initial_password: missing: Entra ID creates no user without a \
             password: { env = \"VAR\" } or { file = \"path\" }",
        ]
    );
    // The Graph keys are refused for an LDAP target.
    let texts = problem_texts(&job_with(
        "",
        "[target.directory]\nkind = \"ldap\"\nurl = \"ldap://dc\"\nbind_dn = \"cn=a\"\n\
         bind_password = { env = \"P\" }\nbase = \"dc=x\"\n[target.create]\nbase = \"dc=x\"\n\
         domain = \"new.example\"\nlicense_sku = \"6fd2c87f-b296-42f0-b197-1e91e994b900\"\n",
    ));
    assert_eq!(
        texts,
        vec![
            "line 25, column 15: target.create.license_sku: only used when the target \
             directory is Microsoft Graph (kind = \"graph\")"
        ]
    );
}

#[test]
fn profile_keys_are_read_and_a_named_profile_sets_the_default_cap() {
    let (_dir, job) = load_ok(&job_with(
        "profile = \"exchange-online\"\nmax_message_size = 157286400\ndisarm_read_receipts = true",
        "",
    ));
    let source = imap(&job.source);
    assert_eq!(
        source.profile.choice,
        crate::profile::ProfileChoice::Named(crate::profile::Profile::ExchangeOnline)
    );
    assert_eq!(source.profile.max_message_size, Some(157_286_400));
    assert_eq!(source.profile.disarm_read_receipts, Some(true));
    assert_eq!(
        source.max_connections,
        crate::profile::EXCHANGE_MAX_CONNECTIONS
    );
    // auto (the default) keeps the general default until the server is recognised.
    let target = imap(&job.target);
    assert_eq!(target.profile.choice, crate::profile::ProfileChoice::Auto);
    assert_eq!(target.max_connections, 10);
    // The job file's cap wins over the profile's.
    let (_dir, job) = load_ok(&job_with("profile = \"gmail\"\nmax_connections = 3", ""));
    assert_eq!(imap(&job.source).max_connections, 3);
}

#[test]
fn an_unknown_profile_or_a_zero_size_is_refused_with_its_key() {
    assert_eq!(
        problem_texts(&job_with(
            "profile = \"exchange\"\nmax_message_size = 0",
            ""
        )),
        vec![
            "line 8, column 11: source.profile: expected one of \"auto\", \"exchange-online\", \
             \"gmail\", \"dovecot\", \"cyrus\", \"generic\"",
            "line 9, column 20: source.max_message_size: must be at least 1 (bytes)",
        ]
    );
}
