//! Remembered decisions survive unrelated changes: after each kind of
//! change, exactly the decisions that could change are evaluated again,
//! counted by the authorizer, and they come out as the change says.

use axum::http::{Method, StatusCode};
use serde_json::json;
use tessera::state::AppState;

use crate::helpers::{Auth, TestApp};

const AGENTS: [&str; 2] = ["ada", "bea"];
const OPERATIONS: [&str; 2] = ["agent:read", "agent:update"];

struct World {
    app: TestApp,
    /// (username, token), the first one the admin.
    people: Vec<(&'static str, String)>,
}

impl World {
    fn token(&self, who: &str) -> &str {
        &self
            .people
            .iter()
            .find(|(name, _)| *name == who)
            .expect("a person of the world")
            .1
    }

    /// Every person's decision on every agent that exists and operation,
    /// and how many of them were evaluated rather than remembered.
    fn decide_all(&self) -> (Vec<(String, bool)>, u64) {
        let state: &AppState = &self.app.state;
        let before = state.authz.cold_decisions();
        let mut decisions = Vec::new();
        for (who, token) in &self.people {
            let Ok(caller) = state.authenticate(token) else {
                continue;
            };
            for agent in AGENTS {
                let Some(loaded) = state.agent(agent).expect("store") else {
                    continue;
                };
                for op in OPERATIONS {
                    let request = AppState::agent_request(op, &loaded, &caller.user.id, 0);
                    let allowed = state.authorize(&caller, request).is_ok();
                    decisions.push((format!("{who} {op} {agent}"), allowed));
                }
            }
        }
        (decisions, state.authz.cold_decisions() - before)
    }

    async fn ok(&self, response: crate::helpers::Response) {
        assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    }

    async fn share(&self, by: &str, agent: &str, user: &str, level: &str) {
        let path = format!("/api/agents/{agent}/shares");
        let body = json!({"user": user, "level": level});
        self.ok(self.app.post(&path, self.token(by), body).await)
            .await;
    }
}

async fn world() -> World {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let mut people = vec![("alice", admin.clone())];
    for name in ["olga", "bob", "carol", "dave"] {
        let token = app
            .add_user(&admin, name, &format!("{name}-password"))
            .await;
        people.push((name, token));
    }
    let world = World { app, people };
    for agent in AGENTS {
        let r = world
            .app
            .post("/api/agents", world.token("olga"), json!({"name": agent}))
            .await;
        world.ok(r).await;
    }
    world.share("olga", "ada", "carol", "share").await;
    world.share("carol", "ada", "dave", "use").await;
    world.share("olga", "bea", "bob", "view").await;
    world
}

fn allowed(decisions: &[(String, bool)], what: &str) -> bool {
    decisions
        .iter()
        .find(|(d, _)| d == what)
        .unwrap_or_else(|| panic!("no decision {what}"))
        .1
}

#[tokio::test]
async fn after_each_change_only_the_decisions_it_could_change_run_again() {
    let w = world().await;
    // Five people, two agents, two operations.
    let (_, cold) = w.decide_all();
    assert_eq!(cold, 20, "a first decision is always evaluated");
    let (_, cold) = w.decide_all();
    assert_eq!(cold, 0, "nothing changed, everything remembered");

    // A grant to bob on ada: only bob's decisions on ada could change.
    w.share("olga", "ada", "bob", "use").await;
    let (d, cold) = w.decide_all();
    assert_eq!(cold, 2);
    assert!(allowed(&d, "bob agent:read ada"));
    assert!(!allowed(&d, "bob agent:update ada"));

    // Lowering carol's grant: carol's, and dave's who draws on it.
    w.share("olga", "ada", "carol", "edit").await;
    let (d, cold) = w.decide_all();
    assert_eq!(cold, 4);
    assert!(allowed(&d, "carol agent:update ada"));
    assert!(
        !allowed(&d, "dave agent:read ada"),
        "carol no longer shares"
    );

    // Unsharing dave: only dave's decisions on ada.
    let r = w
        .app
        .delete("/api/agents/ada/shares/dave", w.token("olga"))
        .await;
    w.ok(r).await;
    let (_, cold) = w.decide_all();
    assert_eq!(cold, 2);

    // Promoting carol: her decisions everywhere, nobody else's.
    let set_admin = |is_admin: bool| {
        w.app.post(
            "/auth/users/carol/admin",
            w.token("alice"),
            json!({"is_admin": is_admin}),
        )
    };
    w.ok(set_admin(true).await).await;
    let (d, cold) = w.decide_all();
    assert_eq!(cold, 4);
    assert!(allowed(&d, "carol agent:update bea"));
    // Demoting her again presents the policy the very facts it decided
    // before the promotion: those decisions are remembered, and right.
    w.ok(set_admin(false).await).await;
    let (d, cold) = w.decide_all();
    assert_eq!(cold, 0);
    assert!(!allowed(&d, "carol agent:update bea"));
    assert!(allowed(&d, "carol agent:update ada"));

    // A group: sharing with it changes what everyone's decisions on ada
    // are presented (a person's memberships are only known per request, so
    // every grant to a group is among everyone's facts); joining it changes
    // the joiner's decisions only, everywhere (their memberships are part
    // of every request of theirs); leaving it takes them back to facts
    // decided before, remembered and right.
    let r = w
        .app
        .post("/api/groups", w.token("olga"), json!({"name": "family"}))
        .await;
    w.ok(r).await;
    let (_, cold) = w.decide_all();
    assert_eq!(cold, 4, "olga's, who is the group's first member");
    let r = w
        .app
        .post(
            "/api/agents/ada/shares",
            w.token("olga"),
            json!({"group": "family", "level": "edit"}),
        )
        .await;
    w.ok(r).await;
    let (_, cold) = w.decide_all();
    assert_eq!(cold, 10, "every person's decisions on ada");
    let membership = |method: Method| {
        w.app.call(
            method,
            "/api/groups/family/members/dave",
            Auth::Bearer(w.token("olga")),
            None,
        )
    };
    w.ok(membership(Method::PUT).await).await;
    let (d, cold) = w.decide_all();
    assert_eq!(cold, 4, "dave's, on both agents");
    assert!(allowed(&d, "dave agent:update ada"));
    w.ok(membership(Method::DELETE).await).await;
    let (d, cold) = w.decide_all();
    assert_eq!(cold, 0);
    assert!(!allowed(&d, "dave agent:read ada"));

    // Deleting bea: decisions on ada stay remembered (bea's are gone).
    let r = w.app.delete("/api/agents/bea", w.token("olga")).await;
    w.ok(r).await;
    let (d, cold) = w.decide_all();
    assert_eq!(cold, 0);
    assert_eq!(d.len(), 10);

    // Deleting bob: nobody draws on him, so nobody else's decisions change.
    let r = w.app.delete("/auth/users/bob", w.token("alice")).await;
    w.ok(r).await;
    let (d, cold) = w.decide_all();
    assert_eq!(cold, 0);
    assert_eq!(d.len(), 8, "bob's token no longer authenticates");
}
