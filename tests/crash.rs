//! Crash consistency: cmld is killed with SIGKILL at random instants while it creates, updates and
//! removes containers, installs (or removes) GuestOS versions, changes the softtoken PIN and starts
//! containers; after every restart the data directory must be consistent.
//!
//! One iteration: pick an operation and a delay of 0–40 ms with a deterministic xorshift PRNG,
//! launch the real `control` for it as a child process, sleep the delay, SIGKILL the daemon, reap
//! the `control` child (killed by its PID if it hangs), restart cmld on the same directories and
//! check the invariants:
//!
//! 1. every `containers/<uuid>.conf` parses with [`cml::container::load_config`], and `control list`
//!    shows exactly those containers;
//! 2. every GuestOS `control list_guestos` reports has its directory with its config, and every
//!    image of that config is there with the declared size (no half-installed GuestOS is listed);
//! 3. every `keys/<uuid>.key` unwraps with the current PIN: `control start C --key=PIN` succeeds
//!    (then the container is stopped). After a crash during `change_pin` the current PIN is the old
//!    or the new one — found by trying — but exactly one of them, and the same for all keys;
//! 4. nothing is orphaned: no `.cml-tmp.*` anywhere below the data directory; no
//!    `containers/<uuid>/`, `containers/<uuid>.{net,uid,created,sig,cert}` or `keys/<uuid>.key`
//!    without its `containers/<uuid>.conf`; no `operatingsystems/.install-*` or `.remove-*`.
//!
//! The population: one SOFT-token "anchor" container that is never removed (it always has a key,
//! so the PIN can always be determined), a few more SOFT ones (their first start creates the key)
//! and NONE ones, all `userns: false`, of the busybox GuestOS built with an ext4 data volume (so the
//! SOFT ones have encrypted volumes). Between iterations some NONE containers are started or stopped
//! (outside any kill window), so operations also meet running containers and restarts adopt them.
//! The push operation installs the next of three pre-built versions of a second GuestOS, `spare`;
//! once all three are installed it removes `spare` instead (`remove_guestos`), so that later pushes
//! install again rather than being no-op successes.
//!
//! Environment: `CML_CRASH_SEED` (decimal or 0x-hex; default 0x5eedc0de2024) and
//! `CML_CRASH_ITERATIONS` (default 25: the CI version, 10–15 s plus the build in a debug build on 2
//! cores). The PRNG makes the choices deterministic, but which operations completed before the kill
//! depends on timing, and later choices depend on the resulting state: a seed replays a run only
//! approximately. A failure names the seed, iteration, operation and delay, shows the processes
//! left in the daemon's cgroups and the tail of its log. The summary line (`--nocapture`) counts
//! operations, how many completed before the kill, and what the restarts had to recover.
//!
//! Long run: `CML_CRASH_ITERATIONS=200 cargo test --test crash -- --nocapture`. Last result (debug
//! build, 2 cores, data dir on disk): 200 iterations passed in 93 s with the default seed — 26
//! creates, 28 update_configs, 42 removes, 23 GuestOS pushes, 7 GuestOS removals, 34 change_pins,
//! 40 starts (no start finishes within 40 ms); the restarts adopted 211 running containers, cleaned
//! up 27 interrupted starts, swept temporary files 8 times and GuestOS staging directories 11 times;
//! 4 PIN changes took effect without `control` seeing the reply. Before the fixes in
//! `actors/lifecycle.rs` (`adopt`) and `store.rs`/`daemon.rs` (start-up sweep of `.cml-tmp.*` in
//! `keys/`, `tokens/`, `tokens/ca/` and the root), 25 iterations failed at once.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    CONTROL, Daemon,
    fixture::{GuestOsFixture, busybox_guestos},
};
use serde_json::Value;

const DEFAULT_SEED: u64 = 0x5eed_c0de_2024;
const DEFAULT_ITERATIONS: u64 = 25;
/// The kill comes 0..=MAX_DELAY_MS after `control` was launched.
const MAX_DELAY_MS: u64 = 40;
/// Containers besides the anchor: creates turn into removes above, removes into creates below.
const MAX_OTHERS: usize = 7;
const MIN_OTHERS: usize = 2;
const SPARE_VERSIONS: u64 = 3;
const DEFAULT_PIN: &str = "trustme";

/// xorshift64*: small, deterministic, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so that small seeds give well-mixed states (and never 0).
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("{name}={v:?}: {e}"))
        }
        Err(_) => default,
    }
}

/// A container as `control --json list` shows it.
#[derive(Debug, Clone)]
struct Listed {
    uuid: String,
    name: String,
    state: String,
    soft: bool,
}

fn list(d: &Daemon) -> Vec<Listed> {
    let v: Value = serde_json::from_str(&d.ok(&["--json", "list"])).unwrap();
    v["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Listed {
            uuid: c["uuid"].as_str().unwrap().to_owned(),
            name: c["name"].as_str().unwrap().to_owned(),
            state: c["state"].as_str().unwrap().to_owned(),
            soft: c["token_type"] == "SOFT",
        })
        .collect()
}

fn container_text(name: &str, soft: bool, color: u64) -> String {
    let token = if soft { "SOFT" } else { "NONE" };
    format!("name: \"{name}\"\nguest_os: \"busybox\"\ncolor: {color}\ntoken_type: {token}\nuserns: false\n")
}

/// The operations whose interruption is tested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Create,
    UpdateConfig,
    Remove,
    PushGuestos,
    /// What a push turns into once every spare version is installed.
    RemoveGuestos,
    ChangePin,
    Start,
}

const OPS: [Op; 6] = [
    Op::Create,
    Op::UpdateConfig,
    Op::Remove,
    Op::PushGuestos,
    Op::ChangePin,
    Op::Start,
];

/// One planned `control` invocation.
struct Planned {
    op: Op,
    args: Vec<String>,
    stdin: String,
    what: String,
    /// For change_pin: the PIN it sets.
    new_pin: Option<String>,
}

struct Harness {
    rng: Rng,
    seed: u64,
    d: Option<Daemon>,
    spare: Vec<GuestOsFixture>,
    empty: String,
    anchor: String,
    pin: String,
    names: u64,
    /// Per operation: (attempts, of which `control` reported success before the kill).
    stats: BTreeMap<Op, (u32, u32)>,
    /// `*.img.new` leftovers seen after restarts (not an invariant; reported).
    img_new_seen: BTreeSet<PathBuf>,
    /// change_pin runs whose `control` failed (killed) but whose new PIN took effect.
    pin_changed_unacknowledged: u32,
}

impl Harness {
    fn d(&self) -> &Daemon {
        self.d.as_ref().unwrap()
    }

    fn data(&self) -> PathBuf {
        self.d().data.clone()
    }

    /// The next spare version to install, or None when all are installed.
    fn next_spare(&self) -> Option<&GuestOsFixture> {
        let v: Value = serde_json::from_str(&self.d().ok(&["--json", "list_guestos"])).unwrap();
        let newest = v["guestos"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["name"] == "spare")
            .filter_map(|g| g["version"].as_u64())
            .max()
            .unwrap_or(0);
        self.spare.iter().find(|f| f.version > newest)
    }

    fn plan(&mut self) -> Planned {
        let all = list(self.d());
        let others: Vec<&Listed> = all.iter().filter(|c| c.uuid != self.anchor).collect();
        let mut op = *self.rng.pick(&OPS);
        if op == Op::Create && others.len() >= MAX_OTHERS {
            op = Op::Remove;
        } else if op == Op::Remove && others.len() <= MIN_OTHERS {
            op = Op::Create;
        }
        let mut new_pin = None;
        let mut stdin = String::new();
        let (args, what): (Vec<String>, String) = match op {
            Op::Create => {
                self.names += 1;
                let name = format!("c{}", self.names);
                let soft = self.rng.below(2) == 0;
                let file = self
                    .d()
                    .file(&format!("{name}.conf"), &container_text(&name, soft, 1));
                (
                    vec!["create".into(), file],
                    format!("create {name} ({})", if soft { "SOFT" } else { "NONE" }),
                )
            }
            Op::UpdateConfig => {
                let c = (*self.rng.pick(&all)).clone();
                let color = 1 + self.rng.below(1 << 24);
                let file = self.d().file(
                    &format!("{}-update.conf", c.name),
                    &container_text(&c.name, c.soft, color),
                );
                (
                    vec!["update_config".into(), c.uuid.clone(), file],
                    format!("update_config {} ({}, {})", c.name, c.uuid, c.state),
                )
            }
            Op::Remove => {
                let c = (*self.rng.pick(&others)).clone();
                (
                    vec!["remove".into(), c.uuid.clone()],
                    format!("remove {} ({}, {})", c.name, c.uuid, c.state),
                )
            }
            Op::PushGuestos | Op::RemoveGuestos => match self.next_spare() {
                Some(f) => {
                    let conf = f.conf.to_str().unwrap().to_owned();
                    let what = format!("push_guestos_config spare-{}", f.version);
                    op = Op::PushGuestos;
                    (
                        vec![
                            "push_guestos_config".into(),
                            conf,
                            self.empty.clone(),
                            self.empty.clone(),
                        ],
                        what,
                    )
                }
                None => {
                    op = Op::RemoveGuestos;
                    (
                        vec!["remove_guestos".into(), "spare".into()],
                        "remove_guestos spare".into(),
                    )
                }
            },
            Op::ChangePin => {
                let new = loop {
                    let p = format!("{:06}", self.rng.below(1_000_000));
                    if p != self.pin {
                        break p;
                    }
                };
                stdin = format!("{}\n{new}\n{new}\n", self.pin);
                let what = format!("change_pin {} -> {new}", self.pin);
                new_pin = Some(new);
                (vec!["change_pin".into(), self.anchor.clone()], what)
            }
            Op::Start => {
                let stopped: Vec<&Listed> = all.iter().filter(|c| c.state == "STOPPED").collect();
                let c = if stopped.is_empty() {
                    all.iter().find(|c| c.uuid == self.anchor).unwrap().clone()
                } else {
                    (*self.rng.pick(&stopped)).clone()
                };
                let mut args = vec!["start".to_owned(), c.uuid.clone()];
                if c.soft {
                    args.push(format!("--key={}", self.pin));
                }
                (
                    args,
                    format!(
                        "start {} ({}, {}, {})",
                        c.name,
                        c.uuid,
                        if c.soft { "SOFT" } else { "NONE" },
                        c.state
                    ),
                )
            }
        };
        Planned {
            op,
            args,
            stdin,
            what,
            new_pin,
        }
    }

    /// Runs one iteration: the operation, the kill, the restart and the checks. A violated
    /// invariant is returned as a description of the iteration and the violation.
    fn iteration(&mut self, i: u64) -> Result<(), String> {
        let planned = self.plan();
        let delay = self.rng.below(MAX_DELAY_MS + 1);
        let context = format!(
            "seed {:#x}, iteration {i}: {} killed after {delay} ms",
            self.seed, planned.what
        );
        // Shown by the test harness if anything below panics (e.g. cmld does not come back).
        println!("{context}");
        let out_path = self.d().dir.path().join(format!("op-{i}.out"));
        let out = fs::File::create(&out_path).unwrap();
        let mut child = Command::new(CONTROL)
            .arg("-s")
            .arg(&self.d().socket)
            .args(&planned.args)
            .stdin(Stdio::piped())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(planned.stdin.as_bytes());
        }
        std::thread::sleep(Duration::from_millis(delay));
        self.d.as_mut().unwrap().kill9();
        // The client sees the connection end; one that hangs anyway is killed (our own child).
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break Some(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let completed = status.is_some_and(|s| s.success());
        let entry = self.stats.entry(planned.op).or_default();
        entry.0 += 1;
        entry.1 += u32::from(completed);
        let d = self.d.take().unwrap();
        self.d = Some(d.restart());

        let output = fs::read_to_string(&out_path).unwrap_or_default();
        let fail = |what: String| {
            format!(
                "{context}\n  control: {}\n  {}\n  violation: {what}",
                status.map_or("hung, killed".to_owned(), |s| s.to_string()),
                output.trim().replace('\n', "\n  ")
            )
        };
        self.check_configs().map_err(&fail)?;
        self.check_guestos().map_err(&fail)?;
        self.check_orphans().map_err(&fail)?;
        let candidates = match planned.new_pin {
            Some(new) => vec![self.pin.clone(), new],
            None => vec![self.pin.clone()],
        };
        let pin = self.check_keys(&candidates).map_err(&fail)?;
        if planned.op == Op::ChangePin && !completed && pin != self.pin {
            self.pin_changed_unacknowledged += 1;
        }
        self.pin = pin;
        self.settle();
        Ok(())
    }

    /// Invariant 1: configs parse, and `list` shows exactly them.
    fn check_configs(&self) -> Result<(), String> {
        let dir = self.data().join("containers");
        let mut on_disk = BTreeSet::new();
        for e in fs::read_dir(&dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // Temporaries (`.cml-tmp.*.conf`) are the orphan check's business.
            let Some(uuid) = name.strip_suffix(".conf").filter(|u| is_uuid(u)) else {
                continue;
            };
            let bytes = fs::read(e.path()).map_err(|err| format!("{name}: {err}"))?;
            if let Err(err) = cml::container::load_config(&bytes) {
                return Err(format!(
                    "containers/{name} does not load: {err}\n{}",
                    String::from_utf8_lossy(&bytes)
                ));
            }
            on_disk.insert(uuid.to_owned());
        }
        let listed: BTreeSet<String> = list(self.d()).into_iter().map(|c| c.uuid).collect();
        if listed != on_disk {
            return Err(format!(
                "control list shows {listed:?} but containers/ has configs {on_disk:?}"
            ));
        }
        if !listed.contains(&self.anchor) {
            return Err(format!("the anchor container {} is gone", self.anchor));
        }
        Ok(())
    }

    /// Invariant 2: every listed GuestOS is complete on disk.
    fn check_guestos(&self) -> Result<(), String> {
        let v: Value = serde_json::from_str(&self.d().ok(&["--json", "list_guestos"])).unwrap();
        let store = self.data().join("operatingsystems");
        for g in v["guestos"].as_array().unwrap() {
            let stem = format!("{}-{}", g["name"].as_str().unwrap(), g["version"]);
            let dir = store.join(&stem);
            let conf = dir.join(format!("{stem}.conf"));
            if !conf.is_file() {
                return Err(format!("{stem} is listed but {} is missing", conf.display()));
            }
            for m in g["mounts"].as_array().into_iter().flatten() {
                let Some(size) = m["image_size"].as_u64() else {
                    continue;
                };
                let img = dir.join(format!("{}.img", m["image_file"].as_str().unwrap()));
                match fs::symlink_metadata(&img) {
                    Ok(meta) if meta.is_file() && meta.len() == size => {}
                    Ok(meta) => {
                        return Err(format!(
                            "{stem} is listed but {} has {} bytes (declared {size})",
                            img.display(),
                            meta.len()
                        ));
                    }
                    Err(e) => return Err(format!("{stem} is listed but {}: {e}", img.display())),
                }
            }
        }
        Ok(())
    }

    /// Invariant 4: no temporaries, staging directories or files of containers without a config.
    fn check_orphans(&mut self) -> Result<(), String> {
        let data = self.data();
        let mut found = Vec::new();
        let mut img_new = Vec::new();
        walk(&data, &mut |p| {
            let name = p.file_name().unwrap().to_string_lossy();
            if name.starts_with(".cml-tmp.") {
                found.push(format!("temporary file {}", p.display()));
            }
            if name.ends_with(".img.new") {
                img_new.push(p.to_owned());
            }
        });
        self.img_new_seen.extend(img_new);
        let has_conf = |uuid: &str| data.join("containers").join(format!("{uuid}.conf")).is_file();
        for e in fs::read_dir(data.join("containers")).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let (stem, ext) = name.rsplit_once('.').unwrap_or((&name, ""));
            if !is_uuid(stem) {
                continue;
            }
            let per_container = (ext.is_empty() && e.path().is_dir())
                || ["net", "uid", "created", "sig", "cert"].contains(&ext);
            if per_container && !has_conf(stem) {
                found.push(format!("containers/{name} without containers/{stem}.conf"));
            }
        }
        for e in fs::read_dir(data.join("keys")).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(uuid) = name.strip_suffix(".key")
                && !has_conf(uuid)
            {
                found.push(format!("keys/{name} without containers/{uuid}.conf"));
            }
        }
        for e in fs::read_dir(data.join("operatingsystems")).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".install-") || name.starts_with(".remove-") {
                found.push(format!("GuestOS staging directory operatingsystems/{name}"));
            }
        }
        if found.is_empty() {
            Ok(())
        } else {
            Err(format!("orphaned: {}", found.join("; ")))
        }
    }

    /// Invariant 3: every wrapped key unwraps with the one current PIN; returns that PIN.
    fn check_keys(&self, candidates: &[String]) -> Result<String, String> {
        let mut keyed: Vec<String> = fs::read_dir(self.data().join("keys"))
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.strip_suffix(".key").map(str::to_owned)
            })
            .collect();
        keyed.sort();
        // The anchor first: it always has a key, so the PIN is decided there.
        keyed.sort_by_key(|u| *u != self.anchor);
        if keyed.first() != Some(&self.anchor) {
            return Err(format!("the anchor container {} has no key", self.anchor));
        }
        let mut pin = None;
        for uuid in &keyed {
            match &pin {
                None => {
                    let mut working = Vec::new();
                    for cand in candidates {
                        if self.unlock_cycle(uuid, cand)? {
                            working.push(cand.clone());
                        }
                    }
                    if working.len() != 1 {
                        return Err(format!(
                            "the key of {uuid} unwraps with {} of the PINs {candidates:?}: {working:?}",
                            working.len()
                        ));
                    }
                    pin = working.pop();
                }
                Some(p) => {
                    if !self.unlock_cycle(uuid, p)? {
                        return Err(format!(
                            "the key of {uuid} does not unwrap with the PIN {p} that works for {}",
                            self.anchor
                        ));
                    }
                }
            }
        }
        Ok(pin.unwrap())
    }

    /// Stops the container if it runs, then starts and stops it with `pin`. Ok(false) when the
    /// token says the PIN is wrong; any other failure is an error.
    fn unlock_cycle(&self, uuid: &str, pin: &str) -> Result<bool, String> {
        let d = self.d();
        let key = format!("--key={pin}");
        let state = d.ok(&["state", uuid]);
        if state.trim() != "STOPPED" {
            let out = d.control(&["--json", "stop", uuid, &key]);
            match response(&out).as_str() {
                "CONTAINER_STOP_OK" => {}
                "CONTAINER_STOP_PASSWD_WRONG" => return Ok(false),
                other => {
                    return Err(format!(
                        "stop {uuid} (was {}) with {pin}: {other} {}",
                        state.trim(),
                        stderr(&out)
                    ));
                }
            }
        }
        let out = d.control(&["--json", "start", uuid, &key]);
        match response(&out).as_str() {
            "CONTAINER_START_OK" => {}
            "CONTAINER_START_PASSWD_WRONG" => return Ok(false),
            other => {
                return Err(format!("start {uuid} with {pin}: {other} {}", stderr(&out)));
            }
        }
        let out = d.control(&["--json", "stop", uuid, &key]);
        if response(&out) != "CONTAINER_STOP_OK" {
            return Err(format!(
                "stop {uuid} after its start with {pin}: {}",
                stderr(&out)
            ));
        }
        Ok(true)
    }

    /// Stops about half of the running NONE containers and sometimes starts a stopped one (outside
    /// any kill window), so that the next operations meet running containers too (a remove stops
    /// one first, an update waits for the next start, a restart adopts it) without all of them
    /// ending up running.
    fn settle(&mut self) {
        let all = list(self.d());
        for c in &all {
            if !c.soft && c.state != "STOPPED" && self.rng.below(2) == 0 {
                let _ = self.d().control(&["stop", &c.uuid]);
            }
        }
        let stopped: Vec<&Listed> = all.iter().filter(|c| !c.soft && c.state == "STOPPED").collect();
        if !stopped.is_empty() && self.rng.below(2) == 0 {
            let c = *self.rng.pick(&stopped);
            let _ = self.d().control(&["start", &c.uuid]);
        }
    }
}

/// A UUID in the daemon's spelling (lowercase, hyphenated), as container file names use it.
fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok_and(|u| u.to_string() == s)
}

fn response(out: &std::process::Output) -> String {
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["response"].as_str().unwrap_or_default().to_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Calls `f` for every entry below `dir` (symlinks are not followed).
fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        f(&p);
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&p, f);
        }
    }
}

/// For a failure report: each container cgroup of the daemon with the processes in it.
fn cgroup_processes(parent: &str) -> String {
    let mut out = String::new();
    for dir in common::cgroup_dirs(parent) {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if !e.path().is_dir() {
                continue;
            }
            let procs = fs::read_to_string(e.path().join("cgroup.procs")).unwrap_or_default();
            let described: Vec<String> = procs
                .split_whitespace()
                .map(|pid| {
                    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                    format!("{pid}: {}", stat.split(' ').take(4).collect::<Vec<_>>().join(" "))
                })
                .collect();
            out.push_str(&format!("{}: [{}]\n", e.path().display(), described.join(", ")));
        }
    }
    out
}

/// The last `n` lines of a text.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[test]
fn killed_at_random_points_the_data_dir_stays_consistent() {
    let seed = env_u64("CML_CRASH_SEED", DEFAULT_SEED);
    let iterations = env_u64("CML_CRASH_ITERATIONS", DEFAULT_ITERATIONS);
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &["--data-fs", "ext4", "--data-size", "16"]);
    let spare = (1..=SPARE_VERSIONS)
        .map(|v| busybox_guestos(tmp.path(), "spare", v, &[]))
        .collect();
    let empty = d.file("empty", "");
    let anchor = d.create_text("anchor", &container_text("anchor", true, 1));
    d.create_text("soft1", &container_text("soft1", true, 1));
    d.create_text("none1", &container_text("none1", false, 1));
    d.create_text("none2", &container_text("none2", false, 1));
    // The anchor's key exists from the start.
    d.ok(&["start", &anchor, &format!("--key={DEFAULT_PIN}")]);
    d.ok(&["stop", &anchor, &format!("--key={DEFAULT_PIN}")]);
    let setup = t0.elapsed();
    let mut h = Harness {
        rng: Rng::new(seed),
        seed,
        d: Some(d),
        spare,
        empty,
        anchor,
        pin: DEFAULT_PIN.to_owned(),
        names: 0,
        stats: BTreeMap::new(),
        img_new_seen: BTreeSet::new(),
        pin_changed_unacknowledged: 0,
    };
    println!("crash harness: seed {seed:#x}, {iterations} iterations");
    for i in 0..iterations {
        if let Err(e) = h.iteration(i) {
            panic!(
                "{e}\n--- processes in the daemon's cgroups ---\n{}--- cmld log (tail) ---\n{}",
                cgroup_processes(&h.d().cgroup_parent),
                tail(&h.d().log_text(), 80)
            );
        }
    }
    // What recovery had to do, from the daemon's log (one file over all restarts).
    let log = h.d().log_text();
    let recoveries: Vec<String> = [
        ("adopted a running container", "adopted"),
        (
            "cleaning up after a start interrupted by a crash",
            "interrupted starts cleaned",
        ),
        (
            "removed temporary files left by an interrupted write",
            "temporary-file sweeps",
        ),
        (
            "removed GuestOS installations interrupted by a crash",
            "GuestOS staging sweeps",
        ),
    ]
    .iter()
    .map(|(line, what)| format!("{what}: {}", log.matches(line).count()))
    .collect();
    let stats: Vec<String> = h
        .stats
        .iter()
        .map(|(op, (n, ok))| format!("{op:?} {n} ({ok} completed before the kill)"))
        .collect();
    println!(
        "crash harness: seed {seed:#x}: {iterations} iterations passed in {:.1?} (setup {:.1?}); {}; \
         PIN changed without an acknowledgement: {}; \
         *.img.new leftovers seen: {}; recovery at start-up: {}",
        t0.elapsed(),
        setup,
        stats.join(", "),
        h.pin_changed_unacknowledged,
        h.img_new_seen.len(),
        recoveries.join(", ")
    );
}
