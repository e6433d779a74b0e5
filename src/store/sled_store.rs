//! The embedded default engine: sled 0.34 in one data directory.
//!
//! Everything lives in sled's default tree, namespaced by key prefix, so one
//! single-tree transaction covers any set of keys atomically.

use std::path::Path;
use std::sync::{Condvar, Mutex};

use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{Store, StoreError, StoreResult, Transaction};

pub struct SledStore {
    db: sled::Db,
    /// Commits share it; an export holds it alone, so the export sees every
    /// transaction whole or not at all (sled iterators alone do not promise
    /// that across keys).
    gate: std::sync::RwLock<()>,
    writers: WriterSlots,
}

/// Bounds the transactions in flight to the number of cores. sled applies
/// them one at a time under its own lock anyway; a burst of writers beyond
/// that only spins and switches contexts on the cores the reads need (under
/// a 5% write mix it more than doubled the reads' p99). Waiting writers
/// sleep here instead.
struct WriterSlots {
    free: Mutex<usize>,
    freed: Condvar,
}

struct WriterSlot<'a>(&'a WriterSlots);

impl WriterSlots {
    fn new(slots: usize) -> Self {
        Self {
            free: Mutex::new(slots.max(1)),
            freed: Condvar::new(),
        }
    }

    fn take(&self) -> StoreResult<WriterSlot<'_>> {
        let poisoned = |_| StoreError::Engine("writer slots poisoned".into());
        let mut free = self.free.lock().map_err(poisoned)?;
        while *free == 0 {
            free = self.freed.wait(free).map_err(poisoned)?;
        }
        *free -= 1;
        Ok(WriterSlot(self))
    }
}

impl Drop for WriterSlot<'_> {
    fn drop(&mut self) {
        // Even a poisoned count is still the count.
        let mut free = self.0.free.lock().unwrap_or_else(|e| e.into_inner());
        *free += 1;
        self.0.freed.notify_one();
    }
}

impl SledStore {
    /// Open (or create) the store in `dir`. A second process on the same
    /// directory gets [`StoreError::Locked`], not a crash.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(ref io)
                    if io.kind() == std::io::ErrorKind::Other
                        && io.to_string().contains("could not acquire lock") =>
                {
                    StoreError::Locked(dir.display().to_string())
                }
                other => engine(other),
            })?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            db,
            gate: std::sync::RwLock::new(()),
            writers: WriterSlots::new(cores),
        })
    }
}

fn engine(e: sled::Error) -> StoreError {
    StoreError::Engine(e.to_string())
}

impl Store for SledStore {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.db.get(key).map_err(engine)?.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        let iter = match after {
            Some(after) if after >= prefix => {
                let end = super::prefix_end(prefix);
                let start = std::ops::Bound::Excluded(after.to_vec());
                match end {
                    Some(end) => self.db.range((start, std::ops::Bound::Excluded(end))),
                    None => self.db.range((start, std::ops::Bound::Unbounded)),
                }
            }
            _ => self.db.scan_prefix(prefix),
        };
        for item in iter.take(limit) {
            let (k, v) = item.map_err(engine)?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn commit(&self, tx: &Transaction) -> StoreResult<()> {
        let _slot = self.writers.take()?;
        let _shared = self
            .gate
            .read()
            .map_err(|_| StoreError::Engine("store gate poisoned".into()))?;
        let result = self.db.transaction(|t| {
            for (key, expect) in &tx.expects {
                let current = t.get(key)?;
                if !expect.holds(current.as_deref()) {
                    return Err(ConflictableTransactionError::Abort(()));
                }
            }
            for (key, value) in &tx.writes {
                match value {
                    Some(value) => {
                        t.insert(key.as_slice(), value.as_slice())?;
                    }
                    None => {
                        t.remove(key.as_slice())?;
                    }
                }
            }
            Ok(())
        });
        match result {
            Ok(()) => {}
            Err(TransactionError::Abort(())) => return Err(StoreError::Conflict),
            Err(TransactionError::Storage(e)) => return Err(engine(e)),
        }
        if tx.durable {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&self) -> StoreResult<()> {
        self.db.flush().map(|_| ()).map_err(engine)
    }

    fn export(&self) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let _alone = self
            .gate
            .write()
            .map_err(|_| StoreError::Engine("store gate poisoned".into()))?;
        self.db
            .iter()
            .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(engine))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn writer_slots_bound_what_runs_at_once() {
        let slots = Arc::new(WriterSlots::new(2));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (slots, running, peak) = (slots.clone(), running.clone(), peak.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let _slot = slots.take().unwrap();
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_micros(50));
                        running.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let peak = peak.load(Ordering::SeqCst);
        assert!((1..=2).contains(&peak), "peak {peak}");
        assert_eq!(*slots.free.lock().unwrap(), 2, "every slot came back");
    }
}
