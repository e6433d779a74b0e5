//! Authentication and authorization: keys, token minting and verification,
//! the verified-token cache and the Datalog policy. Knows nothing about HTTP;
//! the HTTP layer maps [`AuthError`] to status codes in one place.

pub mod cache;
pub mod engine;
pub mod keys;
pub mod policy;
pub mod tokens;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cache::{TokenCache, Verified};
use keys::RootKeys;
use policy::{Policy, RequestFacts};

/// `(agent, user, rank)` for every right the policy derives.
pub type Ranks = Vec<(String, String, i64)>;

/// Why a request was not let through.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    #[error("token expired")]
    Expired,
    #[error("session is no longer valid")]
    Revoked,
    #[error("forbidden: {0}")]
    Denied(String),
    /// The authorizer hit its run limits: a server-side condition, never
    /// reported as a denial.
    #[error("authorization could not be completed in time")]
    Limit,
    #[error("internal authorization error: {0}")]
    Internal(String),
    /// The store behind the records that keep tokens alive cannot be read
    /// now: answered `503`, never a decision.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// A failure reading what a token rests on: unavailable when the store
    /// is (down, damaged), internal otherwise.
    pub fn from_domain(e: crate::domain::DomainError) -> Self {
        use crate::store::StoreError;
        match e {
            crate::domain::DomainError::Store(
                StoreError::Unavailable(detail) | StoreError::Damaged(detail),
            ) => AuthError::Unavailable(detail),
            other => AuthError::Internal(other.to_string()),
        }
    }
}

/// What a remembered decision is found by: the token and the request's
/// facts.
#[derive(PartialEq, Eq)]
struct DecisionKey {
    token: tokens::TokenId,
    facts: policy::FactKey,
}

/// A [`DecisionKey`] borrowed from a request, hashing exactly as the key
/// does, so a decision is looked up without copying the request's facts.
#[derive(Hash)]
struct DecisionView<'a>(&'a tokens::TokenId, &'a policy::FactKey);

impl std::hash::Hash for DecisionKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        DecisionView(&self.token, &self.facts).hash(state);
    }
}

/// The verifier every request goes through.
pub struct Authz {
    keys: RootKeys,
    policy: Policy,
    cache: TokenCache,
    /// Effective ranks per distinct set of agent facts (see [`Authz::ranks`]).
    ranks: cache::Memo<policy::FactKey, Arc<Ranks>>,
    /// Decisions per token and set of request facts (see [`Authz::authorize`]).
    /// One memo for every token, bounded as a whole: however many agents a
    /// person uses, what they keep using stays remembered.
    decisions: cache::Memo<DecisionKey, Result<(), String>>,
    /// Decisions evaluated because nothing remembered them.
    cold_decisions: AtomicU64,
}

impl Authz {
    /// `cache_capacity` bounds the verified tokens and the remembered ranks,
    /// `decision_capacity` the remembered decisions.
    pub fn new(
        keys: RootKeys,
        policy: Policy,
        cache_capacity: usize,
        decision_capacity: usize,
    ) -> Self {
        Self {
            keys,
            policy,
            cache: TokenCache::new(cache_capacity),
            ranks: cache::Memo::new(cache_capacity),
            decisions: cache::Memo::new(decision_capacity),
            cold_decisions: AtomicU64::new(0),
        }
    }

    pub fn keys(&self) -> &RootKeys {
        &self.keys
    }

    /// Whether the policy may ask for a recent second factor for `operation`.
    pub fn is_step_up(&self, operation: &str) -> bool {
        self.policy
            .step_up_ops()
            .binary_search_by(|op| op.as_str().cmp(operation))
            .is_ok()
    }

    /// The operations on one agent the policy knows.
    pub fn agent_ops(&self) -> &[String] {
        self.policy.agent_ops()
    }

    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    /// Verify a token's signatures (or find it already verified) and check its
    /// claimed expiry against `now`.
    pub fn verify(&self, token: &str, now: i64) -> Result<Arc<Verified>, AuthError> {
        let verified = match self.cache.get(token) {
            Some(hit) => hit,
            None => {
                let verified = Arc::new(tokens::verify(&self.keys, token)?);
                self.cache.insert(token, verified.clone());
                verified
            }
        };
        if verified.claims.expires_at() <= now {
            return Err(AuthError::Expired);
        }
        Ok(verified)
    }

    /// Decide a request: a remembered decision for the same token and the same
    /// facts when that is exact (see [`Verified`]), else a Datalog run. Limit
    /// hits and internal errors are never remembered.
    pub fn authorize(&self, verified: &Verified, request: &RequestFacts) -> Result<(), AuthError> {
        let remember = !self.policy.reads_time() && self.policy.remembers(verified);
        if remember {
            let view = DecisionView(&verified.id, request.key());
            let remembered = self.decisions.get_by(&view, |key| {
                key.token == verified.id && key.facts == *request.key()
            });
            if let Some(decision) = remembered {
                return decision.map_err(AuthError::Denied);
            }
        }
        self.cold_decisions.fetch_add(1, Ordering::Relaxed);
        let decision = self.policy.authorize(verified, request);
        if remember {
            let remembered = match &decision {
                Ok(()) => Some(Ok(())),
                Err(AuthError::Denied(reason)) => Some(Err(reason.clone())),
                Err(_) => None,
            };
            if let Some(remembered) = remembered {
                let key = DecisionKey {
                    token: verified.id.clone(),
                    facts: request.key().clone(),
                };
                self.decisions.insert(key, remembered);
            }
        }
        decision
    }

    /// Who effectively holds which rank on the agents described by
    /// `request`, as the policy derives it. Remembered per exact fact set
    /// (the facts are everything the answer depends on).
    pub fn ranks(&self, request: &RequestFacts) -> Result<Arc<Ranks>, AuthError> {
        if !self.policy.reads_time() {
            if let Some(hit) = self.ranks.get(request.key()) {
                return Ok(hit);
            }
        }
        let ranks = Arc::new(self.policy.ranks(request)?);
        self.ranks.insert(request.key().clone(), ranks.clone());
        Ok(ranks)
    }

    /// Decide without consulting or filling the memo: for benchmarks and
    /// tests that measure or check the Datalog run itself.
    pub fn authorize_uncached(
        &self,
        verified: &Verified,
        request: &RequestFacts,
    ) -> Result<(), AuthError> {
        self.policy.authorize(verified, request)
    }

    /// How many decisions were evaluated because none was remembered.
    pub fn cold_decisions(&self) -> u64 {
        self.cold_decisions.load(Ordering::Relaxed)
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn mint_delegated(
        &self,
        issuer: &str,
        delegation: &str,
        agent: &str,
        max_rank: i64,
        expires_at: i64,
    ) -> Result<String, AuthError> {
        tokens::mint_delegated(&self.keys, issuer, delegation, agent, max_rank, expires_at)
    }

    pub fn mint_channel_bot(&self, owner: &str, channel: &str) -> Result<String, AuthError> {
        tokens::mint_channel_bot(&self.keys, owner, channel)
    }

    pub fn mint_runtime(
        &self,
        agent: &str,
        runtime: &str,
        expires_at: i64,
    ) -> Result<String, AuthError> {
        tokens::mint_runtime(&self.keys, agent, runtime, expires_at)
    }

    pub fn mint_assertion(&self, facts: &tokens::AssertionFacts) -> Result<String, AuthError> {
        tokens::mint_assertion(&self.keys, facts)
    }

    pub fn mint_session(
        &self,
        user: &str,
        session: &str,
        expires_at: i64,
    ) -> Result<String, AuthError> {
        tokens::mint_session(&self.keys, user, session, expires_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use biscuit_auth::builder::string;
    use biscuit_auth::macros::block;
    use biscuit_auth::UnverifiedBiscuit;

    const FAR: i64 = i64::MAX / 4;

    fn authz(decisions: usize) -> Authz {
        // biscuit-auth's default 1 ms is too short for unoptimized tests on
        // a loaded machine; facts and iterations still bound every run.
        let limits = biscuit_auth::AuthorizerLimits {
            max_time: std::time::Duration::from_secs(5),
            ..Default::default()
        };
        let policy = Policy::embedded(limits).unwrap();
        // No token cache: every verification makes a new `Verified`, so what
        // is remembered can only come from the decision memo.
        Authz::new(RootKeys::ephemeral(), policy, 0, decisions)
    }

    fn read_of(agent: &str, owner: &str, caller: &str) -> RequestFacts {
        RequestFacts::new("agent:read")
            .fact("granting_rank", [biscuit_auth::builder::int(0)])
            .fact("no_grant_at_stake", [biscuit_auth::builder::boolean(true)])
            .fact("resource_agent", [string(agent)])
            .fact("agent", [string(agent)])
            .fact("active_agent", [string(agent)])
            .fact("owner", [string(agent), string(owner)])
            .fact("active", [string(caller)])
    }

    /// `token` with a block a holder appended.
    fn narrowed(token: &str, block: biscuit_auth::builder::BlockBuilder) -> String {
        UnverifiedBiscuit::from_base64(token)
            .unwrap()
            .append(block)
            .unwrap()
            .to_base64()
            .unwrap()
    }

    #[test]
    fn a_person_using_a_thousand_agents_gets_warm() {
        let authz = authz(50_000);
        let token = authz.mint_session("u", "s", FAR).unwrap();
        for _pass in 0..3 {
            let verified = authz.verify(&token, 0).unwrap();
            for i in 0..1_000 {
                let request = read_of(&format!("a{i}"), "u", "u");
                authz.authorize(&verified, &request).unwrap();
            }
        }
        assert_eq!(authz.cold_decisions(), 1_000);
    }

    #[test]
    fn tokens_never_share_decisions() {
        let authz = authz(50_000);
        let owners = authz.mint_session("u", "s1", FAR).unwrap();
        let someone_elses = authz.mint_session("v", "s2", FAR).unwrap();
        let request = read_of("a", "u", "u");
        let owner = authz.verify(&owners, 0).unwrap();
        authz.authorize(&owner, &request).unwrap();
        // The same request facts by another token: decided for that token.
        let other = authz.verify(&someone_elses, 0).unwrap();
        assert!(matches!(
            authz.authorize(&other, &request),
            Err(AuthError::Denied(_))
        ));
        assert!(matches!(
            authz.authorize(&other, &request),
            Err(AuthError::Denied(_))
        ));
        authz.authorize(&owner, &request).unwrap();
        assert_eq!(authz.cold_decisions(), 2);
        // A holder's block makes another token: its own decisions.
        let narrowed = narrowed(&owners, block!(r#"check if operation("agent:update");"#));
        let narrowed = authz.verify(&narrowed, 0).unwrap();
        assert!(matches!(
            authz.authorize(&narrowed, &request),
            Err(AuthError::Denied(_))
        ));
        assert_eq!(authz.cold_decisions(), 3);
    }

    #[test]
    fn decisions_of_a_token_reading_the_clock_are_never_remembered() {
        let authz = authz(50_000);
        let token = authz.mint_session("u", "s", FAR).unwrap();
        let narrowed = narrowed(
            &token,
            block!(r#"check if time($t), $t > 2000-01-01T00:00:00Z;"#),
        );
        let verified = authz.verify(&narrowed, 0).unwrap();
        let request = read_of("a", "u", "u");
        for _ in 0..3 {
            authz.authorize(&verified, &request).unwrap();
        }
        assert_eq!(authz.cold_decisions(), 3);
    }

    #[test]
    fn no_capacity_remembers_nothing() {
        let authz = authz(0);
        let token = authz.mint_session("u", "s", FAR).unwrap();
        let verified = authz.verify(&token, 0).unwrap();
        let request = read_of("a", "u", "u");
        authz.authorize(&verified, &request).unwrap();
        authz.authorize(&verified, &request).unwrap();
        assert_eq!(authz.cold_decisions(), 2);
    }
}
