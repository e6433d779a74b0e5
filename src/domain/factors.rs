//! Second factors: TOTP (RFC 6238), recovery codes, and the passkeys
//! `domain::passkeys` registers and checks (kept in the same record).
//!
//! A person's factors are one record (`factors/<user>`), so enrolling,
//! using a code and removing a factor are each one guarded write: two
//! requests presenting the same code race on that record and only one
//! commits (a code works once). The TOTP secret is sealed under the data
//! key like a secret's value; recovery codes are kept as SHA-256 digests.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::audit::AuditEvent;
use super::secrets::{open_bound, seal_bound, Sealed};
use super::sessions::{Method, Session, Stage};
use super::{cached_record, decode, encode, keyspace, random_id, retry, DomainError, DomainResult};
use crate::authz::keys::DataKeys;
use crate::store::{Expect, Store, Transaction};

/// RFC 6238's defaults, the only parameters every authenticator app reads.
pub const TOTP_STEP: i64 = 30;
pub const TOTP_DIGITS: u32 = 6;
/// Steps either side of now a code is accepted in: one, for clocks a
/// little off and codes typed as they roll over.
const TOTP_SKEW: i64 = 1;
/// 160 bits, the HMAC-SHA-1 key length RFC 4226 recommends.
const TOTP_SECRET_BYTES: usize = 20;
pub const RECOVERY_CODES: usize = 10;
/// How long a session halfway through signing in (password right, code
/// still to come) lives.
pub const SECOND_STEP_TTL: std::time::Duration = std::time::Duration::from_secs(10 * 60);
/// Issuer shown by authenticator apps.
const ISSUER: &str = "tessera";

/// Every second factor of one person.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FactorSet {
    /// The confirmed TOTP factor.
    #[serde(default)]
    pub totp: Option<Totp>,
    /// A TOTP secret handed out but not yet confirmed with a code.
    #[serde(default)]
    pub pending_totp: Option<Totp>,
    #[serde(default)]
    pub recovery: Vec<RecoveryCode>,
    /// When recovery codes were used since the person last saw it; shown
    /// (and cleared) at their next full sign-in.
    #[serde(default)]
    pub unseen_recovery_uses: Vec<i64>,
    /// Registered passkeys (WebAuthn credentials, `domain::passkeys`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passkeys: Vec<super::passkeys::StoredPasskey>,
    /// The WebAuthn user handle every passkey of this person carries (a
    /// random UUID, never the user id): one per person, so an
    /// authenticator keeps one passkey per account here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passkey_handle: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Totp {
    pub id: String,
    pub sealed: Sealed,
    pub created_at: i64,
    #[serde(default)]
    pub last_used_at: Option<i64>,
    /// The newest time step a code was accepted for: codes of this step or
    /// older are refused, so a code works once.
    #[serde(default)]
    pub last_step: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecoveryCode {
    /// SHA-256 of the normalised code, hex. The codes are 50 random bits
    /// each and guesses are rate limited, so a fast digest suffices (an
    /// argon2 run per stored code would make every attempt ten of them).
    pub digest: String,
    #[serde(default)]
    pub used_at: Option<i64>,
}

impl FactorSet {
    /// Whether the person has a second factor to present.
    pub fn any(&self) -> bool {
        self.totp.is_some() || !self.passkeys.is_empty()
    }

    /// The kinds a sign-in may ask for, as the login answer lists them.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds = Vec::new();
        if self.totp.is_some() {
            kinds.push("totp");
        }
        if !self.passkeys.is_empty() {
            kinds.push("passkey");
        }
        if self.recovery_left() > 0 {
            kinds.push("recovery_code");
        }
        kinds
    }

    pub fn recovery_left(&self) -> usize {
        self.recovery.iter().filter(|c| c.used_at.is_none()).count()
    }
}

/// Who must have a second factor (an admin setting; default nobody).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Requirement {
    #[default]
    Nobody,
    Admins,
    Everyone,
}

impl Requirement {
    pub fn parse(s: &str) -> DomainResult<Self> {
        match s {
            "nobody" => Ok(Self::Nobody),
            "admins" => Ok(Self::Admins),
            "everyone" => Ok(Self::Everyone),
            _ => Err(DomainError::Invalid(
                "second_factor_required must be nobody, admins or everyone".into(),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nobody => "nobody",
            Self::Admins => "admins",
            Self::Everyone => "everyone",
        }
    }

    pub fn applies_to(self, is_admin: bool) -> bool {
        match self {
            Self::Nobody => false,
            Self::Admins => is_admin,
            Self::Everyone => true,
        }
    }
}

const REQUIREMENT_KEY: &str = "meta/second_factor_required";

/// HOTP (RFC 4226) of `counter`: HMAC-SHA-1, then dynamic truncation.
/// (`None` only if HMAC refused the key, which it does for no length.)
pub fn hotp(secret: &[u8], counter: u64, digits: u32) -> Option<u32> {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret).ok()?;
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = (digest[19] & 0x0f) as usize;
    let binary = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    Some(binary % 10u32.pow(digits))
}

/// The TOTP time step of `unix` seconds.
pub fn step_of(unix: i64) -> i64 {
    unix.div_euclid(TOTP_STEP)
}

/// The step `code` is valid for at `unix`, within the allowed skew and newer
/// than `last_step`, if any.
pub fn totp_match(secret: &[u8], code: &str, unix: i64, last_step: i64) -> Option<i64> {
    let code = code.trim();
    if code.len() != TOTP_DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = step_of(unix);
    (now - TOTP_SKEW..=now + TOTP_SKEW)
        .filter(|&step| step > last_step && step >= 0)
        .find(|&step| {
            hotp(secret, step as u64, TOTP_DIGITS).is_some_and(|otp| {
                let expected = format!("{otp:0width$}", width = TOTP_DIGITS as usize);
                bool::from(expected.as_bytes().ct_eq(code.as_bytes()))
            })
        })
}

fn totp_aad(user: &str, id: &str) -> Vec<u8> {
    format!("tessera-totp\0{user}\0{id}").into_bytes()
}

fn normalise_recovery(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

pub(super) fn recovery_digest(code: &str) -> String {
    hex::encode(Sha256::digest(normalise_recovery(code).as_bytes()))
}

/// Ten fresh codes, `xxxxx-xxxxx` over 32 unambiguous characters (50 bits).
pub(super) fn new_recovery_codes() -> Vec<String> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut code = String::with_capacity(11);
            for i in 0..10 {
                if i == 5 {
                    code.push('-');
                }
                code.push(ALPHABET[rng.gen_range(0..ALPHABET.len())] as char);
            }
            code
        })
        .collect()
}

/// What a verified code was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Used {
    Totp,
    RecoveryCode,
}

/// The outcome of a verified second step.
pub struct Verified {
    /// The session to answer with: a new one replacing a halfway session,
    /// or the same one with a fresh `factor_at` (step-up).
    pub session: Session,
    pub used: Used,
    /// Recovery codes left after this.
    pub recovery_left: usize,
}

/// TOTP enrolment's first step: what the person types into their app.
pub struct Enrolment {
    pub secret: String,
    pub otpauth_url: String,
}

pub struct Factors {
    store: Arc<dyn Store>,
    default_requirement: Requirement,
}

impl Factors {
    pub fn new(store: Arc<dyn Store>, default_requirement: Requirement) -> Self {
        Self {
            store,
            default_requirement,
        }
    }

    /// A person's factors as stored now (none: an empty set).
    pub fn of(&self, user: &str) -> DomainResult<Arc<FactorSet>> {
        Ok(
            cached_record::<FactorSet>(self.store.as_ref(), &keyspace::factors(user))?
                .unwrap_or_default(),
        )
    }

    fn load(&self, user: &str) -> DomainResult<(FactorSet, Expect)> {
        load(self.store.as_ref(), user)
    }

    /// Who must have a second factor: the stored setting, else the
    /// configured default.
    pub fn requirement(&self) -> DomainResult<Requirement> {
        requirement(self.store.as_ref(), self.default_requirement)
    }

    pub async fn set_requirement(
        &self,
        requirement: Requirement,
        event: AuditEvent,
    ) -> DomainResult<()> {
        let mut tx = Transaction::durable();
        tx.put(REQUIREMENT_KEY, encode(&requirement)?);
        event.record_into(&mut tx)?;
        super::commit(&self.store, tx).await
    }

    /// The stage a session opened with a correct password starts at.
    pub fn stage_after_password(&self, user: &str, is_admin: bool) -> DomainResult<Stage> {
        if self.of(user)?.any() {
            Ok(Stage::SecondFactor)
        } else if self.requirement()?.applies_to(is_admin) {
            Ok(Stage::Enrol)
        } else {
            Ok(Stage::Complete)
        }
    }

    /// Start TOTP enrolment: a fresh secret, kept sealed until confirmed.
    /// One TOTP factor per person: remove the old one first.
    pub async fn begin_totp(
        &self,
        keys: &DataKeys,
        user: &str,
        username: &str,
    ) -> DomainResult<Enrolment> {
        let mut raw = [0u8; TOTP_SECRET_BYTES];
        rand::thread_rng().fill(&mut raw);
        let secret = data_encoding::BASE32_NOPAD.encode(&raw);
        let id = random_id(8);
        let (key_id, _) = keys.active();
        let sealed = seal_bound(keys, key_id, &totp_aad(user, &id), &secret)?;
        let pending = Totp {
            id,
            sealed,
            created_at: super::now(),
            last_used_at: None,
            last_step: 0,
        };
        retry(&self.store, || {
            let (mut set, read_as) = self.load(user)?;
            if set.totp.is_some() {
                return Err(DomainError::Conflict(
                    "a TOTP factor is already enrolled; remove it first".into(),
                ));
            }
            set.pending_totp = Some(pending.clone());
            let mut tx = Transaction::durable();
            tx.expect(keyspace::factors(user), read_as)
                .put(keyspace::factors(user), encode(&set)?);
            Ok((tx, ()))
        })
        .await?;
        let label = format!("{ISSUER}:{username}");
        let otpauth_url = format!(
            "otpauth://totp/{}?secret={secret}&issuer={ISSUER}&algorithm=SHA1&digits={TOTP_DIGITS}&period={TOTP_STEP}",
            percent(&label)
        );
        Ok(Enrolment {
            secret,
            otpauth_url,
        })
    }

    /// Confirm TOTP enrolment with a first code: the factor becomes active,
    /// ten new recovery codes replace any old ones (returned, shown once),
    /// and `session` counts as having just verified a factor.
    pub async fn confirm_totp(
        &self,
        keys: &DataKeys,
        session: &Session,
        code: &str,
        at: i64,
        event: AuditEvent,
    ) -> DomainResult<Vec<String>> {
        let user = session.user_id.as_str();
        let codes = new_recovery_codes();
        retry(&self.store, || {
            let (mut set, read_as) = self.load(user)?;
            let pending = set
                .pending_totp
                .take()
                .ok_or_else(|| DomainError::Invalid("no TOTP enrolment is pending".into()))?;
            let secret = open_bound(keys, &totp_aad(user, &pending.id), &pending.sealed)?;
            let raw = decode_secret(&secret)?;
            let step = totp_match(&raw, code, at, 0).ok_or(DomainError::InvalidCredentials)?;
            set.totp = Some(Totp {
                last_step: step,
                last_used_at: Some(at),
                ..pending
            });
            set.recovery = codes
                .iter()
                .map(|c| RecoveryCode {
                    digest: recovery_digest(c),
                    used_at: None,
                })
                .collect();
            let mut tx = Transaction::durable();
            tx.expect(keyspace::factors(user), read_as)
                .put(keyspace::factors(user), encode(&set)?);
            let mut upgraded = session.clone();
            upgraded.factor_at = Some(at);
            if upgraded.stage == Stage::Enrol {
                upgraded.stage = Stage::Complete;
            }
            stage_session_update(&mut tx, session, &upgraded)?;
            event.record_into(&mut tx)?;
            Ok((tx, ()))
        })
        .await?;
        Ok(codes)
    }

    /// The second step, or a step-up: check `code` (a TOTP code, else a
    /// recovery code) and, in the same write that spends it, either replace
    /// a halfway session with a complete one or mark `session` as having
    /// just verified a factor. Wrong codes are `InvalidCredentials`.
    ///
    /// `full_ttl` is the lifetime of the session a second step opens (the
    /// halfway one lived only [`SECOND_STEP_TTL`]).
    pub async fn verify(
        &self,
        keys: &DataKeys,
        session: &Session,
        code: &str,
        at: i64,
        full_ttl: std::time::Duration,
    ) -> DomainResult<Verified> {
        let user = session.user_id.as_str();
        retry(&self.store, || {
            let (mut set, read_as) = self.load(user)?;
            let mut used = None;
            if let Some(totp) = set.totp.as_mut() {
                let secret = open_bound(keys, &totp_aad(user, &totp.id), &totp.sealed)?;
                let raw = decode_secret(&secret)?;
                if let Some(step) = totp_match(&raw, code, at, totp.last_step) {
                    totp.last_step = step;
                    totp.last_used_at = Some(at);
                    used = Some(Used::Totp);
                }
            }
            if used.is_none() && set.any() {
                let digest = recovery_digest(code);
                if let Some(spent) = set.recovery.iter_mut().find(|c| {
                    c.used_at.is_none() && bool::from(c.digest.as_bytes().ct_eq(digest.as_bytes()))
                }) {
                    spent.used_at = Some(at);
                    set.unseen_recovery_uses.push(at);
                    used = Some(Used::RecoveryCode);
                }
            }
            let used = used.ok_or(DomainError::InvalidCredentials)?;
            let mut tx = Transaction::durable();
            tx.expect(keyspace::factors(user), read_as)
                .put(keyspace::factors(user), encode(&set)?);
            let next = match session.stage {
                Stage::SecondFactor => {
                    // A new session id once the person is fully signed in,
                    // so the halfway token is worth nothing afterwards.
                    let mut fresh = Session::new(user, full_ttl, session.long_lived);
                    fresh.method = match used {
                        Used::Totp => Method::PasswordTotp,
                        Used::RecoveryCode => Method::RecoveryCode,
                    };
                    fresh.factor_at = Some(at);
                    tx.expect(keyspace::session(&session.id), Expect::Present);
                    tx.delete(keyspace::session(&session.id));
                    tx.delete(keyspace::user_session(user, &session.id));
                    fresh.write_into(&mut tx)?;
                    fresh
                }
                Stage::Complete | Stage::Enrol => {
                    let mut upgraded = session.clone();
                    upgraded.factor_at = Some(at);
                    stage_session_update(&mut tx, session, &upgraded)?;
                    upgraded
                }
            };
            let recovery_left = set.recovery_left();
            Ok((
                tx,
                Verified {
                    session: next,
                    used,
                    recovery_left,
                },
            ))
        })
        .await
    }

    /// Recovery codes used since the person last saw it, cleared as they are
    /// shown.
    pub async fn take_unseen_recovery_uses(&self, user: &str) -> DomainResult<Vec<i64>> {
        if self.of(user)?.unseen_recovery_uses.is_empty() {
            return Ok(Vec::new());
        }
        retry(&self.store, || {
            let (mut set, read_as) = self.load(user)?;
            let unseen = std::mem::take(&mut set.unseen_recovery_uses);
            let mut tx = Transaction::durable();
            tx.expect(keyspace::factors(user), read_as)
                .put(keyspace::factors(user), encode(&set)?);
            Ok((tx, unseen))
        })
        .await
    }

    /// Remove the factor `id` (a TOTP factor's or a passkey's id, or
    /// `recovery` for the recovery codes). Removing the last factor removes
    /// the recovery codes with it: they stand in for a factor, not for the
    /// password. A passkey's credential index entry goes in the same write.
    pub async fn remove(&self, user: &str, id: &str, event: AuditEvent) -> DomainResult<()> {
        retry(&self.store, || {
            let (mut set, read_as) = self.load(user)?;
            let mut unindex = None;
            if set.totp.as_ref().is_some_and(|t| t.id == id) {
                set.totp = None;
            } else if let Some(at) = set.passkeys.iter().position(|p| p.id == id) {
                let gone = set.passkeys.remove(at);
                unindex = Some(keyspace::passkey_credential(&gone.credential_id()));
            } else if id == "recovery" && !set.recovery.is_empty() {
                set.recovery.clear();
            } else {
                return Err(DomainError::NotFound("factor"));
            }
            if !set.any() {
                set.recovery.clear();
            }
            let mut tx = Transaction::durable();
            tx.expect(keyspace::factors(user), read_as);
            if let Some(index) = unindex {
                tx.delete(index);
            }
            if set == FactorSet::default() {
                tx.delete(keyspace::factors(user));
            } else {
                tx.put(keyspace::factors(user), encode(&set)?);
            }
            event.record_into(&mut tx)?;
            Ok((tx, ()))
        })
        .await
    }

    /// Add the removal of every factor of `user` to `tx` (admin reset,
    /// account deletion, the offline reset command); whether they had any.
    pub fn stage_clear(&self, tx: &mut Transaction, user: &str) -> DomainResult<bool> {
        stage_clear(self.store.as_ref(), tx, user)
    }
}

/// The stored requirement, else `default`.
pub fn requirement(store: &dyn Store, default: Requirement) -> DomainResult<Requirement> {
    match store.get(REQUIREMENT_KEY.as_bytes())? {
        Some(bytes) => decode(&bytes),
        None => Ok(default),
    }
}

/// Re-seal every TOTP secret not under `key_id` with it (data key
/// rotation, with the server stopped), at most `limit` people's; how many
/// were re-sealed. Each person's record is its own guarded write.
pub fn reseal_all(
    store: &dyn Store,
    keys: &DataKeys,
    key_id: u32,
    limit: usize,
) -> DomainResult<usize> {
    let mut moved = 0;
    for (key, bytes) in store.scan(keyspace::FACTORS_PREFIX.as_bytes(), None, usize::MAX)? {
        if moved >= limit {
            break;
        }
        let user = String::from_utf8_lossy(&key[keyspace::FACTORS_PREFIX.len()..]).into_owned();
        let mut set: FactorSet = decode(&bytes)?;
        let mut changed = false;
        for totp in [set.totp.as_mut(), set.pending_totp.as_mut()]
            .into_iter()
            .flatten()
        {
            if totp.sealed.key_id != key_id {
                let aad = totp_aad(&user, &totp.id);
                let secret = open_bound(keys, &aad, &totp.sealed)?;
                totp.sealed = seal_bound(keys, key_id, &aad, &secret)?;
                changed = true;
            }
        }
        if !changed {
            continue;
        }
        let mut tx = Transaction::durable();
        tx.expect(key.clone(), Expect::Equals(bytes))
            .put(key, encode(&set)?);
        match store.commit(&tx) {
            Ok(()) => moved += 1,
            // Changed meanwhile: whoever changed it sealed it afresh.
            Err(crate::store::StoreError::Conflict) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(moved)
}

/// See [`Factors::stage_clear`]; for offline tools holding a bare store.
/// Passkeys' credential index entries go with the record, and the write is
/// guarded on the record as read, so a passkey registered meanwhile cannot
/// leave an index entry behind (the caller's retry reads it again).
pub fn stage_clear(store: &dyn Store, tx: &mut Transaction, user: &str) -> DomainResult<bool> {
    let key = keyspace::factors(user);
    let (set, read_as) = load(store, user)?;
    let had = read_as != Expect::Absent;
    for passkey in &set.passkeys {
        tx.delete(keyspace::passkey_credential(&passkey.credential_id()));
    }
    tx.expect(key.clone(), read_as);
    tx.delete(key);
    Ok(had)
}

/// A person's factor record as stored, with what to guard a rewrite on.
pub(super) fn load(store: &dyn Store, user: &str) -> DomainResult<(FactorSet, Expect)> {
    let key = keyspace::factors(user);
    Ok(match store.get(key.as_bytes())? {
        Some(bytes) => (decode(&bytes)?, Expect::Equals(bytes)),
        None => (FactorSet::default(), Expect::Absent),
    })
}

/// Rewrite a session record, guarded on it still being there: a session
/// ended meanwhile is not brought back.
pub(super) fn stage_session_update(
    tx: &mut Transaction,
    before: &Session,
    after: &Session,
) -> DomainResult<()> {
    tx.expect(keyspace::session(&before.id), Expect::Present);
    tx.put(keyspace::session(&after.id), encode(after)?);
    Ok(())
}

fn decode_secret(secret: &str) -> DomainResult<Vec<u8>> {
    data_encoding::BASE32_NOPAD
        .decode(secret.as_bytes())
        .map_err(|_| DomainError::Internal("a TOTP secret does not decode".into()))
}

/// Percent-encode a label for an otpauth URL's path.
fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SECRET: &[u8] = b"12345678901234567890";

    /// RFC 6238 appendix B, the SHA-1 rows (8 digits).
    #[test]
    fn rfc6238_sha1_vectors() {
        for (time, expected) in [
            (59i64, 94287082u32),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ] {
            assert_eq!(
                hotp(RFC_SECRET, step_of(time) as u64, 8),
                Some(expected),
                "{time}"
            );
        }
    }

    /// RFC 4226 appendix D: HOTP of counters 0..9.
    #[test]
    fn rfc4226_vectors() {
        let expected = [
            755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489,
        ];
        for (counter, want) in expected.iter().enumerate() {
            assert_eq!(hotp(RFC_SECRET, counter as u64, 6), Some(*want));
        }
    }

    fn code_at(step: i64) -> String {
        format!("{:06}", hotp(RFC_SECRET, step as u64, 6).unwrap())
    }

    #[test]
    fn one_step_of_skew_is_accepted_two_are_refused() {
        let at = 1_111_111_111;
        let now = step_of(at);
        assert_eq!(totp_match(RFC_SECRET, &code_at(now), at, 0), Some(now));
        assert_eq!(
            totp_match(RFC_SECRET, &code_at(now - 1), at, 0),
            Some(now - 1)
        );
        assert_eq!(
            totp_match(RFC_SECRET, &code_at(now + 1), at, 0),
            Some(now + 1)
        );
        assert_eq!(totp_match(RFC_SECRET, &code_at(now - 2), at, 0), None);
        assert_eq!(totp_match(RFC_SECRET, &code_at(now + 2), at, 0), None);
    }

    #[test]
    fn a_code_is_not_accepted_again_nor_an_older_one() {
        let at = 1_111_111_111;
        let now = step_of(at);
        let step = totp_match(RFC_SECRET, &code_at(now), at, 0).unwrap();
        assert_eq!(totp_match(RFC_SECRET, &code_at(now), at, step), None);
        assert_eq!(totp_match(RFC_SECRET, &code_at(now - 1), at, step), None);
        assert_eq!(
            totp_match(RFC_SECRET, &code_at(now + 1), at, step),
            Some(now + 1)
        );
    }

    #[test]
    fn malformed_codes_are_refused() {
        for code in ["", "12345", "1234567", "abcdef", "12 456"] {
            assert_eq!(totp_match(RFC_SECRET, code, 59, 0), None, "{code:?}");
        }
    }

    #[test]
    fn recovery_codes_are_distinct_and_normalise() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let unique: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), RECOVERY_CODES);
        let c = &codes[0];
        assert_eq!(recovery_digest(c), recovery_digest(&c.to_uppercase()));
        assert_eq!(recovery_digest(c), recovery_digest(&c.replace('-', "")));
    }
}
