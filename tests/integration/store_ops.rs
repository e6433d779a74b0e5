//! Moving an install between engines and keeping it safe on PostgreSQL
//! (issue 15): `tessera store copy` sled → PostgreSQL → sled, interrupted
//! and rerun; refusals; a backup restored into PostgreSQL and served; and
//! `/ready` while the database comes and goes. All through the real binary.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::json;
use tessera::pgcluster::PgCluster;
use tessera::store::{PostgresStore, Store, Transaction};
use tessera::storecopy::INCOMPLETE;

use crate::helpers::{command, http, open_sled, private_tempdir, spawn, start, stop, Server};

/// One cluster for this module's tests (but `/ready`'s, which stops its
/// own); each test takes databases of its own in it.
fn cluster() -> std::sync::MutexGuard<'static, PgCluster> {
    static CLUSTER: OnceLock<Mutex<PgCluster>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| Mutex::new(PgCluster::start(false).expect("a PostgreSQL cluster")))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn database(name: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!("{name}_{}", NEXT.fetch_add(1, Ordering::SeqCst));
    cluster().create_database(&name).unwrap()
}

/// Wait (bounded) until a server started on `url` follows its changes:
/// its follower connects after the server starts listening.
fn wait_for_follower(url: &str) {
    let name = url.rsplit('/').next().unwrap().split('?').next().unwrap();
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = '{name}' AND application_name = 'tessera-follower'"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster().sql(&sql).unwrap() == "0" {
        assert!(
            Instant::now() < deadline,
            "the server never followed {name}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("TESSERA_STORE")
        .env_remove("TESSERA_KEYS")
        .env_remove("TESSERA_DATA")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn succeeds(args: &[&str]) -> String {
    let out = tessera(args);
    assert!(
        out.status.success(),
        "tessera {args:?} failed:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

#[track_caller]
fn fails(args: &[&str]) -> String {
    let out = tessera(args);
    assert!(
        !out.status.success(),
        "tessera {args:?} should have failed:\n{}",
        stdout(&out)
    );
    stderr(&out)
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn copy_args<'a>(from: &'a str, to: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["store", "copy", "--from", from, "--to", to];
    args.extend_from_slice(more);
    args
}

/// Everything a PostgreSQL store holds, in key order.
fn pg_export(url: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    PostgresStore::connect(url).unwrap().export().unwrap()
}

/// Everything the sled store of a stopped server's data directory holds.
fn sled_export(data: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    open_sled(&data.join("store")).export().unwrap()
}

/// `tessera serve` on a PostgreSQL store, with the keys in `keys`.
fn serve_on(url: &str, keys: &Path, data: &Path) -> Server {
    let mut cmd = command(data);
    cmd.args(["--store", url, "--keys", s(keys)])
        .stderr(std::process::Stdio::null());
    spawn(cmd)
}

/// The same start, expected to be refused: its error output. A server that
/// starts anyway is stopped and the test fails (rather than waiting on it).
fn refused_to_serve(extra: &[&str], data: &Path) -> String {
    let mut cmd = command(data);
    cmd.args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tessera served a store it should have refused");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    stderr(&out)
}

/// Who a populated install knows.
struct People {
    alice: String,
    bob: String,
}

/// An install made the way people make one, through the real server on
/// sled in `data`: alice (admin), bob invited, an agent shared with him, a
/// secret. The server is stopped on return.
fn populate(data: &Path) -> People {
    let server = start(data);
    let addr = server.addr;
    let (status, body) = http(
        addr,
        "POST",
        "/auth/setup",
        None,
        Some(&json!({"username": "alice", "password": "alice-password"})),
    );
    assert_eq!(status, 200, "{body}");
    let alice = body["token"].as_str().unwrap().to_owned();
    let (status, body) = http(
        addr,
        "POST",
        "/auth/users",
        Some(&alice),
        Some(&json!({"username": "bob"})),
    );
    assert_eq!(status, 200, "{body}");
    let code = body["invite_code"].as_str().unwrap().to_owned();
    let (status, body) = http(
        addr,
        "POST",
        "/auth/complete",
        None,
        Some(&json!({"username": "bob", "invite_code": code, "password": "bob-password"})),
    );
    assert_eq!(status, 200, "{body}");
    let bob = body["token"].as_str().unwrap().to_owned();
    for (path, body) in [
        ("/api/agents", json!({"name": "helper"})),
        (
            "/api/agents/helper/shares",
            json!({"user": "bob", "level": "use"}),
        ),
        (
            "/api/secrets",
            json!({"name": "API_KEY", "value": "s3cret"}),
        ),
    ] {
        let (status, answer) = http(addr, "POST", path, Some(&alice), Some(&body));
        assert_eq!(status, 200, "{path}: {answer}");
    }
    stop(server);
    People { alice, bob }
}

/// What the install made by [`populate`] must still do wherever it runs.
fn assert_serves(server: &Server, people: &People) {
    for (token, name) in [(&people.alice, "alice"), (&people.bob, "bob")] {
        let (status, body) = http(server.addr, "GET", "/auth/me", Some(token), None);
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["user"]["username"], name);
    }
    let (status, body) = http(
        server.addr,
        "GET",
        "/api/agents/helper",
        Some(&people.bob),
        None,
    );
    assert_eq!(status, 200, "the share survived: {body}");
    let (status, body) = http(
        server.addr,
        "GET",
        "/api/secrets",
        Some(&people.alice),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.to_string().contains("API_KEY"), "{body}");
}

/// The counts a copy printed, by kind (source, target).
fn printed_counts(report: &str) -> Vec<(String, u64, u64)> {
    report
        .lines()
        .filter_map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                [kind, a, b] => Some((kind.to_string(), a.parse().ok()?, b.parse().ok()?)),
                _ => None,
            }
        })
        .collect()
}

/// Entries per kind, counted from an export.
fn kinds(entries: &[(Vec<u8>, Vec<u8>)]) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for (key, _) in entries {
        *out.entry(tessera::storecopy::kind(key)).or_default() += 1;
    }
    out
}

#[test]
fn store_copy_moves_an_install_into_postgres_and_back() {
    let dir = private_tempdir();
    let a = dir.path().join("a");
    let people = populate(&a);
    let keys = a.join("keys");
    let url = database("there");

    let report = succeeds(&copy_args(s(&a), &url, &[]));
    let original = sled_export(&a);
    assert_eq!(pg_export(&url), original, "PostgreSQL holds the install");
    // The counts printed are the install's, per kind, on both sides.
    let printed = printed_counts(&report);
    let expected = kinds(&original);
    for (kind, count) in &expected {
        assert!(
            printed.contains(&(kind.clone(), *count, *count)),
            "{kind}: {count} missing from\n{report}"
        );
    }
    assert!(
        expected["user"] >= 2 && expected["grant"] >= 1,
        "{expected:?}"
    );
    assert!(printed.contains(&("total".into(), original.len() as u64, original.len() as u64)));
    assert!(report.contains("every entry matches"), "{report}");
    // Keys stay files: the report says where, and none is in the database.
    assert!(
        report.contains(&format!("--keys {}", keys.display())),
        "{report}"
    );
    let key_files = tessera::migrate::backup::key_files(&keys).unwrap();
    assert!(key_files.len() >= 2);
    let exported = pg_export(&url);
    for (_, bytes) in &key_files {
        assert!(
            !exported
                .iter()
                .any(|(_, v)| v.windows(bytes.len()).any(|w| w == bytes.as_slice())),
            "a key file's bytes are in the database"
        );
    }

    // A server on PostgreSQL, given the keys, serves the same people; what
    // it writes goes along on the way back.
    let server = serve_on(&url, &keys, &dir.path().join("replica"));
    assert_serves(&server, &people);
    let (status, body) = http(
        server.addr,
        "POST",
        "/api/agents",
        Some(&people.bob),
        Some(&json!({"name": "bobs-own"})),
    );
    assert_eq!(status, 200, "{body}");
    stop(server);

    let b = dir.path().join("b");
    let report = succeeds(&copy_args(&url, s(&b), &[]));
    assert!(report.contains("every entry matches"), "{report}");
    // No keys came along, and the report does not pretend they did.
    assert!(report.contains("were not copied"), "{report}");
    assert!(!b.join("keys").exists());
    let there = pg_export(&url);
    assert_eq!(sled_export(&b), there, "sled holds what PostgreSQL held");
    let server = crate::helpers::start_with(&b, &["--keys", s(&keys)]);
    assert_serves(&server, &people);
    let (status, body) = http(
        server.addr,
        "GET",
        "/api/agents/bobs-own",
        Some(&people.bob),
        None,
    );
    assert_eq!(status, 200, "{body}");
    stop(server);
}

#[test]
fn an_interrupted_copy_is_never_served_and_a_rerun_ends_equal_to_a_clean_copy() {
    let dir = private_tempdir();
    let a = dir.path().join("a");
    let people = populate(&a);
    let keys = a.join("keys");
    let original = sled_export(&a);
    assert!(original.len() > 30, "enough to cut: {}", original.len());

    // Into PostgreSQL, cut short twice.
    let url = database("cut");
    let err = fails(&copy_args(s(&a), &url, &["--stop-after", "7"]));
    assert!(err.contains("rerun"), "{err}");
    let partial = pg_export(&url);
    assert_eq!(partial.len(), 8, "seven entries and the marker");
    assert!(partial.iter().any(|(k, _)| k == INCOMPLETE.as_bytes()));
    // Neither a server nor a command takes it for a store.
    let refusal = refused_to_serve(
        &["--store", &url, "--keys", s(&keys)],
        &dir.path().join("replica"),
    );
    assert!(refusal.contains("interrupted"), "{refusal}");
    let status = fails(&["migrate", "status", "--store", &url]);
    assert!(status.contains("interrupted"), "{status}");
    let verify = fails(&["store", "verify", "--store", &url]);
    assert!(verify.contains("interrupted"), "{verify}");
    // A resumed run cut short again stays marked.
    fails(&copy_args(s(&a), &url, &["--stop-after", "20"]));
    assert!(PostgresStore::connect(&url)
        .unwrap()
        .get(INCOMPLETE.as_bytes())
        .unwrap()
        .is_some());
    // Something the source no longer holds (as if it changed between the
    // runs) must not survive the rerun.
    let mut tx = Transaction::new();
    tx.put("user/left-over", "{}");
    PostgresStore::connect(&url).unwrap().commit(&tx).unwrap();

    let report = succeeds(&copy_args(s(&a), &url, &[]));
    assert!(report.contains("finished an interrupted copy"), "{report}");
    let clean = database("clean");
    succeeds(&copy_args(s(&a), &clean, &[]));
    let resumed = pg_export(&url);
    assert_eq!(resumed, pg_export(&clean), "equal to a clean copy");
    assert_eq!(resumed, original);
    let server = serve_on(&url, &keys, &dir.path().join("replica"));
    assert_serves(&server, &people);
    stop(server);

    // Back into sled, cut short: refused as well, and finished by a rerun.
    let b = dir.path().join("b");
    fails(&copy_args(&clean, s(&b), &["--stop-after", "3"]));
    let refusal = refused_to_serve(&["--keys", s(&keys)], &b);
    assert!(refusal.contains("interrupted"), "{refusal}");
    succeeds(&copy_args(&clean, s(&b), &[]));
    let c = dir.path().join("c");
    succeeds(&copy_args(&clean, s(&c), &[]));
    assert_eq!(sled_export(&b), sled_export(&c), "equal to a clean copy");
    assert_eq!(sled_export(&b), original);
}

#[test]
fn a_copy_refuses_an_occupied_target_and_a_running_servers_directory() {
    let dir = private_tempdir();
    let a = dir.path().join("a");
    populate(&a);
    let original = sled_export(&a);

    let url = database("occupied");
    let mut tx = Transaction::new();
    tx.put("agent/someone-elses", "{}");
    PostgresStore::connect(&url).unwrap().commit(&tx).unwrap();
    let err = fails(&copy_args(s(&a), &url, &[]));
    assert!(err.contains("--force"), "{err}");
    assert_eq!(pg_export(&url).len(), 1, "the target is untouched");
    let report = succeeds(&copy_args(s(&a), &url, &["--force"]));
    assert!(report.contains("emptied first"), "{report}");
    assert_eq!(pg_export(&url), original);

    // An occupied sled directory likewise.
    let err = fails(&copy_args(&url, s(&a), &[]));
    assert!(err.contains("--force"), "{err}");
    let b = dir.path().join("b");
    succeeds(&copy_args(&url, s(&b), &[]));
    succeeds(&copy_args(&url, s(&b), &["--force"]));
    assert_eq!(sled_export(&b), original);

    // A running server's directory is refused, saying why, on either side.
    let server = start(&a);
    let empty = database("untouched");
    let err = fails(&copy_args(s(&a), &empty, &[]));
    assert!(err.contains("in use by a running tessera server"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let err = fails(&copy_args(&url, s(&a), &["--force"]));
    assert!(err.contains("in use by a running tessera server"), "{err}");
    stop(server);
    assert!(pg_export(&empty).is_empty());
    // PostgreSQL has no such lock: the servers running on it are counted.
    let replica = serve_on(&url, &a.join("keys"), &dir.path().join("replica"));
    wait_for_follower(&url);
    let err = fails(&copy_args(&url, s(&dir.path().join("c")), &[]));
    assert!(err.contains("1 tessera server(s) are running"), "{err}");
    let err = fails(&copy_args(s(&b), &url, &["--force"]));
    assert!(err.contains("1 tessera server(s) are running"), "{err}");
    let file = dir.path().join("b.tbk");
    succeeds(&["backup", "--data", s(&b), "--to", s(&file)]);
    let err = fails(&[
        "restore",
        "--from",
        s(&file),
        "--store",
        &url,
        "--keys",
        s(&dir.path().join("k")),
        "--force",
    ]);
    assert!(err.contains("running on this database"), "{err}");
    let (status, body) = http(replica.addr, "GET", "/ready", None, None);
    assert_eq!(
        status, 200,
        "the running server's database is untouched: {body}"
    );
    stop(replica);
    assert_eq!(pg_export(&url), original);
    // The refused target is untouched (the server itself may have added to
    // it while it ran).
    let after = sled_export(&a);
    for entry in &original {
        assert!(
            after.contains(entry),
            "{:?} lost",
            String::from_utf8_lossy(&entry.0)
        );
    }

    // Nothing to copy is not a copy.
    let err = fails(&copy_args(s(&dir.path().join("nowhere")), &empty, &[]));
    assert!(err.contains("no tessera store"), "{err}");
}

#[test]
fn a_backup_restores_into_postgres_and_serves_the_same_users() {
    let dir = private_tempdir();
    let a = dir.path().join("a");
    let people = populate(&a);
    let file = dir.path().join("install.tbk");
    succeeds(&["backup", "--data", s(&a), "--to", s(&file)]);

    let url = database("restored");
    let keys = dir.path().join("shared-keys");
    let restore = |force: bool| {
        let mut args = vec![
            "restore",
            "--from",
            s(&file),
            "--store",
            &url,
            "--keys",
            s(&keys),
        ];
        if force {
            args.push("--force");
        }
        tessera(&args)
    };
    let out = restore(false);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("--keys {}", keys.display())),
        "{}",
        stdout(&out)
    );
    let again = restore(false);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));
    let out = restore(true);
    assert!(out.status.success(), "{}", stderr(&out));

    // The same file format out of PostgreSQL: the same entries and keys.
    let second = dir.path().join("from-postgres.tbk");
    succeeds(&[
        "backup",
        "--store",
        &url,
        "--keys",
        s(&keys),
        "--to",
        s(&second),
    ]);
    let read = |p: &Path| tessera::migrate::backup::decode(&std::fs::read(p).unwrap()).unwrap();
    let (before, after) = (read(&file), read(&second));
    assert_eq!(after.entries, before.entries);
    assert_eq!(after.key_files, before.key_files);
    assert_eq!(after.entries, sled_export(&a));

    let verified = succeeds(&["store", "verify", "--store", &url]);
    assert!(
        verified.contains("every one decodes") && verified.contains("PostgreSQL"),
        "{verified}"
    );

    let server = serve_on(&url, &keys, &dir.path().join("replica"));
    assert_serves(&server, &people);
    // And from the running server, over HTTP: one snapshot of the database.
    let live = dir.path().join("live.tbk");
    let addr = format!("http://{}", server.addr);
    succeeds(&[
        "backup",
        "--to",
        s(&live),
        "--server",
        &addr,
        "--token",
        &people.alice,
        "--password",
        "alice-password",
    ]);
    stop(server);
    let live = read(&live);
    assert_eq!(live.key_files, before.key_files);
    assert!(live
        .entries
        .iter()
        .any(|(k, _)| k.starts_with(b"grant/helper/")));
}

#[test]
fn ready_reports_the_database_going_and_coming_back() {
    // Its own cluster: stopping it must not disturb the other tests.
    let mut cluster = PgCluster::start(false).unwrap();
    let url = cluster.create_database("ready").unwrap();
    let dir = private_tempdir();
    let data = dir.path().join("data");
    let server = serve_on(&url, &data.join("keys"), &data);

    let (status, body) = http(server.addr, "GET", "/ready", None, None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "ready", "store": "postgres"}));

    cluster.stop();
    let (status, body) = http(server.addr, "GET", "/ready", None, None);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["store"], "postgres");
    let error = body["error"].as_str().unwrap();
    assert!(!error.is_empty());
    // Nothing about where the database is or who connects to it.
    let port = cluster.port().to_string();
    for secret in [
        "127.0.0.1",
        port.as_str(),
        "tessera@",
        "postgres://",
        "ready",
    ] {
        assert!(!error.contains(secret), "{secret:?} in {error:?}");
    }

    cluster.resume().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = http(server.addr, "GET", "/ready", None, None);
        if status == 200 {
            assert_eq!(body, json!({"status": "ready", "store": "postgres"}));
            break;
        }
        assert!(Instant::now() < deadline, "not ready again: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    stop(server);
}
