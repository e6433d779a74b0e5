//! Delegated tokens are capabilities: narrowing them offline is honoured,
//! nothing appended to them widens them, and they never outlive the issuer's
//! rights. Plus the audit trail of admin acts, and policy as data.

use axum::http::{Method, StatusCode};
use base64::Engine;
use biscuit_auth::{BlockBuilder, UnverifiedBiscuit};
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::helpers::{Auth, TestApp};

fn append(token: &str, code: &str) -> String {
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .unwrap();
    let unverified = UnverifiedBiscuit::from(&bytes).unwrap();
    let block = BlockBuilder::new().code(code).unwrap();
    unverified.append(block).unwrap().to_base64().unwrap()
}

async fn host() -> (TestApp, String, String) {
    let app = TestApp::new();
    let alice = app.setup_admin().await;
    let olive = app.add_user(&alice, "olive", "olive-password").await;
    for name in ["helper", "other"] {
        let r = app.post("/api/agents", &olive, json!({"name": name})).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    (app, alice, olive)
}

async fn mint(app: &TestApp, by: &str, agent: &str, level: &str) -> Value {
    let r = app
        .post(
            "/api/tokens",
            by,
            json!({"agent": agent, "level": level, "expires_in": 3600, "label": "test"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body
}

/// The requests a holder might try, and what each is.
fn probes() -> Vec<(Method, &'static str, Option<Value>)> {
    vec![
        (Method::GET, "/api/agents/helper", None),
        (Method::GET, "/api/agents/other", None),
        (
            Method::PUT,
            "/api/agents/helper",
            Some(json!({"model": "x"})),
        ),
        (Method::POST, "/api/agents/helper/archive", Some(json!({}))),
        (Method::GET, "/api/agents/helper/shares", None),
        (Method::DELETE, "/api/agents/helper", None),
        (Method::GET, "/auth/me", None),
        (Method::GET, "/auth/users", None),
        (
            Method::POST,
            "/api/tokens",
            Some(json!({"agent": "helper", "level": "view", "expires_in": 60})),
        ),
    ]
}

async fn outcomes(app: &TestApp, token: &str) -> Vec<StatusCode> {
    let mut out = Vec::new();
    for (method, path, body) in probes() {
        out.push(
            app.call(method, path, Auth::Bearer(token), body)
                .await
                .status,
        );
    }
    out
}

/// Blocks an attacker might append: claims of other identities, rights,
/// sessions, rules that try to derive permission, and harmless filler.
const HOSTILE: &[&str] = &[
    r#"user("someone-else");"#,
    r#"admin("someone-else");"#,
    r#"session("forged");"#,
    r#"resource_agent("other");"#,
    r#"required_rank(0);"#,
    r#"holds("helper", "x", 6);"#,
    r#"may("agent:delete");"#,
    r#"may($op) <- operation($op);"#,
    r#"owner("helper", $u) <- user($u);"#,
    r#"granting_rank(0);"#,
    r#"check if true;"#,
    r#"delegable("agent:transfer");"#,
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Appending any block never turns a refused request into an allowed one.
    #[test]
    fn appending_never_escalates(picks in proptest::collection::vec(0..HOSTILE.len(), 1..5), level in 0..5usize) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (app, _alice, olive) = host().await;
            let level = ["view", "use", "edit", "manage", "share"][level];
            let token = mint(&app, &olive, "helper", level).await["token"].as_str().unwrap().to_owned();
            let code: String = picks.iter().map(|i| HOSTILE[*i]).collect::<Vec<_>>().join("\n");
            let narrowed = append(&token, &code);
            let before = outcomes(&app, &token).await;
            let after = outcomes(&app, &narrowed).await;
            for (i, (b, a)) in before.iter().zip(&after).enumerate() {
                if !b.is_success() {
                    prop_assert!(!a.is_success(), "probe {} escalated from {} to {} with {:?}", i, b, a, code);
                }
                prop_assert!(!a.is_server_error(), "probe {}: {}", i, a);
            }
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn holders_narrow_tokens_offline_and_the_server_honours_it() {
    let (app, _alice, olive) = host().await;
    let token = mint(&app, &olive, "helper", "manage").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        outcomes(&app, &token).await[2],
        StatusCode::OK,
        "manage may update"
    );

    let read_only = append(&token, r#"check if operation("agent:read");"#);
    let got = outcomes(&app, &read_only).await;
    assert_eq!(got[0], StatusCode::OK);
    assert_eq!(got[2], StatusCode::FORBIDDEN);
    assert_eq!(got[3], StatusCode::FORBIDDEN);

    // Narrowed twice, by two holders: both restrictions apply, and an agent
    // the token may not read is one it cannot see.
    let twice = append(&read_only, r#"check if resource_agent("nothing");"#);
    assert_eq!(outcomes(&app, &twice).await[0], StatusCode::NOT_FOUND);

    // A holder's own expiry, already past: nothing passes.
    let expired = append(&token, "check if time($t), $t <= 2000-01-01T00:00:00Z;");
    let got = outcomes(&app, &expired).await;
    assert_eq!(got[0], StatusCode::NOT_FOUND);
    assert!(got.iter().all(|s| !s.is_success()));
    // A holder's expiry still ahead: honoured until then (the first probes
    // archived the agent, which freezes it: restore it first).
    let r = app
        .post("/api/agents/helper/restore", &olive, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let later = append(&token, "check if time($t), $t <= 2100-01-01T00:00:00Z;");
    assert_eq!(outcomes(&app, &later).await[2], StatusCode::OK);
}

/// What a delegated token shows of its agent is what its level allows: the
/// owner's token at `view` neither claims more nor lists the shares (reading
/// them needs `share`, which the token does not carry).
#[tokio::test]
async fn a_delegated_token_sees_its_agent_at_its_own_level() {
    let (app, alice, olive) = host().await;
    app.add_user(&alice, "bob", "bob-password").await;
    let r = app
        .post(
            "/api/agents/helper/shares",
            &olive,
            json!({"user": "bob", "level": "use"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let own = app.get("/api/agents/helper", &olive).await.body;
    assert_eq!(own["access"], "owner");
    assert_eq!(own["shared_with"].as_array().map(Vec::len), Some(1));

    for (level, shown) in [("view", "view"), ("manage", "manage")] {
        let token = mint(&app, &olive, "helper", level).await["token"]
            .as_str()
            .unwrap()
            .to_owned();
        for seen in [
            app.get("/api/agents/helper", &token).await.body,
            app.get("/api/agents", &token).await.body[0].clone(),
        ] {
            assert_eq!(seen["name"], "helper");
            assert_eq!(seen["access"], shown, "{seen}");
            assert!(seen.get("shared_with").is_none(), "{seen}");
        }
        let listed = app.get("/api/agents", &token).await.body;
        assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    }
}

#[tokio::test]
async fn a_token_never_outlives_the_issuers_rights() {
    let (app, alice, olive) = host().await;
    let bob = app.add_user(&alice, "bob", "bob-password").await;
    app.post(
        "/api/agents/helper/shares",
        &olive,
        json!({"user": "bob", "level": "manage"}),
    )
    .await;
    let token = mint(&app, &bob, "helper", "edit").await;
    let t = token["token"].as_str().unwrap();
    let update = |t: String| {
        let app = &app;
        async move {
            app.call(
                Method::PUT,
                "/api/agents/helper",
                Auth::Bearer(&t),
                Some(json!({"model": "m"})),
            )
            .await
            .status
        }
    };
    assert_eq!(update(t.to_owned()).await, StatusCode::OK);

    // Bob drops to `use`: his edit token stops editing, though it still says edit.
    app.post(
        "/api/agents/helper/shares",
        &olive,
        json!({"user": "bob", "level": "use"}),
    )
    .await;
    assert_eq!(update(t.to_owned()).await, StatusCode::FORBIDDEN);
    // ...and cannot mint a higher one any more.
    let r = app
        .post(
            "/api/tokens",
            &bob,
            json!({"agent": "helper", "level": "edit", "expires_in": 60}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Bob loses the agent entirely: the token cannot even see it.
    app.delete("/api/agents/helper/shares/bob", &olive).await;
    assert_eq!(
        app.get("/api/agents/helper", t).await.status,
        StatusCode::NOT_FOUND
    );

    // Revoked by its issuer's deletion.
    app.post(
        "/api/agents/helper/shares",
        &olive,
        json!({"user": "bob", "level": "manage"}),
    )
    .await;
    let token = mint(&app, &bob, "helper", "view").await;
    let t = token["token"].as_str().unwrap();
    assert_eq!(
        app.get("/api/agents/helper", t).await.status,
        StatusCode::OK
    );
    let r = app.delete("/auth/users/bob", &alice).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        app.get("/api/agents/helper", t).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn tokens_are_listed_revoked_and_inspected() {
    let (app, alice, olive) = host().await;
    let bob = app.add_user(&alice, "bob", "bob-password").await;
    let minted = mint(&app, &olive, "helper", "use").await;
    let id = minted["id"].as_str().unwrap();
    let token = minted["token"].as_str().unwrap();

    let mine = app.get("/api/tokens", &olive).await;
    assert_eq!(mine.body["tokens"].as_array().unwrap().len(), 1);
    assert!(
        mine.body["tokens"][0].get("token").is_none(),
        "token strings are never stored or listed"
    );
    assert_eq!(app.get("/api/tokens", &bob).await.body["tokens"], json!([]));
    assert_eq!(
        app.get("/api/tokens", &alice).await.body["tokens"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let seen = app
        .post("/api/tokens/inspect", &bob, json!({"token": token}))
        .await;
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(seen.body["valid"], true);
    assert_eq!(seen.body["agent"], "helper");
    assert_eq!(seen.body["level"], "use");
    assert_eq!(seen.body["issuer"]["username"], "olive");
    let blocks = seen.body["blocks"].as_array().unwrap();
    assert!(blocks[1]
        .as_str()
        .unwrap()
        .contains("resource_agent(\"helper\")"));

    // Someone else's token id is as good as missing.
    assert_eq!(
        app.delete(&format!("/api/tokens/{id}"), &bob).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.delete(&format!("/api/tokens/{id}"), &olive)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.get("/api/agents/helper", token).await.status,
        StatusCode::UNAUTHORIZED
    );
    let seen = app
        .post("/api/tokens/inspect", &bob, json!({"token": token}))
        .await;
    assert_eq!(seen.body["valid"], false);
    assert_eq!(seen.body["signature_valid"], true);

    // A forged token is shown but never accepted.
    let forged = append(token, r#"user("olive");"#).replace('A', "B");
    let seen = app
        .post("/api/tokens/inspect", &bob, json!({"token": forged}))
        .await;
    assert!(seen.status == StatusCode::BAD_REQUEST || seen.body["valid"] == false);
    let r = app
        .post("/api/tokens/inspect", &bob, json!({"token": "garbage"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Bad requests.
    for body in [
        json!({"agent": "helper", "level": "owner", "expires_in": 60}),
        json!({"agent": "helper", "level": "root", "expires_in": 60}),
        json!({"agent": "helper", "level": "view", "expires_in": 0}),
        json!({"agent": "helper", "level": "view"}),
    ] {
        let r = app.post("/api/tokens", &olive, body.clone()).await;
        assert!(
            r.status.is_client_error() && r.body["error"].is_string(),
            "{body}: {}",
            r.status
        );
    }
    let r = app
        .post(
            "/api/tokens",
            &olive,
            json!({"agent": "nope", "level": "view", "expires_in": 60}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn admins_act_on_behalf_and_the_audit_log_says_so() {
    let (app, alice, olive) = host().await;
    let bob = app.add_user(&alice, "bob", "bob-password").await;
    let olive_id = app.state.accounts.find("olive").unwrap().unwrap().id;
    let alice_id = app.state.accounts.find("alice").unwrap().unwrap().id;

    // Create for another user, share on their behalf, transfer.
    let r = app
        .post(
            "/api/agents",
            &alice,
            json!({"name": "made-for-olive", "owner": "olive", "color": "#fff"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["agent"]["owner"]["username"], "olive");
    let r = app
        .post(
            "/api/agents/helper/shares",
            &alice,
            json!({"user": "bob", "level": "edit"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body["share"]["granted_by"]["username"], "olive",
        "the grant draws on the owner"
    );
    assert_eq!(
        app.get("/api/agents/helper", &bob).await.body["access"],
        "edit"
    );

    // Admins do not delete what they do not own; they may transfer it.
    assert_eq!(
        app.delete("/api/agents/helper", &alice).await.status,
        StatusCode::FORBIDDEN
    );
    let r = app
        .post("/api/agents/helper/transfer", &alice, json!({"to": "bob"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        app.get("/api/agents/helper", &bob).await.body["access"],
        "owner"
    );
    // Olive keeps nothing she was not granted.
    assert_eq!(
        app.get("/api/agents/helper", &olive).await.status,
        StatusCode::NOT_FOUND
    );

    let log = app.get("/api/audit", &alice).await;
    let events = log.body["events"].as_array().unwrap();
    let share = events
        .iter()
        .find(|e| e["action"] == "agent.share")
        .unwrap();
    assert_eq!(share["actor"], json!(alice_id));
    assert_eq!(share["on_behalf_of"], json!(olive_id));
    assert_eq!(share["target"], "helper");
    assert!(share["at"].is_i64());
    let made = events
        .iter()
        .find(|e| e["action"] == "agent.create_for")
        .unwrap();
    assert_eq!(made["on_behalf_of"], json!(olive_id));
    assert!(events.iter().any(|e| e["action"] == "agent.transfer"));
    assert!(events
        .iter()
        .any(|e| e["action"] == "auth.login" || e["action"] == "auth.setup"));

    // Users see what concerns them, not everything.
    let olive_log = app.get("/api/audit", &olive).await.body["events"]
        .as_array()
        .unwrap()
        .clone();
    assert!(olive_log.iter().any(|e| e["action"] == "agent.share"));
    assert!(olive_log.iter().all(|e| {
        [e["actor"].clone(), e["on_behalf_of"].clone()].contains(&json!(olive_id))
            || e["concerns"].as_array().unwrap().contains(&json!(olive_id))
    }));
    let bob_id = app.state.accounts.find("bob").unwrap().unwrap().id;
    let bob_log = app.get("/api/audit", &bob).await.body["events"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!bob_log.iter().any(|e| e["action"] == "agent.create_for"));
    assert!(bob_log
        .iter()
        .any(|e| e["concerns"].as_array().unwrap().contains(&json!(bob_id))));

    // Failed logins are recorded without the password.
    app.login("olive", "not-her-password").await;
    let log = app.get("/api/audit", &alice).await;
    let failed = log.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "auth.login_failed")
        .unwrap();
    assert_eq!(failed["target"], "olive");
    assert!(!log.body.to_string().contains("not-her-password"));
}

#[tokio::test]
async fn agent_input_is_checked_and_nothing_leaks() {
    let (app, alice, olive) = host().await;
    let bob = app.add_user(&alice, "bob", "bob-password").await;
    for (body, status) in [
        (json!({"name": "Bad Name"}), StatusCode::BAD_REQUEST),
        (json!({"name": "-x"}), StatusCode::BAD_REQUEST),
        (json!({"name": "x".repeat(64)}), StatusCode::BAD_REQUEST),
        (json!({"display_name": "no name"}), StatusCode::BAD_REQUEST),
        (
            json!({"name": "ok", "access": "owner"}),
            StatusCode::BAD_REQUEST,
        ),
        (json!({"name": "helper"}), StatusCode::CONFLICT),
        (
            json!({"name": "mine", "owner": "olive"}),
            StatusCode::FORBIDDEN,
        ),
    ] {
        let r = app.post("/api/agents", &bob, body.clone()).await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
        assert!(r.body["error"].is_string());
    }
    // Existence does not leak: a hidden agent and a missing one look alike.
    let hidden = app.get("/api/agents/helper", &bob).await;
    let missing = app.get("/api/agents/nothing-here", &bob).await;
    assert_eq!(
        (hidden.status, &hidden.body),
        (missing.status, &missing.body)
    );
    let hidden = app
        .post("/api/agents/helper/archive", &bob, json!({}))
        .await;
    let missing = app
        .post("/api/agents/nothing-here/archive", &bob, json!({}))
        .await;
    assert_eq!(
        (hidden.status, &hidden.body),
        (missing.status, &missing.body)
    );

    for (level, status) in [
        ("owner", StatusCode::BAD_REQUEST),
        ("superuser", StatusCode::BAD_REQUEST),
    ] {
        let r = app
            .post(
                "/api/agents/helper/shares",
                &olive,
                json!({"user": "bob", "level": level}),
            )
            .await;
        assert_eq!(r.status, status);
    }
    let r = app
        .post(
            "/api/agents/helper/shares",
            &olive,
            json!({"user": "nobody", "level": "view"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // A sharer cannot grant above their own level.
    app.post(
        "/api/agents/helper/shares",
        &olive,
        json!({"user": "bob", "level": "share"}),
    )
    .await;
    let carol = app.add_user(&alice, "carol", "carol-password").await;
    let r = app
        .post(
            "/api/agents/helper/shares",
            &bob,
            json!({"user": "carol", "level": "share"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .post("/api/agents/helper/transfer", &bob, json!({"to": "carol"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.get("/api/agents/helper", &carol).await.body["access"],
        "share"
    );
    // Malformed JSON is a clear 4xx and writes nothing.
    let req = axum::http::Request::put("/api/agents/helper")
        .header("authorization", format!("Bearer {olive}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from("{\"model\": "))
        .unwrap();
    assert_eq!(app.send(req).await.status, StatusCode::BAD_REQUEST);
    // Bob's shared-with list view shows who has what.
    let shares = app.get("/api/agents/helper/shares", &bob).await;
    assert_eq!(shares.body["shares"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_sharers_grants_end_when_the_sharer_loses_share() {
    let (app, alice, olive) = host().await;
    let bob = app.add_user(&alice, "bob", "bob-password").await;
    let carol = app.add_user(&alice, "carol", "carol-password").await;
    app.post(
        "/api/agents/helper/shares",
        &olive,
        json!({"user": "bob", "level": "share"}),
    )
    .await;
    app.post(
        "/api/agents/helper/shares",
        &bob,
        json!({"user": "carol", "level": "edit"}),
    )
    .await;
    assert_eq!(
        app.get("/api/agents/helper", &carol).await.body["access"],
        "edit"
    );

    // Olive lowers Bob to edit: Carol's grant, drawn on Bob's share, ends.
    app.post(
        "/api/agents/helper/shares",
        &olive,
        json!({"user": "bob", "level": "edit"}),
    )
    .await;
    assert_eq!(
        app.get("/api/agents/helper", &carol).await.status,
        StatusCode::NOT_FOUND
    );
    let shares = app.get("/api/agents/helper/shares", &olive).await;
    let carol_share = shares.body["shares"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["user"]["username"] == "carol")
        .unwrap()
        .clone();
    assert_eq!(
        carol_share["effective"], false,
        "the record stays, visibly lapsed"
    );

    // Restored when Bob's share is restored: nothing was rewritten.
    app.post(
        "/api/agents/helper/shares",
        &olive,
        json!({"user": "bob", "level": "share"}),
    )
    .await;
    assert_eq!(
        app.get("/api/agents/helper", &carol).await.body["access"],
        "edit"
    );

    // Deleting a user who owns agents needs a choice.
    let r = app.delete("/auth/users/olive", &alice).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.error().contains("agents=transfer"));
    let r = app
        .call(
            Method::DELETE,
            "/auth/users/olive?agents=transfer:bob",
            Auth::Bearer(&alice),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        app.get("/api/agents/helper", &bob).await.body["access"],
        "owner"
    );
    assert_eq!(
        app.get("/api/agents/other", &bob).await.body["access"],
        "owner"
    );
    // Carol's grant drew on Bob, who now owns the agent: it holds.
    assert_eq!(
        app.get("/api/agents/helper", &carol).await.body["access"],
        "edit"
    );
    let r = app
        .call(
            Method::DELETE,
            "/auth/users/bob?agents=delete",
            Auth::Bearer(&alice),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        app.get("/api/agents/helper", &carol).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.get("/api/agents", &alice).await.body, json!([]));
}

/// Which operation needs which level is a fact in `datalog/agents.dl`:
/// edit that file, and a `use` grant may update.
#[tokio::test]
async fn changing_a_level_in_the_policy_file_changes_the_outcome() {
    let dir = crate::helpers::edited_policy(
        r#"agent_op("agent:update", "edit");"#,
        r#"agent_op("agent:update", "use");"#,
    );
    for (policy_dir, expected) in [
        (None, StatusCode::FORBIDDEN),
        (Some(dir.path().to_owned()), StatusCode::OK),
    ] {
        let app = TestApp::with_config(|c| c.policy_dir = policy_dir);
        let alice = app.setup_admin().await;
        let bob = app.add_user(&alice, "bob", "bob-password").await;
        app.post("/api/agents", &alice, json!({"name": "helper"}))
            .await;
        app.post(
            "/api/agents/helper/shares",
            &alice,
            json!({"user": "bob", "level": "use"}),
        )
        .await;
        let r = app
            .call(
                Method::PUT,
                "/api/agents/helper",
                Auth::Bearer(&bob),
                Some(json!({"model": "m"})),
            )
            .await;
        assert_eq!(r.status, expected);
    }
}

/// Private data is its owner's alone: the policy gives admins no way in.
#[tokio::test]
async fn admins_hold_no_rights_on_other_users_private_data() {
    use biscuit_auth::builder::string;
    use tessera::authz::policy::RequestFacts;
    let (app, alice, olive) = host().await;
    let olive_id = app.state.accounts.find("olive").unwrap().unwrap().id;
    let alice_caller = app.state.authenticate(&alice).unwrap();
    let olive_caller = app.state.authenticate(&olive).unwrap();
    for op in ["data:read", "data:write"] {
        let on_olives = || RequestFacts::new(op).fact("data_owner", [string(&olive_id)]);
        assert!(app.state.authorize(&olive_caller, on_olives()).is_ok());
        assert!(
            app.state.authorize(&alice_caller, on_olives()).is_err(),
            "admin {op}"
        );
    }
    // Not through a delegated token of the owner's either.
    let token = mint(&app, &olive, "helper", "share").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let delegated = app.state.authenticate(&token).unwrap();
    let on_olives = RequestFacts::new("data:read").fact("data_owner", [string(&olive_id)]);
    assert!(app.state.authorize(&delegated, on_olives).is_err());
}

/// An admin's token for an agent they manage only as admin ends with the
/// admin flag.
#[tokio::test]
async fn demoting_an_admin_ends_their_delegated_tokens() {
    let (app, alice, olive) = host().await;
    let root = app.add_user(&alice, "root", "root-password").await;
    app.post("/auth/users/root/admin", &alice, json!({"is_admin": true}))
        .await;
    let token = mint(&app, &root, "helper", "manage").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.get("/api/agents/helper", &token).await.status,
        StatusCode::OK
    );
    app.post("/auth/users/root/admin", &alice, json!({"is_admin": false}))
        .await;
    assert_eq!(
        app.get("/api/agents/helper", &token).await.status,
        StatusCode::NOT_FOUND
    );
    let _ = olive;
}

#[tokio::test]
async fn unknown_operations_are_denied() {
    let app = TestApp::new();
    let alice = app.setup_admin().await;
    let caller = app.state.authenticate(&alice).unwrap();
    let r = app.state.authorize(
        &caller,
        tessera::authz::policy::RequestFacts::new("agent:launch_missiles"),
    );
    assert!(matches!(r, Err(tessera::authz::AuthError::Denied(_))));
}

/// Listing reads the caller's index entries, not the host's agents: the
/// entries read for a user who sees 2 agents do not grow with 300 more
/// agents owned by someone else.
#[tokio::test]
async fn listing_reads_what_the_caller_can_see_not_the_host() {
    use std::sync::Arc;
    let store = Arc::new(tessera::store::CountingStore::new(Arc::new(
        tessera::store::MemoryStore::new(),
    )));
    // Counted at the engine, so with the read cache off.
    let mut config = crate::helpers::test_config(std::path::Path::new("unused"));
    config.read_cache_capacity = 0;
    let state = tessera::AppState::build(
        config,
        store.clone(),
        tessera::authz::keys::RootKeys::ephemeral(),
        tessera::authz::keys::DataKeys::ephemeral(),
    )
    .unwrap();
    let app = TestApp::from_state(state, None);
    let alice = app.setup_admin().await;
    let bob = app.add_user(&alice, "bob", "bob-password").await;
    app.post("/api/agents", &bob, json!({"name": "bobs"})).await;
    app.post("/api/agents", &alice, json!({"name": "shared"}))
        .await;
    app.post(
        "/api/agents/shared/shares",
        &alice,
        json!({"user": "bob", "level": "view"}),
    )
    .await;

    let mut reads = Vec::new();
    for round in 0..2 {
        store.take_count();
        let r = app.get("/api/agents", &bob).await;
        assert_eq!(r.body.as_array().unwrap().len(), 2);
        reads.push(store.take_count());
        if round == 0 {
            for i in 0..300 {
                let r = app
                    .post("/api/agents", &alice, json!({"name": format!("agent-{i}")}))
                    .await;
                assert_eq!(r.status, StatusCode::OK);
            }
        }
    }
    assert!(reads[0] > 0);
    assert_eq!(
        reads[0], reads[1],
        "entries read before and after 300 more agents"
    );
}
