//! Prometheus metrics: request counts and latency histograms by route and
//! status, authorization refusals by kind, token and read cache hits and
//! misses, and failed logins. Off unless configured; served on `/metrics` or
//! on a separate listen address.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, State};
use axum::http::{header, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// Latency bucket upper bounds, in seconds.
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

#[derive(Default)]
struct Series {
    count: u64,
    sum: f64,
    buckets: [u64; BUCKETS.len()],
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), Series>>,
    login_failures: AtomicU64,
}

impl Metrics {
    pub fn login_failed(&self) {
        self.login_failures.fetch_add(1, Ordering::Relaxed);
    }

    fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        if let Ok(mut map) = self.requests.lock() {
            let s = map
                .entry((method.to_owned(), route.to_owned(), status))
                .or_default();
            s.count += 1;
            s.sum += seconds;
            for (i, bound) in BUCKETS.iter().enumerate() {
                if seconds <= *bound {
                    s.buckets[i] += 1;
                }
            }
        }
    }

    /// The Prometheus text exposition format.
    /// `token_cache` and `read_cache` are (hits, misses).
    pub fn render(&self, token_cache: (u64, u64), read_cache: (u64, u64)) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP tessera_requests_total Requests served, by route and status."
        );
        let _ = writeln!(out, "# TYPE tessera_requests_total counter");
        let map = match self.requests.lock() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        for ((method, route, status), s) in map.iter() {
            let _ = writeln!(
                out,
                "tessera_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {}",
                s.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP tessera_request_duration_seconds Request latency, by route."
        );
        let _ = writeln!(out, "# TYPE tessera_request_duration_seconds histogram");
        for ((method, route, status), s) in map.iter() {
            let labels = format!("method=\"{method}\",route=\"{route}\",status=\"{status}\"");
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "tessera_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {}",
                    s.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "tessera_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "tessera_request_duration_seconds_sum{{{labels}}} {}",
                s.sum
            );
            let _ = writeln!(
                out,
                "tessera_request_duration_seconds_count{{{labels}}} {}",
                s.count
            );
        }
        let _ = writeln!(out, "# HELP tessera_auth_refusals_total Requests refused: unauthenticated (401), forbidden (403), over a limit (503).");
        let _ = writeln!(out, "# TYPE tessera_auth_refusals_total counter");
        let mut refusals: BTreeMap<&str, u64> =
            BTreeMap::from([("unauthenticated", 0), ("forbidden", 0), ("limit", 0)]);
        for ((_, _, status), s) in map.iter() {
            let reason = match status {
                401 => "unauthenticated",
                403 => "forbidden",
                503 => "limit",
                _ => continue,
            };
            *refusals.entry(reason).or_default() += s.count;
        }
        for (reason, n) in refusals {
            let _ = writeln!(
                out,
                "tessera_auth_refusals_total{{reason=\"{reason}\"}} {n}"
            );
        }
        for (name, help, (hits, misses)) in [
            (
                "tessera_token_cache_total",
                "Verified-token cache lookups.",
                token_cache,
            ),
            (
                "tessera_read_cache_total",
                "Read cache lookups (records and agents in front of the store).",
                read_cache,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name}{{result=\"hit\"}} {hits}");
            let _ = writeln!(out, "{name}{{result=\"miss\"}} {misses}");
        }
        let _ = writeln!(out, "# HELP tessera_login_failures_total Failed logins.");
        let _ = writeln!(out, "# TYPE tessera_login_failures_total counter");
        let _ = writeln!(
            out,
            "tessera_login_failures_total {}",
            self.login_failures.load(Ordering::Relaxed)
        );
        out
    }
}

/// Record every request's route, status and latency.
pub async fn record(State(state): State<AppState>, request: Request<Body>, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    state.metrics.observe(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

pub async fn exposition(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(
            state.authz.cache().stats(),
            state.store.cache().map_or((0, 0), |c| c.stats()),
        ),
    )
}
