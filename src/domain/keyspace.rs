//! Every store key in one place. Keys are `<namespace>/<parts...>`; anything
//! private to a user starts with that user's id right after the namespace, so
//! a user's data is one prefix scan and never shares a key with anyone else's.

pub const META_SCHEMA_VERSION: &str = "meta/schema_version";

/// Present while `tessera store copy` (or a restore into PostgreSQL) fills
/// a store: such a store is refused until the copy is finished.
pub const META_COPY_INCOMPLETE: &str = "meta/copy_incomplete";

pub fn user(id: &str) -> String {
    format!("user/{id}")
}
pub const USER_PREFIX: &str = "user/";

/// Username (lower-cased) to user id: the uniqueness index.
pub fn username(name: &str) -> String {
    format!("uname/{name}")
}

/// Present for every admin: counting admins never scans all users.
pub fn admin(id: &str) -> String {
    format!("admin/{id}")
}
pub const ADMIN_PREFIX: &str = "admin/";

/// Present for every user who completed sign-up.
pub fn active(id: &str) -> String {
    format!("active/{id}")
}
pub const ACTIVE_PREFIX: &str = "active/";

pub fn session(id: &str) -> String {
    format!("session/{id}")
}

/// A user's sessions, so all of them can be revoked at once.
pub fn user_session(user: &str, session: &str) -> String {
    format!("usess/{user}/{session}")
}
pub fn user_sessions_prefix(user: &str) -> String {
    format!("usess/{user}/")
}

pub fn agent(name: &str) -> String {
    format!("agent/{name}")
}
pub const AGENT_PREFIX: &str = "agent/";

/// Agents by owner: listing what a user owns never scans the host.
pub fn owned(owner: &str, agent: &str) -> String {
    format!("owned/{owner}/{agent}")
}
pub fn owned_prefix(owner: &str) -> String {
    format!("owned/{owner}/")
}

/// The grants on one agent, keyed by grantee.
pub fn grant(agent: &str, grantee: &str) -> String {
    format!("grant/{agent}/{grantee}")
}
pub fn grants_prefix(agent: &str) -> String {
    format!("grant/{agent}/")
}

/// Agents by grantee: what has been shared with a user.
pub fn granted(grantee: &str, agent: &str) -> String {
    format!("granted/{grantee}/{agent}")
}
pub fn granted_prefix(grantee: &str) -> String {
    format!("granted/{grantee}/")
}

pub fn delegation(id: &str) -> String {
    format!("deleg/{id}")
}
pub fn user_delegation(issuer: &str, id: &str) -> String {
    format!("udeleg/{issuer}/{id}")
}
pub fn user_delegations_prefix(issuer: &str) -> String {
    format!("udeleg/{issuer}/")
}
pub fn agent_delegation(agent: &str, id: &str) -> String {
    format!("adeleg/{agent}/{id}")
}
pub fn agent_delegations_prefix(agent: &str) -> String {
    format!("adeleg/{agent}/")
}
pub const DELEGATION_PREFIX: &str = "deleg/";

/// Audit events in time order; `uaudit/` indexes them by every user they
/// concern.
pub fn audit(id: &str) -> String {
    format!("audit/{id}")
}
pub const AUDIT_PREFIX: &str = "audit/";
pub fn user_audit(user: &str, id: &str) -> String {
    format!("uaudit/{user}/{id}")
}
pub fn user_audit_prefix(user: &str) -> String {
    format!("uaudit/{user}/")
}

/// A user's secret, by name.
pub fn secret(user: &str, name: &str) -> String {
    format!("secret/{user}/{name}")
}
pub fn secrets_prefix(user: &str) -> String {
    format!("secret/{user}/")
}
pub const SECRET_PREFIX: &str = "secret/";
/// The per-user counter behind the numeric ids legacy clients expect.
pub fn secret_seq(user: &str) -> String {
    format!("secseq/{user}")
}
/// Secrets bound to an agent, by owner: what the agent's runtime may read.
pub fn secret_binding(agent: &str, user: &str, name: &str) -> String {
    format!("secbind/{agent}/{user}/{name}")
}
pub fn secret_bindings_prefix(agent: &str) -> String {
    format!("secbind/{agent}/")
}

/// A user's memory chunk, and its search index entries.
pub fn memory_chunk(user: &str, hash: &str) -> String {
    format!("mem/{user}/{hash}")
}
pub fn memory_prefix(user: &str) -> String {
    format!("mem/{user}/")
}
pub fn memory_term(user: &str, term: &str, hash: &str) -> String {
    format!("memidx/{user}/{term}\u{0}{hash}")
}
pub fn memory_term_prefix(user: &str, term: &str) -> String {
    format!("memidx/{user}/{term}\u{0}")
}
pub fn memory_index_prefix(user: &str) -> String {
    format!("memidx/{user}/")
}
pub fn memory_settings(user: &str) -> String {
    format!("memset/{user}")
}
/// The agents a user lets read their memory.
pub fn memory_grant(user: &str, agent: &str) -> String {
    format!("memgrant/{user}/{agent}")
}
pub fn memory_grants_prefix(user: &str) -> String {
    format!("memgrant/{user}/")
}

/// A user's chat conversations, their messages and read positions.
pub fn chat(user: &str, channel: &str) -> String {
    format!("chat/{user}/{channel}")
}
pub fn chats_prefix(user: &str) -> String {
    format!("chat/{user}/")
}
/// Conversation id to its owner: messages are found from an id alone.
pub fn chat_owner(channel: &str) -> String {
    format!("chatown/{channel}")
}
pub fn message(user: &str, channel: &str, id: &str) -> String {
    format!("msg/{user}/{channel}/{id}")
}
pub fn messages_prefix(user: &str, channel: &str) -> String {
    format!("msg/{user}/{channel}/")
}
pub fn user_messages_prefix(user: &str) -> String {
    format!("msg/{user}/")
}
pub fn read_position(user: &str, channel: &str) -> String {
    format!("chatread/{user}/{channel}")
}
pub fn read_positions_prefix(user: &str) -> String {
    format!("chatread/{user}/")
}

/// A user's bridge channels (telegram, webhook...), and id to owner.
pub fn channel(user: &str, id: &str) -> String {
    format!("chan/{user}/{id}")
}
pub fn channels_prefix(user: &str) -> String {
    format!("chan/{user}/")
}
pub fn channel_owner(id: &str) -> String {
    format!("chanown/{id}")
}

/// The agent's current runtime token record (rotating replaces it).
pub fn runtime(agent: &str) -> String {
    format!("runtime/{agent}")
}
/// Message id to "<owner>/<conversation>", for edits and deletes by id.
pub fn message_index(id: &str) -> String {
    format!("msgidx/{id}")
}
/// Agent to the users who let it read their memory.
pub fn agent_memory_grant(agent: &str, user: &str) -> String {
    format!("agentmem/{agent}/{user}")
}
pub fn agent_memory_grants_prefix(agent: &str) -> String {
    format!("agentmem/{agent}/")
}
/// Agent to the conversations it takes part in, as "<owner>/<conversation>".
pub fn agent_conversation(agent: &str, owner: &str, conversation: &str) -> String {
    format!("agentconv/{agent}/{owner}/{conversation}")
}
pub fn agent_conversations_prefix(agent: &str) -> String {
    format!("agentconv/{agent}/")
}
/// When a conversation last had a message; written blind by every post so
/// concurrent posters never conflict.
pub fn chat_last(user: &str, channel: &str) -> String {
    format!("chatlast/{user}/{channel}")
}
/// An imported legacy browser session, by the SHA-256 of its cookie value;
/// exchanged once for a real session, then gone.
pub fn legacy_session(digest_hex: &str) -> String {
    format!("lsess/{digest_hex}")
}

/// A group of people agents can be shared with, by name.
pub fn group(name: &str) -> String {
    format!("group/{name}")
}
pub const GROUP_PREFIX: &str = "group/";
/// A group's members, by user id.
pub fn group_member(group: &str, user: &str) -> String {
    format!("gmember/{group}/{user}")
}
pub fn group_members_prefix(group: &str) -> String {
    format!("gmember/{group}/")
}
/// The groups a user belongs to: what reaches them is one prefix scan.
pub fn user_group(user: &str, group: &str) -> String {
    format!("ugroup/{user}/{group}")
}
pub fn user_groups_prefix(user: &str) -> String {
    format!("ugroup/{user}/")
}
/// A person's second factors (TOTP, recovery codes), one record.
pub fn factors(user: &str) -> String {
    format!("factors/{user}")
}
pub const FACTORS_PREFIX: &str = "factors/";

/// Failed attempts against an account (or invite), counted in the store when
/// several replicas share it (see `http::ratelimit`). Hex, so any name fits.
pub fn attempts(subject: &str) -> String {
    format!("attempts/{}", hex::encode(subject))
}

/// A passkey's credential id (base64url) to the user id it belongs to:
/// a discoverable sign-in names only the credential, and a credential is
/// registered to one account at most.
pub fn passkey_credential(credential_id: &str) -> String {
    format!("pkcred/{credential_id}")
}
