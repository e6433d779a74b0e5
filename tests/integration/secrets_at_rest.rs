//! Secret values never reach the disk in plaintext, and rotating the data key
//! re-encrypts everything, surviving an interruption midway.

use std::path::Path;
use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::json;
use tessera::authz::keys::{DataKeys, RootKeys};
use tessera::store::Store;
use tessera::AppState;

use crate::helpers::{test_config, TestApp};

fn files_contain(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in walk(dir) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        if bytes.windows(needle.len()).any(|w| w == needle) {
            hits.push(entry.display().to_string());
        }
    }
    hits
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A server over sled with the given data keys directory.
fn open(dir: &Path) -> TestApp {
    let config = test_config(dir);
    let store: Arc<dyn Store> = Arc::new(crate::helpers::open_sled(&config.store_dir()));
    let data = DataKeys::load_or_create(&config.keys_dir()).unwrap();
    let root = RootKeys::load_or_create(&config.keys_dir()).unwrap();
    TestApp::from_state(AppState::build(config, store, root, data).unwrap(), None)
}

const VALUES: [&str; 5] = [
    "plaintext-one-AAAAAAAAAAAAAA",
    "plaintext-two-BBBBBBBBBBBBBB",
    "plaintext-three-CCCCCCCCCCCC",
    "plaintext-four-DDDDDDDDDDDDD",
    "plaintext-five-EEEEEEEEEEEEE",
];

#[tokio::test]
async fn the_store_never_holds_a_plaintext_value() {
    let dir = tempfile::tempdir().unwrap();
    {
        let app = open(dir.path());
        let alice = app.setup_admin().await;
        for (i, v) in VALUES.iter().enumerate() {
            let r = app
                .post(
                    "/api/secrets",
                    &alice,
                    json!({"name": format!("S{i}"), "value": v}),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK);
        }
        let r = app
            .call(
                axum::http::Method::PUT,
                "/api/secrets/S0",
                crate::helpers::Auth::Bearer(&alice),
                Some(json!({"value": "plaintext-changed-FFFFFFFFFF"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        app.state.store.flush().unwrap();
    }
    for v in VALUES.iter().chain(["plaintext-changed-FFFFFFFFFF"].iter()) {
        let hits = files_contain(&dir.path().join("store"), v.as_bytes());
        assert!(hits.is_empty(), "{v} found in {hits:?}");
    }
    // The scan itself works: an unencrypted field is found.
    assert!(!files_contain(&dir.path().join("store"), b"S3").is_empty());
}

/// A pending account's invite code (from an invite or a reset) is kept only
/// as a digest: a local reader of the files cannot take the account over.
#[tokio::test]
async fn invite_codes_never_reach_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut codes = Vec::new();
    {
        let app = open(dir.path());
        let alice = app.setup_admin().await;
        let r = app
            .post("/auth/users", &alice, json!({"username": "bob"}))
            .await;
        codes.push(r.body["invite_code"].as_str().unwrap().to_owned());
        app.add_user(&alice, "carol", "carol-password").await;
        let r = app.post("/auth/users/carol/reset", &alice, json!({})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        codes.push(r.body["invite_code"].as_str().unwrap().to_owned());
        // Both codes work.
        for (user, code) in ["bob", "carol"].iter().zip(&codes) {
            assert_eq!(app.login(user, code).await.status, StatusCode::OK);
        }
        app.state.store.flush().unwrap();
    }
    for code in &codes {
        let hits = files_contain(&dir.path().join("store"), code.as_bytes());
        assert!(hits.is_empty(), "invite code {code} found in {hits:?}");
    }
}

#[tokio::test]
async fn rotation_reencrypts_everything_and_survives_interruption() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    {
        let app = open(dir.path());
        let alice = app.setup_admin().await;
        for (i, v) in VALUES.iter().enumerate() {
            app.post(
                "/api/secrets",
                &alice,
                json!({"name": format!("S{i}"), "value": v}),
            )
            .await;
        }
    }
    let store = || -> Arc<dyn Store> { Arc::new(crate::helpers::open_sled(&config.store_dir())) };
    // Interrupted after two secrets.
    let (key, moved, done) =
        tessera::maintenance::rotate_data_key_in(&config.keys_dir(), store(), 2).unwrap();
    assert_eq!((key, moved, done), (2, 2, false));
    // Still readable in between: the server opens old and new ciphertexts.
    {
        let app = open(dir.path());
        let alice = app
            .login("alice", crate::helpers::ADMIN_PASSWORD)
            .await
            .token();
        for (i, v) in VALUES.iter().enumerate() {
            let r = app.get(&format!("/api/secrets/S{i}"), &alice).await;
            assert_eq!(r.body["value"], *v);
        }
    }
    // The rerun resumes with the same key and finishes.
    let (key, moved, done) =
        tessera::maintenance::rotate_data_key_in(&config.keys_dir(), store(), usize::MAX).unwrap();
    assert_eq!((key, moved, done), (2, 3, true));
    let keys: Vec<_> = walk(&config.keys_dir())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("data-"))
        .collect();
    assert_eq!(keys.len(), 2, "no extra key was made: {keys:?}");
    let store = store();
    for (_, bytes) in store.scan(b"secret/", None, usize::MAX).unwrap() {
        let s: tessera::domain::secrets::Secret = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(s.sealed.key_id, 2);
    }
    drop(store);
    let app = open(dir.path());
    let alice = app
        .login("alice", crate::helpers::ADMIN_PASSWORD)
        .await
        .token();
    for (i, v) in VALUES.iter().enumerate() {
        assert_eq!(
            app.get(&format!("/api/secrets/S{i}"), &alice).await.body["value"],
            *v
        );
    }
    // New secrets use the new key.
    app.post(
        "/api/secrets",
        &alice,
        json!({"name": "NEW", "value": "new-value"}),
    )
    .await;
    let s = app
        .state
        .secrets
        .get(
            &app.state.accounts.find("alice").unwrap().unwrap().id,
            "NEW",
        )
        .unwrap()
        .unwrap();
    assert_eq!(s.sealed.key_id, 2);
}

/// A TOTP secret is sealed at rest under the data key like a secret's
/// value, and data key rotation re-seals it; the factor keeps working.
#[tokio::test]
async fn totp_secrets_are_sealed_and_rotated_with_the_data_key() {
    use tessera::domain::factors::{hotp, step_of, FactorSet};
    let code = |secret: &str, offset: i64| {
        let raw = data_encoding::BASE32_NOPAD
            .decode(secret.as_bytes())
            .unwrap();
        let step = step_of(tessera::domain::now()) + offset;
        format!("{:06}", hotp(&raw, step as u64, 6).unwrap())
    };
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let secret = {
        let app = open(dir.path());
        let alice = app.setup_admin().await;
        let r = app.post("/auth/factors/totp", &alice, json!({})).await;
        let secret = r.body["secret"].as_str().unwrap().to_owned();
        let r = app
            .post(
                "/auth/factors/totp/confirm",
                &alice,
                json!({"code": code(&secret, 0)}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        app.state.store.flush().unwrap();
        secret
    };
    let hits = files_contain(&dir.path().join("store"), secret.as_bytes());
    assert!(hits.is_empty(), "the TOTP secret found in {hits:?}");

    let store = || -> Arc<dyn Store> { Arc::new(crate::helpers::open_sled(&config.store_dir())) };
    let (key, moved, done) =
        tessera::maintenance::rotate_data_key_in(&config.keys_dir(), store(), usize::MAX).unwrap();
    assert_eq!((key, moved, done), (2, 1, true));
    {
        let store = store();
        let (_, bytes) = store.scan(b"factors/", None, 1).unwrap().remove(0);
        let set: FactorSet = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(set.totp.unwrap().sealed.key_id, 2);
    }
    let app = open(dir.path());
    let first = app.login("alice", crate::helpers::ADMIN_PASSWORD).await;
    let r = app
        .post(
            "/auth/second-factor",
            &first.token(),
            json!({"code": code(&secret, 1)}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}
