//! Shared test helpers: an in-process app driven through the real router with
//! `oneshot`, and a tiny HTTP/1.1 client for tests that run the real binary.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tessera::authz::keys::{DataKeys, RootKeys};
use tessera::pgcluster::PgCluster;
use tessera::store::{MemoryStore, PostgresStore, SledStore, Store};
use tessera::{AppState, Config};
use tower::ServiceExt;

pub const ADMIN_PASSWORD: &str = "admin-password";

/// The legacy fixtures (read-only input), kept in the repository so a clone
/// needs nothing beside it, as the tests read them: a copy made once per
/// test run in cargo's temporary directory, with every legacy session's
/// expiry moved forward by the time since the fixtures were recorded. The
/// recorded expiries are absolute (the earliest passed on 2026-11-29), and
/// the tests are about what the importer does with live sessions, not about
/// the day they run on. The repository's files are never written.
pub fn fixtures() -> PathBuf {
    static COPY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    COPY.get_or_init(|| {
        let recorded = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/taos-legacy");
        assert!(
            recorded.is_dir(),
            "legacy fixtures missing at {}",
            recorded.display()
        );
        let copy = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("taos-legacy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&copy);
        copy_dir(&recorded, &copy);
        for install in ["multi-user", "single-password"] {
            redate_sessions(&copy.join(install).join(".auth_sessions"));
        }
        copy
    })
    .clone()
}

/// When the fixtures' sessions were recorded: shortly before the earliest
/// of their expiries.
const FIXTURES_RECORDED_AT: f64 = 1_795_900_000.0;

/// Copy a directory as `cp -a` would, modes included (a data directory
/// whose directories others can enter is refused).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::metadata(from).unwrap().permissions()).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn redate_sessions(path: &std::path::Path) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let shift = (now - FIXTURES_RECORDED_AT).max(0.0);
    let moved = |v: &Value| v.as_f64().map(|t| serde_json::json!(t + shift));
    let mut sessions: serde_json::Map<String, Value> =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    for value in sessions.values_mut() {
        if let Some(bare) = moved(value) {
            *value = bare;
        } else if let Some(expires) = value.get("expires_at").and_then(moved) {
            value["expires_at"] = expires;
        }
    }
    std::fs::write(path, serde_json::to_vec(&sessions).unwrap()).unwrap();
}

pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    /// The body as text: a page's HTML (for which `body` is null).
    pub text: String,
}

impl Response {
    pub fn token(&self) -> String {
        self.body["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {}", self.body))
            .to_owned()
    }

    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }

    /// The session cookie this response sets (the CSRF cookie aside).
    pub fn set_cookie(&self) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .find(|v| v.starts_with("taos_session="))
    }
}

/// How a request presents its token.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    None,
    Bearer(&'a str),
    /// The session cookie as tessera's own pages send it: with the CSRF
    /// cookie echoed in `X-CSRF-Token`.
    Cookie(&'a str),
    /// The session cookie alone, as a forged cross-site request carries it.
    CookieOnly(&'a str),
    RawAuthorization(&'a str),
}

/// The CSRF token the test "browser" holds (any well-formed token works:
/// what matters is that the header echoes the cookie).
pub const TEST_CSRF: &str = "testcsrftokentestcsrftokentestcs";

pub struct TestApp {
    pub state: AppState,
    pub router: axum::Router,
    _dir: Option<tempfile::TempDir>,
}

/// Test configuration: real policy and hashing, generous rate limits unless a
/// test sets its own.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config::new(dir);
    config.rate_limit.per_account = 1_000;
    config.rate_limit.per_address = 1_000;
    // The authorizer's time limit is wall-clock time. The tests run the
    // evaluator unoptimized, many requests at once, on two cores shared
    // with other builds: a decision descheduled for a quarter of a second
    // is the machine, not the policy. Hostile blocks are still cut off by
    // the fact and iteration limits, which count work, not time.
    config.authorizer_limits.max_time = std::time::Duration::from_secs(5);
    config
}

impl TestApp {
    pub fn new() -> Self {
        Self::with_config(|_| {})
    }

    pub fn with_config(adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = test_config(std::path::Path::new("unused"));
        adjust(&mut config);
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let state = AppState::build(config, store, RootKeys::ephemeral(), DataKeys::ephemeral())
            .expect("state builds");
        Self::from_state(state, None)
    }

    /// Backed by sled in a temporary directory.
    pub fn on_sled() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(dir.path());
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&config.store_dir()).unwrap());
        let state = AppState::build(config, store, RootKeys::ephemeral(), DataKeys::ephemeral())
            .expect("state builds");
        Self::from_state(state, Some(dir))
    }

    /// Backed by PostgreSQL: a fresh database in the tests' shared cluster
    /// (call from a multi-thread runtime: the engine hands its thread over
    /// while it waits).
    pub fn on_postgres() -> Self {
        let url = pg_database("app");
        let config = test_config(std::path::Path::new("unused"));
        let store: Arc<dyn Store> =
            Arc::new(PostgresStore::connect(&url).expect("the test database answers"));
        let state = AppState::build(config, store, RootKeys::ephemeral(), DataKeys::ephemeral())
            .expect("state builds");
        Self::from_state(state, None)
    }

    pub fn from_state(state: AppState, dir: Option<tempfile::TempDir>) -> Self {
        let router = tessera::app(state.clone());
        Self {
            state,
            router,
            _dir: dir,
        }
    }

    pub async fn send(&self, request: Request<Body>) -> Response {
        let resp = self.router.clone().oneshot(request).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let binary = headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes() == b"application/octet-stream");
        let page = headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
        // Every answer but a binary download or a page is JSON, errors above all.
        let body = if bytes.is_empty() || (binary && status.is_success()) || page {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "non-JSON body ({status}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Response {
            status,
            headers,
            body,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<Value>,
    ) -> Response {
        let mut req = Request::builder().method(method).uri(path);
        req = match auth {
            Auth::None => req,
            Auth::Bearer(t) => req.header("authorization", format!("Bearer {t}")),
            Auth::Cookie(t) => req
                .header(
                    "cookie",
                    format!("taos_session={t}; csrf_token={TEST_CSRF}"),
                )
                .header("x-csrf-token", TEST_CSRF),
            Auth::CookieOnly(t) => req.header("cookie", format!("taos_session={t}")),
            Auth::RawAuthorization(v) => req.header("authorization", v),
        };
        let req = match body {
            Some(body) => req
                .header("content-type", "application/json")
                .body(Body::from(body.to_string())),
            None => req.body(Body::empty()),
        };
        self.send(req.unwrap()).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.call(Method::GET, path, Auth::Bearer(token), None)
            .await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Response {
        self.call(Method::POST, path, Auth::Bearer(token), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Response {
        self.call(Method::DELETE, path, Auth::Bearer(token), None)
            .await
    }

    pub async fn anon_post(&self, path: &str, body: Value) -> Response {
        self.call(Method::POST, path, Auth::None, Some(body)).await
    }

    /// First-run setup of `alice` as admin; returns her token.
    pub async fn setup_admin(&self) -> String {
        let resp = self
            .anon_post(
                "/auth/setup",
                json!({"username": "alice", "password": ADMIN_PASSWORD, "full_name": "Alice Admin"}),
            )
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
        resp.token()
    }

    /// Invite `username` and complete the invite with `password`; returns
    /// their session token.
    pub async fn add_user(&self, admin: &str, username: &str, password: &str) -> String {
        let invite = self
            .post("/auth/users", admin, json!({"username": username}))
            .await;
        assert_eq!(invite.status, StatusCode::OK, "{}", invite.body);
        let code = invite.body["invite_code"].as_str().unwrap().to_owned();
        let done = self
            .anon_post(
                "/auth/complete",
                json!({"username": username, "invite_code": code, "password": password}),
            )
            .await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.body);
        done.token()
    }

    pub async fn login(&self, username: &str, password: &str) -> Response {
        self.anon_post(
            "/auth/login",
            json!({"username": username, "password": password}),
        )
        .await
    }
}

/// A minimal blocking HTTP/1.1 client for tests against the real binary.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    try_http(addr, method, path, token, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// The same, reporting a dead connection instead of panicking (for tests
/// that kill the server mid-request).
pub fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    try_http_with(addr, method, path, token, body, &[]).map(|r| (r.status, r.body))
}

/// An answer of the real binary, headers included.
pub struct Reply {
    pub status: u16,
    /// Names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// [`try_http`] with more request headers, answering the response's
/// headers too.
pub fn try_http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
    extra: &[(&str, &str)],
) -> Result<Reply, String> {
    let err = |e: std::io::Error| e.to_string();
    let mut stream = TcpStream::connect(addr).map_err(err)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(err)?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    for (name, value) in extra {
        auth.push_str(&format!("{name}: {value}\r\n"));
    }
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(err)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(err)?;
    let text = String::from_utf8_lossy(&raw);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "no status line".to_owned())?;
    let (head, payload) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let payload = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(payload)
    } else {
        payload.to_owned()
    };
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Reply {
        status,
        headers,
        body: serde_json::from_str(&payload).unwrap_or(Value::Null),
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A page that says `says` and nowhere `never` (printed whole if not).
pub fn assert_page_says(page: &str, says: &str, never: &str) {
    assert!(page.contains(says), "{page}");
    assert!(!page.contains(never), "{page}");
}

/// A copy of `datalog/` with one line replaced, for tests showing that the
/// policy is data. Panics if the line is not in the policy any more.
pub fn edited_policy(line: &str, replacement: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("datalog");
    let mut replaced = false;
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let edited = text.replace(line, replacement);
        replaced |= edited != text;
        std::fs::write(dir.path().join(path.file_name().unwrap()), edited).unwrap();
    }
    assert!(replaced, "the policy no longer has the line {line:?}");
    dir
}

/// A temporary directory only its owner can enter, as tessera requires of
/// a data directory it has claimed.
pub fn private_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .unwrap()
}

/// Open sled, waiting (bounded) for a store this test just dropped: sled's
/// background flusher can hold the directory lock for a moment after drop.
pub fn open_sled(dir: &std::path::Path) -> SledStore {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match SledStore::open(dir) {
            Ok(store) => return store,
            Err(tessera::store::StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("opening {}: {e}", dir.display()),
        }
    }
}

/// `AppState::open`, waiting (bounded) for a just-dropped store's lock.
pub fn open_state(config: Config) -> Result<AppState, tessera::state::StartError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match AppState::open(config.clone()) {
            Err(tessera::state::StartError::Store(tessera::store::StoreError::Locked(_)))
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => return other,
        }
    }
}

/// The real binary, serving on a free loopback port; killed when dropped.
pub struct Server {
    pub child: std::process::Child,
    pub addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tessera serve` on a free loopback port over `data`.
pub fn command(data: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env("RUST_LOG", "warn")
        .env_remove("TESSERA_LISTEN")
        .env_remove("TESSERA_DATA");
    cmd
}

/// Start the binary and read the address it bound from its first line.
pub fn start(data: &std::path::Path) -> Server {
    start_with(data, &[])
}

/// The same, with more `serve` flags.
pub fn start_with(data: &std::path::Path, args: &[&str]) -> Server {
    let mut cmd = command(data);
    cmd.args(args).stderr(std::process::Stdio::null());
    spawn(cmd)
}

/// Spawn a prepared `serve` command and read the address it bound.
pub fn spawn(mut cmd: std::process::Command) -> Server {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the tessera binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("tessera listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .parse()
        .unwrap();
    Server { child, addr }
}

/// SIGTERM, a graceful stop that flushes the store; waits (bounded) for it.
pub fn stop(mut server: Server) {
    let pid = server.child.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if server.child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("server did not stop on SIGTERM");
}

/// One PostgreSQL cluster for the whole test binary, started on first use
/// (it stops when the binary exits, however it exits). Never skipped:
/// without PostgreSQL the tests that need it fail, saying what is missing.
pub fn pg_cluster() -> &'static PgCluster {
    static CLUSTER: std::sync::OnceLock<PgCluster> = std::sync::OnceLock::new();
    CLUSTER.get_or_init(|| {
        PgCluster::start(false)
            .unwrap_or_else(|e| panic!("a PostgreSQL cluster for the tests: {e}"))
    })
}

/// A new, empty database in [`pg_cluster`], named after `what`; its URL.
pub fn pg_database(what: &str) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("{what}_{n}");
    let create = || pg_cluster().create_database(&name);
    let created = match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(create)
        }
        _ => create(),
    };
    created.unwrap_or_else(|e| panic!("creating database {name}: {e}"))
}
