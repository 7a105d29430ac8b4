//! Wire-level tests: raw frames as upstream's client sends them, hostile frames, concurrency and
//! crash consistency, against a real cmld.

#![allow(clippy::unwrap_used)]

mod common;

use std::{collections::HashSet, fs, io::Write, os::unix::net::UnixStream, thread};

use cml::protocol::{
    pb::{
        ContainerConfig, ContainerStartParams, ControllerToDaemon, DaemonToController,
        controller_to_daemon::Command as Cmd,
        daemon_to_controller::{Code, Response},
    },
    text,
};
use common::{Daemon, container_conf};
use prost::Message;
use prost_reflect::{Cardinality, DynamicMessage, ReflectMessage};

fn req(cmd: Cmd) -> ControllerToDaemon {
    ControllerToDaemon {
        command: cmd as i32,
        ..Default::default()
    }
}

fn create_raw(c: &mut common::Client, name: &str) -> String {
    let mut m = req(Cmd::CreateContainer);
    m.container_config_file = Some(container_conf(name).into_bytes());
    let r = c.call(&m);
    assert_eq!(r.code, Code::ContainerConfig as i32, "{r:?}");
    r.container_uuids[0].clone()
}

/// Every field upstream marks `required` must be present, or upstream's client rejects the reply.
/// Our proto relaxes `type`/`token_type` of ContainerConfig, so those are checked by name too.
fn assert_upstream_required(msg: &DynamicMessage, path: &str) {
    for f in msg.descriptor().fields() {
        let upstream_required = f.cardinality() == Cardinality::Required
            || (msg.descriptor().name() == "ContainerConfig" && matches!(f.name(), "type" | "token_type"));
        if upstream_required {
            assert!(msg.has_field(&f), "{path}.{} missing", f.name());
        }
        if let prost_reflect::Value::List(items) = &*msg.get_field(&f) {
            for (i, it) in items.iter().enumerate() {
                if let Some(m) = it.as_message() {
                    assert_upstream_required(m, &format!("{path}.{}[{i}]", f.name()));
                }
            }
        } else if msg.has_field(&f)
            && let Some(m) = msg.get_field(&f).as_message()
        {
            assert_upstream_required(m, &format!("{path}.{}", f.name()));
        }
    }
}

fn decode_checked(raw: &[u8]) -> DaemonToController {
    let desc = text::descriptor_of::<DaemonToController>();
    let dynamic = DynamicMessage::decode(desc, raw).unwrap();
    assert_upstream_required(&dynamic, "DaemonToController");
    DaemonToController::decode(raw).unwrap()
}

#[test]
fn upstream_client_byte_sequences_are_answered() {
    let d = Daemon::start();
    let mut c = d.connect();

    // `control create`: CREATE_CONTAINER with the file bytes.
    let conf = b"name: \"web\"\nguest_os: \"busybox\"\ncolor: 0\n";
    let mut frame = vec![0, 0, 0, (4 + conf.len()) as u8, 0x08, 22, 0x6a, conf.len() as u8];
    frame.extend_from_slice(conf);
    c.send_raw(&frame);
    let r = decode_checked(&c.recv_raw().unwrap());
    assert_eq!(r.code, Code::ContainerConfig as i32);
    let uuid = r.container_uuids[0].clone();
    assert_eq!(r.container_configs[0].name, "web");

    // `control list`: exactly the bytes upstream sends (GET_CONTAINER_STATUS, system_services=true).
    c.send_raw(&[0, 0, 0, 5, 0x08, 0x03, 0xf0, 0x02, 0x01]);
    let r = decode_checked(&c.recv_raw().unwrap());
    assert_eq!(r.code, Code::ContainerStatus as i32);
    assert_eq!(r.container_status.len(), 1);
    let st = &r.container_status[0];
    assert_eq!(
        (st.name.as_str(), st.uuid.as_str(), st.state),
        ("web", uuid.as_str(), 1)
    );
    assert_eq!(st.guestos, "busybox");

    // `control state web`: GET_CONTAINER_STATUS with the uuid.
    let mut m = req(Cmd::GetContainerStatus);
    m.container_uuids = vec![uuid.clone()];
    m.system_services = Some(true);
    c.send_raw(&cml::protocol::codec::encode_frame(&m));
    let r = decode_checked(&c.recv_raw().unwrap());
    assert_eq!(r.container_status[0].uuid, uuid);

    // `control config web`.
    let mut m = req(Cmd::GetContainerConfig);
    m.container_uuids = vec![uuid.clone()];
    c.send_raw(&cml::protocol::codec::encode_frame(&m));
    let r = decode_checked(&c.recv_raw().unwrap());
    assert_eq!(r.code, Code::ContainerConfig as i32);
    assert_eq!(r.container_uuids, vec![uuid.clone()]);
    assert_eq!(r.container_configs[0].r#type, Some(1));
    assert_eq!(r.container_configs[0].token_type, Some(2));

    // `control list_guestos`: 00 00 00 02 | 08 01.
    c.send_raw(&[0, 0, 0, 2, 0x08, 0x01]);
    let r = decode_checked(&c.recv_raw().unwrap());
    assert_eq!(r.code, Code::GuestosConfigsList as i32);
    assert_eq!(r.guestos_configs[0].name, "busybox");
    assert_eq!(r.guestos_configs[0].version, 1);

    // The stored file is readable back and holds the upstream-required fields.
    let stored = fs::read(d.data.join(format!("containers/{uuid}.conf"))).unwrap();
    let cfg: ContainerConfig = text::parse(&stored).unwrap();
    assert_eq!(cfg.name, "web");
    let stored = String::from_utf8(stored).unwrap();
    assert!(
        stored.contains("type: CONTAINER") && stored.contains("token_type: SOFT"),
        "{stored}"
    );
}

#[test]
fn replies_come_in_request_order_when_pipelined() {
    let d = Daemon::start();
    let mut c = d.connect();
    // create, list, create, list, handles_pin — written at once, read afterwards.
    let mut batch = Vec::new();
    for name in ["p1", "p2"] {
        let mut m = req(Cmd::CreateContainer);
        m.container_config_file = Some(container_conf(name).into_bytes());
        batch.extend(cml::protocol::codec::encode_frame(&m));
        batch.extend(cml::protocol::codec::encode_frame(&req(Cmd::GetContainerStatus)));
    }
    batch.extend(cml::protocol::codec::encode_frame(&req(Cmd::GetProvisioned)));
    c.send_raw(&batch);
    let codes: Vec<i32> = (0..5).map(|_| c.recv().code).collect();
    let cc = Code::ContainerConfig as i32;
    let cs = Code::ContainerStatus as i32;
    assert_eq!(codes, vec![cc, cs, cc, cs, Code::DeviceProvisionedState as i32]);
}

#[test]
fn every_request_is_answered() {
    let d = Daemon::start();
    let mut c = d.connect();
    let uuid = create_raw(&mut c, "x");
    for cmd in (0..300).filter_map(|i| Cmd::try_from(i).ok()) {
        if cmd == Cmd::ContainerExecInput {
            continue; // belongs to an exec stream; never answered (SPEC §2)
        }
        if cmd == Cmd::SetProvisioned {
            continue; // would restrict the rest of this test (tests/provisioning.rs covers it)
        }
        // Bare request: no parameters at all.
        let r = c.call(&req(cmd));
        if r.code == Code::Response as i32 && r.response != Some(Response::CmdOk as i32) {
            assert!(
                r.error_message.as_deref().is_some_and(|m| !m.is_empty()),
                "{cmd:?}: {r:?}"
            );
        }
        // With a known container.
        let mut m = req(cmd);
        m.container_uuids = vec![uuid.clone()];
        m.container_start_params = Some(ContainerStartParams::default());
        let r = c.call(&m);
        if r.code == Code::Response as i32 && r.response != Some(Response::CmdOk as i32) {
            assert!(r.error_message.is_some(), "{cmd:?}: {r:?}");
        }
        // With an unknown container: a failure with a reason, never silence.
        if cmd as i32 >= 100 {
            let mut m = req(cmd);
            m.container_uuids = vec!["00000000-0000-4000-8000-000000000001".into()];
            let r = c.call(&m);
            assert_eq!(r.code, Code::Response as i32, "{cmd:?}");
            assert!(r.error_message.is_some(), "{cmd:?}");
        }
    }
    // Unknown command numbers: CMD_UNSUPPORTED with a reason.
    let r = c.call(&ControllerToDaemon {
        command: 4242,
        ..Default::default()
    });
    assert_eq!(r.response, Some(Response::CmdUnsupported as i32));
    assert!(r.error_message.is_some());
    // EXEC_INPUT without a stream: nothing comes back, and the connection keeps working.
    let mut m = req(Cmd::ContainerExecInput);
    m.exec_input = Some("x".into());
    c.send(&m);
    assert_eq!(
        c.call(&req(Cmd::GetProvisioned)).code,
        Code::DeviceProvisionedState as i32
    );
    // A path trick in a UUID is refused.
    let mut m = req(Cmd::RemoveContainer);
    m.container_uuids = vec!["../../../etc".into()];
    let r = c.call(&m);
    assert_eq!(r.response, Some(Response::CmdFailed as i32));
}

#[test]
fn oversize_frame_gets_cmd_failed_and_close() {
    let d = Daemon::start();
    let mut c = d.connect();
    c.send_raw(&(64u32 * 1024 * 1024 + 1).to_be_bytes());
    let r = c.recv();
    assert_eq!(r.response, Some(Response::CmdFailed as i32));
    assert!(r.error_message.unwrap().contains("exceeds"));
    assert!(c.is_closed());
    // Length prefix 2^32-1 as well; and the daemon still serves others.
    let mut c = d.connect();
    c.send_raw(&[0xff, 0xff, 0xff, 0xff]);
    assert_eq!(c.recv().response, Some(Response::CmdFailed as i32));
    assert!(c.is_closed());
    assert_eq!(
        d.connect().call(&req(Cmd::GetProvisioned)).code,
        Code::DeviceProvisionedState as i32
    );
}

#[test]
fn garbage_and_malformed_frames_are_refused() {
    let d = Daemon::start();
    // Plain text: the "length" is huge.
    let mut c = d.connect();
    c.send_raw(b"hello daemon, are you there?\n");
    assert_eq!(c.recv().response, Some(Response::CmdFailed as i32));
    assert!(c.is_closed());
    // A small frame that is not protobuf.
    let mut c = d.connect();
    c.send_raw(&[0, 0, 0, 3, 0xff, 0xff, 0xff]);
    let r = c.recv();
    assert_eq!(r.response, Some(Response::CmdFailed as i32));
    assert!(r.error_message.unwrap().contains("malformed"));
    assert!(c.is_closed());
    // Length 0: a message without the required command.
    let mut c = d.connect();
    c.send_raw(&[0, 0, 0, 0]);
    let r = c.recv();
    assert!(r.error_message.unwrap().contains("command"));
    assert!(c.is_closed());
    assert_eq!(
        d.connect().call(&req(Cmd::GetProvisioned)).code,
        Code::DeviceProvisionedState as i32
    );
}

#[test]
fn client_that_disconnects_mid_frame_does_not_disturb_others() {
    let d = Daemon::start();
    let mut half = d.connect();
    let mut steady = d.connect();
    // Announce 100 bytes, send 10, keep the connection open: others must still be served.
    half.send_raw(&[
        0, 0, 0, 100, 0x08, 0x03, 0x52, 0x05, b'a', b'b', b'c', b'd', b'e', b'f',
    ]);
    assert_eq!(
        steady.call(&req(Cmd::GetContainerStatus)).code,
        Code::ContainerStatus as i32
    );
    drop(half);
    assert_eq!(
        steady.call(&req(Cmd::GetContainerStatus)).code,
        Code::ContainerStatus as i32
    );
    let mut c = d.connect();
    create_raw(&mut c, "after");
    assert_eq!(c.call(&req(Cmd::GetContainerStatus)).container_status.len(), 1);
}

#[test]
fn fifty_concurrent_clients_each_create_a_container() {
    let d = Daemon::start();
    let socket = d.socket.clone();
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let socket = socket.clone();
            thread::spawn(move || {
                let mut c = common::Client(UnixStream::connect(&socket).unwrap());
                create_raw(&mut c, &format!("c{i}"))
            })
        })
        .collect();
    let uuids: HashSet<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(uuids.len(), 50);
    let listed = d.connect().call(&req(Cmd::GetContainerStatus)).container_status;
    assert_eq!(listed.len(), 50);
    let names: HashSet<String> = listed.iter().map(|s| s.name.clone()).collect();
    assert_eq!(names.len(), 50);
    // Every file on disk parses: no torn config, no temporary left over.
    let mut confs = 0;
    for e in fs::read_dir(d.data.join("containers")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "leftover {name}");
        if name.ends_with(".conf") {
            confs += 1;
            text::parse::<ContainerConfig>(&fs::read(e.path()).unwrap()).unwrap();
        }
    }
    assert_eq!(confs, 50);
}

#[test]
fn sigkill_during_concurrent_creates_leaves_only_complete_configs() {
    let mut d = Daemon::start();
    let socket = d.socket.clone();
    let handles: Vec<_> = (0..100)
        .map(|i| {
            let socket = socket.clone();
            thread::spawn(move || {
                let Ok(mut s) = UnixStream::connect(&socket) else {
                    return;
                };
                let mut m = req(Cmd::CreateContainer);
                m.container_config_file = Some(container_conf(&format!("k{i}")).into_bytes());
                let _ = s.write_all(&cml::protocol::codec::encode_frame(&m));
                let _ = cml::protocol::codec::read_frame(&mut s);
            })
        })
        .collect();
    // Kill once some configs are committed and others are still in flight.
    let containers = d.data.join("containers");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while fs::read_dir(&containers).map_or(0, |r| {
        r.filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".conf"))
        })
        .count()
    }) < 5
        && std::time::Instant::now() < deadline
    {
        thread::sleep(std::time::Duration::from_millis(1));
    }
    d.kill9();
    for h in handles {
        h.join().unwrap();
    }
    let d = d.restart();
    let listed = d.connect().call(&req(Cmd::GetContainerStatus)).container_status;
    let on_disk: Vec<_> = fs::read_dir(d.data.join("containers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let confs: Vec<_> = on_disk.iter().filter(|n| n.ends_with(".conf")).collect();
    assert_eq!(listed.len(), confs.len(), "listed vs on disk: {on_disk:?}");
    assert!(
        on_disk.iter().all(|n| !n.starts_with('.')),
        "temporary files survived restart: {on_disk:?}"
    );
    for conf in confs {
        text::parse::<ContainerConfig>(&fs::read(d.data.join("containers").join(conf)).unwrap()).unwrap();
    }
    for s in &listed {
        assert!(s.name.starts_with('k'));
    }
    eprintln!("{} of 100 creates were committed before SIGKILL", listed.len());
    // The daemon is usable after the crash.
    let mut c = d.connect();
    create_raw(&mut c, "after-crash");
}

#[test]
fn sigterm_and_sigint_exit_cleanly_and_remove_the_socket() {
    for sig in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
    ] {
        let mut d = Daemon::start();
        let st = d.terminate(sig);
        assert!(st.success(), "{sig}: {st}");
        assert!(!d.socket.exists(), "{sig}");
    }
}

#[test]
fn bad_device_conf_stops_the_daemon_with_line_and_column() {
    let d = Daemon::prepare();
    fs::write(
        d.data.join("device.conf"),
        "hostedmode: true\nsigned_configs: maybe\n",
    )
    .unwrap();
    let (st, log) = d.run_to_exit();
    assert!(!st.success());
    assert!(log.contains("device.conf:2:17"), "{log}");
}

#[test]
fn first_start_creates_device_conf_with_signatures_on() {
    let d = Daemon::prepare().spawn();
    let text = fs::read_to_string(d.data.join("device.conf")).unwrap();
    assert!(text.contains("signed_configs: true"), "{text}");
    // With signatures required, an unsigned create is refused with a reason.
    common::install_guestos(&d.data, "busybox", 1);
    let mut c = d.connect();
    let r = c.call(&req(Cmd::ReloadContainers));
    assert_eq!(r.response, Some(Response::CmdOk as i32));
    let mut m = req(Cmd::CreateContainer);
    m.container_config_file = Some(container_conf("s").into_bytes());
    let r = c.call(&m);
    assert_eq!(r.response, Some(Response::CmdFailed as i32));
    assert!(r.error_message.unwrap().contains("signed_configs"));
}
