//! Cross-site request forgery, attempted for real: a page served on another
//! loopback port (another app on the same machine: the same *site* as
//! tessera, so the browser sends the person's cookies, and able to read the
//! `csrf_token` cookie, since cookies ignore ports) is opened in the
//! person's own browser and fires form posts, `text/plain` forms shaped as
//! JSON, `fetch` calls and beacons at every state-changing route family,
//! carrying the stolen token wherever it can. Everything must be refused:
//! checked in tessera's request log (each forged request arrived and was
//! answered `403`, none that a browser would only send after a CORS
//! preflight was sent) and over the JSON API (nothing changed; the person
//! is still signed in). Then login CSRF: the same kind of page posting the
//! sign-in form with mallory's credentials must not sign the person's
//! browser in as mallory.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{bounded, poll, Browser, OtherOrigin, Profile, Rig, Tessera, STEP};

const PASSWORD: &str = "the-password-1";
const MALLORY_PASSWORD: &str = "mallory-password-1";

/// One forged request: what an attacker wants done.
struct Forgery {
    method: &'static str,
    path: String,
    body: Value,
}

fn forge(method: &'static str, path: impl Into<String>, body: Value) -> Forgery {
    Forgery {
        method,
        path: path.into(),
        body,
    }
}

/// What a victim has, for forgeries to aim at: every one of them is
/// something the victim may do, so a refusal can only come from the
/// forgery defence, not from the policy.
struct Victim {
    name: &'static str,
    other: &'static str,
    /// A bearer token for checking over the API (not the browser's).
    api: String,
    agent: String,
    secret: String,
    chunk: String,
    token_id: String,
    conversation: String,
    message: String,
    channel: String,
}

impl Victim {
    /// Everything that changes data, by route family. Session-ending
    /// forgeries are separate ([`Victim::session_forgeries`]) so that, were
    /// one to succeed, it could not hide the others' success.
    fn data_forgeries(&self) -> Vec<Forgery> {
        let (name, other, agent) = (self.name, self.other, &self.agent);
        vec![
            // Agents.
            forge("POST", "/api/agents", json!({"name": "forged-agent"})),
            forge(
                "POST",
                "/console/agents",
                json!({"name": "forged-console-agent"}),
            ),
            forge(
                "PUT",
                format!("/api/agents/{agent}"),
                json!({"display_name": "forged"}),
            ),
            forge(
                "POST",
                format!("/api/agents/{agent}/shares"),
                json!({"user": other, "level": "manage"}),
            ),
            forge(
                "DELETE",
                format!("/api/agents/{agent}/shares/{other}"),
                json!(null),
            ),
            forge(
                "POST",
                format!("/api/agents/{agent}/transfer"),
                json!({"to": other}),
            ),
            forge("POST", format!("/api/agents/{agent}/archive"), json!({})),
            forge("DELETE", format!("/api/agents/{agent}"), json!(null)),
            forge(
                "POST",
                format!("/api/agents/{agent}/runtime-token"),
                json!({}),
            ),
            forge(
                "DELETE",
                format!("/api/agents/{agent}/runtime-token"),
                json!(null),
            ),
            // Delegated tokens.
            forge(
                "POST",
                "/api/tokens",
                json!({"agent": agent, "level": "use", "expires_in": 600, "label": "forged"}),
            ),
            forge(
                "DELETE",
                format!("/api/tokens/{}", self.token_id),
                json!(null),
            ),
            // Secrets.
            forge(
                "POST",
                "/api/secrets",
                json!({"name": "FORGED", "value": "forged"}),
            ),
            forge(
                "PUT",
                format!("/api/secrets/{}", self.secret),
                json!({"value": "forged"}),
            ),
            forge(
                "DELETE",
                format!("/api/secrets/{}", self.secret),
                json!(null),
            ),
            // Memory.
            forge(
                "POST",
                "/api/user-memory/save",
                json!({"content": "forged", "title": "forged"}),
            ),
            forge(
                "DELETE",
                format!("/api/user-memory/chunk/{}", self.chunk),
                json!(null),
            ),
            forge(
                "PUT",
                format!("/api/user-memory/grants/{agent}"),
                json!({"allowed": true}),
            ),
            forge(
                "PUT",
                "/api/user-memory/settings",
                json!({"enabled": false}),
            ),
            forge(
                "PUT",
                format!("/api/agents/{agent}/permissions"),
                json!({"can_read_user_memory": true}),
            ),
            // Chat.
            forge("POST", "/api/chat/channels", json!({"agent": agent})),
            forge(
                "POST",
                "/api/chat/messages",
                json!({"channel_id": self.conversation, "content": "forged"}),
            ),
            forge(
                "PATCH",
                format!("/api/chat/messages/{}", self.message),
                json!({"content": "forged"}),
            ),
            forge(
                "DELETE",
                format!("/api/chat/messages/{}", self.message),
                json!(null),
            ),
            forge(
                "POST",
                "/api/chat/mark-read",
                json!({"channel_id": self.conversation}),
            ),
            // Channels.
            forge(
                "POST",
                "/api/channels",
                json!({"agent_name": agent, "type": "webhook", "config": {}}),
            ),
            forge(
                "POST",
                format!("/api/channels/{}/toggle", self.channel),
                json!({}),
            ),
            forge(
                "DELETE",
                format!("/api/channels/{}", self.channel),
                json!(null),
            ),
            // My account.
            forge(
                "POST",
                format!("/auth/users/{name}/profile"),
                json!({"full_name": "Forged Name", "email": "forged@example.org"}),
            ),
            // Administration (alice is an admin; bob is refused either way).
            forge("POST", "/auth/users", json!({"username": "forged-user"})),
            forge("POST", format!("/auth/users/{other}/reset"), json!({})),
            forge(
                "POST",
                format!("/auth/users/{other}/admin"),
                json!({"is_admin": true}),
            ),
            forge(
                "DELETE",
                format!("/auth/users/{other}/sessions"),
                json!(null),
            ),
            forge("DELETE", format!("/auth/users/{other}"), json!(null)),
            forge("POST", "/api/admin/backup", json!({"password": PASSWORD})),
            // The console's own forms, as they post.
            forge(
                "POST",
                format!("/console/agents/{agent}/edit"),
                json!({"field.display_name": "forged"}),
            ),
            forge(
                "POST",
                format!("/console/agents/{agent}/shares"),
                json!({"user": other, "level": "manage"}),
            ),
            forge(
                "POST",
                format!("/console/agents/{agent}/shares/{other}"),
                json!({"level": "share"}),
            ),
            forge(
                "POST",
                format!("/console/agents/{agent}/shares/{other}/delete"),
                json!({}),
            ),
            forge(
                "POST",
                format!("/console/agents/{agent}/transfer"),
                json!({"to": other}),
            ),
            forge(
                "POST",
                format!("/console/agents/{agent}/archive"),
                json!({}),
            ),
            forge(
                "POST",
                format!("/console/agents/{agent}/delete"),
                json!({"confirm": "yes"}),
            ),
            forge(
                "POST",
                format!("/console/agents/{agent}/tokens"),
                json!({"level": "use", "expires_in": "3600", "label": "forged"}),
            ),
            forge(
                "POST",
                format!("/console/agents/{agent}/tokens/{}/revoke", self.token_id),
                json!({}),
            ),
            forge(
                "POST",
                format!("/console/agents/{agent}/runtime"),
                json!({}),
            ),
            forge(
                "POST",
                format!("/console/agents/{agent}/channels"),
                json!({"type": "webhook", "settings": "{}"}),
            ),
            forge(
                "POST",
                format!("/console/agents/{agent}/channels/{}/toggle", self.channel),
                json!({}),
            ),
            forge(
                "POST",
                format!("/console/agents/{agent}/channels/{}/delete", self.channel),
                json!({}),
            ),
            forge(
                "POST",
                "/console/secrets",
                json!({"name": "FORGED_CONSOLE", "value": "forged"}),
            ),
            forge(
                "POST",
                "/console/secrets/update",
                json!({"name": self.secret, "value": "forged"}),
            ),
            forge(
                "POST",
                "/console/secrets/delete",
                json!({"name": self.secret}),
            ),
            forge(
                "POST",
                "/console/memory/save",
                json!({"content": "forged", "title": "forged"}),
            ),
            forge(
                "POST",
                format!("/console/memory/chunk/{}/delete", self.chunk),
                json!({}),
            ),
            forge(
                "POST",
                "/console/memory/grants",
                json!({"agent": agent, "allowed": "true"}),
            ),
            forge(
                "POST",
                "/console/account/profile",
                json!({"full_name": "Forged Name", "email": "forged@example.org"}),
            ),
            forge(
                "POST",
                "/console/admin/users",
                json!({"username": "forged-console-user"}),
            ),
            forge(
                "POST",
                format!("/console/admin/users/{other}/reset"),
                json!({}),
            ),
            forge(
                "POST",
                format!("/console/admin/users/{other}/admin"),
                json!({"is_admin": "true"}),
            ),
            forge(
                "POST",
                format!("/console/admin/users/{other}/delete"),
                json!({"agents": "delete"}),
            ),
            forge(
                "POST",
                "/console/admin/backup",
                json!({"password": PASSWORD}),
            ),
        ]
    }

    /// The forgeries that would end or take over the victim's session.
    fn session_forgeries(&self) -> Vec<Forgery> {
        let name = self.name;
        vec![
            forge(
                "POST",
                format!("/auth/users/{name}/password"),
                json!({"current": PASSWORD, "new": "forged-password-1"}),
            ),
            forge(
                "DELETE",
                format!("/auth/users/{name}/sessions"),
                json!(null),
            ),
            forge(
                "POST",
                "/console/account/password",
                json!({"current": PASSWORD, "new": "forged-password-1", "repeat": "forged-password-1"}),
            ),
            forge("POST", "/console/account/sessions/others", json!({})),
            forge(
                "POST",
                format!("/console/admin/users/{name}/sessions"),
                json!({}),
            ),
            forge("POST", "/auth/lock", json!({})),
            forge("POST", "/auth/logout", json!({})),
        ]
    }
}

/// The attacker's page: fires every forgery every way a page can, then
/// sets its title to `done` and shows what it saw in `#result`.
fn attack_page(tessera: &str, forgeries: &[Forgery]) -> String {
    let list: Vec<Value> = forgeries
        .iter()
        .map(|f| json!({"method": f.method, "path": f.path, "body": f.body}))
        .collect();
    format!(
        r#"<!doctype html><meta charset=utf-8><title>attacking</title>
<pre id=result>working</pre>
<script>
const target = {target};
const forgeries = {list};
// Cookies ignore ports: this page reads tessera's CSRF cookie.
const stolen = (document.cookie.match(/(?:^|; )csrf_token=([^;]*)/) || [])[1] || "";
const pending = [];
let frames = 0;
function settle(p) {{ return Promise.race([p.catch(() => null), new Promise(r => setTimeout(r, 10000))]); }}
function frame() {{
  const f = document.createElement("iframe");
  f.name = "f" + (frames++);
  document.body.appendChild(f);
  pending.push(settle(new Promise(r => {{ f.onload = r; f.onerror = r; }})));
  return f.name;
}}
function post(path, fields, enctype) {{
  const form = document.createElement("form");
  form.method = "POST";
  form.action = target + path;
  form.target = frame();
  if (enctype) form.enctype = enctype;
  for (const [k, v] of Object.entries(fields)) {{
    const input = document.createElement("input");
    input.type = "hidden"; input.name = k; input.value = v;
    form.appendChild(input);
  }}
  document.body.appendChild(form);
  form.submit();
}}
function flat(body) {{
  const out = {{}};
  for (const [k, v] of Object.entries(body || {{}})) out[k] = typeof v === "object" ? JSON.stringify(v) : String(v);
  return out;
}}
for (const f of forgeries) {{
  const url = target + f.path;
  const json = f.body === null ? "" : JSON.stringify(f.body);
  const headers = {{"Content-Type": "application/json", "X-CSRF-Token": stolen}};
  if (f.method === "POST") {{
    // An HTML form, as the console's own forms post, with the stolen token.
    post(f.path, Object.assign({{csrf_token: stolen}}, flat(f.body)));
    // A text/plain form whose body reads as JSON.
    const padded = JSON.stringify(Object.assign({{}}, f.body, {{pad: ""}}));
    post(f.path, {{[padded.slice(0, -2)]: "\"}}"}}, "text/plain");
    // fetch without CORS: the browser drops the header and the JSON type
    // but sends the cookie and the body.
    pending.push(settle(fetch(url, {{method: "POST", credentials: "include", mode: "no-cors", headers, body: json}})));
    navigator.sendBeacon(url, new Blob([json], {{type: "text/plain"}}));
  }} else {{
    // Only CORS can send these, and tessera grants none: the preflight
    // fails and the request itself never leaves the browser.
    pending.push(settle(fetch(url, {{method: f.method, credentials: "include", mode: "cors", headers, body: f.method === "DELETE" ? undefined : json}})));
    pending.push(settle(fetch(url, {{method: f.method, credentials: "include", mode: "no-cors", body: f.method === "DELETE" ? undefined : json}})));
  }}
}}
Promise.all(pending).then(() => {{
  document.getElementById("result").textContent = JSON.stringify({{stolen: stolen !== "", frames}});
  document.title = "done";
}});
</script>"#,
        target = json!(tessera),
        list = Value::Array(list),
    )
}

/// The login-CSRF page: a form posting mallory's credentials to
/// tessera's sign-in, submitted as soon as the page loads (a top-level
/// navigation, where the browser is most generous with cookies), with
/// the stolen form token; and the same as a JSON `fetch`, and an invite
/// completion for a pending account whose code the attacker knows.
fn login_csrf_page(tessera: &str, pending_user: &str, code: &str) -> String {
    format!(
        r#"<!doctype html><meta charset=utf-8><title>win a prize</title>
<form method=post action="{tessera}/auth/login">
<input type=hidden name=csrf_token>
<input type=hidden name=username value=mallory>
<input type=hidden name=password value="{MALLORY_PASSWORD}">
<input type=hidden name=auto_login value=true>
</form>
<script>
const stolen = (document.cookie.match(/(?:^|; )csrf_token=([^;]*)/) || [])[1] || "";
document.forms[0].csrf_token.value = stolen;
const opts = body => ({{method: "POST", credentials: "include", mode: "no-cors", headers: {{"Content-Type": "application/json", "X-CSRF-Token": stolen}}, body: JSON.stringify(body)}});
Promise.all([
  fetch("{tessera}/auth/login", opts({{username: "mallory", password: "{MALLORY_PASSWORD}"}})).catch(() => null),
  fetch("{tessera}/auth/complete", opts({{username: "{pending_user}", invite_code: "{code}", password: "{MALLORY_PASSWORD}"}})).catch(() => null),
]).then(() => document.forms[0].submit());
</script>"#
    )
}

/// What the API says about everything a forgery could have changed.
fn snapshot(tessera: &Tessera, admin: &str, victims: &[&Victim]) -> BTreeMap<String, Value> {
    let mut seen = BTreeMap::new();
    let mut read = |who: &str, token: &str, path: String| {
        let (status, body) = tessera.api("GET", &path, Some(token), None);
        seen.insert(
            format!("{who} GET {path}"),
            json!({"status": status, "body": body}),
        );
    };
    read("admin", admin, "/auth/users".into());
    read("admin", admin, "/api/audit?limit=1000".into());
    read("admin", admin, "/api/agents".into());
    for v in victims {
        let t = &v.api;
        let agent = &v.agent;
        for path in [
            "/auth/me".to_owned(),
            "/api/agents".into(),
            format!("/api/agents/{agent}"),
            format!("/api/agents/{agent}/shares"),
            "/api/tokens".into(),
            "/api/secrets".into(),
            format!("/api/secrets/{}", v.secret),
            "/api/user-memory/browse".into(),
            "/api/user-memory/grants".into(),
            "/api/user-memory/settings".into(),
            "/api/chat/channels".into(),
            format!("/api/chat/messages?channel_id={}", v.conversation),
            "/api/chat/unread".into(),
            "/api/channels".into(),
        ] {
            read(v.name, t, path);
        }
    }
    seen
}

/// Log in over the API for a bearer token.
fn api_login(tessera: &Tessera, username: &str, password: &str) -> String {
    let (status, body) = tessera.api(
        "POST",
        "/auth/login",
        None,
        Some(json!({"username": username, "password": password})),
    );
    assert_eq!(status, 200, "login {username}: {body}");
    body["token"].as_str().expect("a token").to_owned()
}

/// Invite `username` and finish the invite over the API.
fn add_user(tessera: &Tessera, admin: &str, username: &str, password: &str) {
    let invite = tessera.api_ok(
        "POST",
        "/auth/users",
        admin,
        Some(json!({"username": username})),
    );
    let code = invite["invite_code"].as_str().expect("a code");
    let (status, body) = tessera.api(
        "POST",
        "/auth/complete",
        None,
        Some(json!({"username": username, "invite_code": code, "password": password})),
    );
    assert_eq!(status, 200, "{body}");
}

/// Give `name` something of each kind for forgeries to aim at.
fn furnish(tessera: &Tessera, name: &'static str, other: &'static str) -> Victim {
    let api = api_login(tessera, name, PASSWORD);
    let agent = format!("{name}-agent");
    tessera.api_ok("POST", "/api/agents", &api, Some(json!({"name": agent})));
    tessera.api_ok(
        "POST",
        &format!("/api/agents/{agent}/shares"),
        &api,
        Some(json!({"user": other, "level": "view"})),
    );
    let secret = format!("{}_KEY", name.to_uppercase());
    tessera.api_ok(
        "POST",
        "/api/secrets",
        &api,
        Some(json!({"name": secret, "value": format!("{name}-secret-value")})),
    );
    let saved = tessera.api_ok(
        "POST",
        "/api/user-memory/save",
        &api,
        Some(json!({"content": format!("{name}'s note"), "title": "note"})),
    );
    let minted = tessera.api_ok(
        "POST",
        "/api/tokens",
        &api,
        Some(json!({"agent": agent, "level": "view", "expires_in": 3600, "label": "kept"})),
    );
    let conversation = tessera.api_ok(
        "POST",
        "/api/chat/channels",
        &api,
        Some(json!({"agent": agent})),
    );
    let conversation = conversation["id"]
        .as_str()
        .expect("a conversation")
        .to_owned();
    let message = tessera.api_ok(
        "POST",
        "/api/chat/messages",
        &api,
        Some(json!({"channel_id": conversation, "content": "hello"})),
    );
    let channel = tessera.api_ok(
        "POST",
        "/api/channels",
        &api,
        Some(json!({"agent_name": agent, "type": "webhook", "config": {}})),
    );
    Victim {
        name,
        other,
        agent,
        secret,
        chunk: saved["hash"].as_str().expect("a hash").to_owned(),
        token_id: minted["id"].as_str().expect("a token id").to_owned(),
        conversation,
        message: message["id"].as_str().expect("a message id").to_owned(),
        channel: channel["id"].as_str().expect("a channel id").to_owned(),
        api,
    }
}

/// Open `page` in `browser` and wait (bounded) until it has fired
/// everything; returns what it reported.
async fn run_attack(browser: &Browser, url: &str) -> Value {
    browser.goto(url).await;
    poll("the attack page to finish", STEP * 2, || async {
        (browser.title().await == "done").then_some(())
    })
    .await;
    let text = browser.text().await;
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("the attack page said {text:?}"))
}

/// How many forged requests of each kind reached tessera: the form, the
/// text/plain form, `fetch` and the beacon for a POST.
const POST_WAYS: usize = 4;

/// Every forged request that reached tessera was refused with 403, every
/// POST forgery reached it every way (so the test did attack), and nothing
/// that needs a CORS preflight got past one. Beacons are not awaited by the
/// page, so the log is read until they are all in (bounded).
async fn assert_all_refused(tessera: &Tessera, mark: usize, forgeries: &[Forgery]) {
    let arrived = |logged: &[super::Logged], f: &Forgery| {
        logged
            .iter()
            .filter(|r| r.path == f.path && r.method == f.method)
            .count()
    };
    let logged = poll("every forged POST to reach tessera", STEP, || async {
        let logged = tessera.requests_since(mark);
        forgeries
            .iter()
            .filter(|f| f.method == "POST")
            .all(|f| arrived(&logged, f) >= POST_WAYS)
            .then_some(logged)
    })
    .await;
    for r in &logged {
        if !matches!(r.method.as_str(), "GET" | "HEAD" | "OPTIONS") {
            assert_eq!(r.status, 403, "a forged request was not refused: {r:?}");
        }
    }
    for f in forgeries.iter().filter(|f| f.method != "POST") {
        assert_eq!(
            arrived(&logged, f),
            0,
            "a {} {} went past CORS",
            f.method,
            f.path
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_port_cannot_act_with_a_persons_cookie() {
    bounded(async {
        let rig = Rig::new("cross_site");
        let tessera = &rig.tessera;
        let (status, setup) = tessera.api(
            "POST",
            "/auth/setup",
            None,
            Some(json!({"username": "alice", "password": PASSWORD})),
        );
        assert_eq!(status, 200, "{setup}");
        let admin = setup["token"].as_str().expect("a token").to_owned();
        add_user(tessera, &admin, "bob", PASSWORD);
        add_user(tessera, &admin, "mallory", MALLORY_PASSWORD);
        let alice_data = furnish(tessera, "alice", "bob");
        let bob_data = furnish(tessera, "bob", "alice");

        // alice (an admin) at her laptop, bob on his phone, both signed in.
        let alice = rig.browser("alice", Profile::DESKTOP).await;
        let bob = rig.browser("bob", Profile::PHONE).await;
        alice.sign_in("alice", PASSWORD, "/console").await;
        bob.sign_in("bob", PASSWORD, "/console").await;
        let alice_session = alice.session().await;
        let bob_session = bob.session().await;

        let other = OtherOrigin::start().await;
        assert_ne!(other.base, tessera.base);
        let victims = [&alice_data, &bob_data];
        let before = snapshot(tessera, &admin, &victims);

        // Everything that changes data, from each person's browser.
        for (browser, victim) in [(&alice, &alice_data), (&bob, &bob_data)] {
            let forgeries = victim.data_forgeries();
            let url = other.serve(
                &format!("/{}/data", victim.name),
                attack_page(&tessera.base, &forgeries),
            );
            let mark = tessera.log_mark();
            let report = run_attack(browser, &url).await;
            assert_eq!(
                report["stolen"], true,
                "the page on another port could not read the CSRF cookie, so this test \
                 no longer shows that the token alone would not be enough"
            );
            browser.shot("attack-data").await;
            assert_all_refused(tessera, mark, &forgeries).await;
        }
        let after = snapshot(tessera, &admin, &victims);
        assert_same(&before, &after);

        // Then what would end their sessions.
        for (browser, victim) in [(&alice, &alice_data), (&bob, &bob_data)] {
            let forgeries = victim.session_forgeries();
            let url = other.serve(
                &format!("/{}/session", victim.name),
                attack_page(&tessera.base, &forgeries),
            );
            let mark = tessera.log_mark();
            run_attack(browser, &url).await;
            assert_all_refused(tessera, mark, &forgeries).await;
        }
        let after = snapshot(tessera, &admin, &victims);
        assert_same(&before, &after);
        // Both are still signed in, with the same sessions, and their
        // passwords still work.
        for (browser, session, name) in [
            (&alice, &alice_session, "alice"),
            (&bob, &bob_session, "bob"),
        ] {
            assert_eq!(&browser.session().await, session);
            let me = tessera.api_ok("GET", "/auth/me", session, None);
            assert_eq!(me["user"]["username"], name);
            browser.goto("/console").await;
            browser.assert_path("/console").await;
            assert_eq!(
                browser.text_of("nav a[href='/console/account']").await,
                name
            );
            api_login(tessera, name, PASSWORD);
        }
        bob.shot("still-signed-in").await;

        // Login CSRF: bob's browser, signed in as bob, and a fresh one that
        // has only seen the sign-in page (so it holds a CSRF cookie for the
        // page to steal) are each sent to sign in as mallory.
        let (status, invite) = tessera.api(
            "POST",
            "/auth/users",
            Some(&admin),
            Some(json!({"username": "carol"})),
        );
        assert_eq!(status, 200, "{invite}");
        let carol_code = invite["invite_code"].as_str().expect("a code");
        let users_before = tessera.api_ok("GET", "/auth/users", &admin, None);
        let audit_before = tessera.api_ok("GET", "/api/audit?limit=1000", &admin, None);
        let stranger = rig.browser("stranger", Profile::DESKTOP).await;
        stranger.goto("/auth/login").await;
        assert!(stranger.cookie("csrf_token").await.is_some());
        let url = other.serve(
            "/login",
            login_csrf_page(&tessera.base, "carol", carol_code),
        );
        for browser in [&bob, &stranger] {
            let mark = tessera.log_mark();
            browser.goto(&url).await;
            // The page posts itself away to tessera, which refuses it.
            let logged = poll("the forged sign-ins to reach tessera", STEP, || async {
                let logged = tessera.requests_since(mark);
                let count = |path: &str| {
                    logged
                        .iter()
                        .filter(|r| r.method == "POST" && r.path == path)
                        .count()
                };
                (count("/auth/login") >= 2 && count("/auth/complete") >= 1).then_some(logged)
            })
            .await;
            for r in logged.iter().filter(|r| r.method == "POST") {
                assert_eq!(r.status, 403, "a forged sign-in was not refused: {r:?}");
            }
            poll("the refusal to show", STEP, || async {
                (browser.path().await == "/auth/login").then_some(())
            })
            .await;
            browser.shot("login-csrf-refused").await;
        }
        // bob is still bob.
        assert_eq!(bob.session().await, bob_session);
        bob.goto("/console").await;
        bob.assert_path("/console").await;
        assert_eq!(bob.text_of("nav a[href='/console/account']").await, "bob");
        // The stranger is signed in as nobody.
        assert!(stranger.cookie("taos_session").await.is_none());
        stranger.goto("/console").await;
        stranger.assert_path("/auth/login?next=%2Fconsole").await;
        // mallory never signed in, carol is still invited, nothing logged.
        assert_eq!(
            tessera.api_ok("GET", "/auth/users", &admin, None),
            users_before
        );
        assert_eq!(
            tessera.api_ok("GET", "/api/audit?limit=1000", &admin, None),
            audit_before
        );

        alice.close().await;
        bob.close().await;
        stranger.close().await;
    })
    .await;
}

fn assert_same(before: &BTreeMap<String, Value>, after: &BTreeMap<String, Value>) {
    for (key, was) in before {
        assert_eq!(after.get(key), Some(was), "{key} changed");
    }
}
