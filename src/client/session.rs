//! One connection to the daemon: framed requests and replies, strictly in order (the protocol has
//! no request ids), plus the output mode, so that `--proto` can echo replies and failures can be
//! reported once in the shape the mode asks for.

use std::io::{Read, Write};

use prost::Message as _;
use serde_json::{Value, json};

use super::{ClientError, OutputMode, format};
use crate::protocol::{
    codec::{encode_frame, read_frame},
    pb::{
        ContainerStatus, ControllerToDaemon, DaemonToController,
        controller_to_daemon::Command as Cmd,
        daemon_to_controller::{Code, Response},
    },
    text,
};

/// A request with only its command set.
pub fn request(command: Cmd) -> ControllerToDaemon {
    ControllerToDaemon {
        command: command as i32,
        ..Default::default()
    }
}

/// A request for one container.
pub fn container_request(command: Cmd, uuid: &str) -> ControllerToDaemon {
    ControllerToDaemon {
        container_uuids: vec![uuid.to_owned()],
        ..request(command)
    }
}

/// A connection plus where results go.
pub struct Session<'o, S> {
    stream: S,
    mode: OutputMode,
    out: &'o mut dyn Write,
    json_written: bool,
}

impl<'o, S: Read + Write> Session<'o, S> {
    /// Wraps a connected stream; results are written to `out` in `mode`.
    pub fn new(stream: S, mode: OutputMode, out: &'o mut dyn Write) -> Self {
        Self {
            stream,
            mode,
            out,
            json_written: false,
        }
    }

    /// The output mode.
    pub fn mode(&self) -> OutputMode {
        self.mode
    }

    /// Whether a JSON document has been written (so an error needs none of its own).
    pub fn json_written(&self) -> bool {
        self.json_written
    }

    /// The underlying stream.
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Sends one request.
    pub fn send(&mut self, msg: &ControllerToDaemon) -> Result<(), ClientError> {
        self.stream
            .write_all(&encode_frame(msg))
            .map_err(ClientError::Send)
    }

    /// Reads the next reply and, with `--proto`, prints it.
    pub fn recv(&mut self) -> Result<DaemonToController, ClientError> {
        let reply = self.recv_quiet()?;
        if self.mode == OutputMode::Proto {
            let printed = text::print(&reply);
            self.write_out(printed.as_bytes())?;
        }
        Ok(reply)
    }

    /// Reads the next reply without echoing it (internal lookups: name resolution, PIN handling).
    pub fn recv_quiet(&mut self) -> Result<DaemonToController, ClientError> {
        let frame = read_frame(&mut self.stream)
            .map_err(ClientError::Receive)?
            .ok_or(ClientError::Closed)?;
        DaemonToController::decode(frame.as_slice()).map_err(ClientError::Decode)
    }

    /// Sends a request and reads its reply (echoed with `--proto`).
    pub fn call(&mut self, msg: &ControllerToDaemon) -> Result<DaemonToController, ClientError> {
        self.send(msg)?;
        self.recv()
    }

    /// Sends a request and reads its reply without echoing it.
    pub fn call_quiet(&mut self, msg: &ControllerToDaemon) -> Result<DaemonToController, ClientError> {
        self.send(msg)?;
        self.recv_quiet()
    }

    /// Resolves a container name or UUID with `GET_CONTAINER_STATUS` (see
    /// [`format::resolve_container`]).
    pub fn resolve(&mut self, arg: &str) -> Result<ContainerStatus, ClientError> {
        let reply = self.call_quiet(&request(Cmd::GetContainerStatus))?;
        self.expect_data(&reply, Code::ContainerStatus)?;
        format::resolve_container(&reply.container_status, arg)
            .cloned()
            .ok_or_else(|| ClientError::NoSuchContainer(arg.to_owned()))
    }

    /// Checks that `reply` carries `want`. A `RESPONSE` instead is the daemon's failure; anything
    /// else is a protocol error.
    pub fn expect_data(&mut self, reply: &DaemonToController, want: Code) -> Result<(), ClientError> {
        if reply.code == want as i32 {
            Ok(())
        } else if reply.code == Code::Response as i32 {
            Err(self.failure(reply))
        } else {
            Err(ClientError::UnexpectedReply {
                expected: want.as_str_name(),
                got: format::reply_name(reply),
            })
        }
    }

    /// Checks that `reply` is a `RESPONSE` with one of the `ok` codes; prints the JSON result.
    pub fn expect_response(
        &mut self,
        reply: &DaemonToController,
        ok: &[Response],
    ) -> Result<(), ClientError> {
        if reply.code != Code::Response as i32 {
            return Err(ClientError::UnexpectedReply {
                expected: "RESPONSE",
                got: format::reply_name(reply),
            });
        }
        match reply.response.and_then(|r| Response::try_from(r).ok()) {
            Some(r) if ok.contains(&r) => self.json(&json!({ "response": r.as_str_name() })),
            _ => Err(self.failure(reply)),
        }
    }

    /// Sends a request whose answer is a plain `RESPONSE` and checks it.
    pub fn call_response(&mut self, msg: &ControllerToDaemon, ok: &[Response]) -> Result<(), ClientError> {
        let reply = self.call(msg)?;
        self.expect_response(&reply, ok)
    }

    /// The error for a failure reply; with `--json` also prints `{"response":…, "error":…}`.
    pub fn failure(&mut self, reply: &DaemonToController) -> ClientError {
        let err = ClientError::Daemon {
            reply: format::reply_name(reply),
            message: reply.error_message.clone(),
        };
        if self.mode == OutputMode::Json {
            let mut doc = json!({ "response": format::reply_name(reply) });
            if let Some(m) = &reply.error_message {
                doc["error"] = Value::String(m.clone());
            }
            if let Err(e) = self.json(&doc) {
                return e;
            }
        }
        err
    }

    /// Writes text to stdout in the human mode (nothing in the other modes).
    pub fn human(&mut self, text: &str) -> Result<(), ClientError> {
        if self.mode == OutputMode::Human {
            self.write_out(text.as_bytes())
        } else {
            Ok(())
        }
    }

    /// Whether output is JSON: a caller builds a document only then (building one per container
    /// of a long list costs more than the rest of `control list`).
    pub fn wants_json(&self) -> bool {
        self.mode == OutputMode::Json
    }

    /// Writes one JSON document to stdout in the JSON mode (nothing in the other modes).
    pub fn json(&mut self, doc: &Value) -> Result<(), ClientError> {
        if self.mode == OutputMode::Json {
            let mut text = doc.to_string();
            text.push('\n');
            self.json_written = true;
            self.write_out(text.as_bytes())
        } else {
            Ok(())
        }
    }

    /// Writes raw bytes to stdout and flushes them (streamed `run` output).
    pub fn write_out(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.out
            .write_all(bytes)
            .and_then(|()| self.out.flush())
            .map_err(ClientError::Output)
    }
}
