//! Load benchmark: starts the real tessera server (the `app()` router served
//! by axum on a loopback socket, over a sled store in a temporary directory),
//! drives it with C concurrent keep-alive HTTP/1.1 connections for S seconds
//! per scenario, and prints one table.
//!
//!     cargo run --release --example loadbench -- [--agents 10000] [--connections 64] [--seconds 5] [--only NAME]
//!
//! Every scenario runs in the same process and run as `/health`, so the
//! ratio column compares like with like. Only loopback is ever contacted, and
//! every loop is bounded by time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use http_body_util::BodyExt;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tessera::domain::agents::Agent;
use tessera::domain::keyspace;
use tessera::store::{Store, Transaction};
use tessera::{AppState, Config};
use tokio::net::TcpStream;

struct Args {
    connections: usize,
    seconds: u64,
    agents: usize,
    /// Run only the scenarios whose name contains this (plus /health).
    only: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        connections: 64,
        seconds: 5,
        agents: 10_000,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        if flag == "--only" {
            args.only = Some(value);
            continue;
        }
        let number: u64 = value
            .parse()
            .map_err(|_| format!("{flag}: not a number: {value}"))?;
        match flag.as_str() {
            "--connections" => args.connections = number.max(1) as usize,
            "--seconds" => args.seconds = number.max(1),
            "--agents" => args.agents = number.max(10) as usize,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

/// One request shape a scenario sends over and over.
#[derive(Clone)]
struct Scenario {
    name: &'static str,
    method: &'static str,
    path: String,
    token: Option<String>,
    body: Option<String>,
}

struct Outcome {
    requests: u64,
    non_2xx: u64,
    latencies_us: Vec<u32>,
    elapsed: Duration,
}

async fn connection_loop(
    addr: SocketAddr,
    scenario: Scenario,
    until: Instant,
) -> Result<Outcome, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut out = Outcome {
        requests: 0,
        non_2xx: 0,
        latencies_us: Vec::with_capacity(64 * 1024),
        elapsed: Duration::ZERO,
    };
    let start = Instant::now();
    while Instant::now() < until {
        let mut req = Request::builder()
            .method(scenario.method)
            .uri(&scenario.path)
            .header("host", "127.0.0.1");
        if let Some(token) = &scenario.token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let req = match &scenario.body {
            Some(body) => req
                .header("content-type", "application/json")
                .body(Body::from(body.clone())),
            None => req.body(Body::empty()),
        }
        .map_err(|e| e.to_string())?;
        let sent = Instant::now();
        sender.ready().await.map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        resp.into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        out.latencies_us
            .push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
        out.requests += 1;
        if !status.is_success() {
            out.non_2xx += 1;
        }
    }
    out.elapsed = start.elapsed();
    Ok(out)
}

async fn run_scenario(
    addr: SocketAddr,
    scenario: &Scenario,
    args: &Args,
) -> Result<Outcome, String> {
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let tasks: Vec<_> = (0..args.connections)
        .map(|_| tokio::spawn(connection_loop(addr, scenario.clone(), until)))
        .collect();
    let mut total = Outcome {
        requests: 0,
        non_2xx: 0,
        latencies_us: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        let o = task.await.map_err(|e| e.to_string())??;
        total.requests += o.requests;
        total.non_2xx += o.non_2xx;
        total.latencies_us.extend(o.latencies_us);
        total.elapsed = total.elapsed.max(o.elapsed);
    }
    total.latencies_us.sort_unstable();
    Ok(total)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// A JSON call used while setting the scene up.
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> Result<Value, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let resp = sender
        .send_request(
            req.body(Body::from(body.to_string()))
                .map_err(|e| e.to_string())?,
        )
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(format!("{method} {path}: {status} {value}"));
    }
    Ok(value)
}

async fn bench(args: Args) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let state = AppState::open(Config::new(dir.path())).map_err(|e| e.to_string())?;
    let store = state.store.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let app = tessera::app(state);
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });

    let setup = call(
        addr,
        "POST",
        "/auth/setup",
        None,
        json!({"username": "admin", "password": "bench-password"}),
    )
    .await?;
    let admin = setup["token"].as_str().ok_or("no token")?.to_owned();
    let admin_id = setup["user"]["id"].as_str().ok_or("no id")?.to_owned();

    // The host's agents, written straight to the store in batches (the
    // server's own create path fsyncs each one, which only slows set-up).
    seed_agents(store.as_ref(), &admin_id, args.agents)?;
    // A reader who sees 10 of them, shared through the API.
    let invite = call(
        addr,
        "POST",
        "/auth/users",
        Some(&admin),
        json!({"username": "reader"}),
    )
    .await?;
    let code = invite["invite_code"].as_str().ok_or("no invite code")?;
    let done = call(
        addr,
        "POST",
        "/auth/complete",
        None,
        json!({"username": "reader", "invite_code": code, "password": "reader-password"}),
    )
    .await?;
    let reader = done["token"].as_str().ok_or("no token")?.to_owned();
    let step = args.agents / 10;
    for i in 0..10 {
        let path = format!("/api/agents/agent-{}/shares", i * step);
        call(
            addr,
            "POST",
            &path,
            Some(&admin),
            json!({"user": "reader", "level": "use"}),
        )
        .await?;
    }
    let shared_agent = format!("/api/agents/agent-{}", 3 * step);
    // A channel on one agent, and its bot's token.
    let channel = call(
        addr,
        "POST",
        "/api/channels",
        Some(&admin),
        json!({"agent_name": "agent-0", "type": "webhook", "config": {}}),
    )
    .await?;
    let bot = channel["token"].as_str().ok_or("no bot token")?.to_owned();
    let bot_post = json!({
        "channel_id": channel["conversation_id"],
        "content": "a message from the bridge",
    })
    .to_string();

    let scenarios = vec![
        Scenario {
            name: "GET /health",
            method: "GET",
            path: "/health".into(),
            token: None,
            body: None,
        },
        Scenario {
            name: "GET /auth/me (session token)",
            method: "GET",
            path: "/auth/me".into(),
            token: Some(admin.clone()),
            body: None,
        },
        Scenario {
            name: "GET /api/agents/{name} (sharee)",
            method: "GET",
            path: shared_agent,
            token: Some(reader.clone()),
            body: None,
        },
        Scenario {
            name: "GET /api/agents (sees 10 of all)",
            method: "GET",
            path: "/api/agents".into(),
            token: Some(reader.clone()),
            body: None,
        },
        Scenario {
            name: "POST /api/chat/messages (bot)",
            method: "POST",
            path: "/api/chat/messages".into(),
            token: Some(bot),
            body: Some(bot_post),
        },
    ];

    println!(
        "tessera loadbench: {} agents, {} connections, {} s per scenario, {} cores",
        args.agents,
        args.connections,
        args.seconds,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "{:<34} {:>10} {:>9} {:>9} {:>8} {:>9}",
        "scenario", "req/s", "p50 ms", "p99 ms", "non-2xx", "vs health"
    );
    let mut health_rps = None;
    for scenario in &scenarios {
        if let Some(only) = &args.only {
            if scenario.path != "/health" && !scenario.name.contains(only.as_str()) {
                continue;
            }
        }
        let o = run_scenario(addr, scenario, &args).await?;
        let rps = o.requests as f64 / o.elapsed.as_secs_f64().max(1e-9);
        let base = *health_rps.get_or_insert(rps);
        println!(
            "{:<34} {:>10.0} {:>9.2} {:>9.2} {:>8} {:>8.0}%",
            scenario.name,
            rps,
            percentile(&o.latencies_us, 0.50),
            percentile(&o.latencies_us, 0.99),
            o.non_2xx,
            100.0 * rps / base
        );
    }
    Ok(())
}

fn seed_agents(store: &dyn Store, owner: &str, count: usize) -> Result<(), String> {
    for batch in (0..count).collect::<Vec<_>>().chunks(1_000) {
        let mut tx = Transaction::new();
        for i in batch {
            let agent = Agent {
                name: format!("agent-{i}"),
                owner: owner.to_owned(),
                created_at: 0,
                archived: false,
                archived_at: None,
                fields: serde_json::Map::from_iter([(
                    "display_name".to_owned(),
                    json!(format!("Agent {i}")),
                )]),
            };
            let bytes = serde_json::to_vec(&agent).map_err(|e| e.to_string())?;
            tx.put(keyspace::agent(&agent.name), bytes);
            tx.put(keyspace::owned(owner, &agent.name), Vec::new());
        }
        store.commit(&tx).map_err(|e| e.to_string())?;
    }
    store.flush().map_err(|e| e.to_string())
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!(
                "{e}\nusage: loadbench [--agents N] [--connections C] [--seconds S] [--only NAME]"
            );
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadbench failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
