//! The mail session port on an IMAP server, and the connector that logs in for a mailbox.
//!
//! This is where the port's typed operations become IMAP: UID sets (chunked by
//! `mailferry_imap`), fetch items, flag lists, and the choice between one MULTIAPPEND and one
//! APPEND per message. The session wraps the client with the capabilities it learned at login,
//! as Delta Chat's `Session` does.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use mailferry_core::folders::{FolderTree, Namespace, ServerFolder};
use mailferry_core::job::{AdminLogin, Auth, Date, ImapSettings, Security};
use mailferry_core::model::{Flags, Side, Uid, UidValidity};
use mailferry_core::ports::{
    AppendOutcome, AppendTicket, ConnectError, ConnectionLimit, Connector, Created, FetchedMessage,
    FolderStatus, MailSession, Outgoing, Probe, ScannedMessage, Selected, SessionError,
    SessionErrorKind,
};
use mailferry_imap::{
    AppendRequest, Client, Endpoint, Error as ImapError, Fetch, Login, Security as ImapSecurity,
    TypedCode,
};

use super::session_error;
use crate::credentials::Access;
use crate::oauth2::{TokenError, TokenProvider, entra_hint, login_hint};

/// How long a connect, a read or a write may wait on a server before the connection is given
/// up as broken (and the pass retried): a server that stops answering without closing costs
/// one timeout, not a hung pass. Dovecot, Exchange and Gmail answer every command mailferry
/// sends well within it, the largest FETCH and MULTIAPPEND included, since they stream.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Environment variable: a whole number of seconds to use instead of [`TIMEOUT`] (for a slow
/// server, or for tests that stall a connection on purpose).
pub const TIMEOUT_ENV: &str = "MAILFERRY_IO_TIMEOUT_SECONDS";

/// [`TIMEOUT`], or what [`TIMEOUT_ENV`] says; an error names the variable and its value.
pub fn io_timeout() -> std::result::Result<Duration, String> {
    let Some(value) = std::env::var_os(TIMEOUT_ENV) else {
        return Ok(TIMEOUT);
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
    endpoint: Endpoint,
    access: Access,
    limit: ConnectionLimit,
}

impl ImapConnector {
    /// The connector for one side's `[source]` / `[target]` IMAP settings; an error names the
    /// setting whose secret could not be read.
    pub fn new(side: Side, imap: &ImapSettings) -> std::result::Result<ImapConnector, String> {
        let access = match &imap.auth {
            Auth::PerMailbox => Access::PerMailbox,
            Auth::OAuth2(config) => Access::OAuth2(Arc::new(
                TokenProvider::new(config, io_timeout()?)
                    .map_err(|e| format!("{side}.oauth2.{e}"))?,
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
                timeout: io_timeout()?,
            },
            access,
            limit: ConnectionLimit::new(imap.max_connections),
        })
    }
}

impl Connector for ImapConnector {
    fn describe(&self) -> String {
        let ep = &self.endpoint;
        format!("connect {}:{} ({:?})", ep.host, ep.port, ep.security)
    }

    fn probe(&self) -> Result<Probe> {
        let c = Client::connect(&self.endpoint).map_err(session_error)?;
        let caps: Vec<&str> = c.capabilities().collect();
        let detail = format!("capabilities: {}", caps.join(" "));
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
        Ok(Box::new(ImapSession::new(c)))
    }

    fn limit(&self) -> &ConnectionLimit {
        &self.limit
    }

    fn check_credentials(&self, login: &str) -> Option<std::result::Result<String, String>> {
        let Access::OAuth2(provider) = &self.access else {
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

impl ImapConnector {
    /// An OAuth2 login: the shared token (fetched when none is fresh), and when the server
    /// refuses it (`NO [AUTHENTICATIONFAILED]`, or Exchange Online's bare `NO`), once more
    /// with a token fetched anew (the server may have seen the old one expire). A second
    /// refusal fails the mailbox with the server's words and what the identity provider
    /// issued.
    fn open_oauth2(
        &self,
        provider: &TokenProvider,
        login: &str,
    ) -> std::result::Result<Box<dyn MailSession>, ConnectError> {
        let token = provider.token(login, None).map_err(|e| token_failure(&e))?;
        let mut c =
            Client::connect(&self.endpoint).map_err(|e| ConnectError::Connect(session_error(e)))?;
        let sasl = |token: &crate::oauth2::Token| Login::OAuth2 {
            user: login.to_string(),
            token: token.secret().to_string(),
            mechanism: provider.mechanism(),
        };
        let first = match c.login(&sasl(&token)) {
            Ok(()) => return Ok(Box::new(ImapSession::new(c))),
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
            Ok(()) => Ok(Box::new(ImapSession::new(c))),
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

/// One logged-in IMAP mailbox.
pub struct ImapSession {
    client: Client,
    caps: Capabilities,
}

impl ImapSession {
    pub fn new(client: Client) -> ImapSession {
        let caps = Capabilities {
            multiappend: client.has("MULTIAPPEND") && client.has("LITERAL+"),
        };
        ImapSession { client, caps }
    }

    fn send_each(&mut self, folder: &str, messages: &[Outgoing<'_>]) -> Result<Vec<String>> {
        messages
            .iter()
            .map(|m| {
                let flags = m.flags.to_vec();
                self.client
                    .append_send(&request(folder, &flags, m))
                    .map_err(session_error)
            })
            .collect()
    }

    /// Reads the answers of one APPEND each, in order; stops at the first broken one.
    fn finish_each(&mut self, tags: &[String]) -> Vec<AppendOutcome> {
        let mut out = Vec::with_capacity(tags.len());
        for tag in tags {
            match self.client.append_finish(tag) {
                Ok(uid) => out.push(AppendOutcome::Stored(uid.and_then(|(_, u)| Uid::new(u)))),
                Err(e @ (ImapError::No { .. } | ImapError::Bad { .. })) if !e.is_transient() => {
                    out.push(AppendOutcome::Refused(e.to_string()));
                }
                Err(e) => {
                    out.push(AppendOutcome::Lost(session_error(e)));
                    break;
                }
            }
        }
        out
    }
}

fn request<'a>(folder: &'a str, flags: &'a [String], m: &Outgoing<'a>) -> AppendRequest<'a> {
    AppendRequest {
        mailbox: folder,
        flags,
        date: m.internal_date,
        message: m.body,
    }
}

fn flags_of(f: &Fetch) -> Flags {
    Flags::from_server(f.flags().unwrap_or_default())
}

/// Reads a server's folder tree: namespace, LIST and LSUB.
pub fn read_tree(c: &mut Client) -> std::result::Result<FolderTree, ImapError> {
    let list = c.list()?;
    let ns = c.namespace()?;
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
    let subscribed: HashSet<String> = c.lsub()?.into_iter().map(|l| l.name).collect();
    let folders = list
        .into_iter()
        .map(|l| ServerFolder {
            subscribed: subscribed.contains(&l.name),
            raw_name: l.name,
            delimiter: l.delimiter,
            attributes: l.attributes,
        })
        .collect();
    Ok(FolderTree::from_list(&namespace, folders))
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

impl MailSession for ImapSession {
    fn folders(&mut self) -> Result<FolderTree> {
        read_tree(&mut self.client).map_err(session_error)
    }

    fn create_folder(&mut self, raw: &str) -> Result<Created> {
        match self.client.create(raw) {
            Ok(()) => Ok(Created::New),
            // RFC 5530: made meanwhile by another pass, or by the server's autocreate.
            Err(e) if matches!(e.code_typed(), Some(TypedCode::AlreadyExists)) => {
                Ok(Created::Existed)
            }
            Err(e) => Err(session_error(e)),
        }
    }

    fn set_subscribed(&mut self, raw: &str, subscribed: bool) -> Result<()> {
        if subscribed {
            self.client.subscribe(raw)
        } else {
            self.client.unsubscribe(raw)
        }
        .map_err(session_error)
    }

    fn status(&mut self, raw: &str) -> Result<FolderStatus> {
        let s = self.client.status(raw).map_err(session_error)?;
        Ok(FolderStatus {
            messages: s.messages,
            uid_validity: uid_validity(s.uid_validity, raw)?,
            uid_next: s.uid_next,
            highest_modseq: s.highest_modseq,
        })
    }

    fn select(&mut self, raw: &str, write: bool) -> Result<Selected> {
        let s = self.client.select(raw, !write).map_err(session_error)?;
        Ok(Selected {
            exists: s.exists,
            uid_validity: uid_validity(s.uid_validity, raw)?,
        })
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
        let uids = self.client.uid_search(&q).map_err(session_error)?;
        Ok(uids.into_iter().filter_map(Uid::new).collect())
    }

    fn scan(&mut self, from: Uid, each: &mut dyn FnMut(ScannedMessage)) -> Result<()> {
        // `n:*` always includes the highest UID, even below n (RFC 3501 §6.4.8): filter.
        self.client
            .uid_fetch(&format!("{from}:*"), "UID FLAGS RFC822.SIZE", |f| {
                if let Some(uid) = f.uid().and_then(Uid::new)
                    && uid >= from
                {
                    each(ScannedMessage {
                        uid,
                        flags: flags_of(&f),
                        size: f.get("RFC822.SIZE").and_then(|v| v.as_u64()).unwrap_or(0),
                    });
                }
                Ok(())
            })
            .map_err(session_error)
    }

    fn fetch(
        &mut self,
        uids: &[Uid],
        each: &mut dyn FnMut(FetchedMessage) -> ControlFlow<()>,
    ) -> Result<()> {
        const STOPPED: &str = "the target side stopped";
        let fetched = self.client.uid_fetch_uids(
            &numbers(uids),
            "UID FLAGS INTERNALDATE BODY.PEEK[]",
            |mut f: Fetch| {
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
            },
        );
        match fetched {
            Err(ImapError::Aborted(m)) if m == STOPPED => {
                Err(SessionError::new(SessionErrorKind::Aborted, STOPPED))
            }
            other => other.map_err(session_error),
        }
    }

    fn set_flags(&mut self, uids: &[Uid], flags: &Flags) -> Result<()> {
        self.client
            .uid_store_flags(&numbers(uids), &flags.to_vec())
            .map_err(session_error)
    }

    fn move_to(&mut self, uids: &[Uid], to: &str) -> Result<Vec<(Uid, Uid)>> {
        let pairs = self
            .client
            .uid_move(&numbers(uids), to)
            .map_err(session_error)?;
        Ok(pairs
            .into_iter()
            .filter_map(|(old, new)| Some((Uid::new(old)?, Uid::new(new)?)))
            .collect())
    }

    fn send_appends(&mut self, folder: &str, messages: &[Outgoing<'_>]) -> Result<AppendTicket> {
        if self.caps.multiappend && messages.len() > 1 {
            let flags: Vec<Vec<String>> = messages.iter().map(|m| m.flags.to_vec()).collect();
            let reqs: Vec<AppendRequest<'_>> = messages
                .iter()
                .zip(&flags)
                .map(|(m, f)| request(folder, f, m))
                .collect();
            let tag = self
                .client
                .multiappend_send(folder, &reqs)
                .map_err(session_error)?;
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
            Err(e) => Err(session_error(e)),
        }
    }

    fn logout(self: Box<Self>) {
        self.client.logout()
    }
}
