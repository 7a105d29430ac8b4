//! Blocking calls to cmld through the `control` client code: one connection per call, run on a
//! blocking thread by the handlers. Results come back as typed views; failures as the client's
//! [`ClientError`], which [`super::api`] maps to an HTTP status.

use std::{io, path::Path};

use serde::Serialize;
use utoipa::ToSchema;

use crate::client::{
    ClientError, OutputMode, PinSource, Session, cli::Command, commands, connect, format, session::request,
};
use crate::protocol::pb::{
    ContainerStatus, controller_to_daemon::Command as Cmd, daemon_to_controller::Code,
};

/// One container as the API shows it (the fields of `control --json state`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ContainerView {
    /// The container's name.
    pub name: String,
    /// Its UUID.
    pub uuid: String,
    /// Its state (`STOPPED`, `STARTING`, `RUNNING`, `FROZEN`…).
    pub state: String,
    /// The GuestOS name.
    pub guestos: String,
    /// Seconds since start, 0 when not running.
    pub uptime: u64,
    /// Creation time, epoch seconds.
    pub created: u64,
    /// The container type.
    #[serde(rename = "type")]
    pub container_type: String,
    /// The trust level.
    pub trust_level: String,
    /// The volume encryption mode.
    pub cryptfs_mode: String,
    /// The token type (`NONE`, `SOFT`…); a `SOFT` container needs a PIN to start.
    pub token_type: Option<String>,
    /// The init's PID on the host, 0 if none.
    pub pid: Option<i32>,
    /// How often it was restarted.
    pub restart_count: Option<u32>,
    /// Whether a stored config waits for the next start.
    pub update_pending: Option<bool>,
}

impl From<&ContainerStatus> for ContainerView {
    fn from(s: &ContainerStatus) -> Self {
        Self {
            name: s.name.clone(),
            uuid: s.uuid.clone(),
            state: format::state_name(s.state),
            guestos: s.guestos.clone(),
            uptime: s.uptime,
            created: s.created,
            container_type: format::container_type_name(s.r#type),
            trust_level: format::trust_name(s.trust_level),
            cryptfs_mode: format::cryptfs_name(s.cryptfs_mode),
            token_type: s.token_type.map(format::token_type_name),
            pid: s.pid,
            restart_count: s.restart_count,
            update_pending: s.update_pending,
        }
    }
}

/// A state-changing action on one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start (with the PIN of a SOFT container).
    Start,
    /// Stop (with the PIN of a SOFT container).
    Stop,
    /// Freeze.
    Freeze,
    /// Thaw.
    Unfreeze,
}

/// The PIN of a request: given or not, never read from a terminal.
struct RequestPin;

impl PinSource for RequestPin {
    fn read_pin(&mut self, _prompt: &str) -> Result<String, ClientError> {
        Err(ClientError::ReadPin(io::Error::new(
            io::ErrorKind::InvalidInput,
            "this container needs a PIN (send {\"pin\": \"...\"})",
        )))
    }
}

fn session_run<T>(
    socket: &Path,
    f: impl FnOnce(&mut Session<'_, std::os::unix::net::UnixStream>) -> Result<T, ClientError>,
) -> Result<T, ClientError> {
    let stream = connect(socket)?;
    // Human mode with a sink: the client code prints nothing we need; results come from replies.
    let mut sink = io::sink();
    let mut session = Session::new(stream, OutputMode::Human, &mut sink);
    f(&mut session)
}

/// All containers.
pub fn list(socket: &Path) -> Result<Vec<ContainerView>, ClientError> {
    session_run(socket, |session| {
        let reply = session.call_quiet(&request(Cmd::GetContainerStatus))?;
        session.expect_data(&reply, Code::ContainerStatus)?;
        Ok(reply.container_status.iter().map(ContainerView::from).collect())
    })
}

/// One container by name or UUID.
pub fn get(socket: &Path, id: &str) -> Result<ContainerView, ClientError> {
    session_run(socket, |session| {
        session.resolve(id).map(|s| ContainerView::from(&s))
    })
}

/// Runs `action` on container `id`, exactly as `control` does (PIN handling included); returns the
/// container's status afterwards.
pub fn act(
    socket: &Path,
    id: &str,
    action: Action,
    pin: Option<String>,
) -> Result<ContainerView, ClientError> {
    let container = id.to_owned();
    let command = match action {
        Action::Start => Command::Start {
            container,
            key: pin,
            setup: false,
        },
        Action::Stop => Command::Stop { container, key: pin },
        Action::Freeze => Command::Freeze { container },
        Action::Unfreeze => Command::Unfreeze { container },
    };
    session_run(socket, |session| {
        commands::dispatch(session, &command, &mut RequestPin)?;
        session.resolve(id).map(|s| ContainerView::from(&s))
    })
}
