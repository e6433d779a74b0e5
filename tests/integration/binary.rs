//! The real binary on a loopback port: start, set up, restart on the same
//! data directory, and find everything (keys included) still there.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{command, http, start, stop};

fn tessera(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn the_binary_keeps_users_and_tokens_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let (status, body) = http(server.addr, "GET", "/health", None, None);
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));

    let (status, body) = http(
        server.addr,
        "POST",
        "/auth/setup",
        None,
        Some(&json!({"username": "alice", "password": "alice-password"})),
    );
    assert_eq!(status, 200, "{body}");
    let setup_token = body["token"].as_str().unwrap().to_owned();
    assert_offline_verifier_accepts(server.addr, &setup_token);
    let (status, body) = http(
        server.addr,
        "POST",
        "/auth/login",
        None,
        Some(&json!({"username": "alice", "password": "alice-password"})),
    );
    assert_eq!(status, 200, "{body}");
    let login_token = body["token"].as_str().unwrap().to_owned();

    // A second server on the same directory refuses to start, clearly.
    let out = command(dir.path()).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in use by another tessera process"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    stop(server);
    let server = start(dir.path());
    for token in [&setup_token, &login_token] {
        let (status, body) = http(server.addr, "GET", "/auth/me", Some(token), None);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["user"]["username"], "alice");
    }
    let (status, _) = http(server.addr, "GET", "/ready", None, None);
    assert_eq!(status, 200);
    assert_delegate_example_narrows(server.addr, &login_token);
    assert_channel_bot_example_talks(server.addr, &login_token);

    let (status, body) = http(
        server.addr,
        "POST",
        "/auth/login",
        None,
        Some(&json!({"username": "alice", "password": "alice-password"})),
    );
    assert_eq!(status, 200, "{body}");

    // A backup from the running server, restored elsewhere, serves the same
    // users and tokens.
    let file = dir.path().join("live.tbk");
    let url = format!("http://{}", server.addr);
    let out = tessera(&[
        "backup",
        "--to",
        file.to_str().unwrap(),
        "--server",
        &url,
        "--token",
        &login_token,
        "--password",
        "alice-password",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop(server);
    let status = tessera(&["migrate", "status", "--data", dir.path().to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("no pending steps"));
    let copy = tempfile::tempdir().unwrap();
    let copy_data = copy.path().join("data");
    let restore = |force: bool| {
        let mut args = vec![
            "restore",
            "--from",
            file.to_str().unwrap(),
            "--data",
            copy_data.to_str().unwrap(),
        ];
        if force {
            args.push("--force");
        }
        tessera(&args)
    };
    assert!(restore(false).status.success());
    let again = restore(false);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert!(restore(true).status.success());
    let copy_server = start(&copy_data);
    let (status, body) = http(
        copy_server.addr,
        "GET",
        "/auth/me",
        Some(&login_token),
        None,
    );
    assert_eq!(status, 200, "{body}");
    stop(copy_server);
}

/// An example program, built beside the binary by `cargo test`.
fn example(name: &str) -> std::path::PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_tessera"))
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples (or run `cargo build --examples`)",
        path.display()
    );
    path
}

/// `examples/verify_offline.rs` (built by `cargo test` beside the binary)
/// accepts a real token given only the published key, and refuses it under
/// another key.
fn assert_offline_verifier_accepts(addr: SocketAddr, token: &str) {
    let (_, keys) = http(addr, "GET", "/auth/keys", None, None);
    let key = keys["keys"][0]["public_key"].as_str().unwrap();
    let example = Path::new(env!("CARGO_BIN_EXE_tessera"))
        .parent()
        .unwrap()
        .join("examples/verify_offline");
    if !example.exists() {
        panic!(
            "build the examples first (cargo test builds them): {}",
            example.display()
        );
    }
    let out = Command::new(&example).args([key, token]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("valid now: yes"), "{stdout}");
    let other = biscuit_auth::KeyPair::new().public().to_bytes_hex();
    let out = Command::new(&example)
        .args([&other, token])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// `examples/delegate.rs` narrows a real delegated token offline, and the
/// server honours exactly the narrower token.
fn assert_delegate_example_narrows(addr: SocketAddr, session: &str) {
    let (status, body) = http(
        addr,
        "POST",
        "/api/agents",
        Some(session),
        Some(&json!({"name": "helper"})),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(
        addr,
        "POST",
        "/api/tokens",
        Some(session),
        Some(&json!({"agent": "helper", "level": "edit", "expires_in": 600})),
    );
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap();
    let (_, keys) = http(addr, "GET", "/auth/keys", None, None);
    let key = keys["keys"][0]["public_key"].as_str().unwrap();
    let example = example("delegate");
    let out = Command::new(&example)
        .args([
            token,
            "--only",
            "agent:read",
            "--expires-in",
            "300",
            "--public-key",
            key,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let narrowed = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let edit = json!({"model": "m"});
    assert_eq!(
        http(addr, "PUT", "/api/agents/helper", Some(token), Some(&edit)).0,
        200
    );
    assert_eq!(
        http(addr, "GET", "/api/agents/helper", Some(&narrowed), None).0,
        200
    );
    assert_eq!(
        http(
            addr,
            "PUT",
            "/api/agents/helper",
            Some(&narrowed),
            Some(&edit)
        )
        .0,
        403
    );
}

/// `examples/channel_bot.rs`, with nothing but its token, posts into its
/// channel's conversation and reads the agent's reply.
fn assert_channel_bot_example_talks(addr: SocketAddr, session: &str) {
    let channel = json!({"agent_name": "helper", "type": "webhook", "config": {}});
    let (status, body) = http(addr, "POST", "/api/channels", Some(session), Some(&channel));
    assert_eq!(status, 200, "{body}");
    let bot = body["token"].as_str().unwrap().to_owned();
    let conversation = body["conversation_id"].as_str().unwrap().to_owned();
    let (_, runtime) = http(
        addr,
        "POST",
        "/api/agents/helper/runtime-token",
        Some(session),
        Some(&json!({})),
    );
    let runtime = runtime["token"].as_str().unwrap().to_owned();

    let example = example("channel_bot");
    let url = format!("http://{addr}");
    let child = Command::new(&example)
        .args([
            url.as_str(),
            bot.as_str(),
            "hello from the bridge",
            "--wait",
            "20",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Act as the agent: wait (bounded) for the bot's message, then reply.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let path = format!("/api/chat/messages?channel_id={conversation}");
        let (status, body) = http(addr, "GET", &path, Some(&runtime), None);
        assert_eq!(status, 200, "{body}");
        if body["messages"].as_array().is_some_and(|m| !m.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "the bot never posted");
        std::thread::sleep(Duration::from_millis(50));
    }
    let reply = json!({"channel_id": conversation, "content": "hello, bridge"});
    assert_eq!(
        http(
            addr,
            "POST",
            "/api/chat/messages",
            Some(&runtime),
            Some(&reply)
        )
        .0,
        200
    );
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("reply from \"helper\": hello, bridge"),
        "{stdout}"
    );
}
