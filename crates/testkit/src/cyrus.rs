//! A real Cyrus IMAP 3.6 server in a temporary directory: a second kind of IMAP server next to
//! Dovecot, with its own strictness (it refuses a message with bare LF line ends, or a NUL,
//! with a `NO`), its own storage and its own namespaces.
//!
//! Debian's `cyrus-imapd` conflicts with `dovecot-imapd` as a package, so Cyrus is not
//! installed: `scripts/install-deps.sh` (as root) unpacks `cyrus-common` and `cyrus-imapd` with
//! `apt-get download` + `dpkg -x` into a private root, `/opt/mailferry-cyrus` unless
//! `MAILFERRY_CYRUS_ROOT` names another. The daemons are run from there
//! (`<root>/usr/lib/cyrus/bin/master`, `imapd`, `ctl_cyrusdb`) with Cyrus's own libraries from
//! `<root>/usr/lib/<arch>/` on `LD_LIBRARY_PATH`; the SASL libraries and `saslpasswd2`
//! (`sasl2-bin`) are the system's. A missing Cyrus makes [`Cyrus::start`] panic and say which
//! script to run.
//!
//! The layout follows Cyrus's own test harness (Cassandane): `conf/` (`imapd.conf`,
//! `cyrus.conf`, the databases and the SASL password file `sasldb2`), `data/` (the
//! `default` partition), `run/`, `lock/`, `tmp/`, `log/`. Every program is given `-C
//! conf/imapd.conf`, so nothing compiled in (`/etc/imapd.conf`, `/var/lib/cyrus`) is used.
//! `master` runs in the foreground in its own process group, on a free port on `127.0.0.1`;
//! as root Cyrus becomes the test kit's mail owner `mailferry-test` (`cyrus_user`), as a normal
//! user it runs as that user.
//!
//! ```no_run
//! use mailferry_testkit::{Cyrus, CyrusConfig};
//!
//! let server = Cyrus::start(CyrusConfig::new(&["alice"]));
//! // LOGIN alice pw-alice, or AUTHENTICATE PLAIN with authzid "alice", authcid "admin",
//! // password "adminpass" (the admin acting as alice)
//! # let _ = server.port();
//! ```
//!
//! Server defaults worth knowing:
//! - `unixhierarchysep: yes` and `altnamespace: yes`: a user's folders are `INBOX`, `Sent`,
//!   `Archive/2024`, '/'-separated in the personal namespace `("" "/")`, like the test kit's
//!   Dovecot with [`crate::Layout::Slash`]; other users' folders and shared ones are in the
//!   namespaces `Other Users/` and `Shared Folders/`.
//! - each user's mailbox (`user/<name>`, its INBOX) is created by the admin over IMAP when the
//!   server starts; the user creates its own folders.
//! - logins: plaintext `LOGIN` and SASL `PLAIN`/`LOGIN` without TLS (`allowplaintext: yes`);
//!   passwords in `conf/sasldb2` (auxprop `sasldb`). The admin (`admins: admin`) may act for
//!   any user with SASL PLAIN: authzid = the user, authcid = `admin`.
//! - Cyrus logs only through `syslog(3)`, and a test machine has no syslog daemon; so the test
//!   kit builds a tiny `syslog` replacement with `cc` (there whenever cargo can link) and
//!   preloads it, which writes Cyrus's log to `log/cyrus.log` ([`Cyrus::log_tail`]). The same
//!   preload makes `fsync` return at once, as the test kit's Dovecot runs with
//!   `mail_fsync = never`. Without `cc` the server runs the same, with no log and with fsync.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{
    FRESH_PORT_ATTEMPTS, HOST, Identity, KEEP_ENV, READY_TIMEOUT, current_identity, file_len,
    find_binary, free_port, read_from, release_dir, server_dir, tail, terminate, write_file,
};

/// Environment variable naming the private root Cyrus was unpacked into.
pub const CYRUS_ROOT_ENV: &str = "MAILFERRY_CYRUS_ROOT";
/// Where `scripts/install-deps.sh` unpacks Cyrus unless [`CYRUS_ROOT_ENV`] says otherwise.
pub const DEFAULT_CYRUS_ROOT: &str = "/opt/mailferry-cyrus";
/// What to run when Cyrus is missing.
const INSTALL_HINT: &str = "sudo scripts/install-deps.sh   (it unpacks Debian's cyrus-common and \
     cyrus-imapd with `apt-get download` + `dpkg -x` into /opt/mailferry-cyrus, or into \
     $MAILFERRY_CYRUS_ROOT, and installs sasl2-bin)";
/// Where Debian puts the Cyrus daemons, below the root.
const DAEMON_DIR: &str = "usr/lib/cyrus/bin";
/// The admin's name (listed in `admins:`).
const ADMIN: &str = "admin";
/// A syslog(3) replacement, preloaded into Cyrus so that its log lands in a file
/// (`MAILFERRY_SYSLOG_FILE`; glibc's fortified builds call the `__*_chk` forms), and
/// `fsync`/`fdatasync` that return at once: Cyrus has no setting to skip them, and waiting for
/// the disk at every APPEND made filling it with the corpus four times slower.
const SYSLOG_SHIM: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

static char shim_ident[64] = "cyrus";

void openlog(const char *ident, int option, int facility) {
    (void)option; (void)facility;
    if (ident) { strncpy(shim_ident, ident, sizeof shim_ident - 1); }
}
void closelog(void) {}
int setlogmask(int mask) { return mask; }

void vsyslog(int priority, const char *format, va_list ap) {
    int saved = errno;
    const char *path = getenv("MAILFERRY_SYSLOG_FILE");
    if (!path || (priority & 7) == LOG_DEBUG) { return; }
    /* %m is syslog's own: strerror(errno). */
    char fmt[2048];
    size_t o = 0;
    for (const char *p = format; *p && o < sizeof fmt - 1; p++) {
        if (p[0] == '%' && p[1] == 'm') {
            const char *e = strerror(saved);
            while (*e && o < sizeof fmt - 1) { char c = *e++; fmt[o++] = c == '%' ? '_' : c; }
            p++;
        } else if (p[0] == '%' && p[1] == '%') {
            if (o < sizeof fmt - 2) { fmt[o++] = '%'; fmt[o++] = '%'; }
            p++;
        } else {
            fmt[o++] = *p;
        }
    }
    fmt[o] = 0;
    char line[8192];
    int n = snprintf(line, sizeof line, "%s[%d]: ", shim_ident, (int)getpid());
    if (n < 0) { return; }
    int m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    if (m < 0) { return; }
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof line - 2) { len = sizeof line - 2; }
    line[len++] = '\n';
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
    if (fd >= 0) { ssize_t w = write(fd, line, len); (void)w; close(fd); }
    errno = saved;
}
void syslog(int priority, const char *format, ...) {
    va_list ap; va_start(ap, format); vsyslog(priority, format, ap); va_end(ap);
}
void __vsyslog_chk(int priority, int flag, const char *format, va_list ap) {
    (void)flag; vsyslog(priority, format, ap);
}
void __syslog_chk(int priority, int flag, const char *format, ...) {
    (void)flag; va_list ap; va_start(ap, format); vsyslog(priority, format, ap); va_end(ap);
}

/* A throw-away server need not wait for the disk (the test kit's Dovecot: mail_fsync = never). */
int fsync(int fd) { (void)fd; return 0; }
int fdatasync(int fd) { (void)fd; return 0; }
"#;

/// What kind of server to start; build it with [`CyrusConfig::new`] and adjust fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CyrusConfig {
    /// `(user, password)` pairs; each user's mailbox is created at start.
    pub users: Vec<(String, String)>,
    /// The admin's password (the admin is `admin`).
    pub admin_password: String,
}

impl CyrusConfig {
    /// These users with password `pw-<user>`, admin password `adminpass` (as the test
    /// kit's Dovecot master user).
    pub fn new(users: &[&str]) -> Self {
        CyrusConfig {
            users: users
                .iter()
                .map(|u| ((*u).to_owned(), format!("pw-{u}")))
                .collect(),
            admin_password: "adminpass".to_owned(),
        }
    }
}

/// A running Cyrus IMAP server in its own temporary directory.
///
/// Dropping it kills the server (SIGKILL to its process group: `master` and every `imapd`)
/// and removes the directory, unless `MAILFERRY_KEEP_TEST_DIRS=1`.
#[derive(Debug)]
pub struct Cyrus {
    cfg: CyrusConfig,
    root: PathBuf,
    tmp: Option<TempDir>,
    dir: PathBuf,
    /// `servername:`, unique to this server (lower case: it is also the SASL realm, which
    /// Cyrus lower-cases), and in its greeting.
    servername: String,
    port: u16,
    child: Option<Child>,
}

/// Why one start attempt failed.
enum StartFailure {
    /// `master` exited during start-up.
    Exited(ExitStatus),
    /// No greeting within [`READY_TIMEOUT`].
    Timeout,
}

impl Cyrus {
    /// Creates a temporary directory, writes `imapd.conf`, `cyrus.conf` and the users'
    /// passwords, starts `master` on a free loopback port, and creates each user's mailbox as
    /// the admin; returns once that is done.
    ///
    /// # Panics
    ///
    /// If Cyrus is not unpacked (the message says to run `scripts/install-deps.sh`) or
    /// `saslpasswd2` is missing, if a user name is unusable, if the server does not greet
    /// within 10 seconds, or if a mailbox cannot be created. The message includes the end of
    /// Cyrus's log.
    pub fn start(cfg: CyrusConfig) -> Cyrus {
        for (user, pass) in &cfg.users {
            assert!(
                !user.is_empty()
                    && user
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
                    && !pass.is_empty()
                    && !pass.contains(['\n', '\r', '\0']),
                "mailferry-testkit: unusable Cyrus user/password {user:?}/{pass:?} (names: ASCII \
                 letters, digits, '-' and '_'; passwords non-empty, one line)"
            );
        }
        let root = cyrus_root();
        let identity = current_identity();
        // As root, Cyrus runs as the mail owner, who must be able to reach the directory:
        // /tmp, not a TMPDIR that may live under /root.
        let parent = match identity {
            Identity::Root { .. } => PathBuf::from("/tmp"),
            Identity::User { .. } => std::env::temp_dir(),
        };
        let tmp = server_dir("cyrus", &parent);
        let dir = tmp.path().to_path_buf();
        let unique: String = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase();
        let mut server = Cyrus {
            cfg,
            root,
            tmp: Some(tmp),
            dir,
            servername: format!("{unique}.test"),
            port: 0,
            child: None,
        };
        // From here on a panic drops `server`, which kills Cyrus and cleans up.
        server.prepare_dir(&identity);
        server.launch();
        for (user, _) in server.cfg.users.clone() {
            server.admin_command(&format!("CREATE \"user/{user}\""));
        }
        server
    }

    /// TCP port of the IMAP listener (plain IMAP; no TLS).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Host to connect to: always `"127.0.0.1"`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// The admin's name, `admin`: with SASL PLAIN it may act for any user.
    pub fn admin(&self) -> &str {
        ADMIN
    }

    /// The admin's password.
    pub fn admin_password(&self) -> &str {
        &self.cfg.admin_password
    }

    /// The server's temporary directory (`conf/`, `data/`, `log/`, ...).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last `lines` lines of Cyrus's log (and of `master`'s own output, if any), for
    /// assertion messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for (name, path) in [
            ("cyrus.log", self.log_path()),
            ("master stdout/stderr", self.stderr_path()),
        ] {
            let text = fs::read_to_string(&path).unwrap_or_default();
            if text.is_empty() && name != "cyrus.log" {
                continue;
            }
            out.push_str(&format!(
                "--- {name} ({}), last {lines} lines ---\n{}\n",
                path.display(),
                tail(&text, lines)
            ));
        }
        out
    }

    /// Runs one IMAP command as the admin (logged in as itself, e.g. `SETACL ...` or
    /// `CREATE "user/bob"`) and returns the server's lines, the tagged `OK` last.
    ///
    /// # Panics
    ///
    /// If the server cannot be reached or does not answer `OK`; the message has its answer
    /// and the end of the log.
    pub fn admin_command(&self, command: &str) -> Vec<String> {
        let login = format!(
            "LOGIN {ADMIN} {}",
            quoted(&self.cfg.admin_password).unwrap_or_else(|| panic!(
                "mailferry-testkit: the Cyrus admin password cannot be sent as an IMAP string"
            ))
        );
        let mut session = RawSession::connect(self.port).unwrap_or_else(|e| {
            panic!(
                "mailferry-testkit: cannot reach Cyrus on {HOST}:{}: {e}\n{}",
                self.port,
                self.log_tail(30)
            )
        });
        for (i, cmd) in [login.as_str(), command].into_iter().enumerate() {
            let lines = session.command(cmd).unwrap_or_else(|e| {
                panic!(
                    "mailferry-testkit: Cyrus connection failed during {:?}: {e}\n{}",
                    if i == 0 { "LOGIN" } else { command },
                    self.log_tail(30)
                )
            });
            let last = lines.last().map(String::as_str).unwrap_or_default();
            if !last.starts_with("a OK") {
                panic!(
                    "mailferry-testkit: Cyrus refused {:?}:\n{}\n{}",
                    if i == 0 { "LOGIN admin" } else { command },
                    lines.join("\n"),
                    self.log_tail(30)
                );
            }
            if i == 1 {
                let _ = session.command("LOGOUT");
                return lines;
            }
        }
        unreachable!("two commands were sent")
    }

    fn conf_path(&self) -> PathBuf {
        self.dir.join("conf/imapd.conf")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("log/cyrus.log")
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.join("log/master.out")
    }

    /// The directories, the SASL password file, the syslog shim; all owned by the user Cyrus
    /// runs as.
    fn prepare_dir(&mut self, identity: &Identity) {
        for sub in [
            "conf",
            "conf/db",
            "conf/socket",
            "conf/proc",
            "conf/log",
            "conf/sieve",
            "data",
            "run",
            "lock",
            "tmp",
            "log",
        ] {
            let path = self.dir.join(sub);
            fs::create_dir_all(&path).unwrap_or_else(|e| {
                panic!("mailferry-testkit: cannot create {}: {e}", path.display())
            });
        }
        let saslpasswd2 = find_binary("saslpasswd2", &["/usr/sbin", "/sbin"]).unwrap_or_else(|| {
            panic!(
                "\n\n*** mailferry-testkit: `saslpasswd2` was not found: Cyrus's test users need \
                 it.\n*** Install it with:\n***     {INSTALL_HINT}\n\n"
            )
        });
        let sasldb = self.dir.join("conf/sasldb2");
        let admin = (ADMIN.to_owned(), self.cfg.admin_password.clone());
        for (user, pass) in self.cfg.users.iter().chain([&admin]) {
            let mut child = Command::new(&saslpasswd2)
                .args(["-p", "-c", "-f"])
                .arg(&sasldb)
                // Cyrus's SASL realm is its servername, lower-cased.
                .args(["-u", &self.servername, user])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "mailferry-testkit: cannot run {}: {e}",
                        saslpasswd2.display()
                    )
                });
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(pass.as_bytes());
            }
            let out = child
                .wait_with_output()
                .unwrap_or_else(|e| panic!("mailferry-testkit: saslpasswd2 did not finish: {e}"));
            assert!(
                out.status.success(),
                "mailferry-testkit: saslpasswd2 for {user:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.build_syslog_shim();
        if let Identity::Root { mail_uid, mail_gid } = identity {
            // tempfile made the directory 0700 and root's; Cyrus (as the mail owner) writes
            // everywhere below it.
            chown_tree(&self.dir, *mail_uid, *mail_gid);
        }
    }

    /// Builds the syslog replacement into `run/syslog-shim.so` (best effort: without it the
    /// server runs the same, with no log).
    fn build_syslog_shim(&self) {
        let Some(cc) = find_binary("cc", &["/usr/bin"]) else {
            write_file(
                &self.log_path(),
                "(no log: `cc` was not found to build the syslog shim)\n",
            );
            return;
        };
        let source = self.dir.join("run/syslog-shim.c");
        write_file(&source, SYSLOG_SHIM);
        let out = Command::new(cc)
            .args(["-shared", "-fPIC", "-O1", "-o"])
            .arg(self.dir.join("run/syslog-shim.so"))
            .arg(&source)
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(out) if out.status.success() => write_file(&self.log_path(), ""),
            Ok(out) => write_file(
                &self.log_path(),
                &format!(
                    "(no log: the syslog shim did not build: {})\n",
                    String::from_utf8_lossy(&out.stderr)
                ),
            ),
            Err(e) => write_file(
                &self.log_path(),
                &format!("(no log: cannot run cc for the syslog shim: {e})\n"),
            ),
        }
    }

    /// `imapd.conf`: every path below the directory.
    fn render_imapd_conf(&self, cyrus_user: &str) -> String {
        let dir = self.dir.display();
        format!(
            "# generated by mailferry-testkit -- a throw-away test server\n\
             configdirectory: {dir}/conf\n\
             partition-default: {dir}/data\n\
             defaultpartition: default\n\
             servername: {servername}\n\
             cyrus_user: {cyrus_user}\n\
             admins: {ADMIN}\n\
             sasl_mech_list: PLAIN LOGIN\n\
             allowplaintext: yes\n\
             sasl_pwcheck_method: auxprop\n\
             sasl_auxprop_plugin: sasldb\n\
             sasl_sasldb_path: {dir}/conf/sasldb2\n\
             unixhierarchysep: yes\n\
             altnamespace: yes\n\
             lmtpsocket: {dir}/run/lmtp\n\
             idlesocket: {dir}/run/idle\n\
             notifysocket: {dir}/run/notify\n\
             mboxname_lockpath: {dir}/lock\n\
             temp_path: {dir}/tmp\n\
             syslog_prefix: mailferry-cyrus\n\
             # no delay after a failed login\n\
             failedloginpause: 0\n\
             # keep 8-bit header bytes as given (Cyrus would turn each into an X)\n\
             munge8bit: no\n",
            servername = self.servername,
        )
    }

    /// `cyrus.conf`: the database recovery at start, and one IMAP listener.
    fn render_cyrus_conf(&self) -> String {
        let bin = self.root.join(DAEMON_DIR);
        let bin = bin.display();
        let conf = self.conf_path();
        let conf = conf.display();
        format!(
            "# generated by mailferry-testkit -- a throw-away test server\n\
             START {{\n  recover cmd=\"{bin}/ctl_cyrusdb -r -C {conf}\"\n}}\n\
             SERVICES {{\n  imap cmd=\"{bin}/imapd -C {conf}\" listen=\"{HOST}:{port}\" \
             prefork=0\n}}\n\
             EVENTS {{\n}}\n",
            port = self.port
        )
    }

    /// Writes the config for a fresh port and starts `master`, retrying when the port was
    /// taken in the meantime.
    fn launch(&mut self) {
        let cyrus_user = match current_identity() {
            Identity::Root { .. } => crate::MAIL_OWNER.to_owned(),
            Identity::User { name, .. } => name,
        };
        write_file(&self.conf_path(), &self.render_imapd_conf(&cyrus_user));
        for attempt in 1..=FRESH_PORT_ATTEMPTS {
            self.port = free_port();
            write_file(&self.dir.join("conf/cyrus.conf"), &self.render_cyrus_conf());
            let log_mark = file_len(&self.log_path());
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
                read_from(&self.stderr_path(), 0)
            );
            if new_output.contains("Address already in use") && attempt < FRESH_PORT_ATTEMPTS {
                continue;
            }
            let why = match failure {
                // 78 is EX_CONFIG: Cyrus says why only in its log.
                StartFailure::Exited(status) => {
                    format!("Cyrus master exited during start-up ({status})")
                }
                StartFailure::Timeout => format!(
                    "Cyrus did not send an IMAP greeting on {HOST}:{} within {} s",
                    self.port,
                    READY_TIMEOUT.as_secs()
                ),
            };
            panic!(
                "\n\nmailferry-testkit: {why} (attempt {attempt} of {FRESH_PORT_ATTEMPTS}).\n\
                 config: {}\n(Cyrus comes from {}; install it with {INSTALL_HINT}; set \
                 {KEEP_ENV}=1 to keep the directory)\n{}\n",
                self.conf_path().display(),
                self.root.display(),
                self.log_tail(40)
            );
        }
    }

    /// Spawns `master` in the foreground (no `-d`), in its own process group.
    fn spawn(&mut self) {
        let out_path = self.stderr_path();
        let out = File::options()
            .create(true)
            .append(true)
            .open(&out_path)
            .unwrap_or_else(|e| {
                panic!("mailferry-testkit: cannot open {}: {e}", out_path.display())
            });
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("mailferry-testkit: cannot dup a file handle: {e}"));
        let master = self.root.join(DAEMON_DIR).join("master");
        let mut command = Command::new(&master);
        command
            .arg("-C")
            .arg(self.conf_path())
            .arg("-M")
            .arg(self.dir.join("conf/cyrus.conf"))
            .arg("-p")
            .arg(self.dir.join("run/master.pid"))
            .args(["-l", "255"])
            .env("LD_LIBRARY_PATH", library_path(&self.root))
            .env("MAILFERRY_SYSLOG_FILE", self.log_path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let shim = self.dir.join("run/syslog-shim.so");
        if shim.exists() {
            command.env("LD_PRELOAD", shim);
        }
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "mailferry-testkit: cannot run {}: {e}\n(install Cyrus with {INSTALL_HINT})",
                master.display()
            )
        });
        self.child = Some(child);
    }

    /// Polls until the port greets as this Cyrus (its greeting names [`Cyrus::servername`]),
    /// or `master` exits, or time runs out.
    fn wait_ready(&mut self) -> Result<(), StartFailure> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(StartFailure::Exited(status));
            }
            // The servername ties the greeting to this server, not another that took the port.
            if RawSession::connect(self.port).is_ok_and(|s| {
                s.greeting.starts_with("* OK") && s.greeting.contains(&self.servername)
            }) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StartFailure::Timeout);
            }
            sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cyrus {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child, false);
        }
        if let Some(tmp) = self.tmp.take() {
            release_dir(tmp, "Cyrus");
        }
    }
}

/// The private root Cyrus was unpacked into; panics, saying how to install it, if it lacks
/// the daemons.
fn cyrus_root() -> PathBuf {
    let root = std::env::var_os(CYRUS_ROOT_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CYRUS_ROOT));
    for daemon in ["master", "imapd", "ctl_cyrusdb"] {
        let path = root.join(DAEMON_DIR).join(daemon);
        if !path.is_file() {
            panic!(
                "\n\n*** mailferry-testkit: Cyrus IMAP is not unpacked: {} is missing \
                 ({CYRUS_ROOT_ENV} {}).\n*** These tests need a real Cyrus IMAP 3.6. Install it \
                 with:\n***     {INSTALL_HINT}\n\n",
                path.display(),
                if std::env::var_os(CYRUS_ROOT_ENV).is_some() {
                    "is set"
                } else {
                    "is not set; the default is /opt/mailferry-cyrus"
                }
            );
        }
    }
    root
}

/// Cyrus's own libraries (`libcyrus*.so`) below the root, for `LD_LIBRARY_PATH`.
fn library_path(root: &Path) -> String {
    let mut dirs = Vec::new();
    if let Ok(entries) = fs::read_dir(root.join("usr/lib")) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.join("libcyrus_min.so.0").exists() {
                dirs.push(path.display().to_string());
            }
        }
    }
    dirs.sort();
    dirs.join(":")
}

/// `chown -R uid:gid dir`.
fn chown_tree(dir: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("mailferry-testkit: cannot chown {}: {e}", dir.display()));
    if dir.is_dir()
        && let Ok(entries) = fs::read_dir(dir)
    {
        for entry in entries.flatten() {
            chown_tree(&entry.path(), uid, gid);
        }
    }
}

/// `s` as an IMAP quoted string, if it can be one.
fn quoted(s: &str) -> Option<String> {
    (!s.contains(['\r', '\n', '\0']))
        .then(|| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
}

/// A bare IMAP connection for the test kit's own admin commands (no literals are sent).
struct RawSession {
    stream: TcpStream,
    greeting: String,
    buffer: Vec<u8>,
}

impl RawSession {
    fn connect(port: u16) -> std::io::Result<RawSession> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut session = RawSession {
            stream,
            greeting: String::new(),
            buffer: Vec::new(),
        };
        session.greeting = session.line()?;
        Ok(session)
    }

    /// Sends `a <command>` and returns the lines up to the tagged one.
    fn command(&mut self, command: &str) -> std::io::Result<Vec<String>> {
        self.stream
            .write_all(format!("a {command}\r\n").as_bytes())?;
        let mut lines = Vec::new();
        loop {
            let line = self.line()?;
            let done = line.starts_with("a ");
            lines.push(line);
            if done {
                return Ok(lines);
            }
        }
    }

    fn line(&mut self) -> std::io::Result<String> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return Ok(String::from_utf8_lossy(&line).trim_end().to_owned());
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }
}
