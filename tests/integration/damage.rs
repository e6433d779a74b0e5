//! A damaged store is never served: over many random damages to the files of
//! the sled directory, every start either serves exactly the last
//! acknowledged state or refuses naming the damage, and `store verify`
//! agrees with start-up every time.

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tessera::store::Store;

use crate::helpers::{
    copy_dir, open_sled, open_state, private_tempdir, test_config, TestApp, ADMIN_PASSWORD,
};

/// Three users, two agents, and a session, a grant and a delegation that
/// were deleted: the things damage must never bring back.
async fn populate(dir: &Path) {
    let state = open_state(test_config(dir)).expect("a fresh store opens");
    let app = TestApp::from_state(state, None);
    let alice = app.setup_admin().await;
    let bob = app.add_user(&alice, "bob", "bob-password").await;
    app.add_user(&alice, "carol", "carol-password").await;
    for name in ["helper", "scribe"] {
        let r = app.post("/api/agents", &alice, json!({"name": name})).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = app
        .post(
            "/api/agents/helper/shares",
            &alice,
            json!({"user": "bob", "level": "use"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = app.delete("/api/agents/helper/shares/bob", &alice).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = app
        .post(
            "/api/tokens",
            &alice,
            json!({"agent": "scribe", "level": "view", "expires_in": 3600}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let r = app.delete(&format!("/api/tokens/{id}"), &alice).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = app.post("/auth/logout", &bob, json!({})).await;
    assert!(r.status.is_redirection(), "{}", r.body);
    let r = app.login("alice", ADMIN_PASSWORD).await;
    assert_eq!(r.status, 200);
    app.state.store.flush().unwrap();
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Flip random bytes in a random span of `file`, or truncate it.
fn damage(file: &Path, rng: &mut StdRng) -> String {
    let mut bytes = std::fs::read(file).unwrap();
    if bytes.is_empty() {
        return format!("{} (empty, untouched)", file.display());
    }
    if rng.gen_bool(0.25) {
        let keep = rng.gen_range(0..bytes.len());
        bytes.truncate(keep);
        std::fs::write(file, &bytes).unwrap();
        return format!("{} truncated to {keep}", file.display());
    }
    let start = rng.gen_range(0..bytes.len());
    let len = rng.gen_range(1..=4096).min(bytes.len() - start);
    for b in &mut bytes[start..start + len] {
        *b ^= rng.gen_range(1..=255u8);
    }
    std::fs::write(file, &bytes).unwrap();
    format!("{} flipped {len} bytes at {start}", file.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_is_refused_or_harmless_never_served() {
    let pristine = tempfile::tempdir().unwrap();
    populate(pristine.path()).await;
    let expected = open_sled(&test_config(pristine.path()).store_dir())
        .export()
        .unwrap();
    assert!(!expected.is_empty());
    let files = files_under(&test_config(pristine.path()).store_dir());
    assert!(files.len() >= 2, "sled keeps several files: {files:?}");

    let mut rng = StdRng::seed_from_u64(7);
    let (mut served, mut refused) = (0, 0);
    for trial in 0..120 {
        let work = private_tempdir();
        copy_dir(pristine.path(), work.path());
        let config = test_config(work.path());
        // Every file gets its turn; the rest are drawn at random.
        let relative = files[trial % files.len()]
            .strip_prefix(pristine.path())
            .unwrap()
            .to_owned();
        let what = damage(&work.path().join(&relative), &mut rng);

        let verified = tessera::maintenance::verify_store(&config);
        let started = tokio::task::spawn_blocking({
            let config = config.clone();
            move || open_state(config)
        })
        .await
        .unwrap();
        match started {
            Ok(state) => {
                let got = state.store.export().unwrap();
                assert!(
                    got == expected,
                    "trial {trial} ({what}): started and served a store that is not the last \
                     acknowledged one ({} entries, expected {})",
                    got.len(),
                    expected.len()
                );
                assert!(
                    verified.is_ok(),
                    "trial {trial} ({what}): start-up served but verify refused: {:?}",
                    verified.err()
                );
                served += 1;
            }
            Err(e) => {
                let message = e.to_string();
                assert!(
                    message.contains("damaged") && message.contains("backup"),
                    "trial {trial} ({what}): refused without naming the damage: {message}"
                );
                let verify_message =
                    verified.expect_err("verify must refuse what start-up refuses");
                assert!(verify_message.contains("damaged"), "{verify_message}");
                refused += 1;
            }
        }
    }
    eprintln!("damage trials: {served} served the acknowledged state, {refused} refused");
    assert!(refused > 0, "no trial hit anything that mattered");
}

/// A store cut back to an earlier, self-consistent state (as sled does when
/// it drops everything after a damaged spot) is refused by the mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_copy_of_the_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    {
        let state = open_state(config.clone()).unwrap();
        let app = TestApp::from_state(state, None);
        app.setup_admin().await;
        app.state.store.flush().unwrap();
    }
    let older = private_tempdir();
    copy_dir(&config.store_dir(), older.path());
    {
        let state = open_state(config.clone()).unwrap();
        let app = TestApp::from_state(state, None);
        let r = app.login("alice", ADMIN_PASSWORD).await;
        assert_eq!(r.status, 200);
    }
    std::fs::remove_dir_all(config.store_dir()).unwrap();
    copy_dir(older.path(), &config.store_dir());
    let err = open_state(config.clone()).err().expect("refused");
    let message = err.to_string();
    assert!(message.contains("was acknowledged"), "{message}");
    assert!(tessera::maintenance::verify_store(&config).is_err());
}

/// A record that fails to decode while serving is answered 503 (and logged),
/// never 500 and never skipped.
#[tokio::test]
async fn an_undecodable_record_answers_503() {
    let app = TestApp::new();
    let alice = app.setup_admin().await;
    let r = app
        .post("/api/agents", &alice, json!({"name": "helper"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut tx = tessera::store::Transaction::durable();
    tx.put("agent/helper", "{not json");
    app.state.store.commit(&tx).unwrap();
    for path in ["/api/agents/helper", "/api/agents"] {
        let r = app.get(path, &alice).await;
        assert_eq!(r.status, 503, "{path}: {}", r.body);
        assert!(r.error().contains("damaged"), "{}", r.body);
    }
}
