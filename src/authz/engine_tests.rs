//! The fast evaluator against biscuit-auth's own authorizer: random worlds
//! (owners, grants at every level, admins, archived agents, grants at
//! stake), random tokens (sessions and delegated tokens) narrowed by random
//! holder blocks (checks, facts, rules, `trusting` scopes, time checks,
//! expressions that fail, blocks that blow the limits), random operations
//! and clocks. Both must reach the same decision, the same failed checks
//! and the same errors. A mutated policy rule or a dropped holder block
//! must be caught.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use biscuit_auth::builder::{self, int, string};
use biscuit_auth::error::{FailedCheck, Logic, MatchedPolicy, Token as TokenError};
use biscuit_auth::{AuthorizerLimits, BlockBuilder};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

use crate::authz::keys::RootKeys;
use crate::authz::policy::{Policy, RequestFacts, EMBEDDED};
use crate::authz::tokens::{self, Verified};

const USERS: [&str; 4] = ["u0", "u1", "u2", "u3"];
const AGENTS: [&str; 2] = ["a0", "a1"];
const LEVELS: [&str; 6] = ["view", "use", "edit", "manage", "share", "owner"];
const OPERATIONS: [&str; 16] = [
    "agent:read",
    "agent:update",
    "agent:archive",
    "agent:share",
    "agent:unshare",
    "agent:tokens:mint",
    "agent:delete",
    "agent:chat",
    "agent:shares:read",
    "agent:create",
    "agent:list",
    "auth:me",
    "auth:users:list",
    "data:read",
    "tokens:revoke",
    "no:such:operation",
];
/// The clock of every case is this plus an offset; sessions expire a day
/// after it.
const EPOCH: u64 = 1_900_000_000;

#[derive(Debug, Clone)]
struct Case {
    owners: [usize; 2],
    grants: Vec<(usize, usize, usize, usize)>,
    admins: Vec<bool>,
    active: Vec<bool>,
    archived: bool,
    caller: usize,
    /// `None`: a session; `Some((agent, max_rank))`: a delegated token.
    delegated: Option<(usize, i64)>,
    holder_blocks: Vec<Vec<String>>,
    operation: usize,
    agent: usize,
    granting: i64,
    at_stake: Option<usize>,
    now_offset: i64,
}

fn date(offset_hours: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs((EPOCH as i64 + offset_hours * 3600) as u64);
    biscuit_auth::builder::date(&at).to_string()
}

/// One statement a holder might append.
fn holder_statement() -> impl Strategy<Value = String> {
    let user = prop::sample::select(USERS.to_vec());
    let agent = prop::sample::select(AGENTS.to_vec());
    let operation = prop::sample::select(OPERATIONS.to_vec());
    prop_oneof![
        operation
            .clone()
            .prop_map(|op| format!(r#"check if operation("{op}");"#)),
        agent.prop_map(|a| format!(r#"check if resource_agent("{a}");"#)),
        (1i64..=6).prop_map(|r| format!("check if required_rank($r), $r <= {r};")),
        // Every comparison, of two numbers and of a number with a string
        // (which biscuit-auth refuses, or answers, by the operator).
        (
            prop::sample::select(vec!["<", ">", "<=", ">=", "==", "!=", "===", "!=="]),
            1i64..=6
        )
            .prop_map(|(op, r)| format!("check if required_rank($r), $r {op} {r};")),
        prop::sample::select(vec!["<", ">=", "==", "!=", "===", "!=="])
            .prop_map(|op| format!(r#"check if required_rank($r), operation($op), $r {op} $op;"#)),
        prop::sample::select(vec!["==", "!=", "===", "!=="])
            .prop_map(|op| format!(r#"check if operation($op), $op {op} "agent:read";"#)),
        (-30i64..=30).prop_map(|h| format!("check if time($t), $t <= {};", date(h))),
        Just(r#"check all operation($op), $op.starts_with("agent:");"#.to_owned()),
        user.clone()
            .prop_map(|u| format!(r#"reject if admin("{u}");"#)),
        user.clone()
            .prop_map(|u| format!(r#"check if user($u), $u == "{u}";"#)),
        // Facts and rules of a holder's block are the holder's own: they
        // must not give the policy anything.
        user.clone()
            .prop_map(|u| format!(r#"admin("{u}"); active("{u}");"#)),
        operation
            .clone()
            .prop_map(|op| format!(r#"may("{op}"); session("forged");"#)),
        Just(
            r#"mine($op) <- operation($op), $op.starts_with("agent:"); check if mine($op);"#
                .to_owned()
        ),
        Just(r#"seen($u) <- user($u) trusting previous; check if seen($u);"#.to_owned()),
        Just(r#"check if grant($a, $u, $l, $b) trusting authority;"#.to_owned()),
        user.prop_map(|u| format!(r#"check if holds($a, "{u}", $r), $r >= 2;"#)),
        // An expression that fails to evaluate (a string plus a number).
        Just(r#"check if operation($op), $op + 1 == 2;"#.to_owned()),
        Just(r#"check if operation($op), $op.length() > 9 || $op.contains("me");"#.to_owned()),
        // Text of strings the policy lacks (the request's agent, the
        // token's user), and a string made from one, found among them.
        Just(r#"check if resource_agent($a), $a + "" == $a;"#.to_owned()),
        Just(r#"check if user($u), $u.length() > 2, $u.type() == "string";"#.to_owned()),
        // Too many facts for the limits of the tests below.
        Just(format!(
            "{} pair($a, $b) <- n($a), n($b);",
            (0..30).map(|i| format!("n({i});")).collect::<String>()
        )),
        // Too many iterations: a chain longer than the limit.
        Just(format!(
            "{} reach($a, $c) <- reach($a, $b), edge($b, $c); reach(0, 0);",
            (0..15)
                .map(|i| format!("edge({i}, {});", i + 1))
                .collect::<String>()
        )),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let index = |n: usize| 0..n;
    (
        [index(4), index(4)],
        prop::collection::vec((index(2), index(4), index(6), index(4)), 0..7),
        prop::collection::vec(prop::bool::weighted(0.2), 4),
        prop::collection::vec(prop::bool::weighted(0.9), 4),
        prop::bool::weighted(0.15),
        index(4),
        prop::option::weighted(0.5, (index(2), 1i64..=6)),
        prop::collection::vec(prop::collection::vec(holder_statement(), 1..3), 0..3),
        (index(OPERATIONS.len()), index(2), 0i64..=6),
        prop::option::weighted(0.3, index(4)),
        -40i64..=40,
    )
        .prop_map(
            |(
                owners,
                grants,
                admins,
                active,
                archived,
                caller,
                delegated,
                holder_blocks,
                (operation, agent, granting),
                at_stake,
                now_offset,
            )| Case {
                owners,
                grants,
                admins,
                active,
                archived,
                caller,
                delegated,
                holder_blocks,
                operation,
                agent,
                granting,
                at_stake,
                now_offset,
            },
        )
}

impl Case {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs((EPOCH as i64 + self.now_offset * 3600) as u64)
    }

    fn token(&self, keys: &RootKeys) -> Verified {
        let caller = USERS[self.caller];
        let expires = EPOCH as i64 + 24 * 3600;
        let token = match self.delegated {
            None => tokens::mint_session(keys, caller, "s1", expires),
            Some((agent, rank)) => {
                tokens::mint_delegated(keys, caller, "d1", AGENTS[agent], rank, expires)
            }
        }
        .expect("mint");
        let mut biscuit = tokens::verify(keys, &token).expect("verify").biscuit;
        for block in &self.holder_blocks {
            let code = block.join("\n");
            let builder = BlockBuilder::new()
                .code(&code)
                .unwrap_or_else(|e| panic!("holder block {code}: {e}"));
            biscuit = biscuit.append(builder).expect("append");
        }
        let claims = tokens::verify(keys, &biscuit.to_base64().expect("serialize"))
            .expect("verify narrowed")
            .claims;
        Verified::new(biscuit, claims)
    }

    /// The facts the server would add for this request.
    fn request(&self) -> RequestFacts {
        let agent = AGENTS[self.agent];
        let mut request = RequestFacts::new(OPERATIONS[self.operation])
            .fact("granting_rank", [int(self.granting)])
            .fact("resource_agent", [string(agent)]);
        request = match self.at_stake {
            Some(by) => request.fact("grant_at_stake", [string(USERS[by])]),
            None => request.fact("no_grant_at_stake", [builder::boolean(true)]),
        };
        for (i, name) in AGENTS.iter().enumerate() {
            request = request
                .fact("agent", [string(name)])
                .fact("owner", [string(name), string(USERS[self.owners[i]])]);
            if !(self.archived && i == self.agent) {
                request = request.fact("active_agent", [string(name)]);
            }
        }
        for &(a, to, level, by) in &self.grants {
            request = request.fact(
                "grant",
                [
                    string(AGENTS[a]),
                    string(USERS[to]),
                    string(LEVELS[level]),
                    string(USERS[by]),
                ],
            );
        }
        for (i, user) in USERS.iter().enumerate() {
            if self.active[i] {
                request = request.fact("active", [string(user)]);
            }
            if self.admins[i] {
                request = request.fact("admin", [string(user)]);
            }
        }
        request.fact("data_owner", [string(USERS[self.caller])])
    }
}

/// A decision with what matters of it: which policy matched and which
/// checks failed, or the kind of error.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Allowed(usize),
    Refused {
        policy: Option<Result<usize, usize>>,
        failed: Vec<(Option<u32>, u32, String)>,
    },
    Error(String),
}

fn outcome(decision: Result<usize, TokenError>) -> Outcome {
    let failed = |checks: &[FailedCheck]| {
        checks
            .iter()
            .map(|c| match c {
                FailedCheck::Block(b) => (Some(b.block_id), b.check_id, b.rule.clone()),
                FailedCheck::Authorizer(a) => (None, a.check_id, a.rule.clone()),
            })
            .collect()
    };
    match decision {
        Ok(i) => Outcome::Allowed(i),
        Err(TokenError::FailedLogic(Logic::Unauthorized { policy, checks })) => Outcome::Refused {
            policy: Some(match policy {
                MatchedPolicy::Allow(i) => Ok(i),
                MatchedPolicy::Deny(i) => Err(i),
            }),
            failed: failed(&checks),
        },
        Err(TokenError::FailedLogic(Logic::NoMatchingPolicy { checks })) => Outcome::Refused {
            policy: None,
            failed: failed(&checks),
        },
        // Which failing expression is reported first is an accident of
        // iteration order in biscuit-auth; that one failed is not.
        Err(TokenError::Execution(_)) => Outcome::Error("expression".into()),
        Err(TokenError::RunLimit(limit)) => Outcome::Error(limit.to_string()),
        Err(other) => Outcome::Error(other.to_string()),
    }
}

fn limits() -> AuthorizerLimits {
    AuthorizerLimits {
        max_facts: 600,
        max_iterations: 12,
        // Generous: the two evaluators differ in speed, never in what a
        // time limit would cut.
        max_time: Duration::from_secs(30),
    }
}

fn embedded(mutate: impl Fn(&str) -> String) -> Policy {
    let sources: Vec<(String, String)> = EMBEDDED
        .iter()
        .map(|(name, text)| (name.to_string(), mutate(text)))
        .collect();
    Policy::compile(&sources, limits()).expect("policy compiles")
}

/// The case's decision by biscuit-auth (with `reference`) and by the fast
/// evaluator (with `fast`, its token optionally altered).
fn decisions(
    reference: &Policy,
    fast: &Policy,
    keys: &RootKeys,
    case: &Case,
    drop_last_block: bool,
) -> (Outcome, Outcome) {
    let token = case.token(keys);
    let request = case.request();
    let expected = outcome(reference.decide_reference(&token.biscuit, &request, case.now()));
    if drop_last_block {
        let engine = fast.engine().expect("the embedded policy is covered");
        let mut prepared = engine.prepare(&token.biscuit).expect("covered token");
        prepared.blocks.pop();
        let got = engine.authorize(&prepared, request.terms(), unix(case.now()));
        return (expected, outcome(got));
    }
    let got = fast
        .decide_fast(&token, &request, case.now())
        .expect("the fast evaluator covers every token minted here");
    (expected, outcome(got))
}

fn unix(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn the_fast_evaluator_decides_as_biscuit_auth_does(case in case()) {
        thread_local! {
            static SETUP: (Policy, RootKeys) = (embedded(str::to_owned), RootKeys::ephemeral());
        }
        SETUP.with(|(policy, keys)| {
            let (expected, got) = decisions(policy, policy, keys, &case, false);
            prop_assert_eq!(expected, got);
            Ok(())
        })?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn whether_a_holder_reads_the_clock_is_found_without_printing(case in case()) {
        thread_local! {
            static SETUP: (Policy, RootKeys) = (embedded(str::to_owned), RootKeys::ephemeral());
        }
        SETUP.with(|(policy, keys)| {
            let printed = !case.token(keys).holder_blocks_read_time_printed();
            prop_assert_eq!(policy.remembers(&case.token(keys)), printed);
            Ok(())
        })?;
    }

    #[test]
    fn ranks_are_derived_as_biscuit_auth_derives_them(case in case()) {
        thread_local! {
            static POLICY: Policy = embedded(str::to_owned);
        }
        POLICY.with(|policy| {
            let request = case.request();
            let mut expected = policy.ranks_reference(&request).map_err(|e| e.to_string());
            let mut got = policy.ranks(&request).map_err(|e| e.to_string());
            if let (Ok(expected), Ok(got)) = (&mut expected, &mut got) {
                expected.sort();
                got.sort();
            }
            prop_assert_eq!(expected, got);
            Ok(())
        })?;
    }
}

/// Runs up to `tries` generated cases and returns the first on which the
/// two disagree.
fn first_disagreement(fast: &Policy, drop_last_block: bool, tries: usize) -> Option<Case> {
    let reference = embedded(str::to_owned);
    let keys = RootKeys::ephemeral();
    // A fixed seed: the search either finds its case on every run or on
    // none, never on some.
    let mut runner = TestRunner::deterministic();
    let strategy = case().prop_filter("a holder block to drop", move |c| {
        !drop_last_block || !c.holder_blocks.is_empty()
    });
    (0..tries).find_map(|_| {
        let case = strategy.new_tree(&mut runner).ok()?.current();
        let (expected, got) = decisions(&reference, fast, &keys, &case, drop_last_block);
        (expected != got).then_some(case)
    })
}

#[test]
fn a_mutated_rule_is_caught() {
    // A grant holds while its drawer still holds `share`: require `manage`
    // instead, in the fast evaluator's copy only.
    let mutated = embedded(|text| text.replace("$b >= 5, $b >= $r", "$b >= 4, $b >= $r"));
    assert!(
        first_disagreement(&mutated, false, 2_000).is_some(),
        "no case told the mutated policy from the real one"
    );
}

#[test]
fn a_dropped_holder_block_is_caught() {
    let policy = embedded(str::to_owned);
    assert!(
        first_disagreement(&policy, true, 500).is_some(),
        "no case noticed a holder block missing"
    );
}

#[test]
fn the_cases_reach_every_kind_of_decision() {
    let policy = embedded(str::to_owned);
    let keys = RootKeys::ephemeral();
    let mut runner = TestRunner::deterministic();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..600 {
        let case = case().new_tree(&mut runner).expect("case").current();
        let (expected, _) = decisions(&policy, &policy, &keys, &case, false);
        seen.insert(match expected {
            Outcome::Allowed(_) => "allowed".to_owned(),
            Outcome::Refused { failed, .. } if failed.is_empty() => "refused by policy".to_owned(),
            Outcome::Refused { .. } => "refused by a check".to_owned(),
            Outcome::Error(e) => e,
        });
    }
    for kind in [
        "allowed",
        "refused by policy",
        "refused by a check",
        "expression",
        "too many facts generated",
        "too many engine iterations",
    ] {
        assert!(seen.contains(kind), "no case was {kind}: {seen:?}");
    }
}

#[test]
fn what_an_authority_block_derives_is_not_skipped() {
    // A token the server never mints, whose authority block derives the
    // `session` the policy's sign-in rules need instead of stating it: the
    // evaluator skips rules nothing can match, and must count what a
    // token's rules derive as something that can.
    let policy = embedded(str::to_owned);
    let token = session_of_u0(r#"user("u0"); opened("s0"); session($s) <- opened($s);"#);
    let now = UNIX_EPOCH + Duration::from_secs(EPOCH);
    for operation in ["auth:me", "agent:create", "tokens:list"] {
        let request = RequestFacts::new(operation)
            .fact("active", [string("u0")])
            .fact("account", [string("u0")]);
        let expected = outcome(policy.decide_reference(&token.biscuit, &request, now));
        assert!(
            matches!(expected, Outcome::Allowed(_)),
            "{operation}: {expected:?}"
        );
        let got = policy.decide_fast(&token, &request, now).expect("covered");
        assert_eq!(expected, outcome(got), "{operation}");
    }
}

#[test]
fn a_fact_a_token_rule_derives_is_not_skipped() {
    // The policy's rules naming one exact request fact
    // (`operation("agent:create")`) are skipped when it is not given; one
    // a token's authority block derives counts as given.
    let policy = embedded(str::to_owned);
    let token =
        session_of_u0(r#"user("u0"); session("s0"); operation("agent:create") <- user("u0");"#);
    let now = UNIX_EPOCH + Duration::from_secs(EPOCH);
    let mut allowed = 0;
    for operation in ["auth:me", "tokens:list", "no:such:operation"] {
        let request = RequestFacts::new(operation)
            .fact("active", [string("u0")])
            .fact("account", [string("u0")]);
        let expected = outcome(policy.decide_reference(&token.biscuit, &request, now));
        allowed += usize::from(matches!(expected, Outcome::Allowed(_)));
        let got = policy.decide_fast(&token, &request, now).expect("covered");
        assert_eq!(expected, outcome(got), "{operation}");
    }
    // What the derived operation allows is what a wrong skip would lose.
    assert!(allowed > 0, "the derived operation allowed nothing");
}

/// A token the server never mints: u0's session `s0`, with `authority` as
/// its authority block.
fn session_of_u0(authority: &str) -> Verified {
    let keys = RootKeys::ephemeral();
    let biscuit = biscuit_auth::Biscuit::builder()
        .code(authority)
        .expect("authority block")
        .build(keys.signer())
        .expect("token");
    let claims = tokens::Claims::Session {
        user: "u0".into(),
        session: "s0".into(),
        expires_at: EPOCH as i64 + 86_400,
    };
    Verified::new(biscuit, claims)
}

#[test]
fn comparisons_decided_here_are_decided_as_biscuit_auth_does() {
    use biscuit_auth::datalog::{Binary, Expression, Op, SymbolTable, TemporarySymbolTable, Term};
    use std::collections::HashMap;
    let terms = [
        Term::Integer(-1),
        Term::Integer(0),
        Term::Integer(2),
        Term::Str(1024),
        Term::Str(1025),
        Term::Bool(true),
        Term::Date(2),
        Term::Null,
    ];
    let operators = [
        Binary::LessThan,
        Binary::GreaterThan,
        Binary::LessOrEqual,
        Binary::GreaterOrEqual,
        Binary::Equal,
        Binary::NotEqual,
        Binary::HeterogeneousEqual,
        Binary::HeterogeneousNotEqual,
    ];
    let symbols = SymbolTable::new();
    let mut decided = 0;
    for op in &operators {
        for left in &terms {
            for right in &terms {
                let ops = [
                    Op::Value(left.clone()),
                    Op::Value(right.clone()),
                    Op::Binary(op.clone()),
                ];
                let comparison = super::Comparison::of(&ops, &HashMap::new())
                    .expect("a comparison of two constants");
                let Some(holds) = comparison.decide(&[]) else {
                    continue;
                };
                decided += 1;
                let expected = Expression { ops: ops.to_vec() }.evaluate(
                    &HashMap::new(),
                    &mut TemporarySymbolTable::new(&symbols),
                    &HashMap::new(),
                );
                assert_eq!(expected, Ok(Term::Bool(holds)), "{left:?} {op:?} {right:?}");
            }
        }
    }
    // Every operator on two numbers, (in)equality on two strings.
    assert_eq!(decided, 8 * 9 + 4 * 4);
}
