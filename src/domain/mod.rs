//! Domain logic: accounts, sessions and (in later modules) agents and per-user
//! data. It speaks in users and sessions, reads and writes through the
//! [`Store`](crate::store::Store) trait, and knows nothing about HTTP.

pub mod agents;
pub mod audit;
pub mod channels;
pub mod chat;
pub mod delegations;
pub mod factors;
pub mod groups;
pub mod keyspace;
pub mod levels;
pub mod memory;
pub mod passkeys;
pub mod password;
pub mod secrets;
pub mod sessions;
pub mod users;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;

use crate::store::{Deps, Store, StoreError, Transaction};

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("current password is incorrect")]
    WrongPassword,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

pub type DomainResult<T> = Result<T, DomainError>;

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A random identifier of `bytes` bytes, base64url without padding: 8 bytes
/// gives the 11-character ids the legacy host used for users.
pub fn random_id(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// Commit off the async workers, flushed to disk before returning: whatever
/// a request acknowledges survives the process being killed a moment later.
pub async fn commit(store: &Arc<dyn Store>, mut tx: Transaction) -> DomainResult<()> {
    tx.durable = true;
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.commit(&tx))
        .await
        .map_err(|e| DomainError::Internal(format!("commit task: {e}")))??;
    Ok(())
}

/// Read-modify-write with optimistic concurrency: `attempt` reads what it
/// needs and returns a transaction guarded by expectations on those reads; on a
/// conflict it runs again on fresh data, a bounded number of times.
pub async fn retry<T, F>(store: &Arc<dyn Store>, mut attempt: F) -> DomainResult<T>
where
    F: FnMut() -> DomainResult<(Transaction, T)>,
{
    const ATTEMPTS: usize = 8;
    for _ in 0..ATTEMPTS {
        let (tx, value) = attempt()?;
        match commit(store, tx).await {
            Ok(()) => return Ok(value),
            Err(DomainError::Store(StoreError::Conflict)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(DomainError::Conflict(
        "too many concurrent changes to the same records; try again".into(),
    ))
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> DomainResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| DomainError::Internal(format!("encoding a record: {e}")))
}

/// A value derived from the store, through the store's read cache when it has
/// one (the server's does; the engines offline tools open do not). `compute`
/// says what it read, so a commit writing any of it drops the value.
pub(crate) fn cached<T: Send + Sync + 'static>(
    store: &dyn Store,
    name: &str,
    compute: impl FnOnce(&dyn Store) -> DomainResult<(T, Deps)>,
) -> DomainResult<Arc<T>> {
    match store.cache() {
        Some(cache) => cache.get_or_compute(name, compute),
        None => compute(store).map(|(value, _)| Arc::new(value)),
    }
}

/// One record, decoded once and shared until its key is written again.
pub(crate) fn cached_record<T>(store: &dyn Store, key: &str) -> DomainResult<Option<Arc<T>>>
where
    T: serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let record = cached(store, key, |engine| {
        let value = match engine.get(key.as_bytes())? {
            Some(bytes) => Some(Arc::new(decode::<T>(&bytes)?)),
            None => None,
        };
        Ok((value, Deps::new().key(key)))
    })?;
    Ok(record.as_ref().clone())
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> DomainResult<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        DomainError::Store(StoreError::Damaged(format!(
            "a stored record does not decode: {e}"
        )))
    })
}

/// Check that one stored entry decodes as what its key says it is (for
/// `tessera store verify`). Index entries hold no record and always pass.
pub fn check_record(key: &[u8], value: &[u8]) -> Result<(), String> {
    fn as_<T: serde::de::DeserializeOwned>(value: &[u8]) -> Result<(), String> {
        decode::<T>(value).map(|_| ()).map_err(|e| e.to_string())
    }
    let key = std::str::from_utf8(key).map_err(|_| "the key is not text".to_owned())?;
    let namespace = key.split('/').next().unwrap_or("");
    match namespace {
        "user" => as_::<users::User>(value),
        "session" => as_::<sessions::Session>(value),
        "lsess" => as_::<sessions::LegacySession>(value),
        "agent" => as_::<agents::Agent>(value),
        "grant" => as_::<agents::Grant>(value),
        "group" => as_::<groups::Group>(value),
        "gmember" => as_::<groups::Membership>(value),
        "deleg" => as_::<delegations::Delegation>(value),
        "audit" => as_::<audit::AuditEvent>(value),
        "secret" => as_::<secrets::Secret>(value),
        "mem" => as_::<memory::Chunk>(value),
        "chat" => as_::<chat::Conversation>(value),
        "msg" => as_::<chat::Message>(value),
        "chan" => as_::<channels::Channel>(value),
        "runtime" => as_::<channels::Runtime>(value),
        "memset" => as_::<serde_json::Value>(value),
        "factors" => as_::<factors::FactorSet>(value),
        _ => Ok(()),
    }
}
