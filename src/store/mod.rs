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
mod sled_store;

#[cfg(test)]
mod conformance;

pub use cached::{CachedStore, Deps};
pub use counting::CountingStore;
pub use integrity::Proof;
pub use memory::MemoryStore;
pub use sled_store::SledStore;

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
