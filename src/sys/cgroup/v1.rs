//! The cgroup v1 backend: one directory per hierarchy.
//!
//! Creation order per hierarchy: mkdir each level of `<parent>` that is missing, then
//! `<parent>/<name>`, then the limits, all before any task joins:
//! - cpuset: a cgroup without `cpuset.cpus` and `cpuset.mems` refuses tasks (`ENOSPC`), and a child's
//!   values must be a subset of its parent's, so each new parent level copies its parent's values and
//!   the container gets `cpus` (or the parent's) plus the parent's mems.
//! - devices: `a` to `devices.deny` first (allowed only while the cgroup has no children), then the
//!   rules in order (allow → `devices.allow`, deny → `devices.deny`).
//! - memory: `memory.limit_in_bytes`, read back (the kernel rounds down to a page), then the same
//!   value as `memory.memsw.limit_in_bytes` where the kernel accounts swap: a `ram_limit` caps RAM
//!   and swap together, as on v2.
//! - freezer: `freezer.state`.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Creates the parent levels and the container's `leaf` in the hierarchy mounted at `root`, and
/// writes the limits of the controllers `on_this` hierarchy.
pub(super) fn setup(
    root: &Path,
    levels: &[&str],
    leaf: Option<&Path>,
    on_this: &[Controller],
    limits: &Limits,
    created: &mut Created,
) -> Result<(), CgroupError> {
    let cpuset = on_this.contains(&Controller::Cpuset);
    let mut dir = root.to_path_buf();
    for level in levels {
        let up = dir.clone();
        dir.push(level);
        created.mkdir(&dir, false)?;
        if cpuset {
            copy_cpuset_if_empty(&up, &dir)?;
        }
    }
    let parent_dir = dir;
    let Some(leaf) = leaf else {
        return Ok(());
    };
    created.mkdir(leaf, true)?;
    if cpuset {
        match &limits.cpus {
            Some(cpus) => write_file(&leaf.join("cpuset.cpus"), cpus)?,
            None => copy_file(&parent_dir, leaf, "cpuset.cpus")?,
        }
        copy_file(&parent_dir, leaf, "cpuset.mems")?;
    }
    if on_this.contains(&Controller::Memory)
        && let Some(bytes) = limits.memory_bytes
    {
        write_memory(&leaf.join("memory.limit_in_bytes"), bytes)?;
        let memsw = leaf.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            write_memory(&memsw, bytes)?;
        }
    }
    if on_this.contains(&Controller::Pids)
        && let Some(max) = limits.pids_max
    {
        write_file(&leaf.join("pids.max"), &max.to_string())?;
    }
    if on_this.contains(&Controller::Devices) {
        write_file(&leaf.join("devices.deny"), "a")?;
        for rule in &limits.devices {
            write_device_rule(leaf, rule)?;
        }
    }
    Ok(())
}

/// Adds one rule to a cgroup's device list.
pub(super) fn write_device_rule(dir: &Path, rule: &DeviceRule) -> Result<(), CgroupError> {
    let file = if rule.allow {
        "devices.allow"
    } else {
        "devices.deny"
    };
    write_file(&dir.join(file), &rule.to_v1())
}

/// Freezes (`FROZEN`) or thaws (`THAWED`).
pub(super) fn set_frozen(dir: &Path, frozen: bool) -> Result<(), CgroupError> {
    let value = if frozen { "FROZEN" } else { "THAWED" };
    write_file(&dir.join("freezer.state"), value)
}

/// `freezer.state` as a [`FreezerState`].
pub(super) fn freezer_state(dir: &Path) -> Result<FreezerState, CgroupError> {
    let path = dir.join("freezer.state");
    match read_file(&path)?.as_str() {
        "THAWED" => Ok(FreezerState::Thawed),
        "FREEZING" => Ok(FreezerState::Freezing),
        "FROZEN" => Ok(FreezerState::Frozen),
        other => Err(CgroupError::Unexpected {
            path,
            content: other.to_string(),
        }),
    }
}

fn copy_file(from_dir: &Path, to_dir: &Path, name: &str) -> Result<(), CgroupError> {
    let value = read_file(&from_dir.join(name))?;
    write_file(&to_dir.join(name), &value)
}

/// A cpuset directory with empty `cpuset.cpus`/`cpuset.mems` gets its parent's values.
fn copy_cpuset_if_empty(up: &Path, dir: &Path) -> Result<(), CgroupError> {
    for name in ["cpuset.cpus", "cpuset.mems"] {
        if read_file(&dir.join(name))?.is_empty() {
            copy_file(up, dir, name)?;
        }
    }
    Ok(())
}
