//! Property tests of sharing: random sequences of shares (with a person, a
//! group or everyone, some expiring), unshares, membership changes, group
//! deletion and creation, transfers, promotions, demotions, account
//! deletions and clock advances, run against the server and against a plain
//! Rust model of the rules. After every step the server must accept exactly
//! the acts the model allows, and every user must hold exactly the level
//! the model computes: never more, never less. A policy with one rule
//! changed must fail the same comparison (see the mutation tests below).

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{Method, StatusCode};
use proptest::prelude::*;
use serde_json::json;

use crate::helpers::{Auth, TestApp};

const USERS: [&str; 4] = ["alice", "u1", "u2", "u3"];
const AGENTS: [&str; 2] = ["a0", "a1"];
const GROUPS: [&str; 2] = ["g0", "g1"];
const LEVELS: [(&str, i64); 5] = [
    ("view", 1),
    ("use", 2),
    ("edit", 3),
    ("manage", 4),
    ("share", 5),
];
/// What the policy lets everyone on the host hold at most (`use`).
const EVERYONE_CAP: i64 = 2;
/// Expiries and clock advances move in steps this long, so the seconds the
/// test itself takes never carry a grant across its expiry.
const TICK: i64 = 1_000;

/// Who a grant is to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum To {
    User(usize),
    Group(usize),
    Everyone,
}

#[derive(Debug, Clone)]
enum Op {
    Share {
        actor: usize,
        agent: usize,
        to: To,
        level: usize,
        /// Ticks from now until it runs out.
        expires: Option<i64>,
    },
    Unshare {
        actor: usize,
        agent: usize,
        from: To,
    },
    AddMember {
        actor: usize,
        group: usize,
        user: usize,
    },
    RemoveMember {
        actor: usize,
        group: usize,
        user: usize,
    },
    CreateGroup {
        actor: usize,
        group: usize,
    },
    DeleteGroup {
        actor: usize,
        group: usize,
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
    /// Move the clock this many ticks forward.
    Advance(i64),
}

fn to() -> impl Strategy<Value = To> {
    prop_oneof![
        3 => (0..USERS.len()).prop_map(To::User),
        3 => (0..GROUPS.len()).prop_map(To::Group),
        1 => Just(To::Everyone),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let u = 0..USERS.len();
    let a = 0..AGENTS.len();
    let g = 0..GROUPS.len();
    prop_oneof![
        // Biased toward the upper levels, where onward sharing happens.
        6 => (u.clone(), a.clone(), to(), prop_oneof![1 => 0..3usize, 3 => 3..LEVELS.len()],
              prop_oneof![3 => Just(None), 1 => (1..4i64).prop_map(Some)])
            .prop_map(|(actor, agent, to, level, expires)| Op::Share { actor, agent, to, level, expires }),
        2 => (u.clone(), a.clone(), to()).prop_map(|(actor, agent, from)| Op::Unshare { actor, agent, from }),
        3 => (u.clone(), g.clone(), u.clone()).prop_map(|(actor, group, user)| Op::AddMember { actor, group, user }),
        2 => (u.clone(), g.clone(), u.clone()).prop_map(|(actor, group, user)| Op::RemoveMember { actor, group, user }),
        1 => (u.clone(), g.clone()).prop_map(|(actor, group)| Op::CreateGroup { actor, group }),
        1 => (u.clone(), g.clone()).prop_map(|(actor, group)| Op::DeleteGroup { actor, group }),
        1 => (u.clone(), a.clone(), u.clone()).prop_map(|(actor, agent, to)| Op::Transfer { actor, agent, to }),
        1 => (1..USERS.len(), any::<bool>()).prop_map(|(user, admin)| Op::SetAdmin { user, admin }),
        1 => (1..USERS.len()).prop_map(|user| Op::Delete { user }),
        2 => (1..3i64).prop_map(Op::Advance),
    ]
}

#[derive(Debug, Clone)]
struct Group {
    owner: usize,
    members: BTreeSet<usize>,
}

#[derive(Debug, Clone, Copy)]
struct G {
    rank: i64,
    by: usize,
    /// The model's time at which it runs out.
    until: Option<i64>,
}

/// The rules, written plainly. `alice` (user 0) is the admin who never goes.
#[derive(Debug, Clone)]
struct Model {
    owner: [usize; 2],
    grants: BTreeMap<(usize, To), G>,
    groups: [Option<Group>; 2],
    admins: BTreeSet<usize>,
    deleted: BTreeSet<usize>,
    /// Ticks since the start, in seconds.
    now: i64,
}

impl Model {
    fn new() -> Self {
        Self {
            owner: [1, 2],
            grants: BTreeMap::new(),
            // u1 made g0 and alice g1; each is its first member.
            groups: [
                Some(Group {
                    owner: 1,
                    members: BTreeSet::from([1]),
                }),
                Some(Group {
                    owner: 0,
                    members: BTreeSet::from([0]),
                }),
            ],
            admins: BTreeSet::from([0]),
            deleted: BTreeSet::new(),
            now: 0,
        }
    }

    fn alive(&self, u: usize) -> bool {
        !self.deleted.contains(&u)
    }

    fn live(&self, g: &G) -> bool {
        g.until.is_none_or(|end| self.now < end)
    }

    /// Whether `u` is one of those `to` names.
    fn belongs(&self, u: usize, to: To) -> bool {
        self.alive(u)
            && match to {
                To::User(v) => u == v,
                To::Group(g) => self.groups[g]
                    .as_ref()
                    .is_some_and(|g| g.members.contains(&u)),
                To::Everyone => true,
            }
    }

    /// Ranks with `admins` counting as such: owner, admins, then grants
    /// whose granter still holds share and at least the granted level,
    /// reaching every member of their principal (to a fixpoint). Expired
    /// grants count for nothing.
    fn ranks_with(&self, agent: usize, admins: &BTreeSet<usize>) -> [i64; 4] {
        let mut rank = [0i64; 4];
        rank[self.owner[agent]] = 6;
        for u in admins {
            rank[*u] = rank[*u].max(4);
        }
        loop {
            let mut changed = false;
            for (&(a, to), g) in &self.grants {
                if a != agent || !self.live(g) || rank[g.by] < 5 || rank[g.by] < g.rank {
                    continue;
                }
                let conferred = if to == To::Everyone {
                    g.rank.min(EVERYONE_CAP)
                } else {
                    g.rank
                };
                for (u, held) in rank.iter_mut().enumerate() {
                    if self.belongs(u, to) && *held < conferred {
                        *held = conferred;
                        changed = true;
                    }
                }
            }
            if !changed {
                return rank;
            }
        }
    }

    fn rank(&self, agent: usize, user: usize) -> i64 {
        if !self.alive(user) {
            return 0;
        }
        self.ranks_with(agent, &self.admins)[user]
    }

    fn without_admin_rank(&self, agent: usize, user: usize) -> i64 {
        let mut admins = self.admins.clone();
        admins.remove(&user);
        self.ranks_with(agent, &admins)[user]
    }

    /// Whether `actor` may replace or remove a grant drawn by `by`: its
    /// grantor, anyone up the chains of live grants `by` draws on (their
    /// own, their groups', everyone's), the owner and admins.
    fn answers_for(&self, agent: usize, actor: usize, by: usize) -> bool {
        if actor == by || actor == self.owner[agent] || self.admins.contains(&actor) {
            return true;
        }
        let mut seen = BTreeSet::new();
        let mut todo = vec![by];
        while let Some(at) = todo.pop() {
            for (&(a, to), g) in &self.grants {
                if a == agent && self.live(g) && self.belongs(at, to) && seen.insert(g.by) {
                    if g.by == actor {
                        return true;
                    }
                    todo.push(g.by);
                }
            }
        }
        false
    }

    /// Whether `actor` sees group `g` (its members, its owner, admins).
    fn sees(&self, actor: usize, g: usize) -> bool {
        self.groups[g].as_ref().is_some_and(|grp| {
            grp.members.contains(&actor) || grp.owner == actor || self.admins.contains(&actor)
        })
    }

    fn manages(&self, actor: usize, g: usize) -> bool {
        self.groups[g]
            .as_ref()
            .is_some_and(|grp| grp.owner == actor || self.admins.contains(&actor))
    }

    /// Apply `op` if the rules allow it; say whether they did.
    fn apply(&mut self, op: &Op) -> bool {
        match *op {
            Op::Share {
                actor,
                agent,
                to,
                level,
                expires,
            } => {
                let r = LEVELS[level].1;
                let admin = self.admins.contains(&actor);
                let mine = self.rank(agent, actor);
                let target = match to {
                    To::User(u) => self.alive(u) && u != actor && u != self.owner[agent],
                    To::Group(g) => self.sees(actor, g),
                    To::Everyone => r <= EVERYONE_CAP,
                };
                let allowed = self.alive(actor)
                    && target
                    && ((mine >= 5 && r <= mine) || admin)
                    && match self.grants.get(&(agent, to)) {
                        Some(g) => self.answers_for(agent, actor, g.by),
                        None => true,
                    };
                if allowed {
                    let behalf = admin
                        && self.owner[agent] != actor
                        && self.without_admin_rank(agent, actor) < 5;
                    let by = if behalf { self.owner[agent] } else { actor };
                    let until = expires.map(|t| self.now + t * TICK);
                    self.grants.insert((agent, to), G { rank: r, by, until });
                }
                allowed
            }
            Op::Unshare { actor, agent, from } => {
                let Some(&g) = self.grants.get(&(agent, from)) else {
                    return false;
                };
                let mine = self.rank(agent, actor);
                let allowed = self.alive(actor)
                    && if from == To::User(actor) {
                        mine >= 1
                    } else {
                        ((mine >= 5 && g.rank <= mine) || self.admins.contains(&actor))
                            && self.answers_for(agent, actor, g.by)
                    };
                if allowed {
                    self.grants.remove(&(agent, from));
                }
                allowed
            }
            Op::AddMember { actor, group, user } => {
                let allowed = self.alive(actor)
                    && self.sees(actor, group)
                    && self.manages(actor, group)
                    && self.alive(user);
                if allowed {
                    if let Some(g) = self.groups[group].as_mut() {
                        g.members.insert(user);
                    }
                }
                allowed
            }
            Op::RemoveMember { actor, group, user } => {
                let member = self.groups[group]
                    .as_ref()
                    .is_some_and(|g| g.members.contains(&user));
                let allowed = self.alive(actor)
                    && self.sees(actor, group)
                    && (self.manages(actor, group) || actor == user)
                    && self.alive(user)
                    && member;
                if allowed {
                    if let Some(g) = self.groups[group].as_mut() {
                        g.members.remove(&user);
                    }
                }
                allowed
            }
            Op::CreateGroup { actor, group } => {
                let allowed = self.alive(actor) && self.groups[group].is_none();
                if allowed {
                    self.groups[group] = Some(Group {
                        owner: actor,
                        members: BTreeSet::from([actor]),
                    });
                }
                allowed
            }
            Op::DeleteGroup { actor, group } => {
                let allowed =
                    self.alive(actor) && self.sees(actor, group) && self.manages(actor, group);
                if allowed {
                    self.groups[group] = None;
                    self.grants.retain(|&(_, to), _| to != To::Group(group));
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
                    self.grants.remove(&(agent, To::User(to)));
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
                        self.grants.remove(&(a, To::User(0)));
                    }
                }
                self.grants.retain(|&(_, to), _| to != To::User(user));
                for g in self.groups.iter_mut().flatten() {
                    g.members.remove(&user);
                }
                true
            }
            Op::Advance(ticks) => {
                self.now += ticks * TICK;
                true
            }
        }
    }
}

struct Host {
    app: TestApp,
    tokens: Vec<String>,
    /// The server's time when the model's was 0.
    start: i64,
}

impl Host {
    async fn new() -> Self {
        Self::on(TestApp::new()).await
    }

    async fn on(app: TestApp) -> Self {
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
        for (group, owner) in GROUPS.iter().zip([1, 0]) {
            let r = app
                .post("/api/groups", &tokens[owner], json!({"name": group}))
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        }
        let start = app.state.now();
        Self { app, tokens, start }
    }

    fn to_json(to: To) -> serde_json::Value {
        match to {
            To::User(u) => json!({"user": USERS[u]}),
            To::Group(g) => json!({"group": GROUPS[g]}),
            To::Everyone => json!({"everyone": true}),
        }
    }

    fn to_path(to: To) -> String {
        match to {
            To::User(u) => USERS[u].to_owned(),
            To::Group(g) => format!("group:{}", GROUPS[g]),
            To::Everyone => "everyone".to_owned(),
        }
    }

    async fn apply(&self, op: &Op, model_now: i64) -> StatusCode {
        let app = &self.app;
        match *op {
            Op::Share {
                actor,
                agent,
                to,
                level,
                expires,
            } => {
                let path = format!("/api/agents/{}/shares", AGENTS[agent]);
                let mut body = Self::to_json(to);
                body["level"] = json!(LEVELS[level].0);
                if let Some(ticks) = expires {
                    body["expires_at"] = json!(self.start + model_now + ticks * TICK);
                }
                app.post(&path, &self.tokens[actor], body).await.status
            }
            Op::Unshare { actor, agent, from } => {
                let path = format!(
                    "/api/agents/{}/shares/{}",
                    AGENTS[agent],
                    Self::to_path(from)
                );
                app.delete(&path, &self.tokens[actor]).await.status
            }
            Op::AddMember { actor, group, user } => {
                let path = format!("/api/groups/{}/members/{}", GROUPS[group], USERS[user]);
                app.call(Method::PUT, &path, Auth::Bearer(&self.tokens[actor]), None)
                    .await
                    .status
            }
            Op::RemoveMember { actor, group, user } => {
                let path = format!("/api/groups/{}/members/{}", GROUPS[group], USERS[user]);
                app.delete(&path, &self.tokens[actor]).await.status
            }
            Op::CreateGroup { actor, group } => {
                app.post(
                    "/api/groups",
                    &self.tokens[actor],
                    json!({"name": GROUPS[group]}),
                )
                .await
                .status
            }
            Op::DeleteGroup { actor, group } => {
                let path = format!("/api/groups/{}", GROUPS[group]);
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
            Op::Advance(ticks) => {
                app.state.config.clock.advance(ticks * TICK);
                StatusCode::OK
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
                    (
                        e["user"]["username"].as_str().unwrap_or("").to_owned(),
                        rank_of(level).unwrap_or(0),
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
            StatusCode::OK => rank_of(r.body["access"].as_str().unwrap_or("none")).unwrap_or(-1),
            StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED => 0,
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
}

fn rank_of(level: &str) -> Option<i64> {
    LEVELS
        .iter()
        .chain(&[("owner", 6)])
        .find(|(l, _)| *l == level)
        .map(|(_, r)| *r)
}

/// Run `ops` on the server and the model side by side; the first
/// disagreement, if any.
async fn compare(host: &Host, ops: &[Op]) -> Result<(), String> {
    let mut model = Model::new();
    for (step, op) in ops.iter().enumerate() {
        let before = model.now;
        let allowed = model.apply(op);
        let status = host.apply(op, before).await;
        if status.is_success() != allowed {
            return Err(format!(
                "step {step}: {op:?} answered {status}, the model {}",
                if allowed { "allows it" } else { "refuses it" }
            ));
        }
        for (agent, agent_name) in AGENTS.iter().enumerate() {
            let listed = host.access(agent).await;
            for (user, user_name) in USERS.iter().enumerate() {
                let server = host.rank(agent, user).await;
                let expected = model.rank(agent, user);
                if server != expected {
                    return Err(format!(
                        "after step {step} ({op:?}): {user_name} on {agent_name}: server {server}, model {expected}"
                    ));
                }
                if let Some(listed) = &listed {
                    let said = listed.get(*user_name).copied().unwrap_or(0);
                    if said != expected {
                        return Err(format!(
                            "after step {step} ({op:?}): {user_name} on {agent_name} in the access list: {said}, model {expected}"
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 64, ..ProptestConfig::default() })]

    #[test]
    fn nobody_ever_holds_more_than_the_rules_allow(ops in proptest::collection::vec(op(), 1..20)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let outcome = rt.block_on(async {
            let host = Host::new().await;
            compare(&host, &ops).await
        });
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
    }
}

/// The comparison catches a policy that strays: with one rule changed, a
/// sequence it touches disagrees with the model.
async fn mutated_fails(line: &str, replacement: &str, ops: &[Op]) {
    let dir = crate::helpers::edited_policy(line, replacement);
    let path = dir.path().to_owned();
    let host = Host::on(TestApp::with_config(|c| c.policy_dir = Some(path))).await;
    let outcome = compare(&host, ops).await;
    assert!(
        outcome.is_err(),
        "the policy with {replacement:?} for {line:?} passed"
    );
    // The same sequence holds against the real policy.
    let host = Host::new().await;
    compare(&host, ops).await.unwrap();
}

#[tokio::test]
async fn a_membership_rule_that_ignores_the_group_fails_the_model() {
    mutated_fails(
        "holds($a, $u, $r) <- confers($a, $g, $r), member($g, $u);",
        "holds($a, $u, $r) <- confers($a, $g, $r), member($h, $u);",
        &[
            Op::AddMember {
                actor: 0,
                group: 1,
                user: 3,
            },
            Op::Share {
                actor: 0,
                agent: 0,
                to: To::Group(1),
                level: 0,
                expires: None,
            },
            Op::Share {
                actor: 1,
                agent: 0,
                to: To::Group(0),
                level: 2,
                expires: None,
            },
        ],
    )
    .await;
}

#[tokio::test]
async fn a_raised_cap_on_everyone_fails_the_model() {
    mutated_fails(
        "everyone_cap(2);",
        "everyone_cap(5);",
        &[Op::Share {
            actor: 1,
            agent: 0,
            to: To::Everyone,
            level: 2,
            expires: None,
        }],
    )
    .await;
}

#[tokio::test]
async fn a_group_grant_that_ignores_its_drawer_fails_the_model() {
    // u1 gives u2 share; u2 shares with g1 (alice's group, which u2 and u3
    // join); u1 takes u2's share away: what u2 shared onward must end.
    mutated_fails(
        "confers($a, $p, $r) <- grant($a, $p, $lvl, $by), $p != \"everyone\", level($lvl, $r),\n                       holds($a, $by, $b), $b >= 5, $b >= $r;",
        "confers($a, $p, $r) <- grant($a, $p, $lvl, $by), $p != \"everyone\", level($lvl, $r);",
        &[
            Op::AddMember {
                actor: 0,
                group: 1,
                user: 3,
            },
            Op::AddMember {
                actor: 0,
                group: 1,
                user: 2,
            },
            Op::Share {
                actor: 1,
                agent: 0,
                to: To::User(2),
                level: 4,
                expires: None,
            },
            Op::Share {
                actor: 2,
                agent: 0,
                to: To::Group(1),
                level: 3,
                expires: None,
            },
            Op::Unshare {
                actor: 1,
                agent: 0,
                from: To::User(2),
            },
        ],
    )
    .await;
}

#[tokio::test]
async fn expiry_is_part_of_the_model() {
    // A grant that runs out, checked before and after, with warm decisions.
    let host = Host::new().await;
    compare(
        &host,
        &[
            Op::Share {
                actor: 1,
                agent: 0,
                to: To::Group(0),
                level: 4,
                expires: Some(1),
            },
            Op::AddMember {
                actor: 1,
                group: 0,
                user: 3,
            },
            Op::Share {
                actor: 3,
                agent: 0,
                to: To::User(2),
                level: 0,
                expires: None,
            },
            Op::Advance(1),
            Op::Share {
                actor: 1,
                agent: 0,
                to: To::Everyone,
                level: 1,
                expires: Some(2),
            },
            Op::Advance(2),
        ],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn an_expired_grants_grantor_still_answers_to_whoever_they_draw_on() {
    // u3 holds share through g0, whose grant u2 drew; u3's grant to alice
    // runs out, and u2, whom u3 draws on, removes it.
    let host = Host::new().await;
    compare(
        &host,
        &[
            Op::AddMember {
                actor: 1,
                group: 0,
                user: 2,
            },
            Op::AddMember {
                actor: 1,
                group: 0,
                user: 3,
            },
            Op::Share {
                actor: 1,
                agent: 0,
                to: To::User(2),
                level: 4,
                expires: None,
            },
            Op::Share {
                actor: 2,
                agent: 0,
                to: To::Group(0),
                level: 4,
                expires: None,
            },
            Op::Share {
                actor: 3,
                agent: 0,
                to: To::User(0),
                level: 0,
                expires: Some(1),
            },
            Op::Advance(1),
            Op::Unshare {
                actor: 2,
                agent: 0,
                from: To::User(0),
            },
        ],
    )
    .await
    .unwrap();
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
            let share = |actor, grantee, level| Op::Share { actor, agent: 0, to: To::User(grantee), level, expires: None };
            prop_assert!(host.apply(&share(1, 2, 4), 0).await.is_success());
            let giver = if chained { 2 } else { 1 };
            prop_assert!(host.apply(&share(giver, 3, 4), 0).await.is_success());
            let mut u3 = 5;
            for (step, op) in ops.iter().enumerate() {
                let status = match *op {
                    SharerOp::Share { actor, grantee, level } => {
                        host.apply(&share(actor, grantee, level), 0).await
                    }
                    SharerOp::Unshare { actor, grantee } => {
                        host.apply(&Op::Unshare { actor, agent: 0, from: To::User(grantee) }, 0).await
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
