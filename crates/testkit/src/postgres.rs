//! A real PostgreSQL 15 server in a temporary directory, for tests of mailferry's shared state
//! (`state = "postgres://…"`).
//!
//! Like the other servers of this crate it is a private process: `initdb` into a fresh
//! temporary directory, then `postgres` in the foreground in its own process group, listening
//! on a free port on `127.0.0.1` and on a Unix socket in that directory. PostgreSQL refuses to
//! run as root, so when the tests run as root `initdb` and the server run as the system user
//! `mailferry-test` (the one the Dovecot servers use), which then owns the directory; as a
//! normal user they run as that user. Nothing outside the directory is used or changed.
//!
//! The server has one login role with a password ([`PostgresConfig::user`],
//! [`PostgresConfig::password`]) that owns the databases this kit creates; TCP connections
//! must give that password (`scram-sha-256`), the Unix socket trusts the superuser
//! `postgres`, which the kit uses for its own set-up ([`Postgres::psql`]). The default
//! collation is ICU `en-US`, not byte order, as on most production servers, so a query that
//! relies on the default collation for its order fails here too.
//!
//! PostgreSQL is a hard requirement: if Debian's `postgresql` package (its binaries in
//! `/usr/lib/postgresql/15/bin`) is missing, [`Postgres::start`] panics and says to
//! `apt-get install postgresql`.
//!
//! ```no_run
//! use mailferry_testkit::postgres::Postgres;
//!
//! // One server per test process, a fresh database per test:
//! let db = Postgres::shared().fresh_database();
//! // connect to db.url() ("postgres://mailferry@127.0.0.1:PORT/mailferry_3?sslmode=disable")
//! // with db.password()
//! # let _ = db;
//! ```
//!
//! The durability settings are a test server's (`fsync=off`, no synchronous commit): nothing
//! here survives a crash of the machine, and nothing needs to.

use std::fs::{self, File};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{
    FRESH_PORT_ATTEMPTS, HOST, KEEP_ENV, READY_TIMEOUT, ensure_mail_owner, file_len, free_port,
    generate_tls, read_from, tail, terminate,
};

/// What to install when PostgreSQL is missing.
const INSTALL_HINT: &str = "apt-get install postgresql";
/// Where Debian's `postgresql-15` package puts the server binaries.
const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
/// The superuser `initdb` creates; reached over the Unix socket only, without a password.
const SUPERUSER: &str = "postgres";
/// What the server logs once it accepts connections.
const READY_LINE: &str = "database system is ready to accept connections";
/// How long a fast shutdown may take before the server is killed.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// What to set up in the server.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// The login role the tests connect as; it owns every database the kit creates.
    pub user: String,
    /// Its password (`scram-sha-256` over TCP).
    pub password: String,
    /// A database created at start, owned by [`PostgresConfig::user`].
    pub database: String,
    /// Serve TLS too (`ssl = on`), with a certificate for `localhost` / `127.0.0.1` signed
    /// by a private CA ([`Postgres::ca_pem`]). Needs `openssl`.
    pub tls: bool,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            user: "mailferry".into(),
            password: "pw-state".into(),
            database: "mailferry".into(),
            tls: false,
        }
    }
}

/// A running PostgreSQL server in its own temporary directory.
///
/// Dropping it stops the server (a fast shutdown, then SIGKILL to its process group) and
/// removes the directory, unless `MAILFERRY_KEEP_TEST_DIRS=1`. The server of
/// [`Postgres::shared`] is never dropped: a watchdog process stops it when the test process
/// exits.
#[derive(Debug)]
pub struct Postgres {
    cfg: PostgresConfig,
    tmp: Option<TempDir>,
    dir: PathBuf,
    bin_dir: PathBuf,
    /// uid/gid the server runs as when the tests run as root.
    owner: Option<(u32, u32)>,
    port: u16,
    child: Option<Child>,
    next_database: AtomicU32,
    /// The watchdog's stdin, held open while this process lives (shared server only).
    watchdog: Option<(Child, ChildStdin)>,
}

/// One database of a test server, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresDatabase {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub name: String,
}

impl PostgresDatabase {
    /// `postgres://USER@127.0.0.1:PORT/NAME?sslmode=disable`: the job file's form, without
    /// the password.
    pub fn url(&self) -> String {
        format!(
            "postgres://{}@{}:{}/{}?sslmode=disable",
            self.user, self.host, self.port, self.name
        )
    }

    pub fn password(&self) -> &str {
        &self.password
    }
}

/// Why one start attempt failed.
enum StartFailure {
    Exited(ExitStatus),
    Timeout,
}

impl Postgres {
    /// Runs `initdb` in a fresh temporary directory, starts the server on a free loopback
    /// port and creates [`PostgresConfig::user`] and [`PostgresConfig::database`]; returns
    /// once the server accepts connections.
    ///
    /// # Panics
    ///
    /// If PostgreSQL 15 is not installed (the message says `apt-get install postgresql`), if
    /// `initdb` fails, or if the server does not come up within 10 seconds (the message has
    /// the end of its log).
    pub fn start(cfg: PostgresConfig) -> Postgres {
        validate(&cfg);
        let bin_dir = find_bin_dir();
        // SAFETY: geteuid has no preconditions and cannot fail.
        let owner = (unsafe { libc::geteuid() } == 0).then(ensure_mail_owner);
        let tmp = crate::server_dir("postgres", &std::env::temp_dir());
        let dir = tmp.path().to_path_buf();
        let mut server = Postgres {
            cfg,
            tmp: Some(tmp),
            dir,
            bin_dir,
            owner,
            port: 0,
            child: None,
            next_database: AtomicU32::new(1),
            watchdog: None,
        };
        // From here on a panic drops `server`, which stops PostgreSQL and cleans up.
        if server.cfg.tls {
            generate_tls(&server.dir.join("tls"));
        }
        if let Some((uid, gid)) = server.owner {
            // The server reads its key and writes its socket and data here as the owner.
            chown_tree(&server.dir, uid, gid);
        }
        server.initdb();
        server.launch();
        let (user, password) = (server.cfg.user.clone(), server.cfg.password.clone());
        server.psql(
            "postgres",
            &format!("CREATE ROLE \"{user}\" LOGIN PASSWORD '{password}'"),
        );
        let database = server.cfg.database.clone();
        server.create_database(&database);
        server
    }

    /// One server for the whole test process, started on first use with the default
    /// [`PostgresConfig`]; give each test its own database ([`Postgres::fresh_database`]).
    /// A watchdog (`sh`, reading a pipe from this process) stops the server and removes its
    /// directory when the test process exits, however it exits.
    pub fn shared() -> &'static Postgres {
        static SHARED: OnceLock<Postgres> = OnceLock::new();
        SHARED.get_or_init(|| {
            let mut server = Postgres::start(PostgresConfig::default());
            server.start_watchdog();
            server
        })
    }

    /// A new, empty database owned by [`PostgresConfig::user`], named uniquely on this
    /// server.
    pub fn fresh_database(&self) -> PostgresDatabase {
        let n = self.next_database.fetch_add(1, Ordering::SeqCst);
        let name = format!("{}_{n}", self.cfg.database);
        self.create_database(&name);
        self.database(&name)
    }

    /// How to reach database `name` as [`PostgresConfig::user`].
    pub fn database(&self, name: &str) -> PostgresDatabase {
        PostgresDatabase {
            host: HOST.into(),
            port: self.port,
            user: self.cfg.user.clone(),
            password: self.cfg.password.clone(),
            name: name.into(),
        }
    }

    /// Creates database `name` owned by [`PostgresConfig::user`].
    ///
    /// # Panics
    ///
    /// If it exists already, or the server refuses.
    pub fn create_database(&self, name: &str) {
        assert!(
            is_identifier(name),
            "mailferry-testkit: unusable database name {name:?} (letters, digits, _)"
        );
        self.psql(
            "postgres",
            &format!("CREATE DATABASE \"{name}\" OWNER \"{}\"", self.cfg.user),
        );
    }

    /// Runs SQL in `database` as the superuser (over the Unix socket) and returns psql's
    /// unaligned output (`-At`: one row per line, columns separated by `|`).
    ///
    /// # Panics
    ///
    /// If psql fails; the message has its output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let psql = self.bin_dir.join("psql");
        let out = Command::new(&psql)
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                database,
            ])
            .args(["-c", sql])
            // A developer's PG* settings must not change what the kit does.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "mailferry-testkit: cannot run {}: {e} (install: {INSTALL_HINT})",
                    psql.display()
                )
            });
        assert!(
            out.status.success(),
            "mailferry-testkit: psql in {database} failed ({}): {sql}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn host(&self) -> &str {
        HOST
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn user(&self) -> &str {
        &self.cfg.user
    }

    pub fn password(&self) -> &str {
        &self.cfg.password
    }

    /// PEM file of the private CA that signed the server certificate (with
    /// [`PostgresConfig::tls`], else `None`); the certificate is for `CN=localhost` with SANs
    /// `DNS:localhost` and `IP:127.0.0.1`.
    pub fn ca_pem(&self) -> Option<PathBuf> {
        self.cfg.tls.then(|| self.dir.join("tls/ca.pem"))
    }

    /// The server's temporary directory (`data/`, `postgres.log`, the Unix socket, `tls/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last `lines` lines of the server's log, for assertion messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let path = self.log_path();
        let text = fs::read_to_string(&path).unwrap_or_default();
        format!(
            "--- postgres.log ({}), last {lines} lines ---\n{}\n",
            path.display(),
            tail(&text, lines)
        )
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A command for a PostgreSQL binary, run as the server's owner.
    fn command(&self, name: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(name));
        command
            .current_dir(&self.dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LC_ALL", "C.UTF-8")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.owner {
            command.uid(uid).gid(gid);
        }
        command
    }

    fn initdb(&self) {
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--locale-provider=icu",
                "--icu-locale=en-US",
            ])
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "mailferry-testkit: cannot run {}/initdb: {e} (install: {INSTALL_HINT})",
                    self.bin_dir.display()
                )
            });
        assert!(
            out.status.success(),
            "\n\nmailferry-testkit: initdb failed ({}); {KEEP_ENV}=1 keeps {}\n{}{}\n",
            out.status,
            self.dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the server on fresh ports, retrying when a port was taken in the meantime.
    fn launch(&mut self) {
        for attempt in 1..=FRESH_PORT_ATTEMPTS {
            self.port = free_port();
            let log_mark = file_len(&self.log_path());
            self.spawn();
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
                StartFailure::Exited(status) => {
                    format!("postgres exited during start-up ({status})")
                }
                StartFailure::Timeout => format!(
                    "postgres did not accept connections on {HOST}:{} within {} s",
                    self.port,
                    READY_TIMEOUT.as_secs()
                ),
            };
            panic!(
                "\n\nmailferry-testkit: {why} (attempt {attempt} of {FRESH_PORT_ATTEMPTS}).\n\
                 (set {KEEP_ENV}=1 to keep {})\n{}\n",
                self.dir.display(),
                self.log_tail(40)
            );
        }
    }

    fn spawn(&mut self) {
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
        let mut settings = vec![
            format!("listen_addresses={HOST}"),
            format!("unix_socket_directories={}", self.dir.display()),
            // A test server: speed over durability.
            "fsync=off".into(),
            "synchronous_commit=off".into(),
            "full_page_writes=off".into(),
            // Segments in the data directory rather than /dev/shm, so a killed server
            // leaves nothing behind outside its directory.
            "dynamic_shared_memory_type=mmap".into(),
            "shared_buffers=16MB".into(),
            "max_connections=200".into(),
        ];
        if self.cfg.tls {
            let tls = self.dir.join("tls");
            settings.push("ssl=on".into());
            settings.push(format!("ssl_cert_file={}", tls.join("cert.pem").display()));
            settings.push(format!("ssl_key_file={}", tls.join("key.pem").display()));
        }
        let mut command = self.command("postgres");
        command.arg("-D").arg(self.data_dir());
        command.args(["-p", &self.port.to_string()]);
        for s in settings {
            command.arg("-c").arg(s);
        }
        let child = command
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "mailferry-testkit: cannot run {}/postgres: {e} (install: {INSTALL_HINT})",
                    self.bin_dir.display()
                )
            });
        self.child = Some(child);
    }

    /// Polls until this server has logged that it is ready and its port accepts a TCP
    /// connection, or it exits, or time runs out.
    fn wait_ready(&mut self, log_mark: u64) -> Result<(), StartFailure> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(StartFailure::Exited(status));
            }
            // The log line ties the answer to this process: on a port that was taken in
            // the meantime another server might accept the connection.
            if read_from(&self.log_path(), log_mark).contains(READY_LINE)
                && TcpStream::connect((HOST, self.port)).is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StartFailure::Timeout);
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// Starts `sh` reading a pipe this process holds open: at EOF (this process exited) it
    /// asks the server for a fast shutdown, kills what is left after a few seconds and
    /// removes the directory. A `static` is never dropped, so this is how the shared
    /// server goes away.
    fn start_watchdog(&mut self) {
        let Some(child) = self.child.as_ref() else {
            return;
        };
        let keep = std::env::var(KEEP_ENV).is_ok_and(|v| v == "1");
        let script = format!(
            "read _ignored; kill -INT \"$1\" 2>/dev/null; i=0; \
             while kill -0 \"$1\" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; \
             kill -KILL -- -\"$1\" 2>/dev/null; {}",
            if keep { "true" } else { "rm -rf -- \"$2\"" }
        );
        let mut watchdog = Command::new("sh")
            .args(["-c", &script, "mailferry-postgres-watchdog"])
            .arg(child.id().to_string())
            .arg(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("mailferry-testkit: cannot start sh: {e}"));
        let Some(stdin) = watchdog.stdin.take() else {
            panic!("mailferry-testkit: the watchdog has no stdin");
        };
        self.watchdog = Some((watchdog, stdin));
        if keep {
            // The watchdog leaves the directory; dropping the TempDir must not remove it.
            if let Some(tmp) = self.tmp.take() {
                let _kept = tmp.keep();
            }
        }
    }

    /// Stops the server as an administrator's restart does (a fast shutdown: every client is
    /// disconnected); [`Postgres::start_again`] brings it back with the same data on the same
    /// port. Not for [`Postgres::shared`] (its watchdog knows the first server process).
    pub fn stop_server(&mut self) {
        self.stop();
    }

    /// Starts a server stopped by [`Postgres::stop_server`] again, on the same port and data
    /// directory; returns once it accepts connections.
    ///
    /// # Panics
    ///
    /// If it does not come up within 10 seconds (the message has the end of its log).
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "mailferry-testkit: the server is running"
        );
        let log_mark = file_len(&self.log_path());
        self.spawn();
        if self.wait_ready(log_mark).is_err() {
            panic!(
                "\n\nmailferry-testkit: postgres did not come back on {HOST}:{}\n{}\n",
                self.port,
                self.log_tail(40)
            );
        }
    }

    /// [`Postgres::stop_server`], `down` of nothing listening, [`Postgres::start_again`].
    pub fn restart(&mut self, down: Duration) {
        self.stop_server();
        sleep(down);
        self.start_again();
    }

    /// A fast shutdown (SIGINT: clients are disconnected, the server exits at once), then
    /// SIGKILL to the process group for whatever is left.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill has no memory-safety preconditions; `pid` is our child, not yet
        // reaped.
        unsafe {
            libc::kill(pid, libc::SIGINT);
        }
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            sleep(Duration::from_millis(10));
        }
        terminate(child, false);
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        if let Some(tmp) = self.tmp.take() {
            crate::release_dir(tmp, "PostgreSQL");
        }
    }
}

/// Panics on names and passwords the kit cannot quote into SQL as they are.
fn validate(cfg: &PostgresConfig) {
    for (what, name) in [("user", &cfg.user), ("database", &cfg.database)] {
        assert!(
            is_identifier(name),
            "mailferry-testkit: unusable PostgresConfig::{what} {name:?} (letters, digits, _)"
        );
    }
    assert!(
        !cfg.password.is_empty() && !cfg.password.contains(['\'', '\\', '\n', '\r']),
        "mailferry-testkit: unusable PostgresConfig::password (non-empty, without quotes, \
         backslashes or line breaks)"
    );
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() < 60
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Debian's PostgreSQL 15 binaries, or the loud failure that says what to install.
fn find_bin_dir() -> PathBuf {
    let dir = PathBuf::from(BIN_DIR);
    let missing: Vec<&str> = ["initdb", "postgres", "psql"]
        .into_iter()
        .filter(|b| !dir.join(b).is_file())
        .collect();
    assert!(
        missing.is_empty(),
        "\n\n*** mailferry-testkit: PostgreSQL 15 was not found ({} missing in {BIN_DIR}).\n\
         *** These tests need a real PostgreSQL server. Install it with:\n***     \
         {INSTALL_HINT}\n*** (scripts/install-deps.sh does, keeping the system service \
         stopped)\n\n",
        missing.join(", ")
    );
    dir
}

/// Gives a directory and everything in it to the server's owner.
fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("mailferry-testkit: cannot chown {}: {e}", path.display()));
    if path.is_dir() {
        let entries = fs::read_dir(path)
            .unwrap_or_else(|e| panic!("mailferry-testkit: cannot list {}: {e}", path.display()));
        for entry in entries.flatten() {
            chown_tree(&entry.path(), uid, gid);
        }
    }
}
