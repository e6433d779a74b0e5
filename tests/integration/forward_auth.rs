//! Forward auth: the proxy's `/auth/verify` questions about the agent host's
//! requests, decided through the route table by the same policy as the API.
//! Every rule of the default table is exercised from the parsed table, so a
//! new line cannot go untested.

use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use biscuit_auth::builder::{date, fact};
use biscuit_auth::{Algorithm, AuthorizerBuilder, Biscuit, PublicKey};
use serde_json::json;
use tessera::forward::table::{RouteTable, Rule};

use crate::helpers::{Auth, Response, TestApp};

/// How the proxy asks.
#[derive(Clone, Copy)]
enum Proxy {
    /// Caddy and Traefik: `X-Forwarded-*`.
    Forwarded,
    /// nginx `auth_request`: `X-Original-*`, an absolute URL.
    Nginx,
}

struct Ask<'a> {
    proxy: Proxy,
    method: &'a str,
    uri: &'a str,
    auth: Auth<'a>,
    browser: bool,
}

impl<'a> Ask<'a> {
    fn new(method: &'a str, uri: &'a str, auth: Auth<'a>) -> Self {
        Self {
            proxy: Proxy::Forwarded,
            method,
            uri,
            auth,
            browser: false,
        }
    }

    fn nginx(mut self) -> Self {
        self.proxy = Proxy::Nginx;
        self
    }

    fn browser(mut self) -> Self {
        self.browser = true;
        self
    }

    async fn send(self, app: &TestApp) -> Response {
        let mut req = Request::builder().method(Method::GET);
        req = match self.proxy {
            Proxy::Forwarded => req
                .uri("/auth/verify")
                .header("x-forwarded-method", self.method)
                .header("x-forwarded-uri", self.uri)
                .header("x-forwarded-host", "host.example")
                .header("x-forwarded-proto", "https"),
            Proxy::Nginx => req
                .uri("/auth/verify/nginx")
                .header("x-original-method", self.method)
                .header(
                    "x-original-url",
                    format!("https://host.example{}", self.uri),
                ),
        };
        if self.browser {
            req = req.header("accept", "text/html,application/xhtml+xml,*/*;q=0.8");
        }
        req = match self.auth {
            Auth::None => req,
            Auth::Bearer(t) => req.header("authorization", format!("Bearer {t}")),
            Auth::Cookie(t) | Auth::CookieOnly(t) => {
                req.header("cookie", format!("taos_session={t}"))
            }
            Auth::RawAuthorization(v) => req.header("authorization", v),
        };
        app.send(req.body(Body::empty()).unwrap()).await
    }
}

async fn ask(app: &TestApp, method: &str, uri: &str, token: &str) -> Response {
    Ask::new(method, uri, Auth::Bearer(token)).send(app).await
}

fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
    r.headers.get(name).map(|v| v.to_str().unwrap())
}

/// olive owns `helper` and `other`; `alice` is the admin; one person per
/// level on `helper`, and `stranger` with none.
struct Host {
    app: TestApp,
    alice: String,
    olive: String,
    people: Vec<(&'static str, String)>,
    stranger: String,
}

const LEVELS: [&str; 4] = ["view", "use", "edit", "manage"];

impl Host {
    async fn new() -> Self {
        Self::with(TestApp::new()).await
    }

    async fn with(app: TestApp) -> Self {
        let alice = app.setup_admin().await;
        let olive = app.add_user(&alice, "olive", "olive-password").await;
        for name in ["helper", "other"] {
            let r = app.post("/api/agents", &olive, json!({"name": name})).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        }
        let mut people = Vec::new();
        for level in LEVELS {
            let name = format!("at-{level}");
            let token = app.add_user(&alice, &name, "some-password").await;
            share(&app, &olive, &name, level).await;
            people.push((level, token));
        }
        let stranger = app.add_user(&alice, "stranger", "some-password").await;
        Self {
            app,
            alice,
            olive,
            people,
            stranger,
        }
    }

    fn at(&self, level: &str) -> &str {
        &self.people.iter().find(|(l, _)| *l == level).unwrap().1
    }
}

async fn share(app: &TestApp, by: &str, user: &str, level: &str) {
    let r = app
        .post(
            "/api/agents/helper/shares",
            by,
            json!({"user": user, "level": level}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

/// The level each agent rule of the default table needs: the test's own
/// statement, so a change of `datalog/agents.dl` or the table shows here.
fn needed_level(operation: &str) -> &'static str {
    match operation {
        "agent:read" => "view",
        "agent:chat" | "agent:run" => "use",
        "agent:update" => "edit",
        "agent:control" | "agent:archive" => "manage",
        other => panic!("the default table uses {other}: say here which level it needs"),
    }
}

fn assert_allowed(r: &Response, user: &str, what: &str) {
    assert_eq!(r.status, StatusCode::OK, "{what}: {}", r.text);
    assert_eq!(header(r, "remote-user"), Some(user), "{what}");
    assert_eq!(header(r, "x-forwarded-user"), Some(user), "{what}");
    assert_eq!(header(r, "x-auth-request-user"), Some(user), "{what}");
    assert!(header(r, "x-tessera-user-id").is_some(), "{what}");
    assert!(header(r, "x-tessera-assertion").is_some(), "{what}");
}

#[tokio::test]
async fn every_default_rule_lets_in_who_may_and_refuses_who_may_not() {
    let host = Host::new().await;
    let app = &host.app;
    let routes = app.state.forward.table.routes().to_vec();
    // A table with no rule of a kind would leave that kind untested here.
    for kind in ["public", "signed-in", "admin", "agent:"] {
        assert!(
            routes.iter().any(|r| r.rule.name().starts_with(kind)),
            "{kind}"
        );
    }
    let delegated = app
        .post(
            "/api/tokens",
            &host.olive,
            json!({"agent": "helper", "level": "view", "expires_in": 3600}),
        )
        .await
        .token();
    for route in &routes {
        let method = route.methods.example();
        let path = route.pattern.example("helper");
        let what = format!(
            "line {}: {method} {path} ({})",
            route.line,
            route.rule.name()
        );
        // The example reaches this very line, not an earlier one.
        let request = tessera::forward::OriginalRequest::parse(method, &path).unwrap();
        let found = app
            .state
            .forward
            .table
            .find(method, &request.segments)
            .unwrap();
        assert_eq!(found.route.line, route.line, "{what} is shadowed");

        let anonymous = Ask::new(method, &path, Auth::None).send(app).await;
        match &route.rule {
            Rule::Public => {
                assert_eq!(anonymous.status, StatusCode::OK, "{what}");
                assert!(header(&anonymous, "remote-user").is_none(), "{what}");
                // Credentials are not even read: a garbage token changes nothing.
                let r = ask(app, method, &path, "garbage").await;
                assert_eq!(r.status, StatusCode::OK, "{what}");
                continue;
            }
            _ => assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{what}"),
        }
        match &route.rule {
            Rule::Public => unreachable!(),
            Rule::SignedIn => {
                let r = ask(app, method, &path, &host.stranger).await;
                assert_allowed(&r, "stranger", &what);
                assert_eq!(header(&r, "remote-groups"), Some("users"), "{what}");
                let r = ask(app, method, &path, &delegated).await;
                assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}: {}", r.text);
            }
            Rule::Admin => {
                let r = ask(app, method, &path, &host.alice).await;
                assert_allowed(&r, "alice", &what);
                assert_eq!(header(&r, "remote-groups"), Some("users,admins"));
                let r = ask(app, method, &path, &host.olive).await;
                assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}: {}", r.text);
            }
            Rule::Agent(operation) => {
                let needed = needed_level(operation);
                let r = ask(app, method, &path, host.at(needed)).await;
                assert_allowed(&r, &format!("at-{needed}"), &what);
                assert_eq!(header(&r, "x-tessera-agent"), Some("helper"), "{what}");
                assert_eq!(header(&r, "x-tessera-access"), Some(needed), "{what}");
                assert_eq!(header(&r, "x-tessera-operation"), Some(operation.as_str()));
                let below = LEVELS
                    .iter()
                    .position(|l| *l == needed)
                    .and_then(|i| i.checked_sub(1))
                    .map_or(host.stranger.as_str(), |i| host.at(LEVELS[i]));
                let r = ask(app, method, &path, below).await;
                assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}: {}", r.text);
                // The owner and an admin (manage everywhere) get in, at their level.
                let r = ask(app, method, &path, &host.olive).await;
                assert_eq!(header(&r, "x-tessera-access"), Some("owner"), "{what}");
                let r = ask(app, method, &path, &host.alice).await;
                assert_eq!(r.status, StatusCode::OK, "{what}: {}", r.text);
                assert_eq!(header(&r, "x-tessera-access"), Some("manage"), "{what}");
                // A missing agent is refused like one out of sight.
                let missing = route.pattern.example("nobody");
                let r = ask(app, method, &missing, &host.olive).await;
                assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}");
            }
        }
    }
}

#[tokio::test]
async fn paths_the_table_does_not_know_are_refused() {
    let host = Host::new().await;
    for (method, path) in [
        ("GET", "/etc/passwd"),
        ("GET", "/.git/config"),
        ("POST", "/desktop"),
        ("OPTIONS", "/favicon.ico"),
        ("GET", "/staticfiles/x.js"),
    ] {
        let r = Ask::new(method, path, Auth::None).send(&host.app).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        for token in [&host.alice, &host.olive] {
            let r = ask(&host.app, method, path, token).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{method} {path}");
            assert!(r.error().contains("no rule"), "{}", r.error());
        }
    }
    // No method reaches one agent's paths through the host's catch-all.
    for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        for path in ["/api/agents/helper", "/api/agents/helper/some/new/route"] {
            let r = ask(&host.app, method, path, &host.stranger).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{method} {path}");
        }
    }
    // A table of its own: what it does not list is refused, whoever asks.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.conf");
    std::fs::write(&file, "GET /only/{agent} agent:read\n").unwrap();
    let app = TestApp::with_config(|c| c.routes = Some(file.clone()));
    let host = Host::with(app).await;
    let r = ask(&host.app, "GET", "/only/helper", &host.olive).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = ask(&host.app, "GET", "/api/agents/helper", &host.olive).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = ask(&host.app, "GET", "/static/x.css", &host.alice).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_malformed_table_refuses_to_start_naming_the_line() {
    let dir = crate::helpers::private_tempdir();
    let file = dir.path().join("routes.conf");
    std::fs::write(
        &file,
        "# the host\nGET /api/health public\nGET /api/agents/{agent} agent:chatter\n",
    )
    .unwrap();
    let mut config = crate::helpers::test_config(dir.path());
    config.routes = Some(file.clone());
    let err = tessera::AppState::build(
        config,
        std::sync::Arc::new(tessera::store::MemoryStore::new()),
        tessera::authz::keys::RootKeys::ephemeral(),
        tessera::authz::keys::DataKeys::ephemeral(),
    )
    .err()
    .expect("a malformed table is refused");
    let message = err.to_string();
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(message.contains("line 3"), "{message}");
    assert!(
        message.contains("unknown rule `agent:chatter`"),
        "{message}"
    );

    // The binary says the same and exits.
    let data = dir.path().join("data");
    let out = crate::helpers::command(&data)
        .arg("--routes")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 3"), "{stderr}");
    assert!(stderr.contains("routes.conf"), "{stderr}");

    // A file that is not there is named too.
    let missing = dir.path().join("nope.conf");
    let out = crate::helpers::command(&data)
        .arg("--routes")
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.conf"));
}

#[tokio::test]
async fn refusals_speak_each_proxys_dialect() {
    let host = Host::new().await;
    let app = &host.app;
    let chat = "/api/agents/helper/messages?since=1&x=a%20b";
    // An API client: 401 in JSON.
    let r = Ask::new("GET", chat, Auth::None).send(app).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(header(&r, "location").is_none());
    assert!(!r.error().is_empty());
    // A browser: to the sign-in page, coming back to the original path.
    let r = Ask::new("GET", chat, Auth::None).browser().send(app).await;
    assert_eq!(r.status, StatusCode::FOUND);
    let location = header(&r, "location").unwrap().to_owned();
    assert_eq!(
        location,
        "/auth/login?next=%2Fapi%2Fagents%2Fhelper%2Fmessages%3Fsince%3D1%26x%3Da%2520b"
    );
    // A bad or expired cookie is the same as none.
    let r = Ask::new("GET", chat, Auth::CookieOnly("not-a-token"))
        .browser()
        .send(app)
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    // nginx: 401 with the sign-in page in Location, for error_page.
    let r = Ask::new("GET", chat, Auth::None)
        .nginx()
        .browser()
        .send(app)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(header(&r, "location"), Some(location.as_str()));
    let r = Ask::new("GET", chat, Auth::None).nginx().send(app).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(header(&r, "location").is_none());
    // Signed in without the right: 403, never a sign-in loop.
    for proxy in [Ask::new("GET", chat, Auth::Cookie(&host.stranger)).browser()] {
        let r = proxy.send(app).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }
    let r = Ask::new("GET", chat, Auth::Bearer(&host.stranger))
        .nginx()
        .browser()
        .send(app)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The session cookie and nginx's absolute URL work like a bearer token.
    let r = Ask::new("POST", chat, Auth::Cookie(host.at("use")))
        .nginx()
        .send(app)
        .await;
    assert_allowed(&r, "at-use", "nginx cookie");
    assert_eq!(header(&r, "x-tessera-access"), Some("use"));

    // After signing in, the sign-in page sends the browser back to `next`.
    let login = app.login("at-use", "some-password").await;
    let session = login.token();
    let next = location.strip_prefix("/auth/login").unwrap();
    let r = app
        .call(
            Method::GET,
            &format!("/auth/login{next}"),
            Auth::Cookie(&session),
            None,
        )
        .await;
    assert!(r.status.is_redirection(), "{}", r.status);
    assert_eq!(
        header(&r, "location"),
        Some("/api/agents/helper/messages?since=1&x=a%20b")
    );
}

#[tokio::test]
async fn a_garbled_question_is_a_clear_400() {
    let host = Host::new().await;
    let app = &host.app;
    let send = |headers: Vec<(&'static str, &'static str)>, path: &'static str| {
        let mut req = Request::builder().uri(path);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.header("authorization", format!("Bearer {}", host.olive))
            .body(Body::empty())
            .unwrap()
    };
    let cases = [
        (
            vec![("x-forwarded-uri", "/api/x")],
            "/auth/verify",
            "x-forwarded-method",
        ),
        (
            vec![("x-forwarded-method", "GET")],
            "/auth/verify",
            "x-forwarded-uri",
        ),
        (
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/a/../api/admin/x"),
            ],
            "/auth/verify",
            "..",
        ),
        (
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "//evil.example/x"),
            ],
            "/auth/verify",
            "empty segment",
        ),
        (
            vec![("x-forwarded-method", "get"), ("x-forwarded-uri", "/api/x")],
            "/auth/verify",
            "method",
        ),
        (
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/api/x"),
                ("x-forwarded-proto", "gopher"),
            ],
            "/auth/verify",
            "X-Forwarded-Proto",
        ),
        (
            vec![("x-original-method", "GET")],
            "/auth/verify/nginx",
            "x-original-url",
        ),
        (
            vec![
                ("x-original-method", "GET"),
                ("x-original-url", "ftp://h/x"),
            ],
            "/auth/verify/nginx",
            "http",
        ),
    ];
    for (headers, path, says) in cases {
        let r = app.send(send(headers, path)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{says}: {}", r.text);
        assert!(r.error().contains(says), "{says}: {}", r.error());
    }
    // Only GET (and HEAD) ask.
    let r = app
        .call(
            Method::POST,
            "/auth/verify",
            Auth::Bearer(&host.olive),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn revocation_unsharing_and_demotion_apply_on_the_very_next_request() {
    let host = Host::new().await;
    let app = &host.app;
    let bob = app.add_user(&host.alice, "bob", "bob-password").await;
    let chat = "/api/agents/helper/messages";
    // bob reaches the chat only with use.
    let r = ask(app, "POST", chat, &bob).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    share(app, &host.olive, "bob", "view").await;
    let r = ask(app, "POST", chat, &bob).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.error().contains("agent:chat"), "{}", r.error());
    share(app, &host.olive, "bob", "use").await;
    let r = ask(app, "POST", chat, &bob).await;
    assert_allowed(&r, "bob", "shared at use");
    assert_eq!(header(&r, "x-tessera-access"), Some("use"));

    // Unsharing.
    let r = app
        .delete("/api/agents/helper/shares/bob", &host.olive)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = ask(app, "POST", chat, &bob).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Signing out (the session is revoked).
    share(app, &host.olive, "bob", "use").await;
    assert_eq!(ask(app, "POST", chat, &bob).await.status, StatusCode::OK);
    let r = app.post("/auth/logout", &bob, json!({})).await;
    assert!(r.status.is_redirection(), "{}", r.status);
    let r = ask(app, "POST", chat, &bob).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // An admin's sessions revoked by another admin.
    let carol = app.add_user(&host.alice, "carol", "carol-password").await;
    let r = app
        .post(
            "/auth/users/carol/admin",
            &host.alice,
            json!({"is_admin": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let admin_route = "/api/cluster/pairing/pending";
    let r = ask(app, "GET", admin_route, &carol).await;
    assert_allowed(&r, "carol", "admin");
    let r = ask(app, "POST", "/api/agents/helper/stop", &carol).await;
    assert_eq!(header(&r, "x-tessera-access"), Some("manage"));
    // Demotion.
    let r = app
        .post(
            "/auth/users/carol/admin",
            &host.alice,
            json!({"is_admin": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        ask(app, "GET", admin_route, &carol).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        ask(app, "POST", "/api/agents/helper/stop", &carol)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let r = ask(app, "GET", "/api/anything", &carol).await;
    assert_eq!(header(&r, "remote-groups"), Some("users"));
}

#[tokio::test]
async fn delegated_bot_and_runtime_tokens_get_only_what_they_are_allowed() {
    let host = Host::new().await;
    let app = &host.app;
    // A delegated token at edit on helper: reading and configuring helper,
    // nothing else (chatting is not delegable, nor is the host at large).
    let minted = app
        .post(
            "/api/tokens",
            &host.olive,
            json!({"agent": "helper", "level": "edit", "expires_in": 3600}),
        )
        .await;
    assert_eq!(minted.status, StatusCode::OK, "{}", minted.body);
    let delegated = minted.token();
    let id = minted.body["id"].as_str().unwrap().to_owned();
    let r = ask(app, "GET", "/api/agents/helper", &delegated).await;
    assert_allowed(&r, "olive", "delegated read");
    assert_eq!(header(&r, "x-tessera-access"), Some("edit"));
    let r = ask(app, "PUT", "/api/agents/helper", &delegated).await;
    assert_eq!(r.status, StatusCode::OK);
    for (method, path) in [
        ("POST", "/api/agents/helper/messages"),
        ("POST", "/api/agents/helper/stop"),
        ("GET", "/api/agents/other"),
        ("GET", "/api/anything"),
        ("GET", "/desktop"),
        ("GET", "/api/cluster/pairing/pending"),
    ] {
        let r = ask(app, method, path, &delegated).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{method} {path}");
    }
    let r = app.delete(&format!("/api/tokens/{id}"), &host.olive).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = ask(app, "GET", "/api/agents/helper", &delegated).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // A channel bot's token and the agent's runtime token: nothing on the
    // host (the policy gives them their channel and their own calls only).
    let channel = app
        .post(
            "/api/channels",
            &host.olive,
            json!({"agent_name": "helper", "type": "webhook", "config": {}}),
        )
        .await;
    assert_eq!(channel.status, StatusCode::OK, "{}", channel.body);
    let bot = channel.token();
    let runtime = app
        .post("/api/agents/helper/runtime-token", &host.olive, json!({}))
        .await
        .token();
    for token in [&bot, &runtime] {
        for (method, path) in [
            ("POST", "/api/agents/helper/messages"),
            ("GET", "/api/agents/helper"),
            ("GET", "/api/anything"),
            ("GET", "/api/cluster/pairing/pending"),
        ] {
            let r = ask(app, method, path, token).await;
            assert_eq!(
                r.status,
                StatusCode::FORBIDDEN,
                "{method} {path}: {}",
                r.text
            );
        }
        let r = ask(app, "GET", "/static/app.js", token).await;
        assert_eq!(r.status, StatusCode::OK);
    }
}

/// The root public keys as an upstream fetches them.
async fn published_keys(app: &TestApp) -> Vec<(u32, PublicKey)> {
    let r = app.call(Method::GET, "/auth/keys", Auth::None, None).await;
    r.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let key =
                PublicKey::from_bytes_hex(k["public_key"].as_str().unwrap(), Algorithm::Ed25519)
                    .unwrap();
            (k["id"].as_u64().unwrap() as u32, key)
        })
        .collect()
}

/// What an upstream does with `X-Tessera-Assertion`: verify it offline with
/// the published keys and allow on the operation and agent it serves, at
/// the time `at`.
fn upstream_allows(
    keys: &[(u32, PublicKey)],
    assertion: &str,
    policy: &str,
    at: SystemTime,
) -> Result<(), String> {
    let biscuit = Biscuit::from_base64(assertion, |id: Option<u32>| {
        keys.iter()
            .find(|(k, _)| Some(*k) == id)
            .map(|(_, key)| *key)
            .ok_or(biscuit_auth::error::Format::UnknownPublicKey)
    })
    .map_err(|e| e.to_string())?;
    // The library's default time limit (1 ms) is too tight for a loaded
    // test machine; an upstream should set its own too.
    let limits = biscuit_auth::AuthorizerLimits {
        max_time: Duration::from_secs(1),
        ..Default::default()
    };
    let mut authorizer = AuthorizerBuilder::new()
        .set_limits(limits)
        .fact(fact("time", &[date(&at)]))
        .unwrap()
        .code(policy)
        .unwrap()
        .build(&biscuit)
        .map_err(|e| e.to_string())?;
    authorizer
        .authorize()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn the_assertion_verifies_offline_for_its_request_only() {
    let host = Host::new().await;
    let app = &host.app;
    let keys = published_keys(app).await;
    let user = host.at("use");
    let r = ask(app, "POST", "/api/agents/helper/messages?x=1", user).await;
    assert_allowed(&r, "at-use", "chat");
    let assertion = header(&r, "x-tessera-assertion").unwrap().to_owned();
    let user_id = header(&r, "x-tessera-user-id").unwrap().to_owned();
    let now = SystemTime::now();
    let chat_on_helper =
        r#"allow if assertion("forward-auth"), operation("agent:chat"), agent("helper");"#;
    upstream_allows(&keys, &assertion, chat_on_helper, now).unwrap();

    // Exactly the contract's facts.
    let biscuit = Biscuit::from_base64(&assertion, keys[0].1).unwrap();
    let source = biscuit.print_block_source(0).unwrap();
    for fact in [
        r#"assertion("forward-auth");"#.to_owned(),
        format!("user(\"{user_id}\");"),
        r#"username("at-use");"#.to_owned(),
        r#"operation("agent:chat");"#.to_owned(),
        r#"method("POST");"#.to_owned(),
        r#"path("/api/agents/helper/messages");"#.to_owned(),
        r#"agent("helper");"#.to_owned(),
        r#"level("use");"#.to_owned(),
    ] {
        assert!(source.contains(&fact), "{fact} missing from {source}");
    }
    assert!(source.contains("check if time($t), $t <= "), "{source}");
    assert_eq!(biscuit.block_count(), 1);

    // Replayed for another agent or operation, or after its expiry: refused.
    for policy in [
        r#"allow if assertion("forward-auth"), operation("agent:chat"), agent("other");"#,
        r#"allow if assertion("forward-auth"), operation("agent:update"), agent("helper");"#,
        r#"allow if assertion("forward-auth"), level("edit");"#,
    ] {
        assert!(
            upstream_allows(&keys, &assertion, policy, now).is_err(),
            "{policy}"
        );
    }
    let later = now + Duration::from_secs(61);
    assert!(upstream_allows(&keys, &assertion, chat_on_helper, later).is_err());

    // Another server's key proves nothing.
    let stranger = [(1, biscuit_auth::KeyPair::new().public())];
    assert!(upstream_allows(&stranger, &assertion, chat_on_helper, now).is_err());

    // Signed-in and admin routes carry the host operations.
    let r = ask(app, "GET", "/desktop", user).await;
    let desktop = header(&r, "x-tessera-assertion").unwrap();
    upstream_allows(
        &keys,
        desktop,
        r#"allow if assertion("forward-auth"), operation("host:use"), path("/desktop"), method("GET");"#,
        now,
    )
    .unwrap();
    let r = ask(app, "GET", "/api/cluster/pairing/pending", &host.alice).await;
    upstream_allows(
        &keys,
        header(&r, "x-tessera-assertion").unwrap(),
        r#"allow if assertion("forward-auth"), operation("host:admin"), username("alice");"#,
        now,
    )
    .unwrap();
}

#[tokio::test]
async fn the_assertion_lifetime_is_configurable() {
    let app = TestApp::with_config(|c| c.assertion_ttl = Duration::from_secs(5));
    let host = Host::with(app).await;
    let keys = published_keys(&host.app).await;
    let r = ask(&host.app, "GET", "/api/agents/helper", &host.olive).await;
    let assertion = header(&r, "x-tessera-assertion").unwrap();
    let policy = r#"allow if assertion("forward-auth"), agent("helper");"#;
    let now = SystemTime::now();
    upstream_allows(&keys, assertion, policy, now).unwrap();
    assert!(upstream_allows(&keys, assertion, policy, now + Duration::from_secs(7)).is_err());
}

#[tokio::test]
async fn tessera_never_takes_an_assertion_as_a_credential() {
    let host = Host::new().await;
    let app = &host.app;
    let r = ask(app, "GET", "/api/cluster/pairing/pending", &host.alice).await;
    let assertion = header(&r, "x-tessera-assertion").unwrap().to_owned();
    for path in [
        "/auth/me",
        "/api/agents",
        "/api/agents/helper",
        "/auth/users",
    ] {
        let r = app.get(path, &assertion).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}: {}", r.body);
        assert!(r.error().contains("assertion"), "{}", r.error());
        let r = app
            .call(Method::GET, path, Auth::CookieOnly(&assertion), None)
            .await;
        assert!(
            r.status == StatusCode::UNAUTHORIZED || r.status.is_redirection(),
            "{path}: {}",
            r.status
        );
    }
    let r = app
        .post("/api/agents", &assertion, json!({"name": "sneaky"}))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Nor on forward auth itself.
    let r = ask(app, "GET", "/api/cluster/pairing/pending", &assertion).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // The inspector names it for what it is.
    let r = app
        .post(
            "/api/tokens/inspect",
            &host.alice,
            json!({"token": assertion}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["kind"], "assertion");
    assert_eq!(r.body["valid"], false);
}

#[tokio::test]
async fn identity_headers_never_echo_unsafe_values() {
    let host = Host::new().await;
    let app = &host.app;
    let r = app
        .post(
            "/auth/users/stranger/profile",
            &host.stranger,
            json!({"full_name": "Zoë 100%", "email": "zoë@exämple.org"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = ask(app, "GET", "/desktop", &host.stranger).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(header(&r, "remote-name"), Some("Zo%C3%AB 100%25"));
    assert!(header(&r, "remote-email").is_none());
    assert!(header(&r, "x-auth-request-email").is_none());
}

#[test]
fn the_default_table_is_the_file_in_the_repository() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/routes.conf");
    assert_eq!(
        std::fs::read_to_string(file).unwrap(),
        tessera::forward::table::DEFAULT
    );
    let policy =
        tessera::authz::policy::Policy::embedded(biscuit_auth::AuthorizerLimits::default())
            .unwrap();
    RouteTable::embedded(&policy.agent_operations().unwrap()).unwrap();
}

#[tokio::test]
async fn an_archived_agent_is_read_only_and_a_pending_account_gets_nothing() {
    let host = Host::new().await;
    let app = &host.app;
    let r = app
        .post("/api/agents/helper/archive", &host.olive, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = ask(app, "GET", "/api/agents/helper", host.at("use")).await;
    assert_eq!(r.status, StatusCode::OK);
    for token in [host.at("use"), &host.olive] {
        let r = ask(app, "POST", "/api/agents/helper/messages", token).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }

    // Invited, signed in with the invite code, sign-up not finished.
    let invite = app
        .post("/auth/users", &host.alice, json!({"username": "newbie"}))
        .await;
    let code = invite.body["invite_code"].as_str().unwrap().to_owned();
    let pending = app.login("newbie", &code).await;
    assert_eq!(pending.status, StatusCode::OK, "{}", pending.body);
    let r = ask(app, "GET", "/desktop", &pending.token()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
}

/// One raw HTTP/1.1 exchange with the real server: the status and the
/// response's headers (names lower-cased).
fn raw_verify(addr: std::net::SocketAddr, extra: &str) -> (u16, Vec<(String, String)>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /auth/verify HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let head = text.split("\r\n\r\n").next().unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers)
}

/// The binary takes its table and the assertion lifetime from the
/// environment, and answers the proxy over a real socket.
#[test]
fn the_binary_reads_its_table_and_assertion_lifetime_from_the_environment() {
    let dir = crate::helpers::private_tempdir();
    let file = dir.path().join("routes.conf");
    std::fs::write(&file, "GET /up public\nGET /app/* signed-in\n").unwrap();
    let data = dir.path().join("data");
    let mut cmd = crate::helpers::command(&data);
    cmd.env("TESSERA_ROUTES", &file)
        .env("TESSERA_ASSERTION_TTL", "5")
        .stderr(std::process::Stdio::null());
    let server = crate::helpers::spawn(cmd);
    let (status, body) = crate::helpers::http(
        server.addr,
        "POST",
        "/auth/setup",
        None,
        Some(&json!({"username": "alice", "password": "alice-password"})),
    );
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    let ask = |uri: &str, auth: &str| {
        raw_verify(
            server.addr,
            &format!("X-Forwarded-Method: GET\r\nX-Forwarded-Uri: {uri}\r\n{auth}"),
        )
    };
    let get = |headers: &[(String, String)], name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(ask("/up", "").0, 200);
    assert_eq!(ask("/app/x", "").0, 401);
    let bearer = format!("Authorization: Bearer {token}\r\n");
    let (status, headers) = ask("/app/x", &bearer);
    assert_eq!(status, 200, "{headers:?}");
    assert_eq!(get(&headers, "remote-user").as_deref(), Some("alice"));
    // Not in this table, though the built-in one has it.
    assert_eq!(ask("/api/agents", &bearer).0, 403);

    let assertion = get(&headers, "x-tessera-assertion").unwrap();
    let (_, keys) = crate::helpers::http(server.addr, "GET", "/auth/keys", None, None);
    let key = PublicKey::from_bytes_hex(
        keys["keys"][0]["public_key"].as_str().unwrap(),
        Algorithm::Ed25519,
    )
    .unwrap();
    let keys = [(keys["keys"][0]["id"].as_u64().unwrap() as u32, key)];
    let policy = r#"allow if assertion("forward-auth"), operation("host:use");"#;
    let now = SystemTime::now();
    upstream_allows(&keys, &assertion, policy, now).unwrap();
    assert!(upstream_allows(&keys, &assertion, policy, now + Duration::from_secs(7)).is_err());
}
