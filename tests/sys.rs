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

// ---- cgroup v2 device filter (eBPF) ----
//
// The kernel runs the device programs of a task's cgroup v2 cgroup on every device open and mknod,
// also on a hybrid host whose `devices` controller is v1. Each test makes its own cgroup below the
// cgroup2 root and forks a child into it that opens device nodes when asked.

mod devfilter {
    use std::{
        ffi::CString,
        fs::{self, File},
        io::{Read, Write},
        os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
        path::{Path, PathBuf},
        sync::atomic::Ordering,
        time::Duration,
    };

    use cml::sys::{
        cgroup::{
            AttachedProgram, BpfError, DeviceRule, Layout, apply_device_filter, device_filter_program,
            device_filters,
        },
        process::{Forked, exit_now, fork},
    };
    use nix::{
        errno::Errno,
        fcntl::OFlag,
        poll::{PollFd, PollFlags, poll},
        sys::{
            signal::{Signal, kill},
            wait::waitpid,
        },
        unistd::{Pid, pipe2},
    };

    use super::{NEXT, poll as poll_until};

    const NODES: [&str; 3] = ["/dev/null", "/dev/zero", "/dev/full"];
    /// Request byte for mknod of `c 1:3` in the test's temporary directory (0..=5 are opens).
    const MKNOD: u8 = 6;

    /// The cgroup2 root, or None (printing why the test is skipped).
    fn v2_root() -> Option<PathBuf> {
        let layout = Layout::detect().unwrap();
        let root = layout.v2_root().map(Path::to_path_buf);
        if root.is_none() {
            println!(
                "skipped: no cgroup2 mount in /proc/self/mountinfo (neither /sys/fs/cgroup/unified nor /sys/fs/cgroup)"
            );
        }
        root
    }

    fn rules(list: &[&str]) -> Vec<DeviceRule> {
        list.iter().map(|r| r.parse().unwrap()).collect()
    }

    /// A cgroup v2 directory with a child in it that opens device nodes on request. On drop the child
    /// is killed and reaped, then the directory removed (its programs go with it).
    struct DevCgroup {
        dir: PathBuf,
        child: Option<Pid>,
        requests: Option<File>,
        replies: Option<File>,
        nodes: tempfile::TempDir,
    }

    /// The child: reads request bytes, answers each with 0 or the errno (4 bytes). Forked from the
    /// multi-threaded test harness, so only async-signal-safe calls, no allocation, and `_exit`.
    fn serve(requests: RawFd, replies: RawFd, paths: &[CString; 3], node: &CString) -> ! {
        loop {
            let mut req = 0u8;
            // SAFETY: reads one byte into a local.
            if unsafe { libc::read(requests, (&raw mut req).cast(), 1) } != 1 {
                exit_now(0);
            }
            let result: i32 = match req {
                0..=5 => {
                    let flags = if req % 2 == 1 {
                        libc::O_WRONLY
                    } else {
                        libc::O_RDONLY
                    };
                    let path = &paths[usize::from(req / 2)];
                    // SAFETY: a NUL-terminated path made before the fork.
                    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
                    if fd < 0 {
                        Errno::last_raw()
                    } else {
                        // SAFETY: closes the descriptor just opened.
                        unsafe { libc::close(fd) };
                        0
                    }
                }
                MKNOD => {
                    let (mode, dev) = (libc::S_IFCHR | 0o600, libc::makedev(1, 3));
                    // SAFETY: a NUL-terminated path made before the fork; creates a node there.
                    let r = unsafe { libc::mknod(node.as_ptr(), mode, dev) };
                    if r < 0 {
                        Errno::last_raw()
                    } else {
                        // SAFETY: removes the node just made.
                        unsafe { libc::unlink(node.as_ptr()) };
                        0
                    }
                }
                _ => -1,
            };
            // SAFETY: writes the 4 bytes of a local.
            unsafe { libc::write(replies, (&raw const result).cast(), 4) };
        }
    }

    impl DevCgroup {
        fn new(root: &Path) -> DevCgroup {
            let nodes = tempfile::tempdir().unwrap();
            let dir = root.join(format!(
                "cml-bpf-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir(&dir).unwrap();
            let mut cg = DevCgroup {
                dir,
                child: None,
                requests: None,
                replies: None,
                nodes,
            };
            let paths = NODES.map(|p| CString::new(p).unwrap());
            let node =
                CString::new(cg.nodes.path().join("node").into_os_string().into_encoded_bytes()).unwrap();
            let (req_r, req_w) = pipe2(OFlag::O_CLOEXEC).unwrap();
            let (rep_r, rep_w) = pipe2(OFlag::O_CLOEXEC).unwrap();
            match fork().unwrap() {
                Forked::Child => serve(req_r.as_raw_fd(), rep_w.as_raw_fd(), &paths, &node),
                Forked::Parent(pid) => cg.child = Some(pid),
            }
            drop((req_r, rep_w));
            cg.requests = Some(File::from(req_w));
            cg.replies = Some(File::from(rep_r));
            let pid = cg.child.unwrap();
            fs::write(cg.dir.join("cgroup.procs"), pid.to_string()).unwrap();
            cg
        }

        /// Asks the child; Ok or the errno.
        fn ask(&self, req: u8) -> Result<(), i32> {
            self.requests.as_ref().unwrap().write_all(&[req]).unwrap();
            let replies = self.replies.as_ref().unwrap();
            let mut fds = [PollFd::new(replies.as_fd(), PollFlags::POLLIN)];
            assert_eq!(poll(&mut fds, 10_000u16).unwrap(), 1, "child does not answer");
            let mut buf = [0u8; 4];
            (&*replies).read_exact(&mut buf).unwrap();
            match i32::from_ne_bytes(buf) {
                0 => Ok(()),
                e => Err(e),
            }
        }

        fn open(&self, node: &str, write: bool) -> Result<(), i32> {
            let i = NODES.iter().position(|n| *n == node).unwrap();
            self.ask(u8::try_from(i).unwrap() * 2 + u8::from(write))
        }

        fn mknod(&self) -> Result<(), i32> {
            self.ask(MKNOD)
        }

        fn filters(&self) -> Vec<AttachedProgram> {
            device_filters(&self.dir).unwrap()
        }

        fn ours(&self) -> Vec<u32> {
            self.filters()
                .iter()
                .filter(|p| p.is_ours())
                .map(|p| p.id)
                .collect()
        }
    }

    impl Drop for DevCgroup {
        fn drop(&mut self) {
            if let Some(pid) = self.child.take() {
                let _ = kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
            }
            // The reaped child leaves the cgroup a moment later.
            let removed = poll_until(Duration::from_secs(5), || match fs::remove_dir(&self.dir) {
                Ok(()) => true,
                Err(e) => e.kind() == std::io::ErrorKind::NotFound,
            });
            if !removed {
                eprintln!("could not remove {}", self.dir.display());
            }
        }
    }

    const EPERM: Result<(), i32> = Err(libc::EPERM);

    #[test]
    fn device_filter_allows_listed_nodes_and_denies_the_rest() {
        let Some(root) = v2_root() else { return };
        let cg = DevCgroup::new(&root);
        // Without a filter every node opens: what follows is the filter's doing.
        for node in NODES {
            assert_eq!(cg.open(node, false), Ok(()), "{node}");
            assert_eq!(cg.open(node, true), Ok(()), "{node}");
        }
        assert!(cg.ours().is_empty());

        apply_device_filter(&cg.dir, &rules(&["c 1:3 rwm", "c 1:5 r"])).unwrap();
        assert_eq!(cg.open("/dev/null", false), Ok(()));
        assert_eq!(cg.open("/dev/null", true), Ok(()));
        assert_eq!(cg.open("/dev/zero", false), Ok(()));
        assert_eq!(cg.open("/dev/zero", true), EPERM, "read allowed, write denied");
        assert_eq!(cg.open("/dev/full", false), EPERM);
        assert_eq!(cg.open("/dev/full", true), EPERM);
        let ours = cg.filters();
        assert_eq!(ours.len(), 1, "{ours:?}");
        assert!(ours[0].is_ours(), "{ours:?}");
    }

    #[test]
    fn device_filter_replaced_at_run_time_not_stacked() {
        let Some(root) = v2_root() else { return };
        let cg = DevCgroup::new(&root);
        apply_device_filter(&cg.dir, &rules(&["c 1:3 rw"])).unwrap();
        let first = cg.ours();
        assert_eq!(first.len(), 1);
        assert_eq!(cg.open("/dev/null", true), Ok(()));
        assert_eq!(cg.open("/dev/zero", false), EPERM);

        apply_device_filter(&cg.dir, &rules(&["c 1:5 rw"])).unwrap();
        let second = cg.ours();
        assert_eq!(second.len(), 1, "replaced, not stacked: {:?}", cg.filters());
        assert_ne!(first, second);
        assert_eq!(cg.open("/dev/null", true), EPERM);
        assert_eq!(cg.open("/dev/zero", false), Ok(()));

        // The same rules again: still exactly one.
        apply_device_filter(&cg.dir, &rules(&["c 1:5 rw"])).unwrap();
        assert_eq!(cg.ours().len(), 1);
        assert_eq!(cg.open("/dev/zero", true), Ok(()));
    }

    #[test]
    fn device_filter_later_deny_wins_over_wildcard_allow() {
        let Some(root) = v2_root() else { return };
        let cg = DevCgroup::new(&root);
        let mut list = rules(&["c *:* rwm", "deny c 1:3 w"]);
        apply_device_filter(&cg.dir, &list).unwrap();
        assert_eq!(cg.open("/dev/null", false), Ok(()));
        assert_eq!(cg.open("/dev/null", true), EPERM);
        assert_eq!(cg.open("/dev/zero", true), Ok(()));
        // An allow appended later allows again (dev_access at run time).
        list.push("c 1:3 w".parse().unwrap());
        apply_device_filter(&cg.dir, &list).unwrap();
        assert_eq!(cg.open("/dev/null", true), Ok(()));
        assert_eq!(cg.ours().len(), 1);
    }

    #[test]
    fn device_filter_mknod_needs_m() {
        let Some(root) = v2_root() else { return };
        let cg = DevCgroup::new(&root);
        apply_device_filter(&cg.dir, &rules(&["c 1:3 rw"])).unwrap();
        assert_eq!(cg.mknod(), EPERM);
        assert_eq!(cg.open("/dev/null", true), Ok(()));
        apply_device_filter(&cg.dir, &rules(&["c 1:3 rw", "c 1:* m"])).unwrap();
        assert_eq!(cg.mknod(), Ok(()));
    }

    /// Loads an allow-everything device program under another name and attaches it with `flags`,
    /// with raw bpf(2) calls, as another tool would.
    fn attach_foreign(cgroup_dir: &Path, flags: u32) -> OwnedFd {
        // Zeroed `union bpf_attr`s, larger than the kernel's, with the fields we set in front.
        #[repr(C)]
        struct LoadAttr {
            prog_type: u32,
            insn_cnt: u32,
            insns: u64,
            license: u64,
            log: [u64; 2],
            kern_version_and_flags: u64,
            prog_name: [u8; 16],
            rest: [u8; 200],
        }
        #[repr(C)]
        struct AttachAttr {
            target_fd: u32,
            attach_bpf_fd: u32,
            attach_type: u32,
            attach_flags: u32,
            rest: [u8; 240],
        }
        let insns = device_filter_program(&rules(&["a *:* rwm"]));
        let mut name = [0u8; 16];
        name[..7].copy_from_slice(b"foreign");
        let load = LoadAttr {
            prog_type: 15, // BPF_PROG_TYPE_CGROUP_DEVICE
            insn_cnt: u32::try_from(insns.len()).unwrap(),
            insns: insns.as_ptr() as u64,
            license: c"GPL".as_ptr() as u64,
            log: [0; 2],
            kern_version_and_flags: 0,
            prog_name: name,
            rest: [0; 200],
        };
        // SAFETY: BPF_PROG_LOAD with a zeroed attr: insns and license point to live memory.
        let fd = unsafe { libc::syscall(libc::SYS_bpf, 5, &raw const load, size_of::<LoadAttr>()) };
        assert!(fd >= 0, "load: {}", std::io::Error::last_os_error());
        // SAFETY: a new descriptor from bpf(2), owned by nobody else.
        let prog = unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).unwrap()) };
        let cgroup = File::open(cgroup_dir).unwrap();
        let attach = AttachAttr {
            target_fd: u32::try_from(cgroup.as_raw_fd()).unwrap(),
            attach_bpf_fd: u32::try_from(prog.as_raw_fd()).unwrap(),
            attach_type: 6, // BPF_CGROUP_DEVICE
            attach_flags: flags,
            rest: [0; 240],
        };
        // SAFETY: BPF_PROG_ATTACH with a zeroed attr holding two open descriptors, no addresses.
        let r = unsafe { libc::syscall(libc::SYS_bpf, 8, &raw const attach, size_of::<AttachAttr>()) };
        assert_eq!(r, 0, "attach: {}", std::io::Error::last_os_error());
        prog
    }

    #[test]
    fn device_filter_leaves_foreign_programs_alone() {
        let Some(root) = v2_root() else { return };
        let cg = DevCgroup::new(&root);
        let _foreign = attach_foreign(&cg.dir, 2); // BPF_F_ALLOW_MULTI
        let before = cg.filters();
        assert_eq!(before.len(), 1);
        assert!(!before[0].is_ours());
        assert_eq!(cg.open("/dev/full", false), Ok(()));

        apply_device_filter(&cg.dir, &rules(&["c 1:3 rw"])).unwrap();
        apply_device_filter(&cg.dir, &rules(&["c 1:3 r"])).unwrap();
        let after = cg.filters();
        assert_eq!(after.len(), 2, "{after:?}");
        assert!(after.contains(&before[0]), "{after:?}");
        assert_eq!(cg.ours().len(), 1);
        // Every program must allow: the foreign allow-all does not overrule ours.
        assert_eq!(cg.open("/dev/null", false), Ok(()));
        assert_eq!(cg.open("/dev/null", true), EPERM);
        assert_eq!(cg.open("/dev/full", false), EPERM);
    }

    #[test]
    fn device_filter_refuses_a_cgroup_with_an_exclusive_program() {
        let Some(root) = v2_root() else { return };
        let cg = DevCgroup::new(&root);
        let _foreign = attach_foreign(&cg.dir, 0);
        let before = cg.filters();
        let err = apply_device_filter(&cg.dir, &rules(&["c 1:3 rw"])).unwrap_err();
        assert!(matches!(err, BpfError::Exclusive { .. }), "{err:?}");
        assert!(err.to_string().contains(cg.dir.to_str().unwrap()), "{err}");
        assert_eq!(cg.filters(), before, "nothing changed");
        assert_eq!(cg.open("/dev/full", true), Ok(()));
    }

    /// `n` rules for distinct devices (none shadows another), allow and deny mixed.
    fn distinct_rules(n: u32) -> Vec<DeviceRule> {
        (0..n)
            .map(|i| {
                let access = ["r", "w", "m", "rw", "rwm"][(i % 5) as usize];
                let deny = if i % 3 == 0 { "deny " } else { "" };
                format!("{deny}c {}:{i} {access}", 200 + i % 50).parse().unwrap()
            })
            .collect()
    }

    #[test]
    fn device_filter_loads_long_rule_lists() {
        let Some(root) = v2_root() else { return };
        let cg = DevCgroup::new(&root);
        let mut list = distinct_rules(1000);
        list.extend(rules(&["c 1:3 rw", "deny c 1:3 w"]));
        let t = std::time::Instant::now();
        apply_device_filter(&cg.dir, &list).unwrap();
        println!("{} distinct rules loaded in {:?}", list.len(), t.elapsed());
        assert_eq!(cg.open("/dev/null", false), Ok(()));
        assert_eq!(cg.open("/dev/null", true), EPERM);
        // Toggled at run time 20000 times: the shadowed rules are pruned before loading.
        for _ in 0..10_000 {
            list.extend(rules(&["c 1:5 r", "deny c 1:5 r"]));
        }
        list.push("c 1:5 r".parse().unwrap());
        apply_device_filter(&cg.dir, &list).unwrap();
        assert_eq!(cg.open("/dev/zero", false), Ok(()));
        assert_eq!(cg.ours().len(), 1);
    }

    #[test]
    fn device_filter_too_long_for_the_verifier_says_why() {
        let Some(root) = v2_root() else { return };
        let cg = DevCgroup::new(&root);
        // Each rule keeps one branch on the verifier's stack of 8192 (see `program`): 9000 do not
        // fit on Linux 6.18. A kernel that takes them is fine too; the error is what is checked.
        match apply_device_filter(&cg.dir, &distinct_rules(9000)) {
            Ok(()) => println!("this kernel verified 9000 distinct rules"),
            Err(err) => {
                let BpfError::Verifier { log, .. } = &err else {
                    panic!("{err:?}")
                };
                println!("{err}");
                assert!(!log.is_empty());
                assert!(err.to_string().contains(cg.dir.to_str().unwrap()), "{err}");
                assert!(err.errno().is_some());
                assert!(cg.ours().is_empty(), "nothing attached");
            }
        }
    }

    #[test]
    fn device_filter_on_a_directory_that_is_no_cgroup2_fails_with_the_step() {
        let tmp = tempfile::tempdir().unwrap();
        let err = apply_device_filter(tmp.path(), &rules(&["c 1:3 rw"])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("BPF_PROG_QUERY"), "{msg}");
        assert!(msg.contains(tmp.path().to_str().unwrap()), "{msg}");
        assert!(err.errno().is_some(), "{err:?}");
        let missing = tmp.path().join("missing");
        let err = apply_device_filter(&missing, &[]).unwrap_err();
        assert!(err.to_string().starts_with("open cgroup: "), "{err}");
        assert_eq!(err.errno(), Some(libc::ENOENT));
    }
}
