// Schema steps: each moves the store from version N to N+1 in one
// transaction that also stamps the new version, so a step is applied whole
// or not at all, and an interrupted upgrade resumes at the right step.
//
// A step reads what it needs and returns the writes. Steps must be
// idempotent: rerunning one on its own output changes nothing.
//
// This file is compiled into the binary (src/migrate/schema.rs includes it).

use crate::domain::keyspace;
use crate::store::{Store, StoreError, StoreResult, Transaction};

/// Version 1 to 2: a conversation's last-message time moves out of the
/// conversation record into its own key, so concurrent posters no longer
/// rewrite (and conflict on) the record.
fn last_message_time_gets_its_own_key(store: &dyn Store) -> StoreResult<Transaction> {
    let mut tx = Transaction::durable();
    for (key, value) in store.scan(b"chat/", None, usize::MAX)? {
        let Ok(conv) = serde_json::from_slice::<serde_json::Value>(&value) else { continue };
        let Some(at) = conv.get("last_message_at").and_then(|v| v.as_f64()) else { continue };
        let path = String::from_utf8_lossy(&key["chat/".len()..]).into_owned();
        if let Some((user, id)) = path.split_once('/') {
            tx.put(keyspace::chat_last(user, id), at.to_string());
        }
    }
    Ok(tx)
}

/// Version 2 to 3: reverse indexes from an agent to the memory grants and
/// conversations that name it, so deleting an agent can take them along.
fn reverse_indexes_for_agent_names(store: &dyn Store) -> StoreResult<Transaction> {
    let mut tx = Transaction::durable();
    for (key, _) in store.scan(b"memgrant/", None, usize::MAX)? {
        let path = String::from_utf8_lossy(&key["memgrant/".len()..]).into_owned();
        if let Some((user, agent)) = path.split_once('/') {
            tx.put(keyspace::agent_memory_grant(agent, user), Vec::new());
        }
    }
    for (key, value) in store.scan(b"chat/", None, usize::MAX)? {
        let Ok(conv) = serde_json::from_slice::<serde_json::Value>(&value) else { continue };
        let path = String::from_utf8_lossy(&key["chat/".len()..]).into_owned();
        let Some((user, id)) = path.split_once('/') else { continue };
        let members = conv.get("members").and_then(|m| m.as_array()).cloned().unwrap_or_default();
        for agent in members.iter().filter_map(|m| m.as_str()).filter(|m| *m != user) {
            tx.put(keyspace::agent_conversation(agent, user, id), Vec::new());
        }
    }
    Ok(tx)
}

/// Version 3 to 4: a pending invite's code is kept as an argon2 digest, not
/// as the code, so whoever reads the store cannot take over a pending
/// account. The codes already handed out keep working.
fn invite_codes_become_digests(store: &dyn Store) -> StoreResult<Transaction> {
    let mut tx = Transaction::durable();
    for (key, value) in store.scan(keyspace::USER_PREFIX.as_bytes(), None, usize::MAX)? {
        let Ok(mut user) = serde_json::from_slice::<serde_json::Value>(&value) else { continue };
        let Some(invite) = user.get_mut("invite").and_then(|i| i.as_object_mut()) else { continue };
        let Some(code) = invite.remove("code") else { continue };
        let code = code.as_str().unwrap_or_default().trim().to_owned();
        let digest = crate::domain::password::hash_now(&code)
            .map_err(|e| StoreError::Engine(format!("hashing an invite code: {e}")))?;
        invite.insert("digest".into(), digest.into());
        let bytes = serde_json::to_vec(&user)
            .map_err(|e| StoreError::Engine(format!("encoding a user: {e}")))?;
        tx.put(key, bytes);
    }
    Ok(tx)
}

/// Version 4 to 5: a grant may name a group (`group:<name>`) or everyone
/// and carry an expiry, and groups have keys of their own (none yet in an
/// existing store). Nothing is rewritten: the step is the version, which
/// keeps an older tessera, which would read an expiring share as one that
/// never runs out, from opening a store that may hold one.
fn groups_and_expiring_shares(_store: &dyn Store) -> StoreResult<Transaction> {
    Ok(Transaction::durable())
}

/// A step reads the store and returns its writes.
pub type Step = fn(&dyn Store) -> StoreResult<Transaction>;

/// Every step, in order: `STEPS[i]` moves version `i + 1` to `i + 2`.
pub const STEPS: &[(&str, Step)] = &[
    ("conversation last-message time gets its own key", last_message_time_gets_its_own_key),
    ("reverse indexes for agent names", reverse_indexes_for_agent_names),
    ("invite codes become digests", invite_codes_become_digests),
    ("groups and expiring shares", groups_and_expiring_shares),
];
