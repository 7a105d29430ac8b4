//! Test fixture: a tiny HTTP/1.1 file server on 127.0.0.1, serving a directory (e.g. a GuestOS
//! store) for GET and HEAD, one connection per request (`Connection: close`).
//!
//! `HttpStore::serve_truncating` simulates a server dying mid-download: it announces the full
//! `Content-Length` but closes the connection after a given number of body bytes. The server
//! stops (and its accept thread is joined) when the `HttpStore` is dropped. Files are read at
//! request time, so the server may be started before the store is filled (handy when the URL has
//! to go into the GuestOS config being built).

#![allow(dead_code, clippy::unwrap_used)]

use std::{
    fs::File,
    io::{self, BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    path::{Component, Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

/// A running file server; stops on drop.
#[derive(Debug)]
pub struct HttpStore {
    /// Base URL, `http://127.0.0.1:PORT` (no trailing slash).
    pub url: String,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Clone)]
struct Config {
    root: PathBuf,
    truncate_after: Option<u64>,
}

impl HttpStore {
    /// Serves the files below `root`.
    pub fn serve(root: &Path) -> HttpStore {
        Self::start(root, None)
    }

    /// Like [`HttpStore::serve`], but every response body is cut off after `after_bytes` bytes
    /// (the header still announces the full length).
    pub fn serve_truncating(root: &Path, after_bytes: u64) -> HttpStore {
        Self::start(root, Some(after_bytes))
    }

    /// Paths requested so far (`GET /operatingsystems/...`), in order.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn start(root: &Path, truncate_after: Option<u64>) -> HttpStore {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let config = Config {
            root: root.to_owned(),
            truncate_after,
        };
        let thread = {
            let stop = stop.clone();
            let log = log.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let config = config.clone();
                    let log = log.clone();
                    std::thread::spawn(move || {
                        let _ = handle(conn, &config, &log);
                    });
                }
            })
        };
        HttpStore {
            url: format!("http://{addr}"),
            addr,
            stop,
            log,
            thread: Some(thread),
        }
    }
}

impl Drop for HttpStore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn respond_status(conn: &mut TcpStream, status: &str) -> io::Result<()> {
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
}

/// The file below `root` that `target` names, or `None` for anything that would leave `root`.
fn resolve(root: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let decoded = percent_decode(path)?;
    let rel = Path::new(decoded.trim_start_matches('/'));
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return None;
    }
    Some(root.join(rel))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out).ok()?;
    (!s.contains('\0')).then_some(s)
}

fn handle(mut conn: TcpStream, config: &Config, log: &Mutex<Vec<String>>) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Skip the headers (bounded).
    let mut header_bytes = 0;
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        header_bytes += n;
        if n == 0 || line == "\r\n" || line == "\n" || header_bytes > 64 * 1024 {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return respond_status(&mut conn, "400 Bad Request");
    };
    log.lock().unwrap().push(format!("{method} {target}"));
    if method != "GET" && method != "HEAD" {
        return respond_status(&mut conn, "405 Method Not Allowed");
    }
    let Some(path) = resolve(&config.root, target) else {
        return respond_status(&mut conn, "400 Bad Request");
    };
    let file = match File::open(&path) {
        Ok(f) if f.metadata()?.is_file() => f,
        _ => return respond_status(&mut conn, "404 Not Found"),
    };
    let len = file.metadata()?.len();
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\n\
         Connection: close\r\n\r\n"
    )?;
    if method == "GET" {
        let limit = config.truncate_after.unwrap_or(u64::MAX);
        io::copy(&mut file.take(limit), &mut conn)?;
    }
    conn.flush()?;
    let _ = conn.shutdown(Shutdown::Both);
    Ok(())
}
