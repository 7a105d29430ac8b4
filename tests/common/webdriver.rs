//! A small W3C WebDriver client for the browser tests: Debian's `chromedriver` (package
//! `chromium-driver`) driving headless `chromium`, spoken to with plain HTTP/1.1 + JSON over a std
//! `TcpStream` (one request per connection). Each `Browser` has its own chromedriver on a free
//! port and its own profile directory; on drop the session is deleted (chromium quits) and the
//! chromedriver we started is killed by PID.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::web::Resp;

/// The element key of the W3C protocol.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where screenshots go (kept after the run as test artifacts).
pub fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts/web");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whether the browser and its driver are installed (scripts/setup.sh installs both).
pub fn available() -> bool {
    Path::new("/usr/bin/chromedriver").exists() && Path::new("/usr/bin/chromium").exists()
}

/// A headless Chromium under a chromedriver of its own.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Starts chromedriver and opens a session with a 1280×900 headless window.
    pub fn start() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut driver = Command::new("/usr/bin/chromedriver")
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut up = false;
            while Instant::now() < deadline && driver.try_wait().unwrap().is_none() {
                if raw_call(port, "GET", "/status", None)
                    .is_some_and(|r| r.status == 200 && r.json()["value"]["ready"] == true)
                {
                    up = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if !up {
                let _ = driver.kill();
                let _ = driver.wait();
                continue;
            }
            let caps = json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                             "--window-size=1280,900", "--no-first-run", "--no-default-browser-check",
                             format!("--user-data-dir={}", profile.path().display())],
                },
            }}});
            let r = raw_call(port, "POST", "/session", Some(&caps)).expect("chromedriver answers");
            let session = r.json()["value"]["sessionId"].as_str().map(str::to_owned);
            let Some(session) = session else {
                let _ = driver.kill();
                let _ = driver.wait();
                panic!("no WebDriver session: {}", r.body);
            };
            return Browser {
                driver,
                port,
                session,
                _profile: profile,
            };
        }
        panic!("chromedriver did not start");
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let r = raw_call(self.port, method, path, body).ok_or("chromedriver did not answer")?;
        let v = r.json();
        if r.status == 200 {
            Ok(v["value"].clone())
        } else {
            Err(format!("{} {}", v["value"]["error"], v["value"]["message"]))
        }
    }

    fn session_call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let p = format!("/session/{}{path}", self.session);
        self.call(method, &p, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Loads `url`.
    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(&json!({"url": url})));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub fn exec(&self, script: &str, args: &[Value]) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(&json!({"script": script, "args": args})),
        )
    }

    /// Runs an async script: the last argument is the callback to call with the result.
    pub fn exec_async(&self, script: &str, args: &[Value]) -> Value {
        self.session_call(
            "POST",
            "/execute/async",
            Some(&json!({"script": script, "args": args})),
        )
    }

    /// The first element matching the CSS selector, if any.
    pub fn find(&self, css: &str) -> Option<String> {
        let p = format!("/session/{}/element", self.session);
        let v = self
            .call("POST", &p, Some(&json!({"using": "css selector", "value": css})))
            .ok()?;
        v[ELEMENT].as_str().map(str::to_owned)
    }

    /// Waits until an element matches `css` and is displayed, then returns it.
    pub fn wait_visible(&self, css: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(el) = self.find(css) {
                let p = format!("/session/{}/element/{el}/displayed", self.session);
                if self.call("GET", &p, None).is_ok_and(|v| v == true) {
                    return el;
                }
            }
            if Instant::now() >= deadline {
                panic!("no visible {css}; {}", self.diagnose());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clicks the element matching `css` once it is visible (a real pointer click by the driver).
    pub fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let el = self.wait_visible(css, Duration::from_secs(10));
            let p = format!("/element/{el}/click");
            // The element may be redrawn between finding and clicking: find it again.
            match self.call("POST", &format!("/session/{}{p}", self.session), Some(&json!({}))) {
                Ok(_) => return,
                Err(e) if Instant::now() < deadline && e.contains("stale") => continue,
                Err(e) => panic!("click {css}: {e}"),
            }
        }
    }

    /// Types `text` into the element matching `css` (keys as a user types them).
    pub fn type_into(&self, css: &str, text: &str) {
        let el = self.wait_visible(css, Duration::from_secs(10));
        self.session_call(
            "POST",
            &format!("/element/{el}/value"),
            Some(&json!({"text": text})),
        );
    }

    /// Sends keys to whatever has the focus (e.g. xterm.js's hidden textarea).
    pub fn type_focused(&self, text: &str) {
        let actions: Vec<Value> = text
            .chars()
            .flat_map(|c| {
                let k = if c == '\n' {
                    "\u{E007}".to_owned()
                } else {
                    c.to_string()
                };
                [
                    json!({"type": "keyDown", "value": k}),
                    json!({"type": "keyUp", "value": k}),
                ]
            })
            .collect();
        self.session_call(
            "POST",
            "/actions",
            Some(&json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})),
        );
        self.session_call("DELETE", "/actions", None);
    }

    /// The `textContent` of the element matching `css` ("" if none).
    pub fn text(&self, css: &str) -> String {
        self.exec(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
            &[json!(css)],
        )
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Waits until `text(css)` satisfies `f`; returns the text.
    pub fn wait_text(&self, css: &str, timeout: Duration, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let t = self.text(css);
            if f(&t) {
                return t;
            }
            if Instant::now() >= deadline {
                panic!("{css}: unexpected text {t:?}; {}", self.diagnose());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Saves a PNG screenshot of the window to the artifacts dir as `name.png`.
    /// What the page shows when a wait fails: its URL, visible text and a screenshot (`failure`).
    fn diagnose(&self) -> String {
        let shot = self.screenshot("failure");
        let page = self.exec(
            "return location.href + ' | ' + (document.body ? document.body.innerText : '').slice(0, 2000);",
            &[],
        );
        format!("page: {page} (screenshot {})", shot.display())
    }

    pub fn screenshot(&self, name: &str) -> PathBuf {
        let v = self.session_call("GET", "/screenshot", None);
        let png = base64_decode(v.as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = artifacts_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

/// One request to chromedriver; `None` if it cannot be reached.
fn raw_call(port: u16, method: &str, path: &str, body: Option<&Value>) -> Option<Resp> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(120))).ok()?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    // chromedriver keeps the connection open despite `Connection: close`: read the head, then
    // exactly Content-Length bytes (or to the end when it sends none).
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return (!raw.is_empty()).then(|| Resp::parse(&raw));
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let length = String::from_utf8_lossy(&raw[..head_end])
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok());
    match length {
        Some(len) => {
            while raw.len() < head_end + len {
                let n = s.read(&mut buf).ok()?;
                if n == 0 {
                    break;
                }
                raw.extend_from_slice(&buf[..n]);
            }
        }
        None => {
            s.read_to_end(&mut raw).ok()?;
        }
    }
    Some(Resp::parse(&raw))
}

/// Standard base64 (the screenshot's encoding).
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 byte {c}"),
        }
    };
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    for chunk in clean.chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let n = chunk
            .iter()
            .map(|&c| if c == b'=' { 0 } else { val(c) })
            .fold(0u32, |acc, v| (acc << 6) | v)
            << (6 * (4 - chunk.len()));
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    out
}
