//! The benchmark harness (SPEC §10): a real `cmld` on temporary directories, driven through the real
//! socket protocol by an in-process client, with the busybox fixture GuestOS. `cargo bench` runs it
//! in full (`benches/lifecycle.rs`); `tests/bench_harness.rs` runs one tiny iteration in CI so that
//! it cannot rot. Figures are wall-clock times as a client sees them: from writing the request to
//! reading the reply.
//!
//! Peers: `crun` (see `crun.rs`), measured in the same run on the same shape of container.

#![allow(dead_code, clippy::unwrap_used)]

#[path = "../../tests/common/fixture.rs"]
pub mod fixture;

pub mod crun;
pub mod debian;

use std::{
    fs,
    io::Write as _,
    os::unix::net::UnixStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

use cml::protocol::{
    codec::{encode_frame, read_frame},
    pb::{
        ContainerStartParams, ControllerToDaemon, DaemonToController, controller_to_daemon::Command as Cmd,
        daemon_to_controller::Response,
    },
};
use prost::Message as _;

/// The daemon under test.
pub const CMLD: &str = env!("CARGO_BIN_EXE_cmld");
/// The client users type: each "fresh process" row runs it once per request.
pub const CONTROL: &str = env!("CARGO_BIN_EXE_control");

/// What to measure.
#[derive(Debug, Clone)]
pub struct Config {
    /// Timed start/stop cycles per variant (after one warm-up).
    pub runs: usize,
    /// Concurrency levels.
    pub concurrency: Vec<usize>,
    /// Containers for the `list` round trip.
    pub list_n: usize,
    /// `state` requests over one connection.
    pub state_requests: usize,
    /// Running containers for the loaded RSS figure.
    pub rss_n: usize,
    /// Measure peers (crun).
    pub peers: bool,
    /// Boot runs of the Debian/systemd guest against systemd-nspawn (0: skipped).
    pub debian_runs: usize,
    /// Only these parts of the table (`plain`, `featured`, `concurrent`, `queries`, `rss`,
    /// `debian`); all when `None`. From `CML_BENCH_ONLY=plain,featured`.
    pub only: Option<Vec<String>>,
}

impl Config {
    /// The full benchmark; `CML_BENCH_RUNS=N` changes the cycles per variant, `CML_BENCH_ONLY`
    /// picks parts of it (see [`Config::only`]).
    pub fn full() -> Config {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Config {
            runs: env("CML_BENCH_RUNS").and_then(|v| v.parse().ok()).unwrap_or(30),
            concurrency: vec![1, 10, 20, 50, 100],
            list_n: 100,
            state_requests: 1000,
            rss_n: 100,
            // CML_BENCH_PEERS=0: without crun and systemd-nspawn (a quicker look at ours).
            peers: env("CML_BENCH_PEERS").is_none_or(|v| v != "0"),
            debian_runs: 10,
            only: env("CML_BENCH_ONLY").map(|v| v.split(',').map(|p| p.trim().to_owned()).collect()),
        }
    }

    /// One tiny iteration of everything (for the CI test).
    pub fn tiny() -> Config {
        Config {
            runs: 2,
            concurrency: vec![1, 2],
            list_n: 3,
            state_requests: 10,
            rss_n: 2,
            peers: false,
            debian_runs: 0,
            only: None,
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// Operation.
    pub op: String,
    /// How many containers / requests.
    pub n: usize,
    /// Median (ms, or MiB for memory rows).
    pub median: f64,
    /// 95th percentile (same unit).
    pub p95: f64,
    /// The peer's median for the same operation, when measured.
    pub peer: Option<f64>,
    /// Unit ("ms" or "MiB").
    pub unit: &'static str,
    /// The target of issue #17 for this figure, if it has one.
    pub target: Option<Target>,
}

/// A performance target.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// The median at most this, and the p95 at most the second value where given.
    AtMost(f64, Option<f64>),
    /// The peer's median at least this many times ours.
    PeerRatio(f64),
}

impl Target {
    fn describe(self, unit: &str) -> String {
        match self {
            Target::AtMost(m, None) => format!("≤{m} {unit}"),
            Target::AtMost(m, Some(p)) => format!("≤{m}/{p}"),
            Target::PeerRatio(r) => format!("≥{r}×"),
        }
    }

    /// Whether `row` meets it (`None`: not decidable, e.g. no peer figure).
    pub fn met(self, row: &Row) -> Option<bool> {
        match self {
            Target::AtMost(m, p95) => Some(row.median <= m && p95.is_none_or(|p| row.p95 <= p)),
            Target::PeerRatio(r) => row.peer.map(|peer| peer / row.median >= r),
        }
    }
}

/// The targets of issue #17 (hosted mode, this machine kind), by row name and N.
fn target_for(op: &str, n: usize) -> Option<Target> {
    Some(match (op, n) {
        ("`control start` → RUNNING, fresh process", _) => Target::AtMost(8.0, Some(12.0)),
        ("start → RUNNING", _) => Target::AtMost(5.0, Some(8.0)),
        ("`control stop` → STOPPED, fresh process", _) => Target::AtMost(4.0, None),
        ("`control start --key`, SOFT+ext4+veth, fresh process", _) => Target::AtMost(20.0, None),
        ("concurrent start+stop (wall)", 100) => Target::AtMost(200.0, None),
        ("`control list`, fresh process", _) => Target::AtMost(2.0, None),
        ("daemon RSS, idle", _) => Target::AtMost(13.2, None),
        ("debian/systemd start → RUNNING (READY=1)", _) => Target::PeerRatio(1.5),
        _ => return None,
    })
}

/// Median and p95 (nearest rank) of samples.
pub fn stats(samples: &[f64]) -> (f64, f64) {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (rank(0.5), rank(0.95))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A running cmld on its own directories; killed (by PID) and cleaned up on drop.
pub struct Bench {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub cgroup_parent: String,
    child: Child,
}

impl Bench {
    /// Builds the fixture GuestOSes (tmpfs data; ext4 data) and starts cmld with them installed.
    pub fn start() -> Bench {
        let dir = tempfile::Builder::new().prefix("cmlbench").tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir_all(&data).unwrap();
        let plain = fixture::busybox_guestos(&dir.path().join("fx"), "busybox", 1, &[]);
        let enc = fixture::busybox_guestos(
            &dir.path().join("fx"),
            "busyboxenc",
            1,
            &["--data-fs", "ext4", "--data-size", "16"],
        );
        fs::write(
            data.join("device.conf"),
            format!(
                "signed_configs: false\nstop_timeout: 5\nupdate_base_url: \"{}\"\n",
                plain.store_url()
            ),
        )
        .unwrap();
        let pid = std::process::id();
        let socket = dir.path().join("sock");
        let cgroup_parent = format!("cmlbench{pid}");
        let child = Command::new(CMLD)
            .arg("--data-dir")
            .arg(&data)
            .arg("--socket")
            .arg(&socket)
            .arg("--run-dir")
            .arg(dir.path().join("run"))
            .arg("--cgroup-parent")
            .arg(&cgroup_parent)
            .arg("--ifname-prefix")
            .arg(format!("b{}", pid % 100_000))
            .arg("--net-base")
            .arg("10.250.0.0/16")
            // CML_BENCH_LOG=debug shows the start path's step timings in the kept log.
            .env(
                "RUST_LOG",
                std::env::var("CML_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("cmld.log")).unwrap())
            .spawn()
            .unwrap();
        let b = Bench {
            dir,
            socket,
            cgroup_parent,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&b.socket).is_err() {
            assert!(Instant::now() < deadline, "cmld did not come up");
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut c = b.client();
        for f in [&plain, &enc] {
            c.push_guestos(&f.conf);
        }
        b
    }

    /// A new connection.
    pub fn client(&self) -> Client {
        Client(UnixStream::connect(&self.socket).unwrap())
    }

    /// cmld's resident set size, MiB.
    pub fn rss_mib(&self) -> f64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib / 1024.0
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        // SIGTERM: cmld stops every container and removes its cgroup parent.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bench {
    /// cmld's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("cmld.log")).unwrap_or_default()
    }
}

/// A protocol client.
pub struct Client(pub UnixStream);

impl Client {
    /// One request, one reply.
    pub fn call(&mut self, msg: &ControllerToDaemon) -> DaemonToController {
        self.0.write_all(&encode_frame(msg)).unwrap();
        self.recv()
    }

    /// Installs an unsigned GuestOS config (and its images, from its store); asserts success.
    pub fn push_guestos(&mut self, conf: &std::path::Path) {
        let mut r = self.call(&ControllerToDaemon {
            command: Cmd::PushGuestosConfig as i32,
            guestos_config_file: Some(fs::read(conf).unwrap()),
            guestos_config_signature: Some(Vec::new()),
            guestos_config_certificate: Some(Vec::new()),
            ..Default::default()
        });
        // Progress replies (INSTALL_STARTED) come first.
        while r.response == Some(Response::GuestosMgrInstallStarted as i32) {
            r = self.recv();
        }
        assert_eq!(
            r.response,
            Some(Response::GuestosMgrInstallCompleted as i32),
            "{r:?}"
        );
    }

    /// The next reply.
    pub fn recv(&mut self) -> DaemonToController {
        self.0.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let frame = read_frame(&mut self.0).unwrap().expect("a reply");
        DaemonToController::decode(frame.as_slice()).unwrap()
    }

    /// Creates a container from config text; returns its UUID.
    pub fn create(&mut self, conf: &str) -> String {
        let r = self.call(&ControllerToDaemon {
            command: Cmd::CreateContainer as i32,
            container_config_file: Some(conf.as_bytes().to_vec()),
            ..Default::default()
        });
        assert!(!r.container_uuids.is_empty(), "create failed: {r:?}");
        r.container_uuids[0].clone()
    }

    /// Starts a container; returns the time until the reply (RUNNING).
    pub fn start(&mut self, uuid: &str, pin: Option<&str>) -> Duration {
        self.timed(Cmd::ContainerStart, uuid, pin, Response::ContainerStartOk)
    }

    /// Stops a container; returns the time until the reply (STOPPED).
    pub fn stop(&mut self, uuid: &str, pin: Option<&str>) -> Duration {
        self.timed(Cmd::ContainerStop, uuid, pin, Response::ContainerStopOk)
    }

    /// A start or stop (with the PIN, if any), timed from the request to the reply, which must be
    /// `want`.
    fn timed(&mut self, cmd: Cmd, uuid: &str, pin: Option<&str>, want: Response) -> Duration {
        let msg = ControllerToDaemon {
            command: cmd as i32,
            container_uuids: vec![uuid.to_owned()],
            container_start_params: Some(ContainerStartParams {
                key: pin.map(str::to_owned),
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = Instant::now();
        let r = self.call(&msg);
        let took = t.elapsed();
        assert_eq!(r.response, Some(want as i32), "{cmd:?}: {r:?}");
        took
    }

    /// `GET_CONTAINER_STATUS` for the given UUIDs (all with none); returns the round trip.
    pub fn status(&mut self, uuids: &[String]) -> Duration {
        let msg = ControllerToDaemon {
            command: Cmd::GetContainerStatus as i32,
            container_uuids: uuids.to_vec(),
            ..Default::default()
        };
        let t = Instant::now();
        let r = self.call(&msg);
        let took = t.elapsed();
        assert!(r.container_status.len() >= uuids.len().max(1), "{r:?}");
        took
    }
}

/// The plain container shape: SHARED squashfs root, tmpfs data, no network namespace, no token.
fn plain_conf(name: &str) -> String {
    format!(
        "name: \"{name}\"\nguest_os: \"busybox\"\ncolor: 1\ntoken_type: NONE\nnetns: false\nuserns: false\n"
    )
}

/// With the features on: SOFT token (encrypted ext4 volume) and a veth pair.
fn featured_conf(name: &str) -> String {
    format!(
        "name: \"{name}\"\nguest_os: \"busyboxenc\"\ncolor: 1\ntoken_type: SOFT\nnetns: true\nuserns: false\n"
    )
}

/// Start/stop latencies of one container: `runs` timed cycles after one warm-up.
fn lifecycle(c: &mut Client, uuid: &str, pin: Option<&str>, runs: usize) -> (Vec<f64>, Vec<f64>) {
    c.start(uuid, pin);
    c.stop(uuid, pin);
    let (mut starts, mut stops) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        // An isolated request, as the peers were measured (0.3 s idle before each).
        std::thread::sleep(Duration::from_millis(300));
        starts.push(ms(c.start(uuid, pin)));
        stops.push(ms(c.stop(uuid, pin)));
    }
    (starts, stops)
}

/// One `control` invocation, as a user types it (a fresh process, its output discarded): the wall
/// time from spawning it to its exit, which must be a success.
fn control(b: &Bench, args: &[&str]) -> f64 {
    let t = Instant::now();
    let out = Command::new(CONTROL)
        .arg("-s")
        .arg(&b.socket)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let took = ms(t.elapsed());
    assert!(
        out.status.success(),
        "control {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// Start/stop latencies through a fresh `control` process each, measured like [`lifecycle`].
fn lifecycle_control(b: &Bench, name: &str, pin: Option<&str>, runs: usize) -> (Vec<f64>, Vec<f64>) {
    let key = pin.map(|p| format!("--key={p}"));
    let with_key = |cmd: &'static str| -> Vec<&str> {
        let mut a = vec![cmd, name];
        a.extend(key.as_deref());
        a
    };
    control(b, &with_key("start"));
    control(b, &with_key("stop"));
    let (mut starts, mut stops) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        std::thread::sleep(Duration::from_millis(300));
        starts.push(control(b, &with_key("start")));
        stops.push(control(b, &with_key("stop")));
    }
    (starts, stops)
}

/// N containers started at once (one connection each), then stopped at once: wall times.
fn concurrent(b: &Bench, uuids: &[String]) -> (f64, f64) {
    let wave = |stop: bool| {
        let barrier = Arc::new(Barrier::new(uuids.len() + 1));
        let threads: Vec<_> = uuids
            .iter()
            .map(|u| {
                let (u, barrier, mut c) = (u.clone(), barrier.clone(), b.client());
                std::thread::spawn(move || {
                    barrier.wait();
                    if stop {
                        c.stop(&u, None);
                    } else {
                        c.start(&u, None);
                    }
                })
            })
            .collect();
        barrier.wait();
        let t = Instant::now();
        for th in threads {
            th.join().unwrap();
        }
        ms(t.elapsed())
    };
    let start = wave(false);
    let stop = wave(true);
    (start, stop)
}

/// Host facts that move the figures.
pub fn host_facts() -> String {
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let layout = cml::sys::cgroup::Layout::detect()
        .map(|l| l.describe())
        .unwrap_or_else(|e| e.to_string());
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let cgroup2 = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some("cgroup2"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let fav = if f[3].contains("favordynmods") {
                "favordynmods on"
            } else {
                "no favordynmods"
            };
            format!("{} ({fav})", f[1])
        })
        .unwrap_or_else(|| "none".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "kernel {} · {cpus} CPUs · cgroups: {layout} · cgroup2 mount: {cgroup2}",
        kernel.trim()
    )
}

/// Runs everything in `cfg`, prints the table, returns its rows.
pub fn run(cfg: &Config) -> Vec<Row> {
    let want = |part: &str| cfg.only.as_ref().is_none_or(|o| o.iter().any(|p| p == part));
    let peer = if cfg.peers && (want("plain") || want("concurrent")) {
        let work = tempfile::Builder::new()
            .prefix("cmlbench-crun")
            .tempdir()
            .unwrap();
        match crun::measure(work.path(), cfg.runs, &cfg.concurrency) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("crun peer not measured: {e}");
                None
            }
        }
    } else {
        None
    };
    let b = Bench::start();
    let mut c = b.client();
    let mut rows = Vec::new();
    let mut row = |op: &str, n: usize, samples: &[f64], peer: Option<f64>, unit: &'static str| {
        let (median, p95) = stats(samples);
        rows.push(Row {
            op: op.to_owned(),
            n,
            median,
            p95,
            peer,
            unit,
            target: target_for(op, n),
        });
    };
    let peer_median = |f: fn(&crun::PeerFigures) -> &Vec<f64>| peer.as_ref().map(|p| stats(f(p)).0);

    let rss_idle = b.rss_mib();
    row("daemon RSS, idle", 0, &[rss_idle], None, "MiB");

    // The plain shape.
    if want("plain") {
        let a = c.create(&plain_conf("plain"));
        let (starts, stops) = lifecycle(&mut c, &a, None, cfg.runs);
        row("start → RUNNING", 1, &starts, peer_median(|p| &p.start_ms), "ms");
        row("stop → STOPPED", 1, &stops, peer_median(|p| &p.stop_ms), "ms");
        // The same container as users start it: a fresh `control` process per request (crun's
        // figures include its own process too).
        let (starts, stops) = lifecycle_control(&b, "plain", None, cfg.runs);
        row(
            "`control start` → RUNNING, fresh process",
            1,
            &starts,
            peer_median(|p| &p.start_ms),
            "ms",
        );
        row(
            "`control stop` → STOPPED, fresh process",
            1,
            &stops,
            peer_median(|p| &p.stop_ms),
            "ms",
        );
    }

    // Encrypted volume + veth: the first start creates the volume (and its key).
    if want("featured") {
        let f = c.create(&featured_conf("featured"));
        let first = ms(c.start(&f, Some("trustme")));
        c.stop(&f, Some("trustme"));
        row(
            "first start, SOFT+ext4 (makes the volume)",
            1,
            &[first],
            None,
            "ms",
        );
        let (starts, stops) = lifecycle(&mut c, &f, Some("trustme"), cfg.runs);
        row("start → RUNNING, SOFT+ext4+veth", 1, &starts, None, "ms");
        row("stop → STOPPED, SOFT+ext4+veth", 1, &stops, None, "ms");
        let (starts, _) = lifecycle_control(&b, "featured", Some("trustme"), cfg.runs);
        row(
            "`control start --key`, SOFT+ext4+veth, fresh process",
            1,
            &starts,
            None,
            "ms",
        );
    }

    // Concurrency.
    let max_n = cfg
        .concurrency
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .max(cfg.list_n)
        .max(cfg.rss_n);
    let uuids: Vec<String> = (0..max_n)
        .map(|i| c.create(&plain_conf(&format!("c{i}"))))
        .collect();
    for &n in cfg.concurrency.iter().filter(|_| want("concurrent")) {
        let (start, stop) = concurrent(&b, &uuids[..n]);
        let peer_conc = peer.as_ref().and_then(|p| {
            p.concurrent
                .iter()
                .find(|(pn, _, _)| *pn == n)
                .map(|(_, s, t)| (*s, *t))
        });
        row(
            "concurrent starts (wall)",
            n,
            &[start],
            peer_conc.map(|p| p.0),
            "ms",
        );
        row(
            "concurrent stops (wall)",
            n,
            &[stop],
            peer_conc.map(|p| p.1),
            "ms",
        );
        row(
            "concurrent start+stop (wall)",
            n,
            &[start + stop],
            peer_conc.map(|p| p.0 + p.1),
            "ms",
        );
    }

    // Queries with many containers.
    if want("queries") {
        let lists: Vec<f64> = (0..cfg.runs.max(5)).map(|_| ms(c.status(&[]))).collect();
        row("list (all containers)", uuids.len() + 2, &lists, None, "ms");
        let lists: Vec<f64> = (0..cfg.runs.max(5)).map(|_| control(&b, &["list"])).collect();
        row(
            "`control list`, fresh process",
            uuids.len() + 2,
            &lists,
            None,
            "ms",
        );
        let one = [uuids[0].clone()];
        let t = Instant::now();
        for _ in 0..cfg.state_requests {
            c.status(&one);
        }
        row(
            "state × N, one connection (total)",
            cfg.state_requests,
            &[ms(t.elapsed())],
            None,
            "ms",
        );
    }

    // Memory with containers running.
    if want("rss") {
        let running = &uuids[..cfg.rss_n];
        for u in running {
            c.start(u, None);
        }
        row(
            "daemon RSS, containers running",
            cfg.rss_n,
            &[b.rss_mib()],
            None,
            "MiB",
        );
        for u in running {
            c.stop(u, None);
        }
    }

    if cfg.debian_runs > 0 && want("debian") {
        match fixture::debian() {
            Ok(fx) => {
                let (starts, stops) = debian::cml(&b, &fx, cfg.debian_runs);
                let nspawn = if cfg.peers {
                    debian::nspawn(&fx, cfg.debian_runs)
                        .map_err(|e| eprintln!("systemd-nspawn peer not measured: {e}"))
                        .ok()
                } else {
                    None
                };
                let peer_of = |i: usize| nspawn.as_ref().map(|p| stats(if i == 0 { &p.0 } else { &p.1 }).0);
                row(
                    "debian/systemd start → RUNNING (READY=1)",
                    1,
                    &starts,
                    peer_of(0),
                    "ms",
                );
                row("debian/systemd stop → STOPPED", 1, &stops, peer_of(1), "ms");
            }
            Err(e) => eprintln!("Debian fixture not built, its rows are skipped: {e}"),
        }
    }

    let mut peers: Vec<String> = peer.iter().map(|p| p.version.clone()).collect();
    if rows
        .iter()
        .any(|r| r.op.starts_with("debian") && r.peer.is_some())
    {
        peers.push("debian/systemd rows: systemd-nspawn (same rootfs, --volatile=overlay)".into());
    }
    let peers = peers.join("; ");
    print_table(&rows, (!peers.is_empty()).then_some(peers.as_str()));
    if let Some(path) = std::env::var_os("CML_BENCH_KEEP_LOG") {
        let _ = fs::write(path, b.log());
    }
    rows
}

/// Prints the table: operation, N, median, p95, peer median, ratio (peer ÷ ours: above 1 means
/// faster than the peer), the target (issue #17) and whether it is met.
pub fn print_table(rows: &[Row], peer: Option<&str>) {
    println!("# cml benchmark — {}", host_facts());
    println!("# peer: {}", peer.unwrap_or("none measured"));
    println!(
        "{:<52} {:>5} {:>10} {:>10} {:>10} {:>8} {:>10} {:>4}",
        "operation", "N", "median", "p95", "peer", "ratio", "target", "met"
    );
    for r in rows {
        let peer = r.peer.map_or("-".to_owned(), |p| format!("{p:.1}"));
        let ratio = r.peer.map_or("-".to_owned(), |p| format!("{:.2}", p / r.median));
        let target = r.target.map_or("-".to_owned(), |t| t.describe(r.unit));
        let met = match r.target.and_then(|t| t.met(r)) {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        println!(
            "{:<52} {:>5} {:>7.2} {:<2} {:>7.2} {:<2} {:>10} {:>8} {:>10} {:>4}",
            r.op, r.n, r.median, r.unit, r.p95, r.unit, peer, ratio, target, met
        );
    }
}
