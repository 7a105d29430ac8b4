//! Tests of argument parsing, exit statuses and whole exchanges against a scripted fake daemon.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;

use prost::Message as _;

use super::cli::{Command, IfaceArgs, parse_args, split_nopty};
use super::*;
use crate::protocol::{
    codec::{encode_frame, read_frame},
    pb::{
        ContainerConfig, ContainerState, ContainerStatus, ContainerTokenType, ControllerToDaemon,
        DaemonToController,
        controller_to_daemon::Command as Cmd,
        daemon_to_controller::{Code, Response},
    },
};

fn parse(args: &[&str]) -> Cli {
    parse_args(std::iter::once("control").chain(args.iter().copied())).unwrap()
}

fn parse_err(args: &[&str]) -> clap::Error {
    parse_args(std::iter::once("control").chain(args.iter().copied())).unwrap_err()
}

fn iface(container: &str, name: &str, persistent: bool) -> IfaceArgs {
    IfaceArgs {
        container: container.into(),
        iface: name.into(),
        persistent,
    }
}

#[test]
fn the_clap_definition_is_consistent() {
    cli_command().debug_assert();
}

#[test]
fn assign_iface_accepts_both_orders() {
    let want = Command::AssignIface(iface("c", "eth1", true));
    assert_eq!(
        parse(&["assign_iface", "--iface", "eth1", "c", "--persistent"]).command,
        want
    );
    assert_eq!(
        parse(&["assign_iface", "c", "--iface=eth1", "--persistent"]).command,
        want
    );
    assert_eq!(
        parse(&["assign_iface", "c", "-i", "eth1", "--persistent"]).command,
        want
    );
    assert_eq!(
        parse(&["assign_iface", "c", "-ieth1", "--persistent"]).command,
        want
    );
    let want = Command::UnassignIface(iface("c", "eth1", false));
    assert_eq!(parse(&["unassign_iface", "--iface", "eth1", "c"]).command, want);
    assert_eq!(parse(&["unassign_iface", "c", "--iface=eth1"]).command, want);
    assert_eq!(parse_err(&["assign_iface", "c"]).exit_code(), 2);
}

#[test]
fn run_keeps_everything_after_the_command() {
    let cli = parse(&["run", "c", "sh", "-c", "exit 3"]);
    let Command::Run { container, command } = &cli.command else {
        panic!("{cli:?}")
    };
    assert_eq!(container, "c");
    assert_eq!(command, &["sh", "-c", "exit 3"]);
    assert_eq!(split_nopty(command), (true, &command[..]));
    // Global flags after CMD belong to the command.
    let cli = parse(&["run", "c", "nopty", "ls", "--json", "-s", "--help"]);
    assert!(!cli.json);
    let Command::Run { command, .. } = &cli.command else {
        panic!("{cli:?}")
    };
    assert_eq!(command, &["nopty", "ls", "--json", "-s", "--help"]);
    let (pty, argv) = split_nopty(command);
    assert!(!pty);
    assert_eq!(argv, &["ls", "--json", "-s", "--help"]);
    // A lone `nopty` is the command itself.
    assert!(split_nopty(&["nopty".to_owned()]).0);
}

#[test]
fn json_and_proto_are_global() {
    for args in [
        &["--json", "list"][..],
        &["list", "--json"][..],
        &["-s", "/x", "list", "-s", "--json"][..],
    ] {
        let cli = parse(args);
        assert!(cli.json, "{args:?}");
        assert_eq!(cli.mode(), OutputMode::Json);
    }
    assert_eq!(parse(&["state", "c", "--proto"]).mode(), OutputMode::Proto);
    assert_eq!(parse(&["--proto", "state", "c"]).mode(), OutputMode::Proto);
    assert_eq!(parse(&["state", "c"]).mode(), OutputMode::Human);
}

#[test]
fn command_words_are_case_insensitive() {
    assert!(matches!(parse(&["LIST"]).command, Command::List { .. }));
    assert!(matches!(parse(&["List_GuestOS"]).command, Command::ListGuestos));
    let cli = parse(&["-s", "/tmp/Sock", "--json", "State", "MyBox"]);
    assert_eq!(cli.socket, std::path::Path::new("/tmp/Sock"));
    assert_eq!(
        cli.command,
        Command::State {
            container: "MyBox".into()
        }
    );
    let cli = parse(&["--socket=/S", "START", "Box", "--key=PiN"]);
    assert_eq!(
        cli.command,
        Command::Start {
            container: "Box".into(),
            key: Some("PiN".into()),
            setup: false
        }
    );
}

#[test]
fn list_s_means_system_and_socket_only_before_the_command() {
    let cli = parse(&["list", "-s", "extra", "words"]);
    assert_eq!(
        cli.command,
        Command::List {
            system: true,
            ignored: vec!["extra".into(), "words".into()]
        }
    );
    assert_eq!(cli.socket, std::path::Path::new(DEFAULT_SOCKET));
    assert_eq!(
        parse(&["list", "--system"]).command,
        Command::List {
            system: true,
            ignored: vec![]
        }
    );
    let cli = parse(&["-s", "/x", "list"]);
    assert_eq!(cli.socket, std::path::Path::new("/x"));
    assert_eq!(
        cli.command,
        Command::List {
            system: false,
            ignored: vec![]
        }
    );
    // `-s` after another command word is no socket option.
    assert_eq!(parse_err(&["state", "c", "-s", "/x"]).exit_code(), 2);
}

#[test]
fn start_key_needs_an_equals_sign() {
    let cli = parse(&["start", "c", "--key=1234", "--setup"]);
    assert_eq!(
        cli.command,
        Command::Start {
            container: "c".into(),
            key: Some("1234".into()),
            setup: true
        }
    );
    assert_eq!(
        parse(&["stop", "c", "--key="]).command,
        Command::Stop {
            container: "c".into(),
            key: Some("".into())
        }
    );
    assert_eq!(parse_err(&["start", "c", "--key", "1234"]).exit_code(), 2);
}

#[test]
fn other_commands_parse() {
    assert_eq!(
        parse(&["create", "a.conf", "a.sig", "a.cert"]).command,
        Command::Create {
            file: "a.conf".into(),
            signature: Some("a.sig".into()),
            certificate: Some("a.cert".into())
        }
    );
    assert_eq!(
        parse(&["dev_access", "c", "deny c 1:3 rwm"]).command,
        Command::DevAccess {
            container: "c".into(),
            rule: "deny c 1:3 rwm".into()
        }
    );
    assert_eq!(parse_err(&["push_guestos_config", "a", "b"]).exit_code(), 2);
    assert_eq!(parse_err(&["frobnicate"]).exit_code(), 2);
    assert!(matches!(
        parse(&["completions", "zsh"]).command,
        Command::Completions { .. }
    ));
}

#[test]
fn man_and_completions_render() {
    let mut man = Vec::new();
    clap_mangen::Man::new(cli_command()).render(&mut man).unwrap();
    let man = String::from_utf8(man).unwrap();
    assert!(man.contains("assign_iface"), "{man}");
    let mut comp = Vec::new();
    clap_complete::generate(
        clap_complete::Shell::Bash,
        &mut cli_command(),
        "control",
        &mut comp,
    );
    assert!(String::from_utf8(comp).unwrap().contains("push_guestos_config"));
}

#[test]
fn exit_codes_follow_the_contract() {
    let io = || std::io::Error::other("x");
    assert_eq!(
        ClientError::Connect {
            path: "/s".into(),
            source: io()
        }
        .exit_code(),
        3
    );
    assert_eq!(ClientError::Send(io()).exit_code(), 3);
    assert_eq!(ClientError::Closed.exit_code(), 3);
    assert_eq!(
        ClientError::Daemon {
            reply: "CMD_FAILED".into(),
            message: None
        }
        .exit_code(),
        1
    );
    assert_eq!(ClientError::NoSuchContainer("x".into()).exit_code(), 1);
    assert_eq!(ClientError::PinMismatch.exit_code(), 1);
    assert_eq!(
        ClientError::ReadFile {
            path: "/f".into(),
            source: io()
        }
        .exit_code(),
        1
    );
    assert_eq!(
        ClientError::UnexpectedReply {
            expected: "A",
            got: "B".into()
        }
        .exit_code(),
        1
    );
    assert_eq!(ClientError::Run(Box::new(ClientError::Closed)).exit_code(), 125);
    assert_eq!(
        ClientError::Run(Box::new(ClientError::NoSuchContainer("x".into()))).exit_code(),
        125
    );
    let e = ClientError::Daemon {
        reply: "CMD_FAILED".into(),
        message: Some("container is running".into()),
    };
    assert_eq!(e.report(), "container is running");
    let e = ClientError::Daemon {
        reply: "CMD_FAILED".into(),
        message: None,
    };
    assert_eq!(e.report(), "the daemon answered CMD_FAILED");
    let e = ClientError::Run(Box::new(ClientError::Connect {
        path: "/s".into(),
        source: io(),
    }));
    assert_eq!(e.report(), "cannot connect to /s: x");
    assert_eq!(
        ClientError::NoSuchContainer("web".into()).report(),
        "no container named or with UUID web"
    );
}

// ---- whole exchanges against a scripted daemon ----

const UUID_A: &str = "11111111-2222-3333-4444-555555555555";
const UUID_B: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

fn status(name: &str, uuid: &str, token: ContainerTokenType) -> ContainerStatus {
    ContainerStatus {
        uuid: uuid.into(),
        name: name.into(),
        r#type: 1,
        state: ContainerState::Running as i32,
        guestos: "busybox".into(),
        trust_level: 3,
        cryptfs_mode: 1,
        token_type: Some(token as i32),
        ..Default::default()
    }
}

fn statuses() -> DaemonToController {
    DaemonToController {
        code: Code::ContainerStatus as i32,
        container_status: vec![
            status("plain", UUID_A, ContainerTokenType::None),
            status("secret", UUID_B, ContainerTokenType::Soft),
        ],
        ..Default::default()
    }
}

fn response(r: Response) -> DaemonToController {
    DaemonToController {
        code: Code::Response as i32,
        response: Some(r as i32),
        ..Default::default()
    }
}

/// A daemon that answers each request with the next scripted reply and returns what it received.
fn fake_daemon(replies: Vec<DaemonToController>) -> (UnixStream, JoinHandle<Vec<ControllerToDaemon>>) {
    let (client, mut server) = UnixStream::pair().unwrap();
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for reply in replies {
            let Some(frame) = read_frame(&mut server).unwrap() else {
                break;
            };
            seen.push(ControllerToDaemon::decode(frame.as_slice()).unwrap());
            server.write_all(&encode_frame(&reply)).unwrap();
        }
        seen
    });
    (client, handle)
}

struct ScriptedPins(Vec<&'static str>, Vec<String>);

impl PinSource for ScriptedPins {
    fn read_pin(&mut self, prompt: &str) -> Result<String, ClientError> {
        self.1.push(prompt.to_owned());
        if self.0.is_empty() {
            return Err(ClientError::ReadPin(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(self.0.remove(0).to_owned())
    }
}

fn exchange(
    args: &[&str],
    replies: Vec<DaemonToController>,
    pins: &mut ScriptedPins,
) -> (Result<u8, ClientError>, String, Vec<ControllerToDaemon>) {
    let cli = parse(args);
    let (stream, daemon) = fake_daemon(replies);
    let mut out = Vec::new();
    let result = {
        let mut session = Session::new(stream, cli.mode(), &mut out);
        commands::dispatch(&mut session, &cli.command, pins)
    };
    let seen = daemon.join().unwrap();
    (result, String::from_utf8(out).unwrap(), seen)
}

fn no_pins() -> ScriptedPins {
    ScriptedPins(vec![], vec![])
}

#[test]
fn start_of_a_none_container_never_asks_for_a_pin() {
    let mut pins = no_pins();
    let (r, out, seen) = exchange(
        &["start", "plain"],
        vec![statuses(), response(Response::ContainerStartOk)],
        &mut pins,
    );
    assert_eq!(r.unwrap(), 0);
    assert_eq!(out, "");
    assert!(pins.1.is_empty());
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].command, Cmd::GetContainerStatus as i32);
    assert!(seen[0].container_uuids.is_empty());
    assert_eq!(seen[1].command, Cmd::ContainerStart as i32);
    assert_eq!(seen[1].container_uuids, vec![UUID_A]);
    let params = seen[1].container_start_params.as_ref().unwrap();
    assert_eq!((params.key.as_deref(), params.setup), (None, Some(false)));
}

#[test]
fn start_of_a_soft_container_asks_after_cmld_handles_pin() {
    let mut pins = ScriptedPins(vec!["1234"], vec![]);
    let handles = DaemonToController {
        code: Code::ContainerCmldHandlesPin as i32,
        container_cmld_handles_pin: Some(false),
        ..Default::default()
    };
    let (r, _, seen) = exchange(
        &["start", "secret", "--setup"],
        vec![statuses(), handles, response(Response::ContainerStartOk)],
        &mut pins,
    );
    assert_eq!(r.unwrap(), 0);
    assert_eq!(pins.1, vec!["Password: "]);
    let cmds: Vec<i32> = seen.iter().map(|m| m.command).collect();
    assert_eq!(
        cmds,
        vec![
            Cmd::GetContainerStatus as i32,
            Cmd::ContainerCmldHandlesPin as i32,
            Cmd::ContainerStart as i32
        ]
    );
    let params = seen[2].container_start_params.as_ref().unwrap();
    assert_eq!((params.key.as_deref(), params.setup), (Some("1234"), Some(true)));
}

#[test]
fn start_with_key_sends_it_without_prompting() {
    let mut pins = no_pins();
    let (r, _, seen) = exchange(
        &["start", UUID_B, "--key=9999"],
        vec![statuses(), response(Response::ContainerStartOk)],
        &mut pins,
    );
    assert_eq!(r.unwrap(), 0);
    assert!(pins.1.is_empty());
    assert_eq!(
        seen[1].container_start_params.as_ref().unwrap().key.as_deref(),
        Some("9999")
    );
}

#[test]
fn a_failure_reply_is_exit_1_with_the_daemon_message_and_json() {
    let mut pins = no_pins();
    let mut fail = response(Response::ContainerStopFailedNotRunning);
    fail.error_message = Some("container plain is not running".into());
    let (r, out, _) = exchange(&["stop", "plain", "--json"], vec![statuses(), fail], &mut pins);
    let e = r.unwrap_err();
    assert_eq!(e.exit_code(), 1);
    assert_eq!(e.report(), "container plain is not running");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["response"], "CONTAINER_STOP_FAILED_NOT_RUNNING");
    assert_eq!(doc["error"], "container plain is not running");
}

#[test]
fn response_commands_print_json_on_success() {
    let (r, out, seen) = exchange(
        &["--json", "reload"],
        vec![response(Response::CmdOk)],
        &mut no_pins(),
    );
    assert_eq!(r.unwrap(), 0);
    assert_eq!(out, "{\"response\":\"CMD_OK\"}\n");
    assert_eq!(seen[0].command, Cmd::ReloadContainers as i32);
}

#[test]
fn unknown_container_is_exit_1() {
    let (r, _, seen) = exchange(&["freeze", "nope"], vec![statuses()], &mut no_pins());
    let e = r.unwrap_err();
    assert!(matches!(e, ClientError::NoSuchContainer(_)), "{e:?}");
    assert_eq!(e.exit_code(), 1);
    assert_eq!(seen.len(), 1);
}

#[test]
fn state_prints_the_enum_name_alone() {
    let one = DaemonToController {
        code: Code::ContainerStatus as i32,
        container_status: vec![status("secret", UUID_B, ContainerTokenType::Soft)],
        ..Default::default()
    };
    let (r, out, seen) = exchange(
        &["state", "secret"],
        vec![statuses(), one.clone()],
        &mut no_pins(),
    );
    assert_eq!(r.unwrap(), 0);
    assert_eq!(out, "RUNNING\n");
    assert_eq!(seen[1].container_uuids, vec![UUID_B]);
    let (_, out, _) = exchange(
        &["state", "secret", "--json"],
        vec![statuses(), one.clone()],
        &mut no_pins(),
    );
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["uuid"], UUID_B);
    assert_eq!(doc["token_type"], "SOFT");
    // --proto echoes the command's reply, not the name lookup.
    let (_, out, _) = exchange(
        &["state", "secret", "--proto"],
        vec![statuses(), one],
        &mut no_pins(),
    );
    assert_eq!(out.matches("code: CONTAINER_STATUS").count(), 1, "{out}");
    assert!(out.contains("state: RUNNING"), "{out}");
}

#[test]
fn list_prints_one_line_per_container() {
    let (r, out, seen) = exchange(&["list"], vec![statuses()], &mut no_pins());
    assert_eq!(r.unwrap(), 0);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.starts_with("NAME "));
    assert_eq!(seen[0].system_services, None);
    let (_, out, seen) = exchange(&["list", "-s", "--json"], vec![statuses()], &mut no_pins());
    assert_eq!(seen[0].system_services, Some(true));
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["containers"].as_array().unwrap().len(), 2);
}

#[test]
fn change_pin_refuses_mismatched_new_pins() {
    let mut pins = ScriptedPins(vec!["old", "new1", "new2"], vec![]);
    let (r, _, seen) = exchange(&["change_pin", "secret"], vec![statuses()], &mut pins);
    assert!(matches!(r, Err(ClientError::PinMismatch)));
    assert_eq!(
        pins.1,
        vec!["Current Password: ", "New Password: ", "Re-enter New Password: "]
    );
    assert_eq!(seen.len(), 1);
    let mut pins = ScriptedPins(vec!["old", "new", "new"], vec![]);
    let (r, _, seen) = exchange(
        &["change_pin", "secret"],
        vec![statuses(), response(Response::ContainerChangePinSuccessful)],
        &mut pins,
    );
    assert_eq!(r.unwrap(), 0);
    assert_eq!(
        (seen[1].device_pin.as_deref(), seen[1].device_newpin.as_deref()),
        (Some("old"), Some("new"))
    );
}

#[test]
fn config_prints_protobuf_text_and_an_empty_reply_fails() {
    let config = ContainerConfig {
        name: "plain".into(),
        guest_os: "busybox".into(),
        ..Default::default()
    };
    let reply = DaemonToController {
        code: Code::ContainerConfig as i32,
        container_configs: vec![config],
        container_uuids: vec![UUID_A.into()],
        ..Default::default()
    };
    let (r, out, _) = exchange(
        &["config", "plain"],
        vec![statuses(), reply.clone()],
        &mut no_pins(),
    );
    assert_eq!(r.unwrap(), 0);
    assert!(
        out.starts_with("name: \"plain\"\nguest_os: \"busybox\"\n"),
        "{out}"
    );
    let (_, out, _) = exchange(
        &["config", "plain", "--json"],
        vec![statuses(), reply],
        &mut no_pins(),
    );
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["uuid"], UUID_A);
    assert_eq!(doc["config"]["name"], "plain");
    let empty = DaemonToController {
        code: Code::ContainerConfig as i32,
        ..Default::default()
    };
    let (r, _, _) = exchange(&["config", "plain"], vec![statuses(), empty], &mut no_pins());
    assert_eq!(r.unwrap_err().exit_code(), 1);
}

#[test]
fn a_response_where_data_was_expected_is_a_failure() {
    let (r, out, _) = exchange(
        &["list_guestos"],
        vec![response(Response::CmdFailed)],
        &mut no_pins(),
    );
    assert_eq!(r.unwrap_err().exit_code(), 1);
    assert_eq!(out, "");
}

#[test]
fn push_guestos_config_waits_through_started() {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<String> = ["c", "s", "p"]
        .iter()
        .map(|n| {
            let p = dir.path().join(n);
            std::fs::write(&p, n).unwrap();
            p.to_string_lossy().into_owned()
        })
        .collect();
    let cli = parse(&["push_guestos_config", &paths[0], &paths[1], &paths[2]]);
    let (mut client, mut server) = UnixStream::pair().unwrap();
    let daemon = std::thread::spawn(move || {
        let frame = read_frame(&mut server).unwrap().unwrap();
        let req = ControllerToDaemon::decode(frame.as_slice()).unwrap();
        for r in [
            Response::GuestosMgrInstallStarted,
            Response::GuestosMgrInstallStarted,
        ] {
            server.write_all(&encode_frame(&response(r))).unwrap();
        }
        server
            .write_all(&encode_frame(&response(Response::GuestosMgrInstallCompleted)))
            .unwrap();
        req
    });
    let mut out = Vec::new();
    let r = {
        let mut session = Session::new(&mut client, OutputMode::Human, &mut out);
        commands::dispatch(&mut session, &cli.command, &mut no_pins())
    };
    assert_eq!(r.unwrap(), 0);
    let req = daemon.join().unwrap();
    assert_eq!(req.guestos_config_file.as_deref(), Some(&b"c"[..]));
    assert_eq!(req.guestos_config_certificate.as_deref(), Some(&b"p"[..]));
    // Nothing more is pending on the socket.
    client.set_nonblocking(true).unwrap();
    assert!(client.read(&mut [0u8; 1]).map_or(true, |n| n == 0));
}

#[test]
fn unreadable_file_is_exit_1_before_sending() {
    let (r, _, seen) = exchange(&["create", "/nonexistent/x.conf"], vec![], &mut no_pins());
    let e = r.unwrap_err();
    assert!(matches!(e, ClientError::ReadFile { .. }), "{e:?}");
    assert_eq!(e.exit_code(), 1);
    assert!(seen.is_empty());
}

#[test]
fn a_closed_connection_is_exit_3() {
    let (client, server) = UnixStream::pair().unwrap();
    drop(server);
    let mut out = Vec::new();
    let mut session = Session::new(client, OutputMode::Human, &mut out);
    let e = commands::dispatch(&mut session, &Command::Reload, &mut no_pins()).unwrap_err();
    assert_eq!(e.exit_code(), 3);
}

#[test]
fn run_streams_output_forwards_input_and_exits_with_the_status() {
    let cli = parse(&["run", "plain", "nopty", "sh", "-c", "exit 3"]);
    let Command::Run { container, command } = &cli.command else {
        panic!("{cli:?}")
    };
    let (pty, argv) = split_nopty(command);
    let (client, mut server) = UnixStream::pair().unwrap();
    let daemon = std::thread::spawn(move || {
        let next = |s: &mut UnixStream| {
            ControllerToDaemon::decode(read_frame(s).unwrap().unwrap().as_slice()).unwrap()
        };
        let lookup = next(&mut server);
        server.write_all(&encode_frame(&statuses())).unwrap();
        let exec = next(&mut server);
        let input = next(&mut server);
        let eof = next(&mut server);
        assert_eq!((eof.exec_input, eof.exec_input_eof), (None, Some(true)));
        for chunk in [&b"hello "[..], b"world\n"] {
            let out = DaemonToController {
                code: Code::ExecOutput as i32,
                exec_output: Some(chunk.to_vec()),
                ..Default::default()
            };
            server.write_all(&encode_frame(&out)).unwrap();
        }
        let end = DaemonToController {
            code: Code::ExecEnd as i32,
            exec_end_reason: Some("3".into()),
            ..Default::default()
        };
        server.write_all(&encode_frame(&end)).unwrap();
        (lookup, exec, input)
    });
    let mut out = Vec::new();
    let status = {
        let mut session = Session::new(client, OutputMode::Human, &mut out);
        exec::run_with_input(&mut session, container, pty, argv, &b"typed"[..]).unwrap()
    };
    assert_eq!(status, 3);
    assert_eq!(out, b"hello world\n");
    let (lookup, exec, input) = daemon.join().unwrap();
    assert_eq!(lookup.command, Cmd::GetContainerStatus as i32);
    assert_eq!(exec.command, Cmd::ContainerExecCmd as i32);
    assert_eq!(exec.container_uuids, vec![UUID_A]);
    assert_eq!(exec.exec_command.as_deref(), Some("sh"));
    assert_eq!(exec.exec_args, vec!["sh", "-c", "exit 3"]);
    assert_eq!(exec.exec_pty, Some(false));
    assert_eq!(input.command, Cmd::ContainerExecInput as i32);
    assert_eq!(input.exec_input.as_deref(), Some("typed"));
}

#[test]
fn run_refused_by_the_daemon_is_a_failure() {
    let (client, mut server) = UnixStream::pair().unwrap();
    let daemon = std::thread::spawn(move || {
        read_frame(&mut server).unwrap();
        server.write_all(&encode_frame(&statuses())).unwrap();
        read_frame(&mut server).unwrap();
        let mut refused = response(Response::CmdFailed);
        refused.error_message = Some("container plain is not running".into());
        server.write_all(&encode_frame(&refused)).unwrap();
    });
    let mut out = Vec::new();
    let mut session = Session::new(client, OutputMode::Human, &mut out);
    let argv = vec!["true".to_owned()];
    let e = exec::run_with_input(&mut session, "plain", false, &argv, std::io::empty()).unwrap_err();
    daemon.join().unwrap();
    assert_eq!(e.report(), "container plain is not running");
    // execute() wraps run's errors so that they exit 125.
    assert_eq!(ClientError::Run(Box::new(e)).exit_code(), 125);
}

#[test]
fn ifaces_lines_become_a_table_and_json() {
    use crate::client::format::{ifaces_json, ifaces_table};
    let lines = vec![
        "lo 00:00:00:00:00:00 UNKNOWN 127.0.0.1/8 ::1/128".to_owned(),
        "eth0 02:aa:bb:cc:dd:ee UP 172.23.4.2/24".to_owned(),
        "net1 - DOWN".to_owned(),
    ];
    assert_eq!(
        ifaces_table(&lines),
        "NAME  MAC                STATE    ADDRESSES\n\
         lo    00:00:00:00:00:00  UNKNOWN  127.0.0.1/8 ::1/128\n\
         eth0  02:aa:bb:cc:dd:ee  UP       172.23.4.2/24\n\
         net1  -                  DOWN\n"
    );
    let j = ifaces_json(&lines);
    assert_eq!(j["ifaces"][1]["addresses"][0], "172.23.4.2/24");
    assert_eq!(j["ifaces"][2]["mac"], serde_json::Value::Null);
    // An upstream daemon's `ip link` lines pass through unchanged.
    let raw = vec![
        "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536\n".to_owned(),
        "x".to_owned(),
    ];
    assert_eq!(ifaces_table(&raw), "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536\nx\n");
    assert_eq!(ifaces_json(&raw)["ifaces"][1], "x");
}
