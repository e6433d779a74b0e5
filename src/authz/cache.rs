//! A bounded cache of verified tokens, keyed by the token string, so a repeated
//! token costs no signature check. Only the cryptographic verification is
//! cached: revocation, expiry and policy are still decided on every request.
//!
//! Two generations bound memory without per-entry bookkeeping: when the young
//! generation fills it becomes the old one and the previous old one is dropped;
//! a hit in the old generation is promoted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hashbrown::HashTable;

pub use super::tokens::Verified;

/// How much of a token its cache hash reads: the end, where the proof (a
/// fresh secret key, or a seal) makes every token differ. A whole token is
/// hundreds of bytes hashed on every request; equality still compares all
/// of it, and only verified tokens are ever stored.
const TOKEN_HASHED_BYTES: usize = 64;

fn hashed_part(token: &str) -> &[u8] {
    let bytes = token.as_bytes();
    &bytes[bytes.len().saturating_sub(TOKEN_HASHED_BYTES)..]
}

/// A token as the cache keeps it.
#[derive(PartialEq, Eq)]
struct TokenKey(String);

/// A token as a request presents it, hashing exactly as its [`TokenKey`].
struct TokenView<'a>(&'a str);

impl std::hash::Hash for TokenView<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(hashed_part(self.0));
    }
}

impl std::hash::Hash for TokenKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        TokenView(&self.0).hash(state);
    }
}

pub struct TokenCache {
    verified: Memo<TokenKey, Arc<Verified>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            verified: Memo::new(capacity),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn get(&self, token: &str) -> Option<Arc<Verified>> {
        if self.verified.per_shard == 0 {
            return None;
        }
        let found = self
            .verified
            .get_by(&TokenView(token), |key| key.0 == token);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub fn insert(&self, token: &str, verified: Arc<Verified>) {
        self.verified.insert(TokenKey(token.to_owned()), verified);
    }

    pub fn len(&self) -> usize {
        self.verified.len()
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

/// A bounded map with two generations per shard, split into shards so
/// requests on different cores rarely wait on one lock. A hit in the old
/// generation is promoted, so what is in use survives a turn of
/// generations. A key is hashed once (SipHash, keyed per process: keys
/// carry what callers send), for both its shard and its slot.
pub struct Memo<K, V> {
    /// Entries per generation in each shard.
    per_shard: usize,
    shards: Box<[Mutex<MemoShard<K, V>>]>,
    hasher: std::collections::hash_map::RandomState,
}

struct MemoShard<K, V> {
    young: HashTable<(K, V)>,
    old: HashTable<(K, V)>,
}

/// Shards of a memo: enough that two cores rarely meet, few enough that a
/// small capacity still leaves each shard room.
const MEMO_SHARDS: usize = 16;

impl<K: std::hash::Hash + Eq, V: Clone> Memo<K, V> {
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
                        young: HashTable::new(),
                        old: HashTable::new(),
                    })
                })
                .collect(),
            hasher: Default::default(),
        }
    }

    fn hash<Q: std::hash::Hash + ?Sized>(&self, key: &Q) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(key)
    }

    /// The table's slots use a hash's low bits and its top seven: the
    /// shard takes bits from the middle.
    fn shard(&self, hash: u64) -> &Mutex<MemoShard<K, V>> {
        &self.shards[((hash >> 32) as usize) % self.shards.len()]
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.get_by(key, |k| k.borrow() == key)
    }

    /// The value of the key `is` accepts, where `view` hashes exactly as
    /// that key does: a lookup by a borrowed view of a key no `Borrow` can
    /// give (a pair of references for a pair).
    pub fn get_by<Q: std::hash::Hash + ?Sized>(
        &self,
        view: &Q,
        is: impl Fn(&K) -> bool,
    ) -> Option<V> {
        if self.per_shard == 0 {
            return None;
        }
        let hash = self.hash(view);
        let mut gens = self.shard(hash).lock().ok()?;
        if let Some((_, hit)) = gens.young.find(hash, |(k, _)| is(k)) {
            return Some(hit.clone());
        }
        let ((key, hit), _) = gens.old.find_entry(hash, |(k, _)| is(k)).ok()?.remove();
        self.insert_young(&mut gens, hash, key, hit.clone());
        Some(hit)
    }

    pub fn insert(&self, key: K, value: V) {
        if self.per_shard == 0 {
            return;
        }
        let hash = self.hash(&key);
        if let Ok(mut gens) = self.shard(hash).lock() {
            self.insert_young(&mut gens, hash, key, value);
        }
    }

    fn insert_young(&self, gens: &mut MemoShard<K, V>, hash: u64, key: K, value: V) {
        if let Ok(mut found) = gens.young.find_entry(hash, |(k, _)| *k == key) {
            found.get_mut().1 = value;
            return;
        }
        if gens.young.len() >= self.per_shard {
            gens.old = std::mem::take(&mut gens.young);
        }
        gens.young
            .insert_unique(hash, (key, value), |(k, _)| self.hash(k));
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
        let found = tokens_seen
            .iter()
            .filter(|t| cache.get(t).is_some())
            .count();
        assert!(found <= 8, "{found} of 20 tokens kept");
        let (hits, misses) = cache.stats();
        assert_eq!(hits + misses, 21);
        assert_eq!(hits as usize, 1 + found);
    }

    #[test]
    fn tokens_sharing_their_end_are_told_apart() {
        let keys = RootKeys::ephemeral();
        let cache = TokenCache::new(16);
        let verified = |user: &str| {
            let token = tokens::mint_session(&keys, user, "s", i64::MAX / 2).unwrap();
            Arc::new(tokens::verify(&keys, &token).unwrap())
        };
        let (for_a, for_b) = (verified("a"), verified("b"));
        let end = "z".repeat(TOKEN_HASHED_BYTES);
        let (a, b) = (format!("a{end}"), format!("b{end}"));
        cache.insert(&a, for_a.clone());
        cache.insert(&b, for_b.clone());
        assert!(Arc::ptr_eq(&cache.get(&a).unwrap(), &for_a));
        assert!(Arc::ptr_eq(&cache.get(&b).unwrap(), &for_b));
        assert!(cache.get(&format!("c{end}")).is_none());
        assert!(cache.get(&end).is_none());
    }

    #[test]
    fn a_memo_stays_bounded_and_keeps_what_is_in_use() {
        let memo = Memo::new(64);
        memo.insert("hot".to_owned(), 0);
        for i in 0..10_000 {
            memo.insert(format!("k{i}"), i);
            assert!(memo.len() <= 2 * 64 + 2 * MEMO_SHARDS, "{}", memo.len());
            // Used throughout, so it is promoted before its generation goes.
            assert_eq!(memo.get("hot"), Some(0), "lost at {i}");
        }
        assert_eq!(memo.get("k9999"), Some(9999));
        assert_eq!(memo.get("k0"), None);
    }

    #[test]
    fn a_memo_of_no_capacity_remembers_nothing() {
        let memo = Memo::new(0);
        memo.insert(1, 1);
        assert_eq!(memo.get(&1), None);
        assert!(memo.is_empty());
    }
}
