//! Schema versions and backups: an old store upgrades and keeps its data, a
//! newer one is refused, and a backup taken under load restores to a server
//! that works.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::json;
use tessera::migrate::{backup, schema};
use tessera::store::{Store, Transaction};
use tower::ServiceExt;

use crate::helpers::{test_config, TestApp, ADMIN_PASSWORD};

/// A version-1 store as the test builds it: no version stamp, a conversation
/// whose last-message time lives in its record, a memory grant without its
/// reverse index.
fn version_one_store(dir: &std::path::Path) {
    // Its keys, as the version that wrote it created them.
    let keys = test_config(dir).keys_dir();
    tessera::authz::keys::RootKeys::load_or_create(&keys).unwrap();
    tessera::authz::keys::DataKeys::load_or_create(&keys).unwrap();
    let store = crate::helpers::open_sled(&test_config(dir).store_dir());
    let conv = json!({
        "id": "c1", "name": "dm", "type": "dm", "members": ["u1", "helper"],
        "created_by": "u1", "created_at": 1.0, "last_message_at": 42.5
    });
    let mut tx = Transaction::durable();
    tx.put("chat/u1/c1", conv.to_string())
        .put("chatown/c1", "u1")
        .put("memgrant/u1/helper", Vec::new());
    store.commit(&tx).unwrap();
}

#[test]
fn an_old_store_upgrades_and_keeps_its_data_and_a_newer_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    version_one_store(dir.path());
    {
        let store = crate::helpers::open_sled(&test_config(dir.path()).store_dir());
        let (version, pending) = schema::status(&store).unwrap();
        assert_eq!((version, pending.len()), (1, schema::STEPS.len()));
    }
    let state = crate::helpers::open_state(test_config(dir.path())).unwrap();
    let store = state.store.clone();
    assert_eq!(
        schema::status(store.as_ref()).unwrap(),
        (schema::current(), vec![])
    );
    assert_eq!(
        store.get(b"chatlast/u1/c1").unwrap(),
        Some(b"42.5".to_vec())
    );
    assert!(store.get(b"agentmem/helper/u1").unwrap().is_some());
    assert!(
        store.get(b"chat/u1/c1").unwrap().is_some(),
        "the data stays"
    );
    let conv = state.chat.get("u1", "c1").unwrap().unwrap();
    assert_eq!(conv.last_message_at, Some(42.5));
    let backups: Vec<_> = std::fs::read_dir(dir.path().join("backups"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(backups.len(), 1, "one backup before the upgrade");
    let taken = backup::decode(&std::fs::read(backups[0].path()).unwrap()).unwrap();
    assert!(taken.entries.iter().any(|(k, _)| k == b"chat/u1/c1"));
    drop(state);
    drop(store);

    // Reopening runs nothing more and takes no second backup.
    drop(crate::helpers::open_state(test_config(dir.path())).unwrap());
    assert_eq!(
        std::fs::read_dir(dir.path().join("backups"))
            .unwrap()
            .count(),
        1
    );

    // A store from the future is refused, clearly.
    {
        let store = crate::helpers::open_sled(&test_config(dir.path()).store_dir());
        let mut tx = Transaction::durable();
        tx.put(schema::VERSION_KEY, "99");
        store.commit(&tx).unwrap();
    }
    let err = crate::helpers::open_state(test_config(dir.path()))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("schema version 99") && err.contains("newer"),
        "{err}"
    );
}

#[test]
fn a_fresh_store_is_stamped_current() {
    let dir = tempfile::tempdir().unwrap();
    let state = crate::helpers::open_state(test_config(dir.path())).unwrap();
    assert_eq!(
        schema::version(state.store.as_ref()).unwrap(),
        Some(schema::current())
    );
    assert!(!dir.path().join("backups").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_writes_restores_to_a_working_server() {
    let dir = tempfile::tempdir().unwrap();
    let app = Arc::new(TestApp::from_state(
        crate::helpers::open_state(test_config(dir.path())).unwrap(),
        None,
    ));
    let admin = app.setup_admin().await;
    let bob = app.add_user(&admin, "bob", "bob-password").await;
    app.post(
        "/api/secrets",
        &bob,
        json!({"name": "K", "value": "bob-secret"}),
    )
    .await;

    // Writers keep creating agents (each one a multi-key transaction) while
    // the backup is taken.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (app, bob) = (app.clone(), bob.clone());
            tokio::spawn(async move {
                for i in 0..40 {
                    let r = app
                        .post("/api/agents", &bob, json!({"name": format!("w{w}-{i}")}))
                        .await;
                    assert_eq!(r.status, StatusCode::OK);
                }
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let resp = app
        .router
        .clone()
        .oneshot(
            Request::post("/api/admin/backup")
                .header("authorization", format!("Bearer {admin}"))
                .header("content-type", "application/json")
                .body(Body::from(json!({"password": ADMIN_PASSWORD}).to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    for w in writers {
        w.await.unwrap();
    }
    // Not for everyone.
    assert_eq!(
        app.post(
            "/api/admin/backup",
            &bob,
            json!({"password": "bob-password"})
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );

    let target = tempfile::tempdir().unwrap();
    let config = test_config(target.path());
    backup::restore(&bytes, &config.store_dir(), &config.keys_dir(), false).unwrap();
    assert!(
        backup::restore(&bytes, &config.store_dir(), &config.keys_dir(), false).is_err(),
        "a non-empty target needs force"
    );
    let restored = TestApp::from_state(crate::helpers::open_state(config).unwrap(), None);

    // Same keys: tokens issued before the backup still work.
    assert_eq!(
        restored.get("/auth/me", &admin).await.status,
        StatusCode::OK
    );
    assert_eq!(
        restored.login("alice", ADMIN_PASSWORD).await.status,
        StatusCode::OK
    );
    assert_eq!(
        restored.get("/api/secrets/K", &bob).await.body["value"],
        "bob-secret"
    );
    // Consistent: every agent that made it in is whole (record and index).
    let agents = restored
        .get("/api/agents", &bob)
        .await
        .body
        .as_array()
        .unwrap()
        .len();
    let store = restored.state.store.clone();
    let records = store.scan(b"agent/", None, usize::MAX).unwrap().len();
    let owned = store.scan(b"owned/", None, usize::MAX).unwrap().len();
    assert_eq!((agents, records), (owned, owned));
    assert!(owned <= 160);
}

/// A backup carries the keys: an admin session alone does not get one. The
/// password must come with the request; refusals and downloads are audited.
#[tokio::test]
async fn a_backup_over_http_needs_the_admins_password() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let r = app.post("/api/admin/backup", &admin, json!({})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.error().contains("password"), "{}", r.body);
    let r = app
        .post(
            "/api/admin/backup",
            &admin,
            json!({"password": "not-it-at-all"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = app.get("/api/admin/backup", &admin).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let resp = app
        .router
        .clone()
        .oneshot(
            Request::post("/api/admin/backup")
                .header("authorization", format!("Bearer {admin}"))
                .header("content-type", "application/json")
                .body(Body::from(json!({"password": ADMIN_PASSWORD}).to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(backup::decode(&bytes).is_ok());
    let audit = app.get("/api/audit", &admin).await;
    let actions: Vec<&str> = audit.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"admin.backup"), "{actions:?}");
    assert!(actions.contains(&"admin.backup_refused"), "{actions:?}");
}

/// A store from before invite digests: a pending user's code in plaintext.
/// After the upgrade the store holds only a digest, and the code handed out
/// before keeps working.
#[tokio::test]
async fn an_invite_code_issued_before_digests_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let code = {
        let state = crate::helpers::open_state(test_config(dir.path())).unwrap();
        let app = TestApp::from_state(state.clone(), None);
        let admin = app.setup_admin().await;
        let r = app
            .post("/auth/users", &admin, json!({"username": "dora"}))
            .await;
        let code = r.body["invite_code"].as_str().unwrap().to_owned();
        // Write the record as version 3 kept it.
        let dora = state.accounts.find("dora").unwrap().unwrap();
        let key = format!("user/{}", dora.id);
        let mut record: serde_json::Value =
            serde_json::from_slice(&state.store.get(key.as_bytes()).unwrap().unwrap()).unwrap();
        let invite = record["invite"].as_object_mut().unwrap();
        invite.remove("digest");
        invite.insert("code".into(), json!(code));
        let mut tx = Transaction::durable();
        tx.put(key, record.to_string())
            .put(schema::VERSION_KEY, "3");
        state.store.commit(&tx).unwrap();
        code
    };
    let state = crate::helpers::open_state(test_config(dir.path())).unwrap();
    assert_eq!(
        schema::status(state.store.as_ref()).unwrap(),
        (schema::current(), vec![])
    );
    for (key, value) in state.store.scan(b"", None, usize::MAX).unwrap() {
        assert!(
            !String::from_utf8_lossy(&value).contains(&code),
            "the code is still in the store at {}",
            String::from_utf8_lossy(&key)
        );
    }
    let app = TestApp::from_state(state, None);
    let r = app.login("dora", &code).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["needs_onboarding"], true, "{}", r.body);
    let r = app
        .anon_post(
            "/auth/complete",
            json!({"username": "dora", "invite_code": code, "password": "dora-password"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}
