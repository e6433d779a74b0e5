//! `tessera store copy`: move a whole install between engines, with its
//! servers stopped: from sled in a data directory into PostgreSQL when one
//! host is outgrown, and back.
//!
//! A copy can be cut short (a killed process, a lost connection) and must
//! never then pass for a finished one. So the target must be empty when a
//! copy begins (or be emptied, with `--force`), and the copy's first write
//! there is a marker, [`INCOMPLETE`]: a store holding it is refused by the
//! schema check every server and command runs first
//! (`migrate::schema::version`). The entries follow in pages of plain puts
//! (a put is idempotent), each page also deleting what the target holds in
//! that key range and the source does not. Then both sides are read back and
//! compared, and only when they are equal is the marker removed, in the last
//! write. Rerunning the same command on a target holding the marker resumes:
//! it goes over every page again, so it ends equal to a clean copy whatever
//! the interrupted run had written.
//!
//! Signing and data keys are files and stay files: never copied into a
//! database. The report says where they are, for `--keys`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::domain::keyspace::META_COPY_INCOMPLETE as INCOMPLETE_KEY;
use crate::store::{Expect, PostgresStore, SledStore, Store, StoreError, Transaction};

/// The marker a copy (or a restore into PostgreSQL) writes first and
/// removes last.
pub const INCOMPLETE: &str = INCOMPLETE_KEY;

/// Entries per transaction. Each key a PostgreSQL transaction writes takes
/// an advisory lock (see `store/postgres.rs`), and those live in the shared
/// lock table, sized `max_locks_per_transaction` (64) times the connections
/// (6,400 slots with PostgreSQL's defaults): a page must fit well inside it.
pub(crate) const PAGE: usize = 1_000;

/// Entries of a store, in key order.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// One side of a copy, as the operator names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A data directory; the store is sled in its `store` directory.
    Sled(PathBuf),
    /// A PostgreSQL database.
    Postgres(String),
}

impl Endpoint {
    /// A `postgres://` (or `postgresql://`) URL, else a data directory.
    pub fn parse(text: &str) -> Self {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Endpoint::Postgres(text.to_owned())
        } else {
            Endpoint::Sled(PathBuf::from(text))
        }
    }

    /// For messages and the marker: a URL without its password.
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Sled(dir) => format!("sled in {}", dir.display()),
            Endpoint::Postgres(url) => format!("PostgreSQL at {}", redact(url)),
        }
    }

    fn store_dir(dir: &Path) -> PathBuf {
        Config::new(dir).store_dir()
    }
}

/// `url` with any password replaced: what is printed or stored must not
/// carry the database's credentials.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            // Passwords may also ride in the query string.
            let tail = match tail.split_once('?') {
                Some((path, query)) => format!(
                    "{path}?{}",
                    query
                        .split('&')
                        .map(|p| if p.starts_with("password=") {
                            "password=***"
                        } else {
                            p
                        })
                        .collect::<Vec<_>>()
                        .join("&")
                ),
                None => tail.to_owned(),
            };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// What a finished copy checked.
#[derive(Debug)]
pub struct CopyReport {
    /// Entries per kind (a key's prefix up to its first `/`), read back from
    /// both sides and found equal.
    pub kinds: BTreeMap<String, u64>,
    pub entries: u64,
    /// The target held an interrupted copy, which this run finished.
    pub resumed: bool,
    /// The target held something else and was emptied first (`--force`).
    pub replaced: bool,
}

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    Done(CopyReport),
    /// Stopped after writing `written` entries, as asked (`stop_after`):
    /// the target still holds the marker.
    Stopped {
        written: u64,
    },
}

/// An opened side, kept concrete: emptying a target differs per engine.
enum Side {
    Sled { store: SledStore, data_dir: PathBuf },
    Postgres(PostgresStore),
}

impl Side {
    fn store(&self) -> &dyn Store {
        match self {
            Side::Sled { store, .. } => store,
            Side::Postgres(store) => store,
        }
    }
}

fn store_error(what: &str) -> impl Fn(StoreError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn open_sled(store_dir: &Path) -> Result<SledStore, String> {
    SledStore::open(store_dir).map_err(|e| match e {
        StoreError::Locked(_) => format!(
            "{} is in use by a running tessera server; stop it first (a copy needs every \
             server on both sides stopped)",
            store_dir.parent().unwrap_or(store_dir).display()
        ),
        other => format!("{}: {other}", store_dir.display()),
    })
}

/// The application name every running server's follower connects with:
/// one per server on a PostgreSQL store.
use crate::store::FOLLOWER_APPLICATION as FOLLOWER;

/// How many tessera servers are running on the database at `url`, counted
/// by their followers' connections. PostgreSQL has no directory lock to
/// refuse a copy or a restore under running servers, as sled's does.
pub fn servers_on(url: &str) -> Result<i64, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting a runtime: {e}"))?;
    let place = redact(url);
    runtime.block_on(async {
        let failed = |e: tokio_postgres::Error| format!("PostgreSQL at {place}: {e}");
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(failed)?;
        let connection = tokio::spawn(connection);
        let row = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND application_name = $1",
                &[&FOLLOWER],
            )
            .await
            .map_err(failed)?;
        drop(client);
        let _ = connection.await;
        Ok(row.get::<_, i64>(0))
    })
}

/// Refuse a database that running servers use.
fn refuse_running(url: &str, what: &Endpoint) -> Result<(), String> {
    match servers_on(url)? {
        0 => Ok(()),
        n => Err(format!(
            "{n} tessera server(s) are running on {}; stop them first (a copy needs every \
             server on both sides stopped)",
            what.describe()
        )),
    }
}

fn open_source(from: &Endpoint) -> Result<Side, String> {
    match from {
        Endpoint::Sled(dir) => {
            let store_dir = Endpoint::store_dir(dir);
            // Opening would create an empty store: a mistyped path must
            // not copy nothing.
            if !store_dir.join("db").exists() {
                return Err(format!("there is no tessera store in {}", dir.display()));
            }
            Ok(Side::Sled {
                store: open_sled(&store_dir)?,
                data_dir: dir.clone(),
            })
        }
        Endpoint::Postgres(url) => {
            let store = PostgresStore::connect(url).map_err(store_error(&from.describe()))?;
            refuse_running(url, from)?;
            Ok(Side::Postgres(store))
        }
    }
}

fn open_target(to: &Endpoint) -> Result<Side, String> {
    match to {
        Endpoint::Sled(dir) => {
            crate::datadir::create_private(dir).map_err(|e| e.to_string())?;
            Ok(Side::Sled {
                store: open_sled(&Endpoint::store_dir(dir))?,
                data_dir: dir.clone(),
            })
        }
        Endpoint::Postgres(url) => {
            let store = PostgresStore::connect(url).map_err(store_error(&to.describe()))?;
            refuse_running(url, to)?;
            Ok(Side::Postgres(store))
        }
    }
}

/// Empty a target: PostgreSQL's tables are truncated, a sled store is
/// removed (with its revision mark) and created again, as a restore does.
fn empty(target: Side) -> Result<Side, String> {
    match target {
        Side::Postgres(store) => {
            store
                .clear()
                .map_err(store_error("emptying the target database"))?;
            Ok(Side::Postgres(store))
        }
        Side::Sled { store, data_dir } => {
            drop(store);
            let store_dir = Endpoint::store_dir(&data_dir);
            SledStore::destroy(&store_dir)
                .map_err(|e| format!("removing {}: {e}", store_dir.display()))?;
            Ok(Side::Sled {
                store: open_sled(&store_dir)?,
                data_dir,
            })
        }
    }
}

fn same_place(a: &Endpoint, b: &Endpoint) -> bool {
    match (a, b) {
        (Endpoint::Sled(a), Endpoint::Sled(b)) => {
            let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
            real(a) == real(b)
        }
        (Endpoint::Postgres(a), Endpoint::Postgres(b)) => a == b,
        _ => false,
    }
}

/// The kind of an entry: its key up to the first `/`.
pub fn kind(key: &[u8]) -> String {
    let end = key.iter().position(|b| *b == b'/').unwrap_or(key.len());
    String::from_utf8_lossy(&key[..end]).into_owned()
}

/// Mark `store` as being filled (the first write of a copy or restore), so
/// nothing serves it until [`mark_complete`].
pub fn mark_incomplete(store: &dyn Store, from: &str) -> Result<(), String> {
    let note = serde_json::json!({ "from": from, "started": crate::domain::now() });
    let mut tx = Transaction::durable();
    tx.put(INCOMPLETE, note.to_string());
    store
        .commit(&tx)
        .map_err(store_error("marking the target incomplete"))
}

/// The last write of a copy or restore. Everything before it is flushed
/// first: the marker's removal never reaches the disk ahead of the data it
/// vouches for.
pub fn mark_complete(store: &dyn Store) -> Result<(), String> {
    store.flush().map_err(store_error("flushing the target"))?;
    let mut tx = Transaction::durable();
    tx.expect(INCOMPLETE, Expect::Present).delete(INCOMPLETE);
    store
        .commit(&tx)
        .map_err(store_error("marking the target complete"))
}

/// Every entry of `store` with a key in (`after`, `upto`] (`None`: no
/// bound), the copy's marker left out, in key order.
fn entries_between(
    store: &dyn Store,
    after: Option<&[u8]>,
    upto: Option<&[u8]>,
) -> Result<Entries, String> {
    let mut out = Vec::new();
    let mut cursor = after.map(<[u8]>::to_vec);
    loop {
        let page = store
            .scan(b"", cursor.as_deref(), PAGE)
            .map_err(store_error("reading the target"))?;
        let full = page.len() == PAGE;
        for (key, value) in page {
            if upto.is_some_and(|upto| key.as_slice() > upto) {
                return Ok(out);
            }
            cursor = Some(key.clone());
            if key != INCOMPLETE.as_bytes() {
                out.push((key, value));
            }
        }
        if !full {
            return Ok(out);
        }
    }
}

/// Copy `from` into `to`. `force` replaces a target that holds anything but
/// an interrupted copy; `stop_after` ends the run after that many entries
/// as an interruption would (for tests).
pub fn copy(
    from: &Endpoint,
    to: &Endpoint,
    force: bool,
    stop_after: Option<u64>,
) -> Result<Outcome, String> {
    if same_place(from, to) {
        return Err("the source and the target are the same store".into());
    }
    let source = open_source(from)?;
    let src = source.store();
    if src
        .get(INCOMPLETE.as_bytes())
        .map_err(store_error("reading the source"))?
        .is_some()
    {
        return Err(format!(
            "{} holds an interrupted copy itself; finish that copy first",
            from.describe()
        ));
    }
    let mut target = open_target(to)?;
    let interrupted = target
        .store()
        .get(INCOMPLETE.as_bytes())
        .map_err(store_error("reading the target"))?
        .is_some();
    let occupied = !target
        .store()
        .scan(b"", None, 1)
        .map_err(store_error("reading the target"))?
        .is_empty();
    let mut replaced = false;
    if occupied && (force || !interrupted) {
        if !force {
            return Err(format!(
                "{} already holds a store; pass --force to replace it",
                to.describe()
            ));
        }
        target = empty(target)?;
        replaced = true;
    }
    let resumed = interrupted && !replaced;
    let dst = target.store();
    if !resumed {
        mark_incomplete(dst, &from.describe())?;
    }

    // Page by page over the source's key order: each page's entries are
    // put, and whatever the target holds between the previous page and
    // this one that the source does not is deleted (only a resumed copy
    // finds any).
    let mut written = 0u64;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let mut page = src
            .scan(b"", after.as_deref(), PAGE)
            .map_err(store_error("reading the source"))?;
        let last_page = page.len() < PAGE;
        if let Some(limit) = stop_after {
            let room = usize::try_from(limit.saturating_sub(written)).unwrap_or(usize::MAX);
            if page.len() >= room {
                page.truncate(room);
                // Bounded by the page's own last key: an empty page must
                // not stand for "nothing more in the source".
                if let Some((last, _)) = page.last() {
                    write_page(dst, &page, after.as_deref(), Some(last))?;
                }
                written += page.len() as u64;
                dst.flush().map_err(store_error("flushing the target"))?;
                return Ok(Outcome::Stopped { written });
            }
        }
        let upto = if last_page {
            None
        } else {
            page.last().map(|(k, _)| k.clone())
        };
        write_page(dst, &page, after.as_deref(), upto.as_deref())?;
        written += page.len() as u64;
        if last_page {
            break;
        }
        after = upto;
    }
    dst.flush().map_err(store_error("flushing the target"))?;

    let kinds = compare(src, dst)?;
    if let Side::Sled { data_dir, .. } = &target {
        crate::datadir::tighten(data_dir).map_err(|e| e.to_string())?;
    }
    mark_complete(dst)?;
    Ok(Outcome::Done(CopyReport {
        entries: kinds.values().sum(),
        kinds,
        resumed,
        replaced,
    }))
}

/// Put `page` into `target` and delete what `target` holds in (`after`,
/// `upto`] that is not in it, in one transaction.
fn write_page(
    target: &dyn Store,
    page: &[(Vec<u8>, Vec<u8>)],
    after: Option<&[u8]>,
    upto: Option<&[u8]>,
) -> Result<(), String> {
    let keep: std::collections::BTreeSet<&[u8]> = page.iter().map(|(k, _)| &k[..]).collect();
    let mut tx = Transaction::new();
    for (key, _) in entries_between(target, after, upto)? {
        if !keep.contains(&key[..]) {
            tx.delete(key);
        }
    }
    for (key, value) in page {
        tx.put(key.clone(), value.clone());
    }
    if tx.is_empty() {
        return Ok(());
    }
    target
        .commit(&tx)
        .map_err(store_error("writing to the target"))
}

/// Read both stores back in pages and compare them entry by entry; the
/// counts per kind when they are equal, else what differs.
pub fn compare(source: &dyn Store, target: &dyn Store) -> Result<BTreeMap<String, u64>, String> {
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut differences: Vec<String> = Vec::new();
    let mut differing = 0u64;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = source
            .scan(b"", after.as_deref(), PAGE)
            .map_err(store_error("reading the source back"))?;
        let last_page = page.len() < PAGE;
        let upto = if last_page {
            None
        } else {
            page.last().map(|(k, _)| k.clone())
        };
        let theirs = entries_between(target, after.as_deref(), upto.as_deref())?;
        let ours: BTreeMap<&[u8], &[u8]> = page.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        let mine: BTreeMap<&[u8], &[u8]> = theirs.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        for (key, value) in &ours {
            match mine.get(key) {
                Some(other) if other == value => *kinds.entry(kind(key)).or_default() += 1,
                Some(_) => {
                    differing += 1;
                    differences.push(format!("{} differs", String::from_utf8_lossy(key)));
                }
                None => {
                    differing += 1;
                    differences.push(format!("{} is missing", String::from_utf8_lossy(key)));
                }
            }
        }
        for key in mine.keys().filter(|k| !ours.contains_key(*k)) {
            differing += 1;
            differences.push(format!(
                "{} is only in the target",
                String::from_utf8_lossy(key)
            ));
        }
        if last_page {
            break;
        }
        after = upto;
    }
    if differing > 0 {
        differences.truncate(10);
        return Err(format!(
            "the target does not match the source: {differing} entr{} differ (first: {}); \
             it stays marked incomplete, so nothing serves it: rerun the copy",
            if differing == 1 { "y" } else { "ies" },
            differences.join("; ")
        ));
    }
    Ok(kinds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("postgres://tessera:s3cret@db.example:5432/tessera?sslmode=disable"),
            "postgres://tessera:***@db.example:5432/tessera?sslmode=disable"
        );
        assert_eq!(
            redact("postgres://tessera@db/t?password=s3cret&x=1"),
            "postgres://tessera@db/t?password=***&x=1"
        );
        assert_eq!(redact("postgres://db/t"), "postgres://db/t");
    }

    #[test]
    fn kinds_are_the_key_up_to_the_first_slash() {
        assert_eq!(kind(b"user/abc"), "user");
        assert_eq!(kind(b"grant/a/b"), "grant");
        assert_eq!(kind(b"plain"), "plain");
    }

    fn put_all(store: &dyn Store, entries: &[(&str, &str)]) {
        let mut tx = Transaction::new();
        for (k, v) in entries {
            tx.put(*k, *v);
        }
        store.commit(&tx).unwrap();
    }

    #[test]
    fn a_page_deletes_what_the_source_lacks_in_its_range_and_compare_sees_every_difference() {
        let target = MemoryStore::new();
        put_all(
            &target,
            &[
                ("a/1", "x"),
                ("b/1", "stale"),
                ("b/2", "extra"),
                ("c/1", "later"),
            ],
        );
        mark_incomplete(&target, "test").unwrap();
        let page = vec![
            (b"a/1".to_vec(), b"x".to_vec()),
            (b"b/1".to_vec(), b"new".to_vec()),
        ];
        write_page(&target, &page, None, Some(b"b/9")).unwrap();
        assert_eq!(target.get(b"b/1").unwrap(), Some(b"new".to_vec()));
        assert_eq!(target.get(b"b/2").unwrap(), None, "not in the source");
        assert!(target.get(b"c/1").unwrap().is_some(), "beyond the page");
        assert!(target.get(INCOMPLETE.as_bytes()).unwrap().is_some());

        let source = MemoryStore::new();
        put_all(&source, &[("a/1", "x"), ("b/1", "new")]);
        let err = compare(&source, &target).unwrap_err();
        assert!(err.contains("c/1 is only in the target"), "{err}");
        let mut tx = Transaction::new();
        tx.delete("c/1");
        target.commit(&tx).unwrap();
        let kinds = compare(&source, &target).unwrap();
        assert_eq!(kinds.get("a"), Some(&1));
        assert_eq!(kinds.get("b"), Some(&1));
        put_all(&source, &[("a/1", "changed")]);
        assert!(compare(&source, &target)
            .unwrap_err()
            .contains("a/1 differs"));
    }
}
