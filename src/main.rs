//! The `tessera` command line: `serve` runs the server; `keys` manages key
//! material in the data directory.

use std::net::SocketAddr;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tessera::authz::keys::RootKeys;
use tessera::http::server::ConnectionLimits;
use tessera::{AppState, Config};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

// Request handling allocates many small short-lived values on every worker
// thread; mimalloc's per-thread heaps avoid glibc's arena contention.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "Authorization server for multi-user AI agent hosts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct DataArg {
    /// Data directory: the store and the key files.
    #[arg(long = "data", env = "TESSERA_DATA", default_value = "./tessera-data")]
    data: PathBuf,
    /// A PostgreSQL store shared by several replicas
    /// (postgres://user@host/db) instead of sled in the data directory.
    #[arg(long = "store", env = "TESSERA_STORE", value_parser = store_url)]
    store: Option<String>,
    /// The signing and data keys' directory (default: DATA/keys). Replicas
    /// of one store are each given the same one; keys never go into the
    /// database.
    #[arg(long = "keys", env = "TESSERA_KEYS")]
    keys: Option<PathBuf>,
}

impl DataArg {
    fn config(self) -> Config {
        let mut config = Config::new(self.data);
        config.store_url = self.store;
        config.keys = self.keys;
        config
    }
}

fn store_url(text: &str) -> Result<String, String> {
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        Ok(text.to_owned())
    } else {
        Err("must be a postgres:// URL (without --store, sled in --data is used)".into())
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server.
    Serve {
        #[command(flatten)]
        data: DataArg,
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, env = "TESSERA_LISTEN", default_value = "127.0.0.1:7700")]
        listen: SocketAddr,
        /// Mark the session cookie Secure (serve behind HTTPS).
        #[arg(long, env = "TESSERA_COOKIE_SECURE")]
        cookie_secure: bool,
        /// Where a browser lands after signing in (a path on this site):
        /// the console, or /desktop in front of TinyAgentOS.
        #[arg(long, env = "TESSERA_HOME", default_value = "/console", value_parser = home_path)]
        home: String,
        /// A reverse proxy (address or network, e.g. 127.0.0.1 or 10.0.0.0/8)
        /// whose X-Forwarded-For names the client for login limits; repeat
        /// or separate with commas.
        #[arg(
            long = "trusted-proxy",
            env = "TESSERA_TRUSTED_PROXIES",
            value_delimiter = ','
        )]
        trusted_proxies: Vec<tessera::http::extract::Network>,
        /// Load the Datalog policy from this directory instead of the built-in copy.
        #[arg(long, env = "TESSERA_POLICY_DIR")]
        policy_dir: Option<PathBuf>,
        /// Serve Prometheus metrics on /metrics.
        #[arg(long, env = "TESSERA_METRICS")]
        metrics: bool,
        /// Serve the metrics on this address instead (implies --metrics).
        #[arg(long, env = "TESSERA_METRICS_LISTEN")]
        metrics_listen: Option<SocketAddr>,
        /// Seconds a request head may take to arrive, from its first byte.
        #[arg(
            long,
            env = "TESSERA_HEAD_TIMEOUT",
            value_name = "SECS",
            default_value = "10"
        )]
        head_timeout: NonZeroU64,
        /// Seconds a keep-alive connection may wait for its next request.
        #[arg(
            long,
            env = "TESSERA_IDLE_TIMEOUT",
            value_name = "SECS",
            default_value = "60"
        )]
        idle_timeout: NonZeroU64,
        /// Connections open at once, per listener.
        #[arg(
            long,
            env = "TESSERA_MAX_CONNECTIONS",
            value_name = "N",
            default_value = "512"
        )]
        max_connections: NonZeroUsize,
        /// The agent host's route table for forward auth (/auth/verify),
        /// replacing the built-in one (deploy/routes.conf).
        #[arg(long, env = "TESSERA_ROUTES", value_name = "FILE")]
        routes: Option<PathBuf>,
        /// Seconds an X-Tessera-Assertion minted by forward auth is valid.
        #[arg(
            long,
            env = "TESSERA_ASSERTION_TTL",
            value_name = "SECONDS",
            default_value = "60"
        )]
        assertion_ttl: NonZeroU64,
        /// Who must have a second factor until an admin changes it in the
        /// console or with POST /auth/settings/second-factor (the stored
        /// setting wins): nobody, admins or everyone.
        #[arg(
            long,
            env = "TESSERA_SECOND_FACTOR_REQUIRED",
            value_name = "WHO",
            default_value = "nobody",
            value_parser = ["nobody", "admins", "everyone"]
        )]
        second_factor_required: String,
        /// The URL people open tessera at (scheme, host name, port), e.g.
        /// https://auth.example.org: passkeys are bound to its host and
        /// accepted only from its origin. Must name a host, not an IP.
        #[arg(
            long,
            env = "TESSERA_PUBLIC_URL",
            value_name = "URL",
            default_value = tessera::config::DEFAULT_PUBLIC_URL
        )]
        public_url: String,
        /// Seconds requests in flight get to finish on shutdown.
        #[arg(
            long,
            env = "TESSERA_SHUTDOWN_TIMEOUT",
            value_name = "SECS",
            default_value = "10"
        )]
        shutdown_timeout: u64,
        /// Only admins create groups (people may create their own by
        /// default); TESSERA_USER_GROUPS=false does the same.
        #[arg(
            long = "no-user-groups",
            env = "TESSERA_USER_GROUPS",
            action = clap::ArgAction::SetFalse
        )]
        user_groups: bool,
    },
    /// Manage keys.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Schema versions of the store.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Write a consistent snapshot of the store and keys to a file: directly
    /// from a stopped server's data directory, or from a running server
    /// (`--server` with an admin token).
    Backup {
        #[arg(long)]
        to: PathBuf,
        #[command(flatten)]
        data: DataArg,
        /// A running server to ask, e.g. http://127.0.0.1:7700 (loopback HTTP).
        #[arg(long, requires = "token")]
        server: Option<String>,
        /// An admin's session token, for --server.
        #[arg(long, env = "TESSERA_TOKEN")]
        token: Option<String>,
        /// That admin's password, for --server: the backup holds the keys,
        /// so the server asks for fresh proof.
        #[arg(long, env = "TESSERA_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Check the store: prove it holds every acknowledged write (as `serve`
    /// does at start-up) and decode every record.
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
    /// Accounts, with the server stopped.
    Users {
        #[command(subcommand)]
        action: UsersAction,
    },
    /// Print the OpenAPI 3.1 description of the HTTP API (what
    /// `/openapi.json` serves; `docs/openapi.json` is this output).
    Openapi,
    /// Rebuild a data directory from a backup file.
    Restore {
        #[arg(long)]
        from: PathBuf,
        #[command(flatten)]
        data: DataArg,
        /// Replace an existing store and keys.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum UsersAction {
    /// Remove every second factor of a user and end their sessions, for
    /// someone locked out (the last admin, say); they sign in with their
    /// password alone afterwards.
    ResetFactors {
        #[command(flatten)]
        data: DataArg,
        username: String,
    },
}

#[derive(Subcommand)]
enum StoreAction {
    /// Run the start-up proof (sled) and a full scan; exit non-zero naming
    /// what is wrong.
    Verify {
        #[command(flatten)]
        data: DataArg,
    },
    /// Copy a whole store between engines with every server stopped: a sled
    /// data directory into PostgreSQL, or back. Each of --from and --to is a
    /// data directory or a postgres:// URL. Safe to interrupt: rerun the same
    /// command to finish. Ends by comparing both sides.
    Copy {
        /// The store to copy: a data directory or a postgres:// URL.
        #[arg(long)]
        from: String,
        /// Where to copy it: a data directory or a postgres:// URL. Must be
        /// empty (or hold an interrupted copy, which is finished).
        #[arg(long)]
        to: String,
        /// Replace a target that already holds a store.
        #[arg(long)]
        force: bool,
        /// Where the signing and data keys are, for the report (default: the
        /// sled side's DIR/keys). Keys are never copied into a database.
        #[arg(long)]
        keys: Option<PathBuf>,
        /// Tests only: stop after writing this many entries, as an
        /// interruption would.
        #[arg(long, hide = true)]
        stop_after: Option<u64>,
    },
}

#[derive(Subcommand)]
enum MigrateAction {
    /// Show the store's schema version and the steps still to run.
    Status {
        #[command(flatten)]
        data: DataArg,
    },
    /// Run the pending schema steps (after a backup), as `serve` does at start.
    Schema {
        #[command(flatten)]
        data: DataArg,
    },
    /// Import a TinyAgentOS data directory (read only) into this store.
    Legacy {
        /// The legacy data directory.
        #[arg(long)]
        from: PathBuf,
        #[command(flatten)]
        data: DataArg,
        /// The legacy host's machine-id file (the key of its secrets); by
        /// default `machine-id` in the legacy directory, else the legacy default.
        #[arg(long)]
        machine_id: Option<PathBuf>,
        /// Print the plan; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Report secrets that do not decrypt instead of stopping.
        #[arg(long)]
        skip_undecryptable: bool,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Create a new root signing key; older keys keep verifying their tokens.
    RotateRoot {
        #[command(flatten)]
        data: DataArg,
    },
    /// Re-encrypt every secret under a new data key (server stopped). Safe to
    /// interrupt and rerun: a rerun finishes with the same key.
    RotateDataKey {
        #[command(flatten)]
        data: DataArg,
    },
}

fn main() -> ExitCode {
    // Everything tessera and its storage engine create is born private
    // (0700 directories, 0600 files), whatever umask it was started with.
    // SAFETY: umask only sets this process's file-creation mask; it is
    // called before any thread exists.
    unsafe {
        libc::umask(0o077);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("tessera=info,tower_http=info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            data,
            listen,
            cookie_secure,
            home,
            trusted_proxies,
            policy_dir,
            metrics,
            metrics_listen,
            head_timeout,
            idle_timeout,
            max_connections,
            shutdown_timeout,
            routes,
            assertion_ttl,
            user_groups,
            second_factor_required,
            public_url,
        } => {
            let mut config = data.config();
            config.listen = listen;
            config.cookie_secure = cookie_secure;
            config.home = home;
            config.trusted_proxies = trusted_proxies;
            config.policy_dir = policy_dir;
            config.metrics = metrics || metrics_listen.is_some();
            config.metrics_listen = metrics_listen;
            config.head_timeout = Duration::from_secs(head_timeout.get());
            config.idle_timeout = Duration::from_secs(idle_timeout.get());
            config.max_connections = max_connections.get();
            config.shutdown_timeout = Duration::from_secs(shutdown_timeout);
            config.routes = routes;
            config.assertion_ttl = Duration::from_secs(assertion_ttl.get());
            config.user_groups = user_groups;
            config.public_url = public_url;
            match tessera::domain::factors::Requirement::parse(&second_factor_required) {
                Ok(required) => {
                    config.second_factor_required = required;
                    serve(config)
                }
                Err(e) => Err(e.to_string()),
            }
        }
        Command::Migrate {
            action: MigrateAction::Status { data },
        } => migrate_status(&data.config()),
        Command::Migrate {
            action: MigrateAction::Schema { data },
        } => migrate_schema(&data.config()),
        Command::Migrate {
            action:
                MigrateAction::Legacy {
                    from,
                    data,
                    machine_id,
                    dry_run,
                    json,
                    skip_undecryptable,
                },
        } => migrate_legacy(
            &data.config(),
            tessera::migrate::legacy::Options {
                from,
                machine_id,
                dry_run,
                skip_undecryptable,
                invite_ttl_secs: Config::new(".").invite_ttl.as_secs() as i64,
            },
            json,
        ),
        Command::Backup {
            to,
            data,
            server,
            token,
            password,
        } => backup(
            &data.config(),
            &to,
            server.as_deref(),
            token.as_deref(),
            password.as_deref(),
        ),
        Command::Store {
            action: StoreAction::Verify { data },
        } => tessera::maintenance::verify_store(&data.config()).map(|v| match v.proof {
            Some(proof) => println!(
                "store verified: revision {} ({} acknowledged), {} records, every one decodes",
                proof.revision, proof.acknowledged, v.records
            ),
            None => println!(
                "store verified: {} records, every one decodes (PostgreSQL: there is no \
                 integrity proof as on sled; durability is PostgreSQL's)",
                v.records
            ),
        }),
        Command::Store {
            action:
                StoreAction::Copy {
                    from,
                    to,
                    force,
                    keys,
                    stop_after,
                },
        } => store_copy(&from, &to, force, keys, stop_after),
        Command::Users {
            action: UsersAction::ResetFactors { data, username },
        } => tessera::maintenance::reset_factors(&data.config(), &username).map(|had| {
            if had {
                println!("removed the second factors of {username} and ended their sessions");
            } else {
                println!("{username} had no second factor; their sessions are ended");
            }
        }),
        Command::Openapi => {
            print!("{}", tessera::http::openapi::document_text());
            Ok(())
        }
        Command::Restore { from, data, force } => restore(&data.config(), &from, force),
        Command::Keys {
            action: KeysAction::RotateDataKey { data },
        } => tessera::maintenance::rotate_data_key(&data.config(), usize::MAX).map(
            |(id, moved, _)| println!("data key {id} is active; {moved} secret(s) re-encrypted"),
        ),
        Command::Keys {
            action: KeysAction::RotateRoot { data },
        } => RootKeys::rotate(&data.config().keys_dir())
            .map(|id| println!("new root key {id} is active; older keys still verify"))
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn open_store(config: &Config) -> Result<std::sync::Arc<dyn tessera::store::Store>, String> {
    tessera::store::open(config.store_url.as_deref(), &config.store_dir())
        .map_err(|e| e.to_string())
}

fn migrate_status(config: &Config) -> Result<(), String> {
    let store = open_store(config)?;
    let (version, pending) =
        tessera::migrate::schema::status(store.as_ref()).map_err(|e| e.to_string())?;
    println!(
        "schema version {version} (this tessera writes {})",
        tessera::migrate::schema::current()
    );
    if pending.is_empty() {
        println!("no pending steps");
    }
    for (i, name) in pending.iter().enumerate() {
        println!(
            "pending: {} -> {}: {name}",
            version as usize + i,
            version as usize + i + 1
        );
    }
    Ok(())
}

fn migrate_schema(config: &Config) -> Result<(), String> {
    let store = open_store(config)?;
    let applied = AppState::upgrade_schema(config, store.as_ref()).map_err(|e| e.to_string())?;
    if applied.is_empty() {
        println!(
            "already at schema version {}",
            tessera::migrate::schema::current()
        );
    }
    for step in applied {
        println!("applied: {step}");
    }
    Ok(())
}

fn migrate_legacy(
    config: &Config,
    options: tessera::migrate::legacy::Options,
    json: bool,
) -> Result<(), String> {
    use tessera::authz::keys::DataKeys;
    use tessera::store::{MemoryStore, Store, Transaction};
    let report = if options.dry_run {
        // Plan against a copy in memory, with throwaway keys: a dry run
        // creates no store, key or version stamp.
        let copy: std::sync::Arc<dyn Store> = std::sync::Arc::new(MemoryStore::new());
        if config.store_dir().exists() {
            let mut tx = Transaction::new();
            for (k, v) in open_store(config)?.export().map_err(|e| e.to_string())? {
                tx.put(k, v);
            }
            copy.commit(&tx).map_err(|e| e.to_string())?;
        }
        tessera::migrate::legacy::import(&options, &copy, &DataKeys::ephemeral())?
    } else {
        let (store, _, keys) = AppState::open_data_dir(config).map_err(|e| e.to_string())?;
        let report = tessera::migrate::legacy::import(&options, &store, &keys)?;
        store.flush().map_err(|e| e.to_string())?;
        report
    };
    if json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

fn backup(
    config: &Config,
    to: &std::path::Path,
    server: Option<&str>,
    token: Option<&str>,
    password: Option<&str>,
) -> Result<(), String> {
    use tessera::migrate::backup;
    let bytes = match (server, token) {
        (Some(server), Some(token)) => {
            let password =
                password.ok_or("--server needs the admin's --password (or TESSERA_PASSWORD)")?;
            fetch_backup(server, token, password)?
        }
        _ => {
            let store = open_store(config).map_err(|e| {
                format!("{e}\n(a running server: use --server http://ADDR --token <admin token>)")
            })?;
            backup::encode(&backup::snapshot(store.as_ref(), &config.keys_dir())?)
        }
    };
    backup::decode(&bytes)?;
    backup::write_file(to, &bytes)?;
    println!("backup written to {} ({} bytes)", to.display(), bytes.len());
    Ok(())
}

/// `POST /api/admin/backup` over plain HTTP/1.1 on a loopback address.
fn fetch_backup(server: &str, token: &str, password: &str) -> Result<Vec<u8>, String> {
    use std::io::{Read, Write};
    let addr = server
        .strip_prefix("http://")
        .ok_or("--server must be an http:// URL")?
        .trim_end_matches('/');
    let mut stream =
        std::net::TcpStream::connect(addr).map_err(|e| format!("connecting to {addr}: {e}"))?;
    let body = serde_json::json!({ "password": password }).to_string();
    write!(
        stream,
        "POST /api/admin/backup HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("malformed response")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = raw[split + 4..].to_vec();
    if !head.starts_with("http/1.1 200") {
        return Err(format!(
            "the server refused: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    if head.contains("transfer-encoding: chunked") {
        return Err("unexpected chunked response".into());
    }
    Ok(body)
}

fn restore(config: &Config, from: &std::path::Path, force: bool) -> Result<(), String> {
    let bytes = std::fs::read(from).map_err(|e| format!("{}: {e}", from.display()))?;
    if let Some(url) = &config.store_url {
        let keys = config.keys_dir();
        if let Some(parent) = keys.parent() {
            tessera::datadir::create_private(parent).map_err(|e| e.to_string())?;
        }
        let store = tessera::store::PostgresStore::connect(url).map_err(|e| e.to_string())?;
        let running = tessera::storecopy::servers_on(url)?;
        if running > 0 {
            return Err(format!(
                "{running} tessera server(s) are running on this database; stop them first"
            ));
        }
        let n = tessera::migrate::backup::restore_postgres(&bytes, &store, &keys, force)?;
        println!(
            "restored {n} entries into {}; the keys are in {} (give every replica --keys {})",
            tessera::storecopy::redact(url),
            keys.display(),
            keys.display()
        );
        return Ok(());
    }
    tessera::datadir::create_private(&config.data_dir).map_err(|e| e.to_string())?;
    let n =
        tessera::migrate::backup::restore(&bytes, &config.store_dir(), &config.keys_dir(), force)?;
    println!("restored {n} entries into {}", config.data_dir.display());
    Ok(())
}

fn store_copy(
    from: &str,
    to: &str,
    force: bool,
    keys: Option<PathBuf>,
    stop_after: Option<u64>,
) -> Result<(), String> {
    use tessera::storecopy::{copy, Endpoint, Outcome};
    let (from, to) = (Endpoint::parse(from), Endpoint::parse(to));
    let report = match copy(&from, &to, force, stop_after)? {
        Outcome::Done(report) => report,
        Outcome::Stopped { written } => {
            return Err(format!(
                "stopped after {written} entries as asked; {} is marked incomplete and is \
                 not served: rerun the same command to finish",
                to.describe()
            ))
        }
    };
    if report.replaced {
        println!("{} was emptied first (--force)", to.describe());
    }
    if report.resumed {
        println!("finished an interrupted copy");
    }
    println!("copied {} to {}", from.describe(), to.describe());
    println!("{:<16} {:>10} {:>10}", "kind", "source", "target");
    for (kind, count) in &report.kinds {
        println!("{kind:<16} {count:>10} {count:>10}");
    }
    println!(
        "{:<16} {:>10} {:>10}",
        "total", report.entries, report.entries
    );
    println!("both sides read back and compared: every entry matches");
    // Only a sled source's directory is known to hold them: a copy never
    // writes keys anywhere.
    let keys = keys.or_else(|| match &from {
        Endpoint::Sled(dir) => Some(Config::new(dir).keys_dir()),
        Endpoint::Postgres(_) => None,
    });
    match (keys, &to) {
        (Some(keys), _) => println!(
            "the signing and data keys are files, never copied into a database: they stay in \
             {}; give every server on this store --keys {} (replicas share that directory)",
            keys.display(),
            keys.display()
        ),
        (None, Endpoint::Sled(dir)) => println!(
            "the signing and data keys are files and were not copied: start the server on {} \
             with --keys and the directory the replicas were given, or put those files in {}",
            dir.display(),
            Config::new(dir).keys_dir().display()
        ),
        (None, Endpoint::Postgres(_)) => println!(
            "the signing and data keys are files, never copied into a database: give every \
             server on this store --keys with the directory they are in"
        ),
    }
    Ok(())
}

fn serve(config: Config) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.block_on(async move {
        let listen = config.listen;
        let data_dir = config.data_dir.clone();
        let state = AppState::open(config).map_err(|e| e.to_string())?;
        tracing::info!(
            table = state.forward.table.source(),
            routes = state.forward.table.routes().len(),
            "forward auth route table loaded"
        );
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| format!("listening on {listen}: {e}"))?;
        let local = listener
            .local_addr()
            .map_err(|e| format!("reading the bound address: {e}"))?;
        tracing::info!(data = %data_dir.display(), "tessera listening on http://{local}");
        // On stdout as well, for scripts and tests that started us on port 0.
        println!("tessera listening on http://{local}");
        let store = state.store.clone();
        let limits = ConnectionLimits::from(&state.config);
        // The metrics listener stops with the main one.
        let (stop, mut stopped) = tokio::sync::watch::channel(());
        let mut metrics_server = None;
        if let Some(addr) = state.config.metrics_listen {
            let metrics_listener = TcpListener::bind(addr)
                .await
                .map_err(|e| format!("listening for metrics on {addr}: {e}"))?;
            let metrics = tessera::http::metrics_router(state.clone());
            tracing::info!("metrics on http://{addr}/metrics");
            metrics_server = Some(tokio::spawn(tessera::http::server::serve(
                metrics_listener,
                metrics,
                limits,
                async move {
                    let _ = stopped.changed().await;
                },
            )));
        }
        let app = tessera::app(state);
        tessera::http::server::serve(listener, app, limits, async move {
            shutdown_signal().await;
            let _ = stop.send(());
        })
        .await;
        if let Some(metrics_server) = metrics_server {
            // It drained alongside the main listener, within the same bound.
            let _ = metrics_server.await;
        }
        store
            .flush()
            .map_err(|e| format!("flushing the store: {e}"))?;
        tracing::info!("stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

/// A landing path must stay on this site.
fn home_path(text: &str) -> Result<String, String> {
    let ok = text.starts_with('/')
        && !text.starts_with("//")
        && !text.contains('\\')
        && !text.chars().any(|c| c.is_control() || c.is_whitespace());
    if ok {
        Ok(text.to_owned())
    } else {
        Err("must be a path on this site, such as /console or /desktop".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_groups(args: &[&str]) -> bool {
        let mut all = vec!["tessera", "serve"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all).map(|cli| cli.command) {
            Ok(Command::Serve { user_groups, .. }) => user_groups,
            Ok(_) => panic!("not serve"),
            Err(e) => panic!("{e}"),
        }
    }

    /// People create groups unless the flag or the variable says no. One
    /// test, as the variable is the process's.
    #[test]
    fn user_groups_are_on_unless_turned_off() {
        std::env::remove_var("TESSERA_USER_GROUPS");
        assert!(user_groups(&[]));
        assert!(!user_groups(&["--no-user-groups"]));
        std::env::set_var("TESSERA_USER_GROUPS", "false");
        assert!(!user_groups(&[]));
        std::env::set_var("TESSERA_USER_GROUPS", "true");
        assert!(user_groups(&[]));
        std::env::remove_var("TESSERA_USER_GROUPS");
    }
}
