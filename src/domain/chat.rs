//! Chat conversations. A conversation belongs to the user who started it and
//! lives under that user's id, with its messages and that user's read
//! position; nobody else's key ever leads to it. Messages record their real
//! author: a user id, an agent name (`author_type: agent`), or a channel.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{commit, decode, encode, keyspace, random_id, DomainError, DomainResult};
use crate::store::{Expect, Store, Transaction};

pub const MAX_MESSAGE_LEN: usize = 32 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Conversation {
    pub id: String,
    pub name: String,
    /// `dm`, `topic`, or `channel` (the conversation of a bridge channel).
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub description: String,
    /// The owner's id and the names of the agents taking part.
    pub members: Vec<String>,
    pub created_by: String,
    pub created_at: f64,
    #[serde(default)]
    pub last_message_at: Option<f64>,
    #[serde(default)]
    pub settings: Value,
}

impl Conversation {
    pub fn agents(&self) -> impl Iterator<Item = &str> {
        self.members
            .iter()
            .filter(move |m| **m != self.created_by)
            .map(String::as_str)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    pub id: String,
    pub channel_id: String,
    pub author_id: String,
    /// `user`, `agent` or `channel`.
    pub author_type: String,
    pub content: String,
    #[serde(default = "text")]
    pub content_type: String,
    pub created_at: f64,
    #[serde(default)]
    pub edited_at: Option<f64>,
    #[serde(default)]
    pub deleted_at: Option<f64>,
    #[serde(default)]
    pub metadata: Value,
}

fn text() -> String {
    "text".into()
}

pub fn now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Time-ordered ids, so a prefix scan lists messages oldest first.
fn message_id() -> String {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let mut salt = [0u8; 3];
    rand::thread_rng().fill_bytes(&mut salt);
    format!("{micros:014x}{}", hex::encode(salt))
}

fn check_content(content: &str) -> DomainResult<()> {
    if content.trim().is_empty() {
        return Err(DomainError::Invalid("content is required".into()));
    }
    if content.len() > MAX_MESSAGE_LEN {
        return Err(DomainError::Invalid(format!(
            "content must be at most {MAX_MESSAGE_LEN} bytes"
        )));
    }
    Ok(())
}

pub struct Chat {
    store: Arc<dyn Store>,
}

impl Chat {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// The owner of a conversation, from its id alone.
    pub fn owner_of(&self, conversation: &str) -> DomainResult<Option<String>> {
        Ok(self
            .store
            .get(keyspace::chat_owner(conversation).as_bytes())?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    pub fn get(&self, owner: &str, id: &str) -> DomainResult<Option<Conversation>> {
        match self.store.get(keyspace::chat(owner, id).as_bytes())? {
            Some(bytes) => Ok(Some(self.with_last(owner, decode(&bytes)?)?)),
            None => Ok(None),
        }
    }

    fn with_last(&self, owner: &str, mut conv: Conversation) -> DomainResult<Conversation> {
        if let Some(at) = self
            .store
            .get(keyspace::chat_last(owner, &conv.id).as_bytes())?
        {
            conv.last_message_at = std::str::from_utf8(&at).ok().and_then(|s| s.parse().ok());
        }
        Ok(conv)
    }

    pub fn list(&self, owner: &str) -> DomainResult<Vec<Conversation>> {
        self.store
            .scan(keyspace::chats_prefix(owner).as_bytes(), None, usize::MAX)?
            .into_iter()
            .map(|(_, v)| self.with_last(owner, decode(&v)?))
            .collect()
    }

    pub fn stage_conversation(
        &self,
        tx: &mut Transaction,
        conversation: &Conversation,
    ) -> DomainResult<()> {
        tx.expect(keyspace::chat_owner(&conversation.id), Expect::Absent)
            .put(
                keyspace::chat(&conversation.created_by, &conversation.id),
                encode(conversation)?,
            )
            .put(
                keyspace::chat_owner(&conversation.id),
                conversation.created_by.as_bytes().to_vec(),
            );
        for agent in conversation.agents() {
            tx.put(
                keyspace::agent_conversation(agent, &conversation.created_by, &conversation.id),
                Vec::new(),
            );
        }
        Ok(())
    }

    pub async fn start(
        &self,
        owner: &str,
        name: &str,
        kind: &str,
        agents: Vec<String>,
        description: &str,
    ) -> DomainResult<Conversation> {
        if !matches!(kind, "dm" | "topic") {
            return Err(DomainError::Invalid("type must be dm or topic".into()));
        }
        if name.chars().count() > 200 {
            return Err(DomainError::Invalid(
                "name must be at most 200 characters".into(),
            ));
        }
        let mut members = vec![owner.to_owned()];
        members.extend(agents);
        let conversation = Conversation {
            id: random_id(9),
            name: name.to_owned(),
            kind: kind.to_owned(),
            description: description.to_owned(),
            members,
            created_by: owner.to_owned(),
            created_at: now_f64(),
            last_message_at: None,
            settings: Value::Object(Default::default()),
        };
        let mut tx = Transaction::new();
        self.stage_conversation(&mut tx, &conversation)?;
        commit(&self.store, tx).await?;
        Ok(conversation)
    }

    pub fn messages(
        &self,
        owner: &str,
        conversation: &str,
        limit: usize,
    ) -> DomainResult<Vec<Message>> {
        let mut all: Vec<Message> = self
            .store
            .scan(
                keyspace::messages_prefix(owner, conversation).as_bytes(),
                None,
                usize::MAX,
            )?
            .into_iter()
            .map(|(_, v)| decode(&v))
            .collect::<DomainResult<_>>()?;
        let skip = all.len().saturating_sub(limit);
        Ok(all.split_off(skip))
    }

    /// Post into a conversation owned by `owner`.
    pub async fn post(
        &self,
        owner: &str,
        conversation: &str,
        author_id: &str,
        author_type: &str,
        content: &str,
    ) -> DomainResult<Message> {
        check_content(content)?;
        let message = Message {
            id: message_id(),
            channel_id: conversation.to_owned(),
            author_id: author_id.to_owned(),
            author_type: author_type.to_owned(),
            content: content.to_owned(),
            content_type: text(),
            created_at: now_f64(),
            edited_at: None,
            deleted_at: None,
            metadata: Value::Object(Default::default()),
        };
        // Posts never rewrite the conversation record, so any number of
        // posters (user, agent, bot) proceed without conflicting.
        let mut tx = Transaction::new();
        tx.expect(keyspace::chat(owner, conversation), Expect::Present)
            .put(
                keyspace::chat_last(owner, conversation),
                message.created_at.to_string(),
            );
        self.stage_message(&mut tx, owner, &message)?;
        match commit(&self.store, tx).await {
            Err(DomainError::Store(crate::store::StoreError::Conflict)) => {
                Err(DomainError::NotFound("conversation"))
            }
            other => other,
        }?;
        Ok(message)
    }

    pub fn stage_message(
        &self,
        tx: &mut Transaction,
        owner: &str,
        message: &Message,
    ) -> DomainResult<()> {
        tx.put(
            keyspace::message(owner, &message.channel_id, &message.id),
            encode(message)?,
        )
        .put(
            keyspace::message_index(&message.id),
            format!("{owner}/{}", message.channel_id),
        );
        Ok(())
    }

    /// A message by id: (conversation owner, message, its stored bytes for
    /// guarding a change).
    pub fn find_message(&self, id: &str) -> DomainResult<Option<(String, Message, Vec<u8>)>> {
        let Some(place) = self.store.get(keyspace::message_index(id).as_bytes())? else {
            return Ok(None);
        };
        let place = String::from_utf8_lossy(&place).into_owned();
        let Some((owner, conversation)) = place.split_once('/') else {
            return Ok(None);
        };
        match self
            .store
            .get(keyspace::message(owner, conversation, id).as_bytes())?
        {
            Some(bytes) => Ok(Some((owner.to_owned(), decode(&bytes)?, bytes))),
            None => Ok(None),
        }
    }

    /// Edit (`Some(content)`) or delete (`None`) a message; only its author may,
    /// and the caller checks that.
    pub async fn amend(
        &self,
        owner: &str,
        message: &Message,
        read_as: Vec<u8>,
        content: Option<&str>,
    ) -> DomainResult<Message> {
        if let Some(c) = content {
            check_content(c)?;
        }
        let key = keyspace::message(owner, &message.channel_id, &message.id);
        let mut changed = message.clone();
        match content {
            Some(c) => {
                changed.content = c.to_owned();
                changed.edited_at = Some(now_f64());
            }
            None => {
                changed.content = String::new();
                changed.deleted_at = Some(now_f64());
            }
        }
        let mut tx = Transaction::new();
        // Guard with the bytes as read: re-encoding is not guaranteed to
        // reproduce them.
        tx.expect(key.clone(), Expect::Equals(read_as))
            .put(key, encode(&changed)?);
        commit(&self.store, tx).await?;
        Ok(changed)
    }

    pub async fn mark_read(
        &self,
        reader: &str,
        conversation: &str,
        message: &str,
    ) -> DomainResult<()> {
        let mut tx = Transaction::new();
        tx.put(
            keyspace::read_position(reader, conversation),
            message.as_bytes().to_vec(),
        );
        commit(&self.store, tx).await
    }

    /// Messages after the reader's read position, not written by the reader,
    /// per conversation the reader owns.
    pub fn unread(&self, reader: &str) -> DomainResult<BTreeMap<String, usize>> {
        let mut out = BTreeMap::new();
        for conv in self.list(reader)? {
            let read = self
                .store
                .get(keyspace::read_position(reader, &conv.id).as_bytes())?;
            let prefix = keyspace::messages_prefix(reader, &conv.id);
            let after = read.map(|id| [prefix.as_bytes(), &id].concat());
            let mut count = 0;
            for (_, v) in self
                .store
                .scan(prefix.as_bytes(), after.as_deref(), 10_000)?
            {
                // A record that does not decode fails the request (503), never
                // silently drops out of the count.
                let m = decode::<Message>(&v)?;
                if m.author_id != reader && m.deleted_at.is_none() {
                    count += 1;
                }
            }
            out.insert(conv.id, count);
        }
        Ok(out)
    }

    /// Add to `tx` taking `agent` out of every conversation it is part of,
    /// so an agent created later under the same name inherits none of them.
    pub fn stage_agent_removal(&self, tx: &mut Transaction, agent: &str) -> DomainResult<()> {
        let prefix = keyspace::agent_conversations_prefix(agent);
        for (key, _) in self.store.scan(prefix.as_bytes(), None, usize::MAX)? {
            tx.delete(key.clone());
            let place = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            let Some((owner, id)) = place.split_once('/') else {
                continue;
            };
            let conv_key = keyspace::chat(owner, id);
            if let Some(bytes) = self.store.get(conv_key.as_bytes())? {
                let mut conv: Conversation = decode(&bytes)?;
                conv.members.retain(|m| m != agent);
                tx.expect(conv_key.clone(), Expect::Equals(bytes))
                    .put(conv_key, encode(&conv)?);
            }
        }
        Ok(())
    }

    /// Add to `tx` the removal of all `owner`'s conversations and messages.
    pub fn stage_owner_removal(&self, tx: &mut Transaction, owner: &str) -> DomainResult<()> {
        for conv in self.list(owner)? {
            tx.delete(keyspace::chat(owner, &conv.id))
                .delete(keyspace::chat_owner(&conv.id))
                .delete(keyspace::chat_last(owner, &conv.id));
            for agent in conv.agents() {
                tx.delete(keyspace::agent_conversation(agent, owner, &conv.id));
            }
        }
        for (key, value) in self.store.scan(
            keyspace::user_messages_prefix(owner).as_bytes(),
            None,
            usize::MAX,
        )? {
            if let Ok(m) = decode::<Message>(&value) {
                tx.delete(keyspace::message_index(&m.id));
            }
            tx.delete(key);
        }
        for (key, _) in self.store.scan(
            keyspace::read_positions_prefix(owner).as_bytes(),
            None,
            usize::MAX,
        )? {
            tx.delete(key);
        }
        Ok(())
    }
}
