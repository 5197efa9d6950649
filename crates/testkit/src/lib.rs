//! Test-only helpers that start **real** Dovecot 2.3 IMAP servers.
//!
//! mailferry talks to many different IMAP servers, and a hand-written fake server only
//! ever agrees with the client that was written against it. This crate instead starts the
//! real thing: a private `dovecot -F` master process per test, configured in a fresh
//! temporary directory (config, users, logs, runtime sockets and mail store all live
//! there), listening on a free port on `127.0.0.1`. Nothing outside that directory is used
//! or changed, except that when the tests run as root a system user `mailferry-test` is
//! created once to own the mail store (Dovecot refuses to run mail processes as root).
//!
//! It works both as root (CI) and as a normal user ("rootless" Dovecot, where every
//! Dovecot process runs as the calling user).
//!
//! Dovecot is a hard requirement: if the `dovecot` binary is missing, [`Dovecot::start`]
//! panics and tells you to `apt-get install dovecot-core dovecot-imapd`. Tests are never
//! silently skipped.
//!
//! ```no_run
//! use mailferry_testkit::{Dovecot, DovecotConfig};
//!
//! let server = Dovecot::start(DovecotConfig::new(&["alice", "bob"]));
//! // connect to server.host():server.port(), LOGIN alice pw-alice,
//! // or LOGIN "alice*admin" adminpass (master user)
//! # let _ = server.port();
//! ```
//!
//! A real Cyrus IMAP 3.6, a second kind of IMAP server, is started the same way by [`Cyrus`]
//! (unpacked beside Dovecot by `scripts/install-deps.sh`; see its module).
//!
//! Debugging: set `MAILFERRY_KEEP_TEST_DIRS=1` to keep the temporary directory after the
//! server is dropped (its path is printed to stderr); [`Dovecot::log_tail`] shows the end of
//! the Dovecot log, and start-up failures include it in the panic message.
//!
//! Server defaults worth knowing:
//! - mail is stored as `maildir:~/Maildir` (Maildir++). With [`Layout::Slash`] mailbox
//!   names can therefore not contain `.` (Maildir++ uses `.` on disk as its hierarchy
//!   separator); this is a limitation of the test server, not of IMAP.
//! - a failed login does not slow down the logins that follow it: `auth_failure_delay = 0`,
//!   and anvil's per-IP "auth penalty" is switched off by removing its socket at start-up
//!   (Dovecot 2.3 has no setting for it).
//! - plaintext `LOGIN` is allowed without TLS in every mode (`disable_plaintext_auth = no`).
//! - `mail_max_userip_connections = 100`.
//!
//! Users normally come from a passwd-file written from [`DovecotConfig::users`]. With
//! [`DovecotConfig::ldap_users`] they come from an LDAP directory instead, e.g. a [`Slapd`]
//! started by this crate (needs `apt-get install dovecot-ldap`):
//!
//! ```no_run
//! use mailferry_testkit::{Dovecot, DovecotConfig, LdapUsers, Slapd, SlapdConfig, person_ldif};
//!
//! let mut ldap_cfg = SlapdConfig::new("dc=old,dc=example");
//! let people = "ou=people,dc=old,dc=example";
//! ldap_cfg.seed = person_ldif(people, "alice", "Alice", "alice@old.example", &[], "pw-alice");
//! let ldap = Slapd::start(ldap_cfg);
//! let mut cfg = DovecotConfig::new(&[]);
//! cfg.ldap_users = Some(LdapUsers::from_slapd(&ldap));
//! let server = Dovecot::start(cfg);
//! // LOGIN alice pw-alice, LOGIN "alice*admin" adminpass; entries added to the directory
//! // later can log in at once (no auth cache)
//! # let _ = server.port();
//! ```

pub mod browser;
mod cyrus;
pub mod graph;
mod http;
pub mod oauth2;
pub mod postgres;
pub mod proxy;
mod samba;
mod slapd;

pub use cyrus::{CYRUS_ROOT_ENV, Cyrus, CyrusConfig, DEFAULT_CYRUS_ROOT};
pub use samba::{AdUser, SambaConfig, SambaDc, SambaTls};

pub use slapd::{Slapd, SlapdConfig, person_ldif};

use std::ffi::{CStr, CString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Address every test server listens on.
const HOST: &str = "127.0.0.1";
/// System user that owns the mail store when the tests run as root.
const MAIL_OWNER: &str = "mailferry-test";
/// What to install when Dovecot is missing.
const INSTALL_HINT: &str = "apt-get install dovecot-core dovecot-imapd";
/// What to install when Dovecot's LDAP driver is missing.
const LDAP_INSTALL_HINT: &str = "apt-get install dovecot-ldap";
/// Where Debian's `dovecot-ldap` puts the LDAP passdb/userdb driver.
const DEBIAN_LDAP_DRIVER: &str = "/usr/lib/dovecot/modules/auth/libauthdb_ldap.so";
/// Environment variable: `1` keeps the temporary directory after drop.
const KEEP_ENV: &str = "MAILFERRY_KEEP_TEST_DIRS";
/// How long a server may take to greet after being spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `stop` waits for the master to exit after SIGTERM before using SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Start attempts on fresh ports when the chosen port was taken in the meantime.
const FRESH_PORT_ATTEMPTS: usize = 3;
/// Start attempts on the same port (restart) while the old listener is still going away.
const SAME_PORT_ATTEMPTS: usize = 20;

/// Mailbox hierarchy layout of the user's (only) namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `separator = /`, empty prefix: `INBOX`, `Sent`, `Archive/2024`. On disk this is
    /// still Maildir++, so mailbox names cannot contain `.`.
    Slash,
    /// `separator = .`, `prefix = INBOX.` (like Courier or Cyrus): `INBOX`, `INBOX.Sent Items`.
    /// The special-use folders get Exchange/Outlook-style names (see
    /// [`DovecotConfig::special_use`]).
    DotInboxPrefix,
}

/// Which capabilities the server advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Dovecot's full default capability list. Before login:
    /// `IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN`
    /// (+ `STARTTLS`); after login also CONDSTORE, QRESYNC, MULTIAPPEND, SPECIAL-USE,
    /// MOVE, UIDPLUS, ESEARCH, ... (and QUOTA with [`DovecotConfig::quota_bytes`]).
    /// Debian's build has no COMPRESS=DEFLATE unless its zlib plugin is loaded, which
    /// this crate does not do.
    Full,
    /// A small, Exchange-like list:
    /// `IMAP4rev1 LITERAL+ UIDPLUS MOVE ID IDLE NAMESPACE CHILDREN`
    /// (no CONDSTORE, QRESYNC, MULTIAPPEND, SPECIAL-USE, COMPRESS).
    ///
    /// This is Dovecot's `imap_capability`, which *replaces* the list both after login
    /// and before login. Before login (greeting and `CAPABILITY`) the login process
    /// appends what it offers itself, so the pre-login list is
    /// `IMAP4rev1 LITERAL+ UIDPLUS MOVE ID IDLE NAMESPACE CHILDREN AUTH=PLAIN AUTH=LOGIN`,
    /// with `STARTTLS` before the `AUTH=` entries in [`Tls::StartTls`] mode (and without
    /// `SASL-IR`, `LOGIN-REFERRALS` or `ENABLE`, which the Full pre-login list has).
    /// Only the advertisement changes: Dovecot still accepts e.g. `FETCH ... (MODSEQ)`
    /// or `LIST ... RETURN (SPECIAL-USE)` if a client sends them anyway, and `LIST` still
    /// shows `\Sent`-style attributes.
    ExchangeLike,
    /// Dovecot's full list without LIST-STATUS (RFC 5819), as Dovecot 2.3.19 (Debian 12)
    /// advertises it otherwise: CONDSTORE, QRESYNC and the rest, but a folder's STATUS is
    /// not given with LIST, so a client asks for it with STATUS.
    NoListStatus,
}

/// Transport security of the IMAP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// Plain IMAP only; STARTTLS is not offered.
    None,
    /// The listener at [`Dovecot::port`] speaks TLS from the first byte (IMAPS). There is
    /// no plaintext listener.
    Implicit,
    /// The listener at [`Dovecot::port`] is plain IMAP and offers `STARTTLS`. Plaintext
    /// `LOGIN` without STARTTLS is still accepted.
    StartTls,
}

/// What kind of server to start; build it with [`DovecotConfig::new`] and adjust fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DovecotConfig {
    /// `(user, password)` pairs. Names and passwords must not contain `:` or line breaks.
    pub users: Vec<(String, String)>,
    /// Master user `(name, password)`: log in as any user with
    /// `LOGIN "user*name" password` or `AUTHENTICATE PLAIN` with authzid `user` and
    /// authcid `name`.
    pub master: Option<(String, String)>,
    /// Namespace layout.
    pub layout: Layout,
    /// Advertised capabilities.
    pub profile: Profile,
    /// TLS mode; for TLS modes a private CA is generated, see [`Dovecot::ca_pem`].
    pub tls: Tls,
    /// For TLS modes: the server certificate names `localhost` only in its CN, with no
    /// subjectAltName ([`CertNames::CommonNameOnly`]), as many a legacy server's does.
    pub tls_cn_only: bool,
    /// Auto-create (and subscribe) special-use mailboxes for every user.
    ///
    /// [`Layout::Slash`]: `Sent` (`\Sent`), `Drafts` (`\Drafts`), `Trash` (`\Trash`),
    /// `Junk` (`\Junk`), `Archive` (`\Archive`).
    /// [`Layout::DotInboxPrefix`]: `INBOX.Sent Items` (`\Sent`), `INBOX.Drafts`
    /// (`\Drafts`), `INBOX.Deleted Items` (`\Trash`), `INBOX.Junk E-mail` (`\Junk`),
    /// `INBOX.Archive` (`\Archive`).
    pub special_use: bool,
    /// Per-user storage quota in bytes (Dovecot `quota` + `imap_quota` plugins, Maildir++
    /// quota, no grace): an `APPEND` that would exceed it fails with
    /// `NO [OVERQUOTA] Quota exceeded ...`.
    pub quota_bytes: Option<u64>,
    /// Take the users from an LDAP directory instead of [`DovecotConfig::users`] (which
    /// must then be empty). See [`LdapUsers`].
    pub ldap_users: Option<LdapUsers>,
    /// Also take OAuth2 tokens (`AUTHENTICATE XOAUTH2` / `OAUTHBEARER`), signed JWTs
    /// validated by Dovecot's `oauth2` passdb without an identity provider; see
    /// [`oauth2::DovecotOAuth2`] and [`oauth2::TokenEndpoint`]. Password and master logins
    /// keep working.
    pub oauth2: Option<oauth2::DovecotOAuth2>,
}

/// Where a Dovecot with [`DovecotConfig::ldap_users`] finds its users.
///
/// Every entry below `base` that matches `(&(objectClass=inetOrgPerson)(uid=<login>))` is
/// a user: it logs in as its `uid` with its `userPassword` (plain text, or `{SCHEME}...`
/// in any scheme Dovecot knows), and its home is `<server dir>/mail/<uid>` (see
/// [`Dovecot::mail_dir`]). Dovecot binds as `bind_dn` and looks every login up afresh
/// (`auth_cache_size = 0`), so an entry added, changed or removed while the server runs
/// counts from the next login on. Other users do not exist: their logins fail, master
/// logins (`LOGIN "nobody*admin" ...`) included, and so does `doveadm user nobody`.
///
/// The connection is `url` as given (plain `ldap://`: no StartTLS, and no CA for
/// `ldaps://`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapUsers {
    /// e.g. `ldap://127.0.0.1:38901`.
    pub url: String,
    /// Search base, e.g. `ou=people,dc=old,dc=example`.
    pub base: String,
    /// DN Dovecot binds as to look users up.
    pub bind_dn: String,
    /// Password of `bind_dn`.
    pub bind_password: String,
    /// What the entries look like.
    pub schema: LdapSchema,
    /// CA certificate (PEM) that verifies the directory's certificate, for `ldaps://`.
    pub ca_file: Option<PathBuf>,
}

/// How a Dovecot with [`DovecotConfig::ldap_users`] finds and authenticates its users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LdapSchema {
    /// `inetOrgPerson` entries, the login in `uid`, the password read from `userPassword`.
    OpenLdap,
    /// Active Directory users (`objectClass: user`), the login in `sAMAccountName`; a user's
    /// password is checked by binding as the user (`auth_bind`: AD never reveals
    /// passwords). Master logins (`LOGIN "user*admin"`) need only the userdb lookup.
    ActiveDirectory,
}

impl LdapUsers {
    /// Users below [`Slapd::people`], looked up as the directory's admin.
    pub fn from_slapd(ldap: &Slapd) -> Self {
        LdapUsers {
            url: ldap.url(),
            base: ldap.people(),
            bind_dn: ldap.admin_dn(),
            bind_password: ldap.admin_password().to_owned(),
            schema: LdapSchema::OpenLdap,
            ca_file: None,
        }
    }

    /// Active Directory users below `base` of a [`SambaDc`], over LDAPS verified with the
    /// DC's CA, looked up as its Administrator.
    pub fn from_samba(dc: &SambaDc, base: &str) -> Self {
        LdapUsers {
            url: dc.ldaps_url(),
            base: base.to_owned(),
            bind_dn: dc.admin_dn(),
            bind_password: dc.admin_password().to_owned(),
            schema: LdapSchema::ActiveDirectory,
            ca_file: Some(dc.ca_pem()),
        }
    }
}

impl DovecotConfig {
    /// Users with password `pw-<user>` (so `alice` has `pw-alice`), master user
    /// `admin`/`adminpass`, [`Layout::Slash`], [`Profile::Full`], [`Tls::None`],
    /// special-use mailboxes, no quota, users from [`DovecotConfig::users`] (no LDAP).
    pub fn new(users: &[&str]) -> Self {
        DovecotConfig {
            users: users
                .iter()
                .map(|u| ((*u).to_owned(), format!("pw-{u}")))
                .collect(),
            master: Some(("admin".to_owned(), "adminpass".to_owned())),
            layout: Layout::Slash,
            profile: Profile::Full,
            tls: Tls::None,
            tls_cn_only: false,
            special_use: true,
            quota_bytes: None,
            ldap_users: None,
            oauth2: None,
        }
    }
}

/// Who the Dovecot processes run as.
#[derive(Debug, Clone)]
enum Identity {
    /// Tests run as root: Dovecot's usual privilege separation, mail owned by
    /// [`MAIL_OWNER`].
    Root { mail_uid: u32, mail_gid: u32 },
    /// Tests run as a normal user: rootless Dovecot, everything runs as this user and
    /// its primary group.
    User {
        name: String,
        uid: u32,
        group: String,
    },
}

/// A running Dovecot IMAP server in its own temporary directory.
///
/// Dropping it kills the server (SIGKILL to its process group: nothing of it is needed
/// any more, and a graceful stop can take Dovecot a second or two) and removes the
/// directory, unless `MAILFERRY_KEEP_TEST_DIRS=1`.
#[derive(Debug)]
pub struct Dovecot {
    cfg: DovecotConfig,
    identity: Identity,
    dovecot_bin: PathBuf,
    tmp: Option<TempDir>,
    dir: PathBuf,
    conf: PathBuf,
    port: u16,
    child: Option<Child>,
}

/// Why one start attempt failed.
enum StartFailure {
    /// The master process exited during start-up.
    Exited(ExitStatus),
    /// No greeting within [`READY_TIMEOUT`].
    Timeout,
}

impl Dovecot {
    /// Creates a temporary directory, writes the configuration and starts Dovecot on a
    /// free loopback port; returns once the server has sent its greeting.
    ///
    /// # Panics
    ///
    /// If Dovecot (or `openssl`, for TLS modes, or `dovecot-ldap`, for
    /// [`DovecotConfig::ldap_users`]) is not installed, if the configuration is
    /// invalid, or if the server does not greet within 10 seconds. The message includes
    /// the end of the Dovecot log.
    pub fn start(cfg: DovecotConfig) -> Dovecot {
        let dovecot_bin = find_binary("dovecot", &["/usr/sbin", "/usr/local/sbin", "/sbin"])
            .unwrap_or_else(|| {
                panic!(
                    "\n\n*** mailferry-testkit: the `dovecot` binary was not found (searched PATH, \
                     /usr/sbin, /usr/local/sbin, /sbin).\n*** These tests need a real Dovecot \
                     2.3 IMAP server. Install it with:\n***     {INSTALL_HINT}\n\n"
                )
            });
        validate(&cfg);
        // Without the driver Dovecot starts, but its auth process dies at the first login;
        // say so up front. (Only where Debian's module directory exists: another build may
        // have the driver elsewhere or built in.)
        if cfg.ldap_users.is_some()
            && Path::new("/usr/lib/dovecot/modules").is_dir()
            && !Path::new(DEBIAN_LDAP_DRIVER).exists()
        {
            panic!(
                "\n\n*** mailferry-testkit: DovecotConfig::ldap_users needs Dovecot's LDAP driver \
                 ({DEBIAN_LDAP_DRIVER} is missing).\n*** Install it with:\n***     \
                 {LDAP_INSTALL_HINT}\n\n"
            );
        }
        let identity = current_identity();

        // As root, Dovecot's unprivileged processes (auth runs as `dovecot`, mail as
        // `mailferry-test`) must be able to reach the directory: use /tmp, not a TMPDIR
        // that may live under /root.
        let parent = match identity {
            Identity::Root { .. } => PathBuf::from("/tmp"),
            Identity::User { .. } => std::env::temp_dir(),
        };
        let tmp = server_dir("dovecot", &parent);
        let dir = tmp.path().to_path_buf();
        let conf = dir.join("etc/dovecot.conf");

        let mut server = Dovecot {
            cfg,
            identity,
            dovecot_bin,
            tmp: Some(tmp),
            dir,
            conf,
            port: 0,
            child: None,
        };
        // From here on a panic drops `server`, which stops Dovecot and cleans up.
        server.prepare_dir();
        server.launch(None);
        server
    }

    /// TCP port of the IMAP listener (the TLS listener for [`Tls::Implicit`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Host to connect to: always `"127.0.0.1"`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// PEM file of the server's own certificate (TLS modes), e.g. for
    /// [`openssl_fingerprint`].
    pub fn cert_pem(&self) -> Option<PathBuf> {
        match self.cfg.tls {
            Tls::None => None,
            Tls::Implicit | Tls::StartTls => Some(self.dir.join("tls/cert.pem")),
        }
    }

    /// PEM file of the private CA that signed the server certificate (for
    /// [`Tls::Implicit`] and [`Tls::StartTls`]; `None` for [`Tls::None`]). The server
    /// certificate is for `CN=localhost` with SANs `DNS:localhost` and `IP:127.0.0.1`.
    pub fn ca_pem(&self) -> Option<PathBuf> {
        match self.cfg.tls {
            Tls::None => None,
            Tls::Implicit | Tls::StartTls => Some(self.dir.join("tls/ca.pem")),
        }
    }

    /// The server's temporary directory (config in `etc/`, logs in `log/`, homes in
    /// `mail/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Home directory of `user`; its mail is in `Maildir/` below it (created on first
    /// login).
    pub fn mail_dir(&self, user: &str) -> PathBuf {
        self.dir.join("mail").join(user)
    }

    /// The Dovecot log as it is now (every instance logs at info level: logins, logouts).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last `lines` lines of the Dovecot log (plus the master's stderr, if it wrote
    /// anything), for assertion messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for (name, path) in [
            ("dovecot.log", self.log_path()),
            ("dovecot stderr", self.stderr_path()),
        ] {
            let text = fs::read_to_string(&path).unwrap_or_default();
            if text.is_empty() && name != "dovecot.log" {
                continue;
            }
            out.push_str(&format!(
                "--- {name} ({}), last {lines} lines ---\n",
                path.display()
            ));
            out.push_str(&tail(&text, lines));
            if !out.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }

    /// Stops the server and starts it again on the same port, with the same
    /// configuration and mail store. Open connections are cut.
    ///
    /// # Panics
    ///
    /// If the server does not come back (see [`Dovecot::start`]).
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port;
        self.launch(Some(port));
    }

    /// Stops the server gracefully: SIGTERM to its process group, waiting for the master
    /// (SIGKILL to the group after 10 s), then SIGKILL to children still alive 1 s later.
    /// Does nothing if it is not running. The directory is kept until drop.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child, true);
        }
    }

    /// Runs `doveadm -c <this server's config> <args>` and returns its output (e.g.
    /// `["mailbox", "list", "-u", "alice"]`). Works as root and rootless.
    ///
    /// # Panics
    ///
    /// If `doveadm` cannot be run at all.
    pub fn doveadm(&self, args: &[&str]) -> Output {
        let doveadm = find_binary("doveadm", &["/usr/bin", "/usr/local/bin", "/usr/sbin"])
            .unwrap_or_else(|| {
                panic!("mailferry-testkit: `doveadm` not found; install it with: {INSTALL_HINT}")
            });
        Command::new(&doveadm)
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("mailferry-testkit: cannot run {}: {e}", doveadm.display()))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("log/dovecot.log")
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.join("log/stderr.log")
    }

    fn ldap_conf_path(&self) -> PathBuf {
        self.dir.join("etc/dovecot-ldap.conf.ext")
    }

    /// `dovecot-ldap.conf.ext`, shared by the LDAP passdb and userdb.
    fn render_ldap_config(&self, ldap: &LdapUsers) -> String {
        let dir = self.dir.display();
        // Static userdb fields; the LDAP lookup itself decides whether the user exists.
        let ids = match self.identity {
            Identity::Root { mail_uid, mail_gid } => format!(", =uid={mail_uid}, =gid={mail_gid}"),
            Identity::User { .. } => String::new(),
        };
        if ldap.schema == LdapSchema::ActiveDirectory {
            let tls = ldap
                .ca_file
                .as_ref()
                .map(|ca| {
                    format!(
                        "tls_ca_cert_file = {}\ntls_require_cert = demand\n",
                        ca.display()
                    )
                })
                .unwrap_or_default();
            return format!(
                "# generated by mailferry-testkit (Active Directory)\n\
                 uris = {url}\n\
                 {tls}\
                 dn = {bind_dn}\n\
                 dnpass = {bind_password}\n\
                 auth_bind = yes\n\
                 ldap_version = 3\n\
                 base = {base}\n\
                 scope = subtree\n\
                 deref = never\n\
                 pass_attrs = sAMAccountName=user\n\
                 pass_filter = (&(objectClass=user)(sAMAccountName=%n))\n\
                 user_attrs = =home={dir}/mail/%u{ids}\n\
                 user_filter = (&(objectClass=user)(sAMAccountName=%n))\n\
                 iterate_attrs = sAMAccountName=user\n\
                 iterate_filter = (objectClass=user)\n",
                url = ldap.url,
                bind_dn = ldap.bind_dn,
                bind_password = ldap.bind_password,
                base = ldap.base,
            );
        }
        format!(
            "# generated by mailferry-testkit\n\
             uris = {url}\n\
             dn = {bind_dn}\n\
             dnpass = {bind_password}\n\
             auth_bind = no\n\
             ldap_version = 3\n\
             base = {base}\n\
             scope = subtree\n\
             deref = never\n\
             # userPassword values without a {{SCHEME}} prefix are plain text\n\
             default_pass_scheme = PLAIN\n\
             # uid=user: the directory's spelling of the name is the canonical one\n\
             pass_attrs = uid=user, userPassword=password\n\
             pass_filter = (&(objectClass=inetOrgPerson)(uid=%n))\n\
             user_attrs = =home={dir}/mail/%u{ids}\n\
             user_filter = (&(objectClass=inetOrgPerson)(uid=%n))\n\
             iterate_attrs = uid=user\n\
             iterate_filter = (objectClass=inetOrgPerson)\n",
            url = ldap.url,
            bind_dn = ldap.bind_dn,
            bind_password = ldap.bind_password,
            base = ldap.base,
        )
    }

    /// Anvil's socket for the auth penalty, see [`Dovecot::wait_ready`].
    fn penalty_socket(&self) -> PathBuf {
        self.dir.join("run/anvil-auth-penalty")
    }

    /// Creates the directory tree, the password files and (for TLS) the certificates.
    fn prepare_dir(&self) {
        for sub in ["etc", "log", "state", "mail"] {
            let path = self.dir.join(sub);
            fs::create_dir_all(&path).unwrap_or_else(|e| {
                panic!("mailferry-testkit: cannot create {}: {e}", path.display())
            });
        }

        let users: String = self
            .cfg
            .users
            .iter()
            .map(|(user, pass)| format!("{user}:{{PLAIN}}{pass}::::::\n"))
            .collect();
        let masters: String = self
            .cfg
            .master
            .iter()
            .map(|(user, pass)| format!("{user}:{{PLAIN}}{pass}\n"))
            .collect();
        write_file(&self.dir.join("etc/users"), &users);
        write_file(&self.dir.join("etc/master-users"), &masters);
        if let Some(ldap) = &self.cfg.ldap_users {
            write_file(&self.ldap_conf_path(), &self.render_ldap_config(ldap));
        }
        let oauth2_files = match &self.cfg.oauth2 {
            Some(oauth2) => oauth2.prepare(&self.dir),
            None => Vec::new(),
        };

        if let Identity::Root { mail_uid, mail_gid } = self.identity {
            // tempfile creates the directory 0700; auth runs as `dovecot`, mail processes
            // as `mailferry-test`, and both need to get in.
            for (path, mode) in [
                (self.dir.clone(), 0o755),
                (self.dir.join("etc"), 0o755),
                (self.dir.join("etc/users"), 0o644),
                (self.dir.join("etc/master-users"), 0o644),
            ] {
                set_mode(&path, mode);
            }
            if self.cfg.ldap_users.is_some() {
                set_mode(&self.ldap_conf_path(), 0o644);
            }
            for path in &oauth2_files {
                set_mode(path, if path.is_dir() { 0o755 } else { 0o644 });
            }
            let mail = self.dir.join("mail");
            std::os::unix::fs::chown(&mail, Some(mail_uid), Some(mail_gid)).unwrap_or_else(|e| {
                panic!(
                    "mailferry-testkit: cannot chown {} to {MAIL_OWNER}: {e}",
                    mail.display()
                )
            });
            set_mode(&mail, 0o700);
        }

        if self.cfg.tls != Tls::None {
            let names = if self.cfg.tls_cn_only {
                CertNames::CommonNameOnly
            } else {
                CertNames::Localhost
            };
            generate_certificates(&self.dir.join("tls"), names);
        }
    }

    /// Writes the config for a port and starts Dovecot, retrying on "address in use":
    /// on fresh ports when `fixed_port` is `None`, else on that port after a pause.
    fn launch(&mut self, fixed_port: Option<u16>) {
        let attempts = if fixed_port.is_some() {
            SAME_PORT_ATTEMPTS
        } else {
            FRESH_PORT_ATTEMPTS
        };
        for attempt in 1..=attempts {
            self.port = fixed_port.unwrap_or_else(free_port);
            write_file(&self.conf, &self.render_config());
            if matches!(self.identity, Identity::Root { .. }) {
                set_mode(&self.conf, 0o644);
            }

            // A socket file left behind by an earlier master would be taken for the new
            // one by `wait_ready`.
            let _ = fs::remove_file(self.penalty_socket());
            let log_mark = file_len(&self.log_path());
            let stderr_mark = file_len(&self.stderr_path());
            self.spawn();
            let failure = match self.wait_ready() {
                Ok(()) => return,
                Err(failure) => failure,
            };
            if let Some(child) = self.child.take() {
                terminate(child, false);
            }
            let new_output = format!(
                "{}{}",
                read_from(&self.log_path(), log_mark),
                read_from(&self.stderr_path(), stderr_mark)
            );
            if new_output.contains("Address already in use") && attempt < attempts {
                if fixed_port.is_some() {
                    sleep(Duration::from_millis(250));
                }
                continue;
            }
            let why = match failure {
                StartFailure::Exited(status) => {
                    format!("dovecot exited during start-up ({status})")
                }
                StartFailure::Timeout => format!(
                    "dovecot did not send an IMAP greeting on {HOST}:{} within {} s",
                    self.port,
                    READY_TIMEOUT.as_secs()
                ),
            };
            panic!(
                "\n\nmailferry-testkit: {why} (attempt {attempt} of {attempts}).\n\
                 config: {}\n(if the log mentions an unknown protocol or missing binary, run: \
                 {INSTALL_HINT}; set {KEEP_ENV}=1 to keep the directory)\n{}\n",
                self.conf.display(),
                self.log_tail(40)
            );
        }
    }

    /// Spawns `dovecot -F -c <conf>` in its own process group with stdio redirected.
    fn spawn(&mut self) {
        let stderr_path = self.stderr_path();
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_path)
            .unwrap_or_else(|e| {
                panic!(
                    "mailferry-testkit: cannot open {}: {e}",
                    stderr_path.display()
                )
            });
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("mailferry-testkit: cannot dup a file handle: {e}"));
        let child = Command::new(&self.dovecot_bin)
            .arg("-F")
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "mailferry-testkit: cannot run {}: {e} (install: {INSTALL_HINT})",
                    self.dovecot_bin.display()
                )
            });
        self.child = Some(child);
    }

    /// Polls until the port accepts a connection and Dovecot greets (`* OK`, or a TLS
    /// handshake record for [`Tls::Implicit`]), or the master exits, or time runs out.
    fn wait_ready(&mut self) -> Result<(), StartFailure> {
        let started = Instant::now();
        let deadline = started + READY_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let penalty_socket = self.penalty_socket();
        let mut penalty_disabled = false;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(StartFailure::Exited(status));
            }
            // Dovecot 2.3 delays every login from an IP after a failed one (anvil "auth
            // penalty", 2-15 s; auth_failure_delay and login_trusted_networks do not turn
            // it off). The auth process disables the penalty if it cannot find anvil's
            // penalty socket, so remove that socket before the first connection makes the
            // master start the auth process. The master created it together with the
            // IMAP listener, so wait for it (at most 2 s, in case a version names it
            // differently).
            if !penalty_disabled {
                if penalty_socket.exists() {
                    // Best effort: if it fails, logins are merely slower after a failure.
                    let _ = fs::remove_file(&penalty_socket);
                    penalty_disabled = true;
                } else if started.elapsed() < Duration::from_secs(2) {
                    sleep(Duration::from_millis(10));
                    continue;
                } else {
                    penalty_disabled = true;
                }
            }
            let ready = match self.cfg.tls {
                Tls::Implicit => probe_tls(&addr),
                Tls::None | Tls::StartTls => probe_greeting(&addr),
            };
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StartFailure::Timeout);
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// The complete `dovecot.conf` for the current port.
    fn render_config(&self) -> String {
        let dir = self.dir.display();
        let port = self.port;

        let (identity, userdb_ids, login_chroot) = match &self.identity {
            Identity::Root { mail_uid, mail_gid } => (
                format!(
                    "default_login_user = dovenull\n\
                     default_internal_user = dovecot\n\
                     first_valid_uid = {mail_uid}\n\
                     last_valid_uid = {mail_uid}\n"
                ),
                format!(" uid={mail_uid} gid={mail_gid}"),
                "",
            ),
            Identity::User { name, uid, group } => (
                format!(
                    "# rootless: every process runs as {name}\n\
                     default_login_user = {name}\n\
                     default_internal_user = {name}\n\
                     default_internal_group = {group}\n\
                     first_valid_uid = {uid}\n\
                     last_valid_uid = {uid}\n\
                     service anvil {{\n  chroot =\n}}\n"
                ),
                String::new(),
                "  chroot =\n",
            ),
        };

        let ssl = match self.cfg.tls {
            Tls::None => "ssl = no\n".to_owned(),
            Tls::Implicit | Tls::StartTls => {
                format!("ssl = yes\nssl_cert = <{dir}/tls/cert.pem\nssl_key = <{dir}/tls/key.pem\n")
            }
        };
        let (imap_port, imaps_port) = match self.cfg.tls {
            Tls::None | Tls::StartTls => (port, 0),
            Tls::Implicit => (0, port),
        };

        let capability = match self.cfg.profile {
            Profile::Full => "",
            Profile::ExchangeLike => {
                "imap_capability = IMAP4rev1 LITERAL+ UIDPLUS MOVE ID IDLE NAMESPACE CHILDREN\n"
            }
            // Dovecot 2.3.19's own list (its imap binary's CAPABILITY_STRING, with the
            // LITERAL+ and SPECIAL-USE it adds), less LIST-STATUS.
            Profile::NoListStatus => {
                "imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT \
                 SORT=DISPLAY THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND \
                 URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED \
                 I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH \
                 BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+ \
                 SPECIAL-USE\n"
            }
        };

        let (separator, prefix) = match self.cfg.layout {
            Layout::Slash => ("/", ""),
            Layout::DotInboxPrefix => (".", "INBOX."),
        };
        // `mailbox` names inside a namespace are relative to its prefix: "Sent Items"
        // becomes "INBOX.Sent Items".
        let mut mailboxes = String::new();
        if self.cfg.special_use {
            let names: [(&str, &str); 5] = match self.cfg.layout {
                Layout::Slash => [
                    ("Sent", "\\Sent"),
                    ("Drafts", "\\Drafts"),
                    ("Trash", "\\Trash"),
                    ("Junk", "\\Junk"),
                    ("Archive", "\\Archive"),
                ],
                Layout::DotInboxPrefix => [
                    ("Sent Items", "\\Sent"),
                    ("Drafts", "\\Drafts"),
                    ("Deleted Items", "\\Trash"),
                    ("Junk E-mail", "\\Junk"),
                    ("Archive", "\\Archive"),
                ],
            };
            for (name, special_use) in names {
                mailboxes.push_str(&format!(
                    "  mailbox \"{name}\" {{\n    special_use = {special_use}\n    auto = subscribe\n  }}\n"
                ));
            }
        }

        let master_passdb = if self.cfg.master.is_some() {
            // With auth_bind (Active Directory) the LDAP passdb can only check a password, not
            // look a user up, so a master login skips it (`pass = yes` would ask it); the
            // userdb lookup still refuses users the directory does not have.
            let pass = match &self.cfg.ldap_users {
                Some(l) if l.schema == LdapSchema::ActiveDirectory => "",
                _ => "  pass = yes\n",
            };
            format!(
                "passdb {{\n  driver = passwd-file\n  \
                 args = scheme=PLAIN username_format=%n {dir}/etc/master-users\n  \
                 master = yes\n{pass}}}\n"
            )
        } else {
            String::new()
        };

        let (oauth2_deny, oauth2_passdb, mechanisms, password_only) = match &self.cfg.oauth2 {
            Some(oauth2) => {
                let (deny, passdb) = oauth2.passdbs(&self.dir);
                (
                    deny,
                    passdb,
                    "plain login xoauth2 oauthbearer",
                    "  mechanisms = plain login\n",
                )
            }
            None => (String::new(), String::new(), "plain login", ""),
        };
        let user_dbs = if self.cfg.ldap_users.is_some() {
            let ldap_conf = self.ldap_conf_path();
            let ldap_conf = ldap_conf.display();
            format!(
                "# users from LDAP, looked up afresh at every login\n\
                 auth_cache_size = 0\n\
                 passdb {{\n  driver = ldap\n  args = {ldap_conf}\n{password_only}}}\n\
                 userdb {{\n  driver = ldap\n  args = {ldap_conf}\n}}\n"
            )
        } else {
            format!(
                "passdb {{\n  \
                   driver = passwd-file\n  \
                   args = scheme=PLAIN username_format=%u {dir}/etc/users\n\
                 {password_only}\
                 }}\n\
                 userdb {{\n  \
                   driver = passwd-file\n  \
                   args = username_format=%u {dir}/etc/users\n  \
                   default_fields = home={dir}/mail/%u{userdb_ids}\n\
                 }}\n"
            )
        };

        let (global_plugins, imap_plugins, quota) = match self.cfg.quota_bytes {
            None => ("", "", String::new()),
            Some(bytes) => (
                "mail_plugins = $mail_plugins quota\n",
                "  mail_plugins = $mail_plugins imap_quota\n",
                format!(
                    "plugin {{\n  quota = maildir:User quota\n  quota_rule = *:bytes={bytes}\n  \
                     quota_grace = 0\n}}\n"
                ),
            ),
        };

        format!(
            "# generated by mailferry-testkit -- a throw-away test server\n\
             instance_name = mailferry-testkit-{port}\n\
             base_dir = {dir}/run\n\
             state_dir = {dir}/state\n\
             log_path = {dir}/log/dovecot.log\n\
             info_log_path = {dir}/log/dovecot.log\n\
             listen = {HOST}\n\
             protocols = imap\n\
             {identity}\
             mail_location = maildir:~/Maildir\n\
             mail_fsync = never\n\
             {global_plugins}\
             disable_plaintext_auth = no\n\
             auth_mechanisms = {mechanisms}\n\
             auth_master_user_separator = *\n\
             auth_verbose = yes\n\
             # no delay after a failed login (the anvil penalty is disabled at start-up)\n\
             auth_failure_delay = 0\n\
             {ssl}\
             {capability}\
             \n\
             namespace inbox {{\n  \
               inbox = yes\n  \
               separator = {separator}\n  \
               prefix = {prefix}\n\
             {mailboxes}\
             }}\n\
             \n\
             {oauth2_deny}\
             {master_passdb}\
             {user_dbs}\
             {oauth2_passdb}\
             \n\
             service imap-login {{\n  \
               inet_listener imap {{\n    address = {HOST}\n    port = {imap_port}\n  }}\n  \
               inet_listener imaps {{\n    address = {HOST}\n    port = {imaps_port}\n    ssl = yes\n  }}\n\
             {login_chroot}\
             }}\n\
             service pop3-login {{\n  \
               inet_listener pop3 {{\n    port = 0\n  }}\n  \
               inet_listener pop3s {{\n    port = 0\n  }}\n\
             }}\n\
             service submission-login {{\n  \
               inet_listener submission {{\n    port = 0\n  }}\n\
             }}\n\
             service lmtp {{\n  \
               unix_listener lmtp {{\n    mode = 0600\n  }}\n\
             }}\n\
             protocol imap {{\n  \
               mail_max_userip_connections = 100\n\
             {imap_plugins}\
             }}\n\
             {quota}"
        )
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // Nothing of the server is needed any more: no graceful shutdown, which can take
        // Dovecot a second or two.
        if let Some(child) = self.child.take() {
            terminate(child, false);
        }
        if let Some(tmp) = self.tmp.take() {
            release_dir(tmp, "Dovecot");
        }
    }
}

/// A server's temporary directory under `parent` (`mailferry-<prefix>-…`); a failure is the
/// test's, said loudly.
pub(crate) fn server_dir(prefix: &str, parent: &Path) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("mailferry-{prefix}-"))
        .tempdir_in(parent)
        .unwrap_or_else(|e| {
            panic!(
                "mailferry-testkit: cannot create a temp dir in {}: {e}",
                parent.display()
            )
        })
}

/// Removes a server's temporary directory, or keeps it (and says where) when
/// `MAILFERRY_KEEP_TEST_DIRS=1`.
pub(crate) fn release_dir(tmp: TempDir, server: &str) {
    let path = tmp.path().to_path_buf();
    if std::env::var(KEEP_ENV).is_ok_and(|v| v == "1") {
        let kept = tmp.keep();
        eprintln!(
            "mailferry-testkit: kept {server} test dir {} ({KEEP_ENV}=1)",
            kept.display()
        );
    } else if let Err(e) = tmp.close() {
        eprintln!(
            "mailferry-testkit: could not remove {}: {e}",
            path.display()
        );
    }
}

/// Panics on names or passwords that cannot be written to a passwd-file.
fn validate(cfg: &DovecotConfig) {
    if let Some(ldap) = &cfg.ldap_users {
        assert!(
            cfg.users.is_empty(),
            "mailferry-testkit: DovecotConfig::ldap_users and DovecotConfig::users are \
             exclusive (with LDAP every user comes from the directory); users: {:?}",
            cfg.users
        );
        for (name, value) in [
            ("url", &ldap.url),
            ("base", &ldap.base),
            ("bind_dn", &ldap.bind_dn),
            ("bind_password", &ldap.bind_password),
        ] {
            assert!(
                !value.is_empty() && !value.contains(['\n', '\r']) && value.trim() == value,
                "mailferry-testkit: unusable LdapUsers::{name} {value:?} (must be non-empty, \
                 without line breaks or surrounding spaces)"
            );
        }
    }
    let pairs = cfg.users.iter().chain(cfg.master.iter());
    for (user, pass) in pairs {
        let bad = |s: &str| s.is_empty() || s.contains([':', '\n', '\r']);
        assert!(
            !bad(user) && !user.contains(['*', '/', ' ']) && !bad(pass),
            "mailferry-testkit: unusable user/password {user:?}/{pass:?} (must be non-empty, \
             without ':' or line breaks; user names also without '*', '/' or spaces)"
        );
    }
}

/// Decides root vs rootless mode; as root makes sure the mail owner exists.
fn current_identity() -> Identity {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        let (mail_uid, mail_gid) = ensure_mail_owner();
        Identity::Root { mail_uid, mail_gid }
    } else {
        // SAFETY: getegid has no preconditions and cannot fail.
        let egid = unsafe { libc::getegid() };
        let name = user_name(euid).unwrap_or_else(|| {
            panic!(
                "mailferry-testkit: uid {euid} has no passwd entry; rootless Dovecot needs a \
                 user name for default_login_user/default_internal_user"
            )
        });
        let group = group_name(egid).unwrap_or_else(|| {
            panic!(
                "mailferry-testkit: gid {egid} has no group entry; rootless Dovecot needs a \
                 group name for default_internal_group"
            )
        });
        Identity::User {
            name,
            uid: euid,
            group,
        }
    }
}

/// Returns uid/gid of [`MAIL_OWNER`], creating the system user if needed.
fn ensure_mail_owner() -> (u32, u32) {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(ids) = user_ids(MAIL_OWNER) {
        return ids;
    }
    let useradd =
        find_binary("useradd", &["/usr/sbin", "/sbin"]).unwrap_or_else(|| PathBuf::from("useradd"));
    let mut last_error = String::new();
    // Other test processes may be creating the user at the same moment (useradd then
    // fails with "already exists" or cannot lock /etc/passwd): re-check and retry.
    for _ in 0..10 {
        match Command::new(&useradd)
            .args([
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                MAIL_OWNER,
            ])
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) => {
                last_error = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            }
            Err(e) => last_error = e.to_string(),
        }
        if let Some(ids) = user_ids(MAIL_OWNER) {
            return ids;
        }
        sleep(Duration::from_millis(200));
    }
    panic!(
        "mailferry-testkit: running as root, Dovecot needs a non-root mail owner, but \
         `useradd --system {MAIL_OWNER}` failed: {last_error}"
    );
}

/// uid and gid of a user, from the passwd database.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: all-zero is a valid `passwd` (null pointers, zero ids); it is only read
    // after getpwnam_r filled it in.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and `buf.len()` is the buffer's size.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some((pwd.pw_uid, pwd.pw_gid))
}

/// Name of the user with this uid, from the passwd database.
fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: as in `user_ids`.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and `buf.len()` is the buffer's size.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r succeeded, so pw_name points to a NUL-terminated string in `buf`.
    let name = unsafe { CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// Name of the group with this gid, from the group database.
fn group_name(gid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 64 * 1024];
    // SAFETY: all-zero is a valid `group` (null pointers); it is only read after
    // getgrgid_r filled it in.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and `buf.len()` is the buffer's size.
    let rc = unsafe { libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || grp.gr_name.is_null() {
        return None;
    }
    // SAFETY: getgrgid_r succeeded, so gr_name points to a NUL-terminated string in `buf`.
    let name = unsafe { CStr::from_ptr(grp.gr_name) };
    Some(name.to_string_lossy().into_owned())
}

/// Finds an executable in PATH or, failing that, in `extra_dirs` (a normal user's PATH
/// usually lacks /usr/sbin, where Debian installs `dovecot`).
fn find_binary(name: &str, extra_dirs: &[&str]) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(extra_dirs.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Which names a generated server certificate holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertNames {
    /// `CN=<cn>` with these subjectAltNames (OpenSSL syntax: `DNS:dc1.example,IP:127.0.0.2`).
    Names { cn: String, san: String },
    /// `CN=localhost` with the subjectAltNames `DNS:localhost` and `IP:127.0.0.1`.
    Localhost,
    /// `CN=localhost` and no subjectAltName at all, as Samba's self-made certificate and many
    /// a legacy mail server's are: name verification (RFC 6125) refuses it.
    CommonNameOnly,
}

/// Generates a private CA (`ca.pem`) and a server certificate it signed (`cert.pem`,
/// `key.pem`) for localhost / 127.0.0.1 with the `openssl` CLI. (rustls refuses a
/// self-signed CA certificate used as the server's own certificate.)
fn generate_tls(tls: &Path) {
    generate_certificates(tls, CertNames::Localhost);
}

/// Like the servers' own: a private CA (`ca.pem`, `ca-key.pem`) and a server certificate it
/// signed (`cert.pem`, `key.pem`) with `names`, made in `tls` by the `openssl` CLI.
pub fn generate_certificates(tls: &Path, names: CertNames) {
    fs::create_dir_all(tls)
        .unwrap_or_else(|e| panic!("mailferry-testkit: cannot create {}: {e}", tls.display()));
    let openssl = find_binary("openssl", &["/usr/bin"]).unwrap_or_else(|| {
        panic!(
            "mailferry-testkit: TLS test servers need the `openssl` CLI: apt-get install openssl"
        )
    });
    let (cn, san) = match &names {
        CertNames::Names { cn, san } => (format!("/CN={cn}"), format!("subjectAltName={san}\n")),
        CertNames::Localhost => (
            "/CN=localhost".to_string(),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n".to_string(),
        ),
        CertNames::CommonNameOnly => ("/CN=localhost".to_string(), String::new()),
    };
    write_file(
        &tls.join("cert.ext"),
        &format!(
            "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\n{san}"
        ),
    );
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "3650",
            "-subj",
            "/CN=mailferry-testkit CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
        ],
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", &cn, "-keyout", "key.pem", "-out",
            "cert.csr",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "cert.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "3650",
            "-sha256",
            "-extfile",
            "cert.ext",
            "-out",
            "cert.pem",
        ],
    ];
    for args in steps {
        let out = Command::new(&openssl)
            .args(args)
            .current_dir(tls)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("mailferry-testkit: cannot run {}: {e}", openssl.display()));
        assert!(
            out.status.success(),
            "mailferry-testkit: `openssl {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    set_mode(&tls.join("key.pem"), 0o600);
    set_mode(&tls.join("ca-key.pem"), 0o600);
}

/// The SHA-256 fingerprint of a PEM certificate as `openssl x509 -noout -fingerprint -sha256`
/// prints it (`AB:CD:…`): what an admin would compare and pin.
pub fn openssl_fingerprint(cert: &Path) -> String {
    let openssl = find_binary("openssl", &["/usr/bin"]).unwrap_or_else(|| {
        panic!("mailferry-testkit: needs the `openssl` CLI: apt-get install openssl")
    });
    let out = Command::new(&openssl)
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("mailferry-testkit: cannot run {}: {e}", openssl.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mailferry-testkit: openssl x509 -fingerprint on {} failed: {}",
        cert.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    // "sha256 Fingerprint=AB:CD:..." (OpenSSL 3) or "SHA256 Fingerprint=..." (1.1)
    text.trim()
        .split_once('=')
        .map(|(_, fp)| fp.to_string())
        .unwrap_or_else(|| panic!("mailferry-testkit: unexpected openssl output {text:?}"))
}

/// A port that was free a moment ago (the listener is dropped again, so another process
/// may grab it before Dovecot binds it; [`Dovecot::launch`] retries in that case).
fn free_port() -> u16 {
    TcpListener::bind((HOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| {
            panic!("mailferry-testkit: cannot bind {HOST}:0 to find a free port: {e}")
        })
}

/// True if the server at `addr` sends an untagged `* OK` greeting.
fn probe_greeting(addr: &SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(addr, Duration::from_millis(500)) else {
        return false;
    };
    if stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .is_err()
    {
        return false;
    }
    // The real greeting; "* OK Waiting for authentication process to respond.." only
    // says that the login process is not connected to auth yet.
    for _ in 0..3 {
        let line = read_line(&mut stream);
        if !line.starts_with(b"* OK") {
            return false;
        }
        if !line.windows(7).any(|w| w == b"Waiting") {
            // Polite goodbye; the answer does not matter.
            let _ = stream.write_all(b"z LOGOUT\r\n");
            return true;
        }
    }
    false
}

/// One line (up to 4 KiB) read byte by byte; shorter on EOF, error or timeout.
fn read_line(stream: &mut TcpStream) -> Vec<u8> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 4096 {
        match stream.read(&mut byte) {
            Ok(1) => {
                line.push(byte[0]);
                if byte[0] == b'\n' {
                    break;
                }
            }
            _ => break,
        }
    }
    line
}

/// True if the server at `addr` answers a TLS ClientHello with a TLS record (a
/// handshake, or an alert: either way the TLS login process is serving).
fn probe_tls(addr: &SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(addr, Duration::from_millis(500)) else {
        return false;
    };
    if stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .is_err()
        || stream.write_all(&client_hello()).is_err()
    {
        return false;
    }
    let mut first = [0u8; 1];
    // 0x16 = handshake record (ServerHello), 0x15 = alert.
    matches!(stream.read(&mut first), Ok(1) if first[0] == 0x16 || first[0] == 0x15)
}

/// A minimal TLS 1.2 ClientHello (ECDHE/RSA AES-GCM suites, x25519/P-256).
fn client_hello() -> Vec<u8> {
    fn with_len16(body: &[u8]) -> Vec<u8> {
        let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
        let mut out = len.to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }
    fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut out = kind.to_be_bytes().to_vec();
        out.extend(with_len16(data));
        out
    }

    let mut hello = vec![0x03, 0x03]; // TLS 1.2
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.push(0); // no session id
    hello.extend(with_len16(&[
        0xc0, 0x2f, 0xc0, 0x30, 0xc0, 0x2b, 0xc0, 0x2c, 0x00, 0x9c, 0x00, 0x9d,
    ]));
    hello.extend_from_slice(&[0x01, 0x00]); // compression: null
    let mut extensions = Vec::new();
    extensions.extend(extension(0x000a, &with_len16(&[0x00, 0x1d, 0x00, 0x17])));
    extensions.extend(extension(0x000b, &[0x01, 0x00]));
    extensions.extend(extension(
        0x000d,
        &with_len16(&[0x04, 0x01, 0x08, 0x04, 0x05, 0x01, 0x04, 0x03]),
    ));
    hello.extend(with_len16(&extensions));

    let len = u32::try_from(hello.len()).unwrap_or(0).to_be_bytes();
    let mut handshake = vec![0x01, len[1], len[2], len[3]];
    handshake.extend(hello);

    let mut record = vec![0x16, 0x03, 0x01];
    record.extend(with_len16(&handshake));
    record
}

/// Stops a Dovecot master started in its own process group.
///
/// Graceful: SIGTERM to the group, wait for the master (SIGKILL after [`STOP_TIMEOUT`]),
/// then give leftover children a moment before SIGKILL. Otherwise: SIGKILL at once.
fn terminate(mut child: Child, graceful: bool) {
    let pgid = child.id() as libc::pid_t;
    if graceful {
        // The whole group: Dovecot's children (log, stats, imap, ...) otherwise linger
        // for seconds after the master is gone. They log "Killed with signal 15".
        signal_group(pgid, libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            sleep(Duration::from_millis(10));
        }
        // Children may outlive the master briefly, and a login process would keep the
        // listening socket open: wait for the group to empty, then SIGKILL what is left.
        let deadline = Instant::now() + Duration::from_secs(1);
        while group_alive(pgid) && Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(None)) {
                break; // master still running after STOP_TIMEOUT
            }
            sleep(Duration::from_millis(10));
        }
    }
    // Gracefully stopped groups are usually empty by now; the check keeps us from
    // signalling a process group id that is no longer ours.
    if !graceful || group_alive(pgid) {
        signal_group(pgid, libc::SIGKILL);
    }
    let _ = child.wait();
    // SIGKILL is delivered at once, but the processes still need reaping by init;
    // wait briefly so the listening socket is closed when we return.
    let deadline = Instant::now() + Duration::from_secs(2);
    while group_alive(pgid) && Instant::now() < deadline {
        sleep(Duration::from_millis(5));
    }
}

fn signal_group(pgid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions; a negative pid addresses the
    // process group that `process_group(0)` created for our child.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// True while a process of the group is running. Zombies do not count: they hold no
/// sockets any more, and here PID 1 may take seconds to reap the orphaned ones.
fn group_alive(pgid: libc::pid_t) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        // No procfs: ask the kernel (zombies count here).
        // SAFETY: signal 0 only checks for existence.
        let rc = unsafe { libc::kill(-pgid, 0) };
        return rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
    };
    entries.flatten().any(|entry| {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // "pid (comm) state ppid pgrp ...": comm may contain anything, so split after
        // the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|f| f.parse::<libc::pid_t>().ok());
        pgrp == Some(pgid) && state != Some("Z") && state != Some("X")
    })
}

fn write_file(path: &Path, contents: &str) {
    fs::write(path, contents)
        .unwrap_or_else(|e| panic!("mailferry-testkit: cannot write {}: {e}", path.display()));
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("mailferry-testkit: cannot chmod {}: {e}", path.display()));
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The contents of `path` from byte `offset` on (lossy UTF-8; empty if unreadable).
fn read_from(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path) {
        let _ = io::Seek::seek(&mut file, io::SeekFrom::Start(offset));
        let _ = file.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}
