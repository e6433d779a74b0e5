//! A bounded cache of verified tokens, keyed by the token string, so a repeated
//! token costs no signature check. Only the cryptographic verification is
//! cached: revocation, expiry and policy are still decided on every request.
//!
//! Two generations bound memory without per-entry bookkeeping: when the young
//! generation fills it becomes the old one and the previous old one is dropped;
//! a hit in the old generation is promoted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use super::tokens::Verified;

pub struct TokenCache {
    capacity: usize,
    generations: Mutex<Generations>,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Default)]
struct Generations {
    young: HashMap<String, Arc<Verified>>,
    old: HashMap<String, Arc<Verified>>,
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            generations: Mutex::new(Generations::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn get(&self, token: &str) -> Option<Arc<Verified>> {
        if self.capacity == 0 {
            return None;
        }
        let mut gens = self.generations.lock().ok()?;
        let found = match gens.young.get(token) {
            Some(hit) => Some(hit.clone()),
            None => match gens.old.remove(token) {
                Some(hit) => {
                    Self::insert_young(&mut gens, self.capacity, token.to_owned(), hit.clone());
                    Some(hit)
                }
                None => None,
            },
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub fn insert(&self, token: &str, verified: Arc<Verified>) {
        if self.capacity == 0 {
            return;
        }
        if let Ok(mut gens) = self.generations.lock() {
            Self::insert_young(&mut gens, self.capacity, token.to_owned(), verified);
        }
    }

    fn insert_young(gens: &mut Generations, capacity: usize, token: String, v: Arc<Verified>) {
        if gens.young.len() >= capacity {
            gens.old = std::mem::take(&mut gens.young);
        }
        gens.young.insert(token, v);
    }

    pub fn len(&self) -> usize {
        self.generations
            .lock()
            .map(|g| g.young.len() + g.old.len())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (hits, misses) since start.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

/// A bounded map, with the same two-generation eviction as the token cache.
pub struct Memo<K, V> {
    capacity: usize,
    generations: Mutex<(HashMap<K, V>, HashMap<K, V>)>,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> Memo<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            generations: Mutex::new((HashMap::new(), HashMap::new())),
        }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        let gens = self.generations.lock().ok()?;
        gens.0.get(key).or_else(|| gens.1.get(key)).cloned()
    }

    pub fn insert(&self, key: &K, value: V) {
        if self.capacity == 0 {
            return;
        }
        if let Ok(mut gens) = self.generations.lock() {
            if gens.0.len() >= self.capacity {
                gens.1 = std::mem::take(&mut gens.0);
            }
            gens.0.insert(key.clone(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::keys::RootKeys;
    use crate::authz::tokens;

    #[test]
    fn memory_stays_bounded_and_recent_tokens_stay_cached() {
        let keys = RootKeys::ephemeral();
        let cache = TokenCache::new(4);
        let mut tokens_seen = Vec::new();
        for i in 0..20 {
            let token = tokens::mint_session(&keys, "u", &format!("s{i}"), i64::MAX / 2).unwrap();
            cache.insert(&token, Arc::new(tokens::verify(&keys, &token).unwrap()));
            assert!(cache.len() <= 8);
            tokens_seen.push(token);
        }
        assert!(cache.get(tokens_seen.last().unwrap()).is_some());
        assert!(cache.get(&tokens_seen[0]).is_none());
        let (hits, misses) = cache.stats();
        assert_eq!((hits, misses), (1, 1));
    }
}
