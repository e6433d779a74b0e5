//! What the sled store costs on the write path and at start-up, the two
//! places the damage proof (a digest and revision in every commit, a full
//! scan at open; see `src/store/integrity.rs`) adds work:
//!
//!     cargo run --release --example storebench -- [--chunks 100000] [--dir DIR] [--opens 3] [--seconds 3] [--writers 1,2,4] [--base 10000] [--durable yes|no] [--shape put|chunk] [--only writes|startup|open]
//!
//! Writes: a `SledStore` in a temporary directory holding `--base` memory
//! chunks; W threads commit through the `Store` trait for `--seconds` per
//! row, as the server's `domain::commit` does (durable: flushed before
//! `commit` returns), and each row prints writes per second, latency, the
//! process's CPU time per write (which the disk's moods move less) and the
//! bytes it handed to write calls per write.
//! Two shapes: `put`, one new key of 256 bytes (a chat post, a session), and
//! `chunk`, a memory chunk with its term index entries (about 13 keys). The
//! same rows unflushed show the transaction's own share.
//!
//! Start-up: a data directory holding `--chunks` memory chunks for 100
//! users (12 words each from a skewed vocabulary, as `benches/memory.rs`;
//! about 13 store entries per chunk), generated once through the store API
//! in batches and kept in `--dir` when given, so a later run (or another
//! build) times the same files. Then `SledStore::open` and `AppState::open`
//! `--opens` times each, and what an open's full scan is made of: sled's
//! own open, one pass reading and hashing every entry as the proof does
//! (the hashing timed apart), a second pass with sled's cache warm, the
//! first pass again on two threads, and one over the chunks alone (without
//! their term index). `--only open` times `SledStore::open`
//! alone. Only files in the given or a temporary directory are touched.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tessera::domain::memory::{chunk_hash, Chunk, Memory};
use tessera::store::{SledStore, Store, Transaction};
use tessera::{AppState, Config};

// The same allocator as the `tessera` binary, so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const VOCABULARY: usize = 20_000;
const USERS: usize = 100;
/// Where a generated store records how many chunks it was given.
const CHUNKS_KEY: &[u8] = b"bench/storebench/chunks";

struct Args {
    chunks: usize,
    dir: Option<PathBuf>,
    opens: usize,
    seconds: u64,
    writers: Vec<usize>,
    base: usize,
    /// Only the durable rows (`yes`) or only the unflushed ones (`no`).
    durable: Option<bool>,
    /// Only this write shape.
    shape: Option<Shape>,
    only: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        chunks: 100_000,
        dir: None,
        opens: 3,
        seconds: 3,
        writers: vec![1, 2, 4],
        base: 10_000,
        durable: None,
        shape: None,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .map_err(|_| format!("{flag}: not a number: {value}"))
        };
        match flag.as_str() {
            "--chunks" => args.chunks = number()?,
            "--dir" => args.dir = Some(PathBuf::from(&value)),
            "--opens" => args.opens = number()?.max(1),
            "--seconds" => args.seconds = number()?.max(1) as u64,
            "--base" => args.base = number()?,
            "--shape" if value == "put" => args.shape = Some(Shape::Put),
            "--shape" if value == "chunk" => args.shape = Some(Shape::Chunk),
            "--durable" if value == "yes" || value == "no" => args.durable = Some(value == "yes"),
            "--writers" => {
                args.writers = value
                    .split(',')
                    .map(|w| w.trim().parse::<usize>().map(|w| w.max(1)))
                    .collect::<Result<_, _>>()
                    .map_err(|_| format!("--writers: not a list of numbers: {value}"))?
            }
            "--only" if ["writes", "startup", "open"].contains(&value.as_str()) => {
                args.only = Some(value)
            }
            other => return Err(format!("unknown flag or value: {other} {value}")),
        }
    }
    Ok(args)
}

fn word(rng: &mut StdRng) -> String {
    // Skewed toward low ranks, like real text: a few words are everywhere.
    let x: f64 = rng.gen();
    let rank = ((VOCABULARY as f64).powf(x) as usize).min(VOCABULARY - 1);
    format!("w{rank}")
}

fn chunk(rng: &mut StdRng, i: usize) -> Chunk {
    let content: Vec<String> = (0..12).map(|_| word(rng)).collect();
    let content = content.join(" ");
    Chunk {
        hash: chunk_hash("notes", "", &format!("{i} {content}")),
        collection: "notes".into(),
        title: String::new(),
        content,
        metadata: Value::Null,
        created_at: i as f64,
    }
}

/// `chunks` memory chunks spread over 100 users, committed in batches of
/// about 25,000 writes (unflushed; one flush at the end). Returns the writes.
fn fill(store: &Arc<dyn Store>, chunks: usize, seed: u64) -> Result<usize, String> {
    let memory = Memory::new(store.clone());
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tx = Transaction::new();
    let mut writes = 0;
    for i in 0..chunks {
        let user = format!("user{}", i % USERS);
        memory
            .stage_save(&mut tx, &user, &chunk(&mut rng, i))
            .map_err(|e| e.to_string())?;
        if tx.writes.len() >= 25_000 {
            writes += tx.writes.len();
            store
                .commit(&std::mem::take(&mut tx))
                .map_err(|e| e.to_string())?;
        }
    }
    writes += tx.writes.len();
    store.commit(&tx).map_err(|e| e.to_string())?;
    store.flush().map_err(|e| e.to_string())?;
    Ok(writes)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1e6
}

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Put,
    Chunk,
}

/// One row: `writers` threads committing `shape` for `seconds`.
fn write_row(
    store: &Arc<dyn Store>,
    shape: Shape,
    durable: bool,
    writers: usize,
    seconds: Duration,
    round: usize,
) -> Result<(), String> {
    let cpu_before = cpu_seconds();
    let written_before = bytes_written();
    let start = Instant::now();
    let deadline = start + seconds;
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            std::thread::spawn(move || -> Result<Vec<Duration>, String> {
                let memory = Memory::new(store.clone());
                let mut rng = StdRng::seed_from_u64((round * 1000 + w) as u64);
                let mut latencies = Vec::new();
                let mut i = 0usize;
                while Instant::now() < deadline {
                    let mut tx = Transaction::new();
                    tx.durable = durable;
                    match shape {
                        Shape::Put => {
                            let key = format!("bench/put/{round}/{w}/{i}");
                            tx.put(key, vec![b'x'; 256]);
                        }
                        Shape::Chunk => {
                            let user = format!("writer{round}-{w}");
                            memory
                                .stage_save(&mut tx, &user, &chunk(&mut rng, i))
                                .map_err(|e| e.to_string())?;
                        }
                    }
                    let t0 = Instant::now();
                    store.commit(&tx).map_err(|e| e.to_string())?;
                    latencies.push(t0.elapsed());
                    i += 1;
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().map_err(|_| "a writer panicked".to_string())??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    let written = bytes_written().saturating_sub(written_before);
    all.sort();
    let mean = all.iter().sum::<Duration>().as_secs_f64() * 1e6 / all.len().max(1) as f64;
    println!(
        "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
        if shape == Shape::Put { "put" } else { "chunk" },
        if durable { "yes" } else { "no" },
        writers,
        all.len() as f64 / elapsed,
        mean,
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        cpu * 1e6 / all.len().max(1) as f64,
        written as f64 / all.len().max(1) as f64,
    );
    Ok(())
}

/// Bytes the process handed to write calls (`wchar` in /proc/self/io):
/// what sled and the mark file write per commit.
fn bytes_written() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("wchar: ")?.trim().parse().ok())
        .unwrap_or(0)
}

/// CPU time of the whole process (every thread, sled's own included), user
/// and system, from /proc/self/stat: robust to the disk's latency moving
/// from one run to the next, where the wall clock is not. Linux reports it
/// in ticks of 1/100 s.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and
    // stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => f64::NAN,
    }
}

fn writes(args: &Args) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let store: Arc<dyn Store> =
        Arc::new(SledStore::open(&dir.path().join("store")).map_err(|e| e.to_string())?);
    let base = fill(&store, args.base, 7)?;
    println!(
        "\nwrites: a store of {} chunks ({base} entries), {} s per row, latency and CPU time (the process's, per write) in µs, bytes written per write",
        args.base, args.seconds
    );
    println!("| shape | durable | writers | writes/s | mean | p50 | p99 | cpu | bytes written |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    // Warm-up, not printed: sled's first segments, the allocator.
    let warm = Instant::now();
    let memory = Memory::new(store.clone());
    let mut rng = StdRng::seed_from_u64(1);
    for i in 0.. {
        if warm.elapsed() > Duration::from_millis(500) {
            break;
        }
        let mut tx = Transaction::durable();
        memory
            .stage_save(&mut tx, "warm", &chunk(&mut rng, i))
            .map_err(|e| e.to_string())?;
        store.commit(&tx).map_err(|e| e.to_string())?;
    }
    let seconds = Duration::from_secs(args.seconds);
    let mut round = 0;
    for durable in [true, false] {
        if args.durable.is_some_and(|only| only != durable) {
            continue;
        }
        for shape in [Shape::Put, Shape::Chunk] {
            if args.shape.is_some_and(|only| only != shape) {
                continue;
            }
            for &writers in &args.writers {
                round += 1;
                write_row(&store, shape, durable, writers, seconds, round)?;
            }
        }
    }
    Ok(())
}

/// Generate the start-up data directory unless it already holds a store.
fn prepare(data: &Path, chunks: usize) -> Result<(), String> {
    let store_dir = Config::new(data).store_dir();
    if store_dir.exists() {
        return Ok(());
    }
    let started = Instant::now();
    // A data directory as the server leaves it: keys, schema, claim.
    drop(AppState::open(Config::new(data)).map_err(|e| e.to_string())?);
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&store_dir).map_err(|e| e.to_string())?);
    let written = fill(&store, chunks, 1)?;
    let mut tx = Transaction::durable();
    tx.put(CHUNKS_KEY, chunks.to_string());
    store.commit(&tx).map_err(|e| e.to_string())?;
    drop(store);
    println!(
        "generated {chunks} chunks ({written} entries) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn sled_config(dir: &Path) -> sled::Config {
    // As `SledStore` opens it.
    sled::Config::new()
        .path(dir)
        .mode(sled::Mode::HighThroughput)
}

fn toggle(digest: &mut [u8; 32], key: &[u8], value: &[u8]) {
    // The proof's hash of one entry (`Digest::toggle` in src/store/integrity.rs).
    let mut hasher = Sha256::new();
    hasher.update((key.len() as u64).to_le_bytes());
    hasher.update(key);
    hasher.update(value);
    for (d, h) in digest.iter_mut().zip(hasher.finalize()) {
        *d ^= h;
    }
}

fn startup(args: &Args) -> Result<(), String> {
    let temp;
    let data = match &args.dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::tempdir().map_err(|e| e.to_string())?;
            temp.path().join("data")
        }
    };
    prepare(&data, args.chunks)?;
    let config = Config::new(&data);
    let store_dir = config.store_dir();
    let size: u64 = std::fs::read_dir(&store_dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "\nstart-up: seconds per open, {:.0} MiB of sled files",
        size as f64 / 1048576.0
    );
    println!("| what | chunks | each open (s) |");
    println!("| --- | ---: | --- |");
    let row = |what: &str, chunks: &str, times: &[f64]| {
        let times: Vec<String> = times.iter().map(|t| format!("{t:.2}")).collect();
        println!("| {what} | {chunks} | {} |", times.join(", "));
    };
    let mut chunks = String::from("?");
    let mut times = Vec::new();
    for _ in 0..args.opens {
        let t0 = Instant::now();
        let store = SledStore::open(&store_dir).map_err(|e| e.to_string())?;
        times.push(t0.elapsed().as_secs_f64());
        if let Some(n) = store.get(CHUNKS_KEY).map_err(|e| e.to_string())? {
            chunks = String::from_utf8_lossy(&n).into_owned();
        }
    }
    row("`SledStore::open`", &chunks, &times);
    if args.only.as_deref() == Some("open") {
        return Ok(());
    }
    times.clear();
    for _ in 0..args.opens {
        let t0 = Instant::now();
        let state = AppState::open(Config::new(&data)).map_err(|e| e.to_string())?;
        times.push(t0.elapsed().as_secs_f64());
        drop(state);
    }
    row("`AppState::open`", &chunks, &times);

    // What the proof's scan is made of, engine alone: sled's open, then one
    // pass reading every entry and hashing it as the proof does, the hashing
    // timed apart (entries are taken in batches, so the clock is read once
    // per batch), then a second pass that only reads.
    let t0 = Instant::now();
    let db = sled_config(&store_dir).open().map_err(|e| e.to_string())?;
    let opened = t0.elapsed().as_secs_f64();
    let (mut entries, mut bytes) = (0u64, 0u64);
    let mut digest = [0u8; 32];
    let mut hashing = Duration::ZERO;
    let mut batch = Vec::with_capacity(4096);
    let mut hash_batch = |batch: &mut Vec<(sled::IVec, sled::IVec)>| {
        let t0 = Instant::now();
        for (k, v) in batch.drain(..) {
            toggle(&mut digest, &k, &v);
        }
        hashing += t0.elapsed();
    };
    let t0 = Instant::now();
    for item in db.iter() {
        let (k, v) = item.map_err(|e| e.to_string())?;
        entries += 1;
        bytes += (k.len() + v.len()) as u64;
        batch.push((k, v));
        if batch.len() == 4096 {
            hash_batch(&mut batch);
        }
    }
    hash_batch(&mut batch);
    let first = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let mut again = 0u64;
    for item in db.iter() {
        let (k, v) = item.map_err(|e| e.to_string())?;
        again += (k.len() + v.len()) as u64;
    }
    let second = t0.elapsed().as_secs_f64();
    drop(db);
    // The first pass again from a fresh open, split in two key ranges read
    // and hashed on two threads (the digest is an XOR, so halves combine).
    // "memidx/user5" cuts this generated store about in half.
    let db = sled_config(&store_dir).open().map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let split = sled::IVec::from(&b"memidx/user5"[..]);
    let halves = [db.range(..split.clone()), db.range(split..)];
    let threads: Vec<_> = halves
        .into_iter()
        .map(|half| {
            std::thread::spawn(move || -> Result<[u8; 32], String> {
                let mut digest = [0u8; 32];
                for item in half {
                    let (k, v) = item.map_err(|e| e.to_string())?;
                    toggle(&mut digest, &k, &v);
                }
                Ok(digest)
            })
        })
        .collect();
    let mut both = [0u8; 32];
    for t in threads {
        let half = t
            .join()
            .map_err(|_| "a scan thread panicked".to_string())??;
        both.iter_mut().zip(half).for_each(|(d, h)| *d ^= h);
    }
    let parallel = t0.elapsed().as_secs_f64();
    drop(db);
    if both != digest {
        return Err("the two-thread pass found a different digest".into());
    }
    // The chunks alone, without their term index (which they determine),
    // again from a fresh open.
    let db = sled_config(&store_dir).open().map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let mut chunk_entries = 0u64;
    let mut chunk_digest = [0u8; 32];
    for item in db.scan_prefix(b"mem/") {
        let (k, v) = item.map_err(|e| e.to_string())?;
        toggle(&mut chunk_digest, &k, &v);
        chunk_entries += 1;
    }
    let chunks_only = t0.elapsed().as_secs_f64();
    drop(db);
    let hashing = hashing.as_secs_f64();
    println!(
        "| sled's own open, no scan | {chunks} | {opened:.2} |\n\
         | a pass reading and hashing every entry ({entries} entries, {:.0} MiB) | {chunks} | {first:.2} |\n\
         | &nbsp;&nbsp;of which reading | {chunks} | {:.2} |\n\
         | &nbsp;&nbsp;of which hashing | {chunks} | {hashing:.2} |\n\
         | a second pass, reading only | {chunks} | {second:.2} |\n\
         | the first pass from a fresh open, on two threads | {chunks} | {parallel:.2} |\n\
         | the chunks alone (`mem/`, {chunk_entries} entries, no term index), fresh open | {chunks} | {chunks_only:.2} |",
        bytes as f64 / 1048576.0,
        first - hashing,
    );
    debug_assert_eq!(again, bytes);
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!(
                "{e}\nusage: storebench [--chunks N] [--dir DIR] [--opens N] [--seconds S] [--writers 1,2,4] [--base N] [--durable yes|no] [--shape put|chunk] [--only writes|startup|open]"
            );
            return std::process::ExitCode::from(2);
        }
    };
    println!(
        "tessera storebench: {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    let result = match args.only.as_deref() {
        Some("writes") => writes(&args),
        Some("startup" | "open") => startup(&args),
        _ => writes(&args).and_then(|()| startup(&args)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storebench failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
