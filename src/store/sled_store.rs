//! The embedded default engine: sled 0.34 in one data directory.
//!
//! Everything lives in sled's default tree, namespaced by key prefix, so one
//! single-tree transaction covers any set of keys atomically.

use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{Store, StoreError, StoreResult, Transaction};

pub struct SledStore {
    db: sled::Db,
    /// Commits share it; an export holds it alone, so the export sees every
    /// transaction whole or not at all (sled iterators alone do not promise
    /// that across keys).
    gate: std::sync::RwLock<()>,
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
        Ok(Self {
            db,
            gate: std::sync::RwLock::new(()),
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
