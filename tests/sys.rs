//! Kernel tests for `cml::sys` (cgroups, loop devices). They need root and a real kernel; every test
//! cleans up its cgroups, loop devices and children through Drop guards, also when it fails.
#![allow(clippy::unwrap_used)]

#[path = "common/poll.rs"]
mod poll_util;
use poll_util::poll;

use std::{
    fs,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::Duration,
};

use cml::sys::{
    cgroup::{
        CgroupError, ContainerCgroup, Controller, DeviceRule, FreezerState, Hierarchy, Layout, Limits,
        default_devices, remove_parent_if_empty,
    },
    loopdev::LoopDevice,
};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A parent name no other test (or test process) uses.
fn unique_parent() -> String {
    format!(
        "cmltest-sys-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// On drop: kills what is in the container cgroup (thawing it, so a frozen child can die), reaps the
/// test's child, removes the cgroup and the parent. One guard for both, because the order matters: a
/// child in a frozen v1 cgroup cannot be reaped before the thaw.
struct CgroupGuard {
    layout: Layout,
    parent: String,
    name: String,
    child: Option<Child>,
}

impl CgroupGuard {
    fn new(layout: &Layout, parent: &str, name: &str) -> CgroupGuard {
        CgroupGuard {
            layout: layout.clone(),
            parent: parent.to_string(),
            name: name.to_string(),
            child: None,
        }
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        let cg = ContainerCgroup::open(&self.layout, &self.parent, &self.name);
        cg.kill_all();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = cg.remove();
        remove_parent_if_empty(&self.layout, &self.parent);
    }
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn dir_of(layout: &Layout, c: Controller, parent: &str, name: &str) -> PathBuf {
    layout.hierarchy(c).unwrap().path().join(parent).join(name)
}

fn is_v1(layout: &Layout, c: Controller) -> bool {
    matches!(layout.hierarchy(c), Some(Hierarchy::V1(_)))
}

fn process_state(pid: u32) -> char {
    let stat = read(Path::new(&format!("/proc/{pid}/stat")));
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.chars().next().unwrap()
}

#[test]
fn detect_finds_every_controller() {
    let layout = Layout::detect().unwrap();
    println!("cgroup layout: {}", layout.describe());
    let unified = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.contains(" /sys/fs/cgroup ") && l.contains(" - cgroup2 "));
    for c in Controller::all() {
        let h = layout
            .hierarchy(c)
            .unwrap_or_else(|| panic!("{c} missing: {}", layout.describe()));
        if unified {
            assert_eq!(h, &Hierarchy::V2("/sys/fs/cgroup".into()), "{c}");
        } else {
            // Hybrid or v1 host (this CI host): every controller we need is a v1 hierarchy.
            assert_eq!(
                h,
                &Hierarchy::V1(Path::new("/sys/fs/cgroup").join(c.name())),
                "{c}"
            );
        }
    }
}

#[test]
fn cgroup_lifecycle() {
    let layout = Layout::detect().unwrap();
    let parent = unique_parent();
    let name = "c1".to_string();
    let mut guard = CgroupGuard::new(&layout, &parent, &name);
    let limits = Limits {
        memory_bytes: Some(64 << 20),
        cpus: Some("0".into()),
        pids_max: Some(50),
        devices: default_devices(),
    };
    let cg = ContainerCgroup::create(&layout, &parent, &name, &limits).unwrap();
    assert!(!cg.dirs().is_empty());
    for d in cg.dirs() {
        assert!(d.is_dir(), "{}", d.display());
    }

    let mem = dir_of(&layout, Controller::Memory, &parent, &name);
    let cpuset = dir_of(&layout, Controller::Cpuset, &parent, &name);
    let pids = dir_of(&layout, Controller::Pids, &parent, &name);
    if is_v1(&layout, Controller::Memory) {
        assert_eq!(
            read(&mem.join("memory.limit_in_bytes")).trim(),
            (64u64 << 20).to_string()
        );
    } else {
        assert_eq!(read(&mem.join("memory.max")).trim(), (64u64 << 20).to_string());
    }
    assert_eq!(read(&cpuset.join("cpuset.cpus")).trim(), "0");
    assert_eq!(read(&pids.join("pids.max")).trim(), "50");
    if is_v1(&layout, Controller::Devices) {
        let list = read(&dir_of(&layout, Controller::Devices, &parent, &name).join("devices.list"));
        assert!(list.lines().any(|l| l == "c 1:3 rwm"), "{list}");
        assert!(list.lines().any(|l| l == "c 136:* rwm"), "{list}");
        assert!(!list.lines().any(|l| l == "a *:* rwm"), "{list}");
    }

    let child = guard
        .child
        .insert(Command::new("sleep").arg("100").spawn().unwrap());
    let pid = child.id();
    cg.attach(i32::try_from(pid).unwrap()).unwrap();
    assert!(
        cg.pids().contains(&i32::try_from(pid).unwrap()),
        "{:?}",
        cg.pids()
    );
    for f in cg.procs_files() {
        assert!(read(&f).lines().any(|l| l == pid.to_string()), "{}", f.display());
    }

    cg.freeze().unwrap();
    assert!(
        poll(Duration::from_secs(2), || cg.freezer_state().unwrap()
            == FreezerState::Frozen),
        "not frozen: {:?}",
        cg.freezer_state()
    );
    assert_ne!(process_state(pid), 'R');
    cg.thaw().unwrap();
    assert!(poll(Duration::from_secs(2), || cg.freezer_state().unwrap()
        == FreezerState::Thawed));

    cg.kill_all();
    let status = guard.child.as_mut().unwrap().wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");

    cg.remove().unwrap();
    for d in cg.dirs() {
        assert!(!d.exists(), "{}", d.display());
    }
    remove_parent_if_empty(&layout, &parent);
    for c in Controller::all() {
        let p = layout.hierarchy(c).unwrap().path().join(&parent);
        assert!(!p.exists(), "{}", p.display());
    }
    drop(guard);
}

#[test]
fn failed_create_removes_what_it_made() {
    let layout = Layout::detect().unwrap();
    let parent = unique_parent();
    let _guard = CgroupGuard::new(&layout, &parent, "bad");
    let limits = Limits {
        cpus: Some("99".into()),
        devices: default_devices(),
        ..Limits::default()
    };
    let err = ContainerCgroup::create(&layout, &parent, "bad", &limits).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("cpuset.cpus"), "{msg}");
    assert!(msg.contains(&parent), "{msg}");
    assert!(matches!(err, CgroupError::Io { .. }), "{err:?}");
    assert!(err.errno().is_some(), "{err:?}");
    for c in Controller::all() {
        let p = layout.hierarchy(c).unwrap().path().join(&parent);
        assert!(!p.exists(), "{} left behind", p.display());
    }
}

#[test]
fn create_with_existing_parent_keeps_it_and_open_matches() {
    let layout = Layout::detect().unwrap();
    let parent = unique_parent();
    let _g1 = CgroupGuard::new(&layout, &parent, "a");
    let _g2 = CgroupGuard::new(&layout, &parent, "b");
    let a = ContainerCgroup::create(&layout, &parent, "a", &Limits::default()).unwrap();
    let b = ContainerCgroup::create(&layout, &parent, "b", &Limits::default()).unwrap();
    assert_eq!(ContainerCgroup::open(&layout, &parent, "a"), a);
    // Parent still in use by b: a's removal and remove_parent_if_empty keep it.
    a.remove().unwrap();
    remove_parent_if_empty(&layout, &parent);
    assert!(b.dirs().iter().all(|d| d.is_dir()));
    b.remove().unwrap();
    remove_parent_if_empty(&layout, &parent);
    for d in b.dirs() {
        assert!(!d.parent().unwrap().exists());
    }
}

#[test]
fn device_rule_strings() {
    let r: DeviceRule = "c 116:* rw".parse().unwrap();
    assert!(r.allow);
    assert_eq!(
        (r.kind, r.major, r.minor, r.access.as_str()),
        ('c', Some(116), None, "rw")
    );
    assert_eq!(r.to_v1(), "c 116:* rw");
    let r: DeviceRule = "deny b 8:0 rwm".parse().unwrap();
    assert!(!r.allow);
    assert_eq!(r.to_v1(), "b 8:0 rwm");
    for bad in ["c 116 rw", "c 1:3 rwq", "d 1:3 r", "c x:3 r", "c 1:3", "deny"] {
        let err = bad.parse::<DeviceRule>().unwrap_err();
        assert!(err.to_string().contains(bad), "{err}");
    }
}

// ---- loop devices ----

fn image(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let f = fs::File::create(&p).unwrap();
    f.set_len(4 << 20).unwrap();
    p
}

fn backing_file(number: u32) -> Option<String> {
    fs::read_to_string(format!("/sys/block/loop{number}/loop/backing_file"))
        .ok()
        .map(|s| s.trim().to_string())
}

#[test]
fn loop_attach_read_only_and_autoclear() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path(), "ro.img").canonicalize().unwrap();
    let dev = LoopDevice::attach(&img, true).unwrap();
    let n = dev.number();
    assert_eq!(dev.path(), PathBuf::from(format!("/dev/loop{n}")));
    assert_eq!(backing_file(n).as_deref(), Some(img.to_str().unwrap()));
    assert_eq!(read(Path::new(&format!("/sys/block/loop{n}/ro"))).trim(), "1");
    assert_eq!(
        read(Path::new(&format!("/sys/block/loop{n}/loop/autoclear"))).trim(),
        "1"
    );
    drop(dev);
    // Another test may take the number right away: check that it no longer names our image.
    assert!(
        poll(Duration::from_secs(2), || backing_file(n).as_deref()
            != Some(img.to_str().unwrap())),
        "loop{n} still attached"
    );
}

#[test]
fn loop_attach_read_write_and_detach() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path(), "rw.img").canonicalize().unwrap();
    let dev = LoopDevice::attach(&img, false).unwrap();
    let n = dev.number();
    assert_eq!(read(Path::new(&format!("/sys/block/loop{n}/ro"))).trim(), "0");
    dev.detach().unwrap();
    assert!(poll(Duration::from_secs(2), || backing_file(n).as_deref()
        != Some(img.to_str().unwrap())));
}

#[test]
fn loop_attach_missing_image_fails_cleanly() {
    let err = LoopDevice::attach(Path::new("/nonexistent/cmltest.img"), true).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/cmltest.img"), "{err}");
}

#[test]
fn loop_concurrent_attaches_get_distinct_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs: Vec<PathBuf> = (0..8)
        .map(|i| image(tmp.path(), &format!("c{i}.img")).canonicalize().unwrap())
        .collect();
    let devs: Vec<LoopDevice> = thread::scope(|s| {
        let handles: Vec<_> = imgs
            .iter()
            .map(|img| s.spawn(move || LoopDevice::attach(img, true)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
    })
    .into_iter()
    .collect::<Result<_, _>>()
    .unwrap();
    let mut numbers: Vec<u32> = devs.iter().map(LoopDevice::number).collect();
    for (dev, img) in devs.iter().zip(&imgs) {
        assert_eq!(backing_file(dev.number()).as_deref(), Some(img.to_str().unwrap()));
    }
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), 8, "{numbers:?}");
    drop(devs);
    let ours = |n: &u32| {
        backing_file(*n).is_some_and(|b| b.starts_with(tmp.path().canonicalize().unwrap().to_str().unwrap()))
    };
    assert!(
        poll(Duration::from_secs(2), || !numbers.iter().any(ours)),
        "still attached"
    );
}

/// Unmounts (detaching) on drop.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn idmapped_binds_give_files_to_the_namespace_root_and_a_file_system_without_support_is_told() {
    use cml::sys::idmap::{UserNamespace, bind_idmapped, can_idmap};
    use std::os::unix::fs::MetadataExt;
    let ns = UserNamespace::create(100_000, 65_536).unwrap();
    // The test's directory lies on this machine's ext4 (idmappable since Linux 5.12); procfs never is.
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("f"), "x").unwrap();
    assert_eq!(fs::metadata(src.path().join("f")).unwrap().uid(), 0);
    assert!(can_idmap(src.path(), ns.fd()));
    assert!(!can_idmap(Path::new("/proc"), ns.fd()));

    let dst = tempfile::tempdir().unwrap();
    bind_idmapped(src.path(), dst.path(), ns.fd(), true).unwrap();
    let _guard = MountGuard(dst.path().to_path_buf());
    // Root's file, seen through the mapping: the namespace's root, i.e. host uid 100000.
    let m = fs::metadata(dst.path().join("f")).unwrap();
    assert_eq!((m.uid(), m.gid()), (100_000, 100_000));
    assert_eq!(fs::read_to_string(dst.path().join("f")).unwrap(), "x");
    // Read-only as asked; the source is untouched.
    let err = fs::write(dst.path().join("g"), "y").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    assert!(!src.path().join("g").exists());
}
