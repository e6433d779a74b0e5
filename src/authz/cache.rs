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

/// A bounded map, with the same two-generation eviction as the token cache,
/// split into shards so requests on different cores rarely wait on one lock.
/// A hit in the old generation is promoted, so what is in use survives a
/// turn of generations.
pub struct Memo<K, V> {
    /// Entries per generation in each shard.
    per_shard: usize,
    shards: Box<[Mutex<MemoShard<K, V>>]>,
    hasher: std::collections::hash_map::RandomState,
}

struct MemoShard<K, V> {
    young: HashMap<K, V>,
    old: HashMap<K, V>,
}

/// Shards of a memo: enough that two cores rarely meet, few enough that a
/// small capacity still leaves each shard room.
const MEMO_SHARDS: usize = 16;

impl<K: std::hash::Hash + Eq + Clone, V: Clone> Memo<K, V> {
    /// A memo of about `capacity` entries (at most twice that while the old
    /// generation drains); zero remembers nothing.
    pub fn new(capacity: usize) -> Self {
        let shards = if capacity == 0 {
            1
        } else {
            MEMO_SHARDS.min(capacity)
        };
        Self {
            per_shard: capacity.div_ceil(shards),
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(MemoShard {
                        young: HashMap::new(),
                        old: HashMap::new(),
                    })
                })
                .collect(),
            hasher: Default::default(),
        }
    }

    fn shard(&self, key: &K) -> &Mutex<MemoShard<K, V>> {
        use std::hash::BuildHasher;
        let at = (self.hasher.hash_one(key) as usize) % self.shards.len();
        &self.shards[at]
    }

    pub fn get(&self, key: &K) -> Option<V> {
        if self.per_shard == 0 {
            return None;
        }
        let mut gens = self.shard(key).lock().ok()?;
        if let Some(hit) = gens.young.get(key) {
            return Some(hit.clone());
        }
        let (key, hit) = gens.old.remove_entry(key)?;
        Self::insert_young(&mut gens, self.per_shard, key, hit.clone());
        Some(hit)
    }

    pub fn insert(&self, key: &K, value: V) {
        if self.per_shard == 0 {
            return;
        }
        if let Ok(mut gens) = self.shard(key).lock() {
            Self::insert_young(&mut gens, self.per_shard, key.clone(), value);
        }
    }

    fn insert_young(gens: &mut MemoShard<K, V>, per_shard: usize, key: K, value: V) {
        if gens.young.len() >= per_shard {
            gens.old = std::mem::take(&mut gens.young);
        }
        gens.young.insert(key, value);
    }

    /// Entries held now, both generations.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .filter_map(|shard| shard.lock().ok())
            .map(|gens| gens.young.len() + gens.old.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

    #[test]
    fn a_memo_stays_bounded_and_keeps_what_is_in_use() {
        let memo = Memo::new(64);
        memo.insert(&"hot".to_owned(), 0);
        for i in 0..10_000 {
            memo.insert(&format!("k{i}"), i);
            assert!(memo.len() <= 2 * 64 + 2 * MEMO_SHARDS, "{}", memo.len());
            // Used throughout, so it is promoted before its generation goes.
            assert_eq!(memo.get(&"hot".to_owned()), Some(0), "lost at {i}");
        }
        assert_eq!(memo.get(&"k9999".to_owned()), Some(9999));
        assert_eq!(memo.get(&"k0".to_owned()), None);
    }

    #[test]
    fn a_memo_of_no_capacity_remembers_nothing() {
        let memo = Memo::new(0);
        memo.insert(&1, 1);
        assert_eq!(memo.get(&1), None);
        assert!(memo.is_empty());
    }
}
