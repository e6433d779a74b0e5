//! Real reverse proxies in front of tessera and an agent host: Debian's
//! Caddy and nginx, started here with the committed configurations under
//! `deploy/`, the real tessera binary deciding every request through
//! `/auth/verify`, and a small upstream standing in for the host. Traefik is
//! not packaged by Debian: its configuration is checked on paper.
//!
//! Every process is started on loopback ports in a temporary directory (no
//! file is written outside it), waited for with bounded waits, and killed on
//! drop. Caddy and nginx are required, never optional: a machine without
//! them fails these tests saying what to install (`.ci/run` installs them).
//!
//! The upstream records the headers each request reached it with, and
//! verifies `X-Tessera-Assertion` offline with the public keys it fetched
//! once from tessera's `/auth/keys`, as a host that can be reached by other
//! paths than the proxy would.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::response::IntoResponse;
use biscuit_auth::builder::Algorithm;
use biscuit_auth::macros::{authorizer, authorizer_merge};
use biscuit_auth::{AuthorizerLimits, Biscuit, PublicKey};
use serde_json::{json, Value};

use crate::browser::{free_port, program, Logged, Tessera};
use crate::helpers::ADMIN_PASSWORD;

/// The longest any single step (a process starting, a request) may take.
const STEP: Duration = Duration::from_secs(20);

/// Every identity header tessera answers an allowed request with. A client
/// must never be able to set one of them for the upstream.
const IDENTITY: [&str; 14] = [
    "Remote-User",
    "Remote-Name",
    "Remote-Email",
    "Remote-Groups",
    "X-Auth-Request-User",
    "X-Auth-Request-Email",
    "X-Auth-Request-Groups",
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Tessera-User-Id",
    "X-Tessera-Operation",
    "X-Tessera-Agent",
    "X-Tessera-Access",
    "X-Tessera-Assertion",
];

/// The header the test upstream marks its answers with.
const UPSTREAM_MARK: &str = "x-test-upstream";

const BOB_PASSWORD: &str = "bob-password";

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file)
}

// ---------------------------------------------------------------------------
// A plain HTTP/1.1 client: one request per connection, every header exactly
// as given (browsers' and attackers' alike).

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The value a `Set-Cookie` of this answer gives `name`.
    pub fn cookie(&self, name: &str) -> Option<String> {
        let prefix = format!("{name}=");
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .filter_map(|(_, v)| v.split(';').next()?.strip_prefix(&prefix))
            .map(str::to_owned)
            .next()
    }

    pub fn came_from_upstream(&self) -> bool {
        self.header(UPSTREAM_MARK).is_some()
    }
}

pub fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let what = format!("{method} {target} to {addr}");
    let mut stream =
        TcpStream::connect_timeout(&addr, STEP).unwrap_or_else(|e| panic!("{what}: {e}"));
    stream.set_read_timeout(Some(STEP)).unwrap();
    stream.set_write_timeout(Some(STEP)).unwrap();
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("{what}: no whole answer within {STEP:?}: {e}"));
    parse_reply(&raw).unwrap_or_else(|| {
        panic!(
            "{what}: not an HTTP answer: {:?}",
            String::from_utf8_lossy(&raw)
        )
    })
}

fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Some(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&data[..end]);
        let size = size.split(';').next().unwrap_or("").trim();
        let Ok(n) = usize::from_str_radix(size, 16) else {
            break;
        };
        let rest = &data[end + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        data = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// `a=1&b=2` form encoding.
fn form(fields: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(fields).unwrap()
}

// ---------------------------------------------------------------------------
// The upstream: the agent host as far as these tests care.

/// What the upstream made of `X-Tessera-Assertion`.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Absent,
    Valid(Claims),
    Refused(String),
}

/// What a valid assertion says.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Claims {
    pub user: String,
    pub username: String,
    pub operation: String,
    pub agent: Option<String>,
    pub level: Option<String>,
}

/// One request as it reached the upstream.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub target: String,
    /// Names lower-cased, in arrival order, duplicates kept.
    pub headers: Vec<(String, String)>,
    pub verdict: Verdict,
}

impl Seen {
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let values = self.values(name);
        assert!(values.len() <= 1, "{name} arrived {} times", values.len());
        values.first().copied()
    }
}

/// tessera's public keys by id, as `/auth/keys` publishes them.
#[derive(Clone)]
struct Keys {
    by_id: HashMap<u32, PublicKey>,
    active: u32,
}

impl Keys {
    fn fetch(tessera: SocketAddr) -> Self {
        let reply = send(tessera, "GET", "/auth/keys", &[], None);
        assert_eq!(reply.status, 200, "{}", reply.body);
        let mut by_id = HashMap::new();
        let mut active = None;
        for key in reply.json()["keys"].as_array().expect("a key list") {
            let id = key["id"].as_u64().expect("a key id") as u32;
            let hex = key["public_key"].as_str().expect("a public key");
            let public =
                PublicKey::from_bytes_hex(hex, Algorithm::Ed25519).expect("an ed25519 key");
            by_id.insert(id, public);
            if key["active"] == json!(true) {
                active = Some(id);
            }
        }
        Self {
            by_id,
            active: active.expect("an active key"),
        }
    }

    fn get(&self, id: Option<u32>) -> Result<PublicKey, biscuit_auth::error::Format> {
        self.by_id
            .get(&id.unwrap_or(self.active))
            .cloned()
            .ok_or(biscuit_auth::error::Format::UnknownPublicKey)
    }
}

/// The agent a host path is about, for the routes these tests use.
fn agent_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/api/agents/")?;
    let name = rest.split('/').next()?;
    (!name.is_empty()).then(|| name.to_owned())
}

/// What a host does with an assertion before trusting it: signed by
/// tessera, not expired, and about this very request (method, path and,
/// on an agent's route, that agent).
fn verify_assertion(keys: &Keys, token: &str, method: &str, path: &str) -> Result<Claims, String> {
    let biscuit = Biscuit::from_base64(token, |id| keys.get(id))
        .map_err(|e| format!("not signed by tessera: {e}"))?;
    let now = SystemTime::now();
    let agent = agent_of(path);
    let method = method.to_owned();
    let path = path.to_owned();
    let mut builder = authorizer!(
        r#"
        time({now});
        request_method({method});
        request_path({path});
        allow if assertion("forward-auth"), method($m), request_method($m),
            path($p), request_path($p);
        "#
    );
    if let Some(agent) = agent {
        builder = authorizer_merge!(builder, r#"check if agent({agent});"#);
    }
    let mut authorizer = builder
        .set_limits(AuthorizerLimits {
            max_time: Duration::from_millis(100),
            ..AuthorizerLimits::default()
        })
        .build(&biscuit)
        .map_err(|e| format!("cannot evaluate: {e}"))?;
    authorizer
        .authorize()
        .map_err(|e| format!("not for this request now: {e}"))?;
    let mut one = |rule: &str| -> Option<String> {
        let found: Vec<(String,)> = authorizer.query(rule).ok()?;
        found.into_iter().next().map(|(v,)| v)
    };
    Ok(Claims {
        user: one("data($u) <- user($u)").unwrap_or_default(),
        username: one("data($u) <- username($u)").unwrap_or_default(),
        operation: one("data($o) <- operation($o)").unwrap_or_default(),
        agent: one("data($a) <- agent($a)"),
        level: one("data($l) <- level($l)"),
    })
}

pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    /// Serve on a free loopback port, with tessera's keys fetched once now.
    pub fn start(tessera: SocketAddr) -> Self {
        let keys = Keys::fetch(tessera);
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let keys = keys.clone();
            let record = record.clone();
            async move { answer(&keys, &record, request) }
        });
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("the listener");
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = stopped => {}
                }
            });
        });
        Self {
            addr,
            seen,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Everything that reached the upstream so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The last request that reached it, which must be for `target`.
    pub fn last(&self, target: &str) -> Seen {
        let seen = self.seen();
        let last = seen
            .last()
            .unwrap_or_else(|| panic!("nothing reached the upstream"));
        assert_eq!(last.target, target, "the upstream's last request");
        // An identity header is tessera's value or absent: never empty, never
        // a proxy's unreplaced placeholder.
        for name in IDENTITY {
            for value in last.values(name) {
                assert!(
                    !value.is_empty() && !value.contains('{'),
                    "{name}: {value:?} reached the host"
                );
            }
        }
        last.clone()
    }
}

fn answer(
    keys: &Keys,
    record: &Mutex<Vec<Seen>>,
    mut request: axum::extract::Request,
) -> axum::response::Response {
    // A WebSocket upgrade (the host's web chat) is accepted and the
    // connection then echoes what it receives, so a test can tell the
    // proxy tunnels it. No WebSocket framing: the proxies do not look.
    let upgrade = request
        .headers()
        .get("upgrade")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        .then(|| {
            request
                .extensions_mut()
                .remove::<hyper::upgrade::OnUpgrade>()
        })
        .flatten();
    let method = request.method().as_str().to_owned();
    let target = request
        .uri()
        .path_and_query()
        .map_or("/".to_owned(), |p| p.as_str().to_owned());
    let path = request.uri().path().to_owned();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let verdict = match request.headers().get("x-tessera-assertion") {
        None => Verdict::Absent,
        Some(token) => match verify_assertion(
            keys,
            &String::from_utf8_lossy(token.as_bytes()),
            &method,
            &path,
        ) {
            Ok(claims) => Verdict::Valid(claims),
            Err(reason) => Verdict::Refused(reason),
        },
    };
    let status = match &verdict {
        Verdict::Refused(_) => axum::http::StatusCode::FORBIDDEN,
        _ => axum::http::StatusCode::OK,
    };
    let body = json!({ "upstream": true, "verdict": format!("{verdict:?}") });
    if let Ok(mut seen) = record.lock() {
        seen.push(Seen {
            method,
            target,
            headers,
            verdict,
        });
    }
    if let (Some(upgrade), axum::http::StatusCode::OK) = (upgrade, status) {
        tokio::spawn(echo(upgrade));
        return (
            axum::http::StatusCode::SWITCHING_PROTOCOLS,
            [
                ("upgrade", "websocket"),
                ("connection", "upgrade"),
                (UPSTREAM_MARK, "1"),
            ],
        )
            .into_response();
    }
    (status, [(UPSTREAM_MARK, "1")], axum::Json(body)).into_response()
}

async fn echo(upgrade: hyper::upgrade::OnUpgrade) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(upgraded) = upgrade.await else { return };
    let mut io = hyper_util::rt::TokioIo::new(upgraded);
    let mut buf = [0u8; 1024];
    while let Ok(n) = io.read(&mut buf).await {
        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------
// The proxies.

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Caddy,
    Nginx,
}

/// A reverse proxy on a free loopback port, in its own process group (so
/// nginx's workers go with it), killed on drop.
pub struct Proxy {
    pub kind: Kind,
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proxy {
    pub fn start(kind: Kind, tessera: SocketAddr, upstream: SocketAddr) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = dir.path().join("proxy.log");
        // Another process may take the free port before the proxy binds
        // it: try a few.
        for _ in 0..3 {
            let port = free_port();
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let mut command = match kind {
                Kind::Caddy => caddy(dir.path(), addr, tessera, upstream),
                Kind::Nginx => nginx(dir.path(), addr, tessera, upstream),
            };
            let file = std::fs::File::create(&log).expect("the proxy log");
            let mut child = command
                .stdin(Stdio::null())
                .stdout(Stdio::from(file.try_clone().unwrap()))
                .stderr(Stdio::from(file))
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("{kind:?} starts: {e}"));
            let deadline = Instant::now() + STEP;
            loop {
                if proxy_ready(addr) {
                    return Self {
                        kind,
                        addr,
                        child,
                        log,
                        _dir: dir,
                    };
                }
                if child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            kill_group(&mut child);
        }
        panic!(
            "{kind:?} did not become ready; its log:\n{}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            std::fs::read_to_string(log.with_file_name("error.log")).unwrap_or_default()
        );
    }

    /// What the proxy wrote: its output, and nginx's error log beside it.
    pub fn log(&self) -> String {
        let error_log = self.log.with_file_name("error.log");
        [&self.log, &error_log]
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn send(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        send(self.addr, method, target, headers, body)
    }

    /// This proxy's origin, as a browser names it.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        kill_group(&mut self.child);
        if std::thread::panicking() {
            eprintln!("{:?}'s log:\n{}", self.kind, self.log());
        }
    }
}

fn kill_group(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals the process group this
        // test created for the child (process_group(0) made the child its
        // leader); it touches no memory.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.wait();
}

/// Ready once tessera's keys come back through the proxy: it listens and
/// reaches tessera.
fn proxy_ready(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(
        stream,
        "GET /auth/keys HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_reply(&raw).is_some_and(|r| r.status == 200 && r.body.contains("public_key"))
}

fn required(kind: &str) -> PathBuf {
    program(&[kind]).unwrap_or_else(|| {
        panic!(
            "{kind} is not on PATH: the proxy tests need Debian's caddy and nginx \
             (apt-get install caddy nginx; .ci/run does this; nginx is in /usr/sbin)"
        )
    })
}

/// `caddy run` on the committed Caddyfile as is: the addresses come from
/// the environment, and Caddy's home, config and data directories are the
/// temporary directory's, so it writes nothing anywhere else.
fn caddy(dir: &Path, addr: SocketAddr, tessera: SocketAddr, upstream: SocketAddr) -> Command {
    let mut command = Command::new(required("caddy"));
    command
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(deploy("caddy/Caddyfile"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env("TAOS_SITE", format!("http://{addr}"))
        .env("TAOS_BIND", "127.0.0.1")
        .env("TESSERA_ADDR", tessera.to_string())
        .env("TAOS_ADDR", upstream.to_string())
        .env("CADDY_ADMIN", "off")
        .current_dir(dir);
    command
}

/// nginx on the committed site file with its three addresses filled in,
/// inside a minimal nginx.conf like Debian's that keeps the pid file, logs
/// and temporary files in the temporary directory.
fn nginx(dir: &Path, addr: SocketAddr, tessera: SocketAddr, upstream: SocketAddr) -> Command {
    let site = std::fs::read_to_string(deploy("nginx/tessera.conf")).expect("the nginx site file");
    let site = replace_once(
        &site,
        "server 127.0.0.1:7700;",
        &format!("server {tessera};"),
    );
    let site = replace_once(
        &site,
        "server 127.0.0.1:8888;",
        &format!("server {upstream};"),
    );
    let site = replace_once(&site, "listen 127.0.0.1:8080;", &format!("listen {addr};"));
    nginx_in(dir, &site)
}

/// nginx on `site`, with everything it writes in `dir`.
fn nginx_in(dir: &Path, site: &str) -> Command {
    std::fs::write(dir.join("tessera.conf"), site).unwrap();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    std::fs::write(
        dir.join("nginx.conf"),
        "worker_processes 1;\n\
         pid nginx.pid;\n\
         error_log error.log info;\n\
         events { worker_connections 256; }\n\
         http {\n\
         \x20   access_log access.log;\n\
         \x20   client_body_temp_path tmp/body;\n\
         \x20   proxy_temp_path tmp/proxy;\n\
         \x20   fastcgi_temp_path tmp/fastcgi;\n\
         \x20   uwsgi_temp_path tmp/uwsgi;\n\
         \x20   scgi_temp_path tmp/scgi;\n\
         \x20   include tessera.conf;\n\
         }\n",
    )
    .unwrap();
    // Run as root, nginx's workers drop to an unprivileged user, which must
    // reach the temporary files in here.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut command = Command::new(required("nginx"));
    command
        .arg("-p")
        .arg(format!("{}/", dir.display()))
        .args(["-c", "nginx.conf", "-e"])
        .arg(dir.join("error.log"))
        .args(["-g", "daemon off;"])
        .current_dir(dir);
    command
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "deploy/nginx/tessera.conf must say `{from}` exactly once"
    );
    text.replace(from, to)
}

// ---------------------------------------------------------------------------
// A whole setting: tessera, alice (an admin, owner of the agents) and bob,
// the upstream, and a proxy in front of both.

const AGENT: &str = "helper";
const OTHER_AGENT: &str = "scribe";

/// An agent's chat route on the host (the default route table asks `use`).
fn chat(agent: &str) -> String {
    format!("/api/agents/{agent}/messages")
}

pub struct Rig {
    // Dropped in this order: the proxy, the upstream, tessera.
    pub proxy: Proxy,
    pub upstream: Upstream,
    pub tessera: Tessera,
    pub alice: String,
    pub bob: String,
}

impl Rig {
    pub fn new(kind: Kind) -> Self {
        Self::with(kind, &[])
    }

    pub fn with(kind: Kind, tessera_args: &[&str]) -> Self {
        let tessera = Tessera::start_with(tessera_args);
        let (status, body) = tessera.api(
            "POST",
            "/auth/setup",
            None,
            Some(json!({"username": "alice", "password": ADMIN_PASSWORD, "full_name": "Alice Admin", "email": "alice@example.org"})),
        );
        assert_eq!(status, 200, "{body}");
        let alice = body["token"].as_str().unwrap().to_owned();
        let invite = tessera.api_ok(
            "POST",
            "/auth/users",
            &alice,
            Some(json!({"username": "bob"})),
        );
        let code = invite["invite_code"].as_str().unwrap();
        let (status, body) = tessera.api(
            "POST",
            "/auth/complete",
            None,
            Some(json!({"username": "bob", "invite_code": code, "password": BOB_PASSWORD, "full_name": "Bob B", "email": "bob@example.org"})),
        );
        assert_eq!(status, 200, "{body}");
        let bob = body["token"].as_str().unwrap().to_owned();
        for agent in [AGENT, OTHER_AGENT] {
            tessera.api_ok(
                "POST",
                "/api/agents",
                &alice,
                Some(json!({ "name": agent })),
            );
        }
        let upstream = Upstream::start(tessera.addr());
        let proxy = Proxy::start(kind, tessera.addr(), upstream.addr);
        Self {
            proxy,
            upstream,
            tessera,
            alice,
            bob,
        }
    }

    /// alice shares `agent` with bob at `level`.
    pub fn share(&self, agent: &str, level: &str) {
        self.tessera.api_ok(
            "POST",
            &format!("/api/agents/{agent}/shares"),
            &self.alice,
            Some(json!({"user": "bob", "level": level})),
        );
    }

    /// Sign `username` in as a browser does, through the proxy: the sign-in
    /// page's form token, posted back with its cookie from the same origin.
    /// Returns the answer to the post and the cookies the browser now holds.
    pub fn sign_in_page(&self, page: &str, username: &str, password: &str) -> (Reply, String) {
        let html = [("Accept", "text/html")];
        let reply = self.proxy.send("GET", page, &html, None);
        assert_eq!(reply.status, 200, "{page}: {}", reply.body);
        let csrf = reply
            .cookie("csrf_token")
            .expect("the sign-in page's CSRF cookie");
        let token = hidden(&reply.body, "csrf_token").expect("the form's CSRF token");
        let next = hidden(&reply.body, "next");
        let mut fields = vec![
            ("username", username),
            ("password", password),
            ("csrf_token", token.as_str()),
        ];
        if let Some(next) = &next {
            fields.push(("next", next.as_str()));
        }
        let cookies = format!("csrf_token={csrf}");
        let origin = self.proxy.origin();
        let reply = self.proxy.send(
            "POST",
            "/auth/login",
            &[
                ("Accept", "text/html"),
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Cookie", &cookies),
                ("Origin", &origin),
                ("Sec-Fetch-Site", "same-origin"),
            ],
            Some(&form(&fields)),
        );
        let session = reply.cookie("taos_session");
        let jar = match session {
            Some(session) => format!("taos_session={session}; csrf_token={csrf}"),
            None => cookies,
        };
        (reply, jar)
    }
}

/// The value of the hidden field `name` in a page's form.
fn hidden(html: &str, name: &str) -> Option<String> {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')?;
    Some(html_unescape(&html[start..start + end]))
}

fn html_unescape(text: &str) -> String {
    text.replace("&#x2f;", "/")
        .replace("&#x2F;", "/")
        .replace("&#47;", "/")
        .replace("&#x3d;", "=")
        .replace("&#61;", "=")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Where a redirect (or nginx's 401 for a browser) sends it, as a path on
/// the proxy's origin.
fn location(reply: &Reply, proxy: &Proxy) -> String {
    let raw = reply
        .header("location")
        .unwrap_or_else(|| panic!("no Location in {} {:?}", reply.status, reply.headers));
    raw.strip_prefix(&proxy.origin()).unwrap_or(raw).to_owned()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

// ---------------------------------------------------------------------------
// The stories, each run behind Caddy and behind nginx.

/// A signed-out browser asking for a host page goes to the sign-in page
/// and, once signed in, lands back on exactly the page it asked for.
fn signed_out_browser_signs_in_and_comes_back(kind: Kind) {
    let rig = Rig::new(kind);
    let page = "/desktop/apps?open=agents";
    let reply = rig
        .proxy
        .send("GET", page, &[("Accept", "text/html")], None);
    assert!(
        matches!(reply.status, 302 | 303),
        "{kind:?}: a signed-out browser is redirected, got {} {}",
        reply.status,
        reply.body
    );
    let sign_in = location(&reply, &rig.proxy);
    let (path, query) = sign_in.split_once('?').expect("a next parameter");
    assert_eq!(path, "/auth/login");
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap();
    let next = pairs
        .into_iter()
        .find_map(|(k, v)| (k == "next").then_some(v))
        .expect("next=");
    assert_eq!(next, page);
    assert!(
        rig.upstream.seen().is_empty(),
        "nothing reached the host yet"
    );

    // An API client is told 401, never redirected.
    let reply = rig
        .proxy
        .send("GET", page, &[("Accept", "application/json")], None);
    assert_eq!(reply.status, 401, "{kind:?}: {}", reply.body);
    assert!(!reply.came_from_upstream());

    let (reply, jar) = rig.sign_in_page(&sign_in, "bob", BOB_PASSWORD);
    assert_eq!(reply.status, 303, "{kind:?}: signing in: {}", reply.body);
    assert_eq!(location(&reply, &rig.proxy), page, "back where it started");
    assert!(jar.contains("taos_session="), "signed in: {jar}");

    let reply = rig.proxy.send(
        "GET",
        page,
        &[("Accept", "text/html"), ("Cookie", &jar)],
        None,
    );
    assert_eq!(reply.status, 200, "{kind:?}: {}", reply.body);
    assert!(reply.came_from_upstream());
    let seen = rig.upstream.last(page);
    assert_eq!(seen.header("remote-user"), Some("bob"));
    assert_eq!(seen.header("remote-email"), Some("bob@example.org"));
    assert!(
        matches!(seen.verdict, Verdict::Valid(ref c) if c.username == "bob"),
        "{:?}",
        seen.verdict
    );
}

/// bob reaches an agent's chat route on the host only while he holds `use`
/// on it: nothing, then `view`, is refused at the proxy; `use` passes with
/// his level; taking it back is refused on the very next request.
fn agent_chat_needs_use(kind: Kind) {
    let rig = Rig::new(kind);
    let route = chat(AGENT);
    let auth = bearer(&rig.bob);
    let ask = || {
        rig.proxy
            .send("GET", &route, &[("Authorization", &auth)], None)
    };

    let reply = ask();
    assert!(
        matches!(reply.status, 403 | 404),
        "{kind:?}: an agent bob cannot see: {} {}",
        reply.status,
        reply.body
    );
    rig.share(AGENT, "view");
    let reply = ask();
    assert_eq!(
        reply.status, 403,
        "{kind:?}: view is not enough to chat: {}",
        reply.body
    );
    assert!(!reply.came_from_upstream());
    assert!(rig.upstream.seen().is_empty(), "refused at the proxy");

    rig.share(AGENT, "use");
    let reply = ask();
    assert_eq!(reply.status, 200, "{kind:?}: {}", reply.body);
    assert!(reply.came_from_upstream());
    let seen = rig.upstream.last(&route);
    assert_eq!(seen.header("x-tessera-access"), Some("use"));
    assert_eq!(seen.header("x-tessera-agent"), Some(AGENT));
    assert_eq!(seen.header("remote-user"), Some("bob"));
    assert_eq!(seen.header("remote-groups"), Some("users"));
    match &seen.verdict {
        Verdict::Valid(claims) => {
            assert_eq!(claims.username, "bob");
            assert_eq!(Some(claims.user.as_str()), seen.header("x-tessera-user-id"));
            assert_eq!(claims.operation, "agent:chat");
            assert_eq!(claims.agent.as_deref(), Some(AGENT));
            assert_eq!(claims.level.as_deref(), Some("use"));
        }
        other => panic!("{kind:?}: the assertion: {other:?}"),
    }
    // Posting a message is chatting too.
    let reply = rig.proxy.send(
        "POST",
        &route,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        Some(r#"{"content":"hello"}"#),
    );
    assert_eq!(reply.status, 200, "{kind:?}: {}", reply.body);
    assert_eq!(rig.upstream.last(&route).method, "POST");

    // The owner is there at her own level.
    let alice = bearer(&rig.alice);
    let reply = rig
        .proxy
        .send("GET", &route, &[("Authorization", &alice)], None);
    assert_eq!(reply.status, 200, "{kind:?}: {}", reply.body);
    let seen = rig.upstream.last(&route);
    assert_eq!(seen.header("x-tessera-access"), Some("owner"));
    assert_eq!(seen.header("remote-user"), Some("alice"));

    // Back to view: refused on the next request.
    rig.share(AGENT, "view");
    let before = rig.upstream.seen().len();
    let reply = ask();
    assert_eq!(reply.status, 403, "{kind:?}: {}", reply.body);
    assert_eq!(rig.upstream.seen().len(), before);
}

/// Identity headers a client sends itself never reach the host, however
/// they are spelled: on an allowed request the host sees tessera's values
/// only, on a public one none at all. Nor can a client tell tessera about
/// another request than the one the proxy passes on.
fn spoofed_identity_never_reaches_the_host(kind: Kind) {
    let rig = Rig::new(kind);
    rig.share(AGENT, "use");
    let route = chat(AGENT);
    let auth = bearer(&rig.bob);
    let mut spoofed: Vec<(String, String)> = Vec::new();
    for name in IDENTITY {
        spoofed.push((name.to_owned(), "mallory".to_owned()));
        spoofed.push((name.to_ascii_lowercase(), "mallory".to_owned()));
        spoofed.push((name.replace('-', "_"), "mallory".to_owned()));
    }
    // The admin group and an admin's level, as a forger would want them.
    spoofed.push(("Remote-Groups".into(), "admins".into()));
    spoofed.push(("X-Tessera-Access".into(), "owner".into()));
    let mallory = |seen: &Seen| {
        let forged: Vec<&(String, String)> = seen
            .headers
            .iter()
            .filter(|(k, v)| {
                v.contains("mallory")
                    || (k.replace('_', "-").eq_ignore_ascii_case("remote-groups")
                        && v.contains("admins"))
                    || (k.replace('_', "-").eq_ignore_ascii_case("x-tessera-access")
                        && v == "owner")
            })
            .collect();
        assert!(
            forged.is_empty(),
            "{kind:?}: forged headers reached the host: {forged:?}"
        );
    };

    let mut headers: Vec<(&str, &str)> = spoofed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    headers.push(("Authorization", &auth));
    let reply = rig.proxy.send("GET", &route, &headers, None);
    assert_eq!(reply.status, 200, "{kind:?}: {}", reply.body);
    let seen = rig.upstream.last(&route);
    mallory(&seen);
    assert_eq!(seen.values("remote-user"), ["bob"]);
    assert_eq!(seen.values("x-forwarded-user"), ["bob"]);
    assert_eq!(seen.values("x-auth-request-user"), ["bob"]);
    assert_eq!(seen.values("remote-groups"), ["users"]);
    assert_eq!(seen.values("x-tessera-access"), ["use"]);
    assert_eq!(seen.values("x-tessera-assertion").len(), 1);
    assert!(
        matches!(seen.verdict, Verdict::Valid(_)),
        "{:?}",
        seen.verdict
    );

    // A public path of the host: tessera vouches for nobody, so the host
    // sees no identity header at all.
    let public = "/static/host.css";
    let mut headers: Vec<(&str, &str)> = spoofed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    headers.push(("Accept", "text/css"));
    let reply = rig.proxy.send("GET", public, &headers, None);
    assert_eq!(reply.status, 200, "{kind:?}: a public path: {}", reply.body);
    let seen = rig.upstream.last(public);
    mallory(&seen);
    for name in IDENTITY {
        assert!(
            seen.values(name).is_empty() && seen.values(&name.replace('-', "_")).is_empty(),
            "{kind:?}: {name} reached the host on a public path: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.verdict, Verdict::Absent);

    // Telling tessera about another request: the proxy describes the real
    // one, so bob's chat with an agent he cannot see stays refused.
    let other = chat(OTHER_AGENT);
    let reply = rig.proxy.send(
        "GET",
        &other,
        &[
            ("Authorization", &auth),
            ("X-Forwarded-Uri", &route),
            ("X-Forwarded-Method", "GET"),
            (
                "X-Original-URL",
                &format!("http://{}{route}", rig.proxy.addr),
            ),
            ("X-Original-Method", "GET"),
        ],
        None,
    );
    assert!(
        matches!(reply.status, 403 | 404),
        "{kind:?}: {} {}",
        reply.status,
        reply.body
    );
    assert!(!reply.came_from_upstream());
    // Nor with a path the proxy and tessera could read two ways: dot
    // segments and encoded slashes (the proxy normalises them for its own
    // routing; tessera refuses to decide them).
    for target in [
        format!("/desktop/../api/agents/{OTHER_AGENT}/messages"),
        format!("/console/../api/agents/{OTHER_AGENT}/messages"),
        format!("/auth/../api/agents/{OTHER_AGENT}/messages"),
        format!("/api/health/../agents/{OTHER_AGENT}/messages"),
        format!("/static/x/..%2f..%2fapi/agents/{OTHER_AGENT}/messages"),
        format!("/api/agents/{AGENT}/messages/../../{OTHER_AGENT}/messages"),
        format!("/api/agents/{OTHER_AGENT}%2fmessages"),
        format!("/api/agents//{OTHER_AGENT}/messages"),
    ] {
        let before = rig.upstream.seen().len();
        let reply = rig
            .proxy
            .send("GET", &target, &[("Authorization", &auth)], None);
        assert!(
            !reply.came_from_upstream() && rig.upstream.seen().len() == before,
            "{kind:?}: {target} reached the host: {} {}",
            reply.status,
            reply.body
        );
    }
    // Nor through the Host header, which a proxy may fold into the URL it
    // describes: a `?` or `#` there would turn the real path into a query
    // or a fragment of `/`, which any signed-in person may reach.
    for host in [
        format!("{}?", rig.proxy.addr),
        format!("{}#", rig.proxy.addr),
        format!("{}?x=", rig.proxy.addr),
    ] {
        let reply = rig.proxy.send(
            "GET",
            &other,
            &[("Authorization", &auth), ("Host", &host)],
            None,
        );
        assert!(
            !reply.came_from_upstream() && reply.status != 200,
            "{kind:?}: Host {host:?} let bob through to {other}: {} {}",
            reply.status,
            reply.body
        );
    }
}

/// Signing out ends the session at the proxy on the very next request, for
/// a browser's cookie and an API client's bearer token alike.
fn revoked_session_is_refused_next_request(kind: Kind) {
    let rig = Rig::new(kind);
    let page = "/desktop";
    let (reply, jar) = rig.sign_in_page("/auth/login", "bob", BOB_PASSWORD);
    assert_eq!(reply.status, 303, "{kind:?}: {}", reply.body);
    let html = |jar: &str| -> Reply {
        rig.proxy.send(
            "GET",
            page,
            &[("Accept", "text/html"), ("Cookie", jar)],
            None,
        )
    };
    let reply = html(&jar);
    assert_eq!(reply.status, 200, "{kind:?}: {}", reply.body);

    // The console's sign-out form, through the proxy.
    let csrf = jar
        .split("; ")
        .find_map(|c| c.strip_prefix("csrf_token="))
        .unwrap()
        .to_owned();
    let origin = rig.proxy.origin();
    let reply = rig.proxy.send(
        "POST",
        "/auth/logout",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", &jar),
            ("Origin", &origin),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        Some(&form(&[("csrf_token", &csrf)])),
    );
    assert!(
        matches!(reply.status, 200 | 303),
        "{kind:?}: signing out: {} {}",
        reply.status,
        reply.body
    );
    let before = rig.upstream.seen().len();
    // The browser kept the old cookie (as a stolen copy would be).
    let reply = html(&jar);
    assert!(
        matches!(reply.status, 302 | 303 | 401),
        "{kind:?}: a signed-out session: {} {}",
        reply.status,
        reply.body
    );
    assert!(!reply.came_from_upstream());
    assert!(location(&reply, &rig.proxy).starts_with("/auth/login"));

    // A bearer token: the same, with a 401.
    let (status, body) = rig.tessera.api(
        "POST",
        "/auth/login",
        None,
        Some(json!({"username": "bob", "password": BOB_PASSWORD})),
    );
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    let auth = bearer(&token);
    let reply = rig
        .proxy
        .send("GET", page, &[("Authorization", &auth)], None);
    assert_eq!(reply.status, 200, "{kind:?}: {}", reply.body);
    let reply = rig
        .proxy
        .send("POST", "/auth/logout", &[("Authorization", &auth)], None);
    assert!(
        matches!(reply.status, 200 | 303),
        "{kind:?}: {} {}",
        reply.status,
        reply.body
    );
    let reply = rig
        .proxy
        .send("GET", page, &[("Authorization", &auth)], None);
    assert_eq!(reply.status, 401, "{kind:?}: {}", reply.body);
    assert_eq!(
        rig.upstream.seen().len(),
        before + 1,
        "only the one allowed request"
    );
}

/// The host checks `X-Tessera-Assertion` offline: one taken from a request
/// about one agent and replayed, straight to the host, on another agent's
/// route is refused, as is anything not signed by tessera.
fn assertion_replayed_for_another_agent_is_refused(kind: Kind) {
    let rig = Rig::new(kind);
    rig.share(AGENT, "use");
    rig.share(OTHER_AGENT, "use");
    let route = chat(AGENT);
    let auth = bearer(&rig.bob);
    let reply = rig
        .proxy
        .send("GET", &route, &[("Authorization", &auth)], None);
    assert_eq!(reply.status, 200, "{kind:?}: {}", reply.body);
    let assertion = rig
        .upstream
        .last(&route)
        .header("x-tessera-assertion")
        .expect("an assertion")
        .to_owned();

    // Straight to the host, as something that can reach it without the
    // proxy would: for its own route it holds...
    let direct = |target: &str, token: &str| {
        send(
            rig.upstream.addr,
            "GET",
            target,
            &[("X-Tessera-Assertion", token), ("Remote-User", "bob")],
            None,
        )
    };
    let reply = direct(&route, &assertion);
    assert_eq!(reply.status, 200, "{}", reply.body);
    // ...for another agent it does not, though bob may use that one too.
    let other = chat(OTHER_AGENT);
    let reply = direct(&other, &assertion);
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(
        matches!(rig.upstream.last(&other).verdict, Verdict::Refused(_)),
        "{:?}",
        rig.upstream.last(&other).verdict
    );
    // Nor for another route of the same agent, nor another method.
    let run = format!("/api/agents/{AGENT}/run");
    assert_eq!(direct(&run, &assertion).status, 403);
    let reply = send(
        rig.upstream.addr,
        "POST",
        &route,
        &[("X-Tessera-Assertion", &assertion)],
        Some("{}"),
    );
    assert_eq!(reply.status, 403, "{}", reply.body);
    // A session token is no assertion, though tessera signed it.
    assert_eq!(direct(&route, &rig.bob).status, 403);
    // Nor is garbage.
    assert_eq!(direct(&route, "Ei0KCmZvcndhcmQtYXV0aA").status, 403);
}

/// An assertion is short-lived: replayed after `--assertion-ttl`, the host
/// refuses it.
fn assertion_expires(kind: Kind) {
    let rig = Rig::with(kind, &["--assertion-ttl", "2"]);
    rig.share(AGENT, "use");
    let route = chat(AGENT);
    let auth = bearer(&rig.bob);
    let reply = rig
        .proxy
        .send("GET", &route, &[("Authorization", &auth)], None);
    assert_eq!(reply.status, 200, "{kind:?}: {}", reply.body);
    let seen = rig.upstream.last(&route);
    assert!(
        matches!(seen.verdict, Verdict::Valid(_)),
        "{:?}",
        seen.verdict
    );
    let assertion = seen.header("x-tessera-assertion").unwrap().to_owned();
    let issued = Instant::now();
    let deadline = issued + Duration::from_secs(10);
    loop {
        let reply = send(
            rig.upstream.addr,
            "GET",
            &route,
            &[("X-Tessera-Assertion", &assertion)],
            None,
        );
        if reply.status == 403 {
            let verdict = rig.upstream.last(&route).verdict;
            assert!(
                matches!(&verdict, Verdict::Refused(r) if r.contains("check")),
                "{verdict:?}"
            );
            break;
        }
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(
            Instant::now() < deadline,
            "a 2-second assertion still accepted after {:?}",
            issued.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The proxy hands out a fresh one all the while.
    let reply = rig
        .proxy
        .send("GET", &route, &[("Authorization", &auth)], None);
    assert_eq!(reply.status, 200, "{kind:?}: {}", reply.body);
    assert!(matches!(
        rig.upstream.last(&route).verdict,
        Verdict::Valid(_)
    ));
}

/// The host's web chat is a WebSocket: the upgrade is decided like any
/// request (refused signed out, without reaching the host), and once
/// allowed the proxy tunnels the connection both ways.
fn websocket_upgrade_is_decided_then_tunnelled(kind: Kind) {
    let rig = Rig::new(kind);
    let path = "/ws/chat";
    let upgrade = |auth: Option<&str>| -> (Reply, TcpStream) {
        let mut stream = TcpStream::connect_timeout(&rig.proxy.addr, STEP).unwrap();
        stream.set_read_timeout(Some(STEP)).unwrap();
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{auth}\r\n",
            rig.proxy.addr
        )
        .unwrap();
        // The head only: after a 101 the connection stays open.
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                other => panic!("{kind:?}: the answer to the upgrade: {other:?} after {head:?}"),
            }
        }
        (parse_reply(&head).expect("an HTTP answer"), stream)
    };

    let (reply, _) = upgrade(None);
    assert_eq!(reply.status, 401, "{kind:?}: a signed-out upgrade");
    assert!(rig.upstream.seen().is_empty());

    let auth = bearer(&rig.bob);
    let (reply, mut stream) = upgrade(Some(&auth));
    assert_eq!(reply.status, 101, "{kind:?}: {reply:?}");
    assert_eq!(rig.upstream.last(path).header("remote-user"), Some("bob"));
    for message in [&b"hello through the proxy"[..], b"and back again"] {
        stream.write_all(message).unwrap();
        let mut echoed = vec![0u8; message.len()];
        stream
            .read_exact(&mut echoed)
            .unwrap_or_else(|e| panic!("{kind:?}: the tunnel: {e}"));
        assert_eq!(echoed, message);
    }
}

/// Forward auth is the proxy's question, not the client's: asked through
/// the proxy it is not found, and hands out no assertion (which could be
/// replayed at the host until it expires, even after signing out).
fn forward_auth_is_not_for_clients(kind: Kind) {
    let rig = Rig::new(kind);
    rig.share(AGENT, "use");
    let route = chat(AGENT);
    let auth = bearer(&rig.bob);
    for target in ["/auth/verify", "/auth/verify/nginx", "/auth/verify?x=1"] {
        let mark = rig.tessera.log_mark();
        let reply = rig.proxy.send(
            "GET",
            target,
            &[
                ("Authorization", &auth),
                ("X-Forwarded-Method", "GET"),
                ("X-Forwarded-Uri", &route),
                ("X-Original-Method", "GET"),
                ("X-Original-URL", &route),
            ],
            None,
        );
        assert_eq!(reply.status, 404, "{kind:?}: {target}: {}", reply.body);
        assert!(reply.header("x-tessera-assertion").is_none());
        assert!(!reply.came_from_upstream());
        std::thread::sleep(Duration::from_millis(100));
        let logged = rig.tessera.requests_since(mark);
        assert!(logged.is_empty(), "{kind:?}: tessera answered {logged:?}");
    }
}

/// tessera's own paths go straight to tessera (never through the route
/// table), and the host's, including its /api/agents routes, to the host
/// after asking tessera.
fn paths_go_where_they_belong(kind: Kind) {
    let rig = Rig::new(kind);
    let auth = bearer(&rig.alice);
    // Forward auth itself goes to tessera like all of /auth, but asked
    // without a proxy's headers it cannot be told from a forwarded request.
    for path in tessera_paths()
        .into_iter()
        .filter(|p| !p.starts_with("/auth/verify"))
    {
        let mark = rig.tessera.log_mark();
        let reply = rig
            .proxy
            .send("GET", &path, &[("Authorization", &auth)], None);
        assert!(
            !reply.came_from_upstream(),
            "{kind:?}: {path} reached the host"
        );
        let logged = logged_after(&rig.tessera, mark);
        assert!(
            logged.iter().any(|l| l.path == path)
                && !logged.iter().any(|l| l.path.starts_with("/auth/verify")),
            "{kind:?}: {path} should go straight to tessera; tessera saw {logged:?}"
        );
    }
    for path in HOST_PATHS {
        let mark = rig.tessera.log_mark();
        let reply = rig
            .proxy
            .send("GET", path, &[("Authorization", &auth)], None);
        let logged = logged_after(&rig.tessera, mark);
        assert!(
            logged.iter().all(|l| l.path.starts_with("/auth/verify")),
            "{kind:?}: {path} is the host's; tessera saw {logged:?}"
        );
        assert!(
            reply.came_from_upstream(),
            "{kind:?}: {path}: {} {}",
            reply.status,
            reply.body
        );
    }
}

/// What tessera logged since `mark`, waiting (bounded) for the line of the
/// request just answered.
fn logged_after(tessera: &Tessera, mark: usize) -> Vec<Logged> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let logged = tessera.requests_since(mark);
        if !logged.is_empty() || Instant::now() > deadline {
            return logged;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Paths of the host's that sit beside tessera's own.
const HOST_PATHS: [&str; 8] = [
    "/",
    "/desktop",
    "/api/agents",
    "/api/agents/helper",
    "/api/agents/helper/permissions",
    "/api/agents/helper/messages",
    "/api/health",
    "/static/app.css",
];

// ---------------------------------------------------------------------------
// Which of tessera's routes a proxy sends to tessera, read from the source
// so that a new route has to be placed.

/// Every route path tessera's router declares (test-only routes aside).
fn source_routes() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut routes = Vec::new();
    for dir in ["http", "web"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "rs"))
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let text = text.split("#[cfg(test)]").next().unwrap_or("");
            for piece in text.split(".route(").skip(1) {
                let Some(start) = piece.find('"') else {
                    continue;
                };
                let rest = &piece[start + 1..];
                let Some(end) = rest.find('"') else { continue };
                if piece[..start].trim().is_empty() {
                    routes.push(rest[..end].to_owned());
                }
            }
        }
    }
    routes.sort();
    routes.dedup();
    assert!(routes.len() > 50, "found only {routes:?}");
    routes
}

/// tessera's routes that a proxy must not send to it: the host has its own
/// (its home page, its health, its agent records), or they are for the
/// operator only (metrics). tessera's are reached on its own address.
const NOT_PROXIED: [&str; 11] = [
    "/",
    // The host (a FastAPI app) has its own API description here; tessera's
    // stays on tessera's address.
    "/openapi.json",
    "/docs",
    "/health",
    "/ready",
    "/metrics",
    "/api/agents",
    "/api/agents/{name}",
    "/api/agents/{name}/archive",
    "/api/agents/{name}/restore",
    "/api/agents/{name}/permissions",
];

/// One concrete path for each route tessera serves through a proxy.
fn tessera_paths() -> Vec<String> {
    source_routes()
        .into_iter()
        .filter(|r| !NOT_PROXIED.contains(&r.as_str()))
        .map(|r| {
            r.split('/')
                .map(|s| if s.starts_with('{') { "sample" } else { s })
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect()
}

/// The regular expression each configuration uses for tessera's /api
/// routes, which must be one and the same.
fn api_pattern(config: &str) -> String {
    let start = config.find("^/api/").expect("tessera's /api pattern");
    let end = config[start..].find(")$").expect("its end") + start + 2;
    config[start..end].to_owned()
}

// ---------------------------------------------------------------------------
// Traefik, on paper: its YAML parsed, the middleware and the routers read.

fn yaml(file: &str) -> yaml_rust2::Yaml {
    let text = std::fs::read_to_string(deploy(file)).unwrap();
    let mut docs = yaml_rust2::YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("deploy/{file}: {e}"));
    assert_eq!(docs.len(), 1, "deploy/{file}: one document");
    docs.remove(0)
}

fn strings(list: &yaml_rust2::Yaml) -> Vec<String> {
    list.as_vec()
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a Traefik rule made of `Path`, `PathPrefix` and `PathRegexp`
/// alternatives (the only forms these configurations use) matches `path`.
fn traefik_matches(rule: &str, path: &str) -> bool {
    rule.split("||").map(str::trim).any(|term| {
        let (matcher, arg) = term
            .split_once("(`")
            .unwrap_or_else(|| panic!("unexpected rule term {term:?}"));
        let arg = arg
            .strip_suffix("`)")
            .unwrap_or_else(|| panic!("unexpected rule term {term:?}"));
        match matcher {
            "Path" => path == arg,
            "PathPrefix" => path.starts_with(arg),
            "PathRegexp" => regex::Regex::new(arg).unwrap().is_match(path),
            other => panic!("a rule this test cannot read: {other}"),
        }
    })
}

#[test]
fn traefik_strips_identity_and_asks_tessera_on_paper() {
    let stat = yaml("traefik/traefik.yml");
    assert!(
        stat["entryPoints"]["web"]["address"].as_str().is_some(),
        "an entry point named web"
    );
    assert_eq!(
        stat["providers"]["file"]["filename"].as_str(),
        Some("dynamic.yml")
    );
    assert!(
        stat["api"].is_badvalue(),
        "an api section turns Traefik's API on"
    );

    let dynamic = yaml("traefik/dynamic.yml");
    let http = &dynamic["http"];
    let auth = &http["middlewares"]["tessera-auth"]["forwardAuth"];
    assert_eq!(
        auth["address"].as_str(),
        Some("http://127.0.0.1:7700/auth/verify")
    );
    assert_eq!(auth["trustForwardHeader"].as_bool(), Some(false));
    let copied = strings(&auth["authResponseHeaders"]);
    for name in IDENTITY {
        assert!(
            copied.iter().any(|c| c == name),
            "authResponseHeaders lacks {name}"
        );
    }
    assert_eq!(copied.len(), IDENTITY.len(), "{copied:?}");
    let strip = http["middlewares"]["tessera-strip-identity"]["headers"]["customRequestHeaders"]
        .as_hash()
        .expect("customRequestHeaders");
    for name in IDENTITY {
        let value = strip.get(&yaml_rust2::Yaml::String(name.to_owned()));
        assert_eq!(
            value.and_then(|v| v.as_str()),
            Some(""),
            "tessera-strip-identity must delete {name}"
        );
    }

    let routers = &http["routers"];
    let host = &routers["taos"];
    assert_eq!(
        strings(&host["middlewares"]),
        ["tessera-strip-identity", "tessera-auth"],
        "the host's router strips, then asks tessera"
    );
    assert_eq!(host["service"].as_str(), Some("taos"));
    assert_eq!(host["rule"].as_str(), Some("PathPrefix(`/`)"));
    let own = &routers["tessera"];
    assert_eq!(own["service"].as_str(), Some("tessera"));
    assert_eq!(strings(&own["middlewares"]), ["tessera-strip-identity"]);
    assert!(
        own["priority"].as_i64() > host["priority"].as_i64(),
        "tessera's router must win over the host's catch-all"
    );
    let rule = own["rule"].as_str().expect("a rule");
    for path in tessera_paths() {
        assert!(
            traefik_matches(rule, &path),
            "Traefik sends {path} to the host"
        );
    }
    // Forward auth itself is rewritten to a path tessera does not serve.
    let verify = &routers["tessera-verify"];
    let verify_rule = verify["rule"].as_str().expect("a rule");
    assert!(verify["priority"].as_i64() > own["priority"].as_i64());
    assert_eq!(
        strings(&verify["middlewares"]),
        ["tessera-strip-identity", "tessera-not-for-clients"]
    );
    let rewritten = http["middlewares"]["tessera-not-for-clients"]["replacePath"]["path"]
        .as_str()
        .expect("a replacePath");
    assert!(!source_routes().iter().any(|r| r == rewritten));
    for path in tessera_paths() {
        assert_eq!(
            traefik_matches(verify_rule, &path),
            path.starts_with("/auth/verify"),
            "{path}"
        );
    }
    for path in HOST_PATHS {
        assert!(
            !traefik_matches(rule, path),
            "Traefik sends {path} to tessera"
        );
    }
    let services = &http["services"];
    assert_eq!(
        services["tessera"]["loadBalancer"]["servers"][0]["url"].as_str(),
        Some("http://127.0.0.1:7700")
    );
    assert_eq!(
        services["taos"]["loadBalancer"]["servers"][0]["url"].as_str(),
        Some("http://127.0.0.1:8888")
    );
    for service in ["tessera", "taos"] {
        assert_eq!(
            services[service]["loadBalancer"]["passHostHeader"].as_bool(),
            Some(true),
            "{service} needs the original Host"
        );
    }
}

/// The files as committed, defaults and all, are what Caddy and nginx
/// accept (the other tests fill in addresses).
#[test]
fn the_committed_files_are_valid_as_they_stand() {
    let dir = tempfile::tempdir().unwrap();
    let adapted = Command::new(required("caddy"))
        .args(["adapt", "--adapter", "caddyfile", "--config"])
        .arg(deploy("caddy/Caddyfile"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .current_dir(dir.path())
        .output()
        .expect("caddy adapt runs");
    assert!(
        adapted.status.success(),
        "caddy adapt: {}",
        String::from_utf8_lossy(&adapted.stderr)
    );
    let json = String::from_utf8_lossy(&adapted.stdout);
    for default in ["127.0.0.1:7700", "127.0.0.1:8888", "localhost:2019"] {
        assert!(json.contains(default), "Caddy's default {default} is gone");
    }

    let site = std::fs::read_to_string(deploy("nginx/tessera.conf")).unwrap();
    let tested = nginx_in(dir.path(), &site)
        .arg("-t")
        .stdout(Stdio::null())
        .output()
        .expect("nginx -t runs");
    assert!(
        tested.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&tested.stderr)
    );
}

#[test]
fn the_three_configurations_agree() {
    let caddy = std::fs::read_to_string(deploy("caddy/Caddyfile")).unwrap();
    let nginx = std::fs::read_to_string(deploy("nginx/tessera.conf")).unwrap();
    let traefik = std::fs::read_to_string(deploy("traefik/dynamic.yml")).unwrap();
    let pattern = api_pattern(&caddy);
    assert_eq!(api_pattern(&nginx), pattern, "nginx and Caddy disagree");
    assert_eq!(api_pattern(&traefik), pattern, "Traefik and Caddy disagree");
    // Every identity header is named in each (Caddy also strips by prefix).
    for name in IDENTITY {
        assert!(
            caddy.contains(&format!("-{name}")),
            "Caddy never deletes {name}"
        );
        assert!(
            nginx.contains(&format!("proxy_set_header {name} $tessera_")),
            "nginx never sets {name}"
        );
        let variable = format!(
            "$upstream_http_{}",
            name.to_ascii_lowercase().replace('-', "_")
        );
        assert!(
            nginx.contains(&variable),
            "nginx never reads {name} from tessera"
        );
    }
    // Every route tessera declares is either proxied to it or listed as
    // the host's: a new route must be placed.
    let routes = source_routes();
    for listed in NOT_PROXIED {
        assert!(
            routes.iter().any(|r| r == listed),
            "{listed} is no route of tessera's any more"
        );
    }
}

macro_rules! per_proxy {
    ($($story:ident),* $(,)?) => {
        mod caddy {
            $(
                #[test]
                fn $story() {
                    super::$story(super::Kind::Caddy);
                }
            )*
        }
        mod nginx {
            $(
                #[test]
                fn $story() {
                    super::$story(super::Kind::Nginx);
                }
            )*
        }
    };
}

per_proxy!(
    paths_go_where_they_belong,
    forward_auth_is_not_for_clients,
    websocket_upgrade_is_decided_then_tunnelled,
    signed_out_browser_signs_in_and_comes_back,
    agent_chat_needs_use,
    spoofed_identity_never_reaches_the_host,
    revoked_session_is_refused_next_request,
    assertion_replayed_for_another_agent_is_refused,
    assertion_expires,
);
