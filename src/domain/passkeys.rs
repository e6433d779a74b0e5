//! Passkeys (WebAuthn, issue 14): registering them, signing in with one
//! alone (a discoverable credential names the account), and using one as
//! the second step or a step-up. The cryptography and the ceremony checks
//! (challenge, origin, relying party id, user verification, signature,
//! counter) are `webauthn-rs`'s; this module keeps the records.
//!
//! A person's passkeys live in their factor record (`factors/<user>`, see
//! `domain::factors`), so registering, using and removing one are guarded
//! writes of that record like every other factor change, and clearing a
//! person's factors clears their passkeys. `pkcred/<credential id>` maps a
//! credential to its account, for discoverable sign-in, and is written and
//! deleted in the same transactions.
//!
//! A ceremony's state (the challenge a browser must sign) is kept here in
//! memory, never handed to the client: single use, for
//! [`CEREMONY_TTL`], at most [`MAX_CEREMONIES`] at once (the oldest give
//! way). A restart forgets ceremonies in flight; the person presses the
//! button again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use webauthn_rs::prelude::{
    DiscoverableAuthentication, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, Url, Uuid, Webauthn, WebauthnBuilder,
    WebauthnError,
};

use super::audit::AuditEvent;
use super::factors::{
    load, new_recovery_codes, recovery_digest, stage_session_update, FactorSet, RecoveryCode,
};
use super::sessions::{Method, Session, Stage};
use super::{encode, keyspace, random_id, retry, DomainError, DomainResult};
use crate::store::{Expect, Store, Transaction};

/// How long a browser has between asking for a challenge and answering
/// it (a person finding their security key, typing a PIN).
pub const CEREMONY_TTL: Duration = Duration::from_secs(5 * 60);
/// Ceremonies in flight at once; past it the oldest is forgotten, so
/// anonymous sign-in starts cannot grow memory without bound.
pub const MAX_CEREMONIES: usize = 10_000;
/// Passkeys one person may register.
pub const MAX_PASSKEYS: usize = 20;
/// Longest passkey name, in characters.
const MAX_NAME: usize = 64;

/// One registered passkey.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredPasskey {
    /// Ours (the factor id in `GET /auth/factors`), not the credential id.
    pub id: String,
    pub name: String,
    pub created_at: i64,
    #[serde(default)]
    pub last_used_at: Option<i64>,
    /// The credential as webauthn-rs keeps it: its id, public key,
    /// signature counter and backup flags (nothing secret).
    pub credential: Passkey,
}

impl StoredPasskey {
    /// The credential id, base64url (as the index keys it).
    pub fn credential_id(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.credential.cred_id().as_slice())
    }
}

// `Passkey` has no `PartialEq`; the factor record compares whole (a record
// equal to the empty one is deleted), so compare what is stored.
impl PartialEq for StoredPasskey {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.name == other.name
            && self.created_at == other.created_at
            && self.last_used_at == other.last_used_at
            && serde_json::to_value(&self.credential).ok()
                == serde_json::to_value(&other.credential).ok()
    }
}

enum Ceremony {
    /// Registering a passkey at one session.
    Register {
        user: String,
        session: String,
        handle: Uuid,
        state: PasskeyRegistration,
    },
    /// Signing in with a passkey alone: nobody is known yet.
    SignIn { state: DiscoverableAuthentication },
    /// The second step or a step-up at one session.
    Verify {
        user: String,
        session: String,
        state: PasskeyAuthentication,
    },
}

struct Pending<T = Ceremony> {
    expires: Instant,
    ceremony: T,
}

/// A started ceremony: its id (sent back with the answer) and the options
/// for `navigator.credentials.create()` or `.get()` (`{"publicKey": ...}`).
pub struct Started {
    pub ceremony: String,
    pub options: Value,
}

/// A verified passkey sign-in or second step.
pub struct SignedIn {
    pub user_id: String,
    pub session: Session,
    /// The name of the passkey used.
    pub passkey: String,
}

pub struct Passkeys {
    store: Arc<dyn Store>,
    webauthn: Webauthn,
    origin: String,
    ceremonies: Mutex<InFlight>,
}

/// Ceremonies in flight, and their ids in the order they started (so in
/// the order they expire: every ceremony lives as long). Making room takes
/// the oldest off the front instead of searching them all, so a flood of
/// starts costs each request the same small work.
struct InFlight<T = Ceremony> {
    by_id: HashMap<String, Pending<T>>,
    /// Started ids, oldest first; ids already taken stay until they reach
    /// the front or the queue is compacted.
    order: std::collections::VecDeque<String>,
}

impl<T> Default for InFlight<T> {
    fn default() -> Self {
        Self {
            by_id: HashMap::new(),
            order: Default::default(),
        }
    }
}

impl<T> InFlight<T> {
    fn make_room(&mut self, now: Instant) {
        // What has expired or been taken leaves from the front.
        while let Some(front) = self.order.front() {
            match self.by_id.get(front) {
                Some(p) if p.expires > now && self.by_id.len() < MAX_CEREMONIES => break,
                _ => {
                    if let Some(id) = self.order.pop_front() {
                        self.by_id.remove(&id);
                    }
                }
            }
        }
        // Ids taken in the middle would pile up behind a long-lived front:
        // compact once they outnumber the ceremonies, rarely enough to
        // cost each start O(1) on average.
        if self.order.len() > 2 * MAX_CEREMONIES.max(self.by_id.len()) {
            let by_id = &self.by_id;
            self.order.retain(|id| by_id.contains_key(id));
        }
    }
}

impl Passkeys {
    /// The relying party of `public_url` (`--public-url`): its host is the
    /// relying party id, the URL's origin the only origin accepted.
    pub fn new(store: Arc<dyn Store>, public_url: &str) -> DomainResult<Self> {
        let url = Url::parse(public_url)
            .map_err(|e| DomainError::Invalid(format!("--public-url {public_url}: {e}")))?;
        let host = url.domain().ok_or_else(|| {
            DomainError::Invalid(format!(
                "--public-url {public_url}: passkeys need a host name (such as localhost), not an IP address"
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(DomainError::Invalid(format!(
                "--public-url {public_url}: must be http:// or https://"
            )));
        }
        let webauthn = WebauthnBuilder::new(host, &url)
            .and_then(|b| b.rp_name("tessera").build())
            .map_err(|e| DomainError::Invalid(format!("--public-url {public_url}: {e}")))?;
        Ok(Self {
            store,
            webauthn,
            origin: url.origin().ascii_serialization(),
            ceremonies: Mutex::new(InFlight::default()),
        })
    }

    /// The one origin passkeys are accepted from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    fn remember(&self, ceremony: Ceremony) -> DomainResult<String> {
        let id = random_id(16);
        let now = Instant::now();
        let mut pending = self
            .ceremonies
            .lock()
            .map_err(|_| DomainError::Internal("the passkey ceremonies lock is poisoned".into()))?;
        pending.make_room(now);
        pending.by_id.insert(
            id.clone(),
            Pending {
                expires: now + CEREMONY_TTL,
                ceremony,
            },
        );
        pending.order.push_back(id.clone());
        Ok(id)
    }

    /// Take a ceremony out (it is used once, whatever the outcome).
    fn take(&self, id: &str) -> DomainResult<Ceremony> {
        let mut pending = self
            .ceremonies
            .lock()
            .map_err(|_| DomainError::Internal("the passkey ceremonies lock is poisoned".into()))?;
        match pending.by_id.remove(id) {
            Some(p) if p.expires > Instant::now() => Ok(p.ceremony),
            _ => Err(expired()),
        }
    }

    /// How many ceremonies are in flight (tests).
    pub fn in_flight(&self) -> usize {
        self.ceremonies.lock().map_or(0, |p| p.by_id.len())
    }

    /// Start registering a passkey for the person at `session`.
    pub fn begin_registration(
        &self,
        session: &Session,
        username: &str,
        display_name: &str,
    ) -> DomainResult<Started> {
        let user = session.user_id.as_str();
        let (set, _) = load(self.store.as_ref(), user)?;
        if set.passkeys.len() >= MAX_PASSKEYS {
            return Err(DomainError::Conflict(format!(
                "you have {MAX_PASSKEYS} passkeys already; remove one first"
            )));
        }
        let handle = match &set.passkey_handle {
            Some(h) => Uuid::parse_str(h)
                .map_err(|_| DomainError::Internal("a passkey user handle is damaged".into()))?,
            None => Uuid::new_v4(),
        };
        let exclude = set
            .passkeys
            .iter()
            .map(|p| p.credential.cred_id().clone())
            .collect::<Vec<_>>();
        let display = if display_name.trim().is_empty() {
            username
        } else {
            display_name
        };
        let (options, state) = self
            .webauthn
            .start_passkey_registration(handle, username, display, Some(exclude))
            .map_err(|e| DomainError::Internal(format!("passkey registration: {e}")))?;
        let mut options = serde_json::to_value(options)
            .map_err(|e| DomainError::Internal(format!("passkey options: {e}")))?;
        // webauthn-rs asks for a non-discoverable credential; signing in
        // without a username needs the authenticator to keep it (a
        // resident key). The library checks the answer the same either
        // way.
        if let Some(selection) = options
            .pointer_mut("/publicKey/authenticatorSelection")
            .and_then(Value::as_object_mut)
        {
            selection.insert("residentKey".into(), "required".into());
            selection.insert("requireResidentKey".into(), true.into());
        }
        let ceremony = self.remember(Ceremony::Register {
            user: user.to_owned(),
            session: session.id.clone(),
            handle,
            state,
        })?;
        Ok(Started { ceremony, options })
    }

    /// Finish registering: check the browser's answer, store the passkey
    /// named `name`, and count `session` as having just verified a factor
    /// (the person just used it; a session that had to enrol is complete).
    /// A person without recovery codes gets ten with it, returned to be
    /// shown once, as TOTP enrolment gives them: a lost passkey must not
    /// lock its owner out when it was their only factor.
    pub async fn finish_registration(
        &self,
        session: &Session,
        ceremony: &str,
        name: &str,
        credential: &RegisterPublicKeyCredential,
        at: i64,
        event: AuditEvent,
    ) -> DomainResult<(StoredPasskey, Vec<String>)> {
        let name = clean_name(name)?;
        let (handle, state) = match self.take(ceremony)? {
            Ceremony::Register {
                user,
                session: sid,
                handle,
                state,
            } if user == session.user_id && sid == session.id => (handle, state),
            _ => return Err(expired()),
        };
        let passkey = self
            .webauthn
            .finish_passkey_registration(credential, &state)
            .map_err(|e| self.refused(e, "the passkey was not registered"))?;
        let stored = StoredPasskey {
            id: random_id(8),
            name,
            created_at: at,
            last_used_at: None,
            credential: passkey,
        };
        let user = session.user_id.as_str();
        let index = keyspace::passkey_credential(&stored.credential_id());
        retry(&self.store, || {
            let (mut set, read_as) = load(self.store.as_ref(), user)?;
            match &set.passkey_handle {
                Some(h) if *h != handle.to_string() => {
                    return Err(DomainError::Conflict(
                        "your passkeys changed meanwhile; register again".into(),
                    ))
                }
                _ => set.passkey_handle = Some(handle.to_string()),
            }
            if set.passkeys.len() >= MAX_PASSKEYS {
                return Err(DomainError::Conflict(format!(
                    "you have {MAX_PASSKEYS} passkeys already; remove one first"
                )));
            }
            if self.store.get(index.as_bytes())?.is_some() {
                return Err(DomainError::Conflict(
                    "this passkey is already registered".into(),
                ));
            }
            set.passkeys.push(stored.clone());
            let codes = if set.recovery.is_empty() {
                let codes = new_recovery_codes();
                set.recovery = codes
                    .iter()
                    .map(|c| RecoveryCode {
                        digest: recovery_digest(c),
                        used_at: None,
                    })
                    .collect();
                codes
            } else {
                Vec::new()
            };
            let mut tx = Transaction::durable();
            tx.expect(keyspace::factors(user), read_as)
                .put(keyspace::factors(user), encode(&set)?)
                .expect(index.clone(), Expect::Absent)
                .put(index.clone(), user.as_bytes().to_vec());
            let mut upgraded = session.clone();
            upgraded.factor_at = Some(at);
            if upgraded.stage == Stage::Enrol {
                upgraded.stage = Stage::Complete;
            }
            stage_session_update(&mut tx, session, &upgraded)?;
            event.record_into(&mut tx)?;
            Ok((tx, codes))
        })
        .await
        .map(|codes| (stored, codes))
    }

    /// Start a sign-in with a passkey alone: a challenge for any passkey of
    /// this site the authenticator holds.
    pub fn begin_sign_in(&self) -> DomainResult<Started> {
        let (options, state) = self
            .webauthn
            .start_discoverable_authentication()
            .map_err(|e| DomainError::Internal(format!("passkey sign-in: {e}")))?;
        let mut options = serde_json::to_value(options)
            .map_err(|e| DomainError::Internal(format!("passkey options: {e}")))?;
        // The library asks for conditional mediation (autofill); the pages
        // offer a button instead, which a plain request serves.
        if let Some(object) = options.as_object_mut() {
            object.remove("mediation");
        }
        let ceremony = self.remember(Ceremony::SignIn { state })?;
        Ok(Started { ceremony, options })
    }

    /// Whose passkey `credential` says it is, before anything is checked
    /// (for rate limits and audit); `None` when no account has it.
    pub fn claimed_user(&self, credential: &PublicKeyCredential) -> DomainResult<Option<String>> {
        let id = URL_SAFE_NO_PAD.encode(credential.get_credential_id());
        Ok(self
            .store
            .get(keyspace::passkey_credential(&id).as_bytes())?
            .map(|user| String::from_utf8_lossy(&user).into_owned()))
    }

    /// Finish a sign-in with a passkey alone: check the answer against the
    /// passkey it names and open a complete session established by
    /// passkey, with a fresh factor (a passkey with user verification is
    /// two factors in one). Anything wrong is `InvalidCredentials`, but an
    /// answer made for another origin, which says so.
    pub async fn finish_sign_in(
        &self,
        ceremony: &str,
        credential: &PublicKeyCredential,
        ttl: Duration,
        long_lived: bool,
        at: i64,
    ) -> DomainResult<SignedIn> {
        let Ceremony::SignIn { state } = self.take(ceremony)? else {
            return Err(expired());
        };
        let (handle, _) = self
            .webauthn
            .identify_discoverable_authentication(credential)
            .map_err(|_| DomainError::InvalidCredentials)?;
        let user = self
            .claimed_user(credential)?
            .ok_or(DomainError::InvalidCredentials)?;
        let (set, _) = load(self.store.as_ref(), &user)?;
        if set.passkey_handle.as_deref() != Some(handle.to_string().as_str()) {
            return Err(DomainError::InvalidCredentials);
        }
        let stored = find(&set, credential)?;
        let result = self
            .webauthn
            .finish_discoverable_authentication_v2(credential, state, &stored.credential)
            .map_err(|e| self.refused(e, ""))?;
        let mut session = Session::new(&user, ttl, long_lived);
        session.method = Method::Passkey;
        session.factor_at = Some(at);
        let name = self
            .record_use(&user, &stored.id, &result, at, |tx| {
                // The account as it is now, guarded: one reset meanwhile
                // (no password, an invite pending) signs nobody in.
                let key = keyspace::user(&user);
                let bytes = self
                    .store
                    .get(key.as_bytes())?
                    .ok_or(DomainError::InvalidCredentials)?;
                let mut account: super::users::User = super::decode(&bytes)?;
                if account.pending() {
                    return Err(DomainError::InvalidCredentials);
                }
                account.last_login_at = Some(at);
                tx.expect(key.clone(), Expect::Equals(bytes))
                    .put(key, encode(&account)?);
                session.write_into(tx)
            })
            .await?;
        Ok(SignedIn {
            user_id: user,
            session,
            passkey: name,
        })
    }

    /// Start the second step or a step-up at `session`: a challenge for the
    /// person's own passkeys.
    pub fn begin_verify(&self, session: &Session) -> DomainResult<Started> {
        let (set, _) = load(self.store.as_ref(), &session.user_id)?;
        if set.passkeys.is_empty() {
            return Err(DomainError::Invalid("you have no passkey".into()));
        }
        let creds: Vec<Passkey> = set.passkeys.iter().map(|p| p.credential.clone()).collect();
        let (options, state) = self
            .webauthn
            .start_passkey_authentication(&creds)
            .map_err(|e| DomainError::Internal(format!("passkey check: {e}")))?;
        let options = serde_json::to_value(options)
            .map_err(|e| DomainError::Internal(format!("passkey options: {e}")))?;
        let ceremony = self.remember(Ceremony::Verify {
            user: session.user_id.clone(),
            session: session.id.clone(),
            state,
        })?;
        Ok(Started { ceremony, options })
    }

    /// Finish the second step or a step-up: as `Factors::verify` does for
    /// a code, replace a halfway session with a complete one established by
    /// passkey, or count a complete one as having just verified a factor.
    pub async fn finish_verify(
        &self,
        session: &Session,
        ceremony: &str,
        credential: &PublicKeyCredential,
        full_ttl: Duration,
        at: i64,
    ) -> DomainResult<SignedIn> {
        let state = match self.take(ceremony)? {
            Ceremony::Verify {
                user,
                session: sid,
                state,
            } if user == session.user_id && sid == session.id => state,
            _ => return Err(expired()),
        };
        let user = session.user_id.clone();
        let (set, _) = load(self.store.as_ref(), &user)?;
        let stored = find(&set, credential)?;
        let result = self
            .webauthn
            .finish_passkey_authentication(credential, &state)
            .map_err(|e| self.refused(e, ""))?;
        let next = match session.stage {
            Stage::SecondFactor => {
                // A new session id once fully signed in, as with a code.
                let mut fresh = Session::new(&user, full_ttl, session.long_lived);
                fresh.method = Method::Passkey;
                fresh.factor_at = Some(at);
                fresh
            }
            Stage::Complete | Stage::Enrol => {
                let mut upgraded = session.clone();
                upgraded.factor_at = Some(at);
                upgraded
            }
        };
        let name = self
            .record_use(&user, &stored.id, &result, at, |tx| {
                if session.stage == Stage::SecondFactor {
                    tx.expect(keyspace::session(&session.id), Expect::Present);
                    tx.delete(keyspace::session(&session.id));
                    tx.delete(keyspace::user_session(&user, &session.id));
                    next.write_into(tx)
                } else {
                    stage_session_update(tx, session, &next)
                }
            })
            .await?;
        Ok(SignedIn {
            user_id: user,
            session: next,
            passkey: name,
        })
    }

    /// Note a passkey's use (last used, the counter the library returned)
    /// in one guarded write with what `more` adds; the passkey's name. A
    /// passkey removed meanwhile refuses the sign-in.
    async fn record_use(
        &self,
        user: &str,
        id: &str,
        result: &webauthn_rs::prelude::AuthenticationResult,
        at: i64,
        more: impl Fn(&mut Transaction) -> DomainResult<()>,
    ) -> DomainResult<String> {
        retry(&self.store, || {
            let (mut set, read_as) = load(self.store.as_ref(), user)?;
            let passkey = set
                .passkeys
                .iter_mut()
                .find(|p| p.id == id)
                .ok_or(DomainError::InvalidCredentials)?;
            passkey.credential.update_credential(result);
            passkey.last_used_at = Some(at);
            let name = passkey.name.clone();
            let mut tx = Transaction::durable();
            tx.expect(keyspace::factors(user), read_as)
                .put(keyspace::factors(user), encode(&set)?);
            more(&mut tx)?;
            Ok((tx, name))
        })
        .await
    }

    /// A library refusal in words: an answer made for another origin or
    /// relying party says which one counts here; the rest of a sign-in's
    /// refusals are wrong credentials, a registration's a bad request.
    fn refused(&self, e: WebauthnError, registering: &str) -> DomainError {
        match e {
            WebauthnError::InvalidRPOrigin | WebauthnError::InvalidRPIDHash => {
                DomainError::Invalid(format!(
                    "the passkey answer was made for another site: passkeys here work only at {}",
                    self.origin
                ))
            }
            _ if !registering.is_empty() => DomainError::Invalid(format!("{registering}: {e}")),
            _ => DomainError::InvalidCredentials,
        }
    }
}

/// The stored passkey an answer names.
fn find<'a>(
    set: &'a FactorSet,
    credential: &PublicKeyCredential,
) -> DomainResult<&'a StoredPasskey> {
    set.passkeys
        .iter()
        .find(|p| p.credential.cred_id().as_slice() == credential.get_credential_id())
        .ok_or(DomainError::InvalidCredentials)
}

fn expired() -> DomainError {
    DomainError::Invalid("this passkey request is unknown, used or expired: start again".into())
}

/// A passkey's name: trimmed, "Passkey" when empty, at most [`MAX_NAME`]
/// characters, no control characters.
fn clean_name(name: &str) -> DomainResult<String> {
    let name = name.trim();
    if name.chars().any(char::is_control) {
        return Err(DomainError::Invalid(
            "a passkey name cannot hold control characters".into(),
        ));
    }
    if name.chars().count() > MAX_NAME {
        return Err(DomainError::Invalid(format!(
            "a passkey name is at most {MAX_NAME} characters"
        )));
    }
    Ok(if name.is_empty() {
        "Passkey".to_owned()
    } else {
        name.to_owned()
    })
}

#[cfg(test)]
mod in_flight_tests {
    use super::*;

    fn start(flight: &mut InFlight<u32>, n: u32, now: Instant) -> String {
        flight.make_room(now);
        let id = format!("c{n}");
        flight.by_id.insert(
            id.clone(),
            Pending {
                expires: now + CEREMONY_TTL,
                ceremony: n,
            },
        );
        flight.order.push_back(id.clone());
        id
    }

    #[test]
    fn a_flood_of_starts_keeps_the_newest_and_stays_bounded() {
        let mut flight = InFlight::default();
        let now = Instant::now();
        for n in 0..(2 * MAX_CEREMONIES as u32 + 7) {
            start(&mut flight, n, now);
            assert!(flight.by_id.len() <= MAX_CEREMONIES);
        }
        let newest = 2 * MAX_CEREMONIES as u32 + 6;
        assert!(flight.by_id.contains_key(&format!("c{newest}")));
        assert!(!flight.by_id.contains_key("c0"), "the oldest gave way");
        assert!(flight.order.len() <= 2 * MAX_CEREMONIES + 1);
    }

    #[test]
    fn taken_ceremonies_do_not_pile_up_behind_a_live_one() {
        let mut flight = InFlight::default();
        let now = Instant::now();
        // One ceremony that stays, then many started and taken at once.
        start(&mut flight, 0, now);
        for n in 1..(5 * MAX_CEREMONIES as u32) {
            let id = start(&mut flight, n, now);
            flight.by_id.remove(&id);
            assert!(flight.order.len() <= 2 * MAX_CEREMONIES + 1, "{n}");
        }
        assert!(flight.by_id.contains_key("c0"));
        // Once expired, everything leaves from the front.
        start(&mut flight, 99, now + CEREMONY_TTL + Duration::from_secs(1));
        assert_eq!(flight.by_id.len(), 1);
        assert_eq!(flight.order.len(), 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn passkeys(url: &str) -> DomainResult<Passkeys> {
        Passkeys::new(Arc::new(MemoryStore::new()), url)
    }

    #[test]
    fn the_relying_party_comes_from_the_public_url() {
        let p = passkeys("http://localhost:7700").unwrap();
        assert_eq!(p.origin(), "http://localhost:7700");
        let p = passkeys("https://auth.example.org/").unwrap();
        assert_eq!(p.origin(), "https://auth.example.org");
        for bad in ["not a url", "http://127.0.0.1:7700", "ftp://example.org"] {
            assert!(
                matches!(passkeys(bad), Err(DomainError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn registration_asks_for_a_resident_key_and_sign_in_for_no_autofill() {
        let p = passkeys("http://localhost:7700").unwrap();
        let session = Session::new("u1", Duration::from_secs(60), false);
        let started = p.begin_registration(&session, "alice", "Alice").unwrap();
        let selection = &started.options["publicKey"]["authenticatorSelection"];
        assert_eq!(selection["residentKey"], "required");
        assert_eq!(selection["userVerification"], "required");
        assert_eq!(started.options["publicKey"]["rp"]["id"], "localhost");
        let sign_in = p.begin_sign_in().unwrap();
        assert!(sign_in.options.get("mediation").is_none());
        assert_eq!(sign_in.options["publicKey"]["rpId"], "localhost");
        assert_eq!(p.in_flight(), 2);
    }

    #[test]
    fn a_ceremony_is_used_once() {
        let p = passkeys("http://localhost:7700").unwrap();
        let started = p.begin_sign_in().unwrap();
        assert!(p.take(&started.ceremony).is_ok());
        assert!(matches!(
            p.take(&started.ceremony),
            Err(DomainError::Invalid(_))
        ));
        assert!(matches!(p.take("made-up"), Err(DomainError::Invalid(_))));
    }

    #[test]
    fn ceremonies_are_bounded() {
        let p = passkeys("http://localhost:7700").unwrap();
        let first = p.begin_sign_in().unwrap().ceremony;
        for _ in 0..MAX_CEREMONIES {
            p.begin_sign_in().unwrap();
        }
        assert_eq!(p.in_flight(), MAX_CEREMONIES);
        // The oldest gave way.
        assert!(p.take(&first).is_err());
    }

    #[test]
    fn names_are_cleaned() {
        assert_eq!(clean_name("  phone ").unwrap(), "phone");
        assert_eq!(clean_name("").unwrap(), "Passkey");
        assert!(clean_name("a\nb").is_err());
        assert!(clean_name(&"x".repeat(MAX_NAME + 1)).is_err());
    }
}
