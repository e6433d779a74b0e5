//! One behavioural suite, run against every engine: whatever the domain relies
//! on (atomic transactions, expectations, prefix scans and paging) must hold the
//! same way in memory and on disk.

use std::sync::Arc;

use super::{
    CachedStore, Expect, MemoryStore, PostgresStore, SledStore, Store, StoreError, Transaction,
};

fn put(store: &dyn Store, key: &str, value: &str) {
    let mut tx = Transaction::new();
    tx.put(key, value);
    store.commit(&tx).unwrap();
}

fn get_and_delete(store: &dyn Store) {
    assert_eq!(store.get(b"missing").unwrap(), None);
    put(store, "a", "1");
    assert_eq!(store.get(b"a").unwrap(), Some(b"1".to_vec()));
    let mut tx = Transaction::new();
    tx.delete("a");
    store.commit(&tx).unwrap();
    assert_eq!(store.get(b"a").unwrap(), None);
}

fn failed_expectation_writes_nothing(store: &dyn Store) {
    put(store, "user/1", "alice");
    let mut tx = Transaction::durable();
    tx.expect("uname/bob", Expect::Absent)
        .expect("user/1", Expect::Equals(b"not-alice".to_vec()))
        .put("uname/bob", "2")
        .put("user/2", "bob");
    assert!(matches!(store.commit(&tx), Err(StoreError::Conflict)));
    assert_eq!(store.get(b"uname/bob").unwrap(), None);
    assert_eq!(store.get(b"user/2").unwrap(), None);

    let mut tx = Transaction::durable();
    tx.expect("uname/bob", Expect::Absent)
        .expect("user/1", Expect::Equals(b"alice".to_vec()))
        .expect("user/1", Expect::Present)
        .put("uname/bob", "2")
        .put("user/2", "bob");
    store.commit(&tx).unwrap();
    assert_eq!(store.get(b"user/2").unwrap(), Some(b"bob".to_vec()));

    // The same guarded write cannot succeed twice.
    assert!(matches!(store.commit(&tx), Err(StoreError::Conflict)));
}

fn scan_is_prefix_bounded_and_ordered(store: &dyn Store) {
    for key in ["p/b", "p/a", "p/c", "q/a", "o/z", "p"] {
        put(store, key, key);
    }
    let keys: Vec<_> = store
        .scan(b"p/", None, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(k, _)| String::from_utf8(k).unwrap())
        .collect();
    assert_eq!(keys, ["p/a", "p/b", "p/c"]);

    let first = store.scan(b"p/", None, 2).unwrap();
    assert_eq!(first.len(), 2);
    let rest = store.scan(b"p/", Some(&first[1].0), 10).unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].0, b"p/c");
    assert!(store.scan(b"p/", Some(b"p/c"), 10).unwrap().is_empty());
    assert!(store.scan(b"none/", None, 10).unwrap().is_empty());
}

fn scan_handles_ff_prefix(store: &dyn Store) {
    put(store, "\u{7f}x", "1");
    let mut tx = Transaction::new();
    tx.put(vec![0xff, 0xff, 1], b"v".to_vec());
    tx.put(vec![0xff, 0xfe], b"w".to_vec());
    store.commit(&tx).unwrap();
    let hits = store.scan(&[0xff, 0xff], None, 10).unwrap();
    assert_eq!(hits, vec![(vec![0xff, 0xff, 1], b"v".to_vec())]);
}

fn export_sees_everything(store: &dyn Store) {
    put(store, "x/1", "a");
    put(store, "y/1", "b");
    let all = store.export().unwrap();
    assert_eq!(all.len(), 2);
    store.flush().unwrap();
    store.ping().unwrap();
}

fn concurrent_guarded_writers_have_one_winner(store: Arc<dyn Store>) {
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut tx = Transaction::new();
                tx.expect("claim", Expect::Absent)
                    .put("claim", format!("{i}"));
                store.commit(&tx).is_ok()
            })
        })
        .collect();
    let winners = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|won| *won)
        .count();
    assert_eq!(winners, 1);
}

macro_rules! conformance_suite {
    ($engine:ident, $make:expr) => {
        mod $engine {
            use super::*;

            #[allow(clippy::redundant_closure_call)]
            fn make() -> (Arc<dyn Store>, Option<tempfile::TempDir>) {
                $make()
            }

            #[test]
            fn get_and_delete() {
                let (s, _d) = make();
                super::get_and_delete(s.as_ref());
            }
            #[test]
            fn failed_expectation_writes_nothing() {
                let (s, _d) = make();
                super::failed_expectation_writes_nothing(s.as_ref());
            }
            #[test]
            fn scan_is_prefix_bounded_and_ordered() {
                let (s, _d) = make();
                super::scan_is_prefix_bounded_and_ordered(s.as_ref());
            }
            #[test]
            fn scan_handles_ff_prefix() {
                let (s, _d) = make();
                super::scan_handles_ff_prefix(s.as_ref());
            }
            #[test]
            fn export_sees_everything() {
                let (s, _d) = make();
                super::export_sees_everything(s.as_ref());
            }
            #[test]
            fn concurrent_guarded_writers_have_one_winner() {
                let (s, _d) = make();
                super::concurrent_guarded_writers_have_one_winner(s);
            }
        }
    };
}

conformance_suite!(memory, || (
    Arc::new(MemoryStore::new()) as Arc<dyn Store>,
    None
));
conformance_suite!(sled, || {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("store")).unwrap();
    (Arc::new(store) as Arc<dyn Store>, Some(dir))
});

// The cache in front of each engine must keep the whole contract.
conformance_suite!(cached_memory, || (
    Arc::new(CachedStore::new(Arc::new(MemoryStore::new()), 1000)) as Arc<dyn Store>,
    None
));
conformance_suite!(cached_sled, || {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("store")).unwrap();
    (
        Arc::new(CachedStore::new(Arc::new(store), 1000)) as Arc<dyn Store>,
        Some(dir),
    )
});

/// One throwaway cluster for this test process; each test gets a database
/// of its own in it.
pub(crate) fn postgres() -> PostgresStore {
    postgres_in().0
}

/// A store on a new database, and a way to run SQL as the cluster's
/// superuser.
pub(crate) fn postgres_in() -> (PostgresStore, impl Fn(&str) -> String) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Mutex, OnceLock};
    static CLUSTER: OnceLock<Mutex<crate::pgcluster::PgCluster>> = OnceLock::new();
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let cluster = CLUSTER.get_or_init(|| {
        Mutex::new(crate::pgcluster::PgCluster::start(false).expect("a PostgreSQL cluster"))
    });
    let name = format!("conformance_{}", NEXT.fetch_add(1, Ordering::SeqCst));
    let url = cluster
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .create_database(&name)
        .unwrap();
    let sql = move |text: &str| {
        cluster
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sql(text)
            .unwrap()
    };
    (PostgresStore::connect(&url).unwrap(), sql)
}

conformance_suite!(postgres, || (
    Arc::new(super::postgres()) as Arc<dyn Store>,
    None
));
conformance_suite!(cached_postgres, || (
    Arc::new(CachedStore::new(Arc::new(super::postgres()), 1000)) as Arc<dyn Store>,
    None
));

#[test]
fn sled_survives_reopen_and_refuses_a_second_opener() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(&dir.path().join("store")).unwrap();
        let mut tx = Transaction::durable();
        tx.put("k", "v");
        store.commit(&tx).unwrap();
        assert!(matches!(
            SledStore::open(&dir.path().join("store")),
            Err(StoreError::Locked(_))
        ));
    }
    let store = SledStore::open(&dir.path().join("store")).unwrap();
    assert_eq!(store.get(b"k").unwrap(), Some(b"v".to_vec()));
}
