//! Secrets: owned by one user, names unique per user, values sealed with
//! XChaCha20-Poly1305 under the server's data key. The plaintext exists only
//! in memory while a request that may see it is served: never in the store,
//! never in a log. The associated data binds each ciphertext to its owner and
//! name, so a sealed value moved to another record does not open.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::audit::AuditEvent;
use super::{decode, encode, keyspace, now, retry, DomainError, DomainResult};
use crate::authz::keys::DataKeys;
use crate::store::{Expect, Store, StoreError, Transaction};

pub const MAX_SECRET_NAME_LEN: usize = 200;
pub const MAX_SECRET_VALUE_LEN: usize = 64 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Secret {
    /// Numeric, per owner, as legacy clients expect.
    pub id: u64,
    pub owner: String,
    pub name: String,
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub description: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// Agents this secret is bound to (their runtimes may read it).
    #[serde(default)]
    pub agents: Vec<String>,
    pub sealed: Sealed,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sealed {
    pub key_id: u32,
    pub nonce: String,
    pub ciphertext: String,
}

fn aad(owner: &str, name: &str) -> Vec<u8> {
    format!("tessera-secret\0{owner}\0{name}").into_bytes()
}

pub fn seal(
    keys: &DataKeys,
    key_id: u32,
    owner: &str,
    name: &str,
    value: &str,
) -> DomainResult<Sealed> {
    seal_bound(keys, key_id, &aad(owner, name), value)
}

/// Seal `value` bound to `aad`: other records sealed under the data key (a
/// second factor's secret) use their own associated data, so nothing sealed
/// for one kind of record opens as another.
pub(crate) fn seal_bound(
    keys: &DataKeys,
    key_id: u32,
    aad: &[u8],
    value: &str,
) -> DomainResult<Sealed> {
    let key = keys
        .get(key_id)
        .map_err(|e| DomainError::Internal(e.to_string()))?;
    let cipher = XChaCha20Poly1305::new(key.into());
    let mut nonce = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut nonce);
    let ciphertext = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: value.as_bytes(),
                aad,
            },
        )
        .map_err(|_| DomainError::Internal("sealing a secret failed".into()))?;
    Ok(Sealed {
        key_id,
        nonce: STANDARD.encode(nonce),
        ciphertext: STANDARD.encode(ciphertext),
    })
}

pub fn open(keys: &DataKeys, owner: &str, name: &str, sealed: &Sealed) -> DomainResult<String> {
    open_bound(keys, &aad(owner, name), sealed)
        .map_err(|_| DomainError::Internal(format!("secret {name} of {owner} does not open")))
}

/// Open what [`seal_bound`] sealed with the same `aad`.
pub(crate) fn open_bound(keys: &DataKeys, aad: &[u8], sealed: &Sealed) -> DomainResult<String> {
    let fail = || DomainError::Internal("a sealed value does not open".into());
    let key = keys
        .get(sealed.key_id)
        .map_err(|e| DomainError::Internal(e.to_string()))?;
    let nonce = STANDARD.decode(&sealed.nonce).map_err(|_| fail())?;
    let ciphertext = STANDARD.decode(&sealed.ciphertext).map_err(|_| fail())?;
    let nonce: [u8; 24] = nonce.try_into().map_err(|_| fail())?;
    let plain = XChaCha20Poly1305::new(key.into())
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: &ciphertext,
                aad,
            },
        )
        .map_err(|_| fail())?;
    String::from_utf8(plain).map_err(|_| fail())
}

pub fn check_name(name: &str) -> DomainResult<()> {
    if name.is_empty()
        || name.chars().count() > MAX_SECRET_NAME_LEN
        || name.chars().any(|c| c.is_control() || c == '/')
    {
        return Err(DomainError::Invalid(format!(
            "secret name must be 1 to {MAX_SECRET_NAME_LEN} characters, without '/' or control characters"
        )));
    }
    Ok(())
}

fn check_value(value: &str) -> DomainResult<()> {
    if value.len() > MAX_SECRET_VALUE_LEN {
        return Err(DomainError::Invalid(format!(
            "secret value must be at most {MAX_SECRET_VALUE_LEN} bytes"
        )));
    }
    Ok(())
}

/// Fields of a new secret or of a change to one.
#[derive(Debug, Default, Clone)]
pub struct SecretInput {
    pub value: Option<String>,
    pub category: Option<String>,
    pub description: Option<String>,
    pub agents: Option<Vec<String>>,
}

pub struct Secrets {
    store: Arc<dyn Store>,
}

impl Secrets {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    fn load(&self, owner: &str, name: &str) -> DomainResult<Option<(Secret, Vec<u8>)>> {
        match self.store.get(keyspace::secret(owner, name).as_bytes())? {
            Some(bytes) => Ok(Some((decode(&bytes)?, bytes))),
            None => Ok(None),
        }
    }

    pub fn get(&self, owner: &str, name: &str) -> DomainResult<Option<Secret>> {
        Ok(self.load(owner, name)?.map(|(s, _)| s))
    }

    pub fn list(&self, owner: &str) -> DomainResult<Vec<Secret>> {
        self.store
            .scan(keyspace::secrets_prefix(owner).as_bytes(), None, usize::MAX)?
            .into_iter()
            .map(|(_, v)| decode(&v))
            .collect()
    }

    /// (owner, name) of every secret bound to `agent`.
    pub fn bound_to(&self, agent: &str) -> DomainResult<Vec<(String, String)>> {
        let prefix = keyspace::secret_bindings_prefix(agent);
        Ok(self
            .store
            .scan(prefix.as_bytes(), None, usize::MAX)?
            .into_iter()
            .filter_map(|(k, _)| {
                let rest = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                rest.split_once('/')
                    .map(|(u, n)| (u.to_owned(), n.to_owned()))
            })
            .collect())
    }

    fn stage_bindings(tx: &mut Transaction, secret: &Secret, before: &[String]) {
        for agent in before.iter().filter(|a| !secret.agents.contains(a)) {
            tx.delete(keyspace::secret_binding(agent, &secret.owner, &secret.name));
        }
        for agent in &secret.agents {
            tx.put(
                keyspace::secret_binding(agent, &secret.owner, &secret.name),
                Vec::new(),
            );
        }
    }

    pub async fn create(
        &self,
        keys: &DataKeys,
        owner: &str,
        name: &str,
        input: SecretInput,
        event: AuditEvent,
    ) -> DomainResult<Secret> {
        check_name(name)?;
        let value = input.value.unwrap_or_default();
        check_value(&value)?;
        let (key_id, _) = keys.active();
        let sealed = seal(keys, key_id, owner, name, &value)?;
        let mut agents = input.agents.unwrap_or_default();
        agents.sort();
        agents.dedup();
        let result = retry(&self.store, || {
            let seq_key = keyspace::secret_seq(owner);
            let current = self.store.get(seq_key.as_bytes())?;
            let next = current
                .as_deref()
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
                + 1;
            let at = now();
            let secret = Secret {
                id: next,
                owner: owner.to_owned(),
                name: name.to_owned(),
                category: input.category.clone().unwrap_or_else(|| "general".into()),
                description: input.description.clone().unwrap_or_default(),
                created_at: at,
                updated_at: at,
                agents: agents.clone(),
                sealed: sealed.clone(),
            };
            let mut tx = Transaction::durable();
            if self
                .store
                .get(keyspace::secret(owner, name).as_bytes())?
                .is_some()
            {
                return Err(DomainError::Conflict(format!(
                    "a secret named {name} already exists"
                )));
            }
            tx.expect(keyspace::secret(owner, name), Expect::Absent)
                .expect(
                    seq_key.clone(),
                    current.map_or(Expect::Absent, Expect::Equals),
                )
                .put(seq_key, next.to_string())
                .put(keyspace::secret(owner, name), encode(&secret)?);
            Self::stage_bindings(&mut tx, &secret, &[]);
            event.record_into(&mut tx)?;
            Ok((tx, secret))
        })
        .await;
        result
    }

    pub async fn update(
        &self,
        keys: &DataKeys,
        owner: &str,
        name: &str,
        input: SecretInput,
        event: AuditEvent,
    ) -> DomainResult<Secret> {
        if let Some(value) = &input.value {
            check_value(value)?;
        }
        let sealed = match &input.value {
            Some(value) => Some(seal(keys, keys.active().0, owner, name, value)?),
            None => None,
        };
        retry(&self.store, || {
            let (mut secret, read_as) = self
                .load(owner, name)?
                .ok_or(DomainError::NotFound("secret"))?;
            let before = secret.agents.clone();
            if let Some(sealed) = &sealed {
                secret.sealed = sealed.clone();
            }
            if let Some(category) = &input.category {
                secret.category = category.clone();
            }
            if let Some(description) = &input.description {
                secret.description = description.clone();
            }
            if let Some(agents) = &input.agents {
                let mut agents = agents.clone();
                agents.sort();
                agents.dedup();
                secret.agents = agents;
            }
            secret.updated_at = now();
            let mut tx = Transaction::durable();
            tx.expect(keyspace::secret(owner, name), Expect::Equals(read_as))
                .put(keyspace::secret(owner, name), encode(&secret)?);
            Self::stage_bindings(&mut tx, &secret, &before);
            event.record_into(&mut tx)?;
            Ok((tx, secret))
        })
        .await
    }

    pub async fn delete(&self, owner: &str, name: &str, event: AuditEvent) -> DomainResult<()> {
        retry(&self.store, || {
            let (secret, read_as) = self
                .load(owner, name)?
                .ok_or(DomainError::NotFound("secret"))?;
            let mut tx = Transaction::durable();
            tx.expect(keyspace::secret(owner, name), Expect::Equals(read_as))
                .delete(keyspace::secret(owner, name));
            for agent in &secret.agents {
                tx.delete(keyspace::secret_binding(agent, owner, name));
            }
            event.record_into(&mut tx)?;
            Ok((tx, ()))
        })
        .await
    }

    /// Add to `tx` the removal of every secret of `owner`.
    pub fn stage_owner_removal(&self, tx: &mut Transaction, owner: &str) -> DomainResult<()> {
        for secret in self.list(owner)? {
            tx.delete(keyspace::secret(owner, &secret.name));
            for agent in &secret.agents {
                tx.delete(keyspace::secret_binding(agent, owner, &secret.name));
            }
        }
        tx.delete(keyspace::secret_seq(owner));
        Ok(())
    }

    /// Re-seal every secret not yet under `key_id`, one guarded write each:
    /// an interrupted run leaves every secret readable (under its old key or
    /// the new one) and a rerun finishes the rest. Returns how many moved.
    /// `limit` stops after that many (tests use it to interrupt a run).
    pub fn reseal_all(&self, keys: &DataKeys, key_id: u32, limit: usize) -> DomainResult<usize> {
        let mut moved = 0;
        for (key, bytes) in self
            .store
            .scan(keyspace::SECRET_PREFIX.as_bytes(), None, usize::MAX)?
        {
            if moved >= limit {
                break;
            }
            let mut secret: Secret = decode(&bytes)?;
            if secret.sealed.key_id == key_id {
                continue;
            }
            let value = open(keys, &secret.owner, &secret.name, &secret.sealed)?;
            secret.sealed = seal(keys, key_id, &secret.owner, &secret.name, &value)?;
            let mut tx = Transaction::durable();
            tx.expect(key.clone(), Expect::Equals(bytes))
                .put(key, encode(&secret)?);
            match self.store.commit(&tx) {
                Ok(()) => moved += 1,
                // Changed meanwhile: whoever changed it sealed it afresh.
                Err(StoreError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_for_their_owner_and_name() {
        let keys = DataKeys::ephemeral();
        let sealed = seal(&keys, 1, "u1", "API_KEY", "sk-123").unwrap();
        assert!(!sealed.ciphertext.contains("sk-123"));
        assert_eq!(open(&keys, "u1", "API_KEY", &sealed).unwrap(), "sk-123");
        assert!(open(&keys, "u2", "API_KEY", &sealed).is_err());
        assert!(open(&keys, "u1", "OTHER", &sealed).is_err());
        let mut tampered = sealed.clone();
        tampered.ciphertext = STANDARD.encode(b"garbage-garbage-garbage");
        assert!(open(&keys, "u1", "API_KEY", &tampered).is_err());
    }
}
