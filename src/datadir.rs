//! The data directory is tessera's alone: nobody else on the machine may
//! read it, and its keys are the ones its store was written with.
//!
//! Modes: every directory in it is 0700 and every file 0600 (the binary also
//! sets its umask to 077, so what the storage engine creates later is born
//! private). A directory that group or others can enter is refused once the
//! store has been claimed (`meta/private_files`); a store written by an
//! older tessera, or a directory an operator created beforehand, is
//! tightened once instead, so upgrading does not break a working install.
//!
//! Keys: the store records the fingerprint of every root and data key it was
//! written with (`meta/keys`). New keys are created only for an empty store;
//! a store that holds data and whose keys are missing or different is
//! refused, because new keys would void every token and make every secret
//! unreadable without a word.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::authz::keys::{DataKeys, KeyError, RootKeys};
use crate::store::{Expect, Store, StoreError, Transaction};

pub const META_PRIVATE_FILES: &str = "meta/private_files";
pub const META_KEYS: &str = "meta/keys";

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error(
        "{} is accessible to other users of this machine (mode {mode:o}); tessera keeps \
         passwords, memory and conversations there. Make it private again with \
         `chmod -R go-rwx {}` and start tessera again",
        path.display(),
        data_dir.display()
    )]
    Exposed {
        path: PathBuf,
        mode: u32,
        data_dir: PathBuf,
    },
    #[error(
        "the store in {} holds data but {what}. tessera will not create new keys for it: \
         they would void every token and leave every secret unreadable. Put the original \
         {} back, or restore a backup (which holds the keys): \
         `tessera restore --data {} --from FILE --force`",
        data_dir.display(),
        keys_dir.display(),
        data_dir.display()
    )]
    Keys {
        what: String,
        data_dir: PathBuf,
        keys_dir: PathBuf,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DataDirError + '_ {
    move |e| DataDirError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Create `dir` (and its parents) with the last component 0700.
pub fn create_private(dir: &Path) -> Result<(), DataDirError> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
    }
    Ok(())
}

/// Every directory at or under `dir` that group or others may enter or list
/// (symbolic links are not followed), with its mode.
pub fn exposed_dirs(dir: &Path) -> Result<Vec<(PathBuf, u32)>, DataDirError> {
    let mut exposed = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        let meta = fs::symlink_metadata(&at).map_err(io_err(&at))?;
        if !meta.is_dir() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            exposed.push((at.clone(), mode));
        }
        for entry in fs::read_dir(&at).map_err(io_err(&at))? {
            pending.push(entry.map_err(io_err(&at))?.path());
        }
    }
    Ok(exposed)
}

/// Make every directory at or under `dir` 0700 and every file 0600; returns
/// what had to change.
pub fn tighten(dir: &Path) -> Result<Vec<PathBuf>, DataDirError> {
    let mut changed = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        let meta = fs::symlink_metadata(&at).map_err(io_err(&at))?;
        let want = if meta.is_dir() {
            0o700
        } else if meta.is_file() {
            0o600
        } else {
            continue;
        };
        if meta.permissions().mode() & 0o777 != want {
            fs::set_permissions(&at, fs::Permissions::from_mode(want)).map_err(io_err(&at))?;
            changed.push(at.clone());
        }
        if meta.is_dir() {
            for entry in fs::read_dir(&at).map_err(io_err(&at))? {
                pending.push(entry.map_err(io_err(&at))?.path());
            }
        }
    }
    Ok(changed)
}

/// Refuse an exposed directory in a data directory whose store has been
/// claimed; `exposed` was listed before the store was opened.
pub fn check_private(
    data_dir: &Path,
    exposed: &[(PathBuf, u32)],
    store: &dyn Store,
) -> Result<(), DataDirError> {
    match exposed.first() {
        Some((path, mode)) if store.get(META_PRIVATE_FILES.as_bytes())?.is_some() => {
            Err(DataDirError::Exposed {
                path: path.clone(),
                mode: *mode,
                data_dir: data_dir.to_path_buf(),
            })
        }
        Some(_) => {
            tracing::warn!(
                dir = %data_dir.display(),
                "the data directory was readable by other users; made private"
            );
            Ok(())
        }
        None => Ok(()),
    }
}

/// What the store remembers of its keys: root keys by their public key, data
/// keys by a digest (the key itself never enters the store).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFingerprints {
    pub root: BTreeMap<u32, String>,
    pub data: BTreeMap<u32, String>,
}

impl KeyFingerprints {
    pub fn of(root: &RootKeys, data: &DataKeys) -> Self {
        Self {
            root: root
                .published()
                .into_iter()
                .map(|k| (k.id, k.public_key))
                .collect(),
            data: data.fingerprints(),
        }
    }

    /// The first difference that makes `present` not the keys of a store that
    /// recorded `self`: a recorded key that is missing or different. Keys
    /// added since (a rotation) are fine.
    fn mismatch(&self, present: &Self) -> Option<String> {
        for (kind, recorded, found) in [
            ("root", &self.root, &present.root),
            ("data", &self.data, &present.data),
        ] {
            for (id, print) in recorded {
                match found.get(id) {
                    None => return Some(format!("its {kind} key {id} is missing")),
                    Some(other) if other != print => {
                        return Some(format!(
                            "its {kind} key {id} is not the one the store was written with"
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
        None
    }
}

/// The keys for `store`, read from `keys_dir`: created there only when the
/// store is empty (`had_data` false), refused when missing or different.
pub fn keys_for(
    data_dir: &Path,
    keys_dir: &Path,
    store: &dyn Store,
    had_data: bool,
) -> Result<(RootKeys, DataKeys), DataDirError> {
    let refuse = |what: String| DataDirError::Keys {
        what,
        data_dir: data_dir.to_path_buf(),
        keys_dir: keys_dir.to_path_buf(),
    };
    if !had_data {
        return Ok((
            RootKeys::load_or_create(keys_dir)?,
            DataKeys::load_or_create(keys_dir)?,
        ));
    }
    let root = RootKeys::load(keys_dir)?
        .ok_or_else(|| refuse(format!("{} has no root key", keys_dir.display())))?;
    let data = DataKeys::load(keys_dir)?
        .ok_or_else(|| refuse(format!("{} has no data key", keys_dir.display())))?;
    if let Some(recorded) = recorded_keys(store)? {
        if let Some(what) = recorded.mismatch(&KeyFingerprints::of(&root, &data)) {
            return Err(refuse(what));
        }
    }
    Ok((root, data))
}

fn recorded_keys(store: &dyn Store) -> Result<Option<KeyFingerprints>, DataDirError> {
    match store.get(META_KEYS.as_bytes())? {
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            StoreError::Damaged(format!("the record of the store's keys: {e}")).into()
        }),
        None => Ok(None),
    }
}

/// Record the keys in use and that the directory is claimed, then make every
/// file private. Runs after schema upgrades: an empty store is stamped first.
pub fn claim(
    data_dir: &Path,
    store: &dyn Store,
    root: &RootKeys,
    data: &DataKeys,
) -> Result<(), DataDirError> {
    let prints = KeyFingerprints::of(root, data);
    let recorded_bytes = store.get(META_KEYS.as_bytes())?;
    let recorded: Option<KeyFingerprints> = recorded_bytes
        .as_deref()
        .and_then(|b| serde_json::from_slice(b).ok());
    let claimed = store.get(META_PRIVATE_FILES.as_bytes())?.is_some();
    if recorded.as_ref() != Some(&prints) || !claimed {
        let encoded = serde_json::to_vec(&prints)
            .map_err(|e| StoreError::Engine(format!("encoding key fingerprints: {e}")))?;
        let mut tx = Transaction::durable();
        tx.expect(
            META_KEYS,
            match recorded_bytes {
                Some(bytes) => Expect::Equals(bytes),
                None => Expect::Absent,
            },
        )
        .put(META_KEYS, encoded)
        .put(META_PRIVATE_FILES, "1");
        store.commit(&tx)?;
    }
    let changed = tighten(data_dir)?;
    if !changed.is_empty() {
        tracing::info!(
            files = changed.len(),
            "made files in the data directory private"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tighten_makes_directories_0700_and_files_0600() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let sub = dir.path().join("store");
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("db"), b"x").unwrap();
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(sub.join("db"), fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(exposed_dirs(dir.path()).unwrap().len(), 1);
        let changed = tighten(dir.path()).unwrap();
        assert!(changed.contains(&sub) && changed.contains(&sub.join("db")));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&sub), 0o700);
        assert_eq!(mode(&sub.join("db")), 0o600);
        assert!(exposed_dirs(dir.path()).unwrap().is_empty());
        assert!(tighten(dir.path()).unwrap().is_empty(), "idempotent");
    }

    #[test]
    fn a_recorded_key_that_is_missing_or_different_is_a_mismatch() {
        let root = RootKeys::ephemeral();
        let data = DataKeys::ephemeral();
        let recorded = KeyFingerprints::of(&root, &data);
        assert_eq!(recorded.mismatch(&recorded), None);
        let other = KeyFingerprints::of(&RootKeys::ephemeral(), &data);
        assert!(recorded.mismatch(&other).unwrap().contains("root key 1"));
        let other = KeyFingerprints::of(&root, &DataKeys::ephemeral());
        assert!(recorded.mismatch(&other).unwrap().contains("data key 1"));
        let mut rotated = recorded.clone();
        rotated.root.insert(2, "new".into());
        assert_eq!(
            recorded.mismatch(&rotated),
            None,
            "keys added since are fine"
        );
        let mut lost = recorded.clone();
        lost.data.clear();
        assert!(recorded.mismatch(&lost).unwrap().contains("missing"));
    }
}
