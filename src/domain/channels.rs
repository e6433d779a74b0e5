//! Bridge channels (Telegram, Discord, webhook...): each owned by a user,
//! bound to one agent, with its own conversation in the owner's chats. The
//! channel's bot token lives only as long as the channel exists and is
//! enabled.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::chat::{now_f64, Chat, Conversation};
use super::{commit, decode, encode, keyspace, random_id, retry, DomainError, DomainResult};
use crate::store::{Expect, Store, Transaction};

pub const CHANNEL_TYPES: &[&str] = &[
    "web-chat", "telegram", "discord", "slack", "email", "webhook", "signal", "matrix",
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Channel {
    pub id: String,
    pub owner: String,
    pub agent_name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub config: Value,
    pub enabled: bool,
    pub created_at: f64,
    /// The conversation the bot reads and posts in.
    pub conversation: String,
}

/// Secret names the config refers to: string values of keys ending in
/// `_secret` (as the legacy channel forms name them).
pub fn secret_refs(config: &Value) -> Vec<String> {
    config
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| k.ends_with("_secret"))
                .filter_map(|(_, v)| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub struct Channels {
    store: Arc<dyn Store>,
}

impl Channels {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    pub fn owner_of(&self, id: &str) -> DomainResult<Option<String>> {
        Ok(self
            .store
            .get(keyspace::channel_owner(id).as_bytes())?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    pub fn get(&self, owner: &str, id: &str) -> DomainResult<Option<Arc<Channel>>> {
        super::cached_record(self.store.as_ref(), &keyspace::channel(owner, id))
    }

    pub fn list(&self, owner: &str) -> DomainResult<Vec<Channel>> {
        self.store
            .scan(
                keyspace::channels_prefix(owner).as_bytes(),
                None,
                usize::MAX,
            )?
            .into_iter()
            .map(|(_, v)| decode(&v))
            .collect()
    }

    /// Create the channel and its conversation. The caller has checked the
    /// owner may manage the agent and owns the secrets the config names.
    pub async fn create(
        &self,
        chat: &Chat,
        owner: &str,
        agent: &str,
        kind: &str,
        config: Value,
    ) -> DomainResult<Channel> {
        if !CHANNEL_TYPES.contains(&kind) {
            return Err(DomainError::Invalid(format!(
                "type must be one of {}",
                CHANNEL_TYPES.join(", ")
            )));
        }
        if !(config.is_object() || config.is_null()) {
            return Err(DomainError::Invalid("config must be a JSON object".into()));
        }
        let id = random_id(9);
        let channel = Channel {
            id: id.clone(),
            owner: owner.to_owned(),
            agent_name: agent.to_owned(),
            kind: kind.to_owned(),
            config: if config.is_null() {
                Value::Object(Default::default())
            } else {
                config
            },
            enabled: true,
            created_at: now_f64(),
            conversation: format!("chan-{id}"),
        };
        let conversation = Conversation {
            id: channel.conversation.clone(),
            name: format!("{kind} channel"),
            kind: "channel".into(),
            description: String::new(),
            members: vec![owner.to_owned(), agent.to_owned()],
            created_by: owner.to_owned(),
            created_at: channel.created_at,
            last_message_at: None,
            settings: Value::Object(Default::default()),
        };
        let mut tx = Transaction::durable();
        tx.expect(keyspace::agent(agent), Expect::Present)
            .put(keyspace::channel(owner, &id), encode(&channel)?)
            .put(keyspace::channel_owner(&id), owner.as_bytes().to_vec());
        chat.stage_conversation(&mut tx, &conversation)?;
        commit(&self.store, tx).await?;
        Ok(channel)
    }

    pub async fn toggle(&self, owner: &str, id: &str) -> DomainResult<Channel> {
        retry(&self.store, || {
            let key = keyspace::channel(owner, id);
            let bytes = self
                .store
                .get(key.as_bytes())?
                .ok_or(DomainError::NotFound("channel"))?;
            let mut channel: Channel = decode(&bytes)?;
            channel.enabled = !channel.enabled;
            let mut tx = Transaction::durable();
            tx.expect(key.clone(), Expect::Equals(bytes))
                .put(key, encode(&channel)?);
            Ok((tx, channel))
        })
        .await
    }

    pub async fn delete(&self, owner: &str, id: &str) -> DomainResult<()> {
        let mut tx = Transaction::durable();
        tx.expect(keyspace::channel(owner, id), Expect::Present)
            .delete(keyspace::channel(owner, id))
            .delete(keyspace::channel_owner(id));
        match commit(&self.store, tx).await {
            Err(DomainError::Store(crate::store::StoreError::Conflict)) => {
                Err(DomainError::NotFound("channel"))
            }
            other => other,
        }
    }

    pub fn stage_owner_removal(&self, tx: &mut Transaction, owner: &str) -> DomainResult<()> {
        for channel in self.list(owner)? {
            tx.delete(keyspace::channel(owner, &channel.id))
                .delete(keyspace::channel_owner(&channel.id));
        }
        Ok(())
    }
}

/// The current runtime token record of an agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Runtime {
    pub id: String,
    pub agent: String,
    /// The owner who minted it: the token is theirs, and dies when the agent
    /// changes hands (records from before owners minted them have none and
    /// no longer work).
    #[serde(default)]
    pub owner: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// Issue (or rotate: the previous token dies) the runtime record of `agent`.
pub async fn rotate_runtime(
    store: &Arc<dyn Store>,
    agent: &str,
    owner: &str,
    ttl_secs: i64,
) -> DomainResult<Runtime> {
    let created_at = super::now();
    let runtime = Runtime {
        id: random_id(12),
        agent: agent.to_owned(),
        owner: owner.to_owned(),
        created_at,
        expires_at: created_at.saturating_add(ttl_secs),
    };
    let Some(current) = store.get(keyspace::agent(agent).as_bytes())? else {
        return Err(DomainError::NotFound("agent"));
    };
    let record: super::agents::Agent = decode(&current)?;
    if record.owner != owner || record.archived {
        return Err(DomainError::Forbidden(
            "only the owner of an active agent holds its runtime token".into(),
        ));
    }
    let mut tx = Transaction::durable();
    // Guarded by the agent as checked: a transfer or archive in between wins.
    tx.expect(keyspace::agent(agent), Expect::Equals(current))
        .put(keyspace::runtime(agent), encode(&runtime)?);
    commit(store, tx).await?;
    Ok(runtime)
}

/// End the agent's runtime token; `NotFound` if it has none.
pub async fn revoke_runtime(
    store: &Arc<dyn Store>,
    agent: &str,
    event: super::audit::AuditEvent,
) -> DomainResult<()> {
    let mut tx = Transaction::durable();
    tx.expect(keyspace::runtime(agent), Expect::Present)
        .delete(keyspace::runtime(agent));
    event.record_into(&mut tx)?;
    match commit(store, tx).await {
        Err(DomainError::Store(crate::store::StoreError::Conflict)) => {
            Err(DomainError::NotFound("runtime token"))
        }
        other => other,
    }
}

pub fn current_runtime(store: &dyn Store, agent: &str) -> DomainResult<Option<Arc<Runtime>>> {
    super::cached_record(store, &keyspace::runtime(agent))
}
