//! The real `control` binary against a real cmld: the config lifecycle, name resolution, the output
//! contract and exit codes.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{CONTROL, Daemon, container_conf};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[test]
fn config_lifecycle_create_list_state_config_update_reload_remove() {
    let d = Daemon::start();
    let f = d.file("web.conf", &container_conf("web"));
    let out = d.ok(&["create", &f]);
    assert!(
        out.contains("name: \"web\"") && out.contains("token_type: NONE"),
        "{out}"
    );
    let uuid = json(&d.ok(&["--json", "list"]))["containers"][0]["uuid"]
        .as_str()
        .unwrap()
        .to_owned();

    // list: a header and exactly one line per container.
    let list = d.ok(&["list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    assert!(lines[0].starts_with("NAME"));
    let cols: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(cols, vec!["web", uuid.as_str(), "STOPPED", "busybox", "-"]);

    assert_eq!(d.ok(&["state", "web"]), "STOPPED\n");
    assert_eq!(d.ok(&["state", &uuid]), "STOPPED\n");
    let st = json(&d.ok(&["state", "web", "--json"]));
    assert_eq!(
        (st["token_type"].as_str(), st["pid"].as_i64()),
        (Some("NONE"), Some(0))
    );
    assert_eq!(st["update_pending"].as_bool(), Some(false));

    let config = d.ok(&["config", "web"]);
    assert!(
        config.starts_with("name: \"web\"\nguest_os: \"busybox\"\n"),
        "{config}"
    );

    // update_config: the stored config changes (a stopped container takes it at once).
    let f2 = d.file(
        "web2.conf",
        &container_conf("web").replace("color: 4278190335", "color: 7\nram_limit: 64"),
    );
    let out = d.ok(&["update_config", "web", &f2]);
    assert!(out.contains("ram_limit: 64"), "{out}");
    assert!(d.ok(&["config", &uuid]).contains("ram_limit: 64"));
    let on_disk = fs::read_to_string(d.data.join(format!("containers/{uuid}.conf"))).unwrap();
    assert!(on_disk.contains("ram_limit: 64"), "{on_disk}");

    // reload: a file edited on disk is taken by the stopped container.
    fs::write(
        d.data.join(format!("containers/{uuid}.conf")),
        container_conf("renamed"),
    )
    .unwrap();
    d.ok(&["reload"]);
    assert_eq!(d.ok(&["state", "renamed"]), "STOPPED\n");

    d.ok(&["remove", "renamed"]);
    assert_eq!(d.ok(&["list"]).lines().count(), 1);
    let left: Vec<_> = fs::read_dir(d.data.join("containers")).unwrap().collect();
    assert!(left.is_empty(), "files left after remove: {left:?}");
    let gone = d.control(&["state", &uuid]);
    assert_eq!(gone.status.code(), Some(1));
}

#[test]
fn names_resolve_to_the_first_match_and_a_uuid_wins() {
    let d = Daemon::start();
    let first = d.create("dup");
    let second = d.create("dup");
    assert_ne!(first, second);
    let resolved = json(&d.ok(&["--json", "config", "dup"]));
    assert_eq!(resolved["uuid"].as_str(), Some(first.as_str()));
    assert_eq!(
        json(&d.ok(&["--json", "config", &second]))["uuid"].as_str(),
        Some(second.as_str())
    );

    // A container NAMED like another's UUID: the UUID wins for that string.
    let named_like_uuid = d.create(&first);
    let r = json(&d.ok(&["--json", "config", &first]));
    assert_eq!(r["uuid"].as_str(), Some(first.as_str()));
    assert_ne!(r["uuid"].as_str(), Some(named_like_uuid.as_str()));
    // Upper-case UUIDs resolve too.
    let r = json(&d.ok(&["--json", "config", &second.to_uppercase()]));
    assert_eq!(r["uuid"].as_str(), Some(second.as_str()));

    // Creation order (and so name resolution) survives a daemon restart.
    let mut d = d;
    d.kill9();
    let d = d.restart();
    let list = json(&d.ok(&["--json", "list"]));
    let order: Vec<&str> = list["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["uuid"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        vec![first.as_str(), second.as_str(), named_like_uuid.as_str()]
    );
    assert_eq!(
        json(&d.ok(&["--json", "config", "dup"]))["uuid"].as_str(),
        Some(first.as_str())
    );
}

#[test]
fn bad_configs_are_refused_with_position_and_lose_nothing() {
    let d = Daemon::start();
    let bad = d.file("bad.conf", "name: \"x\"\nguest_os: \"busybox\"\n  colour: 3\n");
    let out = d.control(&["create", &bad]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("3:3") && stderr(&out).contains("colour"),
        "{}",
        stderr(&out)
    );

    // name and guest_os stay required (color does not: see the next test).
    for (text, field) in [
        ("guest_os: \"busybox\"\ncolor: 1\n", "'name'"),
        ("name: \"x\"\ncolor: 1\n", "'guest_os'"),
    ] {
        let missing = d.file("missing.conf", text);
        let out = d.control(&["create", &missing]);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(
            stderr(&out).contains(field) && stderr(&out).contains("missing required"),
            "{}",
            stderr(&out)
        );
    }

    let wrong_type = d.file(
        "type.conf",
        "name: \"x\"\nguest_os: \"busybox\"\ncolor: \"red\"\n",
    );
    let out = d.control(&["create", &wrong_type]);
    assert!(
        stderr(&out).contains("3:8") && stderr(&out).contains("'color'"),
        "{}",
        stderr(&out)
    );

    let no_os = d.file("noos.conf", "name: \"x\"\nguest_os: \"nonesuch\"\ncolor: 1\n");
    let out = d.control(&["create", &no_os]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not installed"), "{}", stderr(&out));
    assert!(d.ok(&["list"]).lines().count() == 1, "nothing was created");

    // A bad update leaves the stored config as it was.
    let uuid = d.create("keep");
    let before = fs::read(d.data.join(format!("containers/{uuid}.conf"))).unwrap();
    let out = d.control(&["update_config", "keep", &bad]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        fs::read(d.data.join(format!("containers/{uuid}.conf"))).unwrap(),
        before
    );

    // reload reports a broken file with its error, and still loads the good ones.
    fs::write(
        d.data
            .join("containers/00000000-0000-4000-8000-00000000abcd.conf"),
        "name: \n",
    )
    .unwrap();
    fs::write(
        d.data
            .join("containers/00000000-0000-4000-8000-00000000abce.conf"),
        container_conf("dropped-in"),
    )
    .unwrap();
    let out = d.control(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("abcd.conf") && stderr(&out).contains("2:1"),
        "{}",
        stderr(&out)
    );
    assert_eq!(d.ok(&["state", "dropped-in"]), "STOPPED\n");

    // Unreadable input file: refused on its merits.
    let out = d.control(&["create", "/nonexistent/file.conf"]);
    assert_eq!(out.status.code(), Some(1));
}

/// Upstream's shipped configs have no `color` (SPEC §3): created as color 0, with a warning on
/// stderr and exit status 0; update_config warns the same way.
#[test]
fn a_config_without_color_is_color_0_with_a_warning() {
    let d = Daemon::start();
    let text = "name: \"nocolor\"\nguest_os: \"busybox\"\ntoken_type: NONE\n";
    let f = d.file("nocolor.conf", text);
    let out = d.control(&["create", &f]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("control: warning: the config has no color; using 0"),
        "{}",
        stderr(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("color: 0\n"));
    let stored = d.ok(&["config", "nocolor"]);
    assert!(stored.contains("\ncolor: 0\n"), "{stored}");
    assert_eq!(d.ok(&["state", "nocolor"]).trim(), "STOPPED");
    // The stored file carries color explicitly: it loads without a warning after a restart.
    let uuid = json(&d.ok(&["--json", "config", "nocolor"]))["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let file = fs::read_to_string(d.data.join(format!("containers/{uuid}.conf"))).unwrap();
    assert!(file.contains("color: 0\n"), "{file}");

    // --json carries the warning too, stdout stays one JSON document.
    let out = d.control(&["--json", "update_config", "nocolor", &f]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("has no color"), "{}", stderr(&out));
    let v = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(v["warning"], "the config has no color; using 0");

    // With a color there is no warning.
    let out = d.control(&[
        "update_config",
        "nocolor",
        &d.file("c.conf", &container_conf("nocolor")),
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

#[test]
fn exit_codes_and_output_modes() {
    let d = Daemon::start();
    d.create("m");
    // Cannot connect: 3.
    let out = Command::new(CONTROL)
        .args(["-s", "/nonexistent/sock", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    // Usage errors: 2.
    assert_eq!(d.control(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(d.control(&["start"]).status.code(), Some(2));
    assert_eq!(d.control(&["start", "m", "--key", "1234"]).status.code(), Some(2));
    // Daemon refusals: 1, with the daemon's reason on stderr.
    let out = d.control(&["freeze", "m"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("STOPPED"), "{}", stderr(&out));
    let out = d.control(&["push_cert", "/dev/null"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no certificate"), "{}", stderr(&out));
    // Command words are case-insensitive; --json before or after the command word.
    assert_eq!(d.ok(&["STATE", "m"]), "STOPPED\n");
    json(&d.ok(&["--json", "list"]));
    json(&d.ok(&["list", "--json"]));
    json(&d.ok(&["list_guestos", "--json"]));
    assert_eq!(d.ok(&["get_provisioned"]), "false\n");
    let proto = d.ok(&["--proto", "list"]);
    assert!(
        proto.starts_with("code: CONTAINER_STATUS\n") && proto.contains("container_status {"),
        "{proto}"
    );
    let guestos = d.ok(&["list_guestos"]);
    assert_eq!(guestos.lines().count(), 2, "{guestos}");
    assert!(guestos.lines().nth(1).unwrap().starts_with("busybox"));
    // Completions and the man page come from the clap definitions.
    assert!(d.ok(&["completions", "bash"]).contains("assign_iface"));
    assert!(d.ok(&["man"]).contains(".TH"));
}

#[test]
fn a_none_token_container_never_reads_stdin() {
    let d = Daemon::start();
    d.create("plain");
    // stdin stays open and empty: a client that tried to read a PIN would hang.
    let mut child = Command::new(CONTROL)
        .args(["-s", d.socket.to_str().unwrap(), "start", "plain"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _stdin = child.stdin.take();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("control start blocked on stdin for a NONE-token container");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // This GuestOS has no init (and userns: true is refused for now): the start fails.
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!err.contains("Password"), "{err}");

    // A SOFT-token container asks; the PIN comes from stdin when it is not a terminal.
    let f = d.file(
        "soft.conf",
        &container_conf("soft").replace("token_type: NONE", "token_type: SOFT"),
    );
    d.ok(&["create", &f]);
    let out = d.control_stdin(&["start", "soft"], "1234\n");
    assert!(stderr(&out).contains("Password"), "{}", stderr(&out));
}

#[test]
fn socket_mode_and_json_logs() {
    let d = Daemon::prepare();
    fs::write(d.data.join("device.conf"), "signed_configs: false\n").unwrap();
    let d = {
        let mut d = d;
        d.child = Some(
            Command::new(common::CMLD)
                .args([
                    "--data-dir",
                    d.data.to_str().unwrap(),
                    "--socket",
                    d.socket.to_str().unwrap(),
                ])
                .args([
                    "--run-dir",
                    d.run.to_str().unwrap(),
                    "--cgroup-parent",
                    "cmltestjson",
                    "--log-format",
                    "json",
                ])
                .stderr(fs::File::create(&d.log).unwrap())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&d.socket).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    };
    let mode = fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    d.ok(&["list"]);
    let log = d.log_text();
    let mut saw_request = false;
    for line in log.lines() {
        let v = json(line);
        if v["fields"]["message"] == "request" {
            saw_request = true;
            assert_eq!(
                v["fields"]["uid"].as_u64(),
                Some(0),
                "peer credentials are logged: {line}"
            );
        }
    }
    assert!(saw_request, "{log}");
}
