#![allow(clippy::unwrap_used)]
//! `cml-guestos` end to end: the development PKI, building (squashfs and ext4), signing, and the
//! HTTP store fixture the daemon's GuestOS tests use.

#[path = "common/fixture.rs"]
mod fixture;
#[path = "common/http.rs"]
mod http;

use std::{
    fs,
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    process::{Command, Output},
};

use cml::{
    crypto,
    protocol::{
        pb::{GuestOsConfig, guest_os_mount},
        text,
    },
};
use fixture::{CML_GUESTOS, busybox_guestos};
use http::HttpStore;

fn tool(args: &[&str]) -> Output {
    Command::new(CML_GUESTOS).args(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn load(conf: &Path) -> GuestOsConfig {
    text::parse(&fs::read(conf).unwrap()).unwrap()
}

fn tool_output(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dev_pki_and_signature_verify() {
    let dir = tempfile::tempdir().unwrap();
    let pki = fixture::pki(dir.path());
    for f in ["root-ca.cert", "root-ca.key", "signing.cert", "signing.key"] {
        assert!(pki.join(f).is_file(), "{f}");
    }
    // Reused, not remade.
    let before = fs::read(pki.join("signing.cert")).unwrap();
    assert_eq!(fixture::pki(dir.path()), pki);
    assert_eq!(fs::read(pki.join("signing.cert")).unwrap(), before);

    let file = dir.path().join("container.conf");
    fs::write(&file, b"name: \"c\"\n").unwrap();
    let sig = fixture::sign_file(&pki, &file);
    assert_eq!(sig, dir.path().join("container.conf.sig"));
    let root = crypto::parse_ca_cert(&fs::read(pki.join("root-ca.cert")).unwrap()).unwrap();
    let subject = crypto::verify_signature(
        &fs::read(&file).unwrap(),
        &fs::read(&sig).unwrap(),
        &fs::read(pki.join("signing.cert")).unwrap(),
        &[root],
    )
    .unwrap();
    assert!(subject.contains("signing"), "{subject}");
}

#[test]
fn busybox_build_and_sign() {
    let dir = tempfile::tempdir().unwrap();
    let fx = busybox_guestos(dir.path(), "busybox", 1, &[]);
    assert_eq!(fx.conf, fx.store.join("busybox-1.conf"));
    let config = load(&fx.conf);
    assert_eq!(config.name, "busybox");
    assert_eq!(config.version, 1);
    assert_eq!(config.hardware, "x86");
    assert_eq!(config.init_path.as_deref(), Some("/bin/sh"));
    assert_eq!(config.init_param, ["-c", fixture::INIT_SCRIPT]);
    assert_eq!(config.feature_notify_ready, None);
    assert_eq!(config.description.en, "busybox 1");

    let root = &config.mounts[0];
    assert_eq!(
        (root.mount_point.as_str(), root.fs_type.as_str()),
        ("/", "squashfs")
    );
    assert_eq!(root.mount_type, guest_os_mount::Type::Shared as i32);
    let image = fx.image();
    assert_eq!(image, fx.store.join("operatingsystems/x86/busybox-1/root.img"));
    assert_eq!(root.image_size, Some(fs::metadata(&image).unwrap().len()));
    assert_eq!(
        root.image_sha2_256.as_deref(),
        Some(crypto::sha256_file(&image).unwrap().as_str())
    );
    let data = &config.mounts[1];
    assert_eq!(
        (data.mount_point.as_str(), data.fs_type.as_str()),
        ("/data", "tmpfs")
    );
    assert_eq!(data.mount_type, guest_os_mount::Type::Empty as i32);
    assert_eq!(data.def_size, Some(16));

    let listing = tool_output("unsquashfs", &["-l", image.to_str().unwrap()]);
    for path in [
        "/data",
        "/proc",
        "/sys",
        "/dev",
        "/run",
        "/tmp",
        "/bin/busybox",
        "/bin/sh",
    ] {
        assert!(
            listing.lines().any(|l| l == format!("squashfs-root{path}")),
            "{path} missing in\n{listing}"
        );
    }
    // The source tree was not modified.
    assert!(!fx.dir.join("rootfs-busybox-1/data").exists());

    // The signature verifies against the root CA alone.
    let ca = crypto::parse_ca_cert(&fs::read(&fx.root_ca).unwrap()).unwrap();
    crypto::verify_signature(
        &fs::read(&fx.conf).unwrap(),
        &fs::read(&fx.sig).unwrap(),
        &fs::read(&fx.cert).unwrap(),
        &[ca],
    )
    .unwrap();

    // A second version shares the store and the PKI.
    let fx2 = busybox_guestos(dir.path(), "busybox", 2, &["--notify", "--data-size", "32"]);
    assert_eq!(
        (fx2.store.as_path(), fx2.pki.as_path()),
        (fx.store.as_path(), fx.pki.as_path())
    );
    let config2 = load(&fx2.conf);
    assert_eq!(config2.feature_notify_ready, Some(true));
    assert_eq!(config2.mounts[1].def_size, Some(32));
    assert!(fx.conf.exists() && fx.image().exists());
}

#[test]
fn build_options() {
    let dir = tempfile::tempdir().unwrap();
    let fx = busybox_guestos(
        dir.path(),
        "opts",
        3,
        &[
            "--root-type",
            "shared_rw",
            "--data-fs",
            "ext4",
            "--update-base-url",
            "http://127.0.0.1:9/store",
            "--description",
            "options test",
        ],
    );
    let c = load(&fx.conf);
    assert_eq!(c.mounts[0].mount_type, guest_os_mount::Type::SharedRw as i32);
    assert_eq!(c.mounts[1].fs_type, "ext4");
    assert_eq!(c.update_base_url.as_deref(), Some("http://127.0.0.1:9/store"));
    assert_eq!(c.description.en, "options test");
}

#[test]
fn ext4_root() {
    let dir = tempfile::tempdir().unwrap();
    let fx = busybox_guestos(dir.path(), "ext", 1, &["--root-fs", "ext4"]);
    let c = load(&fx.conf);
    assert_eq!(c.mounts[0].fs_type, "ext4");
    let image = fx.image();
    assert_eq!(c.mounts[0].image_size, Some(fs::metadata(&image).unwrap().len()));
    let listing = tool_output("debugfs", &["-R", "ls /", image.to_str().unwrap()]);
    for name in ["data", "bin", "proc", "sys", "dev", "run", "tmp"] {
        assert!(
            listing.split_whitespace().any(|w| w == name),
            "{name} missing in\n{listing}"
        );
    }
    let bin = tool_output("debugfs", &["-R", "ls /bin", image.to_str().unwrap()]);
    assert!(bin.contains("busybox"), "{bin}");
    // No staging copy is left behind.
    let leftovers: Vec<_> = fs::read_dir(image.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["root.img"]);
}

#[test]
fn sign_with_foreign_key_fails() {
    let dir = tempfile::tempdir().unwrap();
    let pki = fixture::pki(dir.path());
    let file = dir.path().join("f");
    fs::write(&file, b"x").unwrap();
    let out = tool(&[
        "sign",
        file.to_str().unwrap(),
        "--key",
        pki.join("root-ca.key").to_str().unwrap(),
        "--cert",
        pki.join("signing.cert").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("key does not match certificate"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("f.sig").exists());

    // --out writes elsewhere.
    let other = dir.path().join("other.sig");
    let out = tool(&[
        "sign",
        file.to_str().unwrap(),
        "--key",
        pki.join("signing.key").to_str().unwrap(),
        "--cert",
        pki.join("signing.cert").to_str().unwrap(),
        "--out",
        other.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(other.exists());
}

#[test]
fn bad_arguments_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    fixture::busybox_rootfs(&rootfs);
    let out_dir = dir.path().join("out");
    let build = |extra: &[&str]| {
        let mut args = vec![
            "build",
            "--rootfs",
            rootfs.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        tool(&args)
    };
    for (extra, msg) in [
        (&["--name", "../x", "--version", "1"][..], "invalid name"),
        (&["--name", "", "--version", "1"][..], "invalid name"),
        (&["--name", "ok", "--version", "0"][..], "invalid version"),
        (
            &["--name", "ok", "--version", "1", "--hardware", "../x86"][..],
            "invalid hardware",
        ),
    ] {
        let out = build(extra);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(msg), "{extra:?}: {}", stderr(&out));
    }
    // Usage errors exit with 2.
    let out = build(&["--name", "ok", "--version", "1", "--root-type", "bogus"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!out_dir.exists(), "nothing may be written for refused builds");
}

fn http_get(url: &str, path: &str) -> (String, Vec<u8>) {
    let addr = url.strip_prefix("http://").unwrap();
    let mut conn = TcpStream::connect(addr).unwrap();
    write!(conn, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = Vec::new();
    conn.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(response[..split].to_vec()).unwrap();
    (head, response[split + 4..].to_vec())
}

#[test]
fn http_store_serves_and_truncates() {
    let dir = tempfile::tempdir().unwrap();
    let content: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("a/b")).unwrap();
    fs::write(root.join("a/b/f.img"), &content).unwrap();
    fs::write(dir.path().join("outside"), b"secret").unwrap();

    let server = HttpStore::serve(&root);
    let (head, body) = http_get(&server.url, "/a/b/f.img");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Content-Length: 100000"), "{head}");
    assert_eq!(body, content);
    let (head, _) = http_get(&server.url, "/a/missing");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (head, _) = http_get(&server.url, "/a");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (head, _) = http_get(&server.url, "/../outside");
    assert!(!head.starts_with("HTTP/1.1 200"), "{head}");
    let (head, _) = http_get(&server.url, "/a/%2e%2e/../outside");
    assert!(!head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(server.requests()[0], "GET /a/b/f.img");
    drop(server);

    let server = HttpStore::serve_truncating(&root, 1000);
    let (head, body) = http_get(&server.url, "/a/b/f.img");
    assert!(head.contains("Content-Length: 100000"), "{head}");
    assert_eq!(body, &content[..1000]);
    // Dropping the server joins its thread, which owns the listener. (Connecting to its port
    // afterwards proves nothing: a test running in parallel may have been given the same port.)
    drop(server);
}

// ---- cml-guestos build --rootfs-tar ----------------------------------------------------------

/// A tar archive written header by header. Names and link targets go into the header as raw
/// bytes: the tar crate's own setters refuse `..` and absolute names, which the hostile archives
/// need.
struct RawTar(tar::Builder<Vec<u8>>);

/// One entry of a [`RawTar`].
struct Ent<'a> {
    kind: tar::EntryType,
    name: &'a str,
    mode: u32,
    owner: (u64, u64),
    mtime: u64,
    data: &'a [u8],
    link: &'a str,
    dev: (u32, u32),
    xattrs: &'a [(&'a str, &'a [u8])],
}

impl<'a> Ent<'a> {
    fn new(kind: tar::EntryType, name: &'a str) -> Self {
        let mode = if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        };
        Ent {
            kind,
            name,
            mode,
            owner: (0, 0),
            mtime: 1_600_000_000,
            data: b"",
            link: "",
            dev: (0, 0),
            xattrs: &[],
        }
    }
    fn dir(name: &'a str) -> Self {
        Self::new(tar::EntryType::Directory, name)
    }
    fn file(name: &'a str, data: &'a [u8]) -> Self {
        Ent {
            data,
            ..Self::new(tar::EntryType::Regular, name)
        }
    }
    fn symlink(name: &'a str, target: &'a str) -> Self {
        Ent {
            link: target,
            mode: 0o777,
            ..Self::new(tar::EntryType::Symlink, name)
        }
    }
    fn hardlink(name: &'a str, target: &'a str) -> Self {
        Ent {
            link: target,
            ..Self::new(tar::EntryType::Link, name)
        }
    }
}

/// One PAX record: "<length> <key>=<value>\n", the length counting itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    assert_eq!(r.len(), len);
    r
}

impl RawTar {
    fn new() -> Self {
        RawTar(tar::Builder::new(Vec::new()))
    }

    fn header(kind: tar::EntryType, name: &str, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        let field = &mut h.as_old_mut().name;
        assert!(name.len() < field.len(), "{name}");
        field[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(kind);
        h.set_size(size);
        h
    }

    fn add(mut self, e: Ent<'_>) -> Self {
        if !e.xattrs.is_empty() {
            let records: Vec<u8> = e
                .xattrs
                .iter()
                .flat_map(|(k, v)| pax_record(&format!("SCHILY.xattr.{k}"), v))
                .collect();
            let mut h = Self::header(tar::EntryType::XHeader, "PaxHeaders/x", records.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            self.0.append(&h, records.as_slice()).unwrap();
        }
        let mut h = Self::header(e.kind, e.name, e.data.len() as u64);
        h.set_mode(e.mode);
        h.set_uid(e.owner.0);
        h.set_gid(e.owner.1);
        h.set_mtime(e.mtime);
        if !e.link.is_empty() {
            let field = &mut h.as_old_mut().linkname;
            field[..e.link.len()].copy_from_slice(e.link.as_bytes());
        }
        h.set_device_major(e.dev.0).unwrap();
        h.set_device_minor(e.dev.1).unwrap();
        h.set_cksum();
        self.0.append(&h, e.data).unwrap();
        self
    }

    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// `security.capability` for cap_net_raw+ep (VFS_CAP_REVISION_2, little endian).
const CAP_NET_RAW_EP: &[u8] = &[1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// A root file system with everything an import must keep.
fn feature_tar() -> Vec<u8> {
    RawTar::new()
        .add(Ent::dir("./"))
        .add(Ent::dir("./bin/"))
        .add(Ent {
            mode: 0o4755,
            owner: (1234, 5678),
            mtime: 1_000_000_000,
            xattrs: &[
                ("user.cml.test", b"hello"),
                ("security.capability", CAP_NET_RAW_EP),
            ],
            ..Ent::file("./bin/ping", b"not really ping\n")
        })
        .add(Ent::hardlink("./bin/ping6", "./bin/ping"))
        .add(Ent::symlink("./bin/sh", "busybox"))
        .add(Ent::file("./bin/busybox", b"#!\n"))
        .add(Ent {
            mtime: 1_234_567_890,
            ..Ent::dir("./etc/")
        })
        .add(Ent::symlink("./etc/mtab", "/proc/self/mounts"))
        .add(Ent {
            mode: 0o600,
            ..Ent::new(tar::EntryType::Fifo, "./etc/initctl")
        })
        .add(Ent::dir("./dev/"))
        .add(Ent {
            mode: 0o666,
            dev: (1, 3),
            ..Ent::new(tar::EntryType::Char, "./dev/null")
        })
        .add(Ent {
            mode: 0o660,
            owner: (0, 6),
            dev: (7, 9),
            ..Ent::new(tar::EntryType::Block, "./dev/loop9")
        })
        .bytes()
}

/// A read-only loop mount of an image, undone on drop.
struct Mounted(tempfile::TempDir);

impl Mounted {
    fn new(image: &Path, fs_type: &str) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", fs_type, "-o", "loop,ro"])
            .arg(image)
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount {}: {}",
            image.display(),
            stderr(&out)
        );
        Mounted(dir)
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.0.path().join(rel)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

fn build_from_tar(archive: &Path, out: &Path, name: &str, extra: &[&str]) -> Output {
    let mut args = vec!["build", "--rootfs-tar", archive.to_str().unwrap(), "--name", name];
    args.extend([
        "--version",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--init",
        "/bin/sh",
    ]);
    args.extend(extra);
    tool(&args)
}

/// Every property of [`feature_tar`] as the image shows it.
fn check_imported(root: &Mounted) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let ping = fs::symlink_metadata(root.path("bin/ping")).unwrap();
    assert_eq!((ping.uid(), ping.gid()), (1234, 5678));
    assert_eq!(ping.mode() & 0o7777, 0o4755, "setuid kept");
    assert_eq!(ping.mtime(), 1_000_000_000);
    assert_eq!(fs::read(root.path("bin/ping")).unwrap(), b"not really ping\n");
    let xattr = |rel: &str, name: &str| cml::sys::xattr::get_nofollow(&root.path(rel), name).unwrap();
    assert_eq!(xattr("bin/ping", "user.cml.test").as_deref(), Some(&b"hello"[..]));
    assert_eq!(
        xattr("bin/ping", "security.capability").as_deref(),
        Some(CAP_NET_RAW_EP)
    );
    let ping6 = fs::symlink_metadata(root.path("bin/ping6")).unwrap();
    assert_eq!((ping6.ino(), ping6.nlink()), (ping.ino(), 2), "a hard link");
    assert_eq!(fs::read_link(root.path("bin/sh")).unwrap(), Path::new("busybox"));
    assert_eq!(
        fs::read_link(root.path("etc/mtab")).unwrap(),
        Path::new("/proc/self/mounts")
    );
    assert!(
        fs::symlink_metadata(root.path("etc/initctl"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let null = fs::symlink_metadata(root.path("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!((libc::major(null.rdev()), libc::minor(null.rdev())), (1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666);
    let lo = fs::symlink_metadata(root.path("dev/loop9")).unwrap();
    assert!(lo.file_type().is_block_device());
    assert_eq!(
        (libc::major(lo.rdev()), libc::minor(lo.rdev()), lo.gid()),
        (7, 9, 6)
    );
    // Directory times survive the entries created inside them.
    assert_eq!(fs::metadata(root.path("etc")).unwrap().mtime(), 1_234_567_890);
    // The mount points the GuestOS needs were added.
    for dir in ["proc", "sys", "dev", "run", "tmp", "data"] {
        assert!(root.path(dir).is_dir(), "{dir}");
    }
}

#[test]
fn rootfs_tar_keeps_owners_modes_xattrs_links_and_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let plain = feature_tar();
    let variants = [
        ("gz", flate2_gzip(&plain), "squashfs"),
        ("zst", zstd::encode_all(plain.as_slice(), 3).unwrap(), "squashfs"),
        ("tar", plain.clone(), "ext4"),
    ];
    for (ext, bytes, fs_type) in variants {
        // The file name says nothing: the compression is told by the content.
        let archive = dir.path().join(format!("rootfs-{ext}.img"));
        fs::write(&archive, &bytes).unwrap();
        let out_dir = dir.path().join(format!("out-{ext}"));
        let name = format!("imp{ext}");
        let out = build_from_tar(&archive, &out_dir, &name, &["--root-fs", fs_type]);
        assert!(out.status.success(), "{ext}: {}", stderr(&out));
        let image_dir = out_dir.join(format!("operatingsystems/x86/{name}-1"));
        let left: Vec<_> = fs::read_dir(&image_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec!["root.img"], "{ext}: the extracted tree is removed");
        let conf = load(&out_dir.join(format!("{name}-1.conf")));
        assert_eq!(conf.mounts[0].fs_type, fs_type);
        let mounted = Mounted::new(&image_dir.join("root.img"), fs_type);
        check_imported(&mounted);
    }
}

fn flate2_gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[test]
fn hostile_rootfs_tars_are_refused_and_write_nothing_outside() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let abs_canary = format!("{}/canary", outside.display());
    let out_dir = dir.path().join("out");
    // Where a `..` from the extraction directory (inside the image directory) would land.
    let image_dir = out_dir.join("operatingsystems/x86/h-1");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            RawTar::new().add(Ent::file("../canary", b"x")).bytes(),
            "\"../canary\"",
        ),
        (
            "absolute",
            RawTar::new().add(Ent::file(&abs_canary, b"x")).bytes(),
            "absolute",
        ),
        (
            "inner dotdot",
            RawTar::new()
                .add(Ent::dir("a/"))
                .add(Ent::file("a/../../canary", b"x"))
                .bytes(),
            "\"a/../../canary\"",
        ),
        (
            "write through a symlink",
            RawTar::new()
                .add(Ent::symlink("link", outside.to_str().unwrap()))
                .add(Ent::file("link/canary", b"x"))
                .bytes(),
            "\"link/canary\": refused: \"link\" is a symbolic link",
        ),
        (
            "hard link out",
            RawTar::new()
                .add(Ent::hardlink("passwd", "../../etc/passwd"))
                .bytes(),
            "hard link target \"../../etc/passwd\"",
        ),
        (
            "hard link through a symlink",
            RawTar::new()
                .add(Ent::symlink("etc", "/etc"))
                .add(Ent::hardlink("passwd", "etc/passwd"))
                .bytes(),
            "\"etc\" is a symbolic link",
        ),
        ("empty", Vec::new(), "no entries"),
        ("not a tar", b"name: \"x\"\n".repeat(100), "not a tar archive"),
        (
            "xz",
            [&[0xfd, b'7', b'z', b'X', b'Z', 0][..], &[0u8; 64]].concat(),
            "xz-compressed",
        ),
    ];
    let passwd = fs::read("/etc/passwd").unwrap();
    for (what, bytes, expect) in cases {
        let archive = dir.path().join("hostile.tar");
        fs::write(&archive, bytes).unwrap();
        let out = build_from_tar(&archive, &out_dir, "h", &[]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(&out));
        assert!(stderr(&out).contains(expect), "{what}: {}", stderr(&out));
        assert!(!outside.join("canary").exists(), "{what}");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "{what}");
        assert!(!image_dir.join("canary").exists(), "{what}");
        assert!(!out_dir.join("operatingsystems/canary").exists(), "{what}");
        // No image, no config, no extracted tree left.
        let left: Vec<_> = fs::read_dir(&image_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{what}: {left:?}");
        assert!(!out_dir.join("h-1.conf").exists(), "{what}");
    }
    assert_eq!(fs::read("/etc/passwd").unwrap(), passwd);

    // Neither of --rootfs and --rootfs-tar, or both: usage errors.
    let out = tool(&["build", "--name", "x", "--version", "1", "--out", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = tool(&[
        "build",
        "--rootfs",
        "/",
        "--rootfs-tar",
        "/x",
        "--name",
        "x",
        "--version",
        "1",
        "--out",
        "/o",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
