//! cml-web's API beyond the basics of tests/web.rs, end to end: a real cmld with the busybox
//! GuestOS fixture (tests/common), the real `cml-web` binary, plain HTTP/1.1, and `control` to
//! check what the API did.

#![allow(clippy::unwrap_used)]

mod common;

use std::{collections::HashMap, fs, time::Duration};

use common::{
    poll::wait_for,
    web::{Login, Resp, Web},
};
use serde_json::{Value, json};

/// A busybox container config with a colour of its own and no user namespace; `extra` lines are
/// appended.
fn conf(name: &str, color: u32, extra: &str) -> String {
    format!(
        "name: \"{name}\"\nguest_os: \"busybox\"\ncolor: {color}\ntoken_type: NONE\nuserns: false\n{extra}"
    )
}

fn put(web: &Web, path: &str, login: &Login, body: &str) -> Resp {
    web.request("PUT", path, Some(login), true, Some(body.as_bytes()))
}

fn delete(web: &Web, path: &str, login: &Login) -> Resp {
    web.request("DELETE", path, Some(login), true, None)
}

#[test]
fn a_running_container_shows_its_live_figures_colour_and_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &[]);
    d.create_text(
        "live",
        &conf(
            "live",
            0xdead_beef,
            "init_env: \"INIT=echo hello-from-web-test\"\n",
        ),
    );
    let web = Web::start(&d);
    let login = web.login();

    // Stopped: the colour, no live figures, an empty log.
    let v = web.get("/api/containers/live", Some(&login)).json();
    assert_eq!(v["color"], 0xdead_beef_u32, "{v}");
    assert!(v["pids"].is_null() && v["memory_bytes"].is_null(), "{v}");
    let r = web.get("/api/containers/live/logs", Some(&login));
    assert_eq!((r.status, r.body.as_str()), (200, ""), "{}", r.body);

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

    // Logs: what the init printed, as text; `tail` picks the last lines.
    wait_for("the init's output", || {
        web.get("/api/containers/live/logs", Some(&login))
            .body
            .contains("ready")
    });
    let r = web.get("/api/containers/live/logs?tail=500", Some(&login));
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type").unwrap().starts_with("text/plain"),
        "{:?}",
        r.headers
    );
    assert!(r.body.contains("hello-from-web-test"), "{}", r.body);
    let r = web.get("/api/containers/live/logs?tail=1", Some(&login));
    assert!(
        r.body.contains("ready") && !r.body.contains("hello"),
        "{}",
        r.body
    );
    let r = web.get("/api/containers/live/logs?tail=x", Some(&login));
    assert_eq!(r.status, 400, "{}", r.body);

    // change_pin with a wrong PIN: 403 with the daemon's message; nothing changed.
    let r = web.post(
        "/api/containers/live/change_pin",
        &login,
        r#"{"pin": "wrong", "new_pin": "next"}"#,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.error().contains("wrong pin"), "{}", r.body);
    let r = web.post("/api/containers/live/change_pin", &login, r#"{"pin": "x"}"#);
    assert_eq!(r.status, 400, "{}", r.body);
    let r = web.post(
        "/api/containers/live/change_pin",
        &login,
        r#"{"pin": "trustme", "new_pin": "fresh"}"#,
    );
    assert_eq!(r.status, 204, "{}", r.body);

    let r = web.post("/api/containers/live/stop", &login, "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["pids"].is_null(), "{}", r.body);
}

#[test]
fn containers_are_created_configured_wiped_and_removed_from_uploads() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &[]);
    let web = Web::start(&d);
    let login = web.login();

    // Create from an uploaded config: 201 with the new container's view.
    let body = json!({ "config": conf("made", 0x1122_3344, "") }).to_string();
    let r = web.post("/api/containers", &login, &body);
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    assert_eq!(
        (v["name"].as_str(), v["state"].as_str()),
        (Some("made"), Some("STOPPED")),
        "{v}"
    );
    assert_eq!(v["color"], 0x1122_3344);
    let uuid = v["uuid"].as_str().unwrap().to_owned();
    assert!(d.ok(&["list"]).contains(&uuid));

    // An invalid config: the daemon's refusal as JSON.
    let r = web.post(
        "/api/containers",
        &login,
        &json!({"config": "name: "}).to_string(),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(!r.error().is_empty());
    // Bad input: JSON, base64, missing fields; an oversized body.
    let r = web.post("/api/containers", &login, "{\"config\": ");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.error().contains("invalid JSON"), "{}", r.body);
    let r = web.post(
        "/api/containers",
        &login,
        &json!({"config": conf("x", 1, ""), "signature": "***not base64***"}).to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.error().contains("base64"), "{}", r.body);
    let r = web.post("/api/containers", &login, "");
    assert_eq!(r.status, 400, "{}", r.body);
    let big = json!({ "config": "#".repeat(2 << 20) }).to_string();
    let r = web.post("/api/containers", &login, &big);
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.error().contains("too large"), "{}", r.body);
    // Within the upload limit (but over the 64 KiB of other bodies) is fine: a comment-padded config.
    let padded = format!("# {}\n{}", "p".repeat(200 * 1024), conf("padded", 2, ""));
    let r = web.post(
        "/api/containers",
        &login,
        &json!({ "config": padded }).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.body);

    // A signed config: register the fixture's CA, then create with signature and certificate.
    let pki = common::fixture::pki(tmp.path());
    let ca = fs::read_to_string(pki.join("root-ca.cert")).unwrap();
    let signer = fs::read_to_string(pki.join("signing.cert")).unwrap();
    let r = web.post("/api/cas", &login, &json!({ "certificate": ca }).to_string());
    assert_eq!(r.status, 204, "{}", r.body);
    let signed_conf = tmp.path().join("signed.conf");
    fs::write(&signed_conf, conf("signed", 3, "guestos_version: 1\n")).unwrap();
    let sig = fs::read(common::fixture::sign_file(&pki, &signed_conf)).unwrap();
    let r = web.post(
        "/api/containers",
        &login,
        &json!({
            "config": fs::read_to_string(&signed_conf).unwrap(),
            "signature": openssl::base64::encode_block(&sig),
            "certificate": signer,
        })
        .to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    // A signature that does not match the config is refused.
    let r = web.post(
        "/api/containers",
        &login,
        &json!({
            "config": conf("forged", 3, ""),
            "signature": openssl::base64::encode_block(&sig),
            "certificate": signer,
        })
        .to_string(),
    );
    assert_eq!(r.status, 409, "{}", r.body);

    // Its config as protobuf text, as `control config` prints it.
    let r = web.get(&format!("/api/containers/{uuid}/config"), Some(&login));
    assert_eq!(r.status, 200, "{}", r.body);
    let text = r.json()["config"].as_str().unwrap().to_owned();
    assert!(text.contains("name: \"made\""), "{text}");
    assert_eq!(text, d.ok(&["config", "made"]));

    // Update: a stopped container takes the new config at once.
    let body = json!({ "config": conf("made", 0x5566_7788, "ram_limit: 64\n") }).to_string();
    let r = put(&web, "/api/containers/made/config", &login, &body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["color"], 0x5566_7788, "{}", r.body);
    assert!(d.ok(&["config", "made"]).contains("ram_limit: 64"));
    let r = put(&web, "/api/containers/made/config", &login, "{}");
    assert_eq!(r.status, 400, "{}", r.body);
    let r = put(&web, "/api/containers/nosuch/config", &login, &body);
    assert_eq!(r.status, 404, "{}", r.body);

    // Wipe keeps it (and answers its view); remove deletes it.
    let r = web.post("/api/containers/made/wipe", &login, "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["uuid"].as_str(), Some(uuid.as_str()));
    let r = delete(&web, "/api/containers/made", &login);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(web.get("/api/containers/made", Some(&login)).status, 404);
    assert!(!d.ok(&["list"]).contains(&uuid));
    assert_eq!(delete(&web, "/api/containers/made", &login).status, 404);
    // Without the CSRF header nothing is removed.
    let r = web.request("DELETE", "/api/containers/padded", Some(&login), false, None);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(d.ok(&["list"]).contains("padded"));
}

#[test]
fn guestos_cas_csr_and_provisioning() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &[]);
    let web = Web::start(&d);
    let login = web.login();

    // The installed GuestOS, as `control list_guestos` shows it.
    let r = web.get("/api/guestos", Some(&login));
    assert_eq!(r.status, 200, "{}", r.body);
    let list = r.json();
    let g = &list["guestos"][0];
    assert_eq!(
        (g["name"].as_str(), g["version"].as_u64()),
        (Some("busybox"), Some(1)),
        "{list}"
    );
    assert!(
        g["hardware"].is_string() && g["description"].is_string(),
        "{list}"
    );
    // Path tricks in a GuestOS name: 400 before anything reaches the daemon.
    for bad in ["..%2Fx", "..", ".x", "a%20b"] {
        let r = delete(&web, &format!("/api/guestos/{bad}"), &login);
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert!(r.error().contains("invalid GuestOS name"), "{}", r.body);
    }
    // Removing an unknown GuestOS: the daemon's refusal.
    let r = delete(&web, "/api/guestos/nosuch", &login);
    assert_eq!(r.status, 409, "{}", r.body);

    // Installing from an upload: a second version of busybox from the daemon's store (the images
    // come from there, not from the upload).
    let f2 = common::fixture::busybox_guestos(tmp.path(), "busybox", 2, &[]);
    let upload = json!({
        "config": fs::read_to_string(&f2.conf).unwrap(),
        "signature": openssl::base64::encode_block(&fs::read(&f2.sig).unwrap()),
        "certificate": fs::read_to_string(&f2.cert).unwrap(),
    })
    .to_string();
    let r = web.post("/api/guestos", &login, &upload);
    assert_eq!(r.status, 204, "{}", r.body);
    let versions: Vec<u64> = web.get("/api/guestos", Some(&login)).json()["guestos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["version"].as_u64().unwrap())
        .collect();
    assert!(versions.contains(&2), "{versions:?}");
    let r = web.post("/api/guestos", &login, r#"{"config": "x"}"#);
    assert_eq!(r.status, 400, "{}", r.body);

    // A CA that is not a certificate: the daemon's message.
    let r = web.post("/api/cas", &login, r#"{"certificate": "garbage"}"#);
    assert!(r.status == 409, "{} {}", r.status, r.body);
    assert!(!r.error().is_empty());

    // The device before provisioning: everything allowed, figures.
    let dev = web.get("/api/device", Some(&login)).json();
    assert_eq!(dev["provisioned"], false, "{dev}");
    assert_eq!(dev["hosted"], true, "{dev}");
    assert_eq!(dev["allowed"].as_array().unwrap().len(), 20, "{dev}");
    assert!(dev["stats"]["disk_system"].as_u64().unwrap() > 0, "{dev}");
    assert!(dev["stats"]["mem_total"].as_u64().unwrap() > 0, "{dev}");

    // The CSR as a PEM download for the device key.
    let r = web.get("/api/device/csr", Some(&login));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/x-pem-file")
    );
    assert_eq!(
        r.header("content-disposition").as_deref(),
        Some("attachment; filename=\"device.csr\"")
    );
    let csr = openssl::x509::X509Req::from_pem(r.body.as_bytes()).unwrap();
    let device_key =
        openssl::pkey::PKey::private_key_from_pem(&fs::read(d.data.join("tokens/device-id.key")).unwrap())
            .unwrap();
    assert!(csr.public_key().unwrap().public_eq(&device_key));
    // A certificate that is not one: the daemon's refusal, nothing stored.
    let r = web.post(
        "/api/device/cert",
        &login,
        r#"{"certificate": "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"}"#,
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(!d.data.join("tokens/device.cert").exists());

    // set_provisioned needs the confirmation.
    for body in ["", "{}", r#"{"confirm": false}"#] {
        let r = web.post("/api/device/provisioned", &login, body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.error().contains("confirm"), "{}", r.body);
    }
    assert_eq!(d.ok(&["get_provisioned"]), "false\n");
    let r = web.post("/api/device/provisioned", &login, r#"{"confirm": true}"#);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(d.ok(&["get_provisioned"]), "true\n");

    // Provisioned: the page is told what is left, no figures, and refusals carry the reason.
    let dev = web.get("/api/device", Some(&login)).json();
    assert_eq!(dev["provisioned"], true, "{dev}");
    assert!(dev["stats"].is_null(), "{dev}");
    let allowed: Vec<&str> = dev["allowed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for a in ["start", "stop", "create", "update_config", "change_pin"] {
        assert!(allowed.contains(&a), "{a}: {allowed:?}");
    }
    for a in ["guestos_push", "guestos_list", "csr", "set_provisioned", "remove"] {
        assert!(!allowed.contains(&a), "{a}: {allowed:?}");
    }
    let r = web.post("/api/guestos", &login, &upload);
    assert!(r.status == 409 || r.status == 403, "{} {}", r.status, r.body);
    assert!(r.error().contains("provisioned"), "{}", r.body);
    let r = web.get("/api/device/csr", Some(&login));
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.error().contains("provisioned"), "{}", r.body);
}

/// The samples of one metric, by their labels (sorted `k=v` pairs joined with `,`).
fn series(scrape: &prometheus_parse::Scrape, metric: &str) -> HashMap<String, prometheus_parse::Value> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .map(|s| {
            let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            (labels.join(","), s.value.clone())
        })
        .collect()
}

fn number(v: &prometheus_parse::Value) -> f64 {
    match v {
        prometheus_parse::Value::Counter(n)
        | prometheus_parse::Value::Gauge(n)
        | prometheus_parse::Value::Untyped(n) => *n,
        other => panic!("not a number: {other:?}"),
    }
}

#[test]
fn metrics_for_a_scraper_with_the_token_or_a_session() {
    let tmp = tempfile::tempdir().unwrap();
    let d = common::busybox_daemon(tmp.path(), &[]);
    let uuid = d.create_text("scraped", &conf("scraped", 9, ""));
    d.create_text("idle", &conf("idle", 9, ""));
    d.ok(&["start", "scraped"]);
    let token_file = tmp.path().join("metrics.token");
    fs::write(&token_file, "s3cret-scrape-token\n").unwrap();
    let web = Web::start_with(&d, &["--metrics-token-file".as_ref(), token_file.as_os_str()]);

    // No session, no token, a wrong token: 401.
    let scrape = |auth: Option<&str>| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", web.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        std::io::Write::write_all(
            &mut s,
            format!("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n").as_bytes(),
        )
        .unwrap();
        let mut raw = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut raw);
        Resp::parse(&raw)
    };
    assert_eq!(scrape(None).status, 401);
    assert_eq!(scrape(Some("Bearer wrong")).status, 401);
    assert_eq!(scrape(Some("Basic czNjcmV0")).status, 401);
    // Some traffic to count (also a refusal), then the scrape with the token.
    let login = web.login();
    assert_eq!(web.get("/api/containers", Some(&login)).status, 200);
    assert_eq!(web.get("/api/containers/nosuch", Some(&login)).status, 404);
    let r = scrape(Some("Bearer s3cret-scrape-token"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let parsed = prometheus_parse::Scrape::parse(r.body.lines().map(|l| Ok(l.to_owned()))).unwrap();

    // The running container's series.
    let me = format!("name=scraped,uuid={uuid}");
    let state = series(&parsed, "cml_container_state");
    // (Labels sort by name: name, state, uuid.)
    let in_state = |st: &str| format!("name=scraped,state={st},uuid={uuid}");
    assert_eq!(number(&state[&in_state("RUNNING")]), 1.0, "{}", r.body);
    assert_eq!(number(&state[&in_state("STOPPED")]), 0.0, "{}", r.body);
    let current: f64 = state
        .iter()
        .filter(|(k, _)| k.starts_with("name=scraped,"))
        .map(|(_, v)| number(v))
        .sum();
    assert_eq!(current, 1.0, "exactly one current state");
    assert_eq!(number(&series(&parsed, "cml_container_restarts_total")[&me]), 0.0);
    assert!(number(&series(&parsed, "cml_container_memory_bytes")[&me]) > 0.0);
    assert!(number(&series(&parsed, "cml_container_pids")[&me]) >= 1.0);
    assert!(number(&series(&parsed, "cml_container_cpu_seconds_total")[&me]) >= 0.0);
    // The stopped one has a state but no live figures.
    assert!(
        series(&parsed, "cml_container_pids")
            .keys()
            .all(|k| !k.contains("idle"))
    );
    assert!(
        state
            .keys()
            .any(|k| k.contains("name=idle,") && k.contains(",state=STOPPED,"))
    );

    // cml-web's own: the daemon requests with outcomes, consistent with the histogram.
    let requests = series(&parsed, "cml_web_daemon_requests_total");
    assert!(
        number(&requests["command=list,outcome=ok"]) >= 1.0,
        "{requests:?}"
    );
    assert_eq!(
        number(&requests["command=get,outcome=refused"]),
        1.0,
        "{requests:?}"
    );
    let hist = series(&parsed, "cml_web_daemon_request_duration_seconds");
    let counts = series(&parsed, "cml_web_daemon_request_duration_seconds_count");
    let sums = series(&parsed, "cml_web_daemon_request_duration_seconds_sum");
    for command in ["list", "get"] {
        let key = format!("command={command}");
        let prometheus_parse::Value::Histogram(buckets) = &hist[&key] else {
            panic!("no histogram for {command}: {hist:?}");
        };
        assert_eq!(buckets.len(), 13, "12 bounds and +Inf: {buckets:?}");
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].count <= w[1].count && w[0].less_than < w[1].less_than)
        );
        assert_eq!(buckets[0].less_than, 0.001);
        assert_eq!(buckets[11].less_than, 5.0);
        assert!(buckets[12].less_than.is_infinite());
        let count = number(&counts[&key]);
        assert_eq!(buckets[12].count, count, "+Inf bucket = count");
        let total: f64 = requests
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{key},")))
            .map(|(_, v)| number(v))
            .sum();
        assert_eq!(count, total, "{command}: histogram count = requests");
        assert!(number(&sums[&key]) > 0.0);
    }
    // The HTTP requests answered so far.
    let http = series(&parsed, "cml_web_http_requests_total");
    assert!(number(&http["method=GET,status=401"]) >= 3.0, "{http:?}");
    assert!(number(&http["method=GET,status=404"]) >= 1.0, "{http:?}");
    assert!(number(&http["method=POST,status=200"]) >= 1.0, "{http:?}");

    // A session works as well; without --metrics-token-file a token does not.
    assert_eq!(web.get("/metrics", Some(&login)).status, 200);
    drop(web);
    let web = Web::start(&d);
    assert_eq!(scrape_with(&web, "Bearer s3cret-scrape-token"), 401);
    d.ok(&["stop", "scraped"]);
}

fn scrape_with(web: &Web, auth: &str) -> u16 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", web.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    std::io::Write::write_all(
        &mut s,
        format!("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {auth}\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut raw);
    Resp::parse(&raw).status
}

#[test]
fn every_route_is_in_the_openapi_document() {
    let d = common::Daemon::start();
    let web = Web::start(&d);
    let doc: Value = web.get("/api/openapi.json", None).json();
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/containers", "post"),
        ("/api/containers/{id}", "delete"),
        ("/api/containers/{id}/change_pin", "post"),
        ("/api/containers/{id}/config", "get"),
        ("/api/containers/{id}/config", "put"),
        ("/api/containers/{id}/wipe", "post"),
        ("/api/containers/{id}/logs", "get"),
        ("/api/guestos", "get"),
        ("/api/guestos", "post"),
        ("/api/guestos/{name}", "delete"),
        ("/api/cas", "post"),
        ("/api/device", "get"),
        ("/api/device/csr", "get"),
        ("/api/device/cert", "post"),
        ("/api/device/provisioned", "post"),
        ("/metrics", "get"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path} missing");
    }
    // The live figures are part of the container schema.
    let view = &doc["components"]["schemas"]["ContainerView"]["properties"];
    for field in ["memory_bytes", "cpu_seconds", "pids", "color"] {
        assert!(view[field].is_object(), "{field}");
    }
}
