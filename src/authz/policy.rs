//! The access policy: Datalog from `datalog/*.dl`, parsed once at start-up and
//! reused for every request with only that request's facts added.

use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use biscuit_auth::builder::{self, Fact, Term};
use biscuit_auth::error::{FailedCheck, Logic, Token as TokenError};
use biscuit_auth::{AuthorizerBuilder, AuthorizerLimits, Biscuit};

use super::engine::Engine;
use super::tokens::Verified;
use super::AuthError;

/// The policy files built into the binary, so it runs with no files beside it.
/// `--policy-dir` (or `Config::policy_dir`) loads a directory instead.
pub const EMBEDDED: &[(&str, &str)] = &[
    ("agents.dl", include_str!("../../datalog/agents.dl")),
    ("auth.dl", include_str!("../../datalog/auth.dl")),
    ("data.dl", include_str!("../../datalog/data.dl")),
    ("policy.dl", include_str!("../../datalog/policy.dl")),
];

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy file {file}: {reason}")]
    Parse { file: String, reason: String },
    #[error("policy directory {0}: {1}")]
    Io(String, String),
    #[error("the policy has no allow or deny rules, so it would refuse everything")]
    NoPolicies,
}

/// A compiled policy. Cloning the inner builder per request copies parsed
/// rules, never source text.
#[derive(Clone)]
pub struct Policy {
    base: AuthorizerBuilder,
    /// The same policy prepared for the fast evaluator; `None` if it uses
    /// what only biscuit-auth's authorizer evaluates.
    engine: Option<Arc<Engine>>,
    reads_time: bool,
    /// Every operation the policy names in an `agent_op` fact, sorted: the
    /// questions about one agent a caller may ask (`POST /api/check`).
    agent_ops: Arc<Vec<String>>,
    /// Every operation the policy names in a `step_up_op` fact, sorted: the
    /// requests that are presented the age of the session's last second
    /// factor (a per-request fact, so only these pay for it).
    step_up_ops: Arc<Vec<String>>,
}

/// The facts describing one request: the operation and whatever store facts
/// the decision needs (admin flag, owner, grants...). Keep it small: the cost of
/// a decision grows with the world.
///
/// Requests are built on every call but mostly answered from memory, so the
/// facts are kept as plain terms with a canonical text key, and only turned
/// into Datalog facts when the policy actually runs.
#[derive(Debug, Clone)]
pub struct RequestFacts {
    operation: String,
    facts: Vec<(&'static str, Vec<Term>)>,
    key: FactKey,
}

/// Identifies a request's world: two requests with equal keys present the
/// same facts to the policy. The request's own facts are kept as unambiguous
/// text; a shared [`FactSet`] by its precomputed hash for hashing and by its
/// text for equality, so a long shared set is never rehashed per request.
#[derive(Debug, Clone, Default)]
pub struct FactKey {
    own: String,
    shared: Option<Arc<FactSet>>,
}

impl PartialEq for FactKey {
    fn eq(&self, other: &Self) -> bool {
        self.own == other.own
            && match (&self.shared, &other.shared) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a.key == b.key,
                _ => false,
            }
    }
}

impl Eq for FactKey {}

impl Hash for FactKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.own.hash(state);
        self.shared.as_ref().map(|set| set.key_hash).hash(state);
    }
}

/// Facts many requests share (an agent with its owner and grants), with
/// their part of the request key, built once and reused (see
/// [`RequestFacts::with`]).
#[derive(Debug, Clone)]
pub struct FactSet {
    facts: Vec<(&'static str, Vec<Term>)>,
    key: String,
    key_hash: u64,
}

impl FactSet {
    pub fn new<I: IntoIterator<Item = (&'static str, Vec<Term>)>>(facts: I) -> Self {
        let facts: Vec<_> = facts.into_iter().collect();
        let mut key = String::with_capacity(64 * facts.len());
        for (name, terms) in &facts {
            push_key_fact(&mut key, name, terms);
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        Self {
            facts,
            key,
            key_hash: hasher.finish(),
        }
    }
}

fn push_key_fact(key: &mut String, name: &str, terms: &[Term]) {
    key.push_str(name);
    key.push('(');
    for (i, term) in terms.iter().enumerate() {
        if i > 0 {
            key.push(',');
        }
        push_key_term(key, term);
    }
    key.push_str(");");
}

fn push_key_term(key: &mut String, term: &Term) {
    use std::fmt::Write;
    match term {
        Term::Str(s) => {
            key.push('"');
            // Ids and names rarely hold a quote or a backslash: copied
            // whole, not a character at a time.
            let mut rest = s.as_str();
            while let Some(at) = rest.find(['"', '\\']) {
                key.push_str(&rest[..at]);
                key.push('\\');
                key.push_str(&rest[at..at + 1]);
                rest = &rest[at + 1..];
            }
            key.push_str(rest);
            key.push('"');
        }
        Term::Integer(i) => {
            let _ = write!(key, "{i}");
        }
        other => {
            let _ = write!(key, "{other}");
        }
    }
}

impl RequestFacts {
    pub fn new(operation: &str) -> Self {
        Self {
            operation: operation.to_owned(),
            facts: Vec::with_capacity(8),
            key: FactKey {
                own: String::with_capacity(96),
                shared: None,
            },
        }
        .fact("operation", [builder::string(operation)])
    }

    pub fn fact<const N: usize>(mut self, name: &'static str, terms: [Term; N]) -> Self {
        push_key_fact(&mut self.key.own, name, &terms);
        self.facts.push((name, terms.into()));
        self
    }

    /// Add a prebuilt set of facts; a request has at most one (a second
    /// replaces the first).
    pub fn with(mut self, set: &Arc<FactSet>) -> Self {
        self.key.shared = Some(set.clone());
        self
    }

    pub fn operation(&self) -> &str {
        &self.operation
    }

    pub fn key(&self) -> &FactKey {
        &self.key
    }

    /// Every fact of the request, as (name, terms).
    pub(crate) fn terms(&self) -> impl Iterator<Item = (&str, &[Term])> + '_ {
        let shared = self.key.shared.iter().flat_map(|set| set.facts.iter());
        self.facts
            .iter()
            .chain(shared)
            .map(|(name, terms)| (*name, terms.as_slice()))
    }

    fn datalog(&self) -> impl Iterator<Item = Fact> + '_ {
        let shared = self.key.shared.iter().flat_map(|set| set.facts.iter());
        self.facts
            .iter()
            .chain(shared)
            .map(|(name, terms)| builder::fact(name, terms))
    }
}

impl Policy {
    pub fn embedded(limits: AuthorizerLimits) -> Result<Self, PolicyError> {
        let sources: Vec<(String, String)> = EMBEDDED
            .iter()
            .map(|(name, text)| (name.to_string(), text.to_string()))
            .collect();
        Self::compile(&sources, limits)
    }

    /// Every `*.dl` file in `dir`, in name order.
    pub fn from_dir(dir: &Path, limits: AuthorizerLimits) -> Result<Self, PolicyError> {
        let io = |e: std::io::Error| PolicyError::Io(dir.display().to_string(), e.to_string());
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|ext| ext == "dl") {
                let text = std::fs::read_to_string(&path).map_err(io)?;
                files.push((path.display().to_string(), text));
            }
        }
        files.sort();
        Self::compile(&files, limits)
    }

    pub fn compile(
        sources: &[(String, String)],
        limits: AuthorizerLimits,
    ) -> Result<Self, PolicyError> {
        let mut base = AuthorizerBuilder::new().set_limits(limits.clone());
        for (file, text) in sources {
            base = base.code(text).map_err(|e| PolicyError::Parse {
                file: file.clone(),
                reason: e.to_string(),
            })?;
        }
        if !base.dump_code().lines().any(|l| {
            let l = l.trim_start();
            l.starts_with("allow if") || l.starts_with("deny if")
        }) {
            return Err(PolicyError::NoPolicies);
        }
        let reads_time = mentions_time(&base.dump_code());
        let agent_ops = Arc::new(agent_operations(&base)?);
        let step_up_ops = Arc::new(named_operations(
            &base,
            "step_up_op facts",
            "data($op) <- step_up_op($op, $rank)",
        )?);
        let engine = Engine::new(&base, limits)
            .map_err(|reason| PolicyError::Parse {
                file: "the compiled policy".into(),
                reason,
            })?
            .map(Arc::new);
        Ok(Self {
            base,
            engine,
            reads_time,
            agent_ops,
            step_up_ops,
        })
    }

    /// The fast evaluator, if the policy is one it covers.
    pub fn engine(&self) -> Option<&Engine> {
        self.engine.as_deref()
    }

    /// The operations on one agent the policy knows (its `agent_op` facts).
    pub fn step_up_ops(&self) -> &[String] {
        &self.step_up_ops
    }

    pub fn agent_ops(&self) -> &[String] {
        &self.agent_ops
    }

    /// Whether a decision can depend on the clock through the policy itself
    /// (a rule or check on `time($t)`): then no decision may be reused.
    pub fn reads_time(&self) -> bool {
        self.reads_time
    }

    /// Decide one request. Checks carried by the token (expiry, holder-added
    /// restrictions) must pass, and the policy's allow/deny rules decide.
    pub fn authorize(&self, token: &Verified, request: &RequestFacts) -> Result<(), AuthError> {
        self.authorize_at(token, request, SystemTime::now())
    }

    /// [`Self::authorize`] with the clock given.
    pub fn authorize_at(
        &self,
        token: &Verified,
        request: &RequestFacts,
        now: SystemTime,
    ) -> Result<(), AuthError> {
        let decision = match self.fast(token) {
            Some((engine, prepared)) => engine.authorize(prepared, request.terms(), unix(now)),
            None => self.decide_reference(&token.biscuit, request, now),
        };
        decision
            .map(|_| ())
            .map_err(|e| explain_refusal(request, e))
    }

    /// Whether decisions for `token` may be remembered (see [`Verified`]):
    /// asked of the prepared token when the evaluator covers it, of its
    /// printed blocks otherwise. Found once per token.
    pub fn remembers(&self, token: &Verified) -> bool {
        *token.remembers.get_or_init(|| match self.fast(token) {
            Some((engine, prepared)) => !engine.reads_time(prepared, token.holder_from),
            None => !token.holder_blocks_read_time_printed(),
        })
    }

    /// The evaluator and the token prepared for it, when both exist.
    fn fast<'a>(
        &'a self,
        token: &'a Verified,
    ) -> Option<(&'a Engine, &'a super::engine::PreparedToken)> {
        let engine = self.engine.as_deref()?;
        let prepared = token
            .prepared
            .get_or_init(|| engine.prepare(&token.biscuit))
            .as_ref()
            .ok()?;
        engine.owns(prepared).then_some((engine, prepared))
    }

    /// The decision of biscuit-auth's own authorizer, built from the
    /// policy, the token, `time(now)` and the request's facts: the
    /// reference the fast evaluator is held to, and what decides tokens it
    /// does not cover.
    pub fn decide_reference(
        &self,
        token: &Biscuit,
        request: &RequestFacts,
        now: SystemTime,
    ) -> Result<usize, TokenError> {
        let mut builder = self
            .base
            .clone()
            .fact(builder::fact("time", &[builder::date(&now)]))?;
        for fact in request.datalog() {
            builder = builder.fact(fact)?;
        }
        builder.build(token)?.authorize()
    }

    /// The fast evaluator's decision, as [`Self::decide_reference`] reports
    /// it; `None` when the fast evaluator leaves this token or policy to
    /// biscuit-auth.
    pub fn decide_fast(
        &self,
        token: &Verified,
        request: &RequestFacts,
        now: SystemTime,
    ) -> Option<Result<usize, TokenError>> {
        let (engine, prepared) = self.fast(token)?;
        Some(engine.authorize(prepared, request.terms(), unix(now)))
    }
}

fn unix(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The first terms of the policy's `agent_op` facts, sorted and unique.
fn agent_operations(base: &AuthorizerBuilder) -> Result<Vec<String>, PolicyError> {
    named_operations(base, "agent_op facts", "data($op) <- agent_op($op, $level)")
}

/// The operations `query` finds among the policy's own facts, sorted.
fn named_operations(
    base: &AuthorizerBuilder,
    what: &str,
    query: &str,
) -> Result<Vec<String>, PolicyError> {
    let failed = |reason: String| PolicyError::Parse {
        file: what.into(),
        reason,
    };
    let mut authorizer = base
        .clone()
        .build_unauthenticated()
        .map_err(|e| failed(e.to_string()))?;
    let found: Vec<(String,)> = authorizer.query(query).map_err(|e| failed(e.to_string()))?;
    let mut ops: Vec<String> = found.into_iter().map(|(op,)| op).collect();
    ops.sort();
    ops.dedup();
    Ok(ops)
}

/// Conservative test for Datalog that reads the `time` fact: any predicate
/// named `time` (printed as `time(`) counts. A false positive only costs a
/// cache miss.
pub fn mentions_time(datalog: &str) -> bool {
    datalog.match_indices("time(").any(|(at, _)| {
        !datalog[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':')
    })
}

impl Policy {
    /// Every `holds(agent, user, rank)` the policy derives from `request`'s
    /// facts alone (no token): who effectively holds what on an agent.
    pub fn ranks(&self, request: &RequestFacts) -> Result<super::Ranks, AuthError> {
        let Some(engine) = self.engine.as_deref() else {
            return self.ranks_reference(request);
        };
        let found = engine
            .derive(request.terms(), "holds")
            .map_err(|e| match e {
                TokenError::RunLimit(limit) => limit_hit(request, &limit.to_string()),
                other => AuthError::Internal(format!("deriving ranks: {other}")),
            })?;
        found
            .into_iter()
            .map(|terms| match terms.as_slice() {
                [Term::Str(agent), Term::Str(user), Term::Integer(rank)] => {
                    Ok((agent.clone(), user.clone(), *rank))
                }
                other => Err(AuthError::Internal(format!(
                    "the policy derived holds{other:?}, not (agent, user, rank)"
                ))),
            })
            .collect()
    }

    /// [`Self::ranks`] by biscuit-auth's own authorizer.
    pub fn ranks_reference(&self, request: &RequestFacts) -> Result<super::Ranks, AuthError> {
        let mut builder = self.base.clone();
        for fact in request.datalog() {
            builder = builder
                .fact(fact)
                .map_err(|e| AuthError::Internal(format!("request fact: {e}")))?;
        }
        let mut authorizer = builder
            .build_unauthenticated()
            .map_err(|e| AuthError::Internal(format!("building the authorizer: {e}")))?;
        authorizer
            .query("data($a, $u, $r) <- holds($a, $u, $r)")
            .map_err(|e| match e {
                TokenError::RunLimit(limit) => limit_hit(request, &limit.to_string()),
                other => AuthError::Internal(format!("querying ranks: {other}")),
            })
    }
}

fn limit_hit(request: &RequestFacts, what: &str) -> AuthError {
    tracing::warn!(
        operation = request.operation(),
        limit = what,
        "authorizer limit reached"
    );
    AuthError::Limit
}

fn explain_refusal(request: &RequestFacts, error: TokenError) -> AuthError {
    let op = request.operation();
    match error {
        TokenError::RunLimit(limit) => limit_hit(request, &limit.to_string()),
        TokenError::FailedLogic(Logic::Unauthorized { checks, .. })
        | TokenError::FailedLogic(Logic::NoMatchingPolicy { checks })
            if checks.iter().any(is_token_check) =>
        {
            AuthError::Denied(format!("a restriction in the token does not allow {op}"))
        }
        TokenError::FailedLogic(_) => AuthError::Denied(format!("the policy does not allow {op}")),
        TokenError::Execution(e) => {
            tracing::debug!(error = %e, operation = op, "a token check failed to evaluate");
            AuthError::Denied(format!(
                "a restriction in the token could not be evaluated for {op}"
            ))
        }
        other => AuthError::Internal(format!("authorizing {op}: {other}")),
    }
}

fn is_token_check(check: &FailedCheck) -> bool {
    matches!(check, FailedCheck::Block(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_keys_are_unambiguous() {
        let a = RequestFacts::new("op").fact("f", [builder::string("a\",\"b")]);
        let b = RequestFacts::new("op").fact("f", [builder::string("a"), builder::string("b")]);
        assert_ne!(a.key(), b.key());
        let c = RequestFacts::new("op").fact("f", [builder::int(1)]);
        let d = RequestFacts::new("op").fact("f", [builder::string("1")]);
        assert_ne!(c.key(), d.key());
    }

    proptest::proptest! {
        /// A string is written into a key with every quote and backslash
        /// escaped, and nothing else changed: what keeps keys unambiguous.
        #[test]
        fn strings_are_escaped_in_keys(text in "[a-z\"\\\\é]{0,12}") {
            let mut key = String::new();
            push_key_term(&mut key, &builder::string(&text));
            let mut expected = String::from("\"");
            for c in text.chars() {
                if c == '"' || c == '\\' {
                    expected.push('\\');
                }
                expected.push(c);
            }
            expected.push('"');
            proptest::prop_assert_eq!(key, expected);
        }
    }

    #[test]
    fn shared_fact_sets_are_keyed_by_content() {
        let set = |value: &str| Arc::new(FactSet::new([("agent", vec![builder::string(value)])]));
        let shared = RequestFacts::new("op").with(&set("a"));
        let alone = RequestFacts::new("op").fact("agent", [builder::string("a")]);
        let facts = |r: &RequestFacts| r.datalog().map(|f| f.to_string()).collect::<Vec<_>>();
        assert_eq!(facts(&shared), facts(&alone));
        // Another set with the same facts is the same world; other facts are not.
        assert_eq!(shared.key(), RequestFacts::new("op").with(&set("a")).key());
        assert_ne!(shared.key(), RequestFacts::new("op").with(&set("b")).key());
        assert_ne!(shared.key(), alone.key());
        assert_ne!(shared.key(), RequestFacts::new("op2").with(&set("a")).key());
    }

    #[test]
    fn time_mentions_are_found_conservatively() {
        assert!(mentions_time(
            "check if time($t), $t < 2030-01-01T00:00:00Z;"
        ));
        assert!(mentions_time("allow if time($t);"));
        assert!(!mentions_time("allow if overtime($x);"));
        assert!(!mentions_time("user(\"u\");"));
    }

    #[test]
    fn the_embedded_policy_compiles_and_does_not_read_the_clock() {
        let p = Policy::embedded(AuthorizerLimits::default()).unwrap();
        assert!(!p.reads_time());
        assert!(p.agent_ops().iter().any(|op| op == "agent:read"));
        assert!(p.agent_ops().iter().any(|op| op == "agent:access:read"));
    }

    #[test]
    fn a_policy_without_decisions_is_refused() {
        let err = Policy::compile(
            &[("x.dl".into(), "fact(1);".into())],
            AuthorizerLimits::default(),
        );
        assert!(matches!(err, Err(PolicyError::NoPolicies)));
        let err = Policy::compile(
            &[("x.dl".into(), "allow if".into())],
            AuthorizerLimits::default(),
        );
        assert!(matches!(err, Err(PolicyError::Parse { .. })));
    }
}
