//! Per-user data: memory, chats, secrets and channels. The isolation matrix
//! runs every route of that surface, each aimed at alice's data, for every
//! kind of caller, and checks both the status and that alice's private
//! values never reach anyone who may not see them.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{fixtures, Auth, TestApp, ADMIN_PASSWORD};

const MEMORY_CANARY: &str = "tealcanarymemory";
const SECRET_CANARY: &str = "sk-canary-secret-value";
const CHAT_CANARY: &str = "canary chat message";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Alice,
    Bob,
    Admin,
    Sharee(&'static str),
    Bot,
    HelperRuntime,
    ResearchRuntime,
}

const COLUMNS: [Who; 11] = [
    Who::Alice,
    Who::Bob,
    Who::Admin,
    Who::Sharee("view"),
    Who::Sharee("use"),
    Who::Sharee("edit"),
    Who::Sharee("manage"),
    Who::Sharee("share"),
    Who::Bot,
    Who::HelperRuntime,
    Who::ResearchRuntime,
];

struct World {
    app: TestApp,
    tokens: Vec<(Who, String)>,
    chunk: String,
    dm: String,
    message: String,
    channel: String,
    channel_conversation: String,
}

impl World {
    async fn new() -> Self {
        let app = TestApp::new();
        let root = app.setup_admin().await;
        let alice = app.add_user(&root, "al", "alice-password").await;
        let bob = app.add_user(&root, "bob", "bob-password").await;
        for agent in ["helper", "research"] {
            let r = app
                .post("/api/agents", &alice, json!({"name": agent}))
                .await;
            assert_eq!(r.status, StatusCode::OK);
        }
        let mut tokens = vec![
            (Who::Alice, alice.clone()),
            (Who::Bob, bob),
            (Who::Admin, root.clone()),
        ];
        for level in ["view", "use", "edit", "manage", "share"] {
            let name = format!("s-{level}");
            let t = app.add_user(&root, &name, "sharee-password").await;
            let r = app
                .post(
                    "/api/agents/helper/shares",
                    &alice,
                    json!({"user": name, "level": level}),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK);
            tokens.push((Who::Sharee(level), t));
        }
        let saved = app
            .post(
                "/api/user-memory/save",
                &alice,
                json!({"content": format!("note {MEMORY_CANARY}"), "title": "note"}),
            )
            .await;
        let chunk = saved.body["hash"].as_str().unwrap().to_owned();
        let r = app
            .post(
                "/api/secrets",
                &alice,
                json!({"name": "ALICE_KEY", "value": SECRET_CANARY, "agents": ["helper"]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let r = app
            .call(
                Method::PUT,
                "/api/user-memory/grants/helper",
                Auth::Bearer(&alice),
                Some(json!({"allowed": true})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let dm = app
            .post("/api/chat/channels", &alice, json!({"agent": "helper"}))
            .await;
        let dm = dm.body["id"].as_str().unwrap().to_owned();
        let m = app
            .post(
                "/api/chat/messages",
                &alice,
                json!({"channel_id": dm, "content": CHAT_CANARY}),
            )
            .await;
        let message = m.body["id"].as_str().unwrap().to_owned();
        let ch = app
            .post(
                "/api/channels",
                &alice,
                json!({"agent_name": "helper", "type": "telegram", "config": {"bot_token_secret": "ALICE_KEY"}}),
            )
            .await;
        assert_eq!(ch.status, StatusCode::OK, "{}", ch.body);
        tokens.push((Who::Bot, ch.body["token"].as_str().unwrap().to_owned()));
        let channel = ch.body["id"].as_str().unwrap().to_owned();
        let channel_conversation = ch.body["conversation_id"].as_str().unwrap().to_owned();
        for (who, agent) in [
            (Who::HelperRuntime, "helper"),
            (Who::ResearchRuntime, "research"),
        ] {
            let r = app
                .post(
                    &format!("/api/agents/{agent}/runtime-token"),
                    &alice,
                    json!({}),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            tokens.push((who, r.body["token"].as_str().unwrap().to_owned()));
        }
        Self {
            app,
            tokens,
            chunk,
            dm,
            message,
            channel,
            channel_conversation,
        }
    }

    fn token(&self, who: Who) -> &str {
        &self.tokens.iter().find(|(w, _)| *w == who).unwrap().1
    }
}

#[derive(Clone, Copy, Debug)]
enum Route {
    MemoryBrowse,
    MemorySearch,
    MemoryChunk,
    AgentSearchAlice,
    SecretsList,
    SecretReveal,
    SecretsForHelper,
    SecretBindToHelper,
    ChatReadDm,
    ChatPostDm,
    ChatEditAlicesMessage,
    ChatReadChannelConversation,
    ChatUnread,
    ChannelsList,
    ChannelToggle,
    MemoryGrantHelper,
    RuntimeTokenHelper,
}

/// Columns: alice bob admin | sharee view use edit manage share | bot helper-runtime research-runtime
#[rustfmt::skip]
const MATRIX: &[(Route, [u16; 11])] = &[
    (Route::MemoryBrowse,                [200, 200, 200,  200, 200, 200, 200, 200,  403, 403, 403]),
    (Route::MemorySearch,                [200, 200, 200,  200, 200, 200, 200, 200,  403, 403, 403]),
    (Route::MemoryChunk,                 [200, 404, 404,  404, 404, 404, 404, 404,  403, 403, 403]),
    (Route::AgentSearchAlice,            [403, 403, 403,  403, 403, 403, 403, 403,  403, 200, 403]),
    (Route::SecretsList,                 [200, 200, 200,  200, 200, 200, 200, 200,  403, 403, 403]),
    (Route::SecretReveal,                [200, 404, 404,  404, 404, 404, 404, 404,  403, 403, 403]),
    (Route::SecretsForHelper,            [403, 403, 403,  403, 403, 403, 403, 403,  403, 200, 403]),
    (Route::SecretBindToHelper,          [200, 404, 200,  403, 403, 403, 200, 200,  403, 403, 403]),
    (Route::ChatReadDm,                  [200, 404, 404,  404, 404, 404, 404, 404,  404, 200, 404]),
    (Route::ChatPostDm,                  [200, 404, 404,  404, 404, 404, 404, 404,  404, 200, 404]),
    (Route::ChatEditAlicesMessage,       [200, 404, 404,  404, 404, 404, 404, 404,  404, 403, 404]),
    (Route::ChatReadChannelConversation, [200, 404, 404,  404, 404, 404, 404, 404,  200, 200, 404]),
    (Route::ChatUnread,                  [200, 200, 200,  200, 200, 200, 200, 200,  403, 403, 403]),
    (Route::ChannelsList,                [200, 200, 200,  200, 200, 200, 200, 200,  403, 403, 403]),
    (Route::ChannelToggle,               [200, 404, 404,  404, 404, 404, 404, 404,  403, 403, 403]),
    (Route::MemoryGrantHelper,           [200, 404, 200,  200, 200, 200, 200, 200,  403, 403, 403]),
    (Route::RuntimeTokenHelper,          [200, 404, 403,  403, 403, 403, 403, 403,  404, 403, 403]),
];

/// Who may see which of alice's private values in a successful answer.
fn may_see(route: Route, who: Who) -> bool {
    match who {
        Who::Alice => true,
        Who::HelperRuntime => matches!(
            route,
            Route::AgentSearchAlice
                | Route::SecretsForHelper
                | Route::ChatReadDm
                | Route::ChatReadChannelConversation
        ),
        Who::Bot => matches!(route, Route::ChatReadChannelConversation),
        _ => false,
    }
}

fn destructive(route: Route) -> bool {
    matches!(route, Route::ChannelToggle | Route::RuntimeTokenHelper)
}

impl World {
    async fn call(&self, route: Route, token: &str) -> (StatusCode, Value) {
        let app = &self.app;
        let put = |path: &'static str, body: Value| {
            app.call(Method::PUT, path, Auth::Bearer(token), Some(body))
        };
        let r = match route {
            Route::MemoryBrowse => app.get("/api/user-memory/browse", token).await,
            Route::MemorySearch => app.get("/api/user-memory/search?q=note", token).await,
            Route::MemoryChunk => {
                app.get(&format!("/api/user-memory/chunk/{}", self.chunk), token)
                    .await
            }
            Route::AgentSearchAlice => {
                app.get(
                    &format!("/api/user-memory/agent-search?user=al&q={MEMORY_CANARY}"),
                    token,
                )
                .await
            }
            Route::SecretsList => app.get("/api/secrets", token).await,
            Route::SecretReveal => app.get("/api/secrets/ALICE_KEY", token).await,
            Route::SecretsForHelper => app.get("/api/secrets/agent/helper", token).await,
            Route::SecretBindToHelper => {
                app.post(
                    "/api/secrets",
                    token,
                    json!({"name": "mine", "value": "v", "agents": ["helper"]}),
                )
                .await
            }
            Route::ChatReadDm => {
                app.get(&format!("/api/chat/messages?channel_id={}", self.dm), token)
                    .await
            }
            Route::ChatPostDm => {
                app.post(
                    "/api/chat/messages",
                    token,
                    json!({"channel_id": self.dm, "content": "hi"}),
                )
                .await
            }
            Route::ChatEditAlicesMessage => {
                let path = format!("/api/chat/messages/{}", self.message);
                app.call(
                    Method::PATCH,
                    &path,
                    Auth::Bearer(token),
                    Some(json!({"content": "changed"})),
                )
                .await
            }
            Route::ChatReadChannelConversation => {
                let path = format!(
                    "/api/chat/messages?channel_id={}",
                    self.channel_conversation
                );
                app.get(&path, token).await
            }
            Route::ChatUnread => app.get("/api/chat/unread", token).await,
            Route::ChannelsList => app.get("/api/channels", token).await,
            Route::ChannelToggle => {
                app.post(
                    &format!("/api/channels/{}/toggle", self.channel),
                    token,
                    json!({}),
                )
                .await
            }
            Route::MemoryGrantHelper => {
                put("/api/user-memory/grants/helper", json!({"allowed": true})).await
            }
            Route::RuntimeTokenHelper => {
                app.post("/api/agents/helper/runtime-token", token, json!({}))
                    .await
            }
        };
        (r.status, r.body)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_matrix() {
    let mut tasks = Vec::new();
    for (col, who) in COLUMNS.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let shared = World::new().await;
            for (route, row) in MATRIX {
                let fresh = if destructive(*route) {
                    Some(World::new().await)
                } else {
                    None
                };
                let world = fresh.as_ref().unwrap_or(&shared);
                let (status, body) = world.call(*route, world.token(who)).await;
                if status.as_u16() != row[col] {
                    failures.push(format!(
                        "{route:?} as {who:?}: expected {}, got {status} {body}",
                        row[col]
                    ));
                }
                let text = body.to_string();
                let leaked = [MEMORY_CANARY, SECRET_CANARY, CHAT_CANARY]
                    .iter()
                    .any(|c| text.contains(c));
                if leaked && !may_see(*route, who) {
                    failures.push(format!("{route:?} as {who:?}: alice's data leaked: {text}"));
                }
                if status.is_client_error() && !body["error"].is_string() {
                    failures.push(format!("{route:?} as {who:?}: error without a message"));
                }
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} cells differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// What the matrix's successful cells return is really alice's data.
#[tokio::test]
async fn the_owner_and_the_granted_runtime_really_read_it() {
    let w = World::new().await;
    let (_, body) = w.call(Route::MemorySearch, w.token(Who::Alice)).await;
    assert!(body["results"][0]["content"]
        .as_str()
        .unwrap()
        .contains(MEMORY_CANARY));
    let (_, body) = w
        .call(Route::AgentSearchAlice, w.token(Who::HelperRuntime))
        .await;
    assert!(body["results"][0]["content"]
        .as_str()
        .unwrap()
        .contains(MEMORY_CANARY));
    let (_, body) = w
        .call(Route::SecretsForHelper, w.token(Who::HelperRuntime))
        .await;
    assert_eq!(body[0]["value"], SECRET_CANARY);
    let (_, body) = w.call(Route::SecretReveal, w.token(Who::Alice)).await;
    assert_eq!(body["value"], SECRET_CANARY);
    let (_, body) = w.call(Route::SecretsList, w.token(Who::Alice)).await;
    assert_eq!(body[0]["value"], "***");
    // The agent replies; the reply records the agent as author.
    let r = w
        .app
        .post(
            "/api/chat/messages",
            w.token(Who::HelperRuntime),
            json!({"channel_id": w.dm, "content": "Noted."}),
        )
        .await;
    assert_eq!(
        (r.body["author_id"].as_str(), r.body["author_type"].as_str()),
        (Some("helper"), Some("agent"))
    );
    let unread = w.app.get("/api/chat/unread", w.token(Who::Alice)).await;
    assert_eq!(unread.body["unread"][&w.dm], 1);
    let r = w
        .app
        .post(
            "/api/chat/mark-read",
            w.token(Who::Alice),
            json!({"channel_id": w.dm}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        w.app
            .get("/api/chat/unread", w.token(Who::Alice))
            .await
            .body["unread"][&w.dm],
        0
    );
    // The bot posts into its conversation only.
    let bot = w.token(Who::Bot);
    let r = w
        .app
        .post(
            "/api/chat/messages",
            bot,
            json!({"channel_id": w.channel_conversation, "content": "from telegram"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["author_type"], "channel");
    // Withdrawing the grant ends the agent's reading at once.
    let r = w
        .app
        .call(
            Method::PUT,
            "/api/agents/helper/permissions",
            Auth::Bearer(w.token(Who::Alice)),
            Some(json!({"can_read_user_memory": false})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        w.call(Route::AgentSearchAlice, w.token(Who::HelperRuntime))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn channel_and_runtime_tokens_die_with_what_keeps_them() {
    let w = World::new().await;
    let alice = w.token(Who::Alice).to_owned();
    let bot = w.token(Who::Bot).to_owned();
    let read = |t: String| {
        let w = &w;
        async move { w.call(Route::ChatReadChannelConversation, &t).await.0 }
    };
    assert_eq!(read(bot.clone()).await, StatusCode::OK);
    w.app
        .post(
            &format!("/api/channels/{}/toggle", w.channel),
            &alice,
            json!({}),
        )
        .await;
    assert_eq!(
        read(bot.clone()).await,
        StatusCode::UNAUTHORIZED,
        "disabled"
    );
    w.app
        .post(
            &format!("/api/channels/{}/toggle", w.channel),
            &alice,
            json!({}),
        )
        .await;
    assert_eq!(read(bot.clone()).await, StatusCode::OK, "enabled again");
    w.app
        .delete(&format!("/api/channels/{}", w.channel), &alice)
        .await;
    assert_eq!(read(bot).await, StatusCode::UNAUTHORIZED, "deleted");

    let old = w.token(Who::HelperRuntime).to_owned();
    let r = w
        .app
        .post("/api/agents/helper/runtime-token", &alice, json!({}))
        .await;
    let new = r.body["token"].as_str().unwrap().to_owned();
    assert_eq!(
        w.call(Route::SecretsForHelper, &old).await.0,
        StatusCode::UNAUTHORIZED,
        "rotated"
    );
    assert_eq!(
        w.call(Route::SecretsForHelper, &new).await.0,
        StatusCode::OK
    );

    // A bound secret is released only while its owner manages the agent.
    let carol = w
        .app
        .add_user(
            &w.app.login("alice", ADMIN_PASSWORD).await.token(),
            "carol",
            "carol-password",
        )
        .await;
    w.app
        .post(
            "/api/agents/helper/shares",
            &alice,
            json!({"user": "carol", "level": "manage"}),
        )
        .await;
    let r = w
        .app
        .post(
            "/api/secrets",
            &carol,
            json!({"name": "CAROLS", "value": "carol-value", "agents": ["helper"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let names = |b: Value| {
        let mut n = b
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>();
        n.sort();
        n
    };
    assert_eq!(
        names(w.call(Route::SecretsForHelper, &new).await.1),
        ["ALICE_KEY", "CAROLS"]
    );
    w.app
        .post(
            "/api/agents/helper/shares",
            &alice,
            json!({"user": "carol", "level": "use"}),
        )
        .await;
    assert_eq!(
        names(w.call(Route::SecretsForHelper, &new).await.1),
        ["ALICE_KEY"]
    );

    // Deleting the agent ends its runtime, and a new agent of the same name
    // inherits nothing.
    w.app.delete("/api/agents/helper", &alice).await;
    assert_eq!(
        w.call(Route::SecretsForHelper, &new).await.0,
        StatusCode::UNAUTHORIZED
    );
    let bob = w.token(Who::Bob).to_owned();
    w.app
        .post("/api/agents", &bob, json!({"name": "helper"}))
        .await;
    let r = w
        .app
        .post("/api/agents/helper/runtime-token", &bob, json!({}))
        .await;
    let impostor = r.body["token"].as_str().unwrap().to_owned();
    assert_eq!(
        w.call(Route::SecretsForHelper, &impostor).await.1,
        json!([])
    );
    assert_eq!(
        w.call(Route::AgentSearchAlice, &impostor).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        w.call(Route::ChatReadDm, &impostor).await.0,
        StatusCode::NOT_FOUND
    );
}

/// The holes the legacy server had (recorded in api-log.json) are closed.
#[tokio::test]
async fn the_legacy_holes_stay_closed() {
    let w = World::new().await;
    let bob = w.token(Who::Bob);
    // Another user browsing memory sees only their own (here: nothing).
    let r = w.app.get("/api/user-memory/browse", bob).await;
    assert_eq!(r.body["chunks"], json!([]));
    // Any user reading a secret in plaintext.
    assert_eq!(
        w.app.get("/api/secrets/ALICE_KEY", bob).await.status,
        StatusCode::NOT_FOUND
    );
    // Anonymous, and the legacy host-wide token.
    let r = w
        .app
        .call(Method::GET, "/api/secrets", Auth::None, None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let host_token =
        std::fs::read_to_string(fixtures().join("multi-user/.auth_local_token")).unwrap();
    for path in [
        "/api/secrets",
        "/api/user-memory/browse",
        "/api/agents",
        "/api/chat/channels",
    ] {
        let r = w.app.get(path, host_token.trim()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    // Editing a message written by someone else.
    let r = w
        .app
        .call(
            Method::PATCH,
            &format!("/api/chat/messages/{}", w.message),
            Auth::Bearer(bob),
            Some(json!({"content": "x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_input_is_a_clear_4xx_and_writes_nothing() {
    let w = World::new().await;
    let alice = w.token(Who::Alice);
    for (path, body, status) in [
        (
            "/api/secrets",
            json!({"name": "", "value": "x"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/secrets",
            json!({"name": "a/b", "value": "x"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/secrets",
            json!({"name": "big", "value": "x".repeat(70_000)}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/secrets",
            json!({"name": "ALICE_KEY", "value": "again"}),
            StatusCode::CONFLICT,
        ),
        (
            "/api/secrets",
            json!({"name": "k", "value": "x", "agents": ["no-such-agent"]}),
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/user-memory/save",
            json!({"content": ""}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/user-memory/save",
            json!({"content": "x".repeat(70_000)}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/channels",
            json!({"agent_name": "helper", "type": "carrier-pigeon"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/channels",
            json!({"agent_name": "helper", "type": "slack", "config": {"token_secret": "NOT_MINE"}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/channels",
            json!({"agent_name": "nope", "type": "slack"}),
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/chat/messages",
            json!({"channel_id": "nope", "content": "x"}),
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/chat/channels",
            json!({"agent": "nope"}),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let r = w.app.post(path, alice, body.clone()).await;
        assert_eq!(
            r.status,
            status,
            "{path} {}: {}",
            &body.to_string()[..body.to_string().len().min(80)],
            r.body
        );
        assert!(r.body["error"].is_string());
    }
    let secrets = w.app.get("/api/secrets", alice).await;
    assert_eq!(
        secrets.body.as_array().unwrap().len(),
        1,
        "nothing was half-written"
    );
    assert_eq!(
        w.app
            .get("/api/channels", alice)
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// Deleting a user removes everything they owned, or hands their agents over.
#[tokio::test]
async fn deleting_a_user_takes_their_private_data_with_them() {
    let w = World::new().await;
    let admin = w.token(Who::Admin);
    let r = w
        .app
        .call(
            Method::DELETE,
            "/auth/users/al?agents=transfer:bob",
            Auth::Bearer(admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let keys: Vec<String> = w
        .app
        .state
        .store
        .export()
        .unwrap()
        .into_iter()
        .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
        .collect();
    for prefix in [
        "mem/",
        "memidx/",
        "secret/",
        "chat/",
        "msg/",
        "chan/",
        "memgrant/",
        "chatread/",
        "chatlast/",
    ] {
        let left: Vec<&String> = keys.iter().filter(|k| k.starts_with(prefix)).collect();
        assert!(left.is_empty(), "{prefix} left behind: {left:?}");
    }
    let bob = w.token(Who::Bob);
    assert_eq!(
        w.app.get("/api/agents/helper", bob).await.body["access"],
        "owner"
    );
}

/// The owner of a shared agent does not read other users' conversations
/// with it, and admins do not read anyone's.
#[tokio::test]
async fn an_agents_owner_does_not_read_its_users_conversations() {
    let w = World::new().await;
    let sharee = w.token(Who::Sharee("use")).to_owned();
    let conv = w
        .app
        .post("/api/chat/channels", &sharee, json!({"agent": "helper"}))
        .await;
    assert_eq!(conv.status, StatusCode::OK, "{}", conv.body);
    let id = conv.body["id"].as_str().unwrap().to_owned();
    let said = "only between me and the agent";
    w.app
        .post(
            "/api/chat/messages",
            &sharee,
            json!({"channel_id": id, "content": said}),
        )
        .await;
    for who in [Who::Alice, Who::Admin, Who::Bob] {
        let r = w
            .app
            .get(&format!("/api/chat/messages?channel_id={id}"), w.token(who))
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{who:?}");
        assert!(!r.body.to_string().contains(said));
        let listed = w.app.get("/api/chat/channels", w.token(who)).await;
        assert!(!listed.body.to_string().contains(&id), "{who:?} lists it");
    }
    // The sharee at `view` cannot start a conversation with it at all.
    let viewer = w.token(Who::Sharee("view"));
    let r = w
        .app
        .post("/api/chat/channels", viewer, json!({"agent": "helper"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The agent, a member, reads it.
    let r = w
        .app
        .get(
            &format!("/api/chat/messages?channel_id={id}"),
            w.token(Who::HelperRuntime),
        )
        .await;
    assert!(r.body.to_string().contains(said));
}
