//! "What can I do" (`GET /api/agents?min_level=&limit=&cursor=`) and "who
//! can reach this agent" (`GET /api/agents/{name}/access`): the level
//! filter, pages that lose and repeat nothing even while grants change
//! under the walk, the `Link` header, refusals of bad parameters, and the
//! chains of grants each person's access comes through.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{Response, TestApp};

async fn create(app: &TestApp, token: &str, name: &str) {
    let r = app.post("/api/agents", token, json!({"name": name})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

async fn share(app: &TestApp, by: &str, agent: &str, user: &str, level: &str) {
    let r = app
        .post(
            &format!("/api/agents/{agent}/shares"),
            by,
            json!({"user": user, "level": level}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{user} at {level}: {}", r.body);
}

/// The next page's path from a `Link` header, checking its form.
fn next(r: &Response) -> Option<String> {
    let link = r.headers.get("link")?.to_str().unwrap();
    let path = link
        .strip_prefix('<')
        .and_then(|l| l.strip_suffix(">; rel=\"next\""))
        .unwrap_or_else(|| panic!("malformed Link: {link}"));
    Some(path.to_owned())
}

fn names(r: &Response) -> Vec<String> {
    r.body
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {}", r.body))
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Walk every page of `first`, answering the names in order.
async fn walk(app: &TestApp, token: &str, first: &str) -> Vec<String> {
    let mut path = first.to_owned();
    let mut out = Vec::new();
    for _ in 0..1000 {
        let r = app.get(&path, token).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        out.extend(names(&r));
        match next(&r) {
            Some(p) => path = p,
            None => return out,
        }
    }
    panic!("the walk did not end");
}

const LEVELS: [&str; 6] = ["view", "use", "edit", "manage", "share", "owner"];

#[tokio::test]
async fn the_level_filter_and_the_pages() {
    let app = TestApp::new();
    let alice = app.setup_admin().await;
    let olive = app.add_user(&alice, "olive", "olive-password").await;
    let bob = app.add_user(&alice, "bob", "bob-password").await;
    // bob holds each level once: a grant per level, and one he owns.
    for level in &LEVELS[..5] {
        let name = format!("at-{level}");
        create(&app, &olive, &name).await;
        share(&app, &olive, &name, "bob", level).await;
    }
    create(&app, &bob, "at-owner").await;
    create(&app, &olive, "not-bobs").await;

    // Without parameters: the whole list, as before, and no Link.
    let all = app.get("/api/agents", &bob).await;
    assert_eq!(all.status, StatusCode::OK);
    assert!(all.headers.get("link").is_none());
    assert_eq!(
        names(&all),
        [
            "at-edit",
            "at-manage",
            "at-owner",
            "at-share",
            "at-use",
            "at-view"
        ]
    );
    let first = &all.body[0];
    for field in ["name", "owner", "access", "created_at", "archived"] {
        assert!(first.get(field).is_some(), "{field} in {first}");
    }

    for (i, level) in LEVELS.iter().enumerate() {
        let r = app
            .get(&format!("/api/agents?min_level={level}"), &bob)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let got: BTreeSet<String> = names(&r).into_iter().collect();
        let want: BTreeSet<String> = LEVELS[i..].iter().map(|l| format!("at-{l}")).collect();
        assert_eq!(got, want, "min_level={level}");
        for agent in r.body.as_array().unwrap() {
            let held = LEVELS.iter().position(|l| agent["access"] == *l).unwrap();
            assert!(held >= i, "{agent}");
        }
    }

    // Pages of two: the same list, each agent once, the Link keeping the query.
    let r = app.get("/api/agents?min_level=use&limit=2", &bob).await;
    assert_eq!(names(&r), ["at-edit", "at-manage"]);
    let link = next(&r).unwrap();
    assert!(
        link.starts_with("/api/agents?min_level=use&limit=2&cursor="),
        "{link}"
    );
    let paged = walk(&app, &bob, "/api/agents?min_level=use&limit=2").await;
    assert_eq!(
        paged,
        ["at-edit", "at-manage", "at-owner", "at-share", "at-use"]
    );
    for limit in 1..=7 {
        let paged = walk(&app, &bob, &format!("/api/agents?limit={limit}")).await;
        assert_eq!(paged, names(&all), "limit={limit}");
    }
    // An exact fit has no further page.
    let r = app.get("/api/agents?limit=6", &bob).await;
    assert!(next(&r).is_none());

    // An admin pages through everything; a delegated token through its agent.
    let admin_all = names(&app.get("/api/agents", &alice).await);
    assert_eq!(walk(&app, &alice, "/api/agents?limit=3").await, admin_all);
    let token = app
        .post(
            "/api/tokens",
            &olive,
            json!({"agent": "at-use", "level": "view", "expires_in": 600}),
        )
        .await
        .token();
    assert_eq!(walk(&app, &token, "/api/agents?limit=1").await, ["at-use"]);
    let r = app.get("/api/agents?min_level=use", &token).await;
    assert_eq!(names(&r), Vec::<String>::new(), "the token acts at view");
}

#[tokio::test]
async fn bad_listing_parameters_are_refused() {
    let app = TestApp::new();
    let alice = app.setup_admin().await;
    create(&app, &alice, "helper").await;
    let agents_cursor = {
        create(&app, &alice, "other").await;
        let r = app.get("/api/agents?limit=1", &alice).await;
        let link = next(&r).unwrap();
        link.split("cursor=").nth(1).unwrap().to_owned()
    };
    for query in [
        "min_level=root",
        "min_level=",
        "min_level=VIEW",
        "limit=0",
        "limit=201",
        "limit=-1",
        "limit=two",
        "limit=",
        "cursor=",
        "cursor=%%%",
        "cursor=bm90IGEgY3Vyc29y",
    ] {
        let r = app.get(&format!("/api/agents?{query}"), &alice).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {}", r.body);
        assert!(!r.error().is_empty(), "{query}");
        let r = app
            .get(&format!("/api/agents/helper/access?{query}"), &alice)
            .await;
        if !query.starts_with("min_level") {
            assert_eq!(
                r.status,
                StatusCode::BAD_REQUEST,
                "access {query}: {}",
                r.body
            );
        }
    }
    // One listing's cursor is not another's.
    let r = app
        .get(
            &format!("/api/agents/helper/access?cursor={agents_cursor}"),
            &alice,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = app.get("/api/agents?limit=200", &alice).await;
    assert_eq!(r.status, StatusCode::OK);
}

/// While grants on the other agents come and go, a walk through the pages
/// meets every agent visible throughout exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_lose_and_repeat_nothing_while_grants_change() {
    let app = Arc::new(TestApp::new());
    let alice = app.setup_admin().await;
    let olive = app.add_user(&alice, "olive", "olive-password").await;
    let bob = app.add_user(&alice, "bob", "bob-password").await;
    let mut stable = BTreeSet::new();
    for i in 0..24 {
        let name = format!("a{i:02}");
        create(&app, &olive, &name).await;
        if i % 2 == 0 {
            share(&app, &olive, &name, "bob", "view").await;
            stable.insert(name);
        }
    }
    let churn = {
        let app = app.clone();
        let olive = olive.clone();
        tokio::spawn(async move {
            for round in 0..8 {
                for i in (1..24).step_by(2) {
                    let name = format!("a{i:02}");
                    if round % 2 == 0 {
                        share(&app, &olive, &name, "bob", "use").await;
                    } else {
                        let r = app
                            .delete(&format!("/api/agents/{name}/shares/bob"), &olive)
                            .await;
                        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
                    }
                }
            }
        })
    };
    let mut walks = 0;
    let mut during = 0;
    while walks < 40 && !(churn.is_finished() && walks >= 4) {
        if !churn.is_finished() {
            during += 1;
        }
        for (first, filtered) in [
            ("/api/agents?limit=3", false),
            ("/api/agents?min_level=view&limit=2", false),
            ("/api/agents?min_level=use&limit=2", true),
        ] {
            let seen = walk(&app, &bob, first).await;
            let unique: BTreeSet<&String> = seen.iter().collect();
            assert_eq!(unique.len(), seen.len(), "{first}: a repeat in {seen:?}");
            assert!(seen.windows(2).all(|w| w[0] < w[1]), "{first}: {seen:?}");
            if !filtered {
                for name in &stable {
                    assert!(seen.contains(name), "{first}: {name} lost from {seen:?}");
                }
            } else {
                assert!(seen.iter().all(|n| !stable.contains(n)), "{seen:?}");
            }
        }
        walks += 1;
    }
    churn.await.unwrap();
    assert!(during > 0, "no walk overlapped the changes");
}

/// The same for the access list: people whose grant stays are met exactly
/// once per walk while others' grants come and go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_pages_lose_and_repeat_nothing_while_grants_change() {
    let app = Arc::new(TestApp::new());
    let alice = app.setup_admin().await;
    let olive = app.add_user(&alice, "olive", "olive-password").await;
    create(&app, &olive, "helper").await;
    let mut stable: BTreeSet<String> = ["alice", "olive"].map(String::from).into();
    for i in 0..10 {
        let name = format!("u{i}");
        app.add_user(&alice, &name, "some-password").await;
        if i % 2 == 0 {
            share(&app, &olive, "helper", &name, "view").await;
            stable.insert(name);
        }
    }
    let churn = {
        let app = app.clone();
        let olive = olive.clone();
        tokio::spawn(async move {
            for round in 0..10 {
                for i in (1..10).step_by(2) {
                    let name = format!("u{i}");
                    if round % 2 == 0 {
                        share(&app, &olive, "helper", &name, "use").await;
                    } else {
                        let path = format!("/api/agents/helper/shares/{name}");
                        let r = app.delete(&path, &olive).await;
                        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
                    }
                }
            }
        })
    };
    let mut walks = 0;
    let mut during = 0;
    while walks < 40 && !(churn.is_finished() && walks >= 4) {
        if !churn.is_finished() {
            during += 1;
        }
        let mut path = "/api/agents/helper/access?limit=2".to_owned();
        let mut seen = Vec::new();
        for _ in 0..100 {
            let r = app.get(&path, &olive).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            for e in r.body["access"].as_array().unwrap() {
                seen.push(e["user"]["username"].as_str().unwrap().to_owned());
            }
            match next(&r) {
                Some(p) => path = p,
                None => break,
            }
        }
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        for name in &stable {
            assert!(seen.contains(name), "{name} lost from {seen:?}");
        }
        walks += 1;
    }
    churn.await.unwrap();
    assert!(during > 0, "no walk overlapped the changes");
}

/// The chains of grants: olive owns `helper`, bob holds `share` from her,
/// carol `view` from bob, dave `use` from olive; alice is the admin and
/// eve a stranger.
struct Host {
    app: TestApp,
    alice: String,
    olive: String,
    bob: String,
    carol: String,
    dave: String,
    eve: String,
}

impl Host {
    async fn new() -> Self {
        let app = TestApp::new();
        let alice = app.setup_admin().await;
        let olive = app.add_user(&alice, "olive", "olive-password").await;
        let bob = app.add_user(&alice, "bob", "bob-password").await;
        let carol = app.add_user(&alice, "carol", "carol-password").await;
        let dave = app.add_user(&alice, "dave", "dave-password").await;
        let eve = app.add_user(&alice, "eve", "eve-password").await;
        create(&app, &olive, "helper").await;
        share(&app, &olive, "helper", "bob", "share").await;
        share(&app, &bob, "helper", "carol", "view").await;
        share(&app, &olive, "helper", "dave", "use").await;
        Self {
            app,
            alice,
            olive,
            bob,
            carol,
            dave,
            eve,
        }
    }

    fn entry<'a>(list: &'a Value, username: &str) -> &'a Value {
        list["access"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["user"]["username"] == username)
            .unwrap_or_else(|| panic!("{username} missing from {list}"))
    }
}

#[tokio::test]
async fn who_may_ask_who_can_reach_an_agent() {
    let h = Host::new().await;
    let path = "/api/agents/helper/access";
    for (token, status) in [
        (&h.olive, 200),
        (&h.alice, 200),
        (&h.bob, 200),
        (&h.carol, 403),
        (&h.dave, 403),
        (&h.eve, 404),
    ] {
        let r = h.app.get(path, token).await;
        assert_eq!(r.status.as_u16(), status, "{}", r.body);
    }
    let r = h.app.get("/api/agents/ghost/access", &h.alice).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // A delegated token at share still needs the person's session.
    let token = h
        .app
        .post(
            "/api/tokens",
            &h.olive,
            json!({"agent": "helper", "level": "share", "expires_in": 600}),
        )
        .await
        .token();
    assert_eq!(h.app.get(path, &token).await.status, StatusCode::FORBIDDEN);
    let (_, results) = check(&h.app, &h.dave, "helper").await;
    assert_eq!(results["allowed"], false);
    let (_, results) = check(&h.app, &h.bob, "helper").await;
    assert_eq!(results["allowed"], true);
}

async fn check(app: &TestApp, token: &str, agent: &str) -> (StatusCode, Value) {
    let r = app
        .post(
            "/api/check",
            token,
            json!({"checks": [{"operation": "agent:access:read", "agent": agent}]}),
        )
        .await;
    (r.status, r.body["results"][0].clone())
}

#[tokio::test]
async fn chains_of_grants_up_to_the_owner() {
    let h = Host::new().await;
    let r = h.app.get("/api/agents/helper/access", &h.olive).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let order: Vec<&str> = r.body["access"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["user"]["username"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["alice", "bob", "carol", "dave", "olive"]);

    let olive = Host::entry(&r.body, "olive");
    assert_eq!(olive["level"], "owner");
    assert_eq!(olive["via"], json!([{"kind": "owner", "level": "owner"}]));

    let alice = Host::entry(&r.body, "alice");
    assert_eq!(alice["level"], "manage");
    assert_eq!(alice["via"], json!([{"kind": "admin", "level": "manage"}]));

    let bob = Host::entry(&r.body, "bob");
    assert_eq!(bob["level"], "share");
    let grant = &bob["via"][0];
    assert_eq!(grant["kind"], "grant");
    assert_eq!(grant["level"], "share");
    assert_eq!(grant["granted_by"]["username"], "olive");
    assert_eq!(grant["in_effect"], true);
    assert_eq!(grant["draws_on"][0]["user"]["username"], "olive");
    assert_eq!(grant["draws_on"][0]["kind"], "owner");
    assert_eq!(grant["draws_on"].as_array().unwrap().len(), 1);

    let carol = Host::entry(&r.body, "carol");
    assert_eq!(carol["level"], "view");
    let grant = &carol["via"][0];
    assert_eq!(grant["granted_by"]["username"], "bob");
    assert_eq!(grant["in_effect"], true);
    let chain = grant["draws_on"].as_array().unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[0]["user"]["username"], "bob");
    assert_eq!(chain[0]["kind"], "grant");
    assert_eq!(chain[0]["level"], "share");
    assert_eq!(chain[0]["granted_by"]["username"], "olive");
    assert_eq!(chain[0]["in_effect"], true);
    assert_eq!(chain[1]["user"]["username"], "olive");
    assert_eq!(chain[1]["kind"], "owner");

    // Each level is what that person sees as their own access.
    for (name, token) in [
        ("olive", &h.olive),
        ("bob", &h.bob),
        ("carol", &h.carol),
        ("dave", &h.dave),
        ("alice", &h.alice),
    ] {
        let seen = h.app.get("/api/agents/helper", token).await;
        assert_eq!(
            seen.body["access"],
            Host::entry(&r.body, name)["level"],
            "{name}"
        );
    }

    // Olive lowers bob to use: what bob shared is no longer in effect, and
    // bob may no longer ask.
    share(&h.app, &h.olive, "helper", "bob", "use").await;
    let r = h.app.get("/api/agents/helper/access", &h.alice).await;
    let carol = Host::entry(&r.body, "carol");
    assert_eq!(carol["level"], Value::Null);
    let grant = &carol["via"][0];
    assert_eq!(grant["in_effect"], false);
    assert_eq!(grant["draws_on"][0]["level"], "use");
    assert_eq!(grant["draws_on"][0]["in_effect"], true);
    assert_eq!(Host::entry(&r.body, "bob")["level"], "use");
    let seen = h.app.get("/api/agents/helper", &h.carol).await;
    assert_eq!(seen.status, StatusCode::NOT_FOUND, "carol lost her view");
    assert_eq!(
        h.app.get("/api/agents/helper/access", &h.bob).await.status,
        StatusCode::FORBIDDEN
    );

    // Bob's grant gone: carol's chain breaks at bob.
    let r = h
        .app
        .delete("/api/agents/helper/shares/bob", &h.olive)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = h.app.get("/api/agents/helper/access", &h.olive).await;
    let grant = &Host::entry(&r.body, "carol")["via"][0];
    assert_eq!(grant["in_effect"], false);
    assert_eq!(
        grant["draws_on"],
        json!([{"user": {"id": grant["granted_by"]["id"], "username": "bob"}, "kind": "none"}])
    );
    assert!(r.body["access"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["user"]["username"] != "bob"));

    // An admin with a grant of their own lists both.
    share(&h.app, &h.olive, "helper", "alice", "share").await;
    let r = h.app.get("/api/agents/helper/access", &h.olive).await;
    let alice = Host::entry(&r.body, "alice");
    assert_eq!(alice["level"], "share");
    assert_eq!(alice["via"][0]["kind"], "admin");
    assert_eq!(alice["via"][1]["kind"], "grant");
}

#[tokio::test]
async fn the_access_list_pages() {
    let h = Host::new().await;
    let full = h.app.get("/api/agents/helper/access", &h.olive).await;
    assert!(full.headers.get("link").is_none());
    let everyone = full.body["access"].as_array().unwrap().clone();
    assert_eq!(everyone.len(), 5);
    for limit in 1..=6 {
        let mut path = format!("/api/agents/helper/access?limit={limit}");
        let mut seen = Vec::new();
        for _ in 0..10 {
            let r = h.app.get(&path, &h.olive).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            let page = r.body["access"].as_array().unwrap();
            assert!(page.len() <= limit);
            seen.extend(page.iter().cloned());
            match next(&r) {
                Some(p) => {
                    assert!(
                        p.starts_with(&format!("/api/agents/helper/access?limit={limit}&cursor=")),
                        "{p}"
                    );
                    path = p;
                }
                None => break,
            }
        }
        assert_eq!(seen, everyone, "limit={limit}");
    }
}
