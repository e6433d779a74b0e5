//! Load benchmark: starts the real tessera server (the `app()` router served
//! by `http::server` on a loopback socket, over a sled store in a temporary
//! directory), drives it with C concurrent keep-alive HTTP/1.1 connections
//! for S seconds per scenario, and prints one table.
//!
//!     cargo run --release --example loadbench -- [--users 1000] [--agents 10000] [--grants 50000] [--shared 1000] [--sessions 10000] [--connections 64] [--seconds 5] [--only NAME] [--store postgres://...|postgres] [--replicas 1]
//!
//! `--store postgres://...` runs on that PostgreSQL database (it must be
//! empty); `--store postgres` starts a throwaway cluster (fsync on, see
//! `tessera::pgcluster`). `--replicas N` serves N replicas of one store in
//! this process, each with its own listener, cache and follower, and
//! spreads the connections over them; then it measures how long a
//! revocation made through the first takes to be refused by the second.
//!
//! The two `cold:` scenarios keep the decision cache from helping: a sharee
//! holding `use` on `--shared` agents reads a random one of them per
//! request, and `--sessions` sessions of the seeded users, minted up front,
//! each read one agent shared with their user once (the scenario ends early
//! when every session has been used).
//!
//! Every scenario runs in the same process and run as `/health`, so the
//! ratio column compares like with like. Only loopback is ever contacted, and
//! every loop is bounded by time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use http_body_util::BodyExt;
use hyper::Request;
use hyper_util::rt::TokioIo;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tessera::domain::agents::Agent;
use tessera::domain::keyspace;
use tessera::http::server::ConnectionLimits;
use tessera::store::{Store, Transaction};
use tessera::{AppState, Config};
use tokio::net::TcpStream;

#[path = "support/json_call.rs"]
mod json_call;
use json_call::call;

// The same allocator as the `tessera` binary, so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    connections: usize,
    seconds: u64,
    agents: usize,
    users: usize,
    grants: usize,
    /// Agents shared at `use` with the cold sharee.
    shared: usize,
    /// Sessions minted up front for the cold sessions scenario.
    sessions: usize,
    /// Run only the scenarios whose name contains this (plus /health).
    only: Option<String>,
    /// A PostgreSQL store instead of sled (`postgres`: a throwaway one).
    store: Option<String>,
    replicas: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        connections: 64,
        seconds: 5,
        agents: 10_000,
        users: 1_000,
        grants: 50_000,
        shared: 1_000,
        sessions: 10_000,
        only: None,
        store: None,
        replicas: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        if flag == "--only" {
            args.only = Some(value);
            continue;
        }
        if flag == "--store" {
            args.store = Some(value);
            continue;
        }
        let number: u64 = value
            .parse()
            .map_err(|_| format!("{flag}: not a number: {value}"))?;
        match flag.as_str() {
            "--connections" => args.connections = number.max(1) as usize,
            "--seconds" => args.seconds = number.max(1),
            "--agents" => args.agents = number.max(10) as usize,
            "--users" => args.users = number as usize,
            "--grants" => args.grants = number as usize,
            "--shared" => args.shared = number.max(1) as usize,
            "--sessions" => args.sessions = number as usize,
            "--replicas" => args.replicas = number.max(1) as usize,
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
    /// Writes mixed in: each request is one of these with `write_ratio`.
    writes: Vec<Scenario>,
    write_ratio: f64,
    /// Requests hammered by extra connections alongside, not measured
    /// (a login flood).
    flood: Option<Box<Scenario>>,
    /// Headers beyond host and authorization (what a proxy forwards).
    headers: Vec<(&'static str, String)>,
    /// Per request, one of these paths at random instead of `path`.
    random_paths: Arc<Vec<String>>,
    /// Per request, the next unused token and path of this pool (shared by
    /// every connection) instead of `token` and `path`.
    once: Option<Arc<OncePool>>,
}

/// Requests each sent once: (token, path), handed out in order.
struct OncePool {
    requests: Vec<(String, String)>,
    next: AtomicUsize,
}

impl OncePool {
    fn take(&self) -> Option<&(String, String)> {
        self.requests.get(self.next.fetch_add(1, Ordering::Relaxed))
    }
}

impl Scenario {
    fn get(name: &'static str, path: impl Into<String>, token: Option<&str>) -> Self {
        Self {
            name,
            method: "GET",
            path: path.into(),
            token: token.map(str::to_owned),
            body: None,
            writes: Vec::new(),
            write_ratio: 0.0,
            flood: None,
            headers: Vec::new(),
            random_paths: Arc::new(Vec::new()),
            once: None,
        }
    }

    fn post(name: &'static str, path: impl Into<String>, token: Option<&str>, body: Value) -> Self {
        Self {
            method: "POST",
            body: Some(body.to_string()),
            ..Self::get(name, path, token)
        }
    }
}

#[derive(Default)]
struct Outcome {
    requests: u64,
    non_2xx: u64,
    latencies_us: Vec<u32>,
    /// The writes mixed in, also counted in the totals above.
    writes: u64,
    write_non_2xx: u64,
    read_latencies_us: Vec<u32>,
    write_latencies_us: Vec<u32>,
    elapsed: Duration,
    /// A pool of one-time requests ran out before the time was up.
    exhausted: bool,
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
        latencies_us: Vec::with_capacity(64 * 1024),
        ..Outcome::default()
    };
    let start = Instant::now();
    // A Send-able generator: the loop awaits between draws.
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut nth = 0usize;
    while Instant::now() < until {
        nth += 1;
        let write = !scenario.writes.is_empty() && rng.gen_bool(scenario.write_ratio);
        let this = if write {
            &scenario.writes[nth % scenario.writes.len()]
        } else {
            &scenario
        };
        let (path, token) = if let Some(pool) = &this.once {
            match pool.take() {
                Some((token, path)) => (path, Some(token)),
                None => {
                    out.exhausted = true;
                    break;
                }
            }
        } else if !this.random_paths.is_empty() {
            let i = rng.gen_range(0..this.random_paths.len());
            (&this.random_paths[i], this.token.as_ref())
        } else {
            (&this.path, this.token.as_ref())
        };
        let mut req = Request::builder()
            .method(this.method)
            .uri(path)
            .header("host", "127.0.0.1");
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in &this.headers {
            req = req.header(*name, value);
        }
        let req = match &this.body {
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
        let latency = sent.elapsed().as_micros().min(u32::MAX as u128) as u32;
        out.latencies_us.push(latency);
        out.requests += 1;
        if !status.is_success() {
            out.non_2xx += 1;
        }
        if write {
            out.write_latencies_us.push(latency);
            out.writes += 1;
            if !status.is_success() {
                out.write_non_2xx += 1;
            }
        } else {
            out.read_latencies_us.push(latency);
        }
    }
    out.elapsed = start.elapsed();
    Ok(out)
}

/// Runs `scenario` over connections spread evenly over `addrs` (the
/// replicas).
async fn run_scenario(
    addrs: &[SocketAddr],
    scenario: &Scenario,
    args: &Args,
) -> Result<Outcome, String> {
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let flood: Vec<_> = scenario
        .flood
        .iter()
        .flat_map(|f| {
            (0..8).map(move |i| {
                tokio::spawn(connection_loop(
                    addrs[i % addrs.len()],
                    (**f).clone(),
                    until,
                ))
            })
        })
        .collect();
    let tasks: Vec<_> = (0..args.connections)
        .map(|i| {
            tokio::spawn(connection_loop(
                addrs[i % addrs.len()],
                scenario.clone(),
                until,
            ))
        })
        .collect();
    let mut total = Outcome::default();
    for task in tasks {
        let o = task.await.map_err(|e| e.to_string())??;
        total.requests += o.requests;
        total.non_2xx += o.non_2xx;
        total.latencies_us.extend(o.latencies_us);
        total.writes += o.writes;
        total.write_non_2xx += o.write_non_2xx;
        total.read_latencies_us.extend(o.read_latencies_us);
        total.write_latencies_us.extend(o.write_latencies_us);
        total.elapsed = total.elapsed.max(o.elapsed);
        total.exhausted |= o.exhausted;
    }
    for f in flood {
        let _ = f.await;
    }
    total.latencies_us.sort_unstable();
    total.read_latencies_us.sort_unstable();
    total.write_latencies_us.sort_unstable();
    Ok(total)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn bench(args: Args) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    // Kept alive for the whole run when the bench starts its own.
    let mut _cluster = None;
    let store_url = match args.store.as_deref() {
        None => None,
        Some("postgres") => {
            let cluster = tessera::pgcluster::PgCluster::start(true)?;
            let url = cluster.create_database("loadbench")?;
            _cluster = Some(cluster);
            Some(url)
        }
        Some(url) => Some(url.to_owned()),
    };
    if store_url.is_none() && args.replicas > 1 {
        return Err("--replicas needs --store: sled serves one process".into());
    }
    let mut addrs = Vec::new();
    let mut states = Vec::new();
    for replica in 0..args.replicas {
        let mut config = Config::new(dir.path().join(format!("replica-{replica}")));
        config.store_url = store_url.clone();
        // Every replica signs and seals with the same keys.
        config.keys = Some(dir.path().join("keys"));
        let state = AppState::open(config).map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        addrs.push(listener.local_addr().map_err(|e| e.to_string())?);
        let limits = ConnectionLimits::from(&state.config);
        tokio::spawn(tessera::http::server::serve(
            listener,
            tessera::app(state.clone()),
            limits,
            std::future::pending(),
        ));
        states.push(state);
    }
    let state = states[0].clone();
    let store = state.store.clone();
    let authz_state = state.clone();
    let addr = addrs[0];
    let host = addr.to_string();

    let setup = call(
        &host,
        "POST",
        "/auth/setup",
        None,
        Some(json!({"username": "admin", "password": "bench-password"})),
    )
    .await?;
    let admin = setup["token"].as_str().ok_or("no token")?.to_owned();
    let admin_id = setup["user"]["id"].as_str().ok_or("no id")?.to_owned();

    // The host's agents, written straight to the store in batches (the
    // server's own create path fsyncs each one, which only slows set-up).
    seed_agents(store.as_ref(), &admin_id, args.agents)?;
    // A reader who sees 10 of them, shared through the API.
    let invite = call(
        &host,
        "POST",
        "/auth/users",
        Some(&admin),
        Some(json!({"username": "reader"})),
    )
    .await?;
    let code = invite["invite_code"].as_str().ok_or("no invite code")?;
    let done = call(
        &host,
        "POST",
        "/auth/complete",
        None,
        Some(json!({"username": "reader", "invite_code": code, "password": "reader-password"})),
    )
    .await?;
    let reader = done["token"].as_str().ok_or("no token")?.to_owned();
    let step = args.agents / 10;
    for i in 0..10 {
        let path = format!("/api/agents/agent-{}/shares", i * step);
        call(
            &host,
            "POST",
            &path,
            Some(&admin),
            Some(json!({"user": "reader", "level": "use"})),
        )
        .await?;
    }
    let shared_agent = format!("/api/agents/agent-{}", 3 * step);
    // A channel on one agent, and its bot's token.
    let channel = call(
        &host,
        "POST",
        "/api/channels",
        Some(&admin),
        Some(json!({"agent_name": "agent-0", "type": "webhook", "config": {}})),
    )
    .await?;
    let bot = channel["token"].as_str().ok_or("no bot token")?.to_owned();
    let bot_post = json!({
        "channel_id": channel["conversation_id"],
        "content": "a message from the bridge",
    })
    .to_string();
    let seeded = Instant::now();
    let granted = seed_users_and_grants(store.as_ref(), &args).await?;
    // The cold scenarios' people: a sharee holding `use` on `--shared`
    // agents, and `--sessions` sessions of the seeded users.
    let cold_sharee = seed_cold_sharee(&host, &admin, store.as_ref(), &admin_id, &args).await?;
    let sessions = seed_sessions(&authz_state, store.as_ref(), &granted, &args)?;
    drop(authz_state);
    eprintln!(
        "seeded users, grants, the cold sharee and {} sessions in {:.1} s",
        sessions.len(),
        seeded.elapsed().as_secs_f64()
    );
    // Groups: 100 of 50 members each (seeded people). `grouped` is one of
    // group-7's members, reading an agent shared with that group only;
    // `joiner` belongs to 5 groups that see 10 agents each.
    let (grouped, grouped_id) = invite_user(&host, &admin, "grouped").await?;
    let (joiner, joiner_id) = invite_user(&host, &admin, "joiner").await?;
    seed_groups(store.as_ref(), &args, &admin_id, &grouped_id, &joiner_id)?;
    let group_agent = format!("agent-{}", 3 * step + 1);
    call(
        &host,
        "POST",
        &format!("/api/agents/{group_agent}/shares"),
        Some(&admin),
        Some(json!({"group": "group-7", "level": "use"})),
    )
    .await?;

    // A delegated token narrowed twice by its holder, offline.
    let minted = call(
        &host,
        "POST",
        "/api/tokens",
        Some(&admin),
        Some(json!({"agent": format!("agent-{}", 3 * step), "level": "view", "expires_in": 3600})),
    )
    .await?;
    let delegated = minted["token"].as_str().ok_or("no delegated token")?;
    let narrowed = biscuit_auth::UnverifiedBiscuit::from_base64(delegated)
        .and_then(|t| {
            t.append(
                biscuit_auth::BlockBuilder::new().code(r#"check if operation("agent:read");"#)?,
            )
        })
        .and_then(|t| {
            t.append(biscuit_auth::BlockBuilder::new().code(r#"check if resource_agent($a);"#)?)
        })
        .and_then(|t| t.to_base64())
        .map_err(|e| e.to_string())?;
    let sharee_read = Scenario::get(
        "GET /api/agents/{name} (sharee)",
        shared_agent.clone(),
        Some(&reader),
    );
    // What Caddy asks for every request of the host: may the reader chat
    // with an agent shared with them at `use`.
    let forward_auth = Scenario {
        headers: vec![
            ("x-forwarded-method", "POST".to_owned()),
            ("x-forwarded-uri", format!("{shared_agent}/chat")),
            ("x-forwarded-host", "host.example".to_owned()),
            ("x-forwarded-proto", "https".to_owned()),
        ],
        ..Scenario::get(
            "forward auth: agent chat (sharee)",
            "/auth/verify",
            Some(&reader),
        )
    };
    // Twenty questions a host page asks at once: half on agents shared
    // with the reader, half on agents they cannot see.
    let checks: Vec<Value> = (0..20)
        .map(|i| {
            let agent = format!("agent-{}", (i % 10) * step + usize::from(i >= 10));
            let operation = ["agent:read", "agent:chat", "agent:update", "agent:share"][i % 4];
            json!({"operation": operation, "agent": agent})
        })
        .collect();
    let batch_check = Scenario::post(
        "POST /api/check (20 questions)",
        "/api/check",
        Some(&reader),
        json!({ "checks": checks }),
    );
    let cold_shared_paths: Vec<String> = (0..args.shared.min(args.agents))
        .map(|i| format!("/api/agents/{}", shared_with_cold_sharee(i, &args)))
        .collect();
    let cold_sharee_read = Scenario {
        random_paths: Arc::new(cold_shared_paths),
        ..Scenario::get(
            String::leak(format!(
                "cold: sharee reads 1 of {} shared agents",
                args.shared.min(args.agents)
            )),
            "/api/agents/unused",
            Some(&cold_sharee),
        )
    };
    let cold_sessions = Scenario {
        once: Some(Arc::new(OncePool {
            next: AtomicUsize::new(0),
            requests: sessions,
        })),
        ..Scenario::get(
            String::leak(format!("cold: {} sessions, one read each", args.sessions)),
            "/api/agents/unused",
            None,
        )
    };
    let scenarios = vec![
        Scenario::get("GET /health", "/health", None),
        forward_auth,
        batch_check,
        Scenario::get("GET /auth/me (session token)", "/auth/me", Some(&admin)),
        sharee_read.clone(),
        Scenario::get(
            "GET /api/agents (sees 10 of all)",
            "/api/agents",
            Some(&reader),
        ),
        Scenario::get(
            "GET /api/agents/{name} (via group)",
            format!("/api/agents/{group_agent}"),
            Some(&grouped),
        ),
        Scenario::get(
            "GET /api/agents (5 groups x 10)",
            "/api/agents",
            Some(&joiner),
        ),
        Scenario::get(
            "GET /console (agents page, 10 of all)",
            "/console",
            Some(&reader),
        ),
        Scenario::get(
            "GET agent, token narrowed twice",
            shared_agent.clone(),
            Some(&narrowed),
        ),
        Scenario::post(
            "POST /api/chat/messages (bot)",
            "/api/chat/messages",
            Some(&bot),
            serde_json::from_str(&bot_post).map_err(|e| e.to_string())?,
        ),
        Scenario {
            name: "mix: sharee reads, 5% writes",
            writes: vec![
                Scenario::post(
                    "grant",
                    format!("/api/agents/agent-{}/shares", 5 * step),
                    Some(&admin),
                    json!({"user": "reader", "level": "use"}),
                ),
                Scenario::post(
                    "post",
                    "/api/chat/messages",
                    Some(&bot),
                    serde_json::from_str(&bot_post).map_err(|e| e.to_string())?,
                ),
            ],
            write_ratio: 0.05,
            ..sharee_read.clone()
        },
        Scenario {
            name: "sharee reads under login flood",
            flood: Some(Box::new(Scenario::post(
                "login",
                "/auth/login",
                None,
                json!({"username": "admin", "password": "bench-password"}),
            ))),
            ..sharee_read.clone()
        },
        cold_sharee_read,
        cold_sessions,
    ];

    println!(
        "tessera loadbench: {}, {} users, {} agents, {} grants, {} connections, {} s per scenario, {} cores",
        match &store_url {
            Some(_) => format!("PostgreSQL, {} replica(s)", args.replicas),
            None => "sled".to_owned(),
        },
        args.users,
        args.agents,
        args.grants,
        args.connections,
        args.seconds,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "{:<42} {:>10} {:>9} {:>9} {:>8} {:>9}",
        "scenario", "req/s", "p50 ms", "p99 ms", "non-2xx", "vs health"
    );
    let mut health_rps = None;
    for scenario in &scenarios {
        if let Some(only) = &args.only {
            if scenario.path != "/health" && !scenario.name.contains(only.as_str()) {
                continue;
            }
        }
        let o = run_scenario(&addrs, scenario, &args).await?;
        let seconds = o.elapsed.as_secs_f64().max(1e-9);
        let rps = o.requests as f64 / seconds;
        let base = *health_rps.get_or_insert(rps);
        let row = |name: &str, count: u64, sorted: &[u32], non_2xx: u64| {
            let rps = count as f64 / seconds;
            println!(
                "{:<42} {:>10.0} {:>9.2} {:>9.2} {:>8} {:>8.0}%",
                name,
                rps,
                percentile(sorted, 0.50),
                percentile(sorted, 0.99),
                non_2xx,
                100.0 * rps / base
            );
        };
        row(scenario.name, o.requests, &o.latencies_us, o.non_2xx);
        if o.exhausted {
            println!(
                "  (every one-time request sent after {:.2} s: {} requests)",
                seconds, o.requests
            );
        }
        if o.writes > 0 {
            // The mix's reads and writes apart: the read latency is what
            // the writes cost the readers.
            row(
                "  of which reads",
                o.requests - o.writes,
                &o.read_latencies_us,
                o.non_2xx - o.write_non_2xx,
            );
            row(
                "  of which writes",
                o.writes,
                &o.write_latencies_us,
                o.write_non_2xx,
            );
        }
    }
    if addrs.len() > 1 {
        revocation_delays(&addrs, &admin).await?;
    }
    Ok(())
}

/// Share an agent with a person through the first replica, let the second
/// remember their read, unshare through the first and time how long the
/// second keeps allowing it: the cross-replica revocation delay.
async fn revocation_delays(addrs: &[SocketAddr], admin: &str) -> Result<(), String> {
    let (a, b) = (addrs[0].to_string(), addrs[1].to_string());
    let (person, _) = invite_user(&a, admin, "revoked-reader").await?;
    call(
        &a,
        "POST",
        "/api/agents",
        Some(admin),
        Some(json!({"name": "revocation-probe"})),
    )
    .await?;
    let mut delays = Vec::new();
    let trials = 100;
    for _ in 0..trials {
        call(
            &a,
            "POST",
            "/api/agents/revocation-probe/shares",
            Some(admin),
            Some(json!({"user": "revoked-reader", "level": "use"})),
        )
        .await?;
        // Warm: the second replica answers it, and remembers.
        let warm = Instant::now();
        while !status_ok(&b, "/api/agents/revocation-probe", &person).await? {
            if warm.elapsed() > Duration::from_secs(5) {
                return Err("the share never reached the second replica".into());
            }
        }
        call(
            &a,
            "DELETE",
            "/api/agents/revocation-probe/shares/revoked-reader",
            Some(admin),
            None,
        )
        .await?;
        let revoked = Instant::now();
        while status_ok(&b, "/api/agents/revocation-probe", &person).await? {
            if revoked.elapsed() > Duration::from_secs(5) {
                return Err("the second replica still allowed after 5 s".into());
            }
        }
        delays.push(revoked.elapsed().as_micros().min(u32::MAX as u128) as u32);
    }
    delays.sort_unstable();
    println!(
        "revocation through replica 1, refused by replica 2 ({trials} trials): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&delays, 0.50),
        percentile(&delays, 0.99),
        percentile(&delays, 1.0)
    );
    Ok(())
}

/// Whether `path` answers 2xx to `token` on `host`.
async fn status_ok(host: &str, path: &str, token: &str) -> Result<bool, String> {
    let stream = TcpStream::connect(host).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(path)
        .header("host", "127.0.0.1")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    Ok(resp.status().is_success())
}

/// `--users` people and `--grants` view grants among them on random agents,
/// written straight to the store (one shared password hash: hashing a
/// thousand passwords would only slow set-up). Returns the agents granted
/// to each seeded user, by index.
async fn seed_users_and_grants(store: &dyn Store, args: &Args) -> Result<Vec<Vec<String>>, String> {
    use tessera::domain::agents::Grant;
    use tessera::domain::levels::Level;
    use tessera::domain::users::User;
    let hash = tessera::domain::password::Passwords::new(1)
        .map_err(|e| e.to_string())?
        .hash("seeded-password".into())
        .await
        .map_err(|e| e.to_string())?;
    let mut rng = rand::thread_rng();
    let mut tx = Transaction::new();
    for i in 0..args.users {
        let user = User {
            id: format!("seed{i}"),
            username: format!("seed{i}"),
            full_name: String::new(),
            email: String::new(),
            is_admin: false,
            password_hash: Some(hash.clone()),
            invite: None,
            created_at: Some(0),
            last_login_at: None,
        };
        tx.put(
            keyspace::user(&user.id),
            serde_json::to_vec(&user).map_err(|e| e.to_string())?,
        )
        .put(
            keyspace::username(&user.username),
            user.id.clone().into_bytes(),
        )
        .put(keyspace::active(&user.id), Vec::new());
    }
    store
        .commit(&std::mem::take(&mut tx))
        .map_err(|e| e.to_string())?;
    let mut granted = vec![Vec::new(); args.users];
    if args.users == 0 {
        return Ok(granted);
    }
    for n in 0..args.grants {
        let agent = format!("agent-{}", rng.gen_range(0..args.agents));
        let grantee_index = rng.gen_range(0..args.users);
        let grantee = format!("seed{grantee_index}");
        let Some(owner) = store
            .get(keyspace::agent(&agent).as_bytes())
            .map_err(|e| e.to_string())?
        else {
            continue;
        };
        let owner: Agent = serde_json::from_slice(&owner).map_err(|e| e.to_string())?;
        let grant = Grant {
            agent: agent.clone(),
            grantee: grantee.clone(),
            level: Level::View,
            granted_by: owner.owner,
            at: 0,
            expires_at: None,
        };
        tx.put(
            keyspace::grant(&agent, &grantee),
            serde_json::to_vec(&grant).map_err(|e| e.to_string())?,
        )
        .put(keyspace::granted(&grantee, &agent), Vec::new());
        granted[grantee_index].push(agent);
        if n % 5_000 == 4_999 {
            store
                .commit(&std::mem::take(&mut tx))
                .map_err(|e| e.to_string())?;
        }
    }
    store.commit(&tx).map_err(|e| e.to_string())?;
    store.flush().map_err(|e| e.to_string())?;
    Ok(granted)
}

/// The `i`th agent shared with the cold sharee: spread over the host.
fn shared_with_cold_sharee(i: usize, args: &Args) -> String {
    let shared = args.shared.min(args.agents);
    format!("agent-{}", i * (args.agents / shared))
}

/// A person signed up through the API ("cold-sharee"), holding `use` on
/// `--shared` of the admin's agents, the grants written straight to the
/// store. Returns their session token.
async fn seed_cold_sharee(
    host: &str,
    admin: &str,
    store: &dyn Store,
    admin_id: &str,
    args: &Args,
) -> Result<String, String> {
    use tessera::domain::agents::Grant;
    use tessera::domain::levels::Level;
    let invite = call(
        host,
        "POST",
        "/auth/users",
        Some(admin),
        Some(json!({"username": "cold-sharee"})),
    )
    .await?;
    let code = invite["invite_code"].as_str().ok_or("no invite code")?;
    let done = call(
        host,
        "POST",
        "/auth/complete",
        None,
        Some(
            json!({"username": "cold-sharee", "invite_code": code, "password": "sharee-password"}),
        ),
    )
    .await?;
    let token = done["token"].as_str().ok_or("no token")?.to_owned();
    let id = done["user"]["id"].as_str().ok_or("no id")?;
    let mut tx = Transaction::new();
    for i in 0..args.shared.min(args.agents) {
        let agent = shared_with_cold_sharee(i, args);
        let grant = Grant {
            agent: agent.clone(),
            grantee: id.to_owned(),
            level: Level::Use,
            granted_by: admin_id.to_owned(),
            at: 0,
            expires_at: None,
        };
        tx.put(
            keyspace::grant(&agent, id),
            serde_json::to_vec(&grant).map_err(|e| e.to_string())?,
        )
        .put(keyspace::granted(id, &agent), Vec::new());
    }
    store.commit(&tx).map_err(|e| e.to_string())?;
    store.flush().map_err(|e| e.to_string())?;
    Ok(token)
}

/// `--sessions` login sessions spread over the seeded users, written
/// straight to the store and their tokens minted as a login would (no
/// argon2: ten thousand logins would take minutes). Each comes with the
/// path of one agent shared with its user.
fn seed_sessions(
    state: &AppState,
    store: &dyn Store,
    granted: &[Vec<String>],
    args: &Args,
) -> Result<Vec<(String, String)>, String> {
    use tessera::domain::sessions::Session;
    let mut rng = rand::thread_rng();
    let mut requests = Vec::with_capacity(args.sessions);
    let mut tx = Transaction::new();
    for i in 0..args.sessions {
        if granted.is_empty() {
            break;
        }
        let user = i % granted.len();
        if granted[user].is_empty() {
            continue;
        }
        let agent = &granted[user][rng.gen_range(0..granted[user].len())];
        let session = Session::new(&format!("seed{user}"), Duration::from_secs(3600), false);
        session.write_into(&mut tx).map_err(|e| e.to_string())?;
        let token = state
            .authz
            .mint_session(&session.user_id, &session.id, session.expires_at)
            .map_err(|e| e.to_string())?;
        requests.push((token, format!("/api/agents/{agent}")));
        if i % 1_000 == 999 {
            store
                .commit(&std::mem::take(&mut tx))
                .map_err(|e| e.to_string())?;
        }
    }
    store.commit(&tx).map_err(|e| e.to_string())?;
    store.flush().map_err(|e| e.to_string())?;
    Ok(requests)
}

/// Invite `username` and complete the invite: their session token and id.
async fn invite_user(host: &str, admin: &str, username: &str) -> Result<(String, String), String> {
    let invite = call(
        host,
        "POST",
        "/auth/users",
        Some(admin),
        Some(json!({"username": username})),
    )
    .await?;
    let code = invite["invite_code"].as_str().ok_or("no invite code")?;
    let done = call(
        host,
        "POST",
        "/auth/complete",
        None,
        Some(json!({"username": username, "invite_code": code, "password": "bench-password"})),
    )
    .await?;
    let token = done["token"].as_str().ok_or("no token")?.to_owned();
    let id = done["user"]["id"].as_str().ok_or("no user id")?.to_owned();
    Ok((token, id))
}

/// 100 groups (`group-0`...) of 50 seeded members each, written straight
/// to the store; `grouped` joins group-7, and `joiner` joins groups 10 to
/// 14, each of which is shared 10 agents at `view` (50 in all, spread over
/// the host).
fn seed_groups(
    store: &dyn Store,
    args: &Args,
    owner: &str,
    grouped: &str,
    joiner: &str,
) -> Result<(), String> {
    use tessera::domain::agents::Grant;
    use tessera::domain::groups::{group_principal, Group, Membership};
    use tessera::domain::levels::Level;
    let mut rng = rand::thread_rng();
    let member = |tx: &mut Transaction, group: &str, user: &str| -> Result<(), String> {
        let m = Membership {
            at: 0,
            added_by: owner.to_owned(),
        };
        tx.put(
            keyspace::group_member(group, user),
            serde_json::to_vec(&m).map_err(|e| e.to_string())?,
        )
        .put(keyspace::user_group(user, group), Vec::new());
        Ok(())
    };
    let mut tx = Transaction::new();
    for g in 0..100 {
        let name = format!("group-{g}");
        let group = Group {
            name: name.clone(),
            display_name: format!("Group {g}"),
            owner: owner.to_owned(),
            created_at: 0,
            revision: 0,
        };
        tx.put(
            keyspace::group(&name),
            serde_json::to_vec(&group).map_err(|e| e.to_string())?,
        );
        for _ in 0..50.min(args.users) {
            let user = format!("seed{}", rng.gen_range(0..args.users));
            member(&mut tx, &name, &user)?;
        }
    }
    member(&mut tx, "group-7", grouped)?;
    for g in 10..15 {
        let name = format!("group-{g}");
        member(&mut tx, &name, joiner)?;
        let principal = group_principal(&name);
        for i in 0..10 {
            let agent = format!("agent-{}", (g * 97 + i * 1_009) % args.agents);
            let grant = Grant {
                agent: agent.clone(),
                grantee: principal.clone(),
                level: Level::View,
                granted_by: owner.to_owned(),
                at: 0,
                expires_at: None,
            };
            tx.put(
                keyspace::grant(&agent, &principal),
                serde_json::to_vec(&grant).map_err(|e| e.to_string())?,
            )
            .put(keyspace::granted(&principal, &agent), Vec::new());
        }
    }
    store.commit(&tx).map_err(|e| e.to_string())?;
    store.flush().map_err(|e| e.to_string())
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
                "{e}\nusage: loadbench [--users N] [--agents N] [--grants N] [--shared N] [--sessions N] [--connections C] [--seconds S] [--only NAME] [--store postgres://...|postgres] [--replicas N]"
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
