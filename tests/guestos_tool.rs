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
    let url = server.url.clone();
    drop(server);
    // Stopped: nothing listens any more.
    assert!(TcpStream::connect(url.strip_prefix("http://").unwrap()).is_err());
}
