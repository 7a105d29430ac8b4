//! cml-web's page in a real browser, as a user would use it: headless Chromium driven over
//! WebDriver (`tests/common/webdriver.rs`) against the real `cml-web` in front of a real cmld with
//! a real busybox container. Screenshots of each step land in `target/test-artifacts/web/`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{
    Daemon,
    web::{PASSWORD, Web},
    webdriver::{self, Browser},
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

fn card(name: &str, rest: &str) -> String {
    format!("article[data-name=\"{name}\"] {rest}")
}

fn wait_state(b: &Browser, name: &str, state: &str) {
    b.wait_text(&card(name, ".state"), WAIT, |t| t == state);
}

fn log_in(b: &Browser, web: &Web) {
    b.goto(&format!("http://127.0.0.1:{}/", web.port));
    b.type_into("#login-password", PASSWORD);
    b.click("#login-submit");
    b.wait_visible("#view-containers", WAIT);
}

/// What `fetch(path)` answers in the page (its status), with the browser's own cookies.
fn fetch_status(b: &Browser, path: &str) -> u64 {
    b.exec_async(
        "const done = arguments[arguments.length - 1];\
         fetch(arguments[0], {credentials: 'same-origin'}).then(r => done(r.status), e => done(String(e)));",
        &[json!(path)],
    )
    .as_u64()
    .unwrap()
}

fn require_browser() -> bool {
    if webdriver::available() {
        return true;
    }
    // scripts/setup.sh installs both; a machine without them cannot run this test.
    assert!(
        std::env::var_os("CI").is_none(),
        "chromium and chromium-driver are missing (scripts/setup.sh installs them)"
    );
    eprintln!("SKIPPED: chromium/chromedriver not installed");
    false
}

#[test]
fn a_user_logs_in_starts_with_the_pin_uses_the_terminal_and_logs_out() {
    if !require_browser() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &[]);
    // The colour 0x3366ccff (RGBA): the card's swatch shows rgb(51, 102, 204).
    d.create_text(
        "vault",
        "name: \"vault\"\nguest_os: \"busybox\"\ncolor: 862375167\ntoken_type: SOFT\nuserns: false\n",
    );
    let web = Web::start(&d);
    let b = Browser::start();

    // 1. Log in (a wrong password first: the page says so).
    b.goto(&format!("http://127.0.0.1:{}/", web.port));
    b.type_into("#login-password", "not the password");
    b.click("#login-submit");
    b.wait_text("#login-error", WAIT, |t| t.contains("wrong password"));
    b.exec("document.querySelector('#login-password').value = '';", &[]);
    b.type_into("#login-password", PASSWORD);
    b.click("#login-submit");
    b.wait_visible("#view-containers", WAIT);

    // 2. The SOFT container is STOPPED; the live indicator shows the event stream is connected.
    wait_state(&b, "vault", "STOPPED");
    b.wait_visible("#live.on", WAIT);
    assert!(b.text(&card("vault", ".meta")).contains("busybox"));
    b.screenshot("01-dashboard-stopped");

    // 3. Start asks for the PIN; a wrong one shows the daemon's message and keeps the dialog open.
    b.click(&card("vault", "button[data-action=start]"));
    b.wait_visible("#pin-dialog[open] #pin-input", WAIT);
    b.type_into("#pin-input", "wrong");
    b.click("#pin-ok");
    let msg = b.wait_text("#pin-error", WAIT, |t| !t.is_empty());
    assert!(msg.contains("wrong PIN"), "{msg}");
    b.screenshot("02-wrong-pin");
    assert_eq!(d.ok(&["state", "vault"]).trim(), "STOPPED");

    // The right PIN: RUNNING appears without a reload.
    b.exec("document.querySelector('#pin-input').value = '';", &[]);
    b.type_into("#pin-input", "trustme");
    b.click("#pin-ok");
    wait_state(&b, "vault", "RUNNING");
    assert!(b.exec("return !document.querySelector('#pin-dialog').open;", &[]) == true);
    assert_eq!(d.ok(&["state", "vault"]).trim(), "RUNNING");

    // Its colour, and the live figures from its cgroup with their charts (a line once the page
    // has polled twice).
    let swatch = b.exec(
        "return getComputedStyle(document.querySelector(arguments[0])).backgroundColor;",
        &[json!(card("vault", ".swatch"))],
    );
    assert_eq!(swatch, "rgb(51, 102, 204)");
    let pids = b.wait_text(&card("vault", "[data-figure=pids]"), WAIT, |t| {
        t.parse::<u32>().is_ok_and(|n| n >= 1)
    });
    let memory = b.text(&card("vault", "[data-figure=memory]"));
    assert!(memory.ends_with('B') && !memory.starts_with('0'), "{memory}");
    // (a flat line has no height, so WebDriver would not call it displayed: look for its points)
    let deadline = std::time::Instant::now() + WAIT;
    while b.exec(
        "const l = document.querySelector(arguments[0]);\
         return !!l && l.getAttribute('points').trim().split(/\\s+/).length >= 2;",
        &[json!(card("vault", "svg.spark polyline"))],
    ) != true
    {
        assert!(std::time::Instant::now() < deadline, "no chart line on the card");
        std::thread::sleep(Duration::from_millis(200));
    }
    let cpu = b.text(&card("vault", "[data-figure=cpu]"));
    assert!(cpu.ends_with('%') || cpu.ends_with(" s"), "{cpu}");
    eprintln!("figures shown: memory {memory}, CPU {cpu}, pids {pids}");
    b.screenshot("02b-dashboard-running");

    // 4. `hostname` in the browser terminal; the output is read from the page.
    let hostname = d.ok(&["run", "vault", "nopty", "hostname"]).trim().to_owned();
    assert!(!hostname.is_empty());
    b.click(&card("vault", "button[data-action=run]"));
    b.wait_text("#term-status", WAIT, |t| t == "connected");
    b.wait_visible("#term .xterm-rows", WAIT);
    // The shell's prompt first, so the keys go to a shell that reads them.
    b.wait_text("#term .xterm-rows", WAIT, |t| t.contains('#') || t.contains('$'));
    b.type_focused("hostname\n");
    let screen = b.wait_text("#term .xterm-rows", WAIT, |t| {
        t.matches(hostname.as_str()).count() >= 2 || t.contains(&format!("hostname{hostname}"))
    });
    assert!(screen.contains(&hostname), "{screen}");
    b.screenshot("03-terminal");
    b.type_focused("exit\n");
    b.wait_text("#term-status", WAIT, |t| t.contains("exit status 0"));
    b.click("#term-close");

    // 5. Another client stops it: STOPPED arrives live.
    let out = d.control(&["stop", "vault", "--key=trustme"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_state(&b, "vault", "STOPPED");
    b.screenshot("04-stopped-by-control");

    // 6. Log out: the login form is back, and the browser's cookie opens nothing any more.
    b.click("#logout");
    b.wait_visible("#login-password", WAIT);
    assert_eq!(fetch_status(&b, "/api/containers"), 401);
    assert_eq!(fetch_status(&b, "/api/session"), 401);
    b.goto(&format!("http://127.0.0.1:{}/", web.port));
    b.wait_visible("#login-password", WAIT);
    assert!(b.exec("return document.querySelector('#view-containers').hidden;", &[]) == true);
    b.screenshot("05-logged-out");
}

/// On a provisioned device the page offers only what the daemon serves there: no create, no
/// GuestOS or CA management, no CSR, no set_provisioned; every action button on a card is in the
/// daemon's `allowed` list.
#[test]
fn a_provisioned_device_offers_only_what_the_daemon_allows() {
    if !require_browser() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &[]);
    d.create_soft("vault");
    d.ok(&["set_provisioned"]);
    let web = Web::start(&d);
    let b = Browser::start();
    log_in(&b, &web);
    wait_state(&b, "vault", "STOPPED");

    let allowed = b.exec_async(
        "const done = arguments[arguments.length - 1];\
         fetch('/api/device', {credentials: 'same-origin'}).then(r => r.json()).then(d => done(d.allowed));",
        &[],
    );
    let allowed: Vec<String> = serde_json::from_value(allowed).unwrap();
    assert!(allowed.contains(&"start".to_owned()), "{allowed:?}");
    for refused in [
        "guestos_push",
        "guestos_list",
        "ca_register",
        "csr",
        "set_provisioned",
    ] {
        assert!(!allowed.iter().any(|a| a == refused), "{refused} in {allowed:?}");
    }
    let buttons = b.exec(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.dataset.action);",
        &[json!(card("vault", ".actions button"))],
    );
    let buttons: Vec<String> = serde_json::from_value(buttons).unwrap();
    assert!(buttons.contains(&"start".to_owned()), "{buttons:?}");
    for button in &buttons {
        assert!(
            allowed.contains(button),
            "button {button} is not allowed: {allowed:?}"
        );
    }
    let hidden = |css: &str| {
        b.exec(
            "return document.querySelector(arguments[0]).hidden;",
            &[json!(css)],
        )
    };
    assert_eq!(
        hidden("#create-open") == true,
        !allowed.contains(&"create".to_owned())
    );
    b.screenshot("10-provisioned-containers");

    b.click("nav a[data-view=guestos]");
    b.wait_text("#guestos-error", WAIT, |t| t.contains("does not list"));
    assert!(hidden("#guestos-push") == true && hidden("#ca-register") == true);

    b.click("nav a[data-view=device]");
    b.wait_text("#device-info", WAIT, |t| {
        t.contains("Provisioned") && t.contains("yes")
    });
    for css in ["#csr-download", "#cert-upload", "#provision-open"] {
        let shown = b.exec(
            "return document.querySelector(arguments[0]).closest('[data-needs]').hidden;",
            &[json!(css)],
        );
        assert!(shown == true, "{css} is offered on a provisioned device");
    }
    b.screenshot("11-provisioned-device");
}

/// The page's own security: the headers on the page, no session → the login form.
#[test]
fn the_page_is_served_with_its_libraries_and_security_headers() {
    let d = Daemon::start();
    let web = Web::start(&d);
    let r = web.get("/", None);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let csp = r.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(r.header("x-content-type-options").as_deref(), Some("nosniff"));
    assert!(r.body.contains("/ui/vendor/xterm.js"));
    for path in [
        "/ui/app.js",
        "/ui/app.css",
        "/ui/vendor/xterm.js",
        "/ui/vendor/xterm.css",
        "/ui/vendor/addon-fit.js",
    ] {
        let r = web.get(path, None);
        assert_eq!(r.status, 200, "{path}");
        assert!(r.body.len() > 1000, "{path}: {} bytes", r.body.len());
    }
    // xterm.js is the file `npm ci` installed from the lockfile, embedded byte for byte.
    let installed = std::fs::read_to_string("src/web/ui/node_modules/@xterm/xterm/lib/xterm.js").unwrap();
    assert!(web.get("/ui/vendor/xterm.js", None).body == installed);
    assert_eq!(web.get("/ui/nosuch.js", None).status, 404);
    assert!(
        web.get("/api/containers", None)
            .header("content-security-policy")
            .is_some()
    );
}
