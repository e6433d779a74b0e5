//! Agents, their one owner, and the grants that share them.
//!
//! An agent keeps the legacy host's fields as an open JSON map. Ownership and
//! grants are indexed both ways (`owned/`, `granted/`), so "what can this user
//! see" reads only that user's index entries, never every agent on the host.
//! Whether a grant is *effective* is not decided here: the policy evaluates
//! the chain of granters on every request (`datalog/agents.dl`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::audit::AuditEvent;
use super::groups::{Principal, EVERYONE};
use super::levels::Level;
use super::users::User;
use super::{commit, decode, encode, keyspace, now, retry, DomainError, DomainResult};
use crate::store::{Deps, Expect, Store, StoreError, Transaction};

pub const MAX_AGENT_NAME_LEN: usize = 63;
/// Keys the server owns in an agent's JSON; clients may not set them.
pub const RESERVED_FIELDS: &[&str] = &[
    "name",
    "owner",
    "created_at",
    "archived",
    "archived_at",
    "access",
    "shared_with",
    "shared_with_everyone",
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Agent {
    pub name: String,
    /// The owning user's id.
    pub owner: String,
    pub created_at: i64,
    #[serde(default)]
    pub archived: bool,
    #[serde(default)]
    pub archived_at: Option<i64>,
    /// Everything else the legacy host keeps about an agent (display_name,
    /// model, color, framework, can_read_user_memory, ...).
    #[serde(default)]
    pub fields: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Grant {
    pub agent: String,
    pub grantee: String,
    pub level: Level,
    /// Whose rights the grant derives from: the sharer, or the owner when an
    /// admin shared on the owner's behalf.
    pub granted_by: String,
    pub at: i64,
    /// When the grant stops conferring anything (unix seconds); it stays
    /// listed, as expired, until removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

impl Grant {
    /// Whether the grant still confers its level at `now`.
    pub fn live_at(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|end| now < end)
    }

    pub fn principal(&self) -> Principal<'_> {
        Principal::of(&self.grantee)
    }
}

/// A slug, unique on the host: container names derive from it.
pub fn check_agent_name(name: &str) -> DomainResult<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_AGENT_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(DomainError::Invalid(format!(
            "agent name must be 1 to {MAX_AGENT_NAME_LEN} lowercase letters, digits or '-', not starting or ending with '-'"
        )))
    }
}

pub fn check_fields(fields: &Map<String, Value>) -> DomainResult<()> {
    match fields
        .keys()
        .find(|k| RESERVED_FIELDS.contains(&k.as_str()))
    {
        Some(key) => Err(DomainError::Invalid(format!(
            "{key:?} is managed by the server and cannot be set here"
        ))),
        None => Ok(()),
    }
}

pub struct Agents {
    store: Arc<dyn Store>,
}

fn grants_in(store: &dyn Store, name: &str) -> DomainResult<Vec<Grant>> {
    store
        .scan(keyspace::grants_prefix(name).as_bytes(), None, usize::MAX)?
        .into_iter()
        .map(|(_, v)| decode(&v))
        .collect()
}

/// An agent and every grant on it.
pub type AgentWithGrants = (Agent, Vec<Grant>);

/// The agent with every grant on it, read from `store`, and the keys that
/// reading depended on (for caching what is derived from them).
pub fn read_with_grants(
    store: &dyn Store,
    name: &str,
) -> DomainResult<(Option<AgentWithGrants>, Deps)> {
    let deps = Deps::new()
        .key(keyspace::agent(name))
        .prefix(keyspace::grants_prefix(name));
    let Some(bytes) = store.get(keyspace::agent(name).as_bytes())? else {
        return Ok((None, deps));
    };
    let agent: Agent = decode(&bytes)?;
    Ok((Some((agent, grants_in(store, name)?)), deps))
}

fn names_under(store: &dyn Store, prefix: &str) -> DomainResult<Vec<String>> {
    Ok(store
        .scan(prefix.as_bytes(), None, usize::MAX)?
        .into_iter()
        .map(|(k, _)| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
        .collect())
}

impl Agents {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    fn load(&self, name: &str) -> DomainResult<Option<(Agent, Vec<u8>)>> {
        match self.store.get(keyspace::agent(name).as_bytes())? {
            Some(bytes) => Ok(Some((decode(&bytes)?, bytes))),
            None => Ok(None),
        }
    }

    pub fn get(&self, name: &str) -> DomainResult<Option<Agent>> {
        Ok(self.load(name)?.map(|(a, _)| a))
    }

    fn require(&self, name: &str) -> DomainResult<(Agent, Vec<u8>)> {
        self.load(name)?.ok_or(DomainError::NotFound("agent"))
    }

    pub fn grants(&self, name: &str) -> DomainResult<Vec<Grant>> {
        grants_in(self.store.as_ref(), name)
    }

    /// Names of the agents a user owns or has been granted, directly, through
    /// a group they belong to or as everyone: the only agents that user could
    /// possibly see. Cached until one of those indexes changes; the cost is
    /// the user's own entries, never the host's groups or members.
    pub fn candidates_for(&self, user_id: &str) -> DomainResult<Arc<Vec<String>>> {
        let owned = keyspace::owned_prefix(user_id);
        super::cached(self.store.as_ref(), &owned, |engine| {
            let memberships = keyspace::user_groups_prefix(user_id);
            let mut principals = vec![user_id.to_owned(), EVERYONE.to_owned()];
            principals.extend(
                names_under(engine, &memberships)?
                    .iter()
                    .map(|g| super::groups::group_principal(g)),
            );
            let mut names = names_under(engine, &owned)?;
            let mut deps = Deps::new().prefix(owned.as_str()).prefix(memberships);
            for principal in principals {
                let granted = keyspace::granted_prefix(&principal);
                names.extend(names_under(engine, &granted)?);
                deps = deps.prefix(granted);
            }
            names.sort();
            names.dedup();
            Ok((names, deps))
        })
    }

    pub fn owned_by(&self, user_id: &str) -> DomainResult<Vec<String>> {
        names_under(self.store.as_ref(), &keyspace::owned_prefix(user_id))
    }

    /// Every agent name on the host (admins see all).
    pub fn all_names(&self) -> DomainResult<Vec<String>> {
        Ok(self
            .store
            .scan(keyspace::AGENT_PREFIX.as_bytes(), None, usize::MAX)?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k[keyspace::AGENT_PREFIX.len()..]).into_owned())
            .collect())
    }

    pub async fn create(
        &self,
        owner: &User,
        name: &str,
        fields: Map<String, Value>,
        event: AuditEvent,
    ) -> DomainResult<Agent> {
        check_agent_name(name)?;
        check_fields(&fields)?;
        let agent = Agent {
            name: name.to_owned(),
            owner: owner.id.clone(),
            created_at: now(),
            archived: false,
            archived_at: None,
            fields,
        };
        let mut tx = Transaction::durable();
        tx.expect(keyspace::agent(name), Expect::Absent)
            .expect(keyspace::user(&owner.id), Expect::Present)
            .put(keyspace::agent(name), encode(&agent)?)
            .put(keyspace::owned(&owner.id, name), Vec::new());
        event.record_into(&mut tx)?;
        match commit(&self.store, tx).await {
            Err(DomainError::Store(StoreError::Conflict)) => {
                if self.get(name)?.is_some() {
                    Err(DomainError::Conflict(format!(
                        "an agent named {name} already exists"
                    )))
                } else {
                    Err(DomainError::NotFound("owner"))
                }
            }
            other => other,
        }?;
        Ok(agent)
    }

    /// Apply `change` to the stored agent and write it back, guarded.
    async fn modify(
        &self,
        name: &str,
        event: &AuditEvent,
        change: impl Fn(&mut Agent) -> DomainResult<()>,
    ) -> DomainResult<Agent> {
        retry(&self.store, || {
            let (mut agent, read_as) = self.require(name)?;
            change(&mut agent)?;
            let mut tx = Transaction::durable();
            tx.expect(keyspace::agent(name), Expect::Equals(read_as))
                .put(keyspace::agent(name), encode(&agent)?);
            event.record_into(&mut tx)?;
            Ok((tx, agent))
        })
        .await
    }

    /// Merge `changes` into the agent's fields; a `null` value removes a field.
    pub async fn update(
        &self,
        name: &str,
        changes: Map<String, Value>,
        event: AuditEvent,
    ) -> DomainResult<Agent> {
        check_fields(&changes)?;
        self.modify(name, &event, |agent| {
            for (key, value) in &changes {
                if value.is_null() {
                    agent.fields.remove(key);
                } else {
                    agent.fields.insert(key.clone(), value.clone());
                }
            }
            Ok(())
        })
        .await
    }

    pub async fn set_archived(
        &self,
        name: &str,
        archived: bool,
        event: AuditEvent,
    ) -> DomainResult<Agent> {
        retry(&self.store, || {
            let (mut agent, read_as) = self.require(name)?;
            agent.archived = archived;
            agent.archived_at = archived.then(now);
            let mut tx = Transaction::durable();
            tx.expect(keyspace::agent(name), Expect::Equals(read_as))
                .put(keyspace::agent(name), encode(&agent)?);
            if archived {
                // A retired agent runs no more: its runtime token dies.
                tx.delete(keyspace::runtime(name));
            }
            event.record_into(&mut tx)?;
            Ok((tx, agent))
        })
        .await
    }

    /// Remove the agent with its grants, indexes and delegations.
    pub async fn delete(&self, name: &str, event: AuditEvent) -> DomainResult<Agent> {
        retry(&self.store, || {
            let (agent, read_as) = self.require(name)?;
            let mut tx = Transaction::durable();
            tx.expect(keyspace::agent(name), Expect::Equals(read_as));
            self.stage_removal(&mut tx, &agent)?;
            event.record_into(&mut tx)?;
            Ok((tx, agent))
        })
        .await
    }

    fn stage_removal(&self, tx: &mut Transaction, agent: &Agent) -> DomainResult<()> {
        let name = &agent.name;
        tx.delete(keyspace::agent(name))
            .delete(keyspace::owned(&agent.owner, name));
        // What refers to the agent by name goes with it, so an agent created
        // later under the same name inherits no memory grant, conversation
        // or secret binding.
        self.stage_private_links_removal(tx, name)?;
        for grant in self.grants(name)? {
            tx.delete(keyspace::grant(name, &grant.grantee))
                .delete(keyspace::granted(&grant.grantee, name));
        }
        let prefix = keyspace::agent_delegations_prefix(name);
        for id in names_under(self.store.as_ref(), &prefix)? {
            tx.delete(keyspace::agent_delegation(name, &id))
                .delete(keyspace::delegation(&id));
            if let Some(bytes) = self.store.get(keyspace::delegation(&id).as_bytes())? {
                let d: super::delegations::Delegation = decode(&bytes)?;
                tx.delete(keyspace::user_delegation(&d.issuer, &id));
            }
        }
        Ok(())
    }

    /// Add to `tx` cutting every tie between the agent and anyone's private
    /// data: its runtime token, the memory grants, secret bindings and
    /// conversation memberships naming it. Whoever runs the agent next (a
    /// new owner, or a new agent of the same name) reads none of what people
    /// gave it before.
    fn stage_private_links_removal(&self, tx: &mut Transaction, name: &str) -> DomainResult<()> {
        tx.delete(keyspace::runtime(name));
        let grants = keyspace::agent_memory_grants_prefix(name);
        for user in names_under(self.store.as_ref(), &grants)? {
            tx.delete(keyspace::agent_memory_grant(name, &user))
                .delete(keyspace::memory_grant(&user, name));
        }
        for (key, _) in self.store.scan(
            keyspace::secret_bindings_prefix(name).as_bytes(),
            None,
            usize::MAX,
        )? {
            tx.delete(key);
        }
        super::chat::Chat::new(self.store.clone()).stage_agent_removal(tx, name)
    }

    /// Give the agent to `to`. The new owner's own grant, if any, is dropped
    /// (they hold `owner` now); the old owner keeps only what others granted
    /// them, and grants that drew on the old owner's rights lapse by the rules.
    pub async fn transfer(&self, name: &str, to: &User, event: AuditEvent) -> DomainResult<Agent> {
        retry(&self.store, || {
            let (mut agent, read_as) = self.require(name)?;
            if agent.owner == to.id {
                return Err(DomainError::Conflict(format!(
                    "{} already owns {name}",
                    to.username
                )));
            }
            let mut tx = Transaction::durable();
            tx.expect(keyspace::agent(name), Expect::Equals(read_as))
                .expect(keyspace::user(&to.id), Expect::Present)
                .delete(keyspace::owned(&agent.owner, name))
                .put(keyspace::owned(&to.id, name), Vec::new())
                .delete(keyspace::grant(name, &to.id))
                .delete(keyspace::granted(&to.id, name));
            // The new owner gets the agent, not what people entrusted to it
            // under the old one.
            self.stage_private_links_removal(&mut tx, name)?;
            agent.owner = to.id.clone();
            tx.put(keyspace::agent(name), encode(&agent)?);
            event.record_into(&mut tx)?;
            Ok((tx, agent))
        })
        .await
    }

    /// Grant (or change) `grantee`'s level. Whether the granter may is the
    /// policy's decision, made before this is called on the grant it saw
    /// (`replaces`); if the grant changed since, nothing is written.
    #[allow(clippy::too_many_arguments)] // one grant, field by field
    pub async fn grant(
        &self,
        name: &str,
        grantee: Grantee<'_>,
        level: Level,
        expires_at: Option<i64>,
        granted_by: &str,
        replaces: Option<&Grant>,
        event: AuditEvent,
    ) -> DomainResult<Grant> {
        let (agent, _) = self.require(name)?;
        if let Grantee::User(user) = grantee {
            if agent.owner == user.id {
                return Err(DomainError::Invalid(format!(
                    "{} owns {name} already",
                    user.username
                )));
            }
        }
        let principal = grantee.principal().id();
        let grant = Grant {
            agent: name.to_owned(),
            grantee: principal.clone(),
            level,
            granted_by: granted_by.to_owned(),
            at: now(),
            expires_at,
        };
        let key = keyspace::grant(name, &principal);
        let mut tx = Transaction::durable();
        tx.expect(keyspace::agent(name), Expect::Present);
        // The grantee must still exist when the grant is written.
        match grantee {
            Grantee::User(user) => {
                tx.expect(keyspace::user(&user.id), Expect::Present);
            }
            Grantee::Group(group) => {
                tx.expect(keyspace::group(group), Expect::Present);
            }
            Grantee::Everyone => {}
        }
        tx.expect(key.clone(), self.still(&key, replaces)?)
            .put(key, encode(&grant)?)
            .put(keyspace::granted(&principal, name), Vec::new());
        event.record_into(&mut tx)?;
        match commit(&self.store, tx).await {
            Err(DomainError::Store(StoreError::Conflict)) => Err(DomainError::Conflict(
                "the agent, the grantee or the share changed meanwhile; try again".into(),
            )),
            other => other,
        }?;
        Ok(grant)
    }

    /// Remove the grant the policy decided on; nothing is removed if it has
    /// changed since.
    pub async fn revoke(&self, name: &str, grant: &Grant, event: AuditEvent) -> DomainResult<()> {
        let key = keyspace::grant(name, &grant.grantee);
        let mut tx = Transaction::durable();
        tx.expect(key.clone(), self.still(&key, Some(grant))?)
            .delete(key)
            .delete(keyspace::granted(&grant.grantee, name));
        event.record_into(&mut tx)?;
        match commit(&self.store, tx).await {
            Err(DomainError::Store(StoreError::Conflict)) => Err(DomainError::Conflict(
                "the share changed meanwhile; try again".into(),
            )),
            other => other,
        }
    }

    /// A guard that holds while the grant at `key` is still `seen` (the same
    /// grantor and level), or still absent.
    fn still(&self, key: &str, seen: Option<&Grant>) -> DomainResult<Expect> {
        let stored = self.store.get(key.as_bytes())?;
        match (seen, stored) {
            (None, None) => Ok(Expect::Absent),
            (Some(seen), Some(bytes)) => {
                let now: Grant = decode(&bytes)?;
                if now.granted_by == seen.granted_by
                    && now.level == seen.level
                    && now.expires_at == seen.expires_at
                {
                    Ok(Expect::Equals(bytes))
                } else {
                    Err(DomainError::Conflict(
                        "the share changed meanwhile; try again".into(),
                    ))
                }
            }
            _ => Err(DomainError::Conflict(
                "the share changed meanwhile; try again".into(),
            )),
        }
    }

    /// Add to `tx` the removal of every grant held by `user_id`, and of every
    /// agent they own (for deleting a user who chose to delete their agents).
    pub fn stage_user_removal(
        &self,
        tx: &mut Transaction,
        user_id: &str,
        delete_owned: bool,
    ) -> DomainResult<()> {
        for name in names_under(self.store.as_ref(), &keyspace::granted_prefix(user_id))? {
            tx.delete(keyspace::grant(&name, user_id))
                .delete(keyspace::granted(user_id, &name));
        }
        if delete_owned {
            for name in self.owned_by(user_id)? {
                if let Some((agent, read_as)) = self.load(&name)? {
                    tx.expect(keyspace::agent(&name), Expect::Equals(read_as));
                    self.stage_removal(tx, &agent)?;
                }
            }
        }
        Ok(())
    }

    /// Add to `tx` moving every agent `from` owns to `to`.
    pub fn stage_owner_change(
        &self,
        tx: &mut Transaction,
        from: &str,
        to: &str,
    ) -> DomainResult<Vec<String>> {
        let names = self.owned_by(from)?;
        for name in &names {
            let (mut agent, read_as) = self.require(name)?;
            agent.owner = to.to_owned();
            tx.expect(keyspace::agent(name), Expect::Equals(read_as))
                .put(keyspace::agent(name), encode(&agent)?)
                .delete(keyspace::owned(from, name))
                .put(keyspace::owned(to, name), Vec::new())
                .delete(keyspace::grant(name, to))
                .delete(keyspace::granted(to, name));
            self.stage_private_links_removal(tx, name)?;
        }
        Ok(names)
    }
}

/// Who a new grant is to.
#[derive(Debug, Clone, Copy)]
pub enum Grantee<'a> {
    User(&'a User),
    /// A group, by name.
    Group(&'a str),
    Everyone,
}

impl Grantee<'_> {
    pub fn principal(&self) -> Principal<'_> {
        match self {
            Grantee::User(user) => Principal::User(&user.id),
            Grantee::Group(name) => Principal::Group(name),
            Grantee::Everyone => Principal::Everyone,
        }
    }
}

/// Where one link of a grant chain gets its rights from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// The agent's owner: the chain ends here.
    Owner,
    /// A grant on the agent, to the user or to a group or everyone they
    /// belong to (`to`, the grant's principal), drawing on `granted_by`'s
    /// rights.
    Grant {
        to: String,
        level: Level,
        granted_by: String,
        at: i64,
        expires_at: Option<i64>,
        in_effect: bool,
    },
    /// The user holds no grant and does not own the agent: the chain breaks.
    Nothing,
    /// The user was met earlier in this chain: it loops without reaching the owner.
    Cycle,
}

/// One person in a chain of grants.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub user: String,
    pub source: Source,
}

/// How one person reaches an agent: owning it, as an admin, and through
/// each grant that names them or a group (or everyone) they belong to, with
/// everyone it draws on, up to the owner.
#[derive(Debug, Clone, PartialEq)]
pub struct Reach {
    pub user: String,
    /// What the policy says they hold (0: nothing in effect).
    pub rank: i64,
    pub owner: bool,
    /// The rank admins hold as such, for an admin.
    pub admin_rank: Option<i64>,
    /// One chain per grant reaching them: that grant first, then the
    /// grantor's source, and so on. Their own grant comes first, then those
    /// to their groups, then everyone's.
    pub chains: Vec<Vec<Link>>,
}

/// What [`reach`] needs besides the grants: who holds what as the policy
/// derives it and who belongs to what.
pub struct Reaching<'a> {
    /// Effective ranks without admin rights, by user id and by principal
    /// (what a group or everyone's grant confers), which decide whether a
    /// grant is in effect.
    pub ranks: &'a HashMap<String, i64>,
    /// Each admin with their effective rank.
    pub admins: &'a [(String, i64)],
    /// What being an admin alone gives.
    pub admin_rank: i64,
    /// The members of each group (by principal) that holds a grant, and
    /// `everyone`'s when everyone does.
    pub members: &'a HashMap<String, Vec<String>>,
    /// The clock expiring grants are read against.
    pub now: i64,
}

/// Everyone who reaches `agent`: its owner, every grantee and member of a
/// grantee group (also those whose grant is not in effect) and every admin.
/// Unordered.
pub fn reach(agent: &Agent, grants: &[Grant], with: &Reaching) -> Vec<Reach> {
    let mut out: BTreeMap<&str, Reach> = BTreeMap::new();
    let members = grants
        .iter()
        .filter_map(|g| with.members.get(&g.grantee))
        .flatten();
    let people = std::iter::once(agent.owner.as_str())
        .chain(
            grants
                .iter()
                .filter(|g| matches!(g.principal(), Principal::User(_)))
                .map(|g| g.grantee.as_str()),
        )
        .chain(members.map(String::as_str))
        .chain(with.admins.iter().map(|(id, _)| id.as_str()));
    for user in people {
        if out.contains_key(user) {
            continue;
        }
        let admin = with.admins.iter().find(|(id, _)| id == user);
        let rank = match admin {
            Some((_, rank)) => *rank,
            None => with.ranks.get(user).copied().unwrap_or(0),
        };
        let chains = reaching(grants, with, user)
            .into_iter()
            .map(|grant| grant_chain(agent, grants, with, user, grant))
            .collect();
        out.insert(
            user,
            Reach {
                user: user.to_owned(),
                rank,
                owner: agent.owner == user,
                admin_rank: admin.map(|_| with.admin_rank),
                chains,
            },
        );
    }
    out.into_values().collect()
}

/// The grants that name `user` or a principal they belong to: their own,
/// then their groups', then everyone's.
fn reaching<'g>(grants: &'g [Grant], with: &Reaching, user: &str) -> Vec<&'g Grant> {
    let belongs = |g: &Grant| {
        with.members
            .get(&g.grantee)
            .is_some_and(|m| m.iter().any(|u| u == user))
    };
    let order = |g: &Grant| match g.principal() {
        Principal::User(_) => 0,
        Principal::Group(_) => 1,
        Principal::Everyone => 2,
    };
    let mut found: Vec<&Grant> = grants
        .iter()
        .filter(|g| g.grantee == user || belongs(g))
        .collect();
    found.sort_by_key(|g| (order(g), g.grantee.as_str()));
    found
}

/// Where `user`'s rights come from when they draw a grant: the live grant
/// reaching them that confers the most (their own first on a tie).
fn best_source<'g>(grants: &'g [Grant], with: &Reaching, user: &str) -> Option<&'g Grant> {
    let mut best: Option<&Grant> = None;
    for grant in reaching(grants, with, user) {
        if grant.live_at(with.now) && best.is_none_or(|b| grant.level > b.level) {
            best = Some(grant);
        }
    }
    best
}

/// The chain from `first`, a grant reaching `user`, up to the owner.
fn grant_chain(
    agent: &Agent,
    grants: &[Grant],
    with: &Reaching,
    user: &str,
    first: &Grant,
) -> Vec<Link> {
    let mut chain = Vec::new();
    let mut seen = HashSet::new();
    let mut current = user;
    let mut next = Some(first);
    while let Some(grant) = next {
        seen.insert(current);
        chain.push(Link {
            user: current.to_owned(),
            source: Source::Grant {
                to: grant.grantee.clone(),
                level: grant.level,
                granted_by: grant.granted_by.clone(),
                at: grant.at,
                expires_at: grant.expires_at,
                // As the shares list says it: the grantee holds what was
                // granted, and the grant has not run out.
                in_effect: grant.live_at(with.now)
                    && with.ranks.get(&grant.grantee).copied().unwrap_or(0) >= grant.level.rank(),
            },
        });
        current = grant.granted_by.as_str();
        let source = if seen.contains(current) {
            Source::Cycle
        } else if current == agent.owner {
            Source::Owner
        } else {
            next = best_source(grants, with, current);
            match next {
                Some(_) => continue,
                None => Source::Nothing,
            }
        };
        chain.push(Link {
            user: current.to_owned(),
            source,
        });
        break;
    }
    chain
}

#[cfg(test)]
mod reach_tests {
    use super::*;

    fn agent() -> Agent {
        Agent {
            name: "a".into(),
            owner: "olive".into(),
            created_at: 0,
            archived: false,
            archived_at: None,
            fields: Map::new(),
        }
    }

    fn grant(grantee: &str, level: Level, by: &str) -> Grant {
        Grant {
            agent: "a".into(),
            grantee: grantee.into(),
            level,
            granted_by: by.into(),
            at: 1,
            expires_at: None,
        }
    }

    fn ranks(pairs: &[(&str, i64)]) -> HashMap<String, i64> {
        pairs.iter().map(|(u, r)| (u.to_string(), *r)).collect()
    }

    fn find<'a>(all: &'a [Reach], user: &str) -> &'a Reach {
        all.iter().find(|r| r.user == user).unwrap()
    }

    #[test]
    fn chains_run_up_to_the_owner_or_say_where_they_break() {
        let grants = [
            grant("bob", Level::Share, "olive"),
            grant("carol", Level::View, "bob"),
            grant("dan", Level::Use, "gone"),
            grant("x", Level::Share, "y"),
            grant("y", Level::Share, "x"),
        ];
        let held = ranks(&[("olive", 6), ("bob", 5), ("carol", 1)]);
        let members = HashMap::new();
        let with = Reaching {
            ranks: &held,
            admins: &[("root".into(), 4)],
            admin_rank: 4,
            members: &members,
            now: 10,
        };
        let all = reach(&agent(), &grants, &with);
        assert_eq!(all.len(), 7);
        let carol = find(&all, "carol");
        assert_eq!(carol.rank, 1);
        let users: Vec<&str> = carol.chains[0].iter().map(|l| l.user.as_str()).collect();
        assert_eq!(users, ["carol", "bob", "olive"]);
        assert_eq!(carol.chains[0][2].source, Source::Owner);
        let dan = find(&all, "dan");
        assert_eq!(dan.rank, 0);
        assert!(matches!(
            dan.chains[0][0].source,
            Source::Grant {
                in_effect: false,
                ..
            }
        ));
        assert_eq!(dan.chains[0][1].source, Source::Nothing);
        let x = find(&all, "x");
        assert_eq!(x.chains[0].last().unwrap().source, Source::Cycle);
        assert_eq!(x.chains[0].len(), 3);
        let olive = find(&all, "olive");
        assert!(olive.owner && olive.chains.is_empty() && olive.admin_rank.is_none());
        let root = find(&all, "root");
        assert_eq!((root.rank, root.admin_rank), (4, Some(4)));
    }

    #[test]
    fn chains_come_through_groups_and_everyone_and_say_when_they_run_out() {
        let mut expiring = grant("group:kids", Level::Use, "bob");
        expiring.expires_at = Some(10);
        let grants = [
            grant("group:family", Level::Share, "olive"),
            grant("carol", Level::View, "bob"),
            expiring,
            grant("everyone", Level::View, "olive"),
        ];
        let members = HashMap::from([
            ("group:family".to_owned(), vec!["bob".to_owned()]),
            ("group:kids".to_owned(), vec!["carol".to_owned()]),
            (
                "everyone".to_owned(),
                vec!["bob".into(), "carol".into(), "olive".into()],
            ),
        ]);
        let held = ranks(&[
            ("olive", 6),
            ("bob", 5),
            ("carol", 1),
            ("group:family", 5),
            ("everyone", 1),
        ]);
        let with = Reaching {
            ranks: &held,
            admins: &[],
            admin_rank: 4,
            members: &members,
            now: 10,
        };
        let all = reach(&agent(), &grants, &with);
        // Her own grant first, then her groups', then everyone's.
        let carol = find(&all, "carol");
        let firsts: Vec<&Source> = carol.chains.iter().map(|c| &c[0].source).collect();
        assert!(matches!(firsts[0], Source::Grant { to, .. } if to == "carol"));
        assert!(
            matches!(firsts[1], Source::Grant { to, in_effect: false, expires_at: Some(10), .. } if to == "group:kids")
        );
        assert!(matches!(firsts[2], Source::Grant { to, in_effect: true, .. } if to == "everyone"));
        // bob draws on his group's grant: the chain says so.
        let above = &carol.chains[0][1];
        assert_eq!(above.user, "bob");
        assert!(matches!(&above.source, Source::Grant { to, .. } if to == "group:family"));
        assert_eq!(carol.chains[0][2].source, Source::Owner);
        // Members of a group with a grant are listed even with nothing else.
        assert_eq!(find(&all, "bob").chains.len(), 2);
    }
}
