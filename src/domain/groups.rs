//! Groups of people, and the principals a grant can name.
//!
//! A grant on an agent names its grantee as a *principal*: a user id, a
//! group (`group:<name>`) or everyone on this host (`everyone`). Membership
//! is stored apart from grants and indexed both ways (`gmember/`, `ugroup/`),
//! so what reaches a user is their own index entries, and removing someone
//! from a group touches no grant. Who may create or manage a group, and what
//! a membership confers, is the policy's (`datalog/auth.dl`,
//! `datalog/agents.dl`): this module only reads and writes.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::agents::check_agent_name;
use super::audit::AuditEvent;
use super::{commit, decode, encode, keyspace, now, retry, DomainError, DomainResult};
use crate::store::{Deps, Expect, Store, StoreError, Transaction};

/// The principal every account belongs to. No user id is `everyone`: ids are
/// 11 base64url characters (and legacy imports keep theirs, which are never
/// this word; see `migrate::legacy`).
pub const EVERYONE: &str = "everyone";
/// Prefix of a group's principal. No user id holds a `:`.
pub const GROUP_PRINCIPAL: &str = "group:";

/// Who a grant is to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal<'a> {
    /// A person, by account id.
    User(&'a str),
    /// The members of a group, by group name.
    Group(&'a str),
    /// Everyone who has an account, now or later.
    Everyone,
}

impl<'a> Principal<'a> {
    /// Read a grant's grantee.
    pub fn of(grantee: &'a str) -> Self {
        if grantee == EVERYONE {
            Principal::Everyone
        } else if let Some(group) = grantee.strip_prefix(GROUP_PRINCIPAL) {
            Principal::Group(group)
        } else {
            Principal::User(grantee)
        }
    }

    /// The grantee as stored in a grant and named in the policy's facts.
    pub fn id(&self) -> String {
        match self {
            Principal::User(id) => (*id).to_owned(),
            Principal::Group(name) => group_principal(name),
            Principal::Everyone => EVERYONE.to_owned(),
        }
    }
}

pub fn group_principal(name: &str) -> String {
    format!("{GROUP_PRINCIPAL}{name}")
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Group {
    pub name: String,
    pub display_name: String,
    /// The creator's user id.
    pub owner: String,
    pub created_at: i64,
    /// Bumped by every membership change, so the record changes with its
    /// membership: deleting the group, guarded on the record, then conflicts
    /// with a member added meanwhile instead of leaving them behind for a
    /// later group of the same name.
    #[serde(default)]
    pub revision: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Membership {
    pub at: i64,
    /// Who added the member (themselves, for the creator).
    pub added_by: String,
}

pub struct Groups {
    store: Arc<dyn Store>,
}

fn ids_under(store: &dyn Store, prefix: &str) -> DomainResult<Vec<String>> {
    Ok(store
        .scan(prefix.as_bytes(), None, usize::MAX)?
        .into_iter()
        .map(|(k, _)| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
        .collect())
}

/// The member ids of `group`, read from `store` (everything under
/// [`keyspace::group_members_prefix`]).
pub fn members_in(store: &dyn Store, group: &str) -> DomainResult<Vec<String>> {
    ids_under(store, &keyspace::group_members_prefix(group))
}

/// Names of the groups `user` belongs to, cached until that index changes.
pub fn groups_of(store: &dyn Store, user: &str) -> DomainResult<Arc<Vec<String>>> {
    let prefix = keyspace::user_groups_prefix(user);
    super::cached(store, &prefix, |engine| {
        Ok((
            ids_under(engine, &prefix)?,
            Deps::new().prefix(prefix.as_str()),
        ))
    })
}

impl Groups {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    fn load(&self, name: &str) -> DomainResult<Option<(Group, Vec<u8>)>> {
        match self.store.get(keyspace::group(name).as_bytes())? {
            Some(bytes) => Ok(Some((decode(&bytes)?, bytes))),
            None => Ok(None),
        }
    }

    pub fn get(&self, name: &str) -> DomainResult<Option<Group>> {
        Ok(self.load(name)?.map(|(g, _)| g))
    }

    /// Member ids, in id order.
    pub fn members(&self, name: &str) -> DomainResult<Vec<String>> {
        members_in(self.store.as_ref(), name)
    }

    pub fn is_member(&self, name: &str, user: &str) -> DomainResult<bool> {
        Ok(self
            .store
            .get(keyspace::group_member(name, user).as_bytes())?
            .is_some())
    }

    /// Names of the groups `user` belongs to.
    pub fn of(&self, user: &str) -> DomainResult<Arc<Vec<String>>> {
        groups_of(self.store.as_ref(), user)
    }

    /// Every group on the host, in name order.
    pub fn all(&self) -> DomainResult<Vec<Group>> {
        self.store
            .scan(keyspace::GROUP_PREFIX.as_bytes(), None, usize::MAX)?
            .into_iter()
            .map(|(_, v)| decode(&v))
            .collect()
    }

    /// Create a group owned by `owner`, who is its first member.
    pub async fn create(
        &self,
        owner: &str,
        name: &str,
        display_name: Option<&str>,
        event: AuditEvent,
    ) -> DomainResult<Group> {
        check_group_name(name)?;
        let group = Group {
            name: name.to_owned(),
            display_name: display_name
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .unwrap_or(name)
                .to_owned(),
            owner: owner.to_owned(),
            created_at: now(),
            revision: 0,
        };
        let membership = Membership {
            at: group.created_at,
            added_by: owner.to_owned(),
        };
        let mut tx = Transaction::durable();
        tx.expect(keyspace::group(name), Expect::Absent)
            .expect(keyspace::user(owner), Expect::Present)
            .put(keyspace::group(name), encode(&group)?)
            .put(keyspace::group_member(name, owner), encode(&membership)?)
            .put(keyspace::user_group(owner, name), Vec::new());
        event.record_into(&mut tx)?;
        match commit(&self.store, tx).await {
            Err(DomainError::Store(StoreError::Conflict)) => Err(DomainError::Conflict(format!(
                "a group named {name} already exists"
            ))),
            other => other,
        }?;
        Ok(group)
    }

    /// Add `user` to the group; adding a member again changes nothing.
    pub async fn add_member(
        &self,
        name: &str,
        user: &str,
        added_by: &str,
        event: AuditEvent,
    ) -> DomainResult<bool> {
        if self.is_member(name, user)? {
            return Ok(false);
        }
        if self.store.get(keyspace::user(user).as_bytes())?.is_none() {
            return Err(DomainError::NotFound("user"));
        }
        let membership = Membership {
            at: now(),
            added_by: added_by.to_owned(),
        };
        retry(&self.store, || {
            let mut tx = self.bump(name)?;
            tx.expect(keyspace::user(user), Expect::Present)
                .expect(keyspace::group_member(name, user), Expect::Absent)
                .put(keyspace::group_member(name, user), encode(&membership)?)
                .put(keyspace::user_group(user, name), Vec::new());
            event.record_into(&mut tx)?;
            Ok((tx, true))
        })
        .await
    }

    /// A transaction guarded on the group's record as read now, rewriting
    /// it with its revision bumped (see [`Group::revision`]).
    fn bump(&self, name: &str) -> DomainResult<Transaction> {
        let (mut group, read_as) = self.load(name)?.ok_or(DomainError::NotFound("group"))?;
        group.revision += 1;
        let mut tx = Transaction::durable();
        tx.expect(keyspace::group(name), Expect::Equals(read_as))
            .put(keyspace::group(name), encode(&group)?);
        Ok(tx)
    }

    /// Take `user` out of the group.
    pub async fn remove_member(
        &self,
        name: &str,
        user: &str,
        event: AuditEvent,
    ) -> DomainResult<()> {
        let key = keyspace::group_member(name, user);
        retry(&self.store, || {
            if self.store.get(key.as_bytes())?.is_none() {
                return Err(DomainError::NotFound("member"));
            }
            let mut tx = self.bump(name)?;
            tx.expect(key.clone(), Expect::Present)
                .delete(key.clone())
                .delete(keyspace::user_group(user, name));
            event.record_into(&mut tx)?;
            Ok((tx, ()))
        })
        .await
    }

    /// Delete the group with its memberships and every grant to it, in one
    /// transaction: nothing is left that a later group of the same name
    /// would inherit.
    pub async fn delete(&self, name: &str, event: AuditEvent) -> DomainResult<Group> {
        retry(&self.store, || {
            let (group, read_as) = self.load(name)?.ok_or(DomainError::NotFound("group"))?;
            let mut tx = Transaction::durable();
            tx.expect(keyspace::group(name), Expect::Equals(read_as))
                .delete(keyspace::group(name));
            for user in self.members(name)? {
                tx.delete(keyspace::group_member(name, &user))
                    .delete(keyspace::user_group(&user, name));
            }
            let principal = group_principal(name);
            let granted = keyspace::granted_prefix(&principal);
            for agent in ids_under(self.store.as_ref(), &granted)? {
                tx.delete(keyspace::grant(&agent, &principal))
                    .delete(keyspace::granted(&principal, &agent));
            }
            event.record_into(&mut tx)?;
            Ok((tx, group))
        })
        .await
    }

    /// Add to `tx` taking `user` out of every group (for deleting the user).
    /// Groups they own stay, for admins to manage.
    pub fn stage_user_removal(&self, tx: &mut Transaction, user: &str) -> DomainResult<()> {
        for group in ids_under(self.store.as_ref(), &keyspace::user_groups_prefix(user))? {
            tx.delete(keyspace::group_member(&group, user))
                .delete(keyspace::user_group(user, &group));
        }
        Ok(())
    }
}

/// Names forward auth already gives everyone (`users`) and admins
/// (`admins`) in `Remote-Groups`: a group of that name would pass for them.
pub const RESERVED_GROUP_NAMES: &[&str] = &["users", "admins"];

/// A slug, as agent names are, and not a reserved name.
pub fn check_group_name(name: &str) -> DomainResult<()> {
    check_agent_name(name).map_err(|_| DomainError::Invalid(name_rules()))?;
    if RESERVED_GROUP_NAMES.contains(&name) {
        return Err(DomainError::Invalid(format!(
            "{name:?} is reserved (forward auth names every person's and admins' groups so)"
        )));
    }
    Ok(())
}

fn name_rules() -> String {
    format!(
        "group name must be 1 to {} lowercase letters, digits or '-', not starting or ending with '-'",
        super::agents::MAX_AGENT_NAME_LEN
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_read_back_as_written() {
        for p in [
            Principal::User("Ab3_-xYz012"),
            Principal::Group("family"),
            Principal::Everyone,
        ] {
            assert_eq!(Principal::of(&p.id()), p);
        }
        // A user id never carries the group prefix's colon.
        assert_eq!(Principal::of("group:kids"), Principal::Group("kids"));
    }

    #[tokio::test]
    async fn deleting_a_group_takes_its_members_and_grants_along() {
        let store: Arc<dyn Store> = Arc::new(crate::store::MemoryStore::new());
        let mut tx = Transaction::new();
        tx.put(keyspace::user("u1"), b"{}".to_vec())
            .put(keyspace::user("u2"), b"{}".to_vec());
        store.commit(&tx).unwrap();
        let groups = Groups::new(store.clone());
        let event = || AuditEvent::new(Some("u1"), "group.test", "family");
        groups.create("u1", "family", None, event()).await.unwrap();
        assert!(groups
            .add_member("family", "u2", "u1", event())
            .await
            .unwrap());
        assert!(!groups
            .add_member("family", "u2", "u1", event())
            .await
            .unwrap());
        assert_eq!(groups.members("family").unwrap(), ["u1", "u2"]);
        assert_eq!(groups.of("u2").unwrap().as_slice(), ["family"]);
        let mut tx = Transaction::new();
        tx.put(keyspace::grant("ada", "group:family"), b"{}".to_vec())
            .put(keyspace::granted("group:family", "ada"), Vec::new());
        store.commit(&tx).unwrap();
        groups.delete("family", event()).await.unwrap();
        for key in [
            keyspace::group("family"),
            keyspace::group_member("family", "u2"),
            keyspace::user_group("u2", "family"),
            keyspace::grant("ada", "group:family"),
            keyspace::granted("group:family", "ada"),
        ] {
            assert!(store.get(key.as_bytes()).unwrap().is_none(), "{key} stayed");
        }
        assert!(groups
            .create("u1", "Bad Name", None, event())
            .await
            .is_err());
        assert!(groups.create("u1", "admins", None, event()).await.is_err());
    }
}
