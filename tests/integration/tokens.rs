//! Bad tokens in every form are refused with 401 and a clear error, never a
//! 500; a policy limit hit is a 503, never a silent 403.

use axum::http::{Method, StatusCode};
use base64::engine::general_purpose::URL_SAFE;
use base64::Engine;
use biscuit_auth::format::schema;
use biscuit_auth::macros::block;
use biscuit_auth::{Biscuit, KeyPair};
use proptest::prelude::*;
use prost::Message;
use serde_json::json;
use tessera::authz::keys::RootKeys;
use tessera::authz::tokens;

use crate::helpers::{Auth, TestApp};

fn decode(token: &str) -> schema::Biscuit {
    schema::Biscuit::decode(URL_SAFE.decode(token).unwrap().as_slice()).unwrap()
}

fn encode(token: &schema::Biscuit) -> String {
    URL_SAFE.encode(token.encode_to_vec())
}

async fn assert_unauthorized(app: &TestApp, token: &str, what: &str) {
    for auth in [Auth::Bearer(token), Auth::Cookie(token)] {
        let r = app.call(Method::GET, "/auth/me", auth, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.body);
        assert!(!r.error().is_empty(), "{what}: the error says why");
    }
}

#[tokio::test]
async fn forged_and_damaged_tokens_are_401() {
    let app = TestApp::new();
    let good = app.setup_admin().await;
    assert_eq!(app.get("/auth/me", &good).await.status, StatusCode::OK);

    // Tampered payload: the authority block's bytes changed, signature kept.
    let mut tampered = decode(&good);
    let last = tampered.authority.block.len() - 1;
    tampered.authority.block[last] ^= 0x01;
    assert_unauthorized(&app, &encode(&tampered), "tampered authority").await;

    // An attenuated token with its restricting block removed.
    let public = app.state.authz.keys().public(None).unwrap();
    let biscuit = Biscuit::from_base64(&good, public).unwrap();
    let narrowed = biscuit
        .append(block!(r#"check if operation("auth:users:list");"#))
        .unwrap()
        .to_base64()
        .unwrap();
    assert_eq!(
        app.get("/auth/me", &narrowed).await.status,
        StatusCode::FORBIDDEN
    );
    let mut stripped = decode(&narrowed);
    stripped.blocks.clear();
    assert_unauthorized(&app, &encode(&stripped), "block removed").await;

    // Signed by a key this server does not know, or claiming an unknown key id.
    let stranger = RootKeys::ephemeral();
    let foreign = tokens::mint_session(&stranger, "x", "y", i64::MAX / 4).unwrap();
    assert_unauthorized(&app, &foreign, "wrong root key").await;
    let mut unknown_id = decode(&good);
    unknown_id.root_key_id = Some(99);
    assert_unauthorized(&app, &encode(&unknown_id), "unknown key id").await;

    // A real signature over claims that are not ours to make.
    let kp = KeyPair::new();
    let no_context = Biscuit::builder()
        .fact("user(\"x\")")
        .unwrap()
        .build(&kp)
        .unwrap();
    assert_unauthorized(&app, &no_context.to_base64().unwrap(), "foreign shape").await;

    // Expired: a correctly signed token past its expiry.
    let expired = tokens::mint_session(app.state.authz.keys(), "x", "y", 1_000).unwrap();
    let r = app.get("/auth/me", &expired).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error(), "token expired");

    // A valid signature for a session that was never created.
    let ghost = app
        .state
        .authz
        .mint_session("nobody", "no-session", i64::MAX / 4)
        .unwrap();
    assert_unauthorized(&app, &ghost, "unknown session").await;

    // Garbage, empty and huge.
    assert_unauthorized(&app, "not-a-token", "garbage").await;
    assert_unauthorized(&app, &URL_SAFE.encode([7u8; 300]), "random bytes").await;
    let r = app
        .call(
            Method::GET,
            "/auth/me",
            Auth::RawAuthorization("Bearer "),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = app
        .call(Method::GET, "/auth/me", Auth::Cookie(""), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = app.call(Method::GET, "/auth/me", Auth::None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error(), "authentication required");
    let huge = "A".repeat(64 * 1024);
    assert_unauthorized(&app, &huge, "64 KiB header").await;
    let r = app
        .call(
            Method::GET,
            "/auth/me",
            Auth::RawAuthorization("Basic YWxpY2U6cHc="),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_holder_block_that_exhausts_the_authorizer_is_503_not_403() {
    let app = TestApp::with_config(|c| c.authorizer_limits.max_facts = 50);
    let good = app.setup_admin().await;
    let public = app.state.authz.keys().public(None).unwrap();
    let biscuit = Biscuit::from_base64(&good, public).unwrap();
    let mut code = String::new();
    for i in 0..60 {
        code.push_str(&format!("filler({i});\n"));
    }
    let heavy = biscuit
        .append(biscuit_auth::BlockBuilder::new().code(code).unwrap())
        .unwrap()
        .to_base64()
        .unwrap();
    let r = app.get("/auth/me", &heavy).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert!(r.headers.get("retry-after").is_some());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Flipping, truncating or extending a valid token never gets a different
    /// token past verification, and never causes a server error.
    #[test]
    fn mutated_tokens_are_refused(flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
                                  cut in any::<prop::sample::Index>(),
                                  extra in proptest::collection::vec(any::<u8>(), 0..16),
                                  mode in 0u8..3) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let app = TestApp::new();
            let good = app.setup_admin().await;
            let mut bytes = URL_SAFE.decode(&good).unwrap();
            match mode {
                0 => for (at, x) in &flips { let i = at.index(bytes.len()); bytes[i] ^= x; },
                1 => bytes.truncate(cut.index(bytes.len())),
                _ => bytes.extend_from_slice(&extra),
            }
            let mutated = URL_SAFE.encode(&bytes);
            prop_assume!(mutated != good);
            let r = app.get("/auth/me", &mutated).await;
            if r.status == StatusCode::OK {
                // Protobuf tolerates some envelope changes (an unknown trailing
                // field): then every signed byte must be what was signed.
                let public = app.state.authz.keys().public(None).unwrap();
                let original = Biscuit::from_base64(&good, public).unwrap();
                let accepted = Biscuit::from_base64(&mutated, public).unwrap();
                prop_assert_eq!(original.print(), accepted.print());
                prop_assert_eq!(original.revocation_identifiers(), accepted.revocation_identifiers());
            } else {
                prop_assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
            }
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn public_keys_verify_tokens_offline() {
    let app = TestApp::new();
    let token = app.setup_admin().await;
    let r = app.call(Method::GET, "/auth/keys", Auth::None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let key = &r.body["keys"][0];
    assert_eq!(key["algorithm"], "ed25519");
    assert_eq!(key["active"], true);
    let public = biscuit_auth::PublicKey::from_bytes_hex(
        key["public_key"].as_str().unwrap(),
        biscuit_auth::builder::Algorithm::Ed25519,
    )
    .unwrap();
    let biscuit = Biscuit::from_base64(&token, public).unwrap();
    assert_eq!(
        biscuit.root_key_id(),
        Some(key["id"].as_u64().unwrap() as u32)
    );
    let _ = json!({});
}
