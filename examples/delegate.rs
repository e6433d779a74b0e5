//! A holder narrowing a delegated tessera token offline, with nothing but the
//! token (and, to check it first, the server's public key). No network, no
//! secret, nothing of tessera's own code: any Biscuit library can do the same.
//!
//!     cargo run --example delegate -- <token> [--only OPERATION]... [--expires-in SECONDS] [--public-key HEX]
//!
//! `--only agent:read` appends `check if operation("agent:read")` (repeat it
//! to allow several operations); `--expires-in 600` appends an expiry ten
//! minutes from now. Prints the narrowed token. The server accepts it for
//! whatever both the original and the new block allow, and nothing more.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use biscuit_auth::builder::Algorithm;
use biscuit_auth::{Biscuit, BlockBuilder, PublicKey, UnverifiedBiscuit};

struct Args {
    token: String,
    only: Vec<String>,
    expires_in: Option<u64>,
    public_key: Option<String>,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let token = it.next().ok_or("missing token")?;
    let mut args = Args {
        token,
        only: Vec::new(),
        expires_in: None,
        public_key: None,
    };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--only" => args.only.push(value),
            "--expires-in" => {
                args.expires_in = Some(
                    value
                        .parse()
                        .map_err(|_| format!("not a number: {value}"))?,
                )
            }
            "--public-key" => args.public_key = Some(value),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.only.is_empty() && args.expires_in.is_none() {
        return Err("nothing to restrict: pass --only and/or --expires-in".into());
    }
    Ok(args)
}

/// The restriction block, written as Datalog.
fn restriction(args: &Args) -> String {
    let mut code = String::new();
    if !args.only.is_empty() {
        let alternatives: Vec<String> = args
            .only
            .iter()
            .map(|op| format!("operation({op:?})"))
            .collect();
        code.push_str(&format!("check if {};\n", alternatives.join(" or ")));
    }
    if let Some(secs) = args.expires_in {
        let at = SystemTime::now() + Duration::from_secs(secs);
        let rfc3339 = biscuit_auth::builder::date(&at).to_string();
        code.push_str(&format!("check if time($time), $time <= {rfc3339};\n"));
    }
    code
}

fn run(args: Args) -> Result<String, String> {
    let block = BlockBuilder::new()
        .code(restriction(&args))
        .map_err(|e| format!("building the block: {e}"))?;
    let narrowed = match &args.public_key {
        // Check the token is genuine before handing the narrowed one on.
        Some(hex) => {
            let hex = hex.strip_prefix("ed25519/").unwrap_or(hex);
            let key = PublicKey::from_bytes_hex(hex, Algorithm::Ed25519)
                .map_err(|e| format!("bad public key: {e}"))?;
            let token = Biscuit::from_base64(args.token.trim(), key)
                .map_err(|e| format!("token does not verify: {e}"))?;
            token.append(block).and_then(|t| t.to_base64())
        }
        None => UnverifiedBiscuit::from_base64(args.token.trim())
            .and_then(|t| t.append(block))
            .and_then(|t| t.to_base64()),
    };
    narrowed.map_err(|e| format!("attenuating: {e}"))
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}\nusage: delegate <token> [--only OPERATION]... [--expires-in SECONDS] [--public-key HEX]");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
