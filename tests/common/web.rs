//! The `cml-web` test harness: the real `cml-web` binary on a free port for one daemon, plain
//! HTTP/1.1 over std `TcpStream` (one request per connection).

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::Daemon;

pub const CML_WEB: &str = env!("CARGO_BIN_EXE_cml-web");
pub const PASSWORD: &str = "correct horse";

/// `cml-web passwd --file PATH` with the password on stdin.
pub fn passwd(file: &Path, password: &str) -> std::process::Output {
    let mut child = Command::new(CML_WEB)
        .args(["passwd", "--file"])
        .arg(file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A running `cml-web` for one daemon; killed on drop.
pub struct Web {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Web {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- cml-web's log ---\n{}", self.log_text());
        }
    }
}

impl Web {
    /// cml-web's log so far (it logs at debug level into its temporary directory).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("cml-web.log")).unwrap_or_default()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn start(d: &Daemon) -> Web {
        Self::start_with(d, &[])
    }

    /// Like [`Web::start`], with extra `cml-web` arguments.
    pub fn start_with(d: &Daemon, extra: &[&std::ffi::OsStr]) -> Web {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("password");
        assert!(passwd(&pw, PASSWORD).status.success());
        // A free port: bind, note, release (the tiny race with other tests is retried below).
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let log = std::fs::File::create(dir.path().join("cml-web.log")).unwrap();
            let mut child = Command::new(CML_WEB)
                .env("RUST_LOG", "debug")
                .arg("--socket")
                .arg(&d.socket)
                .args(["--listen", &format!("127.0.0.1:{port}"), "--password-file"])
                .arg(&pw)
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Web {
                        child,
                        port,
                        _dir: dir,
                    };
                }
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("cml-web did not start");
    }

    /// One request; `cookie` and `csrf` are sent when given.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        auth: Option<&Login>,
        csrf: bool,
        body: Option<&[u8]>,
    ) -> Resp {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
        if let Some(a) = auth {
            head.push_str(&format!("Cookie: {}\r\n", a.cookie));
            if csrf {
                head.push_str(&format!("X-CSRF-Token: {}\r\n", a.csrf));
            }
        }
        let body = body.unwrap_or_default();
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ));
        s.write_all(head.as_bytes()).unwrap();
        // The server may answer (413) before reading all of a large body.
        let _ = s.write_all(body);
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        Resp::parse(&raw)
    }

    pub fn get(&self, path: &str, auth: Option<&Login>) -> Resp {
        self.request("GET", path, auth, false, None)
    }

    pub fn post(&self, path: &str, auth: &Login, body: &str) -> Resp {
        self.request("POST", path, Some(auth), true, Some(body.as_bytes()))
    }

    pub fn login(&self) -> Login {
        let r = self.request(
            "POST",
            "/api/login",
            None,
            false,
            Some(format!("{{\"password\": \"{PASSWORD}\"}}").as_bytes()),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let set_cookie = r.header("set-cookie").unwrap();
        let cookie = set_cookie.split(';').next().unwrap().to_owned();
        Login {
            cookie,
            set_cookie,
            csrf: r.json()["csrf_token"].as_str().unwrap().to_owned(),
        }
    }
}

pub struct Login {
    pub cookie: String,
    pub set_cookie: String,
    pub csrf: String,
}

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn parse(raw: &[u8]) -> Resp {
        let text = String::from_utf8_lossy(raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Resp {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap().to_owned()
    }
}
