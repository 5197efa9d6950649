//! A real OpenLDAP `slapd` in a temporary directory, for tests of mailferry's LDAP
//! directory support (mailbox IDs from `entryUUID`, addresses and aliases, creating
//! mailboxes by adding entries).
//!
//! Like the Dovecot servers of this crate it is a private process: generated `slapd.conf`
//! (core, cosine, nis, inetorgperson and misc schemas, one `mdb` database), seeded with
//! `slapadd` before it starts, `slapd -d stats` in the foreground in its own process group,
//! listening on a free port on `127.0.0.1`. It runs as the calling user, root included.
//! Nothing outside its directory is used or changed.
//!
//! OpenLDAP is a hard requirement: if `slapd` or the `ldap-utils` tools are missing,
//! [`Slapd::start`] panics and says what to install.
//!
//! ```no_run
//! use mailferry_testkit::{Slapd, SlapdConfig, person_ldif};
//!
//! let mut cfg = SlapdConfig::new("dc=old,dc=example");
//! cfg.seed = person_ldif(
//!     "ou=people,dc=old,dc=example",
//!     "alice",
//!     "Alice Liddell",
//!     "alice@old.example",
//!     &["a.liddell@old.example"],
//!     "pw-alice",
//! );
//! let ldap = Slapd::start(cfg);
//! let id = ldap.entry_uuid("uid=alice,ou=people,dc=old,dc=example");
//! # let _ = id;
//! ```
//!
//! Directory defaults worth knowing:
//! - no access rules: everyone, anonymous included, may read everything (`userPassword`
//!   too); only the admin ([`Slapd::admin_dn`], the `rootdn`) may write.
//! - slapd's default search size limit (500 entries) applies to everyone but the admin.
//! - `entryUUID` is generated for every entry (by `slapadd` for the seed) and indexed;
//!   like every operational attribute it is only returned when asked for by name (or `+`).
//! - slapd's log (`-d stats`: connections, binds, searches with their filters, results) is
//!   `slapd.log` in [`Slapd::dir`]; see [`Slapd::log_tail`].

use std::ffi::OsStr;
use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{
    FRESH_PORT_ATTEMPTS, HOST, KEEP_ENV, READY_TIMEOUT, file_len, find_binary, free_port,
    generate_certificates, probe_tls, read_from, tail, terminate, write_file,
};

/// What to run when slapd or the LDAP tools are missing (Debian's slapd package would
/// otherwise ask for, and create, a system directory of its own).
const SLAPD_INSTALL_HINT: &str = "echo \"slapd slapd/no_configuration boolean true\" | \
     debconf-set-selections; DEBIAN_FRONTEND=noninteractive apt-get install -y slapd ldap-utils";
/// Where Debian's slapd package keeps the schema files.
const SCHEMA_DIR: &str = "/etc/ldap/schema";
/// Schemas every test directory loads: inetOrgPerson needs core and cosine, misc has
/// `inetLocalMailRecipient` (`mailLocalAddress`), nis is there for posixAccount.
const SCHEMAS: [&str; 5] = ["core", "cosine", "nis", "inetorgperson", "misc"];
/// Where slapd's dynamically loaded backends may live (Debian first).
const MODULE_DIRS: [&str; 4] = [
    "/usr/lib/ldap",
    "/usr/lib/x86_64-linux-gnu/ldap",
    "/usr/lib64/openldap",
    "/usr/local/libexec/openldap",
];
/// The log line slapd writes once its listeners are open.
const STARTED_LINE: &str = "slapd starting";

/// What kind of directory to start; build it with [`SlapdConfig::new`] and adjust fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlapdConfig {
    /// Naming context, e.g. `dc=old,dc=example`. Its first RDN must be `dc=`, `o=` or
    /// `ou=` (the suffix entry is a `dcObject` + `organization`, an `organization` or an
    /// `organizationalUnit`).
    pub suffix: String,
    /// Password of the admin, `cn=admin,<suffix>` (the `rootdn`).
    pub admin_password: String,
    /// LDIF loaded with `slapadd` after the suffix entry and `ou=people,<suffix>`
    /// (parents before children; entries separated by empty lines). See [`person_ldif`].
    pub seed: String,
    /// Also listen for LDAPS on a second port ([`Slapd::ldaps_url`]) and offer StartTLS
    /// on the plain one, with a certificate from a private CA ([`Slapd::ca_pem`]). StartTLS
    /// is offered, not required.
    pub tls: bool,
    /// With [`SlapdConfig::tls`]: the server certificate names `localhost` only in its CN,
    /// with no subjectAltName ([`crate::CertNames::CommonNameOnly`]), as Samba's does.
    pub tls_cn_only: bool,
}

impl SlapdConfig {
    /// Admin password `ldappass`, no seed beyond the suffix and `ou=people`, no TLS.
    pub fn new(suffix: &str) -> Self {
        SlapdConfig {
            suffix: suffix.to_owned(),
            admin_password: "ldappass".to_owned(),
            seed: String::new(),
            tls: false,
            tls_cn_only: false,
        }
    }
}

/// A running OpenLDAP server in its own temporary directory.
///
/// Dropping it kills slapd (SIGKILL to its process group) and removes the directory,
/// unless `MAILFERRY_KEEP_TEST_DIRS=1`.
#[derive(Debug)]
pub struct Slapd {
    cfg: SlapdConfig,
    tmp: Option<TempDir>,
    dir: PathBuf,
    port: u16,
    ldaps_port: Option<u16>,
    child: Option<Child>,
}

/// Why one start attempt failed.
enum StartFailure {
    /// slapd exited during start-up.
    Exited(ExitStatus),
    /// Not answering within [`READY_TIMEOUT`].
    Timeout,
}

impl Slapd {
    /// Creates a temporary directory, writes `slapd.conf`, loads the seed with `slapadd`
    /// and starts slapd on a free loopback port (and a second one for LDAPS with
    /// [`SlapdConfig::tls`]); returns once a root DSE search succeeds.
    ///
    /// # Panics
    ///
    /// If OpenLDAP (`slapd`, `ldap-utils`; `openssl` for TLS) is not installed, if the
    /// suffix or the seed is unusable (the message has `slapadd`'s complaint), or if slapd
    /// does not answer within 10 seconds (the message has the end of its log).
    pub fn start(cfg: SlapdConfig) -> Slapd {
        validate(&cfg);
        let slapd_bin = sbin("slapd");
        let slapadd_bin = sbin("slapadd");
        tool("ldapsearch");
        for schema in SCHEMAS {
            let path = Path::new(SCHEMA_DIR).join(format!("{schema}.schema"));
            assert!(
                path.is_file(),
                "\n\n*** mailferry-testkit: the OpenLDAP schema {} is missing.\n*** Install \
                 slapd with:\n***     {SLAPD_INSTALL_HINT}\n\n",
                path.display()
            );
        }
        let module_dir = MODULE_DIRS
            .iter()
            .map(PathBuf::from)
            .find(|dir| dir.join("back_mdb.la").exists() || dir.join("back_mdb.so").exists())
            .unwrap_or_else(|| {
                panic!(
                    "\n\n*** mailferry-testkit: slapd's mdb backend (back_mdb) was not found in \
                     {MODULE_DIRS:?}.\n*** Install slapd with:\n***     {SLAPD_INSTALL_HINT}\n\n"
                )
            });

        let tmp = crate::server_dir("slapd", &std::env::temp_dir());
        let dir = tmp.path().to_path_buf();
        let mut server = Slapd {
            cfg,
            tmp: Some(tmp),
            dir,
            port: 0,
            ldaps_port: None,
            child: None,
        };
        // From here on a panic drops `server`, which kills slapd and cleans up.
        fs::create_dir_all(server.dir.join("db")).unwrap_or_else(|e| {
            panic!(
                "mailferry-testkit: cannot create {}: {e}",
                server.dir.join("db").display()
            )
        });
        if server.cfg.tls {
            let names = if server.cfg.tls_cn_only {
                crate::CertNames::CommonNameOnly
            } else {
                crate::CertNames::Localhost
            };
            generate_certificates(&server.dir.join("tls"), names);
        }
        write_file(&server.conf_path(), &server.render_config(&module_dir));
        server.seed(&slapadd_bin);
        server.launch(&slapd_bin);
        server
    }

    /// `ldap://127.0.0.1:PORT` (plain LDAP; StartTLS is offered with [`SlapdConfig::tls`]).
    pub fn url(&self) -> String {
        format!("ldap://{HOST}:{}", self.port)
    }

    /// `ldaps://127.0.0.1:PORT2` with [`SlapdConfig::tls`], else `None`.
    pub fn ldaps_url(&self) -> Option<String> {
        self.ldaps_port.map(|port| format!("ldaps://{HOST}:{port}"))
    }

    /// PEM file of the server's own certificate (with [`SlapdConfig::tls`], else `None`), e.g.
    /// for [`crate::openssl_fingerprint`].
    pub fn cert_pem(&self) -> Option<PathBuf> {
        self.cfg.tls.then(|| self.dir.join("tls/cert.pem"))
    }

    /// PEM file of the private CA that signed the server certificate (with
    /// [`SlapdConfig::tls`], else `None`). The certificate is for `CN=localhost` with SANs
    /// `DNS:localhost` and `IP:127.0.0.1`; for the OpenLDAP tools, pass it as
    /// `LDAPTLS_CACERT`.
    pub fn ca_pem(&self) -> Option<PathBuf> {
        self.cfg.tls.then(|| self.dir.join("tls/ca.pem"))
    }

    /// The naming context, e.g. `dc=old,dc=example`.
    pub fn suffix(&self) -> &str {
        &self.cfg.suffix
    }

    /// `ou=people,<suffix>`, which always exists.
    pub fn people(&self) -> String {
        format!("ou=people,{}", self.cfg.suffix)
    }

    /// `cn=admin,<suffix>`: the `rootdn`, which may read and write everything.
    pub fn admin_dn(&self) -> String {
        format!("cn=admin,{}", self.cfg.suffix)
    }

    /// Password of [`Slapd::admin_dn`].
    pub fn admin_password(&self) -> &str {
        &self.cfg.admin_password
    }

    /// The server's temporary directory (`slapd.conf`, `seed.ldif`, `slapd.log`, the
    /// database in `db/`, certificates in `tls/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last `lines` lines of slapd's log, for assertion messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let path = self.log_path();
        let text = fs::read_to_string(&path).unwrap_or_default();
        format!(
            "--- slapd.log ({}), last {lines} lines ---\n{}\n",
            path.display(),
            tail(&text, lines)
        )
    }

    /// Applies an LDIF change set as the admin (`ldapmodify`): each record needs a
    /// `changetype:` (`add`, `modify`, `delete`, `modrdn`).
    ///
    /// # Panics
    ///
    /// If `ldapmodify` fails; the message has its output. Records before the failing one
    /// have been applied.
    pub fn modify(&self, ldif: &str) {
        self.apply("ldapmodify", ldif);
    }

    /// Adds entries as the admin (`ldapadd`): plain LDIF entries, as in
    /// [`SlapdConfig::seed`].
    ///
    /// # Panics
    ///
    /// If `ldapadd` fails (e.g. the entry exists); the message has its output.
    pub fn add(&self, ldif: &str) {
        self.apply("ldapadd", ldif);
    }

    /// Searches the whole suffix as the admin and returns `ldapsearch -LLL` output (LDIF,
    /// lines not wrapped). `attrs` as for ldapsearch: empty for all user attributes;
    /// operational ones such as `entryUUID` only by name or with `+`.
    ///
    /// # Panics
    ///
    /// If `ldapsearch` fails (e.g. a malformed filter); the message has its output.
    pub fn search(&self, filter: &str, attrs: &[&str]) -> String {
        let suffix = self.cfg.suffix.clone();
        self.ldapsearch(&["-b", &suffix, "-s", "sub", filter], attrs)
    }

    /// The `entryUUID` of the entry `dn`, e.g. `6f1a4c2e-...`.
    ///
    /// # Panics
    ///
    /// If there is no such entry.
    pub fn entry_uuid(&self, dn: &str) -> String {
        let out = self.ldapsearch(&["-b", dn, "-s", "base", "(objectClass=*)"], &["entryUUID"]);
        out.lines()
            .find_map(|line| line.strip_prefix("entryUUID: "))
            .map(|uuid| uuid.trim().to_owned())
            .unwrap_or_else(|| {
                panic!("mailferry-testkit: no entryUUID for {dn:?}; ldapsearch said:\n{out}")
            })
    }

    fn conf_path(&self) -> PathBuf {
        self.dir.join("slapd.conf")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("slapd.log")
    }

    /// The complete `slapd.conf`. Ports are not in it: they are `-h` arguments.
    fn render_config(&self, module_dir: &Path) -> String {
        let dir = self.dir.display();
        let includes: String = SCHEMAS
            .iter()
            .map(|schema| format!("include \"{SCHEMA_DIR}/{schema}.schema\"\n"))
            .collect();
        let tls = if self.cfg.tls {
            format!(
                "TLSCACertificateFile \"{dir}/tls/ca.pem\"\n\
                 TLSCertificateFile \"{dir}/tls/cert.pem\"\n\
                 TLSCertificateKeyFile \"{dir}/tls/key.pem\"\n"
            )
        } else {
            String::new()
        };
        format!(
            "# generated by mailferry-testkit -- a throw-away test directory\n\
             {includes}\
             pidfile \"{dir}/slapd.pid\"\n\
             argsfile \"{dir}/slapd.args\"\n\
             modulepath \"{module_dir}\"\n\
             moduleload back_mdb\n\
             {tls}\
             \n\
             database mdb\n\
             maxsize 104857600\n\
             suffix \"{suffix}\"\n\
             rootdn \"cn=admin,{suffix}\"\n\
             rootpw \"{rootpw}\"\n\
             directory \"{dir}/db\"\n\
             index objectClass eq\n\
             index uid,mail,mailLocalAddress eq\n\
             index entryUUID eq\n",
            module_dir = module_dir.display(),
            suffix = self.cfg.suffix,
            rootpw = self.cfg.admin_password,
        )
    }

    /// Writes `seed.ldif` (suffix entry, `ou=people`, [`SlapdConfig::seed`]) and loads it
    /// with `slapadd`, which also gives every entry its `entryUUID`.
    fn seed(&self, slapadd: &Path) {
        let suffix = &self.cfg.suffix;
        let (attr, value) = first_rdn(suffix);
        let suffix_entry = match attr.to_ascii_lowercase().as_str() {
            "dc" => format!(
                "objectClass: dcObject\nobjectClass: organization\n{}{}",
                ldif_line("dc", value),
                ldif_line("o", value)
            ),
            "o" => format!("objectClass: organization\n{}", ldif_line("o", value)),
            _ => format!(
                "objectClass: organizationalUnit\n{}",
                ldif_line("ou", value)
            ),
        };
        let ldif = format!(
            "{}{suffix_entry}\n{}objectClass: organizationalUnit\nou: people\n\n{}\n",
            ldif_line("dn", suffix),
            ldif_line("dn", &self.people()),
            self.cfg.seed
        );
        let seed_path = self.dir.join("seed.ldif");
        write_file(&seed_path, &ldif);
        let out = Command::new(slapadd)
            .arg("-f")
            .arg(self.conf_path())
            .arg("-l")
            .arg(&seed_path)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "mailferry-testkit: cannot run {}: {e} (install: {SLAPD_INSTALL_HINT})",
                    slapadd.display()
                )
            });
        assert!(
            out.status.success(),
            "\n\nmailferry-testkit: slapadd could not load the seed ({}); {KEEP_ENV}=1 keeps \
             {}\n{}{}\n--- seed.ldif ---\n{ldif}\n",
            out.status,
            seed_path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts slapd on fresh ports, retrying when a port was taken in the meantime.
    fn launch(&mut self, slapd_bin: &Path) {
        for attempt in 1..=FRESH_PORT_ATTEMPTS {
            self.port = free_port();
            self.ldaps_port = self.cfg.tls.then(|| {
                loop {
                    let port = free_port();
                    if port != self.port {
                        break port;
                    }
                }
            });
            let log_mark = file_len(&self.log_path());
            self.spawn(slapd_bin);
            let failure = match self.wait_ready(log_mark) {
                Ok(()) => return,
                Err(failure) => failure,
            };
            if let Some(child) = self.child.take() {
                terminate(child, false);
            }
            let new_output = read_from(&self.log_path(), log_mark);
            if new_output.contains("Address already in use") && attempt < FRESH_PORT_ATTEMPTS {
                continue;
            }
            let why = match failure {
                StartFailure::Exited(status) => format!("slapd exited during start-up ({status})"),
                StartFailure::Timeout => format!(
                    "slapd did not answer a root DSE search on {} within {} s",
                    self.url(),
                    READY_TIMEOUT.as_secs()
                ),
            };
            panic!(
                "\n\nmailferry-testkit: {why} (attempt {attempt} of {FRESH_PORT_ATTEMPTS}).\n\
                 config: {}\n(set {KEEP_ENV}=1 to keep the directory)\n{}\n",
                self.conf_path().display(),
                self.log_tail(40)
            );
        }
    }

    /// Spawns `slapd -d stats` in the foreground, in its own process group, logging to
    /// `slapd.log`. (`-d 0` would also keep it in the foreground, but slapd then writes
    /// even its start-up errors only to syslog.)
    fn spawn(&mut self, slapd_bin: &Path) {
        let mut listeners = format!("ldap://{HOST}:{}/", self.port);
        if let Some(port) = self.ldaps_port {
            listeners.push_str(&format!(" ldaps://{HOST}:{port}/"));
        }
        let log_path = self.log_path();
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| {
                panic!("mailferry-testkit: cannot open {}: {e}", log_path.display())
            });
        let log_err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("mailferry-testkit: cannot dup a file handle: {e}"));
        let child = Command::new(slapd_bin)
            .arg("-f")
            .arg(self.conf_path())
            .arg("-h")
            .arg(&listeners)
            .args(["-d", "stats"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "mailferry-testkit: cannot run {}: {e} (install: {SLAPD_INSTALL_HINT})",
                    slapd_bin.display()
                )
            });
        self.child = Some(child);
    }

    /// Polls until this slapd has logged that it started and answers a root DSE search
    /// (and, with TLS, its LDAPS port answers a TLS ClientHello), or it exits, or time
    /// runs out.
    fn wait_ready(&mut self, log_mark: u64) -> Result<(), StartFailure> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let url = self.url();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(StartFailure::Exited(status));
            }
            // The log line ties the answer to this process: on a port that was taken in
            // the meantime another server might answer the search.
            let started = read_from(&self.log_path(), log_mark).contains(STARTED_LINE);
            if started
                && root_dse_answers(&url)
                && self
                    .ldaps_port
                    .is_none_or(|port| probe_tls(&SocketAddr::from((Ipv4Addr::LOCALHOST, port))))
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StartFailure::Timeout);
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// Runs `ldapmodify` or `ldapadd` as the admin with `ldif` from a file.
    fn apply(&self, tool_name: &str, ldif: &str) {
        let mut file = tempfile::Builder::new()
            .prefix("change-")
            .suffix(".ldif")
            .tempfile_in(&self.dir)
            .unwrap_or_else(|e| {
                panic!(
                    "mailferry-testkit: cannot create a file in {}: {e}",
                    self.dir.display()
                )
            });
        std::io::Write::write_all(&mut file, ldif.as_bytes())
            .unwrap_or_else(|e| panic!("mailferry-testkit: cannot write an LDIF file: {e}"));
        let out = self.run_tool(tool_name, &[OsStr::new("-f"), file.path().as_os_str()]);
        assert!(
            out.status.success(),
            "mailferry-testkit: {tool_name} failed ({}):\n{}{}\n--- LDIF ---\n{ldif}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// `ldapsearch -LLL -o ldif_wrap=no` as the admin; panics on failure.
    fn ldapsearch(&self, args: &[&str], attrs: &[&str]) -> String {
        let all: Vec<&OsStr> = ["-LLL", "-o", "ldif_wrap=no"]
            .iter()
            .chain(args)
            .chain(attrs)
            .map(OsStr::new)
            .collect();
        let out = self.run_tool("ldapsearch", &all);
        assert!(
            out.status.success(),
            "mailferry-testkit: ldapsearch {args:?} {attrs:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs an `ldap-utils` tool against this server, bound as the admin.
    fn run_tool(&self, name: &str, args: &[&OsStr]) -> Output {
        let tool = tool(name);
        ldap_command(&tool)
            .args(["-x", "-H", &self.url(), "-D", &self.admin_dn(), "-w"])
            .arg(&self.cfg.admin_password)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("mailferry-testkit: cannot run {}: {e}", tool.display()))
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        // mdb survives SIGKILL, and the database is thrown away anyway.
        if let Some(child) = self.child.take() {
            terminate(child, false);
        }
        if let Some(tmp) = self.tmp.take() {
            crate::release_dir(tmp, "slapd");
        }
    }
}

/// An LDIF entry for a mail user below `people_dn` (`uid=<uid>,<people_dn>`): an
/// `inetOrgPerson` with the auxiliary class `inetLocalMailRecipient`, with `uid`, `cn`,
/// `sn` (= `cn`), `mail`, one `mailLocalAddress` per alias and `userPassword` (plain text,
/// as [`crate::LdapUsers`] Dovecot servers expect; or pass `{SSHA}...` etc.). Ends with an
/// empty line, so entries can be concatenated; values that LDIF cannot carry as they are
/// (non-ASCII, leading spaces, ...) are base64-encoded, and the `uid` is escaped in the DN.
/// For [`SlapdConfig::seed`] and [`Slapd::add`].
pub fn person_ldif(
    people_dn: &str,
    uid: &str,
    cn: &str,
    mail: &str,
    aliases: &[&str],
    password: &str,
) -> String {
    let dn = format!("uid={},{people_dn}", escape_dn_value(uid));
    let mut ldif = ldif_line("dn", &dn);
    ldif.push_str("objectClass: inetOrgPerson\nobjectClass: inetLocalMailRecipient\n");
    for (attr, value) in [("uid", uid), ("cn", cn), ("sn", cn), ("mail", mail)] {
        ldif.push_str(&ldif_line(attr, value));
    }
    for alias in aliases {
        ldif.push_str(&ldif_line("mailLocalAddress", alias));
    }
    ldif.push_str(&ldif_line("userPassword", password));
    ldif.push('\n');
    ldif
}

/// `attr: value\n`, or `attr:: <base64>\n` where RFC 2849 does not allow the value as it
/// is (a SAFE-STRING is ASCII without NUL/CR/LF that does not start with a space, `:` or
/// `<`; a trailing space would be lost too).
pub(crate) fn ldif_line(attr: &str, value: &str) -> String {
    let safe = value
        .bytes()
        .all(|b| b.is_ascii() && !matches!(b, 0 | b'\r' | b'\n'))
        && !value.starts_with([' ', ':', '<'])
        && !value.ends_with(' ');
    if safe {
        format!("{attr}: {value}\n")
    } else {
        format!("{attr}:: {}\n", base64(value.as_bytes()))
    }
}

/// Escapes an attribute value for use in a DN (RFC 4514).
pub(crate) fn escape_dn_value(value: &str) -> String {
    let mut out = String::new();
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            _ => out.push(c),
        }
    }
    out
}

/// Standard base64 with padding (LDIF's `::` values).
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The attribute and value of a suffix's first RDN (`dc=old,dc=example` -> `dc`, `old`);
/// [`validate`] made sure there is one of the supported kinds.
fn first_rdn(suffix: &str) -> (&str, &str) {
    let rdn = suffix.split(',').next().unwrap_or_default();
    let (attr, value) = rdn.split_once('=').unwrap_or_default();
    (attr.trim(), value.trim())
}

/// Panics on configurations slapd.conf or the seed cannot express.
fn validate(cfg: &SlapdConfig) {
    let (attr, value) = first_rdn(&cfg.suffix);
    let first = cfg.suffix.split(',').next().unwrap_or_default();
    assert!(
        ["dc", "o", "ou"].contains(&attr.to_ascii_lowercase().as_str())
            && !value.is_empty()
            && !first.contains(['+', '\\', '"']),
        "mailferry-testkit: unusable SlapdConfig::suffix {:?}: its first RDN must be a \
         plain dc=, o= or ou= (e.g. \"dc=old,dc=example\")",
        cfg.suffix
    );
    assert!(
        !cfg.suffix.contains(['"', '\n', '\r']),
        "mailferry-testkit: unusable SlapdConfig::suffix {:?} (no quotes or line breaks)",
        cfg.suffix
    );
    let pw = &cfg.admin_password;
    assert!(
        !pw.is_empty() && !pw.contains(['"', '\\', '\n', '\r']) && pw.trim() == pw,
        "mailferry-testkit: unusable SlapdConfig::admin_password {pw:?} (must be non-empty, \
         without quotes, backslashes, line breaks or surrounding spaces)"
    );
}

/// True if an anonymous root DSE search on `url` succeeds.
fn root_dse_answers(url: &str) -> bool {
    ldap_command(&tool("ldapsearch"))
        .args([
            "-x",
            "-H",
            url,
            "-o",
            "nettimeout=2",
            "-s",
            "base",
            "-b",
            "",
        ])
        .arg("namingContexts")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A command for an OpenLDAP client tool that ignores `ldap.conf`, `~/.ldaprc` and
/// `LDAP*` variables (`LDAPNOINIT`): a developer's defaults must not change what the test
/// kit does.
fn ldap_command(tool: &Path) -> Command {
    let mut command = Command::new(tool);
    command.env("LDAPNOINIT", "1").stdin(Stdio::null());
    command
}

/// Path of a server binary (`slapd`, `slapadd`: /usr/sbin is not in a normal user's PATH).
fn sbin(name: &str) -> PathBuf {
    find_binary(name, &["/usr/sbin", "/usr/local/sbin", "/sbin"]).unwrap_or_else(|| {
        panic!(
            "\n\n*** mailferry-testkit: the `{name}` binary was not found (searched PATH, \
             /usr/sbin, /usr/local/sbin, /sbin).\n*** These tests need a real OpenLDAP \
             server. Install it with:\n***     {SLAPD_INSTALL_HINT}\n\n"
        )
    })
}

/// Path of an `ldap-utils` client tool.
fn tool(name: &str) -> PathBuf {
    find_binary(name, &["/usr/bin", "/usr/local/bin"]).unwrap_or_else(|| {
        panic!(
            "\n\n*** mailferry-testkit: the `{name}` tool was not found.\n*** Install the \
             OpenLDAP tools with:\n***     {SLAPD_INSTALL_HINT}\n\n"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    #[test]
    fn ldif_line_encodes_only_unsafe_values() {
        assert_eq!(ldif_line("cn", "Alice"), "cn: Alice\n");
        assert_eq!(ldif_line("cn", "Zoë"), "cn:: Wm/Dqw==\n");
        assert_eq!(ldif_line("cn", " x"), "cn:: IHg=\n");
        assert_eq!(ldif_line("cn", ":x"), "cn:: Ong=\n");
    }

    #[test]
    fn dn_values_are_escaped() {
        assert_eq!(escape_dn_value("alice"), "alice");
        assert_eq!(escape_dn_value("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape_dn_value("#x "), "\\#x\\ ");
    }
}
