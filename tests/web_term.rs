//! `cml-web`'s terminal WebSockets end to end: a real cmld with the busybox fixture GuestOS, the
//! real `cml-web` binary (tests/common/web.rs), a tungstenite client speaking the protocol of the
//! page's `openTerminal`: binary frames in and out, `{"resize":…}` text frames, one final
//! `{"exit":…}` / `{"error":…}` text frame. Also cmld's side of a client that goes away at once:
//! the command must not outlive it.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    net::TcpStream,
    time::{Duration, Instant},
};

use common::{
    Daemon,
    poll::poll,
    web::{Login, Web},
};
use serde_json::Value;
use tungstenite::{
    Message, WebSocket,
    client::IntoClientRequest,
    handshake::HandshakeError,
    http::{HeaderValue, StatusCode},
};

/// Bounds every wait (only a hang makes it matter).
const TIMEOUT: Duration = Duration::from_secs(20);

/// One terminal WebSocket and what it received.
struct Term {
    ws: WebSocket<TcpStream>,
    out: Vec<u8>,
    end: Option<Value>,
    closed: bool,
}

/// Opens `path` (with `?` and the query) as a WebSocket; the HTTP status when refused.
fn open(web: &Web, path: &str, login: Option<&Login>, origin: Option<&str>) -> Result<Term, StatusCode> {
    let stream = TcpStream::connect(("127.0.0.1", web.port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut req = format!("ws://127.0.0.1:{}{path}", web.port)
        .into_client_request()
        .unwrap();
    if let Some(l) = login {
        req.headers_mut()
            .insert("Cookie", HeaderValue::from_str(&l.cookie).unwrap());
    }
    if let Some(o) = origin {
        req.headers_mut()
            .insert("Origin", HeaderValue::from_str(o).unwrap());
    }
    let mut attempt = tungstenite::client(req, stream);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match attempt {
            Ok((ws, _)) => {
                return Ok(Term {
                    ws,
                    out: Vec::new(),
                    end: None,
                    closed: false,
                });
            }
            Err(HandshakeError::Interrupted(mid)) => {
                assert!(Instant::now() < deadline, "handshake timed out");
                attempt = mid.handshake();
            }
            Err(HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
                let body = resp
                    .body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                let json: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
                assert!(json["error"].is_string(), "{body}");
                return Err(resp.status());
            }
            Err(HandshakeError::Failure(e)) => panic!("handshake: {e}"),
        }
    }
}

fn query(login: &Login, rest: &str) -> String {
    format!("csrf={}&{rest}", login.csrf)
}

impl Term {
    /// Reads until `done` holds (or the socket closes); panics after [`TIMEOUT`].
    fn read_until(&mut self, what: &str, mut done: impl FnMut(&Term) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        while !done(self) {
            assert!(
                !self.closed && Instant::now() < deadline,
                "no {what}; got {:?} end {:?}",
                String::from_utf8_lossy(&self.out),
                self.end
            );
            match self.ws.read() {
                Ok(Message::Binary(b)) => self.out.extend_from_slice(&b),
                Ok(Message::Text(t)) => {
                    assert!(self.end.is_none(), "a second text frame {t}");
                    self.end = Some(serde_json::from_str(t.as_str()).unwrap());
                }
                Ok(Message::Close(_)) => {}
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    self.closed = true;
                }
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    fn expect_output(&mut self, needle: &str) {
        self.read_until(needle, |t| String::from_utf8_lossy(&t.out).contains(needle));
    }

    /// Reads to the end: the final text frame, then the close.
    fn finish(&mut self) -> Value {
        self.read_until("the close", |t| t.closed);
        self.end.clone().expect("a final text frame")
    }

    fn send(&mut self, bytes: &[u8]) {
        self.ws.send(Message::binary(bytes.to_vec())).unwrap();
    }

    fn resize(&mut self, cols: u16, rows: u16) {
        let text = format!("{{\"resize\":{{\"cols\":{cols},\"rows\":{rows}}}}}");
        self.ws.send(Message::text(text)).unwrap();
    }
}

/// Host PIDs of `sleep 1000` processes in the daemon's cgroups.
fn sleepers(d: &Daemon) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            cmdline == b"sleep\x001000\x00" && cgroup.contains(&d.cgroup_parent)
        })
        .collect()
}

/// A daemon with the busybox fixture and a running container `name`.
fn running(tmp: &std::path::Path, name: &str, extra: &str) -> (Daemon, String) {
    let d = common::busybox_daemon(tmp, &[]);
    let uuid = d.create_container(name, extra);
    d.ok(&["start", name]);
    (d, uuid)
}

#[test]
fn run_over_a_websocket_pty_interactive_exit_status_and_close_kills_the_command() {
    let tmp = tempfile::tempdir().unwrap();
    let (d, uuid) = running(tmp.path(), "term", "");
    let web = Web::start(&d);
    let login = web.login();
    let run = format!("/api/containers/{uuid}/run");

    // (a) A command on a pty, by UUID as the page does: its output, then its status.
    let mut t = open(
        &web,
        &format!("{run}?{}", query(&login, "cols=80&rows=24&pty=1&cmd=hostname")),
        Some(&login),
        None,
    )
    .unwrap();
    t.expect_output("term");
    assert_eq!(t.finish(), serde_json::json!({ "exit": 0 }));

    // (b) An interactive shell: input, a resize the pty sees, exit.
    let origin = format!("http://127.0.0.1:{}", web.port);
    let mut t = open(
        &web,
        &format!(
            "/api/containers/term/run?{}",
            query(&login, "cols=80&rows=24&pty=1&cmd=%2Fbin%2Fsh")
        ),
        Some(&login),
        Some(&origin),
    )
    .unwrap();
    t.send(b"echo $((6*7))\n");
    t.expect_output("42");
    let mut threads = term_threads(web.pid());
    threads.sort();
    assert_eq!(threads, ["term-read", "term-write"]);
    t.send(b"stty size\n");
    t.expect_output("24 80");
    t.resize(111, 33);
    t.send(b"stty size\n");
    t.expect_output("33 111");
    t.send(b"exit\n");
    assert_eq!(t.finish(), serde_json::json!({ "exit": 0 }));

    // (c) The exit status comes through (no pty: plain pipes).
    let mut t = open(
        &web,
        &format!("{run}?{}", query(&login, "cmd=sh&cmd=-c&cmd=echo+out%3B+exit+3")),
        Some(&login),
        None,
    )
    .unwrap();
    t.expect_output("out");
    assert_eq!(t.finish(), serde_json::json!({ "exit": 3 }));

    // (d) Closing the WebSocket ends the command in the container, with and without a pty.
    for pty in ["1", "0"] {
        let mut t = open(
            &web,
            &format!(
                "{run}?{}",
                query(&login, &format!("pty={pty}&cmd=sleep&cmd=1000"))
            ),
            Some(&login),
            None,
        )
        .unwrap();
        assert!(poll(TIMEOUT, || !sleepers(&d).is_empty()), "sleep did not start");
        t.ws.close(None).unwrap();
        let _ = t.ws.flush();
        assert!(
            poll(TIMEOUT, || sleepers(&d).is_empty()),
            "sleep 1000 outlived its WebSocket (pty={pty}): {:?}",
            sleepers(&d)
        );
    }

    // A message over 64 KiB ends the session with an error.
    let mut t = open(
        &web,
        &format!("{run}?{}", query(&login, "cmd=cat")),
        Some(&login),
        None,
    )
    .unwrap();
    t.send(&vec![b'x'; 65 * 1024]);
    let end = t.finish();
    assert!(end["error"].is_string(), "{end}");

    // Logging out ends an open terminal, and its command.
    let mut t = open(
        &web,
        &format!("{run}?{}", query(&login, "pty=1&cmd=sleep&cmd=1000")),
        Some(&login),
        None,
    )
    .unwrap();
    assert!(poll(TIMEOUT, || !sleepers(&d).is_empty()), "sleep did not start");
    assert_eq!(web.post("/api/logout", &login, "").status, 204);
    assert_eq!(
        t.finish(),
        serde_json::json!({ "exit": null, "reason": "the session ended" })
    );
    assert!(poll(TIMEOUT, || sleepers(&d).is_empty()), "{:?}", sleepers(&d));

    // No bridge thread outlives its WebSocket.
    assert!(
        poll(TIMEOUT, || term_threads(web.pid()).is_empty()),
        "{:?}",
        term_threads(web.pid())
    );
}

/// The names of cml-web's terminal threads (`term-read`, `term-write`) still running.
fn term_threads(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|c| c.trim().to_owned())
        .filter(|c| c.starts_with("term-"))
        .collect()
}

#[test]
fn terminal_requests_are_refused_before_the_upgrade() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &[]);
    d.create_container("idle", "");
    let web = Web::start(&d);
    let login = web.login();
    let ok = query(&login, "cols=80&rows=24&pty=1&cmd=sh");
    let run = "/api/containers/idle/run";

    // No cookie: 401; a wrong or missing CSRF token: 403; another site's Origin: 403.
    assert_eq!(
        open(&web, &format!("{run}?{ok}"), None, None).err(),
        Some(StatusCode::UNAUTHORIZED)
    );
    let wrong = format!("csrf={}&cmd=sh", "0".repeat(64));
    assert_eq!(
        open(&web, &format!("{run}?{wrong}"), Some(&login), None).err(),
        Some(StatusCode::FORBIDDEN)
    );
    assert_eq!(
        open(&web, &format!("{run}?cmd=sh"), Some(&login), None).err(),
        Some(StatusCode::FORBIDDEN)
    );
    for origin in ["http://evil.example", "http://127.0.0.1.evil.example", "null"] {
        assert_eq!(
            open(&web, &format!("{run}?{ok}"), Some(&login), Some(origin)).err(),
            Some(StatusCode::FORBIDDEN),
            "{origin}"
        );
    }
    // Unknown container: 404; bad sizes, commands or parameters: 400.
    assert_eq!(
        open(
            &web,
            &format!("/api/containers/nosuch/run?{ok}"),
            Some(&login),
            None
        )
        .err(),
        Some(StatusCode::NOT_FOUND)
    );
    for bad in [
        "cols=0&rows=24&cmd=sh",
        "cols=1001&rows=24&cmd=sh",
        "cols=80&rows=24",
        "cmd=sh&other=1",
    ] {
        assert_eq!(
            open(&web, &format!("{run}?{}", query(&login, bad)), Some(&login), None).err(),
            Some(StatusCode::BAD_REQUEST),
            "{bad}"
        );
    }
    let many = vec!["cmd=a"; 65].join("&");
    assert_eq!(
        open(
            &web,
            &format!("{run}?{}", query(&login, &many)),
            Some(&login),
            None
        )
        .err(),
        Some(StatusCode::BAD_REQUEST)
    );

    // The daemon's refusal comes after the upgrade, with its message: the container is stopped.
    let mut t = open(&web, &format!("{run}?{ok}"), Some(&login), None).unwrap();
    let end = t.finish();
    assert!(end["error"].as_str().is_some_and(|e| !e.is_empty()), "{end}");
    let mut t = open(
        &web,
        &format!(
            "/api/containers/idle/console?{}",
            query(&login, "cols=80&rows=24")
        ),
        Some(&login),
        None,
    )
    .unwrap();
    let end = t.finish();
    assert!(end["error"].as_str().unwrap().contains("not running"), "{end}");

    // Both routes are in the OpenAPI document.
    let doc = web.get("/api/openapi.json", None).json();
    for p in ["/api/containers/{id}/run", "/api/containers/{id}/console"] {
        assert!(doc["paths"][p]["get"]["responses"]["101"].is_object(), "{p}");
    }
}

#[test]
fn console_over_a_websocket_types_into_the_guest_detaches_on_close_and_ends_at_stop() {
    let tmp = tempfile::tempdir().unwrap();
    // The guest's init is an interactive shell on its console.
    let (d, _) = running(tmp.path(), "shell", "init_env: \"INIT=exec sh -i\"\n");
    let web = Web::start(&d);
    let login = web.login();
    let path = format!(
        "/api/containers/shell/console?{}",
        query(&login, "cols=80&rows=24")
    );

    let mut t = open(&web, &path, Some(&login), None).unwrap();
    t.send(b"echo hello-$((6*7)) from $(hostname)\r");
    t.expect_output("hello-42 from shell");
    // Closing the WebSocket detaches: the container runs on, and the console is free again.
    t.ws.close(None).unwrap();
    let _ = t.ws.flush();
    let mut t = None;
    assert!(poll(TIMEOUT, || {
        let mut again = open(&web, &path, Some(&login), None).unwrap();
        again.send(b"echo again-$((1+1))\r");
        let deadline = Instant::now() + Duration::from_secs(2);
        again.read_until("output or an end", |a| {
            a.end.is_some()
                || a.closed
                || Instant::now() > deadline
                || String::from_utf8_lossy(&a.out).contains("again-2")
        });
        let ok = String::from_utf8_lossy(&again.out).contains("again-2");
        if ok {
            t = Some(again);
        }
        ok
    }));
    assert_eq!(d.ok(&["state", "shell"]), "RUNNING\n");
    // Ending the guest ends the console: no status, a reason.
    let mut t = t.unwrap();
    t.send(b"exit\r");
    let end = t.finish();
    assert_eq!(end["exit"], Value::Null, "{end}");
    assert!(end["reason"].as_str().unwrap().contains("stopped"), "{end}");
}

/// cmld's side: a client that sends `run` and goes away before the command has started must not
/// leave the command running.
#[test]
fn a_run_whose_client_leaves_at_once_leaves_no_process() {
    let tmp = tempfile::tempdir().unwrap();
    let (d, uuid) = running(tmp.path(), "quick", "");
    let argv = ["sleep".to_owned(), "1000".to_owned()];
    // The window is between the launcher's spawn and the helper's report: the client leaves
    // after 0 to 40 ms.
    for pty in [false, true] {
        for ms in 0..40 {
            let mut c = d.connect();
            c.send(&cml::client::exec::exec_request(&uuid, &argv, pty, None));
            std::thread::sleep(Duration::from_millis(ms));
            drop(c);
        }
    }
    // Give any leaked command time to appear (before the fix of cmld's exec stream, a few of
    // these stayed for good), then none may remain.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        poll(TIMEOUT, || sleepers(&d).is_empty()),
        "commands outlived their clients: {:?}",
        sleepers(&d)
    );
}
