//! The shared engine: PostgreSQL, for several tessera replicas on one store.
//!
//! One table of keys and values (`bytea`, so key order is byte order, as in
//! sled) carries the same contract as every engine: guarded transactions,
//! ordered prefix scans, a consistent export. A transaction takes an advisory
//! lock per key it reads or writes, in a fixed order, then checks its
//! expectations and writes: writers of the same keys go one at a time, the
//! rest commit in parallel. A commit releases its locks before its WAL is
//! flushed; a durable transaction is acknowledged only once the WAL holding
//! it is flushed (the others are not waited for), so writers of one key
//! share disk flushes instead of taking one each.
//!
//! Every commit also appends the keys it wrote to a change table and wakes
//! the replicas (`NOTIFY`). Each replica's follower ([`Follower`]) reads the
//! changes and drops them from its read cache. Commits do not finish in the
//! order they started, so the follower never trusts a sequence number: it
//! re-reads every change made by a transaction that was still running at its
//! last look (`pg_snapshot_xmin`). A revision is a writer's transaction id;
//! a replica has applied it once a look's snapshot saw it finished (below
//! the snapshot's `xmax` and not among its running transactions), so a long
//! transaction elsewhere on the server holds nobody's reads back.
//! A follower that cannot look stops the cache from answering (see
//! [`Freshness`]) until it has caught up.
//!
//! The trait is synchronous; the network is not. The client runs on a small
//! runtime of its own, and a caller on a worker thread of the server's runtime
//! hands its thread over (`block_in_place`) while it waits, so the server's
//! other requests keep running on the remaining workers.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use sha2::{Digest as _, Sha256};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use super::{
    prefix_end, Applied, CachedStore, Freshness, Store, StoreError, StoreResult, Transaction,
};

/// The application name of each replica's follower connection: how an
/// operator (or `store copy`) sees which servers are attached.
pub const FOLLOWER_APPLICATION: &str = "tessera-follower";
/// The channel commits wake followers on.
const CHANNEL: &str = "tessera_changes";
/// How long one statement may take before the store counts as unreachable.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for a pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(2);
/// The follower looks at least this often, notified or not.
const FOLLOW_EVERY: Duration = Duration::from_millis(100);
/// Changes older than this are pruned; a follower further behind starts
/// its cache empty.
const KEEP_CHANGES: Duration = Duration::from_secs(600);
/// The advisory lock replicas take while they start, and the one creating
/// the tables takes.
const STARTUP_LOCK: i64 = 0x0074_6573_7365_7261; // "tessera"
const TABLES_LOCK: i64 = STARTUP_LOCK + 1;
/// Every writer holds it shared; a transaction of more than
/// [`MAX_KEY_LOCKS`] keys holds it alone.
const WRITERS_LOCK: i64 = STARTUP_LOCK + 2;
const MAX_KEY_LOCKS: usize = 64;
/// How long a replica waits for another one's start-up (schema steps on a
/// large store included).
const STARTUP_WAIT: Duration = Duration::from_secs(300);
/// How long one look of the follower may take before its connection is
/// given up (the cache is off meanwhile).
const LOOK_TIMEOUT: Duration = Duration::from_secs(2);
/// The cache answers only this long after the follower's last look began:
/// no replica serves a value older than this (issue 15 bounds it at 1 s).
const STALENESS_BOUND: Duration = Duration::from_millis(500);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tessera_kv (
    key bytea PRIMARY KEY,
    value bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS tessera_changes (
    seq bigserial PRIMARY KEY,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    at timestamptz NOT NULL DEFAULT now(),
    keys bytea[] NOT NULL
);
CREATE INDEX IF NOT EXISTS tessera_changes_xid ON tessera_changes (xid);
";

/// Held while a replica starts (see [`PostgresStore::lock_startup`]).
pub struct StartupLock {
    _client: tokio_postgres::Client,
}

pub struct PostgresStore {
    pool: Pool,
    /// Always present until dropped.
    runtime: Option<tokio::runtime::Runtime>,
    url: String,
    /// The newest revision this process committed.
    last_commit: AtomicU64,
    freshness: Arc<Freshness>,
    following: AtomicBool,
}

fn engine(e: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(e.to_string())
}

/// A database error as the domain sees it: a lost race is a conflict, a
/// database that cannot be reached (or is shutting down) is unavailable,
/// anything else is an engine fault.
fn classify(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::UNIQUE_VIOLATION
        {
            return StoreError::Conflict;
        }
        if *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
            || *code == SqlState::QUERY_CANCELED
            || code.code().starts_with("08")
            || code.code().starts_with("53")
            || code.code().starts_with("57")
        {
            return StoreError::Unavailable(db.message().to_owned());
        }
        return StoreError::Engine(format!("{}: {}", code.code(), db.message()));
    }
    // No database error: the connection itself failed or closed.
    StoreError::Unavailable(e.to_string())
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => classify(e),
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// The advisory lock guarding one key. Collisions only make two unrelated
/// writers take turns.
fn lock_id(key: &[u8]) -> i64 {
    let digest = Sha256::digest(key);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// Parse a `xid8` printed as text.
fn xid(text: &str) -> StoreResult<u64> {
    text.parse()
        .map_err(|_| StoreError::Engine(format!("unexpected transaction id {text:?}")))
}

impl PostgresStore {
    /// Connect to `url` and create the tables if they are missing. Fails
    /// with [`StoreError::Unavailable`] if the database cannot be reached.
    pub fn connect(url: &str) -> StoreResult<Self> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Engine(format!("the store URL is not valid: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tessera-postgres")
            .enable_all()
            .build()
            .map_err(engine)?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let size = std::thread::available_parallelism().map_or(4, |n| n.get() * 4);
        let pool = Pool::builder(manager)
            .max_size(size)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .recycle_timeout(Some(POOL_WAIT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(engine)?;
        let store = Self {
            pool,
            runtime: Some(runtime),
            url: url.to_owned(),
            last_commit: AtomicU64::new(0),
            freshness: Arc::new(Freshness::default()),
            following: AtomicBool::new(false),
        };
        let pool = store.pool.clone();
        store.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            // Two replicas starting together on an empty database would
            // race on CREATE TABLE's catalog rows: one at a time.
            client
                .batch_execute(&format!(
                    "SELECT pg_advisory_lock({TABLES_LOCK}); {SCHEMA} \
                     SELECT pg_advisory_unlock({TABLES_LOCK});"
                ))
                .await
                .map_err(classify)
        })?;
        Ok(store)
    }

    fn runtime(&self) -> &tokio::runtime::Handle {
        match &self.runtime {
            Some(runtime) => runtime.handle(),
            // Only `drop` takes it.
            None => unreachable!("the store's runtime is gone before the store"),
        }
    }

    /// The URL this store was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Hold the store's start-up lock until the guard drops: replicas
    /// starting together check keys and run schema steps one at a time, so
    /// each step runs once. Waits for another replica's start-up.
    pub fn lock_startup(&self) -> StoreResult<StartupLock> {
        let url = self.url.clone();
        self.run_within(STARTUP_WAIT, async move {
            let (client, connection) = tokio_postgres::connect(&url, NoTls)
                .await
                .map_err(classify)?;
            // Ends when the client is dropped, which releases the lock.
            tokio::spawn(connection);
            client
                .batch_execute(&format!("SELECT pg_advisory_lock({STARTUP_LOCK})"))
                .await
                .map_err(classify)?;
            Ok(StartupLock { _client: client })
        })
    }

    /// Run `work` on the client's runtime and wait for it, handing the
    /// caller's worker thread over to the server's runtime meanwhile.
    fn run<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Future<Output = StoreResult<T>> + Send + 'static,
    {
        self.run_within(STATEMENT_TIMEOUT, work)
    }

    fn run_within<T, F>(&self, limit: Duration, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Future<Output = StoreResult<T>> + Send + 'static,
    {
        let task = self.runtime().spawn(async move {
            match tokio::time::timeout(limit, work).await {
                Ok(result) => result,
                Err(_) => Err(StoreError::Unavailable(
                    "the database did not answer in time".into(),
                )),
            }
        });
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime().spawn(async move {
            let outcome = match task.await {
                Ok(result) => result,
                Err(e) => Err(StoreError::Engine(format!("store task failed: {e}"))),
            };
            let _ = tx.send(outcome);
        });
        let wait = move || {
            rx.recv()
                .unwrap_or_else(|_| Err(StoreError::Engine("store task vanished".into())))
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }

    /// Delete every key (for `store copy --force` and tests).
    pub fn clear(&self) -> StoreResult<()> {
        let pool = self.pool.clone();
        self.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            client
                .batch_execute("TRUNCATE tessera_kv, tessera_changes")
                .await
                .map_err(classify)
        })
    }
}

/// The writes of a transaction with later writes of a key replacing earlier
/// ones, split into upserts and deletions.
type Keys = Vec<Vec<u8>>;

fn final_writes(tx: &Transaction) -> (Keys, Keys, Keys) {
    let mut last: std::collections::BTreeMap<&[u8], Option<&[u8]>> = Default::default();
    for (key, value) in &tx.writes {
        last.insert(key, value.as_deref());
    }
    let (mut put_keys, mut put_values, mut deletes) = (vec![], vec![], vec![]);
    for (key, value) in last {
        match value {
            Some(value) => {
                put_keys.push(key.to_vec());
                put_values.push(value.to_vec());
            }
            None => deletes.push(key.to_vec()),
        }
    }
    (put_keys, put_values, deletes)
}

impl Store for PostgresStore {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        let pool = self.pool.clone();
        let key = key.to_vec();
        self.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let statement = client
                .prepare_cached("SELECT value FROM tessera_kv WHERE key = $1")
                .await
                .map_err(classify)?;
            let row = client
                .query_opt(&statement, &[&key])
                .await
                .map_err(classify)?;
            Ok(row.map(|row| row.get::<_, Vec<u8>>(0)))
        })
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let pool = self.pool.clone();
        // Each bound is an index condition of its own statement: a generic
        // plan of one statement for every shape (`$2 IS NULL OR key > $2`)
        // filters instead, and a scan of a short prefix then walks the rest
        // of the table.
        let (lower, strict) = match after {
            Some(after) if after >= prefix => (after.to_vec(), true),
            _ => (prefix.to_vec(), false),
        };
        let upper = prefix_end(prefix);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let rows = match (&upper, strict) {
                (Some(upper), strict) => {
                    let statement = client
                        .prepare_cached(if strict {
                            "SELECT key, value FROM tessera_kv \
                             WHERE key > $1 AND key < $2 ORDER BY key LIMIT $3"
                        } else {
                            "SELECT key, value FROM tessera_kv \
                             WHERE key >= $1 AND key < $2 ORDER BY key LIMIT $3"
                        })
                        .await
                        .map_err(classify)?;
                    client.query(&statement, &[&lower, upper, &limit]).await
                }
                (None, strict) => {
                    let statement = client
                        .prepare_cached(if strict {
                            "SELECT key, value FROM tessera_kv \
                             WHERE key > $1 ORDER BY key LIMIT $2"
                        } else {
                            "SELECT key, value FROM tessera_kv \
                             WHERE key >= $1 ORDER BY key LIMIT $2"
                        })
                        .await
                        .map_err(classify)?;
                    client.query(&statement, &[&lower, &limit]).await
                }
            }
            .map_err(classify)?;
            Ok(rows
                .into_iter()
                .map(|row| (row.get::<_, Vec<u8>>(0), row.get::<_, Vec<u8>>(1)))
                .collect())
        })
    }

    fn commit(&self, tx: &Transaction) -> StoreResult<()> {
        if tx.writes.is_empty() && tx.expects.is_empty() {
            return Ok(());
        }
        let pool = self.pool.clone();
        let mut locks: Vec<i64> = tx
            .expects
            .iter()
            .map(|(k, _)| lock_id(k))
            .chain(tx.writes.iter().map(|(k, _)| lock_id(k)))
            .collect();
        // One order for everyone, so two writers never wait on each other.
        locks.sort_unstable();
        locks.dedup();
        let expects = tx.expects.clone();
        let expect_keys: Vec<Vec<u8>> = expects.iter().map(|(k, _)| k.clone()).collect();
        let (put_keys, put_values, deletes) = final_writes(tx);
        let changed: Vec<Vec<u8>> = put_keys.iter().chain(&deletes).cloned().collect();
        let durable = tx.durable;
        let revision = self.run(async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            // Prepared once per connection: a prepared statement is sent the
            // moment its future is first polled, so the pipelined requests
            // below reach the server in the order written (locks before the
            // reads they guard).
            let store_lock = client
                .prepare_cached(if locks.len() > MAX_KEY_LOCKS {
                    // A transaction of many keys (an import, a restore, a
                    // large deletion) takes the whole store instead:
                    // PostgreSQL's lock table is small, and one lock per
                    // key would exhaust it.
                    "SELECT pg_advisory_xact_lock($1)"
                } else {
                    "SELECT pg_advisory_xact_lock_shared($1)"
                })
                .await
                .map_err(classify)?;
            let key_locks_stmt = client
                // unnest keeps the array's (sorted) order.
                .prepare_cached(
                    "SELECT count(pg_advisory_xact_lock(id)) FROM unnest($1::bigint[]) AS id",
                )
                .await
                .map_err(classify)?;
            let read_stmt = client
                .prepare_cached("SELECT key, value FROM tessera_kv WHERE key = ANY($1)")
                .await
                .map_err(classify)?;
            let delete_stmt = client
                .prepare_cached("DELETE FROM tessera_kv WHERE key = ANY($1)")
                .await
                .map_err(classify)?;
            let upsert_stmt = client
                .prepare_cached(
                    "INSERT INTO tessera_kv (key, value) \
                     SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                )
                .await
                .map_err(classify)?;
            let change_stmt = client
                .prepare_cached(
                    "INSERT INTO tessera_changes (keys) VALUES ($1) RETURNING xid::text",
                )
                .await
                .map_err(classify)?;
            let key_locks = if locks.len() > MAX_KEY_LOCKS {
                Vec::new()
            } else {
                locks
            };
            let db = client.transaction().await.map_err(classify)?;
            // Every commit returns before its WAL is flushed, releasing its
            // key locks; a durable one then waits for the flush (below).
            // Holding the locks through the flush would make writers of
            // one key (a busy conversation) take one disk flush each.
            // One round trip: settings, locks, then the guarded reads.
            let (_, _, _, rows) = futures_util::future::try_join4(
                db.batch_execute("SET LOCAL synchronous_commit = off"),
                db.execute(&store_lock, &[&WRITERS_LOCK]),
                db.execute(&key_locks_stmt, &[&key_locks]),
                db.query(&read_stmt, &[&expect_keys]),
            )
            .await
            .map_err(classify)?;
            let current: std::collections::HashMap<Vec<u8>, Vec<u8>> = rows
                .into_iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect();
            for (key, expect) in &expects {
                if !expect.holds(current.get(key).map(Vec::as_slice)) {
                    return Err(StoreError::Conflict);
                }
            }
            if changed.is_empty() {
                db.commit().await.map_err(classify)?;
                return Ok(None);
            }
            // One more: the writes, the change record and the wake-up.
            let (_, _, row, _) = futures_util::future::try_join4(
                db.execute(&delete_stmt, &[&deletes]),
                db.execute(&upsert_stmt, &[&put_keys, &put_values]),
                db.query_one(&change_stmt, &[&changed]),
                db.execute("SELECT pg_notify($1, '')", &[&CHANNEL]),
            )
            .await
            .map_err(classify)?;
            let revision = xid(row.get::<_, &str>(0))?;
            db.commit().await.map_err(classify)?;
            if durable {
                // A transaction with an id commits synchronously, flushing
                // the WAL up to its own commit record, which lies after
                // ours: once it returns, ours is on disk. Concurrent
                // writers share one flush.
                client
                    .batch_execute("SELECT pg_current_xact_id()")
                    .await
                    .map_err(classify)?;
            }
            Ok(Some(revision))
        })?;
        if let Some(revision) = revision {
            self.last_commit.fetch_max(revision, Ordering::AcqRel);
        }
        Ok(())
    }

    fn flush(&self) -> StoreResult<()> {
        // Durable transactions waited for the WAL at commit; the others are
        // flushed by PostgreSQL within its own bound (wal_writer_delay).
        Ok(())
    }

    fn export(&self) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let pool = self.pool.clone();
        self.run(async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            // One snapshot for the whole read: no transaction half in it.
            let db = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(classify)?;
            let rows = db
                .query("SELECT key, value FROM tessera_kv ORDER BY key", &[])
                .await
                .map_err(classify)?;
            db.commit().await.map_err(classify)?;
            Ok(rows
                .into_iter()
                .map(|row| (row.get::<_, Vec<u8>>(0), row.get::<_, Vec<u8>>(1)))
                .collect())
        })
    }

    fn ping(&self) -> StoreResult<()> {
        let pool = self.pool.clone();
        self.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            client.simple_query("SELECT 1").await.map_err(classify)?;
            Ok(())
        })
    }

    fn revision(&self) -> u64 {
        self.last_commit.load(Ordering::Acquire)
    }

    fn has_applied(&self, revision: u64) -> bool {
        self.freshness.has_applied(revision)
    }

    fn shared(&self) -> bool {
        true
    }

    fn freshness(&self) -> Option<Arc<Freshness>> {
        Some(self.freshness.clone())
    }

    /// Start the follower (once; later calls do nothing). It stops when the
    /// cache is dropped.
    fn follow(&self, cache: Weak<CachedStore>) {
        if self.following.swap(true, Ordering::AcqRel) {
            return;
        }
        let follower = Follower {
            url: self.url.clone(),
            pool: self.pool.clone(),
            cache,
            freshness: self.freshness.clone(),
            bound: STALENESS_BOUND,
        };
        // A thread and runtime of its own: on the client's runtime, a burst
        // of requests missing the cache would delay its looks past the
        // bound, turning the cache off, which sends more requests to the
        // database: a spiral. Alone, it looks on time whatever the load.
        let started = std::thread::Builder::new()
            .name("tessera-follower".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(follower.run()),
                    Err(e) => tracing::error!(error = %e, "the follower's runtime did not start; the read cache stays off"),
                }
            });
        if let Err(e) = started {
            tracing::error!(error = %e, "the follower did not start; the read cache stays off");
        }
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Dropping a runtime may not block inside another one: let its
        // threads wind down by themselves.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Keeps one replica's cache in step with every commit to the shared store.
struct Follower {
    url: String,
    pool: Pool,
    cache: Weak<CachedStore>,
    freshness: Arc<Freshness>,
    bound: Duration,
}

impl Follower {
    async fn run(self) {
        let mut backoff = Duration::from_millis(50);
        while self.cache.strong_count() > 0 {
            match self.follow_once(&mut backoff).await {
                Ok(()) => backoff = Duration::from_millis(50),
                Err(e) => {
                    tracing::warn!(error = %e, "following the store's changes failed; the read cache is off until it resumes");
                }
            }
            self.freshness.stale();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// One notification connection, followed until it fails. Once it has
    /// caught up, `backoff` starts over: the next failure is a new one.
    async fn follow_once(&self, backoff: &mut Duration) -> StoreResult<()> {
        let mut config: tokio_postgres::Config = self.url.parse().map_err(engine)?;
        config.application_name(FOLLOWER_APPLICATION);
        config.connect_timeout(POOL_WAIT);
        let (client, mut connection) = config.connect(NoTls).await.map_err(classify)?;
        let (wake, mut woken) = tokio::sync::mpsc::unbounded_channel::<()>();
        let (closed_tx, mut closed) = tokio::sync::oneshot::channel::<String>();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            use futures_util::StreamExt;
            let reason = loop {
                match messages.next().await {
                    Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => {
                        let _ = wake.send(());
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break e.to_string(),
                    None => break "the connection closed".to_owned(),
                }
            };
            let _ = closed_tx.send(reason);
        });
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(classify)?;
        // Anything may have changed while nobody listened: start empty. The
        // horizon is taken first, so a commit racing the emptying is read
        // again at the next look.
        let (mut horizon, _) = self.look(&client, None).await?;
        match self.cache.upgrade() {
            Some(cache) => cache.clear(),
            None => return Ok(()),
        }
        *backoff = Duration::from_millis(50);
        let mut pruned = Instant::now();
        while self.cache.strong_count() > 0 {
            let started = Instant::now();
            let (next, applied) = self.look(&client, Some(horizon)).await?;
            horizon = next;
            self.freshness.looked(started, self.bound, applied);
            if pruned.elapsed() > Duration::from_secs(60) {
                pruned = Instant::now();
                self.prune().await;
            }
            tokio::select! {
                _ = woken.recv() => {
                    // Coalesce a burst of notifications into one look.
                    while woken.try_recv().is_ok() {}
                }
                _ = tokio::time::sleep(FOLLOW_EVERY) => {}
                reason = &mut closed => {
                    return Err(StoreError::Unavailable(reason.unwrap_or_default()));
                }
            }
        }
        Ok(())
    }

    /// Apply every change made by transactions not finished at the last
    /// look; answer the new horizon (the oldest transaction running now)
    /// and what this look proves applied. Bounded: a connection that stops
    /// answering is given up and made again.
    async fn look(
        &self,
        client: &tokio_postgres::Client,
        since: Option<u64>,
    ) -> StoreResult<(u64, Applied)> {
        match tokio::time::timeout(LOOK_TIMEOUT, self.look_unbounded(client, since)).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(
                "the database did not answer the follower in time".into(),
            )),
        }
    }

    async fn look_unbounded(
        &self,
        client: &tokio_postgres::Client,
        since: Option<u64>,
    ) -> StoreResult<(u64, Applied)> {
        let since = since.unwrap_or(u64::MAX).to_string();
        // One statement, so one snapshot for the horizon and the rows.
        let rows = client
            .query(
                "WITH h AS (SELECT pg_current_snapshot() AS s) \
                 SELECT pg_snapshot_xmin(h.s)::text, pg_snapshot_xmax(h.s)::text, \
                        ARRAY(SELECT pg_snapshot_xip(h.s)::text), c.keys \
                 FROM h LEFT JOIN tessera_changes c ON c.xid >= $1::text::xid8",
                &[&since],
            )
            .await
            .map_err(classify)?;
        let mut seen = None;
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for row in &rows {
            if seen.is_none() {
                let running = row
                    .get::<_, Vec<&str>>(2)
                    .into_iter()
                    .map(xid)
                    .collect::<StoreResult<Vec<u64>>>()?;
                let applied = Applied {
                    below: xid(row.get::<_, &str>(1))?,
                    running,
                };
                seen = Some((xid(row.get::<_, &str>(0))?, applied));
            }
            if let Some(changed) = row.get::<_, Option<Vec<Vec<u8>>>>(3) {
                keys.extend(changed);
            }
        }
        if !keys.is_empty() {
            if let Some(cache) = self.cache.upgrade() {
                cache.invalidate(&keys);
            }
        }
        seen.ok_or_else(|| StoreError::Engine("no snapshot horizon".into()))
    }

    async fn prune(&self) {
        let Ok(client) = self.pool.get().await else {
            return;
        };
        let keep = format!("{} seconds", KEEP_CHANGES.as_secs());
        if let Err(e) = client
            .execute(
                "DELETE FROM tessera_changes WHERE at < now() - $1::text::interval",
                &[&keep],
            )
            .await
        {
            tracing::debug!(error = %e, "pruning old changes failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Deps, Transaction};

    fn put(store: &dyn Store, key: &str, value: &str) {
        let mut tx = Transaction::new();
        tx.put(key, value);
        store.commit(&tx).unwrap();
    }

    /// What the cache holds for `key`, as a request would derive it.
    fn cached(cache: &CachedStore, key: &str) -> Option<Vec<u8>> {
        let value = cache
            .get_or_compute::<Option<Vec<u8>>, StoreError>(key, |store| {
                Ok((store.get(key.as_bytes())?, Deps::new().key(key)))
            })
            .unwrap();
        (*value).clone()
    }

    /// Poll (bounded) until `done`, answering how long it took.
    fn within(bound: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < bound {
            if done() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    }

    #[test]
    fn another_replicas_commit_reaches_this_cache_within_the_bound() {
        let (writer, sql) = crate::store::conformance::postgres_in();
        let reader = Arc::new(PostgresStore::connect(writer.url()).unwrap());
        let cache = Arc::new(CachedStore::following(
            reader.clone(),
            100,
            reader.freshness().unwrap(),
        ));
        reader.follow(Arc::downgrade(&cache));
        assert!(within(Duration::from_secs(5), || reader.freshness.is_fresh()).is_some());

        put(&writer, "grant/a", "use");
        assert!(within(Duration::from_secs(1), || cached(&cache, "grant/a")
            .as_deref()
            == Some(b"use".as_slice()))
        .is_some());
        // Remembered now: a hit, until another replica changes it.
        assert_eq!(
            cached(&cache, "grant/a").as_deref(),
            Some(b"use".as_slice())
        );
        for round in 0..5 {
            let value = format!("level-{round}");
            put(&writer, "grant/a", &value);
            let took = within(Duration::from_secs(1), || {
                cached(&cache, "grant/a") == Some(value.clone().into_bytes())
            });
            assert!(
                took.is_some(),
                "round {round}: the change never reached the cache"
            );
        }

        // Read your writes: the writer's revision is applied here soon.
        let revision = writer.revision();
        assert!(revision > 0);
        assert!(within(Duration::from_secs(1), || reader.has_applied(revision)).is_some());
        assert!(!reader.has_applied(u64::MAX - 1));

        // Cut the follower's connection from the database's side: the cache
        // stops answering, the follower comes back, changes reach it again.
        let db = writer
            .url()
            .rsplit('/')
            .next()
            .unwrap()
            .split('?')
            .next()
            .unwrap()
            .to_owned();
        let cut = sql(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'tessera-follower' AND datname = '{db}'"
        ));
        assert_eq!(cut, "1", "one follower was connected");
        put(&writer, "grant/a", "after-the-cut");
        assert!(within(Duration::from_secs(1), || cached(&cache, "grant/a")
            .as_deref()
            == Some(b"after-the-cut".as_slice()))
        .is_some());
        assert!(within(Duration::from_secs(5), || reader.freshness.is_fresh()).is_some());
        put(&writer, "grant/a", "resumed");
        assert!(within(Duration::from_secs(1), || cached(&cache, "grant/a")
            .as_deref()
            == Some(b"resumed".as_slice()))
        .is_some());
    }

    #[test]
    fn a_cache_whose_follower_is_behind_reads_through() {
        let store = Arc::new(crate::store::conformance::postgres());
        let freshness = store.freshness().unwrap();
        // Never followed: never fresh, so nothing is served from memory.
        let cache = CachedStore::following(store.clone(), 100, freshness);
        put(store.as_ref(), "k", "1");
        assert_eq!(cached(&cache, "k").as_deref(), Some(b"1".as_slice()));
        put(store.as_ref(), "k", "2");
        assert_eq!(cached(&cache, "k").as_deref(), Some(b"2".as_slice()));
        assert!(cache.is_empty());
    }

    #[test]
    fn a_transaction_of_many_keys_commits_beside_small_ones() {
        let store = Arc::new(crate::store::conformance::postgres());
        let big = {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut tx = Transaction::new();
                for i in 0..20_000 {
                    tx.put(format!("bulk/{i:05}"), "v");
                }
                store.commit(&tx)
            })
        };
        for i in 0..20 {
            put(store.as_ref(), &format!("small/{i}"), "v");
        }
        big.join().unwrap().unwrap();
        assert_eq!(
            store.scan(b"bulk/", None, usize::MAX).unwrap().len(),
            20_000
        );
        assert_eq!(store.scan(b"small/", None, usize::MAX).unwrap().len(), 20);
    }

    #[test]
    fn the_same_key_written_twice_in_one_transaction_keeps_the_last_write() {
        let store = crate::store::conformance::postgres();
        let mut tx = Transaction::new();
        tx.put("k", "1")
            .delete("k")
            .put("j", "1")
            .put("j", "2")
            .delete("gone");
        store.commit(&tx).unwrap();
        assert_eq!(store.get(b"k").unwrap(), None);
        assert_eq!(store.get(b"j").unwrap(), Some(b"2".to_vec()));
    }
}
