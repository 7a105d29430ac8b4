//! The container state machine (SPEC §4.1). Every state change goes through [`State::can_become`],
//! one exhaustive `match` with no catch-all arm, so a new state forces a decision everywhere.

use crate::protocol::pb::ContainerState;

/// A container's lifecycle state; wire values as upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not running; nothing mounted.
    Stopped,
    /// Start accepted, being set up.
    Starting,
    /// Init exec'd, waiting for readiness.
    Booting,
    /// Ready.
    Running,
    /// Freeze requested.
    Freezing,
    /// The cgroup is frozen.
    Frozen,
    /// Cleanup failed; needs wipe or a later successful cleanup.
    Zombie,
    /// Being stopped (wire name `SHUTDOWN`).
    Shutdown,
    /// Running in setup mode.
    Setup,
    /// The guest rebooted itself; about to start again.
    Rebooting,
}

impl State {
    /// Whether the state machine allows `self` → `to`.
    pub fn can_become(self, to: State) -> bool {
        use State::*;
        match self {
            Stopped => matches!(to, Starting | Zombie),
            Starting => matches!(to, Booting | Setup | Stopped | Zombie),
            Booting => matches!(to, Running | Shutdown | Stopped | Rebooting | Zombie),
            Running => matches!(to, Freezing | Shutdown | Stopped | Rebooting | Zombie),
            Freezing => matches!(to, Frozen | Running | Setup | Shutdown | Stopped | Zombie),
            Frozen => matches!(to, Running | Setup | Shutdown | Stopped | Zombie),
            Zombie => matches!(to, Stopped),
            Shutdown => matches!(to, Stopped | Zombie),
            Setup => matches!(to, Freezing | Shutdown | Stopped | Rebooting | Zombie),
            Rebooting => matches!(to, Starting | Stopped | Zombie),
        }
    }

    /// The wire enum value.
    pub fn to_wire(self) -> ContainerState {
        match self {
            State::Stopped => ContainerState::Stopped,
            State::Starting => ContainerState::Starting,
            State::Booting => ContainerState::Booting,
            State::Running => ContainerState::Running,
            State::Freezing => ContainerState::Freezing,
            State::Frozen => ContainerState::Frozen,
            State::Zombie => ContainerState::Zombie,
            State::Shutdown => ContainerState::Shutdown,
            State::Setup => ContainerState::Setup,
            State::Rebooting => ContainerState::Rebooting,
        }
    }

    /// Whether an init process exists in this state.
    pub fn is_running(self) -> bool {
        !matches!(self, State::Stopped | State::Zombie)
    }
}

impl std::fmt::Display for State {
    /// The wire enum name (`RUNNING`, `SHUTDOWN`, …), as users see it in `list`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.to_wire().as_str_name())
    }
}

#[cfg(test)]
mod tests {
    use super::State::*;

    #[test]
    fn table_of_spec_4_1() {
        assert!(Stopped.can_become(Starting));
        assert!(Rebooting.can_become(Starting));
        assert!(Starting.can_become(Booting) && Starting.can_become(Setup) && Starting.can_become(Stopped));
        assert!(Booting.can_become(Running));
        assert!(Running.can_become(Freezing) && Freezing.can_become(Frozen) && Frozen.can_become(Running));
        assert!(Frozen.can_become(Shutdown) && Shutdown.can_become(Stopped));
        assert!(Zombie.can_become(Stopped));
        assert!(!Stopped.can_become(Running));
        assert!(!Stopped.can_become(Frozen));
        assert!(!Shutdown.can_become(Running));
        assert!(!Zombie.can_become(Starting));
    }

    #[test]
    fn wire_values_match_upstream() {
        assert_eq!(Stopped.to_wire() as i32, 1);
        assert_eq!(Shutdown.to_wire() as i32, 8);
        assert_eq!(Rebooting.to_wire() as i32, 10);
    }
}
