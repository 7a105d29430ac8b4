//! Hostile input: property tests of the parsers that face untrusted bytes (the frame decoder, the
//! protobuf text parser, the request → command translation), then a table of named bad inputs
//! against a real cmld, each with the reply it must get, and symlinks planted in the data dir.
//!
//! The property tests also watch allocations (a counting global allocator): a length prefix or a
//! claimed size must never turn into an allocation the peer did not pay for with bytes.
//! `tests/wire.rs` covers upstream's byte sequences, garbage text, pipelining and concurrency; the
//! rows here overlap with it only where the issue names the input explicitly.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    fs,
    io::Cursor,
    net::Shutdown,
    time::Duration,
};

use bytes::BytesMut;
use cml::{
    container::{ConfigError, load_config},
    protocol::{
        MAX_FRAME,
        codec::{FrameCodec, FrameError, encode_frame, read_frame},
        command::{Command, RequestError, has_command_field, wire_name},
        pb::{
            AssignInterfaceParams, ContainerConfig, ContainerStartParams, ContainerVnetConfig,
            ControllerToDaemon, DaemonToController, DeviceConfig, GuestOsConfig, WindowSize,
            controller_to_daemon::Command as Cmd,
            daemon_to_controller::{Code, Response},
        },
        reply,
        text::{self, TextError},
    },
};
use common::Daemon;
use proptest::{collection::vec, prelude::*, sample::select};
use prost::Message;
use tokio_util::codec::Decoder;

// ---------------------------------------------------------------------------------------------
// Allocation watch
// ---------------------------------------------------------------------------------------------

/// The system allocator, recording per thread the largest single allocation requested.
struct Watching;

thread_local! {
    // `const` initialisation: no lazy init and no destructor, so using it inside the allocator
    // cannot recurse into the allocator.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

/// The largest allocation this thread requested since the last call.
fn largest_allocation_since_last_call() -> usize {
    LARGEST.with(|l| l.replace(0))
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the only addition
// is a write to a thread-local `Cell`, which neither allocates nor unwinds.
unsafe impl GlobalAlloc for Watching {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract for `GlobalAlloc::alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`. Forwarded (not alloc + memset) so large zeroed buffers stay lazy.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through this type) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: `ptr` was allocated by `System` (through this type) with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Watching = Watching;

/// `cases` cases, or `PROPTEST_CASES` when set (the long run).
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        // Keep failing seeds out of the source tree; proptest prints the minimal case.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Frame decoder
// ---------------------------------------------------------------------------------------------

/// What the framing of `stream` is, computed independently of the codec: the complete frames, the
/// announced length that ended decoding as too large (if any), and how many bytes are left over.
fn frames_of(stream: &[u8]) -> (Vec<&[u8]>, Option<usize>, usize) {
    let mut frames = Vec::new();
    let mut rest = stream;
    loop {
        let Some((prefix, body)) = rest.split_first_chunk::<4>() else {
            return (frames, None, rest.len());
        };
        let len = u32::from_be_bytes(*prefix) as usize;
        if len > MAX_FRAME {
            return (frames, Some(len), rest.len());
        }
        if body.len() < len {
            return (frames, None, rest.len());
        }
        frames.push(&body[..len]);
        rest = &body[len..];
    }
}

/// A length prefix: small, around the limit, or anything up to 2^32-1.
fn prefix() -> impl Strategy<Value = u32> {
    let max = MAX_FRAME as u32;
    prop_oneof![
        4 => 0u32..48,
        1 => (max - 2)..=(max + 2),
        1 => any::<u32>(),
        1 => Just(u32::MAX),
    ]
}

/// A byte stream: noise, or a run of (prefix, body) segments whose bodies may be shorter or longer
/// than announced.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let segment = (prefix(), vec(any::<u8>(), 0..64)).prop_map(|(len, body)| {
        let mut s = len.to_be_bytes().to_vec();
        s.extend(body);
        s
    });
    prop_oneof![
        vec(any::<u8>(), 0..300),
        vec(segment, 0..8).prop_map(|s| s.concat()),
    ]
}

proptest! {
    #![proptest_config(config(1000))]

    /// The decoder, fed in arbitrary chunks, yields exactly the complete frames, fails only on a
    /// prefix above the limit, leaves a truncated tail as `None` (and `decode_eof` as an error),
    /// and never allocates more than the bytes it was given.
    #[test]
    fn frame_decoder_yields_exact_frames_in_bounded_memory(
        stream in stream(),
        chunks in vec(1usize..40, 1..16),
    ) {
        let (want_frames, want_too_large, want_left) = frames_of(&stream);
        largest_allocation_since_last_call();
        let mut codec = FrameCodec;
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut too_large = None;
        let mut fed = 0;
        let mut pieces = chunks.iter().cycle();
        'feed: while fed < stream.len() {
            let n = (*pieces.next().unwrap()).min(stream.len() - fed);
            buf.extend_from_slice(&stream[fed..fed + n]);
            fed += n;
            // Each call consumes a frame or stops: at most one call more than there are frames.
            for _ in 0..=stream.len() / 4 + 1 {
                match codec.decode(&mut buf) {
                    Ok(Some(frame)) => got.push(frame),
                    Ok(None) => continue 'feed,
                    Err(FrameError::TooLarge { len }) => {
                        too_large = Some(len);
                        break 'feed;
                    }
                    Err(e @ FrameError::Io(_)) => prop_assert!(false, "i/o error from a buffer: {e}"),
                }
            }
            prop_assert!(false, "decode kept returning frames");
        }
        prop_assert!(buf.capacity() <= 2 * stream.len() + 64, "buffer of {} bytes", buf.capacity());
        let largest = largest_allocation_since_last_call();
        prop_assert!(largest <= 2 * stream.len() + 4096, "allocated {largest} bytes for {}", stream.len());
        prop_assert_eq!(got.iter().map(|f| &f[..]).collect::<Vec<_>>(), want_frames);
        prop_assert_eq!(too_large, want_too_large);
        if too_large.is_none() {
            prop_assert_eq!(buf.len(), want_left);
            // End of input: a truncated frame is an error, an empty buffer a clean end.
            match codec.decode_eof(&mut buf) {
                Ok(None) => prop_assert_eq!(want_left, 0),
                Ok(Some(_)) => prop_assert!(false, "a frame out of a truncated tail"),
                Err(FrameError::Io(_)) => prop_assert!(want_left > 0),
                Err(e) => prop_assert!(false, "{e}"),
            }
        }
    }

    /// The blocking reader used by `control` agrees with the framing, ends on truncated input
    /// (error or `None`, never a hang), and never allocates beyond the 64 MiB limit.
    #[test]
    fn read_frame_agrees_and_stays_within_the_limit(stream in stream()) {
        let (want_frames, want_too_large, want_left) = frames_of(&stream);
        largest_allocation_since_last_call();
        let mut r = Cursor::new(&stream[..]);
        let mut got = Vec::new();
        let end = loop {
            match read_frame(&mut r) {
                Ok(Some(f)) => got.push(f),
                other => break other,
            }
            prop_assert!(got.len() <= stream.len() / 4, "more frames than prefixes");
        };
        prop_assert!(largest_allocation_since_last_call() <= MAX_FRAME + 4096);
        prop_assert_eq!(got.iter().map(Vec::as_slice).collect::<Vec<_>>(), want_frames);
        match end {
            Err(FrameError::TooLarge { len }) => prop_assert_eq!(Some(len), want_too_large),
            // A partial prefix reads as the end of the stream.
            Ok(None) => prop_assert!(want_too_large.is_none() && want_left < 4),
            Err(FrameError::Io(e)) => {
                prop_assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
                prop_assert!(want_too_large.is_none() && want_left >= 4);
            }
            Ok(Some(_)) => unreachable!(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Protobuf text
// ---------------------------------------------------------------------------------------------

/// Pieces of protobuf text syntax, valid and not, for token soup.
#[rustfmt::skip]
const TOKENS: &[&str] = &[
    "name", "guest_os", "color", "token_type", "type", "vnet_configs", "if_name", "configure",
    "image_sizes", "image_name", "image_size", "image_file", "init_env", "description", "mounts",
    "en", "version", "hardware", "hostedmode", "signed_configs", "a", "_",
    ":", "{", "}", "<", ">", "[", "]", ",", ";", "/", ".", "-", "\"", "'", "\"a\"", "'b'", "\"\\",
    "\"\\x\"", "\"\\777\"", "\"\\u12\"", "\"\\U0010ffff\"", "\"\\377\"",
    "0", "1", "-1", "007", "0x", "0xfF", "1.5e", "1.5e9f", ".5", "1f", "0f", "99", "4294967296",
    "18446744073709551616", "1e400", "inf", "nan", "true", "false", "NONE", "SOFT", "CONTAINER",
    "KVM", "#", "# c\n", "\n", " ", "\t", "\r", "\0", "é", "\u{feff}",
    "[type.googleapis.com/cml.ContainerConfig]", "[a/b.c]", "[x]",
];

/// Openings that nest a block (or try to) when repeated.
#[rustfmt::skip]
const OPENERS: &[&str] = &[
    "a {", "{", "<", "[", "a:[", "init_env: [", "vnet_configs {", "vnet_configs <", "description {",
    "mounts {", "[type.googleapis.com/cml.ContainerConfig] {",
    "[type.googleapis.com/cml.GuestOsConfig] <", "[a/cml.ContainerVnetConfig] {", "\"{",
];

/// Arbitrary text inputs: unicode noise, token soup, deep nesting, or raw bytes.
fn text_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<char>(), 0..120).prop_map(|c| String::from_iter(c).into_bytes()),
        vec(select(TOKENS), 0..60).prop_map(|t| t.concat().into_bytes()),
        vec(select(TOKENS), 0..60).prop_map(|t| t.join(" ").into_bytes()),
        (select(OPENERS), 0usize..5000, any::<bool>()).prop_map(|(o, n, close)| {
            let mut s = o.repeat(n);
            if close {
                s.push_str(&"}".repeat(n));
            }
            s.into_bytes()
        }),
        vec(any::<u8>(), 0..200),
    ]
}

/// Checks that a text error points into the input: a line that exists, a column at most one past
/// its end, and the position leading the message.
fn check_position(input: &[u8], e: &TextError) -> Result<(), TestCaseError> {
    let text = String::from_utf8_lossy(input);
    let lines: Vec<&str> = text.split('\n').collect();
    prop_assert!(
        e.line >= 1 && e.line <= lines.len(),
        "line {} of {}: {e}",
        e.line,
        lines.len()
    );
    let width = lines[e.line - 1].chars().count();
    prop_assert!(
        e.column >= 1 && e.column <= width + 1,
        "column {} of {width}: {e}",
        e.column
    );
    prop_assert!(!e.message.is_empty());
    let shown = e.to_string();
    prop_assert!(
        shown.starts_with(&format!("{}:{}: ", e.line, e.column)),
        "{shown}"
    );
    Ok(())
}

fn check_parse<T: prost::Message + prost::Name + Default>(input: &[u8]) -> Result<(), TestCaseError> {
    match text::parse::<T>(input) {
        Ok(_) => Ok(()),
        Err(e) => check_position(input, &e),
    }
}

/// Characters that need escaping in text format, or that the lexer treats specially.
const AWKWARD: &[char] = &[
    '"', '\'', '\\', '\n', '\r', '\t', '\0', '\u{1}', '\u{7f}', 'é', '#', '{', '}', 'a',
];

/// A string of any characters, or of awkward ones.
fn awkward_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        vec(select(AWKWARD), 0..20).prop_map(String::from_iter),
    ]
}

proptest! {
    #![proptest_config(config(600))]

    /// No input makes the text parser panic (or overflow the stack); every failure names a valid
    /// line:column. Exercised through all three config types and `load_config`.
    #[test]
    fn text_parser_fails_with_a_position(input in text_input()) {
        check_parse::<ContainerConfig>(&input)?;
        check_parse::<GuestOsConfig>(&input)?;
        check_parse::<DeviceConfig>(&input)?;
        match load_config(&input) {
            Ok(_) => {}
            Err(ConfigError::Text(e)) => check_position(&input, &e)?,
            Err(ConfigError::Invalid { field, reason }) => {
                prop_assert!(!field.is_empty() && !reason.is_empty());
            }
        }
    }

    /// A syntactically valid config followed by junk fails at the junk (not earlier, not at the
    /// end): positions stay meaningful past the first line.
    #[test]
    fn errors_after_valid_lines_point_past_them(junk in vec(select(TOKENS), 1..10)) {
        let good = "name: \"a\"\nguest_os: \"busybox\"\ncolor: 0\n";
        let input = format!("{good}{}", junk.concat());
        if let Err(e) = text::parse::<ContainerConfig>(input.as_bytes()) {
            check_position(input.as_bytes(), &e)?;
            prop_assert!(e.line >= 4, "{e}");
        }
    }

    /// Whatever strings a config holds, printing it gives text that parses back to the same config.
    #[test]
    fn printed_configs_parse_back(
        name in awkward_string(),
        guest_os in awkward_string(),
        color in any::<u32>(),
        init_env in vec(awkward_string(), 0..4),
        dns in proptest::option::of(awkward_string()),
        ifaces in vec((awkward_string(), any::<bool>(), proptest::option::of(awkward_string())), 0..3),
    ) {
        let cfg = ContainerConfig {
            name,
            guest_os,
            color,
            init_env,
            dns_server: dns,
            vnet_configs: ifaces
                .into_iter()
                .map(|(if_name, configure, if_mac)| ContainerVnetConfig {
                    if_name,
                    configure,
                    if_mac,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let printed = text::print(&cfg);
        prop_assert_eq!(text::parse::<ContainerConfig>(printed.as_bytes()), Ok(cfg), "{}", printed);
    }
}

// ---------------------------------------------------------------------------------------------
// Request → command
// ---------------------------------------------------------------------------------------------

/// A UUID as a client might send it: valid, almost valid, or a path trick.
fn uuid_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("00000000-0000-4000-8000-000000000001".to_owned()),
        Just("000000000000400080000000000000ff".to_owned()),
        Just("{00000000-0000-4000-8000-000000000001}".to_owned()),
        Just("urn:uuid:00000000-0000-4000-8000-000000000001".to_owned()),
        Just("../x".to_owned()),
        Just("a/b".to_owned()),
        Just("../../../../../../../../../etc/pas".to_owned()),
        Just("0000000-0000-4000-8000-000000000001/".to_owned()),
        "[0-9a-f-]{30,40}",
        any::<String>(),
        (1usize..20_000).prop_map(|n| "\u{1}".repeat(n)),
    ]
}

fn command_number() -> impl Strategy<Value = i32> {
    prop_oneof![
        4 => 0i32..120,
        1 => 990i32..1010,
        1 => any::<i32>(),
    ]
}

prop_compose! {
    fn request()(
        command in command_number(),
        container_uuids in vec(uuid_string(), 0..3),
        start in proptest::option::of((proptest::option::of(any::<String>()), proptest::option::of(any::<bool>()))),
        iface in proptest::option::of((proptest::option::of("[a-z0-9/.]{0,20}"), proptest::option::of(any::<bool>()))),
        config_file in proptest::option::of(vec(any::<u8>(), 0..32)),
        signature in proptest::option::of(vec(any::<u8>(), 0..8)),
        certificate in proptest::option::of(vec(any::<u8>(), 0..8)),
        exec_args in vec(any::<String>(), 0..3),
        exec_input in proptest::option::of(any::<String>()),
        exec_pty in proptest::option::of(any::<bool>()),
        window in proptest::option::of((proptest::option::of(any::<u32>()), proptest::option::of(any::<u32>()))),
        names in proptest::option::of(any::<String>()),
        blobs in proptest::option::of(vec(any::<u8>(), 0..8)),
        pins in (proptest::option::of(any::<String>()), proptest::option::of(any::<String>())),
        flags in (proptest::option::of(any::<bool>()), proptest::option::of(any::<bool>())),
        logs in (proptest::option::of(any::<u32>()), proptest::option::of(any::<bool>())),
    ) -> ControllerToDaemon {
        ControllerToDaemon {
            command,
            container_uuids,
            container_start_params: start.map(|(key, setup)| ContainerStartParams { key, setup, no_switch: None }),
            assign_iface_params: iface.map(|(iface_name, persistent)| AssignInterfaceParams { iface_name, persistent }),
            container_config_file: config_file.clone(),
            exec_command: exec_args.first().cloned(),
            exec_args,
            exec_pty,
            exec_input,
            container_config_signature: signature.clone(),
            container_config_certificate: certificate.clone(),
            guestos_config_file: config_file,
            guestos_config_signature: signature,
            guestos_config_certificate: certificate,
            guestos_rootcert: blobs.clone(),
            guestos_name: names.clone(),
            device_cert: blobs,
            device_pin: pins.0,
            device_newpin: pins.1,
            dev_rule: names,
            remove_logs: flags.0,
            system_services: flags.1,
            exec_window: window.map(|(rows, cols)| WindowSize { rows, cols }),
            exec_input_eof: flags.1,
            logs_tail: logs.0,
            logs_follow: logs.1,
        }
    }
}

/// The UUID a per-container command acts on.
fn target(cmd: &Command) -> Option<uuid::Uuid> {
    use Command::*;
    match cmd {
        Remove { uuid }
        | Start { uuid, .. }
        | Stop { uuid, .. }
        | Switch { uuid }
        | Freeze { uuid }
        | Unfreeze { uuid }
        | Wipe { uuid }
        | Snapshot { uuid }
        | AllowAudio { uuid }
        | DenyAudio { uuid }
        | AssignIface { uuid, .. }
        | UnassignIface { uuid, .. }
        | ListIfaces { uuid }
        | Exec { uuid, .. }
        | UpdateConfig { uuid, .. }
        | ChangePin { uuid, .. }
        | HandlesPin { uuid }
        | DevAccess { uuid, .. }
        | Console { uuid, .. }
        | Logs { uuid, .. } => Some(*uuid),
        _ => None,
    }
}

/// The longest error text a request may earn: an error names what is wrong, it does not echo
/// whole fields back (a 60 MiB UUID of control characters must not become a 300 MiB reply).
const MAX_REQUEST_ERROR: usize = 1024;

proptest! {
    #![proptest_config(config(1000))]

    /// Every message becomes a command or a typed error naming the command; per-container commands
    /// carry exactly the one canonical UUID that was sent; errors stay short.
    #[test]
    fn every_request_is_a_command_or_a_typed_error(m in request()) {
        let sent_uuids = m.container_uuids.clone();
        let number = m.command;
        match Command::try_from(m) {
            Ok(cmd) => {
                prop_assert!(Cmd::try_from(number).is_ok());
                if let Some(uuid) = target(&cmd) {
                    prop_assert_eq!(sent_uuids.len(), 1);
                    prop_assert_eq!(uuid::Uuid::try_parse(&sent_uuids[0]).ok(), Some(uuid));
                    prop_assert!(!sent_uuids[0].contains('/'));
                }
            }
            Err(RequestError::UnknownCommand(n)) => {
                prop_assert_eq!(n, number);
                prop_assert!(Cmd::try_from(n).is_err());
                prop_assert_eq!(wire_name(n), "UNKNOWN");
            }
            Err(e @ RequestError::Invalid { .. }) => {
                let RequestError::Invalid { command, reason } = &e else { unreachable!() };
                prop_assert_eq!(*command, wire_name(number));
                prop_assert!(!reason.is_empty());
                prop_assert!(e.to_string().len() <= MAX_REQUEST_ERROR, "{} byte error", e.to_string().len());
            }
        }
    }

    /// The session's path for any payload: the presence check and the decoder never panic, and
    /// whatever decodes goes through `Command::try_from` without panicking either.
    #[test]
    fn arbitrary_payloads_take_the_session_path(
        payload in prop_oneof![
            vec(any::<u8>(), 0..200),
            request().prop_map(|m| m.encode_to_vec()),
            (request(), vec(any::<u8>(), 0..16), any::<prop::sample::Index>()).prop_map(|(m, junk, at)| {
                let mut b = m.encode_to_vec();
                let at = at.index(b.len() + 1);
                b.splice(at..at, junk);
                b
            }),
        ],
    ) {
        if has_command_field(&payload)
            && let Ok(m) = ControllerToDaemon::decode(payload.as_slice()) {
                let _ = Command::try_from(m);
            }
    }
}

// ---------------------------------------------------------------------------------------------
// A real daemon
// ---------------------------------------------------------------------------------------------

fn req(cmd: Cmd) -> ControllerToDaemon {
    ControllerToDaemon {
        command: cmd as i32,
        ..Default::default()
    }
}

fn with_uuid(cmd: Cmd, uuid: &str) -> ControllerToDaemon {
    ControllerToDaemon {
        container_uuids: vec![uuid.to_owned()],
        ..req(cmd)
    }
}

fn create(conf: impl Into<Vec<u8>>) -> ControllerToDaemon {
    ControllerToDaemon {
        container_config_file: Some(conf.into()),
        ..req(Cmd::CreateContainer)
    }
}

fn update(uuid: &str, conf: impl Into<Vec<u8>>) -> ControllerToDaemon {
    ControllerToDaemon {
        container_config_file: Some(conf.into()),
        ..with_uuid(Cmd::ContainerUpdateConfig, uuid)
    }
}

/// A valid config with `extra` lines appended.
fn conf_with(extra: &str) -> String {
    format!("name: \"h\"\nguest_os: \"busybox\"\ncolor: 1\ntoken_type: NONE\n{extra}")
}

/// A frame around raw payload bytes.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

/// What a row sends on its own connection.
enum Input {
    /// Bytes as they are; with `eof`, the write half is shut down afterwards.
    Raw { bytes: Vec<u8>, eof: bool },
    /// One well-framed request.
    Request(Box<ControllerToDaemon>),
}

/// What a row must get back.
enum Outcome {
    /// The daemon closes the connection without a reply.
    ClosedSilently,
    /// One failure reply whose message contains every word; with `closes`, the daemon then ends
    /// the connection.
    Refused {
        response: Response,
        words: Vec<String>,
        closes: bool,
    },
    /// One reply of this code (the input was harmless).
    Answered(Code),
}

struct Row {
    name: &'static str,
    input: Input,
    expect: Outcome,
}

/// A row input of bytes as they are.
fn raw(bytes: Vec<u8>) -> Input {
    Input::Raw { bytes, eof: false }
}

/// A row input of bytes, then the end of the stream (the write half shut down).
fn raw_then_eof(bytes: Vec<u8>) -> Input {
    Input::Raw { bytes, eof: true }
}

/// A row input of one request.
fn ask(m: ControllerToDaemon) -> Input {
    Input::Request(Box::new(m))
}

fn refused(response: Response, words: &[&str], closes: bool) -> Outcome {
    Outcome::Refused {
        response,
        words: words.iter().map(|w| (*w).to_owned()).collect(),
        closes,
    }
}

/// Sends one row's input on a fresh connection and checks the outcome.
fn run_row(d: &mut Daemon, row: &Row) {
    let name = row.name;
    let mut c = d.connect();
    c.0.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    match &row.input {
        Input::Raw { bytes, eof } => {
            c.send_raw(bytes);
            if *eof {
                c.0.shutdown(Shutdown::Write).unwrap();
            }
        }
        Input::Request(m) => c.send(m),
    }
    let reply = read_frame(&mut c.0);
    let alive = d.child.as_mut().unwrap().try_wait().unwrap().is_none();
    assert!(alive, "{name}: cmld died:\n{}", tail(&d.log_text()));
    let reply = match reply {
        Ok(r) => r,
        Err(e) => panic!("{name}: no readable reply: {e}"),
    };
    match (&row.expect, reply) {
        (Outcome::ClosedSilently, None) => {}
        (Outcome::ClosedSilently, Some(r)) => {
            panic!(
                "{name}: expected a silent close, got {:?}",
                DaemonToController::decode(&r[..])
            )
        }
        (_, None) => panic!("{name}: connection closed without a reply"),
        (Outcome::Answered(code), Some(r)) => {
            let r = DaemonToController::decode(&r[..]).unwrap();
            assert_eq!(r.code, *code as i32, "{name}: {r:?}");
        }
        (
            Outcome::Refused {
                response,
                words,
                closes,
            },
            Some(r),
        ) => {
            let r = DaemonToController::decode(&r[..]).unwrap();
            assert_eq!(r.code, Code::Response as i32, "{name}");
            let msg = r.error_message.unwrap_or_default();
            let shown: String = msg.chars().take(400).collect();
            eprintln!("{name}: {shown}");
            assert_eq!(r.response, Some(*response as i32), "{name}: {shown}");
            assert!(
                msg.len() <= reply::MAX_ERROR_MESSAGE,
                "{name}: {} byte error: {shown}…",
                msg.len()
            );
            for w in words {
                assert!(msg.contains(w.as_str()), "{name}: {w:?} not in {shown:?}");
            }
            if *closes {
                assert!(c.is_closed(), "{name}: connection left open");
            } else {
                // The connection still serves requests.
                let r = c.call(&req(Cmd::GetProvisioned));
                assert_eq!(r.code, Code::DeviceProvisionedState as i32, "{name}");
            }
        }
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[test]
fn table_of_bad_inputs_gets_clear_refusals() {
    use Response::{CmdFailed, CmdUnsupported};

    let mut d = Daemon::start();
    let victim = {
        let mut c = d.connect();
        let r = c.call(&create(conf_with("").replace("\"h\"", "\"victim\"")));
        assert_eq!(r.code, Code::ContainerConfig as i32, "{r:?}");
        r.container_uuids[0].clone()
    };
    let victim_images = d.data.join("containers").join(&victim);
    let ten_mb = "x".repeat(10 * 1024 * 1024);
    let invalid_utf8_uuid = {
        // Field 10 (container_uuids), length 2, bytes ff fe.
        let mut p = encode_frame(&req(Cmd::GetContainerStatus))[4..].to_vec();
        p.extend_from_slice(&[0x52, 0x02, 0xff, 0xfe]);
        p
    };
    let nested_groups = {
        // GET_PROVISIONED, then an unknown field 999 opening 100 000 nested groups.
        let mut p = vec![0x08, 33];
        for _ in 0..100_000 {
            p.extend_from_slice(&[0xbb, 0x3e]); // key (999 << 3) | 3, varint
        }
        p
    };

    let rows = vec![
        // --- Framing -------------------------------------------------------------------------
        Row {
            name: "truncated frame: prefix says 10, 3 bytes, then EOF",
            input: raw_then_eof(vec![0, 0, 0, 10, 0x08, 0x03, 0x52]),
            expect: Outcome::ClosedSilently,
        },
        Row {
            name: "truncated prefix: 2 bytes, then EOF",
            input: raw_then_eof(vec![0, 0]),
            expect: Outcome::ClosedSilently,
        },
        Row {
            name: "prefix of exactly 64 MiB, 3 bytes, then EOF",
            input: raw_then_eof([&(MAX_FRAME as u32).to_be_bytes()[..], &[1, 2, 3]].concat()),
            expect: Outcome::ClosedSilently,
        },
        Row {
            name: "length prefix 0",
            input: raw(vec![0, 0, 0, 0]),
            expect: refused(CmdFailed, &["malformed request", "command"], true),
        },
        Row {
            name: "length prefix 2^32-1",
            input: raw(vec![0xff; 4]),
            expect: refused(CmdFailed, &["4294967295", "exceeds", "67108864"], true),
        },
        // --- Protobuf ------------------------------------------------------------------------
        Row {
            name: "invalid UTF-8 in a wire string field (container_uuids)",
            input: raw(frame(&invalid_utf8_uuid)),
            expect: refused(CmdFailed, &["malformed request", "UTF-8"], true),
        },
        Row {
            name: "command sent with the wrong wire type",
            input: raw(frame(&[0x0a, 0x01, 0x03])),
            expect: refused(CmdFailed, &["malformed request", "invalid wire type"], true),
        },
        Row {
            name: "100 000 nested groups of an unknown field",
            input: raw(frame(&nested_groups)),
            // The presence check for `command` gives up at the first group (wire type 3).
            expect: refused(
                CmdFailed,
                &["malformed request", "missing required field 'command'"],
                true,
            ),
        },
        Row {
            name: "unknown field next to a known command",
            input: raw(frame(&[0x08, 33, 0xb8, 0x3e, 0x07])),
            expect: Outcome::Answered(Code::DeviceProvisionedState),
        },
        Row {
            name: "unknown command number 99",
            input: ask(ControllerToDaemon {
                command: 99,
                ..Default::default()
            }),
            expect: refused(CmdUnsupported, &["unknown command 99"], false),
        },
        Row {
            name: "negative command number",
            input: ask(ControllerToDaemon {
                command: -7,
                ..Default::default()
            }),
            expect: refused(CmdUnsupported, &["unknown command -7"], false),
        },
        Row {
            name: "command number i32::MAX",
            input: ask(ControllerToDaemon {
                command: i32::MAX,
                ..Default::default()
            }),
            expect: refused(CmdUnsupported, &["unknown command 2147483647"], false),
        },
        // --- UUIDs ---------------------------------------------------------------------------
        Row {
            name: "UUID ../x",
            input: ask(with_uuid(Cmd::ContainerStart, "../x")),
            expect: refused(CmdFailed, &["CONTAINER_START", "malformed UUID", "../x"], false),
        },
        Row {
            name: "UUID a/b",
            input: ask(with_uuid(Cmd::GetContainerConfig, "a/b")),
            expect: refused(
                CmdFailed,
                &["GET_CONTAINER_CONFIG", "malformed UUID", "a/b"],
                false,
            ),
        },
        Row {
            name: "UUID-length path ../../../../etc/passwd…",
            input: ask(with_uuid(
                Cmd::RemoveContainer,
                "../../../../../../../../../etc/pas",
            )),
            expect: refused(CmdFailed, &["REMOVE_CONTAINER", "malformed UUID"], false),
        },
        Row {
            name: "victim's UUID followed by /../x",
            input: ask(with_uuid(Cmd::ContainerWipe, &format!("{victim}/../x"))),
            expect: refused(CmdFailed, &["CONTAINER_WIPE", "malformed UUID"], false),
        },
        Row {
            name: "10 MiB UUID of control characters",
            input: ask(with_uuid(Cmd::ContainerStop, &"\u{1}".repeat(10 * 1024 * 1024))),
            expect: refused(CmdFailed, &["CONTAINER_STOP", "malformed UUID"], false),
        },
        // --- Text configs --------------------------------------------------------------------
        Row {
            name: "100 000 nested `a {`",
            input: ask(create("a {".repeat(100_000))),
            expect: refused(
                CmdFailed,
                &["create", "1:99", "nested deeper than 32 levels"],
                false,
            ),
        },
        Row {
            name: "100 000 nested `vnet_configs {`",
            input: ask(create(conf_with(&"vnet_configs {".repeat(100_000)))),
            expect: refused(
                CmdFailed,
                &["create", "5:462", "nested deeper than 32 levels"],
                false,
            ),
        },
        Row {
            name: "100 000 nested Any expansions",
            input: ask(create(
                "[type.googleapis.com/cml.ContainerConfig] {".repeat(100_000),
            )),
            expect: refused(
                CmdFailed,
                &["create", "1:1419", "nested deeper than 32 levels"],
                false,
            ),
        },
        Row {
            name: "100 000 `<` after a valid config",
            input: ask(create(conf_with(&"<".repeat(100_000)))),
            expect: refused(
                CmdFailed,
                &["create", "5:33", "nested deeper than 32 levels"],
                false,
            ),
        },
        Row {
            name: "10 MiB name",
            input: ask(create(format!(
                "name: \"{ten_mb}\"\nguest_os: \"busybox\"\ncolor: 1\n"
            ))),
            expect: refused(
                CmdFailed,
                &["create", "field 'name'", "longer than 64 bytes"],
                false,
            ),
        },
        Row {
            name: "14 MiB guest_os of control characters (echoed 5x as \\u{1})",
            input: ask(create(format!(
                "name: \"h\"\nguest_os: \"{}\"\ncolor: 1\n",
                "\u{1}".repeat(14 * 1024 * 1024)
            ))),
            expect: refused(
                CmdFailed,
                &["create", "field 'guest_os'", "not a valid GuestOS name"],
                false,
            ),
        },
        Row {
            name: "10 MiB field name",
            input: ask(create(format!("{ten_mb}: 1\n"))),
            expect: refused(CmdFailed, &["create", "1:1", "not found"], false),
        },
        Row {
            name: "raw invalid UTF-8 in a config string",
            input: ask(create(
                b"name: \"h\"\nguest_os: \"busy\xffbox\"\ncolor: 1\n".to_vec(),
            )),
            expect: refused(CmdFailed, &["create", "2:16", "not valid UTF-8"], false),
        },
        Row {
            name: "escaped invalid UTF-8 in a config string",
            input: ask(create(conf_with("init_env: \"A=\\377\"\n"))),
            expect: refused(CmdFailed, &["create", "5:11", "field 'init_env'", "utf-8"], false),
        },
        Row {
            name: "token_type: 99",
            input: ask(create(conf_with("").replace("NONE", "99"))),
            expect: refused(
                CmdFailed,
                &["create", "field 'token_type'", "unknown token type"],
                false,
            ),
        },
        Row {
            name: "type: 99",
            input: ask(create(conf_with("type: 99\n"))),
            expect: refused(CmdFailed, &["create", "field 'type'", "only CONTAINER"], false),
        },
        Row {
            name: "token_type: BOGUS",
            input: ask(create(conf_with("").replace("NONE", "BOGUS"))),
            expect: refused(CmdFailed, &["create", "4:13", "BOGUS"], false),
        },
        // --- Paths in configs ----------------------------------------------------------------
        Row {
            name: "guest_os pointing at another container's images",
            input: ask(create(
                conf_with("").replace("busybox", &format!("../containers/{victim}")),
            )),
            expect: refused(
                CmdFailed,
                &["create", "field 'guest_os'", "not a valid GuestOS name"],
                false,
            ),
        },
        Row {
            name: "guest_os as an absolute path to another container's images",
            input: ask(create(
                conf_with("").replace("busybox", &victim_images.to_string_lossy()),
            )),
            expect: refused(
                CmdFailed,
                &["create", "field 'guest_os'", "not a valid GuestOS name"],
                false,
            ),
        },
        Row {
            name: "guest_os with ../ after a valid name",
            input: ask(create(conf_with("").replace("busybox", "busybox-1/../../keys"))),
            expect: refused(CmdFailed, &["create", "field 'guest_os'"], false),
        },
        Row {
            name: "image name ../ into another container",
            input: ask(create(conf_with(&format!(
                "image_sizes {{ image_name: \"../{victim}/data\" image_size: 16 }}\n"
            )))),
            expect: refused(
                CmdFailed,
                &[
                    "create",
                    "field 'image_sizes[0].image_name'",
                    "not a valid image name",
                ],
                false,
            ),
        },
        Row {
            name: "image file ../ into another container",
            input: ask(create(conf_with(&format!(
                "image_sizes {{ image_name: \"data\" image_size: 16 image_file: \"../{victim}/data\" }}\n"
            )))),
            expect: refused(
                CmdFailed,
                &[
                    "create",
                    "field 'image_sizes[0].image_file'",
                    "not a valid file name",
                ],
                false,
            ),
        },
        Row {
            name: "update_config of the victim to another container's images",
            input: ask(update(
                &victim,
                conf_with("").replace("busybox", &format!("../containers/{victim}")),
            )),
            expect: refused(
                CmdFailed,
                &["update_config", "field 'guest_os'", "not a valid GuestOS name"],
                false,
            ),
        },
    ];

    for row in &rows {
        run_row(&mut d, row);
    }

    // After the table: a fresh connection is served, and nothing was created or changed.
    let mut c = d.connect();
    let r = c.call(&req(Cmd::GetContainerStatus));
    assert_eq!(r.code, Code::ContainerStatus as i32);
    let names: Vec<&str> = r.container_status.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["victim"]);
    let r = c.call(&with_uuid(Cmd::GetContainerConfig, &victim));
    assert_eq!(r.container_configs[0].guest_os, "busybox");
    let entries: Vec<String> = fs::read_dir(d.data.join("containers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".conf"))
        .collect();
    assert_eq!(entries, [format!("{victim}.conf")]);
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmSize`).
fn vm_kib(pid: i32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn announced_but_unsent_frames_cost_the_daemon_little_memory() {
    let d = Daemon::start();
    let pid = d.pid();
    let (rss, size) = (vm_kib(pid, "VmRSS"), vm_kib(pid, "VmSize"));
    // 32 connections each announce 64 MiB and send 1 KiB: reserving the announced length would map
    // 2 GiB (visible in VmSize even while untouched), filling it would make it resident.
    let mut open: Vec<_> = (0..32)
        .map(|_| {
            let mut c = d.connect();
            c.send_raw(&(MAX_FRAME as u32).to_be_bytes());
            c.send_raw(&[0u8; 1024]);
            c
        })
        .collect();
    // Requests on another connection are still served while those wait.
    let r = d.connect().call(&req(Cmd::GetProvisioned));
    assert_eq!(r.code, Code::DeviceProvisionedState as i32);
    std::thread::sleep(Duration::from_millis(200));
    let (rss_after, size_after) = (vm_kib(pid, "VmRSS"), vm_kib(pid, "VmSize"));
    assert!(
        rss_after < rss + 64 * 1024,
        "resident memory grew from {rss} KiB to {rss_after} KiB"
    );
    assert!(
        size_after < size + 1024 * 1024,
        "mapped memory grew from {size} KiB to {size_after} KiB"
    );
    for c in &mut open {
        c.0.shutdown(Shutdown::Both).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Symlinks planted in the data dir
// ---------------------------------------------------------------------------------------------

/// `containers/<uuid>.conf` as a symlink — to /etc/passwd, and to a perfectly valid container
/// config outside the data dir — is refused with the reason, on `reload` and at restart; it is never
/// loaded. A symlinked `.sig` makes its config refused too.
#[test]
fn symlinked_configs_are_refused_not_followed() {
    let mut d = Daemon::start();
    let containers = d.data.join("containers");
    fs::create_dir_all(&containers).unwrap();
    let to_passwd = "00000000-0000-4000-8000-0000000000a1";
    let to_valid = "00000000-0000-4000-8000-0000000000a2";
    let foreign = d.dir.path().join("foreign.conf");
    fs::write(&foreign, conf_with("").replace("\"h\"", "\"foreign\"")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", containers.join(format!("{to_passwd}.conf"))).unwrap();
    std::os::unix::fs::symlink(&foreign, containers.join(format!("{to_valid}.conf"))).unwrap();
    // A real config whose signature file is a symlink.
    let signed = "00000000-0000-4000-8000-0000000000a3";
    fs::write(
        containers.join(format!("{signed}.conf")),
        conf_with("").replace("\"h\"", "\"sigvictim\""),
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", containers.join(format!("{signed}.sig"))).unwrap();

    let mut c = d.connect();
    let r = c.call(&req(Cmd::ReloadContainers));
    assert_eq!(r.response, Some(Response::CmdFailed as i32), "{r:?}");
    let msg = r.error_message.unwrap();
    assert!(msg.contains("3 config file(s) not loaded"), "{msg}");
    for uuid in [to_passwd, to_valid] {
        assert!(
            msg.contains(&format!(
                "{uuid}.conf: cannot read: Too many levels of symbolic links"
            )),
            "{msg}"
        );
    }
    assert!(msg.contains(&format!("{signed}.sig")), "{msg}");
    let listed = c.call(&req(Cmd::GetContainerStatus)).container_status;
    assert!(listed.is_empty(), "{listed:?}");

    // At restart: the daemon comes up, logs each refusal, and loads none of them.
    d.terminate(nix::sys::signal::Signal::SIGTERM);
    let d = d.restart();
    let listed = d.connect().call(&req(Cmd::GetContainerStatus)).container_status;
    assert!(listed.is_empty(), "{listed:?}");
    let log = d.log_text();
    for uuid in [to_passwd, to_valid, signed] {
        assert!(
            log.lines()
                .any(|l| l.contains("container config not loaded") && l.contains(uuid)),
            "no logged reason for {uuid}:\n{}",
            tail(&log)
        );
    }
    // The planted links are left alone (not deleted, not written through).
    assert!(
        fs::symlink_metadata(containers.join(format!("{to_passwd}.conf")))
            .unwrap()
            .is_symlink()
    );
    assert!(fs::read_to_string("/etc/passwd").unwrap().contains("root:"));
}

/// `containers/<uuid>.created` is read through a symlink (plain `fs::read_to_string`), but only as
/// a number: a link to a foreign file does not stop its container from loading at restart. Not
/// tried here: a link to an endless or blocking file (/dev/zero, a FIFO) would be read without
/// bound, or block the scan, since the read is neither `O_NOFOLLOW` nor size-limited.
#[test]
fn symlinked_created_marker_is_only_read_as_a_number() {
    let mut d = Daemon::start();
    let r = d
        .connect()
        .call(&create(conf_with("").replace("\"h\"", "\"marked\"")));
    let uuid = r.container_uuids[0].clone();
    let marker = d.data.join("containers").join(format!("{uuid}.created"));
    fs::remove_file(&marker).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &marker).unwrap();
    d.terminate(nix::sys::signal::Signal::SIGTERM);
    let d = d.restart();
    let listed = d.connect().call(&req(Cmd::GetContainerStatus)).container_status;
    let uuids: Vec<&str> = listed.iter().map(|s| s.uuid.as_str()).collect();
    assert_eq!(uuids, [uuid.as_str()]);
}
