//! Device provisioning end to end (SPEC §9): the device identity, CSR and certificate, the
//! provisioned-mode allowlist over the whole command enum (raw frames, as any client would send
//! them), and the device commands `reboot` (hosted mode) and `wipe_device`.

#![allow(clippy::unwrap_used)]

mod common;

use std::{fs, path::Path};

use cml::protocol::pb::{
    ContainerStartParams, ControllerToDaemon, controller_to_daemon::Command as Cmd,
    daemon_to_controller::Response,
};
use common::Daemon;
use openssl::{
    asn1::Asn1Time,
    bn::BigNum,
    ec::{EcGroup, EcKey},
    hash::MessageDigest,
    nid::Nid,
    pkey::{PKey, Private, Public},
    x509::{X509, X509NameBuilder, X509Req},
};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ec_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

/// A certificate for `subject_key`, `CN=cn`, issued by `issuer` (cert, key) or self-signed-ish by
/// `issuer_key` alone.
fn issue(subject_key: &PKey<Public>, cn: &str, issuer: Option<&X509>, issuer_key: &PKey<Private>) -> Vec<u8> {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(7).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(issuer.map_or(&name, |i| i.subject_name()))
        .unwrap();
    b.set_pubkey(subject_key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap()).unwrap();
    b.sign(issuer_key, MessageDigest::sha256()).unwrap();
    b.build().to_pem().unwrap()
}

fn public(key: &PKey<Private>) -> PKey<Public> {
    PKey::public_key_from_pem(&key.public_key_to_pem().unwrap()).unwrap()
}

#[test]
fn csr_matches_the_device_key_and_only_a_matching_certificate_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let f = common::fixture::busybox_guestos(tmp.path(), "busybox", 1, &[]);
    let d = common::dev_daemon(&f.store_url());
    let csr_file = d.dir.path().join("device.csr");
    d.ok(&["pull_csr", csr_file.to_str().unwrap()]);
    let csr = X509Req::from_pem(&fs::read(&csr_file).unwrap()).unwrap();
    let csr_key = csr.public_key().unwrap();
    assert!(csr.verify(&csr_key).unwrap(), "the CSR is signed by its own key");
    let device_uuid = fs::read_to_string(d.data.join("tokens/device-id.uuid")).unwrap();
    let cn = csr
        .subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .unwrap()
        .data()
        .to_string()
        .unwrap();
    assert_eq!(cn, device_uuid.trim());
    let device_key =
        PKey::private_key_from_pem(&fs::read(d.data.join("tokens/device-id.key")).unwrap()).unwrap();
    assert!(csr_key.public_eq(&device_key), "the CSR is for the device key");

    let ca_key = PKey::private_key_from_pem(&fs::read(f.pki.join("root-ca.key")).unwrap()).unwrap();
    let ca = X509::from_pem(&fs::read(&f.root_ca).unwrap()).unwrap();
    let stored = d.data.join("tokens/device.cert");
    let push = |pem: &[u8]| {
        let file = d.dir.path().join("device.cert.pem");
        fs::write(&file, pem).unwrap();
        d.control(&["push_cert", file.to_str().unwrap()])
    };
    // A certificate for another key: refused, nothing stored.
    let other = issue(&public(&ec_key()), &cn, Some(&ca), &ca_key);
    let out = push(&other);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not the device key"), "{}", stderr(&out));
    assert!(!stored.exists());
    // With a CA registered, a matching certificate from another CA is refused too.
    d.ok(&["ca_register", f.root_ca.to_str().unwrap()]);
    let rogue_key = ec_key();
    let rogue = issue(&csr_key, &cn, None, &rogue_key);
    let out = push(&rogue);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not verify"), "{}", stderr(&out));
    assert!(!stored.exists());
    // The matching certificate from the registered CA is stored.
    let good = issue(&csr_key, &cn, Some(&ca), &ca_key);
    d.ok(&[
        "push_cert",
        {
            let file = d.dir.path().join("good.pem");
            fs::write(&file, &good).unwrap();
            file
        }
        .to_str()
        .unwrap(),
    ]);
    assert_eq!(fs::read(&stored).unwrap(), good);
}

/// A request for `cmd` with everything it may need: the container `uuid`, start parameters, a
/// config text (`conf`), a certificate, interface parameters, exec arguments.
fn full_request(cmd: Cmd, uuid: &str, conf: &str) -> ControllerToDaemon {
    ControllerToDaemon {
        command: cmd as i32,
        container_uuids: vec![uuid.to_owned()],
        container_start_params: Some(ContainerStartParams::default()),
        container_config_file: Some(conf.as_bytes().to_vec()),
        device_cert: Some(b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".to_vec()),
        assign_iface_params: Some(cml::protocol::pb::AssignInterfaceParams {
            iface_name: Some("nosuchif0".into()),
            persistent: Some(false),
        }),
        exec_command: Some("true".into()),
        exec_args: vec!["true".into()],
        exec_pty: Some(false),
        guestos_name: Some("nosuch".into()),
        ..Default::default()
    }
}

/// Sends every command of the wire enum to a provisioned daemon: those outside the allowlist get
/// CMD_UNSUPPORTED with a reason; the allowed ones do not.
fn check_allowlist(d: &Daemon, uuid: &str) {
    let allowed = [
        Cmd::ListContainers,
        Cmd::GetContainerStatus,
        Cmd::ContainerChangeTokenPin,
        Cmd::CreateContainer,
        Cmd::ContainerStart,
        Cmd::ContainerStop,
        Cmd::ContainerUpdateConfig,
        Cmd::ContainerCmldHandlesPin,
        Cmd::GetProvisioned,
    ];
    let mut c = d.connect();
    let mut seen = 0;
    for cmd in (0..2000).filter_map(|i| Cmd::try_from(i).ok()) {
        seen += 1;
        // update_config keeps the name; create makes another container.
        let name = if cmd == Cmd::ContainerUpdateConfig {
            "keep".to_owned()
        } else {
            format!("n{}", cmd as i32)
        };
        let conf = common::container_conf(&name);
        let r = c.call(&full_request(cmd, uuid, &conf));
        let unsupported = r.response == Some(Response::CmdUnsupported as i32);
        if allowed.contains(&cmd) {
            assert!(!unsupported, "{cmd:?} must stay allowed: {r:?}");
        } else {
            assert!(unsupported, "{cmd:?} must be refused once provisioned: {r:?}");
            assert!(
                r.error_message
                    .as_deref()
                    .is_some_and(|m| m.contains("provisioned")),
                "{cmd:?}: {r:?}"
            );
        }
    }
    assert!(seen >= 40, "the whole enum was sent ({seen} commands)");
}

#[test]
fn once_provisioned_only_the_allowlist_is_served_also_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = common::busybox_daemon(tmp.path(), &[]);
    let uuid = d.create_container("keep", "");
    assert_eq!(d.ok(&["get_provisioned"]), "false\n");
    d.ok(&["set_provisioned"]);
    assert_eq!(d.ok(&["get_provisioned"]), "true\n");
    assert!(d.data.join("provisioned").is_file());
    check_allowlist(&d, &uuid);
    // The allowed commands work through control; the others are refused.
    let csr = d.dir.path().join("late.csr");
    let out = d.control(&["pull_csr", csr.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "no CSR once provisioned");
    assert!(!csr.exists());
    let working = |d: &Daemon, w: &str| {
        d.create_container(w, "");
        d.ok(&["start", w]);
        assert!(d.ok(&["list"]).contains("RUNNING"));
        assert_eq!(d.ok(&["state", w]), "RUNNING\n");
        d.ok(&["stop", w]);
        let conf = d.file(
            &format!("{w}2.conf"),
            &common::container_conf(w).replace("NONE", "NONE\nram_limit: 64"),
        );
        d.ok(&["update_config", w, &conf]);
        let out = d.control(&["config", w]);
        assert!(
            !out.status.success() && stderr(&out).contains("provisioned"),
            "{}",
            stderr(&out)
        );
    };
    working(&d, "w1");
    let refused = |d: &Daemon| {
        let out = d.control(&["remove_guestos", "busybox"]);
        assert!(
            !out.status.success() && stderr(&out).contains("provisioned"),
            "{}",
            stderr(&out)
        );
    };
    refused(&d);
    let out = d.control_stdin(&["change_pin", "keep"], "trustme\nfresh-pin\nfresh-pin\n");
    assert!(out.status.success(), "{}", stderr(&out));
    d.terminate(nix::sys::signal::Signal::SIGTERM);
    let d = d.restart();
    assert_eq!(d.ok(&["get_provisioned"]), "true\n");
    check_allowlist(&d, &uuid);
    refused(&d);
    working(&d, "w2");
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap()
}

#[test]
fn reboot_in_hosted_mode_keeps_the_host_and_restarts_autostart_containers() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &[]);
    d.create_container("auto", "allow_autostart: true\n");
    d.create_container("manual", "");
    d.ok(&["start", "auto"]);
    d.ok(&["start", "manual"]);
    let before = (boot_id(), d.status("auto")["pid"].as_i64().unwrap());
    d.ok(&["reboot"]);
    assert_eq!(boot_id(), before.0, "the host was not rebooted");
    // device_stats: the data dir's file system and memory, in bytes.
    let stats: serde_json::Value = serde_json::from_str(&d.ok(&["--json", "device_stats"])).unwrap();
    let n = |k: &str| {
        stats[k]
            .as_str()
            .map_or_else(|| stats[k].as_u64().unwrap(), |s| s.parse().unwrap())
    };
    assert!(
        n("mem_total") > n("mem_available") && n("mem_available") > 0,
        "{stats}"
    );
    assert!(
        n("disk_containers") >= n("disk_containers_free") && n("disk_containers_used") > 0,
        "{stats}"
    );
    assert_eq!(d.ok(&["state", "manual"]), "STOPPED\n");
    common::poll::wait_for("auto to come back", || d.ok(&["state", "auto"]) == "RUNNING\n");
    assert_ne!(d.status("auto")["pid"].as_i64().unwrap(), before.1, "a new run");
    d.ok(&["stop", "auto"]);
}

#[test]
fn wipe_device_removes_every_container_and_keeps_guestos_cas_certificate_and_token() {
    let tmp = tempfile::tempdir().unwrap();
    let f = common::fixture::busybox_guestos(tmp.path(), "busybox", 1, &[]);
    let d = common::dev_daemon(&f.store_url());
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    d.ok(&["ca_register", &s(&f.root_ca)]);
    d.ok(&["push_guestos_config", &s(&f.conf), &s(&f.sig), &s(&f.cert)]);
    // A device certificate, as provisioning would leave it.
    let csr_file = d.dir.path().join("d.csr");
    d.ok(&["pull_csr", &s(&csr_file)]);
    let csr_key = X509Req::from_pem(&fs::read(&csr_file).unwrap())
        .unwrap()
        .public_key()
        .unwrap();
    let ca_key = PKey::private_key_from_pem(&fs::read(f.pki.join("root-ca.key")).unwrap()).unwrap();
    let ca = X509::from_pem(&fs::read(&f.root_ca).unwrap()).unwrap();
    let cert = d.file(
        "dev.pem",
        &String::from_utf8(issue(&csr_key, "dev", Some(&ca), &ca_key)).unwrap(),
    );
    d.ok(&["push_cert", &cert]);
    let a = d.create_container("a", "");
    d.create_container("b", "");
    d.ok(&["start", "a"]);
    let token = fs::read(d.data.join("tokens/device.p12")).unwrap();
    d.ok(&["wipe_device"]);
    assert_eq!(
        d.ok(&["list"]).lines().count(),
        1,
        "only the header: {}",
        d.ok(&["list"])
    );
    assert!(!d.data.join(format!("containers/{a}.conf")).exists());
    assert!(!d.data.join(format!("containers/{a}")).exists());
    assert!(d.ok(&["list_guestos"]).contains("busybox"));
    assert_eq!(
        fs::read_dir(d.data.join("tokens/ca")).unwrap().count(),
        1,
        "the CA stays"
    );
    assert!(d.data.join("tokens/device.cert").is_file());
    assert_eq!(fs::read(d.data.join("tokens/device.p12")).unwrap(), token);
    // The device still works.
    d.create_container("c", "");
    d.ok(&["start", "c"]);
    d.ok(&["stop", "c"]);
}
