//! Property tests of sharing: random sequences of share, unshare, transfer,
//! promote, demote and delete, run against the server and against a plain
//! Rust model of the rules in DESIGN.md. After every step the server must
//! accept exactly the acts the model allows, and every user must hold exactly
//! the level the model computes: never more, never less.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{Method, StatusCode};
use proptest::prelude::*;
use serde_json::json;

use crate::helpers::{Auth, TestApp, ADMIN_PASSWORD};

const USERS: [&str; 4] = ["alice", "u1", "u2", "u3"];
const AGENTS: [&str; 2] = ["a0", "a1"];
const LEVELS: [(&str, i64); 5] = [
    ("view", 1),
    ("use", 2),
    ("edit", 3),
    ("manage", 4),
    ("share", 5),
];

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
    Delete {
        user: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let u = 0..USERS.len();
    let a = 0..AGENTS.len();
    prop_oneof![
        // Biased toward the upper levels, where onward sharing happens.
        5 => (u.clone(), a.clone(), u.clone(), prop_oneof![1 => 0..3usize, 3 => 3..LEVELS.len()])
            .prop_map(|(actor, agent, grantee, level)| Op::Share { actor, agent, grantee, level }),
        2 => (u.clone(), a.clone(), u.clone()).prop_map(|(actor, agent, grantee)| Op::Unshare { actor, agent, grantee }),
        1 => (u.clone(), a.clone(), u.clone()).prop_map(|(actor, agent, to)| Op::Transfer { actor, agent, to }),
        1 => (1..USERS.len(), any::<bool>()).prop_map(|(user, admin)| Op::SetAdmin { user, admin }),
        1 => (1..USERS.len()).prop_map(|user| Op::Delete { user }),
    ]
}

/// The rules, written plainly. `alice` (user 0) is the admin who never goes.
#[derive(Debug, Clone)]
struct Model {
    owner: [usize; 2],
    /// (agent, grantee) -> (rank, granted_by)
    grants: BTreeMap<(usize, usize), (i64, usize)>,
    admins: BTreeSet<usize>,
    deleted: BTreeSet<usize>,
}

impl Model {
    fn new() -> Self {
        Self {
            owner: [1, 2],
            grants: BTreeMap::new(),
            admins: BTreeSet::from([0]),
            deleted: BTreeSet::new(),
        }
    }

    /// Rank without admin rights: owner, or grants whose granter still holds
    /// share and at least the granted level (to a fixpoint).
    fn own_ranks(&self, agent: usize) -> [i64; 4] {
        let mut rank = [0i64; 4];
        rank[self.owner[agent]] = 6;
        for u in &self.admins {
            rank[*u] = rank[*u].max(4);
        }
        loop {
            let mut changed = false;
            for (&(a, g), &(r, by)) in &self.grants {
                if a == agent && rank[by] >= 5 && rank[by] >= r && rank[g] < r {
                    rank[g] = r;
                    changed = true;
                }
            }
            if !changed {
                return rank;
            }
        }
    }

    fn rank(&self, agent: usize, user: usize) -> i64 {
        if self.deleted.contains(&user) {
            return 0;
        }
        self.own_ranks(agent)[user]
    }

    fn without_admin_rank(&self, agent: usize, user: usize) -> i64 {
        let mut m = self.clone();
        m.admins.remove(&user);
        m.own_ranks(agent)[user]
    }

    /// Whether `actor` may replace or remove a grant drawn by `by`: its
    /// grantor, anyone up the chain of grants `by` draws on, the owner and
    /// admins.
    fn answers_for(&self, agent: usize, actor: usize, by: usize) -> bool {
        if actor == by || actor == self.owner[agent] || self.admins.contains(&actor) {
            return true;
        }
        let mut at = by;
        for _ in 0..USERS.len() {
            match self.grants.get(&(agent, at)) {
                Some(&(_, above)) if above == actor => return true,
                Some(&(_, above)) => at = above,
                None => return false,
            }
        }
        false
    }

    fn alive(&self, u: usize) -> bool {
        !self.deleted.contains(&u)
    }

    /// Apply `op` if the rules allow it; say whether they did.
    fn apply(&mut self, op: &Op) -> bool {
        match *op {
            Op::Share {
                actor,
                agent,
                grantee,
                level,
            } => {
                let r = LEVELS[level].1;
                let admin = self.admins.contains(&actor);
                let mine = self.rank(agent, actor);
                let allowed = self.alive(actor)
                    && self.alive(grantee)
                    && grantee != actor
                    && grantee != self.owner[agent]
                    && ((mine >= 5 && r <= mine) || admin)
                    && match self.grants.get(&(agent, grantee)) {
                        Some(&(_, by)) => self.answers_for(agent, actor, by),
                        None => true,
                    };
                if allowed {
                    let behalf = admin
                        && self.owner[agent] != actor
                        && self.without_admin_rank(agent, actor) < 5;
                    let by = if behalf { self.owner[agent] } else { actor };
                    self.grants.insert((agent, grantee), (r, by));
                }
                allowed
            }
            Op::Unshare {
                actor,
                agent,
                grantee,
            } => {
                let Some(&(r, by)) = self.grants.get(&(agent, grantee)) else {
                    return false;
                };
                let mine = self.rank(agent, actor);
                let allowed = self.alive(actor)
                    && if grantee == actor {
                        mine >= 1
                    } else {
                        ((mine >= 5 && r <= mine) || self.admins.contains(&actor))
                            && self.answers_for(agent, actor, by)
                    };
                if allowed {
                    self.grants.remove(&(agent, grantee));
                }
                allowed
            }
            Op::Transfer { actor, agent, to } => {
                let allowed = self.alive(actor)
                    && self.alive(to)
                    && to != self.owner[agent]
                    && (self.owner[agent] == actor || self.admins.contains(&actor));
                if allowed {
                    self.owner[agent] = to;
                    self.grants.remove(&(agent, to));
                }
                allowed
            }
            Op::SetAdmin { user, admin } => {
                if !self.alive(user) {
                    return false;
                }
                if admin {
                    self.admins.insert(user);
                } else {
                    self.admins.remove(&user);
                }
                true
            }
            Op::Delete { user } => {
                if !self.alive(user) {
                    return false;
                }
                self.deleted.insert(user);
                self.admins.remove(&user);
                for a in 0..AGENTS.len() {
                    if self.owner[a] == user {
                        self.owner[a] = 0;
                        self.grants.remove(&(a, 0));
                    }
                }
                self.grants.retain(|&(_, g), _| g != user);
                true
            }
        }
    }
}

struct Host {
    app: TestApp,
    tokens: Vec<String>,
}

impl Host {
    async fn new() -> Self {
        let app = TestApp::new();
        let alice = app.setup_admin().await;
        let mut tokens = vec![alice.clone()];
        for u in &USERS[1..] {
            tokens.push(app.add_user(&alice, u, "user-password").await);
        }
        for (agent, owner) in AGENTS.iter().zip([1, 2]) {
            let r = app
                .post("/api/agents", &tokens[owner], json!({"name": agent}))
                .await;
            assert_eq!(r.status, StatusCode::OK);
        }
        Self { app, tokens }
    }

    async fn apply(&self, op: &Op) -> StatusCode {
        let app = &self.app;
        match *op {
            Op::Share {
                actor,
                agent,
                grantee,
                level,
            } => {
                let path = format!("/api/agents/{}/shares", AGENTS[agent]);
                app.post(
                    &path,
                    &self.tokens[actor],
                    json!({"user": USERS[grantee], "level": LEVELS[level].0}),
                )
                .await
                .status
            }
            Op::Unshare {
                actor,
                agent,
                grantee,
            } => {
                let path = format!("/api/agents/{}/shares/{}", AGENTS[agent], USERS[grantee]);
                app.delete(&path, &self.tokens[actor]).await.status
            }
            Op::Transfer { actor, agent, to } => {
                let path = format!("/api/agents/{}/transfer", AGENTS[agent]);
                app.post(&path, &self.tokens[actor], json!({"to": USERS[to]}))
                    .await
                    .status
            }
            Op::SetAdmin { user, admin } => {
                let path = format!("/auth/users/{}/admin", USERS[user]);
                app.post(&path, &self.tokens[0], json!({"is_admin": admin}))
                    .await
                    .status
            }
            Op::Delete { user } => {
                let path = format!("/auth/users/{}?agents=transfer:alice", USERS[user]);
                app.call(Method::DELETE, &path, Auth::Bearer(&self.tokens[0]), None)
                    .await
                    .status
            }
        }
    }

    /// Everyone's level on `agent` as its access list reports it (0: listed
    /// with nothing in effect), when alice may still read it.
    async fn access(&self, agent: usize) -> Option<BTreeMap<String, i64>> {
        let r = self
            .app
            .get(
                &format!("/api/agents/{}/access", AGENTS[agent]),
                &self.tokens[0],
            )
            .await;
        if r.status != StatusCode::OK {
            return None;
        }
        let entries = r.body["access"].as_array()?;
        Some(
            entries
                .iter()
                .map(|e| {
                    let level = e["level"].as_str().unwrap_or("none");
                    let rank = LEVELS
                        .iter()
                        .chain(&[("owner", 6)])
                        .find(|(l, _)| *l == level)
                        .map_or(0, |(_, r)| *r);
                    (
                        e["user"]["username"].as_str().unwrap_or("").to_owned(),
                        rank,
                    )
                })
                .collect(),
        )
    }

    /// The level `user` holds on `agent` as the server reports it (0: cannot see it).
    async fn rank(&self, agent: usize, user: usize) -> i64 {
        let r = self
            .app
            .get(
                &format!("/api/agents/{}", AGENTS[agent]),
                &self.tokens[user],
            )
            .await;
        match r.status {
            StatusCode::OK => {
                let level = r.body["access"].as_str().unwrap_or("none");
                [
                    ("view", 1),
                    ("use", 2),
                    ("edit", 3),
                    ("manage", 4),
                    ("share", 5),
                    ("owner", 6),
                ]
                .iter()
                .find(|(l, _)| *l == level)
                .map_or(-1, |(_, r)| *r)
            }
            StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED => 0,
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 64, ..ProptestConfig::default() })]

    #[test]
    fn nobody_ever_holds_more_than_the_rules_allow(ops in proptest::collection::vec(op(), 1..16)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let host = Host::new().await;
            let mut model = Model::new();
            for (step, op) in ops.iter().enumerate() {
                let allowed = model.apply(op);
                let status = host.apply(op).await;
                prop_assert_eq!(status.is_success(), allowed, "step {}: {:?} answered {}", step, op, status);
                for (agent, agent_name) in AGENTS.iter().enumerate() {
                    let listed = host.access(agent).await;
                    for (user, user_name) in USERS.iter().enumerate() {
                        let server = host.rank(agent, user).await;
                        let expected = model.rank(agent, user);
                        prop_assert_eq!(server, expected, "after step {} ({:?}): {} on {}", step, op, user_name, agent_name);
                        if let Some(listed) = &listed {
                            let said = listed.get(*user_name).copied().unwrap_or(0);
                            prop_assert_eq!(said, expected, "after step {} ({:?}): {} on {} in the access list", step, op, user_name, agent_name);
                        }
                    }
                }
            }
            let _ = ADMIN_PASSWORD;
            Ok(())
        })?;
    }
}

#[derive(Debug, Clone)]
enum SharerOp {
    Share {
        actor: usize,
        grantee: usize,
        level: usize,
    },
    Unshare {
        actor: usize,
        grantee: usize,
    },
}

/// What the two sharers u2 and u3 may try on a0 with each other and alice
/// (apart from leaving, which is theirs to do).
fn sharer_op() -> impl Strategy<Value = SharerOp> {
    let actor = 2..USERS.len();
    let grantee = prop_oneof![Just(0usize), 2..USERS.len()];
    prop_oneof![
        (actor.clone(), grantee.clone(), 0..LEVELS.len()).prop_map(|(actor, grantee, level)| {
            SharerOp::Share {
                actor,
                grantee,
                level,
            }
        }),
        (actor, grantee)
            .prop_filter("leaving is allowed", |(a, g)| a != g)
            .prop_map(|(actor, grantee)| SharerOp::Unshare { actor, grantee }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 64, ..ProptestConfig::default() })]

    /// u1 owns a0 and gives u2 `share`, and gives u3 `share` either directly
    /// or through u2. Whatever the two then share and unshare, neither can
    /// lower or remove a grant someone above them drew: u2 keeps `share`, and
    /// so does u3 unless u2 drew its grant and changed it.
    #[test]
    fn a_sharer_never_lowers_what_someone_above_gave(
        chained in any::<bool>(),
        ops in proptest::collection::vec(sharer_op(), 1..12),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let host = Host::new().await;
            let first = Op::Share { actor: 1, agent: 0, grantee: 2, level: 4 };
            prop_assert!(host.apply(&first).await.is_success());
            let giver = if chained { 2 } else { 1 };
            let second = Op::Share { actor: giver, agent: 0, grantee: 3, level: 4 };
            prop_assert!(host.apply(&second).await.is_success());
            let mut u3 = 5;
            for (step, op) in ops.iter().enumerate() {
                let status = match *op {
                    SharerOp::Share { actor, grantee, level } => {
                        host.apply(&Op::Share { actor, agent: 0, grantee, level }).await
                    }
                    SharerOp::Unshare { actor, grantee } => {
                        host.apply(&Op::Unshare { actor, agent: 0, grantee }).await
                    }
                };
                // In the chain, u3's grant is u2's to change.
                if chained && status.is_success() {
                    match *op {
                        SharerOp::Share { actor: 2, grantee: 3, level } => u3 = LEVELS[level].1,
                        SharerOp::Unshare { actor: 2, grantee: 3 } => u3 = 0,
                        _ => {}
                    }
                }
                for (user, expected) in [(2, 5), (3, u3)] {
                    prop_assert_eq!(
                        host.rank(0, user).await, expected,
                        "after step {} ({:?}, answered {}): {}", step, op, status, USERS[user]
                    );
                }
            }
            Ok(())
        })?;
    }
}
