//! Reaching the server: the job's `state = "postgres://USER@HOST:PORT/DB?sslmode=…"` URL,
//! the password (never in the job file: `MAILFERRY_STATE_PASSWORD`, else the standard
//! `PGPASSFILE` / `~/.pgpass`), and TLS.
//!
//! TLS is rustls with mailferry's one certificate policy (`mailferry_imap::tls`): the
//! server's certificate and name are verified against the system's trust anchors plus
//! `sslrootcert`, for every `sslmode` that asks for TLS (`require` and `verify-ca` included,
//! which libpq verifies less). `sslmode=disable` is an explicit choice in the job file; the
//! modes that fall back to an unencrypted connection without saying so (`prefer`, `allow`)
//! are refused. With no `sslmode`, TLS with verification is the default.
//!
//! A password appears in no error message: errors name the server by [`PostgresUrl`]'s
//! display form, which has none, and a URL that carries one is refused without repeating it.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use mailferry_core::ports::store::{Result, StoreError, StoreErrorKind};

/// Where the password comes from first.
pub const PASSWORD_ENV: &str = "MAILFERRY_STATE_PASSWORD";
/// PostgreSQL's standard password file variable (libpq's `PGPASSFILE`).
const PGPASSFILE_ENV: &str = "PGPASSFILE";
/// PostgreSQL's default port.
const DEFAULT_PORT: u16 = 5432;

/// A parsed state URL: everything needed to connect except the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresUrl {
    pub user: String,
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub tls: Tls,
}

/// Transport security of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    /// `sslmode=disable`: no TLS.
    Off,
    /// TLS, the certificate verified against the system's anchors plus `root_cert`.
    Verified { root_cert: Option<PathBuf> },
}

/// A password, kept out of `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(p: impl Into<String>) -> Password {
        Password(p.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(…)")
    }
}

fn url_error(message: String) -> StoreError {
    StoreError::new(StoreErrorKind::Other, message)
}

impl PostgresUrl {
    /// Parses a state URL; a relative `sslrootcert` is taken relative to `base_dir` (the job
    /// file's folder).
    pub fn parse(raw: &str, base_dir: &Path) -> Result<PostgresUrl> {
        let rest = raw
            .strip_prefix("postgres://")
            .or_else(|| raw.strip_prefix("postgresql://"))
            .ok_or_else(|| {
                url_error("The state URL must start with postgres:// or postgresql://".into())
            })?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let Some((userinfo, hostport)) = authority.rsplit_once('@') else {
            return Err(url_error(
                "The state URL names no user: write postgres://USER@HOST:PORT/DATABASE".into(),
            ));
        };
        if userinfo.contains(':') {
            // Not repeated in the message: what follows the ':' is a password.
            return Err(url_error(format!(
                "The state URL must not carry a password (it would be in the job file): \
                 write postgres://USER@HOST… and give the password in {PASSWORD_ENV} or \
                 ~/.pgpass"
            )));
        }
        let user = percent_decode(userinfo, "user")?;
        let (host, port) = split_host_port(hostport)?;
        let dbname = percent_decode(path, "database")?;
        if user.is_empty() || host.is_empty() || dbname.is_empty() {
            return Err(url_error(
                "The state URL needs a user, a host and a database: \
                 postgres://USER@HOST:PORT/DATABASE"
                    .into(),
            ));
        }
        let mut sslmode = None;
        let mut root_cert = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value, key)?;
            match key {
                "sslmode" => sslmode = Some(value),
                "sslrootcert" => root_cert = Some(base_dir.join(value)),
                _ => {
                    return Err(url_error(format!(
                        "Unknown parameter {key:?} in the state URL (known: sslmode, \
                         sslrootcert)"
                    )));
                }
            }
        }
        let tls = match sslmode.as_deref() {
            Some("disable") if root_cert.is_some() => {
                return Err(url_error(
                    "sslrootcert is given but sslmode=disable turns TLS off: drop one of them"
                        .into(),
                ));
            }
            Some("disable") => Tls::Off,
            None | Some("require" | "verify-ca" | "verify-full") => Tls::Verified { root_cert },
            Some(mode @ ("prefer" | "allow")) => {
                return Err(url_error(format!(
                    "sslmode={mode} would fall back to an unencrypted connection without \
                     saying so: use sslmode=verify-full (the default), or sslmode=disable on \
                     a network you trust"
                )));
            }
            Some(other) => {
                return Err(url_error(format!(
                    "Unknown sslmode {other:?} in the state URL (disable, require, verify-ca, \
                     verify-full)"
                )));
            }
        };
        Ok(PostgresUrl {
            user,
            host,
            port,
            dbname,
            tls,
        })
    }
}

/// `postgres://USER@HOST:PORT/DATABASE`: how errors name the server (never with a password).
impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(
            f,
            "postgres://{}@{host}:{}/{}",
            self.user, self.port, self.dbname
        )
    }
}

fn split_host_port(hostport: &str) -> Result<(String, u16)> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| {
            url_error("The state URL has an IPv6 address without its closing ']'".into())
        })?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port =
        match port {
            None => DEFAULT_PORT,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                url_error(format!("The state URL's port {p:?} is not a port number"))
            })?,
        };
    Ok((host.to_string(), port))
}

/// RFC 3986 percent-decoding of one URL component.
fn percent_decode(s: &str, what: &str) -> Result<String> {
    let bad = || url_error(format!("The state URL's {what} has a bad %-escape"));
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| url_error(format!("The state URL's {what} is not UTF-8")))
}

/// The password for `url`: `MAILFERRY_STATE_PASSWORD` if set, else the first matching line
/// of `PGPASSFILE` (or `~/.pgpass`), else none (the server may not ask for one).
pub fn state_password(url: &PostgresUrl) -> Result<Option<Password>> {
    let pgpass = std::env::var_os(PGPASSFILE_ENV)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")));
    password_from(std::env::var_os(PASSWORD_ENV), pgpass.as_deref(), url)
}

/// [`state_password`] with its inputs given: the variable's value and the password file.
pub fn password_from(
    env: Option<OsString>,
    pgpass: Option<&Path>,
    url: &PostgresUrl,
) -> Result<Option<Password>> {
    if let Some(value) = env {
        let value = value
            .into_string()
            .map_err(|_| url_error(format!("{PASSWORD_ENV} is not UTF-8 text")))?;
        return Ok(Some(Password(value)));
    }
    let Some(path) = pgpass else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(url_error(format!(
                "Cannot read the password file {}: {e}",
                path.display()
            )));
        }
    };
    check_private(path)?;
    Ok(pgpass_lookup(&text, url).map(Password))
}

/// libpq ignores a password file others may read; a silent failure to log in would follow,
/// so this says why instead.
fn check_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode())
        .unwrap_or(0);
    if mode & 0o077 != 0 {
        return Err(url_error(format!(
            "The password file {} may be read by others (mode {:o}): chmod 600 it",
            path.display(),
            mode & 0o777
        )));
    }
    Ok(())
}

/// The password of the first line of a `.pgpass` file matching `url`
/// (`hostname:port:database:username:password`, `*` matching anything, `\:` and `\\`
/// escaped, `#` lines comments), as libpq reads it.
pub fn pgpass_lookup(text: &str, url: &PostgresUrl) -> Option<String> {
    let port = url.port.to_string();
    let wanted = [
        url.host.as_str(),
        port.as_str(),
        url.dbname.as_str(),
        url.user.as_str(),
    ];
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .find_map(|line| {
            let fields = pgpass_fields(line);
            if fields.len() < 5 {
                return None;
            }
            let matches = fields
                .iter()
                .zip(wanted)
                .all(|(field, want)| field == "*" || field == want);
            // A password containing ':' is the rest of the line, as libpq takes it.
            matches.then(|| fields[4..].join(":"))
        })
}

fn pgpass_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next()
                    && let Some(last) = fields.last_mut()
                {
                    last.push(next);
                }
            }
            ':' => fields.push(String::new()),
            c => {
                if let Some(last) = fields.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    fields
}
