//! A channel bot that knows nothing but its token: it finds its channel in
//! the token itself, posts a message into the channel's conversation, and
//! waits (bounded) for replies from the agent.
//!
//!     cargo run --example channel_bot -- <server-url> <token> <message> [--wait SECONDS]
//!
//! The server URL must be loopback, e.g. `http://127.0.0.1:7700`. The token
//! is the one `POST /api/channels` answered with; it can read and post in
//! that one conversation and nothing else.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use biscuit_auth::UnverifiedBiscuit;
use serde_json::{json, Value};

#[path = "support/json_call.rs"]
mod json_call;
use json_call::call;

/// The channel id from the token's own authority block: `channel_bot("<id>")`.
fn channel_of(token: &str) -> Result<String, String> {
    let unverified =
        UnverifiedBiscuit::from_base64(token).map_err(|e| format!("not a token: {e}"))?;
    let authority = unverified
        .print_block_source(0)
        .map_err(|e| e.to_string())?;
    authority
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("channel_bot(\"")?
                .strip_suffix("\");")
                .map(str::to_owned)
        })
        .ok_or_else(|| "this is not a channel bot token".to_owned())
}

async fn run(server: &str, token: &str, message: &str, wait: Duration) -> Result<(), String> {
    let addr = server
        .strip_prefix("http://")
        .ok_or("the server URL must start with http://")?
        .trim_end_matches('/');
    let conversation = format!("chan-{}", channel_of(token)?);
    let posted = call(
        addr,
        "POST",
        "/api/chat/messages",
        Some(token),
        Some(json!({ "channel_id": conversation, "content": message })),
    )
    .await?;
    let mine = posted["id"].as_str().unwrap_or_default().to_owned();
    println!("posted {mine}");
    let deadline = Instant::now() + wait;
    loop {
        let listed = call(
            addr,
            "GET",
            &format!("/api/chat/messages?channel_id={conversation}"),
            Some(token),
            None,
        )
        .await?;
        let replies: Vec<&Value> = listed["messages"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter(|m| m["id"].as_str() > Some(mine.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        if !replies.is_empty() {
            for reply in replies {
                println!(
                    "reply from {}: {}",
                    reply["author_id"],
                    reply["content"].as_str().unwrap_or("")
                );
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            println!("no reply yet");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (server, token, message, wait) = match args.as_slice() {
        [s, t, m] => (s, t, m, 0),
        [s, t, m, flag, secs] if flag == "--wait" => (s, t, m, secs.parse().unwrap_or(0)),
        _ => {
            eprintln!("usage: channel_bot <server-url> <token> <message> [--wait SECONDS]");
            return ExitCode::from(2);
        }
    };
    let wait = Duration::from_secs(wait.min(300));
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(server, token, message, wait)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
