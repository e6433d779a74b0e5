//! Secrets stay out of the logs: passwords, invite codes and tokens never
//! appear, even at the most verbose level.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::json;
use tracing_subscriber::fmt::MakeWriter;

use crate::helpers::TestApp;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn no_credential_reaches_the_log() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let invite = app
        .post("/auth/users", &admin, json!({"username": "bob"}))
        .await;
    let code = invite.body["invite_code"].as_str().unwrap().to_owned();
    let pending = app.login("bob", &code).await.token();
    let bob = app
        .anon_post(
            "/auth/complete",
            json!({"username": "bob", "invite_code": code, "password": "bob-secret-pw"}),
        )
        .await
        .token();
    app.login("bob", "wrong-secret-pw").await;
    app.post(
        "/auth/users/bob/password",
        &bob,
        json!({"current": "bob-secret-pw", "new": "bob-newer-pw"}),
    )
    .await;
    app.get("/auth/me", "garbage-token-value").await;

    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("login failed"), "the capture works: {log}");
    for secret in [
        crate::helpers::ADMIN_PASSWORD,
        "bob-secret-pw",
        "wrong-secret-pw",
        "bob-newer-pw",
        code.as_str(),
        admin.as_str(),
        pending.as_str(),
        bob.as_str(),
        "garbage-token-value",
    ] {
        assert!(!log.contains(secret), "{secret:?} leaked into the log");
    }
}
