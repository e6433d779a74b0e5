//! The `tessera` command line: `serve` runs the server; `keys` manages key
//! material in the data directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tessera::authz::keys::RootKeys;
use tessera::{AppState, Config};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

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
        /// Load the Datalog policy from this directory instead of the built-in copy.
        #[arg(long, env = "TESSERA_POLICY_DIR")]
        policy_dir: Option<PathBuf>,
    },
    /// Manage keys.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
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
            policy_dir,
        } => {
            let mut config = Config::new(data.data);
            config.listen = listen;
            config.cookie_secure = cookie_secure;
            config.policy_dir = policy_dir;
            serve(config)
        }
        Command::Keys {
            action: KeysAction::RotateDataKey { data },
        } => tessera::maintenance::rotate_data_key(&Config::new(data.data), usize::MAX).map(
            |(id, moved, _)| println!("data key {id} is active; {moved} secret(s) re-encrypted"),
        ),
        Command::Keys {
            action: KeysAction::RotateRoot { data },
        } => RootKeys::rotate(&Config::new(data.data).keys_dir())
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

fn serve(config: Config) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.block_on(async move {
        let listen = config.listen;
        let data_dir = config.data_dir.clone();
        let state = AppState::open(config).map_err(|e| e.to_string())?;
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
        let app = tessera::app(state);
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| format!("serving: {e}"))?;
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
