//! In-memory engine: a `BTreeMap` behind a lock. Used by tests and benchmarks;
//! it honours the same transaction semantics as sled so both pass one suite.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use super::{prefix_end, Store, StoreError, StoreResult, Transaction};

#[derive(Default)]
pub struct MemoryStore {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
    revision: AtomicU64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn poisoned() -> StoreError {
        StoreError::Engine("memory store lock poisoned".into())
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        let map = self.map.read().map_err(|_| Self::poisoned())?;
        Ok(map.get(key).cloned())
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let map = self.map.read().map_err(|_| Self::poisoned())?;
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_vec()),
            _ => Bound::Included(prefix.to_vec()),
        };
        let end = match prefix_end(prefix) {
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        Ok(map
            .range((start, end))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn commit(&self, tx: &Transaction) -> StoreResult<()> {
        let mut map = self.map.write().map_err(|_| Self::poisoned())?;
        for (key, expect) in &tx.expects {
            if !expect.holds(map.get(key).map(Vec::as_slice)) {
                return Err(StoreError::Conflict);
            }
        }
        for (key, value) in &tx.writes {
            match value {
                Some(value) => map.insert(key.clone(), value.clone()),
                None => map.remove(key),
            };
        }
        if !tx.writes.is_empty() {
            self.revision.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    fn flush(&self) -> StoreResult<()> {
        Ok(())
    }

    fn revision(&self) -> u64 {
        self.revision.load(Ordering::SeqCst)
    }

    fn export(&self) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let map = self.map.read().map_err(|_| Self::poisoned())?;
        Ok(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}
