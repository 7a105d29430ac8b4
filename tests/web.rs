//! `cml-web` end to end: a real cmld (tests/common), the real `cml-web` binary on a free port,
//! plain HTTP/1.1 over std `TcpStream` (one request per connection), the real `control` binary.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    os::unix::fs::PermissionsExt as _,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use common::{
    Daemon,
    web::{CML_WEB, Login, Web, passwd},
};
use serde_json::Value;

#[test]
fn passwd_writes_a_private_argon2id_hash() {
    let dir = tempfile::tempdir().unwrap();
    let file: PathBuf = dir.path().join("pw");
    let out = passwd(&file, "s3cret pass");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let hash = std::fs::read_to_string(&file).unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(cml::web::auth::verify_password(hash.trim(), "s3cret pass"));
    assert!(!cml::web::auth::verify_password(hash.trim(), "s3cret"));
    // Serving without a password file is a usage error.
    let out = Command::new(CML_WEB).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn sessions_csrf_containers_and_hostile_input() {
    let d = Daemon::start();
    let uuid = d.create_container("box", "");
    let web = Web::start(&d);

    // No session, wrong password: 401 with a JSON error.
    let r = web.get("/api/containers", None);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(!r.error().is_empty());
    let r = web.request(
        "POST",
        "/api/login",
        None,
        false,
        Some(b"{\"password\": \"nope\"}"),
    );
    assert_eq!(r.status, 401);
    assert!(r.header("set-cookie").is_none());

    // Login: an HttpOnly, SameSite=Strict cookie (not Secure on loopback) and a CSRF token.
    let login = web.login();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(login.set_cookie.contains(attr), "{}", login.set_cookie);
    }
    assert!(!login.set_cookie.contains("Secure"), "{}", login.set_cookie);
    assert!(login.cookie.starts_with("cml_session=") && login.cookie.len() == "cml_session=".len() + 64);
    let r = web.get("/api/session", Some(&login));
    assert_eq!(r.json()["csrf_token"].as_str(), Some(login.csrf.as_str()));

    // The list and one container, by name and by UUID.
    let r = web.get("/api/containers", Some(&login));
    assert_eq!(r.status, 200, "{}", r.body);
    let list = r.json();
    let c = list["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "box")
        .unwrap()
        .clone();
    assert_eq!(
        (c["uuid"].as_str(), c["state"].as_str()),
        (Some(uuid.as_str()), Some("STOPPED"))
    );
    assert_eq!(c["guestos"], "busybox");
    let r = web.get("/api/containers/box", Some(&login));
    assert_eq!(r.json()["uuid"].as_str(), Some(uuid.as_str()));
    let r = web.get(&format!("/api/containers/{uuid}"), Some(&login));
    assert_eq!(r.json()["name"], "box");
    let r = web.get("/api/containers/nosuch", Some(&login));
    assert_eq!(r.status, 404);
    assert!(r.error().contains("nosuch"), "{}", r.body);

    // State changes without the CSRF header: 403, nothing done.
    let r = web.request("POST", "/api/containers/box/freeze", Some(&login), false, None);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.error().contains("X-CSRF-Token"));
    let wrong = Login {
        csrf: "0".repeat(64),
        cookie: login.cookie.clone(),
        set_cookie: String::new(),
    };
    assert_eq!(web.post("/api/logout", &wrong, "").status, 403);

    // Hostile input: bad JSON 400, oversized body 413, path tricks 400.
    let r = web.post("/api/containers/box/start", &login, "{\"pin\": ");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.error().contains("invalid JSON"), "{}", r.body);
    let r = web.request("POST", "/api/login", None, false, Some(b"not json"));
    assert_eq!(r.status, 400);
    let big = format!("{{\"pin\": \"{}\"}}", "x".repeat(100 * 1024));
    let r = web.post("/api/containers/box/start", &login, &big);
    assert_eq!(r.status, 413, "{}", r.body);
    for bad in ["..%2F..%2Fetc", "..", "a%20b", ".box"] {
        let r = web.get(&format!("/api/containers/{bad}"), Some(&login));
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert!(r.error().contains("invalid container id"), "{}", r.body);
    }
    // A daemon refusal comes back as JSON: a stopped container cannot be frozen.
    let r = web.post("/api/containers/box/freeze", &login, "");
    assert!(r.status == 409, "{} {}", r.status, r.body);
    assert!(!r.error().is_empty());

    // Logout ends the session.
    let r = web.post("/api/logout", &login, "");
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(web.get("/api/containers", Some(&login)).status, 401);
    assert_eq!(web.get("/api/session", Some(&login)).status, 401);
}

#[test]
fn openapi_document_lists_the_paths() {
    let d = Daemon::start();
    let web = Web::start(&d);
    let r = web.get("/api/openapi.json", None);
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/login",
        "/api/logout",
        "/api/session",
        "/api/containers",
        "/api/containers/{id}",
        "/api/containers/{id}/start",
        "/api/containers/{id}/stop",
        "/api/containers/{id}/freeze",
        "/api/containers/{id}/unfreeze",
        "/api/events",
    ] {
        assert!(paths.contains_key(p), "{p} missing");
    }
    assert!(paths["/api/login"]["post"].is_object());
}

/// Reads from an SSE response until `needle` appears (or fails after `timeout`).
fn read_until(s: &mut TcpStream, seen: &mut String, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        assert!(Instant::now() < deadline, "no {needle:?} in {seen}");
        match s.read(&mut buf) {
            Ok(0) => panic!("stream closed before {needle:?}: {seen}"),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn soft_container_pins_freeze_and_events() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &[]);
    d.create_soft("vault");
    let web = Web::start(&d);
    let login = web.login();

    // Without a PIN: 422; a wrong PIN: 403 with the daemon's message; the right one starts it.
    let r = web.post("/api/containers/vault/start", &login, "");
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.error().contains("PIN"), "{}", r.body);
    let r = web.post("/api/containers/vault/start", &login, "{\"pin\": \"wrong\"}");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.error().contains("wrong PIN"), "{}", r.body);
    let r = web.post("/api/containers/vault/start", &login, "{\"pin\": \"trustme\"}");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "RUNNING", "{}", r.body);
    assert_eq!(
        web.get("/api/containers/vault", Some(&login)).json()["state"],
        "RUNNING"
    );

    // Freeze and thaw.
    let r = web.post("/api/containers/vault/freeze", &login, "");
    assert_eq!(
        (r.status, r.json()["state"].as_str().map(str::to_owned)),
        (200, Some("FROZEN".into())),
        "{}",
        r.body
    );
    let r = web.post("/api/containers/vault/unfreeze", &login, "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "RUNNING");

    // Events: subscribe, stop the container with the real `control`, see STOPPED arrive.
    let mut s = TcpStream::connect(("127.0.0.1", web.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    write!(
        s,
        "GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {}\r\nAccept: text/event-stream\r\n\r\n",
        login.cookie
    )
    .unwrap();
    let mut seen = String::new();
    read_until(&mut s, &mut seen, ": subscribed", Duration::from_secs(10));
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(
        seen.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{seen}"
    );
    let out = d.control(&["stop", "vault", "--key=trustme"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    read_until(
        &mut s,
        &mut seen,
        "\"state\":\"STOPPED\"",
        Duration::from_secs(30),
    );
    let line = seen
        .lines()
        .find(|l| l.starts_with("data: ") && l.contains("\"STOPPED\""))
        .unwrap();
    let event: Value = serde_json::from_str(line.trim_start_matches("data: ")).unwrap();
    assert_eq!(event["name"], "vault");
    assert_eq!(
        web.get("/api/containers/vault", Some(&login)).json()["state"],
        "STOPPED"
    );

    // A logout ends the open event stream (the last chunk arrives), and events need a session.
    let r = web.post("/api/logout", &login, "");
    assert!(r.status < 300, "{}", r.body);
    read_until(&mut s, &mut seen, "\r\n0\r\n\r\n", Duration::from_secs(30));
    assert_eq!(web.get("/api/events", None).status, 401);
    assert_eq!(web.get("/api/events", Some(&login)).status, 401);
}

/// One HTTP/1.1 request over a UNIX socket.
fn unix_request(path: &std::path::Path, req: &str) -> common::web::Resp {
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    common::web::Resp::parse(&raw)
}

#[test]
fn it_listens_on_a_unix_socket_too() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &[]);
    d.create("plain");
    let pw = tmp.path().join("web.passwd");
    assert!(passwd(&pw, common::web::PASSWORD).status.success());
    let sock = tmp.path().join("web.sock");
    // A stale socket file from an earlier run is replaced.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let mut child = Command::new(CML_WEB)
        .arg("--socket")
        .arg(&d.socket)
        .arg("--listen")
        .arg(format!("unix:{}", sock.display()))
        .arg("--password-file")
        .arg(&pw)
        .spawn()
        .unwrap();
    // Ends cml-web also when an assertion fails.
    struct Reap<'a>(&'a mut std::process::Child);
    impl Drop for Reap<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _reap = Reap(&mut child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "cml-web did not listen on {sock:?}");
        std::thread::sleep(Duration::from_millis(50));
    }

    let r = unix_request(
        &sock,
        "GET /api/containers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 401, "{}", r.body);
    let body = format!("{{\"password\": \"{}\"}}", common::web::PASSWORD);
    let r = unix_request(
        &sock,
        &format!(
            "POST /api/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let set_cookie = r.header("set-cookie").unwrap();
    // Local transport: the cookie is HttpOnly and SameSite but not Secure (no TLS on a socket).
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap();
    let r = unix_request(
        &sock,
        &format!("GET /api/containers HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: {cookie}\r\n\r\n"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["containers"][0]["name"], "plain", "{}", r.body);
}

/// Wrong PINs through the web meet the daemon's lockout: after three, even the right PIN is
/// refused (403, with cmld's message) — cml-web neither retries nor hides it.
#[test]
fn repeated_wrong_pins_meet_the_daemons_lockout() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &[]);
    d.create_soft("vault");
    let web = Web::start(&d);
    let login = web.login();
    for _ in 0..3 {
        let r = web.post("/api/containers/vault/start", &login, "{\"pin\": \"wrong\"}");
        assert_eq!(r.status, 403, "{}", r.body);
    }
    let r = web.post("/api/containers/vault/start", &login, "{\"pin\": \"trustme\"}");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.error().contains("locked"), "{}", r.body);
    assert_eq!(d.ok(&["state", "vault"]).trim(), "STOPPED");
    // Neither the PIN nor the password is in any log line of cml-web (it logs at debug level).
    let log = web.log_text();
    assert!(log.contains("login"), "{log}");
    assert!(
        !log.contains("trustme") && !log.contains(common::web::PASSWORD),
        "{log}"
    );
}
