//! Console and logs, end to end against a real cmld and the real `control`: the guest init's stdio
//! and `/dev/console` are a pty its monitor holds; what it prints is kept in a bounded log
//! (`control logs`, `-f`, `--tail`) that outlives the run and a daemon restart, and is cleared at
//! the next start; `control console` attaches a terminal to it (driven here through a pty the test
//! owns, as tests/pty.rs does for `run`); a notify guest that dies during boot fails its start
//! with the last console lines.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    fs,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use common::{
    CONTROL, Daemon,
    poll::wait_for,
    terminal::{Terminal, wait},
};

/// Every wait of these tests (only bounds a hang).
const TIMEOUT: Duration = Duration::from_secs(20);

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `control logs ARGS…` → stdout, with the terminal's CRLF as plain newlines.
fn logs(d: &Daemon, args: &[&str]) -> String {
    let mut all = vec!["logs"];
    all.extend_from_slice(args);
    d.ok(&all).replace("\r\n", "\n")
}

#[test]
fn logs_show_the_console_tail_picks_lines_and_the_log_outlives_stop_and_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = common::busybox_daemon(tmp.path(), &[]);
    let uuid = d.create_container(
        "talker",
        "init_env: \"INIT=for i in 1 2 3 4 5; do echo line-$i; done\"\n",
    );
    // Never started: an empty log.
    assert_eq!(logs(&d, &["talker"]), "");
    d.ok(&["start", "talker"]);
    wait_for("the init's output", || logs(&d, &["talker"]).contains("ready"));
    let all = "line-1\nline-2\nline-3\nline-4\nline-5\nready\n";
    assert_eq!(logs(&d, &["talker"]), all);
    assert_eq!(logs(&d, &["talker", "--tail", "2"]), "line-5\nready\n");
    assert_eq!(logs(&d, &["talker", "-n", "100"]), all);
    // /dev/console is the same terminal: what any process writes there is captured too.
    let (code, _) = d.sh("talker", "echo via-dev-console > /dev/console");
    assert_eq!(code, 0);
    wait_for("output written to /dev/console", || {
        logs(&d, &["talker"]).ends_with("via-dev-console\n")
    });
    let json: serde_json::Value =
        serde_json::from_str(&d.ok(&["--json", "logs", "talker", "--tail", "1"])).unwrap();
    assert_eq!(json["log"], "via-dev-console\r\n");

    // Stopped: the last run's log stays readable, and only the log stays in its run directory.
    d.ok(&["stop", "talker"]);
    assert_eq!(logs(&d, &["talker"]), format!("{all}via-dev-console\n"));
    let left: Vec<_> = fs::read_dir(d.run.join(&uuid))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, ["console.log"]);

    // A killed and restarted cmld still shows it (the monitor wrote it, not cmld).
    d.kill9();
    let d = d.restart();
    assert_eq!(logs(&d, &["talker", "--tail", "1"]), "via-dev-console\n");

    // The next start clears it: one run's lines only.
    d.ok(&["start", "talker"]);
    wait_for("the second run's output", || {
        logs(&d, &["talker"]).contains("ready")
    });
    assert_eq!(logs(&d, &["talker"]), all);
    d.ok(&["stop", "talker"]);
    // remove takes the log with it.
    d.ok(&["remove", "talker"]);
    assert!(!d.run.join(&uuid).exists());
}

/// Spawns `control logs -f C`; its stdout lines arrive on the channel.
fn follow(d: &Daemon, c: &str) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(CONTROL)
        .arg("-s")
        .arg(&d.socket)
        .args(["logs", "-f", c])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line.trim_end_matches('\r').to_owned()).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// The tick number of a `tick-N` line.
fn tick(line: &str) -> Option<u32> {
    line.strip_prefix("tick-")?.parse().ok()
}

#[test]
fn logs_follow_streams_new_output_until_the_container_stops_also_after_a_cmld_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = common::busybox_daemon(tmp.path(), &[]);
    d.create_container(
        "ticker",
        "init_env: \"INIT=i=0; while :; do echo tick-$i; i=$((i+1)); sleep 0.1; done &\"\n",
    );
    d.ok(&["start", "ticker"]);
    wait_for("a first tick", || logs(&d, &["ticker"]).contains("tick-2"));

    let (mut child, lines) = follow(&d, "ticker");
    // The log so far, then what is printed after the request: every tick from 0 on, once and in
    // order (nothing lost or repeated where the log ends and the live output begins).
    let at_request = logs(&d, &["ticker", "--tail", "1"]);
    let later = tick(at_request.trim()).unwrap() + 3;
    let mut ticks = Vec::new();
    while ticks.last() != Some(&later) {
        let line = lines.recv_timeout(TIMEOUT).expect("new output while following");
        ticks.extend(tick(&line));
    }
    assert_eq!(ticks, (0..=later).collect::<Vec<_>>());
    // It ends when the container stops.
    d.ok(&["stop", "ticker"]);
    let st = wait(&mut child, "logs -f after stop");
    assert!(st.success(), "{st}");

    // After a cmld restart the monitor still serves a follower of a running container.
    d.ok(&["start", "ticker"]);
    wait_for("a tick", || logs(&d, &["ticker"]).contains("tick-1"));
    d.kill9();
    let d = d.restart();
    let (mut child, lines) = follow(&d, "ticker");
    let seen = logs(&d, &["ticker", "--tail", "1"]);
    let want = tick(seen.trim()).unwrap() + 2;
    while !lines
        .recv_timeout(TIMEOUT)
        .expect("output after the restart")
        .eq(&format!("tick-{want}"))
    {}
    d.ok(&["stop", "ticker"]);
    assert!(wait(&mut child, "logs -f after stop").success());
}

#[test]
fn the_log_is_bounded_and_keeps_the_newest_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let f = common::fixture::busybox_guestos(tmp.path(), "busybox", 1, &[]);
    let d = Daemon::prepare();
    fs::write(
        d.data.join("device.conf"),
        format!(
            "signed_configs: false\nstop_timeout: 2\nconsole_log_kib: 4\nupdate_base_url: \"{}\"\n",
            f.store_url()
        ),
    )
    .unwrap();
    let d = d.spawn();
    let empty = d.file("empty", "");
    d.ok(&["push_guestos_config", f.conf.to_str().unwrap(), &empty, &empty]);
    // About 25 KiB of output, six times the bound.
    let uuid = d.create_container(
        "chatty",
        "init_env: \"INIT=i=0; while [ $i -lt 2000 ]; do echo number-$i; i=$((i+1)); done\"\n",
    );
    d.ok(&["start", "chatty"]);
    wait_for("the end of the output", || {
        logs(&d, &["chatty"]).ends_with("ready\n")
    });
    let file = d.run.join(&uuid).join("console.log");
    assert!(fs::metadata(&file).unwrap().len() <= 4096);
    let log = logs(&d, &["chatty"]);
    let mut lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.pop(), Some("ready"));
    // The newest lines, whole and consecutive, up to the last one printed.
    let numbers: Vec<u32> = lines
        .iter()
        .map(|l| l.strip_prefix("number-").unwrap().parse().unwrap())
        .collect();
    assert_eq!(numbers.last(), Some(&1999));
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{log}");
    assert!(numbers[0] > 1500, "{log}");
    d.ok(&["stop", "chatty"]);
    assert!(fs::metadata(&file).unwrap().len() <= 4096);
}

#[test]
fn console_attach_types_into_the_guest_detaches_refuses_a_second_user_and_ends_at_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &[]);
    // The guest's init becomes an interactive shell on its console.
    d.create_container("shell", "init_env: \"INIT=exec sh -i\"\n");
    d.ok(&["start", "shell"]);

    let mut term = Terminal::open(24, 80);
    let before = term.settings();
    let mut control = term.control(&d, &["console", "shell"]);
    let mut at = term.expect(0, "attached to the console of shell");
    term.wait_raw();
    // Typed into the guest's shell; its output (not the echo) proves it ran there.
    term.type_bytes(b"echo hello-$((6*7)) from $(hostname)\r");
    at = term.expect(at, "hello-42 from shell");

    // A second user is refused with a message while the first is attached.
    let second = d.control(&["console", "shell"]);
    assert_eq!(second.status.code(), Some(1), "{second:?}");
    assert!(
        stderr(&second).contains("attached to this console already"),
        "{}",
        stderr(&second)
    );

    // ^C goes to the guest (it interrupts the guest's command), not to control.
    term.type_bytes(b"sleep 100; echo not-$((2+3))-interrupted\r");
    thread::sleep(Duration::from_millis(300));
    term.type_bytes(&[0x03]);
    term.type_bytes(b"echo after-$((1+1))\r");
    at = term.expect(at, "after-2");
    assert!(control.try_wait().unwrap().is_none(), "control ended on ^C");

    // Ctrl-] detaches; the container keeps running and its terminal is back as it was.
    term.type_bytes(&[0x1d]);
    let st = wait(&mut control, "after the escape");
    assert!(st.success(), "{st}");
    at = term.expect(at, "detached from the console of shell");
    assert_eq!(term.settings(), before, "terminal settings not restored");
    assert_eq!(d.ok(&["state", "shell"]), "RUNNING\n");

    // Attach again (the console is free), and end the guest from it: the console says so.
    let mut control = term.control(&d, &["console", "shell"]);
    at = term.expect(at, "attached to the console of shell");
    term.wait_raw();
    term.type_bytes(b"\r");
    term.type_bytes(b"exit\r");
    let st = wait(&mut control, "after the container stopped");
    assert!(st.success(), "{st}");
    term.expect(at, "closed: the container stopped");
    assert_eq!(term.settings(), before, "terminal settings not restored");
    wait_for("STOPPED", || d.ok(&["state", "shell"]) == "STOPPED\n");
    assert!(!String::from_utf8_lossy(&term.seen).contains("not-5-interrupted"));

    // A stopped container has no console to attach to.
    let out = d.control(&["console", "shell"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not running"), "{}", stderr(&out));
}

#[test]
fn a_notify_guest_that_dies_during_boot_fails_its_start_with_the_console_quoted() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &["--notify"]);
    d.create_container(
        "doomed",
        "init_env: \"INIT=echo starting; echo boom >&2; exit 3\"\n",
    );
    let out = d.control(&["start", "doomed"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let msg = stderr(&out);
    assert!(
        msg.contains("exited with status 3") && msg.contains("starting\nboom"),
        "{msg}"
    );
    assert_eq!(d.ok(&["state", "doomed"]), "STOPPED\n");
    assert_eq!(logs(&d, &["doomed"]), "starting\nboom\n");
}

#[test]
fn in_a_user_namespace_the_console_belongs_to_the_containers_root() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &[]);
    d.create_text(
        "mapped",
        "name: \"mapped\"\nguest_os: \"busybox\"\ncolor: 1\ntoken_type: NONE\n\
         init_env: \"INIT=echo hello from $(id -u)\"\n",
    );
    d.ok(&["start", "mapped"]);
    wait_for("the init's output", || logs(&d, &["mapped"]).contains("ready"));
    assert_eq!(logs(&d, &["mapped"]), "hello from 0\nready\n");
    // Owned by container root (host uid `base`), so it can open and use it; the init's stdio is it.
    let (code, out) = d.sh(
        "mapped",
        "/bin/busybox stat -c '%u %g' /dev/console; [ /proc/1/fd/1 -ef /dev/console ] && echo same",
    );
    assert_eq!((code, out.as_str()), (0, "0 0\nsame\n"));
    let (code, _) = d.sh("mapped", "echo written-by-root > /dev/console");
    assert_eq!(code, 0);
    wait_for("the write", || {
        logs(&d, &["mapped"]).ends_with("written-by-root\n")
    });
    d.ok(&["stop", "mapped"]);
}

#[test]
fn a_console_whose_cmld_dies_ends_with_status_3_and_restores_the_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = common::busybox_daemon(tmp.path(), &[]);
    d.create_container("shell", "init_env: \"INIT=exec sh -i\"\n");
    d.ok(&["start", "shell"]);

    let mut term = Terminal::open(24, 80);
    let before = term.settings();
    let mut control = term.control(&d, &["console", "shell"]);
    let at = term.expect(0, "attached to the console of shell");
    term.wait_raw();
    term.type_bytes(b"echo alive-$((20+1))\r");
    let at = term.expect(at, "alive-21");

    // cmld is gone: control says the connection was lost (exit 3) and gives the terminal back.
    d.kill9();
    let st = wait(&mut control, "after cmld died");
    assert_eq!(st.code(), Some(3), "{st}");
    assert_eq!(term.settings(), before, "terminal settings not restored");

    // The guest outlived cmld; a new cmld adopts it and its console works again.
    let d = d.restart();
    assert_eq!(d.ok(&["state", "shell"]), "RUNNING\n");
    let mut control = term.control(&d, &["console", "shell"]);
    let at = term.expect(at, "attached to the console of shell");
    term.wait_raw();
    term.type_bytes(b"echo again-$((40+2))\r");
    term.expect(at, "again-42");
    term.type_bytes(&[0x1d]);
    assert!(wait(&mut control, "after the escape").success());
    assert_eq!(term.settings(), before, "terminal settings not restored");
    d.ok(&["stop", "shell"]);
}
