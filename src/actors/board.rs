//! The status board: a snapshot of every container's status, kept current by the container actors
//! and the manager, read directly by sessions. `list` and `state` never queue behind a container
//! actor's mailbox (SPEC §4.2).

use std::{
    sync::{Arc, RwLock},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use uuid::Uuid;

use crate::{
    container::State,
    protocol::pb::{ContainerStatus, ContainerTrust, ContainerType, CryptfsMode},
    sys::cgroup::ContainerCgroup,
};

/// One container's status.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The container.
    pub uuid: Uuid,
    /// Its name.
    pub name: String,
    /// Its GuestOS name.
    pub guestos: String,
    /// Lifecycle state.
    pub state: State,
    /// Creation time (orders the list; a name resolves to the first match in this order).
    pub created: SystemTime,
    /// When the current run started.
    pub started: Option<Instant>,
    /// Wire value of the config's token type.
    pub token_type: i32,
    /// Host pid of the init, 0 if none.
    pub pid: i32,
    /// Restarts by the supervisor.
    pub restart_count: u32,
    /// A stored config waits for the next start.
    pub update_pending: bool,
    /// How the GuestOS verified.
    pub trust: ContainerTrust,
    /// Storage encryption in use.
    pub cryptfs: CryptfsMode,
    /// The config's `color`.
    pub color: u32,
    /// The cgroup of the current run, read for the live figures of a status (memory, CPU, pids).
    pub cgroup: Option<Arc<ContainerCgroup>>,
}

impl Entry {
    fn to_status(&self) -> ContainerStatus {
        let created = self.created.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let uptime = match (self.state.is_running(), self.started) {
            (true, Some(t)) => t.elapsed().as_secs(),
            _ => 0,
        };
        ContainerStatus {
            uuid: self.uuid.to_string(),
            name: self.name.clone(),
            r#type: ContainerType::Container as i32,
            state: self.state.to_wire() as i32,
            uptime,
            created,
            guestos: self.guestos.clone(),
            trust_level: self.trust as i32,
            cryptfs_mode: self.cryptfs as i32,
            token_type: Some(self.token_type),
            pid: Some(self.pid),
            restart_count: Some(self.restart_count),
            update_pending: Some(self.update_pending),
            memory_bytes: None,
            cpu_usec: None,
            pids: None,
            color: Some(self.color),
        }
    }

    /// The cgroup to read live figures from: only while the container runs.
    fn live_cgroup(&self) -> Option<Arc<ContainerCgroup>> {
        self.cgroup.clone().filter(|_| self.state.is_running())
    }
}

/// Adds the live figures of a running container's cgroup to its status.
fn fill_usage(status: &mut ContainerStatus, cgroup: Option<&ContainerCgroup>) {
    if let Some(cg) = cgroup {
        let usage = cg.usage();
        status.memory_bytes = usage.memory_bytes;
        status.cpu_usec = usage.cpu_usec;
        status.pids = usage.pids;
    }
}

/// The snapshot, in creation order. Every state change is also broadcast to event subscribers.
#[derive(Debug)]
pub struct StatusBoard {
    entries: RwLock<Vec<Entry>>,
    events: tokio::sync::broadcast::Sender<ContainerStatus>,
}

impl Default for StatusBoard {
    fn default() -> Self {
        StatusBoard {
            entries: RwLock::default(),
            events: tokio::sync::broadcast::channel(1024).0,
        }
    }
}

impl StatusBoard {
    /// A receiver of every later state change (as the container's status after the change).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<ContainerStatus> {
        self.events.subscribe()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Entry>> {
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Entry>> {
        self.entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds or replaces an entry, keeping creation order.
    pub fn insert(&self, entry: Entry) {
        let mut v = self.write();
        v.retain(|e| e.uuid != entry.uuid);
        let at = v.partition_point(|e| (e.created, e.uuid) < (entry.created, entry.uuid));
        v.insert(at, entry);
    }

    /// Removes an entry.
    pub fn remove(&self, uuid: &Uuid) {
        self.write().retain(|e| e.uuid != *uuid);
    }

    /// Changes an entry in place; false if there is none. A change of state is broadcast.
    pub fn update(&self, uuid: &Uuid, f: impl FnOnce(&mut Entry)) -> bool {
        let mut v = self.write();
        let Some(e) = v.iter_mut().find(|e| e.uuid == *uuid) else {
            return false;
        };
        let before = e.state;
        f(e);
        if e.state != before {
            // No subscriber is fine.
            let _ = self.events.send(e.to_status());
        }
        true
    }

    /// A copy of one entry.
    pub fn get(&self, uuid: &Uuid) -> Option<Entry> {
        self.read().iter().find(|e| e.uuid == *uuid).cloned()
    }

    /// Whether the container exists.
    pub fn contains(&self, uuid: &Uuid) -> bool {
        self.read().iter().any(|e| e.uuid == *uuid)
    }

    /// Names of the containers whose config uses GuestOS `name`.
    pub fn users_of_guestos(&self, name: &str) -> Vec<String> {
        self.read()
            .iter()
            .filter(|e| e.guestos == name)
            .map(|e| e.name.clone())
            .collect()
    }

    /// How many containers run (or are frozen, starting, stopping).
    pub fn running_count(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|e| e.state.is_running())
            .count()
    }

    /// Every UUID in creation order.
    pub fn uuids(&self) -> Vec<Uuid> {
        self.read().iter().map(|e| e.uuid).collect()
    }

    /// Statuses of the given containers (all of them, in creation order, when `uuids` is empty).
    /// `Err` names the first UUID that is not known.
    ///
    /// A running container's status carries its live figures, read from its cgroup after the
    /// board's lock is released (a few small cgroupfs reads each).
    pub fn statuses(&self, uuids: &[Uuid]) -> Result<Vec<ContainerStatus>, Uuid> {
        let snapshot = {
            let v = self.read();
            let pick = |e: &Entry| (e.to_status(), e.live_cgroup());
            if uuids.is_empty() {
                v.iter().map(pick).collect::<Vec<_>>()
            } else {
                uuids
                    .iter()
                    .map(|u| v.iter().find(|e| e.uuid == *u).map(pick).ok_or(*u))
                    .collect::<Result<Vec<_>, Uuid>>()?
            }
        };
        Ok(snapshot
            .into_iter()
            .map(|(mut status, cgroup)| {
                fill_usage(&mut status, cgroup.as_deref());
                status
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn entry(name: &str, secs: u64) -> Entry {
        Entry {
            uuid: Uuid::new_v4(),
            name: name.into(),
            guestos: "g".into(),
            state: State::Stopped,
            created: UNIX_EPOCH + Duration::from_secs(secs),
            started: None,
            token_type: 1,
            pid: 0,
            restart_count: 0,
            update_pending: false,
            trust: ContainerTrust::Unsigned,
            cryptfs: CryptfsMode::NotImplemented,
            color: 7,
            cgroup: None,
        }
    }

    #[test]
    fn entries_stay_in_creation_order() {
        let b = StatusBoard::default();
        let (a, c, m) = (entry("a", 10), entry("c", 30), entry("b", 20));
        b.insert(a.clone());
        b.insert(c.clone());
        b.insert(m.clone());
        assert_eq!(b.uuids(), vec![a.uuid, m.uuid, c.uuid]);
        let s = b.statuses(&[]).unwrap();
        assert_eq!(s[1].name, "b");
        assert_eq!(s[1].created, 20);
        assert_eq!(s[1].color, Some(7));
        // A stopped container has no live figures.
        assert_eq!((s[1].memory_bytes, s[1].cpu_usec, s[1].pids), (None, None, None));
        let unknown = Uuid::new_v4();
        assert_eq!(b.statuses(&[a.uuid, unknown]), Err(unknown));
        b.remove(&m.uuid);
        assert_eq!(b.uuids(), vec![a.uuid, c.uuid]);
    }
}
