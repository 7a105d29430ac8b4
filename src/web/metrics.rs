//! cml-web's own counters for `/metrics` (Prometheus text format 0.0.4): the requests it makes to
//! cmld (per operation and outcome, with a latency histogram) and the HTTP requests it answers.
//!
//! One registry per process ([`global`]), like the default registry of the Prometheus client
//! libraries: the daemon calls in [`super::daemon`] are plain functions of a socket path, and
//! threading a handle through each of them would buy nothing. The container series of `/metrics`
//! are not kept here; they come from a fresh status list at each scrape (see `api::metrics`).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{LazyLock, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

/// Upper bounds of the latency histogram's buckets, in seconds (`+Inf` is implicit).
pub const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// How a request to cmld ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// The daemon did what was asked.
    Ok,
    /// The daemon (or the name lookup) said no: a refusal, a wrong PIN, no such container.
    Refused,
    /// cmld unreachable, the connection lost, or a reply that makes no sense.
    Error,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Per bucket of [`BUCKETS`], the observations that fell into it (not cumulative).
    counts: [u64; BUCKETS.len()],
    /// Observations above the last bound.
    over: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        match BUCKETS.iter().position(|b| seconds <= *b) {
            Some(i) => self.counts[i] += 1,
            None => self.over += 1,
        }
        self.sum += seconds;
    }

    fn count(&self) -> u64 {
        self.counts.iter().sum::<u64>() + self.over
    }
}

#[derive(Debug, Default)]
struct Inner {
    daemon_requests: BTreeMap<(&'static str, Outcome), u64>,
    daemon_durations: BTreeMap<&'static str, Histogram>,
    http_requests: BTreeMap<(String, u16), u64>,
}

/// The registry.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::default);

/// The process's registry.
pub fn global() -> &'static Metrics {
    &GLOBAL
}

impl Metrics {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Counters stay usable after a panic elsewhere (they are only ever incremented).
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one request to cmld for `command` (the operation, e.g. `start`) and its duration.
    pub fn daemon_request(&self, command: &'static str, outcome: Outcome, took: Duration) {
        let mut inner = self.lock();
        *inner.daemon_requests.entry((command, outcome)).or_default() += 1;
        inner
            .daemon_durations
            .entry(command)
            .or_default()
            .observe(took.as_secs_f64());
    }

    /// Counts one answered HTTP request.
    pub fn http_request(&self, method: &str, status: u16) {
        // Only the methods we serve get their own label value: a client cannot grow the map.
        let method = match method {
            "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "OPTIONS" | "PATCH" => method,
            _ => "other",
        };
        *self
            .lock()
            .http_requests
            .entry((method.to_owned(), status))
            .or_default() += 1;
    }

    /// cml-web's own series in the text format (HELP, TYPE, samples).
    pub fn render(&self, out: &mut String) {
        let inner = self.lock();
        family(
            out,
            "cml_web_daemon_requests_total",
            "counter",
            "Requests cml-web made to cmld, by operation and outcome.",
        );
        for ((command, outcome), n) in &inner.daemon_requests {
            let _ = writeln!(
                out,
                "cml_web_daemon_requests_total{{command=\"{command}\",outcome=\"{}\"}} {n}",
                outcome.as_str()
            );
        }
        family(
            out,
            "cml_web_daemon_request_duration_seconds",
            "histogram",
            "How long requests to cmld took, by operation.",
        );
        for (command, h) in &inner.daemon_durations {
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(h.counts) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "cml_web_daemon_request_duration_seconds_bucket{{command=\"{command}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let count = h.count();
            let _ = writeln!(
                out,
                "cml_web_daemon_request_duration_seconds_bucket{{command=\"{command}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "cml_web_daemon_request_duration_seconds_sum{{command=\"{command}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "cml_web_daemon_request_duration_seconds_count{{command=\"{command}\"}} {count}"
            );
        }
        family(
            out,
            "cml_web_http_requests_total",
            "counter",
            "HTTP requests cml-web answered, by method and status.",
        );
        for ((method, status), n) in &inner.http_requests {
            let _ = writeln!(
                out,
                "cml_web_http_requests_total{{method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
    }
}

/// The `# HELP` and `# TYPE` lines of a metric family.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value escaped for the text format (backslash, double quote, newline).
pub fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_match_the_count() {
        let m = Metrics::default();
        for ms in [0, 3, 3, 40, 7000] {
            m.daemon_request("list", Outcome::Ok, Duration::from_millis(ms));
        }
        m.daemon_request("start", Outcome::Refused, Duration::from_millis(1));
        m.http_request("GET", 200);
        m.http_request("BREW", 418);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("cml_web_daemon_requests_total{command=\"list\",outcome=\"ok\"} 5\n"));
        assert!(out.contains("cml_web_daemon_requests_total{command=\"start\",outcome=\"refused\"} 1\n"));
        assert!(
            out.contains("_bucket{command=\"list\",le=\"0.001\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("_bucket{command=\"list\",le=\"0.005\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("_bucket{command=\"list\",le=\"5\"} 4\n"), "{out}");
        assert!(out.contains("_bucket{command=\"list\",le=\"+Inf\"} 5\n"), "{out}");
        assert!(out.contains("_count{command=\"list\"} 5\n"), "{out}");
        assert!(out.contains("cml_web_http_requests_total{method=\"other\",status=\"418\"} 1\n"));
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
