//! Importing real legacy TinyAgentOS data directories (`tests/fixtures/`),
//! then using them through the real HTTP API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tessera::migrate::legacy::{import, Options, Report};
use tessera::store::{MemoryStore, Store, StoreError, StoreResult, Transaction};

use crate::helpers::{fixtures, test_config, Auth, TestApp};

fn options(dir: &str) -> Options {
    Options {
        from: fixtures().join(dir),
        machine_id: Some(fixtures().join("machine-id")),
        dry_run: false,
        skip_undecryptable: false,
        invite_ttl_secs: 7 * 24 * 3600,
    }
}

fn imported(dir: &str) -> (TestApp, Report, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let state = crate::helpers::open_state(test_config(data.path())).unwrap();
    let report = import(&options(dir), &state.store, &state.data_keys).unwrap();
    (TestApp::from_state(state, None), report, data)
}

/// Every file under `dir` with its hash and modification time.
fn fingerprint(dir: &Path) -> BTreeMap<PathBuf, (String, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                let mtime = entry.metadata().unwrap().modified().unwrap();
                out.insert(path, (hex::encode(Sha256::digest(&bytes)), mtime));
            }
        }
    }
    out
}

#[tokio::test]
async fn a_multi_user_install_arrives_with_the_right_owners() {
    let before = fingerprint(&fixtures());
    let (app, report, _data) = imported("multi-user");
    assert_eq!(
        fingerprint(&fixtures()),
        before,
        "the legacy directory is untouched"
    );
    assert_eq!(report.mapped_account.as_ref().unwrap()["username"], "alice");
    assert_eq!(report.kinds["users"].imported, 3);
    assert_eq!(report.kinds["secrets"].imported, 4);
    assert!(report
        .warnings
        .iter()
        .any(|w| w.contains(".auth_local_token")));

    // Everyone logs in with what they had.
    let alice = app.login("alice", "alice-pass").await;
    assert_eq!(alice.status, StatusCode::OK, "{}", alice.body);
    let alice = alice.token();
    let bob = app.login("bob", "bob-pass").await.token();
    let carol = app
        .anon_post(
            "/auth/complete",
            json!({"username": "carol", "invite_code": "18619192", "password": "carol-password"}),
        )
        .await;
    assert_eq!(carol.status, StatusCode::OK, "{}", carol.body);

    // Alice owns what the host kept globally.
    let agents = app.get("/api/agents", &alice).await.body;
    let names: Vec<&str> = agents
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["helper", "old-bot", "research-bot"]);
    assert!(agents
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["access"] == "owner"));
    assert_eq!(
        app.get("/api/agents/old-bot", &alice).await.body["archived"],
        true
    );
    assert_eq!(
        app.get("/api/secrets", &alice)
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        app.get("/api/secrets/OPENAI_API_KEY", &alice).await.body["value"],
        "sk-openai-xyz"
    );
    assert_eq!(
        app.get("/api/user-memory/browse", &alice).await.body["chunks"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        app.get("/api/chat/channels", &alice).await.body["channels"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    let dm = app
        .get("/api/chat/messages?channel_id=5bf9fe634083", &alice)
        .await;
    let authors: Vec<&str> = dm.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["author_id"].as_str().unwrap())
        .collect();
    assert!(
        authors.contains(&"pPuWAS-Ylhk") && authors.contains(&"helper"),
        "{authors:?}"
    );
    assert_eq!(
        app.get("/api/channels", &alice)
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // Bob sees none of it.
    assert_eq!(app.get("/api/agents", &bob).await.body, json!([]));
    assert_eq!(app.get("/api/secrets", &bob).await.body, json!([]));
    assert_eq!(
        app.get("/api/user-memory/browse", &bob).await.body["chunks"],
        json!([])
    );
    assert_eq!(
        app.get("/api/secrets/OPENAI_API_KEY", &bob).await.status,
        StatusCode::NOT_FOUND
    );

    // helper (can_read_user_memory: true) reads alice's memory and its two
    // bound secrets; research-bot does not read memory.
    let runtime = |agent: &'static str| {
        let (app, alice) = (&app, alice.clone());
        async move {
            app.post(
                &format!("/api/agents/{agent}/runtime-token"),
                &alice,
                json!({}),
            )
            .await
            .token()
        }
    };
    let helper = runtime("helper").await;
    let found = app
        .get("/api/user-memory/agent-search?user=alice&q=teal", &helper)
        .await;
    assert_eq!(found.status, StatusCode::OK);
    assert!(!found.body["results"].as_array().unwrap().is_empty());
    let secrets = app.get("/api/secrets/agent/helper", &helper).await.body;
    let mut bound: Vec<(&str, &str)> = secrets
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["value"].as_str().unwrap()))
        .collect();
    bound.sort();
    assert_eq!(
        bound,
        [
            ("TELEGRAM_BOT_TOKEN", "123456:ABC-telegram"),
            ("github_token", "ghp_example")
        ]
    );
    let research = runtime("research-bot").await;
    let r = app
        .get("/api/user-memory/agent-search?user=alice&q=teal", &research)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_legacy_session_cookie_is_exchanged_once() {
    let (app, _, _data) = imported("multi-user");
    let legacy = "8uaXRPVFtGg2MhGmwAbGAc_cttGJopCBbdQB_cPrAGM";
    let r = app
        .call(Method::GET, "/auth/me", Auth::Cookie(legacy), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["user"]["username"], "alice");
    let fresh = r.set_cookie().expect("the cookie is replaced");
    let token = fresh
        .strip_prefix("taos_session=")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(app.get("/auth/me", &token).await.status, StatusCode::OK);
    let again = app
        .call(Method::GET, "/auth/me", Auth::Cookie(legacy), None)
        .await;
    assert_eq!(
        again.status,
        StatusCode::UNAUTHORIZED,
        "the legacy value is dead"
    );
}

/// Forward auth does not exchange a legacy cookie: the proxy would not pass
/// the new cookie to the browser on an allowed request, so the exchange
/// would burn the legacy session. The browser is sent to sign in, where it
/// is exchanged.
#[tokio::test]
async fn forward_auth_leaves_a_legacy_cookie_to_the_sign_in_page() {
    let (app, _, _data) = imported("multi-user");
    let legacy = "8uaXRPVFtGg2MhGmwAbGAc_cttGJopCBbdQB_cPrAGM";
    let verify = axum::http::Request::builder()
        .uri("/auth/verify")
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", "/desktop")
        .header("accept", "text/html")
        .header("cookie", format!("taos_session={legacy}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let r = app.send(verify).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        r.headers.get("location").unwrap(),
        "/auth/login?next=%2Fdesktop"
    );
    assert!(r.set_cookie().is_none());
    let r = app
        .call(Method::GET, "/auth/me", Auth::Cookie(legacy), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "still exchangeable: {}", r.body);
}

#[tokio::test]
async fn a_single_password_install_becomes_one_admin() {
    let (app, report, _data) = imported("single-password");
    assert_eq!(report.mapped_account.as_ref().unwrap()["username"], "admin");
    let r = app.login("admin", "legacy-pass").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["user"]["is_admin"], true);
    // The old bare-float session still signs in, once.
    let r = app
        .call(
            Method::GET,
            "/auth/me",
            Auth::Cookie("legacyFloatToken"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = app
        .call(
            Method::GET,
            "/auth/me",
            Auth::Cookie("legacyFloatToken"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_second_run_imports_nothing_and_a_dry_run_writes_nothing() {
    let (app, first, _data) = imported("multi-user");
    let again = import(
        &options("multi-user"),
        &app.state.store,
        &app.state.data_keys,
    )
    .unwrap();
    assert!(first.kinds.values().any(|c| c.imported > 0));
    assert!(
        again.kinds.values().all(|c| c.imported == 0),
        "{:?}",
        again.kinds
    );
    assert!(again.text().contains("nothing new to import"));

    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut dry = options("multi-user");
    dry.dry_run = true;
    let plan = import(&dry, &store, &app.state.data_keys).unwrap();
    assert_eq!(
        plan.kinds["users"].imported, 3,
        "the plan says what would happen"
    );
    assert!(
        store.export().unwrap().is_empty(),
        "and nothing was written"
    );
}

/// Fails every commit after the first `budget`, like a process killed midway.
struct Dying {
    inner: MemoryStore,
    budget: AtomicUsize,
}

impl Store for Dying {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.inner.get(key)
    }
    fn scan(&self, p: &[u8], a: Option<&[u8]>, l: usize) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.scan(p, a, l)
    }
    fn commit(&self, tx: &Transaction) -> StoreResult<()> {
        if self
            .budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
            .is_err()
        {
            return Err(StoreError::Engine("killed".into()));
        }
        self.inner.commit(tx)
    }
    fn flush(&self) -> StoreResult<()> {
        Ok(())
    }
    fn export(&self) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.export()
    }
    fn revision(&self) -> u64 {
        self.inner.revision()
    }
}

/// Keys and values, leaving out what differs between any two runs anyway:
/// sealed secrets (fresh nonces), agents' import time and, for invites past
/// their original validity, the renewed expiry.
fn comparable(store: &dyn Store) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
    store
        .export()
        .unwrap()
        .into_iter()
        .map(|(k, v)| {
            let volatile =
                k.starts_with(b"secret/") || k.starts_with(b"agent/") || k.starts_with(b"user/");
            (k, (!volatile).then_some(v))
        })
        .collect()
}

#[tokio::test]
async fn an_interrupted_import_rerun_equals_a_clean_one() {
    let keys = tessera::authz::keys::DataKeys::ephemeral();
    let clean: Arc<dyn Store> = Arc::new(MemoryStore::new());
    import(&options("multi-user"), &clean, &keys).unwrap();
    let expected = comparable(clean.as_ref());
    // Interrupt after every possible number of writes, until a run is not
    // interrupted at all: each rerun must end where the clean run did.
    let mut budget = 0;
    loop {
        let dying = Arc::new(Dying {
            inner: MemoryStore::new(),
            budget: AtomicUsize::new(budget),
        });
        let store: Arc<dyn Store> = dying.clone();
        let finished = import(&options("multi-user"), &store, &keys).is_ok();
        dying.budget.store(usize::MAX, Ordering::SeqCst);
        import(&options("multi-user"), &store, &keys).unwrap();
        assert_eq!(
            comparable(store.as_ref()),
            expected,
            "after an interruption at write {budget}"
        );
        if finished {
            break;
        }
        budget += 1;
        assert!(budget < 1_000, "the import never finished");
    }
    assert!(
        budget > 20,
        "the interruptions covered the whole import ({budget} writes)"
    );
}

/// The command line: a dry run plans, `--json` reports in JSON.
#[test]
fn the_command_reports_in_text_and_json() {
    let data = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["migrate", "legacy", "--from"];
        let from = fixtures().join("multi-user");
        let machine = fixtures().join("machine-id");
        let data_dir = data.path().join("d");
        let (from, machine, data_dir) = (
            from.to_str().unwrap().to_owned(),
            machine.to_str().unwrap().to_owned(),
            data_dir.to_str().unwrap().to_owned(),
        );
        args.push(&from);
        args.extend(["--data", &data_dir, "--machine-id", &machine]);
        args.extend(extra);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let plan = run(&["--dry-run"]);
    assert!(plan.contains("dry run: nothing was written") && plan.contains("users"));
    assert!(!data.path().join("d").exists(), "a dry run creates nothing");
    let report: Value = serde_json::from_str(&run(&["--json"])).unwrap();
    assert_eq!(report["kinds"]["agents"]["imported"], 3);
    assert_eq!(report["mapped_account"]["username"], "alice");
    let again: Value = serde_json::from_str(&run(&["--json"])).unwrap();
    assert_eq!(again["kinds"]["agents"]["already_present"], 3);
}

#[tokio::test]
async fn a_wrong_machine_id_stops_with_the_secrets_name_unless_told_to_skip() {
    let data = tempfile::tempdir().unwrap();
    let wrong = data.path().join("wrong-id");
    std::fs::write(&wrong, "not-the-machine").unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let keys = tessera::authz::keys::DataKeys::ephemeral();
    let mut opts = options("multi-user");
    opts.machine_id = Some(wrong);
    let err = import(&opts, &store, &keys).unwrap_err();
    assert!(
        err.contains("TELEGRAM_BOT_TOKEN") || err.contains("does not decrypt"),
        "{err}"
    );
    opts.skip_undecryptable = true;
    let report = import(&opts, &store, &keys).unwrap();
    assert!(report.kinds["secrets"].skipped > 0);
    let _: Value = json!(report);
}
