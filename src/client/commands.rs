//! The exchanges of each command (except `run` and `console`, see `exec` and `console`): which requests go out, which replies
//! count as success, and what is printed.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use serde_json::json;

use super::cli::{Command, IfaceArgs};
use super::session::{Session, container_request, request};
use super::term::PinSource;
use super::{ClientError, format};
use crate::protocol::{
    pb::{
        AssignInterfaceParams, ContainerStartParams, ContainerTokenType, ControllerToDaemon,
        controller_to_daemon::Command as Cmd,
        daemon_to_controller::{Code, Response},
    },
    text,
};

const OK: &[Response] = &[Response::CmdOk];

/// Runs one command over `session` (every command but `run`, `completions` and `man`); returns
/// the exit status.
pub fn dispatch<S: Read + Write>(
    session: &mut Session<'_, S>,
    command: &Command,
    pins: &mut dyn PinSource,
) -> Result<u8, ClientError> {
    match command {
        Command::Start {
            container,
            key,
            setup,
        } => {
            let status = session.resolve(container)?;
            let key = pin_for(session, &status, key.as_deref(), pins)?;
            let msg = ControllerToDaemon {
                container_start_params: Some(ContainerStartParams {
                    key,
                    no_switch: None,
                    setup: Some(*setup),
                }),
                ..container_request(Cmd::ContainerStart, &status.uuid)
            };
            session.call_response(&msg, &[Response::ContainerStartOk])?;
        }
        Command::Stop { container, key } => {
            let status = session.resolve(container)?;
            let key = pin_for(session, &status, key.as_deref(), pins)?;
            let msg = ControllerToDaemon {
                container_start_params: Some(ContainerStartParams {
                    key,
                    ..Default::default()
                }),
                ..container_request(Cmd::ContainerStop, &status.uuid)
            };
            session.call_response(&msg, &[Response::ContainerStopOk])?;
        }
        Command::Create {
            file,
            signature,
            certificate,
        } => {
            let msg = ControllerToDaemon {
                container_config_file: Some(read(file)?),
                ..signed(
                    request(Cmd::CreateContainer),
                    signature.as_deref(),
                    certificate.as_deref(),
                )?
            };
            let reply = session.call(&msg)?;
            config_reply(session, &reply, true)?;
        }
        Command::UpdateConfig {
            container,
            file,
            signature,
            certificate,
        } => {
            let status = session.resolve(container)?;
            let msg = ControllerToDaemon {
                container_config_file: Some(read(file)?),
                ..signed(
                    container_request(Cmd::ContainerUpdateConfig, &status.uuid),
                    signature.as_deref(),
                    certificate.as_deref(),
                )?
            };
            let reply = session.call(&msg)?;
            config_reply(session, &reply, false)?;
        }
        Command::Config { container } => {
            let status = session.resolve(container)?;
            let reply = session.call(&container_request(Cmd::GetContainerConfig, &status.uuid))?;
            config_reply(session, &reply, false)?;
        }
        Command::Remove { container } => simple(session, container, Cmd::RemoveContainer)?,
        Command::Wipe { container } => simple(session, container, Cmd::ContainerWipe)?,
        Command::Freeze { container } => simple(session, container, Cmd::ContainerFreeze)?,
        Command::Unfreeze { container } => simple(session, container, Cmd::ContainerUnfreeze)?,
        Command::AllowAudio { container } => simple(session, container, Cmd::ContainerAllowaudio)?,
        Command::DenyAudio { container } => simple(session, container, Cmd::ContainerDenyaudio)?,
        Command::AssignIface(args) => iface(session, args, Cmd::ContainerAssigniface)?,
        Command::UnassignIface(args) => iface(session, args, Cmd::ContainerUnassigniface)?,
        Command::Events => {
            // The acknowledgement is not printed: with --json stdout carries one object per event.
            let ack = session.call_quiet(&request(Cmd::SubscribeEvents))?;
            if ack.code != Code::Response as i32 || ack.response != Some(Response::CmdOk as i32) {
                return Err(session.failure(&ack));
            }
            loop {
                let reply = session.recv()?;
                if reply.code != Code::Event as i32 {
                    continue;
                }
                let Some(st) = reply.container_status.first() else {
                    continue;
                };
                let time = format::utc_now();
                let state = format::state_name(st.state);
                let line = if session.mode() == super::OutputMode::Json {
                    let doc = json!({"time": time, "name": st.name, "uuid": st.uuid, "state": state});
                    format!("{doc}\n")
                } else {
                    format!("{time} {} {} {state}\n", st.name, st.uuid)
                };
                session.write_out(line.as_bytes())?;
            }
        }
        Command::DevAccess { container, rule } => {
            let status = session.resolve(container)?;
            let msg = ControllerToDaemon {
                dev_rule: Some(rule.clone()),
                ..container_request(Cmd::ContainerDevAccess, &status.uuid)
            };
            session.call_response(&msg, OK)?;
        }
        Command::WipeDevice => session.call_response(&request(Cmd::WipeDevice), OK)?,
        Command::Reload => session.call_response(&request(Cmd::ReloadContainers), OK)?,
        Command::Reboot => session.call_response(&request(Cmd::RebootDevice), OK)?,
        Command::SetProvisioned => session.call_response(&request(Cmd::SetProvisioned), OK)?,
        Command::State { container } => {
            let status = session.resolve(container)?;
            let reply = session.call(&container_request(Cmd::GetContainerStatus, &status.uuid))?;
            session.expect_data(&reply, Code::ContainerStatus)?;
            // The daemon silently skips unknown UUIDs: an empty list means it vanished meanwhile.
            let Some(s) = reply.container_status.first() else {
                return Err(ClientError::NoSuchContainer(container.clone()));
            };
            session.human(&format!("{}\n", format::state_name(s.state)))?;
            if session.wants_json() {
                session.json(&format::status_json(s))?;
            }
        }
        Command::List { system, ignored: _ } => {
            let msg = ControllerToDaemon {
                system_services: system.then_some(true),
                ..request(Cmd::GetContainerStatus)
            };
            let reply = session.call(&msg)?;
            session.expect_data(&reply, Code::ContainerStatus)?;
            session.human(&format::list_table(&reply.container_status))?;
            if session.wants_json() {
                session.json(&format::list_json(&reply.container_status))?;
            }
        }
        Command::Ifaces { container } => {
            let status = session.resolve(container)?;
            let reply = session.call(&container_request(Cmd::ContainerListIfaces, &status.uuid))?;
            session.expect_data(&reply, Code::ContainerIfaces)?;
            session.human(&format::ifaces_table(&reply.container_ifaces))?;
            if session.wants_json() {
                session.json(&format::ifaces_json(&reply.container_ifaces))?;
            }
        }
        Command::ListGuestos => {
            let reply = session.call(&request(Cmd::ListGuestosConfigs))?;
            session.expect_data(&reply, Code::GuestosConfigsList)?;
            session.human(&format::guestos_table(&reply.guestos_configs))?;
            let list: Vec<_> = reply.guestos_configs.iter().map(text::to_json).collect();
            session.json(&json!({ "guestos": list }))?;
        }
        Command::CaRegister { cert } => {
            let msg = ControllerToDaemon {
                guestos_rootcert: Some(read(cert)?),
                ..request(Cmd::RegisterNewca)
            };
            session.call_response(&msg, &[Response::GuestosMgrRegisterCaOk])?;
        }
        Command::PushGuestosConfig {
            config,
            signature,
            certificate,
        } => {
            let msg = ControllerToDaemon {
                guestos_config_file: Some(read(config)?),
                guestos_config_signature: Some(read(signature)?),
                guestos_config_certificate: Some(read(certificate)?),
                ..request(Cmd::PushGuestosConfig)
            };
            let mut reply = session.call(&msg)?;
            // The daemon repeats STARTED (with our progress extension) while it downloads and
            // checks images; the next other reply is the result.
            let mut progress = super::progress::Progress::default();
            while reply.code == Code::Response as i32
                && reply.response == Some(Response::GuestosMgrInstallStarted as i32)
            {
                if let Some(p) = &reply.install_progress {
                    progress.update(p);
                }
                reply = session.recv()?;
            }
            progress.finish();
            session.expect_response(&reply, &[Response::GuestosMgrInstallCompleted])?;
        }
        Command::RemoveGuestos { name } => {
            let msg = ControllerToDaemon {
                guestos_name: Some(name.clone()),
                ..request(Cmd::RemoveGuestos)
            };
            session.call_response(&msg, OK)?;
        }
        Command::PullCsr { file } => {
            let reply = session.call(&request(Cmd::PullDeviceCsr))?;
            session.expect_data(&reply, Code::DeviceCsr)?;
            let Some(csr) = &reply.device_csr else {
                return Err(ClientError::Daemon {
                    reply: format::reply_name(&reply),
                    message: Some(reply.error_message.clone().unwrap_or_else(|| {
                        "no CSR returned: the device is not in provisioning mode".to_owned()
                    })),
                });
            };
            fs::write(file, csr).map_err(|source| ClientError::WriteFile {
                path: file.clone(),
                source,
            })?;
            eprintln!("wrote the device CSR to {}", file.display());
            session.json(&json!({ "file": file, "bytes": csr.len() }))?;
        }
        Command::PushCert { file } => {
            let msg = ControllerToDaemon {
                device_cert: Some(read(file)?),
                ..request(Cmd::PushDeviceCert)
            };
            session.call_response(&msg, &[Response::DeviceCertOk])?;
        }
        Command::ChangePin { container } => {
            let status = session.resolve(container)?;
            let old = pins.read_pin("Current Password: ")?;
            let new = pins.read_pin("New Password: ")?;
            let again = pins.read_pin("Re-enter New Password: ")?;
            if new != again {
                return Err(ClientError::PinMismatch);
            }
            let msg = ControllerToDaemon {
                device_pin: Some(old),
                device_newpin: Some(new),
                ..container_request(Cmd::ContainerChangeTokenPin, &status.uuid)
            };
            session.call_response(&msg, &[Response::ContainerChangePinSuccessful])?;
        }
        Command::GetProvisioned => {
            let reply = session.call(&request(Cmd::GetProvisioned))?;
            session.expect_data(&reply, Code::DeviceProvisionedState)?;
            let provisioned = reply.device_is_provisioned.unwrap_or(false);
            session.human(&format!("{provisioned}\n"))?;
            session.json(&json!({ "provisioned": provisioned }))?;
        }
        Command::DeviceStats => {
            let reply = session.call(&request(Cmd::GetDeviceStats))?;
            session.expect_data(&reply, Code::DeviceStats)?;
            let stats = reply
                .device_stats
                .as_ref()
                .map(text::to_json)
                .unwrap_or_else(|| json!({}));
            session.human(&format::key_value_lines(&stats))?;
            session.json(&stats)?;
        }
        Command::Logs {
            container,
            follow,
            tail,
        } => return super::console::logs(session, container, *tail, *follow),
        Command::Run { .. } | Command::Console { .. } | Command::Completions { .. } | Command::Man => {
            return Err(ClientError::Internal("command is not handled by dispatch"));
        }
    }
    Ok(0)
}

/// The PIN for start/stop: `--key` if given; otherwise asked for only when the container uses a
/// softtoken and the daemon does not take the PIN itself (`CONTAINER_CMLD_HANDLES_PIN`, as
/// upstream). Any other container gets no key and never reads stdin.
fn pin_for<S: Read + Write>(
    session: &mut Session<'_, S>,
    status: &crate::protocol::pb::ContainerStatus,
    key: Option<&str>,
    pins: &mut dyn PinSource,
) -> Result<Option<String>, ClientError> {
    if let Some(key) = key {
        return Ok(Some(key.to_owned()));
    }
    if status.token_type != Some(ContainerTokenType::Soft as i32) {
        return Ok(None);
    }
    let reply = session.call_quiet(&container_request(Cmd::ContainerCmldHandlesPin, &status.uuid))?;
    session.expect_data(&reply, Code::ContainerCmldHandlesPin)?;
    if reply.container_cmld_handles_pin == Some(true) {
        eprintln!("please enter the PIN on the PIN reader");
        return Ok(None);
    }
    pins.read_pin("Password: ").map(Some)
}

/// Commands that take only a container and answer `CMD_OK`.
fn simple<S: Read + Write>(
    session: &mut Session<'_, S>,
    container: &str,
    cmd: Cmd,
) -> Result<(), ClientError> {
    let status = session.resolve(container)?;
    session.call_response(&container_request(cmd, &status.uuid), OK)
}

fn iface<S: Read + Write>(
    session: &mut Session<'_, S>,
    args: &IfaceArgs,
    cmd: Cmd,
) -> Result<(), ClientError> {
    let status = session.resolve(&args.container)?;
    let msg = ControllerToDaemon {
        assign_iface_params: Some(AssignInterfaceParams {
            iface_name: Some(args.iface.clone()),
            persistent: Some(args.persistent),
        }),
        ..container_request(cmd, &status.uuid)
    };
    session.call_response(&msg, OK)
}

/// Adds the config signature and, only together with it, the certificate (as upstream).
fn signed(
    msg: ControllerToDaemon,
    signature: Option<&Path>,
    certificate: Option<&Path>,
) -> Result<ControllerToDaemon, ClientError> {
    let Some(signature) = signature else {
        return Ok(msg);
    };
    let certificate = certificate.map(read).transpose()?;
    Ok(ControllerToDaemon {
        container_config_signature: Some(read(signature)?),
        container_config_certificate: certificate,
        ..msg
    })
}

/// Prints the `CONTAINER_CONFIG` reply of config / create / update_config.
fn config_reply<S: Read + Write>(
    session: &mut Session<'_, S>,
    reply: &crate::protocol::pb::DaemonToController,
    created: bool,
) -> Result<(), ClientError> {
    session.expect_data(reply, Code::ContainerConfig)?;
    let Some(config) = reply.container_configs.first() else {
        // Upstream's daemon answers a failed create/update with an empty CONTAINER_CONFIG.
        return Err(session.failure(reply));
    };
    let uuid = reply.container_uuids.first().cloned().unwrap_or_default();
    if let Some(w) = &reply.warning_message {
        eprintln!("control: warning: {w}");
    }
    if created {
        eprintln!("created container {} with UUID {uuid}", config.name);
    }
    session.human(&text::print(config))?;
    let mut doc = json!({ "uuid": uuid, "config": text::to_json(config) });
    if let Some(w) = &reply.warning_message {
        doc["warning"] = serde_json::Value::String(w.clone());
    }
    session.json(&doc)
}

fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    fs::read(path).map_err(|source| ClientError::ReadFile {
        path: path.to_owned(),
        source,
    })
}
