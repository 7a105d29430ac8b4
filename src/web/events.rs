//! `GET /api/events`: the daemon's `SUBSCRIBE_EVENTS` stream as Server-Sent Events.
//!
//! Each subscriber gets its own daemon connection, read by a dedicated thread (the client code is
//! blocking). The thread subscribes first and reports the acknowledgement, so a failed
//! subscription becomes an ordinary JSON error and a successful one starts the stream with a
//! `: subscribed` comment; then it forwards one `data:` line of JSON per container event, the same
//! object `control --json events` prints. When the HTTP client goes away the channel closes and
//! the thread ends at the next event (it is parked in a socket read until then).

use std::path::PathBuf;

use actix_web::web::Bytes;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::client::{ClientError, OutputMode, Session, connect, format, session::request};
use crate::protocol::pb::{
    controller_to_daemon::Command as Cmd,
    daemon_to_controller::{Code, Response},
};

/// Events buffered per subscriber before the reader waits for the HTTP client.
const BUFFER: usize = 64;

/// Subscribes to the daemon's events; returns the SSE byte stream once the daemon acknowledged.
pub async fn subscribe(
    socket: PathBuf,
) -> Result<impl futures::Stream<Item = Result<Bytes, actix_web::Error>>, ClientError> {
    let (ack_tx, ack_rx) = oneshot::channel();
    let (tx, rx) = mpsc::channel::<Bytes>(BUFFER);
    std::thread::Builder::new()
        .name("cml-web-events".into())
        .spawn(move || forward(&socket, ack_tx, &tx))
        .map_err(|_| ClientError::Internal("cannot start the event thread"))?;
    ack_rx
        .await
        .map_err(|_| ClientError::Internal("the event thread ended"))??;
    let head =
        futures::stream::once(async { Ok::<_, actix_web::Error>(Bytes::from_static(b": subscribed\n\n")) });
    let events = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, actix_web::Error>(b), rx))
    });
    Ok(futures::StreamExt::chain(head, events))
}

/// The thread: subscribe, acknowledge, forward until either side goes away.
fn forward(
    socket: &std::path::Path,
    ack: oneshot::Sender<Result<(), ClientError>>,
    tx: &mpsc::Sender<Bytes>,
) {
    let mut sink = std::io::sink();
    let stream = match connect(socket) {
        Ok(s) => s,
        Err(e) => {
            let _ = ack.send(Err(e));
            return;
        }
    };
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
    let failed = subscribed.is_err();
    if ack.send(subscribed).is_err() || failed {
        return;
    }
    loop {
        let reply = match session.recv_quiet() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e.report(), "event stream from cmld ended");
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
