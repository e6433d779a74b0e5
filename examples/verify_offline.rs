//! Verify a tessera session token offline, knowing only the server's public
//! key: no network, no store, nothing of tessera's own code.
//!
//!     cargo run --example verify_offline -- <public-key> <token>
//!
//! `<public-key>` is the `public_key` hex (or the `biscuit` form,
//! `ed25519/<hex>`) from `GET /auth/keys`. Prints who the token speaks for and
//! whether it is currently valid; exits non-zero if it is not.
//!
//! Offline verification proves the token was issued by the server and has not
//! expired. Only the server can tell whether the session was since revoked.

use std::process::ExitCode;
use std::time::SystemTime;

use biscuit_auth::builder::Algorithm;
use biscuit_auth::macros::authorizer;
use biscuit_auth::{AuthorizerLimits, Biscuit, PublicKey};

fn parse_key(text: &str) -> Result<PublicKey, String> {
    let hex = text.trim().strip_prefix("ed25519/").unwrap_or(text.trim());
    PublicKey::from_bytes_hex(hex, Algorithm::Ed25519).map_err(|e| format!("bad public key: {e}"))
}

fn run(key: &str, token: &str) -> Result<(), String> {
    let key = parse_key(key)?;
    let biscuit = Biscuit::from_base64(token.trim(), key)
        .map_err(|e| format!("not a token signed by this key: {e}"))?;
    println!(
        "signature chain: valid ({} block(s))",
        biscuit.block_count()
    );
    for i in 0..biscuit.block_count() {
        let source = biscuit.print_block_source(i).map_err(|e| e.to_string())?;
        println!("--- block {i} ---\n{}", source.trim());
    }

    let now = SystemTime::now();
    let mut authorizer = authorizer!(
        r#"
        time({now});
        allow if user($u), session($s);
        "#
    )
    .set_limits(AuthorizerLimits {
        max_time: std::time::Duration::from_millis(100),
        ..AuthorizerLimits::default()
    })
    .build(&biscuit)
    .map_err(|e| format!("cannot evaluate the token: {e}"))?;
    let users: Vec<(String,)> = authorizer
        .query("data($u) <- user($u)")
        .map_err(|e| format!("cannot read the token: {e}"))?;
    if let Some((user,)) = users.first() {
        println!("user: {user}");
    }
    authorizer
        .authorize()
        .map_err(|e| format!("token is not valid now: {e}"))?;
    println!("valid now: yes (session revocation is only known to the server)");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [key, token] = args.as_slice() else {
        eprintln!("usage: verify_offline <public-key> <token>");
        return ExitCode::from(2);
    };
    match run(key, token) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
