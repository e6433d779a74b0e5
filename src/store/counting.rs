//! A store that counts the entries it hands out, in front of any engine: for
//! tests and benchmarks that show how much an operation reads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{CachedStore, Store, StoreResult, Transaction};

pub struct CountingStore {
    engine: Arc<dyn Store>,
    entries: AtomicUsize,
}

impl CountingStore {
    pub fn new(engine: Arc<dyn Store>) -> Self {
        Self {
            engine,
            entries: AtomicUsize::new(0),
        }
    }

    /// Entries read since the last call (a `get` counts one, found or not;
    /// a scan counts what it returned, at least one).
    pub fn take_count(&self) -> usize {
        self.entries.swap(0, Ordering::SeqCst)
    }
}

impl Store for CountingStore {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.entries.fetch_add(1, Ordering::SeqCst);
        self.engine.get(key)
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let found = self.engine.scan(prefix, after, limit)?;
        self.entries.fetch_add(found.len().max(1), Ordering::SeqCst);
        Ok(found)
    }

    fn commit(&self, tx: &Transaction) -> StoreResult<()> {
        self.engine.commit(tx)
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
}
