//! Operator tasks run from the command line against a stopped server's data
//! directory (the store lock makes sure of that).

use std::path::Path;
use std::sync::Arc;

use crate::authz::keys::DataKeys;
use crate::config::Config;
use crate::domain::secrets::Secrets;
use crate::store::{PostgresStore, SledStore, Store};

const ROTATION_MARKER: &str = "data-rotation.pending";

/// Re-encrypt every secret (and every TOTP secret) under a new data key.
/// Safe to interrupt and rerun:
/// the new key is written (and remembered in a marker file) before any secret
/// moves, each secret moves in its own atomic write, and a rerun resumes with
/// the same key instead of making another. `limit` bounds how many secrets
/// move in this run (tests interrupt with it). Returns (key id, moved, done).
pub fn rotate_data_key(config: &Config, limit: usize) -> Result<(u32, usize, bool), String> {
    // Opened as the server opens it: keys that are not the store's are
    // refused before anything is re-encrypted.
    let (store, _, _) = crate::AppState::open_data_dir(config).map_err(|e| e.to_string())?;
    rotate_data_key_in(&config.keys_dir(), store, limit)
}

pub fn rotate_data_key_in(
    keys_dir: &Path,
    store: Arc<dyn Store>,
    limit: usize,
) -> Result<(u32, usize, bool), String> {
    let marker = keys_dir.join(ROTATION_MARKER);
    let target = match std::fs::read_to_string(&marker) {
        Ok(text) => text
            .trim()
            .parse::<u32>()
            .map_err(|_| format!("{} is damaged; it should hold a key id", marker.display()))?,
        Err(_) => {
            // Make sure the current keys load (and a first key exists) first.
            DataKeys::load_or_create(keys_dir).map_err(|e| e.to_string())?;
            let id = DataKeys::create_next(keys_dir).map_err(|e| e.to_string())?;
            std::fs::write(&marker, id.to_string())
                .map_err(|e| format!("{}: {e}", marker.display()))?;
            id
        }
    };
    let keys = DataKeys::load_or_create(keys_dir).map_err(|e| e.to_string())?;
    keys.get(target).map_err(|e| e.to_string())?;
    let secrets = Secrets::new(store.clone());
    let mut moved = secrets
        .reseal_all(&keys, target, limit)
        .map_err(|e| e.to_string())?;
    // Second factors' TOTP secrets are sealed under the same key.
    if moved < limit {
        moved += crate::domain::factors::reseal_all(store.as_ref(), &keys, target, limit - moved)
            .map_err(|e| e.to_string())?;
    }
    store.flush().map_err(|e| e.to_string())?;
    let done = moved < limit;
    if done {
        std::fs::remove_file(&marker).map_err(|e| format!("{}: {e}", marker.display()))?;
    }
    Ok((target, moved, done))
}

/// `tessera users reset-factors`: remove every second factor of `username`
/// and end their sessions, with the server stopped, for a person (the last
/// admin, say) locked out by a lost phone and spent recovery codes. The
/// password stays: they sign in with it alone afterwards. Audited, with no
/// actor. Returns whether they had any factor.
pub fn reset_factors(config: &Config, username: &str) -> Result<bool, String> {
    use crate::domain::{audit::AuditEvent, factors, keyspace, sessions, users};
    use crate::store::Transaction;
    // Opened as the server opens it: the store lock refuses a running
    // server's directory, and keys that are not the store's are refused.
    let (store, _, _) = crate::AppState::open_data_dir(config).map_err(|e| e.to_string())?;
    let name = users::normalize_username(username).map_err(|e| e.to_string())?;
    let id = store
        .get(keyspace::username(&name).as_bytes())
        .map_err(|e| e.to_string())?
        .map(|id| String::from_utf8_lossy(&id).into_owned())
        .ok_or_else(|| format!("no user named {name}"))?;
    let mut tx = Transaction::durable();
    let had = factors::stage_clear(store.as_ref(), &mut tx, &id).map_err(|e| e.to_string())?;
    let ended =
        sessions::revoke_all_into(store.as_ref(), &mut tx, &id, None).map_err(|e| e.to_string())?;
    AuditEvent::new(None, "user.reset_factors_offline", &name)
        .concerning(&id)
        .detail(serde_json::json!({ "factors_cleared": had, "sessions_ended": ended }))
        .record_into(&mut tx)
        .map_err(|e| e.to_string())?;
    store.commit(&tx).map_err(|e| e.to_string())?;
    store.flush().map_err(|e| e.to_string())?;
    Ok(had)
}

/// What `tessera store verify` established.
#[derive(Debug)]
pub struct Verified {
    /// sled's start-up proof; PostgreSQL has none (see [`verify_store`]).
    pub proof: Option<crate::store::Proof>,
    /// Entries read and decoded.
    pub records: u64,
}

/// On sled, the start-up proof (see `store/integrity.rs`); on PostgreSQL,
/// which keeps no digest or revision mark of ours, nothing like it. Then, on
/// either, every record decoded as what its key says it is. Reads in pages:
/// a store can be larger than memory.
pub fn verify_store(config: &Config) -> Result<Verified, String> {
    if let Some(url) = &config.store_url {
        let store = PostgresStore::connect(url).map_err(|e| e.to_string())?;
        let records = decode_all(&store, &crate::storecopy::redact(url))?;
        return Ok(Verified {
            proof: None,
            records,
        });
    }
    let dir = config.store_dir();
    if !dir.is_dir() {
        return Err(format!("there is no store in {}", dir.display()));
    }
    let store = SledStore::open(&dir).map_err(|e| e.to_string())?;
    let records = decode_all(&store, &dir.display().to_string())?;
    Ok(Verified {
        proof: Some(store.proof().clone()),
        records,
    })
}

/// Read every entry of `store` and decode it; the count, or what does not
/// decode (`place` names the store in the message).
fn decode_all(store: &dyn Store, place: &str) -> Result<u64, String> {
    // As every server does first: an interrupted copy or restore is not a
    // whole store, however well its records decode.
    crate::migrate::schema::version(store).map_err(|e| format!("{place}: {e}"))?;
    let mut records = 0u64;
    let mut undecodable = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store
            .scan(b"", after.as_deref(), 10_000)
            .map_err(|e| e.to_string())?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (key, value) in &page {
            records += 1;
            if let Err(why) = crate::domain::check_record(key, value) {
                undecodable.push(format!("{}: {why}", String::from_utf8_lossy(key)));
            }
        }
    }
    if !undecodable.is_empty() {
        let shown = undecodable.iter().take(10).cloned().collect::<Vec<_>>();
        return Err(format!(
            "{} record(s) in {place} do not decode (first: {}); restore from a backup",
            undecodable.len(),
            shown.join("; ")
        ));
    }
    Ok(records)
}
