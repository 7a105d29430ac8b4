//! One session actor per control connection.
//!
//! Frames are read with [`FrameCodec`]; each becomes a [`Command`] and goes through [`dispatch`],
//! one exhaustive `match`. A request that needs another actor is awaited with `ctx.wait`, which
//! holds back the next frame until the reply is queued, so replies leave in request order. Replies
//! go to a writer task through a channel; when the session ends, the writer sends what is queued and
//! then closes the socket.
//!
//! Every request gets a reply (SPEC §2), except `CONTAINER_EXEC_INPUT`, which belongs to an exec
//! stream. A frame that is too large or does not decode gets `CMD_FAILED` and ends the connection.
//!
//! [`dispatch`]: Session::dispatch

use std::future::Future;

use actix::{
    Actor, ActorContext, Addr, AsyncContext, Context, StreamHandler, WrapFuture, fut::ActorFutureExt,
};
use bytes::Bytes;
use prost::Message as _;
use tokio::{
    io::AsyncWriteExt,
    net::{UnixStream, unix::UCred},
    sync::mpsc,
};
use tokio_util::codec::FramedRead;
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::{
    Services,
    acceptor::allowed_when_provisioned,
    container::{ContainerActor, GetConfig, UpdateConfig},
    guestos::{self, List},
    lifecycle,
    manager::{AutostartAll, Create, Lookup, Reload, Remove, StopAll, WipeAll},
    network, provisioning, read, token,
};
use crate::{
    container::accept,
    protocol::{
        codec::{FrameCodec, FrameError, encode_frame},
        command::{Command, RequestError, has_command_field, wire_name},
        pb::{
            ControllerToDaemon, DaemonToController, controller_to_daemon::Command as WireCommand,
            daemon_to_controller::Response,
        },
        reply,
    },
    softtoken::TokenError,
    sys::cgroup::DeviceRule,
};

/// A control connection.
pub struct Session {
    services: Services,
    peer: Option<UCred>,
    out: mpsc::UnboundedSender<DaemonToController>,
    /// Input for this connection's open `run` stream, if any.
    exec_input: Option<mpsc::UnboundedSender<super::exec::Input>>,
}

impl Session {
    /// Starts a session on an accepted connection.
    pub fn start(stream: UnixStream, services: Services) {
        let peer = stream.peer_cred().ok();
        let (read, mut write) = stream.into_split();
        let (out, mut rx) = mpsc::unbounded_channel::<DaemonToController>();
        actix_rt::spawn(async move {
            while let Some(msg) = rx.recv().await {
                let mut buf = encode_frame(&msg);
                // Send whatever else is queued in the same write.
                while let Ok(more) = rx.try_recv() {
                    buf.extend_from_slice(&encode_frame(&more));
                }
                if write.write_all(&buf).await.is_err() {
                    return;
                }
            }
            let _ = write.shutdown().await;
        });
        Session::create(move |ctx| {
            ctx.add_stream(FramedRead::new(read, FrameCodec));
            Session {
                services,
                peer,
                out,
                exec_input: None,
            }
        });
    }

    fn send(&self, msg: DaemonToController) {
        // A closed channel means the peer is gone; nothing left to tell it.
        let _ = self.out.send(msg);
    }

    /// Runs `fut` to completion before the next frame is read, then sends its reply.
    fn reply_later<F>(&self, ctx: &mut Context<Self>, fut: F)
    where
        F: Future<Output = DaemonToController> + 'static,
    {
        ctx.wait(fut.into_actor(self).map(|r, act, _| act.send(r)));
    }

    fn log_request(&self, command: i32) {
        let (uid, gid, pid) = match &self.peer {
            Some(c) => (c.uid(), c.gid(), c.pid().unwrap_or(0)),
            None => (u32::MAX, u32::MAX, 0),
        };
        info!(command = wire_name(command), uid, gid, pid, "request");
    }

    fn handle_frame(&mut self, frame: Bytes, ctx: &mut Context<Self>) {
        let request = if has_command_field(&frame) {
            ControllerToDaemon::decode(frame).map_err(|e| e.to_string())
        } else {
            Err("missing required field 'command'".into())
        };
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "undecodable request; closing connection");
                self.send(reply::failed(format!("malformed request: {e}")));
                ctx.stop();
                return;
            }
        };
        self.log_request(request.command);
        if self
            .services
            .provisioned
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            let allowed = WireCommand::try_from(request.command).is_ok_and(allowed_when_provisioned);
            if !allowed {
                self.send(reply::unsupported(format!(
                    "{} is not available: the device is provisioned",
                    wire_name(request.command)
                )));
                return;
            }
        }
        match Command::try_from(request) {
            Ok(cmd) => self.dispatch(cmd, ctx),
            Err(e @ RequestError::UnknownCommand(_)) => self.send(reply::unsupported(e.to_string())),
            Err(e @ RequestError::Invalid { .. }) => self.send(reply::failed(e.to_string())),
        }
    }

    fn device_rule(
        &mut self,
        ctx: &mut Context<Self>,
        uuid: Uuid,
        what: &'static str,
        rule: Result<DeviceRule, String>,
        sound_nodes: bool,
    ) {
        let s = self.services.clone();
        self.reply_later(ctx, async move {
            let rule = match rule {
                Ok(r) => r,
                Err(e) => return reply::failed(format!("{what}: {e}")),
            };
            let done = match container(&s, uuid).await {
                Ok(actor) => actor.send(lifecycle::DeviceAccess { rule, sound_nodes }).await,
                Err(r) => return r,
            };
            answer(what, done, |()| reply::ok())
        });
    }

    fn move_iface(
        &mut self,
        ctx: &mut Context<Self>,
        uuid: Uuid,
        iface: String,
        persistent: bool,
        assign: bool,
    ) {
        let s = self.services.clone();
        self.reply_later(ctx, async move {
            let what = if assign { "assign_iface" } else { "unassign_iface" };
            let done = match container(&s, uuid).await {
                Ok(actor) => {
                    actor
                        .send(network::AssignIface {
                            iface,
                            persistent,
                            assign,
                        })
                        .await
                }
                Err(r) => return r,
            };
            answer(what, done, |()| reply::ok())
        });
    }

    fn freeze(&mut self, ctx: &mut Context<Self>, uuid: Uuid, freeze: bool) {
        let s = self.services.clone();
        self.reply_later(ctx, async move {
            let what = if freeze { "freeze" } else { "unfreeze" };
            let done = match container(&s, uuid).await {
                Ok(actor) => actor.send(lifecycle::Freeze(freeze)).await,
                Err(r) => return r,
            };
            answer(what, done, |()| reply::ok())
        });
    }

    /// The one place where every command is decided.
    fn dispatch(&mut self, cmd: Command, ctx: &mut Context<Self>) {
        let s = self.services.clone();
        match cmd {
            Command::GetStatus { uuids } => self.send(match s.board.statuses(&uuids) {
                Ok(list) => reply::status(list),
                Err(u) => reply::failed(format!("no container with UUID {u}")),
            }),
            Command::ListContainers => self.send(reply::container_list(
                s.board.uuids().iter().map(Uuid::to_string).collect(),
            )),
            Command::GetConfig { uuids } => {
                let uuids = if uuids.is_empty() { s.board.uuids() } else { uuids };
                self.reply_later(ctx, async move {
                    let mut out = Vec::with_capacity(uuids.len());
                    for uuid in uuids {
                        let cfg = match container(&s, uuid).await {
                            Ok(actor) => actor.send(GetConfig).await,
                            Err(r) => return r,
                        };
                        match cfg {
                            Ok(cfg) => out.push((uuid.to_string(), cfg)),
                            Err(_) => return reply::failed(format!("container {uuid} went away")),
                        }
                    }
                    reply::configs(out)
                });
            }
            Command::Create { config, signature } => self.reply_later(ctx, async move {
                answer("create", s.manager.send(Create { config, signature }).await, |(uuid, cfg, warnings)| {
                    reply::with_warnings(reply::configs(vec![(uuid.to_string(), cfg)]), &warnings)
                })
            }),
            Command::UpdateConfig { uuid, config, signature } => self.reply_later(ctx, async move {
                let accepted = match accept(&s.device, &config, signature, &read(&s.trust)) {
                    Ok(a) => a,
                    Err(e) => return reply::failed(format!("update_config: {e}")),
                };
                let warnings = accepted.warnings.clone();
                let updated = match container(&s, uuid).await {
                    Ok(actor) => actor.send(UpdateConfig(accepted)).await,
                    Err(r) => return r,
                };
                answer("update_config", updated, |cfg| {
                    reply::with_warnings(reply::configs(vec![(uuid.to_string(), cfg)]), &warnings)
                })
            }),
            Command::Reload => self.reply_later(ctx, async move {
                match s.manager.send(Reload { startup: false }).await {
                    Ok(problems) if problems.is_empty() => reply::ok(),
                    Ok(problems) => reply::failed(format!(
                        "reload: {} config file(s) not loaded (the others were): {}",
                        problems.len(),
                        problems.join("; ")
                    )),
                    Err(e) => reply::failed(format!("reload: {e}")),
                }
            }),
            Command::Remove { uuid } => self.reply_later(ctx, async move {
                answer("remove", s.manager.send(Remove(uuid)).await, |()| reply::ok())
            }),
            Command::HandlesPin { uuid } => self.send(if s.board.contains(&uuid) {
                // PIN pads (usb_pin_entry) are refused at validation, so the client always asks.
                reply::handles_pin(false)
            } else {
                reply::failed(format!("no container with UUID {uuid}"))
            }),
            Command::GetProvisioned => self.send(reply::provisioned(
                s.provisioned.load(std::sync::atomic::Ordering::SeqCst),
                hosted_mode(&s.device),
            )),
            Command::ListGuestOs => self.reply_later(ctx, async move {
                match s.guestos.send(List).await {
                    Ok(list) => reply::guestos_list(list),
                    Err(e) => reply::failed(format!("list_guestos: {e}")),
                }
            }),
            Command::SubscribeEvents => {
                let mut rx = s.board.subscribe();
                self.send(reply::ok());
                let out = self.out.clone();
                ctx.spawn(
                    async move {
                        loop {
                            match rx.recv().await {
                                Ok(st) => {
                                    let ev = DaemonToController {
                                        code: crate::protocol::pb::daemon_to_controller::Code::Event as i32,
                                        container_status: vec![st],
                                        ..Default::default()
                                    };
                                    if out.send(ev).is_err() {
                                        return;
                                    }
                                }
                                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                                    warn!(missed = n, "event subscriber too slow; events dropped");
                                }
                                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                            }
                        }
                    }
                    .into_actor(self),
                );
            }
            Command::ExecInput { input, window, eof } => match &self.exec_input {
                // Belongs to the open exec stream and is never answered (SPEC §2).
                Some(tx) => {
                    if let Some((rows, cols)) = window {
                        let _ = tx.send(super::exec::Input::Resize { rows, cols });
                    }
                    if !input.is_empty() {
                        let _ = tx.send(super::exec::Input::Data(input));
                    }
                    if eof {
                        let _ = tx.send(super::exec::Input::Eof);
                    }
                }
                None => debug!("exec input without an exec stream ignored"),
            },
            Command::Start { uuid, pin, setup } => {
                self.reply_later(ctx, async move {
                    let key = match unlock(&s, uuid, pin, Response::ContainerStartPasswdWrong, true).await {
                        Ok(k) => k.map(std::sync::Arc::new),
                        Err(r) => return r,
                    };
                    let started = match container(&s, uuid).await {
                        Ok(actor) => actor.send(lifecycle::Start { by_user: true, setup, key }).await,
                        Err(r) => return r,
                    };
                    match started {
                        Ok(Ok(None)) => reply::response(Response::ContainerStartOk),
                        // A notify guest: the reply waits until it is RUNNING, or why it is not.
                        Ok(Ok(Some(boot))) => match tokio::time::timeout(lifecycle::BOOT_WAIT, boot).await {
                            Ok(Ok(Ok(()))) => reply::response(Response::ContainerStartOk),
                            Ok(Ok(Err(why))) => {
                                reply::failure(Response::ContainerStartEinternal, format!("start: {why}"))
                            }
                            Ok(Err(_)) => reply::failure(
                                Response::ContainerStartEinternal,
                                "start: the container ended before the guest reported ready",
                            ),
                            Err(_) => {
                                info!(container = %uuid, "start: no READY=1 yet; replying while it is BOOTING");
                                reply::response(Response::ContainerStartOk)
                            }
                        },
                        Ok(Err(e @ lifecycle::StartFailure::NotStopped(_))) => {
                            reply::failure(Response::ContainerStartEexist, format!("start: {e}"))
                        }
                        Ok(Err(e)) => reply::failure(Response::ContainerStartEinternal, format!("start: {e}")),
                        Err(e) => reply::failure(Response::ContainerStartEinternal, format!("start: {e}")),
                    }
                });
            }
            Command::Stop { uuid, pin } => self.reply_later(ctx, async move {
                if let Err(r) = unlock(&s, uuid, pin, Response::ContainerStopPasswdWrong, false).await {
                    return r;
                }
                let stopped = match container(&s, uuid).await {
                    Ok(actor) => actor.send(lifecycle::Stop).await,
                    Err(r) => return r,
                };
                match stopped {
                    Ok(Ok(())) => reply::response(Response::ContainerStopOk),
                    Ok(Err(e @ lifecycle::StopFailure::NotRunning(_))) => {
                        reply::failure(Response::ContainerStopFailedNotRunning, format!("stop: {e}"))
                    }
                    Ok(Err(e)) => reply::failure(Response::ContainerCtrlEinternal, format!("stop: {e}")),
                    Err(e) => reply::failure(Response::ContainerCtrlEinternal, format!("stop: {e}")),
                }
            }),
            Command::Freeze { uuid } => self.freeze(ctx, uuid, true),
            Command::Unfreeze { uuid } => self.freeze(ctx, uuid, false),
            Command::Exec { uuid, args, pty, window } => {
                let (tx, rx) = mpsc::unbounded_channel();
                self.exec_input = Some(tx);
                let out = self.out.clone();
                ctx.spawn(
                    super::exec::run(s, uuid, args, pty, window, rx, out)
                        .into_actor(self)
                        .map(|(), act, _| act.exec_input = None),
                );
            }
            Command::Console { uuid, window } => {
                let (tx, rx) = mpsc::unbounded_channel();
                self.exec_input = Some(tx);
                let out = self.out.clone();
                ctx.spawn(
                    super::console::attach(s, uuid, window, rx, out)
                        .into_actor(self)
                        .map(|(), act, _| act.exec_input = None),
                );
            }
            Command::Logs { uuid, tail, follow } => {
                let logs = super::console::logs(s, uuid, tail, follow, self.out.clone()).into_actor(self);
                if follow {
                    // Beside later requests, like a `run` stream; ends with the connection too.
                    ctx.spawn(logs);
                } else {
                    // Whole before the next request's reply.
                    ctx.wait(logs);
                }
            }
            Command::Switch { .. } => self.send(reply::unsupported("CONTAINER_SWITCH has no meaning on a host")),
            Command::Wipe { uuid } => self.reply_later(ctx, async move {
                let actor = match container(&s, uuid).await {
                    Ok(a) => a,
                    Err(r) => return r,
                };
                if let Ok(Err(lifecycle::StopFailure::Cleanup(e))) = actor.send(lifecycle::Stop).await {
                    return reply::failed(format!("wipe: stopping first: {e}"));
                }
                answer("wipe", actor.send(super::container::Wipe).await, |()| reply::ok())
            }),
            Command::WipeDevice => self.reply_later(ctx, async move {
                match s.manager.send(WipeAll).await {
                    Ok(Ok(n)) => {
                        tracing::info!(containers = n, "device wiped");
                        reply::ok()
                    }
                    Ok(Err(e)) => reply::failed(format!("wipe_device: {e}")),
                    Err(e) => reply::failed(format!("wipe_device: {e}")),
                }
            }),
            Command::AllowAudio { uuid } => self.device_rule(ctx, uuid, "allow_audio", Ok(audio_rule(true)), true),
            Command::DenyAudio { uuid } => self.device_rule(ctx, uuid, "deny_audio", Ok(audio_rule(false)), true),
            Command::DevAccess { uuid, rule } => {
                let parsed = rule.parse::<DeviceRule>().map_err(|e| format!("malformed rule {rule:?}: {e}"));
                self.device_rule(ctx, uuid, "dev_access", parsed, false)
            }
            Command::AssignIface {
                uuid,
                iface,
                persistent,
            } => self.move_iface(ctx, uuid, iface, persistent, true),
            Command::UnassignIface {
                uuid,
                iface,
                persistent,
            } => self.move_iface(ctx, uuid, iface, persistent, false),
            Command::ListIfaces { uuid } => self.reply_later(ctx, async move {
                let listed = match container(&s, uuid).await {
                    Ok(actor) => actor.send(network::Ifaces).await,
                    Err(r) => return r,
                };
                answer("ifaces", listed, reply::ifaces)
            }),
            Command::ChangePin { uuid, pin, new_pin } => self.reply_later(ctx, async move {
                if !s.board.contains(&uuid) {
                    return reply::failure(Response::ContainerChangePinFailed, format!("no container with UUID {uuid}"));
                }
                // One device token serves every SOFT container: changing it via any of them changes it.
                match s.token.send(token::ChangePin { old: pin, new: new_pin }).await {
                    Ok(Ok(())) => reply::response(Response::ContainerChangePinSuccessful),
                    Ok(Err(TokenError::Locked)) => {
                        reply::failure(Response::ContainerLockedTillReboot, "the token is locked until the next reboot")
                    }
                    Ok(Err(e)) => reply::failure(Response::ContainerChangePinFailed, format!("change_pin: {e}")),
                    Err(e) => reply::failure(Response::ContainerChangePinFailed, format!("change_pin: {e}")),
                }
            }),
            Command::PushGuestOs { config, signature, certificate } => {
                let progress = self.out.clone();
                self.reply_later(ctx, async move {
                    let push = guestos::Push { conf: config, sig: signature, cert: certificate, progress };
                    match s.guestos.send(push).await {
                        Ok(Ok(_)) => reply::response(Response::GuestosMgrInstallCompleted),
                        Ok(Err(e)) => reply::failure(Response::GuestosMgrInstallFailed, e.to_string()),
                        Err(e) => reply::failure(Response::GuestosMgrInstallFailed, e.to_string()),
                    }
                });
            }
            Command::RegisterNewCa { cert } => self.reply_later(ctx, async move {
                match s.guestos.send(guestos::RegisterCa(cert)).await {
                    Ok(Ok(_)) => reply::response(Response::GuestosMgrRegisterCaOk),
                    Ok(Err(e)) => reply::failure(Response::GuestosMgrRegisterCaError, e.to_string()),
                    Err(e) => reply::failure(Response::GuestosMgrRegisterCaError, e.to_string()),
                }
            }),
            Command::RegisterLocalCa { .. } => self.send(reply::unsupported(
                "local CAs (REGISTER_LOCALCA) are not supported; register the CA with ca_register (REGISTER_NEWCA)",
            )),
            Command::RemoveGuestOs { name } => self.reply_later(ctx, async move {
                answer("remove_guestos", s.guestos.send(guestos::Remove(name)).await, |_| reply::ok())
            }),
            Command::PullCsr => self.reply_later(ctx, async move {
                let csr = s.provisioning.send(provisioning::PullCsr).await;
                reply::csr(csr.unwrap_or_else(|e| Err(e.to_string())))
            }),
            Command::PushCert { cert } => self.reply_later(ctx, async move {
                match s.provisioning.send(provisioning::PushCert(cert)).await {
                    Ok(Ok(_)) => reply::response(Response::DeviceCertOk),
                    Ok(Err(e)) => reply::failure(Response::DeviceCertError, e),
                    Err(e) => reply::failure(Response::DeviceCertError, e.to_string()),
                }
            }),
            Command::SetProvisioned => self.reply_later(ctx, async move {
                answer("set_provisioned", s.provisioning.send(provisioning::SetProvisioned).await, |()| {
                    reply::ok()
                })
            }),
            Command::GetDeviceStats => self.reply_later(ctx, async move {
                let data = s.data.root().to_path_buf();
                match actix_rt::task::spawn_blocking(move || crate::device::stats(&data)).await {
                    Ok(stats) => reply::device_stats(stats),
                    Err(e) => reply::failed(format!("device_stats: {e}")),
                }
            }),
            Command::RebootDevice => self.reply_later(ctx, async move { reboot(&s).await }),
            Command::GetLastLog { .. } => self.send(reply::unsupported(
                "cmld logs to its service manager (journal); there are no log files to retrieve",
            )),
            Command::Snapshot { .. } => {
                self.send(reply::unsupported("container snapshots are not supported"))
            }
            Command::DestroySystem => {
                self.send(reply::unsupported("destroy_system needs a TPM; not supported"))
            }
            Command::ChangeDevicePin => self.send(reply::unsupported(
                "CHANGE_DEVICE_PIN is deprecated; use change_pin on a container",
            )),
        }
    }
}

/// For a SOFT-token container, checks the PIN with the device token and, with `want_key`,
/// returns the container's volume key; `wrong` is the command's own wrong-PIN reply.
/// NONE-token containers need no PIN and have no key.
async fn unlock(
    s: &Services,
    uuid: Uuid,
    pin: Option<String>,
    wrong: Response,
    want_key: bool,
) -> Result<Option<crate::softtoken::MasterKey>, DaemonToController> {
    let soft = crate::protocol::pb::ContainerTokenType::Soft as i32;
    match s.board.get(&uuid) {
        None => return Err(reply::failed(format!("no container with UUID {uuid}"))),
        Some(e) if e.token_type != soft => return Ok(None),
        Some(_) => {}
    }
    let Some(pin) = pin else {
        return Err(reply::failure(
            wrong,
            "this container's storage is protected by the device token: a PIN is required",
        ));
    };
    if want_key && s.device.require_pin_change() && s.token.send(token::HasDefaultPin).await.unwrap_or(true) {
        return Err(reply::failure(
            Response::ContainerStartUnlockFailed,
            "device.conf has require_pin_change: true and the device token still has its default PIN; run control change_pin first",
        ));
    }
    let result = if want_key {
        let key_file = s.data.container_key(&uuid);
        s.token
            .send(token::ContainerKey {
                pin,
                uuid: uuid.to_string(),
                key_file,
            })
            .await
            .map(|r| r.map(Some))
    } else {
        s.token.send(token::CheckPin(pin)).await.map(|r| r.map(|()| None))
    };
    match result {
        Ok(Ok(key)) => Ok(key),
        Ok(Err(TokenError::WrongPin { attempts_left })) => Err(reply::failure(
            wrong,
            format!("wrong PIN ({attempts_left} attempt(s) left before the token locks)"),
        )),
        Ok(Err(TokenError::Locked)) => Err(reply::failure(
            Response::ContainerLockedTillReboot,
            "the token is locked after 3 wrong PINs until the next reboot",
        )),
        Ok(Err(e @ TokenError::InvalidPin { .. })) => Err(reply::failure(wrong, e.to_string())),
        Ok(Err(e)) => Err(reply::failure(
            Response::ContainerStartEinternal,
            format!("softtoken: {e}"),
        )),
        Err(e) => Err(reply::failure(
            Response::ContainerStartEinternal,
            format!("softtoken: {e}"),
        )),
    }
}

/// The ALSA device rule of `allow_audio` / `deny_audio` (SPEC §4.5): `c 116:* rw`.
fn audio_rule(allow: bool) -> DeviceRule {
    DeviceRule {
        allow,
        kind: 'c',
        major: Some(116),
        minor: None,
        access: "rw".into(),
    }
}

/// The actor of a container, or the failure reply for an unknown one.
async fn container(s: &Services, uuid: Uuid) -> Result<Addr<ContainerActor>, DaemonToController> {
    s.manager
        .send(Lookup(uuid))
        .await
        .ok()
        .flatten()
        .ok_or_else(|| reply::failed(format!("no container with UUID {uuid}")))
}

/// Whether cmld runs in hosted mode: always without the `device-mode` feature, else unless
/// device.conf says `hostedmode: false` (the same test `reboot` makes).
fn hosted_mode(device: &crate::protocol::pb::DeviceConfig) -> bool {
    !(cfg!(feature = "device-mode") && device.hostedmode == Some(false))
}

/// `reboot`. In hosted mode (the default: `hostedmode` absent or true, or a build without the
/// `device-mode` feature) the host is never rebooted: every container is stopped gracefully, then
/// the autostart ones are started again, and the reply says so. In device mode the containers are
/// stopped, the file systems synced, and the machine rebooted.
async fn reboot(s: &Services) -> DaemonToController {
    let stopped = s.manager.send(StopAll).await.unwrap_or(0);
    if !hosted_mode(&s.device) {
        tracing::warn!(containers = stopped, "rebooting the device");
        nix::unistd::sync();
        // Returns only on failure.
        #[cfg(feature = "device-mode")]
        let Err(e) = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
        #[cfg(feature = "device-mode")]
        return reply::failed(format!("reboot: {e}"));
    }
    tracing::info!(
        containers = stopped,
        "reboot (hosted mode): containers stopped; starting the autostart ones"
    );
    s.manager.do_send(AutostartAll);
    reply::ok()
}

/// An actor's answer as a reply: `ok` on success; a handler error or a dead mailbox becomes
/// `CMD_FAILED` with the reason, prefixed by `what`.
fn answer<T, E: std::fmt::Display>(
    what: &str,
    result: Result<Result<T, E>, actix::MailboxError>,
    ok: impl FnOnce(T) -> DaemonToController,
) -> DaemonToController {
    match result {
        Ok(Ok(v)) => ok(v),
        Ok(Err(e)) => reply::failed(format!("{what}: {e}")),
        Err(e) => reply::failed(format!("{what}: {e}")),
    }
}

impl Actor for Session {
    type Context = Context<Self>;
}

impl StreamHandler<Result<Bytes, FrameError>> for Session {
    fn handle(&mut self, item: Result<Bytes, FrameError>, ctx: &mut Context<Self>) {
        match item {
            Ok(frame) => self.handle_frame(frame, ctx),
            Err(e @ FrameError::TooLarge { .. }) => {
                warn!(error = %e, "oversize frame; closing connection");
                self.send(reply::failed(e.to_string()));
                ctx.stop();
            }
            Err(FrameError::Io(e)) => {
                debug!(error = %e, "connection ended mid-frame");
                ctx.stop();
            }
        }
    }
}
