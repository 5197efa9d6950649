//! The mail session port on an IMAP server, and the connector that logs in for a mailbox.
//!
//! This is where the port's typed operations become IMAP: UID sets (chunked by
//! `mailferry_imap`), fetch items, flag lists, and the choice between one MULTIAPPEND and one
//! APPEND per message. The session wraps the client with the capabilities it learned at login,
//! as Delta Chat's `Session` does.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailferry_core::folders::{FolderTree, Namespace, ServerFolder};
use mailferry_core::job::{AdminLogin, Auth, Date, ImapSettings, Security};
use mailferry_core::model::{Flags, Side, Uid, UidValidity};
use mailferry_core::ports::connector::{FIRST_PAUSE, RECOVERY};
use mailferry_core::ports::{
    AppendOutcome, AppendTicket, ConnectError, ConnectionLimit, Connector, Created, Dropped,
    FetchTicket, FetchedMessage, FolderStatus, MailSession, Outgoing, Probe, ScanTicket,
    ScannedMessage, SelectTicket, Selected, SessionError, SessionErrorKind, TreeChange, UidRanges,
};
use mailferry_core::profile::{
    Profile, ProfileSettings, Quirks, disarm_read_receipts, is_kept_without_keywords,
    suggested_backoff,
};
use mailferry_imap::{
    AppendRequest, Client, Endpoint, Error as ImapError, Fetch, Login, Security as ImapSecurity,
    quote, trace_note,
};

use super::session_error;
use crate::credentials::Access;
use crate::oauth2::{TokenError, TokenProvider, entra_hint, login_hint};

/// How long a connect, a read or a write may wait on a server before the connection is given
/// up as broken (and the pass retried), unless `[migration] io_timeout_seconds` says otherwise:
/// a server that stops answering without closing costs one timeout, not a hung pass. Dovecot,
/// Exchange and Gmail answer every command mailferry sends well within it, the largest FETCH
/// and MULTIAPPEND included, since they stream.
pub const TIMEOUT: Duration = mailferry_core::job::DEFAULT_IO_TIMEOUT;

/// Environment variable: a whole number of seconds to use instead of the job file's timeout
/// (for a slow server, or for tests that stall a connection on purpose); it wins over
/// `io_timeout_seconds`, so that one run can be given another timeout without editing the job.
pub const TIMEOUT_ENV: &str = "MAILFERRY_IO_TIMEOUT_SECONDS";

/// `configured` (the job file's, or [`TIMEOUT`]), or what [`TIMEOUT_ENV`] says; an error names
/// the variable and its value.
pub fn io_timeout(configured: Duration) -> std::result::Result<Duration, String> {
    let Some(value) = std::env::var_os(TIMEOUT_ENV) else {
        return Ok(configured);
    };
    let text = value.to_string_lossy();
    match text.trim().parse::<u64>() {
        Ok(s) if s > 0 => Ok(Duration::from_secs(s)),
        _ => Err(format!(
            "{TIMEOUT_ENV} = {text:?}: expected a whole number of seconds above 0"
        )),
    }
}

type Result<T> = std::result::Result<T, SessionError>;

/// One IMAP server of the job, with its secrets read (from the environment or files, now).
pub struct ImapConnector {
    reach: Arc<Reach>,
    limit: Arc<ConnectionLimit>,
    profile: ProfileSettings,
    /// The profile `auto` recognised on the first connection.
    detected: Mutex<Option<Profile>>,
    tally: Arc<KeywordTally>,
    /// `max_connections_per_mailbox`.
    per_mailbox: Option<usize>,
    /// Whether sessions turn QRESYNC on when the server has it: only the source's, whose
    /// delta scans ask for the UIDs expunged since the last pass.
    qresync: bool,
}

/// Where the server is and how to log in: shared with the sessions, which reconnect with it.
struct Reach {
    endpoint: Endpoint,
    access: Access,
}

/// Custom keywords stripped before APPEND because the target cannot store them, per mailbox
/// login and folder: counted, never a failure. And how long each mailbox's sessions waited
/// on a throttling server.
#[derive(Debug, Default)]
pub struct KeywordTally(
    Mutex<BTreeMap<(String, String), u64>>,
    Mutex<BTreeMap<String, Duration>>,
);

impl KeywordTally {
    fn waited(&self, login: &str, d: Duration) {
        let mut m = self.1.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(login.to_string()).or_default() += d;
    }

    /// How long `login`'s sessions waited on throttling.
    pub fn throttled_for(&self, login: &str) -> Duration {
        let m = self.1.lock().unwrap_or_else(|e| e.into_inner());
        m.get(login).copied().unwrap_or_default()
    }

    fn add(&self, login: &str, folder: &str, n: u64) {
        if n == 0 {
            return;
        }
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((login.to_string(), folder.to_string()))
            .or_default() += n;
    }

    /// (folder, keywords dropped) of one mailbox, in folder order.
    pub fn of(&self, login: &str) -> Vec<(String, u64)> {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .filter(|((l, _), _)| l == login)
            .map(|((_, f), n)| (f.clone(), *n))
            .collect()
    }
}

impl ImapConnector {
    /// The connector for one side's `[source]` / `[target]` IMAP settings, with the default
    /// I/O timeout; an error names the setting whose secret could not be read.
    pub fn new(side: Side, imap: &ImapSettings) -> std::result::Result<ImapConnector, String> {
        ImapConnector::with_timeout(side, imap, TIMEOUT)
    }

    /// [`ImapConnector::new`] with `[migration] io_timeout_seconds` (which
    /// [`TIMEOUT_ENV`] overrides).
    pub fn with_timeout(
        side: Side,
        imap: &ImapSettings,
        timeout: Duration,
    ) -> std::result::Result<ImapConnector, String> {
        let timeout = io_timeout(timeout)?;
        let access = match &imap.auth {
            Auth::PerMailbox => Access::PerMailbox,
            Auth::OAuth2(config) => Access::OAuth2(Arc::new(
                TokenProvider::new(config, timeout).map_err(|e| format!("{side}.oauth2.{e}"))?,
            )),
            Auth::Admin {
                user,
                password,
                login,
            } => {
                let password = password
                    .reveal()
                    .map_err(|e| format!("{side}.admin_password: {e}"))?;
                match login {
                    AdminLogin::SaslAuthzid => Access::SaslAuthzid {
                        admin: user.clone(),
                        password,
                    },
                    AdminLogin::MasterSeparator(sep) => Access::MasterSeparator {
                        admin: user.clone(),
                        password,
                        separator: sep.clone(),
                    },
                }
            }
        };
        // A `tls_ca` that cannot be read is bad input, said before anything is attempted.
        let pins: Vec<_> = imap.tls_pin_sha256.iter().map(|p| p.0).collect();
        if imap.security != Security::Plain {
            mailferry_imap::tls::client_config(imap.tls_ca.as_deref(), imap.tls_verify, &pins)
                .map_err(|e| format!("{side}.tls_ca: {e}"))?;
        }
        Ok(ImapConnector {
            reach: Arc::new(Reach {
                endpoint: Endpoint {
                    host: imap.host.clone(),
                    port: imap.port,
                    security: match imap.security {
                        Security::Tls => ImapSecurity::Tls,
                        Security::StartTls => ImapSecurity::StartTls,
                        Security::Plain => ImapSecurity::Plain,
                    },
                    ca_file: imap.tls_ca.clone(),
                    verify_certificates: imap.tls_verify,
                    pins,
                    timeout,
                },
                access,
            }),
            limit: Arc::new(ConnectionLimit::new(imap.max_connections)),
            profile: imap.profile.clone(),
            detected: Mutex::new(None),
            tally: Arc::default(),
            per_mailbox: imap.max_connections_per_mailbox,
            qresync: side == Side::Source,
        })
    }
}

impl Connector for ImapConnector {
    fn describe(&self) -> String {
        let ep = &self.reach.endpoint;
        format!("connect {}:{} ({:?})", ep.host, ep.port, ep.security)
    }

    fn probe(&self) -> Result<Probe> {
        let c = Client::connect(&self.reach.endpoint).map_err(session_error)?;
        let caps: Vec<&str> = c.capabilities().collect();
        let detected = Profile::detect(c.greeting(), c.capabilities());
        let quirks = self.profile.resolve(detected);
        let how = match self.profile.named() {
            Some(_) => "as the job file says".to_string(),
            None => "recognised from the greeting and capabilities".to_string(),
        };
        let detail = format!(
            "capabilities: {}; profile: {} ({how}){}",
            caps.join(" "),
            quirks.profile,
            describe_quirks(&quirks)
        );
        c.logout();
        Ok(Probe {
            detail,
            can_log_in: true,
        })
    }

    fn open(
        &self,
        login: &str,
        own_password: Option<&str>,
    ) -> std::result::Result<Box<dyn MailSession>, ConnectError> {
        // A paused server (adaptive throttling) gets no new connection before the pause ends.
        let pause = self.limit.pause(Instant::now());
        if !pause.is_zero() {
            std::thread::sleep(pause);
            self.tally.waited(login, pause);
        }
        let client = self.reach.open_client(login, own_password)?;
        let quirks = self.quirks_for(&client);
        let reach = Arc::clone(&self.reach);
        let (who, own) = (login.to_string(), own_password.map(str::to_string));
        let reopen: Reopen = Box::new(move || reach.open_client(&who, own.as_deref()));
        let mut session = ImapSession::new(client);
        session.qresync = self.qresync;
        session.profiled(quirks, login, Arc::clone(&self.tally), reopen);
        session.limit = Some(Arc::clone(&self.limit));
        Ok(Box::new(session))
    }

    fn limit(&self) -> &ConnectionLimit {
        &self.limit
    }

    fn server(&self) -> Option<String> {
        let ep = &self.reach.endpoint;
        Some(format!("{}:{}", ep.host.to_ascii_lowercase(), ep.port))
    }

    fn max_connections_per_mailbox(&self) -> Option<usize> {
        self.per_mailbox
    }

    fn profile(&self) -> Option<String> {
        let detected = *self.detected.lock().unwrap_or_else(|e| e.into_inner());
        self.profile
            .named()
            .or(detected)
            .map(|p| p.name().to_string())
    }

    fn dropped_keywords(&self, login: &str) -> Vec<(String, u64)> {
        self.tally.of(login)
    }

    fn throttled_for(&self, login: &str) -> Duration {
        self.tally.throttled_for(login)
    }

    fn check_credentials(&self, login: &str) -> Option<std::result::Result<String, String>> {
        let Access::OAuth2(provider) = &self.reach.access else {
            return None;
        };
        Some(
            provider
                .token(login, None)
                .map(|t| {
                    format!(
                        "{}: a token valid {} s",
                        provider.describe(),
                        t.lifetime().as_secs()
                    )
                })
                .map_err(|e| token_words(&e)),
        )
    }
}

/// The identity provider's refusal, with the set-up step it points to.
fn token_words(e: &TokenError) -> String {
    match entra_hint(e) {
        Some(hint) => format!("{e} ({hint})"),
        None => e.to_string(),
    }
}

fn token_failure(e: &TokenError) -> ConnectError {
    let kind = if e.is_transient() {
        SessionErrorKind::Transient
    } else {
        SessionErrorKind::Refused { code: None }
    };
    ConnectError::Login(SessionError::new(kind, token_words(e)))
}

/// What a profile changes, for `check`.
fn describe_quirks(q: &Quirks) -> String {
    let mut parts = Vec::new();
    if let Some(size) = q.max_message_size {
        parts.push(format!("max_message_size {size}"));
    }
    if !q.keywords {
        parts.push("custom keywords dropped and counted".into());
    }
    if q.reapply_flagged {
        parts.push("\\Flagged set again after APPEND".into());
    }
    if !q.condstore {
        parts.push("no CONDSTORE".into());
    }
    if q.forbid_imap4rev2 {
        parts.push("never ENABLE IMAP4rev2".into());
    }
    if !q.include_virtual_folders {
        parts.push("virtual folders left out".into());
    }
    if q.disarm_read_receipts {
        parts.push("read receipts disarmed".into());
    }
    if let Some(n) = q.max_connections {
        parts.push(format!("default max_connections {n}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(": {}", parts.join(", "))
    }
}

impl ImapConnector {
    /// The quirks for a fresh connection: the job file's profile, or the one recognised from
    /// this server's greeting and capabilities. The first recognition also lowers the
    /// connection cap to the profile's default when the job file sets none.
    fn quirks_for(&self, c: &Client) -> Quirks {
        let detected = Profile::detect(c.greeting(), c.capabilities());
        let quirks = self.profile.resolve(detected);
        let mut seen = self.detected.lock().unwrap_or_else(|e| e.into_inner());
        if seen.is_none() {
            *seen = Some(detected);
            if self.profile.named().is_none()
                && self.profile.max_connections.is_none()
                && let Some(n) = quirks.max_connections
            {
                self.limit.lower_to(n);
            }
        }
        quirks
    }
}

impl Reach {
    /// Connects and logs in for one mailbox.
    fn open_client(
        &self,
        login: &str,
        own_password: Option<&str>,
    ) -> std::result::Result<Client, ConnectError> {
        if let Access::OAuth2(provider) = &self.access {
            return self.open_oauth2(provider, login);
        }
        let login = self
            .access
            .login(login, own_password)
            .map_err(ConnectError::Config)?;
        let mut c =
            Client::connect(&self.endpoint).map_err(|e| ConnectError::Connect(session_error(e)))?;
        c.login(&login)
            .map_err(|e| ConnectError::Login(session_error(e)))?;
        Ok(c)
    }

    /// An OAuth2 login: the shared token (fetched when none is fresh), and when the server
    /// refuses it (`NO [AUTHENTICATIONFAILED]`, or Exchange Online's bare `NO`), once more
    /// with a token fetched anew (the server may have seen the old one expire). A second
    /// refusal fails the mailbox with the server's words and what the identity provider
    /// issued.
    fn open_oauth2(
        &self,
        provider: &TokenProvider,
        login: &str,
    ) -> std::result::Result<Client, ConnectError> {
        let token = provider.token(login, None).map_err(|e| token_failure(&e))?;
        let mut c =
            Client::connect(&self.endpoint).map_err(|e| ConnectError::Connect(session_error(e)))?;
        let sasl = |token: &crate::oauth2::Token| Login::OAuth2 {
            user: login.to_string(),
            token: token.secret().to_string(),
            mechanism: provider.mechanism(),
        };
        let first = match c.login(&sasl(&token)) {
            Ok(()) => return Ok(c),
            // Dovecot says [AUTHENTICATIONFAILED]; Exchange Online a bare "NO AUTHENTICATE
            // failed.": any lasting NO to the token is worth one fresh token.
            Err(e @ ImapError::No { .. }) if !e.is_transient() => e,
            Err(e) => return Err(ConnectError::Login(session_error(e))),
        };
        let fresh = provider.token(login, Some(&token)).map_err(|e| {
            let message = format!("{first}; fetching a new token failed: {}", token_words(&e));
            ConnectError::Login(if e.is_transient() {
                SessionError::new(SessionErrorKind::Transient, message)
            } else {
                SessionError::refused(first.code(), message)
            })
        })?;
        match c.login(&sasl(&fresh)) {
            Ok(()) => Ok(c),
            Err(e @ ImapError::No { .. }) if !e.is_transient() => {
                Err(ConnectError::Login(SessionError::refused(
                    e.code(),
                    format!(
                        "{e}; the identity provider issued a new token ({}, valid {} s) and the \
                         server refused it too ({})",
                        provider.describe(),
                        fresh.lifetime().as_secs(),
                        login_hint(provider, &fresh, login),
                    ),
                )))
            }
            Err(e) => Err(ConnectError::Login(session_error(e))),
        }
    }
}

/// What the session may use, learned once at login.
#[derive(Debug, Clone, Copy)]
struct Capabilities {
    /// RFC 3502 MULTIAPPEND with RFC 7888 LITERAL+: a group goes out as one pipelined
    /// transaction.
    multiappend: bool,
}

impl Capabilities {
    fn of(client: &Client) -> Capabilities {
        Capabilities {
            multiappend: client.has("MULTIAPPEND") && client.has("LITERAL+"),
        }
    }
}

/// Connects and logs in again for the same mailbox.
type Reopen = Box<dyn Fn() -> std::result::Result<Client, ConnectError> + Send>;

/// The handle of a message refused locally, before sending (over `max_message_size`).
const TOO_BIG: &str = "!too-big";

/// What a copy fetches of each message: all that the target needs to store it as it was.
const BODY_ITEMS: &str = "UID FLAGS INTERNALDATE BODY.PEEK[]";
/// What a scan fetches of each message.
const SCAN_ITEMS: &str = "UID FLAGS RFC822.SIZE";

/// One logged-in IMAP mailbox.
pub struct ImapSession {
    client: Client,
    caps: Capabilities,
    quirks: Quirks,
    login: String,
    tally: Option<Arc<KeywordTally>>,
    reopen: Option<Reopen>,
    /// The folder selected and whether read-only, to select it again after a reconnect.
    selected: Option<(String, bool)>,
    /// Scan tickets sent and not yet finished ([`MailSession::send_select_and_scan`]).
    scans_unread: usize,
    /// Whether the selected folder has mod-sequences: SELECT said HIGHESTMODSEQ (not
    /// NOMODSEQ) on a CONDSTORE session, so `CHANGEDSINCE` may be asked.
    modseq: bool,
    /// Whether to turn QRESYNC on, on every connection, before its first SELECT.
    qresync: bool,
    /// Commands refused on this connection (Exchange Online drops a session after about 10).
    failed: u32,
    /// The server's shared cap, slowed down by throttling replies (adaptive throttling).
    limit: Option<Arc<ConnectionLimit>>,
    /// Whether this connection's drop was counted already: the commands pipelined on it fail
    /// one after the other, and one drop is one.
    drop_counted: std::cell::Cell<bool>,
}

/// A message as this server is given it: custom keywords stripped when it cannot store them,
/// read receipts disarmed when asked.
struct Prepared<'a> {
    flags: Vec<String>,
    dropped: u64,
    body: Cow<'a, [u8]>,
}

impl ImapSession {
    pub fn new(client: Client) -> ImapSession {
        ImapSession {
            caps: Capabilities::of(&client),
            client,
            quirks: Profile::Generic.quirks(),
            login: String::new(),
            tally: None,
            reopen: None,
            selected: None,
            scans_unread: 0,
            modseq: false,
            qresync: false,
            failed: 0,
            limit: None,
            drop_counted: std::cell::Cell::new(false),
        }
    }

    /// Applies a server profile's quirks to this session.
    fn profiled(&mut self, quirks: Quirks, login: &str, tally: Arc<KeywordTally>, reopen: Reopen) {
        self.quirks = quirks;
        self.login = login.to_string();
        self.tally = Some(tally);
        self.reopen = Some(reopen);
        self.forget_unwanted();
        self.enable_qresync();
    }

    /// `ENABLE QRESYNC` when wanted and the profile leaves it on. A refusal only means no
    /// QRESYNC (CONDSTORE deltas still work), and a broken connection fails the next command,
    /// which reconnects; so neither is an error here.
    fn enable_qresync(&mut self) {
        if self.qresync && self.quirks.condstore {
            // With the next command (the folder tree, or the SELECT of a reconnection): a
            // round trip saved on every source connection.
            self.client.enable_qresync_with_next();
        }
    }

    fn forget_unwanted(&mut self) {
        if !self.quirks.condstore {
            self.client.forget("CONDSTORE");
            self.client.forget("QRESYNC");
        }
        if self.quirks.forbid_imap4rev2 {
            self.client.forget("IMAP4REV2");
        }
        self.caps = Capabilities::of(&self.client);
    }

    /// A new connection for the same mailbox, with the same folder selected.
    fn reconnect(&mut self) -> Result<()> {
        let Some(reopen) = &self.reopen else {
            return Err(SessionError::new(
                SessionErrorKind::Transient,
                "the connection was lost",
            ));
        };
        let fresh = reopen().map_err(|e| match e {
            ConnectError::Connect(e) | ConnectError::Login(e) => e,
            ConnectError::Config(m) => SessionError::new(SessionErrorKind::Other, m),
        })?;
        let old = std::mem::replace(&mut self.client, fresh);
        old.logout();
        self.failed = 0;
        self.scans_unread = 0;
        self.drop_counted.set(false);
        self.forget_unwanted();
        self.enable_qresync();
        if let Some((folder, read_only)) = self.selected.clone() {
            self.client
                .select(&folder, read_only)
                .map_err(|e| self.lost(e))?;
        }
        Ok(())
    }

    /// Runs one command that may be repeated: a throttling reply with a backoff hint is
    /// waited out and the command sent once more (on a new connection when the server hung
    /// up meanwhile); refusals are counted, and the session reconnects before the server's
    /// cut-off (Exchange Online: about 10 failed commands).
    fn call<T>(
        &mut self,
        op: impl Fn(&mut Client) -> std::result::Result<T, ImapError>,
    ) -> Result<T> {
        self.wait_for_server();
        let first = match op(&mut self.client) {
            Ok(v) => {
                self.went_through();
                return Ok(v);
            }
            Err(e) => e,
        };
        let Some(hint) = throttling_of(&first) else {
            return Err(self.refused(first));
        };
        self.wait_throttled(hint);
        match op(&mut self.client) {
            Ok(v) => Ok(v),
            Err(e) if e.is_transient() && self.reopen.is_some() => {
                self.reconnect()?;
                op(&mut self.client).map_err(|e| self.refused(e))
            }
            Err(e) => Err(self.refused(e)),
        }
    }

    /// Waits while the server's connections are paused by an earlier throttling reply.
    fn wait_for_server(&mut self) {
        let Some(limit) = &self.limit else { return };
        let pause = limit.pause(Instant::now());
        if !pause.is_zero() {
            std::thread::sleep(pause);
            if let Some(t) = &self.tally {
                t.waited(&self.login, pause);
            }
        }
    }

    /// A throttling reply: slows every connection to this server down (fewer connections,
    /// a pause) and waits the hint or the pause.
    fn wait_throttled(&mut self, hint: Option<Duration>) {
        let wait = match &self.limit {
            Some(limit) => limit.throttled(hint, Instant::now()),
            None => hint.unwrap_or(mailferry_core::ports::connector::FIRST_PAUSE),
        };
        std::thread::sleep(wait);
        if let Some(t) = &self.tally {
            t.waited(&self.login, wait);
        }
    }

    /// An error of this connection as the session's, counted first when it is the server
    /// dropping the connection (adaptive throttling: [`ConnectionLimit::dropped`]); a
    /// lowered cap is written to the trace.
    fn lost(&self, e: ImapError) -> SessionError {
        if e.is_dropped_by_server()
            && !self.drop_counted.replace(true)
            && let Some(limit) = &self.limit
            && let Dropped::Lowered(was, now) = limit.dropped(Instant::now())
        {
            trace_note(
                &self.client.peer,
                &format!(
                    "adaptive throttling: the server dropped a second connection within {} s; \
                     connection cap {was} -> {now}, a {} s pause",
                    RECOVERY.as_secs(),
                    FIRST_PAUSE.as_secs()
                ),
            );
        }
        session_error(e)
    }

    /// Records the folder as selected (to select it again after a reconnect) and whether it
    /// has mod-sequences; returns the SELECT's answer as the port's.
    fn now_selected(
        &mut self,
        raw: &str,
        write: bool,
        s: mailferry_imap::Selected,
    ) -> Result<Selected> {
        self.selected = Some((raw.to_string(), !write));
        self.modseq = self.client.has("CONDSTORE") && s.highest_modseq.is_some_and(|m| m > 0);
        Ok(Selected {
            exists: s.exists,
            uid_validity: uid_validity(s.uid_validity, raw)?,
        })
    }

    /// Reads and drops the answers of a FETCH sent behind a SELECT that failed (it found no
    /// folder selected, or the one before): only a broken connection is an error.
    fn drop_answers(&mut self, tag: &str) -> Result<()> {
        match self.client.uid_fetch_finish(&[tag.to_string()], |_| Ok(())) {
            Err(e) if !is_refusal(&e) => Err(self.lost(e)),
            _ => Ok(()),
        }
    }

    fn went_through(&self) {
        if let Some(limit) = &self.limit {
            limit.recovered(Instant::now());
        }
    }

    /// Counts a refusal; at the profile's budget the connection is replaced (the error is
    /// still the caller's).
    fn refused(&mut self, e: ImapError) -> SessionError {
        let out = self.lost(e);
        if out.is_refusal() {
            self.failed += 1;
            if let Some(max) = self.quirks.max_failed_commands
                && self.failed >= max
            {
                // Best effort: a failed reconnect shows on the next command.
                let _ = self.reconnect();
            }
        }
        out
    }

    fn prepare<'a>(&self, m: &Outgoing<'a>) -> Prepared<'a> {
        let mut flags = m.flags.to_vec();
        let before = flags.len();
        if !self.quirks.keywords {
            flags.retain(|f| is_kept_without_keywords(f));
        }
        let dropped = (before - flags.len()) as u64;
        let body = match self.quirks.disarm_read_receipts {
            true => disarm_read_receipts(m.body).map_or(Cow::Borrowed(m.body), Cow::Owned),
            false => Cow::Borrowed(m.body),
        };
        Prepared {
            flags,
            dropped,
            body,
        }
    }

    fn too_big(&self, m: &Outgoing<'_>) -> bool {
        self.quirks
            .max_message_size
            .is_some_and(|max| m.body.len() as u64 > max)
    }

    fn send_each(&mut self, folder: &str, messages: &[Outgoing<'_>]) -> Result<Vec<String>> {
        messages
            .iter()
            .map(|m| {
                if self.too_big(m) {
                    return Ok(TOO_BIG.to_string());
                }
                let p = self.prepare(m);
                self.client
                    .append_send(&request(folder, &p.flags, &p.body, m))
                    .map_err(|e| self.lost(e))
            })
            .collect()
    }

    /// Sends one message again after a throttling reply and reads its answer.
    fn append_again(
        &mut self,
        folder: &str,
        m: &Outgoing<'_>,
        hint: Option<Duration>,
    ) -> AppendOutcome {
        self.wait_throttled(hint);
        let p = self.prepare(m);
        let once = |c: &mut Client| {
            let tag = c.append_send(&request(folder, &p.flags, &p.body, m))?;
            c.append_finish(&tag)
        };
        let answer = match once(&mut self.client) {
            Err(e) if e.is_transient() && self.reopen.is_some() => match self.reconnect() {
                Ok(()) => once(&mut self.client),
                Err(_) => Err(e),
            },
            other => other,
        };
        match answer {
            Ok(uid) => AppendOutcome::Stored(uid.and_then(|(_, u)| Uid::new(u))),
            Err(e) => AppendOutcome::Refused(e.to_string()),
        }
    }

    /// After the answers: throttled refusals sent once more after the suggested wait, the
    /// custom keywords dropped from stored messages counted, and `\Flagged` set again where
    /// the server loses it on APPEND.
    fn after_appends(
        &mut self,
        folder: &str,
        messages: &[Outgoing<'_>],
        mut outcomes: Vec<AppendOutcome>,
    ) -> Result<Vec<AppendOutcome>> {
        for (i, outcome) in outcomes.iter_mut().enumerate() {
            if let AppendOutcome::Refused(text) = outcome
                && let Some(hint) = throttled_words(text)
            {
                *outcome = self.append_again(folder, &messages[i], hint);
            }
        }
        let mut dropped = 0;
        let mut flagged = Vec::new();
        for (outcome, m) in outcomes.iter().zip(messages) {
            if let AppendOutcome::Stored(uid) = outcome {
                dropped += self.prepare(m).dropped;
                if self.quirks.reapply_flagged
                    && m.flags
                        .to_vec()
                        .iter()
                        .any(|f| f.eq_ignore_ascii_case("\\Flagged"))
                    && let Some(uid) = uid
                {
                    flagged.push(uid.get());
                }
            }
        }
        if let Some(tally) = &self.tally {
            tally.add(&self.login, folder, dropped);
        }
        if !flagged.is_empty() {
            self.reflag(folder, &flagged)?;
        }
        Ok(outcomes)
    }

    /// `UID STORE +FLAGS (\Flagged)` on the UIDs the appends got, with `folder` selected
    /// (and the folder selected before selected again).
    fn reflag(&mut self, folder: &str, uids: &[u32]) -> Result<()> {
        let before = self.selected.clone();
        let here = before.as_ref().is_some_and(|(f, ro)| f == folder && !ro);
        if !here {
            self.client
                .select(folder, false)
                .map_err(|e| self.lost(e))?;
        }
        let flag = ["\\Flagged".to_string()];
        self.call(|c| c.uid_add_flags(uids, &flag))?;
        if !here && let Some((f, ro)) = before {
            self.client.select(&f, ro).map_err(|e| self.lost(e))?;
        }
        Ok(())
    }

    /// Reads the answers of one APPEND each, in order; stops at the first broken one.
    fn finish_each(&mut self, tags: &[String]) -> Vec<AppendOutcome> {
        let mut out = Vec::with_capacity(tags.len());
        for tag in tags {
            if tag == TOO_BIG {
                let max = self.quirks.max_message_size.unwrap_or_default();
                out.push(AppendOutcome::Refused(format!(
                    "not sent: larger than the target's max_message_size of {max} bytes \
                     (profile {})",
                    self.quirks.profile
                )));
                continue;
            }
            match self.client.append_finish(tag) {
                Ok(uid) => out.push(AppendOutcome::Stored(uid.and_then(|(_, u)| Uid::new(u)))),
                Err(e @ (ImapError::No { .. } | ImapError::Bad { .. })) if !e.is_transient() => {
                    out.push(AppendOutcome::Refused(e.to_string()));
                }
                Err(e) => {
                    out.push(AppendOutcome::Lost(self.lost(e)));
                    break;
                }
            }
        }
        out
    }
}

fn request<'a>(
    folder: &'a str,
    flags: &'a [String],
    body: &'a [u8],
    m: &Outgoing<'a>,
) -> AppendRequest<'a> {
    AppendRequest {
        mailbox: folder,
        flags,
        date: m.internal_date,
        message: body,
    }
}

/// A tagged `NO` or `BAD`: the server refused the command, the connection is in step.
fn is_refusal(e: &ImapError) -> bool {
    matches!(e, ImapError::No { .. } | ImapError::Bad { .. })
}

/// Whether a reply is the server throttling: `NO`/`BAD` with `Suggested Backoff Time: N
/// milliseconds` (Exchange Online), or with `[THROTTLED]`, `[LIMIT]` (RFC 5530) or
/// `[UNAVAILABLE]`; `Some(hint)` with the server's wait when it gave one.
fn throttling_of(e: &ImapError) -> Option<Option<Duration>> {
    match e {
        ImapError::No { code, .. } | ImapError::Bad { code, .. } => {
            let hint = suggested_backoff(&e.to_string());
            let coded = code
                .as_deref()
                .and_then(|c| c.split(' ').next())
                .is_some_and(|c| {
                    ["THROTTLED", "LIMIT", "UNAVAILABLE"]
                        .iter()
                        .any(|x| c.eq_ignore_ascii_case(x))
                });
            (hint.is_some() || coded).then_some(hint)
        }
        _ => None,
    }
}

/// A CREATE refused because the folder exists (RFC 5530 `ALREADYEXISTS`): made meanwhile by
/// another pass, or by the server's autocreate.
fn already_exists(e: &SessionError) -> bool {
    matches!(&e.kind, SessionErrorKind::Refused { code: Some(code) }
        if code
            .split(' ')
            .next()
            .is_some_and(|n| n.eq_ignore_ascii_case("ALREADYEXISTS")))
}

/// Gmail's virtual folders, by special use (RFC 6154 `\All`, `\Flagged`; Gmail's
/// `\Important`) or by name: every message of them is in a real folder (a label) too.
pub fn is_virtual_folder(f: &ServerFolder) -> bool {
    const ATTRIBUTES: [&str; 3] = ["\\All", "\\Important", "\\Flagged"];
    const NAMES: [&str; 3] = ["All Mail", "Important", "Starred"];
    f.attributes
        .iter()
        .any(|a| ATTRIBUTES.iter().any(|x| a.eq_ignore_ascii_case(x)))
        || ["[Gmail]", "[Google Mail]"].iter().any(|top| {
            f.raw_name
                .strip_prefix(top)
                .and_then(|rest| rest.strip_prefix(['/', '.']))
                .is_some_and(|leaf| NAMES.iter().any(|n| n.eq_ignore_ascii_case(leaf)))
        })
}

/// A scan's FETCH response as the port's message; `None` for one without a UID, or below
/// `from`: `n:*` always includes the highest UID, even below n (RFC 3501 §6.4.8).
fn scanned_of(f: &Fetch, from: Uid) -> Option<ScannedMessage> {
    let uid = f.uid().and_then(Uid::new).filter(|&u| u >= from)?;
    Some(ScannedMessage {
        uid,
        flags: flags_of(f),
        size: f.get("RFC822.SIZE").and_then(|v| v.as_u64()).unwrap_or(0),
    })
}

fn flags_of(f: &Fetch) -> Flags {
    Flags::from_server(f.flags().unwrap_or_default())
}

/// The STATUS a server gave along with its LIST (LIST-STATUS), by raw folder name.
pub type ListedStatuses = Vec<(String, mailferry_imap::client::FolderStatus)>;

/// Reads a server's folder tree: namespace, LIST and LSUB.
pub fn read_tree(c: &mut Client) -> std::result::Result<FolderTree, ImapError> {
    Ok(read_tree_keeping(c, false, |_| true)?.0)
}

/// [`read_tree`] with only the folders `keep` keeps, and with `statuses` the STATUS the
/// server gave along with its LIST.
pub fn read_tree_keeping(
    c: &mut Client,
    statuses: bool,
    keep: impl Fn(&ServerFolder) -> bool,
) -> std::result::Result<(FolderTree, ListedStatuses), ImapError> {
    let lists = c.tree_lists(statuses)?;
    let (list, ns, listed) = (lists.list, lists.namespace, lists.statuses);
    let delimiter = list.iter().find_map(|l| l.delimiter);
    let namespace = match ns {
        Some((prefix, d)) => Namespace {
            prefix,
            delimiter: d.or(delimiter),
        },
        None => Namespace {
            prefix: String::new(),
            delimiter,
        },
    };
    let subscribed: HashSet<String> = lists.lsub.into_iter().map(|l| l.name).collect();
    let folders = list
        .into_iter()
        .map(|l| ServerFolder {
            subscribed: subscribed.contains(&l.name),
            raw_name: l.name,
            delimiter: l.delimiter,
            attributes: l.attributes,
        })
        .filter(|f| keep(f))
        .collect();
    Ok((FolderTree::from_list(&namespace, folders), listed))
}

/// The UIDs as the IMAP client takes them. The client keeps `u32`s; the UIDs it reports
/// (FETCH, SEARCH, APPENDUID, COPYUID) are `nz-number`s (RFC 3501 §9, RFC 4315 §3), so a 0,
/// which no server sends, is left out as a FETCH without a UID is.
fn numbers(uids: &[Uid]) -> Vec<u32> {
    uids.iter().map(|u| u.get()).collect()
}

/// A folder's UIDVALIDITY as the server gave it. RFC 3501 requires one in every SELECT
/// (§6.3.1) and in a STATUS that asks for it (§6.3.10), and never 0 (§2.3.1.1); the client
/// reports a missing one as 0. Without it no UID can be trusted, so the folder is not copied.
fn uid_validity(value: u32, raw: &str) -> Result<UidValidity> {
    UidValidity::new(value).ok_or_else(|| {
        SessionError::new(
            SessionErrorKind::Other,
            format!("The server gave no UIDVALIDITY for {raw}"),
        )
    })
}

/// A STATUS answer as the port has it; a UIDVALIDITY of 0 is the server's error.
fn folder_status(s: mailferry_imap::client::FolderStatus, raw: &str) -> Result<FolderStatus> {
    Ok(FolderStatus {
        messages: s.messages,
        uid_validity: uid_validity(s.uid_validity, raw)?,
        uid_next: s.uid_next,
        // A folder without mod-sequences says HIGHESTMODSEQ 0 (RFC 7162 §3.1.3): none.
        highest_modseq: s.highest_modseq.filter(|&m| m > 0),
    })
}

impl ImapSession {
    fn tree(&mut self, statuses: bool) -> Result<(FolderTree, ListedStatuses)> {
        let all = self.quirks.include_virtual_folders;
        let (mut tree, listed) =
            self.call(|c| read_tree_keeping(c, statuses, |f| all || !is_virtual_folder(f)))?;
        tree.reserve(self.quirks.reserved_folders);
        Ok((tree, listed))
    }
}

impl MailSession for ImapSession {
    fn folders(&mut self) -> Result<FolderTree> {
        Ok(self.tree(false)?.0)
    }

    fn folders_and_statuses(&mut self) -> Result<(FolderTree, HashMap<String, FolderStatus>)> {
        let (tree, listed) = self.tree(true)?;
        // One the port cannot take (no UIDVALIDITY) is left to STATUS, which says so.
        let statuses = listed
            .into_iter()
            .filter_map(|(raw, s)| folder_status(s, &raw).ok().map(|status| (raw, status)))
            .collect();
        Ok((tree, statuses))
    }

    fn create_folder(&mut self, raw: &str) -> Result<Created> {
        match self.call(|c| c.create(raw)) {
            Ok(()) => Ok(Created::New),
            Err(e) if already_exists(&e) => Ok(Created::Existed),
            Err(e) => Err(e),
        }
    }

    /// All the changes in one round trip (up to 64 at a time). A CREATE refused because the
    /// folder exists is done. Any other change the server refused is asked again on its own,
    /// in order, as [`MailSession::change_tree`]'s default would: a throttling answer is
    /// waited out first, as for any command; a change refused because one before it was
    /// throttled then goes through; a real refusal is the error, in the server's words (the
    /// changes after it went out too, and are harmless: the next pass makes the same ones).
    fn change_tree(&mut self, changes: &[TreeChange<'_>]) -> Result<()> {
        let commands: Vec<String> = changes
            .iter()
            .map(|change| match *change {
                TreeChange::Create(raw) => format!("CREATE {}", quote(raw)),
                TreeChange::Subscribe(raw, true) => format!("SUBSCRIBE {}", quote(raw)),
                TreeChange::Subscribe(raw, false) => format!("UNSUBSCRIBE {}", quote(raw)),
            })
            .collect();
        let outcomes = self.call(|c| c.run_each(&commands))?;
        for (change, outcome) in changes.iter().zip(outcomes) {
            let Err(e) = outcome else { continue };
            if let Some(hint) = throttling_of(&e) {
                self.wait_throttled(hint);
            } else {
                // Counted as a failed command, as any refusal is.
                let e = self.refused(e);
                if matches!(change, TreeChange::Create(_)) && already_exists(&e) {
                    continue;
                }
            }
            change.make(self)?;
        }
        Ok(())
    }

    fn set_subscribed(&mut self, raw: &str, subscribed: bool) -> Result<()> {
        self.call(|c| {
            if subscribed {
                c.subscribe(raw)
            } else {
                c.unsubscribe(raw)
            }
        })
    }

    fn status(&mut self, raw: &str) -> Result<FolderStatus> {
        let s = self.call(|c| c.status(raw))?;
        folder_status(s, raw)
    }

    fn status_many(&mut self, raws: &[&str]) -> Result<Vec<FolderStatus>> {
        let all = self.call(|c| c.status_many(raws))?;
        all.into_iter()
            .zip(raws)
            .map(|(s, raw)| folder_status(s, raw))
            .collect()
    }

    fn select(&mut self, raw: &str, write: bool) -> Result<Selected> {
        self.modseq = false;
        let s = self.call(|c| c.select(raw, !write))?;
        self.now_selected(raw, write, s)
    }

    fn send_select(&mut self, raw: &str, write: bool) -> Result<SelectTicket> {
        self.wait_for_server();
        Ok(SelectTicket {
            raw: raw.to_string(),
            write,
            handle: self.client.select_send(raw, !write),
            answered: None,
        })
    }

    fn flush(&mut self) -> Result<()> {
        self.client.flush().map_err(|e| self.lost(e))
    }

    fn finish_select(&mut self, ticket: SelectTicket) -> Result<Selected> {
        self.modseq = false;
        let (raw, write) = (ticket.raw.as_str(), ticket.write);
        match self.client.select_finish(&ticket.handle, raw, !write) {
            Ok(s) => {
                self.went_through();
                self.now_selected(raw, write, s)
            }
            // Not counted as a refusal here: that could replace the connection under the
            // FETCH sent behind it. The engine asks the SELECT again, which is counted.
            Err(e) => Err(self.lost(e)),
        }
    }

    /// The SELECT (EXAMINE) and the `UID FETCH 1:*` of the scan, queued together; they go
    /// out with the next read (with those of the tickets sent after this one, if any).
    fn send_select_and_scan(&mut self, raw: &str) -> Result<ScanTicket> {
        self.wait_for_server();
        let select = self.client.select_send(raw, true);
        let scan = self.client.uid_fetch_queue("1:*", SCAN_ITEMS);
        self.scans_unread += 1;
        Ok(ScanTicket {
            raw: raw.to_string(),
            handle: vec![select, scan],
        })
    }

    /// If the SELECT fails, the FETCH's answers are read and dropped (no folder, or the one
    /// before, was selected). With no other ticket unread, both are then asked again one
    /// after the other, as `select` and `scan` ask them (a throttling answer waited out; a
    /// refusal then in the server's words); with tickets unread, the refusal is the error,
    /// a throttling answer waited out and then transient (the next attempt asks again).
    fn finish_select_and_scan(
        &mut self,
        ticket: ScanTicket,
        each: &mut dyn FnMut(&Selected, ScannedMessage),
    ) -> Result<Selected> {
        self.scans_unread -= 1;
        let raw = ticket.raw.as_str();
        let [select, scan] = <[String; 2]>::try_from(ticket.handle).expect("a scan ticket");
        self.modseq = false;
        let answer = self.client.select_finish(&select, raw, true);
        let answer = answer.map(|s| {
            self.went_through();
            self.now_selected(raw, false, s)
        });
        let selected = match answer {
            Ok(Ok(selected)) => selected,
            Ok(Err(e)) => {
                self.drop_answers(&scan)?;
                return Err(e);
            }
            Err(e) if !is_refusal(&e) => return Err(self.lost(e)),
            Err(e) => {
                self.drop_answers(&scan)?;
                let throttled = throttling_of(&e);
                if let Some(hint) = throttled {
                    self.wait_throttled(hint);
                }
                if self.scans_unread > 0 {
                    let e = self.lost(e);
                    return Err(match throttled {
                        Some(_) => SessionError::new(SessionErrorKind::Transient, e.message),
                        None => e,
                    });
                }
                let s = self.select(raw, false)?;
                if s.exists > 0 {
                    self.scan(Uid::FIRST, &mut |m| each(&s, m))?;
                }
                return Ok(s);
            }
        };
        let scanned = self.client.uid_fetch_finish(&[scan], |f| {
            if let Some(m) = scanned_of(&f, Uid::FIRST) {
                each(&selected, m);
            }
            Ok(())
        });
        match scanned {
            Ok(()) => Ok(selected),
            // `UID FETCH 1:*` of an empty folder is nothing to most servers (`*` is then
            // UIDNEXT, RFC 9051 §9); one that refuses it has told nothing else.
            Err(e) if is_refusal(&e) && selected.exists == 0 => Ok(selected),
            Err(e) => Err(self.lost(e)),
        }
    }

    fn search_dates(&mut self, since: Option<&Date>, until: Option<&Date>) -> Result<Vec<Uid>> {
        let mut q = String::new();
        if let Some(s) = since {
            q.push_str(&format!("SINCE {} ", s.imap_format()));
        }
        if let Some(u) = until {
            q.push_str(&format!("BEFORE {} ", u.imap_format()));
        }
        q.push_str("ALL");
        let uids = self.call(|c| c.uid_search(&q))?;
        Ok(uids.into_iter().filter_map(Uid::new).collect())
    }

    fn scan(&mut self, from: Uid, each: &mut dyn FnMut(ScannedMessage)) -> Result<()> {
        self.client
            .uid_fetch(&format!("{from}:*"), SCAN_ITEMS, |f| {
                if let Some(m) = scanned_of(&f, from) {
                    each(m);
                }
                Ok(())
            })
            .map_err(|e| self.lost(e))
    }

    fn scan_changed(
        &mut self,
        from: Uid,
        modseq: u64,
        each: &mut dyn FnMut(ScannedMessage),
    ) -> Result<Option<UidRanges>> {
        if !self.modseq {
            // NOMODSEQ, or no CONDSTORE (a profile may forget it): every message.
            return self.scan(from, each).map(|()| None);
        }
        let mut any = false;
        let changed = self
            .client
            .uid_fetch_changed_since(&format!("{from}:*"), SCAN_ITEMS, modseq, |f| {
                any = true;
                if let Some(m) = scanned_of(&f, from) {
                    each(m);
                }
                Ok(())
            })
            .map_err(session_error);
        match changed {
            // A server that advertises CONDSTORE but refuses the modifier before answering
            // anything: every message, which is always right.
            Err(e) if e.is_refusal() && !any => self.scan(from, each).map(|()| None),
            Err(e) => Err(e),
            Ok(gone) => Ok(gone.map(|ranges| {
                ranges
                    .into_iter()
                    .filter_map(|(low, high)| Some((Uid::new(low)?, Uid::new(high)?)))
                    .collect()
            })),
        }
    }

    fn uids(&mut self) -> Result<Vec<Uid>> {
        let uids = self.call(|c| c.uid_search("ALL"))?;
        Ok(uids.into_iter().filter_map(Uid::new).collect())
    }

    fn present(&mut self, uids: &[Uid]) -> Result<Vec<Uid>> {
        let uids = numbers(uids);
        let found = self.call(|c| c.uid_search_in(&uids))?;
        Ok(found.into_iter().filter_map(Uid::new).collect())
    }

    fn fetch(
        &mut self,
        uids: &[Uid],
        each: &mut dyn FnMut(FetchedMessage) -> ControlFlow<()>,
    ) -> Result<()> {
        self.fetch_into(uids, &mut Vec::new(), each)
    }

    fn fetch_into(
        &mut self,
        uids: &[Uid],
        spare: &mut Vec<Vec<u8>>,
        each: &mut dyn FnMut(FetchedMessage) -> ControlFlow<()>,
    ) -> Result<()> {
        let ticket = self.send_fetch(uids)?;
        self.finish_fetch(ticket, spare, each)
    }

    fn send_fetch(&mut self, uids: &[Uid]) -> Result<FetchTicket> {
        let handle = self.client.uid_fetch_send(&numbers(uids), BODY_ITEMS);
        Ok(FetchTicket {
            uids: uids.to_vec(),
            handle,
        })
    }

    fn finish_fetch(
        &mut self,
        ticket: FetchTicket,
        spare: &mut Vec<Vec<u8>>,
        each: &mut dyn FnMut(FetchedMessage) -> ControlFlow<()>,
    ) -> Result<()> {
        const STOPPED: &str = "the target side stopped";
        self.client.lend_buffers(std::mem::take(spare));
        let fetched = self
            .client
            .uid_fetch_finish(&ticket.handle, |mut f: Fetch| {
                let Some(uid) = f.uid().and_then(Uid::new) else {
                    return Ok(());
                };
                let message = FetchedMessage {
                    uid,
                    flags: flags_of(&f),
                    internal_date: f.get("INTERNALDATE").and_then(|v| v.as_text()),
                    body: f
                        .take("BODY[]")
                        .and_then(|v| v.into_bytes())
                        .unwrap_or_default(),
                };
                match each(message) {
                    ControlFlow::Continue(()) => Ok(()),
                    ControlFlow::Break(()) => Err(ImapError::Aborted(STOPPED.into())),
                }
            });
        *spare = self.client.unused_buffers();
        match fetched {
            Err(ImapError::Aborted(m)) if m == STOPPED => {
                Err(SessionError::new(SessionErrorKind::Aborted, STOPPED))
            }
            other => other.map_err(|e| self.lost(e)),
        }
    }

    fn set_flags(&mut self, uids: &[Uid], flags: &Flags) -> Result<()> {
        let mut flags = flags.to_vec();
        if !self.quirks.keywords {
            flags.retain(|f| is_kept_without_keywords(f));
        }
        let uids = numbers(uids);
        self.call(|c| c.uid_store_flags(&uids, &flags))
    }

    fn move_to(&mut self, uids: &[Uid], to: &str) -> Result<Vec<(Uid, Uid)>> {
        let pairs = self
            .client
            .uid_move(&numbers(uids), to)
            .map_err(|e| self.lost(e))?;
        Ok(pairs
            .into_iter()
            .filter_map(|(old, new)| Some((Uid::new(old)?, Uid::new(new)?)))
            .collect())
    }

    fn remove(&mut self, uids: &[Uid]) -> Result<()> {
        let uids = numbers(uids);
        if self.call(|c| c.uid_expunge(&uids))? {
            Ok(())
        } else {
            Err(SessionError::new(
                SessionErrorKind::Unsupported,
                "the server lacks UIDPLUS (UID EXPUNGE): messages cannot be removed one by one",
            ))
        }
    }

    fn send_appends(&mut self, folder: &str, messages: &[Outgoing<'_>]) -> Result<AppendTicket> {
        let any_too_big = messages.iter().any(|m| self.too_big(m));
        if self.caps.multiappend && messages.len() > 1 && !any_too_big {
            let prepared: Vec<Prepared<'_>> = messages.iter().map(|m| self.prepare(m)).collect();
            let reqs: Vec<AppendRequest<'_>> = messages
                .iter()
                .zip(&prepared)
                .map(|(m, p)| request(folder, &p.flags, &p.body, m))
                .collect();
            let tag = self
                .client
                .multiappend_send(folder, &reqs)
                .map_err(|e| self.lost(e))?;
            return Ok(AppendTicket {
                folder: folder.to_string(),
                count: messages.len(),
                handle: vec![tag],
                atomic: true,
            });
        }
        Ok(AppendTicket {
            folder: folder.to_string(),
            count: messages.len(),
            handle: self.send_each(folder, messages)?,
            atomic: false,
        })
    }

    fn finish_appends(
        &mut self,
        ticket: AppendTicket,
        messages: &[Outgoing<'_>],
    ) -> Result<Vec<AppendOutcome>> {
        let outcomes = self.answers(&ticket, messages)?;
        self.after_appends(&ticket.folder, messages, outcomes)
    }

    fn logout(self: Box<Self>) {
        self.client.logout()
    }
}

impl ImapSession {
    fn answers(
        &mut self,
        ticket: &AppendTicket,
        messages: &[Outgoing<'_>],
    ) -> Result<Vec<AppendOutcome>> {
        if !ticket.atomic {
            return Ok(self.finish_each(&ticket.handle));
        }
        let Some(tag) = ticket.handle.first() else {
            return Ok(Vec::new());
        };
        match self.client.multiappend_finish(tag, ticket.count) {
            Ok(uids) => Ok((0..ticket.count)
                .map(|i| AppendOutcome::Stored(uids.as_ref().and_then(|u| Uid::new(u[i]))))
                .collect()),
            // MULTIAPPEND stores all or nothing (RFC 3502): one refused message refused the
            // group, so send them one by one to find it and keep the others. Their intents
            // are still pending, so a crash meanwhile is reconciled as any other.
            Err(e @ (ImapError::No { .. } | ImapError::Bad { .. })) if !e.is_transient() => {
                let tags = self.send_each(&ticket.folder, messages)?;
                Ok(self.finish_each(&tags))
            }
            Err(e) => Err(self.lost(e)),
        }
    }
}

/// [`throttling_of`] for a refusal already in words (`[THROTTLED] …`, a backoff hint).
fn throttled_words(text: &str) -> Option<Option<Duration>> {
    let hint = suggested_backoff(text);
    let upper = text.to_ascii_uppercase();
    let coded = ["[THROTTLED", "[LIMIT", "[UNAVAILABLE"]
        .iter()
        .any(|c| upper.contains(c));
    (hint.is_some() || coded).then_some(hint)
}
