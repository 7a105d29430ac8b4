//! Kernel plumbing: one small, safe module per kernel concern (STYLE item 2).
//!
//! Everything here talks to the kernel directly — cgroupfs files, ioctls on `/dev/loop*`, rtnetlink —
//! and hands the rest of cml a safe API with errors that name the step, the file and the errno. This
//! layer sits at the bottom of the dependency graph: it depends on nothing else in the crate, and
//! nothing here may import from `container`, `actors`, `daemon` or any other module above it.
//!
//! All `unsafe` code of the crate lives under `src/sys`, each block with a `// SAFETY:` comment
//! (`clippy::undocumented_unsafe_blocks` is denied). Each module has its own error enum named for it
//! (`CgroupError`, `LoopError`).
//!
//! Blocking: every function here makes blocking syscalls; callers on an async runtime run them via
//! `spawn_blocking` or a sync arbiter (STYLE item 9).

pub mod cgroup;
pub mod fdpass;
pub mod fscrypt;
pub mod idmap;
pub mod loopdev;
pub mod mountinfo;
pub mod netif;
pub mod netlink;
pub mod pidfd;
pub mod process;
pub mod pty;
pub mod systemd;
pub mod xattr;
