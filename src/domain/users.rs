//! Accounts: first-run setup, invitations, login, invite completion, profile,
//! password change and reset, admin flag and deletion.
//!
//! Every change is one guarded transaction: the user record, the username index,
//! the admin and active indexes and the affected sessions move together or not
//! at all, and a concurrent change to the same user makes the write retry on
//! fresh data instead of overwriting it.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::password::{check_new_password, Passwords, Verification};
use super::sessions::{self, Session};
use super::{decode, encode, keyspace, now, random_id, retry, DomainError, DomainResult};
use crate::store::{Expect, Store, Transaction};

pub const MAX_USERNAME_LEN: usize = 32;
const MAX_NAME_LEN: usize = 128;
const MAX_EMAIL_LEN: usize = 254;
const SETUP_MARKER: &str = "meta/setup_done";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub username: String,
    #[serde(default)]
    pub full_name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub is_admin: bool,
    /// argon2id PHC string, or a legacy hash until its owner's next login.
    #[serde(default)]
    pub password_hash: Option<String>,
    #[serde(default)]
    pub invite: Option<Invite>,
    #[serde(default)]
    pub created_at: Option<i64>,
    #[serde(default)]
    pub last_login_at: Option<i64>,
}

/// A pending invitation: the code logs the user in until they complete sign-up.
/// Only its argon2 digest is kept: the code is shown once, when issued, so
/// whoever reads the store cannot take over a pending account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Invite {
    #[serde(default)]
    pub digest: String,
    pub expires_at: i64,
    #[serde(default)]
    pub invited_by: String,
    pub invited_at: i64,
}

impl User {
    /// Has not set a password yet: signed in (if at all) with an invite code.
    pub fn pending(&self) -> bool {
        self.password_hash.is_none()
    }
}

#[derive(Debug, Clone)]
pub struct AccountSettings {
    pub session_ttl: Duration,
    pub long_session_ttl: Duration,
    pub invite_ttl: Duration,
    /// Who must have a second factor unless an admin set it (see
    /// `factors::Requirement`): a person finishing an invite then has none
    /// and gets a session that can only enrol.
    pub second_factor_required: super::factors::Requirement,
}

/// Profile fields supplied at setup or invite completion.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub full_name: Option<String>,
    pub email: Option<String>,
}

/// The outcome of a successful login.
pub struct LoggedIn {
    pub user: User,
    pub session: Session,
    /// Signed in with an invite code: the client must complete sign-up.
    pub needs_onboarding: bool,
}

pub struct Status {
    pub configured: bool,
    /// More than one person has completed sign-up.
    pub multi_user: bool,
}

pub struct Accounts {
    store: Arc<dyn Store>,
    passwords: Passwords,
    settings: AccountSettings,
}

/// Lower-cased, validated username, or a 400-worthy explanation.
pub fn normalize_username(raw: &str) -> DomainResult<String> {
    let name = raw.trim().to_ascii_lowercase();
    if name.is_empty() {
        return Err(DomainError::Invalid("username is required".into()));
    }
    if name.len() > MAX_USERNAME_LEN {
        return Err(DomainError::Invalid(format!(
            "username must be at most {MAX_USERNAME_LEN} characters"
        )));
    }
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'));
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if !valid_chars || !starts_well {
        return Err(DomainError::Invalid(
            "username may contain only letters, digits, '.', '_' and '-', and must start with a letter or digit".into(),
        ));
    }
    Ok(name)
}

fn clean_full_name(raw: &str) -> DomainResult<String> {
    let name = raw.trim();
    if name.chars().count() > MAX_NAME_LEN {
        return Err(DomainError::Invalid(format!(
            "full_name must be at most {MAX_NAME_LEN} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(DomainError::Invalid(
            "full_name contains control characters".into(),
        ));
    }
    Ok(name.to_owned())
}

fn clean_email(raw: &str) -> DomainResult<String> {
    let email = raw.trim();
    if email.is_empty() {
        return Ok(String::new());
    }
    let plausible = email.len() <= MAX_EMAIL_LEN
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty());
    if !plausible {
        return Err(DomainError::Invalid("email is not a valid address".into()));
    }
    Ok(email.to_owned())
}

fn new_invite_code() -> String {
    format!("{:08}", rand::thread_rng().gen_range(0..100_000_000u32))
}

impl Accounts {
    pub fn new(store: Arc<dyn Store>, passwords: Passwords, settings: AccountSettings) -> Self {
        Self {
            store,
            passwords,
            settings,
        }
    }

    pub fn settings(&self) -> &AccountSettings {
        &self.settings
    }

    fn ttl(&self, long_lived: bool) -> Duration {
        if long_lived {
            self.settings.long_session_ttl
        } else {
            self.settings.session_ttl
        }
    }

    pub fn status(&self) -> DomainResult<Status> {
        let configured = !self
            .store
            .scan(keyspace::USER_PREFIX.as_bytes(), None, 1)?
            .is_empty();
        let multi_user = self
            .store
            .scan(keyspace::ACTIVE_PREFIX.as_bytes(), None, 2)?
            .len()
            > 1;
        Ok(Status {
            configured,
            multi_user,
        })
    }

    /// The user and the exact bytes read, for guarding a later write.
    fn load(&self, id: &str) -> DomainResult<Option<(User, Vec<u8>)>> {
        match self.store.get(keyspace::user(id).as_bytes())? {
            Some(bytes) => Ok(Some((decode(&bytes)?, bytes))),
            None => Ok(None),
        }
    }

    /// The account as stored now, shared with other requests until it changes.
    pub fn get(&self, id: &str) -> DomainResult<Option<Arc<User>>> {
        super::cached_record(self.store.as_ref(), &keyspace::user(id))
    }

    fn load_by_username(&self, username: &str) -> DomainResult<Option<(User, Vec<u8>)>> {
        let Ok(name) = normalize_username(username) else {
            return Ok(None);
        };
        match self.store.get(keyspace::username(&name).as_bytes())? {
            Some(id) => self.load(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    pub fn find(&self, username: &str) -> DomainResult<Option<User>> {
        Ok(self.load_by_username(username)?.map(|(user, _)| user))
    }

    fn require(&self, username: &str) -> DomainResult<(User, Vec<u8>)> {
        self.load_by_username(username)?
            .ok_or(DomainError::NotFound("user"))
    }

    pub fn list(&self) -> DomainResult<Vec<User>> {
        let mut users = self
            .store
            .scan(keyspace::USER_PREFIX.as_bytes(), None, usize::MAX)?
            .into_iter()
            .map(|(_, bytes)| decode::<User>(&bytes))
            .collect::<DomainResult<Vec<_>>>()?;
        users.sort_by(|a, b| {
            (a.created_at.is_none(), a.created_at, &a.username).cmp(&(
                b.created_at.is_none(),
                b.created_at,
                &b.username,
            ))
        });
        Ok(users)
    }

    /// Write `user` (and its indexes) into `tx`, guarded by the bytes it was
    /// read as.
    fn stage_update(tx: &mut Transaction, user: &User, read_as: Vec<u8>) -> DomainResult<()> {
        tx.expect(keyspace::user(&user.id), Expect::Equals(read_as));
        Self::stage_write(tx, user)
    }

    fn stage_write(tx: &mut Transaction, user: &User) -> DomainResult<()> {
        tx.put(keyspace::user(&user.id), encode(user)?);
        tx.put(
            keyspace::username(&user.username),
            user.id.as_bytes().to_vec(),
        );
        if user.is_admin {
            tx.put(keyspace::admin(&user.id), Vec::new());
        } else {
            tx.delete(keyspace::admin(&user.id));
        }
        if user.pending() {
            tx.delete(keyspace::active(&user.id));
        } else {
            tx.put(keyspace::active(&user.id), Vec::new());
        }
        Ok(())
    }

    /// First-run setup: creates the first user, an admin, and signs them in.
    /// Refused once any user exists.
    pub async fn setup(
        &self,
        username: &str,
        password: String,
        profile: Profile,
        long_lived: bool,
    ) -> DomainResult<LoggedIn> {
        if self.status()?.configured {
            return Err(DomainError::Conflict("already configured".into()));
        }
        let username = normalize_username(username)?;
        check_new_password(&password)?;
        let full_name = clean_full_name(profile.full_name.as_deref().unwrap_or(""))?;
        let email = clean_email(profile.email.as_deref().unwrap_or(""))?;
        let hash = self.passwords.hash(password).await?;
        let at = now();
        let user = User {
            id: random_id(8),
            username,
            full_name,
            email,
            is_admin: true,
            password_hash: Some(hash),
            invite: None,
            created_at: Some(at),
            last_login_at: Some(at),
        };
        let session = Session::new(&user.id, self.ttl(long_lived), long_lived);
        let mut tx = Transaction::durable();
        // The marker makes two racing setups impossible: only one can create it.
        tx.expect(SETUP_MARKER, Expect::Absent)
            .put(SETUP_MARKER, user.id.as_bytes().to_vec())
            .expect(keyspace::username(&user.username), Expect::Absent);
        Self::stage_write(&mut tx, &user)?;
        session.write_into(&mut tx)?;
        match super::commit(&self.store, tx).await {
            Err(DomainError::Store(crate::store::StoreError::Conflict)) => {
                Err(DomainError::Conflict("already configured".into()))
            }
            other => other,
        }?;
        Ok(LoggedIn {
            user,
            session,
            needs_onboarding: false,
        })
    }

    /// Check a username and password (or, for a pending user, invite code) and
    /// open a session. Every failure looks the same and costs one argon2 run.
    /// With a second factor (or one required and missing) the session opens
    /// halfway, at the stage `factors` says.
    pub async fn login(
        &self,
        username: &str,
        password: String,
        long_lived: bool,
        factors: &super::factors::Factors,
    ) -> DomainResult<LoggedIn> {
        let found = self.load_by_username(username)?;
        let Some((user, read_as)) = found else {
            self.passwords.verify(password, None).await?;
            return Err(DomainError::InvalidCredentials);
        };
        if user.pending() {
            if !self.invite_matches(user.invite.as_ref(), &password).await? {
                return Err(DomainError::InvalidCredentials);
            }
            let session = self.open_invite_session(&user, read_as, long_lived).await?;
            return Ok(LoggedIn {
                user,
                session,
                needs_onboarding: true,
            });
        }
        let verified_hash = user.password_hash.clone();
        let upgrade = match self
            .passwords
            .verify(password.clone(), verified_hash.clone())
            .await?
        {
            Verification::NoMatch => return Err(DomainError::InvalidCredentials),
            Verification::Match { upgrade: true } => Some(self.passwords.hash(password).await?),
            Verification::Match { upgrade: false } => None,
        };
        let (user, session) = self
            .open_session_checked(&user.id, verified_hash, upgrade, long_lived, factors)
            .await?;
        Ok(LoggedIn {
            user,
            session,
            needs_onboarding: false,
        })
    }

    /// Open a session for a user whose password hash was `verified_hash` when
    /// checked: if it changed since (reset, password change) the login fails.
    async fn open_session_checked(
        &self,
        user_id: &str,
        verified_hash: Option<String>,
        upgrade: Option<String>,
        long_lived: bool,
        factors: &super::factors::Factors,
    ) -> DomainResult<(User, Session)> {
        let ttl = self.ttl(long_lived);
        retry(&self.store, || {
            let (mut user, read_as) = self.load(user_id)?.ok_or(DomainError::InvalidCredentials)?;
            if user.password_hash != verified_hash {
                return Err(DomainError::InvalidCredentials);
            }
            if let Some(hash) = &upgrade {
                user.password_hash = Some(hash.clone());
            }
            user.last_login_at = Some(now());
            let stage = factors.stage_after_password(&user.id, user.is_admin)?;
            // A halfway session is for typing one code: it lives minutes,
            // not the days of the session the code will open.
            let ttl = if stage == sessions::Stage::SecondFactor {
                ttl.min(super::factors::SECOND_STEP_TTL)
            } else {
                ttl
            };
            let session = Session::new(&user.id, ttl, long_lived).at_stage(stage);
            let mut tx = Transaction::durable();
            Self::stage_update(&mut tx, &user, read_as)?;
            session.write_into(&mut tx)?;
            Ok((tx, (user, session)))
        })
        .await
    }

    /// Open a session for a pending user, guarded by the record as verified:
    /// a reset or completion in between makes the code stale.
    async fn open_invite_session(
        &self,
        user: &User,
        read_as: Vec<u8>,
        long_lived: bool,
    ) -> DomainResult<Session> {
        let ttl = self.ttl(long_lived);
        let expected = read_as;
        let session = Session::new(&user.id, ttl, long_lived);
        let mut tx = Transaction::durable();
        tx.expect(keyspace::user(&user.id), Expect::Equals(expected));
        session.write_into(&mut tx)?;
        match super::commit(&self.store, tx).await {
            Err(DomainError::Store(crate::store::StoreError::Conflict)) => {
                Err(DomainError::InvalidCredentials)
            }
            other => other,
        }?;
        Ok(session)
    }

    /// Redeem an invite: set the password and profile, end the invite-phase
    /// sessions and open a fresh one. The code works once.
    pub async fn complete_invite(
        &self,
        username: &str,
        code: &str,
        password: String,
        profile: Profile,
        long_lived: bool,
    ) -> DomainResult<LoggedIn> {
        check_new_password(&password)?;
        let full_name = profile
            .full_name
            .as_deref()
            .map(clean_full_name)
            .transpose()?;
        let email = profile.email.as_deref().map(clean_email).transpose()?;
        let found = self.load_by_username(username)?;
        let invite = found.as_ref().and_then(|(u, _)| u.invite.clone());
        let valid = self.invite_matches(invite.as_ref(), code).await?;
        // Hash regardless, so a wrong code costs what a right one does.
        let hash = self.passwords.hash(password).await?;
        let (Some((user, _)), Some(invite), true) = (found, invite, valid) else {
            return Err(DomainError::Invalid(
                "invalid or expired invite code".into(),
            ));
        };
        self.finish_invite(&user, invite, hash, full_name, email, long_lived)
            .await
    }

    /// Redeem the invite of a person signed in with its code (the
    /// invite-phase session stands for the code): the onboarding page.
    pub async fn complete_pending(
        &self,
        user_id: &str,
        password: String,
        profile: Profile,
        long_lived: bool,
    ) -> DomainResult<LoggedIn> {
        check_new_password(&password)?;
        let full_name = profile
            .full_name
            .as_deref()
            .map(clean_full_name)
            .transpose()?;
        let email = profile.email.as_deref().map(clean_email).transpose()?;
        let invalid = || DomainError::Invalid("invalid or expired invite code".into());
        let (user, _) = self.load(user_id)?.ok_or_else(invalid)?;
        let invite = user
            .invite
            .clone()
            .filter(|inv| user.pending() && inv.expires_at > now())
            .ok_or_else(invalid)?;
        let hash = self.passwords.hash(password).await?;
        self.finish_invite(&user, invite, hash, full_name, email, long_lived)
            .await
    }

    async fn finish_invite(
        &self,
        user: &User,
        invite: Invite,
        hash: String,
        full_name: Option<String>,
        email: Option<String>,
        long_lived: bool,
    ) -> DomainResult<LoggedIn> {
        let ttl = self.ttl(long_lived);
        let (user, session) = retry(&self.store, || {
            let (mut current, read_as) = self.load(&user.id)?.ok_or(DomainError::Invalid(
                "invalid or expired invite code".into(),
            ))?;
            // The invite must be the one verified above, still unredeemed.
            if current.invite.as_ref() != Some(&invite) {
                return Err(DomainError::Invalid(
                    "invalid or expired invite code".into(),
                ));
            }
            let at = now();
            current.password_hash = Some(hash.clone());
            current.invite = None;
            current.created_at.get_or_insert(at);
            current.last_login_at = Some(at);
            if let Some(name) = &full_name {
                current.full_name = name.clone();
            }
            if let Some(email) = &email {
                current.email = email.clone();
            }
            let must_enrol = super::factors::requirement(
                self.store.as_ref(),
                self.settings.second_factor_required,
            )?
            .applies_to(current.is_admin);
            let stage = if must_enrol {
                sessions::Stage::Enrol
            } else {
                sessions::Stage::Complete
            };
            let session = Session::new(&current.id, ttl, long_lived).at_stage(stage);
            let mut tx = Transaction::durable();
            sessions::revoke_all_into(self.store.as_ref(), &mut tx, &current.id, None)?;
            Self::stage_update(&mut tx, &current, read_as)?;
            session.write_into(&mut tx)?;
            Ok((tx, (current, session)))
        })
        .await?;
        Ok(LoggedIn {
            user,
            session,
            needs_onboarding: false,
        })
    }

    /// Whether `given` is the code of an unexpired `invite`. Costs one argon2
    /// run whether or not there is an invite.
    async fn invite_matches(&self, invite: Option<&Invite>, given: &str) -> DomainResult<bool> {
        let digest = invite
            .filter(|inv| inv.expires_at > now())
            .map(|inv| inv.digest.clone());
        let verdict = self
            .passwords
            .verify(given.trim().to_owned(), digest)
            .await?;
        Ok(matches!(verdict, Verification::Match { .. }))
    }

    /// Admin: create a pending user; returns it with its invite code, which
    /// is not kept and cannot be shown again.
    pub async fn invite(&self, actor: &User, username: &str) -> DomainResult<(User, String)> {
        let username = normalize_username(username)?;
        let at = now();
        let code = new_invite_code();
        let digest = self.passwords.hash(code.clone()).await?;
        let user = User {
            id: random_id(8),
            username: username.clone(),
            full_name: String::new(),
            email: String::new(),
            is_admin: false,
            password_hash: None,
            invite: Some(Invite {
                digest,
                expires_at: at.saturating_add(self.settings.invite_ttl.as_secs() as i64),
                invited_by: actor.username.clone(),
                invited_at: at,
            }),
            created_at: None,
            last_login_at: None,
        };
        let mut tx = Transaction::durable();
        tx.expect(keyspace::username(&username), Expect::Absent)
            .expect(keyspace::admin(&actor.id), Expect::Present);
        Self::stage_write(&mut tx, &user)?;
        match super::commit(&self.store, tx).await {
            Err(DomainError::Store(crate::store::StoreError::Conflict)) => Err(
                DomainError::Conflict(format!("user {username} already exists")),
            ),
            other => other,
        }?;
        Ok((user, code))
    }

    /// Admin: remove the password, issue a new invite code and end every
    /// session; returns the user with the code (shown once, like an invite's).
    /// Their second factors go too (whoever lost their password has often
    /// lost their phone with it); the `bool` says whether they had any.
    pub async fn reset(&self, actor: &User, username: &str) -> DomainResult<(User, String, bool)> {
        let (target, _) = self.require(username)?;
        let expires = now().saturating_add(self.settings.invite_ttl.as_secs() as i64);
        let code = new_invite_code();
        let digest = self.passwords.hash(code.clone()).await?;
        let user = retry(&self.store, || {
            let (mut user, read_as) = self
                .load(&target.id)?
                .ok_or(DomainError::NotFound("user"))?;
            user.password_hash = None;
            user.invite = Some(Invite {
                digest: digest.clone(),
                expires_at: expires,
                invited_by: actor.username.clone(),
                invited_at: now(),
            });
            let mut tx = Transaction::durable();
            tx.expect(keyspace::admin(&actor.id), Expect::Present);
            sessions::revoke_all_into(self.store.as_ref(), &mut tx, &user.id, None)?;
            let had_factors = super::factors::stage_clear(self.store.as_ref(), &mut tx, &user.id)?;
            Self::stage_update(&mut tx, &user, read_as)?;
            Ok((tx, (user, had_factors)))
        })
        .await?;
        Ok((user.0, code, user.1))
    }

    /// Admin: delete a user and end their sessions. Not oneself; never the last
    /// admin (the actor is an admin, so deleting another admin leaves one).
    /// `stage_more` adds, to the same transaction, whatever else goes with the
    /// user (their grants, delegations, agents, an audit record).
    pub async fn delete(
        &self,
        actor: &User,
        username: &str,
        stage_more: impl Fn(&User, &mut Transaction) -> DomainResult<()>,
    ) -> DomainResult<User> {
        let (target, _) = self.require(username)?;
        if target.id == actor.id {
            return Err(DomainError::Forbidden(
                "you cannot delete your own account".into(),
            ));
        }
        retry(&self.store, || {
            let (user, read_as) = self
                .load(&target.id)?
                .ok_or(DomainError::NotFound("user"))?;
            let mut tx = Transaction::durable();
            tx.expect(keyspace::user(&user.id), Expect::Equals(read_as))
                .expect(keyspace::admin(&actor.id), Expect::Present)
                .delete(keyspace::user(&user.id))
                .delete(keyspace::username(&user.username))
                .delete(keyspace::admin(&user.id))
                .delete(keyspace::active(&user.id));
            sessions::revoke_all_into(self.store.as_ref(), &mut tx, &user.id, None)?;
            stage_more(&user, &mut tx)?;
            Ok((tx, user))
        })
        .await
    }

    /// Admin: grant or remove admin rights; the last admin cannot lose them.
    pub async fn set_admin(
        &self,
        actor: &User,
        username: &str,
        is_admin: bool,
    ) -> DomainResult<User> {
        let (target, _) = self.require(username)?;
        retry(&self.store, || {
            let (mut user, read_as) = self
                .load(&target.id)?
                .ok_or(DomainError::NotFound("user"))?;
            let mut tx = Transaction::durable();
            tx.expect(keyspace::admin(&actor.id), Expect::Present);
            if user.is_admin && !is_admin {
                // Another admin must exist, and must still exist at commit.
                let other = self
                    .store
                    .scan(keyspace::ADMIN_PREFIX.as_bytes(), None, 2)?
                    .into_iter()
                    .map(|(key, _)| key)
                    .find(|key| key != keyspace::admin(&user.id).as_bytes());
                match other {
                    Some(key) => {
                        tx.expect(key, Expect::Present);
                    }
                    None => {
                        return Err(DomainError::Conflict("cannot remove the last admin".into()))
                    }
                }
            }
            user.is_admin = is_admin;
            Self::stage_update(&mut tx, &user, read_as)?;
            Ok((tx, user))
        })
        .await
    }

    /// Self: change full name and/or email.
    pub async fn update_profile(&self, user_id: &str, profile: Profile) -> DomainResult<User> {
        let full_name = profile
            .full_name
            .as_deref()
            .map(clean_full_name)
            .transpose()?;
        let email = profile.email.as_deref().map(clean_email).transpose()?;
        retry(&self.store, || {
            let (mut user, read_as) = self.load(user_id)?.ok_or(DomainError::NotFound("user"))?;
            if let Some(name) = &full_name {
                user.full_name = name.clone();
            }
            if let Some(email) = &email {
                user.email = email.clone();
            }
            let mut tx = Transaction::new();
            Self::stage_update(&mut tx, &user, read_as)?;
            Ok((tx, user))
        })
        .await
    }

    /// Self: change password, given the current one; every other session of
    /// the user ends.
    /// Whether `password` is the user's current password (fresh proof for an
    /// operation that needs more than a session, such as a backup).
    pub async fn check_password(&self, user_id: &str, password: String) -> DomainResult<bool> {
        let hash = self.get(user_id)?.and_then(|u| u.password_hash.clone());
        let verified = self.passwords.verify(password, hash).await?;
        Ok(verified != Verification::NoMatch)
    }

    pub async fn change_password(
        &self,
        user_id: &str,
        current: String,
        new: String,
        keep_session: &str,
    ) -> DomainResult<usize> {
        check_new_password(&new)?;
        let user = self.get(user_id)?.ok_or(DomainError::NotFound("user"))?;
        let verified_hash = user.password_hash.clone();
        if self
            .passwords
            .verify(current, verified_hash.clone())
            .await?
            == Verification::NoMatch
        {
            return Err(DomainError::WrongPassword);
        }
        let hash = self.passwords.hash(new).await?;
        retry(&self.store, || {
            let (mut user, read_as) = self.load(user_id)?.ok_or(DomainError::NotFound("user"))?;
            if user.password_hash != verified_hash {
                return Err(DomainError::Conflict(
                    "the password was changed concurrently; try again".into(),
                ));
            }
            user.password_hash = Some(hash.clone());
            let mut tx = Transaction::durable();
            let revoked = sessions::revoke_all_into(
                self.store.as_ref(),
                &mut tx,
                &user.id,
                Some(keep_session),
            )?;
            Self::stage_update(&mut tx, &user, read_as)?;
            Ok((tx, revoked))
        })
        .await
    }
}
