//! The console's memory and secrets pages: signed out they send to sign-in;
//! signed in, a person sees and changes their own data and never anyone
//! else's (admins included); a value is revealed only in the answer to the
//! POST asking for it; forged posts change nothing; a binding to an agent
//! the person does not manage is refused in words.

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::helpers::{Auth, TestApp, TEST_CSRF};

const ALICE_MEMORY: &str = "alicememorycanary lighthouse keeper";
const ALICE_TITLE: &str = "alicetitlecanary";
const ALICE_COLLECTION: &str = "alicecollectioncanary";
const ALICE_SECRET: &str = "ALICE_SECRET_NAME_CANARY";
const ALICE_VALUE: &str = "alice-secret-value-canary-7f3a";
const BOB_MEMORY: &str = "bobmemorycanary tidepool";
const BOB_SECRET: &str = "BOB_SECRET_NAME_CANARY";
const BOB_VALUE: &str = "bob-secret-value-canary-91c2";

/// Alice's canaries: none may appear on a page bob is shown.
const ALICE_CANARIES: [&str; 5] = [
    "alicememorycanary",
    ALICE_TITLE,
    ALICE_COLLECTION,
    ALICE_SECRET,
    ALICE_VALUE,
];
const BOB_CANARIES: [&str; 3] = ["bobmemorycanary", BOB_SECRET, BOB_VALUE];

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    html: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn assert_free_of(&self, canaries: &[&str], what: &str) {
        for canary in canaries {
            assert!(
                !self.html.contains(canary) && !self.location().contains(canary),
                "{what}: {canary} leaked into {}",
                self.html
            );
        }
    }
}

/// How a page request is sent.
#[derive(Clone, Copy)]
enum As<'a> {
    Nobody,
    /// A real page: session cookie, CSRF cookie and the form's token.
    Browser(&'a str),
    /// The session cookie alone, as a forged cross-site post carries it.
    Forger(&'a str),
}

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    who: As<'_>,
    form: &[(&str, &str)],
) -> Page {
    let mut req = Request::builder()
        .method(method.clone())
        .uri(path)
        .header("accept", "text/html");
    let mut fields: Vec<(&str, &str)> = form.to_vec();
    match who {
        As::Nobody => {}
        As::Browser(token) => {
            req = req.header(
                "cookie",
                format!("taos_session={token}; csrf_token={TEST_CSRF}"),
            );
            fields.push(("csrf_token", TEST_CSRF));
        }
        As::Forger(token) => req = req.header("cookie", format!("taos_session={token}")),
    }
    let body = if method == Method::GET {
        Body::empty()
    } else {
        req = req.header("content-type", "application/x-www-form-urlencoded");
        Body::from(serde_urlencoded::to_string(&fields).unwrap())
    };
    let resp = app
        .router
        .clone()
        .oneshot(req.body(body).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Page {
        status,
        headers,
        html: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn get(app: &TestApp, path: &str, who: As<'_>) -> Page {
    send(app, Method::GET, path, who, &[]).await
}

async fn post(app: &TestApp, path: &str, who: As<'_>, form: &[(&str, &str)]) -> Page {
    send(app, Method::POST, path, who, form).await
}

struct World {
    app: TestApp,
    alice: String,
    bob: String,
    alice_chunk: String,
    bob_chunk: String,
}

/// alice (admin) and bob, each with memory and a secret; alice's agent
/// `alpha` shared with bob at `use`, her private agent `hidden`, and bob's
/// own agent `bobbot`.
async fn world() -> World {
    let app = TestApp::new();
    let alice = app.setup_admin().await;
    let bob = app.add_user(&alice, "bob", "bob-password-1").await;
    let save = |token: String, body: Value| {
        let app = &app;
        async move {
            let r = app.post("/api/user-memory/save", &token, body).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            r.body["hash"].as_str().unwrap().to_owned()
        }
    };
    let alice_chunk = save(
        alice.clone(),
        json!({"content": ALICE_MEMORY, "title": ALICE_TITLE, "collection": ALICE_COLLECTION}),
    )
    .await;
    let bob_chunk = save(
        bob.clone(),
        json!({"content": BOB_MEMORY, "title": "bob's note"}),
    )
    .await;
    for (token, name, value) in [
        (&alice, ALICE_SECRET, ALICE_VALUE),
        (&bob, BOB_SECRET, BOB_VALUE),
    ] {
        let r = app
            .post("/api/secrets", token, json!({"name": name, "value": value}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    for (token, agent) in [(&alice, "alpha"), (&alice, "hidden"), (&bob, "bobbot")] {
        let r = app.post("/api/agents", token, json!({"name": agent})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let r = app
        .post(
            "/api/agents/alpha/shares",
            &alice,
            json!({"user": "bob", "level": "use"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    World {
        app,
        alice,
        bob,
        alice_chunk,
        bob_chunk,
    }
}

impl World {
    async fn secret_names(&self, token: &str) -> Vec<String> {
        let r = self.app.get("/api/secrets", token).await;
        assert_eq!(r.status, StatusCode::OK);
        r.body
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn secret(&self, token: &str, name: &str) -> Value {
        let path = format!("/api/secrets/{name}");
        let r = self.app.get(&path, token).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body
    }

    async fn chunk_exists(&self, token: &str, hash: &str) -> bool {
        let path = format!("/api/user-memory/chunk/{hash}");
        self.app.get(&path, token).await.status == StatusCode::OK
    }

    async fn memory_grants(&self, token: &str) -> Value {
        self.app.get("/api/user-memory/grants", token).await.body["grants"].clone()
    }
}

#[tokio::test]
async fn signed_out_goes_to_sign_in() {
    let w = world().await;
    let paths = [
        "/console/memory",
        "/console/memory?q=lighthouse",
        &format!("/console/memory/chunk/{}", w.alice_chunk),
        &format!("/console/memory/chunk/{}/delete", w.alice_chunk),
        "/console/secrets",
        "/console/secrets/edit?name=ALICE_SECRET_NAME_CANARY",
        "/console/secrets/delete?name=ALICE_SECRET_NAME_CANARY",
    ];
    for path in paths {
        let page = get(&w.app, path, As::Nobody).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
        assert!(page.location().starts_with("/auth/login?next="), "{path}");
        assert!(page.html.is_empty(), "{path}: {}", page.html);
    }
    // Posts without a session change nothing either.
    let reveal = post(
        &w.app,
        "/console/secrets/reveal",
        As::Nobody,
        &[("name", ALICE_SECRET)],
    )
    .await;
    assert_eq!(reveal.status, StatusCode::SEE_OTHER);
    reveal.assert_free_of(&ALICE_CANARIES, "anonymous reveal");
    let path = format!("/console/memory/chunk/{}/delete", w.alice_chunk);
    assert_eq!(
        post(&w.app, &path, As::Nobody, &[]).await.status,
        StatusCode::SEE_OTHER
    );
    let del = post(
        &w.app,
        "/console/secrets/delete",
        As::Nobody,
        &[("name", ALICE_SECRET)],
    )
    .await;
    assert_eq!(del.status, StatusCode::SEE_OTHER);
    assert!(w.chunk_exists(&w.alice, &w.alice_chunk).await);
    assert_eq!(w.secret_names(&w.alice).await, [ALICE_SECRET]);
}

#[tokio::test]
async fn each_person_sees_their_own_data_and_nobody_elses() {
    let w = world().await;
    let bob = As::Browser(&w.bob);
    let alice = As::Browser(&w.alice);

    let mine = get(&w.app, "/console/memory", bob).await;
    assert_eq!(mine.status, StatusCode::OK);
    assert!(mine.html.contains("bobmemorycanary"), "{}", mine.html);
    assert!(mine
        .html
        .contains(&format!("/console/memory/chunk/{}", w.bob_chunk)));
    mine.assert_free_of(&ALICE_CANARIES, "bob's memory page");

    let theirs = get(&w.app, "/console/memory", alice).await;
    assert!(theirs.html.contains("alicememorycanary"));
    assert!(theirs.html.contains(ALICE_COLLECTION));
    theirs.assert_free_of(&BOB_CANARIES, "alice's memory page");

    // Searching for or browsing the other's words finds nothing (the page
    // repeats what bob typed, so the canaries checked are the others).
    for path in [
        "/console/memory?q=lighthouse+keeper",
        &format!("/console/memory?collection={ALICE_COLLECTION}"),
    ] {
        let page = get(&w.app, path, bob).await;
        assert_eq!(page.status, StatusCode::OK);
        page.assert_free_of(&["alicememorycanary", ALICE_TITLE], path);
        assert!(page.html.contains("Nothing"), "{path}");
    }
    let found = get(&w.app, "/console/memory?q=lighthouse", alice).await;
    assert!(found
        .html
        .contains(&format!("/console/memory/chunk/{}", w.alice_chunk)));
    let admin_search = get(&w.app, "/console/memory?q=tidepool", alice).await;
    admin_search.assert_free_of(&BOB_CANARIES, "an admin's search");

    // One chunk: the owner reads it; anyone else, admin or not, finds nothing.
    let own = get(
        &w.app,
        &format!("/console/memory/chunk/{}", w.alice_chunk),
        alice,
    )
    .await;
    assert_eq!(own.status, StatusCode::OK);
    assert!(own.html.contains(ALICE_MEMORY));
    for (who, hash, canaries) in [
        (bob, &w.alice_chunk, &ALICE_CANARIES[..]),
        (alice, &w.bob_chunk, &BOB_CANARIES[..]),
    ] {
        for path in [
            format!("/console/memory/chunk/{hash}"),
            format!("/console/memory/chunk/{hash}/delete"),
        ] {
            let page = get(&w.app, &path, who).await;
            assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}");
            assert!(page.html.contains("Not found"));
            page.assert_free_of(canaries, &path);
        }
    }

    // Secrets: names listed masked, never a value, never the other's.
    let list = get(&w.app, "/console/secrets", bob).await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.html.contains(BOB_SECRET));
    assert!(
        !list.html.contains(BOB_VALUE),
        "a listing never holds a value"
    );
    list.assert_free_of(&ALICE_CANARIES, "bob's secrets page");
    let admin_list = get(&w.app, "/console/secrets", alice).await;
    assert!(admin_list.html.contains(ALICE_SECRET));
    assert!(!admin_list.html.contains(ALICE_VALUE));
    admin_list.assert_free_of(&BOB_CANARIES, "alice's secrets page");
    for (who, name, canaries) in [
        (bob, ALICE_SECRET, &ALICE_CANARIES[..]),
        (alice, BOB_SECRET, &BOB_CANARIES[..]),
    ] {
        for path in [
            format!("/console/secrets/edit?name={name}"),
            format!("/console/secrets/delete?name={name}"),
        ] {
            let page = get(&w.app, &path, who).await;
            assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}");
            // The name is in the URL the person typed, but not on the page.
            page.assert_free_of(canaries, &path);
        }
    }
}

#[tokio::test]
async fn a_value_is_shown_only_in_the_answer_to_its_reveal() {
    let w = world().await;
    let alice = As::Browser(&w.alice);
    let list = get(&w.app, "/console/secrets", alice).await;
    assert!(!list.html.contains(ALICE_VALUE));
    assert!(list.html.contains(r#"action="/console/secrets/reveal""#));

    let shown = post(
        &w.app,
        "/console/secrets/reveal",
        alice,
        &[("name", ALICE_SECRET)],
    )
    .await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.html);
    assert!(shown.html.contains(&format!(
        r#"<code id="revealed-value">{ALICE_VALUE}</code>"#
    )));
    assert!(shown.html.contains(r#"data-copy="revealed-value""#));
    assert_eq!(shown.headers["cache-control"], "no-store");
    assert!(shown.location().is_empty());

    // Masked again on the next look, and no page that follows holds it.
    for path in [
        "/console/secrets",
        &format!("/console/secrets/edit?name={ALICE_SECRET}"),
    ] {
        let page = get(&w.app, path, alice).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(!page.html.contains(ALICE_VALUE), "{path}");
    }

    // Another person, an admin, or a forged post never gets it.
    let bob = post(
        &w.app,
        "/console/secrets/reveal",
        As::Browser(&w.bob),
        &[("name", ALICE_SECRET)],
    )
    .await;
    assert_eq!(bob.status, StatusCode::NOT_FOUND);
    bob.assert_free_of(&ALICE_CANARIES, "bob revealing alice's secret");
    let admin = post(
        &w.app,
        "/console/secrets/reveal",
        alice,
        &[("name", BOB_SECRET)],
    )
    .await;
    assert_eq!(admin.status, StatusCode::NOT_FOUND);
    admin.assert_free_of(&BOB_CANARIES, "an admin revealing bob's secret");
    let forged = post(
        &w.app,
        "/console/secrets/reveal",
        As::Forger(&w.alice),
        &[("name", ALICE_SECRET)],
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(!forged.html.contains(ALICE_VALUE));
}

#[tokio::test]
async fn memory_pages_save_read_delete_and_grant() {
    let w = world().await;
    let bob = As::Browser(&w.bob);

    // Save a note: the chunk page shows it, escaped.
    let saved = post(
        &w.app,
        "/console/memory/save",
        bob,
        &[
            ("title", "<b>tide</b> table"),
            ("collection", "notes"),
            ("content", "high water at noon"),
        ],
    )
    .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.html);
    let at = saved.location().to_owned();
    assert!(
        at.starts_with("/console/memory/chunk/") && at.ends_with("?ok=saved"),
        "{at}"
    );
    let page = get(&w.app, &at, bob).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.html.contains("high water at noon"));
    assert!(
        page.html.contains("tide") && !page.html.contains("<b>tide"),
        "escaped"
    );
    assert!(page.html.contains("The note was saved."));
    let hash = at
        .trim_start_matches("/console/memory/chunk/")
        .trim_end_matches("?ok=saved")
        .to_owned();
    let listed = get(&w.app, "/console/memory?collection=notes", bob).await;
    assert!(listed.html.contains(&hash));
    assert!(
        !listed.html.contains("bobmemorycanary"),
        "another collection"
    );

    // Bad input comes back in words, with what was typed kept.
    let empty = post(
        &w.app,
        "/console/memory/save",
        bob,
        &[("title", "kept title"), ("content", "  ")],
    )
    .await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert!(empty.html.contains("content is required"), "{}", empty.html);
    assert!(empty.html.contains("kept title"));

    // Deleting asks first, on a page that works without script.
    let ask = get(&w.app, &format!("/console/memory/chunk/{hash}/delete"), bob).await;
    assert_eq!(ask.status, StatusCode::OK);
    let action = format!(r#"action="/console/memory/chunk/{hash}/delete""#);
    assert!(ask.html.contains(&action), "{}", ask.html);
    let plain = get(&w.app, &format!("/console/memory/chunk/{hash}"), bob).await;
    assert!(
        !plain.html.contains(&action),
        "the form is on the confirmation only"
    );
    let path = format!("/console/memory/chunk/{hash}/delete");
    let forged = post(&w.app, &path, As::Forger(&w.bob), &[]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(w.chunk_exists(&w.bob, &hash).await);
    let deleted = post(&w.app, &path, bob, &[]).await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER);
    assert_eq!(deleted.location(), "/console/memory?ok=deleted");
    assert!(!w.chunk_exists(&w.bob, &hash).await);
    let again = post(&w.app, &path, bob, &[]).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);

    // Grants: a switch for each agent bob sees, none for one he does not.
    let page = get(&w.app, "/console/memory", bob).await;
    for agent in ["alpha", "bobbot"] {
        assert!(
            page.html
                .contains(&format!(r#"name="agent" value="{agent}""#)),
            "{agent}: {}",
            page.html
        );
    }
    assert!(
        !page.html.contains(r#"value="hidden""#),
        "alice's private agent is not offered"
    );
    assert!(!page.html.contains(r#"name="others""#) && !page.html.contains("by name"));
    let allow = post(
        &w.app,
        "/console/memory/grants",
        bob,
        &[("agent", "alpha"), ("allowed", "true")],
    )
    .await;
    assert_eq!(allow.status, StatusCode::SEE_OTHER);
    assert_eq!(w.memory_grants(&w.bob).await, json!(["alpha"]));
    let page = get(&w.app, "/console/memory", bob).await;
    assert!(page.html.contains("Stop allowing"));
    let forged = post(
        &w.app,
        "/console/memory/grants",
        As::Forger(&w.bob),
        &[("agent", "alpha"), ("allowed", "false")],
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(w.memory_grants(&w.bob).await, json!(["alpha"]));
    let hidden = post(
        &w.app,
        "/console/memory/grants",
        bob,
        &[("agent", "hidden"), ("allowed", "true")],
    )
    .await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    assert!(hidden.html.contains("not found"), "{}", hidden.html);
    assert_eq!(w.memory_grants(&w.bob).await, json!(["alpha"]));
    let stop = post(
        &w.app,
        "/console/memory/grants",
        bob,
        &[("agent", "alpha"), ("allowed", "false")],
    )
    .await;
    assert_eq!(stop.status, StatusCode::SEE_OTHER);
    assert_eq!(w.memory_grants(&w.bob).await, json!([]));

    // An admin may name any agent; bob's grants stay bob's.
    let admin = get(&w.app, "/console/memory", As::Browser(&w.alice)).await;
    assert!(admin.html.contains("by name"));
    assert!(
        !admin.html.contains("bobbot"),
        "only her own and shared agents are listed"
    );
    let by_name = post(
        &w.app,
        "/console/memory/grants",
        As::Browser(&w.alice),
        &[("agent", "bobbot"), ("allowed", "true")],
    )
    .await;
    assert_eq!(by_name.status, StatusCode::SEE_OTHER);
    assert_eq!(w.memory_grants(&w.alice).await, json!(["bobbot"]));
    assert_eq!(w.memory_grants(&w.bob).await, json!([]));
}

#[tokio::test]
async fn forged_or_foreign_posts_change_nothing() {
    let w = world().await;
    let chunk_delete = format!("/console/memory/chunk/{}/delete", w.alice_chunk);
    let forged: [(&str, Vec<(&str, &str)>); 7] = [
        ("/console/memory/save", vec![("content", "forged note")]),
        (&chunk_delete, vec![]),
        (
            "/console/memory/grants",
            vec![("agent", "alpha"), ("allowed", "true")],
        ),
        ("/console/secrets", vec![("name", "FORGED"), ("value", "x")]),
        (
            "/console/secrets/update",
            vec![("name", ALICE_SECRET), ("value", "forged")],
        ),
        (
            "/console/secrets/update",
            vec![
                ("name", ALICE_SECRET),
                ("bindings", "1"),
                ("agent", "alpha"),
            ],
        ),
        ("/console/secrets/delete", vec![("name", ALICE_SECRET)]),
    ];
    for (path, form) in &forged {
        let page = post(&w.app, path, As::Forger(&w.alice), form).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
    }
    // The JSON API the pages share refuses the same forgery.
    let path = format!("/api/secrets/{ALICE_SECRET}");
    let api = w
        .app
        .call(Method::DELETE, &path, Auth::CookieOnly(&w.alice), None)
        .await;
    assert_eq!(api.status, StatusCode::FORBIDDEN);
    // The same posts, made honestly by bob against alice's data.
    let foreign: [(&str, Vec<(&str, &str)>); 4] = [
        (&chunk_delete, vec![]),
        (
            "/console/secrets/update",
            vec![("name", ALICE_SECRET), ("value", "forged")],
        ),
        (
            "/console/secrets/update",
            vec![("name", ALICE_SECRET), ("bindings", "1")],
        ),
        ("/console/secrets/delete", vec![("name", ALICE_SECRET)]),
    ];
    for (path, form) in &foreign {
        let page = post(&w.app, path, As::Browser(&w.bob), form).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}: {}", page.html);
        page.assert_free_of(&ALICE_CANARIES, path);
    }
    // And by the admin against bob's.
    let bob_delete = format!("/console/memory/chunk/{}/delete", w.bob_chunk);
    assert_eq!(
        post(&w.app, &bob_delete, As::Browser(&w.alice), &[])
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let admin = post(
        &w.app,
        "/console/secrets/delete",
        As::Browser(&w.alice),
        &[("name", BOB_SECRET)],
    )
    .await;
    assert_eq!(admin.status, StatusCode::NOT_FOUND);

    assert!(w.chunk_exists(&w.alice, &w.alice_chunk).await);
    assert!(w.chunk_exists(&w.bob, &w.bob_chunk).await);
    let memory = w.app.get("/api/user-memory/browse", &w.alice).await;
    assert_eq!(memory.body["chunks"].as_array().unwrap().len(), 1);
    assert_eq!(w.memory_grants(&w.alice).await, json!([]));
    assert_eq!(w.secret_names(&w.alice).await, [ALICE_SECRET]);
    assert_eq!(w.secret_names(&w.bob).await, [BOB_SECRET]);
    let secret = w.secret(&w.alice, ALICE_SECRET).await;
    assert_eq!(secret["value"], ALICE_VALUE);
    assert_eq!(secret["agents"], json!([]));
}

#[tokio::test]
async fn secrets_pages_add_edit_bind_and_delete() {
    let w = world().await;
    let bob = As::Browser(&w.bob);

    // Only agents bob manages are offered: his own, not alpha (use).
    let page = get(&w.app, "/console/secrets", bob).await;
    assert!(
        page.html.contains(r#"name="agent" value="bobbot""#),
        "{}",
        page.html
    );
    assert!(!page.html.contains(r#"value="alpha""#));
    assert!(!page.html.contains(r#"name="others""#));

    let added = post(
        &w.app,
        "/console/secrets",
        bob,
        &[
            ("name", "BOT_TOKEN"),
            ("value", "bot-value-1"),
            ("agent", "bobbot"),
            ("description", "for the bot"),
        ],
    )
    .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.html);
    assert_eq!(added.location(), "/console/secrets?ok=created");
    let secret = w.secret(&w.bob, "BOT_TOKEN").await;
    assert_eq!(secret["agents"], json!(["bobbot"]));
    assert_eq!(secret["description"], "for the bot");
    let listed = get(&w.app, "/console/secrets?ok=created", bob).await;
    assert!(listed.html.contains("The secret was added."));
    assert!(listed.html.contains("BOT_TOKEN") && listed.html.contains("bobbot"));
    assert!(!listed.html.contains("bot-value-1"));

    // Binding to an agent bob only uses, or cannot see, is refused in words.
    let refused = post(
        &w.app,
        "/console/secrets",
        bob,
        &[("name", "USE_ONLY"), ("value", "v"), ("agent", "alpha")],
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused.html.contains("you do not manage the agent “alpha”"),
        "{}",
        refused.html
    );
    assert!(
        refused.html.contains(r#"value="USE_ONLY""#),
        "the name is kept"
    );
    let unseen = post(
        &w.app,
        "/console/secrets",
        bob,
        &[("name", "UNSEEN"), ("value", "v"), ("agent", "hidden")],
    )
    .await;
    assert_eq!(unseen.status, StatusCode::NOT_FOUND);
    assert!(
        unseen.html.contains("you have no agent named “hidden”"),
        "{}",
        unseen.html
    );
    let rebind = post(
        &w.app,
        "/console/secrets/update",
        bob,
        &[
            ("name", "BOT_TOKEN"),
            ("bindings", "1"),
            ("agent", "bobbot"),
            ("agent", "alpha"),
        ],
    )
    .await;
    assert_eq!(rebind.status, StatusCode::FORBIDDEN);
    assert!(rebind.html.contains("you do not manage the agent “alpha”"));
    assert_eq!(
        w.secret_names(&w.bob).await,
        ["BOB_SECRET_NAME_CANARY", "BOT_TOKEN"]
    );
    assert_eq!(
        w.secret(&w.bob, "BOT_TOKEN").await["agents"],
        json!(["bobbot"])
    );
    let dup = post(
        &w.app,
        "/console/secrets",
        bob,
        &[("name", "BOT_TOKEN"), ("value", "v")],
    )
    .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert!(dup.html.contains("already exists"));

    // Edit: a new value keeps the bindings; the bindings form keeps the value.
    let edit = get(&w.app, "/console/secrets/edit?name=BOT_TOKEN", bob).await;
    assert_eq!(edit.status, StatusCode::OK);
    assert!(
        edit.html.contains(r#"value="bobbot" checked"#),
        "{}",
        edit.html
    );
    assert!(!edit.html.contains("bot-value-1"));
    let changed = post(
        &w.app,
        "/console/secrets/update",
        bob,
        &[
            ("name", "BOT_TOKEN"),
            ("value", "bot-value-2"),
            ("category", "bots"),
            ("description", ""),
        ],
    )
    .await;
    assert_eq!(changed.status, StatusCode::SEE_OTHER, "{}", changed.html);
    let secret = w.secret(&w.bob, "BOT_TOKEN").await;
    assert_eq!(secret["value"], "bot-value-2");
    assert_eq!(secret["category"], "bots");
    assert_eq!(secret["agents"], json!(["bobbot"]));
    let kept = post(
        &w.app,
        "/console/secrets/update",
        bob,
        &[("name", "BOT_TOKEN"), ("value", ""), ("category", "bots")],
    )
    .await;
    assert_eq!(kept.status, StatusCode::SEE_OTHER);
    assert_eq!(w.secret(&w.bob, "BOT_TOKEN").await["value"], "bot-value-2");
    let unbound = post(
        &w.app,
        "/console/secrets/update",
        bob,
        &[("name", "BOT_TOKEN"), ("bindings", "1")],
    )
    .await;
    assert_eq!(unbound.status, StatusCode::SEE_OTHER);
    let secret = w.secret(&w.bob, "BOT_TOKEN").await;
    assert_eq!(secret["agents"], json!([]));
    assert_eq!(secret["value"], "bot-value-2");

    // Delete asks first, then deletes.
    let ask = get(&w.app, "/console/secrets/delete?name=BOT_TOKEN", bob).await;
    assert_eq!(ask.status, StatusCode::OK);
    assert!(ask.html.contains(r#"action="/console/secrets/delete""#));
    assert!(ask.html.contains(r#"name="name" value="BOT_TOKEN""#));
    let gone = post(
        &w.app,
        "/console/secrets/delete",
        bob,
        &[("name", "BOT_TOKEN")],
    )
    .await;
    assert_eq!(gone.status, StatusCode::SEE_OTHER);
    assert_eq!(gone.location(), "/console/secrets?ok=deleted");
    assert_eq!(w.secret_names(&w.bob).await, [BOB_SECRET]);

    // An admin manages every agent: she may name one beyond her own.
    let admin = get(&w.app, "/console/secrets", As::Browser(&w.alice)).await;
    assert!(admin.html.contains(r#"name="others""#));
    assert!(admin.html.contains(r#"value="alpha""#) && !admin.html.contains("bobbot"));
}

#[tokio::test]
async fn a_memory_grant_can_be_withdrawn_after_losing_the_agent() {
    let w = world().await;
    let bob = As::Browser(&w.bob);
    let runtime = w
        .app
        .post("/api/agents/alpha/runtime-token", &w.alice, json!({}))
        .await;
    let runtime = runtime.body["token"].as_str().unwrap().to_owned();
    let search = "/api/user-memory/agent-search?user=bob&q=tidepool";
    let allow = post(
        &w.app,
        "/console/memory/grants",
        bob,
        &[("agent", "alpha"), ("allowed", "true")],
    )
    .await;
    assert_eq!(allow.status, StatusCode::SEE_OTHER);
    assert_eq!(w.app.get(search, &runtime).await.status, StatusCode::OK);

    // alice takes alpha back; bob's grant still lets it read his memory, so
    // the page still offers to withdraw it, and withdrawing works.
    let r = w
        .app
        .call(
            Method::DELETE,
            "/api/agents/alpha/shares/bob",
            Auth::Bearer(&w.alice),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let page = get(&w.app, "/console/memory", bob).await;
    assert!(
        page.html.contains(r#"name="agent" value="alpha""#),
        "{}",
        page.html
    );
    assert!(page.html.contains("Stop allowing"));
    let stop = post(
        &w.app,
        "/console/memory/grants",
        bob,
        &[("agent", "alpha"), ("allowed", "false")],
    )
    .await;
    assert_eq!(stop.status, StatusCode::SEE_OTHER, "{}", stop.html);
    assert_eq!(w.memory_grants(&w.bob).await, json!([]));
    assert_eq!(
        w.app.get(search, &runtime).await.status,
        StatusCode::FORBIDDEN
    );
    let page = get(&w.app, "/console/memory", bob).await;
    assert!(
        !page.html.contains(r#"value="alpha""#),
        "nothing left to show"
    );

    // Granting it again needs sight of it, as before.
    let regrant = post(
        &w.app,
        "/console/memory/grants",
        bob,
        &[("agent", "alpha"), ("allowed", "true")],
    )
    .await;
    assert_eq!(regrant.status, StatusCode::NOT_FOUND);
    assert_eq!(w.memory_grants(&w.bob).await, json!([]));
}

#[tokio::test]
async fn what_is_offered_follows_each_sharees_level() {
    let w = world().await;
    for level in ["view", "use", "edit", "manage", "share"] {
        let name = format!("s-{level}");
        let token = w.app.add_user(&w.alice, &name, "sharee-password").await;
        let r = w
            .app
            .post(
                "/api/agents/hidden/shares",
                &w.alice,
                json!({"user": name, "level": level}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let who = As::Browser(&token);
        let manages = matches!(level, "manage" | "share");

        // Every sharee sees the agent, so may let it read their memory.
        let memory = get(&w.app, "/console/memory", who).await;
        assert!(
            memory.html.contains(r#"name="agent" value="hidden""#),
            "{level}"
        );
        memory.assert_free_of(&ALICE_CANARIES, level);
        memory.assert_free_of(&BOB_CANARIES, level);

        // Only those who manage it are offered to bind a secret to it.
        let secrets = get(&w.app, "/console/secrets", who).await;
        assert_eq!(
            secrets.html.contains(r#"name="agent" value="hidden""#),
            manages,
            "{level}"
        );
        secrets.assert_free_of(&ALICE_CANARIES, level);
        let add = post(
            &w.app,
            "/console/secrets",
            who,
            &[("name", "K"), ("value", "v"), ("agent", "hidden")],
        )
        .await;
        if manages {
            assert_eq!(add.status, StatusCode::SEE_OTHER, "{level}: {}", add.html);
            assert_eq!(w.secret(&token, "K").await["agents"], json!(["hidden"]));
        } else {
            assert_eq!(add.status, StatusCode::FORBIDDEN, "{level}");
            assert!(add.html.contains("you do not manage the agent “hidden”"));
            assert!(w.secret_names(&token).await.is_empty());
        }
    }
}
