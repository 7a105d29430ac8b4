//! The acceptor: listens on the control socket and starts one [`Session`] per connection, and owns
//! the provisioned-mode command policy ([`allowed_when_provisioned`]) that every session applies to
//! every request before anything else is done with it.

use actix::{Actor, Context, StreamHandler};
use tokio::net::{UnixListener, UnixStream};
use tracing::warn;

use super::{Services, session::Session};
use crate::protocol::pb::{DeviceConfig, controller_to_daemon::Command as WireCommand};

/// The control-socket acceptor.
pub struct Acceptor {
    services: Services,
}

impl Acceptor {
    /// Starts accepting on `listener`.
    pub fn start(listener: UnixListener, services: Services) -> actix::Addr<Self> {
        Acceptor::create(move |ctx| {
            let incoming = futures::stream::unfold(listener, |l| async move {
                Some((l.accept().await.map(|(s, _)| s), l))
            });
            actix::AsyncContext::add_stream(ctx, incoming);
            Acceptor { services }
        })
    }
}

impl Actor for Acceptor {
    type Context = Context<Self>;
}

impl StreamHandler<std::io::Result<UnixStream>> for Acceptor {
    fn handle(&mut self, item: std::io::Result<UnixStream>, _: &mut Context<Self>) {
        match item {
            Ok(stream) => match peer_refusal(&self.services.device, &stream) {
                None => Session::start(stream, self.services.clone()),
                Some(reason) => {
                    warn!(%reason, "connection refused");
                    actix_rt::spawn(refuse(stream, reason));
                }
            },
            Err(e) => warn!(error = %e, "accept failed"),
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}

/// Why a connecting peer is not served, if it is not: device.conf `allowed_uids` / `allowed_gids`
/// (SO_PEERCRED), when either is set. Root is always served.
fn peer_refusal(device: &DeviceConfig, stream: &UnixStream) -> Option<String> {
    if device.allowed_uids.is_empty() && device.allowed_gids.is_empty() {
        return None;
    }
    let Ok(cred) = stream.peer_cred() else {
        return Some("the peer's credentials cannot be read".into());
    };
    let (uid, gid) = (cred.uid(), cred.gid());
    let allowed = uid == 0 || device.allowed_uids.contains(&uid) || device.allowed_gids.contains(&gid);
    (!allowed).then(|| {
        format!("access denied: uid {uid} / gid {gid} is not in device.conf allowed_uids / allowed_gids")
    })
}

/// Answers a refused connection once (`CMD_FAILED` with the reason) and closes it.
async fn refuse(mut stream: UnixStream, reason: String) {
    use tokio::io::AsyncWriteExt;
    let frame = crate::protocol::codec::encode_frame(&crate::protocol::reply::failed(reason));
    let _ = stream.write_all(&frame).await;
    let _ = stream.shutdown().await;
}

/// Whether a command is accepted once the device is provisioned (SPEC §9): container state and
/// lists, PIN changes, create, start, stop, update_config, the PIN-handling query and
/// `get_provisioned`. Everything else is answered `CMD_UNSUPPORTED` — for every client, in hosted
/// mode too. One exhaustive `match` without a catch-all: a new command forces a decision here.
pub fn allowed_when_provisioned(cmd: WireCommand) -> bool {
    use WireCommand::*;
    match cmd {
        ListContainers
        | GetContainerStatus
        | ContainerChangeTokenPin
        | CreateContainer
        | ContainerStart
        | ContainerStop
        | ContainerUpdateConfig
        | ContainerCmldHandlesPin
        | GetProvisioned => true,
        ListGuestosConfigs
        | GetContainerConfig
        | GetLastLog
        | GetDeviceStats
        | PushGuestosConfig
        | ReloadContainers
        | RemoveContainer
        | RegisterLocalca
        | RegisterNewca
        | RemoveGuestos
        | WipeDevice
        | RebootDevice
        | SetProvisioned
        | DestroySystem
        | PullDeviceCsr
        | PushDeviceCert
        | ChangeDevicePin
        | ContainerSwitch
        | ContainerFreeze
        | ContainerUnfreeze
        | ContainerWipe
        | ContainerSnapshot
        | ContainerAllowaudio
        | ContainerDenyaudio
        | ContainerAssigniface
        | ContainerUnassigniface
        | ContainerListIfaces
        | ContainerExecCmd
        | ContainerExecInput
        | ContainerDevAccess
        | SubscribeEvents
        // Like `run`: a way into the container (and its output) for whoever holds the socket.
        | ContainerConsole
        | ContainerLogs => false,
    }
}
