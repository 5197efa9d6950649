//! A real browser for tests: Debian's `chromedriver` driving headless `chromium`, spoken to
//! over WebDriver (HTTP + JSON) with a minimal hand-written HTTP/1.1 client; or Debian's
//! `firefox-esr`, headless, spoken to over Marionette, the protocol Firefox has built in (the
//! one geckodriver translates WebDriver into; Debian has no geckodriver). Both take the same
//! W3C WebDriver commands, so a test drives either through the same methods.
//!
//! A missing browser or driver is a loud failure that says what to install, never a skip:
//! a web UI test that did not run must not pass.
//!
//! ```no_run
//! use mailferry_testkit::browser::Browser;
//! let b = Browser::start().unwrap();
//! b.goto("http://127.0.0.1:8025/").unwrap();
//! let row = b.wait_for("tr[data-entry-id]", std::time::Duration::from_secs(5)).unwrap();
//! b.click(&row).unwrap();
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const FIREFOX: &str = "/usr/bin/firefox-esr";
const INSTALL: &str = "apt-get install chromium chromium-driver";
const INSTALL_FIREFOX: &str = "apt-get install firefox-esr";
/// The W3C WebDriver key under which an element reference travels.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

#[derive(Debug)]
pub struct BrowserError(pub String);

impl std::fmt::Display for BrowserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BrowserError {}

pub type Result<T> = std::result::Result<T, BrowserError>;

fn err(msg: impl Into<String>) -> BrowserError {
    BrowserError(msg.into())
}

/// An element of the page, by its WebDriver reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element(pub String);

#[derive(Debug, Clone, Copy)]
pub enum Modifier {
    Ctrl,
    Shift,
}

impl Modifier {
    /// The WebDriver key codes (the spec's private-use code points).
    fn key(self) -> &'static str {
        match self {
            Modifier::Ctrl => "\u{E009}",
            Modifier::Shift => "\u{E008}",
        }
    }
}

/// Which real browser a [`Browser`] drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chromium,
    Firefox,
}

pub struct Browser {
    transport: Transport,
    kind: Kind,
    _profile: tempfile::TempDir,
}

enum Transport {
    /// chromedriver's HTTP API.
    WebDriver {
        driver: Child,
        port: u16,
        session: String,
    },
    /// Firefox's own Marionette socket.
    Marionette {
        firefox: Child,
        conn: Mutex<Marionette>,
    },
}

impl Browser {
    /// Starts the browser of that kind: [`Browser::start`] or [`Browser::start_firefox`].
    pub fn start_kind(kind: Kind) -> Result<Browser> {
        match kind {
            Kind::Chromium => Browser::start(),
            Kind::Firefox => Browser::start_firefox(),
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Starts headless Firefox ESR with a fresh profile and Marionette on a free loopback
    /// port, and opens a session at 1280×800.
    pub fn start_firefox() -> Result<Browser> {
        if !Path::new(FIREFOX).exists() {
            return Err(err(format!(
                "{FIREFOX} is missing: the web UI tests run in Firefox too; as root: {INSTALL_FIREFOX}"
            )));
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| err(format!("No free port for Marionette: {e}")))?
            .port();
        let profile = tempfile::tempdir().map_err(|e| err(format!("No temp dir: {e}")))?;
        // No update checks, telemetry, first-run pages or captive-portal probes: this machine's
        // network is closed, and none of it belongs in a test.
        let prefs = [
            ("marionette.port", port.to_string()),
            ("app.update.enabled", "false".into()),
            ("app.update.auto", "false".into()),
            ("browser.shell.checkDefaultBrowser", "false".into()),
            (
                "browser.startup.homepage_override.mstone",
                "\"ignore\"".into(),
            ),
            ("browser.startup.page", "0".into()),
            ("browser.aboutwelcome.enabled", "false".into()),
            ("datareporting.policy.dataSubmissionEnabled", "false".into()),
            ("datareporting.healthreport.uploadEnabled", "false".into()),
            ("toolkit.telemetry.enabled", "false".into()),
            ("network.captive-portal-service.enabled", "false".into()),
            ("network.connectivity-service.enabled", "false".into()),
            ("extensions.update.enabled", "false".into()),
            ("browser.safebrowsing.update.enabled", "false".into()),
            ("browser.safebrowsing.malware.enabled", "false".into()),
            ("browser.safebrowsing.phishing.enabled", "false".into()),
            ("remote.prefs.recommended", "true".into()),
        ];
        let text: String = prefs
            .iter()
            .map(|(k, v)| format!("user_pref(\"{k}\", {v});\n"))
            .collect();
        std::fs::write(profile.path().join("user.js"), text)
            .map_err(|e| err(format!("Unable to write the Firefox profile: {e}")))?;
        let log = profile.path().join("firefox.log");
        let log_file = std::fs::File::create(&log)
            .map_err(|e| err(format!("Unable to create {}: {e}", log.display())))?;
        let mut firefox = Command::new(FIREFOX)
            .args(["--headless", "--marionette", "--no-remote", "--profile"])
            .arg(profile.path())
            .env("HOME", profile.path())
            .env("MOZ_CRASHREPORTER_DISABLE", "1")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| {
                err(format!(
                    "Unable to start {FIREFOX} ({e}); {INSTALL_FIREFOX}"
                ))
            })?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let conn = loop {
            match Marionette::connect(port) {
                Ok(c) => break c,
                Err(e) if Instant::now() > deadline => {
                    let _ = firefox.kill();
                    let _ = firefox.wait();
                    let tail = std::fs::read_to_string(&log).unwrap_or_default();
                    return Err(err(format!(
                        "Firefox's Marionette did not answer on port {port} within 60 s ({e}); \
                         its log: {}",
                        tail.lines().rev().take(10).collect::<Vec<_>>().join(" | ")
                    )));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        let b = Browser {
            transport: Transport::Marionette {
                firefox,
                conn: Mutex::new(conn),
            },
            kind: Kind::Firefox,
            _profile: profile,
        };
        b.marionette(
            "WebDriver:NewSession",
            json!({"capabilities": {"alwaysMatch": {}}}),
        )?;
        b.marionette(
            "WebDriver:SetWindowRect",
            json!({"x": 0, "y": 0, "width": 1280, "height": 800}),
        )?;
        Ok(b)
    }

    fn marionette(&self, name: &str, params: Value) -> Result<Value> {
        match &self.transport {
            Transport::Marionette { conn, .. } => conn
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .command(name, params),
            Transport::WebDriver { .. } => Err(err("not a Marionette session")),
        }
    }

    /// Starts chromedriver on a free loopback port and a headless chromium session at
    /// 1280×800 with a fresh profile.
    pub fn start() -> Result<Browser> {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            if !Path::new(bin).exists() {
                return Err(err(format!(
                    "{bin} is missing: the web UI tests need a real browser; as root: {INSTALL}"
                )));
            }
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| err(format!("No free port for chromedriver: {e}")))?
            .port();
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| err(format!("Unable to start {CHROMEDRIVER} ({e}); {INSTALL}")))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match call(port, "GET", "/status", None) {
                Ok(v) if v["value"]["ready"] == true => break,
                _ if Instant::now() > deadline => {
                    let _ = driver.kill();
                    let _ = driver.wait();
                    return Err(err(format!(
                        "chromedriver did not get ready on port {port} within 20 s"
                    )));
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        let profile = tempfile::tempdir().map_err(|e| err(format!("No temp dir: {e}")))?;
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,800",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let v = match call(port, "POST", "/session", Some(&caps)) {
            Ok(v) => v,
            Err(e) => {
                let _ = driver.kill();
                let _ = driver.wait();
                return Err(err(format!("chromium did not start: {e}")));
            }
        };
        let session = v["value"]["sessionId"]
            .as_str()
            .ok_or_else(|| err(format!("No session ID in {v}")))?
            .to_string();
        Ok(Browser {
            transport: Transport::WebDriver {
                driver,
                port,
                session,
            },
            kind: Kind::Chromium,
            _profile: profile,
        })
    }

    /// One W3C WebDriver command, given as its HTTP method and path below the session.
    fn cmd(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        match &self.transport {
            Transport::WebDriver { port, session, .. } => {
                let v = call(*port, method, &format!("/session/{session}{path}"), body)?;
                Ok(v["value"].clone())
            }
            Transport::Marionette { .. } => {
                let (name, params) = marionette_command(method, path, body)?;
                self.marionette(name, params)
            }
        }
    }

    pub fn goto(&self, url: &str) -> Result<()> {
        self.cmd("POST", "/url", Some(&json!({"url": url})))
            .map(drop)
    }

    pub fn url(&self) -> Result<String> {
        Ok(self.cmd("GET", "/url", None)?.as_str().unwrap_or("").into())
    }

    pub fn find(&self, css: &str) -> Result<Element> {
        let v = self.cmd(
            "POST",
            "/element",
            Some(&json!({"using": "css selector", "value": css})),
        )?;
        element(&v)
    }

    pub fn find_all(&self, css: &str) -> Result<Vec<Element>> {
        let v = self.cmd(
            "POST",
            "/elements",
            Some(&json!({"using": "css selector", "value": css})),
        )?;
        v.as_array()
            .ok_or_else(|| err(format!("Not a list of elements: {v}")))?
            .iter()
            .map(element)
            .collect()
    }

    pub fn click(&self, e: &Element) -> Result<()> {
        self.cmd("POST", &format!("/element/{}/click", e.0), Some(&json!({})))
            .map(drop)
    }

    /// Clicks with a modifier held: key down, click, key up, in one Actions sequence.
    pub fn click_with(&self, e: &Element, m: Modifier) -> Result<()> {
        let pause = json!({"type": "pause", "duration": 0});
        let actions = json!({"actions": [
            {"type": "key", "id": "keyboard", "actions": [
                {"type": "keyDown", "value": m.key()}, pause, pause, pause,
                {"type": "keyUp", "value": m.key()},
            ]},
            {"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": [
                pause,
                {"type": "pointerMove", "origin": {ELEMENT: e.0}, "x": 0, "y": 0},
                {"type": "pointerDown", "button": 0},
                {"type": "pointerUp", "button": 0},
                pause,
            ]},
        ]});
        self.cmd("POST", "/actions", Some(&actions))?;
        self.cmd("DELETE", "/actions", None).map(drop)
    }

    pub fn send_keys(&self, e: &Element, text: &str) -> Result<()> {
        self.cmd(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(&json!({"text": text})),
        )
        .map(drop)
    }

    /// Ctrl+A to whatever has the focus.
    pub fn keys_ctrl_a(&self) -> Result<()> {
        let ctrl = Modifier::Ctrl.key();
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": ctrl}, {"type": "keyDown", "value": "a"},
            {"type": "keyUp", "value": "a"}, {"type": "keyUp", "value": ctrl},
        ]}]});
        self.cmd("POST", "/actions", Some(&actions))?;
        self.cmd("DELETE", "/actions", None).map(drop)
    }

    pub fn text(&self, e: &Element) -> Result<String> {
        Ok(self
            .cmd("GET", &format!("/element/{}/text", e.0), None)?
            .as_str()
            .unwrap_or("")
            .to_string())
    }

    pub fn attr(&self, e: &Element, name: &str) -> Result<Option<String>> {
        let v = self.cmd("GET", &format!("/element/{}/attribute/{name}", e.0), None)?;
        Ok(v.as_str().map(str::to_string))
    }

    /// Waits until an element matching `css` exists and is displayed.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Result<Element> {
        let deadline = Instant::now() + timeout;
        // Asked in the page: shown means laid out with a box (not `hidden`, not in a
        // `display: none` ancestor).
        let js = "const e = document.querySelector(arguments[0]); \
                  return !!e && e.getClientRects().length > 0;";
        loop {
            if self.execute_with(js, &[json!(css)])? == true {
                return self.find(css);
            }
            if Instant::now() > deadline {
                return Err(err(format!(
                    "No visible element matches {css:?} after {timeout:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the script (a function body) returns true.
    pub fn wait_until(&self, js: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.execute(js)? == true {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(err(format!("Still false after {timeout:?}: {js}")));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs a function body in the page and returns what it returns.
    pub fn execute(&self, js: &str) -> Result<Value> {
        self.execute_with(js, &[])
    }

    /// Runs a function body with `arguments[0..]`.
    pub fn execute_with(&self, js: &str, args: &[Value]) -> Result<Value> {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(&json!({"script": js, "args": args})),
        )
    }

    /// Runs an asynchronous function body: it calls `arguments[arguments.length - 1]` (its
    /// callback) with what it returns, within WebDriver's script timeout (30 s by default).
    pub fn execute_async(&self, js: &str) -> Result<Value> {
        self.cmd(
            "POST",
            "/execute/async",
            Some(&json!({"script": js, "args": []})),
        )
    }

    pub fn screenshot_png(&self, path: &Path) -> Result<()> {
        let v = self.cmd("GET", "/screenshot", None)?;
        let b64 = v
            .as_str()
            .ok_or_else(|| err(format!("No screenshot in {v}")))?;
        let png = base64_decode(b64).ok_or_else(|| err("The screenshot is not base64"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| err(format!("Unable to create {}: {e}", dir.display())))?;
        }
        std::fs::write(path, png)
            .map_err(|e| err(format!("Unable to write {}: {e}", path.display())))
    }

    pub fn cookies(&self) -> Result<Vec<Value>> {
        let v = self.cmd("GET", "/cookie", None)?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        match &mut self.transport {
            Transport::WebDriver {
                driver,
                port,
                session,
            } => {
                let _ = call(*port, "DELETE", &format!("/session/{session}"), None);
                let _ = driver.kill();
                let _ = driver.wait();
            }
            Transport::Marionette { firefox, conn } => {
                if let Ok(c) = conn.get_mut() {
                    let _ = c.command("WebDriver:DeleteSession", json!({}));
                }
                let _ = firefox.kill();
                let _ = firefox.wait();
            }
        }
    }
}

/// The Marionette command for a W3C WebDriver endpoint (the ones [`Browser`] uses).
fn marionette_command(
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(&'static str, Value)> {
    let body = body.cloned().unwrap_or_else(|| json!({}));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let with_id = |id: &str, mut v: Value| {
        v["id"] = Value::from(id);
        v
    };
    Ok(match (method, parts.as_slice()) {
        ("POST", ["url"]) => ("WebDriver:Navigate", body),
        ("GET", ["url"]) => ("WebDriver:GetCurrentURL", json!({})),
        ("POST", ["element"]) => ("WebDriver:FindElement", body),
        ("POST", ["elements"]) => ("WebDriver:FindElements", body),
        ("POST", ["element", id, "click"]) => ("WebDriver:ElementClick", with_id(id, json!({}))),
        ("POST", ["element", id, "value"]) => ("WebDriver:ElementSendKeys", with_id(id, body)),
        ("GET", ["element", id, "text"]) => ("WebDriver:GetElementText", with_id(id, json!({}))),
        ("GET", ["element", id, "attribute", name]) => (
            "WebDriver:GetElementAttribute",
            with_id(id, json!({"name": name})),
        ),
        ("POST", ["actions"]) => ("WebDriver:PerformActions", body),
        ("DELETE", ["actions"]) => ("WebDriver:ReleaseActions", json!({})),
        ("POST", ["execute", "sync"]) => ("WebDriver:ExecuteScript", body),
        ("POST", ["execute", "async"]) => ("WebDriver:ExecuteAsyncScript", body),
        ("GET", ["screenshot"]) => ("WebDriver:TakeScreenshot", json!({"full": false})),
        ("GET", ["cookie"]) => ("WebDriver:GetCookies", json!({})),
        _ => return Err(err(format!("No Marionette command for {method} {path}"))),
    })
}

/// A Marionette connection: messages are `LENGTH:JSON`; a command is `[0, id, name,
/// params]` and its answer `[1, id, error, result]`.
struct Marionette {
    stream: TcpStream,
    buf: Vec<u8>,
    next_id: u64,
}

impl Marionette {
    fn connect(port: u16) -> Result<Marionette> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .map_err(|e| err(format!("Marionette on port {port}: {e}")))?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
        let mut m = Marionette {
            stream,
            buf: Vec::new(),
            next_id: 1,
        };
        let hello = m.read()?;
        if hello["marionetteProtocol"].as_u64() != Some(3) {
            return Err(err(format!("Not a Marionette 3 greeting: {hello}")));
        }
        Ok(m)
    }

    fn read(&mut self) -> Result<Value> {
        let mut chunk = [0u8; 65536];
        loop {
            if let Some(colon) = self.buf.iter().position(|&b| b == b':') {
                let len: usize = std::str::from_utf8(&self.buf[..colon])
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| err("Marionette: a message without its length"))?;
                if self.buf.len() >= colon + 1 + len {
                    let v = serde_json::from_slice(&self.buf[colon + 1..colon + 1 + len])
                        .map_err(|e| err(format!("Marionette sent no JSON: {e}")))?;
                    self.buf.drain(..colon + 1 + len);
                    return Ok(v);
                }
            }
            let n = self
                .stream
                .read(&mut chunk)
                .map_err(|e| err(format!("Marionette: {e}")))?;
            if n == 0 {
                return Err(err("Marionette: Firefox closed the connection"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn command(&mut self, name: &str, params: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!([0, id, name, params]).to_string();
        self.stream
            .write_all(format!("{}:{msg}", msg.len()).as_bytes())
            .map_err(|e| err(format!("Marionette: {e}")))?;
        loop {
            let answer = self.read()?;
            if answer[0] != 1 || answer[1] != id {
                continue; // an event or a late answer
            }
            if !answer[2].is_null() {
                return Err(err(format!(
                    "Marionette {name}: {}: {}",
                    answer[2]["error"].as_str().unwrap_or("error"),
                    answer[2]["message"].as_str().unwrap_or("")
                )));
            }
            // Most results come wrapped as {"value": …}, as WebDriver's do.
            let result = answer[3].clone();
            return Ok(match result {
                Value::Object(ref o) if o.len() == 1 && o.contains_key("value") => {
                    result["value"].clone()
                }
                other => other,
            });
        }
    }
}

fn element(v: &Value) -> Result<Element> {
    v[ELEMENT]
        .as_str()
        .map(|s| Element(s.to_string()))
        .ok_or_else(|| err(format!("Not an element: {v}")))
}

/// One WebDriver command: an HTTP/1.1 request with `Connection: close`, the answer's JSON,
/// and a WebDriver error turned into an `Err` with its message.
fn call(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| err(format!("chromedriver on port {port}: {e}")))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(120)));
    let body = body.map(Value::to_string).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json; \
         charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .map_err(|e| err(format!("chromedriver: {e}")))?;
    // chromedriver keeps the connection open whatever the request says: the answer ends
    // where its Content-Length (or its last chunk) says, not at end of stream.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let (split, head) = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break (p, String::from_utf8_lossy(&raw[..p]).to_ascii_lowercase());
        }
        let n = s
            .read(&mut buf)
            .map_err(|e| err(format!("chromedriver: {e}")))?;
        if n == 0 {
            return Err(err("chromedriver: the answer ended before its headers did"));
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let length: Option<usize> = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let body = &raw[split + 4..];
        let complete = match length {
            Some(l) => body.len() >= l,
            None if chunked => body.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if complete {
            break;
        }
        let n = s
            .read(&mut buf)
            .map_err(|e| err(format!("chromedriver: {e}")))?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let mut payload = raw[split + 4..].to_vec();
    if let Some(l) = length {
        payload.truncate(l);
    } else if chunked {
        payload = dechunk(&payload).ok_or_else(|| err("chromedriver: bad chunked body"))?;
    }
    let v: Value = serde_json::from_slice(&payload).map_err(|e| {
        err(format!(
            "chromedriver answered {method} {path} with no JSON ({e}): {}",
            String::from_utf8_lossy(&payload)
        ))
    })?;
    if let Some(e) = v["value"]["error"].as_str() {
        return Err(err(format!(
            "WebDriver {method} {path}: {e}: {}",
            v["value"]["message"].as_str().unwrap_or("")
        )));
    }
    Ok(v)
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let clean: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len().saturating_sub(1)]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_chunks_decode() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
        assert_eq!(base64_decode("YWJj").unwrap(), b"abc");
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
    }
}

/// Both browsers, for real: a page served on loopback, a click with Ctrl held, a script, a
/// screenshot. These need Debian's chromium, chromium-driver and firefox-esr.
#[cfg(test)]
mod real {
    use super::*;

    /// Serves one HTML page on a free loopback port until the test ends.
    fn page(html: &'static str) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{html}",
                    html.len()
                );
            }
        });
        port
    }

    const PAGE: &str = "<!doctype html><html><body><button id=b>Click</button><p id=out></p>\
        <script>document.getElementById('b').addEventListener('click', (e) => {\
        document.getElementById('out').textContent = (e.ctrlKey ? 'ctrl ' : '') + 'clicked'; });\
        </script></body></html>";

    fn drive(kind: Kind) {
        let b = Browser::start_kind(kind).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(b.kind(), kind);
        let port = page(PAGE);
        b.goto(&format!("http://127.0.0.1:{port}/")).unwrap();
        assert_eq!(b.url().unwrap(), format!("http://127.0.0.1:{port}/"));
        let button = b.find("#b").unwrap();
        b.click(&button).unwrap();
        assert_eq!(b.text(&b.find("#out").unwrap()).unwrap(), "clicked");
        b.click_with(&button, Modifier::Ctrl).unwrap();
        assert_eq!(b.text(&b.find("#out").unwrap()).unwrap(), "ctrl clicked");
        assert_eq!(
            b.execute_with("return arguments[0] + 1;", &[json!(41)])
                .unwrap(),
            42
        );
        assert_eq!(
            b.execute_async("arguments[0](window.innerWidth > 1000);")
                .unwrap(),
            true
        );
        assert!(b.find("#nothing").is_err());
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("shot.png");
        b.screenshot_png(&png).unwrap();
        assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    }

    #[test]
    fn chromium_is_driven_through_chromedriver() {
        drive(Kind::Chromium);
    }

    #[test]
    fn firefox_is_driven_through_marionette() {
        drive(Kind::Firefox);
    }
}
