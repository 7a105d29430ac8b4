//! The container actor's runtime side: start, stop, freeze, exec preparation, the init's exit, and
//! adopting a container that survived a daemon restart.
//!
//! A start runs as one `AtomicResponse` (no other message for this container is handled until it
//! has an outcome): resolve GuestOS → prepare on the blocking pool (images, run dir, cgroup, plan) →
//! the launcher forks the monitor → the monitor's first event says `Started` or `Failed` → BOOTING →
//! RUNNING (at once, or on `READY=1` from a notify-capable guest). On any failure what was prepared
//! is removed and the state returns to STOPPED. A watcher task waits for the init's exit (the
//! monitor's `Exited` event, or the init's pidfd for an adopted container) and tells the actor.

use std::{
    os::fd::AsRawFd,
    os::unix::net::{UnixDatagram, UnixStream as StdUnixStream},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use actix::{ActorFutureExt, AsyncContext, AtomicResponse, Context, Handler, Message, WrapFuture};
use nix::sys::signal::Signal;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    sync::{oneshot, watch},
};
use tracing::{info, warn};

use super::{container::ContainerActor, read};
use crate::{
    container::{
        State,
        runtime::{self, Prepared, StartError},
    },
    launcher::{
        Request,
        plan::{ExecPlan, MonitorEvent, RunState},
    },
    protocol::pb::RestartPolicy,
    sys::{cgroup::ContainerCgroup, cgroup::FreezerState, pidfd::PidFd},
};

mod start;

pub use start::*;

/// How the init ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExitInfo {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Signal, if it was killed.
    pub signal: Option<i32>,
    /// The fscrypt key of an encrypted volume is still in use (files held open outside the
    /// container): the container is ZOMBIE until the monitor reports the key gone.
    pub keys_busy: bool,
}

/// What a ZOMBIE container whose volume key is still in use tells the user.
const KEYS_BUSY: &str = "the volume key could not be removed: files of an encrypted volume are held open \
                         outside the container and stay readable until they are closed; the container \
                         is ZOMBIE until then";

/// A running container.
pub struct Run {
    /// The init.
    pub init: Arc<PidFd>,
    /// Its cgroup.
    pub cgroup: ContainerCgroup,
    /// Its run directory.
    pub run_dir: PathBuf,
    /// When it started.
    pub started: Instant,
    /// Set once by the watcher when the init has ended.
    pub exited: watch::Receiver<Option<ExitInfo>>,
    /// The GuestOS's stop signal (number).
    pub stop_signal: i32,
    /// Started in setup mode.
    pub setup: bool,
    /// The user's start waits for a notify guest's readiness: told `Ok` at READY=1, or why not.
    pub boot: Option<oneshot::Sender<Result<(), String>>>,
}

/// What a start of a notify guest leaves to wait for (see [`Start`]): `Ok` once the guest
/// reported READY=1 (the container is RUNNING), or why it never will (its init ended first: the
/// exit and the last lines of its console). `None` for a guest that is RUNNING (or SETUP) at once.
pub type BootWait = Option<oneshot::Receiver<Result<(), String>>>;

/// How long a user's start waits for a notify guest's READY=1 before it replies with the container
/// still BOOTING (the start itself succeeded).
pub const BOOT_WAIT: Duration = Duration::from_secs(60);

/// Why a start did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StartFailure {
    /// Not stopped.
    #[error("container is {0}, not STOPPED")]
    NotStopped(State),
    /// A step failed (everything was undone).
    #[error(transparent)]
    Failed(#[from] StartError),
}

/// Why a stop did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StopFailure {
    /// Nothing runs.
    #[error("container is {0}, not running")]
    NotRunning(State),
    /// Cleanup failed; the container is ZOMBIE.
    #[error("cleanup failed: {0}")]
    Cleanup(String),
}

/// The number of a stop signal named in a GuestOS: SIGTERM when none is named (an installed config
/// was validated, so a name that does not parse — from an older cml — also means SIGTERM).
pub fn parse_signal(name: Option<&str>) -> i32 {
    name.and_then(|n| crate::guestos::parse_stop_signal(n).ok())
        .unwrap_or(Signal::SIGTERM as i32)
}

/// Waits for the init to end: from the monitor's channel when there is one, else from its pidfd
/// and the exit file the monitor writes. Returns the channel for what may follow (`KeysRemoved`).
async fn watch_exit(
    channel: Option<tokio::net::UnixStream>,
    init: Arc<PidFd>,
    run_dir: &std::path::Path,
) -> (ExitInfo, Option<Lines>) {
    if let Some(ch) = channel {
        let mut lines = BufReader::new(ch).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(MonitorEvent::Exited {
                code,
                signal,
                keys_busy,
            }) = serde_json::from_str(&line)
            {
                return (
                    ExitInfo {
                        code,
                        signal,
                        keys_busy,
                    },
                    Some(lines),
                );
            }
        }
    }
    init.wait_exited().await;
    // The monitor writes the exit file right after reaping the init and removing the keys.
    for _ in 0..100 {
        if let Some(info) = read_exit_file(run_dir) {
            return (info, None);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (ExitInfo::default(), None)
}

type Lines = tokio::io::Lines<BufReader<tokio::net::UnixStream>>;

/// The exit file the monitor writes (`<run>/<uuid>/exit`), if there is one.
pub(super) fn read_exit_file(run_dir: &std::path::Path) -> Option<ExitInfo> {
    let b = std::fs::read(run_dir.join("exit")).ok()?;
    match serde_json::from_slice(&b).ok()? {
        MonitorEvent::Exited {
            code,
            signal,
            keys_busy,
        } => Some(ExitInfo {
            code,
            signal,
            keys_busy,
        }),
        _ => None,
    }
}

/// After an exit with busy keys: waits until the monitor has removed them (its `KeysRemoved` event,
/// or — without a channel — its exit file saying so).
async fn wait_keys_removed(lines: Option<Lines>, run_dir: &std::path::Path) {
    if let Some(mut lines) = lines {
        while let Ok(Some(line)) = lines.next_line().await {
            if matches!(serde_json::from_str(&line), Ok(MonitorEvent::KeysRemoved)) {
                return;
            }
        }
    }
    while read_exit_file(run_dir).is_some_and(|i| i.keys_busy) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl ContainerActor {
    /// Starts the watcher for a run and returns the receiver side.
    fn spawn_watcher(
        &self,
        ctx: &mut Context<Self>,
        channel: Option<tokio::net::UnixStream>,
        init: Arc<PidFd>,
        run_dir: PathBuf,
    ) -> watch::Receiver<Option<ExitInfo>> {
        let (tx, rx) = watch::channel(None);
        let addr = ctx.address();
        actix_rt::spawn(async move {
            let (info, lines) = watch_exit(channel, init, &run_dir).await;
            let _ = tx.send(Some(info));
            addr.do_send(InitExited(info));
            if info.keys_busy {
                wait_keys_removed(lines, &run_dir).await;
                addr.do_send(KeysRemoved { run_dir });
            }
        });
        rx
    }

    /// Ends a run: removes the cgroup and run directory, releases assigned devices, takes a
    /// pending config, and moves to `to` (STOPPED, or REBOOTING for a guest reboot) — or ZOMBIE if
    /// the cleanup failed. Idempotent.
    fn finish_run(&mut self, info: ExitInfo, to: State) -> Result<(), String> {
        let Some(mut run) = self.run.take() else {
            return Ok(());
        };
        info!(container = %self.uuid, code = ?info.code, signal = ?info.signal, "init ended");
        // A user's start still waits for this notify guest: it failed. (The log is complete: the
        // monitor drains the console before it reports the exit.)
        if let Some(boot) = run.boot.take() {
            let _ = boot.send(Err(self.boot_failure(info, &run.run_dir)));
        }
        let errors = if info.keys_busy {
            // The run dir stays: its exit file tells a restarted cmld that the keys are busy.
            run.cgroup.kill_all();
            let mut errors: Vec<String> = run
                .cgroup
                .remove()
                .err()
                .map(|e| e.to_string())
                .into_iter()
                .collect();
            errors.push(KEYS_BUSY.into());
            errors
        } else {
            runtime::cleanup(&run.cgroup, &run.run_dir)
        };
        self.ctx.rt.release_devices(&self.uuid.to_string());
        if errors.is_empty() {
            let _ = self.set_state(to);
            self.apply_pending();
            Ok(())
        } else {
            let msg = errors.join("; ");
            warn!(container = %self.uuid, error = %msg, "cleanup failed");
            let _ = self.set_state(State::Zombie);
            Err(msg)
        }
    }

    /// Finds a container that survived a daemon restart (its run dir names a live init) and
    /// adopts it as RUNNING; leftovers of a dead one are cleaned up.
    pub(super) fn adopt(&mut self, ctx: &mut Context<Self>) {
        let run_dir = self.ctx.rt.run_dir.join(self.uuid.to_string());
        let cgroup = ContainerCgroup::open(
            &self.ctx.rt.layout,
            &self.ctx.rt.cgroup_parent,
            &self.uuid.to_string(),
        );
        let Ok(bytes) = std::fs::read(run_dir.join("state")) else {
            // No init was recorded: a start that cmld did not finish before it died (the monitor
            // writes the state once the init is in the cgroup). What that start created would make
            // the next one fail ("cgroup ... already exists"): remove it.
            if runtime::run_dir_in_use(&run_dir) || cgroup.dirs().iter().any(|d| d.exists()) {
                info!(container = %self.uuid, "cleaning up after a start interrupted by a crash");
                remove_interrupted_start(&cgroup, &run_dir);
            }
            return;
        };
        let Ok(state) = serde_json::from_slice::<RunState>(&bytes) else {
            let _ = runtime::cleanup(&cgroup, &run_dir);
            return;
        };
        let init = match PidFd::open(state.init_pid) {
            // The pid must still be in the container's cgroup: a reused pid is not ours.
            Ok(p) if !p.has_exited() && cgroup.pids().contains(&state.init_pid) => Arc::new(p),
            _ if read_exit_file(&run_dir).is_some_and(|i| i.keys_busy) => {
                // It ended, but files of its encrypted volume are still open somewhere.
                warn!(container = %self.uuid, "{KEYS_BUSY}");
                cgroup.kill_all();
                let _ = cgroup.remove();
                let _ = self.set_state(State::Zombie);
                let addr = ctx.address();
                actix_rt::spawn(async move {
                    wait_keys_removed(None, &run_dir).await;
                    addr.do_send(KeysRemoved { run_dir });
                });
                return;
            }
            _ if read_exit_file(&run_dir).is_none() && is_monitor(state.monitor_pid) => {
                // Its init has just ended and its monitor is still taking it down (console,
                // network, volume keys): its exit file tells how that went. Cleaning up now would
                // race with it (and leave the exit file it writes next to the console log). ZOMBIE
                // (no start) until then.
                let _ = self.set_state(State::Zombie);
                let (addr, monitor) = (ctx.address(), state.monitor_pid);
                actix_rt::spawn(async move {
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while read_exit_file(&run_dir).is_none()
                        && is_monitor(monitor)
                        && Instant::now() < deadline
                    {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    addr.do_send(Adopt);
                });
                return;
            }
            _ => {
                info!(container = %self.uuid, "cleaning up after a container that ended while cmld was down");
                let _ = runtime::cleanup(&cgroup, &run_dir);
                if self.state == State::Zombie {
                    let _ = self.set_state(State::Stopped);
                }
                return;
            }
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let started = Instant::now() - Duration::from_secs(now.saturating_sub(state.started));
        self.reclaim(&run_dir);
        // Its true state: a container frozen before the crash is FROZEN (a freeze that was still
        // in progress is finished).
        let frozen = match cgroup.freezer_state() {
            Ok(FreezerState::Frozen) => true,
            Ok(FreezerState::Freezing) => cgroup.freeze().is_ok(),
            _ => false,
        };
        let stop_signal = {
            let cat = read(&self.ctx.catalog);
            crate::container::validate_against_catalog(&self.config.config, &cat, self.config.signed())
                .map_or(Signal::SIGTERM as i32, |os| {
                    parse_signal(os.config.stop_signal.as_deref())
                })
        };
        let exited = self.spawn_watcher(ctx, None, init.clone(), run_dir.clone());
        let board_cgroup = Arc::new(cgroup.clone());
        self.run = Some(Run {
            init,
            cgroup,
            run_dir,
            started,
            exited,
            stop_signal,
            setup: false,
            boot: None,
        });
        let to = if frozen { State::Frozen } else { State::Running };
        self.state = to;
        let (pid, st) = (state.init_pid, started);
        self.ctx.board.update(&self.uuid, |e| {
            e.state = to;
            e.pid = pid;
            e.started = Some(st);
            e.cgroup = Some(board_cgroup);
        });
        info!(container = %self.uuid, pid, state = %to, "adopted a running container");
    }
}

/// Whether `pid` is a container monitor (its process name; a pid may have been reused).
fn is_monitor(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == "cml-monitor")
}

/// Removes the cgroup and run directory of a start that a crash interrupted. Its monitor outlives
/// cmld and may still be at work, putting the init into the cgroup at any moment (a single
/// kill-then-remove can miss it, and the init then runs unknown to cmld): kill and remove in rounds
/// until the cgroup is gone. Once it is, the monitor cannot attach the init and gives the start up.
fn remove_interrupted_start(cgroup: &ContainerCgroup, run_dir: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let errors = runtime::cleanup(cgroup, run_dir);
        if errors.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            warn!(errors = %errors.join("; "), "cleanup after an interrupted start failed");
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl ContainerActor {
    /// Claims again what an adopted container holds: its `assign_dev` devices and the physical
    /// interfaces its run directory lists. A conflict (another container took one meanwhile,
    /// which the claims of the crashed daemon would have prevented) is logged.
    fn reclaim(&self, run_dir: &std::path::Path) {
        let (uuid, name) = (self.uuid.to_string(), self.config.config.name.clone());
        let rules: Vec<_> = self
            .config
            .config
            .assign_dev
            .iter()
            .filter_map(|r| r.parse().ok())
            .collect();
        if let Err(e) = self.ctx.rt.claim_devices(&uuid, &name, &rules) {
            warn!(container = %uuid, error = %e, "adopted container's devices");
        }
        for p in crate::launcher::network::read_pnets(run_dir) {
            let claim = crate::container::network::IfaceClaim {
                uuid: uuid.clone(),
                container: name.clone(),
                name: p.name.clone(),
            };
            if let Err(e) = self.ctx.rt.net.claim(&p.mac, claim) {
                warn!(container = %uuid, error = %e, "adopted container's interfaces");
            }
        }
    }
}

/// The init ended (from the watcher).
#[derive(Message)]
#[rtype(result = "()")]
pub struct InitExited(pub ExitInfo);

impl Handler<InitExited> for ContainerActor {
    type Result = ();
    fn handle(&mut self, InitExited(info): InitExited, ctx: &mut Context<Self>) {
        if self.run.is_none() || self.state == State::Shutdown {
            return; // a stop in progress finishes the run itself
        }
        // reboot(2) inside a pid namespace kills its init with SIGHUP (SPEC §4.1).
        let reboot = info.signal == Some(Signal::SIGHUP as i32);
        if reboot {
            if self.finish_run(info, State::Rebooting).is_ok() {
                info!(container = %self.uuid, "guest rebooted; starting it again");
                self.schedule_restart(ctx, Duration::ZERO);
            }
            return;
        }
        if self.finish_run(info, State::Stopped).is_err() {
            return;
        }
        let cfg = &self.config.config;
        // A guest that powered itself off (reboot(2) with POWER_OFF or HALT kills its init with
        // SIGINT) ended as asked: that is no failure.
        let powered_off = info.signal == Some(Signal::SIGINT as i32);
        let restart = match cfg.restart_policy() {
            RestartPolicy::No => false,
            RestartPolicy::OnFailure => info.code != Some(0) && !powered_off,
            RestartPolicy::Always => true,
        };
        if !restart {
            return;
        }
        if self.restarts >= cfg.restart_max() {
            warn!(container = %self.uuid, restarts = self.restarts, "restart limit reached; leaving it STOPPED");
            return;
        }
        self.restarts += 1;
        let delay = backoff(self.restarts);
        let count = self.restarts;
        self.ctx.board.update(&self.uuid, |e| e.restart_count = count);
        info!(container = %self.uuid, attempt = count, delay_ms = delay.as_millis() as u64, "restarting per restart_policy");
        self.schedule_restart(ctx, delay);
    }
}

/// The monitor has removed the volume keys that were busy when the init ended.
#[derive(Message)]
#[rtype(result = "()")]
struct KeysRemoved {
    run_dir: PathBuf,
}

impl Handler<KeysRemoved> for ContainerActor {
    type Result = ();
    fn handle(&mut self, KeysRemoved { run_dir }: KeysRemoved, _: &mut Context<Self>) {
        if let Err(e) = runtime::clear_run_dir(&run_dir) {
            warn!(container = %self.uuid, error = %e, "cannot remove the run directory");
            return;
        }
        info!(container = %self.uuid, "the busy volume key is removed now");
        if self.state == State::Zombie && self.run.is_none() {
            let _ = self.set_state(State::Stopped);
            self.apply_pending();
        }
    }
}

/// Exponential back-off between supervisor restarts: 100 ms, 200 ms, 400 ms, … at most 60 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.saturating_sub(1).min(10)))
        .min(Duration::from_secs(60))
}

impl ContainerActor {
    fn schedule_restart(&mut self, ctx: &mut Context<Self>, delay: Duration) {
        let epoch = self.epoch;
        ctx.run_later(delay, move |act, ctx| {
            if act.epoch == epoch {
                ctx.address().do_send(Restart);
            }
        });
    }
}

/// A supervisor restart (after a guest reboot or per restart policy).
#[derive(Message)]
#[rtype(result = "()")]
struct Restart;

impl Handler<Restart> for ContainerActor {
    type Result = ();
    fn handle(&mut self, _: Restart, ctx: &mut Context<Self>) {
        let addr = ctx.address();
        let uuid = self.uuid;
        actix_rt::spawn(async move {
            if let Ok(Err(e)) = addr
                .send(Start {
                    by_user: false,
                    setup: false,
                    key: None,
                })
                .await
            {
                warn!(container = %uuid, error = %e, "supervisor restart failed");
            }
        });
    }
}

/// Stop the container: stop signal, wait up to the timeout, SIGKILL, wait, clean up.
#[derive(Message)]
#[rtype(result = "Result<(), StopFailure>")]
pub struct Stop;

impl Handler<Stop> for ContainerActor {
    type Result = AtomicResponse<Self, Result<(), StopFailure>>;

    fn handle(&mut self, _: Stop, _: &mut Context<Self>) -> Self::Result {
        // A stop also cancels a scheduled supervisor restart.
        self.epoch += 1;
        let running = matches!(
            self.state,
            State::Running | State::Booting | State::Setup | State::Frozen | State::Freezing
        );
        let Some(run) = self.run.as_ref().filter(|_| running) else {
            return AtomicResponse::new(Box::pin(actix::fut::ready(Err(StopFailure::NotRunning(
                self.state,
            )))));
        };
        if matches!(self.state, State::Frozen | State::Freezing) {
            let _ = run.cgroup.thaw();
        }
        let (init, mut exited, sig) = (run.init.clone(), run.exited.clone(), run.stop_signal);
        let timeout = self.ctx.rt.stop_timeout;
        let _ = self.set_state(State::Shutdown);
        let uuid = self.uuid;
        let t0 = Instant::now();
        let work = async move {
            // The signal goes again after 1 ms, 2, 4, … (at most every 500 ms) until the timeout: a
            // guest init that had not yet installed its handler when the first one came (a pid
            // namespace's init ignores signals it has no handler for) still stops gracefully, and
            // soon.
            let graceful = tokio::time::timeout(timeout, async {
                let mut gap = Duration::from_millis(1);
                loop {
                    let _ = init.signal(sig);
                    match tokio::time::timeout(gap, exited.wait_for(Option::is_some)).await {
                        Ok(r) => break r.map(|v| *v),
                        Err(_) => gap = (gap * 2).min(Duration::from_millis(500)),
                    }
                }
            })
            .await;
            if let Ok(Ok(info)) = graceful {
                return info.unwrap_or_default();
            }
            {
                info!(container = %uuid, "stop timeout: SIGKILL");
                let _ = init.signal(Signal::SIGKILL as i32);
                let killed =
                    tokio::time::timeout(Duration::from_secs(10), exited.wait_for(Option::is_some)).await;
                killed
                    .ok()
                    .and_then(|r| r.ok().map(|v| *v))
                    .flatten()
                    .unwrap_or_default()
            }
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(move |info, act, _| {
            let exited = t0.elapsed();
            act.finish_run(info, State::Stopped)
                .map_err(StopFailure::Cleanup)?;
            tracing::debug!(
                container = %act.uuid,
                exited_us = exited.as_micros() as u64,
                stopped_us = t0.elapsed().as_micros() as u64,
                "stop timings"
            );
            info!(container = %act.uuid, "stopped");
            Ok(())
        })))
    }
}

/// Freeze (`true`) or thaw (`false`) the container; replies once the kernel reports it.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Freeze(pub bool);

impl Handler<Freeze> for ContainerActor {
    type Result = AtomicResponse<Self, Result<(), String>>;

    fn handle(&mut self, Freeze(freeze): Freeze, _: &mut Context<Self>) -> Self::Result {
        let ok_state = matches!(
            self.state,
            State::Running | State::Setup | State::Freezing | State::Frozen
        );
        let Some(run) = self.run.as_ref().filter(|_| ok_state) else {
            let msg = format!("container is {}", self.state);
            return AtomicResponse::new(Box::pin(actix::fut::ready(Err(msg))));
        };
        let cg = run.cgroup.clone();
        // Thawing returns to SETUP for a container started in setup mode.
        let thawed = if run.setup { State::Setup } else { State::Running };
        if freeze && matches!(self.state, State::Running | State::Setup) {
            let _ = self.set_state(State::Freezing);
        }
        let work = async move {
            let r = if freeze { cg.freeze() } else { cg.thaw() };
            r.map_err(|e| e.to_string())?;
            let want = if freeze {
                FreezerState::Frozen
            } else {
                FreezerState::Thawed
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match cg.freezer_state() {
                    Ok(s) if s == want => return Ok(()),
                    Ok(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(5)).await,
                    Ok(s) => {
                        if freeze {
                            let _ = cg.thaw();
                        }
                        return Err(format!(
                            "the cgroup did not reach {want:?} within 5 s (it is {s:?})"
                        ));
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(move |res, act, _| {
            let target = match (&res, freeze) {
                (Ok(()), true) => State::Frozen,
                _ => thawed,
            };
            if act.run.is_some() {
                let _ = act.set_state(target);
            }
            res
        })))
    }
}

/// What `run` needs to enter the container.
#[derive(Message)]
#[rtype(result = "Result<ExecPlan, String>")]
pub struct ExecInfo {
    /// argv.
    pub argv: Vec<String>,
    /// With a terminal.
    pub pty: bool,
}

impl Handler<ExecInfo> for ContainerActor {
    type Result = Result<ExecPlan, String>;
    fn handle(&mut self, msg: ExecInfo, _: &mut Context<Self>) -> Self::Result {
        let Some(run) = self
            .run
            .as_ref()
            .filter(|_| matches!(self.state, State::Running | State::Booting | State::Setup))
        else {
            return Err(format!("container is {}, not running", self.state));
        };
        let cfg = &self.config.config;
        let mut env = vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
            "HOME=/".to_owned(),
        ];
        if msg.pty {
            env.push("TERM=xterm".into());
        }
        env.extend(cfg.init_env.iter().cloned());
        Ok(ExecPlan {
            init_pid: run.init.pid(),
            cgroup_procs: run
                .cgroup
                .v2_dir()
                .map(|d| d.join("cgroup.procs"))
                .into_iter()
                .collect(),
            cgroup_tasks: run.cgroup.v1_tasks_files(),
            drop_caps: runtime::dropped_caps(cfg.userns() || run.setup),
            userns: cfg.userns(),
            argv: msg.argv,
            env,
            pty: msg.pty,
        })
    }
}

/// Adopt a container that survived a daemon restart (sent once after the actor is created).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Adopt;

impl Handler<Adopt> for ContainerActor {
    type Result = ();
    fn handle(&mut self, _: Adopt, ctx: &mut Context<Self>) {
        self.adopt(ctx);
    }
}

/// Adds a device rule to a running container's device cgroup (`dev_access`, `allow_audio`,
/// `deny_audio`). With `sound_nodes`, also creates (allow) or removes (deny) the host's
/// `/dev/snd/*` nodes inside the container, where the host has any.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct DeviceAccess {
    /// The rule.
    pub rule: crate::sys::cgroup::DeviceRule,
    /// Mirror the host's sound device nodes.
    pub sound_nodes: bool,
}

/// The host's ALSA device nodes: (name, major, minor) of every character device in `/dev/snd`.
fn host_sound_nodes() -> Vec<(String, u32, u32)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(entries) = std::fs::read_dir("/dev/snd") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            meta.file_type().is_char_device().then(|| {
                let rdev = meta.rdev();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    nix::sys::stat::major(rdev) as u32,
                    nix::sys::stat::minor(rdev) as u32,
                )
            })
        })
        .collect()
}

impl Handler<DeviceAccess> for ContainerActor {
    type Result = actix::ResponseFuture<Result<(), String>>;
    fn handle(&mut self, msg: DeviceAccess, _: &mut Context<Self>) -> Self::Result {
        let Some(run) = self.run.as_ref() else {
            let state = self.state;
            return Box::pin(async move {
                Err(format!(
                    "container is {state}: device rules apply to a running container"
                ))
            });
        };
        let applied = runtime::load_device_rules(&run.run_dir).and_then(|mut rules| {
            run.cgroup
                .add_device_rule(&rules, &msg.rule)
                .map_err(|e| e.to_string())?;
            rules.push(msg.rule.clone());
            runtime::save_device_rules(&run.run_dir, &rules)
                .map_err(|e| format!("record the device rules: {e}"))
        });
        if let Err(e) = applied {
            return Box::pin(async move { Err(e) });
        }
        info!(container = %self.uuid, rule = %msg.rule, "device rule applied");
        let nodes = if msg.sound_nodes {
            host_sound_nodes()
        } else {
            Vec::new()
        };
        if nodes.is_empty() {
            return Box::pin(async { Ok(()) });
        }
        let plan = crate::launcher::plan::DevNodesPlan {
            init_pid: run.init.pid(),
            dir: "/dev/snd".into(),
            nodes,
            create: msg.rule.allow,
        };
        let rt = self.ctx.rt.clone();
        Box::pin(async move {
            actix_rt::task::spawn_blocking(move || {
                let (ours, theirs) = StdUnixStream::pair().map_err(|e| e.to_string())?;
                rt.launcher
                    .request(&Request::DevNodes(plan), &[theirs.as_raw_fd()])
                    .map_err(|e| e.to_string())?;
                drop(theirs);
                let _ = ours.set_read_timeout(Some(Duration::from_secs(10)));
                let mut reply = String::new();
                std::io::Read::read_to_string(&mut &ours, &mut reply).map_err(|e| e.to_string())?;
                if reply == "ok" {
                    Ok(())
                } else {
                    Err(format!("/dev/snd nodes: {reply}"))
                }
            })
            .await
            .map_err(|e| e.to_string())?
        })
    }
}

/// Starts the container at daemon start if its config allows it and it needs no PIN.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Autostart;

impl Handler<Autostart> for ContainerActor {
    type Result = ();
    fn handle(&mut self, _: Autostart, ctx: &mut Context<Self>) {
        let cfg = &self.config.config;
        if !cfg.allow_autostart() || self.state != State::Stopped {
            return;
        }
        if cfg.token_type() != crate::protocol::pb::ContainerTokenType::None {
            info!(container = %self.uuid, name = %cfg.name, "not autostarted: its storage needs a PIN");
            return;
        }
        let addr = ctx.address();
        let uuid = self.uuid;
        actix_rt::spawn(async move {
            match addr
                .send(Start {
                    by_user: true,
                    setup: false,
                    key: None,
                })
                .await
            {
                Ok(Ok(_)) => info!(container = %uuid, "autostarted"),
                Ok(Err(e)) => warn!(container = %uuid, error = %e, "autostart failed"),
                Err(_) => {}
            }
        });
    }
}
