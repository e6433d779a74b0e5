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

    /// Names of the agents a user owns or has been granted: the only agents
    /// that user could possibly see. Cached until either index changes.
    pub fn candidates_for(&self, user_id: &str) -> DomainResult<Arc<Vec<String>>> {
        let owned = keyspace::owned_prefix(user_id);
        let granted = keyspace::granted_prefix(user_id);
        super::cached(self.store.as_ref(), &owned, |engine| {
            let mut names = names_under(engine, &owned)?;
            names.extend(names_under(engine, &granted)?);
            names.sort();
            names.dedup();
            Ok((
                names,
                Deps::new().prefix(owned.as_str()).prefix(granted.as_str()),
            ))
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
    pub async fn grant(
        &self,
        name: &str,
        grantee: &User,
        level: Level,
        granted_by: &str,
        replaces: Option<&Grant>,
        event: AuditEvent,
    ) -> DomainResult<Grant> {
        let (agent, _) = self.require(name)?;
        if agent.owner == grantee.id {
            return Err(DomainError::Invalid(format!(
                "{} owns {name} already",
                grantee.username
            )));
        }
        let grant = Grant {
            agent: name.to_owned(),
            grantee: grantee.id.clone(),
            level,
            granted_by: granted_by.to_owned(),
            at: now(),
        };
        let key = keyspace::grant(name, &grantee.id);
        let mut tx = Transaction::durable();
        tx.expect(keyspace::agent(name), Expect::Present)
            .expect(keyspace::user(&grantee.id), Expect::Present)
            .expect(key.clone(), self.still(&key, replaces)?)
            .put(key, encode(&grant)?)
            .put(keyspace::granted(&grantee.id, name), Vec::new());
        event.record_into(&mut tx)?;
        match commit(&self.store, tx).await {
            Err(DomainError::Store(StoreError::Conflict)) => Err(DomainError::Conflict(
                "the agent, the user or the share changed meanwhile; try again".into(),
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
                if now.granted_by == seen.granted_by && now.level == seen.level {
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

/// Where one link of a grant chain gets its rights from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// The agent's owner: the chain ends here.
    Owner,
    /// A grant on the agent, drawing on `granted_by`'s rights.
    Grant {
        level: Level,
        granted_by: String,
        at: i64,
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

/// How one person reaches an agent: owning it, as an admin, and through the
/// grant they hold with everyone it draws on, up to the owner.
#[derive(Debug, Clone, PartialEq)]
pub struct Reach {
    pub user: String,
    /// What the policy says they hold (0: nothing in effect).
    pub rank: i64,
    pub owner: bool,
    /// The rank admins hold as such, for an admin.
    pub admin_rank: Option<i64>,
    /// Their grant first, then the grantor's source, and so on.
    pub chain: Vec<Link>,
}

/// Everyone who reaches `agent`: its owner, every grantee (also those whose
/// grant is not in effect) and every admin. `ranks` are the effective ranks
/// the policy derives without admin rights, which decide whether a grant is
/// in effect; `admins` pairs each admin with their effective rank and
/// `admin_rank` is what being an admin alone gives. Unordered.
pub fn reach(
    agent: &Agent,
    grants: &[Grant],
    ranks: &HashMap<String, i64>,
    admins: &[(String, i64)],
    admin_rank: i64,
) -> Vec<Reach> {
    let by_grantee: HashMap<&str, &Grant> =
        grants.iter().map(|g| (g.grantee.as_str(), g)).collect();
    let mut out: BTreeMap<&str, Reach> = BTreeMap::new();
    let people = std::iter::once(agent.owner.as_str())
        .chain(grants.iter().map(|g| g.grantee.as_str()))
        .chain(admins.iter().map(|(id, _)| id.as_str()));
    for user in people {
        if out.contains_key(user) {
            continue;
        }
        let admin = admins.iter().find(|(id, _)| id == user);
        let rank = match admin {
            Some((_, rank)) => *rank,
            None => ranks.get(user).copied().unwrap_or(0),
        };
        out.insert(
            user,
            Reach {
                user: user.to_owned(),
                rank,
                owner: agent.owner == user,
                admin_rank: admin.map(|_| admin_rank),
                chain: grant_chain(agent, &by_grantee, ranks, user),
            },
        );
    }
    out.into_values().collect()
}

/// The chain from `user`'s own grant up to the owner (empty when they hold
/// no grant).
fn grant_chain(
    agent: &Agent,
    by_grantee: &HashMap<&str, &Grant>,
    ranks: &HashMap<String, i64>,
    user: &str,
) -> Vec<Link> {
    let mut chain = Vec::new();
    let mut seen = HashSet::new();
    let mut current = user;
    let mut next = by_grantee.get(user).copied();
    while let Some(grant) = next {
        seen.insert(current);
        chain.push(Link {
            user: current.to_owned(),
            source: Source::Grant {
                level: grant.level,
                granted_by: grant.granted_by.clone(),
                at: grant.at,
                // As the shares list says it: the grantee holds what was granted.
                in_effect: ranks.get(current).copied().unwrap_or(0) >= grant.level.rank(),
            },
        });
        current = grant.granted_by.as_str();
        let source = if seen.contains(current) {
            Source::Cycle
        } else if current == agent.owner {
            Source::Owner
        } else {
            next = by_grantee.get(current).copied();
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
        let all = reach(&agent(), &grants, &held, &[("root".into(), 4)], 4);
        assert_eq!(all.len(), 7);
        let carol = find(&all, "carol");
        assert_eq!(carol.rank, 1);
        let users: Vec<&str> = carol.chain.iter().map(|l| l.user.as_str()).collect();
        assert_eq!(users, ["carol", "bob", "olive"]);
        assert_eq!(carol.chain[2].source, Source::Owner);
        let dan = find(&all, "dan");
        assert_eq!(dan.rank, 0);
        assert!(matches!(
            dan.chain[0].source,
            Source::Grant {
                in_effect: false,
                ..
            }
        ));
        assert_eq!(dan.chain[1].source, Source::Nothing);
        let x = find(&all, "x");
        assert_eq!(x.chain.last().unwrap().source, Source::Cycle);
        assert_eq!(x.chain.len(), 3);
        let olive = find(&all, "olive");
        assert!(olive.owner && olive.chain.is_empty() && olive.admin_rank.is_none());
        let root = find(&all, "root");
        assert_eq!((root.rank, root.admin_rank), (4, Some(4)));
    }
}
