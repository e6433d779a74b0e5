//! Minting and reading tokens.
//!
//! Every token is a Biscuit signed by the active root key. Its authority block
//! states who it speaks for as Datalog facts (what the policy reasons with) and
//! repeats the same claims as a small JSON `context` string, which is signed with
//! the block, so the server can find the session or delegation record to check
//! for revocation without running Datalog first.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use biscuit_auth::macros::biscuit;
use biscuit_auth::Biscuit;
use serde::{Deserialize, Serialize};

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
}

impl Claims {
    pub fn expires_at(&self) -> i64 {
        match self {
            Claims::Session { expires_at, .. } => *expires_at,
        }
    }
}

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

/// Check the signature chain of a serialized token and read its claims.
pub fn verify(keys: &RootKeys, token: &str) -> Result<(Biscuit, Claims), AuthError> {
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
    Ok((biscuit, claims))
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
        let (biscuit, claims) = verify(&keys, &token).unwrap();
        assert_eq!(biscuit.root_key_id(), Some(keys.active_id()));
        assert!(
            matches!(claims, Claims::Session { ref user, ref session, .. } if user == "u1" && session == "s1")
        );
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
