//! Brute-force brakes for the password and invite endpoints.
//!
//! Only failures count. Each attempt is counted against its client address
//! and its account before any password work starts (so a burst of parallel
//! guesses is counted as it arrives, not after); a success then takes its own
//! attempt back from the address and clears the account's count. Behind one
//! proxy every person shares an address, so counting successes would let a
//! busy household lock itself out. State is in memory and bounded: past
//! `max_tracked` keys, expired windows are dropped first, then an arbitrary
//! tenth.
//!
//! When several replicas share one store, a guesser could spread attempts
//! at one account over them: accounts are then counted in the store
//! (`attempts/...`, a guarded write per failure), so the limit is the
//! household's, not each replica's. Addresses stay counted per replica
//! (a proxy in front of them keeps a client on one, and counting every
//! request of every address in the database would put it on the hot path).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::RateLimitConfig;
use crate::domain::keyspace;
use crate::store::{Expect, Store, StoreError, Transaction};

/// What an attempt is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Address(IpAddr),
    /// A username (login, password change) or an invite being redeemed.
    Account(String),
}

struct Window {
    started: Instant,
    attempts: u32,
}

/// Why an attempt is refused.
#[derive(Debug)]
pub enum Refused {
    /// Too many attempts: retry after this many seconds.
    Limited(u64),
    /// The store where the account's attempts are counted did not answer:
    /// refused without counting, as the store's error (503 when it is
    /// unreachable), not as too many attempts.
    Store(StoreError),
}

/// A store error met while counting: a lost race repeated past the retries
/// is a busy account (retry shortly); anything else is the store's.
fn store_refusal(e: StoreError) -> Refused {
    match e {
        StoreError::Conflict => Refused::Limited(1),
        other => Refused::Store(other),
    }
}

/// An account's window as stored for every replica to count in.
#[derive(Serialize, Deserialize)]
struct StoredWindow {
    /// Unix milliseconds.
    started: u64,
    attempts: u32,
}

pub struct RateLimiter {
    config: RateLimitConfig,
    windows: Mutex<HashMap<Subject, Window>>,
    /// Where accounts are counted when replicas share the store.
    shared: Option<Arc<dyn Store>>,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            config,
            windows: Mutex::new(HashMap::new()),
            shared: None,
        }
    }

    /// Count accounts in `store`, which other replicas count in too.
    pub fn shared(config: RateLimitConfig, store: Arc<dyn Store>) -> Self {
        Self {
            shared: Some(store),
            ..Self::new(config)
        }
    }

    fn counted_in_store(&self, subject: &Subject) -> Option<(&dyn Store, String)> {
        match (subject, &self.shared) {
            (Subject::Account(name), Some(store)) => {
                Some((store.as_ref(), keyspace::attempts(name)))
            }
            _ => None,
        }
    }

    /// The stored window of `key` and the raw value it was read as.
    fn read_stored(
        store: &dyn Store,
        key: &str,
    ) -> Result<(Option<StoredWindow>, Option<Vec<u8>>), StoreError> {
        let raw = store.get(key.as_bytes())?;
        let window = raw
            .as_deref()
            .and_then(|bytes| serde_json::from_slice(bytes).ok());
        Ok((window, raw))
    }

    /// Seconds until a full stored window ends, if it is full.
    fn stored_wait(
        &self,
        store: &dyn Store,
        key: &str,
        limit: u32,
    ) -> Result<Option<u64>, StoreError> {
        let now = unix_ms();
        let window_ms = self.config.window.as_millis() as u64;
        Ok(match Self::read_stored(store, key)?.0 {
            Some(w) if now.saturating_sub(w.started) < window_ms && w.attempts >= limit => {
                Some(((w.started + window_ms - now) / 1000).max(1))
            }
            _ => None,
        })
    }

    /// Count one failure-to-be in the stored window (a guarded write, so
    /// two replicas counting at once both count).
    fn count_stored(&self, store: &dyn Store, key: &str) -> Result<(), StoreError> {
        let window_ms = self.config.window.as_millis() as u64;
        for _ in 0..16 {
            let now = unix_ms();
            let (window, raw) = Self::read_stored(store, key)?;
            let next = match window {
                Some(w) if now.saturating_sub(w.started) < window_ms => StoredWindow {
                    started: w.started,
                    attempts: w.attempts.saturating_add(1),
                },
                _ => StoredWindow {
                    started: now,
                    attempts: 1,
                },
            };
            let value = serde_json::to_vec(&next)
                .map_err(|e| StoreError::Engine(format!("encoding attempts: {e}")))?;
            let mut tx = Transaction::new();
            tx.expect(
                key,
                match raw {
                    Some(raw) => Expect::Equals(raw),
                    None => Expect::Absent,
                },
            )
            .put(key, value);
            match store.commit(&tx) {
                Err(StoreError::Conflict) => continue,
                other => return other,
            }
        }
        Err(StoreError::Conflict)
    }

    fn limit(&self, subject: &Subject) -> u32 {
        match subject {
            Subject::Address(_) => self.config.per_address,
            Subject::Account(_) => self.config.per_account,
        }
    }

    /// Count one attempt against every subject, or refuse with the number of
    /// seconds until the earliest window that is full ends.
    pub fn attempt(&self, subjects: &[Subject]) -> Result<(), Refused> {
        let Ok(mut windows) = self.windows.lock() else {
            // A poisoned lock means a panic elsewhere; refusing logins would
            // turn that into an outage, and the hasher still bounds the rate.
            return Ok(());
        };
        let now = Instant::now();
        let window = self.config.window;
        let mut wait = None;
        for subject in subjects {
            if let Some((store, key)) = self.counted_in_store(subject) {
                match self.stored_wait(store, &key, self.limit(subject)) {
                    Ok(Some(left)) => wait = Some(wait.map_or(left, |w: u64| w.max(left))),
                    Ok(None) => {}
                    // The store is where the account's count lives: without
                    // it, refuse rather than count nothing.
                    Err(e) => {
                        tracing::warn!(error = %e, "reading an account's attempts failed");
                        return Err(store_refusal(e));
                    }
                }
                continue;
            }
            if let Some(w) = windows.get(subject) {
                let elapsed = now.duration_since(w.started);
                if elapsed < window && w.attempts >= self.limit(subject) {
                    let left = (window - elapsed).as_secs().max(1);
                    wait = Some(wait.map_or(left, |w: u64| w.max(left)));
                }
            }
        }
        if let Some(wait) = wait {
            return Err(Refused::Limited(wait));
        }
        if windows.len() + subjects.len() > self.config.max_tracked {
            Self::shrink(&mut windows, now, window, self.config.max_tracked);
        }
        for subject in subjects {
            if let Some((store, key)) = self.counted_in_store(subject) {
                if let Err(e) = self.count_stored(store, &key) {
                    tracing::warn!(error = %e, "counting an account's attempt failed");
                    return Err(store_refusal(e));
                }
                continue;
            }
            let w = windows.entry(subject.clone()).or_insert(Window {
                started: now,
                attempts: 0,
            });
            if now.duration_since(w.started) >= window {
                *w = Window {
                    started: now,
                    attempts: 0,
                };
            }
            w.attempts += 1;
        }
        Ok(())
    }

    /// A successful attempt: the account's earlier failures no longer count,
    /// and the address gets this attempt back. The address keeps its earlier
    /// failures, so one good password cannot launder guesses at other
    /// accounts.
    pub fn succeeded(&self, subjects: &[Subject]) {
        for subject in subjects {
            if let Some((store, key)) = self.counted_in_store(subject) {
                // Most sign-ins follow no failure: write only to clear one.
                if !matches!(store.get(key.as_bytes()), Ok(Some(_))) {
                    continue;
                }
                let mut tx = Transaction::new();
                tx.delete(key);
                if let Err(e) = store.commit(&tx) {
                    tracing::warn!(error = %e, "clearing an account's attempts failed");
                }
            }
        }
        if let Ok(mut windows) = self.windows.lock() {
            for subject in subjects {
                match subject {
                    Subject::Account(_) => {
                        windows.remove(subject);
                    }
                    Subject::Address(_) => {
                        if let Some(w) = windows.get_mut(subject) {
                            w.attempts = w.attempts.saturating_sub(1);
                        }
                    }
                }
            }
        }
    }

    fn shrink(windows: &mut HashMap<Subject, Window>, now: Instant, window: Duration, max: usize) {
        windows.retain(|_, w| now.duration_since(w.started) < window);
        if windows.len() >= max {
            let drop: Vec<Subject> = windows.keys().take(max / 10 + 1).cloned().collect();
            for key in drop {
                windows.remove(&key);
            }
        }
    }

    pub fn tracked(&self) -> usize {
        self.windows.lock().map(|w| w.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max_tracked: usize) -> RateLimiter {
        RateLimiter::new(RateLimitConfig {
            per_address: 5,
            per_account: 3,
            window: Duration::from_secs(60),
            max_tracked,
        })
    }

    #[test]
    fn refuses_after_the_limit_and_says_how_long() {
        let l = limiter(100);
        let who = [Subject::Account("bob".into())];
        for _ in 0..3 {
            l.attempt(&who).unwrap();
        }
        let Err(Refused::Limited(wait)) = l.attempt(&who) else {
            panic!("not refused for the limit");
        };
        assert!((1..=60).contains(&wait));
        l.succeeded(&who);
        assert!(l.attempt(&who).is_ok());
    }

    #[test]
    fn addresses_are_limited_across_accounts() {
        let l = limiter(100);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for i in 0..5 {
            l.attempt(&[Subject::Address(ip), Subject::Account(format!("u{i}"))])
                .unwrap();
        }
        assert!(l
            .attempt(&[Subject::Address(ip), Subject::Account("fresh".into())])
            .is_err());
    }

    #[test]
    fn successes_do_not_use_up_an_address() {
        let l = limiter(100);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for i in 0..50 {
            let who = [Subject::Address(ip), Subject::Account(format!("u{i}"))];
            l.attempt(&who).unwrap();
            l.succeeded(&who);
        }
        // Failures still add up to the limit.
        for i in 0..5 {
            l.attempt(&[Subject::Address(ip), Subject::Account(format!("f{i}"))])
                .unwrap();
        }
        assert!(l.attempt(&[Subject::Address(ip)]).is_err());
    }

    #[test]
    fn memory_is_bounded() {
        let l = limiter(50);
        for i in 0..1_000 {
            let _ = l.attempt(&[Subject::Account(format!("user{i}"))]);
            assert!(l.tracked() <= 50);
        }
    }
}
