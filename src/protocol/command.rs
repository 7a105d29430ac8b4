//! Requests as typed commands: `ControllerToDaemon` → [`Command`] in one `TryFrom`, so the rest of
//! the daemon never looks at wire messages. Per-container commands carry a parsed [`Uuid`]; a
//! missing or malformed UUID, or a missing parameter, is a [`RequestError`] the session answers with
//! a failure reply instead of silence (upstream leaves such requests unanswered).

use uuid::Uuid;

use super::pb::{ControllerToDaemon, controller_to_daemon::Command as Wire};

/// A validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // fields are named after the wire fields they come from
pub enum Command {
    ListGuestOs,
    ListContainers,
    GetStatus {
        uuids: Vec<Uuid>,
    },
    GetConfig {
        uuids: Vec<Uuid>,
    },
    GetLastLog {
        remove_logs: bool,
    },
    GetDeviceStats,
    PushGuestOs {
        config: Vec<u8>,
        signature: Vec<u8>,
        certificate: Vec<u8>,
    },
    Reload,
    /// `signature`: the signature and certificate chain, present only when both were sent.
    Create {
        config: Vec<u8>,
        signature: Option<(Vec<u8>, Vec<u8>)>,
    },
    Remove {
        uuid: Uuid,
    },
    RegisterLocalCa {
        cert: Vec<u8>,
    },
    RegisterNewCa {
        cert: Vec<u8>,
    },
    RemoveGuestOs {
        name: String,
    },
    WipeDevice,
    RebootDevice,
    SetProvisioned,
    GetProvisioned,
    DestroySystem,
    PullCsr,
    PushCert {
        cert: Vec<u8>,
    },
    ChangeDevicePin,
    Start {
        uuid: Uuid,
        pin: Option<String>,
        setup: bool,
    },
    Stop {
        uuid: Uuid,
        pin: Option<String>,
    },
    Switch {
        uuid: Uuid,
    },
    Freeze {
        uuid: Uuid,
    },
    Unfreeze {
        uuid: Uuid,
    },
    Wipe {
        uuid: Uuid,
    },
    Snapshot {
        uuid: Uuid,
    },
    AllowAudio {
        uuid: Uuid,
    },
    DenyAudio {
        uuid: Uuid,
    },
    AssignIface {
        uuid: Uuid,
        iface: String,
        persistent: bool,
    },
    UnassignIface {
        uuid: Uuid,
        iface: String,
        persistent: bool,
    },
    ListIfaces {
        uuid: Uuid,
    },
    /// `window`: the client's terminal size (rows, cols), our extension.
    Exec {
        uuid: Uuid,
        args: Vec<String>,
        pty: bool,
        window: Option<(u16, u16)>,
    },
    /// Input for the open exec stream, and/or a new terminal size (rows, cols), and/or the end of
    /// the client's input (`eof`, our extension; after `input`).
    ExecInput {
        input: String,
        window: Option<(u16, u16)>,
        eof: bool,
    },
    UpdateConfig {
        uuid: Uuid,
        config: Vec<u8>,
        signature: Option<(Vec<u8>, Vec<u8>)>,
    },
    ChangePin {
        uuid: Uuid,
        pin: String,
        new_pin: String,
    },
    HandlesPin {
        uuid: Uuid,
    },
    DevAccess {
        uuid: Uuid,
        rule: String,
    },
    SubscribeEvents,
    /// Attach to the container's console; `window`: the client's terminal size (rows, cols).
    Console {
        uuid: Uuid,
        window: Option<(u16, u16)>,
    },
    /// The container's console log: the last `tail` lines, and with `follow` what comes next.
    Logs {
        uuid: Uuid,
        tail: Option<u32>,
        follow: bool,
    },
}

/// A request that cannot become a [`Command`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The command number is not one we know (upstream answers `CMD_UNSUPPORTED`).
    #[error("unknown command {0}")]
    UnknownCommand(i32),
    /// A parameter is missing or malformed.
    #[error("{command}: {reason}")]
    Invalid {
        /// The wire name of the command.
        command: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// Parses a UUID sent by a client. Only the canonical hyphenated or simple hex forms are accepted,
/// so a UUID can never carry a path separator into a file name.
pub fn parse_uuid(s: &str) -> Option<Uuid> {
    if s.len() != 36 && s.len() != 32 {
        return None;
    }
    Uuid::try_parse(s).ok()
}

fn uuids(command: &'static str, raw: &[String]) -> Result<Vec<Uuid>, RequestError> {
    raw.iter()
        .map(|s| {
            parse_uuid(s).ok_or_else(|| RequestError::Invalid {
                command,
                reason: format!("malformed UUID {}", shown_uuid(s)),
            })
        })
        .collect()
}

/// A rejected UUID as quoted in an error: at most 40 characters of it, so that a huge string of
/// control characters (each escaped to up to 10 bytes) cannot turn into a reply larger than the
/// request, or than a client accepts.
fn shown_uuid(s: &str) -> String {
    const SHOWN: usize = 40;
    match s.char_indices().nth(SHOWN) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &s[..cut], s.len()),
    }
}

fn one_uuid(command: &'static str, raw: &[String]) -> Result<Uuid, RequestError> {
    match raw {
        [one] => Ok(uuids(command, std::slice::from_ref(one))?[0]),
        [] => Err(RequestError::Invalid {
            command,
            reason: "no container UUID given".into(),
        }),
        _ => Err(RequestError::Invalid {
            command,
            reason: format!("{} container UUIDs given, need one", raw.len()),
        }),
    }
}

fn required<T>(command: &'static str, field: &str, v: Option<T>) -> Result<T, RequestError> {
    v.ok_or_else(|| RequestError::Invalid {
        command,
        reason: format!("missing {field}"),
    })
}

/// The signature and certificate of a signed config; only used when both are present (upstream).
fn sig_pair(sig: Option<Vec<u8>>, cert: Option<Vec<u8>>) -> Option<(Vec<u8>, Vec<u8>)> {
    sig.zip(cert)
}

/// The terminal size extension of an exec request, when complete and non-zero.
fn window(m: &ControllerToDaemon) -> Option<(u16, u16)> {
    let w = m.exec_window.as_ref()?;
    let rows = u16::try_from(w.rows?).ok().filter(|r| *r > 0)?;
    let cols = u16::try_from(w.cols?).ok().filter(|c| *c > 0)?;
    Some((rows, cols))
}

/// The wire name of a command number, for logs and messages.
pub fn wire_name(command: i32) -> &'static str {
    Wire::try_from(command)
        .map(|c| c.as_str_name())
        .unwrap_or("UNKNOWN")
}

impl TryFrom<ControllerToDaemon> for Command {
    type Error = RequestError;

    fn try_from(m: ControllerToDaemon) -> Result<Self, RequestError> {
        let wire = Wire::try_from(m.command).map_err(|_| RequestError::UnknownCommand(m.command))?;
        let name = wire.as_str_name();
        let id = || one_uuid(name, &m.container_uuids);
        let iface = || {
            let p = m.assign_iface_params.clone().unwrap_or_default();
            let iface = required(name, "assign_iface_params.iface_name", p.iface_name.clone())?;
            Ok::<_, RequestError>((iface, p.persistent()))
        };
        Ok(match wire {
            Wire::ListGuestosConfigs => Command::ListGuestOs,
            Wire::ListContainers => Command::ListContainers,
            Wire::GetContainerStatus => Command::GetStatus {
                uuids: uuids(name, &m.container_uuids)?,
            },
            Wire::GetContainerConfig => Command::GetConfig {
                uuids: uuids(name, &m.container_uuids)?,
            },
            Wire::GetLastLog => Command::GetLastLog {
                remove_logs: m.remove_logs(),
            },
            Wire::GetDeviceStats => Command::GetDeviceStats,
            Wire::PushGuestosConfig => Command::PushGuestOs {
                config: required(name, "guestos_config_file", m.guestos_config_file)?,
                signature: required(name, "guestos_config_signature", m.guestos_config_signature)?,
                certificate: required(name, "guestos_config_certificate", m.guestos_config_certificate)?,
            },
            Wire::ReloadContainers => Command::Reload,
            Wire::CreateContainer => {
                let signature = sig_pair(m.container_config_signature, m.container_config_certificate);
                Command::Create {
                    config: required(name, "container_config_file", m.container_config_file)?,
                    signature,
                }
            }
            Wire::RemoveContainer => Command::Remove { uuid: id()? },
            Wire::RegisterLocalca => Command::RegisterLocalCa {
                cert: required(name, "guestos_rootcert", m.guestos_rootcert)?,
            },
            Wire::RegisterNewca => Command::RegisterNewCa {
                cert: required(name, "guestos_rootcert", m.guestos_rootcert)?,
            },
            Wire::RemoveGuestos => Command::RemoveGuestOs {
                name: required(name, "guestos_name", m.guestos_name)?,
            },
            Wire::WipeDevice => Command::WipeDevice,
            Wire::RebootDevice => Command::RebootDevice,
            Wire::SetProvisioned => Command::SetProvisioned,
            Wire::GetProvisioned => Command::GetProvisioned,
            Wire::DestroySystem => Command::DestroySystem,
            Wire::PullDeviceCsr => Command::PullCsr,
            Wire::PushDeviceCert => Command::PushCert {
                cert: required(name, "device_cert", m.device_cert)?,
            },
            Wire::ChangeDevicePin => Command::ChangeDevicePin,
            Wire::ContainerStart => {
                let p = m.container_start_params.clone();
                Command::Start {
                    uuid: id()?,
                    pin: p.as_ref().and_then(|p| p.key.clone()),
                    setup: p.as_ref().is_some_and(|p| p.setup()),
                }
            }
            Wire::ContainerStop => Command::Stop {
                uuid: id()?,
                pin: m.container_start_params.as_ref().and_then(|p| p.key.clone()),
            },
            Wire::ContainerSwitch => Command::Switch { uuid: id()? },
            Wire::ContainerFreeze => Command::Freeze { uuid: id()? },
            Wire::ContainerUnfreeze => Command::Unfreeze { uuid: id()? },
            Wire::ContainerWipe => Command::Wipe { uuid: id()? },
            Wire::ContainerSnapshot => Command::Snapshot { uuid: id()? },
            Wire::ContainerAllowaudio => Command::AllowAudio { uuid: id()? },
            Wire::ContainerDenyaudio => Command::DenyAudio { uuid: id()? },
            Wire::ContainerAssigniface => {
                let (iface, persistent) = iface()?;
                Command::AssignIface {
                    uuid: id()?,
                    iface,
                    persistent,
                }
            }
            Wire::ContainerUnassigniface => {
                let (iface, persistent) = iface()?;
                Command::UnassignIface {
                    uuid: id()?,
                    iface,
                    persistent,
                }
            }
            Wire::ContainerListIfaces => Command::ListIfaces { uuid: id()? },
            Wire::ContainerExecCmd => {
                if m.exec_args.is_empty() {
                    return Err(RequestError::Invalid {
                        command: name,
                        reason: "missing exec_args".into(),
                    });
                }
                Command::Exec {
                    uuid: id()?,
                    pty: m.exec_pty(),
                    window: window(&m),
                    args: m.exec_args,
                }
            }
            Wire::ContainerExecInput => {
                let window = window(&m);
                let eof = m.exec_input_eof == Some(true);
                let input = match (m.exec_input, window.is_some() || eof) {
                    (Some(i), _) => i,
                    (None, true) => String::new(),
                    (None, false) => {
                        return Err(RequestError::Invalid {
                            command: name,
                            reason: "missing exec_input".into(),
                        });
                    }
                };
                Command::ExecInput { input, window, eof }
            }
            Wire::ContainerUpdateConfig => {
                let signature = sig_pair(m.container_config_signature, m.container_config_certificate);
                Command::UpdateConfig {
                    uuid: id()?,
                    config: required(name, "container_config_file", m.container_config_file)?,
                    signature,
                }
            }
            Wire::ContainerChangeTokenPin => Command::ChangePin {
                uuid: id()?,
                pin: required(name, "device_pin", m.device_pin)?,
                new_pin: required(name, "device_newpin", m.device_newpin)?,
            },
            Wire::ContainerCmldHandlesPin => Command::HandlesPin { uuid: id()? },
            Wire::SubscribeEvents => Command::SubscribeEvents,
            Wire::ContainerConsole => Command::Console {
                uuid: id()?,
                window: window(&m),
            },
            Wire::ContainerLogs => Command::Logs {
                uuid: id()?,
                tail: m.logs_tail,
                follow: m.logs_follow(),
            },
            Wire::ContainerDevAccess => Command::DevAccess {
                uuid: id()?,
                rule: required(name, "dev_rule", m.dev_rule)?,
            },
        })
    }
}

/// Whether the raw bytes of a message contain field 1 (the required `command`) at the top level.
/// prost fills a missing required field with its default, so presence is checked on the wire.
pub fn has_command_field(mut buf: &[u8]) -> bool {
    fn varint(buf: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = buf.split_first()?;
            *buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut found = false;
    // Inside (unknown) groups, fields belong to the group, not to the message.
    let mut depth = 0usize;
    while !buf.is_empty() {
        let Some(key) = varint(&mut buf) else { return false };
        if key >> 3 == 1 && depth == 0 {
            found = true;
        }
        let skip = match key & 7 {
            0 => varint(&mut buf).map(|_| 0),
            1 => Some(8),
            2 => varint(&mut buf).and_then(|l| usize::try_from(l).ok()),
            3 => {
                depth += 1;
                Some(0)
            }
            4 if depth > 0 => {
                depth -= 1;
                Some(0)
            }
            5 => Some(4),
            _ => None,
        };
        match skip {
            Some(n) if n <= buf.len() => buf = &buf[n..],
            _ => return false,
        }
    }
    found && depth == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_field_is_found_past_groups_and_not_inside_them() {
        // command = 33 after an unknown group (field 50) that holds a field 1 of its own.
        let msg = [0x93, 0x03, 0x08, 0x05, 0x94, 0x03, 0x08, 0x21];
        assert!(has_command_field(&msg));
        // Only inside the group: not the message's command.
        assert!(!has_command_field(&[0x93, 0x03, 0x08, 0x05, 0x94, 0x03]));
        // An unterminated group is malformed.
        assert!(!has_command_field(&[0x08, 0x21, 0x93, 0x03]));
        // A group end without a start is malformed.
        assert!(!has_command_field(&[0x08, 0x21, 0x94, 0x03]));
    }

    fn req(cmd: Wire) -> ControllerToDaemon {
        ControllerToDaemon {
            command: cmd as i32,
            ..Default::default()
        }
    }

    #[test]
    fn container_commands_need_exactly_one_valid_uuid() {
        let mut m = req(Wire::ContainerStart);
        assert!(matches!(
            Command::try_from(m.clone()),
            Err(RequestError::Invalid { .. })
        ));
        m.container_uuids = vec!["../../etc/passwd".into()];
        assert!(matches!(
            Command::try_from(m.clone()),
            Err(RequestError::Invalid { .. })
        ));
        let u = Uuid::new_v4();
        m.container_uuids = vec![u.to_string()];
        assert_eq!(
            Command::try_from(m).unwrap(),
            Command::Start {
                uuid: u,
                pin: None,
                setup: false
            }
        );
    }

    #[test]
    fn malformed_uuids_are_quoted_briefly() {
        let mut m = req(Wire::ContainerStop);
        m.container_uuids = vec!["\u{1}".repeat(1 << 20)];
        let e = Command::try_from(m).unwrap_err().to_string();
        assert!(e.len() < 512 && e.contains("(1048576 bytes)"), "{e}");
        m = req(Wire::ContainerStop);
        m.container_uuids = vec!["a/b".into()];
        assert!(
            Command::try_from(m)
                .unwrap_err()
                .to_string()
                .ends_with("malformed UUID \"a/b\"")
        );
    }

    #[test]
    fn unknown_commands_are_reported() {
        let m = ControllerToDaemon {
            command: 9999,
            ..Default::default()
        };
        assert_eq!(Command::try_from(m), Err(RequestError::UnknownCommand(9999)));
    }

    #[test]
    fn command_field_presence_is_read_from_the_wire() {
        assert!(has_command_field(&[0x08, 0x03, 0xf0, 0x02, 0x01]));
        assert!(!has_command_field(&[]));
        assert!(!has_command_field(&[0x52, 0x01, 0x41]));
        assert!(!has_command_field(&[0x08]));
        assert!(!has_command_field(&[0x52, 0x05, 0x41]));
    }

    #[test]
    fn signatures_count_only_in_pairs() {
        let mut m = req(Wire::CreateContainer);
        m.container_config_file = Some(b"x".to_vec());
        m.container_config_signature = Some(b"s".to_vec());
        let Command::Create { signature, .. } = Command::try_from(m).unwrap() else {
            panic!()
        };
        assert_eq!(signature, None);
    }
}
