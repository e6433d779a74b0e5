//! Passkeys over HTTP (issue 14), with a software authenticator: a P-256
//! key that answers WebAuthn ceremonies as a platform authenticator does
//! (attestation "none", user present and verified), so the server's
//! checks run for real (challenge, origin, relying party, signature)
//! without a browser. The browser test (`browser::passkeys`) drives the
//! same routes from the pages with Chromium's virtual authenticator.

use axum::http::StatusCode;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::*;

const BOB_PASSWORD: &str = "bob-password-123";
/// The default `--public-url`, which the test app is configured with.
const ORIGIN: &str = "http://localhost:7700";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Minimal CBOR, as much as an attestation object and a COSE key need.
fn head(out: &mut Vec<u8>, major: u8, len: u64) {
    let major = major << 5;
    match len {
        0..=23 => out.push(major | len as u8),
        24..=0xff => out.extend([major | 24, len as u8]),
        _ => {
            out.push(major | 25);
            out.extend((len as u16).to_be_bytes());
        }
    }
}

fn int(out: &mut Vec<u8>, value: i64) {
    if value >= 0 {
        head(out, 0, value as u64);
    } else {
        head(out, 1, (-1 - value) as u64);
    }
}

fn bytes(out: &mut Vec<u8>, value: &[u8]) {
    head(out, 2, value.len() as u64);
    out.extend_from_slice(value);
}

fn text(out: &mut Vec<u8>, value: &str) {
    head(out, 3, value.len() as u64);
    out.extend_from_slice(value.as_bytes());
}

/// A passkey held by a software authenticator.
pub struct SoftKey {
    key: SigningKey,
    id: Vec<u8>,
    handle: Vec<u8>,
    counter: u32,
}

impl SoftKey {
    fn new() -> Self {
        Self {
            key: SigningKey::random(&mut rand::rngs::OsRng),
            id: (0..32).map(|_| rand::random::<u8>()).collect(),
            handle: Vec::new(),
            counter: 0,
        }
    }

    /// The public key as COSE (EC2, P-256, ES256).
    fn cose(&self) -> Vec<u8> {
        let point = self.key.verifying_key().to_encoded_point(false);
        let mut out = Vec::new();
        head(&mut out, 5, 5);
        int(&mut out, 1);
        int(&mut out, 2);
        int(&mut out, 3);
        int(&mut out, -7);
        int(&mut out, -1);
        int(&mut out, 1);
        int(&mut out, -2);
        bytes(&mut out, &point.x().expect("x")[..]);
        int(&mut out, -3);
        bytes(&mut out, &point.y().expect("y")[..]);
        out
    }

    /// Authenticator data: the relying party id's hash, flags (user
    /// present and verified, and attested credential data when
    /// registering), the counter.
    fn auth_data(&mut self, rp_id: &str, attest: bool) -> Vec<u8> {
        self.counter += 1;
        let mut out = Sha256::digest(rp_id.as_bytes()).to_vec();
        out.push(if attest { 0x45 } else { 0x05 });
        out.extend(self.counter.to_be_bytes());
        if attest {
            out.extend([0u8; 16]);
            out.extend((self.id.len() as u16).to_be_bytes());
            out.extend(&self.id);
            out.extend(self.cose());
        }
        out
    }

    fn client_data(kind: &str, challenge: &str, origin: &str) -> Vec<u8> {
        json!({"type": kind, "challenge": challenge, "origin": origin, "crossOrigin": false})
            .to_string()
            .into_bytes()
    }

    /// Answer `navigator.credentials.create()` for `options` (the
    /// server's `publicKey`) as a page at `origin` would get it.
    fn register(&mut self, options: &Value, origin: &str) -> Value {
        let challenge = options["challenge"].as_str().expect("a challenge");
        let rp_id = options["rp"]["id"].as_str().expect("an rp id").to_owned();
        self.handle = URL_SAFE_NO_PAD
            .decode(options["user"]["id"].as_str().expect("a user handle"))
            .expect("base64url");
        let client = Self::client_data("webauthn.create", challenge, origin);
        let auth = self.auth_data(&rp_id, true);
        let mut attestation = Vec::new();
        head(&mut attestation, 5, 3);
        text(&mut attestation, "fmt");
        text(&mut attestation, "none");
        text(&mut attestation, "attStmt");
        head(&mut attestation, 5, 0);
        text(&mut attestation, "authData");
        bytes(&mut attestation, &auth);
        json!({
            "id": b64(&self.id),
            "rawId": b64(&self.id),
            "type": "public-key",
            "response": {
                "attestationObject": b64(&attestation),
                "clientDataJSON": b64(&client),
            },
            "extensions": {},
        })
    }

    /// Answer `navigator.credentials.get()` for `options` as a page at
    /// `origin` would get it.
    fn assert(&mut self, options: &Value, origin: &str) -> Value {
        let challenge = options["challenge"].as_str().expect("a challenge");
        let rp_id = options["rpId"].as_str().expect("an rp id").to_owned();
        let client = Self::client_data("webauthn.get", challenge, origin);
        let auth = self.auth_data(&rp_id, false);
        let mut signed = auth.clone();
        signed.extend(Sha256::digest(&client));
        let signature: Signature = self.key.sign(&signed);
        json!({
            "id": b64(&self.id),
            "rawId": b64(&self.id),
            "type": "public-key",
            "response": {
                "authenticatorData": b64(&auth),
                "clientDataJSON": b64(&client),
                "signature": b64(signature.to_der().as_bytes()),
                "userHandle": b64(&self.handle),
            },
            "extensions": {},
        })
    }
}

/// Register a passkey named `name` at `token`'s session; its factor id.
async fn register(app: &TestApp, token: &str, key: &mut SoftKey, name: &str) -> String {
    let start = app
        .post("/auth/factors/passkey/start", token, json!({}))
        .await;
    assert_eq!(start.status, StatusCode::OK, "{}", start.body);
    let credential = key.register(&start.body["publicKey"], ORIGIN);
    let done = app
        .post(
            "/auth/factors/passkey/finish",
            token,
            json!({"ceremony": start.body["ceremony"], "name": name, "credential": credential}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    if !name.is_empty() {
        assert_eq!(done.body["name"], name);
    }
    done.body["id"].as_str().expect("an id").to_owned()
}

#[tokio::test]
async fn a_first_passkey_comes_with_recovery_codes_once() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let bob = app.add_user(&admin, "bob", BOB_PASSWORD).await;
    let mut key = SoftKey::new();
    let start = app
        .post("/auth/factors/passkey/start", &bob, json!({}))
        .await;
    let credential = key.register(&start.body["publicKey"], ORIGIN);
    let done = app
        .post(
            "/auth/factors/passkey/finish",
            &bob,
            json!({"ceremony": start.body["ceremony"], "name": "Phone", "credential": credential}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let codes: Vec<String> = done.body["recovery_codes"]
        .as_array()
        .unwrap_or_else(|| panic!("no recovery codes: {}", done.body))
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    // A second passkey issues none (the first ones still stand).
    let mut spare = SoftKey::new();
    let start = app
        .post("/auth/factors/passkey/start", &bob, json!({}))
        .await;
    let credential = spare.register(&start.body["publicKey"], ORIGIN);
    let done = app
        .post(
            "/auth/factors/passkey/finish",
            &bob,
            json!({"ceremony": start.body["ceremony"], "credential": credential}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.get("recovery_codes").is_none(), "{}", done.body);

    // Both passkeys lost: a recovery code is the second step.
    let first = app.login("bob", BOB_PASSWORD).await;
    assert_eq!(
        first.body["factors"],
        json!(["passkey", "recovery_code"]),
        "{}",
        first.body
    );
    let r = app
        .post(
            "/auth/second-factor",
            &first.token(),
            json!({"code": codes[0]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(session_record(&app, &r.token())["method"], "recovery_code");
}

/// Sign in with the passkey alone, its answer made at `origin`.
async fn sign_in_at(app: &TestApp, key: &mut SoftKey, origin: &str) -> Response {
    let start = app.anon_post("/auth/passkey/start", json!({})).await;
    assert_eq!(start.status, StatusCode::OK, "{}", start.body);
    let credential = key.assert(&start.body["publicKey"], origin);
    app.anon_post(
        "/auth/passkey/finish",
        json!({"ceremony": start.body["ceremony"], "credential": credential}),
    )
    .await
}

async fn sign_in(app: &TestApp, key: &mut SoftKey) -> Response {
    sign_in_at(app, key, ORIGIN).await
}

/// The second step (or a step-up) with the passkey at `token`'s session.
async fn second_step(app: &TestApp, token: &str, key: &mut SoftKey) -> Response {
    let start = app
        .post("/auth/second-factor/passkey/start", token, json!({}))
        .await;
    assert_eq!(start.status, StatusCode::OK, "{}", start.body);
    let credential = key.assert(&start.body["publicKey"], ORIGIN);
    app.post(
        "/auth/second-factor",
        token,
        json!({"ceremony": start.body["ceremony"], "credential": credential}),
    )
    .await
}

/// The session record behind a session token.
fn session_record(app: &TestApp, token: &str) -> Value {
    use tessera::authz::tokens::{verify, Claims};
    let claims = verify(app.state.authz.keys(), token).unwrap().claims;
    let Claims::Session { session, .. } = claims else {
        panic!("not a session token")
    };
    let bytes = app
        .state
        .store
        .get(format!("session/{session}").as_bytes())
        .unwrap()
        .expect("the session record");
    serde_json::from_slice(&bytes).unwrap()
}

/// Make the session behind `token` have verified its last factor `secs`
/// ago.
fn age_factor(app: &TestApp, token: &str, secs: i64) {
    use tessera::authz::tokens::{verify, Claims};
    let claims = verify(app.state.authz.keys(), token).unwrap().claims;
    let Claims::Session { session, .. } = claims else {
        panic!("not a session token")
    };
    let key = format!("session/{session}");
    let mut record = session_record(app, token);
    record["factor_at"] = json!(tessera::domain::now() - secs);
    let mut tx = tessera::store::Transaction::durable();
    tx.put(key, serde_json::to_vec(&record).unwrap());
    app.state.store.commit(&tx).unwrap();
}

/// How many credential index entries the store holds.
fn indexed(app: &TestApp) -> usize {
    app.state
        .store
        .scan(b"pkcred/", None, usize::MAX)
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_passkey_signs_in_alone_as_a_passkey_session() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let mut key = SoftKey::new();
    let id = register(&app, &admin, &mut key, "Laptop").await;
    assert_eq!(indexed(&app), 1);

    let listed = app.get("/auth/factors", &admin).await;
    let factor = &listed.body["factors"][0];
    assert_eq!(factor["kind"], "passkey", "{}", listed.body);
    assert_eq!(factor["id"], id.as_str());
    assert_eq!(factor["name"], "Laptop");
    assert!(factor["created_at"].is_i64());
    assert!(factor["last_used_at"].is_null());

    let signed = sign_in(&app, &mut key).await;
    assert_eq!(signed.status, StatusCode::OK, "{}", signed.body);
    // The shape of a password sign-in's answer, and its cookie.
    assert_eq!(signed.body["ok"], json!(true));
    assert_eq!(signed.body["user"]["username"], "alice", "{}", signed.body);
    assert!(signed.body.get("needs_second_factor").is_none());
    assert!(signed.set_cookie().is_some());
    let token = signed.token();
    let record = session_record(&app, &token);
    assert_eq!(record["method"], "passkey", "{record}");
    assert_eq!(record["stage"], "complete", "{record}");
    assert!(record["factor_at"].is_i64(), "{record}");
    assert_eq!(app.get("/auth/me", &token).await.status, StatusCode::OK);
    // A passkey is a second factor: a step-up operation goes through at
    // once, and is refused once the factor is old.
    let r = app
        .post(
            "/auth/settings/second-factor",
            &token,
            json!({"required": "nobody"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    age_factor(&app, &token, 20 * 60);
    let r = app
        .post(
            "/auth/settings/second-factor",
            &token,
            json!({"required": "nobody"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);

    let listed = app.get("/auth/factors", &token).await;
    assert!(listed.body["factors"][0]["last_used_at"].is_i64());
    let audit = app.get("/api/audit", &token).await;
    assert!(
        audit.text.contains("\"kind\":\"passkey\""),
        "registration audited: {}",
        audit.text
    );
    assert!(
        audit.text.contains("\"method\":\"passkey\""),
        "sign-in audited: {}",
        audit.text
    );
}

#[tokio::test]
async fn an_answer_made_for_another_origin_is_refused() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let mut key = SoftKey::new();

    // Registration answered at another origin.
    let start = app
        .post("/auth/factors/passkey/start", &admin, json!({}))
        .await;
    let credential = key.register(&start.body["publicKey"], "http://localhost:9999");
    let done = app
        .post(
            "/auth/factors/passkey/finish",
            &admin,
            json!({"ceremony": start.body["ceremony"], "credential": credential}),
        )
        .await;
    assert_eq!(done.status, StatusCode::BAD_REQUEST, "{}", done.body);
    assert!(done.error().contains("another site"), "{}", done.body);
    assert!(done.error().contains(ORIGIN), "{}", done.body);
    assert_eq!(indexed(&app), 0);

    register(&app, &admin, &mut key, "Laptop").await;
    for origin in ["http://evil.example", "https://localhost:7700"] {
        let r = sign_in_at(&app, &mut key, origin).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{origin}: {}", r.body);
        assert!(r.error().contains("another site"), "{}", r.body);
        assert!(r.set_cookie().is_none());
    }
    let audit = app.get("/api/audit", &admin).await;
    assert!(audit.text.contains("auth.login_failed"), "{}", audit.text);
    // At the right origin it works.
    let r = sign_in(&app, &mut key).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn a_ceremony_works_once_and_only_for_its_own_challenge() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let mut key = SoftKey::new();
    register(&app, &admin, &mut key, "").await;
    let listed = app.get("/auth/factors", &admin).await;
    assert_eq!(listed.body["factors"][0]["name"], "Passkey");

    let start = app.anon_post("/auth/passkey/start", json!({})).await;
    let credential = key.assert(&start.body["publicKey"], ORIGIN);
    let answer = json!({"ceremony": start.body["ceremony"], "credential": credential});
    let first = app.anon_post("/auth/passkey/finish", answer.clone()).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let replay = app.anon_post("/auth/passkey/finish", answer).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST, "{}", replay.body);
    assert!(replay.error().contains("start again"), "{}", replay.body);

    // An answer signed for one challenge, sent with another ceremony.
    let one = app.anon_post("/auth/passkey/start", json!({})).await;
    let other = app.anon_post("/auth/passkey/start", json!({})).await;
    let credential = key.assert(&one.body["publicKey"], ORIGIN);
    let r = app
        .anon_post(
            "/auth/passkey/finish",
            json!({"ceremony": other.body["ceremony"], "credential": credential}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);

    // A key nobody registered.
    let mut stranger = SoftKey::new();
    stranger.handle = key.handle.clone();
    let r = sign_in(&app, &mut stranger).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);

    // Malformed answers are bad requests.
    let r = app
        .anon_post(
            "/auth/passkey/finish",
            json!({"ceremony": "x", "credential": {"id": 1}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
}

#[tokio::test]
async fn failed_passkey_sign_ins_count_toward_the_login_limits() {
    let app = TestApp::with_config(|c| c.rate_limit.per_account = 3);
    let admin = app.setup_admin().await;
    let mut key = SoftKey::new();
    register(&app, &admin, &mut key, "Laptop").await;
    for _ in 0..3 {
        let r = sign_in_at(&app, &mut key, "http://evil.example").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    }
    let r = sign_in(&app, &mut key).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    // The account's limit, shared with passwords.
    let r = app.login("alice", ADMIN_PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
}

#[tokio::test]
async fn a_passkey_is_a_second_step_after_the_password() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let bob = app.add_user(&admin, "bob", BOB_PASSWORD).await;
    let mut key = SoftKey::new();
    register(&app, &bob, &mut key, "Phone").await;

    let first = app.login("bob", BOB_PASSWORD).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["needs_second_factor"], json!(true));
    assert_eq!(first.body["factors"], json!(["passkey", "recovery_code"]));
    let halfway = first.token();
    assert_eq!(
        app.get("/auth/me", &halfway).await.status,
        StatusCode::FORBIDDEN
    );
    // The page asks for what bob has: no authenticator app.
    let page = app.get("/auth/second-factor", &halfway).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert_page_says(
        &page.text,
        "Use your passkey, or enter one of your recovery codes.",
        "authenticator app",
    );
    let done = second_step(&app, &halfway, &mut key).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.body["user"]["username"], "bob", "{}", done.body);
    assert!(done.set_cookie().is_some());
    let token = done.token();
    assert_eq!(session_record(&app, &token)["method"], "passkey");
    assert_eq!(app.get("/auth/me", &token).await.status, StatusCode::OK);
    // The halfway token is spent.
    assert_eq!(
        app.get("/auth/me", &halfway).await.status,
        StatusCode::UNAUTHORIZED
    );

    // A code where none exists is still refused, and a passkey started at
    // one session cannot finish at another.
    let other = app.login("bob", BOB_PASSWORD).await.token();
    let start = app
        .post("/auth/second-factor/passkey/start", &other, json!({}))
        .await;
    let credential = key.assert(&start.body["publicKey"], ORIGIN);
    let again = app.login("bob", BOB_PASSWORD).await.token();
    let r = app
        .post(
            "/auth/second-factor",
            &again,
            json!({"ceremony": start.body["ceremony"], "credential": credential}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
}

#[tokio::test]
async fn registering_and_removing_passkeys_need_a_recent_factor() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let bob = app.add_user(&admin, "bob", BOB_PASSWORD).await;
    let mut first = SoftKey::new();
    // No factor yet: no step-up asked.
    let id = register(&app, &bob, &mut first, "Phone").await;
    // Just verified by registering.
    let mut second = SoftKey::new();
    register(&app, &bob, &mut second, "Key").await;
    assert_eq!(indexed(&app), 2);

    age_factor(&app, &bob, 20 * 60);
    let r = app.delete(&format!("/auth/factors/{id}"), &bob).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = app
        .post("/auth/factors/passkey/start", &bob, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);

    // A step-up with either passkey opens them again.
    let up = second_step(&app, &bob, &mut second).await;
    assert_eq!(up.status, StatusCode::OK, "{}", up.body);
    assert!(up.body["factor_verified_at"].is_i64(), "{}", up.body);
    let r = app.delete(&format!("/auth/factors/{id}"), &bob).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(indexed(&app), 1);
    let listed = app.get("/auth/factors", &bob).await;
    let kinds: Vec<&Value> = listed.body["factors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| &f["kind"])
        .collect();
    assert_eq!(kinds, [&json!("passkey"), &json!("recovery_codes")]);
    assert_eq!(listed.body["factors"][0]["name"], "Key");
    // The removed one signs nobody in.
    let r = sign_in(&app, &mut first).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    let audit = app.get("/api/audit", &admin).await;
    assert!(audit.text.contains("auth.factor_removed"), "{}", audit.text);
}

#[tokio::test]
async fn a_reset_and_a_deletion_take_the_passkeys_along() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let bob = app.add_user(&admin, "bob", BOB_PASSWORD).await;
    let carol = app.add_user(&admin, "carol", "carol-password-1").await;
    let mut bobs = SoftKey::new();
    let mut carols = SoftKey::new();
    register(&app, &bob, &mut bobs, "Phone").await;
    register(&app, &carol, &mut carols, "Phone").await;
    assert_eq!(indexed(&app), 2);

    let reset = app.post("/auth/users/bob/reset", &admin, json!({})).await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.body);
    assert_eq!(indexed(&app), 1);
    let r = sign_in(&app, &mut bobs).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    let audit = app.get("/api/audit", &admin).await;
    assert!(
        audit.text.contains("\"factors_cleared\":true"),
        "{}",
        audit.text
    );

    let r = app.delete("/auth/users/carol", &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(indexed(&app), 0);
    assert!(app
        .state
        .store
        .scan(b"factors/", None, usize::MAX)
        .unwrap()
        .is_empty());
    let r = sign_in(&app, &mut carols).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
}

/// `tessera users reset-factors` clears passkeys (and their index) on a
/// stopped server, like TOTP.
#[test]
fn the_offline_reset_clears_passkeys() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let server = start(dir.path());
    let (status, body) = http(
        server.addr,
        "POST",
        "/auth/setup",
        None,
        Some(&json!({"username": "alice", "password": ADMIN_PASSWORD})),
    );
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    let mut key = SoftKey::new();
    let (_, start_body) = http(
        server.addr,
        "POST",
        "/auth/factors/passkey/start",
        Some(&token),
        None,
    );
    // The binary's relying party is the default public URL's.
    let credential = key.register(&start_body["publicKey"], ORIGIN);
    let (status, body) = http(
        server.addr,
        "POST",
        "/auth/factors/passkey/finish",
        Some(&token),
        Some(&json!({"ceremony": start_body["ceremony"], "credential": credential})),
    );
    assert_eq!(status, 200, "{body}");
    let passkey_sign_in = |addr, key: &mut SoftKey| {
        let (_, start) = http(addr, "POST", "/auth/passkey/start", None, None);
        let credential = key.assert(&start["publicKey"], ORIGIN);
        http(
            addr,
            "POST",
            "/auth/passkey/finish",
            None,
            Some(&json!({"ceremony": start["ceremony"], "credential": credential})),
        )
    };
    let (status, body) = passkey_sign_in(server.addr, &mut key);
    assert_eq!(status, 200, "{body}");
    stop(server);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["users", "reset-factors", "--data", &data, "alice"])
        .env("RUST_LOG", "warn")
        .env_remove("TESSERA_DATA")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let server = start(dir.path());
    let (status, body) = passkey_sign_in(server.addr, &mut key);
    assert_eq!(status, 401, "{body}");
    let login = json!({"username": "alice", "password": ADMIN_PASSWORD});
    let (status, body) = http(server.addr, "POST", "/auth/login", None, Some(&login));
    assert_eq!(status, 200, "{body}");
    assert!(body.get("needs_second_factor").is_none(), "{body}");
    stop(server);
}

/// Where second factors are required, a person without one may enrol a
/// passkey from the session that can do nothing else, which then is a
/// session in full.
#[tokio::test]
async fn a_passkey_completes_a_session_that_had_to_enrol() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    app.add_user(&admin, "bob", BOB_PASSWORD).await;
    let r = app
        .post(
            "/auth/settings/second-factor",
            &admin,
            json!({"required": "everyone"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let login = app.login("bob", BOB_PASSWORD).await;
    assert_eq!(login.body["needs_enrolment"], json!(true), "{}", login.body);
    let token = login.token();
    assert_eq!(
        app.get("/api/agents", &token).await.status,
        StatusCode::FORBIDDEN
    );
    let mut key = SoftKey::new();
    register(&app, &token, &mut key, "Phone").await;
    assert_eq!(session_record(&app, &token)["stage"], "complete");
    assert_eq!(app.get("/api/agents", &token).await.status, StatusCode::OK);
}

/// `--public-url` must name a host the browser can bind passkeys to: an
/// IP address is refused at start-up, in words.
#[test]
fn a_public_url_without_a_host_name_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = command(&dir.path().join("data"))
        .args(["--public-url", "http://127.0.0.1:7700"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: a server that started anyway would never exit.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("tessera started with an IP address as its public URL");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut said = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut said).unwrap();
    assert!(said.contains("--public-url"), "{said}");
    assert!(said.contains("host name"), "{said}");
}
