//! cml-web's API beyond the basics of tests/web.rs, end to end: a real cmld with the busybox
//! GuestOS fixture (tests/common), the real `cml-web` binary, plain HTTP/1.1.

#![allow(clippy::unwrap_used)]

mod common;

use common::web::Web;

/// A busybox container config with a colour of its own and no user namespace.
fn conf(name: &str, color: u32) -> String {
    format!("name: \"{name}\"\nguest_os: \"busybox\"\ncolor: {color}\ntoken_type: NONE\nuserns: false\n")
}

#[test]
fn a_running_container_shows_its_live_figures_and_colour() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &[]);
    d.create_text("live", &conf("live", 0xdead_beef));
    let web = Web::start(&d);
    let login = web.login();

    // Stopped: the colour, no live figures.
    let v = web.get("/api/containers/live", Some(&login)).json();
    assert_eq!(v["color"], 0xdead_beef_u32, "{v}");
    assert!(v["pids"].is_null() && v["memory_bytes"].is_null(), "{v}");

    let r = web.post("/api/containers/live/start", &login, "");
    assert_eq!(r.status, 200, "{}", r.body);
    let v = web.get("/api/containers/live", Some(&login)).json();
    assert_eq!(v["state"], "RUNNING", "{v}");
    assert!(v["pids"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["memory_bytes"].as_u64().unwrap() > 0, "{v}");
    assert!(v["cpu_seconds"].as_f64().unwrap() >= 0.0, "{v}");
    assert_eq!(v["color"], 0xdead_beef_u32, "{v}");
    // The list carries them too, and so does `control --json state`.
    let list = web.get("/api/containers", Some(&login)).json();
    assert!(list["containers"][0]["pids"].as_u64().unwrap() >= 1, "{list}");
    let st = d.status("live");
    assert!(
        st["cpu_usec"].is_u64() && st["pids"].as_u64().unwrap() >= 1,
        "{st}"
    );
    assert_eq!(st["color"], 0xdead_beef_u32);

    let r = web.post("/api/containers/live/stop", &login, "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["pids"].is_null(), "{}", r.body);
}
