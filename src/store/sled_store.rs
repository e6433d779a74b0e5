//! The embedded default engine: sled 0.34 in one data directory.
//!
//! Everything lives in sled's default tree, namespaced by key prefix, so one
//! transaction covers any set of keys atomically. A second tree holds the
//! integrity records (revision and digest, see [`super::integrity`]), written
//! in the same transaction as the data, and a mark file beside the directory
//! holds the highest revision acknowledged durably. Opening proves the store
//! against both before anything is served.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::integrity::{self, Digest, Proof, RevisionMark};
use super::{Store, StoreError, StoreResult, Transaction};

const INTEGRITY_TREE: &[u8] = b"tessera/integrity";
const REVISION: &[u8] = b"revision";
const DIGEST: &[u8] = b"digest";

pub struct SledStore {
    db: sled::Db,
    integrity: sled::Tree,
    dir: PathBuf,
    mark: RevisionMark,
    /// The highest revision committed by this process.
    revision: AtomicU64,
    /// What opening proved.
    proof: Proof,
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

/// The mark file of the store in `dir`: beside the directory, not in it, so
/// replacing or damaging the directory's files cannot take the mark along.
pub fn mark_path(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "store".into());
    dir.with_file_name(format!("{name}.revision"))
}

/// Run sled code that may panic on damaged files (it asserts on what it
/// reads), turning a panic into a refusal.
fn guarded<T>(what: &str, dir: &Path, f: impl FnOnce() -> StoreResult<T>) -> StoreResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let detail = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("no detail");
            Err(StoreError::Damaged(format!(
                "sled failed while {what} {}: {detail}",
                dir.display()
            )))
        }
    }
}

fn read_u64(bytes: Option<sled::IVec>) -> StoreResult<u64> {
    match bytes {
        None => Ok(0),
        Some(b) => b
            .as_ref()
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::Damaged("the revision record is malformed".into())),
    }
}

impl SledStore {
    /// Open (or create) the store in `dir` and prove it holds every
    /// acknowledged write (see [`super::integrity`]); a store that fails the
    /// proof is refused with [`StoreError::Damaged`]. A second process on the
    /// same directory gets [`StoreError::Locked`], not a crash.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        let existed = dir.join("db").exists();
        let damaged = |e: StoreError| match e {
            // An existing store sled cannot open is as damaged as one it
            // opens wrong.
            StoreError::Damaged(why) | StoreError::Engine(why) if existed => {
                StoreError::Damaged(format!(
                    "{} cannot be served: {why}. Restore the data directory from a backup \
                     (tessera restore --from FILE --data DIR --force; upgrades leave one in \
                     DIR/backups)",
                    dir.display()
                ))
            }
            other => other,
        };
        let (store, acknowledged) =
            guarded("opening", dir, || Self::open_unproven(dir)).map_err(damaged)?;
        guarded("reading", dir, || store.prove(acknowledged)).map_err(damaged)
    }

    /// The engine, and the mark as found (`None`: no mark yet).
    fn open_unproven(dir: &Path) -> StoreResult<(Self, Option<u64>)> {
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
        let integrity = db.open_tree(INTEGRITY_TREE).map_err(engine)?;
        let path = mark_path(dir);
        let acknowledged = RevisionMark::read(&path)?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let store = Self {
            mark: RevisionMark::open_unset(&path, acknowledged.unwrap_or(0))?,
            db,
            integrity,
            dir: dir.to_owned(),
            revision: AtomicU64::new(0),
            proof: Proof {
                revision: 0,
                acknowledged: 0,
                entries: 0,
                adopted: false,
            },
            gate: std::sync::RwLock::new(()),
            writers: WriterSlots::new(cores),
        };
        Ok((store, acknowledged))
    }

    /// Scan everything, reproduce the digest and compare it and the revision
    /// with the integrity records and the mark.
    fn prove(mut self, acknowledged: Option<u64>) -> StoreResult<Self> {
        let mut scanned = Digest::default();
        let mut entries = 0u64;
        for item in self.db.iter() {
            let (k, v) = item.map_err(engine)?;
            scanned.toggle(&k, &v);
            entries += 1;
        }
        let revision = read_u64(self.integrity.get(REVISION).map_err(engine)?)?;
        let stored = self.integrity.get(DIGEST).map_err(engine)?;
        let stored = match stored {
            Some(bytes) => Digest::from_bytes(&bytes)
                .ok_or_else(|| StoreError::Damaged("the digest record is malformed".into()))?,
            None if acknowledged.is_some_and(|r| r > 0) => {
                return Err(StoreError::Damaged(
                    "its integrity records are missing although a revision mark exists".into(),
                ))
            }
            None => {
                // A store written before integrity records existed (or a
                // new one): it is taken as it is, once.
                let adopt = (&*self.db, &self.integrity).transaction(|(_, m)| {
                    m.insert(REVISION, &1u64.to_be_bytes())?;
                    m.insert(DIGEST, &scanned.0)?;
                    Ok::<_, ConflictableTransactionError<()>>(())
                });
                adopt.map_err(|e| StoreError::Engine(format!("{e:?}")))?;
                self.db.flush().map_err(engine)?;
                if entries > 0 {
                    tracing::warn!(
                        store = %self.dir.display(),
                        entries,
                        "store had no integrity records; adopted as it is"
                    );
                }
                self.revision.store(1, Ordering::SeqCst);
                self.mark.advance(1)?;
                self.mark.sync()?;
                self.proof = Proof {
                    revision: 1,
                    acknowledged: 1,
                    entries,
                    adopted: true,
                };
                return Ok(self);
            }
        };
        integrity::judge(stored, scanned, revision, acknowledged).map_err(StoreError::Damaged)?;
        self.revision.store(revision, Ordering::SeqCst);
        // The mark catches up with commits that were durable but not yet
        // marked when the last process stopped.
        self.mark.advance(revision)?;
        self.mark.sync()?;
        self.proof = Proof {
            revision,
            acknowledged: acknowledged.unwrap_or(revision),
            entries,
            adopted: false,
        };
        Ok(self)
    }

    /// What opening proved.
    pub fn proof(&self) -> &Proof {
        &self.proof
    }

    /// Remove the store in `dir` and its mark (for restoring over it).
    pub fn destroy(dir: &Path) -> std::io::Result<()> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        match std::fs::remove_file(mark_path(dir)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

fn engine(e: sled::Error) -> StoreError {
    match e {
        // A record that fails its checksum is damage, not a passing fault.
        sled::Error::Corruption { .. } => StoreError::Damaged(e.to_string()),
        other => StoreError::Engine(other.to_string()),
    }
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

    fn revision(&self) -> u64 {
        self.revision.load(Ordering::SeqCst)
    }

    fn commit(&self, tx: &Transaction) -> StoreResult<()> {
        let _slot = self.writers.take()?;
        let _shared = self
            .gate
            .read()
            .map_err(|_| StoreError::Engine("store gate poisoned".into()))?;
        let result = (&*self.db, &self.integrity).transaction(|(t, m)| {
            for (key, expect) in &tx.expects {
                let current = t.get(key)?;
                if !expect.holds(current.as_deref()) {
                    return Err(ConflictableTransactionError::Abort(()));
                }
            }
            let mut digest = match m.get(DIGEST)? {
                Some(bytes) => Digest::from_bytes(&bytes).unwrap_or_default(),
                None => Digest::default(),
            };
            // Each write replaces what the key held (a key written twice in
            // one transaction reads its first write back here).
            for (key, value) in &tx.writes {
                let old = match value {
                    Some(value) => t.insert(key.as_slice(), value.as_slice())?,
                    None => t.remove(key.as_slice())?,
                };
                if let Some(old) = old {
                    digest.toggle(key, &old);
                }
                if let Some(value) = value {
                    digest.toggle(key, value);
                }
            }
            let revision = match m.get(REVISION)? {
                Some(bytes) => u64::from_be_bytes(bytes.as_ref().try_into().unwrap_or([0; 8])),
                None => 0,
            } + 1;
            m.insert(REVISION, &revision.to_be_bytes())?;
            m.insert(DIGEST, &digest.0)?;
            Ok(revision)
        });
        let revision = match result {
            Ok(revision) => revision,
            Err(TransactionError::Abort(())) => return Err(StoreError::Conflict),
            Err(TransactionError::Storage(e)) => return Err(engine(e)),
        };
        self.revision.fetch_max(revision, Ordering::SeqCst);
        if tx.durable {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&self) -> StoreResult<()> {
        // Every commit applied before the flush starts is durable after it.
        let applied = self.revision.load(Ordering::SeqCst);
        self.db.flush().map_err(engine)?;
        self.mark.advance(applied)
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
