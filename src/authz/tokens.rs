//! Minting and reading tokens.
//!
//! Every token is a Biscuit signed by the active root key. Its authority block
//! states who it speaks for as Datalog facts (what the policy reasons with) and
//! repeats the same claims as a small JSON `context` string, which is signed with
//! the block, so the server can find the session or delegation record to check
//! for revocation without running Datalog first.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use biscuit_auth::macros::biscuit;
use biscuit_auth::Biscuit;
use serde::{Deserialize, Serialize};

use super::engine::{PreparedToken, Unsupported};
use super::keys::RootKeys;
use super::AuthError;

/// Largest token accepted, in characters of base64. Real tokens are well under
/// 4 KiB; anything bigger is refused before any parsing or signature work.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// What a token's authority block claims, as the server reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Claims {
    /// A login session: the user and the session record that keeps it alive.
    Session {
        user: String,
        session: String,
        expires_at: i64,
    },
    /// A delegated token: the issuer and the delegation record that keeps it
    /// alive. Its agent, level and expiry restrictions live in block 1.
    Delegated {
        user: String,
        delegation: String,
        expires_at: i64,
    },
    /// A channel bot, acting for the channel's owner in that channel only.
    ChannelBot {
        user: String,
        channel: String,
        expires_at: i64,
    },
    /// An agent's own runtime; `runtime` is the record rotation replaces.
    Runtime {
        agent: String,
        runtime: String,
        expires_at: i64,
    },
    /// A forward-auth assertion for an upstream behind the proxy: a
    /// statement about one request, never a credential for tessera itself.
    Assertion {
        user: String,
        operation: String,
        expires_at: i64,
    },
}

impl Claims {
    pub fn expires_at(&self) -> i64 {
        match self {
            Claims::Session { expires_at, .. }
            | Claims::Delegated { expires_at, .. }
            | Claims::ChannelBot { expires_at, .. }
            | Claims::Runtime { expires_at, .. }
            | Claims::Assertion { expires_at, .. } => *expires_at,
        }
    }

    /// The person the token speaks for; `None` for an agent's runtime.
    pub fn user(&self) -> Option<&str> {
        match self {
            Claims::Session { user, .. }
            | Claims::Delegated { user, .. }
            | Claims::ChannelBot { user, .. }
            | Claims::Assertion { user, .. } => Some(user),
            Claims::Runtime { .. } => None,
        }
    }
}

/// Marks the restriction block the server appends to the tokens it mints
/// beyond sessions (delegated, channel bot, agent runtime).
const DELEGATION_BLOCK: &str = "tessera:delegation";

pub(crate) fn unix_to_system(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64)
}

/// Sign a session token for `user` backed by the session record `session`.
pub fn mint_session(
    keys: &RootKeys,
    user: &str,
    session: &str,
    expires_at: i64,
) -> Result<String, AuthError> {
    let claims = Claims::Session {
        user: user.to_owned(),
        session: session.to_owned(),
        expires_at,
    };
    let context = serde_json::to_string(&claims).map_err(|e| AuthError::Internal(e.to_string()))?;
    let expiry = unix_to_system(expires_at);
    let builder = biscuit!(
        r#"
        user({user});
        session({session});
        expires_at({expires_at});
        check if time($time), $time <= {expiry};
        "#
    )
    .context(context)
    .root_key_id(keys.active_id());
    let token = builder
        .build(keys.signer())
        .map_err(|e| AuthError::Internal(format!("signing a session token: {e}")))?;
    token
        .to_base64()
        .map_err(|e| AuthError::Internal(format!("serializing a session token: {e}")))
}

/// A token's identity for remembered decisions: the signatures of its
/// blocks. Each block's signature covers its content and the key the next
/// block is signed with, so equal identities mean equal blocks, and a
/// decision depends on nothing else of the token.
#[derive(Clone, Debug)]
pub struct TokenId {
    signatures: Arc<[u8]>,
    hash: u64,
}

impl TokenId {
    fn of(biscuit: &Biscuit) -> Self {
        use std::hash::{Hash, Hasher};
        let signatures: Arc<[u8]> = biscuit.revocation_identifiers().concat().into();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        signatures.hash(&mut hasher);
        Self {
            signatures,
            hash: hasher.finish(),
        }
    }
}

impl PartialEq for TokenId {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
            && (Arc::ptr_eq(&self.signatures, &other.signatures)
                || self.signatures == other.signatures)
    }
}

impl Eq for TokenId {}

impl std::hash::Hash for TokenId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// A token whose signatures have been checked, with its claims.
///
/// Datalog is deterministic: the same token and the same request facts give the
/// same decision, unless the clock is an input. The server checks each claimed
/// expiry itself before the policy runs, so for a token whose only use of
/// `time` is that expiry, decisions are remembered (by [`super::Authz`]) per
/// token and distinct set of request facts. The facts include everything read
/// from the store for the request (admin flag, grants, ...), so a changed
/// store is a different key, never a stale answer.
pub struct Verified {
    pub biscuit: Biscuit,
    pub claims: Claims,
    /// Names the token's blocks in remembered decisions.
    pub(crate) id: TokenId,
    /// The first block a holder appended (blocks before it are the
    /// server's, whose only use of the clock is the claimed expiry).
    pub(crate) holder_from: usize,
    /// Whether decisions for this token may be remembered: false when a
    /// block added by a holder reads the clock, then every request is
    /// evaluated afresh. Found once, on first use.
    pub(crate) remembers: OnceLock<bool>,
    /// Its blocks in the policy's symbols, made on first use.
    pub(crate) prepared: OnceLock<Result<PreparedToken, Unsupported>>,
}

impl Verified {
    pub fn new(biscuit: Biscuit, claims: Claims) -> Self {
        // Block 1 of a delegated token is the server's own restriction, whose
        // expiry equals the claimed one that is checked before the policy.
        let holder_from = match claims {
            Claims::Delegated { .. } | Claims::ChannelBot { .. } | Claims::Runtime { .. }
                if biscuit.context().get(1).cloned().flatten().as_deref()
                    == Some(DELEGATION_BLOCK) =>
            {
                2
            }
            _ => 1,
        };
        Self {
            id: TokenId::of(&biscuit),
            biscuit,
            claims,
            holder_from,
            remembers: OnceLock::new(),
            prepared: OnceLock::new(),
        }
    }

    /// Whether a block a holder appended reads the clock, found in its
    /// printed source: for tokens the policy's evaluator does not prepare
    /// (`Policy::remembers` asks the prepared token instead).
    pub(crate) fn holder_blocks_read_time_printed(&self) -> bool {
        (self.holder_from..self.biscuit.block_count()).any(|i| {
            self.biscuit
                .print_block_source(i)
                .map_or(true, |source| super::policy::mentions_time(&source))
        })
    }
}

/// Sign a delegated token: the authority block names the issuer and the
/// delegation record; an appended block (a real Biscuit attenuation, made
/// with the same public operation any holder can use) restricts it to one
/// agent, a maximum rank and an expiry.
pub fn mint_delegated(
    keys: &RootKeys,
    issuer: &str,
    delegation: &str,
    agent: &str,
    max_rank: i64,
    expires_at: i64,
) -> Result<String, AuthError> {
    let claims = Claims::Delegated {
        user: issuer.to_owned(),
        delegation: delegation.to_owned(),
        expires_at,
    };
    let context = serde_json::to_string(&claims).map_err(|e| AuthError::Internal(e.to_string()))?;
    let expiry = unix_to_system(expires_at);
    let token = biscuit!(
        r#"
        user({issuer});
        delegation({delegation});
        "#
    )
    .context(context)
    .root_key_id(keys.active_id())
    .build(keys.signer())
    .map_err(|e| AuthError::Internal(format!("signing a delegated token: {e}")))?;
    let restriction = biscuit_auth::macros::block!(
        r#"
        check if resource_agent({agent});
        check if required_rank($rank), $rank <= {max_rank};
        check if time($time), $time <= {expiry};
        "#
    )
    .context(DELEGATION_BLOCK.to_owned());
    token
        .append(restriction)
        .and_then(|t| t.to_base64())
        .map_err(|e| AuthError::Internal(format!("attenuating a delegated token: {e}")))
}

fn sign_with_block(
    keys: &RootKeys,
    claims: &Claims,
    authority: biscuit_auth::BiscuitBuilder,
    restriction: biscuit_auth::BlockBuilder,
) -> Result<String, AuthError> {
    let context = serde_json::to_string(claims).map_err(|e| AuthError::Internal(e.to_string()))?;
    authority
        .context(context)
        .root_key_id(keys.active_id())
        .build(keys.signer())
        .and_then(|t| t.append(restriction.context(DELEGATION_BLOCK.to_owned())))
        .and_then(|t| t.to_base64())
        .map_err(|e| AuthError::Internal(format!("signing a token: {e}")))
}

/// A channel bot's token: the owner and the channel in the authority block;
/// the appended block confines it to that channel's conversation and to
/// reading and posting there. It lives as long as the channel is enabled.
pub fn mint_channel_bot(keys: &RootKeys, owner: &str, channel: &str) -> Result<String, AuthError> {
    let claims = Claims::ChannelBot {
        user: owner.to_owned(),
        channel: channel.to_owned(),
        expires_at: i64::MAX,
    };
    let authority = biscuit!(
        r#"
        user({owner});
        channel_bot({channel});
        "#
    );
    let restriction = biscuit_auth::macros::block!(
        r#"
        check if resource_channel({channel});
        check if operation("chat:read") or operation("chat:post");
        "#
    );
    sign_with_block(keys, &claims, authority, restriction)
}

/// An agent runtime's token: the agent and its runtime record; an appended
/// block carries the expiry.
pub fn mint_runtime(
    keys: &RootKeys,
    agent: &str,
    runtime: &str,
    expires_at: i64,
) -> Result<String, AuthError> {
    let claims = Claims::Runtime {
        agent: agent.to_owned(),
        runtime: runtime.to_owned(),
        expires_at,
    };
    let expiry = unix_to_system(expires_at);
    let authority = biscuit!(
        r#"
        agent_runtime({agent});
        runtime({runtime});
        "#
    );
    let restriction = biscuit_auth::macros::block!(r#"check if time($time), $time <= {expiry};"#);
    sign_with_block(keys, &claims, authority, restriction)
}

/// What a forward-auth assertion states about one allowed request.
pub struct AssertionFacts<'a> {
    pub user: &'a str,
    pub username: &'a str,
    pub operation: &'a str,
    pub method: &'a str,
    /// The original path, without its query.
    pub path: &'a str,
    /// The agent and the caller's effective level, on agent routes.
    pub agent: Option<(&'a str, &'a str)>,
    pub expires_at: i64,
}

/// Sign a forward-auth assertion. Its authority block is a contract with
/// upstreams that verify it offline (see the README): they allow on
/// `assertion("forward-auth")` with the operation and agent they serve, so
/// one replayed for another agent, operation or after its expiry is refused.
pub fn mint_assertion(keys: &RootKeys, facts: &AssertionFacts) -> Result<String, AuthError> {
    let claims = Claims::Assertion {
        user: facts.user.to_owned(),
        operation: facts.operation.to_owned(),
        expires_at: facts.expires_at,
    };
    let context = serde_json::to_string(&claims).map_err(|e| AuthError::Internal(e.to_string()))?;
    let expiry = unix_to_system(facts.expires_at);
    let (user, username, operation, method, path) = (
        facts.user,
        facts.username,
        facts.operation,
        facts.method,
        facts.path,
    );
    let mut builder = biscuit!(
        r#"
        assertion("forward-auth");
        user({user});
        username({username});
        operation({operation});
        method({method});
        path({path});
        check if time($t), $t <= {expiry};
        "#
    );
    if let Some((agent, level)) = facts.agent {
        use biscuit_auth::builder::{fact, string};
        builder = builder
            .fact(fact("agent", &[string(agent)]))
            .and_then(|b| b.fact(fact("level", &[string(level)])))
            .map_err(|e| AuthError::Internal(format!("building an assertion: {e}")))?;
    }
    builder
        .context(context)
        .root_key_id(keys.active_id())
        .build(keys.signer())
        .and_then(|t| t.to_base64())
        .map_err(|e| AuthError::Internal(format!("signing an assertion: {e}")))
}

/// Check the signature chain of a serialized token and read its claims.
pub fn verify(keys: &RootKeys, token: &str) -> Result<Verified, AuthError> {
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::Invalid("token too large"));
    }
    let biscuit = Biscuit::from_base64(token, |id: Option<u32>| {
        keys.public(id)
            .map_err(|_| biscuit_auth::error::Format::UnknownPublicKey)
    })
    .map_err(|e| {
        tracing::debug!(error = %e, "token failed verification");
        AuthError::Invalid("token signature or format is invalid")
    })?;
    let claims = biscuit
        .context()
        .first()
        .cloned()
        .flatten()
        .and_then(|ctx| serde_json::from_str::<Claims>(&ctx).ok())
        .ok_or(AuthError::Invalid("token was not issued by this server"))?;
    Ok(Verified::new(biscuit, claims))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    #[test]
    fn session_token_round_trips() {
        let keys = RootKeys::ephemeral();
        let token = mint_session(&keys, "u1", "s1", now() + 60).unwrap();
        let verified = verify(&keys, &token).unwrap();
        assert_eq!(verified.biscuit.root_key_id(), Some(keys.active_id()));
        assert_eq!(
            verified.claims,
            Claims::Session {
                user: "u1".into(),
                session: "s1".into(),
                expires_at: verified.claims.expires_at()
            }
        );
        assert!(!verified.holder_blocks_read_time_printed());
    }

    #[test]
    fn a_holder_block_reading_the_clock_is_found_in_its_print() {
        let keys = RootKeys::ephemeral();
        let token = mint_session(&keys, "u1", "s1", now() + 60).unwrap();
        let biscuit = verify(&keys, &token).unwrap().biscuit;
        let narrowed = biscuit
            .append(biscuit_auth::macros::block!(
                r#"check if time($t), $t <= 2030-01-01T00:00:00Z;"#
            ))
            .unwrap()
            .to_base64()
            .unwrap();
        assert!(verify(&keys, &narrowed)
            .unwrap()
            .holder_blocks_read_time_printed());
        let narrowed = biscuit
            .append(biscuit_auth::macros::block!(
                r#"check if operation("auth:me");"#
            ))
            .unwrap()
            .to_base64()
            .unwrap();
        assert!(!verify(&keys, &narrowed)
            .unwrap()
            .holder_blocks_read_time_printed());
    }

    #[test]
    fn another_servers_token_is_refused() {
        let ours = RootKeys::ephemeral();
        let theirs = RootKeys::ephemeral();
        let token = mint_session(&theirs, "u1", "s1", now() + 60).unwrap();
        assert!(matches!(verify(&ours, &token), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn oversized_and_empty_tokens_are_refused_without_parsing() {
        let keys = RootKeys::ephemeral();
        assert!(matches!(verify(&keys, ""), Err(AuthError::Missing)));
        let huge = "A".repeat(MAX_TOKEN_LEN + 1);
        assert!(matches!(verify(&keys, &huge), Err(AuthError::Invalid(_))));
    }
}
