//! "Admins, sharers and owners of shared agents get nothing here by being
//! so", as a property: dora keeps a secret bound to her agent `pal`, memory
//! granted to it and a conversation with it, each holding a canary. Then a
//! random sequence of shares, unshares, level changes, transfers, admin
//! promotions and demotions, archive and restore, user deletions, delegated
//! and runtime token mints runs; after every step every principal other than
//! dora (the admin, every other user, every token any of them minted, their
//! runtime tokens) asks every route that serves private data, and no answer
//! may carry a canary.

use axum::http::{Method, StatusCode};
use proptest::prelude::*;
use serde_json::json;

use crate::helpers::{Auth, TestApp};

const MEMORY_CANARY: &str = "mauvecanarymemory";
const SECRET_CANARY: &str = "sk-dora-canary-secret";
const CHAT_CANARY: &str = "dora canary chat";
const CANARIES: [&str; 3] = [MEMORY_CANARY, SECRET_CANARY, CHAT_CANARY];

/// 0 is dora (the data's owner), 1 alice (an admin), 2..=4 other people.
const USERS: [&str; 5] = ["dora", "alice", "u2", "u3", "u4"];
/// `pal` is dora's at first; `box` is u2's.
const AGENTS: [&str; 2] = ["pal", "box"];
const LEVELS: [&str; 5] = ["view", "use", "edit", "manage", "share"];

#[derive(Debug, Clone)]
enum Op {
    Share {
        actor: usize,
        agent: usize,
        grantee: usize,
        level: usize,
    },
    Unshare {
        actor: usize,
        agent: usize,
        grantee: usize,
    },
    Transfer {
        actor: usize,
        agent: usize,
        to: usize,
    },
    SetAdmin {
        user: usize,
        admin: bool,
    },
    Archive {
        actor: usize,
        agent: usize,
        archived: bool,
    },
    Delete {
        user: usize,
    },
    Delegate {
        actor: usize,
        agent: usize,
        level: usize,
    },
    Runtime {
        actor: usize,
        agent: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let u = 0..USERS.len();
    let a = 0..AGENTS.len();
    let l = 0..LEVELS.len();
    prop_oneof![
        4 => (u.clone(), a.clone(), u.clone(), l.clone())
            .prop_map(|(actor, agent, grantee, level)| Op::Share { actor, agent, grantee, level }),
        1 => (u.clone(), a.clone(), u.clone())
            .prop_map(|(actor, agent, grantee)| Op::Unshare { actor, agent, grantee }),
        2 => (u.clone(), a.clone(), u.clone())
            .prop_map(|(actor, agent, to)| Op::Transfer { actor, agent, to }),
        1 => (2..USERS.len(), any::<bool>()).prop_map(|(user, admin)| Op::SetAdmin { user, admin }),
        1 => (u.clone(), a.clone(), any::<bool>())
            .prop_map(|(actor, agent, archived)| Op::Archive { actor, agent, archived }),
        1 => (2..USERS.len()).prop_map(|user| Op::Delete { user }),
        2 => (u.clone(), a.clone(), l).prop_map(|(actor, agent, level)| Op::Delegate { actor, agent, level }),
        2 => (u, a).prop_map(|(actor, agent)| Op::Runtime { actor, agent }),
    ]
}

struct Host {
    app: TestApp,
    /// Each person's session.
    sessions: Vec<String>,
    /// Every token anyone but dora obtained, with who obtained it.
    others: Vec<(usize, String)>,
    chunk: String,
    dm: String,
}

impl Host {
    async fn new() -> Self {
        let app = TestApp::new();
        let alice = app.setup_admin().await;
        let dora = app.add_user(&alice, "dora", "dora-password").await;
        let mut sessions = vec![dora.clone(), alice.clone()];
        for u in &USERS[2..] {
            sessions.push(app.add_user(&alice, u, "user-password").await);
        }
        for (agent, owner) in AGENTS.iter().zip([0, 2]) {
            let r = app
                .post("/api/agents", &sessions[owner], json!({"name": agent}))
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        }
        let saved = app
            .post(
                "/api/user-memory/save",
                &dora,
                json!({"content": format!("note {MEMORY_CANARY}"), "title": "note"}),
            )
            .await;
        let chunk = saved.body["hash"].as_str().unwrap().to_owned();
        let r = app
            .post(
                "/api/secrets",
                &dora,
                json!({"name": "DORA_KEY", "value": SECRET_CANARY, "agents": ["pal"]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let r = app
            .call(
                Method::PUT,
                "/api/user-memory/grants/pal",
                Auth::Bearer(&dora),
                Some(json!({"allowed": true})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let dm = app
            .post("/api/chat/channels", &dora, json!({"agent": "pal"}))
            .await;
        let dm = dm.body["id"].as_str().unwrap().to_owned();
        let r = app
            .post(
                "/api/chat/messages",
                &dora,
                json!({"channel_id": dm, "content": CHAT_CANARY}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let mut others = Vec::new();
        for (who, token) in sessions.iter().enumerate().skip(1) {
            others.push((who, token.clone()));
        }
        Self {
            app,
            sessions,
            others,
            chunk,
            dm,
        }
    }

    async fn apply(&mut self, op: &Op) {
        let app = &self.app;
        let s = &self.sessions;
        let obtained = match *op {
            Op::Share {
                actor,
                agent,
                grantee,
                level,
            } => {
                app.post(
                    &format!("/api/agents/{}/shares", AGENTS[agent]),
                    &s[actor],
                    json!({"user": USERS[grantee], "level": LEVELS[level]}),
                )
                .await;
                None
            }
            Op::Unshare {
                actor,
                agent,
                grantee,
            } => {
                let path = format!("/api/agents/{}/shares/{}", AGENTS[agent], USERS[grantee]);
                app.delete(&path, &s[actor]).await;
                None
            }
            Op::Transfer { actor, agent, to } => {
                app.post(
                    &format!("/api/agents/{}/transfer", AGENTS[agent]),
                    &s[actor],
                    json!({"to": USERS[to]}),
                )
                .await;
                None
            }
            Op::SetAdmin { user, admin } => {
                app.post(
                    &format!("/auth/users/{}/admin", USERS[user]),
                    &s[1],
                    json!({"is_admin": admin}),
                )
                .await;
                None
            }
            Op::Archive {
                actor,
                agent,
                archived,
            } => {
                let verb = if archived { "archive" } else { "restore" };
                app.post(
                    &format!("/api/agents/{}/{verb}", AGENTS[agent]),
                    &s[actor],
                    json!({}),
                )
                .await;
                None
            }
            Op::Delete { user } => {
                let path = format!("/auth/users/{}?agents=transfer:alice", USERS[user]);
                app.call(Method::DELETE, &path, Auth::Bearer(&s[1]), None)
                    .await;
                None
            }
            Op::Delegate {
                actor,
                agent,
                level,
            } => {
                let r = app
                    .post(
                        "/api/tokens",
                        &s[actor],
                        json!({"agent": AGENTS[agent], "level": LEVELS[level], "expires_in": 3600}),
                    )
                    .await;
                r.body["token"].as_str().map(|t| (actor, t.to_owned()))
            }
            Op::Runtime { actor, agent } => {
                let r = app
                    .post(
                        &format!("/api/agents/{}/runtime-token", AGENTS[agent]),
                        &s[actor],
                        json!({}),
                    )
                    .await;
                r.body["token"].as_str().map(|t| (actor, t.to_owned()))
            }
        };
        // What dora obtains is hers; anyone else's joins the suspects.
        if let Some((who, token)) = obtained {
            if who != 0 {
                self.others.push((who, token));
            }
        }
    }

    /// Every route that serves private data, as `token` would ask it.
    fn probes(&self) -> Vec<String> {
        let mut paths = vec![
            "/api/user-memory/browse".to_owned(),
            "/api/user-memory/search?q=note".to_owned(),
            format!("/api/user-memory/chunk/{}", self.chunk),
            "/api/user-memory/agent-search?user=dora&q=note".to_owned(),
            "/api/user-memory/grants".to_owned(),
            "/api/secrets".to_owned(),
            "/api/secrets/DORA_KEY".to_owned(),
            format!("/api/chat/messages?channel_id={}", self.dm),
            "/api/chat/channels".to_owned(),
            "/api/chat/unread".to_owned(),
            "/api/channels".to_owned(),
            "/api/agents".to_owned(),
        ];
        for agent in AGENTS {
            paths.push(format!("/api/secrets/agent/{agent}"));
            paths.push(format!("/api/agents/{agent}"));
        }
        paths
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 32, ..ProptestConfig::default() })]

    #[test]
    fn nobody_but_the_owner_reads_her_private_data(ops in proptest::collection::vec(op(), 1..14)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut host = Host::new().await;
            // The probes reach the canaries: dora reads each of them.
            let mut seen = String::new();
            for path in host.probes() {
                seen.push_str(&host.app.get(&path, &host.sessions[0]).await.body.to_string());
            }
            for canary in CANARIES {
                prop_assert!(seen.contains(canary), "dora cannot read {}", canary);
            }
            for (step, op) in ops.iter().enumerate() {
                host.apply(op).await;
                for (who, token) in &host.others {
                    for path in host.probes() {
                        let r = host.app.get(&path, token).await;
                        let body = r.body.to_string();
                        for canary in CANARIES {
                            prop_assert!(
                                !body.contains(canary),
                                "after step {} ({:?}): a token of {} read {} at {}: {}",
                                step, op, USERS[*who], canary, path, body
                            );
                        }
                    }
                }
            }
            Ok(())
        })?;
    }
}
