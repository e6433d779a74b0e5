//! Hostile input: random and mutated tokens, cookies, headers, bodies, path
//! segments and query strings against every route never get a 500, a panic
//! or a hang; overload is answered 503 at once; Datalog carried in a token
//! cannot stall the server.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use biscuit_auth::{Biscuit, BlockBuilder};
use proptest::prelude::*;
use serde_json::json;

use crate::helpers::TestApp;

/// Every route, with `{}` where a path segment goes.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/auth/status"),
    ("POST", "/auth/setup"),
    ("POST", "/auth/login"),
    ("POST", "/auth/logout"),
    ("POST", "/auth/lock"),
    ("POST", "/auth/complete"),
    ("GET", "/auth/me"),
    ("GET", "/auth/keys"),
    ("GET", "/auth/users"),
    ("POST", "/auth/users"),
    ("DELETE", "/auth/users/{}"),
    ("POST", "/auth/users/{}/reset"),
    ("POST", "/auth/users/{}/admin"),
    ("DELETE", "/auth/users/{}/sessions"),
    ("POST", "/auth/users/{}/profile"),
    ("POST", "/auth/users/{}/password"),
    ("GET", "/api/agents"),
    ("POST", "/api/agents"),
    ("GET", "/api/agents/{}"),
    ("PUT", "/api/agents/{}"),
    ("DELETE", "/api/agents/{}"),
    ("POST", "/api/agents/{}/archive"),
    ("POST", "/api/agents/{}/restore"),
    ("POST", "/api/agents/{}/transfer"),
    ("GET", "/api/agents/{}/shares"),
    ("GET", "/api/agents/{}/access"),
    ("POST", "/api/agents/{}/shares"),
    ("DELETE", "/api/agents/{}/shares/{}"),
    ("POST", "/api/agents/{}/runtime-token"),
    ("PUT", "/api/agents/{}/permissions"),
    ("GET", "/api/tokens"),
    ("POST", "/api/tokens"),
    ("POST", "/api/tokens/inspect"),
    ("POST", "/api/check"),
    ("DELETE", "/api/tokens/{}"),
    ("GET", "/api/audit"),
    ("POST", "/api/admin/backup"),
    ("GET", "/api/secrets"),
    ("POST", "/api/secrets"),
    ("GET", "/api/secrets/{}"),
    ("PUT", "/api/secrets/{}"),
    ("DELETE", "/api/secrets/{}"),
    ("GET", "/api/secrets/agent/{}"),
    ("GET", "/api/user-memory/stats"),
    ("PUT", "/api/user-memory/settings"),
    ("GET", "/api/user-memory/search"),
    ("GET", "/api/user-memory/browse"),
    ("POST", "/api/user-memory/save"),
    ("GET", "/api/user-memory/chunk/{}"),
    ("DELETE", "/api/user-memory/chunk/{}"),
    ("GET", "/api/user-memory/collections"),
    ("PUT", "/api/user-memory/grants/{}"),
    ("GET", "/api/user-memory/agent-search"),
    ("GET", "/api/chat/channels"),
    ("POST", "/api/chat/channels"),
    ("GET", "/api/chat/messages"),
    ("POST", "/api/chat/messages"),
    ("PATCH", "/api/chat/messages/{}"),
    ("GET", "/api/chat/unread"),
    ("POST", "/api/chat/mark-read"),
    ("GET", "/api/channels"),
    ("POST", "/api/channels"),
    ("POST", "/api/channels/{}/toggle"),
    ("DELETE", "/api/channels/{}"),
];

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("helper".to_owned()),
        Just("alice".to_owned()),
        "[a-z0-9-]{1,20}",
        "(%[0-9A-F]{2}|[!-~]){1,30}".prop_map(|s| s.replace(['/', '?', '#'], "_")),
        Just("..%2F..%2Fetc".to_owned()),
        Just("%00".to_owned()),
        Just("x".repeat(3000)),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        proptest::collection::vec(any::<u8>(), 0..200),
        Just(br#"{"username": "alice", "password": "admin-password"}"#.to_vec()),
        Just(br#"{"name": "helper", "level": "owner", "user": "alice", "agent": "helper", "expires_in": -5}"#.to_vec()),
        Just(br#"{"content": null, "channel_id": 7, "value": [1,2], "agents": {"a": 1}}"#.to_vec()),
        Just(b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[".to_vec()),
        "\\PC{0,100}".prop_map(|s| format!("{{\"name\": {s:?}, \"content\": {s:?}}}").into_bytes()),
    ]
}

#[derive(Debug, Clone)]
enum Credential {
    None,
    Good,
    Garbage(String),
    CookieGarbage(String),
    Mutated(usize, u8),
}

fn credential() -> impl Strategy<Value = Credential> {
    prop_oneof![
        Just(Credential::None),
        Just(Credential::Good),
        "\\PC{0,300}".prop_map(Credential::Garbage),
        "[ -~]{0,300}".prop_map(Credential::CookieGarbage),
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Credential::Mutated(i, x)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn no_input_gets_a_server_error_or_a_hang(
        route in 0..ROUTES.len(),
        segments in proptest::collection::vec(segment(), 2),
        query in "[ -~]{0,60}",
        body in body(),
        credential in credential(),
        json_type in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let app = TestApp::new();
            let good = app.setup_admin().await;
            app.post("/api/agents", &good, json!({"name": "helper"})).await;
            let (method, template) = ROUTES[route];
            let mut path = template.to_owned();
            for s in &segments {
                path = path.replacen("{}", s, 1);
            }
            let query: String = query.chars().filter(|c| !c.is_whitespace() && *c != '#').collect();
            let uri = if query.is_empty() { path } else { format!("{path}?{query}") };
            let Ok(mut req) = Request::builder().method(method).uri(&uri).body(Body::from(body.clone())) else {
                return Ok(()); // not even a valid request line: the HTTP layer refuses it
            };
            if json_type {
                req.headers_mut().insert("content-type", "application/json".parse().unwrap());
            }
            let set = |req: &mut Request<Body>, name: &'static str, value: String| {
                if let Ok(v) = value.parse() {
                    req.headers_mut().insert(name, v);
                }
            };
            match &credential {
                Credential::None => {}
                Credential::Good => set(&mut req, "authorization", format!("Bearer {good}")),
                Credential::Garbage(g) => set(&mut req, "authorization", format!("Bearer {g}")),
                Credential::CookieGarbage(g) => set(&mut req, "cookie", format!("taos_session={g}")),
                Credential::Mutated(i, x) => {
                    let mut bytes = good.clone().into_bytes();
                    let at = i % bytes.len();
                    bytes[at] ^= x;
                    set(&mut req, "authorization", format!("Bearer {}", String::from_utf8_lossy(&bytes)));
                }
            }
            let started = Instant::now();
            let resp = tokio::time::timeout(Duration::from_secs(10), app.send(req)).await;
            let resp = resp.expect("answered within 10 s");
            prop_assert!(!resp.status.is_server_error(), "{method} {uri} ({credential:?}): {} {}", resp.status, resp.body);
            if resp.status.is_client_error() {
                prop_assert!(resp.body["error"].is_string(), "{method} {uri}: {}", resp.body);
            }
            prop_assert!(started.elapsed() < Duration::from_secs(5));
            Ok(())
        })?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_answered_503_at_once() {
    let app = std::sync::Arc::new(TestApp::with_config(|c| c.max_concurrent_requests = 2));
    app.setup_admin().await;
    // Logins hold their slot for an argon2 run: 16 at once overflow 2 slots.
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { app.login("alice", crate::helpers::ADMIN_PASSWORD).await })
        })
        .collect();
    let mut busy = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                busy += 1;
                assert_eq!(r.headers["retry-after"], "1");
                assert!(r.body["error"].is_string());
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert!(busy > 0, "some requests were shed");
}

#[tokio::test]
async fn expensive_datalog_in_a_token_is_cut_off_quickly() {
    let app = TestApp::new();
    let good = app.setup_admin().await;
    let public = app.state.authz.keys().public(None).unwrap();
    let biscuit = Biscuit::from_base64(&good, public).unwrap();
    let mut facts = String::new();
    for i in 0..60 {
        facts.push_str(&format!("n({i});\n"));
    }
    let hostile = [
        // A rule that squares the world.
        format!("{facts}pair($a, $b) <- n($a), n($b);\ncheck if pair(1, 2);"),
        // Regular expressions over generated strings.
        r#"s("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!");
           check if s($x), $x.matches("^(a+)+$");"#
            .to_owned(),
        // A transitive closure over a dense graph.
        format!("{facts}edge($a, $b) <- n($a), n($b);\npath($a, $c) <- edge($a, $b), path($b, $c);\npath($a, $b) <- edge($a, $b);\ncheck if path(0, 999);"),
    ];
    for code in hostile {
        let token = biscuit
            .append(BlockBuilder::new().code(&code).unwrap())
            .unwrap()
            .to_base64()
            .unwrap();
        let started = Instant::now();
        let r = app.get("/auth/me", &token).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{code}: took {:?}",
            started.elapsed()
        );
        assert!(
            r.status == StatusCode::FORBIDDEN || r.status == StatusCode::SERVICE_UNAVAILABLE,
            "{code}: {} {}",
            r.status,
            r.body
        );
        assert!(r.body["error"].is_string());
    }
}

/// `/metrics` is off by default, and when on its exposition parses.
#[tokio::test]
async fn metrics_exposition_parses() {
    let off = TestApp::new();
    assert_eq!(
        off.call(
            axum::http::Method::GET,
            "/metrics",
            crate::helpers::Auth::None,
            None
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );

    let app = TestApp::with_config(|c| c.metrics = true);
    let admin = app.setup_admin().await;
    app.get("/auth/me", &admin).await;
    app.get("/auth/me", &admin).await;
    app.get("/auth/users", "garbage").await;
    app.login("alice", "wrong-password").await;
    let req = Request::get("/metrics").body(Body::empty()).unwrap();
    let resp = tower::ServiceExt::oneshot(app.router.clone(), req)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let mut samples = std::collections::BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        if let Some(labels) = series.split_once('{').map(|(_, l)| l) {
            assert!(labels.ends_with('}'), "{line}");
            for pair in labels.trim_end_matches('}').split("\",") {
                let (k, v) = pair
                    .split_once("=\"")
                    .unwrap_or_else(|| panic!("bad label in {line:?}"));
                assert!(
                    k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !v.contains('\n')
                );
            }
        }
        samples.insert(series.to_owned(), value);
    }
    assert_eq!(
        samples[r#"tessera_requests_total{method="GET",route="/auth/me",status="200"}"#],
        2.0
    );
    // The garbage token and the wrong password.
    assert_eq!(
        samples[r#"tessera_auth_refusals_total{reason="unauthenticated"}"#],
        2.0
    );
    assert_eq!(samples["tessera_login_failures_total"], 1.0);
    assert!(samples[r#"tessera_token_cache_total{result="hit"}"#] >= 1.0);
    // The second /auth/me found its session and account already decoded.
    assert!(samples[r#"tessera_read_cache_total{result="hit"}"#] >= 2.0);
    assert!(samples[r#"tessera_read_cache_total{result="miss"}"#] >= 1.0);
    assert!(samples
        .keys()
        .any(|k| k.starts_with("tessera_request_duration_seconds_bucket")));
}
