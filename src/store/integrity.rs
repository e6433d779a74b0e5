//! How an engine proves at start-up that it holds exactly what it
//! acknowledged, so a damaged store is refused instead of served.
//!
//! Two facts are kept, and the proof needs both:
//! - a **digest** of the whole contents, updated in the same atomic commit as
//!   the writes (the XOR of one hash per entry, so a commit changes it by the
//!   entries it replaces and adds). A full scan that does not reproduce it
//!   means records were lost or altered, wherever they were.
//! - a **revision** counted by every commit, and a **high-water mark** kept in
//!   a file beside the store, advanced after the durable commits that need
//!   it. A store whose revision is below the mark lost acknowledged writes,
//!   even if what is left is self-consistent (sled silently drops everything
//!   after a damaged spot in its log).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};

use super::{StoreError, StoreResult};

/// Order-independent digest of a set of entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Add or remove one entry (XOR is its own inverse).
    pub fn toggle(&mut self, key: &[u8], value: &[u8]) {
        let mut hasher = Sha256::new();
        // The key's length keeps (k, v) pairs that concatenate alike apart.
        hasher.update((key.len() as u64).to_le_bytes());
        hasher.update(key);
        hasher.update(value);
        for (d, h) in self.0.iter_mut().zip(hasher.finalize()) {
            *d ^= h;
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Digest)
    }
}

/// What a successful proof established, for the log and `store verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// Commits the store has applied.
    pub revision: u64,
    /// The highest revision known to have been acknowledged durably.
    pub acknowledged: u64,
    pub entries: u64,
    /// The store predates integrity records and was given its first one.
    pub adopted: bool,
}

/// The high-water mark file: two checksummed slots written in turn, so a torn
/// write leaves the previous value readable.
pub struct RevisionMark {
    path: PathBuf,
    state: Mutex<MarkState>,
}

struct MarkState {
    file: File,
    written: u64,
    next_slot: u64,
}

impl MarkState {
    fn put(&mut self, path: &Path, revision: u64) -> StoreResult<()> {
        let offset = (self.next_slot % 2) * SLOT as u64;
        self.file
            .write_all_at(&slot_bytes(revision), offset)
            .map_err(|e| StoreError::Engine(format!("writing {}: {e}", path.display())))?;
        self.next_slot += 1;
        self.written = revision;
        Ok(())
    }
}

const SLOT: usize = 16;

fn slot_bytes(revision: u64) -> [u8; SLOT] {
    let mut out = [0u8; SLOT];
    out[..8].copy_from_slice(&revision.to_be_bytes());
    let check = Sha256::new()
        .chain_update(b"tessera revision mark")
        .chain_update(revision.to_be_bytes())
        .finalize();
    out[8..].copy_from_slice(&check[..8]);
    out
}

fn parse_slot(bytes: &[u8]) -> Option<u64> {
    let revision = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    (bytes.len() == SLOT && slot_bytes(revision)[..] == *bytes).then_some(revision)
}

impl RevisionMark {
    /// The mark in `path`: `Ok(None)` if there is no file yet, an error if the
    /// file exists but no slot is readable.
    pub fn read(path: &Path) -> StoreResult<Option<u64>> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StoreError::Engine(format!(
                    "reading {}: {e}",
                    path.display()
                )))
            }
        };
        let best = bytes.chunks(SLOT).filter_map(parse_slot).max();
        match best {
            Some(revision) => Ok(Some(revision)),
            None if bytes.is_empty() => Ok(None),
            None => Err(StoreError::Damaged(format!(
                "the revision mark {} is unreadable, so the store cannot prove it holds every \
                 acknowledged write",
                path.display()
            ))),
        }
    }

    /// Open the mark for writing, holding `revision` already. Nothing is
    /// written until [`Self::advance`].
    pub fn open_unset(path: &Path, revision: u64) -> StoreResult<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| StoreError::Engine(format!("opening {}: {e}", path.display())))?;
        Ok(Self {
            path: path.to_owned(),
            state: Mutex::new(MarkState {
                file,
                written: revision,
                next_slot: 0,
            }),
        })
    }

    /// Record that every commit up to `revision` is durable. Never moves back.
    pub fn advance(&self, revision: u64) -> StoreResult<()> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| StoreError::Engine("revision mark lock poisoned".into()))?;
        if state.written >= revision {
            return Ok(());
        }
        state.put(&self.path, revision)
    }

    /// Make the mark itself durable. Between syncs it may lag after a power
    /// loss, which weakens the proof but never fails a sound store.
    pub fn sync(&self) -> StoreResult<()> {
        let state = self
            .state
            .lock()
            .map_err(|_| StoreError::Engine("revision mark lock poisoned".into()))?;
        state
            .file
            .sync_data()
            .map_err(|e| StoreError::Engine(format!("syncing {}: {e}", self.path.display())))
    }
}

/// Compare what a full scan found with what the store and the mark say.
pub fn judge(
    stored_digest: Digest,
    scanned: Digest,
    revision: u64,
    mark: Option<u64>,
) -> Result<(), String> {
    if scanned != stored_digest {
        return Err("its contents do not match their digest: records were lost or altered".into());
    }
    if let Some(mark) = mark {
        if revision < mark {
            return Err(format!(
                "it holds revision {revision} but revision {mark} was acknowledged: \
                 the latest writes were lost"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_order_independent_and_removable() {
        let mut a = Digest::default();
        a.toggle(b"k1", b"v1");
        a.toggle(b"k2", b"v2");
        let mut b = Digest::default();
        b.toggle(b"k2", b"v2");
        b.toggle(b"k1", b"v1");
        assert_eq!(a, b);
        b.toggle(b"k2", b"v2");
        let mut only = Digest::default();
        only.toggle(b"k1", b"v1");
        assert_eq!(b, only);
        // Moving bytes between key and value changes the digest.
        let mut c = Digest::default();
        c.toggle(b"k", b"1v1");
        assert_ne!(only, c);
    }

    #[test]
    fn the_mark_survives_a_torn_slot_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.revision");
        assert_eq!(RevisionMark::read(&path).unwrap(), None);
        let mark = RevisionMark::open_unset(&path, 0).unwrap();
        mark.advance(5).unwrap();
        mark.advance(7).unwrap();
        mark.advance(6).unwrap();
        assert_eq!(RevisionMark::read(&path).unwrap(), Some(7));
        mark.advance(9).unwrap();
        drop(mark);
        // Tear the newest slot: the previous value is still there.
        let mut bytes = std::fs::read(&path).unwrap();
        let newest = bytes
            .chunks(SLOT)
            .position(|s| parse_slot(s) == Some(9))
            .unwrap();
        bytes[newest * SLOT + 3] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(RevisionMark::read(&path).unwrap(), Some(7));
        std::fs::write(&path, b"garbage that is no mark at all").unwrap();
        assert!(matches!(
            RevisionMark::read(&path),
            Err(StoreError::Damaged(_))
        ));
    }

    #[test]
    fn judging_refuses_lost_writes_and_altered_contents() {
        let mut d = Digest::default();
        d.toggle(b"k", b"v");
        assert!(judge(d, d, 10, Some(10)).is_ok());
        assert!(judge(d, d, 11, Some(10)).is_ok());
        assert!(judge(d, d, 10, None).is_ok());
        assert!(judge(d, d, 9, Some(10))
            .unwrap_err()
            .contains("revision 10"));
        assert!(judge(d, Digest::default(), 10, Some(10))
            .unwrap_err()
            .contains("digest"));
    }
}
