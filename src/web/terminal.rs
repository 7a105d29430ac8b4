//! The terminal WebSockets: `run` (a command in a container, with or without a pty) and `console`
//! (the container's console), bridged to cmld's control socket with the `control` client's
//! protocol pieces ([`crate::client::exec`], [`crate::client::console`]).
//!
//! Before the upgrade (failures are the usual JSON errors): the session cookie (401), the
//! session's CSRF token in the `csrf` query parameter — a browser cannot set headers on a
//! WebSocket — (403), an `Origin`, when present, equal to `http(s)://<Host>` (403: another site's
//! page must not open a shell with the operator's cookie), the query (400: `cols`/`rows` in
//! 1..=[`MAX_SIZE`], at most [`MAX_ARGS`] `cmd` arguments of [`MAX_ARG_LEN`] bytes), the container
//! (404). Then the request goes to cmld on a connection of its own, and the upgrade is answered.
//!
//! After it: client→server binary frames are input bytes, a text frame
//! `{"resize":{"cols":C,"rows":R}}` resizes the pty; server→client binary frames are output bytes.
//! At the end the server sends one text frame — `{"exit":N}` (the command's status),
//! `{"exit":null,"reason":"..."}` (the console ended: the container stopped) or
//! `{"error":"..."}` (the daemon refused, or the connection to it broke) — and closes. A frame
//! over [`FRAME_LIMIT`] ends the session; so does the end of the login session (logout, idle
//! expiry: `{"exit":null,"reason":"the session ended"}`), while typing keeps it alive.
//!
//! Threads: the daemon connection is a blocking std `UnixStream`. A reader thread reads replies
//! (the client's own loops, writing output into a channel); a writer thread writes input frames
//! from a channel; the async task in between moves WebSocket messages. When either side ends, the
//! task shuts the socket down (which wakes the reader, and makes cmld end the command: it kills a
//! command whose client went away, or lets the console go) and drops the writer's channel (which
//! ends the writer), so no thread outlives its WebSocket.

use std::{
    io::{self, Write},
    net::Shutdown,
    os::unix::net::UnixStream,
    path::Path,
};

use actix_web::{
    HttpRequest, HttpResponse,
    http::{StatusCode, header},
    web::{self, Bytes},
};
use actix_ws::AggregatedMessage;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use utoipa::OpenApi;

use super::{
    AppState,
    api::{ApiError, Authed, ErrorBody, container_id},
    auth,
};
use crate::{
    client::{
        ClientError, OutputMode, Session, connect,
        console::{console_output, console_request},
        exec::{INPUT_CHUNK, exec_output, exec_request, input_request, resize_request, split_utf8},
    },
    protocol::{codec::encode_frame, pb::daemon_to_controller::Response},
};

/// The largest WebSocket message accepted from the client (input or a resize).
pub const FRAME_LIMIT: usize = 64 * 1024;
/// The largest terminal dimension accepted (columns or rows).
pub const MAX_SIZE: u16 = 1000;
/// The most `cmd` arguments (the command included).
pub const MAX_ARGS: usize = 64;
/// The longest `cmd` argument, in bytes.
pub const MAX_ARG_LEN: usize = 4096;
/// Messages queued between the threads and the WebSocket task, each way.
const QUEUE: usize = 64;
/// How often an open terminal checks that its session is still open (logout, expiry end it).
const SESSION_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// The terminal routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/containers/{id}/run", web::get().to(run))
        .route("/api/containers/{id}/console", web::get().to(console));
}

/// What the WebSocket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Run,
    Console,
}

/// The validated query of a terminal request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TermQuery {
    /// (rows, cols), if given.
    window: Option<(u16, u16)>,
    pty: bool,
    argv: Vec<String>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, message)
}

/// The `csrf` parameter must be the session's token.
fn check_csrf(query: &str, authed: &Authed) -> Result<(), ApiError> {
    let mut sent = form_urlencoded::parse(query.as_bytes()).filter(|(k, _)| k == "csrf");
    match (sent.next(), sent.next()) {
        (Some((_, token)), None) if auth::tokens_equal(&token, &authed.csrf) => Ok(()),
        _ => Err(forbidden("missing or wrong csrf query parameter")),
    }
}

/// A browser's `Origin`, when sent, must be this server's (`http(s)://` + the `Host` it asked).
fn check_origin(req: &HttpRequest) -> Result<(), ApiError> {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
    let same = match (origin.to_str().ok(), host) {
        (Some(origin), Some(host)) => ["http://", "https://"].iter().any(|scheme| {
            origin
                .strip_prefix(scheme)
                .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
        }),
        _ => false,
    };
    if same {
        Ok(())
    } else {
        Err(forbidden("the Origin of a terminal request must be this server"))
    }
}

fn dimension(name: &str, value: &str) -> Result<u16, ApiError> {
    match value.parse::<u16>() {
        Ok(n) if (1..=MAX_SIZE).contains(&n) => Ok(n),
        _ => Err(bad(format!("{name} must be a number in 1..={MAX_SIZE}"))),
    }
}

fn once<T>(slot: &Option<T>, name: &str) -> Result<(), ApiError> {
    if slot.is_some() {
        Err(bad(format!("{name} given twice")))
    } else {
        Ok(())
    }
}

/// Parses and bounds the query (everything but `csrf`, checked before).
fn parse_query(query: &str, kind: Kind) -> Result<TermQuery, ApiError> {
    let (mut cols, mut rows, mut pty) = (None, None, None);
    let mut argv = Vec::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match (key.as_ref(), kind) {
            ("csrf", _) => {}
            ("cols", _) => {
                once(&cols, "cols")?;
                cols = Some(dimension("cols", &value)?);
            }
            ("rows", _) => {
                once(&rows, "rows")?;
                rows = Some(dimension("rows", &value)?);
            }
            ("pty", Kind::Run) => {
                once(&pty, "pty")?;
                pty = Some(match value.as_ref() {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    _ => return Err(bad("pty must be 1 or 0")),
                });
            }
            ("cmd", Kind::Run) => {
                if argv.len() == MAX_ARGS {
                    return Err(bad(format!("at most {MAX_ARGS} cmd arguments")));
                }
                if value.len() > MAX_ARG_LEN || value.contains('\0') || (argv.is_empty() && value.is_empty())
                {
                    return Err(bad(format!(
                        "a cmd argument must have at most {MAX_ARG_LEN} bytes and no NUL; the command must not be empty"
                    )));
                }
                argv.push(value.into_owned());
            }
            (other, _) => return Err(bad(format!("unknown query parameter {other:?}"))),
        }
    }
    if kind == Kind::Run && argv.is_empty() {
        return Err(bad("no command: give it as cmd=PROGRAM[&cmd=ARG...]"));
    }
    let window = match (rows, cols) {
        (Some(r), Some(c)) => Some((r, c)),
        (None, None) => None,
        _ => return Err(bad("give both cols and rows, or neither")),
    };
    Ok(TermQuery {
        window,
        pty: pty.unwrap_or(false),
        argv,
    })
}

/// Connects to cmld, resolves the container and sends the request; returns the connection, on
/// which the replies follow.
fn open(socket: &Path, id: &str, kind: Kind, q: &TermQuery) -> Result<UnixStream, ClientError> {
    let stream = connect(socket)?;
    let mut sink = io::sink();
    let mut session = Session::new(stream, OutputMode::Human, &mut sink);
    let status = session.resolve(id)?;
    let msg = match kind {
        Kind::Run => exec_request(&status.uuid, &q.argv, q.pty, q.window),
        Kind::Console => console_request(&status.uuid, q.window),
    };
    session.send(&msg)?;
    tracing::info!(container = %status.name, ?kind, "terminal opened");
    session.stream().try_clone().map_err(ClientError::Send)
}

/// What the reader thread passes on.
#[derive(Debug)]
enum FromDaemon {
    /// Output bytes.
    Output(Vec<u8>),
    /// The final text message.
    End(String),
}

/// What the writer thread sends.
#[derive(Debug)]
enum ToDaemon {
    Input(Bytes),
    /// (rows, cols).
    Resize(u16, u16),
}

/// The session's output: each write is one [`FromDaemon::Output`] (blocking while the queue is
/// full, so a slow browser slows the reading, not the memory).
struct ChannelWriter(mpsc::Sender<FromDaemon>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .blocking_send(FromDaemon::Output(buf.to_vec()))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn error_text(e: &ClientError) -> String {
    let message = match e {
        ClientError::Daemon { .. } => e.to_string(),
        other => other.report(),
    };
    json!({ "error": message }).to_string()
}

/// Reads the replies until the end; returns the final text message.
fn read_replies(stream: UnixStream, kind: Kind, tx: &mpsc::Sender<FromDaemon>) -> String {
    let mut out = ChannelWriter(tx.clone());
    let mut session = Session::new(stream, OutputMode::Human, &mut out);
    match kind {
        Kind::Run => match exec_output(&mut session) {
            Ok((_, Some(message))) => json!({ "error": message }).to_string(),
            Ok((code, None)) => json!({ "exit": code }).to_string(),
            Err(e) => error_text(&e),
        },
        Kind::Console => {
            let attached = session
                .recv()
                .and_then(|reply| session.expect_response(&reply, &[Response::CmdOk]));
            match attached.and_then(|()| console_output(&mut session)) {
                Ok(reason) => json!({ "exit": null, "reason": reason }).to_string(),
                Err(e) => error_text(&e),
            }
        }
    }
}

/// Writes input and resizes as `CONTAINER_EXEC_INPUT` frames until the channel closes or a write
/// fails. Input is text on the wire: a character split between two messages is kept whole.
fn write_input(mut stream: UnixStream, mut rx: mpsc::Receiver<ToDaemon>) {
    let mut pending: Vec<u8> = Vec::new();
    while let Some(msg) = rx.blocking_recv() {
        let mut frames = Vec::new();
        match msg {
            ToDaemon::Input(bytes) => {
                for piece in bytes.chunks(INPUT_CHUNK) {
                    pending.extend_from_slice(piece);
                    let (text, rest) = split_utf8(&pending);
                    pending = rest;
                    if !text.is_empty() {
                        frames.extend_from_slice(&encode_frame(&input_request(text)));
                    }
                }
            }
            ToDaemon::Resize(rows, cols) => frames = encode_frame(&resize_request((rows, cols))),
        }
        if !frames.is_empty() && stream.write_all(&frames).is_err() {
            return;
        }
    }
}

/// `{"resize":{"cols":C,"rows":R}}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Control {
    resize: Resize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Resize {
    cols: u16,
    rows: u16,
}

fn parse_control(text: &str) -> Result<(u16, u16), String> {
    let c: Control = serde_json::from_str(text).map_err(|e| format!("invalid control message: {e}"))?;
    let ok = |n: u16| (1..=MAX_SIZE).contains(&n);
    if ok(c.resize.cols) && ok(c.resize.rows) {
        Ok((c.resize.rows, c.resize.cols))
    } else {
        Err(format!("cols and rows must be in 1..={MAX_SIZE}"))
    }
}

/// The login session a terminal belongs to: the terminal ends with it (logout, idle expiry), and
/// typing in it counts as use of the session.
struct Owner {
    state: web::Data<AppState>,
    token: String,
    /// The container as the request named it (for the log).
    container: String,
}

/// Moves messages between the WebSocket and the threads until either side ends; then ends the
/// threads (see the module header) and closes the WebSocket.
async fn bridge(
    owner: Owner,
    mut ws: actix_ws::Session,
    msgs: actix_ws::MessageStream,
    mut from: mpsc::Receiver<FromDaemon>,
    to: mpsc::Sender<ToDaemon>,
    daemon: UnixStream,
) {
    let mut msgs = msgs
        .max_frame_size(FRAME_LIMIT)
        .aggregate_continuations()
        .max_continuation_size(FRAME_LIMIT);
    let mut tick = tokio::time::interval(SESSION_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut typed = false;
    let end: Option<String> = loop {
        tokio::select! {
            _ = tick.tick() => {
                let live = if std::mem::take(&mut typed) {
                    owner.state.auth.touch(&owner.token).is_some()
                } else {
                    owner.state.auth.alive(&owner.token)
                };
                if !live {
                    break Some(json!({ "exit": null, "reason": "the session ended" }).to_string());
                }
            }
            m = from.recv() => match m {
                Some(FromDaemon::Output(bytes)) => {
                    if ws.binary(bytes).await.is_err() {
                        break None;
                    }
                }
                Some(FromDaemon::End(text)) => break Some(text),
                None => break Some(json!({ "error": "the connection to cmld ended" }).to_string()),
            },
            m = msgs.recv() => match m {
                Some(Ok(AggregatedMessage::Binary(bytes))) => {
                    typed = true;
                    // The writer is gone only when the daemon connection broke: the reader
                    // reports that.
                    let _ = to.send(ToDaemon::Input(bytes)).await;
                }
                Some(Ok(AggregatedMessage::Text(text))) => match parse_control(&text) {
                    Ok((rows, cols)) => {
                        let _ = to.send(ToDaemon::Resize(rows, cols)).await;
                    }
                    Err(e) => break Some(json!({ "error": e }).to_string()),
                },
                Some(Ok(AggregatedMessage::Ping(p))) => {
                    if ws.pong(&p).await.is_err() {
                        break None;
                    }
                }
                Some(Ok(AggregatedMessage::Pong(_))) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "terminal WebSocket protocol error");
                    break Some(json!({ "error": format!("WebSocket: {e}") }).to_string());
                }
                Some(Ok(AggregatedMessage::Close(_))) | None => break None,
            },
        }
    };
    // cmld sees the connection close (it ends the command, or frees the console); the reader
    // wakes up; the writer ends when `to` is dropped.
    let _ = daemon.shutdown(Shutdown::Both);
    drop(to);
    if let Some(text) = end {
        let _ = ws.text(text).await;
    }
    let _ = ws.close(None).await;
    tracing::info!(container = %owner.container, "terminal closed");
}

async fn open_terminal(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    authed: Authed,
    id: &str,
    kind: Kind,
) -> Result<HttpResponse, ApiError> {
    check_csrf(req.query_string(), &authed)?;
    check_origin(&req)?;
    let query = parse_query(req.query_string(), kind)?;
    let id = container_id(id)?.to_owned();
    let container = id.clone();
    let (response, ws, msgs) =
        actix_ws::handle(&req, body).map_err(|e| bad(format!("not a WebSocket request: {e}")))?;
    let socket = state.socket.clone();
    let stream = web::block(move || open(&socket, &id, kind, &query))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the worker thread failed"))?
        .map_err(ApiError::from)?;
    let clone = |s: &UnixStream| {
        s.try_clone()
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("socket: {e}")))
    };
    let (writer, control) = (clone(&stream)?, clone(&stream)?);
    let (out_tx, out_rx) = mpsc::channel(QUEUE);
    let (in_tx, in_rx) = mpsc::channel(QUEUE);
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(f)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("thread: {e}")))
    };
    spawn(
        "term-read",
        Box::new(move || {
            let end = read_replies(stream, kind, &out_tx);
            let _ = out_tx.blocking_send(FromDaemon::End(end));
        }),
    )?;
    if let Err(e) = spawn("term-write", Box::new(move || write_input(writer, in_rx))) {
        // Wakes the reader thread just spawned.
        let _ = control.shutdown(Shutdown::Both);
        return Err(e);
    }
    let owner = Owner {
        state,
        token: authed.token,
        container,
    };
    actix_web::rt::spawn(bridge(owner, ws, msgs, out_rx, in_tx, control));
    Ok(response)
}

/// Runs a command in a container over a WebSocket.
///
/// Query: `csrf` (the session's CSRF token: a browser cannot set headers on a WebSocket),
/// `cmd` (the program, then one `cmd` per argument; at most 64, each at most 4096 bytes), `pty`
/// (`1` for a terminal), `cols` and `rows` (the terminal's size, 1..=1000). An `Origin`, when
/// sent, must be this server's. After the upgrade: binary frames from the client are input bytes;
/// a text frame `{"resize":{"cols":C,"rows":R}}` resizes the pty; binary frames from the server
/// are output bytes. At the end the server sends one text frame, `{"exit":N}` (the exit status)
/// or `{"error":"..."}` (the daemon refused, with its message), and closes. Closing the
/// WebSocket ends the command. Messages over 64 KiB end the session.
#[utoipa::path(get, path = "/api/containers/{id}/run",
    params(("id" = String, Path, description = "Name or UUID"),
           ("csrf" = String, Query, description = "The session's CSRF token"),
           ("cmd" = Vec<String>, Query, description = "The program and its arguments, one `cmd` each"),
           ("pty" = Option<u8>, Query, description = "1: run on a pty"),
           ("cols" = Option<u16>, Query, description = "Terminal columns, 1..=1000"),
           ("rows" = Option<u16>, Query, description = "Terminal rows, 1..=1000")),
    responses((status = 101, description = "Switching to the WebSocket protocol described above"),
              (status = 400, description = "Bad query or not a WebSocket request", body = ErrorBody),
              (status = 401, body = ErrorBody),
              (status = 403, description = "Wrong CSRF token or a foreign Origin", body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 502, body = ErrorBody)))]
async fn run(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    authed: Authed,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    open_terminal(req, body, state, authed, &id, Kind::Run).await
}

/// Attaches to a container's console over a WebSocket.
///
/// Query: `csrf`, `cols`, `rows` as for `run`. The protocol is `run`'s; the end is
/// `{"exit":null,"reason":"..."}` when the console ends (the container stopped) or
/// `{"error":"..."}` (e.g. not running, or someone else is attached). Closing the WebSocket
/// detaches; the container keeps running.
#[utoipa::path(get, path = "/api/containers/{id}/console",
    params(("id" = String, Path, description = "Name or UUID"),
           ("csrf" = String, Query, description = "The session's CSRF token"),
           ("cols" = Option<u16>, Query, description = "Terminal columns, 1..=1000"),
           ("rows" = Option<u16>, Query, description = "Terminal rows, 1..=1000")),
    responses((status = 101, description = "Switching to the WebSocket protocol (see run)"),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 502, body = ErrorBody)))]
async fn console(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    authed: Authed,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    open_terminal(req, body, state, authed, &id, Kind::Console).await
}

/// The OpenAPI paths of the terminal routes (merged into [`super::api::ApiDoc`]'s document).
#[derive(OpenApi)]
#[openapi(paths(run, console))]
pub struct TerminalDoc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_bounded() {
        let q = parse_query(
            "csrf=x&cols=80&rows=24&pty=1&cmd=%2Fbin%2Fsh&cmd=-c&cmd=a+b",
            Kind::Run,
        )
        .unwrap();
        assert_eq!(
            q,
            TermQuery {
                window: Some((24, 80)),
                pty: true,
                argv: vec!["/bin/sh".into(), "-c".into(), "a b".into()],
            }
        );
        assert!(parse_query("cols=80&rows=24", Kind::Console).is_ok());
        let long = format!("cmd={}", "x".repeat(MAX_ARG_LEN + 1));
        let many = vec!["cmd=a"; MAX_ARGS + 1].join("&");
        for bad in [
            "cols=0&rows=24&cmd=sh",
            "cols=1001&rows=24&cmd=sh",
            "cols=x&rows=24&cmd=sh",
            "cols=80&cmd=sh",
            "cols=80&cols=81&rows=2&cmd=sh",
            "pty=yes&cmd=sh",
            "cols=80&rows=24",
            "cmd=",
            "cmd=a%00b",
            "cmd=sh&evil=1",
            long.as_str(),
            many.as_str(),
        ] {
            assert!(parse_query(bad, Kind::Run).is_err(), "{bad}");
        }
        assert!(parse_query("cmd=sh", Kind::Console).is_err());
    }

    #[test]
    fn control_messages_are_resizes_in_range() {
        assert_eq!(
            parse_control(r#"{"resize":{"cols":100,"rows":30}}"#),
            Ok((30, 100))
        );
        for bad in [
            r#"{"resize":{"cols":0,"rows":30}}"#,
            r#"{"resize":{"cols":100}}"#,
            r#"{"other":1}"#,
            "nonsense",
        ] {
            assert!(parse_control(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn input_is_framed_as_text_keeping_split_characters() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let (tx, rx) = mpsc::channel(4);
        let t = std::thread::spawn(move || write_input(a, rx));
        let euro = "€".as_bytes();
        tx.blocking_send(ToDaemon::Input(Bytes::from(vec![b'a', euro[0]])))
            .unwrap();
        tx.blocking_send(ToDaemon::Input(Bytes::copy_from_slice(&euro[1..])))
            .unwrap();
        tx.blocking_send(ToDaemon::Resize(30, 100)).unwrap();
        drop(tx);
        t.join().unwrap();
        let mut got = Vec::new();
        while let Some(frame) = crate::protocol::codec::read_frame(&mut b).unwrap() {
            let msg = <crate::protocol::pb::ControllerToDaemon as prost::Message>::decode(frame.as_slice())
                .unwrap();
            got.push((msg.exec_input, msg.exec_window.map(|w| (w.rows, w.cols))));
        }
        assert_eq!(
            got,
            vec![
                (Some("a".to_owned()), None),
                (Some("€".to_owned()), None),
                (None, Some((Some(30), Some(100)))),
            ]
        );
    }
}
