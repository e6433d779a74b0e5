//! Password hashing: argon2id for everything new, plus verification of the
//! legacy TinyAgentOS format so imported users keep their passwords.
//!
//! Hashing is deliberately slow, so it runs on the blocking pool behind a
//! semaphore sized to the cores: a flood of logins queues here instead of
//! starving the async workers that serve authorized reads.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use super::DomainError;

/// OWASP's argon2id recommendation: 19 MiB, 2 passes, 1 lane.
const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;
const LANES: u32 = 1;

pub const MIN_PASSWORD_LEN: usize = 8;
/// Bounds the work one request can ask of the hasher.
pub const MAX_PASSWORD_LEN: usize = 1024;

fn argon2() -> Argon2<'static> {
    // The constants are valid argon2 parameters; `Params::new` only rejects
    // out-of-range values.
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The password matches; `upgrade` asks the caller to store a fresh argon2id
    /// hash (legacy format, or weaker parameters than today's).
    Match {
        upgrade: bool,
    },
    NoMatch,
}

#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// Verified against when there is nothing to verify (unknown user, pending
    /// invite, legacy mismatch) so every failure costs one argon2 run.
    decoy: Arc<str>,
}

pub fn check_new_password(password: &str) -> Result<(), DomainError> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_LEN {
        return Err(DomainError::Invalid(format!(
            "password must be at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(DomainError::Invalid(format!(
            "password must be at most {MAX_PASSWORD_LEN} bytes"
        )));
    }
    Ok(())
}

impl Passwords {
    pub fn new(concurrency: usize) -> Result<Self, DomainError> {
        let decoy = hash_now("tessera decoy password")?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            decoy: decoy.into(),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, DomainError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| DomainError::Internal("password hasher shut down".into()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| DomainError::Internal(format!("password hashing task: {e}")))
    }

    pub async fn hash(&self, password: String) -> Result<String, DomainError> {
        self.run(move || hash_now(&password)).await?
    }

    /// Check `password` against `stored` (argon2 PHC string or legacy
    /// `<salt-hex>:<sha256-hex>`); `None` means there is no password to match and
    /// still costs the same as a real check.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<Verification, DomainError> {
        if password.len() > MAX_PASSWORD_LEN {
            // Still burn the same time, so length does not reveal anything.
            let decoy = self.decoy.clone();
            self.run(move || verify_argon2("", &decoy)).await?;
            return Ok(Verification::NoMatch);
        }
        let decoy = self.decoy.clone();
        self.run(move || match stored.as_deref() {
            Some(hash) if hash.starts_with("$argon2") => {
                if verify_argon2(&password, hash) {
                    Verification::Match {
                        upgrade: weaker_than_today(hash),
                    }
                } else {
                    Verification::NoMatch
                }
            }
            Some(hash) if verify_legacy(&password, hash) => Verification::Match { upgrade: true },
            _ => {
                verify_argon2(&password, &decoy);
                Verification::NoMatch
            }
        })
        .await
    }
}

/// Hash on the calling thread: for start-up and import, never a request.
pub fn hash_now(password: &str) -> Result<String, DomainError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| DomainError::Internal(format!("argon2: {e}")))
}

fn verify_argon2(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        // Verify with the parameters recorded in the hash itself.
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

fn weaker_than_today(hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return true;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return true;
    };
    parsed.algorithm.as_str() != "argon2id"
        || params.m_cost() < MEMORY_KIB
        || params.t_cost() < PASSES
}

/// The legacy TinyAgentOS format: `<salt-hex>:<sha256-hex of "<salt>:<password>">`.
pub fn verify_legacy(password: &str, stored: &str) -> bool {
    let Some((salt, digest_hex)) = stored.split_once(':') else {
        return false;
    };
    let Ok(expected) = hex::decode(digest_hex) else {
        return false;
    };
    let mut hasher = Sha256::new();
    hasher.update(salt.as_bytes());
    hasher.update(b":");
    hasher.update(password.as_bytes());
    let actual = hasher.finalize();
    expected.len() == actual.len() && bool::from(actual[..].ct_eq(&expected[..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    // From the legacy fixtures: alice's stored hash of "alice-pass".
    const ALICE: &str = "dd782d219c065910f066ac2ce3da75d3:e8824dbdb5b47872a4dd3480e71e69e1b6efa22194dce8f7364f55faa444bf59";

    #[test]
    fn legacy_hashes_verify() {
        assert!(verify_legacy("alice-pass", ALICE));
        assert!(!verify_legacy("alice-pass ", ALICE));
        assert!(!verify_legacy("alice-pass", "garbage"));
        assert!(!verify_legacy("alice-pass", "00:zz"));
    }

    #[tokio::test]
    async fn argon2id_round_trip_and_legacy_upgrade() {
        let pw = Passwords::new(2).unwrap();
        let hash = pw.hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert_eq!(
            pw.verify("correct horse".into(), Some(hash.clone()))
                .await
                .unwrap(),
            Verification::Match { upgrade: false }
        );
        assert_eq!(
            pw.verify("wrong horse".into(), Some(hash)).await.unwrap(),
            Verification::NoMatch
        );
        assert_eq!(
            pw.verify("alice-pass".into(), Some(ALICE.into()))
                .await
                .unwrap(),
            Verification::Match { upgrade: true }
        );
        assert_eq!(
            pw.verify("anything".into(), None).await.unwrap(),
            Verification::NoMatch
        );
    }

    #[test]
    fn new_passwords_are_length_checked() {
        assert!(check_new_password("short").is_err());
        assert!(check_new_password("long enough").is_ok());
        assert!(check_new_password(&"x".repeat(MAX_PASSWORD_LEN + 1)).is_err());
    }
}
