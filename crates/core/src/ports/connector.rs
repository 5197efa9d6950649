//! The connector port: one server of the job, ready to open a session for a mailbox with the
//! right credentials: passwords (admin, master user, per mailbox) or OAuth2 tokens, behind
//! the same trait.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::session::{MailSession, SessionError};

/// Why a session could not be opened: the settings, reaching the server, or logging in.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Connect(SessionError),
    #[error("{0}")]
    Login(SessionError),
}

impl ConnectError {
    pub fn is_transient(&self) -> bool {
        match self {
            ConnectError::Config(_) => false,
            ConnectError::Connect(e) | ConnectError::Login(e) => e.is_transient(),
        }
    }
}

/// Passwords of one entry, when `auth = "per-mailbox"` (read from the CSV, never stored).
#[derive(Debug, Clone, Default)]
pub struct EntryPasswords {
    pub source: Option<String>,
    pub target: Option<String>,
}

/// What reaching a server without logging in found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// For the admin: `capabilities: IMAP4rev1 …`, `found`.
    pub detail: String,
    /// Whether a login can be tried now (a Maildir target that does not exist yet is made by
    /// the first pass, not by `check`).
    pub can_log_in: bool,
}

pub trait Connector: Send + Sync {
    /// What this connects to, for `check`: `connect mail.example:993 (Tls)`, `maildir /srv/m`.
    fn describe(&self) -> String;
    /// Reaches the server without logging in, and changes nothing: what it offers (its
    /// capabilities), or whether the folder exists.
    fn probe(&self) -> Result<Probe, SessionError>;
    /// Opens a session for one mailbox: `own_password` is the mailbox's own password for
    /// per-mailbox logins.
    fn open(
        &self,
        login: &str,
        own_password: Option<&str>,
    ) -> Result<Box<dyn MailSession>, ConnectError>;
    /// The cap on connections to this server, shared by every mailbox of the run.
    fn limit(&self) -> &ConnectionLimit;
    /// The server as every process of a job names it (`host:port`, the host lower-cased), for
    /// the caps across processes: the leases of passes record it. `None` when there is no
    /// server to cap (a Maildir tree).
    fn server(&self) -> Option<String> {
        None
    }
    /// `max_connections_per_mailbox`: the most connections to one mailbox of this server, by
    /// all the passes of the job together. `None`: not capped beyond `max_connections`.
    fn max_connections_per_mailbox(&self) -> Option<usize> {
        None
    }
    /// For `check`: gets what a login of `login` needs from elsewhere (an OAuth2 token from
    /// the identity provider) without logging in, and says what it got or why not, with the
    /// likely cause. `None` when logins need nothing from elsewhere (passwords).
    fn check_credentials(&self, _login: &str) -> Option<Result<String, String>> {
        None
    }
    /// The server profile in force (`exchange-online`, …), once known: named in the job file
    /// or recognised on the first connection. `None` for stores without profiles.
    fn profile(&self) -> Option<String> {
        None
    }
    /// (folder, count) of the custom keywords this target could not store and dropped from
    /// `login`'s messages so far (a profile without keywords): reported, never a failure.
    fn dropped_keywords(&self, _login: &str) -> Vec<(String, u64)> {
        Vec::new()
    }
    /// How long `login`'s sessions have waited on this server's throttling so far (adaptive
    /// throttling).
    fn throttled_for(&self, _login: &str) -> Duration {
        Duration::ZERO
    }
}

/// Caps the connections to one server, shared by every mailbox of the run.
pub struct ConnectionLimit {
    max: AtomicUsize,
    used: Mutex<usize>,
    freed: Condvar,
    /// Adaptive throttling: what the server's throttling replies have done to the cap.
    throttle: Mutex<Throttle>,
}

/// The first pause after a throttling reply without a hint; doubled on each further one.
pub const FIRST_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause between commands a throttled server gets.
pub const LONGEST_PAUSE: Duration = Duration::from_secs(60);
/// How long a server must answer without throttling before one more connection (and a
/// shorter pause) is allowed again.
pub const RECOVERY: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Throttle {
    /// The cap before any throttling (the job file's or the profile's).
    ceiling: usize,
    /// The pause between commands while throttled; zero when not.
    pause: Duration,
    /// No command to this server before this instant.
    until: Option<Instant>,
    /// The last throttling reply or counted dropped connection, or the last step back up.
    last: Option<Instant>,
    /// The last throttling reply itself (a dropped connection soon after it is its echo).
    last_reply: Option<Instant>,
    /// The last connection the server dropped, counted or not.
    last_drop: Option<Instant>,
}

/// What a dropped connection did to a server's cap ([`ConnectionLimit::dropped`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Within [`RECOVERY`] of a throttling reply: that reply already slowed the server down
    /// (Exchange Online hangs up after its backoff hints).
    AfterThrottling,
    /// The first in [`RECOVERY`]: noted, nothing changes (a network blip, a restart).
    Noted,
    /// The second (or later) within [`RECOVERY`] of the one before: the cap went from the
    /// first number to the second, and the server's connections pause [`FIRST_PAUSE`].
    Lowered(usize, usize),
}

/// One connection's place under a [`ConnectionLimit`], given back when dropped.
pub struct Permit<'a>(&'a ConnectionLimit);

impl ConnectionLimit {
    pub fn new(max: usize) -> ConnectionLimit {
        ConnectionLimit {
            max: AtomicUsize::new(max.max(1)),
            used: Mutex::new(0),
            freed: Condvar::new(),
            throttle: Mutex::new(Throttle {
                ceiling: max.max(1),
                pause: Duration::ZERO,
                until: None,
                last: None,
                last_reply: None,
                last_drop: None,
            }),
        }
    }

    pub fn acquire(&self) -> Permit<'_> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used >= self.max() {
            used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += 1;
        Permit(self)
    }

    /// The cap now.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }

    /// Lowers the cap to `max` (at least 1) when it is higher: connections already open stay
    /// until they end, new ones wait. A server profile's default, or a throttled server.
    pub fn lower_to(&self, max: usize) {
        self.max.fetch_min(max.max(1), Ordering::SeqCst);
        let mut t = self.throttle.lock().unwrap_or_else(|e| e.into_inner());
        t.ceiling = t.ceiling.min(max.max(1));
    }

    /// The server throttled a command (`[THROTTLED]`, `[LIMIT]`, `[UNAVAILABLE]`, a backoff
    /// hint): halves the cap (down to 1) and makes every connection to this server wait
    /// `hint`, or a pause that doubles with each throttling reply (from [`FIRST_PAUSE`] to
    /// [`LONGEST_PAUSE`]). Returns the wait.
    pub fn throttled(&self, hint: Option<Duration>, now: Instant) -> Duration {
        let mut t = self.throttle.lock().unwrap_or_else(|e| e.into_inner());
        t.pause = if t.pause.is_zero() {
            FIRST_PAUSE
        } else {
            (t.pause * 2).min(LONGEST_PAUSE)
        };
        let wait = hint.unwrap_or(t.pause);
        t.until = Some(now + wait);
        t.last = Some(now);
        t.last_reply = Some(now);
        let halved = (self.max() / 2).max(1);
        self.max.store(halved, Ordering::SeqCst);
        wait
    }

    /// The server dropped a connection (closed it, reset it or said `BYE` while mailferry
    /// waited on it; never mailferry's own timeout or LOGOUT). A server that keeps dropping
    /// connections is shedding load, but one drop alone says little, so: a drop within
    /// [`RECOVERY`] of a throttling reply is that reply's ([`Dropped::AfterThrottling`]);
    /// otherwise the first in [`RECOVERY`] is only noted, and each further one within
    /// [`RECOVERY`] of the one before lowers the cap by one (down to 1; connections already
    /// open finish, new ones wait) and pauses every connection to the server for
    /// [`FIRST_PAUSE`]. The cap comes back as after throttling ([`ConnectionLimit::recovered`]).
    pub fn dropped(&self, now: Instant) -> Dropped {
        let mut t = self.throttle.lock().unwrap_or_else(|e| e.into_inner());
        let recent =
            |at: Option<Instant>| at.is_some_and(|at| now.saturating_duration_since(at) < RECOVERY);
        if recent(t.last_reply) {
            return Dropped::AfterThrottling;
        }
        let repeated = recent(t.last_drop);
        t.last_drop = Some(now);
        if !repeated {
            return Dropped::Noted;
        }
        let was = self.max();
        let lowered = was.saturating_sub(1).max(1);
        self.max.store(lowered, Ordering::SeqCst);
        t.last = Some(now);
        let until = now + FIRST_PAUSE;
        t.until = Some(t.until.map_or(until, |u| u.max(until)));
        Dropped::Lowered(was, lowered)
    }

    /// A command went through: once the server has not throttled for [`RECOVERY`], one more
    /// connection is allowed (up to the cap before throttling) and the pause halves.
    pub fn recovered(&self, now: Instant) {
        let mut t = self.throttle.lock().unwrap_or_else(|e| e.into_inner());
        let Some(last) = t.last else { return };
        if now.saturating_duration_since(last) < RECOVERY {
            return;
        }
        t.pause /= 2;
        if t.pause < FIRST_PAUSE {
            t.pause = Duration::ZERO;
        }
        let up = (self.max() + 1).min(t.ceiling);
        t.last = (up < t.ceiling || !t.pause.is_zero()).then_some(now);
        drop(t);
        self.set_max(up);
    }

    /// How long a connection must still wait before its next command to this server.
    pub fn pause(&self, now: Instant) -> Duration {
        let t = self.throttle.lock().unwrap_or_else(|e| e.into_inner());
        t.until
            .map_or(Duration::ZERO, |u| u.saturating_duration_since(now))
    }

    /// Sets the cap (at least 1), waking whoever waits when it rises.
    pub fn set_max(&self, max: usize) {
        let _used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        self.max.store(max.max(1), Ordering::SeqCst);
        self.freed.notify_all();
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut used = self.0.used.lock().unwrap_or_else(|e| e.into_inner());
        *used -= 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_halves_the_cap_and_recovery_brings_it_back_step_by_step() {
        let limit = ConnectionLimit::new(8);
        let t0 = Instant::now();
        assert_eq!(limit.throttled(None, t0), FIRST_PAUSE);
        assert_eq!(limit.max(), 4);
        assert_eq!(limit.pause(t0), FIRST_PAUSE);
        assert_eq!(limit.throttled(None, t0), FIRST_PAUSE * 2);
        assert_eq!(limit.max(), 2);
        let hint = Duration::from_millis(299_961);
        assert_eq!(limit.throttled(Some(hint), t0), hint);
        assert_eq!(limit.max(), 1);
        // Too soon: nothing changes.
        limit.recovered(t0 + RECOVERY / 2);
        assert_eq!(limit.max(), 1);
        // Then one step per quiet RECOVERY, up to the cap before throttling and no further.
        let mut now = t0;
        for expected in 2..=8 {
            now += RECOVERY;
            limit.recovered(now);
            assert_eq!(limit.max(), expected);
        }
        now += RECOVERY * 10;
        limit.recovered(now);
        assert_eq!(limit.max(), 8);
        assert_eq!(limit.pause(now), Duration::ZERO);
    }

    #[test]
    fn repeated_dropped_connections_lower_the_cap_one_at_a_time_and_it_recovers() {
        let limit = ConnectionLimit::new(4);
        let t0 = Instant::now();
        // One drop alone changes nothing.
        assert_eq!(limit.dropped(t0), Dropped::Noted);
        assert_eq!(limit.max(), 4);
        assert_eq!(limit.pause(t0), Duration::ZERO);
        // Another a while later (more than RECOVERY): still a lone one.
        let t1 = t0 + RECOVERY + Duration::from_secs(1);
        assert_eq!(limit.dropped(t1), Dropped::Noted);
        assert_eq!(limit.max(), 4);
        // Then one within RECOVERY of it: one connection less, and a short pause.
        let t2 = t1 + Duration::from_secs(5);
        assert_eq!(limit.dropped(t2), Dropped::Lowered(4, 3));
        assert_eq!(limit.pause(t2), FIRST_PAUSE);
        let t3 = t2 + Duration::from_secs(5);
        assert_eq!(limit.dropped(t3), Dropped::Lowered(3, 2));
        assert_eq!(limit.dropped(t3), Dropped::Lowered(2, 1));
        assert_eq!(limit.dropped(t3), Dropped::Lowered(1, 1));
        assert_eq!(limit.max(), 1);
        // A quiet RECOVERY after the last: one step back up each, to the cap before.
        let mut now = t3;
        for expected in 2..=4 {
            now += RECOVERY;
            limit.recovered(now);
            assert_eq!(limit.max(), expected);
        }
        now += RECOVERY * 3;
        limit.recovered(now);
        assert_eq!(limit.max(), 4);
    }

    #[test]
    fn a_dropped_connection_after_a_throttling_reply_is_that_replys() {
        let limit = ConnectionLimit::new(8);
        let t0 = Instant::now();
        limit.throttled(Some(Duration::from_millis(1500)), t0);
        assert_eq!(limit.max(), 4);
        // Exchange Online's disconnect after its backoff hint: already answered.
        let soon = t0 + Duration::from_secs(2);
        assert_eq!(limit.dropped(soon), Dropped::AfterThrottling);
        assert_eq!(limit.dropped(soon), Dropped::AfterThrottling);
        assert_eq!(limit.max(), 4);
        // Long after it, drops count again (the first only noted).
        let later = t0 + RECOVERY * 2;
        assert_eq!(limit.dropped(later), Dropped::Noted);
        assert_eq!(limit.dropped(later), Dropped::Lowered(4, 3));
    }

    #[test]
    fn a_profile_default_lowers_the_ceiling_too() {
        let limit = ConnectionLimit::new(10);
        limit.lower_to(4);
        let t0 = Instant::now();
        limit.throttled(None, t0);
        assert_eq!(limit.max(), 2);
        limit.recovered(t0 + RECOVERY);
        limit.recovered(t0 + RECOVERY * 2);
        limit.recovered(t0 + RECOVERY * 3);
        assert_eq!(limit.max(), 4);
    }
}
