//! Backups: one file holding a consistent snapshot of the store and the key
//! files (so restored tokens still verify and secrets still open), with a
//! SHA-256 trailer so a damaged file is refused rather than half-restored.
//!
//! Layout: `TESSERA-BACKUP\n`, a u32 format version, then records
//! (`1` store entry: key, value; `2` key file: name, bytes; `0` end), each
//! field a u32 length and bytes, all big-endian; then the digest of all of it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::store::{PostgresStore, SledStore, Store, Transaction};

const MAGIC: &[u8] = b"TESSERA-BACKUP\n";
const FORMAT: u32 = 1;

#[derive(Debug)]
pub struct Snapshot {
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// Key files by name (`root-1.key`, `data-1.key`...).
    pub key_files: Vec<(String, Vec<u8>)>,
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The key files of a keys directory.
pub fn key_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut files = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(files);
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".key") {
            let bytes =
                fs::read(entry.path()).map_err(|e| format!("{}: {e}", entry.path().display()))?;
            files.push((name, bytes));
        }
    }
    files.sort();
    Ok(files)
}

pub fn encode(snapshot: &Snapshot) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 << 16);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_be_bytes());
    for (k, v) in &snapshot.entries {
        out.push(1);
        field(&mut out, k);
        field(&mut out, v);
    }
    for (name, bytes) in &snapshot.key_files {
        out.push(2);
        field(&mut out, name.as_bytes());
        field(&mut out, bytes);
    }
    out.push(0);
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

pub fn decode(bytes: &[u8]) -> Result<Snapshot, String> {
    let bad = |why: &str| format!("not a usable tessera backup: {why}");
    if bytes.len() < MAGIC.len() + 4 + 1 + 32 || !bytes.starts_with(MAGIC) {
        return Err(bad("wrong header"));
    }
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body)[..] != *digest {
        return Err(bad("checksum mismatch (damaged or truncated)"));
    }
    let mut at = MAGIC.len();
    let format = u32::from_be_bytes(body[at..at + 4].try_into().map_err(|_| bad("short"))?);
    if format != FORMAT {
        return Err(bad(&format!("format {format} is not supported")));
    }
    at += 4;
    let take = |at: &mut usize| -> Result<Vec<u8>, String> {
        let len = body
            .get(*at..*at + 4)
            .ok_or_else(|| bad("truncated"))?
            .try_into()
            .map(u32::from_be_bytes)
            .map_err(|_| bad("truncated"))? as usize;
        let v = body
            .get(*at + 4..*at + 4 + len)
            .ok_or_else(|| bad("truncated"))?
            .to_vec();
        *at += 4 + len;
        Ok(v)
    };
    let mut snapshot = Snapshot {
        entries: Vec::new(),
        key_files: Vec::new(),
    };
    loop {
        let tag = *body.get(at).ok_or_else(|| bad("no end marker"))?;
        at += 1;
        match tag {
            0 => break,
            1 => {
                let k = take(&mut at)?;
                let v = take(&mut at)?;
                snapshot.entries.push((k, v));
            }
            2 => {
                let name = String::from_utf8(take(&mut at)?).map_err(|_| bad("key file name"))?;
                if name.contains('/') || !name.ends_with(".key") {
                    return Err(bad("unexpected file in backup"));
                }
                let data = take(&mut at)?;
                snapshot.key_files.push((name, data));
            }
            _ => return Err(bad("unknown record")),
        }
    }
    Ok(snapshot)
}

/// Write `bytes` to `path` atomically with mode 0600 (backups hold keys).
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("partial");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Take a snapshot of a running store plus its key files.
pub fn snapshot(store: &dyn Store, keys_dir: &Path) -> Result<Snapshot, String> {
    Ok(Snapshot {
        entries: store.export().map_err(|e| e.to_string())?,
        key_files: key_files(keys_dir)?,
    })
}

/// Rebuild a data directory from a backup. Refuses a directory that already
/// has a store or keys unless `force`, in which case they are replaced.
pub fn restore(
    bytes: &[u8],
    store_dir: &Path,
    keys_dir: &Path,
    force: bool,
) -> Result<usize, String> {
    let snapshot = decode(bytes)?;
    let occupied = |d: &Path| {
        fs::read_dir(d)
            .map(|mut e| e.next().is_some())
            .unwrap_or(false)
    };
    if occupied(store_dir) || occupied(keys_dir) {
        if !force {
            return Err(format!(
                "{} already holds a store or keys; pass --force to replace them",
                store_dir.parent().unwrap_or(store_dir).display()
            ));
        }
        SledStore::destroy(store_dir).map_err(|e| format!("{}: {e}", store_dir.display()))?;
        if keys_dir.exists() {
            fs::remove_dir_all(keys_dir).map_err(|e| format!("{}: {e}", keys_dir.display()))?;
        }
    }
    let store = SledStore::open(store_dir).map_err(|e| e.to_string())?;
    // Marked incomplete until the keys are in place, as a restore into
    // PostgreSQL is: an interrupted restore is refused, not served half.
    crate::storecopy::mark_incomplete(&store, "a backup")?;
    for chunk in snapshot.entries.chunks(10_000) {
        let mut tx = Transaction::new();
        for (k, v) in chunk {
            tx.put(k.clone(), v.clone());
        }
        store.commit(&tx).map_err(|e| e.to_string())?;
    }
    store.flush().map_err(|e| e.to_string())?;
    fs::create_dir_all(keys_dir).map_err(|e| format!("{}: {e}", keys_dir.display()))?;
    fs::set_permissions(
        keys_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .map_err(|e| format!("{}: {e}", keys_dir.display()))?;
    for (name, data) in &snapshot.key_files {
        write_file(&keys_dir.join(name), data)?;
    }
    crate::storecopy::mark_complete(&store)?;
    // The data directory is tessera's alone, whatever the umask was.
    let data_dir = store_dir.parent().unwrap_or(store_dir);
    crate::datadir::tighten(data_dir).map_err(|e| e.to_string())?;
    Ok(snapshot.entries.len())
}

/// Restore a backup into a PostgreSQL store and its key files into
/// `keys_dir` (the directory every replica is given with `--keys`). Refuses
/// a database or keys directory that holds anything unless `force`, in
/// which case both are emptied first.
///
/// Marked incomplete while it runs (see `storecopy`): an interrupted
/// restore is refused by every server until a rerun with `--force` finishes.
pub fn restore_postgres(
    bytes: &[u8],
    store: &PostgresStore,
    keys_dir: &Path,
    force: bool,
) -> Result<usize, String> {
    let snapshot = decode(bytes)?;
    if snapshot
        .entries
        .iter()
        .any(|(k, _)| k == crate::storecopy::INCOMPLETE.as_bytes())
    {
        return Err("this backup is of an interrupted copy; it is not a whole store".into());
    }
    let has_keys = !key_files(keys_dir)?.is_empty();
    let has_data = !store
        .scan(b"", None, 1)
        .map_err(|e| e.to_string())?
        .is_empty();
    if has_data || has_keys {
        if !force {
            return Err(format!(
                "{} already holds {}; pass --force to replace {}",
                if has_data {
                    "the database".to_owned()
                } else {
                    keys_dir.display().to_string()
                },
                if has_data { "a store" } else { "keys" },
                if has_data && has_keys {
                    "the store and the keys"
                } else {
                    "it"
                }
            ));
        }
        store.clear().map_err(|e| e.to_string())?;
        if keys_dir.exists() {
            fs::remove_dir_all(keys_dir).map_err(|e| format!("{}: {e}", keys_dir.display()))?;
        }
    }
    crate::storecopy::mark_incomplete(store, "a backup")?;
    for chunk in snapshot.entries.chunks(crate::storecopy::PAGE) {
        let mut tx = Transaction::new();
        for (k, v) in chunk {
            tx.put(k.clone(), v.clone());
        }
        store.commit(&tx).map_err(|e| e.to_string())?;
    }
    // The keys are in place before the store stops being marked: a store
    // that can be served always has them.
    crate::datadir::create_private(keys_dir).map_err(|e| e.to_string())?;
    fs::set_permissions(
        keys_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .map_err(|e| format!("{}: {e}", keys_dir.display()))?;
    for (name, data) in &snapshot.key_files {
        write_file(&keys_dir.join(name), data)?;
    }
    crate::storecopy::mark_complete(store)?;
    Ok(snapshot.entries.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_restore_into_sled_is_refused_and_a_forced_rerun_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("data/store");
        let keys_dir = dir.path().join("data/keys");
        let bytes = encode(&Snapshot {
            entries: vec![(b"user/1".to_vec(), b"{}".to_vec())],
            key_files: vec![("root-1.key".into(), b"abc".to_vec())],
        });
        // The keys cannot be written (a file where their directory goes):
        // the store is filled, then the restore stops.
        fs::create_dir_all(dir.path().join("data")).unwrap();
        fs::write(&keys_dir, b"in the way").unwrap();
        assert!(restore(&bytes, &store_dir, &keys_dir, false).is_err());
        {
            let store = SledStore::open(&store_dir).unwrap();
            assert!(matches!(
                crate::migrate::schema::version(&store),
                Err(crate::migrate::schema::SchemaError::IncompleteCopy)
            ));
        }
        fs::remove_file(&keys_dir).unwrap();
        restore(&bytes, &store_dir, &keys_dir, true).unwrap();
        let store = SledStore::open(&store_dir).unwrap();
        assert!(crate::migrate::schema::version(&store).is_ok());
        assert_eq!(store.get(b"user/1").unwrap(), Some(b"{}".to_vec()));
        assert!(keys_dir.join("root-1.key").exists());
    }

    #[test]
    fn round_trips_and_refuses_damage() {
        let s = Snapshot {
            entries: vec![(b"a".to_vec(), b"1".to_vec()), (vec![0, 255], vec![])],
            key_files: vec![("root-1.key".into(), b"abc".to_vec())],
        };
        let bytes = encode(&s);
        let back = decode(&bytes).unwrap();
        assert_eq!(back.entries, s.entries);
        assert_eq!(back.key_files, s.key_files);
        let mut damaged = bytes.clone();
        damaged[20] ^= 1;
        assert!(decode(&damaged).unwrap_err().contains("checksum"));
        assert!(decode(&bytes[..bytes.len() - 5]).is_err());
        assert!(decode(b"hello").is_err());
    }
}
