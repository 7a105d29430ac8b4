//! `GET /api/events`: the daemon's `SUBSCRIBE_EVENTS` stream as Server-Sent Events.
//!
//! Each subscriber gets its own daemon connection, read by a dedicated thread (the client code is
//! blocking). The thread subscribes first and reports the acknowledgement, so a failed
//! subscription becomes an ordinary JSON error and a successful one starts the stream with a
//! `: subscribed` comment; then it forwards one `data:` line of JSON per container event, the same
//! object `control --json events` prints.
//!
//! The stream lives only as long as the session and the HTTP client: once a second it checks
//! that the session is still open (a logout or the idle expiry ends the stream), every
//! [`KEEP_ALIVE`] it sends a `: keep-alive` comment (proxies and browsers keep an idle stream
//! open, and a vanished client is noticed by the failed write), and when the HTTP response is
//! dropped the daemon connection is shut down, which wakes the thread from its blocking read.

use std::{os::unix::net::UnixStream, path::PathBuf, sync::Arc, time::Duration};

use actix_web::web::Bytes;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::AppState;
use crate::client::{ClientError, OutputMode, Session, connect, format, session::request};
use crate::protocol::pb::{
    controller_to_daemon::Command as Cmd,
    daemon_to_controller::{Code, Response},
};

/// Events buffered per subscriber before the reader waits for the HTTP client.
const BUFFER: usize = 64;
/// How often the session is checked.
const SESSION_CHECK: Duration = Duration::from_secs(1);
/// How often an idle stream gets a comment line.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Shuts the daemon connection down when the HTTP stream is dropped: the reader thread, parked
/// in a blocking read on its own handle of the same socket, sees the end at once.
struct Hangup(UnixStream);

impl Drop for Hangup {
    fn drop(&mut self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

/// The state of one subscriber's stream.
struct Live {
    rx: mpsc::Receiver<Bytes>,
    tick: tokio::time::Interval,
    since_output: Duration,
    state: Arc<AppState>,
    session: String,
    _hangup: Hangup,
}

/// Subscribes to the daemon's events for the session `session`; returns the SSE byte stream once
/// the daemon acknowledged.
pub async fn subscribe(
    state: Arc<AppState>,
    session: String,
) -> Result<impl futures::Stream<Item = Result<Bytes, actix_web::Error>>, ClientError> {
    let (ack_tx, ack_rx) = oneshot::channel();
    let (tx, rx) = mpsc::channel::<Bytes>(BUFFER);
    let socket: PathBuf = state.socket.clone();
    std::thread::Builder::new()
        .name("cml-web-events".into())
        .spawn(move || forward(&socket, ack_tx, &tx))
        .map_err(|_| ClientError::Internal("cannot start the event thread"))?;
    let hangup = ack_rx
        .await
        .map_err(|_| ClientError::Internal("the event thread ended"))??;
    let mut tick = tokio::time::interval(SESSION_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let live = Live {
        rx,
        tick,
        since_output: Duration::ZERO,
        state,
        session,
        _hangup: Hangup(hangup),
    };
    let head =
        futures::stream::once(async { Ok::<_, actix_web::Error>(Bytes::from_static(b": subscribed\n\n")) });
    let events = futures::stream::unfold(live, |mut live| async move {
        let next = next_chunk(&mut live).await?;
        Some((Ok::<_, actix_web::Error>(next), live))
    });
    Ok(futures::StreamExt::chain(head, events))
}

/// The next chunk to send: an event, or a keep-alive comment; `None` ends the stream.
async fn next_chunk(live: &mut Live) -> Option<Bytes> {
    loop {
        tokio::select! {
            event = live.rx.recv() => {
                live.since_output = Duration::ZERO;
                return event;
            }
            _ = live.tick.tick() => {
                if !live.state.auth.alive(&live.session) {
                    return None;
                }
                live.since_output += SESSION_CHECK;
                if live.since_output >= KEEP_ALIVE {
                    live.since_output = Duration::ZERO;
                    return Some(Bytes::from_static(b": keep-alive\n\n"));
                }
            }
        }
    }
}

/// The thread: subscribe, acknowledge (handing back a handle to hang up with), forward until
/// either side goes away.
fn forward(
    socket: &std::path::Path,
    ack: oneshot::Sender<Result<UnixStream, ClientError>>,
    tx: &mpsc::Sender<Bytes>,
) {
    let mut sink = std::io::sink();
    let stream = match connect(socket).and_then(|s| {
        let hangup = s
            .try_clone()
            .map_err(|_| ClientError::Internal("cannot duplicate the daemon connection"))?;
        Ok((s, hangup))
    }) {
        Ok(s) => s,
        Err(e) => {
            let _ = ack.send(Err(e));
            return;
        }
    };
    let (stream, hangup) = stream;
    let mut session = Session::new(stream, OutputMode::Human, &mut sink);
    let subscribed = session
        .call_quiet(&request(Cmd::SubscribeEvents))
        .and_then(|reply| {
            if reply.code == Code::Response as i32 && reply.response == Some(Response::CmdOk as i32) {
                Ok(())
            } else {
                Err(session.failure(&reply))
            }
        });
    let acked = match subscribed {
        Ok(()) => ack.send(Ok(hangup)).is_ok(),
        Err(e) => {
            let _ = ack.send(Err(e));
            false
        }
    };
    if !acked {
        return;
    }
    loop {
        let reply = match session.recv_quiet() {
            Ok(r) => r,
            Err(e) => {
                if !tx.is_closed() {
                    tracing::warn!(error = %e.report(), "event stream from cmld ended");
                }
                return;
            }
        };
        if reply.code != Code::Event as i32 {
            continue;
        }
        for st in &reply.container_status {
            let doc = json!({
                "time": format::utc_now(),
                "name": st.name,
                "uuid": st.uuid,
                "state": format::state_name(st.state),
            });
            if tx.blocking_send(Bytes::from(format!("data: {doc}\n\n"))).is_err() {
                return;
            }
        }
    }
}
