//! Cost of the authorization hot path, piece by piece:
//!
//!     cargo bench --bench authz
//!
//! - `verify/cold`: signature check and claim parsing of a token never seen
//! - `verify/warm`: the same token found in the verified-token cache
//! - `policy/auth_me_datalog`: one full Datalog run for a session token
//! - `policy/auth_me`: the same decision as a request sees it (remembered
//!   per token and request facts after the first run)
//! - `request/cold` and `request/warm`: everything a protected route does before
//!   its handler (verify, session and user from the store, policy)
//! - `policy/agent_read_sharee_datalog`: one full Datalog run for a sharee
//!   (`use` through a grant) reading an agent with five grants
//! - `agent_read/warm` and `agent_read/cold`: what `GET /api/agents/{name}`
//!   does before rendering (authenticate, the agent with its grants,
//!   decide), the owner's session token; cold is the token, decision and
//!   read caches off
//! - `agent_read/cold_delegated_twice`: the same cold read by a delegated
//!   `view` token its holder narrowed with two more blocks
//! - `forward/assertion_mint`: signing one forward-auth assertion
//! - `forward/decide_warm`: a whole forward-auth decision on a signed-in
//!   route, its assertion reused from the cache
//! - `password/hash` and `password/verify`: one argon2id login

use std::sync::Arc;

use biscuit_auth::builder::string;
use biscuit_auth::macros::block;
use biscuit_auth::UnverifiedBiscuit;
use criterion::{criterion_group, criterion_main, Criterion};
use tessera::authz::keys::{DataKeys, RootKeys};
use tessera::authz::policy::RequestFacts;
use tessera::authz::tokens;
use tessera::domain::agents::Grantee;
use tessera::domain::audit::AuditEvent;
use tessera::domain::levels::Level;
use tessera::domain::password::Passwords;
use tessera::store::{MemoryStore, Store};
use tessera::{AppState, Config};

// The server's allocator (see `src/main.rs`), so a cold read here allocates
// as it does in the server.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn state_with_admin(rt: &tokio::runtime::Runtime) -> (AppState, String) {
    state_with_admin_and(rt, Config::new("unused"))
}

/// Nothing cached between requests: every token is verified afresh, every
/// decision evaluated and every record read and decoded from the store.
fn cold_config() -> Config {
    let mut config = Config::new("unused");
    config.token_cache_capacity = 0;
    config.decision_memo_capacity = 0;
    config.read_cache_capacity = 0;
    config
}

fn state_with_admin_and(rt: &tokio::runtime::Runtime, config: Config) -> (AppState, String) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let state =
        AppState::build(config, store, RootKeys::ephemeral(), DataKeys::ephemeral()).unwrap();
    let logged_in = rt
        .block_on(
            state
                .accounts
                .setup("admin", "bench-password".into(), Default::default(), true),
        )
        .unwrap();
    let token = state
        .authz
        .mint_session(
            &logged_in.user.id,
            &logged_in.session.id,
            logged_in.session.expires_at,
        )
        .unwrap();
    (state, token)
}

fn authz(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (state, token) = state_with_admin(&rt);
    let now = tessera::domain::now();

    c.bench_function("verify/cold", |b| {
        b.iter(|| tokens::verify(state.authz.keys(), &token).unwrap())
    });
    state.authz.verify(&token, now).unwrap();
    c.bench_function("verify/warm", |b| {
        b.iter(|| state.authz.verify(&token, now).unwrap())
    });

    let caller = state.authenticate(&token).unwrap();
    c.bench_function("policy/auth_me_datalog", |b| {
        b.iter(|| {
            state
                .authz
                .authorize_uncached(&caller.token, &RequestFacts::new("auth:me"))
                .unwrap()
        })
    });
    c.bench_function("policy/auth_me", |b| {
        b.iter(|| {
            state
                .authorize(&caller, RequestFacts::new("auth:me"))
                .unwrap()
        })
    });
    c.bench_function("policy/auth_users_list_admin", |b| {
        b.iter(|| {
            let facts =
                RequestFacts::new("auth:users:list").fact("target_user", [string(&caller.user.id)]);
            state.authorize(&caller, facts).unwrap()
        })
    });

    c.bench_function("request/warm", |b| {
        b.iter(|| {
            let caller = state.authenticate(&token).unwrap();
            state
                .authorize(&caller, RequestFacts::new("auth:me"))
                .unwrap()
        })
    });
    let (cold_state, cold_token) = state_with_admin_and(&rt, cold_config());
    c.bench_function("request/cold", |b| {
        b.iter(|| {
            let caller = cold_state.authenticate(&cold_token).unwrap();
            cold_state
                .authorize(&caller, RequestFacts::new("auth:me"))
                .unwrap()
        })
    });
}

/// `bench-agent`, owned by the admin behind `owner_token`, with five `use`
/// grants. The first grantee finishes sign-up; the session token of that
/// sharee is returned.
fn agent_with_five_grants(
    rt: &tokio::runtime::Runtime,
    state: &AppState,
    owner_token: &str,
) -> String {
    let owner = state.authenticate(owner_token).unwrap().user;
    rt.block_on(async {
        let event = AuditEvent::new(Some(&owner.id), "agent.create", "bench-agent");
        state
            .agents
            .create(&owner, "bench-agent", Default::default(), event)
            .await
            .unwrap();
        let mut first_code = None;
        for i in 0..5 {
            let (invited, code) = state
                .accounts
                .invite(&owner, &format!("user{i}"))
                .await
                .unwrap();
            first_code.get_or_insert(code);
            let event = AuditEvent::new(Some(&owner.id), "agent.share", "bench-agent");
            state
                .agents
                .grant(
                    "bench-agent",
                    Grantee::User(&invited),
                    Level::Use,
                    None,
                    &owner.id,
                    None,
                    event,
                )
                .await
                .unwrap();
        }
        let sharee = state
            .accounts
            .complete_invite(
                "user0",
                &first_code.unwrap(),
                "sharee-password".into(),
                Default::default(),
                false,
            )
            .await
            .unwrap();
        state
            .authz
            .mint_session(
                &sharee.user.id,
                &sharee.session.id,
                sharee.session.expires_at,
            )
            .unwrap()
    })
}

/// A delegated `view` token on `bench-agent` issued by the owner, as
/// `POST /api/tokens` mints it, then narrowed offline by its holder with two
/// more blocks: to reads only, and to that agent.
fn delegated_narrowed_twice(
    rt: &tokio::runtime::Runtime,
    state: &AppState,
    owner_token: &str,
) -> String {
    let owner = state.authenticate(owner_token).unwrap().user;
    let record = rt
        .block_on(state.delegations.create(
            &owner.id,
            "bench-agent",
            Level::View,
            3600,
            None,
            AuditEvent::new(Some(&owner.id), "token.mint", "bench-agent"),
        ))
        .unwrap();
    let token = state
        .authz
        .mint_delegated(
            &owner.id,
            &record.id,
            &record.agent,
            record.level.rank(),
            record.expires_at,
        )
        .unwrap();
    let agent = "bench-agent";
    UnverifiedBiscuit::from_base64(&token)
        .unwrap()
        .append(block!(r#"check if operation("agent:read");"#))
        .unwrap()
        .append(block!(r#"check if resource_agent({agent});"#))
        .unwrap()
        .to_base64()
        .unwrap()
}

/// What `GET /api/agents/{name}` does before rendering: authenticate, find
/// the agent with its grants, decide. The agent has five grants.
fn agent_read(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (label, config) in [("warm", Config::new("unused")), ("cold", cold_config())] {
        let (state, token) = state_with_admin_and(&rt, config);
        let sharee_token = agent_with_five_grants(&rt, &state, &token);
        c.bench_function(&format!("agent_read/{label}"), |b| {
            b.iter(|| {
                let caller = state.authenticate(&token).unwrap();
                let agent = state.agent("bench-agent").unwrap().unwrap();
                let request = AppState::agent_request("agent:read", &agent, &caller.user.id, 0);
                state.authorize(&caller, request).unwrap()
            })
        });
        if label != "cold" {
            continue;
        }
        // The Datalog run alone for a sharee, with the facts
        // `AppState::authorize` adds for an active account.
        let sharee = state.authenticate(&sharee_token).unwrap();
        let agent = state.agent("bench-agent").unwrap().unwrap();
        let request = AppState::agent_request("agent:read", &agent, &sharee.user.id, 0)
            .fact("active", [string(&sharee.user.id)]);
        state.authorize(&sharee, request.clone()).unwrap();
        c.bench_function("policy/agent_read_sharee_datalog", |b| {
            b.iter(|| {
                state
                    .authz
                    .authorize_uncached(&sharee.token, &request)
                    .unwrap()
            })
        });
        let narrowed = delegated_narrowed_twice(&rt, &state, &token);
        c.bench_function("agent_read/cold_delegated_twice", |b| {
            b.iter(|| {
                let caller = state.authenticate(&narrowed).unwrap();
                let agent = state.agent("bench-agent").unwrap().unwrap();
                let request = AppState::agent_request("agent:read", &agent, &caller.user.id, 0);
                state.authorize(&caller, request).unwrap()
            })
        });
    }
}

fn password(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let passwords = Passwords::new(2).unwrap();
    let hash = rt
        .block_on(passwords.hash("bench-password".into()))
        .unwrap();
    let mut group = c.benchmark_group("password");
    group.sample_size(20);
    group.bench_function("hash", |b| {
        b.iter(|| {
            rt.block_on(passwords.hash("bench-password".into()))
                .unwrap()
        })
    });
    group.bench_function("verify", |b| {
        b.iter(|| {
            rt.block_on(passwords.verify("bench-password".into(), Some(hash.clone())))
                .unwrap()
        })
    });
    group.finish();
}

/// Forward auth: what minting the assertion costs, and a warm decision.
fn forward(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (state, token) = state_with_admin(&rt);
    let facts = tokens::AssertionFacts {
        user: "u1",
        username: "bob",
        operation: "agent:chat",
        method: "POST",
        path: "/api/agents/helper/messages",
        agent: Some(("helper", "use")),
        expires_at: tessera::domain::now() + 60,
    };
    c.bench_function("forward/assertion_mint", |b| {
        b.iter(|| state.authz.mint_assertion(&facts).unwrap())
    });
    let request = tessera::forward::OriginalRequest::parse("GET", "/desktop").unwrap();
    c.bench_function("forward/decide_warm", |b| {
        b.iter(|| {
            state
                .forward
                .decide(&state, &request, Ok(Some(token.clone())))
                .unwrap()
        })
    });
}

criterion_group!(benches, authz, agent_read, forward, password);
criterion_main!(benches);
