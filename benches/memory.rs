//! Memory search cost against the size of one user's memory and of the host's.
//!
//!     cargo bench --bench memory
//!
//! Builds, on sled in a temporary directory, 100 users' memory: one user with
//! 100,000 chunks and 99 users sharing 900,000 more (1,000,000 in all), and a
//! second host holding only that user's 100,000. Searching the same user on
//! both hosts costs the same: a search reads the posting lists of its own
//! terms in its owner's index, never anyone else's. `TESSERA_BENCH_SCALE`
//! divides every count (e.g. 10 for a quick run).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tessera::domain::memory::{chunk_hash, Chunk, Memory};
use tessera::store::{SledStore, Store, Transaction};

const VOCABULARY: usize = 20_000;

fn word(rng: &mut StdRng) -> String {
    // Skewed toward low ranks, like real text: a few words are everywhere.
    let x: f64 = rng.gen();
    let rank = ((VOCABULARY as f64).powf(x) as usize).min(VOCABULARY - 1);
    format!("w{rank}")
}

fn fill(store: &Arc<dyn Store>, user: &str, chunks: usize, seed: u64) {
    let memory = Memory::new(store.clone());
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tx = Transaction::new();
    for i in 0..chunks {
        let content: Vec<String> = (0..12).map(|_| word(&mut rng)).collect();
        let content = content.join(" ");
        let chunk = Chunk {
            hash: chunk_hash("notes", "", &format!("{i} {content}")),
            collection: "notes".into(),
            title: String::new(),
            content,
            metadata: Value::Null,
            created_at: i as f64,
        };
        memory.stage_save(&mut tx, user, &chunk).unwrap();
        if tx.writes.len() > 20_000 {
            store.commit(&std::mem::take(&mut tx)).unwrap();
        }
    }
    store.commit(&tx).unwrap();
}

fn host(dir: &std::path::Path, others: usize, scale: usize) -> Arc<dyn Store> {
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.join("store")).unwrap());
    fill(&store, "target", 100_000 / scale, 1);
    for u in 0..others {
        fill(
            &store,
            &format!("user{u}"),
            900_000 / scale / others.max(1),
            100 + u as u64,
        );
    }
    store.flush().unwrap();
    store
}

fn bench(c: &mut Criterion) {
    let scale: usize = std::env::var("TESSERA_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let big_dir = tempfile::tempdir().unwrap();
    let alone_dir = tempfile::tempdir().unwrap();
    let big = Memory::new(host(big_dir.path(), 99, scale));
    let alone = Memory::new(host(alone_dir.path(), 0, scale));
    let mut group = c.benchmark_group("memory_search");
    group.sample_size(30);
    for (name, query) in [("rare_terms", "w15000 w9000"), ("common_term", "w3 w15000")] {
        group.bench_function(format!("{name}/host_1m"), |b| {
            b.iter(|| big.search("target", query, 20).unwrap())
        });
        group.bench_function(format!("{name}/host_only_user"), |b| {
            b.iter(|| alone.search("target", query, 20).unwrap())
        });
        group.bench_function(format!("{name}/small_user_9k_on_host_1m"), |b| {
            b.iter(|| big.search("user7", query, 20).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
