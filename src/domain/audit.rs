//! The audit log: append-only records of who did what, on whose behalf.
//!
//! Event ids start with the inverted timestamp, so a forward prefix scan
//! returns the newest first. Each event is also indexed under every user it
//! concerns, so a user's view of the log is one prefix scan.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{commit, decode, encode, keyspace, now, DomainResult};
use crate::store::{Store, Transaction};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEvent {
    pub id: String,
    pub at: i64,
    /// The user who acted (`None` for anonymous attempts such as a failed login).
    pub actor: Option<String>,
    /// Set when an admin acted for an owner: the owner.
    pub on_behalf_of: Option<String>,
    pub action: String,
    pub target: String,
    /// Users this event concerns besides actor and owner (a grantee, say).
    #[serde(default)]
    pub concerns: Vec<String>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub detail: Value,
}

impl AuditEvent {
    pub fn new(actor: Option<&str>, action: &str, target: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut salt = [0u8; 4];
        rand::thread_rng().fill_bytes(&mut salt);
        Self {
            id: format!("{:016x}{}", u64::MAX - nanos, hex::encode(salt)),
            at: now(),
            actor: actor.map(str::to_owned),
            on_behalf_of: None,
            action: action.to_owned(),
            target: target.to_owned(),
            concerns: Vec::new(),
            detail: Value::Null,
        }
    }

    pub fn on_behalf_of(mut self, owner: Option<&str>) -> Self {
        self.on_behalf_of = owner.map(str::to_owned);
        self
    }

    pub fn concerning(mut self, user: &str) -> Self {
        self.concerns.push(user.to_owned());
        self
    }

    pub fn detail(mut self, detail: Value) -> Self {
        self.detail = detail;
        self
    }

    fn subjects(&self) -> Vec<&str> {
        let mut users: Vec<&str> = self
            .actor
            .iter()
            .chain(self.on_behalf_of.iter())
            .chain(self.concerns.iter())
            .map(String::as_str)
            .collect();
        users.sort_unstable();
        users.dedup();
        users
    }

    /// Add the event and its per-user index entries to `tx`, so it is written
    /// atomically with the change it records.
    pub fn record_into(&self, tx: &mut Transaction) -> DomainResult<()> {
        tx.put(keyspace::audit(&self.id), encode(self)?);
        for user in self.subjects() {
            tx.put(keyspace::user_audit(user, &self.id), Vec::new());
        }
        Ok(())
    }

    /// Record an event on its own (for acts with no other write, such as a
    /// failed login).
    pub async fn append(&self, store: &Arc<dyn Store>) -> DomainResult<()> {
        let mut tx = Transaction::new();
        self.record_into(&mut tx)?;
        commit(store, tx).await
    }
}

/// Newest first, up to `limit`, after the event id `after` when paging.
pub fn list_all(
    store: &dyn Store,
    after: Option<&str>,
    limit: usize,
) -> DomainResult<Vec<AuditEvent>> {
    let after = after.map(keyspace::audit);
    store
        .scan(
            keyspace::AUDIT_PREFIX.as_bytes(),
            after.as_deref().map(str::as_bytes),
            limit,
        )?
        .into_iter()
        .map(|(_, v)| decode(&v))
        .collect()
}

/// The events that concern `user`, newest first.
pub fn list_for(
    store: &dyn Store,
    user: &str,
    after: Option<&str>,
    limit: usize,
) -> DomainResult<Vec<AuditEvent>> {
    let prefix = keyspace::user_audit_prefix(user);
    let after = after.map(|id| keyspace::user_audit(user, id));
    let mut events = Vec::new();
    for (key, _) in store.scan(
        prefix.as_bytes(),
        after.as_deref().map(str::as_bytes),
        limit,
    )? {
        let id = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
        if let Some(bytes) = store.get(keyspace::audit(&id).as_bytes())? {
            events.push(decode(&bytes)?);
        }
    }
    Ok(events)
}
