//! `GET /metrics`: Prometheus text format 0.0.4. Per container (from a status list read at each
//! scrape): its state, restarts, memory, CPU time and task count; per cml-web: its requests to
//! cmld and the HTTP requests it answered ([`crate::web::metrics`]).
//!
//! Access: a logged-in session, or `Authorization: Bearer <token>` with the token from
//! `--metrics-token-file` (for a scraper, which cannot log in); anything else is 401.

use std::fmt::Write as _;

use actix_web::{
    HttpRequest, HttpResponse,
    http::{StatusCode, header},
    web,
};
use openssl::sha::sha256;

use super::{ApiError, ErrorBody, authenticate, blocking};
use crate::{
    client::format,
    protocol::pb::{ContainerState, ContainerStatus},
    web::{
        AppState, daemon,
        metrics::{self as registry, family, label_value},
    },
};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether the request carries the scrape token (compared in constant time: both sides are
/// hashed first, so not even the length is compared directly).
fn bearer_ok(req: &HttpRequest, token: Option<&str>) -> bool {
    let Some(token) = token else { return false };
    let sent = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    sent.is_some_and(|sent| openssl::memcmp::eq(&sha256(sent.as_bytes()), &sha256(token.as_bytes())))
}

/// The metrics of the containers and of cml-web itself. Needs a session, or
/// `Authorization: Bearer <token>` with the token of `--metrics-token-file`.
#[utoipa::path(get, path = "/metrics",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain; version=0.0.4", body = String),
              (status = 401, description = "Neither a session nor the bearer token", body = ErrorBody),
              (status = 502, body = ErrorBody)))]
pub async fn metrics(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    if !bearer_ok(&req, state.metrics_token.as_deref()) {
        authenticate(&req).map_err(|_| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "log in, or send Authorization: Bearer <the --metrics-token-file token>",
            )
        })?;
    }
    let socket = state.socket.clone();
    let statuses = blocking(move || daemon::statuses(&socket)).await?;
    let mut out = String::new();
    containers(&mut out, &statuses);
    registry::global().render(&mut out);
    Ok(HttpResponse::Ok().content_type(CONTENT_TYPE).body(out))
}

/// Every wire state, for the state series (one per state, 1 for the current one).
fn all_states() -> impl Iterator<Item = ContainerState> {
    (0..64).filter_map(|i| ContainerState::try_from(i).ok())
}

/// The per-container series.
fn containers(out: &mut String, statuses: &[ContainerStatus]) {
    let labels = |s: &ContainerStatus| {
        format!(
            "name=\"{}\",uuid=\"{}\"",
            label_value(&s.name),
            label_value(&s.uuid)
        )
    };
    family(
        out,
        "cml_container_state",
        "gauge",
        "The container's state: 1 for the current one, 0 for the others.",
    );
    for s in statuses {
        let l = labels(s);
        for st in all_states() {
            let _ = writeln!(
                out,
                "cml_container_state{{{l},state=\"{}\"}} {}",
                format::state_name(st as i32),
                u8::from(st as i32 == s.state)
            );
        }
    }
    family(
        out,
        "cml_container_restarts_total",
        "counter",
        "Restarts of the container by cmld's supervision.",
    );
    for s in statuses {
        let _ = writeln!(
            out,
            "cml_container_restarts_total{{{}}} {}",
            labels(s),
            s.restart_count.unwrap_or(0)
        );
    }
    // The live figures exist only while a container runs: no sample for a stopped one.
    family(
        out,
        "cml_container_memory_bytes",
        "gauge",
        "Memory charged to the container's cgroup.",
    );
    for s in statuses {
        if let Some(v) = s.memory_bytes {
            let _ = writeln!(out, "cml_container_memory_bytes{{{}}} {v}", labels(s));
        }
    }
    family(
        out,
        "cml_container_cpu_seconds_total",
        "counter",
        "CPU time used by the container's current run.",
    );
    for s in statuses {
        if let Some(us) = s.cpu_usec {
            let _ = writeln!(
                out,
                "cml_container_cpu_seconds_total{{{}}} {}",
                labels(s),
                us as f64 / 1e6
            );
        }
    }
    family(
        out,
        "cml_container_pids",
        "gauge",
        "Tasks in the container's cgroup.",
    );
    for s in statuses {
        if let Some(v) = s.pids {
            let _ = writeln!(out, "cml_container_pids{{{}}} {v}", labels(s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_state_series_is_one_and_stopped_containers_have_no_live_figures() {
        let s = ContainerStatus {
            uuid: "u-1".into(),
            name: "a\"b".into(),
            state: ContainerState::Running as i32,
            restart_count: Some(2),
            memory_bytes: Some(4096),
            cpu_usec: Some(1_500_000),
            pids: Some(3),
            ..Default::default()
        };
        let stopped = ContainerStatus {
            uuid: "u-2".into(),
            name: "idle".into(),
            state: ContainerState::Stopped as i32,
            ..Default::default()
        };
        let mut out = String::new();
        containers(&mut out, &[s, stopped]);
        let ones: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("cml_container_state{") && l.ends_with(" 1"))
            .collect();
        assert_eq!(ones.len(), 2, "{out}");
        assert!(
            out.contains("cml_container_state{name=\"a\\\"b\",uuid=\"u-1\",state=\"RUNNING\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("cml_container_cpu_seconds_total{name=\"a\\\"b\",uuid=\"u-1\"} 1.5\n"),
            "{out}"
        );
        assert!(
            out.contains("cml_container_restarts_total{name=\"idle\",uuid=\"u-2\"} 0\n"),
            "{out}"
        );
        assert!(!out.contains("cml_container_pids{name=\"idle\""), "{out}");
    }
}
