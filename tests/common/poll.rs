//! Waiting for a condition in tests (never a timed assertion: the timeouts only bound a hang).

#![allow(dead_code)]

use std::{
    thread,
    time::{Duration, Instant},
};

/// Calls `f` every 10 ms until it returns true (→ true) or `timeout` has passed (→ false).
pub fn poll(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `f` returns true; panics naming `what` after 30 s.
pub fn wait_for(what: &str, f: impl FnMut() -> bool) {
    assert!(poll(Duration::from_secs(30), f), "timed out waiting for {what}");
}
