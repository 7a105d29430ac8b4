//! The Debian package as `scripts/package.sh --lintian` builds it from the release binaries (the
//! suite's `cargo build --release --bins`): lintian passes (no error or warning; the overridden
//! tags are explained in config/debian/lintian-overrides), and the package holds what a user's
//! system needs — binaries, man pages, completions, units, sysusers.d/tmpfiles.d entries,
//! conffiles, dependencies and the maintainer scripts that restart (not stop) cmld on upgrade.
//! Installing it on a real systemd host, restarting and upgrading it with containers running, is
//! the VM lab's `install` scenario (tests/vm.rs).

#![allow(clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `<target>/release`, where scripts/package.sh finds the binaries.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_cmld"))
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_path_buf()
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_package_is_lintian_clean_and_holds_what_a_system_needs() {
    let have_cargo_deb = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_cargo_deb {
        assert!(
            std::env::var_os("CI").is_none(),
            "cargo-deb is missing (scripts/setup.sh installs it)"
        );
        eprintln!("skipped: cargo-deb is missing (scripts/setup.sh installs it)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Its own copy: cargo-deb empties <target>/debian when it makes the next package (the VM
    // lab's test makes two in parallel with this one).
    let deb = output(
        Command::new(root().join("scripts/package.sh"))
            .arg("--lintian")
            .arg("--out")
            .arg(tmp.path().join("deb"))
            .env("CARGO_TARGET_DIR", target_dir()),
    );
    let deb = PathBuf::from(deb.trim());
    assert!(deb.ends_with("cml_0.1.0-1_amd64.deb"), "{}", deb.display());

    let fields = output(Command::new("dpkg-deb").arg("-f").arg(&deb));
    assert!(fields.contains("Package: cml\n"), "{fields}");
    let field = |name: &str| {
        fields
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(field("Depends").contains("e2fsprogs"), "{fields}");
    assert!(field("Depends").contains("libc6"), "{fields}");
    assert!(field("Recommends").contains("nftables"), "{fields}");
    assert!(field("Recommends").contains("squashfs-tools"), "{fields}");

    let files = output(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for path in [
        "./usr/sbin/cmld",
        "./usr/bin/control",
        "./usr/bin/cml-guestos",
        "./usr/bin/cml-web",
        "./usr/share/man/man8/cmld.8.gz",
        "./usr/share/man/man1/control.1.gz",
        "./usr/share/man/man1/cml-guestos.1.gz",
        "./usr/share/man/man1/cml-web.1.gz",
        "./usr/share/bash-completion/completions/control",
        "./usr/share/zsh/vendor-completions/_control",
        "./usr/share/fish/vendor_completions.d/control.fish",
        "./usr/lib/systemd/system/cmld.service",
        "./usr/lib/systemd/system/cmld.socket",
        "./usr/lib/systemd/system/cml-web.service",
        "./usr/lib/sysusers.d/cml.conf",
        "./usr/lib/tmpfiles.d/cmld.conf",
        "./etc/default/cmld",
        "./usr/share/doc/cml/copyright",
        "./usr/share/doc/cml/changelog.Debian.gz",
        "./usr/share/lintian/overrides/cml",
    ] {
        assert!(
            files.lines().any(|l| l.ends_with(&format!(" {path}"))),
            "{path} is not in the package:\n{files}"
        );
    }
    assert!(
        !files.contains("/var/lib/cml"),
        "the data directory is cmld's, not the package's"
    );

    let unpacked = tmp.path().join("root");
    let control = tmp.path().join("DEBIAN");
    output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked));
    output(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();

    // The binaries are stripped and run.
    let version = output(Command::new(unpacked.join("usr/sbin/cmld")).arg("--version"));
    assert!(version.starts_with("cmld 0.1.0"), "{version}");
    let file = output(Command::new("file").arg(unpacked.join("usr/bin/control")));
    assert!(
        file.contains("stripped") && !file.contains("not stripped"),
        "{file}"
    );

    // Conffiles: what a user edits.
    let conffiles = read(&control.join("conffiles"));
    assert!(conffiles.lines().any(|l| l == "/etc/default/cmld"), "{conffiles}");
    assert!(
        conffiles.lines().any(|l| l == "/etc/default/cml-web"),
        "{conffiles}"
    );

    // Maintainer scripts: the group before the units start; cmld restarted on upgrade (cmld keeps
    // its containers through a restart), stopped only on removal; purge keeps /var/lib/cml.
    let postinst = read(&control.join("postinst"));
    let sysusers = postinst
        .find("systemd-sysusers")
        .expect("postinst runs systemd-sysusers");
    let start = postinst
        .find("deb-systemd-invoke $_dh_action cmld")
        .expect(&postinst);
    assert!(sysusers < start, "{postinst}");
    assert!(postinst.contains("_dh_action=restart"), "{postinst}");
    let prerm = read(&control.join("prerm"));
    assert!(
        prerm.contains(
            r#"[ "$1" = remove ]; then
	deb-systemd-invoke stop cmld.service cmld.socket"#
        ),
        "prerm must stop cmld on removal only:\n{prerm}"
    );
    let postrm = read(&control.join("postrm"));
    assert!(
        !postrm
            .lines()
            .any(|l| l.trim_start().starts_with("rm -rf /var/lib/cml")),
        "{postrm}"
    );
    output(Command::new("sh").arg("-n").arg(control.join("postrm")));

    // The units: cmld is a notify service with a watchdog whose restart keeps the containers'
    // monitors (KillMode=process); the socket is the control socket, for the group cml-control.
    let service = read(&unpacked.join("usr/lib/systemd/system/cmld.service"));
    for line in [
        "Type=notify",
        "KillMode=process",
        "ExecStart=/usr/sbin/cmld $CMLD_OPTS",
    ] {
        assert!(service.lines().any(|l| l == line), "{line} missing:\n{service}");
    }
    assert!(
        service.lines().any(|l| l.starts_with("WatchdogSec=")),
        "{service}"
    );
    let socket = read(&unpacked.join("usr/lib/systemd/system/cmld.socket"));
    assert!(
        socket.contains("ListenStream=/run/socket/cml-control"),
        "{socket}"
    );
    assert!(socket.contains("SocketGroup=cml-control"), "{socket}");
    assert!(read(&unpacked.join("usr/lib/sysusers.d/cml.conf")).contains("g cml-control"));

    // Man pages and completions come from the clap definitions.
    let man = output(Command::new("zcat").arg(unpacked.join("usr/share/man/man1/control.1.gz")));
    assert!(man.contains(".TH control 1"), "{}", &man[..man.len().min(300)]);
    assert!(man.contains("start"), "the subcommands are listed");
    let man8 = output(Command::new("zcat").arg(unpacked.join("usr/share/man/man8/cmld.8.gz")));
    assert!(
        man8.contains(".TH cmld 8") && man8.contains("cgroup\\-parent"),
        "{man8}"
    );
    let completion = unpacked.join("usr/share/bash-completion/completions/control");
    let loaded = output(
        Command::new("bash")
            .arg("-c")
            .arg(format!("source {}; complete -p control", completion.display())),
    );
    assert!(loaded.contains("control"), "{loaded}");
}
