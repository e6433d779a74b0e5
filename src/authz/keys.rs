//! Key material: the Ed25519 root keys that sign every token, and the symmetric
//! data keys that encrypt secrets at rest.
//!
//! Keys are files in `<data>/keys/`, created on first start with mode 0600 and
//! reused afterwards. Each key has a numeric id: the newest root key signs and
//! stamps its id into the token (`root_key_id`), older ones keep verifying the
//! tokens they signed until those expire.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use biscuit_auth::{Algorithm, KeyPair, PrivateKey, PublicKey};
use rand::RngCore;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("no key with id {0}")]
    UnknownId(u32),
}

fn file_err(path: &Path, reason: impl ToString) -> KeyError {
    KeyError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The root signing keys: the active one and every older one still trusted.
pub struct RootKeys {
    active_id: u32,
    active: KeyPair,
    public: BTreeMap<u32, PublicKey>,
}

/// A published verification key, as served by `GET /auth/keys`.
#[derive(Debug, Clone, Serialize)]
pub struct PublishedKey {
    pub id: u32,
    pub algorithm: &'static str,
    /// Hex of the raw 32-byte Ed25519 public key.
    pub public_key: String,
    /// The same key in Biscuit's prefixed form (`ed25519/<hex>`).
    pub biscuit: String,
    pub active: bool,
}

impl RootKeys {
    /// A fresh, unsaved key: for tests and benchmarks.
    pub fn ephemeral() -> Self {
        let active = KeyPair::new();
        Self {
            active_id: 1,
            public: BTreeMap::from([(1, active.public())]),
            active,
        }
    }

    /// The newest pair signs; every pair verifies. `None` when empty.
    fn from_pairs(mut pairs: Vec<(u32, KeyPair)>) -> Option<Self> {
        pairs.sort_by_key(|(id, _)| *id);
        let public = pairs.iter().map(|(id, kp)| (*id, kp.public())).collect();
        let (active_id, active) = pairs.pop()?;
        Some(Self {
            active_id,
            active,
            public,
        })
    }

    /// Load every `root-<id>.key` in `dir`; `None` when there is none.
    pub fn load(dir: &Path) -> Result<Option<Self>, KeyError> {
        let mut pairs = Vec::new();
        for (id, path) in key_files(dir, "root")? {
            let hex = read_secret(&path)?;
            let private = PrivateKey::from_bytes_hex(hex.trim(), Algorithm::Ed25519)
                .map_err(|e| file_err(&path, e))?;
            pairs.push((id, KeyPair::from(&private)));
        }
        Ok(Self::from_pairs(pairs))
    }

    /// Load the keys in `dir`, creating the first one if none exist. Only
    /// for an empty store: see `datadir::keys_for`.
    pub fn load_or_create(dir: &Path) -> Result<Self, KeyError> {
        if let Some(keys) = Self::load(dir)? {
            return Ok(keys);
        }
        let kp = KeyPair::new();
        write_secret(
            &dir.join("root-1.key"),
            kp.private().to_bytes_hex().as_bytes(),
        )?;
        Self::from_pairs(vec![(1, kp)])
            .ok_or_else(|| file_err(dir, "no root key could be loaded or created"))
    }

    /// Create a new active root key next to the existing ones. Tokens signed by
    /// older keys keep verifying; new tokens are signed by the new key.
    pub fn rotate(dir: &Path) -> Result<u32, KeyError> {
        let next = key_files(dir, "root")?
            .last()
            .map(|(id, _)| id + 1)
            .unwrap_or(1);
        let kp = KeyPair::new();
        write_secret(
            &dir.join(format!("root-{next}.key")),
            kp.private().to_bytes_hex().as_bytes(),
        )?;
        Ok(next)
    }

    pub fn active_id(&self) -> u32 {
        self.active_id
    }

    pub fn signer(&self) -> &KeyPair {
        &self.active
    }

    pub fn public(&self, id: Option<u32>) -> Result<PublicKey, KeyError> {
        // Tokens without a key id predate rotation: they can only be ours if
        // signed by the first key.
        let id = id.unwrap_or(1);
        self.public.get(&id).copied().ok_or(KeyError::UnknownId(id))
    }

    pub fn published(&self) -> Vec<PublishedKey> {
        self.public
            .iter()
            .map(|(id, key)| PublishedKey {
                id: *id,
                algorithm: "ed25519",
                public_key: key.to_bytes_hex(),
                biscuit: key.to_string(),
                active: *id == self.active_id,
            })
            .collect()
    }
}

/// Symmetric keys for encrypting data at rest (secrets), with ids for rotation.
pub struct DataKeys {
    active_id: u32,
    keys: BTreeMap<u32, [u8; 32]>,
}

impl DataKeys {
    pub fn ephemeral() -> Self {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        Self {
            active_id: 1,
            keys: BTreeMap::from([(1, key)]),
        }
    }

    /// Load every `data-<id>.key` in `dir`; `None` when there is none.
    pub fn load(dir: &Path) -> Result<Option<Self>, KeyError> {
        let mut keys = BTreeMap::new();
        for (id, path) in key_files(dir, "data")? {
            let text = read_secret(&path)?;
            let bytes = hex::decode(text.trim()).map_err(|e| file_err(&path, e))?;
            let key: [u8; 32] = bytes
                .try_into()
                .map_err(|_| file_err(&path, "a data key is 32 bytes"))?;
            keys.insert(id, key);
        }
        Ok(keys
            .keys()
            .last()
            .copied()
            .map(|active_id| Self { active_id, keys }))
    }

    /// Load the keys in `dir`, creating the first one if none exist. Only
    /// for an empty store: see `datadir::keys_for`.
    pub fn load_or_create(dir: &Path) -> Result<Self, KeyError> {
        if let Some(keys) = Self::load(dir)? {
            return Ok(keys);
        }
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        write_secret(&dir.join("data-1.key"), hex::encode(key).as_bytes())?;
        Ok(Self {
            active_id: 1,
            keys: BTreeMap::from([(1, key)]),
        })
    }

    /// A digest per key id that tells keys apart without revealing them.
    pub fn fingerprints(&self) -> BTreeMap<u32, String> {
        use sha2::{Digest, Sha256};
        self.keys
            .iter()
            .map(|(id, key)| {
                let mut hasher = Sha256::new();
                hasher.update(b"tessera data key fingerprint\0");
                hasher.update(key);
                (*id, hex::encode(&hasher.finalize()[..16]))
            })
            .collect()
    }

    /// Add a new data key file (the next id) and return its id. It becomes the
    /// active key on the next load.
    pub fn create_next(dir: &Path) -> Result<u32, KeyError> {
        let next = key_files(dir, "data")?
            .last()
            .map(|(id, _)| id + 1)
            .unwrap_or(1);
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        write_secret(
            &dir.join(format!("data-{next}.key")),
            hex::encode(key).as_bytes(),
        )?;
        Ok(next)
    }

    pub fn active(&self) -> (u32, &[u8; 32]) {
        (self.active_id, &self.keys[&self.active_id])
    }

    pub fn get(&self, id: u32) -> Result<&[u8; 32], KeyError> {
        self.keys.get(&id).ok_or(KeyError::UnknownId(id))
    }
}

/// Create `dir` (0700) if needed, before a key is written into it.
fn key_dir(dir: &Path) -> Result<(), KeyError> {
    fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| file_err(dir, e))
}

/// `<kind>-<id>.key` files in `dir`, sorted by id; none if `dir` is missing.
fn key_files(dir: &Path, kind: &str) -> Result<Vec<(u32, PathBuf)>, KeyError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| file_err(dir, e))? {
        let entry = entry.map_err(|e| file_err(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(id) = name
            .strip_prefix(kind)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|rest| rest.strip_suffix(".key"))
            .and_then(|id| id.parse::<u32>().ok())
        else {
            continue;
        };
        found.push((id, entry.path()));
    }
    found.sort();
    Ok(found)
}

fn read_secret(path: &Path) -> Result<String, KeyError> {
    let mode = fs::metadata(path)
        .map_err(|e| file_err(path, e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(file_err(
            path,
            format!("permissions {:o} are too open; expected 600", mode & 0o777),
        ));
    }
    fs::read_to_string(path).map_err(|e| file_err(path, e))
}

/// Write a key file atomically (temp file, fsync, rename) with mode 0600, so a
/// crash never leaves a truncated key behind.
fn write_secret(path: &Path, contents: &[u8]) -> Result<(), KeyError> {
    if let Some(parent) = path.parent() {
        key_dir(parent)?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| file_err(&tmp, e))?;
    file.write_all(contents).map_err(|e| file_err(&tmp, e))?;
    file.sync_all().map_err(|e| file_err(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| file_err(path, e))?;
    if let Some(parent) = path.parent() {
        if let Ok(dir) = fs::File::open(parent) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reused_with_private_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let first = RootKeys::load_or_create(dir.path()).unwrap();
        let again = RootKeys::load_or_create(dir.path()).unwrap();
        assert_eq!(
            first.published()[0].public_key,
            again.published()[0].public_key
        );
        let mode = fs::metadata(dir.path().join("root-1.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let d1 = DataKeys::load_or_create(dir.path()).unwrap();
        let d2 = DataKeys::load_or_create(dir.path()).unwrap();
        assert_eq!(d1.active(), d2.active());
    }

    #[test]
    fn rotation_keeps_old_keys_verifying() {
        let dir = tempfile::tempdir().unwrap();
        let before = RootKeys::load_or_create(dir.path()).unwrap();
        assert_eq!(RootKeys::rotate(dir.path()).unwrap(), 2);
        let after = RootKeys::load_or_create(dir.path()).unwrap();
        assert_eq!(after.active_id(), 2);
        assert_eq!(
            after.public(Some(1)).unwrap().to_bytes(),
            before.public(Some(1)).unwrap().to_bytes()
        );
        assert!(after.public(Some(3)).is_err());
    }

    #[test]
    fn refuses_a_world_readable_key() {
        let dir = tempfile::tempdir().unwrap();
        RootKeys::load_or_create(dir.path()).unwrap();
        let path = dir.path().join("root-1.key");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = RootKeys::load_or_create(dir.path()).err().unwrap();
        assert!(err.to_string().contains("too open"));
    }
}
