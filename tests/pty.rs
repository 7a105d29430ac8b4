//! `control run` with a PTY, end to end: the real `control` on a pseudo-terminal the test owns
//! (its stdin, stdout and stderr are the slave; the test plays the terminal on the master), against
//! the real cmld and a busybox container. Checked: the terminal size reaches the command, a resize
//! (SIGWINCH to `control`) follows, ^C typed on the terminal interrupts the command and not
//! `control`, and the terminal settings are back as they were when `control` ends — by the
//! command's end or by a signal to `control`. And the other side of `run`: input from a file
//! (not a terminal) ends, with and without a pty, so `control run C nopty cat < FILE` ends.
//!
//! The fixture links no `stty` applet, so the container runs `/bin/busybox stty`.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    fs,
    os::fd::AsFd,
    os::unix::process::ExitStatusExt,
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use cml::sys::pty::{set_window_size, window_size};
use common::{
    CONTROL, Daemon,
    terminal::{Terminal, wait},
};
use nix::{
    sys::{
        signal::{Signal, kill},
        termios::{LocalFlags, Termios},
    },
    unistd::Pid,
};

/// Every wait of these tests.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A development daemon with the busybox GuestOS and one started container `name` (as in
/// tests/runtime.rs).
fn daemon_with_container(tmp: &Path, name: &str) -> Daemon {
    let d = common::busybox_daemon(tmp, &[]);
    d.create_container(name, "");
    d.ok(&["start", name]);
    d
}

fn signal(child: &Child, sig: Signal) {
    kill(Pid::from_raw(child.id() as i32), sig).unwrap();
}

/// Whether the terminal is in raw mode as `control` sets it (no echo, no line editing, no
/// signal characters).
fn is_raw(t: &Termios) -> bool {
    !t.local_flags
        .intersects(LocalFlags::ECHO | LocalFlags::ICANON | LocalFlags::ISIG)
}

/// Waits until `control` has put the terminal into raw mode.
fn wait_raw(term: &Terminal) {
    let deadline = Instant::now() + TIMEOUT;
    while !is_raw(&term.settings()) {
        assert!(Instant::now() < deadline, "control never made the terminal raw");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_terminal_size_is_passed_at_start_and_on_sigwinch() {
    let tmp = tempfile::tempdir().unwrap();
    let d = daemon_with_container(tmp.path(), "tty1");
    let mut term = Terminal::open(37, 101);
    let before = term.settings();
    assert!(!is_raw(&before), "a new pty starts cooked");

    // Prints the size at start, then once more on SIGWINCH, and exits 7.
    let mut control = term.control(
        &d,
        &[
            "run",
            "tty1",
            "sh",
            "-c",
            "trap '/bin/busybox stty size; exit 7' WINCH; /bin/busybox stty size; \
             while :; do sleep 0.1; done",
        ],
    );
    let at = term.expect(0, "37 101");
    // While the command runs the terminal is raw; the container's pty is cooked (it echoes).
    assert!(is_raw(&term.settings()));

    // The user resizes the terminal; the kernel would signal the foreground process group, but
    // `control` is not in a session of this terminal, so the test sends the SIGWINCH itself.
    set_window_size(term.master.as_fd(), 50, 132).unwrap();
    assert_eq!(window_size(term.slave.as_fd()).unwrap(), (50, 132));
    signal(&control, Signal::SIGWINCH);
    term.expect(at, "50 132");

    let st = wait(&mut control, "after the resize");
    assert_eq!(st.code(), Some(7), "{st}: {}", term.text());
    assert_eq!(term.settings(), before, "terminal settings not restored");
}

#[test]
fn ctrl_c_interrupts_the_command_and_control_reports_130() {
    let tmp = tempfile::tempdir().unwrap();
    let d = daemon_with_container(tmp.path(), "tty2");
    let mut term = Terminal::open(24, 80);
    let before = term.settings();

    let mut control = term.control(
        &d,
        &[
            "run",
            "tty2",
            "sh",
            "-c",
            "echo ready; sleep 100; echo not-interrupted",
        ],
    );
    term.expect(0, "ready");
    // Typed before raw mode, ^C would be taken by the test terminal's own line discipline.
    wait_raw(&term);
    let typed = Instant::now();
    term.type_bytes(&[0x03]);
    let st = wait(&mut control, "after ^C");
    // The command died of SIGINT (128+2) and control exited normally with that status; a
    // control killed by the signal itself would have no exit code.
    assert_eq!(st.code(), Some(130), "{st}: {}", term.text());
    assert!(
        typed.elapsed() < Duration::from_secs(5),
        "sleep 100 was not interrupted"
    );
    assert!(!term.text().contains("not-interrupted"), "{}", term.text());
    assert_eq!(term.settings(), before, "terminal settings not restored");

    // The container is unaffected and run still works (nopty: pipes, no terminal needed).
    let out = d.control(&["run", "tty2", "nopty", "sh", "-c", "echo ok"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
}

#[test]
fn a_signal_to_control_restores_the_terminal_and_exits_128_plus_n() {
    let tmp = tempfile::tempdir().unwrap();
    let d = daemon_with_container(tmp.path(), "tty3");
    for (sig, code) in [(Signal::SIGTERM, 143), (Signal::SIGHUP, 129)] {
        let mut term = Terminal::open(24, 80);
        let before = term.settings();
        let mut control = term.control(&d, &["run", "tty3", "sh", "-c", "echo ready; sleep 100"]);
        term.expect(0, "ready");
        wait_raw(&term);
        signal(&control, sig);
        let st = wait(&mut control, "after a signal");
        assert_eq!(st.code(), Some(code), "{sig}: {st} (signal {:?})", st.signal());
        assert_eq!(
            term.settings(),
            before,
            "terminal settings not restored after {sig}"
        );
    }
    // The daemon ended the abandoned commands (SIGHUP to their session): none is left.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let out = d.control(&["run", "tty3", "nopty", "ps"]);
        assert!(out.status.success(), "{out:?}");
        if !String::from_utf8_lossy(&out.stdout).contains("sleep 100") {
            break;
        }
        assert!(Instant::now() < deadline, "sleep 100 still running: {out:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// `control -s SOCKET ARGS… < file`, its output collected; killed (and the test failed) if it has
/// not ended after three [`TIMEOUT`]s.
fn control_with_input(d: &Daemon, args: &[&str], file: &Path) -> Output {
    let child = Command::new(CONTROL)
        .arg("-s")
        .arg(&d.socket)
        .args(args)
        .stdin(Stdio::from(fs::File::open(file).unwrap()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || tx.send(child.wait_with_output().unwrap()));
    match rx.recv_timeout(3 * TIMEOUT) {
        Ok(out) => out,
        Err(_) => {
            let _ = kill(pid, Signal::SIGKILL);
            panic!("control {args:?} < {} did not end", file.display());
        }
    }
}

#[test]
fn input_from_a_file_ends_and_the_command_sees_its_end() {
    let tmp = tempfile::tempdir().unwrap();
    let d = daemon_with_container(tmp.path(), "eof");
    // ~310 KiB of text (the wire field is a string): more than the pipes hold both ways, so input
    // and output have to flow at the same time.
    let text: String = (0..6000)
        .map(|i| format!("line {i:05} {}\n", "x".repeat(40)))
        .collect();
    let file = tmp.path().join("input.txt");
    fs::write(&file, &text).unwrap();

    // nopty: the end of the file closes the command's stdin.
    let out = control_with_input(&d, &["run", "eof", "nopty", "cat"], &file);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stdout == text.as_bytes(),
        "cat returned {} bytes, not the file's {}",
        out.stdout.len(),
        text.len()
    );
    let out = control_with_input(&d, &["run", "eof", "nopty", "/bin/busybox", "wc", "-c"], &file);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        text.len().to_string()
    );

    // pty (stdin is not a terminal): the terminal's EOF character, twice here since the input
    // does not end with a newline (the first hands over "wor"). The pty echoes the input.
    let partial = tmp.path().join("partial.txt");
    fs::write(&partial, "hello\nwor").unwrap();
    let out = control_with_input(&d, &["run", "eof", "/bin/busybox", "wc", "-c"], &partial);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.ends_with("9\r\n"), "{shown:?}");
    let out = control_with_input(&d, &["run", "eof", "cat"], &file);
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    // An empty input ends at once.
    let empty = tmp.path().join("empty");
    fs::write(&empty, "").unwrap();
    let out = control_with_input(&d, &["run", "eof", "nopty", "cat"], &empty);
    assert_eq!((out.status.code(), out.stdout.len()), (Some(0), 0), "{out:?}");
}
