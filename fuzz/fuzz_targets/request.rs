//! Whole requests through the real router (no socket): any method, path,
//! query, headers and body, with or without a valid session token. Never a
//! panic, never a 500.

#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tessera::authz::keys::{DataKeys, RootKeys};
use tessera::store::{MemoryStore, Store};
use tessera::{AppState, Config};
use tower::ServiceExt;

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];
/// Where routes start, so inputs reach handlers rather than only the 404.
const PREFIXES: &[&str] = &[
    "/auth/",
    "/auth/users/",
    "/api/agents/",
    "/api/tokens/",
    "/api/audit",
    "/api/check",
    "/api/secrets/",
    "/api/user-memory/",
    "/api/chat/",
    "/api/channels/",
    "/",
];

#[derive(Debug, Arbitrary)]
struct Input {
    method: u8,
    prefix: u8,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    signed_in: bool,
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    state: AppState,
    token: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let state = AppState::build(
            Config::new("unused"),
            store,
            RootKeys::ephemeral(),
            DataKeys::ephemeral(),
        )
        .expect("a state");
        let admin = runtime
            .block_on(state.accounts.setup(
                "admin",
                "fuzz-password".into(),
                Default::default(),
                true,
            ))
            .expect("first-run setup");
        let token = state
            .authz
            .mint_session(&admin.user.id, &admin.session.id, admin.session.expires_at)
            .expect("a session token");
        Fixture {
            runtime,
            state,
            token,
        }
    })
}

fuzz_target!(|input: Input| {
    let f = fixture();
    let method = METHODS[usize::from(input.method) % METHODS.len()];
    let prefix = PREFIXES[usize::from(input.prefix) % PREFIXES.len()];
    let mut uri = format!("{prefix}{}", input.path);
    if !input.query.is_empty() {
        uri = format!("{uri}?{}", input.query);
    }
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in &input.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    if input.signed_in {
        request = request.header("authorization", format!("Bearer {}", f.token));
    }
    // The http crate refuses what is not a valid request line or header:
    // that never reaches a server.
    let Ok(request) = request.body(Body::from(input.body)) else {
        return;
    };
    let response = f
        .runtime
        .block_on(tessera::app(f.state.clone()).oneshot(request))
        .expect("the router is infallible");
    assert_ne!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
});
