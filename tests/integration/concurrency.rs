//! Authorization under concurrent load never refuses a valid request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use crate::helpers::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_tasks_get_zero_spurious_denials() {
    let app = Arc::new(TestApp::on_sled());
    let admin = app.setup_admin().await;
    let mut tokens = vec![admin.clone()];
    for i in 0..3 {
        let name = format!("user{i}");
        tokens.push(app.add_user(&admin, &name, "user-password").await);
    }
    let tokens = Arc::new(tokens);
    let ok = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(3);
    let tasks: Vec<_> = (0..32)
        .map(|task| {
            let (app, tokens, ok) = (app.clone(), tokens.clone(), ok.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                // Bounded by time and by count.
                for i in 0..100_000 {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let token = &tokens[(task + i) % tokens.len()];
                    let path = if task % 4 == 0 && token == &tokens[0] {
                        "/auth/users"
                    } else {
                        "/auth/me"
                    };
                    let r = app.get(path, token).await;
                    if r.status == StatusCode::OK {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failures.push((path, r.status, r.body));
                    }
                }
                failures
            })
        })
        .collect();
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} spurious refusals, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(ok.load(Ordering::Relaxed) > 32, "the load actually ran");
}
