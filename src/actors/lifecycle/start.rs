//! Starting a container: the `Start` message as one `AtomicResponse` — resolve the GuestOS,
//! prepare on the blocking pool, the launcher forks the monitor, its first event says `Started` or
//! `Failed` — and, for a notify guest, waiting for `READY=1` (see the parent module).

#[allow(clippy::wildcard_imports)]
use super::*;

/// Start the container: by a user (resets the restart counter), or by the supervisor.
#[derive(Message)]
#[rtype(result = "Result<BootWait, StartFailure>")]
pub struct Start {
    /// A user asked (not the supervisor).
    pub by_user: bool,
    /// Setup mode (`start --setup`).
    pub setup: bool,
    /// The container's volume key, unlocked with the user's PIN (SOFT-token containers); a
    /// supervisor restart reuses the one kept from the last user start.
    pub key: Option<Arc<crate::softtoken::MasterKey>>,
}

struct Launched {
    prepared: Prepared,
    init: Arc<PidFd>,
    channel: tokio::net::UnixStream,
    notify: Option<UnixDatagram>,
}

/// Undoes a prepared start unless committed (STYLE item 7): [`StartGuard::abort`] removes the
/// cgroup and run directory and adds any cleanup error to the start error; dropping the guard
/// uncommitted (a cancelled start) cleans up too.
struct StartGuard(Option<Prepared>, Arc<runtime::Runtime>);

impl StartGuard {
    fn prepared(&self) -> &Prepared {
        self.0
            .as_ref()
            .expect("a guard holds its preparation until commit or abort")
    }

    fn commit(mut self) -> Prepared {
        self.0
            .take()
            .expect("a guard holds its preparation until commit or abort")
    }

    fn abort(mut self, e: StartError) -> StartError {
        let errors = self.0.take().map(|p| self.release(p)).unwrap_or_default();
        if errors.is_empty() {
            e
        } else {
            StartError {
                reason: format!("{}; cleanup failed too: {}", e.reason, errors.join("; ")),
                ..e
            }
        }
    }
}

impl StartGuard {
    fn release(&self, p: Prepared) -> Vec<String> {
        self.1.release_devices(&p.plan.uuid);
        p.cleanup()
    }
}

impl Drop for StartGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            for e in self.release(p) {
                warn!(error = %e, "cleanup of a cancelled start failed");
            }
        }
    }
}

async fn launch(
    rt: Arc<runtime::Runtime>,
    data: crate::store::DataDir,
    uuid: String,
    cfg: crate::protocol::pb::ContainerConfig,
    os: crate::guestos::GuestOs,
    setup: bool,
    key: Option<Arc<crate::softtoken::MasterKey>>,
) -> Result<Launched, StartError> {
    let join = |e: tokio::task::JoinError| StartError::at("internal", e);
    let (t0, uuid_for_log) = (Instant::now(), uuid.clone());
    // Preparing and asking the launcher for the monitor: one trip to the blocking pool.
    let (guard, notify, ours, prepared_at) = actix_rt::task::spawn_blocking(move || {
        let guard = StartGuard(
            Some(runtime::prepare(
                &rt,
                &data,
                &uuid,
                &cfg,
                &os,
                setup,
                key.as_deref(),
            )?),
            rt.clone(),
        );
        let prepared_at = t0.elapsed();
        let notify = match &guard.prepared().plan.notify_socket {
            Some(path) => match UnixDatagram::bind(path) {
                Ok(s) => Some(s),
                Err(e) => return Err(guard.abort(StartError::at("create the notify socket", e))),
            },
            None => None,
        };
        let (ours, theirs) = match StdUnixStream::pair() {
            Ok(p) => p,
            Err(e) => return Err(guard.abort(StartError::at("create the monitor channel", e))),
        };
        let req = Request::Start(Box::new(guard.prepared().plan.clone()));
        if let Err(e) = rt.launcher.request(&req, &[theirs.as_raw_fd()]) {
            return Err(guard.abort(StartError::at("launch the monitor", e)));
        }
        Ok((guard, notify, ours, prepared_at))
    })
    .await
    .map_err(join)??;
    let monitor_at = t0.elapsed();
    let _ = ours.set_nonblocking(true);
    let channel = match tokio::net::UnixStream::from_std(ours) {
        Ok(c) => c,
        Err(e) => return Err(guard.abort(StartError::at("monitor channel", e))),
    };
    // The first event decides; a monitor that dies before it counts as a failure.
    let mut reader = BufReader::new(channel);
    let mut line = String::new();
    let first = tokio::time::timeout(Duration::from_secs(60), reader.read_line(&mut line)).await;
    let event = match first {
        Ok(Ok(n)) if n > 0 => serde_json::from_str::<MonitorEvent>(&line).ok(),
        _ => None,
    };
    match event {
        Some(MonitorEvent::Started {
            init_pid,
            timings,
            warnings,
        }) => match PidFd::open(init_pid) {
            Ok(p) => Ok({
                for w in &warnings {
                    warn!(container = %uuid_for_log, "{w}");
                }
                tracing::debug!(
                    container = %uuid_for_log,
                    prepare_us = prepared_at.as_micros() as u64,
                    monitor_started_us = monitor_at.as_micros() as u64,
                    started_us = t0.elapsed().as_micros() as u64,
                    monitor = ?timings,
                    "start timings"
                );
                Launched {
                    // Tell the monitor it may reap the init from now on (it waits for this byte).
                    channel: {
                        let mut ch = reader.into_inner();
                        let _ = tokio::io::AsyncWriteExt::write_all(&mut ch, b"a").await;
                        ch
                    },
                    prepared: guard.commit(),
                    init: Arc::new(p),
                    notify,
                }
            }),
            Err(e) => Err(guard.abort(StartError::at("open the init's pidfd", e))),
        },
        Some(MonitorEvent::Failed { step, error }) => Err(guard.abort(StartError { step, reason: error })),
        _ => Err(guard.abort(StartError::at("monitor", "the monitor ended without reporting"))),
    }
}

impl Handler<Start> for ContainerActor {
    type Result = AtomicResponse<Self, Result<BootWait, StartFailure>>;

    fn handle(&mut self, msg: Start, ctx: &mut Context<Self>) -> Self::Result {
        let startable = self.state == State::Stopped || (!msg.by_user && self.state == State::Rebooting);
        if !startable {
            return AtomicResponse::new(Box::pin(actix::fut::ready(Err(StartFailure::NotStopped(
                self.state,
            )))));
        }
        let cfg = self.config.config.clone();
        let os = {
            let cat = read(&self.ctx.catalog);
            crate::container::validate_against_catalog(&cfg, &cat, self.config.signed()).cloned()
        };
        let os = match os {
            Ok(os) => os,
            Err(e) => {
                return AtomicResponse::new(Box::pin(actix::fut::ready(Err(StartError::at(
                    "resolve GuestOS",
                    e,
                )
                .into()))));
            }
        };
        let stop_signal = parse_signal(os.config.stop_signal.as_deref());
        if msg.by_user {
            self.restarts = 0;
            self.epoch += 1;
            self.ctx.board.update(&self.uuid, |e| e.restart_count = 0);
        }
        let _ = self.set_state(State::Starting);
        let (setup, by_user) = (msg.setup, msg.by_user);
        let key = if msg.by_user {
            msg.key.clone()
        } else {
            self.key.clone()
        };
        if msg.by_user {
            // Kept (in memory only) so the supervisor can restart without asking for the PIN.
            self.key = msg.key.clone();
        }
        let fut = launch(
            self.ctx.rt.clone(),
            self.ctx.data.clone(),
            self.uuid.to_string(),
            cfg,
            os,
            setup,
            key,
        );
        let _ = ctx;
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(
            move |res, act, ctx| match res {
                Err(e) => {
                    warn!(container = %act.uuid, step = %e.step, reason = %e.reason, "start failed");
                    let _ = act.set_state(State::Stopped);
                    Err(e.into())
                }
                Ok(l) => {
                    let run_dir = l.prepared.plan.run_dir.clone();
                    let exited = act.spawn_watcher(ctx, Some(l.channel), l.init.clone(), run_dir.clone());
                    act.run = Some(Run {
                        init: l.init,
                        cgroup: l.prepared.cgroup,
                        run_dir,
                        started: Instant::now(),
                        exited,
                        stop_signal,
                        setup,
                        boot: None,
                    });
                    if setup {
                        let _ = act.set_state(State::Setup);
                        info!(container = %act.uuid, "started in setup mode");
                        return Ok(None);
                    }
                    let _ = act.set_state(State::Booting);
                    let mut boot = None;
                    match l.notify {
                        None => {
                            let _ = act.set_state(State::Running);
                        }
                        Some(sock) => {
                            let addr = ctx.address();
                            actix_rt::spawn(async move {
                                if wait_ready(sock).await {
                                    addr.do_send(Ready);
                                }
                            });
                            // A user's start replies when the guest is RUNNING, or failed on the way.
                            if by_user && let Some(run) = act.run.as_mut() {
                                let (tx, rx) = oneshot::channel();
                                run.boot = Some(tx);
                                boot = Some(rx);
                            }
                        }
                    }
                    info!(container = %act.uuid, pid = act.run.as_ref().map(|r| r.init.pid()), "started");
                    Ok(boot)
                }
            },
        )))
    }
}

/// Waits for `READY=1` on the notify socket.
async fn wait_ready(sock: UnixDatagram) -> bool {
    if sock.set_nonblocking(true).is_err() {
        return false;
    }
    let Ok(sock) = tokio::net::UnixDatagram::from_std(sock) else {
        return false;
    };
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.recv(&mut buf).await {
        if String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l.trim() == "READY=1")
        {
            return true;
        }
    }
    false
}

/// The guest reported readiness.
#[derive(Message)]
#[rtype(result = "()")]
struct Ready;

impl Handler<Ready> for ContainerActor {
    type Result = ();
    fn handle(&mut self, _: Ready, _: &mut Context<Self>) {
        if self.state == State::Booting {
            let _ = self.set_state(State::Running);
            if let Some(boot) = self.run.as_mut().and_then(|r| r.boot.take()) {
                let _ = boot.send(Ok(()));
            }
        }
    }
}

impl ContainerActor {
    /// Why a notify guest never reported ready: how its init ended (or that it was stopped), and
    /// the last lines of its console.
    pub(super) fn boot_failure(&self, info: ExitInfo, run_dir: &std::path::Path) -> String {
        let how = match (self.state, info.code, info.signal) {
            (State::Shutdown, _, _) => "the container was stopped".to_owned(),
            (_, Some(code), _) => format!("its init exited with status {code}"),
            (_, None, Some(sig)) => format!("its init was killed by signal {sig}"),
            _ => "its init ended".to_owned(),
        };
        let console = crate::launcher::console::last_lines(run_dir, BOOT_FAILURE_LINES).map_or_else(
            || "; its console is empty".to_owned(),
            |lines| format!("; its console ended with:\n{lines}"),
        );
        format!("{how} before the guest reported ready{console}")
    }
}

/// Console lines quoted in the reply to a start whose guest died during boot.
const BOOT_FAILURE_LINES: usize = 10;
