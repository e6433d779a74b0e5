//! `POST /api/check` held against the real routes: for every kind of caller
//! and every operation with a route, the check says allowed exactly when the
//! route goes through, at every step of a sequence that changes the agent
//! under it. Also: a batch answers as its items alone would, an agent one
//! may not see answers exactly like one that does not exist, nothing is
//! written, and the batch's limits and malformed bodies.

use axum::http::{Method, StatusCode};
use base64::Engine;
use biscuit_auth::macros::block;
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::helpers::{Auth, TestApp, ADMIN_PASSWORD};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Owner,
    Admin,
    Stranger,
    /// A grant at this level, made by the owner.
    Direct(&'static str),
    /// A grant at this level, made by someone the owner granted `share`.
    Reshared(&'static str),
    /// A delegated token at this level, minted by the owner.
    Token(&'static str),
    /// The owner's `manage` token, narrowed by its holder to reading only.
    Narrowed,
    ChannelBot,
    Runtime,
}

const CALLERS: [Who; 16] = [
    Who::Owner,
    Who::Admin,
    Who::Stranger,
    Who::Direct("view"),
    Who::Direct("use"),
    Who::Direct("edit"),
    Who::Direct("manage"),
    Who::Direct("share"),
    Who::Reshared("use"),
    Who::Reshared("share"),
    Who::Token("view"),
    Who::Token("manage"),
    Who::Token("share"),
    Who::Narrowed,
    Who::ChannelBot,
    Who::Runtime,
];

/// One host: `olive` owns `helper` (with a runtime token and a channel);
/// `zed` owns `private`, which nobody else sees; `alice` is the admin;
/// `tina` holds `view` from olive; `ghost` does not exist.
struct World {
    app: TestApp,
    olive: String,
    runtime: String,
    bot: String,
}

impl World {
    async fn new() -> Self {
        let app = TestApp::new();
        let alice = app.setup_admin().await;
        let olive = app.add_user(&alice, "olive", "olive-password").await;
        let zed = app.add_user(&alice, "zed", "zed-password").await;
        app.add_user(&alice, "tina", "tina-password").await;
        for (token, name) in [(&olive, "helper"), (&zed, "private")] {
            let r = app.post("/api/agents", token, json!({"name": name})).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        }
        share(&app, &olive, "tina", "view").await;
        let runtime = app
            .post("/api/agents/helper/runtime-token", &olive, json!({}))
            .await;
        assert_eq!(runtime.status, StatusCode::OK, "{}", runtime.body);
        let bot = app
            .post(
                "/api/channels",
                &olive,
                json!({"agent_name": "helper", "type": "webhook", "config": {}}),
            )
            .await;
        assert_eq!(bot.status, StatusCode::OK, "{}", bot.body);
        Self {
            app,
            olive,
            runtime: runtime.token(),
            bot: bot.token(),
        }
    }

    async fn admin(&self) -> String {
        self.app.login("alice", ADMIN_PASSWORD).await.token()
    }

    async fn user(&self, name: &str) -> String {
        let admin = self.admin().await;
        self.app
            .add_user(&admin, name, &format!("{name}-password"))
            .await
    }

    async fn token(&self, level: &str) -> String {
        let r = self
            .app
            .post(
                "/api/tokens",
                &self.olive,
                json!({"agent": "helper", "level": level, "expires_in": 3600}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.token()
    }

    /// The token acting as `who`, and the username it speaks for.
    async fn caller(&self, who: Who) -> (String, &'static str) {
        let app = &self.app;
        match who {
            Who::Owner => (self.olive.clone(), "olive"),
            Who::Admin => (self.admin().await, "alice"),
            Who::Stranger => (self.user("sam").await, "sam"),
            Who::Direct(level) => {
                let t = self.user("gina").await;
                share(app, &self.olive, "gina", level).await;
                (t, "gina")
            }
            Who::Reshared(level) => {
                let sharer = self.user("sharon").await;
                share(app, &self.olive, "sharon", "share").await;
                let t = self.user("rita").await;
                share(app, &sharer, "rita", level).await;
                (t, "rita")
            }
            Who::Token(level) => (self.token(level).await, "olive"),
            Who::Narrowed => {
                let token = self.token("manage").await;
                let bytes = base64::engine::general_purpose::URL_SAFE
                    .decode(&token)
                    .unwrap();
                let narrowed = biscuit_auth::UnverifiedBiscuit::from(&bytes)
                    .unwrap()
                    .append(block!(r#"check if operation("agent:read");"#))
                    .unwrap();
                (narrowed.to_base64().unwrap(), "olive")
            }
            Who::ChannelBot => (self.bot.clone(), "olive"),
            Who::Runtime => (self.runtime.clone(), "olive"),
        }
    }

    async fn check(&self, token: &str, checks: &[Value]) -> (StatusCode, Vec<Value>) {
        let r = self
            .app
            .post("/api/check", token, json!({ "checks": checks }))
            .await;
        if r.status != StatusCode::OK {
            return (r.status, Vec::new());
        }
        let results = r.body["results"].as_array().unwrap().clone();
        assert_eq!(results.len(), checks.len(), "one answer per question");
        (r.status, results)
    }
}

async fn share(app: &TestApp, by: &str, user: &str, level: &str) {
    let r = app
        .post(
            "/api/agents/helper/shares",
            by,
            json!({"user": user, "level": level}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{user} at {level}: {}", r.body);
}

/// A question, and the route call it stands for.
struct Step {
    question: Value,
    method: Method,
    path: String,
    body: Option<Value>,
}

fn step(question: Value, method: Method, path: &str, body: Option<Value>) -> Step {
    Step {
        question,
        method,
        path: path.to_owned(),
        body,
    }
}

/// Every operation with a route, in an order where the routes that take
/// access away come last.
fn steps(me: &str, token: &str) -> Vec<Step> {
    use Method as M;
    let a = "/api/agents/helper";
    let q = |op: &str| json!({ "operation": op });
    let on = |op: &str, agent: &str| json!({ "operation": op, "agent": agent });
    vec![
        step(on("agent:read", "helper"), M::GET, a, None),
        step(
            on("agent:read", "private"),
            M::GET,
            "/api/agents/private",
            None,
        ),
        step(on("agent:read", "ghost"), M::GET, "/api/agents/ghost", None),
        step(q("agent:list"), M::GET, "/api/agents", None),
        step(
            on("agent:shares:read", "helper"),
            M::GET,
            &format!("{a}/shares"),
            None,
        ),
        step(
            on("agent:access:read", "helper"),
            M::GET,
            &format!("{a}/access"),
            None,
        ),
        step(
            on("agent:access:read", "private"),
            M::GET,
            "/api/agents/private/access",
            None,
        ),
        step(q("auth:me"), M::GET, "/auth/me", None),
        step(q("auth:users:list"), M::GET, "/auth/users", None),
        step(q("tokens:list"), M::GET, "/api/tokens", None),
        step(
            q("tokens:inspect"),
            M::POST,
            "/api/tokens/inspect",
            Some(json!({"token": token})),
        ),
        step(q("audit:read"), M::GET, "/api/audit", None),
        step(q("data:read"), M::GET, "/api/secrets", None),
        step(
            q("data:write"),
            M::PUT,
            "/api/user-memory/settings",
            Some(json!({})),
        ),
        step(
            q("agent:create"),
            M::POST,
            "/api/agents",
            Some(json!({"name": "made"})),
        ),
        step(
            q("agent:create_for"),
            M::POST,
            "/api/agents",
            Some(json!({"name": "given", "owner": "zed"})),
        ),
        step(
            q("auth:users:revoke_sessions"),
            M::DELETE,
            "/auth/users/zed/sessions",
            None,
        ),
        step(
            q("auth:users:create"),
            M::POST,
            "/auth/users",
            Some(json!({"username": "newbie"})),
        ),
        step(
            q("auth:users:reset"),
            M::POST,
            "/auth/users/newbie/reset",
            Some(json!({})),
        ),
        step(
            q("admin:backup"),
            M::POST,
            "/api/admin/backup",
            Some(json!({"password": ADMIN_PASSWORD})),
        ),
        step(
            q("auth:users:set_admin"),
            M::POST,
            "/auth/users/zed/admin",
            Some(json!({"is_admin": false})),
        ),
        step(
            on("agent:update", "helper"),
            M::PUT,
            a,
            Some(json!({"model": "m2"})),
        ),
        step(
            on("agent:update", "private"),
            M::PUT,
            "/api/agents/private",
            Some(json!({"model": "m2"})),
        ),
        step(
            on("agent:chat", "helper"),
            M::POST,
            "/api/chat/channels",
            Some(json!({"agent": "helper"})),
        ),
        step(
            on("agent:channel", "helper"),
            M::POST,
            "/api/channels",
            Some(json!({"agent_name": "helper", "type": "webhook", "config": {}})),
        ),
        step(
            on("agent:bind", "helper"),
            M::POST,
            "/api/secrets",
            Some(json!({"name": "bound", "value": "v", "agents": ["helper"]})),
        ),
        step(
            json!({"operation": "agent:tokens:mint", "agent": "helper", "level": "edit"}),
            M::POST,
            "/api/tokens",
            Some(json!({"agent": "helper", "level": "edit", "expires_in": 60})),
        ),
        step(
            json!({"operation": "agent:share", "agent": "helper", "level": "view", "user": "zed"}),
            M::POST,
            &format!("{a}/shares"),
            Some(json!({"user": "zed", "level": "view"})),
        ),
        // Re-granting replaces zed's grant, which belongs to whoever drew it.
        step(
            json!({"operation": "agent:share", "agent": "helper", "level": "use", "user": "zed"}),
            M::POST,
            &format!("{a}/shares"),
            Some(json!({"user": "zed", "level": "use"})),
        ),
        step(
            json!({"operation": "agent:share", "agent": "helper", "level": "manage", "user": "tina"}),
            M::POST,
            &format!("{a}/shares"),
            Some(json!({"user": "tina", "level": "manage"})),
        ),
        step(
            json!({"operation": "agent:unshare", "agent": "helper", "user": "tina"}),
            M::DELETE,
            &format!("{a}/shares/tina"),
            None,
        ),
        step(
            on("agent:runtime:revoke", "helper"),
            M::DELETE,
            &format!("{a}/runtime-token"),
            None,
        ),
        step(
            on("agent:runtime", "helper"),
            M::POST,
            &format!("{a}/runtime-token"),
            Some(json!({})),
        ),
        step(
            on("agent:archive", "helper"),
            M::POST,
            &format!("{a}/archive"),
            Some(json!({})),
        ),
        step(
            on("agent:update", "helper"),
            M::PUT,
            a,
            Some(json!({"model": "frozen"})),
        ),
        step(on("agent:read", "helper"), M::GET, a, None),
        step(
            on("agent:restore", "helper"),
            M::POST,
            &format!("{a}/restore"),
            Some(json!({})),
        ),
        step(
            on("agent:leave", "helper"),
            M::DELETE,
            &format!("{a}/shares/{me}"),
            None,
        ),
        step(
            on("agent:transfer", "helper"),
            M::POST,
            &format!("{a}/transfer"),
            Some(json!({"to": "zed"})),
        ),
        step(on("agent:delete", "helper"), M::DELETE, a, None),
        step(q("auth:users:delete"), M::DELETE, "/auth/users/tina", None),
    ]
}

/// The sequence for one caller on a fresh host: before each route call the
/// whole batch is asked, and the step's answer must match the route.
async fn hold_against_routes(who: Who) -> Vec<String> {
    let world = World::new().await;
    let (token, me) = world.caller(who).await;
    let steps = steps(me, &token);
    let questions: Vec<Value> = steps.iter().map(|s| s.question.clone()).collect();
    let mut failures = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let (status, results) = world.check(&token, &questions).await;
        let r = world
            .app
            .call(
                s.method.clone(),
                &s.path,
                Auth::Bearer(&token),
                s.body.clone(),
            )
            .await;
        if status != StatusCode::OK {
            // A dead token is dead for both.
            if status != r.status {
                failures.push(format!(
                    "{who:?} {}: check {status}, route {}",
                    s.question, r.status
                ));
            }
            continue;
        }
        let allowed = results[i]["allowed"].as_bool().unwrap();
        let went_through = r.status.is_success();
        let refused = matches!(r.status.as_u16(), 401 | 403 | 404);
        if allowed != went_through || (!went_through && !refused) {
            failures.push(format!(
                "{who:?} {} {}: check {} ({}), route {} {}",
                s.method, s.path, results[i], s.question, r.status, r.body
            ));
        }
        if !allowed {
            assert!(results[i]["reason"].is_string(), "a refusal says why");
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_check_matches_its_route_for_every_caller() {
    let mut tasks = Vec::new();
    for who in CALLERS {
        tasks.push(tokio::spawn(hold_against_routes(who)));
    }
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} checks differ from their routes:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn a_runtime_token_is_told_no_on_everything_as_the_routes_tell_it() {
    let world = World::new().await;
    let (status, results) = world
        .check(
            &world.runtime,
            &[
                json!({"operation": "agent:read", "agent": "helper"}),
                json!({"operation": "agent:read", "agent": "ghost"}),
                json!({"operation": "auth:me"}),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for r in &results {
        assert_eq!(r["allowed"], false);
        assert_eq!(
            r["reason"],
            "forbidden: an agent runtime token cannot be used here"
        );
    }
    let route = world.app.get("/api/agents/helper", &world.runtime).await;
    assert_eq!(route.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn limits_and_malformed_batches() {
    let world = World::new().await;
    let olive = &world.olive;
    let read = json!({"operation": "agent:read", "agent": "helper"});
    let (status, results) = world.check(olive, &vec![read.clone(); 100]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(results
        .iter()
        .all(|r| r["allowed"] == true && r["reason"].is_null()));
    let bad_bodies = [
        json!({"checks": []}),
        json!({"checks": vec![read.clone(); 101]}),
        json!({}),
        json!({"checks": "agent:read"}),
        json!({"checks": [read.clone()], "extra": 1}),
        json!({"checks": [{"agent": "helper"}]}),
        json!({"checks": [{"operation": 7}]}),
        json!({"checks": [{"operation": "agent:read", "agent": "helper", "colour": "red"}]}),
        json!({"checks": [{"operation": "agent:read"}]}),
        json!({"checks": [{"operation": "agent:read", "agent": "helper", "level": "view"}]}),
        json!({"checks": [{"operation": "agent:read", "agent": "helper", "user": "tina"}]}),
        json!({"checks": [{"operation": "auth:me", "agent": "helper"}]}),
        json!({"checks": [{"operation": "agent:share", "agent": "helper", "level": "owner"}]}),
        json!({"checks": [{"operation": "agent:share", "agent": "helper", "level": "root"}]}),
        json!({"checks": [{"operation": "agent:unshare", "agent": "helper"}]}),
        json!([read.clone()]),
    ];
    for body in bad_bodies {
        let r = world.app.post("/api/check", olive, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
        assert!(!r.error().is_empty(), "{body}");
    }
    let r = world
        .app
        .call(Method::POST, "/api/check", Auth::Bearer(olive), None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    // The item at fault is named.
    let r = world
        .app
        .post(
            "/api/check",
            olive,
            json!({"checks": [read.clone(), {"operation": "agent:update"}]}),
        )
        .await;
    assert!(r.error().starts_with("checks[1]:"), "{}", r.body);

    // An operation nobody knows is a refusal of that item alone.
    let (status, results) = world
        .check(
            olive,
            &[
                json!({"operation": "agent:teleport", "agent": "helper"}),
                read.clone(),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(results[0]["allowed"], false);
    assert_eq!(results[0]["reason"], "unknown operation \"agent:teleport\"");
    assert_eq!(results[1]["allowed"], true);

    // Who asks must be someone; a cookie needs the CSRF echo like any change.
    let r = world
        .app
        .call(
            Method::POST,
            "/api/check",
            Auth::None,
            Some(json!({"checks": [read.clone()]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let body = json!({"checks": [read.clone()]});
    let r = world
        .app
        .call(
            Method::POST,
            "/api/check",
            Auth::CookieOnly(olive),
            Some(body.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = world
        .app
        .call(Method::POST, "/api/check", Auth::Cookie(olive), Some(body))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["results"][0]["allowed"], true);
}

/// Every agent operation and every host operation, on every kind of agent.
fn question() -> impl Strategy<Value = Value> {
    const AGENT_OPS: &[&str] = &[
        "agent:read",
        "agent:leave",
        "agent:update",
        "agent:archive",
        "agent:restore",
        "agent:tokens:mint",
        "agent:bind",
        "agent:channel",
        "agent:runtime",
        "agent:runtime:revoke",
        "agent:chat",
        "agent:shares:read",
        "agent:access:read",
        "agent:share",
        "agent:unshare",
        "agent:delete",
        "agent:transfer",
    ];
    const HOST_OPS: &[&str] = &[
        "agent:list",
        "agent:create",
        "agent:create_for",
        "auth:me",
        "auth:users:list",
        "auth:users:create",
        "auth:users:reset",
        "auth:users:delete",
        "auth:users:set_admin",
        "auth:users:revoke_sessions",
        "admin:backup",
        "tokens:list",
        "tokens:list_all",
        "tokens:inspect",
        "audit:read",
        "audit:read_all",
        "data:read",
        "data:write",
        "no:such:op",
    ];
    const AGENTS: &[&str] = &["helper", "private", "ghost", "Not A Slug"];
    const LEVELS: &[&str] = &["view", "use", "edit", "manage", "share"];
    const USERS: &[&str] = &["tina", "zed", "olive", "nobody"];
    prop_oneof![
        (
            0..AGENT_OPS.len(),
            0..AGENTS.len(),
            0..LEVELS.len(),
            0..USERS.len()
        )
            .prop_map(|(op, agent, level, user)| {
                let op = AGENT_OPS[op];
                let mut q = json!({"operation": op, "agent": AGENTS[agent]});
                if op == "agent:share" || op == "agent:tokens:mint" {
                    q["level"] = json!(LEVELS[level]);
                }
                if op == "agent:share" || op == "agent:unshare" {
                    q["user"] = json!(USERS[user]);
                }
                q
            }),
        (0..HOST_OPS.len()).prop_map(|op| json!({"operation": HOST_OPS[op]})),
    ]
}

fn audit_count(app: &TestApp) -> usize {
    tessera::domain::audit::list_all(app.state.store.as_ref(), None, usize::MAX)
        .unwrap()
        .len()
}

/// The callers of the property test, all on one host (no two make the same
/// user).
const ASKERS: [Who; 9] = [
    Who::Owner,
    Who::Admin,
    Who::Stranger,
    Who::Direct("use"),
    Who::Reshared("share"),
    Who::Token("view"),
    Who::Narrowed,
    Who::ChannelBot,
    Who::Runtime,
];

/// Any batch answers item by item as each question alone would, an agent
/// the caller cannot see answers exactly like one that does not exist, and
/// asking writes nothing. Asking changes nothing, so one host serves every
/// case.
#[test]
fn batches_answer_as_their_questions_alone() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (world, tokens) = rt.block_on(async {
        let world = World::new().await;
        let mut tokens = Vec::new();
        for who in ASKERS {
            tokens.push(world.caller(who).await.0);
        }
        (world, tokens)
    });
    let written = audit_count(&world.app);
    let config = ProptestConfig {
        cases: 48,
        max_shrink_iters: 32,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let strategy = (
        0..ASKERS.len(),
        proptest::collection::vec(question(), 1..24),
    );
    let outcome = runner.run(&strategy, |(who, batch)| {
        rt.block_on(async {
            let token = &tokens[who];
            let (status, results) = world.check(token, &batch).await;
            prop_assert_eq!(status, StatusCode::OK);
            for (q, answer) in batch.iter().zip(&results) {
                let (_, alone) = world.check(token, std::slice::from_ref(q)).await;
                prop_assert_eq!(&alone[0], answer, "{}", q);
                if q["agent"] == "private" && ASKERS[who] != Who::Admin {
                    let mut ghost = q.clone();
                    ghost["agent"] = json!("ghost");
                    let (_, unseen) = world.check(token, &[ghost]).await;
                    prop_assert_eq!(&unseen[0], answer, "{}: unseen and missing alike", q);
                    let person = matches!(
                        ASKERS[who],
                        Who::Owner | Who::Stranger | Who::Direct(_) | Who::Reshared(_)
                    );
                    if person {
                        prop_assert_eq!(&answer["reason"], "no such agent", "{}", q);
                    }
                }
            }
            let again = world.check(token, &batch).await;
            prop_assert_eq!(again.1, results, "asking twice answers the same");
            Ok(())
        })
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    assert_eq!(audit_count(&world.app), written, "checks are not audited");
}
