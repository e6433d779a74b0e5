//! Crash safety: the real binary is killed with SIGKILL at random moments
//! while a client writes; after each restart every write that was
//! acknowledged with a 2xx is there, and the store opens cleanly.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::json;

use crate::helpers::{http, start, try_http};

/// What a write created, to look for after the restart.
#[derive(Debug, Clone)]
enum Acked {
    User(String),
    Secret(String),
    Message(String),
    Grant(String),
}

/// One write of each kind in turn; only 2xx answers are recorded.
fn write(addr: SocketAddr, token: &str, conversation: &str, n: usize) -> Option<Acked> {
    let http = |method: &str, path: &str, body: &serde_json::Value| {
        try_http(addr, method, path, Some(token), Some(body))
            .map(|(s, _)| s)
            .unwrap_or(0)
    };
    match n % 4 {
        0 => {
            let name = format!("u{n}");
            (http("POST", "/auth/users", &json!({"username": name})) == 200)
                .then_some(Acked::User(name))
        }
        1 => {
            let name = format!("S{n}");
            (http("POST", "/api/secrets", &json!({"name": name, "value": "v"})) == 200)
                .then_some(Acked::Secret(name))
        }
        2 => {
            let content = format!("message {n}");
            let body = json!({"channel_id": conversation, "content": content});
            (http("POST", "/api/chat/messages", &body) == 200).then_some(Acked::Message(content))
        }
        _ => {
            // Share with the user made by the previous user-write, if any.
            let name = format!("u{}", n - 3);
            let body = json!({"user": name, "level": "view"});
            (http("POST", "/api/agents/helper/shares", &body) == 200).then_some(Acked::Grant(name))
        }
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let (_, setup) = http(
        server.addr,
        "POST",
        "/auth/setup",
        None,
        Some(&json!({"username": "alice", "password": "alice-password"})),
    );
    let token = setup["token"].as_str().unwrap().to_owned();
    http(
        server.addr,
        "POST",
        "/api/agents",
        Some(&token),
        Some(&json!({"name": "helper"})),
    );
    let (_, conv) = http(
        server.addr,
        "POST",
        "/api/chat/channels",
        Some(&token),
        Some(&json!({"agent": "helper"})),
    );
    let conversation = conv["id"].as_str().unwrap().to_owned();

    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let mut n = 0usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut rng = rand::thread_rng();
    for cycle in 0..20 {
        assert!(Instant::now() < deadline, "cycle {cycle}: out of time");
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (stop, acked, token, conversation, addr) = (
                stop.clone(),
                acked.clone(),
                token.clone(),
                conversation.clone(),
                server.addr,
            );
            let start_n = n;
            std::thread::spawn(move || {
                let mut i = start_n;
                // Bounded: stops when told, or after 2,000 writes.
                while !stop.load(Ordering::Relaxed) && i < start_n + 2_000 {
                    if let Some(a) = write(addr, &token, &conversation, i) {
                        acked.lock().unwrap().push(a);
                    }
                    i += 1;
                }
                i
            })
        };
        std::thread::sleep(Duration::from_millis(rng.gen_range(30..250)));
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        // The next cycle starts a fresh group of four, so a grant always
        // follows its own user-write.
        n = writer.join().unwrap().div_ceil(4) * 4;
        server = start(dir.path());
        check(
            server.addr,
            &token,
            &conversation,
            &acked.lock().unwrap(),
            cycle,
        );
    }
    assert!(acked.lock().unwrap().len() > 40, "the writes actually ran");
}

fn check(addr: SocketAddr, token: &str, conversation: &str, acked: &[Acked], cycle: usize) {
    let (s, users) = http(addr, "GET", "/auth/users", Some(token), None);
    assert_eq!(
        s, 200,
        "cycle {cycle}: the server answers after a kill: {users}"
    );
    let users = users.to_string();
    let (_, secrets) = http(addr, "GET", "/api/secrets", Some(token), None);
    let secrets = secrets.to_string();
    let (_, messages) = http(
        addr,
        "GET",
        &format!("/api/chat/messages?channel_id={conversation}&limit=1000"),
        Some(token),
        None,
    );
    let messages = messages.to_string();
    let (_, shares) = http(addr, "GET", "/api/agents/helper/shares", Some(token), None);
    let shares = shares.to_string();
    for a in acked {
        let present = match a {
            Acked::User(name) => users.contains(&format!("\"username\":\"{name}\"")),
            Acked::Secret(name) => secrets.contains(&format!("\"name\":\"{name}\"")),
            Acked::Message(content) => messages.contains(&format!("\"{content}\"")),
            Acked::Grant(name) => shares.contains(&format!("\"username\":\"{name}\"")),
        };
        assert!(present, "cycle {cycle}: acknowledged {a:?} was lost");
    }
}
