//! Login sessions. A session token is only as good as its record here: deleting
//! the record (logout, lock, password change or reset, user deletion, admin
//! revocation) ends the token on its very next request.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{cached_record, commit, decode, encode, keyspace, now, random_id, DomainResult};
use crate::store::{Store, Transaction};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub long_lived: bool,
    /// How far signing in got. Records from before second factors have
    /// none, and were complete.
    #[serde(default)]
    pub stage: Stage,
    /// How the person proved who they are.
    #[serde(default)]
    pub method: Method,
    /// When this session last verified a second factor (sign-in or
    /// step-up); the policy's step-up rules read its age.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor_at: Option<i64>,
}

/// How far a session got through signing in. Only `Complete` is a session
/// in full; the others may do what the policy grants their phase and no
/// more (finish the step, or enrol, or sign out).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    #[default]
    Complete,
    /// The password was right; a second factor must follow.
    SecondFactor,
    /// Second factors are required and the person has none: enrol first.
    Enrol,
}

/// How a session was established, as the policy sees it (`established`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    #[default]
    Password,
    PasswordTotp,
    RecoveryCode,
    Passkey,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Password => "password",
            Method::PasswordTotp => "password+totp",
            Method::RecoveryCode => "recovery_code",
            Method::Passkey => "passkey",
        }
    }
}

impl Session {
    pub fn new(user_id: &str, ttl: Duration, long_lived: bool) -> Self {
        let created_at = now();
        Self {
            id: random_id(16),
            user_id: user_id.to_owned(),
            created_at,
            expires_at: created_at.saturating_add(ttl.as_secs() as i64),
            long_lived,
            stage: Stage::Complete,
            method: Method::Password,
            factor_at: None,
        }
    }

    pub fn at_stage(mut self, stage: Stage) -> Self {
        self.stage = stage;
        self
    }

    /// Add the record and its per-user index entry to `tx`.
    pub fn write_into(&self, tx: &mut Transaction) -> DomainResult<()> {
        tx.put(keyspace::session(&self.id), encode(self)?);
        tx.put(keyspace::user_session(&self.user_id, &self.id), Vec::new());
        Ok(())
    }
}

/// The session, if it still exists, belongs to `user_id` and has not expired.
pub fn live(
    store: &dyn Store,
    id: &str,
    user_id: &str,
    at: i64,
) -> DomainResult<Option<Arc<Session>>> {
    let session = cached_record::<Session>(store, &keyspace::session(id))?;
    Ok(session.filter(|s| s.user_id == user_id && s.expires_at > at))
}

/// Add the removal of every session of `user_id` (but `keep`) to `tx`;
/// returns how many.
pub fn revoke_all_into(
    store: &dyn Store,
    tx: &mut Transaction,
    user_id: &str,
    keep: Option<&str>,
) -> DomainResult<usize> {
    let prefix = keyspace::user_sessions_prefix(user_id);
    let mut revoked = 0;
    for (key, _) in store.scan(prefix.as_bytes(), None, usize::MAX)? {
        let sid = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
        if Some(sid.as_str()) == keep {
            continue;
        }
        tx.delete(key);
        tx.delete(keyspace::session(&sid));
        revoked += 1;
    }
    Ok(revoked)
}

/// End one session (logout, lock).
pub async fn revoke(store: &Arc<dyn Store>, session: &str, user_id: &str) -> DomainResult<()> {
    let mut tx = Transaction::durable();
    tx.delete(keyspace::session(session));
    tx.delete(keyspace::user_session(user_id, session));
    commit(store, tx).await
}

/// End every session of a user; returns how many ended.
pub async fn revoke_all(store: &Arc<dyn Store>, user_id: &str) -> DomainResult<usize> {
    let mut tx = Transaction::durable();
    let n = revoke_all_into(store.as_ref(), &mut tx, user_id, None)?;
    commit(store, tx).await?;
    Ok(n)
}

/// The live sessions of a user (not expired at `at`), newest first.
pub fn list_live(store: &dyn Store, user_id: &str, at: i64) -> DomainResult<Vec<Session>> {
    let prefix = keyspace::user_sessions_prefix(user_id);
    let mut live = Vec::new();
    for (key, _) in store.scan(prefix.as_bytes(), None, usize::MAX)? {
        let sid = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
        if let Some(bytes) = store.get(keyspace::session(&sid).as_bytes())? {
            let session: Session = decode(&bytes)?;
            if session.user_id == user_id && session.expires_at > at {
                live.push(session);
            }
        }
    }
    live.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    Ok(live)
}

/// End every session of a user but `keep` ("sign out everywhere else");
/// returns how many ended.
pub async fn revoke_others(
    store: &Arc<dyn Store>,
    user_id: &str,
    keep: &str,
) -> DomainResult<usize> {
    let mut tx = Transaction::durable();
    let n = revoke_all_into(store.as_ref(), &mut tx, user_id, Some(keep))?;
    commit(store, tx).await?;
    Ok(n)
}

/// A legacy TinyAgentOS session imported by `tessera migrate legacy`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LegacySession {
    pub user_id: String,
    pub expires_at: i64,
    #[serde(default)]
    pub long_lived: bool,
}

pub fn legacy_digest(value: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// Trade a legacy cookie value for a fresh session, exactly once: the legacy
/// record is deleted in the same transaction that creates the session, so a
/// second presentation finds nothing.
pub async fn exchange_legacy(
    store: &Arc<dyn Store>,
    value: &str,
    ttl: Duration,
    long_ttl: Duration,
) -> DomainResult<Option<Session>> {
    let key = keyspace::legacy_session(&legacy_digest(value));
    let Some(bytes) = store.get(key.as_bytes())? else {
        return Ok(None);
    };
    let legacy: LegacySession = decode(&bytes)?;
    if legacy.expires_at <= now()
        || store
            .get(keyspace::user(&legacy.user_id).as_bytes())?
            .is_none()
    {
        return Ok(None);
    }
    let session = Session::new(
        &legacy.user_id,
        if legacy.long_lived { long_ttl } else { ttl },
        legacy.long_lived,
    );
    let mut tx = Transaction::durable();
    tx.expect(key.clone(), crate::store::Expect::Equals(bytes))
        .delete(key);
    session.write_into(&mut tx)?;
    match commit(store, tx).await {
        Ok(()) => Ok(Some(session)),
        Err(super::DomainError::Store(crate::store::StoreError::Conflict)) => Ok(None),
        Err(e) => Err(e),
    }
}
