//! A read cache in front of any engine.
//!
//! Hot request paths read the same few records on every request (the caller's
//! session and account, the agent and its grants) and decoding them again each
//! time cost more than the authorization decision itself. Each cached value
//! names the keys and key prefixes it was computed from; a commit that writes
//! any of them drops it, so a read after an acknowledged write never sees the
//! old value (revocation stays immediate).
//!
//! A value computed while a commit ran is handed to its reader but not kept:
//! the reader cannot tell whether it read before or after that commit, and
//! keeping it could park a stale value after the commit's invalidation.

use std::any::{Any, TypeId};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::{Store, StoreResult, Transaction};

/// What a cached value was computed from.
#[derive(Debug, Default, Clone)]
pub struct Deps {
    keys: Vec<Vec<u8>>,
    prefixes: Vec<Vec<u8>>,
}

impl Deps {
    pub fn new() -> Self {
        Self::default()
    }

    /// The value read this exact key.
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.keys.push(key.into());
        self
    }

    /// The value read every key under this prefix.
    pub fn prefix(mut self, prefix: impl Into<Vec<u8>>) -> Self {
        self.prefixes.push(prefix.into());
        self
    }
}

type Slot = (TypeId, String);
type Value = Arc<dyn Any + Send + Sync>;

#[derive(Default)]
struct Entries {
    /// By name, then type: found by `&str`, with no allocation per lookup.
    values: HashMap<String, Vec<(TypeId, Value)>>,
    /// Values held (each name may hold one per type).
    count: usize,
    /// The values derived from each key and prefix. A set, not a list: one
    /// key can back thousands of values (an owner's account backs every
    /// agent they own), and indexing a value must not scan them all.
    by_key: HashMap<Vec<u8>, HashSet<Slot>>,
    by_prefix: HashMap<Vec<u8>, HashSet<Slot>>,
    /// Longest prefix indexed, so invalidation only tries that many.
    longest_prefix: usize,
    /// Index entries held, stale ones included: bounds memory with `values`.
    indexed: usize,
}

impl Entries {
    fn get(&self, name: &str, kind: TypeId) -> Option<&Value> {
        let typed = self.values.get(name)?;
        typed.iter().find(|(k, _)| *k == kind).map(|(_, v)| v)
    }

    fn insert(&mut self, (kind, name): Slot, value: Value) {
        let typed = self.values.entry(name).or_default();
        match typed.iter_mut().find(|(k, _)| *k == kind) {
            Some(held) => held.1 = value,
            None => {
                typed.push((kind, value));
                self.count += 1;
            }
        }
    }

    fn forget(&mut self, slots: HashSet<Slot>) {
        for (kind, name) in slots {
            if let Some(typed) = self.values.get_mut(&name) {
                let before = typed.len();
                typed.retain(|(k, _)| *k != kind);
                self.count -= before - typed.len();
                if typed.is_empty() {
                    self.values.remove(&name);
                }
            }
        }
    }

    fn invalidate(&mut self, written: &[u8]) {
        if let Some(slots) = self.by_key.remove(written) {
            self.indexed = self.indexed.saturating_sub(slots.len());
            self.forget(slots);
        }
        for len in 0..=written.len().min(self.longest_prefix) {
            if let Some(slots) = self.by_prefix.remove(&written[..len]) {
                self.indexed = self.indexed.saturating_sub(slots.len());
                self.forget(slots);
            }
        }
    }

    /// Index `slot` under `dep`: 1 if it is new there, 0 if it was held.
    fn index(map: &mut HashMap<Vec<u8>, HashSet<Slot>>, dep: &[u8], slot: &Slot) -> usize {
        if let Some(slots) = map.get_mut(dep) {
            if slots.contains(slot) {
                return 0;
            }
            slots.insert(slot.clone());
        } else {
            map.insert(dep.to_vec(), HashSet::from([slot.clone()]));
        }
        1
    }
}

/// Where a cache in front of a shared store stands: whether the follower
/// that keeps it current looked recently enough for it to answer, and which
/// revisions it has applied (see `super::postgres`).
#[derive(Debug, Default)]
pub struct Freshness {
    /// Milliseconds since `epoch` until which the cache may answer.
    fresh_until_ms: AtomicU64,
    applied: RwLock<Applied>,
    epoch: std::sync::OnceLock<Instant>,
}

/// The revisions finished when the follower last looked: every one below
/// `below` except those still running then.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub below: u64,
    pub running: Vec<u64>,
}

impl Applied {
    pub fn covers(&self, revision: u64) -> bool {
        revision < self.below && !self.running.contains(&revision)
    }
}

impl Freshness {
    fn now_ms(&self) -> u64 {
        let epoch = self.epoch.get_or_init(Instant::now);
        epoch.elapsed().as_millis() as u64
    }

    /// Whether the follower looked recently enough for the cache to answer.
    pub fn is_fresh(&self) -> bool {
        self.now_ms() < self.fresh_until_ms.load(Ordering::Acquire)
    }

    pub(crate) fn looked(&self, started: Instant, bound: Duration, applied: Applied) {
        let epoch = *self.epoch.get_or_init(Instant::now);
        let until = started.saturating_duration_since(epoch) + bound;
        self.fresh_until_ms
            .store(until.as_millis() as u64, Ordering::Release);
        let mut held = self.applied.write().unwrap_or_else(|p| p.into_inner());
        // Looks only move forward.
        if applied.below >= held.below {
            *held = applied;
        }
    }

    pub(crate) fn stale(&self) {
        self.fresh_until_ms.store(0, Ordering::Release);
    }

    /// Whether every change of `revision` had been applied at the last look.
    pub fn has_applied(&self, revision: u64) -> bool {
        self.applied
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .covers(revision)
    }
}

/// An engine with a cache of derived values in front; itself a [`Store`], so
/// everything that writes goes through it and invalidates what it must.
pub struct CachedStore {
    engine: Arc<dyn Store>,
    entries: RwLock<Entries>,
    /// Bumped under the write lock after each commit reached the engine.
    commits: AtomicU64,
    capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Set when other processes write the same store: the cache answers
    /// only while its follower keeps up.
    freshness: Option<Arc<Freshness>>,
}

impl CachedStore {
    /// Keep at most `capacity` values (and as many index entries); past that
    /// the cache starts empty again, which costs only re-reads.
    pub fn new(engine: Arc<dyn Store>, capacity: usize) -> Self {
        Self {
            engine,
            entries: RwLock::new(Entries::default()),
            commits: AtomicU64::new(0),
            capacity,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            freshness: None,
        }
    }

    /// A cache in front of a store other processes write too: it answers
    /// only while `freshness` says its follower keeps up, and reads through
    /// to the engine otherwise.
    pub fn following(engine: Arc<dyn Store>, capacity: usize, freshness: Arc<Freshness>) -> Self {
        Self {
            freshness: Some(freshness),
            ..Self::new(engine, capacity)
        }
    }

    /// Drop what was derived from these keys: another process wrote them.
    pub fn invalidate(&self, keys: &[Vec<u8>]) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        self.commits.fetch_add(1, Ordering::AcqRel);
        for key in keys {
            entries.invalidate(key);
        }
    }

    /// Forget everything.
    pub fn clear(&self) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        self.commits.fetch_add(1, Ordering::AcqRel);
        *entries = Entries::default();
    }

    /// (hits, misses) since start.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// The value cached under `name` for type `T`, or the one `compute`
    /// derives now (with what it was derived from). Names are per type: two
    /// types may cache different views of the same records under one name.
    pub fn get_or_compute<T, E>(
        &self,
        name: &str,
        compute: impl FnOnce(&dyn Store) -> Result<(T, Deps), E>,
    ) -> Result<Arc<T>, E>
    where
        T: Send + Sync + 'static,
    {
        let behind = self.freshness.as_ref().is_some_and(|f| !f.is_fresh());
        if self.capacity == 0 || behind {
            return compute(self.engine.as_ref()).map(|(value, _)| Arc::new(value));
        }
        let kind = TypeId::of::<T>();
        if let Ok(entries) = self.entries.read() {
            if let Some(hit) = entries.get(name, kind) {
                if let Ok(hit) = hit.clone().downcast::<T>() {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(hit);
                }
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let before = self.commits.load(Ordering::Acquire);
        let (value, deps) = compute(self.engine.as_ref())?;
        let value = Arc::new(value);
        if let Ok(mut entries) = self.entries.write() {
            if self.commits.load(Ordering::Acquire) == before {
                let slot = (kind, name.to_owned());
                if entries.count >= self.capacity || entries.indexed >= self.capacity * 4 {
                    *entries = Entries::default();
                }
                let mut added = 0;
                for key in &deps.keys {
                    added += Entries::index(&mut entries.by_key, key, &slot);
                }
                for prefix in &deps.prefixes {
                    added += Entries::index(&mut entries.by_prefix, prefix, &slot);
                    entries.longest_prefix = entries.longest_prefix.max(prefix.len());
                }
                entries.indexed += added;
                entries.insert(slot, value.clone());
            }
        }
        Ok(value)
    }

    /// Values currently cached.
    pub fn len(&self) -> usize {
        self.entries.read().map(|e| e.count).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Store for CachedStore {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.engine.get(key)
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.engine.scan(prefix, after, limit)
    }

    fn commit(&self, tx: &Transaction) -> StoreResult<()> {
        let result = self.engine.commit(tx);
        // Invalidate even when the commit failed: an engine error may leave
        // it unknown whether the writes landed.
        match self.entries.write() {
            Ok(mut entries) => {
                self.commits.fetch_add(1, Ordering::AcqRel);
                for (key, _) in &tx.writes {
                    entries.invalidate(key);
                }
            }
            Err(poisoned) => {
                // A panic elsewhere while holding the lock: start empty.
                let mut entries = poisoned.into_inner();
                self.commits.fetch_add(1, Ordering::AcqRel);
                *entries = Entries::default();
            }
        }
        result
    }

    fn revision(&self) -> u64 {
        self.engine.revision()
    }

    fn has_applied(&self, revision: u64) -> bool {
        self.engine.has_applied(revision)
    }

    fn shared(&self) -> bool {
        self.engine.shared()
    }

    fn freshness(&self) -> Option<Arc<super::Freshness>> {
        self.engine.freshness()
    }

    fn follow(&self, cache: std::sync::Weak<CachedStore>) {
        self.engine.follow(cache)
    }

    fn flush(&self) -> StoreResult<()> {
        self.engine.flush()
    }

    fn export(&self) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.engine.export()
    }

    fn ping(&self) -> StoreResult<()> {
        self.engine.ping()
    }

    fn cache(&self) -> Option<&CachedStore> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use std::sync::atomic::AtomicUsize;

    fn cached() -> CachedStore {
        CachedStore::new(Arc::new(MemoryStore::new()), 1000)
    }

    fn put(store: &dyn Store, key: &str, value: &str) {
        let mut tx = Transaction::new();
        tx.put(key, value);
        store.commit(&tx).unwrap();
    }

    /// Reads `key` through the cache, counting engine reads.
    fn read(store: &CachedStore, key: &str, reads: &AtomicUsize) -> Option<Vec<u8>> {
        let value = store
            .get_or_compute::<Option<Vec<u8>>, crate::store::StoreError>(key, |engine| {
                reads.fetch_add(1, Ordering::SeqCst);
                Ok((engine.get(key.as_bytes())?, Deps::new().key(key)))
            })
            .unwrap();
        (*value).clone()
    }

    fn scan(store: &CachedStore, prefix: &str, reads: &AtomicUsize) -> usize {
        let value = store
            .get_or_compute::<usize, crate::store::StoreError>(prefix, |engine| {
                reads.fetch_add(1, Ordering::SeqCst);
                let n = engine.scan(prefix.as_bytes(), None, usize::MAX)?.len();
                Ok((n, Deps::new().prefix(prefix)))
            })
            .unwrap();
        *value
    }

    #[test]
    fn a_write_drops_what_was_derived_from_its_key() {
        let store = cached();
        let reads = AtomicUsize::new(0);
        put(&store, "user/1", "a");
        assert_eq!(read(&store, "user/1", &reads), Some(b"a".to_vec()));
        assert_eq!(read(&store, "user/1", &reads), Some(b"a".to_vec()));
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        put(&store, "user/2", "other key");
        assert_eq!(read(&store, "user/1", &reads), Some(b"a".to_vec()));
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        put(&store, "user/1", "b");
        assert_eq!(read(&store, "user/1", &reads), Some(b"b".to_vec()));
        let mut tx = Transaction::new();
        tx.delete("user/1");
        store.commit(&tx).unwrap();
        assert_eq!(read(&store, "user/1", &reads), None);
        // Absence is cached too, and ends when the key appears.
        assert_eq!(read(&store, "user/1", &reads), None);
        assert_eq!(reads.load(Ordering::SeqCst), 3);
        put(&store, "user/1", "c");
        assert_eq!(read(&store, "user/1", &reads), Some(b"c".to_vec()));
    }

    #[test]
    fn a_write_under_a_prefix_drops_scans_of_it() {
        let store = cached();
        let reads = AtomicUsize::new(0);
        put(&store, "grant/a/1", "");
        assert_eq!(scan(&store, "grant/a/", &reads), 1);
        put(&store, "grant/ab/1", "");
        put(&store, "grant/", "");
        assert_eq!(scan(&store, "grant/a/", &reads), 1);
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        put(&store, "grant/a/2", "");
        assert_eq!(scan(&store, "grant/a/", &reads), 2);
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_value_computed_across_a_commit_is_not_kept() {
        let store = cached();
        let reads = AtomicUsize::new(0);
        put(&store, "k", "old");
        let first = store
            .get_or_compute::<Option<Vec<u8>>, crate::store::StoreError>("k", |engine| {
                let seen = engine.get(b"k")?;
                // A writer lands between this read and the insertion.
                put(&store, "k", "new");
                Ok((seen, Deps::new().key("k")))
            })
            .unwrap();
        assert_eq!(first.as_deref(), Some(&b"old"[..]));
        assert_eq!(read(&store, "k", &reads), Some(b"new".to_vec()));
    }

    /// Many values derived from one key (every agent reads its owner's
    /// account): recomputing one indexes it once, and a write to the shared
    /// key drops every one of them.
    #[test]
    fn values_sharing_a_key_are_indexed_once_and_dropped_together() {
        let store = cached();
        let reads = AtomicUsize::new(0);
        let derived = |name: &str| {
            store
                .get_or_compute::<usize, crate::store::StoreError>(name, |engine| {
                    reads.fetch_add(1, Ordering::SeqCst);
                    let owner = engine.get(b"user/owner")?.map_or(0, |v| v.len());
                    Ok((owner, Deps::new().key("user/owner").key(name)))
                })
                .unwrap()
        };
        put(&store, "user/owner", "x");
        for i in 0..300 {
            assert_eq!(*derived(&format!("agent/{i}")), 1);
        }
        let indexed = store.entries.read().unwrap().indexed;
        assert_eq!(indexed, 600);
        // One value recomputed after its own key changed: indexed again
        // under that key, not a second time under the shared one.
        put(&store, "agent/7", "");
        assert_eq!(*derived("agent/7"), 1);
        assert_eq!(store.entries.read().unwrap().indexed, 600);
        assert_eq!(reads.load(Ordering::SeqCst), 301);
        put(&store, "user/owner", "xy");
        for i in 0..300 {
            assert_eq!(*derived(&format!("agent/{i}")), 2);
        }
        assert_eq!(reads.load(Ordering::SeqCst), 601);
    }

    #[test]
    fn the_cache_stays_bounded() {
        let store = CachedStore::new(Arc::new(MemoryStore::new()), 10);
        let reads = AtomicUsize::new(0);
        for i in 0..100 {
            read(&store, &format!("k/{i}"), &reads);
            assert!(store.len() <= 10);
        }
    }

    /// Readers racing writers: once a writer's commit has returned, no read
    /// that starts afterwards sees an older value, cache or not.
    #[test]
    fn no_read_after_an_acknowledged_write_sees_the_old_value() {
        let store = Arc::new(cached());
        put(store.as_ref(), "counter", "0");
        let acknowledged = Arc::new(AtomicUsize::new(0));
        let writer = {
            let (store, acknowledged) = (store.clone(), acknowledged.clone());
            std::thread::spawn(move || {
                for i in 1..=2_000usize {
                    put(store.as_ref(), "counter", &i.to_string());
                    acknowledged.store(i, Ordering::SeqCst);
                }
            })
        };
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (store, acknowledged) = (store.clone(), acknowledged.clone());
                std::thread::spawn(move || {
                    let reads = AtomicUsize::new(0);
                    while acknowledged.load(Ordering::SeqCst) < 2_000 {
                        let floor = acknowledged.load(Ordering::SeqCst);
                        let seen = read(&store, "counter", &reads).unwrap();
                        let seen: usize = String::from_utf8(seen).unwrap().parse().unwrap();
                        assert!(seen >= floor, "read {seen} after {floor} was acknowledged");
                    }
                })
            })
            .collect();
        writer.join().unwrap();
        for reader in readers {
            reader.join().unwrap();
        }
    }

    proptest::proptest! {
        /// Any sequence of writes, reads and scans answers exactly what the
        /// engine alone answers.
        #[test]
        fn reads_through_the_cache_equal_reads_of_the_engine(
            ops in proptest::collection::vec((0u8..4, 0usize..6, 0u8..3), 1..80)
        ) {
            const KEYS: [&str; 6] = ["a/1", "a/2", "a/12", "b/1", "ab/1", "a"];
            const PREFIXES: [&str; 6] = ["a/", "a", "b/", "", "a/1", "ab/"];
            let store = CachedStore::new(Arc::new(MemoryStore::new()), 4);
            let reads = AtomicUsize::new(0);
            for (op, index, value) in ops {
                match op {
                    0 => put(&store, KEYS[index], &value.to_string()),
                    1 => {
                        let mut tx = Transaction::new();
                        tx.delete(KEYS[index]);
                        store.commit(&tx).unwrap();
                    }
                    2 => {
                        let key = KEYS[index];
                        proptest::prop_assert_eq!(
                            read(&store, key, &reads),
                            store.engine.get(key.as_bytes()).unwrap()
                        );
                    }
                    _ => {
                        let prefix = PREFIXES[index];
                        proptest::prop_assert_eq!(
                            scan(&store, prefix, &reads),
                            store.engine.scan(prefix.as_bytes(), None, usize::MAX).unwrap().len()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn types_do_not_share_a_slot() {
        let store = cached();
        put(&store, "k", "v");
        let n = store
            .get_or_compute::<usize, crate::store::StoreError>("k", |_| Ok((7, Deps::new())))
            .unwrap();
        let s = store
            .get_or_compute::<String, crate::store::StoreError>("k", |_| {
                Ok(("seven".into(), Deps::new()))
            })
            .unwrap();
        assert_eq!((*n, s.as_str()), (7, "seven"));
    }
}
