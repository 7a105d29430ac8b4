//! The console socket's server: the pump's `poll(2)` loop over the pty master, the socket and its
//! clients (see the parent module).

#[allow(clippy::wildcard_imports)]
use super::*;

/// What a client of the console socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Connected, first frame not seen yet.
    Pending,
    /// The one interactive user.
    Attached,
    /// Follows the log.
    Follower,
}

#[derive(Debug)]
struct Client {
    sock: UnixStream,
    role: Role,
    frames: wire::Decoder,
    out: Vec<u8>,
    /// Close once `out` is sent.
    closing: bool,
    dead: bool,
}

impl Client {
    fn queue(&mut self, frame: &[u8]) {
        if self.out.len() + frame.len() > CLIENT_BUFFER {
            self.dead = true; // it does not read: drop it rather than hold output for it
        } else {
            self.out.extend_from_slice(frame);
        }
    }

    fn flush(&mut self) {
        while !self.out.is_empty() {
            match self.sock.write(&self.out) {
                Ok(0) => {
                    self.dead = true;
                    return;
                }
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
        if self.closing {
            self.dead = true;
        }
    }
}

/// The pump thread's state.
pub(super) struct Server {
    master: OwnedFd,
    /// False once the master reported its end (`EIO`: no slave open any more).
    master_open: bool,
    /// `None` if the socket could not be bound: no attach, no follower, the log still works.
    listener: Option<UnixListener>,
    /// Readable when the run is over (`None` if the pipe could not be made: then the pump ends
    /// only with the process).
    stop: Option<OwnedFd>,
    log: LogRing,
    clients: Vec<Client>,
    /// Input for the guest not yet taken by the terminal.
    to_guest: Vec<u8>,
}

impl Server {
    /// A server for `master`, accepting on `listener` (if bound), ended by `stop` becoming readable.
    pub(super) fn new(
        master: OwnedFd,
        listener: Option<UnixListener>,
        stop: Option<OwnedFd>,
        log: LogRing,
    ) -> Server {
        Server {
            master,
            master_open: true,
            listener,
            stop,
            log,
            clients: Vec::new(),
            to_guest: Vec::new(),
        }
    }

    /// The `poll(2)` loop, until the run is over and the master is drained.
    pub(super) fn run(mut self) {
        let mut draining: Option<Instant> = None;
        loop {
            if let Some(deadline) = draining
                && (!self.master_open || Instant::now() >= deadline)
            {
                break;
            }
            let timeout = match draining {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    PollTimeout::from(left.as_millis().min(1000) as u16)
                }
                None => PollTimeout::NONE,
            };
            let (master_ev, listen_ev, stop_ev, client_ev) = match self.wait(timeout, draining.is_some()) {
                Some(ev) => ev,
                None => continue,
            };
            if master_ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                self.read_master();
            }
            if master_ev.contains(PollFlags::POLLOUT) {
                self.write_master();
            }
            if listen_ev.contains(PollFlags::POLLIN) {
                self.accept();
            }
            for (i, ev) in client_ev.into_iter().enumerate() {
                if ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                    self.read_client(i);
                }
                if ev.contains(PollFlags::POLLOUT) {
                    self.clients[i].flush();
                }
            }
            self.clients.retain(|c| !c.dead);
            if stop_ev.contains(PollFlags::POLLIN) && draining.is_none() {
                draining = Some(Instant::now() + DRAIN);
            }
        }
        // The last output goes to whoever is still connected, briefly; then every connection
        // closes, which tells cmld the container is gone.
        let until = Instant::now() + FLUSH;
        while Instant::now() < until && self.clients.iter().any(|c| !c.out.is_empty() && !c.dead) {
            let mut fds: Vec<PollFd<'_>> = self
                .clients
                .iter()
                .map(|c| PollFd::new(c.sock.as_fd(), PollFlags::POLLOUT))
                .collect();
            let _ = poll(&mut fds, PollTimeout::from(50u16));
            drop(fds);
            for c in &mut self.clients {
                c.flush();
            }
        }
    }

    /// One `poll(2)`: the events of the master, the listener, the stop pipe and each client, or
    /// `None` if it was interrupted.
    #[allow(clippy::type_complexity)]
    fn wait(
        &self,
        timeout: PollTimeout,
        draining: bool,
    ) -> Option<(PollFlags, PollFlags, PollFlags, Vec<PollFlags>)> {
        let none = PollFlags::empty();
        let mut master_flags = none;
        if self.master_open {
            master_flags |= PollFlags::POLLIN;
            if !self.to_guest.is_empty() {
                master_flags |= PollFlags::POLLOUT;
            }
        }
        let mut fds = vec![PollFd::new(self.master.as_fd(), master_flags)];
        let listen_at = self.listener.as_ref().map(|l| {
            fds.push(PollFd::new(
                l.as_fd(),
                if draining { none } else { PollFlags::POLLIN },
            ));
            fds.len() - 1
        });
        let stop_at = self.stop.as_ref().map(|s| {
            fds.push(PollFd::new(
                s.as_fd(),
                if draining { none } else { PollFlags::POLLIN },
            ));
            fds.len() - 1
        });
        let first_client = fds.len();
        for c in &self.clients {
            let mut f = none;
            let reads = !c.closing && (c.role != Role::Attached || self.to_guest.len() < INPUT_BUFFER);
            if reads {
                f |= PollFlags::POLLIN;
            }
            if !c.out.is_empty() {
                f |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(c.sock.as_fd(), f));
        }
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(_) => return None,
        }
        let ev = |fd: &PollFd<'_>| fd.revents().unwrap_or(none);
        Some((
            ev(&fds[0]),
            listen_at.map_or(none, |i| ev(&fds[i])),
            stop_at.map_or(none, |i| ev(&fds[i])),
            fds[first_client..].iter().map(ev).collect(),
        ))
    }

    fn read_master(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match nix::unistd::read(&self.master, &mut buf) {
                Ok(0) | Err(nix::errno::Errno::EIO) => {
                    // No slave is open any more: everything written has been read.
                    self.master_open = false;
                    return;
                }
                Ok(n) => self.output(&buf[..n]),
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return, // EAGAIN: all read for now
            }
        }
    }

    fn output(&mut self, data: &[u8]) {
        self.log.write(data);
        let frame = wire::encode(wire::DATA, data);
        for c in &mut self.clients {
            if matches!(c.role, Role::Attached | Role::Follower) && !c.closing {
                c.queue(&frame);
            }
        }
    }

    fn write_master(&mut self) {
        while !self.to_guest.is_empty() {
            match nix::unistd::write(&self.master, &self.to_guest) {
                Ok(n) => {
                    self.to_guest.drain(..n);
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(_) => {
                    self.to_guest.clear();
                    return;
                }
            }
        }
    }

    fn accept(&mut self) {
        let Some(listener) = self.listener.as_ref() else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((sock, _)) => {
                    if self.clients.len() >= MAX_CLIENTS || sock.set_nonblocking(true).is_err() {
                        continue; // dropped: closed at once
                    }
                    self.clients.push(Client {
                        sock,
                        role: Role::Pending,
                        frames: wire::Decoder::default(),
                        out: Vec::new(),
                        closing: false,
                        dead: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    fn read_client(&mut self, i: usize) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.clients[i].sock.read(&mut buf) {
                Ok(0) => {
                    self.clients[i].dead = true;
                    break;
                }
                Ok(n) => self.clients[i].frames.push(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.clients[i].dead = true;
                    break;
                }
            }
        }
        loop {
            let frame = match self.clients[i].frames.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(_) => {
                    self.clients[i].dead = true;
                    return;
                }
            };
            self.frame(i, frame);
        }
    }

    fn frame(&mut self, i: usize, (kind, payload): (u8, Vec<u8>)) {
        match (self.clients[i].role, kind) {
            (Role::Pending, wire::ATTACH) => {
                if self.clients.iter().any(|c| c.role == Role::Attached && !c.dead) {
                    let c = &mut self.clients[i];
                    c.queue(&wire::encode(
                        wire::ERROR,
                        b"someone is attached to this console already (one user at a time)",
                    ));
                    c.closing = true;
                    return;
                }
                if let Some((rows, cols)) = wire::parse_window(&payload) {
                    let _ = pty::set_window_size(self.master.as_fd(), rows, cols);
                }
                let c = &mut self.clients[i];
                c.role = Role::Attached;
                c.queue(&wire::encode(wire::OK, b""));
                c.flush();
            }
            (Role::Pending, wire::FOLLOW) => {
                let snapshot = self.log.snapshot();
                let c = &mut self.clients[i];
                c.role = Role::Follower;
                for chunk in snapshot.chunks(64 * 1024) {
                    c.queue(&wire::encode(wire::DATA, chunk));
                }
                c.queue(&wire::encode(wire::SNAPSHOT_END, b""));
                c.flush();
            }
            (Role::Attached, wire::DATA) => self.to_guest.extend_from_slice(&payload),
            (Role::Attached, wire::WINDOW) => {
                if let Some((rows, cols)) = wire::parse_window(&payload) {
                    let _ = pty::set_window_size(self.master.as_fd(), rows, cols);
                }
            }
            // A client that does not follow the protocol is dropped.
            _ => self.clients[i].dead = true,
        }
    }
}
