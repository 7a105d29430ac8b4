//! The Debian/systemd rows of the table: a real distribution booting, cml against systemd-nspawn
//! booting the same root file system in the same run.
//!
//! * The guest: `scripts/debian-fixture.sh` through `fixture::debian` (Debian 12 minbase with
//!   systemd, cached under `target/fixtures/debian-12`).
//! * cml: that GuestOS (SHARED_RW squashfs root with a tmpfs overlay, `feature_notify_ready`,
//!   stop signal SIGRTMIN+3), a container with the default user namespace and no network
//!   namespace. start: from the request to its reply, which for a notify guest comes at RUNNING,
//!   i.e. when systemd has sent READY=1 (checked with a status request after it). stop: from the
//!   request to its reply (STOPPED).
//! * nspawn: `systemd-nspawn --register=no --keep-unit --notify-ready=yes --volatile=overlay
//!   --console=passive -D ROOTFS -b` (a tmpfs overlay over the read-only tree, like SHARED_RW; no
//!   `-U`, which fails on this hybrid cgroup host; the host's network, like `netns: false`).
//!   start: from spawning it until it sends `READY=1` to our `NOTIFY_SOCKET` (it forwards the
//!   guest's). stop: from SIGTERM to nspawn (it asks the guest's systemd to power off with
//!   SIGRTMIN+3) until nspawn has exited.

use std::{
    os::unix::net::UnixDatagram,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use cml::protocol::pb::{ContainerState, ControllerToDaemon, controller_to_daemon::Command as Cmd};

use super::{Bench, Client, ms};

/// Start and stop samples of cml (ms).
pub fn cml(b: &Bench, fixture: &Path, runs: usize) -> (Vec<f64>, Vec<f64>) {
    let mut c = b.client();
    c.push_guestos(&fixture.join("store/debian-12.conf"));
    let uuid = c.create("name: \"debian\"\nguest_os: \"debian\"\ncolor: 1\ntoken_type: NONE\nnetns: false\n");
    let (mut starts, mut stops) = (Vec::new(), Vec::new());
    // One warm-up cycle (the first start mounts the image and makes /data).
    for i in 0..=runs {
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        c.start(&uuid, None);
        let start = ms(t.elapsed());
        assert_running(&mut c, &uuid);
        // systemd has more to do after READY=1 (e.g. gettys); let it settle as a user would.
        std::thread::sleep(Duration::from_millis(500));
        let stop = ms(c.stop(&uuid, None));
        if i > 0 {
            starts.push(start);
            stops.push(stop);
        }
    }
    (starts, stops)
}

/// The container is RUNNING (the start replied after READY=1).
fn assert_running(c: &mut Client, uuid: &str) {
    let r = c.call(&ControllerToDaemon {
        command: Cmd::GetContainerStatus as i32,
        container_uuids: vec![uuid.to_owned()],
        ..Default::default()
    });
    let state = r.container_status.first().map(|s| s.state);
    assert_eq!(state, Some(ContainerState::Running as i32), "{r:?}");
}

/// Start and stop samples of systemd-nspawn on the same rootfs (ms).
pub fn nspawn(fixture: &Path, runs: usize) -> Result<(Vec<f64>, Vec<f64>), String> {
    let rootfs = fixture.join("rootfs");
    let work = tempfile::Builder::new()
        .prefix("cmlbench-nspawn")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let sock_path = work.path().join("notify");
    let sock = UnixDatagram::bind(&sock_path).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    let (mut starts, mut stops) = (Vec::new(), Vec::new());
    for i in 0..=runs {
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        let mut child = Command::new("systemd-nspawn")
            .args([
                "--quiet",
                "--register=no",
                "--keep-unit",
                "--notify-ready=yes",
                "--volatile=overlay",
                "--console=passive",
                "--machine",
            ])
            .arg(format!("cmlbench{}", std::process::id()))
            .arg("-D")
            .arg(&rootfs)
            .arg("-b")
            .env("NOTIFY_SOCKET", &sock_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("systemd-nspawn: {e}"))?;
        let mut buf = [0u8; 4096];
        let ready = loop {
            match sock.recv(&mut buf) {
                Ok(n) if String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1") => {
                    break Ok(());
                }
                Ok(_) => {}
                Err(e) => break Err(format!("no READY=1 from systemd-nspawn: {e}")),
            }
        };
        let start = ms(t.elapsed());
        if let Err(e) = ready {
            let _ = child.kill();
            let out = child.wait_with_output().map_err(|e| e.to_string())?;
            return Err(format!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        std::thread::sleep(Duration::from_millis(500));
        let t = Instant::now();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let status = child.wait().map_err(|e| e.to_string())?;
        let stop = ms(t.elapsed());
        if !status.success() {
            return Err(format!("systemd-nspawn ended with {status}"));
        }
        if i > 0 {
            starts.push(start);
            stops.push(stop);
        }
    }
    Ok((starts, stops))
}
