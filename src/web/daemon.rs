//! Blocking calls to cmld through the `control` client code: one connection per call, run on a
//! blocking thread by the handlers. Results come back as typed views; failures as the client's
//! [`ClientError`], which [`super::api`] maps to an HTTP status. Each call is counted, with its
//! outcome and duration, in [`super::metrics`] under the name of the operation (`list`, `start`,
//! `guestos_push`…).

use std::{io, os::unix::net::UnixStream, path::Path, time::Instant};

use serde::Serialize;
use utoipa::ToSchema;

use super::metrics;
use crate::client::{
    ClientError, OutputMode, PinSource, Session,
    cli::Command,
    commands, connect, console, format,
    session::{container_request, request},
};
use crate::protocol::{
    pb::{
        ContainerStatus, ControllerToDaemon, DaemonToController, GuestOsConfig,
        controller_to_daemon::Command as Cmd,
        daemon_to_controller::{Code, Response},
    },
    text,
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
    /// Memory charged to its cgroup, in bytes (only while it runs).
    pub memory_bytes: Option<u64>,
    /// CPU time used by the current run, in seconds (only while it runs).
    pub cpu_seconds: Option<f64>,
    /// Its tasks (only while it runs).
    pub pids: Option<u32>,
    /// The config's colour, `0xRRGGBBAA`.
    pub color: Option<u32>,
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
            memory_bytes: s.memory_bytes,
            cpu_seconds: s.cpu_usec.map(|us| us as f64 / 1e6),
            pids: s.pids,
            color: s.color,
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

impl Action {
    /// Its name, as in the routes and the metrics.
    pub fn name(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Freeze => "freeze",
            Action::Unfreeze => "unfreeze",
        }
    }
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

type Conn<'o> = Session<'o, UnixStream>;

/// Opens a connection, runs `f` over it and counts it in the metrics as `command` (see
/// [`metrics`]).
fn session_run<T>(
    socket: &Path,
    command: &'static str,
    f: impl FnOnce(&mut Conn<'_>) -> Result<T, ClientError>,
) -> Result<T, ClientError> {
    // Human mode with a sink: the client code prints nothing we need; results come from replies.
    session_into(socket, command, &mut io::sink(), f)
}

/// Like [`session_run`], with what the client code prints (in the human mode) going to `out`.
fn session_into<T>(
    socket: &Path,
    command: &'static str,
    out: &mut dyn io::Write,
    f: impl FnOnce(&mut Conn<'_>) -> Result<T, ClientError>,
) -> Result<T, ClientError> {
    let began = Instant::now();
    let result = connect(socket).and_then(|stream| {
        let mut session = Session::new(stream, OutputMode::Human, out);
        f(&mut session)
    });
    metrics::global().daemon_request(command, outcome(result.as_ref().err()), began.elapsed());
    result
}

/// How a daemon call ended, for the metrics.
fn outcome(error: Option<&ClientError>) -> metrics::Outcome {
    match error {
        None => metrics::Outcome::Ok,
        Some(ClientError::Daemon { .. } | ClientError::NoSuchContainer(_) | ClientError::ReadPin(_)) => {
            metrics::Outcome::Refused
        }
        Some(_) => metrics::Outcome::Error,
    }
}

/// A daemon failure that is not a reply of the daemon's (an answer without what it promised).
fn refused(reply: &DaemonToController, message: &str) -> ClientError {
    ClientError::Daemon {
        reply: format::reply_name(reply),
        message: Some(reply.error_message.clone().unwrap_or_else(|| message.to_owned())),
    }
}

/// All containers.
pub fn list(socket: &Path) -> Result<Vec<ContainerView>, ClientError> {
    statuses(socket).map(|s| s.iter().map(ContainerView::from).collect())
}

/// Every container's raw status (for `/metrics`).
pub fn statuses(socket: &Path) -> Result<Vec<ContainerStatus>, ClientError> {
    session_run(socket, "list", |session| {
        let reply = session.call_quiet(&request(Cmd::GetContainerStatus))?;
        session.expect_data(&reply, Code::ContainerStatus)?;
        Ok(reply.container_status)
    })
}

/// One container by name or UUID.
pub fn get(socket: &Path, id: &str) -> Result<ContainerView, ClientError> {
    session_run(socket, "get", |session| {
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
    session_run(socket, action.name(), |session| {
        commands::dispatch(session, &command, &mut RequestPin)?;
        session.resolve(id).map(|s| ContainerView::from(&s))
    })
}

/// A config upload: the text, and optionally its signature and the signer's certificate.
#[derive(Debug, Clone, Default)]
pub struct Upload {
    /// The config (protobuf text).
    pub config: Vec<u8>,
    /// Its signature.
    pub signature: Option<Vec<u8>>,
    /// The signer's certificate (PEM); sent only with a signature, as `control` does.
    pub certificate: Option<Vec<u8>>,
}

impl Upload {
    fn container_request(self, msg: ControllerToDaemon) -> ControllerToDaemon {
        let signed = self.signature.is_some();
        ControllerToDaemon {
            container_config_file: Some(self.config),
            container_config_signature: self.signature,
            container_config_certificate: self.certificate.filter(|_| signed),
            ..msg
        }
    }
}

/// The `CONTAINER_CONFIG` reply of create / update_config / config: the UUID and the config as
/// protobuf text. Upstream's daemon answers a failure with an empty `CONTAINER_CONFIG`.
fn config_reply(session: &mut Conn<'_>, reply: &DaemonToController) -> Result<(String, String), ClientError> {
    session.expect_data(reply, Code::ContainerConfig)?;
    let Some(config) = reply.container_configs.first() else {
        return Err(session.failure(reply));
    };
    let uuid = reply.container_uuids.first().cloned().unwrap_or_default();
    Ok((uuid, text::print(config)))
}

/// Creates a container; returns its status.
pub fn create(socket: &Path, upload: Upload) -> Result<ContainerView, ClientError> {
    session_run(socket, "create", |session| {
        let reply = session.call_quiet(&upload.container_request(request(Cmd::CreateContainer)))?;
        let (uuid, _) = config_reply(session, &reply)?;
        session.resolve(&uuid).map(|s| ContainerView::from(&s))
    })
}

/// A container's config as protobuf text.
pub fn config(socket: &Path, id: &str) -> Result<String, ClientError> {
    session_run(socket, "config", |session| {
        let status = session.resolve(id)?;
        let reply = session.call_quiet(&container_request(Cmd::GetContainerConfig, &status.uuid))?;
        config_reply(session, &reply).map(|(_, text)| text)
    })
}

/// Replaces a container's config (in effect at its next start); returns its status.
pub fn update_config(socket: &Path, id: &str, upload: Upload) -> Result<ContainerView, ClientError> {
    session_run(socket, "update_config", |session| {
        let status = session.resolve(id)?;
        let msg = upload.container_request(container_request(Cmd::ContainerUpdateConfig, &status.uuid));
        let reply = session.call_quiet(&msg)?;
        config_reply(session, &reply)?;
        session.resolve(&status.uuid).map(|s| ContainerView::from(&s))
    })
}

/// A command that names one container and is answered `CMD_OK`.
fn simple(socket: &Path, label: &'static str, id: &str, cmd: Cmd) -> Result<ContainerStatus, ClientError> {
    session_run(socket, label, |session| {
        let status = session.resolve(id)?;
        let reply = session.call_quiet(&container_request(cmd, &status.uuid))?;
        session.expect_response(&reply, &[Response::CmdOk])?;
        Ok(status)
    })
}

/// Removes a container and its data.
pub fn remove(socket: &Path, id: &str) -> Result<(), ClientError> {
    simple(socket, "remove", id, Cmd::RemoveContainer).map(drop)
}

/// Deletes a container's data and key (config, name and UUID stay); returns its status.
pub fn wipe(socket: &Path, id: &str) -> Result<ContainerView, ClientError> {
    let status = simple(socket, "wipe", id, Cmd::ContainerWipe)?;
    get(socket, &status.uuid)
}

/// What a container's console printed (the last `tail` lines), as `control logs` prints it.
pub fn logs(socket: &Path, id: &str, tail: Option<u32>) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::new();
    session_into(socket, "logs", &mut out, |session| {
        console::logs(session, id, tail, false).map(drop)
    })?;
    Ok(out)
}

/// Changes the token PIN (through container `id`, like `control change_pin`).
pub fn change_pin(socket: &Path, id: &str, pin: String, new_pin: String) -> Result<(), ClientError> {
    session_run(socket, "change_pin", |session| {
        let status = session.resolve(id)?;
        let msg = ControllerToDaemon {
            device_pin: Some(pin),
            device_newpin: Some(new_pin),
            ..container_request(Cmd::ContainerChangeTokenPin, &status.uuid)
        };
        let reply = session.call_quiet(&msg)?;
        session.expect_response(&reply, &[Response::ContainerChangePinSuccessful])
    })
}

/// One installed GuestOS version, as `control list_guestos` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GuestOsView {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: u64,
    /// The hardware it is built for.
    pub hardware: String,
    /// The English description.
    pub description: String,
}

impl From<&GuestOsConfig> for GuestOsView {
    fn from(g: &GuestOsConfig) -> Self {
        Self {
            name: g.name.clone(),
            version: g.version,
            hardware: g.hardware.clone(),
            description: g.description.en.clone(),
        }
    }
}

/// The installed GuestOS versions.
pub fn guestos_list(socket: &Path) -> Result<Vec<GuestOsView>, ClientError> {
    session_run(socket, "guestos_list", |session| {
        let reply = session.call_quiet(&request(Cmd::ListGuestosConfigs))?;
        session.expect_data(&reply, Code::GuestosConfigsList)?;
        Ok(reply.guestos_configs.iter().map(GuestOsView::from).collect())
    })
}

/// Installs a GuestOS from its signed config (the daemon fetches the images itself); waits until
/// the installation has ended.
pub fn guestos_push(
    socket: &Path,
    config: Vec<u8>,
    signature: Vec<u8>,
    certificate: Vec<u8>,
) -> Result<(), ClientError> {
    session_run(socket, "guestos_push", |session| {
        let msg = ControllerToDaemon {
            guestos_config_file: Some(config),
            guestos_config_signature: Some(signature),
            guestos_config_certificate: Some(certificate),
            ..request(Cmd::PushGuestosConfig)
        };
        let mut reply = session.call_quiet(&msg)?;
        // STARTED repeats (with progress) while the daemon downloads; the next other reply is the end.
        while reply.code == Code::Response as i32
            && reply.response == Some(Response::GuestosMgrInstallStarted as i32)
        {
            reply = session.recv_quiet()?;
        }
        session.expect_response(&reply, &[Response::GuestosMgrInstallCompleted])
    })
}

/// Removes a GuestOS (all its versions).
pub fn guestos_remove(socket: &Path, name: &str) -> Result<(), ClientError> {
    session_run(socket, "guestos_remove", |session| {
        let msg = ControllerToDaemon {
            guestos_name: Some(name.to_owned()),
            ..request(Cmd::RemoveGuestos)
        };
        let reply = session.call_quiet(&msg)?;
        session.expect_response(&reply, &[Response::CmdOk])
    })
}

/// Registers a CA certificate for GuestOS signatures.
pub fn ca_register(socket: &Path, certificate: Vec<u8>) -> Result<(), ClientError> {
    session_run(socket, "ca_register", |session| {
        let msg = ControllerToDaemon {
            guestos_rootcert: Some(certificate),
            ..request(Cmd::RegisterNewca)
        };
        let reply = session.call_quiet(&msg)?;
        session.expect_response(&reply, &[Response::GuestosMgrRegisterCaOk])
    })
}

/// The device's disk and memory figures.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceStatsView {
    /// Size of the system file system, bytes.
    pub disk_system: u64,
    /// Used of it.
    pub disk_system_used: u64,
    /// Size of the containers' file system, bytes.
    pub disk_containers: Option<u64>,
    /// Used of it.
    pub disk_containers_used: Option<u64>,
    /// Total memory, bytes.
    pub mem_total: Option<u64>,
    /// Available memory, bytes.
    pub mem_available: Option<u64>,
}

/// What the daemon tells about the device.
#[derive(Debug, Clone)]
pub struct DeviceState {
    /// Whether it is provisioned.
    pub provisioned: bool,
    /// Hosted or device mode (`None` from a daemon that does not say).
    pub hosted: Option<bool>,
    /// Its figures (`None` where the daemon does not give them: a provisioned device refuses
    /// `GET_DEVICE_STATS`).
    pub stats: Option<DeviceStatsView>,
}

/// Whether the device is provisioned, its mode and its figures.
pub fn device(socket: &Path) -> Result<DeviceState, ClientError> {
    session_run(socket, "device", |session| {
        let reply = session.call_quiet(&request(Cmd::GetProvisioned))?;
        session.expect_data(&reply, Code::DeviceProvisionedState)?;
        let provisioned = reply.device_is_provisioned.unwrap_or(false);
        let hosted = reply.device_hosted;
        let reply = session.call_quiet(&request(Cmd::GetDeviceStats))?;
        let stats = if reply.code == Code::DeviceStats as i32 {
            reply.device_stats.map(|s| DeviceStatsView {
                disk_system: s.disk_system,
                disk_system_used: s.disk_system_used,
                disk_containers: s.disk_containers,
                disk_containers_used: s.disk_containers_used,
                mem_total: s.mem_total,
                mem_available: s.mem_available,
            })
        } else if reply.code == Code::Response as i32 {
            None
        } else {
            return Err(ClientError::UnexpectedReply {
                expected: "DEVICE_STATS",
                got: format::reply_name(&reply),
            });
        };
        Ok(DeviceState {
            provisioned,
            hosted,
            stats,
        })
    })
}

/// The device's certificate signing request (PEM).
pub fn csr(socket: &Path) -> Result<Vec<u8>, ClientError> {
    session_run(socket, "csr", |session| {
        let reply = session.call_quiet(&request(Cmd::PullDeviceCsr))?;
        session.expect_data(&reply, Code::DeviceCsr)?;
        reply
            .device_csr
            .clone()
            .ok_or_else(|| refused(&reply, "no CSR returned: the device is not in provisioning mode"))
    })
}

/// Installs the device certificate (PEM).
pub fn push_cert(socket: &Path, certificate: Vec<u8>) -> Result<(), ClientError> {
    session_run(socket, "cert_upload", |session| {
        let msg = ControllerToDaemon {
            device_cert: Some(certificate),
            ..request(Cmd::PushDeviceCert)
        };
        let reply = session.call_quiet(&msg)?;
        session.expect_response(&reply, &[Response::DeviceCertOk])
    })
}

/// Puts the device into provisioned mode (for good).
pub fn set_provisioned(socket: &Path) -> Result<(), ClientError> {
    session_run(socket, "set_provisioned", |session| {
        let reply = session.call_quiet(&request(Cmd::SetProvisioned))?;
        session.expect_response(&reply, &[Response::CmdOk])
    })
}
