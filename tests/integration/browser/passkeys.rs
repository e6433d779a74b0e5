//! Passkeys in a real browser (issue 14): headless Chromium with
//! WebDriver's virtual authenticator (CTAP2, internal, resident keys, user
//! verification), tessera at `http://localhost:<port>` with `--public-url`
//! saying so. A person registers a passkey from the factor page, signs in
//! with it alone, uses it as the second step after their password, and
//! removes it; afterwards the authenticator's copy signs nobody in.

use std::time::Duration;

use axum::http::Method;
use fantoccini::wd::WebDriverCompatibleCommand;
use serde_json::{json, Value};

use super::{bounded, form, poll, step, Browser, Profile, Rig};

const PASSWORD: &str = "alice-password-1";

/// A WebDriver WebAuthn extension command
/// (`/session/{id}/webauthn/...`), which fantoccini does not name.
#[derive(Debug)]
struct WebAuthn {
    method: Method,
    path: String,
    body: Option<Value>,
}

impl WebDriverCompatibleCommand for WebAuthn {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/webauthn/{}",
            session_id.unwrap_or_default(),
            self.path
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (Method, Option<String>) {
        (
            self.method.clone(),
            self.body.as_ref().map(Value::to_string),
        )
    }
}

/// Give the browser a platform authenticator that keeps resident keys and
/// verifies its user; its id.
async fn add_authenticator(browser: &Browser) -> String {
    let answer = step(
        "adding a virtual authenticator",
        browser.client.issue_cmd(WebAuthn {
            method: Method::POST,
            path: "authenticator".into(),
            body: Some(json!({
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": true,
                "hasUserVerification": true,
                "isUserVerified": true,
            })),
        }),
    )
    .await;
    answer
        .as_str()
        .unwrap_or_else(|| panic!("no authenticator id in {answer}"))
        .to_owned()
}

/// The credentials the virtual authenticator holds.
async fn credentials(browser: &Browser, authenticator: &str) -> Vec<Value> {
    let answer = step(
        "listing the authenticator's credentials",
        browser.client.issue_cmd(WebAuthn {
            method: Method::GET,
            path: format!("authenticator/{authenticator}/credentials"),
            body: None,
        }),
    )
    .await;
    answer.as_array().cloned().unwrap_or_default()
}

/// Press a script's button (or a link) and wait (bounded) until the page
/// it leads to is `to`.
async fn press_and_land(browser: &Browser, button: &str, to: &str) {
    let element = step(
        format_args!("finding {button}"),
        browser.client.find(fantoccini::Locator::Css(button)),
    )
    .await;
    step(format_args!("pressing {button}"), element.click()).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while browser.path().await != to {
        if std::time::Instant::now() > deadline {
            browser.shot("stuck").await;
            panic!(
                "{button} did not lead to {to}; on {}:\n{}",
                browser.path().await,
                browser.text().await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    browser.loaded().await;
}

async fn sign_out(browser: &Browser) {
    browser.submit(&form("/auth/logout")).await;
    assert!(
        browser.cookie("taos_session").await.is_none(),
        "still signed in"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passkeys_register_sign_in_second_step_and_remove() {
    bounded(story("passkeys")).await;
}

async fn story(test: &str) {
    let rig = Rig::at_localhost(test);
    let api = &rig.tessera;
    let (status, body) = api.api(
        "POST",
        "/auth/setup",
        None,
        Some(json!({"username": "alice", "password": PASSWORD})),
    );
    assert_eq!(status, 200, "{body}");
    let alice = rig.browser("alice", Profile::DESKTOP).await;
    let authenticator = add_authenticator(&alice).await;
    alice.sign_in("alice", PASSWORD, "/console").await;

    // Register: the factor page's button (shown only with passkey support).
    alice.goto("/console/account/factors").await;
    alice.assert_text("Passkeys").await;
    alice
        .fill("[data-passkey-box]", "passkey_name", "Laptop")
        .await;
    alice.shot("before-register").await;
    // A first factor comes with recovery codes, shown this once.
    let button = step(
        "finding the register button",
        alice
            .client
            .find(fantoccini::Locator::Css("button[data-passkey='register']")),
    )
    .await;
    step("pressing it", button.click()).await;
    poll("the recovery codes", Duration::from_secs(20), || async {
        alice.present("#recovery-codes li").await.then_some(())
    })
    .await;
    alice.assert_text("They are shown only now.").await;
    let codes = alice.text_of("#recovery-codes").await;
    assert_eq!(codes.lines().count(), 10, "{codes}");
    alice.shot("recovery-codes").await;
    press_and_land(
        &alice,
        "#recovery-codes-saved",
        "/console/account/factors?ok=passkey_added",
    )
    .await;
    alice.assert_text("Passkey registered.").await;
    alice.assert_text("Passkey: Laptop").await;
    alice.shot("registered").await;
    let held = credentials(&alice, &authenticator).await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(
        held[0]["isResidentCredential"],
        json!(true),
        "a discoverable credential: {held:?}"
    );
    let token = alice.session().await;
    let listed = api.api_ok("GET", "/auth/factors", &token, None);
    let passkey = listed["factors"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["kind"] == "passkey"))
        .unwrap_or_else(|| panic!("no passkey listed: {listed}"))
        .clone();
    assert_eq!(passkey["name"], "Laptop");
    assert!(passkey["last_used_at"].is_null(), "{passkey}");
    let id = passkey["id"].as_str().expect("a factor id").to_owned();

    // Sign in with the passkey alone: no username, no password.
    sign_out(&alice).await;
    alice.goto("/auth/login").await;
    alice.shot("sign-in-offers-passkey").await;
    press_and_land(&alice, "button[data-passkey='sign-in']", "/console").await;
    let token = alice.session().await;
    let me = api.api_ok("GET", "/auth/me", &token, None);
    assert_eq!(me["user"]["username"], "alice");
    let audit = api.api_ok("GET", "/api/audit", &token, None).to_string();
    assert!(
        audit.contains("\"method\":\"passkey\""),
        "the passkey sign-in is audited: {audit}"
    );
    // Established by passkey, so sensitive changes need no more: an admin
    // action that asks for a recent factor goes through.
    let (status, body) = api.api(
        "POST",
        "/auth/settings/second-factor",
        Some(&token),
        Some(json!({"required": "nobody"})),
    );
    assert_eq!(status, 200, "a passkey session is a recent factor: {body}");

    // The password now leads to the second step, which the passkey passes.
    sign_out(&alice).await;
    alice
        .sign_in("alice", PASSWORD, "/auth/second-factor")
        .await;
    alice.assert_text("Use your passkey").await;
    alice.shot("second-step").await;
    press_and_land(&alice, "button[data-passkey='verify']", "/console").await;
    let token = alice.session().await;
    api.api_ok("GET", "/auth/me", &token, None);

    // Remove it (a step-up operation: the second step just verified one).
    alice.goto("/console/account/factors").await;
    let last_used = api.api_ok("GET", "/auth/factors", &token, None);
    assert!(
        last_used["factors"][0]["last_used_at"].is_i64(),
        "{last_used}"
    );
    alice
        .submit_confirmed(
            &form(&format!("/console/account/factors/{id}/remove")),
            true,
        )
        .await;
    alice
        .assert_path("/console/account/factors?ok=removed")
        .await;
    alice.assert_no_text("Passkey: Laptop").await;
    alice.shot("removed").await;
    // The last factor gone, its recovery codes go with it.
    let listed = api.api_ok("GET", "/auth/factors", &token, None);
    assert_eq!(listed["factors"], json!([]), "{listed}");

    // The authenticator still holds its copy; it signs nobody in now.
    sign_out(&alice).await;
    alice.goto("/auth/login").await;
    let button = step(
        "finding the passkey button",
        alice
            .client
            .find(fantoccini::Locator::Css("button[data-passkey='sign-in']")),
    )
    .await;
    step("pressing it", button.click()).await;
    poll("the refusal to show", Duration::from_secs(20), || async {
        alice
            .text()
            .await
            .contains("That passkey was not accepted")
            .then_some(())
    })
    .await;
    alice.assert_path("/auth/login").await;
    assert!(alice.cookie("taos_session").await.is_none());
    alice.shot("removed-passkey-refused").await;
    alice.close().await;
}
