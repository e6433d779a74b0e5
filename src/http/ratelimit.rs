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

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::RateLimitConfig;

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

pub struct RateLimiter {
    config: RateLimitConfig,
    windows: Mutex<HashMap<Subject, Window>>,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            config,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn limit(&self, subject: &Subject) -> u32 {
        match subject {
            Subject::Address(_) => self.config.per_address,
            Subject::Account(_) => self.config.per_account,
        }
    }

    /// Count one attempt against every subject, or refuse with the number of
    /// seconds until the earliest window that is full ends.
    pub fn attempt(&self, subjects: &[Subject]) -> Result<(), u64> {
        let Ok(mut windows) = self.windows.lock() else {
            // A poisoned lock means a panic elsewhere; refusing logins would
            // turn that into an outage, and the hasher still bounds the rate.
            return Ok(());
        };
        let now = Instant::now();
        let window = self.config.window;
        let mut wait = None;
        for subject in subjects {
            if let Some(w) = windows.get(subject) {
                let elapsed = now.duration_since(w.started);
                if elapsed < window && w.attempts >= self.limit(subject) {
                    let left = (window - elapsed).as_secs().max(1);
                    wait = Some(wait.map_or(left, |w: u64| w.max(left)));
                }
            }
        }
        if let Some(wait) = wait {
            return Err(wait);
        }
        if windows.len() + subjects.len() > self.config.max_tracked {
            Self::shrink(&mut windows, now, window, self.config.max_tracked);
        }
        for subject in subjects {
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
        let wait = l.attempt(&who).unwrap_err();
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
