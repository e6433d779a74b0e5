//! Server configuration: one plain struct, filled from the command line and
//! environment by `main.rs`, or built directly by tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use biscuit_auth::AuthorizerLimits;

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the store and key files live.
    pub data_dir: PathBuf,
    /// A PostgreSQL store shared by several replicas (`--store
    /// postgres://...`) instead of sled in `data_dir`.
    pub store_url: Option<String>,
    /// Where the signing and data keys live, when not in `data_dir/keys`:
    /// replicas on one shared store are each given the same directory.
    pub keys: Option<PathBuf>,
    pub listen: SocketAddr,
    /// Mark the session cookie `Secure` (set when served behind HTTPS).
    pub cookie_secure: bool,
    /// Where a browser lands after signing in: the console, or `/desktop`
    /// when tessera serves in front of TinyAgentOS.
    pub home: String,
    /// Load the policy from this directory instead of the copy built into the
    /// binary (both come from `datalog/*.dl`).
    pub policy_dir: Option<PathBuf>,
    pub session_ttl: Duration,
    /// Session lifetime when the user asked to stay signed in (`auto_login`).
    pub long_session_ttl: Duration,
    pub invite_ttl: Duration,
    /// Bounds for every Datalog run. The library's default (1 ms) times out valid
    /// tokens under load; ours is generous in time and strict in size, so a token
    /// carrying hostile rules is cut off by fact and iteration counts first.
    pub authorizer_limits: AuthorizerLimits,
    /// How many verified tokens to keep (two generations of this size at most).
    pub token_cache_capacity: usize,
    /// How many decisions to remember across all tokens (a decision is a few
    /// hundred bytes; two generations of this size at most); 0 decides every
    /// request afresh.
    pub decision_memo_capacity: usize,
    /// How many decoded records and derived values the read cache in front of
    /// the store keeps (sessions, accounts, agents with their grants: an
    /// agent takes a few KiB); 0 turns it off.
    pub read_cache_capacity: usize,
    /// Concurrent argon2 computations; the rest queue.
    pub password_hash_concurrency: usize,
    pub rate_limit: RateLimitConfig,
    /// Reverse proxies whose `X-Forwarded-For` names the client for rate
    /// limiting; from anyone else the header is ignored.
    pub trusted_proxies: Vec<crate::http::extract::Network>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// Requests served at once; past it, new ones are answered 503 at once
    /// instead of piling up.
    pub max_concurrent_requests: usize,
    /// Time for a request head to arrive, counted from its first byte; a
    /// client still sending it then is disconnected.
    pub head_timeout: Duration,
    /// Time a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Connections open at once, per listener. A newcomer at the cap closes
    /// the connection waiting longest with no request in flight, or is
    /// closed itself if every connection is serving one.
    pub max_connections: usize,
    /// On shutdown, time given to requests in flight before their
    /// connections are dropped.
    pub shutdown_timeout: Duration,
    /// Serve Prometheus metrics (off by default).
    pub metrics: bool,
    /// Serve them on this address instead of the main one's `/metrics`.
    pub metrics_listen: Option<SocketAddr>,
    /// The host's route table for forward auth; `None`: the built-in one
    /// (`deploy/routes.conf`).
    pub routes: Option<PathBuf>,
    /// Lifetime of the `X-Tessera-Assertion` minted for each allowed
    /// forward-auth request.
    pub assertion_ttl: Duration,
    /// Where people reach tessera (scheme, host, port): passkeys are bound
    /// to its host (the WebAuthn relying party id) and accepted only from
    /// its origin.
    pub public_url: String,
    /// Who must have a second factor until an admin changes it (issue 14).
    pub second_factor_required: crate::domain::factors::Requirement,
    /// Whether people may create groups of their own (admins always may).
    pub user_groups: bool,
    /// The time expiring shares are judged by.
    pub clock: Clock,
}

/// The time expiring shares are judged by: the system clock, which tests
/// move forward (they cannot wait a day for a share to run out). Clones
/// share one offset, so a test advances the clock of the server it built.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl Clock {
    /// Seconds since the Unix epoch, as this clock reads them.
    pub fn now(&self) -> i64 {
        crate::domain::now() + self.offset.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Move this clock (and every clone of it) `secs` seconds forward.
    pub fn advance(&self, secs: i64) {
        self.offset
            .fetch_add(secs, std::sync::atomic::Ordering::Relaxed);
    }
}

#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// Failed attempts allowed per client address within `window`.
    pub per_address: u32,
    /// Failed attempts allowed per username or invite within `window`.
    pub per_account: u32,
    pub window: Duration,
    /// Most keys tracked at once; the oldest are forgotten first.
    pub max_tracked: usize,
}

const DAY: u64 = 24 * 60 * 60;

/// The public URL when none is given: the default listen port, named
/// `localhost` (browsers allow passkeys over plain HTTP only there).
pub const DEFAULT_PUBLIC_URL: &str = "http://localhost:7700";

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            store_url: None,
            keys: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            cookie_secure: false,
            policy_dir: None,
            session_ttl: Duration::from_secs(7 * DAY),
            long_session_ttl: Duration::from_secs(30 * DAY),
            invite_ttl: Duration::from_secs(7 * DAY),
            authorizer_limits: AuthorizerLimits {
                max_facts: 2_000,
                max_iterations: 200,
                max_time: Duration::from_millis(250),
            },
            token_cache_capacity: 10_000,
            decision_memo_capacity: 50_000,
            read_cache_capacity: 20_000,
            password_hash_concurrency: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            rate_limit: RateLimitConfig {
                per_address: 30,
                per_account: 10,
                window: Duration::from_secs(15 * 60),
                max_tracked: 100_000,
            },
            trusted_proxies: Vec::new(),
            max_body_bytes: 256 * 1024,
            request_timeout: Duration::from_secs(30),
            max_concurrent_requests: 1024,
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
            shutdown_timeout: Duration::from_secs(10),
            metrics: false,
            metrics_listen: None,
            home: "/console".into(),
            routes: None,
            assertion_ttl: Duration::from_secs(60),
            user_groups: true,
            clock: Clock::default(),
            second_factor_required: Default::default(),
            public_url: DEFAULT_PUBLIC_URL.into(),
        }
    }

    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.keys
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys"))
    }
}
