//! Storage: one small, object-safe key-value trait that every engine implements.
//!
//! The domain layer never talks to sled directly. It reads keys, then commits a
//! [`Transaction`]: a set of writes guarded by expectations about what it read
//! (optimistic concurrency). An engine applies the whole transaction or none of
//! it, so multi-key security writes (a user and its username index, a session and
//! its per-user index) can never be half-written, and two racing writers cannot
//! both win. Transactions marked durable are flushed before `commit` returns.

mod cached;
mod counting;
mod integrity;
mod memory;
mod postgres;
mod sled_store;

#[cfg(test)]
mod conformance;

pub use cached::{Applied, CachedStore, Deps, Freshness};
pub use counting::CountingStore;
pub use integrity::Proof;
pub use memory::MemoryStore;
pub use postgres::{PostgresStore, StartupLock, FOLLOWER_APPLICATION};
pub use sled_store::SledStore;

use std::path::Path;
use std::sync::Arc;

/// The engine an operator chose: PostgreSQL when `url` is given
/// (`--store postgres://...`), else sled in `sled_dir`.
pub fn open(url: Option<&str>, sled_dir: &Path) -> StoreResult<Arc<dyn Store>> {
    match url {
        Some(url) => Ok(Arc::new(PostgresStore::connect(url)?)),
        None => Ok(Arc::new(SledStore::open(sled_dir)?)),
    }
}

/// What a store can fail with. Conflicts are expected under concurrency and are
/// retried or reported by the domain; everything else is an engine fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a concurrent write changed the data this write depends on")]
    Conflict,
    #[error("the data directory {0} is in use by another tessera process")]
    Locked(String),
    #[error("storage engine error: {0}")]
    Engine(String),
    /// The engine cannot be reached right now (a database down or
    /// restarting): answered `503`, and service resumes when it returns.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The store cannot prove it holds every acknowledged write, or a record
    /// failed its checksum: it must not be served. Says what and where.
    #[error("the store is damaged: {0}")]
    Damaged(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A precondition checked atomically with the writes of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    Absent,
    Present,
    Equals(Vec<u8>),
}

impl Expect {
    pub fn holds(&self, current: Option<&[u8]>) -> bool {
        match (self, current) {
            (Expect::Absent, None) => true,
            (Expect::Present, Some(_)) => true,
            (Expect::Equals(want), Some(have)) => want.as_slice() == have,
            _ => false,
        }
    }
}

/// An atomic unit of change: every expectation must hold, then every write is
/// applied (a `None` value deletes the key).
#[derive(Debug, Default, Clone)]
pub struct Transaction {
    pub expects: Vec<(Vec<u8>, Expect)>,
    pub writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Flush to disk before acknowledging: set for every security-relevant write.
    pub durable: bool,
}

impl Transaction {
    pub fn new() -> Self {
        Self::default()
    }

    /// A transaction flushed to disk before commit returns.
    pub fn durable() -> Self {
        Self {
            durable: true,
            ..Self::default()
        }
    }

    pub fn expect(&mut self, key: impl Into<Vec<u8>>, expect: Expect) -> &mut Self {
        self.expects.push((key.into(), expect));
        self
    }

    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.writes.push((key.into(), Some(value.into())));
        self
    }

    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> &mut Self {
        self.writes.push((key.into(), None));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

/// The storage engine contract. Object safe, so the server holds an
/// `Arc<dyn Store>` and tests swap engines freely.
pub trait Store: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>>;

    /// Up to `limit` entries whose key starts with `prefix`, in key order,
    /// starting strictly after `after` when given (for paging).
    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>>;

    /// Apply the transaction atomically, or fail with [`StoreError::Conflict`]
    /// when an expectation does not hold (and then nothing is written).
    fn commit(&self, tx: &Transaction) -> StoreResult<()>;

    /// Force everything written so far to stable storage.
    fn flush(&self) -> StoreResult<()>;

    /// Every entry, in key order, as of one instant: no transaction is half
    /// in it. Used for backups while the server runs.
    fn export(&self) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>>;

    /// Cheap liveness probe for `/ready`.
    fn ping(&self) -> StoreResult<()> {
        self.get(b"meta/ping").map(|_| ())
    }

    /// The read cache in front of this store, if it has one (see
    /// [`CachedStore`]); engines themselves have none.
    fn cache(&self) -> Option<&CachedStore> {
        None
    }

    /// The newest revision this process committed: what a write answer
    /// hands back (`X-Tessera-Revision`) for a later read to wait for.
    fn revision(&self) -> u64;

    /// Whether this process reads everything up to `revision` (one it or
    /// another replica handed out). A store only this process writes has
    /// applied every revision it made.
    fn has_applied(&self, revision: u64) -> bool {
        revision <= self.revision()
    }

    /// Whether other processes write this store too (then the read cache
    /// must follow their changes).
    fn shared(&self) -> bool {
        false
    }

    /// For a shared store: where a cache following it stands. Local
    /// engines have nothing to follow.
    fn freshness(&self) -> Option<Arc<Freshness>> {
        None
    }

    /// For a shared store: keep `cache` in step with the other processes'
    /// commits from now on (until the cache is dropped).
    fn follow(&self, _cache: std::sync::Weak<CachedStore>) {}
}

/// The first key strictly greater than every key starting with `prefix`, used
/// as an exclusive upper bound for prefix scans. `None` means "no bound".
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}
