//! Schema versions: the store records its version; numbered steps (in
//! `migrations/schema.rs`) move it forward one at a time, each atomic and
//! stamped. A store newer than this binary is refused rather than guessed at.

use crate::store::{Expect, Store, StoreError, Transaction};

mod steps {
    include!("../../migrations/schema.rs");
}

pub use steps::STEPS;

pub const VERSION_KEY: &str = crate::domain::keyspace::META_SCHEMA_VERSION;

/// The version this binary writes and understands.
pub fn current() -> u32 {
    STEPS.len() as u32 + 1
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("the store is at schema version {found}, newer than this tessera understands ({supported}); use a newer tessera or restore a backup")]
    TooNew { found: u32, supported: u32 },
    #[error("the store's schema version record is damaged: {0:?}")]
    Damaged(String),
    #[error("the store holds an interrupted `tessera store copy` (or restore): it is not whole, so it is not served; rerun the same command to finish it")]
    IncompleteCopy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The recorded version; an unstamped store is version 1 if it holds
/// anything (it predates versioning) and `None` if it is empty.
pub fn version(store: &dyn Store) -> Result<Option<u32>, SchemaError> {
    // Every server and command asks this first: a half-filled store must
    // not pass for an empty or a complete one.
    if store
        .get(crate::domain::keyspace::META_COPY_INCOMPLETE.as_bytes())?
        .is_some()
    {
        return Err(SchemaError::IncompleteCopy);
    }
    match store.get(VERSION_KEY.as_bytes())? {
        Some(bytes) => {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            text.parse()
                .map(Some)
                .map_err(|_| SchemaError::Damaged(text))
        }
        None if store.scan(b"", None, 1)?.is_empty() => Ok(None),
        None => Ok(Some(1)),
    }
}

/// (version, names of the steps still to run).
pub fn status(store: &dyn Store) -> Result<(u32, Vec<&'static str>), SchemaError> {
    let version = version(store)?.unwrap_or_else(current);
    if version > current() {
        return Err(SchemaError::TooNew {
            found: version,
            supported: current(),
        });
    }
    let pending = STEPS[(version as usize - 1).min(STEPS.len())..]
        .iter()
        .map(|(name, _)| *name)
        .collect();
    Ok((version, pending))
}

/// Bring the store to the current version. `before` runs once, before the
/// first step, when there is anything to do (the caller takes a backup).
/// An empty store is simply stamped. Returns the steps applied.
pub fn upgrade(
    store: &dyn Store,
    before: impl FnOnce(u32) -> Result<(), String>,
) -> Result<Vec<&'static str>, String> {
    let Some(mut version) = version(store).map_err(|e| e.to_string())? else {
        let mut tx = Transaction::durable();
        tx.expect(VERSION_KEY, Expect::Absent)
            .put(VERSION_KEY, current().to_string());
        store.commit(&tx).map_err(|e| e.to_string())?;
        return Ok(Vec::new());
    };
    let (_, pending) = status(store).map_err(|e| e.to_string())?;
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    before(version)?;
    let mut applied = Vec::new();
    while version < current() {
        let (name, step) = STEPS[version as usize - 1];
        let mut tx = step(store).map_err(|e| format!("schema step {version} ({name}): {e}"))?;
        let stamp = if store
            .get(VERSION_KEY.as_bytes())
            .map_err(|e| e.to_string())?
            .is_some()
        {
            Expect::Equals(version.to_string().into_bytes())
        } else {
            Expect::Absent
        };
        tx.expect(VERSION_KEY, stamp)
            .put(VERSION_KEY, (version + 1).to_string());
        tx.durable = true;
        store
            .commit(&tx)
            .map_err(|e| format!("schema step {version} ({name}): {e}"))?;
        applied.push(name);
        version += 1;
    }
    Ok(applied)
}
