//! Delegation records: one per delegated token. The token itself carries its
//! restrictions; the record is what makes it revocable. Deleting it (or the
//! agent, or the issuing user) ends the token on its next request.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::audit::AuditEvent;
use super::levels::Level;
use super::{commit, decode, encode, keyspace, now, random_id, DomainError, DomainResult};
use crate::store::{Expect, Store, StoreError, Transaction};

pub const MAX_LABEL_LEN: usize = 200;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Delegation {
    pub id: String,
    pub issuer: String,
    pub agent: String,
    pub level: Level,
    pub created_at: i64,
    pub expires_at: i64,
    #[serde(default)]
    pub label: Option<String>,
}

pub struct Delegations {
    store: Arc<dyn Store>,
}

impl Delegations {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    pub async fn create(
        &self,
        issuer: &str,
        agent: &str,
        level: Level,
        expires_in: i64,
        label: Option<String>,
        event: AuditEvent,
    ) -> DomainResult<Delegation> {
        if expires_in <= 0 {
            return Err(DomainError::Invalid(
                "expires_in must be a positive number of seconds".into(),
            ));
        }
        if label
            .as_ref()
            .is_some_and(|l| l.chars().count() > MAX_LABEL_LEN)
        {
            return Err(DomainError::Invalid(format!(
                "label must be at most {MAX_LABEL_LEN} characters"
            )));
        }
        let created_at = now();
        let delegation = Delegation {
            id: random_id(12),
            issuer: issuer.to_owned(),
            agent: agent.to_owned(),
            level,
            created_at,
            expires_at: created_at.saturating_add(expires_in),
            label,
        };
        let mut tx = Transaction::durable();
        tx.expect(keyspace::agent(agent), Expect::Present)
            .put(keyspace::delegation(&delegation.id), encode(&delegation)?)
            .put(
                keyspace::user_delegation(issuer, &delegation.id),
                Vec::new(),
            )
            .put(
                keyspace::agent_delegation(agent, &delegation.id),
                Vec::new(),
            );
        event.record_into(&mut tx)?;
        match commit(&self.store, tx).await {
            Err(DomainError::Store(StoreError::Conflict)) => Err(DomainError::NotFound("agent")),
            other => other,
        }?;
        Ok(delegation)
    }

    pub fn get(&self, id: &str) -> DomainResult<Option<Delegation>> {
        match self.store.get(keyspace::delegation(id).as_bytes())? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The record, if it still exists, was issued by `issuer`, and has not expired.
    pub fn live(&self, id: &str, issuer: &str, at: i64) -> DomainResult<Option<Arc<Delegation>>> {
        let record =
            super::cached_record::<Delegation>(self.store.as_ref(), &keyspace::delegation(id))?;
        Ok(record.filter(|d| d.issuer == issuer && d.expires_at > at))
    }

    pub fn issued_by(&self, issuer: &str) -> DomainResult<Vec<Delegation>> {
        let prefix = keyspace::user_delegations_prefix(issuer);
        let mut out = Vec::new();
        for (key, _) in self.store.scan(prefix.as_bytes(), None, usize::MAX)? {
            let id = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            if let Some(d) = self.get(&id)? {
                out.push(d);
            }
        }
        Ok(out)
    }

    pub fn all(&self) -> DomainResult<Vec<Delegation>> {
        self.store
            .scan(keyspace::DELEGATION_PREFIX.as_bytes(), None, usize::MAX)?
            .into_iter()
            .map(|(_, v)| decode(&v))
            .collect()
    }

    pub async fn revoke(&self, delegation: &Delegation, event: AuditEvent) -> DomainResult<()> {
        let mut tx = Transaction::durable();
        tx.expect(keyspace::delegation(&delegation.id), Expect::Present);
        Self::stage_removal(&mut tx, delegation);
        event.record_into(&mut tx)?;
        match commit(&self.store, tx).await {
            Err(DomainError::Store(StoreError::Conflict)) => Err(DomainError::NotFound("token")),
            other => other,
        }
    }

    fn stage_removal(tx: &mut Transaction, d: &Delegation) {
        tx.delete(keyspace::delegation(&d.id))
            .delete(keyspace::user_delegation(&d.issuer, &d.id))
            .delete(keyspace::agent_delegation(&d.agent, &d.id));
    }

    /// Add to `tx` the removal of every delegation `issuer` made.
    pub fn stage_issuer_removal(&self, tx: &mut Transaction, issuer: &str) -> DomainResult<()> {
        for d in self.issued_by(issuer)? {
            Self::stage_removal(tx, &d);
        }
        Ok(())
    }
}
